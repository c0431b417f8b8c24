// polyattn/sparse/linear_estimate.hpp — linear-attention estimate of the block scores, then top-k
// (SEA-style, with a fixed feature map instead of a learned one).
//
// LinearTopKSelector keeps, per (sequence, query block) with rows R, candidates C
// (sparse/selector.hpp) and query head h, its KeepOptions plus the `top_k` blocks of C \ kept
// with the highest linear-attention estimate of the attention mass the block receives,
//   est(R, K) = scale · (1/|R|) Σ_{i∈R} Σ_{j∈K} φ(q_i)·φ(k_j) = scale · φ̄(q)_R · Σ_{j∈K} φ(k_j),
//   φ(x) = elu(x) + 1 elementwise  (x + 1 for x > 0, e^x otherwise; positive, so est > 0),
// K the block's keys of this sequence, kv head h/(HQ/HKV); ties and NaN estimates (ranked
// lowest) go to the lower block index (sparse/pooled.hpp computes est). Unlike the mean-pooled
// dot product, a block's estimate grows with its number of keys (a sum over them, as the mass of
// a softmax row does). Cost: O(T·D) feature pooling + O(nQB·nKB·D) estimates + a selection per row.
#pragma once

#include <cstdint>
#include <string>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/sparse/pooled.hpp"
#include "polyattn/sparse/selector.hpp"

namespace polyattn::sparse {

struct LinearTopKSelector {
  index_t block = kDefaultBlock;
  index_t top_k = 8;  // blocks chosen by estimate per (query head, query block), beyond `keep`
  KeepOptions keep{};

  index_t block_size() const noexcept { return block; }

  template <Executor E = Serial>
  void select(const SoftmaxInputs& in, const SoftmaxOptions& opt, BlockMask& out,
              const E& exec = E{}) const {
    check_keep(keep);
    if (top_k < 0) throw Error("top_k", "must be >= 0, got " + std::to_string(top_k));
    const SelectionPlan plan(in, opt, block);
    const PooledBlocks pooled(plan, in, Feature::EluPlusOne, KeyPool::Sum, exec);
    const index_t k = top_k;
    fill_mask(plan, keep, out, exec,
              [&pooled, k](const BlockRow& r, index_t h, std::uint8_t* marks, RowScratch& s) {
                pooled.scores(r, h, s.scores.data());
                mark_top_k(r, s.scores.data(), k, marks, s.order);
              });
  }
};

static_assert(BlockSelector<LinearTopKSelector>);

}  // namespace polyattn::sparse
