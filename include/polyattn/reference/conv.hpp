// polyattn/reference/conv.hpp — the short causal depthwise convolution in double precision,
// written from the formula of conv/short_conv.hpp (SPEC §9, fla's ShortConvolution):
//
//   y[t, d] = act(bias[d] + Σ_{i<W} w[d, i] · x[t − W + 1 + i, d]),   act ∈ {identity, SiLU}
//   x[τ, d] for τ < 0 := state[d, W − 1 + τ] (zeros without a state);   new state = last W − 1
// per sequence (varlen segments, pool slots), validated exactly as the fast operator. Plain
// loops: obviously right, not fast.
#pragma once

#include <cmath>
#include <vector>

#include "polyattn/conv/short_conv.hpp"

namespace polyattn::reference {

template <class Out>
void short_conv(const conv::ShortConvInputs& in, const conv::ShortConvOptions& opt,
                const TensorView<Out, 3>& y, const TensorView<Out, 3>& final_state = {}) {
  // The inputs validated as the operator's (the double outputs: shapes).
  check::required("y", y);
  const conv::ShortConvDims d = conv::validate_short_conv_inputs(in);
  check::shape_is("y", y, {d.B, d.T, d.D}, "[B, T, D] of x");
  const index_t H = d.W - 1;
  const std::vector<Segment> segs = segments(d.B, d.T, in.cu_seqlens);
  for (std::size_t n = 0; n < segs.size(); ++n) {
    const Segment& sg = segs[n];
    const index_t slot = in.state_indices.empty() ? static_cast<index_t>(n) : in.state_indices[n];
    for (index_t c = 0; c < d.D; ++c) {
      // inputs t − H .. of this sequence and channel; τ < 0 from the state.
      auto input = [&](index_t tau) -> double {
        if (tau >= 0) return in.x(sg.batch, sg.begin + tau, c);
        if (in.initial_state.absent()) return 0.0;
        return in.initial_state(slot, c, H + tau);
      };
      for (index_t t = 0; t < sg.length; ++t) {
        double acc = in.bias.absent() ? 0.0 : static_cast<double>(in.bias(c));
        for (index_t i = 0; i < d.W; ++i)
          acc += static_cast<double>(in.weight(c, i)) * input(t - H + i);
        if (opt.activation == conv::Activation::SiLU) acc = acc / (1.0 + std::exp(-acc));
        y(sg.batch, sg.begin + t, c) = static_cast<Out>(acc);
      }
      if (!final_state.absent())
        for (index_t j = 0; j < H; ++j)
          final_state(slot, c, j) = static_cast<Out>(input(sg.length - H + j));
    }
  }
}

}  // namespace polyattn::reference
