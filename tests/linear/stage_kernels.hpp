// tests/linear/stage_kernels.hpp — the chunked algorithm's stages (linear/stages/) wrapped as
// kernels, so test_linear_stages can run each stage for every ISA: RunStage::operator() is
// declared here, defined below, and instantiated per ISA in stage_kernels_unit.cpp (the same
// kernel-list mechanism a user's own kernels use; core/simd/dispatch.hpp).
#pragma once

#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/linear/stages/chunk_buffers.hpp"
#include "polyattn/linear/stages/chunk_inputs.hpp"
#include "polyattn/linear/stages/gates.hpp"
#include "polyattn/linear/stages/gram.hpp"
#include "polyattn/linear/stages/output.hpp"
#include "polyattn/linear/stages/state_pass.hpp"
#include "polyattn/linear/stages/wy_solve.hpp"
#include "polyattn/policies/decay.hpp"

namespace polyattn::test {

// A key-channel gate without the SIMD row hook: the gates stage must fall back to log_decay(t, i).
struct PlainChannelGate {
  const float* gk;
  index_t st;
  float log_decay(index_t t, index_t i) const noexcept { return gk[t * st + i]; }
};

enum class Stage { Inputs, Gates, GatesPlain, Gram, WySolve, Output, OutputSum, State, StateDelta };

// Everything a stage reads or writes, for one chunk of L tokens.
struct StageArgs {
  Stage stage = Stage::Inputs;
  GateShape shape = GateShape::None;
  index_t L = 0;
  linear::stages::ChunkBuffers w;
  const float *q = nullptr, *k = nullptr, *v = nullptr, *g = nullptr;  // rows of K / V / bK
  float scale = 1.f;
  bool l2norm = false;
  bool want_qk = true, want_kk = true;
  float *S = nullptr, *o = nullptr, *z = nullptr, *delta = nullptr, *decay = nullptr;
  float eps = 0.f;
};

struct RunStage {
  const StageArgs* a;
  template <simd::SimdArch A>
  void operator()(A) const;

 private:
  template <simd::SimdArch A, GateShape Shape>
  void run() const;
};

template <simd::SimdArch A>
void RunStage::operator()(A) const {
  switch (a->shape) {
    case GateShape::None:
      return run<A, GateShape::None>();
    case GateShape::Scalar:
      return run<A, GateShape::Scalar>();
    case GateShape::KeyChannel:
      return run<A, GateShape::KeyChannel>();
  }
}

template <simd::SimdArch A, GateShape Shape>
void RunStage::run() const {
  namespace st = linear::stages;
  const StageArgs& x = *a;
  const index_t K = x.w.K, V = x.w.V;
  switch (x.stage) {
    case Stage::Inputs:
      st::load_queries_keys<A>(x.L, K, x.q, K, x.k, K, x.scale, x.l2norm, x.w.Q, x.w.Kc);
      break;
    case Stage::Gates:
      if constexpr (Shape == GateShape::Scalar)
        st::cumulative_gates<A, Shape>(ScalarDecay::Gate{x.g, 1}, 0, x.L, K, x.w.b, x.w.eb);
      else if constexpr (Shape == GateShape::KeyChannel)
        st::cumulative_gates<A, Shape>(VectorDecay::Gate{x.g, K, 1}, 0, x.L, K, x.w.b, x.w.eb);
      break;
    case Stage::GatesPlain:
      if constexpr (Shape == GateShape::KeyChannel)
        st::cumulative_gates<A, Shape>(PlainChannelGate{x.g, K}, 0, x.L, K, x.w.b, x.w.eb);
      break;
    case Stage::Gram:
      st::gated_gram<A, Shape>(x.L, x.w, x.want_qk, x.want_kk);
      break;
    case Stage::WySolve:
      st::wy_solve<A, Shape>(x.L, x.w, x.v, V, x.S);
      break;
    case Stage::Output:
      st::chunk_output<A, Shape, false>(x.L, x.w, x.S, x.w.U, x.o, V, nullptr, 0.f);
      break;
    case Stage::OutputSum:
      st::chunk_output<A, Shape, true>(x.L, x.w, x.S, x.w.U, x.o, V, x.z, x.eps);
      break;
    case Stage::State:
      st::state_pass<A, Shape>(x.L, x.w, x.w.U, x.S, nullptr, nullptr);
      break;
    case Stage::StateDelta:
      st::state_pass<A, Shape>(x.L, x.w, x.w.U, x.S, x.delta, x.decay);
      break;
  }
}

}  // namespace polyattn::test

#define POLYATTN_TEST_STAGE_KERNELS(X) X(::polyattn::test::RunStage)
POLYATTN_TEST_STAGE_KERNELS(POLYATTN_KERNEL_EXTERN)
