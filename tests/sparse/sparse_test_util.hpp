// tests/sparse/sparse_test_util.hpp — inputs and naive block-mask builders for the selector
// tests, written from the definitions in include/polyattn/sparse/*.hpp token by token (not from
// the library's geometry code): candidate blocks come from testing every (query, key) pair,
// pooled scores are formed in double from the raw tensors.
//
// An expected mask is a pair of byte sets per (b, h, qb): `req` (must be selected) ⊆ `allow`
// (may be selected). For the static selectors they are equal; for the score-based ones blocks
// whose naive double score lies within a tolerance of the selection boundary (near-ties that float
// scores may order either way) are allowed but not required.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/sparse/selector.hpp"

namespace polyattn::test::sparse_util {

// ---- inputs
// ---------------------------------------------------------------------------------------

struct Problem {
  index_t B = 1, T = 0, S = 0, HQ = 1, HKV = 1, D = 16, Dv = 16;
  std::vector<std::int64_t> cu;  // empty: no varlen
  Tensor<float, 4> q, k, v;

  SoftmaxInputs inputs() const {
    SoftmaxInputs in{.q = q.cview(), .k = k.cview(), .v = v.cview()};
    if (!cu.empty()) in.cu_seqlens = cu;
    return in;
  }
};

// Rows = 0.5 · uniform noise + an offset shared by the 32 consecutive tokens of a group, so that
// pooled block vectors (and thus block scores) differ clearly from block to block.
inline Tensor<float, 4> structured(std::array<index_t, 4> shape, std::uint64_t seed) {
  Tensor<float, 4> t(shape);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  const index_t B = shape[0], T = shape[1], H = shape[2], D = shape[3];
  std::vector<float> offset(static_cast<std::size_t>(D));
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h)
      for (index_t t0 = 0; t0 < T; t0 += 32) {
        for (auto& o : offset) o = u(rng);
        for (index_t i = t0; i < std::min(T, t0 + 32); ++i)
          for (index_t e = 0; e < D; ++e)
            t.data[static_cast<std::size_t>(((b * T + i) * H + h) * D + e)] =
                offset[static_cast<std::size_t>(e)] + 0.5f * u(rng);
      }
  return t;
}

inline Problem make_problem(index_t B, index_t T, index_t S, index_t HQ, index_t HKV, index_t D,
                            std::uint64_t seed, std::vector<std::int64_t> cu = {}) {
  Problem p;
  p.B = B, p.T = T, p.S = S, p.HQ = HQ, p.HKV = HKV, p.D = D, p.Dv = D;
  p.cu = std::move(cu);
  p.q = structured({B, T, HQ, D}, seed);
  p.k = structured({B, S, HKV, D}, seed + 1);
  p.v = random4({B, S, HKV, D}, seed + 2);
  return p;
}

// A shape and mask setting of the selector tests.
struct Case {
  const char* name;
  index_t B, T, S, HQ, HKV, D;
  std::vector<std::int64_t> cu;
  bool causal;
  index_t window;
  index_t block;

  Problem problem(std::uint64_t seed) const { return make_problem(B, T, S, HQ, HKV, D, seed, cu); }
  SoftmaxOptions options() const { return SoftmaxOptions{.causal = causal, .window = window}; }
};

// Awkward shapes: odd T, T ≠ S both ways, packed sequences that start inside blocks (one of them
// empty), a token window, blocks of 32 / 48 / 64, a single query (decode), GQA.
inline std::vector<Case> cases() {
  return {
      {"causal_T333_gqa", 1, 333, 333, 4, 2, 16, {}, true, 0, 64},
      {"causal_varlen", 1, 500, 500, 2, 1, 16, {0, 100, 100, 229, 500}, true, 0, 64},
      {"full_B2_block48", 2, 200, 200, 2, 2, 16, {}, false, 0, 48},
      {"causal_T70_S333", 1, 70, 333, 2, 1, 16, {}, true, 0, 64},
      {"causal_T200_S100", 1, 200, 100, 1, 1, 16, {}, true, 0, 32},
      {"full_T200_S100", 1, 200, 100, 1, 1, 16, {}, false, 0, 32},
      {"window100_block32", 1, 333, 333, 2, 2, 16, {}, true, 100, 32},
      {"decode_T1_S333", 2, 1, 333, 4, 1, 16, {}, true, 0, 64},
      {"varlen_full_block32", 1, 300, 300, 2, 1, 16, {0, 37, 150, 300}, false, 0, 32},
  };
}

// ---- naive geometry ---------------------------------------------------------------------------

