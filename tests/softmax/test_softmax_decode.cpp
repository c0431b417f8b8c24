// tests/softmax/test_softmax_decode.cpp — KVCache + flash_decode: one query per sequence at the
// position of its last cached key equals the last row of a causal prefill over the same tokens
// (checked against the double reference), under GQA/MQA, window + sink tokens, softcap, ALiBi,
// sink logits and forgetting gates, for caches of 1 … 5000 tokens (several KV splits); token-by-
// token decoding reproduces the prefill's rows; paged caches give the bits of a contiguous one;
// thread counts give identical bits; bad arguments throw a named Error and change nothing.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>

#include "common/test_util.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/reference/softmax.hpp"
#include "polyattn/softmax/decode.hpp"
#include "polyattn/softmax/kv_cache.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::softmax::DecodeInputs;
using polyattn::softmax::KVCache;
using polyattn::softmax::KVCacheOptions;
using polyattn::test::expect_same_bits;
using polyattn::test::kRelRmseBound;
using polyattn::test::random_vector;
using polyattn::test::rel_rmse;

struct DecodeCase {
  index_t window = 0, sink_tokens = 0;
  double softcap = 0.0;
  bool alibi = false;
  bool gate = false;
  double gate_div = 1.0;
  bool sink = false;
  std::string str() const {
    return "window" + std::to_string(window) + " sinks" + std::to_string(sink_tokens) + " softcap" +
           std::to_string(softcap) + (alibi ? " alibi" : "") +
           (gate ? " gate/" + std::to_string(gate_div) : "") + (sink ? " sink-logit" : "");
  }
  SoftmaxOptions options() const {
    SoftmaxOptions opt;
    opt.causal = true;
    opt.window = window;
    opt.sink_tokens = sink_tokens;
    opt.softcap = softcap;
    return opt;
  }
};

// Per-sequence tokens (sequences may have different lengths) and the queries of the last Tq
// tokens of each sequence (Tq = 1: plain decode).
struct DecodeData {
  index_t B, HQ, HKV, D, Dv, Tq;
  std::vector<index_t> lens;
  DecodeCase c;
  std::vector<std::vector<float>> k, v, g;  // per sequence: [1, L, HKV, D] etc.
  std::vector<float> q, slopes, sink;       // q [B, Tq, HQ, D]

  DecodeData(std::vector<index_t> lengths, index_t hq, index_t hkv, index_t d, index_t dv,
             const DecodeCase& cs, std::uint64_t seed, index_t tq = 1)
      : B(static_cast<index_t>(lengths.size())),
        HQ(hq),
        HKV(hkv),
        D(d),
        Dv(dv),
        Tq(tq),
        lens(std::move(lengths)),
        c(cs) {
    const auto n = [](auto... x) { return static_cast<std::size_t>((x * ...)); };
    for (index_t b = 0; b < B; ++b) {
      const index_t L = lens[static_cast<std::size_t>(b)];
      k.push_back(random_vector(n(L, HKV, D), seed + 10 * b + 1));
      v.push_back(random_vector(n(L, HKV, Dv), seed + 10 * b + 2));
      g.push_back(random_vector(n(L, HQ), seed + 10 * b + 3, -0.2f, -0.001f));
      for (auto& x : g.back()) x = static_cast<float>(x / c.gate_div);
    }
    q = random_vector(n(B, Tq, HQ, D), seed + 4);
    for (index_t h = 0; h < HQ; ++h)
      slopes.push_back(std::exp2(-8.f * static_cast<float>(h + 1) / static_cast<float>(HQ)));
    sink = random_vector(n(HQ), seed + 5, -2.f, 4.f);
  }

  std::string str() const {
    std::string s = "B" + std::to_string(B) + " L";
    for (index_t L : lens) s += std::to_string(L) + ",";
    return s + " Tq" + std::to_string(Tq) + " HQ" + std::to_string(HQ) + " HKV" +
           std::to_string(HKV) + " D" + std::to_string(D) + " Dv" + std::to_string(Dv) + " " +
           c.str();
  }

  // Tokens [t0, t0 + n) of sequence b as [1, n, ...] views.
  View4<const float> k_of(index_t b, index_t t0, index_t n) const {
    return bthd(k[static_cast<std::size_t>(b)].data() + t0 * HKV * D, 1, n, HKV, D);
  }
  View4<const float> v_of(index_t b, index_t t0, index_t n) const {
    return bthd(v[static_cast<std::size_t>(b)].data() + t0 * HKV * Dv, 1, n, HKV, Dv);
  }
  View3<const float> g_of(index_t b, index_t t0, index_t n) const {
    return c.gate ? bth(g[static_cast<std::size_t>(b)].data() + t0 * HQ, 1, n, HQ)
                  : View3<const float>{};
  }

