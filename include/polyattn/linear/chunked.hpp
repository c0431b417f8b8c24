// polyattn/linear/chunked.hpp — the Chunked<C> and Parallel algorithms for one head: chunks of
// L ≤ C tokens starting from state S0 [K×V], composed from the stages in linear/stages/
// (as fla's chunk.py composes its ops/common stages):
//   0 chunk_inputs  Q = scale·q, Kc = k (L2-normalised when asked; bf16 / fp16 rows converted)
//   1 gates         b_t = Σ_{s≤t} γ_s (chunk-relative), e^{b}           — the decay's hooks
//   2 gram          QK[t,s] = q_t·k_s Γ[t,s] (s ≤ t), KK (s < t) for the delta rule
//   3 wy_solve      delta rule: (I + tril(β·KK, −1)) [Uc | W] = [β∘V | β∘e^{b}∘K],
//                   U = Uc − W S0 (the chunk's β from the update's hooks); additive: U = V
//                   (or w_t·V with a weighted update, the weights in β's buffer)
//   4 output        O = (e^{b} ∘ Q) S0 + (QK masked s ≤ t) U  [/ (Q·z + eps)]
//   5 state_pass    S_new = e^{b_L} ∘ S0 + (e^{b_L − b} ∘ K)ᵀ U
// The policies' compile-time properties (gate shape, delta, running sum) pick each stage's
// specialisation. Parallel is the same computation with one chunk spanning T (the masked T×T
// form), limited to T ≤ kParallelMaxT. q, k, v and o may each be fp32, bf16 or fp16
// (HeadProblem's types): rows are converted into the chunk buffers at stages 0 and 3 (additive:
// the copy of V into U) and output rows rounded at stage 4 (stages/rows.hpp); fp32 rows are read
// and written in place as before, so every stage between is the fp32 code. At the amx level, bf16
// q, k and v run the same stages with their matrix products on AMX tiles (chunked_amx.hpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/linear/chunked_amx.hpp"
#include "polyattn/linear/head.hpp"
#include "polyattn/linear/stages/chunk_buffers.hpp"
#include "polyattn/linear/stages/chunk_inputs.hpp"
#include "polyattn/linear/stages/gates.hpp"
#include "polyattn/linear/stages/gram.hpp"
#include "polyattn/linear/stages/output.hpp"
#include "polyattn/linear/stages/rows.hpp"
#include "polyattn/linear/stages/state_pass.hpp"
#include "polyattn/linear/stages/wy_solve.hpp"
#include "polyattn/policies/algorithm.hpp"

namespace polyattn::linear {

// The AMX tiles' chunk limit (T's substitution is cubic in the chunk; chunked_amx.hpp).
inline constexpr index_t kTileMaxChunk = 128;

// In the per-ISA namespace: the kernel units call them (core/simd/arch.hpp).
inline namespace POLYATTN_ISA_NS {
// Rows of the tiles' padded chunk buffers for chunks of up to `chunk` tokens.
constexpr index_t tile_rows(index_t chunk) noexcept {
  return (chunk + 31) / 32 * 32;
}
// Whether a chunked call's element types and sizes suit the AMX tiles (docs/conventions.md
// §9.8): q, k and v bf16, K and V multiples of 32, chunks of at most kTileMaxChunk tokens.
// ChunkedKernel::on_tiles adds the kernel's ISA, the amx level and "not a verify";
// LinearAttention::uses_bf16_products asks the same ISA conditions from outside the kernels.
constexpr bool tile_problem(Dtype q, Dtype k, Dtype v, index_t K, index_t V,
                            index_t chunk) noexcept {
  return q == Dtype::bf16 && k == Dtype::bf16 && v == Dtype::bf16 && K % 32 == 0 && V % 32 == 0 &&
         chunk <= kTileMaxChunk;
}
// Terms of the tiles' products that reach only o (chunked_amx.hpp, OutputTerms) when o is finally
// stored as bf16, whose own rounding (2⁻⁹ relative) dominates: 2, the left operand rounded once
// (1 would round both; docs/conventions.md §9.8 has the errors measured for each). Any other o
// takes 3, as every product that reaches the state does.
inline constexpr int kBf16OutputTerms = 2;
constexpr int output_product_terms(Dtype o_final) noexcept {
  return o_final == Dtype::bf16 ? kBf16OutputTerms : 3;
}
}  // namespace POLYATTN_ISA_NS

// Chunked algorithm with chunk size `chunk` (Parallel: chunk = T) over problem->T tokens;
// problem->state / z are updated in place (or the chunk-parallel pieces written, head.hpp).
template <class P>
struct ChunkedKernel {
  const HeadProblem<P>* problem;
  Workspace workspace;  // at least workspace_floats(chunk, K, V)
  index_t chunk;
  // The caller's simd::runtime_isa() reaches amx (asked outside the per-ISA units, whose symbols
  // must all be ISA-specific): bf16 calls may then run on AMX tiles (on_tiles).
  bool amx_level = false;

