// polyattn/core/workspace.hpp — the process-wide workspace: the pool of memory blocks that Buffer
// (buffer.hpp) takes its storage from, so that an operator called again finds its pack memory
// already faulted in instead of clearing fresh pages (docs/conventions.md §5.8).
//   workspace_stats()           what the pool retains, its cap, what it has done (monitoring)
//   release_workspace()         frees every retained (idle) block; returns the bytes freed
//   set_workspace_limit(bytes)  the cap on retained bytes (default kDefaultWorkspaceLimit,
//                               256 MiB; 0 retains nothing: every block is freed when given back)
// A Buffer takes the smallest idle block that holds its request, or allocates a new one, and
// gives the block back when it is destroyed or reallocated; exceptions unwinding through a call
// give its blocks back like a normal return. A block belongs to one Buffer at a time, so
// concurrent callers never share memory; a mutex guards the idle list (taken twice per buffer per
// call, not per work item). Given-back blocks stay idle while the pool holds at most
// kWorkspaceMaxBlocks of them and the byte cap: past either, the smallest idle blocks are freed
// first, so that the largest stay and a later call of the same or a smaller size reuses them.
// Blocks in use do not count against the cap (a call gets its memory whatever the cap). A
// retained block holds what its last user wrote (Buffer's contents are undefined anyway).
// Under AddressSanitizer a retained block is poisoned while idle, so a stale pointer into it that
// is read or written after its Buffer gave it back is reported like a use after free; a block in
// use is addressable only for the bytes its Buffer asked for (the rest of a reused block, or the
// rounding of a new one, stays poisoned, so an overrun is reported too); a block is unpoisoned
// before it is freed. The pool's bookkeeping lives outside the blocks.
// Blocks of at least kHugeBytes are aligned to that size and marked for transparent huge pages
// (madvise MADV_HUGEPAGE, Linux; a no-op where THP is off): the first touch faults one 2 MiB page
// instead of 512 small ones, and the kernels reading them miss the TLB less; others are aligned
// to 64 bytes (whole cache lines). The pool is never destroyed (buffers may outlive static
// destruction); what it retains at exit is returned by the OS.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "polyattn/core/asan.hpp"

namespace polyattn {

/// What the workspace holds now and has done since the process started.
struct WorkspaceStats {
  std::size_t retained_bytes = 0;   // idle blocks kept for reuse
  std::size_t retained_blocks = 0;  // ... how many
  std::size_t in_use_blocks = 0;    // blocks held by live Buffers
  std::uint64_t reuses = 0;         // requests served by a retained block
  std::uint64_t allocations = 0;    // requests that allocated new memory
  std::size_t limit_bytes = 0;      // the cap on retained_bytes (set_workspace_limit)
};

/// The default cap on the bytes the workspace retains between calls (set_workspace_limit).
inline constexpr std::size_t kDefaultWorkspaceLimit = std::size_t{256} << 20;
/// The most idle blocks the workspace retains, whatever their size.
inline constexpr std::size_t kWorkspaceMaxBlocks = 16;

namespace detail {

// A block of the workspace: bytes usable from p (a multiple of its alignment).
struct WorkspaceBlock {
  void* p = nullptr;
  std::size_t bytes = 0;
};

class WorkspacePool {
 public:
  static constexpr std::size_t kHugeBytes = std::size_t{2} << 20;
  static constexpr std::size_t kAlign = 64;

  static WorkspacePool& instance() {
    static WorkspacePool& pool = *new WorkspacePool;  // never destroyed (see the top comment)
    return pool;
  }

  // A block of at least `bytes` bytes (> 0), contents undefined, addressable under ASan for those
  // `bytes` only; std::bad_alloc when the allocation fails.
  WorkspaceBlock acquire(std::size_t bytes) {
    {
      const std::lock_guard<std::mutex> lock(mu_);
      for (std::size_t i = 0; i < idle_count_; ++i) {  // ascending sizes: the first is the best
        if (idle_[i].bytes < bytes) continue;
        const WorkspaceBlock b = idle_[i];
        erase_idle(i);
        ++in_use_;
        ++reuses_;
        asan_unpoison(b.p, bytes);  // ours alone now: off the list (the rest stays poisoned)
        return b;
      }
      ++in_use_;  // counted before the allocation, undone if it fails
      ++allocations_;
    }
    try {
      const WorkspaceBlock b = allocate_block(bytes);
      asan_poison(static_cast<char*>(b.p) + bytes, b.bytes - bytes);  // the rounding
      return b;
    } catch (...) {
      const std::lock_guard<std::mutex> lock(mu_);
      --in_use_;
      --allocations_;
      throw;
    }
  }

