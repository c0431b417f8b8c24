// The workspace (core/workspace.hpp) under Buffer and the softmax prefill: a second call reuses
// the first call's pack memory, with the bits of fresh memory; concurrent holders get distinct
// blocks; the caps bound what is retained, release_workspace frees it, and an exception unwinding
// through a call gives its blocks back. Threaded (labelled "threads": run under ThreadSanitizer).
#include <gtest/gtest.h>

#include <barrier>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/polyattn.hpp"

namespace {

namespace pa = polyattn;
using pa::index_t;
using pa::test::random_vector;

constexpr std::size_t kMiB = std::size_t{1} << 20;

// Restores the default cap and releases what a test left retained, whatever it did.
class SoftmaxWorkspace : public ::testing::Test {
 protected:
  void SetUp() override { pa::release_workspace(); }
  void TearDown() override {
    pa::set_workspace_limit(pa::kDefaultWorkspaceLimit);
    pa::release_workspace();
  }
};

// One causal softmax prefill of its own inputs (fp32; K and V packed into two Buffers per call).
struct Prefill {
  index_t T, H, D;
  std::vector<float> q, k, v, o;
  Prefill(index_t t, index_t h, index_t d, unsigned seed)
      : T(t),
        H(h),
        D(d),
        q(random_vector(t * h * d, seed)),
        k(random_vector(t * h * d, seed + 1)),
        v(random_vector(t * h * d, seed + 2)),
        o(q.size()) {}
  template <class E = pa::Serial>
  const std::vector<float>& run(const E& exec = E{}) {
    pa::softmax::flash_attention({.q = pa::bthd(q.data(), 1, T, H, D),
                                  .k = pa::bthd(k.data(), 1, T, H, D),
                                  .v = pa::bthd(v.data(), 1, T, H, D)},
                                 {.causal = true}, pa::bthd(o.data(), 1, T, H, D), exec);
    return o;
  }
};

TEST_F(SoftmaxWorkspace, BufferReusesAGivenBackBlock) {
  pa::Buffer<float> a;
  a.allocate(kMiB);
  const float* p = a.data();
  a.reset();
  const pa::WorkspaceStats s0 = pa::workspace_stats();
  EXPECT_EQ(s0.retained_blocks, 1u);
  EXPECT_GE(s0.retained_bytes, kMiB * sizeof(float));
  pa::Buffer<float> b;
  b.allocate(kMiB / 2);  // smaller: the same block
  const pa::WorkspaceStats s1 = pa::workspace_stats();
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(s1.reuses, s0.reuses + 1);
  EXPECT_EQ(s1.allocations, s0.allocations);
  EXPECT_EQ(s1.retained_blocks, 0u);
  EXPECT_EQ(s1.in_use_blocks, s0.in_use_blocks + 1);
}

TEST_F(SoftmaxWorkspace, BlocksAreAlignedAndHugeOnesToTwoMiB) {
  pa::Buffer<std::uint16_t> small, huge;
  small.allocate(3);
  huge.allocate(3 * kMiB);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(small.data()) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(huge.data()) % (2 * kMiB), 0u);
}

TEST_F(SoftmaxWorkspace, ImpossibleSizesThrowBadAllocAndHoldNothing) {
  pa::Buffer<float> b;
  EXPECT_THROW(b.allocate(SIZE_MAX / 2), std::bad_alloc);      // n · 4 bytes wraps
  EXPECT_THROW(b.allocate(SIZE_MAX / 4 - 8), std::bad_alloc);  // the rounding would wrap
  EXPECT_EQ(b.data(), nullptr);
  EXPECT_EQ(b.size(), 0u);
  EXPECT_EQ(pa::workspace_stats().in_use_blocks, 0u);
}

TEST_F(SoftmaxWorkspace, ReleaseFreesWhatIsRetained) {
  {
    pa::Buffer<float> a, b;
    a.allocate(kMiB);
    b.allocate(1000);
  }
  EXPECT_EQ(pa::workspace_stats().retained_blocks, 2u);
  EXPECT_GE(pa::release_workspace(), kMiB * sizeof(float) + 1000 * sizeof(float));
  const pa::WorkspaceStats s = pa::workspace_stats();
  EXPECT_EQ(s.retained_blocks, 0u);
  EXPECT_EQ(s.retained_bytes, 0u);
  EXPECT_EQ(pa::release_workspace(), 0u);
}

TEST_F(SoftmaxWorkspace, CapsBoundWhatIsRetainedKeepingTheLargest) {
  // Blocks of 1, 2 and 4 MiB (from 2 MiB on, whole huge pages), given back largest first: the
  // 2 MiB one passes the cap (4 + 2) and is freed, the 1 MiB one too (4 + 1).
  EXPECT_EQ(pa::workspace_stats().limit_bytes, pa::kDefaultWorkspaceLimit);
  pa::set_workspace_limit(4 * kMiB + kMiB / 2);
  EXPECT_EQ(pa::workspace_stats().limit_bytes, 4 * kMiB + kMiB / 2);
  {
    pa::Buffer<char> a, b, c;
    a.allocate(1 * kMiB);
    b.allocate(2 * kMiB);
    c.allocate(3 * kMiB);
  }
  pa::WorkspaceStats s = pa::workspace_stats();
  EXPECT_EQ(s.retained_blocks, 1u);
  EXPECT_EQ(s.retained_bytes, 4 * kMiB);

  pa::set_workspace_limit(pa::kDefaultWorkspaceLimit);
  {
    std::vector<pa::Buffer<float>> many(pa::kWorkspaceMaxBlocks + 4);
    for (auto& b : many) b.allocate(16);
  }
  EXPECT_EQ(pa::workspace_stats().retained_blocks, pa::kWorkspaceMaxBlocks);

  pa::set_workspace_limit(0);  // frees everything now, and retains nothing after
  EXPECT_EQ(pa::workspace_stats().retained_blocks, 0u);
  EXPECT_EQ(pa::workspace_stats().limit_bytes, 0u);
  {
    pa::Buffer<float> a;
    a.allocate(16);
  }
  s = pa::workspace_stats();
  EXPECT_EQ(s.retained_blocks, 0u);
  EXPECT_EQ(s.in_use_blocks, 0u);
}

