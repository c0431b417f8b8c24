// Feature maps (polyattn/policies/feature_map.hpp): every map against a naive double version of
// its formula, the Taylor identities, Hedgehog/DPFP/Performer properties, apply_rows over
// strided views, argument errors and the FeatureMap concept.
#include "polyattn/policies/feature_map.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace polyattn {
namespace {

using test::random_vector;

// ---- the concept ------------------------------------------------------------------------------

static_assert(FeatureMap<Identity>);
static_assert(FeatureMap<EluPlusOne>);
static_assert(FeatureMap<Relu>);
static_assert(FeatureMap<SquaredRelu>);
static_assert(FeatureMap<Taylor2>);
static_assert(FeatureMap<Taylor2Fla>);
static_assert(FeatureMap<Hedgehog>);
static_assert(FeatureMap<DPFP>);
static_assert(FeatureMap<Performer>);
static_assert(!FeatureMap<int>);
static_assert(Identity::is_identity);
static_assert(!EluPlusOne::is_identity && !Relu::is_identity && !SquaredRelu::is_identity &&
              !Taylor2::is_identity && !Taylor2Fla::is_identity && !Hedgehog::is_identity &&
              !DPFP::is_identity && !Performer::is_identity);

struct NoIsIdentity {
  index_t out_dim(index_t d) const { return d; }
  void apply(const float*, index_t, float*) const {}
  const char* name() const { return "x"; }
};
struct RuntimeIsIdentity {
  static inline bool is_identity = false;  // not a constant expression
  index_t out_dim(index_t d) const { return d; }
  void apply(const float*, index_t, float*) const {}
  const char* name() const { return "x"; }
};
struct IntOutDim {
  static constexpr bool is_identity = false;
  int out_dim(int d) const { return d; }
  void apply(const float*, index_t, float*) const {}
  const char* name() const { return "x"; }
};
static_assert(!FeatureMap<NoIsIdentity>);
static_assert(!FeatureMap<RuntimeIsIdentity>);
static_assert(!FeatureMap<IntOutDim>);

// ---- helpers ----------------------------------------------------------------------------------

const std::vector<index_t> kDims = {1, 3, 16, 17};

// |a − b| / |b| (|a| when b == 0); NaN when either is NaN.
double rel_err(float a, double b) {
  const double diff = std::fabs(static_cast<double>(a) - b);
  return b == 0.0 ? std::fabs(static_cast<double>(a)) : diff / std::fabs(b);
}

template <FeatureMap M>
std::vector<float> run(const M& map, const std::vector<float>& x) {
  const index_t d = static_cast<index_t>(x.size());
  std::vector<float> out(static_cast<std::size_t>(map.out_dim(d)),
                         std::numeric_limits<float>::quiet_NaN());
  map.apply(x.data(), d, out.data());
  return out;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want,
                  const std::string& what, double tol = 1e-6) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_LT(rel_err(got[i], want[i]), tol)
        << what << " element " << i << ": got " << got[i] << " want " << want[i];
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

std::vector<float> normal_vector(std::size_t n, std::uint64_t seed, double stddev = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(dist(rng));
  return v;
}

// ---- naive double versions of the formulas ----------------------------------------------------

double relu_d(double t) {
  return t > 0.0 ? t : 0.0;
}

std::vector<double> naive_elementwise(const std::string& kind, const std::vector<float>& x) {
  std::vector<double> y;
  for (float f : x) {
    const double t = f;
    if (kind == "identity") y.push_back(t);
    if (kind == "elu_plus_one") y.push_back((t > 0 ? t : std::expm1(t)) + 1.0);
    if (kind == "relu") y.push_back(relu_d(t));
    if (kind == "squared_relu") y.push_back(relu_d(t) * relu_d(t));
  }
  return y;
}

// [1, s·x, s²·x_i²/√2, s²·x_i x_j for i < j] in fla's layout (diagonal, then triu offset 1).
std::vector<double> naive_taylor(const std::vector<float>& xf, double s) {
  const std::size_t d = xf.size();
  std::vector<double> x(d);
  for (std::size_t i = 0; i < d; ++i) x[i] = s * xf[i];
  std::vector<double> y{1.0};
  for (double v : x) y.push_back(v);
  for (double v : x) y.push_back(v * v / std::sqrt(2.0));
  for (std::size_t i = 0; i < d; ++i)
    for (std::size_t j = i + 1; j < d; ++j) y.push_back(x[i] * x[j]);
  return y;
}

std::vector<double> naive_hedgehog(const std::vector<float>& W, const std::vector<float>& b,
                                   double gain, const std::vector<float>& x) {
  const std::size_t dh = b.size(), d = x.size();
  std::vector<double> cat(2 * dh);
  for (std::size_t o = 0; o < dh; ++o) {
    double z = b[o];
    for (std::size_t i = 0; i < d; ++i) z += static_cast<double>(W[o * d + i]) * x[i];
    cat[o] = gain * z;
    cat[dh + o] = -gain * z;
  }
  const double mx = *std::max_element(cat.begin(), cat.end());
  double sum = 0.0;
  for (double& c : cat) sum += (c = std::exp(c - mx));
  for (double& c : cat) c /= sum;
  return cat;
}

// torch.roll(v, shifts=j): out[i] = v[(i − j) mod n].
std::vector<double> torch_roll(const std::vector<double>& v, long j) {
  const long n = static_cast<long>(v.size());
  std::vector<double> r(v.size());
  for (long i = 0; i < n; ++i)
    r[static_cast<std::size_t>(i)] = v[static_cast<std::size_t>(((i - j) % n + n) % n)];
  return r;
}

std::vector<double> naive_dpfp(const std::vector<float>& x, long nu) {
  std::vector<double> xp;
  for (float f : x) xp.push_back(relu_d(f));
  for (float f : x) xp.push_back(relu_d(-static_cast<double>(f)));
  std::vector<double> y;
  for (long j = 1; j <= nu; ++j) {
    const auto r = torch_roll(xp, j);
    for (std::size_t i = 0; i < xp.size(); ++i) y.push_back(xp[i] * r[i]);
  }
  return y;
}

std::vector<double> naive_performer(const std::vector<float>& P, long m,
                                    const std::vector<float>& xf,
                                    const PerformerOptions& opt = {}) {
  const std::size_t d = xf.size();
  const double s = opt.normalize_input ? std::pow(static_cast<double>(d), -0.25) : 1.0;
  std::vector<double> x(d);
  double sq = 0.0;
  for (std::size_t i = 0; i < d; ++i) {
    x[i] = s * xf[i];
    sq += x[i] * x[i];
  }
  std::vector<double> px(static_cast<std::size_t>(m));
  for (long r = 0; r < m; ++r) {
    double a = 0.0;
    for (std::size_t i = 0; i < d; ++i)
      a += static_cast<double>(P[static_cast<std::size_t>(r) * d + i]) * x[i];
    px[static_cast<std::size_t>(r)] = a;
  }
  const double mx = opt.subtract_row_max ? *std::max_element(px.begin(), px.end()) : 0.0;
  std::vector<double> y;
  for (double a : px)
    y.push_back((std::exp(a - sq / 2.0 - mx) + opt.eps) / std::sqrt(static_cast<double>(m)));
  return y;
}

// ---- element-wise maps ------------------------------------------------------------------------

TEST(FeatureMaps, ElementwiseMatchNaive) {
  for (index_t d : kDims) {
    const auto x = random_vector(static_cast<std::size_t>(d), 100 + d, -3.f, 3.f);
    const std::string tag = "d=" + std::to_string(d);
    EXPECT_EQ(Identity{}.out_dim(d), d);
    EXPECT_EQ(EluPlusOne{}.out_dim(d), d);
    EXPECT_EQ(Relu{}.out_dim(d), d);
    EXPECT_EQ(SquaredRelu{}.out_dim(d), d);
    expect_close(run(Identity{}, x), naive_elementwise("identity", x), "identity " + tag);
    expect_close(run(EluPlusOne{}, x), naive_elementwise("elu_plus_one", x), "elu+1 " + tag);
    expect_close(run(Relu{}, x), naive_elementwise("relu", x), "relu " + tag);
    expect_close(run(SquaredRelu{}, x), naive_elementwise("squared_relu", x), "sqrelu " + tag);
  }
  EXPECT_STREQ(Identity{}.name(), "identity");
  EXPECT_STREQ(EluPlusOne{}.name(), "elu_plus_one");
  EXPECT_STREQ(Relu{}.name(), "relu");
  EXPECT_STREQ(SquaredRelu{}.name(), "squared_relu");
}

TEST(FeatureMaps, ElementwiseEdgeValues) {
  const std::vector<float> x = {0.f, -0.f, 1e-30f, -1e-30f, -100.f, 80.f};
  const auto e = run(EluPlusOne{}, x);
  EXPECT_EQ(e[0], 1.f);
  EXPECT_EQ(e[2], 1.f);
  EXPECT_EQ(e[3], 1.f);
  EXPECT_GT(e[4], 0.f);  // e^-100, a float denormal-free positive value
  EXPECT_EQ(e[5], 81.f);
  const auto r = run(Relu{}, x);
  EXPECT_EQ(r[3], 0.f);
  EXPECT_EQ(r[4], 0.f);
  EXPECT_EQ(r[5], 80.f);
  EXPECT_EQ(run(SquaredRelu{}, x)[5], 6400.f);
}

TEST(FeatureMaps, NanPropagates) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {nan, 1.f};
  EXPECT_TRUE(std::isnan(run(Identity{}, x)[0]));
  EXPECT_TRUE(std::isnan(run(EluPlusOne{}, x)[0]));
  EXPECT_TRUE(std::isnan(run(Relu{}, x)[0]));
  EXPECT_TRUE(std::isnan(run(SquaredRelu{}, x)[0]));
  const auto t = run(Taylor2{}, x);
  EXPECT_EQ(t[0], 1.f);
  EXPECT_TRUE(std::isnan(t[1]));
  const auto dp = run(DPFP(2), x);
  EXPECT_TRUE(std::isnan(dp[0]));
  const std::vector<float> W = {1.f, 0.f, 0.f, 1.f}, b = {0.f, 0.f};
  for (float v : run(Hedgehog(W, b), x)) EXPECT_TRUE(std::isnan(v));
  for (float v : run(Performer(W, 2), x)) EXPECT_TRUE(std::isnan(v));
}

