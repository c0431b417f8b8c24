// polyattn/sparse/window.hpp — sliding window + attention sinks at block level (StreamingLLM).
//
// WindowSinkSelector keeps, per (sequence, query block) with candidates C and diagonal Dg
// (sparse/selector.hpp), exactly its KeepOptions:
//   Dg  ∪  [kb(k0), kb(k0) + sink_blocks)  ∪  [min Dg − local_blocks + 1, max Dg + local_blocks −
//   1],
// all ∩ C. Causal, this is the first `sink_blocks` key blocks of the sequence plus the
// `local_blocks` blocks ending at the diagonal block (StreamingLLM's sinks + recent window,
// rounded out to whole blocks). No scores are computed: cost O(B·HQ·nQB·nKB) byte writes.
#pragma once

#include <cstdint>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/sparse/selector.hpp"

namespace polyattn::sparse {

struct WindowSinkSelector {
  index_t block = kDefaultBlock;
  KeepOptions keep{.diagonal = true, .sink_blocks = 1, .local_blocks = 4};

  index_t block_size() const noexcept { return block; }

  template <Executor E = Serial>
  void select(const SoftmaxInputs& in, const SoftmaxOptions& opt, BlockMask& out,
              const E& exec = E{}) const {
    check_keep(keep);
    const SelectionPlan plan(in, opt, block);
    fill_mask(plan, keep, out, exec, [](const BlockRow&, index_t, std::uint8_t*, RowScratch&) {});
  }
};

static_assert(BlockSelector<WindowSinkSelector>);

}  // namespace polyattn::sparse
