// tests/core/test_simd_ops.cpp — the SIMD vector helpers and batch functions, one typed suite per
// ISA (SimdOps/avx512, SimdOps/avx2, SimdOps/sse42, SimdOps/scalar; on AArch64 SimdOps/neon,
// SimdOps/scalar). The code under test is compiled in per-ISA units (simd_ops_unit.cpp); a suite
// skips when the CPU lacks its ISA. Every array is an exact-length std::vector so AddressSanitizer
// catches any tail over-read.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "simd_ops_under_test.hpp"

namespace {

using polyattn::test::random_vector;
using polyattn::test::SimdOps;
namespace simd = polyattn::simd;

constexpr double kU = 0x1p-24;  // unit roundoff of float
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
const std::vector<std::int64_t> kLengths = {0, 1, 2, 3, 7, 15, 16, 17, 31, 33, 64, 100, 1000};

template <class A>
class SimdOpsTest : public ::testing::Test {
 protected:
  using Ops = SimdOps<A>;
  void SetUp() override {
    if (!simd::isa_at_least(simd::cpu_isa(), simd::isa_of<A>))
      GTEST_SKIP() << "this CPU lacks " << simd::isa_name(simd::isa_of<A>)
                   << " (best: " << simd::isa_name(simd::cpu_isa()) << ")";
  }
  // Rigorous error bound for the 4-accumulator summation of n terms of magnitude sum `mag`:
  // each term passes at most n/(4W) + 3 (vector loop) + 1 (tail) + 2 (combine) + W - 1 (lanes)
  // additions, plus one rounding of the product.
  static double sum_bound(std::int64_t n, double mag) {
    const double w = static_cast<double>(Ops::width());
    return (static_cast<double>(n) / (4 * w) + w + 8) * kU * mag;
  }
};

// The tags of the processor family the test is built for (the other family's cannot be compiled).
#if defined(__aarch64__)
using Archs = ::testing::Types<simd::neon, simd::scalar_arch>;
#else
using Archs = ::testing::Types<simd::avx512, simd::avx2, simd::sse42, simd::scalar_arch>;
#endif
struct ArchName {
  template <class A>
  static std::string GetName(int) {
    return simd::isa_name(simd::isa_of<A>);
  }
};
TYPED_TEST_SUITE(SimdOpsTest, Archs, ArchName);

TYPED_TEST(SimdOpsTest, WidthMatchesIsa) {
  const std::size_t expected[] = {1, 4, 8, 16, 0, 0, 4};  // by Isa: scalar … avx512, neon
  EXPECT_EQ(TestFixture::Ops::width(), expected[static_cast<int>(simd::isa_of<TypeParam>)]);
}

TYPED_TEST(SimdOpsTest, DotMatchesDouble) {
  using Ops = typename TestFixture::Ops;
  for (std::int64_t n : kLengths) {
    const auto a = random_vector(static_cast<std::size_t>(n), 11 + n);
    const auto b = random_vector(static_cast<std::size_t>(n), 23 + n);
    double ref = 0, mag = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      ref += double(a[i]) * double(b[i]);
      mag += std::abs(double(a[i]) * double(b[i]));
    }
    const float got = Ops::dot(a.data(), b.data(), n);
    EXPECT_NEAR(got, ref, TestFixture::sum_bound(n, mag)) << "n=" << n;
    if (n == 0) {
      EXPECT_EQ(got, 0.f);
    }
  }
}

TYPED_TEST(SimdOpsTest, DotUnalignedStart) {
  using Ops = typename TestFixture::Ops;
  for (std::int64_t n : kLengths) {
    // Operands start one float into their buffers; the buffers end exactly at n.
    const auto a = random_vector(static_cast<std::size_t>(n) + 1, 5 + n);
    const auto b = random_vector(static_cast<std::size_t>(n) + 1, 7 + n);
    double ref = 0, mag = 0;
    for (std::int64_t i = 1; i <= n; ++i) {
      ref += double(a[i]) * double(b[i]);
      mag += std::abs(double(a[i]) * double(b[i]));
    }
    EXPECT_NEAR(Ops::dot(a.data() + 1, b.data() + 1, n), ref, TestFixture::sum_bound(n, mag))
        << "n=" << n;
  }
}

