// polyattn/core/simd/convert.hpp — element types to and from float batches, per Arch tag:
//   load_float<A>(const T* p)      batch_t<A> of the width(A) elements at p, widened to float
//   store_float<A>(T* p, x)        x rounded to T (nearest even) into the width(A) elements at p
//   convert<A>(src, dst, n)        dst[i] = src[i] converted, any element types, any n ≥ 0
// for T in {float, bf16, f16} (core/element.hpp) and, for loads, int8 (value as float, unscaled).
// Every path gives the same bits as the scalar to_float / from_float of element.hpp:
//   bf16 → float  zero-extend and shift left 16 (exact)
//   float → bf16  integer round to nearest even, NaN kept quiet (no AVX512-BF16 instruction: it
//                 would flush subnormal inputs)
//   f16 ↔ float   F16C / AVX-512F vcvtph2ps / vcvtps2ph (nearest even) on avx2 / avx512, NEON
//                 fcvtl / fcvtn on neon (nearest even under the default FPCR.RMode; half
//                 precision is never flushed by these conversions, and a float subnormal that FZ
//                 flushes rounds to a signed f16 zero anyway; NaN quieted keeping the top payload
//                 bits, as the integer code); the scalar integer conversion on sse42 and scalar
//                 (and avx2 without -mf16c)
//   int8 → float  sign-extend and convert (exact)
// convert() handles the last n mod width elements through a width-sized stack buffer, so nothing
// outside [0, n) is read or written.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "polyattn/core/element.hpp"
#include "polyattn/core/simd/arch.hpp"

#if defined(__SSE4_1__) || defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#if XSIMD_WITH_NEON64
#include <arm_neon.h>
#endif

namespace polyattn::simd {

template <class T>
concept Loadable = Element<T> || std::same_as<T, std::int8_t>;

inline namespace POLYATTN_ISA_NS {
namespace impl {

#if defined(__SSE4_1__)
// Round-to-nearest-even float bits → bf16 bits in the low 16 bits of each 32-bit lane.
inline __m128i bf16_bits_sse(__m128 x) noexcept {
  const __m128i u = _mm_castps_si128(x);
  const __m128i lsb = _mm_and_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(1));
  const __m128i r =
      _mm_srli_epi32(_mm_add_epi32(_mm_add_epi32(u, _mm_set1_epi32(0x7FFF)), lsb), 16);
  const __m128i nan =
      _mm_cmpgt_epi32(_mm_and_si128(u, _mm_set1_epi32(0x7FFFFFFF)), _mm_set1_epi32(0x7F800000));
  const __m128i q = _mm_or_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(0x40));
  return _mm_blendv_epi8(r, q, nan);
}
#endif
#if defined(__AVX2__)
inline __m256i bf16_bits_avx2(__m256 x) noexcept {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)),
                                         _mm256_set1_epi32(0x7F800000));
  const __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(r, q, nan);
}
#endif
#if defined(__AVX512BW__)
inline __m512i bf16_bits_avx512(__m512 x) noexcept {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r =
      _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)),
                                                _mm512_set1_epi32(0x7F800000));
  const __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_mask_blend_epi32(nan, r, q);
}
#endif

#if XSIMD_WITH_NEON64
// The same integer rounding on NEON: bf16 bits in the low 16 bits of each 32-bit lane.
inline uint32x4_t bf16_bits_neon(float32x4_t x) noexcept {
  const uint32x4_t u = vreinterpretq_u32_f32(x);
  const uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
  const uint32x4_t r = vshrq_n_u32(vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7FFF)), lsb), 16);
  const uint32x4_t nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7FFFFFFF)), vdupq_n_u32(0x7F800000));
  const uint32x4_t q = vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x40));
  return vbslq_u32(nan, q, r);
}
#endif

}  // namespace impl
}  // namespace POLYATTN_ISA_NS

/// The width(A) elements at p as a float batch (int8: the integer values, unscaled).
template <SimdArch A, Loadable T>
inline batch_t<A> load_float(const T* p) noexcept {
  static_assert(compiled<A>(), "load_float: Arch not enabled in this translation unit");
  using B = batch_t<A>;
  if constexpr (std::same_as<T, float>) {
    return B::load_unaligned(p);
  } else if constexpr (std::same_as<A, scalar_arch>) {
    if constexpr (std::same_as<T, std::int8_t>)
      return B(static_cast<float>(*p));
    else
      return B(to_float(*p));
  } else if constexpr (std::same_as<A, sse42>) {
#if defined(__SSE4_1__)
    if constexpr (std::same_as<T, bf16>) {
      const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
      return B(_mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(h), 16)));
    } else if constexpr (std::same_as<T, std::int8_t>) {
      std::int32_t w;
      std::memcpy(&w, p, 4);
      return B(_mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(w))));
    } else {  // f16 without F16C
      alignas(16) float f[4] = {to_float(p[0]), to_float(p[1]), to_float(p[2]), to_float(p[3])};
      return B::load_aligned(f);
    }
