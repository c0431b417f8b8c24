// polyattn/core/simd/arch.hpp — SIMD architecture tags, their tunables, the float batch type of
// each, and the few batch-level functions kernels need, identical in spelling for every tag.
//
// Kernels are templates on an Arch tag. The supported tags, lowest to highest:
//   scalar = scalar_arch                  (ours; batch of 1 float, plain C++)
//   sse42  = xsimd::sse4_2                (4 floats)
//   avx2   = xsimd::fma3<xsimd::avx2>     (8 floats, fused multiply-add)
//   avx512 = xsimd::avx512bw              (16 floats, fused multiply-add)
//   neon   = xsimd::neon64                (4 floats, fused multiply-add; AArch64 Advanced SIMD)
// The x86 tags (sse42, avx2, avx512) only run on x86 and neon only on AArch64; scalar runs
// everywhere.
// batch_t<Arch> is xsimd::batch<float, Arch>, or ScalarBatch for scalar_arch.
// ArchTraits<Arch> holds the tunables derived from the register file (width, vector registers,
// GEMM panel and row blocking; see below); kMaxBatchFloats is the widest batch of any tag, the
// padding unit of buffers that every ISA reads whole batches from.
//
// xsimd only defines batch<float, Arch> in a translation unit compiled with that ISA enabled
// (-mavx512bw ... sets XSIMD_WITH_AVX512BW; every AArch64 translation unit has
// XSIMD_WITH_NEON64). The tag structs always exist, so code may name every tag anywhere, but may
// instantiate a kernel body for Arch only where compiled<Arch>() holds. Bodies for other ISAs
// are compiled in per-ISA units (see dispatch.hpp and cmake/PolyattnArch.cmake).
//
// Per-ISA namespace. Code with a function body that kernels run lives in the inline namespace
// POLYATTN_ISA_NS (`namespace polyattn::simd { inline namespace POLYATTN_ISA_NS { ... } }`), whose
// name says how the translation unit was compiled: unit_avx512 / unit_avx2 / unit_sse42 /
// unit_neon / unit_scalar inside a per-ISA unit, tu_avx512 / tu_avx2 / tu_sse42 / tu_neon /
// tu_base elsewhere (from the TU's own flags). Inline functions compiled with AVX-512 flags
// therefore never share a symbol with the same function compiled for another ISA, and a mixed-ISA
// binary does not depend on which copy the linker keeps. Types stay outside it (a type must be the
// same in the caller and the unit), and so do functions whose symbol already names the Arch
// (templates on the tag or its batch). Nested helper namespaces inside it are called `impl` (a
// `detail` there would make the outer `detail` ambiguous).
//
// Batch functions (namespace polyattn::simd; call them qualified, `simd::fma(a, b, c)`, so that
// argument-dependent lookup cannot pick xsimd's overloads instead):
//   fma(a, b, c)   a·b + c; fused on avx2/avx512/neon, two roundings on sse42; on scalar whatever
//                  the compiler makes of a*b+c.
//   exp(a)         e^a per lane. avx512: our own (below), 0 below ln(FLT_MIN) ≈ −87.34, +inf above
//                  ≈ 88.72, NaN stays NaN. sse42 / avx2: xsimd, 0 below ≈ −88.376 (no
//                  subnormals), +inf above ≈ 88.376. neon: xsimd's generic exp (as sse42 /
//                  avx2). scalar: std::exp.
//   neg_inf_to_zero(a)  0 in the lanes that hold −inf, a elsewhere (online-softmax guards).
//   below_to(a, t, v)   v in the lanes where a < t, a elsewhere (NaN lanes keep NaN).
//   tanh(a)        tanh per lane (softcap). xsimd: ±1 for large |a|; scalar: std::tanh.
//   max(a, b)      per-lane maximum. If a lane holds a NaN the result lane is unspecified
//                  (it depends on the instruction); use max_nan() when NaN must propagate.
//   max_nan(a, b)  per-lane maximum that is NaN where either operand is NaN.
//   reduce_add(a)  Σ lanes (xsimd 8.1 calls it hadd; there is no reduce_add in 8.1).
//   reduce_add_rows(rows)  lane i = Σ lanes of rows[i], W rows at once (a shuffle tree on AVX2 /
//                  AVX-512, a third of W reduce_add calls' instructions).
//   reduce_max(a)  max over lanes; NaN if any lane is NaN (8.1 has no horizontal max, so the
//                  lanes go through a small array).
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

