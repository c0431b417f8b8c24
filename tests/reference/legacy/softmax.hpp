// tests/reference/legacy/softmax.hpp — frozen copy of include/polyattn/reference/softmax.hpp as of faca67a
// (namespace reference_legacy), kept only while test_reference_parity compares the Eigen rewrite
// with it.
// polyattn/reference/softmax.hpp — naive double-precision softmax attention (SPEC §3).
//
// For every (sequence, query head h, query row i), with p = i + S − T, kv head h / (HQ/HKV):
//   s_j = scale · q_i·k_j                        (scale default D^-0.5)
//   s_j ← c·tanh(s_j / c)                         (softcap c > 0)
//   s_j ← s_j − slope_h·|p − j|                   (ALiBi, FlashAttention convention)
//   s_j ← s_j + G_p − G_j,  G = inclusive cumsum of g over key positions (forgetting attention)
//   m = max(max_{j visible} s_j, sink_h)
//   o_i = Σ_{j visible} exp(s_j − m) v_j / (Σ_{j visible} exp(s_j − m) + exp(sink_h − m))
// Visibility: causal j ≤ p; window p − w < j ≤ p; block mask; keys j < sink_tokens are exempt
// from window and block mask. A query with no visible key outputs zeros. Varlen: each packed
// sequence attends within itself (T == S per sequence) and the gate cumsum restarts.
// Straightforward materialised code: full score rows, no SIMD, no tiling, doubles throughout.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::reference_legacy {

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void softmax_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, TensorView<Out, 4> o) {
  const SoftmaxDims d = validate(in, opt, o);  // throws before any output is written

  // Work list: (batch row, first query row, #queries, first key row, #keys).
  struct Seq {
    index_t b, q0, nq, k0, nk;
  };
  std::vector<Seq> seqs;
  if (d.varlen) {
    for (std::size_t n = 0; n + 1 < in.cu_seqlens.size(); ++n) {
      const index_t beg = in.cu_seqlens[n], len = in.cu_seqlens[n + 1] - in.cu_seqlens[n];
      seqs.push_back({0, beg, len, beg, len});
    }
  } else {
    for (index_t b = 0; b < d.B; ++b) seqs.push_back({b, 0, d.T, 0, d.S});
  }

  const double ninf = -std::numeric_limits<double>::infinity();
  std::vector<double> s, G, acc(static_cast<std::size_t>(d.Dv));
  std::vector<char> vis;

  for (const Seq& sq : seqs) {
    s.assign(static_cast<std::size_t>(sq.nk), 0.0);
    vis.assign(static_cast<std::size_t>(sq.nk), 0);
    for (index_t h = 0; h < d.HQ; ++h) {
      const index_t hk = h / d.group;

      // G_j = Σ_{r ≤ j} g_r over this sequence's keys.
      G.assign(static_cast<std::size_t>(sq.nk), 0.0);
      if (!in.g.absent()) {
        double run = 0.0;
        for (index_t j = 0; j < sq.nk; ++j) {
          run += static_cast<double>(in.g(sq.b, sq.k0 + j, h));
          G[static_cast<std::size_t>(j)] = run;
        }
      }

      for (index_t i = 0; i < sq.nq; ++i) {
        const index_t p = i + sq.nk - sq.nq;  // absolute key position of this query

        bool any = false;
        for (index_t j = 0; j < sq.nk; ++j) {
          const bool causal_ok = !opt.causal || j <= p;
          const bool window_ok = opt.window == 0 || (j <= p && j > p - opt.window);
          const bool block_ok =
              opt.block_mask == nullptr ||
              opt.block_mask->visible(sq.b, h, (sq.q0 + i) / opt.block_mask->block_q(),
                                      (sq.k0 + j) / opt.block_mask->block_k());
          const bool sink_ok = j < opt.sink_tokens;
          const bool visible = causal_ok && (sink_ok || (window_ok && block_ok));
          vis[static_cast<std::size_t>(j)] = visible ? 1 : 0;
          if (!visible) continue;
          any = true;

          double dot = 0.0;
          for (index_t c = 0; c < d.D; ++c)
            dot += static_cast<double>(in.q(sq.b, sq.q0 + i, h, c)) *
                   static_cast<double>(in.k(sq.b, sq.k0 + j, hk, c));
          double sc = d.scale * dot;
          if (opt.softcap > 0.0) sc = opt.softcap * std::tanh(sc / opt.softcap);
          if (!in.alibi_slopes.absent())
            sc -= static_cast<double>(in.alibi_slopes(h)) * static_cast<double>(std::abs(p - j));
          if (!in.g.absent()) {
            const double Gp = p >= 0 ? G[static_cast<std::size_t>(p)] : 0.0;
            sc += Gp - G[static_cast<std::size_t>(j)];
          }
          s[static_cast<std::size_t>(j)] = sc;
        }

        std::fill(acc.begin(), acc.end(), 0.0);
        if (any) {
          double m = ninf;
          for (index_t j = 0; j < sq.nk; ++j)
            if (vis[static_cast<std::size_t>(j)] && s[static_cast<std::size_t>(j)] > m)
              m = s[static_cast<std::size_t>(j)];
          const bool has_sink = !in.sink.absent();
          const double sink = has_sink ? static_cast<double>(in.sink(h)) : 0.0;
          if (has_sink && sink > m) m = sink;

          double den = has_sink ? std::exp(sink - m) : 0.0;
          for (index_t j = 0; j < sq.nk; ++j) {
            if (!vis[static_cast<std::size_t>(j)]) continue;
            const double w = std::exp(s[static_cast<std::size_t>(j)] - m);
            den += w;
            for (index_t e = 0; e < d.Dv; ++e)
              acc[static_cast<std::size_t>(e)] += w * static_cast<double>(in.v(sq.b, sq.k0 + j, hk, e));
          }
          for (auto& a : acc) a /= den;
        }
        for (index_t e = 0; e < d.Dv; ++e)
          o(sq.b, sq.q0 + i, h, e) = static_cast<Out>(acc[static_cast<std::size_t>(e)]);
      }
    }
  }
}

}  // namespace polyattn::reference_legacy
