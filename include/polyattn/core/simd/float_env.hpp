// polyattn/core/simd/float_env.hpp — kernels run with subnormal numbers flushed to zero.
//
// Decays that underflow (log-gates of −10 per token in a chunk of 16, or −80 per token in the
// recurrence) make products land in the subnormal range, where x86 cores take a microcode assist
// per operation: 5–30× slower kernels for results that are zero to fp32 accuracy anyway.
// FlushSubnormals sets, for its lifetime on the calling thread,
//   x86:     MXCSR.FTZ (bit 15, subnormal results become ±0) and MXCSR.DAZ (bit 6, subnormal
//            inputs read as ±0);
//   AArch64: FPCR.FZ (bit 24, both);
// and restores the caller's value on exit (also when an exception leaves). simd::run_kernel holds
// one around every kernel, so every ISA and every thread computes under the same rule, and the
// caller's floating-point environment is never changed. Any value below 2^−126 ≈ 1.2e−38 is then
// zero: far below the fp32 bounds of docs/conventions.md §9.
#pragma once

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <xmmintrin.h>
#define POLYATTN_FLOAT_ENV_X86 1
#elif defined(__aarch64__)
#define POLYATTN_FLOAT_ENV_ARM64 1
#endif

namespace polyattn::simd {

class FlushSubnormals {
 public:
#if defined(POLYATTN_FLOAT_ENV_X86)
  static constexpr unsigned kBits = 0x8040u;  // FTZ | DAZ
  FlushSubnormals() noexcept : saved_(_mm_getcsr()) {
    if ((saved_ & kBits) != kBits) _mm_setcsr(saved_ | kBits);
  }
  ~FlushSubnormals() {
    if ((saved_ & kBits) != kBits) _mm_setcsr(saved_);
  }

 private:
  unsigned saved_;
#elif defined(POLYATTN_FLOAT_ENV_ARM64)
  static constexpr unsigned long kBits = 1ul << 24;  // FZ
  FlushSubnormals() noexcept {
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved_));
    if ((saved_ & kBits) == 0) __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_ | kBits));
  }
  ~FlushSubnormals() {
    if ((saved_ & kBits) == 0) __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_));
  }

 private:
  unsigned long saved_;
#else
  FlushSubnormals() noexcept = default;  // other targets: the hardware's default
#endif

 public:
  FlushSubnormals(const FlushSubnormals&) = delete;
  FlushSubnormals& operator=(const FlushSubnormals&) = delete;
};

}  // namespace polyattn::simd
