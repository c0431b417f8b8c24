// polyattn/linear/mamba2.hpp — Mamba2 (SSD) with Mamba2's own argument conventions, on the
// scalar-decay kernels of the linear family (Recurrent, Chunked<C>, Parallel, step):
//
//   Δ_t   = clamp(softplus(dt_t + dt_bias[h]), dt_min, dt_max)   (softplus when dt_softplus)
//   h_t   = exp(Δ_t·A[h]) · h_{t−1} + Δ_t · x_t ⊗ B_t           h [P×N] per (sequence, head)
//   y_t   = h_t C_t + D[h] · x_t
// with x [B,T,H,P], dt [B,T,H], A [H] (negative), B and C [B,T,G,N] shared by the H/G heads of a
// group, state [B,H,P,N] (mamba_ssm's layout). On the linear family's terms (SPEC §2): q = C,
// k = B (G query/key heads), v = x (H value heads, GVA), g = Δ·A, u = Δ·v, scale 1, state
// [B,H,N,P] — the transpose, which the operator passes as a strided view of the caller's
// [B,H,P,N] memory (kernels copy a head's block in and out, see below; no whole-tensor copy). Δ is
// computed in-kernel by the fused policies Mamba2Decay / Mamba2Update (policies/fused_gates.hpp);
// the D skip is one pass over y afterwards. Varlen (cu_seqlens) and state pools (state_indices) as
// in the linear family (docs/conventions.md §3.4); speculative verify + commit as §3.6.
//
// Why step() still copies each head's block (in, transposed, and back out) every call: the
// kernels hold S as [K][V] rows and vectorise over V, so output lane j sums its K terms in key
// order, y_j = Σ_i S[i][j]·C_i, one multiply-add per i per lane. In the caller's [P][N] memory
// row i of S is a column with stride N. Working there directly, with the same bits, needs either
// gathers / scatters of those columns (no scatter below AVX-512) or per-ISA kernels that
// transpose tiles in registers — a second state layout for every Recurrent / verify / commit
// instantiation of every ISA unit, which the CI budget does not take; vectorising over N
// instead would sum each y_j across lanes, a different order and other bits. So the copy stays,
// done in 4×4 blocks (linear/state_copy.hpp, also for commit(): about half the time of
// the elementwise loop it replaced; B8 H16 P64 N128 decode ≈ 2.4× the in-place [N][P] step,
// polyattn-bench-engine fused-gates/decode/mamba2/*). Callers that own their state layout can
// keep it as [B,H,N,P] and call Mamba2::linear_operator's step directly (adding D·x themselves):
// no copy at all.
#pragma once

#include <cstdint>
#include <span>

#include "polyattn/core/executor.hpp"
#include "polyattn/linear/operator.hpp"
#include "polyattn/policies/fused_gates.hpp"

namespace polyattn {

struct Mamba2Inputs {
  View4<const float> x;              // [B,T,H,P]
  View3<const float> dt;             // [B,T,H], before bias and softplus
  View1<const float> A;              // [H], negative
  View4<const float> Bm;             // [B,T,G,N]
  View4<const float> Cm;             // [B,T,G,N]
  View1<const float> D;              // [H], optional skip
  View1<const float> dt_bias;        // [H], optional
  View4<const float> initial_state;  // [Nseq,H,P,N] optional (a pool [slots,...] with indices)
  std::span<const std::int64_t> cu_seqlens;
  std::span<const std::int64_t> state_indices;
};

struct Mamba2Outputs {
  View4<float> y;            // [B,T,H,P]
  View4<float> final_state;  // [Nseq,H,P,N] optional (or the pool)
};

class Mamba2 {
 public:
  Mamba2() = default;
  explicit Mamba2(gates::TimeStep time_step) : time_step_(time_step) {}

  using linear_operator = LinearAttention<Identity, Mamba2Decay, Mamba2Update, NoNormalizer>;

  /// Prefill. @throws polyattn::Error naming the bad argument (Mamba2's names); y and
  /// final_state are then untouched.
  template <LinearAlgorithm Algo = Chunked<64>, Executor E = Serial>
  void forward(const Mamba2Inputs& in, const Mamba2Outputs& out, const E& exec = E{}) const {
    const LinearInputs lin = linear_inputs(in, out.y, out.final_state, false);
    op().template forward<Algo>(lin, {.o = out.y, .final_state = transposed(out.final_state)},
                                {.scale = 1.0}, exec);
    add_skip(in, out.y);
  }

  /// Decode: T new tokens (usually 1) of B sequences; state [B,H,P,N] (or a pool with
  /// in.state_indices) read and updated in place; y [B,T,H,P].
  template <Executor E = Serial>
  void step(const Mamba2Inputs& in, View4<float> state, View4<float> y, const E& exec = E{}) const {
    if (!in.initial_state.absent())
      throw Error("initial_state", "must be empty in step(): the state argument is the state");
    check::required("state", state);
    op().step(linear_inputs(in, y, state, true), transposed(state), y, {.scale = 1.0}, exec);
    add_skip(in, y);
  }

