// polyattn/hybrid/agent.hpp — agent attention (Han et al. 2024): n agent tokens A first gather
// from the keys, then the queries read from the agents. Per (batch, head), non-causal:
//
//   AV = softmax(scale · A Kᵀ) V          [n, V]   (agents attend to all S keys)
//   o  = softmax(scale · Q Aᵀ) AV         [T, V]   (queries attend to the n agents)
//
// (reference::agent_attention; scale defaults to D^-½; n = 0 or S = 0 give zeros.)
//   agent_attention(in, opt, o, exec)   two flash_attention calls (non-causal), exact up to
//                                       fp32 rounding; cost O((T + S)·n·(D + V)). Varlen:
//                                       cu_seqlens packs N sequences along T (S == T, each
//                                       sequence's queries are its own context), agents
//                                       [N, n, H, D]; each sequence runs as a call of its own.
//
// Decode. Agent attention is not causal: every output row depends on every key, so a prefill
// row has no causal decode counterpart. AgentDecoder defines decode as agent attention over the
// PREFIX seen so far: step() appends the token's (k, v) to the context and answers its query
//   o_t = softmax(scale · q_t Aᵀ) · AV_t,   AV_t = softmax(scale · A K_{≤t}ᵀ) V_{≤t},
// i.e. the last row of agent_attention(q_{≤t}, K_{≤t}, V_{≤t}) — "decode == last row of a prefill
// over the tokens so far", the same rule as every other decoder. AV_t is kept exactly as an
// online softmax per agent (running max m_a, sum l_a, numerator O_a, in double), so a step costs
// O(n·(D + V)) per head, independent of t, and memory is O(n·V) per head; no KV cache. The agents
// are fixed per sequence (given at construction): models that pool agents from the queries
// must recompute them, which has no incremental form. prefill(q, k, v) absorbs S context tokens
// (flash_attention with lse seeds m = lse, l = 1, O = AV) and returns the NON-causal prefill
// output of its T queries (agent_attention on that context), as the operator does; with
// cu_seqlens the B sequences come packed with different lengths (ragged batch, as the other
// hybrid decoders take) and each continues from its own position(b).
//
// Element types: q, k, v and agents fp32, bf16 or fp16, any mix (the two passes are softmax
// calls, which take any mix and widen on load); o any of the three (the second pass writes it,
// rounding once). AV and the decoder's state are fp32 / double; the decoder keeps its agents as
// fp32 (widened exactly) and reads each step's q, k, v rows widened.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "polyattn/args/hybrid.hpp"
#include "polyattn/hybrid/common.hpp"

