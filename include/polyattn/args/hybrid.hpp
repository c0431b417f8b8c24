// polyattn/args/hybrid.hpp — arguments of the hybrid combiners (docs/conventions.md §7) and their
// validation, shared by the naive references (polyattn/reference/hybrid.hpp) and the fast operators
// and decoders (polyattn/hybrid/). Per (sequence, head), position p, causal sliding window W_p = [p
// − w + 1, p] (clipped at 0), outside O_p = [0, p − w]:
//
//   based_hybrid:  o = Based(lin_q, lin_k, v)  +  SWA_w(q, k, v)        (two normalised outputs)
//   lolcats:       s_pj = scale·q_p·k_j,  m_p = max_{j∈W_p} s_pj
//                  o_p = (γ Σ_{W_p} e^{s_pj − m_p} v_j + Σ_{O_p} (φq_p·φk_j) v_j)
//                      / (γ Σ_{W_p} e^{s_pj − m_p}     + Σ_{O_p}  φq_p·φk_j)
//   liger:         o = α · GLA(lin_q, lin_k, v, g | gk)  +  β · SWA_w(q, k, v)
//   agent:         o = softmax(scale·Q Aᵀ) · (softmax(scale·A Kᵀ) V)   (non-causal, per head)
//
// Each validate_* checks every argument (output included) and throws polyattn::Error naming the
// bad one before anything is written; it returns the resolved sizes and scales.
//
// Element types (docs/conventions.md §9.7): q, k, v and the other activations (lin_q, lin_k,
// phi_q, phi_k, agents) are ElementViews of fp32, bf16 or fp16 (typed views convert implicitly);
// o is any of the three in the fast operators (MutEView4), float or double in the references.
// Based, LoLCATs and Liger feed their activations to a linear-family operator, which takes one
// element type: all of a call's activations must have q's type (Error naming the first that
// differs). Agent attention is two softmax calls, which take any mix. Gates (g, gk) are fp32;
// everything is accumulated in fp32.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "polyattn/core/element_view.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/overlap.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"

