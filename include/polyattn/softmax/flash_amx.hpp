// polyattn/softmax/flash_amx.hpp — the AMX-BF16 body of the tiled softmax prefill (flash.hpp),
// for bf16 q, k, v on the amx level. Per work item (kAmxTileQ queries of one head), over groups
// of up to kAmxKeys keys (whole kTileK tiles the mask does not skip):
//   Sᵀ [keys][queries] = scale · K Qᵀ      tiles: A = K rows as bf16 channel pairs, B = q pairs
//   Sᵀ ← modifiers, masks;  m_t = max over the group (per query, vertically)
//   m_ref raised only where m_t > m_ref + τ (τ = 8 ln 2), then Otᵀ, l ×= e^{m_ref_old − m_ref}
//   P = e^{S − m_ref} ≤ e^τ = 256, rounded to bf16 pairs of keys;  l += Σ P (fp32, unrounded)
//   Otᵀ [Dv][queries] += Vᵀ Pᵀ             tiles: A = Vᵀ in blocks of 32 keys, B = P pairs,
//                                          C = Otᵀ itself (accumulated in the tiles)
// The tile products run a k-step at a time between the exponentials (simd::AmxQueue): the next
// block's Sᵀ ahead, the previous group's Otᵀ += Vᵀ Pᵀ behind (two P buffers), so that the tile
// unit and the vector units could work side by side (on Emerald Rapids they measured no overlap:
// amx_queue.hpp).
// The lazy reference max (as FlashAttention-4 does) is the same softmax: o = Ot / l with both
// relative to m_ref; it removes the per-tile rescale pass over the output (Dv·kTileQ values per
// group), which with a plain online max costs more than the group's exponentials. The true max
// is kept apart for row_max. Partial groups whose V holds a NaN or Inf add only the keys each
// query sees (so a masked non-finite value never leaks), with the same bf16 weights.
// The packing (once per sequence and kv head, shared by every query tile and q head of a group):
//   K: [keys ↑ 32][Dk2 / 2] u32, word c of key j = k[j][2c] | k[j][2c + 1] << 16 (zero padded)
//   V: [keys ↑ 32 / 32][Dvt][32] bf16, block b row e = v[32b .. 32b + 31][e] — tile rows are 64
//      contiguous bytes, so a tile load touches 16 consecutive lines (a plain Vᵀ with a row per
//      channel puts a tile's 16 rows one sequence length apart, in one L1 set)
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "polyattn/core/element.hpp"
#include "polyattn/core/simd/amx.hpp"
#include "polyattn/core/simd/amx_gemm.hpp"
#include "polyattn/core/simd/amx_queue.hpp"
#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/scratch.hpp"
#include "polyattn/softmax/flash_problem.hpp"
#include "polyattn/softmax/fusion.hpp"
#include "polyattn/softmax/mask.hpp"
#include "polyattn/softmax/modifiers.hpp"

#ifndef POLYATTN_FLASH_AMX_KEYS
#define POLYATTN_FLASH_AMX_KEYS 256
#endif
#ifndef POLYATTN_FLASH_AMX_ROWS
#define POLYATTN_FLASH_AMX_ROWS 64
#endif

