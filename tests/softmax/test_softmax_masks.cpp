// tests/softmax/test_softmax_masks.cpp — flash_attention under every mask (none, causal, sliding
// window, window + sink tokens, block-sparse with block sizes that do and do not divide T and S)
// against the double reference, for MHA / GQA / MQA, at the awkward lengths of docs/conventions.md
// §9 (T ∈ {1, 63, 64, 65, 1000}, S > T and S < T) and head dims D ∈ {32, 72, 80, 128, 256}, Dv ≠ D.
#include <gtest/gtest.h>

#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_close;
using polyattn::test::expect_matches_reference;
using polyattn::test::SoftmaxCase;
using polyattn::test::SoftmaxData;
using polyattn::test::SoftmaxShape;

const SoftmaxCase kMasks[] = {
    {},
    {.causal = true},
    {.window = 7},
    {.causal = true, .window = 20},
    {.causal = true, .window = 16, .sink_tokens = 3},
    {.window = 5, .sink_tokens = 2},
    {.block_q = 16, .block_k = 16},
    {.causal = true, .block_q = 64, .block_k = 64, .block_density = 0.6},
    {.sink_tokens = 4, .block_q = 16, .block_k = 64},
    {.causal = true, .window = 40, .block_q = 64, .block_k = 16},
};

struct Lengths {
  index_t T, S;
};
// Tile edges (63/64/65), single queries, S > T, and S < T (rows before the first key).
const Lengths kLengths[] = {{1, 1},    {1, 77},   {63, 63},  {64, 64}, {65, 65},
                            {65, 150}, {40, 130}, {100, 37}, {64, 200}};

// Every mask × head layout at small sizes, three lengths per pair, rotated so that every mask
// meets all nine lengths across the head layouts; D/Dv and B cycle through their lists.
TEST(SoftmaxMasks, EveryMaskHeadLayoutAndLength) {
  std::uint64_t seed = 1;
  std::size_t i = 0, m = 0;
  for (const SoftmaxCase& mask : kMasks) {
    for (std::size_t hi = 0; hi < std::size(test::kHeads); ++hi)
      for (const std::size_t li : {hi, hi + 3, hi + 6}) {
        const auto heads = test::kHeads[hi];
        const Lengths len = kLengths[(li + m) % std::size(kLengths)];
        const auto dims = test::kDims[i % std::size(test::kDims)];
        const index_t B = heads.HQ >= 8 ? 1 : 1 + static_cast<index_t>(i % 2);
        const SoftmaxShape s{.B = B,
                             .T = len.T,
                             .S = len.S,
                             .HQ = heads.HQ,
                             .HKV = heads.HKV,
                             .D = dims.D,
                             .Dv = dims.Dv};
        ++i;
        SoftmaxData data(s, mask, seed++);
        expect_matches_reference(data);
      }
    ++m;
  }
}

// Windows and sink-token counts on and around the 64-key tile edges, where the kernel decides
// whether a tile is skipped, fully visible or needs the per-element mask: a window of 127 makes
// key tile [64, 128) just fully visible to query tile [128, 192), 126 not. Causal and not, S = T
// and S > T (shifted query positions), with and without a block mask.
TEST(SoftmaxMasks, WindowAndSinkTokensAtTileEdges) {
  std::uint64_t seed = 500;
  std::size_t i = 0;
  for (const index_t window : {0, 1, 2, 63, 64, 65, 126, 127, 128, 129, 191})
    for (const index_t sinks : {0, 1, 63, 64, 65})
      for (const bool causal : {false, true}) {
        // S and the block mask alternate so that each (window, sinks, causal) meets one of the
        // four combinations and each combination meets every window and sink count.
        const index_t S = i % 2 == 0 ? 200 : 263;
        const bool block = (i / 2 + window) % 2 == 1;
        ++i;
        SoftmaxCase c{.causal = causal, .window = window, .sink_tokens = sinks};
        if (block) {
          c.block_q = 64;
          c.block_k = 64;
          c.block_density = 0.7;
        }
        SoftmaxData data({.T = 200, .S = S, .HQ = 1, .HKV = 1, .D = 16, .Dv = 8}, c, seed++);
        expect_matches_reference(data);
      }
}

// A long causal sequence: 16 query tiles, most key tiles fully visible or skipped.
TEST(SoftmaxMasks, Causal1000) {
  SoftmaxData data({.T = 1000, .S = 1000, .HQ = 2, .HKV = 1, .D = 32, .Dv = 48}, {.causal = true},
                   11);
  expect_matches_reference(data);
}

TEST(SoftmaxMasks, CausalWindowSinks1000) {
  SoftmaxData data({.T = 1000, .S = 1000, .HQ = 1, .HKV = 1, .D = 72, .Dv = 40},
                   {.causal = true, .window = 100, .sink_tokens = 4}, 12);
  expect_matches_reference(data);
}

TEST(SoftmaxMasks, Window1000NonCausalLongerKeys) {
  SoftmaxData data({.T = 1000, .S = 1300, .HQ = 2, .HKV = 2, .D = 80, .Dv = 16},
                   {.window = 129, .sink_tokens = 1}, 13);
  expect_matches_reference(data);
}

// Block sizes 64 and 16 do not divide T = 1000 or S = 1000: the last block rows/columns are
// partial.
TEST(SoftmaxMasks, BlockMask1000) {
  SoftmaxData a({.T = 1000, .S = 1000, .HQ = 2, .HKV = 1, .D = 32, .Dv = 16},
                {.causal = true, .block_q = 64, .block_k = 64, .block_density = 0.4}, 14);
  expect_matches_reference(a);
  SoftmaxData b({.T = 1000, .S = 1000, .HQ = 1, .HKV = 1, .D = 128, .Dv = 24},
                {.sink_tokens = 2, .block_q = 16, .block_k = 64, .block_density = 0.3}, 15);
  expect_matches_reference(b);
}

TEST(SoftmaxMasks, NoMask1000HeadDim256) {
  SoftmaxData data({.T = 1000, .S = 200, .HQ = 1, .HKV = 1, .D = 256, .Dv = 32}, {}, 16);
  expect_matches_reference(data);
}

// S < T under a causal mask: query row i sits at key position i + S − T, so the first T − S
// rows see no key; the reference gives them zeros and so must the kernel (not NaN).
TEST(SoftmaxMasks, CausalFewerKeysThanQueries) {
  for (const Lengths len : {Lengths{1000, 300}, Lengths{65, 1}, Lengths{130, 64}}) {
    const SoftmaxShape s{.B = 2, .T = len.T, .S = len.S, .HQ = 4, .HKV = 2, .D = 32, .Dv = 20};
    SoftmaxData data(s, {.causal = true}, 17);
    const SoftmaxInputs in = data.inputs();
    const SoftmaxOptions opt = data.options();
    const auto o = test::run_flash(in, opt);
    const index_t zero_rows = expect_close(o, test::run_reference(in, opt), s.Dv, data.str());
    EXPECT_EQ(zero_rows, s.B * s.HQ * (s.T - s.S)) << data.str();
  }
}

}  // namespace