namespace polyattn {

// ---- argument structs ---------------------------------------------------------------------

struct BasedHybridInputs {
  EView4 q, k;                               // softmax branch [B, T, H, D]
  EView4 v;                                  // shared values [B, T, H, V]
  EView4 lin_q, lin_k;                       // optional Based branch [B, T, H, K]; default q, k
  std::span<const std::int64_t> cu_seqlens;  // optional varlen [N+1], B == 1
};
struct BasedHybridOptions {
  index_t window = 0;                   // required, > 0
  std::optional<double> based_scale;    // default K^-0.5
  std::optional<double> softmax_scale;  // default D^-0.5
  double eps = 1e-6;                    // Based denominator eps
};

struct LolcatsInputs {
  EView4 q, k;                               // softmax (window) branch [B, T, H, D]
  EView4 v;                                  // [B, T, H, V]
  EView4 phi_q, phi_k;                       // feature-mapped q, k [B, T, H, F] (required)
  std::span<const std::int64_t> cu_seqlens;  // optional varlen [N+1], B == 1
};
struct LolcatsOptions {
  index_t window = 0;           // required, > 0
  std::optional<double> scale;  // softmax scale, default D^-0.5
  double window_factor = 1.0;   // γ > 0
};

struct LigerInputs {
  EView4 q, k;                               // softmax branch [B, T, H, D]
  EView4 v;                                  // shared values [B, T, H, V]
  EView4 lin_q, lin_k;                       // optional GLA branch [B, T, H, K]; default q, k
  View3<const float> g;                      // scalar log-gate [B, T, H]      } exactly
  View4<const float> gk;                     // vector log-gate [B, T, H, K]   } one of these
  std::span<const std::int64_t> cu_seqlens;  // optional varlen [N+1], B == 1
};
struct LigerOptions {
  index_t window = 0;                   // required, > 0
  double alpha = 0.5;                   // weight of the GLA output
  double beta = 0.5;                    // weight of the sliding-window output
  std::optional<double> gla_scale;      // default K^-0.5
  std::optional<double> softmax_scale;  // default D^-0.5
};

struct AgentInputs {
  EView4 q;       // [B, T, H, D]
  EView4 k;       // [B, S, H, D]
  EView4 v;       // [B, S, H, V]
  EView4 agents;  // [B, n, H, D]; with cu_seqlens [N, n, H, D]
  // Optional varlen [N+1]: N sequences packed along T (B == 1, S == T: each sequence's queries
  // are its own context tokens); sequence i uses agents row i and sees only its own keys.
  std::span<const std::int64_t> cu_seqlens;
};
struct AgentOptions {
  std::optional<double> scale;  // both softmaxes, default D^-0.5
};

// ---- resolved sizes -------------------------------------------------------------------------

struct HybridDims {
  index_t B = 0, T = 0, H = 0, D = 0, V = 0;
};

struct BasedHybridDims : HybridDims {
  EView4 lin_q, lin_k;  // the Based branch's q, k (lin_q/lin_k or q/k)
  index_t K = 0;        // their feature dim
  double based_scale = 1.0, softmax_scale = 1.0;
};
struct LolcatsDims : HybridDims {
  index_t F = 0;  // feature dim of phi_q / phi_k
  double scale = 1.0, gamma = 1.0;
};
struct LigerDims : HybridDims {
  EView4 lin_q, lin_k;
  index_t K = 0;
  bool vector_gate = false;  // gk given (else g)
  double gla_scale = 1.0, softmax_scale = 1.0;
};
struct AgentDims {
  index_t B = 0, T = 0, S = 0, H = 0, D = 0, V = 0, n = 0;
  index_t N = 0;  // sequences: B, or len(cu_seqlens) − 1
  double scale = 1.0;
};

namespace detail::hybrid_args {

// q, k [B,T,H,D] and v [B,T,H,V] of a causal hybrid.
inline HybridDims check_causal_qkv(const EView4& q, const EView4& k, const EView4& v) {
  check::required("q", q);
  check::required("k", k);
  check::required("v", v);
  HybridDims d{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3)};
  check::shape_is("k", k, q.shape(), "same as q");
  check::shape_is("v", v, {d.B, d.T, d.H, d.V}, "[B, T, H, V] from q");
  return d;
}

// An optional [B,T,H,·] tensor; returns its last dim (or `fallback` when absent).
inline index_t check_bth(std::string_view name, const EView4& x, const HybridDims& d,
                         index_t fallback, bool required) {
  check::well_formed(name, x);  // rejects null data with a non-empty shape
  if (x.absent()) {
    if (required) check::required(name, x);
    return fallback;
  }
  check::shape_is(name, x, {d.B, d.T, d.H, x.size(3)}, "[B, T, H, ·] from q");
  return x.size(3);
}

inline void check_window(index_t w) {
  if (w <= 0) throw Error("window", "must be positive, got " + std::to_string(w));
}

inline double resolve_scale(std::string_view name, const std::optional<double>& s, index_t dim) {
  if (s) {
    check::finite_positive(name, *s);
    return *s;
  }
  return dim > 0 ? 1.0 / std::sqrt(static_cast<double>(dim)) : 1.0;
}

inline void check_finite(std::string_view name, double x) {
  if (!std::isfinite(x)) throw Error(name, "must be finite, got " + std::to_string(x));
}

// The given activations (name, view) have q's element type (module comment).
inline void same_type_as_q(const EView4& q,
                           std::initializer_list<std::pair<std::string_view, EView4>> xs) {
  for (const auto& [name, x] : xs)
    if (!x.absent() && x.dtype() != q.dtype())
      throw Error(name, std::string("is ") + std::string(dtype_name(x.dtype())) + " but q is " +
                            std::string(dtype_name(q.dtype())) +
                            ": q, k, v and the hybrid's other activations must have the same "
                            "element type (its linear branch takes one)");
}

template <StridedView O>
void check_out(const O& o, const std::array<index_t, 4>& want) {
  check::required("o", o);
  check::shape_is("o", o, want, "[B, T, H, V] from q and v");
}

// The linear branch's q/k (lin_q/lin_k, defaulting to q/k), validated; K is their feature dim.
struct LinearQK {
  EView4 q, k;
  index_t K;
};
inline LinearQK linear_qk(const EView4& q, const EView4& k, const EView4& lin_q,
                          const EView4& lin_k, const HybridDims& d) {
  LinearQK r{lin_q.absent() ? q : lin_q, lin_k.absent() ? k : lin_k, 0};
  r.K = check_bth("lin_q", lin_q, d, d.D, false);
  check_bth("lin_k", lin_k, d, d.D, false);
  check::shape_is("lin_k", r.k, r.q.shape(), "same as lin_q (default q)");
  return r;
}

}  // namespace detail::hybrid_args

