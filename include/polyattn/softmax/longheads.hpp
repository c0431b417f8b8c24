// polyattn/softmax/longheads.hpp — LongHeads (Lu et al. 2024, "LongHeads: Multi-Head Attention is
// Secretly a Long Context Processor", §3: chunk representation and per-head chunk selection;
// authors' code github.com/LuLuLuyi/LongHeads, modeling_longheads/modeling_llama.py), as a mask
// policy of the tiled softmax kernel (fusion.hpp): every query of every head attends to the few
// chunks it selects.
//
// Chunks of w key positions, chunk g = [g·w, (g+1)·w). Per (batch row, query head h, kv head
// h / (HQ/HKV)), for every complete chunk g, with Q_g, K_g, V_g its rows and scale = D^−½:
//   c̄_g = mean_{t ∈ g} softmax(scale · q_t K_gᵀ) V_g     (attention inside the chunk, not causal)
//   r_g = softmax(scale · c̄_g K_gᵀ) K_g                  (the chunk's representative key)
// and the query at key position p, chunk c = ⌊p / w⌋, selects n ≥ 3 chunks:
//   {0, c − 1, c} ∪ the n − 3 chunks g ∈ [1, c − 2] with the highest q·r_g (ties to the lower g)
// (the first chunk, the previous and the own chunk always; every chunk ≤ c when there are at most
// n of them). It sees key j when j ≤ p and ⌊j / w⌋ is selected: one softmax over them.
//
// Prefill: longheads_chunk_keys(in) (T == S) gives r for every complete chunk; longheads_select
// picks each query row's chunks; longheads_attention runs the kernel with LongHeadsMask. Decode
// (T < S, rows at the last positions) reuses the prefill's representatives; a chunk completed
// later needs its representative from its own queries (the authors keep them), computed with
// longheads_chunk_keys over that chunk.
// Not here: the authors' RoPE re-positioning of the selected chunks (positions are the model's);
// varlen (cu_seqlens) is refused.
//
// Kernels: FlashKernelFor<Fusion<LongHeadsMask>>, listed in POLYATTN_LONGHEADS_KERNELS.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/fusion.hpp"

