// tests/core/dispatch_probe.hpp — a kernel-shaped functor for the dispatch tests, written the
// way dispatch.hpp documents: operator() is a non-inline template, declared extern for every
// arch unit and instantiated in dispatch_probe_unit.cpp once per ISA.
#pragma once

#include <cstddef>
#include <cstdint>

#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/simd/ops.hpp"

namespace polyattn::test {

struct ProbeResult {
  simd::Isa isa;
  const char* name;
  std::size_t width;
  float sum;
};

struct Probe {
  using result_type = ProbeResult;
  const float* x = nullptr;
  std::int64_t n = 0;
  template <simd::SimdArch A>
  ProbeResult operator()(A) const;
};

template <simd::SimdArch A>
ProbeResult Probe::operator()(A) const {
  return {simd::isa_of<A>, A::name(), simd::batch_t<A>::size, simd::sum<A>(x, n)};
}

}  // namespace polyattn::test

#define POLYATTN_TEST_PROBE_KERNELS(X) X(::polyattn::test::Probe)
POLYATTN_TEST_PROBE_KERNELS(POLYATTN_KERNEL_EXTERN)
