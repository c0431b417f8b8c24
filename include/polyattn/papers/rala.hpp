// polyattn/papers/rala.hpp — Rank-Augmented Linear Attention (Fan, Huang & He, "Breaking the
// Low-Rank Dilemma of Linear Attention", CVPR 2025, arXiv 2411.07635: its KV-buffer and
// output-feature rank augmentation; the equation numbers could not be checked here; the authors'
// code github.com/qhfan/RALA, classfication/RALA.py, GateLinearAttentionNoSilu), in its causal
// 1-D form, per (sequence, value head hv), q/k head h = hv / G, φ = elu + 1:
//
//   KV-buffer augmentation   α_j = softmax_j(scale·q̄·φ(k_j))      (scale default K^-½; q̄ the
//                                                                     global query, mean of φ(q))
//   output                   y_t = φ(q_t)ᵀ Σ_j α_j φ(k_j) v_jᵀ / (φ(q_t)·Σ_j α_j φ(k_j) + eps)
//   output-feature augment.  o_t = (y_t + LePE(v)_t) ⊙ g_t            (g_t = x_t W, optional)
//
// with eps 1e-6 and LePE a depthwise convolution of v (the authors': 5×5 over the image grid;
// here papers::token_conv_add, causal over tokens, optional). Causal: the softmax runs over the
// keys seen so far, α_j = e^{s_j} / C_t with C_t = Σ_{j≤t} e^{s_j}, s_j = scale·q̄·φ(k_j). The
// global query must not change with t for a recurrent state to exist, so q̄ [N,H,K] is an input
// (already mapped): papers::rala_query_mean gives the paper's mean of φ(q) over each whole
// sequence (the vision case, where every token is at hand); a decoder fixes it, e.g. at its
// prompt's mean. Denominators cancel between α and the normaliser except for eps, which is kept.
//
// Recurrence (how it runs): with log C as a running log-sum-exp, S_t = Σ_j α_j φ(k_j) v_jᵀ is
//   γ_t = log C_{t−1} − log C_t ≤ 0,   k̃_t = e^{s_t − log C_t} φ(k_t),   S_t = e^{γ_t} S_{t−1} +
//   k̃_t v_tᵀ
// i.e. presets::simple_gla (ScalarDecay, scale 1): Recurrent, Chunked<C>, Parallel, step; the
// key mean z_t = e^{γ_t} z_{t−1} + k̃_t and the denominators φ(q_t)·z_t + eps come from an O(T·K)
// double pass per q/k head (the library's Sum normaliser never decays z, §3.3), and the kernel's
// read-out is divided by them once. k̃ and γ are formed in double and rounded once to float.
// State: S [N,HV,K,V], z [N,H,K], log C [N,H], all or none (none: C_0 = 0; the first token's
// gate is then 0 and multiplies a zero state). GVA (α of head h serves its G value heads) and
// varlen as the linear family.
//
// What the authors' code does differently: it is non-causal over an image (all keys, q̄ the mean
// over all queries), applies RoPE to q and k in the numerator only (φ(q)·mean(φk) is the
// denominator) — positional encodings are the model's business here, as MALA's; it multiplies k
// by α·n and then kv by n^-1, which cancel. The projections are the model's.
// Element types (docs/conventions.md §9.8): q, k, v and the output features' gate fp32, bf16 or
// fp16, one type for all four (else an Error naming k, v or gate), read widened exactly (φ(q),
// k̃ and, when it is not fp32, v go to the kernels as fp32 scratch, as for LightNet; LePE reads v
// widened); o of any of the three, formed in fp32 (normalised, + LePE, ⊙ gate) and rounded once
// (core/fp32_output.hpp); q̄, the states, log C and the LePE kernel and cache fp32. bf16 / fp16
// inputs give the fp32 operator's bits on the widened values.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <span>
#include <vector>

#include "polyattn/core/element_view.hpp"
#include "polyattn/core/fp32_output.hpp"
#include "polyattn/core/overlap.hpp"
#include "polyattn/linear/presets.hpp"
#include "polyattn/papers/token_conv.hpp"

