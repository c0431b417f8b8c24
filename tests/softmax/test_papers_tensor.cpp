// tests/softmax/test_papers_tensor.cpp — tensor (Kronecker) attention (softmax/tensor.hpp):
// tensor_attention (per-j₁ tiled attention merged by lse) against reference::tensor_attention
// (one softmax over every key pair, in double) — GQA, batch, S₁ ≠ S₂, T ≠ S, a scale, enough j₁
// to need several chunks, thread counts; with K₁ = 1 and V₁ = 1 it is ordinary attention over
// (K₂, V₂); bad arguments throw a named polyattn::Error with the output untouched.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/expect_error.hpp"
#include "common/test_util.hpp"
#include "polyattn/reference/tensor.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_error;
using polyattn::test::kRelRmseBound;
using polyattn::test::kSentinel;
using polyattn::test::rel_rmse;

struct Data {
  index_t B, T, S1, S2, HQ, HKV, D, Dv;
  std::vector<float> q, k1, v1, k2, v2;
  Data(index_t B_, index_t T_, index_t S1_, index_t S2_, index_t HQ_, index_t HKV_, index_t D_,
       index_t Dv_, std::uint64_t seed)
      : B(B_), T(T_), S1(S1_), S2(S2_), HQ(HQ_), HKV(HKV_), D(D_), Dv(Dv_) {
    q = test::random_vector(static_cast<std::size_t>(B * T * HQ * D), seed);
    k1 = test::random_vector(static_cast<std::size_t>(B * S1 * HKV * D), seed + 1);
    v1 = test::random_vector(static_cast<std::size_t>(B * S1 * HKV * Dv), seed + 2);
    k2 = test::random_vector(static_cast<std::size_t>(B * S2 * HKV * D), seed + 3);
    v2 = test::random_vector(static_cast<std::size_t>(B * S2 * HKV * Dv), seed + 4);
  }
  softmax::TensorAttentionInputs inputs(std::optional<double> scale = {}) const {
    return {.q = bthd<const float>(q.data(), B, T, HQ, D),
            .k1 = bthd<const float>(k1.data(), B, S1, HKV, D),
            .v1 = bthd<const float>(v1.data(), B, S1, HKV, Dv),
            .k2 = bthd<const float>(k2.data(), B, S2, HKV, D),
            .v2 = bthd<const float>(v2.data(), B, S2, HKV, Dv),
            .scale = scale};
  }
  std::size_t out_size() const { return static_cast<std::size_t>(B * T * HQ * Dv); }
};

TEST(TensorAttention, MatchesTheReference) {
  struct Config {
    index_t B, T, S1, S2, HQ, HKV, D, Dv;
    std::optional<double> scale;
  };
  for (const Config& c :
       {Config{2, 33, 40, 40, 4, 2, 16, 8, {}}, Config{1, 70, 65, 17, 3, 1, 32, 24, 0.5},
        Config{1, 1, 90, 130, 2, 2, 8, 16, 2.0},
        Config{1, 1100, 70, 9, 1, 1, 8, 8, {}}}) {  // 1100·70 rows: 2 chunks
    const std::string name =
        "T " + std::to_string(c.T) + " S1 " + std::to_string(c.S1) + " S2 " + std::to_string(c.S2);
    SCOPED_TRACE(name);
    const Data x(c.B, c.T, c.S1, c.S2, c.HQ, c.HKV, c.D, c.Dv, 501);
    std::vector<float> got(x.out_size(), kSentinel);
    softmax::tensor_attention(x.inputs(c.scale), bthd(got.data(), c.B, c.T, c.HQ, c.Dv));
    std::vector<double> want(x.out_size(), NAN);
    reference::tensor_attention(x.inputs(c.scale), bthd(want.data(), c.B, c.T, c.HQ, c.Dv));
    const double err = rel_rmse(got, want);
    EXPECT_LT(err, kRelRmseBound);
    std::printf("[ tensor %s ] rel RMSE vs reference %.3g\n", name.c_str(), err);
    std::vector<float> threaded(x.out_size(), kSentinel);
    softmax::tensor_attention(x.inputs(c.scale), bthd(threaded.data(), c.B, c.T, c.HQ, c.Dv),
                              ThreadPool(3));
    EXPECT_EQ(threaded, got);
  }
}

TEST(TensorAttention, OnesInTheFirstPairGiveOrdinaryAttention) {
  Data x(1, 20, 5, 30, 2, 1, 16, 16, 502);
  std::fill(x.k1.begin(), x.k1.end(), 1.f);
  std::fill(x.v1.begin(), x.v1.end(), 1.f);
  std::vector<float> got(x.out_size(), kSentinel);
  softmax::tensor_attention(x.inputs(0.25), bthd(got.data(), 1, 20, 2, 16));
  SoftmaxOptions opt;
  opt.scale = 0.25;
  const std::vector<double> want = test::run_reference(
      SoftmaxInputs{.q = x.inputs().q, .k = x.inputs().k2, .v = x.inputs().v2}, opt);
  EXPECT_LT(rel_rmse(got, want), kRelRmseBound);
}

TEST(TensorAttention, BadArgumentsThrowNamedErrorOutputUntouched) {
  const Data x(1, 8, 6, 7, 2, 1, 8, 4, 503);
  std::vector<float> o(x.out_size(), kSentinel);
  const auto ov = bthd(o.data(), 1, 8, 2, 4);
  auto in = x.inputs();
  in.k2 = bthd<const float>(x.k2.data(), 1, 7, 1, 4);  // D 4, not 8
  expect_error("k2", [&] { softmax::tensor_attention(in, ov); });
  in = x.inputs();
  in.v2 = bthd<const float>(x.v2.data(), 1, 7, 1, 2);  // Dv 2, not v1's 4
  expect_error("v2", [&] { softmax::tensor_attention(in, ov); });
  in = x.inputs();
  in.k1 = bthd<const float>(x.k1.data(), 1, 3, 1, 8);  // 3 rows, v1 has 6
  expect_error("v1", [&] { softmax::tensor_attention(in, ov); });
  in = x.inputs();
  in.k1 = bthd<const float>(x.k1.data(), 1, 6, 1, 4);  // D 4, not 8
  expect_error("k1", [&] { softmax::tensor_attention(in, ov); });
  expect_error("scale", [&] { softmax::tensor_attention(x.inputs(-1.0), ov); });
  std::vector<float> small(16, kSentinel);
  expect_error("o", [&] { softmax::tensor_attention(x.inputs(), bthd(small.data(), 1, 8, 2, 1)); });
  for (const float v : o) ASSERT_EQ(v, kSentinel);
  for (const float v : small) ASSERT_EQ(v, kSentinel);
}

}  // namespace
