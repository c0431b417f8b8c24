// tests/softmax/test_papers_longheads.cpp — LongHeads (softmax/longheads.hpp): chunk keys against
// reference::longheads_chunk_keys (double, from the definitions); each row's chunks against
// reference::longheads_select; the mask's tile classes against its element rule;
// longheads_attention against reference::longheads_attention with the same chunks (GQA, batch,
// Dv ≠ D, with and without opt.causal); decode rows (T < S, the prefill's chunk keys) equal to
// the prefill's; bad arguments throw a named polyattn::Error with the output untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/expect_error.hpp"
#include "common/test_util.hpp"
#include "polyattn/reference/longheads.hpp"
#include "softmax/papers2_kernels.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_error;
using polyattn::test::kRelRmseBound;
using polyattn::test::kSentinel;
using polyattn::test::rel_rmse;
using polyattn::test::SoftmaxData;
using softmax::LongHeadsChunks;
using softmax::LongHeadsSelection;

constexpr index_t kW = 16, kN = 5;

std::vector<std::vector<index_t>> lists(const LongHeadsSelection& s) {
  std::vector<std::vector<index_t>> out;
  for (index_t b = 0; b < s.B; ++b)
    for (index_t h = 0; h < s.HQ; ++h)
      for (index_t i = 0; i < s.T; ++i) {
        std::vector<index_t> l;
        for (index_t k = 0; k < s.n; ++k)
          if (s.of(b, h, i)[k] >= 0) l.push_back(s.of(b, h, i)[k]);
        out.push_back(l);
      }
  return out;
}

TEST(LongHeadsChunks, KeysAndSelectionMatchReference) {
  SoftmaxData x({.B = 2, .T = 200, .S = 200, .HQ = 4, .HKV = 2, .D = 16, .Dv = 24}, {}, 81);
  const LongHeadsChunks c = softmax::longheads_chunk_keys(x.inputs(), kW);
  const std::vector<double> want = reference::longheads_chunk_keys(x.inputs(), kW);
  ASSERT_EQ(c.G, 200 / kW);
  ASSERT_EQ(c.r.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(c.r[i], want[i], 1e-12);
  const LongHeadsSelection sel = softmax::longheads_select(x.inputs(), c, kN);
  const auto want_sel = reference::longheads_select(x.inputs(), want, c.G, kW, kN);
  const auto got = lists(sel);
  ASSERT_EQ(got.size(), want_sel.size());
  index_t ranked = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i], want_sel[i]) << "row " << i;
    ranked += got[i].size() == static_cast<std::size_t>(kN) && got[i].back() >= kN;
  }
  EXPECT_GT(ranked, 100);  // rows that did rank chunks
}

TEST(LongHeadsMask, TileClassesAgreeWithTheRule) {
  SoftmaxData x({.B = 1, .T = 180, .S = 180, .HQ = 1, .HKV = 1, .D = 8, .Dv = 8}, {}, 82);
  const LongHeadsChunks c = softmax::longheads_chunk_keys(x.inputs(), 8);
  const LongHeadsSelection sel = softmax::longheads_select(x.inputs(), c, 4);
  const softmax::LongHeadsMask m{&sel};
  const auto bound = m.bind(softmax::HeadContext{0, 0, 0, 0, 0, 0, 180, 180});
  index_t skips = 0;
  for (const index_t tq : {index_t{1}, index_t{8}, index_t{64}})
    for (const index_t tk : {index_t{4}, index_t{8}, index_t{64}})
      for (index_t r0 = 0; r0 < 180; r0 += tq)
        for (index_t j0 = 0; j0 < 180; j0 += tk) {
          const index_t r1 = std::min<index_t>(r0 + tq, 180), j1 = std::min<index_t>(j0 + tk, 180);
          bool any = false, all = true, causal_exact = true;
          for (index_t r = r0; r < r1; ++r)
            for (index_t j = j0; j < j1; ++j) {
              const auto* s = sel.of(0, 0, r);
              const bool v =
                  j <= r && std::find(s, s + 4, static_cast<std::int32_t>(j / 8)) != s + 4;
              ASSERT_EQ(bound.visible(r, r, j), v);
              any = any || v;
              all = all && v;
              causal_exact = causal_exact && (v == (j <= r));
            }
          const auto cl = bound.classify(softmax::RowRange{r0, r1, 0}, softmax::KeyRange{j0, j1});
          if (cl == softmax::TileClass::Skip) {
            EXPECT_FALSE(any);
            ++skips;
          }
          if (cl == softmax::TileClass::Full) {
            EXPECT_TRUE(all);
          }
          if (cl == softmax::TileClass::CausalPartial) {
            EXPECT_TRUE(causal_exact);
          }
        }
  EXPECT_GT(skips, 0);
}

