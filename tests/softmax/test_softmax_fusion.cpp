// tests/softmax/test_softmax_fusion.cpp — user fusion policies (fusion.hpp) composed with the
// options' masks and modifiers in flash_attention: a dense per-(batch, head) mask bound through
// HeadContext (packed varlen offsets included) and a per-head relative-position bias, against a
// naive double computation with the composed rule (visible = options ∧ user; scores modified by
// the options' modifiers, then the user's), with lse and row_max; an empty fusion or an always-
// visible mask gives the default kernel's bits; a user Causal mask gives opt.causal's bits; a
// policy's own check() runs before anything is written; wrong policies fail the concepts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "softmax/fusion_policies.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::AllVisible;
using polyattn::test::DenseMask;
using polyattn::test::expect_same_bits;
using polyattn::test::kRelRmseBound;
using polyattn::test::PositionBias;
using polyattn::test::rel_rmse;
using polyattn::test::SoftmaxCase;
using polyattn::test::SoftmaxData;
using polyattn::test::SoftmaxShape;
using softmax::HeadContext;
using softmax::KeyRange;
using softmax::RowRange;
using softmax::TileClass;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Patterns by head: 0 random bytes, 1 blocks of 16 × 16 on or off (Skip / Full tiles), 2 all.
std::vector<std::uint8_t> make_dense(index_t B, index_t HQ, index_t T, index_t S,
                                     std::uint64_t seed) {
  std::vector<std::uint8_t> m(static_cast<std::size_t>(B * HQ * T * S));
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution half(0.5), most(0.8);
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < HQ; ++h) {
      std::vector<std::uint8_t> blocks(static_cast<std::size_t>((T / 16 + 1) * (S / 16 + 1)));
      for (auto& x : blocks) x = most(rng) ? 1 : 0;
      for (index_t i = 0; i < T; ++i)
        for (index_t j = 0; j < S; ++j) {
          std::uint8_t v = 1;
          if (h % 3 == 0) v = half(rng) ? 1 : 0;
          if (h % 3 == 1) v = blocks[static_cast<std::size_t>((i / 16) * (S / 16 + 1) + j / 16)];
          m[static_cast<std::size_t>(((b * HQ + h) * T + i) * S + j)] = v;
        }
    }
  return m;
}

// ---- concepts reject wrong policies --------------------------------------------------------

struct NotAMask {
  bool visible(index_t, index_t, index_t) const { return true; }  // no classify
};
struct ModifierWithoutKeys {
  template <simd::SimdArch A>
  void apply(float*, const softmax::RowContext&) const {}
};
static_assert(!softmax::FusionMask<NotAMask>);
static_assert(!softmax::FusionModifier<ModifierWithoutKeys>);
static_assert(!softmax::SoftmaxFusion<DenseMask>);  // a mask is not a fusion: wrap it
static_assert(softmax::SoftmaxFusion<softmax::Fusion<DenseMask, PositionBias>>);
static_assert(
    softmax::SoftmaxFusion<softmax::Composed<softmax::OptionsFusion, softmax::Fusion<DenseMask>>>);

// ---- naive double: o, lse, row max under the composed rule -----------------------------------

