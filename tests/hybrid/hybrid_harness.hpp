// tests/hybrid/hybrid_harness.hpp — owning random inputs for the hybrid combiners, runners for
// the fast operators and the double references, row slicing for decode, and the checks the
// per-combiner suites share (reference bound, identical bits, bad arguments leave o untouched).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/core/element.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/hybrid/hybrid.hpp"
#include "polyattn/reference/hybrid.hpp"

namespace polyattn::test {

// Sizes of one case. F (LoLCATs' feature dim) and K (Based / Liger linear dim) share `K`.
struct HybridShape {
  index_t B = 2, T = 65, H = 2, D = 16, V = 12, K = 8;
  std::vector<index_t> lens;  // non-empty: varlen, B must be 1 and T the sum
  std::string str() const {
    std::string s = "B" + std::to_string(B) + "_T" + std::to_string(T) + "_H" + std::to_string(H) +
                    "_D" + std::to_string(D) + "_V" + std::to_string(V) + "_K" + std::to_string(K);
    if (!lens.empty()) {
      s += "_lens";
      for (index_t l : lens) s += "-" + std::to_string(l);
    }
    return s;
  }
  static HybridShape varlen(std::vector<index_t> lens, index_t H = 2, index_t D = 16,
                            index_t V = 12, index_t K = 8) {
    HybridShape s;
    s.B = 1;
    s.T = std::accumulate(lens.begin(), lens.end(), index_t{0});
    s.H = H;
    s.D = D;
    s.V = V;
    s.K = K;
    s.lens = std::move(lens);
    return s;
  }
};

// Every tensor any combiner takes, random and deterministic. q, k ∈ [-qk, qk); v ∈ [-1, 1);
// lin_q, lin_k ∈ [-1, 1) [B,T,H,K]; phi ∈ [0, 1) [B,T,H,K] (positive features); g, gk log-gates
// in [-0.2, -0.001) / gate_div.
struct HybridData {
  HybridShape s;
  Tensor<float, 4> q, k, v, lq, lk, pq, pk, gk;
  Tensor<float, 3> g;
  std::vector<std::int64_t> cu;

  explicit HybridData(const HybridShape& sh, std::uint64_t seed, float qk = 1.f,
                      double gate_div = 1.0)
      : s(sh) {
    q = random4({s.B, s.T, s.H, s.D}, seed + 1, -qk, qk);
    k = random4({s.B, s.T, s.H, s.D}, seed + 2, -qk, qk);
    v = random4({s.B, s.T, s.H, s.V}, seed + 3);
    lq = random4({s.B, s.T, s.H, s.K}, seed + 4);
    lk = random4({s.B, s.T, s.H, s.K}, seed + 5);
    pq = random4({s.B, s.T, s.H, s.K}, seed + 6, 0.f, 1.f);
    pk = random4({s.B, s.T, s.H, s.K}, seed + 7, 0.f, 1.f);
    gk = random4({s.B, s.T, s.H, s.K}, seed + 8, -0.2f, -0.001f);
    for (auto& x : gk.data) x = static_cast<float>(x / gate_div);
    g = Tensor<float, 3>({s.B, s.T, s.H});
    g.data = random_vector(g.data.size(), seed + 9, -0.2f, -0.001f);
    for (auto& x : g.data) x = static_cast<float>(x / gate_div);
    if (!s.lens.empty()) {
      cu.push_back(0);
      for (index_t l : s.lens) cu.push_back(cu.back() + l);
    }
  }
  HybridData(const HybridData&) = delete;
  HybridData& operator=(const HybridData&) = delete;

