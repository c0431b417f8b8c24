// tests/softmax/test_papers_routing.cpp — Routing Transformer (softmax/routing.hpp): cluster
// assignments against a naive double rule (nearest centroid per token; top-w tokens per cluster;
// keys taking the queries' clusters), near-ties excepted; the mask's tile classes against its
// element rule; routing_attention against reference::routing_attention (double) with the same
// clusters — GQA, batch, varlen, causal and not, decode rows equal to the prefill's; the EMA
// k-means step against its formula over two steps; bad arguments throw a named polyattn::Error
// with the outputs untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common/expect_error.hpp"
#include "common/test_util.hpp"
#include "polyattn/reference/routing.hpp"
#include "softmax/papers2_kernels.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_error;
using polyattn::test::kRelRmseBound;
using polyattn::test::kSentinel;
using polyattn::test::rel_rmse;
using polyattn::test::SoftmaxData;
using softmax::RoutingAssignment;
using softmax::RoutingRule;
using softmax::RoutingSource;

std::vector<float> centroids(index_t HQ, index_t C, index_t D, std::uint64_t seed) {
  return test::random_vector(static_cast<std::size_t>(HQ * C * D), seed);
}
View3<const float> cview(const std::vector<float>& mu, index_t HQ, index_t C, index_t D) {
  return View3<const float>::contiguous(mu.data(), {HQ, C, D});
}

struct Seq {
  index_t b, q0, nq, k0, nk;
};
std::vector<Seq> sequences(const SoftmaxData& x) {
  std::vector<Seq> s;
  if (x.cu_seqlens.empty()) {
    for (index_t b = 0; b < x.s.B; ++b) s.push_back({b, 0, x.s.T, 0, x.s.S});
  } else {
    for (std::size_t n = 0; n + 1 < x.cu_seqlens.size(); ++n) {
      const index_t a = x.cu_seqlens[n], len = x.cu_seqlens[n + 1] - a;
      s.push_back({0, a, len, a, len});
    }
  }
  return s;
}

// μ_c · x for token t of a [B, T, H, D] buffer, in double.
double dot(const std::vector<float>& mu, index_t C, index_t D, index_t h, index_t c,
           const std::vector<float>& x, index_t T, index_t H, index_t b, index_t t, index_t xh) {
  double s = 0.0;
  for (index_t e = 0; e < D; ++e)
    s += static_cast<double>(mu[static_cast<std::size_t>((h * C + c) * D + e)]) *
         x[static_cast<std::size_t>(((b * T + t) * H + xh) * D + e)];
  return s;
}

// Checks `words` of (b, h) over tokens [x0, x0 + n) against the rule; returns the near-ties
// skipped.
index_t check_words(const std::vector<std::uint64_t>& words, index_t base, RoutingRule rule,
                    index_t w, const std::vector<float>& mu, index_t C, index_t D, index_t h,
                    const std::vector<float>& x, index_t T, index_t H, index_t b, index_t x0,
                    index_t n, index_t xh) {
  index_t skipped = 0;
  std::vector<std::vector<double>> sim(static_cast<std::size_t>(C));
  for (index_t c = 0; c < C; ++c)
    for (index_t t = 0; t < n; ++t)
      sim[static_cast<std::size_t>(c)].push_back(dot(mu, C, D, h, c, x, T, H, b, x0 + t, xh));
  if (rule == RoutingRule::Nearest) {
    for (index_t t = 0; t < n; ++t) {
      std::vector<double> col;
      for (index_t c = 0; c < C; ++c)
        col.push_back(sim[static_cast<std::size_t>(c)][static_cast<std::size_t>(t)]);
      std::vector<double> sorted = col;
      std::sort(sorted.rbegin(), sorted.rend());
      if (C > 1 && sorted[0] - sorted[1] < 1e-9) {
        ++skipped;
        continue;
      }
      const auto best = std::max_element(col.begin(), col.end()) - col.begin();
      EXPECT_EQ(words[static_cast<std::size_t>(base + t)], std::uint64_t{1} << best)
          << "token " << t;
    }
    return skipped;
  }
  for (index_t c = 0; c < C; ++c) {
    std::vector<double> s = sim[static_cast<std::size_t>(c)];
    std::vector<double> sorted = s;
    std::sort(sorted.rbegin(), sorted.rend());
    const index_t k = std::min(w, n);
    const double cut = sorted[static_cast<std::size_t>(k - 1)];
    const double next = k < n ? sorted[static_cast<std::size_t>(k)] : -INFINITY;
    for (index_t t = 0; t < n; ++t) {
      const double v = s[static_cast<std::size_t>(t)];
      const bool in = (words[static_cast<std::size_t>(base + t)] >> c) & 1u;
      const bool tie = cut - next < 1e-9 && (std::abs(v - cut) < 1e-9 || std::abs(v - next) < 1e-9);
      if (tie) {  // the w-th and (w+1)-th similarities (near) equal: either may be in
        ++skipped;
        continue;
      }
      EXPECT_EQ(in, v >= cut) << "cluster " << c << " token " << t;
    }
  }
  return skipped;
}

