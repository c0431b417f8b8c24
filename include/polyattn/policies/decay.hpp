// polyattn/policies/decay.hpp — decay (gate) policies of the linear family, in log space.
//
//   NoDecay        S ← S
//   ConstantDecay  S ← exp(g_gamma[h])·S        one log-decay per value head (RetNet, Lightning)
//   ScalarDecay    S ← exp(g_t)·S               g[B,T,HV]   (simple GLA, Mamba2 SSD, Gated DeltaNet)
//   VectorDecay    S ← diag(exp(gk_t))·S        gk[B,T,HV,K] (GLA, HGRN2, KDA; rows = key channels)
// ConstantDecay can carry its own per-head values (ConstantDecay::retention(H),
// ConstantDecay::lightning(H, layer, layers)) or take g_gamma from the inputs.
#pragma once

#include <concepts>
#include <vector>

#include "polyattn/args/linear.hpp"

namespace polyattn {

template <class P>
concept DecayPolicy = requires {
  { P::kind } -> std::convertible_to<Decay>;
};

struct NoDecay {
  static constexpr Decay kind = Decay::None;
};

struct ConstantDecay {
  static constexpr Decay kind = Decay::ConstantPerHead;
  std::vector<float> g_gamma;  // empty: use LinearInputs::g_gamma

  // RetNet: g_h = log(1 − 2^(−5−h)).
  static ConstantDecay retention(index_t heads) {
    ConstantDecay d;
    for (index_t h = 0; h < heads; ++h) d.g_gamma.push_back(static_cast<float>(retention_log_decay(h)));
    return d;
  }
  // Lightning Attention: g_h = −(8/H)(1 − layer/layers)·h.
  static ConstantDecay lightning(index_t heads, index_t layer, index_t layers) {
    ConstantDecay d;
    for (index_t h = 0; h < heads; ++h)
      d.g_gamma.push_back(static_cast<float>(lightning_log_decay(h, heads, layer, layers)));
    return d;
  }
};

struct ScalarDecay {
  static constexpr Decay kind = Decay::ScalarPerToken;
};

struct VectorDecay {
  static constexpr Decay kind = Decay::VectorPerToken;
};

}  // namespace polyattn
