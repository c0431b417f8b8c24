// polyattn/linear/commit.hpp — committing an accepted prefix of a speculative verify (linear/
// speculative.hpp) to the state, for one head: with what the verify kept of its single chunk of
// T tokens — keys Kc, updates U (the delta rule's solved β(v − Sᵀk) rows) and cumulative log
// gates b — the state after the first m ≤ T tokens is the chunk state pass over those m rows,
//   S_m = e^{b_m} ∘ S_0 + (e^{b_m − b} ∘ Kc[0:m])ᵀ U[0:m]
// exactly what the chunked kernel does at the end of a chunk of m tokens (row t of U depends
// only on tokens ≤ t), so no token is recomputed: one pass over S and m·K·V multiply-adds.
#pragma once

#include <algorithm>
#include <cstddef>

#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/linear/head.hpp"
#include "polyattn/linear/stages/chunk_buffers.hpp"
#include "polyattn/linear/stages/gates.hpp"
#include "polyattn/linear/stages/state_pass.hpp"

namespace polyattn::linear {

/// Floats a verify keeps per (sequence, value head) for T tokens: Kc [T×K], U [T×V], b [T×bK].
template <class P>
constexpr std::size_t kept_floats(index_t T, index_t K, index_t V) {
  return static_cast<std::size_t>(T * (K + V + (P::shape == GateShape::KeyChannel ? K : 1)));
}

template <class P>
struct CommitKernel {
  const float* kept;  // laid out by the chunked kernel's keep hook for T tokens
  index_t T, m, K, V;
  float* state;         // [K][V] contiguous, S_0 on entry, S_m on exit
  Workspace workspace;  // at least workspace_floats(m, K, V)

  static constexpr std::size_t workspace_floats(index_t m, index_t K, index_t V) {
    return stages::ChunkBuffers::floats(m, K, V, P::shape == GateShape::KeyChannel);
  }
  template <simd::SimdArch A>
  void operator()(A) const;
};

template <class P>
template <simd::SimdArch A>
void CommitKernel<P>::operator()(A) const {
  if (m <= 0) return;
  const stages::ChunkBuffers w =
      stages::ChunkBuffers::carve(workspace, m, K, V, P::shape == GateShape::KeyChannel);
  std::copy(kept, kept + m * K, w.Kc);
  const float* U = kept + T * K;  // rows 0 .. m−1 of the kept U
  if constexpr (P::shape != GateShape::None) {
    std::copy(kept + T * (K + V), kept + T * (K + V) + m * w.bK, w.b);
    stages::decay_exp<A>(w.b, w.eb, m * w.bK);
  }
  stages::state_pass<A, P::shape>(m, w, U, state, nullptr, nullptr);
}

}  // namespace polyattn::linear
