// polyattn/core/simd/amx.hpp — AMX-BF16 tile products, the amx level of simd::Isa:
//   C[M×N] += A[M×K] · B[K×N]    A bf16 row-major, B bf16 in VNNI pairs, C fp32
// with tiles of 16 rows × 64 bytes (palette 1): A 16 × 32 bf16, B 16 pair-rows × 16 columns
// (row c holds (b[2c, j], b[2c+1, j]) for 16 j), C 16 × 16 fp32. tdpbf16ps rounds to nearest
// even and flushes subnormals (as the kernels' FTZ / DAZ do anyway).
//   amx_os_permits()         asks Linux for the tile data state once (arch_prctl
//                            ARCH_REQ_XCOMP_PERM); false elsewhere or when refused, and then the
//                            amx level is never reported (dispatch.hpp)
//   amx_block_2x2(...)       C (2 × 2 tiles: 32 × 32 fp32 at c, ldc) += Σ over k steps of 32
//                            of A (2 row tiles) · B (2 column tiles); C loaded first, or zero
//   pack_bf16_pairs(...)     the VNNI pairs of two fp32 rows (a B operand)
// Each kernel call configures the tiles itself (ldtilecfg) and releases them at the end, so no
// tile state outlives a call and nothing else in the process is affected. Only defined where
// AVX-512BW is enabled (the avx512 units); callers check
// isa_at_least(simd::runtime_isa(), Isa::amx).
#pragma once

#include <cstdint>
#include <cstring>

#include "polyattn/core/simd/convert.hpp"

#if defined(__linux__) && (defined(__x86_64__))
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace polyattn::simd {

/// Whether the OS lets this process use AMX tile data (asked once; Linux ≥ 5.16).
inline bool amx_os_permits() noexcept {
#if defined(__linux__) && defined(__x86_64__) && defined(SYS_arch_prctl)
  static const bool ok = [] {
    constexpr long kGetPerm = 0x1022, kReqPerm = 0x1023, kXtileData = 18;
    if (syscall(SYS_arch_prctl, kReqPerm, kXtileData) != 0) return false;
    unsigned long mask = 0;
    if (syscall(SYS_arch_prctl, kGetPerm, &mask) != 0) return false;
    return (mask & (1ul << kXtileData)) != 0;
  }();
  return ok;
#else
  return false;
#endif
}

}  // namespace polyattn::simd

#if defined(__AVX512BW__) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define POLYATTN_HAVE_AMX 1
#include <immintrin.h>

#define POLYATTN_TARGET_AMX \
  __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))

namespace polyattn::simd {
inline namespace POLYATTN_ISA_NS {

/// Palette 1 with every tile 16 rows × 64 bytes (the only shape the kernels use).
struct alignas(64) AmxConfig {
  std::uint8_t palette = 1, start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
  constexpr AmxConfig() noexcept {
    for (int t = 0; t < 8; ++t) colsb[t] = 64, rows[t] = 16;
  }
};
static_assert(sizeof(AmxConfig) == 64);

/// Holds the tile configuration for its lifetime on this thread (ldtilecfg / tilerelease).
class AmxScope {
 public:
  POLYATTN_TARGET_AMX AmxScope() noexcept {
    static const AmxConfig cfg;
    _tile_loadconfig(&cfg);
  }
  POLYATTN_TARGET_AMX ~AmxScope() { _tile_release(); }
  AmxScope(const AmxScope&) = delete;
  AmxScope& operator=(const AmxScope&) = delete;
};

/// C (32 × 32 fp32 at c, row stride ldc floats) (= or +=) Σ_{s < steps} A_s · B_s, where step s
/// takes A rows [0, 32) × bf16 columns [32 s, 32 s + 32) at a (row stride lda bytes) and B
/// pair-rows [16 s, 16 s + 16) × 32 columns at b (row stride ldb bytes). Tiles: C 0–3, A 4–5,
/// B 6–7. Needs an AmxScope on this thread.
POLYATTN_TARGET_AMX inline void amx_block_2x2(const void* a, std::int64_t lda, const void* b,
                                              std::int64_t ldb, std::int64_t steps, bool accumulate,
                                              float* c, std::int64_t ldc) {
  const std::int64_t ldcb = ldc * 4;
  if (accumulate) {
    _tile_loadd(0, c, ldcb);
    _tile_loadd(1, c + 16, ldcb);
    _tile_loadd(2, c + 16 * ldc, ldcb);
    _tile_loadd(3, c + 16 * ldc + 16, ldcb);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  const char* ap = static_cast<const char*>(a);
  const char* bp = static_cast<const char*>(b);
  for (std::int64_t s = 0; s < steps; ++s) {
    _tile_loadd(4, ap + s * 64, lda);
    _tile_loadd(5, ap + 16 * lda + s * 64, lda);
    _tile_loadd(6, bp + s * 16 * ldb, ldb);
    _tile_loadd(7, bp + s * 16 * ldb + 64, ldb);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, ldcb);
  _tile_stored(1, c + 16, ldcb);
  _tile_stored(2, c + 16 * ldc, ldcb);
  _tile_stored(3, c + 16 * ldc + 16, ldcb);
}

/// out[i] = bf16(x0[i]) | bf16(x1[i]) << 16 for i in [0, n), n % 16 == 0 (nearest even): the
/// VNNI pairs of two fp32 rows, a B operand of amx_block_2x2.
POLYATTN_TARGET_AMX inline void pack_bf16_pairs(const float* x0, const float* x1,
                                                std::uint32_t* out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; i += 16) {
    const __m512i lo = impl::bf16_bits_avx512(_mm512_loadu_ps(x0 + i));
    const __m512i hi = impl::bf16_bits_avx512(_mm512_loadu_ps(x1 + i));
    _mm512_storeu_si512(static_cast<void*>(out + i),
                        _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
  }
}

}  // namespace POLYATTN_ISA_NS
}  // namespace polyattn::simd

#else
#define POLYATTN_HAVE_AMX 0
#endif
