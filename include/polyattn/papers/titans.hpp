// polyattn/papers/titans.hpp — Titans' neural memory, linear (matrix) memory form (Behrouz et al.,
// "Titans: Learning to Memorize at Test Time", arXiv 2501.00663, Sec. 3.1: the associative loss,
// the momentum "surprise" and the forgetting update), per (sequence, value head hv), q/k head
// h = hv / G, memory M (V×K, M k ≈ v) kept here transposed as the state S = Mᵀ [K][V]. The
// authors published no code; lucidrains/titans-pytorch is an unofficial port (MLP memory by
// default) for a parity check of the linear case.
//
//   surprise (momentum)   U_t = η_t U_{t−1} − θ_t ∇ℓ(S_{t−1}; k_t, v_t),
//                         ∇ℓ = k_t (S_{t−1}ᵀ k_t − v_t)ᵀ   (ℓ = ½‖S_{t−1}ᵀ k_t − v_t‖²: the
//                         paper's ‖·‖² has a factor 2 that θ absorbs)
//   forgetting            S_t = (1 − α_t) S_{t−1} + U_t
//   retrieval             o_t = S_tᵀ (scale·q_t)
//
// α_t, η_t, θ_t: [B,T,HV] per token and value head (the model computes them from x_t; used as
// given). q and k are L2-normalised first by default, as the paper does (x / sqrt(Σx² + 1e-6));
// scale defaults to 1 (the paper's retrieval M q has none).
//
// Algorithms: Recurrent only (also the decode step). The update is of a new form for the library
// (a second K×V state, the momentum, with its own decay, and the gradient taken at the memory
// before the forgetting), so it has its own kernel here rather than an UpdatePolicy. The paper's
// parallel training computes the gradients of a whole chunk at the memory of the chunk start
// (mini-batch gradient descent), which is a different recurrence, not a re-association of this
// one; it is not provided. The deep (MLP) memory, persistent memory tokens and the MAC / MAG /
// MAL architectures are outside the operator.
// States: memory S and momentum U, [N,HV,K,V] each, both or neither (zeros). GVA and varlen as
// the linear family; fp32 with the dot products accumulated in fp32 (the compiler vectorises
// the row loops).
// Element types (docs/conventions.md §9.8): q, k, v fp32, bf16 or fp16, one type for all three
// (else an Error naming k or v), read widened exactly; o of any of the three, formed in fp32 and
// rounded once (core/fp32_output.hpp); α, η, θ and the states fp32. bf16 / fp16 inputs give the
// fp32 operator's bits on the widened values.
#pragma once

#include <cmath>
#include <optional>
#include <vector>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/element_view.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/fp32_output.hpp"
#include "polyattn/core/sequences.hpp"

namespace polyattn::papers {

struct TitansInputs {
  EView4 q, k;                           // [B,T,H,K] fp32, bf16 or fp16 (one type for q, k, v)
  EView4 v;                              // [B,T,HV,V]
  View3<const float> alpha, eta, theta;  // [B,T,HV]: forgetting, momentum decay, learning rate
  View4<const float> initial_memory;     // optional [N,HV,K,V]
  View4<const float> initial_momentum;   // optional [N,HV,K,V] (with initial_memory)
  std::span<const std::int64_t> cu_seqlens;
};

struct TitansOutputs {
  MutEView4 o;                  // [B,T,HV,V] fp32, bf16 or fp16
  View4<float> final_memory;    // optional
  View4<float> final_momentum;  // optional
};

struct TitansOptions {
  std::optional<double> scale;  // default 1
  bool qk_l2norm = true;
};

class Titans {
 public:
  /// Prefill (Recurrent). @throws polyattn::Error naming the bad argument; outputs untouched.
  template <Executor E = Serial>
  void forward(const TitansInputs& in, const TitansOutputs& out, const TitansOptions& opt = {},
               const E& exec = E{}) const {
    const LinearDims d = validate(in, out, opt);
    run(in, d, out, opt, exec);
  }

  /// Decode: memory and momentum [B,HV,K,V] read and updated in place.
  template <Executor E = Serial>
  void step(const TitansInputs& in, View4<float> memory, View4<float> momentum, MutEView4 o,
            const TitansOptions& opt = {}, const E& exec = E{}) const {
    if (!in.initial_memory.absent() || !in.initial_momentum.absent())
      throw Error(in.initial_memory.absent() ? "initial_momentum" : "initial_memory",
                  "must be empty in step(): the state arguments are updated in place");
    if (!in.cu_seqlens.empty()) throw Error("cu_seqlens", "is not supported by step()");
    check::required("memory", memory);
    check::required("momentum", momentum);
    TitansInputs with_state = in;
    with_state.initial_memory = memory;
    with_state.initial_momentum = momentum;
    forward(with_state, {.o = o, .final_memory = memory, .final_momentum = momentum}, opt, exec);
  }

