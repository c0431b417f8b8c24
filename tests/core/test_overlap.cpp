// Overflow-safe extents (core/extent.hpp) and the memory-overlap decision (core/overlap.hpp),
// the latter against brute force: enumerate every element address of small random views.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/expect_error.hpp"
#include "polyattn/core/extent.hpp"
#include "polyattn/core/overlap.hpp"
#include "polyattn/core/validate.hpp"

namespace {

using polyattn::index_t;
using polyattn::View1;
using polyattn::View3;
using polyattn::View4;
using polyattn::test::expect_error;
namespace memory = polyattn::memory;
namespace check = polyattn::check;

constexpr index_t kBig = index_t{1} << 40;

TEST(Extent, CheckedArithmetic) {
  using polyattn::extent::checked_add;
  using polyattn::extent::checked_mul;
  EXPECT_EQ(checked_mul(1 << 20, 1 << 20).value(), index_t{1} << 40);
  EXPECT_FALSE(checked_mul(index_t{1} << 32, index_t{1} << 31).has_value());
  EXPECT_FALSE(checked_add(std::numeric_limits<index_t>::max(), 1).has_value());
  const index_t sizes[] = {1, index_t{1} << 32, index_t{1} << 32, 4};
  expect_error("q", [&] { polyattn::extent::count("q", sizes); });
  const index_t with_zero[] = {0, index_t{1} << 40, index_t{1} << 40, 4};
  EXPECT_EQ(polyattn::extent::count("q", with_zero), 0);
  expect_error("cache", [] { polyattn::extent::bytes("cache", index_t{1} << 62, 4); });
}

// The cases: a view factory whose strides overflow, views whose element count or
// furthest offset overflows, zero strides hiding an enormous element count.
TEST(Extent, ViewsThatDoNotFitAreNamedErrors) {
  float x = 0.f;
  expect_error("shape", [&] { polyattn::bthd(&x, 1, kBig, index_t{1} << 30, 4); });
  expect_error("shape", [&] { polyattn::head_first(&x, 1, kBig, index_t{1} << 30, 4); });
  const View4<const float> zero_strides(&x, {1, index_t{1} << 32, index_t{1} << 32, 4},
                                        {0, 0, 0, 0});
  const std::string m = expect_error("q", [&] { check::well_formed("q", zero_strides); });
  EXPECT_NE(m.find("overflows"), std::string::npos) << m;
  const View4<const float> far(&x, {2, 2, 2, 2}, {index_t{1} << 62, 1, 1, 1});
  expect_error("k", [&] { check::well_formed("k", far); });
  // A zero-stride broadcast of modest count is fine.
  const View4<const float> broadcast(&x, {1, 8, 4, 16}, {0, 0, 0, 0});
  EXPECT_NO_THROW(check::well_formed("g", broadcast));
}

TEST(Extent, EmptyTensorsFromEmptyVectorsArePresent) {
  std::vector<float> none;
  const auto empty = polyattn::bthd(none.data(), 1, 0, 4, 8);
  EXPECT_FALSE(empty.absent());
  EXPECT_NO_THROW(check::required("q", empty));
  EXPECT_TRUE(View4<const float>{}.absent());
  expect_error("q", [] { check::required("q", View4<const float>{}); });
}

// Every byte a region's elements cover.
std::set<std::int64_t> bytes_of(const memory::Region& r) {
  std::set<std::int64_t> out;
  if (r.empty) return out;
  std::vector<std::int64_t> idx(static_cast<std::size_t>(r.rank), 0);
  while (true) {
    std::int64_t a = r.lo();
    for (int k = 0; k < r.rank; ++k) a += idx[static_cast<std::size_t>(k)] * r.stride[k];
    for (std::int64_t e = 0; e < r.elem; ++e) out.insert(a + e);
    int k = r.rank - 1;
    while (k >= 0 && ++idx[static_cast<std::size_t>(k)] == r.size[k])
      idx[static_cast<std::size_t>(k--)] = 0;
    if (k < 0) break;
  }
  return out;
}

bool brute_self_overlap(const memory::Region& r) {
  if (r.empty) return false;
  std::int64_t count = 1;
  for (int k = 0; k < r.rank; ++k) count *= r.size[k];
  return static_cast<std::int64_t>(bytes_of(r).size()) != count * r.elem;
}

// Random 3-d views into one buffer: random sizes 1..4, strides 0..12 elements, offsets 0..40.
View3<const float> random_view(std::mt19937& rng, const float* buf) {
  std::uniform_int_distribution<index_t> size(1, 4), stride(0, 12), off(0, 40);
  return View3<const float>(buf + off(rng), {size(rng), size(rng), size(rng)},
                            {stride(rng), stride(rng), stride(rng)});
}

TEST(Overlap, MayShareAgreesWithBruteForce) {
  std::vector<float> buf(400);
  std::mt19937 rng(7);
  int shared = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    const auto a = memory::region("a", random_view(rng, buf.data()));
    const auto b = memory::region("b", random_view(rng, buf.data()));
    const auto ba = bytes_of(a), bb = bytes_of(b);
    bool brute = false;
    for (std::int64_t x : ba) brute = brute || bb.count(x) > 0;
    ASSERT_EQ(memory::may_share(a, b), brute) << "trial " << trial;
    shared += brute;
  }
  EXPECT_GT(shared, 400);  // both answers are exercised
  EXPECT_LT(shared, 3600);
}

