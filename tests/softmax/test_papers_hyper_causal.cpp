// tests/softmax/test_papers_hyper_causal.cpp — causal HyperAttention (softmax/hyper_causal.hpp):
// hyper_causal_plan + hyper_causal_attention (one masked, shifted causal softmax) against
// reference::hyper_causal_attention, which follows the authors' recursion step by step (causal
// halves, the unmasked lower-left block by sorted blocks + sampled residual, lse merges), in
// double — GQA, batch, hashed and exact levels, a single leaf (= exact causal attention), thread
// counts; bad arguments throw a named polyattn::Error with the output untouched.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/expect_error.hpp"
#include "common/test_util.hpp"
#include "polyattn/reference/hyper_causal.hpp"
#include "softmax/papers3_kernels.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_error;
using polyattn::test::kRelRmseBound;
using polyattn::test::kSentinel;
using polyattn::test::rel_rmse;
using polyattn::test::SoftmaxData;

// Ranks of [B, HQ, 2^L − 1, m], each in [0, n_half) of its level.
std::vector<std::int64_t> draw(index_t BH, index_t T, index_t L, index_t m, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> s;
  for (index_t bh = 0; bh < BH; ++bh)
    for (index_t l = 0; l < L; ++l)
      for (index_t seg = 0; seg < (index_t{1} << l); ++seg)
        for (index_t t = 0; t < m; ++t)
          s.push_back(std::uniform_int_distribution<std::int64_t>(0, (T >> (l + 1)) - 1)(rng));
  return s;
}

SoftmaxOptions causal_options() {
  SoftmaxOptions o;
  o.causal = true;
  return o;
}

TEST(HyperCausal, MatchesTheAuthorsRecursion) {
  struct Config {
    index_t B, T, block, min_len, r, m, L;
  };
  // 256: levels of halves 128 and 64, both hashed; 192: 96 hashed, 48 exact (< min_len 50);
  // 320: 160 and 80 hashed with many samples, 40 exact, leaves of 40.
  for (const Config c : {Config{2, 256, 16, 64, 4, 20, 2}, Config{1, 192, 16, 50, 3, 7, 2},
                         Config{1, 320, 16, 60, 5, 300, 3}}) {
    SCOPED_TRACE("T " + std::to_string(c.T) + " min_len " + std::to_string(c.min_len));
    SoftmaxData x({.B = c.B, .T = c.T, .S = c.T, .HQ = 4, .HKV = 2, .D = 32, .Dv = 24}, {}, 201);
    const std::vector<float> proj =
        test::random_vector(static_cast<std::size_t>(32 * c.r), 202, -1.f, 1.f);
    const std::vector<std::int64_t> samples = draw(c.B * 4, c.T, c.L, c.m, 203);
    const softmax::HyperCausalPlan plan =
        softmax::hyper_causal_plan(x.inputs(), proj, c.r, c.block, c.min_len, samples, c.m);
    ASSERT_EQ(plan.levels, c.L);
    std::vector<float> got(x.out_size(), kSentinel);
    softmax::hyper_causal_attention(x.inputs(), causal_options(), plan,
                                    bthd(got.data(), c.B, c.T, 4, 24));
    std::vector<double> want(x.out_size(), NAN);
    reference::hyper_causal_attention(x.inputs(), proj, c.r, c.block, c.min_len, samples, c.m,
                                      bthd(want.data(), c.B, c.T, 4, 24));
    const double err = rel_rmse(got, want);
    EXPECT_LT(err, kRelRmseBound);
    std::printf("[ hyper-causal T=%lld ] rel RMSE vs reference %.3g\n", static_cast<long long>(c.T),
                err);
    // The estimate differs from exact causal attention (the test sees the sampling).
    EXPECT_GT(rel_rmse(got, test::run_reference(x.inputs(), causal_options())), 1e-3);
    // Any thread count gives the same bits.
    std::vector<float> threaded(x.out_size(), kSentinel);
    softmax::hyper_causal_attention(x.inputs(), causal_options(), plan,
                                    bthd(threaded.data(), c.B, c.T, 4, 24), ThreadPool(3));
    EXPECT_EQ(threaded, got);
  }
}

