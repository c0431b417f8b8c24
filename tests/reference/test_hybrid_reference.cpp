// Pins the hybrid references (based_hybrid, lolcats, liger, agent_attention) to hand-computed
// cases and obviously-equivalent constructions, and checks argument validation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/reference/hybrid.hpp"

namespace {

using polyattn::test::random4;
using polyattn::test::t4;

using polyattn::Error;
using polyattn::index_t;
using polyattn::TensorView;
using polyattn::View4;
using polyattn::test::Tensor;
namespace ref = polyattn::reference;

constexpr double kTol = 1e-12;
const double e = std::exp(1.0);

void expect_all_near(const std::vector<double>& got, const std::vector<double>& want,
                     double tol = kTol) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "at " << i;
}

template <class In, class Opt, class F>
std::vector<double> run(F f, const In& in, const Opt& opt, std::array<index_t, 4> oshape) {
  Tensor<double, 4> o(oshape);
  f(in, opt, o.view());
  return o.data;
}

std::array<index_t, 4> out_shape(const polyattn::EView4& q, const polyattn::EView4& v) {
  return {q.size(0), q.size(1), q.size(2), v.size(3)};
}

std::vector<double> based_hybrid(const ref::BasedHybridInputs& in,
                                 const ref::BasedHybridOptions& opt) {
  return run([](auto& i, auto& o, auto out) { ref::based_hybrid(i, o, out); }, in, opt,
             out_shape(in.q, in.v));
}
std::vector<double> lolcats(const ref::LolcatsInputs& in, const ref::LolcatsOptions& opt) {
  return run([](auto& i, auto& o, auto out) { ref::lolcats(i, o, out); }, in, opt,
             out_shape(in.q, in.v));
}
std::vector<double> liger(const ref::LigerInputs& in, const ref::LigerOptions& opt) {
  return run([](auto& i, auto& o, auto out) { ref::liger(i, o, out); }, in, opt,
             out_shape(in.q, in.v));
}
std::vector<double> agent(const ref::AgentInputs& in, const ref::AgentOptions& opt = {}) {
  return run([](auto& i, auto& o, auto out) { ref::agent_attention(i, o, out); }, in, opt,
             out_shape(in.q, in.v));
}

// Causal softmax (optionally windowed) of the softmax reference, for equivalences.
std::vector<double> causal_softmax(const Tensor<float, 4>& q, const Tensor<float, 4>& k,
                                   const Tensor<float, 4>& v, index_t window = 0) {
  polyattn::SoftmaxInputs in;
  in.q = q.cview();
  in.k = k.cview();
  in.v = v.cview();
  polyattn::SoftmaxOptions opt;
  opt.causal = true;
  opt.window = window;
  Tensor<double, 4> o(out_shape(q.cview(), v.cview()));
  ref::softmax_attention(in, opt, o.view());
  return o.data;
}

// [1, len, H, D] view of packed rows [b0, b0 + len) of a contiguous [1, T, H, D] tensor.
View4<const float> rows(const Tensor<float, 4>& x, index_t b0, index_t len) {
  return View4<const float>(x.data.data() + b0 * x.shape[2] * x.shape[3],
                            {1, len, x.shape[2], x.shape[3]}, x.cview().strides());
}

// Expects `call` to throw an Error naming `argument` and leave `o` (pre-filled with 42) as is.
void expect_bad(const std::string& argument, const std::function<void()>& call,
                const std::vector<double>& o) {
  try {
    call();
    ADD_FAILURE() << "no exception";
  } catch (const Error& err) {
    EXPECT_EQ(err.argument(), argument) << err.what();
  }
  for (double x : o) ASSERT_EQ(x, 42.0);
}

// ---- based_hybrid ---------------------------------------------------------------------------