// ---- validation -----------------------------------------------------------------------------

template <StridedView O>
BasedHybridDims validate_based_hybrid(const BasedHybridInputs& in, const BasedHybridOptions& opt,
                                      const O& o) {
  namespace h = detail::hybrid_args;
  BasedHybridDims r;
  static_cast<HybridDims&>(r) = h::check_causal_qkv(in.q, in.k, in.v);
  const auto qk = h::linear_qk(in.q, in.k, in.lin_q, in.lin_k, r);
  r.lin_q = qk.q;
  r.lin_k = qk.k;
  r.K = qk.K;
  h::same_type_as_q(in.q, {{"k", in.k}, {"v", in.v}, {"lin_q", in.lin_q}, {"lin_k", in.lin_k}});
  check::cu_seqlens("cu_seqlens", in.cu_seqlens, r.B, r.T);
  h::check_out(o, {r.B, r.T, r.H, r.V});
  h::check_window(opt.window);
  r.based_scale = h::resolve_scale("based_scale", opt.based_scale, r.K);
  r.softmax_scale = h::resolve_scale("softmax_scale", opt.softmax_scale, r.D);
  if (!(opt.eps >= 0.0) || std::isinf(opt.eps))
    throw Error("eps", "must be finite and >= 0, got " + std::to_string(opt.eps));
  check::writes_disjoint(
      {memory::region("o", o)},
      {memory::region("q", in.q), memory::region("k", in.k), memory::region("v", in.v),
       memory::region("lin_q", in.lin_q), memory::region("lin_k", in.lin_k)});
  return r;
}

template <StridedView O>
LolcatsDims validate_lolcats(const LolcatsInputs& in, const LolcatsOptions& opt, const O& o) {
  namespace h = detail::hybrid_args;
  LolcatsDims r;
  static_cast<HybridDims&>(r) = h::check_causal_qkv(in.q, in.k, in.v);
  r.F = h::check_bth("phi_q", in.phi_q, r, 0, true);
  h::check_bth("phi_k", in.phi_k, r, 0, true);
  check::shape_is("phi_k", in.phi_k, in.phi_q.shape(), "same as phi_q");
  h::same_type_as_q(in.q, {{"k", in.k}, {"v", in.v}, {"phi_q", in.phi_q}, {"phi_k", in.phi_k}});
  check::cu_seqlens("cu_seqlens", in.cu_seqlens, r.B, r.T);
  h::check_out(o, {r.B, r.T, r.H, r.V});
  h::check_window(opt.window);
  r.scale = h::resolve_scale("scale", opt.scale, r.D);
  check::finite_positive("window_factor", opt.window_factor);
  r.gamma = opt.window_factor;
  check::writes_disjoint(
      {memory::region("o", o)},
      {memory::region("q", in.q), memory::region("k", in.k), memory::region("v", in.v),
       memory::region("phi_q", in.phi_q), memory::region("phi_k", in.phi_k)});
  return r;
}

