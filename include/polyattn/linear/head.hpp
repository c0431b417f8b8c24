// polyattn/linear/head.hpp — one (sequence, value head) problem of the linear family, the unit
// of work every linear-attention kernel (Recurrent, Chunked<C>, Parallel) consumes.
//
// The operator binds its compile-time policies (linear/policies.hpp: decay, update, normaliser;
// feature maps are applied before) to one head: a HeadProblem<P> holds plain pointers (token t
// of q lives at q + t·q_st, a row of K contiguous floats, ...) and the policies' bound gate and
// update, whose hooks the kernels call with t relative to the problem's first token. q, k, v and
// o are untyped pointers with their element type (fp32, bf16 or fp16; strides in elements of
// that type): kernels read a row into their fp32 buffers with stages::load_row (fp32 rows are
// read in place where the kernel did so before) and write o rows with stages::store_row, so the
// element type is switched on once per row, never inside the arithmetic. Kernels run
// docs/conventions.md §4 over the T tokens:
//   S ← D_t S;  u_t = v_t  or  β_t(v_t − Sᵀk_t);  S ← S + k_t u_tᵀ;  z ← z + k_t;
//   o_t = Sᵀ(scale·q_t)  [ / (scale·q_t·z + eps) ]
// with q, k first L2-normalised when qk_l2norm. `state` ([K][V], row-major, contiguous) holds
// the initial state on entry and the final state on exit; `z` ([K]) likewise for the Sum
// normaliser. Kernels never allocate: the caller hands them a Workspace of the size the kernel
// type asks for (kernels run in per-ISA units, which must not instantiate std::vector).
#pragma once

#include <cstddef>

#include "polyattn/core/element.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/linear/policies.hpp"

namespace polyattn::linear {

template <class P>
struct HeadProblem {
  index_t T = 0, K = 0, V = 0;
  const void* q = nullptr;  // token t's row of K elements at q + t·q_st (elements of q_type)
  index_t q_st = 0;
  const void* k = nullptr;
  index_t k_st = 0;
  const void* v = nullptr;  // V elements
  index_t v_st = 0;
  Dtype q_type = Dtype::f32, k_type = Dtype::f32, v_type = Dtype::f32;

  bound_gate_t<typename P::decay> gate{};       // log decay of token t
  bound_update_t<typename P::update> update{};  // β of token t (delta updates)
  bool qk_l2norm = false;
  float eps = 1e-6f;  // Sum normaliser
  float scale = 1.f;

  void* o = nullptr;  // V elements of o_type at o + t·o_st
  index_t o_st = 0;
  Dtype o_type = Dtype::f32;
  // The type o is finally stored in: o_type, or the caller's o behind an fp32 scratch (inner
  // stride ≠ 1). A bf16 o lets the AMX tiles round the products that reach only o
  // (chunked_amx.hpp), whichever way o is written.
  Dtype o_final_type = Dtype::f32;
  float* state = nullptr;  // [K][V] contiguous, in/out
  float* z = nullptr;      // [K], in/out, Sum normaliser only

  // Chunk-parallel pieces (Chunked, additive update, one chunk per call; linear/scheduler.hpp):
  // with delta_out set, the kernel writes the chunk's own state contribution (e^{b_L−b}∘K)ᵀV
  // [K][V] and its decay e^{b_L} [K] to decay_out, and touches neither o nor state.
  float* delta_out = nullptr;
  float* decay_out = nullptr;
  bool update_state = true;  // false: outputs only, the state is left as it was
  // Speculative verify (linear/speculative.hpp; one chunk holding all T tokens): the kernel
  // keeps the chunk's keys Kc [T×K], updates U [T×V] and cumulative log gates b [T×bK] here,
  // all that a later commit of any prefix needs (CommitKernel).
  float* keep = nullptr;
  // Lockstep heads (linear/scheduler.hpp): the head that runs the same tokens next, whose rows
  // the tile chunk loop asks for while its own products run (stages/prefetch.hpp); or null.
  const HeadProblem* next_head = nullptr;
};

// Scratch memory of one kernel call, owned by the caller.
struct Workspace {
  float* data = nullptr;
  std::size_t size = 0;
};

}  // namespace polyattn::linear
