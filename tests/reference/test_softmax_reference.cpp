// Pins reference::softmax_attention to hand-computed cases and obviously-equivalent
// constructions, and checks that every bad argument throws a named polyattn::Error before any
// output element is written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/reference/softmax.hpp"

namespace {

using polyattn::test::random4;
using polyattn::test::t4;

using polyattn::BlockMask;
using polyattn::Error;
using polyattn::index_t;
using polyattn::SoftmaxInputs;
using polyattn::SoftmaxOptions;
using polyattn::TensorView;
using polyattn::reference::softmax_attention;
using polyattn::test::Tensor;

constexpr double kTol = 1e-12;

// Runs the reference with a double output of shape [B, T, HQ, Dv].
std::vector<double> run(const SoftmaxInputs& in, const SoftmaxOptions& opt) {
  Tensor<double, 4> o({in.q.size(0), in.q.size(1), in.q.size(2), in.v.size(3)});
  softmax_attention(in, opt, o.view());
  return o.data;
}

SoftmaxInputs qkv(const Tensor<float, 4>& q, const Tensor<float, 4>& k, const Tensor<float, 4>& v) {
  SoftmaxInputs in;
  in.q = q.cview();
  in.k = k.cview();
  in.v = v.cview();
  return in;
}

void expect_all_near(const std::vector<double>& got, const std::vector<double>& want,
                     double tol = kTol) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "at " << i;
}

double sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

// ---- hand-computed cases ----------------------------------------------------------------

// T = S = 2, D = 1, Dv = 2, causal, scale = 1^-0.5 = 1.
//   q = [1, 1], k = [0, 1], v0 = [1, 0], v1 = [0, 1].
//   Query 0 sees key 0 only: o0 = v0 = [1, 0].
//   Query 1: s = [1·0, 1·1] = [0, 1]; weights e^0, e^1 → o1 = [1/(1+e), e/(1+e)]
//            = [sigmoid(−1), sigmoid(1)].
TEST(SoftmaxReference, TwoTokenCausalHandComputed) {
  auto q = t4({1, 2, 1, 1}, {1, 1});
  auto k = t4({1, 2, 1, 1}, {0, 1});
  auto v = t4({1, 2, 1, 2}, {1, 0, 0, 1});
  SoftmaxOptions opt;
  opt.causal = true;
  const auto o = run(qkv(q, k, v), opt);
  EXPECT_NEAR(o[0], 1.0, kTol);
  EXPECT_NEAR(o[1], 0.0, kTol);
  EXPECT_NEAR(o[2], 1.0 / (1.0 + std::exp(1.0)), kTol);
  EXPECT_NEAR(o[3], std::exp(1.0) / (1.0 + std::exp(1.0)), kTol);
}

// Non-causal, T = 2, S = 2, D = 1: q = [1, −1], k = [0, 1], v = [0, 1].
//   Query 0: s = [0, 1] → o0 = e/(1+e) = sigmoid(1).
//   Query 1: s = [0, −1] → o1 = e^−1/(1+e^−1) = sigmoid(−1).
TEST(SoftmaxReference, TwoTokenNonCausalHandComputed) {
  auto q = t4({1, 2, 1, 1}, {1, -1});
  auto k = t4({1, 2, 1, 1}, {0, 1});
  auto v = t4({1, 2, 1, 1}, {0, 1});
  const auto o = run(qkv(q, k, v), {});
  EXPECT_NEAR(o[0], sigmoid(1.0), kTol);
  EXPECT_NEAR(o[1], sigmoid(-1.0), kTol);
}

// D = 2, default scale 2^-0.5: q1 = [1, 1], k0 = [0, 0], k1 = [1, 1], v = [0, 1], causal.
//   s = [0, 2/√2] = [0, √2] → o1 = sigmoid(√2). An explicit scale 0.5 gives s = [0, 1].
TEST(SoftmaxReference, DefaultScaleIsInvSqrtDAndExplicitScaleMultipliesQK) {
  auto q = t4({1, 2, 1, 2}, {1, 1, 1, 1});
  auto k = t4({1, 2, 1, 2}, {0, 0, 1, 1});
  auto v = t4({1, 2, 1, 1}, {0, 1});
  SoftmaxOptions opt;
  opt.causal = true;
  auto o = run(qkv(q, k, v), opt);
  EXPECT_NEAR(o[0], 0.0, kTol);
  EXPECT_NEAR(o[1], sigmoid(std::sqrt(2.0)), kTol);
  opt.scale = 0.5;
  o = run(qkv(q, k, v), opt);
  EXPECT_NEAR(o[1], sigmoid(1.0), kTol);
}

// With q = 0 every score is 0, so o_i = mean of the visible values; v = [1, 2, 4, 8].
Tensor<float, 4> zeros_q(index_t T) {
  return Tensor<float, 4>({1, T, 1, 1}, 0.f);
}
Tensor<float, 4> keys(index_t S) {
  return random4({1, S, 1, 1}, 7);
}
Tensor<float, 4> pow2_values(index_t S) {
  Tensor<float, 4> v({1, S, 1, 1});
  for (index_t j = 0; j < S; ++j) v.data[static_cast<std::size_t>(j)] = static_cast<float>(1 << j);
  return v;
}

