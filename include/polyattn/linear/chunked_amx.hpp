// polyattn/linear/chunked_amx.hpp — the Chunked<C> algorithm with its matrix products on AMX-BF16
// tiles (core/simd/amx_gemm.hpp), for bf16 q, k and v at the amx level. The stages and their
// order are chunked.hpp's, and the vector work between the products (gates, the strips of steep
// key-channel decays, normaliser, output rounding) is the same fp32 code. With
// q̂_t = qn_t·q_t and k̂_t = kn_t·k_t the scaled / L2-normalised rows (chunk_inputs.hpp), per chunk:
//   QK[t,s] = qn_t kn_s Γ[t,s] (q_t·k_s)   KK[t,s] = kn_t kn_s Γ[t,s] (k_t·k_s)
//                                          (tiles on the bf16 input rows, lower 32 × 32 blocks;
//                                          key-channel gates: (q̂ ∘ e^{b})(k̂ ∘ e^{−b})ᵀ and
//                                          (k̂ ∘ e^{b})(k̂ ∘ e^{−b})ᵀ split, or the fp32 strips)
//   U = T (β ∘ (V − e^{b} ∘ k̂ S0))        T = (I + tril(β·KK, −1))⁻¹ by fp32 substitution (the
//                                          WY form Uc − W S0 with Uc = T(β∘V), W = T(β∘e^{b}∘K̂));
//                                          T and the bracket split, S0 split hi + lo
//   O = qn ∘ e^{b} ∘ (q S0) + (QK masked) U   (key-channel gates: (q̂ ∘ e^{b}) S0, split)
//   ΔS = kᵀ (kn ∘ e^{b_L − b} ∘ U)         (key-channel gates: (k̂ ∘ e^{b_L − b})ᵀ U, split)
//   S ← e^{b_L} ∘ S + ΔS
// Precision: the tiles multiply the bf16 inputs themselves (exact), or a split x = hi + lo of an
// fp32 operand (about 16 bits; amx_gemm.hpp), with fp32 sums; the row factors go on afterwards
// in fp32. Every product that reaches the state (KK, k S0, T times the right-hand side, ΔS)
// takes the three terms Ahi·Bhi + Ahi·Blo + Alo·Bhi, so it is within about 2⁻¹⁶ relative of the
// fp32 path's, states stay within the fp32 bound against the double reference and do not drift
// by bf16 steps over long sequences (the fla kernels round every tl.dot operand to bf16 instead).
// The products that reach only o — QK of key-channel gates, q S0 and the masked QK times U, each
// A·B with A the queries' side — take OutputTerms terms, fixed per call from o's final type
// (chunked.hpp: output_product_terms):
//   3  A·B ≈ Ahi·Bhi + Ahi·Blo + Alo·Bhi       fp32 and fp16 o (fp32 o within 1e-5)
//   2  A·B ≈ Ahi·(Bhi + Blo), A rounded once   bf16 o, whose own rounding (2⁻⁹) dominates
//   1  A·B ≈ Ahi·Bhi                           (not used; docs/conventions.md §9.8)
// (an A that is the bf16 input rows, as q in q S0 without key-channel gates, is exact either
// way). The state's bits do not depend on o's type; a bf16 o is not the fp32 o rounded once.
// Used when K and V are multiples of 32, chunks hold at most 128 tokens (T's substitution is
// cubic in the chunk) and the call is not a speculative verify (chunked.hpp: on_tiles).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "polyattn/core/simd/amx_gemm.hpp"
#include "polyattn/linear/head.hpp"
#include "polyattn/linear/stages/chunk_buffers.hpp"
#include "polyattn/linear/stages/chunk_inputs.hpp"
#include "polyattn/linear/stages/gates.hpp"
#include "polyattn/linear/stages/gram.hpp"
#include "polyattn/linear/stages/key_channel_tiles.hpp"
#include "polyattn/linear/stages/output.hpp"
#include "polyattn/linear/stages/prefetch.hpp"
#include "polyattn/linear/stages/rows.hpp"
#include "polyattn/linear/stages/state_pass.hpp"

#if POLYATTN_HAVE_AMX

