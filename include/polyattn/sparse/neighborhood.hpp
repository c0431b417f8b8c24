// polyattn/sparse/neighborhood.hpp — 1-D and 2-D neighbourhood attention with dilation
// (NATTEN-style), rounded out to blocks.
//
// Along one axis of length L, kernel size k ≥ 1 and dilation δ ≥ 1, position x belongs to the
// dilation group g = x mod δ, which holds L_g = ceil((L − g)/δ) positions g, g + δ, …; with
// u = x div δ its neighbours are the positions g + δ·t for t in [s, e):
//   not causal  s = clamp(u − floor(k/2), 0, max(L_g − k, 0)),  e = min(s + k, L_g)
//               (a window of k centred on u, shifted inwards at the edges so that it keeps k
//               positions when L_g ≥ k: NATTEN's rule)
//   causal      s = max(u − k + 1, 0),  e = u + 1   (u and the k − 1 group positions before it)
// Every position is its own neighbour.
//   Neighborhood1DSelector: the tokens of a sequence are the axis, L = nk, a query at sequence
//     position x = π(i) − k0 (sparse/selector.hpp; rows with x < 0 have no neighbours).
//   Neighborhood2DSelector: the tokens of a sequence are a height × width grid in row-major order
//     (token x = y·width + c; nk must equal height·width for every sequence with keys), and the
//     neighbours of (y, c) are N_y(y) × N_c(c), each axis with its own kernel, dilation, causality.
// Block level: per (sequence, query block) with rows R and candidates C, the selector keeps its
// KeepOptions plus every key block of C that holds a neighbour of at least one query of R, i.e.
// the smallest block mask under which each query can see all of its neighbours. The kernel then
// computes whole blocks, so a query also sees the non-neighbours inside those blocks: this is a
// block-sparse superset of the token-level neighbourhood mask, exact when whole blocks are
// neighbourhoods. Cost: O(Σ_rows blocks touched) — per query at most k (1-D) or k_y·blocks per
// grid-row segment (2-D) range walks, no scores.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/sparse/selector.hpp"

namespace polyattn::sparse {

struct NeighborhoodAxis {
  index_t kernel_size = 7;  // neighbours per query along this axis (fewer at a causal edge)
  index_t dilation = 1;     // distance between neighbours
  bool causal = false;      // only this and earlier positions of the axis
};

// Neighbours first, first + step, …, last (first ≤ last) of position x on an axis of `length`.
struct AxisNeighbors {
  index_t first, last, step;
};

inline AxisNeighbors axis_neighbors(const NeighborhoodAxis& a, index_t length, index_t x) noexcept {
  const index_t d = a.dilation, k = a.kernel_size;
  const index_t g = x % d, u = x / d, lg = (length - g + d - 1) / d;
  index_t s = 0, e = 0;
  if (a.causal) {
    s = std::max<index_t>(u - k + 1, 0);
    e = u + 1;
  } else {
    s = std::clamp<index_t>(u - k / 2, 0, std::max<index_t>(lg - k, 0));
    e = std::min(s + k, lg);
  }
  return {g + d * s, g + d * (e - 1), d};
}

inline void check_axis(const char* axis, const NeighborhoodAxis& a) {
  if (a.kernel_size < 1)
    throw Error("kernel_size",
                std::string(axis) + ": must be >= 1, got " + std::to_string(a.kernel_size));
  if (a.dilation < 1)
    throw Error("dilation",
                std::string(axis) + ": must be >= 1, got " + std::to_string(a.dilation));
}

// Marks the blocks of C holding packed key positions a, a + step, …, ≤ last: one visit per block.
inline void mark_strided(std::uint8_t* marks, const BlockRow& r, index_t block, index_t a,
                         index_t last, index_t step) noexcept {
  while (a <= last) {
    const index_t kb = a / block;
    mark_range(marks, r, kb, kb);
    const index_t next = (kb + 1) * block;     // first position of the next block
    a += (next - a + step - 1) / step * step;  // first neighbour at or after it
  }
}

struct Neighborhood1DSelector {
  index_t block = kDefaultBlock;
  NeighborhoodAxis axis{};
  KeepOptions keep{};

  index_t block_size() const noexcept { return block; }

  template <Executor E = Serial>
  void select(const SoftmaxInputs& in, const SoftmaxOptions& opt, BlockMask& out,
              const E& exec = E{}) const {
    check_keep(keep);
    check_axis("axis", axis);
    const SelectionPlan plan(in, opt, block);
    const NeighborhoodAxis a = axis;
    const index_t bs = block;
    fill_mask(plan, keep, out, exec,
              [a, bs](const BlockRow& r, index_t, std::uint8_t* marks, RowScratch&) {
                for (index_t i = r.r0; i < r.r1; ++i) {
                  const index_t x = r.p_first + (i - r.r0) - r.k0;
                  if (x < 0) continue;
                  const AxisNeighbors n = axis_neighbors(a, r.nk, x);
                  mark_strided(marks, r, bs, r.k0 + n.first, r.k0 + n.last, n.step);
                }
              });
  }
};

struct Neighborhood2DSelector {
  index_t block = kDefaultBlock;
  index_t height = 0, width = 0;  // token grid of every sequence: nk = height · width
  NeighborhoodAxis y{}, x{};      // along the height (rows) and the width (columns)
  KeepOptions keep{};

  index_t block_size() const noexcept { return block; }

  template <Executor E = Serial>
  void select(const SoftmaxInputs& in, const SoftmaxOptions& opt, BlockMask& out,
              const E& exec = E{}) const {
    check_keep(keep);
    check_axis("y", y);
    check_axis("x", x);
    if (height < 1) throw Error("height", "must be >= 1, got " + std::to_string(height));
    if (width < 1) throw Error("width", "must be >= 1, got " + std::to_string(width));
    const SelectionPlan plan(in, opt, block);
    for (index_t s = 0; s < plan.num_seqs(); ++s) {
      const index_t nk = plan.seqs()[static_cast<std::size_t>(s)].nk;
      if (nk > 0 && nk != height * width)
        throw Error("grid", "sequence " + std::to_string(s) + " has " + std::to_string(nk) +
                                " keys but the grid is height " + std::to_string(height) +
                                " × width " + std::to_string(width) + " = " +
                                std::to_string(height * width) + " tokens");
    }
    const NeighborhoodAxis ay = y, ax = x;
    const index_t bs = block, H = height, W = width;
    fill_mask(plan, keep, out, exec,
              [=](const BlockRow& r, index_t, std::uint8_t* marks, RowScratch&) {
                for (index_t i = r.r0; i < r.r1; ++i) {
                  const index_t t = r.p_first + (i - r.r0) - r.k0;
                  if (t < 0) continue;
                  const AxisNeighbors ny = axis_neighbors(ay, H, t / W);
                  const AxisNeighbors nx = axis_neighbors(ax, W, t % W);
                  for (index_t yy = ny.first; yy <= ny.last; yy += ny.step) {
                    const index_t row = r.k0 + yy * W;
                    mark_strided(marks, r, bs, row + nx.first, row + nx.last, nx.step);
                  }
                }
              });
  }
};

static_assert(BlockSelector<Neighborhood1DSelector> && BlockSelector<Neighborhood2DSelector>);

}  // namespace polyattn::sparse