TYPED_TEST(SimdOpsTest, SumMatchesDouble) {
  using Ops = typename TestFixture::Ops;
  for (std::int64_t n : kLengths) {
    const auto x = random_vector(static_cast<std::size_t>(n), 31 + n, -2.f, 3.f);
    double ref = 0, mag = 0;
    for (float v : x) ref += v, mag += std::abs(double(v));
    const float got = Ops::sum(x.data(), n);
    EXPECT_NEAR(got, ref, TestFixture::sum_bound(n, mag)) << "n=" << n;
    if (n == 0) {
      EXPECT_EQ(got, 0.f);
    }
  }
}

TYPED_TEST(SimdOpsTest, MaxIsExact) {
  using Ops = typename TestFixture::Ops;
  for (std::int64_t n : kLengths) {
    // All negative, so a tail padded with 0 instead of -inf would be caught.
    const auto x = random_vector(static_cast<std::size_t>(n), 41 + n, -9.f, -1.f);
    float ref = -kInf;
    for (float v : x) ref = std::max(ref, v);
    EXPECT_EQ(Ops::max(x.data(), n), ref) << "n=" << n;
    // The maximum at each position in turn (first, middle, tail).
    for (std::int64_t p : {std::int64_t{0}, n / 2, n - 1}) {
      if (n == 0) break;
      auto y = x;
      y[p] = 0.5f;
      EXPECT_EQ(Ops::max(y.data(), n), 0.5f) << "n=" << n << " p=" << p;
    }
  }
  EXPECT_EQ(Ops::max(nullptr, 0), -kInf);
  const std::vector<float> minus_inf(17, -kInf);
  EXPECT_EQ(Ops::max(minus_inf.data(), 17), -kInf);
}

TYPED_TEST(SimdOpsTest, AxpyMatchesDouble) {
  using Ops = typename TestFixture::Ops;
  for (float alpha : {0.75f, -1.3f}) {
    for (std::int64_t n : kLengths) {
      const auto x = random_vector(static_cast<std::size_t>(n), 51 + n);
      auto y = random_vector(static_cast<std::size_t>(n), 61 + n);
      const auto y0 = y;
      Ops::axpy(alpha, x.data(), y.data(), n);
      for (std::int64_t i = 0; i < n; ++i) {
        const double ax = double(alpha) * double(x[i]);
        const double ref = double(y0[i]) + ax;
        EXPECT_NEAR(y[i], ref, 2 * kU * (std::abs(ax) + std::abs(double(y0[i])))) << i;
      }
    }
  }
}

TYPED_TEST(SimdOpsTest, AxpyLeavesNeighboursAlone) {
  using Ops = typename TestFixture::Ops;
  for (std::int64_t n : kLengths) {
    // y sits between two guard floats; x is exact-length.
    const auto x = random_vector(static_cast<std::size_t>(n), 71 + n);
    std::vector<float> y(static_cast<std::size_t>(n) + 2, 1.f);
    y.front() = y.back() = 123.f;
    Ops::axpy(2.f, x.data(), y.data() + 1, n);
    EXPECT_EQ(y.front(), 123.f);
    EXPECT_EQ(y.back(), 123.f);
  }
}

TYPED_TEST(SimdOpsTest, ScaleIsCorrectlyRounded) {
  using Ops = typename TestFixture::Ops;
  for (std::int64_t n : kLengths) {
    const auto x0 = random_vector(static_cast<std::size_t>(n), 81 + n, -100.f, 100.f);
    auto x = x0;
    Ops::scale(-0.3f, x.data(), n);
    for (std::int64_t i = 0; i < n; ++i)  // a float product is exact in double
      EXPECT_EQ(x[i], static_cast<float>(double(-0.3f) * double(x0[i]))) << i;
  }
}

