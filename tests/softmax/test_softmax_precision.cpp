// tests/softmax/test_softmax_precision.cpp — bf16 / fp16 q, k, v, o in softmax prefill, and
// fp32 / bf16 / fp16 / int8 KV caches in decode (SPEC §8), on every ISA (ctest reruns the binary
// per lower ISA).
//
// The double reference runs on the values the kernel actually sees: the inputs rounded to their
// element type (and, for an int8 cache, quantised and dequantised by the cache's documented
// rule). With an fp32 output the kernel must then meet the fp32 bound (1e-5): everything after
// the load is fp32, so any error beyond that would be a conversion bug. With a bf16 / fp16 output
// the bound is SPEC §8's (8e-3 / 2e-3), and the output must equal the fp32-output run rounded
// once. An int8 cache is also held to 3e-2 against the unquantised fp32 reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "common/expect_error.hpp"
#include "common/precision.hpp"
#include "common/test_util.hpp"
#include "polyattn/core/element.hpp"
#include "polyattn/reference/softmax.hpp"
#include "polyattn/softmax/decode.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/kv_cache.hpp"
#include "polyattn/sparse/operator.hpp"
#include "polyattn/sparse/topk.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_error;
using polyattn::test::random_vector;
using polyattn::test::rel_rmse;
using softmax::KVCache;
using softmax::KVCacheOptions;

struct Case {
  index_t B = 2, T = 70, S = 70, HQ = 4, HKV = 2, D = 64, Dv = 48;
  bool causal = false, gate = false, varlen = false;
  index_t window = 0, sinks = 0;
  double softcap = 0.0;
  float qk = 1.f;  // q, k uniform in [-qk, qk)
  std::string str() const {
    return "B" + std::to_string(B) + "T" + std::to_string(T) + "S" + std::to_string(S) + "D" +
           std::to_string(D) + (causal ? " causal" : "") + (gate ? " gate" : "") +
           (varlen ? " varlen" : "") + (window ? " window" : "") + (softcap > 0 ? " softcap" : "") +
           " qk" + std::to_string(qk);
  }
};

std::vector<Case> prefill_cases() {
  std::vector<Case> cs;
  cs.push_back({});
  cs.push_back({.causal = true});
  cs.push_back({.B = 1, .T = 33, .S = 130, .HQ = 8, .HKV = 2, .D = 100, .Dv = 100, .causal = true});
  cs.push_back({.causal = true, .window = 16, .sinks = 2});
  cs.push_back({.causal = true, .gate = true});
  cs.push_back({.softcap = 5.0, .qk = 3.f});
  cs.push_back({.B = 1, .T = 150, .S = 150, .causal = true, .varlen = true});
  cs.push_back({.B = 1, .T = 1000, .S = 1000, .HQ = 2, .HKV = 1, .causal = true, .qk = 4.f});
  cs.push_back({.B = 1, .T = 90, .S = 90, .HQ = 2, .HKV = 1, .D = 33, .Dv = 20, .causal = true});
  return cs;
}

// Random fp32 data of one case and the call's options / sequence table.
struct Data {
  Case c;
  std::vector<float> q, k, v, g;
  std::vector<std::int64_t> cu;
  explicit Data(const Case& cs, std::uint64_t seed) : c(cs) {
    const auto n = [](auto... x) { return static_cast<std::size_t>((x * ...)); };
    q = random_vector(n(c.B, c.T, c.HQ, c.D), seed + 1, -c.qk, c.qk);
    k = random_vector(n(c.B, c.S, c.HKV, c.D), seed + 2, -c.qk, c.qk);
    v = random_vector(n(c.B, c.S, c.HKV, c.Dv), seed + 3);
    if (c.gate) g = random_vector(n(c.B, c.S, c.HQ), seed + 4, -0.3f, -0.001f);
    if (c.varlen) cu = {0, 40, 41, 100, c.T};
  }
  SoftmaxOptions options() const {
    SoftmaxOptions o;
    o.causal = c.causal;
    o.window = c.window;
    o.sink_tokens = c.sinks;
    o.softcap = c.softcap;
    return o;
  }
  // Inputs over given q, k, v storage of any element type.
  template <class Tq, class Tk>
  SoftmaxInputs inputs(const std::vector<Tq>& qs, const std::vector<Tk>& ks,
                       const std::vector<Tk>& vs) const {
    SoftmaxInputs in;
    in.q = bthd(qs.data(), c.B, c.T, c.HQ, c.D);
    in.k = bthd(ks.data(), c.B, c.S, c.HKV, c.D);
    in.v = bthd(vs.data(), c.B, c.S, c.HKV, c.Dv);
    if (c.gate) in.g = bth(g.data(), c.B, c.S, c.HQ);
    in.cu_seqlens = cu;
    return in;
  }
  std::size_t out_size() const { return static_cast<std::size_t>(c.B * c.T * c.HQ * c.Dv); }
};

