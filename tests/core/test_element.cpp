// tests/core/test_element.cpp — bf16 / fp16 element types: the scalar conversions of
// core/element.hpp against an independent reference (every representable value in double,
// nearest with ties to even), exhaustively over all 65536 bit patterns and over a million random
// and edge-case floats; then the SIMD conversions of simd/convert.hpp, one typed suite per ISA
// (compiled in convert_unit.cpp), bit for bit against the scalar ones under FTZ / DAZ, at every
// tail length. Arrays are exact-length vectors, so AddressSanitizer sees any tail over-run.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "convert_under_test.hpp"
#include "polyattn/core/element.hpp"
#include "polyattn/core/element_view.hpp"

namespace {

using polyattn::bf16;
using polyattn::f16;
using polyattn::test::ConvertOps;
namespace simd = polyattn::simd;

// ---- independent reference --------------------------------------------------------------------

// The value of f16 bits h, from the IEEE binary16 definition.
double f16_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 0x1F, m = h & 0x3FF;
  double v;
  if (e == 0x1F)
    v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (e == 0)
    v = std::ldexp(m, -24);
  else
    v = std::ldexp(1024 + m, e - 25);
  return s ? -v : v;
}
// The value of bf16 bits h: sign, 8-bit exponent (bias 127), 7-bit mantissa.
double bf16_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 7) & 0xFF, m = h & 0x7F;
  double v;
  if (e == 0xFF)
    v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (e == 0)
    v = std::ldexp(m, -133);
  else
    v = std::ldexp(128 + m, e - 134);
  return s ? -v : v;
}

// Round x to the nearest of the non-negative finite values of a 16-bit format (bits ascending in
// value), ties to the even bit pattern; past max + half an ulp → infinity bits.
struct Nearest {
  std::vector<std::pair<double, std::uint16_t>> pos;  // (value, bits), ascending
  std::uint16_t inf_bits;
  double overflow;  // ≥ this rounds to inf (max is odd in both formats: the tie goes up)
  template <class Value>
  Nearest(Value value, std::uint16_t inf, double ulp_at_max) : inf_bits(inf) {
    for (std::uint32_t h = 0; h < inf; ++h) pos.emplace_back(value(std::uint16_t(h)), h);
    overflow = pos.back().first + ulp_at_max / 2;
  }
  std::uint16_t operator()(float f) const {
    const double x = std::fabs(static_cast<double>(f));
    const std::uint16_t sign = std::signbit(f) ? 0x8000 : 0;
    if (x >= overflow) return sign | inf_bits;
    auto hi = std::lower_bound(pos.begin(), pos.end(), std::make_pair(x, std::uint16_t(0)));
    if (hi == pos.begin()) return sign | hi->second;
    auto lo = hi - 1;
    if (hi == pos.end()) return sign | lo->second;
    const double dl = x - lo->first, dh = hi->first - x;
    if (dl < dh) return sign | lo->second;
    if (dh < dl) return sign | hi->second;
    return sign | ((lo->second & 1) ? hi->second : lo->second);
  }
};
const Nearest& f16_nearest() {
  static const Nearest n(f16_value, 0x7C00, std::ldexp(1.0, 5));
  return n;
}
const Nearest& bf16_nearest() {
  static const Nearest n(bf16_value, 0x7F80, std::ldexp(1.0, 120));
  return n;
}

bool is_nan16(std::uint16_t h, std::uint16_t exp_mask, std::uint16_t mant_mask) {
  return (h & exp_mask) == exp_mask && (h & mant_mask) != 0;
}

// Random floats over the whole range, plus the cases that matter for rounding.
std::vector<float> test_floats() {
  std::vector<float> x;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000000; ++i) x.push_back(std::bit_cast<float>(std::uint32_t(rng())));
  std::uniform_real_distribution<float> u(-70000.f, 70000.f);
  for (int i = 0; i < 200000; ++i) x.push_back(u(rng));
  for (int e = -30; e <= 20; ++e)
    for (int i = 0; i < 2000; ++i)
      x.push_back(std::ldexp(std::uniform_real_distribution<float>(-1.f, 1.f)(rng), e));
  for (std::uint32_t h = 0; h < 0x10000; ++h) {  // exact ties and their neighbours, both formats
    const float tb = std::bit_cast<float>((h << 16) | 0x8000u);
    x.insert(x.end(), {tb, std::nextafter(tb, 0.f), std::nextafter(tb, 1e30f)});
    const double v = f16_value(std::uint16_t(h & 0x7FFF)),
                 w = f16_value(std::uint16_t((h + 1) & 0x7FFF));
    if (std::isfinite(v) && std::isfinite(w) && (h & 0x7FFF) < 0x7BFF) {
      const float t = static_cast<float>((v + w) / 2);
      x.insert(x.end(), {t, std::nextafter(t, 0.f), std::nextafter(t, 1e30f), -t});
    }
  }
  const float inf = std::numeric_limits<float>::infinity();
  x.insert(x.end(), {0.f,
                     -0.f,
                     inf,
                     -inf,
                     65504.f,
                     65519.99f,
                     65520.f,
                     65536.f,
                     0x1p-24f,
                     0x1p-25f,
                     std::nextafter(0x1p-25f, 1.f),
                     0x1p-14f,
                     1e-45f,
                     -1e-45f,
                     std::numeric_limits<float>::max(),
                     std::numeric_limits<float>::min(),
                     std::bit_cast<float>(0x7FC00001u),
                     std::bit_cast<float>(0xFF800001u),
                     std::bit_cast<float>(0x7F7FFFFFu),
                     std::bit_cast<float>(0x7F7F8000u)});
  return x;
}

