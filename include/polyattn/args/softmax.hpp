// polyattn/args/softmax.hpp — arguments of softmax attention and their validation, shared by
// the naive reference (polyattn/reference/softmax.hpp) and the fast kernels.
//
//   o[b,i,h] = Σ_j p_ij v[b,j,h/G],  p_ij = exp(s_ij − m) / (Σ_{j visible} exp(s_ij − m) [+
//   exp(sink_h − m)]) s_ij = mod(scale · q[b,i,h]·k[b,j,h/G]),   G = HQ / HKV (GQA/MQA) mod(s) =
//   softcap: c·tanh(s/c)  →  + ALiBi: −slope_h·|p − j|  →  + forgetting bias: G_p − G_j
// Query row i sits at absolute key position p = i + S − T (bottom-right alignment). Masks:
// causal (j ≤ p), sliding window (p − w < j ≤ p), block mask; the first `sink_tokens` keys are
// exempt from window and block mask (still subject to causality when causal). A query that
// sees no key outputs zeros. See docs/conventions.md §1 and §5.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>

#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/element_view.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/overlap.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"

namespace polyattn {

/// Tensors of one softmax-attention call. Optional views are left default-constructed (absent).
struct SoftmaxInputs {
  ElementView<4> q;                          // [B, T, HQ, D]     fp32, bf16 or fp16
  ElementView<4> k;                          // [B, S, HKV, D]    fp32, bf16 or fp16
  ElementView<4> v;                          // [B, S, HKV, Dv]   fp32, bf16 or fp16
  TensorView<const float, 3> g;              // optional forgetting gate, log-space, [B, S, HQ]
  TensorView<const float, 1> alibi_slopes;   // optional ALiBi slopes, [HQ]
  TensorView<const float, 1> sink;           // optional per-q-head sink logit, [HQ]
  std::span<const std::int64_t> cu_seqlens;  // optional varlen [N+1]; needs B == 1 and T == S
};

struct SoftmaxOptions {
  std::optional<double> scale;            // multiplies q·k; default D^-0.5
  bool causal = false;                    // keys j ≤ p = i + S − T
  index_t window = 0;                     // > 0: keys in [p − window + 1, p]; 0 = off
  index_t sink_tokens = 0;                // first n keys exempt from window and block mask
  double softcap = 0.0;                   // > 0: s ← c·tanh(s/c); 0 = off
  const BlockMask* block_mask = nullptr;  // optional block-sparse mask [B, HQ, nQB, nKB]
};

/// Sizes of a validated call.
struct SoftmaxDims {
  index_t B = 0, T = 0, S = 0;  // batch, queries, keys (packed lengths when varlen)
  index_t HQ = 0, HKV = 0;      // query heads, key/value heads
  index_t group = 1;            // HQ / HKV: q head h uses kv head h / group
  index_t D = 0, Dv = 0;        // q/k head dim, v/o head dim
  index_t num_seqs = 0;         // B, or N with cu_seqlens
  bool varlen = false;
  double scale = 1.0;  // resolved scale
};

/// Checks every argument except the output; throws polyattn::Error naming the argument.
inline SoftmaxDims validate(const SoftmaxInputs& in, const SoftmaxOptions& opt) {
  check::required("q", in.q);
  check::required("k", in.k);
  check::required("v", in.v);

  SoftmaxDims d;
  d.B = in.q.size(0);
  d.T = in.q.size(1);
  d.HQ = in.q.size(2);
  d.D = in.q.size(3);
  d.S = in.k.size(1);
  d.HKV = in.k.size(2);
  d.Dv = in.v.size(3);

  const std::string qs = "q is " + shape_string(in.q.shape());
  check::shape_is("k", in.k, {d.B, d.S, d.HKV, d.D}, "batch and head dim of " + qs);
  if (d.HKV <= 0 || d.HQ % d.HKV != 0)
    throw Error("k", "number of kv heads " + std::to_string(d.HKV) +
                         " must be positive and divide the query heads " + std::to_string(d.HQ) +
                         " (q is " + shape_string(in.q.shape()) + ", k is " +
                         shape_string(in.k.shape()) + ")");
  d.group = d.HQ / d.HKV;
  check::shape_is("v", in.v, {d.B, d.S, d.HKV, d.Dv},
                  "batch, length and heads of k " + shape_string(in.k.shape()));

  d.varlen = !in.cu_seqlens.empty();
  d.num_seqs = check::cu_seqlens("cu_seqlens", in.cu_seqlens, d.B, d.T);
  if (d.varlen && d.S != d.T)
    throw Error("k",
                "with cu_seqlens keys and queries are packed together, so k must have the "
                "length of q (" +
                    std::to_string(d.T) + "), got shape " + shape_string(in.k.shape()));

  check::optional_shape("g", in.g, {d.B, d.S, d.HQ}, "[B, S, HQ] from q and k");
  check::optional_shape("alibi_slopes", in.alibi_slopes, {d.HQ}, "[HQ] from q");
  check::optional_shape("sink", in.sink, {d.HQ}, "[HQ] from q");

  if (opt.scale) {
    check::finite_positive("scale", *opt.scale);
    d.scale = *opt.scale;
  } else {
    d.scale = d.D > 0 ? 1.0 / std::sqrt(static_cast<double>(d.D)) : 1.0;
  }
  if (opt.window < 0)
    throw Error("window", "must be >= 0 (0 = no window), got " + std::to_string(opt.window));
  if (opt.sink_tokens < 0)
    throw Error("sink_tokens", "must be >= 0, got " + std::to_string(opt.sink_tokens));
  if (!(opt.softcap >= 0.0) || std::isinf(opt.softcap))
    throw Error("softcap", "must be finite and >= 0 (0 = off), got " + std::to_string(opt.softcap));

  if (opt.block_mask != nullptr) {
    const BlockMask& m = *opt.block_mask;
    if (m.block_q() <= 0 || m.block_k() <= 0)
      throw Error("block_mask",
                  "block sizes must be positive, got block_q=" + std::to_string(m.block_q()) +
                      " block_k=" + std::to_string(m.block_k()));
    const std::array<index_t, 4> want{d.B, d.HQ, BlockMask::blocks_for(d.T, m.block_q()),
                                      BlockMask::blocks_for(d.S, m.block_k())};
    if (m.shape() != want ||
        m.bytes().size() != static_cast<std::size_t>(want[0] * want[1] * want[2] * want[3]))
      throw Error("block_mask", "expected shape " + shape_string(want) +
                                    " ([B, HQ, ceil(T/block_q), ceil(S/block_k)] for q " +
                                    shape_string(in.q.shape()) + ", k " +
                                    shape_string(in.k.shape()) + "), got " +
                                    shape_string(m.shape()));
  }
  return d;
}

/// Checks the output view o [B, T, HQ, Dv] against validated sizes.
template <StridedView Out>
void validate_output(const SoftmaxDims& d, const Out& o) {
  check::required("o", o);
  check::shape_is("o", o, {d.B, d.T, d.HQ, d.Dv}, "[B, T, HQ, Dv] from q and v");
}

/// Outputs (o, and lse / row_max where the operator writes them) share no memory with each other
/// or with any input: no softmax operator works in place. Call on validated views.
inline void softmax_writes_disjoint(const SoftmaxInputs& in,
                                    std::initializer_list<memory::Region> outputs) {
  using memory::region;
  check::writes_disjoint(
      outputs, {region("q", in.q), region("k", in.k), region("v", in.v), region("g", in.g),
                region("alibi_slopes", in.alibi_slopes), region("sink", in.sink)});
}

/// Everything, output included. Call before writing any output element.
template <StridedView Out>
SoftmaxDims validate(const SoftmaxInputs& in, const SoftmaxOptions& opt, const Out& o) {
  SoftmaxDims d = validate(in, opt);
  validate_output(d, o);
  softmax_writes_disjoint(in, {memory::region("o", o)});
  return d;
}

}  // namespace polyattn
