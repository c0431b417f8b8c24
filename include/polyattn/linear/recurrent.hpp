// polyattn/linear/recurrent.hpp — the Recurrent algorithm (and the decode step) for one head.
//
//   S_t = D_t S_{t−1} + k_t u_tᵀ,   o_t = S_tᵀ(scale·q_t)  [/ (scale·q_t·z_t + eps)]
//
// Additive updates (u_t = v_t, or w_t v_t) never read the state, so one pass over S carries a
// group of up to kTokensPerPass tokens: per row i of S, for each token l of the group in order,
//   S_i ← a_{l,i} S_i + k_{l,i} u_l,   r_l += (scale·q_l)_i S_i
// with the group's u and r in registers. The state (64 KB at K = V = 128, past L1) is read and
// written once per group instead of once per token, and every token's arithmetic is exactly
// that of a pass of its own, so results do not depend on the grouping (prefill in pieces, a
// decode step and a whole prefill give the same bits).
//
// Delta-rule updates need Sᵀk before a token's u is known, so their tokens run one at a time,
// each in ONE fused read-modify-write pass that also accumulates what the NEXT token needs:
//   p_{t+1} = S_tᵀ (a_{t+1} ∘ k_{t+1})       (S_tᵀ k after decay)
//   r_{t+1} = S_tᵀ (a_{t+1} ∘ scale·q_{t+1})
// so that  u_{t+1} = β(v − p),  o_{t+1} = r_{t+1} + (k_{t+1}·scale·q_{t+1}) u_{t+1},
// because S_{t+1}ᵀ q = (D S_t)ᵀ q + (k·q) u.
//
// a = exp(γ_t) is the decay (exactly 0 below e^kFlushLog, as in the chunk stages), from the
// decay policy's bound gate (one value, or one per key channel), β_t from the update policy's;
// the policies' compile-time properties pick the specialisation (policies/*.hpp). Passes run
// over column blocks of SIMD vectors held in registers; columns past the last full vector are
// done by the same code in scalar form. Rows of a head lie H·K elements apart, so each token
// loop requests its rows ahead (stages::prefetch_row). q, k, v and o rows may be fp32 (read
// and written in place) or bf16 / fp16: rows are converted on load and o is formed in a V-float
// row and rounded to nearest even (stages/rows.hpp); the state passes see only fp32. Every
// helper is a template on the Arch tag (no ISA-independent symbol in the per-ISA units).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/linear/head.hpp"
#include "polyattn/linear/stages/gates.hpp"
#include "polyattn/linear/stages/prefetch.hpp"
#include "polyattn/linear/stages/rows.hpp"