  // A cache holding every sequence's tokens, appended `chunk` tokens at a time (0 = at once).
  std::unique_ptr<KVCache> cache(index_t page_size, index_t chunk = 0) const {
    index_t longest = 1;
    for (index_t L : lens) longest = std::max(longest, L);
    auto kv = std::make_unique<KVCache>(B, HKV, D, Dv,
                                        KVCacheOptions{.capacity = page_size > 0 ? 0 : longest,
                                                       .page_size = page_size,
                                                       .gate_heads = c.gate ? HQ : 0});
    for (index_t b = 0; b < B; ++b) {
      const index_t L = lens[static_cast<std::size_t>(b)];
      const index_t step = chunk > 0 ? chunk : std::max<index_t>(L, 1);
      for (index_t t0 = 0; t0 < L; t0 += step) {
        const index_t n = std::min(step, L - t0);
        kv->append_to(b, k_of(b, t0, n), v_of(b, t0, n), g_of(b, t0, n));
      }
    }
    return kv;
  }

  DecodeInputs inputs() const {
    DecodeInputs in;
    in.q = bthd(q.data(), B, Tq, HQ, D);
    if (c.alibi) in.alibi_slopes = View1<const float>::contiguous(slopes.data(), {HQ});
    if (c.sink) in.sink = View1<const float>::contiguous(sink.data(), {HQ});
    return in;
  }

  template <class E = Serial>
  std::vector<float> decode(const KVCache& kv, const E& exec = E{}) const {
    std::vector<float> o(static_cast<std::size_t>(B * Tq * HQ * Dv), test::kSentinel);
    softmax::flash_decode(inputs(), kv, c.options(), bthd(o.data(), B, Tq, HQ, Dv), exec);
    return o;
  }

  // The reference: per sequence, a causal call with Tq queries (at key positions L − Tq ...).
  std::vector<double> reference() const {
    std::vector<double> o(static_cast<std::size_t>(B * Tq * HQ * Dv));
    for (index_t b = 0; b < B; ++b) {
      const index_t L = lens[static_cast<std::size_t>(b)];
      SoftmaxInputs in;
      in.q = bthd(q.data() + b * Tq * HQ * D, 1, Tq, HQ, D);
      in.k = k_of(b, 0, L);
      in.v = v_of(b, 0, L);
      in.g = g_of(b, 0, L);
      const DecodeInputs di = inputs();
      in.alibi_slopes = di.alibi_slopes;
      in.sink = di.sink;
      reference::softmax_attention(in, c.options(),
                                   bthd(o.data() + b * Tq * HQ * Dv, 1, Tq, HQ, Dv));
    }
    return o;
  }
};

void expect_decode_matches_reference(const DecodeData& data, index_t page_size = 0) {
  const auto kv = data.cache(page_size);
  const auto o = data.decode(*kv);
  EXPECT_LT(rel_rmse(o, data.reference()), kRelRmseBound) << data.str() << " page " << page_size;
  for (float x : o) ASSERT_TRUE(std::isfinite(x)) << data.str();
}

struct Heads {
  index_t HQ, HKV;
};
const Heads kHeads[] = {{2, 2}, {8, 2}, {3, 1}};

const DecodeCase kCases[] = {
    {},
    {.window = 48, .sink_tokens = 4},
    {.softcap = 0.5},
    {.alibi = true},
    {.sink = true},
    {.gate = true},
    {.window = 300,
     .sink_tokens = 2,
     .softcap = 2.0,
     .alibi = true,
     .gate = true,
     .gate_div = 0.1,
     .sink = true},
};

// Every case × head layout at the awkward lengths; 1000 and 5000 keys span one and five KV
// splits. The two sequences of a batch have different lengths.
TEST(SoftmaxDecode, MatchesLastRowOfCausalPrefill) {
  const std::vector<std::vector<index_t>> lengths{{1, 1},   {63, 1},     {64, 65},
                                                  {65, 64}, {1000, 999}, {5000, 1025}};
  std::uint64_t seed = 1;
  std::size_t i = 0;
  for (const DecodeCase& c : kCases)
    for (const Heads h : kHeads)
      for (const auto& lens : lengths) {
        const auto dims = test::kDims[i++ % std::size(test::kDims)];
        // Keep the big caches cheap: small head dims at 5000.
        const index_t D = lens[0] >= 5000 ? 32 : dims.D, Dv = lens[0] >= 5000 ? 24 : dims.Dv;
        DecodeData data(lens, h.HQ, h.HKV, D, Dv, c, seed++);
        expect_decode_matches_reference(data);
      }
}

// T > 1 queries (speculative verify, chunked prefill from the cache): the last T rows of the
// causal prefill, for every case × head layout, T within one work item's row chunk and across
// several chunks (64 rows: 16 tokens at 4 query heads per kv head), and across key splits.
TEST(SoftmaxDecode, MultiTokenMatchesLastRowsOfCausalPrefill) {
  struct Shape {
    std::vector<index_t> lens;
    index_t T;
  };
  const Shape shapes[] = {{{8, 8}, 8}, {{100, 40}, 3}, {{100, 40}, 33}, {{1100, 1030}, 70}};
  std::uint64_t seed = 200;
  std::size_t i = 0;
  for (const DecodeCase& c : kCases)
    for (const Heads h : kHeads)
      for (const Shape& sh : shapes) {
        const auto dims = test::kDims[i++ % std::size(test::kDims)];
        const index_t D = sh.lens[0] > 1000 ? 32 : dims.D, Dv = sh.lens[0] > 1000 ? 24 : dims.Dv;
        DecodeData data(sh.lens, h.HQ, h.HKV, D, Dv, c, seed++, sh.T);
        expect_decode_matches_reference(data);
        expect_decode_matches_reference(data, 16);  // paged
      }
}

