// tests/softmax/test_papers_combiner.cpp — Combiner-Fixed (softmax/combiner.hpp):
// combiner_summaries + combiner_attention (two masked tiled calls merged by lse) against
// reference::combiner_attention (one softmax per query over its segment's keys and every
// summary recomputed from q, k, v), in double — causal and not, max / mean / sum pooling with and
// without ReLU, GQA, batch, a partial last segment (causal), decode rows (T < S) from the
// prefill's summaries, segments that straddle the kernel's tiles, thread counts; bad arguments
// throw a named polyattn::Error with the output untouched.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/expect_error.hpp"
#include "common/test_util.hpp"
#include "polyattn/reference/combiner.hpp"
#include "softmax/papers3_kernels.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using Pool = softmax::CombinerConfig::Pool;
using polyattn::test::expect_error;
using polyattn::test::kRelRmseBound;
using polyattn::test::kSentinel;
using polyattn::test::rel_rmse;
using polyattn::test::SoftmaxData;

SoftmaxOptions options(bool causal) {
  SoftmaxOptions o;
  o.causal = causal;
  return o;
}

TEST(Combiner, MatchesTheReference) {
  struct Config {
    index_t B, T, HQ, HKV, L;
    bool causal;
    softmax::CombinerConfig::Pool pool;
    bool relu;
  };
  for (const Config c : {Config{2, 256, 4, 2, 64, true, Pool::Max, false},
                         Config{1, 200, 3, 1, 48, true, Pool::Mean, true},
                         Config{1, 240, 2, 2, 40, false, Pool::Sum, false},
                         Config{1, 130, 2, 1, 16, true, Pool::Max, true},
                         Config{2, 192, 4, 4, 96, false, Pool::Max, false}}) {
    const std::string name =
        "T " + std::to_string(c.T) + " L " + std::to_string(c.L) + (c.causal ? " causal" : " full");
    SCOPED_TRACE(name);
    SoftmaxData x({.B = c.B, .T = c.T, .S = c.T, .HQ = c.HQ, .HKV = c.HKV, .D = 40, .Dv = 24}, {},
                  301);
    const softmax::CombinerConfig cfg{.segment = c.L, .pool = c.pool, .relu = c.relu};
    const softmax::CombinerSummaries sum =
        softmax::combiner_summaries(x.inputs(), options(c.causal), cfg);
    std::vector<float> got(x.out_size(), kSentinel);
    softmax::combiner_attention(x.inputs(), options(c.causal), sum,
                                bthd(got.data(), c.B, c.T, c.HQ, 24));
    std::vector<double> want(x.out_size(), NAN);
    reference::combiner_attention(x.inputs(), c.causal, cfg, bthd(want.data(), c.B, c.T, c.HQ, 24));
    const double err = rel_rmse(got, want);
    EXPECT_LT(err, kRelRmseBound);
    std::printf("[ combiner %s ] rel RMSE vs reference %.3g\n", name.c_str(), err);
    // The summaries change the result (it is not plain attention).
    EXPECT_GT(rel_rmse(got, test::run_reference(x.inputs(), options(c.causal))), 1e-3);
    std::vector<float> threaded(x.out_size(), kSentinel);
    softmax::combiner_attention(
        x.inputs(), options(c.causal),
        softmax::combiner_summaries(x.inputs(), options(c.causal), cfg, ThreadPool(3)),
        bthd(threaded.data(), c.B, c.T, c.HQ, 24), ThreadPool(3));
    EXPECT_EQ(threaded, got);
  }
}

TEST(Combiner, DecodeRowsAreThePrefillsLastRows) {
  const index_t T = 300, L = 64, HQ = 4, Dv = 24;
  SoftmaxData x({.B = 1, .T = T, .S = T, .HQ = HQ, .HKV = 2, .D = 32, .Dv = Dv}, {}, 302);
  const softmax::CombinerConfig cfg{.segment = L};
  const softmax::CombinerSummaries sum =
      softmax::combiner_summaries(x.inputs(), options(true), cfg);
  std::vector<double> want(x.out_size());
  reference::combiner_attention(x.inputs(), true, cfg, bthd(want.data(), 1, T, HQ, Dv));
  for (const index_t n : {index_t{1}, index_t{3}, index_t{45}}) {
    SoftmaxInputs in = x.inputs();
    in.q = bthd<const float>(x.q.data() + (T - n) * HQ * 32, 1, n, HQ, 32);
    std::vector<float> got(static_cast<std::size_t>(n * HQ * Dv), kSentinel);
    softmax::combiner_attention(in, options(true), sum, bthd(got.data(), 1, n, HQ, Dv));
    const std::vector<double> last(want.end() - n * HQ * Dv, want.end());
    EXPECT_LT(rel_rmse(got, last), kRelRmseBound) << n << " rows";
  }
}

TEST(Combiner, BadArgumentsThrowNamedErrorOutputUntouched) {
  SoftmaxData x({.B = 1, .T = 128, .S = 128, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 303);
  SoftmaxData y({.B = 1, .T = 64, .S = 128, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 303);
  SoftmaxData z({.B = 1, .T = 120, .S = 120, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 303);
  expect_error("segment",
               [&] { softmax::combiner_summaries(x.inputs(), options(true), {.segment = 0}); });
  expect_error("q",
               [&] { softmax::combiner_summaries(y.inputs(), options(true), {.segment = 32}); });
  const softmax::CombinerSummaries sum =
      softmax::combiner_summaries(x.inputs(), options(true), {.segment = 32});
  const softmax::CombinerSummaries sum_z =
      softmax::combiner_summaries(z.inputs(), options(true), {.segment = 32});
  std::vector<float> o(x.out_size(), kSentinel), oz(z.out_size(), kSentinel);
  const auto ov = bthd(o.data(), 1, 128, 2, 8);
  SoftmaxOptions window = options(true);
  window.window = 16;
  expect_error("opt", [&] { softmax::combiner_attention(x.inputs(), window, sum, ov); });
  SoftmaxOptions capped = options(true);
  capped.softcap = 5.0;
  expect_error("opt", [&] { softmax::combiner_attention(x.inputs(), capped, sum, ov); });
  // Summaries of 120 rows hold 3 complete segments; 128 causal rows need 3, not causal 4.
  expect_error("summaries",
               [&] { softmax::combiner_attention(x.inputs(), options(false), sum_z, ov); });
  SoftmaxData w({.B = 1, .T = 128, .S = 128, .HQ = 4, .HKV = 1, .D = 8, .Dv = 8}, {}, 303);
  std::vector<float> ow(w.out_size(), kSentinel);
  expect_error("summaries", [&] {
    softmax::combiner_attention(w.inputs(), options(true), sum, bthd(ow.data(), 1, 128, 4, 8));
  });
  expect_error("segment", [&] {
    softmax::combiner_attention(z.inputs(), options(false), sum_z, bthd(oz.data(), 1, 120, 2, 8));
  });
  expect_error("o", [&] {
    softmax::combiner_attention(x.inputs(), options(true), sum, bthd(oz.data(), 1, 120, 2, 8));
  });
  for (const float v : o) ASSERT_EQ(v, kSentinel);
  for (const float v : oz) ASSERT_EQ(v, kSentinel);
  for (const float v : ow) ASSERT_EQ(v, kSentinel);
  // A causal call with a partial last segment is fine.
  softmax::combiner_attention(z.inputs(), options(true), sum_z, bthd(oz.data(), 1, 120, 2, 8));
}

}  // namespace
