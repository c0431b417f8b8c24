// polyattn/reference/mamba2.hpp — the double-precision oracle of Mamba2 (SSD), written from
// Mamba2's own recurrence in its own layout (not through the linear family's mapping):
//
//   Δ = clamp(softplus(dt + dt_bias[h]) or dt + dt_bias[h], lo, hi)
//   for p < P, n < N:  h[p,n] ← exp(Δ·A[h])·h[p,n] + Δ·x[p]·B[g,n]       g = h / (H/G)
//   y[p] = Σ_n h[p,n]·C[g,n] + D[h]·x[p]
// token by token per (sequence, head); state [Nseq,H,P,N]; varlen by cu_seqlens (B == 1).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "polyattn/core/tensor_view.hpp"

namespace polyattn::reference {

struct Mamba2Ref {
  View4<const float> x, Bm, Cm, initial_state;
  View3<const float> dt;
  View1<const float> A, D, dt_bias;
  std::span<const std::int64_t> cu_seqlens;
  bool dt_softplus = false;
  double dt_min = 0.0, dt_max = std::numeric_limits<double>::infinity();
};

/// y [B,T,H,P] and the final state [Nseq,H,P,N] (may be absent).
inline void mamba2(const Mamba2Ref& in, const View4<double>& y, const View4<double>& ht) {
  const index_t B = in.x.size(0), T = in.x.size(1), H = in.x.size(2), P = in.x.size(3);
  const index_t G = in.Bm.size(2), N = in.Bm.size(3), per_group = H / G;
  std::vector<std::int64_t> cu(in.cu_seqlens.begin(), in.cu_seqlens.end());
  const index_t seqs = cu.empty() ? B : static_cast<index_t>(cu.size()) - 1;
  for (index_t s = 0; s < seqs; ++s) {
    const index_t b = cu.empty() ? s : 0;
    const index_t t0 = cu.empty() ? 0 : cu[s], t1 = cu.empty() ? T : cu[s + 1];
    for (index_t h = 0; h < H; ++h) {
      const index_t g = h / per_group;
      std::vector<double> st(static_cast<std::size_t>(P * N), 0.0);
      if (!in.initial_state.absent())
        for (index_t p = 0; p < P; ++p)
          for (index_t n = 0; n < N; ++n) st[p * N + n] = in.initial_state(s, h, p, n);
      for (index_t t = t0; t < t1; ++t) {
        double delta = static_cast<double>(in.dt(b, t, h)) +
                       (in.dt_bias.absent() ? 0.0 : static_cast<double>(in.dt_bias(h)));
        if (in.dt_softplus) delta = delta > 20.0 ? delta : std::log1p(std::exp(delta));
        delta = std::min(std::max(delta, in.dt_min), in.dt_max);
        const double decay = std::exp(delta * static_cast<double>(in.A(h)));
        for (index_t p = 0; p < P; ++p) {
          const double xp = in.x(b, t, h, p);
          double acc = 0.0;
          for (index_t n = 0; n < N; ++n) {
            double& v = st[p * N + n];
            v = decay * v + delta * xp * static_cast<double>(in.Bm(b, t, g, n));
            acc += v * static_cast<double>(in.Cm(b, t, g, n));
          }
          y(b, t, h, p) = acc + (in.D.absent() ? 0.0 : static_cast<double>(in.D(h)) * xp);
        }
      }
      if (!ht.absent())
        for (index_t p = 0; p < P; ++p)
          for (index_t n = 0; n < N; ++n) ht(s, h, p, n) = st[p * N + n];
    }
  }
}

}  // namespace polyattn::reference
