// polyattn/sparse/selector.hpp — what a block selector is (concept BlockSelector), the options
// every selector shares (KeepOptions: diagonal, sink and local-window blocks), and the machinery
// that fills a BlockMask row by row (SelectionPlan, BlockRow, fill_mask).
//
// A selector turns (q, k) into a BlockMask [B, HQ, nQB, nKB] with block_q = block_k =
// block_size() (default 64), nQB = ceil(T/block), nKB = ceil(S/block); the block-sparse softmax
// kernel then computes only the selected (query block, key block) tiles (sparse/operator.hpp):
//   s.block_size()                   -> index_t
//   s.select(in, opt, mask[, exec])  validates in and opt (opt.block_mask is ignored), then writes
//                                    every byte of `mask`, reshaping it only when its shape or
//                                    block size differ (a caller's buffer is reused as is).
//
// Geometry (positions are packed rows of the tensors, as in core/block_mask.hpp). Sequence n —
// batch row b, or packed rows [cu[n], cu[n+1]) with cu_seqlens — has queries [q0, q0 + nq) and
// keys [k0, k0 + nk); its query row i sits at key position π(i) = k0 + (i − q0) + nk − nq
// (bottom-right alignment, args/softmax.hpp). kb(j) = j / block. A query block qb is decided
// separately for every sequence whose rows R = [qb·block, (qb+1)·block) ∩ [q0, q0 + nq) are not
// empty (a BlockRow), and those decisions are OR-ed (with cu_seqlens one block may hold the end of
// a sequence and the start of the next; the kernel never lets a query see another sequence's keys).
// For one BlockRow with rows R = [r0, r1):
//   candidates C   key blocks holding a key that some row of R may see under opt.causal and
//                  opt.window: row i sees keys [k0, k0 + nk), capped at j ≤ π(i) when causal or
//                  windowed and j > π(i) − window when windowed. C is a range [lo, hi]. Nothing
//                  outside C is ever selected: no block wholly above the causal diagonal, none
//                  without a key of the sequence, none wholly outside the window.
//   diagonal Dg    [kb(max(π(r0), k0)), kb(π(r1 − 1))]: the key blocks holding the rows' own
//                  positions (empty when π(r1 − 1) < k0, i.e. T > S and no row has a key position).
//   always kept (KeepOptions), each intersected with C:
//     diagonal          Dg
//     sink_blocks n     the first n key blocks of the sequence, [kb(k0), kb(k0) + n)
//     local_blocks n    [min Dg − n + 1, max Dg + n − 1]: n blocks back to and including the
//                       diagonal (and n forward when not causal; causal leaves those outside C)
// and each selector then adds its own blocks of C (see its header). Token-level options stay the
// kernel's: keys j < opt.sink_tokens bypass the block mask, opt.window is applied inside blocks.
//
// fill_mask runs the rows on an executor in fixed work items (B · HQ · ceil(nQB / 8)); every row
// is a function of the inputs alone, so the mask is identical for every executor.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::sparse {

inline constexpr index_t kDefaultBlock = 64;

// ---- the concept --------------------------------------------------------------------------------

// A selector usable by sparse_attention (see the header comment).
template <class S>
concept BlockSelector =
    requires(const S& s, const SoftmaxInputs& in, const SoftmaxOptions& opt, BlockMask& out) {
      { s.block_size() } -> std::convertible_to<index_t>;
      s.select(in, opt, out);
    };

// A selector that can also spread its own work over executor E.
template <class S, class E>
concept BlockSelectorOn = BlockSelector<S> && Executor<E> &&
                          requires(const S& s, const SoftmaxInputs& in, const SoftmaxOptions& opt,
                                   BlockMask& out, const E& exec) { s.select(in, opt, out, exec); };

// ---- shared options -----------------------------------------------------------------------------

// Blocks every selector keeps regardless of its scores (definitions in the header comment).
struct KeepOptions {
  bool diagonal = true;      // the key block(s) holding the queries' own positions
  index_t sink_blocks = 0;   // the first n key blocks of each sequence
  index_t local_blocks = 0;  // n blocks back to and including the diagonal
};

inline void check_block_size(index_t block) {
  if (block <= 0) throw Error("block_size", "must be positive, got " + std::to_string(block));
}

inline void check_keep(const KeepOptions& keep) {
  if (keep.sink_blocks < 0)
    throw Error("sink_blocks", "must be >= 0, got " + std::to_string(keep.sink_blocks));
  if (keep.local_blocks < 0)
    throw Error("local_blocks", "must be >= 0, got " + std::to_string(keep.local_blocks));
}

// ---- geometry -----------------------------------------------------------------------------------

// One sequence: queries [q0, q0 + nq) and keys [k0, k0 + nk) of batch row b (packed rows).
struct SeqSpan {
  index_t b, q0, nq, k0, nk;
};

