// polyattn/linear/chunked.hpp — the Chunked<C> and Parallel algorithms for one head.
//
// A chunk of L ≤ C tokens starting from state S0 [K×V]. b_t = Σ_{s≤t} g_s is the cumulative
// log-decay relative to the chunk start (scalar, or per key channel), never an absolute product,
// so nothing overflows at any T. Γ[t,s] = exp(b_t − b_s) for s ≤ t (exponent ≤ 0).
//   Additive:  U = V
//   Delta (WY / UT transform): (I + tril(diag(β)·(K Kᵀ ⊙ Γ), −1)) [Uc | W] = [β∘V | β∘e^{b}∘K]
//              solved by forward substitution inside the chunk, then U = Uc − W S0
//   O     = (e^{b} ∘ Q) S0 + ((Q Kᵀ ⊙ Γ) masked s ≤ t) U
//   S_new = e^{b_L} ∘ S0 + (e^{b_L − b} ∘ K)ᵀ U
// For vector gates the gated Gram matrices Σ_i x_ti k_si e^{b_ti − b_si} are products of
// (x ∘ e^{b}) and (k ∘ e^{−b}) when the chunk's decay range stays within kFactorRange (e^{−b}
// then cannot overflow); otherwise they are formed pair by pair from e^{b_t − b_s} ≤ 1 (exact,
// slower; only for extreme gates). Parallel is the same computation with one chunk spanning T
// (the masked T×T form), limited to T ≤ kParallelMaxT.
#pragma once

#include <algorithm>
#include <cmath>

#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/simd/gemm.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/linear/head.hpp"

