// polyattn/softmax/flash.hpp — tiled ("flash") softmax attention prefill, SPEC §3.
//
//   o_i = Σ_j p_ij v_j,  p_ij = e^{s_ij − m_i} / (Σ_{j visible} e^{s_ij − m_i} [+ e^{sink − m_i}])
// computed per (sequence, query head, tile of kTileQ query rows) with an online max / sum over
// tiles of kTileK keys, never forming a T×S matrix:
//   Sᵀ = scale · K_tile Q_tileᵀ                       (register-blocked GEMM, simd/gemm.hpp)
//   Sᵀ ← modifiers (softcap, ALiBi, forgetting bias); masked entries of partial tiles → −inf
//   m' = max(m, colmax Sᵀ);  P = e^{S − m'};  l ← l·e^{m − m'} + Σ P;  O ← e^{m − m'}·O + P V
// and at the end o = O / l (with the sink logit in the denominator when given). The scores are
// held transposed — one row per key, the tile's queries along the SIMD lanes — so the running
// max / sum, the exponentials and the causal mask are all vertical vector operations (no
// horizontal reductions), and P V reads P through strides. Tiles the mask excludes entirely
// are skipped; fully visible tiles skip the per-element mask.
// Before the tiles run, K of each (sequence, kv head) is packed once as unit-stride rows and V
// as rows padded to a multiple of 16 floats (any input strides are handled there; the q tile
// is transposed into a local buffer). Forgetting-gate cumsums are formed in double. Work items
// are (sequence, query head, query tile), each computed by one thread in a fixed order:
// results are bitwise identical for every executor.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/simd/gemm.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"
#include "polyattn/softmax/mask.hpp"
#include "polyattn/softmax/modifiers.hpp"

