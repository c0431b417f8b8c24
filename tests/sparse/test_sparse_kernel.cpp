// sparse_attention (selector + block-sparse flash kernel) against the double reference run with
// the same block mask (docs/conventions.md §9: rel RMSE < 1e-5), keep-everything masks against
// dense flash (bitwise), executor invariance, and the caller-provided mask buffer in a decode loop.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <string>

#include "polyattn/core/executor.hpp"
#include "polyattn/reference/softmax.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/sparse/sparse.hpp"
#include "sparse/sparse_test_util.hpp"

namespace polyattn::test::sparse_util {
namespace {

namespace ps = ::polyattn::sparse;

// Keeps every block of the mask (a user-defined selector: only the concept's two members).
struct AllBlocks {
  index_t block = 64;
  index_t block_size() const { return block; }
  void select(const SoftmaxInputs& in, const SoftmaxOptions&, BlockMask& out) const {
    out = BlockMask::for_lengths(in.q.size(0), in.q.size(2), in.q.size(1), in.k.size(1), block,
                                 block, true);
  }
};
static_assert(ps::BlockSelector<AllBlocks> && !ps::BlockSelectorOn<AllBlocks, ThreadPool>);

// o from sparse_attention vs the double reference with the mask it used.
void expect_matches_reference(const Problem& p, const SoftmaxInputs& in, const SoftmaxOptions& opt,
                              const auto& sel, const std::string& what) {
  SCOPED_TRACE(what);
  Tensor<float, 4> o({p.B, p.T, p.HQ, p.Dv}, -7.f);
  Tensor<double, 4> ref({p.B, p.T, p.HQ, p.Dv});
  BlockMask mask;
  ps::sparse_attention(sel, in, opt, o.view(), mask);
  SoftmaxOptions with_mask = opt;
  with_mask.block_mask = &mask;
  reference::softmax_attention(in, with_mask, ref.view());
  EXPECT_LT(rel_rmse(o.data, ref.data), kRelRmseBound);
}

// Every selector on one problem.
void each_selector(const Problem& p, const SoftmaxInputs& in, const SoftmaxOptions& opt, index_t bs,
                   const std::string& name) {
  expect_matches_reference(
      p, in, opt,
      ps::WindowSinkSelector{.block = bs, .keep = {.sink_blocks = 1, .local_blocks = 2}},
      name + " window");
  expect_matches_reference(p, in, opt, ps::PowerSelector{.block = bs}, name + " power");
  expect_matches_reference(p, in, opt, ps::TopKSelector{.block = bs, .top_k = 2}, name + " topk");
  expect_matches_reference(p, in, opt, ps::MassSelector{.block = bs, .gamma = 0.7}, name + " mass");
  expect_matches_reference(p, in, opt, ps::LinearTopKSelector{.block = bs, .top_k = 2},
                           name + " linear");
  expect_matches_reference(
      p, in, opt,
      ps::Neighborhood1DSelector{.block = bs, .axis = {.kernel_size = 31, .dilation = 3}},
      name + " natten1d");
}

TEST(SparseKernel, MatchesReference) {
  for (const Case& c : cases()) {
    const Problem p = make_problem(c.B, c.T, c.S, c.HQ, c.HKV, 60, 31, c.cu);
    each_selector(p, p.inputs(), c.options(), c.block, c.name);
  }
}

// Token-level sinks and sink logits, softcap and a window on top of the block mask.
TEST(SparseKernel, WithTokenOptions) {
  const Problem p = make_problem(1, 333, 333, 4, 2, 100, 32);
  std::vector<float> sink{0.5f, -1.f, 2.f, 0.f};
  SoftmaxInputs in = p.inputs();
  in.sink = View1<const float>::contiguous(sink.data(), {4});
  const SoftmaxOptions opt{.causal = true, .window = 150, .sink_tokens = 5, .softcap = 20.0};
  each_selector(p, in, opt, 64, "token options");
}

TEST(SparseKernel, LongHeadDim128) {
  const Problem p = make_problem(1, 1000, 1000, 2, 1, 128, 33);
  const SoftmaxOptions opt{.causal = true};
  expect_matches_reference(p, p.inputs(), opt,
                           ps::TopKSelector{.top_k = 3, .keep = {.sink_blocks = 1}}, "topk D128");
  expect_matches_reference(p, p.inputs(), opt,
                           ps::Neighborhood2DSelector{.block = 64,
                                                      .height = 25,
                                                      .width = 40,
                                                      .y = {.kernel_size = 5, .dilation = 2},
                                                      .x = {.kernel_size = 7}},
                           "natten2d D128");
}

// A mask that keeps every block, or every candidate block, gives dense flash bit for bit.
TEST(SparseKernel, KeepEverythingIsDenseBitwise) {
  for (const Case& c : cases()) {
    const Problem p = make_problem(c.B, c.T, c.S, c.HQ, c.HKV, 64, 34, c.cu);
    Tensor<float, 4> dense({p.B, p.T, p.HQ, p.Dv}), o1(dense.shape), o2(dense.shape);
    softmax::flash_attention(p.inputs(), c.options(), dense.view());
    ps::sparse_attention(AllBlocks{.block = c.block}, p.inputs(), c.options(), o1.view());
    ps::sparse_attention(ps::TopKSelector{.block = c.block, .top_k = 1 << 20}, p.inputs(),
                         c.options(), o2.view());
    EXPECT_EQ(std::memcmp(dense.data.data(), o1.data.data(), dense.data.size() * sizeof(float)), 0)
        << c.name;
    EXPECT_EQ(std::memcmp(dense.data.data(), o2.data.data(), dense.data.size() * sizeof(float)), 0)
        << c.name;
  }
}

TEST(SparseKernel, ThreadsGiveSameBits) {
  const Case c = cases()[1];  // varlen, causal
  const Problem p = make_problem(c.B, c.T, c.S, c.HQ, c.HKV, 64, 35, c.cu);
  const ThreadPool pool(2);
  Tensor<float, 4> a({p.B, p.T, p.HQ, p.Dv}), b(a.shape);
  BlockMask ma, mb;
  const ps::MassSelector sel{.gamma = 0.8, .keep = {.sink_blocks = 1}};
  ps::sparse_attention(sel, p.inputs(), c.options(), a.view(), ma);
  ps::sparse_attention(sel, p.inputs(), c.options(), b.view(), mb, pool);
  EXPECT_EQ(ma.bytes(), mb.bytes());
  EXPECT_EQ(std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)), 0);
}

