// examples/custom_decay.hpp — a decay policy that is not built into polyattn, in one type.
//
// GLA computes its forget gate from raw logits x in the layer (fla: gk = logsigmoid(x) / τ with
// gate_logit_normalizer τ = 16). This policy takes the raw logits and computes the gate inside
// the kernels, with a floor so that no channel forgets faster than a_min per token:
//   log a_{t,i} = max(logsigmoid(x_{t,i}) / τ, log a_min),   S_t = diag(a_t) S_{t−1} + k_t u_tᵀ
// It reads x from LinearInputs::gk ([B,T,HV,K], raw logits here instead of log decays).
//
// What a decay policy provides (concept polyattn::DecayPolicy, policies/decay.hpp):
//   shape                 GateShape::KeyChannel: one log decay per key channel (selects the
//                         kernels' key-channel stages)
//   check(in, dims)       validates the tensors it reads, naming them in a polyattn::Error
//   bind(in, b, t0, h)    the gate of one (sequence, value head): a small copyable value with
//                         log_decay(t, i), t counted from t0
// Nothing under include/ changes for it: the operator, both algorithms and the decode step
// take it as a type. The kernel list line at the bottom says that this policy set's kernels are
// compiled once per ISA in custom_decay_units.cpp (passed to polyattn_add_arch_units); without
// it, they would be compiled here for this translation unit's own ISA flags.
#pragma once

#include <cmath>
#include <string>

#include <polyattn/polyattn.hpp>

struct FlooredLogSigmoidDecay {
  static constexpr polyattn::GateShape shape = polyattn::GateShape::KeyChannel;
  float tau = 16.f;            // gate_logit_normalizer
  float log_floor = -0.1054f;  // log a_min (a_min = 0.9)

  struct Gate {
    const float* x;  // x[t·st + i·cst]
    polyattn::index_t st, cst;
    float inv_tau, log_floor;
    float log_decay(polyattn::index_t t, polyattn::index_t i) const noexcept {
      const float v = x[t * st + i * cst];
      const float logsig = v >= 0.f ? -std::log1p(std::exp(-v)) : v - std::log1p(std::exp(v));
      return std::fmax(logsig * inv_tau, log_floor);
    }
  };

  void check(const polyattn::LinearInputs& in, const polyattn::LinearDims& d) const {
    polyattn::check::gate_inputs(in, d, {.gk = true}, "by FlooredLogSigmoidDecay (raw logits)");
    if (!(tau > 0.f) || !std::isfinite(tau))
      throw polyattn::Error("tau", "must be finite and > 0, got " + std::to_string(tau));
    if (!(log_floor <= 0.f))
      throw polyattn::Error("log_floor", "must be <= 0, got " + std::to_string(log_floor));
  }
  Gate bind(const polyattn::LinearInputs& in, polyattn::index_t b, polyattn::index_t t0,
            polyattn::index_t h) const {
    return {in.gk.ptr(b, t0, h, 0), in.gk.stride(1), in.gk.stride(3), 1.f / tau, log_floor};
  }
};
static_assert(polyattn::DecayPolicy<FlooredLogSigmoidDecay>);

// A KDA-style operator with that gate: delta rule, in-kernel q/k L2 norm.
using FlooredKda = polyattn::LinearAttention<polyattn::Identity, FlooredLogSigmoidDecay,
                                             polyattn::DeltaUpdate, polyattn::NoNormalizer>;

// Its kernels live in the per-ISA units built from custom_decay_units.cpp.
POLYATTN_LINEAR_KERNELS_FOR(POLYATTN_KERNEL_EXTERN, ::FlooredLogSigmoidDecay,
                            ::polyattn::DeltaUpdate, ::polyattn::NoNormalizer)
