// polyattn/softmax/routing.hpp — Routing Transformer's content-based sparse attention (Roy et al.
// 2021, "Efficient Content-Based Sparse Attention with Routing Transformers", TACL, §4: routing
// attention and its online k-means), as a mask policy of the tiled softmax kernel (fusion.hpp).
//
// Per query head h with centroids μ_1 … μ_C ([HQ, C, D]; the kv head h / (HQ/HKV) gives the keys):
//   assignment, Rule::Nearest    a query / key x joins the cluster argmax_c μ_c·x (ties to the
//                                lower c): the paper's nearest centroid μ(x) (§4.1, eq. 11), as the
//                                authors' nearest_neighbor (google-research/routing_transformer,
//                                utils.py) — a plain dot product, the vectors being layer-normed
//   assignment, Rule::Balanced   cluster c takes the w queries and the w keys of the sequence with
//                                the highest μ_c·x (ties to the lower position): the authors'
//                                gather_cluster_attention_items (top-w per cluster); a token may
//                                then be in several clusters or in none
//   RoutingSource::Queries       keys take the clusters of the query at the same position (the
//                                authors gather one token set per cluster for q and k; T == S)
//   mask          query row i sees key j when they share a cluster:  Q_i ∩ K_j ≠ ∅
// composed with the options' masks (opt.causal for the autoregressive model, the paper's j < i;
// the paper also keeps a token from attending to itself — not done here). With Balanced, a token
// in several clusters gets one softmax over the union of their keys; the authors' code instead
// averages its per-cluster outputs (scatter, divided by the count + 0.01).
//   online k-means (RoutingCentroids::update, the authors' online_kmeans with EMA):
//     n_c ← λ·n_c + (1 − λ)·#{t : nearest(x_t) = c},   s_c ← λ·s_c + (1 − λ)·Σ_{nearest(x_t) = c}
//     x_t ñ_c = (n_c + ε) / (Σ n + C·ε) · Σ n,               μ_c = s_c / ñ_c
//   over the routing vectors x (the queries of a call, all batch rows and positions).
// Clusters are bits of a 64-bit word: C ≤ 64. Queries are the call's rows, keys its key rows;
// with cu_seqlens each packed sequence is assigned on its own (Balanced: top-w within it).
// Decode (T < S): the query rows at the last key positions against the keys' clusters.
//
// Kernels: FlashKernelFor<Fusion<RoutingMask>>, listed in POLYATTN_ROUTING_KERNELS.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/validate.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/fusion.hpp"

namespace polyattn::softmax {

/// Cluster memberships of a call's queries and keys: words [B, HQ, T] and [B, HQ, S] (bit c set:
/// in cluster c).
struct RoutingAssignment {
  index_t B = 0, HQ = 0, T = 0, S = 0, C = 0;
  std::vector<std::uint64_t> q, k;
  std::uint64_t query(index_t b, index_t h, index_t i) const noexcept {
    return q[static_cast<std::size_t>((b * HQ + h) * T + i)];
  }
  std::uint64_t key(index_t b, index_t h, index_t j) const noexcept {
    return k[static_cast<std::size_t>((b * HQ + h) * S + j)];
  }
  void check(const SoftmaxDims& d) const {
    if (B != d.B || HQ != d.HQ || T != d.T || S != d.S)
      throw Error("routing",
                  "assignment for [B, HQ, T, S] = " + shape_string(std::array{B, HQ, T, S}) +
                      ", the call has " + shape_string(std::array{d.B, d.HQ, d.T, d.S}));
    if (q.size() != static_cast<std::size_t>(B * HQ * T) ||
        k.size() != static_cast<std::size_t>(B * HQ * S))
      throw Error("routing", "word counts do not match [B, HQ, T] and [B, HQ, S]");
  }
};

/// The routing mask of one call; the assignment must outlive it.
struct RoutingMask {
  const RoutingAssignment* routing = nullptr;

