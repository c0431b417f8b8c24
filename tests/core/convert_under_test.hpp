// tests/core/convert_under_test.hpp — the element conversions of simd/convert.hpp for one Arch,
// as out-of-line static members of ConvertOps<Arch>; convert_unit.cpp instantiates them once per
// ISA (compiled with that ISA's flags), the test TU only sees the declarations.
#pragma once

#include <cstdint>

#include "polyattn/core/element.hpp"
#include "polyattn/core/simd/convert.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/simd/float_env.hpp"

namespace polyattn::test {

template <simd::SimdArch A>
struct ConvertOps {
  // dst = src converted, n elements, under the kernels' floating-point environment (FTZ / DAZ).
  static void widen(const bf16* src, float* dst, std::int64_t n);
  static void widen(const f16* src, float* dst, std::int64_t n);
  static void widen(const std::int8_t* src, float* dst, std::int64_t n);
  static void narrow(const float* src, bf16* dst, std::int64_t n);
  static void narrow(const float* src, f16* dst, std::int64_t n);
  static void cross(const bf16* src, f16* dst, std::int64_t n);
};

template <simd::SimdArch A>
void ConvertOps<A>::widen(const bf16* src, float* dst, std::int64_t n) {
  const simd::FlushSubnormals env;
  simd::convert<A>(src, dst, n);
}
template <simd::SimdArch A>
void ConvertOps<A>::widen(const f16* src, float* dst, std::int64_t n) {
  const simd::FlushSubnormals env;
  simd::convert<A>(src, dst, n);
}
template <simd::SimdArch A>
void ConvertOps<A>::widen(const std::int8_t* src, float* dst, std::int64_t n) {
  const simd::FlushSubnormals env;
  simd::convert<A>(src, dst, n);
}
template <simd::SimdArch A>
void ConvertOps<A>::narrow(const float* src, bf16* dst, std::int64_t n) {
  const simd::FlushSubnormals env;
  simd::convert<A>(src, dst, n);
}
template <simd::SimdArch A>
void ConvertOps<A>::narrow(const float* src, f16* dst, std::int64_t n) {
  const simd::FlushSubnormals env;
  simd::convert<A>(src, dst, n);
}
template <simd::SimdArch A>
void ConvertOps<A>::cross(const bf16* src, f16* dst, std::int64_t n) {
  const simd::FlushSubnormals env;
  simd::convert<A>(src, dst, n);
}

}  // namespace polyattn::test

// Explicit instantiation declarations, one per unit the target has (convert_unit.cpp).
#if defined(POLYATTN_UNIT_AVX512)
extern template struct polyattn::test::ConvertOps<polyattn::simd::avx512>;
#endif
#if defined(POLYATTN_UNIT_AVX2)
extern template struct polyattn::test::ConvertOps<polyattn::simd::avx2>;
#endif
#if defined(POLYATTN_UNIT_SSE42)
extern template struct polyattn::test::ConvertOps<polyattn::simd::sse42>;
#endif
#if defined(POLYATTN_UNIT_NEON)
extern template struct polyattn::test::ConvertOps<polyattn::simd::neon>;
#endif
#if defined(POLYATTN_UNIT_SCALAR)
extern template struct polyattn::test::ConvertOps<polyattn::simd::scalar_arch>;
#endif
