// polyattn/softmax/hyper.hpp — HyperAttention's estimator without the causal mask (Han et al.
// 2024, "HyperAttention: Long-context Attention in Near-Linear Time", Algorithms 2–3: sortLSH
// block-diagonal part plus a uniformly sampled residual; authors' code
// github.com/insuhan/hyper-attn, models/attention/hyper_attn.py forward_no_causal_mask and
// angular_lsh.py), as a mask and a score modifier of the tiled softmax kernel.
//
// Per (batch row, query head h, kv head h / (HQ/HKV)):
//   hash      code(x) = gray[Σ_c 2^c·[x·u_c > 0]] with r projections u_c ([D, r]) and gray the
//             order in which consecutive codes differ in one bit (the authors' angular LSH)
//   sort      queries and keys by code (stable: ties in position order); the key block of key j
//             is rank_k(j) / b, the query block of query i is rank_q(i) / (T / (S / b))
//   sampled   m key ranks s_1 … s_m (with repetition; the caller draws them): key j has
//             multiplicity c_j = #{t : sorted key s_t = j}
//   estimate  one softmax in which key j counts when it is in the query's block (weight 1) or is
//             sampled and outside it (weight c_j·S/m):  s_ij ← s_ij + log(c_j·S/m)  for those,
//             every other key masked. This equals the authors' combination of the block attention
//             and the sampled residual (their lse + log(S/m), merged by add_self_attentions).
// Requires S % b = 0 and T % (S / b) = 0 (the authors pad with zero keys otherwise, which then
// take part in the last block's softmax; not reproduced). The causal variant (the authors recurse
// on halves and merge) is softmax/hyper_causal.hpp. Not here: tile skipping (the blocks are
// scattered over the original positions, so tiles are masked element by element: exact, not a speed
// path — a kernel that gathers the sorted blocks would be).
//
// Kernels: FlashKernelFor<Fusion<HyperMask, HyperShift>>, listed in POLYATTN_HYPER_KERNELS.
#pragma once

#include <algorithm>
#include <array>
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