namespace polyattn::linear::stages {

template <simd::SimdArch A>
TileOperands carve_tile_operands(float* base, index_t C, index_t K, index_t V) noexcept {
  auto addr = (reinterpret_cast<std::uintptr_t>(base) + 63) / 64 * 64;
  const auto take = [&addr](index_t n_bf16) {
    void* p = reinterpret_cast<void*>(addr);
    addr += TileOperands::line_words(n_bf16) * sizeof(std::uint32_t);
    return p;
  };
  TileOperands x;
  x.Qb = static_cast<std::uint16_t*>(take(C * K));
  x.Kb = static_cast<std::uint16_t*>(take(C * K));
  x.Tb = static_cast<std::uint16_t*>(take(C * K));
  x.Ql = static_cast<std::uint16_t*>(take(C * K));
  x.Kl = static_cast<std::uint16_t*>(take(C * K));
  x.Tl = static_cast<std::uint16_t*>(take(C * K));
  x.Ah = static_cast<std::uint16_t*>(take(C * C));
  x.Al = static_cast<std::uint16_t*>(take(C * C));
  x.Keh = static_cast<std::uint16_t*>(take(K * C));
  x.Kel = static_cast<std::uint16_t*>(take(K * C));
  x.Kp = static_cast<std::uint32_t*>(take(K * C));
  x.Kpl = static_cast<std::uint32_t*>(take(K * C));
  x.Sh = static_cast<std::uint32_t*>(take(K * V));
  x.Sl = static_cast<std::uint32_t*>(take(K * V));
  x.Uh = static_cast<std::uint32_t*>(take(C * V));
  x.Ul = static_cast<std::uint32_t*>(take(C * V));
  x.Fh = static_cast<std::uint32_t*>(take(C * V));
  x.Fl = static_cast<std::uint32_t*>(take(C * V));
  x.dS = static_cast<float*>(take(2 * 32 * 32));
  x.qn = static_cast<float*>(take(2 * C));
  x.kn = static_cast<float*>(take(2 * C));
  return x;
}

// Rows [0, L) of an fp32 matrix (row stride ld) as the 16-float loads pack_amx_* ask for.
template <simd::SimdArch A>
auto fp32_rows(const float* m, index_t ld) {
  return [m, ld](std::int64_t r, std::int64_t c) { return _mm512_loadu_ps(m + r * ld + c); };
}

// Lanes c .. c + 15 of a row, those at n and beyond zero.
template <simd::SimdArch A>
POLYATTN_TARGET_AMX __m512 load_first(const float* row, std::int64_t c, std::int64_t n) {
  const __mmask16 keep =
      c >= n ? __mmask16(0)
             : static_cast<__mmask16>((2u << std::min<std::int64_t>(n - 1 - c, 15)) - 1);
  return _mm512_maskz_loadu_ps(keep, row + c);
}

// Rows [0, L) of bf16 input x (row stride x.stride) into dst [Lp][K] (rows L .. Lp zero), calling
// ahead(t) before row t (prefetches), and, when f is non-null, each row's factor f_t = scale /
// ‖x_t‖ (L2-normalised, ‖x‖ as chunk_inputs.hpp forms it) or scale: the rows the tiles multiply and
// the factors that go on afterwards.
template <simd::SimdArch A, class Ahead>
POLYATTN_TARGET_AMX void copy_bf16_rows(const InRows& x, index_t L, index_t Lp, index_t K,
                                        std::uint16_t* dst, float* f, float scale, bool l2norm,
                                        const Ahead& ahead) {
  const auto* src = static_cast<const std::uint16_t*>(x.data);
  for (index_t t = 0; t < L; ++t) {
    ahead(t);
    const std::uint16_t* row = src + t * x.stride;
    __m512 ss = _mm512_setzero_ps();
    for (index_t c = 0; c < K; c += 16) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + t * K + c), h);
      const __m512 v = simd::bf16_widen(h);
      ss = _mm512_fmadd_ps(v, v, ss);
    }
    if (f)
      f[t] = l2norm ? scale / std::sqrt(_mm512_reduce_add_ps(ss) + static_cast<float>(kL2NormEps))
                    : scale;
  }
  std::fill(dst + L * K, dst + Lp * K, std::uint16_t{0});
}

