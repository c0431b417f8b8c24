// polyattn/reference/longheads.hpp — naive double-precision LongHeads (Lu et al. 2024, §3),
// written from the definitions (chunk g = positions [g·w, (g+1)·w), scale = D^−½):
//   chunk key    r_g = softmax(scale·c̄_g K_gᵀ) K_g,  c̄_g = mean_t softmax(scale·q_t K_gᵀ) V_g
//   selection    {0, c − 1, c} ∪ top n − 3 of chunks 1 … c − 2 by q·r_g (all chunks ≤ c when
//                there are at most n), c = ⌊p / w⌋
//   attention    one softmax over the keys j ≤ p of the selected chunks (and the options' masks)
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "polyattn/reference/row_softmax.hpp"

namespace polyattn::reference {

/// r of every complete chunk: [B, HQ, ⌊S/w⌋, D] (T == S).
inline std::vector<double> longheads_chunk_keys(const SoftmaxInputs& in, index_t w) {
  const SoftmaxDims d = validate(in, SoftmaxOptions{});
  const index_t G = d.S / w;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.D));
  std::vector<double> r(static_cast<std::size_t>(d.B * d.HQ * G * d.D), 0.0);
  for (index_t b = 0; b < d.B; ++b)
    for (index_t h = 0; h < d.HQ; ++h)
      for (index_t g = 0; g < G; ++g) {
        const index_t hk = h / d.group;
        // softmax over the chunk's keys of scale·x·k (x of dimension D, zero beyond Dv for c̄)
        const auto attend = [&](const std::vector<double>& x) {
          std::vector<double> a(static_cast<std::size_t>(w));
          for (index_t j = 0; j < w; ++j)
            for (index_t e = 0; e < d.D; ++e)
              a[static_cast<std::size_t>(j)] +=
                  scale * x[static_cast<std::size_t>(e)] * in.k(b, g * w + j, hk, e);
          const double m = *std::max_element(a.begin(), a.end());
          double z = 0.0;
          for (double& v : a) z += v = std::exp(v - m);
          for (double& v : a) v /= z;
          return a;
        };
        std::vector<double> cbar(static_cast<std::size_t>(std::max(d.D, d.Dv)), 0.0);
        for (index_t t = 0; t < w; ++t) {
          std::vector<double> q(static_cast<std::size_t>(d.D));
          for (index_t e = 0; e < d.D; ++e)
            q[static_cast<std::size_t>(e)] = in.q(b, g * w + t, h, e);
          const std::vector<double> a = attend(q);
          for (index_t j = 0; j < w; ++j)
            for (index_t e = 0; e < d.Dv; ++e)
              cbar[static_cast<std::size_t>(e)] += a[static_cast<std::size_t>(j)] *
                                                   in.v(b, g * w + j, hk, e) /
                                                   static_cast<double>(w);
        }
        cbar.resize(static_cast<std::size_t>(d.D), 0.0);
        const std::vector<double> a = attend(cbar);
        for (index_t j = 0; j < w; ++j)
          for (index_t e = 0; e < d.D; ++e)
            r[static_cast<std::size_t>(((b * d.HQ + h) * G + g) * d.D + e)] +=
                a[static_cast<std::size_t>(j)] * in.k(b, g * w + j, hk, e);
      }
  return r;
}

/// Each query row's chunks [B·HQ·T] (ascending), from chunk keys [B, HQ, G, D].
inline std::vector<std::vector<index_t>> longheads_select(const SoftmaxInputs& in,
                                                          const std::vector<double>& r, index_t G,
                                                          index_t w, index_t n) {
  const SoftmaxDims d = validate(in, SoftmaxOptions{});
  std::vector<std::vector<index_t>> sel(static_cast<std::size_t>(d.B * d.HQ * d.T));
  for (index_t b = 0; b < d.B; ++b)
    for (index_t h = 0; h < d.HQ; ++h)
      for (index_t i = 0; i < d.T; ++i) {
        auto& s = sel[static_cast<std::size_t>((b * d.HQ + h) * d.T + i)];
        const index_t p = i + d.S - d.T;
        if (p < 0) continue;
        const index_t c = p / w;
        if (c + 1 <= n) {
          for (index_t g = 0; g <= c; ++g) s.push_back(g);
          continue;
        }
        std::vector<std::pair<double, index_t>> score;
        for (index_t g = 1; g <= c - 2; ++g) {
          double x = 0.0;
          for (index_t e = 0; e < d.D; ++e)
            x += in.q(b, i, h, e) * r[static_cast<std::size_t>(((b * d.HQ + h) * G + g) * d.D + e)];
          score.push_back({-x, g});  // ascending: best first, ties to the lower chunk
        }
        std::sort(score.begin(), score.end());
        s = {0, c - 1, c};
        for (index_t k = 0; k < n - 3; ++k) s.push_back(score[static_cast<std::size_t>(k)].second);
        std::sort(s.begin(), s.end());
      }
  return sel;
}

/// Attention over each row's selected chunks (lists [B·HQ·T]).
template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void longheads_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                         const std::vector<std::vector<index_t>>& sel, index_t w,
                         TensorView<Out, 4> o) {
  const SoftmaxDims d = validate(in, opt, o);
  const auto visible = [&](index_t b, index_t h, index_t p, index_t j) {
    const index_t i = p - (d.S - d.T);
    const auto& s = sel[static_cast<std::size_t>((b * d.HQ + h) * d.T + i)];
    return j <= p && std::find(s.begin(), s.end(), j / w) != s.end();
  };
  row_softmax_attention(in, opt, visible, o);
}

}  // namespace polyattn::reference
