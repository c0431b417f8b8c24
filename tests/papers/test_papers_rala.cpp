// RALA (papers/rala.hpp): the simple_gla-form operator against the pairwise reference
// (reference/papers2.hpp) for every algorithm, with and without initial state, LePE and output
// features; GVA, varlen, prefill in pieces then decode, the global-query helper and bad arguments.
#include <gtest/gtest.h>

#include <cmath>

#include "papers/papers_harness.hpp"
#include "polyattn/papers/rala.hpp"
#include "polyattn/reference/papers2.hpp"
#include "polyattn/testing.hpp"

namespace polyattn::test {
namespace {

struct Shape {
  index_t B, T, H, HV, K, V, W;  // W = 0: no LePE
  bool gate;
};

struct Data {
  Shape s;
  std::vector<float> q, k, v, qbar, g, h0, z0, c0, w, bias, cache;
  Data(const Shape& sh, std::uint64_t seed) : s(sh) {
    q = random_vector(count(s.B, s.T, s.H, s.K), seed + 1);
    k = random_vector(count(s.B, s.T, s.H, s.K), seed + 2, -2.f, 2.f);
    v = random_vector(count(s.B, s.T, s.HV, s.V), seed + 3);
    qbar = random_vector(count(s.B, s.H, s.K), seed + 4, 0.3f, 2.f);
    g = random_vector(count(s.B, s.T, s.HV, s.V), seed + 5);
    h0 = random_vector(count(s.B, s.HV, s.K, s.V), seed + 6, -0.5f, 0.5f);
    z0 = random_vector(count(s.B, s.H, s.K), seed + 7, 0.f, 1.f);
    c0 = random_vector(count(s.B, s.H), seed + 8, -1.f, 1.f);
    w = random_vector(count(s.HV, s.V, std::max<index_t>(s.W, 1)), seed + 9, -0.5f, 0.5f);
    bias = random_vector(count(s.V), seed + 10, -0.1f, 0.1f);
    cache = random_vector(count(s.B, s.HV, std::max<index_t>(s.W - 1, 1), s.V), seed + 11);
  }
  papers::RalaInputs inputs(bool with_h0) const {
    papers::RalaInputs in{.q = bthd(q.data(), s.B, s.T, s.H, s.K),
                          .k = bthd(k.data(), s.B, s.T, s.H, s.K),
                          .v = bthd(v.data(), s.B, s.T, s.HV, s.V),
                          .q_mean = View3<const float>::contiguous(qbar.data(), {s.B, s.H, s.K})};
    if (s.gate) in.gate = bthd(g.data(), s.B, s.T, s.HV, s.V);
    if (with_h0) {
      in.initial_state = bhkv(h0.data(), s.B, s.HV, s.K, s.V);
      in.initial_z = View3<const float>::contiguous(z0.data(), {s.B, s.H, s.K});
      in.initial_log_c = TensorView<const float, 2>::contiguous(c0.data(), {s.B, s.H});
    }
    return in;
  }
  papers::TokenConv conv() const {
    if (s.W == 0) return {};
    return {.weight = View4<const float>::contiguous(w.data(), {1, s.HV, s.V, s.W}),
            .bias = View1<const float>::contiguous(bias.data(), {s.V})};
  }
  View4<const float> cache_in(bool with_h0) const {
    if (!with_h0 || s.W <= 1) return {};
    return View4<const float>::contiguous(cache.data(), {s.B, s.HV, s.W - 1, s.V});
  }
};

std::vector<double> expected(const Data& d, bool with_h0) {
  const auto& s = d.s;
  std::vector<double> r(count(s.B, s.T, s.HV, s.V));
  reference::rala<double>(d.inputs(with_h0), d.conv(), d.cache_in(with_h0),
                          1.0 / std::sqrt(static_cast<double>(s.K)), 1e-6,
                          bthd(r.data(), s.B, s.T, s.HV, s.V));
  return r;
}

template <class Algo>
std::vector<float> run(const Data& d, bool with_h0, std::vector<float>* state = nullptr) {
  const auto& s = d.s;
  std::vector<float> o(count(s.B, s.T, s.HV, s.V), NAN);
  papers::RalaOutputs out{.o = bthd(o.data(), s.B, s.T, s.HV, s.V)};
  if (state) {
    state->assign(count(s.B, s.HV, s.K, s.V), NAN);
    out.final_state = bhkv(state->data(), s.B, s.HV, s.K, s.V);
  }
  papers::presets::make_rala().forward<Algo>(d.inputs(with_h0), d.conv(),
                                             {.in = d.cache_in(with_h0)}, out);
  return o;
}

TEST(PapersRala, MatchesReferenceEveryAlgorithm) {
  const Shape shapes[] = {{1, 1, 1, 1, 16, 16, 0, false},
                          {2, 33, 1, 2, 8, 5, 3, true},
                          {1, 65, 2, 4, 16, 12, 5, false},
                          {1, 130, 1, 1, 32, 24, 0, true}};
  std::uint64_t seed = 1600;
  double worst = 0.0;
  for (const Shape& sh : shapes) {
    const Data d(sh, seed += 20);
    for (bool h0 : {false, true}) {
      const std::string tag = std::to_string(sh.T) + (h0 ? "_h0" : "");
      const auto ref = expected(d, h0);
      std::vector<float> st_r, st_c;
      const auto orec = run<Recurrent>(d, h0, &st_r);
      const auto och = run<Chunked<16>>(d, h0, &st_c);
      for (const auto& [o, name] : {std::pair{orec, "recurrent"}, std::pair{och, "chunked16"},
                                    std::pair{run<Chunked<64>>(d, h0), "chunked64"},
                                    std::pair{run<Parallel>(d, h0), "parallel"}}) {
        const double e = rel_rmse(o, ref);
        worst = std::max(worst, e);
        EXPECT_LT(e, kRelRmseBound) << tag << " " << name;
      }
      EXPECT_LT(rel_rmse(st_c, std::vector<double>(st_r.begin(), st_r.end())), kRelRmseBound)
          << tag << " final state chunked vs recurrent";
    }
  }
  std::cout << "[ RALA ] max rel RMSE vs reference " << worst << "\n";
}

// Scores far outside exp's range (keys up to ±30: s ≈ 200): the running log-sum-exp keeps
// every weight and gate finite, and the result still matches the reference.
TEST(PapersRala, LargeScoresStayFinite) {
  Data d({1, 150, 1, 2, 16, 8, 0, false}, 2024);
  for (auto& x : d.k) x *= 15.f;
  const auto ref = expected(d, false);
  for (const auto& o : {run<Recurrent>(d, false), run<Chunked<64>>(d, false)}) {
    for (float x : o) ASSERT_TRUE(std::isfinite(x));
    EXPECT_LT(rel_rmse(o, ref), kRelRmseBound);
  }
}

// Prefill in two pieces carrying (S, z, log C) and the LePE history, then decode token by token
// with everything in place, equals the reference over all tokens.
TEST(PapersRala, SplitPrefillAndDecodeContinue) {
  const index_t B = 2, T = 40, H = 1, HV = 2, K = 8, V = 6, W = 4, cut = 23, P = 30;
  const Data d({B, T, H, HV, K, V, W, true}, 77);
  const auto op = papers::presets::make_rala();
  auto slice = [&](const std::vector<float>& x, index_t per_token, index_t t0, index_t n) {
    std::vector<float> out(count(B, n, per_token));
    for (index_t b = 0; b < B; ++b)
      std::copy_n(x.data() + (b * T + t0) * per_token, n * per_token,
                  out.data() + b * n * per_token);
    return out;
  };
  std::vector<float> state(count(B, HV, K, V)), z(count(B, H, K)), lc(count(B, H)),
      cache(count(B, HV, W - 1, V)), o_all(count(B, T, HV, V));
  const auto sv = bhkv(state.data(), B, HV, K, V);
  const auto zv = View3<float>::contiguous(z.data(), {B, H, K});
  const auto lcv = TensorView<float, 2>::contiguous(lc.data(), {B, H});
  const auto cv = View4<float>::contiguous(cache.data(), {B, HV, W - 1, V});
  auto put = [&](const std::vector<float>& o, index_t t0, index_t n) {
    for (index_t b = 0; b < B; ++b)
      std::copy_n(o.data() + b * n * HV * V, n * HV * V, o_all.data() + (b * T + t0) * HV * V);
  };
  auto piece = [&](index_t t0, index_t n) {
    struct P {
      std::vector<float> q, k, v, g;
    };
    return P{slice(d.q, H * K, t0, n), slice(d.k, H * K, t0, n), slice(d.v, HV * V, t0, n),
             slice(d.g, HV * V, t0, n)};
  };
  index_t t0 = 0;
  for (index_t n : {cut, P - cut}) {
    auto p = piece(t0, n);
    std::vector<float> o(count(B, n, HV, V));
    const std::vector<float> s0 = state, z0 = z, lc0 = lc, c0 = cache;
    papers::RalaInputs in{.q = bthd(p.q.data(), B, n, H, K),
                          .k = bthd(p.k.data(), B, n, H, K),
                          .v = bthd(p.v.data(), B, n, HV, V),
                          .q_mean = View3<const float>::contiguous(d.qbar.data(), {B, H, K}),
                          .gate = bthd(p.g.data(), B, n, HV, V)};
    if (t0 > 0) {
      in.initial_state = bhkv(s0.data(), B, HV, K, V);
      in.initial_z = View3<const float>::contiguous(z0.data(), {B, H, K});
      in.initial_log_c = TensorView<const float, 2>::contiguous(lc0.data(), {B, H});
    }
    op.forward<Chunked<16>>(
        in, d.conv(),
        {.in = t0 > 0 ? View4<const float>::contiguous(c0.data(), {B, HV, W - 1, V})
                      : View4<const float>{},
         .out = cv},
        {.o = bthd(o.data(), B, n, HV, V), .final_state = sv, .final_z = zv, .final_log_c = lcv});
    put(o, t0, n);
    t0 += n;
  }
  for (; t0 < T; ++t0) {
    auto p = piece(t0, 1);
    std::vector<float> o(count(B, 1, HV, V));
    op.step({.q = bthd(p.q.data(), B, 1, H, K),
             .k = bthd(p.k.data(), B, 1, H, K),
             .v = bthd(p.v.data(), B, 1, HV, V),
             .q_mean = View3<const float>::contiguous(d.qbar.data(), {B, H, K}),
             .gate = bthd(p.g.data(), B, 1, HV, V)},
            sv, zv, lcv, d.conv(), cv, bthd(o.data(), B, 1, HV, V));
    put(o, t0, 1);
  }
  const double e = rel_rmse(o_all, expected(d, false));
  EXPECT_LT(e, kRelRmseBound);
  std::cout << "[ RALA ] pieces + decode vs reference " << e << "\n";
}

TEST(PapersRala, VarlenEqualsSeparateCallsAndQueryMean) {
  const index_t T = 50, H = 1, HV = 2, K = 8, V = 5;
  const std::vector<std::int64_t> cu{0, 20, 20, 50};
  const Data d({1, T, H, HV, K, V, 3, true}, 91);
  const auto op = papers::presets::make_rala();
  std::vector<float> qbar(count(3, H, K));
  papers::rala_query_mean(bthd(d.q.data(), 1, T, H, K), cu,
                          View3<float>::contiguous(qbar.data(), {3, H, K}));
  for (index_t i = 0; i < K; ++i) {  // the mean of φ(q) over sequence 2
    double acc = 0.0;
    for (index_t t = 20; t < 50; ++t) {
      const double x = d.q[count(t * H * K + i)];
      acc += x > 0 ? x + 1 : std::exp(x);
    }
    EXPECT_NEAR(qbar[count(2 * K + i)], acc / 30.0, 1e-6);
    EXPECT_EQ(qbar[count(K + i)], 0.f);  // the empty sequence
  }
  std::vector<float> o(count(T, HV, V)), st(count(3, HV, K, V));
  papers::RalaInputs in = d.inputs(false);
  in.q_mean = View3<const float>::contiguous(qbar.data(), {3, H, K});
  in.cu_seqlens = cu;
  op.forward<Chunked<16>>(
      in, d.conv(), {},
      {.o = bthd(o.data(), 1, T, HV, V), .final_state = bhkv(st.data(), 3, HV, K, V)});
  ThreadPool pool(3);  // any thread count gives the same bits
  std::vector<float> o3(o.size());
  op.forward<Chunked<16>>(in, d.conv(), {}, {.o = bthd(o3.data(), 1, T, HV, V)}, {}, {}, pool);
  EXPECT_TRUE(same_bits(o, o3));
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t t0 = cu[n], L = cu[n + 1] - cu[n];
    if (L == 0) continue;
    std::vector<float> on(count(L, HV, V)), sn(count(HV, K, V));
    op.forward<Chunked<16>>(
        {.q = bthd(d.q.data() + t0 * H * K, 1, L, H, K),
         .k = bthd(d.k.data() + t0 * H * K, 1, L, H, K),
         .v = bthd(d.v.data() + t0 * HV * V, 1, L, HV, V),
         .q_mean = View3<const float>::contiguous(qbar.data() + n * H * K, {1, H, K}),
         .gate = bthd(d.g.data() + t0 * HV * V, 1, L, HV, V)},
        d.conv(), {},
        {.o = bthd(on.data(), 1, L, HV, V), .final_state = bhkv(sn.data(), 1, HV, K, V)});
    EXPECT_TRUE(
        same_bits(on, std::vector<float>(o.begin() + t0 * HV * V, o.begin() + (t0 + L) * HV * V)));
    EXPECT_TRUE(same_bits(
        sn, std::vector<float>(st.begin() + n * sn.size(), st.begin() + (n + 1) * sn.size())));
  }
}

TEST(PapersRala, BadArgumentsLeaveOutputsUntouched) {
  const Data d({1, 9, 1, 2, 4, 3, 3, true}, 61);
  const auto& s = d.s;
  const auto op = papers::presets::make_rala();
  std::vector<float> o(count(s.T, s.HV, s.V), 7.f);
  const papers::RalaOutputs out{.o = bthd(o.data(), 1, s.T, s.HV, s.V)};
  auto with = [&](auto&& edit) {
    papers::RalaInputs in = d.inputs(true);
    edit(in);
    return in;
  };
  auto expect = [&](const papers::RalaInputs& in, const std::string& arg, const std::string& what,
                    const papers::RalaOptions& opt = {}, const LinearRunOptions& run = {}) {
    expect_error_untouched([&] { op.forward(in, d.conv(), {}, out, opt, run); }, arg, o, what);
  };
  expect(with([](auto& in) { in.q_mean = {}; }), "q_mean", "no global query");
  expect(with([&](auto& in) {
           in.q_mean = View3<const float>::contiguous(d.qbar.data(), {1, s.H, s.K - 1});
         }),
         "q_mean", "q_mean shape");
  expect(with([&](auto& in) { in.gate = bthd(d.g.data(), 1, s.T, s.HV, s.V - 1); }), "gate",
         "gate shape");
  expect(with([](auto& in) { in.initial_log_c = {}; }), "initial_log_c", "state without log C");
  expect(with([&](auto& in) {
           in.initial_z = View3<const float>::contiguous(d.z0.data(), {1, s.HV, s.K});
         }),
         "initial_z", "z per value head");
  expect(with([&](auto& in) { in.k = bthd(d.k.data(), 1, s.T, s.H, s.K - 1); }), "k", "k shape");
  expect(with([&](auto& in) { in.v = bthd(d.v.data(), 1, s.T - 1, s.HV, s.V); }), "v",
         "v of another length");
  expect(d.inputs(true), "eps", "eps 0", {.eps = 0.0});
  expect(d.inputs(true), "scale", "scale in the run options", {}, {.scale = 2.0});
  expect(with([&](auto& in) { in.initial_state = bhkv(d.h0.data(), 1, s.HV, s.K, s.V - 1); }),
         "initial_state", "state shape");
  // The LePE history without a kernel, and a kernel of the wrong channel count.
  std::vector<float> cache(count(s.HV, s.W - 1, s.V), 7.f);
  expect_error_untouched(
      [&] {
        op.forward(d.inputs(false), {},
                   {.out = View4<float>::contiguous(cache.data(), {1, s.HV, s.W - 1, s.V})}, out);
      },
      "conv_cache.out", o, "history without kernel");
  expect_error_untouched(
      [&] {
        op.forward(d.inputs(false),
                   {.weight = View4<const float>::contiguous(d.w.data(), {1, 1, s.V + 1, 2})}, {},
                   out);
      },
      "conv.weight", o, "kernel shape");
  // step: z of the wrong shape is found before the state is touched.
  std::vector<float> st(count(s.HV, s.K, s.V), 7.f), z(count(s.H, s.K), 7.f), lc(count(s.H), 7.f);
  papers::RalaInputs one{.q = bthd(d.q.data(), 1, 1, s.H, s.K),
                         .k = bthd(d.k.data(), 1, 1, s.H, s.K),
                         .v = bthd(d.v.data(), 1, 1, s.HV, s.V),
                         .q_mean = View3<const float>::contiguous(d.qbar.data(), {1, s.H, s.K})};
  expect_error_untouched(
      [&] {
        op.step(one, bhkv(st.data(), 1, s.HV, s.K, s.V),
                View3<float>::contiguous(z.data(), {1, s.H, s.K - 1}),
                TensorView<float, 2>::contiguous(lc.data(), {1, s.H}), {}, {},
                bthd(o.data(), 1, 1, s.HV, s.V));
      },
      "initial_z", st, "step z shape");
}

}  // namespace
}  // namespace polyattn::test
