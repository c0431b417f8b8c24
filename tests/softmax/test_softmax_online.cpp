// tests/softmax/test_softmax_online.cpp — the online-softmax component (online_softmax.hpp)
// against a naive double computation: streaming in tiles of any size (float, double, SIMD
// batches with one row per lane), the output accumulator rescaled alongside, rows of −inf
// (masked) scores, NaN, the sink logit in the denominator, and merges of partials over disjoint
// key sets in any split order (pairwise combine and the k-way form of decode).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "polyattn/core/simd/arch.hpp"
#include "polyattn/softmax/online_softmax.hpp"

namespace {

using namespace polyattn;
namespace online = polyattn::softmax::online;
using softmax::RowAdvance;
using softmax::RowResult;
using softmax::RowStats;

constexpr double kInf = std::numeric_limits<double>::infinity();

// Naive double: m, l = Σ e^{s − m}, o = Σ e^{s − m'} v / den and lse, with the sink σ (when
// given) in the denominator: m' = max(m, σ), den = Σ e^{s − m'} + e^{σ − m'}.
struct Naive {
  double m = -kInf, l = 0.0, lse = -kInf;
  std::vector<double> o;
};
Naive naive(const std::vector<double>& s, const std::vector<std::vector<double>>& v, std::size_t dv,
            const double* sink) {
  Naive r;
  r.o.assign(dv, 0.0);
  for (double x : s) r.m = std::max(r.m, x);
  if (r.m == -kInf) return r;
  for (double x : s) r.l += std::exp(x - r.m);
  const double M = sink ? std::max(r.m, *sink) : r.m;
  double den = 0.0;
  for (std::size_t j = 0; j < s.size(); ++j) {
    const double e = std::exp(s[j] - M);
    den += e;
    for (std::size_t c = 0; c < dv; ++c) r.o[c] += e * v[j][c];
  }
  if (sink) den += std::exp(*sink - M);
  for (auto& x : r.o) x /= den;
  r.lse = M + std::log(den);
  return r;
}

// Streams scores s (and value rows v) through advance / accumulate in tiles of the given sizes,
// in type T, then finishes the row.
template <class T>
struct Streamed {
  RowStats<T> st;
  std::vector<T> O;  // Σ e^{s − m} v
  RowResult<T> res;
};
template <class T>
Streamed<T> stream(const std::vector<double>& s, const std::vector<std::vector<double>>& v,
                   std::size_t dv, const std::vector<std::size_t>& tiles, const double* sink) {
  Streamed<T> r;
  r.st = online::empty<T>();
  r.O.assign(dv, T(0));
  std::size_t j = 0;
  for (std::size_t n : tiles) {
    T mx = T(-kInf);
    for (std::size_t c = j; c < j + n; ++c) mx = online::merge_max(mx, static_cast<T>(s[c]));
    const RowAdvance<T> adv = online::advance(r.st.m, mx);
    T sum = T(0);
    for (auto& x : r.O) x *= adv.alpha;
    for (std::size_t c = j; c < j + n; ++c) {
      const T e = std::exp(static_cast<T>(s[c]) - adv.shift);
      sum += e;
      for (std::size_t k = 0; k < dv; ++k) r.O[k] += e * static_cast<T>(v[c][k]);
    }
    r.st = {adv.m, online::accumulate(r.st.l, adv.alpha, sum)};
    j += n;
  }
  r.res = sink ? online::finish(r.st, static_cast<T>(*sink)) : online::finish(r.st);
  return r;
}

std::vector<std::size_t> random_tiles(std::size_t n, std::mt19937_64& rng) {
  std::vector<std::size_t> t;
  std::uniform_int_distribution<std::size_t> len(1, 9);
  for (std::size_t j = 0; j < n;) {
    const std::size_t k = std::min(n - j, len(rng));
    t.push_back(k);
    j += k;
  }
  return t;
}

template <class T>
void expect_near_rel(T got, double want, double tol, const std::string& what) {
  if (std::isinf(want)) {
    EXPECT_EQ(static_cast<double>(got), want) << what;
  } else {
    EXPECT_NEAR(static_cast<double>(got), want, tol * std::max(1.0, std::abs(want))) << what;
  }
}

template <class T>
void check_streaming(double tol) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> score(-30.0, 30.0), val(-1.0, 1.0);
  const std::size_t dv = 3;
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t n = 1 + static_cast<std::size_t>(trial % 40);
    std::vector<double> s(n);
    std::vector<std::vector<double>> v(n, std::vector<double>(dv));
    for (std::size_t j = 0; j < n; ++j) {
      // a third of the keys masked (−inf), whole rows masked now and then
      s[j] = (trial % 11 == 0 || (j + trial) % 3 == 0) ? -kInf : score(rng);
      for (auto& x : v[j]) x = val(rng);
    }
    const double sink_val = score(rng) / 3.0;
    for (const double* sink : {static_cast<const double*>(nullptr), &sink_val}) {
      const Naive want = naive(s, v, dv, sink);
      const Streamed<T> got = stream<T>(s, v, dv, random_tiles(n, rng), sink);
      const std::string what = "trial " + std::to_string(trial) + (sink ? " sink" : "");
      expect_near_rel(got.st.m, want.m, tol, what + " m");
      if (want.m == -kInf) {
        EXPECT_EQ(got.st.l, T(0)) << what;
        EXPECT_EQ(got.res.mul, T(0)) << what;
        EXPECT_EQ(static_cast<double>(got.res.lse), -kInf) << what;
        continue;
      }
      expect_near_rel(got.st.l, want.l, tol, what + " l");
      expect_near_rel(got.res.lse, want.lse, tol, what + " lse");
      for (std::size_t c = 0; c < dv; ++c)
        EXPECT_NEAR(static_cast<double>(got.O[c] * got.res.mul), want.o[c], tol) << what;
    }
  }
}