template <StridedView O>
LigerDims validate_liger(const LigerInputs& in, const LigerOptions& opt, const O& o) {
  namespace h = detail::hybrid_args;
  LigerDims r;
  static_cast<HybridDims&>(r) = h::check_causal_qkv(in.q, in.k, in.v);
  const auto qk = h::linear_qk(in.q, in.k, in.lin_q, in.lin_k, r);
  r.lin_q = qk.q;
  r.lin_k = qk.k;
  r.K = qk.K;
  h::same_type_as_q(in.q, {{"k", in.k}, {"v", in.v}, {"lin_q", in.lin_q}, {"lin_k", in.lin_k}});
  check::well_formed("g", in.g);
  check::well_formed("gk", in.gk);
  if (in.g.absent() == in.gk.absent())
    throw Error(in.g.absent() ? "g" : "gk",
                in.g.absent() ? "a gate is required: give g [B,T,H] or gk [B,T,H,K]"
                              : "give only one of g [B,T,H] and gk [B,T,H,K]");
  r.vector_gate = in.g.absent();
  if (!r.vector_gate) {
    check::shape_is("g", in.g, {r.B, r.T, r.H}, "[B, T, H] from q");
  } else {
    check::shape_is("gk", in.gk, {r.B, r.T, r.H, r.K}, "[B, T, H, K] from q and lin_q");
  }
  check::cu_seqlens("cu_seqlens", in.cu_seqlens, r.B, r.T);
  h::check_out(o, {r.B, r.T, r.H, r.V});
  h::check_window(opt.window);
  h::check_finite("alpha", opt.alpha);
  h::check_finite("beta", opt.beta);
  r.gla_scale = h::resolve_scale("gla_scale", opt.gla_scale, r.K);
  r.softmax_scale = h::resolve_scale("softmax_scale", opt.softmax_scale, r.D);
  check::writes_disjoint(
      {memory::region("o", o)},
      {memory::region("q", in.q), memory::region("k", in.k), memory::region("v", in.v),
       memory::region("lin_q", in.lin_q), memory::region("lin_k", in.lin_k),
       memory::region("g", in.g), memory::region("gk", in.gk)});
  return r;
}

template <StridedView O>
AgentDims validate_agent(const AgentInputs& in, const AgentOptions& opt, const O& o) {
  check::required("q", in.q);
  check::required("k", in.k);
  check::required("v", in.v);
  check::required("agents", in.agents);
  AgentDims r;
  r.B = in.q.size(0);
  r.T = in.q.size(1);
  r.H = in.q.size(2);
  r.D = in.q.size(3);
  r.S = in.k.size(1);
  r.V = in.v.size(3);
  r.n = in.agents.size(1);
  r.N = check::cu_seqlens("cu_seqlens", in.cu_seqlens, r.B, r.T);
  if (in.cu_seqlens.empty())
    check::shape_is("k", in.k, {r.B, r.S, r.H, r.D}, "batch, heads and head dim of q");
  else
    check::shape_is("k", in.k, {r.B, r.T, r.H, r.D},
                    "[1, T, H, D] with cu_seqlens: packed with q (S == T)");
  check::shape_is("v", in.v, {r.B, r.S, r.H, r.V}, "[B, S, H, V] from k");
  check::shape_is("agents", in.agents, {r.N, r.n, r.H, r.D},
                  in.cu_seqlens.empty() ? "[B, n, H, D] from q"
                                        : "[N, n, H, D]: one row per sequence of cu_seqlens");
  check::required("o", o);
  check::shape_is("o", o, {r.B, r.T, r.H, r.V}, "[B, T, H, V] from q and v");
  r.scale = detail::hybrid_args::resolve_scale("scale", opt.scale, r.D);
  check::writes_disjoint({memory::region("o", o)},
                         {memory::region("q", in.q), memory::region("k", in.k),
                          memory::region("v", in.v), memory::region("agents", in.agents)});
  return r;
}

}  // namespace polyattn
