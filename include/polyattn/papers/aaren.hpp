// polyattn/papers/aaren.hpp — Aaren (Feng et al., "Attention as an RNN", 2024): softmax
// attention of one learned query per head over the tokens seen so far, computed as an RNN and
// as a prefix scan (the paper's many-to-many form, Sec. 3), per (sequence, value head hv), q/k
// head h = hv / G:
//
//   s_t = scale·q_h·k_t                       (q_h the learned query; scale default 1, as the
//                                              paper's s_i = q·k_i — the query absorbs it)
//   o_t = Σ_{j≤t} e^{s_j} v_j / Σ_{j≤t} e^{s_j}
//
// State (the paper's a, c, m): m = max of the scores seen, a = Σ e^{s_j − m} v_j [V],
// c = Σ e^{s_j − m}; o = a / c. The scan operator on such triples (A before B), with
// m = max(m_A, m_B):
//   a = a_A e^{m_A − m} + a_B e^{m_B − m},   c = c_A e^{m_A − m} + c_B e^{m_B − m}
// is associative with the identity (−inf, 0, 0). No official code is public; the paper's
// formulas were matched.
//
// Algorithms:
//   Recurrent   one triple updated token by token (also the decode step)
//   Chunked<C>  the parallel prefix scan, blocked: every chunk of C tokens scans itself from the
//               identity (in parallel over the executor), the chunks' totals are combined in order
//               into each chunk's carry, then every token combines its carry with its local prefix
//               (in parallel again). Results equal Recurrent up to fp32 rounding, and are
//               identical for any executor.
// State tensors: m [N,HV], c [N,HV], a [N,HV,V], all or none (none: the identity). GVA and varlen
// as the linear family; a sequence with no token passes its state through. Every output row has
// seen at least its own token, so c > 0 wherever o is formed. The paper's stacked Aaren layers,
// with a learned query per layer, are a model's business: this is one layer's attention.
// Element types (docs/conventions.md §9.8): k, v fp32, bf16 or fp16, one type for both (else an
// Error naming v), read widened exactly; o of any of the three, formed in fp32 and rounded once
// (core/fp32_output.hpp); the query and the state fp32. bf16 / fp16 inputs give the fp32
// operator's bits on the widened values.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "polyattn/core/element_view.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/fp32_output.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/validate.hpp"
#include "polyattn/policies/algorithm.hpp"

namespace polyattn::papers {

template <class T>
struct AarenState {
  TensorView<T, 2> m;  // [N,HV] running max of the scores
  TensorView<T, 2> c;  // [N,HV] Σ e^{s − m}
  View3<T> a;          // [N,HV,V] Σ e^{s − m} v
  bool absent() const { return m.absent() && c.absent() && a.absent(); }
};

struct AarenInputs {
  TensorView<const float, 2> query;  // [H,K] learned query per q/k head
  EView4 k;                          // [B,T,H,K] fp32, bf16 or fp16
  EView4 v;                          // [B,T,HV,V] of k's element type
  std::span<const std::int64_t> cu_seqlens;
  AarenState<const float> initial;  // optional
};

struct AarenOptions {
  std::optional<double> scale;  // default 1
};

namespace detail::aaren {

// acc ← acc ⊕ (m_b, c_b, a_b): acc comes first.
inline void combine(float& m, float& c, float* a, float mb, float cb, const float* ab, index_t V) {
  const float mn = std::max(m, mb);
  if (mn == -std::numeric_limits<float>::infinity()) return;  // both empty
  const float fa = std::exp(m - mn), fb = std::exp(mb - mn);
  for (index_t j = 0; j < V; ++j) a[j] = a[j] * fa + ab[j] * fb;
  c = c * fa + cb * fb;
  m = mn;
}

// acc ← acc ⊕ one token (score s, value v).
inline void push(float& m, float& c, float* a, float s, const float* v, index_t V) {
  const float mn = std::max(m, s);
  const float fa = std::exp(m - mn), fb = std::exp(s - mn);
  for (index_t j = 0; j < V; ++j) a[j] = a[j] * fa + v[j] * fb;
  c = c * fa + fb;
  m = mn;
}

}  // namespace detail::aaren

class Aaren {
 public:
  /// Prefill: o [B,T,HV,V]; optional final state. Algo: Recurrent or Chunked<C>.
  /// @throws polyattn::Error naming the bad argument; outputs are then untouched
  template <class Algo = Recurrent, Executor E = Serial>
    requires(std::same_as<Algo, Recurrent> || requires { Algo::chunk; })
  void forward(const AarenInputs& in, MutEView4 o, const AarenState<float>& final_state = {},
               const AarenOptions& opt = {}, const E& exec = E{}) const {
    const Dims d = validate(in, o, final_state, opt);
    const Fp32Output o32(o);
    in.k.visit([&](auto k) {  // k, v of their element type, read widened
      const auto v = in.v.as<typename decltype(k)::value_type>();
      if constexpr (std::same_as<Algo, Recurrent>)
        run_recurrent(in, k, v, d, o32.view(), final_state, exec);
      else
        run_scan(in, k, v, d, Algo::chunk, o32.view(), final_state, exec);
    });
    o32.finish();
  }

