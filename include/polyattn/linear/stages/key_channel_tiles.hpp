// polyattn/linear/stages/key_channel_tiles.hpp — the tile operands of a chunk with key-channel
// gates (KDA, GLA) in two passes over its L token rows, each row read once while it is in L1,
// instead of a pass per operand over the whole chunk:
//   gates pass  b_t = b_{t−1} + γ_t,  eb_t = e^{b_t} (0 below e^kFlushLog)
//                                           (gates.hpp: key_channel_cumulative_gates)
//   rows pass   Q_t = qn_t q_t,  Kc_t = kn_t k_t                       (load_query_key_row's,
//                                                      in registers when factored and no later
//                                                      stage reads them from w.Q / w.Kc)
//               and, when the chunk factorises (gram.hpp: factorises), with g_t = Kc_t ∘ e^{−b_t}:
//                 Tb | Tl  = split(g_t)                the Grams' key operand
//                 Qb | Ql  = split(Q_t ∘ eb_t)         queries of QK (want_qk; Ql only with lo)
//                 Kb | Kl  = split(Kc_t ∘ eb_t)        keys of KK and of k S0 (want_kk)
//                 Ke_t     = g_t ∘ eb_{L−1}            the state pass's keys k̂ ∘ e^{b_L − b},
//                                                      as split pairs of rows (2p, 2p + 1)
// split(x) = bf16(x) | bf16(x − bf16(x)) (core/simd/amx_gemm.hpp); rows L .. Lp of the bf16
// operands are zero. e^{−b_t} is 1 / eb_t (rcp14 and one Newton step: the chunk factorises only
// while every eb_t stays far above the flush threshold); every other value is the one the
// per-operand passes formed before (cumulative_gates, load_queries_keys, the packs of tile_gram
// and of the state keys), bit for bit. The pairs of Ke, word (p, i) = bf16 Ke_{2p,i} |
// bf16 Ke_{2p+1,i} << 16, are Ke's B layout, so the same pairs transposed as words
// (key_channel_state_keys) are the A operand Keᵀ of ΔS = Keᵀ U: no fp32 copy of Ke, no fp32
// transposition and no separate pack.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "polyattn/core/simd/amx_gemm.hpp"
#include "polyattn/linear/stages/chunk_buffers.hpp"
#include "polyattn/linear/stages/chunk_inputs.hpp"
#include "polyattn/linear/stages/prefetch.hpp"
#include "polyattn/linear/stages/rows.hpp"

#if POLYATTN_HAVE_AMX

