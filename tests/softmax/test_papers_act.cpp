// tests/softmax/test_papers_act.cpp — ACT (softmax/act.hpp): detect_act_sinks against the
// threshold applied to reference::act_received_attention (double; keys within 1e-4·α of the
// threshold may go either way), only on the heads asked for and never key 0; act_attention
// against reference::act_attention (double) with the same sink set — GQA, batch, varlen, β = 0,
// 0.3, 1 (β = 1 is plain causal softmax), a row that sees only sinks left as it is; decode rows
// equal the prefill's; bad arguments throw a named polyattn::Error with the output untouched.
// bf16 / fp16 (SPEC §8, docs/conventions.md §9.7), on q, k, v rounded to the type first: the
// detection finds the sinks of the widened fp32 inputs; an fp32 o from T inputs (or a mix of T
// and fp32) has the bits of the fp32 call on the widened values, a T o is that fp32 o rounded
// once, and both meet SPEC §8's bounds against the double reference (all-bf16 inputs on the amx
// level take bf16 products: bf16's bound for the fp32 o, no bit equality).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/expect_error.hpp"
#include "common/precision.hpp"
#include "common/test_util.hpp"
#include "polyattn/reference/act.hpp"
#include "softmax/papers2_kernels.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_error;
using polyattn::test::kRelRmseBound;
using polyattn::test::kSentinel;
using polyattn::test::rel_rmse;
using polyattn::test::SoftmaxData;
using polyattn::test::SoftmaxShape;
using softmax::ActSinks;

// q rows near a shared direction u; a few "hidden sink" keys (beyond key 0) point along u too,
// so that they draw a large share of every later row's attention.
void plant_sinks(SoftmaxData& x, const std::vector<index_t>& sink_keys) {
  const SoftmaxShape& s = x.s;
  std::vector<float> u = test::random_vector(static_cast<std::size_t>(s.D), 99);
  for (index_t b = 0; b < s.B; ++b)
    for (index_t t = 0; t < s.T; ++t)
      for (index_t h = 0; h < s.HQ; ++h)
        for (index_t e = 0; e < s.D; ++e)
          x.q[static_cast<std::size_t>(((b * s.T + t) * s.HQ + h) * s.D + e)] +=
              2.f * u[static_cast<std::size_t>(e)];
  for (index_t b = 0; b < s.B; ++b)
    for (const index_t j : sink_keys)
      for (index_t h = 0; h < s.HKV; ++h)
        for (index_t e = 0; e < s.D; ++e)
          x.k[static_cast<std::size_t>(((b * s.S + j) * s.HKV + h) * s.D + e)] =
              (h == 0 ? 1.5f : 0.8f) * u[static_cast<std::size_t>(e)];
}

SoftmaxOptions causal() {
  SoftmaxOptions opt;
  opt.causal = true;
  return opt;
}

TEST(ActSinks, DetectionMatchesTheThresholdOnReceivedAttention) {
  for (const bool varlen : {false, true}) {
    SoftmaxData x({.B = varlen ? 1 : 2, .T = 150, .S = 150, .HQ = 4, .HKV = 2, .D = 32, .Dv = 16},
                  {}, 21);
    if (varlen) x.cu_seqlens = {0, 70, 150};
    plant_sinks(x, {9, 40, 41, 100});
    const std::vector<std::uint8_t> calibrate = {1, 0, 1, 1};
    const double alpha = 0.02;
    const ActSinks got = softmax::detect_act_sinks(x.inputs(), causal(), calibrate, alpha);
    const std::vector<double> a = reference::act_received_attention(x.inputs(), causal());
    index_t sinks = 0, candidates = 0;
    const index_t B = x.s.B, HQ = x.s.HQ, S = x.s.S;
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < HQ; ++h)
        for (index_t j = 0; j < S; ++j) {
          const bool first = varlen ? (j == 0 || j == 70) : j == 0;
          const double aj = a[static_cast<std::size_t>((b * HQ + h) * S + j)];
          const bool want = calibrate[static_cast<std::size_t>(h)] && !first && aj > alpha;
          candidates += calibrate[static_cast<std::size_t>(h)] && !first;
          sinks += want;
          if (std::abs(aj - alpha) <= 1e-4 * alpha) continue;  // near the threshold: either way
          EXPECT_EQ(got.is_sink(b, h, j), want)
              << "varlen " << varlen << " b " << b << " h " << h << " j " << j << " a " << aj;
        }
    // The planted keys are found and most keys are not sinks: the test can fail both ways.
    EXPECT_GE(sinks, 4);
    EXPECT_LT(sinks, candidates / 4);
  }
}

