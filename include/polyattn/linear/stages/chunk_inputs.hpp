// polyattn/linear/stages/chunk_inputs.hpp — chunk stage 0: the queries and keys of a chunk.
//
//   Q[t] = scale·q_t / ‖q_t‖,  Kc[t] = k_t / ‖k_t‖   with ‖x‖ = sqrt(Σx² + 1e-6) when qk_l2norm,
//   else Q[t] = scale·q_t, Kc[t] = k_t                                        (t < L, rows of K)
// The scale is folded into Q once, so no later product multiplies by it. q and k rows may be
// fp32 (read in place) or bf16 / fp16 (stages/rows.hpp: converted into the Q / Kc row first,
// then scaled there), so everything after this stage is fp32. additive_updates forms the
// updates U of an additive rule (values, or weighted values) the same way.
#pragma once

#include <cmath>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/linear/stages/chunk_buffers.hpp"
#include "polyattn/linear/stages/rows.hpp"
#include "polyattn/policies/update.hpp"

namespace polyattn::linear::stages {

// An `ahead` callback that asks for nothing.
struct NoAhead {
  void operator()(index_t) const noexcept {}
};

// Row t: Q[t] = qn_t·q_t and Kc[t] = kn_t·k_t (rows of K floats at Q + t·K, Kc + t·K), and the
// factors into qn[t] / kn[t] when those are non-null.
template <simd::SimdArch A>
void load_query_key_row(index_t t, index_t K, const InRows& q, const InRows& k, float scale,
                        bool l2norm, float* Q, float* Kc, float* qn_out, float* kn_out) {
  using B = simd::batch_t<A>;
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

// Rows t < L (load_query_key_row); ahead(t) is called before row t is read (prefetches).
template <simd::SimdArch A, class Ahead = NoAhead>
void load_queries_keys(index_t L, index_t K, const InRows& q, const InRows& k, float scale,
                       bool l2norm, float* Q, float* Kc, float* qn_out = nullptr,
                       float* kn_out = nullptr, const Ahead& ahead = {}) {
  for (index_t t = 0; t < L; ++t) {
    ahead(t);
    load_query_key_row<A>(t, K, q, k, scale, l2norm, Q, Kc, qn_out, kn_out);
  }
}

// The updates of an additive rule in w.U [L×V]: U_t = v_t (row t of v), or w_t·v_t with a
// weighted update (its weights w_t for tokens c0 .. c0 + L − 1 land in w.beta).
template <simd::SimdArch A, bool Weighted, class Update>
void additive_updates(const Update& update, index_t c0, index_t L, const InRows& v,
                      const ChunkBuffers& w) {
  const index_t V = w.V;
  if constexpr (Weighted) update_value_weights<A>(update, c0, w.beta, L);
  for (index_t t = 0; t < L; ++t) {
    load_row<A>(v, t, w.U + t * V, V);
    if constexpr (Weighted) simd::scale<A>(w.beta[t], w.U + t * V, V);
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
