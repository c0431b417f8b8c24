// Bad arguments: every selector parameter and sparse_attention's own checks throw polyattn::Error
// naming the argument, before the mask buffer or the output is written.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "polyattn/sparse/sparse.hpp"
#include "sparse/sparse_test_util.hpp"

namespace polyattn::test::sparse_util {
namespace {

namespace ps = ::polyattn::sparse;

// Runs f, expects a polyattn::Error about `arg`.
template <class F>
void expect_error(const std::string& arg, F&& f) {
  try {
    f();
    ADD_FAILURE() << "no error, expected one about '" << arg << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), arg) << e.what();
  }
}

struct Fixture {
  Problem p = make_problem(1, 200, 200, 2, 1, 16, 41);
  SoftmaxOptions opt{.causal = true};
  BlockMask mask = BlockMask(1, 2, 4, 4, 64, 64, true);  // a caller's buffer, all set
  Tensor<float, 4> o = Tensor<float, 4>({1, 200, 2, 16}, -3.f);

  // The call failed without touching the buffer or the output.
  void expect_untouched() const {
    for (const auto b : mask.bytes()) EXPECT_EQ(b, 1);
    EXPECT_EQ(mask.shape(), (std::array<index_t, 4>{1, 2, 4, 4}));
    for (const float x : o.data) EXPECT_EQ(x, -3.f);
  }
  template <class S>
  void expect_rejected(const std::string& arg, const S& sel) {
    SCOPED_TRACE(arg);
    expect_error(arg, [&] { sel.select(p.inputs(), opt, mask); });
    expect_error(arg, [&] { ps::sparse_attention(sel, p.inputs(), opt, o.view(), mask); });
    expect_untouched();
  }
};

TEST(SparseErrors, SelectorParameters) {
  Fixture f;
  f.expect_rejected("block_size", ps::WindowSinkSelector{.block = 0});
  f.expect_rejected("block_size", ps::TopKSelector{.block = -64});
  f.expect_rejected("sink_blocks", ps::WindowSinkSelector{.keep = {.sink_blocks = -1}});
  f.expect_rejected("local_blocks", ps::PowerSelector{.keep = {.local_blocks = -2}});
  f.expect_rejected("max_distance", ps::PowerSelector{.max_distance = -1});
  f.expect_rejected("top_k", ps::TopKSelector{.top_k = -1});
  f.expect_rejected("top_k", ps::LinearTopKSelector{.top_k = -3});
  f.expect_rejected("gamma", ps::MassSelector{.gamma = 0.0});
  f.expect_rejected("gamma", ps::MassSelector{.gamma = 1.5});
  f.expect_rejected("gamma", ps::MassSelector{.gamma = NAN});
  f.expect_rejected("kernel_size", ps::Neighborhood1DSelector{.axis = {.kernel_size = 0}});
  f.expect_rejected("dilation", ps::Neighborhood1DSelector{.axis = {.dilation = 0}});
  f.expect_rejected("kernel_size", ps::Neighborhood2DSelector{
                                       .height = 10, .width = 20, .x = {.kernel_size = -1}});
  f.expect_rejected("dilation",
                    ps::Neighborhood2DSelector{.height = 10, .width = 20, .y = {.dilation = 0}});
  f.expect_rejected("height", ps::Neighborhood2DSelector{.height = 0, .width = 20});
  f.expect_rejected("width", ps::Neighborhood2DSelector{.height = 10, .width = 0});
  f.expect_rejected("grid", ps::Neighborhood2DSelector{.height = 10, .width = 21});
}