// T = 2, D = K = 1 (both default scales 1), q = [1, 2], k = [2, 1], v = [1, 3], window 2.
//   Based: f(x) = 1 + x + x²/2; t0: x = 2 → f = 5 → 5/(5+eps);
//          t1: x = 4, 2 → f = 13, 5 → (13 + 15)/(18 + eps) = 28/(18 + eps).
//   SWA:   t0 → v0 = 1; t1: s = [4, 2] → (e⁴·1 + e²·3)/(e⁴ + e²) = (e² + 3)/(e² + 1).
//   With window 1 the SWA part of t1 is v1 = 3.
TEST(BasedHybridReference, TwoTokenHandComputed) {
  auto q = t4({1, 2, 1, 1}, {1, 2});
  auto k = t4({1, 2, 1, 1}, {2, 1});
  auto v = t4({1, 2, 1, 1}, {1, 3});
  ref::BasedHybridInputs in{q.cview(), k.cview(), v.cview(), {}, {}, {}};
  ref::BasedHybridOptions opt;
  opt.window = 2;
  const double e2 = std::exp(2.0);
  expect_all_near(based_hybrid(in, opt),
                  {5.0 / (5.0 + 1e-6) + 1.0, 28.0 / (18.0 + 1e-6) + (e2 + 3.0) / (e2 + 1.0)});
  opt.window = 1;
  expect_all_near(based_hybrid(in, opt), {5.0 / (5.0 + 1e-6) + 1.0, 28.0 / (18.0 + 1e-6) + 3.0});
}

// Separate Based inputs with K = 2 (scale 2^-0.5), softmax D = 1 with q = 0 (uniform window):
//   lin_q1 = [1, 1], lin_k = [[1, 1], [0, 0]], v = [0, 1]: x10 = √2 → f = 2 + √2, x11 = 0 → 1,
//   Based o1 = 1/(3 + √2 + eps); SWA (window 2, uniform) o1 = 1/2.
TEST(BasedHybridReference, SeparateLinearInputsHandComputed) {
  Tensor<float, 4> q({1, 2, 1, 1}, 0.f);
  auto k = random4({1, 2, 1, 1}, 1);
  auto v = t4({1, 2, 1, 1}, {0, 1});
  auto lq = t4({1, 2, 1, 2}, {0, 0, 1, 1});
  auto lk = t4({1, 2, 1, 2}, {1, 1, 0, 0});
  ref::BasedHybridInputs in{q.cview(), k.cview(), v.cview(), lq.cview(), lk.cview(), {}};
  ref::BasedHybridOptions opt;
  opt.window = 2;
  const auto o = based_hybrid(in, opt);
  EXPECT_NEAR(o[0], 0.0, kTol);
  EXPECT_NEAR(o[1], 1.0 / (3.0 + std::sqrt(2.0) + 1e-6) + 0.5, kTol);
}

TEST(BasedHybridReference, VarlenEqualsSeparateCalls) {
  const std::vector<std::int64_t> cu{0, 3, 8};
  auto q = random4({1, 8, 2, 3}, 11);
  auto k = random4({1, 8, 2, 3}, 12);
  auto v = random4({1, 8, 2, 2}, 13);
  auto lq = random4({1, 8, 2, 4}, 14);
  auto lk = random4({1, 8, 2, 4}, 15);
  ref::BasedHybridOptions opt;
  opt.window = 2;
  const auto got = based_hybrid({q.cview(), k.cview(), v.cview(), lq.cview(), lk.cview(), cu}, opt);
  std::vector<double> want;
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t b0 = cu[n], len = cu[n + 1] - cu[n];
    const auto part = based_hybrid({rows(q, b0, len),
                                    rows(k, b0, len),
                                    rows(v, b0, len),
                                    rows(lq, b0, len),
                                    rows(lk, b0, len),
                                    {}},
                                   opt);
    want.insert(want.end(), part.begin(), part.end());
  }
  expect_all_near(got, want, 0.0);
}

