// polyattn/sparse/dhsa.hpp — DHSA, dynamic hierarchical sparse attention (Xiong et al. 2025,
// "Long-Context Modeling with Dynamic Hierarchical Sparse Attention for On-Device LLMs", §3:
// dynamic chunking, length-normalised chunk representations, chunk-level similarity upsampled to
// token level, a per-token budget N_b; authors' code github.com/xiongsiheng/DHSA,
// legacy/utils/helper.py _obtain_dhsa_mask with pooling 'avgpool_norm' and dhsa_sdpa), as a
// token-level selection and a mask of the tiled softmax kernel.
//
// Per batch row b (the selection is shared by every head, as the authors average q and k over
// heads): chunk bounds 0 = c_0 < … < c_M = S (the dynamic chunking; the caller gives them — the
// authors' boundary predictor is a trained network, left to the model); query blocks of `block`
// positions, block qb holding the call's query rows at positions p ∈ [qb·block, (qb+1)·block):
//   q̄_qb = sqrt(n_qb) · mean_{rows, query heads} q          (n_qb: the block's rows in the call)
//   k̄_c  = sqrt(c_{m+1} − c_m) · mean_{j ∈ chunk m, kv heads} k
//   S_c(qb, m) = q̄_qb · k̄_m,   upsampled: S_t(qb, j) = S_c(qb, chunk(j))
//   allowed A = [0, P] with P the block's last position (the authors' block-level causal mask)
//   kept(qb) = A when |A| ≤ N_b; else the first `sinks` keys, the `local` most recent keys of A,
//              and the N_b − |those| keys of the rest with the highest S_t (ties: lower j first)
// The kernel then attends row i (position p) to the kept keys of its block with the options'
// masks (causal: j ≤ p, token by token). Tiles without a kept key are skipped.
// Differences from the authors' code: their global tokens are spliced over the lowest-indexed
// entries of the sorted top-k list (dropping or duplicating selected tokens); here sinks are a
// union with the rest and the budget counts each key once. torch.topk's order among equal
// scores (one chunk's tokens all tie) is unspecified; here the lower position wins. Not here: the
// boundary predictor and its NMS, the dense instruction tail, Gemma's sliding-window layers
// (opt.window composes), varlen. Decode (T < S): the call's rows form the blocks (a block's mean
// is over the rows present).
//
// Kernels: FlashKernelFor<Fusion<DhsaMask>>, listed in POLYATTN_DHSA_KERNELS.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/fusion.hpp"

