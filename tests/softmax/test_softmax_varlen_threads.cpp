// tests/softmax/test_softmax_varlen_threads.cpp — flash_attention's algorithm-agreement checks
// (docs/conventions.md §8): packed varlen == one call per sequence, head-first and otherwise
// strided inputs and outputs == contiguous ones, and every thread count gives the same bits.
#include <gtest/gtest.h>

#include <cstring>

#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_matches_reference;
using polyattn::test::expect_same_bits;
using polyattn::test::run_flash;
using polyattn::test::SoftmaxCase;
using polyattn::test::SoftmaxData;
using polyattn::test::SoftmaxShape;

// ---- varlen ---------------------------------------------------------------------------------

// Sequences of 1, 63, 0, 65, 64 and 70 tokens packed along T.
const std::vector<std::int64_t> kCu{0, 1, 64, 64, 129, 193, 263};

// One call on sequence [t0, t0 + L) of the packed data (B = 1) with the same options.
std::vector<float> run_one_sequence(const SoftmaxData& data, index_t t0, index_t L,
                                    const SoftmaxOptions& opt) {
  const auto& s = data.s;
  SoftmaxInputs in = data.inputs();
  in.cu_seqlens = {};
  in.q = bthd(data.q.data() + t0 * s.HQ * s.D, 1, L, s.HQ, s.D);
  in.k = bthd(data.k.data() + t0 * s.HKV * s.D, 1, L, s.HKV, s.D);
  in.v = bthd(data.v.data() + t0 * s.HKV * s.Dv, 1, L, s.HKV, s.Dv);
  if (!in.g.absent()) in.g = bth(data.g.data() + t0 * s.HQ, 1, L, s.HQ);
  return run_flash(in, opt);
}

void expect_varlen_equals_separate_calls(const SoftmaxCase& c, const SoftmaxShape& s,
                                         std::uint64_t seed) {
  SoftmaxData data(s, c, seed);
  data.cu_seqlens = kCu;
  const auto packed = expect_matches_reference(data);  // also against the reference
  for (std::size_t n = 0; n + 1 < kCu.size(); ++n) {
    const index_t t0 = kCu[n], L = kCu[n + 1] - kCu[n];
    if (L == 0) continue;
    const auto one = run_one_sequence(data, t0, L, data.options());
    const std::vector<float> slice(packed.begin() + t0 * s.HQ * s.Dv,
                                   packed.begin() + (t0 + L) * s.HQ * s.Dv);
    expect_same_bits(one, slice, data.str() + " sequence " + std::to_string(n));
  }
}

TEST(SoftmaxVarlen, EqualsSeparateCalls) {
  const SoftmaxShape s{.B = 1, .T = 263, .S = 263, .HQ = 4, .HKV = 2, .D = 72, .Dv = 40};
  const SoftmaxCase cases[] = {
      {},
      {.causal = true},
      {.causal = true, .window = 20, .sink_tokens = 3},
      {.window = 7, .sink_tokens = 2, .softcap = 1.0, .sink = true},
      {.causal = true, .alibi = true, .gate = true, .gate_div = 0.1, .sink = true},
      {.gate = true, .gate_div = 10.0},
  };
  std::uint64_t seed = 1;
  for (const SoftmaxCase& c : cases) expect_varlen_equals_separate_calls(c, s, seed++);
  const SoftmaxShape mqa{.B = 1, .T = 263, .S = 263, .HQ = 3, .HKV = 1, .D = 32, .Dv = 48};
  expect_varlen_equals_separate_calls({.causal = true, .gate = true}, mqa, seed++);
}

