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
// are skipped; fully visible tiles skip the per-element mask, and in the causal diagonal tiles
// both products leave out what the mask hides from whole row blocks (the batches of queries all
// keys of a block are hidden from; the keys past the last one a block of queries sees).
// The fusion policy is a type parameter of the kernel (FlashTileKernel<F>): OptionsFusion, the
// masks and modifiers of SoftmaxOptions / SoftmaxInputs, by default (the per-ISA units' kernel);
// flash_attention(in, opt, fusion, ...) composes a user's masks / modifiers with it.
// Before the tiles run, K of each (sequence, kv head) is packed once as unit-stride fp32 rows
// and V as fp32 rows padded to a multiple of simd::kMaxBatchFloats (any input strides and element
// types are handled there; the q tile is widened and transposed into a local buffer), into
// workspace memory (core/workspace.hpp) that the next call takes over, its pages faulted in. q, k,
// v and o may each be fp32, bf16 or fp16 (ElementView, docs/conventions.md §9.7): every product and
// the softmax run in fp32, and each o row is rounded once, after its normalisation. With bf16 q, k,
// v at the amx level the work items run flash_amx.hpp's body instead (AMX-BF16 tiles, bf16 weights,
// a lazily raised reference max). Forgetting-gate
// cumsums are formed in double. Work items are (sequence, query head, query tile), each computed by
// one thread in a fixed order: results are bitwise identical for every executor. Memory: o, lse and
// row_max must not share memory with each other or with q, k, v, g, the ALiBi slopes or the sink
// logits (no in-place use; a polyattn::Error otherwise). Thread safety: any number of threads may
// call flash_attention at once with their own outputs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/buffer.hpp"
#include "polyattn/core/element_view.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/simd/amx.hpp"
#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/convert.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/simd/gemm.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/core/simd/scratch.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"
#include "polyattn/softmax/flash_amx.hpp"
#include "polyattn/softmax/flash_problem.hpp"
#include "polyattn/softmax/fusion.hpp"
#include "polyattn/softmax/mask.hpp"
#include "polyattn/softmax/modifiers.hpp"
#include "polyattn/softmax/online_softmax.hpp"