TEST_F(SoftmaxWorkspace, SecondPrefillReusesThePackMemory) {
  Prefill call(300, 4, 64, 1);
  const std::vector<float> first = call.run();
  const pa::WorkspaceStats s1 = pa::workspace_stats();
  EXPECT_EQ(s1.in_use_blocks, 0u);
  EXPECT_GE(s1.retained_blocks, 2u);  // packed K and V
  const std::vector<float> second = call.run();
  const pa::WorkspaceStats s2 = pa::workspace_stats();
  EXPECT_EQ(s2.allocations, s1.allocations);
  EXPECT_EQ(s2.reuses, s1.reuses + 2);
  EXPECT_EQ(s2.retained_blocks, s1.retained_blocks);
  EXPECT_EQ(second, first);
}

TEST_F(SoftmaxWorkspace, ReusedMemoryGivesTheBitsOfFreshMemory) {
  pa::set_workspace_limit(0);  // no reuse: every call packs into fresh memory
  Prefill call(257, 3, 48, 7);
  const std::vector<float> fresh = call.run();
  pa::set_workspace_limit(pa::kDefaultWorkspaceLimit);
  Prefill larger(600, 5, 80, 21);  // leaves larger blocks, full of other values, retained
  larger.run();
  const pa::WorkspaceStats s0 = pa::workspace_stats();
  EXPECT_EQ(call.run(), fresh);
  EXPECT_EQ(pa::workspace_stats().allocations, s0.allocations);
}

// An executor whose parallel_for throws: the prefill has taken its blocks when it first calls it.
struct ThrowingExecutor {
  template <class F>
  void parallel_for(std::int64_t, F&&) const {
    throw std::runtime_error("executor failed");
  }
  int concurrency() const noexcept { return 1; }
};

TEST_F(SoftmaxWorkspace, AnExceptionGivesTheBlocksBack) {
  Prefill call(130, 2, 32, 3);
  const pa::WorkspaceStats s0 = pa::workspace_stats();
  EXPECT_THROW(call.run(ThrowingExecutor{}), std::runtime_error);
  const pa::WorkspaceStats s1 = pa::workspace_stats();
  EXPECT_EQ(s1.in_use_blocks, s0.in_use_blocks);
  EXPECT_EQ(s1.retained_blocks, s0.retained_blocks + 2);  // packed K and V, retained
}

TEST_F(SoftmaxWorkspace, ConcurrentHoldersGetDistinctBlocks) {
  constexpr int kThreads = 4;
  {  // retained blocks for every thread, so that the threads race for reuses too
    std::vector<pa::Buffer<float>> warm(kThreads);
    for (auto& b : warm) b.allocate(4096);
  }
  std::vector<const float*> seen(kThreads);
  std::barrier all_hold(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      pa::Buffer<float> b;
      b.allocate(1000 + 1000 * static_cast<std::size_t>(t));
      for (std::size_t i = 0; i < b.size(); ++i) b.data()[i] = static_cast<float>(t);
      seen[static_cast<std::size_t>(t)] = b.data();
      all_hold.arrive_and_wait();  // every thread holds its block here
      for (std::size_t i = 0; i < b.size(); ++i)
        if (b.data()[i] != static_cast<float>(t)) ADD_FAILURE() << "block overwritten";
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(std::set<const float*>(seen.begin(), seen.end()).size(), std::size_t{kThreads});
  EXPECT_EQ(pa::workspace_stats().in_use_blocks, 0u);
}

TEST_F(SoftmaxWorkspace, ConcurrentPrefillCallersGetSerialBits) {
  constexpr int kCallers = 4, kRounds = 3;
  std::vector<Prefill> calls;
  std::vector<std::vector<float>> serial;
  for (int c = 0; c < kCallers; ++c) {
    calls.emplace_back(100 + 40 * c, 2 + c % 2, 32, 10u * static_cast<unsigned>(c) + 1);
    serial.push_back(calls.back().run());
  }
  std::vector<std::thread> threads;
  for (int c = 0; c < kCallers; ++c)
    threads.emplace_back([&, c] {
      for (int r = 0; r < kRounds; ++r)
        if (calls[static_cast<std::size_t>(c)].run() != serial[static_cast<std::size_t>(c)])
          ADD_FAILURE() << "caller " << c << " round " << r << " differs from its serial bits";
    });
  for (auto& th : threads) th.join();
  const pa::WorkspaceStats s = pa::workspace_stats();
  EXPECT_EQ(s.in_use_blocks, 0u);
  EXPECT_LE(s.retained_blocks, pa::kWorkspaceMaxBlocks);
}

}  // namespace
