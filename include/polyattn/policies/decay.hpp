// polyattn/policies/decay.hpp — decay (gate) policies of the linear family, in log space:
//
//   S_t = D_t S_{t−1} + k_t u_tᵀ,   D_t = diag(exp(γ_t)),   γ_t ≤ 0 the per-token log decay
//
//   NoDecay        γ_t = 0                                     (linear attention, DeltaNet)
//   ConstantDecay  γ_t = g_gamma[h]  one value per value head  (RetNet, Lightning)
//   ScalarDecay    γ_t = g[b,t,h]    one value per token       (simple GLA, Mamba2 SSD, GDN)
//   VectorDecay    γ_t,i = gk[b,t,h,i]  per key channel        (GLA, HGRN2, KDA; rows of S)
//
// A decay policy is one type (concept DecayPolicy). Its compile-time `shape` (GateShape::None,
// Scalar or KeyChannel) selects the specialised kernel stages (scalar gates: one exp per pair of
// tokens; key-channel gates: the factorised Gram form), as fla's shared chunk stages take
// compile-time gate flags. Its hooks:
//   check(in, dims)          validate the tensors it reads (check::gate_inputs), naming them
//   bind(in, b, t0, h)       the gate of one (sequence, value head) from token t0 on: a small
//                            value type the kernels call, token index t relative to t0:
//                              Scalar:      float log_decay(t)
//                                           optional: template <SimdArch A>
//                                           void log_decays(t0, float* out, n) — tokens
//                                           t0 .. t0+n−1 at once (default: log_decay in a loop)
//                              KeyChannel:  float log_decay(t, i)   (key channel i)
//                                           optional: template <SimdArch A>
//                                           void log_decay_row(t, float* out, K) — the K values
//                                           at once (default: the per-channel hook in a loop)
// Built-in policies also carry `kind` (the Decay value the reference oracle understands);
// a user's decay needs none. ConstantDecay can carry its own per-head values
// (ConstantDecay::retention(H), ConstantDecay::lightning(H, layer, layers)) or take g_gamma
// from the inputs.
#pragma once

#include <concepts>
#include <type_traits>
#include <vector>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/ops.hpp"

namespace polyattn {

/// How a decay varies within a token: not at all, one value, or one value per key channel.
enum class GateShape { None, Scalar, KeyChannel };

/// A gate bound to one (sequence, value head), as the kernels see it.
template <class G, GateShape S>
concept BoundGate =
    std::is_trivially_copyable_v<G> &&
    (S == GateShape::None || (S == GateShape::Scalar && requires(const G& g, index_t t) {
       { g.log_decay(t) } -> std::convertible_to<float>;
     }) || (S == GateShape::KeyChannel && requires(const G& g, index_t t, index_t i) {
       { g.log_decay(t, i) } -> std::convertible_to<float>;
     }));

template <class P>
concept DecayPolicy = requires { typename std::integral_constant<GateShape, P::shape>; } &&
                      requires(const P& p, const LinearInputs& in, const LinearDims& d, index_t b,
                               index_t t0, index_t h) {
                        p.check(in, d);
                        { p.bind(in, b, t0, h) } -> BoundGate<P::shape>;
                      };

/// The bound gate type of a decay policy.
template <DecayPolicy P>
using bound_gate_t = decltype(std::declval<const P&>().bind(std::declval<const LinearInputs&>(),
                                                            index_t{}, index_t{}, index_t{}));

/// The K log decays of token t of a key-channel gate: its SIMD row hook when it has one.
template <simd::SimdArch A, class G>
void gate_log_decay_row(const G& gate, index_t t, float* out, index_t K) {
  if constexpr (requires { gate.template log_decay_row<A>(t, out, K); }) {
    gate.template log_decay_row<A>(t, out, K);
  } else {
    for (index_t i = 0; i < K; ++i) out[i] = gate.log_decay(t, i);
  }
}

/// A scalar gate's optional SIMD hook: the log decays of n tokens from t0 at once.
template <class G, class A>
concept HasLogDecays = requires(const G& g, index_t t0, float* out, index_t n) {
  g.template log_decays<A>(t0, out, n);
};

/// out[t] = γ of token t0 + t (t < n) of a scalar gate: its SIMD hook when it has one.
template <simd::SimdArch A, class G>
void gate_log_decays(const G& gate, index_t t0, float* out, index_t n) {
  if constexpr (HasLogDecays<G, A>) {
    gate.template log_decays<A>(t0, out, n);
  } else {
    for (index_t t = 0; t < n; ++t) out[t] = static_cast<float>(gate.log_decay(t0 + t));
  }
}

/// Asks for token t's gate row ahead of use, when the gate has a prefetch hook (a row of K
/// channels per token; scalar gates are a few bytes per token, which the hardware prefetchers
/// follow).
template <simd::SimdArch A, class G>
POLYATTN_ALWAYS_INLINE void gate_prefetch_row(const G& gate, index_t t, index_t K) noexcept {
  if constexpr (requires { gate.template prefetch_row<A>(t, K); })
    gate.template prefetch_row<A>(t, K);
}

struct NoDecay {
  static constexpr GateShape shape = GateShape::None;
  static constexpr Decay kind = Decay::None;
  struct Gate {};
  void check(const LinearInputs& in, const LinearDims& d) const { check::gate_inputs(in, d, {}); }
  Gate bind(const LinearInputs&, index_t, index_t, index_t) const { return {}; }
};

struct ConstantDecay {
  static constexpr GateShape shape = GateShape::Scalar;
  static constexpr Decay kind = Decay::ConstantPerHead;
  std::vector<float> g_gamma;  // empty: use LinearInputs::g_gamma

