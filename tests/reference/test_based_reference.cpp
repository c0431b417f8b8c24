// Pins reference::based_attention (fla parallel_based) to hand-computed cases and checks
// argument validation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/reference/based.hpp"

namespace {

using polyattn::test::random4;
using polyattn::test::t4;

using polyattn::Error;
using polyattn::index_t;
using polyattn::TensorView;
using polyattn::reference::based_attention;
using polyattn::reference::BasedInputs;
using polyattn::reference::BasedOptions;
using polyattn::test::Tensor;

constexpr double kTol = 1e-12;

std::vector<double> run(const BasedInputs& in, const BasedOptions& opt = {}) {
  Tensor<double, 4> o({in.q.size(0), in.q.size(1), in.q.size(2), in.v.size(3)});
  based_attention(in, opt, o.view());
  return o.data;
}

BasedInputs qkv(const Tensor<float, 4>& q, const Tensor<float, 4>& k, const Tensor<float, 4>& v) {
  return BasedInputs{q.cview(), k.cview(), v.cview(), {}};
}

// T = 2, K = 1 (default scale 1), V = 1, f(x) = 1 + x + x²/2, eps = 1e-6.
//   q = [1, 2], k = [2, 1], v = [1, 3].
//   t = 0: x00 = 1·2 = 2 → f = 1 + 2 + 2 = 5;          o0 = 5·1 / (5 + eps).
//   t = 1: x10 = 2·2 = 4 → f = 1 + 4 + 8 = 13;
//          x11 = 2·1 = 2 → f = 5;                       o1 = (13·1 + 5·3) / (18 + eps) = 28 / (18 +
//          eps).
TEST(BasedReference, TwoTokenHandComputed) {
  auto q = t4({1, 2, 1, 1}, {1, 2});
  auto k = t4({1, 2, 1, 1}, {2, 1});
  auto v = t4({1, 2, 1, 1}, {1, 3});
  const auto o = run(qkv(q, k, v));
  EXPECT_NEAR(o[0], 5.0 / (5.0 + 1e-6), kTol);
  EXPECT_NEAR(o[1], 28.0 / (18.0 + 1e-6), kTol);
  // Un-normalised (fla use_norm = False): o = Σ f v.
  BasedOptions raw;
  raw.normalize = false;
  const auto r = run(qkv(q, k, v), raw);
  EXPECT_NEAR(r[0], 5.0, kTol);
  EXPECT_NEAR(r[1], 28.0, kTol);
}

// K = 2, default scale 2^-0.5 multiplies q: q1 = [1, 1], k0 = [1, 1], k1 = [0, 0], v = [0, 1], Dv
// = 1.
//   x10 = (1/√2)(1 + 1) = √2 → f = 1 + √2 + 1 = 2 + √2;  x11 = 0 → f = 1.
//   o1 = (0·(2+√2) + 1·1) / (3 + √2 + eps).  Explicit eps = 0.5 and scale 1 give
//   x10 = 2 → f = 5 → o1 = 1 / (6 + 0.5).
TEST(BasedReference, DefaultScaleAndEps) {
  auto q = t4({1, 2, 1, 2}, {0, 0, 1, 1});
  auto k = t4({1, 2, 1, 2}, {1, 1, 0, 0});
  auto v = t4({1, 2, 1, 1}, {0, 1});
  auto o = run(qkv(q, k, v));
  EXPECT_NEAR(o[0], 0.0, kTol);
  EXPECT_NEAR(o[1], 1.0 / (3.0 + std::sqrt(2.0) + 1e-6), kTol);
  BasedOptions opt;
  opt.scale = 1.0;
  opt.eps = 0.5;
  o = run(qkv(q, k, v), opt);
  EXPECT_NEAR(o[1], 1.0 / 6.5, kTol);
}

// Negative dot products: f(−1) = 1 − 1 + 1/2 = 1/2. q = [0, −1], k = [5, 1], v = [2, 4]:
//   t = 1: x10 = −5 → f = 1 − 5 + 12.5 = 8.5; x11 = −1 → f = 0.5;
//   o1 = (8.5·2 + 0.5·4) / (9 + eps) = 19 / (9 + eps).
TEST(BasedReference, NegativeScoresHandComputed) {
  auto q = t4({1, 2, 1, 1}, {0, -1});
  auto k = t4({1, 2, 1, 1}, {5, 1});
  auto v = t4({1, 2, 1, 1}, {2, 4});
  const auto o = run(qkv(q, k, v));
  EXPECT_NEAR(o[0], 2.0 / (1.0 + 1e-6), kTol);  // x00 = 0 → f = 1
  EXPECT_NEAR(o[1], 19.0 / (9.0 + 1e-6), kTol);
}

// Based is the linear recurrence with the Taylor feature map: check against an explicit
// feature expansion φ(x) = [1, x, vec(x xᵀ)/√2] (so φ(q)·φ(k) = 1 + q·k + (q·k)²/2) computed
// token by token in the test.
TEST(BasedReference, EqualsTaylorFeatureRecurrence) {
  const index_t B = 2, T = 5, H = 2, K = 3, V = 2;
  auto q = random4({B, T, H, K}, 1);
  auto k = random4({B, T, H, K}, 2);
  auto v = random4({B, T, H, V}, 3);
  const double scale = 1.0 / std::sqrt(3.0);
  auto phi = [&](const Tensor<float, 4>& x, index_t b, index_t t, index_t h, double s) {
    std::vector<double> f{1.0};
    std::vector<double> y(K);
    for (index_t i = 0; i < K; ++i) y[static_cast<std::size_t>(i)] = s * x.cview()(b, t, h, i);
    for (double e : y) f.push_back(e);
    for (double a : y)
      for (double c : y) f.push_back(a * c / std::sqrt(2.0));
    return f;
  };
  const auto got = run(qkv(q, k, v));
  std::size_t idx = 0;
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h) {
        const auto fq = phi(q, b, t, h, scale);
        std::vector<double> num(V, 0.0);
        double den = 0.0;
        for (index_t s = 0; s <= t; ++s) {
          const auto fk = phi(k, b, s, h, 1.0);
          double a = 0.0;
          for (std::size_t i = 0; i < fq.size(); ++i) a += fq[i] * fk[i];
          den += a;
          for (index_t e = 0; e < V; ++e)
            num[static_cast<std::size_t>(e)] += a * v.cview()(b, s, h, e);
        }
        for (index_t e = 0; e < V; ++e, ++idx)
          EXPECT_NEAR(got[idx], num[static_cast<std::size_t>(e)] / (den + 1e-6), 1e-12);
      }
}

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