// The key operand of the Grams: Kp [K/2][Lp] pairs = the bf16 rows [Lp][K] read as words and
// transposed (B[i][s] = key s's channel i).
template <simd::SimdArch A>
void gram_key_pairs(index_t Lp, index_t K, const std::uint16_t* rows, std::uint32_t* Kp) {
  simd::transpose_words(Lp, K / 2, reinterpret_cast<const std::uint32_t*>(rows), K / 2, Kp, Lp);
}

// Rows of m ∘ e^{b} (m [L×K]: q̂ or k̂; key-channel gates) as the loads pack_amx_a asks for.
template <simd::SimdArch A>
auto key_channel_gated(const float* m, const ChunkBuffers& w) {
  using B = simd::batch_t<A>;
  return [m, eb = w.eb, K = w.K](std::int64_t r, std::int64_t c) {
    return B::load_unaligned(m + r * K + c) * B::load_unaligned(eb + r * K + c);
  };
}

// The low halves that a product reaching only o takes with OutputTerms terms (header comment):
// its left operand's (A) with 3, its right operand's (B) with 2 or 3; null otherwise, and that
// operand is packed and multiplied rounded once to bf16.
template <int OutputTerms, class Word>
Word* output_a_lo(Word* lo) noexcept {
  return OutputTerms == 3 ? lo : nullptr;
}
template <int OutputTerms, class Word>
Word* output_b_lo(Word* lo) noexcept {
  return OutputTerms >= 2 ? lo : nullptr;
}

// QK (want_qk) and KK (want_kk) of a chunk of L ≤ Lp tokens into w.QK / w.KK, on the tiles.
// Scalar gates or none: from x.Qb / x.Kb, the chunk's bf16 input rows, and the row factors.
// Key-channel gates: from the operands key_channel_rows formed when the chunk factorises
// (factored: q̂ ∘ e^{b}, k̂ ∘ e^{b}, k̂ ∘ e^{−b} split; QK takes OutputTerms terms, KK three), else
// in fp32 strips (gram.hpp).
template <simd::SimdArch A, GateShape Shape, int OutputTerms>
void tile_gram(index_t L, index_t Lp, const ChunkBuffers& w, const TileOperands& x, bool want_qk,
               bool want_kk, bool factored) {
  using B = simd::batch_t<A>;
  const index_t K = w.K, C = w.C;
  const auto products = [&](simd::AmxA qa, simd::AmxA ka, simd::AmxB kb) {
    if (want_qk)
      simd::amx_gemm(Lp, Lp, K, qa, {kb.hi, output_b_lo<OutputTerms>(kb.lo), kb.ld}, false, w.QK, C,
                     simd::AmxBlocks::lower);
    if (want_kk) simd::amx_gemm(Lp, Lp, K, ka, kb, false, w.KK, C, simd::AmxBlocks::lower);
  };
  if constexpr (Shape != GateShape::KeyChannel) {
    gram_key_pairs<A>(Lp, K, x.Kb, x.Kp);
    products({x.Qb, nullptr, K}, {x.Kb, nullptr, K}, {x.Kp, nullptr, Lp});
    // Row t times its factor, column s times kn_s·Γ[t,s] (Γ = e^{b_t − b_s}, or 1), in whole
    // vectors: the columns past t up to the vector's end are ignored by every later stage.
    constexpr index_t W = B::size;
    for (index_t t = L; t < Lp; ++t) x.kn[t] = 0.f;
    for (index_t t = 0; t < L; ++t) {
      const B bt(w.b[t]), qf(x.qn[t]), kf(x.kn[t]);
      float *qk = w.QK + t * C, *kk = w.KK + t * C;
      for (index_t s = 0; s <= t; s += W) {
        B g = B::load_unaligned(x.kn + s);
        if constexpr (Shape == GateShape::Scalar)
          g *= decay_exp1<A>(bt - B::load_unaligned(w.b + s));
        if (want_qk) (B::load_unaligned(qk + s) * (g * qf)).store_unaligned(qk + s);
        if (want_kk) (B::load_unaligned(kk + s) * (g * kf)).store_unaligned(kk + s);
      }
    }
  } else if (factored) {
    gram_key_pairs<A>(Lp, K, x.Tb, x.Kp);
    gram_key_pairs<A>(Lp, K, x.Tl, x.Kpl);
    products({x.Qb, output_a_lo<OutputTerms>(x.Ql), K}, {x.Kb, x.Kl, K}, {x.Kp, x.Kpl, Lp});
  } else {
    gated_gram_strips<A>(L, w, want_qk, want_kk);
  }
}

