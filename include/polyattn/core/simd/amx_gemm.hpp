// polyattn/core/simd/amx_gemm.hpp — matrix products on AMX-BF16 tiles (amx.hpp) whose operands
// are formed in fp32 by the kernel (the chunked linear family's stages):
//   pack_amx_a(rows, rows_p, cols_p, row, hi, lo, ld)    A [rows_p × cols_p] bf16, row-major
//   store_amx_a(x, hi, lo)                               16 values of an A row (split when lo)
//   pack_amx_b(rows, rows_p, cols, row, hi, lo, ld)      B [rows_p × cols] as VNNI pairs: word
//                                                        (c, j) = bf16 B[2c, j] | B[2c+1, j] << 16
//   transpose_words(rows, cols, src, lds, dst, ldd)      dst[j][i] = src[i][j] (32-bit words,
//                                                        16 × 16 blocks): an A operand's bf16
//                                                        rows read as pairs are the B operand of
//                                                        its transpose
//   bf16_rows_from_pairs(m, n, pairs, dst)               those pairs split back into the bf16
//                                                        rows of the transpose (an A operand)
//   amx_gemm(M, N, Kd, a, b, accumulate, c, ldc, blocks) C [M × N] fp32 (=, +=) A [M × Kd] · B
//   amx_gemm_block(a, b, i0, j0, kd, accumulate, c, ldc) one 32 × 32 block of it (for callers
//                                                        that consume each block while in L1)
// M, N and Kd are multiples of 32 (the callers pad with zero rows / columns). `row(r, c)` gives
// the 16 floats of row r from column c (c a multiple of 16) for r < rows; rows from `rows` to
// rows_p are zero. Each operand is bf16 (nearest even, subnormals flushed as the tiles do) or,
// where lo is given, split: x = hi + lo with hi = bf16(x), lo = bf16(x − hi), about 16
// significant bits, and the product takes the three terms
//   A·B ≈ Ahi·Bhi + Ahi·Blo + Alo·Bhi          (Alo·Blo, below 2⁻¹⁶ relative, left out)
// so that quantities carried from chunk to chunk (a state, the delta rule's updates) keep close
// to fp32 accuracy while the products still run on the tiles. An A operand with with_b_lo false
// leaves out Ahi·Blo: with A unsplit, A·B ≈ Ahi·Bhi, one bf16 term (a product that only reaches
// a bf16 output, sharing a split B with a product that needs it). blocks: every 32 × 32 block of C,
// only those on or below the block diagonal (a causal Gram), or every block with the inner sum
// stopping at the block diagonal (a causal mask times values). Needs an AmxScope on the thread.
#pragma once

#include <algorithm>
#include <cstdint>

#include "polyattn/core/simd/amx.hpp"

#if POLYATTN_HAVE_AMX

namespace polyattn::simd {
inline namespace POLYATTN_ISA_NS {

struct AmxA {  // [rows][ld] bf16 (ld a multiple of 32)
  const std::uint16_t* hi = nullptr;
  const std::uint16_t* lo = nullptr;  // optional low half of a split operand
  std::int64_t ld = 0;
  bool with_b_lo = true;  // take Ahi·Blo where B is split (false: B's low half left out)
};
struct AmxB {  // [Kd / 2][ld] VNNI words
  const std::uint32_t* hi = nullptr;
  const std::uint32_t* lo = nullptr;
  std::int64_t ld = 0;
};

enum class AmxBlocks : std::uint8_t { all, lower, causal_inner };

// The 16 fp32 values of 16 bf16 (exact).
POLYATTN_TARGET_AMX inline __m512 bf16_widen(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
POLYATTN_TARGET_AMX inline __m256i bf16_round(__m512 x) {
  return (__m256i)_mm512_cvtneps_pbh(x);
}

// 16 values of an A operand's row: bf16(x) at hi, and bf16(x − bf16(x)) at lo when lo is non-null.
POLYATTN_TARGET_AMX inline void store_amx_a(__m512 x, std::uint16_t* hi, std::uint16_t* lo) {
  const __m256i h = bf16_round(x);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(hi), h);
  if (lo)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo),
                        bf16_round(_mm512_sub_ps(x, bf16_widen(h))));
}