// T = 2 < S = 3, causal: query i sits at p = i + 1. Query 0 sees keys 0, 1 → (1+2)/2 = 1.5;
// query 1 sees all → (1+2+4)/3 = 7/3.
TEST(SoftmaxReference, CausalBottomRightAlignmentTLessThanS) {
  auto q = zeros_q(2);
  auto k = keys(3);
  auto v = pow2_values(3);
  SoftmaxOptions opt;
  opt.causal = true;
  const auto o = run(qkv(q, k, v), opt);
  EXPECT_NEAR(o[0], 1.5, kTol);
  EXPECT_NEAR(o[1], 7.0 / 3.0, kTol);
}

// One query against S = 3 keys (decode): the last query sees every key.
TEST(SoftmaxReference, CausalDecodeSeesWholeCache) {
  auto q = random4({1, 1, 1, 1}, 3);
  auto k = keys(3);
  auto v = pow2_values(3);
  SoftmaxOptions causal;
  causal.causal = true;
  expect_all_near(run(qkv(q, k, v), causal), run(qkv(q, k, v), {}));
}

// T = 3 > S = 2, causal: p = i − 1. Query 0 sees nothing → 0; query 1 sees key 0 → 1;
// query 2 sees both → 1.5.
TEST(SoftmaxReference, CausalTGreaterThanSFirstQueriesSeeNothing) {
  auto q = zeros_q(3);
  auto k = keys(2);
  auto v = pow2_values(2);
  SoftmaxOptions opt;
  opt.causal = true;
  const auto o = run(qkv(q, k, v), opt);
  EXPECT_EQ(o[0], 0.0);
  EXPECT_NEAR(o[1], 1.0, kTol);
  EXPECT_NEAR(o[2], 1.5, kTol);
}

// Window w = 2, T = S = 4: keys [p−1, p] → [1, (1+2)/2, (2+4)/2, (4+8)/2] = [1, 1.5, 3, 6].
TEST(SoftmaxReference, SlidingWindowHandComputed) {
  auto q = zeros_q(4);
  auto k = keys(4);
  auto v = pow2_values(4);
  SoftmaxOptions opt;
  opt.causal = true;
  opt.window = 2;
  expect_all_near(run(qkv(q, k, v), opt), {1.0, 1.5, 3.0, 6.0});
  // The window alone bounds keys above by p as well.
  opt.causal = false;
  expect_all_near(run(qkv(q, k, v), opt), {1.0, 1.5, 3.0, 6.0});
}

// T = 2 < S = 4, w = 2: queries at p = 2, 3 → [(2+4)/2, (4+8)/2] = [3, 6].
TEST(SoftmaxReference, SlidingWindowBottomRightAligned) {
  auto q = zeros_q(2);
  auto k = keys(4);
  auto v = pow2_values(4);
  SoftmaxOptions opt;
  opt.causal = true;
  opt.window = 2;
  expect_all_near(run(qkv(q, k, v), opt), {3.0, 6.0});
}

TEST(SoftmaxReference, WindowAtLeastTEqualsCausal) {
  auto q = random4({2, 5, 2, 3}, 1);
  auto k = random4({2, 5, 2, 3}, 2);
  auto v = random4({2, 5, 2, 4}, 3);
  SoftmaxOptions causal;
  causal.causal = true;
  const auto want = run(qkv(q, k, v), causal);
  for (index_t w : {5, 6, 100}) {
    SoftmaxOptions opt = causal;
    opt.window = w;
    expect_all_near(run(qkv(q, k, v), opt), want);
  }
}

// w = 1, one sink, T = S = 4: query p sees key p and key 0 → [1, (1+2)/2, (1+4)/2, (1+8)/2].
TEST(SoftmaxReference, SinkTokensHandComputed) {
  auto q = zeros_q(4);
  auto k = keys(4);
  auto v = pow2_values(4);
  SoftmaxOptions opt;
  opt.causal = true;
  opt.window = 1;
  opt.sink_tokens = 1;
  expect_all_near(run(qkv(q, k, v), opt), {1.0, 1.5, 2.5, 4.5});
}

// Sinks respect causality when causal: w = 1, 2 sinks, T = S = 2. Causal: query 0 sees key 0
// only → 1; query 1 sees keys 0, 1 → 1.5. Without causal, the sink key 1 is visible to
// query 0 as well → 1.5.
TEST(SoftmaxReference, SinkTokensSubjectToCausality) {
  auto q = zeros_q(2);
  auto k = keys(2);
  auto v = pow2_values(2);
  SoftmaxOptions opt;
  opt.window = 1;
  opt.sink_tokens = 2;
  opt.causal = true;
  expect_all_near(run(qkv(q, k, v), opt), {1.0, 1.5});
  opt.causal = false;
  expect_all_near(run(qkv(q, k, v), opt), {1.5, 1.5});
}

