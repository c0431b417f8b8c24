// polyattn/linear/stages/gram.hpp — chunk stage 2: the gated Gram matrices of a chunk.
//
//   Γ[t,s] = e^{b_t − b_s} (per key channel i for key-channel gates; 1 without decay)
//   QK[t,s] = Σ_i Q_ti Kc_si Γ_i[t,s]   for s ≤ t        (the intra-chunk scores)
//   KK[t,s] = Σ_i Kc_ti Kc_si Γ_i[t,s]  for s < t        (the delta rule's coupling)
// Entries above the diagonal inside a row strip are computed and ignored by later stages.
// Scalar gates: plain products (Q Kᵀ, Kc Kᵀ) scaled row by row by e^{b_t − b_s} ≤ 1 (exact).
// Key-channel gates: (Q ∘ e^{b}) (Kc ∘ e^{−b})ᵀ while the chunk's decay range stays within
// kFactorRange (e^{−b} then cannot overflow); otherwise pair by pair from e^{b_t − b_s} ≤ 1
// (exact, slower; only for extreme gates).
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
    bool factor = true;
    for (index_t i = 0; i < K && factor; ++i) factor = w.b[(L - 1) * K + i] > -kFactorRange;
    if (factor) {
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
      // Extreme key-channel gates: exact pairwise e^{b_t − b_s} ≤ 1.
      float* e = w.extra;
      for (index_t t = 0; t < L; ++t)
        for (index_t s = 0; s <= t; ++s) {
          for (index_t i = 0; i < K; ++i) e[i] = w.b[t * K + i] - w.b[s * K + i];
          decay_exp<A>(e, e, K);
          float qk = 0.f, kk = 0.f;
          for (index_t i = 0; i < K; ++i) {
            const float ks = w.Kc[s * K + i] * e[i];
            qk = std::fma(w.Q[t * K + i], ks, qk);
            kk = std::fma(w.Kc[t * K + i], ks, kk);
          }
          w.QK[t * C + s] = qk;
          w.KK[t * C + s] = kk;
        }
    }
  }
}

}  // namespace polyattn::linear::stages