  // Either path's: the fp32 stages' chunk buffers, or (chunks the tiles take) the tiles' padded
  // chunk buffers without R and their operands.
  static constexpr std::size_t workspace_floats(index_t chunk, index_t K, index_t V) {
    const bool key_channel = P::shape == GateShape::KeyChannel;
    const std::size_t fp32 = stages::ChunkBuffers::floats(chunk, K, V, key_channel);
    if (chunk > kTileMaxChunk) return fp32;
    const index_t Ct = tile_rows(chunk);
    return std::max(fp32, stages::ChunkBuffers::floats(Ct, K, V, key_channel, false) +
                              stages::TileOperands::floats(Ct, K, V));
  }
  template <simd::SimdArch A>
  void operator()(A) const;

  // Whether this call runs on AMX tiles (chunked_amx.hpp): the avx512 body at the amx level, a
  // tile_problem, not a speculative verify (whose commit replays the fp32 stages).
  template <simd::SimdArch A>
  bool on_tiles() const noexcept {
    const HeadProblem<P>& p = *problem;
    if constexpr (!std::is_same_v<A, simd::avx512> || !POLYATTN_HAVE_AMX) {
      return false;
    } else {
      return tile_problem(p.q_type, p.k_type, p.v_type, p.K, p.V, chunk) && !p.keep && amx_level;
    }
  }
};

template <class P>
template <simd::SimdArch A>
void ChunkedKernel<P>::operator()(A) const {
  const HeadProblem<P>& p = *problem;
  if (p.T <= 0) return;
  const bool key_channel = P::shape == GateShape::KeyChannel;
#if POLYATTN_HAVE_AMX
  if constexpr (std::is_same_v<A, simd::avx512>) {
    if (on_tiles<A>()) {
      const index_t Ct = tile_rows(chunk);  // rows of the padded chunk buffers, no R
      float* operands =
          workspace.data + stages::ChunkBuffers::floats(Ct, p.K, p.V, key_channel, false);
      const auto w = stages::ChunkBuffers::carve(workspace, Ct, p.K, p.V, key_channel, false);
      const auto x = stages::carve_tile_operands<A>(operands, Ct, p.K, p.V);
      if (output_product_terms(p.o_final_type) == kBf16OutputTerms)
        return stages::chunked_on_tiles<A, kBf16OutputTerms>(p, chunk, w, x);
      return stages::chunked_on_tiles<A, 3>(p, chunk, w, x);
    }
  }
#endif
  const index_t C = std::min(chunk, p.T), K = p.K, V = p.V;
  const stages::ChunkBuffers w = stages::ChunkBuffers::carve(workspace, C, K, V, key_channel);
  float* S = p.state;
  const bool want_out = p.o != nullptr;
  const stages::InRows q{p.q, p.q_st, p.q_type}, k{p.k, p.k_st, p.k_type}, v{p.v, p.v_st, p.v_type};
  const stages::OutRows o{p.o, p.o_st, p.o_type};
  for (index_t c0 = 0; c0 < p.T; c0 += C) {
    const index_t L = std::min(C, p.T - c0);
    const stages::InRows vc = stages::rows_from<A>(v, c0);
    stages::load_queries_keys<A>(L, K, stages::rows_from<A>(q, c0), stages::rows_from<A>(k, c0),
                                 p.scale, p.qk_l2norm, w.Q, w.Kc);
    stages::cumulative_gates<A, P::shape>(p.gate, c0, L, K, w.b, w.eb);
    stages::gated_gram<A, P::shape>(L, w, want_out, P::delta);
    if constexpr (P::delta) {
      update_betas<A>(p.update, c0, w.beta, L);
      stages::wy_solve<A, P::shape>(L, w, vc, S);
    } else {
      stages::additive_updates<A, P::weighted>(p.update, c0, L, vc, w);
    }
    if (p.keep) {  // speculative verify: what CommitKernel needs for any prefix (one chunk)
      std::copy(w.Kc, w.Kc + L * K, p.keep);
      std::copy(w.U, w.U + L * V, p.keep + L * K);
      if constexpr (P::shape != GateShape::None)
        std::copy(w.b, w.b + L * w.bK, p.keep + L * (K + V));
    }
    if (want_out)
      stages::chunk_output<A, P::shape, P::running_sum>(L, w, S, w.U, stages::rows_from<A>(o, c0),
                                                        p.z, p.eps);
    if (!p.delta_out && !p.update_state) continue;
    stages::state_pass<A, P::shape>(L, w, w.U, S, p.delta_out, p.decay_out);
  }
}

}  // namespace polyattn::linear
