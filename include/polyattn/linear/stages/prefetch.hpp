// polyattn/linear/stages/prefetch.hpp — asking for a head's token rows before they are used:
//   prefetch_token<A>(p, t)          the q, k, v, o (for writing) and key-channel gate rows of
//                                    token t of problem p (nothing past the last token)
//   prefetch_tokens<A>(p, t0, t1)    the same for tokens [t0, t1)
// A head's rows lie H·K elements apart, a stride the hardware prefetchers do not follow across
// pages, so a loop that does not ask ahead waits for memory on every row: the token loops ask a
// few tokens ahead, the chunk loops for the whole next chunk while the current one computes.
#pragma once

#include "polyattn/linear/head.hpp"
#include "polyattn/linear/stages/rows.hpp"
#include "polyattn/policies/decay.hpp"

namespace polyattn::linear::stages {

template <simd::SimdArch A, class P>
POLYATTN_ALWAYS_INLINE void prefetch_token(const HeadProblem<P>& p, index_t t) noexcept {
  if (t >= p.T) return;
  prefetch_row<A>(InRows{p.q, p.q_st, p.q_type}, t, p.K);
  prefetch_row<A>(InRows{p.k, p.k_st, p.k_type}, t, p.K);
  prefetch_row<A>(InRows{p.v, p.v_st, p.v_type}, t, p.V);
  prefetch_row<A>(OutRows{p.o, p.o_st, p.o_type}, t, p.V);
  if constexpr (P::shape == GateShape::KeyChannel) gate_prefetch_row<A>(p.gate, t, p.K);
}

template <simd::SimdArch A, class P>
void prefetch_tokens(const HeadProblem<P>& p, index_t t0, index_t t1) noexcept {
  for (index_t t = t0; t < t1 && t < p.T; ++t) prefetch_token<A>(p, t);
}

}  // namespace polyattn::linear::stages