  BasedHybridInputs based(bool separate_lin = true) const {
    BasedHybridInputs in{q.cview(), k.cview(), v.cview(), {}, {}, cu};
    if (separate_lin) {
      in.lin_q = lq.cview();
      in.lin_k = lk.cview();
    }
    return in;
  }
  LolcatsInputs lolcats() const {
    return LolcatsInputs{q.cview(), k.cview(), v.cview(), pq.cview(), pk.cview(), cu};
  }
  LigerInputs liger(bool vector_gate, bool separate_lin = true) const {
    LigerInputs in{q.cview(), k.cview(), v.cview(), {}, {}, {}, {}, cu};
    if (separate_lin) {
      in.lin_q = lq.cview();
      in.lin_k = lk.cview();
    }
    if (vector_gate)
      in.gk = gk.cview();
    else
      in.g = g.cview();
    return in;
  }
  std::array<index_t, 4> out_shape() const { return {s.B, s.T, s.H, s.V}; }
};

inline constexpr float kSentinel = -7777.f;

// Rows [t0, t1) of a [B, T, ...] view (absent stays absent).
template <class T, std::size_t R>
TensorView<T, R> rows(const TensorView<T, R>& x, index_t t0, index_t t1) {
  if (x.absent()) return x;
  auto shape = x.shape();
  shape[1] = t1 - t0;
  return TensorView<T, R>(x.data() + t0 * x.stride(1), shape, x.strides());
}
inline EView4 rows(const EView4& x, index_t t0, index_t t1) {
  if (x.absent()) return x;
  return x.visit([&](auto xv) { return EView4(rows(xv, t0, t1)); });
}
inline BasedHybridInputs rows(const BasedHybridInputs& in, index_t t0, index_t t1) {
  return {rows(in.q, t0, t1),     rows(in.k, t0, t1),     rows(in.v, t0, t1),
          rows(in.lin_q, t0, t1), rows(in.lin_k, t0, t1), {}};
}
inline LolcatsInputs rows(const LolcatsInputs& in, index_t t0, index_t t1) {
  return {rows(in.q, t0, t1),     rows(in.k, t0, t1),     rows(in.v, t0, t1),
          rows(in.phi_q, t0, t1), rows(in.phi_k, t0, t1), {}};
}
inline LigerInputs rows(const LigerInputs& in, index_t t0, index_t t1) {
  return {rows(in.q, t0, t1),     rows(in.k, t0, t1), rows(in.v, t0, t1),  rows(in.lin_q, t0, t1),
          rows(in.lin_k, t0, t1), rows(in.g, t0, t1), rows(in.gk, t0, t1), {}};
}
inline AgentInputs rows(const AgentInputs& in, index_t t0, index_t t1) {
  return {rows(in.q, t0, t1), rows(in.k, t0, t1), rows(in.v, t0, t1), in.agents, {}};
}

// Fast operator of combiner C (tiling Algo, executor exec) into a fresh sentinel-filled buffer of
// element type Out.
template <hybrid::HybridCombiner C, LinearAlgorithm Algo = Chunked<64>, class E = Serial,
          Element Out = float>
std::vector<Out> run_fast(const typename C::Inputs& in, const typename C::Options& opt,
                          std::array<index_t, 4> oshape, const E& exec = E{}) {
  Tensor<Out, 4> o(oshape, from_float<Out>(kSentinel));
  hybrid::hybrid_attention<C, Algo>(in, opt, o.view(), exec);
  return o.data;
}

// The double reference of each combiner.
inline void ref_call(const BasedHybridInputs& in, const BasedHybridOptions& opt, View4<double> o) {
  reference::based_hybrid(in, opt, o);
}
inline void ref_call(const LolcatsInputs& in, const LolcatsOptions& opt, View4<double> o) {
  reference::lolcats(in, opt, o);
}
inline void ref_call(const LigerInputs& in, const LigerOptions& opt, View4<double> o) {
  reference::liger(in, opt, o);
}
inline void ref_call(const AgentInputs& in, const AgentOptions& opt, View4<double> o) {
  reference::agent_attention(in, opt, o);
}
template <class C>
std::vector<double> run_ref(const typename C::Inputs& in, const typename C::Options& opt,
                            std::array<index_t, 4> oshape) {
  Tensor<double, 4> o(oshape, NAN);
  ref_call(in, opt, o.view());
  return o.data;
}

inline void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b,
                             const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << what;
}

// The fast operator within the §5 bound of the reference (and every element written).
template <hybrid::HybridCombiner C, LinearAlgorithm Algo = Chunked<64>, class E = Serial>
std::vector<float> expect_matches_reference(const typename C::Inputs& in,
                                            const typename C::Options& opt,
                                            std::array<index_t, 4> oshape, const std::string& what,
                                            const E& exec = E{}) {
  std::vector<float> got = run_fast<C, Algo>(in, opt, oshape, exec);
  const std::vector<double> want = run_ref<C>(in, opt, oshape);
  EXPECT_LT(rel_rmse(got, want), kRelRmseBound) << what;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (got[i] == kSentinel) {
      ADD_FAILURE() << what << ": element " << i << " not written";
      break;
    }
  return got;
}

// Decodes all T tokens of `in` with a decoder of combiner C: prefill of the first `prefill_len`
// (skipped when 0), then one step per token. Returns the [B, T, H, V] outputs (of element type
// Out).
template <class C, Element Out = float, class E = Serial>
std::vector<Out> decode_all(typename C::Decoder& dec, const typename C::Inputs& in,
                            std::array<index_t, 4> oshape, index_t prefill_len,
                            const E& exec = E{}) {
  Tensor<Out, 4> o(oshape, from_float<Out>(kSentinel));
  const index_t T = oshape[1];
  if (prefill_len > 0) dec.prefill(rows(in, 0, prefill_len), rows(o.view(), 0, prefill_len), exec);
  for (index_t t = prefill_len; t < T; ++t)
    dec.step(rows(in, t, t + 1), rows(o.view(), t, t + 1), exec);
  return o.data;
}