// ---- Taylor -----------------------------------------------------------------------------------

TEST(FeatureMaps, Taylor2MatchesNaiveAndOutDim) {
  for (index_t d : {0, 1, 3, 16, 17, 128}) {
    EXPECT_EQ(Taylor2{}.out_dim(d), 1 + d + d * (d + 1) / 2) << d;
    EXPECT_EQ(Taylor2Fla{}.out_dim(d), 1 + d + d * (d + 1) / 2) << d;
  }
  for (index_t d : kDims) {
    const auto x = random_vector(static_cast<std::size_t>(d), 200 + d, -2.f, 2.f);
    expect_close(run(Taylor2{}, x), naive_taylor(x, 1.0), "taylor2 d=" + std::to_string(d));
    expect_close(run(Taylor2Fla{}, x), naive_taylor(x, std::pow(double(d), -0.25)),
                 "taylor2_fla d=" + std::to_string(d));
  }
  EXPECT_STREQ(Taylor2{}.name(), "taylor2");
  EXPECT_STREQ(Taylor2Fla{}.name(), "taylor2_fla");
}

TEST(FeatureMaps, Taylor2LayoutIsFlas) {
  // d = 3, x = [1, 2, 3]: [1, x, x²/√2 (diagonal), x0x1, x0x2, x1x2].
  const auto y = run(Taylor2{}, {1.f, 2.f, 3.f});
  const float r = static_cast<float>(1.0 / std::sqrt(2.0));
  const std::vector<float> want = {1.f,
                                   1.f,
                                   2.f,
                                   3.f,
                                   r,
                                   static_cast<float>(4 / std::sqrt(2.0)),
                                   static_cast<float>(9 / std::sqrt(2.0)),
                                   2.f,
                                   3.f,
                                   6.f};
  ASSERT_EQ(y.size(), want.size());
  for (std::size_t i = 0; i < y.size(); ++i) EXPECT_EQ(y[i], want[i]) << i;
}

