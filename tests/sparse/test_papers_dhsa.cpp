// tests/sparse/test_papers_dhsa.cpp — DHSA (sparse/dhsa.hpp): dhsa_select against the naive
// token-by-token builder reference::dhsa_mask (every kept bit), dhsa_attention against
// reference::dhsa_attention (row_softmax_attention with the same kept keys), in double — GQA,
// batch, chunk bounds of every length, sinks and local windows, query blocks that straddle the
// kernel's tiles, decode rows (T < S), a budget that keeps everything (= causal attention), thread
// counts; bad arguments throw a named polyattn::Error with the output untouched.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "common/expect_error.hpp"
#include "common/test_util.hpp"
#include "polyattn/reference/dhsa.hpp"
#include "softmax/papers3_kernels.hpp"
#include "softmax/softmax_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_error;
using polyattn::test::kRelRmseBound;
using polyattn::test::kSentinel;
using polyattn::test::rel_rmse;
using polyattn::test::SoftmaxData;

// Random chunk bounds of lengths 1 … max_len per batch row.
std::vector<std::vector<index_t>> random_bounds(index_t B, index_t S, index_t max_len,
                                                std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<index_t>> out;
  for (index_t b = 0; b < B; ++b) {
    std::vector<index_t> c{0};
    while (c.back() < S)
      c.push_back(std::min(S, c.back() + std::uniform_int_distribution<index_t>(1, max_len)(rng)));
    out.push_back(c);
  }
  return out;
}

SoftmaxOptions causal() {
  SoftmaxOptions o;
  o.causal = true;
  return o;
}

TEST(Dhsa, SelectionAndAttentionMatchTheReference) {
  struct Config {
    index_t B, T, S, HQ, HKV, max_chunk;
    sparse::DhsaOptions o;
  };
  for (const Config& c :
       {Config{2, 300, 300, 4, 2, 40, {.block = 64, .budget = 100, .local = 16, .sinks = 4}},
        Config{1, 333, 333, 3, 1, 90, {.block = 48, .budget = 150, .local = 0, .sinks = 0}},
        Config{1, 37, 300, 4, 4, 25, {.block = 32, .budget = 64, .local = 8, .sinks = 8}},
        Config{2, 1, 257, 2, 1, 30, {.block = 64, .budget = 40, .local = 4, .sinks = 1}},
        Config{1, 200, 200, 2, 2, 7, {.block = 16, .budget = 20, .local = 30, .sinks = 0}}}) {
    const std::string name = "T " + std::to_string(c.T) + " S " + std::to_string(c.S) + " block " +
                             std::to_string(c.o.block) + " budget " + std::to_string(c.o.budget);
    SCOPED_TRACE(name);
    SoftmaxData x({.B = c.B, .T = c.T, .S = c.S, .HQ = c.HQ, .HKV = c.HKV, .D = 32, .Dv = 24}, {},
                  401);
    const auto bounds = random_bounds(c.B, c.S, c.max_chunk, 402);
    const sparse::DhsaSelection sel = sparse::dhsa_select(x.inputs(), c.o, bounds);
    const auto want_mask = reference::dhsa_mask(x.inputs(), c.o, bounds);
    ASSERT_EQ(static_cast<std::size_t>(sel.nqb), want_mask[0].size());
    index_t kept = 0, allowed = 0;
    for (index_t b = 0; b < c.B; ++b)
      for (index_t qb = 0; qb < sel.nqb; ++qb)
        for (index_t j = 0; j < c.S; ++j) {
          ASSERT_EQ(sel.kept(b, qb, j),
                    want_mask[static_cast<std::size_t>(b)][static_cast<std::size_t>(qb)]
                             [static_cast<std::size_t>(j)] != 0)
              << "b " << b << " qb " << qb << " j " << j;
          kept += sel.kept(b, qb, j);
          allowed += j <= std::min((qb + sel.first + 1) * c.o.block, c.S) - 1;
        }
    std::vector<float> got(x.out_size(), kSentinel);
    sparse::dhsa_attention(x.inputs(), causal(), sel, bthd(got.data(), c.B, c.T, c.HQ, 24));
    std::vector<double> want(x.out_size(), NAN);
    reference::dhsa_attention(x.inputs(), causal(), c.o, bounds,
                              bthd(want.data(), c.B, c.T, c.HQ, 24));
    const double err = rel_rmse(got, want);
    EXPECT_LT(err, kRelRmseBound);
    std::printf("[ dhsa %s ] kept %.3f of the allowed keys, rel RMSE vs reference %.3g\n",
                name.c_str(), static_cast<double>(kept) / static_cast<double>(allowed), err);
    std::vector<float> threaded(x.out_size(), kSentinel);
    sparse::dhsa_attention(x.inputs(), causal(),
                           sparse::dhsa_select(x.inputs(), c.o, bounds, ThreadPool(3)),
                           bthd(threaded.data(), c.B, c.T, c.HQ, 24), ThreadPool(3));
    EXPECT_EQ(threaded, got);
  }
}

