// The short causal depthwise convolution (conv/short_conv.hpp) against the double reference
// (reference/conv.hpp): widths 1–6, bias, SiLU, states, varlen with empty and short sequences,
// state pools, head-first-like strides; prefill in pieces and token-by-token steps equal one
// prefill; threads give the same bits; bad arguments are named errors with nothing written.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/expect_error.hpp"
#include "common/test_util.hpp"
#include "polyattn/testing.hpp"

namespace polyattn::test {
namespace {

using conv::Activation;

// fp32 against double: the sum has W + 1 terms, so well within the §9 bound.
constexpr double kBound = kRelRmseBound;

struct ConvData {
  index_t B, T, D, W, N;
  std::vector<float> x, w, bias, state;
  ConvData(index_t b, index_t t, index_t d, index_t width, index_t n, std::uint64_t seed)
      : B(b),
        T(t),
        D(d),
        W(width),
        N(n),
        x(random_vector(static_cast<std::size_t>(b * t * d), seed)),
        w(random_vector(static_cast<std::size_t>(d * width), seed + 1, -0.5f, 0.5f)),
        bias(random_vector(static_cast<std::size_t>(d), seed + 2)),
        state(random_vector(static_cast<std::size_t>(n * d * (width - 1)), seed + 3)) {}
  conv::ShortConvInputs inputs(bool with_bias, bool with_state) const {
    conv::ShortConvInputs in{.x = View3<const float>::contiguous(x.data(), {B, T, D}),
                             .weight = TensorView<const float, 2>::contiguous(w.data(), {D, W})};
    if (with_bias) in.bias = View1<const float>(bias.data(), {D}, {1});
    if (with_state) in.initial_state = View3<const float>::contiguous(state.data(), {N, D, W - 1});
    return in;
  }
};

// The operator and the reference on the same call; returns the operator's y and final state.
template <class E = Serial>
void compare(const conv::ShortConvInputs& in, Activation act, index_t B, index_t T, index_t D,
             index_t W, index_t slots, const std::string& tag, const E& exec = E{}) {
  std::vector<float> y(static_cast<std::size_t>(B * T * D), 5.f),
      st(static_cast<std::size_t>(slots * D * (W - 1)), 5.f);
  std::vector<double> y_ref(y.size()), st_ref(st.size(), 5.0);
  conv::short_conv(in, {.activation = act},
                   {.y = View3<float>::contiguous(y.data(), {B, T, D}),
                    .final_state = View3<float>::contiguous(st.data(), {slots, D, W - 1})},
                   exec);
  reference::short_conv(in, {.activation = act}, View3<double>::contiguous(y_ref.data(), {B, T, D}),
                        View3<double>::contiguous(st_ref.data(), {slots, D, W - 1}));
  EXPECT_LT(rel_rmse(y, y_ref), kBound) << tag;
  // The state is a copy of inputs: exact.
  for (std::size_t i = 0; i < st.size(); ++i)
    ASSERT_EQ(static_cast<double>(st[i]), st_ref[i]) << tag << " state element " << i;
}

TEST(ShortConv, MatchesTheReference) {
  for (index_t W : {1, 2, 3, 4, 6})
    for (Activation act : {Activation::None, Activation::SiLU})
      for (bool bias : {false, true})
        for (bool state : {false, true}) {
          // D = 300: one full channel block and a partial one; T = 70 crosses a time tile.
          const ConvData c(2, 70, 300, W, 2, 40 + W);
          std::string tag = "W";
          tag += std::to_string(W);
          if (act == Activation::SiLU) tag += " silu";
          if (bias) tag += " bias";
          if (state) tag += " state";
          compare(c.inputs(bias, state), act, c.B, c.T, c.D, W, 2, tag);
        }
}

// Packed sequences: one empty, one shorter than the window, one long; a pool of states.
TEST(ShortConv, VarlenAndStatePools) {
  const index_t W = 4, D = 40, T = 70;
  const ConvData c(1, T, D, W, 6, 7);  // 6 slots
  const std::vector<std::int64_t> cu{0, 0, 2, 70}, idx{4, 0, 5};
  conv::ShortConvInputs in = c.inputs(true, true);
  in.cu_seqlens = cu;
  in.state_indices = idx;
  in.initial_state = View3<const float>::contiguous(c.state.data(), {6, D, W - 1});
  compare(in, Activation::SiLU, 1, T, D, W, 6, "varlen pool");
  in.state_indices = {};
  in.initial_state = View3<const float>::contiguous(c.state.data(), {3, D, W - 1});
  compare(in, Activation::None, 1, T, D, W, 3, "varlen");
}

// Any strides: x and y head-first-like (channel stride ≠ 1), the weight transposed in memory.
TEST(ShortConv, StridedViews) {
  const index_t B = 2, T = 33, D = 20, W = 3;
  const ConvData c(B, T, D, W, B, 3);
  std::vector<float> xt(c.x.size()), wt(c.w.size());
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t d = 0; d < D; ++d) xt[(b * D + d) * T + t] = c.x[(b * T + t) * D + d];
  for (index_t d = 0; d < D; ++d)
    for (index_t i = 0; i < W; ++i) wt[i * D + d] = c.w[d * W + i];
  conv::ShortConvInputs in = c.inputs(true, true);
  in.x = View3<const float>(xt.data(), {B, T, D}, {D * T, 1, T});
  in.weight = TensorView<const float, 2>(wt.data(), {D, W}, {1, D});
  compare(in, Activation::SiLU, B, T, D, W, B, "strided");
}

// Prefill of [0, T1) then [T1, T) through the state, and token-by-token steps with the state in
// place, give exactly the bits of one prefill; so does a thread pool.
TEST(ShortConv, PiecesStepsAndThreadsGiveTheSameBits) {
  const index_t B = 3, T = 29, D = 70, W = 4, T1 = 11;
  const ConvData c(B, T, D, W, B, 9);
  const conv::ShortConvInputs in = c.inputs(true, true);
  std::vector<float> y(c.x.size()), st(c.state.size());
  conv::short_conv(in, {.activation = Activation::SiLU},
                   {.y = View3<float>::contiguous(y.data(), {B, T, D}),
                    .final_state = View3<float>::contiguous(st.data(), {B, D, W - 1})});

  ThreadPool pool(3);
  std::vector<float> y_pool(y.size()), st_pool(st.size());
  conv::short_conv(in, {.activation = Activation::SiLU},
                   {.y = View3<float>::contiguous(y_pool.data(), {B, T, D}),
                    .final_state = View3<float>::contiguous(st_pool.data(), {B, D, W - 1})},
                   pool);
  EXPECT_EQ(y_pool, y);
  EXPECT_EQ(st_pool, st);

  std::vector<float> state = c.state, y_steps(y.size());
  auto rows = [&](const std::vector<float>& x, index_t t0, index_t n) {
    return View3<const float>(x.data() + t0 * D, {B, n, D}, {T * D, D, 1});
  };
  conv::ShortConvInputs piece = in;
  piece.initial_state = {};
  for (index_t t0 = 0; t0 < T;) {
    const index_t n = t0 < T1 ? T1 : 1;  // a prefill piece, then single tokens
    piece.x = rows(c.x, t0, n);
    conv::short_conv_step(piece, {.activation = Activation::SiLU},
                          View3<float>::contiguous(state.data(), {B, D, W - 1}),
                          View3<float>(y_steps.data() + t0 * D, {B, n, D}, {T * D, D, 1}));
    t0 += n;
  }
  EXPECT_EQ(y_steps, y);
  EXPECT_EQ(state, st);
}

TEST(ShortConv, BadArgumentsAreNamedAndNothingIsWritten) {
  const index_t B = 2, T = 8, D = 16, W = 4;
  const ConvData c(B, T, D, W, B, 2);
  std::vector<float> y(c.x.size(), 3.f), st(c.state.size(), 3.f);
  const auto yv = View3<float>::contiguous(y.data(), {B, T, D});
  auto run = [&](conv::ShortConvInputs in, View3<float> out_y, View3<float> out_st = {}) {
    conv::short_conv(in, {}, {.y = out_y, .final_state = out_st});
  };
  conv::ShortConvInputs in = c.inputs(true, true);
  conv::ShortConvInputs bad = in;
  bad.weight = TensorView<const float, 2>::contiguous(c.w.data(), {D - 1, W});
  expect_error("weight", [&] { run(bad, yv); });
  bad = in;
  bad.bias = View1<const float>(c.bias.data(), {D - 1}, {1});
  expect_error("bias", [&] { run(bad, yv); });
  bad = in;
  bad.initial_state = View3<const float>::contiguous(c.state.data(), {B, D, W});
  expect_error("initial_state", [&] { run(bad, yv); });
  expect_error("y", [&] { run(in, View3<float>::contiguous(y.data(), {B, T - 1, D})); });
  const std::vector<std::int64_t> dup{1, 1};
  bad = in;
  bad.state_indices = dup;
  expect_error("state_indices", [&] { run(bad, yv); });
  const std::vector<std::int64_t> cu{0, 8};
  bad = in;
  bad.cu_seqlens = cu;  // B = 2 with cu_seqlens
  expect_error("cu_seqlens", [&] { run(bad, yv); });
  // y over x (in place is not supported), y with a zero stride, a final state over the input.
  std::vector<float> x = c.x;
  bad = in;
  bad.x = View3<const float>::contiguous(x.data(), {B, T, D});
  expect_error("y", [&] { run(bad, View3<float>::contiguous(x.data(), {B, T, D})); });
  expect_error("y", [&] { run(in, View3<float>(y.data(), {B, T, D}, {0, D, 1})); });
  std::vector<float> s2 = c.state;
  bad = in;
  bad.initial_state = View3<const float>::contiguous(s2.data(), {B, D, W - 1});
  expect_error("final_state", [&] {
    run(bad, yv, View3<float>(s2.data() + 1, {B, D, W - 1}, {D * (W - 1), W - 1, 1}));
  });
  for (float v : y) ASSERT_EQ(v, 3.f);
  EXPECT_EQ(s2, c.state);
}

}  // namespace
}  // namespace polyattn::test
