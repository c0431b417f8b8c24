// Aaren (papers/aaren.hpp): the recurrent form and the blocked prefix scan against softmax over
// the prefix in double (reference/papers.hpp), with and without a carried state, GVA, varlen,
// thread counts, decode steps and bad arguments.
#include <gtest/gtest.h>

#include <cmath>

#include "papers/papers_harness.hpp"
#include "polyattn/papers/aaren.hpp"
#include "polyattn/reference/papers.hpp"
#include "polyattn/testing.hpp"

namespace polyattn::test {
namespace {

struct Shape {
  index_t B, T, H, HV, K, V;
};

struct Data {
  Shape s;
  std::vector<float> q, k, v, m0, c0, a0;
  Data(const Shape& sh, std::uint64_t seed, float range = 1.f) : s(sh) {
    q = random_vector(count(s.H, s.K), seed + 1, -range, range);
    k = random_vector(count(s.B, s.T, s.H, s.K), seed + 2, -range, range);
    v = random_vector(count(s.B, s.T, s.HV, s.V), seed + 3);
    m0 = random_vector(count(s.B, s.HV), seed + 4, -1.f, 1.f);
    c0 = random_vector(count(s.B, s.HV), seed + 5, 0.5f, 3.f);
    a0 = random_vector(count(s.B, s.HV, s.V), seed + 6, -2.f, 2.f);
  }
  papers::AarenState<const float> init() const {
    return {TensorView<const float, 2>::contiguous(m0.data(), {s.B, s.HV}),
            TensorView<const float, 2>::contiguous(c0.data(), {s.B, s.HV}),
            View3<const float>::contiguous(a0.data(), {s.B, s.HV, s.V})};
  }
  papers::AarenInputs inputs(bool with_init) const {
    return {.query = TensorView<const float, 2>::contiguous(q.data(), {s.H, s.K}),
            .k = bthd(k.data(), s.B, s.T, s.H, s.K),
            .v = bthd(v.data(), s.B, s.T, s.HV, s.V),
            .initial = with_init ? init() : papers::AarenState<const float>{}};
  }
  std::vector<double> expected(bool with_init, double scale = 1.0) const {
    std::vector<double> r(count(s.B, s.T, s.HV, s.V));
    const auto ini = with_init ? init() : papers::AarenState<const float>{};
    reference::aaren<double>(TensorView<const float, 2>::contiguous(q.data(), {s.H, s.K}),
                             bthd(k.data(), s.B, s.T, s.H, s.K),
                             bthd(v.data(), s.B, s.T, s.HV, s.V), {}, ini.m, ini.c, ini.a, scale,
                             bthd(r.data(), s.B, s.T, s.HV, s.V));
    return r;
  }
};

struct Out {
  std::vector<float> o, m, c, a;
  Out(const Shape& s)
      : o(count(s.B, s.T, s.HV, s.V), NAN),
        m(count(s.B, s.HV), NAN),
        c(count(s.B, s.HV), NAN),
        a(count(s.B, s.HV, s.V), NAN) {}
  papers::AarenState<float> state(const Shape& s) {
    return {TensorView<float, 2>::contiguous(m.data(), {s.B, s.HV}),
            TensorView<float, 2>::contiguous(c.data(), {s.B, s.HV}),
            View3<float>::contiguous(a.data(), {s.B, s.HV, s.V})};
  }
};

template <class Algo, class E = Serial>
Out run(const Data& d, bool with_init, const E& exec = E{}, papers::AarenOptions opt = {}) {
  Out r(d.s);
  papers::presets::make_aaren().forward<Algo>(
      d.inputs(with_init), bthd(r.o.data(), d.s.B, d.s.T, d.s.HV, d.s.V), r.state(d.s), opt, exec);
  return r;
}

TEST(PapersAaren, RecurrentAndScanMatchSoftmaxOverThePrefix) {
  const Shape shapes[] = {
      {1, 1, 1, 1, 16, 16}, {2, 33, 1, 2, 8, 5}, {1, 65, 2, 4, 16, 12}, {1, 150, 1, 1, 32, 24}};
  std::uint64_t seed = 700;
  for (const Shape& sh : shapes) {
    const Data d(sh, seed += 10);
    for (bool init : {false, true}) {
      const auto ref = d.expected(init);
      const std::string tag = "T" + std::to_string(sh.T) + (init ? " init" : "");
      const Out rec = run<Recurrent>(d, init);
      EXPECT_LT(rel_rmse(rec.o, ref), kRelRmseBound) << tag << " recurrent";
      for (const Out& scan : {run<Chunked<16>>(d, init), run<Chunked<64>>(d, init)}) {
        EXPECT_LT(rel_rmse(scan.o, ref), kRelRmseBound) << tag << " scan";
        // The final triple is defined up to the common factor e^{m}: compare a/c and m.
        EXPECT_LT(rel_rmse(scan.m, rec.m), 1e-6) << tag << " final m";
        std::vector<float> ra(rec.a.size()), sa(rec.a.size());
        for (std::size_t i = 0; i < ra.size(); ++i) {
          ra[i] = rec.a[i] / rec.c[i / count(sh.V)];
          sa[i] = scan.a[i] / scan.c[i / count(sh.V)];
        }
        EXPECT_LT(rel_rmse(sa, ra), kRelRmseBound) << tag << " final a/c";
      }
    }
  }
}

// Scores of several tens (query and keys in [−2.5, 2.5]): the running max keeps every
// exponential in range.
TEST(PapersAaren, LargeScoresStayFinite) {
  const Data d({1, 100, 1, 1, 16, 8}, 3, 2.5f);
  const auto ref = d.expected(false);
  EXPECT_LT(rel_rmse(run<Recurrent>(d, false).o, ref), kRelRmseBound);
  EXPECT_LT(rel_rmse(run<Chunked<32>>(d, false).o, ref), kRelRmseBound);
  papers::AarenOptions scaled{.scale = 0.25};
  EXPECT_LT(rel_rmse(run<Chunked<16>>(d, false, Serial{}, scaled).o, d.expected(false, 0.25)),
            kRelRmseBound);
}

TEST(PapersAaren, ThreadCountsGiveIdenticalBits) {
  const Data d({2, 200, 1, 2, 8, 6}, 9);
  const Out serial = run<Chunked<16>>(d, true);
  for (int n : {2, 3}) {
    ThreadPool pool(n);
    const Out par = run<Chunked<16>>(d, true, pool);
    EXPECT_TRUE(same_bits(par.o, serial.o)) << n;
    EXPECT_TRUE(same_bits(par.a, serial.a)) << n;
    const Out rec = run<Recurrent>(d, true, pool);
    EXPECT_TRUE(same_bits(rec.o, run<Recurrent>(d, true).o)) << n;
  }
}

TEST(PapersAaren, VarlenEqualsSeparateCalls) {
  const index_t T = 60, H = 1, HV = 2, K = 8, V = 5;
  const std::vector<std::int64_t> cu{0, 25, 25, 60};
  const Data d({1, T, H, HV, K, V}, 11);
  Out all({3, T, H, HV, K, V});
  all.o.resize(count(T, HV, V));
  papers::AarenInputs in = d.inputs(false);
  in.cu_seqlens = cu;
  papers::presets::make_aaren().forward<Chunked<16>>(in, bthd(all.o.data(), 1, T, HV, V),
                                                     all.state({3, T, H, HV, K, V}));
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t t0 = cu[n], L = cu[n + 1] - cu[n];
    if (L == 0) {
      EXPECT_EQ(all.c[n * HV], 0.f);  // nothing seen: the identity
      EXPECT_TRUE(std::isinf(all.m[n * HV]));
      continue;
    }
    Out one({1, L, H, HV, K, V});
    papers::presets::make_aaren().forward<Chunked<16>>(
        {.query = in.query,
         .k = bthd(d.k.data() + t0 * H * K, 1, L, H, K),
         .v = bthd(d.v.data() + t0 * HV * V, 1, L, HV, V)},
        bthd(one.o.data(), 1, L, HV, V), one.state({1, L, H, HV, K, V}));
    EXPECT_TRUE(same_bits(
        one.o, std::vector<float>(all.o.begin() + t0 * HV * V, all.o.begin() + (t0 + L) * HV * V)));
    EXPECT_TRUE(same_bits(
        one.a, std::vector<float>(all.a.begin() + n * HV * V, all.a.begin() + (n + 1) * HV * V)));
  }
}

// Prefill half, then one token at a time with the state in place: every output matches the
// reference over the whole sequence.
TEST(PapersAaren, DecodeContinuesPrefill) {
  const index_t B = 2, T = 30, H = 1, HV = 2, K = 8, V = 4, P = 17;
  const Data d({B, T, H, HV, K, V}, 13);
  const auto ref = d.expected(false);
  auto slice = [&](const std::vector<float>& x, index_t per_token, index_t t0, index_t n) {
    std::vector<float> out(count(B, n, per_token));
    for (index_t b = 0; b < B; ++b)
      std::copy_n(x.data() + (b * T + t0) * per_token, n * per_token,
                  out.data() + b * n * per_token);
    return out;
  };
  Out st({B, 1, H, HV, K, V});
  const auto state = st.state({B, 1, H, HV, K, V});
  std::vector<float> o_all(count(B, T, HV, V));
  auto put = [&](const std::vector<float>& o, index_t t0, index_t n) {
    for (index_t b = 0; b < B; ++b)
      std::copy_n(o.data() + b * n * HV * V, n * HV * V, o_all.data() + (b * T + t0) * HV * V);
  };
  const auto op = papers::presets::make_aaren();
  {
    auto k = slice(d.k, H * K, 0, P), v = slice(d.v, HV * V, 0, P);
    std::vector<float> o(count(B, P, HV, V));
    op.forward<Chunked<16>>({.query = d.inputs(false).query,
                             .k = bthd(k.data(), B, P, H, K),
                             .v = bthd(v.data(), B, P, HV, V)},
                            bthd(o.data(), B, P, HV, V), state);
    put(o, 0, P);
  }
  for (index_t t = P; t < T; ++t) {
    auto k = slice(d.k, H * K, t, 1), v = slice(d.v, HV * V, t, 1);
    std::vector<float> o(count(B, 1, HV, V));
    op.step({.query = d.inputs(false).query,
             .k = bthd(k.data(), B, 1, H, K),
             .v = bthd(v.data(), B, 1, HV, V)},
            state, bthd(o.data(), B, 1, HV, V));
    put(o, t, 1);
  }
  EXPECT_LT(rel_rmse(o_all, ref), kRelRmseBound);
}

TEST(PapersAaren, BadArgumentsLeaveOutputsUntouched) {
  const Data d({1, 9, 1, 2, 4, 3}, 61);
  const auto& s = d.s;
  const auto op = papers::presets::make_aaren();
  Out r(s);
  std::fill(r.o.begin(), r.o.end(), 7.f);
  std::fill(r.m.begin(), r.m.end(), 7.f);
  const auto o = bthd(r.o.data(), 1, s.T, s.HV, s.V);
  auto in = d.inputs(false);
  auto bad_q = in;
  bad_q.query = TensorView<const float, 2>::contiguous(d.q.data(), {s.H, s.K - 1});
  expect_error_untouched([&] { op.forward(bad_q, o, r.state(s)); }, "query", r.o, "query dim");
  auto no_q = in;
  no_q.query = {};
  expect_error_untouched([&] { op.forward(no_q, o, r.state(s)); }, "query", r.o, "no query");
  auto partial = d.inputs(true);
  partial.initial.c = {};
  expect_error_untouched([&] { op.forward<Chunked<16>>(partial, o, r.state(s)); }, "initial.c", r.o,
                         "partial state");
  auto bad_fin = r.state(s);
  bad_fin.a = View3<float>::contiguous(r.a.data(), {1, s.HV, s.V - 1});
  expect_error_untouched([&] { op.forward(in, o, bad_fin); }, "final_state.a", r.o, "fin.a");
  expect_error_untouched([&] { op.forward(in, o, r.state(s), {.scale = INFINITY}); }, "scale", r.m,
                         "scale");
  auto bad_v = in;
  bad_v.v = bthd(d.v.data(), 1, s.T - 1, s.HV, s.V);
  expect_error_untouched([&] { op.forward(bad_v, o, r.state(s)); }, "v", r.m, "v length");
  const std::vector<std::int64_t> cu{0, 4, 8};
  auto bad_cu = in;
  bad_cu.cu_seqlens = cu;
  expect_error_untouched([&] { op.forward(bad_cu, o, r.state(s)); }, "cu_seqlens", r.o, "cu");
  expect_error_untouched([&] { op.step(in, {}, o); }, "state", r.o, "step without state");
}

}  // namespace
}  // namespace polyattn::test