  // Takes back a block from acquire(): retained if the caps allow, freed otherwise.
  void give_back(WorkspaceBlock b) noexcept {
    poison(b);  // before the block is on the list, where another thread may take it
    Evicted evicted;
    {
      const std::lock_guard<std::mutex> lock(mu_);
      --in_use_;
      insert_idle(b);
      evict_past_caps(evicted);
    }
    evicted.free_all();  // outside the lock: unmapping takes time
  }

  std::size_t release() noexcept {
    Evicted evicted;
    {
      const std::lock_guard<std::mutex> lock(mu_);
      while (idle_count_ > 0) {
        evicted.add(idle_[idle_count_ - 1]);
        erase_idle(idle_count_ - 1);
      }
    }
    return evicted.free_all();
  }

  void set_limit(std::size_t bytes) noexcept {
    Evicted evicted;
    {
      const std::lock_guard<std::mutex> lock(mu_);
      limit_ = bytes;
      evict_past_caps(evicted);
    }
    evicted.free_all();
  }

  WorkspaceStats stats() const {
    const std::lock_guard<std::mutex> lock(mu_);
    return {idle_bytes_, idle_count_, in_use_, reuses_, allocations_, limit_};
  }

 private:
  // Blocks taken off the idle list under the lock, freed after it (at most all of them).
  struct Evicted {
    std::array<WorkspaceBlock, kWorkspaceMaxBlocks + 1> blocks{};
    std::size_t n = 0;
    void add(WorkspaceBlock b) noexcept { blocks[n++] = b; }
    std::size_t free_all() noexcept {
      std::size_t bytes = 0;
      for (std::size_t i = 0; i < n; ++i) {
        unpoison(blocks[i]);
        std::free(blocks[i].p);
        bytes += blocks[i].bytes;
      }
      return bytes;
    }
  };

  WorkspacePool() = default;

  // Idle blocks are poisoned under AddressSanitizer (see the top comment; core/asan.hpp).
  static void poison(WorkspaceBlock b) noexcept { asan_poison(b.p, b.bytes); }
  static void unpoison(WorkspaceBlock b) noexcept { asan_unpoison(b.p, b.bytes); }

  static WorkspaceBlock allocate_block(std::size_t bytes) {
    const bool huge = bytes >= kHugeBytes;
    const std::size_t align = huge ? kHugeBytes : kAlign;
    if (bytes > SIZE_MAX - align) throw std::bad_alloc();  // the rounding below would wrap
    const std::size_t rounded = (bytes + align - 1) / align * align;  // aligned_alloc's rule
    void* p = std::aligned_alloc(align, rounded);
    if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (huge) ::madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure changes nothing
#endif
    return {p, rounded};
  }

  // The idle list is sorted by size, ascending; it has room for one block past the cap.
  void insert_idle(WorkspaceBlock b) noexcept {
    std::size_t i = idle_count_;
    for (; i > 0 && idle_[i - 1].bytes > b.bytes; --i) idle_[i] = idle_[i - 1];
    idle_[i] = b;
    ++idle_count_;
    idle_bytes_ += b.bytes;
  }
  void erase_idle(std::size_t i) noexcept {
    idle_bytes_ -= idle_[i].bytes;
    for (; i + 1 < idle_count_; ++i) idle_[i] = idle_[i + 1];
    --idle_count_;
  }
  // Takes the smallest idle blocks off the list until the caps hold (the lock held).
  void evict_past_caps(Evicted& evicted) noexcept {
    while (idle_count_ > 0 && (idle_count_ > kWorkspaceMaxBlocks || idle_bytes_ > limit_)) {
      evicted.add(idle_[0]);
      erase_idle(0);
    }
  }

  mutable std::mutex mu_;
  std::array<WorkspaceBlock, kWorkspaceMaxBlocks + 1> idle_{};
  std::size_t idle_count_ = 0, idle_bytes_ = 0, in_use_ = 0;
  std::size_t limit_ = kDefaultWorkspaceLimit;
  std::uint64_t reuses_ = 0, allocations_ = 0;
};

}  // namespace detail

/// What the workspace retains and has done (WorkspaceStats).
inline WorkspaceStats workspace_stats() {
  return detail::WorkspacePool::instance().stats();
}

/// Frees every block the workspace retains (blocks in use stay with their buffers and are
/// retained again when given back, within the cap). Returns the bytes freed.
inline std::size_t release_workspace() noexcept {
  return detail::WorkspacePool::instance().release();
}

/// Sets the cap on the bytes the workspace retains (default kDefaultWorkspaceLimit); retained
/// blocks past the new cap are freed now, smallest first. 0 turns retention off.
inline void set_workspace_limit(std::size_t bytes) noexcept {
  detail::WorkspacePool::instance().set_limit(bytes);
}

}  // namespace polyattn