  struct Bound {
    const std::uint64_t* q;  // this (batch row, head)'s query words, at the sequence's first row
    const std::uint64_t* k;  // its key words, at the sequence's first key
    template <simd::SimdArch A = simd::scalar_arch>
    bool visible(index_t r, index_t, index_t j) const noexcept {
      return (q[r] & k[j]) != 0;
    }
    template <simd::SimdArch A = simd::scalar_arch>
    TileClass classify(RowRange rows, KeyRange keys) const noexcept {
      std::uint64_t q_or = 0, q_and = ~std::uint64_t{0}, k_or = 0, k_and = ~std::uint64_t{0};
      for (index_t r = rows.r0; r < rows.r1; ++r) q_or |= q[r], q_and &= q[r];
      for (index_t j = keys.j0; j < keys.j1; ++j) k_or |= k[j], k_and &= k[j];
      if ((q_or & k_or) == 0) return TileClass::Skip;
      if ((q_and & k_and) != 0) return TileClass::Full;  // one cluster shared by all
      return TileClass::Partial;
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext& c) const noexcept {
    const RoutingAssignment& a = *routing;
    return {a.q.data() + (c.batch * a.HQ + c.head) * a.T + c.q_offset,
            a.k.data() + (c.batch * a.HQ + c.head) * a.S + c.k_offset};
  }
  void check(const SoftmaxDims& d) const { check::not_null("routing", routing).check(d); }
};
static_assert(FusionMask<RoutingMask>);

enum class RoutingRule { Nearest, Balanced };
enum class RoutingSource { Separate, Queries };

namespace detail {
inline void check_centroids(const View3<const float>& mu, const SoftmaxDims& d) {
  check::required("centroids", mu);
  const index_t C = mu.size(1);
  if (C < 1 || C > 64) throw Error("centroids", "needs 1 to 64 clusters, got " + std::to_string(C));
  check::shape_is("centroids", mu, {d.HQ, C, d.D}, "[HQ, C, D]");
}
}  // namespace detail

/// Cluster memberships of the call's queries and keys (see the header comment); `window` is the
/// w of Rule::Balanced (w ≥ 1; ignored by Nearest).
/// @throws polyattn::Error ("centroids", "window", and the inputs' checks)
template <Executor E = Serial>
RoutingAssignment assign_routing(const SoftmaxInputs& in, const View3<const float>& centroids,
                                 RoutingRule rule, index_t window = 0,
                                 RoutingSource source = RoutingSource::Separate,
                                 const E& exec = E{}) {
  const SoftmaxDims d = validate(in, SoftmaxOptions{});
  detail::check_centroids(centroids, d);
  if (rule == RoutingRule::Balanced && window < 1)
    throw Error("window", "must be >= 1, got " + std::to_string(window));
  if (source == RoutingSource::Queries && d.T != d.S)
    throw Error("k", "keys taking the queries' clusters need T == S, got T = " +
                         std::to_string(d.T) + ", S = " + std::to_string(d.S));
  RoutingAssignment a;
  a.B = d.B, a.HQ = d.HQ, a.T = d.T, a.S = d.S, a.C = centroids.size(1);
  a.q.assign(static_cast<std::size_t>(d.B * d.HQ * d.T), 0);
  a.k.assign(static_cast<std::size_t>(d.B * d.HQ * d.S), 0);
  struct Seq {
    index_t b, q0, nq, k0, nk;
  };
  std::vector<Seq> seqs;
  if (d.varlen) {
    for (std::size_t n = 0; n + 1 < in.cu_seqlens.size(); ++n) {
      const index_t beg = in.cu_seqlens[n], len = in.cu_seqlens[n + 1] - beg;
      seqs.push_back({0, beg, len, beg, len});
    }
  } else {
    for (index_t b = 0; b < d.B; ++b) seqs.push_back({b, 0, d.T, 0, d.S});
  }
  const index_t C = a.C;
  exec.parallel_for(static_cast<std::int64_t>(seqs.size()) * d.HQ, [&](std::int64_t item) {
    const Seq& s = seqs[static_cast<std::size_t>(item / d.HQ)];
    const index_t h = item % d.HQ, hk = h / d.group;
    // sim[c][t] = μ_c·x_t in double.
    const auto similarities = [&](const ElementView<4>& x, index_t x0, index_t n, index_t xh) {
      std::vector<double> sim(static_cast<std::size_t>(C * n));
      for (index_t t = 0; t < n; ++t)
        for (index_t c = 0; c < C; ++c) {
          double dot = 0.0;
          for (index_t e = 0; e < d.D; ++e)
            dot += static_cast<double>(centroids(h, c, e)) *
                   static_cast<double>(x(s.b, x0 + t, xh, e));
          sim[static_cast<std::size_t>(c * n + t)] = dot;
        }
      return sim;
    };
    const auto assign = [&](const ElementView<4>& x, index_t x0, index_t n, index_t xh,
                            std::uint64_t* out) {
      const std::vector<double> sim = similarities(x, x0, n, xh);
      if (rule == RoutingRule::Nearest) {
        for (index_t t = 0; t < n; ++t) {
          index_t best = 0;
          for (index_t c = 1; c < C; ++c)
            if (sim[static_cast<std::size_t>(c * n + t)] >
                sim[static_cast<std::size_t>(best * n + t)])
              best = c;
          out[t] = std::uint64_t{1} << best;
        }
        return;
      }
      std::vector<index_t> order(static_cast<std::size_t>(n));
      for (index_t c = 0; c < C; ++c) {
        const double* row = sim.data() + c * n;
        for (index_t t = 0; t < n; ++t) order[static_cast<std::size_t>(t)] = t;
        const index_t w = std::min(window, n);
        std::partial_sort(
            order.begin(), order.begin() + w, order.end(),
            [row](index_t x, index_t y) { return row[x] > row[y] || (row[x] == row[y] && x < y); });
        for (index_t r = 0; r < w; ++r)
          out[order[static_cast<std::size_t>(r)]] |= std::uint64_t{1} << c;
      }
    };
    std::uint64_t* qw = a.q.data() + (s.b * d.HQ + h) * d.T + s.q0;
    std::uint64_t* kw = a.k.data() + (s.b * d.HQ + h) * d.S + s.k0;
    assign(in.q, s.q0, s.nq, h, qw);
    if (source == RoutingSource::Queries)
      std::copy(qw, qw + s.nq, kw);
    else
      assign(in.k, s.k0, s.nk, hk, kw);
  });
  return a;
}

/// Routing attention: flash_attention with RoutingMask composed with the options' set.
/// @throws polyattn::Error naming the bad argument ("routing" included), before anything is
///         written
template <Executor E = Serial>
void routing_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                       const RoutingAssignment& routing, const FlashOutputs& out,
                       const E& exec = E{}) {
  flash_attention(in, opt, with_mask(RoutingMask{&routing}), out, exec);
}
template <Executor E = Serial>
void routing_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                       const RoutingAssignment& routing, View4<float> o, const E& exec = E{}) {
  routing_attention(in, opt, routing, FlashOutputs{o, {}, {}}, exec);
}

