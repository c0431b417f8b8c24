// tests/hybrid/test_hybrid_errors.cpp — bad arguments of the hybrid operators and decoders throw
// a polyattn::Error naming the argument and write nothing: the output keeps its sentinel and a
// decoder that refused a call continues exactly (same bits) as one that never saw it.
#include <gtest/gtest.h>

#include "hybrid/hybrid_harness.hpp"

namespace {

using namespace polyattn;
using namespace polyattn::test;

const std::vector<std::int64_t> kCuBad{0, 3, 2, 10};  // non-monotone (B must be 1 anyway)

TEST(HybridErrors, BasedHybrid) {
  HybridShape s;
  s.T = 10;
  HybridData d(s, 1);
  auto shortv = random4({s.B, s.T - 1, s.H, s.V}, 2);
  auto badlk = random4({s.B, s.T, s.H, s.K + 1}, 3);
  Tensor<float, 4> o(d.out_shape(), kSentinel), obad({s.B, s.T, s.H, s.V + 1}, kSentinel);
  BasedHybridOptions opt;
  opt.window = 4;
  auto call = [&](BasedHybridInputs in, BasedHybridOptions op, View4<float> out) {
    return [=] { hybrid::based_hybrid(in, op, out); };
  };
  auto with = [&](auto f) {
    auto in = d.based();
    auto op = opt;
    f(in, op);
    return call(in, op, o.view());
  };
  expect_bad("q", with([](auto& in, auto&) { in.q = {}; }), o.data);
  expect_bad("v", with([&](auto& in, auto&) { in.v = shortv.cview(); }), o.data);
  expect_bad("lin_k", with([&](auto& in, auto&) { in.lin_k = badlk.cview(); }), o.data);
  expect_bad("cu_seqlens", with([&](auto& in, auto&) { in.cu_seqlens = kCuBad; }), o.data);
  expect_bad("window", with([](auto&, auto& op) { op.window = 0; }), o.data);
  expect_bad("based_scale", with([](auto&, auto& op) { op.based_scale = -1.0; }), o.data);
  expect_bad("softmax_scale", with([](auto&, auto& op) { op.softmax_scale = 0.0; }), o.data);
  expect_bad("eps", with([](auto&, auto& op) { op.eps = NAN; }), o.data);
  expect_bad("o", call(d.based(), opt, obad.view()), obad.data);
  expect_bad("o", call(d.based(), opt, {}), o.data);
}

TEST(HybridErrors, Lolcats) {
  HybridShape s;
  s.T = 10;
  HybridData d(s, 4);
  auto badpk = random4({s.B, s.T, s.H, s.K + 2}, 5);
  Tensor<float, 4> o(d.out_shape(), kSentinel);
  LolcatsOptions opt;
  opt.window = 3;
  auto with = [&](auto f) {
    auto in = d.lolcats();
    auto op = opt;
    f(in, op);
    return [=, out = o.view()] { hybrid::lolcats(in, op, out); };
  };
  expect_bad("k", with([&](auto& in, auto&) { in.k = d.lq.cview(); }), o.data);
  expect_bad("phi_q", with([](auto& in, auto&) { in.phi_q = {}; }), o.data);
  expect_bad("phi_k", with([&](auto& in, auto&) { in.phi_k = badpk.cview(); }), o.data);
  expect_bad("cu_seqlens", with([&](auto& in, auto&) { in.cu_seqlens = kCuBad; }), o.data);
  expect_bad("window", with([](auto&, auto& op) { op.window = -2; }), o.data);
  expect_bad("window_factor", with([](auto&, auto& op) { op.window_factor = 0.0; }), o.data);
  expect_bad("scale", with([](auto&, auto& op) { op.scale = INFINITY; }), o.data);
}

TEST(HybridErrors, Liger) {
  HybridShape s;
  s.T = 10;
  HybridData d(s, 6);
  auto badgk = random4({s.B, s.T, s.H, s.K + 1}, 7);
  Tensor<float, 4> o(d.out_shape(), kSentinel);
  LigerOptions opt;
  opt.window = 3;
  auto with = [&](auto f) {
    auto in = d.liger(false);
    auto op = opt;
    f(in, op);
    return [=, out = o.view()] { hybrid::liger(in, op, out); };
  };
  expect_bad("g", with([](auto& in, auto&) { in.g = {}; }), o.data);
  expect_bad("gk", with([&](auto& in, auto&) { in.gk = d.gk.cview(); }), o.data);
  expect_bad("gk", with([&](auto& in, auto&) {
               in.g = {};
               in.gk = badgk.cview();
             }),
             o.data);
  expect_bad("lin_k", with([&](auto& in, auto&) { in.lin_q = badgk.cview(); }), o.data);
  expect_bad("alpha", with([](auto&, auto& op) { op.alpha = NAN; }), o.data);
  expect_bad("beta", with([](auto&, auto& op) { op.beta = INFINITY; }), o.data);
  expect_bad("gla_scale", with([](auto&, auto& op) { op.gla_scale = -0.5; }), o.data);
  expect_bad("window", with([](auto&, auto& op) { op.window = 0; }), o.data);
}

TEST(HybridErrors, AgentAttention) {
  auto q = random4({2, 5, 2, 8}, 1), k = random4({2, 7, 2, 8}, 2), v = random4({2, 7, 2, 4}, 3);
  auto a = random4({2, 3, 2, 8}, 4), abad = random4({2, 3, 2, 6}, 5);
  Tensor<float, 4> o({2, 5, 2, 4}, kSentinel);
  const AgentInputs good{q.cview(), k.cview(), v.cview(), a.cview()};
  auto with = [&](auto f, AgentOptions op = {}) {
    auto in = good;
    f(in);
    return [=, out = o.view()] { hybrid::agent_attention(in, op, out); };
  };
  expect_bad("agents", with([](auto& in) { in.agents = {}; }), o.data);
  expect_bad("agents", with([&](auto& in) { in.agents = abad.cview(); }), o.data);
  expect_bad("v", with([&](auto& in) { in.v = q.cview(); }), o.data);
  expect_bad("k", with([&](auto& in) { in.k = v.cview(); }), o.data);
  AgentOptions neg;
  neg.scale = -1.0;
  expect_bad("scale", with([](auto&) {}, neg), o.data);
  expect_bad("cu_seqlens", with([&](auto& in) { in.cu_seqlens = kCuBad; }), o.data, "B 2");

  // Varlen: q, k, v [1, 6, ...] packed as two sequences, agents [2, n, H, D].
  auto q1 = random4({1, 6, 2, 8}, 6), k1 = random4({1, 6, 2, 8}, 7), v1 = random4({1, 6, 2, 4}, 8);
  auto a3 = random4({3, 3, 2, 8}, 9);
  Tensor<float, 4> o1({1, 6, 2, 4}, kSentinel);
  const std::vector<std::int64_t> cu{0, 2, 6}, cu_short{0, 2, 5};
  AgentInputs packed{q1.cview(), k1.cview(), v1.cview(), a.cview()};
  packed.cu_seqlens = cu;
  auto with1 = [&](auto f) {
    auto in = packed;
    f(in);
    return [=, out = o1.view()] { hybrid::agent_attention(in, {}, out); };
  };
  expect_bad("cu_seqlens", with1([&](auto& in) { in.cu_seqlens = cu_short; }), o1.data);
  expect_bad("k", with1([&](auto& in) { in.k = rows(k1.cview(), 0, 5); }), o1.data, "S != T");
  expect_bad("agents", with1([&](auto& in) { in.agents = a3.cview(); }), o1.data, "3 agent rows");
  hybrid::agent_attention(packed, {}, o1.view());
  for (float x : o1.data) ASSERT_NE(x, kSentinel);
}

// A decoder keeps working exactly as before after refusing a call.
// make() builds a fresh decoder; both get the same prefill, only one the bad calls.
template <class C, class Make, class Bad>
void expect_decoder_unchanged(Make&& make, const typename C::Inputs& in,
                              std::array<index_t, 4> oshape, Bad&& bad_calls) {
  typename C::Decoder dec = make(), twin = make();
  const index_t P = 5;
  Tensor<float, 4> o(oshape, kSentinel);
  dec.prefill(rows(in, 0, P), rows(o.view(), 0, P));
  twin.prefill(rows(in, 0, P), rows(o.view(), 0, P));
  Tensor<float, 4> ob({oshape[0], 1, oshape[2], oshape[3]}, kSentinel);
  bad_calls(dec, rows(in, P, P + 1), ob);
  EXPECT_EQ(dec.position(), P);
  for (index_t t = P; t < oshape[1]; ++t) {
    Tensor<float, 4> x({oshape[0], 1, oshape[2], oshape[3]}), y = x;
    dec.step(rows(in, t, t + 1), x.view());
    twin.step(rows(in, t, t + 1), y.view());
    expect_same_bits(x.data, y.data, "step " + std::to_string(t));
  }
}

TEST(HybridErrors, Decoders) {
  HybridShape s;
  s.T = 12;
  HybridData d(s, 8);
  const hybrid::DecoderShape ds{s.B, s.H, s.D, s.V, s.K, 4};
  BasedHybridOptions bopt;
  bopt.window = 3;
  // Construction.
  EXPECT_THROW(hybrid::BasedHybridDecoder({0, 2, 8, 8, 0, 4}, bopt), Error);
  try {
    hybrid::BasedHybridDecoder({2, 2, 8, 8, 0, 0}, bopt);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "page_size");
  }
  try {
    hybrid::LigerDecoder(ds, LigerOptions{});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "window");
  }

  expect_decoder_unchanged<hybrid::BasedHybrid>(
      [&] { return hybrid::BasedHybridDecoder(ds, bopt); }, d.based(), d.out_shape(),
      [&](hybrid::BasedHybridDecoder& dec, BasedHybridInputs in, Tensor<float, 4>& o) {
        auto two = rows(d.based(), 5, 7);
        Tensor<float, 4> o2({s.B, 2, s.H, s.V}, kSentinel);
        expect_bad(
            "q", [&] { dec.step(two, o2.view()); }, o2.data, "two tokens");
        auto no_lin = in;
        no_lin.lin_q = no_lin.lin_k = {};  // q has D 16, the decoder's lin_dim is 8
        expect_bad(
            "lin_q", [&] { dec.step(no_lin, o.view()); }, o.data, "lin default");
        auto bad_v = in;  // value dim D instead of the decoder's V (o to match)
        bad_v.v = rows(d.q.cview(), 5, 6);
        Tensor<float, 4> ov({s.B, 1, s.H, s.D}, kSentinel);
        expect_bad(
            "v", [&] { dec.step(bad_v, ov.view()); }, ov.data, "v");
        const std::vector<std::int64_t> cu{0, 1};
        auto varlen = in;
        varlen.cu_seqlens = cu;
        expect_bad(
            "cu_seqlens", [&] { dec.step(varlen, o.view()); }, o.data, "varlen");
        expect_bad(
            "decoder", [&] { dec.prefill(in, o.view()); }, o.data, "prefill after prefill");
      });

  LolcatsOptions lopt;
  lopt.window = 2;
  expect_decoder_unchanged<hybrid::Lolcats>(
      [&] { return hybrid::LolcatsDecoder(ds, lopt); }, d.lolcats(), d.out_shape(),
      [&](hybrid::LolcatsDecoder& dec, LolcatsInputs in, Tensor<float, 4>& o) {
        auto bad_phi = in;
        bad_phi.phi_q = bad_phi.phi_k = rows(d.q.cview(), 5, 6);  // F 16, decoder 8
        expect_bad(
            "phi_q", [&] { dec.step(bad_phi, o.view()); }, o.data, "phi");
        Tensor<float, 4> obad({s.B, 1, s.H, s.V + 1}, kSentinel);
        expect_bad(
            "o", [&] { dec.step(in, obad.view()); }, obad.data, "o");
      });

  LigerOptions gopt;
  gopt.window = 3;
  expect_decoder_unchanged<hybrid::Liger>(
      [&] { return hybrid::LigerDecoder(ds, gopt); }, d.liger(true), d.out_shape(),
      [&](hybrid::LigerDecoder& dec, LigerInputs in, Tensor<float, 4>& o) {
        auto both = in;
        both.g = rows(d.g.cview(), 5, 6);
        expect_bad(
            "gk", [&] { dec.step(both, o.view()); }, o.data, "two gates");
        auto none = in;
        none.gk = {};
        expect_bad(
            "g", [&] { dec.step(none, o.view()); }, o.data, "no gate");
      });
}

