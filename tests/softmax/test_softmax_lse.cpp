// tests/softmax/test_softmax_lse.cpp — the log-sum-exp output of flash_attention:
// lse = log(Σ_{j visible} e^{s_ij} [+ e^{sink}]) against a double computation with the
// reference's rules, −inf for rows that see no key, exact merging of two disjoint key sets
// (the hybrids' use), the same o bits as the overload without lse, thread counts and strides,
// and bad lse views rejected before anything is written.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_same_bits;
using polyattn::test::SoftmaxCase;
using polyattn::test::SoftmaxData;
using polyattn::test::SoftmaxShape;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// log-sum-exp per (b, i, h) in double, with the visibility and score rules of
// reference::softmax_attention (no varlen).
std::vector<double> lse_in_double(const SoftmaxData& data) {
  const SoftmaxShape& s = data.s;
  const SoftmaxInputs in = data.inputs();
  const SoftmaxOptions opt = data.options();
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
  const index_t group = s.HQ / s.HKV;
  std::vector<double> out(static_cast<std::size_t>(s.B * s.T * s.HQ));
  std::vector<double> G(static_cast<std::size_t>(s.S));
  for (index_t b = 0; b < s.B; ++b)
    for (index_t h = 0; h < s.HQ; ++h) {
      double run = 0.0;
      for (index_t j = 0; j < s.S; ++j) {
        if (!in.g.absent()) run += static_cast<double>(in.g(b, j, h));
        G[static_cast<std::size_t>(j)] = run;
      }
      for (index_t i = 0; i < s.T; ++i) {
        const index_t p = i + s.S - s.T;
        std::vector<double> sc;
        for (index_t j = 0; j < s.S; ++j) {
          const bool causal_ok = !opt.causal || j <= p;
          const bool window_ok = opt.window == 0 || (j <= p && j > p - opt.window);
          const bool block_ok = opt.block_mask == nullptr ||
                                opt.block_mask->visible(b, h, i / opt.block_mask->block_q(),
                                                        j / opt.block_mask->block_k());
          if (!(causal_ok && (j < opt.sink_tokens || (window_ok && block_ok)))) continue;
          double dot = 0.0;
          for (index_t c = 0; c < s.D; ++c)
            dot += static_cast<double>(in.q(b, i, h, c)) * in.k(b, j, h / group, c);
          double x = scale * dot;
          if (opt.softcap > 0) x = opt.softcap * std::tanh(x / opt.softcap);
          if (!in.alibi_slopes.absent())
            x -= static_cast<double>(in.alibi_slopes(h)) * static_cast<double>(std::abs(p - j));
          if (!in.g.absent())
            x += (p >= 0 ? G[static_cast<std::size_t>(p)] : 0.0) - G[static_cast<std::size_t>(j)];
          sc.push_back(x);
        }
        double lse = kNegInf;
        if (!sc.empty()) {
          if (!in.sink.absent()) sc.push_back(static_cast<double>(in.sink(h)));
          double m = kNegInf;
          for (double x : sc) m = std::max(m, x);
          double sum = 0.0;
          for (double x : sc) sum += std::exp(x - m);
          lse = m + std::log(sum);
        }
        out[static_cast<std::size_t>((b * s.T + i) * s.HQ + h)] = lse;
      }
    }
  return out;
}

struct WithLse {
  std::vector<float> o, lse;
};
template <class E = Serial>
WithLse run_with_lse(const SoftmaxInputs& in, const SoftmaxOptions& opt, const E& exec = E{}) {
  const index_t B = in.q.size(0), T = in.q.size(1), HQ = in.q.size(2), Dv = in.v.size(3);
  WithLse r{std::vector<float>(static_cast<std::size_t>(B * T * HQ * Dv), test::kSentinel),
            std::vector<float>(static_cast<std::size_t>(B * T * HQ), test::kSentinel)};
  softmax::flash_attention(in, opt, bthd(r.o.data(), B, T, HQ, Dv), bth(r.lse.data(), B, T, HQ),
                           exec);
  return r;
}

// lse against the double computation: absolute error relative to max(1, |lse|) (lse is a log,
// so this is the relative error of the partition function), −inf exactly where no key is seen;
// o with lse has the bits of o without it.
void expect_lse_matches(const SoftmaxData& data) {
  const auto got = run_with_lse(data.inputs(), data.options());
  const auto want = lse_in_double(data);
  expect_same_bits(got.o, test::run_flash(data.inputs(), data.options()), data.str() + " o");
  ASSERT_EQ(got.lse.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (want[i] == kNegInf) {
      ASSERT_EQ(got.lse[i], -std::numeric_limits<float>::infinity()) << data.str() << " at " << i;
    } else {
      ASSERT_NEAR(got.lse[i], want[i], 1e-5 * std::max(1.0, std::abs(want[i])))
          << data.str() << " at " << i;
    }
  }
}