// GCC < 13 warns "'__Y' is used uninitialized" inside its own AVX-512 intrinsics
// (_mm512_undefined_ps, GCC PR105593) wherever xsimd's AVX-512 max/exp get inlined with -O2 -Wall.
// The warning is attributed to the intrinsic header's lines, so silencing it around the first
// inclusion of <immintrin.h> (through xsimd) removes it without hiding anything in user code.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <xsimd/xsimd.hpp>
#pragma GCC diagnostic pop
#else
#include <xsimd/xsimd.hpp>
#endif

// Full unrolling of the short fixed-count loops of register-blocked micro-kernels, so their
// accumulators live in registers at -O2 too (GCC only unrolls them by itself at -O3). Not under
// the sanitizers: unrolled instrumented loops more than doubled the sanitizer build of the
// kernel units (measured: the papers' test unit 106 s -> 46 s of CPU per ISA), and unrolling
// changes no result (the same operations in the same order).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define POLYATTN_UNROLL
#elif defined(__clang__)
#define POLYATTN_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define POLYATTN_UNROLL _Pragma("GCC unroll 32")
#else
#define POLYATTN_UNROLL
#endif

// Forces inlining. Used on the prefetch helpers: GCC judges a function whose only effect is a
// prefetch to be free of side effects and deletes calls to it when it is not inlined.
#if defined(__GNUC__) || defined(__clang__)
#define POLYATTN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define POLYATTN_ALWAYS_INLINE inline
#endif

// The per-ISA inline namespace of this translation unit (see the header comment).
#if defined(POLYATTN_UNIT_ISA_AVX512)
#define POLYATTN_ISA_NS unit_avx512
#elif defined(POLYATTN_UNIT_ISA_AVX2)
#define POLYATTN_ISA_NS unit_avx2
#elif defined(POLYATTN_UNIT_ISA_SSE42)
#define POLYATTN_ISA_NS unit_sse42
#elif defined(POLYATTN_UNIT_ISA_NEON)
#define POLYATTN_ISA_NS unit_neon
#elif defined(POLYATTN_UNIT_ISA_SCALAR)
#define POLYATTN_ISA_NS unit_scalar
#elif XSIMD_WITH_AVX512BW
#define POLYATTN_ISA_NS tu_avx512
#elif XSIMD_WITH_FMA3_AVX2
#define POLYATTN_ISA_NS tu_avx2
#elif XSIMD_WITH_SSE4_2
#define POLYATTN_ISA_NS tu_sse42
#elif XSIMD_WITH_NEON64
#define POLYATTN_ISA_NS tu_neon
#else
#define POLYATTN_ISA_NS tu_base
#endif

