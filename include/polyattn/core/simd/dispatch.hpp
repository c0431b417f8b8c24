// polyattn/core/simd/dispatch.hpp — the one place of runtime ISA dispatch.
//
//   simd::dispatch(f)        calls f(Arch{}) for the best ISA that the CPU supports AND that is
//                            compiled into the binary, and returns what f returns.
//   simd::best_arch()        that ISA, as an Isa value.
//   simd::dispatch_to(isa,f) the same for a chosen ISA (lowered to what the CPU and the binary
//                            have); for benchmarks and tests.
//
// What the CPU supports is detected once (x86: cpuid, including OS support for the wider register
// state; AArch64: neon, which every AArch64 processor has) and cached in a function-local static.
// The environment variable
//   POLYATTN_ISA=scalar|sse42|avx2|avx512|avx512bf16|amx|neon
// read at that first call, caps the choice: it never raises it above what the CPU has. Tests and
// benchmarks use it to force each path; an unknown value, or a level of the other processor
// family (avx2 on AArch64, neon on x86), is reported once on stderr and ignored.
//
// "Compiled into the binary" means, for the translation unit that calls dispatch():
//   * the ISA is enabled by the TU's own compile flags (compiled<Arch>(), e.g. -march=native), or
//   * the build provides a separately compiled unit for it: polyattn_add_arch_units() (see
//     cmake/PolyattnArch.cmake) defines POLYATTN_UNIT_AVX512 / _AVX2 / _SSE42 / _NEON / _SCALAR on
//     the target and compiles the listed sources once per ISA with that ISA's flags; inside such a
//     unit POLYATTN_UNIT_ARCH names the unit's tag.
// So a binary built for generic x86-64 still runs AVX-512 code on a CPU that has it.
//
// Kernels. A kernel is a type K with a member template `template <SimdArch A> R
// operator()(A) const;` declared in the class and defined out of class (R is `typename
// K::result_type` when K declares one, else void). One list per family names its kernels,
//   #define MY_KERNELS(X) X(MyKernel<Foo>) X(MyKernel<Bar>) X(::ns::Other)
// and that one list expands to both sides (fully qualified names; commas are fine):
//   MY_KERNELS(POLYATTN_KERNEL_EXTERN)        after the definitions, in the header: for every
//                                             ISA the target has a unit of, `extern template`
//                                             (no other TU instantiates the body), and
//                                             kernel_units<K> = true
//   MY_KERNELS(POLYATTN_KERNEL_INSTANTIATE)   in the unit source passed to
//                                             polyattn_add_arch_units: the unit's instantiation
// run_kernel(k) then calls the best ISA among the units and the TU's own flags; a kernel no
// list declares (a user's policy without a unit of its own) runs the best ISA of the calling
// TU's flags, instantiated right there. Example:
//
//   // my_kernel.hpp
//   struct RowSum {
//     using result_type = float;
//     const float* x; std::int64_t n;
//     template <polyattn::simd::SimdArch A> float operator()(A) const;   // declared
//   };
//   template <polyattn::simd::SimdArch A>
//   float RowSum::operator()(A) const { return polyattn::simd::sum<A>(x, n); }
//   #define MY_KERNELS(X) X(::RowSum)
//   MY_KERNELS(POLYATTN_KERNEL_EXTERN)
//   inline float row_sum(const float* x, std::int64_t n) {
//     return polyattn::simd::run_kernel(RowSum{x, n});
//   }
//
//   // my_kernel_units.cpp — NOT listed as a normal source of the target
//   #include "my_kernel.hpp"
//   MY_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
//
//   # CMakeLists.txt
//   polyattn_add_arch_units(my_app ISAS avx512 avx2 sse42 scalar SOURCES my_kernel_units.cpp)
//
// Without units (no POLYATTN_UNIT_* definitions) the same header still works: the TU instantiates
// the body for scalar and whatever its own flags enable.
//
// Mixing ISA flags in one program: code with a body lives in the per-ISA inline namespace or is
// a template on the Arch tag (arch.hpp), so no inline function compiled for one ISA can stand in
// for another's at link time, whatever the link order; ctest checks the units' weak symbols
// (tests/core/check_unit_symbols.cmake). Units are compiled at -O2 or above, so that the std:: and
// xsimd helpers they use are inlined rather than emitted as shared weak symbols.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

