// polyattn/linear/stages/chunk_buffers.hpp — the working set of one chunk of C tokens in the
// chunked algorithm, carved out of the caller's Workspace. Row-major, leading dimension in
// brackets:
//   Q   [C×K] (K)   scale·q (L2-normalised when asked)       Kc  [C×K] (K)  keys (normalised)
//   tmp [C×K] (K)   gated copies                             Kt  [K×C] (C)  Kᵀ (scalar gates),
//                                                            or the tiles' state-key pairs
//   QK  [C×C] (C)   gated Gram q·k, s ≤ t                    KK  [C×C] (C)  gated Gram k·k, s < t
//   R   [C×(V+K)]   delta right-hand side [β v | β e^b k], solved in place into [Uc | W]
//                   (wy_solve only: not carved for the AMX tiles, whose solve is their own)
//   U   [C×V] (V)   values (additive) or the solved update   O   [C×V] (V)  outputs
//   beta[C]         β of the chunk's tokens (a weighted additive update: its weights w_t)
//   b   [C×bK]      cumulative log gates (bK = K for key-channel gates, 1 otherwise)
//   eb  [C×bK]      e^{b}
//   extra [C×K + K] scratch of the Gram and state stages
// and, for the chunk products on AMX tiles (linear/chunked_amx.hpp), the bf16 operands
// (TileOperands, laid out by chunked_amx.hpp; C a multiple of 32, each buffer 64-byte
// aligned):
//   Qb, Kb, Tb [C×K] bf16   A operands: queries, keys (input rows, or gated), gated keys
//   Ql, Kl, Tl [C×K] bf16   their low halves where split (key-channel gates)
//   Ah, Al     [C×C] bf16   T of the delta rule, then the masked intra-chunk scores, split
//   Keh, Kel   [K×C] bf16   the state pass's keys, transposed (split for key-channel gates)
//   Kp, Kpl    [K/2×C]      B operand of the Grams: keys as pairs (words), split
//   Sh, Sl     [K/2×V]      the chunk's initial state as pairs, split
//   Uh, Ul     [C/2×V]      the chunk's updates as pairs, split
//   Fh, Fl     [C/2×V]      the delta rule's right-hand side, then the updates times
//                           e^{b_L − b} (scalar gates), split
//   dS         [32×32] fp32 one block of the chunk's state contribution (e^{b_L − b} ∘ K)ᵀ U
//   qn, kn     [C] fp32     the row factors of the queries and keys (scale, L2 norms)
#pragma once

#include <cstddef>
#include <cstdint>

#include "polyattn/core/tensor_view.hpp"
#include "polyattn/linear/head.hpp"

namespace polyattn::linear::stages {

struct ChunkBuffers {
  index_t C = 0, K = 0, V = 0, bK = 1;
  float *Q, *Kc, *tmp, *Kt, *QK, *KK, *R, *U, *O, *beta, *b, *eb, *extra;

  // Floats of the working set for chunks of up to C tokens; with_R: R too (the fp32 stages'
  // wy_solve; the AMX tiles do without it).
  static constexpr std::size_t floats(index_t C, index_t K, index_t V, bool key_channel,
                                      bool with_R = true) {
    const index_t bK = key_channel ? K : 1;
    return static_cast<std::size_t>(3 * C * K + K * C + 2 * C * C + (with_R ? C * (V + K) : 0) +
                                    2 * C * V + C + 2 * C * bK + C * K + K);
  }

  // Lays the buffers out in ws (at least floats(C, K, V, key_channel, with_R) long); without R,
  // w.R is null.
  static ChunkBuffers carve(const Workspace& ws, index_t C, index_t K, index_t V, bool key_channel,
                            bool with_R = true) noexcept {
    ChunkBuffers w;
    w.C = C;
    w.K = K;
    w.V = V;
    w.bK = key_channel ? K : 1;
    w.Q = ws.data;
    w.Kc = w.Q + C * K;
    w.tmp = w.Kc + C * K;
    w.Kt = w.tmp + C * K;
    w.QK = w.Kt + K * C;
    w.KK = w.QK + C * C;
    w.R = with_R ? w.KK + C * C : nullptr;
    w.U = w.KK + C * C + (with_R ? C * (V + K) : 0);
    w.O = w.U + C * V;
    w.beta = w.O + C * V;
    w.b = w.beta + C;
    w.eb = w.b + C * w.bK;
    w.extra = w.eb + C * w.bK;
    return w;
  }
  index_t rw() const noexcept { return V + K; }  // row width of R
};

struct TileOperands {
  std::uint16_t *Qb, *Kb, *Tb, *Ql, *Kl, *Tl, *Ah, *Al, *Keh, *Kel;
  std::uint32_t *Kp, *Kpl, *Sh, *Sl, *Uh, *Ul, *Fh, *Fl;
  float *dS, *qn, *kn;

  // 32-bit words of one buffer of n bf16 (or n / 2 words), rounded up to whole 64-byte lines.
  static constexpr std::size_t line_words(index_t n_bf16) {
    return (static_cast<std::size_t>(n_bf16) / 2 + 15) / 16 * 16;
  }
  // Floats (32-bit words) of the operands for chunks of up to C tokens, with the alignment slack.
  static constexpr std::size_t floats(index_t C, index_t K, index_t V) {
    return 6 * line_words(C * K) + 2 * line_words(C * C) + 4 * line_words(K * C) +
           2 * line_words(K * V) + 4 * line_words(C * V) + line_words(2 * 32 * 32) +
           2 * line_words(2 * C) + 16;
  }
};

}  // namespace polyattn::linear::stages
