// tests/hybrid/test_hybrid_agent.cpp — agent attention (two non-causal softmaxes through n agent
// tokens): against the double reference over awkward query / key / agent counts (T ≠ S), large
// scores, no agents or no keys (zeros); identical bits for any thread count; the decoder (agent
// attention over the prefix seen so far) equals the last row of the reference on each prefix;
// varlen (cu_seqlens) operator and ragged decoder batches equal one call per sequence, bit for bit.
#include <gtest/gtest.h>

#include "hybrid/hybrid_harness.hpp"

namespace {

using namespace polyattn;
using namespace polyattn::test;
using hybrid::AgentAttention;

struct AgentData {
  index_t B, T, S, H, D, V, n;
  Tensor<float, 4> q, k, v, a;
  AgentData(index_t B_, index_t T_, index_t S_, index_t H_, index_t D_, index_t V_, index_t n_,
            std::uint64_t seed, float qk = 1.f)
      : B(B_), T(T_), S(S_), H(H_), D(D_), V(V_), n(n_) {
    q = random4({B, T, H, D}, seed + 1, -qk, qk);
    k = random4({B, S, H, D}, seed + 2, -qk, qk);
    v = random4({B, S, H, V}, seed + 3);
    a = random4({B, n, H, D}, seed + 4, -qk, qk);
  }
  // Views with a non-null pointer even when a size is 0 (the references require data).
  static View4<const float> view(const Tensor<float, 4>& x) {
    static const float dummy = 0.f;
    return View4<const float>(x.data.empty() ? &dummy : x.data.data(), x.shape,
                              x.cview().strides());
  }
  AgentInputs inputs() const { return {view(q), view(k), view(v), view(a)}; }
  std::array<index_t, 4> out_shape() const { return {B, T, H, V}; }
  std::string str() const {
    return "B" + std::to_string(B) + " T" + std::to_string(T) + " S" + std::to_string(S) + " H" +
           std::to_string(H) + " D" + std::to_string(D) + " V" + std::to_string(V) + " n" +
           std::to_string(n);
  }
};

TEST(AgentAttention, MatchesReferenceOverShapes) {
  std::uint64_t seed = 400;
  for (index_t S : {1, 63, 64, 65, 333})
    for (index_t n : {1, 7, 64, 65}) {
      const AgentData d(2, S == 333 ? 65 : 63, S, 2, 16, 12, n, ++seed);
      expect_matches_reference<AgentAttention>(d.inputs(), {}, d.out_shape(), d.str());
    }
  const AgentData odd(1, 1, 100, 3, 60, 20, 49, ++seed);
  AgentOptions opt;
  opt.scale = 0.3;
  expect_matches_reference<AgentAttention>(odd.inputs(), opt, odd.out_shape(), odd.str());
}

TEST(AgentAttention, LargeScores) {
  const AgentData d(1, 50, 90, 2, 16, 8, 16, 9, 6.f);
  expect_matches_reference<AgentAttention>(d.inputs(), {}, d.out_shape(), d.str());
}

TEST(AgentAttention, NoAgentsOrNoKeysGiveZeros) {
  for (const auto& [S, n] : {std::pair<index_t, index_t>{0, 4}, {5, 0}, {0, 0}}) {
    const AgentData d(2, 3, S, 2, 8, 4, n, 1);
    const auto o = run_fast<AgentAttention>(d.inputs(), {}, d.out_shape());
    for (float x : o) ASSERT_EQ(x, 0.f) << d.str();
  }
}

TEST(AgentAttention, ThreadCountsGiveIdenticalBits) {
  const AgentData d(2, 333, 200, 3, 16, 12, 49, 12);
  ThreadPool two(2), three(3);
  const auto serial = run_fast<AgentAttention>(d.inputs(), {}, d.out_shape());
  expect_same_bits(serial, run_fast<AgentAttention>(d.inputs(), {}, d.out_shape(), two),
                   "2 threads");
  expect_same_bits(serial, run_fast<AgentAttention>(d.inputs(), {}, d.out_shape(), three),
                   "3 threads");
}

// Last row of the reference over the prefix [0, t]: query t, keys and values 0..t.
std::vector<double> prefix_reference_row(const AgentData& d, index_t t, const AgentOptions& opt) {
  const AgentInputs full = d.inputs();
  AgentInputs in{rows(full.q, t, t + 1), rows(full.k, 0, t + 1), rows(full.v, 0, t + 1),
                 full.agents};
  return run_ref<AgentAttention>(in, opt, {d.B, 1, d.H, d.V});
}

TEST(AgentAttention, DecoderIsAgentAttentionOverThePrefix) {
  ThreadPool two(2);
  for (index_t P : {0, 1, 40}) {
    const AgentData d(2, 70, 70, 2, 16, 12, 9, 20 + static_cast<std::uint64_t>(P));
    AgentOptions opt;
    opt.scale = 0.35;
    hybrid::AgentDecoder dec(d.inputs().agents, d.V, opt), dec2(d.inputs().agents, d.V, opt);
    const AgentInputs full = d.inputs();
    std::vector<float> got, got2;
    std::vector<double> want;
    if (P > 0) {  // the context's first P tokens; queries 0..P−1 answered non-causally
      AgentInputs pre{rows(full.q, 0, P), rows(full.k, 0, P), rows(full.v, 0, P), {}};
      Tensor<float, 4> o({d.B, P, d.H, d.V}, kSentinel), o2 = o;
      dec.prefill(pre, o.view());
      dec2.prefill(pre, o2.view(), two);
      expect_same_bits(o.data, o2.data, "prefill 2 threads");
      AgentInputs ref_in = pre;
      ref_in.agents = full.agents;
      EXPECT_LT(rel_rmse(o.data, run_ref<AgentAttention>(ref_in, opt, {d.B, P, d.H, d.V})),
                kRelRmseBound);
    }
    for (index_t t = P; t < d.T; ++t) {
      AgentInputs in{rows(full.q, t, t + 1), rows(full.k, t, t + 1), rows(full.v, t, t + 1), {}};
      Tensor<float, 4> o({d.B, 1, d.H, d.V}, kSentinel), o2 = o;
      dec.step(in, o.view());
      dec2.step(in, o2.view(), two);
      got.insert(got.end(), o.data.begin(), o.data.end());
      got2.insert(got2.end(), o2.data.begin(), o2.data.end());
      const auto w = prefix_reference_row(d, t, opt);
      want.insert(want.end(), w.begin(), w.end());
    }
    EXPECT_EQ(dec.position(), d.T);
    EXPECT_LT(rel_rmse(got, want), kRelRmseBound) << "prefill " << P;
    expect_same_bits(got, got2, "steps 2 threads");
  }
}

// A prefill of context only (T = 0 queries), then steps.
TEST(AgentAttention, DecoderContextOnlyPrefill) {
  const AgentData d(1, 30, 30, 2, 8, 8, 5, 3);
  hybrid::AgentDecoder dec(d.inputs().agents, d.V, {});
  const AgentInputs full = d.inputs();
  Tensor<float, 4> none({d.B, 0, d.H, d.V});
  AgentInputs ctx{
      View4<const float>(full.q.as<float>().data(), {d.B, 0, d.H, d.D}, full.q.strides()),
      rows(full.k, 0, 20),
      rows(full.v, 0, 20),
      {}};
  dec.prefill(ctx, View4<float>(&none.data.emplace_back(0.f), {d.B, 0, d.H, d.V}, {0, 0, 0, 0}));
  EXPECT_EQ(dec.position(), 20);
  Tensor<float, 4> o({d.B, 1, d.H, d.V}, kSentinel);
  dec.step({rows(full.q, 20, 21), rows(full.k, 20, 21), rows(full.v, 20, 21), {}}, o.view());
  EXPECT_LT(rel_rmse(o.data, prefix_reference_row(d, 20, {})), kRelRmseBound);
}

// N sequences packed along T (cu_seqlens, queries = context) with agents [N, n, H, D].
struct AgentVarlen {
  std::vector<index_t> lens;
  std::vector<std::int64_t> cu{0};
  index_t T = 0, H, D, V, n;
  Tensor<float, 4> q, k, v, a;
  AgentVarlen(std::vector<index_t> lens_, index_t H_, index_t D_, index_t V_, index_t n_,
              std::uint64_t seed)
      : lens(std::move(lens_)), H(H_), D(D_), V(V_), n(n_) {
    for (index_t l : lens) cu.push_back(cu.back() + l);
    T = cu.back();
    q = random4({1, T, H, D}, seed + 1);
    k = random4({1, T, H, D}, seed + 2);
    v = random4({1, T, H, V}, seed + 3);
    a = random4({N(), n, H, D}, seed + 4);
  }
  index_t N() const { return static_cast<index_t>(lens.size()); }
  index_t t0(index_t i) const { return cu[static_cast<std::size_t>(i)]; }
  index_t t1(index_t i) const { return cu[static_cast<std::size_t>(i) + 1]; }
  AgentInputs inputs() const {
    AgentInputs in{AgentData::view(q), AgentData::view(k), AgentData::view(v), a.cview()};
    in.cu_seqlens = cu;
    return in;
  }
  // Sequence i alone: batch 1, its rows, its agents.
  AgentInputs sequence(index_t i) const {
    const AgentInputs in = inputs();
    return {rows(in.q, t0(i), t1(i)), rows(in.k, t0(i), t1(i)), rows(in.v, t0(i), t1(i)),
            batch_of(in.agents, i)};
  }
  std::vector<float> slice(const std::vector<float>& o, index_t i) const {
    return {o.begin() + t0(i) * H * V, o.begin() + t1(i) * H * V};
  }
};

TEST(AgentAttention, VarlenEqualsSeparateCallsAndReference) {
  ThreadPool two(2);
  std::uint64_t seed = 900;
  for (const auto& lens : {std::vector<index_t>{17, 0, 40, 1}, std::vector<index_t>{64, 65}}) {
    const AgentVarlen d(lens, 2, 16, 12, 9, ++seed);
    AgentOptions opt;
    opt.scale = 0.3;
    const auto got =
        expect_matches_reference<AgentAttention>(d.inputs(), opt, {1, d.T, d.H, d.V}, "varlen");
    expect_same_bits(got, run_fast<AgentAttention>(d.inputs(), opt, {1, d.T, d.H, d.V}, two),
                     "varlen 2 threads");
    for (index_t i = 0; i < d.N(); ++i) {
      const index_t L = d.t1(i) - d.t0(i);
      if (L == 0) continue;
      const auto one = run_fast<AgentAttention>(d.sequence(i), opt, {1, L, d.H, d.V});
      expect_same_bits(d.slice(got, i), one, "sequence " + std::to_string(i));
      EXPECT_LT(
          rel_rmse(d.slice(got, i), run_ref<AgentAttention>(d.sequence(i), opt, {1, L, d.H, d.V})),
          kRelRmseBound)
          << "sequence " << i;
    }
  }
}

// A ragged decode batch: a varlen prefill of sequences of lengths 17, 3 and 0, then steps. Each
// sequence's prefill rows and steps equal a decoder holding it alone, bit for bit, and the
// double reference over that sequence's prefix.
TEST(AgentAttention, DecoderTakesSequencesOfDifferentLengths) {
  constexpr index_t kSteps = 3;
  const AgentVarlen d({17, 3, 0}, 2, 16, 12, 7, 950);
  const index_t N = d.N(), H = d.H, V = d.V, D = d.D;
  const auto sq = random4({N, kSteps, H, D}, 961), sk = random4({N, kSteps, H, D}, 962),
             sv = random4({N, kSteps, H, V}, 963);
  AgentOptions opt;
  opt.scale = 0.4;
  ThreadPool two(2);
  auto run = [&](auto& dec, const auto& exec) {
    Tensor<float, 4> po({1, d.T, H, V}, kSentinel), so({N, kSteps, H, V}, kSentinel);
    AgentInputs pre = d.inputs();
    pre.agents = {};
    dec.prefill(pre, po.view(), exec);
    for (index_t i = 0; i < N; ++i) EXPECT_EQ(dec.position(i), d.t1(i) - d.t0(i));
    for (index_t t = 0; t < kSteps; ++t)
      dec.step(
          {rows(sq.cview(), t, t + 1), rows(sk.cview(), t, t + 1), rows(sv.cview(), t, t + 1), {}},
          rows(so.view(), t, t + 1), exec);
    for (index_t i = 0; i < N; ++i) EXPECT_EQ(dec.position(i), d.t1(i) - d.t0(i) + kSteps);
    return std::pair{po.data, so.data};
  };
  hybrid::AgentDecoder dec(d.a.cview(), V, opt), dec2(d.a.cview(), V, opt);
  const auto [po, so] = run(dec, Serial{});
  const auto [po2, so2] = run(dec2, two);
  expect_same_bits(po, po2, "prefill 2 threads");
  expect_same_bits(so, so2, "steps 2 threads");
  for (index_t i = 0; i < N; ++i) {
    const index_t L = d.t1(i) - d.t0(i);
    const AgentInputs seq = d.sequence(i);
    hybrid::AgentDecoder one(seq.agents, V, opt);
    // This sequence's context followed by its step tokens: the reference's prefixes.
    Tensor<float, 4> kc({1, L + kSteps, H, D}), vc({1, L + kSteps, H, V});
    std::copy(d.k.data.begin() + d.t0(i) * H * D, d.k.data.begin() + d.t1(i) * H * D,
              kc.data.begin());
    std::copy(d.v.data.begin() + d.t0(i) * H * V, d.v.data.begin() + d.t1(i) * H * V,
              vc.data.begin());
    std::copy(sk.data.begin() + i * kSteps * H * D, sk.data.begin() + (i + 1) * kSteps * H * D,
              kc.data.begin() + L * H * D);
    std::copy(sv.data.begin() + i * kSteps * H * V, sv.data.begin() + (i + 1) * kSteps * H * V,
              vc.data.begin() + L * H * V);
    const std::string what = "sequence " + std::to_string(i);
    if (L > 0) {
      Tensor<float, 4> o1({1, L, H, V}, kSentinel);
      AgentInputs pre = seq;
      pre.agents = {};
      one.prefill(pre, o1.view());
      expect_same_bits(d.slice(po, i), o1.data, what + " prefill");
      EXPECT_LT(rel_rmse(o1.data, run_ref<AgentAttention>(seq, opt, {1, L, H, V})), kRelRmseBound)
          << what;
    }
    for (index_t t = 0; t < kSteps; ++t) {
      Tensor<float, 4> o1({1, 1, H, V}, kSentinel);
      const View4<const float> qt = rows(batch_of(sq.cview(), i), t, t + 1);
      one.step({qt,
                rows(batch_of(sk.cview(), i), t, t + 1),
                rows(batch_of(sv.cview(), i), t, t + 1),
                {}},
               o1.view());
      const std::vector<float> got(so.begin() + (i * kSteps + t) * H * V,
                                   so.begin() + (i * kSteps + t + 1) * H * V);
      expect_same_bits(got, o1.data, what + " step " + std::to_string(t));
      const AgentInputs ref_in{qt, rows(kc.cview(), 0, L + t + 1), rows(vc.cview(), 0, L + t + 1),
                               seq.agents};
      EXPECT_LT(rel_rmse(got, run_ref<AgentAttention>(ref_in, opt, {1, 1, H, V})), kRelRmseBound)
          << what << " step " << t;
    }
  }
}

}  // namespace