// Rows t0 .. t0 + R − 1 (those below L) of unit_lower_inverse, at most NV vectors a row: the
// terms of the rows finished before t0 for the R rows at once (R independent FMA chains per
// vector, each T_s load shared), then row by row the terms of the group's own earlier rows.
template <simd::SimdArch A, int R, int NV>
POLYATTN_TARGET_AMX void lower_inverse_rows(index_t t0, index_t L, float* m, index_t ld,
                                            const float* beta) {
  const index_t rows = std::min<index_t>(R, L - t0);
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_setzero_ps();
  for (index_t s = 0; s < t0; ++s) {
    const float* ts = m + s * ld;
    const index_t ns = s / 16 + 1;  // row s holds vectors j < ns
    __m512 a[R];
    for (int r = 0; r < R; ++r)
      a[r] = r < rows ? _mm512_set1_ps(m[(t0 + r) * ld + s]) : _mm512_setzero_ps();
    for (int j = 0; j < NV; ++j)
      if (j < ns) {
        const __m512 x = _mm512_loadu_ps(ts + 16 * j);
        for (int r = 0; r < R; ++r) acc[r][j] = _mm512_fmadd_ps(a[r], x, acc[r][j]);
      }
  }
  // Row t0 + r, with r a constant so that acc stays in registers.
  const auto finish = [&]<int r>(std::integral_constant<int, r>) {
    if (r >= rows) return;
    const index_t t = t0 + r;
    float* row = m + t * ld;
    for (index_t s = t0; s < t; ++s) {
      const __m512 a = _mm512_set1_ps(row[s]);
      for (int j = 0; j < NV; ++j)
        if (j <= s / 16)
          acc[r][j] = _mm512_fmadd_ps(a, _mm512_loadu_ps(m + s * ld + 16 * j), acc[r][j]);
    }
    const __m512 nb = _mm512_set1_ps(-beta[t]);
    for (int j = 0; j < NV; ++j) {
      const index_t c = 16 * j;
      if (c > t) break;  // T's row t: vectors up to the one holding column t
      const __mmask16 keep = static_cast<__mmask16>((2u << std::min<index_t>(t - c, 15)) - 1);
      __m512 v = _mm512_maskz_mov_ps(keep, _mm512_mul_ps(nb, acc[r][j]));
      if (t < c + 16)
        v = _mm512_mask_mov_ps(v, static_cast<__mmask16>(1u << (t - c)), _mm512_set1_ps(1.f));
      _mm512_storeu_ps(row + c, v);
    }
  };
  [&]<int... r>(std::integer_sequence<int, r...>) {
    (finish(std::integral_constant<int, r>{}), ...);
  }(std::make_integer_sequence<int, R>{});
}

// In place on m (rows of stride ld): m ← T = (I + tril(β ∘ m, −1))⁻¹ for rows t < L ≤ 128, by
// forward substitution T_t = e_t − β_t Σ_{s<t} m[t,s] T_s (row t of m is read before it is
// overwritten); T's rows hold zeros after the diagonal up to the next multiple of 16. Rows go
// in groups of four (chunks of up to 64 tokens; two beyond, whose rows take up to 8 vectors),
// so that the substitution is bound by FMA throughput rather than one chain's latency.
template <simd::SimdArch A>
POLYATTN_TARGET_AMX void unit_lower_inverse(index_t L, float* m, index_t ld, const float* beta) {
  if (L <= 64) {
    for (index_t t0 = 0; t0 < L; t0 += 4) lower_inverse_rows<A, 4, 4>(t0, L, m, ld, beta);
  } else {
    for (index_t t0 = 0; t0 < L; t0 += 2) lower_inverse_rows<A, 2, 8>(t0, L, m, ld, beta);
  }
}

