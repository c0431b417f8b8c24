// polyattn/reference/hybrid.hpp — naive double-precision references of the hybrid combiners
// (docs/conventions.md §7), each written directly from its formula. Per (sequence, head), position
// p, causal sliding window W_p = [p − w + 1, p] (clipped at 0), outside O_p = [0, p − w]:
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
// the fast operators of polyattn/hybrid/) before any output is written; bf16 / fp16 inputs are
// widened exactly (the reference of a typed call is the same call on the widened values). Eigen
// in double, one query row (lolcats) or one head (agent) at a time: no tiling, no chunking.
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
#include "polyattn/reference/based.hpp"
#include "polyattn/reference/linear.hpp"
#include "polyattn/reference/softmax.hpp"

namespace polyattn::reference {

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
inline std::vector<double> swa(const EView4& q, const EView4& k, const EView4& v,
                               std::span<const std::int64_t> cu, index_t window, double scale,
                               const HybridDims& d) {
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
void based_hybrid(const BasedHybridInputs& in, const BasedHybridOptions& opt,
                  TensorView<Out, 4> o) {
  const BasedHybridDims d = validate_based_hybrid(in, opt, o);
  const EView4 lq = d.lin_q, lk = d.lin_k;
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
        for (index_t e = 0; e < d.V; ++e, ++idx)
          o(b, t, h, e) = static_cast<Out>(lin[idx] + win[idx]);
}

// ---- lolcats --------------------------------------------------------------------------------

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void lolcats(const LolcatsInputs& in, const LolcatsOptions& opt, TensorView<Out, 4> o) {
  using detail::Arr;
  using detail::RowMat;
  using detail::Vec;
  const LolcatsDims d = validate_lolcats(in, opt, o);

  for (const Segment& sg : segments(d.B, d.T, in.cu_seqlens)) {
    const index_t b = sg.batch, L = sg.length;
    for (index_t h = 0; h < d.H; ++h) {
      const RowMat Q = detail::rows(in.q, b, sg.begin, L, h).cast<double>();
      const RowMat K = detail::rows(in.k, b, sg.begin, L, h).cast<double>();
      const RowMat V = detail::rows(in.v, b, sg.begin, L, h).cast<double>();
      const RowMat PQ = detail::rows(in.phi_q, b, sg.begin, L, h).cast<double>();
      const RowMat PK = detail::rows(in.phi_k, b, sg.begin, L, h).cast<double>();
      for (index_t p = 0; p < L; ++p) {
        const index_t w0 = std::max<index_t>(0, p - opt.window + 1), nw = p + 1 - w0;  // W_p
        // Window W_p = [w0, p]: softmax weights γ e^{s − m}.
        const Arr s = d.scale * (K.middleRows(w0, nw) * Q.row(p).transpose()).array();
        const Arr win = d.gamma * detail::std_exp(s - s.maxCoeff());
        // Outside O_p = [0, w0): linear weights φq_p·φk_j.
        const Arr lin = (PK.topRows(w0) * PQ.row(p).transpose()).array();
        const Vec num = V.middleRows(w0, nw).transpose() * win.matrix() +
                        V.topRows(w0).transpose() * lin.matrix();
        detail::store(o, b, sg.begin + p, h, num / (win.sum() + lin.sum()));
      }
    }
  }
}

// ---- liger ----------------------------------------------------------------------------------

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void liger(const LigerInputs& in, const LigerOptions& opt, TensorView<Out, 4> o) {
  const LigerDims d = validate_liger(in, opt, o);
  const EView4 lq = d.lin_q, lk = d.lin_k;
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

namespace detail {

// Row-wise stable softmax: row ← exp(row − max(row)) / Σ exp(row − max(row)).
inline RowMat softmax_rows(RowMat X) {
  for (Eigen::Index r = 0; r < X.rows(); ++r) {
    if (X.cols() == 0) break;
    const Arr e = std_exp(X.row(r).array() - X.row(r).maxCoeff());
    X.row(r) = (e / e.sum()).matrix().transpose();
  }
  return X;
}

}  // namespace detail

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void agent_attention(const AgentInputs& in, const AgentOptions& opt, TensorView<Out, 4> o) {
  using detail::RowMat;
  const AgentDims d = validate_agent(in, opt, o);

  // Sequence i: batch row i, or packed rows [cu[i], cu[i+1]) of row 0 (queries = context).
  for (index_t i = 0; i < d.N; ++i) {
    const bool varlen = !in.cu_seqlens.empty();
    const index_t b = varlen ? 0 : i;
    const index_t q0 = varlen ? in.cu_seqlens[static_cast<std::size_t>(i)] : 0;
    const index_t q1 = varlen ? in.cu_seqlens[static_cast<std::size_t>(i) + 1] : d.T;
    const index_t s0 = varlen ? q0 : 0, s1 = varlen ? q1 : d.S;
    for (index_t h = 0; h < d.H; ++h) {
      const RowMat Q = detail::rows(in.q, b, q0, q1 - q0, h).cast<double>();  // [T × D]
      const RowMat K = detail::rows(in.k, b, s0, s1 - s0, h).cast<double>();  // [S × D]
      const RowMat V = detail::rows(in.v, b, s0, s1 - s0, h).cast<double>();  // [S × V]
      const RowMat A = detail::rows(in.agents, i, 0, d.n, h).cast<double>();  // [n × D]
      // Agents attend to the keys, then the queries attend to the agents.
      const RowMat AV = detail::softmax_rows(d.scale * (A * K.transpose())) * V;  // [n × V]
      const RowMat O = detail::softmax_rows(d.scale * (Q * A.transpose())) * AV;  // [T × V]
      for (index_t r = q0; r < q1; ++r) detail::store(o, b, r, h, O.row(r - q0).transpose());
    }
  }
}

}  // namespace polyattn::reference
