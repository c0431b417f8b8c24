// polyattn/core/element_view.hpp — a strided view whose element type (fp32, bf16, fp16) is
// known at run time: the argument type of q, k, v and o in the operators that take any of them.
//
//   ElementView<R>     read-only, from TensorView<const T, R> or TensorView<T, R>
//   MutElementView<R>  writable, from TensorView<T, R>
// for T in {float, bf16, f16}; both convert implicitly, so callers keep passing typed views
// (bthd(ptr, …) of a bf16 pointer gives a bf16 view) and an operator sees one argument type.
// They keep TensorView's shape / stride / offset interface (strides in elements of the view's
// type). Kernels recover the typed view with visit(f), which calls f(TensorView<const T, R>)
// (f(TensorView<T, R>) for MutElementView) for the actual T, so a kernel is instantiated once
// per element type at its packing / loading boundary, not per element. Element access by index,
// operator()(i…), returns the value as float (and load / store through MutElementView convert
// with round to nearest even) for the scalar paths that read a few values.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "polyattn/core/element.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn {

namespace detail {

// The common part: untyped pointer, element type, shape and strides.
template <bool Mutable, std::size_t R>
class ElementViewBase {
 public:
  using pointer = std::conditional_t<Mutable, void*, const void*>;
  using shape_type = std::array<index_t, R>;
  static constexpr std::size_t rank = R;

  constexpr ElementViewBase() = default;
  constexpr ElementViewBase(pointer data, Dtype dtype, const shape_type& shape,
                            const shape_type& strides)
      : data_(data), dtype_(dtype), shape_(shape), strides_(strides) {}

  constexpr pointer data() const noexcept { return data_; }
  constexpr Dtype dtype() const noexcept { return dtype_; }
  constexpr std::size_t element_size() const noexcept { return polyattn::element_size(dtype_); }
  constexpr const shape_type& shape() const noexcept { return shape_; }
  constexpr const shape_type& strides() const noexcept { return strides_; }
  constexpr index_t size(std::size_t d) const noexcept { return shape_[d]; }
  constexpr index_t stride(std::size_t d) const noexcept { return strides_[d]; }
  constexpr bool absent() const noexcept {
    return data_ == nullptr && detail::all_sizes_zero(shape_);
  }
  constexpr index_t numel() const noexcept { return detail::element_count(shape_); }
  constexpr bool inner_contiguous() const noexcept { return R == 0 || strides_[R - 1] == 1; }
  template <class... I>
    requires(sizeof...(I) == R && (std::is_integral_v<I> && ...))
  constexpr index_t offset(I... idx) const noexcept {
    return detail::strided_offset(strides_, idx...);
  }
  template <Element T>
  constexpr bool is() const noexcept {
    return dtype_ == dtype_of<T>;
  }

  /// The typed view; precondition: is<T>() (checked by the operators' validation).
  template <Element T>
  constexpr TensorView<std::conditional_t<Mutable, T, const T>, R> as() const noexcept {
    using P = std::conditional_t<Mutable, T*, const T*>;
    return {static_cast<P>(data_), shape_, strides_};
  }

  /// f(as<T>()) for the view's element type T; returns what f returns (the same type for all).
  template <class F>
  constexpr decltype(auto) visit(F&& f) const {
    switch (dtype_) {
      case Dtype::bf16:
        return std::forward<F>(f)(as<bf16>());
      case Dtype::f16:
        return std::forward<F>(f)(as<f16>());
      default:
        return std::forward<F>(f)(as<float>());
    }
  }

  /// The element at an index tuple, as float (no bounds checks).
  template <class... I>
  constexpr float operator()(I... idx) const noexcept {
    const index_t o = offset(idx...);
    switch (dtype_) {
      case Dtype::bf16:
        return to_float(static_cast<const bf16*>(data_)[o]);
      case Dtype::f16:
        return to_float(static_cast<const f16*>(data_)[o]);
      default:
        return static_cast<const float*>(data_)[o];
    }
  }

 protected:
  pointer data_ = nullptr;
  Dtype dtype_ = Dtype::f32;
  shape_type shape_{};
  shape_type strides_{};
};

}  // namespace detail

/// A read-only view of fp32, bf16 or fp16 elements (see the header comment).
template <std::size_t R>
class ElementView : public detail::ElementViewBase<false, R> {
  using Base = detail::ElementViewBase<false, R>;

 public:
  constexpr ElementView() = default;
  template <Element T>
  constexpr ElementView(const TensorView<const T, R>& v)  // NOLINT(google-explicit-constructor)
      : Base(v.data(), dtype_of<T>, v.shape(), v.strides()) {}
  template <Element T>
  constexpr ElementView(const TensorView<T, R>& v)  // NOLINT(google-explicit-constructor)
      : Base(v.data(), dtype_of<T>, v.shape(), v.strides()) {}
};

/// A writable view of fp32, bf16 or fp16 elements (see the header comment).
template <std::size_t R>
class MutElementView : public detail::ElementViewBase<true, R> {
  using Base = detail::ElementViewBase<true, R>;

 public:
  constexpr MutElementView() = default;
  template <Element T>
  constexpr MutElementView(const TensorView<T, R>& v)  // NOLINT(google-explicit-constructor)
      : Base(v.data(), dtype_of<T>, v.shape(), v.strides()) {}

  /// The same memory, read-only.
  constexpr operator ElementView<R>() const {  // NOLINT(google-explicit-constructor)
    return this->visit([](auto v) { return ElementView<R>(v); });
  }

  /// Stores x, rounded to the element type (nearest even), at an index tuple.
  template <class... I>
  constexpr void store(float x, I... idx) const noexcept {
    const index_t o = this->offset(idx...);
    switch (this->dtype_) {
      case Dtype::bf16:
        static_cast<bf16*>(this->data_)[o] = bf16_from(x);
        break;
      case Dtype::f16:
        static_cast<f16*>(this->data_)[o] = f16_from(x);
        break;
      default:
        static_cast<float*>(this->data_)[o] = x;
    }
  }
};

using EView4 = ElementView<4>;
using MutEView4 = MutElementView<4>;

/// What validation and overlap checks need of a view: shape, strides, data, an element size.
template <class V>
concept StridedView = requires(const V& v) {
  { V::rank } -> std::convertible_to<std::size_t>;
  v.shape();
  v.strides();
  v.data();
  { v.absent() } -> std::convertible_to<bool>;
};

/// Bytes per element of a view.
template <class T, std::size_t R>
constexpr std::size_t view_element_size(const TensorView<T, R>&) noexcept {
  return sizeof(T);
}
template <bool M, std::size_t R>
constexpr std::size_t view_element_size(const detail::ElementViewBase<M, R>& v) noexcept {
  return v.element_size();
}

}  // namespace polyattn
