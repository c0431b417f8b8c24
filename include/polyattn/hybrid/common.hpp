// polyattn/hybrid/common.hpp — pieces shared by the hybrid combiners (docs/conventions.md §7):
//   HybridCombiner          the concept a combiner tag (BasedHybrid, Lolcats, Liger,
//   AgentAttention)
//                           satisfies; hybrid_attention<C>() in hybrid.hpp dispatches on it
//   DecoderShape            sizes of a stateful decoder (B sequences, one token each per step;
//                           a varlen prefill may give them different lengths)
//   detail::...             the causal sliding-window softmax branch (flash_attention), the window
//                           KV cache fill with drop_before (O(window + page) memory), row-parallel
//                           element-wise combination, slices of views of any element type
//                           (part, rows), rows widened to fp32 scratch (widened), and the checks
//                           every decoder's step runs.
// Element types: inputs of any element type go to the kernels as they are (they widen on load);
// the hybrids' own loops read rows widened by apply_rows(Identity{}, ·) (policies/feature_map.hpp);
// a combination is formed in fp32 and rounded once into a bf16 / fp16 o (core/fp32_output.hpp).
// Every combiner needs the per-ISA kernel units of both families linked (POLYATTN_KERNEL_UNITS).
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <string>
#include <vector>

#include "polyattn/args/hybrid.hpp"
#include "polyattn/args/linear.hpp"
#include "polyattn/args/softmax.hpp"
#include "polyattn/core/element_view.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/fp32_output.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"
#include "polyattn/policies/algorithm.hpp"
#include "polyattn/policies/feature_map.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/kv_cache.hpp"

