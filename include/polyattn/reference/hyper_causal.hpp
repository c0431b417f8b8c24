// polyattn/reference/hyper_causal.hpp — naive double-precision causal HyperAttention (Han et al.
// 2024, §3.2), following the authors' recursive forward(causal=True) step by step: a segment of
// at most min_len rows is exact causal attention (o, lse); a longer one is split into halves,
// each handled recursively, and the second half's queries attend to the first half's keys by the
// estimator without mask (exact when the half is shorter than min_len; else angular-LSH codes in
// Gray order, stable sorts, exact attention of each sorted query block of b rows to its sorted key
// block, attention to the m sampled key ranks outside the block, each sample its own key,
// lse + log(n_half/m), merged by lse), merged with the second half's own result by lse. Samples
// as softmax/hyper_causal.hpp: [B, HQ, 2^L − 1, m], off-diagonal blocks in level order.
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
#include "polyattn/reference/hyper.hpp"

namespace polyattn::reference {

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void hyper_causal_attention(const SoftmaxInputs& in, const std::vector<float>& proj, index_t r,
                            index_t block, index_t min_len,
                            const std::vector<std::int64_t>& samples, index_t m,
                            TensorView<Out, 4> o) {
  const SoftmaxDims d = validate(in, SoftmaxOptions{}, o);
  const double ninf = -std::numeric_limits<double>::infinity();
  const std::vector<std::int32_t> gray = hyper_steps::gray_codes(r);
  index_t L = 0;
  for (index_t n = d.T; n > min_len; n /= 2) ++L;
  const index_t nblocks = (index_t{1} << L) - 1;

  struct Rows {  // o [n, Dv] and lse [n] of rows [a, a + n)
    std::vector<double> o, lse;
  };
  for (index_t b = 0; b < d.B; ++b)
    for (index_t h = 0; h < d.HQ; ++h) {
      const index_t hk = h / d.group;
      const auto code = [&](const ElementView<4>& x, index_t t, index_t xh) {
        return hyper_steps::lsh_code(x, b, t, xh, d.D, proj, r, gray);
      };
      // Softmax of query i over a list of keys, lse shifted by logw.
      const auto attend = [&](index_t i, const std::vector<index_t>& keys, double logw,
                              double* out) {
        return hyper_steps::softmax_over_keys(in, d, b, i, h, hk, keys, logw, out);
      };
      // add_self_attentions, with the exact lse.
      const auto merge = [&](double* o1, double& l1, const double* o2, double l2) {
        if (l2 == ninf) return;
        const double c = l1 == ninf ? 0.0 : 1.0 / (1.0 + std::exp(l2 - l1));
        for (index_t e = 0; e < d.Dv; ++e) o1[e] = c * o1[e] + (1.0 - c) * o2[e];
        l1 = std::max(l1, l2) + std::log1p(std::exp(-std::fabs(l1 - l2)));
      };
      // The estimator without mask: queries [qa, qa + n) against keys [ka, ka + n).
      const auto unmasked = [&](index_t qa, index_t ka, index_t n, const std::int64_t* smp) {
        Rows res{std::vector<double>(static_cast<std::size_t>(n * d.Dv)),
                 std::vector<double>(static_cast<std::size_t>(n))};
        std::vector<index_t> keys;
        if (n < min_len) {
          for (index_t j = ka; j < ka + n; ++j) keys.push_back(j);
          for (index_t t = 0; t < n; ++t)
            res.lse[static_cast<std::size_t>(t)] =
                attend(qa + t, keys, 0.0, res.o.data() + t * d.Dv);
          return res;
        }
        std::vector<std::int32_t> qc, kc;
        for (index_t t = 0; t < n; ++t) qc.push_back(code(in.q, qa + t, h));
        for (index_t t = 0; t < n; ++t) kc.push_back(code(in.k, ka + t, hk));
        std::vector<index_t> qo(static_cast<std::size_t>(n)), ko(static_cast<std::size_t>(n));
        std::iota(qo.begin(), qo.end(), index_t{0});
        std::iota(ko.begin(), ko.end(), index_t{0});
        std::stable_sort(qo.begin(), qo.end(), [&](index_t x, index_t y) {
          return qc[static_cast<std::size_t>(x)] < qc[static_cast<std::size_t>(y)];
        });
        std::stable_sort(ko.begin(), ko.end(), [&](index_t x, index_t y) {
          return kc[static_cast<std::size_t>(x)] < kc[static_cast<std::size_t>(y)];
        });
        std::vector<double> o2(static_cast<std::size_t>(d.Dv));
        for (index_t rank = 0; rank < n; ++rank) {
          const index_t t = qo[static_cast<std::size_t>(rank)], blk = rank / block;
          keys.clear();
          for (index_t x = blk * block; x < (blk + 1) * block; ++x)
            keys.push_back(ka + ko[static_cast<std::size_t>(x)]);
          double l1 = attend(qa + t, keys, 0.0, res.o.data() + t * d.Dv);
          if (n > block) {
            keys.clear();
            for (index_t c = 0; c < m; ++c)
              if (smp[c] / block != blk) keys.push_back(ka + ko[static_cast<std::size_t>(smp[c])]);
            const double l2 = attend(
                qa + t, keys, std::log(static_cast<double>(n) / static_cast<double>(m)), o2.data());
            merge(res.o.data() + t * d.Dv, l1, o2.data(), l2);
          }
          res.lse[static_cast<std::size_t>(t)] = l1;
        }
        return res;
      };
      // The authors' causal recursion on rows [a, a + n) at level l, segment s.
      const auto causal = [&](const auto& self, index_t a, index_t n, index_t l,
                              index_t s) -> Rows {
        Rows res{std::vector<double>(static_cast<std::size_t>(n * d.Dv)),
                 std::vector<double>(static_cast<std::size_t>(n))};
        if (n <= min_len) {
          std::vector<index_t> keys;
          for (index_t t = 0; t < n; ++t) {
            keys.push_back(a + t);
            res.lse[static_cast<std::size_t>(t)] =
                attend(a + t, keys, 0.0, res.o.data() + t * d.Dv);
          }
          return res;
        }
        const index_t half = n / 2;
        const Rows up = self(self, a, half, l + 1, 2 * s);
        const Rows down = self(self, a + half, half, l + 1, 2 * s + 1);
        const std::int64_t* smp =
            samples.data() + ((b * d.HQ + h) * nblocks + (index_t{1} << l) - 1 + s) * m;
        const Rows off = unmasked(a + half, a, half, smp);
        std::copy(up.o.begin(), up.o.end(), res.o.begin());
        std::copy(up.lse.begin(), up.lse.end(), res.lse.begin());
        std::copy(down.o.begin(), down.o.end(), res.o.begin() + half * d.Dv);
        std::copy(down.lse.begin(), down.lse.end(), res.lse.begin() + half);
        for (index_t t = 0; t < half; ++t)
          merge(res.o.data() + (half + t) * d.Dv, res.lse[static_cast<std::size_t>(half + t)],
                off.o.data() + t * d.Dv, off.lse[static_cast<std::size_t>(t)]);
        return res;
      };
      const Rows all = causal(causal, 0, d.T, 0, 0);
      for (index_t i = 0; i < d.T; ++i)
        for (index_t e = 0; e < d.Dv; ++e)
          o(b, i, h, e) = static_cast<Out>(all.o[static_cast<std::size_t>(i * d.Dv + e)]);
    }
}

}  // namespace polyattn::reference
