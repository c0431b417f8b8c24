// polyattn/core/block_mask.hpp — a block-sparse visibility mask for softmax attention.
//
// BlockMask holds dense bytes [B, HQ, nQB, nKB]: byte (b, h, qb, kb) != 0 means query rows
// [qb·block_q, (qb+1)·block_q) of batch row b, query head h, may see key rows
// [kb·block_k, (kb+1)·block_k). Row indices are positions along the T (queries) and S (keys)
// axes of the tensors passed to the kernel, i.e. packed positions when cu_seqlens is used
// (then B == 1). nQB = ceil(T / block_q), nKB = ceil(S / block_k). Selectors (docs/conventions.md
// §6) produce a BlockMask; the softmax kernels and the reference consume it. A key is visible only
// if every active mask (causal, window, block mask) allows it; sink tokens stay visible.
#pragma once

#include <array>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include "polyattn/core/error.hpp"
#include "polyattn/core/extent.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn {

class BlockMask {
 public:
  BlockMask() = default;

  // All blocks set to `visible`. Sizes must be non-negative, block sizes positive, the byte count
  // must fit in int64 and be allocatable (else polyattn::Error "block_mask").
  BlockMask(index_t batch, index_t heads, index_t q_blocks, index_t k_blocks, index_t block_q,
            index_t block_k, bool visible = false)
      : batch_(batch),
        heads_(heads),
        q_blocks_(q_blocks),
        k_blocks_(k_blocks),
        block_q_(block_q),
        block_k_(block_k) {
    if (batch < 0 || heads < 0 || q_blocks < 0 || k_blocks < 0)
      throw Error("block_mask", "negative size in shape " + shape_string(shape()));
    if (block_q <= 0 || block_k <= 0)
      throw Error("block_mask",
                  "block sizes must be positive, got block_q=" + std::to_string(block_q) +
                      " block_k=" + std::to_string(block_k));
    const std::array<index_t, 4> dims{batch, heads, q_blocks, k_blocks};
    const index_t n = extent::count("block_mask", dims);
    try {
      bits_.assign(extent::bytes("block_mask", n, 1), visible ? std::uint8_t{1} : std::uint8_t{0});
    } catch (const std::bad_alloc&) {
      throw Error("block_mask", "cannot allocate " + std::to_string(n) + " bytes for shape " +
                                    shape_string(dims));
    }
  }

  // Mask sized for T queries and S keys: nQB = ceil(T/block_q), nKB = ceil(S/block_k).
  static BlockMask for_lengths(index_t batch, index_t heads, index_t T, index_t S, index_t block_q,
                               index_t block_k, bool visible = false) {
    if (block_q <= 0 || block_k <= 0)
      throw Error("block_mask",
                  "block sizes must be positive, got block_q=" + std::to_string(block_q) +
                      " block_k=" + std::to_string(block_k));
    return BlockMask(batch, heads, blocks_for(T, block_q), blocks_for(S, block_k), block_q, block_k,
                     visible);
  }

  static constexpr index_t blocks_for(index_t n, index_t block) {
    return n <= 0 ? 0 : n / block + (n % block != 0 ? 1 : 0);
  }

  index_t block_q() const noexcept { return block_q_; }
  index_t block_k() const noexcept { return block_k_; }
  index_t batch() const noexcept { return batch_; }
  index_t heads() const noexcept { return heads_; }
  index_t q_blocks() const noexcept { return q_blocks_; }
  index_t k_blocks() const noexcept { return k_blocks_; }
  std::array<index_t, 4> shape() const noexcept { return {batch_, heads_, q_blocks_, k_blocks_}; }

  bool visible(index_t b, index_t h, index_t qb, index_t kb) const noexcept {
    return bits_[index(b, h, qb, kb)] != 0;
  }
  void set(index_t b, index_t h, index_t qb, index_t kb, bool visible = true) noexcept {
    bits_[index(b, h, qb, kb)] = visible ? 1 : 0;
  }

  // Read-only [B, HQ, nQB, nKB] view of the bytes.
  TensorView<const std::uint8_t, 4> view() const noexcept {
    return TensorView<const std::uint8_t, 4>::contiguous(bits_.data(), shape());
  }
  const std::vector<std::uint8_t>& bytes() const noexcept { return bits_; }

 private:
  std::size_t index(index_t b, index_t h, index_t qb, index_t kb) const noexcept {
    return static_cast<std::size_t>(((b * heads_ + h) * q_blocks_ + qb) * k_blocks_ + kb);
  }

  index_t batch_ = 0, heads_ = 0, q_blocks_ = 0, k_blocks_ = 0;
  index_t block_q_ = 0, block_k_ = 0;
  std::vector<std::uint8_t> bits_;
};

}  // namespace polyattn