/// Centroids [HQ, C, D] with the EMA state of the authors' online k-means (see the header
/// comment). Starts from given centroids (n = 0, s = the centroids, as the authors' ema_means
/// starts from the means).
class RoutingCentroids {
 public:
  /// @throws polyattn::Error ("centroids") unless 1 ≤ C ≤ 64 and every size is positive
  RoutingCentroids(index_t HQ, index_t C, index_t D, std::vector<float> means)
      : HQ_(HQ), C_(C), D_(D), means_(std::move(means)) {
    if (HQ <= 0 || D <= 0 || C < 1 || C > 64)
      throw Error("centroids", "needs HQ, D > 0 and 1 to 64 clusters");
    if (static_cast<index_t>(means_.size()) != HQ * C * D)
      throw Error("centroids", "expected HQ·C·D = " + std::to_string(HQ * C * D) + " values, got " +
                                   std::to_string(means_.size()));
    count_.assign(static_cast<std::size_t>(HQ * C), 0.0);
    sum_.assign(means_.begin(), means_.end());
  }
  View3<const float> means() const noexcept {
    return View3<const float>::contiguous(means_.data(), {HQ_, C_, D_});
  }
  double count(index_t h, index_t c) const noexcept {
    return count_[static_cast<std::size_t>(h * C_ + c)];
  }

