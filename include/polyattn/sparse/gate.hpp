// polyattn/sparse/gate.hpp — block selection from external block scores: SeerAttention's learned
// gate (Gao et al. 2024, "SeerAttention: Learning Intrinsic Sparse Attention in Your LLMs", §3:
// the AttnGate scores every (query block, key block) pair; the block mask keeps the top-k blocks
// of a row or the blocks whose gate probability exceeds a threshold; authors' code
// github.com/microsoft/SeerAttention, seer_attn/modules/common.py,
// get_sparse_attn_mask_from_threshold / _from_nz_ratio). The gate itself (pooling, projections,
// RoPE) is the model's; this selector takes its output.
//
// GateScoreSelector keeps, per (sequence, query block) with rows R, candidates C
// (sparse/selector.hpp) and query head h, its KeepOptions plus, with s_K = scores[b, g, qb, K]
// (g = h when scores has HQ heads, h / (HQ/HKV) when it has HKV heads: one gate per kv group):
//   Rule::TopK          the top_k blocks of C \ kept by s (ties and NaN, ranked lowest, to the
//                       lower block index; all of them when fewer remain)
//   Rule::Threshold     the blocks K of C with  w_K > threshold, where w = s (probabilities =
//   false)
//                       or, with probabilities = true (the gate's softmax at inference),
//                       w_K = e^{s_K − max_C s} / Σ_{K'∈C} e^{s_K' − max_C s}   in double;
//                       with probabilities and a non-finite score in C every block of C is kept
//                       (as MassSelector). A NaN raw score is never above the threshold.
// SeerAttention's own mask has no always-kept blocks: keep = {.diagonal = false} matches it
// (a row whose gate keeps nothing then sees no key and outputs zeros); its "last block dense"
// option is not here. scores: [B, HQ or HKV, ceil(T/block), ceil(S/block)] (with cu_seqlens:
// packed query and key blocks, B = 1); decode (T = 1) takes one query block per row.
// Cost: O(nQB·nKB) reads plus a selection per row.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/validate.hpp"
#include "polyattn/sparse/selector.hpp"

namespace polyattn::sparse {

struct GateScoreSelector {
  enum class Rule { TopK, Threshold };

  index_t block = kDefaultBlock;
  View4<const float> scores;  // the gate's block scores (see the header comment)
  Rule rule = Rule::Threshold;
  index_t top_k = 8;           // Rule::TopK
  double threshold = 0.0;      // Rule::Threshold: keep w > threshold
  bool probabilities = false;  // Rule::Threshold: w = softmax over C of the scores
  KeepOptions keep{};

  index_t block_size() const noexcept { return block; }

  template <Executor E = Serial>
  void select(const SoftmaxInputs& in, const SoftmaxOptions& opt, BlockMask& out,
              const E& exec = E{}) const {
    check_keep(keep);
    if (rule == Rule::TopK && top_k < 0)
      throw Error("top_k", "must be >= 0, got " + std::to_string(top_k));
    if (rule == Rule::Threshold && !std::isfinite(threshold))
      throw Error("threshold", "must be finite");
    const SelectionPlan plan(in, opt, block);
    const SoftmaxDims& d = plan.dims();
    check::required("gate_scores", scores);
    const index_t G = scores.size(1);
    if (G != d.HQ && G != d.HKV)
      throw Error("gate_scores", "expected HQ = " + std::to_string(d.HQ) + " or HKV = " +
                                     std::to_string(d.HKV) + " heads, got " + std::to_string(G));
    check::shape_is("gate_scores", scores, {d.B, G, plan.q_blocks(), plan.k_blocks()},
                    "[B, heads, ceil(T/block), ceil(S/block)]");
    fill_mask(plan, keep, out, exec,
              [&](const BlockRow& r, index_t h, std::uint8_t* marks, RowScratch& s) {
                const index_t g = G == d.HQ ? h : h / d.group;
                float* sc = s.scores.data();
                for (index_t kb = r.lo; kb <= r.hi; ++kb) sc[kb] = scores(r.b, g, r.qb, kb);
                if (rule == Rule::TopK)
                  mark_top_k(r, sc, top_k, marks, s.order);
                else
                  mark_threshold(r, sc, marks);
              });
  }

 private:
  void mark_threshold(const BlockRow& r, const float* sc, std::uint8_t* marks) const {
    if (!probabilities) {
      for (index_t kb = r.lo; kb <= r.hi; ++kb)
        if (static_cast<double>(sc[kb]) > threshold) marks[kb] = 1;
      return;
    }
    double m = -std::numeric_limits<double>::infinity();
    for (index_t kb = r.lo; kb <= r.hi; ++kb) {
      if (!std::isfinite(sc[kb])) {  // no distribution to threshold: keep the candidates
        mark_range(marks, r, r.lo, r.hi);
        return;
      }
      m = std::max(m, static_cast<double>(sc[kb]));
    }
    double den = 0.0;
    for (index_t kb = r.lo; kb <= r.hi; ++kb) den += std::exp(static_cast<double>(sc[kb]) - m);
    for (index_t kb = r.lo; kb <= r.hi; ++kb)
      if (std::exp(static_cast<double>(sc[kb]) - m) / den > threshold) marks[kb] = 1;
  }
};

static_assert(BlockSelector<GateScoreSelector>);

}  // namespace polyattn::sparse