namespace polyattn::softmax {

/// Representative keys r_g of the complete chunks: [B, HQ, G, D] (G = ⌊S / w⌋ of the prefill).
struct LongHeadsChunks {
  index_t B = 0, HQ = 0, G = 0, D = 0, chunk = 0;
  std::vector<double> r;
  const double* key(index_t b, index_t h, index_t g) const noexcept {
    return r.data() + ((b * HQ + h) * G + g) * D;
  }
};

/// The chunks each query row attends to: [B, HQ, T, n] chunk indices, ascending, −1 unused.
struct LongHeadsSelection {
  index_t B = 0, HQ = 0, T = 0, n = 0, chunk = 0;
  std::vector<std::int32_t> chunks;
  const std::int32_t* of(index_t b, index_t h, index_t i) const noexcept {
    return chunks.data() + ((b * HQ + h) * T + i) * n;
  }
  void check(const SoftmaxDims& d) const {
    if (B != d.B || HQ != d.HQ || T != d.T)
      throw Error("selection", "made for [B, HQ, T] = " + shape_string(std::array{B, HQ, T}) +
                                   ", the call has " + shape_string(std::array{d.B, d.HQ, d.T}));
  }
};

namespace detail {
inline void longheads_check_call(const SoftmaxDims& d) {
  if (d.varlen) throw Error("cu_seqlens", "LongHeads takes no packed sequences");
}
}  // namespace detail

/// r_g of every complete chunk of w positions (see the header comment); needs T == S.
/// @throws polyattn::Error ("chunk", "k" when T ≠ S, "cu_seqlens", and the inputs' checks)
template <Executor E = Serial>
LongHeadsChunks longheads_chunk_keys(const SoftmaxInputs& in, index_t chunk, const E& exec = E{}) {
  const SoftmaxDims d = validate(in, SoftmaxOptions{});
  detail::longheads_check_call(d);
  if (chunk < 1) throw Error("chunk", "must be >= 1, got " + std::to_string(chunk));
  if (d.T != d.S)
    throw Error("k", "chunk representatives need every chunk's queries: T == S, got T = " +
                         std::to_string(d.T) + ", S = " + std::to_string(d.S));
  LongHeadsChunks c;
  c.B = d.B, c.HQ = d.HQ, c.G = d.S / chunk, c.D = d.D, c.chunk = chunk;
  c.r.assign(static_cast<std::size_t>(c.B * c.HQ * c.G * c.D), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.D));
  exec.parallel_for(d.B * d.HQ * c.G, [&](std::int64_t item) {
    const index_t g = item % c.G, h = (item / c.G) % d.HQ, b = item / c.G / d.HQ;
    const index_t hk = h / d.group, t0 = g * chunk;
    std::vector<double> w(static_cast<std::size_t>(chunk)),
        cbar(static_cast<std::size_t>(d.Dv), 0.0);
    const auto softmax_over_chunk = [&](const auto& query) {  // w ← softmax(scale·query·K_gᵀ)
      double m = -INFINITY;
      for (index_t j = 0; j < chunk; ++j) {
        double s = 0.0;
        for (index_t e = 0; e < d.D; ++e)
          s += query(e) * static_cast<double>(in.k(b, t0 + j, hk, e));
        w[static_cast<std::size_t>(j)] = scale * s;
        m = std::max(m, w[static_cast<std::size_t>(j)]);
      }
      double den = 0.0;
      for (double& x : w) den += x = std::exp(x - m);
      for (double& x : w) x /= den;
    };
    for (index_t t = 0; t < chunk; ++t) {
      softmax_over_chunk([&](index_t e) { return static_cast<double>(in.q(b, t0 + t, h, e)); });
      for (index_t j = 0; j < chunk; ++j)
        for (index_t e = 0; e < d.Dv; ++e)
          cbar[static_cast<std::size_t>(e)] +=
              w[static_cast<std::size_t>(j)] * in.v(b, t0 + j, hk, e) / static_cast<double>(chunk);
    }
    // c̄ (dimension Dv) queries K (dimension D): the authors' heads have D == Dv.
    softmax_over_chunk(
        [&](index_t e) { return e < d.Dv ? cbar[static_cast<std::size_t>(e)] : 0.0; });
    double* r = c.r.data() + ((b * d.HQ + h) * c.G + g) * d.D;
    for (index_t j = 0; j < chunk; ++j)
      for (index_t e = 0; e < d.D; ++e)
        r[e] += w[static_cast<std::size_t>(j)] * static_cast<double>(in.k(b, t0 + j, hk, e));
  });
  return c;
}

/// Each query row's n chunks (see the header comment), from the prefill's representatives.
/// @throws polyattn::Error ("n", "chunks" when they do not cover the call, and the inputs')
inline LongHeadsSelection longheads_select(const SoftmaxInputs& in, const LongHeadsChunks& chunks,
                                           index_t n) {
  const SoftmaxDims d = validate(in, SoftmaxOptions{});
  detail::longheads_check_call(d);
  if (n < 3)
    throw Error("n", "must be >= 3 (first, previous and own chunk), got " + std::to_string(n));
  if (chunks.B != d.B || chunks.HQ != d.HQ || chunks.D != d.D || chunks.chunk < 1)
    throw Error("chunks", "made for another batch, head count or head dim");
  const index_t w = chunks.chunk;
  // Every chunk a query may rank (up to c − 2 for the last query's chunk c) must be known.
  const index_t c_last = (d.S - 1) / w;
  if (d.S > 0 && c_last + 1 > n && c_last - 2 >= chunks.G)
    throw Error("chunks", "has " + std::to_string(chunks.G) + " chunk keys; queries up to chunk " +
                              std::to_string(c_last) + " rank chunks up to " +
                              std::to_string(c_last - 2));
  LongHeadsSelection sel;
  sel.B = d.B, sel.HQ = d.HQ, sel.T = d.T, sel.n = n, sel.chunk = w;
  sel.chunks.assign(static_cast<std::size_t>(d.B * d.HQ * d.T * n), -1);
  std::vector<std::pair<double, index_t>> ranked;
  for (index_t b = 0; b < d.B; ++b)
    for (index_t h = 0; h < d.HQ; ++h)
      for (index_t i = 0; i < d.T; ++i) {
        std::int32_t* out = sel.chunks.data() + ((b * d.HQ + h) * d.T + i) * n;
        const index_t p = i + d.S - d.T;
        if (p < 0) continue;  // sees no key
        const index_t c = p / w;
        std::vector<index_t> pick;
        if (c + 1 <= n) {
          for (index_t g = 0; g <= c; ++g) pick.push_back(g);
        } else {
          pick = {0, c - 1, c};
          ranked.clear();
          for (index_t g = 1; g <= c - 2; ++g) {
            const double* r = chunks.key(b, h, g);
            double s = 0.0;
            for (index_t e = 0; e < d.D; ++e) s += static_cast<double>(in.q(b, i, h, e)) * r[e];
            ranked.push_back({s, g});
          }
          std::partial_sort(ranked.begin(), ranked.begin() + (n - 3), ranked.end(),
                            [](const auto& x, const auto& y) {
                              return x.first > y.first ||
                                     (x.first == y.first && x.second < y.second);
                            });
          for (index_t r = 0; r < n - 3; ++r)
            pick.push_back(ranked[static_cast<std::size_t>(r)].second);
        }
        std::sort(pick.begin(), pick.end());
        for (std::size_t r = 0; r < pick.size(); ++r) out[r] = static_cast<std::int32_t>(pick[r]);
      }
  return sel;
}

