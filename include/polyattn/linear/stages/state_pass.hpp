// polyattn/linear/stages/state_pass.hpp — chunk stage 5: the inter-chunk state pass.
//
//   S_new = e^{b_L} ∘ S0 + (e^{b_L − b} ∘ Kc)ᵀ U      (e^{b_L} scales the rows of S: key channels)
// in place on S (S0 on entry). For the chunk-parallel scheduler (linear/scheduler.hpp) the
// chunk's own pieces instead: ΔS = (e^{b_L − b} ∘ Kc)ᵀ U into delta [K×V] and a = e^{b_L} into
// decay [K] (S untouched), so that S_new = a ∘ S0 + ΔS can be formed later. Kᵀ U reads Kc through
// strides: no transposed copy. Factors below e^kFlushLog are exactly 0 (gates.hpp).
#pragma once

#include <cmath>

#include "polyattn/core/simd/gemm.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/linear/stages/chunk_buffers.hpp"
#include "polyattn/linear/stages/gates.hpp"

namespace polyattn::linear::stages {

// The rows k_s ∘ e^{b_L − b_s} (≤ 1 factors) of the chunk's keys in w.tmp, or Kc itself when the
// policy does not decay; returns where they are.
template <simd::SimdArch A, GateShape Shape>
const float* gated_state_keys(index_t L, const ChunkBuffers& w) {
  using B = simd::batch_t<A>;
  const index_t K = w.K;
  if constexpr (Shape == GateShape::None) {
    return w.Kc;
  } else {
    const float* bL = w.b + (L - 1) * w.bK;
    float* e = w.tmp;
    for (index_t s = 0; s < L; ++s) {
      if constexpr (Shape == GateShape::KeyChannel) {
        simd::transform<A>(
            K, e + s * K, [](B k, B bl, B bs) { return k * decay_exp1<A>(bl - bs); }, w.Kc + s * K,
            bL, w.b + s * K);
      } else {
        const float x = bL[0] - w.b[s];
        simd::transform<A>(
            K, e + s * K, [f = B(std::exp(x < kFlushLog ? -1000.f : x))](B k) { return k * f; },
            w.Kc + s * K);
      }
    }
    return e;
  }
}

// decay [K] = e^{b_L} per key channel (1 without decay): the chunk's factor on its initial state.
template <simd::SimdArch A, GateShape Shape>
void chunk_decay(index_t L, const ChunkBuffers& w, float* decay) {
  for (index_t i = 0; i < w.K; ++i) {
    if constexpr (Shape == GateShape::None)
      decay[i] = 1.f;
    else
      decay[i] = w.eb[(L - 1) * w.bK + (Shape == GateShape::KeyChannel ? i : 0)];
  }
}

// w.tmp is overwritten (the gated keys).
template <simd::SimdArch A, GateShape Shape>
void state_pass(index_t L, const ChunkBuffers& w, const float* U, float* S, float* delta,
                float* decay) {
  const index_t K = w.K, V = w.V;
  if constexpr (Shape != GateShape::None) {
    const float* ebL = w.eb + (L - 1) * w.bK;
    if (!delta)  // S ← e^{b_L} ∘ S (rows of S are key channels)
      for (index_t i = 0; i < K; ++i)
        simd::scale<A>(Shape == GateShape::KeyChannel ? ebL[i] : ebL[0], S + i * V, V);
  }
  const float* Ke = gated_state_keys<A, Shape>(L, w);
  if (delta) {
    simd::gemm_strided<A>(K, V, L, 1.f, Ke, 1, K, U, V, false, delta, V);
    chunk_decay<A, Shape>(L, w, decay);
  } else {
    simd::gemm_strided<A>(K, V, L, 1.f, Ke, 1, K, U, V, true, S, V);
  }
}

}  // namespace polyattn::linear::stages