namespace polyattn::simd {

// ---- tags ---------------------------------------------------------------------------------

// Tag of the portable fallback: one float per "batch", no intrinsics. Mirrors the static
// interface of the xsimd tags.
struct scalar_arch {
  static constexpr bool supported() noexcept { return true; }
  static constexpr bool available() noexcept { return true; }
  static constexpr unsigned version() noexcept { return 0; }
  static constexpr std::size_t alignment() noexcept { return alignof(float); }
  static constexpr bool requires_alignment() noexcept { return false; }
  static constexpr const char* name() noexcept { return "scalar"; }
};

using avx512 = xsimd::avx512bw;
using avx2 = xsimd::fma3<xsimd::avx2>;
using sse42 = xsimd::sse4_2;
using neon = xsimd::neon64;
using scalar = scalar_arch;

// The supported instruction sets. They form two chains, one per processor family, that share
// scalar: x86  scalar < sse42 < avx2 < avx512 < avx512bf16 < amx,  AArch64  scalar < neon.
// Within a chain a higher level implies every lower one; levels of different chains are not
// comparable (compare with isa_at_least, never with the enum's integer values: neon's value is
// above amx's only so that the x86 values, which are bit positions of dispatch masks, stay as
// they were). Levels above avx512 have no tag (and no units) of their own: they run the avx512
// units, and an operator whose kernels have a path for the extension takes it when
// simd::runtime_isa() (the CPU's level, capped by POLYATTN_ISA) reaches that level:
//   avx512bf16  AVX512-BF16 (vdpbf16ps). Detected and cappable; no kernel uses it yet: on the
//               Xeons measured it multiply-adds at half the fp32 FMA rate (docs §9.7)
//   amx         AMX-BF16 tiles (tdpbf16ps), with the OS's permission for tile data (amx.hpp)
// neon (AArch64 Advanced SIMD) is part of every AArch64 processor: the level of any of them.
// BF16 dot products (BFDOT, BFMMLA) and SVE have no level yet.
enum class Isa : int {
  scalar = 0,
  sse42 = 1,
  avx2 = 2,
  avx512 = 3,
  avx512bf16 = 4,
  amx = 5,
  neon = 6
};

// Whether `isa` belongs to the AArch64 chain (neon) rather than to x86's; scalar to neither.
constexpr bool isa_is_arm(Isa isa) noexcept {
  return isa == Isa::neon;
}

// Whether a processor at level `have` also has level `want`: want is scalar, or both lie on the
// same chain and have is at least want.
constexpr bool isa_at_least(Isa have, Isa want) noexcept {
  if (want == Isa::scalar) return true;
  if (have == Isa::scalar || isa_is_arm(have) != isa_is_arm(want)) return false;
  return static_cast<int>(have) >= static_cast<int>(want);
}

constexpr const char* isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::neon:
      return "neon";
    case Isa::amx:
      return "amx";
    case Isa::avx512bf16:
      return "avx512bf16";
    case Isa::avx512:
      return "avx512";
    case Isa::avx2:
      return "avx2";
    case Isa::sse42:
      return "sse42";
    case Isa::scalar:
      return "scalar";
  }
  return "scalar";
}

namespace detail {
template <class A>
inline constexpr int isa_index = -1;
template <>
inline constexpr int isa_index<scalar_arch> = static_cast<int>(Isa::scalar);
template <>
inline constexpr int isa_index<xsimd::sse4_2> = static_cast<int>(Isa::sse42);
template <>
inline constexpr int isa_index<xsimd::fma3<xsimd::avx2>> = static_cast<int>(Isa::avx2);
template <>
inline constexpr int isa_index<xsimd::avx512bw> = static_cast<int>(Isa::avx512);
template <>
inline constexpr int isa_index<xsimd::neon64> = static_cast<int>(Isa::neon);
}  // namespace detail

// What an Arch tag must provide: an empty, default-constructible tag with xsimd's static
// interface, and be one of the five supported tags above.
template <class A>
concept SimdArch =
    std::is_empty_v<A> && std::default_initializable<A> && (detail::isa_index<A> >= 0) && requires {
      { A::name() } -> std::convertible_to<const char*>;
      { A::supported() } -> std::convertible_to<bool>;
      { A::alignment() } -> std::convertible_to<std::size_t>;
    };

// The Isa value of a tag.
template <SimdArch A>
inline constexpr Isa isa_of = static_cast<Isa>(detail::isa_index<A>);

// True when the current translation unit can instantiate code for Arch (its ISA is enabled
// by the compile flags): XSIMD_WITH_AVX512BW, XSIMD_WITH_FMA3_AVX2, XSIMD_WITH_SSE4_2,
// XSIMD_WITH_NEON64 (every AArch64 TU); scalar always.
template <SimdArch A>
constexpr bool compiled() noexcept {
  if constexpr (std::is_same_v<A, scalar_arch>)
    return true;
  else
    return A::supported();
}

