// polyattn/softmax/flash.hpp — tiled ("flash") softmax attention prefill, SPEC §3.
//
//   o_i = Σ_j p_ij v_j,  p_ij = e^{s_ij − m_i} / (Σ_{j visible} e^{s_ij − m_i} [+ e^{sink − m_i}])
// computed per (sequence, query head, tile of kTileQ query rows) with an online max / sum over
// tiles of kTileK keys, never forming a T×S matrix:
//   S  = scale · Q_tile K_tileᵀ                       (register-blocked GEMM, simd/gemm.hpp)
//   S ← modifiers (softcap, ALiBi, forgetting bias); masked entries of partial tiles → −inf
//   m' = max(m, rowmax S);  P = e^{S − m'};  l ← l·e^{m − m'} + rowsum P;  O ← e^{m − m'}·O + P V
// and at the end o = O / l (with the sink logit in the denominator when given). Tiles the mask
// excludes entirely are skipped; fully visible tiles skip the per-element mask.
// Before the tiles run, K of each (sequence, kv head) is packed once as Kᵀ tiles [D][kTileK]
// and V as rows padded to a multiple of 16 floats, so both products stream unit-stride panels
// (and any strides of the inputs are handled there). Forgetting-gate cumsums are formed in
// double. Work items are (sequence, query head, query tile), each computed by one thread in a
// fixed order: results are bitwise identical for every executor.
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
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/softmax/mask.hpp"
#include "polyattn/softmax/modifiers.hpp"