std::vector<double> reference_o(const SoftmaxData& x, const SoftmaxOptions& opt,
                                const ActSinks& sinks, double beta) {
  std::vector<double> o(x.out_size(), NAN);
  reference::act_attention(x.inputs(), opt, sinks.bits(), beta,
                           bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
  return o;
}
std::vector<float> kernel_o(const SoftmaxData& x, const SoftmaxOptions& opt, const ActSinks& sinks,
                            double beta) {
  std::vector<float> o(x.out_size(), kSentinel);
  softmax::act_attention(x.inputs(), opt, sinks, beta,
                         bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
  return o;
}

TEST(ActAttention, MatchesReferenceGqaBatchVarlen) {
  for (const bool varlen : {false, true}) {
    SoftmaxData x({.B = varlen ? 1 : 2, .T = 96, .S = 96, .HQ = 4, .HKV = 2, .D = 32, .Dv = 24}, {},
                  22);
    if (varlen) x.cu_seqlens = {0, 50, 96};
    plant_sinks(x, {9, 30, 31, 70});
    const ActSinks sinks = softmax::detect_act_sinks(x.inputs(), causal(), {1, 1, 0, 1}, 0.02);
    for (const double beta : varlen ? std::vector<double>{0.3} : std::vector<double>{0.0, 1.0}) {
      const std::vector<float> got = kernel_o(x, causal(), sinks, beta);
      const std::vector<double> want = reference_o(x, causal(), sinks, beta);
      EXPECT_LT(rel_rmse(got, want), kRelRmseBound) << "varlen " << varlen << " beta " << beta;
      if (beta == 1.0) {  // nothing moves: plain causal softmax
        EXPECT_LT(rel_rmse(got, test::run_reference(x.inputs(), causal())), kRelRmseBound);
      } else {  // calibration changes the output (the test sees sinks)
        EXPECT_GT(rel_rmse(got, test::run_reference(x.inputs(), causal())), 1e-3);
      }
    }
  }
}

TEST(ActAttention, RowThatSeesOnlySinksIsLeftAsItIs) {
  // A user's set with key 0 a sink: query row 0 sees key 0 only.
  SoftmaxData x({.B = 1, .T = 40, .S = 40, .HQ = 2, .HKV = 1, .D = 16, .Dv = 16}, {}, 23);
  std::vector<std::uint8_t> bits(static_cast<std::size_t>(2 * 40), 0);
  bits[0] = bits[5] = bits[40] = 1;
  const ActSinks sinks(1, 2, 40, bits);
  const std::vector<float> got = kernel_o(x, causal(), sinks, 0.25);
  EXPECT_LT(rel_rmse(got, reference_o(x, causal(), sinks, 0.25)), kRelRmseBound);
  for (index_t h = 0; h < 2; ++h)
    for (index_t e = 0; e < 16; ++e)  // row 0: v_0 of the kv head
      EXPECT_FLOAT_EQ(got[static_cast<std::size_t>(h * 16 + e)], x.v[static_cast<std::size_t>(e)]);
}

TEST(ActAttention, DecodeRowsEqualThePrefill) {
  SoftmaxData full({.B = 2, .T = 120, .S = 120, .HQ = 4, .HKV = 2, .D = 32, .Dv = 32}, {}, 24);
  plant_sinks(full, {7, 60});
  const ActSinks sinks = softmax::detect_act_sinks(full.inputs(), causal(), {1, 1, 1, 1}, 0.02);
  const std::vector<float> prefill = kernel_o(full, causal(), sinks, 0.2);
  for (const index_t T : {index_t{1}, index_t{7}}) {
    SoftmaxData part({.B = 2, .T = T, .S = 120, .HQ = 4, .HKV = 2, .D = 32, .Dv = 32}, {}, 24);
    part.k = full.k;
    std::vector<float> want;
    for (index_t b = 0; b < 2; ++b) {
      const auto row = [&](const std::vector<float>& x, index_t t) {
        return x.begin() + static_cast<std::ptrdiff_t>((b * 120 + t) * 4 * 32);
      };
      std::copy(row(full.q, 120 - T), row(full.q, 120),
                part.q.begin() + static_cast<std::ptrdiff_t>(b * T * 4 * 32));
      want.insert(want.end(), row(prefill, 120 - T), row(prefill, 120));
    }
    const std::vector<float> got = kernel_o(part, causal(), sinks, 0.2);
    EXPECT_LT(rel_rmse(got, want), 1e-6) << "T " << T;
  }
}

template <class T>
class ActPrecision : public ::testing::Test {};
using ElementTypes = ::testing::Types<bf16, f16>;
TYPED_TEST_SUITE(ActPrecision, ElementTypes);

TYPED_TEST(ActPrecision, TypedInputsAndOutputs) {
  using T = TypeParam;
  for (const bool varlen : {false, true}) {
    SoftmaxData x({.B = varlen ? 1 : 2, .T = 96, .S = 96, .HQ = 4, .HKV = 2, .D = 32, .Dv = 24}, {},
                  26);
    if (varlen) x.cu_seqlens = {0, 50, 96};
    plant_sinks(x, {9, 30, 31, 70});
    for (auto* v : {&x.q, &x.k, &x.v}) test::round_all<T>(*v);
    const auto q = test::narrow<T>(x.q), k = test::narrow<T>(x.k), v = test::narrow<T>(x.v);
    const SoftmaxInputs in32 = x.inputs();
    SoftmaxInputs typed = in32, q_typed = in32, kv_typed = in32;
    typed.q = q_typed.q = bthd(q.data(), x.s.B, x.s.T, x.s.HQ, x.s.D);
    typed.k = kv_typed.k = bthd(k.data(), x.s.B, x.s.S, x.s.HKV, x.s.D);
    typed.v = kv_typed.v = bthd(v.data(), x.s.B, x.s.S, x.s.HKV, x.s.Dv);
    const bool bf16_products = softmax::uses_bf16_products(typed);
    const std::string tag = std::string(test::kName<T>) + (varlen ? " varlen" : "");

    const std::vector<std::uint8_t> calibrate = {1, 1, 0, 1};
    const ActSinks sinks = softmax::detect_act_sinks(in32, causal(), calibrate, 0.02);
    index_t found = 0;
    for (const auto b : sinks.bits()) found += b;
    EXPECT_GE(found, 4) << tag;  // the planted sinks: the calibration below moves weight
    if (!bf16_products)
      EXPECT_EQ(softmax::detect_act_sinks(typed, causal(), calibrate, 0.02).bits(), sinks.bits())
          << tag;

    const double beta = 0.3;
    const std::vector<double> want = reference_o(x, causal(), sinks, beta);
    const std::vector<float> o32 = kernel_o(x, causal(), sinks, beta);
    const auto ov = [&](auto& o) { return bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv); };
    std::vector<float> of(x.out_size(), kSentinel), oq(of), okv(of);
    std::vector<T> ot(x.out_size(), from_float<T>(kSentinel));
    softmax::act_attention(typed, causal(), sinks, beta, ov(of));
    softmax::act_attention(typed, causal(), sinks, beta, ov(ot), ThreadPool(2));
    softmax::act_attention(q_typed, causal(), sinks, beta, ov(oq));
    softmax::act_attention(kv_typed, causal(), sinks, beta, ov(okv));
    if (!bf16_products) EXPECT_TRUE(test::same_bits(of, o32)) << tag << ": fp32 o";
    EXPECT_TRUE(test::same_bits(oq, o32) && test::same_bits(okv, o32)) << tag << ": mixed types";
    EXPECT_TRUE(test::same_bits(ot, test::narrow<T>(of))) << tag << ": o rounded once";
    EXPECT_LT(rel_rmse(of, want), bf16_products ? test::kBound<bf16> : kRelRmseBound) << tag;
    EXPECT_LT(rel_rmse(test::widen(ot), want), test::kBound<T>) << tag;
    std::printf("[precision] act %s: rel RMSE  o(%s) %.3e  o(fp32) %.3e\n", tag.c_str(),
                test::kName<T>, rel_rmse(test::widen(ot), want), rel_rmse(of, want));
  }
}

TEST(ActAttention, BadArgumentsThrowNamedErrorOutputUntouched) {
  SoftmaxData x({.B = 1, .T = 30, .S = 30, .HQ = 2, .HKV = 1, .D = 16, .Dv = 16}, {}, 25);
  const ActSinks sinks(1, 2, 30, std::vector<std::uint8_t>(60, 0));
  const ActSinks wrong(1, 1, 30, std::vector<std::uint8_t>(30, 0));
  std::vector<float> o(x.out_size(), kSentinel);
  const auto ov = bthd(o.data(), 1, 30, 2, 16);
  expect_error("beta", [&] { softmax::act_attention(x.inputs(), causal(), sinks, 1.5, ov); });
  expect_error("beta", [&] { softmax::act_attention(x.inputs(), causal(), sinks, NAN, ov); });
  expect_error("sinks", [&] { softmax::act_attention(x.inputs(), causal(), wrong, 0.5, ov); });
  SoftmaxOptions capped = causal();
  capped.softcap = 5.0;
  expect_error("softcap", [&] { softmax::act_attention(x.inputs(), capped, sinks, 0.5, ov); });
  for (const float v : o) ASSERT_EQ(v, kSentinel);

  expect_error("sinks", [] { ActSinks(1, 2, 30, std::vector<std::uint8_t>(59, 0)); });
  expect_error("opt", [&] { softmax::detect_act_sinks(x.inputs(), {}, {1, 1}, 0.1); });
  SoftmaxOptions windowed = causal();
  windowed.window = 8;
  expect_error("opt", [&] { softmax::detect_act_sinks(x.inputs(), windowed, {1, 1}, 0.1); });
  expect_error("calibrate", [&] { softmax::detect_act_sinks(x.inputs(), causal(), {1}, 0.1); });
  expect_error("alpha", [&] { softmax::detect_act_sinks(x.inputs(), causal(), {1, 1}, NAN); });
}

}  // namespace
