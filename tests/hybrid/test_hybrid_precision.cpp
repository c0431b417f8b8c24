// tests/hybrid/test_hybrid_precision.cpp — bf16 / fp16 q, k, v (and lin_q, lin_k, phi_q, phi_k,
// agents) and o of the hybrid combiners and their decoders (SPEC §8, docs/conventions.md §9.7), on
// every ISA (ctest reruns the binary per lower ISA).
//
// Each case's fp32 random data is rounded to the element type T first (gates stay fp32); the fp32
// arrays then hold exactly the values of the T arrays, and the double reference runs on them.
// Checked, for every combiner (Based, LoLCATs, Liger with either gate, agent attention), batched
// and varlen, prefill and decoder:
//   * bits: the kernels convert on load and the hybrids' own loops widen rows exactly, so T inputs
//     with an fp32 o give the bits of the fp32 operator on the rounded values, and a T o holds
//     exactly those fp32 outputs rounded once to nearest even. Exception: all-bf16 softmax inputs
//     on the amx level take bf16 products (softmax::uses_bf16_products); that fp32 o is then held
//     to the bf16 bound instead of to the fp32 bits;
//   * bounds against the double reference: relative RMSE < 8e-3 (bf16 o), < 2e-3 (fp16 o) and the
//     fp32 bound 1e-5 for an fp32 o;
//   * mixed element types among a causal hybrid's activations are Errors naming the argument,
//     with o untouched; agent attention takes any mix (two softmax calls), with the fp32 bits.
// The worst errors measured are printed (stdout) for the record.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "common/precision.hpp"
#include "hybrid/hybrid_harness.hpp"
#include "polyattn/softmax/flash.hpp"

