// polyattn/linear/stages/gram.hpp — chunk stage 2: the gated Gram matrices of a chunk.
//
//   Γ[t,s] = e^{b_t − b_s} (per key channel i for key-channel gates; 1 without decay)
//   QK[t,s] = Σ_i Q_ti Kc_si Γ_i[t,s]   for s ≤ t        (the intra-chunk scores)
//   KK[t,s] = Σ_i Kc_ti Kc_si Γ_i[t,s]  for s < t        (the delta rule's coupling)
// Entries above the diagonal inside a row strip are computed and ignored by later stages.
// Scalar gates: plain products (Q Kᵀ, Kc Kᵀ) scaled row by row by e^{b_t − b_s} ≤ 1 (exact).
// Key-channel gates: (Q ∘ e^{b}) (Kc ∘ e^{−b})ᵀ while the chunk's decay range stays within
// kFactorRange (e^{−b} then cannot overflow); otherwise factorised per row strip around the
// strip's first token (gated_gram_strips), and pair by pair only inside strips whose own range
// exceeds kFactorRange, skipping pairs whose every channel decays below e^kFlushLog.
#pragma once

#include <algorithm>
#include <cmath>

#include "polyattn/core/simd/gemm.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/linear/stages/chunk_buffers.hpp"
#include "polyattn/linear/stages/gates.hpp"