  /// Decode: T' new tokens per sequence (usually 1), state [B,HV(,V)] read and updated in place.
  template <Executor E = Serial>
  void step(const AarenInputs& in, const AarenState<float>& state, MutEView4 o,
            const AarenOptions& opt = {}, const E& exec = E{}) const {
    if (!in.initial.absent())
      throw Error("initial", "must be empty in step(): the state argument is updated in place");
    if (!in.cu_seqlens.empty()) throw Error("cu_seqlens", "is not supported by step()");
    if (state.m.absent() || state.c.absent() || state.a.absent())
      throw Error("state", "step() needs m, c and a");
    AarenInputs with_state = in;
    with_state.initial = {state.m, state.c, state.a};
    forward<Recurrent>(with_state, o, state, opt, exec);
  }

 private:
  struct Dims {
    index_t B, T, H, HV, K, V, N;
    float scale;
  };

  template <class T>
  static void check_state(const char* name, const AarenState<T>& s, index_t N, index_t HV,
                          index_t V) {
    if (s.absent()) return;
    const std::string p(name);
    if (s.m.absent() || s.c.absent() || s.a.absent())
      throw Error(p + (s.m.absent()   ? ".m"
                       : s.c.absent() ? ".c"
                                      : ".a"),
                  "is missing: the state is m, c and a together");
    check::well_formed(p + ".m", s.m);
    check::shape_is(p + ".m", s.m, {N, HV}, "[N,HV]");
    check::well_formed(p + ".c", s.c);
    check::shape_is(p + ".c", s.c, {N, HV}, "[N,HV]");
    check::well_formed(p + ".a", s.a);
    check::shape_is(p + ".a", s.a, {N, HV, V}, "[N,HV,V]");
  }

  static Dims validate(const AarenInputs& in, const MutEView4& o, const AarenState<float>& fin,
                       const AarenOptions& opt) {
    check::required("query", in.query);
    check::required("k", in.k);
    check::required("v", in.v);
    check::required("o", o);
    const auto& ks = in.k.shape();
    Dims d{ks[0], ks[1], ks[2], in.v.size(2), ks[3], in.v.size(3), 0, 1.f};
    check::positive("k (batch)", d.B);
    check::positive("k (heads)", d.H);
    check::positive("k (key dim)", d.K);
    check::shape_is("query", in.query, {d.H, d.K}, "[H,K] with H, K of k");
    check::heads_divide("v", d.H, d.HV);
    check::positive("v (value dim)", d.V);
    check::shape_is("v", in.v, {d.B, d.T, d.HV, d.V}, "[B,T,HV,V] with B,T of k");
    check::dtype_is("v", in.v, in.k.dtype(), "Aaren (one element type for k and v, k's)");
    check::shape_is("o", o, {d.B, d.T, d.HV, d.V}, "[B,T,HV,V]");
    d.N = check::cu_seqlens("cu_seqlens", in.cu_seqlens, d.B, d.T);
    check_state("initial", in.initial, d.N, d.HV, d.V);
    check_state("final_state", fin, d.N, d.HV, d.V);
    if (opt.scale && !std::isfinite(*opt.scale))
      throw Error("scale", "must be finite, got " + std::to_string(*opt.scale));
    d.scale = static_cast<float>(opt.scale.value_or(1.0));
    return d;
  }