TEST(BasedHybridReference, BadArguments) {
  auto q = random4({1, 4, 2, 3}, 21);
  auto k = random4({1, 4, 2, 3}, 22);
  auto v = random4({1, 4, 2, 2}, 23);
  auto lq = random4({1, 4, 2, 5}, 24);
  auto lk_bad = random4({1, 4, 2, 4}, 25);
  auto lq_short = random4({1, 3, 2, 5}, 26);
  const std::vector<std::int64_t> cu_bad{0, 5};
  Tensor<double, 4> o({1, 4, 2, 2}, 42.0), o_bad({1, 4, 2, 3}, 42.0);
  auto call = [&](ref::BasedHybridInputs in, ref::BasedHybridOptions opt,
                  TensorView<double, 4> out) { return [=] { ref::based_hybrid(in, opt, out); }; };
  const ref::BasedHybridInputs good{q.cview(), k.cview(), v.cview(), {}, {}, {}};
  ref::BasedHybridOptions w2;
  w2.window = 2;
  auto with = [&](auto f) {
    auto in = good;
    auto opt = w2;
    f(in, opt);
    return call(in, opt, o.view());
  };
  ASSERT_NO_THROW(with([](auto&, auto&) {})());
  o.data.assign(o.data.size(), 42.0);
  expect_bad("q", with([](auto& in, auto&) { in.q = {}; }), o.data);
  expect_bad("k", with([&](auto& in, auto&) { in.k = lk_bad.cview(); }), o.data);
  expect_bad("v", with([&](auto& in, auto&) { in.v = lq_short.cview(); }), o.data);
  expect_bad("lin_q", with([&](auto& in, auto&) { in.lin_q = lq_short.cview(); }), o.data);
  expect_bad("lin_q", with([](auto& in, auto&) {
               in.lin_q = View4<const float>(nullptr, {1, 4, 2, 3}, {24, 6, 3, 1});
             }),
             o.data);
  expect_bad("lin_k", with([&](auto& in, auto&) {
               in.lin_q = lq.cview();
               in.lin_k = lk_bad.cview();
             }),
             o.data);
  expect_bad("lin_k", with([&](auto& in, auto&) { in.lin_q = lq.cview(); }),
             o.data);  // lin_k defaults to k (D 3)
  expect_bad("cu_seqlens", with([&](auto& in, auto&) { in.cu_seqlens = cu_bad; }), o.data);
  expect_bad("window", with([](auto&, auto& opt) { opt.window = 0; }), o.data);
  expect_bad("based_scale", with([](auto&, auto& opt) { opt.based_scale = 0.0; }), o.data);
  expect_bad("softmax_scale", with([](auto&, auto& opt) { opt.softmax_scale = -2.0; }), o.data);
  expect_bad("eps", with([](auto&, auto& opt) { opt.eps = -1.0; }), o.data);
  expect_bad("o", call(good, w2, o_bad.view()), o_bad.data);
  expect_bad("o", call(good, w2, {}), o.data);
}

// ---- lolcats --------------------------------------------------------------------------------

// T = 2, w = 1, D = F = 1, v = [1, 5], φq1 = 2, φk0 = 1.5 (φq0, φk1, q, k arbitrary).
//   p = 0: W = {0}, O = ∅ → o0 = v0 = 1.
//   p = 1: W = {1}, O = {0}: e^{s11 − m} = 1, φq1·φk0 = 3 →
//          γ = 1:   o1 = (1·5 + 3·1)/(1 + 3) = 2;   γ = 0.5: o1 = (2.5 + 3)/(0.5 + 3) = 11/7.
TEST(LolcatsReference, TwoTokenHandComputed) {
  auto q = random4({1, 2, 1, 1}, 31);
  auto k = random4({1, 2, 1, 1}, 32);
  auto v = t4({1, 2, 1, 1}, {1, 5});
  auto fq = t4({1, 2, 1, 1}, {7, 2});
  auto fk = t4({1, 2, 1, 1}, {1.5, 9});
  ref::LolcatsInputs in{q.cview(), k.cview(), v.cview(), fq.cview(), fk.cview(), {}};
  ref::LolcatsOptions opt;
  opt.window = 1;
  expect_all_near(lolcats(in, opt), {1.0, 2.0});
  opt.window_factor = 0.5;
  expect_all_near(lolcats(in, opt), {1.0, 11.0 / 7.0});
}

// T = 3, w = 2, D = F = 1, scale 1, φ ≡ 1, k = [3, 0, 1], v = [1, 2, 4], q = [5, 0, 10].
//   p = 0: o = 1.   p = 1: W = {0, 1}, q1 = 0 → uniform → (1 + 2)/2 = 1.5.
//   p = 2: W = {1, 2}, s = [0, 10], m = 10; O = {0} with φ·φ = 1:
//          o2 = (γ(e^−10·2 + 4) + 1·1) / (γ(e^−10 + 1) + 1)   (the max is taken over W only).
TEST(LolcatsReference, ThreeTokenHandComputedWithLargeWindowScore) {
  auto q = t4({1, 3, 1, 1}, {5, 0, 10});
  auto k = t4({1, 3, 1, 1}, {3, 0, 1});
  auto v = t4({1, 3, 1, 1}, {1, 2, 4});
  Tensor<float, 4> phi({1, 3, 1, 1}, 1.f);
  ref::LolcatsInputs in{q.cview(), k.cview(), v.cview(), phi.cview(), phi.cview(), {}};
  ref::LolcatsOptions opt;
  opt.window = 2;
  for (double g : {1.0, 0.25}) {
    opt.window_factor = g;
    const double em = std::exp(-10.0);
    expect_all_near(lolcats(in, opt), {1.0, 1.5, (g * (2 * em + 4) + 1) / (g * (em + 1) + 1)});
  }
}

