// polyattn/core/extent.hpp — overflow-safe size arithmetic for views, caches and masks.
//
// For a view of sizes n_k and strides s_k (elements) the library needs
//   count    = Π n_k                         (elements it describes)
//   furthest = Σ (n_k − 1)·s_k   (n_k > 0)   (offset of the last element it addresses)
//   bytes    = count · sizeof(T)             (what an owner allocates)
// each of which must fit in int64 (bytes: also in what operator new can be asked for). Every
// product and sum goes through checked_mul / checked_add, so a huge shape is a named
// polyattn::Error instead of signed overflow (undefined behaviour) and a kernel that runs forever.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "polyattn/core/error.hpp"

namespace polyattn {

using index_t = std::int64_t;

namespace extent {

/// a·b, or nothing when it does not fit in int64.
constexpr std::optional<index_t> checked_mul(index_t a, index_t b) noexcept {
  index_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

/// a + b, or nothing when it does not fit in int64.
constexpr std::optional<index_t> checked_add(index_t a, index_t b) noexcept {
  index_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

/// a·b for sizes; throws Error(name) naming `what` when the product does not fit in int64.
inline index_t mul(std::string_view name, index_t a, index_t b, std::string_view what) {
  if (auto r = checked_mul(a, b)) return *r;
  throw Error(name, std::string(what) + " overflows int64 (" + std::to_string(a) + " x " +
                        std::to_string(b) + ")");
}

/// a + b for sizes; throws Error(name) naming `what` when the sum does not fit in int64.
inline index_t add(std::string_view name, index_t a, index_t b, std::string_view what) {
  if (auto r = checked_add(a, b)) return *r;
  throw Error(name, std::string(what) + " overflows int64 (" + std::to_string(a) + " + " +
                        std::to_string(b) + ")");
}

/// Π sizes (non-negative sizes assumed); throws Error(name) when it does not fit in int64.
inline index_t count(std::string_view name, std::span<const index_t> sizes) {
  index_t n = 1;
  for (index_t s : sizes)
    if (auto r = checked_mul(n, s)) {
      n = *r;
    } else {
      // An empty dimension anywhere makes the count 0 whatever the others are.
      for (index_t z : sizes)
        if (z == 0) return 0;
      throw Error(name, "element count of shape " + shape_string(sizes) + " overflows int64");
    }
  return n;
}

/// Offset of the furthest element a view addresses, Σ (n_k − 1)·s_k, 0 for an empty view;
/// throws Error(name) when it does not fit in int64 (non-negative sizes and strides assumed).
inline index_t furthest(std::string_view name, std::span<const index_t> sizes,
                        std::span<const index_t> strides) {
  for (index_t s : sizes)
    if (s == 0) return 0;
  index_t off = 0;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    const auto term = checked_mul(sizes[k] - 1, strides[k]);
    const auto sum = term ? checked_add(off, *term) : std::nullopt;
    if (!sum)
      throw Error(name, "the furthest element of shape " + shape_string(sizes) + " with strides " +
                            shape_string(strides) + " lies beyond int64 offsets");
    off = *sum;
  }
  return off;
}

/// count·elem bytes as std::size_t; throws Error(name) when it exceeds what can be allocated.
inline std::size_t bytes(std::string_view name, index_t count, std::size_t elem) {
  constexpr auto limit = static_cast<index_t>(std::numeric_limits<std::ptrdiff_t>::max());
  const auto b = checked_mul(count, static_cast<index_t>(elem));
  if (!b || *b > limit)
    throw Error(name, std::to_string(count) + " elements of " + std::to_string(elem) +
                          " bytes exceed the largest possible allocation");
  return static_cast<std::size_t>(*b);
}

/// Row-major strides of `sizes`; throws Error("shape") when a stride overflows int64.
template <std::size_t R>
std::array<index_t, R> row_major_strides(const std::array<index_t, R>& sizes) {
  std::array<index_t, R> strides{};
  index_t s = 1;
  bool overflow = false;
  for (std::size_t i = R; i-- > 0;) {
    strides[i] = s;
    if (i > 0) {
      if (auto r = checked_mul(s, sizes[i]))
        s = *r;
      else
        overflow = true;
    }
  }
  // Overflow only matters when the view is non-empty (a zero size makes every product 0).
  if (overflow && count("shape", sizes) > 0)
    throw Error("shape", "row-major strides of shape " + shape_string(sizes) + " overflow int64");
  return strides;
}

}  // namespace extent
}  // namespace polyattn