TEST(HybridErrors, AgentDecoder) {
  auto q = random4({2, 6, 2, 8}, 1), k = random4({2, 6, 2, 8}, 2), v = random4({2, 6, 2, 4}, 3);
  auto a = random4({2, 3, 2, 8}, 4);
  try {
    hybrid::AgentDecoder(a.cview(), 0, {});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "value_dim");
  }
  hybrid::AgentDecoder dec(a.cview(), 4, {});
  const AgentInputs step_in{
      rows(q.cview(), 0, 1), rows(k.cview(), 0, 1), rows(v.cview(), 0, 1), {}};
  Tensor<float, 4> o({2, 1, 2, 4}, kSentinel);
  auto with_agents = step_in;
  with_agents.agents = a.cview();
  expect_bad(
      "agents", [&] { dec.step(with_agents, o.view()); }, o.data, "agents given");
  auto two_keys = step_in;
  two_keys.k = rows(k.cview(), 0, 2);
  two_keys.v = rows(v.cview(), 0, 2);
  expect_bad(
      "k", [&] { dec.step(two_keys, o.view()); }, o.data, "two keys");
  auto bad_v = step_in;  // value dim 8 instead of the decoder's 4 (o to match)
  bad_v.v = rows(q.cview(), 0, 1);
  Tensor<float, 4> ov({2, 1, 2, 8}, kSentinel);
  expect_bad(
      "v", [&] { dec.step(bad_v, ov.view()); }, ov.data, "v");
  EXPECT_EQ(dec.position(), 0);

  // Ragged batches: cu_seqlens in prefill() only, packing the decoder's 2 sequences.
  auto q1 = random4({1, 6, 2, 8}, 6), k1 = random4({1, 6, 2, 8}, 7), v1 = random4({1, 6, 2, 4}, 8);
  Tensor<float, 4> o1({1, 6, 2, 4}, kSentinel);
  const std::vector<std::int64_t> cu{0, 2, 6}, one_seq{0, 6}, cu_one{0, 1, 2};
  AgentInputs packed{q1.cview(), k1.cview(), v1.cview(), {}};
  packed.cu_seqlens = one_seq;
  expect_bad(
      "cu_seqlens", [&] { dec.prefill(packed, o1.view()); }, o1.data, "1 sequence for 2");
  packed.cu_seqlens = cu;
  auto short_k = packed;
  short_k.k = rows(k1.cview(), 0, 5);
  expect_bad(
      "k", [&] { dec.prefill(short_k, o1.view()); }, o1.data, "S != T");
  auto step_varlen = step_in;
  step_varlen.cu_seqlens = cu_one;
  expect_bad(
      "cu_seqlens", [&] { dec.step(step_varlen, o.view()); }, o.data, "step varlen");
  EXPECT_EQ(dec.position(0), 0);
  EXPECT_EQ(dec.position(1), 0);
  {
    hybrid::AgentDecoder rag(a.cview(), 4, {});
    rag.prefill(packed, o1.view());
    EXPECT_EQ(rag.position(0), 2);
    EXPECT_EQ(rag.position(1), 4);
    Tensor<float, 4> o2({1, 6, 2, 4}, kSentinel);
    expect_bad(
        "decoder", [&] { rag.prefill(packed, o2.view()); }, o2.data, "prefill after varlen");
  }
  dec.step(step_in, o.view());
  expect_bad(
      "decoder", [&] { dec.prefill(step_in, o.view()); }, std::vector<float>{}, "prefill");
}

}  // namespace