TEST(FeatureMaps, Taylor2KernelIdentity) {
  for (index_t d : kDims) {
    for (std::uint64_t trial = 0; trial < 5; ++trial) {
      const auto q = random_vector(static_cast<std::size_t>(d), 300 + 10 * d + trial, -1.5f, 1.5f);
      const auto k = random_vector(static_cast<std::size_t>(d), 900 + 10 * d + trial, -1.5f, 1.5f);
      const double s = dot(q, k);
      const double want = 1.0 + s + s * s / 2.0;
      const double got = dot(run(Taylor2{}, q), run(Taylor2{}, k));
      EXPECT_LT(std::fabs(got - want) / std::fabs(want), 1e-5) << "d=" << d;
      // fla's map: 1 + s/√d + s²/(2d), the Taylor-2 score of q scaled by d^-½.
      const double sd = s / std::sqrt(static_cast<double>(d));
      const double want_fla = 1.0 + sd + sd * sd / 2.0;
      const double got_fla = dot(run(Taylor2Fla{}, q), run(Taylor2Fla{}, k));
      EXPECT_LT(std::fabs(got_fla - want_fla) / std::fabs(want_fla), 1e-5) << "d=" << d;
    }
  }
}

// ---- Hedgehog ---------------------------------------------------------------------------------