template <class Row>
POLYATTN_TARGET_AMX void pack_amx_a(std::int64_t rows, std::int64_t rows_p, std::int64_t cols_p,
                                    const Row& row, std::uint16_t* hi, std::uint16_t* lo,
                                    std::int64_t ld) {
  for (std::int64_t r = 0; r < rows_p; ++r)
    for (std::int64_t c = 0; c < cols_p; c += 16)
      store_amx_a(r < rows ? __m512(row(r, c)) : _mm512_setzero_ps(), hi + r * ld + c,
                  lo ? lo + r * ld + c : nullptr);
}

// bf16_pairs(x0, x1) (amx.hpp), and in lo (when non-null) the same pairs of the remainders
// x − bf16(x). The rounded values come back out of the pairs themselves: word i's low half is
// bf16(x0_i), its high half bf16(x1_i), so bf16(x0) in fp32 is the pair shifted up by 16 bits
// and bf16(x1) the pair with its low half cleared (no second rounding, no widening).
POLYATTN_TARGET_AMX inline __m512i amx_pairs(__m512 x0, __m512 x1, __m512i* lo) {
  const __m512i hi = bf16_pairs(x0, x1);
  if (lo) {
    const __m512 r0 = _mm512_castsi512_ps(_mm512_slli_epi32(hi, 16));
    const __m512 r1 = _mm512_castsi512_ps(_mm512_and_si512(hi, _mm512_set1_epi32(-65536)));
    *lo = bf16_pairs(_mm512_sub_ps(x0, r0), _mm512_sub_ps(x1, r1));
  }
  return hi;
}

template <class Row>
POLYATTN_TARGET_AMX void pack_amx_b(std::int64_t rows, std::int64_t rows_p, std::int64_t cols,
                                    const Row& row, std::uint32_t* hi, std::uint32_t* lo,
                                    std::int64_t ld) {
  for (std::int64_t p = 0; p < rows_p / 2; ++p)
    for (std::int64_t j = 0; j < cols; j += 16) {
      const __m512 x0 = 2 * p < rows ? __m512(row(2 * p, j)) : _mm512_setzero_ps();
      const __m512 x1 = 2 * p + 1 < rows ? __m512(row(2 * p + 1, j)) : _mm512_setzero_ps();
      __m512i l;
      const __m512i h = amx_pairs(x0, x1, lo ? &l : nullptr);
      _mm512_storeu_si512(hi + p * ld + j, h);
      if (lo) _mm512_storeu_si512(lo + p * ld + j, l);
    }
}

// dst[j][i] = src[i][j] for a 16 × 16 block of words: unpack 32- and 64-bit pairs, then two
// rounds of 128-bit lane shuffles.
POLYATTN_TARGET_AMX inline void transpose_words_16x16(const std::uint32_t* src, std::int64_t lds,
                                                      std::uint32_t* dst, std::int64_t ldd) {
  __m512i r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(src + i * lds);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int g = 0; g < 16; g += 8)
    for (int i = 0; i < 4; ++i) {
      t[g + i] = _mm512_shuffle_i32x4(r[g + i], r[g + i + 4], 0x88);
      t[g + i + 4] = _mm512_shuffle_i32x4(r[g + i], r[g + i + 4], 0xdd);
    }
  for (int i = 0; i < 8; ++i) {
    _mm512_storeu_si512(dst + i * ldd, _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88));
    _mm512_storeu_si512(dst + (i + 8) * ldd, _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd));
  }
}

// rows and cols multiples of 16.
POLYATTN_TARGET_AMX inline void transpose_words(std::int64_t rows, std::int64_t cols,
                                                const std::uint32_t* src, std::int64_t lds,
                                                std::uint32_t* dst, std::int64_t ldd) {
  for (std::int64_t i0 = 0; i0 < rows; i0 += 16)
    for (std::int64_t j0 = 0; j0 < cols; j0 += 16)
      transpose_words_16x16(src + i0 * lds + j0, lds, dst + j0 * ldd + i0, ldd);
}

