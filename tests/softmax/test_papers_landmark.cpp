// tests/softmax/test_papers_landmark.cpp — Landmark attention (softmax/landmark.hpp): the
// pre-pass and the masked, shifted kernel against reference::landmark_attention (the grouped
// softmax written from the softmax weights, double) — GQA, batch, Dv ≠ D, sequences that end
// inside a block or on a landmark, with and without opt.causal; the weights of every row sum to
// one (a constant value row comes back unchanged); the mask's tile classes against its rule;
// decode rows equal to the prefill's; bad arguments throw a named polyattn::Error with the
// output untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/expect_error.hpp"
#include "common/test_util.hpp"
#include "polyattn/reference/landmark.hpp"
#include "softmax/papers2_kernels.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_error;
using polyattn::test::kRelRmseBound;
using polyattn::test::kSentinel;
using polyattn::test::rel_rmse;
using polyattn::test::SoftmaxData;
using softmax::LandmarkGates;

std::vector<double> reference_o(const SoftmaxData& x, const SoftmaxOptions& opt, index_t block) {
  std::vector<double> o(x.out_size(), NAN);
  reference::landmark_attention(x.inputs(), opt, block,
                                bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
  return o;
}
std::vector<float> kernel_o(const SoftmaxData& x, const SoftmaxOptions& opt, index_t block) {
  const LandmarkGates g = softmax::landmark_gates(x.inputs(), opt, block);
  std::vector<float> o(x.out_size(), kSentinel);
  softmax::landmark_attention(x.inputs(), opt, g, bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
  return o;
}

TEST(LandmarkAttention, MatchesReference) {
  // S = 200 with blocks of 15 + 1: ends inside a block; S = 191: ends on a landmark; 64 + 1
  // against the kernel's 64-key tiles.
  struct Config {
    index_t B, S, block;
    bool causal;
  };
  for (const Config c : {Config{2, 200, 15, false}, Config{1, 191, 15, true},
                         Config{1, 200, 64, false}, Config{1, 191, 64, true}}) {
    SoftmaxData x({.B = c.B, .T = c.S, .S = c.S, .HQ = 4, .HKV = 2, .D = 32, .Dv = 24}, {}, 91);
    SoftmaxOptions opt;
    opt.causal = c.causal;
    EXPECT_LT(rel_rmse(kernel_o(x, opt, c.block), reference_o(x, opt, c.block)), kRelRmseBound)
        << "S " << c.S << " block " << c.block << " causal " << c.causal;
  }
}

TEST(LandmarkAttention, WeightsSumToOne) {
  SoftmaxData x({.B = 1, .T = 120, .S = 120, .HQ = 2, .HKV = 1, .D = 16, .Dv = 4}, {}, 92);
  std::fill(x.v.begin(), x.v.end(), 0.75f);
  for (const float v : kernel_o(x, {}, 7)) EXPECT_NEAR(v, 0.75f, 1e-6f);
}

TEST(LandmarkMask, TileClassesAgreeWithTheRule) {
  const index_t L1 = 8;
  const softmax::LandmarkMask::Bound m{L1};
  index_t partial = 0;
  for (const index_t off : {index_t{0}, index_t{13}})
    for (const index_t tq : {index_t{1}, index_t{16}, index_t{64}})
      for (const index_t tk : {index_t{4}, index_t{16}, index_t{64}})
        for (index_t r0 = 0; r0 + off < 160; r0 += tq)
          for (index_t j0 = 0; j0 < 160 + off; j0 += tk) {
            const index_t r1 = std::min<index_t>(r0 + tq, 160),
                          j1 = std::min<index_t>(j0 + tk, 160 + off);
            bool any = false, all = true, causal_exact = true;
            for (index_t r = r0; r < r1; ++r)
              for (index_t j = j0; j < j1; ++j) {
                const index_t p = r + off;
                const bool landmark_before = (j + 1) % L1 == 0 && j < (p / L1) * L1;
                const bool v = j <= p && !landmark_before;
                ASSERT_EQ(m.visible(r, p, j), v);
                any = any || v;
                all = all && v;
                causal_exact = causal_exact && (v == (j <= p));
              }
            const auto c = m.classify(softmax::RowRange{r0, r1, off}, softmax::KeyRange{j0, j1});
            if (c == softmax::TileClass::Skip) {
              EXPECT_FALSE(any);
            }
            if (c == softmax::TileClass::Full) {
              EXPECT_TRUE(all);
            }
            if (c == softmax::TileClass::CausalPartial) {
              EXPECT_TRUE(causal_exact);
            }
            partial += c == softmax::TileClass::Partial;
          }
  EXPECT_GT(partial, 0);
}

TEST(LandmarkAttention, DecodeRowsEqualThePrefill) {
  const index_t S = 150, HQ = 2, D = 16, block = 11;
  SoftmaxData full({.B = 1, .T = S, .S = S, .HQ = HQ, .HKV = 1, .D = D, .Dv = D}, {}, 93);
  const std::vector<float> prefill = kernel_o(full, {}, block);
  for (const index_t n : {index_t{1}, index_t{9}}) {
    SoftmaxData part({.B = 1, .T = n, .S = S, .HQ = HQ, .HKV = 1, .D = D, .Dv = D}, {}, 93);
    part.q.assign(full.q.end() - static_cast<std::ptrdiff_t>(n * HQ * D), full.q.end());
    const std::vector<float> rows(prefill.end() - static_cast<std::ptrdiff_t>(n * HQ * D),
                                  prefill.end());
    EXPECT_LT(rel_rmse(kernel_o(part, {}, block), rows), 1e-6) << n;
    EXPECT_LT(rel_rmse(kernel_o(part, {}, block), reference_o(part, {}, block)), kRelRmseBound);
  }
}

TEST(LandmarkAttention, BadArgumentsThrowNamedErrorOutputUntouched) {
  SoftmaxData x({.B = 1, .T = 40, .S = 40, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 94);
  SoftmaxData y({.B = 1, .T = 30, .S = 30, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 94);
  SoftmaxData packed({.B = 1, .T = 40, .S = 40, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 94);
  packed.cu_seqlens = {0, 15, 40};
  expect_error("block", [&] { softmax::landmark_gates(x.inputs(), {}, 0); });
  expect_error("cu_seqlens", [&] { softmax::landmark_gates(packed.inputs(), {}, 4); });
  const LandmarkGates g = softmax::landmark_gates(x.inputs(), {}, 4);
  std::vector<float> o(y.out_size(), kSentinel);
  expect_error("gates", [&] {
    softmax::landmark_attention(y.inputs(), {}, g, bthd(o.data(), 1, 30, 2, 8));
  });
  for (const float v : o) ASSERT_EQ(v, kSentinel);
}

}  // namespace