  /// Speculative verify of T ≤ 16 draft tokens per sequence (linear/speculative.hpp): y for
  /// each, from `state` [B,H,P,N] (or a pool with in.state_indices), which is only read.
  template <Executor E = Serial>
  void verify(const Mamba2Inputs& in, View4<const float> state, View4<float> y,
              linear::VerifyCache& cache, const E& exec = E{}) const {
    if (!in.initial_state.absent())
      throw Error("initial_state", "must be empty in verify(): the state argument is read");
    check::required("state", state);
    const LinearInputs lin = linear_inputs(in, y, View4<float>{}, true);
    const bool pool = !in.state_indices.empty();
    check::shape_is(
        "state", state,
        {pool ? state.size(0) : in.x.size(0), in.x.size(2), in.x.size(3), in.Bm.size(3)},
        pool ? "[slots,H,P,N] (a state pool)" : "[B,H,P,N]");
    op().verify(lin, transposed(state), y, cache, {.scale = 1.0}, exec);
    add_skip(in, y);
  }

  /// Moves each sequence's state [B,H,P,N] (or the pool the verify read) to its accepted
  /// prefix, accepted [B] in [0, T].
  template <Executor E = Serial>
  void commit(const linear::VerifyCache& cache, std::span<const std::int64_t> accepted,
              View4<float> state, const E& exec = E{}) const {
    op().commit(cache, accepted, transposed(state), exec);
  }

  const gates::TimeStep& time_step() const { return time_step_; }

 private:
  linear_operator op() const {
    return linear_operator({}, Mamba2Decay{time_step_}, Mamba2Update{false, time_step_}, {});
  }

  // [.., P, N] memory as the linear family's [.., K = N, V = P].
  template <class T>
  static View4<T> transposed(const View4<T>& s) {
    if (s.absent()) return s;
    const auto& sh = s.shape();
    const auto& st = s.strides();
    return View4<T>(s.data(), {sh[0], sh[1], sh[3], sh[2]}, {st[0], st[1], st[3], st[2]});
  }

  // Validates Mamba2's own arguments (with its names) and maps them onto LinearInputs; the
  // linear operator then checks the rest (overlaps, cu_seqlens, pools).
  LinearInputs linear_inputs(const Mamba2Inputs& in, const View4<float>& y,
                             const View4<float>& state_out, bool step) const {
    time_step_.check();
    check::required("x", in.x);
    check::required("dt", in.dt);
    check::required("A", in.A);
    check::required("Bm", in.Bm);
    check::required("Cm", in.Cm);
    check::required("y", y);
    const auto& xs = in.x.shape();
    const index_t B = xs[0], T = xs[1], H = xs[2], P = xs[3];
    check::positive("x (heads)", H);
    check::positive("x (head dim P)", P);
    check::shape_is("dt", in.dt, {B, T, H}, "[B,T,H] with B,T,H of x");
    check::shape_is("A", in.A, {H}, "[H]");
    const index_t G = in.Bm.size(2), N = in.Bm.size(3);
    check::positive("Bm (groups)", G);
    check::positive("Bm (state size N)", N);
    check::shape_is("Bm", in.Bm, {B, T, G, N}, "[B,T,G,N] with B,T of x");
    check::heads_divide("x", G, H);
    check::shape_is("Cm", in.Cm, {B, T, G, N}, "same as Bm [B,T,G,N]");
    if (!in.D.absent()) check::shape_is("D", in.D, {H}, "[H]");
    if (!in.dt_bias.absent()) check::shape_is("dt_bias", in.dt_bias, {H}, "[H]");
    check::shape_is("y", y, {B, T, H, P}, "[B,T,H,P], as x");
    const bool pool = !in.state_indices.empty();
    const index_t seqs = in.cu_seqlens.empty() ? B : static_cast<index_t>(in.cu_seqlens.size()) - 1;
    const char* layout = pool ? "[slots,H,P,N] (a state pool)" : "[Nseq,H,P,N]";
    for (auto [name, s] :
         {std::pair{"initial_state", View4<const float>(in.initial_state)},
          std::pair{step ? "state" : "final_state", View4<const float>(state_out)}})
      if (!s.absent()) {
        check::well_formed(name, s);
        check::shape_is(name, s, {pool || step ? s.size(0) : seqs, H, P, N}, layout);
        if (step && !pool) check::shape_is(name, s, {B, H, P, N}, "[B,H,P,N]");
      }
    if (!in.D.absent() && !y.absent()) {  // y is read back for the skip: it must not alias x
      check::writes_disjoint({memory::region("y", y)},
                             {memory::region("x", in.x), memory::region("D", in.D)});
    }
    LinearInputs lin;
    lin.q = in.Cm;
    lin.k = in.Bm;
    lin.v = in.x;
    lin.dt = in.dt;
    lin.A = in.A;
    lin.dt_bias = in.dt_bias;
    lin.initial_state = transposed(in.initial_state);
    lin.cu_seqlens = in.cu_seqlens;
    lin.state_indices = in.state_indices;
    return lin;
  }

  // y += D[h]·x (after the SSD has written y).
  static void add_skip(const Mamba2Inputs& in, const View4<float>& y) {
    if (in.D.absent()) return;
    const auto& s = in.x.shape();
    for (index_t b = 0; b < s[0]; ++b)
      for (index_t t = 0; t < s[1]; ++t)
        for (index_t h = 0; h < s[2]; ++h) {
          const float d = in.D(h);
          for (index_t p = 0; p < s[3]; ++p) y(b, t, h, p) += d * in.x(b, t, h, p);
        }
  }

  gates::TimeStep time_step_{};
};

}  // namespace polyattn
