// polyattn/conv/short_conv.hpp — the short causal depthwise convolution that runs before every
// Gated DeltaNet / KDA / Mamba2 block of a hybrid model (fla's ShortConvolution, the
// causal-conv1d kernels), with its state:
//
//   y[t, d] = act(bias[d] + Σ_{i<W} w[d, i] · x[t − W + 1 + i, d])        act ∈ {identity, SiLU}
//
// per sequence; the W − 1 inputs before a sequence's first token come from its state (zeros
// without one). Shapes: x, y [B, T, D] (channels = every head's q, k, v features together),
// w [D, W] (any W ≥ 1; tap W − 1 is the current token), bias [D] optional, states [N, D, W − 1]
// (the last W − 1 inputs, oldest first; N = B, or len(cu_seqlens) − 1 for packed varlen), or
// pools [slots, D, W − 1] with state_indices [N], as the linear family's state pools.
//   short_conv(in, opt, out)         prefill; out.final_state (optional) gets the last W − 1
//                                    inputs and may be exactly in.initial_state (in place)
//   short_conv_step(in, opt, state, y)   decode: T new tokens per sequence (usually 1), `state`
//                                    read and updated in place
// Work items are (sequence, block of kChannelBlock channels), each run by one thread over all of
// its sequence's tokens in tiles of kTimeTile, in SIMD over channels (its taps transposed to
// [W][channels]); the sum is formed as bias + tap 0 + … + tap W−1 with one fused multiply-add per
// tap, so results do not depend on the executor. Arguments are checked before anything is written:
// y must not share memory with any input; a final state may only alias the initial state exactly.
// Thread safety: stateless; concurrent calls with their own outputs and states are fine.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/overlap.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"

namespace polyattn::conv {

enum class Activation { None, SiLU };

struct ShortConvInputs {
  View3<const float> x;                         // [B, T, D]
  TensorView<const float, 2> weight;            // [D, W]
  View1<const float> bias;                      // optional [D]
  View3<const float> initial_state;             // optional [N, D, W−1] (pool: [slots, D, W−1])
  std::span<const std::int64_t> cu_seqlens;     // optional varlen, B == 1
  std::span<const std::int64_t> state_indices;  // optional pool slot of each sequence
};

struct ShortConvOptions {
  Activation activation = Activation::None;
};

struct ShortConvOutputs {
  View3<float> y;            // [B, T, D]
  View3<float> final_state;  // optional [N, D, W−1] (pool: [slots, D, W−1])
};

/// Sizes of a validated call.
struct ShortConvDims {
  index_t B = 0, T = 0, D = 0, W = 0, N = 0;
};

inline constexpr index_t kChannelBlock = 256;  // channels per work item

/// Checks the inputs (x, weight, bias, initial_state, cu_seqlens, state_indices against the
/// initial pool); throws polyattn::Error naming the argument.
inline ShortConvDims validate_short_conv_inputs(const ShortConvInputs& in) {
  check::required("x", in.x);
  check::required("weight", in.weight);
  ShortConvDims d{in.x.size(0), in.x.size(1), in.x.size(2), in.weight.size(1), 0};
  check::positive("x (batch)", d.B);
  check::positive("x (channels)", d.D);
  check::positive("weight (width)", d.W);
  check::shape_is("weight", in.weight, {d.D, d.W}, "[D, W] with D the channels of x");
  check::well_formed("bias", in.bias);
  if (!in.bias.absent()) check::shape_is("bias", in.bias, {d.D}, "[D]");
  d.N = check::cu_seqlens("cu_seqlens", in.cu_seqlens, d.B, d.T);
  const bool pool = !in.state_indices.empty();
  if (!in.initial_state.absent()) {
    check::well_formed("initial_state", in.initial_state);
    check::shape_is("initial_state", in.initial_state,
                    {pool ? in.initial_state.size(0) : d.N, d.D, d.W - 1},
                    pool ? "[slots, D, W−1] (a state pool)" : "[N, D, W−1]");
    if (pool) check::slot_indices("state_indices", in.state_indices, d.N, in.initial_state.size(0));
  }
  return d;
}

/// Checks every argument; throws polyattn::Error naming it before anything is written.
inline ShortConvDims validate_short_conv(const ShortConvInputs& in, const ShortConvOutputs& out) {
  const ShortConvDims d = validate_short_conv_inputs(in);
  check::required("y", out.y);
  check::shape_is("y", out.y, {d.B, d.T, d.D}, "[B, T, D] of x");
  const bool pool = !in.state_indices.empty();
  if (!out.final_state.absent()) {
    check::well_formed("final_state", out.final_state);
    check::shape_is("final_state", out.final_state,
                    {pool ? out.final_state.size(0) : d.N, d.D, d.W - 1},
                    pool ? "[slots, D, W−1] (a state pool)" : "[N, D, W−1]");
    if (pool) check::slot_indices("state_indices", in.state_indices, d.N, out.final_state.size(0));
  }
  if (pool && in.initial_state.absent() && out.final_state.absent())
    throw Error("state_indices", "was given but there is no initial_state or final_state pool");
  using memory::region;
  check::writes_disjoint({region("y", out.y), region("final_state", out.final_state)},
                         {region("x", in.x), region("weight", in.weight), region("bias", in.bias),
                          region("initial_state", in.initial_state)},
                         {{"final_state", "initial_state"}});
  return d;
}

/// One work item's view of a validated call: tokens [t0, t0 + L) of batch row b, channels
/// [d0, d1), state slot `slot`.
struct ShortConvProblem {
  const ShortConvInputs* in;
  const ShortConvOutputs* out;
  ShortConvDims d;
  Activation act;
};

inline constexpr index_t kTimeTile = 64;  // tokens per pass over a work item's channels

struct ShortConvKernel {
  const ShortConvProblem* p;
  index_t b, t0, L, slot, d0, d1;
  float* ws;  // workspace_floats(W, d1 − d0, L) floats, owned by the caller

