// polyattn/core/tensor_view.hpp — non-owning strided views over caller memory.
//
// TensorView<T, R> is a pointer plus R sizes and R strides (in elements, may be any
// non-negative value), so element (i0,...,iR-1) lives at data + Σ i_k·stride_k.
// Activations are always *indexed* as [B, T, H, D]; head-first memory [B, H, T, D] is
// expressed by strides (see head_first()), never by copying. Recurrent states are
// [B, H, K, V]. A default-constructed view is "absent" (used for optional arguments): null data
// and every size 0. A view with null data and some size 0 is an empty tensor, not absent (an
// empty std::vector's data() may be null). The factories below compute strides with overflow
// checks (core/extent.hpp); validators check every view's element count and furthest offset.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "polyattn/core/extent.hpp"

namespace polyattn {

using index_t = std::int64_t;

namespace detail {
// The layout arithmetic shared by TensorView and ElementView (element_view.hpp).
template <std::size_t R>
constexpr bool all_sizes_zero(const std::array<index_t, R>& shape) noexcept {
  for (index_t s : shape)
    if (s != 0) return false;
  return true;
}
template <std::size_t R>
constexpr index_t element_count(const std::array<index_t, R>& shape) noexcept {
  index_t n = 1;
  for (index_t s : shape) n *= s;
  return n;
}
template <std::size_t R, class... I>
constexpr index_t strided_offset(const std::array<index_t, R>& strides, I... idx) noexcept {
  const std::array<index_t, R> i{static_cast<index_t>(idx)...};
  index_t o = 0;
  for (std::size_t k = 0; k < R; ++k) o += i[k] * strides[k];
  return o;
}
}  // namespace detail

template <class T, std::size_t Rank>
class TensorView {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using shape_type = std::array<index_t, Rank>;
  static constexpr std::size_t rank = Rank;

  constexpr TensorView() = default;
  constexpr TensorView(T* data, const shape_type& shape, const shape_type& strides)
      : data_(data), shape_(shape), strides_(strides) {}

  // Row-major (C order) view of contiguous memory. @throws polyattn::Error ("shape") when the
  // strides overflow int64.
  static constexpr TensorView contiguous(T* data, const shape_type& shape) {
    return TensorView(data, shape, extent::row_major_strides(shape));
  }

  // A const view of the same memory.
  constexpr operator TensorView<const T, Rank>() const  // NOLINT(google-explicit-constructor)
    requires(!std::is_const_v<T>)
  {
    return TensorView<const T, Rank>(data_, shape_, strides_);
  }

  constexpr T* data() const noexcept { return data_; }
  constexpr const shape_type& shape() const noexcept { return shape_; }
  constexpr const shape_type& strides() const noexcept { return strides_; }
  constexpr index_t size(std::size_t dim) const noexcept { return shape_[dim]; }
  constexpr index_t stride(std::size_t dim) const noexcept { return strides_[dim]; }
  // True for a default-constructed (absent optional) view: null data, every size 0.
  constexpr bool absent() const noexcept {
    return data_ == nullptr && detail::all_sizes_zero(shape_);
  }

  constexpr index_t numel() const noexcept { return detail::element_count(shape_); }

  // Offset in elements of an index tuple; no bounds checks (validation happens up front).
  template <class... I>
    requires(sizeof...(I) == Rank && (std::is_integral_v<I> && ...))
  constexpr index_t offset(I... idx) const noexcept {
    return detail::strided_offset(strides_, idx...);
  }
  template <class... I>
  constexpr T* ptr(I... idx) const noexcept {
    return data_ + offset(idx...);
  }
  template <class... I>
  constexpr T& operator()(I... idx) const noexcept {
    return data_[offset(idx...)];
  }

  // True when the innermost dimension is unit-stride (SIMD-friendly rows).
  constexpr bool inner_contiguous() const noexcept { return Rank == 0 || strides_[Rank - 1] == 1; }

 private:
  T* data_ = nullptr;
  shape_type shape_{};
  shape_type strides_{};
};

template <class T>
using View4 = TensorView<T, 4>;
template <class T>
using View3 = TensorView<T, 3>;
template <class T>
using View1 = TensorView<T, 1>;

/// [B,T,H,D] view of contiguous token-major memory (the fla / Hugging Face layout).
template <class T>
constexpr View4<T> bthd(T* data, index_t B, index_t T_, index_t H, index_t D) {
  return View4<T>::contiguous(data, {B, T_, H, D});
}

/// [B,T,H,D] view of contiguous head-first memory laid out as [B,H,T,D].
template <class T>
constexpr View4<T> head_first(T* data, index_t B, index_t T_, index_t H, index_t D) {
  const index_t head = extent::mul("shape", T_, D, "head-first stride T*D");
  const index_t batch = extent::mul("shape", H, head, "head-first stride H*T*D");
  return View4<T>(data, {B, T_, H, D}, {batch, D, head, 1});
}

/// [B,H,K,V] view of a contiguous recurrent state.
template <class T>
constexpr View4<T> bhkv(T* data, index_t B, index_t H, index_t K, index_t V) {
  return View4<T>::contiguous(data, {B, H, K, V});
}

/// [B,T,H] view of contiguous per-token, per-head scalars (scalar gates, beta).
template <class T>
constexpr View3<T> bth(T* data, index_t B, index_t T_, index_t H) {
  return View3<T>::contiguous(data, {B, T_, H});
}

}  // namespace polyattn
