// tests/hybrid/test_hybrid_liger.cpp — Liger (α·GLA + β·sliding-window softmax): prefill against
// the double reference with scalar and vector gates (also extreme ones), awkward lengths and
// windows, explicit weights and scales, varlen; identical bits for any thread count; decoder
// rows equal the reference with bounded cache memory.
#include <gtest/gtest.h>

#include "hybrid/hybrid_harness.hpp"

namespace {

using namespace polyattn;
using namespace polyattn::test;
using hybrid::Liger;

LigerOptions liger_opts(index_t window, double alpha = 0.5, double beta = 0.5) {
  LigerOptions opt;
  opt.window = window;
  opt.alpha = alpha;
  opt.beta = beta;
  return opt;
}

TEST(Liger, MatchesReferenceOverLengthsWindowsAndGates) {
  for (index_t T : {1, 63, 64, 65, 333}) {
    HybridShape s;
    s.T = T;
    HybridData data(s, 300 + static_cast<std::uint64_t>(T));
    for (bool vec : {false, true})
      for (index_t w : {index_t{1}, index_t{16}, T + 3}) {
        const std::string what = s.str() + (vec ? " gk" : " g") + " window " + std::to_string(w);
        expect_matches_reference<Liger>(data.liger(vec), liger_opts(w), data.out_shape(), what);
      }
  }
}

TEST(Liger, ExtremeGatesWeightsAndScales) {
  HybridShape s;
  s.T = 130;
  s.D = s.K = 8;  // so that gk also fits lin = q/k
  for (double div : {0.01, 10.0}) {
    HybridData data(s, 11, 1.f, div);
    for (bool vec : {false, true}) {
      LigerOptions opt = liger_opts(12, 0.8, -0.3);
      opt.gla_scale = 0.25;
      opt.softmax_scale = 0.5;
      const std::string what = std::string(vec ? "gk" : "g") + " /" + std::to_string(div);
      expect_matches_reference<Liger>(data.liger(vec), opt, data.out_shape(), what);
      expect_matches_reference<Liger, Recurrent>(data.liger(vec, false), opt, data.out_shape(),
                                                 what + " recurrent, lin = q/k");
    }
  }
}

TEST(Liger, VarlenMatchesReference) {
  for (const auto& lens :
       {std::vector<index_t>{1, 64, 65, 3}, std::vector<index_t>{0, 130, 0, 33}}) {
    const HybridShape s = HybridShape::varlen(lens);
    HybridData data(s, 51);
    for (bool vec : {false, true})
      for (index_t w : {1, 20, 200})
        expect_matches_reference<Liger>(data.liger(vec), liger_opts(w), data.out_shape(),
                                        s.str() + " window " + std::to_string(w));
  }
}

TEST(Liger, ThreadCountsGiveIdenticalBits) {
  HybridData data(HybridShape{2, 333, 3, 16, 12, 8, {}}, 29);
  HybridData one_head(HybridShape{1, 333, 1, 16, 12, 8, {}}, 30);  // chunk-parallel GLA path
  HybridData packed(HybridShape::varlen({100, 1, 64, 168}), 31);
  ThreadPool two(2), three(3);
  for (const HybridData* d : {&data, &one_head, &packed})
    for (bool vec : {false, true}) {
      const std::string what = d->s.str() + (vec ? " gk" : " g");
      const auto serial = run_fast<Liger>(d->liger(vec), liger_opts(40), d->out_shape());
      expect_same_bits(serial, run_fast<Liger>(d->liger(vec), liger_opts(40), d->out_shape(), two),
                       what + " 2 threads");
      expect_same_bits(serial,
                       run_fast<Liger>(d->liger(vec), liger_opts(40), d->out_shape(), three),
                       what + " 3 threads");
    }
}

TEST(Liger, DecoderReproducesPrefillRows) {
  HybridShape s;
  s.T = 150;
  HybridData data(s, 79);
  ThreadPool two(2);
  for (bool vec : {false, true})
    for (index_t w : {1, 7, 200})
      for (index_t P : {0, 1, 64, 100}) {
        const std::string what = std::string(vec ? "gk" : "g") + " window " + std::to_string(w) +
                                 " prefill " + std::to_string(P);
        hybrid::DecoderShape ds{s.B, s.H, s.D, s.V, s.K, 16};
        hybrid::LigerDecoder dec(ds, liger_opts(w, 0.6, 0.4));
        const auto got = decode_all<Liger>(dec, data.liger(vec), data.out_shape(), P);
        EXPECT_EQ(dec.position(), s.T) << what;
        const auto want =
            run_ref<Liger>(data.liger(vec), liger_opts(w, 0.6, 0.4), data.out_shape());
        EXPECT_LT(rel_rmse(got, want), kRelRmseBound) << what;
        const auto fast =
            run_fast<Liger>(data.liger(vec), liger_opts(w, 0.6, 0.4), data.out_shape());
        EXPECT_LT(rel_rmse(got, fast), kRelRmseBound) << what;
        if (w < s.T) {
          const index_t per_seq = (w + 15) / 16 + 3;
          EXPECT_LE(dec.cache().pages_allocated(), s.B * per_seq) << what;
        }
        hybrid::LigerDecoder dec2(ds, liger_opts(w, 0.6, 0.4));
        expect_same_bits(got, decode_all<Liger>(dec2, data.liger(vec), data.out_shape(), P, two),
                         what + " 2 threads");
      }
}

TEST(Liger, DecoderTakesSequencesOfDifferentLengths) {
  for (bool vec : {false, true}) {
    const auto make = [](index_t B) {
      return hybrid::LigerDecoder({B, 2, 16, 12, 8, 8}, liger_opts(5));
    };
    expect_varlen_decoder_matches_separate<Liger>(
        make, [vec](const HybridData& d) { return d.liger(vec); }, {17, 3, 0}, 3,
        vec ? "vector gate" : "scalar gate");
  }
}

}  // namespace
