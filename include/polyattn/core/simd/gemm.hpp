// polyattn/core/simd/gemm.hpp — small register-blocked matrix product over xsimd batches:
//   C[M×N] (= or +=) alpha · A[M×Kd] · B[Kd×N]      row-major, leading dimensions lda/ldb/ldc
// (gemm_strided takes A with any row / column strides, e.g. A given as its transpose)
// The micro-kernel keeps an MR×(NB·W) block of C in registers, broadcasts A[i,k] and streams
// rows of B (the "broadcast" form, good for the chunk-sized operands of the attention kernels:
// M, Kd ≤ a few hundred, B resident in L1/L2). Columns past the last full vector go through a
// zero-padded copy with the same arithmetic (gemm_tail). Templated on the Arch tag, so every ISA
// unit gets its own symbols (Eigen's GEMM entry points are not Arch-specific, so per-ISA units
// would share one copy at link time — that is why kernels compiled per ISA use this instead).
#pragma once

#include <cmath>
#include <cstdint>

#include "polyattn/core/simd/arch.hpp"

namespace polyattn::simd {

namespace detail {

template <SimdArch A, int MR, int NB, bool Acc>
inline void gemm_block(std::int64_t Kd, float alpha, const float* a, std::int64_t ars,
                       std::int64_t acs, const float* b, std::int64_t ldb, float* c,
                       std::int64_t ldc) {
  using Bt = batch_t<A>;
  constexpr std::int64_t W = static_cast<std::int64_t>(Bt::size);
  Bt acc[MR][NB];
  POLYATTN_UNROLL
  for (int r = 0; r < MR; ++r) {
    POLYATTN_UNROLL
    for (int n = 0; n < NB; ++n) acc[r][n] = Bt(0.f);
  }
  for (std::int64_t k = 0; k < Kd; ++k) {
    Bt bv[NB];
    POLYATTN_UNROLL
    for (int n = 0; n < NB; ++n) bv[n] = Bt::load_unaligned(b + k * ldb + n * W);
    POLYATTN_UNROLL
    for (int r = 0; r < MR; ++r) {
      const Bt av(a[r * ars + k * acs]);
      POLYATTN_UNROLL
      for (int n = 0; n < NB; ++n) acc[r][n] = simd::fma(av, bv[n], acc[r][n]);
    }
  }
  const Bt al(alpha);
  POLYATTN_UNROLL
  for (int r = 0; r < MR; ++r) {
    POLYATTN_UNROLL
    for (int n = 0; n < NB; ++n) {
      float* cp = c + r * ldc + n * W;
      if constexpr (Acc)
        simd::fma(al, acc[r][n], Bt::load_unaligned(cp)).store_unaligned(cp);
      else
        (al * acc[r][n]).store_unaligned(cp);
    }
  }
}

// Rows of C in blocks of MR (then fours, pairs, singles) for one NB-vector column panel.
template <SimdArch A, int NB, int MR, bool Acc>
inline void gemm_rows(std::int64_t M, std::int64_t Kd, float alpha, const float* a,
                      std::int64_t ars, std::int64_t acs, const float* b, std::int64_t ldb,
                      float* c, std::int64_t ldc) {
  std::int64_t i = 0;
  for (; i + MR <= M; i += MR)
    gemm_block<A, MR, NB, Acc>(Kd, alpha, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc);
  if constexpr (MR > 4)
    for (; i + 4 <= M; i += 4)
      gemm_block<A, 4, NB, Acc>(Kd, alpha, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc);
  for (; i + 2 <= M; i += 2)
    gemm_block<A, 2, NB, Acc>(Kd, alpha, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc);
  for (; i < M; ++i)
    gemm_block<A, 1, NB, Acc>(Kd, alpha, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc);
}

// One column panel of NB vectors; MR = micro_rows<A>(NB) rows per block (arch.hpp: MR·NB
// accumulators plus NB B-vectors and a broadcast fit the register file and MR·NB ≥ 8 hides the
// FMA latency), while each k step needs NB + MR loads for MR·NB FMAs (FMA-bound, not load-bound).
template <SimdArch A, int NB>
inline void gemm_panel(bool acc, std::int64_t M, std::int64_t Kd, float alpha, const float* a,
                       std::int64_t ars, std::int64_t acs, const float* b, std::int64_t ldb,
                       float* c, std::int64_t ldc) {
  constexpr int MR = micro_rows<A>(NB);
  if (acc)
    gemm_rows<A, NB, MR, true>(M, Kd, alpha, a, ars, acs, b, ldb, c, ldc);
  else
    gemm_rows<A, NB, MR, false>(M, Kd, alpha, a, ars, acs, b, ldb, c, ldc);
}

// The last R < W columns of C: B's R columns zero-padded to one vector in a stack panel, C's
// rows through a padded block, and the one-vector micro-kernel over them — the same
// multiply-adds per element, in the same order, as the scalar loop it replaces (so the same
// bits), at vector speed: the chunk stages' L×L Gram products of a short chunk (L < W, e.g.
// a speculative verify of 8 tokens under AVX-512) are all tail. Scalar for Kd > kTailMaxKd.
template <SimdArch A>
inline void gemm_tail(std::int64_t M, std::int64_t R, std::int64_t Kd, float alpha, const float* a,
                      std::int64_t ars, std::int64_t acs, const float* b, std::int64_t ldb,
                      bool accumulate, float* c, std::int64_t ldc) {
  constexpr std::int64_t W = static_cast<std::int64_t>(batch_t<A>::size);
  constexpr std::int64_t kTailMaxKd = 256, kTailRows = 16;
  if (W == 1 || Kd > kTailMaxKd) {
    for (std::int64_t j = 0; j < R; ++j)
      for (std::int64_t i = 0; i < M; ++i) {
        float s = 0.f;
        for (std::int64_t k = 0; k < Kd; ++k) s = std::fma(a[i * ars + k * acs], b[k * ldb + j], s);
        c[i * ldc + j] = accumulate ? std::fma(alpha, s, c[i * ldc + j]) : alpha * s;
      }
    return;
  }
  alignas(kMaxBatchBytes) float bp[kTailMaxKd * kMaxBatchFloats];
  alignas(kMaxBatchBytes) float cp[kTailRows * kMaxBatchFloats];
  for (std::int64_t k = 0; k < Kd; ++k)
    for (std::int64_t x = 0; x < W; ++x) bp[k * W + x] = x < R ? b[k * ldb + x] : 0.f;
  for (std::int64_t i0 = 0; i0 < M; i0 += kTailRows) {
    const std::int64_t mr = M - i0 < kTailRows ? M - i0 : kTailRows;
    for (std::int64_t r = 0; r < mr; ++r)  // C, or zeros: alpha·s + 0 is alpha·s
      for (std::int64_t x = 0; x < W; ++x)
        cp[r * W + x] = accumulate && x < R ? c[(i0 + r) * ldc + x] : 0.f;
    gemm_rows<A, 1, micro_rows<A>(1), true>(mr, Kd, alpha, a + i0 * ars, ars, acs, bp, W, cp, W);
    for (std::int64_t r = 0; r < mr; ++r)
      for (std::int64_t x = 0; x < R; ++x) c[(i0 + r) * ldc + x] = cp[r * W + x];
  }
}

}  // namespace detail

// C (= or +=) alpha · A · B with A[i,k] at a[i·ars + k·acs] (row-major A: ars = lda, acs = 1;
// A given as its transpose: ars = 1, acs = its leading dimension).
template <SimdArch A>
void gemm_strided(std::int64_t M, std::int64_t N, std::int64_t Kd, float alpha, const float* a,
                  std::int64_t ars, std::int64_t acs, const float* b, std::int64_t ldb,
                  bool accumulate, float* c, std::int64_t ldc) {
  using Bt = batch_t<A>;
  constexpr std::int64_t W = static_cast<std::int64_t>(Bt::size);
  constexpr int NB = panel_vectors<A>;  // 4 with 32 vector registers, 2 with 16 (arch.hpp)
  const std::int64_t Nfull = N - N % W;
  std::int64_t j = 0;
  for (; j + NB * W <= Nfull; j += NB * W)
    detail::gemm_panel<A, NB>(accumulate, M, Kd, alpha, a, ars, acs, b + j, ldb, c + j, ldc);
  if constexpr (NB > 2)
    for (; j + 2 * W <= Nfull; j += 2 * W)
      detail::gemm_panel<A, 2>(accumulate, M, Kd, alpha, a, ars, acs, b + j, ldb, c + j, ldc);
  for (; j + W <= Nfull; j += W)
    detail::gemm_panel<A, 1>(accumulate, M, Kd, alpha, a, ars, acs, b + j, ldb, c + j, ldc);
  if (j < N)
    detail::gemm_tail<A>(M, N - j, Kd, alpha, a, ars, acs, b + j, ldb, accumulate, c + j, ldc);
}

// Row-major A with leading dimension lda.
template <SimdArch A>
void gemm(std::int64_t M, std::int64_t N, std::int64_t Kd, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, bool accumulate, float* c,
          std::int64_t ldc) {
  gemm_strided<A>(M, N, Kd, alpha, a, lda, 1, b, ldb, accumulate, c, ldc);
}

}  // namespace polyattn::simd

namespace polyattn::simd {
inline namespace POLYATTN_ISA_NS {

// out[n×m] = in[m×n]ᵀ (row-major, leading dimensions ldi / ldo).
inline void transpose(std::int64_t m, std::int64_t n, const float* in, std::int64_t ldi, float* out,
                      std::int64_t ldo) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) out[j * ldo + i] = in[i * ldi + j];
}

}  // namespace POLYATTN_ISA_NS
}  // namespace polyattn::simd