  // Rows (channels padded to whole batches of the widest ISA) of the W − 1 previous inputs and a
  // tile of inputs, the taps [W] and the bias, and one output row.
  static constexpr index_t padded(index_t C) {
    return (C + simd::kMaxBatchFloats - 1) / simd::kMaxBatchFloats * simd::kMaxBatchFloats;
  }
  static constexpr index_t tile(index_t L) { return std::clamp<index_t>(L, 1, kTimeTile); }
  static constexpr std::size_t workspace_floats(index_t W, index_t C, index_t L) {
    return static_cast<std::size_t>((tile(L) + W - 1 + W + 2) * padded(C));
  }
  template <simd::SimdArch A>
  void operator()(A) const;
};

template <simd::SimdArch A>
void ShortConvKernel::operator()(A) const {
  using Bt = simd::batch_t<A>;
  constexpr index_t Wd = static_cast<index_t>(Bt::size);
  const ShortConvInputs& in = *p->in;
  const ShortConvOutputs& out = *p->out;
  const index_t W = p->d.W, C = d1 - d0, H = W - 1, Cp = padded(C), TT = tile(L);
  float* rows = ws;                    // [(TT + H) × Cp]: input t0 + s0 + τ − H at row τ
  float* taps = rows + (TT + H) * Cp;  // [W × Cp]
  float* bias = taps + W * Cp;         // [Cp]
  float* yrow = bias + Cp;             // [Cp]
  std::fill(ws, ws + workspace_floats(W, C, L), 0.f);  // padding lanes stay 0
  for (index_t i = 0; i < W; ++i)  // the taps of these channels, transposed to [W][C]
    for (index_t c = 0; c < C; ++c) taps[i * Cp + c] = in.weight(d0 + c, i);
  if (!in.bias.absent())
    for (index_t c = 0; c < C; ++c) bias[c] = in.bias(d0 + c);
  // The H inputs before the sequence (read before anything is written to the final state, which
  // may be the same memory).
  if (!in.initial_state.absent())
    for (index_t j = 0; j < H; ++j)
      for (index_t c = 0; c < C; ++c) rows[j * Cp + c] = in.initial_state(slot, d0 + c, j);
  const bool silu = p->act == Activation::SiLU;
  for (index_t s0 = 0; s0 < L; s0 += TT) {
    const index_t tl = std::min(TT, L - s0);
    for (index_t t = 0; t < tl; ++t) {
      float* r = rows + (H + t) * Cp;
      if (in.x.stride(2) == 1) {
        const float* xr = in.x.ptr(b, t0 + s0 + t, d0);
        std::copy(xr, xr + C, r);
      } else {
        for (index_t c = 0; c < C; ++c) r[c] = in.x(b, t0 + s0 + t, d0 + c);
      }
    }
    for (index_t t = 0; t < tl; ++t) {
      const float* win = rows + t * Cp;  // inputs t − H .. t of the tile, one row per tap
      for (index_t c = 0; c < Cp; c += Wd) {
        Bt acc = Bt::load_unaligned(bias + c);
        for (index_t i = 0; i < W; ++i)
          acc = simd::fma(Bt::load_unaligned(taps + i * Cp + c),
                          Bt::load_unaligned(win + i * Cp + c), acc);
        if (silu) acc = acc / (Bt(1.f) + simd::exp(Bt(0.f) - acc));
        acc.store_unaligned(yrow + c);
      }
      if (out.y.stride(2) == 1) {
        std::copy(yrow, yrow + C, out.y.ptr(b, t0 + s0 + t, d0));
      } else {
        for (index_t c = 0; c < C; ++c) out.y(b, t0 + s0 + t, d0 + c) = yrow[c];
      }
    }
    // The last H inputs move to the front for the next tile.
    std::copy(rows + tl * Cp, rows + (tl + H) * Cp, rows);
  }
  if (!out.final_state.absent())
    for (index_t j = 0; j < H; ++j)
      for (index_t c = 0; c < C; ++c) out.final_state(slot, d0 + c, j) = rows[j * Cp + c];
}

/// Prefill over [B, T, D] or packed varlen (see the header comment).
/// @throws polyattn::Error naming the bad argument; outputs are then untouched
template <Executor E = Serial>
void short_conv(const ShortConvInputs& in, const ShortConvOptions& opt, const ShortConvOutputs& out,
                const E& exec = E{}) {
  const ShortConvDims d = validate_short_conv(in, out);
  const ShortConvProblem P{&in, &out, d, opt.activation};
  const std::vector<Segment> segs = segments(d.B, d.T, in.cu_seqlens);
  const index_t blocks = (d.D + kChannelBlock - 1) / kChannelBlock;
  exec.parallel_for(d.N * blocks, [&](index_t item) {
    const index_t n = item / blocks, blk = item % blocks;
    const Segment& sg = segs[static_cast<std::size_t>(n)];
    const index_t slot =
        in.state_indices.empty() ? n : in.state_indices[static_cast<std::size_t>(n)];
    const index_t d0 = blk * kChannelBlock, d1 = std::min(d.D, d0 + kChannelBlock);
    std::vector<float> ws(ShortConvKernel::workspace_floats(d.W, d1 - d0, sg.length));
    simd::run_kernel(ShortConvKernel{&P, sg.batch, sg.begin, sg.length, slot, d0, d1, ws.data()});
  });
}

/// Decode: T new tokens per sequence (x [B, T, D], usually T = 1), `state` [B, D, W−1] (or a
/// pool [slots, D, W−1] with in.state_indices [B]) read and updated in place, y [B, T, D].
/// in.initial_state and in.cu_seqlens must be empty (the state argument is the state).
/// @throws polyattn::Error naming the bad argument; state and y are then untouched
template <Executor E = Serial>
void short_conv_step(const ShortConvInputs& in, const ShortConvOptions& opt, View3<float> state,
                     View3<float> y, const E& exec = E{}) {
  if (!in.initial_state.absent())
    throw Error("initial_state",
                "must be empty in short_conv_step(): the state argument is read and updated");
  if (!in.cu_seqlens.empty()) throw Error("cu_seqlens", "is not supported by short_conv_step()");
  check::required("state", state);
  ShortConvInputs with_state = in;
  with_state.initial_state = state;
  short_conv(with_state, opt, {.y = y, .final_state = state}, exec);
}

}  // namespace polyattn::conv

#define POLYATTN_CONV_KERNELS(X) X(::polyattn::conv::ShortConvKernel)
POLYATTN_CONV_KERNELS(POLYATTN_KERNEL_EXTERN)