// A NaN value of key L − 3 reaches only the queries that see that key (the last three of T = 8),
// also through the rows that share its key block with queries that do not see it.
TEST(SoftmaxDecode, MultiTokenNaNValueReachesOnlyLaterQueries) {
  DecodeData data({200, 150}, 4, 1, 32, 16, {.window = 50, .sink_tokens = 2}, 210, 8);
  const index_t L = 200, bad = L - 3;
  data.v[0][static_cast<std::size_t>(bad * data.Dv + 5)] = NAN;
  const auto kv = data.cache(0);
  const auto o = data.decode(*kv);
  for (index_t t = 0; t < data.Tq; ++t)
    for (index_t h = 0; h < data.HQ; ++h)
      for (index_t e = 0; e < data.Dv; ++e) {
        const float x =
            o[static_cast<std::size_t>(((0 * data.Tq + t) * data.HQ + h) * data.Dv + e)];
        if (L - data.Tq + t >= bad && e == 5)
          ASSERT_TRUE(std::isnan(x)) << "t " << t;
        else
          ASSERT_TRUE(std::isfinite(x)) << "t " << t << " h " << h << " e " << e;
      }
}

// T queries at once equal T single-token decodes of a cache grown one token at a time, and the
// bits do not depend on the thread count.
TEST(SoftmaxDecode, MultiTokenEqualsTokenByTokenAndAnyThreadCount) {
  const index_t T = 20;
  DecodeData all({1500, 900}, 8, 2, 32, 24, {.softcap = 5.0, .gate = true}, 220, T);
  const auto kv = all.cache(0);
  const auto serial = all.decode(*kv);
  expect_same_bits(serial, all.decode(*kv, ThreadPool(3)), "threads");
  EXPECT_LT(rel_rmse(serial, all.reference()), kRelRmseBound);
  for (index_t t = 0; t < T; ++t) {
    std::vector<index_t> lens;
    for (const index_t L : all.lens) lens.push_back(L - T + t + 1);
    DecodeData one(lens, all.HQ, all.HKV, all.D, all.Dv, all.c, 220);
    one.k = all.k;  // same tokens; the cache below holds only the first L − T + t + 1
    one.v = all.v;
    one.g = all.g;
    for (index_t b = 0; b < all.B; ++b)
      std::copy_n(all.q.begin() + ((b * T + t) * all.HQ) * all.D, all.HQ * all.D,
                  one.q.begin() + b * all.HQ * all.D);
    const auto o1 = one.decode(*one.cache(0));
    for (index_t b = 0; b < all.B; ++b)
      for (index_t i = 0; i < all.HQ * all.Dv; ++i)
        ASSERT_EQ(o1[static_cast<std::size_t>(b * all.HQ * all.Dv + i)],
                  serial[static_cast<std::size_t>((b * T + t) * all.HQ * all.Dv + i)])
            << "t " << t << " b " << b << " i " << i;
  }
}

TEST(SoftmaxDecode, ExtremeGates) {
  for (const double div : {0.01, 0.1, 1.0, 10.0})
    for (const index_t L : {65, 1000, 5000}) {
      DecodeData data({L, L / 2 + 1}, 4, 1, 32, 16,
                      {.sink_tokens = 1, .gate = true, .gate_div = div}, 50);
      expect_decode_matches_reference(data);
      DecodeData windowed({L, 7}, 2, 2, 16, 40,
                          {.window = 100, .sink_tokens = 3, .gate = true, .gate_div = div}, 51);
      expect_decode_matches_reference(windowed);
    }
}

// Windows that leave whole KV splits invisible (only the sink tokens of split 0 and the last
// split remain), and a one-key window: the output is exactly that key's value.
TEST(SoftmaxDecode, WindowsAndSinkTokensAcrossSplits) {
  for (const index_t w : {1, 2, 100, 1024, 1025, 4999, 5000, 6000})
    for (const index_t sinks : {0, 3}) {
      DecodeData data({5000, 2100}, 2, 1, 16, 16, {.window = w, .sink_tokens = sinks}, 60);
      expect_decode_matches_reference(data);
    }
  DecodeData one({300, 5}, 4, 2, 32, 24, {.window = 1}, 61);
  const auto kv = one.cache(0);
  const auto o = one.decode(*kv);
  for (index_t b = 0; b < one.B; ++b)
    for (index_t h = 0; h < one.HQ; ++h)
      for (index_t e = 0; e < one.Dv; ++e) {
        const index_t L = one.lens[static_cast<std::size_t>(b)];
        EXPECT_EQ(o[static_cast<std::size_t>((b * one.HQ + h) * one.Dv + e)],
                  one.v[static_cast<std::size_t>(b)]
                       [static_cast<std::size_t>(((L - 1) * one.HKV + h / 2) * one.Dv + e)]);
      }
}

