// The hostile-user cases of the hardening issue as regression tests, through the public API:
// sizes that overflow int64, outputs overlapping inputs or themselves, KVCache edges, and
// zero-size tensors (valid wherever the math allows). Each bad call must be a polyattn::Error
// naming the argument with the outputs untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/expect_error.hpp"
#include "common/test_util.hpp"
#include "polyattn/polyattn.hpp"

namespace {

namespace pa = polyattn;
using pa::index_t;
using pa::View1;
using pa::View3;
using pa::View4;
using pa::test::expect_error;
using pa::test::random_vector;

constexpr float kSentinel = 12345.f;

bool all_equal(const std::vector<float>& x, float value) {
  for (float e : x)
    if (e != value) return false;
  return true;
}

// ---- sizes that do not fit ------------------------------------------------------------------

TEST(MisuseOverflow, HugeZeroStrideTensorsAreRejectedNotRun) {
  // [1, 2^32, 2^32, 4] with zero strides: 2^66 elements. Before: validated, then ran "forever".
  const float x = 1.f;
  float o = 0.f;
  const index_t n = index_t{1} << 32;
  const View4<const float> huge(&x, {1, n, n, 4}, {0, 0, 0, 0});
  const View4<float> ohuge(&o, {1, n, n, 4}, {0, 0, 0, 0});
  expect_error("q", [&] {
    pa::presets::linear_attn{}.forward(pa::LinearInputs{.q = huge, .k = huge, .v = huge},
                                       pa::LinearOutputs<float>{.o = ohuge});
  });
  expect_error("q", [&] {
    pa::softmax::flash_attention(pa::SoftmaxInputs{.q = huge, .k = huge, .v = huge}, {}, ohuge);
  });
}

TEST(MisuseOverflow, KVCacheAndBlockMaskSizes) {
  using pa::softmax::KVCache;
  expect_error("capacity", [] { KVCache(1, 16, 64, 64, {.capacity = index_t{1} << 60}); });
  expect_error("page_size", [] { KVCache(1, 16, 64, 64, {.page_size = index_t{1} << 60}); });
  // Representable but not allocatable: a named error, not std::bad_alloc. (Not under ASan, whose
  // operator new reports a fatal error instead of throwing.)
#if !defined(__SANITIZE_ADDRESS__)
  expect_error("capacity", [] { KVCache(1, 1, 16, 16, {.capacity = index_t{1} << 44}); });
#endif
  expect_error("block_mask", [] { pa::BlockMask(1 << 16, 1 << 16, 1 << 16, 1 << 16, 16, 16); });
  expect_error("block_mask",
               [] { pa::BlockMask(1, 1, index_t{1} << 40, index_t{1} << 30, 16, 16); });
  EXPECT_EQ(pa::BlockMask::blocks_for(std::numeric_limits<index_t>::max(), 2),
            std::numeric_limits<index_t>::max() / 2 + 1);
}

// ---- outputs that overlap inputs ------------------------------------------------------------

// o written head-first over q's token-major buffer silently changed results before.
TEST(MisuseOverlap, OutputOverInputIsRejected) {
  constexpr index_t B = 1, T = 8, H = 2, D = 4;
  auto q = random_vector(B * T * H * D, 1), k = random_vector(B * T * H * D, 2),
       v = random_vector(B * T * H * D, 3), g = random_vector(B * T * H, 4, -0.5f, -0.1f),
       beta = random_vector(B * T * H, 5, 0.f, 1.f);
  const auto before = q;
  const View4<const float> qv = pa::bthd(static_cast<const float*>(q.data()), B, T, H, D);
  const View4<float> o_hf = pa::head_first(q.data(), B, T, H, D);
  pa::LinearInputs in{.q = qv,
                      .k = pa::bthd(static_cast<const float*>(k.data()), B, T, H, D),
                      .v = pa::bthd(static_cast<const float*>(v.data()), B, T, H, D),
                      .g = pa::bth(static_cast<const float*>(g.data()), B, T, H),
                      .beta = pa::bth(static_cast<const float*>(beta.data()), B, T, H)};
  const auto gdn = pa::presets::make_gated_delta_rule();
  expect_error("o", [&] { gdn.forward<pa::Chunked<16>>(in, {.o = o_hf}); });
  // Even exact aliasing of o and q: no linear operator reads q after writing o by contract.
  expect_error("o", [&] { gdn.forward(in, {.o = pa::bthd(q.data(), B, T, H, D)}); });
  // o over the gate tensor (a partial overlap).
  expect_error("o", [&] {
    gdn.forward(in, {.o = View4<float>(g.data(), {B, T, H, D}, {0, 0, 0, 1})});
  });
  EXPECT_EQ(q, before);

  const pa::SoftmaxInputs sin{.q = in.q.as<float>(), .k = in.k.as<float>(), .v = in.v.as<float>()};
  expect_error("o", [&] { pa::softmax::flash_attention(sin, {.causal = true}, o_hf); });
  std::vector<float> o(q.size(), kSentinel);
  const View3<float> lse_over_o(o.data() + 3, {B, T, H}, {T * H, H, 1});
  expect_error("lse", [&] {
    pa::softmax::flash_attention(sin, {.causal = true},
                                 {.o = pa::bthd(o.data(), B, T, H, D), .lse = lse_over_o});
  });
  EXPECT_TRUE(all_equal(o, kSentinel));
  EXPECT_EQ(q, before);
}

TEST(MisuseOverlap, OutputWithZeroOrInterleavedStrides) {
  constexpr index_t B = 1, T = 8, H = 2, D = 4;
  const auto q = random_vector(B * T * H * D, 1);
  const View4<const float> qv = pa::bthd(q.data(), B, T, H, D);
  std::vector<float> o(B * T * H * D, kSentinel);
  const View4<float> zero(o.data(), {B, T, H, D}, {0, 0, D, 1});
  const View4<float> interleaved(o.data(), {B, T, H, D}, {T * H * D, 2, 1, 4});
  expect_error(
      "o", [&] { pa::presets::linear_attn{}.forward({.q = qv, .k = qv, .v = qv}, {.o = zero}); });
  expect_error("o",
               [&] { pa::softmax::flash_attention({.q = qv, .k = qv, .v = qv}, {}, interleaved); });
  EXPECT_TRUE(all_equal(o, kSentinel));
}

// final_state over initial_state exactly is the supported in-place state update; the result
// equals the out-of-place one bit for bit, for every algorithm.
TEST(MisuseOverlap, InPlaceStateUpdateIsAllowedAndExact) {
  constexpr index_t B = 2, T = 37, H = 2, D = 8;
  const auto q = random_vector(B * T * H * D, 1), k = random_vector(B * T * H * D, 2),
             v = random_vector(B * T * H * D, 3), g = random_vector(B * T * H, 4, -0.3f, -0.01f),
             beta = random_vector(B * T * H, 5, 0.f, 1.f), s0 = random_vector(B * H * D * D, 6);
  const pa::LinearInputs base{.q = pa::bthd(q.data(), B, T, H, D),
                              .k = pa::bthd(k.data(), B, T, H, D),
                              .v = pa::bthd(v.data(), B, T, H, D),
                              .g = pa::bth(g.data(), B, T, H),
                              .beta = pa::bth(beta.data(), B, T, H)};
  const auto gdn = pa::presets::make_gated_delta_rule();
  auto run = [&](auto algo) {
    using Algo = decltype(algo);
    std::vector<float> o1(q.size()), o2(q.size()), s_out(s0.size()), s_inplace = s0;
    pa::LinearInputs in = base;
    in.initial_state = pa::bhkv(s0.data(), B, H, D, D);
    gdn.forward<Algo>(in, {.o = pa::bthd(o1.data(), B, T, H, D),
                           .final_state = pa::bhkv(s_out.data(), B, H, D, D)});
    in.initial_state = pa::bhkv(static_cast<const float*>(s_inplace.data()), B, H, D, D);
    gdn.forward<Algo>(in, {.o = pa::bthd(o2.data(), B, T, H, D),
                           .final_state = pa::bhkv(s_inplace.data(), B, H, D, D)});
    EXPECT_EQ(o1, o2);
    EXPECT_EQ(s_out, s_inplace);
  };
  run(pa::Recurrent{});
  run(pa::Chunked<16>{});
  run(pa::Parallel{});
}

// ---- KVCache edges --------------------------------------------------------------------------

TEST(MisuseKVCache, AccessorsCheckTheirIndices) {
  pa::softmax::KVCache cache(2, 1, 4, 4, {.capacity = 8, .gate_heads = 1});
  const std::vector<float> k(4, 1.f), g(1, -0.5f);
  const View4<const float> kv(k.data(), {1, 1, 1, 4}, {4, 4, 4, 1});
  cache.append_to(0, kv, kv, View3<const float>(g.data(), {1, 1, 1}, {1, 1, 1}));
  EXPECT_DOUBLE_EQ(cache.gate_cumsum(0, 0, 0), -0.5);
  expect_error("j", [&] { cache.gate_cumsum(0, 0, 100); });
  expect_error("j", [&] { cache.gate_cumsum(1, 0, 0); });  // sequence 1 is empty
  expect_error("h", [&] { cache.gate_cumsum(0, 1, 0); });
  expect_error("b", [&] { cache.gate_cumsum(2, 0, 0); });
  expect_error("hk", [&] { cache.run(0, 1, 0); });
  expect_error("j", [&] { cache.run(0, 0, -1); });
  EXPECT_EQ(cache.run(0, 0, 0).keys<float>()[0], 1.f);
  expect_error("b", [&] { cache.length(2); });
  expect_error("b", [&] { cache.length(-1); });
  expect_error("b", [&] { cache.first_kept(5); });
  expect_error("b", [&] { cache.drop_before(2, 0); });
}

// A paged cache appends after clear() into the pages drop_before() released.
TEST(MisuseKVCache, ClearAfterDropReusesPages) {
  pa::softmax::KVCache cache(1, 1, 4, 4, {.page_size = 2});
  std::vector<float> k(6 * 4);
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<float>(i);
  const View4<const float> kv(k.data(), {1, 6, 1, 4}, {24, 4, 4, 1});
  cache.append(kv, kv);
  cache.drop_before(0, 4);
  cache.clear();
  cache.append(kv, kv);
  EXPECT_EQ(cache.length(0), 6);
  for (index_t j = 0; j < 6; ++j)
    EXPECT_EQ(cache.run(0, 0, j).keys<float>()[0], static_cast<float>(4 * j));
  EXPECT_EQ(cache.pages_allocated(), 3);
}

// ---- zero-size tensors ------------------------------------------------------------------------

// T = 0 from empty std::vectors (null data): every linear algorithm returns the initial state
// (or zeros without one) as the final state; an empty sequence inside varlen likewise.
TEST(ZeroSize, LinearPrefillOfNoTokensReturnsTheInitialState) {
  constexpr index_t B = 2, H = 2, D = 8;
  const std::vector<float> none;
  const auto s0 = random_vector(B * H * D * D, 6);
  const pa::LinearInputs in{.q = pa::bthd(none.data(), B, 0, H, D),
                            .k = pa::bthd(none.data(), B, 0, H, D),
                            .v = pa::bthd(none.data(), B, 0, H, D),
                            .g = pa::bth(none.data(), B, 0, H),
                            .beta = pa::bth(none.data(), B, 0, H),
                            .initial_state = pa::bhkv(s0.data(), B, H, D, D)};
  std::vector<float> o_none;
  const auto gdn = pa::presets::make_gated_delta_rule();
  auto run = [&](auto algo, bool with_initial) {
    using Algo = decltype(algo);
    std::vector<float> s(s0.size(), kSentinel);
    pa::LinearInputs call = in;
    if (!with_initial) call.initial_state = {};
    gdn.forward<Algo>(call, {.o = pa::bthd(o_none.data(), B, 0, H, D),
                             .final_state = pa::bhkv(s.data(), B, H, D, D)});
    if (with_initial)
      EXPECT_EQ(s, s0);
    else
      EXPECT_TRUE(all_equal(s, 0.f));
  };
  for (bool init : {true, false}) {
    run(pa::Recurrent{}, init);
    run(pa::Chunked<64>{}, init);
    run(pa::Parallel{}, init);
  }
}

TEST(ZeroSize, VarlenWithAnEmptySequence) {
  constexpr index_t H = 1, D = 4, T = 5;
  const auto q = random_vector(T * H * D, 1), k = random_vector(T * H * D, 2),
             v = random_vector(T * H * D, 3);
  const auto s0 = random_vector(3 * H * D * D, 4);
  const std::vector<std::int64_t> cu{0, 3, 3, 5};
  std::vector<float> o(q.size()), s(s0.size(), kSentinel);
  pa::presets::linear_attn{}.template forward<pa::Chunked<16>>(
      {.q = pa::bthd(q.data(), 1, T, H, D),
       .k = pa::bthd(k.data(), 1, T, H, D),
       .v = pa::bthd(v.data(), 1, T, H, D),
       .initial_state = pa::bhkv(s0.data(), 3, H, D, D),
       .cu_seqlens = cu},
      {.o = pa::bthd(o.data(), 1, T, H, D), .final_state = pa::bhkv(s.data(), 3, H, D, D)});
  // The empty middle sequence passes its state through.
  for (index_t i = 0; i < D * D; ++i)
    EXPECT_EQ(s[static_cast<std::size_t>(D * D + i)], s0[static_cast<std::size_t>(D * D + i)]);
}

TEST(ZeroSize, SoftmaxWithoutQueriesOrKeys) {
  constexpr index_t B = 1, H = 2, D = 4, T = 3;
  const std::vector<float> none;
  const auto q = random_vector(B * T * H * D, 1);
  // T = 0: nothing to compute.
  std::vector<float> o_none;
  EXPECT_NO_THROW(pa::softmax::flash_attention({.q = pa::bthd(none.data(), B, 0, H, D),
                                                .k = pa::bthd(none.data(), B, 0, H, D),
                                                .v = pa::bthd(none.data(), B, 0, H, D)},
                                               {.causal = true},
                                               pa::bthd(o_none.data(), B, 0, H, D)));
  // S = 0: every query sees no key → zeros, lse −inf (docs/conventions.md §5.5).
  std::vector<float> o(B * T * H * D, kSentinel), lse(B * T * H, kSentinel);
  pa::softmax::flash_attention(
      {.q = pa::bthd(q.data(), B, T, H, D),
       .k = pa::bthd(none.data(), B, 0, H, D),
       .v = pa::bthd(none.data(), B, 0, H, D)},
      {}, {.o = pa::bthd(o.data(), B, T, H, D), .lse = pa::bth(lse.data(), B, T, H)});
  EXPECT_TRUE(all_equal(o, 0.f));
  for (float x : lse) EXPECT_EQ(x, -std::numeric_limits<float>::infinity());
}

TEST(ZeroSize, SparseAndHybridsWithoutTokens) {
  constexpr index_t B = 1, H = 2, D = 4;
  const std::vector<float> none;
  std::vector<float> o_none;
  const auto e = pa::bthd(none.data(), B, 0, H, D);
  const auto oe = pa::bthd(o_none.data(), B, 0, H, D);
  EXPECT_NO_THROW(pa::sparse::sparse_attention(pa::sparse::WindowSinkSelector{},
                                               {.q = e, .k = e, .v = e}, {.causal = true}, oe));
  EXPECT_NO_THROW(pa::hybrid::based_hybrid({.q = e, .k = e, .v = e}, {.window = 4}, oe));
  EXPECT_NO_THROW(pa::hybrid::liger({.q = e, .k = e, .v = e, .g = pa::bth(none.data(), B, 0, H)},
                                    {.window = 4}, oe));
  EXPECT_NO_THROW(
      pa::hybrid::lolcats({.q = e, .k = e, .v = e, .phi_q = e, .phi_k = e}, {.window = 4}, oe));
}

}  // namespace
