// tests/hybrid/test_hybrid_based.cpp — Based hybrid (Taylor-2 linear + sliding-window softmax):
// prefill against the double reference over awkward lengths and windows (1, small, ≥ T), both
// tiling algorithms, default and explicit scales, varlen, head-first strides; thread counts give
// identical bits; the decoder (prefill + steps) reproduces the reference rows with bounded cache
// memory.
#include <gtest/gtest.h>

#include "hybrid/hybrid_harness.hpp"

namespace {

using namespace polyattn;
using namespace polyattn::test;
using hybrid::BasedHybrid;

BasedHybridOptions based_opts(index_t window) {
  BasedHybridOptions opt;
  opt.window = window;
  return opt;
}

TEST(BasedHybrid, MatchesReferenceOverLengthsAndWindows) {
  for (index_t T : {1, 63, 64, 65, 333}) {
    HybridShape s;
    s.T = T;
    HybridData data(s, 100 + static_cast<std::uint64_t>(T));
    for (index_t w : {index_t{1}, index_t{16}, T + 3}) {
      const std::string what = s.str() + " window " + std::to_string(w);
      expect_matches_reference<BasedHybrid>(data.based(), based_opts(w), data.out_shape(), what);
    }
  }
}

TEST(BasedHybrid, RecurrentDefaultLinearInputsAndScales) {
  HybridShape s;
  s.T = 100;
  s.D = 8;  // lin_q defaults to q: K = D = 8
  HybridData data(s, 7, 1.5f);
  BasedHybridOptions opt = based_opts(24);
  expect_matches_reference<BasedHybrid, Recurrent>(data.based(false), opt, data.out_shape(),
                                                   "recurrent, lin = q/k");
  opt.based_scale = 0.7;
  opt.softmax_scale = 0.9;
  opt.eps = 1e-3;
  expect_matches_reference<BasedHybrid>(data.based(true), opt, data.out_shape(), "explicit scales");
  expect_matches_reference<BasedHybrid, Chunked<16>>(data.based(true), opt, data.out_shape(),
                                                     "chunk 16");
}

TEST(BasedHybrid, VarlenMatchesReference) {
  for (const auto& lens :
       {std::vector<index_t>{1, 64, 65, 3}, std::vector<index_t>{0, 130, 0, 33}}) {
    const HybridShape s = HybridShape::varlen(lens);
    HybridData data(s, 31);
    for (index_t w : {1, 20, 200})
      expect_matches_reference<BasedHybrid>(data.based(), based_opts(w), data.out_shape(),
                                            s.str() + " window " + std::to_string(w));
  }
}

TEST(BasedHybrid, HeadFirstStridesMatchContiguous) {
  HybridShape s;
  s.T = 70;
  HybridData data(s, 5);
  // Head-first copies [B, H, T, X] of every input and of the output.
  auto head_first_copy = [](const Tensor<float, 4>& x, std::vector<float>& buf) {
    const auto [B, T, H, X] = x.shape;
    buf.resize(x.data.size());
    const View4<float> hf = polyattn::head_first(buf.data(), B, T, H, X);
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t h = 0; h < H; ++h)
          for (index_t c = 0; c < X; ++c) hf(b, t, h, c) = x.cview()(b, t, h, c);
    return View4<const float>(hf);
  };
  std::vector<float> qb, kb, vb, lqb, lkb;
  BasedHybridInputs in{head_first_copy(data.q, qb),   head_first_copy(data.k, kb),
                       head_first_copy(data.v, vb),   head_first_copy(data.lq, lqb),
                       head_first_copy(data.lk, lkb), {}};
  std::vector<float> ob(data.q.data.size() / s.D * s.V, kSentinel);
  const View4<float> o = polyattn::head_first(ob.data(), s.B, s.T, s.H, s.V);
  hybrid::based_hybrid(in, based_opts(9), o);
  const std::vector<float> want =
      run_fast<BasedHybrid>(data.based(), based_opts(9), data.out_shape());
  std::vector<float> got;
  for (index_t b = 0; b < s.B; ++b)
    for (index_t t = 0; t < s.T; ++t)
      for (index_t h = 0; h < s.H; ++h)
        for (index_t e = 0; e < s.V; ++e) got.push_back(o(b, t, h, e));
  EXPECT_LT(rel_rmse(got, want), 1e-6);
}

