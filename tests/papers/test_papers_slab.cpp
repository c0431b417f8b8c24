// SLAB's simplified linear attention (papers/slab.hpp) and the causal token convolution it uses
// (papers/token_conv.hpp): against the pairwise reference (reference/papers.hpp) for every
// algorithm, with initial state and conv history, GVA, varlen, decode and bad arguments.
#include <gtest/gtest.h>

#include <cmath>

#include "papers/papers_harness.hpp"
#include "polyattn/papers/slab.hpp"
#include "polyattn/reference/papers.hpp"
#include "polyattn/testing.hpp"

namespace polyattn::test {
namespace {

struct Shape {
  index_t B, T, H, HV, K, V, W;
  bool per_head;  // conv kernel per value head (else shared, as SLAB's)
};

struct Data {
  Shape s;
  std::vector<float> q, k, v, h0, z0, w, bias, cache;
  Data(const Shape& sh, std::uint64_t seed) : s(sh) {
    q = random_vector(count(s.B, s.T, s.H, s.K), seed + 1);
    k = random_vector(count(s.B, s.T, s.H, s.K), seed + 2);
    v = random_vector(count(s.B, s.T, s.HV, s.V), seed + 3);
    h0 = random_vector(count(s.B, s.HV, s.K, s.V), seed + 4, 0.f, 0.5f);
    z0 = random_vector(count(s.B, s.HV, s.K), seed + 5, 0.f, 1.f);
    w = random_vector(count(s.per_head ? s.HV : 1, s.V, s.W), seed + 6, -0.5f, 0.5f);
    bias = random_vector(count(s.V), seed + 7, -0.1f, 0.1f);
    cache = random_vector(count(s.B, s.HV, s.W - 1, s.V), seed + 8);
  }
  LinearInputs inputs(bool with_h0) const {
    LinearInputs in{.q = bthd(q.data(), s.B, s.T, s.H, s.K),
                    .k = bthd(k.data(), s.B, s.T, s.H, s.K),
                    .v = bthd(v.data(), s.B, s.T, s.HV, s.V)};
    if (with_h0) {
      in.initial_state = bhkv(h0.data(), s.B, s.HV, s.K, s.V);
      in.initial_z = View3<const float>::contiguous(z0.data(), {s.B, s.HV, s.K});
    }
    return in;
  }
  papers::TokenConv conv() const {
    return {
        .weight = View4<const float>::contiguous(w.data(), {1, s.per_head ? s.HV : 1, s.V, s.W}),
        .bias = View1<const float>::contiguous(bias.data(), {s.V})};
  }
  View4<const float> cache_in(bool with_h0) const {
    if (!with_h0 || s.W == 1) return {};
    return View4<const float>::contiguous(cache.data(), {s.B, s.HV, s.W - 1, s.V});
  }
};

// The expected output: SLA (pairwise) plus the conv, both in double.
std::vector<double> expected(const Data& d, bool with_h0) {
  const auto& s = d.s;
  std::vector<double> r(count(s.B, s.T, s.HV, s.V));
  const auto rv = bthd(r.data(), s.B, s.T, s.HV, s.V);
  const LinearInputs in = d.inputs(with_h0);
  reference::slab<double>(in, 1e-6, rv);
  reference::token_conv<double>(in.v.as<float>(), d.conv(), d.cache_in(with_h0), {}, rv);
  return r;
}

template <class Algo>
void expect_matches(const Data& d, bool with_h0, const std::string& what) {
  const auto& s = d.s;
  std::vector<float> o(count(s.B, s.T, s.HV, s.V), NAN);
  papers::Slab().forward<Algo>(d.inputs(with_h0), d.conv(), {.in = d.cache_in(with_h0)},
                               {.o = bthd(o.data(), s.B, s.T, s.HV, s.V)});
  EXPECT_LT(rel_rmse(o, expected(d, with_h0)), kRelRmseBound) << what;
}

TEST(PapersSlab, MatchesReferenceEveryAlgorithm) {
  const Shape shapes[] = {{1, 1, 1, 1, 16, 16, 5, false},
                          {2, 33, 1, 2, 8, 5, 3, true},
                          {1, 65, 2, 4, 16, 12, 5, false},
                          {1, 70, 1, 1, 32, 24, 1, false}};
  std::uint64_t seed = 300;
  for (const Shape& sh : shapes) {
    const Data d(sh, seed += 10);
    for (bool h0 : {false, true}) {
      const std::string tag = std::to_string(sh.T) + (h0 ? "_h0" : "");
      expect_matches<Recurrent>(d, h0, tag + " recurrent");
      expect_matches<Chunked<16>>(d, h0, tag + " chunked16");
      expect_matches<Chunked<64>>(d, h0, tag + " chunked64");
      expect_matches<Parallel>(d, h0, tag + " parallel");
    }
  }
}

// Prefill in two pieces carrying (S, z) and the conv history equals one call; then decode
// token by token with everything in place continues it, against the reference over all tokens.
TEST(PapersSlab, SplitPrefillAndDecodeContinue) {
  const index_t B = 2, T = 40, H = 1, HV = 2, K = 8, V = 6, W = 4, cut = 23, P = 30;
  const Data d({B, T, H, HV, K, V, W, true}, 77);
  const papers::Slab op;
  auto slice = [&](const std::vector<float>& x, index_t per_token, index_t t0, index_t n) {
    std::vector<float> out(count(B, n, per_token));
    for (index_t b = 0; b < B; ++b)
      std::copy_n(x.data() + (b * T + t0) * per_token, n * per_token,
                  out.data() + b * n * per_token);
    return out;
  };
  std::vector<float> state(count(B, HV, K, V)), z(count(B, HV, K)), cache(count(B, HV, W - 1, V));
  std::vector<float> o_all(count(B, T, HV, V));
  auto put = [&](const std::vector<float>& o, index_t t0, index_t n) {
    for (index_t b = 0; b < B; ++b)
      std::copy_n(o.data() + b * n * HV * V, n * HV * V, o_all.data() + (b * T + t0) * HV * V);
  };
  const auto sv = bhkv(state.data(), B, HV, K, V);
  const auto zv = View3<float>::contiguous(z.data(), {B, HV, K});
  const auto cv = View4<float>::contiguous(cache.data(), {B, HV, W - 1, V});
  // Piece 1: [0, cut), piece 2: [cut, P) from the carried state, then steps [P, T).
  index_t t0 = 0;
  for (index_t n : {cut, P - cut}) {
    auto q = slice(d.q, H * K, t0, n), k = slice(d.k, H * K, t0, n), v = slice(d.v, HV * V, t0, n);
    std::vector<float> o(count(B, n, HV, V));
    const std::vector<float> s0 = state, z0 = z, c0 = cache;
    LinearInputs in{.q = bthd(q.data(), B, n, H, K),
                    .k = bthd(k.data(), B, n, H, K),
                    .v = bthd(v.data(), B, n, HV, V)};
    if (t0 > 0) {
      in.initial_state = bhkv(s0.data(), B, HV, K, V);
      in.initial_z = View3<const float>::contiguous(z0.data(), {B, HV, K});
    }
    op.forward<Chunked<16>>(
        in, d.conv(),
        {.in = t0 > 0 ? View4<const float>::contiguous(c0.data(), {B, HV, W - 1, V})
                      : View4<const float>{},
         .out = cv},
        {.o = bthd(o.data(), B, n, HV, V), .final_state = sv, .final_z = zv});
    put(o, t0, n);
    t0 += n;
  }
  for (; t0 < T; ++t0) {
    auto q = slice(d.q, H * K, t0, 1), k = slice(d.k, H * K, t0, 1), v = slice(d.v, HV * V, t0, 1);
    std::vector<float> o(count(B, 1, HV, V));
    op.step({.q = bthd(q.data(), B, 1, H, K),
             .k = bthd(k.data(), B, 1, H, K),
             .v = bthd(v.data(), B, 1, HV, V)},
            sv, zv, d.conv(), cv, bthd(o.data(), B, 1, HV, V));
    put(o, t0, 1);
  }
  EXPECT_LT(rel_rmse(o_all, expected(d, false)), kRelRmseBound);
  // The carried conv cache is the last W−1 values.
  std::vector<float> last(cache.size());
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < HV; ++h)
      for (index_t j = 0; j < W - 1; ++j)
        for (index_t c = 0; c < V; ++c)
          last[count(((b * HV + h) * (W - 1) + j)) * V + c] =
              d.v[count(((b * T + T - W + 1 + j) * HV + h)) * V + c];
  EXPECT_TRUE(same_bits(last, cache));
}

TEST(PapersSlab, VarlenEqualsSeparateCalls) {
  const index_t T = 50, H = 1, HV = 2, K = 8, V = 5, W = 3;
  const std::vector<std::int64_t> cu{0, 20, 20, 50};
  const Data d({1, T, H, HV, K, V, W, false}, 91);
  const papers::Slab op;
  std::vector<float> o(count(T, HV, V)), cache_out(count(3, HV, W - 1, V));
  LinearInputs in = d.inputs(false);
  in.cu_seqlens = cu;
  op.forward<Recurrent>(in, d.conv(),
                        {.out = View4<float>::contiguous(cache_out.data(), {3, HV, W - 1, V})},
                        {.o = bthd(o.data(), 1, T, HV, V)});
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t t0 = cu[n], L = cu[n + 1] - cu[n];
    std::vector<float> cn(count(HV, W - 1, V));
    const auto cnv = View4<float>::contiguous(cn.data(), {1, HV, W - 1, V});
    if (L == 0) {  // no history: the cache of an empty sequence is zeros
      EXPECT_TRUE(same_bits(cn, std::vector<float>(cache_out.begin() + n * cn.size(),
                                                   cache_out.begin() + (n + 1) * cn.size())));
      continue;
    }
    std::vector<float> on(count(L, HV, V));
    op.forward<Recurrent>({.q = bthd(d.q.data() + t0 * H * K, 1, L, H, K),
                           .k = bthd(d.k.data() + t0 * H * K, 1, L, H, K),
                           .v = bthd(d.v.data() + t0 * HV * V, 1, L, HV, V)},
                          d.conv(), {.out = cnv}, {.o = bthd(on.data(), 1, L, HV, V)});
    EXPECT_TRUE(
        same_bits(on, std::vector<float>(o.begin() + t0 * HV * V, o.begin() + (t0 + L) * HV * V)));
    EXPECT_TRUE(same_bits(cn, std::vector<float>(cache_out.begin() + n * cn.size(),
                                                 cache_out.begin() + (n + 1) * cn.size())));
  }
}