// Sequence b of a batched view or input set, as a batch of one.
template <class T, std::size_t R>
TensorView<T, R> batch_of(const TensorView<T, R>& x, index_t b) {
  if (x.absent()) return x;
  auto shape = x.shape();
  shape[0] = 1;
  return TensorView<T, R>(x.data() + b * x.stride(0), shape, x.strides());
}
inline EView4 batch_of(const EView4& x, index_t b) {
  if (x.absent()) return x;
  return x.visit([&](auto xv) { return EView4(batch_of(xv, b)); });
}
inline BasedHybridInputs batch_of(const BasedHybridInputs& in, index_t b) {
  return {batch_of(in.q, b),     batch_of(in.k, b),     batch_of(in.v, b),
          batch_of(in.lin_q, b), batch_of(in.lin_k, b), {}};
}
inline LolcatsInputs batch_of(const LolcatsInputs& in, index_t b) {
  return {batch_of(in.q, b),     batch_of(in.k, b),     batch_of(in.v, b),
          batch_of(in.phi_q, b), batch_of(in.phi_k, b), {}};
}
inline LigerInputs batch_of(const LigerInputs& in, index_t b) {
  return {batch_of(in.q, b),     batch_of(in.k, b), batch_of(in.v, b),  batch_of(in.lin_q, b),
          batch_of(in.lin_k, b), batch_of(in.g, b), batch_of(in.gk, b), {}};
}

// A decoder of N sequences of different lengths: a varlen prefill (lens, packed with
// cu_seqlens), then `steps` steps of one token each. Every sequence's prefill rows and step
// outputs must be those of a decoder holding that sequence alone, bit for bit (the kernels
// are per sequence; varlen equals separate calls bitwise). make(B) builds a decoder of B
// sequences; inputs(data) the combiner's inputs of a HybridData.
template <class C, class Make, class Inputs>
void expect_varlen_decoder_matches_separate(const Make& make, const Inputs& inputs,
                                            const std::vector<index_t>& lens, index_t steps,
                                            const std::string& what) {
  const auto N = static_cast<index_t>(lens.size());
  const HybridData pre(HybridShape::varlen(lens), 500);
  HybridShape ss;
  ss.B = N;
  ss.T = steps;
  const HybridData st(ss, 600);
  const index_t H = pre.s.H, V = pre.s.V;
  typename C::Decoder dec = make(N);
  Tensor<float, 4> po({1, pre.s.T, H, V}, kSentinel), so({N, steps, H, V}, kSentinel);
  dec.prefill(inputs(pre), po.view());
  for (index_t n = 0; n < N; ++n)
    EXPECT_EQ(dec.position(n), lens[static_cast<std::size_t>(n)]) << what;
  for (index_t t = 0; t < steps; ++t)
    dec.step(rows(inputs(st), t, t + 1), rows(so.view(), t, t + 1));
  for (index_t n = 0; n < N; ++n) {
    typename C::Decoder one = make(1);
    const index_t t0 = pre.cu[static_cast<std::size_t>(n)],
                  t1 = pre.cu[static_cast<std::size_t>(n) + 1];
    Tensor<float, 4> o1({1, t1 - t0 + steps, H, V}, kSentinel);
    if (t1 > t0) one.prefill(rows(inputs(pre), t0, t1), rows(o1.view(), 0, t1 - t0));
    for (index_t t = 0; t < steps; ++t)
      one.step(rows(batch_of(inputs(st), n), t, t + 1),
               rows(o1.view(), t1 - t0 + t, t1 - t0 + t + 1));
    const std::size_t row = static_cast<std::size_t>(H * V);
    const std::vector<float> want_pre(
        o1.data.begin(), o1.data.begin() + static_cast<std::ptrdiff_t>((t1 - t0) * H * V));
    const std::vector<float> got_pre(po.data.begin() + static_cast<std::ptrdiff_t>(t0 * H * V),
                                     po.data.begin() + static_cast<std::ptrdiff_t>(t1 * H * V));
    EXPECT_EQ(got_pre, want_pre) << what << " prefill of sequence " << n;
    for (index_t t = 0; t < steps; ++t) {
      const auto g0 = so.data.begin() + static_cast<std::ptrdiff_t>((n * steps + t) * H * V);
      const auto w0 = o1.data.begin() + static_cast<std::ptrdiff_t>((t1 - t0 + t) * H * V);
      EXPECT_TRUE(std::equal(g0, g0 + static_cast<std::ptrdiff_t>(row), w0))
          << what << " sequence " << n << " step " << t;
    }
  }
}

// Expects `call` to throw an Error naming `argument` and leave `o` (filled with kSentinel) as is.
inline void expect_bad(const std::string& argument, const std::function<void()>& call,
                       const std::vector<float>& o, const std::string& what = {}) {
  try {
    call();
    ADD_FAILURE() << what << ": no exception (expected one about '" << argument << "')";
  } catch (const Error& err) {
    EXPECT_EQ(err.argument(), argument) << what << ": " << err.what();
  }
  for (float x : o) ASSERT_EQ(x, kSentinel) << what << ": output written";
}

}  // namespace polyattn::test
