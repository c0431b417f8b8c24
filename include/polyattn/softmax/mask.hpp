// polyattn/softmax/mask.hpp — which keys a query may see, as policies the tiled kernels query
// per tile (skip / full / partial / causal-partial) and, inside partial tiles only, per element.
//
// Positions: query row i of a sequence with T queries and S keys sits at key position
// p = i + S − T (bottom-right alignment, docs/conventions.md §1). Policies (each a `MaskPolicy`):
//   Causal{}                  j ≤ p
//   SlidingWindow{w}          p − w < j ≤ p
//   BlockSparse{mask, b, h}   the byte of BlockMask (b, h, row / block_q, key / block_k) is set
//                             (block_mask rows/keys are packed positions: `q_offset`/`k_offset`
//                             shift sequence-relative indices to them)
// MaskSet composes them with the rule of the reference (docs/conventions.md §5):
//   visible(p, j) = causal(p, j) ∧ (j < sink_tokens ∨ (window(p, j) ∧ block(p, j)))
// Tiles: rows [r0, r1) (query rows, sequence-relative) × keys [j0, j1). A tile is
//   Skip           no (row, key) visible: the kernel does not compute it
//   Full           every (row, key) visible: no per-element mask
//   Partial        anything else: the kernel asks visible(r, p, j) per element
//   CausalPartial  partial, and inside the tile visible(r, p, j) ⇔ j ≤ p exactly: the kernel
//                  masks each key's prefix of queries with vector stores (the fast path of the
//                  diagonal tiles). Optional: a policy may always answer Partial instead.
// compose(a, b) is the class of the conjunction (visible under both masks).
//
// The hooks classify / visible are templates on the Arch tag with a default, so that callers
// may write m.classify(rows, keys) and the kernels instantiate them per ISA (their symbols then
// name the ISA; see "Mixing ISA flags" in core/simd/dispatch.hpp). A user's MaskPolicy may use
// plain member functions instead (fusion.hpp).
#pragma once

#include <algorithm>
#include <concepts>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::softmax {

enum class TileClass { Skip, Full, Partial, CausalPartial };

// A query tile: rows [r0, r1) with key positions p = r + offset (offset = S − T).
struct RowRange {
  index_t r0, r1, offset;
  index_t p_first() const noexcept { return r0 + offset; }
  index_t p_last() const noexcept { return r1 - 1 + offset; }
};
struct KeyRange {
  index_t j0, j1;
};

template <class M>
concept MaskPolicy =
    requires(const M& m, RowRange rows, KeyRange keys, index_t r, index_t p, index_t j) {
      { m.classify(rows, keys) } -> std::same_as<TileClass>;
      { m.visible(r, p, j) } -> std::same_as<bool>;  // r: query row, p: its key position
    };

}  // namespace polyattn::softmax

namespace polyattn::softmax {
inline namespace POLYATTN_ISA_NS {

/// Whether a tile needs a per-element mask (Partial or CausalPartial).
constexpr bool is_partial(TileClass c) noexcept {
  return c == TileClass::Partial || c == TileClass::CausalPartial;
}

/// The class of a tile under two masks at once (visible = visible_a ∧ visible_b).
constexpr TileClass compose(TileClass a, TileClass b) noexcept {
  if (a == TileClass::Skip || b == TileClass::Skip) return TileClass::Skip;
  if (a == TileClass::Full) return b;
  if (b == TileClass::Full) return a;
  return a == TileClass::CausalPartial && b == TileClass::CausalPartial ? TileClass::CausalPartial
                                                                        : TileClass::Partial;
}

}  // namespace POLYATTN_ISA_NS
}  // namespace polyattn::softmax