// A query h in a batch of 2 gets NaN; the other heads and the other sequence stay finite.
TEST(SoftmaxDecode, NaNInQueryStaysInItsHead) {
  DecodeData data({2000, 70}, 4, 1, 32, 16, {.gate = true, .sink = true}, 70);
  data.q[static_cast<std::size_t>((0 * 4 + 2) * 32 + 5)] = NAN;
  const auto kv = data.cache(0);
  const auto o = data.decode(*kv);
  for (index_t b = 0; b < 2; ++b)
    for (index_t h = 0; h < 4; ++h)
      for (index_t e = 0; e < 16; ++e) {
        const float x = o[static_cast<std::size_t>((b * 4 + h) * 16 + e)];
        if (b == 0 && h == 2)
          EXPECT_TRUE(std::isnan(x));
        else
          EXPECT_TRUE(std::isfinite(x)) << "b" << b << " h" << h;
      }
}

// NaN in the value of a key outside the window (and not a sink token) must not reach the
// output (decode reads only the visible key ranges); one inside the window does.
TEST(SoftmaxDecode, NaNInValueOutsideWindowIsIgnored) {
  DecodeData data({200, 200}, 2, 1, 16, 16, {.window = 10, .sink_tokens = 2}, 71);
  data.v[0][static_cast<std::size_t>(50 * 16 + 3)] = NAN;   // sequence 0: key 50, invisible
  data.v[1][static_cast<std::size_t>(195 * 16 + 3)] = NAN;  // sequence 1: key 195, visible
  const auto o = data.decode(*data.cache(0));
  for (index_t h = 0; h < 2; ++h) {
    EXPECT_FALSE(std::isnan(o[static_cast<std::size_t>((0 * 2 + h) * 16 + 3)])) << "h" << h;
    EXPECT_TRUE(std::isnan(o[static_cast<std::size_t>((1 * 2 + h) * 16 + 3)])) << "h" << h;
  }
}

// ---- decoding step by step ------------------------------------------------------------------

// Appends one token per sequence at a time (cache.append with B rows) and decodes after each:
// the outputs are the rows of the reference's causal prefill over all T tokens.
void expect_steps_match_prefill(const DecodeCase& c, index_t T, index_t HQ, index_t HKV, index_t D,
                                index_t Dv, index_t page_size, std::uint64_t seed) {
  const index_t B = 2;
  test::SoftmaxData pre({.B = B, .T = T, .S = T, .HQ = HQ, .HKV = HKV, .D = D, .Dv = Dv},
                        {.causal = true,
                         .window = c.window,
                         .sink_tokens = c.sink_tokens,
                         .softcap = c.softcap,
                         .alibi = c.alibi,
                         .gate = true,
                         .gate_div = c.gate_div,
                         .sink = c.sink},
                        seed);
  SoftmaxInputs full = pre.inputs();
  if (!c.gate) full.g = {};
  std::vector<double> want(pre.out_size());
  reference::softmax_attention(full, c.options(), bthd(want.data(), B, T, HQ, Dv));

  KVCache kv(
      B, HKV, D, Dv,
      {.capacity = page_size > 0 ? 0 : T, .page_size = page_size, .gate_heads = c.gate ? HQ : 0});
  std::vector<float> got(pre.out_size(), test::kSentinel);
  for (index_t t = 0; t < T; ++t) {
    const auto at = [&](const std::vector<float>& x, index_t H, index_t F) {
      return View4<const float>(x.data() + t * H * F, {B, 1, H, F}, {T * H * F, H * F, F, 1});
    };
    const View3<const float> gt =
        c.gate ? View3<const float>(pre.g.data() + t * HQ, {B, 1, HQ}, {T * HQ, HQ, 1})
               : View3<const float>{};
    kv.append(at(pre.k, HKV, D), at(pre.v, HKV, Dv), gt);
    ASSERT_EQ(kv.length(0), t + 1);
    ASSERT_EQ(kv.length(1), t + 1);
    DecodeInputs in{.q = at(pre.q, HQ, D), .alibi_slopes = full.alibi_slopes, .sink = full.sink};
    softmax::flash_decode(
        in, kv, c.options(),
        View4<float>(got.data() + t * HQ * Dv, {B, 1, HQ, Dv}, {T * HQ * Dv, HQ * Dv, Dv, 1}));
  }
  EXPECT_LT(rel_rmse(got, want), kRelRmseBound) << c.str() << " page " << page_size;
}

