// polyattn/core/element.hpp — the element types of activations and KV caches, and their exact
// scalar conversions to and from float (docs/conventions.md §9.7).
//
//   bf16  the upper 16 bits of an IEEE binary32: 1 sign, 8 exponent, 7 mantissa bits.
//         to_float(x) = bits << 16 (exact).
//         bf16_from(f) = round to nearest even of f's upper half: (u + 0x7FFF + ((u >> 16) & 1))
//         >> 16 for u = bits of f; a NaN stays a quiet NaN of the same sign; overflow → ±inf.
//   f16   IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits; max 65504, smallest
//         subnormal 2^-24. to_float is exact (a NaN comes back quiet, as from vcvtph2ps);
//         f16_from(f) rounds to nearest even, |f| ≥ 65520 → ±inf, subnormal results kept (not
//         flushed), NaN → quiet NaN keeping the top payload bits.
// The conversions are integer-only and constexpr, so they give the same bits on every ISA and
// under any floating-point environment (the SIMD forms in simd/convert.hpp match them bit for
// bit). Dtype names an element type at run time (ElementView, KV caches).
#pragma once

#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace polyattn {

/// bfloat16 storage: the bits only; arithmetic happens in float.
struct bf16 {
  std::uint16_t bits = 0;
  friend constexpr bool operator==(bf16, bf16) = default;
};
/// IEEE binary16 storage: the bits only; arithmetic happens in float.
struct f16 {
  std::uint16_t bits = 0;
  friend constexpr bool operator==(f16, f16) = default;
};
static_assert(sizeof(bf16) == 2 && sizeof(f16) == 2);

/// The element types of q, k, v and o.
template <class T>
concept Element = std::same_as<T, float> || std::same_as<T, bf16> || std::same_as<T, f16>;

/// An element type at run time: the three activation types and int8 (KV caches only).
enum class Dtype : std::uint8_t { f32 = 0, bf16 = 1, f16 = 2, i8 = 3 };

template <class T>
inline constexpr Dtype dtype_of = Dtype::f32;
template <>
inline constexpr Dtype dtype_of<bf16> = Dtype::bf16;
template <>
inline constexpr Dtype dtype_of<f16> = Dtype::f16;
template <>
inline constexpr Dtype dtype_of<std::int8_t> = Dtype::i8;

constexpr std::size_t element_size(Dtype t) noexcept {
  return t == Dtype::f32 ? 4 : t == Dtype::i8 ? 1 : 2;
}
constexpr std::string_view dtype_name(Dtype t) noexcept {
  switch (t) {
    case Dtype::f32:
      return "fp32";
    case Dtype::bf16:
      return "bf16";
    case Dtype::f16:
      return "fp16";
    case Dtype::i8:
      return "int8";
  }
  return "?";
}

// ---- scalar conversions ---------------------------------------------------------------------

constexpr float to_float(float x) noexcept {
  return x;
}
constexpr float to_float(bf16 x) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(x.bits) << 16);
}
constexpr float to_float(f16 x) noexcept {
  const std::uint32_t h = x.bits;
  const std::uint32_t sign = (h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0x1F)  // inf; NaN quieted, as vcvtph2ps does
    return std::bit_cast<float>(sign | 0x7F800000u | (m << 13) | (m ? 0x400000u : 0u));
  if (e != 0) return std::bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
  if (m == 0) return std::bit_cast<float>(sign);
  // Subnormal m · 2^-24 = 2^(p − 24) · (m / 2^p) with p the leading bit of m: a normal float.
  const std::uint32_t p = static_cast<std::uint32_t>(std::bit_width(m)) - 1;
  return std::bit_cast<float>(sign | ((p + 103u) << 23) | ((m << (23 - p)) & 0x7FFFFFu));
}

constexpr bf16 bf16_from(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return bf16{static_cast<std::uint16_t>((u >> 16) | 0x40u)};
  return bf16{static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16)};
}

constexpr f16 f16_from(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
  std::uint32_t h;
  if (a > 0x7F800000u) {
    h = 0x7E00u | ((a >> 13) & 0x3FFu);  // quiet NaN, top payload bits kept
  } else if (a >= 0x477FF000u) {         // ≥ 65520 (half-way past 65504, odd): ±inf
    h = 0x7C00u;
  } else if (a >= 0x38800000u) {  // ≥ 2^-14: normal; rebias the exponent by −112, round at bit 13
    h = (a - 0x38000000u + 0xFFFu + ((a >> 13) & 1u)) >> 13;
  } else if (a <= 0x33000000u) {  // ≤ 2^-25 (the tie rounds to the even 0)
    h = 0;
  } else {  // subnormal result: round m · 2^(e − 150) to a multiple of 2^-24
    const std::uint32_t m = (a & 0x7FFFFFu) | 0x800000u, shift = 126u - (a >> 23);
    const std::uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
    h = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
  }
  return f16{static_cast<std::uint16_t>(sign | h)};
}

/// float → T with round to nearest even (identity for float).
template <Element T>
constexpr T from_float(float f) noexcept {
  if constexpr (std::same_as<T, bf16>)
    return bf16_from(f);
  else if constexpr (std::same_as<T, f16>)
    return f16_from(f);
  else
    return f;
}

/// f rounded to T and back: the value an operator sees after a caller stores f as T.
template <Element T>
constexpr float round_to(float f) noexcept {
  return to_float(from_float<T>(f));
}

}  // namespace polyattn