// Tunables of an Arch tag, derived from its register file (as Eigen's gebp_traits derive GEMM
// blocking from register counts). Usable for any tag, compiled or not.
//   width            floats per batch
//   vector_registers architectural vector registers (scalar: a notional 32 — one-float
//                    "batches" are unrolled scalar code, blocked like the widest ISA)
//   panel_vectors    batches per column panel of the register-blocked products (GEMM, the
//                    recurrent state pass, decode key blocks): 4 with 32 registers, else 2
//                    (neon: 32 × 128-bit registers, so 4-batch panels of 16 floats)
//   lane_operands    the broadcast operand of the micro-kernel occupies one register per row
//                    (neon: compilers turn the broadcast into FMLA by element, v.4s × v.s[0],
//                    each row's A value in its own register), not one for the whole block
//   micro_rows(nb)   rows per GEMM micro-block for a panel of nb batches: MR·nb accumulators,
//                    nb B-vectors and the broadcast operand(s) fit the registers, capped at 6 (8
//                    for one-batch panels) so that MR·nb ≥ 8 hides the FMA latency without
//                    spilling. neon: 5 rows for 4-batch panels (20 accumulators + 4 + 5 = 29;
//                    GCC 12 spills three accumulators per k step at 6 rows)
template <SimdArch A>
struct ArchTraits {
  static constexpr int width = 1;
  static constexpr int vector_registers = 32;
  static constexpr bool lane_operands = false;
};
template <>
struct ArchTraits<xsimd::sse4_2> {
  static constexpr int width = 4;
  static constexpr int vector_registers = 16;
  static constexpr bool lane_operands = false;
};
template <>
struct ArchTraits<xsimd::fma3<xsimd::avx2>> {
  static constexpr int width = 8;
  static constexpr int vector_registers = 16;
  static constexpr bool lane_operands = false;
};
template <>
struct ArchTraits<xsimd::avx512bw> {
  static constexpr int width = 16;
  static constexpr int vector_registers = 32;
  static constexpr bool lane_operands = false;
};
template <>
struct ArchTraits<xsimd::neon64> {
  static constexpr int width = 4;
  static constexpr int vector_registers = 32;  // v0–v31
  static constexpr bool lane_operands = true;
};

template <SimdArch A>
inline constexpr int panel_vectors = ArchTraits<A>::vector_registers >= 32 ? 4 : 2;

template <SimdArch A>
constexpr int micro_rows(int nb) noexcept {
  const int fit = ArchTraits<A>::lane_operands ? (ArchTraits<A>::vector_registers - nb) / (nb + 1)
                                               : (ArchTraits<A>::vector_registers - nb - 1) / nb;
  const int cap = nb == 1 ? 8 : 6;
  return fit < cap ? fit : cap;
}

// The widest batch of any supported tag, in floats, and its alignment in bytes: buffers padded
// to this can be read in whole batches by every ISA.
inline constexpr int kMaxBatchFloats = ArchTraits<xsimd::avx512bw>::width;
inline constexpr std::size_t kMaxBatchBytes = kMaxBatchFloats * sizeof(float);

// ---- the scalar batch -----------------------------------------------------------------------

// One float with the subset of xsimd::batch's interface the kernels use.
struct ScalarBatch {
  using value_type = float;
  using arch_type = scalar_arch;
  static constexpr std::size_t size = 1;

  float value = 0.f;

  constexpr ScalarBatch() noexcept = default;
  constexpr ScalarBatch(float v) noexcept : value(v) {}  // NOLINT: broadcast, as xsimd::batch(T)

  static constexpr ScalarBatch broadcast(float v) noexcept { return ScalarBatch(v); }
  static ScalarBatch load_unaligned(const float* p) noexcept { return ScalarBatch(*p); }
  static ScalarBatch load_aligned(const float* p) noexcept { return ScalarBatch(*p); }
  void store_unaligned(float* p) const noexcept { *p = value; }
  void store_aligned(float* p) const noexcept { *p = value; }
  constexpr float get(std::size_t) const noexcept { return value; }

  friend constexpr ScalarBatch operator+(ScalarBatch a, ScalarBatch b) noexcept {
    return a.value + b.value;
  }
  friend constexpr ScalarBatch operator-(ScalarBatch a, ScalarBatch b) noexcept {
    return a.value - b.value;
  }
  friend constexpr ScalarBatch operator*(ScalarBatch a, ScalarBatch b) noexcept {
    return a.value * b.value;
  }
  friend constexpr ScalarBatch operator/(ScalarBatch a, ScalarBatch b) noexcept {
    return a.value / b.value;
  }
  friend constexpr ScalarBatch operator-(ScalarBatch a) noexcept { return -a.value; }
  constexpr ScalarBatch& operator+=(ScalarBatch b) noexcept { return value += b.value, *this; }
  constexpr ScalarBatch& operator-=(ScalarBatch b) noexcept { return value -= b.value, *this; }
  constexpr ScalarBatch& operator*=(ScalarBatch b) noexcept { return value *= b.value, *this; }
  constexpr ScalarBatch& operator/=(ScalarBatch b) noexcept { return value /= b.value, *this; }
};