TEST(BasedReference, HeadFirstStridedEqualsContiguous) {
  const index_t B = 2, T = 4, H = 3, K = 2, V = 3;
  auto q = random4({B, T, H, K}, 11);
  auto k = random4({B, T, H, K}, 12);
  auto v = random4({B, T, H, V}, 13);
  const auto want = run(qkv(q, k, v));
  const auto qh = to_head_first(q), kh = to_head_first(k), vh = to_head_first(v);
  BasedInputs in{polyattn::head_first(qh.data(), B, T, H, K),
                 polyattn::head_first(kh.data(), B, T, H, K),
                 polyattn::head_first(vh.data(), B, T, H, V),
                 {}};
  std::vector<double> oh(want.size());
  based_attention(in, {}, polyattn::head_first(oh.data(), B, T, H, V));
  const auto ov = polyattn::head_first(oh.data(), B, T, H, V);
  std::size_t idx = 0;
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t e = 0; e < V; ++e, ++idx) EXPECT_EQ(ov(b, t, h, e), want[idx]);
}

TEST(BasedReference, VarlenEqualsSeparateCalls) {
  const std::vector<std::int64_t> cu{0, 2, 2, 7};
  const index_t T = 7, H = 2, K = 3, V = 2;
  auto q = random4({1, T, H, K}, 21);
  auto k = random4({1, T, H, K}, 22);
  auto v = random4({1, T, H, V}, 23);
  auto packed = qkv(q, k, v);
  packed.cu_seqlens = cu;
  const auto got = run(packed);
  std::vector<double> want;
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t b0 = cu[n], len = cu[n + 1] - cu[n];
    if (len == 0) continue;
    BasedInputs one{
        TensorView<const float, 4>(q.data.data() + b0 * H * K, {1, len, H, K}, q.cview().strides()),
        TensorView<const float, 4>(k.data.data() + b0 * H * K, {1, len, H, K}, k.cview().strides()),
        TensorView<const float, 4>(v.data.data() + b0 * H * V, {1, len, H, V}, v.cview().strides()),
        {}};
    const auto part = run(one);
    want.insert(want.end(), part.begin(), part.end());
  }
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[i]);
}

