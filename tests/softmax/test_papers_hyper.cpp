// tests/softmax/test_papers_hyper.cpp — HyperAttention without causal mask (softmax/hyper.hpp):
// hyper_plan + hyper_attention (one masked, shifted softmax) against reference::hyper_attention,
// which follows the authors' algorithm step by step (sorted blocks, sampled residual with
// duplicates, lse merge), in double — GQA, batch, T < S, a few projections, samples with
// repetitions; the Gray order of the codes; bad arguments throw a named polyattn::Error with the
// output untouched.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/expect_error.hpp"
#include "common/test_util.hpp"
#include "polyattn/reference/hyper.hpp"
#include "softmax/papers2_kernels.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_error;
using polyattn::test::kRelRmseBound;
using polyattn::test::kSentinel;
using polyattn::test::rel_rmse;
using polyattn::test::SoftmaxData;

std::vector<std::int64_t> draw(index_t n, index_t S, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> u(0, S - 1);
  std::vector<std::int64_t> s(static_cast<std::size_t>(n));
  for (auto& x : s) x = u(rng);
  return s;
}

TEST(HyperAttention, GrayOrderChangesOneBitAtATime) {
  const std::vector<std::int32_t> g = softmax::hyper_gray_order(5);
  ASSERT_EQ(g.size(), 32u);
  for (std::size_t i = 1; i < g.size(); ++i) EXPECT_EQ(__builtin_popcount(g[i] ^ g[i - 1]), 1);
  std::vector<std::int32_t> sorted = g;
  std::sort(sorted.begin(), sorted.end());
  for (std::int32_t i = 0; i < 32; ++i) EXPECT_EQ(sorted[static_cast<std::size_t>(i)], i);
}

TEST(HyperAttention, MatchesTheAuthorsAlgorithm) {
  struct Config {
    index_t B, T, S, block, r, m;
  };
  for (const Config c : {Config{2, 192, 192, 32, 4, 40}, Config{1, 96, 192, 32, 3, 300},
                         Config{1, 128, 128, 64, 5, 7}}) {
    SCOPED_TRACE("T " + std::to_string(c.T) + " S " + std::to_string(c.S));
    SoftmaxData x({.B = c.B, .T = c.T, .S = c.S, .HQ = 4, .HKV = 2, .D = 32, .Dv = 24}, {}, 101);
    const std::vector<float> proj =
        test::random_vector(static_cast<std::size_t>(32 * c.r), 102, -1.f, 1.f);
    const std::vector<std::int64_t> samples = draw(c.B * 4 * c.m, c.S, 103);
    const softmax::HyperPlan plan =
        softmax::hyper_plan(x.inputs(), proj, c.r, c.block, samples, c.m);
    std::vector<float> got(x.out_size(), kSentinel);
    softmax::hyper_attention(x.inputs(), {}, plan, bthd(got.data(), c.B, c.T, 4, 24));
    std::vector<double> want(x.out_size(), NAN);
    reference::hyper_attention(x.inputs(), proj, c.r, c.block, samples, c.m,
                               bthd(want.data(), c.B, c.T, 4, 24));
    EXPECT_LT(rel_rmse(got, want), kRelRmseBound);
    // The estimate differs from exact attention (the test sees the sampling).
    EXPECT_GT(rel_rmse(got, test::run_reference(x.inputs(), {})), 1e-3);
  }
}

TEST(HyperAttention, BadArgumentsThrowNamedErrorOutputUntouched) {
  SoftmaxData x({.B = 1, .T = 64, .S = 64, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 104);
  SoftmaxData y({.B = 1, .T = 30, .S = 64, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 104);
  const std::vector<float> proj(8 * 3, 0.5f);
  const std::vector<std::int64_t> samples(2 * 5, 3);
  expect_error("projections", [&] { softmax::hyper_plan(x.inputs(), proj, 4, 16, samples, 5); });
  expect_error("block", [&] { softmax::hyper_plan(x.inputs(), proj, 3, 24, samples, 5); });
  expect_error("block", [&] { softmax::hyper_plan(y.inputs(), proj, 3, 16, samples, 5); });
  expect_error("samples", [&] { softmax::hyper_plan(x.inputs(), proj, 3, 16, samples, 4); });
  std::vector<std::int64_t> bad = samples;
  bad[3] = 64;
  expect_error("samples", [&] { softmax::hyper_plan(x.inputs(), proj, 3, 16, bad, 5); });
  const softmax::HyperPlan plan = softmax::hyper_plan(x.inputs(), proj, 3, 16, samples, 5);
  std::vector<float> o(y.out_size(), kSentinel);
  expect_error(
      "plan", [&] { softmax::hyper_attention(y.inputs(), {}, plan, bthd(o.data(), 1, 30, 2, 8)); });
  SoftmaxOptions causal;
  causal.causal = true;
  std::vector<float> o2(x.out_size(), kSentinel);
  expect_error("opt", [&] {
    softmax::hyper_attention(x.inputs(), causal, plan, bthd(o2.data(), 1, 64, 2, 8));
  });
  for (const float v : o) ASSERT_EQ(v, kSentinel);
  for (const float v : o2) ASSERT_EQ(v, kSentinel);
}

}  // namespace
