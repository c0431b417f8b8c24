// tests/hybrid/test_hybrid_lolcats.cpp — LoLCATs (window softmax + lagged linear attention, one
// shared denominator): prefill against the double reference over awkward lengths and windows
// (1, small, ≥ T), window factors, large scores (the window weights hinge on the row max),
// varlen, both tiling algorithms; identical bits for any thread count; decoder rows equal the
// reference with bounded cache memory, also with large scores.
#include <gtest/gtest.h>

#include <cmath>

#include "hybrid/hybrid_harness.hpp"

namespace {

using namespace polyattn;
using namespace polyattn::test;
using hybrid::Lolcats;

LolcatsOptions lolcats_opts(index_t window, double gamma = 1.0) {
  LolcatsOptions opt;
  opt.window = window;
  opt.window_factor = gamma;
  return opt;
}

TEST(Lolcats, MatchesReferenceOverLengthsAndWindows) {
  for (index_t T : {1, 63, 64, 65, 333}) {
    HybridShape s;
    s.T = T;
    HybridData data(s, 200 + static_cast<std::uint64_t>(T));
    for (index_t w : {index_t{1}, index_t{16}, index_t{64}, T + 3})
      for (double gamma : {1.0, 0.3}) {
        const std::string what =
            s.str() + " window " + std::to_string(w) + " gamma " + std::to_string(gamma);
        expect_matches_reference<Lolcats>(data.lolcats(), lolcats_opts(w, gamma), data.out_shape(),
                                          what);
      }
  }
}

TEST(Lolcats, RecurrentAndChunk16) {
  HybridShape s;
  s.T = 140;
  s.K = 20;
  HybridData data(s, 5);
  LolcatsOptions opt = lolcats_opts(30, 2.0);
  opt.scale = 0.4;
  expect_matches_reference<Lolcats, Recurrent>(data.lolcats(), opt, data.out_shape(), "recurrent");
  expect_matches_reference<Lolcats, Chunked<16>>(data.lolcats(), opt, data.out_shape(), "chunk 16");
}

// Scores of several tens: the window's weights γ e^{lse − m} still come out right (the
// un-shifted e^{−lse} form would not carry the max and overflows for very negative scores).
TEST(Lolcats, LargeScores) {
  HybridShape s;
  s.T = 97;
  for (float qk : {4.f, 7.f}) {
    HybridData data(s, 17, qk);  // |s| up to qk²·D·D^-½ = qk²·4
    for (index_t w : {1, 8, 100})
      expect_matches_reference<Lolcats>(
          data.lolcats(), lolcats_opts(w, 0.5), data.out_shape(),
          "qk " + std::to_string(qk) + " window " + std::to_string(w));
  }
}

// With window ≥ T the linear part is empty and the result is causal softmax attention.
TEST(Lolcats, WindowCoveringEverythingIsSoftmax) {
  HybridShape s;
  s.T = 65;
  HybridData data(s, 8);
  const auto got = run_fast<Lolcats>(data.lolcats(), lolcats_opts(65, 3.0), data.out_shape());
  SoftmaxInputs in{data.q.cview(), data.k.cview(), data.v.cview(), {}, {}, {}, {}};
  SoftmaxOptions opt;
  opt.causal = true;
  Tensor<float, 4> sm(data.out_shape());
  softmax::flash_attention(in, opt, sm.view());
  EXPECT_LT(rel_rmse(got, sm.data), 1e-6);
}

TEST(Lolcats, VarlenMatchesReference) {
  for (const auto& lens :
       {std::vector<index_t>{1, 64, 65, 3}, std::vector<index_t>{0, 130, 0, 33}}) {
    const HybridShape s = HybridShape::varlen(lens);
    HybridData data(s, 41);
    for (index_t w : {1, 20, 200})
      expect_matches_reference<Lolcats>(data.lolcats(), lolcats_opts(w), data.out_shape(),
                                        s.str() + " window " + std::to_string(w));
  }
}

TEST(Lolcats, NonFiniteInputPropagates) {
  HybridShape s;
  s.B = 1;
  s.H = 1;
  s.T = 40;
  HybridData data(s, 4);
  data.v.data[static_cast<std::size_t>(10 * s.V)] = NAN;  // token 10, channel 0
  const auto o = run_fast<Lolcats>(data.lolcats(), lolcats_opts(8), data.out_shape());
  for (index_t t = 0; t < s.T; ++t) {
    const float x = o[static_cast<std::size_t>(t * s.V)];
    if (t < 10)
      EXPECT_TRUE(std::isfinite(x)) << t;
    else
      EXPECT_TRUE(std::isnan(x)) << t;  // in the window, then in the linear part
  }
}

TEST(Lolcats, ThreadCountsGiveIdenticalBits) {
  HybridData data(HybridShape{2, 333, 3, 16, 12, 8, {}}, 19);
  HybridData packed(HybridShape::varlen({100, 1, 64, 168}), 20);
  ThreadPool two(2), three(3);
  for (const HybridData* d : {&data, &packed})
    for (index_t w : {1, 40, 400}) {
      const auto serial = run_fast<Lolcats>(d->lolcats(), lolcats_opts(w), d->out_shape());
      const std::string what = d->s.str() + " window " + std::to_string(w);
      expect_same_bits(serial,
                       run_fast<Lolcats>(d->lolcats(), lolcats_opts(w), d->out_shape(), two),
                       what + " 2 threads");
      expect_same_bits(serial,
                       run_fast<Lolcats>(d->lolcats(), lolcats_opts(w), d->out_shape(), three),
                       what + " 3 threads");
    }
}

TEST(Lolcats, DecoderReproducesPrefillRows) {
  HybridShape s;
  s.T = 150;
  HybridData data(s, 78);
  ThreadPool two(2);
  for (index_t w : {1, 7, 200})
    for (index_t P : {0, 1, 64, 100}) {
      const std::string what = "window " + std::to_string(w) + " prefill " + std::to_string(P);
      hybrid::DecoderShape ds{s.B, s.H, s.D, s.V, s.K, 16};
      hybrid::LolcatsDecoder dec(ds, lolcats_opts(w, 0.7));
      const auto got = decode_all<Lolcats>(dec, data.lolcats(), data.out_shape(), P);
      EXPECT_EQ(dec.position(), s.T) << what;
      const auto want = run_ref<Lolcats>(data.lolcats(), lolcats_opts(w, 0.7), data.out_shape());
      EXPECT_LT(rel_rmse(got, want), kRelRmseBound) << what;
      const auto fast = run_fast<Lolcats>(data.lolcats(), lolcats_opts(w, 0.7), data.out_shape());
      EXPECT_LT(rel_rmse(got, fast), kRelRmseBound) << what;
      if (w < s.T) {
        const index_t per_seq = (w + 1 + 15) / 16 + 3;
        EXPECT_LE(dec.cache().pages_allocated(), s.B * per_seq) << what;
      }
      hybrid::LolcatsDecoder dec2(ds, lolcats_opts(w, 0.7));
      expect_same_bits(got, decode_all<Lolcats>(dec2, data.lolcats(), data.out_shape(), P, two),
                       what + " 2 threads");
    }
}

// The decoder's window softmax is one online pass (the running max rescales the sums as it
// grows): scores of several tens, in any order, still give the reference's rows.
TEST(Lolcats, DecoderWithLargeScores) {
  HybridShape s;
  s.T = 90;
  for (float qk : {4.f, 7.f}) {
    HybridData data(s, 23, qk);
    for (index_t w : {1, 8, 100}) {
      const std::string what = "qk " + std::to_string(qk) + " window " + std::to_string(w);
      hybrid::LolcatsDecoder dec(hybrid::DecoderShape{s.B, s.H, s.D, s.V, s.K, 16},
                                 lolcats_opts(w, 0.5));
      const auto got = decode_all<Lolcats>(dec, data.lolcats(), data.out_shape(), 30);
      const auto want = run_ref<Lolcats>(data.lolcats(), lolcats_opts(w, 0.5), data.out_shape());
      EXPECT_LT(rel_rmse(got, want), kRelRmseBound) << what;
    }
  }
}

TEST(Lolcats, DecoderTakesSequencesOfDifferentLengths) {
  for (index_t w : {1, 4, 30}) {
    const auto make = [w](index_t B) {
      return hybrid::LolcatsDecoder({B, 2, 16, 12, 8, 8}, lolcats_opts(w));
    };
    expect_varlen_decoder_matches_separate<Lolcats>(
        make, [](const HybridData& d) { return d.lolcats(); }, {12, 2, 0, 7}, 5,
        "window " + std::to_string(w));
  }
}

}  // namespace