#include "polyattn/core/simd/amx.hpp"
#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/float_env.hpp"

// ---- what this translation unit can call --------------------------------------------------

#if defined(POLYATTN_UNIT_AVX512) || XSIMD_WITH_AVX512BW
#define POLYATTN_DETAIL_BIN_AVX512 8u
#else
#define POLYATTN_DETAIL_BIN_AVX512 0u
#endif
#if defined(POLYATTN_UNIT_AVX2) || XSIMD_WITH_FMA3_AVX2
#define POLYATTN_DETAIL_BIN_AVX2 4u
#else
#define POLYATTN_DETAIL_BIN_AVX2 0u
#endif
#if defined(POLYATTN_UNIT_SSE42) || XSIMD_WITH_SSE4_2
#define POLYATTN_DETAIL_BIN_SSE42 2u
#else
#define POLYATTN_DETAIL_BIN_SSE42 0u
#endif
#if defined(POLYATTN_UNIT_NEON) || XSIMD_WITH_NEON64
#define POLYATTN_DETAIL_BIN_NEON 64u
#else
#define POLYATTN_DETAIL_BIN_NEON 0u
#endif

// Bit set (1 << Isa) of the ISAs this TU can run: its own flags plus the declared units.
#define POLYATTN_ISA_MASK                                                                   \
  (1u | POLYATTN_DETAIL_BIN_SSE42 | POLYATTN_DETAIL_BIN_AVX2 | POLYATTN_DETAIL_BIN_AVX512 | \
   POLYATTN_DETAIL_BIN_NEON)
// Bit set of the ISAs this TU's own flags enable (units not counted).
#define POLYATTN_LOCAL_ISA_MASK                                            \
  (1u | (XSIMD_WITH_SSE4_2 ? 2u : 0u) | (XSIMD_WITH_FMA3_AVX2 ? 4u : 0u) | \
   (XSIMD_WITH_AVX512BW ? 8u : 0u) | (XSIMD_WITH_NEON64 ? 64u : 0u))

// ---- arch units ---------------------------------------------------------------------------

// Inside a unit generated by polyattn_add_arch_units: the unit's tag.
#if defined(POLYATTN_UNIT_ISA_AVX512)
#define POLYATTN_UNIT_ARCH ::polyattn::simd::avx512
#elif defined(POLYATTN_UNIT_ISA_AVX2)
#define POLYATTN_UNIT_ARCH ::polyattn::simd::avx2
#elif defined(POLYATTN_UNIT_ISA_SSE42)
#define POLYATTN_UNIT_ARCH ::polyattn::simd::sse42
#elif defined(POLYATTN_UNIT_ISA_NEON)
#define POLYATTN_UNIT_ARCH ::polyattn::simd::neon
#elif defined(POLYATTN_UNIT_ISA_SCALAR)
#define POLYATTN_UNIT_ARCH ::polyattn::simd::scalar_arch
#endif

// Explicit instantiation (declaration) of one kernel for one tag.
#define POLYATTN_DETAIL_KERNEL_FOR(PREFIX, TAG, ...)     \
  PREFIX template auto __VA_ARGS__::operator()<TAG>(TAG) \
      const->::polyattn::simd::kernel_result_t<__VA_ARGS__>;

#if defined(POLYATTN_UNIT_AVX512)
#define POLYATTN_DETAIL_EXTERN_AVX512(...) \
  POLYATTN_DETAIL_KERNEL_FOR(extern, ::polyattn::simd::avx512, __VA_ARGS__)
