// tests/linear/test_linear_stages.cpp — each stage of the chunked algorithm (linear/stages/) on
// its own, for every ISA this CPU and binary have, against a naive double-precision computation
// of what the stage promises (docs/conventions.md §4, §8):
//   inputs     Q = scale·q/‖q‖, Kc = k/‖k‖ (or unnormalised)
//   gates      b = cumsum γ, e^b flushed to 0 below e^kFlushLog, both gate hooks
//   gram       QK[t,s] = Σ_i q_ti k_si e^{b_ti − b_si} (s ≤ t), KK (s < t); factorised and
//              pairwise key-channel paths
//   wy_solve   U equals the delta rule's u_t = β_t(v_t − (D_t S_{t−1})ᵀ k_t) run token by token
//   output     o_t = S_tᵀ Q_t of the recurrence S_t = D_t S_{t−1} + k_t u_tᵀ [/ (Q_t·z_t + eps)]
//   state      S_L of that recurrence, or its pieces ΔS and e^{b_L} (chunk-parallel)
// The stages run on float buffers; the naive side reads the same float inputs in double.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "linear/stage_kernels.hpp"

namespace {

using namespace polyattn;
using polyattn::test::kRelRmseBound;
using polyattn::test::random_vector;
using polyattn::test::rel_rmse;
using polyattn::test::RunStage;
using polyattn::test::Stage;
using polyattn::test::StageArgs;

// Every ISA both the CPU and this binary have.
std::vector<simd::Isa> isas() {
  std::vector<simd::Isa> out;
  for (int i = 0; i <= static_cast<int>(simd::cpu_isa()); ++i)
    if (simd::in_binary(static_cast<simd::Isa>(i))) out.push_back(static_cast<simd::Isa>(i));
  return out;
}

void run(StageArgs& a, simd::Isa isa) {
  const simd::Isa got =
      simd::dispatch_to(isa, [](auto arch) { return simd::isa_of<decltype(arch)>; });
  ASSERT_EQ(got, isa);
  simd::dispatch_to(isa, RunStage{&a});
}

const char* shape_name(GateShape s) {
  return s == GateShape::None ? "none" : (s == GateShape::Scalar ? "scalar" : "key-channel");
}

// One chunk's buffers and inputs: L tokens, chunk capacity C, gates per token γ (bK per token).
struct Chunk {
  index_t L, C, K, V;
  GateShape shape;
  std::vector<float> ws, q, k, v, gamma, S0, beta;
  linear::stages::ChunkBuffers w;