// Window ≥ T: no token is outside the window, the shared normaliser is the softmax one and
// γ cancels, so lolcats equals causal softmax attention.
TEST(LolcatsReference, WindowAtLeastTEqualsCausalSoftmax) {
  auto q = random4({2, 5, 2, 3}, 41);
  auto k = random4({2, 5, 2, 3}, 42);
  auto v = random4({2, 5, 2, 2}, 43);
  auto fq = random4({2, 5, 2, 4}, 44, 0.f, 1.f);
  auto fk = random4({2, 5, 2, 4}, 45, 0.f, 1.f);
  ref::LolcatsInputs in{q.cview(), k.cview(), v.cview(), fq.cview(), fk.cview(), {}};
  ref::LolcatsOptions opt;
  opt.window = 5;
  opt.window_factor = 0.3;
  expect_all_near(lolcats(in, opt), causal_softmax(q, k, v));
}

// With φq·φk ≡ 0 outside the window, lolcats is sliding-window softmax.
TEST(LolcatsReference, ZeroFeaturesEqualSlidingWindowSoftmax) {
  auto q = random4({1, 6, 2, 3}, 51);
  auto k = random4({1, 6, 2, 3}, 52);
  auto v = random4({1, 6, 2, 2}, 53);
  Tensor<float, 4> zero({1, 6, 2, 2}, 0.f);
  ref::LolcatsInputs in{q.cview(), k.cview(), v.cview(), zero.cview(), zero.cview(), {}};
  ref::LolcatsOptions opt;
  opt.window = 2;
  expect_all_near(lolcats(in, opt), causal_softmax(q, k, v, 2));
}

TEST(LolcatsReference, VarlenEqualsSeparateCalls) {
  const std::vector<std::int64_t> cu{0, 4, 4, 9};
  auto q = random4({1, 9, 2, 3}, 61);
  auto k = random4({1, 9, 2, 3}, 62);
  auto v = random4({1, 9, 2, 2}, 63);
  auto fq = random4({1, 9, 2, 4}, 64, 0.f, 1.f);
  auto fk = random4({1, 9, 2, 4}, 65, 0.f, 1.f);
  ref::LolcatsOptions opt;
  opt.window = 2;
  opt.window_factor = 0.7;
  const auto got = lolcats({q.cview(), k.cview(), v.cview(), fq.cview(), fk.cview(), cu}, opt);
  std::vector<double> want;
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t b0 = cu[n], len = cu[n + 1] - cu[n];
    if (len == 0) continue;
    const auto part = lolcats({rows(q, b0, len),
                               rows(k, b0, len),
                               rows(v, b0, len),
                               rows(fq, b0, len),
                               rows(fk, b0, len),
                               {}},
                              opt);
    want.insert(want.end(), part.begin(), part.end());
  }
  expect_all_near(got, want, 0.0);
}

