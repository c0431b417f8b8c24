// polyattn/papers/lightnet.hpp — LightNet's additive linear recurrence (Qin et al., "You Only
// Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet", 2024), causal, per
// (sequence, value head hv, key channel i), q/k head h = hv / G:
//
//   additive form (the paper's recurrence):
//     A_t = A_{t−1} + e^{k_{t,i}} v_t,   δ_t = δ_{t−1} + e^{k_{t,i}},   S_t[i,:] = A_t / δ_t
//     o_t = Σ_i scale·silu(q_t)_i · S_t[i,:]                    (scale default K^-½)
//   the same as a multiplicative (GLA) recurrence with data-dependent key and gate, which is how
//   it runs here, as fla's LightNetAttention does (fla/layers/lightnet.py: fused_lightnet_gate,
//   then chunk_gla — the implementation to check parity against; the authors' repository is
//   github.com/OpenNLPLab/LightNet):
//     z_t = log δ_t = logaddexp(z_{t−1}, k_{t,i}),   k̃_{t,i} = e^{k_{t,i} − z_t},
//     γ_{t,i} = z_{t−1} − z_t ≤ 0,   S_t = diag(e^{γ_t}) S_{t−1} + k̃_t v_tᵀ
//   since e^{γ_t}·A_{t−1}/δ_{t−1} + e^{k_t}v_t/δ_t = A_t/δ_t.
//
// State: S [N,HV,K,V] (the normalised A/δ) and log_z [N,H,K] (log δ per q/k head and channel),
// both or neither given (neither: δ_0 = 0, i.e. z = −inf; the first token's gate is then set to 0,
// which multiplies the zero state). k̃ and γ are formed per token in double from k and rounded
// once to float; the recurrence is presets::gla (VectorDecay, AdditiveUpdate): Recurrent,
// Chunked<C>, Parallel, step; GVA (HV = G·H: the gate of head h serves its G value heads) and
// varlen as the family. The paper's multi-dimensional positional encodings (MD-TPE, MD-LRPE), the
// short convolutions and the output gate of the layer are outside the operator.
// Element types: q, k, v fp32, bf16 or fp16 (one type, as the linear family), o any of the three
// (written by the kernels, rounded once). silu(q) and k̃ are fp32 scratch formed from q, k read
// widened exactly; since the kernels take one element type, a bf16 / fp16 v is widened into fp32
// scratch too (one copy of v). bf16 inputs give the fp32 operator's bits on the widened values
// (docs/conventions.md §9.8).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "polyattn/core/element.hpp"
#include "polyattn/linear/presets.hpp"

namespace polyattn::papers {

/// silu(x) = x·sigmoid(x), LightNet's query map.
struct Silu {
  static constexpr bool is_identity = false;
  static constexpr const char* name() noexcept { return "silu"; }
  index_t out_dim(index_t d) const {
    if (d <= 0) throw Error("q (key dim)", "must be positive, got " + std::to_string(d));
    return d;
  }
  void apply(const float* x, index_t d, float* out) const noexcept {
    for (index_t i = 0; i < d; ++i) {
      const double v = x[i];
      out[i] = static_cast<float>(v / (1.0 + std::exp(-v)));
    }
  }
};
static_assert(FeatureMap<Silu>);

class LightNet {
 public:
  /// Prefill. in: q, k [B,T,H,K] (raw: silu and the exp-normalised key are applied here), v
  /// [B,T,HV,V], optional initial_state [N,HV,K,V] with initial_log_z [N,H,K], cu_seqlens.
  /// out: o, optional final_state with final_log_z [N,H,K] (each optional on its own).
  /// @throws polyattn::Error naming the bad argument; outputs are then untouched
  template <LinearAlgorithm Algo = Recurrent, Executor E = Serial>
  void forward(const LinearInputs& in, View3<const float> initial_log_z,
               const LinearOutputs<float>& out, View3<float> final_log_z,
               const LinearRunOptions& run = {}, const E& exec = E{}) const {
    run_impl<Algo>(in, initial_log_z, out, final_log_z, run, exec);
  }

  /// Decode: state [B,HV,K,V] and log_z [B,H,K] read and updated in place.
  template <Executor E = Serial>
  void step(const LinearInputs& in, View4<float> state, View3<float> log_z, MutEView4 o,
            const LinearRunOptions& run = {}, const E& exec = E{}) const {
    if (!in.initial_state.absent())
      throw Error("initial_state",
                  "must be empty in step(): the state argument is read and updated in place");
    if (!in.cu_seqlens.empty()) throw Error("cu_seqlens", "is not supported by step()");
    check::required("state", state);
    check::required("log_z", log_z);
    LinearInputs with_state = in;
    with_state.initial_state = state;
    run_impl<Recurrent>(with_state, log_z, {.o = o, .final_state = state}, log_z, run, exec);
  }