TEST(BasedHybrid, ThreadCountsGiveIdenticalBits) {
  HybridData data(HybridShape{2, 333, 3, 16, 12, 8, {}}, 9);
  HybridData packed(HybridShape::varlen({100, 1, 64, 168}), 10);
  ThreadPool two(2), three(3);
  for (const HybridData* d : {&data, &packed}) {
    const auto serial = run_fast<BasedHybrid>(d->based(), based_opts(40), d->out_shape());
    expect_same_bits(serial, run_fast<BasedHybrid>(d->based(), based_opts(40), d->out_shape(), two),
                     d->s.str() + " 2 threads");
    expect_same_bits(serial,
                     run_fast<BasedHybrid>(d->based(), based_opts(40), d->out_shape(), three),
                     d->s.str() + " 3 threads");
  }
}

TEST(BasedHybrid, DecoderReproducesPrefillRows) {
  HybridShape s;
  s.T = 150;
  HybridData data(s, 77);
  ThreadPool two(2);
  for (index_t w : {1, 7, 200})
    for (index_t P : {0, 1, 64, 100}) {
      const std::string what = "window " + std::to_string(w) + " prefill " + std::to_string(P);
      hybrid::DecoderShape ds{s.B, s.H, s.D, s.V, s.K, 16};
      hybrid::BasedHybridDecoder dec(ds, based_opts(w));
      const auto got = decode_all<BasedHybrid>(dec, data.based(), data.out_shape(), P);
      EXPECT_EQ(dec.position(), s.T) << what;
      const auto want = run_ref<BasedHybrid>(data.based(), based_opts(w), data.out_shape());
      EXPECT_LT(rel_rmse(got, want), kRelRmseBound) << what;
      const auto fast = run_fast<BasedHybrid>(data.based(), based_opts(w), data.out_shape());
      EXPECT_LT(rel_rmse(got, fast), kRelRmseBound) << what;
      // Pages behind the window were recycled: at most keep + 2 pages in use per sequence, plus
      // the free list of one page-sized prefill piece.
      if (w < s.T) {
        const index_t per_seq = (w + 15) / 16 + 3;
        EXPECT_LE(dec.cache().pages_allocated(), s.B * per_seq) << what;
      }
      // The same decode on two threads: identical bits.
      hybrid::BasedHybridDecoder dec2(ds, based_opts(w));
      expect_same_bits(got, decode_all<BasedHybrid>(dec2, data.based(), data.out_shape(), P, two),
                       what + " 2 threads");
    }
}

TEST(BasedHybrid, DecoderResetStartsOver) {
  HybridShape s;
  s.T = 20;
  HybridData data(s, 3);
  hybrid::BasedHybridDecoder dec({s.B, s.H, s.D, s.V, s.K, 8}, based_opts(5));
  const auto first = decode_all<BasedHybrid>(dec, data.based(), data.out_shape(), 6);
  dec.reset();
  EXPECT_EQ(dec.position(), 0);
  expect_same_bits(first, decode_all<BasedHybrid>(dec, data.based(), data.out_shape(), 6),
                   "after reset");
}

TEST(BasedHybrid, DecoderTakesSequencesOfDifferentLengths) {
  for (index_t w : {1, 6, 40}) {
    const auto make = [w](index_t B) {
      return hybrid::BasedHybridDecoder({B, 2, 16, 12, 8, 8}, based_opts(w));
    };
    expect_varlen_decoder_matches_separate<BasedHybrid>(
        make, [](const HybridData& d) { return d.based(); }, {9, 0, 23, 1}, 4,
        "window " + std::to_string(w));
  }
}

}  // namespace