// Block masks index packed positions. With sequence boundaries on block edges the per-sequence
// call gets the matching sub-mask and must give the same bits; with unaligned boundaries the
// packed call is checked against the reference.
TEST(SoftmaxVarlen, BlockMask) {
  const std::vector<std::int64_t> cu{0, 32, 32, 112, 160, 176};
  const SoftmaxShape s{.B = 1, .T = 176, .S = 176, .HQ = 2, .HKV = 1, .D = 32, .Dv = 24};
  for (const bool causal : {false, true}) {
    SoftmaxData data(s, {.causal = causal, .sink_tokens = 2, .block_q = 16, .block_k = 16}, 20);
    data.cu_seqlens = cu;
    const auto packed = expect_matches_reference(data);
    for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
      const index_t t0 = cu[n], L = cu[n + 1] - cu[n];
      if (L == 0) continue;
      BlockMask sub = BlockMask::for_lengths(1, s.HQ, L, L, 16, 16);
      for (index_t h = 0; h < s.HQ; ++h)
        for (index_t qb = 0; qb < sub.q_blocks(); ++qb)
          for (index_t kb = 0; kb < sub.k_blocks(); ++kb)
            sub.set(0, h, qb, kb, data.mask.visible(0, h, t0 / 16 + qb, t0 / 16 + kb));
      SoftmaxOptions opt = data.options();
      opt.block_mask = &sub;
      const auto one = run_one_sequence(data, t0, L, opt);
      const std::vector<float> slice(packed.begin() + t0 * s.HQ * s.Dv,
                                     packed.begin() + (t0 + L) * s.HQ * s.Dv);
      expect_same_bits(one, slice, "block-mask sequence " + std::to_string(n));
    }
  }
  for (const index_t bq : {16, 64}) {
    SoftmaxData data({.B = 1, .T = 263, .S = 263, .HQ = 2, .HKV = 2, .D = 16, .Dv = 16},
                     {.causal = true, .block_q = bq, .block_k = 16}, 21);
    data.cu_seqlens = kCu;
    expect_matches_reference(data);
  }
}

// ---- strides --------------------------------------------------------------------------------

// [B, T, H, D] data copied into [B, H, T, D] memory.
std::vector<float> to_head_first(const std::vector<float>& x, index_t B, index_t T, index_t H,
                                 index_t D) {
  std::vector<float> y(x.size());
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t d = 0; d < D; ++d)
          y[static_cast<std::size_t>(((b * H + h) * T + t) * D + d)] =
              x[static_cast<std::size_t>(((b * T + t) * H + h) * D + d)];
  return y;
}

TEST(SoftmaxStrides, HeadFirstEqualsContiguous) {
  const SoftmaxShape s{.B = 2, .T = 70, .S = 100, .HQ = 4, .HKV = 2, .D = 40, .Dv = 24};
  for (const bool causal : {false, true}) {
    SoftmaxData data(s,
                     {.causal = causal,
                      .window = 50,
                      .sink_tokens = 2,
                      .alibi = true,
                      .gate = true,
                      .sink = true},
                     30);
    const auto want = run_flash(data.inputs(), data.options());

    const auto qh = to_head_first(data.q, s.B, s.T, s.HQ, s.D);
    const auto kh = to_head_first(data.k, s.B, s.S, s.HKV, s.D);
    const auto vh = to_head_first(data.v, s.B, s.S, s.HKV, s.Dv);
    const auto gh = to_head_first(data.g, s.B, s.S, s.HQ, 1);
    SoftmaxInputs in = data.inputs();
    in.q = head_first(qh.data(), s.B, s.T, s.HQ, s.D);
    in.k = head_first(kh.data(), s.B, s.S, s.HKV, s.D);
    in.v = head_first(vh.data(), s.B, s.S, s.HKV, s.Dv);
    in.g = View3<const float>(gh.data(), {s.B, s.S, s.HQ}, {s.HQ * s.S, 1, s.S});
    std::vector<float> oh(want.size(), test::kSentinel);
    softmax::flash_attention(in, data.options(), head_first(oh.data(), s.B, s.T, s.HQ, s.Dv));
    expect_same_bits(to_head_first(want, s.B, s.T, s.HQ, s.Dv), oh,
                     "head-first, causal " + std::to_string(causal));
  }
}