namespace polyattn::softmax {

// Query rows per work item of the amx path, and keys per group (whole key tiles).
inline constexpr index_t kAmxTileQ = POLYATTN_FLASH_AMX_ROWS;
inline constexpr index_t kAmxKeys = POLYATTN_FLASH_AMX_KEYS;
static_assert(kAmxKeys % kTileK == 0 && kTileK % 32 == 0 && kAmxTileQ % 32 == 0,
              "amx groups are whole key tiles of whole 32-key / 32-query blocks");
// τ: the reference max is raised when a group's max exceeds it by more than this (e^τ = 256).
inline constexpr float kAmxLazyMax = 5.54517744f;

inline namespace POLYATTN_ISA_NS {
namespace impl {

#if POLYATTN_HAVE_AMX
// One block of the V packing from 32 contiguous rows of Dv (a multiple of 32) bf16, `ld` apart:
// the rows' bf16 pairs of keys (word (p, e) = v[2p][e] | v[2p + 1][e] << 16, a vpermt2w per 16
// channels) transposed 16 × 16 words at a time into blk [Dv][32]; returns false if a value is
// NaN or ±Inf.
POLYATTN_TARGET_AMX inline bool pack_v_block(const bf16* rows, index_t ld, index_t Dv,
                                             std::uint16_t* blk) {
  alignas(64) std::uint16_t lo_idx[32], hi_idx[32];
  for (int k = 0; k < 16; ++k) {  // out[2k] = a[k], out[2k + 1] = b[k] (b's lanes from 32)
    lo_idx[2 * k] = static_cast<std::uint16_t>(k);
    lo_idx[2 * k + 1] = static_cast<std::uint16_t>(32 + k);
    hi_idx[2 * k] = static_cast<std::uint16_t>(16 + k);
    hi_idx[2 * k + 1] = static_cast<std::uint16_t>(48 + k);
  }
  const __m512i lo = _mm512_load_si512(lo_idx), hi = _mm512_load_si512(hi_idx);
  const __m512i expo = _mm512_set1_epi16(0x7F80);
  __mmask32 bad = 0;
  alignas(64) std::uint32_t words[16][32];            // [key pair][32 channels]
  auto* out = reinterpret_cast<std::uint32_t*>(blk);  // [Dv][16] words
  for (index_t e0 = 0; e0 < Dv; e0 += 32) {
    for (index_t p = 0; p < 16; ++p) {
      const __m512i a = _mm512_loadu_si512(rows + 2 * p * ld + e0);
      const __m512i b = _mm512_loadu_si512(rows + (2 * p + 1) * ld + e0);
      bad |= _mm512_cmpeq_epi16_mask(_mm512_and_si512(a, expo), expo);
      bad |= _mm512_cmpeq_epi16_mask(_mm512_and_si512(b, expo), expo);
      _mm512_store_si512(words[p], _mm512_permutex2var_epi16(a, lo, b));
      _mm512_store_si512(words[p] + 16, _mm512_permutex2var_epi16(a, hi, b));
    }
    simd::transpose_words_16x16(words[0], 32, out + e0 * 16, 16);
    simd::transpose_words_16x16(words[0] + 16, 32, out + (e0 + 16) * 16, 16);
  }
  return bad == 0;
}
#endif

// The amx packing of (sequence seq, kv head hk) from bf16 k and v (layouts above), and per key
// tile whether V is all finite.
inline void pack_amx_operands(FlashProblem& P, const SeqRange& sq, index_t seq,
                              index_t hk) noexcept {
  const SoftmaxInputs& in = *P.in;
  const index_t D = P.d.D, Dv = P.d.Dv, C2 = P.Dk2 / 2, Dvt = P.Dvt;
  const index_t nk = sq.nk, nk32 = round_up(nk, 32);
  const std::size_t item = static_cast<std::size_t>(seq * P.d.HKV + hk);
  std::uint32_t* kw = P.kw.data() + P.kp_off[item];
  std::uint16_t* vt = P.vt.data() + P.vp_off[item];
  const auto k = in.k.as<bf16>();
  const auto v = in.v.as<bf16>();
  for (index_t j = 0; j < nk; ++j) {  // pairs of channels are a key row's own memory order
    auto* dst = reinterpret_cast<std::uint16_t*>(kw + j * C2);
    const bf16* src = k.ptr(sq.b, sq.k0 + j, hk, 0);
    const index_t st = k.stride(3);
    if (st == 1) {
      std::memcpy(dst, src, static_cast<std::size_t>(D) * sizeof(bf16));
    } else {
      for (index_t e = 0; e < D; ++e) dst[e] = src[e * st].bits;
    }
    std::fill(dst + D, dst + 2 * C2, std::uint16_t{0});
  }
  std::fill(kw + nk * C2, kw + nk32 * C2, 0u);
  std::uint8_t* fin = P.v_finite.data() + P.vf_off[item];
  const index_t ntiles = (nk + kTileK - 1) / kTileK;
  std::fill(fin, fin + ntiles, std::uint8_t{1});
  // Whole blocks of contiguous rows a whole number of 32 channels wide go through pack_v_block.
  [[maybe_unused]] const bool rows_fast = v.stride(3) == 1 && Dv % 32 == 0;
  for (index_t b0 = 0; b0 < nk32; b0 += 32) {
    std::uint16_t* blk = vt + b0 * Dvt;  // [Dvt][32]
#if POLYATTN_HAVE_AMX
    if (rows_fast && b0 + 32 <= nk) {
      if (!pack_v_block(v.ptr(sq.b, sq.k0 + b0, hk, 0), v.stride(1), Dv, blk)) fin[b0 / kTileK] = 0;
      std::fill(blk + Dv * 32, blk + Dvt * 32, std::uint16_t{0});
      continue;
    }
#endif
    for (index_t jj = 0; jj < 32; ++jj) {
      if (b0 + jj < nk) {
        const bf16* src = v.ptr(sq.b, sq.k0 + b0 + jj, hk, 0);
        const index_t st = v.stride(3);
        for (index_t e = 0; e < Dv; ++e) blk[e * 32 + jj] = src[e * st].bits;
      } else {
        for (index_t e = 0; e < Dv; ++e) blk[e * 32 + jj] = 0;
      }
    }
    std::fill(blk + Dv * 32, blk + Dvt * 32, std::uint16_t{0});
    bool finite = true;  // (the padding is zeros)
    for (index_t i = 0; i < 32 * Dvt; ++i) finite &= (blk[i] & 0x7F80u) != 0x7F80u;
    if (!finite) fin[b0 / kTileK] = 0;
  }
}

#if POLYATTN_HAVE_AMX

// What the work item's kernel (flash.hpp) prepared for the amx body, and where it leaves the
// unnormalised output and the row statistics for the common finish.
struct AmxFrame {
  const FlashProblem* P;
  const SeqRange* sq;
  index_t seq, h, hk;
  RowRange rows;    // the work item's query rows
  index_t M, p0;    // rows in the tile; key position of its first row
  const double* G;  // forgetting gate cumsums of (sequence, head), or null
  double g_ref;     // G at the tile's reference position
  const float* gq;  // G_p − G_ref per query
  float* Ot;        // [Dvt][kAmxTileQ] zeros in, Σ P·V (relative to m) out
  float* m;         // [kAmxTileQ] −inf in; the reference max out
  float* mt;        // [kAmxTileQ] −inf in; the true max out (row_max)
  float* l;         // [kAmxTileQ] zeros in; Σ e^{s − m} out
};

// Degree-4 minimax fit of 2^f on [−½, ½] with p(0) = 1: relative error ≤ 3.7e-6 in fp32
// (degree 3's 4.4e-4 would show in l, and so in lse, which is kept to fp32's 2e-5).
inline constexpr float kWeightExp2Poly[4] = {6.931136250e-01f, 2.402071059e-01f, 5.597688258e-02f,
                                             9.782912210e-03f};

// 2^x for the softmax weights, which are rounded to bf16 (2⁻⁹) before P·V: the degree-4
// polynomial above times 2^n (vscalefps, which saturates to 0 / inf instead of wrapping the
// exponent, so no clamp is needed), 0 below −126 (as simd::exp2), NaN for NaN and for +inf.
// 8 instructions against simd::exp2's 10. The weights and their sum l carry the same
// relative error δ_j, so o = Σ P v / l moves by at most max |δ| · max_j |v_j − o|, beside
// the bf16 rounding of each weight (up to 2⁻⁸ relative).
POLYATTN_TARGET_AMX inline __m512 exp2_weight(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p =
      _mm512_fmadd_ps(_mm512_set1_ps(kWeightExp2Poly[3]), f, _mm512_set1_ps(kWeightExp2Poly[2]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kWeightExp2Poly[1]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kWeightExp2Poly[0]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.f), _CMP_NLT_UQ);
  return _mm512_maskz_scalef_ps(keep, p, n);
}

// P = e^{kx·S + nsh} for the key pairs [0, pairs) of Sᵀ [2 · pairs][TQ]: sum += Σ P (fp32),
// Pw [pairs][TQ] = P rounded to bf16 pairs of keys, and with Track mx = max(mx, S) per lane.
// e^x is taken as 2^{S·(kx log2 e) + nsh log2 e} (exp2_weight; the rounding of the two folded
// constants adds about 2⁻²³·|m_ref|·log2 e to the exponent, small beside P's 2⁻⁹ rounding even
// for |m_ref| in the hundreds). Track's max drops NaN scores (a plain vmaxps); such a score
// makes its lane's sum NaN, and the caller checks the sums before trusting mx.
template <class B, index_t TQ, bool Track, class Pump>
POLYATTN_TARGET_AMX inline void amx_exp_pairs(const float* St, index_t pairs, B kx, const B* nsh,
                                              B* sum, B* mx, std::uint32_t* Pw, Pump&& pump) {
  constexpr index_t W = static_cast<index_t>(B::size);
  const B log2e(1.44269504088896341f), kx2 = kx * log2e;
  B nsh2[TQ / W];
  for (index_t v = 0; v < TQ / W; ++v) nsh2[v] = nsh[v] * log2e;
  for (index_t c = 0; c < pairs; ++c) {
    const float* s0 = St + 2 * c * TQ;
    for (index_t v = 0; v < TQ / W; ++v) {
      const B x0 = B::load_aligned(s0 + v * W), x1 = B::load_aligned(s0 + TQ + v * W);
      if constexpr (Track) mx[v] = xsimd::max(mx[v], xsimd::max(x0, x1));
      const B e0 = exp2_weight(simd::fma(x0, kx2, nsh2[v]));
      const B e1 = exp2_weight(simd::fma(x1, kx2, nsh2[v]));
      sum[v] += e0 + e1;
      _mm512_store_si512(static_cast<void*>(Pw + c * TQ + v * W), simd::bf16_pairs(e0, e1));
    }
    pump();
  }
}

// rows [16][Dvt] = the columns c0 .. c0 + 15 of Ot [Dvt][tq] (Ot_c0 = Ot + c0), as o rows.
POLYATTN_TARGET_AMX inline void amx_output_rows(const float* Ot_c0, index_t tq, index_t Dvt,
                                                float* rows) {
  for (index_t e0 = 0; e0 < Dvt; e0 += 16)
    simd::transpose_words_16x16(reinterpret_cast<const std::uint32_t*>(Ot_c0 + e0 * tq), tq,
                                reinterpret_cast<std::uint32_t*>(rows + e0), Dvt);
}

template <simd::SimdArch A, class Bound>
POLYATTN_TARGET_AMX void flash_amx_tiles(const AmxFrame& f, const Bound& fz) {
  using B = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(B::size);
  constexpr index_t TQ = kAmxTileQ, TK = kTileK, KA = kAmxKeys, NG = KA / TK;
  static_assert(W == 16, "the amx body runs in the avx512 units");
  const FlashProblem& P = *f.P;
  const SeqRange& sq = *f.sq;
  const index_t C2 = P.Dk2 / 2, Dvt = P.Dvt, Dv = P.d.Dv, D = P.d.D;
  const index_t r0 = f.rows.r0, p0 = f.p0, M = f.M;
  const float ninf = -std::numeric_limits<float>::infinity();
  const B scale(static_cast<float>(P.d.scale));
  const bool modifies = hook_modifies<A>(fz);
  const bool fold = !modifies && static_cast<float>(P.d.scale) > 0.f;  // (an fp32 underflow)
  const B kx(fold ? static_cast<float>(P.d.scale) : 1.f);
  const std::size_t item = static_cast<std::size_t>(f.seq * P.d.HKV + f.hk);
  const std::uint32_t* kw = P.kw.data() + P.kp_off[item];
  const std::uint16_t* vt = P.vt.data() + P.vp_off[item];
  const std::uint8_t* finite = P.v_finite.data() + P.vf_off[item];
  const bool track = !P.row_max.absent();  // the true max per row is an output

  // St [KA][TQ] fp32; Qw [C2][TQ] (zero padding) and two Pw [KA / 2][TQ] u32 (a group's
  // weights are formed while the tiles still multiply the previous group's with V).
  const simd::Scratch<float> sbuf(static_cast<std::size_t>(KA * TQ + Dvt + 16),
                                  simd::uninitialized);
  const simd::Scratch<std::uint32_t> wbuf(static_cast<std::size_t>((C2 + KA) * TQ + 16),
                                          simd::uninitialized);
  float* St = simd::align64(sbuf.data());
  float* vrow = St + KA * TQ;
  std::uint32_t* Qw = simd::align64(wbuf.data());
  std::uint32_t* Pw = Qw + C2 * TQ;
  std::uint32_t* Pw_other = Pw + KA / 2 * TQ;
  // Qw = the q rows in words of channel pairs, transposed: word (c, r) = q[r][2c] |
  // q[r][2c + 1] << 16, for contiguous rows of even length the row's own word c. Padding (rows
  // past M, pairs past D) is zero. Where the rows are whole words 4-byte aligned and a whole
  // number of words apart, 16 rows × 16 words at a time (simd::transpose_words_16x16).
  const auto q = P.in->q.as<bf16>();
  const index_t st = q.stride(3), Cw = (D + 1) / 2;
  if (M < TQ)
    for (index_t c = 0; c < Cw; ++c) std::fill(Qw + c * TQ + M, Qw + (c + 1) * TQ, 0u);
  std::fill(Qw + Cw * TQ, Qw + C2 * TQ, 0u);
  const bf16* q0 = q.ptr(sq.b, sq.q0 + r0, f.h, 0);
  const bool words = st == 1 && D % 2 == 0 && q.stride(1) % 2 == 0 &&
                     reinterpret_cast<std::uintptr_t>(q0) % 4 == 0;
  const index_t M16 = words ? M / 16 * 16 : 0, C16 = words ? Cw / 16 * 16 : 0;
  for (index_t rb = 0; rb < M16; rb += 16)
    for (index_t cb = 0; cb < C16; cb += 16)
      simd::transpose_words_16x16(
          reinterpret_cast<const std::uint32_t*>(q0 + rb * q.stride(1)) + cb, q.stride(1) / 2,
          Qw + cb * TQ + rb, TQ);
  for (index_t r = 0; r < M; ++r) {
    const bf16* src = q.ptr(sq.b, sq.q0 + r0 + r, f.h, 0);
    if (st == 1 && D % 2 == 0) {
      for (index_t c = r < M16 ? C16 : 0; c < Cw; ++c) std::memcpy(Qw + c * TQ + r, src + 2 * c, 4);
    } else {
      for (index_t c = 0; c < Cw; ++c) {
        const std::uint32_t hi = 2 * c + 1 < D ? src[(2 * c + 1) * st].bits : 0u;
        Qw[c * TQ + r] = src[2 * c * st].bits | hi << 16;
      }
    }
  }

  // The tile products go through a queue, a k-step at a time between rows of exponentials: a
  // block's scores Sᵀ = K Qᵀ ahead of the block that reads them (push_next), the previous
  // group's Otᵀ += Vᵀ Pᵀ behind (push), so that the tile unit and the vector units run side by
  // side (amx_queue.hpp).
  const simd::AmxScope tiles;
  simd::AmxQueue<32> tq;
  const auto pump = [&tq] { tq.step(); };
  const index_t ntiles = (sq.nk + TK - 1) / TK;
  for (index_t t = 0; t < ntiles;) {
    // The group: up to NG consecutive key tiles, none skipped by the mask.
    TileClass cls[NG];
    index_t g = 0;
    bool stopped = false;
    for (; g < NG && t + g < ntiles; ++g) {
      const index_t a = (t + g) * TK;
      cls[g] = hook_classify<A>(fz, f.rows, KeyRange{a, std::min(a + TK, sq.nk)});
      if (cls[g] == TileClass::Skip) {
        stopped = true;
        break;
      }
    }
    const index_t t0 = t;
    t += g + (stopped ? 1 : 0);
    if (g == 0) continue;
    const index_t j0 = t0 * TK, n = std::min((t0 + g) * TK, sq.nk) - j0, n2 = round_up(n, 32);

    // P = e^{kx·S − m_ref}, optimistically, block by block of 32 keys right after the block's
    // scores (so that they are read while still in L1, and the out-of-order core can run one
    // block's vector work beside the next block's tiles), finding the group's max on the way.
    // Kept where no lane's max passes m_ref + τ (the usual case once a row has seen keys; a
    // row's first m_ref is the max of its first block). Else m_ref is raised in those lanes (or
    // is NaN), with α = e^{m_ref_old − m_ref_new} rescaling Ot and l there (0 where nothing was
    // seen yet), and P is formed again from Sᵀ.
    B mref[TQ / W], nsh[TQ / W], sum[TQ / W], mx[TQ / W], al[TQ / W];
    bool fresh = false, nan_ref = false;  // some lane has m_ref = −inf / NaN
    for (index_t v = 0; v < TQ / W; ++v) {
      mref[v] = B::load_aligned(f.m + v * W);
      nsh[v] = B(0.f) - simd::neg_inf_to_zero(mref[v]);
      fresh = fresh || xsimd::any(mref[v] == B(ninf));
      nan_ref = nan_ref || xsimd::any(xsimd::isnan(mref[v]));
      sum[v] = B(0.f);
      mx[v] = B(ninf);
    }
    fresh = fresh || nan_ref;
    // Sᵀ = K Qᵀ: 32 keys × 32 queries per tile block, 32 channels per step.
    const auto scores = [&](index_t kb) {
      for (index_t qb = 0; qb < TQ; qb += 32)
        tq.push_next({kw + (j0 + kb) * C2, C2 * 4, 64, Qw + qb, TQ * 4, 16 * TQ * 4, P.Dk2 / 32,
                      false, St + kb * TQ + qb, TQ});
    };
    scores(0);
    for (index_t kb = 0; kb < n2; kb += 32) {
      tq.finish_next();  // this block's scores, then the next block's behind the exponentials
      if (kb + 32 < n2) scores(kb + 32);
      // The scores as the softmax sees them are kx · Sᵀ: with modifiers the rows are scaled
      // and modified here (kx = 1); without, the scale is folded into the exponent.
      for (index_t c = kb; c < std::min(kb + 32, n); ++c) {
        const TileClass sc = cls[c / TK];
        if (fold && !is_partial(sc)) continue;
        float* srow = St + c * TQ;
        const index_t j = j0 + c;
        if (!fold)
          for (index_t v = 0; v < TQ / W; ++v)
            (B::load_aligned(srow + v * W) * scale).store_aligned(srow + v * W);
        const float gk = f.G != nullptr ? static_cast<float>(f.G[j] - f.g_ref) : 0.f;
        hook_key_row<A>(fz, modifies, sc, srow, KeyContext{j, p0, TQ, gk, f.gq}, r0, M);
      }
      if (kb + 32 > n)  // keys of the last block past the sequence
        std::fill(St + n * TQ, St + (kb + 32) * TQ, ninf);
      if (kb == 0 && fresh && !nan_ref) {  // a row's first keys: m_ref from its first block
        for (index_t v = 0; v < TQ / W; ++v) {
          B bm(ninf);
          for (index_t c = 0; c < 32; ++c)
            bm = simd::max_nan(bm, B::load_aligned(St + c * TQ + v * W));
          mref[v] = xsimd::select(mref[v] == B(ninf), kx * bm, mref[v]);
          nsh[v] = B(0.f) - simd::neg_inf_to_zero(mref[v]);
        }
        fresh = false;  // lanes still at −inf (or now NaN) fail the check below
      }
      if (!fresh) {
        float* S = St + kb * TQ;
        if (track)
          amx_exp_pairs<B, TQ, true>(S, 16, kx, nsh, sum, mx, Pw + kb / 2 * TQ, pump);
        else
          amx_exp_pairs<B, TQ, false>(S, 16, kx, nsh, sum, mx, Pw + kb / 2 * TQ, pump);
      }
    }
    // The group's max with NaN kept, for row_max and the new reference.
    const auto exact_max = [&] {
      for (index_t v = 0; v < TQ / W; ++v) mx[v] = B(ninf);
      for (index_t c = 0; c < n2; ++c)
        for (index_t v = 0; v < TQ / W; ++v)
          mx[v] = simd::max_nan(mx[v], B::load_aligned(St + c * TQ + v * W));
    };
    bool kept = false, mx_exact = false;
    if (!fresh) {  // (a NaN score makes its lane's sum NaN)
      // Untracked, a lane with a reference whose weights sum to at most 255 has none above 255
      // (they are ≥ 0): kx·S ≤ m_ref + ln 255 + the exponential's error, below m_ref + τ (up
      // to the folded constants' rounding, under 3.5e-3 for |m_ref| < 2·10⁴). Only a group with
      // a larger sum, a NaN or a lane still without reference pays a pass over Sᵀ for its max.
      bool sure = !track;
      for (index_t v = 0; sure && v < TQ / W; ++v)
        sure = xsimd::all(sum[v] <= B(255.f)) && xsimd::none(mref[v] == B(ninf));
      if (sure) {
        kept = true;
      } else {
        if (!track) {
          exact_max();
          mx_exact = true;
        }
        bool grow = false;
        for (index_t v = 0; v < TQ / W; ++v)
          grow =
              grow || xsimd::any((kx * mx[v] > mref[v] + B(kAmxLazyMax)) || xsimd::isnan(sum[v]));
        kept = !grow;
      }
    }
    if (!kept && !mx_exact) exact_max();
    bool rescale = false;
    for (index_t v = 0; v < TQ / W; ++v) {
      const B tmax = kx * mx[v];
      if (track) simd::max_nan(B::load_aligned(f.mt + v * W), tmax).store_aligned(f.mt + v * W);
      if (kept) {  // (with the seeded lanes' m_ref; their l and Ot are still 0)
        mref[v].store_aligned(f.m + v * W);
        al[v] = B(1.f);
        continue;
      }
      mref[v] = B::load_aligned(f.m + v * W);  // the reference before this group
      const B mnew = simd::max_nan(mref[v], tmax);
      const auto grow = (mnew > mref[v] + B(kAmxLazyMax)) || xsimd::isnan(mnew);
      const B m1 = xsimd::select(grow, mnew, mref[v]);
      nsh[v] = B(0.f) - simd::neg_inf_to_zero(m1);
      al[v] = xsimd::select(grow, simd::exp(mref[v] + nsh[v]), B(1.f));
      m1.store_aligned(f.m + v * W);
      rescale = rescale || xsimd::any(grow && (mref[v] != B(ninf)));
    }
    if (!kept) {
      for (index_t v = 0; v < TQ / W; ++v) sum[v] = B(0.f);
      amx_exp_pairs<B, TQ, false>(St, n2 / 2, kx, nsh, sum, mx, Pw, pump);
    }
    tq.finish();  // the previous group's Otᵀ += Vᵀ Pᵀ: Ot complete, its Pw free
    for (index_t v = 0; v < TQ / W; ++v)
      simd::fma(B::load_aligned(f.l + v * W), al[v], sum[v]).store_aligned(f.l + v * W);
    if (rescale)
      for (index_t e = 0; e < Dvt; ++e)
        for (index_t v = 0; v < TQ / W; ++v)
          (B::load_aligned(f.Ot + e * TQ + v * W) * al[v]).store_aligned(f.Ot + e * TQ + v * W);

    // Otᵀ += Vᵀ Pᵀ. A masked key has weight 0, and 0 · NaN = NaN: where a partial tile's V holds
    // a non-finite value, each query adds only the keys it sees.
    bool all_finite = true;
    for (index_t i = 0; i < g; ++i)
      all_finite = all_finite && (!is_partial(cls[i]) || finite[t0 + i]);
    if (all_finite) {  // 32 value channels × 32 queries per block, 32 keys per step
      // Query blocks outer: the jobs of a query block share its half of Pw (16 KB for 256
      // keys) while it is in L1, and V streams (measured faster than V blocks outer).
      for (index_t qb = 0; qb < TQ; qb += 32)
        for (index_t e0 = 0; e0 < Dvt; e0 += 32)
          tq.push({vt + j0 * Dvt + e0 * 32, 64, Dvt * 64, Pw + qb, TQ * 4, 16 * TQ * 4, n2 / 32,
                   true, f.Ot + e0 * TQ + qb, TQ});
      std::swap(Pw, Pw_other);
    } else {
      for (index_t c = 0; c < n; ++c) {
        const index_t j = j0 + c;
        const std::uint16_t* blk = vt + (j / 32) * 32 * Dvt + j % 32;
        for (index_t e = 0; e < Dv; ++e) vrow[e] = to_float(bf16{blk[e * 32]});
        for (index_t r = 0; r < M; ++r) {
          if (!hook_visible<A>(fz, r0 + r, p0 + r, j)) continue;
          const std::uint32_t w = Pw[(c / 2) * TQ + r];
          const float pr = to_float(bf16{static_cast<std::uint16_t>(c % 2 ? w >> 16 : w)});
          for (index_t e = 0; e < Dv; ++e) f.Ot[e * TQ + r] += pr * vrow[e];
        }
      }
    }
  }
  tq.finish();  // the last group's Otᵀ += Vᵀ Pᵀ
}

#endif  // POLYATTN_HAVE_AMX

}  // namespace impl
}  // namespace POLYATTN_ISA_NS
}  // namespace polyattn::softmax
