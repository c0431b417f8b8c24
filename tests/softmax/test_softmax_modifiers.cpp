// tests/softmax/test_softmax_modifiers.cpp — flash_attention's score modifiers (softcap, ALiBi,
// forgetting gate incl. extreme gates, per-head sink logit, all together) against the double
// reference, crossed with the masks and with MHA / GQA / MQA.
#include <gtest/gtest.h>

#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_matches_reference;
using polyattn::test::SoftmaxCase;
using polyattn::test::SoftmaxData;
using polyattn::test::SoftmaxShape;

SoftmaxCase with_mask(SoftmaxCase mods, const SoftmaxCase& mask) {
  mods.causal = mask.causal;
  mods.window = mask.window;
  mods.sink_tokens = mask.sink_tokens;
  mods.block_q = mask.block_q;
  mods.block_k = mask.block_k;
  mods.block_density = mask.block_density;
  return mods;
}

const SoftmaxCase kMods[] = {
    {.softcap = 0.5},
    {.alibi = true},
    {.gate = true},
    {.sink = true},
    {.softcap = 2.0, .alibi = true, .gate = true, .sink = true},
};

const SoftmaxCase kMasks[] = {
    {},
    {.causal = true},
    {.causal = true, .window = 16, .sink_tokens = 3},
    {.window = 9, .sink_tokens = 2},
    {.causal = true, .block_q = 16, .block_k = 16},
    {.sink_tokens = 5, .block_q = 16, .block_k = 64},
};

struct Lengths {
  index_t T, S;
};

// Every modifier × mask × head layout; lengths and dims cycle (q, k in [-2, 2) so the softcap
// bends a fair share of the scores).
TEST(SoftmaxModifiers, EveryModifierMaskAndHeadLayout) {
  const Lengths lengths[] = {{1, 70}, {63, 63}, {65, 150}, {100, 37}, {64, 64}};
  std::uint64_t seed = 100;
  std::size_t i = 0;
  for (const SoftmaxCase& mods : kMods)
    for (const SoftmaxCase& mask : kMasks)
      for (const auto heads : test::kHeads) {
        const Lengths len = lengths[i % std::size(lengths)];
        const auto dims = test::kDims[(i / 2) % std::size(test::kDims)];
        ++i;
        const SoftmaxShape s{.B = 1,
                             .T = len.T,
                             .S = len.S,
                             .HQ = heads.HQ,
                             .HKV = heads.HKV,
                             .D = dims.D,
                             .Dv = dims.Dv};
        SoftmaxData data(s, with_mask(mods, mask), seed++, 2.f);
        expect_matches_reference(data);
      }
}

// A softcap that saturates most scores (|scale·q·k| ≫ cap) and one that barely bends them.
TEST(SoftmaxModifiers, SoftcapSaturatedAndMild) {
  for (const double cap : {0.25, 1.0, 50.0})
    for (const bool causal : {false, true}) {
      SoftmaxData data({.B = 2, .T = 65, .S = 129, .HQ = 4, .HKV = 2, .D = 64, .Dv = 32},
                       {.causal = causal, .softcap = cap}, 200, 4.f);
      expect_matches_reference(data);
    }
}

// Log-gates divided by 0.01 … 10 (per-token decay from e^-20 to ~1) under the masks used with
// forgetting attention, with the other modifiers on and off.
TEST(SoftmaxModifiers, ExtremeGates) {
  const SoftmaxCase masks[] = {
      {.causal = true},
      {.causal = true, .window = 20, .sink_tokens = 2},
      {.causal = true, .block_q = 16, .block_k = 64},
  };
  const Lengths lengths[] = {{65, 65}, {63, 130}, {1, 100}, {100, 40}};
  std::uint64_t seed = 300;
  std::size_t i = 0;
  for (const double div : {0.01, 0.1, 1.0, 10.0})
    for (const SoftmaxCase& mask : masks)
      for (const Lengths len : lengths) {
        const auto heads = test::kHeads[i % std::size(test::kHeads)];
        const auto dims = test::kDims[i % std::size(test::kDims)];
        ++i;
        SoftmaxCase c = mask;
        c.gate = true;
        c.gate_div = div;
        c.alibi = i % 2 == 0;
        c.sink = i % 3 == 0;
        const SoftmaxShape s{.B = 1 + static_cast<index_t>(i % 2),
                             .T = len.T,
                             .S = len.S,
                             .HQ = heads.HQ,
                             .HKV = heads.HKV,
                             .D = dims.D,
                             .Dv = dims.Dv};
        SoftmaxData data(s, c, seed++);
        expect_matches_reference(data);
      }
}

// Non-causal forgetting attention: future keys get a positive bias G_p − G_j. Moderate gates
// only (with ÷0.01 gates the bias of the dominant keys is ~10^3 and fp32 scores cannot hold
// it to 1e-5; see the suite's notes).
TEST(SoftmaxModifiers, GateWithoutCausalMask) {
  for (const double div : {1.0, 10.0}) {
    SoftmaxData data({.B = 1, .T = 65, .S = 150, .HQ = 4, .HKV = 1, .D = 32, .Dv = 48},
                     {.gate = true, .gate_div = div}, 350);
    expect_matches_reference(data);
    SoftmaxData windowed({.B = 1, .T = 100, .S = 40, .HQ = 2, .HKV = 2, .D = 72, .Dv = 16},
                         {.window = 9, .sink_tokens = 2, .gate = true, .gate_div = div}, 351);
    expect_matches_reference(windowed);
  }
}

TEST(SoftmaxModifiers, ExtremeGates1000) {
  for (const double div : {0.01, 10.0}) {
    SoftmaxData data({.T = 1000, .S = 1000, .HQ = 1, .HKV = 1, .D = 32, .Dv = 48},
                     {.causal = true, .gate = true, .gate_div = div}, 400);
    expect_matches_reference(data);
  }
}

TEST(SoftmaxModifiers, Alibi1000) {
  SoftmaxData data({.T = 1000, .S = 1000, .HQ = 2, .HKV = 1, .D = 32, .Dv = 16},
                   {.causal = true, .alibi = true}, 401);
  expect_matches_reference(data);
}

TEST(SoftmaxModifiers, AllModifiers1000) {
  SoftmaxData data({.T = 1000, .S = 1100, .HQ = 1, .HKV = 1, .D = 128, .Dv = 40},
                   {.causal = true,
                    .window = 300,
                    .sink_tokens = 4,
                    .softcap = 3.0,
                    .alibi = true,
                    .gate = true,
                    .gate_div = 0.1,
                    .sink = true},
                   402, 2.f);
  expect_matches_reference(data);
}

// A sink logit well above every score takes most of the mass; one well below takes none.
TEST(SoftmaxModifiers, DominantAndNegligibleSinkLogits) {
  SoftmaxData data({.B = 1, .T = 64, .S = 64, .HQ = 3, .HKV = 1, .D = 16, .Dv = 16},
                   {.causal = true, .sink = true}, 403);
  data.sink = {12.f, -40.f, 0.f};
  expect_matches_reference(data);
}

}  // namespace
