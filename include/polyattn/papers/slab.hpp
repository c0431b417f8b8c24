// polyattn/papers/slab.hpp — SLAB's simplified linear attention (Guo et al., "SLAB: Efficient
// Transformers with Simplified Linear Attention and Progressive Re-parameterized Batch
// Normalization", ICML 2024: the simplified linear attention (SLA) module, as in the authors'
// code github.com/xinghaochen/SLAB, classification/models/slab_deit.py; LiT, Wang et al. 2025,
// uses the same module) in its 1-D causal form, per (sequence, value head):
//
//   o_t = relu(q_t)ᵀ Σ_{s≤t} relu(k_s) v_sᵀ / (relu(q_t)·Σ_{s≤t} relu(k_s) + 1e-6)
//         + DWC(v)_t
//
// where DWC is a depthwise convolution over tokens (causal here: taps on v_{t−W+1..t}; the
// authors' code convolves the square image grid, kernel 5, one kernel per head channel shared
// by the heads, with a bias). No scale (the authors' code applies none; the normaliser makes the
// output independent of it, eps aside).
//
// Composition: the linear part is LinearAttention<Relu, NoDecay, AdditiveUpdate,
// SumNormalizer{1e-6}> with scale 1 (Recurrent, Chunked<C>, Parallel, step with z), the local part
// papers::token_conv_add with weight [1, 1 or HV, V, W] and bias [V].
// Element types: q, k, v fp32, bf16 or fp16 (one type, as the linear family), o any of the three:
// the linear part gets the typed views (the kernels convert on load), the conv reads v widened,
// and the sum is formed in fp32 and rounded once (papers/fp32_linear_outputs.hpp), so bf16 inputs
// give the fp32 operator's bits on the widened values (docs/conventions.md §9.8).
#pragma once

#include "polyattn/linear/presets.hpp"
#include "polyattn/papers/fp32_linear_outputs.hpp"
#include "polyattn/papers/token_conv.hpp"

namespace polyattn::papers {

namespace presets {
using slab_linear = LinearAttention<Relu, NoDecay, AdditiveUpdate, SumNormalizer>;
inline slab_linear make_slab_linear(double eps = 1e-6) {
  return {Relu{}, NoDecay{}, AdditiveUpdate{}, SumNormalizer{eps}, 1.0};
}
}  // namespace presets

/// The whole SLA module: linear part plus the causal depthwise conv of v.
class Slab {
 public:
  explicit Slab(double eps = 1e-6) : linear_(presets::make_slab_linear(eps)) {}
  const presets::slab_linear& linear() const { return linear_; }

  /// Prefill: in as for the linear family (initial_state / initial_z optional), conv the DWC
  /// kernel, cache its history (optional in / out). Everything is checked before o is written.
  template <LinearAlgorithm Algo = Recurrent, Executor E = Serial>
  void forward(const LinearInputs& in, const TokenConv& conv, const TokenConvCache& cache,
               const LinearOutputs<float>& out, const LinearRunOptions& run = {},
               const E& exec = E{}) const {
    check_conv(in, conv, cache);
    const Fp32LinearOutputs o32(in, out);
    linear_.template forward<Algo>(in, o32.outputs(), run, exec);
    token_conv_add_unchecked(in.v, conv, cache, in.cu_seqlens, o32.o());
    o32.finish();
  }

  /// Decode: state [B,HV,K,V], z [B,HV,K] and the conv cache [B,HV,W−1,V] in place.
  template <Executor E = Serial>
  void step(const LinearInputs& in, View4<float> state, View3<float> z, const TokenConv& conv,
            View4<float> conv_cache, MutEView4 o, const LinearRunOptions& run = {},
            const E& exec = E{}) const {
    const TokenConvCache cache{conv_cache, conv_cache};
    check_conv(in, conv, cache);
    const Fp32LinearOutputs o32(in, {.o = o});
    linear_.step(in, state, z, o32.o(), run, exec);
    token_conv_add_unchecked(in.v, conv, cache, {}, o32.o());
    o32.finish();
  }

 private:
  static void check_conv(const LinearInputs& in, const TokenConv& conv,
                         const TokenConvCache& cache) {
    check::required("q", in.q);
    check::required("v", in.v);
    const index_t N = check::cu_seqlens("cu_seqlens", in.cu_seqlens, in.q.size(0), in.q.size(1));
    check_token_conv(conv, cache, N, in.v.size(2), in.v.size(3));
  }
  presets::slab_linear linear_;
};

}  // namespace polyattn::papers
