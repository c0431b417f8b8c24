// polyattn/softmax/flash_problem.hpp — what the tiled softmax prefill (flash.hpp) prepares once
// per call and its per-ISA kernels read: the tile sizes, the sequences of the call, the packed
// K / V operands (fp32 rows, or bf16 tile operands for the amx path, flash_amx.hpp) and the
// forgetting-gate cumsums.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/buffer.hpp"
#include "polyattn/core/element_view.hpp"
#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::softmax {

// Whether this compiler builds the amx path into avx512 code (GCC / Clang on x86-64).
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define POLYATTN_FLASH_AMX 1
#else
#define POLYATTN_FLASH_AMX 0
#endif

#ifndef POLYATTN_FLASH_TQ
#define POLYATTN_FLASH_TQ 64
#define POLYATTN_FLASH_TK 64
#endif
inline constexpr index_t kTileQ = POLYATTN_FLASH_TQ;  // query rows per work item
// Keys per inner tile (a multiple of every batch width).
inline constexpr index_t kTileK = POLYATTN_FLASH_TK;
// Packed V / O rows are padded to a multiple of this (whole batches of every ISA).
inline constexpr index_t kPadV = simd::kMaxBatchFloats;
static_assert(kTileQ % simd::kMaxBatchFloats == 0 && kTileK % simd::kMaxBatchFloats == 0,
              "tiles must hold whole batches of every ISA");

constexpr index_t round_up(index_t x, index_t m) noexcept {
  return (x + m - 1) / m * m;
}

// One sequence of the call: queries [q0, q0 + nq) and keys [k0, k0 + nk) of batch row b.
struct SeqRange {
  index_t b, q0, nq, k0, nk;
};

/// Outputs of flash_attention: o is required, lse and row_max are optional (absent views).
struct FlashOutputs {
  MutEView4 o;           // [B, T, HQ, Dv] fp32, bf16 or fp16; a query that sees no key gets zeros
  View3<float> lse;      // [B, T, HQ]: log(Σ_{j visible} e^{s_ij} [+ e^{sink}]), −inf if none
  View3<float> row_max;  // [B, T, HQ]: max_{j visible} s_ij of the scores the kernel used (after
                         // the modifiers; the sink logit not included), −inf if none
};

// How the products of a call are computed: fp32 FMA (any element types) or AMX-BF16 tiles (bf16
// q, k, v on the amx level; see uses_bf16_products()).
enum class FlashPath : std::uint8_t { fp32, amx };

// Everything the per-tile kernel reads, prepared by flash_attention().
struct FlashProblem {
  SoftmaxDims d;
  const SoftmaxInputs* in = nullptr;
  const SoftmaxOptions* opt = nullptr;
  MutEView4 o;
  View3<float> lse;      // optional [B, T, HQ]
  View3<float> row_max;  // optional [B, T, HQ]
  std::vector<SeqRange> seqs;
  index_t Dvp = 0;       // Dv rounded up to kPadV
  index_t tq = 0;        // query rows per work item: kTileQ, or kAmxTileQ on the amx path
  Buffer<float> kp, vp;  // packed K rows [nk][D] / padded V rows [nk][Dvp] (written by the pack)
  // The amx path (bf16 q, k, v and the level reached; FlashPath) packs instead of kp / vp
  // (flash_amx.hpp), per (sequence, kv head), with the keys rounded up to a multiple of 32 and
  // zero padding: K as bf16 pairs of channels [keys][Dk2 / 2] in kw, V in blocks of 32 keys,
  // each transposed, [keys / 32][Dvt][32] bf16 in vt, and per key tile (kTileK) whether that
  // tile of V is all finite.
  FlashPath path = FlashPath::fp32;
  index_t Dk2 = 0;  // D rounded up to 32
  index_t Dvt = 0;  // Dv rounded up to 32
  // kw / vt: every element written by the pack, padding included; Buffer starts them on a
  // 64-byte boundary, so tile rows are whole cache lines (misaligned tiles cost ~1.5x measured).
  Buffer<std::uint32_t> kw;
  Buffer<std::uint16_t> vt;
  std::vector<std::uint8_t> v_finite;
  std::vector<std::size_t> vf_off;
  std::vector<std::size_t> kp_off;  // per (sequence, kv head): [seq · HKV + hk]
  std::vector<std::size_t> vp_off;
  std::vector<double> G;           // forgetting gate cumsum per (sequence, q head, key)
  std::vector<std::size_t> g_off;  // [seq · HQ + h]
};

struct FlashTask {
  index_t seq, head, tile;
};
}  // namespace polyattn::softmax