TEST(BasedReference, FloatOutputIsRoundedDoubleOutput) {
  auto q = random4({1, 3, 2, 2}, 31);
  auto k = random4({1, 3, 2, 2}, 32);
  auto v = random4({1, 3, 2, 2}, 33);
  const auto want = run(qkv(q, k, v));
  Tensor<float, 4> o({1, 3, 2, 2});
  based_attention(qkv(q, k, v), {}, o.view());
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_EQ(o.data[i], static_cast<float>(want[i]));
}

struct BadCase {
  std::string name, argument;
  std::function<void(BasedInputs&, BasedOptions&, TensorView<double, 4>&)> mutate;
};

TEST(BasedReference, BadArgumentsThrowNamedErrorAndLeaveOutputUntouched) {
  const index_t B = 1, T = 4, H = 2, K = 3, V = 2;
  auto q = random4({B, T, H, K}, 41);
  auto k = random4({B, T, H, K}, 42);
  auto v = random4({B, T, H, V}, 43);
  auto q2 = random4({2, 2, H, K}, 44);
  auto k2 = random4({2, 2, H, K}, 45);
  auto v2 = random4({2, 2, H, V}, 46);
  Tensor<double, 4> o_bad({B, T, H, V + 1}, 42.0);
  const std::vector<std::int64_t> cu_dec{0, 3, 1, 4}, cu_total{0, 3}, cu_ok{0, 2};
  const std::vector<BadCase> cases = {
      {"q null", "q", [&](auto& in, auto&, auto&) { in.q = {}; }},
      {"k null", "k", [&](auto& in, auto&, auto&) { in.k = {}; }},
      {"v null", "v", [&](auto& in, auto&, auto&) { in.v = {}; }},
      {"o null", "o", [&](auto&, auto&, auto& o) { o = {}; }},
      {"k key dim", "k",
       [&](auto& in, auto&, auto&) {
         in.k = TensorView<const float, 4>(k.data.data(), {B, T, H, K - 1}, k.cview().strides());
       }},
      {"k length", "k",
       [&](auto& in, auto&, auto&) {
         in.k = TensorView<const float, 4>(k.data.data(), {B, T - 1, H, K}, k.cview().strides());
       }},
      {"v heads", "v",
       [&](auto& in, auto&, auto&) {
         in.v = TensorView<const float, 4>(v.data.data(), {B, T, 1, V}, v.cview().strides());
       }},
      {"q negative stride", "q",
       [&](auto& in, auto&, auto&) {
         in.q = TensorView<const float, 4>(q.data.data(), q.shape, {0, 0, 0, -1});
       }},
      {"o shape", "o", [&](auto&, auto&, auto& o) { o = o_bad.view(); }},
      {"cu_seqlens decreasing", "cu_seqlens",
       [&](auto& in, auto&, auto&) { in.cu_seqlens = cu_dec; }},
      {"cu_seqlens total", "cu_seqlens", [&](auto& in, auto&, auto&) { in.cu_seqlens = cu_total; }},
      {"cu_seqlens B=2", "cu_seqlens",
       [&](auto& in, auto&, auto&) {
         in = qkv(q2, k2, v2);  // B = 2, T = 2 (o check comes after cu_seqlens)
         in.cu_seqlens = cu_ok;
       }},
      {"scale negative", "scale", [&](auto&, auto& opt, auto&) { opt.scale = -1.0; }},
      {"eps negative", "eps", [&](auto&, auto& opt, auto&) { opt.eps = -1e-6; }},
      {"eps nan", "eps",
       [&](auto&, auto& opt, auto&) { opt.eps = std::numeric_limits<double>::quiet_NaN(); }},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    Tensor<double, 4> o({B, T, H, V}, 42.0);
    auto in = qkv(q, k, v);
    BasedOptions opt;
    auto ov = o.view();
    c.mutate(in, opt, ov);
    try {
      based_attention(in, opt, ov);
      ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), c.argument) << e.what();
    }
    for (double x : o.data) ASSERT_EQ(x, 42.0);
    for (double x : o_bad.data) ASSERT_EQ(x, 42.0);
  }
}

}  // namespace
