// Sparse State Expansion (papers/sse.hpp): the packed-gla operator against the pairwise
// reference (reference/papers2.hpp) for every algorithm and writer / reader counts, with and
// without initial states; GVA, varlen, thread counts, prefill in pieces then decode, untouched
// partitions, and bad arguments.
#include <gtest/gtest.h>

#include <cmath>

#include "papers/papers_harness.hpp"
#include "polyattn/papers/sse.hpp"
#include "polyattn/reference/papers2.hpp"
#include "polyattn/testing.hpp"

namespace polyattn::test {
namespace {

struct Shape {
  index_t B, T, H, HV, K, V, P;
};

struct Data {
  Shape s;
  std::vector<float> q1, k1, q2, k2, v, g1, g2, e, h0;
  Data(const Shape& sh, std::uint64_t seed) : s(sh) {
    const auto nk = count(s.B, s.T, s.H, s.K);
    q1 = random_vector(nk, seed + 1);
    k1 = random_vector(nk, seed + 2);
    q2 = random_vector(nk, seed + 3);
    k2 = random_vector(nk, seed + 4);
    v = random_vector(count(s.B, s.T, s.HV, s.V), seed + 5);
    g1 = random_vector(count(s.B, s.T, s.HV, s.K), seed + 6, -0.2f, -0.001f);
    g2 = random_vector(count(s.B, s.T, s.HV, s.K), seed + 7, -0.2f, -0.001f);
    e = random_vector(count(s.B, s.T, s.P), seed + 8, -2.f, 2.f);
    h0 = random_vector(count((1 + s.P) * s.B, s.HV, s.K, s.V), seed + 9, -0.5f, 0.5f);
  }
  papers::SseInputs inputs(bool with_h0) const {
    papers::SseInputs in{.q1 = bthd(q1.data(), s.B, s.T, s.H, s.K),
                         .k1 = bthd(k1.data(), s.B, s.T, s.H, s.K),
                         .q2 = bthd(q2.data(), s.B, s.T, s.H, s.K),
                         .k2 = bthd(k2.data(), s.B, s.T, s.H, s.K),
                         .v = bthd(v.data(), s.B, s.T, s.HV, s.V),
                         .g1 = bthd(g1.data(), s.B, s.T, s.HV, s.K),
                         .g2 = bthd(g2.data(), s.B, s.T, s.HV, s.K),
                         .e = View3<const float>::contiguous(e.data(), {s.B, s.T, s.P})};
    if (with_h0) in.initial_state = bhkv(h0.data(), (1 + s.P) * s.B, s.HV, s.K, s.V);
    return in;
  }
  index_t rows() const { return (1 + s.P) * s.B; }
};

TEST(PapersSse, MatchesReferenceEveryAlgorithm) {
  const Shape shapes[] = {
      {1, 1, 1, 1, 16, 16, 4}, {2, 33, 1, 2, 8, 5, 4}, {1, 70, 2, 4, 16, 12, 3}};
  const papers::SseOptions routes[] = {{1, 1}, {2, 1}, {1, 3}};
  const auto op = papers::presets::make_sse();
  std::uint64_t seed = 1700;
  double worst = 0.0;
  for (const Shape& sh : shapes) {
    const Data d(sh, seed += 20);
    const auto& s = d.s;
    for (const auto& route : routes)
      for (bool h0 : {false, true}) {
        const std::string tag = std::to_string(s.T) + " w" + std::to_string(route.writers) + "r" +
                                std::to_string(route.readers) + (h0 ? " h0" : "");
        std::vector<double> ro(count(s.B, s.T, s.HV, s.V)), rs(count(d.rows(), s.HV, s.K, s.V));
        reference::sse<double>(d.inputs(h0), route, 1.0 / std::sqrt(static_cast<double>(s.K)),
                               bthd(ro.data(), s.B, s.T, s.HV, s.V),
                               bhkv(rs.data(), d.rows(), s.HV, s.K, s.V));
        auto check = [&]<class Algo>(const char* name) {
          std::vector<float> o(ro.size(), NAN), st(rs.size(), NAN);
          op.forward<Algo>(d.inputs(h0), bthd(o.data(), s.B, s.T, s.HV, s.V),
                           bhkv(st.data(), d.rows(), s.HV, s.K, s.V), route);
          const double eo = rel_rmse(o, ro), es = rel_rmse(st, rs);
          worst = std::max({worst, eo, es});
          EXPECT_LT(eo, kRelRmseBound) << tag << " " << name << " output";
          EXPECT_LT(es, kRelRmseBound) << tag << " " << name << " final state";
        };
        check.operator()<Recurrent>("recurrent");
        check.operator()<Chunked<16>>("chunked16");
        check.operator()<Chunked<64>>("chunked64");
        check.operator()<Parallel>("parallel");
      }
  }
  std::cout << "[ SSE ] max rel RMSE vs reference (outputs, final states) " << worst << "\n";
}

// Prefill in two pieces carrying the states, then decode token by token with the state in
// place, equals the reference over all tokens; a partition a step neither writes nor reads
// keeps its bits.
TEST(PapersSse, SplitPrefillAndDecodeContinue) {
  const index_t B = 2, T = 40, H = 1, HV = 2, K = 8, V = 6, P = 4, cut = 23, Pre = 30;
  const Data d({B, T, H, HV, K, V, P}, 77);
  const papers::SseOptions route{2, 2};
  const auto op = papers::presets::make_sse();
  auto slice = [&](const std::vector<float>& x, index_t per_token, index_t t0, index_t n) {
    std::vector<float> out(count(B, n, per_token));
    for (index_t b = 0; b < B; ++b)
      std::copy_n(x.data() + (b * T + t0) * per_token, n * per_token,
                  out.data() + b * n * per_token);
    return out;
  };
  std::vector<float> state(count((1 + P) * B, HV, K, V)), o_all(count(B, T, HV, V));
  const auto sv = bhkv(state.data(), (1 + P) * B, HV, K, V);
  auto run_piece = [&](index_t t0, index_t n, bool decode) {
    auto q1 = slice(d.q1, H * K, t0, n), k1 = slice(d.k1, H * K, t0, n),
         q2 = slice(d.q2, H * K, t0, n), k2 = slice(d.k2, H * K, t0, n),
         v = slice(d.v, HV * V, t0, n), g1 = slice(d.g1, HV * K, t0, n),
         g2 = slice(d.g2, HV * K, t0, n), e = slice(d.e, P, t0, n);
    std::vector<float> o(count(B, n, HV, V));
    const std::vector<float> s0 = state;
    papers::SseInputs in{.q1 = bthd(q1.data(), B, n, H, K),
                         .k1 = bthd(k1.data(), B, n, H, K),
                         .q2 = bthd(q2.data(), B, n, H, K),
                         .k2 = bthd(k2.data(), B, n, H, K),
                         .v = bthd(v.data(), B, n, HV, V),
                         .g1 = bthd(g1.data(), B, n, HV, K),
                         .g2 = bthd(g2.data(), B, n, HV, K),
                         .e = View3<const float>::contiguous(e.data(), {B, n, P})};
    if (decode) {
      op.step(in, sv, bthd(o.data(), B, n, HV, V), route);
      // Partitions neither written nor read by this token keep their bits.
      for (index_t b = 0; b < B; ++b) {
        std::vector<double> eta(P);
        std::vector<char> w(P), r(P);
        papers::sse_route(e.data() + b * P, P, 2, eta.data(), w.data());
        for (index_t p = 0; p < P; ++p) {
          if (w[p]) continue;  // readers == writers here
          const auto at = count((1 + p) * B + b) * HV * K * V;
          EXPECT_EQ(std::memcmp(s0.data() + at, state.data() + at, HV * K * V * sizeof(float)), 0);
        }
      }
    } else {
      if (t0 > 0) in.initial_state = bhkv(s0.data(), (1 + P) * B, HV, K, V);
      op.forward<Chunked<16>>(in, bthd(o.data(), B, n, HV, V), sv, route);
    }
    for (index_t b = 0; b < B; ++b)
      std::copy_n(o.data() + b * n * HV * V, n * HV * V, o_all.data() + (b * T + t0) * HV * V);
  };
  run_piece(0, cut, false);
  run_piece(cut, Pre - cut, false);
  for (index_t t = Pre; t < T; ++t) run_piece(t, 1, true);
  std::vector<double> ro(o_all.size());
  reference::sse<double>(d.inputs(false), route, 1.0 / std::sqrt(static_cast<double>(K)),
                         bthd(ro.data(), B, T, HV, V));
  const double e = rel_rmse(o_all, ro);
  EXPECT_LT(e, kRelRmseBound);
  std::cout << "[ SSE ] pieces + decode vs reference " << e << "\n";
}

TEST(PapersSse, VarlenEqualsSeparateCallsAndThreadCounts) {
  const index_t T = 50, H = 1, HV = 2, K = 8, V = 5, P = 3;
  const std::vector<std::int64_t> cu{0, 20, 20, 50};
  const Data d({1, T, H, HV, K, V, P}, 91);
  const auto op = papers::presets::make_sse();
  const papers::SseOptions route{1, 2};
  const index_t rows = (1 + P) * 3;
  std::vector<float> o(count(T, HV, V)), st(count(rows, HV, K, V));
  papers::SseInputs in = d.inputs(false);
  in.cu_seqlens = cu;
  op.forward<Chunked<16>>(in, bthd(o.data(), 1, T, HV, V), bhkv(st.data(), rows, HV, K, V), route);
  ThreadPool pool(3);
  std::vector<float> o3(o.size());
  op.forward<Chunked<16>>(in, bthd(o3.data(), 1, T, HV, V), {}, route, {}, pool);
  EXPECT_TRUE(same_bits(o, o3));
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t t0 = cu[n], L = cu[n + 1] - cu[n];
    if (L == 0) continue;
    std::vector<float> on(count(L, HV, V)), sn(count(1 + P, HV, K, V));
    const auto at = [&](const std::vector<float>& x, index_t per) {
      return bthd(x.data() + t0 * per, 1, L, per == HV * K || per == HV * V ? HV : H,
                  per == HV * V ? V : K);
    };
    op.forward<Chunked<16>>({.q1 = at(d.q1, H * K),
                             .k1 = at(d.k1, H * K),
                             .q2 = at(d.q2, H * K),
                             .k2 = at(d.k2, H * K),
                             .v = at(d.v, HV * V),
                             .g1 = at(d.g1, HV * K),
                             .g2 = at(d.g2, HV * K),
                             .e = View3<const float>::contiguous(d.e.data() + t0 * P, {1, L, P})},
                            bthd(on.data(), 1, L, HV, V), bhkv(sn.data(), 1 + P, HV, K, V), route);
    EXPECT_TRUE(
        same_bits(on, std::vector<float>(o.begin() + t0 * HV * V, o.begin() + (t0 + L) * HV * V)));
    for (index_t p = 0; p <= P; ++p) {  // row p·N + n of the packed call's states
      const auto blk = count(HV, K, V);
      EXPECT_TRUE(same_bits(
          std::vector<float>(sn.begin() + p * blk, sn.begin() + (p + 1) * blk),
          std::vector<float>(st.begin() + (p * 3 + n) * blk, st.begin() + (p * 3 + n + 1) * blk)));
    }
  }
}

TEST(PapersSse, BadArgumentsLeaveOutputsUntouched) {
  const Data d({1, 9, 1, 2, 4, 3, 4}, 61);
  const auto& s = d.s;
  const auto op = papers::presets::make_sse();
  std::vector<float> o(count(s.T, s.HV, s.V), 7.f);
  const auto ov = bthd(o.data(), 1, s.T, s.HV, s.V);
  auto with = [&](auto&& edit) {
    papers::SseInputs in = d.inputs(true);
    edit(in);
    return in;
  };
  auto expect = [&](const papers::SseInputs& in, const std::string& arg, const std::string& what,
                    const papers::SseOptions& opt = {}) {
    expect_error_untouched([&] { op.forward(in, ov, {}, opt); }, arg, o, what);
  };
  expect(with([](auto& in) { in.e = {}; }), "e", "no router logits");
  expect(with([&](auto& in) {
           in.e = View3<const float>::contiguous(d.e.data(), {1, s.T - 1, s.P});
         }),
         "e", "router of another length");
  expect(with([&](auto& in) { in.k2 = bthd(d.k2.data(), 1, s.T, s.H, s.K - 1); }), "k2",
         "k2 shape");
  expect(with([&](auto& in) { in.g1 = bthd(d.g1.data(), 1, s.T, s.H, s.K); }), "g1",
         "gate per q/k head");
  expect(with([](auto& in) { in.q2 = {}; }), "q2", "no partition query");
  expect(d.inputs(true), "writers", "writers > P", {5, 1});
  expect(d.inputs(true), "readers", "readers 0", {1, 0});
  expect(with([&](auto& in) { in.initial_state = bhkv(d.h0.data(), s.P, s.HV, s.K, s.V); }),
         "initial_state", "a state row per partition missing");
  std::vector<float> st(count(1 + s.P, s.HV, s.K, s.V), 7.f);
  expect_error_untouched(
      [&] { op.forward(d.inputs(false), ov, bhkv(st.data(), s.P, s.HV, s.K, s.V)); }, "final_state",
      o, "final state rows");
  papers::SseInputs one = d.inputs(false);
  one.e = View3<const float>::contiguous(d.e.data(), {1, s.T - 1, s.P});
  expect_error_untouched([&] { op.step(one, bhkv(st.data(), 1 + s.P, s.HV, s.K, s.V), ov); }, "e",
                         st, "step with a bad router");
}

}  // namespace
}  // namespace polyattn::test
