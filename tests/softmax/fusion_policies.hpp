// tests/softmax/fusion_policies.hpp — user fusion policies of test_softmax_fusion, compiled
// into that test's own per-ISA units (fusion_units.cpp) through a kernel list, as a user's
// project would: a dense per-(batch, head) mask bound through HeadContext, a per-head relative-
// position bias, and an always-visible mask. Hooks are inline members or templates on the Arch
// tag (the units' symbols are checked like the library's).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "polyattn/core/error.hpp"
#include "polyattn/softmax/flash.hpp"

namespace polyattn::test {

using softmax::HeadContext;
using softmax::KeyRange;
using softmax::RowRange;
using softmax::TileClass;

// A user mask: one byte per (batch, head, packed query row, packed key).
struct DenseMask {
  const std::vector<std::uint8_t>* bits = nullptr;
  index_t HQ = 0, T = 0, S = 0;

  struct Bound {
    const std::uint8_t* head;  // [T][S] of this (batch, head)
    index_t S, q_offset, k_offset;
    template <simd::SimdArch A = simd::scalar_arch>
    bool visible(index_t r, index_t, index_t j) const {
      return head[(r + q_offset) * S + j + k_offset] != 0;
    }
    template <simd::SimdArch A = simd::scalar_arch>
    TileClass classify(RowRange rows, KeyRange keys) const {
      bool any = false, all = true;
      for (index_t r = rows.r0; r < rows.r1; ++r)
        for (index_t j = keys.j0; j < keys.j1; ++j) {
          const bool v = head[(r + q_offset) * S + j + k_offset] != 0;
          any = any || v;
          all = all && v;
        }
      return !any ? TileClass::Skip : (all ? TileClass::Full : TileClass::Partial);
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext& c) const {
    return {bits->data() + (c.batch * HQ + c.head) * T * S, S, c.q_offset, c.k_offset};
  }
  void check(const SoftmaxDims& d) const {
    if (d.T != T || d.S != S || d.HQ != HQ)
      throw Error("fusion", "DenseMask built for another shape");
  }
};
static_assert(softmax::FusionMask<DenseMask>);

// A user modifier: s += bias[h][min(|p − j|, K − 1)].
struct PositionBias {
  const std::vector<float>* table = nullptr;  // [HQ][K]
  index_t K = 1;
  struct Bound {
    const float* t;
    index_t K;
    template <simd::SimdArch A>
    void apply(float* s, const softmax::RowContext& c) const {
      for (index_t j = 0; j < c.n; ++j) {
        const index_t d = c.p - (c.j0 + j);
        s[j] += t[std::min(d < 0 ? -d : d, K - 1)];
      }
    }
    template <simd::SimdArch A>
    void apply_keys(float* s, const softmax::KeyContext& c) const {
      for (index_t r = 0; r < c.n; ++r) {
        const index_t d = c.p0 + r - c.j;
        s[r] += t[std::min(d < 0 ? -d : d, K - 1)];
      }
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext& c) const {
    return {table->data() + c.head * K, K};
  }
};
static_assert(softmax::FusionModifier<PositionBias>);

// A mask that lets everything through runs the composed kernel with the default's numbers.
struct AllVisible {
  template <simd::SimdArch A = simd::scalar_arch>
  TileClass classify(RowRange, KeyRange) const {
    return TileClass::Full;
  }
  template <simd::SimdArch A = simd::scalar_arch>
  bool visible(index_t, index_t, index_t) const {
    return true;
  }
};

}  // namespace polyattn::test

#define POLYATTN_TEST_FUSION_KERNELS(X)                                                            \
  X(::polyattn::softmax::FlashKernelFor<                                                           \
      ::polyattn::softmax::Fusion<::polyattn::test::DenseMask, ::polyattn::test::PositionBias>>)   \
  X(::polyattn::softmax::FlashKernelFor<::polyattn::softmax::Fusion<::polyattn::test::DenseMask>>) \
  X(::polyattn::softmax::FlashKernelFor<                                                           \
      ::polyattn::softmax::Fusion<::polyattn::softmax::NoMask, ::polyattn::test::PositionBias>>)   \
  X(::polyattn::softmax::FlashKernelFor<                                                           \
      ::polyattn::softmax::Fusion<::polyattn::test::AllVisible>>)                                  \
  X(::polyattn::softmax::FlashKernelFor<::polyattn::softmax::Fusion<::polyattn::softmax::Causal>>)
POLYATTN_TEST_FUSION_KERNELS(POLYATTN_KERNEL_EXTERN)