// One (sequence, query block): its rows with their key positions, candidate and diagonal blocks.
struct Piece {
  index_t seq = 0, b = 0, qb = 0, k0 = 0, nk = 0;
  std::vector<index_t> rows, pos;  // packed query rows and their key positions π
  std::set<index_t> cand, diag;
};

inline std::vector<Piece> pieces(const Problem& p, const SoftmaxOptions& opt, index_t bs) {
  struct Seq {
    index_t b, q0, nq, k0, nk;
  };
  std::vector<Seq> seqs;
  if (p.cu.empty()) {
    for (index_t b = 0; b < p.B; ++b) seqs.push_back({b, 0, p.T, 0, p.S});
  } else {
    for (std::size_t n = 0; n + 1 < p.cu.size(); ++n)
      seqs.push_back({0, p.cu[n], p.cu[n + 1] - p.cu[n], p.cu[n], p.cu[n + 1] - p.cu[n]});
  }
  std::vector<Piece> out;
  for (index_t n = 0; n < static_cast<index_t>(seqs.size()); ++n) {
    const Seq& s = seqs[static_cast<std::size_t>(n)];
    for (index_t i = s.q0; i < s.q0 + s.nq; ++i) {
      const index_t qb = i / bs;
      if (out.empty() || out.back().seq != n || out.back().qb != qb) {
        Piece pc;
        pc.seq = n, pc.b = s.b, pc.qb = qb, pc.k0 = s.k0, pc.nk = s.nk;
        out.push_back(pc);
      }
      Piece& pc = out.back();
      const index_t pi = s.k0 + (i - s.q0) + s.nk - s.nq;
      pc.rows.push_back(i);
      pc.pos.push_back(pi);
      for (index_t j = s.k0; j < s.k0 + s.nk; ++j) {
        const bool before = j <= pi;
        const bool ok =
            (!opt.causal || before) && (opt.window == 0 || (before && j > pi - opt.window));
        if (ok) pc.cand.insert(j / bs);
      }
      if (pi >= s.k0 && pi < s.k0 + s.nk) pc.diag.insert(pi / bs);
    }
  }
  return out;
}

// Always-kept blocks of a piece, straight from the KeepOptions definitions.
inline std::set<index_t> kept(const Piece& pc, const ::polyattn::sparse::KeepOptions& keep,
                              index_t bs) {
  std::set<index_t> k;
  for (const index_t kb : pc.cand) {
    bool on = keep.diagonal && pc.diag.count(kb) > 0;
    on = on || (kb >= pc.k0 / bs && kb < pc.k0 / bs + keep.sink_blocks);
    for (const index_t d : pc.diag) on = on || std::abs(kb - d) < keep.local_blocks;
    if (on) k.insert(kb);
  }
  return k;
}

// ---- expected masks -----------------------------------------------------------------------------

struct Expected {
  index_t B = 0, HQ = 0, nqb = 0, nkb = 0;
  std::vector<char> req, allow;

  Expected(index_t B_, index_t HQ_, index_t nqb_, index_t nkb_)
      : B(B_),
        HQ(HQ_),
        nqb(nqb_),
        nkb(nkb_),
        req(static_cast<std::size_t>(B_ * HQ_ * nqb_ * nkb_), 0),
        allow(req) {}
  std::size_t at(index_t b, index_t h, index_t qb, index_t kb) const {
    return static_cast<std::size_t>(((b * HQ + h) * nqb + qb) * nkb + kb);
  }
  void require(index_t b, index_t h, index_t qb, index_t kb) {
    req[at(b, h, qb, kb)] = 1;
    allow[at(b, h, qb, kb)] = 1;
  }
  void permit(index_t b, index_t h, index_t qb, index_t kb) { allow[at(b, h, qb, kb)] = 1; }
};

inline Expected expected_for(const Problem& p, index_t bs) {
  return Expected(p.B, p.HQ, BlockMask::blocks_for(p.T, bs), BlockMask::blocks_for(p.S, bs));
}