namespace polyattn::papers {

struct RalaInputs {
  EView4 q, k;                               // [B,T,H,K] raw (φ = elu+1 applied here), fp32,
                                             // bf16 or fp16 (one type for q, k, v, gate)
  EView4 v;                                  // [B,T,HV,V]
  View3<const float> q_mean;                 // [N,H,K] the global query q̄ (mapped)
  EView4 gate;                               // optional [B,T,HV,V]: o = (y + LePE) ⊙ gate
  View4<const float> initial_state;          // optional [N,HV,K,V] S = Σ α φk vᵀ
  View3<const float> initial_z;              // [N,H,K] Σ α φk (with initial_state)
  TensorView<const float, 2> initial_log_c;  // [N,H] log Σ e^{s} (with initial_state)
  std::span<const std::int64_t> cu_seqlens;
};

struct RalaOutputs {
  MutEView4 o;                       // [B,T,HV,V] fp32, bf16 or fp16
  View4<float> final_state;          // optional [N,HV,K,V]
  View3<float> final_z;              // optional [N,H,K]
  TensorView<float, 2> final_log_c;  // optional [N,H]
};

struct RalaOptions {
  std::optional<double> scale;  // α's temperature, default K^-½ (the authors' head_dim^-0.5)
  double eps = 1e-6;
};

/// q̄ of the paper: mean of φ(q) = elu(q)+1 over each sequence. q [B,T,H,K] -> out [N,H,K]
/// (an empty sequence gets zeros). q fp32, bf16 or fp16 (read widened), out fp32.
inline void rala_query_mean(const EView4& q, std::span<const std::int64_t> cu_seqlens,
                            const View3<float>& out) {
  check::required("q", q);
  const index_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3);
  const index_t N = check::cu_seqlens("cu_seqlens", cu_seqlens, B, T);
  check::required("q_mean", out);
  check::shape_is("q_mean", out, {N, H, K}, "[N,H,K]");
  const auto segs = segments(B, T, cu_seqlens);
  q.visit([&](auto qx) {  // q of its element type, read widened
    for (index_t n = 0; n < N; ++n) {
      const Segment& sg = segs[static_cast<std::size_t>(n)];
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < K; ++i) {
          double acc = 0.0;
          for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
            const double x = to_float(qx(sg.batch, t, h, i));
            acc += x > 0.0 ? x + 1.0 : std::exp(x);
          }
          out(n, h, i) =
              static_cast<float>(sg.length > 0 ? acc / static_cast<double>(sg.length) : 0.0);
        }
    }
  });
}

class Rala {
 public:
  /// Prefill. conv: the LePE kernel (weight absent: no LePE), cache its history as SLAB's.
  /// @throws polyattn::Error naming the bad argument; outputs are then untouched
  template <LinearAlgorithm Algo = Recurrent, Executor E = Serial>
  void forward(const RalaInputs& in, const TokenConv& conv, const TokenConvCache& cache,
               const RalaOutputs& out, const RalaOptions& opt = {},
               const LinearRunOptions& run = {}, const E& exec = E{}) const {
    run_impl<Algo>(in, conv, cache, out, opt, run, exec);
  }

  /// Decode: state [B,HV,K,V], z [B,H,K], log_c [B,H] and the conv cache [B,HV,W−1,V] (when
  /// conv has a weight of width > 1) read and updated in place.
  template <Executor E = Serial>
  void step(const RalaInputs& in, View4<float> state, View3<float> z, TensorView<float, 2> log_c,
            const TokenConv& conv, View4<float> conv_cache, MutEView4 o,
            const RalaOptions& opt = {}, const LinearRunOptions& run = {},
            const E& exec = E{}) const {
    if (!in.initial_state.absent() || !in.initial_z.absent() || !in.initial_log_c.absent())
      throw Error("initial_state",
                  "must be empty in step(): the state arguments are read and updated in place");
    if (!in.cu_seqlens.empty()) throw Error("cu_seqlens", "is not supported by step()");
    check::required("state", state);
    check::required("z", z);
    check::required("log_c", log_c);
    RalaInputs with_state = in;
    with_state.initial_state = state;
    with_state.initial_z = z;
    with_state.initial_log_c = log_c;
    run_impl<Recurrent>(with_state, conv, {conv_cache, conv_cache},
                        {.o = o, .final_state = state, .final_z = z, .final_log_c = log_c}, opt,
                        run, exec);
  }

