// polyattn/reference/row_softmax.hpp — naive double-precision softmax attention with a visibility
// predicate and a re-weighting of each row's softmax weights: the common frame of the papers'
// references (BlockRank's mask, ACT's calibration, …).
//
// For every sequence n (batch row, or packed sequence of cu_seqlens), query head h, query row i
// at key position p = i + S_n − T_n, kv head h / (HQ/HKV):
//   J   = { j : options(p, j) ∧ visible(n, h, p, j) }     options: causal, window, sink tokens,
//                                                          block mask as in softmax.hpp
//   s_j = scale · q_i·k_j,   A_j = e^{s_j − max s} / Σ_{J} e^{s − max s}     (j ∈ J)
//   A  ← reweight(n, h, p, J, A)                          (identity by default)
//   o_i = Σ_{j ∈ J} A_j v_j                               (zeros when J is empty)
// The options' score modifiers (softcap, ALiBi, forgetting gate, sink logit) are not part of this
// frame: passing one throws polyattn::Error. Plain loops in double, one row at a time.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::reference {

/// No re-weighting: the softmax weights as they are.
struct KeepWeights {
  void operator()(index_t, index_t, index_t, const std::vector<index_t>&,
                  std::vector<double>&) const noexcept {}
};

template <class Out, class Visible, class Reweight = KeepWeights>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void row_softmax_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, Visible visible,
                           TensorView<Out, 4> o, Reweight reweight = {}) {
  const SoftmaxDims d = validate(in, opt, o);
  if (opt.softcap > 0.0 || !in.alibi_slopes.absent() || !in.g.absent() || !in.sink.absent())
    throw Error("opt", "row_softmax_attention takes no score modifiers");
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
  std::vector<index_t> J;
  std::vector<double> s, out(static_cast<std::size_t>(d.Dv));
  for (std::size_t n = 0; n < seqs.size(); ++n) {
    const Seq& sq = seqs[n];
    for (index_t h = 0; h < d.HQ; ++h) {
      const index_t hk = h / d.group;
      for (index_t i = 0; i < sq.nq; ++i) {
        const index_t p = i + sq.nk - sq.nq;
        J.clear();
        for (index_t j = 0; j < sq.nk; ++j) {
          const bool causal_ok = !opt.causal || j <= p;
          const bool window_ok = opt.window == 0 || (j <= p && j > p - opt.window);
          const bool block_ok =
              opt.block_mask == nullptr ||
              opt.block_mask->visible(sq.b, h, (sq.q0 + i) / opt.block_mask->block_q(),
                                      (sq.k0 + j) / opt.block_mask->block_k());
          const bool sink_ok = j < opt.sink_tokens;
          if (causal_ok && (sink_ok || (window_ok && block_ok)) &&
              visible(static_cast<index_t>(n), h, p, j))
            J.push_back(j);
        }
        std::fill(out.begin(), out.end(), 0.0);
        if (!J.empty()) {
          s.assign(J.size(), 0.0);
          double m = -INFINITY;
          for (std::size_t r = 0; r < J.size(); ++r) {
            double dot = 0.0;
            for (index_t e = 0; e < d.D; ++e)
              dot += static_cast<double>(in.q(sq.b, sq.q0 + i, h, e)) *
                     static_cast<double>(in.k(sq.b, sq.k0 + J[r], hk, e));
            s[r] = d.scale * dot;
            m = std::max(m, s[r]);
          }
          double den = 0.0;
          for (double& x : s) den += x = std::exp(x - m);
          for (double& x : s) x /= den;
          reweight(static_cast<index_t>(n), h, p, J, s);
          for (std::size_t r = 0; r < J.size(); ++r)
            for (index_t e = 0; e < d.Dv; ++e)
              out[static_cast<std::size_t>(e)] +=
                  s[r] * static_cast<double>(in.v(sq.b, sq.k0 + J[r], hk, e));
        }
        for (index_t e = 0; e < d.Dv; ++e)
          o(sq.b, sq.q0 + i, h, e) = static_cast<Out>(out[static_cast<std::size_t>(e)]);
      }
    }
  }
}

}  // namespace polyattn::reference