struct Naive {
  std::vector<double> o, lse, row_max;
};
Naive naive(const SoftmaxData& data, const std::vector<std::uint8_t>* user_mask,
            const std::vector<float>* bias, index_t K) {
  const SoftmaxShape& s = data.s;
  const SoftmaxInputs in = data.inputs();
  const SoftmaxOptions opt = data.options();
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
  const index_t group = s.HQ / s.HKV;
  Naive r;
  r.o.assign(static_cast<std::size_t>(s.B * s.T * s.HQ * s.Dv), 0.0);
  r.lse.assign(static_cast<std::size_t>(s.B * s.T * s.HQ), kNegInf);
  r.row_max = r.lse;
  struct Seq {
    index_t b, q0, nq, k0, nk;
  };
  std::vector<Seq> seqs;
  if (!data.cu_seqlens.empty()) {
    for (std::size_t n = 0; n + 1 < data.cu_seqlens.size(); ++n) {
      const index_t beg = data.cu_seqlens[n], len = data.cu_seqlens[n + 1] - beg;
      seqs.push_back({0, beg, len, beg, len});
    }
  } else {
    for (index_t b = 0; b < s.B; ++b) seqs.push_back({b, 0, s.T, 0, s.S});
  }
  for (const Seq& sq : seqs)
    for (index_t h = 0; h < s.HQ; ++h) {
      std::vector<double> G(static_cast<std::size_t>(sq.nk));
      double run = 0.0;
      for (index_t j = 0; j < sq.nk; ++j) {
        if (!in.g.absent()) run += static_cast<double>(in.g(sq.b, sq.k0 + j, h));
        G[static_cast<std::size_t>(j)] = run;
      }
      for (index_t i = 0; i < sq.nq; ++i) {
        const index_t p = i + sq.nk - sq.nq;
        std::vector<double> sc;
        std::vector<index_t> keys;
        for (index_t j = 0; j < sq.nk; ++j) {
          const bool causal_ok = !opt.causal || j <= p;
          const bool window_ok = opt.window == 0 || (j <= p && j > p - opt.window);
          const bool block_ok =
              opt.block_mask == nullptr ||
              opt.block_mask->visible(sq.b, h, (sq.q0 + i) / opt.block_mask->block_q(),
                                      (sq.k0 + j) / opt.block_mask->block_k());
          bool vis = causal_ok && (j < opt.sink_tokens || (window_ok && block_ok));
          if (user_mask)
            vis = vis && (*user_mask)[static_cast<std::size_t>(
                             ((sq.b * s.HQ + h) * s.T + sq.q0 + i) * s.S + sq.k0 + j)] != 0;
          if (!vis) continue;
          double dot = 0.0;
          for (index_t c = 0; c < s.D; ++c)
            dot += static_cast<double>(in.q(sq.b, sq.q0 + i, h, c)) *
                   in.k(sq.b, sq.k0 + j, h / group, c);
          double x = scale * dot;
          if (opt.softcap > 0) x = opt.softcap * std::tanh(x / opt.softcap);
          if (!in.alibi_slopes.absent())
            x -= static_cast<double>(in.alibi_slopes(h)) * static_cast<double>(std::abs(p - j));
          if (!in.g.absent())
            x += (p >= 0 ? G[static_cast<std::size_t>(p)] : 0.0) - G[static_cast<std::size_t>(j)];
          if (bias)
            x += (*bias)[static_cast<std::size_t>(h * K + std::min(std::abs(p - j), K - 1))];
          sc.push_back(x);
          keys.push_back(j);
        }
        const std::size_t row = static_cast<std::size_t>((sq.b * s.T + sq.q0 + i) * s.HQ + h);
        if (sc.empty()) continue;
        double m = kNegInf;
        for (double x : sc) m = std::max(m, x);
        r.row_max[row] = m;
        const double M = in.sink.absent() ? m : std::max(m, static_cast<double>(in.sink(h)));
        double den = in.sink.absent() ? 0.0 : std::exp(static_cast<double>(in.sink(h)) - M);
        for (std::size_t u = 0; u < sc.size(); ++u) {
          const double e = std::exp(sc[u] - M);
          den += e;
          for (index_t c = 0; c < s.Dv; ++c)
            r.o[row * static_cast<std::size_t>(s.Dv) + static_cast<std::size_t>(c)] +=
                e * in.v(sq.b, sq.k0 + keys[u], h / group, c);
        }
        for (index_t c = 0; c < s.Dv; ++c)
          r.o[row * static_cast<std::size_t>(s.Dv) + static_cast<std::size_t>(c)] /= den;
        r.lse[row] = M + std::log(den);
      }
    }
  return r;
}

struct Outs {
  std::vector<float> o, lse, row_max;
  softmax::FlashOutputs views(const SoftmaxShape& s) {
    o.assign(static_cast<std::size_t>(s.B * s.T * s.HQ * s.Dv), test::kSentinel);
    lse.assign(static_cast<std::size_t>(s.B * s.T * s.HQ), test::kSentinel);
    row_max = lse;
    return {bthd(o.data(), s.B, s.T, s.HQ, s.Dv), bth(lse.data(), s.B, s.T, s.HQ),
            bth(row_max.data(), s.B, s.T, s.HQ)};
  }
};