// S ← e^{b_L} ∘ S + ΔS with ΔS = Keᵀ U formed on the tiles one 32 × 32 block at a time into d (a
// 4 KB buffer) and added to S's block while it is in L1. The add keeps the two roundings of the
// fp32 state pass (scale, then add; the asm barrier keeps the compiler from fusing them into one
// FMA), so the bits equal the chunk-parallel scheduler's combine of a ΔS formed whole. With Sh
// non-null, the new S also goes out as the split pairs that the next chunk's products take
// (pack_amx_b of S: rows 2p and 2p + 1 together).
template <simd::SimdArch A, GateShape Shape>
POLYATTN_TARGET_AMX void update_state_on_tiles(index_t L, index_t Lp, const ChunkBuffers& w,
                                               const simd::AmxA& keys, const simd::AmxB& updates,
                                               float* S, float* d, std::uint32_t* Sh,
                                               std::uint32_t* Sl) {
  const float* ebL = w.eb + (L - 1) * w.bK;
  const index_t V = w.V;
  const auto factor = [ebL](index_t i) {
    return _mm512_set1_ps(Shape == GateShape::None         ? 1.f
                          : Shape == GateShape::KeyChannel ? ebL[i]
                                                           : ebL[0]);
  };
  const auto next = [](float* row, const float* dr, __m512 a) {
    __m512 r = _mm512_loadu_ps(row);
    if constexpr (Shape != GateShape::None) {
      r = _mm512_mul_ps(r, a);
      asm("" : "+v"(r));
    }
    r = _mm512_add_ps(r, _mm512_loadu_ps(dr));
    _mm512_storeu_ps(row, r);
    return r;
  };
  for (index_t j0 = 0; j0 < V; j0 += 32)  // amx_gemm's block order
    for (index_t i0 = 0; i0 < w.K; i0 += 32) {
      simd::amx_gemm_block(keys, updates, i0, j0, Lp, false, d, 32);
      for (index_t i = i0; i < i0 + 32; i += 2) {
        const __m512 a0 = factor(i), a1 = factor(i + 1);
        float *r0 = S + i * V + j0, *r1 = r0 + V;
        const float* d0 = d + (i - i0) * 32;
        for (index_t j = 0; j < 32; j += 16) {
          const __m512 x0 = next(r0 + j, d0 + j, a0), x1 = next(r1 + j, d0 + 32 + j, a1);
          if (Sh == nullptr) continue;
          __m512i lo;
          _mm512_storeu_si512(Sh + i / 2 * V + j0 + j, simd::amx_pairs(x0, x1, &lo));
          _mm512_storeu_si512(Sl + i / 2 * V + j0 + j, lo);
        }
      }
    }
}

// The delta rule's right-hand side Y_t = β_t (v_t − f_t P_t) for t < L (zero rows to Lp), with
// P = Ka · S0 formed on the tiles one 32 × 32 block at a time into P (a 4 KB buffer) and Y's
// block packed split into Fh / Fl (the pairs of pack_amx_b) while P's block is in L1; with O
// non-null also O = Qa · S0, sharing each S0 panel. v rows are bf16 (vc), asked for
// kRowsNear rows ahead.
template <simd::SimdArch A>
POLYATTN_TARGET_AMX void delta_rhs_on_tiles(index_t L, index_t Lp, index_t K, index_t V,
                                            const simd::AmxA& ka, const simd::AmxB& s0,
                                            const simd::AmxA& qa, float* O, const InRows& vc,
                                            const float* f, const float* beta, float* P,
                                            std::uint32_t* Fh, std::uint32_t* Fl) {
  const auto* vrows = static_cast<const bf16*>(vc.data);
  const auto y = [&](index_t t, index_t j0, index_t j, const float* pr) {
    if (t >= L) return _mm512_setzero_ps();
    const __m512 v = simd::load_float<A>(vrows + t * vc.stride + j0 + j);
    const __m512 r = _mm512_fnmadd_ps(_mm512_set1_ps(f[t]), _mm512_loadu_ps(pr + j), v);
    return _mm512_mul_ps(_mm512_set1_ps(beta[t]), r);
  };
  for (index_t j0 = 0; j0 < V; j0 += 32) {  // amx_gemm's block order
    for (index_t i0 = 0; i0 < Lp; i0 += 32) {
      simd::amx_gemm_block(ka, s0, i0, j0, K, false, P, 32);
      for (index_t t = i0; t < i0 + 32; t += 2) {
        if (j0 == 0 && t + kRowsNear < L) {
          prefetch_row<A>(vc, t + kRowsNear, V);
          if (t + 1 + kRowsNear < L) prefetch_row<A>(vc, t + 1 + kRowsNear, V);
        }
        const float* p0 = P + (t - i0) * 32;
        for (index_t j = 0; j < 32; j += 16) {
          __m512i lo;
          const __m512i hi = simd::amx_pairs(y(t, j0, j, p0), y(t + 1, j0, j, p0 + 32), &lo);
          _mm512_storeu_si512(Fh + t / 2 * V + j0 + j, hi);
          _mm512_storeu_si512(Fl + t / 2 * V + j0 + j, lo);
        }
      }
    }
    if (O)
      for (index_t i0 = 0; i0 < Lp; i0 += 32)
        simd::amx_gemm_block(qa, s0, i0, j0, K, false, O + i0 * V + j0, V);
  }
}

