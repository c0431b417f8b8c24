// polyattn/softmax/flash.hpp — tiled ("flash") softmax attention prefill, docs/conventions.md §5.
//
//   o_i = Σ_j p_ij v_j,  p_ij = e^{s_ij − m_i} / (Σ_{j visible} e^{s_ij − m_i} [+ e^{sink − m_i}])
// computed per (sequence, query head, tile of kTileQ query rows) with an online max / sum over
// tiles of kTileK keys (online_softmax.hpp, vertical form), never forming a T×S matrix:
//   Sᵀ = scale · K_tile Q_tileᵀ                       (register-blocked GEMM, simd/gemm.hpp)
//   Sᵀ ← fusion: score modifiers; masked entries of partial tiles → −inf   (fusion.hpp)
//   m' = max(m, colmax Sᵀ);  P = e^{S − m'};  l ← l·e^{m − m'} + Σ P;  O ← e^{m − m'}·O + P V
// and at the end o = O / l (with the sink logit in the denominator when given). The scores are
// held transposed — one row per key, the tile's queries along the SIMD lanes — so the running
// max / sum, the exponentials and the causal mask are all vertical vector operations (no
// horizontal reductions), and P V reads P through strides. Tiles the mask excludes entirely
// are skipped; fully visible tiles skip the per-element mask.
// The fusion policy is a type parameter of the kernel (FlashTileKernel<F>): OptionsFusion, the
// masks and modifiers of SoftmaxOptions / SoftmaxInputs, by default (the per-ISA units' kernel);
// flash_attention(in, opt, fusion, ...) composes a user's masks / modifiers with it.
// Before the tiles run, K of each (sequence, kv head) is packed once as unit-stride rows and V
// as rows padded to a multiple of simd::kMaxBatchFloats (any input strides are handled there;
// the q tile is transposed into a local buffer). Forgetting-gate cumsums are formed in double.
// Work items are (sequence, query head, query tile), each computed by one thread in a fixed
// order: results are bitwise identical for every executor.
// Memory: o, lse and row_max must not share memory with each other or with q, k, v, g, the ALiBi
// slopes or the sink logits (no in-place use; a polyattn::Error otherwise). Thread safety: any
// number of threads may call flash_attention at once with their own outputs.
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
#include "polyattn/softmax/fusion.hpp"
#include "polyattn/softmax/mask.hpp"
#include "polyattn/softmax/modifiers.hpp"
#include "polyattn/softmax/online_softmax.hpp"

