// tests/linear/gate_hook_kernels.hpp — the fused gates' per-token SIMD hooks (policies/
// fused_gates.hpp: log_decays, betas, value_weights) wrapped as a kernel, so test_linear_engine
// can run them for every ISA of the binary and compare them with the scalar functions.
// RunGateHook::operator() is instantiated per ISA in gate_hook_kernels_unit.cpp.
#pragma once

#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/policies/fused_gates.hpp"

namespace polyattn::test {

enum class GateHook { GdnDecay, SigmoidBeta, Mamba2Decay, Mamba2Weight };

// out[t] for tokens t0 .. t0+n−1 of (sequence 0, value head h), through the free functions the
// chunked kernel calls (gate_log_decays, update_betas, update_value_weights).
struct RunGateHook {
  GateHook hook;
  const LinearInputs* in;
  gates::TimeStep time_step;
  index_t h, t0, n;
  float* out;
  template <simd::SimdArch A>
  void operator()(A) const;
};

template <simd::SimdArch A>
void RunGateHook::operator()(A) const {
  switch (hook) {
    case GateHook::GdnDecay:
      return gate_log_decays<A>(GatedDeltaNetDecay{}.bind(*in, 0, 0, h), t0, out, n);
    case GateHook::SigmoidBeta:
      return update_betas<A>(SigmoidBetaUpdate{}.bind(*in, 0, 0, h), t0, out, n);
    case GateHook::Mamba2Decay:
      return gate_log_decays<A>(Mamba2Decay{time_step}.bind(*in, 0, 0, h), t0, out, n);
    case GateHook::Mamba2Weight:
      return update_value_weights<A>(Mamba2Update{false, time_step}.bind(*in, 0, 0, h), t0, out, n);
  }
}

}  // namespace polyattn::test

#define POLYATTN_TEST_GATE_HOOK_KERNELS(X) X(::polyattn::test::RunGateHook)
POLYATTN_TEST_GATE_HOOK_KERNELS(POLYATTN_KERNEL_EXTERN)
