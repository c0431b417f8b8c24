// polyattn/sparse/topk.hpp — block top-k by mean-pooled q·k block scores (MoBA / SeerAttention
// without the learned gate).
//
// TopKSelector keeps, per (sequence, query block) with rows R, candidates C (sparse/selector.hpp)
// and query head h, its KeepOptions plus the `top_k` blocks of C \ kept with the highest
//   score(R, K) = scale · q̄_R · k̄_K,   q̄_R = mean_{i∈R} q_i[h],  k̄_K = mean_{j∈K} k_j[h/(HQ/HKV)]
// (K: the block's keys of this sequence; sparse/pooled.hpp), ties and NaN scores (ranked lowest)
// resolved to the lower block index. When fewer than top_k candidates remain, all are kept.
// With the default KeepOptions (diagonal only) a causal query block keeps its diagonal block plus
// top_k earlier ones, as MoBA does. Cost: O(T·D) pooling + O(nQB·nKB·D) scores + a selection per
// row.
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

struct TopKSelector {
  index_t block = kDefaultBlock;
  index_t top_k = 8;  // blocks chosen by score per (query head, query block), beyond `keep`
  KeepOptions keep{};

  index_t block_size() const noexcept { return block; }

  template <Executor E = Serial>
  void select(const SoftmaxInputs& in, const SoftmaxOptions& opt, BlockMask& out,
              const E& exec = E{}) const {
    check_keep(keep);
    if (top_k < 0) throw Error("top_k", "must be >= 0, got " + std::to_string(top_k));
    const SelectionPlan plan(in, opt, block);
    const PooledBlocks pooled(plan, in, Feature::Identity, KeyPool::Mean, exec);
    const index_t k = top_k;
    fill_mask(plan, keep, out, exec,
              [&pooled, k](const BlockRow& r, index_t h, std::uint8_t* marks, RowScratch& s) {
                pooled.scores(r, h, s.scores.data());
                mark_top_k(r, s.scores.data(), k, marks, s.order);
              });
  }
};

static_assert(BlockSelector<TopKSelector>);

}  // namespace polyattn::sparse