// The rows of the transpose of a bf16 matrix X [n][2m] from its pairs P = transpose_words of X
// read as words ([m][n] words): Xᵀ row 2c is the low halves of P's row c, row 2c + 1 the high
// halves. dst [2m][n] bf16 (n a multiple of 16): 32 columns at a time by one two-source word
// permute per output row, the last 16 (if any) by narrowing.
POLYATTN_TARGET_AMX inline void bf16_rows_from_pairs(std::int64_t m, std::int64_t n,
                                                     const std::uint32_t* pairs,
                                                     std::uint16_t* dst) {
  const __m512i even =
      _mm512_set_epi16(62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40, 38, 36, 34, 32, 30, 28, 26,
                       24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi16(even, _mm512_set1_epi16(1));
  for (std::int64_t c = 0; c < m; ++c) {
    std::int64_t s = 0;
    for (; s + 32 <= n; s += 32) {
      const __m512i w0 = _mm512_loadu_si512(pairs + c * n + s);
      const __m512i w1 = _mm512_loadu_si512(pairs + c * n + s + 16);
      _mm512_storeu_si512(dst + 2 * c * n + s, _mm512_permutex2var_epi16(w0, even, w1));
      _mm512_storeu_si512(dst + (2 * c + 1) * n + s, _mm512_permutex2var_epi16(w0, odd, w1));
    }
    for (; s < n; s += 16) {
      const __m512i w = _mm512_loadu_si512(pairs + c * n + s);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * c * n + s),
                          _mm512_cvtepi32_epi16(w));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (2 * c + 1) * n + s),
                          _mm512_cvtepi32_epi16(_mm512_srli_epi32(w, 16)));
    }
  }
}

// One 32 × 32 block of C (=, +=) A · B: rows i0 .. i0 + 31, columns j0 .. j0 + 31, the inner sum
// over kd (a multiple of 32), with amx_gemm's terms in amx_gemm's order; C's block at c (ldc).
POLYATTN_TARGET_AMX inline void amx_gemm_block(const AmxA& a, const AmxB& b, std::int64_t i0,
                                               std::int64_t j0, std::int64_t kd, bool accumulate,
                                               float* c, std::int64_t ldc) {
  const std::int64_t ldb = b.ld * 4, b_step = 16 * ldb;
  AmxTerm terms[3];
  int n = 0;
  const auto add = [&](const std::uint16_t* ap, const std::uint32_t* bp) {
    terms[n++] = {ap + i0 * a.ld, a.ld * 2, 64, bp + j0, ldb, b_step, kd / 32};
  };
  add(a.hi, b.hi);
  if (b.lo && a.with_b_lo) add(a.hi, b.lo);
  if (a.lo) add(a.lo, b.hi);
  amx_block_sum(terms, n, accumulate, c, ldc);
}

// With a second A operand a2 (rows M as well) and c2: also C2 (=, +=) A2 · B, sharing each B
// panel while it is in L1.
POLYATTN_TARGET_AMX inline void amx_gemm(std::int64_t M, std::int64_t N, std::int64_t Kd,
                                         const AmxA& a, const AmxB& b, bool accumulate, float* c,
                                         std::int64_t ldc, AmxBlocks blocks = AmxBlocks::all,
                                         const AmxA& a2 = {}, float* c2 = nullptr) {
  // Column blocks outside, so that a B panel (Kd × 32, both halves) is read from L2 once and
  // stays in L1 for every row block; A (the chunk's rows) is the smaller operand.
  for (std::int64_t j0 = 0; j0 < N; j0 += 32) {
    for (int g = 0; g < (c2 ? 2 : 1); ++g) {
      const AmxA& ag = g == 0 ? a : a2;
      float* cg = g == 0 ? c : c2;
      for (std::int64_t i0 = blocks == AmxBlocks::lower ? j0 : 0; i0 < M; i0 += 32) {
        const std::int64_t kd = blocks == AmxBlocks::causal_inner ? std::min(Kd, i0 + 32) : Kd;
        amx_gemm_block(ag, b, i0, j0, kd, accumulate, cg + i0 * ldc + j0, ldc);
      }
    }
  }
}

}  // namespace POLYATTN_ISA_NS
}  // namespace polyattn::simd

#endif  // POLYATTN_HAVE_AMX