// T = S = 4, blocks of 2. Head 0 keeps (qb0,kb0), (qb1,kb1); head 1 keeps (qb0,kb1), (qb1,kb0).
// Non-causal, q = 0, v = [1,2,4,8] in both heads:
//   head 0 → rows 0,1: (1+2)/2 = 1.5; rows 2,3: (4+8)/2 = 6.
//   head 1 → rows 0,1: 6; rows 2,3: 1.5.
// Adding causal, head 0 row 2 sees key 2 only → 4; head 1 rows 0,1 see nothing → 0.
TEST(SoftmaxReference, BlockMaskHandComputed) {
  Tensor<float, 4> q({1, 4, 2, 1}, 0.f);
  auto k = random4({1, 4, 2, 1}, 5);
  Tensor<float, 4> v({1, 4, 2, 1});
  for (index_t j = 0; j < 4; ++j)
    for (index_t h = 0; h < 2; ++h)
      v.data[static_cast<std::size_t>(j * 2 + h)] = static_cast<float>(1 << j);
  BlockMask mask(1, 2, 2, 2, 2, 2);
  mask.set(0, 0, 0, 0);
  mask.set(0, 0, 1, 1);
  mask.set(0, 1, 0, 1);
  mask.set(0, 1, 1, 0);
  SoftmaxOptions opt;
  opt.block_mask = &mask;
  // Output layout [t][h].
  expect_all_near(run(qkv(q, k, v), opt), {1.5, 6, 1.5, 6, 6, 1.5, 6, 1.5});
  opt.causal = true;
  expect_all_near(run(qkv(q, k, v), opt), {1.0, 0, 1.5, 0, 4, 1.5, 6, 1.5});
}

// A partial last block (T = 5, S = 3, blocks 2) and sinks overriding the block mask.
// Row 4 (qb 2) keeps kb 1 = key 2 only; with 1 sink token it also sees key 0.
TEST(SoftmaxReference, BlockMaskPartialBlocksAndSinks) {
  auto q = zeros_q(5);
  auto k = keys(3);
  auto v = pow2_values(3);
  auto mask = BlockMask::for_lengths(1, 1, 5, 3, 2, 2);
  ASSERT_EQ(mask.q_blocks(), 3);
  ASSERT_EQ(mask.k_blocks(), 2);
  mask.set(0, 0, 0, 0);
  mask.set(0, 0, 1, 0);
  mask.set(0, 0, 1, 1);
  mask.set(0, 0, 2, 1);
  SoftmaxOptions opt;
  opt.block_mask = &mask;
  expect_all_near(run(qkv(q, k, v), opt), {1.5, 1.5, 7.0 / 3, 7.0 / 3, 4});
  opt.sink_tokens = 1;
  expect_all_near(run(qkv(q, k, v), opt), {1.5, 1.5, 7.0 / 3, 7.0 / 3, 2.5});
}

TEST(SoftmaxReference, FullBlockMaskEqualsDense) {
  auto q = random4({2, 7, 2, 3}, 11);
  auto k = random4({2, 9, 2, 3}, 12);
  auto v = random4({2, 9, 2, 2}, 13);
  for (bool causal : {false, true}) {
    SoftmaxOptions opt;
    opt.causal = causal;
    opt.window = causal ? 4 : 0;
    const auto want = run(qkv(q, k, v), opt);
    auto mask = BlockMask::for_lengths(2, 2, 7, 9, 3, 4, /*visible=*/true);
    opt.block_mask = &mask;
    expect_all_near(run(qkv(q, k, v), opt), want);
  }
}

// Softcap c = 1, D = 1, q = 1, k = [0, 2], v = [0, 1]: s = [tanh 0, tanh 2] → sigmoid(tanh 2).
TEST(SoftmaxReference, SoftcapHandComputed) {
  auto q = t4({1, 1, 1, 1}, {1});
  auto k = t4({1, 2, 1, 1}, {0, 2});
  auto v = t4({1, 2, 1, 1}, {0, 1});
  SoftmaxOptions opt;
  opt.softcap = 1.0;
  EXPECT_NEAR(run(qkv(q, k, v), opt)[0], sigmoid(std::tanh(2.0)), kTol);
  opt.softcap = 4.0;  // c·tanh(2/c)
  EXPECT_NEAR(run(qkv(q, k, v), opt)[0], sigmoid(4.0 * std::tanh(0.5)), kTol);
}

