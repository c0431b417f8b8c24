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
// Decay factors below e^kFlushLog (≈ 1e-30) are set to exactly 0: they cannot change an fp32
// result built from O(1) terms, and keeping them would push the products into subnormal
// numbers, which run many times slower on x86 (seen with Lightning's steep per-head decays).
inline constexpr float kFlushLog = -69.f;
inline constexpr index_t kParallelMaxT = 8192;

namespace detail {

// exp(x) with arguments below kFlushLog giving exactly 0, on one batch.
template <simd::SimdArch A>
simd::batch_t<A> decay_exp1(simd::batch_t<A> x) noexcept {
  return simd::exp(simd::below_to(x, kFlushLog, -1000.f));
}

// out = exp(x) with arguments below kFlushLog giving exactly 0 (x and out may alias).
template <simd::SimdArch A>
void decay_exp(const float* x, float* out, index_t n) {
  simd::transform<A>(n, out, [](simd::batch_t<A> v) { return decay_exp1<A>(v); }, x);
}

inline constexpr index_t kStrip = 16;  // row strip of the causal products and the solve

// Lower block-triangular X[L×L] = A[L×Kd] · B[Kd×L] in row strips: strip [r0, r1) only needs
// columns s < r1 (entries above the diagonal inside a strip are computed and later ignored).
template <simd::SimdArch A>
void causal_gemm(index_t L, index_t Kd, const float* a, index_t lda, const float* b, index_t ldb,
                 float* x, index_t ldx) {
  for (index_t r0 = 0; r0 < L; r0 += kStrip) {
    const index_t r1 = std::min(L, r0 + kStrip);
    simd::gemm<A>(r1 - r0, r1, Kd, 1.f, a + r0 * lda, lda, b, ldb, false, x + r0 * ldx, ldx);
  }
}

struct ChunkBuffers {
  float *Q, *Kc, *Kt, *QK, *KK, *R, *U, *O, *b, *eb, *tmp;
};

template <simd::SimdArch A>
void chunked_run(const HeadProblem& p, index_t C, Workspace& ws) {
  using B = simd::batch_t<A>;
  const auto mul = [](B x, B y) { return x * y; };
  const index_t K = p.K, V = p.V;
  const bool delta = p.update == Update::Delta;
  const bool vec = p.decay == Decay::VectorPerToken;
  const index_t bK = vec ? K : 1;  // decay values per token
  const index_t RW = V + K;        // width of the delta right-hand side [β v | β e^b k]
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
      simd::transform<A>(K, w.Q + t * K, [qb = B(qn)](B x) { return x * qb; }, q);
      simd::transform<A>(K, w.Kc + t * K, [kb = B(kn)](B x) { return x * kb; }, k);
      if (vec) {  // b_t = b_{t−1} + gk_t, per key channel
        const float* g = p.gk + (c0 + t) * p.gk_st;
        if (t == 0)
          std::copy(g, g + K, w.b);
        else
          simd::transform<A>(K, w.b + t * K, [](B x, B y) { return x + y; }, w.b + (t - 1) * K, g);
        continue;
      }
      float g = 0.f;  // one log-decay per token
      if (p.decay == Decay::ConstantPerHead) g = p.g_gamma;
      if (p.decay == Decay::ScalarPerToken) g = p.g[(c0 + t) * p.g_st];
      w.b[t] = (t == 0 ? 0.f : w.b[t - 1]) + g;
    }
    decay_exp<A>(w.b, w.eb, L * bK);
    if (!vec) simd::transpose(L, K, w.Kc, K, w.Kt, C);  // Kᵀ: right operand of QKᵀ and KKᵀ

