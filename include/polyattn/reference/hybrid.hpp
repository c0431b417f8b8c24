// polyattn/reference/hybrid.hpp — naive double-precision references of the hybrid combiners
// (SPEC §4), each written directly from its formula. Per (sequence, head), position p, causal
// sliding window W_p = [p − w + 1, p] (clipped at 0), outside O_p = [0, p − w]:
//
//   based_hybrid:  o = Based(lin_q, lin_k, v)  +  SWA_w(q, k, v)        (two normalised outputs)
//   lolcats:       s_pj = scale·q_p·k_j,  m_p = max_{j∈W_p} s_pj
//                  o_p = (γ Σ_{W_p} e^{s_pj − m_p} v_j + Σ_{O_p} (φq_p·φk_j) v_j)
//                      / (γ Σ_{W_p} e^{s_pj − m_p}     + Σ_{O_p}  φq_p·φk_j)
//   liger:         o = α · GLA(lin_q, lin_k, v, g | gk)  +  β · SWA_w(q, k, v)
//                  GLA un-normalised: S_t = Decay_t(S_{t−1}) + k_t v_tᵀ, o_t = S_tᵀ(scale·q_t),
//                  decay exp(g_t) (scalar) or diag(exp(gk_t)) (vector), S_0 = 0
//   agent:         o = softmax(scale·Q Aᵀ) · (softmax(scale·A Kᵀ) V)   (non-causal, per head)
//
// SWA_w is causal sliding-window softmax attention (reference::softmax_attention with causal and
// window w). Based is reference::based_attention. lin_q / lin_k are the linear branch's queries
// and keys (default: q and k). Every argument is validated before any output is written.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "polyattn/args/linear.hpp"
#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"
#include "polyattn/reference/based.hpp"
#include "polyattn/reference/linear.hpp"
#include "polyattn/reference/softmax.hpp"