  Chunk(index_t L_, index_t C_, index_t K_, index_t V_, GateShape s, std::uint64_t seed,
        float gate_lo = -0.3f, float gate_hi = -0.001f)
      : L(L_), C(C_), K(K_), V(V_), shape(s) {
    const bool kc = s == GateShape::KeyChannel;
    ws.assign(linear::stages::ChunkBuffers::floats(C, K, V, kc), NAN);
    w = linear::stages::ChunkBuffers::carve({ws.data(), ws.size()}, C, K, V, kc);
    const auto n = [](index_t a, index_t b) { return static_cast<std::size_t>(a * b); };
    q = random_vector(n(L, K), seed + 1);
    k = random_vector(n(L, K), seed + 2);
    for (index_t t = 0; t < L; ++t) {  // unit keys keep the delta rule's system well conditioned
      double ss = 0.0;
      for (index_t i = 0; i < K; ++i) ss += double(k[t * K + i]) * k[t * K + i];
      for (index_t i = 0; i < K; ++i)
        k[t * K + i] = static_cast<float>(k[t * K + i] / std::sqrt(ss));
    }
    v = random_vector(n(L, V), seed + 3);
    gamma = random_vector(n(L, w.bK), seed + 4, gate_lo, gate_hi);
    S0 = random_vector(n(K, V), seed + 5, -0.5f, 0.5f);
    beta = random_vector(static_cast<std::size_t>(L), seed + 6, 0.05f, 0.95f);
    for (index_t t = 0; t < L; ++t)
      for (index_t i = 0; i < K; ++i) {
        w.Q[t * K + i] = q[t * K + i];
        w.Kc[t * K + i] = k[t * K + i];
      }
    if (s != GateShape::None) {  // b and e^b as the gates stage forms them (checked there)
      for (index_t t = 0; t < L; ++t)
        for (index_t i = 0; i < w.bK; ++i) {
          const float prev = t == 0 ? 0.f : w.b[(t - 1) * w.bK + i];
          w.b[t * w.bK + i] = prev + gamma[t * w.bK + i];
          const float x = w.b[t * w.bK + i];
          w.eb[t * w.bK + i] = x < linear::stages::kFlushLog ? 0.f : std::exp(x);
        }
    }
    for (index_t t = 0; t < L; ++t) w.beta[t] = beta[t];
  }
  // Log decay of channel i from token t−1 to t, from the float cumulative gates.
  double step_log(index_t t, index_t i) const {
    if (shape == GateShape::None) return 0.0;
    if (t > 0) return log_gap(t, t - 1, i);
    return w.b[shape == GateShape::KeyChannel ? i : 0];
  }
  double log_gap(index_t t, index_t s, index_t i) const {  // b_t − b_s of channel i
    if (shape == GateShape::None) return 0.0;
    const index_t c = shape == GateShape::KeyChannel ? i : 0;
    return double(w.b[t * w.bK + c]) - double(w.b[s * w.bK + c]);
  }
  StageArgs args(Stage st) const {
    StageArgs a;
    a.stage = st;
    a.shape = shape;
    a.L = L;
    a.w = w;
    return a;
  }
};

// The recurrence of one chunk in double: S = S0; S ← D_t S; u_t (given, or the delta rule's);
// S += k_t u_tᵀ; o_t = Sᵀ Q_t [/ (Q_t·z + eps)]. Returns u, o and the final S.
struct Recurrence {
  std::vector<double> u, o, S;
};
Recurrence recur(const Chunk& c, bool delta, bool sum = false, double eps = 0.0,
                 std::vector<double> z = {}) {
  const index_t L = c.L, K = c.K, V = c.V;
  Recurrence r;
  r.S.assign(c.S0.begin(), c.S0.end());
  r.u.assign(static_cast<std::size_t>(L * V), 0.0);
  r.o.assign(static_cast<std::size_t>(L * V), 0.0);
  for (index_t t = 0; t < L; ++t) {
    for (index_t i = 0; i < K; ++i) {
      const double a = std::exp(c.step_log(t, i));
      for (index_t j = 0; j < V; ++j) r.S[i * V + j] *= a;
    }
    for (index_t j = 0; j < V; ++j) {
      double uj = c.v[t * V + j];
      if (delta) {
        double pred = 0.0;
        for (index_t i = 0; i < K; ++i) pred += r.S[i * V + j] * double(c.k[t * K + i]);
        uj = double(c.beta[t]) * (uj - pred);
      }
      r.u[t * V + j] = uj;
    }
    for (index_t i = 0; i < K; ++i)
      for (index_t j = 0; j < V; ++j) r.S[i * V + j] += double(c.k[t * K + i]) * r.u[t * V + j];
    double den = 1.0;
    if (sum) {
      double qz = 0.0;
      for (index_t i = 0; i < K; ++i) {
        z[i] += c.k[t * K + i];
        qz += double(c.q[t * K + i]) * z[i];
      }
      den = qz + eps;
    }
    for (index_t j = 0; j < V; ++j) {
      double acc = 0.0;
      for (index_t i = 0; i < K; ++i) acc += r.S[i * V + j] * double(c.q[t * K + i]);
      r.o[t * V + j] = acc / den;
    }
  }
  return r;
}

const GateShape kShapes[] = {GateShape::None, GateShape::Scalar, GateShape::KeyChannel};

TEST(LinearStages, InputsNormaliseAndScale) {
  const index_t L = 37, K = 19;
  for (simd::Isa isa : isas())
    for (bool l2 : {false, true}) {
      Chunk c(L, 64, K, 8, GateShape::None, 11);
      const auto q = random_vector(L * K, 1, -3.f, 3.f), k = random_vector(L * K, 2, -3.f, 3.f);
      StageArgs a = c.args(Stage::Inputs);
      a.q = q.data();
      a.k = k.data();
      a.scale = 0.3f;
      a.l2norm = l2;
      run(a, isa);
      std::vector<float> gotQ(c.w.Q, c.w.Q + L * K), gotK(c.w.Kc, c.w.Kc + L * K);
      std::vector<double> wantQ(gotQ.size()), wantK(gotK.size());
      for (index_t t = 0; t < L; ++t) {
        double sq = 0.0, sk = 0.0;
        for (index_t i = 0; i < K; ++i) {
          sq += double(q[t * K + i]) * q[t * K + i];
          sk += double(k[t * K + i]) * k[t * K + i];
        }
        const double nq = l2 ? std::sqrt(sq + 1e-6) : 1.0, nk = l2 ? std::sqrt(sk + 1e-6) : 1.0;
        for (index_t i = 0; i < K; ++i) {
          wantQ[t * K + i] = 0.3 * q[t * K + i] / nq;
          wantK[t * K + i] = k[t * K + i] / nk;
        }
      }
      const std::string tag = std::string(simd::isa_name(isa)) + (l2 ? " l2" : "");
      EXPECT_LT(rel_rmse(gotQ, wantQ), 1e-6) << tag;
      EXPECT_LT(rel_rmse(gotK, wantK), 1e-6) << tag;
    }
}

TEST(LinearStages, GatesAreChunkRelativeCumsumsWithFlush) {
  const index_t L = 45, K = 21;
  for (simd::Isa isa : isas())
    for (GateShape s : {GateShape::Scalar, GateShape::KeyChannel})
      for (float lo : {-0.3f, -4.f}) {  // -4 per token: e^b falls below e^-69 within the chunk
        Chunk c(L, 64, K, 4, s, 21, lo, lo / 2);
        const index_t bK = c.w.bK;
        std::vector<float> b_ref(c.w.b, c.w.b + L * bK), eb_ref(c.w.eb, c.w.eb + L * bK);
        std::fill(c.w.b, c.w.b + L * bK, NAN);
        std::fill(c.w.eb, c.w.eb + L * bK, NAN);
        StageArgs a = c.args(Stage::Gates);
        a.g = c.gamma.data();
        run(a, isa);
        std::vector<double> b_want(L * bK), eb_want(L * bK);
        bool flushed = false;
        for (index_t i = 0; i < bK; ++i) {
          double acc = 0.0;
          for (index_t t = 0; t < L; ++t) {
            acc += c.gamma[t * bK + i];
            b_want[t * bK + i] = acc;
            eb_want[t * bK + i] = acc < linear::stages::kFlushLog ? 0.0 : std::exp(acc);
          }
        }
        std::vector<float> b(c.w.b, c.w.b + L * bK), eb(c.w.eb, c.w.eb + L * bK);
        const std::string tag = std::string(simd::isa_name(isa)) + " " + shape_name(s);
        EXPECT_LT(rel_rmse(b, b_want), 1e-6) << tag;
        EXPECT_LT(rel_rmse(eb, eb_want), 1e-5) << tag;
        for (index_t j = 0; j < L * bK; ++j) {
          if (b[j] < linear::stages::kFlushLog) {
            flushed = true;
            EXPECT_EQ(eb[j], 0.f) << tag << " e^b below the flush threshold must be exactly 0";
          }
        }
        EXPECT_EQ(flushed, lo < -1.f) << tag;
        if (s == GateShape::KeyChannel) {  // the per-channel hook gives the same bits
          std::vector<float> b_row = b, eb_row = eb;
          StageArgs p = c.args(Stage::GatesPlain);
          p.g = c.gamma.data();
          run(p, isa);
          EXPECT_EQ(std::vector<float>(c.w.b, c.w.b + L * bK), b_row) << tag;
          EXPECT_EQ(std::vector<float>(c.w.eb, c.w.eb + L * bK), eb_row) << tag;
        }
      }
}

TEST(LinearStages, GramMatricesAreGatedAndCausal) {
  const index_t K = 24;
  for (simd::Isa isa : isas())
    for (GateShape s : kShapes)
      for (index_t L : {1, 17, 64})
        // Key-channel gates: −0.3 factorises the whole chunk; −3 exceeds kFactorRange over the
        // chunk but not within a strip of 16 (strips factorised around their first token); −10
        // exceeds it within a strip too (pairs, most of them flushed to exactly 0).
        for (float lo : {-0.3f, -3.f, -10.f}) {
          if (s != GateShape::KeyChannel && lo < -1.f) continue;
          Chunk c(L, 64, K, 8, s, 31 + L, lo, lo / 3);
          StageArgs a = c.args(Stage::Gram);
          run(a, isa);
          std::vector<float> qk, kk;
          std::vector<double> qk_want, kk_want;
          for (index_t t = 0; t < L; ++t)
            for (index_t j = 0; j <= t; ++j) {
              double sq = 0.0, sk = 0.0;
              for (index_t i = 0; i < K; ++i) {
                const double g = std::exp(c.log_gap(t, j, i));
                sq += double(c.q[t * K + i]) * c.k[j * K + i] * g;
                sk += double(c.k[t * K + i]) * c.k[j * K + i] * g;
              }
              qk.push_back(c.w.QK[t * c.C + j]);
              qk_want.push_back(sq);
              if (j < t) {
                kk.push_back(c.w.KK[t * c.C + j]);
                kk_want.push_back(sk);
              }
            }
          const std::string tag = std::string(simd::isa_name(isa)) + " " + shape_name(s) + " L" +
                                  std::to_string(L) + " gate " + std::to_string(lo);
          EXPECT_LT(rel_rmse(qk, qk_want), kRelRmseBound) << tag;
          if (L > 1) {
            EXPECT_LT(rel_rmse(kk, kk_want), kRelRmseBound) << tag;
          }
        }
}

TEST(LinearStages, WySolveGivesTheDeltaRuleUpdates) {
  for (simd::Isa isa : isas())
    for (GateShape s : kShapes)
      for (index_t L : {1, 16, 33, 64}) {  // strips of 16: one, two and four, and a tail
        const index_t K = 32, V = 20;
        Chunk c(L, 64, K, V, s, 41 + L);
        StageArgs g = c.args(Stage::Gram);
        g.want_qk = false;
        run(g, isa);
        StageArgs a = c.args(Stage::WySolve);
        a.v = c.v.data();
        std::vector<float> S0 = c.S0;
        a.S = S0.data();
        run(a, isa);
        const Recurrence r = recur(c, /*delta=*/true);
        const std::vector<float> U(c.w.U, c.w.U + L * V);
        EXPECT_LT(rel_rmse(U, r.u), kRelRmseBound)
            << simd::isa_name(isa) << " " << shape_name(s) << " L" << L;
        EXPECT_EQ(S0, c.S0) << "the solve must not write the state";
      }
}

TEST(LinearStages, OutputIsTheRecurrencesReadout) {
  for (simd::Isa isa : isas())
    for (GateShape s : kShapes)
      for (bool sum : {false, true})
        for (index_t L : {1, 20, 64}) {
          const index_t K = 16, V = 36;
          Chunk c(L, 64, K, V, s, 51 + L);
          if (sum) {  // positive features, as the Sum normaliser is used with
            for (auto& x : c.q) x = std::fabs(x);
            for (auto& x : c.k) x = std::fabs(x);
            for (index_t j = 0; j < L * K; ++j) {
              c.w.Q[j] = c.q[j];
              c.w.Kc[j] = c.k[j];
            }
          }
          StageArgs g = c.args(Stage::Gram);
          g.want_kk = false;
          run(g, isa);
          for (index_t j = 0; j < L * V; ++j) c.w.U[j] = c.v[j];  // additive: U = V
          std::vector<float> o(L * V, NAN), z = random_vector(K, 5, 0.f, 1.f);
          const std::vector<double> z0(z.begin(), z.end());
          StageArgs a = c.args(sum ? Stage::OutputSum : Stage::Output);
          std::vector<float> S0 = c.S0;
          a.S = S0.data();
          a.o = o.data();
          a.z = z.data();
          a.eps = 1e-6f;
          run(a, isa);
          const Recurrence r = recur(c, false, sum, 1e-6, z0);
          EXPECT_LT(rel_rmse(o, r.o), kRelRmseBound)
              << simd::isa_name(isa) << " " << shape_name(s) << (sum ? " sum" : "") << " L" << L;
        }
}

TEST(LinearStages, StatePassCarriesTheChunk) {
  for (simd::Isa isa : isas())
    for (GateShape s : kShapes)
      for (index_t L : {1, 29, 64}) {
        const index_t K = 40, V = 24;
        Chunk c(L, 64, K, V, s, 61 + L);
        for (index_t j = 0; j < L * V; ++j) c.w.U[j] = c.v[j];
        const Recurrence r = recur(c, false);
        const std::string tag =
            std::string(simd::isa_name(isa)) + " " + shape_name(s) + " L" + std::to_string(L);

        std::vector<float> S = c.S0;
        StageArgs a = c.args(Stage::State);
        a.S = S.data();
        run(a, isa);
        EXPECT_LT(rel_rmse(S, r.S), kRelRmseBound) << tag;

        // Chunk-parallel pieces: S_L = a ∘ S0 + ΔS, state untouched.
        std::vector<float> delta(K * V, NAN), decay(K, NAN), S2 = c.S0;
        StageArgs p = c.args(Stage::StateDelta);
        p.S = S2.data();
        p.delta = delta.data();
        p.decay = decay.data();
        run(p, isa);
        EXPECT_EQ(S2, c.S0) << tag;
        std::vector<double> recomposed(K * V);
        for (index_t i = 0; i < K; ++i) {
          const double want_a = std::exp(c.log_gap(L - 1, 0, i) + c.step_log(0, i));
          EXPECT_NEAR(decay[i], want_a, 1e-6 * want_a + 1e-30) << tag;
          for (index_t j = 0; j < V; ++j)
            recomposed[i * V + j] = double(decay[i]) * c.S0[i * V + j] + delta[i * V + j];
        }
        EXPECT_LT(rel_rmse(recomposed, r.S), kRelRmseBound) << tag;
      }
}

}  // namespace
