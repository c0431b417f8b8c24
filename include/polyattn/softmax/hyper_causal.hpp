// polyattn/softmax/hyper_causal.hpp — HyperAttention with the causal mask (Han et al. 2024,
// "HyperAttention: Long-context Attention in Near-Linear Time", §3.2 "Causal masking" and its
// Figure: the causal matrix split into two causal halves on the diagonal, handled recursively,
// and an unmasked lower-left block handled by the estimator without mask, Algorithm 3; authors'
// code github.com/insuhan/hyper-attn, models/attention/hyper_attn.py forward with causal=True),
// as a mask and a score modifier of the tiled softmax kernel.
//
// Per (batch row, query head h, kv head h / (HQ/HKV)), T = S queries at their own key positions,
// the authors' recursion over a segment of n rows [a, a + n), n_half = n / 2:
//   n ≤ min_len    exact causal attention inside the segment (a leaf)
//   otherwise      the first half and the second half recursively (each causal on its own), and
//                  the second half's queries Q₂ against the first half's keys K₁ by the estimator
//                  without mask (softmax/hyper.hpp: angular-LSH codes in Gray order, stable sort,
//                  query block rank_q / b sees key block rank_k / b, m sampled key ranks of K₁
//                  outside the block with weight n_half / m; exact when n_half < min_len), merged
//                  with the second half's own result by their lse (add_self_attentions).
// Every merge is of softmaxes over disjoint key sets, so the result is one softmax in which key
// j ≤ p of query p counts when: p and j share a leaf (weight 1); or, at the level ℓ where their
// segments split (p in Q₂, j in K₁), the level is exact, or j is in p's sorted block (weight 1),
// or j is sampled c_j times outside it (s_pj += log(c_j · n_half / m)); every other key is masked.
//
// Levels: ℓ = 0 is the whole sequence; segments at level ℓ have n_ℓ = T / 2^ℓ rows, and the
// recursion stops at the leaf length T / 2^L ≤ min_len. Samples: [B, HQ, 2^L − 1, m] ranks, one
// row of m per off-diagonal block in level order (level 0's one block, then level 1's two, …;
// inside a level by position), each rank in [0, n_half) of that level (drawn by the caller; the
// authors draw torch.randint per block). Blocks of exact levels ignore theirs.
// Differences from the authors' code: odd lengths at a recursion level (the authors pad a zero
// row, whose code then takes part in the sort) and K₁ lengths that are not a multiple of b (they
// pad with zero keys that enter the last block's softmax) are refused, not reproduced: T must be
// leaf · 2^L and every hashed level's n_half a multiple of b. The lse merge is exact (the authors
// add float eps inside the log, a relative 1e-7 per level). Not here: varlen, T ≠ S (decode: the
// authors have no decode path), tile skipping outside the leaves and exact levels (the hashed
// blocks are scattered over the positions, so those tiles are masked element by element: exact,
// not a speed path).
//
// Kernels: FlashKernelFor<Fusion<HyperCausalMask, HyperCausalShift>>, listed in
// POLYATTN_HYPER_CAUSAL_KERNELS.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/fusion.hpp"
#include "polyattn/softmax/hyper.hpp"