namespace {

using namespace polyattn;
using namespace polyattn::test;

// The worst errors of one element type: a T o and an fp32 o, each against the reference.
struct Worst {
  double o_t = 0, o_f32 = 0;
  void print(const char* what, const char* type) const {
    std::printf("[precision] %s %s: worst rel RMSE  o(%s) %.3e  o(fp32) %.3e\n", what, type, type,
                o_t, o_f32);
  }
};

// A HybridData whose activations are rounded to T, with T copies of them; agents [B, n, H, D]
// (n = 5) for agent attention.
template <Element T>
struct Rounded {
  HybridData f;
  Tensor<float, 4> agents;
  std::vector<T> q, k, v, lq, lk, pq, pk, a;
  Rounded(const HybridShape& s, std::uint64_t seed) : f(s, seed) {
    agents = random4({s.lens.empty() ? s.B : static_cast<index_t>(s.lens.size()), 5, s.H, s.D},
                     seed + 20);
    for (auto* x : {&f.q.data, &f.k.data, &f.v.data, &f.lq.data, &f.lk.data, &f.pq.data, &f.pk.data,
                    &agents.data})
      round_all<T>(*x);
    q = narrow<T>(f.q.data);
    k = narrow<T>(f.k.data);
    v = narrow<T>(f.v.data);
    lq = narrow<T>(f.lq.data);
    lk = narrow<T>(f.lk.data);
    pq = narrow<T>(f.pq.data);
    pk = narrow<T>(f.pk.data);
    a = narrow<T>(agents.data);
  }
  static EView4 view(const std::vector<T>& x, const std::array<index_t, 4>& shape) {
    return TensorView<const T, 4>::contiguous(x.data(), shape);
  }
  // The inputs of each combiner over the T arrays (typed) or the rounded fp32 arrays.
  BasedHybridInputs based(bool typed) const {
    BasedHybridInputs in = f.based();
    if (typed)
      in = {view(q, f.q.shape),   view(k, f.k.shape),   view(v, f.v.shape),
            view(lq, f.lq.shape), view(lk, f.lk.shape), f.cu};
    return in;
  }
  LolcatsInputs lolcats(bool typed) const {
    LolcatsInputs in = f.lolcats();
    if (typed)
      in = {view(q, f.q.shape),   view(k, f.k.shape),   view(v, f.v.shape),
            view(pq, f.pq.shape), view(pk, f.pk.shape), f.cu};
    return in;
  }
  LigerInputs liger(bool typed, bool vector_gate) const {
    LigerInputs in = f.liger(vector_gate);
    if (typed) {
      in.q = view(q, f.q.shape);
      in.k = view(k, f.k.shape);
      in.v = view(v, f.v.shape);
      in.lin_q = view(lq, f.lq.shape);
      in.lin_k = view(lk, f.lk.shape);
    }
    return in;
  }
  AgentInputs agent(bool typed) const {
    if (!typed) return {f.q.cview(), f.k.cview(), f.v.cview(), agents.cview(), f.cu};
    return {view(q, f.q.shape), view(k, f.k.shape), view(v, f.v.shape), view(a, agents.shape),
            f.cu};
  }
};

// Whether a T call's softmax pass over (q, k, v) takes bf16 products (amx level, all bf16).
bool bf16_products(const EView4& q, const EView4& k, const EView4& v) {
  SoftmaxInputs in;
  in.q = q;
  in.k = k;
  in.v = v;
  return softmax::uses_bf16_products(in);
}

// The fp32 o of a T call (of), its T o (ot) and the fp32 operator on the rounded values (o32)
// against the reference: bits and bounds (module comment).
template <Element T>
void expect_typed(const std::vector<float>& of, const std::vector<T>& ot,
                  const std::vector<float>& o32, const std::vector<double>& ref, bool amx,
                  const std::string& what, Worst& worst) {
  const std::string tag = what + " " + kName<T>;
  if (amx) {
    EXPECT_LT(rel_rmse(of, ref), kBound<bf16>) << tag << ": fp32 o (bf16 products)";
  } else {
    EXPECT_TRUE(same_bits(of, o32)) << tag << ": fp32 o from " << kName<T> << " inputs";
    EXPECT_LT(rel_rmse(of, ref), kRelRmseBound) << tag << ": fp32 o";
  }
  EXPECT_TRUE(same_bits(ot, narrow<T>(of))) << tag << ": o rounded once";
  const double et = rel_rmse(widen(ot), ref), ef = rel_rmse(of, ref);
  EXPECT_LT(et, kBound<T>) << tag << ": " << kName<T> << " o";
  worst.o_t = std::max(worst.o_t, et);
  worst.o_f32 = std::max(worst.o_f32, ef);
}

// A prefill operator of combiner C on T inputs: fp32 and T o.
template <hybrid::HybridCombiner C, Element T>
void prefill_case(const typename C::Inputs& in32, const typename C::Inputs& inT,
                  const typename C::Options& opt, const std::array<index_t, 4>& oshape, bool amx,
                  const std::string& what, Worst& worst) {
  const std::vector<float> o32 = run_fast<C>(in32, opt, oshape);
  const std::vector<float> of = run_fast<C>(inT, opt, oshape);
  const std::vector<T> ot = run_fast<C, Chunked<64>, Serial, T>(inT, opt, oshape);
  expect_typed(of, ot, o32, run_ref<C>(in32, opt, oshape), amx, what, worst);
}

// A decoder of combiner C: prefill of the first P tokens, then steps, on T inputs with fp32 and
// T o, against a decoder on the rounded fp32 inputs and the reference of the whole prefill (a
// causal decoder's rows are the prefill's rows).
template <class C, Element T, class Make>
void decoder_case(const Make& make, const typename C::Inputs& in32, const typename C::Inputs& inT,
                  const std::vector<double>& ref, const std::array<index_t, 4>& oshape, index_t P,
                  bool amx, const std::string& what, Worst& worst) {
  typename C::Decoder d32 = make(), dF = make(), dT = make();
  const std::vector<float> o32 = decode_all<C>(d32, in32, oshape, P);
  const std::vector<float> of = decode_all<C>(dF, inT, oshape, P);
  const std::vector<T> ot = decode_all<C, T>(dT, inT, oshape, P);
  expect_typed(of, ot, o32, ref, amx && P > 0, what + " decoder", worst);
}

const std::vector<HybridShape>& shapes() {
  static const std::vector<HybridShape> s = {HybridShape{},  // B2 T65 H2 D16 V12 K8
                                             HybridShape::varlen({17, 0, 48})};
  return s;
}

template <Element T>
void causal_hybrids() {
  Worst worst;
  std::uint64_t seed = 300;
  for (const HybridShape& s : shapes()) {
    const Rounded<T> r(s, seed += 10);
    const auto shape = r.f.out_shape();
    const bool amx = bf16_products(r.based(true).q, r.based(true).k, r.based(true).v);
    const std::string sh = s.str();
    const bool batched = s.lens.empty();

    BasedHybridOptions bo;
    bo.window = 16;
    prefill_case<hybrid::BasedHybrid, T>(r.based(false), r.based(true), bo, shape, amx,
                                         "based " + sh, worst);
    LolcatsOptions lo;
    lo.window = 16;
    prefill_case<hybrid::Lolcats, T>(r.lolcats(false), r.lolcats(true), lo, shape, amx,
                                     "lolcats " + sh, worst);
    LigerOptions go;
    go.window = 16;
    for (bool vg : {false, true})
      prefill_case<hybrid::Liger, T>(r.liger(false, vg), r.liger(true, vg), go, shape, amx,
                                     std::string("liger ") + (vg ? "gk " : "g ") + sh, worst);
    if (!batched) continue;  // decoders: batched inputs (their varlen prefill is tested in fp32)

    const hybrid::DecoderShape ds{s.B, s.H, s.D, s.V, s.K, 16};
    decoder_case<hybrid::BasedHybrid, T>(
        [&] { return hybrid::BasedHybridDecoder(ds, bo); }, r.based(false), r.based(true),
        run_ref<hybrid::BasedHybrid>(r.based(false), bo, shape), shape, 40, amx, "based", worst);
    decoder_case<hybrid::Lolcats, T>(
        [&] { return hybrid::LolcatsDecoder(ds, lo); }, r.lolcats(false), r.lolcats(true),
        run_ref<hybrid::Lolcats>(r.lolcats(false), lo, shape), shape, 40, amx, "lolcats", worst);
    decoder_case<hybrid::Liger, T>(
        [&] { return hybrid::LigerDecoder(ds, go); }, r.liger(false, true), r.liger(true, true),
        run_ref<hybrid::Liger>(r.liger(false, true), go, shape), shape, 40, amx, "liger", worst);
  }
  worst.print("causal hybrids", kName<T>);
}

TEST(HybridPrecision, CausalHybridsBf16) {
  causal_hybrids<bf16>();
}
TEST(HybridPrecision, CausalHybridsFp16) {
  causal_hybrids<f16>();
}

// The agent decoder's reference: row t of agent attention over the prefix [0, t] (rows before P:
// the prefill's non-causal rows over the first P tokens).
std::vector<double> agent_decode_reference(const AgentInputs& in, const std::array<index_t, 4>& o,
                                           index_t P) {
  const index_t B = o[0], T = o[1], H = o[2], V = o[3];
  std::vector<double> ref(static_cast<std::size_t>(B * T * H * V));
  const auto put = [&](const std::vector<double>& rows_bt, index_t t0, index_t n) {
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < n; ++t)
        std::copy_n(rows_bt.begin() + (b * n + t) * H * V, H * V,
                    ref.begin() + (b * T + t0 + t) * H * V);
  };
  if (P > 0)
    put(run_ref<hybrid::AgentAttention>(
            {rows(in.q, 0, P), rows(in.k, 0, P), rows(in.v, 0, P), in.agents}, {}, {B, P, H, V}),
        0, P);
  for (index_t t = P; t < T; ++t)
    put(run_ref<hybrid::AgentAttention>(
            {rows(in.q, t, t + 1), rows(in.k, 0, t + 1), rows(in.v, 0, t + 1), in.agents}, {},
            {B, 1, H, V}),
        t, 1);
  return ref;
}

