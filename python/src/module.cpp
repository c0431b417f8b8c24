// python/src/module.cpp — the _polyattn extension: the linear family and the short convolution
// (softmax, KV cache and sparse selectors are in softmax.cpp; Mamba2 in mamba2.cpp). See common.hpp
// for the private ABI; python/polyattn/ holds the public, fla-named functions built on it.
//
// The linear operators run Chunked<64> (prefill) or Recurrent (fused_recurrent_*, decode); every
// algorithm gives the same numbers up to fp32 rounding (docs/conventions.md §4), so fla's
// chunk_size is accepted and not needed. Their kernels come from the per-ISA units the module
// links (polyattn_kernel_units), so one build serves AVX2 and AVX-512 machines.
#include <string>

#include "common.hpp"
#include "polyattn/conv/short_conv.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/workspace.hpp"
#include "polyattn/linear/presets.hpp"

namespace polyattn::py {
namespace {

template <class Op>
void run_linear(const Op& op, bool recurrent, const LinearInputs& in,
                const LinearOutputs<float>& out, const LinearRunOptions& run, int threads) {
  const ModuleExecutor exec(threads);
  nb::gil_scoped_release release;
  if (recurrent)
    op.template forward<Recurrent>(in, out, run, exec);
  else
    op.template forward<Chunked<64>>(in, out, run, exec);
}

// kind: linear_attn | linear_attn_normalized | constant (g_gamma) | simple_gla | gla |
// delta_rule | gated_delta_rule | kda | based | based_unnormalized, and the fused gates
// (policies/fused_gates.hpp) gated_delta_rule_fused (a, A_log, dt_bias, b) | kda_fused (graw,
// A_log, dt_bias, b; lower_bound given: fla's bounded gate).
void linear(const std::string& kind, bool recurrent, const In& q, const In& k, const In& v,
            const OptIn& g, const OptIn& gk, const OptIn& g_gamma, const OptIn& beta,
            const OptIn& initial_state, const OptIn& initial_z, const OptIn& cu_seqlens,
            const OptIn& state_indices, const OptIn& a, const OptIn& graw, const OptIn& b,
            const OptIn& A_log, const OptIn& dt_bias, const Out& o, const OptOut& final_state,
            const OptOut& final_z, std::optional<double> scale, bool qk_l2norm,
            std::optional<double> lower_bound, int threads) {
  LinearInputs in;
  in.q = element_in<4>(q, "q");
  in.k = element_in<4>(k, "k");
  in.v = element_in<4>(v, "v");
  in.g = f32_in<3>(g, "g");
  in.gk = f32_in<4>(gk, "g");  // fla calls the vector gate g too
  in.g_gamma = f32_in<1>(g_gamma, "g_gamma");
  in.beta = f32_in<3>(beta, "beta");
  in.initial_state = f32_in<4>(initial_state, "initial_state");
  in.initial_z = f32_in<3>(initial_z, "initial_state");
  in.cu_seqlens = i64_in(cu_seqlens, "cu_seqlens");
  in.state_indices = i64_in(state_indices, "state_indices");
  in.a = f32_in<3>(a, "g");  // fla passes the raw gates as g, with use_gate_in_kernel=True
  in.graw = f32_in<4>(graw, "g");
  in.b = f32_in<3>(b, "beta");
  in.A_log = f32_in<1>(A_log, "A_log");
  in.dt_bias = f32_in<1>(dt_bias, "dt_bias");
  const LinearOutputs<float> out{.o = element_out<4>(o, "o"),
                                 .final_state = f32_out<4>(final_state, "final_state"),
                                 .final_z = f32_out<3>(final_z, "final_state")};
  const LinearRunOptions run{.scale = scale};
  using namespace presets;
  if (kind == "linear_attn")
    run_linear(linear_attn{}, recurrent, in, out, run, threads);
  else if (kind == "linear_attn_normalized")
    run_linear(make_linear_attn_normalized(), recurrent, in, out, run, threads);
  else if (kind == "constant")
    run_linear(retention{}, recurrent, in, out, run, threads);  // reads in.g_gamma
  else if (kind == "simple_gla")
    run_linear(simple_gla{}, recurrent, in, out, run, threads);
  else if (kind == "gla")
    run_linear(gla{}, recurrent, in, out, run, threads);
  else if (kind == "delta_rule")
    run_linear(make_delta_rule(qk_l2norm), recurrent, in, out, run, threads);
  else if (kind == "gated_delta_rule")
    run_linear(make_gated_delta_rule(qk_l2norm), recurrent, in, out, run, threads);
  else if (kind == "kda")
    run_linear(make_kda(qk_l2norm), recurrent, in, out, run, threads);
  else if (kind == "gated_delta_rule_fused")  // reads a, A_log, dt_bias, b
    run_linear(make_gated_delta_rule_fused(qk_l2norm), recurrent, in, out, run, threads);
  else if (kind == "kda_fused")  // reads graw, A_log, dt_bias [HV·K], b
    run_linear(make_kda_fused(qk_l2norm, lower_bound.has_value(),
                              static_cast<float>(lower_bound.value_or(-5.0))),
               recurrent, in, out, run, threads);
  else if (kind == "based")
    run_linear(make_based(), recurrent, in, out, run, threads);
  else if (kind == "based_unnormalized")
    run_linear(LinearAttention<Taylor2Fla, NoDecay, AdditiveUpdate, NoNormalizer>(
                   Taylor2Fla{}, NoDecay{}, AdditiveUpdate{}, NoNormalizer{}, 1.0),
               recurrent, in, out, run, threads);
  else
    throw nb::value_error(("polyattn: unknown linear operator '" + kind + "'").c_str());
}

conv::ShortConvInputs conv_inputs(const In& x, const In& weight, const OptIn& bias,
                                  const OptIn& cu_seqlens, const OptIn& state_indices) {
  conv::ShortConvInputs in;
  in.x = f32_in<3>(OptIn(x), "x");
  in.weight = f32_in<2>(OptIn(weight), "weight");
  in.bias = f32_in<1>(bias, "bias");
  in.cu_seqlens = i64_in(cu_seqlens, "cu_seqlens");
  in.state_indices = i64_in(state_indices, "state_indices");
  return in;
}

// y = act(conv(x)) over [B,T,D] (any strides: [B,D,T] memory is a transposed view).
void short_conv(const In& x, const In& weight, const OptIn& bias, const OptIn& initial_state,
                const OptIn& cu_seqlens, const OptIn& state_indices, const Out& y,
                const OptOut& final_state, bool silu, int threads) {
  conv::ShortConvInputs in = conv_inputs(x, weight, bias, cu_seqlens, state_indices);
  in.initial_state = f32_in<3>(initial_state, "initial_state");
  const conv::ShortConvOutputs out{.y = f32_out<3>(OptOut(y), "y"),
                                   .final_state = f32_out<3>(final_state, "final_state")};
  const conv::ShortConvOptions opt{.activation =
                                       silu ? conv::Activation::SiLU : conv::Activation::None};
  const ModuleExecutor exec(threads);
  nb::gil_scoped_release release;
  conv::short_conv(in, opt, out, exec);
}

void short_conv_step(const In& x, const In& weight, const OptIn& bias, const OptIn& state_indices,
                     const Out& state, const Out& y, bool silu, int threads) {
  const conv::ShortConvInputs in = conv_inputs(x, weight, bias, OptIn{}, state_indices);
  const auto st = f32_out<3>(OptOut(state), "conv_state");
  const auto yv = f32_out<3>(OptOut(y), "y");
  const conv::ShortConvOptions opt{.activation =
                                       silu ? conv::Activation::SiLU : conv::Activation::None};
  const ModuleExecutor exec(threads);
  nb::gil_scoped_release release;
  conv::short_conv_step(in, opt, st, yv, exec);
}

std::string isa() {
  return std::string(simd::isa_name(simd::runtime_isa()));
}

// The workspace's statistics (core/workspace.hpp) by field name.
nb::dict workspace_stats_dict() {
  const WorkspaceStats s = workspace_stats();
  nb::dict d;
  d["retained_bytes"] = s.retained_bytes;
  d["retained_blocks"] = s.retained_blocks;
  d["in_use_blocks"] = s.in_use_blocks;
  d["reuses"] = s.reuses;
  d["allocations"] = s.allocations;
  d["limit_bytes"] = s.limit_bytes;
  return d;
}

}  // namespace
}  // namespace polyattn::py