// ALiBi slope 1, q = 0, T = S = 2, v = [0, 1].
//   Causal query 1 (p = 1): s = [−1, 0] → o = 1/(1+e^−1) = sigmoid(1).
//   Non-causal query 0 (p = 0): s = [0, −|0−1|] = [0, −1] → o = sigmoid(−1).
TEST(SoftmaxReference, AlibiHandComputed) {
  auto q = zeros_q(2);
  auto k = keys(2);
  auto v = t4({1, 2, 1, 1}, {0, 1});
  Tensor<float, 1> slopes({1}, 1.f);
  auto in = qkv(q, k, v);
  in.alibi_slopes = slopes.cview();
  SoftmaxOptions opt;
  opt.causal = true;
  auto o = run(in, opt);
  EXPECT_NEAR(o[0], 0.0, kTol);
  EXPECT_NEAR(o[1], sigmoid(1.0), kTol);
  opt.causal = false;
  o = run(in, opt);
  EXPECT_NEAR(o[0], sigmoid(-1.0), kTol);
  EXPECT_NEAR(o[1], sigmoid(1.0), kTol);
}

// Softcap comes before ALiBi: q = 1, k = [2, 0], v = [1, 0], causal query 1, c = 1, slope 1:
//   s = [tanh(2) − 1, tanh(0) − 0] → o = sigmoid(tanh(2) − 1).
// (ALiBi first would give tanh(1) for key 0.)
TEST(SoftmaxReference, SoftcapAppliesBeforeAlibi) {
  auto q = t4({1, 2, 1, 1}, {1, 1});
  auto k = t4({1, 2, 1, 1}, {2, 0});
  auto v = t4({1, 2, 1, 1}, {1, 0});
  Tensor<float, 1> slopes({1}, 1.f);
  auto in = qkv(q, k, v);
  in.alibi_slopes = slopes.cview();
  SoftmaxOptions opt;
  opt.causal = true;
  opt.softcap = 1.0;
  EXPECT_NEAR(run(in, opt)[1], sigmoid(std::tanh(2.0) - 1.0), kTol);
}

// Forgetting bias, g = [−1, −1], q = 0, causal, v = [0, 1]: G = [−1, −2]; query 1 gets bias
// G_1 − G_0 = −1 on key 0 and 0 on key 1 → o1 = sigmoid(1).
TEST(SoftmaxReference, ForgettingBiasHandComputed) {
  auto q = zeros_q(2);
  auto k = keys(2);
  auto v = t4({1, 2, 1, 1}, {0, 1});
  Tensor<float, 3> g({1, 2, 1}, -1.f);
  auto in = qkv(q, k, v);
  in.g = g.cview();
  SoftmaxOptions opt;
  opt.causal = true;
  const auto o = run(in, opt);
  EXPECT_NEAR(o[0], 0.0, kTol);
  EXPECT_NEAR(o[1], sigmoid(1.0), kTol);
}

// T = 1 < S = 3 (decode), g = [−4, −1, −2], q = 0, v = [1, 2, 4]: p = 2, biases G_2 − G_j =
// [−3, −2, 0] → o = (e^−3 + 2e^−2 + 4) / (e^−3 + e^−2 + 1).
TEST(SoftmaxReference, ForgettingBiasDecodeHandComputed) {
  auto q = zeros_q(1);
  auto k = keys(3);
  auto v = pow2_values(3);
  Tensor<float, 3> g({1, 3, 1});
  g.data = {-4.f, -1.f, -2.f};
  auto in = qkv(q, k, v);
  in.g = g.cview();
  SoftmaxOptions opt;
  opt.causal = true;
  const double e2 = std::exp(-2.0), e3 = std::exp(-3.0);
  EXPECT_NEAR(run(in, opt)[0], (e3 + 2 * e2 + 4) / (e3 + e2 + 1), kTol);
}

TEST(SoftmaxReference, ForgettingBiasZeroGateEqualsCausal) {
  auto q = random4({2, 6, 2, 3}, 21);
  auto k = random4({2, 6, 2, 3}, 22);
  auto v = random4({2, 6, 2, 2}, 23);
  Tensor<float, 3> g({2, 6, 2}, 0.f);
  SoftmaxOptions opt;
  opt.causal = true;
  auto in = qkv(q, k, v);
  const auto want = run(in, opt);
  in.g = g.cview();
  expect_all_near(run(in, opt), want);
}

// A constant gate g = −c on every token gives G_p − G_j = −c·(p − j): ALiBi with slope c.
TEST(SoftmaxReference, ConstantForgettingGateEqualsAlibi) {
  auto q = random4({1, 6, 2, 3}, 31);
  auto k = random4({1, 6, 2, 3}, 32);
  auto v = random4({1, 6, 2, 2}, 33);
  Tensor<float, 3> g({1, 6, 2});
  for (index_t t = 0; t < 6; ++t) {
    g.data[static_cast<std::size_t>(t * 2)] = -0.5f;
    g.data[static_cast<std::size_t>(t * 2 + 1)] = -0.25f;
  }
  Tensor<float, 1> slopes({2});
  slopes.data = {0.5f, 0.25f};
  SoftmaxOptions opt;
  opt.causal = true;
  auto a = qkv(q, k, v);
  a.g = g.cview();
  auto b = qkv(q, k, v);
  b.alibi_slopes = slopes.cview();
  expect_all_near(run(a, opt), run(b, opt));
}

