// polyattn/reference/dhsa.hpp — naive DHSA (Xiong et al. 2025, §3; sparse/dhsa.hpp): the kept
// keys of every (batch row, query block) built token by token — each key's upsampled chunk score
// S_t(qb, j) = (sqrt(n)·mean q) · (sqrt(len)·mean k of its chunk), the allowed keys sorted by
// (S_t descending, position ascending) after the sinks and the most recent `local` — and the
// attention as row_softmax_attention with that visibility, in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/reference/row_softmax.hpp"
#include "polyattn/sparse/dhsa.hpp"

namespace polyattn::reference {

/// kept[b][qb][j] (qb counted from the block of the call's first row).
inline std::vector<std::vector<std::vector<std::uint8_t>>> dhsa_mask(
    const SoftmaxInputs& in, const sparse::DhsaOptions& o,
    const std::vector<std::vector<index_t>>& bounds) {
  const SoftmaxDims d = validate(in, SoftmaxOptions{});
  const index_t off = d.S - d.T, first = off / o.block;
  const index_t nqb = d.T == 0 ? 0 : (d.S - 1) / o.block - first + 1;
  std::vector<std::vector<std::vector<std::uint8_t>>> kept(
      static_cast<std::size_t>(d.B),
      std::vector<std::vector<std::uint8_t>>(static_cast<std::size_t>(nqb),
                                             std::vector<std::uint8_t>(d.S, 0)));
  for (index_t b = 0; b < d.B; ++b) {
    const auto& c = bounds[static_cast<std::size_t>(b)];
    std::vector<index_t> chunk(static_cast<std::size_t>(d.S));
    for (std::size_t m = 0; m + 1 < c.size(); ++m)
      for (index_t j = c[m]; j < c[m + 1]; ++j)
        chunk[static_cast<std::size_t>(j)] = static_cast<index_t>(m);
    for (index_t qb = 0; qb < nqb; ++qb) {
      const index_t blk = qb + first, p0 = std::max(blk * o.block, off);
      const index_t P = std::min((blk + 1) * o.block, d.S) - 1, nA = P + 1;
      auto& row = kept[static_cast<std::size_t>(b)][static_cast<std::size_t>(qb)];
      if (nA <= o.budget) {
        std::fill(row.begin(), row.begin() + nA, 1);
        continue;
      }
      std::vector<double> st(static_cast<std::size_t>(nA));
      for (index_t j = 0; j < nA; ++j) {
        const index_t m = chunk[static_cast<std::size_t>(j)];
        const index_t c0 = c[static_cast<std::size_t>(m)], c1 = c[static_cast<std::size_t>(m + 1)];
        double s = 0.0;
        for (index_t e = 0; e < d.D; ++e) {
          double qm = 0.0, km = 0.0;
          for (index_t p = p0; p <= P; ++p)
            for (index_t h = 0; h < d.HQ; ++h) qm += in.q(b, p - off, h, e);
          for (index_t t = c0; t < c1; ++t)
            for (index_t hk = 0; hk < d.HKV; ++hk) km += in.k(b, t, hk, e);
          const double n = static_cast<double>(P - p0 + 1), len = static_cast<double>(c1 - c0);
          s += std::sqrt(n) * qm / (n * static_cast<double>(d.HQ)) * std::sqrt(len) * km /
               (len * static_cast<double>(d.HKV));
        }
        st[static_cast<std::size_t>(j)] = s;
      }
      std::vector<index_t> rest;
      index_t fixed = 0;
      for (index_t j = 0; j < nA; ++j) {
        if (j < o.sinks || j >= nA - o.local) {
          row[static_cast<std::size_t>(j)] = 1;
          ++fixed;
        } else {
          rest.push_back(j);
        }
      }
      std::stable_sort(rest.begin(), rest.end(), [&st](index_t x, index_t y) {
        return st[static_cast<std::size_t>(x)] > st[static_cast<std::size_t>(y)];
      });
      for (index_t t = 0; t < o.budget - fixed && t < static_cast<index_t>(rest.size()); ++t)
        row[static_cast<std::size_t>(rest[static_cast<std::size_t>(t)])] = 1;
    }
  }
  return kept;
}

/// DHSA attention in double: causal softmax over the kept keys of each row's block.
template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void dhsa_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                    const sparse::DhsaOptions& o, const std::vector<std::vector<index_t>>& bounds,
                    TensorView<Out, 4> out) {
  const auto kept = dhsa_mask(in, o, bounds);
  const SoftmaxDims d = validate(in, opt);
  const index_t first = (d.S - d.T) / o.block;
  row_softmax_attention<Out>(
      in, opt,
      [&](index_t n, index_t, index_t p, index_t j) {
        return kept[static_cast<std::size_t>(n)][static_cast<std::size_t>(p / o.block - first)]
                   [static_cast<std::size_t>(j)] != 0;
      },
      out);
}

}  // namespace polyattn::reference
