// polyattn/policies/fused_gates.hpp — gates computed in-kernel, in fp32, from a layer's raw
// projections (docs/conventions.md §2.5), so no g / beta tensor is materialised:
//
//   GatedDeltaNetDecay  g_t   = −exp(A_log[h]) · softplus(a_t + dt_bias[h])        (Qwen3-Next)
//   KimiDeltaDecay      g_t,i = −exp(A_log[h]) · softplus(graw_t,i + dt_bias[h·K + i])   (KDA)
//                       bounded: g_t,i = lower_bound · sigmoid(exp(A_log[h]) · (graw_t,i +
//                       dt_bias[h·K + i]))                       (fla's safe-gate variant)
//   SigmoidBetaUpdate   the delta rule with β_t = sigmoid(b_t)
//   Mamba2Decay         g_t = Δ_t · A[h],  Δ_t = clamp(softplus(dt_t + dt_bias[h]), dt_min, dt_max)
//   Mamba2Update        additive with u_t = Δ_t · v_t (Mamba2's x·dt), Δ_t as above
// softplus(x) = log1p(exp(x)), the identity above 20 (PyTorch's threshold); sigmoid(x) =
// 1 / (1 + exp(−x)). The scalar functions below are what a caller would use to materialise the
// gates; the recurrent / step paths call them once per (token, value head), so those runs agree
// bit for bit with a run on gates computed with them. The chunked kernel takes a chunk's
// per-token scalars at once through SIMD hooks (log_decays, betas, value_weights: softplus_batch,
// sigmoid_batch), and KDA's K per-channel values go through a SIMD row hook (log_decay_row):
// within a few ulp of the scalar functions (bitwise on the scalar ISA), so its outputs agree with
// a materialised run to fp32 rounding.
#pragma once

#include <cmath>
#include <limits>
#include <string>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/policies/decay.hpp"
#include "polyattn/policies/update.hpp"

