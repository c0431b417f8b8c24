// polyattn/linear/stages/rows.hpp — q, k, v rows into the kernels' fp32 buffers and o rows out
// of them, for the element types fp32, bf16 and fp16 (core/element.hpp).
//
//   InRows{data, stride, type}    row t: the elements at data + t·stride (elements of type)
//   OutRows{data, stride, type}   likewise, writable
//   rows_from<A>(x, t0)           the same rows starting at row t0 (a chunk's first token)
//   row_f32<A>(x, t, buf, n)      row t as fp32: in place when x is fp32 (no copy), else its n
//                                 elements converted into buf (simd::convert<A>, exact)
//   load_row<A>(x, t, dst, n)     row t converted (copied when fp32) into dst
//   out_row<A>(o, t, buf)         where to compute output row t: in place when o is fp32, else buf
//   finish_row<A>(o, t, buf, n)   stores buf rounded to o's type (nearest even) unless o is fp32
//   prefetch_row<A>(x, t, n)      requests row t's cache lines (for writing when x is OutRows):
//                                 a head's rows lie H·K elements apart, a stride the hardware
//                                 prefetchers do not follow across pages, so a token loop that
//                                 does not ask ahead waits for memory on every row
// The element type is switched on once per row; everything between a load and a store is fp32
// arithmetic on the kernels' buffers. Every helper is a template on the Arch tag (no
// ISA-independent symbol in the per-ISA units).
#pragma once

#include <algorithm>
#include <type_traits>

#include "polyattn/core/element.hpp"
#include "polyattn/core/simd/convert.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::linear::stages {

struct InRows {
  const void* data = nullptr;
  index_t stride = 0;  // in elements of type
  Dtype type = Dtype::f32;
};

struct OutRows {
  void* data = nullptr;
  index_t stride = 0;
  Dtype type = Dtype::f32;
};

namespace detail {
template <simd::SimdArch A, class P>
P advance(P data, index_t rows, index_t stride, Dtype type) noexcept {
  if (data == nullptr) return data;  // absent (e.g. no o in the chunk-parallel first phase)
  using Byte = std::conditional_t<std::is_const_v<std::remove_pointer_t<P>>, const char, char>;
  return static_cast<Byte*>(data) + rows * stride * static_cast<index_t>(element_size(type));
}
}  // namespace detail

template <simd::SimdArch A>
InRows rows_from(const InRows& x, index_t t0) noexcept {
  return {detail::advance<A>(x.data, t0, x.stride, x.type), x.stride, x.type};
}
template <simd::SimdArch A>
OutRows rows_from(const OutRows& x, index_t t0) noexcept {
  return {detail::advance<A>(x.data, t0, x.stride, x.type), x.stride, x.type};
}

template <simd::SimdArch A>
void load_row(const InRows& x, index_t t, float* dst, index_t n) noexcept {
  const index_t off = t * x.stride;
  switch (x.type) {
    case Dtype::bf16:
      simd::convert<A>(static_cast<const bf16*>(x.data) + off, dst, n);
      return;
    case Dtype::f16:
      simd::convert<A>(static_cast<const f16*>(x.data) + off, dst, n);
      return;
    default: {
      const float* s = static_cast<const float*>(x.data) + off;
      std::copy(s, s + n, dst);
    }
  }
}

template <simd::SimdArch A>
const float* row_f32(const InRows& x, index_t t, float* buf, index_t n) noexcept {
  if (x.type == Dtype::f32) return static_cast<const float*>(x.data) + t * x.stride;
  load_row<A>(x, t, buf, n);
  return buf;
}

template <simd::SimdArch A>
float* out_row(const OutRows& o, index_t t, float* buf) noexcept {
  return o.type == Dtype::f32 ? static_cast<float*>(o.data) + t * o.stride : buf;
}

template <simd::SimdArch A>
void finish_row(const OutRows& o, index_t t, const float* buf, index_t n) noexcept {
  const index_t off = t * o.stride;
  switch (o.type) {
    case Dtype::bf16:
      simd::convert<A>(buf, static_cast<bf16*>(o.data) + off, n);
      return;
    case Dtype::f16:
      simd::convert<A>(buf, static_cast<f16*>(o.data) + off, n);
      return;
    default:
      return;  // computed in place
  }
}

template <simd::SimdArch A>
POLYATTN_ALWAYS_INLINE void prefetch_row(const InRows& x, index_t t, index_t n) noexcept {
  if (x.data == nullptr) return;
  const auto size = static_cast<index_t>(element_size(x.type));
  simd::prefetch<A>(static_cast<const char*>(x.data) + t * x.stride * size, n * size);
}
template <simd::SimdArch A>
POLYATTN_ALWAYS_INLINE void prefetch_row(const OutRows& x, index_t t, index_t n) noexcept {
  if (x.data == nullptr) return;
  const auto size = static_cast<index_t>(element_size(x.type));
  simd::prefetch<A, true>(static_cast<const char*>(x.data) + t * x.stride * size, n * size);
}

}  // namespace polyattn::linear::stages