namespace polyattn::softmax {

#ifndef POLYATTN_FLASH_TQ
#define POLYATTN_FLASH_TQ 64
#define POLYATTN_FLASH_TK 64
#endif
inline constexpr index_t kTileQ = POLYATTN_FLASH_TQ;  // query rows per work item
// Keys per inner tile (a multiple of every batch width).
inline constexpr index_t kTileK = POLYATTN_FLASH_TK;
// Packed V / O rows are padded to a multiple of this (whole batches of every ISA).
inline constexpr index_t kPadV = simd::kMaxBatchFloats;
static_assert(kTileQ % simd::kMaxBatchFloats == 0 && kTileK % simd::kMaxBatchFloats == 0,
              "tiles must hold whole batches of every ISA");

constexpr index_t round_up(index_t x, index_t m) noexcept {
  return (x + m - 1) / m * m;
}

// One sequence of the call: queries [q0, q0 + nq) and keys [k0, k0 + nk) of batch row b.
struct SeqRange {
  index_t b, q0, nq, k0, nk;
};

/// Outputs of flash_attention: o is required, lse and row_max are optional (absent views).
struct FlashOutputs {
  View4<float> o;        // [B, T, HQ, Dv]; a query that sees no key gets zeros
  View3<float> lse;      // [B, T, HQ]: log(Σ_{j visible} e^{s_ij} [+ e^{sink}]), −inf if none
  View3<float> row_max;  // [B, T, HQ]: max_{j visible} s_ij of the scores the kernel used (after
                         // the modifiers; the sink logit not included), −inf if none
};

// Everything the per-tile kernel reads, prepared by flash_attention().
struct FlashProblem {
  SoftmaxDims d;
  const SoftmaxInputs* in = nullptr;
  const SoftmaxOptions* opt = nullptr;
  View4<float> o;
  View3<float> lse;      // optional [B, T, HQ]
  View3<float> row_max;  // optional [B, T, HQ]
  std::vector<SeqRange> seqs;
  index_t Dvp = 0;                  // Dv rounded up to kPadV
  std::vector<float> kp, vp;        // packed K rows [nk][D] / padded V rows [nk][Dvp]
  std::vector<std::size_t> kp_off;  // per (sequence, kv head): [seq · HKV + hk]
  std::vector<std::size_t> vp_off;
  std::vector<double> G;           // forgetting gate cumsum per (sequence, q head, key)
  std::vector<std::size_t> g_off;  // [seq · HQ + h]
};

struct FlashTask {
  index_t seq, head, tile;
};

// The SIMD body for one work item under fusion F (defined below; the per-ISA units instantiate
// it for OptionsFusion, a user's unit for their own F).
template <SoftmaxFusion F>
struct FlashTileKernel {
  const FlashProblem* problem;
  const F* fusion;  // lives for the call
  FlashTask task;
  template <simd::SimdArch A>
  void operator()(A) const;
};

/// The kernel flash_attention(in, opt, f, ...) runs for a user's fusion F: name it in a kernel
/// list of your own to compile it into per-ISA units (examples/custom_mask.cpp).
template <SoftmaxFusion F>
using FlashKernelFor = FlashTileKernel<with_options_t<F>>;

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

template <SoftmaxFusion F>
template <simd::SimdArch A>
void FlashTileKernel<F>::operator()(A) const {
  using B = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(B::size);
  constexpr index_t TQ = kTileQ, TK = kTileK;
  const FlashProblem& P = *problem;
  const SoftmaxInputs& in = *P.in;
  const SeqRange& sq = P.seqs[static_cast<std::size_t>(task.seq)];
  const index_t h = task.head, hk = h / P.d.group;
  const index_t D = P.d.D, Dv = P.d.Dv, Dvp = P.Dvp;
  const index_t r0 = task.tile * TQ, r1 = std::min(r0 + TQ, sq.nq), M = r1 - r0;
  const index_t offset = sq.nk - sq.nq;  // key position of query row r is r + offset
  const index_t p0 = r0 + offset;        // ... of the tile's first row
  const float ninf = -std::numeric_limits<float>::infinity();

  // The fusion's masks and modifiers for this (sequence, head).
  const auto fz =
      hook_bind<A>(*fusion, HeadContext{sq.b, task.seq, h, hk, sq.q0, sq.k0, sq.nq, sq.nk});
  const bool gated = !in.g.absent();  // forgetting gate: KeyContext carries G_p − G_j
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
  if (gated) {
    G = P.G.data() + P.g_off[static_cast<std::size_t>(task.seq * P.d.HQ + h)];
    g_ref = G_at(std::min(p0, sq.nk - 1));
    for (index_t r = 0; r < TQ; ++r) gq[r] = r < M ? static_cast<float>(G_at(p0 + r) - g_ref) : 0.f;
  }

  const float* kp = P.kp.data() + P.kp_off[static_cast<std::size_t>(task.seq * P.d.HKV + hk)];
  const float* vp = P.vp.data() + P.vp_off[static_cast<std::size_t>(task.seq * P.d.HKV + hk)];
  const RowRange rows{r0, r1, offset};
  const index_t tiles = (sq.nk + TK - 1) / TK;

  for (index_t t = 0; t < tiles; ++t) {
    const index_t j0 = t * TK, n = std::min(TK, sq.nk - j0);
    const TileClass cls = hook_classify<A>(fz, rows, {j0, j0 + n});
    if (cls == TileClass::Skip) continue;

    // Sᵀ = scale · K_tile Q_tileᵀ: one row per key, the tile's queries along the lanes.
    simd::gemm<A>(n, TQ, D, static_cast<float>(P.d.scale), kp + j0 * D, D, Qt, TQ, false, St, TQ);

    B mx[TQ / W];
    POLYATTN_UNROLL
    for (index_t v = 0; v < TQ / W; ++v) mx[v] = B(ninf);
    for (index_t c = 0; c < n; ++c) {
      float* srow = St + c * TQ;
      const index_t j = j0 + c;
      if (hook_modifies<A>(fz)) {
        const float gk = gated ? static_cast<float>(G[j] - g_ref) : 0.f;
        fz.template apply_keys<A>(srow, KeyContext{j, p0, TQ, gk, gq});
      }
      if (cls == TileClass::CausalPartial) {  // queries r with p0 + r < j do not see key j
        std::fill(srow, srow + std::clamp<index_t>(j - p0, 0, TQ), ninf);
      } else if (cls == TileClass::Partial) {
        for (index_t r = 0; r < M; ++r)
          if (!hook_visible<A>(fz, r0 + r, p0 + r, j)) srow[r] = ninf;
      }
      POLYATTN_UNROLL
      for (index_t v = 0; v < TQ / W; ++v) {
        mx[v] = simd::max_nan(mx[v], B::load_unaligned(srow + v * W));
      }
    }

    // Online softmax, vertically: every lane is one query. Lanes that have seen nothing yet
    // keep m = −inf and shift by 0, so that e^{−inf − 0} = 0.
    B mu[TQ / W], sum[TQ / W];
    POLYATTN_UNROLL
    for (index_t v = 0; v < TQ / W; ++v) {
      const RowAdvance<B> st = online::advance(B::load_unaligned(m + v * W), mx[v]);
      mu[v] = st.shift;
      st.alpha.store_unaligned(al + v * W);
      st.m.store_unaligned(m + v * W);
      sum[v] = B(0.f);
    }
    for (index_t c = 0; c < n; ++c) {
      float* srow = St + c * TQ;
      POLYATTN_UNROLL
      for (index_t v = 0; v < TQ / W; ++v) {
        const B e = simd::exp(B::load_unaligned(srow + v * W) - mu[v]);
        e.store_unaligned(srow + v * W);
        sum[v] += e;
      }
    }
    POLYATTN_UNROLL
    for (index_t v = 0; v < TQ / W; ++v) {
      online::accumulate(B::load_unaligned(l + v * W), B::load_unaligned(al + v * W), sum[v])
          .store_unaligned(l + v * W);
    }
    for (index_t r = 0; r < M; ++r) {
      if (al[r] == 1.f) continue;
      const B ab(al[r]);
      float* orow = Ob + r * Dvp;
      for (index_t e = 0; e < Dvp; e += W)
        (B::load_unaligned(orow + e) * ab).store_unaligned(orow + e);
    }
    // O += P V with P = (Sᵀ)ᵀ read through strides. In a partial tile a masked key has weight 0,
    // and 0 · NaN = NaN: when the tile's V holds a non-finite value, rows add only the keys
    // they see (as the reference does), so a NaN or Inf never leaks past the mask.
    const float* vt = vp + j0 * Dvp;
    if (is_partial(cls) && !detail::all_finite<A>(vt, n * Dvp)) {
      for (index_t r = 0; r < M; ++r)
        for (index_t c = 0; c < n; ++c)
          if (hook_visible<A>(fz, r0 + r, p0 + r, j0 + c))
            simd::axpy<A>(St[c * TQ + r], vt + c * Dvp, Ob + r * Dvp, Dvp);
    } else {
      simd::gemm_strided<A>(M, Dvp, n, 1.f, St, 1, TQ, vt, Dvp, true, Ob, Dvp);
    }
  }

  // o = O / l, with the sink logit in the denominator; rows that saw no key output zeros.
  for (index_t r = 0; r < M; ++r) {
    const index_t row = sq.q0 + r0 + r;
    if (!P.row_max.absent()) P.row_max(sq.b, row, h) = m[r];
    if (m[r] == ninf) {  // exact zeros, whatever O picked up from non-finite values
      for (index_t e = 0; e < Dv; ++e) P.o(sq.b, row, h, e) = 0.f;
      if (!P.lse.absent()) P.lse(sq.b, row, h) = ninf;
      continue;
    }
    const RowStats<float> st{m[r], l[r]};
    const RowResult<float> res = has_sink ? online::finish(st, sink) : online::finish(st);
    const float* orow = Ob + r * Dvp;
    for (index_t e = 0; e < Dv; ++e) P.o(sq.b, row, h, e) = orow[e] * res.mul;
    if (!P.lse.absent()) P.lse(sq.b, row, h) = res.lse;
  }
}

namespace detail {

// flash_attention under the effective fusion Fz (the options' set, possibly composed).
template <SoftmaxFusion Fz, Executor E>
void run_flash(const SoftmaxInputs& in, const SoftmaxOptions& opt, const Fz& fusion,
               const FlashOutputs& out, const E& exec) {
  FlashProblem P;
  P.d = validate(in, opt, out.o);
  check::well_formed("lse", out.lse);  // rejects null data with a non-empty shape
  if (!out.lse.absent())
    check::shape_is("lse", out.lse, {P.d.B, P.d.T, P.d.HQ}, "[B, T, HQ] from q");
  check::well_formed("row_max", out.row_max);
  if (!out.row_max.absent())
    check::shape_is("row_max", out.row_max, {P.d.B, P.d.T, P.d.HQ}, "[B, T, HQ] from q");
  softmax_writes_disjoint(in, {memory::region("o", out.o), memory::region("lse", out.lse),
                               memory::region("row_max", out.row_max)});
  check_fusion(fusion, P.d);  // a user's own checks, still before anything is written
  P.in = &in;
  P.opt = &opt;
  P.o = out.o;
  P.lse = out.lse;
  P.row_max = out.row_max;
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
                    [&](index_t item) { pack_sequence(P, item / d.HKV, item % d.HKV); });