namespace polyattn::softmax {

/// Blocks and sampled multiplicities of one call: [B, HQ, T] query blocks, [B, HQ, S] key blocks
/// and shifts log(c_j·S/m) (−inf where c_j = 0).
struct HyperPlan {
  index_t B = 0, HQ = 0, T = 0, S = 0;
  std::vector<std::int32_t> qblock, kblock;
  std::vector<float> shift;
  void check(const SoftmaxDims& d) const {
    if (B != d.B || HQ != d.HQ || T != d.T || S != d.S)
      throw Error("plan", "made for [B, HQ, T, S] = " + shape_string(std::array{B, HQ, T, S}));
    if (d.varlen) throw Error("cu_seqlens", "HyperAttention takes no packed sequences");
  }
};

/// The authors' Gray-code order of r-bit codes: gray(1) = [0, 1], gray(r) = [gray(r−1),
/// reversed gray(r−1) + 2^{r−1}].
inline std::vector<std::int32_t> hyper_gray_order(index_t r) {
  std::vector<std::int32_t> g{0, 1};
  for (index_t k = 2; k <= r; ++k) {
    const std::size_t n = g.size();
    for (std::size_t i = 0; i < n; ++i) g.push_back(g[n - 1 - i] + (std::int32_t{1} << (k - 1)));
  }
  return g;
}

/// Hashes, sorts and places the samples (see the header comment). projections: [D, r] row-major
/// (1 ≤ r ≤ 20); samples: [B, HQ, m] ranks in the sorted key order, each in [0, S).
/// @throws polyattn::Error ("projections", "block", "samples", "cu_seqlens", the inputs')
inline HyperPlan hyper_plan(const SoftmaxInputs& in, const std::vector<float>& projections,
                            index_t r, index_t block, const std::vector<std::int64_t>& samples,
                            index_t m) {
  const SoftmaxDims d = validate(in, SoftmaxOptions{});
  if (d.varlen) throw Error("cu_seqlens", "HyperAttention takes no packed sequences");
  if (r < 1 || r > 20 || static_cast<index_t>(projections.size()) != d.D * r)
    throw Error("projections",
                "expected [D, r] = [" + std::to_string(d.D) + ", r] with 1 <= r <= 20");
  if (block < 1 || d.S % block != 0 || d.T % (d.S / block) != 0)
    throw Error("block", "must divide S = " + std::to_string(d.S) +
                             " into blocks that divide T = " + std::to_string(d.T) + ", got " +
                             std::to_string(block));
  if (m < 1 || static_cast<index_t>(samples.size()) != d.B * d.HQ * m)
    throw Error("samples", "expected [B, HQ, m] with m >= 1");
  for (const std::int64_t s : samples)
    if (s < 0 || s >= d.S) throw Error("samples", "a rank outside [0, S)");
  const std::vector<std::int32_t> gray = hyper_gray_order(r);
  const index_t qbs = d.T / (d.S / block);
  HyperPlan p;
  p.B = d.B, p.HQ = d.HQ, p.T = d.T, p.S = d.S;
  p.qblock.assign(static_cast<std::size_t>(d.B * d.HQ * d.T), 0);
  p.kblock.assign(static_cast<std::size_t>(d.B * d.HQ * d.S), 0);
  p.shift.assign(static_cast<std::size_t>(d.B * d.HQ * d.S), -INFINITY);
  const auto codes = [&](const ElementView<4>& x, index_t b, index_t n, index_t xh) {
    std::vector<std::int32_t> c(static_cast<std::size_t>(n));
    for (index_t t = 0; t < n; ++t) {
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
  const auto order = [](const std::vector<std::int32_t>& c) {
    std::vector<index_t> o(c.size());
    std::iota(o.begin(), o.end(), index_t{0});
    std::stable_sort(o.begin(), o.end(), [&c](index_t a, index_t b) {
      return c[static_cast<std::size_t>(a)] < c[static_cast<std::size_t>(b)];
    });
    return o;
  };
  for (index_t b = 0; b < d.B; ++b)
    for (index_t h = 0; h < d.HQ; ++h) {
      const std::vector<index_t> qo = order(codes(in.q, b, d.T, h));
      const std::vector<index_t> ko = order(codes(in.k, b, d.S, h / d.group));
      const index_t bh = b * d.HQ + h;
      for (index_t rank = 0; rank < d.T; ++rank)
        p.qblock[static_cast<std::size_t>(bh * d.T + qo[static_cast<std::size_t>(rank)])] =
            static_cast<std::int32_t>(rank / qbs);
      for (index_t rank = 0; rank < d.S; ++rank)
        p.kblock[static_cast<std::size_t>(bh * d.S + ko[static_cast<std::size_t>(rank)])] =
            static_cast<std::int32_t>(rank / block);
      std::vector<index_t> count(static_cast<std::size_t>(d.S), 0);
      for (index_t t = 0; t < m; ++t)
        ++count[static_cast<std::size_t>(
            ko[static_cast<std::size_t>(samples[static_cast<std::size_t>(bh * m + t)])])];
      for (index_t j = 0; j < d.S; ++j)
        if (count[static_cast<std::size_t>(j)] > 0)
          p.shift[static_cast<std::size_t>(bh * d.S + j)] =
              static_cast<float>(std::log(static_cast<double>(count[static_cast<std::size_t>(j)]) *
                                          static_cast<double>(d.S) / static_cast<double>(m)));
    }
  return p;
}

namespace detail {
struct HyperHead {
  const std::int32_t* qblock;  // [T]
  const std::int32_t* kblock;  // [S]
  const float* shift;          // [S]
  index_t offset, T;           // S − T, T
};
template <simd::SimdArch A>  // per-ISA symbol, as the hooks that call it
HyperHead hyper_head(const HyperPlan& p, const HeadContext& c) {
  const index_t bh = c.batch * p.HQ + c.head;
  return {p.qblock.data() + bh * p.T, p.kblock.data() + bh * p.S, p.shift.data() + bh * p.S,
          c.keys - c.queries, c.queries};
}
}  // namespace detail

/// Keys in the query's sorted block, and the sampled keys.
struct HyperMask {
  const HyperPlan* plan = nullptr;
  struct Bound {
    detail::HyperHead g;
    template <simd::SimdArch A = simd::scalar_arch>
    bool visible(index_t r, index_t, index_t j) const noexcept {
      return g.qblock[r] == g.kblock[j] || g.shift[j] != -INFINITY;
    }
    template <simd::SimdArch A = simd::scalar_arch>
    TileClass classify(RowRange, KeyRange) const noexcept {
      return TileClass::Partial;  // blocks are scattered over the positions (header comment)
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext& c) const {
    return {detail::hyper_head<A>(*plan, c)};
  }
  void check(const SoftmaxDims& d) const { check::not_null("plan", plan).check(d); }
};
static_assert(FusionMask<HyperMask>);

/// log(c_j·S/m) on sampled keys outside the query's block.
struct HyperShift {
  const HyperPlan* plan = nullptr;
  struct Bound {
    detail::HyperHead g;
    template <simd::SimdArch A = simd::scalar_arch>
    float shift(index_t row, index_t j) const noexcept {
      if (row < 0 || row >= g.T || g.qblock[row] == g.kblock[j] || g.shift[j] == -INFINITY)
        return 0.f;
      return g.shift[j];
    }
    template <simd::SimdArch A>
    void apply(float* s, const RowContext& c) const noexcept {
      for (index_t k = 0; k < c.n; ++k)
        if (c.j0 + k < g.offset + g.T) s[k] += shift<A>(c.p - g.offset, c.j0 + k);
    }
    template <simd::SimdArch A>
    void apply_keys(float* s, const KeyContext& c) const noexcept {
      for (index_t r = 0; r < c.n; ++r) s[r] += shift<A>(c.p0 + r - g.offset, c.j);
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext& c) const {
    return {detail::hyper_head<A>(*plan, c)};
  }
  void check(const SoftmaxDims& d) const { check::not_null("plan", plan).check(d); }
};
static_assert(FusionModifier<HyperShift>);

/// HyperAttention's estimate (see the header comment); opt must not be causal.
/// @throws polyattn::Error ("opt" when causal, "plan", the inputs'), before anything is written
template <Executor E = Serial>
void hyper_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, const HyperPlan& plan,
                     View4<float> o, const E& exec = E{}) {
  if (opt.causal) throw Error("opt", "HyperAttention here is the estimator without causal mask");
  flash_attention(in, opt, fuse(HyperMask{&plan}, HyperShift{&plan}), FlashOutputs{o, {}, {}},
                  exec);
}

}  // namespace polyattn::softmax

// The kernel of a project's per-ISA units for HyperAttention (see the header comment).
#define POLYATTN_HYPER_KERNELS(X)                                    \
  X(::polyattn::softmax::FlashKernelFor<::polyattn::softmax::Fusion< \
        ::polyattn::softmax::HyperMask, ::polyattn::softmax::HyperShift>>)