namespace polyattn {

namespace gates {

/// PyTorch's softplus (beta 1, threshold 20): x above 20, else log1p(exp(x)).
inline float softplus(float x) noexcept {
  return x > 20.f ? x : std::log1p(std::exp(x));
}
inline float sigmoid(float x) noexcept {
  return 1.f / (1.f + std::exp(-x));
}

/// softplus on a SIMD batch, for the K channels of a KDA gate row (no division):
///   softplus(x) = max(x, 0) + log1p(y),  y = exp(−|x|) ∈ (0, 1]
///   log1p(y) = log(u) + (y − (u − 1))·(1.5 − u/2),  u = 1 + y: the correction restores the
///              bits of y lost in rounding u (1.5 − u/2 stands for 1/u on a sub-ulp term)
///   log(u) = e·ln2 + f − f²/2 + f³·P(f),  u = 2^e·(1 + f), 1 + f ∈ [√½, √2]
///   P: degree 7, fitted here (weighted least squares on Chebyshev nodes) to
///      (log1p(f) − f + f²/2)/f³; truncation error 0.12 ulp
/// Measured within 3 ulp of log1p(exp(x)) in double over x ∈ [−80, 30]; 0 where exp(−|x|)
/// underflows (x < −87: the scalar gives a number below 1e−38). NaN propagates.
template <class B>
[[gnu::always_inline]] inline B softplus_batch(B x) noexcept {
  const B y = simd::exp(-xsimd::abs(x));
  const B u = B(1.f) + y;
  const auto big = u > B(1.41421356f);
  const B f = xsimd::select(big, u * B(0.5f), u) - B(1.f);  // exact (Sterbenz)
  B p = B(-0.07362867891788483f);
  p = simd::fma(p, f, B(0.1262032687664032f));
  p = simd::fma(p, f, B(-0.13202103972434998f));
  p = simd::fma(p, f, B(0.14227114617824554f));
  p = simd::fma(p, f, B(-0.16621370613574982f));
  p = simd::fma(p, f, B(0.19999825954437256f));
  p = simd::fma(p, f, B(-0.2500085234642029f));
  p = simd::fma(p, f, B(0.3333335518836975f));
  const B f2 = f * f;
  const B log_m = simd::fma(f2 * f, p, simd::fma(B(-0.5f), f2, f));
  const B correction = (y - (u - B(1.f))) * simd::fma(B(-0.5f), u, B(1.5f));
  const B log1p_y = xsimd::select(big, B(0.693147180559945f), B(0.f)) + (log_m + correction);
  return xsimd::max(x, B(0.f)) + log1p_y;
}

/// sigmoid on a SIMD batch: 1 / (1 + exp(−x)) with simd::exp (the scalar function on one lane).
template <class B>
[[gnu::always_inline]] inline B sigmoid_batch(B x) noexcept {
  return B(1.f) / (B(1.f) + simd::exp(-x));
}

/// out[t] = f(x[t·st]) for t < n: batch_fn on whole batches of Arch (the short last one
/// zero-padded, so a token's value does not depend on where it falls in a chunk: a verify of T
/// tokens and a chunked run round it alike), scalar_fn per token on the scalar ISA (bitwise the
/// scalar functions there). Strided inputs are gathered into out first.
template <simd::SimdArch Arch, class FB, class FS>
void per_token(const float* x, index_t st, float* out, index_t n, FB batch_fn,
               FS scalar_fn) noexcept {
  if constexpr (simd::batch_t<Arch>::size == 1) {
    for (index_t t = 0; t < n; ++t) out[t] = scalar_fn(x[t * st]);
  } else {
    if (st != 1) {
      for (index_t t = 0; t < n; ++t) out[t] = x[t * st];
      x = out;
    }
    simd::transform<Arch>(n, out, batch_fn, x);
  }
}

/// x·y in fp32, materialised: the kernels add log decays up (b_t = b_{t−1} + g_t), and a
/// compiler contracting that into fma(x, y, b) would make a fused gate differ in the last bit
/// from the same gate materialised by a caller (GCC contracts across inlined calls by default).
/// One volatile float per (token, head) is the portable barrier.
inline float exact_product(float x, float y) noexcept {
  volatile float r = x * y;
  return r;
}

/// Gated DeltaNet's log decay from a_t, with neg_A = −exp(A_log[h]).
inline float gdn_log_decay(float a, float neg_A, float dt_bias) noexcept {
  return exact_product(neg_A, softplus(a + dt_bias));
}
/// −exp(A_log) as the policies form it (once per head).
inline float neg_exp(float A_log) noexcept {
  return -std::exp(A_log);
}

/// KDA: neg_A·softplus(graw + bias); bounded: lower·sigmoid(exp(A_log)·(graw + bias)).
inline float kda_log_decay(float graw, float neg_A, float dt_bias) noexcept {
  return exact_product(neg_A, softplus(graw + dt_bias));
}
inline float kda_bounded_log_decay(float graw, float exp_A, float dt_bias, float lower) noexcept {
  return exact_product(lower, sigmoid(exact_product(exp_A, graw + dt_bias)));
}
/// Mamba2's log decay Δ·A.
inline float mamba2_log_decay(float delta, float A) noexcept {
  return exact_product(delta, A);
}

/// Mamba2's time step: softplus(dt + bias) (or dt + bias), clamped to [lo, hi].
struct TimeStep {
  bool softplus = false;  // mamba_chunk_scan_combined's dt_softplus (the layers pass true)
  float min = 0.f;        // dt_limit = (min, max); (0, inf) is no clamp
  float max = std::numeric_limits<float>::infinity();
  float operator()(float dt, float bias) const noexcept {
    float x = dt + bias;
    if (softplus) x = gates::softplus(x);
    return x < min ? min : (x > max ? max : x);  // NaN stays NaN
  }
  /// The same on a batch of dt + bias (softplus_batch; NaN stays NaN through the selects).
  template <class B>
  B batch(B x) const noexcept {
    if (softplus) x = softplus_batch(x);
    return xsimd::select(x < B(min), B(min), xsimd::select(x > B(max), B(max), x));
  }
  void check() const {
    if (!(min >= 0.f) || !(max >= min) || std::isnan(max))
      throw Error("dt_limit", "must satisfy 0 <= min <= max, got (" + std::to_string(min) + ", " +
                                  std::to_string(max) + ")");
  }
};

}  // namespace gates

/// Gated DeltaNet (Qwen3-Next): reads a [B,T,HV], A_log [HV], dt_bias [HV].
struct GatedDeltaNetDecay {
  static constexpr GateShape shape = GateShape::Scalar;
  struct Gate {
    const float* a;  // a[t·st]
    index_t st;
    float neg_A, bias;
    float log_decay(index_t t) const noexcept {
      return gates::gdn_log_decay(a[t * st], neg_A, bias);
    }
    // g = −exp(A_log)·softplus(a + dt_bias) of n tokens from t0.
    template <simd::SimdArch Arch>
    void log_decays(index_t t0, float* out, index_t n) const noexcept {
      using B = simd::batch_t<Arch>;
      gates::per_token<Arch>(
          a + t0 * st, st, out, n,
          [m = B(neg_A), c = B(bias)](auto x) { return m * gates::softplus_batch(x + c); },
          [this](float x) { return gates::gdn_log_decay(x, neg_A, bias); });
    }
  };
  void check(const LinearInputs& in, const LinearDims& d) const {
    check::gate_inputs(in, d, {.a = true, .A_log = true, .dt_bias = 1},
                       "by the Gated DeltaNet gate (a, A_log, dt_bias)");
  }
  Gate bind(const LinearInputs& in, index_t b, index_t t0, index_t h) const {
    return {in.a.ptr(b, t0, h), in.a.stride(1), gates::neg_exp(in.A_log(h)), in.dt_bias(h)};
  }
};

/// Kimi Delta Attention: reads graw [B,T,HV,K], A_log [HV], dt_bias [HV·K]; `bounded` selects
/// fla's lower_bound · sigmoid form.
struct KimiDeltaDecay {
  static constexpr GateShape shape = GateShape::KeyChannel;
  bool bounded = false;
  float lower_bound = -5.f;  // fla's default