// The chunk loop of ChunkedKernel<P> on the tiles (chunked.hpp checks eligibility): chunks of
// `chunk` tokens; w and x carved for w.C ≥ chunk rows, a multiple of 32; the products that reach
// only o take OutputTerms terms (header comment).
template <simd::SimdArch A, int OutputTerms, class P>
void chunked_on_tiles(const HeadProblem<P>& p, index_t chunk, const ChunkBuffers& w,
                      const TileOperands& x) {
  static_assert(OutputTerms >= 1 && OutputTerms <= 3);
  using B = simd::batch_t<A>;
  constexpr GateShape Shape = P::shape;
  constexpr bool key_channel = Shape == GateShape::KeyChannel;
  const simd::AmxScope tiles;
  const index_t K = p.K, V = p.V, C = w.C;
  float* S = p.state;
  const bool want_out = p.o != nullptr;
  const InRows q{p.q, p.q_st, p.q_type}, k{p.k, p.k_st, p.k_type}, v{p.v, p.v_st, p.v_type};
  const OutRows o{p.o, p.o_st, p.o_type};
  bool state_pairs_ready = false;  // x.Sh / x.Sl hold S as pairs
  for (index_t c0 = 0; c0 < p.T; c0 += chunk) {
    const index_t L = std::min(chunk, p.T - c0), Lp = (L + 31) / 32 * 32;
    const InRows qc = rows_from<A>(q, c0), kc = rows_from<A>(k, c0), vc = rows_from<A>(v, c0);
    // The chunk's token rows (q, k, v, o, gates) kRowsAhead tokens ahead of the first pass
    // over them: each row is a page of its own (stages/prefetch.hpp).
    for (index_t t = 0; t < std::min(kRowsAhead, L); ++t) prefetch_token<A>(p, c0 + t);
    const auto ahead = [&p, c0](index_t t) { prefetch_token<A>(p, c0 + t + kRowsAhead); };
    // The next lockstep head's rows of these tokens, a quarter between each of the products
    // below (a burst of them all would stall this head on the fill buffers).
    const auto next_head_rows = [&p, c0, L ](index_t quarter) __attribute__((always_inline)) {
      if (p.next_head == nullptr) return;
      for (index_t t = c0 + quarter * L / 4; t < c0 + (quarter + 1) * L / 4; ++t)
        prefetch_token<A>(*p.next_head, t);
    };
    bool factored = false;
    if constexpr (key_channel) {  // gates, then q̂, k̂ in fp32 and the Grams' operands
      key_channel_cumulative_gates<A>(p.gate, c0, L, K, w.b, w.eb, ahead);
      factored = factorises<A>(L, w);
      key_channel_rows<A, OutputTerms == 3>(L, Lp, qc, kc, p.scale, p.qk_l2norm, w, x, factored,
                                            want_out, P::delta, P::running_sum);
    } else {
      if constexpr (P::running_sum)  // q̂, k̂ in fp32 for the normaliser
        load_queries_keys<A>(L, K, qc, kc, p.scale, p.qk_l2norm, w.Q, w.Kc, x.qn, x.kn, ahead);
      // the input rows and their factors
      const bool factors = !P::running_sum;
      const auto first = [&](index_t t) {  // ahead in the first pass, q's when o is wanted
        if (factors) ahead(t);
      };
      if (want_out)
        copy_bf16_rows<A>(qc, L, Lp, K, x.Qb, factors ? x.qn : nullptr, p.scale, p.qk_l2norm,
                          first);
      copy_bf16_rows<A>(kc, L, Lp, K, x.Kb, factors ? x.kn : nullptr, 1.f, p.qk_l2norm,
                        [&](index_t t) {
                          if (!want_out) first(t);
                        });
      cumulative_gates<A, Shape>(p.gate, c0, L, K, w.b, w.eb);
      if constexpr (Shape == GateShape::Scalar)  // whole vectors of b past L stay finite
        std::fill(w.b + L, w.b + Lp, w.b[L - 1]);
    }
    tile_gram<A, Shape, OutputTerms>(L, Lp, w, x, want_out, P::delta, factored);
    next_head_rows(0);
    if constexpr (key_channel) {
      if (!factored) {  // k̂ ∘ e^{b} (k S0) and q̂ ∘ e^{b} (q S0), split (else key_channel_rows)
        if (P::delta) simd::pack_amx_a(L, Lp, K, key_channel_gated<A>(w.Kc, w), x.Kb, x.Kl, K);
        if (want_out)
          simd::pack_amx_a(L, Lp, K, key_channel_gated<A>(w.Q, w), x.Qb,
                           output_a_lo<OutputTerms>(x.Ql), K);
      }
    }
    // S0 as pairs, split: right operand of k S0 and q S0 (the previous chunk's state pass
    // left them when it ran)
    if ((P::delta || want_out) && !state_pairs_ready)
      simd::pack_amx_b(K, K, V, fp32_rows<A>(S, V), x.Sh, x.Sl, V);
    state_pairs_ready = false;
    if constexpr (P::delta) {
      update_betas<A>(p.update, c0, w.beta, L);
      // U = T (β ∘ (V − e^{b} ∘ K̂ S0)) with T = (I + tril(β·KK, −1))⁻¹ (header comment).
      unit_lower_inverse<A>(L, w.KK, C, w.beta);  // T in w.KK
      // Y_t = β_t (v_t − f_t P_t) with P = k S0 (key-channel gates: (k̂ ∘ e^{b}) S0, split),
      // formed block by block as the tiles give P and packed split into Fh / Fl; beside it
      // q S0 ((q̂ ∘ e^{b}) S0) into w.O for the output.
      float* f = w.extra;
      for (index_t t = 0; t < L; ++t) {
        f[t] = key_channel ? 1.f : x.kn[t];
        if constexpr (Shape == GateShape::Scalar) f[t] *= w.eb[t];
      }
      next_head_rows(1);
      const simd::AmxA keys_a =
          key_channel ? simd::AmxA{x.Kb, x.Kl, K} : simd::AmxA{x.Kb, nullptr, K};
      const simd::AmxA queries_a{x.Qb, key_channel ? output_a_lo<OutputTerms>(x.Ql) : nullptr, K,
                                 OutputTerms >= 2};
      delta_rhs_on_tiles<A>(L, Lp, K, V, keys_a, {x.Sh, x.Sl, V}, queries_a,
                            want_out ? w.O : nullptr, vc, f, w.beta, x.dS, x.Fh, x.Fl);
      const auto lower = [tt = w.KK, C](std::int64_t t, std::int64_t c) {
        return load_first<A>(tt + t * C, c, t + 1);
      };
      simd::pack_amx_a(L, Lp, Lp, lower, x.Ah, x.Al, Lp);
      simd::amx_gemm(Lp, V, Lp, {x.Ah, x.Al, Lp}, {x.Fh, x.Fl, V}, false, w.U, V,
                     simd::AmxBlocks::causal_inner);
    } else {
      next_head_rows(1);
      additive_updates<A, P::weighted>(p.update, c0, L, vc, w);
    }
    next_head_rows(2);
    simd::pack_amx_b(L, Lp, V, fp32_rows<A>(w.U, V), x.Uh,
                     key_channel ? x.Ul : output_b_lo<OutputTerms>(x.Ul), V);
    if (want_out) {
      if constexpr (key_channel) {  // (q̂ ∘ e^{b}) S0, split (with k S0 for the delta rule)
        if (!P::delta)
          simd::amx_gemm(Lp, V, K, {x.Qb, output_a_lo<OutputTerms>(x.Ql), K},
                         {x.Sh, output_b_lo<OutputTerms>(x.Sl), V}, false, w.O, V);
      } else {  // q S0 on the input rows, then each row times qn_t e^{b_t}
        if (!P::delta)
          simd::amx_gemm(Lp, V, K, {x.Qb, nullptr, K}, {x.Sh, output_b_lo<OutputTerms>(x.Sl), V},
                         false, w.O, V);
        for (index_t t = 0; t < L; ++t)
          simd::scale<A>(Shape == GateShape::Scalar ? x.qn[t] * w.eb[t] : x.qn[t], w.O + t * V, V);
      }
      const auto masked_scores = [qk = w.QK, C](std::int64_t t, std::int64_t c) {
        return load_first<A>(qk + t * C, c, t + 1);
      };
      simd::pack_amx_a(L, Lp, Lp, masked_scores, x.Ah, output_a_lo<OutputTerms>(x.Al), Lp);
      simd::amx_gemm(Lp, V, Lp, {x.Ah, output_a_lo<OutputTerms>(x.Al), Lp},
                     {x.Uh, output_b_lo<OutputTerms>(x.Ul), V}, true, w.O, V,
                     simd::AmxBlocks::causal_inner);
      const OutRows oc = rows_from<A>(o, c0);
      finish_outputs<A, P::running_sum>(
          L, w, oc, p.z, p.eps, [&oc, L, V ](index_t t) __attribute__((always_inline)) {
            if (t + kRowsNear < L) prefetch_row<A>(oc, t + kRowsNear, V);
          });
    }
    next_head_rows(3);
    if (!p.update_state && !p.delta_out) continue;
    // ΔS on the tiles from zero, then S ← e^{b_L} ∘ S + ΔS in two rounded steps, block by block:
    // the chunk-parallel scheduler combines its pieces the same way, so both give the same bits
    // (scheduler.hpp).
    simd::AmxA keys{x.Keh, nullptr, Lp};
    simd::AmxB updates{x.Fh, x.Fl, V};
    if constexpr (key_channel) {  // (k̂ ∘ e^{b_L − b})ᵀ, split, times U
      if (factored) {             // from the pairs of the rows pass
        key_channel_state_keys<A>(Lp, w, x);
      } else {
        const float* Ke = gated_state_keys<A, Shape>(L, w);
        simd::transpose_words(Lp, K, reinterpret_cast<const std::uint32_t*>(Ke), K,
                              reinterpret_cast<std::uint32_t*>(w.Kt), C);  // columns L.. masked
        const auto key_rows = [kt = w.Kt, C, L](std::int64_t i, std::int64_t c) {
          return load_first<A>(kt + i * C, c, L);
        };
        simd::pack_amx_a(K, K, Lp, key_rows, x.Keh, x.Kel, Lp);
      }
      keys.lo = x.Kel;
      updates = {x.Uh, x.Ul, V};
    } else {  // kᵀ (the input rows) times kn ∘ e^{b_L − b} ∘ U, split
      simd::bf16_rows_from_pairs(K / 2, Lp, x.Kp, x.Keh);  // kᵀ from the Grams' key pairs
      float* f = w.extra;
      for (index_t t = 0; t < L; ++t) {
        const float e = Shape == GateShape::Scalar ? w.b[L - 1] - w.b[t] : 0.f;
        f[t] = x.kn[t] * std::exp(e < kFlushLog ? -1000.f : e);
      }
      const auto scaled = [u = w.U, V, f](std::int64_t t, std::int64_t c) {
        return B::load_unaligned(u + t * V + c) * B(f[t]);
      };
      simd::pack_amx_b(L, Lp, V, scaled, x.Fh, x.Fl, V);
    }
    if (p.delta_out) {
      simd::amx_gemm(K, V, Lp, keys, updates, false, p.delta_out, V);
      chunk_decay<A, Shape>(L, w, p.decay_out);
      continue;
    }
    state_pairs_ready = (P::delta || want_out) && c0 + chunk < p.T;
    update_state_on_tiles<A, Shape>(L, Lp, w, keys, updates, S, x.dS,
                                    state_pairs_ready ? x.Sh : nullptr, x.Sl);
  }
}

}  // namespace polyattn::linear::stages

#endif  // POLYATTN_HAVE_AMX