TEST(RoutingAssign, MatchesNaiveRules) {
  for (const bool varlen : {false, true})
    for (const RoutingRule rule : {RoutingRule::Nearest, RoutingRule::Balanced}) {
      SCOPED_TRACE("varlen " + std::to_string(varlen) + " rule " +
                   std::to_string(static_cast<int>(rule)));
      const index_t B = varlen ? 1 : 2, T = 150, HQ = 4, HKV = 2, D = 16, C = 5, w = 20;
      SoftmaxData x({.B = B, .T = T, .S = T, .HQ = HQ, .HKV = HKV, .D = D, .Dv = D}, {}, 61);
      if (varlen) x.cu_seqlens = {0, 60, 150};
      const std::vector<float> mu = centroids(HQ, C, D, 62);
      const RoutingAssignment a = softmax::assign_routing(x.inputs(), cview(mu, HQ, C, D), rule, w);
      index_t skipped = 0;
      for (const Seq& s : sequences(x))
        for (index_t h = 0; h < HQ; ++h) {
          skipped += check_words(a.q, (s.b * HQ + h) * T + s.q0, rule, w, mu, C, D, h, x.q, T, HQ,
                                 s.b, s.q0, s.nq, h);
          skipped += check_words(a.k, (s.b * HQ + h) * T + s.k0, rule, w, mu, C, D, h, x.k, T, HKV,
                                 s.b, s.k0, s.nk, h / (HQ / HKV));
        }
      EXPECT_LT(skipped, 5);
      // Keys from the queries: the same words.
      const RoutingAssignment shared =
          softmax::assign_routing(x.inputs(), cview(mu, HQ, C, D), rule, w, RoutingSource::Queries);
      EXPECT_EQ(shared.k, shared.q);
      EXPECT_EQ(shared.q, a.q);
    }
}

TEST(RoutingMask, TileClassesAgreeWithTheRule) {
  SoftmaxData x({.B = 1, .T = 200, .S = 200, .HQ = 1, .HKV = 1, .D = 8, .Dv = 8}, {}, 63);
  const std::vector<float> mu = centroids(1, 4, 8, 64);
  index_t skips = 0, fulls = 0;
  for (const RoutingRule rule : {RoutingRule::Nearest, RoutingRule::Balanced}) {
    const RoutingAssignment a =
        softmax::assign_routing(x.inputs(), cview(mu, 1, 4, 8), rule, 30, RoutingSource::Queries);
    const softmax::RoutingMask m{&a};
    const auto bound = m.bind(softmax::HeadContext{0, 0, 0, 0, 0, 0, 200, 200});
    for (const index_t tq : {index_t{1}, index_t{4}, index_t{64}})
      for (const index_t tk : {index_t{1}, index_t{5}, index_t{64}})
        for (index_t r0 = 0; r0 < 200; r0 += tq)
          for (index_t j0 = 0; j0 < 200; j0 += tk) {
            const index_t r1 = std::min<index_t>(r0 + tq, 200),
                          j1 = std::min<index_t>(j0 + tk, 200);
            bool any = false, all = true;
            for (index_t r = r0; r < r1; ++r)
              for (index_t j = j0; j < j1; ++j) {
                const bool v =
                    (a.q[static_cast<std::size_t>(r)] & a.k[static_cast<std::size_t>(j)]) != 0;
                ASSERT_EQ(bound.visible(r, r, j), v);
                any = any || v;
                all = all && v;
              }
            const auto c = bound.classify(softmax::RowRange{r0, r1, 0}, softmax::KeyRange{j0, j1});
            if (c == softmax::TileClass::Skip) {
              EXPECT_FALSE(any);
              ++skips;
            }
            if (c == softmax::TileClass::Full) {
              EXPECT_TRUE(all);
              ++fulls;
            }
          }
  }
  EXPECT_GT(skips, 0);
  EXPECT_GT(fulls, 0);
}