TEST(FeatureMaps, HedgehogMatchesNaive) {
  for (index_t d : kDims) {
    for (index_t dh : {index_t{1}, d, index_t{5}}) {
      const auto W = random_vector(static_cast<std::size_t>(dh * d), 400 + d * 7 + dh, -1.f, 1.f);
      const auto b = random_vector(static_cast<std::size_t>(dh), 500 + d * 7 + dh, -0.5f, 0.5f);
      const auto x = random_vector(static_cast<std::size_t>(d), 600 + d * 7 + dh, -1.f, 1.f);
      const std::string tag = "d=" + std::to_string(d) + " d_half=" + std::to_string(dh);
      const Hedgehog hh(W, b);
      EXPECT_EQ(hh.out_dim(d), 2 * dh);
      EXPECT_EQ(hh.d_half(), dh);
      expect_close(run(hh, x), naive_hedgehog(W, b, 1.0, x), "hedgehog " + tag);
      const Hedgehog fla = Hedgehog::fla(W, b);
      EXPECT_EQ(fla.gain(), 2.0f);
      expect_close(run(fla, x), naive_hedgehog(W, b, 2.0, x), "hedgehog fla " + tag);
      expect_close(run(Hedgehog(W, b, 3.5f), x), naive_hedgehog(W, b, 3.5, x), "gain 3.5 " + tag);
    }
  }
  EXPECT_STREQ(Hedgehog({}, std::vector<float>{0.f}).name(), "hedgehog");
}

TEST(FeatureMaps, HedgehogRowsArePositiveAndSumToOne) {
  for (index_t d : kDims) {
    const index_t dh = d;
    // Large weights: softmax must stay finite and positive (stabilised by max |z|).
    const auto W = random_vector(static_cast<std::size_t>(dh * d), 700 + d, -20.f, 20.f);
    const auto b = random_vector(static_cast<std::size_t>(dh), 710 + d, -5.f, 5.f);
    for (std::uint64_t trial = 0; trial < 4; ++trial) {
      const auto x = random_vector(static_cast<std::size_t>(d), 720 + 10 * d + trial, -2.f, 2.f);
      for (const Hedgehog& hh : {Hedgehog(W, b), Hedgehog::fla(W, b)}) {
        const auto y = run(hh, x);
        double sum = 0.0;
        for (float v : y) {
          EXPECT_TRUE(std::isfinite(v));
          EXPECT_GE(v, 0.f);  // may underflow to 0 for extreme logits
          sum += v;
        }
        EXPECT_NEAR(sum, 1.0, 1e-6) << "d=" << d;
      }
    }
  }
  // Moderate logits: strictly positive.
  const std::vector<float> W = {0.5f, -0.25f, 1.f, 0.1f, 0.f, 0.3f}, b = {0.1f, -0.2f};
  for (float v : run(Hedgehog(W, b), {0.3f, -0.7f, 1.1f})) EXPECT_GT(v, 0.f);
}