namespace polyattn::hybrid {

namespace detail {

// Non-causal softmax attention of q [B,Tq,H,D] to k, v (full), into o (and lse when given).
template <class E>
void full_softmax(const EView4& q, const EView4& k, const EView4& v, double scale,
                  const MutEView4& o, View3<float> lse, const E& exec) {
  SoftmaxInputs in;
  in.q = q;
  in.k = k;
  in.v = v;
  SoftmaxOptions opt;
  opt.scale = scale;
  softmax::flash_attention(in, opt, o, lse, exec);
}

// The two passes over one batch of equal-length sequences into o, AV av [B, n, H, V] and the
// agents' lse [B, n, H] (kept for decoders).
template <class E>
void agent_passes(const AgentInputs& in, const AgentDims& d, const MutEView4& o, View4<float> av,
                  View3<float> lse, const E& exec) {
  if (d.n > 0) {
    full_softmax(in.agents, in.k, in.v, d.scale, av, lse, exec);
    full_softmax(in.q, in.agents, View4<const float>(av), d.scale, o, {}, exec);
  } else {  // no agents: every query sees nothing
    const Fp32Output out(o);
    for_rows(d.B, d.T, exec, [&](index_t b, index_t t) {
      for (index_t h = 0; h < d.H; ++h)
        for (index_t e = 0; e < d.V; ++e) out.view()(b, t, h, e) = 0.f;
    });
    out.finish();
  }
}

// A validated call; AV [N, n, H, V] and lse [N, n, H] are kept for decoders. With cu_seqlens
// each sequence runs alone (its rows of q, k, v, its row of the agents), as a call holding only
// it would: varlen equals separate calls bit for bit. An empty sequence writes nothing.
template <class E>
void agent_prefill(const AgentInputs& in, const AgentDims& d, const MutEView4& o,
                   std::vector<float>& av_buf, std::vector<float>& lse_buf, const E& exec) {
  if (d.N == 0 || d.H == 0 || d.V == 0) return;
  const View4<float> av = scratch4(av_buf, d.N, d.n, d.H, d.V);
  lse_buf.resize(static_cast<std::size_t>(d.N * d.n * d.H));
  const View3<float> lse = View3<float>::contiguous(lse_buf.data(), {d.N, d.n, d.H});
  if (in.cu_seqlens.empty()) {
    agent_passes(in, d, o, av, lse, exec);
    return;
  }
  for (index_t i = 0; i < d.N; ++i) {
    const index_t t0 = in.cu_seqlens[static_cast<std::size_t>(i)];
    const index_t t1 = in.cu_seqlens[static_cast<std::size_t>(i) + 1];
    if (t1 == t0) continue;
    AgentInputs one;
    one.q = rows(in.q, t0, t1);
    one.k = rows(in.k, t0, t1);
    one.v = rows(in.v, t0, t1);
    one.agents = part(in.agents, 0, i, i + 1);
    AgentDims di = d;
    di.B = di.N = 1;
    di.T = di.S = t1 - t0;
    const MutEView4 oi = rows(o, t0, t1);
    const View4<float> avi(av.ptr(i, 0, 0, 0), {1, d.n, d.H, d.V}, av.strides());
    const View3<float> lsei(lse.ptr(i, 0, 0), {1, d.n, d.H}, lse.strides());
    agent_passes(one, di, oi, avi, lsei, exec);
  }
}

}  // namespace detail

// Agent attention (see the header comment). Validates everything before writing o.
template <Executor E = Serial>
void agent_attention(const AgentInputs& in, const AgentOptions& opt, MutEView4 o,
                     const E& exec = E{}) {
  const AgentDims d = validate_agent(in, opt, o);
  std::vector<float> av, lse;
  detail::agent_prefill(in, d, o, av, lse, exec);
}

// Decode of agent attention over the prefix seen so far (see the header comment). The decoder
// copies its agents [B, n, H, D]; in.agents must be left empty in prefill() and step().
// Thread safety: one call at a time per decoder; different decoders are independent.
class AgentDecoder {
 public:
  AgentDecoder(EView4 agents, index_t value_dim, const AgentOptions& opt) {
    check::required("agents", agents);
    check::positive("agents (batch)", agents.size(0));
    check::positive("agents (heads)", agents.size(2));
    check::positive("agents (head dim)", agents.size(3));
    check::positive("value_dim", value_dim);
    B_ = agents.size(0);
    n_ = agents.size(1);
    H_ = agents.size(2);
    D_ = agents.size(3);
    V_ = value_dim;
    scale_ = detail::resolve_scale("scale", opt.scale, D_);
    opt_ = opt;
    detail::widened(agents, agents_);
    m_.resize(static_cast<std::size_t>(B_ * H_ * n_));
    l_.resize(m_.size());
    O_.resize(m_.size() * static_cast<std::size_t>(V_));
    reset();
  }

  // Context tokens absorbed by sequence b (equal for all after a batched prefill; a varlen
  // prefill gives each its own).
  index_t position(index_t b = 0) const { return pos_.at(static_cast<std::size_t>(b)); }
  index_t agents() const noexcept { return n_; }

  void reset() {
    std::fill(m_.begin(), m_.end(), -std::numeric_limits<double>::infinity());
    std::fill(l_.begin(), l_.end(), 0.0);
    std::fill(O_.begin(), O_.end(), 0.0);
    pos_.assign(static_cast<std::size_t>(B_), 0);
  }

