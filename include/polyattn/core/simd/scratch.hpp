// polyattn/core/simd/scratch.hpp — per-work-item scratch memory for kernels in per-ISA units:
//   Scratch<T> buf(n)   n zero-initialised T, freed at scope exit (buf.data())
//   Scratch<T> buf(n, uninitialized)   the same, contents undefined (for memory the kernel
//                       writes before it reads: no pass over it per work item)
//   align64(p)          p moved up to the next 64-byte boundary (allocate 64 bytes to spare)
// Kernels use Scratch rather than std::vector: where the inliner leaves a vector member out of
// line (ASan builds do), it would be a std:: symbol shared by every ISA's unit (see "Mixing ISA
// flags" in dispatch.hpp); these live in the per-ISA namespace.
#pragma once

#include <cstddef>
#include <cstdint>

#include "polyattn/core/simd/arch.hpp"

namespace polyattn::simd {
inline namespace POLYATTN_ISA_NS {

struct Uninitialized {};
inline constexpr Uninitialized uninitialized{};

template <class T>
class Scratch {
 public:
  explicit Scratch(std::size_t n) : p_(new T[n]()) {}
  Scratch(std::size_t n, Uninitialized) : p_(new T[n]) {}
  ~Scratch() { delete[] p_; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* data() const noexcept { return p_; }

 private:
  T* p_;
};

template <class T>
inline T* align64(T* p) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  return reinterpret_cast<T*>((a + 63) & ~std::uintptr_t{63});
}

}  // namespace POLYATTN_ISA_NS
}  // namespace polyattn::simd
