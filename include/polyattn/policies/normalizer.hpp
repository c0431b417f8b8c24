// polyattn/policies/normalizer.hpp — output normalisers of the linear family.
//
//   NoNormalizer   o_t = Sᵀ(scale·q_t)
//   SumNormalizer  o_t = Sᵀ(scale·q_t) / (scale·q_t·z_t + eps),  z_t = Σ_{s≤t} k_s (running)
// (fla's linear_attn normalize uses eps = 1e-10, Based 1e-6.)
#pragma once

#include <concepts>

#include "polyattn/args/linear.hpp"

namespace polyattn {

template <class P>
concept NormalizerPolicy = requires(const P& p) {
  { P::kind } -> std::convertible_to<Normalizer>;
  { p.eps } -> std::convertible_to<double>;
};

struct NoNormalizer {
  static constexpr Normalizer kind = Normalizer::None;
  double eps = 0.0;
};

struct SumNormalizer {
  static constexpr Normalizer kind = Normalizer::Sum;
  double eps = 1e-6;
};

}  // namespace polyattn
