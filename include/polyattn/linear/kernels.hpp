// polyattn/linear/kernels.hpp — the linear family's kernel list: the policy sets of the built-in
// presets, each with its Recurrent and Chunked kernel. The one list expands to the extern
// declarations here (every TU then calls the per-ISA units' bodies) and to the instantiations in
// units/linear_*_units.cpp (core/simd/dispatch.hpp explains the mechanism).
//
// A user's own policy set gets the same treatment with POLYATTN_LINEAR_KERNELS_FOR:
//   // in the header that defines MyDecay, after it:
//   POLYATTN_LINEAR_KERNELS_FOR(POLYATTN_KERNEL_EXTERN, MyDecay, polyattn::DeltaUpdate,
//                               polyattn::NoNormalizer)
//   // in a source passed to polyattn_add_arch_units:
//   POLYATTN_LINEAR_KERNELS_FOR(POLYATTN_KERNEL_INSTANTIATE, MyDecay, polyattn::DeltaUpdate,
//                               polyattn::NoNormalizer)
// Without either, the kernels of that set are compiled in the calling TU for its own ISA flags.
#pragma once

#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/linear/chunked.hpp"
#include "polyattn/linear/commit.hpp"
#include "polyattn/linear/recurrent.hpp"
#include "polyattn/policies/fused_gates.hpp"

// X applied to the kernels of one policy set (decay, update, normaliser; fully qualified):
// Recurrent, Chunked and the speculative commit.
#define POLYATTN_LINEAR_KERNELS_FOR(X, ...)                                               \
  X(::polyattn::linear::RecurrentKernel<::polyattn::linear::LinearPolicies<__VA_ARGS__>>) \
  X(::polyattn::linear::ChunkedKernel<::polyattn::linear::LinearPolicies<__VA_ARGS__>>)   \
  X(::polyattn::linear::CommitKernel<::polyattn::linear::LinearPolicies<__VA_ARGS__>>)

// Additive presets: linear_attn (plain and normalised, Based, Hedgehog), retention / lightning,
// simple_gla, gla (and Hedgehog with each decay).
#define POLYATTN_LINEAR_ADDITIVE_KERNELS(X)                                             \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::NoDecay, ::polyattn::AdditiveUpdate,       \
                              ::polyattn::NoNormalizer)                                 \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::NoDecay, ::polyattn::AdditiveUpdate,       \
                              ::polyattn::SumNormalizer)                                \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::ConstantDecay, ::polyattn::AdditiveUpdate, \
                              ::polyattn::NoNormalizer)                                 \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::ConstantDecay, ::polyattn::AdditiveUpdate, \
                              ::polyattn::SumNormalizer)                                \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::ScalarDecay, ::polyattn::AdditiveUpdate,   \
                              ::polyattn::NoNormalizer)                                 \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::ScalarDecay, ::polyattn::AdditiveUpdate,   \
                              ::polyattn::SumNormalizer)                                \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::VectorDecay, ::polyattn::AdditiveUpdate,   \
                              ::polyattn::NoNormalizer)                                 \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::VectorDecay, ::polyattn::AdditiveUpdate,   \
                              ::polyattn::SumNormalizer)

// Delta-rule presets: delta_rule, gated_delta_rule (Qwen3-Next), kda (Kimi Linear).
#define POLYATTN_LINEAR_DELTA_KERNELS(X)                                           \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::NoDecay, ::polyattn::DeltaUpdate,     \
                              ::polyattn::NoNormalizer)                            \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::ScalarDecay, ::polyattn::DeltaUpdate, \
                              ::polyattn::NoNormalizer)                            \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::VectorDecay, ::polyattn::DeltaUpdate, \
                              ::polyattn::NoNormalizer)

// Fused gates (policies/fused_gates.hpp): gated_delta_rule and kda from raw projections, Mamba2.
#define POLYATTN_LINEAR_FUSED_KERNELS(X)                                                        \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::GatedDeltaNetDecay, ::polyattn::SigmoidBetaUpdate, \
                              ::polyattn::NoNormalizer)                                         \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::KimiDeltaDecay, ::polyattn::SigmoidBetaUpdate,     \
                              ::polyattn::NoNormalizer)                                         \
  POLYATTN_LINEAR_KERNELS_FOR(X, ::polyattn::Mamba2Decay, ::polyattn::Mamba2Update,             \
                              ::polyattn::NoNormalizer)

#define POLYATTN_LINEAR_KERNELS(X)    \
  POLYATTN_LINEAR_ADDITIVE_KERNELS(X) \
  POLYATTN_LINEAR_DELTA_KERNELS(X)    \
  POLYATTN_LINEAR_FUSED_KERNELS(X)

POLYATTN_LINEAR_KERNELS(POLYATTN_KERNEL_EXTERN)