TYPED_TEST(SimdOpsTest, ExpMatchesDouble) {
  using Ops = typename TestFixture::Ops;
  double worst = 0;
  for (std::int64_t n : kLengths) {
    const auto x = random_vector(static_cast<std::size_t>(n), 91 + n, -80.f, 80.f);
    std::vector<float> out(static_cast<std::size_t>(n), -1.f);
    Ops::exp(x.data(), out.data(), n);
    auto inplace = x;
    Ops::exp_inplace(inplace.data(), n);
    for (std::int64_t i = 0; i < n; ++i) {
      const double ref = std::exp(double(x[i]));
      const double rel = std::abs(out[i] - ref) / ref;
      worst = std::max(worst, rel);
      EXPECT_LE(rel, 4 * kU) << "x=" << x[i];
      EXPECT_EQ(inplace[i], out[i]) << i;
    }
  }
  ::testing::Test::RecordProperty("worst_exp_rel_error_in_u", std::to_string(worst / kU));
}

TYPED_TEST(SimdOpsTest, ExpDenseSweep) {
  using Ops = typename TestFixture::Ops;
  // Every representable range that stays normal: [-87, 88.3], 20001 points.
  constexpr std::int64_t n = 20001;
  std::vector<float> x(n), out(n);
  for (std::int64_t i = 0; i < n; ++i)
    x[i] = static_cast<float>(-87.0 + 175.3 * static_cast<double>(i) / (n - 1));
  Ops::exp(x.data(), out.data(), n);
  double worst = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double ref = std::exp(double(x[i]));
    worst = std::max(worst, std::abs(out[i] - ref) / ref);
  }
  EXPECT_LE(worst, 4 * kU);
  ::testing::Test::RecordProperty("worst_exp_rel_error_in_u", std::to_string(worst / kU));
}

TYPED_TEST(SimdOpsTest, ExpSpecialValues) {
  using Ops = typename TestFixture::Ops;
  const std::vector<float> x = {0.f,  -100.f, -1e30f, 1.f,  10.f,  50.f,  80.f,  88.f, 89.f,
                                kInf, -kInf,  kNaN,   -0.f, -87.f, 1e-7f, -20.f, 30.f};
  std::vector<float> out(x.size());
  Ops::exp(x.data(), out.data(), static_cast<std::int64_t>(x.size()));
  EXPECT_EQ(out[0], 1.f);
  EXPECT_GE(out[1], 0.f);
  EXPECT_LE(out[1], 1e-37f);  // e^-100 ≈ 3.7e-44 is subnormal; xsimd flushes it to 0
  EXPECT_EQ(out[2], 0.f);
  for (std::size_t i : {3u, 4u, 5u, 6u, 7u, 13u, 14u, 15u, 16u}) {
    const double ref = std::exp(double(x[i]));
    EXPECT_LE(std::abs(out[i] - ref) / ref, 4 * kU) << "x=" << x[i];
  }
  EXPECT_EQ(out[8], kInf);  // e^89 > FLT_MAX
  EXPECT_EQ(out[9], kInf);
  EXPECT_EQ(out[10], 0.f);
  EXPECT_TRUE(std::isnan(out[11]));
  EXPECT_EQ(out[12], 1.f);
}