TEST(FeatureMaps, HedgehogBadSizesThrowNamingTheArgument) {
  const std::vector<float> W(12, 0.1f), b(4, 0.f);
  const Hedgehog hh(W, b);  // d_half = 4, so d must be 3
  EXPECT_EQ(hh.out_dim(3), 8);
  for (index_t d : {0, 1, 2, 4, 6}) {
    try {
      (void)hh.out_dim(d);
      ADD_FAILURE() << "out_dim(" << d << ") did not throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "weight");
      EXPECT_NE(std::string(e.what()).find("[4," + std::to_string(d) + "]"), std::string::npos)
          << e.what();
    }
  }
  try {
    Hedgehog bad(std::vector<float>(10, 0.f), b);  // 10 is not a multiple of 4
    ADD_FAILURE() << "constructor did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "weight");
  }
  try {
    Hedgehog bad(W, std::span<const float>{});
    ADD_FAILURE() << "constructor did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "bias");
  }
  EXPECT_THROW(Hedgehog(W, b, std::numeric_limits<float>::infinity()), Error);
}

// ---- DPFP -------------------------------------------------------------------------------------

TEST(FeatureMaps, DpfpMatchesNaiveForEveryNu) {
  for (index_t d : kDims) {
    const auto x = random_vector(static_cast<std::size_t>(d), 800 + d, -2.f, 2.f);
    // nu up to beyond 2d to exercise the wrap-around of roll.
    for (index_t nu : {index_t{1}, index_t{2}, index_t{3}, index_t{4}, 2 * d + 1}) {
      const DPFP map(nu);
      EXPECT_EQ(map.nu(), nu);
      EXPECT_EQ(map.out_dim(d), 2 * d * nu);
      expect_close(run(map, x), naive_dpfp(x, static_cast<long>(nu)),
                   "dpfp d=" + std::to_string(d) + " nu=" + std::to_string(nu));
    }
  }
  EXPECT_EQ(DPFP{}.nu(), 4);  // fla's default
  EXPECT_STREQ(DPFP{}.name(), "dpfp");
}