TEST(Overlap, SelfOverlapAgreesWithBruteForce) {
  std::vector<float> buf(400);
  std::mt19937 rng(11);
  int overlapping = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    const auto r = memory::region("o", random_view(rng, buf.data()));
    ASSERT_EQ(memory::self_overlaps(r), brute_self_overlap(r)) << "trial " << trial;
    overlapping += brute_self_overlap(r);
  }
  EXPECT_GT(overlapping, 400);
  EXPECT_LT(overlapping, 3600);
}

// Byte-misaligned views of different element types still intersect byte-wise.
TEST(Overlap, DifferentElementSizesAndMisalignment) {
  std::vector<double> buf(16);
  const View1<const double> d(buf.data(), {4}, {2});  // bytes 0-7, 16-23, 32-39, 48-55
  const auto* bytes = reinterpret_cast<const float*>(buf.data());
  const View1<const float> f_hit(bytes + 5, {2}, {2});   // bytes 20-23, 28-31
  const View1<const float> f_miss(bytes + 2, {2}, {4});  // bytes 8-11, 24-27
  EXPECT_TRUE(memory::may_share(memory::region("f", f_hit), memory::region("d", d)));
  EXPECT_FALSE(memory::may_share(memory::region("f", f_miss), memory::region("d", d)));
}

// Real layouts: q, k, v interleaved in one packed [B, T, 3, H, D] buffer are disjoint; o written
// head-first over q's token-major memory is not; exact aliasing is recognised.
TEST(Overlap, PackedAndHeadFirstLayouts) {
  constexpr index_t B = 2, T = 64, H = 4, D = 32;
  std::vector<float> qkv(static_cast<std::size_t>(B * T * 3 * H * D));
  const std::array<index_t, 4> st{T * 3 * H * D, 3 * H * D, D, 1};
  const View4<const float> q(qkv.data(), {B, T, H, D}, st);
  const View4<const float> k(qkv.data() + H * D, {B, T, H, D}, st);
  const View4<float> o_in_v(qkv.data() + 2 * H * D, {B, T, H, D}, st);
  EXPECT_FALSE(memory::may_share(memory::region("q", q), memory::region("k", k)));
  EXPECT_NO_THROW(check::writes_disjoint({memory::region("o", o_in_v)},
                                         {memory::region("q", q), memory::region("k", k)}));

  std::vector<float> tok(static_cast<std::size_t>(B * T * H * D));
  const auto q2 = polyattn::bthd(static_cast<const float*>(tok.data()), B, T, H, D);
  const auto o_hf = polyattn::head_first(tok.data(), B, T, H, D);
  const auto o_same = polyattn::bthd(tok.data(), B, T, H, D);
  const std::string m = expect_error(
      "o", [&] { check::writes_disjoint({memory::region("o", o_hf)}, {memory::region("q", q2)}); });
  EXPECT_NE(m.find("'q'"), std::string::npos) << m;
  expect_error("o", [&] {
    check::writes_disjoint({memory::region("o", o_same)}, {memory::region("q", q2)});
  });
  EXPECT_NO_THROW(check::writes_disjoint({memory::region("o", o_same)}, {memory::region("q", q2)},
                                         {{"o", "q"}}));
  // Zero strides on an output.
  const View4<float> o_zero(tok.data(), {B, T, H, D}, {0, 0, D, 1});
  expect_error("o", [&] { check::writes_disjoint({memory::region("o", o_zero)}, {}); });
  // Two outputs sharing memory.
  const View3<float> lse(tok.data() + 5, {B, T, H}, {T * H, H, 1});
  expect_error("lse", [&] {
    check::writes_disjoint({memory::region("o", o_same), memory::region("lse", lse)}, {});
  });
}

// A large interleaved layout stays cheap to decide (nested strides: no search explosion).
TEST(Overlap, LargeNestedViewsDecideQuickly) {
  constexpr index_t B = 8, T = 1 << 16, H = 32, D = 128;
  const auto* base = reinterpret_cast<const float*>(std::uintptr_t{1} << 20);
  const std::array<index_t, 4> st{T * 2 * H * D, 2 * H * D, D, 1};
  const View4<const float> a(base, {B, T, H, D}, st), b(base + H * D, {B, T, H, D}, st);
  EXPECT_FALSE(memory::may_share(memory::region("a", a), memory::region("b", b)));
  EXPECT_FALSE(memory::self_overlaps(memory::region("a", a)));
}

}  // namespace
