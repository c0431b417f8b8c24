// polyattn/softmax/landmark.hpp — Landmark Attention's grouped softmax (Mohtashami & Jaggi 2023,
// "Landmark Attention: Random-Access Infinite Context Length for Transformers", §3; authors' code
// github.com/epfml/landmark-attention, llama/llama_mem.py, landmark_grouped_softmax), exact, as a
// mask and a score modifier of the tiled softmax kernel plus a pre-pass.
//
// Layout: blocks of ℓ regular tokens each followed by a landmark token: key position x is a
// landmark when (x + 1) mod (ℓ + 1) = 0; block(x) = ⌊x / (ℓ + 1)⌋. The query at position p has its
// own section [block(p)·(ℓ + 1), p]; every block b < block(p) is complete, with landmark L_b.
// With s_j = scale·q·k_j over the keys j ≤ p:
//   global group   own-section keys and the landmarks L_b (b < block(p)):  Z = Σ e^{s}
//   block group b  the ℓ regular keys of block b:                            Z_b = Σ e^{s}
//   weights        own-section key j:  e^{s_j} / Z
//                  regular key j of block b < block(p):  (e^{s_{L_b}} / Z) · (e^{s_j} / Z_b)
//                  landmarks L_b: 0 (they gate their block; their values are not read)
// They sum to 1. The kernel gets them as one softmax over modified scores: own-section keys
// unchanged, regular keys of an earlier block b shifted by β(p, b) = s_{L_b} − log Z_b, earlier
// landmarks masked — e^{s_j + β} summed over block b is e^{s_{L_b}}, so the kernel's denominator
// is Z. β comes from landmark_gates, a pre-pass in plain loops (double): O(T·S·D) per head, the
// cost of a dense attention — exact, not a speed path (the paper's speed comes from retrieving
// top-k blocks at inference, which is not here).
// Decode (T < S: rows at the last positions) works the same way. Not here: varlen (refused), the
// authors' memory retrieval (top-k landmarks per query) and their positional tricks.
//
// Kernels: FlashKernelFor<Fusion<LandmarkMask, LandmarkBias>>, listed in POLYATTN_LANDMARK_KERNELS.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/fusion.hpp"

namespace polyattn::softmax {

/// β(p, b) of every query row and complete block before its own section: [B, HQ, T, nb] floats,
/// nb = ⌊S / (ℓ + 1)⌋ (entries for blocks a row does not see are 0 and never read).
struct LandmarkGates {
  index_t B = 0, HQ = 0, T = 0, S = 0, nb = 0, block = 0;  // block = ℓ
  std::vector<float> beta;
  void check(const SoftmaxDims& d) const {
    if (B != d.B || HQ != d.HQ || T != d.T || S != d.S)
      throw Error("gates", "made for [B, HQ, T, S] = " + shape_string(std::array{B, HQ, T, S}) +
                               ", the call has " + shape_string(std::array{d.B, d.HQ, d.T, d.S}));
    if (d.varlen) throw Error("cu_seqlens", "Landmark attention takes no packed sequences");
  }
};

/// The pre-pass: β(p, b) = scale·q·k_{L_b} − log Σ_{regular j of b} e^{scale·q·k_j}.
/// @throws polyattn::Error ("block" unless ≥ 1, "cu_seqlens", and the inputs' checks)
template <Executor E = Serial>
LandmarkGates landmark_gates(const SoftmaxInputs& in, const SoftmaxOptions& opt, index_t block,
                             const E& exec = E{}) {
  const SoftmaxDims d = validate(in, opt);
  if (d.varlen) throw Error("cu_seqlens", "Landmark attention takes no packed sequences");
  if (block < 1) throw Error("block", "must be >= 1, got " + std::to_string(block));
  LandmarkGates g;
  g.B = d.B, g.HQ = d.HQ, g.T = d.T, g.S = d.S, g.nb = d.S / (block + 1), g.block = block;
  g.beta.assign(static_cast<std::size_t>(d.B * d.HQ * d.T * g.nb), 0.f);
  const index_t L1 = block + 1;
  exec.parallel_for(d.B * d.HQ, [&](std::int64_t item) {
    const index_t b = item / d.HQ, h = item % d.HQ, hk = h / d.group;
    std::vector<double> s(static_cast<std::size_t>(L1));
    for (index_t i = 0; i < d.T; ++i) {
      const index_t p = i + d.S - d.T;
      if (p < 0) continue;
      float* row = g.beta.data() + ((b * d.HQ + h) * d.T + i) * g.nb;
      for (index_t blk = 0; blk < p / L1; ++blk) {
        double m = -INFINITY;
        for (index_t t = 0; t < L1; ++t) {
          double dot = 0.0;
          for (index_t e = 0; e < d.D; ++e)
            dot += static_cast<double>(in.q(b, i, h, e)) *
                   static_cast<double>(in.k(b, blk * L1 + t, hk, e));
          s[static_cast<std::size_t>(t)] = d.scale * dot;
          if (t < block) m = std::max(m, s[static_cast<std::size_t>(t)]);
        }
        double z = 0.0;
        for (index_t t = 0; t < block; ++t) z += std::exp(s[static_cast<std::size_t>(t)] - m);
        row[blk] = static_cast<float>(s[static_cast<std::size_t>(block)] - (m + std::log(z)));
      }
    }
  });
  return g;
}

namespace detail {
// The part of Landmark attention one (batch row, head) binds to.
struct LandmarkHead {
  const float* beta;          // [T][nb] of this (batch row, head)
  index_t nb, L1, offset, T;  // L1 = ℓ + 1; offset = S − T
};
}  // namespace detail

/// Masks the landmarks before a query's own section (see the header comment), and causality.
struct LandmarkMask {
  const LandmarkGates* gates = nullptr;