// One (sequence, query block) decision; every block range is inclusive and empty when lo > hi.
struct BlockRow {
  index_t seq = 0, b = 0, qb = 0;
  index_t r0 = 0, r1 = 0;              // packed query rows [r0, r1) of this sequence in qb
  index_t p_first = 0, p_last = 0;     // π(r0), π(r1 − 1)
  index_t k0 = 0, nk = 0;              // the sequence's keys [k0, k0 + nk)
  index_t kb_first = 0, kb_last = -1;  // key blocks touching the sequence's keys
  index_t lo = 0, hi = -1;             // candidates C
  index_t diag_lo = 0, diag_hi = -1;   // diagonal Dg

  bool has_candidates() const noexcept { return lo <= hi; }
  bool has_diagonal() const noexcept { return diag_lo <= diag_hi; }
};

// The validated call and its sequences, built once per select().
class SelectionPlan {
 public:
  SelectionPlan(const SoftmaxInputs& in, const SoftmaxOptions& opt, index_t block) {
    check_block_size(block);
    SoftmaxOptions o = opt;
    o.block_mask = nullptr;  // the selector makes the mask; a stale one must not fail validation
    d_ = validate(in, o);
    block_ = block;
    causal_ = opt.causal;
    window_ = opt.window;
    q_blocks_ = BlockMask::blocks_for(d_.T, block);
    k_blocks_ = BlockMask::blocks_for(d_.S, block);
    if (d_.varlen) {
      for (std::size_t n = 0; n + 1 < in.cu_seqlens.size(); ++n) {
        const index_t beg = in.cu_seqlens[n], len = in.cu_seqlens[n + 1] - beg;
        seqs_.push_back({0, beg, len, beg, len});
      }
    } else {
      for (index_t b = 0; b < d_.B; ++b) seqs_.push_back({b, 0, d_.T, 0, d_.S});
    }
  }

  const SoftmaxDims& dims() const noexcept { return d_; }
  index_t block() const noexcept { return block_; }
  index_t q_blocks() const noexcept { return q_blocks_; }
  index_t k_blocks() const noexcept { return k_blocks_; }
  const std::vector<SeqSpan>& seqs() const noexcept { return seqs_; }
  index_t num_seqs() const noexcept { return static_cast<index_t>(seqs_.size()); }

  // Sequences [first, last) that may have rows in query block qb of batch row b (some of them may
  // be empty: check nq).
  std::pair<index_t, index_t> seqs_of_block(index_t b, index_t qb) const {
    if (!d_.varlen) return {b, b + 1};
    const index_t a = qb * block_, z = a + block_;
    // First sequence that ends after row a, then every one that starts before z.
    const auto it = std::upper_bound(seqs_.begin(), seqs_.end(), a,
                                     [](index_t v, const SeqSpan& s) { return v < s.q0 + s.nq; });
    index_t first = static_cast<index_t>(it - seqs_.begin()), last = first;
    while (last < num_seqs() && seqs_[static_cast<std::size_t>(last)].q0 < z) ++last;
    return {first, last};
  }

  // The decision geometry of sequence s in query block qb (s must have rows there).
  BlockRow row(index_t s, index_t qb) const {
    const SeqSpan& q = seqs_[static_cast<std::size_t>(s)];
    BlockRow r;
    r.seq = s;
    r.b = q.b;
    r.qb = qb;
    r.r0 = std::max(qb * block_, q.q0);
    r.r1 = std::min((qb + 1) * block_, q.q0 + q.nq);
    const index_t off = q.k0 - q.q0 + q.nk - q.nq;
    r.p_first = r.r0 + off;
    r.p_last = r.r1 - 1 + off;
    r.k0 = q.k0;
    r.nk = q.nk;
    if (q.nk <= 0 || r.r1 <= r.r0) return r;  // no keys: nothing to select
    r.kb_first = q.k0 / block_;
    r.kb_last = (q.k0 + q.nk - 1) / block_;
    index_t key_lo = q.k0, key_hi = q.k0 + q.nk - 1;
    if (causal_ || window_ > 0) {
      key_hi = std::min(key_hi, r.p_last);
      if (key_hi < q.k0) return r;  // every row precedes the sequence's first key
      if (window_ > 0) key_lo = std::max(key_lo, std::max(r.p_first, q.k0) - window_ + 1);
    }
    r.lo = key_lo / block_;
    r.hi = key_hi / block_;
    if (r.p_last >= q.k0) {
      r.diag_lo = std::max(r.p_first, q.k0) / block_;
      r.diag_hi = r.p_last / block_;
    }
    return r;
  }

 private:
  SoftmaxDims d_;
  index_t block_ = kDefaultBlock;
  bool causal_ = false;
  index_t window_ = 0;
  index_t q_blocks_ = 0, k_blocks_ = 0;
  std::vector<SeqSpan> seqs_;
};

// ---- marking ------------------------------------------------------------------------------------

// Sets marks[kb] for kb in [a, b] ∩ C (marks is indexed by global key block).
inline void mark_range(std::uint8_t* marks, const BlockRow& r, index_t a, index_t b) noexcept {
  a = std::max(a, r.lo);
  b = std::min(b, r.hi);
  for (index_t kb = a; kb <= b; ++kb) marks[kb] = 1;
}