// Sink logit: q = 0, causal, T = S = 3 → Σ_j exp(s_j − m) over p+1 keys equals p+1 (m = 0
// when sink ≤ 0), so the sink multiplies the plain output by exactly (p+1)/(p+1+e^sink).
// With sink = 0 and one key: o = v/2.
TEST(SoftmaxReference, SinkLogitScalesOutputByHandComputedFactor) {
  auto q = zeros_q(3);
  auto k = keys(3);
  auto v = pow2_values(3);
  SoftmaxOptions opt;
  opt.causal = true;
  const auto plain = run(qkv(q, k, v), opt);
  for (float sink : {0.f, -1.f, 2.f}) {
    Tensor<float, 1> s({1}, sink);
    auto in = qkv(q, k, v);
    in.sink = s.cview();
    const auto o = run(in, opt);
    for (index_t p = 0; p < 3; ++p) {
      const double n = static_cast<double>(p + 1);
      EXPECT_NEAR(
          o[static_cast<std::size_t>(p)],
          plain[static_cast<std::size_t>(p)] * n / (n + std::exp(static_cast<double>(sink))), kTol)
          << "sink " << sink << " p " << p;
    }
    if (sink == 0.f) {
      EXPECT_NEAR(o[0], 0.5, kTol);
    }
  }
}

// A sink logit far above the scores drives the output to 0 but keeps it finite.
TEST(SoftmaxReference, HugeSinkLogitStaysFinite) {
  auto q = zeros_q(2);
  auto k = keys(2);
  auto v = pow2_values(2);
  Tensor<float, 1> s({1}, 1e4f);
  auto in = qkv(q, k, v);
  in.sink = s.cview();
  for (double x : run(in, {})) {
    EXPECT_TRUE(std::isfinite(x));
    EXPECT_NEAR(x, 0.0, 1e-300);
  }
}

TEST(SoftmaxReference, AllMaskedRowGivesZerosEvenWithSinkLogit) {
  auto q = random4({1, 4, 1, 2}, 41);
  auto k = random4({1, 4, 1, 2}, 42);
  auto v = random4({1, 4, 1, 3}, 43);
  auto mask = BlockMask::for_lengths(1, 1, 4, 4, 2, 2);
  mask.set(0, 0, 1, 0);  // rows 0, 1 see nothing
  Tensor<float, 1> s({1}, 0.5f);
  auto in = qkv(q, k, v);
  in.sink = s.cview();
  SoftmaxOptions opt;
  opt.block_mask = &mask;
  const auto o = run(in, opt);
  for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(o[i], 0.0);
  for (std::size_t i = 6; i < 12; ++i) EXPECT_TRUE(std::isfinite(o[i]) && o[i] != 0.0);
}

// Logits ±1e4: q = 100, k = [100, −100, 100], v = [1, 2, 4] → keys 0 and 2 share all the mass:
// o = (1 + 4)/2 = 2.5; q = −100 → only key 1: o = 2.
TEST(SoftmaxReference, HugeLogitsStayFinite) {
  auto q = t4({1, 2, 1, 1}, {100, -100});
  auto k = t4({1, 3, 1, 1}, {100, -100, 100});
  auto v = pow2_values(3);
  SoftmaxOptions opt;
  opt.scale = 1.0;
  const auto o = run(qkv(q, k, v), opt);
  EXPECT_NEAR(o[0], 2.5, kTol);
  EXPECT_NEAR(o[1], 2.0, kTol);
}

TEST(SoftmaxReference, NanInputPropagatesWithoutCrashing) {
  auto q = random4({1, 2, 1, 2}, 51);
  auto k = random4({1, 2, 1, 2}, 52);
  auto v = random4({1, 2, 1, 2}, 53);
  k.data[0] = std::numeric_limits<float>::quiet_NaN();
  SoftmaxOptions opt;
  opt.causal = true;
  const auto o = run(qkv(q, k, v), opt);
  for (double x : o) EXPECT_TRUE(std::isnan(x));
}

// ---- equivalences ---------------------------------------------------------------------------

SoftmaxOptions everything_on() {
  SoftmaxOptions opt;
  opt.causal = true;
  opt.window = 3;
  opt.sink_tokens = 1;
  opt.softcap = 2.0;
  opt.scale = 0.7;
  return opt;
}

