// polyattn/reference/papers2.hpp — naive double-precision oracles for the papers' systems of
// issue 16 (include/polyattn/papers/), continued from reference/papers.hpp, each written from
// the paper's own formulation rather than the recurrence the fast operator runs:
//
//   rala   RALA (Fan et al. 2025), causal: pairwise weights α_j = e^{s_j} / Σ_{i≤t} e^{s_i},
//          s_j = scale·q̄·φk_j, y_t = Σ_j α_j (φq_t·φk_j) v_j / (Σ_j α_j φq_t·φk_j + eps), the
//          initial (S0, z0, log C0) standing for the tokens before; then + LePE, ⊙ gate
//   sse    Sparse State Expansion, GLA form: per state p (0 shared, 1…P partitions) the sum over
//          the tokens s ≤ t that wrote it, weighted by Π over the writing tokens in (s, t] of
//          e^{g}, read only where p is read: o_t = Σ_p a_q(t) q_tᵀ (e^{c(t)}S0 + Σ_s
//          e^{c(t) − c(s)} a_k(s) k_s v_sᵀ), c the cumulative log-decay over the writing tokens
//
// Inputs as the operators'; shapes are assumed valid (the tests pass what the operators accept).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "polyattn/papers/rala.hpp"
#include "polyattn/papers/sse.hpp"
#include "polyattn/reference/papers.hpp"

namespace polyattn::reference {

/// RALA, causal, straight from the weights (O(T²K) per head); φ = elu+1 applied here. conv as
/// papers::Rala (weight absent: none), its history from conv_cache_in or zeros.
template <class Out>
void rala(const papers::RalaInputs& in, const papers::TokenConv& conv,
          View4<const float> conv_cache_in, double scale, double eps, const View4<Out>& o) {
  const index_t B = in.q.size(0), T = in.q.size(1), H = in.q.size(2), K = in.q.size(3);
  const index_t HV = in.v.size(2), V = in.v.size(3), G = HV / H;
  const auto phi = [](double x) { return x > 0.0 ? x + 1.0 : std::exp(x); };
  const auto segs = segments(B, T, in.cu_seqlens);
  const bool has0 = !in.initial_state.absent();
  for (index_t n = 0; n < static_cast<index_t>(segs.size()); ++n) {
    const auto& sg = segs[static_cast<std::size_t>(n)];
    for (index_t hv = 0; hv < HV; ++hv) {
      const index_t h = hv / G;
      std::vector<double> s(static_cast<std::size_t>(sg.length));
      for (index_t j = 0; j < sg.length; ++j) {
        double acc = 0.0;
        for (index_t i = 0; i < K; ++i)
          acc += static_cast<double>(in.q_mean(n, h, i)) * phi(in.k(sg.batch, sg.begin + j, h, i));
        s[static_cast<std::size_t>(j)] = scale * acc;
      }
      const double lc0 = has0 ? static_cast<double>(in.initial_log_c(n, h))
                              : -std::numeric_limits<double>::infinity();
      for (index_t t = 0; t < sg.length; ++t) {
        const index_t tt = sg.begin + t;
        std::vector<double> pq(static_cast<std::size_t>(K));
        for (index_t i = 0; i < K; ++i)
          pq[static_cast<std::size_t>(i)] = phi(in.q(sg.batch, tt, h, i));
        double m = lc0;
        for (index_t j = 0; j <= t; ++j) m = std::max(m, s[static_cast<std::size_t>(j)]);
        double c = 0.0, den = 0.0;
        std::vector<double> num(static_cast<std::size_t>(V), 0.0);
        if (has0) {
          const double w0 = std::exp(lc0 - m);
          c += w0;
          for (index_t i = 0; i < K; ++i) {
            den += w0 * pq[static_cast<std::size_t>(i)] * in.initial_z(n, h, i);
            for (index_t jv = 0; jv < V; ++jv)
              num[static_cast<std::size_t>(jv)] +=
                  w0 * pq[static_cast<std::size_t>(i)] * in.initial_state(n, hv, i, jv);
          }
        }
        for (index_t j = 0; j <= t; ++j) {
          const double w = std::exp(s[static_cast<std::size_t>(j)] - m);
          double a = 0.0;
          for (index_t i = 0; i < K; ++i)
            a += pq[static_cast<std::size_t>(i)] * phi(in.k(sg.batch, sg.begin + j, h, i));
          c += w;
          den += w * a;
          for (index_t jv = 0; jv < V; ++jv)
            num[static_cast<std::size_t>(jv)] += w * a * in.v(sg.batch, sg.begin + j, hv, jv);
        }
        for (index_t jv = 0; jv < V; ++jv)
          o(sg.batch, tt, hv, jv) =
              static_cast<Out>((num[static_cast<std::size_t>(jv)] / c) / (den / c + eps));
      }
    }
  }
  if (!conv.weight.absent()) token_conv<Out>(in.v, conv, conv_cache_in, in.cu_seqlens, o);
  if (!in.gate.absent())
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t hv = 0; hv < HV; ++hv)
          for (index_t jv = 0; jv < V; ++jv) o(b, t, hv, jv) *= in.gate(b, t, hv, jv);
}