void expect_log_close(const std::vector<float>& got, const std::vector<double>& want,
                      const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (want[i] == kNegInf)
      ASSERT_EQ(got[i], -std::numeric_limits<float>::infinity()) << what << " at " << i;
    else
      ASSERT_NEAR(got[i], want[i], 1e-5 * std::max(1.0, std::abs(want[i]))) << what << " at " << i;
  }
}

const SoftmaxCase kCases[] = {
    {},
    {.causal = true},
    {.causal = true, .window = 20, .sink_tokens = 3, .sink = true},
    {.window = 9, .sink_tokens = 2, .softcap = 1.0, .alibi = true},
    {.causal = true, .block_q = 16, .block_k = 32, .gate = true, .gate_div = 0.1},
    {.alibi = true, .gate = true, .sink = true},
};

TEST(SoftmaxFusion, UserMaskAndModifierMatchNaiveDouble) {
  struct L {
    index_t T, S;
  };
  std::uint64_t seed = 1;
  for (const SoftmaxCase& c : kCases)
    for (const L len : {L{70, 70}, L{37, 150}, L{130, 65}}) {
      const SoftmaxShape s{.B = 2, .T = len.T, .S = len.S, .HQ = 3, .HKV = 1, .D = 40, .Dv = 24};
      SoftmaxData data(s, c, seed, 1.5f);
      const auto bits = make_dense(s.B, s.HQ, s.T, s.S, seed + 100);
      const index_t K = 40;
      const auto table =
          test::random_vector(static_cast<std::size_t>(s.HQ * K), seed + 200, -2.f, 2.f);
      ++seed;
      const DenseMask mask{&bits, s.HQ, s.T, s.S};
      const PositionBias bias{&table, K};
      const std::string what = data.str() + " T" + std::to_string(s.T) + " S" + std::to_string(s.S);

      // mask + modifier
      Outs got;
      softmax::flash_attention(data.inputs(), data.options(), softmax::fuse(mask, bias),
                               got.views(s));
      Naive want = naive(data, &bits, &table, K);
      test::expect_close(got.o, want.o, s.Dv, what + " mask+bias");
      expect_log_close(got.lse, want.lse, what + " mask+bias lse");
      expect_log_close(got.row_max, want.row_max, what + " mask+bias row_max");

      // mask alone, modifier alone
      Outs m_only, b_only;
      softmax::flash_attention(data.inputs(), data.options(), softmax::with_mask(mask),
                               m_only.views(s));
      want = naive(data, &bits, nullptr, K);
      test::expect_close(m_only.o, want.o, s.Dv, what + " mask");
      expect_log_close(m_only.lse, want.lse, what + " mask lse");
      softmax::flash_attention(data.inputs(), data.options(), softmax::with_modifier(bias),
                               b_only.views(s));
      want = naive(data, nullptr, &table, K);
      test::expect_close(b_only.o, want.o, s.Dv, what + " bias");
      expect_log_close(b_only.row_max, want.row_max, what + " bias row_max");
    }
}

// The mask binds to packed varlen offsets (HeadContext::q_offset / k_offset).
TEST(SoftmaxFusion, VarlenMaskUsesPackedOffsets) {
  const std::vector<std::int64_t> cu{0, 1, 64, 64, 129, 200};
  const SoftmaxShape s{.B = 1, .T = 200, .S = 200, .HQ = 3, .HKV = 3, .D = 32, .Dv = 16};
  for (const SoftmaxCase& c :
       {SoftmaxCase{}, SoftmaxCase{.causal = true, .window = 30, .sink = true}}) {
    SoftmaxData data(s, c, 9);
    data.cu_seqlens = cu;
    const auto bits = make_dense(s.B, s.HQ, s.T, s.S, 77);
    Outs got;
    softmax::flash_attention(data.inputs(), data.options(),
                             softmax::with_mask(DenseMask{&bits, s.HQ, s.T, s.S}), got.views(s));
    const Naive want = naive(data, &bits, nullptr, 1);
    test::expect_close(got.o, want.o, s.Dv, data.str() + " varlen");
    expect_log_close(got.lse, want.lse, data.str() + " varlen lse");
  }
}

