// polyattn/sparse/operator.hpp — sparse attention = a block selector + the block-sparse flash
// kernel (docs/conventions.md §6).
//
//   sparse_attention(selector, in, opt, o[, mask][, exec])
//     mask ← selector.select(in, opt)          (sparse/selector.hpp; on `exec` when it can)
//     o    ← softmax::flash_attention(in, opt with block_mask = &mask, o)
// i.e. o_i = Σ_j p_ij v_j over the keys j that opt (causal, window, sink_tokens) and the selected
// blocks let query i see, exactly as reference::softmax_attention with that block_mask. The
// kernel skips every 64 × 64 tile whose mask blocks are all unset, so the cost is proportional to
// the selected blocks (plus the selector's own O(T·D + nQB·nKB·D)).
// The overload with `mask` writes the selection into the caller's BlockMask (reshaped only when
// its shape or block size differ), so a loop of calls — a decode loop of one-query calls against
// a growing key set, say — reuses its storage; the mask is left for inspection afterwards.
// q, k, v and o take any element type flash_attention takes (fp32, bf16, fp16; §9.7): the selectors
// read q and k widened to fp32, so a bf16 call selects the blocks the fp32 call on the widened
// values selects. Everything (in, opt, o, the selector's parameters) is validated before `mask` or
// `o` is written;
// opt.block_mask must be null (the selector provides the mask). Errors are polyattn::Error naming
// the argument.
#pragma once

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/element_view.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/sparse/selector.hpp"

namespace polyattn::sparse {

// Runs the selector, on `exec` when it accepts one.
template <BlockSelector S, Executor E>
void run_selector(const S& selector, const SoftmaxInputs& in, const SoftmaxOptions& opt,
                  BlockMask& mask, const E& exec) {
  if constexpr (BlockSelectorOn<S, E>)
    selector.select(in, opt, mask, exec);
  else
    selector.select(in, opt, mask);
}

template <BlockSelector S, Executor E = Serial>
void sparse_attention(const S& selector, const SoftmaxInputs& in, const SoftmaxOptions& opt,
                      MutEView4 o, BlockMask& mask, const E& exec = E{}) {
  if (opt.block_mask != nullptr)
    throw Error("block_mask",
                "must be null: sparse_attention takes the block mask from its selector");
  (void)validate(in, opt, o);  // before the selector touches `mask`
  // Selector errors (its own parameters) are thrown by select() before it writes `mask`.
  run_selector(selector, in, opt, mask, exec);
  SoftmaxOptions with_mask = opt;
  with_mask.block_mask = &mask;
  softmax::flash_attention(in, with_mask, o, exec);
}

template <BlockSelector S, Executor E = Serial>
void sparse_attention(const S& selector, const SoftmaxInputs& in, const SoftmaxOptions& opt,
                      MutEView4 o, const E& exec = E{}) {
  BlockMask mask;
  sparse_attention(selector, in, opt, o, mask, exec);
}

}  // namespace polyattn::sparse
