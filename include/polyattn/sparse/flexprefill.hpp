// polyattn/sparse/flexprefill.hpp — FlexPrefill's per-head choice between the vertical-slash
// pattern and query-aware selection (Lai et al. 2025, "FlexPrefill: A Context-Aware Sparse
// Attention Mechanism for Efficient Long-Sequence Inference", §3, Algorithms 1–3; authors' code
// github.com/bytedance/FlexPrefill, flex_prefill/ops/flex_prefill_attention.py,
// get_active_blocks).
//
// Per (sequence, query head h), from the sequence's last n = min(block, nq) queries Q̂ (rows at
// key positions p, kv head h / (HQ/HKV)), in double:
//   Â_ij   = causal softmax over the sequence's keys j ≤ p of scale·q_i·k_j     (i ∈ Q̂)
//   vertical a_v[j] = (1/n) Σ_i Â_ij                  (per key j of the sequence)
//   slash    a_s[d] = (1/n) Σ_i Â_{i, p_i − d}        (per offset d = p − j ≥ 0)
//   pattern estimate  ā_K = Σ_{j∈K} a_v[j]                    (per key block K of the sequence)
//   pooled estimate   â_K = softmax_K(scale · mean_{i∈Q̂} q_i · mean_{j∈K} k_j)   (every key block)
//   divergence d_JS = sqrt(½ Σ â log(â/m) + ½ Σ ā log(ā/m)),  m = (â + ā)/2  (0·log 0 = 0)
// The head is query-aware when d_JS < τ, else vertical-slash:
//   query-aware     each query block keeps the shortest prefix, by pooled score, of its candidates
//                   holding a fraction γ of their estimated mass (MassSelector's rule)
//   vertical-slash  V = the fewest keys, by a_v descending (ties to the lower index), whose a_v
//                   sum reaches γ·Σ a_v; O likewise for offsets by a_s. A block (rows R, keys K) is
//                   kept when some row i ∈ R and key j ∈ K with j ≤ p_i has j ∈ V or p_i − j ∈ O.
// Plus the KeepOptions (default: diagonal and the first key block, FlexPrefill's "first vertical
// and last slash block"), all within the candidates (selector.hpp). τ ≤ 0 makes every head
// vertical-slash (the authors' default τ = 0), τ > 1 every head query-aware.
//
// Differences from the authors' code: it sizes the vertical / slash sets in whole blocks
// (⌊count / 128⌋ + 1 of the top block sums, clamped to a token budget) and covers γ over all query
// blocks at once for query-aware heads; here the sets are the paper's token-level ones and γ is
// per query block. No budgets. Needs opt.causal (FlexPrefill is a causal prefill method).
// Cost: O(n·S·D) per head for the estimate, plus MassSelector's pooled scores.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/sparse/mass.hpp"
#include "polyattn/sparse/pooled.hpp"
#include "polyattn/sparse/selector.hpp"

namespace polyattn::sparse {

/// FlexPrefill's decision for one (sequence, query head).
struct FlexPrefillHead {
  double divergence = 0.0;  // d_JS
  bool query_aware = false;
  std::vector<double> vertical, slash;      // a_v [nk], a_s [nk]
  std::vector<std::uint8_t> in_v, in_o;     // V and O as bytes [nk]
  std::vector<index_t> v_prefix, o_prefix;  // prefix counts of in_v / in_o [nk + 1]

  /// Whether V has a key in [a, b] / O an offset in [a, b] (sequence-relative, clamped).
  bool any_vertical(index_t a, index_t b) const noexcept { return count(v_prefix, a, b) > 0; }
  bool any_slash(index_t a, index_t b) const noexcept { return count(o_prefix, a, b) > 0; }

