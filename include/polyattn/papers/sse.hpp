// polyattn/papers/sse.hpp — Sparse State Expansion (Pan et al., "Scaling Linear Attention with
// Sparse State Expansion", 2025, arXiv 2507.16577), GLA form, per (sequence, value head hv),
// q/k head h = hv / G: a shared GLA state S⁰ that every token writes and reads, and P state
// partitions S¹…Sᴾ sharing one set of projections; a router classifies every token into
// partitions, η_t = softmax(e_t) over P, and only the top-k_w partitions (writers) are updated
// by it — the row-sparse update — and only the top-k_r (readers) are read:
//
//   S⁰ ← diag(e^{g1_t}) S⁰ + k1_t v_tᵀ                                       every token
//   Sᵖ ← diag(e^{g2_t}) Sᵖ + η_{t,p} k2_t v_tᵀ                               p ∈ W_t only
//   o_t = S⁰ᵀ(scale·q1_t) + Σ_{p ∈ R_t} η_{t,p} Sᵖᵀ(scale·q2_t)               scale default K^-½
//
// A partition not written at t neither decays nor learns there. W_t, R_t: the k_w, k_r largest
// η_{t,p} (ties to the lower index); η is formed in double from the logits e and rounded once.
// The feature maps of q and k (silu / softmax in the authors' layer), the gates' projections
// (g = logsigmoid(·)/16 there), the output norm and gate, and SSE-H's sliding-window half are
// the model's.
//
// Where the formulas come from: the paper's abstract and summaries give the scheme (softmax
// top-k classification into partitions, row-sparse writes, shared parameters); the exact masking
// (η on both q and k, gate and write of a partition only where written, the shared state always
// on) was read from fla's SSE operators, fla/ops/sse/mask.py (softmax_and_mask: q·η·mask_r,
// k·η·mask_w, g·mask_w), and the SSE-GLA layer built on them (e.g. FAndromedA/vllm_for_sp2,
// sse_swa_moba_hf/sse_swa_hf.py, SSEGLAH): the parity check should run against those. The
// paper's own equations could not be read here. The same layer exists with the gated delta rule
// (SSEGDNH); only the GLA form is provided.
//
// How it runs: as MoM, the tokens of every (state, sequence) — the shared state takes every
// token, partition p the tokens that write or read it — are gathered into one packed varlen
// call of presets::gla (Recurrent, Chunked<C>, Parallel; a token that reads without writing
// enters with k = 0 and g = 0), and the read-outs are summed back per token (shared state first,
// partitions in order). States [(1+P)·N, HV, K, V], row p·N + n (p = 0 the shared state).
// GVA and varlen (cu_seqlens) as the family; decode: step() with the state in place.
// Element types (docs/conventions.md §9.8): q1, k1, q2, k2, v fp32, bf16 or fp16, one type for
// all five (else an Error naming the first of k1, q2, k2, v that differs from q1), read widened
// exactly as they are gathered into the packed fp32 rows (the copy made anyway); o of any of the
// three, the read-outs summed in fp32 and rounded once (core/fp32_output.hpp); g1, g2, the
// router logits e and the states fp32. bf16 / fp16 inputs give the fp32 operator's bits on the
// widened values.
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "polyattn/core/element_view.hpp"
#include "polyattn/core/fp32_output.hpp"
#include "polyattn/linear/presets.hpp"

