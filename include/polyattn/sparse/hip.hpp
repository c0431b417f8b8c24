// polyattn/sparse/hip.hpp — HiP, hierarchically pruned attention (Lee et al. 2024, "HiP
// Attention: Sparse Sub-Quadratic Attention with Hierarchical Attention Pruning", §3 "tree-based
// top-k estimation"; authors' code github.com/DeepAuto-AI/hip-attention,
// src/hip_attn/v1_1/attention2_draft_causal_batch.py masking_iteration_draft_numba_kernel, the
// readable form of their masking iteration), as a block selector.
//
// HipSelector keeps, per (sequence, query block) with rows R and query head h (kv head
// h/(HQ/HKV)), its KeepOptions (the authors' sliding window and sink tokens) plus top_k blocks
// found by a tree search over the list L = [c_0 … c_{n−1}] of candidate blocks
// (sparse/selector.hpp) not already kept, in block order:
//   n ≤ top_k      all of L
//   start          k = top_k branches, branch t covering list positions [⌊n·t/k⌋, ⌊n·(t+1)/k⌋)
//   repeat while g > 1 (g = n/k, halved each round):
//     split        each branch [s, s + m) into [s, s + ⌊m/2⌋) and [s + ⌊m/2⌋, s + m) (empty
//                  children drop out)
//     score        a child's representative is block c_s of its first position:
//                    score = max_{i ∈ R', j ∈ K'} q_i[h]·k_j[hk]
//                  R' = rows r0 + stride − 1, r0 + 2·stride − 1, … of R (the authors' q[1::2]
//                  for stride 2; the last row when none), K' = the first `rep` keys of the block
//                  that some row may see (the authors' block_size_k keys at the branch start)
//     select       the k best children (score descending, ties to the earlier child)
//   keep           the representative block c_s of every final branch.
// Scores are formed in double (the scale, positive, does not change the order) and memoised per
// block: a first child has its parent's representative. Cost per row: O(k·log2(n/k)·|R'|·rep·D).
// Differences from the authors' code: their initial branch sizes are all ⌊n/k⌋ (an indexing slip
// that can leave blocks unreachable); here the branches tile L. numpy's argsort (quicksort)
// orders ties arbitrarily; here the earlier child wins. Not here: head-group shared selection
// (topk_head_group_size), min/max key groups, Self-Extend RoPE remapping, KV offloading. The final
// granularity is the selector's block (the authors' b_k may be 1–2 tokens).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/sparse/selector.hpp"

namespace polyattn::sparse {

namespace detail {
/// Σ_e a_e·b_e in double, four partial sums (e mod 4) added in order.
inline double hip_dot(const double* a, const double* b, index_t n) noexcept {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  index_t e = 0;
  for (; e + 4 <= n; e += 4) {
    s0 += a[e] * b[e];
    s1 += a[e + 1] * b[e + 1];
    s2 += a[e + 2] * b[e + 2];
    s3 += a[e + 3] * b[e + 3];
  }
  for (; e < n; ++e) s0 += a[e] * b[e];
  return (s0 + s1) + (s2 + s3);
}
}  // namespace detail

struct HipSelector {
  index_t block = kDefaultBlock;
  index_t top_k = 8;   // k: blocks found by the tree search, beyond `keep`
  index_t rep = 2;     // representative keys at the start of a branch's first block
  index_t stride = 2;  // every stride-th query row of the block scores (2: the authors' q[1::2])
  KeepOptions keep{.diagonal = true, .sink_blocks = 1, .local_blocks = 2};

  index_t block_size() const noexcept { return block; }