TEST(OnlineSoftmax, StreamingFloatMatchesNaiveDouble) {
  check_streaming<float>(2e-6);
}
TEST(OnlineSoftmax, StreamingDoubleMatchesNaiveDouble) {
  check_streaming<double>(1e-13);
}

TEST(OnlineSoftmax, NaNPropagatesAndMinusInfRowsAreEmpty) {
  for (const bool with_sink : {false, true}) {
    RowStats<float> st = online::empty<float>();
    EXPECT_EQ(st.m, -std::numeric_limits<float>::infinity());
    EXPECT_EQ(st.l, 0.f);
    // only masked scores: the row stays empty, and the rescale factor is finite (0)
    RowAdvance<float> adv = online::advance(st.m, -std::numeric_limits<float>::infinity());
    EXPECT_EQ(adv.shift, 0.f);
    EXPECT_EQ(adv.alpha, 0.f);
    st = {adv.m, online::accumulate(st.l, adv.alpha, std::exp(adv.m - adv.shift))};
    const RowResult<float> empty = with_sink ? online::finish(st, 3.f) : online::finish(st);
    EXPECT_EQ(empty.mul, 0.f);
    EXPECT_EQ(empty.lse, -std::numeric_limits<float>::infinity());
    // a NaN score: NaN max, NaN result, and it stays NaN whatever follows
    adv = online::advance(1.f, std::numeric_limits<float>::quiet_NaN());
    EXPECT_TRUE(std::isnan(adv.m));
    adv = online::advance(adv.m, 5.f);
    EXPECT_TRUE(std::isnan(adv.m));
    const RowStats<float> nan_row{adv.m, 1.f};
    const RowResult<float> r = with_sink ? online::finish(nan_row, 0.f) : online::finish(nan_row);
    EXPECT_TRUE(std::isnan(r.mul));
    EXPECT_TRUE(std::isnan(r.lse));
    // merging with a NaN partial gives NaN; with an empty one changes nothing
    EXPECT_TRUE(std::isnan(online::combine(RowStats<float>{2.f, 1.5f}, nan_row).stats.m));
    const auto c = online::combine(RowStats<float>{2.f, 1.5f}, online::empty<float>());
    EXPECT_EQ(c.stats.m, 2.f);
    EXPECT_EQ(c.stats.l, 1.5f);
    EXPECT_EQ(c.cb, 0.f);
    EXPECT_TRUE(std::isnan(online::merge_max(-std::numeric_limits<float>::infinity(),
                                             std::numeric_limits<float>::quiet_NaN())));
    EXPECT_EQ(online::merge_weight(-std::numeric_limits<float>::infinity(), 4.f), 0.f);
  }
}

TEST(OnlineSoftmax, SinkDominatesOrVanishes) {
  const RowStats<double> st{0.0, 1.0};  // one score 0
  // sink far above: almost all mass on the sink, lse ≈ sink
  RowResult<double> r = online::finish(st, 50.0);
  EXPECT_NEAR(r.lse, 50.0, 1e-12);
  EXPECT_NEAR(r.mul, std::exp(-50.0), 1e-30);
  // sink of −inf: no sink at all
  r = online::finish(st, -kInf);
  EXPECT_EQ(r.mul, 1.0);
  EXPECT_EQ(r.lse, 0.0);
}

