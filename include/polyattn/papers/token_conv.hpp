// polyattn/papers/token_conv.hpp — causal depthwise convolution across tokens, added to an
// output: the local branch of SLAB's simplified linear attention (its depthwise conv on V) and
// of InLine's local-attention residual, in their 1-D causal form.
//
//   o[t, c] += bias[c] + Σ_{j<W} w[c, j] · x[t − (W−1) + j, c]      per (sequence, head)
//
// x [B,T,HX,V] (usually v), o [B,T,HX,V]; the kernel w [NW, HW, V, W] with NW ∈ {1, N} (one
// kernel for every sequence, or one per sequence: InLine predicts its kernel from the input) and
// HW ∈ {1, HX} (shared by the heads, as SLAB's conv over head_dim, or one per head); tap W−1 is
// the current token. bias [V] is optional. Tokens before a sequence's start read the cache
// [N, HX, W−1, V] (the last W−1 inputs of the previous call, oldest first) or zeros; the
// optional cache_out receives the last W−1 inputs after this call (it may alias cache_in: the
// old values are read first), which is how decode carries the convolution.
// Sums are formed in double and added once to o. x may be fp32, bf16 or fp16 (widened exactly as
// it is read; the cache holds the widened values), o and the cache are fp32. Arguments are checked
// before anything is written (polyattn::Error naming the argument).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "polyattn/core/element.hpp"
#include "polyattn/core/element_view.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"

namespace polyattn::papers {

struct TokenConv {
  View4<const float> weight;  // [NW, HW, V, W], NW ∈ {1, N}, HW ∈ {1, HX}
  View1<const float> bias;    // optional [V]
  index_t width() const { return weight.size(3); }
};

struct TokenConvCache {
  View4<const float> in;  // optional [N, HX, W−1, V]
  View4<float> out;       // optional [N, HX, W−1, V]
};

/// Checks the kernel, bias and cache against x [B,T,HX,V] with N sequences.
inline void check_token_conv(const TokenConv& conv, const TokenConvCache& cache, index_t N,
                             index_t HX, index_t V) {
  check::required("conv.weight", conv.weight);
  const auto& s = conv.weight.shape();
  if (!(s[0] == 1 || s[0] == N) || !(s[1] == 1 || s[1] == HX) || s[2] != V || s[3] < 1)
    throw Error("conv.weight", "expected shape [1 or N, 1 or H, V, W] with N=" + std::to_string(N) +
                                   ", H=" + std::to_string(HX) + ", V=" + std::to_string(V) +
                                   ", W >= 1, got " + shape_string(s));
  if (!conv.bias.absent()) {
    check::well_formed("conv.bias", conv.bias);
    check::shape_is("conv.bias", conv.bias, {V}, "[V]");
  }
  const index_t W = s[3];
  const std::array<index_t, 4> expected{N, HX, W - 1, V};
  auto check_cache = [&](const char* name, const auto& view) {
    if (view.absent()) return;
    if (W == 1) throw Error(name, "was given but a width-1 convolution keeps no history");
    check::well_formed(name, view);
    check::shape_is(name, view, expected, "[N,H,W-1,V]");
  };
  check_cache("conv_cache.in", cache.in);
  check_cache("conv_cache.out", cache.out);
}

namespace detail::token_conv {
// The body of token_conv_add_unchecked for x of element type X.
template <Element X>
void add(const TensorView<const X, 4>& x, const TokenConv& conv, const TokenConvCache& cache,
         std::span<const std::int64_t> cu_seqlens, const View4<float>& o) {
  const index_t B = x.size(0), T = x.size(1), HX = x.size(2), V = x.size(3);
  const index_t W = conv.width(), Hist = W - 1;
  const auto segs = segments(B, T, cu_seqlens);
  std::vector<double> window(static_cast<std::size_t>(W));
  std::vector<float> hist(static_cast<std::size_t>(Hist));
  for (index_t n = 0; n < static_cast<index_t>(segs.size()); ++n) {
    const Segment& sg = segs[static_cast<std::size_t>(n)];
    const index_t wn = conv.weight.size(0) == 1 ? 0 : n;
    for (index_t h = 0; h < HX; ++h) {
      const index_t wh = conv.weight.size(1) == 1 ? 0 : h;
      for (index_t c = 0; c < V; ++c) {
        for (index_t j = 0; j < Hist; ++j)
          hist[static_cast<std::size_t>(j)] = cache.in.absent() ? 0.f : cache.in(n, h, j, c);
        // Input at position p relative to the sequence start (p < 0: history).
        auto input = [&](index_t p) -> double {
          if (p >= 0) return to_float(x(sg.batch, sg.begin + p, h, c));
          return hist[static_cast<std::size_t>(Hist + p)];
        };
        const double b = conv.bias.absent() ? 0.0 : conv.bias(c);
        for (index_t t = 0; t < sg.length; ++t) {
          double acc = b;
          for (index_t j = 0; j < W; ++j)
            acc += static_cast<double>(conv.weight(wn, wh, c, j)) * input(t - Hist + j);
          float& out = o(sg.batch, sg.begin + t, h, c);
          out = static_cast<float>(static_cast<double>(out) + acc);
        }
        if (!cache.out.absent())
          for (index_t j = 0; j < Hist; ++j)
            cache.out(n, h, j, c) = static_cast<float>(input(sg.length - Hist + j));
      }
    }
  }
}

}  // namespace detail::token_conv

/// o += causal depthwise conv of x (see the header comment). Call check_token_conv first, or use
/// token_conv_add, which checks.
inline void token_conv_add_unchecked(const ElementView<4>& x, const TokenConv& conv,
                                     const TokenConvCache& cache,
                                     std::span<const std::int64_t> cu_seqlens,
                                     const View4<float>& o) {
  x.visit([&](auto xv) { detail::token_conv::add(xv, conv, cache, cu_seqlens, o); });
}

/// Checked form: x [B,T,HX,V], o of the same shape, cu_seqlens as everywhere (§1.4).
inline void token_conv_add(const ElementView<4>& x, const TokenConv& conv,
                           const TokenConvCache& cache, std::span<const std::int64_t> cu_seqlens,
                           const View4<float>& o) {
  check::required("v", x);
  check::required("o", o);
  check::shape_is("o", o, x.shape(), "same as v [B,T,H,V]");
  const index_t N = check::cu_seqlens("cu_seqlens", cu_seqlens, x.size(0), x.size(1));
  check_token_conv(conv, cache, N, x.size(2), x.size(3));
  token_conv_add_unchecked(x, conv, cache, cu_seqlens, o);
}

}  // namespace polyattn::papers