namespace detail {
template <class A>
struct batch_of {
  using type = xsimd::batch<float, A>;
};
template <>
struct batch_of<scalar_arch> {
  using type = ScalarBatch;
};
}  // namespace detail

// The float batch of Arch. Only usable where compiled<Arch>().
template <SimdArch A>
using batch_t = typename detail::batch_of<A>::type;

// ---- batch functions --------------------------------------------------------------------------
// The xsimd overloads are constrained templates on the batch type (not on Arch), so that a call
// such as max<Arch>(ptr, n) from ops.hpp never tries to convert its arguments to an xsimd batch
// of an ISA that the translation unit cannot instantiate.

namespace detail {
template <class B>
inline constexpr bool is_xsimd_float_batch = false;
template <class A>
inline constexpr bool is_xsimd_float_batch<xsimd::batch<float, A>> = true;
}  // namespace detail

template <class B>
concept XsimdFloatBatch = detail::is_xsimd_float_batch<B>;

template <XsimdFloatBatch B>
inline B fma(const B& a, const B& b, const B& c) noexcept {
  return xsimd::fma(a, b, c);
}
inline ScalarBatch fma(ScalarBatch a, ScalarBatch b, ScalarBatch c) noexcept {
  return a.value * b.value + c.value;
}

template <XsimdFloatBatch B>
inline B exp(const B& a) noexcept {
  return xsimd::exp(a);
}
inline ScalarBatch exp(ScalarBatch a) noexcept {
  return std::exp(a.value);
}
#if XSIMD_WITH_AVX512BW
// AVX-512: a = n·ln2 + r with n = round(a·log2 e) and a two-constant (Cody–Waite) ln2, so that
// |r| ≤ ln2/2; e^r by its degree-7 Taylor polynomial (truncation < 6e-9 relative); p·2^n by
// vscalefps. a < ln(FLT_MIN) gives exactly 0 (so −inf → 0, no subnormals), a above ≈ 88.72 +inf,
// NaN stays NaN. 13 instructions against xsimd's ~3× as many (softmax spends most of its
// non-product time here); ≤ 3 ulp (tests/core/test_simd_ops.cpp).
inline xsimd::batch<float, xsimd::avx512bw> exp(
    const xsimd::batch<float, xsimd::avx512bw>& a) noexcept {
  const __m512 v = a;
  const __m512 x = _mm512_min_ps(_mm512_set1_ps(88.8f), v);  // NaN stays: min returns x then
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // n·ln2_hi is exact
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040.f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  const __mmask16 tiny = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-87.33654f), _CMP_LT_OQ);
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), _mm512_scalef_ps(p, n));
}
#endif

