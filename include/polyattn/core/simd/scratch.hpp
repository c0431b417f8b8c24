// polyattn/core/simd/scratch.hpp — per-work-item scratch memory for kernels in per-ISA units:
//   Scratch<T> buf(n)   n zero-initialised T, given back at scope exit (buf.data())
//   Scratch<T> buf(n, uninitialized)   the same, contents undefined (for memory the kernel
//                       writes before it reads: no pass over it per work item)
//   align64(p)          p moved up to the next 64-byte boundary (allocate 64 bytes to spare)
// Kernels use Scratch rather than std::vector: where the inliner leaves a vector member out of
// line (ASan builds do), it would be a std:: symbol shared by every ISA's unit (see "Mixing ISA
// flags" in dispatch.hpp); these live in the per-ISA namespace.
// Scratch objects are scoped, so they nest last-in first-out: each takes the next 64-byte aligned
// bytes of its thread's arena and gives them back at scope exit. The arena keeps its memory for
// the thread's life, grown (between work items, when nothing is taken) to the largest nesting
// seen, up to kScratchArenaMax bytes; a request past what the arena holds comes from the heap.
// Work items therefore do not allocate: glibc gives the top of its heap back to the OS when more
// than 128 KB is free there, and the amx softmax items (about 150 KB of scratch each) faulted
// five pages in again per item (measured), a few percent of a one-thread prefill. Under
// AddressSanitizer the arena's free bytes are poisoned, so reads past a Scratch are still caught.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

#include "polyattn/core/asan.hpp"
#include "polyattn/core/simd/arch.hpp"

namespace polyattn::simd {
inline namespace POLYATTN_ISA_NS {

struct Uninitialized {};
inline constexpr Uninitialized uninitialized{};

// Bytes an arena may hold; larger nestings take the excess from the heap.
inline constexpr std::size_t kScratchArenaMax = std::size_t{8} << 20;

// One thread's scratch stack: [base, base + top) is taken, [top, cap) free; want is the largest
// nesting asked for, to which the arena grows when top is 0.
class ScratchArena {
 public:
  ScratchArena() = default;
  ScratchArena(const ScratchArena&) = delete;
  ScratchArena& operator=(const ScratchArena&) = delete;
  ~ScratchArena() { std::free(base_); }

  // bytes (a multiple of 64) from the arena, or null when it does not hold them.
  void* take(std::size_t bytes) noexcept {
    want_ = std::min(std::max(want_, top_ + bytes), kScratchArenaMax);
    if (top_ == 0 && want_ > cap_) grow();
    if (top_ + bytes > cap_) return nullptr;
    void* p = base_ + top_;
    top_ += bytes;
    asan_unpoison(p, bytes);
    return p;
  }
  // Gives back the last bytes taken at p.
  void give_back(void* p, std::size_t bytes) noexcept {
    top_ -= bytes;
    asan_poison(p, bytes);
  }

 private:
  void grow() noexcept {
    std::free(base_);
    base_ = static_cast<std::byte*>(std::aligned_alloc(64, want_));
    cap_ = base_ != nullptr ? want_ : 0;
    asan_poison(base_, cap_);
  }
  std::byte* base_ = nullptr;
  std::size_t cap_ = 0, top_ = 0, want_ = 0;
};

inline thread_local ScratchArena scratch_arena;

template <class T>
  requires std::is_trivially_default_constructible_v<T> && std::is_trivially_destructible_v<T>
class Scratch {
 public:
  explicit Scratch(std::size_t n) : Scratch(n, Uninitialized{}) {
    std::memset(static_cast<void*>(p_), 0, n * sizeof(T));
  }
  Scratch(std::size_t n, Uninitialized)
      : bytes_((std::max<std::size_t>(n, 1) * sizeof(T) + 63) / 64 * 64) {
    void* p = scratch_arena.take(bytes_);
    arena_ = p != nullptr;
    if (!arena_) p = ::operator new(bytes_, std::align_val_t{64});
    p_ = static_cast<T*>(p);
  }
  ~Scratch() {
    if (arena_)
      scratch_arena.give_back(p_, bytes_);
    else
      ::operator delete(p_, std::align_val_t{64});
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* data() const noexcept { return p_; }

 private:
  std::size_t bytes_;
  T* p_;
  bool arena_;
};

template <class T>
inline T* align64(T* p) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  return reinterpret_cast<T*>((a + 63) & ~std::uintptr_t{63});
}

}  // namespace POLYATTN_ISA_NS
}  // namespace polyattn::simd