namespace polyattn::hybrid {

// A hybrid combiner tag: its argument structs, its decoder class, and a static forward() that
// runs the fast prefill operator on any executor.
template <class C>
concept HybridCombiner = requires {
  typename C::Inputs;
  typename C::Options;
  typename C::Decoder;
} && requires(const typename C::Inputs& in, const typename C::Options& opt, MutEView4 o) {
  C::template forward<Chunked<64>>(in, opt, o, Serial{});
};

// Sizes of a decoder: `batch` sequences advanced together, one token each per step() (their
// lengths may differ after a prefill with cu_seqlens).
struct DecoderShape {
  index_t batch = 0, heads = 0;
  index_t head_dim = 0;    // D of q, k (softmax branch; agents)
  index_t value_dim = 0;   // V
  index_t lin_dim = 0;     // K of lin_q / lin_k (Based, Liger) or F of phi_q / phi_k (LoLCATs);
                           // 0 = head_dim
  index_t page_size = 64;  // KV-cache page, tokens (window caches)
  index_t linear_dim() const noexcept { return lin_dim > 0 ? lin_dim : head_dim; }
};

namespace detail {

using polyattn::detail::hybrid_args::check_finite;
using polyattn::detail::hybrid_args::check_window;
using polyattn::detail::hybrid_args::resolve_scale;

inline constexpr index_t kRowsPerTask = 64;  // rows of an element-wise combination task

// A [B,T,H,X] view of contiguous storage (resized, contents unspecified).
inline View4<float> scratch4(std::vector<float>& buf, index_t B, index_t T, index_t H, index_t X) {
  buf.resize(static_cast<std::size_t>(B * T * H * X));
  return View4<float>::contiguous(buf.data(), {B, T, H, X});
}

// x [B, T, H, X] of any element type widened exactly into fp32 scratch (apply_rows with the
// identity map), for the few rows a decoder step or its cache reads in its own loops.
inline View4<float> widened(const EView4& x, std::vector<float>& buf) {
  const View4<float> w = scratch4(buf, x.size(0), x.size(1), x.size(2), x.size(3));
  apply_rows(Identity{}, x, w);
  return w;
}

// Causal sliding-window softmax branch SWA_w(q, k, v) into o (and lse when given).
template <Executor E>
void swa(const EView4& q, const EView4& k, const EView4& v, std::span<const std::int64_t> cu,
         index_t window, double scale, View4<float> o, View3<float> lse, const E& exec) {
  SoftmaxInputs in;
  in.q = q;
  in.k = k;
  in.v = v;
  in.cu_seqlens = cu;
  SoftmaxOptions opt;
  opt.scale = scale;
  opt.causal = true;
  opt.window = window;
  softmax::flash_attention(in, opt, o, lse, exec);
}

// fn(b, t) for every row of a [B, T, ...] tensor, in tasks of kRowsPerTask rows. Rows are
// independent, so the result does not depend on the executor.
template <class E, class F>
void for_rows(index_t B, index_t T, const E& exec, F&& fn) {
  const index_t per_b = (T + kRowsPerTask - 1) / kRowsPerTask;
  exec.parallel_for(B * per_b, [&](index_t task) {
    const index_t b = task / per_b, t0 = (task % per_b) * kRowsPerTask;
    const index_t t1 = std::min(T, t0 + kRowsPerTask);
    for (index_t t = t0; t < t1; ++t) fn(b, t);
  });
}

// x restricted to [i0, i1) along dimension dim (the same memory; EView4 or MutEView4).
template <class View>
View part(const View& x, std::size_t dim, index_t i0, index_t i1) {
  auto shape = x.shape();
  shape[dim] = i1 - i0;
  return x.visit([&](auto xv) {
    return View(decltype(xv)(xv.data() + i0 * x.stride(dim), shape, x.strides()));
  });
}
// Rows [t0, t1) of a [B, T, H, X] view.
template <class View>
View rows(const View& x, index_t t0, index_t t1) {
  return part(x, 1, t0, t1);
}

// Releases the pages of every sequence that only hold tokens before length − keep.
inline void drop_behind(softmax::KVCache& cache, index_t keep) {
  for (index_t b = 0; b < cache.batch(); ++b)
    cache.drop_before(b, std::max<index_t>(0, cache.length(b) - keep));
}

// Appends k, v [B, T, H, ·] to a cache, one page at a time, releasing after each piece every
// page whose tokens all lie before length − keep, so a long prefill never holds more than about
// keep + 2 pages per sequence. (Rows dropped at once are still copied: KVCache cannot start a
// sequence at a later position.) With cu_seqlens (k, v [1, T, H, ·] packed), sequence n's rows
// go to the cache's sequence n.
inline void fill_cache(softmax::KVCache& cache, const EView4& k, const EView4& v, index_t keep,
                       std::span<const std::int64_t> cu = {}) {
  const index_t step = std::max<index_t>(1, cache.page_size());
  if (cu.empty()) {
    const index_t T = k.size(1);
    for (index_t t0 = 0; t0 < T; t0 += step) {
      const index_t t1 = std::min(T, t0 + step);
      cache.append(rows(k, t0, t1), rows(v, t0, t1));
      drop_behind(cache, keep);
    }
    return;
  }
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const auto b = static_cast<index_t>(n);
    for (index_t t0 = cu[n]; t0 < cu[n + 1]; t0 += step) {
      const index_t t1 = std::min<index_t>(cu[n + 1], t0 + step);
      cache.append_to(b, rows(k, t0, t1), rows(v, t0, t1));
      cache.drop_before(b, std::max<index_t>(0, cache.length(b) - keep));
    }
  }
}

// Checks of a decoder's step() beyond the combiner's own validation (which already tied k, v
// and the optional inputs to q): one new token for each of the decoder's sequences, no varlen.
inline void check_step(const EView4& q, const EView4& v, std::span<const std::int64_t> cu,
                       const DecoderShape& s) {
  if (!cu.empty())
    throw Error("cu_seqlens", "is not supported by a decoder (it advances B sequences together)");
  check::shape_is("q", q, {s.batch, 1, s.heads, s.head_dim},
                  "[B, 1, H, D] of the decoder: one new token per sequence");
  check::shape_is("v", v, {s.batch, 1, s.heads, s.value_dim}, "[B, 1, H, V] of the decoder");
}

// Checks of a decoder's prefill(): a fresh decoder, and either B sequences of T tokens
// ([B, T, H, ·]) or, with cu_seqlens, the decoder's B sequences of any lengths packed along T
// ([1, T, H, ·], cu_seqlens [B+1]). Returns each sequence's length.
inline std::vector<index_t> check_prefill(const EView4& q, const EView4& v,
                                          std::span<const std::int64_t> cu, const DecoderShape& s,
                                          const std::vector<index_t>& positions) {
  for (std::size_t b = 0; b < positions.size(); ++b)
    if (positions[b] != 0)
      throw Error("decoder", "prefill() needs a fresh decoder, sequence " + std::to_string(b) +
                                 " holds " + std::to_string(positions[b]) +
                                 " tokens (call reset())");
  if (cu.empty()) {
    check::shape_is("q", q, {s.batch, q.size(1), s.heads, s.head_dim},
                    "[B, T, H, D] of the decoder");
    check::shape_is("v", v, {s.batch, q.size(1), s.heads, s.value_dim},
                    "[B, T, H, V] of the decoder");
    return std::vector<index_t>(static_cast<std::size_t>(s.batch), q.size(1));
  }
  const index_t N = check::cu_seqlens("cu_seqlens", cu, q.size(0), q.size(1));
  if (N != s.batch)
    throw Error("cu_seqlens", "packs " + std::to_string(N) + " sequences, the decoder has " +
                                  std::to_string(s.batch));
  check::shape_is("q", q, {1, q.size(1), s.heads, s.head_dim},
                  "[1, T, H, D]: the decoder's sequences packed");
  check::shape_is("v", v, {1, q.size(1), s.heads, s.value_dim},
                  "[1, T, H, V]: the decoder's sequences packed");
  std::vector<index_t> len;
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) len.push_back(cu[n + 1] - cu[n]);
  return len;
}

// Validates a decoder's sizes at construction.
inline void check_shape(const DecoderShape& s) {
  check::positive("batch", s.batch);
  check::positive("heads", s.heads);
  check::positive("head_dim", s.head_dim);
  check::positive("value_dim", s.value_dim);
  if (s.lin_dim < 0)
    throw Error("lin_dim", "must be >= 0 (0 = head_dim), got " + std::to_string(s.lin_dim));
  check::positive("page_size", s.page_size);
}

}  // namespace detail
}  // namespace polyattn::hybrid