// The lse output of decode equals flash_attention's lse of the last row of a causal prefill
// over the same tokens (the same definition: log Σ_visible e^s [+ e^sink]), across KV splits,
// windows that hide whole splits, sink logits and gates; with lse, o keeps its bits; a query
// that is NaN gives NaN; a bad lse view is an error before anything is written.
TEST(SoftmaxDecode, LseEqualsPrefillLseOfLastRow) {
  const DecodeCase cases[] = {
      {},
      {.window = 48, .sink_tokens = 4, .sink = true},
      {.window = 2000, .softcap = 2.0, .alibi = true, .gate = true, .gate_div = 0.1},
      {.window = 1, .sink = true},
  };
  std::uint64_t seed = 300;
  for (const DecodeCase& c : cases)
    for (const auto& lens : {std::vector<index_t>{1, 70}, std::vector<index_t>{3000, 1025}}) {
      DecodeData data(lens, 4, 2, 32, 24, c, seed++);
      const auto kv = data.cache(64);
      std::vector<float> o(static_cast<std::size_t>(data.B * data.HQ * data.Dv), test::kSentinel);
      std::vector<float> lse(static_cast<std::size_t>(data.B * data.HQ), test::kSentinel);
      softmax::flash_decode(data.inputs(), *kv, c.options(),
                            bthd(o.data(), data.B, 1, data.HQ, data.Dv),
                            bth(lse.data(), data.B, 1, data.HQ));
      expect_same_bits(o, data.decode(*kv), data.str() + " o with lse");
      for (index_t b = 0; b < data.B; ++b) {
        const index_t L = data.lens[static_cast<std::size_t>(b)];
        // Prefill over the L tokens with the decode query as the last of L queries (the others
        // are copies of it; only the last row is compared).
        std::vector<float> qs(static_cast<std::size_t>(L * data.HQ * data.D));
        for (index_t t = 0; t < L; ++t)
          std::copy_n(data.q.data() + b * data.HQ * data.D, data.HQ * data.D,
                      qs.data() + t * data.HQ * data.D);
        SoftmaxInputs in;
        in.q = bthd(qs.data(), 1, L, data.HQ, data.D);
        in.k = data.k_of(b, 0, L);
        in.v = data.v_of(b, 0, L);
        in.g = data.g_of(b, 0, L);
        const DecodeInputs di = data.inputs();
        in.alibi_slopes = di.alibi_slopes;
        in.sink = di.sink;
        std::vector<float> po(static_cast<std::size_t>(L * data.HQ * data.Dv));
        std::vector<float> plse(static_cast<std::size_t>(L * data.HQ));
        softmax::flash_attention(in, c.options(), bthd(po.data(), 1, L, data.HQ, data.Dv),
                                 bth(plse.data(), 1, L, data.HQ));
        for (index_t h = 0; h < data.HQ; ++h) {
          const float want = plse[static_cast<std::size_t>((L - 1) * data.HQ + h)];
          const float got = lse[static_cast<std::size_t>(b * data.HQ + h)];
          ASSERT_TRUE(std::isfinite(got)) << data.str();
          EXPECT_NEAR(got, want, 1e-5 * std::max(1.f, std::abs(want)))
              << data.str() << " b" << b << " h" << h;
        }
      }
    }

  DecodeData nan_q({200, 5}, 2, 1, 16, 16, {.sink = true}, 310);
  nan_q.q[3] = NAN;  // sequence 0, head 0
  const auto kv = nan_q.cache(0);
  std::vector<float> o(static_cast<std::size_t>(2 * 2 * 16));
  std::vector<float> lse(4, test::kSentinel);
  softmax::flash_decode(nan_q.inputs(), *kv, nan_q.c.options(), bthd(o.data(), 2, 1, 2, 16),
                        bth(lse.data(), 2, 1, 2));
  EXPECT_TRUE(std::isnan(lse[0]));
  for (std::size_t i = 1; i < 4; ++i) EXPECT_TRUE(std::isfinite(lse[i])) << i;

  std::fill(o.begin(), o.end(), test::kSentinel);
  std::fill(lse.begin(), lse.end(), test::kSentinel);
  try {
    softmax::flash_decode(nan_q.inputs(), *kv, nan_q.c.options(), bthd(o.data(), 2, 1, 2, 16),
                          bth(lse.data(), 2, 2, 1));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "lse") << e.what();
  }
  for (float x : o) ASSERT_EQ(x, test::kSentinel);
  for (float x : lse) ASSERT_EQ(x, test::kSentinel);
}

TEST(SoftmaxDecode, TokenByTokenMatchesPrefillRows) {
  std::uint64_t seed = 80;
  for (const DecodeCase& c : kCases)
    for (const index_t page : {0, 16})
      expect_steps_match_prefill(c, 130, 4, 2, 32, 24, page, seed++);
  expect_steps_match_prefill({.gate = true, .gate_div = 0.01}, 130, 3, 1, 72, 40, 64, seed++);
}

// Token by token past the first KV split (1024 keys), MQA.
TEST(SoftmaxDecode, TokenByTokenAcrossSplits) {
  expect_steps_match_prefill(
      {.window = 700, .sink_tokens = 2, .alibi = true, .gate = true, .sink = true}, 1100, 1, 1, 16,
      8, 64, 90);
}

// ---- paged caches, threads ------------------------------------------------------------------

// Page sizes 16 and 64 (and an odd 7) give the same bits as one contiguous page, whether the
// tokens arrive at once or in uneven chunks.
TEST(SoftmaxDecode, PagedEqualsContiguous) {
  std::uint64_t seed = 100;
  for (const DecodeCase& c : {kCases[0], kCases[1], kCases[6]}) {
    DecodeData data({1000, 5000}, 4, 2, 32, 24, c, seed++);
    const auto contiguous = data.decode(*data.cache(0));
    for (const index_t page : {16, 64, 7})
      for (const index_t chunk : {0, 1, 37}) {
        if (chunk == 1 && page != 16) continue;  // token-at-a-time once
        expect_same_bits(
            data.decode(*data.cache(page, chunk)), contiguous,
            data.str() + " page " + std::to_string(page) + " chunk " + std::to_string(chunk));
      }
  }
}