TEST(SparseErrors, Inputs) {
  Fixture f;
  const ps::TopKSelector sel{};
  {  // k with the wrong head dim
    Tensor<float, 4> k({1, 200, 1, 8});
    SoftmaxInputs in = f.p.inputs();
    in.k = k.cview();
    expect_error("k", [&] { ps::sparse_attention(sel, in, f.opt, f.o.view(), f.mask); });
    expect_error("k", [&] { sel.select(in, f.opt, f.mask); });
  }
  {  // kv heads that do not divide the query heads
    Tensor<float, 4> k({1, 200, 3, 16}), v({1, 200, 3, 16});
    Problem p = make_problem(1, 200, 200, 2, 1, 16, 42);
    SoftmaxInputs in = p.inputs();
    in.k = k.cview();
    in.v = v.cview();
    expect_error("k", [&] { ps::sparse_attention(sel, in, f.opt, f.o.view(), f.mask); });
  }
  {  // cu_seqlens: not ending at T, decreasing
    std::vector<std::int64_t> cu{0, 120, 199};
    SoftmaxInputs in = f.p.inputs();
    in.cu_seqlens = cu;
    expect_error("cu_seqlens", [&] { ps::sparse_attention(sel, in, f.opt, f.o.view(), f.mask); });
    const std::vector<std::int64_t> decreasing{0, 120, 100, 200};
    in.cu_seqlens = decreasing;
    expect_error("cu_seqlens", [&] { sel.select(in, f.opt, f.mask); });
  }
  {  // null q
    SoftmaxInputs in = f.p.inputs();
    in.q = {};
    expect_error("q", [&] { ps::sparse_attention(sel, in, f.opt, f.o.view(), f.mask); });
  }
  // Output of the wrong shape, null output.
  Tensor<float, 4> bad({1, 200, 2, 15});
  expect_error("o", [&] { ps::sparse_attention(sel, f.p.inputs(), f.opt, bad.view(), f.mask); });
  expect_error("o",
               [&] { ps::sparse_attention(sel, f.p.inputs(), f.opt, View4<float>{}, f.mask); });
  // Bad options.
  expect_error("window", [&] {
    ps::sparse_attention(sel, f.p.inputs(), SoftmaxOptions{.window = -1}, f.o.view(), f.mask);
  });
  // A block mask in opt: the selector makes it.
  SoftmaxOptions with_mask = f.opt;
  with_mask.block_mask = &f.mask;
  expect_error("block_mask",
               [&] { ps::sparse_attention(sel, f.p.inputs(), with_mask, f.o.view()); });
  f.expect_untouched();
}

// NaN / Inf in the inputs: no crash, finite-mask selection, NaN reaches the rows that see it.
TEST(SparseErrors, NonFiniteInputsPropagate) {
  Problem p = make_problem(1, 300, 300, 1, 1, 16, 43);
  p.k.data[static_cast<std::size_t>(10 * 16 + 3)] = NAN;        // key 10: block 0
  p.q.data[static_cast<std::size_t>(250 * 16 + 1)] = INFINITY;  // query 250: block 3
  const SoftmaxOptions opt{.causal = true};
  const auto run = [&](const auto& sel) {
    Tensor<float, 4> o({1, 300, 1, 16});
    BlockMask m;
    ps::sparse_attention(sel, p.inputs(), opt, o.view(), m);
    // Query 5 sees key 10? No (causal); query 20 does when block 0 is selected for block 0.
    EXPECT_FALSE(std::isnan(o.data[5 * 16]));
    if (m.visible(0, 0, 0, 0)) {
      EXPECT_TRUE(std::isnan(o.data[20 * 16]));
    }
  };
  run(ps::TopKSelector{.top_k = 1});
  run(ps::MassSelector{.gamma = 0.5});
  run(ps::LinearTopKSelector{.top_k = 1});
  run(ps::WindowSinkSelector{});
}

}  // namespace
}  // namespace polyattn::test::sparse_util

namespace polyattn::test::sparse_util {
namespace {

// Empty sizes: no queries; no keys (rows see nothing and output zeros).
TEST(SparseErrors, EmptyShapes) {
  const index_t H = 2;
  for (const auto& [T, S] : {std::array<index_t, 2>{0, 10}, {5, 0}}) {
    // Empty tensors still need non-null data (the views of empty vectors would be null).
    std::vector<float> q(static_cast<std::size_t>(T * H * 8) + 1, 0.5f),
        kv(static_cast<std::size_t>(S * 8) + 1, 0.5f);
    std::vector<float> out(static_cast<std::size_t>(T * H * 8) + 1, 5.f);
    const SoftmaxInputs in{.q = bthd<const float>(q.data(), 1, T, H, 8),
                           .k = bthd<const float>(kv.data(), 1, S, 1, 8),
                           .v = bthd<const float>(kv.data(), 1, S, 1, 8)};
    BlockMask m;
    ps::sparse_attention(ps::TopKSelector{}, in, SoftmaxOptions{}, bthd(out.data(), 1, T, H, 8), m);
    EXPECT_EQ(m.shape(), (std::array<index_t, 4>{1, H, BlockMask::blocks_for(T, 64),
                                                 BlockMask::blocks_for(S, 64)}));
    for (index_t i = 0; i < T * H * 8; ++i) EXPECT_EQ(out[static_cast<std::size_t>(i)], 0.f);
    ps::Neighborhood1DSelector{}.select(in, SoftmaxOptions{.causal = true}, m);
    ps::MassSelector{}.select(in, SoftmaxOptions{.causal = true}, m);
    ps::LinearTopKSelector{}.select(in, SoftmaxOptions{.causal = true}, m);
  }
}

}  // namespace
}  // namespace polyattn::test::sparse_util