TYPED_TEST(SimdOpsTest, ExpTwoDenseSweepAndSpecialValues) {
  using Ops = typename TestFixture::Ops;
  // The normal range of the result, [-126, 127.99], 40001 points, plus the ends of each unit
  // interval where the polynomial's argument is ±½.
  std::vector<float> x;
  for (int i = 0; i <= 40000; ++i) x.push_back(static_cast<float>(-126.0 + 253.99 * i / 40000));
  for (int n = -125; n <= 127; n += 7) x.insert(x.end(), {n - 0.5f, n + 0.4999999f, float(n)});
  std::vector<float> out(x.size());
  Ops::exp2(x.data(), out.data(), static_cast<std::int64_t>(x.size()));
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double ref = std::exp2(double(x[i]));
    worst = std::max(worst, std::abs(out[i] - ref) / ref);
    EXPECT_LE(std::abs(out[i] - ref) / ref, 4 * kU) << "x=" << x[i];
  }
  ::testing::Test::RecordProperty("worst_exp2_rel_error_in_u", std::to_string(worst / kU));

  const std::vector<float> s = {0.f,  -0.f,  1.f,  -1.f,   128.f, 1e30f,
                                kInf, -kInf, kNaN, -1e30f, -200.f};
  std::vector<float> so(s.size());
  Ops::exp2(s.data(), so.data(), static_cast<std::int64_t>(s.size()));
  EXPECT_EQ(so[0], 1.f);
  EXPECT_EQ(so[1], 1.f);
  EXPECT_EQ(so[2], 2.f);
  EXPECT_EQ(so[3], 0.5f);
  EXPECT_EQ(so[4], kInf);
  EXPECT_EQ(so[5], kInf);
  EXPECT_EQ(so[6], kInf);
  EXPECT_EQ(so[7], 0.f);
  EXPECT_TRUE(std::isnan(so[8]));
  EXPECT_EQ(so[9], 0.f);
  EXPECT_EQ(so[10], 0.f);
}

TYPED_TEST(SimdOpsTest, NanPropagatesFromEveryPosition) {
  using Ops = typename TestFixture::Ops;
  for (std::int64_t n : {std::int64_t{1}, std::int64_t{17}, std::int64_t{33}, std::int64_t{100}}) {
    const auto base = random_vector(static_cast<std::size_t>(n), 101 + n);
    const auto other = random_vector(static_cast<std::size_t>(n), 103 + n);
    for (std::int64_t p = 0; p < n; ++p) {
      auto x = base;
      x[p] = kNaN;
      EXPECT_TRUE(std::isnan(Ops::sum(x.data(), n))) << "n=" << n << " p=" << p;
      EXPECT_TRUE(std::isnan(Ops::dot(x.data(), other.data(), n))) << "n=" << n << " p=" << p;
      EXPECT_TRUE(std::isnan(Ops::dot(other.data(), x.data(), n))) << "n=" << n << " p=" << p;
      EXPECT_TRUE(std::isnan(Ops::max(x.data(), n))) << "n=" << n << " p=" << p;
      // With +inf elsewhere too: NaN still wins.
      auto y = x;
      if (n > 1) y[(p + 1) % n] = kInf;
      EXPECT_TRUE(std::isnan(Ops::max(y.data(), n))) << "n=" << n << " p=" << p;
      std::vector<float> e(static_cast<std::size_t>(n));
      Ops::exp(x.data(), e.data(), n);
      for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(std::isnan(e[i]), i == p);
      auto ax = other;
      Ops::axpy(1.f, x.data(), ax.data(), n);
      for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(std::isnan(ax[i]), i == p);
    }
  }
}

TYPED_TEST(SimdOpsTest, InfinitiesFollowIeee) {
  using Ops = typename TestFixture::Ops;
  std::vector<float> x(33, 1.f);
  x[3] = kInf;
  EXPECT_EQ(Ops::sum(x.data(), 33), kInf);
  EXPECT_EQ(Ops::max(x.data(), 33), kInf);
  x[30] = -kInf;
  EXPECT_TRUE(std::isnan(Ops::sum(x.data(), 33)));  // inf + -inf
}

