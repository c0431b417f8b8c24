// polyattn/softmax/blockrank.hpp — BlockRank's structured attention (Gupta et al. 2025,
// "Scalable In-context Ranking with Generative Models", §4.1 "structured sparse attention"), as a
// mask policy of the tiled softmax kernel (fusion.hpp).
//
// An in-context ranking prompt is cut into M ≥ 2 consecutive segments along the key positions of
// each sequence: segment 0 the instruction, segments 1 … M−2 the candidate documents, segment
// M−1 the query (the last). With seg(x) the segment holding key position x, the query at key
// position p sees key j when
//
//   j ≤ p  ∧  ( seg(j) = seg(p)  ∨  seg(j) = 0  ∨  seg(p) = M − 1 )
//
// i.e. the instruction attends causally to itself, each document to the instruction and causally
// to itself, and the query segment to everything before it (the authors' flex-attention mask,
// github.com/nilesh2797/BlockRank, src/blockrank/blockrank_std_attention.py, without its
// per-block padding: segments here are contiguous and of any length). Cost: linear in the number
// of documents for a fixed document length; tiles between two documents are skipped.
//
// Positions: bounds of sequence n are key positions 0 = b_0 < b_1 < … < b_M = S_n (the
// sequence's key count); query row r sits at p = r + S_n − T_n (docs/conventions.md §1.5), so a
// decode call (T = 1) or a chunk of the query segment sees what the prefill's rows see.
// The mask holds the causal term itself; opt.causal may be set too (same result), and the
// options' window, sink tokens, block mask and modifiers compose as for any fusion.
//
//   BlockRankLayout layout({{0, 32, 96, 160, 200}});     // one sequence: 2 documents
//   softmax::blockrank_attention(in, opt, layout, o);    // o [B, T, HQ, Dv]
//
// Kernels: FlashKernelFor<Fusion<BlockRankMask>>, listed in POLYATTN_BLOCKRANK_KERNELS for a
// project's per-ISA units (examples/custom_mask.cpp shows the pattern).
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/fusion.hpp"

namespace polyattn::softmax {

/// The segment bounds of every sequence of a call (batch rows, or the packed sequences of
/// cu_seqlens), validated on construction.
class BlockRankLayout {
 public:
  /// bounds[n] = {0, b_1, …, b_M}: strictly increasing, M ≥ 2 segments.
  /// @throws polyattn::Error ("blockrank_bounds") otherwise
  explicit BlockRankLayout(const std::vector<std::vector<index_t>>& bounds) {
    if (bounds.empty()) throw Error("blockrank_bounds", "needs one entry per sequence, got none");
    first_.push_back(0);
    for (std::size_t n = 0; n < bounds.size(); ++n) {
      const std::vector<index_t>& b = bounds[n];
      const std::string at = "sequence " + std::to_string(n) + ": ";
      if (b.size() < 3)
        throw Error("blockrank_bounds", at +
                                            "needs at least 2 segments (instruction, query), got " +
                                            std::to_string(b.size() == 0 ? 0 : b.size() - 1));
      if (b[0] != 0) throw Error("blockrank_bounds", at + "must start at 0");
      for (std::size_t m = 1; m < b.size(); ++m)
        if (b[m] <= b[m - 1])
          throw Error("blockrank_bounds", at + "must be strictly increasing (segment " +
                                              std::to_string(m - 1) + " is empty)");
      bounds_.insert(bounds_.end(), b.begin(), b.end());
      first_.push_back(static_cast<index_t>(bounds_.size()));
    }
  }

  index_t num_seqs() const noexcept { return static_cast<index_t>(first_.size()) - 1; }
  /// Segments of sequence n (M).
  index_t segments(index_t n) const noexcept { return count(n) - 1; }
  /// Bounds of sequence n: M + 1 key positions.
  const index_t* bounds(index_t n) const noexcept {
    return bounds_.data() + first_[static_cast<std::size_t>(n)];
  }
  /// Key count the layout covers for sequence n (b_M).
  index_t keys(index_t n) const noexcept { return bounds(n)[segments(n)]; }

  /// Checks the layout against a call: one entry per sequence, each covering its keys.
  /// @throws polyattn::Error ("blockrank_bounds")
  void check(const SoftmaxInputs& in, const SoftmaxDims& d) const {
    if (num_seqs() != d.num_seqs)
      throw Error("blockrank_bounds", "has " + std::to_string(num_seqs()) +
                                          " sequences; the call has " + std::to_string(d.num_seqs));
    for (index_t n = 0; n < d.num_seqs; ++n) {
      const index_t S_n =
          d.varlen ? static_cast<index_t>(in.cu_seqlens[static_cast<std::size_t>(n) + 1] -
                                          in.cu_seqlens[static_cast<std::size_t>(n)])
                   : d.S;
      if (keys(n) != S_n)
        throw Error("blockrank_bounds", "sequence " + std::to_string(n) + " ends at " +
                                            std::to_string(keys(n)) + "; it has " +
                                            std::to_string(S_n) + " keys");
    }
  }

