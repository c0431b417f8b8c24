// polyattn/reference/papers2.hpp — naive double-precision oracles for the papers' systems of
// issue 16 (include/polyattn/papers/), continued from reference/papers.hpp, each written from
// the paper's own formulation rather than the recurrence the fast operator runs:
//
//   rala   RALA (Fan et al. 2025), causal: pairwise weights α_j = e^{s_j} / Σ_{i≤t} e^{s_i},
//          s_j = scale·q̄·φk_j, y_t = Σ_j α_j (φq_t·φk_j) v_j / (Σ_j α_j φq_t·φk_j + eps), the
//          initial (S0, z0, log C0) standing for the tokens before; then + LePE, ⊙ gate
//
// Inputs as the operators'; shapes are assumed valid (the tests pass what the operators accept).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "polyattn/papers/rala.hpp"
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

}  // namespace polyattn::reference