TEST(LolcatsReference, BadArguments) {
  auto q = random4({1, 4, 2, 3}, 71);
  auto k = random4({1, 4, 2, 3}, 72);
  auto v = random4({1, 4, 2, 2}, 73);
  auto fq = random4({1, 4, 2, 5}, 74);
  auto fk_bad = random4({1, 4, 2, 4}, 75);
  auto f_short = random4({1, 3, 2, 5}, 76);
  const std::vector<std::int64_t> cu_bad{0, 3, 2, 4};
  Tensor<double, 4> o({1, 4, 2, 2}, 42.0), o_bad({1, 4, 1, 2}, 42.0);
  const ref::LolcatsInputs good{q.cview(), k.cview(), v.cview(), fq.cview(), fq.cview(), {}};
  ref::LolcatsOptions w2;
  w2.window = 2;
  auto call = [&](ref::LolcatsInputs in, ref::LolcatsOptions opt, TensorView<double, 4> out) {
    return [=] { ref::lolcats(in, opt, out); };
  };
  auto with = [&](auto f) {
    auto in = good;
    auto opt = w2;
    f(in, opt);
    return call(in, opt, o.view());
  };
  ASSERT_NO_THROW(with([](auto&, auto&) {})());
  o.data.assign(o.data.size(), 42.0);
  expect_bad("k", with([](auto& in, auto&) { in.k = {}; }), o.data);
  expect_bad("v", with([&](auto& in, auto&) { in.v = f_short.cview(); }), o.data);
  expect_bad("phi_q", with([](auto& in, auto&) { in.phi_q = {}; }), o.data);
  expect_bad("phi_k", with([](auto& in, auto&) { in.phi_k = {}; }), o.data);
  expect_bad("phi_q", with([&](auto& in, auto&) { in.phi_q = f_short.cview(); }), o.data);
  expect_bad("phi_k", with([&](auto& in, auto&) { in.phi_k = fk_bad.cview(); }), o.data);
  expect_bad("cu_seqlens", with([&](auto& in, auto&) { in.cu_seqlens = cu_bad; }), o.data);
  expect_bad("window", with([](auto&, auto& opt) { opt.window = -3; }), o.data);
  expect_bad("scale",
             with([](auto&, auto& opt) { opt.scale = std::numeric_limits<double>::infinity(); }),
             o.data);
  expect_bad("window_factor", with([](auto&, auto& opt) { opt.window_factor = 0.0; }), o.data);
  expect_bad("o", call(good, w2, o_bad.view()), o_bad.data);
}

// ---- liger ----------------------------------------------------------------------------------

// T = 2, D = K = V = 1 (scales 1), q = [1, 1], k = [1, 2], v = [1, 3], scalar gate g = [0, −1].
//   GLA: S0 = k0 v0 = 1 → o0 = 1;  S1 = e^−1·1 + 2·3 = 6 + e^−1 → o1 = 6 + e^−1.
//   SWA window 1: [1, 3];  window 2: t1 s = [1, 2] → (e·1 + e²·3)/(e + e²) = (1 + 3e)/(1 + e).
//   α = β = 0.5.
TEST(LigerReference, TwoTokenScalarGateHandComputed) {
  auto q = t4({1, 2, 1, 1}, {1, 1});
  auto k = t4({1, 2, 1, 1}, {1, 2});
  auto v = t4({1, 2, 1, 1}, {1, 3});
  Tensor<float, 3> g({1, 2, 1});
  g.data = {0.f, -1.f};
  ref::LigerInputs in{q.cview(), k.cview(), v.cview(), {}, {}, g.cview(), {}, {}};
  ref::LigerOptions opt;
  opt.window = 1;
  expect_all_near(liger(in, opt), {0.5 * 1 + 0.5 * 1, 0.5 * (6 + 1 / e) + 0.5 * 3});
  opt.window = 2;
  expect_all_near(liger(in, opt), {1.0, 0.5 * (6 + 1 / e) + 0.5 * (1 + 3 * e) / (1 + e)});
}

// Vector gate, D = K = 2 (scales 2^-0.5), V = 1, α = 1, β = 2, window 2:
//   q0 = [1, 0], q1 = [1, 1], k0 = [1, 0], k1 = [0, 1], v = [1, 3], gk0 = [0, 0], gk1 = [−1, 0].
//   GLA: S0 = [1; 0] → o0 = 1/√2;  S1 = diag(e^−1, 1)·[1; 0] + [0; 3] = [e^−1; 3] → o1 = (e^−1 +
//   3)/√2. SWA: t0 → 1; t1: s = [1/√2, 1/√2] → (1 + 3)/2 = 2. o = [1/√2 + 2·1, (e^−1 + 3)/√2 +
//   2·2].
TEST(LigerReference, TwoTokenVectorGateHandComputed) {
  auto q = t4({1, 2, 1, 2}, {1, 0, 1, 1});
  auto k = t4({1, 2, 1, 2}, {1, 0, 0, 1});
  auto v = t4({1, 2, 1, 1}, {1, 3});
  auto gk = t4({1, 2, 1, 2}, {0, 0, -1, 0});
  ref::LigerInputs in{q.cview(), k.cview(), v.cview(), {}, {}, {}, gk.cview(), {}};
  ref::LigerOptions opt;
  opt.window = 2;
  opt.alpha = 1.0;
  opt.beta = 2.0;
  const double r2 = std::sqrt(2.0);
  expect_all_near(liger(in, opt), {1 / r2 + 2.0, (1 / e + 3) / r2 + 4.0});
}

