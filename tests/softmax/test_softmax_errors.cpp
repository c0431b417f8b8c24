// tests/softmax/test_softmax_errors.cpp — every bad argument of flash_attention throws a
// polyattn::Error that names it (argument() and the message), before any output is written.
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>

#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::SoftmaxData;
using polyattn::test::SoftmaxShape;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

class SoftmaxErrors : public ::testing::Test {
 protected:
  // B = 1 so cu_seqlens is allowed; T == S for the same reason.
  const SoftmaxShape s{.B = 1, .T = 20, .S = 20, .HQ = 4, .HKV = 2, .D = 8, .Dv = 6};
  SoftmaxData data{s, {.alibi = true, .gate = true, .sink = true}, 1};
  std::vector<float> big = test::random_vector(4096, 2);  // backing store for bad views
  std::vector<float> o = std::vector<float>(data.out_size());

  View4<float> good_o() { return bthd(o.data(), s.B, s.T, s.HQ, s.Dv); }

  // Calls flash_attention (serially and on a pool); expects an Error about `arg` and o untouched.
  void expect_error(const SoftmaxInputs& in, const SoftmaxOptions& opt, const std::string& arg,
                    std::function<View4<float>()> out = {}) {
    for (const bool pool : {false, true}) {
      std::fill(o.begin(), o.end(), test::kSentinel);
      const View4<float> ov = out ? out() : good_o();
      try {
        if (pool)
          softmax::flash_attention(in, opt, ov, ThreadPool(2));
        else
          softmax::flash_attention(in, opt, ov);
        ADD_FAILURE() << "no error for " << arg;
      } catch (const Error& e) {
        EXPECT_EQ(e.argument(), arg) << e.what();
        EXPECT_NE(std::string(e.what()).find("'" + arg + "'"), std::string::npos) << e.what();
      } catch (const std::exception& e) {
        ADD_FAILURE() << "not a polyattn::Error for " << arg << ": " << e.what();
      }
      for (float x : o) ASSERT_EQ(x, test::kSentinel) << "output written for bad " << arg;
    }
  }
};

TEST_F(SoftmaxErrors, GoodCallWorks) {
  softmax::flash_attention(data.inputs(), data.options(), good_o());
  for (float x : o) ASSERT_TRUE(std::isfinite(x));
}

TEST_F(SoftmaxErrors, MissingOrMalformedQKV) {
  const SoftmaxOptions opt = data.options();
  SoftmaxInputs in = data.inputs();
  in.q = {};
  expect_error(in, opt, "q");
  in = data.inputs();
  in.k = {};
  expect_error(in, opt, "k");
  in = data.inputs();
  in.v = {};
  expect_error(in, opt, "v");
  in = data.inputs();
  in.q = View4<const float>(big.data(), {1, -1, 4, 8}, {640, 32, 8, 1});
  expect_error(in, opt, "q");
  in = data.inputs();
  in.q = View4<const float>(big.data(), {1, 20, 4, 8}, {640, 32, -8, 1});
  expect_error(in, opt, "q");
  in = data.inputs();
  in.k = View4<const float>(big.data(), {1, 20, 2, 8}, {320, 16, 8, -1});
  expect_error(in, opt, "k");
}

TEST_F(SoftmaxErrors, ShapeMismatches) {
  const SoftmaxOptions opt = data.options();
  SoftmaxInputs in = data.inputs();
  in.k = bthd(big.data(), 2, 20, 2, 8);  // batch
  expect_error(in, opt, "k");
  in.k = bthd(big.data(), 1, 20, 2, 7);  // head dim
  expect_error(in, opt, "k");
  in.k = bthd(big.data(), 1, 20, 3, 8);  // 3 kv heads do not divide 4 q heads
  in.v = bthd(big.data(), 1, 20, 3, 6);
  expect_error(in, opt, "k");
  in.k = bthd(big.data(), 1, 20, 0, 8);  // no kv heads
  in.v = bthd(big.data(), 1, 20, 0, 6);
  expect_error(in, opt, "k");
  in.k = bthd(big.data(), 1, 20, 8, 8);  // more kv heads than q heads
  in.v = bthd(big.data(), 1, 20, 8, 6);
  expect_error(in, opt, "k");
  in = data.inputs();
  in.v = bthd(big.data(), 1, 19, 2, 6);  // length
  expect_error(in, opt, "v");
  in.v = bthd(big.data(), 1, 20, 1, 6);  // heads
  expect_error(in, opt, "v");
  in.v = bthd(big.data(), 2, 20, 2, 6);  // batch
  expect_error(in, opt, "v");
}

