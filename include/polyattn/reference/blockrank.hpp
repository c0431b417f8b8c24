// polyattn/reference/blockrank.hpp — naive double-precision BlockRank attention (Gupta et al.
// 2025, §4.1: structured sparse attention for in-context ranking), written case by case from the
// paper's description of the three kinds of segment:
//   instruction (segment 0)        attends causally to itself
//   document d (segments 1…M−2)    attends to the whole instruction and causally to itself
//   query (segment M−1)            attends to every earlier token and causally to itself
// bounds[n] = {0 = b_0 < … < b_M = S_n} are key positions of sequence n; the query row at key
// position p belongs to the segment holding p. The options' masks compose (row_softmax.hpp).
#pragma once

#include <type_traits>
#include <vector>

#include "polyattn/reference/row_softmax.hpp"

namespace polyattn::reference {

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void blockrank_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                         const std::vector<std::vector<index_t>>& bounds, TensorView<Out, 4> o) {
  const auto segment_of = [](const std::vector<index_t>& b, index_t x) {
    index_t m = 0;
    while (m + 2 < static_cast<index_t>(b.size()) && x >= b[static_cast<std::size_t>(m) + 1]) ++m;
    return m;
  };
  const auto visible = [&](index_t n, index_t, index_t p, index_t j) {
    const std::vector<index_t>& b = bounds[static_cast<std::size_t>(n)];
    const index_t M = static_cast<index_t>(b.size()) - 1;
    if (p < 0 || j > p) return false;  // every segment attends causally
    const index_t sp = segment_of(b, p), sj = segment_of(b, j);
    if (sp == 0) return sj == 0;                 // instruction: itself
    if (sp < M - 1) return sj == 0 || sj == sp;  // document: instruction + itself
    return true;                                 // query: everything before it
  };
  row_softmax_attention(in, opt, visible, o);
}

}  // namespace polyattn::reference