  struct Bound {
    index_t L1;
    template <simd::SimdArch A = simd::scalar_arch>
    bool visible(index_t, index_t p, index_t j) const noexcept {
      if (j > p) return false;
      return j >= (p / L1) * L1 || (j + 1) % L1 != 0;  // own section, or a regular key
    }
    template <simd::SimdArch A = simd::scalar_arch>
    TileClass classify(RowRange rows, KeyRange keys) const noexcept {
      const TileClass causal = Causal{}.classify<A>(rows, keys);
      if (causal == TileClass::Skip) return causal;
      // A landmark below the latest row's own section start may be masked for some row.
      const index_t own = (std::max<index_t>(rows.p_last(), 0) / L1) * L1;
      const index_t first_landmark = (keys.j0 / L1) * L1 + L1 - 1;
      if (first_landmark < keys.j1 && first_landmark < own) return TileClass::Partial;
      return causal;
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext&) const noexcept {
    return {gates->block + 1};
  }
  void check(const SoftmaxDims& d) const { check::not_null("gates", gates).check(d); }
};
static_assert(FusionMask<LandmarkMask>);

/// Adds β(p, block(j)) to the scores of regular keys j of blocks before p's own section.
struct LandmarkBias {
  const LandmarkGates* gates = nullptr;

  struct Bound {
    detail::LandmarkHead head;
    template <simd::SimdArch A = simd::scalar_arch>
    float shift(index_t p, index_t j) const noexcept {
      const detail::LandmarkHead& g = head;
      const index_t row = p - g.offset, blk = j / g.L1;
      if (row < 0 || row >= g.T || blk >= p / g.L1 || blk >= g.nb || (j + 1) % g.L1 == 0)
        return 0.f;
      return g.beta[row * g.nb + blk];
    }
    template <simd::SimdArch A>
    void apply(float* s, const RowContext& c) const noexcept {
      for (index_t k = 0; k < c.n; ++k) s[k] += shift<A>(c.p, c.j0 + k);
    }
    template <simd::SimdArch A>
    void apply_keys(float* s, const KeyContext& c) const noexcept {
      for (index_t r = 0; r < c.n; ++r) s[r] += shift<A>(c.p0 + r, c.j);
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext& c) const noexcept {
    const LandmarkGates& g = *gates;
    return {{g.beta.data() + (c.batch * g.HQ + c.head) * g.T * g.nb, g.nb, g.block + 1,
             c.keys - c.queries, c.queries}};
  }
  void check(const SoftmaxDims& d) const { check::not_null("gates", gates).check(d); }
};
static_assert(FusionModifier<LandmarkBias>);

/// Landmark attention (see the header comment) from the pre-pass's gates.
/// @throws polyattn::Error naming the bad argument ("gates" included), before anything is written
template <Executor E = Serial>
void landmark_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                        const LandmarkGates& gates, View4<float> o, const E& exec = E{}) {
  flash_attention(in, opt, fuse(LandmarkMask{&gates}, LandmarkBias{&gates}),
                  FlashOutputs{o, {}, {}}, exec);
}

}  // namespace polyattn::softmax

// The kernel of a project's per-ISA units for Landmark attention (see the header comment).
#define POLYATTN_LANDMARK_KERNELS(X)                                 \
  X(::polyattn::softmax::FlashKernelFor<::polyattn::softmax::Fusion< \
        ::polyattn::softmax::LandmarkMask, ::polyattn::softmax::LandmarkBias>>)