TEST(SoftmaxLse, MatchesDoubleLogSumExp) {
  const SoftmaxCase cases[] = {
      {},
      {.causal = true},
      {.causal = true, .window = 20, .sink_tokens = 3, .sink = true},
      {.window = 9, .sink_tokens = 2, .softcap = 1.0, .alibi = true},
      {.causal = true, .block_q = 16, .block_k = 64, .gate = true, .gate_div = 0.1},
      {.block_q = 64,
       .block_k = 16,
       .block_density = 0.3,
       .alibi = true,
       .gate = true,
       .sink = true},
  };
  struct L {
    index_t T, S;
  };
  std::uint64_t seed = 1;
  for (const SoftmaxCase& c : cases)
    for (const L len : {L{1, 70}, L{65, 65}, L{63, 130}, L{100, 37}}) {
      SoftmaxData data({.B = 2, .T = len.T, .S = len.S, .HQ = 4, .HKV = 2, .D = 40, .Dv = 24}, c,
                       seed++, 2.f);
      expect_lse_matches(data);
    }
  SoftmaxData big({.T = 1000, .S = 1000, .HQ = 1, .HKV = 1, .D = 32, .Dv = 8},
                  {.causal = true, .window = 300, .alibi = true, .gate = true, .sink = true},
                  seed++);
  expect_lse_matches(big);
}

// Two calls over disjoint key sets [0, S1) and [S1, S), merged with their lse, equal one call
// over all keys (non-causal, no position-dependent modifiers; the sink logit goes to one half
// only so that it enters the merged denominator once).
TEST(SoftmaxLse, MergingDisjointKeySetsEqualsOneCall) {
  const SoftmaxShape s{.B = 2, .T = 65, .S = 150, .HQ = 4, .HKV = 1, .D = 32, .Dv = 20};
  for (const index_t S1 : {1, 64, 70, 149})
    for (const bool sink : {false, true}) {
      SoftmaxCase c{.softcap = 3.0};
      c.sink = sink;
      SoftmaxData data(s, c, 10 + S1, 2.f);
      const SoftmaxInputs all = data.inputs();
      const SoftmaxOptions opt = data.options();
      const auto want = test::run_reference(all, opt);
      auto part = [&](index_t j0, index_t n, bool with_sink) {
        SoftmaxInputs in = all;
        in.k = View4<const float>(data.k.data() + j0 * s.HKV * s.D, {s.B, n, s.HKV, s.D},
                                  {s.S * s.HKV * s.D, s.HKV * s.D, s.D, 1});
        in.v = View4<const float>(data.v.data() + j0 * s.HKV * s.Dv, {s.B, n, s.HKV, s.Dv},
                                  {s.S * s.HKV * s.Dv, s.HKV * s.Dv, s.Dv, 1});
        if (!with_sink) in.sink = {};
        return run_with_lse(in, opt);
      };
      const auto a = part(0, S1, true), b = part(S1, s.S - S1, false);
      std::vector<float> merged(a.o.size());
      for (std::size_t r = 0; r < a.lse.size(); ++r) {
        const double la = a.lse[r], lb = b.lse[r], m = std::max(la, lb);
        const double wa = std::exp(la - m), wb = std::exp(lb - m);
        for (index_t e = 0; e < s.Dv; ++e) {
          const std::size_t i = r * static_cast<std::size_t>(s.Dv) + static_cast<std::size_t>(e);
          merged[i] = static_cast<float>((wa * a.o[i] + wb * b.o[i]) / (wa + wb));
        }
      }
      EXPECT_LT(test::rel_rmse(merged, want), test::kRelRmseBound)
          << "split at " << S1 << " sink " << sink;
    }
}

TEST(SoftmaxLse, RowsThatSeeNoKeyGiveMinusInfinity) {
  SoftmaxData data({.B = 1, .T = 100, .S = 40, .HQ = 2, .HKV = 1, .D = 16, .Dv = 8},
                   {.causal = true, .sink = true}, 20);
  const auto r = run_with_lse(data.inputs(), data.options());
  for (index_t i = 0; i < 100; ++i)
    for (index_t h = 0; h < 2; ++h) {
      const float lse = r.lse[static_cast<std::size_t>(i * 2 + h)];
      if (i < 60)
        EXPECT_EQ(lse, -std::numeric_limits<float>::infinity()) << i;
      else
        EXPECT_TRUE(std::isfinite(lse)) << i;
    }
}