  // A fresh decoder absorbs the context k, v [B, S, H, ·] and answers q [B, T, H, D]
  // (non-causally, as agent_attention; T may be 0). o [B, T, H, V]. Sequences of different
  // lengths: q, k, v [1, T, H, ·] packed with in.cu_seqlens [B+1] (lengths may be 0; each
  // sequence's queries are its context tokens); sequence b then continues from position(b), and
  // its outputs are bit for bit those of a decoder holding it alone.
  template <Executor E = Serial>
  void prefill(const AgentInputs& in, MutEView4 o, const E& exec = E{}) {
    const AgentDims d = validate_call(in, o, -1);
    for (std::size_t b = 0; b < pos_.size(); ++b)
      if (pos_[b] != 0)
        throw Error("decoder", "prefill() needs a fresh decoder, sequence " + std::to_string(b) +
                                   " holds " + std::to_string(pos_[b]) + " tokens (call reset())");
    std::vector<float> av, lse;
    detail::agent_prefill(with_agents(in), d, o, av, lse, exec);
    const bool varlen = !in.cu_seqlens.empty();
    for (index_t b = 0; b < B_; ++b) {
      const index_t len = varlen ? in.cu_seqlens[static_cast<std::size_t>(b) + 1] -
                                       in.cu_seqlens[static_cast<std::size_t>(b)]
                                 : d.S;
      pos_[static_cast<std::size_t>(b)] = len;
      if (len == 0) continue;
      for (index_t h = 0; h < H_; ++h)
        for (index_t a = 0; a < n_; ++a) {
          const std::size_t i = slot(b, h, a);
          const std::size_t li = static_cast<std::size_t>((b * n_ + a) * H_ + h);
          m_[i] = lse[li];
          l_[i] = 1.0;  // Σ_j e^{s_j − lse} = 1
          for (index_t e = 0; e < V_; ++e)
            O_[i * static_cast<std::size_t>(V_) + static_cast<std::size_t>(e)] =
                av[(li * static_cast<std::size_t>(V_)) + static_cast<std::size_t>(e)];
        }
    }
  }

  // One token per sequence: q, k [B, 1, H, D], v [B, 1, H, V]; o [B, 1, H, V] (see above).
  template <Executor E = Serial>
  void step(const AgentInputs& in, MutEView4 o, const E& exec = E{}) {
    validate_call(in, o, 1);
    const double ninf = -std::numeric_limits<double>::infinity();
    const View4<const float> A = agents_view();
    const View4<float> q = detail::widened(in.q, q_buf_), k = detail::widened(in.k, k_buf_),
                       v = detail::widened(in.v, v_buf_);
    const Fp32Output out(o);
    const View4<float> ob = out.view();
    exec.parallel_for(B_ * H_, [&](index_t bh) {
      const index_t b = bh / H_, h = bh % H_;
      auto dot = [&](const View4<const float>& x, index_t a) {
        double s = 0.0;
        for (index_t c = 0; c < D_; ++c)
          s += static_cast<double>(x(b, 0, h, c)) * static_cast<double>(A(b, a, h, c));
        return scale_ * s;
      };
      // Absorb (k, v) into every agent's online softmax.
      for (index_t a = 0; a < n_; ++a) {
        const std::size_t i = slot(b, h, a);
        const double s = dot(k, a), M = std::max(m_[i], s);
        const double c_old = m_[i] == ninf ? 0.0 : std::exp(m_[i] - M), c_new = std::exp(s - M);
        l_[i] = l_[i] * c_old + c_new;
        double* Oa = O_.data() + i * static_cast<std::size_t>(V_);
        for (index_t e = 0; e < V_; ++e)
          Oa[e] = Oa[e] * c_old + c_new * static_cast<double>(v(b, 0, h, e));
        m_[i] = M;
      }
      // The query reads the agents: softmax over a of scale·q·A_a, weights on AV_a = O_a / l_a.
      std::vector<double> u(static_cast<std::size_t>(n_)), acc(static_cast<std::size_t>(V_), 0.0);
      double mu = ninf;
      for (index_t a = 0; a < n_; ++a)
        mu = std::max(mu, u[static_cast<std::size_t>(a)] = dot(q, a));
      double den = 0.0;
      for (index_t a = 0; a < n_; ++a) {
        const std::size_t i = slot(b, h, a);
        const double p = std::exp(u[static_cast<std::size_t>(a)] - mu);
        den += p;
        const double* Oa = O_.data() + i * static_cast<std::size_t>(V_);
        for (index_t e = 0; e < V_; ++e) acc[static_cast<std::size_t>(e)] += p * Oa[e] / l_[i];
      }
      for (index_t e = 0; e < V_; ++e)
        ob(b, 0, h, e) = n_ > 0 ? static_cast<float>(acc[static_cast<std::size_t>(e)] / den) : 0.f;
    });
    out.finish();
    for (index_t& p : pos_) ++p;
  }