/// Sparse State Expansion (papers/sse.hpp) pairwise in double; final_state optional
/// [(1+P)·N,HV,K,V]. scale multiplies q (default of the operator: K^-½).
template <class Out>
void sse(const papers::SseInputs& in, const papers::SseOptions& opt, double scale,
         const View4<Out>& o, const View4<Out>& final_state = {}) {
  const index_t B = in.q1.size(0), T = in.q1.size(1), H = in.q1.size(2), K = in.q1.size(3);
  const index_t HV = in.v.size(2), V = in.v.size(3), G = HV / H, P = in.e.size(2);
  const auto segs = segments(B, T, in.cu_seqlens);
  const auto N = static_cast<index_t>(segs.size());
  // Routing per token: a_q (read weight), a_k (write weight), writes.
  std::vector<double> aq(static_cast<std::size_t>(B * T * P)), ak(aq.size()), eta(aq.size());
  std::vector<char> wr(aq.size()), rd(aq.size());
  std::vector<float> row(static_cast<std::size_t>(P));
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t) {
      const auto at = static_cast<std::size_t>((b * T + t) * P);
      for (index_t p = 0; p < P; ++p) row[static_cast<std::size_t>(p)] = in.e(b, t, p);
      papers::sse_route(row.data(), P, opt.writers, eta.data() + at, wr.data() + at);
      papers::sse_route(row.data(), P, opt.readers, eta.data() + at, rd.data() + at);
      for (index_t p = 0; p < P; ++p) {
        const auto i = at + static_cast<std::size_t>(p);
        aq[i] = rd[i] ? eta[i] : 0.0;
        ak[i] = wr[i] ? eta[i] : 0.0;
      }
    }
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t hv = 0; hv < HV; ++hv)
        for (index_t j = 0; j < V; ++j) o(b, t, hv, j) = Out(0);
  for (index_t n = 0; n < N; ++n) {
    const auto& sg = segs[static_cast<std::size_t>(n)];
    for (index_t hv = 0; hv < HV; ++hv) {
      const index_t h = hv / G;
      for (index_t p = 0; p <= P; ++p) {
        const index_t row_s = p * N + n;
        auto idx = [&](index_t t) {
          return static_cast<std::size_t>((sg.batch * T + t) * P + p - 1);
        };
        auto writes = [&](index_t t) { return p == 0 || wr[idx(t)]; };
        auto a_q = [&](index_t t) { return p == 0 ? 1.0 : aq[idx(t)]; };
        auto a_k = [&](index_t t) { return p == 0 ? 1.0 : ak[idx(t)]; };
        const auto& q = p == 0 ? in.q1 : in.q2;
        const auto& k = p == 0 ? in.k1 : in.k2;
        const auto& g = p == 0 ? in.g1 : in.g2;
        // c[t][i]: Σ of g over the writing tokens u ≤ t (t relative to the segment).
        std::vector<double> c(static_cast<std::size_t>((sg.length + 1) * K), 0.0);
        for (index_t t = 0; t < sg.length; ++t)
          for (index_t i = 0; i < K; ++i)
            c[static_cast<std::size_t>((t + 1) * K + i)] =
                c[static_cast<std::size_t>(t * K + i)] +
                (writes(sg.begin + t) ? static_cast<double>(g(sg.batch, sg.begin + t, hv, i))
                                      : 0.0);
        auto cum = [&](index_t t1, index_t i) { return c[static_cast<std::size_t>(t1 * K + i)]; };
        for (index_t t = 0; t < sg.length; ++t) {
          const index_t tt = sg.begin + t;
          const double wq = a_q(tt);
          if (wq == 0.0) continue;
          for (index_t j = 0; j < V; ++j) {
            double acc = 0.0;
            for (index_t i = 0; i < K; ++i) {
              const double qi = scale * wq * q(sg.batch, tt, h, i);
              if (!in.initial_state.absent())
                acc += qi * std::exp(cum(t + 1, i)) * in.initial_state(row_s, hv, i, j);
              for (index_t s2 = 0; s2 <= t; ++s2) {
                if (!writes(sg.begin + s2)) continue;
                acc += qi * std::exp(cum(t + 1, i) - cum(s2 + 1, i)) * a_k(sg.begin + s2) *
                       k(sg.batch, sg.begin + s2, h, i) * in.v(sg.batch, sg.begin + s2, hv, j);
              }
            }
            o(sg.batch, tt, hv, j) += static_cast<Out>(acc);
          }
        }
        if (!final_state.absent())
          for (index_t i = 0; i < K; ++i)
            for (index_t j = 0; j < V; ++j) {
              double acc = in.initial_state.absent()
                               ? 0.0
                               : std::exp(cum(sg.length, i)) * in.initial_state(row_s, hv, i, j);
              for (index_t s2 = 0; s2 < sg.length; ++s2)
                if (writes(sg.begin + s2))
                  acc += std::exp(cum(sg.length, i) - cum(s2 + 1, i)) * a_k(sg.begin + s2) *
                         k(sg.batch, sg.begin + s2, h, i) * in.v(sg.batch, sg.begin + s2, hv, j);
              final_state(row_s, hv, i, j) = static_cast<Out>(acc);
            }
      }
    }
  }
}

}  // namespace polyattn::reference