// ---- scalar -----------------------------------------------------------------------------------

TEST(ElementScalar, Bf16WidensExactlyForEveryPattern) {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = polyattn::to_float(bf16{std::uint16_t(h)});
    const double want = bf16_value(std::uint16_t(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f)) << h;
    } else {
      ASSERT_EQ(static_cast<double>(f), want) << h;
      ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << h;
    }
  }
}

TEST(ElementScalar, F16WidensExactlyForEveryPattern) {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = polyattn::to_float(f16{std::uint16_t(h)});
    const double want = f16_value(std::uint16_t(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f)) << h;
    } else {
      ASSERT_EQ(static_cast<double>(f), want) << h;
      ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << h;
    }
  }
}

TEST(ElementScalar, RoundTripKeepsEveryValue) {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const std::uint16_t b = polyattn::bf16_from(polyattn::to_float(bf16{std::uint16_t(h)})).bits;
    const std::uint16_t f = polyattn::f16_from(polyattn::to_float(f16{std::uint16_t(h)})).bits;
    if (is_nan16(std::uint16_t(h), 0x7F80, 0x7F)) {
      EXPECT_TRUE(is_nan16(b, 0x7F80, 0x7F)) << h;
      EXPECT_EQ(b & 0x8040, (h & 0x8000) | 0x40) << "quiet, same sign: " << h;
    } else {
      ASSERT_EQ(b, h);
    }
    if (is_nan16(std::uint16_t(h), 0x7C00, 0x3FF)) {
      EXPECT_TRUE(is_nan16(f, 0x7C00, 0x3FF)) << h;
      EXPECT_EQ(f & 0x8200, (h & 0x8000) | 0x200) << "quiet, same sign: " << h;
    } else {
      ASSERT_EQ(f, h);
    }
  }
}

TEST(ElementScalar, NarrowingRoundsToNearestEven) {
  const auto& nb = bf16_nearest();
  const auto& nf = f16_nearest();
  for (float x : test_floats()) {
    const std::uint16_t b = polyattn::bf16_from(x).bits, f = polyattn::f16_from(x).bits;
    if (std::isnan(x)) {
      EXPECT_TRUE(is_nan16(b, 0x7F80, 0x7F));
      EXPECT_TRUE(is_nan16(f, 0x7C00, 0x3FF));
      continue;
    }
    ASSERT_EQ(b, nb(x)) << "bf16 of " << std::hexfloat << x;
    ASSERT_EQ(f, nf(x)) << "f16 of " << std::hexfloat << x;
  }
}

TEST(ElementScalar, KnownValues) {
  static_assert(polyattn::to_float(polyattn::bf16_from(1.f)) == 1.f);
  static_assert(polyattn::f16_from(1.f).bits == 0x3C00);
  static_assert(polyattn::f16_from(65504.f).bits == 0x7BFF);
  static_assert(polyattn::f16_from(65520.f).bits == 0x7C00);
  static_assert(polyattn::f16_from(0x1p-24f).bits == 0x0001);
  static_assert(polyattn::f16_from(0x1p-25f).bits == 0x0000);
  static_assert(polyattn::bf16_from(1.00390625f).bits == 0x3F80);  // tie 1 + 2^-8 → even 1
  static_assert(polyattn::bf16_from(1.01171875f).bits == 0x3F82);  // tie 1 + 3·2^-8 → even up
  static_assert(polyattn::round_to<polyattn::f16>(0.1f) == 0.0999755859375f);
  EXPECT_EQ(polyattn::dtype_name(polyattn::Dtype::bf16), "bf16");
}

// ---- SIMD, per ISA ----------------------------------------------------------------------------

