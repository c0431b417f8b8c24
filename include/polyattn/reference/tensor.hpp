// polyattn/reference/tensor.hpp — naive double-precision tensor (Kronecker) attention (Alman &
// Song 2024; softmax/tensor.hpp): one softmax per query over every pair (j₁, j₂) of keys,
//   o_i = Σ e^{s·Σ_e q_i[e] k₁_{j₁}[e] k₂_{j₂}[e] − m} (v₁_{j₁} ∘ v₂_{j₂}) / Σ e^{… − m},
// the T × S₁·S₂ scores of a row formed in full.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "polyattn/core/tensor_view.hpp"
#include "polyattn/softmax/tensor.hpp"

namespace polyattn::reference {

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void tensor_attention(const softmax::TensorAttentionInputs& in, TensorView<Out, 4> o) {
  const index_t B = in.q.size(0), T = in.q.size(1), HQ = in.q.size(2), D = in.q.size(3);
  const index_t S1 = in.k1.size(1), S2 = in.k2.size(1), HKV = in.k1.size(2);
  const index_t Dv = in.v1.size(3), group = HQ / HKV;
  const double s = in.scale.value_or(1.0);
  std::vector<double> sc(static_cast<std::size_t>(S1 * S2));
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < HQ; ++h) {
      const index_t hk = h / group;
      for (index_t i = 0; i < T; ++i) {
        double m = -INFINITY;
        for (index_t j1 = 0; j1 < S1; ++j1)
          for (index_t j2 = 0; j2 < S2; ++j2) {
            double x = 0.0;
            for (index_t e = 0; e < D; ++e)
              x += static_cast<double>(in.q(b, i, h, e)) *
                   static_cast<double>(in.k1(b, j1, hk, e)) *
                   static_cast<double>(in.k2(b, j2, hk, e));
            sc[static_cast<std::size_t>(j1 * S2 + j2)] = s * x;
            m = std::max(m, s * x);
          }
        double z = 0.0;
        for (double& x : sc) z += x = std::exp(x - m);
        for (index_t e = 0; e < Dv; ++e) {
          double acc = 0.0;
          for (index_t j1 = 0; j1 < S1; ++j1)
            for (index_t j2 = 0; j2 < S2; ++j2)
              acc += sc[static_cast<std::size_t>(j1 * S2 + j2)] *
                     static_cast<double>(in.v1(b, j1, hk, e)) *
                     static_cast<double>(in.v2(b, j2, hk, e));
          o(b, i, h, e) = static_cast<Out>(z > 0.0 ? acc / z : 0.0);
        }
      }
    }
}

}  // namespace polyattn::reference
