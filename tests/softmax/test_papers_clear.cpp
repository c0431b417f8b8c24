// tests/softmax/test_papers_clear.cpp — CLEAR's circular window (softmax/clear.hpp): the tile
// classes against the element rule (Skip sees nothing, Full everything) over grids, text
// prefixes and radii; clear_attention against reference::clear_attention (double) — GQA, a text
// prefix, radii that are and are not whole numbers, varlen, the last queries alone (T < S)
// equal to the full call's rows; bad parameters throw a named polyattn::Error with the output
// untouched.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/reference/clear.hpp"
#include "softmax/papers2_kernels.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::kRelRmseBound;
using polyattn::test::kSentinel;
using polyattn::test::rel_rmse;
using polyattn::test::SoftmaxData;
using polyattn::test::SoftmaxShape;
using softmax::ClearMask;
using softmax::KeyRange;
using softmax::RowRange;
using softmax::TileClass;

bool naive_visible(index_t L, index_t W, double r, index_t p, index_t j) {
  if (p < L || j < L) return true;
  const double dy = static_cast<double>((p - L) / W) - static_cast<double>((j - L) / W);
  const double dx = static_cast<double>((p - L) % W) - static_cast<double>((j - L) % W);
  return dy * dy + dx * dx < r * r;
}

TEST(ClearMask, TileClassesAgreeWithTheCircle) {
  index_t skips = 0, fulls = 0;
  for (const ClearMask m : {ClearMask{0, 12, 20, 3.0}, ClearMask{7, 9, 16, 2.5},
                            ClearMask{0, 40, 8, 5.5}, ClearMask{5, 4, 4, 1.0}})
    for (const index_t tq : {index_t{1}, index_t{8}, index_t{16}, index_t{64}})
      for (const index_t tk : {index_t{8}, index_t{16}, index_t{64}}) {
        const index_t S = m.keys();
        const ClearMask::Bound bound = m.bind(softmax::HeadContext{0, 0, 0, 0, 0, 0, S, S});
        for (index_t r0 = 0; r0 < S; r0 += tq)
          for (index_t j0 = 0; j0 < S; j0 += tk) {
            const index_t r1 = std::min(r0 + tq, S), j1 = std::min(j0 + tk, S);
            const TileClass c = bound.classify(RowRange{r0, r1, 0}, KeyRange{j0, j1});
            bool any = false, all = true;
            for (index_t p = r0; p < r1; ++p)
              for (index_t j = j0; j < j1; ++j) {
                const bool v = naive_visible(m.text, m.width, m.radius, p, j);
                ASSERT_EQ(bound.visible(p, p, j), v);
                any = any || v;
                all = all && v;
              }
            if (c == TileClass::Skip) {
              EXPECT_FALSE(any) << r0 << " " << j0;
              ++skips;
            }
            if (c == TileClass::Full) {
              EXPECT_TRUE(all) << r0 << " " << j0;
              ++fulls;
            }
          }
      }
  EXPECT_GT(skips, 0);  // the classes do skip and do spare masks
  EXPECT_GT(fulls, 0);
}

std::vector<double> reference_o(const SoftmaxData& x, const ClearMask& m) {
  std::vector<double> o(x.out_size(), NAN);
  reference::clear_attention(x.inputs(), {}, m.text, m.width, m.radius,
                             bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
  return o;
}
std::vector<float> kernel_o(const SoftmaxData& x, const ClearMask& m) {
  std::vector<float> o(x.out_size(), kSentinel);
  softmax::clear_attention(x.inputs(), {}, m, bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
  return o;
}

TEST(ClearAttention, MatchesReference) {
  for (const ClearMask m :
       {ClearMask{0, 12, 20, 4.0}, ClearMask{10, 14, 13, 3.5}, ClearMask{3, 6, 30, 1.0}}) {
    const index_t S = m.keys();
    SoftmaxData x({.B = 1, .T = S, .S = S, .HQ = 4, .HKV = 2, .D = 32, .Dv = 24}, {}, 31);
    EXPECT_LT(rel_rmse(kernel_o(x, m), reference_o(x, m)), kRelRmseBound)
        << m.text << " " << m.height << "x" << m.width << " r " << m.radius;
  }
}

TEST(ClearAttention, MatchesReferenceVarlen) {
  const ClearMask m{4, 8, 10, 2.5};
  SoftmaxData x({.B = 1, .T = 168, .S = 168, .HQ = 2, .HKV = 1, .D = 16, .Dv = 16}, {}, 32);
  x.cu_seqlens = {0, 84, 168};
  EXPECT_LT(rel_rmse(kernel_o(x, m), reference_o(x, m)), kRelRmseBound);
}

TEST(ClearAttention, LastQueriesAloneEqualTheFullRows) {
  const ClearMask m{6, 10, 12, 3.0};
  const index_t S = m.keys(), T = 30;
  SoftmaxData full({.B = 1, .T = S, .S = S, .HQ = 2, .HKV = 2, .D = 16, .Dv = 16}, {}, 33);
  SoftmaxData part({.B = 1, .T = T, .S = S, .HQ = 2, .HKV = 2, .D = 16, .Dv = 16}, {}, 33);
  part.q.assign(full.q.end() - static_cast<std::ptrdiff_t>(T * 2 * 16), full.q.end());
  const std::vector<float> all = kernel_o(full, m);
  const std::vector<float> rows(all.end() - static_cast<std::ptrdiff_t>(T * 2 * 16), all.end());
  EXPECT_LT(rel_rmse(kernel_o(part, m), rows), 1e-6);
  EXPECT_LT(rel_rmse(kernel_o(part, m), reference_o(part, m)), kRelRmseBound);
}

TEST(ClearAttention, BadParametersThrowNamedErrorOutputUntouched) {
  SoftmaxData x({.B = 1, .T = 40, .S = 40, .HQ = 1, .HKV = 1, .D = 16, .Dv = 16}, {}, 34);
  const auto expect = [&](const ClearMask& m, const std::string& name) {
    std::vector<float> o(x.out_size(), kSentinel);
    try {
      softmax::clear_attention(x.inputs(), {}, m, bthd(o.data(), 1, 40, 1, 16));
      ADD_FAILURE() << "no error, expected " << name;
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), name) << e.what();
    }
    for (const float v : o) ASSERT_EQ(v, kSentinel);
  };
  expect({-1, 6, 7, 2.0}, "text");
  expect({4, 0, 9, 2.0}, "height");
  expect({4, 6, 0, 2.0}, "width");
  expect({4, 6, 6, 0.0}, "radius");
  expect({4, 6, 6, NAN}, "radius");
  expect({4, 6, 7, 2.0}, "k");  // 46 keys, the call has 40
  x.cu_seqlens = {0, 10, 40};   // 40 = 2 · (4 + 4·4) packed, but sequences of 10 and 30
  expect({4, 4, 4, 2.0}, "cu_seqlens");
}

}  // namespace