TEST(PapersTokenConv, PerSequenceKernelAndHistory) {
  // InLine's form: one kernel per (sequence, head, channel), history from a cache.
  const index_t B = 2, T = 9, H = 3, V = 4, W = 3;
  const auto x = random_vector(count(B, T, H, V), 1);
  const auto w = random_vector(count(B, H, V, W), 2);
  const auto hist = random_vector(count(B, H, W - 1, V), 3);
  const papers::TokenConv conv{.weight = View4<const float>::contiguous(w.data(), {B, H, V, W})};
  const auto hv = View4<const float>::contiguous(hist.data(), {B, H, W - 1, V});
  std::vector<float> o(count(B, T, H, V), 0.5f);
  std::vector<double> r(o.size(), 0.5);
  papers::token_conv_add(bthd(x.data(), B, T, H, V), conv, {.in = hv}, {},
                         bthd(o.data(), B, T, H, V));
  reference::token_conv<double>(bthd(x.data(), B, T, H, V), conv, hv, {},
                                bthd(r.data(), B, T, H, V));
  EXPECT_LT(rel_rmse(o, r), 1e-6);
}

TEST(PapersSlab, BadArgumentsLeaveOutputsUntouched) {
  const Data d({1, 9, 1, 2, 4, 3, 3, false}, 61);
  const auto& s = d.s;
  const papers::Slab op;
  std::vector<float> o(count(s.T, s.HV, s.V), 7.f), cache(count(s.HV, s.W - 1, s.V), 7.f);
  const LinearOutputs<float> out{.o = bthd(o.data(), 1, s.T, s.HV, s.V)};
  const auto in = d.inputs(false);
  auto conv_with = [&](std::array<index_t, 4> shape) {
    return papers::TokenConv{.weight = View4<const float>::contiguous(d.w.data(), shape)};
  };
  expect_error_untouched(
      [&] {
        op.forward(in, conv_with({1, 1, s.V + 1, s.W}), {}, out);
      },
      "conv.weight", o, "kernel of another channel count");
  expect_error_untouched(
      [&] {
        op.forward(in, conv_with({2, 1, s.V, s.W}), {}, out);
      },
      "conv.weight", o, "kernel for 2 sequences, 1 given");
  expect_error_untouched(
      [&] {
        op.forward(in, conv_with({1, 1, s.V, 0}), {}, out);
      },
      "conv.weight", o, "width 0");
  expect_error_untouched([&] { op.forward(in, {}, {}, out); }, "conv.weight", o, "no kernel");
  papers::TokenConv bad_bias = d.conv();
  bad_bias.bias = View1<const float>::contiguous(d.bias.data(), {s.V - 1});
  expect_error_untouched([&] { op.forward(in, bad_bias, {}, out); }, "conv.bias", o, "bias");
  expect_error_untouched(
      [&] {
        op.forward(in, d.conv(),
                   {.out = View4<float>::contiguous(cache.data(), {1, s.HV, s.W, s.V - 1})}, out);
      },
      "conv_cache.out", o, "cache shape");
  expect_error_untouched(
      [&] {
        op.forward(in, conv_with({1, 1, s.V, 1}),
                   {.out = View4<float>::contiguous(cache.data(), {1, s.HV, 0, s.V})}, out);
      },
      "conv_cache.out", o, "cache of a width-1 conv");
  // The linear part's own checks (z without the state's normaliser shape) come first as well.
  LinearInputs bad_z = d.inputs(true);
  bad_z.initial_z = View3<const float>::contiguous(d.z0.data(), {1, s.HV, s.K - 1});
  expect_error_untouched([&] { op.forward(bad_z, d.conv(), {}, out); }, "initial_z", o, "z shape");
  // step: the conv cache is checked before the state is touched.
  std::vector<float> st(count(s.HV, s.K, s.V), 7.f), z(count(s.HV, s.K), 7.f);
  LinearInputs one{.q = bthd(d.q.data(), 1, 1, s.H, s.K),
                   .k = bthd(d.k.data(), 1, 1, s.H, s.K),
                   .v = bthd(d.v.data(), 1, 1, s.HV, s.V)};
  expect_error_untouched(
      [&] {
        op.step(one, bhkv(st.data(), 1, s.HV, s.K, s.V),
                View3<float>::contiguous(z.data(), {1, s.HV, s.K}), d.conv(),
                View4<float>::contiguous(cache.data(), {1, s.HV, s.W, s.V}),
                bthd(o.data(), 1, 1, s.HV, s.V));
      },
      "conv_cache.in", st, "step cache shape");
}

}  // namespace
}  // namespace polyattn::test