NB_MODULE(_polyattn, m) {
  using namespace polyattn::py;
  namespace nb = nanobind;
  using nb::arg;
  m.doc() = "polyattn's compiled core (private; use the polyattn package).";
  m.def("linear", &linear, arg("kind"), arg("recurrent"), arg("q"), arg("k"), arg("v"),
        arg("g").none(), arg("gk").none(), arg("g_gamma").none(), arg("beta").none(),
        arg("initial_state").none(), arg("initial_z").none(), arg("cu_seqlens").none(),
        arg("state_indices").none(), arg("a").none(), arg("graw").none(), arg("b").none(),
        arg("A_log").none(), arg("dt_bias").none(), arg("o"), arg("final_state").none(),
        arg("final_z").none(), arg("scale").none(), arg("qk_l2norm"), arg("lower_bound").none(),
        arg("threads"));
  m.def("short_conv", &short_conv, arg("x"), arg("weight"), arg("bias").none(),
        arg("initial_state").none(), arg("cu_seqlens").none(), arg("state_indices").none(),
        arg("y"), arg("final_state").none(), arg("silu"), arg("threads"));
  m.def("short_conv_step", &short_conv_step, arg("x"), arg("weight"), arg("bias").none(),
        arg("state_indices").none(), arg("state"), arg("y"), arg("silu"), arg("threads"));
  m.def("isa", &isa, "The instruction set the kernels dispatch to on this machine.");
  // The process-wide workspace of pack memory; freeing blocks may unmap memory: without the GIL.
  m.def("workspace_stats", &workspace_stats_dict);
  m.def("release_workspace", [] {
    nb::gil_scoped_release release;
    return polyattn::release_workspace();
  });
  m.def(
      "set_workspace_limit",
      [](std::size_t nbytes) {
        nb::gil_scoped_release release;
        polyattn::set_workspace_limit(nbytes);
      },
      arg("nbytes"));
  m.def("use_openmp_runtime", &use_openmp_runtime, arg("on"),
        "Run kernels on the OpenMP runtime already loaded in the process (True) or on "
        "polyattn's pool (False); returns the runtime's library, or '' when none is loaded.");
  m.def("openmp_max_threads", [] {
    const OpenMPRuntime* rt = openmp_runtime().load();
    return rt ? rt->max_threads() : 0;
  });
  bind_softmax(m);
  bind_mamba2(m);
}