TEST(SoftmaxDecode, AnyThreadCountGivesIdenticalBits) {
  DecodeData data({5000, 3000, 1}, 8, 2, 32, 24, kCases[6], 110);
  for (const index_t page : {0, 64}) {
    const auto kv = data.cache(page);
    const auto serial = data.decode(*kv);
    for (const int threads : {1, 2, 3, 8})
      expect_same_bits(data.decode(*kv, ThreadPool(threads)), serial,
                       "page " + std::to_string(page) + " threads " + std::to_string(threads));
  }
}

// ---- bad arguments --------------------------------------------------------------------------

template <class F>
void expect_error(F&& f, const std::string& arg) {
  try {
    f();
    ADD_FAILURE() << "no error for " << arg;
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), arg) << e.what();
    EXPECT_NE(std::string(e.what()).find("'" + arg + "'"), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a polyattn::Error for " << arg << ": " << e.what();
  }
}

TEST(SoftmaxDecode, BadCacheArguments) {
  const KVCacheOptions ok{.capacity = 8};
  expect_error([&] { (void)KVCache(0, 1, 8, 8, ok); }, "batch");
  expect_error([&] { (void)KVCache(1, 0, 8, 8, ok); }, "kv_heads");
  expect_error([&] { (void)KVCache(1, 1, -1, 8, ok); }, "head_dim");
  expect_error([&] { (void)KVCache(1, 1, 8, 0, ok); }, "value_dim");
  expect_error([&] { (void)KVCache(1, 1, 8, 8, {.capacity = 8, .page_size = -1}); }, "page_size");
  expect_error([&] { (void)KVCache(1, 1, 8, 8, {.capacity = -1, .page_size = 4}); }, "capacity");
  expect_error([&] { (void)KVCache(1, 1, 8, 8, {.capacity = 8, .gate_heads = -1}); }, "gate_heads");
  expect_error([&] { (void)KVCache(1, 1, 8, 8, {}); }, "capacity");  // contiguous needs a capacity
}

// A failed append changes nothing: same lengths, and the next decode gives the same bits.
TEST(SoftmaxDecode, BadAppendChangesNothing) {
  for (const index_t page : {0, 4}) {
    DecodeData data({40, 40}, 4, 2, 8, 6, {.gate = true}, 120);
    KVCache kv(2, 2, 8, 6, {.capacity = 12, .page_size = page, .gate_heads = 4});
    auto k2 = [&](index_t n) { return bthd(data.k[0].data(), 2, n, 2, 8); };
    auto v2 = [&](index_t n) { return bthd(data.v[0].data(), 2, n, 2, 6); };
    auto g2 = [&](index_t n) { return bth(data.g[0].data(), 2, n, 4); };
    kv.append(k2(4), v2(4), g2(4));
    const auto before = data.decode(kv);
    expect_error([&] { kv.append({}, v2(1), g2(1)); }, "k");
    expect_error([&] { kv.append(bthd(data.k[0].data(), 2, 1, 2, 7), v2(1), g2(1)); }, "k");
    expect_error([&] { kv.append(bthd(data.k[0].data(), 1, 1, 2, 8), v2(1), g2(1)); }, "k");
    expect_error([&] { kv.append(k2(1), {}, g2(1)); }, "v");
    expect_error([&] { kv.append(k2(1), v2(2), g2(1)); }, "v");  // n differs from k
    expect_error([&] { kv.append(k2(1), bthd(data.v[0].data(), 2, 1, 1, 6), g2(1)); }, "v");
    expect_error([&] { kv.append(k2(1), v2(1)); }, "g");  // the cache keeps gates
    expect_error([&] { kv.append(k2(1), v2(1), bth(data.g[0].data(), 2, 1, 2)); }, "g");
    expect_error([&] { kv.append(k2(9), v2(9), g2(9)); }, "k");  // 4 + 9 > capacity 12
    expect_error(
        [&] {
          kv.append_to(2, bthd(data.k[0].data(), 1, 1, 2, 8), bthd(data.v[0].data(), 1, 1, 2, 6),
                       bth(data.g[0].data(), 1, 1, 4));
        },
        "b");
    expect_error([&] { kv.append_to(0, k2(1), v2(1), g2(1)); }, "k");  // batch 2 rows for one
    EXPECT_EQ(kv.length(0), 4);
    EXPECT_EQ(kv.length(1), 4);
    expect_same_bits(data.decode(kv), before, "after failed appends, page " + std::to_string(page));
  }
  KVCache plain(1, 1, 4, 4, {.capacity = 4});
  const std::vector<float> x(16, 1.f);
  expect_error(
      [&] {
        plain.append(bthd(x.data(), 1, 1, 1, 4), bthd(x.data(), 1, 1, 1, 4),
                     bth(x.data(), 1, 1, 1));
      },
      "g");  // gates for a cache without them
  EXPECT_EQ(plain.length(0), 0);
}