namespace polyattn::linear::stages {

inline constexpr float kFactorRange = 60.f;  // |b| below which e^{−b} is formed directly
inline constexpr index_t kStrip = 16;        // row strip of the causal products and the solve

// Whether a chunk of L tokens with key-channel gates factorises as one product: every channel's
// decay over the chunk, −b_{L−1,i}, below kFactorRange (the decays γ ≤ 0 make b non-increasing
// along the chunk, so then e^{−b_t} ≤ e^{kFactorRange} for every token).
template <simd::SimdArch A>
bool factorises(index_t L, const ChunkBuffers& w) noexcept {
  const float* bL = w.b + (L - 1) * w.K;
  bool factor = true;
  for (index_t i = 0; i < w.K && factor; ++i) factor = bL[i] > -kFactorRange;
  return factor;
}

// Lower block-triangular X[L×L] = A[L×Kd] · B[Kd×L] in row strips: strip [r0, r1) only needs
// columns s < r1 (entries above the diagonal inside a strip are computed and later ignored).
template <simd::SimdArch A>
void causal_gemm(index_t L, index_t Kd, const float* a, index_t lda, const float* b, index_t ldb,
                 float* x, index_t ldx) {
  for (index_t r0 = 0; r0 < L; r0 += kStrip) {
    const index_t r1 = std::min(L, r0 + kStrip);
    simd::gemm<A>(r1 - r0, r1, Kd, 1.f, a + r0 * lda, lda, b, ldb, false, x + r0 * ldx, ldx);
  }
}

// One row of QK / KK for key-channel gates, pair by pair: for s in [s0, t],
//   Γ_i[t,s] = e^{b_ti − b_si} ≤ 1, exactly 0 when every channel is below e^kFlushLog (then no
// exponential is taken: steep gates leave only a narrow band of pairs to compute).
template <simd::SimdArch A>
void gated_gram_pairs(index_t t, index_t s0, const ChunkBuffers& w, bool want_qk, bool want_kk) {
  using B = simd::batch_t<A>;
  const index_t K = w.K, C = w.C;
  float* e = w.extra;  // K
  const float* bt = w.b + t * K;
  for (index_t s = s0; s <= t; ++s) {
    const float* bs = w.b + s * K;
    simd::transform<A>(
        K, e, [](B x, B y) { return x - y; }, bt, bs);
    if (simd::max<A>(e, K) < kFlushLog) {  // NaN compares false: computed below
      if (want_qk) w.QK[t * C + s] = 0.f;
      if (want_kk) w.KK[t * C + s] = 0.f;
      continue;
    }
    simd::transform<A>(
        K, e, [](B x, B k) { return decay_exp1<A>(x) * k; }, e, w.Kc + s * K);
    if (want_qk) w.QK[t * C + s] = simd::dot<A>(w.Q + t * K, e, K);
    if (want_kk) w.KK[t * C + s] = simd::dot<A>(w.Kc + t * K, e, K);
  }
}

// QK / KK for key-channel gates whose decay over the chunk exceeds kFactorRange, in row strips
// [r0, r1) of kStrip tokens, each factorised around its first token r0:
//   Γ_i[t,s] = e^{b_ti − b_r0,i} · e^{b_r0,i − b_si}
// The first factor is ≤ 1. The second is ≤ 1 for the earlier strips (s < r0), so one product
// (Q ∘ e^{b − b_r0})_strip · (Kc ∘ e^{b_r0 − b})ᵀ_{[0, r0)} covers them without overflow; for the
// strip itself (s ≥ r0) it is ≤ e^{range of the strip}, so the strip's diagonal block joins that
// product while its range stays within kFactorRange, and goes pair by pair otherwise.
template <simd::SimdArch A>
void gated_gram_strips(index_t L, const ChunkBuffers& w, bool want_qk, bool want_kk) {
  using B = simd::batch_t<A>;
  const index_t K = w.K, C = w.C;
  float* Kg = w.tmp;           // [r1×K]  Kc ∘ e^{b_r0 − b}
  float* Kgt = w.Kt;           // [K×C]   its transpose (unused by key-channel gates otherwise)
  float* strip = w.extra + K;  // [kStrip×K]  Q or Kc ∘ e^{b − b_r0} of the strip's rows
  for (index_t r0 = 0; r0 < L; r0 += kStrip) {
    const index_t r1 = std::min(L, r0 + kStrip), rows = r1 - r0;
    const float* br0 = w.b + r0 * K;
    bool diag_factor = true;
    for (index_t i = 0; i < K && diag_factor; ++i)
      diag_factor = w.b[(r1 - 1) * K + i] - br0[i] > -kFactorRange;
    const index_t cols = diag_factor ? r1 : r0;  // columns of the factorised product
    if (cols > 0) {
      for (index_t s = 0; s < cols; ++s)
        simd::transform<A>(
            K, Kg + s * K, [](B k, B r, B b) { return k * decay_exp1<A>(r - b); }, w.Kc + s * K,
            br0, w.b + s * K);
      simd::transpose(cols, K, Kg, K, Kgt, C);
      const auto strip_product = [&](const float* x, float* out) {
        for (index_t t = r0; t < r1; ++t)
          simd::transform<A>(
              K, strip + (t - r0) * K, [](B v, B b, B r) { return v * decay_exp1<A>(b - r); },
              x + t * K, w.b + t * K, br0);
        simd::gemm<A>(rows, cols, K, 1.f, strip, K, Kgt, C, false, out + r0 * C, C);
      };
      if (want_qk) strip_product(w.Q, w.QK);
      if (want_kk) strip_product(w.Kc, w.KK);
    }
    if (!diag_factor)
      for (index_t t = r0; t < r1; ++t) gated_gram_pairs<A>(t, r0, w, want_qk, want_kk);
  }
}

// QK (when want_qk) and KK (when want_kk) of a chunk of L tokens from w.Q, w.Kc, w.b, w.eb.
template <simd::SimdArch A, GateShape Shape>
void gated_gram(index_t L, const ChunkBuffers& w, bool want_qk, bool want_kk) {
  using B = simd::batch_t<A>;
  const auto mul = [](B x, B y) { return x * y; };
  const index_t K = w.K, C = w.C;
  if constexpr (Shape != GateShape::KeyChannel) {
    simd::transpose(L, K, w.Kc, K, w.Kt, C);  // Kᵀ: right operand of QKᵀ and KKᵀ
    if (want_qk) causal_gemm<A>(L, K, w.Q, K, w.Kt, C, w.QK, C);
    if (want_kk) causal_gemm<A>(L, K, w.Kc, K, w.Kt, C, w.KK, C);
    if constexpr (Shape == GateShape::Scalar) {  // Γ: one vectorised exp per row
      float* e = w.extra;
      for (index_t t = 0; t < L; ++t) {
        simd::transform<A>(
            t + 1, e, [bt = B(w.b[t])](B bs) { return decay_exp1<A>(bt - bs); }, w.b);
        if (want_qk) simd::transform<A>(t + 1, w.QK + t * C, mul, w.QK + t * C, e);
        if (want_kk) simd::transform<A>(t + 1, w.KK + t * C, mul, w.KK + t * C, e);
      }
    }
  } else {
    if (factorises<A>(L, w)) {
      // Ktg = (k ∘ e^{−b})ᵀ (formed contiguously, then transposed into its own buffer), and
      // Q' = q ∘ e^{b}: QK = Q' Ktg and KK = (k ∘ e^{b}) Ktg.
      float* Ktg = w.extra;  // K×C
      simd::transform<A>(
          L * K, w.tmp, [](B k, B b) { return k * simd::exp(B(0.f) - b); }, w.Kc, w.b);
      simd::transpose(L, K, w.tmp, K, Ktg, C);
      simd::transform<A>(L * K, w.tmp, mul, w.Q, w.eb);
      if (want_qk) causal_gemm<A>(L, K, w.tmp, K, Ktg, C, w.QK, C);
      if (want_kk) {
        simd::transform<A>(L * K, w.tmp, mul, w.Kc, w.eb);
        causal_gemm<A>(L, K, w.tmp, K, Ktg, C, w.KK, C);
      }
    } else {
      gated_gram_strips<A>(L, w, want_qk, want_kk);
    }
  }
}

}  // namespace polyattn::linear::stages
