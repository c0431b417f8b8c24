// polyattn/core/buffer.hpp — Buffer<T>: memory for n elements of a trivial type, left
// uninitialised, taken from the process-wide workspace (workspace.hpp) and given back to it.
// For operands a kernel packs in parallel and overwrites entirely: a std::vector would first
// value-initialise them on the calling thread, a serial pass over everything (64 MiB of packed K
// and V for one causal softmax prefill B1 H16 T4096 D128, about 10 ms of a 100 ms call on 16
// threads), and fault every page in on that one thread.
//   b.allocate(n)   n elements, contents undefined (the previous block is given back first)
//   b.data(), b.size()   data() is aligned to 64 bytes (whole cache lines) at least, to 2 MiB
//                        with transparent huge pages from 2 MiB on (workspace.hpp)
//   b.reset()       gives the block back now (the destructor does too)
// The workspace retains given-back blocks (within its cap) for the next Buffer: the softmax
// prefill packs K and V into buffers on every call, and fresh ones would fault every page in
// again (first-touch clearing of every 2 MiB page, ~5% of a causal fp32 prefill B1 H16 T4096 D128
// on one thread of the dev VM, perf).
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

#include "polyattn/core/workspace.hpp"

namespace polyattn {

template <class T>
  requires std::is_trivially_default_constructible_v<T> && std::is_trivially_destructible_v<T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& other) noexcept
      : block_(std::exchange(other.block_, {})), size_(std::exchange(other.size_, 0)) {}
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) {
      reset();
      block_ = std::exchange(other.block_, {});
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~Buffer() { reset(); }

  void allocate(std::size_t n) {
    reset();
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
    block_ = detail::WorkspacePool::instance().acquire((n == 0 ? 1 : n) * sizeof(T));
    size_ = n;
  }
  void reset() noexcept {
    if (block_.p != nullptr) detail::WorkspacePool::instance().give_back(block_);
    block_ = {};
    size_ = 0;
  }
  T* data() noexcept { return static_cast<T*>(block_.p); }
  const T* data() const noexcept { return static_cast<const T*>(block_.p); }
  std::size_t size() const noexcept { return size_; }

 private:
  detail::WorkspaceBlock block_;
  std::size_t size_ = 0;
};

}  // namespace polyattn