// 2^a = 2^n · 2^f with n = round(a), |f| ≤ ½ exact, and 2^f = 1 + f·(c1 + f·(… c5)) a degree-5
// minimax polynomial (≤ 1.7e-7 relative in fp32 arithmetic, 1 at f = 0 exactly, so integers
// give exact powers of two; tests/core/test_simd_ops.cpp). a < −126 gives exactly 0 (−inf → 0,
// no subnormals), a ≥ 128 +inf, NaN stays NaN. For the softmax weights of the amx prefill, where
// the scale and log2 e fold into the scores' one FMA: 11 instructions on AVX-512 (vscalefps for
// 2^n) against exp's 15.
namespace detail {
inline constexpr float kExp2Poly[5] = {6.931470037e-01f, 2.402224243e-01f, 5.550728366e-02f,
                                       9.671512060e-03f, 1.326628029e-03f};
}  // namespace detail
template <XsimdFloatBatch B>
inline B exp2(const B& a) noexcept {
  using I = xsimd::as_integer_t<B>;
  const B x = xsimd::min(a, B(128.f));
  const B n = xsimd::nearbyint(x), f = x - n;
  B p(detail::kExp2Poly[4]);
  for (int k = 3; k >= 0; --k) p = xsimd::fma(p, f, B(detail::kExp2Poly[k]));
  p = xsimd::fma(p, f, B(1.f));
  // 2^n in two factors, so that n = 128 overflows to inf rather than wrapping the exponent.
  const I half = xsimd::batch_cast<typename I::value_type>(n) >> 1;
  const B r =
      xsimd::ldexp(xsimd::ldexp(p, half), xsimd::batch_cast<typename I::value_type>(n) - half);
  return xsimd::select(a < B(-126.f), B(0.f), xsimd::select(xsimd::isnan(a), a, r));
}
inline ScalarBatch exp2(ScalarBatch a) noexcept {
  if (std::isnan(a.value)) return a;
  if (a.value < -126.f) return 0.f;
  const float x = std::min(a.value, 128.f), n = std::nearbyint(x), f = x - n;
  float p = detail::kExp2Poly[4];
  for (int k = 3; k >= 0; --k) p = std::fma(p, f, detail::kExp2Poly[k]);
  return std::ldexp(std::fma(p, f, 1.f), static_cast<int>(n));
}
#if XSIMD_WITH_AVX512BW
inline xsimd::batch<float, xsimd::avx512bw> exp2(
    const xsimd::batch<float, xsimd::avx512bw>& a) noexcept {
  const __m512 x = _mm512_min_ps(_mm512_set1_ps(128.f), a);  // NaN stays: min returns a then
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(detail::kExp2Poly[4]);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(detail::kExp2Poly[3]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(detail::kExp2Poly[2]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(detail::kExp2Poly[1]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(detail::kExp2Poly[0]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  const __mmask16 keep = _mm512_cmp_ps_mask(a, _mm512_set1_ps(-126.f), _CMP_NLT_UQ);
  return _mm512_maskz_scalef_ps(keep, p, n);
}
#endif

template <XsimdFloatBatch B>
inline B neg_inf_to_zero(const B& a) noexcept {
  return xsimd::select(a == B(-std::numeric_limits<float>::infinity()), B(0.f), a);
}
inline ScalarBatch neg_inf_to_zero(ScalarBatch a) noexcept {
  return a.value == -std::numeric_limits<float>::infinity() ? 0.f : a.value;
}

template <XsimdFloatBatch B>
inline B below_to(const B& a, float t, float v) noexcept {
  return xsimd::select(a < B(t), B(v), a);
}
inline ScalarBatch below_to(ScalarBatch a, float t, float v) noexcept {
  return a.value < t ? v : a.value;
}

template <XsimdFloatBatch B>
inline B tanh(const B& a) noexcept {
  return xsimd::tanh(a);
}
inline ScalarBatch tanh(ScalarBatch a) noexcept {
  return std::tanh(a.value);
}

template <XsimdFloatBatch B>
inline B max(const B& a, const B& b) noexcept {
  return xsimd::max(a, b);
}
inline ScalarBatch max(ScalarBatch a, ScalarBatch b) noexcept {
  return a.value < b.value ? b : a;
}

template <XsimdFloatBatch B>
inline B max_nan(const B& a, const B& b) noexcept {
  // a + b is NaN in the lanes where a or b is NaN, and only those lanes are selected.
  return xsimd::select(xsimd::isnan(a) | xsimd::isnan(b), a + b, xsimd::max(a, b));
}
inline ScalarBatch max_nan(ScalarBatch a, ScalarBatch b) noexcept {
  if (std::isnan(a.value) || std::isnan(b.value)) return a.value + b.value;
  return a.value < b.value ? b : a;
}

template <XsimdFloatBatch B>
inline float reduce_add(const B& a) noexcept {
  return xsimd::hadd(a);
}
inline float reduce_add(ScalarBatch a) noexcept {
  return a.value;
}

// Lane i of the result: Σ lanes of rows[i], for W = B::size rows (dot products of several
// rows at once). xsimd's haddp is not used: 8.1's AVX-512 version returns the sums in the lane
// order 0 1 4 5 2 3 6 7 8 9 12 13 10 11 14 15.
template <XsimdFloatBatch B>
inline B reduce_add_rows(const B* rows) noexcept {
  alignas(B::arch_type::alignment()) float sums[B::size];
  for (std::size_t i = 0; i < B::size; ++i) sums[i] = xsimd::hadd(rows[i]);
  return B::load_aligned(sums);
}
inline ScalarBatch reduce_add_rows(const ScalarBatch* rows) noexcept {
  return rows[0];
}
#if XSIMD_WITH_FMA3_AVX2 || XSIMD_WITH_AVX512BW
namespace detail {
// Per 128-bit block: the partial sums of rows a, b, c, d over that block, in that order.
// unpacklo/hi(x, y) = [x0 y0 x1 y1] / [x2 y2 x3 y3]: their sum holds x0+x2, y0+y2, x1+x3, y1+y3;
// shuffle_ps then pairs the halves of two such sums.
template <class V, class Unlo, class Unhi, class Shuf, class Add>
inline V block_sums4(V a, V b, V c, V d, Unlo unlo, Unhi unhi, Shuf shuf, Add add) noexcept {
  const V ab = add(unlo(a, b), unhi(a, b)), cd = add(unlo(c, d), unhi(c, d));
  return add(shuf.template operator()<_MM_SHUFFLE(1, 0, 1, 0)>(ab, cd),
             shuf.template operator()<_MM_SHUFFLE(3, 2, 3, 2)>(ab, cd));
}
}  // namespace detail
#endif
#if XSIMD_WITH_FMA3_AVX2
inline xsimd::batch<float, xsimd::fma3<xsimd::avx2>> reduce_add_rows(
    const xsimd::batch<float, xsimd::fma3<xsimd::avx2>>* rows) noexcept {
  const auto sums4 = [](int i, const auto* r) {
    return detail::block_sums4<__m256>(
        r[i], r[i + 1], r[i + 2], r[i + 3],
        [](__m256 x, __m256 y) { return _mm256_unpacklo_ps(x, y); },
        [](__m256 x, __m256 y) { return _mm256_unpackhi_ps(x, y); },
        []<int I>(__m256 x, __m256 y) { return _mm256_shuffle_ps(x, y, I); },
        [](__m256 x, __m256 y) { return _mm256_add_ps(x, y); });
  };
  const __m256 u0 = sums4(0, rows), u1 = sums4(4, rows);  // rows 0-3 / 4-7, per 128-bit block
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
#endif
#if XSIMD_WITH_AVX512BW
inline xsimd::batch<float, xsimd::avx512bw> reduce_add_rows(
    const xsimd::batch<float, xsimd::avx512bw>* rows) noexcept {
  const auto sums4 = [](int i, const auto* r) {
    return detail::block_sums4<__m512>(
        r[i], r[i + 1], r[i + 2], r[i + 3],
        [](__m512 x, __m512 y) { return _mm512_unpacklo_ps(x, y); },
        [](__m512 x, __m512 y) { return _mm512_unpackhi_ps(x, y); },
        []<int I>(__m512 x, __m512 y) { return _mm512_shuffle_ps(x, y, I); },
        [](__m512 x, __m512 y) { return _mm512_add_ps(x, y); });
  };
  // u_k: per 128-bit block L, the partial sums of rows 4k .. 4k+3 over L
  const __m512 u0 = sums4(0, rows), u1 = sums4(4, rows), u2 = sums4(8, rows), u3 = sums4(12, rows);
  const auto fold = [](__m512 x, __m512 y) {  // [x(L0+L2), x(L1+L3), y(L0+L2), y(L1+L3)]
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(3, 2, 3, 2)));
  };
  const __m512 w01 = fold(u0, u1), w23 = fold(u2, u3);
  return _mm512_add_ps(_mm512_shuffle_f32x4(w01, w23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(w01, w23, _MM_SHUFFLE(3, 1, 3, 1)));
}
#endif

template <XsimdFloatBatch B>
inline float reduce_max(const B& a) noexcept {
  alignas(B::arch_type::alignment()) float lanes[B::size];
  a.store_aligned(lanes);
  float m = lanes[0];
  for (std::size_t i = 1; i < B::size; ++i) {
    // Keeps the first NaN: once m is NaN neither comparison is true.
    if (lanes[i] > m || lanes[i] != lanes[i]) m = lanes[i];
  }
  return m;
}
inline float reduce_max(ScalarBatch a) noexcept {
  return a.value;
}

}  // namespace polyattn::simd