namespace polyattn::softmax {

#ifndef POLYATTN_FLASH_TQ
#define POLYATTN_FLASH_TQ 64
#define POLYATTN_FLASH_TK 64
#endif
inline constexpr index_t kTileQ = POLYATTN_FLASH_TQ;  // query rows per work item
inline constexpr index_t kTileK = POLYATTN_FLASH_TK;  // keys per inner tile (a multiple of every batch width)
inline constexpr index_t kPadV = 16;   // packed V / O rows are padded to a multiple of this
static_assert(kTileQ % 16 == 0 && kTileK % 16 == 0, "tiles must hold whole batches of every ISA");

constexpr index_t round_up(index_t x, index_t m) noexcept {
  return (x + m - 1) / m * m;
}

// One sequence of the call: queries [q0, q0 + nq) and keys [k0, k0 + nk) of batch row b.
struct SeqRange {
  index_t b, q0, nq, k0, nk;
};

// Everything the per-tile kernel reads, prepared by flash_attention().
struct FlashProblem {
  SoftmaxDims d;
  const SoftmaxInputs* in = nullptr;
  const SoftmaxOptions* opt = nullptr;
  View4<float> o;
  View3<float> lse;  // optional [B, T, HQ]
  std::vector<SeqRange> seqs;
  index_t Dvp = 0;                  // Dv rounded up to kPadV
  std::vector<float> kp, vp;        // packed K rows [nk][D] / padded V rows [nk][Dvp]
  std::vector<std::size_t> kp_off;  // per (sequence, kv head): [seq · HKV + hk]
  std::vector<std::size_t> vp_off;
  std::vector<double> G;            // forgetting gate cumsum per (sequence, q head, key)
  std::vector<std::size_t> g_off;   // [seq · HQ + h]
};

struct FlashTask {
  index_t seq, head, tile;
};

// The SIMD body for one work item (defined below, instantiated per ISA in the units).
struct FlashTileKernel {
  const FlashProblem* problem;
  FlashTask task;
  template <simd::SimdArch A>
  void operator()(A) const;
};

namespace detail {

// Packs K of (sequence s, kv head hk) as unit-stride rows and V as padded rows; forms the gate
// cumsums of the q heads of that kv head.
inline void pack_sequence(FlashProblem& P, index_t s, index_t hk) {
  const SeqRange& sq = P.seqs[static_cast<std::size_t>(s)];
  const SoftmaxInputs& in = *P.in;
  const index_t D = P.d.D, Dv = P.d.Dv, Dvp = P.Dvp;
  float* kp = P.kp.data() + P.kp_off[static_cast<std::size_t>(s * P.d.HKV + hk)];
  float* vp = P.vp.data() + P.vp_off[static_cast<std::size_t>(s * P.d.HKV + hk)];
  for (index_t j = 0; j < sq.nk; ++j)
    for (index_t e = 0; e < D; ++e) kp[j * D + e] = in.k(sq.b, sq.k0 + j, hk, e);
  for (index_t j = 0; j < sq.nk; ++j) {
    float* row = vp + j * Dvp;
    for (index_t e = 0; e < Dv; ++e) row[e] = in.v(sq.b, sq.k0 + j, hk, e);
    for (index_t e = Dv; e < Dvp; ++e) row[e] = 0.f;
  }
  if (!in.g.absent()) {
    for (index_t h = hk * P.d.group; h < (hk + 1) * P.d.group; ++h) {
      double* G = P.G.data() + P.g_off[static_cast<std::size_t>(s * P.d.HQ + h)];
      double run = 0.0;
      for (index_t j = 0; j < sq.nk; ++j) {
        run += static_cast<double>(in.g(sq.b, sq.k0 + j, h));
        G[j] = run;
      }
    }
  }
}

// True when x[0, n) holds no NaN or ±Inf (x·0 is NaN exactly for those).
template <simd::SimdArch A>
bool all_finite(const float* x, index_t n) noexcept {
  using B = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(B::size);
  B acc(0.f);
  index_t i = 0;
  for (; i + W <= n; i += W) acc += B::load_unaligned(x + i) * B(0.f);
  float tail = 0.f;
  for (; i < n; ++i) tail += x[i] * 0.f;
  return simd::reduce_add(acc) + tail == 0.f;
}

}  // namespace detail

template <simd::SimdArch A>
void FlashTileKernel::operator()(A) const {
  using B = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(B::size);
  constexpr index_t TQ = kTileQ, TK = kTileK;
  const FlashProblem& P = *problem;
  const SoftmaxInputs& in = *P.in;
  const SoftmaxOptions& opt = *P.opt;
  const SeqRange& sq = P.seqs[static_cast<std::size_t>(task.seq)];
  const index_t h = task.head, hk = h / P.d.group;
  const index_t D = P.d.D, Dv = P.d.Dv, Dvp = P.Dvp;
  const index_t r0 = task.tile * TQ, r1 = std::min(r0 + TQ, sq.nq), M = r1 - r0;
  const index_t offset = sq.nk - sq.nq;  // key position of query row r is r + offset
  const index_t p0 = r0 + offset;        // ... of the tile's first row
  const float ninf = -std::numeric_limits<float>::infinity();

  const MaskSet mask = MaskSet::from(opt, sq.b, h, sq.q0, sq.k0);
  const bool masked = mask.masks_anything();
  // Causal is the only mask left inside a partial tile when there is no window and no block
  // mask, or the tile's block-mask blocks are all set (sink keys are then visible anyway).
  const bool causal_no_window = opt.causal && opt.window == 0;
  ModifierSet mods;
  mods.softcap = static_cast<float>(opt.softcap);
  mods.alibi = !in.alibi_slopes.absent();
  if (mods.alibi) mods.alibi_slope = in.alibi_slopes(h);
  mods.forget = !in.g.absent();
  const bool has_sink = !in.sink.absent();
  const float sink = has_sink ? in.sink(h) : 0.f;

  // Scratch (lanes past M are padding queries with zero q: finite scores, never written out).
  std::vector<float> buf(static_cast<std::size_t>(D * TQ + TK * TQ + TQ * Dvp + 4 * TQ));
  float* Qt = buf.data();    // [D][TQ]   q of the tile, transposed
  float* St = Qt + D * TQ;   // [TK][TQ]  scores, then probabilities, transposed
  float* Ob = St + TK * TQ;  // [TQ][Dvp] unnormalised output
  float* m = Ob + TQ * Dvp;  // running max per query
  float* l = m + TQ;         // running sum
  float* al = l + TQ;        // this tile's rescale factor e^{m_old − m_new}
  float* gq = al + TQ;       // forgetting bias: G_p − G_ref
  if (M < TQ) std::fill(Qt, Qt + D * TQ, 0.f);
  for (index_t r = 0; r < M; ++r) {  // rows read in order (q rows are HQ·D floats apart)
    const index_t t = sq.q0 + r0 + r;
    if (in.q.stride(3) == 1) {
      const float* qr = &in.q(sq.b, t, h, 0);
      for (index_t e = 0; e < D; ++e) Qt[e * TQ + r] = qr[e];
    } else {
      for (index_t e = 0; e < D; ++e) Qt[e * TQ + r] = in.q(sq.b, t, h, e);
    }
  }
  std::fill(Ob, Ob + TQ * Dvp, 0.f);
  std::fill(m, m + TQ, ninf);
  std::fill(l, l + TQ, 0.f);

  const double* G = nullptr;
  double g_ref = 0.0;
  const auto G_at = [&](index_t pos) { return pos >= 0 ? G[pos] : 0.0; };
  if (mods.forget) {
    G = P.G.data() + P.g_off[static_cast<std::size_t>(task.seq * P.d.HQ + h)];
    g_ref = G_at(std::min(p0, sq.nk - 1));
    for (index_t r = 0; r < TQ; ++r)
      gq[r] = r < M ? static_cast<float>(G_at(p0 + r) - g_ref) : 0.f;
  }

  const float* kp = P.kp.data() + P.kp_off[static_cast<std::size_t>(task.seq * P.d.HKV + hk)];
  const float* vp = P.vp.data() + P.vp_off[static_cast<std::size_t>(task.seq * P.d.HKV + hk)];
  const RowRange rows{r0, r1, offset};
  const index_t tiles = (sq.nk + TK - 1) / TK;

  for (index_t t = 0; t < tiles; ++t) {
    const index_t j0 = t * TK, n = std::min(TK, sq.nk - j0);
    const TileClass cls = masked ? mask.classify(rows, {j0, j0 + n}) : TileClass::Full;
    if (cls == TileClass::Skip) continue;
    const bool causal_only =
        causal_no_window && (opt.block_mask == nullptr ||
                             mask.block.classify(rows, {j0, j0 + n}) == TileClass::Full);

    // Sᵀ = scale · K_tile Q_tileᵀ: one row per key, the tile's queries along the lanes.
    simd::gemm<A>(n, TQ, D, static_cast<float>(P.d.scale), kp + j0 * D, D, Qt, TQ, false, St, TQ);

    B mx[TQ / W];
    POLYATTN_UNROLL for (index_t v = 0; v < TQ / W; ++v) mx[v] = B(ninf);
    for (index_t c = 0; c < n; ++c) {
      float* srow = St + c * TQ;
      const index_t j = j0 + c;
      if (mods.any()) {
        const float gk = mods.forget ? static_cast<float>(G[j] - g_ref) : 0.f;
        mods.apply_keys<A>(srow, KeyContext{j, p0, TQ, gk, gq});
      }
      if (cls == TileClass::Partial) {
        if (causal_only) {  // queries r with p0 + r < j do not see key j
          std::fill(srow, srow + std::clamp<index_t>(j - p0, 0, TQ), ninf);
        } else {
          for (index_t r = 0; r < M; ++r)
            if (!mask.visible(r0 + r, p0 + r, j)) srow[r] = ninf;
        }
      }
      POLYATTN_UNROLL for (index_t v = 0; v < TQ / W; ++v)
        mx[v] = simd::max_nan(mx[v], B::load_unaligned(srow + v * W));
    }

    // Online softmax, vertically: every lane is one query.
    B mu[TQ / W], sum[TQ / W];
    POLYATTN_UNROLL for (index_t v = 0; v < TQ / W; ++v) {
      const B m_old = B::load_unaligned(m + v * W);
      const B m_new = simd::max_nan(m_old, mx[v]);
      // Lanes that have seen nothing yet keep m = −inf; they use 0 so that e^{−inf − 0} = 0.
      mu[v] = simd::neg_inf_to_zero(m_new);
      (simd::exp(m_old - mu[v])).store_unaligned(al + v * W);
      m_new.store_unaligned(m + v * W);
      sum[v] = B(0.f);
    }
    for (index_t c = 0; c < n; ++c) {
      float* srow = St + c * TQ;
      POLYATTN_UNROLL for (index_t v = 0; v < TQ / W; ++v) {
        const B e = simd::exp(B::load_unaligned(srow + v * W) - mu[v]);
        e.store_unaligned(srow + v * W);
        sum[v] += e;
      }
    }
    POLYATTN_UNROLL for (index_t v = 0; v < TQ / W; ++v)
      simd::fma(B::load_unaligned(l + v * W), B::load_unaligned(al + v * W), sum[v])
          .store_unaligned(l + v * W);
    for (index_t r = 0; r < M; ++r) {
      if (al[r] == 1.f) continue;
      const B ab(al[r]);
      float* orow = Ob + r * Dvp;
      for (index_t e = 0; e < Dvp; e += W) (B::load_unaligned(orow + e) * ab).store_unaligned(orow + e);
    }
    // O += P V with P = (Sᵀ)ᵀ read through strides. In a partial tile a masked key has weight 0,
    // and 0 · NaN = NaN: when the tile's V holds a non-finite value, rows add only the keys
    // they see (as the reference does), so a NaN or Inf never leaks past the mask.
    const float* vt = vp + j0 * Dvp;
    if (cls == TileClass::Partial && !detail::all_finite<A>(vt, n * Dvp)) {
      for (index_t r = 0; r < M; ++r)
        for (index_t c = 0; c < n; ++c)
          if (mask.visible(r0 + r, p0 + r, j0 + c))
            simd::axpy<A>(St[c * TQ + r], vt + c * Dvp, Ob + r * Dvp, Dvp);
    } else {
      simd::gemm_strided<A>(M, Dvp, n, 1.f, St, 1, TQ, vt, Dvp, true, Ob, Dvp);
    }
  }

  // o = O / l, with the sink logit in the denominator; rows that saw no key output zeros.
  for (index_t r = 0; r < M; ++r) {
    const float* orow = Ob + r * Dvp;
    if (m[r] == ninf) {  // exact zeros, whatever O picked up from non-finite values
      for (index_t e = 0; e < Dv; ++e) P.o(sq.b, sq.q0 + r0 + r, h, e) = 0.f;
      if (!P.lse.absent()) P.lse(sq.b, sq.q0 + r0 + r, h) = ninf;
      continue;
    }
    float mul = 0.f, lse = ninf;
    if (m[r] != ninf) {
      if (has_sink) {
        const float mf = std::max(m[r], sink);
        const float c = std::exp(m[r] - mf);
        const float den = l[r] * c + std::exp(sink - mf);
        mul = c / den;
        lse = mf + std::log(den);
      } else {
        mul = 1.f / l[r];
        lse = m[r] + std::log(l[r]);
      }
      if (std::isnan(m[r])) mul = lse = m[r];
    }
    for (index_t e = 0; e < Dv; ++e) P.o(sq.b, sq.q0 + r0 + r, h, e) = orow[e] * mul;
    if (!P.lse.absent()) P.lse(sq.b, sq.q0 + r0 + r, h) = lse;
  }
}

/// Softmax attention prefill (SPEC §3): o [B, T, HQ, Dv] from q, k, v and the optional inputs
/// of SoftmaxInputs (forgetting gate g, ALiBi slopes, sink logits, cu_seqlens) under the masks
/// and modifiers of SoftmaxOptions. Any strides; work runs on `exec` (bits do not depend on it).
/// The overload with `lse` also writes lse [B, T, HQ] = log(Σ_{j visible} e^{s_ij} [+ e^{sink}])
/// (−inf for a query that sees no key), so that outputs over disjoint key sets can be merged
/// exactly (hybrids, split computations).
/// @param in   q [B,T,HQ,D], k [B,S,HKV,D], v [B,S,HKV,Dv] and the optional tensors
/// @param opt  scale, causal, window, sink_tokens, softcap, block_mask
/// @param o    output [B,T,HQ,Dv]; a query that sees no key gets zeros
/// @throws polyattn::Error naming the bad argument, before anything is written
template <Executor E = Serial>
void flash_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, View4<float> o,
                     View3<float> lse, const E& exec = E{}) {
  FlashProblem P;
  P.d = validate(in, opt, o);
  check::well_formed("lse", lse);  // rejects null data with a non-empty shape
  if (!lse.absent()) check::shape_is("lse", lse, {P.d.B, P.d.T, P.d.HQ}, "[B, T, HQ] from q");
  P.in = &in;
  P.opt = &opt;
  P.o = o;
  P.lse = lse;
  const SoftmaxDims& d = P.d;
  if (d.B == 0 || d.T == 0 || d.HQ == 0 || d.Dv == 0) return;
  if (d.varlen) {
    for (std::size_t n = 0; n + 1 < in.cu_seqlens.size(); ++n) {
      const index_t beg = in.cu_seqlens[n], len = in.cu_seqlens[n + 1] - beg;
      P.seqs.push_back({0, beg, len, beg, len});
    }
  } else {
    for (index_t b = 0; b < d.B; ++b) P.seqs.push_back({b, 0, d.T, 0, d.S});
  }
  P.Dvp = round_up(d.Dv, kPadV);
  const index_t nseq = static_cast<index_t>(P.seqs.size());
  std::size_t kp_size = 0, vp_size = 0, g_size = 0;
  for (index_t s = 0; s < nseq; ++s) {
    const index_t nk = P.seqs[static_cast<std::size_t>(s)].nk;
    for (index_t hk = 0; hk < d.HKV; ++hk) {
      P.kp_off.push_back(kp_size);
      P.vp_off.push_back(vp_size);
      kp_size += static_cast<std::size_t>(nk * d.D);
      vp_size += static_cast<std::size_t>(nk * P.Dvp);
    }
    for (index_t h = 0; h < d.HQ; ++h) {
      P.g_off.push_back(g_size);
      if (!in.g.absent()) g_size += static_cast<std::size_t>(nk);
    }
  }
  P.kp.resize(kp_size);
  P.vp.resize(vp_size);
  P.G.resize(g_size);
  exec.parallel_for(nseq * d.HKV,
                    [&](index_t item) { detail::pack_sequence(P, item / d.HKV, item % d.HKV); });

  // Work items, the most expensive first under a causal mask (later query tiles see more keys).
  std::vector<FlashTask> tasks;
  for (index_t s = 0; s < nseq; ++s) {
    const index_t nq = P.seqs[static_cast<std::size_t>(s)].nq;
    const index_t qtiles = (nq + kTileQ - 1) / kTileQ;
    for (index_t t = 0; t < qtiles; ++t)
      for (index_t h = 0; h < d.HQ; ++h)
        tasks.push_back({s, h, opt.causal ? qtiles - 1 - t : t});
  }
  if (opt.causal)
    std::stable_sort(tasks.begin(), tasks.end(), [&](const FlashTask& a, const FlashTask& b) {
      const auto& sa = P.seqs[static_cast<std::size_t>(a.seq)];
      const auto& sb = P.seqs[static_cast<std::size_t>(b.seq)];
      return a.tile * kTileQ + sa.nk - sa.nq > b.tile * kTileQ + sb.nk - sb.nq;
    });
  exec.parallel_for(static_cast<index_t>(tasks.size()), [&](index_t i) {
    simd::run_kernel(FlashTileKernel{&P, tasks[static_cast<std::size_t>(i)]});
  });
}

template <Executor E = Serial>
void flash_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, View4<float> o,
                     const E& exec = E{}) {
  flash_attention(in, opt, o, View3<float>{}, exec);
}

}  // namespace polyattn::softmax

#define POLYATTN_SOFTMAX_FLASH_KERNELS(X) X(::polyattn::softmax::FlashTileKernel)
POLYATTN_SOFTMAX_FLASH_KERNELS(POLYATTN_KERNEL_EXTERN)
