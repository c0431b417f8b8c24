// tests/core/test_tensor_view.cpp — TensorView strides and helpers (tensor_view.hpp) and the
// argument checks of validate.hpp: each failing check throws polyattn::Error naming the argument.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "common/expect_error.hpp"
#include "common/test_util.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"

namespace {

using polyattn::Error;
using polyattn::index_t;
using polyattn::TensorView;
using polyattn::View4;
namespace check = polyattn::check;

using polyattn::test::expect_error;

TEST(TensorView, ContiguousStridesAreRowMajor) {
  std::vector<float> buf(2 * 3 * 4 * 5);
  const auto v = View4<float>::contiguous(buf.data(), {2, 3, 4, 5});
  EXPECT_EQ(v.strides(), (std::array<index_t, 4>{60, 20, 5, 1}));
  EXPECT_EQ(v.numel(), 120);
  EXPECT_TRUE(v.inner_contiguous());
  EXPECT_EQ(v.offset(1, 2, 3, 4), 119);
  EXPECT_EQ(v.ptr(1, 0, 0, 0), buf.data() + 60);
  EXPECT_EQ(v.size(2), 4);
  EXPECT_EQ(v.stride(1), 20);
  // bthd is the same thing.
  const auto b = polyattn::bthd(buf.data(), 2, 3, 4, 5);
  EXPECT_EQ(b.strides(), v.strides());
  EXPECT_EQ(b.shape(), v.shape());
}

TEST(TensorView, HeadFirstAddressesTheSameElementsAsBHTD) {
  constexpr index_t B = 2, T = 5, H = 3, D = 4;
  std::vector<float> bhtd(B * H * T * D);
  std::iota(bhtd.begin(), bhtd.end(), 0.f);
  const auto v = polyattn::head_first(bhtd.data(), B, T, H, D);
  EXPECT_EQ(v.shape(), (std::array<index_t, 4>{B, T, H, D}));
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t d = 0; d < D; ++d)
          ASSERT_EQ(v(b, t, h, d), bhtd[((b * H + h) * T + t) * D + d]);
  EXPECT_TRUE(v.inner_contiguous());
}

TEST(TensorView, StateAndScalarViews) {
  std::vector<float> s(2 * 3 * 4 * 5);
  const auto st = polyattn::bhkv(s.data(), 2, 3, 4, 5);
  EXPECT_EQ(st.strides(), (std::array<index_t, 4>{60, 20, 5, 1}));
  std::vector<float> g(2 * 7 * 3);
  const auto gv = polyattn::bth(g.data(), 2, 7, 3);
  EXPECT_EQ(gv.strides(), (std::array<index_t, 3>{21, 3, 1}));
  EXPECT_EQ(&gv(1, 2, 0), g.data() + 27);
}

TEST(TensorView, ConstConversionKeepsShapeAndStrides) {
  std::vector<float> buf(24);
  const auto v = polyattn::head_first(buf.data(), 1, 4, 2, 3);
  const TensorView<const float, 4> c = v;
  EXPECT_EQ(c.data(), buf.data());
  EXPECT_EQ(c.shape(), v.shape());
  EXPECT_EQ(c.strides(), v.strides());
  static_assert(std::is_convertible_v<View4<float>, View4<const float>>);
  static_assert(!std::is_convertible_v<View4<const float>, View4<float>>);
}

TEST(TensorView, AbsentAndEmpty) {
  const View4<const float> absent;
  EXPECT_TRUE(absent.absent());
  EXPECT_EQ(absent.numel(), 0);
  std::vector<float> buf(1);
  const auto empty = polyattn::bthd(buf.data(), 1, 0, 2, 3);
  EXPECT_FALSE(empty.absent());
  EXPECT_EQ(empty.numel(), 0);
}

TEST(Validate, WellFormedAndRequired) {
  std::vector<float> buf(8);
  const auto ok = polyattn::bthd(buf.data(), 1, 2, 2, 2);
  EXPECT_NO_THROW(check::well_formed("q", ok));
  EXPECT_NO_THROW(check::required("q", ok));
  // An absent optional is well formed but not "required".
  EXPECT_NO_THROW(check::well_formed("h0", View4<float>{}));
  expect_error("q", [] { check::required("q", View4<float>{}); });

  const View4<float> neg_size(buf.data(), {1, -2, 2, 2}, {8, 4, 2, 1});
  const std::string m1 = expect_error("k", [&] { check::well_formed("k", neg_size); });
  EXPECT_NE(m1.find("[1,-2,2,2]"), std::string::npos) << m1;
  const View4<float> neg_stride(buf.data(), {1, 2, 2, 2}, {8, -4, 2, 1});
  expect_error("v", [&] { check::well_formed("v", neg_stride); });
  const View4<float> null_data(nullptr, {1, 2, 2, 2}, {8, 4, 2, 1});
  const std::string m2 = expect_error("g", [&] { check::well_formed("g", null_data); });
  EXPECT_NE(m2.find("null"), std::string::npos) << m2;
}