 private:
  static index_t count(const std::vector<index_t>& pre, index_t a, index_t b) noexcept {
    const index_t n = static_cast<index_t>(pre.size()) - 1;
    a = std::max<index_t>(a, 0);
    b = std::min(b, n - 1);
    return a > b ? 0 : pre[static_cast<std::size_t>(b + 1)] - pre[static_cast<std::size_t>(a)];
  }
};

namespace detail {

// The fewest entries, by value descending (ties to the lower index), whose sum reaches
// gamma · the total; bytes [x.size()].
inline std::vector<std::uint8_t> cover(const std::vector<double>& x, double gamma) {
  std::vector<index_t> order(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) order[i] = static_cast<index_t>(i);
  std::sort(order.begin(), order.end(), [&x](index_t a, index_t b) {
    const double xa = x[static_cast<std::size_t>(a)], xb = x[static_cast<std::size_t>(b)];
    return xa > xb || (xa == xb && a < b);
  });
  double total = 0.0;
  for (const double v : x) total += v;
  std::vector<std::uint8_t> in(x.size(), 0);
  double cum = 0.0;
  for (const index_t i : order) {
    if (total <= 0.0) break;
    cum += x[static_cast<std::size_t>(i)];
    in[static_cast<std::size_t>(i)] = 1;
    if (cum >= gamma * total) break;
  }
  return in;
}

inline std::vector<index_t> prefix(const std::vector<std::uint8_t>& in) {
  std::vector<index_t> p(in.size() + 1, 0);
  for (std::size_t i = 0; i < in.size(); ++i) p[i + 1] = p[i] + in[i];
  return p;
}

}  // namespace detail

struct FlexPrefillSelector {
  index_t block = kDefaultBlock;
  double gamma = 0.9;  // coverage of the vertical / slash mass and of the query-aware mass, (0, 1]
  double tau = 0.0;    // d_JS < tau: query-aware head
  KeepOptions keep{.diagonal = true, .sink_blocks = 1, .local_blocks = 0};

  index_t block_size() const noexcept { return block; }

  /// The decisions of every (sequence, query head): [num_seqs · HQ], sequence-major.
  /// @throws polyattn::Error ("gamma", "tau", "opt" unless causal, and the inputs' checks)
  template <Executor E = Serial>
  std::vector<FlexPrefillHead> plan(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                                    const E& exec = E{}) const {
    check(opt);
    const SelectionPlan sp(in, opt, block);
    return plan(sp, in, exec);
  }

  template <Executor E = Serial>
  void select(const SoftmaxInputs& in, const SoftmaxOptions& opt, BlockMask& out,
              const E& exec = E{}) const {
    check(opt);
    const SelectionPlan sp(in, opt, block);
    const std::vector<FlexPrefillHead> heads = plan(sp, in, exec);
    const PooledBlocks pooled(sp, in, Feature::Identity, KeyPool::Mean, exec);
    const index_t HQ = sp.dims().HQ;
    const double g = gamma;
    fill_mask(sp, keep, out, exec,
              [&](const BlockRow& r, index_t h, std::uint8_t* marks, RowScratch& s) {
                const FlexPrefillHead& fh = heads[static_cast<std::size_t>(r.seq * HQ + h)];
                if (fh.query_aware) {
                  pooled.scores(r, h, s.scores.data());
                  mark_mass(r, s.scores.data(), g, marks, s);
                  return;
                }
                // Sequence-relative positions of the rows and of each candidate block's keys.
                const index_t p0 = r.p_first - r.k0, p1 = r.p_last - r.k0;
                for (index_t kb = r.lo; kb <= r.hi; ++kb) {
                  const index_t a = std::max(kb * sp.block(), r.k0) - r.k0;
                  const index_t b = std::min((kb + 1) * sp.block(), r.k0 + r.nk) - 1 - r.k0;
                  if (a > p1) continue;  // wholly above the diagonal
                  if (fh.any_vertical(a, std::min(b, p1)) ||
                      fh.any_slash(std::max<index_t>(0, p0 - b), p1 - a))
                    marks[kb] = 1;
                }
              });
  }

 private:
  void check(const SoftmaxOptions& opt) const {
    check_keep(keep);
    if (!(gamma > 0.0 && gamma <= 1.0))
      throw Error("gamma", "must be in (0, 1], got " + std::to_string(gamma));
    if (std::isnan(tau)) throw Error("tau", "must not be NaN");
    if (!opt.causal) throw Error("opt", "FlexPrefill needs causal attention");
  }

