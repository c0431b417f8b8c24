// polyattn/reference/routing.hpp — naive double-precision routing attention (Roy et al. 2021,
// §4.1, eq. 11): query i attends, with one softmax, to the keys j that share a cluster with it
// (Q_i ∩ K_j ≠ ∅, clusters given as 64-bit words per (batch row, head, position), packed rows with
// cu_seqlens), under the options' masks (opt.causal for the paper's j < i).
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "polyattn/reference/row_softmax.hpp"

namespace polyattn::reference {

/// q_words [B, HQ, T], k_words [B, HQ, S] (row-major).
template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void routing_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                       const std::vector<std::uint64_t>& q_words,
                       const std::vector<std::uint64_t>& k_words, TensorView<Out, 4> o) {
  const SoftmaxDims d = validate(in, opt, o);
  const auto visible = [&](index_t n, index_t h, index_t p, index_t j) {
    // Sequence n: batch row n with its rows at 0, or packed sequence n of batch row 0.
    index_t b = n, q0 = 0, k0 = 0, nq = d.T, nk = d.S;
    if (!in.cu_seqlens.empty()) {
      b = 0;
      q0 = k0 = in.cu_seqlens[static_cast<std::size_t>(n)];
      nq = nk = in.cu_seqlens[static_cast<std::size_t>(n) + 1] - q0;
    }
    const index_t i = p - (nk - nq);  // the query row at key position p
    return (q_words[static_cast<std::size_t>((b * d.HQ + h) * d.T + q0 + i)] &
            k_words[static_cast<std::size_t>((b * d.HQ + h) * d.S + k0 + j)]) != 0;
  };
  row_softmax_attention(in, opt, visible, o);
}

}  // namespace polyattn::reference
