// tests/reference/legacy/based.hpp — frozen copy of include/polyattn/reference/based.hpp as of faca67a
// (namespace reference_legacy), kept only while test_reference_parity compares the Eigen rewrite
// with it.
// polyattn/reference/based.hpp — naive double-precision Based attention (fla parallel_based).
//
// Per (sequence, head), causal, with x_ts = (scale · q_t)·k_s (scale default K^-0.5) and the
// 2nd-order Taylor score f(x) = 1 + x + x²/2:
//   o_t = Σ_{s≤t} f(x_ts) v_s / (Σ_{s≤t} f(x_ts) + eps)      (eps = 1e-6; normalize = true)
//   o_t = Σ_{s≤t} f(x_ts) v_s                                (normalize = false)
// Shapes: q, k [B,T,H,K], v [B,T,H,V], o [B,T,H,V]; cu_seqlens packs sequences along T (B == 1).
// Straightforward materialised code, doubles throughout.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "polyattn/core/error.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"

namespace polyattn::reference_legacy {

struct BasedInputs {
  TensorView<const float, 4> q;              // [B, T, H, K]
  TensorView<const float, 4> k;              // [B, T, H, K]
  TensorView<const float, 4> v;              // [B, T, H, V]
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
  const BasedDims d = validate_based(in, opt);
  check::required("o", o);
  check::shape_is("o", o, {d.B, d.T, d.H, d.V}, "[B, T, H, V] from q and v");

  std::vector<double> num(static_cast<std::size_t>(d.V));
  for (const Segment& sg : segments(d.B, d.T, in.cu_seqlens)) {
    for (index_t h = 0; h < d.H; ++h) {
      for (index_t t = 0; t < sg.length; ++t) {
        const index_t tt = sg.begin + t;
        std::fill(num.begin(), num.end(), 0.0);
        double den = 0.0;
        for (index_t s = 0; s <= t; ++s) {
          const index_t ss = sg.begin + s;
          double x = 0.0;
          for (index_t c = 0; c < d.K; ++c)
            x += d.scale * static_cast<double>(in.q(sg.batch, tt, h, c)) *
                 static_cast<double>(in.k(sg.batch, ss, h, c));
          const double f = 1.0 + x + 0.5 * x * x;
          den += f;
          for (index_t e = 0; e < d.V; ++e)
            num[static_cast<std::size_t>(e)] += f * static_cast<double>(in.v(sg.batch, ss, h, e));
        }
        for (index_t e = 0; e < d.V; ++e) {
          const double r = opt.normalize ? num[static_cast<std::size_t>(e)] / (den + opt.eps)
                                         : num[static_cast<std::size_t>(e)];
          o(sg.batch, tt, h, e) = static_cast<Out>(r);
        }
      }
    }
  }
}

}  // namespace polyattn::reference_legacy