std::vector<double> reference(const SoftmaxInputs& in, const SoftmaxOptions& opt) {
  const index_t B = in.q.size(0), T = in.q.size(1), HQ = in.q.size(2), Dv = in.v.size(3);
  std::vector<double> o(static_cast<std::size_t>(B * T * HQ * Dv), NAN);
  reference::softmax_attention(in, opt, bthd(o.data(), B, T, HQ, Dv));
  return o;
}

template <class T>
class SoftmaxPrecision : public ::testing::Test {};
using Types = ::testing::Types<bf16, f16>;
struct TypeName {
  template <class T>
  static std::string GetName(int) {
    return std::is_same_v<T, bf16> ? "bf16" : "fp16";
  }
};
TYPED_TEST_SUITE(SoftmaxPrecision, Types, TypeName);

// q, k, v of type T; o in T and in fp32. fp32 o meets the fp32 bound on the rounded inputs; T o
// is exactly fp32 o rounded once, within SPEC §8's bound.
TYPED_TEST(SoftmaxPrecision, PrefillMatchesReferenceOnRoundedInputs) {
  using T = TypeParam;
  std::uint64_t seed = 100;
  for (const Case& c : prefill_cases()) {
    const Data d(c, seed += 10);
    const auto q = test::narrow<T>(d.q), k = test::narrow<T>(d.k), v = test::narrow<T>(d.v);
    const auto qf = test::widen(q), kf = test::widen(k), vf = test::widen(v);
    const std::vector<double> want = reference(d.inputs(qf, kf, vf), d.options());

    std::vector<float> of(d.out_size(), -7.f);
    softmax::flash_attention(d.inputs(q, k, v), d.options(), bthd(of.data(), c.B, c.T, c.HQ, c.Dv));
    // fp32 products: the fp32 bound. bf16 products (AMX) round the softmax weights to bf16:
    // SPEC §8's bf16 bound (measured ≤ 1.8e-3 on these cases).
    const bool bf16_products = softmax::uses_bf16_products(d.inputs(q, k, v));
    EXPECT_LT(rel_rmse(of, want), bf16_products ? test::kBound<bf16> : test::kRelRmseBound)
        << c.str() << " fp32 o" << (bf16_products ? " (bf16 products)" : "");

    std::vector<T> ot(d.out_size(), from_float<T>(-7.f));
    softmax::flash_attention(d.inputs(q, k, v), d.options(), bthd(ot.data(), c.B, c.T, c.HQ, c.Dv),
                             ThreadPool(2));
    const std::vector<float> otf = test::widen(ot);
    EXPECT_LT(rel_rmse(otf, want), test::kBound<T>) << c.str();
    for (std::size_t i = 0; i < of.size(); ++i)
      ASSERT_EQ(otf[i], round_to<T>(of[i])) << c.str() << " element " << i;
  }
}

// Mixed element types cost nothing in prefill (each is widened where it is packed): fp32 q with
// T keys and values, T q with fp32 keys and values.
TYPED_TEST(SoftmaxPrecision, MixedElementTypes) {
  using T = TypeParam;
  const Case c{.causal = true};
  const Data d(c, 7);
  const auto q = test::narrow<T>(d.q), k = test::narrow<T>(d.k), v = test::narrow<T>(d.v);
  const auto qf = test::widen(q), kf = test::widen(k), vf = test::widen(v);
  const std::vector<double> want = reference(d.inputs(qf, kf, vf), d.options());
  std::vector<float> o1(d.out_size()), o2(d.out_size());
  softmax::flash_attention(d.inputs(qf, k, v), d.options(), bthd(o1.data(), c.B, c.T, c.HQ, c.Dv));
  softmax::flash_attention(d.inputs(q, kf, vf), d.options(), bthd(o2.data(), c.B, c.T, c.HQ, c.Dv));
  EXPECT_FALSE(softmax::uses_bf16_products(d.inputs(qf, k, v)));  // only all-bf16 inputs do
  EXPECT_LT(rel_rmse(o1, want), test::kRelRmseBound);
  EXPECT_EQ(o1, o2);
}