TEST(FeatureMaps, DpfpRollDirectionIsTorchs) {
  // x = [1, -2] → x' = [1, 0, 0, 2]; torch.roll(x', 1) = [2, 1, 0, 0]; x'·roll = [2, 0, 0, 0].
  // torch.roll(x', 2) = [0, 2, 1, 0]; x'·roll = [0, 0, 0, 0].
  // torch.roll(x', 3) = [0, 0, 2, 1]; x'·roll = [0, 0, 0, 2].
  const auto y = run(DPFP(3), {1.f, -2.f});
  const std::vector<float> want = {2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
  ASSERT_EQ(y.size(), want.size());
  for (std::size_t i = 0; i < y.size(); ++i) EXPECT_EQ(y[i], want[i]) << i;
}

TEST(FeatureMaps, DpfpBadNuThrows) {
  for (index_t nu : {0, -1}) {
    try {
      DPFP bad(nu);
      ADD_FAILURE() << "DPFP(" << nu << ") did not throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "nu");
    }
  }
}

// ---- Performer --------------------------------------------------------------------------------

TEST(FeatureMaps, PerformerMatchesNaiveAndIsPositive) {
  for (index_t d : kDims) {
    for (index_t m : {index_t{1}, index_t{7}, index_t{64}}) {
      const auto P = normal_vector(static_cast<std::size_t>(m * d), 1000 + 13 * d + m);
      const auto x = random_vector(static_cast<std::size_t>(d), 1100 + 13 * d + m, -1.f, 1.f);
      const std::string tag = "d=" + std::to_string(d) + " m=" + std::to_string(m);
      const Performer pf(P, m);
      EXPECT_EQ(pf.out_dim(d), m);
      EXPECT_EQ(pf.num_features(), m);
      const auto y = run(pf, x);
      expect_close(y, naive_performer(P, static_cast<long>(m), x), "performer " + tag);
      for (float v : y) EXPECT_GT(v, 0.f) << tag;
      for (const PerformerOptions opt :
           {PerformerOptions{.normalize_input = true}, PerformerOptions{.subtract_row_max = true},
            PerformerOptions{.normalize_input = true, .subtract_row_max = true, .eps = 1e-6f}}) {
        const auto yo = run(Performer(P, m, opt), x);
        expect_close(yo, naive_performer(P, static_cast<long>(m), x, opt), "options " + tag);
        for (float v : yo) EXPECT_GT(v, 0.f) << tag;
      }
    }
  }
  EXPECT_STREQ(Performer(std::vector<float>(3), 1).name(), "performer");
}

TEST(FeatureMaps, PerformerRowMaxOnlyRescalesTheRow) {
  const index_t d = 16, m = 32;
  const auto P = normal_vector(static_cast<std::size_t>(m * d), 1200);
  const auto x = random_vector(static_cast<std::size_t>(d), 1201, -2.f, 2.f);
  const auto a = run(Performer(P, m), x);
  const auto b = run(Performer(P, m, {.subtract_row_max = true}), x);
  const double ratio = static_cast<double>(b[0]) / a[0];
  EXPECT_LE(*std::max_element(b.begin(), b.end()),
            static_cast<float>(1.0 / std::sqrt(double(m))) * 1.000001f);
  for (index_t r = 0; r < m; ++r)
    EXPECT_NEAR(
        static_cast<double>(b[static_cast<std::size_t>(r)]) / a[static_cast<std::size_t>(r)], ratio,
        ratio * 1e-6);
}

TEST(FeatureMaps, PerformerEstimatesTheSoftmaxKernel) {
  // E[φ(q)·φ(k)] = exp(q·k) for Gaussian rows of P; Monte Carlo over many features.
  const index_t d = 4, m = 200000;
  const auto P = normal_vector(static_cast<std::size_t>(m * d), 1300);
  const std::vector<float> q = {0.3f, -0.2f, 0.4f, 0.1f}, k = {-0.1f, 0.5f, 0.2f, 0.3f};
  const Performer pf(P, m);
  const double est = dot(run(pf, q), run(pf, k));
  const double exact = std::exp(dot(q, k));
  EXPECT_NEAR(est / exact, 1.0, 0.01) << est << " vs " << exact;
  // normalize_input targets exp(q·k/√d).
  const Performer pn(P, m, {.normalize_input = true});
  const double est_n = dot(run(pn, q), run(pn, k));
  EXPECT_NEAR(est_n / std::exp(dot(q, k) / 2.0), 1.0, 0.01);
}

TEST(FeatureMaps, PerformerBadSizesThrowNamingTheArgument) {
  const std::vector<float> P(8 * 3, 0.1f);
  const Performer pf(P, 8);  // d must be 3
  EXPECT_EQ(pf.out_dim(3), 8);
  for (index_t d : {0, 2, 4}) {
    try {
      (void)pf.out_dim(d);
      ADD_FAILURE() << "out_dim(" << d << ") did not throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "projection");
    }
  }
  try {
    Performer bad(std::vector<float>(10, 0.f), 8);
    ADD_FAILURE() << "constructor did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "projection");
  }
  try {
    Performer bad(P, 0);
    ADD_FAILURE() << "constructor did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "num_features");
  }
  EXPECT_THROW(Performer(P, 8, {.eps = -1.f}), Error);
}

// ---- apply_rows -------------------------------------------------------------------------------

// out (contiguous [B,T,H,F]) by applying the map row by row to contiguous x [B,T,H,D].
template <FeatureMap M>
std::vector<float> rows_by_hand(const M& map, const std::vector<float>& x, index_t rows,
                                index_t D) {
  const index_t F = map.out_dim(D);
  std::vector<float> out(static_cast<std::size_t>(rows * F));
  for (index_t r = 0; r < rows; ++r) map.apply(x.data() + r * D, D, out.data() + r * F);
  return out;
}

template <FeatureMap M>
void check_apply_rows(const M& map, index_t D, const std::string& tag) {
  const index_t B = 2, T = 5, H = 3;
  const index_t F = map.out_dim(D);
  const auto x = random_vector(static_cast<std::size_t>(B * T * H * D), 1400 + D, -1.5f, 1.5f);
  const auto want = rows_by_hand(map, x, B * T * H, D);

  // Contiguous [B,T,H,D] → contiguous out.
  std::vector<float> out(want.size(), -7.f);
  apply_rows(map, bthd(x.data(), B, T, H, D), bthd(out.data(), B, T, H, F));
  EXPECT_EQ(out, want) << tag << " contiguous";

  // Head-first memory [B,H,T,D] for x and [B,H,T,F] for out.
  std::vector<float> xh(x.size());
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < D; ++i)
          xh[static_cast<std::size_t>(((b * H + h) * T + t) * D + i)] =
              x[static_cast<std::size_t>(((b * T + t) * H + h) * D + i)];
  std::vector<float> oh(want.size(), -7.f);
  apply_rows(map, head_first<const float>(xh.data(), B, T, H, D),
             head_first(oh.data(), B, T, H, F));
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t f = 0; f < F; ++f)
          ASSERT_EQ(oh[static_cast<std::size_t>(((b * H + h) * T + t) * F + f)],
                    want[static_cast<std::size_t>(((b * T + t) * H + h) * F + f)])
              << tag << " head-first";

  // Inner stride 2 on x (interleaved with junk) and 3 on out (gaps must stay untouched).
  std::vector<float> xs(x.size() * 2, 1e30f);
  for (std::size_t i = 0; i < x.size(); ++i) xs[2 * i] = x[i];
  const TensorView<const float, 4> xv(xs.data(), {B, T, H, D},
                                      {T * H * D * 2, H * D * 2, D * 2, 2});
  std::vector<float> os(want.size() * 3, -7.f);
  const TensorView<float, 4> ov(os.data(), {B, T, H, F}, {T * H * F * 3, H * F * 3, F * 3, 3});
  apply_rows(map, xv, ov);
  for (std::size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(os[3 * i], want[i]) << tag << " strided " << i;
    ASSERT_EQ(os[3 * i + 1], -7.f);
    ASSERT_EQ(os[3 * i + 2], -7.f);
  }
}

