// polyattn/linear/recurrent.hpp — the Recurrent algorithm (and the decode step) for one head.
//
// Per token the state S [K][V] is touched in ONE fused read-modify-write pass:
//   S_t = D_t S_{t−1} + k_t u_tᵀ
// with the two products the NEXT token needs accumulated while each new row is written:
//   p_{t+1} = S_tᵀ (a_{t+1} ∘ k_{t+1})       (delta rule: S_tᵀ k after decay)
//   r_{t+1} = S_tᵀ (a_{t+1} ∘ scale·q_{t+1})
// so that  u_{t+1} = β(v − p) (or v),  o_{t+1} = r_{t+1} + (k_{t+1}·scale·q_{t+1}) u_{t+1},
// because S_{t+1}ᵀ q = (D S_t)ᵀ q + (k·q) u. a = exp(γ_t) is the decay (exactly 0 below
// e^kFlushLog, as in the chunk stages), from the decay policy's
// bound gate (one value, or one per key channel), β_t from the update policy's; the policies'
// compile-time properties pick the specialisation (policies/*.hpp). The pass runs over column
// blocks of panel_vectors<A> SIMD vectors so u, p and r stay in registers; columns past the
// last full vector are done by the same code in scalar form. q, k, v and o rows may be fp32
// (read and written in place) or bf16 / fp16: a token's q / k rows are converted into its
// TokenPrep vectors, v into u, and o is formed in a V-float row and rounded to nearest even
// (stages/rows.hpp), once per row; the state pass sees only fp32. Every helper is a template on
// the Arch tag (no ISA-independent symbol in the per-ISA units).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/linear/head.hpp"
#include "polyattn/linear/stages/gates.hpp"
#include "polyattn/linear/stages/rows.hpp"

