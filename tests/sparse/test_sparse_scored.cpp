// Score-based selectors (block top-k, cumulative mass γ, linear-attention estimate top-k) against
// naive builders that pool q and k in double straight from the tensors. Blocks whose naive score
// is within 1e-4 (relative) of the selection boundary may go either way (float vs double).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "polyattn/core/executor.hpp"
#include "polyattn/sparse/linear_estimate.hpp"
#include "polyattn/sparse/mass.hpp"
#include "polyattn/sparse/topk.hpp"
#include "sparse/sparse_test_util.hpp"

namespace polyattn::test::sparse_util {
namespace {

namespace ps = ::polyattn::sparse;

const ps::KeepOptions kKeeps[] = {
    {},  // diagonal only
    {.diagonal = false, .sink_blocks = 0, .local_blocks = 0},
    {.diagonal = true, .sink_blocks = 1, .local_blocks = 2},
};

TEST(SparseTopK, MatchesNaive) {
  for (const Case& c : cases()) {
    const Problem p = c.problem(21);
    for (const auto& keep : kKeeps)
      for (const index_t k : {index_t{0}, index_t{1}, index_t{3}, index_t{20}}) {
        SCOPED_TRACE(std::string(c.name) + " top_k " + std::to_string(k) + " sinks " +
                     std::to_string(keep.sink_blocks) + " diag " + std::to_string(keep.diagonal));
        const ps::TopKSelector sel{.block = c.block, .top_k = k, .keep = keep};
        BlockMask m;
        sel.select(p.inputs(), c.options(), m);
        expect_mask(m, expected_top_k(p, c.options(), c.block, keep, k, false, true), c.block);
      }
  }
}

TEST(SparseLinearTopK, MatchesNaive) {
  for (const Case& c : cases()) {
    const Problem p = c.problem(22);
    for (const auto& keep : kKeeps)
      for (const index_t k : {index_t{1}, index_t{4}}) {
        SCOPED_TRACE(std::string(c.name) + " top_k " + std::to_string(k));
        const ps::LinearTopKSelector sel{.block = c.block, .top_k = k, .keep = keep};
        BlockMask m;
        sel.select(p.inputs(), c.options(), m);
        expect_mask(m, expected_top_k(p, c.options(), c.block, keep, k, true, false), c.block);
      }
  }
}

TEST(SparseMass, MatchesNaive) {
  for (const Case& c : cases()) {
    const Problem p = c.problem(23);
    for (const auto& keep : kKeeps)
      for (const double gamma : {0.3, 0.9, 1.0}) {
        SCOPED_TRACE(std::string(c.name) + " gamma " + std::to_string(gamma));
        const ps::MassSelector sel{.block = c.block, .gamma = gamma, .keep = keep};
        BlockMask m;
        sel.select(p.inputs(), c.options(), m);
        expect_mask(m, expected_mass(p, c.options(), c.block, keep, gamma), c.block);
      }
  }
}

// A smaller γ never keeps more: the prefixes are nested.
TEST(SparseMass, MonotoneInGamma) {
  const Case c = cases()[0];
  const Problem p = c.problem(24);
  BlockMask lo, hi;
  ps::MassSelector{.gamma = 0.5, .keep = {.diagonal = false}}.select(p.inputs(), c.options(), lo);
  ps::MassSelector{.gamma = 0.95, .keep = {.diagonal = false}}.select(p.inputs(), c.options(), hi);
  index_t n_lo = 0, n_hi = 0;
  for (std::size_t i = 0; i < lo.bytes().size(); ++i) {
    EXPECT_LE(lo.bytes()[i], hi.bytes()[i]);
    n_lo += lo.bytes()[i];
    n_hi += hi.bytes()[i];
  }
  EXPECT_LT(n_lo, n_hi);
}

// NaN in a query block: top-k still picks blocks (NaN ranks lowest), mass keeps every candidate.
TEST(SparseScored, NonFiniteScores) {
  Problem p = make_problem(1, 300, 300, 1, 1, 16, 25);
  for (index_t e = 0; e < p.D; ++e)
    p.q.data[static_cast<std::size_t>(200 * p.D + e)] = NAN;  // row 200: qb 3
  const SoftmaxOptions opt{.causal = true};
  BlockMask m;
  ps::MassSelector{.gamma = 0.5, .keep = {.diagonal = false}}.select(p.inputs(), opt, m);
  for (index_t kb = 0; kb < m.k_blocks(); ++kb) EXPECT_EQ(m.visible(0, 0, 3, kb), kb <= 3) << kb;
  ps::TopKSelector{.top_k = 2, .keep = {.diagonal = false}}.select(p.inputs(), opt, m);
  index_t n = 0;
  for (index_t kb = 0; kb < m.k_blocks(); ++kb) n += m.visible(0, 0, 3, kb) ? 1 : 0;
  EXPECT_EQ(n, 2);
  EXPECT_TRUE(m.visible(0, 0, 3, 0) && m.visible(0, 0, 3, 1));  // all NaN: lowest indices
}

TEST(SparseScored, ExecutorAndBufferReuse) {
  const Case c = cases()[1];
  const Problem p = c.problem(26);
  const ThreadPool pool(2);
  const auto check = [&](const auto& sel) {
    BlockMask serial, threaded;
    sel.select(p.inputs(), c.options(), serial);
    sel.select(p.inputs(), c.options(), threaded, pool);
    EXPECT_EQ(serial.bytes(), threaded.bytes());
    const auto* storage = threaded.bytes().data();
    sel.select(p.inputs(), c.options(), threaded, pool);
    EXPECT_EQ(threaded.bytes().data(), storage);
    EXPECT_EQ(serial.bytes(), threaded.bytes());
  };
  check(ps::TopKSelector{.top_k = 2});
  check(ps::MassSelector{.gamma = 0.8});
  check(ps::LinearTopKSelector{.top_k = 2});
}

// Head-first q/k memory ([B, H, T, D] strides) selects the same blocks as token-major memory.
TEST(SparseScored, StridedInputs) {
  const index_t B = 1, T = 200, H = 2, D = 16;
  const Problem p = make_problem(B, T, T, H, H, D, 27);
  std::vector<float> qh(p.q.data.size()), kh(p.k.data.size());
  for (index_t t = 0; t < T; ++t)
    for (index_t h = 0; h < H; ++h)
      for (index_t e = 0; e < D; ++e) {
        qh[static_cast<std::size_t>((h * T + t) * D + e)] =
            p.q.data[static_cast<std::size_t>((t * H + h) * D + e)];
        kh[static_cast<std::size_t>((h * T + t) * D + e)] =
            p.k.data[static_cast<std::size_t>((t * H + h) * D + e)];
      }
  SoftmaxInputs hf = p.inputs();
  hf.q = head_first<const float>(qh.data(), B, T, H, D);
  hf.k = head_first<const float>(kh.data(), B, T, H, D);
  const SoftmaxOptions opt{.causal = true};
  BlockMask a, b;
  ps::TopKSelector{.block = 32, .top_k = 2}.select(p.inputs(), opt, a);
  ps::TopKSelector{.block = 32, .top_k = 2}.select(hf, opt, b);
  EXPECT_EQ(a.bytes(), b.bytes());
  ps::LinearTopKSelector{.block = 32, .top_k = 2}.select(p.inputs(), opt, a);
  ps::LinearTopKSelector{.block = 32, .top_k = 2}.select(hf, opt, b);
  EXPECT_EQ(a.bytes(), b.bytes());
}

}  // namespace
}  // namespace polyattn::test::sparse_util