namespace polyattn::linear {

namespace detail {

// Per-token vectors derived from q_t, k_t and the gate (all length K).
struct TokenPrep {
  float* k;   // (normalised) key
  float* qs;  // scale·(normalised) query
  float* a;   // decay per key channel
  float* kt;  // a ∘ k       (delta rule only)
  float* qt;  // a ∘ qs      (delta rule only)
};

// w.k, w.qs and w.a of token t (w.kt, w.qt are left to decay_products).
template <simd::SimdArch A, class P>
void prepare_token(const HeadProblem<P>& p, index_t t, const TokenPrep& w) {
  using B = simd::batch_t<A>;
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
  simd::transform<A>(
      K, w.k, [s = B(kn)](B x) { return x * s; }, k);
  simd::transform<A>(
      K, w.qs, [s = B(qn)](B x) { return x * s; }, q);
}

// w.kt = a ∘ k and w.qt = a ∘ qs (the delta rule's next-token products).
template <simd::SimdArch A>
void decay_products(const TokenPrep& w, index_t K) {
  using B = simd::batch_t<A>;
  simd::transform<A>(
      K, w.kt, [](B a, B k) { return a * k; }, w.a, w.k);
  simd::transform<A>(
      K, w.qt, [](B a, B q) { return a * q; }, w.a, w.qs);
}

// ---- delta-rule updates: one fused pass per token ------------------------------------------

// One pass over column block [j0, j0 + NB·W) of S, all K rows.
//   Update: S_i ← a_i S_i + k_i u         Next: p += kt_i S_i, r += qt_i S_i (after the update)
template <simd::SimdArch A, int NB, bool Update, bool Next>
void column_block(float* S, index_t K, index_t V, index_t j0, const float* a, const float* k,
                  const float* u, const float* kt, const float* qt, float* pout, float* rout) {
  using B = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(B::size);
  B ub[NB], pb[NB], rb[NB];
  for (int n = 0; n < NB; ++n) {
    if constexpr (Update) ub[n] = B::load_unaligned(u + j0 + n * W);
    pb[n] = B(0.f);
    rb[n] = B(0.f);
  }
  for (index_t i = 0; i < K; ++i) {
    float* row = S + i * V + j0;
    // Only the operands a pass uses are read (the unused pointers may be null).
    const B ai(Update ? a[i] : 0.f), ki(Update ? k[i] : 0.f);
    const B kti(Next ? kt[i] : 0.f), qti(Next ? qt[i] : 0.f);
    for (int n = 0; n < NB; ++n) {
      B s = B::load_unaligned(row + n * W);
      if constexpr (Update) {
        s = simd::fma(ki, ub[n], s * ai);
        s.store_unaligned(row + n * W);
      }
      if constexpr (Next) {
        pb[n] = simd::fma(kti, s, pb[n]);
        rb[n] = simd::fma(qti, s, rb[n]);
      }
    }
  }
  if constexpr (Next) {
    for (int n = 0; n < NB; ++n) {
      pb[n].store_unaligned(pout + j0 + n * W);
      rb[n].store_unaligned(rout + j0 + n * W);
    }
  }
}

// Scalar form of column_block for the columns [j0, V) past the last full vector.
template <simd::SimdArch A, bool Update, bool Next>
void column_tail(float* S, index_t K, index_t V, index_t j0, const float* a, const float* k,
                 const float* u, const float* kt, const float* qt, float* pout, float* rout) {
  for (index_t j = j0; j < V; ++j) {
    float pj = 0.f, rj = 0.f;
    for (index_t i = 0; i < K; ++i) {
      float s = S[i * V + j];
      if constexpr (Update) {
        s = std::fma(k[i], u[j], s * a[i]);
        S[i * V + j] = s;
      }
      if constexpr (Next) {
        pj = std::fma(kt[i], s, pj);
        rj = std::fma(qt[i], s, rj);
      }
    }
    if constexpr (Next) {
      pout[j] = pj;
      rout[j] = rj;
    }
  }
}

template <simd::SimdArch A, bool Update, bool Next>
void state_pass(float* S, index_t K, index_t V, const float* a, const float* k, const float* u,
                const float* kt, const float* qt, float* pout, float* rout) {
  using B = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(B::size);
  constexpr int NB = simd::panel_vectors<A>;
  const index_t Vfull = V - V % W;
  index_t j0 = 0;
  for (; j0 + NB * W <= Vfull; j0 += NB * W)
    column_block<A, NB, Update, Next>(S, K, V, j0, a, k, u, kt, qt, pout, rout);
  for (; j0 + W <= Vfull; j0 += W)
    column_block<A, 1, Update, Next>(S, K, V, j0, a, k, u, kt, qt, pout, rout);
  column_tail<A, Update, Next>(S, K, V, j0, a, k, u, kt, qt, pout, rout);
}

// ---- additive updates: token groups --------------------------------------------------------

// Tokens per state pass of the additive path (four tokens' u and r, 2·4·NB vectors, stay in
// registers next to the NB state vectors of a row).
inline constexpr int kTokensPerPass = 4;

// Columns per block of the grouped pass: half a GEMM panel, so 2·L·NB + NB vectors fit.
template <simd::SimdArch A>
inline constexpr int group_panel_vectors =
    simd::panel_vectors<A> / 2 > 0 ? simd::panel_vectors<A> / 2 : 1;

// One pass over column block [j0, j0 + NB·W) of S for L tokens. coef holds, per row i, the L
// tokens' (a, k, scale·q) at coef[(i·L + l)·3 + {0, 1, 2}]; u[l] / r[l] are V long.
template <simd::SimdArch A, int NB, int L>
void group_block(float* S, index_t K, index_t V, index_t j0, const float* coef,
                 const float* const* u, float* const* r) {
  using B = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(B::size);
  B ub[L][NB], rb[L][NB];
  POLYATTN_UNROLL
  for (int l = 0; l < L; ++l) {
    POLYATTN_UNROLL
    for (int n = 0; n < NB; ++n) {
      ub[l][n] = B::load_unaligned(u[l] + j0 + n * W);
      rb[l][n] = B(0.f);
    }
  }
  for (index_t i = 0; i < K; ++i) {
    float* row = S + i * V + j0;
    const float* c = coef + i * L * 3;
    B s[NB];
    POLYATTN_UNROLL
    for (int n = 0; n < NB; ++n) s[n] = B::load_unaligned(row + n * W);
    POLYATTN_UNROLL
    for (int l = 0; l < L; ++l) {
      const B al(c[3 * l]), kl(c[3 * l + 1]), ql(c[3 * l + 2]);
      POLYATTN_UNROLL
      for (int n = 0; n < NB; ++n) {
        s[n] = simd::fma(kl, ub[l][n], s[n] * al);
        rb[l][n] = simd::fma(ql, s[n], rb[l][n]);
      }
    }
    POLYATTN_UNROLL
    for (int n = 0; n < NB; ++n) s[n].store_unaligned(row + n * W);
  }
  POLYATTN_UNROLL
  for (int l = 0; l < L; ++l) {
    POLYATTN_UNROLL
    for (int n = 0; n < NB; ++n) rb[l][n].store_unaligned(r[l] + j0 + n * W);
  }
}

// Scalar form of group_block for the columns [j0, V) past the last full vector.
template <simd::SimdArch A, int L>
void group_tail(float* S, index_t K, index_t V, index_t j0, const float* coef,
                const float* const* u, float* const* r) {
  for (index_t j = j0; j < V; ++j) {
    float rj[L] = {};
    for (index_t i = 0; i < K; ++i) {
      const float* c = coef + i * L * 3;
      float s = S[i * V + j];
      for (int l = 0; l < L; ++l) {
        s = std::fma(c[3 * l + 1], u[l][j], s * c[3 * l]);
        rj[l] = std::fma(c[3 * l + 2], s, rj[l]);
      }
      S[i * V + j] = s;
    }
    for (int l = 0; l < L; ++l) r[l][j] = rj[l];
  }
}

template <simd::SimdArch A, int L>
void group_pass(float* S, index_t K, index_t V, const float* coef, const float* const* u,
                float* const* r) {
  constexpr index_t W = static_cast<index_t>(simd::batch_t<A>::size);
  constexpr int NB = group_panel_vectors<A>;
  const index_t Vfull = V - V % W;
  index_t j0 = 0;
  for (; j0 + NB * W <= Vfull; j0 += NB * W) group_block<A, NB, L>(S, K, V, j0, coef, u, r);
  if constexpr (NB > 1)
    for (; j0 + W <= Vfull; j0 += W) group_block<A, 1, L>(S, K, V, j0, coef, u, r);
  group_tail<A, L>(S, K, V, j0, coef, u, r);
}

// How many tokens ahead the token loop requests its input and output rows (one token's state
// pass takes microseconds, so two tokens cover a memory miss with room to spare).
inline constexpr index_t kRowsAhead = 2;

// Delta-rule updates: one fused pass per token (header comment).
template <simd::SimdArch A, class P>
void delta_run(const HeadProblem<P>& p, const Workspace& ws) {
  const index_t K = p.K, V = p.V;
  float* buf = ws.data;
  TokenPrep cur{buf, buf + K, buf + 2 * K, buf + 3 * K, buf + 4 * K};
  TokenPrep nxt{buf + 5 * K, buf + 6 * K, buf + 7 * K, buf + 8 * K, buf + 9 * K};
  float* u = buf + 10 * K;
  float* pv = u + V;
  float* rv = pv + V;
  float* obuf = rv + V;  // an output row before rounding (bf16 / fp16 o)
  float* S = p.state;
  const stages::InRows vr{p.v, p.v_st, p.v_type};
  const stages::OutRows orow{p.o, p.o_st, p.o_type};

  for (index_t t = 0; t < kRowsAhead; ++t)
    stages::prefetch_token<A>(p, t);  // the loop asks from 2 on
  prepare_token<A>(p, 0, cur);
  decay_products<A>(cur, K);
  state_pass<A, false, true>(S, K, V, cur.a, cur.k, u, cur.kt, cur.qt, pv, rv);
  for (index_t t = 0; t < p.T; ++t) {
    stages::prefetch_token<A>(p, t + kRowsAhead);
    const float beta = static_cast<float>(p.update.beta(t));
    const float* v = stages::row_f32<A>(vr, t, u, V);  // in place, or converted into u
    for (index_t j = 0; j < V; ++j) u[j] = beta * (v[j] - pv[j]);
    // o_t = r_t + (k_t·scale·q_t) u_t  [/ normaliser]
    if constexpr (P::running_sum)
      for (index_t i = 0; i < K; ++i) p.z[i] += cur.k[i];
    const float kq = simd::dot<A>(cur.k, cur.qs, K);
    float inv = 1.f;
    if constexpr (P::running_sum) inv = 1.f / (simd::dot<A>(cur.qs, p.z, K) + p.eps);
    float* o = stages::out_row<A>(orow, t, obuf);
    for (index_t j = 0; j < V; ++j) o[j] = std::fma(kq, u[j], rv[j]) * inv;
    stages::finish_row<A>(orow, t, obuf, V);
    if (t + 1 < p.T) {
      prepare_token<A>(p, t + 1, nxt);
      decay_products<A>(nxt, K);
      state_pass<A, true, true>(S, K, V, cur.a, cur.k, u, nxt.kt, nxt.qt, pv, rv);
      std::swap(cur, nxt);
    } else {
      state_pass<A, true, false>(S, K, V, cur.a, cur.k, u, nullptr, nullptr, nullptr, nullptr);
    }
  }
}

// The scratch of additive_run for K, V: per token of a group k, scale·q (K each), u and r (V
// each), the group's packed row coefficients (3·K per token), a decay row (K) and an output row.
constexpr std::size_t additive_workspace_floats(index_t K, index_t V) {
  return static_cast<std::size_t>(kTokensPerPass * (5 * K + 2 * V) + K + V);
}

// Additive updates: groups of up to kTokensPerPass tokens per state pass (header comment).
template <simd::SimdArch A, class P>
void additive_run(const HeadProblem<P>& p, const Workspace& ws) {
  constexpr int L = kTokensPerPass;
  const index_t K = p.K, V = p.V;
  float* buf = ws.data;
  float* kk[L];
  float* qq[L];
  float* uu[L];
  float* rr[L];
  for (int l = 0; l < L; ++l) {
    kk[l] = buf + l * K;
    qq[l] = buf + (L + l) * K;
  }
  float* coef = buf + 2 * L * K;  // [K][L][3]
  float* a = coef + 3 * L * K;
  for (int l = 0; l < L; ++l) {
    uu[l] = a + K + l * V;
    rr[l] = a + K + (L + l) * V;
  }
  float* obuf = a + K + 2 * L * V;
  const stages::InRows vr{p.v, p.v_st, p.v_type};
  const stages::OutRows orow{p.o, p.o_st, p.o_type};

  for (index_t t = 0; t < L; ++t) stages::prefetch_token<A>(p, t);
  for (index_t t0 = 0; t0 < p.T; t0 += L) {
    const int n = static_cast<int>(std::min<index_t>(L, p.T - t0));
    for (int l = 0; l < n; ++l) {
      const index_t t = t0 + l;
      stages::prefetch_token<A>(p, t + L);  // one group ahead, a token's rows at a time
      prepare_token<A>(p, t, TokenPrep{kk[l], qq[l], a, nullptr, nullptr});
      for (index_t i = 0; i < K; ++i) {
        float* c = coef + (i * n + l) * 3;
        c[0] = a[i];
        c[1] = kk[l][i];
        c[2] = qq[l][i];
      }
      stages::load_row<A>(vr, t, uu[l], V);
      if constexpr (P::weighted)
        simd::scale<A>(static_cast<float>(p.update.value_weight(t)), uu[l], V);
    }
    switch (n) {
      case 1:
        group_pass<A, 1>(p.state, K, V, coef, uu, rr);
        break;
      case 2:
        group_pass<A, 2>(p.state, K, V, coef, uu, rr);
        break;
      case 3:
        group_pass<A, 3>(p.state, K, V, coef, uu, rr);
        break;
      default:
        group_pass<A, L>(p.state, K, V, coef, uu, rr);
    }
    for (int l = 0; l < n; ++l) {  // o_t = r_t  [/ (scale·q_t·z_t + eps)]
      const index_t t = t0 + l;
      float* o = stages::out_row<A>(orow, t, obuf);
      if constexpr (P::running_sum) {
        for (index_t i = 0; i < K; ++i) p.z[i] += kk[l][i];
        const float inv = 1.f / (simd::dot<A>(qq[l], p.z, K) + p.eps);
        for (index_t j = 0; j < V; ++j) o[j] = rr[l][j] * inv;
      } else {
        std::copy(rr[l], rr[l] + V, o);
      }
      stages::finish_row<A>(orow, t, obuf, V);
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
    return std::max(static_cast<std::size_t>(10 * K + 4 * V),
                    detail::additive_workspace_floats(K, V));
  }
  template <simd::SimdArch A>
  void operator()(A) const;
};

template <class P>
template <simd::SimdArch A>
void RecurrentKernel<P>::operator()(A) const {
  if (problem->T <= 0) return;
  if constexpr (P::delta)
    detail::delta_run<A>(*problem, workspace);
  else
    detail::additive_run<A>(*problem, workspace);
}

}  // namespace polyattn::linear