// A decode loop: one query against a growing key prefix, the mask buffer passed every step.
// With a static selector the step equals the last row of a causal prefill over the same tokens.
TEST(SparseKernel, DecodeLoopReusesMask) {
  const index_t S_max = 330, HQ = 4, HKV = 2, D = 32;
  const Problem full = make_problem(1, S_max, S_max, HQ, HKV, D, 36);
  const ps::WindowSinkSelector sel{.keep = {.sink_blocks = 1, .local_blocks = 2}};
  const SoftmaxOptions opt{.causal = true};
  Tensor<float, 4> prefill({1, S_max, HQ, D});
  ps::sparse_attention(sel, full.inputs(), opt, prefill.view());
  BlockMask mask;
  for (const index_t S : {index_t{100}, index_t{128}, index_t{129}, index_t{150}, index_t{330}}) {
    SCOPED_TRACE("S " + std::to_string(S));
    const SoftmaxInputs in{.q = View4<const float>(full.q.data.data() + (S - 1) * HQ * D,
                                                   {1, 1, HQ, D}, {S_max * HQ * D, HQ * D, D, 1}),
                           .k = View4<const float>(full.k.data.data(), {1, S, HKV, D},
                                                   {S_max * HKV * D, HKV * D, D, 1}),
                           .v = View4<const float>(full.v.data.data(), {1, S, HKV, D},
                                                   {S_max * HKV * D, HKV * D, D, 1})};
    Tensor<float, 4> o({1, 1, HQ, D});
    ps::sparse_attention(sel, in, opt, o.view(), mask);
    EXPECT_EQ(mask.k_blocks(), BlockMask::blocks_for(S, 64));
    std::vector<float> last(prefill.data.begin() + (S - 1) * HQ * D,
                            prefill.data.begin() + S * HQ * D);
    EXPECT_LT(rel_rmse(o.data, last), 1e-6);
    Tensor<double, 4> ref({1, 1, HQ, D});
    SoftmaxOptions with_mask = opt;
    with_mask.block_mask = &mask;
    reference::softmax_attention(in, with_mask, ref.view());
    EXPECT_LT(rel_rmse(o.data, ref.data), kRelRmseBound);
  }
  // Same shape again: the storage is reused, not reallocated.
  const SoftmaxInputs in{.q = View4<const float>(full.q.data.data() + 149 * HQ * D, {1, 1, HQ, D},
                                                 {S_max * HQ * D, HQ * D, D, 1}),
                         .k = View4<const float>(full.k.data.data(), {1, 150, HKV, D},
                                                 {S_max * HKV * D, HKV * D, D, 1}),
                         .v = View4<const float>(full.v.data.data(), {1, 150, HKV, D},
                                                 {S_max * HKV * D, HKV * D, D, 1})};
  Tensor<float, 4> o({1, 1, HQ, D});
  ps::sparse_attention(sel, in, opt, o.view(), mask);
  const std::uint8_t* before = mask.bytes().data();
  ps::sparse_attention(sel, in, opt, o.view(), mask);
  EXPECT_EQ(mask.bytes().data(), before);
}

}  // namespace
}  // namespace polyattn::test::sparse_util