  // Work items, the most expensive first under a causal mask (later query tiles see more keys).
  std::vector<FlashTask> tasks;
  for (index_t s = 0; s < nseq; ++s) {
    const index_t nq = P.seqs[static_cast<std::size_t>(s)].nq;
    const index_t qtiles = (nq + kTileQ - 1) / kTileQ;
    for (index_t t = 0; t < qtiles; ++t)
      for (index_t h = 0; h < d.HQ; ++h) tasks.push_back({s, h, opt.causal ? qtiles - 1 - t : t});
  }
  if (opt.causal)
    std::stable_sort(tasks.begin(), tasks.end(), [&](const FlashTask& a, const FlashTask& b) {
      const auto& sa = P.seqs[static_cast<std::size_t>(a.seq)];
      const auto& sb = P.seqs[static_cast<std::size_t>(b.seq)];
      return a.tile * kTileQ + sa.nk - sa.nq > b.tile * kTileQ + sb.nk - sb.nq;
    });
  exec.parallel_for(static_cast<index_t>(tasks.size()), [&](index_t i) {
    simd::run_kernel(FlashTileKernel<Fz>{&P, &fusion, tasks[static_cast<std::size_t>(i)]});
  });
}

}  // namespace detail

/// Softmax attention prefill (docs/conventions.md §5): o [B, T, HQ, Dv] from q, k, v and the
/// optional inputs of SoftmaxInputs (forgetting gate g, ALiBi slopes, sink logits, cu_seqlens)
/// under the masks and modifiers of SoftmaxOptions. Any strides; work runs on `exec` (bits do not
/// depend on it). The optional outputs (FlashOutputs):
///   lse [B, T, HQ] = log(Σ_{j visible} e^{s_ij} [+ e^{sink}]) (−inf for a query that sees no
///       key), so that outputs over disjoint key sets can be merged exactly (hybrids, splits);
///   row_max [B, T, HQ] = max_{j visible} s_ij, the running max the kernel ended with (−inf for
///       a query that sees no key; the sink logit is not included), e.g. for LoLCATs.
/// @param in   q [B,T,HQ,D], k [B,S,HKV,D], v [B,S,HKV,Dv] and the optional tensors
/// @param opt  scale, causal, window, sink_tokens, softcap, block_mask
/// @param out  o [B,T,HQ,Dv] (a query that sees no key gets zeros), optional lse and row_max
/// @throws polyattn::Error naming the bad argument, before anything is written
template <Executor E = Serial>
void flash_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, const FlashOutputs& out,
                     const E& exec = E{}) {
  detail::run_flash(in, opt, OptionsFusion{&opt, &in}, out, exec);
}