// GQA / MQA equal MHA with every kv head repeated HQ/HKV times.
TEST(SoftmaxReference, GqaEqualsMhaWithRepeatedKvHeads) {
  const index_t B = 2, T = 5, S = 7, HQ = 4, D = 3, Dv = 2;
  for (index_t HKV : {1, 2, 4}) {
    auto q = random4({B, T, HQ, D}, 61);
    auto k = random4({B, S, HKV, D}, 62);
    auto v = random4({B, S, HKV, Dv}, 63);
    Tensor<float, 4> kr({B, S, HQ, D}), vr({B, S, HQ, Dv});
    for (index_t b = 0; b < B; ++b)
      for (index_t j = 0; j < S; ++j)
        for (index_t h = 0; h < HQ; ++h) {
          const index_t hk = h / (HQ / HKV);
          for (index_t c = 0; c < D; ++c) kr.view()(b, j, h, c) = k.cview()(b, j, hk, c);
          for (index_t c = 0; c < Dv; ++c) vr.view()(b, j, h, c) = v.cview()(b, j, hk, c);
        }
    Tensor<float, 1> sink({HQ});
    sink.data = {0.1f, -0.3f, 0.7f, 0.f};
    Tensor<float, 1> slopes({HQ});
    slopes.data = {0.5f, 0.25f, 0.125f, 0.0625f};
    auto a = qkv(q, k, v);
    auto b = qkv(q, kr, vr);
    a.sink = b.sink = sink.cview();
    a.alibi_slopes = b.alibi_slopes = slopes.cview();
    const auto opt = everything_on();
    expect_all_near(run(a, opt), run(b, opt), 0.0);
  }
}

// Copies a contiguous [B,T,H,D] tensor into head-first [B,H,T,D] memory.
std::vector<float> to_head_first(const Tensor<float, 4>& x) {
  const auto [B, T, H, D] = x.shape;
  std::vector<float> out(x.data.size());
  const auto hf = polyattn::head_first(out.data(), B, T, H, D);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t d = 0; d < D; ++d) hf(b, t, h, d) = x.cview()(b, t, h, d);
  return out;
}

TEST(SoftmaxReference, HeadFirstStridedEqualsContiguous) {
  const index_t B = 2, T = 6, S = 6, HQ = 4, HKV = 2, D = 3, Dv = 5;
  auto q = random4({B, T, HQ, D}, 71);
  auto k = random4({B, S, HKV, D}, 72);
  auto v = random4({B, S, HKV, Dv}, 73);
  Tensor<float, 3> g({B, S, HQ});
  g.data = polyattn::test::random_vector(g.data.size(), 74, -0.5f, 0.f);
  Tensor<float, 1> sink({HQ}, 0.3f), slopes({HQ}, 0.2f);
  const auto opt = everything_on();

  auto a = qkv(q, k, v);
  a.g = g.cview();
  a.sink = sink.cview();
  a.alibi_slopes = slopes.cview();
  const auto want = run(a, opt);

  const auto qh = to_head_first(q), kh = to_head_first(k), vh = to_head_first(v);
  SoftmaxInputs b = a;
  b.q = polyattn::head_first(qh.data(), B, T, HQ, D);
  b.k = polyattn::head_first(kh.data(), B, S, HKV, D);
  b.v = polyattn::head_first(vh.data(), B, S, HKV, Dv);
  std::vector<double> oh(static_cast<std::size_t>(B * T * HQ * Dv));
  softmax_attention(b, opt, polyattn::head_first(oh.data(), B, T, HQ, Dv));
  std::vector<double> got(oh.size());
  const auto ohv = polyattn::head_first(oh.data(), B, T, HQ, Dv);
  auto gv = polyattn::bthd(got.data(), B, T, HQ, Dv);
  for (index_t bb = 0; bb < B; ++bb)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < HQ; ++h)
        for (index_t e = 0; e < Dv; ++e) gv(bb, t, h, e) = ohv(bb, t, h, e);
  expect_all_near(got, want, 0.0);
}

// Packed sequences (one of them empty) equal separate calls; the gate cumsum restarts.
TEST(SoftmaxReference, VarlenEqualsSeparateCalls) {
  const std::vector<std::int64_t> cu{0, 3, 3, 8, 9};
  const index_t T = 9, HQ = 2, HKV = 1, D = 3, Dv = 2;
  auto q = random4({1, T, HQ, D}, 81);
  auto k = random4({1, T, HKV, D}, 82);
  auto v = random4({1, T, HKV, Dv}, 83);
  Tensor<float, 3> g({1, T, HQ});
  g.data = polyattn::test::random_vector(g.data.size(), 84, -1.f, 0.f);
  Tensor<float, 1> sink({HQ}, -0.2f), slopes({HQ}, 0.3f);
  const auto opt = everything_on();

  auto packed = qkv(q, k, v);
  packed.g = g.cview();
  packed.sink = sink.cview();
  packed.alibi_slopes = slopes.cview();
  packed.cu_seqlens = cu;
  const auto got = run(packed, opt);

  std::vector<double> want;
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t b0 = cu[n], len = cu[n + 1] - cu[n];
    SoftmaxInputs one = packed;
    one.cu_seqlens = {};
    one.q = TensorView<const float, 4>(q.data.data() + b0 * HQ * D, {1, len, HQ, D},
                                       q.cview().strides());
    one.k = TensorView<const float, 4>(k.data.data() + b0 * HKV * D, {1, len, HKV, D},
                                       k.cview().strides());
    one.v = TensorView<const float, 4>(v.data.data() + b0 * HKV * Dv, {1, len, HKV, Dv},
                                       v.cview().strides());
    one.g = TensorView<const float, 3>(g.data.data() + b0 * HQ, {1, len, HQ}, g.cview().strides());
    if (len == 0) continue;
    const auto part = run(one, opt);
    want.insert(want.end(), part.begin(), part.end());
  }
  expect_all_near(got, want, 0.0);
}