  template <Executor E>
  std::vector<FlexPrefillHead> plan(const SelectionPlan& sp, const SoftmaxInputs& in,
                                    const E& exec) const {
    const SoftmaxDims& d = sp.dims();
    std::vector<FlexPrefillHead> heads(static_cast<std::size_t>(sp.num_seqs() * d.HQ));
    exec.parallel_for(sp.num_seqs() * d.HQ, [&](std::int64_t item) {
      const index_t s = item / d.HQ, h = item % d.HQ, hk = h / d.group;
      const SeqSpan& q = sp.seqs()[static_cast<std::size_t>(s)];
      FlexPrefillHead& fh = heads[static_cast<std::size_t>(item)];
      const index_t nk = q.nk;
      fh.vertical.assign(static_cast<std::size_t>(nk), 0.0);
      fh.slash.assign(static_cast<std::size_t>(nk), 0.0);
      const index_t n = std::min(block, q.nq);
      std::vector<double> row(static_cast<std::size_t>(nk)), qmean(static_cast<std::size_t>(d.D));
      index_t rows = 0;
      for (index_t i = q.nq - n; i < q.nq; ++i) {
        const index_t p = i + nk - q.nq;  // sequence-relative key position
        for (index_t e = 0; e < d.D; ++e)
          qmean[static_cast<std::size_t>(e)] += in.q(q.b, q.q0 + i, h, e);
        if (p < 0) continue;  // sees no key
        ++rows;
        double m = -INFINITY;
        for (index_t j = 0; j <= p; ++j) {
          double dot = 0.0;
          for (index_t e = 0; e < d.D; ++e)
            dot += static_cast<double>(in.q(q.b, q.q0 + i, h, e)) *
                   static_cast<double>(in.k(q.b, q.k0 + j, hk, e));
          row[static_cast<std::size_t>(j)] = d.scale * dot;
          m = std::max(m, row[static_cast<std::size_t>(j)]);
        }
        double den = 0.0;
        for (index_t j = 0; j <= p; ++j)
          den += row[static_cast<std::size_t>(j)] = std::exp(row[static_cast<std::size_t>(j)] - m);
        for (index_t j = 0; j <= p; ++j) {
          const double a = row[static_cast<std::size_t>(j)] / den;
          fh.vertical[static_cast<std::size_t>(j)] += a;
          fh.slash[static_cast<std::size_t>(p - j)] += a;
        }
      }
      if (rows > 0)
        for (index_t j = 0; j < nk; ++j) {
          fh.vertical[static_cast<std::size_t>(j)] /= static_cast<double>(rows);
          fh.slash[static_cast<std::size_t>(j)] /= static_cast<double>(rows);
        }
      // Block distributions over the sequence's key blocks (sequence-relative blocks of `block`).
      const index_t nkb = n > 0 ? (nk + block - 1) / block : 0;
      std::vector<double> pat(static_cast<std::size_t>(nkb), 0.0), est(pat.size(), 0.0);
      for (index_t j = 0; j < nk; ++j)
        pat[static_cast<std::size_t>(j / block)] += fh.vertical[static_cast<std::size_t>(j)];
      double m = -INFINITY;
      for (index_t kb = 0; kb < nkb; ++kb) {
        const index_t j0 = kb * block, j1 = std::min(nk, j0 + block);
        double dot = 0.0;
        for (index_t e = 0; e < d.D; ++e) {
          double ks = 0.0;
          for (index_t j = j0; j < j1; ++j) ks += static_cast<double>(in.k(q.b, q.k0 + j, hk, e));
          dot += qmean[static_cast<std::size_t>(e)] / static_cast<double>(n) * ks /
                 static_cast<double>(j1 - j0);
        }
        est[static_cast<std::size_t>(kb)] = d.scale * dot;
        m = std::max(m, est[static_cast<std::size_t>(kb)]);
      }
      double den = 0.0;
      for (double& x : est) den += x = std::exp(x - m);
      double js = 0.0;
      for (std::size_t kb = 0; kb < est.size(); ++kb) {
        const double a = est[kb] / den, b = pat[kb], mid = 0.5 * (a + b);
        if (a > 0.0) js += 0.5 * a * std::log(a / mid);
        if (b > 0.0) js += 0.5 * b * std::log(b / mid);
      }
      fh.divergence = std::sqrt(std::max(js, 0.0));
      fh.query_aware = fh.divergence < tau;
      fh.in_v = detail::cover(fh.vertical, gamma);
      fh.in_o = detail::cover(fh.slash, gamma);
      fh.v_prefix = detail::prefix(fh.in_v);
      fh.o_prefix = detail::prefix(fh.in_o);
    });
    return heads;
  }
};

static_assert(BlockSelector<FlexPrefillSelector>);

}  // namespace polyattn::sparse
