// polyattn/sparse/mass.hpp — cumulative-mass threshold γ on the pooled block scores
// (FlexPrefill-style query-aware selection).
//
// MassSelector keeps, per (sequence, query block) with rows R, candidates C (sparse/selector.hpp)
// and query head h, its KeepOptions plus the smallest set of blocks of C holding a fraction γ of
// the estimated attention mass:
//   s_K = scale · q̄_R · k̄_K                      (mean-pooled scores, as TopKSelector)
//   w_K = e^{s_K − max_C s} / Σ_{K'∈C} e^{s_K' − max_C s}   (softmax over the candidates)
//   sort C by s descending (ties to the lower block index) and keep the shortest prefix whose
//   Σ w ≥ γ (weights in double, summed in that order).
// The always-kept blocks are added afterwards (they do not count towards γ). γ = 1 keeps every
// block whose weight is not 0 in double. If any score of C is NaN or ±inf, every block of C is
// kept (the kernel then propagates the non-finite values). Cost: as TopKSelector plus a sort of
// the candidates per row (O(nKB log nKB)).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/sparse/pooled.hpp"
#include "polyattn/sparse/selector.hpp"

namespace polyattn::sparse {

// Marks the shortest prefix of C (by score) holding mass γ (see the header comment).
inline void mark_mass(const BlockRow& r, const float* scores, double gamma, std::uint8_t* marks,
                      RowScratch& s) {
  if (!r.has_candidates()) return;
  s.order.clear();
  bool finite = true;
  for (index_t kb = r.lo; kb <= r.hi; ++kb) {
    s.order.push_back(kb);
    finite = finite && std::isfinite(scores[kb]);
  }
  if (!finite) {
    mark_range(marks, r, r.lo, r.hi);
    return;
  }
  std::sort(s.order.begin(), s.order.end(), [scores](index_t a, index_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
  const double top = scores[s.order.front()];
  s.weights.resize(s.order.size());
  double total = 0.0;
  for (std::size_t c = 0; c < s.order.size(); ++c) {
    s.weights[c] = std::exp(static_cast<double>(scores[s.order[c]]) - top);
    total += s.weights[c];
  }
  double cum = 0.0;
  for (std::size_t c = 0; c < s.order.size(); ++c) {
    cum += s.weights[c];
    marks[s.order[c]] = 1;
    if (cum >= gamma * total) break;
  }
}

struct MassSelector {
  index_t block = kDefaultBlock;
  double gamma = 0.9;  // fraction of the estimated mass to keep, in (0, 1]
  KeepOptions keep{};

  index_t block_size() const noexcept { return block; }

  template <Executor E = Serial>
  void select(const SoftmaxInputs& in, const SoftmaxOptions& opt, BlockMask& out,
              const E& exec = E{}) const {
    check_keep(keep);
    if (!(gamma > 0.0 && gamma <= 1.0))
      throw Error("gamma", "must be in (0, 1], got " + std::to_string(gamma));
    const SelectionPlan plan(in, opt, block);
    const PooledBlocks pooled(plan, in, Feature::Identity, KeyPool::Mean, exec);
    const double g = gamma;
    fill_mask(plan, keep, out, exec,
              [&pooled, g](const BlockRow& r, index_t h, std::uint8_t* marks, RowScratch& s) {
                pooled.scores(r, h, s.scores.data());
                mark_mass(r, s.scores.data(), g, marks, s);
              });
  }
};

static_assert(BlockSelector<MassSelector>);

}  // namespace polyattn::sparse