// Block-mask positions are packed positions under varlen: a full mask changes nothing.
TEST(SoftmaxReference, VarlenWithFullBlockMaskEqualsWithout) {
  const std::vector<std::int64_t> cu{0, 4, 9};
  auto q = random4({1, 9, 2, 3}, 91);
  auto k = random4({1, 9, 2, 3}, 92);
  auto v = random4({1, 9, 2, 2}, 93);
  auto in = qkv(q, k, v);
  in.cu_seqlens = cu;
  SoftmaxOptions opt;
  opt.causal = true;
  const auto want = run(in, opt);
  auto mask = BlockMask::for_lengths(1, 2, 9, 9, 4, 2, true);
  opt.block_mask = &mask;
  expect_all_near(run(in, opt), want, 0.0);
}

TEST(SoftmaxReference, FloatOutputIsRoundedDoubleOutput) {
  auto q = random4({1, 4, 2, 3}, 101);
  auto k = random4({1, 4, 2, 3}, 102);
  auto v = random4({1, 4, 2, 2}, 103);
  const auto in = qkv(q, k, v);
  const auto opt = everything_on();
  const auto want = run(in, opt);
  Tensor<float, 4> o({1, 4, 2, 2});
  softmax_attention(in, opt, o.view());
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_EQ(o.data[i], static_cast<float>(want[i]));
}

// ---- bad arguments --------------------------------------------------------------------------

struct BadCase {
  std::string name;
  std::string argument;  // expected Error::argument()
  std::function<void(SoftmaxInputs&, SoftmaxOptions&, TensorView<double, 4>&)> mutate;
};