TEST_F(SoftmaxErrors, OptionalInputs) {
  const SoftmaxOptions opt = data.options();
  SoftmaxInputs in = data.inputs();
  in.g = bth(big.data(), 1, 20, 2);  // kv heads instead of q heads
  expect_error(in, opt, "g");
  in.g = bth(big.data(), 1, 19, 4);
  expect_error(in, opt, "g");
  in.g = View3<const float>(nullptr, {1, 20, 4}, {80, 4, 1});
  expect_error(in, opt, "g");
  in.g = View3<const float>(big.data(), {1, 20, 4}, {80, -4, 1});
  expect_error(in, opt, "g");
  in = data.inputs();
  in.alibi_slopes = View1<const float>::contiguous(big.data(), {2});
  expect_error(in, opt, "alibi_slopes");
  in.alibi_slopes = View1<const float>(nullptr, {4}, {1});
  expect_error(in, opt, "alibi_slopes");
  in = data.inputs();
  in.sink = View1<const float>::contiguous(big.data(), {5});
  expect_error(in, opt, "sink");
  in.sink = View1<const float>(nullptr, {4}, {1});
  expect_error(in, opt, "sink");
}

TEST_F(SoftmaxErrors, CuSeqlens) {
  const SoftmaxOptions opt = data.options();
  SoftmaxInputs in = data.inputs();
  const std::vector<std::vector<std::int64_t>> bad{{0},        {1, 20},    {0, 5, 3, 20},
                                                   {0, 5, 19}, {0, 5, 21}, {0, -1, 20}};
  for (const auto& cu : bad) {
    in.cu_seqlens = cu;
    expect_error(in, opt, "cu_seqlens");
  }
  // Batch 2 with cu_seqlens.
  SoftmaxData two({.B = 2, .T = 10, .S = 10, .HQ = 4, .HKV = 2, .D = 8, .Dv = 6}, {}, 3);
  const std::vector<std::int64_t> cu{0, 4, 10};
  in = two.inputs();
  in.cu_seqlens = cu;
  expect_error(in, opt, "cu_seqlens", [&] { return bthd(o.data(), 2, 10, 4, 6); });
  // Keys not packed with the queries (S != T).
  in = data.inputs();
  in.g = {};
  in.k = bthd(big.data(), 1, 24, 2, 8);
  in.v = bthd(big.data(), 1, 24, 2, 6);
  const std::vector<std::int64_t> cu20{0, 7, 20};
  in.cu_seqlens = cu20;
  expect_error(in, opt, "k");
}

TEST_F(SoftmaxErrors, Options) {
  const SoftmaxInputs in = data.inputs();
  for (const double scale : {0.0, -1.0, double(kInf), double(kNaN)}) {
    SoftmaxOptions opt = data.options();
    opt.scale = scale;
    expect_error(in, opt, "scale");
  }
  SoftmaxOptions opt = data.options();
  opt.window = -1;
  expect_error(in, opt, "window");
  opt = data.options();
  opt.sink_tokens = -2;
  expect_error(in, opt, "sink_tokens");
  for (const double cap : {-1.0, double(kInf), double(kNaN)}) {
    opt = data.options();
    opt.softcap = cap;
    expect_error(in, opt, "softcap");
  }
}

TEST_F(SoftmaxErrors, BlockMask) {
  const SoftmaxInputs in = data.inputs();
  SoftmaxOptions opt = data.options();
  const BlockMask blank;  // block sizes 0
  opt.block_mask = &blank;
  expect_error(in, opt, "block_mask");
  const BlockMask other_t = BlockMask::for_lengths(1, 4, 40, 20, 16, 16, true);
  opt.block_mask = &other_t;
  expect_error(in, opt, "block_mask");
  const BlockMask other_s = BlockMask::for_lengths(1, 4, 20, 40, 16, 16, true);
  opt.block_mask = &other_s;
  expect_error(in, opt, "block_mask");
  const BlockMask kv_heads = BlockMask::for_lengths(1, 2, 20, 20, 16, 16, true);
  opt.block_mask = &kv_heads;
  expect_error(in, opt, "block_mask");
  const BlockMask batch2 = BlockMask::for_lengths(2, 4, 20, 20, 16, 16, true);
  opt.block_mask = &batch2;
  expect_error(in, opt, "block_mask");
}

TEST_F(SoftmaxErrors, Output) {
  const SoftmaxInputs in = data.inputs();
  const SoftmaxOptions opt = data.options();
  expect_error(in, opt, "o", [] { return View4<float>{}; });
  expect_error(in, opt, "o", [&] { return bthd(o.data(), 1, 20, 4, 8); });  // Dv of q
  expect_error(in, opt, "o", [&] { return bthd(o.data(), 1, 19, 4, 6); });
  expect_error(in, opt, "o", [&] { return bthd(o.data(), 1, 20, 2, 6); });  // kv heads
  expect_error(in, opt, "o", [&] {
    return View4<float>(o.data(), {1, 20, 4, 6}, {480, 24, -6, 1});
  });
}

}  // namespace