TEST(SoftmaxDecode, BadDecodeArgumentsLeaveOutputUntouched) {
  DecodeData data({20, 9}, 4, 2, 8, 6, {.alibi = true, .gate = true, .sink = true}, 130);
  const auto kv = data.cache(0);
  const DecodeInputs good = data.inputs();
  const SoftmaxOptions opt = data.c.options();
  std::vector<float> o(512);  // room for every (bad) output view below
  const std::vector<float> big = random_vector(1024, 3);
  auto check = [&](const DecodeInputs& in, const SoftmaxOptions& op, const KVCache& cache,
                   const std::string& arg, std::function<View4<float>()> out = {}) {
    for (const bool pool : {false, true}) {
      std::fill(o.begin(), o.end(), test::kSentinel);
      const View4<float> ov = out ? out() : bthd(o.data(), 2, 1, 4, 6);
      expect_error(
          [&] {
            if (pool)
              softmax::flash_decode(in, cache, op, ov, ThreadPool(2));
            else
              softmax::flash_decode(in, cache, op, ov);
          },
          arg);
      for (float x : o) ASSERT_EQ(x, test::kSentinel) << "output written for bad " << arg;
    }
  };
  DecodeInputs in = good;
  in.q = {};
  check(in, opt, *kv, "q");
  in.q = bthd(big.data(), 2, 2, 4, 8);  // two queries, an output for one
  check(in, opt, *kv, "o");
  in.q = bthd(big.data(), 2, 10, 4, 8);  // ten queries: sequence 1 holds only 9 tokens
  check(in, opt, *kv, "cache", [&] { return bthd(o.data(), 2, 10, 4, 6); });
  in.q = bthd(big.data(), 2, 0, 4, 8);  // no query
  check(in, opt, *kv, "q", [&] { return bthd(o.data(), 2, 0, 4, 6); });
  in.q = bthd(big.data(), 2, 1, 4, 7);
  check(in, opt, *kv, "q");
  in.q = bthd(big.data(), 1, 1, 4, 8);  // batch of the cache is 2
  check(in, opt, *kv, "q");
  in.q = View4<const float>(big.data(), {2, 1, 4, 8}, {32, 32, -8, 1});
  check(in, opt, *kv, "q");
  in = good;
  in.alibi_slopes = View1<const float>::contiguous(big.data(), {3});
  check(in, opt, *kv, "alibi_slopes");
  in = good;
  in.sink = View1<const float>::contiguous(big.data(), {8});
  check(in, opt, *kv, "sink");
  in.sink = View1<const float>(nullptr, {4}, {1});
  check(in, opt, *kv, "sink");
  // q heads must be a multiple of the cache's kv heads (3 % 2) and match its gate heads (6 != 4).
  {
    DecodeData three({5, 5}, 3, 1, 8, 6, {}, 131);
    in = three.inputs();
    check(in, opt, *kv, "q", [&] { return bthd(o.data(), 2, 1, 3, 6); });
    DecodeData six({5, 5}, 6, 2, 8, 6, {}, 132);
    in = six.inputs();
    check(in, opt, *kv, "cache", [&] { return bthd(o.data(), 2, 1, 6, 6); });
  }
  in = good;
  check(in, opt, *kv, "o", [] { return View4<float>{}; });
  check(in, opt, *kv, "o", [&] { return bthd(o.data(), 2, 1, 4, 5); });
  check(in, opt, *kv, "o", [&] { return bthd(o.data(), 2, 1, 2, 6); });
  SoftmaxOptions bad = opt;
  bad.window = -1;
  check(in, bad, *kv, "window");
  bad = opt;
  bad.sink_tokens = -1;
  check(in, bad, *kv, "sink_tokens");
  for (const double cap : {-1.0, double(std::numeric_limits<float>::infinity()),
                           double(std::numeric_limits<float>::quiet_NaN())}) {
    bad = opt;
    bad.softcap = cap;
    check(in, bad, *kv, "softcap");
  }
  for (const double scale : {0.0, -2.0, double(std::numeric_limits<float>::infinity())}) {
    bad = opt;
    bad.scale = scale;
    check(in, bad, *kv, "scale");
  }
  const BlockMask bm = BlockMask::for_lengths(2, 4, 1, 20, 16, 16, true);
  bad = opt;
  bad.block_mask = &bm;
  check(in, bad, *kv, "block_mask");
  // A sequence with no token yet.
  KVCache partial(2, 2, 8, 6, {.capacity = 20, .gate_heads = 4});
  partial.append_to(0, data.k_of(0, 0, 3), data.v_of(0, 0, 3), data.g_of(0, 0, 3));
  check(good, opt, partial, "cache");
}

// ---- dropping pages behind a window -----------------------------------------------------------

