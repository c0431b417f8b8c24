// polyattn/core/buffer.hpp — Buffer<T>: memory for n elements of a trivial type, left
// uninitialised. For operands a kernel packs in parallel and overwrites entirely: a
// std::vector would first value-initialise them on the calling thread, a serial pass over
// everything (128 MB of packed K and V for one causal softmax prefill B1 H16 T4096 D128, about
// 10 ms of a 100 ms call on 16 threads), and fault every page in on that one thread.
//   b.allocate(n)   n elements, contents undefined (previous ones are released)
//   b.data(), b.size()
#pragma once

#include <cstddef>
#include <memory>
#include <type_traits>

namespace polyattn {

template <class T>
  requires std::is_trivially_default_constructible_v<T> && std::is_trivially_destructible_v<T>
class Buffer {
 public:
  void allocate(std::size_t n) {
    data_ = std::make_unique_for_overwrite<T[]>(n);
    size_ = n;
  }
  T* data() noexcept { return data_.get(); }
  const T* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }

 private:
  std::unique_ptr<T[]> data_;
  std::size_t size_ = 0;
};

}  // namespace polyattn
