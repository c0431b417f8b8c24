// polyattn/papers/inline_attention.hpp — InLine attention with its local-attention residual
// (Han et al., "Bridging the Divide: Reconsidering Softmax and Linear Attention", NeurIPS 2024),
// 1-D causal form, per (sequence, value head):
//
//   o_t = InLine_t(q, k, v) + Σ_{j<W} r[c, j] · v[t − W + 1 + j, c]
//
// InLine_t is papers::presets::inline_attn (mean_corrected.hpp: injective scores, weights summing
// to one over the keys seen so far). The residual is the paper's local attention: in the
// authors' code a 3×3 window over the image whose weights r are predicted per (image, channel)
// from the mean token by a small MLP; here the window is the W latest tokens and the caller
// passes r as a TokenConv kernel [N or 1, HV or 1, V, W] (predicting it is the model's business;
// a causal model must predict it from what it has seen). No bias (the authors' residual has
// none; TokenConv's bias is accepted if given).
// Element types: q, k, v fp32, bf16 or fp16 (one type, as the linear family), o any of the three:
// as MeanCorrectedLinear, with the residual read from v widened and added in fp32 before the one
// rounding of o (papers/fp32_linear_outputs.hpp; docs/conventions.md §9.8).
#pragma once

#include "polyattn/papers/fp32_linear_outputs.hpp"
#include "polyattn/papers/mean_corrected.hpp"
#include "polyattn/papers/token_conv.hpp"

namespace polyattn::papers {

template <FeatureMap Map = Identity>
class InLine {
 public:
  InLine() = default;
  explicit InLine(Map map) : attn_(presets::make_inline_attn(std::move(map))) {}
  const presets::inline_attn<Map>& attention() const { return attn_; }

  /// Prefill: the InLine operator's arguments plus the residual kernel and its optional cache.
  template <LinearAlgorithm Algo = Recurrent, Executor E = Serial>
  void forward(const LinearInputs& in, const MeanState<const float>& init,
               const TokenConv& residual, const TokenConvCache& cache,
               const LinearOutputs<float>& out, const MeanState<float>& fin,
               const LinearRunOptions& run = {}, const E& exec = E{}) const {
    check_residual(in, residual, cache);
    const Fp32LinearOutputs o32(in, out);
    attn_.template forward<Algo>(in, init, o32.outputs(), fin, run, exec);
    token_conv_add_unchecked(in.v, residual, cache, in.cu_seqlens, o32.o());
    o32.finish();
  }

  /// Decode: state, mean state and the residual's cache [B,HV,W−1,V] in place.
  template <Executor E = Serial>
  void step(const LinearInputs& in, View4<float> state, const MeanState<float>& mean,
            const TokenConv& residual, View4<float> conv_cache, MutEView4 o,
            const LinearRunOptions& run = {}, const E& exec = E{}) const {
    const TokenConvCache cache{conv_cache, conv_cache};
    check_residual(in, residual, cache);
    const Fp32LinearOutputs o32(in, {.o = o});
    attn_.step(in, state, mean, o32.o(), run, exec);
    token_conv_add_unchecked(in.v, residual, cache, {}, o32.o());
    o32.finish();
  }

 private:
  static void check_residual(const LinearInputs& in, const TokenConv& residual,
                             const TokenConvCache& cache) {
    check::required("q", in.q);
    check::required("v", in.v);
    const index_t N = check::cu_seqlens("cu_seqlens", in.cu_seqlens, in.q.size(0), in.q.size(1));
    check_token_conv(residual, cache, N, in.v.size(2), in.v.size(3));
  }
  presets::inline_attn<Map> attn_{};
};

}  // namespace polyattn::papers
