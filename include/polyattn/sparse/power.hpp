// polyattn/sparse/power.hpp — the PowerAttention static pattern: key blocks at power-of-two
// distances from the query block.
//
// PowerSelector keeps, per (sequence, query block) with candidates C and diagonal Dg
// (sparse/selector.hpp), its KeepOptions plus
//   { kb ∈ C : |kb − d| = 2^i for some d ∈ Dg, i ≥ 0, 2^i ≤ max_distance (0 = no limit) }.
// Causal, query block q (aligned blocks, Dg = {q}) sees q − 1, q − 2, q − 4, q − 8, …: O(log nKB)
// blocks per query block, and through the layers of a model every earlier block is reachable
// within log2 distance hops (PowerAttention, Chen et al. 2025). Not causal, also q + 2^i.
// With the defaults (diagonal kept) the diagonal block is distance 0. No scores are computed.
#pragma once

#include <cstdint>
#include <string>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/sparse/selector.hpp"

namespace polyattn::sparse {

struct PowerSelector {
  index_t block = kDefaultBlock;
  index_t max_distance = 0;  // largest distance 2^i kept, in blocks; 0 = no limit
  KeepOptions keep{};

  index_t block_size() const noexcept { return block; }

  template <Executor E = Serial>
  void select(const SoftmaxInputs& in, const SoftmaxOptions& opt, BlockMask& out,
              const E& exec = E{}) const {
    check_keep(keep);
    if (max_distance < 0)
      throw Error("max_distance",
                  "must be >= 0 (0 = no limit), got " + std::to_string(max_distance));
    const SelectionPlan plan(in, opt, block);
    const index_t limit = max_distance > 0 ? max_distance : plan.k_blocks();
    fill_mask(plan, keep, out, exec,
              [limit](const BlockRow& r, index_t, std::uint8_t* marks, RowScratch&) {
                if (!r.has_diagonal()) return;
                for (index_t d = r.diag_lo; d <= r.diag_hi; ++d)
                  for (index_t dist = 1; dist <= limit; dist *= 2) {
                    mark_range(marks, r, d - dist, d - dist);
                    mark_range(marks, r, d + dist, d + dist);
                  }
              });
  }
};

static_assert(BlockSelector<PowerSelector>);

}  // namespace polyattn::sparse