TEST(SoftmaxFusion, NeutralFusionsGiveTheDefaultBits) {
  std::uint64_t seed = 40;
  for (const SoftmaxCase& c : kCases) {
    SoftmaxData data({.B = 2, .T = 150, .S = 150, .HQ = 4, .HKV = 2, .D = 40, .Dv = 24}, c, seed++);
    const auto base = test::run_flash(data.inputs(), data.options());
    std::vector<float> o(base.size());
    const auto view = bthd(o.data(), 2, 150, 4, 24);
    softmax::flash_attention(data.inputs(), data.options(), softmax::Fusion<>{}, view);
    expect_same_bits(base, o, data.str() + " Fusion<>");
    softmax::flash_attention(data.inputs(), data.options(), softmax::with_mask(AllVisible{}), view);
    expect_same_bits(base, o, data.str() + " AllVisible");
  }
}

// A user Causal mask (which classifies diagonal tiles CausalPartial, the fast path) composed
// with options that have no causal flag equals opt.causal.
TEST(SoftmaxFusion, UserCausalMaskEqualsCausalOption) {
  struct L {
    index_t T, S;
  };
  std::uint64_t seed = 60;
  for (const L len : {L{150, 150}, L{37, 150}, L{130, 65}})
    for (const SoftmaxCase& c :
         {SoftmaxCase{}, SoftmaxCase{.softcap = 2.0, .alibi = true, .sink = true},
          SoftmaxCase{.block_q = 16, .block_k = 64}}) {
      const SoftmaxShape s{.B = 1, .T = len.T, .S = len.S, .HQ = 2, .HKV = 1, .D = 32, .Dv = 16};
      SoftmaxData data(s, c, seed++);
      SoftmaxOptions causal = data.options();
      causal.causal = true;
      const auto want = test::run_flash(data.inputs(), causal);
      std::vector<float> o(want.size());
      softmax::flash_attention(data.inputs(), data.options(), softmax::with_mask(softmax::Causal{}),
                               bthd(o.data(), s.B, s.T, s.HQ, s.Dv));
      expect_same_bits(want, o, data.str() + " user causal");
    }
}

TEST(SoftmaxFusion, RowMaxWithoutFusionMatchesNaive) {
  std::uint64_t seed = 80;
  for (const SoftmaxCase& c : kCases) {
    const SoftmaxShape s{.B = 2, .T = 65, .S = 100, .HQ = 2, .HKV = 2, .D = 24, .Dv = 8};
    SoftmaxData data(s, c, seed++, 2.f);
    Outs got;
    softmax::flash_attention(data.inputs(), data.options(), got.views(s));
    const Naive want = naive(data, nullptr, nullptr, 1);
    expect_log_close(got.row_max, want.row_max, data.str() + " row_max");
    expect_same_bits(got.o, test::run_flash(data.inputs(), data.options()), data.str() + " o");
  }
}

// The fusion's own check() and bad row_max views throw before anything is written.
TEST(SoftmaxFusion, ErrorsLeaveOutputsUntouched) {
  const SoftmaxShape s{.B = 1, .T = 20, .S = 20, .HQ = 2, .HKV = 2, .D = 16, .Dv = 16};
  SoftmaxData data(s, {.causal = true}, 5);
  const auto bits = make_dense(1, 2, 19, 20, 1);
  Outs out;
  const softmax::FlashOutputs views = out.views(s);
  try {
    softmax::flash_attention(data.inputs(), data.options(),
                             softmax::with_mask(DenseMask{&bits, 2, 19, 20}), views);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fusion"), std::string::npos) << e.what();
  }
  softmax::FlashOutputs bad = views;
  bad.row_max = bth(out.row_max.data(), 1, 19, 2);
  try {
    softmax::flash_attention(data.inputs(), data.options(), bad);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row_max"), std::string::npos) << e.what();
  }
  for (float x : out.o) ASSERT_EQ(x, test::kSentinel);
  for (float x : out.lse) ASSERT_EQ(x, test::kSentinel);
  for (float x : out.row_max) ASSERT_EQ(x, test::kSentinel);
}

}  // namespace