// A sliding-window decoder drops, after each step, every page below the next step's window:
// outputs keep the bits of a cache that drops nothing, and memory stays O(window + page).
void expect_dropping_keeps_bits(const DecodeCase& c, index_t page, index_t T, std::uint64_t seed) {
  const index_t B = 2, HQ = 4, HKV = 2, D = 16, Dv = 8;
  DecodeData data({T, T}, HQ, HKV, D, Dv, c, seed);
  const KVCacheOptions opt{.page_size = page, .gate_heads = c.gate ? HQ : 0};
  KVCache keep(B, HKV, D, Dv, opt), drop(B, HKV, D, Dv, opt);
  std::vector<float> q(static_cast<std::size_t>(B * HQ * D));
  index_t most_pages = 0;
  for (index_t t = 0; t < T; ++t) {
    for (index_t b = 0; b < B; ++b) {
      for (KVCache* kv : {&keep, &drop})
        kv->append_to(b, data.k_of(b, t, 1), data.v_of(b, t, 1), data.g_of(b, t, 1));
      std::copy_n(random_vector(static_cast<std::size_t>(HQ * D), seed + 1000 * t + b).begin(),
                  HQ * D, q.begin() + b * HQ * D);
    }
    DecodeInputs in = data.inputs();
    in.q = bthd(q.data(), B, 1, HQ, D);
    std::vector<float> o1(static_cast<std::size_t>(B * HQ * Dv)), o2(o1.size());
    softmax::flash_decode(in, keep, c.options(), bthd(o1.data(), B, 1, HQ, Dv));
    softmax::flash_decode(in, drop, c.options(), bthd(o2.data(), B, 1, HQ, Dv));
    ASSERT_EQ(0, std::memcmp(o1.data(), o2.data(), o1.size() * sizeof(float)))
        << c.str() << " page " << page << " step " << t;
    // The next query (at length t + 2) sees keys j >= t + 2 - window.
    for (index_t b = 0; b < B; ++b) drop.drop_before(b, std::max<index_t>(0, t + 2 - c.window));
    most_pages = std::max(most_pages, drop.pages_allocated());
  }
  EXPECT_EQ(drop.first_kept(0), T + 1 - c.window);
  EXPECT_LE(most_pages, B * ((c.window + page - 1) / page + 2)) << c.str() << " page " << page;
  EXPECT_GT(keep.pages_allocated(), most_pages);
}

TEST(SoftmaxDecode, DroppingPagesBehindTheWindowKeepsBits) {
  for (const index_t page : {16, 64}) {
    expect_dropping_keeps_bits({.window = 50}, page, 400, 140);
    expect_dropping_keeps_bits({.window = 1, .softcap = 2.0, .alibi = true, .sink = true}, page,
                               200, 141);
  }
}

// Forgetting-gate caches keep G = cumsum(g) per token; dropping pages must not lose what is
// still needed (decode forms G_p − G_j over the kept keys only).
// (Caught a crash: decode formed G for every key of its split, dropped ones included.)
TEST(SoftmaxDecode, DroppingPagesOfAGateCacheKeepsBits) {
  for (const index_t page : {16, 64})
    expect_dropping_keeps_bits({.window = 50, .gate = true, .gate_div = 0.1}, page, 300, 150);
}

// Dropping exactly up to the cache's length (a page boundary), then appending more tokens.
void append_after_dropping_everything(bool gate) {
  DecodeData data({12}, 2, 1, 8, 8, {.window = 4, .gate = gate}, 160);
  const KVCacheOptions opt{.page_size = 4, .gate_heads = gate ? 2 : 0};
  KVCache keep(1, 1, 8, 8, opt), drop(1, 1, 8, 8, opt);
  for (KVCache* kv : {&keep, &drop})
    kv->append_to(0, data.k_of(0, 0, 8), data.v_of(0, 0, 8), data.g_of(0, 0, 8));
  drop.drop_before(0, 8);  // every page of the sequence
  for (KVCache* kv : {&keep, &drop})
    kv->append_to(0, data.k_of(0, 8, 4), data.v_of(0, 8, 4), data.g_of(0, 8, 4));
  expect_same_bits(data.decode(drop), data.decode(keep), "gate " + std::to_string(gate));
}

TEST(SoftmaxDecode, AppendAfterDroppingEverything) {
  append_after_dropping_everything(false);
}

// (Caught a crash: append continued the gate cumsum from a token whose page was dropped.)
TEST(SoftmaxDecode, AppendAfterDroppingEverythingWithGates) {
  append_after_dropping_everything(true);
}

// A query that still needs dropped keys is refused (argument 'cache'), o untouched.
TEST(SoftmaxDecode, DroppedKeysStillNeededAreAnError) {
  DecodeData data({100, 100}, 2, 1, 8, 8, {}, 170);
  for (const index_t page : {0, 16}) {
    auto kv = data.cache(page);
    kv->drop_before(1, 40);
    std::vector<float> o(2 * 2 * 8, test::kSentinel);
    const auto call = [&](index_t window, index_t sinks) {
      DecodeCase c{.window = window, .sink_tokens = sinks};
      softmax::flash_decode(data.inputs(), *kv, c.options(), bthd(o.data(), 2, 1, 2, 8));
    };
    expect_error([&] { call(0, 0); }, "cache");   // no window: every key is needed
    expect_error([&] { call(61, 0); }, "cache");  // keys 39.. needed
    expect_error([&] { call(50, 2); }, "cache");  // sink tokens were dropped
    for (float x : o) ASSERT_EQ(x, test::kSentinel);
    call(60, 0);  // keys 40.. : fine
    for (float x : o) ASSERT_TRUE(std::isfinite(x));
    // The other sequence kept everything.
    expect_error([&] { kv->drop_before(2, 0); }, "b");
    expect_error([&] { kv->drop_before(0, 101); }, "j");
    expect_error([&] { kv->drop_before(0, -1); }, "j");
  }
}

}  // namespace