// Partials over disjoint key sets merged pairwise in every order, and in the k-way form of
// decode, equal one pass over all the keys.
TEST(OnlineSoftmax, MergesInAnySplitOrder) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> score(-20.0, 20.0), val(-1.0, 1.0);
  const std::size_t dv = 2;
  for (int trial = 0; trial < 60; ++trial) {
    const std::size_t n = 5 + static_cast<std::size_t>(trial);
    std::vector<double> s(n);
    std::vector<std::vector<double>> v(n, std::vector<double>(dv));
    for (std::size_t j = 0; j < n; ++j) {
      s[j] = (j % 4 == 1) ? -kInf : score(rng) * (trial % 5 == 0 ? 5.0 : 1.0);
      for (auto& x : v[j]) x = val(rng);
    }
    const double sink_val = score(rng);
    const double* sink = trial % 2 ? &sink_val : nullptr;
    const Naive want = naive(s, v, dv, sink);

    // Partials: split the keys at random points (some partials entirely masked).
    std::vector<std::size_t> cuts{0, n};
    for (int c = 0; c < 4; ++c)
      cuts.push_back(std::uniform_int_distribution<std::size_t>(0, n)(rng));
    std::sort(cuts.begin(), cuts.end());
    struct Part {
      RowStats<float> st;
      std::vector<float> O;
    };
    std::vector<Part> parts;
    for (std::size_t c = 0; c + 1 < cuts.size(); ++c) {
      const std::vector<double> ps(s.begin() + static_cast<std::ptrdiff_t>(cuts[c]),
                                   s.begin() + static_cast<std::ptrdiff_t>(cuts[c + 1]));
      const std::vector<std::vector<double>> pv(
          v.begin() + static_cast<std::ptrdiff_t>(cuts[c]),
          v.begin() + static_cast<std::ptrdiff_t>(cuts[c + 1]));
      const Streamed<float> p = stream<float>(ps, pv, dv, {ps.size()}, nullptr);
      parts.push_back({p.st, p.O});
    }
    std::vector<std::size_t> order(parts.size());
    std::iota(order.begin(), order.end(), 0);
    for (int perm = 0; perm < 4; ++perm) {
      std::shuffle(order.begin(), order.end(), rng);
      RowStats<float> acc = online::empty<float>();
      std::vector<float> O(dv, 0.f);
      for (std::size_t i : order) {
        const auto c = online::combine(acc, parts[i].st);
        for (std::size_t k = 0; k < dv; ++k) O[k] = O[k] * c.ca + parts[i].O[k] * c.cb;
        acc = c.stats;
      }
      const RowResult<float> r =
          sink ? online::finish(acc, static_cast<float>(*sink)) : online::finish(acc);
      const std::string what = "trial " + std::to_string(trial) + " perm " + std::to_string(perm);
      expect_near_rel(r.lse, want.lse, 2e-6, what + " lse");
      for (std::size_t k = 0; k < dv; ++k)
        EXPECT_NEAR(static_cast<double>(O[k] * r.mul), want.o[k], 2e-6) << what;
    }

    // k-way (decode): M over the partials and the sink, weights e^{m_i − M}, sink as (σ, 1).
    float M = -std::numeric_limits<float>::infinity();
    for (const Part& p : parts) M = online::merge_max(M, p.st.m);
    float den = 0.f;
    if (sink) {
      M = online::merge_max(M, static_cast<float>(*sink));
      den = online::merge_weight(static_cast<float>(*sink), M);
    }
    std::vector<float> O(dv, 0.f);
    for (const Part& p : parts) {
      const float c = online::merge_weight(p.st.m, M);
      den += c * p.st.l;
      for (std::size_t k = 0; k < dv; ++k) O[k] += c * p.O[k];
    }
    expect_near_rel(M + std::log(den), want.lse, 2e-6, "k-way lse");
    for (std::size_t k = 0; k < dv; ++k)
      EXPECT_NEAR(static_cast<double>(O[k] / den), want.o[k], 2e-6);
  }
}

// The vertical form of the tiled kernel: one row per SIMD lane, each lane equal to the scalar
// float computation of its row (up to the exponential's rounding).
template <class B>
void check_lanes() {
  constexpr std::size_t W = B::size;
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> score(-25.f, 25.f);
  const float ninf = -std::numeric_limits<float>::infinity();
  const std::size_t n = 37;
  std::vector<float> s(n * W);  // s[j·W + lane]
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t lane = 0; lane < W; ++lane)
      s[j * W + lane] = (lane == 1 || (j + lane) % 5 == 0) ? ninf : score(rng);  // lane 1 empty
  RowStats<B> st{B(ninf), B(0.f)};
  for (std::size_t j0 = 0; j0 < n; j0 += 8) {
    const std::size_t j1 = std::min(n, j0 + 8);
    B mx(ninf);
    for (std::size_t j = j0; j < j1; ++j) mx = online::merge_max(mx, B::load_unaligned(&s[j * W]));
    const RowAdvance<B> adv = online::advance(st.m, mx);
    B sum(0.f);
    for (std::size_t j = j0; j < j1; ++j)
      sum += simd::exp(B::load_unaligned(&s[j * W]) - adv.shift);
    st = {adv.m, online::accumulate(st.l, adv.alpha, sum)};
  }
  alignas(64) float m[W], l[W];
  st.m.store_unaligned(m);
  st.l.store_unaligned(l);
  for (std::size_t lane = 0; lane < W; ++lane) {
    std::vector<double> row(n);
    for (std::size_t j = 0; j < n; ++j) row[j] = s[j * W + lane];
    const Naive want = naive(row, std::vector<std::vector<double>>(n), 0, nullptr);
    expect_near_rel(m[lane], want.m, 1e-6, "lane " + std::to_string(lane) + " m");
    expect_near_rel(l[lane], want.l, 2e-6, "lane " + std::to_string(lane) + " l");
  }
}

TEST(OnlineSoftmax, BatchLanesAreIndependentRows) {
  check_lanes<simd::ScalarBatch>();
  check_lanes<xsimd::batch<float>>();  // the widest batch this test's own flags enable
}

}  // namespace