std::vector<double> reference_o(const SoftmaxData& x, const SoftmaxOptions& opt,
                                const RoutingAssignment& a) {
  std::vector<double> o(x.out_size(), NAN);
  reference::routing_attention(x.inputs(), opt, a.q, a.k,
                               bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
  return o;
}
std::vector<float> kernel_o(const SoftmaxData& x, const SoftmaxOptions& opt,
                            const RoutingAssignment& a) {
  std::vector<float> o(x.out_size(), kSentinel);
  softmax::routing_attention(x.inputs(), opt, a, bthd(o.data(), x.s.B, x.s.T, x.s.HQ, x.s.Dv));
  return o;
}

TEST(RoutingAttention, MatchesReference) {
  for (const bool varlen : {false, true})
    for (const RoutingRule rule : {RoutingRule::Nearest, RoutingRule::Balanced})
      for (const bool causal : {false, true}) {
        SCOPED_TRACE("varlen " + std::to_string(varlen) + " rule " +
                     std::to_string(static_cast<int>(rule)) + " causal " + std::to_string(causal));
        const index_t B = varlen ? 1 : 2, T = 96, HQ = 4, HKV = 2, D = 16, C = 6;
        SoftmaxData x({.B = B, .T = T, .S = T, .HQ = HQ, .HKV = HKV, .D = D, .Dv = 24}, {}, 65);
        if (varlen) x.cu_seqlens = {0, 50, 96};
        const std::vector<float> mu = centroids(HQ, C, D, 66);
        const RoutingAssignment a =
            softmax::assign_routing(x.inputs(), cview(mu, HQ, C, D), rule, 20);
        SoftmaxOptions opt;
        opt.causal = causal;
        EXPECT_LT(rel_rmse(kernel_o(x, opt, a), reference_o(x, opt, a)), kRelRmseBound);
      }
}

TEST(RoutingAttention, DecodeRowsEqualThePrefill) {
  const index_t T = 130, HQ = 2, D = 16, C = 4;
  SoftmaxData full({.B = 1, .T = T, .S = T, .HQ = HQ, .HKV = 1, .D = D, .Dv = D}, {}, 67);
  const std::vector<float> mu = centroids(HQ, C, D, 68);
  const RoutingAssignment a =
      softmax::assign_routing(full.inputs(), cview(mu, HQ, C, D), RoutingRule::Nearest);
  SoftmaxOptions causal;
  causal.causal = true;
  const std::vector<float> prefill = kernel_o(full, causal, a);
  for (const index_t n : {index_t{1}, index_t{9}}) {
    SoftmaxData part({.B = 1, .T = n, .S = T, .HQ = HQ, .HKV = 1, .D = D, .Dv = D}, {}, 67);
    part.q.assign(full.q.end() - static_cast<std::ptrdiff_t>(n * HQ * D), full.q.end());
    RoutingAssignment d = a;  // the last n queries' words, every key's
    d.T = n;
    d.q.clear();
    for (index_t h = 0; h < HQ; ++h)
      d.q.insert(d.q.end(), a.q.begin() + (h * T + T - n), a.q.begin() + (h + 1) * T);
    const std::vector<float> rows(prefill.end() - static_cast<std::ptrdiff_t>(n * HQ * D),
                                  prefill.end());
    EXPECT_LT(rel_rmse(kernel_o(part, causal, d), rows), 1e-6) << n;
  }
}

TEST(RoutingCentroids, EmaStepMatchesFormula) {
  const index_t B = 2, T = 40, HQ = 2, C = 3, D = 8;
  const std::vector<float> mu0 = centroids(HQ, C, D, 69);
  softmax::RoutingCentroids cent(HQ, C, D, mu0);
  std::vector<double> n(static_cast<std::size_t>(HQ * C), 0.0), s(mu0.begin(), mu0.end());
  std::vector<float> mu = mu0;
  for (int step = 0; step < 2; ++step) {
    const std::vector<float> x = test::random_vector(static_cast<std::size_t>(B * T * HQ * D),
                                                     70 + static_cast<std::uint64_t>(step));
    const double decay = 0.9, eps = 1e-5;
    cent.update(bthd(x.data(), B, T, HQ, D), decay, eps);
    for (index_t h = 0; h < HQ; ++h) {
      std::vector<double> cnt(static_cast<std::size_t>(C), 0.0),
          dw(static_cast<std::size_t>(C * D), 0.0);
      for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < T; ++t) {
          index_t best = 0;
          for (index_t c = 1; c < C; ++c)
            if (dot(mu, C, D, h, c, x, T, HQ, b, t, h) > dot(mu, C, D, h, best, x, T, HQ, b, t, h))
              best = c;
          cnt[static_cast<std::size_t>(best)] += 1;
          for (index_t e = 0; e < D; ++e)
            dw[static_cast<std::size_t>(best * D + e)] +=
                x[static_cast<std::size_t>(((b * T + t) * HQ + h) * D + e)];
        }
      double total = 0.0;
      for (index_t c = 0; c < C; ++c) {
        auto& nc = n[static_cast<std::size_t>(h * C + c)];
        nc = decay * nc + (1 - decay) * cnt[static_cast<std::size_t>(c)];
        total += nc;
        for (index_t e = 0; e < D; ++e) {
          auto& sc = s[static_cast<std::size_t>((h * C + c) * D + e)];
          sc = decay * sc + (1 - decay) * dw[static_cast<std::size_t>(c * D + e)];
        }
      }
      for (index_t c = 0; c < C; ++c) {
        const double sm =
            (n[static_cast<std::size_t>(h * C + c)] + eps) / (total + C * eps) * total;
        EXPECT_NEAR(cent.count(h, c), n[static_cast<std::size_t>(h * C + c)], 1e-12);
        for (index_t e = 0; e < D; ++e) {
          const double want = s[static_cast<std::size_t>((h * C + c) * D + e)] / sm;
          mu[static_cast<std::size_t>((h * C + c) * D + e)] = static_cast<float>(want);
          EXPECT_NEAR(cent.means()(h, c, e), want, 1e-6 * (1 + std::abs(want)));
        }
      }
    }
  }
}