  // s = scale·q_h·k_t, the dot in double, rounded once.
  template <class X>
  static float score(const AarenInputs& in, const View4<const X>& k, const Dims& d, index_t b,
                     index_t t, index_t h) {
    double acc = 0.0;
    for (index_t i = 0; i < d.K; ++i)
      acc += static_cast<double>(in.query(h, i)) * static_cast<double>(to_float(k(b, t, h, i)));
    return static_cast<float>(d.scale * acc);
  }

  // v_t of value head hv widened into dst [V].
  template <class X>
  static void load_v(const View4<const X>& v, index_t b, index_t t, index_t hv, float* dst,
                     index_t V) {
    for (index_t j = 0; j < V; ++j) dst[j] = to_float(v(b, t, hv, j));
  }

  // The carried triple of (n, hv): the initial state or the identity.
  static void load(const AarenInputs& in, const Dims& d, index_t n, index_t hv, float& m, float& c,
                   float* a) {
    if (in.initial.absent()) {
      m = -std::numeric_limits<float>::infinity();
      c = 0.f;
      std::fill(a, a + d.V, 0.f);
      return;
    }
    m = in.initial.m(n, hv);
    c = in.initial.c(n, hv);
    for (index_t j = 0; j < d.V; ++j) a[j] = in.initial.a(n, hv, j);
  }

  static void store(const AarenState<float>& fin, const Dims& d, index_t n, index_t hv, float m,
                    float c, const float* a) {
    if (fin.absent()) return;
    fin.m(n, hv) = m;
    fin.c(n, hv) = c;
    for (index_t j = 0; j < d.V; ++j) fin.a(n, hv, j) = a[j];
  }

  static void emit(const View4<float>& o, index_t b, index_t t, index_t hv, float c, const float* a,
                   index_t V) {
    const float inv = 1.f / c;
    for (index_t j = 0; j < V; ++j) o(b, t, hv, j) = a[j] * inv;
  }

  template <class X, class E>
  static void run_recurrent(const AarenInputs& in, const View4<const X>& k, const View4<const X>& v,
                            const Dims& d, const View4<float>& o, const AarenState<float>& fin,
                            const E& exec) {
    const auto segs = segments(d.B, d.T, in.cu_seqlens);
    exec.parallel_for(d.N * d.HV, [&](std::int64_t task) {
      const index_t n = task / d.HV, hv = task % d.HV, h = hv / (d.HV / d.H);
      const Segment& sg = segs[static_cast<std::size_t>(n)];
      std::vector<float> a(static_cast<std::size_t>(d.V)), vt(a.size());
      float m, c;
      load(in, d, n, hv, m, c, a.data());
      for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
        load_v(v, sg.batch, t, hv, vt.data(), d.V);
        detail::aaren::push(m, c, a.data(), score(in, k, d, sg.batch, t, h), vt.data(), d.V);
        emit(o, sg.batch, t, hv, c, a.data(), d.V);
      }
      store(fin, d, n, hv, m, c, a.data());
    });
  }