template <class A>
class ConvertTest : public ::testing::Test {
 protected:
  using Ops = ConvertOps<A>;
  void SetUp() override {
    if (!simd::isa_at_least(simd::cpu_isa(), simd::isa_of<A>))
      GTEST_SKIP() << "this CPU lacks " << simd::isa_name(simd::isa_of<A>);
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
TYPED_TEST_SUITE(ConvertTest, Archs, ArchName);

TYPED_TEST(ConvertTest, WideningMatchesScalarForEveryPattern) {
  std::vector<bf16> b(0x10000);
  std::vector<f16> h(0x10000);
  for (std::uint32_t i = 0; i < 0x10000; ++i) b[i] = {std::uint16_t(i)}, h[i] = {std::uint16_t(i)};
  std::vector<float> fb(b.size()), fh(h.size());
  TestFixture::Ops::widen(b.data(), fb.data(), static_cast<std::int64_t>(b.size()));
  TestFixture::Ops::widen(h.data(), fh.data(), static_cast<std::int64_t>(h.size()));
  for (std::uint32_t i = 0; i < 0x10000; ++i) {
    ASSERT_EQ(std::bit_cast<std::uint32_t>(fb[i]),
              std::bit_cast<std::uint32_t>(polyattn::to_float(b[i])))
        << "bf16 " << i;
    ASSERT_EQ(std::bit_cast<std::uint32_t>(fh[i]),
              std::bit_cast<std::uint32_t>(polyattn::to_float(h[i])))
        << "f16 " << i;
  }
}

TYPED_TEST(ConvertTest, NarrowingMatchesScalarBitForBit) {
  const std::vector<float> x = test_floats();
  std::vector<bf16> b(x.size());
  std::vector<f16> h(x.size());
  TestFixture::Ops::narrow(x.data(), b.data(), static_cast<std::int64_t>(x.size()));
  TestFixture::Ops::narrow(x.data(), h.data(), static_cast<std::int64_t>(x.size()));
  for (std::size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(b[i].bits, polyattn::bf16_from(x[i]).bits) << std::hexfloat << x[i];
    if (std::isnan(x[i]))  // F16C keeps the NaN payload's top bits too; only quietness matters
      ASSERT_TRUE(is_nan16(h[i].bits, 0x7C00, 0x3FF));
    else
      ASSERT_EQ(h[i].bits, polyattn::f16_from(x[i]).bits) << std::hexfloat << x[i];
  }
}

TYPED_TEST(ConvertTest, Int8WidensExactly) {
  std::vector<std::int8_t> q(256);
  for (int i = 0; i < 256; ++i) q[i] = static_cast<std::int8_t>(i - 128);
  std::vector<float> f(q.size());
  TestFixture::Ops::widen(q.data(), f.data(), 256);
  for (int i = 0; i < 256; ++i) ASSERT_EQ(f[i], static_cast<float>(i - 128));
}

// Every length up to three batches: the tail path converts exactly the n elements asked for.
TYPED_TEST(ConvertTest, TailsTouchOnlyTheirElements) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-4.f, 4.f);
  for (std::int64_t n = 0; n <= 49; ++n) {
    std::vector<float> x(static_cast<std::size_t>(n));
    for (float& v : x) v = u(rng);
    std::vector<bf16> b(x.size());
    TestFixture::Ops::narrow(x.data(), b.data(), n);
    std::vector<float> back(x.size());
    TestFixture::Ops::widen(b.data(), back.data(), n);
    std::vector<f16> h(x.size());
    TestFixture::Ops::cross(b.data(), h.data(), n);
    for (std::size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(back[i], polyattn::round_to<bf16>(x[i]));
      ASSERT_EQ(h[i].bits, polyattn::f16_from(back[i]).bits);
    }
  }
}

// ---- ElementView ------------------------------------------------------------------------------

TEST(ElementView, KeepsTypeShapeAndConvertsOnAccess) {
  std::vector<bf16> mem(2 * 3 * 4 * 5);
  for (std::size_t i = 0; i < mem.size(); ++i) mem[i] = polyattn::bf16_from(0.5f * float(i));
  const polyattn::EView4 v = polyattn::bthd(mem.data(), 2, 3, 4, 5);
  EXPECT_EQ(v.dtype(), polyattn::Dtype::bf16);
  EXPECT_EQ(v.element_size(), 2u);
  EXPECT_EQ(v.size(2), 4);
  EXPECT_EQ(v(1, 2, 3, 4), 0.5f * float(mem.size() - 1));
  const auto typed = v.as<bf16>();
  EXPECT_EQ(typed.data(), mem.data());
  EXPECT_EQ(v.visit([](auto t) { return sizeof(*t.data()); }), 2u);

  const polyattn::MutEView4 o = polyattn::bthd(mem.data(), 2, 3, 4, 5);
  o.store(1.00390625f, 0, 0, 0, 1);  // a tie: rounds to the even 1.0
  EXPECT_EQ(mem[1].bits, 0x3F80);
  const polyattn::EView4 ro = o;
  EXPECT_EQ(ro(0, 0, 0, 1), 1.f);
  EXPECT_TRUE(polyattn::EView4{}.absent());
}

}  // namespace
