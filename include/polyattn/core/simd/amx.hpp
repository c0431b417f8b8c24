// polyattn/core/simd/amx.hpp — AMX-BF16 tile products, the amx level of simd::Isa:
//   C[M×N] += A[M×K] · B[K×N]    A bf16 row-major, B bf16 in VNNI pairs, C fp32
// with tiles of 16 rows × 64 bytes (palette 1): A 16 × 32 bf16, B 16 pair-rows × 16 columns
// (row c holds (b[2c, j], b[2c+1, j]) for 16 j), C 16 × 16 fp32. tdpbf16ps rounds to nearest
// even and flushes subnormals (as the kernels' FTZ / DAZ do anyway).
//   amx_os_permits()         asks Linux for the tile data state once (arch_prctl
//                            ARCH_REQ_XCOMP_PERM); false elsewhere or when refused, and then the
//                            amx level is never reported (dispatch.hpp)
//   amx_block_sum(terms, n)  C (2 × 2 tiles: 32 × 32 fp32 at c, ldc) += Σ over n products, each
//                            Σ over k steps of 32 of A (2 row tiles) · B (2 column tiles); C
//                            loaded first, or zero, and stored once at the end
//   amx_block_2x2(...)       the same for one product
//   amx_c_begin / amx_k_step / amx_c_end   its parts (C loaded or zeroed; one k-step; C stored),
//                            for callers that issue the steps themselves (amx_queue.hpp)
//   bf16_pairs(x0, x1)       the VNNI pairs of two fp32 vectors (a row of a B operand)
// Each kernel call configures the tiles itself (ldtilecfg) and releases them at the end, so no
// tile state outlives a call and nothing else in the process is affected. Only defined where
// AVX-512BW is enabled (the avx512 units); callers check
// isa_at_least(simd::runtime_isa(), Isa::amx).
// POLYATTN_AMX_EMULATE=1 (CMake option of the same name, for tests on CPUs without AMX) computes
// amx_block_sum with scalar code (the same products: bf16 inputs, fp32 sums, denormal inputs
// flushed; the order of the sums may differ from the tiles'). Such a build reports the amx level
// on a CPU with AVX512-BF16 only while the environment variable POLYATTN_AMX_EMULATE=1 is set
// (amx_emulation_requested), so one sanitizer build runs the suite on its usual paths and, with
// the variable, the kernels' amx code paths (layouts, packing, softmax).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "polyattn/core/simd/convert.hpp"