namespace polyattn::sparse {

struct DhsaOptions {
  index_t block = 64;     // query block (positions)
  index_t budget = 2048;  // N_b: keys kept per query block
  index_t local = 64;     // most recent keys always kept
  index_t sinks = 0;      // first keys always kept
};

/// Kept keys of every (batch row, query block): a bitmap of S bits per block.
struct DhsaSelection {
  index_t B = 0, T = 0, S = 0, block = 0;
  index_t first = 0;                // block index of the call's first row: (S − T) / block
  index_t nqb = 0;                  // query blocks of the call
  index_t words = 0;                // ⌈S / 64⌉
  std::vector<std::uint64_t> bits;  // [B, nqb, words]
  bool kept(index_t b, index_t qb, index_t j) const noexcept {
    return (bits[static_cast<std::size_t>((b * nqb + qb) * words + j / 64)] >> (j % 64)) & 1u;
  }
  /// Kept keys of block qb of batch row b.
  index_t count(index_t b, index_t qb) const noexcept {
    index_t n = 0;
    for (index_t w = 0; w < words; ++w)
      n += std::popcount(bits[static_cast<std::size_t>((b * nqb + qb) * words + w)]);
    return n;
  }
  void check(const SoftmaxDims& d) const {
    if (B != d.B || T != d.T || S != d.S)
      throw Error("selection", "made for [B, T, S] = " + shape_string(std::array{B, T, S}));
    if (d.varlen) throw Error("cu_seqlens", "DHSA takes no packed sequences");
  }
};

/// Checks chunk bounds: B rows, each 0 = c_0 < … < c_M = S.
inline void check_dhsa_bounds(const std::vector<std::vector<index_t>>& bounds, index_t B,
                              index_t S) {
  if (static_cast<index_t>(bounds.size()) != B)
    throw Error("boundaries",
                "expected one row of chunk bounds per batch row (" + std::to_string(B) + ")");
  for (const auto& c : bounds) {
    if (c.size() < 2 || c.front() != 0 || c.back() != S)
      throw Error("boundaries", "each row must run from 0 to S = " + std::to_string(S));
    for (std::size_t m = 1; m < c.size(); ++m)
      if (c[m] <= c[m - 1]) throw Error("boundaries", "must be strictly increasing");
  }
}

/// The kept keys of every query block (see the header comment), in double.
/// @throws polyattn::Error ("block", "budget", "local", "sinks", "boundaries", "cu_seqlens",
///         the inputs')
template <Executor E = Serial>
DhsaSelection dhsa_select(const SoftmaxInputs& in, const DhsaOptions& o,
                          const std::vector<std::vector<index_t>>& bounds, const E& exec = E{}) {
  const SoftmaxDims d = validate(in, SoftmaxOptions{});
  if (o.block < 1) throw Error("block", "must be >= 1, got " + std::to_string(o.block));
  if (o.budget < 1) throw Error("budget", "must be >= 1, got " + std::to_string(o.budget));
  if (o.local < 0) throw Error("local", "must be >= 0, got " + std::to_string(o.local));
  if (o.sinks < 0) throw Error("sinks", "must be >= 0, got " + std::to_string(o.sinks));
  if (d.varlen) throw Error("cu_seqlens", "DHSA takes no packed sequences");
  if (d.T > d.S)
    throw Error("q", "DHSA needs T <= S (rows are the last T positions), got T = " +
                         std::to_string(d.T) + ", S = " + std::to_string(d.S));
  check_dhsa_bounds(bounds, d.B, d.S);
  DhsaSelection sel;
  sel.B = d.B, sel.T = d.T, sel.S = d.S, sel.block = o.block;
  const index_t off = d.S - d.T;
  sel.first = off / o.block;
  sel.nqb = d.T == 0 ? 0 : (d.S - 1) / o.block - sel.first + 1;
  sel.words = (d.S + 63) / 64;
  sel.bits.assign(static_cast<std::size_t>(d.B * sel.nqb * sel.words), 0);
  // Chunk representations k̄ [B, M, D], per batch row.
  std::vector<std::vector<double>> kbar(static_cast<std::size_t>(d.B));
  exec.parallel_for(d.B, [&](std::int64_t b) {
    const auto& c = bounds[static_cast<std::size_t>(b)];
    const index_t M = static_cast<index_t>(c.size()) - 1;
    std::vector<double>& kb = kbar[static_cast<std::size_t>(b)];
    kb.assign(static_cast<std::size_t>(M * d.D), 0.0);
    for (index_t m = 0; m < M; ++m) {
      const index_t len = c[static_cast<std::size_t>(m + 1)] - c[static_cast<std::size_t>(m)];
      double* km = kb.data() + m * d.D;
      for (index_t j = c[static_cast<std::size_t>(m)]; j < c[static_cast<std::size_t>(m + 1)]; ++j)
        for (index_t hk = 0; hk < d.HKV; ++hk)
          for (index_t e = 0; e < d.D; ++e) km[e] += static_cast<double>(in.k(b, j, hk, e));
      const double f = std::sqrt(static_cast<double>(len)) / static_cast<double>(len * d.HKV);
      for (index_t e = 0; e < d.D; ++e) km[e] *= f;
    }
  });
  exec.parallel_for(d.B * sel.nqb, [&](std::int64_t item) {
    const index_t b = item / sel.nqb, qb = item % sel.nqb, blk = qb + sel.first;
    const auto& c = bounds[static_cast<std::size_t>(b)];
    const index_t M = static_cast<index_t>(c.size()) - 1;
    const index_t p0 = std::max(blk * o.block, off), P = std::min((blk + 1) * o.block, d.S) - 1;
    const index_t n = P - p0 + 1, nA = P + 1;
    std::uint64_t* w = sel.bits.data() + static_cast<std::size_t>(item * sel.words);
    const auto keep = [w](index_t j) { w[j / 64] |= std::uint64_t{1} << (j % 64); };
    if (nA <= o.budget) {
      for (index_t j = 0; j < nA; ++j) keep(j);
      return;
    }
    std::vector<double> qbar(static_cast<std::size_t>(d.D), 0.0);
    for (index_t p = p0; p <= P; ++p)
      for (index_t h = 0; h < d.HQ; ++h)
        for (index_t e = 0; e < d.D; ++e)
          qbar[static_cast<std::size_t>(e)] += static_cast<double>(in.q(b, p - off, h, e));
    const double f = std::sqrt(static_cast<double>(n)) / static_cast<double>(n * d.HQ);
    std::vector<double> score(static_cast<std::size_t>(M));
    for (index_t m = 0; m < M; ++m) {
      double s = 0.0;
      for (index_t e = 0; e < d.D; ++e)
        s += qbar[static_cast<std::size_t>(e)] * f *
             kbar[static_cast<std::size_t>(b)][static_cast<std::size_t>(m * d.D + e)];
      score[static_cast<std::size_t>(m)] = s;
    }
    // Fixed keys: sinks and the most recent `local` of A.
    const index_t sink_end = std::min(o.sinks, nA),
                  local_begin = std::max<index_t>(nA - o.local, 0);
    for (index_t j = 0; j < sink_end; ++j) keep(j);
    for (index_t j = local_begin; j < nA; ++j) keep(j);
    index_t left = o.budget - (sink_end + nA - std::max(local_begin, sink_end));
    if (left <= 0) return;
    // The rest [sink_end, local_begin) by chunk score (descending, ties and positions low first).
    std::vector<index_t> order(static_cast<std::size_t>(M));
    std::iota(order.begin(), order.end(), index_t{0});
    std::stable_sort(order.begin(), order.end(), [&score](index_t x, index_t y) {
      return score[static_cast<std::size_t>(x)] > score[static_cast<std::size_t>(y)];
    });
    for (const index_t m : order) {
      const index_t j0 = std::max(c[static_cast<std::size_t>(m)], sink_end);
      const index_t j1 = std::min(c[static_cast<std::size_t>(m + 1)], local_begin);
      for (index_t j = j0; j < j1 && left > 0; ++j, --left) keep(j);
      if (left == 0) break;
    }
  });
  return sel;
}

/// Keys kept for the query's block (DhsaSelection), composed with the options' masks.
struct DhsaMask {
  const DhsaSelection* sel = nullptr;
  struct Bound {
    const std::uint64_t* bits;  // [nqb, words] of this batch row
    index_t words, block, first, S;
    // Whether any / every bit of [j0, j1) is set in word row w.
    template <simd::SimdArch A>
    void scan(const std::uint64_t* w, index_t j0, index_t j1, bool& any, bool& all) const noexcept {
      for (index_t x = j0 / 64; x * 64 < j1; ++x) {
        const index_t lo = std::max(j0 - x * 64, index_t{0}),
                      hi = std::min(j1 - x * 64, index_t{64});
        const std::uint64_t m = (hi == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << hi) - 1) &
                                ~((std::uint64_t{1} << lo) - 1);
        const std::uint64_t v = w[x] & m;
        any = any || v != 0;
        all = all && v == m;
      }
    }
    template <simd::SimdArch A = simd::scalar_arch>
    bool visible(index_t, index_t p, index_t j) const noexcept {
      if (j >= S) return false;
      const index_t qb = p / block - first;
      return (bits[qb * words + j / 64] >> (j % 64)) & 1u;
    }
    template <simd::SimdArch A = simd::scalar_arch>
    softmax::TileClass classify(softmax::RowRange rows, softmax::KeyRange keys) const noexcept {
      const index_t j1 = std::min(keys.j1, S);
      if (keys.j0 >= j1) return softmax::TileClass::Skip;
      bool any = false, all = j1 == keys.j1;
      for (index_t qb = rows.p_first() / block; qb <= rows.p_last() / block; ++qb)
        scan<A>(bits + (qb - first) * words, keys.j0, j1, any, all);
      if (!any) return softmax::TileClass::Skip;
      return all ? softmax::TileClass::Full : softmax::TileClass::Partial;
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const softmax::HeadContext& c) const {
    return {sel->bits.data() + c.batch * sel->nqb * sel->words, sel->words, sel->block, sel->first,
            sel->S};
  }
  void check(const SoftmaxDims& d) const { check::not_null("selection", sel).check(d); }
};
static_assert(softmax::FusionMask<DhsaMask>);

/// DHSA attention with a selection of the same call; opt must be causal.
/// @throws polyattn::Error ("opt" when not causal, "selection", the inputs'), before anything
///         is written
template <Executor E = Serial>
void dhsa_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, const DhsaSelection& sel,
                    View4<float> o, const E& exec = E{}) {
  if (!opt.causal) throw Error("opt", "DHSA is causal: set opt.causal");
  softmax::flash_attention(in, opt, softmax::with_mask(DhsaMask{&sel}),
                           softmax::FlashOutputs{o, {}, {}}, exec);
}

}  // namespace polyattn::sparse

// The kernel of a project's per-ISA units for DHSA (see the header comment).
#define POLYATTN_DHSA_KERNELS(X) \
  X(::polyattn::softmax::FlashKernelFor<::polyattn::softmax::Fusion<::polyattn::sparse::DhsaMask>>)
