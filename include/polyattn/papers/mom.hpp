// polyattn/papers/mom.hpp — Mixture-of-Memories (Du et al., "MoM: Linear Sequence Modeling with
// Mixture-of-Memories", 2025; fla's MomAttention, fla/layers/mom.py, by the authors): M memories,
// each a gated-DeltaNet state per (sequence, value head); a router sends every token to a few
// memories (top-k, with weights w_{t,m}); memory m is updated only by the tokens routed to it and
// the output mixes the routed memories' read-outs:
//
//   for m with w_{t,m} ≠ 0:  S_m ← e^{g_{t,m}} S_m,  S_m ← S_m + β_{t,m} k_{t,m} (v_{t,m} −
//   S_mᵀk_{t,m})ᵀ
//                            (q_t, k_{t,m} L2-normalised, scale K^-½, as fla's
//                            use_qk_l2norm_in_kernel)
//   o_t = Σ_m w_{t,m} · S_{m,t}ᵀ (scale·q_t)
//
// A memory not chosen by token t neither decays nor learns at t: it sees only its own tokens.
// That is how it runs here, as in fla: the tokens of each (memory, sequence) are gathered into one
// packed varlen call of the gated_delta_rule preset (every algorithm: Recurrent, Chunked<C>,
// Parallel), and the weighted read-outs are scattered back. Each memory has its own k, v, g, β
// (the model's per-memory projections), q is shared. The router (softmax, top-k, renormalised
// weights) is the model's: w [B,T,M] is given, zero where a memory is not chosen. The optional
// shared memory of the paper is one more gated_delta_rule call whose output the model adds.
//
// Layouts: q [B,T,H,K]; k [M·B,T,H,K], v [M·B,T,HV,V], g, beta [M·B,T,HV] with row m·B + b for
// memory m of sequence b; states [M·B,HV,K,V] likewise. No cu_seqlens (B sequences of T tokens).
// Decode: step(), the state updated in place.
// Element types (docs/conventions.md §9.8): q, k, v fp32, bf16 or fp16, one type for all three
// (else an Error naming k or v), widened exactly as they are gathered (the packed fp32 copy the
// call makes in any case); o of any of the three, the weighted sum formed in fp32 and rounded
// once (core/fp32_output.hpp); g, β, the weights and the states fp32. bf16 / fp16 inputs give the
// fp32 operator's bits on the widened values.
#pragma once

#include <algorithm>
#include <array>
#include <vector>

#include "polyattn/core/element_view.hpp"
#include "polyattn/core/fp32_output.hpp"
#include "polyattn/linear/presets.hpp"

namespace polyattn::papers {

struct MomInputs {
  EView4 q;                          // [B,T,H,K] fp32, bf16 or fp16 (one type for q, k, v)
  EView4 k;                          // [M·B,T,H,K]
  EView4 v;                          // [M·B,T,HV,V]
  View3<const float> g, beta;        // [M·B,T,HV]
  View3<const float> weights;        // [B,T,M] routing weights, 0 = not routed
  View4<const float> initial_state;  // optional [M·B,HV,K,V]
};

class MixtureOfMemories {
 public:
  /// Decode: the new tokens (usually 1) of B sequences, state [M·B,HV,K,V] read and updated in
  /// place (a memory not routed to keeps its state bit for bit).
  template <Executor E = Serial>
  void step(const MomInputs& in, View4<float> state, MutEView4 o, const LinearRunOptions& run = {},
            const E& exec = E{}) const {
    if (!in.initial_state.absent())
      throw Error("initial_state",
                  "must be empty in step(): the state argument is read and updated in place");
    check::required("state", state);
    MomInputs with_state = in;
    with_state.initial_state = state;
    forward<Recurrent>(with_state, o, state, run, exec);
  }