std::vector<double> reference_o(const SoftmaxData& x, const SoftmaxOptions& opt,
                                const LongHeadsSelection& s) {
  std::vector<double> o(x.out_size(), NAN);
  reference::longheads_attention(x.inputs(), opt, lists(s), s.chunk,
                                 bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
  return o;
}
std::vector<float> kernel_o(const SoftmaxData& x, const SoftmaxOptions& opt,
                            const LongHeadsSelection& s) {
  std::vector<float> o(x.out_size(), kSentinel);
  softmax::longheads_attention(x.inputs(), opt, s, bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
  return o;
}

TEST(LongHeadsAttention, MatchesReference) {
  SoftmaxData x({.B = 1, .T = 128, .S = 128, .HQ = 4, .HKV = 2, .D = 32, .Dv = 24}, {}, 83);
  const LongHeadsSelection sel =
      softmax::longheads_select(x.inputs(), softmax::longheads_chunk_keys(x.inputs(), kW), kN);
  for (const bool causal : {false, true}) {
    SoftmaxOptions opt;
    opt.causal = causal;
    EXPECT_LT(rel_rmse(kernel_o(x, opt, sel), reference_o(x, opt, sel)), kRelRmseBound) << causal;
  }
}

TEST(LongHeadsAttention, DecodeRowsEqualThePrefill) {
  const index_t S = 150, HQ = 2, D = 16;
  SoftmaxData full({.B = 1, .T = S, .S = S, .HQ = HQ, .HKV = 1, .D = D, .Dv = D}, {}, 84);
  const LongHeadsChunks c = softmax::longheads_chunk_keys(full.inputs(), kW);
  const LongHeadsSelection all = softmax::longheads_select(full.inputs(), c, kN);
  const std::vector<float> prefill = kernel_o(full, {}, all);
  for (const index_t n : {index_t{1}, index_t{7}}) {
    SoftmaxData part({.B = 1, .T = n, .S = S, .HQ = HQ, .HKV = 1, .D = D, .Dv = D}, {}, 84);
    part.q.assign(full.q.end() - static_cast<std::ptrdiff_t>(n * HQ * D), full.q.end());
    const LongHeadsSelection sel = softmax::longheads_select(part.inputs(), c, kN);
    for (index_t h = 0; h < HQ; ++h)
      for (index_t i = 0; i < n; ++i)
        EXPECT_TRUE(std::equal(sel.of(0, h, i), sel.of(0, h, i) + kN, all.of(0, h, S - n + i)));
    const std::vector<float> rows(prefill.end() - static_cast<std::ptrdiff_t>(n * HQ * D),
                                  prefill.end());
    EXPECT_LT(rel_rmse(kernel_o(part, {}, sel), rows), 1e-6) << n;
  }
}

TEST(LongHeadsAttention, BadArgumentsThrowNamedErrorOutputUntouched) {
  SoftmaxData x({.B = 1, .T = 64, .S = 64, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 85);
  SoftmaxData longer({.B = 1, .T = 1, .S = 200, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 85);
  SoftmaxData packed({.B = 1, .T = 64, .S = 64, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 85);
  packed.cu_seqlens = {0, 30, 64};
  expect_error("chunk", [&] { softmax::longheads_chunk_keys(x.inputs(), 0); });
  expect_error("k", [&] { softmax::longheads_chunk_keys(longer.inputs(), 8); });
  expect_error("cu_seqlens", [&] { softmax::longheads_chunk_keys(packed.inputs(), 8); });
  const LongHeadsChunks c = softmax::longheads_chunk_keys(x.inputs(), 8);
  expect_error("n", [&] { softmax::longheads_select(x.inputs(), c, 2); });
  // 8 chunk keys; a query at position 199 (chunk 24) ranks chunks up to 22.
  expect_error("chunks", [&] { softmax::longheads_select(longer.inputs(), c, 4); });
  const LongHeadsSelection sel = softmax::longheads_select(x.inputs(), c, 4);
  std::vector<float> o(longer.out_size(), kSentinel);
  expect_error("selection", [&] {
    softmax::longheads_attention(longer.inputs(), {}, sel, bthd(o.data(), 1, 1, 2, 8));
  });
  for (const float v : o) ASSERT_EQ(v, kSentinel);
}

}  // namespace