namespace polyattn::linear::stages {

// Σ x_i² over the K values of a row, vector m of it being v(m), in simd::dot's order (four
// accumulators over whole groups of four vectors, the rest into the first; (a0 + a1) + (a2 + a3),
// then the lanes), so that the row factors equal load_query_key_row's (chunk_inputs.hpp) bit
// for bit.
template <simd::SimdArch A, class Vector>
POLYATTN_TARGET_AMX float row_norm2(index_t K, const Vector& v) {
  using B = simd::batch_t<A>;
  constexpr index_t W = B::size;
  B acc[4] = {B(0.f), B(0.f), B(0.f), B(0.f)};
  index_t m = 0;
  for (; (m + 4) * W <= K; m += 4)
    for (index_t j = 0; j < 4; ++j) acc[j] = simd::fma(v(m + j), v(m + j), acc[j]);
  for (; m * W < K; ++m) acc[0] = simd::fma(v(m), v(m), acc[0]);
  return simd::reduce_add((acc[0] + acc[1]) + (acc[2] + acc[3]));
}

// The rows pass (header comment) over rows t < L of q and k (bf16: the tiles' inputs), after
// key_channel_cumulative_gates (gates.hpp) filled w.b and w.eb; the operands only when factored.
// QueryLo: whether Qb takes its low half Ql. The pairs of Ke go to w.Kt read as words: the high
// halves [Lp/2][K], then the low halves [Lp/2][K] (pairs past row L zero); rows 2p and 2p + 1
// pass through w.tmp's first two rows. Q̂ and K̂ go to w.Q and w.Kc only where a later stage reads
// them (not factored, or fp32_rows: a normaliser's); else each row of them is formed in registers
// from the bf16 row (held in registers across its norms and its operands where K is the
// compile-time KC, else read twice from L1).
template <simd::SimdArch A, bool QueryLo, index_t KC>
POLYATTN_TARGET_AMX void key_channel_rows_of(index_t L, index_t Lp, const InRows& q,
                                             const InRows& k, float scale, bool l2norm,
                                             const ChunkBuffers& w, const TileOperands& x,
                                             bool factored, bool want_qk, bool want_kk,
                                             bool fp32_rows) {
  using B = simd::batch_t<A>;
  constexpr index_t W = B::size;
  const index_t K = KC > 0 ? KC : w.K;
  const float* ebL = w.eb + (L - 1) * K;
  std::uint16_t* const ql = QueryLo ? x.Ql : nullptr;
  std::uint32_t* const ke_hi = reinterpret_cast<std::uint32_t*>(w.Kt);
  std::uint32_t* const ke_lo = ke_hi + Lp / 2 * K;
  // The operands of Q̂, K̂ lanes c .. c + 15 of row t (at r = t·K) with e = e^{b_t} there.
  const auto operands = [&](index_t t, index_t r, index_t c, B qc, B kc)
      __attribute__((always_inline)) {
    const B e = B::load_unaligned(w.eb + r + c);
    const __m512 r0 = _mm512_rcp14_ps(e);  // e^{−b} = 1 / e^{b}, one Newton step
    const B g = kc * B(_mm512_mul_ps(r0, _mm512_fnmadd_ps(e, r0, _mm512_set1_ps(2.f))));
    simd::store_amx_a(g, x.Tb + r + c, x.Tl + r + c);
    (g * B::load_unaligned(ebL + c)).store_unaligned(w.tmp + (t & 1) * K + c);
    if (want_qk) simd::store_amx_a(qc * e, x.Qb + r + c, ql ? ql + r + c : nullptr);
    if (want_kk) simd::store_amx_a(kc * e, x.Kb + r + c, x.Kl + r + c);
  };
  const auto* qb = static_cast<const bf16*>(q.data);
  const auto* kb = static_cast<const bf16*>(k.data);
  for (index_t t = 0; t < L; ++t) {
    if (t + kRowsNear < L) {  // back into L1: the chunk's rows outgrow it after the gates pass
      prefetch_row<A>(q, t + kRowsNear, K);
      prefetch_row<A>(k, t + kRowsNear, K);
    }
    const index_t r = t * K;
    if (!factored || fp32_rows) {
      load_query_key_row<A>(t, K, q, k, scale, l2norm, w.Q, w.Kc, x.qn, x.kn);
      if (!factored) continue;
      for (index_t c = 0; c < K; c += 16)
        operands(t, r, c, B::load_unaligned(w.Q + r + c), B::load_unaligned(w.Kc + r + c));
    } else {  // load_query_key_row's factors and products, without its stores
      const bf16 *qt = qb + t * q.stride, *kt = kb + t * k.stride;
      const auto factors = [&](const auto& qv, const auto& kv) __attribute__((always_inline)) {
        float qn = scale, kn = 1.f;
        if (l2norm) {
          qn = scale / std::sqrt(row_norm2<A>(K, qv) + static_cast<float>(kL2NormEps));
          kn = 1.f / std::sqrt(row_norm2<A>(K, kv) + static_cast<float>(kL2NormEps));
        }
        x.qn[t] = qn;
        x.kn[t] = kn;
        const B qf(qn), kf(kn);
        for (index_t m = 0; m * W < K; ++m) operands(t, r, m * W, qv(m) * qf, kv(m) * kf);
      };
      if constexpr (KC > 0) {  // the rows widened once, kept in registers
        B qr[KC / W], kr[KC / W];
        for (index_t m = 0; m < KC / W; ++m) {
          qr[m] = simd::load_float<A>(qt + m * W);
          kr[m] = simd::load_float<A>(kt + m * W);
        }
        factors([&](index_t m) { return qr[m]; }, [&](index_t m) { return kr[m]; });
      } else {
        factors([&](index_t m) { return B(simd::load_float<A>(qt + m * W)); },
                [&](index_t m) { return B(simd::load_float<A>(kt + m * W)); });
      }
    }
    if (t % 2 == 1 || t == L - 1) {  // the pair of rows t − t % 2 and t (or zero past L)
      const index_t pr = t / 2 * K;
      for (index_t c = 0; c < K; c += 16) {
        const __m512 x0 = _mm512_loadu_ps(w.tmp + c);
        const __m512 x1 = t % 2 == 1 ? _mm512_loadu_ps(w.tmp + K + c) : _mm512_setzero_ps();
        __m512i lo;
        _mm512_storeu_si512(ke_hi + pr + c, simd::amx_pairs(x0, x1, &lo));
        _mm512_storeu_si512(ke_lo + pr + c, lo);
      }
    }
  }
  if (!factored) return;
  std::fill(ke_hi + (L + 1) / 2 * K, ke_hi + Lp / 2 * K, std::uint32_t{0});
  std::fill(ke_lo + (L + 1) / 2 * K, ke_lo + Lp / 2 * K, std::uint32_t{0});
  const auto zero = [L, Lp, K](std::uint16_t* m) {
    if (m) std::fill(m + L * K, m + Lp * K, std::uint16_t{0});
  };
  zero(x.Tb);
  zero(x.Tl);
  if (want_qk) {
    zero(x.Qb);
    zero(ql);
  }
  if (want_kk) {
    zero(x.Kb);
    zero(x.Kl);
  }
}

// key_channel_rows_of with K = 128 (the common head size) a compile-time constant, else
// K as it comes.
template <simd::SimdArch A, bool QueryLo>
void key_channel_rows(index_t L, index_t Lp, const InRows& q, const InRows& k, float scale,
                      bool l2norm, const ChunkBuffers& w, const TileOperands& x, bool factored,
                      bool want_qk, bool want_kk, bool fp32_rows) {
  if (w.K == 128)
    key_channel_rows_of<A, QueryLo, 128>(L, Lp, q, k, scale, l2norm, w, x, factored, want_qk,
                                         want_kk, fp32_rows);
  else
    key_channel_rows_of<A, QueryLo, 0>(L, Lp, q, k, scale, l2norm, w, x, factored, want_qk, want_kk,
                                       fp32_rows);
}

// The A operand of ΔS = Keᵀ U from the pairs key_channel_rows left in w.Kt: Keh and Kel
// [K][Lp] bf16 are those pairs transposed as words.
template <simd::SimdArch A>
POLYATTN_TARGET_AMX void key_channel_state_keys(index_t Lp, const ChunkBuffers& w,
                                                const TileOperands& x) {
  const index_t K = w.K;
  const auto* ke_hi = reinterpret_cast<const std::uint32_t*>(w.Kt);
  simd::transpose_words(Lp / 2, K, ke_hi, K, reinterpret_cast<std::uint32_t*>(x.Keh), Lp / 2);
  simd::transpose_words(Lp / 2, K, ke_hi + Lp / 2 * K, K, reinterpret_cast<std::uint32_t*>(x.Kel),
                        Lp / 2);
}

}  // namespace polyattn::linear::stages

#endif  // POLYATTN_HAVE_AMX
