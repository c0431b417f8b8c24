// Static selectors (window + sinks, PowerAttention, 1-D / 2-D neighbourhoods) against naive mask
// builders written from their definitions, over the awkward shapes of sparse_test_util.hpp.
#include <gtest/gtest.h>

#include <cstdlib>

#include "polyattn/core/executor.hpp"
#include "polyattn/sparse/neighborhood.hpp"
#include "polyattn/sparse/power.hpp"
#include "polyattn/sparse/window.hpp"
#include "sparse/sparse_test_util.hpp"

namespace polyattn::test::sparse_util {
namespace {

namespace ps = ::polyattn::sparse;

const ps::KeepOptions kKeeps[] = {
    {.diagonal = true, .sink_blocks = 1, .local_blocks = 4},
    {.diagonal = false, .sink_blocks = 2, .local_blocks = 0},
    {.diagonal = true, .sink_blocks = 0, .local_blocks = 3},
    {.diagonal = false, .sink_blocks = 0, .local_blocks = 0},
};

bool no_extra(const Piece&, index_t) {
  return false;
}

TEST(SparseWindowSinks, MatchesNaive) {
  for (const Case& c : cases()) {
    const Problem p = c.problem(11);
    for (const auto& keep : kKeeps) {
      SCOPED_TRACE(std::string(c.name) + " sinks " + std::to_string(keep.sink_blocks) + " local " +
                   std::to_string(keep.local_blocks) + " diag " + std::to_string(keep.diagonal));
      const ps::WindowSinkSelector sel{.block = c.block, .keep = keep};
      BlockMask m;
      sel.select(p.inputs(), c.options(), m);
      expect_mask(m, expected_static(p, c.options(), c.block, keep, no_extra), c.block);
    }
  }
}

// StreamingLLM at block level, spelled out for one causal shape: block q keeps {0} ∪ [q − 3, q].
TEST(SparseWindowSinks, CausalPatternByHand) {
  const Problem p = make_problem(1, 640, 640, 1, 1, 8, 3);
  const ps::WindowSinkSelector sel{.block = 64, .keep = {.sink_blocks = 1, .local_blocks = 4}};
  BlockMask m;
  sel.select(p.inputs(), SoftmaxOptions{.causal = true}, m);
  for (index_t qb = 0; qb < 10; ++qb)
    for (index_t kb = 0; kb < 10; ++kb)
      EXPECT_EQ(m.visible(0, 0, qb, kb), kb <= qb && (kb == 0 || kb > qb - 4)) << qb << "," << kb;
}

TEST(SparsePower, MatchesNaive) {
  for (const Case& c : cases()) {
    const Problem p = c.problem(12);
    for (const index_t max_distance : {index_t{0}, index_t{4}}) {
      for (const auto& keep : {kKeeps[0], kKeeps[3]}) {
        SCOPED_TRACE(std::string(c.name) + " max_distance " + std::to_string(max_distance));
        const ps::PowerSelector sel{.block = c.block, .max_distance = max_distance, .keep = keep};
        BlockMask m;
        sel.select(p.inputs(), c.options(), m);
        const auto rule = [&](const Piece& pc, index_t kb) {
          for (const index_t d : pc.diag)
            for (index_t i = 0; i < 20; ++i) {
              const index_t dist = index_t{1} << i;
              if (max_distance > 0 && dist > max_distance) break;
              if (std::abs(kb - d) == dist) return true;
            }
          return false;
        };
        expect_mask(m, expected_static(p, c.options(), c.block, keep, rule), c.block);
      }
    }
  }
}

TEST(SparsePower, CausalPatternByHand) {
  const Problem p = make_problem(1, 1100, 1100, 1, 1, 8, 4);
  BlockMask m;
  ps::PowerSelector{}.select(p.inputs(), SoftmaxOptions{.causal = true}, m);
  for (index_t kb = 0; kb < m.k_blocks(); ++kb) {
    const bool want = kb == 17 || kb == 16 || kb == 15 || kb == 13 || kb == 9 || kb == 1;
    EXPECT_EQ(m.visible(0, 0, 17, kb), want) << kb;
  }
}

TEST(SparseNeighborhood1D, MatchesNatten) {
  const ps::NeighborhoodAxis axes[] = {{.kernel_size = 7, .dilation = 1},
                                       {.kernel_size = 5, .dilation = 3},
                                       {.kernel_size = 33, .dilation = 2},
                                       {.kernel_size = 4, .dilation = 2, .causal = true},
                                       {.kernel_size = 9, .dilation = 40, .causal = true}};
  for (const Case& c : cases()) {
    const Problem p = c.problem(13);
    for (const auto& axis : axes) {
      SCOPED_TRACE(std::string(c.name) + " kernel " + std::to_string(axis.kernel_size) +
                   " dilation " + std::to_string(axis.dilation) + (axis.causal ? " causal" : ""));
      const ps::KeepOptions keep{.diagonal = false};
      const ps::Neighborhood1DSelector sel{.block = c.block, .axis = axis, .keep = keep};
      BlockMask m;
      sel.select(p.inputs(), c.options(), m);
      const auto rule = [&](const Piece& pc, index_t kb) {
        const index_t L = pc.nk;
        for (const index_t pi : pc.pos) {
          const index_t x = pi - pc.k0;
          if (x < 0) continue;
          for (index_t j = std::max(kb * c.block, pc.k0);
               j < std::min((kb + 1) * c.block, pc.k0 + L); ++j)
            if (natten_neighbor(x, j - pc.k0, L, axis.kernel_size, axis.dilation, axis.causal))
              return true;
        }
        return false;
      };
      expect_mask(m, expected_static(p, c.options(), c.block, keep, rule), c.block);
    }
  }
}

TEST(SparseNeighborhood2D, MatchesNatten) {
  struct Grid {
    index_t H, W;
    std::vector<std::int64_t> cu;
    bool causal;
  };
  const Grid grids[] = {{12, 20, {}, false}, {12, 20, {0, 240, 480}, false}, {10, 13, {}, true}};
  const ps::NeighborhoodAxis ys[] = {{.kernel_size = 5, .dilation = 2},
                                     {.kernel_size = 3, .dilation = 1, .causal = true}};
  const ps::NeighborhoodAxis xs[] = {{.kernel_size = 3, .dilation = 3},
                                     {.kernel_size = 7, .dilation = 1}};
  for (const Grid& g : grids) {
    const index_t T = g.H * g.W * (g.cu.empty() ? 1 : static_cast<index_t>(g.cu.size()) - 1);
    const Problem p = make_problem(1, T, T, 2, 1, 8, 14, g.cu);
    const SoftmaxOptions opt{.causal = g.causal};
    for (const auto& ay : ys)
      for (const auto& ax : xs)
        for (const index_t bs : {index_t{32}, index_t{64}}) {
          SCOPED_TRACE("grid " + std::to_string(g.H) + "x" + std::to_string(g.W) + " seqs " +
                       std::to_string(g.cu.size()) + " block " + std::to_string(bs) + " ky " +
                       std::to_string(ay.kernel_size) + " kx " + std::to_string(ax.kernel_size));
          const ps::KeepOptions keep{.diagonal = false};
          const ps::Neighborhood2DSelector sel{
              .block = bs, .height = g.H, .width = g.W, .y = ay, .x = ax, .keep = keep};
          BlockMask m;
          sel.select(p.inputs(), opt, m);
          const auto rule = [&](const Piece& pc, index_t kb) {
            for (const index_t pi : pc.pos) {
              const index_t t = pi - pc.k0;
              for (index_t j = std::max(kb * bs, pc.k0); j < std::min((kb + 1) * bs, pc.k0 + pc.nk);
                   ++j) {
                const index_t u = j - pc.k0;
                if (natten_neighbor(t / g.W, u / g.W, g.H, ay.kernel_size, ay.dilation,
                                    ay.causal) &&
                    natten_neighbor(t % g.W, u % g.W, g.W, ax.kernel_size, ax.dilation, ax.causal))
                  return true;
              }
            }
            return false;
          };
          expect_mask(m, expected_static(p, opt, bs, keep, rule), bs);
        }
  }
}

// Every selector: the mask does not depend on the executor; a reused buffer gives the same mask.
TEST(SparseStatic, ExecutorAndBufferReuse) {
  const Case c = cases()[1];
  const Problem p = c.problem(15);
  const ThreadPool pool(2);
  const auto check = [&](const auto& sel) {
    BlockMask serial, threaded;
    sel.select(p.inputs(), c.options(), serial);
    sel.select(p.inputs(), c.options(), threaded, pool);
    EXPECT_EQ(serial.bytes(), threaded.bytes());
    const auto* storage = threaded.bytes().data();
    sel.select(p.inputs(), c.options(), threaded, pool);  // same shape: storage reused
    EXPECT_EQ(threaded.bytes().data(), storage);
    EXPECT_EQ(serial.bytes(), threaded.bytes());
  };
  check(ps::WindowSinkSelector{});
  check(ps::PowerSelector{});
  check(ps::Neighborhood1DSelector{.axis = {.kernel_size = 65, .dilation = 2}});
}

}  // namespace
}  // namespace polyattn::test::sparse_util