namespace polyattn::softmax {

struct NoMask {
  template <simd::SimdArch A = simd::scalar_arch>
  TileClass classify(RowRange, KeyRange) const noexcept {
    return TileClass::Full;
  }
  template <simd::SimdArch A = simd::scalar_arch>
  bool visible(index_t, index_t, index_t) const noexcept {
    return true;
  }
};

struct Causal {
  template <simd::SimdArch A = simd::scalar_arch>
  TileClass classify(RowRange rows, KeyRange keys) const noexcept {
    if (keys.j0 > rows.r1 - 1 + rows.offset) return TileClass::Skip;
    if (keys.j1 - 1 <= rows.r0 + rows.offset) return TileClass::Full;
    return TileClass::CausalPartial;
  }
  template <simd::SimdArch A = simd::scalar_arch>
  bool visible(index_t, index_t p, index_t j) const noexcept {
    return j <= p;
  }
};

struct SlidingWindow {
  index_t window;  // > 0
  template <simd::SimdArch A = simd::scalar_arch>
  TileClass classify(RowRange rows, KeyRange keys) const noexcept {
    const index_t p_first = rows.r0 + rows.offset, p_last = rows.r1 - 1 + rows.offset;
    if (keys.j0 > p_last || keys.j1 - 1 <= p_first - window) return TileClass::Skip;
    if (keys.j1 - 1 <= p_first && keys.j0 > p_last - window) return TileClass::Full;
    return TileClass::Partial;
  }
  template <simd::SimdArch A = simd::scalar_arch>
  bool visible(index_t, index_t p, index_t j) const noexcept {
    return j <= p && j > p - window;
  }
};

struct BlockSparse {
  const BlockMask* mask;
  index_t batch, head;
  index_t q_offset = 0, k_offset = 0;  // packed position of sequence row 0 / key 0
  template <simd::SimdArch A = simd::scalar_arch>
  TileClass classify(RowRange rows, KeyRange keys) const noexcept {
    const index_t bq = mask->block_q(), bk = mask->block_k();
    const index_t qb0 = (rows.r0 + q_offset) / bq, qb1 = (rows.r1 - 1 + q_offset) / bq;
    const index_t kb0 = (keys.j0 + k_offset) / bk, kb1 = (keys.j1 - 1 + k_offset) / bk;
    bool any = false, all = true;
    for (index_t qb = qb0; qb <= qb1; ++qb)
      for (index_t kb = kb0; kb <= kb1; ++kb) {
        const bool v = mask->visible(batch, head, qb, kb);
        any = any || v;
        all = all && v;
      }
    return !any ? TileClass::Skip : (all ? TileClass::Full : TileClass::Partial);
  }
  template <simd::SimdArch A = simd::scalar_arch>
  bool visible(index_t r, index_t, index_t j) const noexcept {
    return mask->visible(batch, head, (r + q_offset) / mask->block_q(),
                         (j + k_offset) / mask->block_k());
  }
};

static_assert(MaskPolicy<NoMask> && MaskPolicy<Causal> && MaskPolicy<SlidingWindow> &&
              MaskPolicy<BlockSparse>);

// The masks of one (sequence, query head), composed as in the header comment.
struct MaskSet {
  bool causal = false;
  index_t window = 0;       // 0 = off
  index_t sink_tokens = 0;  // keys [0, sink_tokens) bypass window and block mask
  BlockSparse block{nullptr, 0, 0};

  static MaskSet from(const SoftmaxOptions& opt, index_t batch, index_t head, index_t q_offset,
                      index_t k_offset) {
    MaskSet m;
    m.causal = opt.causal;
    m.window = opt.window;
    m.sink_tokens = opt.sink_tokens;
    m.block = BlockSparse{opt.block_mask, batch, head, q_offset, k_offset};
    return m;
  }

  bool masks_anything() const noexcept { return causal || window > 0 || block.mask != nullptr; }

  template <simd::SimdArch A = simd::scalar_arch>
  TileClass classify(RowRange rows, KeyRange keys) const noexcept {
    const TileClass c = causal ? Causal{}.classify<A>(rows, keys) : TileClass::Full;
    if (c == TileClass::Skip) return TileClass::Skip;
    TileClass wb = window > 0 ? SlidingWindow{window}.classify<A>(rows, keys) : TileClass::Full;
    TileClass b = TileClass::Full;
    if (wb != TileClass::Skip && block.mask != nullptr) {
      b = block.classify<A>(rows, keys);
      wb = b == TileClass::Skip ? b : (b == TileClass::Partial ? b : wb);
    }
    if (keys.j0 < sink_tokens) {  // sink keys bypass window and block mask
      if (keys.j1 <= sink_tokens)
        wb = TileClass::Full;
      else if (wb != TileClass::Full)
        wb = TileClass::Partial;
    }
    if (wb == TileClass::Skip) return TileClass::Skip;
    if (c == TileClass::Full && wb == TileClass::Full) return TileClass::Full;
    // Causality is the only mask left inside the tile when there is no window and the tile's
    // block-mask blocks are all set (sink keys are then visible anyway).
    if (c == TileClass::CausalPartial && window == 0 && b == TileClass::Full)
      return TileClass::CausalPartial;
    return TileClass::Partial;
  }

  template <simd::SimdArch A = simd::scalar_arch>
  bool visible(index_t r, index_t p, index_t j) const noexcept {
    if (causal && j > p) return false;
    if (j < sink_tokens) return true;
    if (window > 0 && !(j <= p && j > p - window)) return false;
    return block.mask == nullptr || block.visible<A>(r, p, j);
  }
};

static_assert(MaskPolicy<MaskSet>);

}  // namespace polyattn::softmax
