// tests/sparse/test_papers_seer_gate.cpp — GateScoreSelector (sparse/gate.hpp, SeerAttention's
// learned-gate selection): the mask against a naive builder over every (sequence, query block,
// head) — candidates by testing every (query, key) pair (sparse_test_util), the rule applied to
// the gate scores read in double — for top-k, raw thresholds and thresholds on the softmax over
// the candidates, per-query-head and per-kv-group scores, the awkward shapes of the selector tests
// (varlen, T ≠ S, decode, windows); non-finite scores; sparse_attention with it against the double
// reference with the same mask; bad scores and parameters throw a named polyattn::Error with the
// mask untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "polyattn/reference/softmax.hpp"
#include "polyattn/sparse/gate.hpp"
#include "polyattn/sparse/operator.hpp"
#include "sparse/sparse_test_util.hpp"

namespace polyattn::test::sparse_util {
namespace {

namespace ps = ::polyattn::sparse;
using Rule = ps::GateScoreSelector::Rule;

// Gate scores [B, G, nQB, nKB] in [−3, 3).
Tensor<float, 4> gate_scores(const Problem& p, index_t G, index_t bs, std::uint64_t seed) {
  const index_t nqb = BlockMask::blocks_for(p.T, bs), nkb = BlockMask::blocks_for(p.S, bs);
  Tensor<float, 4> t({p.B, G, nqb, nkb});
  t.data = random_vector(t.data.size(), seed, -3.f, 3.f);
  return t;
}

// The selector's rule on one piece, from the definitions in sparse/gate.hpp.
Expected expected_gate(const Problem& p, const SoftmaxOptions& opt, index_t bs,
                       const ps::GateScoreSelector& sel, const Tensor<float, 4>& sc) {
  Expected e = expected_for(p, bs);
  const index_t G = sc.shape[1];
  const auto score = [&](index_t b, index_t g, index_t qb, index_t kb) {
    return static_cast<double>(
        sc.data[static_cast<std::size_t>(((b * G + g) * sc.shape[2] + qb) * sc.shape[3] + kb)]);
  };
  for (const Piece& pc : pieces(p, opt, bs)) {
    const std::set<index_t> kp = kept(pc, sel.keep, bs);
    for (index_t h = 0; h < p.HQ; ++h) {
      const index_t g = G == p.HQ ? h : h / (p.HQ / p.HKV);
      for (const index_t kb : kp) e.require(pc.b, h, pc.qb, kb);
      if (sel.rule == Rule::TopK) {
        std::vector<std::pair<index_t, double>> c;
        for (const index_t kb : pc.cand)
          if (kp.count(kb) == 0) {
            const double s = score(pc.b, g, pc.qb, kb);
            c.push_back({kb, std::isnan(s) ? -INFINITY : s});
          }
        std::stable_sort(c.begin(), c.end(),
                         [](const auto& a, const auto& b) { return a.second > b.second; });
        for (std::size_t r = 0; r < std::min(c.size(), static_cast<std::size_t>(sel.top_k)); ++r)
          e.require(pc.b, h, pc.qb, c[r].first);
      } else if (!sel.probabilities) {
        for (const index_t kb : pc.cand)
          if (score(pc.b, g, pc.qb, kb) > sel.threshold) e.require(pc.b, h, pc.qb, kb);
      } else {
        bool finite = true;
        double m = -INFINITY, den = 0.0;
        for (const index_t kb : pc.cand) {
          finite = finite && std::isfinite(score(pc.b, g, pc.qb, kb));
          m = std::max(m, score(pc.b, g, pc.qb, kb));
        }
        for (const index_t kb : pc.cand) den += std::exp(score(pc.b, g, pc.qb, kb) - m);
        for (const index_t kb : pc.cand) {
          const double w = std::exp(score(pc.b, g, pc.qb, kb) - m) / den;
          if (!finite || w > sel.threshold + 1e-12)
            e.require(pc.b, h, pc.qb, kb);
          else if (w > sel.threshold - 1e-12)
            e.permit(pc.b, h, pc.qb, kb);  // summation order may tip it
        }
      }
    }
  }
  return e;
}

TEST(SeerGateSelector, MatchesNaive) {
  const ps::KeepOptions keeps[] = {{.diagonal = false}, {}, {.sink_blocks = 1, .local_blocks = 2}};
  for (const Case& c : cases()) {
    const Problem p = c.problem(41);
    for (const index_t G : {c.HQ, c.HKV}) {
      const Tensor<float, 4> sc = gate_scores(p, G, c.block, 42 + static_cast<std::uint64_t>(G));
      for (const auto& keep : keeps) {
        std::vector<ps::GateScoreSelector> sels;
        for (const index_t k : {index_t{0}, index_t{1}, index_t{3}, index_t{50}})
          sels.push_back({.block = c.block,
                          .scores = sc.cview(),
                          .rule = Rule::TopK,
                          .top_k = k,
                          .keep = keep});
        for (const double t : {-1.0, 0.5, 2.9})
          sels.push_back({.block = c.block, .scores = sc.cview(), .threshold = t, .keep = keep});
        for (const double t : {0.05, 0.2})
          sels.push_back({.block = c.block,
                          .scores = sc.cview(),
                          .threshold = t,
                          .probabilities = true,
                          .keep = keep});
        for (const auto& sel : sels) {
          SCOPED_TRACE(std::string(c.name) + " G " + std::to_string(G) + " rule " +
                       std::to_string(static_cast<int>(sel.rule)) + " k " +
                       std::to_string(sel.top_k) + " t " + std::to_string(sel.threshold) +
                       " probs " + std::to_string(sel.probabilities) + " diag " +
                       std::to_string(keep.diagonal));
          BlockMask m;
          sel.select(p.inputs(), c.options(), m);
          expect_mask(m, expected_gate(p, c.options(), c.block, sel, sc), c.block);
        }
      }
    }
  }
}

TEST(SeerGateSelector, NonFiniteScores) {
  const Case c = cases()[0];
  const Problem p = c.problem(43);
  Tensor<float, 4> sc = gate_scores(p, c.HQ, c.block, 44);
  sc.data[5] = NAN;
  sc.data[17] = INFINITY;
  sc.data[40] = -INFINITY;
  for (const auto& sel :
       {ps::GateScoreSelector{.block = c.block,
       .scores = sc.cview(),
       .rule = Rule::TopK,
       .top_k = 2,
       .keep = {.diagonal = false}},
        ps::GateScoreSelector{
            .block = c.block, .scores = sc.cview(), .threshold = 0.0, .keep = {.diagonal = false}},
        ps::GateScoreSelector{.block = c.block,
        .scores = sc.cview(),
        .threshold = 0.1,
        .probabilities = true,
        .keep = {.diagonal = false}}}) {
    BlockMask m;
    sel.select(p.inputs(), c.options(), m);
    expect_mask(m, expected_gate(p, c.options(), c.block, sel, sc), c.block);
  }
}

TEST(SeerGateSelector, SparseAttentionMatchesReferenceWithItsMask) {
  for (const Case& c : cases()) {
    const Problem p = c.problem(45);
    const Tensor<float, 4> sc = gate_scores(p, c.HKV, c.block, 46);
    const ps::GateScoreSelector sel{
        .block = c.block, .scores = sc.cview(), .threshold = 0.1, .probabilities = true};
    Tensor<float, 4> o({p.B, p.T, p.HQ, p.Dv}, -7777.f);
    BlockMask mask;
    ps::sparse_attention(sel, p.inputs(), c.options(), o.view(), mask);
    SoftmaxOptions opt = c.options();
    opt.block_mask = &mask;
    Tensor<double, 4> want({p.B, p.T, p.HQ, p.Dv});
    reference::softmax_attention(p.inputs(), opt, want.view());
    EXPECT_LT(rel_rmse(o.data, want.data), kRelRmseBound) << c.name;
  }
}

TEST(SeerGateSelector, BadArgumentsThrowNamedErrorMaskUntouched) {
  const Case c = cases()[0];  // HQ 4, HKV 2
  const Problem p = c.problem(47);
  const Tensor<float, 4> good = gate_scores(p, c.HQ, c.block, 48);
  const Tensor<float, 4> heads3 = gate_scores(p, 3, c.block, 48);
  Tensor<float, 4> short_rows({p.B, c.HQ, 2, good.shape[3]});
  const auto expect = [&](const ps::GateScoreSelector& sel, const std::string& name) {
    BlockMask m = BlockMask::for_lengths(1, 1, 64, 64, 64, 64);
    const std::vector<std::uint8_t> before = m.bytes();
    try {
      sel.select(p.inputs(), c.options(), m);
      ADD_FAILURE() << "no error, expected " << name;
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), name) << e.what();
    }
    EXPECT_EQ(m.bytes(), before);
  };
  expect({.block = c.block}, "gate_scores");
  expect({.block = c.block, .scores = heads3.cview()}, "gate_scores");
  expect({.block = c.block, .scores = short_rows.cview()}, "gate_scores");
  expect({.block = 32, .scores = good.cview()}, "gate_scores");  // blocks of 64 in the scores
  expect({.block = c.block, .scores = good.cview(), .rule = Rule::TopK, .top_k = -1}, "top_k");
  expect({.block = c.block, .scores = good.cview(), .threshold = NAN}, "threshold");
  expect({.block = 0, .scores = good.cview()}, "block_size");
  expect({.block = c.block, .scores = good.cview(), .keep = {.sink_blocks = -1}}, "sink_blocks");
}

}  // namespace
}  // namespace polyattn::test::sparse_util