template <Element T>
void agent_attention() {
  Worst worst;
  std::uint64_t seed = 500;
  for (const HybridShape& s : shapes()) {
    const Rounded<T> r(s, seed += 10);
    const AgentInputs in32 = r.agent(false), inT = r.agent(true);
    // The first pass (agents over k, v) is the one whose inputs are all of type T.
    const bool amx = bf16_products(inT.agents, inT.k, inT.v);
    prefill_case<hybrid::AgentAttention, T>(in32, inT, {}, r.f.out_shape(), amx, "agent " + s.str(),
                                            worst);
    if (!s.lens.empty()) continue;
    // The decoders hold their agents (the T ones widen them): calls leave in.agents empty.
    hybrid::AgentDecoder a32(in32.agents, s.V, {}), aF(inT.agents, s.V, {}),
        aT(inT.agents, s.V, {});
    AgentInputs d32 = in32, dT = inT;
    d32.agents = {};
    dT.agents = {};
    const index_t P = 40;
    const std::vector<float> o32 = decode_all<hybrid::AgentAttention>(a32, d32, r.f.out_shape(), P);
    const std::vector<float> of = decode_all<hybrid::AgentAttention>(aF, dT, r.f.out_shape(), P);
    const std::vector<T> ot = decode_all<hybrid::AgentAttention, T>(aT, dT, r.f.out_shape(), P);
    expect_typed(of, ot, o32, agent_decode_reference(in32, r.f.out_shape(), P), false,
                 "agent decoder", worst);
  }
  worst.print("agent attention", kName<T>);
}