TEST(Validate, ShapeIsReportsBothShapes) {
  std::vector<float> buf(2 * 63 * 4 * 8);
  const auto k = polyattn::bthd(buf.data(), 2, 63, 4, 8);
  EXPECT_NO_THROW(check::shape_is("k", k, {2, 63, 4, 8}));
  const std::string m = expect_error("k", [&] {
    check::shape_is("k", k, {2, 64, 4, 8}, "same as q");
  });
  EXPECT_NE(m.find("[2,64,4,8]"), std::string::npos) << m;
  EXPECT_NE(m.find("[2,63,4,8]"), std::string::npos) << m;
  EXPECT_NE(m.find("same as q"), std::string::npos) << m;
}

TEST(Validate, ScalarChecks) {
  EXPECT_NO_THROW(check::positive("chunk", 64));
  expect_error("chunk", [] { check::positive("chunk", 0); });
  expect_error("chunk", [] { check::positive("chunk", -1); });

  EXPECT_NO_THROW(check::heads_divide("v", 4, 8));
  expect_error("v", [] { check::heads_divide("v", 4, 6); });
  expect_error("v", [] { check::heads_divide("v", 0, 8); });
  expect_error("v", [] { check::heads_divide("v", 4, 0); });

  EXPECT_NO_THROW(check::finite_positive("scale", 0.125));
  expect_error("scale", [] { check::finite_positive("scale", 0.0); });
  expect_error("scale", [] { check::finite_positive("scale", -1.0); });
  expect_error("scale",
               [] { check::finite_positive("scale", std::numeric_limits<double>::infinity()); });
  expect_error("scale",
               [] { check::finite_positive("scale", std::numeric_limits<double>::quiet_NaN()); });
}

TEST(Validate, CuSeqlens) {
  using cu_t = std::vector<std::int64_t>;
  auto run = [](const cu_t& cu, index_t B, index_t T) {
    return check::cu_seqlens("cu_seqlens", std::span<const std::int64_t>(cu), B, T);
  };
  EXPECT_EQ(run({}, 3, 10), 3);  // no varlen: B sequences
  EXPECT_EQ(run({0, 4, 4, 10}, 1, 10), 3);
  EXPECT_EQ(run({0, 0}, 1, 0), 1);

  const std::string b = expect_error("cu_seqlens", [&] { run({0, 4, 10}, 2, 10); });
  EXPECT_NE(b.find("B=2"), std::string::npos) << b;
  expect_error("cu_seqlens", [&] { run({0}, 1, 10); });         // too short
  expect_error("cu_seqlens", [&] { run({1, 4, 10}, 1, 10); });  // must start at 0
  const std::string nm = expect_error("cu_seqlens", [&] { run({0, 6, 4, 10}, 1, 10); });
  EXPECT_NE(nm.find("non-decreasing"), std::string::npos) << nm;
  expect_error("cu_seqlens", [&] { run({0, -1, 10}, 1, 10); });  // negative entry
  const std::string oor = expect_error("cu_seqlens", [&] { run({0, 4, 12}, 1, 10); });
  EXPECT_NE(oor.find("T=10"), std::string::npos) << oor;       // past the packed length
  expect_error("cu_seqlens", [&] { run({0, 4, 8}, 1, 10); });  // short of it
}

TEST(Sequences, SegmentsFollowCuSeqlens) {
  const std::vector<std::int64_t> cu = {0, 3, 3, 8};
  const auto segs = polyattn::segments(1, 8, cu);
  ASSERT_EQ(segs.size(), 3u);
  EXPECT_EQ(segs[0].begin, 0);
  EXPECT_EQ(segs[0].length, 3);
  EXPECT_EQ(segs[1].length, 0);
  EXPECT_EQ(segs[2].begin, 3);
  EXPECT_EQ(segs[2].length, 5);
  const auto dense = polyattn::segments(2, 5, {});
  ASSERT_EQ(dense.size(), 2u);
  EXPECT_EQ(dense[1].batch, 1);
  EXPECT_EQ(dense[1].length, 5);
}

}  // namespace