/// LongHeads' mask for one call; the selection must outlive it.
struct LongHeadsMask {
  const LongHeadsSelection* selection = nullptr;

  struct Bound {
    const std::int32_t* rows;  // [T][n] of this (batch row, head)
    index_t n, w;
    template <simd::SimdArch A = simd::scalar_arch>  // per-ISA symbol, as the hooks
    bool selects(index_t r, index_t g) const noexcept {
      const std::int32_t* s = rows + r * n;
      for (index_t k = 0; k < n; ++k)
        if (s[k] == g) return true;
      return false;
    }
    template <simd::SimdArch A = simd::scalar_arch>
    bool visible(index_t r, index_t p, index_t j) const noexcept {
      return j <= p && selects<A>(r, j / w);
    }
    template <simd::SimdArch A = simd::scalar_arch>
    TileClass classify(RowRange rows_, KeyRange keys) const noexcept {
      const TileClass causal = Causal{}.classify<A>(rows_, keys);
      if (causal == TileClass::Skip) return causal;
      const index_t g0 = keys.j0 / w, g1 = (keys.j1 - 1) / w;
      bool any = false, all = true;
      for (index_t r = rows_.r0; r < rows_.r1; ++r)
        for (index_t g = g0; g <= g1; ++g) {
          const bool s = selects<A>(r, g);
          any = any || s;
          all = all && s;
        }
      if (!any) return TileClass::Skip;
      if (all) return causal;  // every row selects every chunk of the tile: causality is left
      return TileClass::Partial;
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext& c) const noexcept {
    const LongHeadsSelection& s = *selection;
    return {s.chunks.data() + (c.batch * s.HQ + c.head) * s.T * s.n, s.n, s.chunk};
  }
  void check(const SoftmaxDims& d) const {
    const LongHeadsSelection& s = check::not_null("selection", selection);
    detail::longheads_check_call(d);
    s.check(d);
  }
};
static_assert(FusionMask<LongHeadsMask>);

/// LongHeads attention: flash_attention with LongHeadsMask composed with the options' set.
/// @throws polyattn::Error naming the bad argument, before anything is written
template <Executor E = Serial>
void longheads_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                         const LongHeadsSelection& selection, View4<float> o, const E& exec = E{}) {
  flash_attention(in, opt, with_mask(LongHeadsMask{&selection}), FlashOutputs{o, {}, {}}, exec);
}

}  // namespace polyattn::softmax

// The kernel of a project's per-ISA units for LongHeads (see the header comment).
#define POLYATTN_LONGHEADS_KERNELS(X)    \
  X(::polyattn::softmax::FlashKernelFor< \
      ::polyattn::softmax::Fusion<::polyattn::softmax::LongHeadsMask>>)
