// polyattn/policies/update.hpp — state update policies of the linear family: the right-hand side
// u_t of S_t = D_t S_{t−1} + k_t u_tᵀ.
//
//   AdditiveUpdate  u_t = v_t
//   DeltaUpdate     u_t = β_t (v_t − (D_t S_{t−1})ᵀ k_t)   (the delta rule, after the decay, as
//                   in fla); β_t = beta[b,t,h]
// With qk_l2norm, q and k are first normalised in-kernel: x / sqrt(Σx² + 1e-6).
//
// An update policy is one type (concept UpdatePolicy). Its compile-time `delta` says which
// right-hand side the kernels form (additive: u = v, one state pass per token, chunk-parallel
// scheduling possible; delta: the prediction Sᵀk, the WY/UT solve in the chunked form). Hooks:
//   check(in, dims)        validate the tensors it reads (check::beta_input)
//   bind(in, b, t0, h)     for delta updates: the step size of one (sequence, value head),
//                          `float beta(t)` with t relative to t0; an additive update may give
//                          `float value_weight(t)`: then u_t = w_t·v_t (Mamba2's x·Δ).
//                          Optional SIMD hooks for n tokens from t0 at once (the chunked
//                          kernel's; default: the per-token function in a loop):
//                          template <SimdArch A> void betas(t0, float* out, n) /
//                          value_weights(t0, float* out, n)
//   qk_l2norm              whether q and k are L2-normalised in-kernel
// Built-in policies also carry `kind` (the Update value of the reference oracle).
#pragma once

#include <concepts>
#include <type_traits>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/simd/arch.hpp"

namespace polyattn {

/// An update bound to one (sequence, value head), as the kernels see it.
template <class U, bool Delta>
concept BoundUpdate =
    std::is_trivially_copyable_v<U> && (!Delta || requires(const U& u, index_t t) {
      { u.beta(t) } -> std::convertible_to<float>;
    });

template <class P>
concept UpdatePolicy = requires { typename std::bool_constant<P::delta>; } &&
                       requires(const P& p, const LinearInputs& in, const LinearDims& d, index_t b,
                                index_t t0, index_t h) {
                         { p.qk_l2norm } -> std::convertible_to<bool>;
                         p.check(in, d);
                         { p.bind(in, b, t0, h) } -> BoundUpdate<P::delta>;
                       };

/// The bound update type of an update policy.
template <UpdatePolicy P>
using bound_update_t = decltype(std::declval<const P&>().bind(std::declval<const LinearInputs&>(),
                                                              index_t{}, index_t{}, index_t{}));

/// A bound update's optional SIMD hooks: β, or the value weights, of n tokens from t0 at once.
template <class U, class A>
concept HasBetas =
    requires(const U& u, index_t t0, float* out, index_t n) { u.template betas<A>(t0, out, n); };
template <class U, class A>
concept HasValueWeights = requires(const U& u, index_t t0, float* out, index_t n) {
  u.template value_weights<A>(t0, out, n);
};

/// out[t] = β of token t0 + t (t < n): the update's SIMD hook when it has one.
template <simd::SimdArch A, class U>
void update_betas(const U& u, index_t t0, float* out, index_t n) {
  if constexpr (HasBetas<U, A>) {
    u.template betas<A>(t0, out, n);
  } else {
    for (index_t t = 0; t < n; ++t) out[t] = static_cast<float>(u.beta(t0 + t));
  }
}

/// out[t] = w of token t0 + t (t < n) of a weighted additive update: its SIMD hook when it has one.
template <simd::SimdArch A, class U>
void update_value_weights(const U& u, index_t t0, float* out, index_t n) {
  if constexpr (HasValueWeights<U, A>) {
    u.template value_weights<A>(t0, out, n);
  } else {
    for (index_t t = 0; t < n; ++t) out[t] = static_cast<float>(u.value_weight(t0 + t));
  }
}

struct AdditiveUpdate {
  static constexpr bool delta = false;
  static constexpr Update kind = Update::Additive;
  bool qk_l2norm = false;
  struct Bound {};
  void check(const LinearInputs& in, const LinearDims& d) const { check::beta_input(in, d, false); }
  Bound bind(const LinearInputs&, index_t, index_t, index_t) const { return {}; }
};

struct DeltaUpdate {
  static constexpr bool delta = true;
  static constexpr Update kind = Update::Delta;
  bool qk_l2norm = false;
  struct Bound {
    const float* b;  // beta[t·st]
    index_t st;
    float beta(index_t t) const noexcept { return b[t * st]; }
  };
  void check(const LinearInputs& in, const LinearDims& d) const { check::beta_input(in, d, true); }
  Bound bind(const LinearInputs& in, index_t b, index_t t0, index_t h) const {
    return {in.beta.ptr(b, t0, h), in.beta.stride(1)};
  }
};

static_assert(UpdatePolicy<AdditiveUpdate> && UpdatePolicy<DeltaUpdate>);

}  // namespace polyattn
