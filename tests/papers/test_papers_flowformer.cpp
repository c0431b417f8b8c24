// Flowformer, causal (papers/flowformer.hpp): against the definitions in double
// (reference/papers.hpp) for every algorithm, GVA, varlen, prefill in pieces with the flow state,
// decode and bad arguments.
#include <gtest/gtest.h>

#include <cmath>

#include "papers/papers_harness.hpp"
#include "polyattn/papers/flowformer.hpp"
#include "polyattn/reference/papers.hpp"
#include "polyattn/testing.hpp"

namespace polyattn::test {
namespace {

struct Shape {
  index_t B, T, H, HV, K, V;
};

struct Data {
  Shape s;
  std::vector<float> q, k, v;
  Data(const Shape& sh, std::uint64_t seed, float range = 2.f) : s(sh) {
    q = random_vector(count(s.B, s.T, s.H, s.K), seed + 1, -range, range);
    k = random_vector(count(s.B, s.T, s.H, s.K), seed + 2, -range, range);
    v = random_vector(count(s.B, s.T, s.HV, s.V), seed + 3);
  }
  LinearInputs inputs() const {
    return {.q = bthd(q.data(), s.B, s.T, s.H, s.K),
            .k = bthd(k.data(), s.B, s.T, s.H, s.K),
            .v = bthd(v.data(), s.B, s.T, s.HV, s.V)};
  }
  std::vector<double> expected() const {
    std::vector<double> r(count(s.B, s.T, s.HV, s.V));
    reference::flowformer<double>(inputs(), 1e-6, bthd(r.data(), s.B, s.T, s.HV, s.V));
    return r;
  }
};

template <class Algo>
std::vector<float> run(const Data& d) {
  std::vector<float> o(count(d.s.B, d.s.T, d.s.HV, d.s.V), NAN);
  papers::presets::make_flowformer().forward<Algo>(
      d.inputs(), {}, {.o = bthd(o.data(), d.s.B, d.s.T, d.s.HV, d.s.V)}, {});
  return o;
}

TEST(PapersFlowformer, MatchesDefinitionsEveryAlgorithm) {
  const Shape shapes[] = {
      {1, 1, 1, 1, 16, 16}, {2, 33, 1, 2, 8, 5}, {1, 65, 2, 4, 16, 12}, {1, 90, 1, 1, 32, 24}};
  std::uint64_t seed = 900;
  for (const Shape& sh : shapes) {
    const Data d(sh, seed += 10);
    const auto ref = d.expected();
    const std::string tag = "T" + std::to_string(sh.T);
    EXPECT_LT(rel_rmse(run<Recurrent>(d), ref), kRelRmseBound) << tag << " recurrent";
    EXPECT_LT(rel_rmse(run<Chunked<16>>(d), ref), kRelRmseBound) << tag << " chunked16";
    EXPECT_LT(rel_rmse(run<Chunked<64>>(d), ref), kRelRmseBound) << tag << " chunked64";
    EXPECT_LT(rel_rmse(run<Parallel>(d), ref), kRelRmseBound) << tag << " parallel";
  }
}

// Prefill in two pieces with (state, flow) carried, then decode: all within fp32 rounding of the
// definitions over the whole sequence.
TEST(PapersFlowformer, SplitPrefillAndDecodeContinue) {
  const index_t B = 2, T = 40, H = 1, HV = 2, K = 8, V = 6, cut = 19, P = 33;
  const index_t W = papers::Flowformer::flow_width(K);
  const Data d({B, T, H, HV, K, V}, 5);
  const auto op = papers::presets::make_flowformer();
  auto slice = [&](const std::vector<float>& x, index_t per_token, index_t t0, index_t n) {
    std::vector<float> out(count(B, n, per_token));
    for (index_t b = 0; b < B; ++b)
      std::copy_n(x.data() + (b * T + t0) * per_token, n * per_token,
                  out.data() + b * n * per_token);
    return out;
  };
  std::vector<float> S(count(B, HV, K, V)), flow(count(B, H, W)), o_all(count(B, T, HV, V));
  auto put = [&](const std::vector<float>& o, index_t t0, index_t n) {
    for (index_t b = 0; b < B; ++b)
      std::copy_n(o.data() + b * n * HV * V, n * HV * V, o_all.data() + (b * T + t0) * HV * V);
  };
  index_t t0 = 0;
  for (index_t len : {cut, P - cut}) {
    auto q = slice(d.q, H * K, t0, len), k = slice(d.k, H * K, t0, len),
         v = slice(d.v, HV * V, t0, len);
    const std::vector<float> S0 = S, f0 = flow;
    LinearInputs in{.q = bthd(q.data(), B, len, H, K),
                    .k = bthd(k.data(), B, len, H, K),
                    .v = bthd(v.data(), B, len, HV, V)};
    View3<const float> flow0;
    if (t0 > 0) {
      in.initial_state = bhkv(S0.data(), B, HV, K, V);
      flow0 = View3<const float>::contiguous(f0.data(), {B, H, W});
    }
    std::vector<float> o(count(B, len, HV, V));
    op.forward<Chunked<16>>(
        in, flow0, {.o = bthd(o.data(), B, len, HV, V), .final_state = bhkv(S.data(), B, HV, K, V)},
        View3<float>::contiguous(flow.data(), {B, H, W}));
    put(o, t0, len);
    t0 += len;
  }
  for (; t0 < T; ++t0) {
    auto q = slice(d.q, H * K, t0, 1), k = slice(d.k, H * K, t0, 1), v = slice(d.v, HV * V, t0, 1);
    std::vector<float> o(count(B, 1, HV, V));
    op.step({.q = bthd(q.data(), B, 1, H, K),
             .k = bthd(k.data(), B, 1, H, K),
             .v = bthd(v.data(), B, 1, HV, V)},
            bhkv(S.data(), B, HV, K, V), View3<float>::contiguous(flow.data(), {B, H, W}),
            bthd(o.data(), B, 1, HV, V));
    put(o, t0, 1);
  }
  EXPECT_LT(rel_rmse(o_all, d.expected()), kRelRmseBound);
  for (index_t b = 0; b < B; ++b) EXPECT_EQ(flow[count(b * H * W + W - 1)], static_cast<float>(T));
}

TEST(PapersFlowformer, VarlenEqualsSeparateCalls) {
  const index_t T = 50, H = 2, HV = 2, K = 8, V = 5;
  const index_t W = papers::Flowformer::flow_width(K);
  const std::vector<std::int64_t> cu{0, 20, 20, 50};
  const Data d({1, T, H, HV, K, V}, 15);
  const auto op = papers::presets::make_flowformer();
  std::vector<float> o(count(T, HV, V)), flow(count(3, H, W));
  LinearInputs in = d.inputs();
  in.cu_seqlens = cu;
  op.forward<Chunked<16>>(in, {}, {.o = bthd(o.data(), 1, T, HV, V)},
                          View3<float>::contiguous(flow.data(), {3, H, W}));
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t t0 = cu[n], L = cu[n + 1] - cu[n];
    if (L == 0) continue;
    std::vector<float> on(count(L, HV, V)), fn(count(H, W));
    op.forward<Chunked<16>>({.q = bthd(d.q.data() + t0 * H * K, 1, L, H, K),
                             .k = bthd(d.k.data() + t0 * H * K, 1, L, H, K),
                             .v = bthd(d.v.data() + t0 * HV * V, 1, L, HV, V)},
                            {}, {.o = bthd(on.data(), 1, L, HV, V)},
                            View3<float>::contiguous(fn.data(), {1, H, W}));
    EXPECT_TRUE(
        same_bits(on, std::vector<float>(o.begin() + t0 * HV * V, o.begin() + (t0 + L) * HV * V)));
    EXPECT_TRUE(same_bits(
        fn, std::vector<float>(flow.begin() + n * fn.size(), flow.begin() + (n + 1) * fn.size())));
  }
}

TEST(PapersFlowformer, BadArgumentsLeaveOutputsUntouched) {
  const Data d({1, 9, 1, 2, 4, 3}, 61);
  const auto& s = d.s;
  const index_t W = papers::Flowformer::flow_width(s.K);
  const auto op = papers::presets::make_flowformer();
  std::vector<float> o(count(s.T, s.HV, s.V), 7.f), h0(count(s.HV, s.K, s.V)),
      flow(count(s.H, W), 7.f);
  const LinearOutputs<float> out{.o = bthd(o.data(), 1, s.T, s.HV, s.V)};
  const auto fv = View3<float>::contiguous(flow.data(), {1, s.H, W});
  LinearInputs with_h0 = d.inputs();
  with_h0.initial_state = bhkv(h0.data(), 1, s.HV, s.K, s.V);
  expect_error_untouched([&] { op.forward(with_h0, {}, out, fv); }, "flow0", o, "state alone");
  expect_error_untouched(
      [&] {
        op.forward(d.inputs(), View3<const float>::contiguous(flow.data(), {1, s.H, W}), out, fv);
      },
      "initial_state", o, "flow alone");
  expect_error_untouched(
      [&] {
        op.forward(with_h0, View3<const float>::contiguous(flow.data(), {1, s.H, W - 1}), out, fv);
      },
      "flow0", o, "flow width");
  std::vector<float> g(count(s.T, s.HV), -0.1f);
  LinearInputs with_g = d.inputs();
  with_g.g = bth(g.data(), 1, s.T, s.HV);
  expect_error_untouched([&] { op.forward(with_g, {}, out, fv); }, "g", o, "stray gate");
  LinearInputs bad_v = d.inputs();
  bad_v.v = bthd(d.v.data(), 1, s.T - 1, s.HV, s.V);
  expect_error_untouched([&] { op.forward(bad_v, {}, out, fv); }, "v", flow, "v length");
  std::vector<float> o_small(count(s.T, s.HV, s.V - 1));
  expect_error_untouched(
      [&] { op.forward(d.inputs(), {}, {.o = bthd(o_small.data(), 1, s.T, s.HV, s.V - 1)}, fv); },
      "o", flow, "o shape");
}

}  // namespace
}  // namespace polyattn::test