 private:
  template <class Algo, class E>
  void run_impl(const LinearInputs& in_raw, View3<const float> z0, const LinearOutputs<float>& out,
                View3<float> z_out, const LinearRunOptions& run, const E& exec) const {
    check::required("q", in_raw.q);
    check::required("k", in_raw.k);
    check::required("v", in_raw.v);
    check::qkv_element_types(in_raw);
    check::shape_is("k", in_raw.k, in_raw.q.shape(), "same as q [B,T,H,K]");
    if (!in_raw.gk.absent() || !in_raw.g.absent() || !in_raw.g_gamma.absent())
      throw Error(!in_raw.gk.absent()  ? "gk"
                  : !in_raw.g.absent() ? "g"
                                       : "g_gamma",
                  "was given but LightNet forms its gate from k");
    const auto& s = in_raw.q.shape();
    const index_t B = s[0], T = s[1], H = s[2], K = s[3];
    const index_t N = check::cu_seqlens("cu_seqlens", in_raw.cu_seqlens, B, T);
    check::heads_divide("v", H, in_raw.v.size(2));
    const index_t HV = in_raw.v.size(2), G = HV / H;
    if (in_raw.initial_state.absent() != z0.absent())
      throw Error(z0.absent() ? "initial_log_z" : "initial_state",
                  "initial_state and initial_log_z come together (the state is A/δ, log_z is "
                  "log δ)");
    if (!z0.absent()) {
      check::well_formed("initial_log_z", z0);
      check::shape_is("initial_log_z", z0, {N, H, K}, "[N,H,K]");
    }
    if (!z_out.absent()) {
      check::well_formed("final_log_z", z_out);
      check::shape_is("final_log_z", z_out, {N, H, K}, "[N,H,K]");
    }

    // silu(q), k̃ [B,T,H,K] and the gate gk [B,T,HV,K], token by token in double.
    // (At least one element each, so that an empty call still passes non-null views.)
    const auto n4 = static_cast<std::size_t>(std::max<index_t>(B * T * H * K, 1));
    std::vector<float> qm(n4), kt(n4),
        gk(static_cast<std::size_t>(std::max<index_t>(B * T * HV * K, 1)));
    const auto qv = View4<float>::contiguous(qm.data(), {B, T, H, K});
    const auto kv = View4<float>::contiguous(kt.data(), {B, T, H, K});
    const auto gv = View4<float>::contiguous(gk.data(), {B, T, HV, K});
    apply_rows(Silu{}, in_raw.q, qv);
    const auto segs = segments(B, T, in_raw.cu_seqlens);
    std::vector<double> zf(static_cast<std::size_t>(N * H * K));
    in_raw.k.visit([&](auto kin) {  // k of its element type, read widened
      for (index_t n = 0; n < N; ++n) {
        const Segment& sg = segs[static_cast<std::size_t>(n)];
        for (index_t h = 0; h < H; ++h)
          for (index_t i = 0; i < K; ++i) {
            double z = z0.absent() ? -std::numeric_limits<double>::infinity() : z0(n, h, i);
            for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
              const double k = to_float(kin(sg.batch, t, h, i));
              const double hi = std::max(z, k), lo = std::min(z, k);
              const double zn = hi + std::log1p(std::exp(lo - hi));  // logaddexp(z, k)
              // δ_{t−1} = 0 (z = −inf): the gate multiplies a zero state; 0 keeps chunk sums
              // finite.
              const double gamma = std::isinf(z) && z < 0 ? 0.0 : z - zn;
              kv(sg.batch, t, h, i) = static_cast<float>(std::exp(k - zn));
              for (index_t g = 0; g < G; ++g)
                gv(sg.batch, t, h * G + g, i) = static_cast<float>(gamma);
              z = zn;
            }
            zf[static_cast<std::size_t>((n * H + h) * K + i)] = z;
          }
      }
    });
    LinearInputs in = in_raw;
    in.q = qv;
    in.k = kv;
    in.gk = gv;
    std::vector<float> vw;
    if (!in_raw.v.is<float>()) {  // the kernels take one element type: v widened like q̃, k̃
      vw.resize(static_cast<std::size_t>(std::max<index_t>(in_raw.v.numel(), 1)));
      const auto vv = View4<float>::contiguous(vw.data(), in_raw.v.shape());
      apply_rows(Identity{}, in_raw.v, vv);
      in.v = vv;
    }
    check::writes_disjoint({memory::region("o", out.o)},  // the kernels see copies of q, k (v)
                           {memory::region("q", in_raw.q), memory::region("k", in_raw.k),
                            memory::region("v", in_raw.v)});
    gla_.template forward<Algo>(in, out, run, exec);
    if (!z_out.absent())
      for (index_t n = 0; n < N; ++n)
        for (index_t h = 0; h < H; ++h)
          for (index_t i = 0; i < K; ++i)
            z_out(n, h, i) = static_cast<float>(zf[static_cast<std::size_t>((n * H + h) * K + i)]);
  }

  ::polyattn::presets::gla gla_{};
};

namespace presets {
inline LightNet make_lightnet() {
  return {};
}
}  // namespace presets

}  // namespace polyattn::papers