// Fails (with the first few differences) unless req ⊆ mask ⊆ allow, shape included. Returns the
// number of selected blocks.
inline index_t expect_mask(const BlockMask& m, const Expected& e, index_t bs) {
  EXPECT_EQ(m.block_q(), bs);
  EXPECT_EQ(m.block_k(), bs);
  const std::array<index_t, 4> shape{e.B, e.HQ, e.nqb, e.nkb};
  EXPECT_EQ(m.shape(), shape);
  if (m.shape() != shape) return 0;
  index_t bad = 0, selected = 0;
  for (index_t b = 0; b < e.B; ++b)
    for (index_t h = 0; h < e.HQ; ++h)
      for (index_t qb = 0; qb < e.nqb; ++qb)
        for (index_t kb = 0; kb < e.nkb; ++kb) {
          const bool got = m.visible(b, h, qb, kb);
          selected += got ? 1 : 0;
          const bool ok = got ? e.allow[e.at(b, h, qb, kb)] != 0 : e.req[e.at(b, h, qb, kb)] == 0;
          if (!ok && bad++ < 8)
            ADD_FAILURE() << "block (b=" << b << ", h=" << h << ", qb=" << qb << ", kb=" << kb
                          << ") is " << (got ? "selected but not allowed" : "required but missing");
        }
  EXPECT_EQ(bad, 0) << "mismatching blocks";
  return selected;
}

// Static selectors: the same set for every head. `extra(piece, kb)` is the selector's own rule.
inline Expected expected_static(const Problem& p, const SoftmaxOptions& opt, index_t bs,
                                const ::polyattn::sparse::KeepOptions& keep,
                                const std::function<bool(const Piece&, index_t)>& extra) {
  Expected e = expected_for(p, bs);
  for (const Piece& pc : pieces(p, opt, bs)) {
    const std::set<index_t> k = kept(pc, keep, bs);
    for (const index_t kb : pc.cand)
      if (k.count(kb) > 0 || extra(pc, kb))
        for (index_t h = 0; h < p.HQ; ++h) e.require(pc.b, h, pc.qb, kb);
  }
  return e;
}

// ---- naive pooled scores ------------------------------------------------------------------------

inline double phi(double x, bool elu) {
  return !elu ? x : (x > 0 ? x + 1.0 : std::exp(x));
}

// score(kb) for every candidate of a piece and query head h, in double:
//   scale · mean_{rows} φ(q) · pool_{keys of kb in the sequence} φ(k)   (pool: mean or sum)
inline std::vector<std::pair<index_t, double>> naive_scores(const Problem& p, const Piece& pc,
                                                            index_t h, index_t bs, bool elu,
                                                            bool mean_keys) {
  const index_t hk = h / (p.HQ / p.HKV);
  const double scale = 1.0 / std::sqrt(static_cast<double>(p.D));
  std::vector<double> qbar(static_cast<std::size_t>(p.D), 0.0);
  for (const index_t i : pc.rows)
    for (index_t e = 0; e < p.D; ++e)
      qbar[static_cast<std::size_t>(e)] +=
          phi(p.q.data[static_cast<std::size_t>(((pc.b * p.T + i) * p.HQ + h) * p.D + e)], elu);
  for (auto& x : qbar) x /= static_cast<double>(pc.rows.size());
  std::vector<std::pair<index_t, double>> out;
  for (const index_t kb : pc.cand) {
    std::vector<double> kbar(static_cast<std::size_t>(p.D), 0.0);
    index_t n = 0;
    for (index_t j = kb * bs; j < (kb + 1) * bs; ++j) {
      if (j < pc.k0 || j >= pc.k0 + pc.nk) continue;
      ++n;
      for (index_t e = 0; e < p.D; ++e)
        kbar[static_cast<std::size_t>(e)] +=
            phi(p.k.data[static_cast<std::size_t>(((pc.b * p.S + j) * p.HKV + hk) * p.D + e)], elu);
    }
    double s = 0.0;
    for (index_t e = 0; e < p.D; ++e)
      s += qbar[static_cast<std::size_t>(e)] * kbar[static_cast<std::size_t>(e)] /
           (mean_keys ? n : 1);
    out.emplace_back(kb, scale * s);
  }
  return out;
}

inline double tol(double s) {
  return 1e-4 * (1.0 + std::abs(s));
}

// Top-k over the candidates that are not kept: the best k by score; near-ties at the boundary
// are allowed either way.
inline Expected expected_top_k(const Problem& p, const SoftmaxOptions& opt, index_t bs,
                               const ::polyattn::sparse::KeepOptions& keep, index_t k, bool elu,
                               bool mean_keys) {
  Expected e = expected_for(p, bs);
  for (const Piece& pc : pieces(p, opt, bs)) {
    const std::set<index_t> kp = kept(pc, keep, bs);
    for (index_t h = 0; h < p.HQ; ++h) {
      for (const index_t kb : kp) e.require(pc.b, h, pc.qb, kb);
      auto sc = naive_scores(p, pc, h, bs, elu, mean_keys);
      std::erase_if(sc, [&](const auto& x) { return kp.count(x.first) > 0; });
      std::stable_sort(sc.begin(), sc.end(),
                       [](const auto& a, const auto& b) { return a.second > b.second; });
      const auto n = static_cast<std::size_t>(k);
      if (sc.size() <= n) {
        for (const auto& x : sc) e.require(pc.b, h, pc.qb, x.first);
        continue;
      }
      const double last_in = n > 0 ? sc[n - 1].second : std::numeric_limits<double>::infinity();
      const double first_out = sc[n].second;
      for (std::size_t c = 0; c < sc.size(); ++c) {
        const double s = sc[c].second;
        if (c < n && s > first_out + tol(first_out))
          e.require(pc.b, h, pc.qb, sc[c].first);
        else if (c < n || s >= last_in - tol(last_in))
          e.permit(pc.b, h, pc.qb, sc[c].first);
      }
    }
  }
  return e;
}