TEST(HybridPrecision, AgentAttentionBf16) {
  agent_attention<bf16>();
}
TEST(HybridPrecision, AgentAttentionFp16) {
  agent_attention<f16>();
}

// Agent attention takes any mix of element types (two softmax calls): the fp32 bits on the
// widened values.
TEST(HybridPrecision, AgentAttentionMixedTypes) {
  const Rounded<bf16> r(HybridShape{}, 600);
  const auto shape = r.f.out_shape();
  const std::vector<float> want = run_fast<hybrid::AgentAttention>(r.agent(false), {}, shape);
  AgentInputs mix = r.agent(true);  // q, v bf16
  mix.k = r.f.k.cview();            // k, agents fp32
  mix.agents = r.agents.cview();
  expect_same_bits(run_fast<hybrid::AgentAttention>(mix, {}, shape), want, "q, v bf16");
}

// Based, LoLCATs and Liger take one element type for all activations: another type is an Error
// naming it, before anything is written (prefill and decoder step).
TEST(HybridPrecision, MixedTypesAreNamedErrors) {
  HybridShape s;
  s.T = 10;
  const Rounded<bf16> rb(s, 700);
  const Rounded<f16> rh(s, 700);
  const auto shape = rb.f.out_shape();
  Tensor<bf16, 4> o(shape, from_float<bf16>(kSentinel));
  const std::vector<bf16> untouched = o.data;
  const auto expect_named = [&](const std::string& name, const auto& call) {
    try {
      call();
      ADD_FAILURE() << "no Error for " << name;
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), name) << e.what();
      EXPECT_NE(std::string(e.what()).find("same element type"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(same_bits(o.data, untouched)) << name << ": o written";
  };
  BasedHybridOptions bo;
  bo.window = 4;
  BasedHybridInputs b = rb.based(true);
  b.k = rb.f.k.cview();  // q bf16, k fp32
  expect_named("k", [&] { hybrid::based_hybrid(b, bo, o.view()); });
  b = rb.based(true);
  b.lin_q = rh.based(true).lin_q;  // lin_q fp16
  expect_named("lin_q", [&] { hybrid::based_hybrid(b, bo, o.view()); });
  b = rb.based(false);
  b.v = rb.based(true).v;  // q fp32, v bf16
  expect_named("v", [&] { hybrid::based_hybrid(b, bo, o.view()); });

  LolcatsOptions lo;
  lo.window = 4;
  LolcatsInputs l = rb.lolcats(true);
  l.phi_k = rb.f.pk.cview();
  expect_named("phi_k", [&] { hybrid::lolcats(l, lo, o.view()); });

  LigerOptions go;
  go.window = 4;
  LigerInputs g = rb.liger(true, false);
  g.lin_k = rh.liger(true, false).lin_k;
  expect_named("lin_k", [&] { hybrid::liger(g, go, o.view()); });

  // A decoder's step refuses the same way and stays usable.
  const hybrid::DecoderShape ds{s.B, s.H, s.D, s.V, s.K, 4};
  hybrid::LigerDecoder dec(ds, go);
  g = rows(rb.liger(true, false), 0, 1);
  g.v = rows(rb.liger(false, false), 0, 1).v;
  expect_named("v", [&] { dec.step(g, rows(o.view(), 0, 1)); });
  EXPECT_EQ(dec.position(), 0);
}

}  // namespace