namespace polyattn::softmax {

/// Levels, leaves, sorted blocks and sampled shifts of one causal call. Per level ℓ < L and
/// (b, h): block[ℓ][b][h][pos] the sorted block of pos in its Q₂ or K₁ at that level (−1 where
/// the level is exact), shift[ℓ][b][h][j] = log(c_j · n_half / m) for keys of K₁ (−inf where
/// c_j = 0 or the level is exact).
struct HyperCausalPlan {
  index_t B = 0, HQ = 0, T = 0;
  index_t levels = 0, leaf = 0;
  std::vector<std::uint8_t> exact;  // [L]
  std::vector<std::int32_t> block;  // [L, B, HQ, T]
  std::vector<float> shift;         // [L, B, HQ, T]
  void check(const SoftmaxDims& d) const {
    if (B != d.B || HQ != d.HQ || T != d.T || T != d.S)
      throw Error("plan", "made for [B, HQ, T = S] = " + shape_string(std::array{B, HQ, T}));
    if (d.varlen) throw Error("cu_seqlens", "HyperAttention takes no packed sequences");
  }
};

namespace detail {
/// Leaf count L and leaf length of T rows under min_len; T must halve evenly down to the leaves.
inline index_t hyper_causal_levels(index_t T, index_t min_len) {
  index_t n = T, L = 0;
  while (n > min_len) {
    if (n % 2 != 0)
      throw Error("min_len", "T = " + std::to_string(T) + " halves to the odd length " +
                                 std::to_string(n) + " above min_len = " + std::to_string(min_len) +
                                 " (the authors pad it with a zero row; not reproduced)");
    n /= 2;
    ++L;
  }
  return L;
}
}  // namespace detail

/// Hashes, sorts and places the samples of every level (see the header comment). projections:
/// [D, r] row-major (1 ≤ r ≤ 20); block b ≥ 1; min_len ≥ 1; samples: [B, HQ, 2^L − 1, m].
/// @throws polyattn::Error ("q" for T ≠ S, "cu_seqlens", "projections", "min_len", "block",
///         "samples", the inputs')
inline HyperCausalPlan hyper_causal_plan(const SoftmaxInputs& in,
                                         const std::vector<float>& projections, index_t r,
                                         index_t block, index_t min_len,
                                         const std::vector<std::int64_t>& samples, index_t m) {
  const SoftmaxDims d = validate(in, SoftmaxOptions{});
  if (d.varlen) throw Error("cu_seqlens", "HyperAttention takes no packed sequences");
  if (d.T != d.S)
    throw Error("q", "causal HyperAttention needs T = S, got T = " + std::to_string(d.T) +
                         ", S = " + std::to_string(d.S));
  if (r < 1 || r > 20 || static_cast<index_t>(projections.size()) != d.D * r)
    throw Error("projections",
                "expected [D, r] = [" + std::to_string(d.D) + ", r] with 1 <= r <= 20");
  if (min_len < 1) throw Error("min_len", "must be >= 1, got " + std::to_string(min_len));
  if (block < 1) throw Error("block", "must be >= 1, got " + std::to_string(block));
  const index_t L = detail::hyper_causal_levels(d.T, min_len);
  HyperCausalPlan p;
  p.B = d.B, p.HQ = d.HQ, p.T = d.T, p.levels = L, p.leaf = d.T >> L;
  p.exact.assign(static_cast<std::size_t>(L), 0);
  for (index_t l = 0; l < L; ++l) {
    const index_t half = d.T >> (l + 1);
    p.exact[static_cast<std::size_t>(l)] = half < min_len ? 1 : 0;
    if (half >= min_len && half % block != 0)
      throw Error("block", "must divide the half length " + std::to_string(half) + " of level " +
                               std::to_string(l) + ", got " + std::to_string(block));
  }
  const index_t nblocks = (index_t{1} << L) - 1;
  if (m < 1 || static_cast<index_t>(samples.size()) != d.B * d.HQ * nblocks * m)
    throw Error("samples", "expected [B, HQ, 2^L - 1, m] = [" + std::to_string(d.B) + "," +
                               std::to_string(d.HQ) + "," + std::to_string(nblocks) +
                               ",m] with m >= 1");
  for (index_t bh = 0; bh < d.B * d.HQ; ++bh)
    for (index_t l = 0, o = 0; l < L; ++l)
      for (index_t s = 0; s < (index_t{1} << l); ++s, ++o)
        for (index_t t = 0; t < m; ++t) {
          const std::int64_t x = samples[static_cast<std::size_t>((bh * nblocks + o) * m + t)];
          if (x < 0 || x >= (d.T >> (l + 1)))
            throw Error("samples", "a rank outside [0, n_half) of level " + std::to_string(l));
        }
  const std::vector<std::int32_t> gray = hyper_gray_order(r);
  const std::size_t plane = static_cast<std::size_t>(d.B * d.HQ * d.T);
  p.block.assign(static_cast<std::size_t>(L) * plane, -1);
  p.shift.assign(static_cast<std::size_t>(L) * plane, -INFINITY);
  const auto codes = [&](const ElementView<4>& x, index_t b, index_t xh) {
    std::vector<std::int32_t> c(static_cast<std::size_t>(d.T));
    for (index_t t = 0; t < d.T; ++t) {
      std::int32_t bin = 0;
      for (index_t k = 0; k < r; ++k) {
        double dot = 0.0;
        for (index_t e = 0; e < d.D; ++e)
          dot += static_cast<double>(x(b, t, xh, e)) *
                 static_cast<double>(projections[static_cast<std::size_t>(e * r + k)]);
        if (dot > 0.0) bin |= std::int32_t{1} << k;
      }
      c[static_cast<std::size_t>(t)] = gray[static_cast<std::size_t>(bin)];
    }
    return c;
  };
  // Positions [a, a + n) in stable code order.
  const auto order = [](const std::vector<std::int32_t>& c, index_t a, index_t n) {
    std::vector<index_t> o(static_cast<std::size_t>(n));
    std::iota(o.begin(), o.end(), a);
    std::stable_sort(o.begin(), o.end(), [&c](index_t x, index_t y) {
      return c[static_cast<std::size_t>(x)] < c[static_cast<std::size_t>(y)];
    });
    return o;
  };
  std::vector<index_t> count(static_cast<std::size_t>(d.T));
  for (index_t b = 0; b < d.B; ++b)
    for (index_t h = 0; h < d.HQ; ++h) {
      const std::vector<std::int32_t> qc = codes(in.q, b, h), kc = codes(in.k, b, h / d.group);
      const index_t bh = b * d.HQ + h;
      for (index_t l = 0, o = 0; l < L; ++l) {
        const index_t n = d.T >> l, half = n / 2;
        std::int32_t* blk = p.block.data() + static_cast<std::size_t>(l) * plane + bh * d.T;
        float* sh = p.shift.data() + static_cast<std::size_t>(l) * plane + bh * d.T;
        for (index_t s = 0; s < (index_t{1} << l); ++s, ++o) {
          if (p.exact[static_cast<std::size_t>(l)]) continue;
          const index_t a = s * n;
          const std::vector<index_t> qo = order(qc, a + half, half), ko = order(kc, a, half);
          for (index_t rank = 0; rank < half; ++rank) {
            blk[qo[static_cast<std::size_t>(rank)]] = static_cast<std::int32_t>(rank / block);
            blk[ko[static_cast<std::size_t>(rank)]] = static_cast<std::int32_t>(rank / block);
          }
          std::fill(count.begin() + a, count.begin() + a + half, 0);
          for (index_t t = 0; t < m; ++t)
            ++count[static_cast<std::size_t>(ko[static_cast<std::size_t>(
                samples[static_cast<std::size_t>((bh * nblocks + o) * m + t)])])];
          for (index_t j = a; j < a + half; ++j)
            if (count[static_cast<std::size_t>(j)] > 0)
              sh[j] = static_cast<float>(
                  std::log(static_cast<double>(count[static_cast<std::size_t>(j)]) *
                           static_cast<double>(half) / static_cast<double>(m)));
        }
      }
    }
  return p;
}

namespace detail {
struct HyperCausalHead {
  const std::uint8_t* exact;  // [L]
  const std::int32_t* block;  // level ℓ at block + ℓ·plane
  const float* shift;         // likewise
  std::size_t plane;          // B·HQ·T
  index_t levels, leaf, T;
  // The methods are templates on the Arch tag so that each ISA's kernel calls its own copy.
  /// The level at which the segments of p and j split (−1: same leaf).
  template <simd::SimdArch A>
  index_t level(index_t p, index_t j) const noexcept {
    const auto x = static_cast<std::uint64_t>((p / leaf) ^ (j / leaf));
    if (x == 0) return -1;
    return levels - static_cast<index_t>(std::bit_width(x));
  }
  /// Whether key j ≤ p counts for query p.
  template <simd::SimdArch A>
  bool visible(index_t p, index_t j) const noexcept {
    if (j > p) return false;
    const index_t l = level<A>(p, j);
    if (l < 0 || exact[l]) return true;
    const std::size_t o = static_cast<std::size_t>(l) * plane;
    return block[o + static_cast<std::size_t>(p)] == block[o + static_cast<std::size_t>(j)] ||
           shift[o + static_cast<std::size_t>(j)] != -INFINITY;
  }
  /// The shift of key j for query p (0 unless sampled outside p's block).
  template <simd::SimdArch A>
  float shift_of(index_t p, index_t j) const noexcept {
    if (p < 0 || p >= T || j < 0 || j >= p) return 0.f;
    const index_t l = level<A>(p, j);
    if (l < 0 || exact[l]) return 0.f;
    const std::size_t o = static_cast<std::size_t>(l) * plane;
    const float s = shift[o + static_cast<std::size_t>(j)];
    if (block[o + static_cast<std::size_t>(p)] == block[o + static_cast<std::size_t>(j)] ||
        s == -INFINITY)
      return 0.f;
    return s;
  }
  /// Full when the tile lies in one leaf, or its rows in one Q₂ and its keys in that segment's
  /// K₁ at an exact level; Partial otherwise.
  template <simd::SimdArch A>
  TileClass classify(RowRange rows, KeyRange keys) const noexcept {
    const index_t r0 = rows.p_first() / leaf, r1 = rows.p_last() / leaf;
    const index_t k0 = keys.j0 / leaf, k1 = (keys.j1 - 1) / leaf;
    if (r0 == r1 && k0 == k1 && r0 == k0) return TileClass::Full;
    const auto x = static_cast<std::uint64_t>(r0 ^ k0);
    if (x == 0) return TileClass::Partial;
    const int bit = std::bit_width(x) - 1;
    const bool rows_q2 = (r0 >> bit) == (r1 >> bit) && ((r0 >> bit) & 1) == 1;
    const bool keys_k1 = (k0 >> bit) == (k1 >> bit) && (k0 >> bit) == ((r0 >> bit) ^ 1);
    if (rows_q2 && keys_k1 && exact[levels - 1 - bit]) return TileClass::Full;
    return TileClass::Partial;
  }
};
template <simd::SimdArch A>  // per-ISA symbol, as the hooks that call it
HyperCausalHead hyper_causal_head(const HyperCausalPlan& p, const HeadContext& c) {
  const index_t bh = c.batch * p.HQ + c.head;
  return {p.exact.data(),
          p.block.data() + bh * p.T,
          p.shift.data() + bh * p.T,
          static_cast<std::size_t>(p.B * p.HQ * p.T),
          p.levels,
          std::max<index_t>(p.leaf, 1),
          p.T};
}
}  // namespace detail

/// Keys of the query's leaf, of exact levels, of its sorted block and the sampled keys.
struct HyperCausalMask {
  const HyperCausalPlan* plan = nullptr;
  struct Bound {
    detail::HyperCausalHead g;
    template <simd::SimdArch A = simd::scalar_arch>
    bool visible(index_t, index_t p, index_t j) const noexcept {
      return g.template visible<A>(p, j);
    }
    template <simd::SimdArch A = simd::scalar_arch>
    TileClass classify(RowRange rows, KeyRange keys) const noexcept {
      return g.template classify<A>(rows, keys);
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext& c) const {
    return {detail::hyper_causal_head<A>(*plan, c)};
  }
  void check(const SoftmaxDims& d) const { check::not_null("plan", plan).check(d); }
};
static_assert(FusionMask<HyperCausalMask>);

/// log(c_j · n_half / m) on sampled keys outside the query's block at their split level.
struct HyperCausalShift {
  const HyperCausalPlan* plan = nullptr;
  struct Bound {
    detail::HyperCausalHead g;
    template <simd::SimdArch A>
    void apply(float* s, const RowContext& c) const noexcept {
      for (index_t k = 0; k < c.n; ++k) s[k] += g.template shift_of<A>(c.p, c.j0 + k);
    }
    template <simd::SimdArch A>
    void apply_keys(float* s, const KeyContext& c) const noexcept {
      for (index_t r = 0; r < c.n; ++r) s[r] += g.template shift_of<A>(c.p0 + r, c.j);
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext& c) const {
    return {detail::hyper_causal_head<A>(*plan, c)};
  }
  void check(const SoftmaxDims& d) const { check::not_null("plan", plan).check(d); }
};
static_assert(FusionModifier<HyperCausalShift>);

/// Causal HyperAttention (see the header comment); opt must be causal. The options' window,
/// sink tokens and block mask compose (visible under both).
/// @throws polyattn::Error ("opt" when not causal, "plan", the inputs'), before anything is
///         written
template <Executor E = Serial>
void hyper_causal_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                            const HyperCausalPlan& plan, View4<float> o, const E& exec = E{}) {
  if (!opt.causal) throw Error("opt", "causal HyperAttention needs opt.causal");
  flash_attention(in, opt, fuse(HyperCausalMask{&plan}, HyperCausalShift{&plan}),
                  FlashOutputs{o, {}, {}}, exec);
}

}  // namespace polyattn::softmax

// The kernel of a project's per-ISA units for causal HyperAttention (see the header comment).
#define POLYATTN_HYPER_CAUSAL_KERNELS(X)                             \
  X(::polyattn::softmax::FlashKernelFor<::polyattn::softmax::Fusion< \
        ::polyattn::softmax::HyperCausalMask, ::polyattn::softmax::HyperCausalShift>>)