#endif
  } else if constexpr (std::same_as<A, avx2>) {
#if defined(__AVX2__)
    if constexpr (std::same_as<T, bf16>) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      return B(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
    } else if constexpr (std::same_as<T, f16>) {
#if defined(__F16C__)
      return B(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#else  // a TU compiled with -mavx2 but without -mf16c (the project's avx2 units have it)
      alignas(32) float f[8];
      for (int i = 0; i < 8; ++i) f[i] = to_float(p[i]);
      return B::load_aligned(f);
#endif
    } else {
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
      return B(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)));
    }
#endif
  } else if constexpr (std::same_as<A, neon>) {
#if XSIMD_WITH_NEON64
    if constexpr (std::same_as<T, bf16>) {
      const uint16x4_t h = vld1_u16(reinterpret_cast<const std::uint16_t*>(p));
      return B(vreinterpretq_f32_u32(vshll_n_u16(h, 16)));
    } else if constexpr (std::same_as<T, f16>) {
      const uint16x4_t h = vld1_u16(reinterpret_cast<const std::uint16_t*>(p));
      return B(vcvt_f32_f16(vreinterpret_f16_u16(h)));
    } else {
      std::int32_t w;
      std::memcpy(&w, p, 4);
      const int16x8_t h = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(w)));
      return B(vcvtq_f32_s32(vmovl_s16(vget_low_s16(h))));
    }
#endif
  } else {
#if defined(__AVX512BW__)
    if constexpr (std::same_as<T, bf16>) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      return B(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    } else if constexpr (std::same_as<T, f16>) {
      return B(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
    } else {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      return B(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)));
    }
#endif
  }
}

/// x rounded to T (nearest even) into the width(A) elements at p.
template <SimdArch A, Element T>
inline void store_float(T* p, batch_t<A> x) noexcept {
  static_assert(compiled<A>(), "store_float: Arch not enabled in this translation unit");
  if constexpr (std::same_as<T, float>) {
    x.store_unaligned(p);
  } else if constexpr (std::same_as<A, scalar_arch>) {
    *p = from_float<T>(x.value);
  } else if constexpr (std::same_as<A, sse42>) {
#if defined(__SSE4_1__)
    if constexpr (std::same_as<T, bf16>) {
      const __m128i r = impl::bf16_bits_sse(x);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi32(r, r));
    } else {
      alignas(16) float f[4];
      x.store_aligned(f);
      for (int i = 0; i < 4; ++i) p[i] = f16_from(f[i]);
    }
#endif
  } else if constexpr (std::same_as<A, avx2>) {
#if defined(__AVX2__)
    if constexpr (std::same_as<T, bf16>) {
      const __m256i r = impl::bf16_bits_avx2(x);
      const __m128i h = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
    } else {
#if defined(__F16C__)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                       _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
      alignas(32) float f[8];
      x.store_aligned(f);
      for (int i = 0; i < 8; ++i) p[i] = f16_from(f[i]);
#endif
    }
#endif
  } else if constexpr (std::same_as<A, neon>) {
#if XSIMD_WITH_NEON64
    if constexpr (std::same_as<T, bf16>) {
      vst1_u16(reinterpret_cast<std::uint16_t*>(p), vmovn_u32(impl::bf16_bits_neon(x)));
    } else {
      vst1_u16(reinterpret_cast<std::uint16_t*>(p), vreinterpret_u16_f16(vcvt_f16_f32(x)));
    }
#endif
  } else {
#if defined(__AVX512BW__)
    if constexpr (std::same_as<T, bf16>) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                          _mm512_cvtepi32_epi16(impl::bf16_bits_avx512(x)));
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                          _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
#endif
  }
}

/// dst[i] = src[i] for i in [0, n), converted (nearest even when narrowing). src and dst must
/// not overlap unless they are the same array of the same type.
template <SimdArch A, Loadable S, Element D>
inline void convert(const S* src, D* dst, std::int64_t n) noexcept {
  using B = batch_t<A>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  std::int64_t i = 0;
  for (; i + W <= n; i += W) store_float<A>(dst + i, load_float<A>(src + i));
  if (i < n) {
    S s[W] = {};
    D d[W] = {};
    std::memcpy(s, src + i, static_cast<std::size_t>(n - i) * sizeof(S));
    store_float<A>(d, load_float<A>(s));
    std::memcpy(dst + i, d, static_cast<std::size_t>(n - i) * sizeof(D));
  }
}

}  // namespace polyattn::simd
