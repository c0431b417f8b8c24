// polyattn/reference/softmax.hpp — naive double-precision softmax attention (docs/conventions.md
// §5).
//
// For every (sequence, query head h, query row i), with p = i + S − T, kv head h / (HQ/HKV) and
// J = the keys query i sees:
//   s = scale · K_J q_i                           (scale default D^-0.5)
//   s ← c·tanh(s / c)                              (softcap c > 0)
//   s ← s − slope_h·|p − J|                        (ALiBi, FlashAttention convention)
//   s ← s + G_p − G_J,  G = inclusive cumsum of g over key positions (forgetting attention)
//   m = max(max(s), sink_h),  w = exp(s − m)
//   o_i = V_Jᵀ w / (Σ w + exp(sink_h − m))         (stable softmax, sink in the denominator only)
// Visibility: causal j ≤ p; window p − w < j ≤ p; block mask; keys j < sink_tokens are exempt
// from window and block mask. A query with no visible key outputs zeros; a NaN score makes its
// row NaN. Varlen: each packed sequence attends within itself (T == S per sequence) and the
// gate cumsum restarts. Eigen in double, one query row at a time over its visible keys J only
// (masked keys and values are never read, so a NaN there cannot leak): no tiling.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/reference/eigen_io.hpp"

namespace polyattn::reference {

namespace detail {
// One sequence of a softmax call: batch row, first query row, #queries, first key row, #keys.
struct SoftmaxSeq {
  index_t b, q0, nq, k0, nk;
};
}  // namespace detail

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void softmax_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, TensorView<Out, 4> o) {
  using detail::Arr;
  using detail::RowMat;
  using detail::Vec;
  const SoftmaxDims d = validate(in, opt, o);  // throws before any output is written

  std::vector<detail::SoftmaxSeq> seqs;
  if (d.varlen) {
    for (std::size_t n = 0; n + 1 < in.cu_seqlens.size(); ++n) {
      const index_t beg = in.cu_seqlens[n], len = in.cu_seqlens[n + 1] - in.cu_seqlens[n];
      seqs.push_back({0, beg, len, beg, len});
    }
  } else {
    for (index_t b = 0; b < d.B; ++b) seqs.push_back({b, 0, d.T, 0, d.S});
  }

  // Buffers sized once per call: a (sequence, head)'s queries Q [nq × D], keys K [nk × D] and
  // values V [nk × Dv] are their leading rows; the current query's visible keys J have their
  // scores and softmax weights in the first |J| entries of `score` and `weight`.
  RowMat Qbuf(d.T, d.D), Kbuf(d.S, d.D), Vbuf(d.S, d.Dv);
  std::vector<Eigen::Index> J;
  Arr score(d.S), weight(d.S);
  Vec oi(d.Dv);
  const Arr pos = Arr::LinSpaced(d.S, 0.0, static_cast<double>(d.S - 1));  // key position j
  Arr G(d.S);  // G_j = Σ_{r ≤ j} g_r over the current sequence's keys (first nk entries)
  for (const detail::SoftmaxSeq& sq : seqs) {
    for (index_t h = 0; h < d.HQ; ++h) {
      const index_t hk = h / d.group;
      auto Q = Qbuf.topRows(sq.nq), K = Kbuf.topRows(sq.nk), V = Vbuf.topRows(sq.nk);
      Q = detail::rows(in.q, sq.b, sq.q0, sq.nq, h).cast<double>();
      K = detail::rows(in.k, sq.b, sq.k0, sq.nk, hk).cast<double>();
      V = detail::rows(in.v, sq.b, sq.k0, sq.nk, hk).cast<double>();

      if (!in.g.absent()) {
        double run = 0.0;
        for (index_t j = 0; j < sq.nk; ++j) G(j) = run += in.g(sq.b, sq.k0 + j, h);
      }

      for (index_t i = 0; i < sq.nq; ++i) {
        const index_t p = i + sq.nk - sq.nq;  // absolute key position of this query

        J.clear();
        for (index_t j = 0; j < sq.nk; ++j) {
          const bool causal_ok = !opt.causal || j <= p;
          const bool window_ok = opt.window == 0 || (j <= p && j > p - opt.window);
          const bool block_ok =
              opt.block_mask == nullptr ||
              opt.block_mask->visible(sq.b, h, (sq.q0 + i) / opt.block_mask->block_q(),
                                      (sq.k0 + j) / opt.block_mask->block_k());
          const bool sink_ok = j < opt.sink_tokens;
          if (causal_ok && (sink_ok || (window_ok && block_ok))) J.push_back(j);
        }
        oi.setZero();  // a query that sees no key outputs zeros
        if (!J.empty()) {
          const auto n = static_cast<Eigen::Index>(J.size());
          // The score row over the visible keys: s_r = scale · q_i·k_j, j = J[r].
          auto s = score.head(n);
          for (Eigen::Index r = 0; r < n; ++r) s(r) = d.scale * K.row(J[r]).dot(Q.row(i));
          if (opt.softcap > 0.0) s = opt.softcap * (s / opt.softcap).tanh();
          if (!in.alibi_slopes.absent())
            s -= static_cast<double>(in.alibi_slopes(h)) * (static_cast<double>(p) - pos(J)).abs();
          if (!in.g.absent()) s += (p >= 0 ? G(p) : 0.0) - G(J);

          // Stable softmax, the sink logit in the denominator only.
          const bool has_sink = !in.sink.absent();
          const double sink = has_sink ? static_cast<double>(in.sink(h)) : 0.0;
          double m = s.maxCoeff();
          if (has_sink) m = std::max(m, sink);
          auto w = weight.head(n);
          w = detail::std_exp(s - m);
          const double den = w.sum() + (has_sink ? std::exp(sink - m) : 0.0);

          // V_Jᵀ w = Σ_r w_r v_{J[r]}, visible value rows only: a NaN in a masked one cannot leak.
          for (Eigen::Index r = 0; r < n; ++r) oi += w(r) * V.row(J[r]).transpose();
          oi /= den;
        }
        detail::store(o, sq.b, sq.q0 + i, h, oi);
      }
    }
  }
}

}  // namespace polyattn::reference