 private:
  std::size_t slot(index_t b, index_t h, index_t a) const noexcept {
    return static_cast<std::size_t>((b * H_ + h) * n_ + a);
  }
  View4<const float> agents_view() const {
    return View4<const float>::contiguous(agents_.data(), {B_, n_, H_, D_});
  }
  AgentInputs with_agents(const AgentInputs& in) const {
    AgentInputs full = in;
    full.agents = agents_view();
    return full;
  }
  // Validates a call (tokens = 1: step(), T = S = 1; −1: prefill(), any T, S, or the decoder's
  // B sequences packed with cu_seqlens); returns its sizes.
  AgentDims validate_call(const AgentInputs& in, const MutEView4& o, index_t tokens) const {
    check::well_formed("agents", in.agents);
    if (!in.agents.absent())
      throw Error("agents",
                  "are held by the decoder (given at construction); leave in.agents empty");
    const bool varlen = !in.cu_seqlens.empty();
    if (varlen) {
      if (tokens > 0)
        throw Error("cu_seqlens",
                    "is not supported by step() (it advances the B sequences together)");
      check::required("q", in.q);
      const index_t N = check::cu_seqlens("cu_seqlens", in.cu_seqlens, in.q.size(0), in.q.size(1));
      if (N != B_)
        throw Error("cu_seqlens", "packs " + std::to_string(N) + " sequences, the decoder has " +
                                      std::to_string(B_));
    }
    AgentInputs full = with_agents(in);
    if (n_ == 0) full.agents = View4<const float>(&dummy_, {B_, 0, H_, D_}, {0, 0, 0, 0});
    const AgentDims d = validate_agent(full, opt_, o);
    const index_t T = tokens < 0 ? d.T : tokens, S = tokens < 0 ? d.S : tokens;
    const index_t B = varlen ? 1 : B_;
    check::shape_is("q", in.q, {B, T, H_, D_},
                    varlen ? "[1, T, H, D]: the decoder's sequences packed"
                    : tokens < 0
                        ? "[B, T, H, D] of the decoder's agents"
                        : "[B, 1, H, D] of the decoder's agents: one new token per sequence");
    check::shape_is("k", in.k, {B, S, H_, D_}, "[B, S, H, D] of the decoder's agents");
    check::shape_is("v", in.v, {B, S, H_, V_}, "[B, S, H, V] of the decoder");
    return d;
  }

  index_t B_ = 0, n_ = 0, H_ = 0, D_ = 0, V_ = 0;
  double scale_ = 1.0;
  AgentOptions opt_;
  std::vector<float> agents_, q_buf_, k_buf_, v_buf_;  // agents [B, n, H, D]; scratch
  std::vector<double> m_, l_, O_;  // per (b, h, agent): running max, sum, numerator [V]
  std::vector<index_t> pos_;       // context tokens per sequence
  float dummy_ = 0.f;
};

// Combiner tag for hybrid_attention<AgentAttention>() (the tiling algorithm is unused).
struct AgentAttention {
  using Inputs = AgentInputs;
  using Options = AgentOptions;
  using Decoder = AgentDecoder;
  template <LinearAlgorithm Algo = Chunked<64>, Executor E = Serial>
  static void forward(const Inputs& in, const Options& opt, MutEView4 o, const E& exec = E{}) {
    agent_attention(in, opt, o, exec);
  }
};
static_assert(HybridCombiner<AgentAttention>);

}  // namespace polyattn::hybrid
