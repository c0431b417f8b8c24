// tests/sparse/test_papers_hip.cpp — HipSelector (sparse/hip.hpp, HiP's tree-based top-k block
// search): the mask against a naive builder written from the header's definition (candidates by
// testing every (query, key) pair, the branches split and re-ranked round by round with every
// representative score recomputed in double), over the awkward shapes of the selector tests
// (varlen, T ≠ S, decode, windows, GQA) and several k / rep / stride / keep settings;
// sparse_attention with it against the double reference with the same mask; bad parameters throw
// a named polyattn::Error with the mask untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "polyattn/reference/softmax.hpp"
#include "polyattn/sparse/hip.hpp"
#include "polyattn/sparse/operator.hpp"
#include "sparse/sparse_test_util.hpp"

namespace polyattn::test::sparse_util {
namespace {

namespace ps = ::polyattn::sparse;

// The tree search of one piece and head, from the definition.
std::vector<index_t> naive_hip(const Problem& p, const SoftmaxOptions& opt, const Piece& pc,
                               index_t h, const std::vector<index_t>& list,
                               const ps::HipSelector& sel) {
  const index_t n = static_cast<index_t>(list.size()), k = sel.top_k, bs = sel.block;
  if (k == 0) return {};
  if (n <= k) return list;
  const index_t hk = h / (p.HQ / p.HKV);
  std::vector<index_t> rows;  // R'
  for (std::size_t t = static_cast<std::size_t>(sel.stride - 1); t < pc.rows.size();
       t += static_cast<std::size_t>(sel.stride))
    rows.push_back(static_cast<index_t>(t));
  if (rows.empty()) rows.push_back(static_cast<index_t>(pc.rows.size()) - 1);
  const auto rep_score = [&](index_t kb) {
    std::vector<index_t> keys;  // the block's keys some row may see, first `rep` of them
    for (index_t j = std::max(kb * bs, pc.k0); j < std::min((kb + 1) * bs, pc.k0 + pc.nk); ++j) {
      bool seen = false;
      for (const index_t pi : pc.pos)
        seen = seen ||
               ((!opt.causal || j <= pi) && (opt.window == 0 || (j <= pi && j > pi - opt.window)));
      if (seen && static_cast<index_t>(keys.size()) < sel.rep) keys.push_back(j);
    }
    double best = -INFINITY;
    for (const index_t t : rows)
      for (const index_t j : keys) {
        double dot = 0.0;
        for (index_t e = 0; e < p.D; ++e)
          dot +=
              static_cast<double>(p.q.cview()(pc.b, pc.rows[static_cast<std::size_t>(t)], h, e)) *
              static_cast<double>(p.k.cview()(pc.b, j, hk, e));
        best = std::max(best, dot);
      }
    return best;
  };
  std::vector<std::pair<index_t, index_t>> br;  // (start, size) in list positions
  for (index_t t = 0; t < k; ++t) br.push_back({n * t / k, n * (t + 1) / k - n * t / k});
  for (double g = static_cast<double>(n) / static_cast<double>(k); g > 1.0; g /= 2) {
    std::vector<std::pair<index_t, index_t>> kids;
    for (const auto& [s, m] : br) {
      kids.push_back({s, m / 2});
      kids.push_back({s + m / 2, m - m / 2});
    }
    std::vector<std::pair<double, std::size_t>> ranked;
    for (std::size_t c = 0; c < kids.size(); ++c)
      if (kids[c].second >= 1)
        ranked.push_back({rep_score(list[static_cast<std::size_t>(kids[c].first)]), c});
    std::stable_sort(ranked.begin(), ranked.end(),
                     [](const auto& x, const auto& y) { return x.first > y.first; });
    br.clear();
    for (std::size_t t = 0; t < std::min(ranked.size(), static_cast<std::size_t>(k)); ++t)
      br.push_back(kids[ranked[t].second]);
  }
  std::vector<index_t> out;
  for (const auto& b : br) out.push_back(list[static_cast<std::size_t>(b.first)]);
  return out;
}

Expected expected_hip(const Problem& p, const SoftmaxOptions& opt, const ps::HipSelector& sel) {
  Expected e = expected_for(p, sel.block);
  for (const Piece& pc : pieces(p, opt, sel.block)) {
    const std::set<index_t> kp = kept(pc, sel.keep, sel.block);
    std::vector<index_t> list;
    for (const index_t kb : pc.cand)
      if (kp.count(kb) == 0) list.push_back(kb);
    for (index_t h = 0; h < p.HQ; ++h) {
      for (const index_t kb : kp) e.require(pc.b, h, pc.qb, kb);
      for (const index_t kb : naive_hip(p, opt, pc, h, list, sel)) e.require(pc.b, h, pc.qb, kb);
    }
  }
  return e;
}

TEST(HipSelector, MatchesNaive) {
  for (const Case& c : cases()) {
    const Problem p = c.problem(51);
    std::vector<ps::HipSelector> sels;
    for (const index_t k : {index_t{0}, index_t{1}, index_t{2}, index_t{3}, index_t{50}})
      sels.push_back({.block = c.block, .top_k = k});
    sels.push_back({.block = c.block, .top_k = 2, .rep = 5, .stride = 1, .keep = {}});
    sels.push_back(
        {.block = c.block, .top_k = 3, .rep = 100, .stride = 3, .keep = {.diagonal = false}});
    for (const auto& sel : sels) {
      SCOPED_TRACE(std::string(c.name) + " k " + std::to_string(sel.top_k) + " rep " +
                   std::to_string(sel.rep) + " stride " + std::to_string(sel.stride));
      BlockMask m;
      sel.select(p.inputs(), c.options(), m);
      expect_mask(m, expected_hip(p, c.options(), sel), c.block);
      BlockMask threaded;
      sel.select(p.inputs(), c.options(), threaded, ThreadPool(3));
      EXPECT_EQ(threaded.bytes(), m.bytes());
    }
  }
}

// A longer causal sequence where the search runs several rounds (n/k up to 48 / 2).
TEST(HipSelector, DeepSearchMatchesNaive) {
  const Problem p = make_problem(1, 2000, 2000, 2, 1, 16, 52);
  const SoftmaxOptions opt{.causal = true};
  for (const index_t k : {index_t{2}, index_t{5}}) {
    const ps::HipSelector sel{.block = 32, .top_k = k, .keep = {.sink_blocks = 1}};
    BlockMask m;
    sel.select(p.inputs(), opt, m);
    const index_t kept = expect_mask(m, expected_hip(p, opt, sel), 32);
    EXPECT_LT(kept, 2 * m.q_blocks() * (k + 2) + 1);
  }
}

TEST(HipSelector, SparseAttentionMatchesReference) {
  for (const Case& c : cases()) {
    const Problem p = c.problem(53);
    const ps::HipSelector sel{.block = c.block, .top_k = 2};
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

TEST(HipSelector, BadArgumentsThrowNamedErrorMaskUntouched) {
  const Case c = cases()[0];
  const Problem p = c.problem(54);
  const auto expect = [&](const ps::HipSelector& sel, const std::string& name) {
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
  expect({.top_k = -1}, "top_k");
  expect({.rep = 0}, "rep");
  expect({.stride = 0}, "stride");
  expect({.block = 0}, "block_size");
  expect({.keep = {.local_blocks = -1}}, "local_blocks");
}

}  // namespace
}  // namespace polyattn::test::sparse_util