TEST(FeatureMaps, ApplyRowsStridedViewsMatchContiguous) {
  for (index_t D : {1, 3, 16, 17}) {
    const std::string tag = "D=" + std::to_string(D);
    check_apply_rows(Identity{}, D, "identity " + tag);
    check_apply_rows(EluPlusOne{}, D, "elu+1 " + tag);
    check_apply_rows(SquaredRelu{}, D, "sqrelu " + tag);
    check_apply_rows(Taylor2{}, D, "taylor2 " + tag);
    check_apply_rows(Taylor2Fla{}, D, "taylor2_fla " + tag);
    check_apply_rows(DPFP(3), D, "dpfp " + tag);
    const auto W = random_vector(static_cast<std::size_t>(5 * D), 1500 + D);
    const auto b = random_vector(5, 1501 + D);
    check_apply_rows(Hedgehog::fla(W, b), D, "hedgehog " + tag);
    const auto P = normal_vector(static_cast<std::size_t>(9 * D), 1502 + D);
    check_apply_rows(Performer(P, 9), D, "performer " + tag);
  }
}

TEST(FeatureMaps, ApplyRowsEmptyIsFine) {
  std::vector<float> x, out;
  apply_rows(Taylor2{}, bthd<const float>(nullptr, 0, 4, 2, 3), bthd<float>(nullptr, 0, 4, 2, 10));
  apply_rows(Relu{}, bthd<const float>(x.data(), 1, 0, 2, 3), bthd<float>(out.data(), 1, 0, 2, 3));
}