// Cumulative mass γ over all candidates (softmax of the scores), plus the kept blocks.
inline Expected expected_mass(const Problem& p, const SoftmaxOptions& opt, index_t bs,
                              const ::polyattn::sparse::KeepOptions& keep, double gamma) {
  Expected e = expected_for(p, bs);
  for (const Piece& pc : pieces(p, opt, bs)) {
    const std::set<index_t> kp = kept(pc, keep, bs);
    for (index_t h = 0; h < p.HQ; ++h) {
      for (const index_t kb : kp) e.require(pc.b, h, pc.qb, kb);
      auto sc = naive_scores(p, pc, h, bs, false, true);
      if (sc.empty()) continue;
      std::stable_sort(sc.begin(), sc.end(),
                       [](const auto& a, const auto& b) { return a.second > b.second; });
      double z = 0.0;
      for (const auto& x : sc) z += std::exp(x.second - sc.front().second);
      // Shortest prefixes reaching γ − 1e-6 and γ + 1e-6.
      std::size_t n1 = sc.size(), n2 = sc.size();
      double cum = 0.0;
      for (std::size_t c = 0; c < sc.size(); ++c) {
        cum += std::exp(sc[c].second - sc.front().second) / z;
        if (n1 == sc.size() && cum >= gamma - 1e-6) n1 = c + 1;
        if (n2 == sc.size() && cum >= gamma + 1e-6) n2 = c + 1;
      }
      double best_out = -std::numeric_limits<double>::infinity();  // best score after the prefix
      for (std::size_t c = n1; c < sc.size(); ++c) best_out = std::max(best_out, sc[c].second);
      const double last_in = sc[n2 - 1].second;
      for (std::size_t c = 0; c < sc.size(); ++c) {
        const double s = sc[c].second;
        if (c < n1 && s > best_out + tol(best_out))
          e.require(pc.b, h, pc.qb, sc[c].first);
        else if (c < n2 || s >= last_in - tol(last_in))
          e.permit(pc.b, h, pc.qb, sc[c].first);
      }
    }
  }
  return e;
}

// ---- NATTEN's neighbourhood, from its published window-start rule -------------------------------

// Non-causal (odd kernel, length ≥ kernel · dilation): NATTEN's get_window_start.
inline index_t natten_window_start(index_t index, index_t length, index_t kernel,
                                   index_t dilation) {
  const index_t ns = kernel / 2;
  if (dilation <= 1)
    return std::max<index_t>(index - ns, 0) + (index + ns >= length ? length - index - ns - 1 : 0);
  const index_t ni = index - ns * dilation;
  if (ni < 0) return index % dilation;
  if (index + ns * dilation >= length) {
    const index_t imodd = index % dilation;
    const index_t a = (length / dilation) * dilation;
    const index_t b = length - a;
    if (imodd < b) return length - b + imodd - 2 * ns * dilation;
    return a + imodd - kernel * dilation;
  }
  return ni;
}

// Whether j is a neighbour of x along an axis (window start + t·dilation, t < kernel; causal: the
// kernel positions x, x − δ, … that are ≥ 0; shorter axes: the whole dilation group).
inline bool natten_neighbor(index_t x, index_t j, index_t length, index_t kernel, index_t dilation,
                            bool causal) {
  if (causal) {
    if (j > x || (x - j) % dilation != 0) return false;
    return (x - j) / dilation < kernel;
  }
  // NATTEN requires length ≥ kernel · dilation; below that every dilation group has at most
  // `kernel` positions and the neighbourhood is the whole group.
  if (length < kernel * dilation) return (j - x) % dilation == 0;
  const index_t start = natten_window_start(x, length, kernel, dilation);
  if (j < start || (j - start) % dilation != 0) return false;
  return (j - start) / dilation < kernel;
}

}  // namespace polyattn::test::sparse_util