// A non-finite value of a key that a query does not see never reaches that query's output (the
// partial tiles' guard), on the fp32 and the bf16-product paths alike.
TYPED_TEST(SoftmaxPrecision, MaskedNonFiniteValuesDoNotLeak) {
  using T = TypeParam;
  const Case c{.B = 1, .T = 70, .S = 70, .HQ = 2, .HKV = 1, .D = 32, .Dv = 32, .causal = true};
  Data d(c, 21);
  const index_t bad = 50;  // key 50: seen by queries 50..69 only
  d.v[static_cast<std::size_t>(bad * c.Dv + 3)] = std::numeric_limits<float>::quiet_NaN();
  const auto q = test::narrow<T>(d.q), k = test::narrow<T>(d.k), v = test::narrow<T>(d.v);
  std::vector<T> o(d.out_size());
  softmax::flash_attention(d.inputs(q, k, v), d.options(), bthd(o.data(), c.B, c.T, c.HQ, c.Dv));
  for (index_t i = 0; i < c.T; ++i)
    for (index_t h = 0; h < c.HQ; ++h) {
      const float x = to_float(o[static_cast<std::size_t>((i * c.HQ + h) * c.Dv + 3)]);
      if (i < bad)
        ASSERT_TRUE(std::isfinite(x)) << "query " << i;
      else
        ASSERT_TRUE(std::isnan(x)) << "query " << i;
    }
}

// Sparse attention on T inputs: the selector reads q and k widened, so it picks the blocks it
// picks for the widened fp32 inputs; the output meets T's bound against the reference restricted
// to that mask, and the T output is the fp32 output rounded once.
TYPED_TEST(SoftmaxPrecision, SparseSelectsAsWidenedAndMatchesReference) {
  using T = TypeParam;
  const Case c{.B = 1, .T = 300, .S = 300, .HQ = 2, .HKV = 1, .D = 64, .Dv = 32, .causal = true};
  const Data d(c, 31);
  const auto q = test::narrow<T>(d.q), k = test::narrow<T>(d.k), v = test::narrow<T>(d.v);
  const auto qf = test::widen(q), kf = test::widen(k), vf = test::widen(v);
  const sparse::TopKSelector sel{.block = 32, .top_k = 2};
  BlockMask mask_t, mask_f;
  std::vector<float> of(d.out_size(), -7.f);
  sparse::sparse_attention(sel, d.inputs(qf, kf, vf), d.options(),
                           bthd(of.data(), c.B, c.T, c.HQ, c.Dv), mask_f);
  std::vector<T> ot(d.out_size(), from_float<T>(-7.f));
  sparse::sparse_attention(sel, d.inputs(q, k, v), d.options(),
                           bthd(ot.data(), c.B, c.T, c.HQ, c.Dv), mask_t, ThreadPool(2));
  ASSERT_EQ(mask_t.bytes().size(), mask_f.bytes().size());
  EXPECT_TRUE(std::equal(mask_t.bytes().begin(), mask_t.bytes().end(), mask_f.bytes().begin()));
  index_t kept = 0;
  for (const auto b : mask_f.bytes()) kept += b;
  EXPECT_LT(kept, static_cast<index_t>(mask_f.bytes().size()));  // the mask does drop blocks

  SoftmaxOptions with_mask = d.options();
  with_mask.block_mask = &mask_f;
  const std::vector<double> want = reference(d.inputs(qf, kf, vf), with_mask);
  const std::vector<float> otf = test::widen(ot);
  EXPECT_LT(rel_rmse(otf, want), test::kBound<T>);
  std::vector<float> ot32(d.out_size(), -7.f);  // T inputs, fp32 output: same kernel path as ot
  BlockMask mask_t32;
  sparse::sparse_attention(sel, d.inputs(q, k, v), d.options(),
                           bthd(ot32.data(), c.B, c.T, c.HQ, c.Dv), mask_t32);
  for (std::size_t i = 0; i < ot32.size(); ++i)
    ASSERT_EQ(otf[i], round_to<T>(ot32[i])) << "element " << i;
}