    // ---- gated Gram matrices QK[t,s] (s ≤ t) and KK[t,s] (s < t) -----------------------------
    const bool want_out = p.o != nullptr;
    bool factor = true;
    if (vec)
      for (index_t i = 0; i < K && factor; ++i) factor = w.b[(L - 1) * K + i] > -kFactorRange;
    if (!vec || factor) {
      if (vec) {
        // Ktg = (k ∘ e^{−b})ᵀ (formed contiguously, then transposed into its own buffer), and
        // Q' = q ∘ e^{b}: QK = Q' Ktg and KK = (k ∘ e^{b}) Ktg.
        float* Ktg = extra;  // K×C
        simd::transform<A>(
            L * K, w.tmp, [](B k, B b) { return k * simd::exp(B(0.f) - b); }, w.Kc, w.b);
        simd::transpose(L, K, w.tmp, K, Ktg, C);
        simd::transform<A>(L * K, w.tmp, mul, w.Q, w.eb);
        if (want_out) causal_gemm<A>(L, K, w.tmp, K, Ktg, C, w.QK, C);
        if (delta) {
          simd::transform<A>(L * K, w.tmp, mul, w.Kc, w.eb);
          causal_gemm<A>(L, K, w.tmp, K, Ktg, C, w.KK, C);
        }
      } else {
        if (want_out) causal_gemm<A>(L, K, w.Q, K, w.Kt, C, w.QK, C);
        if (delta) causal_gemm<A>(L, K, w.Kc, K, w.Kt, C, w.KK, C);
        // Γ for scalar-type decay (exact: one vectorised exp per row).
        if (p.decay != Decay::None) {
          float* e = extra;
          for (index_t t = 0; t < L; ++t) {
            simd::transform<A>(
                t + 1, e, [bt = B(w.b[t])](B bs) { return decay_exp1<A>(bt - bs); }, w.b);
            if (want_out) simd::transform<A>(t + 1, w.QK + t * C, mul, w.QK + t * C, e);
            if (delta) simd::transform<A>(t + 1, w.KK + t * C, mul, w.KK + t * C, e);
          }
        }
      }
    } else {
      // Extreme vector gates: exact pairwise e^{b_t − b_s} ≤ 1.
      float* e = extra;
      for (index_t t = 0; t < L; ++t)
        for (index_t s = 0; s <= t; ++s) {
          for (index_t i = 0; i < K; ++i) e[i] = w.b[t * K + i] - w.b[s * K + i];
          decay_exp<A>(e, e, K);
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
        const B bb(beta);
        simd::transform<A>(V, r, [bb](B x) { return x * bb; }, v);
        if (vec)
          simd::transform<A>(
              K, r + V, [bb](B k, B e) { return k * e * bb; }, w.Kc + t * K, w.eb + t * K);
        else
          simd::transform<A>(K, r + V, [f = B(beta * w.eb[t])](B k) { return k * f; }, w.Kc + t * K);
        simd::scale<A>(beta, w.KK + t * C, t);  // A[t,s] = β_t·KK[t,s]
      }
      // Forward substitution (I + A) X = R in strips: the rows of a strip first subtract the
      // contribution of all earlier strips as one matrix product, then solve inside the strip.
      for (index_t r0 = 0; r0 < L; r0 += kStrip) {
        const index_t r1 = std::min(L, r0 + kStrip);
        if (r0 > 0)
          simd::gemm<A>(r1 - r0, RW, r0, -1.f, w.KK + r0 * C, C, w.R, RW, true, w.R + r0 * RW, RW);
        for (index_t t = r0; t < r1; ++t)
          for (index_t s = r0; s < t; ++s)
            simd::axpy<A>(-w.KK[t * C + s], w.R + s * RW, w.R + t * RW, RW);
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
    if (want_out) {
      if (vec)
        simd::transform<A>(L * K, w.tmp, mul, w.Q, w.eb);
      else
        for (index_t t = 0; t < L; ++t)
          simd::transform<A>(K, w.tmp + t * K, [e = B(w.eb[t])](B q) { return q * e; }, w.Q + t * K);
      simd::gemm<A>(L, V, K, 1.f, w.tmp, K, S, V, false, w.O, V);
      for (index_t t = 0; t < L; ++t)
        for (index_t s = t + 1; s < L; ++s) w.QK[t * C + s] = 0.f;
      for (index_t r0 = 0; r0 < L; r0 += kStrip) {  // only keys s < r1 can be visible
        const index_t r1 = std::min(L, r0 + kStrip);
        simd::gemm<A>(r1 - r0, V, r1, 1.f, w.QK + r0 * C, C, U, V, true, w.O + r0 * V, V);
      }
      for (index_t t = 0; t < L; ++t) {
        float inv = 1.f;
        if (p.normalizer == Normalizer::Sum) {
          simd::transform<A>(K, p.z, [](B z, B k) { return z + k; }, p.z, w.Kc + t * K);
          inv = 1.f / (simd::dot<A>(w.Q + t * K, p.z, K) + p.eps);
        }
        simd::transform<A>(V, p.o + (c0 + t) * p.o_st, [ib = B(inv)](B x) { return x * ib; },
                           w.O + t * V);
      }
    }

    // ---- state: S = e^{b_L} ∘ S0 + (e^{b_L − b} ∘ K)ᵀ U -----------------------------------
    if (!p.delta_out && !p.update_state) continue;
    const float* Ke = w.Kc;  // rows k_s, weighted by e^{b_L − b_s} (≤ 1) when the preset decays
    if (p.decay != Decay::None) {
      if (!p.delta_out)
        for (index_t i = 0; i < K; ++i) {
          const float a = vec ? w.eb[(L - 1) * K + i] : w.eb[L - 1];
          simd::scale<A>(a, S + i * V, V);
        }
      float* e = w.tmp;
      const float* bL = w.b + (L - 1) * bK;
      for (index_t s = 0; s < L; ++s) {
        if (vec)
          simd::transform<A>(
              K, e + s * K, [](B k, B bl, B bs) { return k * decay_exp1<A>(bl - bs); },
              w.Kc + s * K, bL, w.b + s * K);
        else
          simd::transform<A>(K, e + s * K,
                             [f = B(std::exp(bL[0] - w.b[s] < kFlushLog ? -1000.f
                                                                         : bL[0] - w.b[s]))](B k) {
                               return k * f;
                             },
                             w.Kc + s * K);
      }
      Ke = e;
    }
    // Kᵀ U with K read through strides (A[i][s] = Ke[s·K + i]): no transposed copy.
    if (p.delta_out) {
      simd::gemm_strided<A>(K, V, L, 1.f, Ke, 1, K, U, V, false, p.delta_out, V);
      for (index_t i = 0; i < K; ++i)
        p.decay_out[i] = p.decay == Decay::None ? 1.f : (vec ? w.eb[(L - 1) * K + i] : w.eb[L - 1]);
    } else {
      simd::gemm_strided<A>(K, V, L, 1.f, Ke, 1, K, U, V, true, S, V);
    }
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

#define POLYATTN_LINEAR_CHUNKED_KERNELS(X) X(::polyattn::linear::ChunkedKernel)
POLYATTN_LINEAR_CHUNKED_KERNELS(POLYATTN_KERNEL_EXTERN)