// The always-kept blocks of KeepOptions.
inline void mark_keep(const KeepOptions& keep, const BlockRow& r, std::uint8_t* marks) noexcept {
  if (keep.sink_blocks > 0) mark_range(marks, r, r.kb_first, r.kb_first + keep.sink_blocks - 1);
  if (!r.has_diagonal()) return;
  if (keep.diagonal) mark_range(marks, r, r.diag_lo, r.diag_hi);
  if (keep.local_blocks > 0)
    mark_range(marks, r, r.diag_lo - keep.local_blocks + 1, r.diag_hi + keep.local_blocks - 1);
}

// Work buffers a row function may use (one set per work item, reused across its rows).
struct RowScratch {
  std::vector<float> scores;  // sized nKB by fill_mask
  std::vector<index_t> order;
  std::vector<double> weights;
};

// Marks the `k` best-scoring blocks of C not yet marked: score descending, ties (and NaN, ranked
// as −inf) to the lower block index. Fewer than k unmarked candidates: all of them.
inline void mark_top_k(const BlockRow& r, const float* scores, index_t k, std::uint8_t* marks,
                       std::vector<index_t>& order) {
  if (k <= 0 || !r.has_candidates()) return;
  order.clear();
  for (index_t kb = r.lo; kb <= r.hi; ++kb)
    if (!marks[kb]) order.push_back(kb);
  if (static_cast<index_t>(order.size()) > k) {
    const auto key = [scores](index_t kb) {
      const float s = scores[kb];
      return std::isnan(s) ? -std::numeric_limits<float>::infinity() : s;
    };
    std::nth_element(order.begin(), order.begin() + k, order.end(), [&](index_t a, index_t b) {
      const float ka = key(a), kb = key(b);
      return ka > kb || (ka == kb && a < b);
    });
    order.resize(static_cast<std::size_t>(k));
  }
  for (const index_t kb : order) marks[kb] = 1;
}

// ---- the driver ---------------------------------------------------------------------------------

// Reshapes `out` to [B, HQ, nQB, nKB] with block size plan.block() unless it already has that
// shape (then its storage is reused; fill_mask writes every byte).
inline void shape_mask(const SelectionPlan& plan, BlockMask& out) {
  const SoftmaxDims& d = plan.dims();
  const std::array<index_t, 4> want{d.B, d.HQ, plan.q_blocks(), plan.k_blocks()};
  if (out.shape() != want || out.block_q() != plan.block() || out.block_k() != plan.block())
    out = BlockMask(want[0], want[1], want[2], want[3], plan.block(), plan.block());
}

// Fills every byte of `out`: for each (b, h, qb) the OR over its BlockRows of
//   always-kept blocks (mark_keep) ∪ fn's blocks,
// where fn(const BlockRow&, index_t h, std::uint8_t* marks, RowScratch&) marks blocks of C in a
// buffer indexed by global key block (already holding that row's kept blocks, nothing else).
template <Executor E, class RowFn>
void fill_mask(const SelectionPlan& plan, const KeepOptions& keep, BlockMask& out, const E& exec,
               RowFn&& fn) {
  shape_mask(plan, out);
  const SoftmaxDims& d = plan.dims();
  const index_t nqb = plan.q_blocks(), nkb = plan.k_blocks();
  if (d.B == 0 || d.HQ == 0 || nqb == 0) return;
  constexpr index_t kChunk = 8;  // query blocks per work item
  const index_t chunks = (nqb + kChunk - 1) / kChunk;
  exec.parallel_for(d.B * d.HQ * chunks, [&](index_t item) {
    const index_t c = item % chunks, h = (item / chunks) % d.HQ, b = item / chunks / d.HQ;
    std::vector<std::uint8_t> marks(static_cast<std::size_t>(nkb)),
        piece(static_cast<std::size_t>(nkb), 0);
    RowScratch scratch;
    scratch.scores.assign(static_cast<std::size_t>(nkb), 0.f);
    for (index_t qb = c * kChunk; qb < std::min(nqb, (c + 1) * kChunk); ++qb) {
      std::fill(marks.begin(), marks.end(), std::uint8_t{0});
      const auto [s0, s1] = plan.seqs_of_block(b, qb);
      for (index_t s = s0; s < s1; ++s) {
        if (plan.seqs()[static_cast<std::size_t>(s)].nq <= 0) continue;
        const BlockRow r = plan.row(s, qb);
        if (!r.has_candidates()) continue;
        // Each sequence decides on its own (`piece`), then joins the block's row.
        mark_keep(keep, r, piece.data());
        fn(r, h, piece.data(), scratch);
        for (index_t kb = r.lo; kb <= r.hi; ++kb) {
          marks[static_cast<std::size_t>(kb)] |= piece[static_cast<std::size_t>(kb)];
          piece[static_cast<std::size_t>(kb)] = 0;
        }
      }
      for (index_t kb = 0; kb < nkb; ++kb)
        out.set(b, h, qb, kb, marks[static_cast<std::size_t>(kb)] != 0);
    }
  });
}

}  // namespace polyattn::sparse