 private:
  static LinearDims validate(const TitansInputs& in, const TitansOutputs& out,
                             const TitansOptions& opt) {
    // The family's checks for q, k, v, o, the states and cu_seqlens.
    const LinearInputs li{.q = in.q,
                          .k = in.k,
                          .v = in.v,
                          .initial_state = in.initial_memory,
                          .cu_seqlens = in.cu_seqlens};
    const LinearDims d = validate_linear_tensors(
        li, LinearOutputs<float>{.o = out.o, .final_state = out.final_memory}, false);
    check::qkv_element_types(li);
    for (auto [name, x] :
         {std::pair{"alpha", in.alpha}, std::pair{"eta", in.eta}, std::pair{"theta", in.theta}}) {
      check::required(name, x);
      check::shape_is(name, x, {d.B, d.T, d.HV}, "[B,T,HV]");
    }
    if (in.initial_memory.absent() != in.initial_momentum.absent())
      throw Error(in.initial_momentum.absent() ? "initial_momentum" : "initial_memory",
                  "memory and momentum come together");
    if (!in.initial_momentum.absent()) {
      check::well_formed("initial_momentum", in.initial_momentum);
      check::shape_is("initial_momentum", in.initial_momentum, {d.N, d.HV, d.K, d.V}, "[N,HV,K,V]");
    }
    if (!out.final_momentum.absent()) {
      check::well_formed("final_momentum", out.final_momentum);
      check::shape_is("final_momentum", out.final_momentum, {d.N, d.HV, d.K, d.V}, "[N,HV,K,V]");
    }
    check::scale_and_eps(opt.scale, false, 0.0);
    return d;
  }

  template <class E>
  static void run(const TitansInputs& in, const LinearDims& d, const TitansOutputs& out,
                  const TitansOptions& opt, const E& exec) {
    const auto segs = segments(d.B, d.T, in.cu_seqlens);
    const auto scale = static_cast<float>(opt.scale.value_or(1.0));
    const index_t K = d.K, V = d.V;
    const Fp32Output o32(out.o);
    const View4<float>& out_o = o32.view();
    // q, k, v of their element type X (one for all three), read widened.
    in.q.visit([&](auto qx) {
      using X = typename decltype(qx)::value_type;
      const auto kx = in.k.as<X>(), vx = in.v.as<X>();
      exec.parallel_for(d.N * d.HV, [&](std::int64_t task) {
        const index_t n = static_cast<index_t>(task / d.HV), hv = static_cast<index_t>(task % d.HV);
        const index_t h = hv / d.group();
        const Segment& sg = segs[static_cast<std::size_t>(n)];
        const auto KV = static_cast<std::size_t>(K * V);
        std::vector<float> S(KV, 0.f), U(KV, 0.f), q(static_cast<std::size_t>(K)), k(q.size()),
            p(static_cast<std::size_t>(V)), e(p.size()), o(p.size());
        if (!in.initial_memory.absent())
          for (index_t i = 0; i < K; ++i)
            for (index_t j = 0; j < V; ++j) {
              S[i * V + j] = in.initial_memory(n, hv, i, j);
              U[i * V + j] = in.initial_momentum(n, hv, i, j);
            }
        for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
          float qn = 0.f, kn = 0.f;
          for (index_t i = 0; i < K; ++i) {
            q[i] = to_float(qx(sg.batch, t, h, i));
            k[i] = to_float(kx(sg.batch, t, h, i));
            qn += q[i] * q[i];
            kn += k[i] * k[i];
          }
          const float qs =
              opt.qk_l2norm ? scale / std::sqrt(qn + static_cast<float>(kL2NormEps)) : scale;
          const float ks =
              opt.qk_l2norm ? 1.f / std::sqrt(kn + static_cast<float>(kL2NormEps)) : 1.f;
          for (index_t i = 0; i < K; ++i) {
            q[i] *= qs;
            k[i] *= ks;
          }
          // p = S_{t−1}ᵀ k, the memory's prediction before this token.
          std::fill(p.begin(), p.end(), 0.f);
          for (index_t i = 0; i < K; ++i) {
            const float* row = S.data() + i * V;
            for (index_t j = 0; j < V; ++j) p[j] = k[i] * row[j] + p[j];
          }
          const float a = 1.f - in.alpha(sg.batch, t, hv), eta = in.eta(sg.batch, t, hv),
                      theta = in.theta(sg.batch, t, hv);
          // −θ∇ℓ = θ k (v − p)ᵀ, row by row.
          for (index_t j = 0; j < V; ++j) e[j] = theta * (to_float(vx(sg.batch, t, hv, j)) - p[j]);
          std::fill(o.begin(), o.end(), 0.f);
          for (index_t i = 0; i < K; ++i) {
            float* srow = S.data() + i * V;
            float* urow = U.data() + i * V;
            for (index_t j = 0; j < V; ++j) {
              urow[j] = eta * urow[j] + k[i] * e[j];
              srow[j] = a * srow[j] + urow[j];
              o[j] = q[i] * srow[j] + o[j];
            }
          }
          for (index_t j = 0; j < V; ++j) out_o(sg.batch, t, hv, j) = o[j];
        }
        for (index_t i = 0; i < K; ++i)
          for (index_t j = 0; j < V; ++j) {
            if (!out.final_memory.absent()) out.final_memory(n, hv, i, j) = S[i * V + j];
            if (!out.final_momentum.absent()) out.final_momentum(n, hv, i, j) = U[i * V + j];
          }
      });
    });
    o32.finish();
  }
};

namespace presets {
inline Titans make_titans() {
  return {};
}
}  // namespace presets

}  // namespace polyattn::papers
