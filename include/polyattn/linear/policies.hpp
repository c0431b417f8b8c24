// polyattn/linear/policies.hpp — the policy set of one linear-family kernel: a decay, an update
// and a normaliser (policies/*.hpp), and the compile-time properties the kernels branch on:
//   shape        GateShape of the decay (None / Scalar / KeyChannel)
//   delta        the update's right-hand side is β(v − Sᵀk) (else u = v)
//   running_sum  the normaliser keeps z = Σ k and divides by scale·q·z + eps
//   weighted     additive update with a per-token weight: u = w_t·v (the bound update's
//                value_weight(t); Mamba2's x·Δ)
// Kernels are templates on a LinearPolicies<...>; the per-ISA units instantiate the built-in
// presets' sets (linear/kernels.hpp), a user's set is instantiated where it is used.
#pragma once

#include "polyattn/policies/decay.hpp"
#include "polyattn/policies/normalizer.hpp"
#include "polyattn/policies/update.hpp"

namespace polyattn::linear {

template <DecayPolicy D, UpdatePolicy U, NormalizerPolicy N>
struct LinearPolicies {
  using decay = D;
  using update = U;
  using normalizer = N;
  static constexpr GateShape shape = D::shape;
  static constexpr bool delta = U::delta;
  static constexpr bool running_sum = N::running_sum;
  static constexpr bool weighted = !U::delta && requires(const bound_update_t<U>& u, index_t t) {
    { u.value_weight(t) } -> std::convertible_to<float>;
  };
};

}  // namespace polyattn::linear