namespace polyattn::papers {

struct SseInputs {
  EView4 q1, k1;              // [B,T,H,K] the shared state's query and key: fp32, bf16 or
                              // fp16, one type for q1, k1, q2, k2, v
  EView4 q2, k2;              // [B,T,H,K] the partitions' (one set for all partitions)
  EView4 v;                   // [B,T,HV,V]
  View4<const float> g1, g2;  // [B,T,HV,K] log-decays (≤ 0) of the shared state, partitions
  View3<const float> e;       // [B,T,P] router logits
  View4<const float> initial_state;  // optional [(1+P)·N,HV,K,V], row p·N + n
  std::span<const std::int64_t> cu_seqlens;
};

struct SseOptions {
  index_t writers = 1;  // k_w: partitions each token writes
  index_t readers = 1;  // k_r: partitions each token reads
};

/// The router in double: η = softmax(e) over the P partitions and the top-`count` mask (ties to
/// the lower index). Shared by the operator and its reference.
inline void sse_route(const float* e, index_t P, index_t count, double* eta, char* chosen) {
  double m = e[0];
  for (index_t p = 1; p < P; ++p) m = std::max(m, static_cast<double>(e[p]));
  double sum = 0.0;
  for (index_t p = 0; p < P; ++p) sum += (eta[p] = std::exp(static_cast<double>(e[p]) - m));
  for (index_t p = 0; p < P; ++p) eta[p] /= sum;
  for (index_t p = 0; p < P; ++p) {
    index_t above = 0;  // partitions ranked before p
    for (index_t r = 0; r < P; ++r)
      if (eta[r] > eta[p] || (eta[r] == eta[p] && r < p)) ++above;
    chosen[p] = above < count;
  }
}

class SparseStateExpansion {
 public:
  /// Prefill. @throws polyattn::Error naming the bad argument; outputs are then untouched
  template <LinearAlgorithm Algo = Recurrent, Executor E = Serial>
  void forward(const SseInputs& in, MutEView4 o, View4<float> final_state = {},
               const SseOptions& opt = {}, const LinearRunOptions& run = {},
               const E& exec = E{}) const {
    check::required("q1", in.q1);
    check::required("e", in.e);
    check::required("o", o);
    const auto& qs = in.q1.shape();
    const index_t B = qs[0], T = qs[1], H = qs[2], K = qs[3];
    const index_t N = check::cu_seqlens("cu_seqlens", in.cu_seqlens, B, T);
    for (const auto& [name, x] :
         {std::pair{"k1", in.k1}, std::pair{"q2", in.q2}, std::pair{"k2", in.k2}}) {
      check::required(name, x);
      check::shape_is(name, x, qs, "same as q1 [B,T,H,K]");
      check::dtype_is(name, x, in.q1.dtype(), kOneType);
    }
    check::required("v", in.v);
    check::heads_divide("v", H, in.v.size(2));
    const index_t HV = in.v.size(2), V = in.v.size(3);
    check::shape_is("v", in.v, {B, T, HV, V}, "[B,T,HV,V]");
    check::dtype_is("v", in.v, in.q1.dtype(), kOneType);
    check::shape_is("o", o, {B, T, HV, V}, "same as v [B,T,HV,V]");
    for (const auto& [name, x] : {std::pair{"g1", in.g1}, std::pair{"g2", in.g2}}) {
      check::required(name, x);
      check::shape_is(name, x, {B, T, HV, K}, "[B,T,HV,K]");
    }
    const index_t P = in.e.size(2);
    check::positive("e (partitions)", P);
    check::shape_is("e", in.e, {B, T, P}, "[B,T,P]");
    if (opt.writers < 1 || opt.writers > P)
      throw Error("writers", "must be in [1, P=" + std::to_string(P) + "], got " +
                                 std::to_string(opt.writers));
    if (opt.readers < 1 || opt.readers > P)
      throw Error("readers", "must be in [1, P=" + std::to_string(P) + "], got " +
                                 std::to_string(opt.readers));
    // The packed call checks initial_state / final_state [(1+P)·N,HV,K,V] before writing.

    // Route every token, then gather: packed sequence p·N + n holds the tokens of sequence n
    // that state p takes, in order.
    const auto segs = segments(B, T, in.cu_seqlens);
    std::vector<double> eta(static_cast<std::size_t>(B * T * P));
    std::vector<char> wr(static_cast<std::size_t>(B * T * P)), rd(wr.size());
    {
      std::vector<float> e_row(static_cast<std::size_t>(P));
      std::vector<char> chosen(static_cast<std::size_t>(P));
      for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < T; ++t) {
          const auto at = static_cast<std::size_t>((b * T + t) * P);
          for (index_t p = 0; p < P; ++p) e_row[static_cast<std::size_t>(p)] = in.e(b, t, p);
          sse_route(e_row.data(), P, opt.writers, eta.data() + at, chosen.data());
          for (index_t p = 0; p < P; ++p)
            wr[at + static_cast<std::size_t>(p)] = chosen[static_cast<std::size_t>(p)];
          sse_route(e_row.data(), P, opt.readers, eta.data() + at, chosen.data());
          for (index_t p = 0; p < P; ++p)
            rd[at + static_cast<std::size_t>(p)] = chosen[static_cast<std::size_t>(p)];
        }
    }
    struct Row {
      index_t batch, t;
    };
    std::vector<std::int64_t> cu(static_cast<std::size_t>((1 + P) * N) + 1, 0);
    std::vector<Row> src;
    for (index_t p = 0; p <= P; ++p)
      for (index_t n = 0; n < N; ++n) {
        const Segment& sg = segs[static_cast<std::size_t>(n)];
        for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
          const auto at = static_cast<std::size_t>((sg.batch * T + t) * P + p - 1);
          if (p == 0 || wr[at] || rd[at]) src.push_back({sg.batch, t});
        }
        cu[static_cast<std::size_t>(p * N + n) + 1] = static_cast<std::int64_t>(src.size());
      }
    const index_t L = static_cast<index_t>(src.size());
    const auto sz = [](index_t a, index_t b2, index_t c) {
      return static_cast<std::size_t>(std::max<index_t>(a * b2 * c, 1));
    };
    std::vector<float> pq(sz(L, H, K)), pk(sz(L, H, K)), pv(sz(L, HV, V)), pg(sz(L, HV, K)),
        po(sz(L, HV, V));
    in.q1.visit([&](auto q1) {  // q1, k1, q2, k2, v of their element type X, read widened
      using X = typename decltype(q1)::value_type;
      const auto k1 = in.k1.as<X>(), q2 = in.q2.as<X>(), k2 = in.k2.as<X>(), vx = in.v.as<X>();
      for (index_t p = 0; p <= P; ++p)
        for (index_t n = 0; n < N; ++n)
          for (auto r = cu[static_cast<std::size_t>(p * N + n)];
               r < cu[static_cast<std::size_t>(p * N + n) + 1]; ++r) {
            const Row& x = src[static_cast<std::size_t>(r)];
            const auto at = static_cast<std::size_t>((x.batch * T + x.t) * P + p - 1);
            const double a_q = p == 0 ? 1.0 : (rd[at] ? eta[at] : 0.0);
            const double a_k = p == 0 ? 1.0 : (wr[at] ? eta[at] : 0.0);
            const bool decays = p == 0 || wr[at];
            const auto& q = p == 0 ? q1 : q2;
            const auto& k = p == 0 ? k1 : k2;
            const auto& g = p == 0 ? in.g1 : in.g2;
            for (index_t h = 0; h < H; ++h)
              for (index_t i = 0; i < K; ++i) {
                const auto d = static_cast<std::size_t>((r * H + h) * K + i);
                pq[d] = static_cast<float>(a_q * to_float(q(x.batch, x.t, h, i)));
                pk[d] = static_cast<float>(a_k * to_float(k(x.batch, x.t, h, i)));
              }
            for (index_t hv = 0; hv < HV; ++hv) {
              for (index_t i = 0; i < K; ++i)
                pg[static_cast<std::size_t>((r * HV + hv) * K + i)] =
                    decays ? g(x.batch, x.t, hv, i) : 0.f;
              for (index_t j = 0; j < V; ++j)
                pv[static_cast<std::size_t>((r * HV + hv) * V + j)] =
                    to_float(vx(x.batch, x.t, hv, j));
            }
          }
    });
    const LinearInputs packed{.q = bthd<const float>(pq.data(), 1, L, H, K),
                              .k = bthd<const float>(pk.data(), 1, L, H, K),
                              .v = bthd<const float>(pv.data(), 1, L, HV, V),
                              .gk = bthd<const float>(pg.data(), 1, L, HV, K),
                              .initial_state = in.initial_state,
                              .cu_seqlens = cu};
    gla_.template forward<Algo>(
        packed, {.o = bthd(po.data(), 1, L, HV, V), .final_state = final_state}, run, exec);
    // Scatter: o_t = Σ_p read-out of state p at t (p = 0 first), in fp32; unread rows add exact
    // zeros. A bf16 / fp16 o gets the sum rounded once.
    const Fp32Output o32(o);
    const View4<float>& of = o32.view();
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t hv = 0; hv < HV; ++hv)
          for (index_t j = 0; j < V; ++j) of(b, t, hv, j) = 0.f;
    for (index_t r = 0; r < L; ++r) {
      const Row& x = src[static_cast<std::size_t>(r)];
      for (index_t hv = 0; hv < HV; ++hv)
        for (index_t j = 0; j < V; ++j)
          of(x.batch, x.t, hv, j) += po[static_cast<std::size_t>((r * HV + hv) * V + j)];
    }
    o32.finish();
  }

  /// Decode: the new tokens (usually 1) of B sequences, state [(1+P)·B,HV,K,V] read and updated
  /// in place (a partition neither written nor read keeps its bits).
  template <Executor E = Serial>
  void step(const SseInputs& in, View4<float> state, MutEView4 o, const SseOptions& opt = {},
            const LinearRunOptions& run = {}, const E& exec = E{}) const {
    if (!in.initial_state.absent())
      throw Error("initial_state",
                  "must be empty in step(): the state argument is read and updated in place");
    if (!in.cu_seqlens.empty()) throw Error("cu_seqlens", "is not supported by step()");
    check::required("state", state);
    SseInputs with_state = in;
    with_state.initial_state = state;
    forward<Recurrent>(with_state, o, state, opt, run, exec);
  }

 private:
  static constexpr const char* kOneType = "SSE (one element type for q1, k1, q2, k2 and v, q1's)";
  ::polyattn::presets::gla gla_{};
};

namespace presets {
inline SparseStateExpansion make_sse() {
  return {};
}
}  // namespace presets

}  // namespace polyattn::papers