// Padded rows, a fused k|v buffer, every other float of q, and an output with padding that must
// stay untouched.
TEST(SoftmaxStrides, PaddedAndInterleavedEqualContiguous) {
  const SoftmaxShape s{.B = 2, .T = 65, .S = 65, .HQ = 2, .HKV = 1, .D = 32, .Dv = 20};
  SoftmaxData data(s, {.causal = true, .gate = true}, 31);
  const auto want = run_flash(data.inputs(), data.options());

  // q: every other float ([..., D] with inner stride 2).
  std::vector<float> q2(data.q.size() * 2, NAN);
  for (std::size_t i = 0; i < data.q.size(); ++i) q2[2 * i] = data.q[i];
  // k|v fused per (token, kv head): [B, S, HKV, D + Dv].
  const index_t W = s.D + s.Dv;
  std::vector<float> kv(static_cast<std::size_t>(s.B * s.S * s.HKV * W));
  for (index_t r = 0; r < s.B * s.S * s.HKV; ++r) {
    std::copy_n(data.k.begin() + r * s.D, s.D, kv.begin() + r * W);
    std::copy_n(data.v.begin() + r * s.Dv, s.Dv, kv.begin() + r * W + s.D);
  }
  // g as [B, S, HQ] inside a [B, S, HQ + 3] buffer.
  std::vector<float> gp(static_cast<std::size_t>(s.B * s.S * (s.HQ + 3)), NAN);
  for (index_t r = 0; r < s.B * s.S; ++r)
    std::copy_n(data.g.begin() + r * s.HQ, s.HQ, gp.begin() + r * (s.HQ + 3));

  SoftmaxInputs in = data.inputs();
  in.q = View4<const float>(q2.data(), {s.B, s.T, s.HQ, s.D},
                            {2 * s.T * s.HQ * s.D, 2 * s.HQ * s.D, 2 * s.D, 2});
  const std::array<index_t, 4> kv_strides{s.S * s.HKV * W, s.HKV * W, W, 1};
  in.k = View4<const float>(kv.data(), {s.B, s.S, s.HKV, s.D}, kv_strides);
  in.v = View4<const float>(kv.data() + s.D, {s.B, s.S, s.HKV, s.Dv}, kv_strides);
  in.g = View3<const float>(gp.data(), {s.B, s.S, s.HQ}, {s.S * (s.HQ + 3), s.HQ + 3, 1});
  const index_t P = s.Dv + 3;
  std::vector<float> op(static_cast<std::size_t>(s.B * s.T * s.HQ * P), test::kSentinel);
  softmax::flash_attention(
      in, data.options(),
      View4<float>(op.data(), {s.B, s.T, s.HQ, s.Dv}, {s.T * s.HQ * P, s.HQ * P, P, 1}));
  std::vector<float> got;
  for (index_t r = 0; r < s.B * s.T * s.HQ; ++r) {
    got.insert(got.end(), op.begin() + r * P, op.begin() + r * P + s.Dv);
    for (index_t e = s.Dv; e < P; ++e)
      ASSERT_EQ(op[static_cast<std::size_t>(r * P + e)], test::kSentinel) << "padding written";
  }
  expect_same_bits(got, want, "strided");
}

// ---- threads --------------------------------------------------------------------------------

template <class E>
std::vector<float> run_with(const SoftmaxData& data, const E& exec) {
  return run_flash(data.inputs(), data.options(), exec);
}

TEST(SoftmaxThreads, AnyThreadCountGivesIdenticalBits) {
  const SoftmaxShape s{.B = 2, .T = 200, .S = 230, .HQ = 4, .HKV = 2, .D = 40, .Dv = 24};
  const SoftmaxCase cases[] = {
      {.causal = true, .gate = true, .gate_div = 0.1},
      {.causal = true,
       .window = 50,
       .sink_tokens = 3,
       .block_q = 64,
       .block_k = 16,
       .softcap = 2.0,
       .alibi = true,
       .sink = true},
      {.alibi = true, .sink = true},
  };
  std::uint64_t seed = 40;
  for (const SoftmaxCase& c : cases) {
    SoftmaxData data(s, c, seed++);
    const auto serial = run_with(data, Serial{});
    for (const int threads : {1, 2, 3, 8})
      expect_same_bits(run_with(data, ThreadPool(threads)), serial,
                       data.str() + " threads " + std::to_string(threads));
  }
  // Varlen: the causal work order sorts tiles of different sequences together.
  SoftmaxData packed({.B = 1, .T = 263, .S = 263, .HQ = 3, .HKV = 1, .D = 32, .Dv = 16},
                     {.causal = true, .window = 40, .gate = true}, seed++);
  packed.cu_seqlens = kCu;
  const auto serial = run_with(packed, Serial{});
  for (const int threads : {1, 2, 3, 8})
    expect_same_bits(run_with(packed, ThreadPool(threads)), serial,
                     "varlen threads " + std::to_string(threads));
}

}  // namespace