 private:
  index_t count(index_t n) const noexcept {
    return first_[static_cast<std::size_t>(n) + 1] - first_[static_cast<std::size_t>(n)];
  }
  std::vector<index_t> bounds_;
  std::vector<index_t> first_;  // bounds of sequence n: [first_[n], first_[n + 1])
};

/// BlockRank's mask for one call (see the header comment); the layout must outlive the call.
struct BlockRankMask {
  const BlockRankLayout* layout = nullptr;

  /// The mask of one sequence: its bounds b_0 … b_M.
  struct Bound {
    const index_t* b;
    index_t M;
    /// seg(x): the m with b_m ≤ x < b_{m+1} (x in [0, b_M)), by bisection. A template on the
    /// Arch tag like the hooks that call it (per-ISA symbols, fusion.hpp).
    template <simd::SimdArch A = simd::scalar_arch>
    index_t segment(index_t x) const noexcept {
      index_t lo = 0, hi = M - 1;  // b_lo ≤ x, and x < b_{hi+1}
      while (lo < hi) {
        const index_t mid = (lo + hi + 1) / 2;
        if (b[mid] <= x)
          lo = mid;
        else
          hi = mid - 1;
      }
      return lo;
    }
    template <simd::SimdArch A = simd::scalar_arch>
    bool visible(index_t, index_t p, index_t j) const noexcept {
      if (j > p) return false;
      const index_t sp = segment<A>(p), sj = segment<A>(j);
      return sj == sp || sj == 0 || sp == M - 1;
    }
    template <simd::SimdArch A = simd::scalar_arch>
    TileClass classify(RowRange rows, KeyRange keys) const noexcept {
      const TileClass causal = Causal{}.classify<A>(rows, keys);
      if (causal == TileClass::Skip) return causal;
      const index_t p0 = std::max<index_t>(rows.p_first(), 0), p1 = rows.p_last();
      if (p1 < 0) return TileClass::Skip;  // rows before the first key (T > S)
      const index_t q_lo = segment<A>(p0), q_hi = segment<A>(p1);
      const index_t k_lo = segment<A>(keys.j0), k_hi = segment<A>(keys.j1 - 1);
      // Only causality is left when every row is in the query segment, every key in the
      // instruction, or rows and keys share one segment.
      if (q_lo == M - 1 || k_hi == 0 || (q_lo == q_hi && k_lo == k_hi && q_lo == k_lo))
        return causal;
      // No row in the query segment and no key in the instruction: a key is visible only from
      // its own segment's rows.
      if (q_hi < M - 1 && k_lo > 0 && (k_hi < q_lo || q_hi < k_lo)) return TileClass::Skip;
      return TileClass::Partial;
    }
  };

  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext& c) const noexcept {
    return {layout->bounds(c.sequence), layout->segments(c.sequence)};
  }
  /// Run by flash_attention before anything is written (the sequence count; blockrank_attention
  /// checks the sequences' lengths too).
  void check(const SoftmaxDims& d) const {
    const BlockRankLayout& l = check::not_null("blockrank_bounds", layout);
    if (l.num_seqs() != d.num_seqs)
      throw Error("blockrank_bounds", "has " + std::to_string(l.num_seqs()) +
                                          " sequences; the call has " + std::to_string(d.num_seqs));
  }
};
static_assert(FusionMask<BlockRankMask>);

/// BlockRank attention: flash_attention with BlockRankMask composed with the options' set.
/// @throws polyattn::Error naming the bad argument (the layout included), before anything is
///         written
template <Executor E = Serial>
void blockrank_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                         const BlockRankLayout& layout, const FlashOutputs& out,
                         const E& exec = E{}) {
  layout.check(in, validate(in, opt));
  flash_attention(in, opt, with_mask(BlockRankMask{&layout}), out, exec);
}

/// blockrank_attention with the output o only.
template <Executor E = Serial>
void blockrank_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                         const BlockRankLayout& layout, View4<float> o, const E& exec = E{}) {
  blockrank_attention(in, opt, layout, FlashOutputs{o, {}, {}}, exec);
}

}  // namespace polyattn::softmax

// The kernel of a project's per-ISA units for BlockRank (see the header comment).
#define POLYATTN_BLOCKRANK_KERNELS(X)    \
  X(::polyattn::softmax::FlashKernelFor< \
      ::polyattn::softmax::Fusion<::polyattn::softmax::BlockRankMask>>)
