// polyattn/linear/stages/output.hpp — chunk stage 4: the outputs of a chunk.
//
//   O = (e^{b} ∘ Q) S0 + (QK masked to s ≤ t) U        (Q already holds scale·q)
//   o_t = O_t                                          without normaliser
//   z ← z + k_t,  o_t = O_t / (Q_t·z + eps)            with the Sum normaliser (running_sum)
// S0 is the state at the chunk start [K×V], U the chunk's update rows [L×V] (values, or the WY
// solve's result), QK the Gram stage's scores. Without decay e^{b} = 1 and Q is used as is.
// Output rows are fp32 (written in place) or bf16 / fp16 (formed in w.O's row, then rounded to
// nearest even into o, stages/rows.hpp).
#pragma once

#include <algorithm>

#include "polyattn/core/simd/gemm.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/linear/stages/chunk_buffers.hpp"
#include "polyattn/linear/stages/chunk_inputs.hpp"
#include "polyattn/linear/stages/gram.hpp"
#include "polyattn/linear/stages/rows.hpp"

namespace polyattn::linear::stages {

// The output rows of a chunk from w.O: divided by Q_t·z + eps after z ← z + k_t with the Sum
// normaliser, and written to o (rounded to o's type); ahead(t) runs before row t (prefetches).
template <simd::SimdArch A, bool RunningSum, class Ahead = NoAhead>
void finish_outputs(index_t L, const ChunkBuffers& w, const OutRows& o, float* z, float eps,
                    const Ahead& ahead = {}) {
  using B = simd::batch_t<A>;
  const index_t K = w.K, V = w.V;
  for (index_t t = 0; t < L; ++t) {
    ahead(t);
    if (!RunningSum && o.type != Dtype::f32) {  // rounded straight from w.O's row
      finish_row<A>(o, t, w.O + t * V, V);
      continue;
    }
    float inv = 1.f;
    if constexpr (RunningSum) {
      simd::transform<A>(
          K, z, [](B zz, B k) { return zz + k; }, z, w.Kc + t * K);
      inv = 1.f / (simd::dot<A>(w.Q + t * K, z, K) + eps);
    }
    float* ot = out_row<A>(o, t, w.O + t * V);
    simd::transform<A>(
        V, ot, [ib = B(inv)](B x) { return x * ib; }, w.O + t * V);
    finish_row<A>(o, t, w.O + t * V, V);
  }
}

template <simd::SimdArch A, GateShape Shape, bool RunningSum>
void chunk_output(index_t L, const ChunkBuffers& w, const float* S0, const float* U,
                  const OutRows& o, float* z, float eps) {
  using B = simd::batch_t<A>;
  const index_t K = w.K, V = w.V, C = w.C;
  const float* Qg = w.Q;  // e^{b} ∘ Q
  if constexpr (Shape == GateShape::KeyChannel) {
    simd::transform<A>(
        L * K, w.tmp, [](B x, B y) { return x * y; }, w.Q, w.eb);
    Qg = w.tmp;
  } else if constexpr (Shape == GateShape::Scalar) {
    for (index_t t = 0; t < L; ++t)
      simd::transform<A>(
          K, w.tmp + t * K, [e = B(w.eb[t])](B q) { return q * e; }, w.Q + t * K);
    Qg = w.tmp;
  }
  simd::gemm<A>(L, V, K, 1.f, Qg, K, S0, V, false, w.O, V);
  for (index_t t = 0; t < L; ++t)
    for (index_t s = t + 1; s < L; ++s) w.QK[t * C + s] = 0.f;
  for (index_t r0 = 0; r0 < L; r0 += kStrip) {  // only keys s < r1 can be visible
    const index_t r1 = std::min(L, r0 + kStrip);
    simd::gemm<A>(r1 - r0, V, r1, 1.f, w.QK + r0 * C, C, U, V, true, w.O + r0 * V, V);
  }
  finish_outputs<A, RunningSum>(L, w, o, z, eps);
}

// fp32 outputs o_t at o + t·o_st.
template <simd::SimdArch A, GateShape Shape, bool RunningSum>
void chunk_output(index_t L, const ChunkBuffers& w, const float* S0, const float* U, float* o,
                  index_t o_st, float* z, float eps) {
  chunk_output<A, Shape, RunningSum>(L, w, S0, U, OutRows{o, o_st, Dtype::f32}, z, eps);
}

}  // namespace polyattn::linear::stages