TEST(HyperCausal, OneLeafIsExactCausalAttention) {
  SoftmaxData x({.B = 1, .T = 100, .S = 100, .HQ = 3, .HKV = 1, .D = 16, .Dv = 16}, {}, 204);
  const std::vector<float> proj = test::random_vector(16 * 3, 205, -1.f, 1.f);
  const softmax::HyperCausalPlan plan =
      softmax::hyper_causal_plan(x.inputs(), proj, 3, 7, 100, {}, 1);
  EXPECT_EQ(plan.levels, 0);
  std::vector<float> got(x.out_size(), kSentinel);
  softmax::hyper_causal_attention(x.inputs(), causal_options(), plan,
                                  bthd(got.data(), 1, 100, 3, 16));
  EXPECT_LT(rel_rmse(got, test::run_reference(x.inputs(), causal_options())), kRelRmseBound);
}

TEST(HyperCausal, BadArgumentsThrowNamedErrorOutputUntouched) {
  SoftmaxData x({.B = 1, .T = 128, .S = 128, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 206);
  SoftmaxData y({.B = 1, .T = 64, .S = 128, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 206);
  SoftmaxData z({.B = 1, .T = 64, .S = 64, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 206);
  const std::vector<float> proj(8 * 3, 0.5f);
  // 128 → halves 64 (hashed) → leaves of 32 ≤ min_len 32: L = 2, 3 blocks per head.
  const std::vector<std::int64_t> samples(2 * 3 * 5, 3);
  expect_error("projections",
               [&] { softmax::hyper_causal_plan(x.inputs(), proj, 4, 16, 32, samples, 5); });
  expect_error("block",
               [&] { softmax::hyper_causal_plan(x.inputs(), proj, 3, 24, 32, samples, 5); });
  expect_error("block",
               [&] { softmax::hyper_causal_plan(x.inputs(), proj, 3, 0, 32, samples, 5); });
  expect_error("min_len",
               [&] { softmax::hyper_causal_plan(x.inputs(), proj, 3, 16, 0, samples, 5); });
  expect_error("min_len",  // 128 → 64 → 32 → 16 → 8 → 4 → 2 → 1: fine; 96 → … → 3 is odd
               [&] {
                 SoftmaxData w({.B = 1, .T = 96, .S = 96, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {},
                               206);
                 softmax::hyper_causal_plan(w.inputs(), proj, 3, 1, 2, samples, 5);
               });
  expect_error("q", [&] { softmax::hyper_causal_plan(y.inputs(), proj, 3, 16, 32, samples, 5); });
  expect_error("samples",
               [&] { softmax::hyper_causal_plan(x.inputs(), proj, 3, 16, 32, samples, 4); });
  std::vector<std::int64_t> bad = samples;
  bad[7] = 32;  // level 1's n_half is 32
  expect_error("samples", [&] { softmax::hyper_causal_plan(x.inputs(), proj, 3, 16, 32, bad, 5); });
  const softmax::HyperCausalPlan plan =
      softmax::hyper_causal_plan(x.inputs(), proj, 3, 16, 32, samples, 5);
  std::vector<float> o(z.out_size(), kSentinel);
  expect_error("plan", [&] {
    softmax::hyper_causal_attention(z.inputs(), causal_options(), plan,
                                    bthd(o.data(), 1, 64, 2, 8));
  });
  std::vector<float> o2(x.out_size(), kSentinel);
  expect_error("opt", [&] {
    softmax::hyper_causal_attention(x.inputs(), {}, plan, bthd(o2.data(), 1, 128, 2, 8));
  });
  for (const float v : o) ASSERT_EQ(v, kSentinel);
  for (const float v : o2) ASSERT_EQ(v, kSentinel);
}

}  // namespace
