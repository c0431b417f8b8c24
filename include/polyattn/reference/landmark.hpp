// polyattn/reference/landmark.hpp — naive double-precision Landmark attention (Mohtashami &
// Jaggi 2023, §3, grouped softmax; the authors' landmark_grouped_softmax), written from the
// causal softmax weights A of a row (every key j ≤ p): with ℓ regular tokens then one landmark
// per block, the own section [block(p)·(ℓ+1), p] and the global group G = own section ∪ the
// landmarks L_b before it,
//   own-section key j:            w_j = A_j / Σ_G A
//   regular key j of block b:     w_j = (A_{L_b} / Σ_G A) · (A_j / Σ_{regular j' of b} A_j')
//   earlier landmarks:            w = 0
// and o = Σ w_j v_j (a ratio of A's is a ratio of e^{s}'s: the grouped softmax exactly).
#pragma once

#include <type_traits>
#include <vector>

#include "polyattn/reference/row_softmax.hpp"

namespace polyattn::reference {

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void landmark_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, index_t block,
                        TensorView<Out, 4> o) {
  const index_t L1 = block + 1;
  const auto causal = [](index_t, index_t, index_t p, index_t j) { return j <= p; };
  const auto grouped = [L1](index_t, index_t, index_t p, const std::vector<index_t>& J,
                            std::vector<double>& A) {
    const index_t own = (p / L1) * L1, nb = p / L1;
    const auto landmark = [L1](index_t j) { return (j + 1) % L1 == 0; };
    double global = 0.0;
    std::vector<double> block_sum(static_cast<std::size_t>(nb), 0.0),
        gate(static_cast<std::size_t>(nb), 0.0);
    for (std::size_t r = 0; r < J.size(); ++r) {
      const index_t j = J[r];
      if (j >= own) {
        global += A[r];
      } else if (landmark(j)) {
        global += A[r];
        gate[static_cast<std::size_t>(j / L1)] = A[r];
      } else {
        block_sum[static_cast<std::size_t>(j / L1)] += A[r];
      }
    }
    for (std::size_t r = 0; r < J.size(); ++r) {
      const index_t j = J[r];
      if (j >= own)
        A[r] = A[r] / global;
      else if (landmark(j))
        A[r] = 0.0;
      else
        A[r] = gate[static_cast<std::size_t>(j / L1)] / global * A[r] /
               block_sum[static_cast<std::size_t>(j / L1)];
    }
  };
  row_softmax_attention(in, opt, causal, o, grouped);
}

}  // namespace polyattn::reference
