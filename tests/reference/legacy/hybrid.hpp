// tests/reference/legacy/hybrid.hpp — frozen copy of include/polyattn/reference/hybrid.hpp as of faca67a
// (namespace reference_legacy), kept only while test_reference_parity compares the Eigen rewrite
// with it.
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
// and keys (default: q and k). Every argument is validated (polyattn/args/hybrid.hpp, shared with
// the fast operators of polyattn/hybrid/) before any output is written.
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

#include "polyattn/args/hybrid.hpp"
#include "polyattn/args/linear.hpp"
#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"
#include "reference/legacy/based.hpp"
#include "reference/legacy/linear.hpp"
#include "reference/legacy/softmax.hpp"

namespace polyattn::reference_legacy {

// ---- argument structs (polyattn/args/hybrid.hpp) -------------------------------------------

using polyattn::AgentInputs;
using polyattn::AgentOptions;
using polyattn::BasedHybridInputs;
using polyattn::BasedHybridOptions;
using polyattn::LigerInputs;
using polyattn::LigerOptions;
using polyattn::LolcatsInputs;
using polyattn::LolcatsOptions;

namespace detail {

using HybridDims = polyattn::HybridDims;

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

}  // namespace detail

// ---- based_hybrid ---------------------------------------------------------------------------

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void based_hybrid(const BasedHybridInputs& in, const BasedHybridOptions& opt, TensorView<Out, 4> o) {
  const BasedHybridDims d = validate_based_hybrid(in, opt, o);
  const View4<const float> lq = d.lin_q, lk = d.lin_k;
  const double bscale = d.based_scale, sscale = d.softmax_scale;

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
  const LolcatsDims d = validate_lolcats(in, opt, o);
  const index_t F = d.F;
  const double scale = d.scale, gamma = d.gamma;

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
  const LigerDims d = validate_liger(in, opt, o);
  const View4<const float> lq = d.lin_q, lk = d.lin_k;
  const index_t K = d.K;
  const double gscale = d.gla_scale, sscale = d.softmax_scale;

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
  const AgentDims ad = validate_agent(in, opt, o);
  const index_t B = ad.B, T = ad.T, H = ad.H, D = ad.D, S = ad.S, V = ad.V, n = ad.n;
  const double scale = ad.scale;

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

}  // namespace polyattn::reference_legacy