  struct Gate {
    float gamma;
    float log_decay(index_t) const noexcept { return gamma; }
  };
  void check(const LinearInputs& in, const LinearDims& d) const {
    if (g_gamma.empty()) {
      check::gate_inputs(in, d, {.g_gamma = true});
      return;
    }
    if (!in.g_gamma.absent())
      throw Error("g_gamma", "given both in the inputs and by the ConstantDecay policy");
    check::gate_inputs(in, d, {});
    check::shape_is(
        "g_gamma",
        View1<const float>::contiguous(g_gamma.data(), {static_cast<index_t>(g_gamma.size())}),
        {d.HV}, "[HV], the policy's values");
  }
  Gate bind(const LinearInputs& in, index_t, index_t, index_t h) const {
    return {g_gamma.empty() ? in.g_gamma(h) : g_gamma[static_cast<std::size_t>(h)]};
  }

  // RetNet: g_h = log(1 − 2^(−5−h)).
  static ConstantDecay retention(index_t heads) {
    ConstantDecay d;
    for (index_t h = 0; h < heads; ++h)
      d.g_gamma.push_back(static_cast<float>(retention_log_decay(h)));
    return d;
  }
  // Lightning Attention: g_h = −(8/H)(1 − layer/layers)·h.
  static ConstantDecay lightning(index_t heads, index_t layer, index_t layers) {
    ConstantDecay d;
    for (index_t h = 0; h < heads; ++h)
      d.g_gamma.push_back(static_cast<float>(lightning_log_decay(h, heads, layer, layers)));
    return d;
  }
};

struct ScalarDecay {
  static constexpr GateShape shape = GateShape::Scalar;
  static constexpr Decay kind = Decay::ScalarPerToken;
  struct Gate {
    const float* g;  // g[t·st]
    index_t st;
    float log_decay(index_t t) const noexcept { return g[t * st]; }
  };
  void check(const LinearInputs& in, const LinearDims& d) const {
    check::gate_inputs(in, d, {.g = true});
  }
  Gate bind(const LinearInputs& in, index_t b, index_t t0, index_t h) const {
    return {in.g.ptr(b, t0, h), in.g.stride(1)};
  }
};

struct VectorDecay {
  static constexpr GateShape shape = GateShape::KeyChannel;
  static constexpr Decay kind = Decay::VectorPerToken;
  struct Gate {
    const float* gk;  // gk[t·st + i·cst]
    index_t st, cst;
    float log_decay(index_t t, index_t i) const noexcept { return gk[t * st + i * cst]; }
    template <simd::SimdArch A>
    void log_decay_row(index_t t, float* out, index_t K) const noexcept {
      const float* row = gk + t * st;
      if (cst == 1) {
        simd::transform<A>(
            K, out, [](simd::batch_t<A> x) { return x; }, row);
      } else {
        for (index_t i = 0; i < K; ++i) out[i] = row[i * cst];
      }
    }
    template <simd::SimdArch A>
    POLYATTN_ALWAYS_INLINE void prefetch_row(index_t t, index_t K) const noexcept {
      if (cst == 1) simd::prefetch<A>(gk + t * st, K * static_cast<index_t>(sizeof(float)));
    }
  };
  void check(const LinearInputs& in, const LinearDims& d) const {
    check::gate_inputs(in, d, {.gk = true});
  }
  Gate bind(const LinearInputs& in, index_t b, index_t t0, index_t h) const {
    return {in.gk.ptr(b, t0, h, 0), in.gk.stride(1), in.gk.stride(3)};
  }
};

static_assert(DecayPolicy<NoDecay> && DecayPolicy<ConstantDecay> && DecayPolicy<ScalarDecay> &&
              DecayPolicy<VectorDecay>);

}  // namespace polyattn