// α = 1, β = 0, g = 0: plain causal linear attention o_t = Σ_{s≤t} (scale·q_t·k_s) v_s computed
// directly; a vector gate with equal channels equals the scalar gate; α = 0, β = 1 is SWA.
TEST(LigerReference, ReducesToItsParts) {
  const index_t B = 2, T = 5, H = 2, D = 3, K = 4, V = 2;
  auto q = random4({B, T, H, D}, 81);
  auto k = random4({B, T, H, D}, 82);
  auto v = random4({B, T, H, V}, 83);
  auto lq = random4({B, T, H, K}, 84);
  auto lk = random4({B, T, H, K}, 85);
  Tensor<float, 3> g0({B, T, H}, 0.f);
  ref::LigerOptions opt;
  opt.window = 2;
  opt.alpha = 1.0;
  opt.beta = 0.0;
  const auto lin =
      liger({q.cview(), k.cview(), v.cview(), lq.cview(), lk.cview(), g0.cview(), {}, {}}, opt);
  std::size_t idx = 0;
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t c = 0; c < V; ++c, ++idx) {
          double want = 0.0;
          for (index_t s = 0; s <= t; ++s) {
            double dot = 0.0;
            for (index_t i = 0; i < K; ++i)
              dot += 0.5 * lq.cview()(b, t, h, i) * lk.cview()(b, s, h, i);
            want += dot * v.cview()(b, s, h, c);
          }
          EXPECT_NEAR(lin[idx], want, kTol);
        }

  Tensor<float, 3> g({B, T, H});
  g.data = polyattn::test::random_vector(g.data.size(), 86, -1.f, 0.f);
  Tensor<float, 4> gk({B, T, H, K});
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < K; ++i) gk.view()(b, t, h, i) = g.cview()(b, t, h);
  opt.beta = 0.7;
  expect_all_near(
      liger({q.cview(), k.cview(), v.cview(), lq.cview(), lk.cview(), g.cview(), {}, {}}, opt),
      liger({q.cview(), k.cview(), v.cview(), lq.cview(), lk.cview(), {}, gk.cview(), {}}, opt));

  opt.alpha = 0.0;
  opt.beta = 1.0;
  expect_all_near(
      liger({q.cview(), k.cview(), v.cview(), lq.cview(), lk.cview(), g.cview(), {}, {}}, opt),
      causal_softmax(q, k, v, 2));
}

TEST(LigerReference, VarlenEqualsSeparateCallsStateResets) {
  const std::vector<std::int64_t> cu{0, 3, 7};
  auto q = random4({1, 7, 2, 3}, 91);
  auto k = random4({1, 7, 2, 3}, 92);
  auto v = random4({1, 7, 2, 2}, 93);
  auto gk = random4({1, 7, 2, 3}, 94, -1.f, 0.f);
  ref::LigerOptions opt;
  opt.window = 2;
  const auto got = liger({q.cview(), k.cview(), v.cview(), {}, {}, {}, gk.cview(), cu}, opt);
  std::vector<double> want;
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t b0 = cu[n], len = cu[n + 1] - cu[n];
    const auto part = liger(
        {rows(q, b0, len), rows(k, b0, len), rows(v, b0, len), {}, {}, {}, rows(gk, b0, len), {}},
        opt);
    want.insert(want.end(), part.begin(), part.end());
  }
  expect_all_near(got, want, 0.0);
}

