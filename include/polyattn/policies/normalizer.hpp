// polyattn/policies/normalizer.hpp — output normalisers of the linear family.
//
//   NoNormalizer   o_t = Sᵀ(scale·q_t)
//   SumNormalizer  o_t = Sᵀ(scale·q_t) / (scale·q_t·z_t + eps),  z_t = Σ_{s≤t} k_s (running)
// (fla's linear_attn normalize uses eps = 1e-10, Based 1e-6.)
//
// A normaliser policy is one type (concept NormalizerPolicy): its compile-time `running_sum`
// says whether the kernels keep z (a state of its own, [K] per head, carried by step() and
// initial_z / final_z) and divide by scale·q·z + eps. Built-in policies also carry `kind` (the
// Normalizer value of the reference oracle).
#pragma once

#include <concepts>
#include <type_traits>

#include "polyattn/args/linear.hpp"

namespace polyattn {

template <class P>
concept NormalizerPolicy =
    requires { typename std::bool_constant<P::running_sum>; } && requires(const P& p) {
      { p.eps } -> std::convertible_to<double>;
    };

struct NoNormalizer {
  static constexpr bool running_sum = false;
  static constexpr Normalizer kind = Normalizer::None;
  double eps = 0.0;
};

struct SumNormalizer {
  static constexpr bool running_sum = true;
  static constexpr Normalizer kind = Normalizer::Sum;
  double eps = 1e-6;
};

static_assert(NormalizerPolicy<NoNormalizer> && NormalizerPolicy<SumNormalizer>);

}  // namespace polyattn
