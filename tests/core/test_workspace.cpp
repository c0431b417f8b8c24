// The workspace's blocks under AddressSanitizer (core/workspace.hpp): an idle block is poisoned,
// so a write through a stale pointer after its Buffer gave the block back is reported; a block
// in use is addressable for the bytes its Buffer asked for and no further, so an overrun into
// the block's rounding or the rest of a larger reused block is reported. The reuse test runs in
// every build (its poisoning checks under ASan only); the death tests are compiled under ASan
// only.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>

#include "polyattn/core/asan.hpp"
#include "polyattn/core/buffer.hpp"
#include "polyattn/core/workspace.hpp"

namespace {

namespace pa = polyattn;

constexpr std::size_t kMiB = std::size_t{1} << 20;

// Restores the default cap and releases what a test left retained, whatever it did.
class Workspace : public ::testing::Test {
 protected:
  void SetUp() override { pa::release_workspace(); }
  void TearDown() override {
    pa::set_workspace_limit(pa::kDefaultWorkspaceLimit);
    pa::release_workspace();
  }
};
using WorkspaceDeathTest = Workspace;

// Whether ASan takes none of [p, p + bytes) as poisoned (always true without ASan).
bool addressable([[maybe_unused]] const void* p, [[maybe_unused]] std::size_t bytes) {
#if defined(POLYATTN_ASAN)
  return __asan_region_is_poisoned(const_cast<void*>(p), bytes) == nullptr;
#else
  return true;
#endif
}

// Given back, taken again (smaller, then the same size; a small block and a huge-page one): the
// same memory, every requested byte writable and readable with the values written, the bytes past
// them poisoned.
TEST_F(Workspace, AReusedBlockIsUsableForTheBytesAskedFor) {
  for (const std::size_t n : {std::size_t{1000}, 3 * kMiB}) {
    pa::Buffer<std::uint32_t> a;
    a.allocate(n);
    const std::uint32_t* p = a.data();
    a.reset();
    ASSERT_EQ(pa::workspace_stats().retained_blocks, 1u);
    const std::size_t block_bytes = pa::workspace_stats().retained_bytes;
    ASSERT_GE(block_bytes, n * sizeof(std::uint32_t));
#if defined(POLYATTN_ASAN)
    EXPECT_EQ(__asan_region_is_poisoned(const_cast<std::uint32_t*>(p), block_bytes), p)
        << "an idle block is poisoned from its first byte";
    EXPECT_TRUE(__asan_address_is_poisoned(reinterpret_cast<const char*>(p) + block_bytes - 1))
        << "... to its last";
#endif
    for (const std::size_t m : {n / 2, n}) {
      pa::Buffer<std::uint32_t> b;
      b.allocate(m);
      ASSERT_EQ(b.data(), p);
      EXPECT_TRUE(addressable(b.data(), m * sizeof(std::uint32_t))) << "the m elements asked for";
#if defined(POLYATTN_ASAN)
      const char* end = reinterpret_cast<const char*>(b.data() + m);
      if (m * sizeof(std::uint32_t) < block_bytes) {
        EXPECT_TRUE(__asan_address_is_poisoned(end)) << "the first byte past them";
        EXPECT_TRUE(__asan_address_is_poisoned(reinterpret_cast<const char*>(p) + block_bytes - 1))
            << "the block's last byte";
      }
#endif
      for (std::size_t i = 0; i < m; ++i) b.data()[i] = static_cast<std::uint32_t>(i * 7 + m);
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < m; ++i)
        wrong += b.data()[i] != static_cast<std::uint32_t>(i * 7 + m);
      EXPECT_EQ(wrong, 0u);
    }
    EXPECT_EQ(pa::release_workspace(), block_bytes);  // freed unpoisoned: no report from free
  }
}

#if defined(POLYATTN_ASAN)
// The ASan build's own check: a write through a pointer kept past reset() (the block retained
// idle, not freed) is reported as a use after poison, in a child process.
TEST_F(WorkspaceDeathTest, WriteIntoAnIdleBlockIsReported) {
  pa::Buffer<float> b;
  b.allocate(1024);
  volatile float* stale = b.data() + 100;
  b.reset();
  ASSERT_EQ(pa::workspace_stats().retained_blocks, 1u);  // retained: free() would not catch it
  EXPECT_DEATH(*stale = 1.0f, "use-after-poison");
}

// An overrun by one element: into the rounding of a new block, and into the rest of a larger
// block taken again.
TEST_F(WorkspaceDeathTest, WritePastTheRequestedSizeIsReported) {
  {
    pa::Buffer<float> b;
    b.allocate(1001);  // 4004 bytes of a 4032-byte block
    volatile float* past = b.data() + b.size();
    EXPECT_DEATH(*past = 1.0f, "use-after-poison");
  }
  pa::release_workspace();
  pa::Buffer<float> big;
  big.allocate(3 * kMiB);
  big.reset();
  const std::uint64_t reuses = pa::workspace_stats().reuses;
  pa::Buffer<float> b;
  b.allocate(1000);  // the 12 MiB block again
  ASSERT_EQ(pa::workspace_stats().reuses, reuses + 1);
  ASSERT_EQ(pa::workspace_stats().retained_blocks, 0u);
  volatile float* past = b.data() + b.size();
  EXPECT_DEATH(*past = 1.0f, "use-after-poison");
}

TEST_F(WorkspaceDeathTest, ReadFromAnIdleBlockIsReported) {
  pa::Buffer<float> b;
  b.allocate(3 * kMiB);  // a huge-page block
  volatile const float* stale = b.data() + b.size() - 1;
  b.reset();
  ASSERT_EQ(pa::workspace_stats().retained_blocks, 1u);
  EXPECT_DEATH(static_cast<void>(*stale), "use-after-poison");
}
#endif

}  // namespace