// Head-first (strided) bf16 / fp16 inputs and a strided output take the element-wise paths.
TYPED_TEST(SoftmaxPrecision, StridedViews) {
  using T = TypeParam;
  const Case c{.B = 2, .T = 40, .S = 40, .HQ = 2, .HKV = 2, .D = 32, .Dv = 32, .causal = true};
  const Data d(c, 11);
  const auto q = test::narrow<T>(d.q), k = test::narrow<T>(d.k), v = test::narrow<T>(d.v);
  const auto qf = test::widen(q), kf = test::widen(k), vf = test::widen(v);
  // The same bytes read as head-first [B, H, T, D]: a different but valid problem.
  SoftmaxInputs hf, hf32;
  hf.q = head_first(q.data(), c.B, c.T, c.HQ, c.D);
  hf.k = head_first(k.data(), c.B, c.S, c.HKV, c.D);
  hf.v = head_first(v.data(), c.B, c.S, c.HKV, c.Dv);
  hf32.q = head_first(qf.data(), c.B, c.T, c.HQ, c.D);
  hf32.k = head_first(kf.data(), c.B, c.S, c.HKV, c.D);
  hf32.v = head_first(vf.data(), c.B, c.S, c.HKV, c.Dv);
  const std::vector<double> want = reference(hf32, d.options());
  // Output with a non-unit inner stride: every other element of a twice-as-long buffer.
  std::vector<T> ob(2 * d.out_size(), from_float<T>(-7.f));
  const TensorView<T, 4> o(ob.data(), {c.B, c.T, c.HQ, c.Dv},
                           {2 * c.T * c.HQ * c.Dv, 2 * c.HQ * c.Dv, 2 * c.Dv, 2});
  softmax::flash_attention(hf, d.options(), o);
  std::vector<float> got;
  for (std::size_t i = 0; i < ob.size(); i += 2) got.push_back(to_float(ob[i]));
  EXPECT_LT(rel_rmse(got, want), test::kBound<T>);
  for (std::size_t i = 1; i < ob.size(); i += 2) ASSERT_EQ(to_float(ob[i]), -7.f) << i;
}

// Long rows whose maximum moves a lot (the bf16-product path raises its reference max only when
// a group's max passes it by more than τ, and then rescales; flash_amx.hpp): scores rising by
// 0.28 per key (a rescale in every group), falling (none after the first), flat (all equal), and
// random data with a window, sink tokens, a forgetting gate and a sink logit over group boundaries.
// The output meets the bound against the reference; lse and row_max equal the fp32 path's on the
// widened inputs (they do not depend on the rounding of the weights).
TYPED_TEST(SoftmaxPrecision, MovingMaximaKeepOutputAndStatistics) {
  using T = TypeParam;
  enum class Shape { rising, falling, flat, random };
  for (const Shape shape : {Shape::rising, Shape::falling, Shape::flat, Shape::random}) {
    const bool rnd = shape == Shape::random;
    const Case c{.B = 1,
                 .T = 600,
                 .S = 600,
                 .HQ = 2,
                 .HKV = 1,
                 .D = 32,
                 .Dv = 80,
                 .causal = true,
                 .gate = rnd,
                 .window = rnd ? 300 : 0,
                 .sinks = rnd ? 4 : 0};
    Data d(c, 31);
    if (shape == Shape::flat) {  // every score 0: every weight e^0, 256 to a full group
      std::fill(d.k.begin(), d.k.end(), 0.f);
    } else if (!rnd) {  // q = 1, k_j = 0.05 j (or 0.05 (S − j)) in every channel: 0.28 · (..)
      std::fill(d.q.begin(), d.q.end(), 1.f);
      for (index_t j = 0; j < c.S; ++j)
        for (index_t e = 0; e < c.D; ++e)
          d.k[static_cast<std::size_t>(j * c.D + e)] =
              0.05f * static_cast<float>(shape == Shape::rising ? j : c.S - j);
    }
    const auto q = test::narrow<T>(d.q), k = test::narrow<T>(d.k), v = test::narrow<T>(d.v);
    const auto qf = test::widen(q), kf = test::widen(k), vf = test::widen(v);
    const std::vector<float> sinks = {0.5f, -1.f};
    SoftmaxInputs in = d.inputs(q, k, v), in32 = d.inputs(qf, kf, vf);
    if (rnd) in.sink = in32.sink = View1<const float>::contiguous(sinks.data(), {c.HQ});
    const std::vector<double> want = reference(in32, d.options());
    const std::size_t rows = static_cast<std::size_t>(c.T * c.HQ);
    std::vector<float> o(d.out_size()), o32(d.out_size());
    std::vector<float> lse(rows), lse32(rows), mx(rows), mx32(rows);
    softmax::flash_attention(
        in, d.options(),
        softmax::FlashOutputs{bthd(o.data(), c.B, c.T, c.HQ, c.Dv), bth(lse.data(), c.B, c.T, c.HQ),
                              bth(mx.data(), c.B, c.T, c.HQ)});
    softmax::flash_attention(
        in32, d.options(),
        softmax::FlashOutputs{bthd(o32.data(), c.B, c.T, c.HQ, c.Dv),
                              bth(lse32.data(), c.B, c.T, c.HQ), bth(mx32.data(), c.B, c.T, c.HQ)});
    const bool bf16_products = softmax::uses_bf16_products(in);
    const char* name = shape == Shape::rising    ? "rising"
                       : shape == Shape::falling ? "falling"
                       : shape == Shape::flat    ? "flat"
                                                 : "random";
    EXPECT_LT(rel_rmse(o, want), bf16_products ? test::kBound<bf16> : test::kRelRmseBound) << name;
    EXPECT_LT(rel_rmse(o32, want), test::kRelRmseBound) << name;
    // Without row_max the amx path does not track the max: it tells a group whose weights stay
    // under e^τ by their sums, and finds the max of the others (flat: sums of 256) from the
    // scores. The same groups keep their reference, so o and lse keep their bits.
    std::vector<float> o_untracked(d.out_size()), lse_untracked(rows);
    softmax::flash_attention(in, d.options(),
                             softmax::FlashOutputs{bthd(o_untracked.data(), c.B, c.T, c.HQ, c.Dv),
                                                   bth(lse_untracked.data(), c.B, c.T, c.HQ),
                                                   {}});
    EXPECT_EQ(o_untracked, o) << name;
    EXPECT_EQ(lse_untracked, lse) << name;
    for (std::size_t i = 0; i < rows; ++i) {
      ASSERT_NEAR(lse[i], lse32[i], 2e-5f * (1.f + std::fabs(lse32[i]))) << name << " row " << i;
      ASSERT_NEAR(mx[i], mx32[i], 2e-5f * (1.f + std::fabs(mx32[i]))) << name << " row " << i;
    }
  }
}