  template <Executor E = Serial>
  void select(const SoftmaxInputs& in, const SoftmaxOptions& opt, BlockMask& out,
              const E& exec = E{}) const {
    check_keep(keep);
    if (top_k < 0) throw Error("top_k", "must be >= 0, got " + std::to_string(top_k));
    if (rep < 1) throw Error("rep", "must be >= 1, got " + std::to_string(rep));
    if (stride < 1) throw Error("stride", "must be >= 1, got " + std::to_string(stride));
    const SelectionPlan plan(in, opt, block);
    const SoftmaxDims& d = plan.dims();
    const bool limited = opt.causal || opt.window > 0;
    fill_mask(
        plan, keep, out, exec,
        [&](const BlockRow& r, index_t h, std::uint8_t* marks, RowScratch& s) {
          std::vector<index_t>& list = s.order;
          list.clear();
          for (index_t kb = r.lo; kb <= r.hi; ++kb)
            if (!marks[kb]) list.push_back(kb);
          const index_t n = static_cast<index_t>(list.size()), k = top_k;
          if (k == 0) return;
          if (n <= k) {
            for (const index_t kb : list) marks[kb] = 1;
            return;
          }
          // Memoised representative scores, by block (NaN: not yet computed).
          std::vector<double>& memo = s.weights;
          memo.assign(static_cast<std::size_t>(plan.k_blocks()),
                      std::numeric_limits<double>::quiet_NaN());
          const index_t hk = h / d.group;
          const index_t key_end = limited ? std::min(r.k0 + r.nk, r.p_last + 1) : r.k0 + r.nk;
          const index_t key_begin =
              opt.window > 0 ? std::max(r.k0, std::max(r.p_first, r.k0) - opt.window + 1) : r.k0;
          // The scoring rows R' in double, read once per (row, head).
          std::vector<double> qs, ks(static_cast<std::size_t>(rep * d.D));
          {
            index_t i = r.r0 + stride - 1;
            if (i >= r.r1) i = r.r1 - 1;
            for (; i < r.r1; i += stride)
              for (index_t e = 0; e < d.D; ++e)
                qs.push_back(static_cast<double>(in.q(r.b, i, h, e)));
          }
          const std::size_t nrows = qs.size() / static_cast<std::size_t>(d.D);
          const auto score = [&](index_t kb) {
            double& m = memo[static_cast<std::size_t>(kb)];
            if (!std::isnan(m)) return m;
            const index_t j0 = std::max(kb * block, key_begin);
            const index_t j1 = std::min({j0 + rep, (kb + 1) * block, key_end});
            for (index_t j = j0; j < j1; ++j)
              for (index_t e = 0; e < d.D; ++e)
                ks[static_cast<std::size_t>((j - j0) * d.D + e)] =
                    static_cast<double>(in.k(r.b, j, hk, e));
            double best = -std::numeric_limits<double>::infinity();
            for (std::size_t t = 0; t < nrows; ++t)
              for (index_t j = 0; j < j1 - j0; ++j)
                best = std::max(best, detail::hip_dot(qs.data() + t * static_cast<std::size_t>(d.D),
                                                      ks.data() + j * d.D, d.D));
            return m = best;
          };
          struct Branch {
            index_t s, m;
          };
          std::vector<Branch> br, kids;
          for (index_t t = 0; t < k; ++t) br.push_back({n * t / k, n * (t + 1) / k - n * t / k});
          std::vector<std::pair<double, index_t>> ranked;
          for (double g = static_cast<double>(n) / static_cast<double>(k); g > 1.0; g /= 2) {
            kids.clear();
            for (const Branch& b : br) {
              kids.push_back({b.s, b.m / 2});
              kids.push_back({b.s + b.m / 2, b.m - b.m / 2});
            }
            ranked.clear();
            for (index_t c = 0; c < static_cast<index_t>(kids.size()); ++c) {
              const Branch& b = kids[static_cast<std::size_t>(c)];
              if (b.m >= 1) ranked.push_back({score(list[static_cast<std::size_t>(b.s)]), c});
            }
            const auto better = [](const std::pair<double, index_t>& x,
                                   const std::pair<double, index_t>& y) {
              const double a = std::isnan(x.first) ? -INFINITY : x.first;
              const double b = std::isnan(y.first) ? -INFINITY : y.first;
              return a > b || (a == b && x.second < y.second);
            };
            const std::size_t keep_n = std::min(ranked.size(), static_cast<std::size_t>(k));
            std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(keep_n),
                              ranked.end(), better);
            br.clear();
            for (std::size_t t = 0; t < keep_n; ++t)
              br.push_back(kids[static_cast<std::size_t>(ranked[t].second)]);
          }
          for (const Branch& b : br) marks[list[static_cast<std::size_t>(b.s)]] = 1;
        });
  }
};

static_assert(BlockSelector<HipSelector>);

}  // namespace polyattn::sparse
