// tests/reference/test_linear_reference.cpp — pins reference::linear_recurrence
// (docs/conventions.md §4) to hand-computed cases and checks its argument validation and
// bookkeeping (GVA, varlen, state carry, strides).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/reference/linear.hpp"

namespace {

using polyattn::Decay;
using polyattn::LinearInputs;
using polyattn::LinearOptions;
using polyattn::LinearOutputs;
using polyattn::Normalizer;
using polyattn::Update;
using polyattn::View1;
using polyattn::View3;
using polyattn::View4;
using polyattn::test::Tensor;
namespace ref = polyattn::reference;

View4<const float> v4(const std::vector<float>& x, polyattn::index_t B, polyattn::index_t T,
                      polyattn::index_t H, polyattn::index_t D) {
  return polyattn::bthd(x.data(), B, T, H, D);
}
View3<const float> v3(const std::vector<float>& x, polyattn::index_t B, polyattn::index_t T,
                      polyattn::index_t H) {
  return polyattn::bth(x.data(), B, T, H);
}

// Additive, no decay, K = V = 1, scale 1, q = [1,2], k = [3,4], v = [5,6]:
//   t1: S = 3·5 = 15,          o1 = 15·1 = 15
//   t2: S = 15 + 4·6 = 39,     o2 = 39·2 = 78
TEST(LinearReference, AdditiveTwoTokens) {
  std::vector<float> q{1, 2}, k{3, 4}, v{5, 6};
  Tensor<double, 4> o({1, 2, 1, 1}), ht({1, 1, 1, 1});
  LinearInputs in{.q = v4(q, 1, 2, 1, 1), .k = v4(k, 1, 2, 1, 1), .v = v4(v, 1, 2, 1, 1)};
  LinearOptions opt{.scale = 1.0};
  ref::linear_recurrence<double>(in, opt, {o.view(), ht.view(), {}});
  EXPECT_NEAR(o.data[0], 15.0, 1e-12);
  EXPECT_NEAR(o.data[1], 78.0, 1e-12);
  EXPECT_NEAR(ht.data[0], 39.0, 1e-12);
}

// Gated delta rule, K = 2, V = 1, scale 1, exp(g) = 0.5 at both steps.
//   k1 = [1,0], v1 = 2, β1 = 0.5, q1 = [1,1]
//   t1: S = 0.5·0 = 0, u = 0.5·(2 − 0) = 1, S = [1, 0],            o1 = 1·1 + 0·1 = 1
//   k2 = [1,1], v2 = 4, β2 = 0.25, q2 = [0,1]
//   t2: S = 0.5·[1,0] = [0.5,0], Sᵀk2 = 0.5, u = 0.25·(4 − 0.5) = 0.875,
//       S = [0.5 + 0.875, 0.875] = [1.375, 0.875],               o2 = 0.875
TEST(LinearReference, GatedDeltaTwoTokens) {
  std::vector<float> q{1, 1, 0, 1}, k{1, 0, 1, 1}, v{2, 4}, beta{0.5f, 0.25f};
  std::vector<float> g{std::log(0.5f), std::log(0.5f)};
  Tensor<double, 4> o({1, 2, 1, 1}), ht({1, 1, 2, 1});
  LinearInputs in{.q = v4(q, 1, 2, 1, 2),
                  .k = v4(k, 1, 2, 1, 2),
                  .v = v4(v, 1, 2, 1, 1),
                  .g = v3(g, 1, 2, 1),
                  .beta = v3(beta, 1, 2, 1)};
  LinearOptions opt{.decay = Decay::ScalarPerToken, .update = Update::Delta, .scale = 1.0};
  ref::linear_recurrence<double>(in, opt, {o.view(), ht.view(), {}});
  EXPECT_NEAR(o.data[0], 1.0, 1e-7);  // float log(0.5) round-trips to 0.5 within 1e-7
  EXPECT_NEAR(o.data[1], 0.875, 1e-7);
  EXPECT_NEAR(ht.data[0], 1.375, 1e-7);
  EXPECT_NEAR(ht.data[1], 0.875, 1e-7);
}

// Vector (per key channel) decay, additive, K = V = 2, scale 1.
//   t1: k1 = [1,2], v1 = [1,0]: S = k1 v1ᵀ = [[1,0],[2,0]], q1 = [1,0]: o1 = Sᵀq1 = [1,0]
//   t2: exp(gk2) = [0.5, 0.25]: rows scale to [[0.5,0],[0.5,0]];
//       k2 = [0,1], v2 = [0,1]: S = [[0.5,0],[0.5,1]];  q2 = [1,1]: o2 = [1, 1]
TEST(LinearReference, VectorDecayTwoTokens) {
  std::vector<float> q{1, 0, 1, 1}, k{1, 2, 0, 1}, v{1, 0, 0, 1};
  std::vector<float> gk{0.f, 0.f, std::log(0.5f), std::log(0.25f)};
  Tensor<double, 4> o({1, 2, 1, 2}), ht({1, 1, 2, 2});
  LinearInputs in{.q = v4(q, 1, 2, 1, 2),
                  .k = v4(k, 1, 2, 1, 2),
                  .v = v4(v, 1, 2, 1, 2),
                  .gk = v4(gk, 1, 2, 1, 2)};
  LinearOptions opt{.decay = Decay::VectorPerToken, .scale = 1.0};
  ref::linear_recurrence<double>(in, opt, {o.view(), ht.view(), {}});
  const double expect_o[] = {1, 0, 1, 1};
  const double expect_s[] = {0.5, 0, 0.5, 1};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(o.data[i], expect_o[i], 1e-7) << i;
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(ht.data[i], expect_s[i], 1e-7) << i;
}

// Sum normaliser, K = V = 1, scale 0.5, eps 1e-6, q = [2,2] (so scale·q = 1), k = [1,3], v = [4,8]:
//   t1: S = 4,  z = 1, o1 = 4·1 / (1·1 + eps)
//   t2: S = 28, z = 4, o2 = 28·1 / (1·4 + eps)
TEST(LinearReference, SumNormaliserTwoTokens) {
  std::vector<float> q{2, 2}, k{1, 3}, v{4, 8};
  Tensor<double, 4> o({1, 2, 1, 1});
  Tensor<double, 3> zt({1, 1, 1});
  LinearInputs in{.q = v4(q, 1, 2, 1, 1), .k = v4(k, 1, 2, 1, 1), .v = v4(v, 1, 2, 1, 1)};
  LinearOptions opt{.normalizer = Normalizer::Sum, .scale = 0.5, .eps = 1e-6};
  ref::linear_recurrence<double>(in, opt, {o.view(), {}, zt.view()});
  EXPECT_NEAR(o.data[0], 4.0 / (1.0 + 1e-6), 1e-12);
  EXPECT_NEAR(o.data[1], 28.0 / (4.0 + 1e-6), 1e-12);
  EXPECT_NEAR(zt.data[0], 4.0, 1e-12);
}

// Delta rule with in-kernel L2 normalisation, K = 2, V = 1, scale 1, β = 1, one token:
//   k = [0,2] → k̂ = [0, 2/sqrt(4+1e-6)], q = [3,4] → q̂ = [3,4]/sqrt(25+1e-6)
//   u = 1·(v − 0) = v = 5, S = k̂·5, o = q̂·S = 4/sqrt(25+1e-6) · 10/sqrt(4+1e-6)
TEST(LinearReference, DeltaL2NormOneToken) {
  std::vector<float> q{3, 4}, k{0, 2}, v{5}, beta{1};
  Tensor<double, 4> o({1, 1, 1, 1});
  LinearInputs in{.q = v4(q, 1, 1, 1, 2),
                  .k = v4(k, 1, 1, 1, 2),
                  .v = v4(v, 1, 1, 1, 1),
                  .beta = v3(beta, 1, 1, 1)};
  LinearOptions opt{.update = Update::Delta, .scale = 1.0, .qk_l2norm = true};
  ref::linear_recurrence<double>(in, opt, {o.view(), {}, {}});
  EXPECT_NEAR(o.data[0], 4.0 / std::sqrt(25.0 + 1e-6) * 10.0 / std::sqrt(4.0 + 1e-6), 1e-12);
}

// GVA with a constant per-head decay: H = 1 q/k head serves HV = 2 value heads with
// exp(g_gamma) = [0.5, 1]. K = V = 1, scale 1, q = k = 1, v = [[1,1],[1,1]]:
//   head 0: S1 = 1, o1 = 1; S2 = 0.5 + 1 = 1.5, o2 = 1.5
//   head 1: S1 = 1, o1 = 1; S2 = 1 + 1 = 2,     o2 = 2
TEST(LinearReference, ConstantDecayWithGroupedValueHeads) {
  std::vector<float> q{1, 1}, k{1, 1}, v{1, 1, 1, 1}, gg{std::log(0.5f), 0.f};
  Tensor<double, 4> o({1, 2, 2, 1});
  LinearInputs in{.q = v4(q, 1, 2, 1, 1),
                  .k = v4(k, 1, 2, 1, 1),
                  .v = v4(v, 1, 2, 2, 1),
                  .g_gamma = View1<const float>::contiguous(gg.data(), {2})};
  LinearOptions opt{.decay = Decay::ConstantPerHead, .scale = 1.0};
  ref::linear_recurrence<double>(in, opt, {o.view(), {}, {}});
  EXPECT_NEAR(o.data[0], 1.0, 1e-7);
  EXPECT_NEAR(o.data[1], 1.0, 1e-7);
  EXPECT_NEAR(o.data[2], 1.5, 1e-7);
  EXPECT_NEAR(o.data[3], 2.0, 1e-7);
}

TEST(LinearReference, PresetConstantDecays) {
  EXPECT_NEAR(polyattn::retention_log_decay(0), std::log(1.0 - 1.0 / 32.0), 1e-15);
  EXPECT_NEAR(polyattn::retention_log_decay(3), std::log(1.0 - 1.0 / 256.0), 1e-15);
  // Lightning: -(8/H)(1 - l/L)·h with H = 4, l = 1, L = 4, h = 2  →  -(2)(0.75)(2) = -3
  EXPECT_NEAR(polyattn::lightning_log_decay(2, 4, 1, 4), -3.0, 1e-15);
  EXPECT_EQ(polyattn::lightning_log_decay(0, 4, 0, 4), 0.0);
}

// Random problem used by the bookkeeping tests below: every decay and update at once is not a
// valid preset, so the options pick one combination per call.
struct Problem {
  polyattn::index_t B, T, H, HV, K, V;
  std::vector<float> q, k, v, g, gk, beta, h0, z0;
  Problem(polyattn::index_t b, polyattn::index_t t, polyattn::index_t h, polyattn::index_t hv,
          polyattn::index_t kd, polyattn::index_t vd, std::uint64_t seed)
      : B(b), T(t), H(h), HV(hv), K(kd), V(vd) {
    using polyattn::test::random_vector;
    const auto n = [](auto... s) { return static_cast<std::size_t>((s * ...)); };
    q = random_vector(n(B, T, H, K), seed + 1);
    k = random_vector(n(B, T, H, K), seed + 2);
    v = random_vector(n(B, T, HV, V), seed + 3);
    g = random_vector(n(B, T, HV), seed + 4, -0.5f, 0.f);
    gk = random_vector(n(B, T, HV, K), seed + 5, -0.5f, 0.f);
    beta = random_vector(n(B, T, HV), seed + 6, 0.f, 1.f);
    h0 = random_vector(n(B, HV, K, V), seed + 7);
    z0 = random_vector(n(B, HV, K), seed + 8, 0.f, 1.f);
  }
};

LinearOptions gated_delta_options() {
  return {.decay = Decay::ScalarPerToken, .update = Update::Delta, .qk_l2norm = true};
}

// Sequences packed with cu_seqlens == separate calls, initial and final states per sequence.
TEST(LinearReference, VarlenEqualsSeparateCalls) {
  const polyattn::index_t H = 2, HV = 4, K = 3, V = 2;
  const std::vector<std::int64_t> lens{3, 0, 5};
  const std::vector<std::int64_t> cu{0, 3, 3, 8};
  Problem p(1, 8, H, HV, K, V, 11);
  std::vector<float> h0 = polyattn::test::random_vector(3 * HV * K * V, 99);
  Tensor<double, 4> o({1, 8, HV, V}), ht({3, HV, K, V});
  LinearInputs in{.q = v4(p.q, 1, 8, H, K),
                  .k = v4(p.k, 1, 8, H, K),
                  .v = v4(p.v, 1, 8, HV, V),
                  .g = v3(p.g, 1, 8, HV),
                  .beta = v3(p.beta, 1, 8, HV),
                  .initial_state = polyattn::bhkv(h0.data(), 3, HV, K, V),
                  .cu_seqlens = cu};
  ref::linear_recurrence<double>(in, gated_delta_options(), {o.view(), ht.view(), {}});
  for (std::size_t n = 0; n < lens.size(); ++n) {
    const polyattn::index_t L = lens[n], t0 = cu[n];
    if (L == 0) {  // an empty sequence passes its initial state through unchanged
      for (polyattn::index_t i = 0; i < HV * K * V; ++i)
        EXPECT_EQ(ht.data[n * HV * K * V + i], h0[n * HV * K * V + i]);
      continue;
    }
    Tensor<double, 4> os({1, L, HV, V}), hs({1, HV, K, V});
    auto slice4 = [&](const std::vector<float>& x, polyattn::index_t Hx, polyattn::index_t D) {
      return polyattn::bthd(x.data() + t0 * Hx * D, 1, L, Hx, D);
    };
    LinearInputs one{.q = slice4(p.q, H, K),
                     .k = slice4(p.k, H, K),
                     .v = slice4(p.v, HV, V),
                     .g = polyattn::bth(p.g.data() + t0 * HV, 1, L, HV),
                     .beta = polyattn::bth(p.beta.data() + t0 * HV, 1, L, HV),
                     .initial_state = polyattn::bhkv(h0.data() + n * HV * K * V, 1, HV, K, V)};
    ref::linear_recurrence<double>(one, gated_delta_options(), {os.view(), hs.view(), {}});
    for (polyattn::index_t i = 0; i < L * HV * V; ++i)
      EXPECT_EQ(os.data[i], o.data[t0 * HV * V + i]);
    for (polyattn::index_t i = 0; i < HV * K * V; ++i)
      EXPECT_EQ(hs.data[i], ht.data[n * HV * K * V + i]) << "sequence " << n;
  }
}

// Prefill in two pieces with the state (and the normaliser's z) carried == one call.
TEST(LinearReference, SplitPrefillCarriesStateAndZ) {
  const polyattn::index_t B = 2, T = 7, H = 1, HV = 2, K = 3, V = 4, T1 = 3;
  Problem p(B, T, H, HV, K, V, 21);
  LinearOptions opt{.decay = Decay::VectorPerToken, .normalizer = Normalizer::Sum};
  Tensor<double, 4> o({B, T, HV, V}), ht({B, HV, K, V});
  Tensor<double, 3> zt({B, HV, K});
  LinearInputs all{.q = v4(p.q, B, T, H, K),
                   .k = v4(p.k, B, T, H, K),
                   .v = v4(p.v, B, T, HV, V),
                   .gk = v4(p.gk, B, T, HV, K)};
  ref::linear_recurrence<double>(all, opt, {o.view(), ht.view(), zt.view()});

  // Time slices are strided views into the same buffers: [b, t0 + t, h, d].
  auto piece = [&](const std::vector<float>& x, polyattn::index_t Hx, polyattn::index_t D,
                   polyattn::index_t t0, polyattn::index_t L) {
    return View4<const float>(x.data() + t0 * Hx * D, {B, L, Hx, D}, {T * Hx * D, Hx * D, D, 1});
  };
  // The carried state goes through float (the input type), so pieces agree to float rounding.
  Tensor<float, 4> h1({B, HV, K, V});
  Tensor<float, 3> z1({B, HV, K});
  Tensor<double, 4> o1({B, T1, HV, V}), o2({B, T - T1, HV, V}), h2({B, HV, K, V});
  Tensor<double, 3> z2({B, HV, K});
  LinearInputs first{.q = piece(p.q, H, K, 0, T1),
                     .k = piece(p.k, H, K, 0, T1),
                     .v = piece(p.v, HV, V, 0, T1),
                     .gk = piece(p.gk, HV, K, 0, T1)};
  ref::linear_recurrence<double>(first, opt, {o1.view(), {}, {}});
  ref::linear_recurrence<float>(first, opt,
                                {Tensor<float, 4>({B, T1, HV, V}).view(), h1.view(), z1.view()});
  LinearInputs second{.q = piece(p.q, H, K, T1, T - T1),
                      .k = piece(p.k, H, K, T1, T - T1),
                      .v = piece(p.v, HV, V, T1, T - T1),
                      .gk = piece(p.gk, HV, K, T1, T - T1),
                      .initial_state = h1.cview(),
                      .initial_z = z1.cview()};
  ref::linear_recurrence<double>(second, opt, {o2.view(), h2.view(), z2.view()});

  std::vector<double> joined;
  for (polyattn::index_t b = 0; b < B; ++b) {
    auto row = [&](const Tensor<double, 4>& x, polyattn::index_t L) {
      joined.insert(joined.end(), x.data.begin() + b * L * HV * V,
                    x.data.begin() + (b + 1) * L * HV * V);
    };
    row(o1, T1);
    row(o2, T - T1);
  }
  EXPECT_LT(polyattn::test::rel_rmse(joined, o.data), 1e-6);
  EXPECT_LT(polyattn::test::rel_rmse(h2.data, ht.data), 1e-6);
  EXPECT_LT(polyattn::test::rel_rmse(z2.data, zt.data), 1e-6);
}

// Head-first memory [B,H,T,D] read through strides gives the same result as token-major memory.
TEST(LinearReference, HeadFirstStridesMatchContiguous) {
  const polyattn::index_t B = 2, T = 5, H = 2, K = 3, V = 2;
  Problem p(B, T, H, H, K, V, 31);
  auto to_head_first = [&](const std::vector<float>& x, polyattn::index_t D) {
    std::vector<float> y(x.size());
    for (polyattn::index_t b = 0; b < B; ++b)
      for (polyattn::index_t t = 0; t < T; ++t)
        for (polyattn::index_t h = 0; h < H; ++h)
          for (polyattn::index_t d = 0; d < D; ++d)
            y[((b * H + h) * T + t) * D + d] = x[((b * T + t) * H + h) * D + d];
    return y;
  };
  const auto qh = to_head_first(p.q, K), kh = to_head_first(p.k, K), vh = to_head_first(p.v, V);
  Tensor<double, 4> o1({B, T, H, V}), o2({B, T, H, V});
  LinearInputs a{.q = v4(p.q, B, T, H, K), .k = v4(p.k, B, T, H, K), .v = v4(p.v, B, T, H, V)};
  LinearInputs b{.q = polyattn::head_first(qh.data(), B, T, H, K),
                 .k = polyattn::head_first(kh.data(), B, T, H, K),
                 .v = polyattn::head_first(vh.data(), B, T, H, V)};
  ref::linear_recurrence<double>(a, {}, {o1.view(), {}, {}});
  ref::linear_recurrence<double>(b, {}, {o2.view(), {}, {}});
  EXPECT_EQ(o1.data, o2.data);
}

// Every bad argument throws polyattn::Error naming it, and the output stays untouched.
TEST(LinearReference, BadArgumentsNameTheArgumentAndWriteNothing) {
  const polyattn::index_t B = 1, T = 4, H = 2, K = 3, V = 2;
  Problem p(B, T, H, 4, K, V, 41);
  const std::vector<std::int64_t> bad_cu{0, 3, 2, 4};
  std::vector<float> short_k(p.k.begin(), p.k.end() - H * K);
  auto expect_error = [&](const LinearInputs& in, const LinearOptions& opt, const char* arg) {
    Tensor<double, 4> o({B, T, 4, V}, 7.0);
    try {
      ref::linear_recurrence<double>(in, opt, {o.view(), {}, {}});
      ADD_FAILURE() << "no error for " << arg;
    } catch (const polyattn::Error& e) {
      EXPECT_EQ(e.argument(), arg) << e.what();
    }
    for (double x : o.data) ASSERT_EQ(x, 7.0) << "output written for bad " << arg;
  };
  const LinearInputs good{.q = v4(p.q, B, T, H, K),
                          .k = v4(p.k, B, T, H, K),
                          .v = v4(p.v, B, T, 4, V),
                          .g = v3(p.g, B, T, 4),
                          .beta = v3(p.beta, B, T, 4)};
  const LinearOptions gdn = gated_delta_options();
  {
    LinearInputs in = good;
    in.k = v4(short_k, B, T - 1, H, K);
    expect_error(in, gdn, "k");
  }
  {
    LinearInputs in = good;
    in.v = v4(p.v, B, T, 3, 2);  // HV = 3 is not a multiple of H = 2
    expect_error(in, gdn, "v");
  }
  {
    LinearInputs in = good;
    in.q = View4<const float>();
    expect_error(in, gdn, "q");
  }
  {
    LinearInputs in = good;
    in.beta = View3<const float>();
    expect_error(in, gdn, "beta");
  }
  {
    LinearInputs in = good;
    in.g = v3(p.g, B, T, 2);
    expect_error(in, gdn, "g");
  }
  expect_error(good, LinearOptions{.update = Update::Delta}, "g");  // gate given, decay None
  {
    LinearInputs in = good;
    in.cu_seqlens = bad_cu;
    expect_error(in, gdn, "cu_seqlens");
  }
  {
    LinearInputs in = good;
    in.q = View4<const float>(p.q.data(), {B, T, H, -K}, {T * H * K, H * K, K, 1});
    expect_error(in, gdn, "q");
  }
  {
    LinearInputs in = good;
    in.initial_state = polyattn::bhkv(p.h0.data(), 1, 4, K, V + 1);
    expect_error(in, gdn, "initial_state");
  }
  {
    LinearOptions opt = gdn;
    opt.scale = std::nan("");
    expect_error(good, opt, "scale");
  }
  {
    LinearInputs in = good;
    in.initial_z = View3<const float>::contiguous(p.z0.data(), {1, 4, K});
    expect_error(in, gdn, "initial_z");  // no Sum normaliser
  }
}

// NaN in an input propagates to the outputs that depend on it; nothing crashes.
TEST(LinearReference, NaNPropagates) {
  std::vector<float> q{1, 1}, k{1, std::nanf("")}, v{1, 1};
  Tensor<double, 4> o({1, 2, 1, 1});
  LinearInputs in{.q = v4(q, 1, 2, 1, 1), .k = v4(k, 1, 2, 1, 1), .v = v4(v, 1, 2, 1, 1)};
  ref::linear_recurrence<double>(in, {}, {o.view(), {}, {}});
  EXPECT_FALSE(std::isnan(o.data[0]));
  EXPECT_TRUE(std::isnan(o.data[1]));
}

}  // namespace