TEST(Dhsa, FullBudgetIsCausalAttention) {
  SoftmaxData x({.B = 1, .T = 150, .S = 150, .HQ = 2, .HKV = 1, .D = 16, .Dv = 16}, {}, 403);
  const auto bounds = random_bounds(1, 150, 20, 404);
  const sparse::DhsaSelection sel =
      sparse::dhsa_select(x.inputs(), {.block = 64, .budget = 150}, bounds);
  std::vector<float> got(x.out_size(), kSentinel);
  sparse::dhsa_attention(x.inputs(), causal(), sel, bthd(got.data(), 1, 150, 2, 16));
  EXPECT_LT(rel_rmse(got, test::run_reference(x.inputs(), causal())), kRelRmseBound);
}

TEST(Dhsa, BadArgumentsThrowNamedErrorOutputUntouched) {
  SoftmaxData x({.B = 1, .T = 128, .S = 128, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 405);
  SoftmaxData y({.B = 1, .T = 64, .S = 128, .HQ = 2, .HKV = 1, .D = 8, .Dv = 8}, {}, 405);
  const std::vector<std::vector<index_t>> bounds{{0, 50, 128}};
  expect_error("block", [&] { sparse::dhsa_select(x.inputs(), {.block = 0}, bounds); });
  expect_error("budget", [&] { sparse::dhsa_select(x.inputs(), {.budget = 0}, bounds); });
  expect_error("local", [&] { sparse::dhsa_select(x.inputs(), {.local = -1}, bounds); });
  expect_error("sinks", [&] { sparse::dhsa_select(x.inputs(), {.sinks = -2}, bounds); });
  expect_error("boundaries", [&] { sparse::dhsa_select(x.inputs(), {}, {{0, 50, 127}}); });
  expect_error("boundaries", [&] { sparse::dhsa_select(x.inputs(), {}, {{0, 50, 50, 128}}); });
  expect_error("boundaries", [&] { sparse::dhsa_select(x.inputs(), {}, {{0, 128}, {0, 128}}); });
  const sparse::DhsaSelection sel = sparse::dhsa_select(x.inputs(), {.budget = 40}, bounds);
  std::vector<float> o(y.out_size(), kSentinel), o2(x.out_size(), kSentinel);
  expect_error("selection", [&] {
    sparse::dhsa_attention(y.inputs(), causal(), sel, bthd(o.data(), 1, 64, 2, 8));
  });
  expect_error("opt",
               [&] { sparse::dhsa_attention(x.inputs(), {}, sel, bthd(o2.data(), 1, 128, 2, 8)); });
  for (const float v : o) ASSERT_EQ(v, kSentinel);
  for (const float v : o2) ASSERT_EQ(v, kSentinel);
}

}  // namespace
