// polyattn/linear/stages/prefetch.hpp — asking for a head's token rows before they are used:
//   prefetch_token<A>(p, t)          the q, k, v, o (for writing) and key-channel gate rows of
//                                    token t of problem p (nothing past the last token)
// A head's rows lie H·K elements apart, a stride the hardware prefetchers do not follow across
// pages, so a token loop that does not ask ahead waits for memory on every row (recurrent.hpp
// asks a few tokens ahead). The tile chunk loop (chunked_amx.hpp) asks kRowsAhead tokens ahead of
// its first pass over a chunk's rows, so the later passes find them in cache, and with lockstep
// heads (scheduler.hpp) asks for the next head's rows of the same tokens, a quarter between each
// of its products, so that head's first pass finds them too (KDA bf16 −4 to −10 %, Gated
// DeltaNet −3 to −6 % on one thread of the Xeon); the fp32 chunk loop does not: asking for the
// whole next chunk at once measured no faster (its cost is a page walk per row and head,
// docs/conventions.md §9.8).
#pragma once

#include "polyattn/linear/head.hpp"
#include "polyattn/linear/stages/rows.hpp"
#include "polyattn/policies/decay.hpp"

namespace polyattn::linear::stages {

// Tokens the tile chunk loop asks ahead: about the latency of a row's page walk and miss at
// the loop's pace (KDA's non-tile time −9 %, Gated DeltaNet's −2 % on the development VM).
inline constexpr index_t kRowsAhead = 8;

// Tokens a later pass over a chunk's rows asks ahead: the chunk's rows (about 96 KB for KDA at
// K = V = 128 in bf16) no longer fit in L1 once the first pass is done, so each later pass
// brings its rows back from L2 a few tokens ahead of use.
inline constexpr index_t kRowsNear = 4;

template <simd::SimdArch A, class P>
POLYATTN_ALWAYS_INLINE void prefetch_token(const HeadProblem<P>& p, index_t t) noexcept {
  if (t >= p.T) return;
  prefetch_row<A>(InRows{p.q, p.q_st, p.q_type}, t, p.K);
  prefetch_row<A>(InRows{p.k, p.k_st, p.k_type}, t, p.K);
  prefetch_row<A>(InRows{p.v, p.v_st, p.v_type}, t, p.V);
  prefetch_row<A>(OutRows{p.o, p.o_st, p.o_type}, t, p.V);
  if constexpr (P::shape == GateShape::KeyChannel) gate_prefetch_row<A>(p.gate, t, p.K);
}

}  // namespace polyattn::linear::stages