#else
#define POLYATTN_DETAIL_EXTERN_AVX512(...)
#endif
#if defined(POLYATTN_UNIT_AVX2)
#define POLYATTN_DETAIL_EXTERN_AVX2(...) \
  POLYATTN_DETAIL_KERNEL_FOR(extern, ::polyattn::simd::avx2, __VA_ARGS__)
#else
#define POLYATTN_DETAIL_EXTERN_AVX2(...)
#endif
#if defined(POLYATTN_UNIT_SSE42)
#define POLYATTN_DETAIL_EXTERN_SSE42(...) \
  POLYATTN_DETAIL_KERNEL_FOR(extern, ::polyattn::simd::sse42, __VA_ARGS__)
#else
#define POLYATTN_DETAIL_EXTERN_SSE42(...)
#endif
#if defined(POLYATTN_UNIT_NEON)
#define POLYATTN_DETAIL_EXTERN_NEON(...) \
  POLYATTN_DETAIL_KERNEL_FOR(extern, ::polyattn::simd::neon, __VA_ARGS__)
#else
#define POLYATTN_DETAIL_EXTERN_NEON(...)
#endif
#if defined(POLYATTN_UNIT_SCALAR)
#define POLYATTN_DETAIL_EXTERN_SCALAR(...) \
  POLYATTN_DETAIL_KERNEL_FOR(extern, ::polyattn::simd::scalar_arch, __VA_ARGS__)
#else
#define POLYATTN_DETAIL_EXTERN_SCALAR(...)
#endif

// One entry of a kernel list, in a header: extern declarations for the target's units and
// kernel_units<K> = true. At global scope, after K's operator() is defined.
#define POLYATTN_KERNEL_EXTERN(...)                                       \
  template <>                                                             \
  struct polyattn::simd::kernel_units<__VA_ARGS__> : ::std::true_type {}; \
  POLYATTN_DETAIL_EXTERN_AVX512(__VA_ARGS__)                              \
  POLYATTN_DETAIL_EXTERN_AVX2(__VA_ARGS__)                                \
  POLYATTN_DETAIL_EXTERN_SSE42(__VA_ARGS__)                               \
  POLYATTN_DETAIL_EXTERN_NEON(__VA_ARGS__) POLYATTN_DETAIL_EXTERN_SCALAR(__VA_ARGS__)

// One entry of a kernel list, in a unit source: the instantiation for the unit's ISA.
#if defined(POLYATTN_UNIT_ARCH)
#define POLYATTN_KERNEL_INSTANTIATE(...) \
  POLYATTN_DETAIL_KERNEL_FOR(, POLYATTN_UNIT_ARCH, __VA_ARGS__)
#else
#define POLYATTN_KERNEL_INSTANTIATE(...)                                             \
  static_assert(false,                                                               \
                "POLYATTN_KERNEL_INSTANTIATE is only meaningful in a source passed " \
                "to polyattn_add_arch_units");
#endif