  /// One EMA step from routing vectors x [B, T, HQ, D] (cu_seqlens: packed rows, all of them);
  /// decay λ in [0, 1], eps ε ≥ 0.
  /// @throws polyattn::Error ("x", "decay", "eps"), before anything changes
  void update(const View4<const float>& x, double decay, double eps = 1e-5) {
    check::required("x", x);
    check::shape_is("x", x, {x.size(0), x.size(1), HQ_, D_}, "[B, T, HQ, D] of the centroids");
    if (!(decay >= 0.0 && decay <= 1.0))
      throw Error("decay", "must be in [0, 1], got " + std::to_string(decay));
    if (!(eps >= 0.0 && std::isfinite(eps))) throw Error("eps", "must be finite and >= 0");
    for (index_t h = 0; h < HQ_; ++h) {
      std::vector<double> cnt(static_cast<std::size_t>(C_), 0.0),
          dw(static_cast<std::size_t>(C_ * D_), 0.0);
      for (index_t b = 0; b < x.size(0); ++b)
        for (index_t t = 0; t < x.size(1); ++t) {
          index_t best = 0;
          double best_dot = -INFINITY;
          for (index_t c = 0; c < C_; ++c) {
            double dot = 0.0;
            for (index_t e = 0; e < D_; ++e)
              dot += static_cast<double>(means_[static_cast<std::size_t>((h * C_ + c) * D_ + e)]) *
                     static_cast<double>(x(b, t, h, e));
            if (c == 0 || dot > best_dot) best = c, best_dot = dot;
          }
          cnt[static_cast<std::size_t>(best)] += 1.0;
          for (index_t e = 0; e < D_; ++e)
            dw[static_cast<std::size_t>(best * D_ + e)] += x(b, t, h, e);
        }
      double n = 0.0;
      for (index_t c = 0; c < C_; ++c) {
        double& nc = count_[static_cast<std::size_t>(h * C_ + c)];
        nc = decay * nc + (1.0 - decay) * cnt[static_cast<std::size_t>(c)];
        n += nc;
        for (index_t e = 0; e < D_; ++e) {
          double& sc = sum_[static_cast<std::size_t>((h * C_ + c) * D_ + e)];
          sc = decay * sc + (1.0 - decay) * dw[static_cast<std::size_t>(c * D_ + e)];
        }
      }
      if (n <= 0.0) continue;  // nothing seen yet: the means stay
      for (index_t c = 0; c < C_; ++c) {
        const double smoothed = (count_[static_cast<std::size_t>(h * C_ + c)] + eps) /
                                (n + static_cast<double>(C_) * eps) * n;
        for (index_t e = 0; e < D_; ++e)
          means_[static_cast<std::size_t>((h * C_ + c) * D_ + e)] =
              static_cast<float>(sum_[static_cast<std::size_t>((h * C_ + c) * D_ + e)] / smoothed);
      }
    }
  }

 private:
  index_t HQ_, C_, D_;
  std::vector<float> means_;
  std::vector<double> count_, sum_;  // EMA counts [HQ, C] and sums [HQ, C, D]
};

}  // namespace polyattn::softmax

// The kernel of a project's per-ISA units for routing attention (see the header comment).
#define POLYATTN_ROUTING_KERNELS(X)      \
  X(::polyattn::softmax::FlashKernelFor< \
      ::polyattn::softmax::Fusion<::polyattn::softmax::RoutingMask>>)
