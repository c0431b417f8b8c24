// tests/core/simd_ops_under_test.hpp — the SIMD operations under test, for one Arch, as
// out-of-line static members of SimdOps<Arch>. The generic test TU only sees the extern template
// declarations; each arch unit (simd_ops_unit.cpp, compiled once per ISA by
// polyattn_add_arch_units) instantiates SimdOps for its own ISA. Units hold no test registration
// or gtest code: only the code under test runs with the unit's ISA flags.
#pragma once

#include <cstddef>
#include <cstdint>

#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/simd/ops.hpp"

namespace polyattn::test {

template <simd::SimdArch A>
struct SimdOps {
  static std::size_t width();
  static float dot(const float* a, const float* b, std::int64_t n);
  static float sum(const float* x, std::int64_t n);
  static float max(const float* x, std::int64_t n);
  static void axpy(float alpha, const float* x, float* y, std::int64_t n);
  static void scale(float alpha, float* x, std::int64_t n);
  static void exp(const float* x, float* out, std::int64_t n);
  static void exp_inplace(float* x, std::int64_t n);
  // out[i] = simd::exp2 of x[i], batch by batch (the tail through a zero-padded batch).
  static void exp2(const float* x, float* out, std::int64_t n);
  // One batch each (width() floats): fma(a,b,c), exp(a), max(a,b), max_nan(a,b) lane-wise;
  // red = {reduce_add(a), reduce_max(a)}.
  static void batch_ops(const float* a, const float* b, const float* c, float* fma_out,
                        float* exp_out, float* max_out, float* max_nan_out, float* red);
  // out[i] = reduce_add_rows(rows)[i]: the sum of row i of a width() × width() matrix.
  static void reduce_rows(const float* rows, float* out);
};

template <simd::SimdArch A>
std::size_t SimdOps<A>::width() {
  return simd::batch_t<A>::size;
}
template <simd::SimdArch A>
float SimdOps<A>::dot(const float* a, const float* b, std::int64_t n) {
  return simd::dot<A>(a, b, n);
}
template <simd::SimdArch A>
float SimdOps<A>::sum(const float* x, std::int64_t n) {
  return simd::sum<A>(x, n);
}
template <simd::SimdArch A>
float SimdOps<A>::max(const float* x, std::int64_t n) {
  return simd::max<A>(x, n);
}
template <simd::SimdArch A>
void SimdOps<A>::axpy(float alpha, const float* x, float* y, std::int64_t n) {
  simd::axpy<A>(alpha, x, y, n);
}
template <simd::SimdArch A>
void SimdOps<A>::scale(float alpha, float* x, std::int64_t n) {
  simd::scale<A>(alpha, x, n);
}
template <simd::SimdArch A>
void SimdOps<A>::exp(const float* x, float* out, std::int64_t n) {
  simd::exp<A>(x, out, n);
}
template <simd::SimdArch A>
void SimdOps<A>::exp_inplace(float* x, std::int64_t n) {
  simd::exp_inplace<A>(x, n);
}
template <simd::SimdArch A>
void SimdOps<A>::exp2(const float* x, float* out, std::int64_t n) {
  using B = simd::batch_t<A>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  for (std::int64_t i = 0; i < n; i += W) {
    float in[W] = {}, res[W];
    for (std::int64_t j = 0; j < W && i + j < n; ++j) in[j] = x[i + j];
    simd::exp2(B::load_unaligned(in)).store_unaligned(res);
    for (std::int64_t j = 0; j < W && i + j < n; ++j) out[i + j] = res[j];
  }
}
template <simd::SimdArch A>
void SimdOps<A>::batch_ops(const float* a, const float* b, const float* c, float* fma_out,
                           float* exp_out, float* max_out, float* max_nan_out, float* red) {
  using B = simd::batch_t<A>;
  const B va = B::load_unaligned(a), vb = B::load_unaligned(b), vc = B::load_unaligned(c);
  simd::fma(va, vb, vc).store_unaligned(fma_out);
  simd::exp(va).store_unaligned(exp_out);
  simd::max(va, vb).store_unaligned(max_out);
  simd::max_nan(va, vb).store_unaligned(max_nan_out);
  red[0] = simd::reduce_add(va);
  red[1] = simd::reduce_max(va);
}
template <simd::SimdArch A>
void SimdOps<A>::reduce_rows(const float* rows, float* out) {
  using B = simd::batch_t<A>;
  B r[B::size];
  for (std::size_t i = 0; i < B::size; ++i) r[i] = B::load_unaligned(rows + i * B::size);
  simd::reduce_add_rows(r).store_unaligned(out);
}

}  // namespace polyattn::test

// SimdOps is a class of static functions rather than a kernel functor, so its explicit
// instantiation declarations are spelled out here, one per unit the target has.
#if defined(POLYATTN_UNIT_AVX512)
extern template struct polyattn::test::SimdOps<polyattn::simd::avx512>;
#endif
#if defined(POLYATTN_UNIT_AVX2)
extern template struct polyattn::test::SimdOps<polyattn::simd::avx2>;
#endif
#if defined(POLYATTN_UNIT_SSE42)
extern template struct polyattn::test::SimdOps<polyattn::simd::sse42>;
#endif
#if defined(POLYATTN_UNIT_NEON)
extern template struct polyattn::test::SimdOps<polyattn::simd::neon>;
#endif
#if defined(POLYATTN_UNIT_SCALAR)
extern template struct polyattn::test::SimdOps<polyattn::simd::scalar_arch>;
#endif