  /// @throws polyattn::Error naming the bad argument; outputs are then untouched
  template <LinearAlgorithm Algo = Recurrent, Executor E = Serial>
  void forward(const MomInputs& in, MutEView4 o, View4<float> final_state = {},
               const LinearRunOptions& run = {}, const E& exec = E{}) const {
    check::required("q", in.q);
    check::required("weights", in.weights);
    check::required("o", o);
    const auto& qs = in.q.shape();
    const index_t B = qs[0], T = qs[1], H = qs[2], K = qs[3];
    check::positive("q (batch)", B);
    const index_t M = in.weights.size(2);
    check::positive("weights (memories)", M);
    check::shape_is("weights", in.weights, {B, T, M}, "[B,T,M]");
    check::required("k", in.k);
    check::required("v", in.v);
    check::shape_is("k", in.k, {M * B, T, H, K}, "[M·B,T,H,K]");
    const index_t HV = in.v.size(2), V = in.v.size(3);
    check::shape_is("v", in.v, {M * B, T, HV, V}, "[M·B,T,HV,V]");
    check::shape_is("o", o, {B, T, HV, V}, "[B,T,HV,V]");
    check::required("g", in.g);
    check::shape_is("g", in.g, {M * B, T, HV}, "[M·B,T,HV]");
    check::required("beta", in.beta);
    check::shape_is("beta", in.beta, {M * B, T, HV}, "[M·B,T,HV]");
    check::qkv_element_types({.q = in.q, .k = in.k, .v = in.v});
    // The packed call checks the heads and the states before anything is written.
    // Gather: for memory m of sequence b (packed sequence m·B + b), its routed tokens in order.
    std::vector<std::int64_t> cu(static_cast<std::size_t>(M * B) + 1, 0);
    std::vector<index_t> src;  // token index of every packed row
    for (index_t m = 0; m < M; ++m)
      for (index_t b = 0; b < B; ++b) {
        for (index_t t = 0; t < T; ++t)
          if (in.weights(b, t, m) != 0.f) src.push_back(t);
        cu[static_cast<std::size_t>(m * B + b) + 1] = static_cast<std::int64_t>(src.size());
      }
    const index_t L = static_cast<index_t>(src.size());
    const auto n = [](index_t a, index_t b2, index_t c) {
      return static_cast<std::size_t>(std::max<index_t>(a * b2 * c, 1));
    };
    std::vector<float> pq(n(L, H, K)), pk(n(L, H, K)), pv(n(L, HV, V)), pg(n(L, HV, 1)),
        pb(n(L, HV, 1)), po(n(L, HV, V));
    in.q.visit([&](auto qx) {  // q, k, v of their element type X (one for all three), widened
      using X = typename decltype(qx)::value_type;
      const auto kx = in.k.as<X>(), vx = in.v.as<X>();
      for (index_t seq = 0; seq < M * B; ++seq) {
        const index_t b = seq % B;
        for (auto r = cu[static_cast<std::size_t>(seq)]; r < cu[static_cast<std::size_t>(seq) + 1];
             ++r) {
          const index_t t = src[static_cast<std::size_t>(r)];
          for (index_t h = 0; h < H; ++h)
            for (index_t i = 0; i < K; ++i) {
              pq[static_cast<std::size_t>((r * H + h) * K + i)] = to_float(qx(b, t, h, i));
              pk[static_cast<std::size_t>((r * H + h) * K + i)] = to_float(kx(seq, t, h, i));
            }
          for (index_t hv = 0; hv < HV; ++hv) {
            pg[static_cast<std::size_t>(r * HV + hv)] = in.g(seq, t, hv);
            pb[static_cast<std::size_t>(r * HV + hv)] = in.beta(seq, t, hv);
            for (index_t j = 0; j < V; ++j)
              pv[static_cast<std::size_t>((r * HV + hv) * V + j)] = to_float(vx(seq, t, hv, j));
          }
        }
      }
    });
    const LinearInputs packed{.q = bthd<const float>(pq.data(), 1, L, H, K),
                              .k = bthd<const float>(pk.data(), 1, L, H, K),
                              .v = bthd<const float>(pv.data(), 1, L, HV, V),
                              .g = bth<const float>(pg.data(), 1, L, HV),
                              .beta = bth<const float>(pb.data(), 1, L, HV),
                              .initial_state = in.initial_state,
                              .cu_seqlens = cu};
    gdn_.template forward<Algo>(
        packed, {.o = bthd(po.data(), 1, L, HV, V), .final_state = final_state}, run, exec);
    // Scatter: o_t = Σ_m w_{t,m} o_{t,m}, memories in order, in fp32, rounded once into o.
    const Fp32Output o32(o);
    const View4<float>& of = o32.view();
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t hv = 0; hv < HV; ++hv)
          for (index_t j = 0; j < V; ++j) of(b, t, hv, j) = 0.f;
    for (index_t seq = 0; seq < M * B; ++seq) {
      const index_t m = seq / B, b = seq % B;
      for (auto r = cu[static_cast<std::size_t>(seq)]; r < cu[static_cast<std::size_t>(seq) + 1];
           ++r) {
        const index_t t = src[static_cast<std::size_t>(r)];
        const float w = in.weights(b, t, m);
        for (index_t hv = 0; hv < HV; ++hv)
          for (index_t j = 0; j < V; ++j)
            of(b, t, hv, j) += w * po[static_cast<std::size_t>((r * HV + hv) * V + j)];
      }
    }
    o32.finish();
  }

 private:
  ::polyattn::presets::gated_delta_rule gdn_ = ::polyattn::presets::make_gated_delta_rule(true);
};

namespace presets {
inline MixtureOfMemories make_mom() {
  return {};
}
}  // namespace presets

}  // namespace polyattn::papers
