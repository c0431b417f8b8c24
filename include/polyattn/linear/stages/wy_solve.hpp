// polyattn/linear/stages/wy_solve.hpp — chunk stage 3 (delta rule): the WY / UT solve.
//
// The delta rule's chunk-local updates satisfy the unit lower-triangular system
//   (I + tril(diag(β)·KK, −1)) [Uc | W] = [β∘V | β∘e^{b}∘K]
// solved by forward substitution inside the chunk (in row strips: the rows of a strip first
// subtract the contribution of all earlier strips as one matrix product, then solve inside the
// strip), after which the update rows are
//   U = Uc − W S0                              (S0: the state at the chunk start, [K×V])
// KK comes from the Gram stage (s < t); its rows are scaled by β_t here (KK becomes A = β·KK).
// Without decay (GateShape::None) e^{b} = 1 and is not formed. Value rows may be fp32 (read in
// place) or bf16 / fp16 (converted into their row of R first, stages/rows.hpp).
#pragma once

#include <algorithm>

#include "polyattn/core/simd/gemm.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/linear/stages/chunk_buffers.hpp"
#include "polyattn/linear/stages/gram.hpp"
#include "polyattn/linear/stages/rows.hpp"

namespace polyattn::linear::stages {

// U [L×V] (in w.U) of a chunk of L tokens; values v_t: row t of v, β_t in w.beta.
template <simd::SimdArch A, GateShape Shape>
void wy_solve(index_t L, const ChunkBuffers& w, const InRows& v, const float* S0) {
  using B = simd::batch_t<A>;
  const index_t K = w.K, V = w.V, C = w.C, RW = w.rw();
  for (index_t t = 0; t < L; ++t) {
    const float beta = w.beta[t];
    float* r = w.R + t * RW;
    const B bb(beta);
    const float* vt = row_f32<A>(v, t, r, V);
    simd::transform<A>(
        V, r, [bb](B x) { return x * bb; }, vt);
    if constexpr (Shape == GateShape::KeyChannel)
      simd::transform<A>(
          K, r + V, [bb](B k, B e) { return k * e * bb; }, w.Kc + t * K, w.eb + t * K);
    else if constexpr (Shape == GateShape::Scalar)
      simd::transform<A>(
          K, r + V, [f = B(beta * w.eb[t])](B k) { return k * f; }, w.Kc + t * K);
    else
      simd::transform<A>(
          K, r + V, [f = B(beta)](B k) { return k * f; }, w.Kc + t * K);
    simd::scale<A>(beta, w.KK + t * C, t);  // A[t,s] = β_t·KK[t,s]
  }
  for (index_t r0 = 0; r0 < L; r0 += kStrip) {
    const index_t r1 = std::min(L, r0 + kStrip);
    if (r0 > 0)
      simd::gemm<A>(r1 - r0, RW, r0, -1.f, w.KK + r0 * C, C, w.R, RW, true, w.R + r0 * RW, RW);
    for (index_t t = r0; t < r1; ++t)
      for (index_t s = r0; s < t; ++s)
        simd::axpy<A>(-w.KK[t * C + s], w.R + s * RW, w.R + t * RW, RW);
  }
  for (index_t t = 0; t < L; ++t) std::copy(w.R + t * RW, w.R + t * RW + V, w.U + t * V);
  simd::gemm<A>(L, V, K, -1.f, w.R + V, RW, S0, V, true, w.U, V);  // U = Uc − W S0
}

// fp32 values v_t at v + t·v_st.
template <simd::SimdArch A, GateShape Shape>
void wy_solve(index_t L, const ChunkBuffers& w, const float* v, index_t v_st, const float* S0) {
  wy_solve<A, Shape>(L, w, InRows{v, v_st, Dtype::f32}, S0);
}

}  // namespace polyattn::linear::stages
