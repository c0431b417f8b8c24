// polyattn/linear/presets.hpp — the fla-named members of the linear family as policy
// compositions (docs/conventions.md §4 table). Feature map Identity unless stated.
//   linear_attn       NoDecay        AdditiveUpdate  NoNormalizer (SumNormalizer{1e-10}: fla
//   normalize) retention         ConstantDecay::retention(HV) lightning_attn
//   ConstantDecay::lightning(HV, layer, layers) simple_gla        ScalarDecay    (also Mamba2 SSD:
//   q = C, k = B, v = x·dt, g = dt·A, scale 1) gla               VectorDecay    (also HGRN2)
//   delta_rule        NoDecay        DeltaUpdate
//   gated_delta_rule  ScalarDecay    DeltaUpdate   (Qwen3-Next)
//   kda               VectorDecay    DeltaUpdate   (Kimi Delta Attention)
//   based             Taylor2Fla map, NoDecay, AdditiveUpdate, SumNormalizer{1e-6}, scale 1:
//                     φ(q)·φ(k) = 1 + s/√d + s²/(2d), s = q·k — fla's Based (parallel_based with
//                     its default scale d^-0.5 gives the same scores)
//   hedgehog<D>       Hedgehog map (caller weights), any decay D, AdditiveUpdate, SumNormalizer
//   gated_delta_rule_fused, kda_fused   GatedDeltaNetDecay / KimiDeltaDecay with
//                     SigmoidBetaUpdate: the gates from raw projections (policies/fused_gates.hpp)
#pragma once

#include "polyattn/linear/operator.hpp"
#include "polyattn/policies/fused_gates.hpp"

namespace polyattn::presets {

using linear_attn = LinearAttention<Identity, NoDecay, AdditiveUpdate, NoNormalizer>;
using linear_attn_normalized = LinearAttention<Identity, NoDecay, AdditiveUpdate, SumNormalizer>;
using retention = LinearAttention<Identity, ConstantDecay, AdditiveUpdate, NoNormalizer>;
using lightning_attn = retention;
using simple_gla = LinearAttention<Identity, ScalarDecay, AdditiveUpdate, NoNormalizer>;
using gla = LinearAttention<Identity, VectorDecay, AdditiveUpdate, NoNormalizer>;
using delta_rule = LinearAttention<Identity, NoDecay, DeltaUpdate, NoNormalizer>;
using gated_delta_rule = LinearAttention<Identity, ScalarDecay, DeltaUpdate, NoNormalizer>;
using kda = LinearAttention<Identity, VectorDecay, DeltaUpdate, NoNormalizer>;

using based = LinearAttention<Taylor2Fla, NoDecay, AdditiveUpdate, SumNormalizer>;
template <DecayPolicy D = NoDecay>
using hedgehog = LinearAttention<Hedgehog, D, AdditiveUpdate, SumNormalizer>;

inline based make_based(double eps = 1e-6) {
  return {Taylor2Fla{}, NoDecay{}, AdditiveUpdate{}, SumNormalizer{eps}, 1.0};
}
template <DecayPolicy D = NoDecay>
hedgehog<D> make_hedgehog(Hedgehog map, D decay = {}, double eps = 1e-6) {
  return {std::move(map), std::move(decay), AdditiveUpdate{}, SumNormalizer{eps}};
}

/// fla's normalize=True: o / (scale·q·cumsum(k) + 1e-10).
inline linear_attn_normalized make_linear_attn_normalized() {
  return {Identity{}, NoDecay{}, AdditiveUpdate{}, SumNormalizer{1e-10}};
}
inline retention make_retention(index_t value_heads) {
  return {Identity{}, ConstantDecay::retention(value_heads), AdditiveUpdate{}, NoNormalizer{}};
}
inline lightning_attn make_lightning_attn(index_t value_heads, index_t layer, index_t layers) {
  return {Identity{}, ConstantDecay::lightning(value_heads, layer, layers), AdditiveUpdate{},
          NoNormalizer{}};
}
inline delta_rule make_delta_rule(bool qk_l2norm = true) {
  return {Identity{}, NoDecay{}, DeltaUpdate{qk_l2norm}, NoNormalizer{}};
}
inline gated_delta_rule make_gated_delta_rule(bool qk_l2norm = true) {
  return {Identity{}, ScalarDecay{}, DeltaUpdate{qk_l2norm}, NoNormalizer{}};
}
inline kda make_kda(bool qk_l2norm = true) {
  return {Identity{}, VectorDecay{}, DeltaUpdate{qk_l2norm}, NoNormalizer{}};
}

// Fused gates (policies/fused_gates.hpp): the same kernels fed the layer's raw projections.
using gated_delta_rule_fused =
    LinearAttention<Identity, GatedDeltaNetDecay, SigmoidBetaUpdate, NoNormalizer>;
using kda_fused = LinearAttention<Identity, KimiDeltaDecay, SigmoidBetaUpdate, NoNormalizer>;
inline gated_delta_rule_fused make_gated_delta_rule_fused(bool qk_l2norm = true) {
  return {Identity{}, GatedDeltaNetDecay{}, SigmoidBetaUpdate{qk_l2norm}, NoNormalizer{}};
}
inline kda_fused make_kda_fused(bool qk_l2norm = true, bool bounded = false,
                                float lower_bound = -5.f) {
  return {Identity{}, KimiDeltaDecay{bounded, lower_bound}, SigmoidBetaUpdate{qk_l2norm},
          NoNormalizer{}};
}

}  // namespace polyattn::presets