namespace polyattn::linear {

namespace detail {

// Per-token vectors derived from q_t, k_t and the gate (all length K).
struct TokenPrep {
  float* k;   // (normalised) key
  float* qs;  // scale·(normalised) query
  float* a;   // decay per key channel
  float* kt;  // a ∘ k
  float* qt;  // a ∘ qs
};

template <simd::SimdArch A, class P>
void prepare_token(const HeadProblem<P>& p, index_t t, const TokenPrep& w) {
  const index_t K = p.K;
  // fp32 rows in place; bf16 / fp16 rows converted into w.qs / w.k (then scaled there).
  const float* q = stages::row_f32<A>(stages::InRows{p.q, p.q_st, p.q_type}, t, w.qs, K);
  const float* k = stages::row_f32<A>(stages::InRows{p.k, p.k_st, p.k_type}, t, w.k, K);
  float qn = p.scale, kn = 1.f;
  if (p.qk_l2norm) {
    qn = p.scale / std::sqrt(simd::dot<A>(q, q, K) + static_cast<float>(kL2NormEps));
    kn = 1.f / std::sqrt(simd::dot<A>(k, k, K) + static_cast<float>(kL2NormEps));
  }
  if constexpr (P::shape == GateShape::None) {
    std::fill(w.a, w.a + K, 1.f);
  } else if constexpr (P::shape == GateShape::Scalar) {
    const auto g = static_cast<float>(p.gate.log_decay(t));  // flushed as in the chunk stages
    std::fill(w.a, w.a + K, g < stages::kFlushLog ? 0.f : std::exp(g));
  } else {
    gate_log_decay_row<A>(p.gate, t, w.a, K);
    stages::decay_exp<A>(w.a, w.a, K);
  }
  for (index_t i = 0; i < K; ++i) {
    w.k[i] = k[i] * kn;
    w.qs[i] = q[i] * qn;
    w.kt[i] = w.a[i] * w.k[i];
    w.qt[i] = w.a[i] * w.qs[i];
  }
}

// One pass over column block [j0, j0 + NB·W) of S, all K rows.
//   Update: S_i ← a_i S_i + k_i u         Next: p += kt_i S_i, r += qt_i S_i (after the update)
template <simd::SimdArch A, int NB, bool Update, bool Next, bool NeedP, bool CurR>
void column_block(float* S, index_t K, index_t V, index_t j0, const float* a, const float* k,
                  const float* u, const float* kt, const float* qt, float* pout, float* rout,
                  const float* qcur, float* rcur) {
  using B = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(B::size);
  B ub[NB], pb[NB], rb[NB], cb[NB];
  for (int n = 0; n < NB; ++n) {
    if constexpr (Update) ub[n] = B::load_unaligned(u + j0 + n * W);
    pb[n] = B(0.f);
    rb[n] = B(0.f);
    cb[n] = B(0.f);
  }
  for (index_t i = 0; i < K; ++i) {
    float* row = S + i * V + j0;
    // Only the operands a pass uses are read (the unused pointers may be null).
    const B ai(Update ? a[i] : 0.f), ki(Update ? k[i] : 0.f);
    const B kti(Next && NeedP ? kt[i] : 0.f), qti(Next ? qt[i] : 0.f);
    for (int n = 0; n < NB; ++n) {
      B s = B::load_unaligned(row + n * W);
      if constexpr (CurR) cb[n] = simd::fma(B(qcur[i]), s, cb[n]);
      if constexpr (Update) {
        s = simd::fma(ki, ub[n], s * ai);
        s.store_unaligned(row + n * W);
      }
      if constexpr (Next) {
        if constexpr (NeedP) pb[n] = simd::fma(kti, s, pb[n]);
        rb[n] = simd::fma(qti, s, rb[n]);
      }
    }
  }
  if constexpr (Next) {
    for (int n = 0; n < NB; ++n) {
      if constexpr (NeedP) pb[n].store_unaligned(pout + j0 + n * W);
      rb[n].store_unaligned(rout + j0 + n * W);
    }
  }
  if constexpr (CurR)
    for (int n = 0; n < NB; ++n) cb[n].store_unaligned(rcur + j0 + n * W);
}

// Scalar form of column_block for the columns [j0, V) past the last full vector.
template <simd::SimdArch A, bool Update, bool Next, bool NeedP, bool CurR>
void column_tail(float* S, index_t K, index_t V, index_t j0, const float* a, const float* k,
                 const float* u, const float* kt, const float* qt, float* pout, float* rout,
                 const float* qcur, float* rcur) {
  for (index_t j = j0; j < V; ++j) {
    float pj = 0.f, rj = 0.f, cj = 0.f;
    for (index_t i = 0; i < K; ++i) {
      float s = S[i * V + j];
      if constexpr (CurR) cj = std::fma(qcur[i], s, cj);
      if constexpr (Update) {
        s = std::fma(k[i], u[j], s * a[i]);
        S[i * V + j] = s;
      }
      if constexpr (Next) {
        if constexpr (NeedP) pj = std::fma(kt[i], s, pj);
        rj = std::fma(qt[i], s, rj);
      }
    }
    if constexpr (Next) {
      if constexpr (NeedP) pout[j] = pj;
      rout[j] = rj;
    }
    if constexpr (CurR) rcur[j] = cj;
  }
}

// CurR additionally accumulates rcur = S_oldᵀ qcur from each row before it is updated (the
// additive update needs no Sᵀk, so its first token reads and writes the state in one pass).
template <simd::SimdArch A, bool Update, bool Next, bool NeedP, bool CurR = false>
void state_pass(float* S, index_t K, index_t V, const float* a, const float* k, const float* u,
                const float* kt, const float* qt, float* pout, float* rout,
                const float* qcur = nullptr, float* rcur = nullptr) {
  using B = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(B::size);
  constexpr int NB = simd::panel_vectors<A>;
  const index_t Vfull = V - V % W;
  index_t j0 = 0;
  for (; j0 + NB * W <= Vfull; j0 += NB * W)
    column_block<A, NB, Update, Next, NeedP, CurR>(S, K, V, j0, a, k, u, kt, qt, pout, rout, qcur,
                                                   rcur);
  for (; j0 + W <= Vfull; j0 += W)
    column_block<A, 1, Update, Next, NeedP, CurR>(S, K, V, j0, a, k, u, kt, qt, pout, rout, qcur,
                                                  rcur);
  column_tail<A, Update, Next, NeedP, CurR>(S, K, V, j0, a, k, u, kt, qt, pout, rout, qcur, rcur);
}

template <simd::SimdArch A, class P>
void recurrent_run(const HeadProblem<P>& p, const Workspace& ws) {
  constexpr bool NeedP = P::delta;
  const index_t K = p.K, V = p.V;
  float* buf = ws.data;
  TokenPrep cur{buf, buf + K, buf + 2 * K, buf + 3 * K, buf + 4 * K};
  TokenPrep nxt{buf + 5 * K, buf + 6 * K, buf + 7 * K, buf + 8 * K, buf + 9 * K};
  float* u = buf + 10 * K;
  float* pv = u + V;
  float* rv = pv + V;
  float* rv2 = rv + V;
  float* obuf = rv2 + V;  // an output row before rounding (bf16 / fp16 o)
  float* S = p.state;
  const stages::InRows vr{p.v, p.v_st, p.v_type};
  const stages::OutRows orow{p.o, p.o_st, p.o_type};

  auto emit = [&](index_t t) {  // o_t = r_t + (k_t·scale·q_t) u_t  [/ normaliser]
    if constexpr (P::running_sum)
      for (index_t i = 0; i < K; ++i) p.z[i] += cur.k[i];
    const float kq = simd::dot<A>(cur.k, cur.qs, K);
    float inv = 1.f;
    if constexpr (P::running_sum) inv = 1.f / (simd::dot<A>(cur.qs, p.z, K) + p.eps);
    float* o = stages::out_row<A>(orow, t, obuf);
    for (index_t j = 0; j < V; ++j) o[j] = std::fma(kq, u[j], rv[j]) * inv;
    stages::finish_row<A>(orow, t, obuf, V);
  };

  prepare_token<A>(p, 0, cur);
  if constexpr (NeedP) {
    state_pass<A, false, true, NeedP>(S, K, V, cur.a, cur.k, u, cur.kt, cur.qt, pv, rv);
  } else {
    // Additive: token 0's r = S_oldᵀ(a∘q) is gathered in the same pass that updates S.
    stages::load_row<A>(vr, 0, u, V);
    if constexpr (P::weighted) simd::scale<A>(static_cast<float>(p.update.value_weight(0)), u, V);
    if (p.T > 1) {
      prepare_token<A>(p, 1, nxt);
      state_pass<A, true, true, false, true>(S, K, V, cur.a, cur.k, u, nxt.kt, nxt.qt, pv, rv2,
                                             cur.qt, rv);
    } else {
      state_pass<A, true, false, false, true>(S, K, V, cur.a, cur.k, u, nullptr, nullptr, nullptr,
                                              nullptr, cur.qt, rv);
    }
    emit(0);
    if (p.T == 1) return;
    std::swap(cur, nxt);
    std::swap(rv, rv2);
  }
  for (index_t t = NeedP ? 0 : 1; t < p.T; ++t) {
    if constexpr (NeedP) {
      const float beta = static_cast<float>(p.update.beta(t));
      const float* v = stages::row_f32<A>(vr, t, u, V);  // in place, or converted into u
      for (index_t j = 0; j < V; ++j) u[j] = beta * (v[j] - pv[j]);
    } else {
      stages::load_row<A>(vr, t, u, V);
      if constexpr (P::weighted) simd::scale<A>(static_cast<float>(p.update.value_weight(t)), u, V);
    }
    emit(t);
    if (t + 1 < p.T) {
      prepare_token<A>(p, t + 1, nxt);
      state_pass<A, true, true, NeedP>(S, K, V, cur.a, cur.k, u, nxt.kt, nxt.qt, pv, rv);
      std::swap(cur, nxt);
    } else {
      state_pass<A, true, false, false>(S, K, V, cur.a, cur.k, u, nullptr, nullptr, nullptr,
                                        nullptr);
    }
  }
}

}  // namespace detail

// Recurrent algorithm over problem->T tokens (T >= 1); problem->state / z are updated in place.
template <class P>
struct RecurrentKernel {
  const HeadProblem<P>* problem;
  Workspace workspace;  // at least workspace_floats(K, V)

  static constexpr std::size_t workspace_floats(index_t K, index_t V) {
    return static_cast<std::size_t>(10 * K + 5 * V);
  }
  template <simd::SimdArch A>
  void operator()(A) const;
};

template <class P>
template <simd::SimdArch A>
void RecurrentKernel<P>::operator()(A) const {
  if (problem->T <= 0) return;
  detail::recurrent_run<A>(*problem, workspace);
}

}  // namespace polyattn::linear