/// flash_attention with the output o and the log-sum-exp lse [B, T, HQ] (see above).
template <Executor E = Serial>
void flash_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, View4<float> o,
                     View3<float> lse, const E& exec = E{}) {
  flash_attention(in, opt, FlashOutputs{o, lse, {}}, exec);
}

/// flash_attention with the output o only (see above).
template <Executor E = Serial>
void flash_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, View4<float> o,
                     const E& exec = E{}) {
  flash_attention(in, opt, FlashOutputs{o, {}, {}}, exec);
}

/// Softmax attention prefill with a user's fusion (fusion.hpp) composed with the options' set:
/// key j is visible to query i when the options' masks AND the fusion's masks allow it; the
/// scores get the options' modifiers (softcap, ALiBi, forgetting bias), then the fusion's.
/// Build the fusion with softmax::with_mask(m), with_modifier(s) or fuse(m, s) from a
/// MaskPolicy / ScoreModifier of your own (or one whose bind(HeadContext) returns one). Its
/// kernel, FlashKernelFor<F>, runs with the ISAs of the calling translation unit's flags unless
/// a kernel list of yours compiles it into per-ISA units (examples/custom_mask.cpp).
/// @throws polyattn::Error naming the bad argument (the fusion's own check(dims), when it has
///         one, included), before anything is written
template <SoftmaxFusion F, Executor E = Serial>
void flash_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, const F& fusion,
                     const FlashOutputs& out, const E& exec = E{}) {
  detail::run_flash(in, opt, with_options(opt, in, fusion), out, exec);
}

/// flash_attention with a user's fusion, the output o and the log-sum-exp lse (see above).
template <SoftmaxFusion F, Executor E = Serial>
void flash_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, const F& fusion,
                     View4<float> o, View3<float> lse, const E& exec = E{}) {
  flash_attention(in, opt, fusion, FlashOutputs{o, lse, {}}, exec);
}

/// flash_attention with a user's fusion and the output o only (see above).
template <SoftmaxFusion F, Executor E = Serial>
void flash_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, const F& fusion,
                     View4<float> o, const E& exec = E{}) {
  flash_attention(in, opt, fusion, FlashOutputs{o, {}, {}}, exec);
}

}  // namespace polyattn::softmax

// The kernels of the per-ISA units: the default fusion.
#define POLYATTN_SOFTMAX_FLASH_KERNELS(X) \
  X(::polyattn::softmax::FlashTileKernel<::polyattn::softmax::OptionsFusion>)
POLYATTN_SOFTMAX_FLASH_KERNELS(POLYATTN_KERNEL_EXTERN)
