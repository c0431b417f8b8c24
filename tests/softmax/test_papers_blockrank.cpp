// tests/softmax/test_papers_blockrank.cpp — BlockRank's structured mask (softmax/blockrank.hpp):
// the mask's per-element rule against the paper's case-by-case definition and its tile classes
// against that rule (Skip sees nothing, Full everything, CausalPartial exactly j ≤ p);
// blockrank_attention against reference::blockrank_attention (double) with the same layout —
// GQA, batch rows with different layouts, varlen, composed with the options' window, decode
// (T = 1) and a chunk of the query segment equal to the prefill's rows; bad layouts throw a
// named polyattn::Error with the output untouched.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/reference/blockrank.hpp"
#include "softmax/papers2_kernels.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::kRelRmseBound;
using polyattn::test::kSentinel;
using polyattn::test::rel_rmse;
using polyattn::test::SoftmaxCase;
using polyattn::test::SoftmaxData;
using polyattn::test::SoftmaxShape;
using softmax::BlockRankLayout;
using softmax::BlockRankMask;
using softmax::KeyRange;
using softmax::RowRange;
using softmax::TileClass;
using Bounds = std::vector<std::vector<index_t>>;

// The paper's three cases, written out (not the mask's boolean form).
bool naive_visible(const std::vector<index_t>& b, index_t p, index_t j) {
  const index_t M = static_cast<index_t>(b.size()) - 1;
  if (p < 0 || j > p) return false;
  index_t sp = 0, sj = 0;
  for (index_t m = 0; m < M; ++m) {
    if (p >= b[static_cast<std::size_t>(m)]) sp = m;
    if (j >= b[static_cast<std::size_t>(m)]) sj = m;
  }
  if (sp == 0) return sj == 0;
  if (sp == M - 1) return true;
  return sj == 0 || sj == sp;
}

TEST(BlockRankMask, ElementRuleAndTileClassesMatchThePaper) {
  const Bounds bounds = {{0, 20, 83, 90, 150, 200}, {0, 64, 128, 192, 200}, {0, 1, 2, 3}};
  const BlockRankLayout layout(bounds);
  const BlockRankMask mask{&layout};
  for (index_t n = 0; n < layout.num_seqs(); ++n) {
    const auto& b = bounds[static_cast<std::size_t>(n)];
    const index_t S = b.back();
    const auto bound = mask.bind(softmax::HeadContext{0, n, 0, 0, 0, 0, S, S});
    for (index_t p = 0; p < S; ++p)
      for (index_t j = 0; j < S; ++j)
        ASSERT_EQ(bound.visible(0, p, j), naive_visible(b, p, j)) << n << " " << p << " " << j;
    // Tiles of several sizes and offsets (T ≤ S: row r sits at p = r + off).
    for (const index_t off : {index_t{0}, index_t{-5}, index_t{37}})
      for (const index_t tq : {index_t{1}, index_t{7}, index_t{16}, index_t{64}})
        for (const index_t tk : {index_t{1}, index_t{16}, index_t{64}})
          for (index_t r0 = std::max<index_t>(0, -off - tq); r0 + off < S; r0 += tq)
            for (index_t j0 = 0; j0 < S; j0 += tk) {
              const index_t r1 = std::min(r0 + tq, S - off), j1 = std::min(j0 + tk, S);
              if (r1 <= r0) continue;
              const TileClass c = bound.classify(RowRange{r0, r1, off}, KeyRange{j0, j1});
              bool any = false, all = true, causal_exact = true;
              for (index_t r = r0; r < r1; ++r)
                for (index_t j = j0; j < j1; ++j) {
                  const bool v = naive_visible(b, r + off, j);
                  any = any || v;
                  all = all && v;
                  causal_exact = causal_exact && (v == (j <= r + off));
                }
              const std::string at = "seq " + std::to_string(n) + " rows [" + std::to_string(r0) +
                                     "," + std::to_string(r1) + ") off " + std::to_string(off) +
                                     " keys [" + std::to_string(j0) + "," + std::to_string(j1) +
                                     ")";
              if (c == TileClass::Skip) {
                EXPECT_FALSE(any) << at;
              }
              if (c == TileClass::Full) {
                EXPECT_TRUE(all) << at;
              }
              if (c == TileClass::CausalPartial) {
                EXPECT_TRUE(causal_exact) << at;
              }
            }
  }
}

