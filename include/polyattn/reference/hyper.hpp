// polyattn/reference/hyper.hpp — naive double-precision HyperAttention without causal mask (Han et
// al. 2024, Algorithms 2–3), following the authors' forward_no_causal_mask step by step: angular
// LSH codes in Gray order, stable sorts of queries and keys, exact attention of each sorted query
// block to its sorted key block (lse_1, o_1), attention of every query to the m sampled key ranks
// that fall outside its block (each sample its own key, duplicates included; lse_2 + log(S/m),
// o_2), merged as (e^{lse_1} o_1 + e^{lse_2} o_2) / (e^{lse_1} + e^{lse_2}), written back to the
// query's position.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::reference {

// The steps both HyperAttention references take (this file and hyper_causal.hpp).
namespace hyper_steps {

// Gray code of every r-bit LSH bin (the authors' order of the angular-LSH buckets).
inline std::vector<std::int32_t> gray_codes(index_t r) {
  std::vector<std::int32_t> gray{0, 1};
  for (index_t k = 2; k <= r; ++k)
    for (std::int64_t i = static_cast<std::int64_t>(gray.size()) - 1; i >= 0; --i)
      gray.push_back(gray[static_cast<std::size_t>(i)] + (1 << (k - 1)));
  return gray;
}

// The Gray-ordered angular-LSH code of row (b, t, xh) of x: bit k is x·proj[:, k] > 0.
inline std::int32_t lsh_code(const ElementView<4>& x, index_t b, index_t t, index_t xh, index_t D,
                             const std::vector<float>& proj, index_t r,
                             const std::vector<std::int32_t>& gray) {
  int bin = 0;
  for (index_t k = 0; k < r; ++k) {
    double dot = 0.0;
    for (index_t e = 0; e < D; ++e)
      dot += static_cast<double>(x(b, t, xh, e)) * proj[static_cast<std::size_t>(e * r + k)];
    bin += dot > 0.0 ? (1 << k) : 0;
  }
  return gray[static_cast<std::size_t>(bin)];
}

// Softmax of query (b, i, h) over `keys` of kv head hk: out [Dv] = Σ p_j v_j; returns its lse
// plus logw (−inf, out zero, when there are no keys).
inline double softmax_over_keys(const SoftmaxInputs& in, const SoftmaxDims& d, index_t b, index_t i,
                                index_t h, index_t hk, const std::vector<index_t>& keys,
                                double logw, double* out) {
  for (index_t e = 0; e < d.Dv; ++e) out[e] = 0.0;
  if (keys.empty()) return -std::numeric_limits<double>::infinity();
  std::vector<double> s;
  for (const index_t j : keys) {
    double dot = 0.0;
    for (index_t e = 0; e < d.D; ++e)
      dot += static_cast<double>(in.q(b, i, h, e)) * in.k(b, j, hk, e);
    s.push_back(d.scale * dot);
  }
  const double mx = *std::max_element(s.begin(), s.end());
  double z = 0.0;
  for (std::size_t c = 0; c < keys.size(); ++c) {
    const double w = std::exp(s[c] - mx);
    z += w;
    for (index_t e = 0; e < d.Dv; ++e) out[e] += w * in.v(b, keys[c], hk, e);
  }
  for (index_t e = 0; e < d.Dv; ++e) out[e] /= z;
  return mx + std::log(z) + logw;
}

}  // namespace hyper_steps

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void hyper_attention(const SoftmaxInputs& in, const std::vector<float>& proj, index_t r,
                     index_t block, const std::vector<std::int64_t>& samples, index_t m,
                     TensorView<Out, 4> o) {
  const SoftmaxDims d = validate(in, SoftmaxOptions{}, o);
  const std::vector<std::int32_t> gray = hyper_steps::gray_codes(r);
  const auto sorted = [&](const ElementView<4>& x, index_t b, index_t n, index_t xh) {
    std::vector<std::int32_t> code(static_cast<std::size_t>(n));
    for (index_t t = 0; t < n; ++t)
      code[static_cast<std::size_t>(t)] = hyper_steps::lsh_code(x, b, t, xh, d.D, proj, r, gray);
    std::vector<index_t> idx(static_cast<std::size_t>(n));
    std::iota(idx.begin(), idx.end(), index_t{0});
    std::stable_sort(idx.begin(), idx.end(), [&](index_t a, index_t c) {
      return code[static_cast<std::size_t>(a)] < code[static_cast<std::size_t>(c)];
    });
    return idx;
  };
  const index_t qbs = d.T / (d.S / block);
  for (index_t b = 0; b < d.B; ++b)
    for (index_t h = 0; h < d.HQ; ++h) {
      const index_t hk = h / d.group;
      const std::vector<index_t> qo = sorted(in.q, b, d.T, h), ko = sorted(in.k, b, d.S, hk);
      for (index_t t = 0; t < d.T; ++t) {
        const index_t i = qo[static_cast<std::size_t>(t)], blk = t / qbs;
        std::vector<index_t> in_block, sampled;
        for (index_t rank = blk * block; rank < (blk + 1) * block; ++rank)
          in_block.push_back(ko[static_cast<std::size_t>(rank)]);
        for (index_t c = 0; c < m; ++c) {
          const std::int64_t rank = samples[static_cast<std::size_t>((b * d.HQ + h) * m + c)];
          if (rank / block != blk) sampled.push_back(ko[static_cast<std::size_t>(rank)]);
        }
        std::vector<double> o1(static_cast<std::size_t>(d.Dv)), o2(o1.size());
        const double l1 =
            hyper_steps::softmax_over_keys(in, d, b, i, h, hk, in_block, 0.0, o1.data());
        const double l2 = hyper_steps::softmax_over_keys(
            in, d, b, i, h, hk, sampled,
            std::log(static_cast<double>(d.S) / static_cast<double>(m)), o2.data());
        const double c1 = l2 == -INFINITY ? 1.0 : 1.0 / (1.0 + std::exp(l2 - l1));
        for (index_t e = 0; e < d.Dv; ++e)
          o(b, i, h, e) = static_cast<Out>(c1 * o1[static_cast<std::size_t>(e)] +
                                           (1.0 - c1) * o2[static_cast<std::size_t>(e)]);
      }
    }
}

}  // namespace polyattn::reference