  // Blocked prefix scan (see the header comment). Per (sequence, head): local scans per chunk
  // into scratch (m, c per token, a per token in o itself), chunk carries in order, then every
  // token ⊕ its carry.
  template <class X, class E>
  static void run_scan(const AarenInputs& in, const View4<const X>& k, const View4<const X>& v,
                       const Dims& d, index_t C, const View4<float>& o,
                       const AarenState<float>& fin, const E& exec) {
    const auto segs = segments(d.B, d.T, in.cu_seqlens);
    // Work items: (sequence, head, chunk), numbered in order.
    std::vector<index_t> first_chunk(static_cast<std::size_t>(d.N) + 1, 0);
    for (index_t n = 0; n < d.N; ++n)
      first_chunk[n + 1] = first_chunk[n] + (segs[n].length + C - 1) / C;
    const index_t chunks = first_chunk[d.N];
    const std::int64_t items = static_cast<std::int64_t>(chunks) * d.HV;
    // Per token and head: local m, c. Per chunk and head: the carry (m, c, a).
    std::vector<float> lm(static_cast<std::size_t>(d.B * d.T * d.HV)), lc(lm.size());
    std::vector<float> carry_m(static_cast<std::size_t>(chunks * d.HV)), carry_c(carry_m.size()),
        carry_a(carry_m.size() * static_cast<std::size_t>(d.V));
    auto token_slot = [&](index_t b, index_t t, index_t hv) {
      return static_cast<std::size_t>((b * d.T + t) * d.HV + hv);
    };
    auto locate = [&](std::int64_t item, index_t& n, index_t& hv, index_t& chunk) {
      hv = static_cast<index_t>(item % d.HV);
      const index_t g = static_cast<index_t>(item / d.HV);  // global chunk index
      n = static_cast<index_t>(std::upper_bound(first_chunk.begin(), first_chunk.end(), g) -
                               first_chunk.begin()) -
          1;
      chunk = g - first_chunk[n];
    };
    // 1. Local scans: a in o (un-normalised), m and c in scratch.
    exec.parallel_for(items, [&](std::int64_t item) {
      index_t n, hv, chunk;
      locate(item, n, hv, chunk);
      const Segment& sg = segs[static_cast<std::size_t>(n)];
      const index_t h = hv / (d.HV / d.H);
      const index_t t0 = sg.begin + chunk * C, t1 = std::min(t0 + C, sg.begin + sg.length);
      std::vector<float> a(static_cast<std::size_t>(d.V), 0.f), vt(a.size());
      float m = -std::numeric_limits<float>::infinity(), c = 0.f;
      for (index_t t = t0; t < t1; ++t) {
        load_v(v, sg.batch, t, hv, vt.data(), d.V);
        detail::aaren::push(m, c, a.data(), score(in, k, d, sg.batch, t, h), vt.data(), d.V);
        for (index_t j = 0; j < d.V; ++j) o(sg.batch, t, hv, j) = a[j];
        lm[token_slot(sg.batch, t, hv)] = m;
        lc[token_slot(sg.batch, t, hv)] = c;
      }
    });
    // 2. Carries in order: carry(chunk i) = carry(i−1) ⊕ total(chunk i−1); final state.
    exec.parallel_for(static_cast<std::int64_t>(d.N) * d.HV, [&](std::int64_t task) {
      const index_t n = static_cast<index_t>(task / d.HV), hv = static_cast<index_t>(task % d.HV);
      const Segment& sg = segs[static_cast<std::size_t>(n)];
      std::vector<float> a(static_cast<std::size_t>(d.V)), total(a.size());
      float m, c;
      load(in, d, n, hv, m, c, a.data());
      const index_t nch = first_chunk[n + 1] - first_chunk[n];
      for (index_t ch = 0; ch < nch; ++ch) {
        const auto slot = static_cast<std::size_t>((first_chunk[n] + ch) * d.HV + hv);
        carry_m[slot] = m;
        carry_c[slot] = c;
        std::copy(a.begin(), a.end(), carry_a.begin() + static_cast<std::ptrdiff_t>(slot * d.V));
        const index_t last = std::min(sg.begin + (ch + 1) * C, sg.begin + sg.length) - 1;
        for (index_t j = 0; j < d.V; ++j) total[j] = o(sg.batch, last, hv, j);
        detail::aaren::combine(m, c, a.data(), lm[token_slot(sg.batch, last, hv)],
                               lc[token_slot(sg.batch, last, hv)], total.data(), d.V);
      }
      store(fin, d, n, hv, m, c, a.data());
    });
    // 3. Every token: carry ⊕ local prefix, normalised.
    exec.parallel_for(items, [&](std::int64_t item) {
      index_t n, hv, chunk;
      locate(item, n, hv, chunk);
      const Segment& sg = segs[static_cast<std::size_t>(n)];
      const index_t t0 = sg.begin + chunk * C, t1 = std::min(t0 + C, sg.begin + sg.length);
      const auto slot = static_cast<std::size_t>((first_chunk[n] + chunk) * d.HV + hv);
      std::vector<float> a(static_cast<std::size_t>(d.V)), local(a.size());
      for (index_t t = t0; t < t1; ++t) {
        float m = carry_m[slot], c = carry_c[slot];
        std::copy_n(carry_a.begin() + static_cast<std::ptrdiff_t>(slot * d.V), d.V, a.begin());
        for (index_t j = 0; j < d.V; ++j) local[j] = o(sg.batch, t, hv, j);
        detail::aaren::combine(m, c, a.data(), lm[token_slot(sg.batch, t, hv)],
                               lc[token_slot(sg.batch, t, hv)], local.data(), d.V);
        emit(o, sg.batch, t, hv, c, a.data(), d.V);
      }
    });
  }
};

namespace presets {
inline Aaren make_aaren() {
  return {};
}
}  // namespace presets

}  // namespace polyattn::papers