#if defined(__linux__) && (defined(__x86_64__))
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace polyattn::simd {

/// Whether the environment asks an emulating build to report the amx level
/// (POLYATTN_AMX_EMULATE=1; read once).
inline bool amx_emulation_requested() noexcept {
  static const bool on = [] {
    const char* v = std::getenv("POLYATTN_AMX_EMULATE");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return on;
}

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
#if defined(POLYATTN_AMX_EMULATE) && POLYATTN_AMX_EMULATE
#define POLYATTN_AMX_EMULATED 1
#else
#define POLYATTN_AMX_EMULATED 0
#endif

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
#if POLYATTN_AMX_EMULATED
  AmxScope() noexcept = default;
#else
  POLYATTN_TARGET_AMX AmxScope() noexcept {
    static const AmxConfig cfg;
    _tile_loadconfig(&cfg);
  }
  POLYATTN_TARGET_AMX ~AmxScope() { _tile_release(); }
#endif
  AmxScope(const AmxScope&) = delete;
  AmxScope& operator=(const AmxScope&) = delete;
};

/// One product of a block sum: A_s is 32 rows × 32 bf16 columns at a + s · a_step bytes (row
/// stride lda bytes), B_s 16 pair-rows × 32 columns at b + s · b_step bytes (row stride ldb
/// bytes), for s < steps.
struct AmxTerm {
  const void* a;
  std::int64_t lda, a_step;
  const void* b;
  std::int64_t ldb, b_step, steps;
};

// The three parts of a 2 × 2 block product on tiles (C in tiles 0–3, A in 4–5, B in 6–7):
// C loaded (accumulate) or zeroed; one step of 32 channels, C += A · B with A 32 rows × 64 bytes
// at a (stride lda bytes) and B 16 pair-rows × 128 bytes at b (stride ldb bytes); C stored.
POLYATTN_TARGET_AMX inline void amx_c_begin(bool accumulate, float* c, std::int64_t ldc) {
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
}
POLYATTN_TARGET_AMX inline void amx_load_a(const char* a, std::int64_t lda) {
  _tile_loadd(4, a, lda);
  _tile_loadd(5, a + 16 * lda, lda);
}
POLYATTN_TARGET_AMX inline void amx_load_b(const char* b, std::int64_t ldb) {
  _tile_loadd(6, b, ldb);
  _tile_loadd(7, b + 64, ldb);
}
POLYATTN_TARGET_AMX inline void amx_dp_2x2() {
  _tile_dpbf16ps(0, 4, 6);
  _tile_dpbf16ps(1, 4, 7);
  _tile_dpbf16ps(2, 5, 6);
  _tile_dpbf16ps(3, 5, 7);
}
POLYATTN_TARGET_AMX inline void amx_k_step(const char* a, std::int64_t lda, const char* b,
                                           std::int64_t ldb) {
  amx_load_a(a, lda);
  amx_load_b(b, ldb);
  amx_dp_2x2();
}
POLYATTN_TARGET_AMX inline void amx_c_end(float* c, std::int64_t ldc) {
  const std::int64_t ldcb = ldc * 4;
  _tile_stored(0, c, ldcb);
  _tile_stored(1, c + 16, ldcb);
  _tile_stored(2, c + 16 * ldc, ldcb);
  _tile_stored(3, c + 16 * ldc + 16, ldcb);
}

/// C (32 × 32 fp32 at c, row stride ldc floats) (= or +=) Σ over the n terms of Σ_s A_s · B_s,
/// with C held in tiles 0–3 across all of them (A in 4–5, B in 6–7). The k-steps go outside and
/// the terms inside, so that terms sharing an operand (a split product: Ahi·Bhi, Ahi·Blo,
/// Alo·Bhi) load it once a step: 10 tile loads for 12 tile products with three terms, 6 for 8
/// with two, instead of one per product (tile loads stall the products when the core is
/// contended; docs/conventions.md §9.8). The sum into each C element runs step by step, term by
/// term within a step. Needs an AmxScope on this thread.
POLYATTN_TARGET_AMX inline void amx_block_sum(const AmxTerm* terms, int n, bool accumulate,
                                              float* c, std::int64_t ldc) {
  std::int64_t steps = 0;
  for (int m = 0; m < n; ++m) steps = std::max(steps, terms[m].steps);
#if POLYATTN_AMX_EMULATED
  const auto value = [](const char* p) {  // bf16 → fp32, denormals → 0
    std::uint16_t h;
    std::memcpy(&h, p, 2);
    if ((h & 0x7F80u) == 0) h &= 0x8000u;
    const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  };
  for (int i = 0; i < 32; ++i)
    for (int j = 0; j < 32; ++j) {
      float acc = accumulate ? c[i * ldc + j] : 0.f;
      for (std::int64_t s = 0; s < steps; ++s) {
        for (int m = 0; m < n; ++m) {
          const AmxTerm& t = terms[m];
          if (s >= t.steps) continue;
          const char* arow = static_cast<const char*>(t.a) + s * t.a_step + i * t.lda;
          const char* bcol = static_cast<const char*>(t.b) + s * t.b_step + j * 4;
          for (int k = 0; k < 16; ++k)  // pair k: A columns 2k, 2k + 1; B pair-row k
            acc += value(arow + 4 * k) * value(bcol + k * t.ldb) +
                   value(arow + 4 * k + 2) * value(bcol + k * t.ldb + 2);
        }
      }
      c[i * ldc + j] = acc;
    }
#else
  amx_c_begin(accumulate, c, ldc);
  for (std::int64_t s = 0; s < steps; ++s) {
    const char *a_in = nullptr, *b_in = nullptr;  // the operands tiles 4–5 and 6–7 hold
    std::int64_t lda_in = 0, ldb_in = 0;
    for (int m = 0; m < n; ++m) {
      const AmxTerm& t = terms[m];
      if (s >= t.steps) continue;
      const char* a = static_cast<const char*>(t.a) + s * t.a_step;
      const char* b = static_cast<const char*>(t.b) + s * t.b_step;
      if (a != a_in || t.lda != lda_in) amx_load_a(a, t.lda);
      if (b != b_in || t.ldb != ldb_in) amx_load_b(b, t.ldb);
      a_in = a, lda_in = t.lda, b_in = b, ldb_in = t.ldb;
      amx_dp_2x2();
    }
  }
  amx_c_end(c, ldc);
#endif
}

/// C (32 × 32 fp32 at c, row stride ldc floats) (= or +=) Σ_{s < steps} A_s · B_s (one AmxTerm).
POLYATTN_TARGET_AMX inline void amx_block_2x2(const void* a, std::int64_t lda, std::int64_t a_step,
                                              const void* b, std::int64_t ldb, std::int64_t b_step,
                                              std::int64_t steps, bool accumulate, float* c,
                                              std::int64_t ldc) {
  const AmxTerm term{a, lda, a_step, b, ldb, b_step, steps};
  amx_block_sum(&term, 1, accumulate, c, ldc);
}

/// The VNNI pairs of two fp32 vectors: word i = bf16(x0[i]) | bf16(x1[i]) << 16 (nearest even,
/// AVX512-BF16), a 16-column row of a B operand of amx_block_2x2.
POLYATTN_TARGET_AMX inline __m512i bf16_pairs(__m512 x0, __m512 x1) {
  // cvtne2ps gives x0's 16 bf16 in words 0–15 and x1's in 16–31; the permute interleaves them.
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                       23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
}

}  // namespace POLYATTN_ISA_NS
}  // namespace polyattn::simd

#else
#define POLYATTN_HAVE_AMX 0
#endif