TEST(LigerReference, BadArguments) {
  auto q = random4({1, 4, 2, 3}, 101);
  auto k = random4({1, 4, 2, 3}, 102);
  auto v = random4({1, 4, 2, 2}, 103);
  auto lq = random4({1, 4, 2, 5}, 104);
  auto x_short = random4({1, 3, 2, 3}, 105);
  Tensor<float, 3> g({1, 4, 2}, -0.1f), g_bad({1, 4, 1}, -0.1f);
  auto gk_bad = random4({1, 4, 2, 5}, 106);  // K 5 but lin_q defaults to q (K 3)
  const std::vector<std::int64_t> cu_bad{0, 2};
  Tensor<double, 4> o({1, 4, 2, 2}, 42.0), o_bad({2, 4, 2, 2}, 42.0);
  const ref::LigerInputs good{q.cview(), k.cview(), v.cview(), {}, {}, g.cview(), {}, {}};
  ref::LigerOptions w2;
  w2.window = 2;
  auto call = [&](ref::LigerInputs in, ref::LigerOptions opt, TensorView<double, 4> out) {
    return [=] { ref::liger(in, opt, out); };
  };
  auto with = [&](auto f) {
    auto in = good;
    auto opt = w2;
    f(in, opt);
    return call(in, opt, o.view());
  };
  ASSERT_NO_THROW(with([](auto&, auto&) {})());
  o.data.assign(o.data.size(), 42.0);
  expect_bad("q", with([](auto& in, auto&) { in.q = {}; }), o.data);
  expect_bad("k", with([&](auto& in, auto&) { in.k = x_short.cview(); }), o.data);
  expect_bad("lin_q", with([&](auto& in, auto&) { in.lin_q = x_short.cview(); }), o.data);
  expect_bad("lin_k", with([&](auto& in, auto&) { in.lin_q = lq.cview(); }), o.data);
  expect_bad("g", with([](auto& in, auto&) { in.g = {}; }), o.data);
  expect_bad("g", with([](auto& in, auto&) {  // null data with a shape is not "absent"
               in.g = polyattn::View3<const float>(nullptr, {1, 4, 2}, {8, 2, 1});
             }),
             o.data);
  expect_bad("gk", with([&](auto& in, auto&) { in.gk = q.cview(); }), o.data);
  expect_bad("g", with([&](auto& in, auto&) { in.g = g_bad.cview(); }), o.data);
  expect_bad("gk", with([&](auto& in, auto&) {
               in.g = {};
               in.gk = gk_bad.cview();
             }),
             o.data);
  expect_bad("cu_seqlens", with([&](auto& in, auto&) { in.cu_seqlens = cu_bad; }), o.data);
  expect_bad("window", with([](auto&, auto& opt) { opt.window = 0; }), o.data);
  expect_bad("alpha",
             with([](auto&, auto& opt) { opt.alpha = std::numeric_limits<double>::quiet_NaN(); }),
             o.data);
  expect_bad("beta",
             with([](auto&, auto& opt) { opt.beta = std::numeric_limits<double>::infinity(); }),
             o.data);
  expect_bad("gla_scale", with([](auto&, auto& opt) { opt.gla_scale = 0.0; }), o.data);
  expect_bad("softmax_scale", with([](auto&, auto& opt) { opt.softmax_scale = -1.0; }), o.data);
  expect_bad("o", call(good, w2, o_bad.view()), o_bad.data);
}

// ---- agent attention ------------------------------------------------------------------------

// D = V = 1, scale 1, k = [0, 1], v = [0, 1].
//   One agent A = 1: AV = softmax([0, 1])·v = sigmoid(1); a single agent gets weight 1, so
//   every query outputs sigmoid(1).
//   Two agents A = [0, 1]: AV0 = mean(v) = 1/2, AV1 = sigmoid(1).
//     q = 1: weights softmax([0, 1]) = [1/(1+e), e/(1+e)] → o = (1/2 + e·sigmoid(1))/(1 + e);
//     q = 0: uniform → o = (1/2 + sigmoid(1))/2.
TEST(AgentAttentionReference, HandComputed) {
  auto q = t4({1, 2, 1, 1}, {1, 0});
  auto k = t4({1, 2, 1, 1}, {0, 1});
  auto v = t4({1, 2, 1, 1}, {0, 1});
  const double s1 = 1.0 / (1.0 + std::exp(-1.0));
  auto a1 = t4({1, 1, 1, 1}, {1});
  expect_all_near(agent({q.cview(), k.cview(), v.cview(), a1.cview()}), {s1, s1});
  auto a2 = t4({1, 2, 1, 1}, {0, 1});
  expect_all_near(agent({q.cview(), k.cview(), v.cview(), a2.cview()}),
                  {(0.5 + e * s1) / (1 + e), (0.5 + s1) / 2});
}