void expect_error(const auto& fn, const std::string& arg) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one naming '" << arg << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), arg) << e.what();
  }
}

TEST(FeatureMaps, ApplyRowsBadArgumentsThrowAndWriteNothing) {
  const index_t B = 1, T = 2, H = 2, D = 3;
  const auto x = random_vector(static_cast<std::size_t>(B * T * H * D), 1600);
  const index_t F = Taylor2{}.out_dim(D);
  std::vector<float> out(static_cast<std::size_t>(B * T * H * F), -7.f);
  const auto untouched = [&] {
    for (float v : out) ASSERT_EQ(v, -7.f);
  };
  // Wrong out_dim, wrong T.
  expect_error(
      [&] { apply_rows(Taylor2{}, bthd(x.data(), B, T, H, D), bthd(out.data(), B, T, H, F - 1)); },
      "out");
  expect_error(
      [&] { apply_rows(Taylor2{}, bthd(x.data(), B, T, H, D), bthd(out.data(), B, 1, H, F)); },
      "out");
  expect_error(
      [&] { apply_rows(Relu{}, bthd(x.data(), B, T, H, D), bthd(out.data(), B, T, H, D + 1)); },
      "out");
  // Null data with a non-empty shape.
  expect_error(
      [&] {
        apply_rows(Taylor2{}, bthd<const float>(nullptr, B, T, H, D), bthd(out.data(), B, T, H, F));
      },
      "x");
  expect_error(
      [&] { apply_rows(Taylor2{}, bthd(x.data(), B, T, H, D), bthd<float>(nullptr, B, T, H, F)); },
      "out");
  // Negative size / stride.
  expect_error(
      [&] {
        apply_rows(Relu{}, TensorView<const float, 4>(x.data(), {B, T, H, -1}, {12, 6, 3, 1}),
                   bthd(out.data(), B, T, H, D));
      },
      "x");
  expect_error(
      [&] {
        apply_rows(Relu{}, bthd(x.data(), B, T, H, D),
                   TensorView<float, 4>(out.data(), {B, T, H, D}, {12, 6, 3, -1}));
      },
      "out");
  // Hedgehog weights for another input dimension.
  const std::vector<float> W(4 * 5, 0.1f), b(4, 0.f);
  std::vector<float> hout(static_cast<std::size_t>(B * T * H * 8), -7.f);
  expect_error(
      [&] {
        apply_rows(Hedgehog(W, b), bthd(x.data(), B, T, H, D), bthd(hout.data(), B, T, H, 8));
      },
      "weight");
  for (float v : hout) ASSERT_EQ(v, -7.f);
  const std::vector<float> P(6 * 5, 0.1f);
  expect_error(
      [&] {
        apply_rows(Performer(P, 6), bthd(x.data(), B, T, H, D), bthd(hout.data(), B, T, H, 6));
      },
      "projection");
  untouched();
}

TEST(FeatureMaps, ApplyRowsRejectsOverlap) {
  const index_t B = 1, T = 2, H = 2, D = 4;
  std::vector<float> buf(static_cast<std::size_t>(2 * B * T * H * D), 0.5f);
  // In place.
  expect_error(
      [&] {
        apply_rows(Relu{}, bthd<const float>(buf.data(), B, T, H, D), bthd(buf.data(), B, T, H, D));
      },
      "out");
  // Partial overlap.
  expect_error(
      [&] {
        apply_rows(Relu{}, bthd<const float>(buf.data(), B, T, H, D),
                   bthd(buf.data() + 5, B, T, H, D));
      },
      "out");
  // Adjacent is fine.
  apply_rows(Relu{}, bthd<const float>(buf.data(), B, T, H, D),
             bthd(buf.data() + B * T * H * D, B, T, H, D));
}

}  // namespace
}  // namespace polyattn
