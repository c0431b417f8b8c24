// Mamba-1's selective scan (papers/mamba1.hpp): Recurrent and the blocked scan against the
// authors' reference recurrence in double (reference/papers.hpp), with bias / softplus / D / z,
// groups, an initial state, strong decays, varlen, threads, decode and bad arguments.
#include <gtest/gtest.h>

#include <cmath>

#include "papers/papers_harness.hpp"
#include "polyattn/papers/mamba1.hpp"
#include "polyattn/reference/papers.hpp"
#include "polyattn/testing.hpp"

namespace polyattn::test {
namespace {

struct Shape {
  index_t B, T, D, G, N;
};

struct Data {
  Shape s;
  std::vector<float> x, dt, A, Bm, Cm, Dv, bias, z, h0;
  // a_scale multiplies A (≤ 0): large values make exp(ΔA) flush towards 0 within a few tokens.
  Data(const Shape& sh, std::uint64_t seed, float a_scale = 1.f) : s(sh) {
    x = random_vector(count(s.B, s.T, s.D), seed + 1);
    dt = random_vector(count(s.B, s.T, s.D), seed + 2, -3.f, 1.f);
    A = random_vector(count(s.D, s.N), seed + 3, -2.f, -0.05f);
    for (auto& a : A) a *= a_scale;
    Bm = random_vector(count(s.B, s.T, s.G, s.N), seed + 4);
    Cm = random_vector(count(s.B, s.T, s.G, s.N), seed + 5);
    Dv = random_vector(count(s.D), seed + 6);
    bias = random_vector(count(s.D), seed + 7, -0.5f, 0.5f);
    z = random_vector(count(s.B, s.T, s.D), seed + 8, -2.f, 2.f);
    h0 = random_vector(count(s.B, s.D, s.N), seed + 9);
  }
  papers::SelectiveScanInputs inputs(bool full, bool with_h0) const {
    papers::SelectiveScanInputs in{
        .x = View3<const float>::contiguous(x.data(), {s.B, s.T, s.D}),
        .dt = View3<const float>::contiguous(dt.data(), {s.B, s.T, s.D}),
        .A = TensorView<const float, 2>::contiguous(A.data(), {s.D, s.N}),
        .Bm = View4<const float>::contiguous(Bm.data(), {s.B, s.T, s.G, s.N}),
        .Cm = View4<const float>::contiguous(Cm.data(), {s.B, s.T, s.G, s.N})};
    if (full) {
      in.D = View1<const float>::contiguous(Dv.data(), {s.D});
      in.dt_bias = View1<const float>::contiguous(bias.data(), {s.D});
      in.z = View3<const float>::contiguous(z.data(), {s.B, s.T, s.D});
    }
    if (with_h0) in.initial_state = View3<const float>::contiguous(h0.data(), {s.B, s.D, s.N});
    return in;
  }
};

template <class Algo, class E = Serial>
void expect_matches(const Data& d, bool full, bool with_h0, bool softplus, const std::string& what,
                    const E& exec = E{}) {
  const auto& s = d.s;
  std::vector<float> y(count(s.B, s.T, s.D), NAN), h(count(s.B, s.D, s.N), NAN);
  const auto in = d.inputs(full, with_h0);
  papers::presets::make_mamba1().forward<Algo>(
      in, View3<float>::contiguous(y.data(), {s.B, s.T, s.D}),
      View3<float>::contiguous(h.data(), {s.B, s.D, s.N}), {.dt_softplus = softplus}, exec);
  std::vector<double> ry(y.size()), rh(h.size());
  reference::selective_scan<double>(in, softplus,
                                    View3<double>::contiguous(ry.data(), {s.B, s.T, s.D}),
                                    View3<double>::contiguous(rh.data(), {s.B, s.D, s.N}));
  EXPECT_LT(rel_rmse(y, ry), kRelRmseBound) << what << " y";
  EXPECT_LT(rel_rmse(h, rh), kRelRmseBound) << what << " final state";
}

TEST(PapersMamba1, RecurrentAndScanMatchTheReference) {
  const Shape shapes[] = {
      {1, 1, 4, 1, 16}, {2, 33, 20, 1, 8}, {1, 65, 24, 2, 16}, {1, 150, 8, 4, 4}};
  std::uint64_t seed = 1300;
  for (const Shape& sh : shapes) {
    const Data d(sh, seed += 10);
    for (bool full : {false, true})
      for (bool h0 : {false, true}) {
        const std::string tag =
            "T" + std::to_string(sh.T) + (full ? " full" : "") + (h0 ? " h0" : "");
        expect_matches<Recurrent>(d, full, h0, true, tag + " recurrent");
        expect_matches<Chunked<16>>(d, full, h0, true, tag + " scan16");
        expect_matches<Chunked<64>>(d, full, h0, true, tag + " scan64");
      }
    // Without softplus Δ is used as given: positive, as the model guarantees (a negative Δ
    // makes exp(ΔA) > 1 and the state grows without bound).
    Data pos = d;
    for (auto& v : pos.dt) v = std::abs(v) + 0.5f;
    expect_matches<Recurrent>(pos, true, true, false, "no softplus recurrent");
    expect_matches<Chunked<32>>(pos, true, true, false, "no softplus scan");
  }
}

// A of −2000: exp(ΔA) underflows to 0 after a token or two; the chunk sums of ΔA reach −1e5 and
// their exponentials are exactly 0, as the products of the per-token factors are.
TEST(PapersMamba1, StrongDecays) {
  const Data d({1, 70, 8, 1, 8}, 5, 1000.f);
  expect_matches<Recurrent>(d, true, true, true, "recurrent strong");
  expect_matches<Chunked<16>>(d, true, true, true, "scan strong");
}

TEST(PapersMamba1, VarlenThreadsAndDecode) {
  const index_t T = 45, D = 20, N = 8;
  const std::vector<std::int64_t> cu{0, 18, 18, 45};
  const Data d({1, T, D, 1, N}, 7);
  const auto op = papers::presets::make_mamba1();
  auto in = d.inputs(true, false);
  in.cu_seqlens = cu;
  std::vector<float> y(count(T, D)), h(count(3, D, N)), y3(y.size()), h3(h.size());
  op.forward<Chunked<16>>(in, View3<float>::contiguous(y.data(), {1, T, D}),
                          View3<float>::contiguous(h.data(), {3, D, N}));
  ThreadPool pool(3);
  op.forward<Chunked<16>>(in, View3<float>::contiguous(y3.data(), {1, T, D}),
                          View3<float>::contiguous(h3.data(), {3, D, N}), {}, pool);
  EXPECT_TRUE(same_bits(y, y3));
  EXPECT_TRUE(same_bits(h, h3));
  // The recurrent form of the same packed call, token by token through step for sequence 2.
  std::vector<float> yr(y.size()), hr(h.size());
  op.forward<Recurrent>(in, View3<float>::contiguous(yr.data(), {1, T, D}),
                        View3<float>::contiguous(hr.data(), {3, D, N}));
  std::vector<float> state(count(D, N), 0.f), y1(count(D));
  for (index_t t = 18; t < T; ++t) {
    op.step({.x = View3<const float>::contiguous(d.x.data() + t * D, {1, 1, D}),
             .dt = View3<const float>::contiguous(d.dt.data() + t * D, {1, 1, D}),
             .A = in.A,
             .Bm = View4<const float>::contiguous(d.Bm.data() + t * N, {1, 1, 1, N}),
             .Cm = View4<const float>::contiguous(d.Cm.data() + t * N, {1, 1, 1, N}),
             .D = in.D,
             .dt_bias = in.dt_bias,
             .z = View3<const float>::contiguous(d.z.data() + t * D, {1, 1, D})},
            View3<float>::contiguous(state.data(), {1, D, N}),
            View3<float>::contiguous(y1.data(), {1, 1, D}));
    EXPECT_TRUE(same_bits(y1, std::vector<float>(yr.begin() + t * D, yr.begin() + (t + 1) * D)))
        << t;
  }
  EXPECT_TRUE(same_bits(state, std::vector<float>(hr.begin() + 2 * D * N, hr.end())));
  EXPECT_LT(rel_rmse(y, yr), kRelRmseBound);
}

TEST(PapersMamba1, BadArgumentsLeaveOutputsUntouched) {
  const Data d({1, 9, 8, 2, 4}, 61);
  const auto& s = d.s;
  const auto op = papers::presets::make_mamba1();
  std::vector<float> y(count(s.T, s.D), 7.f), h(count(s.D, s.N), 7.f);
  const auto yv = View3<float>::contiguous(y.data(), {1, s.T, s.D});
  const auto hv = View3<float>::contiguous(h.data(), {1, s.D, s.N});
  auto bad_a = d.inputs(true, false);
  bad_a.A = TensorView<const float, 2>::contiguous(d.A.data(), {s.N, s.D});
  expect_error_untouched([&] { op.forward(bad_a, yv, hv); }, "A", y, "A transposed");
  auto bad_groups = d.inputs(true, false);
  bad_groups.Bm = View4<const float>::contiguous(d.Bm.data(), {1, s.T, 3, 2});
  expect_error_untouched([&] { op.forward(bad_groups, yv, hv); }, "B", h, "groups");
  auto bad_c = d.inputs(true, false);
  bad_c.Cm = View4<const float>::contiguous(d.Cm.data(), {1, s.T, 1, s.N});
  expect_error_untouched([&] { op.forward(bad_c, yv, hv); }, "C", y, "C shape");
  auto bad_bias = d.inputs(true, false);
  bad_bias.dt_bias = View1<const float>::contiguous(d.bias.data(), {s.D - 1});
  expect_error_untouched([&] { op.forward<Chunked<16>>(bad_bias, yv, hv); }, "dt_bias", y, "bias");
  auto bad_h0 = d.inputs(true, true);
  bad_h0.initial_state = View3<const float>::contiguous(d.h0.data(), {1, s.N, s.D});
  expect_error_untouched([&] { op.forward(bad_h0, yv, hv); }, "initial_state", y, "h0 shape");
  expect_error_untouched(
      [&] {
        op.forward(d.inputs(true, false), View3<float>::contiguous(y.data(), {1, s.T, s.D - 1}));
      },
      "y", y, "y shape");
  expect_error_untouched([&] { op.step(d.inputs(true, false), {}, yv); }, "state", y, "no state");
}

}  // namespace
}  // namespace polyattn::test