namespace polyattn::simd {

// Whether a kernel list declared K (POLYATTN_KERNEL_EXTERN), i.e. whether the target's units
// hold its bodies.
template <class K>
struct kernel_units : std::false_type {};

namespace detail {
template <class K, class = void>
struct kernel_result {
  using type = void;
};
template <class K>
struct kernel_result<K, std::void_t<typename K::result_type>> {
  using type = typename K::result_type;
};
}  // namespace detail

// What K::operator() returns: K::result_type, or void.
template <class K>
using kernel_result_t = typename detail::kernel_result<K>::type;

constexpr unsigned isa_bit(Isa isa) noexcept {
  return 1u << static_cast<unsigned>(isa);
}

// Whether `isa` is in the set `mask` (default: what this TU can run).
template <unsigned Mask = POLYATTN_ISA_MASK>
constexpr bool in_binary(Isa isa) noexcept {
  return (Mask & isa_bit(isa)) != 0;
}

// The highest ISA of limit's chain (arch.hpp), at most limit, that is in `mask` (scalar is always
// there).
constexpr Isa choose_isa(Isa limit, unsigned mask) noexcept {
  for (int i = static_cast<int>(limit); i > 0; --i)
    if ((mask & (1u << i)) && isa_at_least(limit, static_cast<Isa>(i))) return static_cast<Isa>(i);
  return Isa::scalar;
}

// "scalar" | "sse42" | "avx2" | "avx512" | "avx512bf16" | "amx" | "neon" → Isa; else nullopt.
constexpr std::optional<Isa> parse_isa(std::string_view s) noexcept {
  if (s == "scalar") return Isa::scalar;
  if (s == "neon") return Isa::neon;
  if (s == "sse42") return Isa::sse42;
  if (s == "avx2") return Isa::avx2;
  if (s == "avx512") return Isa::avx512;
  if (s == "avx512bf16") return Isa::avx512bf16;
  if (s == "amx") return Isa::amx;
  return std::nullopt;
}

// Whether a cap string names a level of the CPU's chain (or scalar, or no level at all).
constexpr bool cap_applies(Isa cpu, Isa cap) noexcept {
  return cap == Isa::scalar || cpu == Isa::scalar || isa_is_arm(cap) == isa_is_arm(cpu);
}

// The CPU's level, lowered by a cap string (the value of POLYATTN_ISA; null = no cap). A cap that
// is not a level, or a level of the other processor family, is ignored.
constexpr Isa capped_isa(Isa cpu, const char* cap) noexcept {
  if (cap == nullptr) return cpu;
  const std::optional<Isa> c = parse_isa(cap);
  if (!c || !cap_applies(cpu, *c)) return cpu;
  if (cpu == Isa::scalar) return Isa::scalar;
  return static_cast<int>(*c) < static_cast<int>(cpu) ? *c : cpu;
}

namespace detail {

inline Isa detect_cpu_isa() noexcept {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  // libgcc / compiler-rt check both the cpuid bits and that the OS saves the YMM / ZMM state.
  __builtin_cpu_init();
  const bool sse42 = __builtin_cpu_supports("sse4.2");
  const bool avx2 = sse42 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  const bool avx512bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  // AMX also needs the OS to grant the tile data state (asked once, only on such CPUs).
#if defined(POLYATTN_AMX_EMULATE) && POLYATTN_AMX_EMULATE
  // amx.hpp: the tile products computed in software, reported when the environment asks
  const bool amx = avx512bf16 && amx_emulation_requested();
#else
  const bool amx = avx512bf16 && __builtin_cpu_supports("amx-tile") &&
                   __builtin_cpu_supports("amx-bf16") && amx_os_permits();
#endif
#elif defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
  // Other compilers: xsimd's cpuid (8.1 does not check the OS-enabled register state).
  const auto a = xsimd::available_architectures();
  const bool sse42 = a.sse4_2;
  const bool avx2 = sse42 && a.fma3_avx2;
  const bool avx512 = avx2 && a.avx512f && a.avx512cd && a.avx512dq && a.avx512bw;
  const bool avx512bf16 = false, amx = false;  // xsimd 8.1 does not detect them
#elif defined(__aarch64__) || defined(_M_ARM64)
  return Isa::neon;  // Advanced SIMD is part of every AArch64 processor
#else
  const bool sse42 = false, avx2 = false, avx512 = false, avx512bf16 = false, amx = false;
#endif
#if !(defined(__aarch64__) || defined(_M_ARM64))
  if (amx) return Isa::amx;
  if (avx512bf16) return Isa::avx512bf16;
  if (avx512) return Isa::avx512;
  if (avx2) return Isa::avx2;
  if (sse42) return Isa::sse42;
  return Isa::scalar;
#endif
}

inline Isa compute_runtime_isa() noexcept {
  const Isa cpu = detect_cpu_isa();
  const char* cap = std::getenv("POLYATTN_ISA");
  if (cap != nullptr && !parse_isa(cap))
    std::fprintf(stderr,
                 "polyattn: ignoring POLYATTN_ISA='%s' (expected scalar, sse42, avx2, avx512, "
                 "avx512bf16, amx or neon)\n",
                 cap);
  else if (cap != nullptr && !cap_applies(cpu, *parse_isa(cap)))
    std::fprintf(stderr,
                 "polyattn: ignoring POLYATTN_ISA='%s': not a level of this processor (%s)\n", cap,
                 isa_name(cpu));
  return capped_isa(cpu, cap);
}

}  // namespace detail

// Best ISA of this CPU (cached; POLYATTN_ISA not applied).
inline Isa cpu_isa() noexcept {
  static const Isa isa = detail::detect_cpu_isa();
  return isa;
}

// cpu_isa() capped by POLYATTN_ISA (cached at the first call).
inline Isa runtime_isa() noexcept {
  static const Isa isa = detail::compute_runtime_isa();
  return isa;
}

// The ISA dispatch() picks in this TU: the best one that the CPU supports (after the
// POLYATTN_ISA cap) and that is compiled into the binary.
template <unsigned Mask = POLYATTN_ISA_MASK>
Isa best_arch() noexcept {
  return choose_isa(runtime_isa(), Mask);
}

// Calls f(tag) for `isa`, lowered to the best ISA <= isa that the CPU supports and Mask holds.
template <unsigned Mask = POLYATTN_ISA_MASK, class F>
decltype(auto) dispatch_to(Isa isa, F&& f) {
  const Isa cpu = cpu_isa();
  // The levels both at most isa and on the CPU: scalar when isa is of the other chain.
  const Isa lim = isa_at_least(cpu, isa) ? isa : cap_applies(cpu, isa) ? cpu : Isa::scalar;
  switch (choose_isa(lim, Mask)) {
    case Isa::neon:
      if constexpr ((Mask & isa_bit(Isa::neon)) != 0) return std::forward<F>(f)(neon{});
      return std::forward<F>(f)(scalar_arch{});
    case Isa::avx512:
      if constexpr ((Mask & isa_bit(Isa::avx512)) != 0) return std::forward<F>(f)(avx512{});
      [[fallthrough]];
    case Isa::avx2:
      if constexpr ((Mask & isa_bit(Isa::avx2)) != 0) return std::forward<F>(f)(avx2{});
      [[fallthrough]];
    case Isa::sse42:
      if constexpr ((Mask & isa_bit(Isa::sse42)) != 0) return std::forward<F>(f)(sse42{});
      [[fallthrough]];
    case Isa::scalar:
    default:
      return std::forward<F>(f)(scalar_arch{});
  }
}

// Calls f(tag) with the tag of best_arch() and returns its result. f must be callable with
// every tag in Mask (return types must agree).
template <unsigned Mask = POLYATTN_ISA_MASK, class F>
decltype(auto) dispatch(F&& f) {
  return dispatch_to<Mask>(runtime_isa(), std::forward<F>(f));
}

// dispatch() restricted to the ISAs this TU's own flags enable (for code instantiated here).
template <class F>
decltype(auto) dispatch_local(F&& f) {
  return dispatch_to<POLYATTN_LOCAL_ISA_MASK>(runtime_isa(), std::forward<F>(f));
}

// Runs kernel k for the best ISA available to it: the units' and this TU's own when a kernel
// list declared K, this TU's own otherwise (see the header comment). Subnormals are flushed to
// zero while it runs (float_env.hpp); the caller's floating-point environment is restored.
template <class K, unsigned Units = POLYATTN_ISA_MASK, unsigned Local = POLYATTN_LOCAL_ISA_MASK>
kernel_result_t<K> run_kernel(const K& k) {
  const FlushSubnormals flush;
  return dispatch < kernel_units<K>::value ? Units : Local > (k);
}

// The ISA run_kernel(k) runs a K on (an extension level's tag: avx512): for operators that
// prepare data differently for the tag the kernel will get, before running it.
template <class K, unsigned Units = POLYATTN_ISA_MASK, unsigned Local = POLYATTN_LOCAL_ISA_MASK>
Isa kernel_isa() noexcept {
  return choose_isa(runtime_isa(), kernel_units<K>::value ? Units : Local);
}

}  // namespace polyattn::simd