// A NaN in a key (every query that sees that key) or in a query (its own row) poisons exactly the
// rows it poisons on the fp32 path, in o, lse and row_max; the other rows keep their values (the
// bf16-product path notices a NaN score through its lane's sum, flash_amx.hpp). Keys in several
// groups of the amx path.
TYPED_TEST(SoftmaxPrecision, NanScoresPoisonTheRowsThatSeeThem) {
  using T = TypeParam;
  const Case c{.B = 1, .T = 400, .S = 400, .HQ = 2, .HKV = 1, .D = 32, .Dv = 32, .causal = true};
  Data d(c, 41);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  d.k[static_cast<std::size_t>(300 * c.D + 5)] = nan;              // key 300, every head
  d.q[static_cast<std::size_t>((20 * c.HQ + 1) * c.D + 7)] = nan;  // query 20 of head 1
  const auto q = test::narrow<T>(d.q), k = test::narrow<T>(d.k), v = test::narrow<T>(d.v);
  const auto qf = test::widen(q), kf = test::widen(k), vf = test::widen(v);
  const std::size_t rows = static_cast<std::size_t>(c.T * c.HQ);
  std::vector<float> o(d.out_size()), o32(d.out_size());
  std::vector<float> lse(rows), lse32(rows), mx(rows), mx32(rows);
  softmax::flash_attention(
      d.inputs(q, k, v), d.options(),
      softmax::FlashOutputs{bthd(o.data(), c.B, c.T, c.HQ, c.Dv), bth(lse.data(), c.B, c.T, c.HQ),
                            bth(mx.data(), c.B, c.T, c.HQ)});
  softmax::flash_attention(
      d.inputs(qf, kf, vf), d.options(),
      softmax::FlashOutputs{bthd(o32.data(), c.B, c.T, c.HQ, c.Dv),
                            bth(lse32.data(), c.B, c.T, c.HQ), bth(mx32.data(), c.B, c.T, c.HQ)});
  const float tol = softmax::uses_bf16_products(d.inputs(q, k, v)) ? 2e-2f : 1e-5f;
  for (std::size_t r = 0; r < rows; ++r) {
    const index_t i = static_cast<index_t>(r) / c.HQ, h = static_cast<index_t>(r) % c.HQ;
    const bool poisoned = i >= 300 || (i == 20 && h == 1);
    ASSERT_EQ(std::isnan(lse32[r]), poisoned) << "row " << r;  // the fp32 path, as documented
    ASSERT_EQ(std::isnan(lse[r]), poisoned) << "row " << r;
    ASSERT_EQ(std::isnan(mx[r]), poisoned) << "row " << r;
    for (index_t e = 0; e < c.Dv; ++e) {
      const std::size_t x = r * static_cast<std::size_t>(c.Dv) + static_cast<std::size_t>(e);
      ASSERT_EQ(std::isnan(o[x]), poisoned) << "row " << r << " channel " << e;
      if (!poisoned) ASSERT_NEAR(o[x], o32[x], tol) << "row " << r << " channel " << e;
    }
    if (!poisoned) {
      ASSERT_NEAR(lse[r], lse32[r], 2e-5f * (1.f + std::fabs(lse32[r]))) << "row " << r;
      ASSERT_NEAR(mx[r], mx32[r], 2e-5f * (1.f + std::fabs(mx32[r]))) << "row " << r;
    }
  }
}