namespace polyattn::softmax {

inline constexpr index_t kTileQ = 64;  // query rows per work item
inline constexpr index_t kTileK = 64;  // keys per inner tile (a multiple of every batch width)
inline constexpr index_t kPadV = 16;   // packed V / O rows are padded to a multiple of this

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
  std::vector<SeqRange> seqs;
  index_t Dvp = 0;                  // Dv rounded up to kPadV
  std::vector<float> kt, vp;        // packed Kᵀ tiles / padded V rows, per (sequence, kv head)
  std::vector<std::size_t> kt_off;  // [seq · HKV + hk]
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

// Packs K of (sequence s, kv head hk) as Kᵀ tiles and V as padded rows; forms the gate
// cumsums of the q heads of that kv head.
inline void pack_sequence(FlashProblem& P, index_t s, index_t hk) {
  const SeqRange& sq = P.seqs[static_cast<std::size_t>(s)];
  const SoftmaxInputs& in = *P.in;
  const index_t D = P.d.D, Dv = P.d.Dv, Dvp = P.Dvp;
  float* kt = P.kt.data() + P.kt_off[static_cast<std::size_t>(s * P.d.HKV + hk)];
  float* vp = P.vp.data() + P.vp_off[static_cast<std::size_t>(s * P.d.HKV + hk)];
  const index_t tiles = (sq.nk + kTileK - 1) / kTileK;
  for (index_t t = 0; t < tiles; ++t) {
    float* tile = kt + t * D * kTileK;
    for (index_t c = 0; c < kTileK; ++c) {
      const index_t j = t * kTileK + c;
      if (j < sq.nk) {
        for (index_t e = 0; e < D; ++e) tile[e * kTileK + c] = in.k(sq.b, sq.k0 + j, hk, e);
      } else {
        for (index_t e = 0; e < D; ++e) tile[e * kTileK + c] = 0.f;
      }
    }
  }
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

}  // namespace detail

template <simd::SimdArch A>
void FlashTileKernel::operator()(A) const {
  using B = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(B::size);
  const FlashProblem& P = *problem;
  const SoftmaxInputs& in = *P.in;
  const SoftmaxOptions& opt = *P.opt;
  const SeqRange& sq = P.seqs[static_cast<std::size_t>(task.seq)];
  const index_t h = task.head, hk = h / P.d.group;
  const index_t D = P.d.D, Dv = P.d.Dv, Dvp = P.Dvp;
  const index_t r0 = task.tile * kTileQ, r1 = std::min(r0 + kTileQ, sq.nq), M = r1 - r0;
  const index_t offset = sq.nk - sq.nq;  // key position of query row r is r + offset
  const float ninf = -std::numeric_limits<float>::infinity();

  const MaskSet mask = MaskSet::from(opt, sq.b, h, sq.q0, sq.k0);
  const bool masked = mask.masks_anything();
  ModifierSet mods;
  mods.softcap = static_cast<float>(opt.softcap);
  mods.alibi = !in.alibi_slopes.absent();
  if (mods.alibi) mods.alibi_slope = in.alibi_slopes(h);
  mods.forget = !in.g.absent();
  const bool has_sink = !in.sink.absent();
  const float sink = has_sink ? in.sink(h) : 0.f;
  const float scale = static_cast<float>(P.d.scale);

  // Scratch: Q tile, scores, O accumulator, row statistics, gate offsets.
  std::vector<float> buf(static_cast<std::size_t>(M * D + kTileQ * kTileK + kTileQ * Dvp +
                                                  3 * kTileQ + kTileK));
  float* Qb = buf.data();
  float* Sb = Qb + M * D;
  float* Ob = Sb + kTileQ * kTileK;
  float* m = Ob + kTileQ * Dvp;
  float* l = m + kTileQ;
  float* gq = l + kTileQ;
  float* gk = gq + kTileQ;
  for (index_t r = 0; r < M; ++r)
    for (index_t e = 0; e < D; ++e) Qb[r * D + e] = in.q(sq.b, sq.q0 + r0 + r, h, e);
  std::fill(Ob, Ob + M * Dvp, 0.f);
  std::fill(m, m + M, ninf);
  std::fill(l, l + M, 0.f);

  const double* G = nullptr;
  double g_ref = 0.0;
  const auto G_at = [&](index_t pos) { return pos >= 0 ? G[pos] : 0.0; };
  if (mods.forget) {
    G = P.G.data() + P.g_off[static_cast<std::size_t>(task.seq * P.d.HQ + h)];
    g_ref = G_at(std::min(r0 + offset, sq.nk - 1));
    for (index_t r = 0; r < M; ++r) gq[r] = static_cast<float>(G_at(r0 + r + offset) - g_ref);
  }

  const float* kt = P.kt.data() + P.kt_off[static_cast<std::size_t>(task.seq * P.d.HKV + hk)];
  const float* vp = P.vp.data() + P.vp_off[static_cast<std::size_t>(task.seq * P.d.HKV + hk)];
  const RowRange rows{r0, r1, offset};
  const index_t tiles = (sq.nk + kTileK - 1) / kTileK;

  for (index_t t = 0; t < tiles; ++t) {
    const index_t j0 = t * kTileK, n = std::min(kTileK, sq.nk - j0);
    const TileClass cls = masked ? mask.classify(rows, {j0, j0 + n}) : TileClass::Full;
    if (cls == TileClass::Skip) continue;

    simd::gemm<A>(M, kTileK, D, scale, Qb, D, kt + t * D * kTileK, kTileK, false, Sb, kTileK);

    if (mods.forget) {
      for (index_t c = 0; c < n; ++c) gk[c] = static_cast<float>(G[j0 + c] - g_ref);
      std::fill(gk + n, gk + kTileK, 0.f);
    }
    for (index_t r = 0; r < M; ++r) {
      float* srow = Sb + r * kTileK;
      const index_t p = r0 + r + offset;
      if (mods.any()) mods.apply<A>(srow, RowContext{p, j0, kTileK, gq[r], gk});
      if (cls == TileClass::Partial) {
        for (index_t c = 0; c < n; ++c)
          if (!mask.visible(r0 + r, p, j0 + c)) srow[c] = ninf;
      }
      std::fill(srow + n, srow + kTileK, ninf);

      // Online softmax for this row.
      B mx(ninf);
      for (index_t c = 0; c < kTileK; c += W) mx = simd::max_nan(mx, B::load_unaligned(srow + c));
      const float tile_max = simd::reduce_max(mx);
      const float m_new = std::isnan(tile_max) ? tile_max : std::max(m[r], tile_max);
      if (m_new == ninf) {  // nothing visible yet in this row
        std::fill(srow, srow + kTileK, 0.f);
        continue;
      }
      const B mb(m_new);
      B sum(0.f);
      for (index_t c = 0; c < kTileK; c += W) {
        const B e = simd::exp(B::load_unaligned(srow + c) - mb);
        e.store_unaligned(srow + c);
        sum += e;
      }
      const float alpha = m[r] == ninf ? 0.f : std::exp(m[r] - m_new);
      l[r] = l[r] * alpha + simd::reduce_add(sum);
      if (alpha != 1.f) {
        const B ab(alpha);
        float* orow = Ob + r * Dvp;
        for (index_t e = 0; e < Dvp; e += W) (B::load_unaligned(orow + e) * ab).store_unaligned(orow + e);
      }
      m[r] = m_new;
    }
    simd::gemm<A>(M, Dvp, n, 1.f, Sb, kTileK, vp + j0 * Dvp, Dvp, true, Ob, Dvp);
  }

  // o = O / l, with the sink logit in the denominator; rows that saw no key output zeros.
  for (index_t r = 0; r < M; ++r) {
    const float* orow = Ob + r * Dvp;
    float mul = 0.f;
    if (m[r] != ninf) {
      if (has_sink) {
        const float mf = std::max(m[r], sink);
        const float c = std::exp(m[r] - mf);
        mul = c / (l[r] * c + std::exp(sink - mf));
      } else {
        mul = 1.f / l[r];
      }
      if (std::isnan(m[r])) mul = m[r];
    }
    for (index_t e = 0; e < Dv; ++e) P.o(sq.b, sq.q0 + r0 + r, h, e) = orow[e] * mul;
  }
}

// Softmax attention prefill (SPEC §3): o [B, T, HQ, Dv] from q, k, v and the optional inputs
// of SoftmaxInputs (forgetting gate g, ALiBi slopes, sink logits, cu_seqlens) under the masks
// and modifiers of SoftmaxOptions. Validates everything before writing o; throws
// polyattn::Error naming the bad argument. Any strides; work runs on `exec`.
template <Executor E = Serial>
void flash_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, View4<float> o,
                     const E& exec = E{}) {
  FlashProblem P;
  P.d = validate(in, opt, o);
  P.in = &in;
  P.opt = &opt;
  P.o = o;
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
  std::size_t kt_size = 0, vp_size = 0, g_size = 0;
  for (index_t s = 0; s < nseq; ++s) {
    const index_t nk = P.seqs[static_cast<std::size_t>(s)].nk;
    for (index_t hk = 0; hk < d.HKV; ++hk) {
      P.kt_off.push_back(kt_size);
      P.vp_off.push_back(vp_size);
      kt_size += static_cast<std::size_t>(round_up(nk, kTileK) * d.D);
      vp_size += static_cast<std::size_t>(nk * P.Dvp);
    }
    for (index_t h = 0; h < d.HQ; ++h) {
      P.g_off.push_back(g_size);
      if (!in.g.absent()) g_size += static_cast<std::size_t>(nk);
    }
  }
  P.kt.resize(kt_size);
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
    simd::dispatch(FlashTileKernel{&P, tasks[static_cast<std::size_t>(i)]});
  });
}

}  // namespace polyattn::softmax

#define POLYATTN_SOFTMAX_FLASH_SIG(A) \
  void ::polyattn::softmax::FlashTileKernel::operator()<A>(A) const
POLYATTN_ARCH_UNITS_EXTERN(POLYATTN_SOFTMAX_FLASH_SIG);