namespace polyattn::reference {

// ---- argument structs ---------------------------------------------------------------------

struct BasedHybridInputs {
  View4<const float> q, k;                   // softmax branch [B, T, H, D]
  View4<const float> v;                      // shared values [B, T, H, V]
  View4<const float> lin_q, lin_k;           // optional Based branch [B, T, H, K]; default q, k
  std::span<const std::int64_t> cu_seqlens;  // optional varlen [N+1], B == 1
};
struct BasedHybridOptions {
  index_t window = 0;                   // required, > 0
  std::optional<double> based_scale;    // default K^-0.5
  std::optional<double> softmax_scale;  // default D^-0.5
  double eps = 1e-6;                    // Based denominator eps
};

struct LolcatsInputs {
  View4<const float> q, k;                   // softmax (window) branch [B, T, H, D]
  View4<const float> v;                      // [B, T, H, V]
  View4<const float> phi_q, phi_k;           // feature-mapped q, k [B, T, H, F] (required)
  std::span<const std::int64_t> cu_seqlens;  // optional varlen [N+1], B == 1
};
struct LolcatsOptions {
  index_t window = 0;           // required, > 0
  std::optional<double> scale;  // softmax scale, default D^-0.5
  double window_factor = 1.0;   // γ > 0
};

struct LigerInputs {
  View4<const float> q, k;                   // softmax branch [B, T, H, D]
  View4<const float> v;                      // shared values [B, T, H, V]
  View4<const float> lin_q, lin_k;           // optional GLA branch [B, T, H, K]; default q, k
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
  View4<const float> q;       // [B, T, H, D]
  View4<const float> k;       // [B, S, H, D]
  View4<const float> v;       // [B, S, H, V]
  View4<const float> agents;  // [B, n, H, D]
};
struct AgentOptions {
  std::optional<double> scale;  // both softmaxes, default D^-0.5
};

namespace detail {

struct HybridDims {
  index_t B = 0, T = 0, H = 0, D = 0, V = 0;
};

// q, k [B,T,H,D] and v [B,T,H,V] of a causal hybrid.
inline HybridDims check_causal_qkv(const View4<const float>& q, const View4<const float>& k,
                                   const View4<const float>& v) {
  check::required("q", q);
  check::required("k", k);
  check::required("v", v);
  HybridDims d{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3)};
  check::shape_is("k", k, q.shape(), "same as q");
  check::shape_is("v", v, {d.B, d.T, d.H, d.V}, "[B, T, H, V] from q");
  return d;
}

// An optional [B,T,H,·] tensor; returns its last dim (or `fallback` when absent).
inline index_t check_bth(std::string_view name, const View4<const float>& x, const HybridDims& d,
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

template <class Out>
void check_out(const TensorView<Out, 4>& o, const std::array<index_t, 4>& want) {
  check::required("o", o);
  check::shape_is("o", o, want, "[B, T, H, V] from q and v");
}

// Causal sliding-window softmax of q, k, v into a double [B,T,H,V] buffer (already validated).
inline std::vector<double> swa(const View4<const float>& q, const View4<const float>& k,
                               const View4<const float>& v, std::span<const std::int64_t> cu,
                               index_t window, double scale, const HybridDims& d) {
  std::vector<double> buf(static_cast<std::size_t>(d.B * d.T * d.H * d.V));
  SoftmaxInputs in;
  in.q = q;
  in.k = k;
  in.v = v;
  in.cu_seqlens = cu;
  SoftmaxOptions opt;
  opt.scale = scale;
  opt.causal = true;
  opt.window = window;
  softmax_attention(in, opt, View4<double>::contiguous(buf.data(), {d.B, d.T, d.H, d.V}));
  return buf;
}

// The linear branch's q/k (lin_q/lin_k, defaulting to q/k), validated; K is their feature dim.
struct LinearQK {
  View4<const float> q, k;
  index_t K;
};
inline LinearQK linear_qk(const View4<const float>& q, const View4<const float>& k,
                          const View4<const float>& lin_q, const View4<const float>& lin_k,
                          const HybridDims& d) {
  LinearQK r{lin_q.absent() ? q : lin_q, lin_k.absent() ? k : lin_k, 0};
  r.K = check_bth("lin_q", lin_q, d, d.D, false);
  check_bth("lin_k", lin_k, d, d.D, false);
  check::shape_is("lin_k", r.k, r.q.shape(), "same as lin_q (default q)");
  return r;
}

}  // namespace detail

// ---- based_hybrid ---------------------------------------------------------------------------

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void based_hybrid(const BasedHybridInputs& in, const BasedHybridOptions& opt, TensorView<Out, 4> o) {
  const detail::HybridDims d = detail::check_causal_qkv(in.q, in.k, in.v);
  const auto [lq, lk, K] = detail::linear_qk(in.q, in.k, in.lin_q, in.lin_k, d);
  check::cu_seqlens("cu_seqlens", in.cu_seqlens, d.B, d.T);
  detail::check_out(o, {d.B, d.T, d.H, d.V});
  detail::check_window(opt.window);
  const double bscale = detail::resolve_scale("based_scale", opt.based_scale, K);
  const double sscale = detail::resolve_scale("softmax_scale", opt.softmax_scale, d.D);
  if (!(opt.eps >= 0.0) || std::isinf(opt.eps))
    throw Error("eps", "must be finite and >= 0, got " + std::to_string(opt.eps));

  // Based (Taylor linear) branch, normalised.
  std::vector<double> lin(static_cast<std::size_t>(d.B * d.T * d.H * d.V));
  BasedInputs bin{lq, lk, in.v, in.cu_seqlens};
  BasedOptions bopt;
  bopt.scale = bscale;
  bopt.eps = opt.eps;
  based_attention(bin, bopt, View4<double>::contiguous(lin.data(), {d.B, d.T, d.H, d.V}));
  // Sliding-window softmax branch, normalised.
  const std::vector<double> win =
      detail::swa(in.q, in.k, in.v, in.cu_seqlens, opt.window, sscale, d);

  std::size_t idx = 0;
  for (index_t b = 0; b < d.B; ++b)
    for (index_t t = 0; t < d.T; ++t)
      for (index_t h = 0; h < d.H; ++h)
        for (index_t e = 0; e < d.V; ++e, ++idx) o(b, t, h, e) = static_cast<Out>(lin[idx] + win[idx]);
}

// ---- lolcats --------------------------------------------------------------------------------

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void lolcats(const LolcatsInputs& in, const LolcatsOptions& opt, TensorView<Out, 4> o) {
  const detail::HybridDims d = detail::check_causal_qkv(in.q, in.k, in.v);
  const index_t F = detail::check_bth("phi_q", in.phi_q, d, 0, true);
  detail::check_bth("phi_k", in.phi_k, d, 0, true);
  check::shape_is("phi_k", in.phi_k, in.phi_q.shape(), "same as phi_q");
  check::cu_seqlens("cu_seqlens", in.cu_seqlens, d.B, d.T);
  detail::check_out(o, {d.B, d.T, d.H, d.V});
  detail::check_window(opt.window);
  const double scale = detail::resolve_scale("scale", opt.scale, d.D);
  check::finite_positive("window_factor", opt.window_factor);
  const double gamma = opt.window_factor;

  const double ninf = -std::numeric_limits<double>::infinity();
  std::vector<double> num(static_cast<std::size_t>(d.V));
  for (const Segment& sg : segments(d.B, d.T, in.cu_seqlens)) {
    const index_t b = sg.batch;
    for (index_t h = 0; h < d.H; ++h) {
      for (index_t p = 0; p < sg.length; ++p) {
        const index_t tp = sg.begin + p;
        const index_t w0 = std::max<index_t>(0, p - opt.window + 1);  // W_p = [w0, p]
        auto s = [&](index_t j) {
          double dot = 0.0;
          for (index_t c = 0; c < d.D; ++c)
            dot += static_cast<double>(in.q(b, tp, h, c)) *
                   static_cast<double>(in.k(b, sg.begin + j, h, c));
          return scale * dot;
        };
        auto lin = [&](index_t j) {
          double dot = 0.0;
          for (index_t c = 0; c < F; ++c)
            dot += static_cast<double>(in.phi_q(b, tp, h, c)) *
                   static_cast<double>(in.phi_k(b, sg.begin + j, h, c));
          return dot;
        };
        double m = ninf;
        for (index_t j = w0; j <= p; ++j) m = std::max(m, s(j));

        std::fill(num.begin(), num.end(), 0.0);
        double den = 0.0;
        for (index_t j = 0; j <= p; ++j) {
          const double a = j >= w0 ? gamma * std::exp(s(j) - m) : lin(j);
          den += a;
          for (index_t e = 0; e < d.V; ++e)
            num[static_cast<std::size_t>(e)] += a * static_cast<double>(in.v(b, sg.begin + j, h, e));
        }
        for (index_t e = 0; e < d.V; ++e)
          o(b, tp, h, e) = static_cast<Out>(num[static_cast<std::size_t>(e)] / den);
      }
    }
  }
}

// ---- liger ----------------------------------------------------------------------------------

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void liger(const LigerInputs& in, const LigerOptions& opt, TensorView<Out, 4> o) {
  const detail::HybridDims d = detail::check_causal_qkv(in.q, in.k, in.v);
  const auto [lq, lk, K] = detail::linear_qk(in.q, in.k, in.lin_q, in.lin_k, d);
  check::well_formed("g", in.g);
  check::well_formed("gk", in.gk);
  if (in.g.absent() == in.gk.absent())
    throw Error(in.g.absent() ? "g" : "gk",
                in.g.absent() ? "a gate is required: give g [B,T,H] or gk [B,T,H,K]"
                              : "give only one of g [B,T,H] and gk [B,T,H,K]");
  if (!in.g.absent()) {
    check::shape_is("g", in.g, {d.B, d.T, d.H}, "[B, T, H] from q");
  } else {
    check::shape_is("gk", in.gk, {d.B, d.T, d.H, K}, "[B, T, H, K] from q and lin_q");
  }
  check::cu_seqlens("cu_seqlens", in.cu_seqlens, d.B, d.T);
  detail::check_out(o, {d.B, d.T, d.H, d.V});
  detail::check_window(opt.window);
  detail::check_finite("alpha", opt.alpha);
  detail::check_finite("beta", opt.beta);
  const double gscale = detail::resolve_scale("gla_scale", opt.gla_scale, K);
  const double sscale = detail::resolve_scale("softmax_scale", opt.softmax_scale, d.D);

  const std::size_t n = static_cast<std::size_t>(d.B * d.T * d.H * d.V);
  // Gated linear branch (un-normalised): the linear-family recurrence with a scalar or vector
  // decay, additive update, no normaliser, zero initial state.
  std::vector<double> gla(n);
  if (n > 0 && K > 0) {  // K == 0: the GLA output is exactly zero
    LinearInputs lin;
    lin.q = lq;
    lin.k = lk;
    lin.v = in.v;
    lin.g = in.g;
    lin.gk = in.gk;
    lin.cu_seqlens = in.cu_seqlens;
    LinearOptions lopt;
    lopt.decay = in.g.absent() ? Decay::VectorPerToken : Decay::ScalarPerToken;
    lopt.update = Update::Additive;
    lopt.normalizer = Normalizer::None;
    lopt.scale = gscale;
    LinearOutputs<double> lout;
    lout.o = View4<double>::contiguous(gla.data(), {d.B, d.T, d.H, d.V});
    linear_recurrence(lin, lopt, lout);
  }
  // Sliding-window softmax branch.
  const std::vector<double> win =
      detail::swa(in.q, in.k, in.v, in.cu_seqlens, opt.window, sscale, d);

  std::size_t idx = 0;
  for (index_t b = 0; b < d.B; ++b)
    for (index_t t = 0; t < d.T; ++t)
      for (index_t h = 0; h < d.H; ++h)
        for (index_t e = 0; e < d.V; ++e, ++idx)
          o(b, t, h, e) = static_cast<Out>(opt.alpha * gla[idx] + opt.beta * win[idx]);
}

// ---- agent attention ------------------------------------------------------------------------

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void agent_attention(const AgentInputs& in, const AgentOptions& opt, TensorView<Out, 4> o) {
  check::required("q", in.q);
  check::required("k", in.k);
  check::required("v", in.v);
  check::required("agents", in.agents);
  const index_t B = in.q.size(0), T = in.q.size(1), H = in.q.size(2), D = in.q.size(3);
  const index_t S = in.k.size(1), V = in.v.size(3), n = in.agents.size(1);
  check::shape_is("k", in.k, {B, S, H, D}, "batch, heads and head dim of q");
  check::shape_is("v", in.v, {B, S, H, V}, "[B, S, H, V] from k");
  check::shape_is("agents", in.agents, {B, n, H, D}, "[B, n, H, D] from q");
  check::required("o", o);
  check::shape_is("o", o, {B, T, H, V}, "[B, T, H, V] from q and v");
  const double scale = detail::resolve_scale("scale", opt.scale, D);

  // softmax over a row of logits (zeros for an empty row).
  auto softmax = [](std::vector<double>& x) {
    if (x.empty()) return;
    double m = -std::numeric_limits<double>::infinity();
    for (double e : x)
      if (e > m) m = e;
    double sum = 0.0;
    for (double& e : x) sum += (e = std::exp(e - m));
    for (double& e : x) e /= sum;
  };

  std::vector<double> av(static_cast<std::size_t>(n * V)), row, acc(static_cast<std::size_t>(V));
  for (index_t b = 0; b < B; ++b) {
    for (index_t h = 0; h < H; ++h) {
      // Agent values: AV_a = Σ_j softmax_j(scale·A_a·K_j) V_j.
      for (index_t a = 0; a < n; ++a) {
        row.assign(static_cast<std::size_t>(S), 0.0);
        for (index_t j = 0; j < S; ++j) {
          double dot = 0.0;
          for (index_t c = 0; c < D; ++c)
            dot += static_cast<double>(in.agents(b, a, h, c)) * static_cast<double>(in.k(b, j, h, c));
          row[static_cast<std::size_t>(j)] = scale * dot;
        }
        softmax(row);
        for (index_t e = 0; e < V; ++e) {
          double s = 0.0;
          for (index_t j = 0; j < S; ++j)
            s += row[static_cast<std::size_t>(j)] * static_cast<double>(in.v(b, j, h, e));
          av[static_cast<std::size_t>(a * V + e)] = s;
        }
      }
      // Queries attend to agents: o_i = Σ_a softmax_a(scale·Q_i·A_a) AV_a.
      for (index_t i = 0; i < T; ++i) {
        row.assign(static_cast<std::size_t>(n), 0.0);
        for (index_t a = 0; a < n; ++a) {
          double dot = 0.0;
          for (index_t c = 0; c < D; ++c)
            dot += static_cast<double>(in.q(b, i, h, c)) * static_cast<double>(in.agents(b, a, h, c));
          row[static_cast<std::size_t>(a)] = scale * dot;
        }
        softmax(row);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (index_t a = 0; a < n; ++a)
          for (index_t e = 0; e < V; ++e)
            acc[static_cast<std::size_t>(e)] +=
                row[static_cast<std::size_t>(a)] * av[static_cast<std::size_t>(a * V + e)];
        for (index_t e = 0; e < V; ++e) o(b, i, h, e) = static_cast<Out>(acc[static_cast<std::size_t>(e)]);
      }
    }
  }
}

}  // namespace polyattn::reference