TEST(SoftmaxLse, ThreadsStridesAndVarlenGiveTheSameBits) {
  const SoftmaxShape s{.B = 1, .T = 263, .S = 263, .HQ = 3, .HKV = 1, .D = 32, .Dv = 16};
  SoftmaxData data(s, {.causal = true, .window = 70, .gate = true, .sink = true}, 30);
  const auto serial = run_with_lse(data.inputs(), data.options());
  for (const int threads : {2, 3, 8}) {
    const auto par = run_with_lse(data.inputs(), data.options(), ThreadPool(threads));
    expect_same_bits(par.o, serial.o, "o, threads " + std::to_string(threads));
    expect_same_bits(par.lse, serial.lse, "lse, threads " + std::to_string(threads));
  }
  // lse into head-first [B, H, T] memory.
  std::vector<float> o(serial.o.size()), lse_hf(serial.lse.size());
  softmax::flash_attention(data.inputs(), data.options(), bthd(o.data(), 1, s.T, s.HQ, s.Dv),
                           View3<float>(lse_hf.data(), {1, s.T, s.HQ}, {s.HQ * s.T, 1, s.T}));
  for (index_t t = 0; t < s.T; ++t)
    for (index_t h = 0; h < s.HQ; ++h)
      ASSERT_EQ(lse_hf[static_cast<std::size_t>(h * s.T + t)],
                serial.lse[static_cast<std::size_t>(t * s.HQ + h)]);
  // Varlen: each sequence's lse equals its own call's.
  const std::vector<std::int64_t> cu{0, 1, 64, 64, 129, 263};
  data.cu_seqlens = cu;
  const auto packed = run_with_lse(data.inputs(), data.options());
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t t0 = cu[n], L = cu[n + 1] - cu[n];
    if (L == 0) continue;
    SoftmaxInputs in = data.inputs();
    in.cu_seqlens = {};
    in.q = bthd(data.q.data() + t0 * s.HQ * s.D, 1, L, s.HQ, s.D);
    in.k = bthd(data.k.data() + t0 * s.HKV * s.D, 1, L, s.HKV, s.D);
    in.v = bthd(data.v.data() + t0 * s.HKV * s.Dv, 1, L, s.HKV, s.Dv);
    in.g = bth(data.g.data() + t0 * s.HQ, 1, L, s.HQ);
    const auto one = run_with_lse(in, data.options());
    expect_same_bits(
        one.lse,
        std::vector<float>(packed.lse.begin() + t0 * s.HQ, packed.lse.begin() + (t0 + L) * s.HQ),
        "varlen lse, sequence " + std::to_string(n));
  }
}

TEST(SoftmaxLse, BadLseLeavesOutputsUntouched) {
  SoftmaxData data({.B = 2, .T = 10, .S = 12, .HQ = 4, .HKV = 2, .D = 8, .Dv = 6}, {}, 40);
  std::vector<float> o(2 * 10 * 4 * 6), lse(256);
  auto expect_lse_error = [&](const View3<float>& bad) {
    SCOPED_TRACE(shape_string(bad.shape()) + " strides " + shape_string(bad.strides()) +
                 (bad.data() ? "" : " null"));
    std::fill(o.begin(), o.end(), test::kSentinel);
    std::fill(lse.begin(), lse.end(), test::kSentinel);
    try {
      softmax::flash_attention(data.inputs(), data.options(), bthd(o.data(), 2, 10, 4, 6), bad);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), "lse") << e.what();
      EXPECT_NE(std::string(e.what()).find("'lse'"), std::string::npos) << e.what();
    }
    for (float x : o) ASSERT_EQ(x, test::kSentinel);
    for (float x : lse) ASSERT_EQ(x, test::kSentinel);
  };
  expect_lse_error(bth(lse.data(), 2, 10, 2));  // kv heads
  expect_lse_error(bth(lse.data(), 2, 12, 4));  // key length
  expect_lse_error(bth(lse.data(), 1, 10, 4));
  expect_lse_error(View3<float>(lse.data(), {2, 10, 4}, {40, -4, 1}));
}

// An lse view with a shape but no data is a caller error, as for the optional inputs (g, sink,
// alibi_slopes reject null data with a non-empty shape).
TEST(SoftmaxLse, NullLseWithShapeIsAnError) {
  SoftmaxData data({.B = 2, .T = 10, .S = 12, .HQ = 4, .HKV = 2, .D = 8, .Dv = 6}, {}, 41);
  std::vector<float> o(2 * 10 * 4 * 6, test::kSentinel);
  try {
    softmax::flash_attention(data.inputs(), data.options(), bthd(o.data(), 2, 10, 4, 6),
                             View3<float>(nullptr, {2, 10, 4}, {40, 4, 1}));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "lse") << e.what();
  }
  for (float x : o) ASSERT_EQ(x, test::kSentinel);
}

}  // namespace
