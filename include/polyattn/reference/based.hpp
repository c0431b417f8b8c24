// polyattn/reference/based.hpp — naive double-precision Based attention (fla parallel_based).
//
// Per (sequence, head), causal, row t of the sequence's Q, K [L × K] and V [L × V]:
//   x = K_{0..t} (scale · q_t)                 (scale default K^-0.5; x_s = (scale·q_t)·k_s)
//   f = 1 + x + x²/2                            (2nd-order Taylor score, element-wise)
//   o_t = V_{0..t}ᵀ f / (Σ f + eps)              (eps = 1e-6; normalize = true)
//   o_t = V_{0..t}ᵀ f                            (normalize = false)
// Shapes: q, k [B,T,H,K], v [B,T,H,V], o [B,T,H,V]; cu_seqlens packs sequences along T (B == 1).
// Eigen in double, one query row at a time over its prefix of keys: no tiling, no chunking.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>

#include "polyattn/core/element_view.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"
#include "polyattn/reference/eigen_io.hpp"

namespace polyattn::reference {

struct BasedInputs {
  ElementView<4> q;                          // [B, T, H, K]  fp32, bf16 or fp16 (widened exactly)
  ElementView<4> k;                          // [B, T, H, K]
  ElementView<4> v;                          // [B, T, H, V]
  std::span<const std::int64_t> cu_seqlens;  // optional varlen [N+1], B == 1
};

struct BasedOptions {
  std::optional<double> scale;  // multiplies q; default K^-0.5
  double eps = 1e-6;            // added to the denominator
  bool normalize = true;        // fla use_norm
};

// Sizes of a validated Based call; validate_based is public so tools can check before allocating.
struct BasedDims {
  index_t B = 0, T = 0, H = 0, K = 0, V = 0;
  double scale = 1.0;
};

inline BasedDims validate_based(const BasedInputs& in, const BasedOptions& opt) {
  check::required("q", in.q);
  check::required("k", in.k);
  check::required("v", in.v);
  BasedDims d;
  d.B = in.q.size(0);
  d.T = in.q.size(1);
  d.H = in.q.size(2);
  d.K = in.q.size(3);
  d.V = in.v.size(3);
  check::shape_is("k", in.k, in.q.shape(), "same as q");
  check::shape_is("v", in.v, {d.B, d.T, d.H, d.V}, "[B, T, H, V] from q");
  check::cu_seqlens("cu_seqlens", in.cu_seqlens, d.B, d.T);
  if (opt.scale) {
    check::finite_positive("scale", *opt.scale);
    d.scale = *opt.scale;
  } else {
    d.scale = d.K > 0 ? 1.0 / std::sqrt(static_cast<double>(d.K)) : 1.0;
  }
  if (!(opt.eps >= 0.0) || std::isinf(opt.eps))
    throw Error("eps", "must be finite and >= 0, got " + std::to_string(opt.eps));
  return d;
}

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void based_attention(const BasedInputs& in, const BasedOptions& opt, TensorView<Out, 4> o) {
  using detail::Arr;
  using detail::RowMat;
  using detail::Vec;
  const BasedDims d = validate_based(in, opt);
  check::required("o", o);
  check::shape_is("o", o, {d.B, d.T, d.H, d.V}, "[B, T, H, V] from q and v");

  for (const Segment& sg : segments(d.B, d.T, in.cu_seqlens)) {
    for (index_t h = 0; h < d.H; ++h) {
      const RowMat Q = detail::rows(in.q, sg.batch, sg.begin, sg.length, h).cast<double>();
      const RowMat K = detail::rows(in.k, sg.batch, sg.begin, sg.length, h).cast<double>();
      const RowMat V = detail::rows(in.v, sg.batch, sg.begin, sg.length, h).cast<double>();
      for (index_t t = 0; t < sg.length; ++t) {
        const Arr x = (K.topRows(t + 1) * (d.scale * Q.row(t).transpose())).array();
        const Arr f = 1.0 + x + 0.5 * x.square();
        Vec r = V.topRows(t + 1).transpose() * f.matrix();
        if (opt.normalize) r /= f.sum() + opt.eps;
        detail::store(o, sg.batch, sg.begin + t, h, r);
      }
    }
  }
}

}  // namespace polyattn::reference