// ---- decode over typed caches ----------------------------------------------------------------

// The value an int8 cache row holds for x (the documented rule of kv_cache.hpp).
std::vector<float> int8_roundtrip(const float* x, index_t n) {
  float amax = 0.f;
  for (index_t e = 0; e < n; ++e) amax = std::max(amax, std::fabs(x[e]));
  const float s = amax / 127.f;
  std::vector<float> out(static_cast<std::size_t>(n), 0.f);
  if (amax > 0.f)
    for (index_t e = 0; e < n; ++e)
      out[static_cast<std::size_t>(e)] = std::clamp(std::nearbyint(x[e] / s), -127.f, 127.f) * s;
  return out;
}

// What the cache stores for rows of length n in x (layout [.., n]), as float.
std::vector<float> cache_values(Dtype t, const std::vector<float>& x, index_t n) {
  std::vector<float> out(x.size());
  for (std::size_t r = 0; r < x.size(); r += static_cast<std::size_t>(n)) {
    if (t == Dtype::i8) {
      const auto row = int8_roundtrip(x.data() + r, n);
      std::copy(row.begin(), row.end(), out.begin() + static_cast<std::ptrdiff_t>(r));
    } else {
      for (std::size_t e = r; e < r + static_cast<std::size_t>(n); ++e)
        out[e] = t == Dtype::bf16  ? round_to<bf16>(x[e])
                 : t == Dtype::f16 ? round_to<f16>(x[e])
                                   : x[e];
    }
  }
  return out;
}

struct DecodeCase {
  Dtype cache;
  index_t page_size;
};

class DecodePrecision : public ::testing::TestWithParam<DecodeCase> {};