namespace polyattn::linear {

inline constexpr float kFactorRange = 60.f;  // |b| below which e^{−b} is formed directly
inline constexpr index_t kParallelMaxT = 8192;

namespace detail {

struct ChunkBuffers {
  float *Q, *Kc, *Kt, *QK, *KK, *R, *U, *O, *b, *eb, *tmp;
};

template <simd::SimdArch A>
void chunked_run(const HeadProblem& p, index_t C, Workspace& ws) {
  const index_t K = p.K, V = p.V;
  const bool delta = p.update == Update::Delta;
  const bool vec = p.decay == Decay::VectorPerToken;
  const index_t bK = vec ? K : 1;  // decay values per token
  const index_t RW = V + K;       // width of the delta right-hand side [β v | β e^b k]
  const std::size_t need = static_cast<std::size_t>(3 * C * K + K * C + 2 * C * C + C * RW +
                                                    2 * C * V + 2 * C * bK + C * K + K);
  float* base = ws.floats(need);
  ChunkBuffers w;
  w.Q = base;
  w.Kc = w.Q + C * K;
  w.tmp = w.Kc + C * K;  // C×K scratch (gated copies)
  w.Kt = w.tmp + C * K;  // K×C
  w.QK = w.Kt + K * C;
  w.KK = w.QK + C * C;
  w.R = w.KK + C * C;
  w.U = w.R + C * RW;
  w.O = w.U + C * V;
  w.b = w.O + C * V;
  w.eb = w.b + C * bK;
  float* extra = w.eb + C * bK;  // C×K more scratch + K
  float* S = p.state;

  for (index_t c0 = 0; c0 < p.T; c0 += C) {
    const index_t L = std::min(C, p.T - c0);
    // ---- load the chunk: normalised keys/queries (scale folded into Q), gates ---------------
    for (index_t t = 0; t < L; ++t) {
      const float* q = p.q + (c0 + t) * p.q_st;
      const float* k = p.k + (c0 + t) * p.k_st;
      float qn = p.scale, kn = 1.f;
      if (p.qk_l2norm) {
        qn = p.scale / std::sqrt(simd::dot<A>(q, q, K) + static_cast<float>(kL2NormEps));
        kn = 1.f / std::sqrt(simd::dot<A>(k, k, K) + static_cast<float>(kL2NormEps));
      }
      for (index_t i = 0; i < K; ++i) {
        w.Q[t * K + i] = q[i] * qn;
        w.Kc[t * K + i] = k[i] * kn;
      }
      for (index_t i = 0; i < bK; ++i) {
        float g = 0.f;
        switch (p.decay) {
          case Decay::None: break;
          case Decay::ConstantPerHead: g = p.g_gamma; break;
          case Decay::ScalarPerToken: g = p.g[(c0 + t) * p.g_st]; break;
          case Decay::VectorPerToken: g = p.gk[(c0 + t) * p.gk_st + i]; break;
        }
        w.b[t * bK + i] = (t == 0 ? 0.f : w.b[(t - 1) * bK + i]) + g;
      }
    }
    simd::exp<A>(w.b, w.eb, L * bK);
    simd::transpose(L, K, w.Kc, K, w.Kt, C);

    // ---- gated Gram matrices QK[t,s] (s ≤ t) and KK[t,s] (s < t) -----------------------------
    bool factor = true;
    if (vec)
      for (index_t i = 0; i < K && factor; ++i) factor = w.b[(L - 1) * K + i] > -kFactorRange;
    if (!vec || factor) {
      if (vec) {
        // Kt' = (k ∘ e^{−b})ᵀ, Q' = q ∘ e^{b}: then QK = Q' Kt' and KK = (k ∘ e^{b}) Kt'.
        for (index_t t = 0; t < L; ++t)
          for (index_t i = 0; i < K; ++i) w.Kt[i * C + t] = w.Kc[t * K + i] / w.eb[t * K + i];
        for (index_t t = 0; t < L * K; ++t) w.tmp[t] = w.Q[t] * w.eb[t];
        simd::gemm<A>(L, L, K, 1.f, w.tmp, K, w.Kt, C, false, w.QK, C);
        if (delta) {
          for (index_t t = 0; t < L * K; ++t) w.tmp[t] = w.Kc[t] * w.eb[t];
          simd::gemm<A>(L, L, K, 1.f, w.tmp, K, w.Kt, C, false, w.KK, C);
        }
        simd::transpose(L, K, w.Kc, K, w.Kt, C);  // restore plain Kᵀ
      } else {
        simd::gemm<A>(L, L, K, 1.f, w.Q, K, w.Kt, C, false, w.QK, C);
        if (delta) simd::gemm<A>(L, L, K, 1.f, w.Kc, K, w.Kt, C, false, w.KK, C);
        // Γ for scalar-type decay (exact, L²/2 exps).
        if (p.decay != Decay::None)
          for (index_t t = 0; t < L; ++t)
            for (index_t s = 0; s <= t; ++s) {
              const float gm = std::exp(w.b[t] - w.b[s]);
              w.QK[t * C + s] *= gm;
              if (delta) w.KK[t * C + s] *= gm;
            }
      }
    } else {
      // Extreme vector gates: exact pairwise e^{b_t − b_s} ≤ 1.
      float* e = extra;
      for (index_t t = 0; t < L; ++t)
        for (index_t s = 0; s <= t; ++s) {
          for (index_t i = 0; i < K; ++i) e[i] = w.b[t * K + i] - w.b[s * K + i];
          simd::exp<A>(e, e, K);
          float qk = 0.f, kk = 0.f;
          for (index_t i = 0; i < K; ++i) {
            const float ks = w.Kc[s * K + i] * e[i];
            qk = std::fma(w.Q[t * K + i], ks, qk);
            kk = std::fma(w.Kc[t * K + i], ks, kk);
          }
          w.QK[t * C + s] = qk;
          w.KK[t * C + s] = kk;
        }
    }

    // ---- U: values (additive) or the WY/UT solve (delta) ---------------------------------------
    const float* U = nullptr;
    if (delta) {
      for (index_t t = 0; t < L; ++t) {
        const float beta = p.beta[(c0 + t) * p.beta_st];
        const float* v = p.v + (c0 + t) * p.v_st;
        float* r = w.R + t * RW;
        for (index_t j = 0; j < V; ++j) r[j] = beta * v[j];
        for (index_t i = 0; i < K; ++i)
          r[V + i] = beta * w.Kc[t * K + i] * (vec ? w.eb[t * K + i] : w.eb[t]);
        // Forward substitution: row t −= β_t·KK[t,s]·row s for s < t.
        for (index_t s = 0; s < t; ++s)
          simd::axpy<A>(-beta * w.KK[t * C + s], w.R + s * RW, r, RW);
      }
      // U = Uc − W S0
      for (index_t t = 0; t < L; ++t) std::copy(w.R + t * RW, w.R + t * RW + V, w.U + t * V);
      simd::gemm<A>(L, V, K, -1.f, w.R + V, RW, S, V, true, w.U, V);
      U = w.U;
    } else {
      for (index_t t = 0; t < L; ++t)
        std::copy(p.v + (c0 + t) * p.v_st, p.v + (c0 + t) * p.v_st + V, w.U + t * V);
      U = w.U;
    }

    // ---- outputs -------------------------------------------------------------------------------
    for (index_t t = 0; t < L; ++t)
      for (index_t i = 0; i < K; ++i)
        w.tmp[t * K + i] = w.Q[t * K + i] * (vec ? w.eb[t * K + i] : w.eb[t]);
    simd::gemm<A>(L, V, K, 1.f, w.tmp, K, S, V, false, w.O, V);
    for (index_t t = 0; t < L; ++t)
      for (index_t s = t + 1; s < L; ++s) w.QK[t * C + s] = 0.f;
    simd::gemm<A>(L, V, L, 1.f, w.QK, C, U, V, true, w.O, V);
    for (index_t t = 0; t < L; ++t) {
      float inv = 1.f;
      if (p.normalizer == Normalizer::Sum) {
        for (index_t i = 0; i < K; ++i) p.z[i] += w.Kc[t * K + i];
        inv = 1.f / (simd::dot<A>(w.Q + t * K, p.z, K) + p.eps);
      }
      float* o = p.o + (c0 + t) * p.o_st;
      for (index_t j = 0; j < V; ++j) o[j] = w.O[t * V + j] * inv;
    }

    // ---- state: S = e^{b_L} ∘ S0 + (e^{b_L − b} ∘ K)ᵀ U ------------------------------------------
    if (p.decay != Decay::None) {
      for (index_t i = 0; i < K; ++i) {
        const float a = vec ? w.eb[(L - 1) * K + i] : w.eb[L - 1];
        simd::scale<A>(a, S + i * V, V);
      }
      for (index_t i = 0; i < K; ++i)
        for (index_t s = 0; s < L; ++s) {
          const float d = vec ? w.b[(L - 1) * K + i] - w.b[s * K + i] : w.b[L - 1] - w.b[s];
          w.Kt[i * C + s] *= std::exp(d);
        }
    }
    simd::gemm<A>(K, V, L, 1.f, w.Kt, C, U, V, true, S, V);
  }
}

}  // namespace detail

// Chunked algorithm with chunk size `chunk` (Parallel: chunk = T).
struct ChunkedKernel {
  const HeadProblem* problem;
  Workspace* workspace;
  index_t chunk;
  template <simd::SimdArch A>
  void operator()(A) const;
};

template <simd::SimdArch A>
void ChunkedKernel::operator()(A) const {
  if (problem->T <= 0) return;
  detail::chunked_run<A>(*problem, std::min(chunk, problem->T), *workspace);
}

}  // namespace polyattn::linear

#define POLYATTN_LINEAR_CHUNKED_SIG(A) void ::polyattn::linear::ChunkedKernel::operator()<A>(A) const
POLYATTN_ARCH_UNITS_EXTERN(POLYATTN_LINEAR_CHUNKED_SIG);
