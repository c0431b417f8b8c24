// polyattn/linear/stages/chunk_inputs.hpp — chunk stage 0: the queries and keys of a chunk.
//
//   Q[t] = scale·q_t / ‖q_t‖,  Kc[t] = k_t / ‖k_t‖   with ‖x‖ = sqrt(Σx² + 1e-6) when qk_l2norm,
//   else Q[t] = scale·q_t, Kc[t] = k_t                                        (t < L, rows of K)
// The scale is folded into Q once, so no later product multiplies by it. q and k rows may be
// fp32 (read in place) or bf16 / fp16 (stages/rows.hpp: converted into the Q / Kc row first,
// then scaled there), so everything after this stage is fp32.
#pragma once

#include <cmath>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/linear/stages/rows.hpp"

namespace polyattn::linear::stages {

// qn / kn (when non-null) receive the row factors: Q[t] = qn[t]·q_t, Kc[t] = kn[t]·k_t.
template <simd::SimdArch A>
void load_queries_keys(index_t L, index_t K, const InRows& q, const InRows& k, float scale,
                       bool l2norm, float* Q, float* Kc, float* qn_out = nullptr,
                       float* kn_out = nullptr) {
  using B = simd::batch_t<A>;
  for (index_t t = 0; t < L; ++t) {
    const float* qt = row_f32<A>(q, t, Q + t * K, K);
    const float* kt = row_f32<A>(k, t, Kc + t * K, K);
    float qn = scale, kn = 1.f;
    if (l2norm) {
      qn = scale / std::sqrt(simd::dot<A>(qt, qt, K) + static_cast<float>(kL2NormEps));
      kn = 1.f / std::sqrt(simd::dot<A>(kt, kt, K) + static_cast<float>(kL2NormEps));
    }
    if (qn_out) qn_out[t] = qn;
    if (kn_out) kn_out[t] = kn;
    simd::transform<A>(
        K, Q + t * K, [qb = B(qn)](B x) { return x * qb; }, qt);
    simd::transform<A>(
        K, Kc + t * K, [kb = B(kn)](B x) { return x * kb; }, kt);
  }
}

// fp32 rows of K floats at q + t·q_st and k + t·k_st.
template <simd::SimdArch A>
void load_queries_keys(index_t L, index_t K, const float* q, index_t q_st, const float* k,
                       index_t k_st, float scale, bool l2norm, float* Q, float* Kc) {
  load_queries_keys<A>(L, K, InRows{q, q_st, Dtype::f32}, InRows{k, k_st, Dtype::f32}, scale,
                       l2norm, Q, Kc);
}

}  // namespace polyattn::linear::stages