TYPED_TEST(SimdOpsTest, BatchFunctions) {
  using Ops = typename TestFixture::Ops;
  const std::size_t w = Ops::width();
  const auto a = random_vector(w, 201, -3.f, 3.f);
  const auto b = random_vector(w, 202, -3.f, 3.f);
  const auto c = random_vector(w, 203, -3.f, 3.f);
  std::vector<float> f(w), e(w), m(w), mn(w), red(2);
  Ops::batch_ops(a.data(), b.data(), c.data(), f.data(), e.data(), m.data(), mn.data(), red.data());
  double ref_sum = 0, mag = 0;
  float ref_max = -kInf;
  for (std::size_t i = 0; i < w; ++i) {
    const double ab = double(a[i]) * double(b[i]);
    EXPECT_NEAR(f[i], ab + c[i], 2 * kU * (std::abs(ab) + std::abs(double(c[i]))));
    EXPECT_LE(std::abs(e[i] - std::exp(double(a[i]))) / std::exp(double(a[i])), 4 * kU);
    EXPECT_EQ(m[i], std::max(a[i], b[i]));
    EXPECT_EQ(mn[i], std::max(a[i], b[i]));
    ref_sum += a[i];
    mag += std::abs(double(a[i]));
    ref_max = std::max(ref_max, a[i]);
  }
  EXPECT_NEAR(red[0], ref_sum, static_cast<double>(w) * kU * mag);
  EXPECT_EQ(red[1], ref_max);

  // NaN in one lane of a, then of b: max_nan and reduce_max must report it.
  for (std::size_t lane = 0; lane < w; ++lane) {
    for (int which = 0; which < 2; ++which) {
      auto a2 = a, b2 = b;
      (which == 0 ? a2 : b2)[lane] = kNaN;
      Ops::batch_ops(a2.data(), b2.data(), c.data(), f.data(), e.data(), m.data(), mn.data(),
                     red.data());
      for (std::size_t i = 0; i < w; ++i)
        EXPECT_EQ(std::isnan(mn[i]), i == lane) << "lane " << lane << " operand " << which;
      EXPECT_EQ(std::isnan(red[1]), which == 0) << "lane " << lane;
      EXPECT_EQ(std::isnan(red[0]), which == 0) << "lane " << lane;
    }
  }
}

// Lane i of reduce_add_rows holds row i's sum: exact for integer-valued rows (every partial sum
// representable), so a lane-order slip (xsimd 8.1's AVX-512 haddp has one) cannot pass; random
// rows within the bound of a W-term sum; a NaN stays in its own row's lane.
TYPED_TEST(SimdOpsTest, ReduceAddRowsKeepsTheRowOrder) {
  using Ops = typename TestFixture::Ops;
  const std::size_t w = Ops::width();
  std::vector<float> rows(w * w), out(w);
  for (std::size_t i = 0; i < w; ++i)
    for (std::size_t j = 0; j < w; ++j) rows[i * w + j] = static_cast<float>(100 * i + j * j % 7);
  Ops::reduce_rows(rows.data(), out.data());
  for (std::size_t i = 0; i < w; ++i) {
    float want = 0.f;
    for (std::size_t j = 0; j < w; ++j) want += rows[i * w + j];
    EXPECT_EQ(out[i], want) << "row " << i;
  }
  rows = random_vector(w * w, 204, -3.f, 3.f);
  Ops::reduce_rows(rows.data(), out.data());
  for (std::size_t i = 0; i < w; ++i) {
    double want = 0, mag = 0;
    for (std::size_t j = 0; j < w; ++j) {
      want += rows[i * w + j];
      mag += std::abs(double(rows[i * w + j]));
    }
    EXPECT_NEAR(out[i], want, static_cast<double>(w) * kU * mag) << "row " << i;
  }
  rows[(w - 1) * w + w / 2] = kNaN;
  Ops::reduce_rows(rows.data(), out.data());
  for (std::size_t i = 0; i < w; ++i) EXPECT_EQ(std::isnan(out[i]), i == w - 1) << "row " << i;
}

TEST(SimdOpsSpan, SizeMismatchNamesTheArgument) {
  const std::vector<float> a(3, 1.f), b(4, 1.f);
  try {
    (void)simd::dot<simd::scalar_arch>(std::span<const float>(a), std::span<const float>(b));
    FAIL() << "no exception";
  } catch (const polyattn::Error& e) {
    EXPECT_EQ(e.argument(), "b");
  }
  std::vector<float> y(4, 0.f);
  EXPECT_THROW(simd::axpy<simd::scalar_arch>(1.f, std::span<const float>(a), std::span<float>(y)),
               polyattn::Error);
  EXPECT_EQ(simd::dot<simd::scalar_arch>(std::span<const float>(a), std::span<const float>(a)),
            3.f);
}

}  // namespace