// D = 2, default scale 2^-0.5; one agent A = [1, 1]; k0 = [1, 1], k1 = [0, 0], v = [2, 0]:
//   agent logits [2/√2, 0] = [√2, 0] → AV = 2·e^√2/(e^√2 + 1); T = 3 queries, S = 2 keys.
TEST(AgentAttentionReference, DefaultScaleAndTNotEqualS) {
  auto q = random4({1, 3, 1, 2}, 111);
  auto k = t4({1, 2, 1, 2}, {1, 1, 0, 0});
  auto v = t4({1, 2, 1, 1}, {2, 0});
  auto a = t4({1, 1, 1, 2}, {1, 1});
  const double es = std::exp(std::sqrt(2.0));
  const double av = 2 * es / (es + 1);
  expect_all_near(agent({q.cview(), k.cview(), v.cview(), a.cview()}), {av, av, av});
}

// Agents equal to orthonormal one-hot keys with scale 1000: A_a·K_j = δ_aj, so
// softmax(1000·A Kᵀ) is exactly the identity (e^−1000 underflows to 0) and AV = V; then
// o = softmax(1000·Q Kᵀ) V, plain non-causal softmax attention with the same scale.
TEST(AgentAttentionReference, OneHotAgentsEqualKeysGiveSoftmaxAttention) {
  auto q = random4({1, 3, 1, 2}, 121, -0.01f, 0.01f);
  auto k = t4({1, 2, 1, 2}, {1, 0, 0, 1});
  auto v = random4({1, 2, 1, 2}, 122);
  ref::AgentOptions big;
  big.scale = 1e3;
  polyattn::SoftmaxInputs in;
  in.q = q.cview();
  in.k = k.cview();
  in.v = v.cview();
  polyattn::SoftmaxOptions opt;
  opt.scale = 1e3;
  Tensor<double, 4> want({1, 3, 1, 2});
  ref::softmax_attention(in, opt, want.view());
  expect_all_near(agent({q.cview(), k.cview(), v.cview(), k.cview()}, big), want.data);
}

TEST(AgentAttentionReference, NoAgentsOrNoKeysGiveZeros) {
  auto q = random4({1, 2, 1, 2}, 131);
  auto k = random4({1, 3, 1, 2}, 132);
  auto v = random4({1, 3, 1, 2}, 133);
  float dummy = 0.f;
  View4<const float> none(&dummy, {1, 0, 1, 2}, {0, 2, 2, 1});
  for (double x : agent({q.cview(), k.cview(), v.cview(), none})) EXPECT_EQ(x, 0.0);
  auto a = random4({1, 2, 1, 2}, 134);
  View4<const float> k0(&dummy, {1, 0, 1, 2}, {0, 2, 2, 1}), v0(&dummy, {1, 0, 1, 2}, {0, 2, 2, 1});
  for (double x : agent({q.cview(), k0, v0, a.cview()})) EXPECT_EQ(x, 0.0);
}

TEST(AgentAttentionReference, BadArguments) {
  auto q = random4({1, 4, 2, 3}, 141);
  auto k = random4({1, 5, 2, 3}, 142);
  auto v = random4({1, 5, 2, 2}, 143);
  auto a = random4({1, 2, 2, 3}, 144);
  auto a_bad = random4({1, 2, 2, 4}, 145);
  auto k_bad = random4({1, 5, 1, 3}, 146);
  Tensor<double, 4> o({1, 4, 2, 2}, 42.0), o_bad({1, 5, 2, 2}, 42.0);
  const ref::AgentInputs good{q.cview(), k.cview(), v.cview(), a.cview()};
  auto call = [&](ref::AgentInputs in, ref::AgentOptions opt, TensorView<double, 4> out) {
    return [=] { ref::agent_attention(in, opt, out); };
  };
  auto with = [&](auto f) {
    auto in = good;
    ref::AgentOptions opt;
    f(in, opt);
    return call(in, opt, o.view());
  };
  ASSERT_NO_THROW(with([](auto&, auto&) {})());
  o.data.assign(o.data.size(), 42.0);
  expect_bad("agents", with([](auto& in, auto&) { in.agents = {}; }), o.data);
  expect_bad("agents", with([&](auto& in, auto&) { in.agents = a_bad.cview(); }), o.data);
  expect_bad("k", with([&](auto& in, auto&) { in.k = k_bad.cview(); }), o.data);
  expect_bad("v", with([&](auto& in, auto&) { in.v = q.cview(); }), o.data);
  expect_bad("scale", with([](auto&, auto& opt) { opt.scale = 0.0; }), o.data);
  expect_bad("o", call(good, {}, o_bad.view()), o_bad.data);
}

}  // namespace
