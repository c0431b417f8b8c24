// polyattn/reference/combiner.hpp — naive double-precision Combiner-Fixed (Ren et al. 2021, §4.1;
// the authors' sqrt_fixed_full): per query, one softmax over the direct keys of its segment and
// the summaries of the other complete segments (softmax/combiner.hpp), every summary recomputed
// from q, k, v for every query: k̄_r = pool φ(k), v̄_r = softmax(scale·q̄_r·k) v over the segment,
// q̄_r = pool φ(q). T = S (the prefill; decode rows are its last rows), no varlen.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/softmax/combiner.hpp"

namespace polyattn::reference {

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void combiner_attention(const SoftmaxInputs& in, bool causal, const softmax::CombinerConfig& cfg,
                        TensorView<Out, 4> o) {
  using Pool = softmax::CombinerConfig::Pool;
  const SoftmaxDims d = validate(in, SoftmaxOptions{}, o);
  if (d.T != d.S) throw Error("q", "the reference takes the prefill, T = S");
  const index_t L = cfg.segment, n = d.S / L;
  // pool_{t ∈ Ω_r} φ(x_t)
  const auto pooled = [&](const ElementView<4>& x, index_t b, index_t r, index_t xh, index_t dim) {
    std::vector<double> out(static_cast<std::size_t>(dim));
    for (index_t e = 0; e < dim; ++e) {
      double acc = cfg.pool == Pool::Max ? -INFINITY : 0.0;
      for (index_t t = r * L; t < (r + 1) * L; ++t) {
        double y = static_cast<double>(x(b, t, xh, e));
        if (cfg.relu && y < 0.0) y = 0.0;
        acc = cfg.pool == Pool::Max ? std::max(acc, y) : acc + y;
      }
      out[static_cast<std::size_t>(e)] =
          cfg.pool == Pool::Mean ? acc / static_cast<double>(L) : acc;
    }
    return out;
  };
  for (index_t b = 0; b < d.B; ++b)
    for (index_t h = 0; h < d.HQ; ++h) {
      const index_t hk = h / d.group;
      for (index_t i = 0; i < d.T; ++i) {
        const index_t p = i + d.S - d.T, s = p / L;
        std::vector<double> logit;
        std::vector<std::vector<double>> value;
        for (index_t j = s * L; j < std::min(d.S, (s + 1) * L); ++j) {  // direct keys
          if (causal && j > p) continue;
          double dot = 0.0;
          for (index_t e = 0; e < d.D; ++e)
            dot += static_cast<double>(in.q(b, i, h, e)) * in.k(b, j, hk, e);
          logit.push_back(d.scale * dot);
          std::vector<double> vj(static_cast<std::size_t>(d.Dv));
          for (index_t e = 0; e < d.Dv; ++e) vj[static_cast<std::size_t>(e)] = in.v(b, j, hk, e);
          value.push_back(vj);
        }
        for (index_t r = 0; r < n; ++r) {  // summaries
          if (causal && r >= s) continue;
          const std::vector<double> kbar = pooled(in.k, b, r, hk, d.D);
          const std::vector<double> qbar = pooled(in.q, b, r, h, d.D);
          double dot = 0.0;
          for (index_t e = 0; e < d.D; ++e)
            dot += static_cast<double>(in.q(b, i, h, e)) * kbar[static_cast<std::size_t>(e)];
          logit.push_back(d.scale * dot);
          std::vector<double> w;
          for (index_t t = r * L; t < (r + 1) * L; ++t) {
            double x = 0.0;
            for (index_t e = 0; e < d.D; ++e)
              x += qbar[static_cast<std::size_t>(e)] * static_cast<double>(in.k(b, t, hk, e));
            w.push_back(d.scale * x);
          }
          const double mw = *std::max_element(w.begin(), w.end());
          double zw = 0.0;
          for (double& x : w) zw += x = std::exp(x - mw);
          std::vector<double> vbar(static_cast<std::size_t>(d.Dv), 0.0);
          for (index_t t = 0; t < L; ++t)
            for (index_t e = 0; e < d.Dv; ++e)
              vbar[static_cast<std::size_t>(e)] += w[static_cast<std::size_t>(t)] / zw *
                                                   static_cast<double>(in.v(b, r * L + t, hk, e));
          value.push_back(vbar);
        }
        const double m = *std::max_element(logit.begin(), logit.end());
        double z = 0.0;
        for (double& x : logit) z += x = std::exp(x - m);
        for (index_t e = 0; e < d.Dv; ++e) {
          double acc = 0.0;
          for (std::size_t c = 0; c < logit.size(); ++c)
            acc += logit[c] / z * value[c][static_cast<std::size_t>(e)];
          o(b, i, h, e) = static_cast<Out>(acc);
        }
      }
    }
}

}  // namespace polyattn::reference