  struct Gate {
    const float* g;  // graw[t·st + i·cst]
    index_t st, cst;
    const float* bias;  // dt_bias[h·K + i·bst]
    index_t bst;
    float A;  // −exp(A_log), or exp(A_log) when bounded
    float lower;
    bool bounded;
    float log_decay(index_t t, index_t i) const noexcept {
      const float x = g[t * st + i * cst];
      return bounded ? gates::kda_bounded_log_decay(x, A, bias[i * bst], lower)
                     : gates::kda_log_decay(x, A, bias[i * bst]);
    }
    template <simd::SimdArch Arch>
    void log_decay_row(index_t t, float* out, index_t K) const noexcept {
      const float* row = g + t * st;
      if (cst != 1 || bst != 1) {
        for (index_t i = 0; i < K; ++i) out[i] = log_decay(t, i);
        return;
      }
      // The row 4 tokens ahead, one cache line at a time: rows lie H·K floats apart, a stride
      // the hardware prefetcher does not follow across pages, and the math below is too short
      // to hide a miss per line (measured: the fused row otherwise stalls 3× longer than the
      // materialised row's copy). Prefetches never fault, also past the last token.
      simd::prefetch<Arch>(row + 4 * st, K * static_cast<index_t>(sizeof(float)));
      using B = simd::batch_t<Arch>;
      if (bounded) {
        simd::transform<Arch>(
            K, out,
            [a = B(A), lo = B(lower)](B x, B c) { return lo * gates::sigmoid_batch(a * (x + c)); },
            row, bias);
      } else {
        simd::transform<Arch>(
            K, out, [a = B(A)](B x, B c) { return a * softplus(x + c); }, row, bias);
      }
    }
    template <class B>
    static B softplus(B x) noexcept {
      if constexpr (B::size == 1)
        return B(gates::softplus(x.get(0)));
      else
        return gates::softplus_batch(x);
    }
  };
  void check(const LinearInputs& in, const LinearDims& d) const {
    check::gate_inputs(in, d, {.graw = true, .A_log = true, .dt_bias = 2},
                       "by the KDA gate (graw, A_log, dt_bias)");
    if (bounded && !(std::isfinite(lower_bound) && lower_bound < 0.f))
      throw Error("lower_bound", "must be finite and negative, got " + std::to_string(lower_bound));
  }
  Gate bind(const LinearInputs& in, index_t b, index_t t0, index_t h) const {
    const float A_log = in.A_log(h);
    return {in.graw.ptr(b, t0, h, 0),
            in.graw.stride(1),
            in.graw.stride(3),
            in.dt_bias.ptr(h * in.graw.size(3)),
            in.dt_bias.stride(0),
            bounded ? std::exp(A_log) : gates::neg_exp(A_log),
            lower_bound,
            bounded};
  }
};

/// The delta rule with β = sigmoid(b): reads b [B,T,HV].
struct SigmoidBetaUpdate {
  static constexpr bool delta = true;
  bool qk_l2norm = false;
  struct Bound {
    const float* b;  // b[t·st]
    index_t st;
    float beta(index_t t) const noexcept { return gates::sigmoid(b[t * st]); }
    // β = sigmoid(b) of n tokens from t0.
    template <simd::SimdArch Arch>
    void betas(index_t t0, float* out, index_t n) const noexcept {
      gates::per_token<Arch>(
          b + t0 * st, st, out, n, [](auto x) { return gates::sigmoid_batch(x); },
          [](float x) { return gates::sigmoid(x); });
    }
  };
  void check(const LinearInputs& in, const LinearDims& d) const {
    check::beta_input(in, d, true, true);
  }
  Bound bind(const LinearInputs& in, index_t b, index_t t0, index_t h) const {
    return {in.b.ptr(b, t0, h), in.b.stride(1)};
  }
};

namespace detail {
// Δ_t of one (sequence, value head) of Mamba2: dt [t·st], bias of the head.
struct BoundTimeStep {
  const float* dt;
  index_t st;
  float bias;
  gates::TimeStep step;
  float operator()(index_t t) const noexcept { return step(dt[t * st], bias); }
  // Δ·mul of n tokens from t0 (mul = 1: Δ itself, exactly).
  template <simd::SimdArch Arch>
  void times(index_t t0, float* out, index_t n, float mul) const noexcept {
    using B = simd::batch_t<Arch>;
    gates::per_token<Arch>(
        dt + t0 * st, st, out, n,
        [this, m = B(mul), c = B(bias)](auto x) { return step.batch(x + c) * m; },
        [this, mul](float x) { return gates::exact_product(step(x, bias), mul); });
  }
};
inline BoundTimeStep bind_time_step(const LinearInputs& in, const gates::TimeStep& step, index_t b,
                                    index_t t0, index_t h) {
  return {in.dt.ptr(b, t0, h), in.dt.stride(1), in.dt_bias.absent() ? 0.f : in.dt_bias(h), step};
}
}  // namespace detail

/// Mamba2's decay g_t = Δ_t·A[h]: reads dt [B,T,HV], A [HV], optional dt_bias [HV].
struct Mamba2Decay {
  static constexpr GateShape shape = GateShape::Scalar;
  gates::TimeStep time_step;
  struct Gate {
    detail::BoundTimeStep dt;
    float A;
    float log_decay(index_t t) const noexcept { return gates::mamba2_log_decay(dt(t), A); }
    // g = Δ·A of n tokens from t0.
    template <simd::SimdArch Arch>
    void log_decays(index_t t0, float* out, index_t n) const noexcept {
      dt.times<Arch>(t0, out, n, A);
    }
  };
  void check(const LinearInputs& in, const LinearDims& d) const {
    time_step.check();
    check::gate_inputs(in, d, {.dt = true, .A = true, .dt_bias = -1},
                       "by the Mamba2 gate (dt, A, optional dt_bias)");
  }
  Gate bind(const LinearInputs& in, index_t b, index_t t0, index_t h) const {
    return {detail::bind_time_step(in, time_step, b, t0, h), in.A(h)};
  }
};

/// Mamba2's input x·Δ as an additive update weighted per token, u_t = Δ_t·v_t: reads dt and the
/// optional dt_bias (the same time step as Mamba2Decay's; give both the same settings).
struct Mamba2Update {
  static constexpr bool delta = false;
  bool qk_l2norm = false;
  gates::TimeStep time_step;
  struct Bound {
    detail::BoundTimeStep dt;
    float value_weight(index_t t) const noexcept { return dt(t); }
    // w = Δ of n tokens from t0.
    template <simd::SimdArch Arch>
    void value_weights(index_t t0, float* out, index_t n) const noexcept {
      dt.times<Arch>(t0, out, n, 1.f);
    }
  };
  void check(const LinearInputs& in, const LinearDims& d) const {
    check::beta_input(in, d, false);
    check::required("dt", in.dt);  // shape checked by the decay
    check::shape_is("dt", in.dt, {d.B, d.T, d.HV}, "[B,T,HV]");
  }
  Bound bind(const LinearInputs& in, index_t b, index_t t0, index_t h) const {
    return {detail::bind_time_step(in, time_step, b, t0, h)};
  }
};

static_assert(DecayPolicy<GatedDeltaNetDecay> && DecayPolicy<KimiDeltaDecay> &&
              DecayPolicy<Mamba2Decay> && UpdatePolicy<SigmoidBetaUpdate> &&
              UpdatePolicy<Mamba2Update>);

}  // namespace polyattn
