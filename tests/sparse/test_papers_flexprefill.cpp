// tests/sparse/test_papers_flexprefill.cpp — FlexPrefillSelector (sparse/flexprefill.hpp): the
// per-head plan (vertical / slash estimates, JS divergence, the γ-covers V and O, the choice at τ)
// against a naive double computation from the tensors; the mask against a naive builder — kept
// blocks, MassSelector's rule for query-aware heads (expected_mass), and for vertical-slash heads
// every (query, key) pair of a block tested against V and O; τ chosen so that both kinds of head
// occur; the causal shapes of the selector tests (GQA, varlen, T ≠ S, decode, window);
// sparse_attention with it against the double reference; bad parameters throw a named
// polyattn::Error with the mask untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "polyattn/reference/softmax.hpp"
#include "polyattn/sparse/flexprefill.hpp"
#include "polyattn/sparse/operator.hpp"
#include "sparse/sparse_test_util.hpp"

namespace polyattn::test::sparse_util {
namespace {

namespace ps = ::polyattn::sparse;

struct NaiveHead {
  double divergence = 0.0;
  std::vector<double> av, as;           // per key / per offset
  std::vector<char> V, O;               // covers
  bool v_near = false, o_near = false;  // a cover's cut lies within 1e-9 of γ·total
};

struct Seq {
  index_t b, q0, nq, k0, nk;
};
std::vector<Seq> sequences(const Problem& p) {
  std::vector<Seq> s;
  if (p.cu.empty()) {
    for (index_t b = 0; b < p.B; ++b) s.push_back({b, 0, p.T, 0, p.S});
  } else {
    for (std::size_t n = 0; n + 1 < p.cu.size(); ++n)
      s.push_back({0, p.cu[n], p.cu[n + 1] - p.cu[n], p.cu[n], p.cu[n + 1] - p.cu[n]});
  }
  return s;
}

double at(const Tensor<float, 4>& t, index_t b, index_t i, index_t h, index_t e) {
  return t.data[static_cast<std::size_t>(((b * t.shape[1] + i) * t.shape[2] + h) * t.shape[3] + e)];
}

// γ-cover by sorting (value descending, index ascending), and whether the cut is a near-tie.
std::vector<char> naive_cover(const std::vector<double>& x, double gamma, bool& near) {
  std::vector<std::size_t> idx(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](auto a, auto b) { return x[a] > x[b]; });
  double total = 0.0;
  for (const double v : x) total += v;
  std::vector<char> in(x.size(), 0);
  double cum = 0.0;
  near = false;
  for (const std::size_t i : idx) {
    if (total <= 0.0) break;
    cum += x[i];
    in[i] = 1;
    if (std::abs(cum - gamma * total) < 1e-9) near = true;
    if (cum >= gamma * total) break;
  }
  return in;
}

NaiveHead naive_head(const Problem& p, const Seq& s, index_t h, index_t bs, double gamma) {
  const index_t hk = h / (p.HQ / p.HKV), D = p.D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  NaiveHead r;
  r.av.assign(static_cast<std::size_t>(s.nk), 0.0);
  r.as.assign(static_cast<std::size_t>(s.nk), 0.0);
  const index_t n = std::min(bs, s.nq);
  std::vector<double> qbar(static_cast<std::size_t>(D), 0.0);
  index_t rows = 0;
  for (index_t i = s.nq - n; i < s.nq; ++i) {
    for (index_t e = 0; e < D; ++e)
      qbar[static_cast<std::size_t>(e)] += at(p.q, s.b, s.q0 + i, h, e) / n;
    const index_t pos = i + s.nk - s.nq;
    if (pos < 0) continue;
    ++rows;
    std::vector<double> w(static_cast<std::size_t>(pos + 1));
    for (index_t j = 0; j <= pos; ++j) {
      double dot = 0.0;
      for (index_t e = 0; e < D; ++e)
        dot += at(p.q, s.b, s.q0 + i, h, e) * at(p.k, s.b, s.k0 + j, hk, e);
      w[static_cast<std::size_t>(j)] = scale * dot;
    }
    const double m = *std::max_element(w.begin(), w.end());
    double den = 0.0;
    for (double& x : w) den += x = std::exp(x - m);
    for (index_t j = 0; j <= pos; ++j) {
      r.av[static_cast<std::size_t>(j)] += w[static_cast<std::size_t>(j)] / den;
      r.as[static_cast<std::size_t>(pos - j)] += w[static_cast<std::size_t>(j)] / den;
    }
  }
  for (auto* v : {&r.av, &r.as})
    for (double& x : *v) x = rows > 0 ? x / rows : 0.0;
  const index_t nkb = n > 0 ? (s.nk + bs - 1) / bs : 0;
  std::vector<double> est(static_cast<std::size_t>(nkb)), pat(static_cast<std::size_t>(nkb), 0.0);
  for (index_t j = 0; j < s.nk && nkb > 0; ++j)
    pat[static_cast<std::size_t>(j / bs)] += r.av[static_cast<std::size_t>(j)];
  for (index_t kb = 0; kb < nkb; ++kb) {
    const index_t j0 = kb * bs, j1 = std::min(s.nk, j0 + bs);
    double dot = 0.0;
    for (index_t e = 0; e < D; ++e) {
      double kbar = 0.0;
      for (index_t j = j0; j < j1; ++j) kbar += at(p.k, s.b, s.k0 + j, hk, e) / (j1 - j0);
      dot += qbar[static_cast<std::size_t>(e)] * kbar;
    }
    est[static_cast<std::size_t>(kb)] = scale * dot;
  }
  if (nkb > 0) {
    const double m = *std::max_element(est.begin(), est.end());
    double den = 0.0;
    for (double& x : est) den += x = std::exp(x - m);
    double js = 0.0;
    for (std::size_t kb = 0; kb < est.size(); ++kb) {
      const double a = est[kb] / den, b = pat[kb], mid = (a + b) / 2;
      if (a > 0) js += 0.5 * a * std::log(a / mid);
      if (b > 0) js += 0.5 * b * std::log(b / mid);
    }
    r.divergence = std::sqrt(std::max(0.0, js));
  }
  r.V = naive_cover(r.av, gamma, r.v_near);
  r.O = naive_cover(r.as, gamma, r.o_near);
  return r;
}

// A problem whose attention follows slashes: keys uniform in [-1, 1), query i of head h copies
// (×12) the key δ_h positions before its own (δ_h = 1, 2·block − 1, 3, 40 by head), so that the
// slash set is small and its block boundaries matter (δ = 1 and 2·block − 1 sit on the two offset
// bounds of the block left of the diagonal).
Problem sharp(const Case& c, std::uint64_t seed) {
  Problem p = c.problem(seed);
  p.k = random4({p.B, p.S, p.HKV, p.D}, seed + 7);  // unrelated keys: one clear peak per query
  const index_t delta[] = {1, 2 * c.block - 1, 3, 40};
  for (const Seq& s : sequences(p))
    for (index_t i = 0; i < s.nq; ++i)
      for (index_t h = 0; h < p.HQ; ++h) {
        const index_t j = i + s.nk - s.nq - delta[h % 4];
        if (j < 0 || j >= s.nk) continue;
        for (index_t e = 0; e < p.D; ++e)
          p.q.data[static_cast<std::size_t>(((s.b * p.T + s.q0 + i) * p.HQ + h) * p.D + e)] =
              12.f * static_cast<float>(at(p.k, s.b, s.k0 + j, h / (p.HQ / p.HKV), e));
      }
  return p;
}

std::vector<Case> causal_cases() {
  std::vector<Case> c;
  for (const Case& x : cases())
    if (x.causal) c.push_back(x);
  return c;
}

// τ between two middle divergences: both kinds of head, no head near τ.
double split_tau(const std::vector<ps::FlexPrefillHead>& heads) {
  std::vector<double> d;
  for (const auto& h : heads) d.push_back(h.divergence);
  std::sort(d.begin(), d.end());
  if (d.size() < 2) return 0.5;
  const std::size_t m = d.size() / 2;
  return 0.5 * (d[m - 1] + d[m]);
}

TEST(FlexPrefillPlan, MatchesNaive) {
  for (const Case& c : causal_cases())
    for (const double gamma : {0.5, 0.9}) {
      SCOPED_TRACE(std::string(c.name) + " gamma " + std::to_string(gamma));
      const Problem p = c.problem(51);
      const ps::FlexPrefillSelector sel{.block = c.block, .gamma = gamma};
      const auto heads = sel.plan(p.inputs(), c.options());
      const auto seqs = sequences(p);
      ASSERT_EQ(heads.size(), seqs.size() * static_cast<std::size_t>(p.HQ));
      for (std::size_t s = 0; s < seqs.size(); ++s)
        for (index_t h = 0; h < p.HQ; ++h) {
          const auto& got = heads[s * static_cast<std::size_t>(p.HQ) + static_cast<std::size_t>(h)];
          const NaiveHead want = naive_head(p, seqs[s], h, c.block, gamma);
          EXPECT_NEAR(got.divergence, want.divergence, 1e-9 * (1 + want.divergence));
          EXPECT_FALSE(got.query_aware);  // τ = 0
          ASSERT_EQ(got.vertical.size(), want.av.size());
          for (std::size_t j = 0; j < want.av.size(); ++j) {
            EXPECT_NEAR(got.vertical[j], want.av[j], 1e-12);
            EXPECT_NEAR(got.slash[j], want.as[j], 1e-12);
            if (!want.v_near) {
              EXPECT_EQ(got.in_v[j] != 0, want.V[j] != 0) << "key " << j;
            }
            if (!want.o_near) {
              EXPECT_EQ(got.in_o[j] != 0, want.O[j] != 0) << "offset " << j;
            }
          }
        }
      // τ splits the heads: the flags follow d_JS < τ.
      const double tau = split_tau(heads);
      const ps::FlexPrefillSelector split{.block = c.block, .gamma = gamma, .tau = tau};
      index_t aware = 0;
      for (const auto& h : split.plan(p.inputs(), c.options())) {
        EXPECT_EQ(h.query_aware, h.divergence < tau);
        aware += h.query_aware;
      }
      if (heads.size() >= 2) {
        EXPECT_GT(aware, 0);
      }
    }
}

TEST(FlexPrefillSelector, MaskMatchesNaive) {
  index_t sparse_rows = 0;  // vertical-slash rows that drop a candidate: the rule is exercised
  for (const Case& c : causal_cases())
    for (const bool peaked : {false, true})
      for (const double gamma : {0.5, 0.9}) {
        SCOPED_TRACE(std::string(c.name) + " gamma " + std::to_string(gamma) + " peaked " +
                     std::to_string(peaked));
        const Problem p = peaked ? sharp(c, 52) : c.problem(52);
        const ps::FlexPrefillSelector probe{.block = c.block, .gamma = gamma};
        const double tau = split_tau(probe.plan(p.inputs(), c.options()));
        const ps::FlexPrefillSelector sel{.block = c.block, .gamma = gamma, .tau = tau};
        const auto heads = sel.plan(p.inputs(), c.options());
        const Expected mass = expected_mass(p, c.options(), c.block, sel.keep, gamma);
        Expected e = expected_for(p, c.block);
        const auto seqs = sequences(p);
        for (const Piece& pc : pieces(p, c.options(), c.block)) {
          const std::set<index_t> kp = kept(pc, sel.keep, c.block);
          const Seq& s = seqs[static_cast<std::size_t>(pc.seq)];
          for (index_t h = 0; h < p.HQ; ++h) {
            const auto& head = heads[static_cast<std::size_t>(pc.seq * p.HQ + h)];
            for (const index_t kb : kp) e.require(pc.b, h, pc.qb, kb);
            if (head.query_aware) {  // MassSelector's rule on this row
              for (index_t kb = 0; kb < e.nkb; ++kb) {
                if (mass.req[mass.at(pc.b, h, pc.qb, kb)]) e.require(pc.b, h, pc.qb, kb);
                if (mass.allow[mass.at(pc.b, h, pc.qb, kb)]) e.permit(pc.b, h, pc.qb, kb);
              }
              continue;
            }
            const NaiveHead nh = naive_head(p, s, h, c.block, gamma);
            for (const index_t kb : pc.cand) {
              bool hit = false;
              for (const index_t pi : pc.pos)
                for (index_t j = std::max(kb * c.block, s.k0);
                     j < std::min((kb + 1) * c.block, s.k0 + s.nk) && j <= pi; ++j)
                  hit = hit || nh.V[static_cast<std::size_t>(j - s.k0)] ||
                        nh.O[static_cast<std::size_t>(pi - j)];
              if (hit) e.require(pc.b, h, pc.qb, kb);
              sparse_rows += !hit && kp.count(kb) == 0;
            }
          }
        }
        BlockMask m;
        sel.select(p.inputs(), c.options(), m);
        const index_t kept_blocks = expect_mask(m, e, c.block);
        EXPECT_GT(kept_blocks, 0);
      }
  EXPECT_GT(sparse_rows, 20);
}

TEST(FlexPrefillSelector, SparseAttentionMatchesReferenceWithItsMask) {
  for (const Case& c : causal_cases()) {
    const Problem p = c.problem(53);
    const ps::FlexPrefillSelector sel{.block = c.block, .gamma = 0.8, .tau = 0.3};
    Tensor<float, 4> o({p.B, p.T, p.HQ, p.Dv}, -7777.f);
    BlockMask mask;
    ps::sparse_attention(sel, p.inputs(), c.options(), o.view(), mask);
    SoftmaxOptions opt = c.options();
    opt.block_mask = &mask;
    Tensor<double, 4> want({p.B, p.T, p.HQ, p.Dv});
    reference::softmax_attention(p.inputs(), opt, want.view());
    EXPECT_LT(rel_rmse(o.data, want.data), kRelRmseBound) << c.name;
  }
}

TEST(FlexPrefillSelector, BadArgumentsThrowNamedErrorMaskUntouched) {
  const Case c = causal_cases()[0];
  const Problem p = c.problem(54);
  const auto expect = [&](const ps::FlexPrefillSelector& sel, const SoftmaxOptions& opt,
                          const std::string& name) {
    BlockMask m = BlockMask::for_lengths(1, 1, 64, 64, 64, 64);
    const std::vector<std::uint8_t> before = m.bytes();
    try {
      sel.select(p.inputs(), opt, m);
      ADD_FAILURE() << "no error, expected " << name;
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), name) << e.what();
    }
    EXPECT_EQ(m.bytes(), before);
  };
  expect({.gamma = 0.0}, c.options(), "gamma");
  expect({.gamma = 1.5}, c.options(), "gamma");
  expect({.tau = NAN}, c.options(), "tau");
  expect({}, SoftmaxOptions{}, "opt");  // not causal
  expect({.block = 0}, c.options(), "block_size");
  expect({.keep = {.local_blocks = -2}}, c.options(), "local_blocks");
}

}  // namespace
}  // namespace polyattn::test::sparse_util