// Decode of the last token over a cache of each element type, bf16 / fp32 queries, fp32 / bf16
// outputs, GQA, a split boundary (S > kSplitKeys), window + sink tokens and softcap.
TEST_P(DecodePrecision, MatchesReferenceOnStoredValues) {
  const DecodeCase dc = GetParam();
  const index_t B = 2, S = 1100, HQ = 8, HKV = 2, D = 100, Dv = 64;
  auto k = random_vector(static_cast<std::size_t>(B * S * HKV * D), 1, -2.f, 2.f);
  auto v = random_vector(static_cast<std::size_t>(B * S * HKV * Dv), 2);
  for (std::size_t i = 0; i < k.size(); i += 37) k[i] *= 6.f;  // outlier channels, as in LLMs
  const auto qv = random_vector(static_cast<std::size_t>(B * HQ * D), 3, -2.f, 2.f);
  const auto q16 = test::narrow<bf16>(qv);
  const auto qf = test::widen(q16);

  KVCache cache(
      B, HKV, D, Dv,
      KVCacheOptions{
          .capacity = dc.page_size ? 0 : S, .page_size = dc.page_size, .dtype = dc.cache});
  // Appended in two pieces (and as bf16 for the second, converted by the cache).
  const index_t s1 = 700;
  std::vector<float> k1, v1, k2, v2;
  for (index_t b = 0; b < B; ++b) {
    const auto kb = k.begin() + b * S * HKV * D, vb = v.begin() + b * S * HKV * Dv;
    k1.insert(k1.end(), kb, kb + s1 * HKV * D);
    k2.insert(k2.end(), kb + s1 * HKV * D, kb + S * HKV * D);
    v1.insert(v1.end(), vb, vb + s1 * HKV * Dv);
    v2.insert(v2.end(), vb + s1 * HKV * Dv, vb + S * HKV * Dv);
  }
  cache.append(bthd(k1.data(), B, s1, HKV, D), bthd(v1.data(), B, s1, HKV, Dv));
  const auto k2b = test::narrow<bf16>(k2), v2b = test::narrow<bf16>(v2);
  cache.append(bthd(k2b.data(), B, S - s1, HKV, D), bthd(v2b.data(), B, S - s1, HKV, Dv));
  // What went in: the first piece as fp32, the second already rounded to bf16.
  std::vector<float> kin, vin;
  const auto k2r = test::widen(k2b), v2r = test::widen(v2b);
  for (index_t b = 0; b < B; ++b) {
    kin.insert(kin.end(), k1.begin() + b * s1 * HKV * D, k1.begin() + (b + 1) * s1 * HKV * D);
    kin.insert(kin.end(), k2r.begin() + b * (S - s1) * HKV * D,
               k2r.begin() + (b + 1) * (S - s1) * HKV * D);
    vin.insert(vin.end(), v1.begin() + b * s1 * HKV * Dv, v1.begin() + (b + 1) * s1 * HKV * Dv);
    vin.insert(vin.end(), v2r.begin() + b * (S - s1) * HKV * Dv,
               v2r.begin() + (b + 1) * (S - s1) * HKV * Dv);
  }
  const auto ks = cache_values(dc.cache, kin, D), vs = cache_values(dc.cache, vin, Dv);

  for (const SoftmaxOptions& opt :
       {SoftmaxOptions{}, SoftmaxOptions{.window = 300, .sink_tokens = 4, .softcap = 20.0}}) {
    SoftmaxOptions ref_opt = opt;
    ref_opt.causal = true;  // the query sits at the last key
    SoftmaxInputs rin;
    rin.q = bthd(qf.data(), B, 1, HQ, D);
    rin.k = bthd(ks.data(), B, S, HKV, D);
    rin.v = bthd(vs.data(), B, S, HKV, Dv);
    const std::vector<double> want = reference(rin, ref_opt);

    std::vector<float> o(static_cast<std::size_t>(B * HQ * Dv));
    softmax::DecodeInputs din;
    din.q = bthd(q16.data(), B, 1, HQ, D);
    softmax::flash_decode(din, cache, opt, bthd(o.data(), B, 1, HQ, Dv), ThreadPool(2));
    const double fp32_bound = dc.cache == Dtype::i8 ? 2e-5 : test::kRelRmseBound;
    EXPECT_LT(rel_rmse(o, want), fp32_bound) << dtype_name(dc.cache) << " window " << opt.window;

    std::vector<bf16> ob(o.size());
    softmax::flash_decode(din, cache, opt, bthd(ob.data(), B, 1, HQ, Dv));
    for (std::size_t i = 0; i < o.size(); ++i) ASSERT_EQ(ob[i], bf16_from(o[i])) << i;

    // The last Tv tokens at once (speculative verify): the last Tv rows of the causal prefill.
    const index_t Tv = 9;
    const auto qv9 =
        test::narrow<bf16>(random_vector(static_cast<std::size_t>(B * Tv * HQ * D), 4));
    const auto qf9 = test::widen(qv9);
    rin.q = bthd(qf9.data(), B, Tv, HQ, D);
    const std::vector<double> want9 = reference(rin, ref_opt);
    std::vector<float> o9(static_cast<std::size_t>(B * Tv * HQ * Dv));
    din.q = bthd(qv9.data(), B, Tv, HQ, D);
    softmax::flash_decode(din, cache, opt, bthd(o9.data(), B, Tv, HQ, Dv), ThreadPool(2));
    EXPECT_LT(rel_rmse(o9, want9), fp32_bound) << dtype_name(dc.cache) << " T " << Tv;

    if (dc.cache == Dtype::i8) {  // SPEC §8: int8 cache against the unquantised inputs
      rin.q = bthd(qf.data(), B, 1, HQ, D);
      rin.k = bthd(kin.data(), B, S, HKV, D);
      rin.v = bthd(vin.data(), B, S, HKV, Dv);
      EXPECT_LT(rel_rmse(o, reference(rin, ref_opt)), 3e-2) << "window " << opt.window;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Caches, DecodePrecision,
                         ::testing::Values(DecodeCase{Dtype::f32, 0}, DecodeCase{Dtype::bf16, 0},
                                           DecodeCase{Dtype::f16, 128}, DecodeCase{Dtype::i8, 0},
                                           DecodeCase{Dtype::i8, 64}, DecodeCase{Dtype::bf16, 48}),
                         [](const auto& info) {
                           return std::string(dtype_name(info.param.cache) == "fp32"   ? "fp32"
                                              : dtype_name(info.param.cache) == "bf16" ? "bf16"
                                              : dtype_name(info.param.cache) == "fp16" ? "fp16"
                                                                                       : "int8") +
                                  (info.param.page_size ? "_paged" : "_contiguous");
                         });

// The int8 layout: one scale per (token, kv head) row, |dequantised − x| ≤ scale / 2, padding 0.
TEST(KVCacheInt8, RowsRoundTripWithinHalfAStep) {
  const index_t D = 40, Dv = 24;
  KVCache cache(1, 2, D, Dv, KVCacheOptions{.capacity = 8, .dtype = Dtype::i8});
  const auto k = random_vector(static_cast<std::size_t>(5 * 2 * D), 5, -3.f, 3.f);
  auto v = random_vector(static_cast<std::size_t>(5 * 2 * Dv), 6);
  std::fill(v.begin(), v.begin() + Dv, 0.f);  // an all-zero row: scale 0, values 0
  cache.append(bthd(k.data(), 1, 5, 2, D), bthd(v.data(), 1, 5, 2, Dv));
  EXPECT_EQ(cache.dtype(), Dtype::i8);
  for (index_t j = 0; j < 5; ++j)
    for (index_t hk = 0; hk < 2; ++hk) {
      const KVCache::Run r = cache.run(0, hk, j);
      const std::int8_t* kr = r.keys<std::int8_t>();
      const float* kx = k.data() + (j * 2 + hk) * D;
      float amax = 0.f;
      for (index_t e = 0; e < D; ++e) amax = std::max(amax, std::fabs(kx[e]));
      EXPECT_EQ(r.k_scale[0], amax / 127.f);
      for (index_t e = 0; e < D; ++e)
        ASSERT_LE(std::fabs(kr[e] * r.k_scale[0] - kx[e]), r.k_scale[0] / 2 * 1.0001f);
      for (index_t e = D; e < cache.key_stride(); ++e) ASSERT_EQ(kr[e], 0);
      if (j == 0 && hk == 0) {
        EXPECT_EQ(r.v_scale[0], 0.f);
        for (index_t e = 0; e < Dv; ++e) ASSERT_EQ(r.values<std::int8_t>()[e], 0);
      }
    }
}

// A non-finite value poisons its own row (scale NaN): the output is NaN, nothing crashes, and
// the other sequence is unaffected.
TEST(KVCacheInt8, NonFiniteRowPropagates) {
  const index_t D = 16, Dv = 16;
  KVCache cache(2, 1, D, Dv, KVCacheOptions{.capacity = 4, .dtype = Dtype::i8});
  auto k = random_vector(static_cast<std::size_t>(2 * 3 * D), 8);
  const auto v = random_vector(static_cast<std::size_t>(2 * 3 * Dv), 9);
  k[5] = std::numeric_limits<float>::infinity();  // sequence 0, token 0
  cache.append(bthd(k.data(), 2, 3, 1, D), bthd(v.data(), 2, 3, 1, Dv));
  const auto q = random_vector(static_cast<std::size_t>(2 * D), 10);
  std::vector<float> o(static_cast<std::size_t>(2 * Dv));
  softmax::DecodeInputs din;
  din.q = bthd(q.data(), 2, 1, 1, D);
  softmax::flash_decode(din, cache, {}, bthd(o.data(), 2, 1, 1, Dv));
  for (index_t e = 0; e < Dv; ++e) {
    EXPECT_TRUE(std::isnan(o[static_cast<std::size_t>(e)])) << e;
    EXPECT_TRUE(std::isfinite(o[static_cast<std::size_t>(Dv + e)])) << e;
  }
}

TEST(SoftmaxPrecisionErrors, BadElementTypesAreNamed) {
  EXPECT_NE(expect_error("dtype",
                         [] {
                           KVCache(1, 1, 8, 8,
                                   KVCacheOptions{.capacity = 4, .dtype = static_cast<Dtype>(9)});
                         }),
            "");
  // Output shape / overlap checks see element sizes: a bf16 o over q's bytes is rejected.
  std::vector<bf16> qkv(3 * 8 * 16);
  SoftmaxInputs in;
  in.q = bthd(qkv.data(), 1, 8, 1, 16);
  in.k = bthd(qkv.data() + 128, 1, 8, 1, 16);
  in.v = bthd(qkv.data() + 256, 1, 8, 1, 16);
  std::vector<float> o(8 * 16, 1.f);
  EXPECT_NE(expect_error("o",
                         [&] {
                           softmax::flash_attention(
                               in, {}, bthd(reinterpret_cast<bf16*>(o.data()), 1, 8, 2, 16));
                         }),
            "");
  EXPECT_NE(expect_error(
                "o", [&] { softmax::flash_attention(in, {}, bthd(qkv.data() + 64, 1, 8, 1, 16)); }),
            "");
  for (float x : o) ASSERT_EQ(x, 1.f);
}

}  // namespace