namespace polyattn::softmax {

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

// Packs K of (sequence seq, kv head hk) as unit-stride fp32 rows and V as padded fp32 rows
// (bf16 / fp16 widened here, once per element), and forms the forgetting-gate cumsums of the q
// heads of that kv head. A per-ISA kernel, so the conversion runs with the unit's instructions.
struct FlashPackKernel {
  FlashProblem* problem;
  index_t seq, hk;
  template <simd::SimdArch A>
  void operator()(A) const;
};

namespace detail {

// dst[0, n) = row n elements of a typed view starting at p with element stride st, as float.
template <simd::SimdArch A, class T>
void widen_row(const T* p, index_t st, float* dst, index_t n) noexcept {
  if (st == 1) {
    simd::convert<A>(p, dst, n);
  } else {
    for (index_t e = 0; e < n; ++e) dst[e] = to_float(p[e * st]);
  }
}

// The n floats of src, rounded to T, into a typed view's row at p with element stride st.
template <simd::SimdArch A, class T>
void narrow_row(const float* src, T* p, index_t st, index_t n) noexcept {
  if (st == 1) {
    simd::convert<A>(src, p, n);
  } else {
    for (index_t e = 0; e < n; ++e) p[e * st] = from_float<T>(src[e]);
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

// Helpers of the kernels without an Arch parameter: per-ISA namespace (core/simd/arch.hpp).
inline namespace POLYATTN_ISA_NS {
namespace impl {

// The forgetting-gate cumsums (double) of the q heads of kv head hk, for one sequence.
inline void gate_cumsums(FlashProblem& P, const SeqRange& sq, index_t seq, index_t hk) noexcept {
  const SoftmaxInputs& in = *P.in;
  if (in.g.absent()) return;
  for (index_t h = hk * P.d.group; h < (hk + 1) * P.d.group; ++h) {
    double* G = P.G.data() + P.g_off[static_cast<std::size_t>(seq * P.d.HQ + h)];
    double run = 0.0;
    for (index_t j = 0; j < sq.nk; ++j) {
      run += static_cast<double>(in.g(sq.b, sq.k0 + j, h));
      G[j] = run;
    }
  }
}

}  // namespace impl
}  // namespace POLYATTN_ISA_NS

template <simd::SimdArch A>
void FlashPackKernel::operator()(A) const {
  FlashProblem& P = *problem;
  const SeqRange& sq = P.seqs[static_cast<std::size_t>(seq)];
  const SoftmaxInputs& in = *P.in;
  const index_t D = P.d.D, Dv = P.d.Dv, Dvp = P.Dvp;
  if constexpr (std::is_same_v<A, simd::avx512>) {
    if (P.path != FlashPath::fp32) {
      impl::pack_amx_operands(P, sq, seq, hk);
      impl::gate_cumsums(P, sq, seq, hk);
      return;
    }
  }
  float* kp = P.kp.data() + P.kp_off[static_cast<std::size_t>(seq * P.d.HKV + hk)];
  float* vp = P.vp.data() + P.vp_off[static_cast<std::size_t>(seq * P.d.HKV + hk)];
  in.k.visit([&](auto k) {
    for (index_t j = 0; j < sq.nk; ++j)
      detail::widen_row<A>(k.ptr(sq.b, sq.k0 + j, hk, 0), k.stride(3), kp + j * D, D);
  });
  in.v.visit([&](auto v) {
    for (index_t j = 0; j < sq.nk; ++j) {
      float* row = vp + j * Dvp;
      detail::widen_row<A>(v.ptr(sq.b, sq.k0 + j, hk, 0), v.stride(3), row, Dv);
      std::fill(row + Dv, row + Dvp, 0.f);
    }
  });
  impl::gate_cumsums(P, sq, seq, hk);
}

template <SoftmaxFusion F>
template <simd::SimdArch A>
void FlashTileKernel<F>::operator()(A) const {
  using B = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(B::size);
  constexpr index_t TQ = kTileQ, TK = kTileK;
  // Rows per product call in the diagonal tiles: two micro-blocks of the GEMM (core/simd/gemm.hpp).
  constexpr index_t RC = 2 * simd::micro_rows<A>(simd::panel_vectors<A>);
  const FlashProblem& P = *problem;
  const SoftmaxInputs& in = *P.in;
  const SeqRange& sq = P.seqs[static_cast<std::size_t>(task.seq)];
  const index_t h = task.head, hk = h / P.d.group;
  const index_t D = P.d.D, Dv = P.d.Dv, Dvp = P.Dvp;
  const index_t r0 = task.tile * P.tq, r1 = std::min(r0 + P.tq, sq.nq), M = r1 - r0;
  const index_t offset = sq.nk - sq.nq;  // key position of query row r is r + offset
  const index_t p0 = r0 + offset;        // ... of the tile's first row
  const float ninf = -std::numeric_limits<float>::infinity();

  // The fusion's masks and modifiers for this (sequence, head).
  const auto fz =
      hook_bind<A>(*fusion, HeadContext{sq.b, task.seq, h, hk, sq.q0, sq.k0, sq.nq, sq.nk});
  const bool gated = !in.g.absent();  // forgetting gate: KeyContext carries G_p − G_j
  const bool has_sink = !in.sink.absent();
  const float sink = has_sink ? in.sink(h) : 0.f;

  // The path of the call (FlashProblem): bf16 products only in the avx512 instantiation.
  constexpr bool avx512_tag = std::is_same_v<A, simd::avx512>;
  const FlashPath path = avx512_tag ? P.path : FlashPath::fp32;
  const bool amx = path == FlashPath::amx;

  // Scratch from a 64-byte boundary (lanes past M are padding queries with zero q: finite
  // scores, never written out), written before it is read. The amx path (flash_amx.hpp) keeps O
  // transposed, Ot [Dvt][tq], and packs its own operands; the fp32 path holds q transposed and
  // the scores here.
  const index_t tq = P.tq;  // kTileQ, or kAmxTileQ on the amx path
  constexpr index_t R = std::max(kTileQ, kAmxTileQ);
  const index_t Osize = amx ? P.Dvt * tq : TQ * Dvp;
  const index_t QSsize = amx ? 16 * P.Dvt : D * TQ + TK * TQ;
  const simd::Scratch<float> buf(
      static_cast<std::size_t>(QSsize + Osize + 5 * R + std::max(D, Dvp) + 16),
      simd::uninitialized);
  float* Ob = simd::align64(buf.data());  // [TQ][Dvp] unnormalised output (amx: Ot [Dvt][tq])
  float* m = Ob + Osize;                  // running max per query (amx: the reference max)
  float* mt = m + R;                      // amx: the true running max (row_max)
  float* l = mt + R;                      // running sum
  float* al = l + R;                      // this tile's rescale factor e^{m_old − m_new}
  float* gq = al + R;                     // forgetting bias: G_p − G_ref
  float* row = gq + R;                    // one q row (widened) or o row (before rounding)
  float* Qt = row + std::max(D, Dvp);     // fp32: [D][TQ] q of the tile, transposed
  float* St = Qt + D * TQ;                // fp32: [TK][TQ] scores, then probabilities, transposed
  float* Orows = Qt;                      // amx: [16][Dvt] 16 rows of Ot read back as o rows
  // The tile's q rows are usually in no cache (one work item reads them, once, each a page of
  // its own): every line is requested before the scratch is initialised, so that the misses
  // overlap with that and with each other instead of stalling the transposition row by row.
  in.q.visit([&](auto q) {
    using Tq = std::remove_cvref_t<decltype(*q.ptr(0, 0, 0, 0))>;
    const index_t row_bytes = ((D - 1) * q.stride(3) + 1) * static_cast<index_t>(sizeof(Tq));
    for (index_t r = 0; r < M; ++r) simd::prefetch<A>(q.ptr(sq.b, sq.q0 + r0 + r, h, 0), row_bytes);
  });
  std::fill(Ob, Ob + Osize, 0.f);
  std::fill(m, m + tq, ninf);
  std::fill(mt, mt + tq, ninf);
  std::fill(l, l + tq, 0.f);

  const double* G = nullptr;
  double g_ref = 0.0;
  const auto G_at = [&](index_t pos) { return pos >= 0 ? G[pos] : 0.0; };
  if (gated) {
    G = P.G.data() + P.g_off[static_cast<std::size_t>(task.seq * P.d.HQ + h)];
    g_ref = G_at(std::min(p0, sq.nk - 1));
    for (index_t r = 0; r < tq; ++r) gq[r] = r < M ? static_cast<float>(G_at(p0 + r) - g_ref) : 0.f;
  }
  const RowRange rows{r0, r1, offset};

#if POLYATTN_HAVE_AMX
  if constexpr (avx512_tag) {
    if (amx)
      impl::flash_amx_tiles<A>(
          impl::AmxFrame{&P, &sq, task.seq, h, hk, rows, M, p0, G, g_ref, gq, Ob, m, mt, l}, fz);
  }
#endif
  if (!amx) {
    if (M < TQ) std::fill(Qt, Qt + D * TQ, 0.f);
    in.q.visit([&](auto q) {  // rows read in order (q rows are HQ·D elements apart)
      for (index_t r = 0; r < M; ++r) {
        detail::widen_row<A>(q.ptr(sq.b, sq.q0 + r0 + r, h, 0), q.stride(3), row, D);
        for (index_t e = 0; e < D; ++e) Qt[e * TQ + r] = row[e];
      }
    });
    const std::size_t item = static_cast<std::size_t>(task.seq * P.d.HKV + hk);
    const float* kp = P.kp.data() + P.kp_off[item];
    const float* vp = P.vp.data() + P.vp_off[item];
    const index_t tiles = (sq.nk + TK - 1) / TK;
    const bool modifies = hook_modifies<A>(fz);

    for (index_t t = 0; t < tiles; ++t) {
      const index_t j0 = t * TK, n = std::min(TK, sq.nk - j0);
      const TileClass cls = hook_classify<A>(fz, rows, {j0, j0 + n});
      if (cls == TileClass::Skip) continue;

      // Sᵀ = scale · K_tile Q_tileᵀ: one row per key, the tile's queries along the lanes. In a
      // causal diagonal tile, each chunk of RC keys skips the whole batches of queries that all
      // its keys are hidden from (hook_key_row overwrites those lanes with −inf below).
      const bool diagonal = cls == TileClass::CausalPartial;
      if (diagonal && !modifies) {
        for (index_t c0 = 0; c0 < n; c0 += RC) {
          const index_t hidden = std::clamp<index_t>(c0 + j0 - p0, 0, TQ) / W * W;
          simd::gemm<A>(std::min(RC, n - c0), TQ - hidden, D, static_cast<float>(P.d.scale),
                        kp + (j0 + c0) * D, D, Qt + hidden, TQ, false, St + c0 * TQ + hidden, TQ);
        }
      } else {
        simd::gemm<A>(n, TQ, D, static_cast<float>(P.d.scale), kp + j0 * D, D, Qt, TQ, false, St,
                      TQ);
      }

      // The modifiers and the mask first, key row by key row, then the max in a loop of its own
      // (with the hook's call inside, the running maxima were spilled around every row); a full
      // tile without modifiers has nothing to apply.
      if (modifies || is_partial(cls)) {
        for (index_t c = 0; c < n; ++c) {
          const index_t j = j0 + c;
          const float gk = gated ? static_cast<float>(G[j] - g_ref) : 0.f;
          hook_key_row<A>(fz, modifies, cls, St + c * TQ, KeyContext{j, p0, TQ, gk, gq}, r0, M);
        }
      }
      B mx[TQ / W];
      POLYATTN_UNROLL
      for (index_t v = 0; v < TQ / W; ++v) mx[v] = B(ninf);
      for (index_t c = 0; c < n; ++c) {
        const float* srow = St + c * TQ;
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
      } else if (diagonal) {  // rows [i, i + RC) see keys c < i + RC + p0 − j0 only (P = 0 past)
        for (index_t i = 0; i < M; i += RC) {
          const index_t rows_i = std::min(RC, M - i);
          const index_t kd = std::clamp<index_t>(i + rows_i + p0 - j0, 0, n);
          if (kd > 0)
            simd::gemm_strided<A>(rows_i, Dvp, kd, 1.f, St + i, 1, TQ, vt, Dvp, true, Ob + i * Dvp,
                                  Dvp);
        }
      } else {
        simd::gemm_strided<A>(M, Dvp, n, 1.f, St, 1, TQ, vt, Dvp, true, Ob, Dvp);
      }
    }
  }

  // o = O / l, with the sink logit in the denominator; rows that saw no key output zeros.
  // Each row is finished in fp32, then rounded once to o's element type. lse and row_max are
  // written through their strides here: TensorView's accessor, where a unit built with little
  // optimisation leaves it out of line, would be one symbol for every ISA (dispatch.hpp).
  const auto stat = [&](const View3<float>& x, index_t t) -> float& {
    return x.data()[sq.b * x.stride(0) + t * x.stride(1) + h * x.stride(2)];
  };
  P.o.visit([&](auto o) {
    // The o rows, like the q rows, are in no cache: all requested (for writing) first.
    using To = std::remove_cvref_t<decltype(*o.ptr(0, 0, 0, 0))>;
    const index_t row_bytes = ((Dv - 1) * o.stride(3) + 1) * static_cast<index_t>(sizeof(To));
    for (index_t r = 0; r < M; ++r)
      simd::prefetch<A, true>(o.ptr(sq.b, sq.q0 + r0 + r, h, 0), row_bytes);
    for (index_t r = 0; r < M; ++r) {
      const index_t t = sq.q0 + r0 + r;
#if POLYATTN_HAVE_AMX
      if constexpr (avx512_tag)  // Ot's columns r .. r + 15 as rows, 16 × 16 blocks at a time
        if (amx && r % 16 == 0) impl::amx_output_rows(Ob + r, tq, P.Dvt, Orows);
#endif
      if (!P.row_max.absent()) stat(P.row_max, t) = amx ? mt[r] : m[r];
      if (m[r] == ninf) {  // exact zeros, whatever O picked up from non-finite values
        std::fill(row, row + Dv, 0.f);
        if (!P.lse.absent()) stat(P.lse, t) = ninf;
      } else {
        const RowStats<float> st{m[r], l[r]};
        const RowResult<float> res = has_sink ? online::finish(st, sink) : online::finish(st);
        const float* orow = amx ? Orows + r % 16 * P.Dvt : Ob + r * Dvp;
        for (index_t e = 0; e < Dv; ++e) row[e] = orow[e] * res.mul;
        if (!P.lse.absent()) stat(P.lse, t) = res.lse;
      }
      detail::narrow_row<A>(row, o.ptr(sq.b, t, h, 0), o.stride(3), Dv);
    }
  });
}

namespace detail {

// The path flash_attention takes: amx when q, k, v are all bf16, the level reached (simd::
// runtime_isa(); POLYATTN_ISA caps it) and both kernels run their avx512 bodies; else fp32.
template <SoftmaxFusion Fz>
FlashPath flash_path(const SoftmaxInputs& in) noexcept {
  if constexpr (!POLYATTN_FLASH_AMX) {
    return FlashPath::fp32;
  } else {
    const bool amx = in.q.is<bf16>() && in.k.is<bf16>() && in.v.is<bf16>() &&
                     simd::isa_at_least(simd::runtime_isa(), simd::Isa::amx) &&
                     simd::kernel_isa<FlashTileKernel<Fz>>() == simd::Isa::avx512 &&
                     simd::kernel_isa<FlashPackKernel>() == simd::Isa::avx512;
    return amx ? FlashPath::amx : FlashPath::fp32;
  }
}

// flash_attention under the effective fusion Fz (the options' set, possibly composed).
template <SoftmaxFusion Fz, Executor E>
void run_flash(const SoftmaxInputs& in, const SoftmaxOptions& opt, const Fz& fusion,
               const FlashOutputs& out, const E& exec) {
  FlashProblem P;
  P.d = validate(in, opt, out.o);
  check::optional_shape("lse", out.lse, {P.d.B, P.d.T, P.d.HQ}, "[B, T, HQ] from q");
  check::optional_shape("row_max", out.row_max, {P.d.B, P.d.T, P.d.HQ}, "[B, T, HQ] from q");
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
  P.path = flash_path<Fz>(in);
  const bool amx = P.path == FlashPath::amx;
  P.Dk2 = round_up(d.D, 32);
  P.Dvt = round_up(d.Dv, 32);
  const index_t nseq = static_cast<index_t>(P.seqs.size());
  std::size_t kp_size = 0, vp_size = 0, g_size = 0, vf_size = 0;
  for (index_t s = 0; s < nseq; ++s) {
    const index_t nk = P.seqs[static_cast<std::size_t>(s)].nk;
    for (index_t hk = 0; hk < d.HKV; ++hk) {
      P.kp_off.push_back(kp_size);
      P.vp_off.push_back(vp_size);
      P.vf_off.push_back(vf_size);
      if (amx) {  // keys up to a multiple of 32 (flash_amx.hpp): whole cache lines per item
        kp_size += static_cast<std::size_t>(round_up(nk, 32) * (P.Dk2 / 2));
        vp_size += static_cast<std::size_t>(round_up(nk, 32) * P.Dvt);
        vf_size += static_cast<std::size_t>((nk + kTileK - 1) / kTileK);
      } else {
        kp_size += static_cast<std::size_t>(nk * d.D);
        vp_size += static_cast<std::size_t>(nk * P.Dvp);
      }
    }
    for (index_t h = 0; h < d.HQ; ++h) {
      P.g_off.push_back(g_size);
      if (!in.g.absent()) g_size += static_cast<std::size_t>(nk);
    }
  }
  if (amx) {  // item blocks are whole cache lines, from Buffer's 64-byte aligned bases
    P.kw.allocate(kp_size);
    P.vt.allocate(vp_size);
    P.v_finite.resize(vf_size);
  } else {
    P.kp.allocate(kp_size);
    P.vp.allocate(vp_size);
  }
  P.G.resize(g_size);
  exec.parallel_for(nseq * d.HKV, [&](index_t item) {
    simd::run_kernel(FlashPackKernel{&P, item / d.HKV, item % d.HKV});
  });

  // Work items: (sequence, query head, tile of P.tq query rows). Consecutive items share K and V
  // (the tiles of one kv head, then its next q head), so that one thread finds them in its cache
  // and concurrent threads in the shared one; under a causal mask each kv head's later query
  // tiles, which see more keys, come first, and the sequences go longest first, so that the
  // items left at the end are short ones.
  P.tq = amx ? kAmxTileQ : kTileQ;
  std::vector<index_t> order(static_cast<std::size_t>(nseq));
  for (index_t s = 0; s < nseq; ++s) order[static_cast<std::size_t>(s)] = s;
  std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) {
    return P.seqs[static_cast<std::size_t>(a)].nk > P.seqs[static_cast<std::size_t>(b)].nk;
  });
  std::vector<FlashTask> tasks;
  for (const index_t s : order) {
    const index_t qtiles = (P.seqs[static_cast<std::size_t>(s)].nq + P.tq - 1) / P.tq;
    for (index_t hk = 0; hk < d.HKV; ++hk)
      for (index_t t = 0; t < qtiles; ++t)
        for (index_t h = hk * d.group; h < (hk + 1) * d.group; ++h)
          tasks.push_back({s, h, opt.causal ? qtiles - 1 - t : t});
  }
  exec.parallel_for(static_cast<index_t>(tasks.size()), [&](index_t i) {
    simd::run_kernel(FlashTileKernel<Fz>{&P, &fusion, tasks[static_cast<std::size_t>(i)]});
  });
}

}  // namespace detail

/// Whether flash_attention(in, opt, o) (the options' fusion) computes its products with AMX-BF16
/// tiles: q, k, v all bf16 and simd::runtime_isa() reaching amx. Scores are then exact products
/// of the bf16 inputs accumulated in fp32, but the softmax weights are rounded to bf16 before
/// P·V (relative error ≤ 2⁻⁹ per weight), so an fp32 output carries bf16-level error
/// (docs/conventions.md §9.7). POLYATTN_ISA=avx512bf16 or lower keeps the fp32 products (on
/// AVX512-BF16 without AMX too: vdpbf16ps runs at half the fp32 FMA rate of multiply-adds on
/// the Xeons measured, so bf16 pairs would be slower than widening to fp32).
inline bool uses_bf16_products(const SoftmaxInputs& in) noexcept {
  return detail::flash_path<OptionsFusion>(in) != FlashPath::fp32;
}

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
void flash_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, MutEView4 o,
                     View3<float> lse, const E& exec = E{}) {
  flash_attention(in, opt, FlashOutputs{o, lse, {}}, exec);
}

/// flash_attention with the output o only (see above).
template <Executor E = Serial>
void flash_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, MutEView4 o,
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
                     MutEView4 o, View3<float> lse, const E& exec = E{}) {
  flash_attention(in, opt, fusion, FlashOutputs{o, lse, {}}, exec);
}

/// flash_attention with a user's fusion and the output o only (see above).
template <SoftmaxFusion F, Executor E = Serial>
void flash_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, const F& fusion,
                     MutEView4 o, const E& exec = E{}) {
  flash_attention(in, opt, fusion, FlashOutputs{o, {}, {}}, exec);
}

}  // namespace polyattn::softmax

// The kernels of the per-ISA units: the default fusion.
#define POLYATTN_SOFTMAX_FLASH_KERNELS(X)                                     \
  X(::polyattn::softmax::FlashTileKernel<::polyattn::softmax::OptionsFusion>) \
  X(::polyattn::softmax::FlashPackKernel)
POLYATTN_SOFTMAX_FLASH_KERNELS(POLYATTN_KERNEL_EXTERN)