TEST(SoftmaxReference, BadArgumentsThrowNamedErrorAndLeaveOutputUntouched) {
  const index_t B = 1, T = 4, HQ = 4, HKV = 2, D = 3, Dv = 2;
  auto q = random4({B, T, HQ, D}, 111);
  auto k = random4({B, T, HKV, D}, 112);
  auto v = random4({B, T, HKV, Dv}, 113);
  auto k3 = random4({B, T, 3, D}, 114);
  Tensor<float, 3> g({B, T, HQ}, -0.1f), g_bad({B, T, HKV}, -0.1f);
  Tensor<float, 1> heads({HQ}, 0.1f), heads_bad({HKV}, 0.1f);
  Tensor<double, 4> o_bad({B, T, HQ, Dv + 1}, 42.0);
  const std::vector<std::int64_t> cu_ok{0, 2, 4}, cu_dec{0, 3, 2, 4}, cu_short{0, 2, 3},
      cu_start{1, 4};
  auto good_mask = BlockMask::for_lengths(B, HQ, T, T, 2, 2, true);
  auto bad_mask_heads = BlockMask::for_lengths(B, HKV, T, T, 2, 2, true);
  BlockMask bad_mask_blocks(B, HQ, 2, 3, 2, 2, true);  // nKB 3, but ceil(4/2) = 2
  const float* null = nullptr;

  const std::vector<BadCase> cases = {
      {"q null", "q", [&](auto& in, auto&, auto&) { in.q = {}; }},
      {"k null", "k", [&](auto& in, auto&, auto&) { in.k = {}; }},
      {"v null", "v", [&](auto& in, auto&, auto&) { in.v = {}; }},
      {"o null", "o", [&](auto&, auto&, auto& o) { o = {}; }},
      {"q negative stride", "q",
       [&](auto& in, auto&, auto&) {
         in.q = TensorView<const float, 4>(q.data.data(), q.shape, {-1, 1, 1, 1});
       }},
      {"q negative size", "q",
       [&](auto& in, auto&, auto&) {
         in.q = TensorView<const float, 4>(q.data.data(), {B, -1, HQ, D}, q.cview().strides());
       }},
      {"k batch", "k",
       [&](auto& in, auto&, auto&) {
         in.k = TensorView<const float, 4>(k.data.data(), {2, 2, HKV, D}, k.cview().strides());
       }},
      {"k head dim", "k",
       [&](auto& in, auto&, auto&) {
         in.k = TensorView<const float, 4>(k.data.data(), {B, T, HKV, D - 1}, k.cview().strides());
       }},
      {"HQ % HKV", "k", [&](auto& in, auto&, auto&) { in.k = k3.cview(); }},
      {"v length", "v",
       [&](auto& in, auto&, auto&) {
         in.v = TensorView<const float, 4>(v.data.data(), {B, T - 1, HKV, Dv}, v.cview().strides());
       }},
      {"v heads", "v",
       [&](auto& in, auto&, auto&) {
         in.v = TensorView<const float, 4>(v.data.data(), {B, T, 1, Dv}, v.cview().strides());
       }},
      {"o shape", "o", [&](auto&, auto&, auto& o) { o = o_bad.view(); }},
      {"cu_seqlens decreasing", "cu_seqlens",
       [&](auto& in, auto&, auto&) { in.cu_seqlens = cu_dec; }},
      {"cu_seqlens wrong total", "cu_seqlens",
       [&](auto& in, auto&, auto&) { in.cu_seqlens = cu_short; }},
      {"cu_seqlens not starting at 0", "cu_seqlens",
       [&](auto& in, auto&, auto&) { in.cu_seqlens = cu_start; }},
      {"varlen with S != T", "k",
       [&](auto& in, auto&, auto&) {
         in.cu_seqlens = cu_ok;
         in.k = TensorView<const float, 4>(k.data.data(), {B, T - 1, HKV, D}, k.cview().strides());
         in.v = TensorView<const float, 4>(v.data.data(), {B, T - 1, HKV, Dv}, v.cview().strides());
       }},
      {"g shape", "g", [&](auto& in, auto&, auto&) { in.g = g_bad.cview(); }},
      {"g null data", "g",
       [&](auto& in, auto&, auto&) {
         in.g = TensorView<const float, 3>(null, {B, T, HQ}, {T * HQ, HQ, 1});
       }},
      {"alibi shape", "alibi_slopes",
       [&](auto& in, auto&, auto&) { in.alibi_slopes = heads_bad.cview(); }},
      {"sink shape", "sink", [&](auto& in, auto&, auto&) { in.sink = heads_bad.cview(); }},
      {"scale zero", "scale", [&](auto&, auto& opt, auto&) { opt.scale = 0.0; }},
      {"scale nan", "scale",
       [&](auto&, auto& opt, auto&) { opt.scale = std::numeric_limits<double>::quiet_NaN(); }},
      {"window negative", "window", [&](auto&, auto& opt, auto&) { opt.window = -1; }},
      {"sink_tokens negative", "sink_tokens",
       [&](auto&, auto& opt, auto&) { opt.sink_tokens = -2; }},
      {"softcap negative", "softcap", [&](auto&, auto& opt, auto&) { opt.softcap = -1.0; }},
      {"softcap inf", "softcap",
       [&](auto&, auto& opt, auto&) { opt.softcap = std::numeric_limits<double>::infinity(); }},
      {"block mask heads", "block_mask",
       [&](auto&, auto& opt, auto&) { opt.block_mask = &bad_mask_heads; }},
      {"block mask key blocks", "block_mask",
       [&](auto&, auto& opt, auto&) { opt.block_mask = &bad_mask_blocks; }},
      {"default block mask", "block_mask",
       [&](auto&, auto& opt, auto&) {
         static const BlockMask empty;
         opt.block_mask = &empty;
       }},
  };

  // Varlen needs B == 1: a B = 2 call with cu_seqlens.
  auto q2 = random4({2, 2, HQ, D}, 115);
  auto k2 = random4({2, 2, HKV, D}, 116);
  auto v2 = random4({2, 2, HKV, Dv}, 117);

  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    Tensor<double, 4> o({B, T, HQ, Dv}, 42.0);
    o_bad.data.assign(o_bad.data.size(), 42.0);
    SoftmaxInputs in = qkv(q, k, v);
    in.g = g.cview();
    in.alibi_slopes = heads.cview();
    in.sink = heads.cview();
    SoftmaxOptions opt;
    opt.causal = true;
    opt.block_mask = &good_mask;
    TensorView<double, 4> ov = o.view();
    // The unmodified call is valid.
    {
      Tensor<double, 4> tmp({B, T, HQ, Dv});
      ASSERT_NO_THROW(softmax_attention(in, opt, tmp.view()));
    }
    c.mutate(in, opt, ov);
    try {
      softmax_attention(in, opt, ov);
      ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), c.argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.argument), std::string::npos);
    }
    for (double x : o.data) ASSERT_EQ(x, 42.0);
    for (double x : o_bad.data) ASSERT_EQ(x, 42.0);
  }

  {
    SCOPED_TRACE("cu_seqlens with B = 2");
    Tensor<double, 4> o({2, 2, HQ, Dv}, 42.0);
    auto in = qkv(q2, k2, v2);
    in.cu_seqlens = cu_ok;
    try {
      softmax_attention(in, {}, o.view());
      ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "cu_seqlens") << e.what();
    }
    for (double x : o.data) ASSERT_EQ(x, 42.0);
  }
}

// The error message names the shapes that were seen.
TEST(SoftmaxReference, ErrorMessageShowsShapes) {
  auto q = random4({1, 4, 2, 3}, 121);
  auto k = random4({1, 4, 2, 2}, 122);
  auto v = random4({1, 4, 2, 2}, 123);
  Tensor<double, 4> o({1, 4, 2, 2});
  try {
    softmax_attention(qkv(q, k, v), {}, o.view());
    FAIL() << "no exception";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.argument(), "k");
    EXPECT_NE(msg.find("[1,4,2,2]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[1,4,2,3]"), std::string::npos) << msg;
  }
}

}  // namespace