 private:
  template <class Algo, class E>
  void run_impl(const RalaInputs& in, const TokenConv& conv, const TokenConvCache& cache,
                const RalaOutputs& out, const RalaOptions& opt, const LinearRunOptions& run,
                const E& exec) const {
    check::required("q", in.q);
    check::required("k", in.k);
    check::required("v", in.v);
    check::required("o", out.o);
    check::shape_is("k", in.k, in.q.shape(), "same as q [B,T,H,K]");
    const auto& s = in.q.shape();
    const index_t B = s[0], T = s[1], H = s[2], K = s[3];
    const index_t N = check::cu_seqlens("cu_seqlens", in.cu_seqlens, B, T);
    check::heads_divide("v", H, in.v.size(2));
    const index_t HV = in.v.size(2), V = in.v.size(3), G = HV / H;
    check::shape_is("v", in.v, {B, T, HV, V}, "[B,T,HV,V]");
    check::shape_is("o", out.o, {B, T, HV, V}, "same as v [B,T,HV,V]");
    check::required("q_mean", in.q_mean);
    check::shape_is("q_mean", in.q_mean, {N, H, K}, "[N,H,K]");
    if (!in.gate.absent()) {
      check::well_formed("gate", in.gate);
      check::shape_is("gate", in.gate, {B, T, HV, V}, "same as v [B,T,HV,V]");
    }
    for (const auto& [name, x] :
         {std::pair{"k", in.k}, std::pair{"v", in.v}, std::pair{"gate", in.gate}})
      check::dtype_is(name, x, in.q.dtype(), "RALA (one element type for q, k, v and gate, q's)");
    if (!opt.eps || !std::isfinite(opt.eps) || opt.eps < 0)
      throw Error("eps", "must be finite and positive, got " + std::to_string(opt.eps));
    if (run.scale)
      throw Error("scale",
                  "goes in RalaOptions (the read-out has none: the normaliser cancels it)");
    if (opt.scale && !std::isfinite(*opt.scale))
      throw Error("scale", "must be finite, got " + std::to_string(*opt.scale));
    const bool has0 = !in.initial_state.absent();
    if (has0 != !in.initial_z.absent() || has0 != !in.initial_log_c.absent())
      throw Error(in.initial_z.absent()       ? "initial_z"
                  : in.initial_log_c.absent() ? "initial_log_c"
                                              : "initial_state",
                  "initial_state, initial_z and initial_log_c come together");
    // The kernels see scratch copies of q, k (and v), and o is written before the gate is read.
    check::writes_disjoint({memory::region("o", out.o)},
                           {memory::region("q", in.q), memory::region("k", in.k),
                            memory::region("v", in.v), memory::region("gate", in.gate)});
    if (has0) {
      check::well_formed("initial_z", in.initial_z);
      check::shape_is("initial_z", in.initial_z, {N, H, K}, "[N,H,K]");
      check::well_formed("initial_log_c", in.initial_log_c);
      check::shape_is("initial_log_c", in.initial_log_c, {N, H}, "[N,H]");
    }
    if (!out.final_z.absent()) {
      check::well_formed("final_z", out.final_z);
      check::shape_is("final_z", out.final_z, {N, H, K}, "[N,H,K]");
    }
    if (!out.final_log_c.absent()) {
      check::well_formed("final_log_c", out.final_log_c);
      check::shape_is("final_log_c", out.final_log_c, {N, H}, "[N,H]");
    }
    if (!conv.weight.absent())
      check_token_conv(conv, cache, N, HV, V);
    else if (!cache.in.absent() || !cache.out.absent())
      throw Error(cache.in.absent() ? "conv_cache.out" : "conv_cache.in",
                  "was given without a LePE kernel (conv.weight)");

    // φ(q), k̃ [B,T,H,K], the gate g [B,T,HV] and the denominators [B,T,H], in double per token.
    const auto n4 = static_cast<std::size_t>(std::max<index_t>(B * T * H * K, 1));
    std::vector<float> qm(n4), kt(n4),
        gv(static_cast<std::size_t>(std::max<index_t>(B * T * HV, 1)));
    std::vector<double> den(static_cast<std::size_t>(std::max<index_t>(B * T * H, 1)));
    const auto qv = View4<float>::contiguous(qm.data(), {B, T, H, K});
    const auto kv = View4<float>::contiguous(kt.data(), {B, T, H, K});
    apply_rows(EluPlusOne{}, in.q, qv);
    const double scale = opt.scale ? *opt.scale : 1.0 / std::sqrt(static_cast<double>(K));
    const auto segs = segments(B, T, in.cu_seqlens);
    std::vector<double> zf(static_cast<std::size_t>(std::max<index_t>(N * H * K, 1))),
        cf(static_cast<std::size_t>(std::max<index_t>(N * H, 1)));
    std::vector<double> z(static_cast<std::size_t>(K)), phik(static_cast<std::size_t>(K));
    in.k.visit([&](auto kx) {  // k of its element type, read widened
      for (index_t n = 0; n < N; ++n) {
        const Segment& sg = segs[static_cast<std::size_t>(n)];
        for (index_t h = 0; h < H; ++h) {
          double logc = -std::numeric_limits<double>::infinity();
          for (index_t i = 0; i < K; ++i) z[static_cast<std::size_t>(i)] = 0.0;
          if (has0) {
            logc = in.initial_log_c(n, h);
            for (index_t i = 0; i < K; ++i) z[static_cast<std::size_t>(i)] = in.initial_z(n, h, i);
          }
          for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
            double sc = 0.0;
            for (index_t i = 0; i < K; ++i) {
              const double x = to_float(kx(sg.batch, t, h, i));
              const double p = x > 0.0 ? x + 1.0 : std::exp(x);
              phik[static_cast<std::size_t>(i)] = p;
              sc += static_cast<double>(in.q_mean(n, h, i)) * p;
            }
            sc *= scale;
            const double hi = std::max(logc, sc), lo = std::min(logc, sc);
            const double lc = hi + std::log1p(std::exp(lo - hi));  // logaddexp(log C, s)
            const double gamma = std::isinf(logc) && logc < 0 ? 0.0 : logc - lc;
            const double w = std::exp(sc - lc), decay = std::exp(gamma);
            double d = 0.0;
            for (index_t i = 0; i < K; ++i) {
              const auto ii = static_cast<std::size_t>(i);
              const double kk = w * phik[ii];
              kv(sg.batch, t, h, i) = static_cast<float>(kk);
              z[ii] = decay * z[ii] + kk;
              d += static_cast<double>(qv(sg.batch, t, h, i)) * z[ii];
            }
            den[static_cast<std::size_t>((sg.batch * T + t) * H + h)] = d + opt.eps;
            for (index_t g = 0; g < G; ++g)
              gv[static_cast<std::size_t>((sg.batch * T + t) * HV + h * G + g)] =
                  static_cast<float>(gamma);
            logc = lc;
          }
          cf[static_cast<std::size_t>(n * H + h)] = logc;
          for (index_t i = 0; i < K; ++i)
            zf[static_cast<std::size_t>((n * H + h) * K + i)] = z[static_cast<std::size_t>(i)];
        }
      }
    });
    LinearInputs lin{.q = qv,
                     .k = kv,
                     .v = in.v,
                     .g = View3<const float>::contiguous(gv.data(), {B, T, HV}),
                     .initial_state = in.initial_state,
                     .cu_seqlens = in.cu_seqlens};
    std::vector<float> vw;
    if (!in.v.is<float>()) {  // the kernels take one element type: v widened like φ(q), k̃
      vw.resize(static_cast<std::size_t>(std::max<index_t>(in.v.numel(), 1)));
      const auto vv = View4<float>::contiguous(vw.data(), in.v.shape());
      apply_rows(Identity{}, in.v, vv);
      lin.v = vv;
    }
    const Fp32Output o32(out.o);  // o formed in fp32, rounded once at the end
    const View4<float>& o = o32.view();
    gla_.template forward<Algo>(lin, {.o = o, .final_state = out.final_state}, run, exec);
    // Normalise, then LePE, then the output features.
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t hv = 0; hv < HV; ++hv) {
          const double dd = den[static_cast<std::size_t>((b * T + t) * H + hv / G)];
          for (index_t j = 0; j < V; ++j)
            o(b, t, hv, j) = static_cast<float>(static_cast<double>(o(b, t, hv, j)) / dd);
        }
    if (!conv.weight.absent()) token_conv_add_unchecked(in.v, conv, cache, in.cu_seqlens, o);
    if (!in.gate.absent())
      in.gate.visit([&](auto gx) {  // the gate of its element type, read widened
        for (index_t b = 0; b < B; ++b)
          for (index_t t = 0; t < T; ++t)
            for (index_t hv = 0; hv < HV; ++hv)
              for (index_t j = 0; j < V; ++j) o(b, t, hv, j) *= to_float(gx(b, t, hv, j));
      });
    o32.finish();
    for (index_t n = 0; n < N; ++n)
      for (index_t h = 0; h < H; ++h) {
        if (!out.final_log_c.absent())
          out.final_log_c(n, h) = static_cast<float>(cf[static_cast<std::size_t>(n * H + h)]);
        if (!out.final_z.absent())
          for (index_t i = 0; i < K; ++i)
            out.final_z(n, h, i) =
                static_cast<float>(zf[static_cast<std::size_t>((n * H + h) * K + i)]);
      }
  }

  ::polyattn::presets::simple_gla gla_{Identity{}, ScalarDecay{}, AdditiveUpdate{}, NoNormalizer{},
                                       1.0};
};

namespace presets {
inline Rala make_rala() {
  return {};
}
}  // namespace presets

}  // namespace polyattn::papers