TEST(RoutingAttention, BadArgumentsThrowNamedErrorOutputUntouched) {
  SoftmaxData x({.B = 1, .T = 30, .S = 30, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 71);
  SoftmaxData shorter({.B = 1, .T = 20, .S = 30, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 71);
  const std::vector<float> mu = centroids(2, 3, 8, 72), mu65(2 * 65 * 8, 0.f), mu_d(2 * 3 * 7);
  const RoutingAssignment a =
      softmax::assign_routing(x.inputs(), cview(mu, 2, 3, 8), RoutingRule::Nearest);
  expect_error("centroids", [&] {
    softmax::assign_routing(x.inputs(), cview(mu65, 2, 65, 8), RoutingRule::Nearest);
  });
  expect_error("centroids", [&] {
    softmax::assign_routing(x.inputs(), cview(mu_d, 2, 3, 7), RoutingRule::Nearest);
  });
  expect_error("window", [&] {
    softmax::assign_routing(x.inputs(), cview(mu, 2, 3, 8), RoutingRule::Balanced, 0);
  });
  expect_error("k", [&] {
    softmax::assign_routing(shorter.inputs(), cview(mu, 2, 3, 8), RoutingRule::Nearest, 0,
                            RoutingSource::Queries);
  });
  std::vector<float> o(shorter.out_size(), kSentinel);
  expect_error("routing", [&] {  // assignment for T = 30, the call has 20
    softmax::routing_attention(shorter.inputs(), {}, a, bthd(o.data(), 1, 20, 2, 8));
  });
  for (const float v : o) ASSERT_EQ(v, kSentinel);
  softmax::RoutingCentroids cent(2, 3, 8, mu);
  const std::vector<float> xs(1 * 30 * 2 * 8, 0.5f);
  expect_error("decay", [&] { cent.update(bthd(xs.data(), 1, 30, 2, 8), 1.5); });
  expect_error("x", [&] { cent.update(bthd(xs.data(), 1, 40, 2, 6), 0.5); });
  EXPECT_EQ(cent.means()(1, 2, 7), mu[2 * 3 * 8 - 1]);  // untouched
  expect_error("centroids", [&] { softmax::RoutingCentroids(2, 3, 8, mu_d); });
}

}  // namespace