std::vector<double> reference_o(const SoftmaxData& x, const SoftmaxOptions& opt,
                                const Bounds& bounds) {
  std::vector<double> o(x.out_size(), NAN);
  reference::blockrank_attention(x.inputs(), opt, bounds,
                                 bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
  return o;
}

std::vector<float> kernel_o(const SoftmaxData& x, const SoftmaxOptions& opt,
                            const BlockRankLayout& layout) {
  std::vector<float> o(x.out_size(), kSentinel);
  softmax::blockrank_attention(x.inputs(), opt, layout,
                               bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
  return o;
}

TEST(BlockRankAttention, MatchesReferenceGqaBatchAndOptions) {
  // Two batch rows with different layouts; segments straddle the 64-key tiles.
  const Bounds bounds = {{0, 20, 83, 90, 150, 200}, {0, 64, 128, 192, 200}};
  const BlockRankLayout layout(bounds);
  SoftmaxData x({.B = 2, .T = 200, .S = 200, .HQ = 4, .HKV = 2, .D = 32, .Dv = 24}, {}, 11);
  for (const bool causal : {false, true})
    for (const index_t window : {index_t{0}, index_t{50}}) {
      SoftmaxOptions opt;
      opt.causal = causal;
      opt.window = window;
      const std::vector<float> got = kernel_o(x, opt, layout);
      EXPECT_LT(rel_rmse(got, reference_o(x, opt, bounds)), kRelRmseBound)
          << "causal " << causal << " window " << window;
    }
}

TEST(BlockRankAttention, MatchesReferenceVarlen) {
  SoftmaxData x({.B = 1, .T = 230, .S = 230, .HQ = 2, .HKV = 1, .D = 16, .Dv = 16}, {}, 12);
  x.cu_seqlens = {0, 130, 230};
  const Bounds bounds = {{0, 10, 50, 90, 130}, {0, 30, 70, 100}};
  const BlockRankLayout layout(bounds);
  const std::vector<float> got = kernel_o(x, {}, layout);
  EXPECT_LT(rel_rmse(got, reference_o(x, {}, bounds)), kRelRmseBound);
}

TEST(BlockRankAttention, DecodeAndQueryChunkEqualThePrefillRows) {
  const Bounds bounds = {{0, 24, 80, 136, 170}};
  const BlockRankLayout layout(bounds);
  SoftmaxData full({.B = 1, .T = 170, .S = 170, .HQ = 4, .HKV = 1, .D = 32, .Dv = 32}, {}, 13);
  const std::vector<float> prefill = kernel_o(full, {}, layout);
  for (const index_t T : {index_t{1}, index_t{20}}) {
    // The last T queries of the same tokens against every key.
    SoftmaxData part({.B = 1, .T = T, .S = 170, .HQ = 4, .HKV = 1, .D = 32, .Dv = 32}, {}, 13);
    part.q.assign(full.q.end() - static_cast<std::ptrdiff_t>(T * 4 * 32), full.q.end());
    const std::vector<float> got = kernel_o(part, {}, layout);
    const std::vector<float> rows(prefill.end() - static_cast<std::ptrdiff_t>(T * 4 * 32),
                                  prefill.end());
    EXPECT_LT(rel_rmse(got, rows), 1e-6) << "T " << T;
    EXPECT_LT(rel_rmse(got, reference_o(part, {}, bounds)), kRelRmseBound) << "T " << T;
  }
}

TEST(BlockRankAttention, BadLayoutThrowsNamedErrorOutputUntouched) {
  const auto throws_named = [](const Bounds& b) {
    try {
      BlockRankLayout layout(b);
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "blockrank_bounds");
      return true;
    }
    return false;
  };
  EXPECT_TRUE(throws_named({}));
  EXPECT_TRUE(throws_named({{0, 10}}));          // one segment
  EXPECT_TRUE(throws_named({{1, 10, 20}}));      // not from 0
  EXPECT_TRUE(throws_named({{0, 10, 10, 20}}));  // an empty segment
  EXPECT_TRUE(throws_named({{0, 12, 8, 20}}));   // decreasing

  SoftmaxData x({.B = 2, .T = 40, .S = 40, .HQ = 2, .HKV = 2, .D = 16, .Dv = 16}, {}, 14);
  for (const Bounds& b : {Bounds{{0, 10, 40}}, Bounds{{0, 10, 40}, {0, 10, 39}}}) {
    const BlockRankLayout layout(b);
    std::vector<float> o(x.out_size(), kSentinel);
    try {
      softmax::blockrank_attention(x.inputs(), {}, layout,
                                   bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "blockrank_bounds");
    }
    for (const float v : o) ASSERT_EQ(v, kSentinel);
  }
}

}  // namespace
