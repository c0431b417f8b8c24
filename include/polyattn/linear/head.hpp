// polyattn/linear/head.hpp — one (sequence, value head) problem of the linear family, the unit
// of work every linear-attention kernel (Recurrent, Chunked<C>, Parallel) consumes.
//
// The operator lowers its compile-time policies (decay, update, normaliser; feature maps are
// applied before) into a HeadProblem with plain pointers: token t of q lives at q + t·q_st, a
// row of K contiguous floats, and so on. Kernels run SPEC.md §2 over the T tokens:
//   S ← Decay_t(S);  u_t = v_t  or  β_t(v_t − Sᵀk_t);  S ← S + k_t u_tᵀ;  z ← z + k_t;
//   o_t = Sᵀ(scale·q_t)  [ / (scale·q_t·z + eps) ]
// with q, k first L2-normalised when qk_l2norm. `state` ([K][V], row-major, contiguous) holds
// the initial state on entry and the final state on exit; `z` ([K]) likewise for the Sum
// normaliser. Per-head modes are runtime values: the per-token branch on them is negligible
// next to the O(K·V) state work, and it keeps the number of SIMD instantiations small enough
// to compile once per ISA (see linear/kernels.hpp).
#pragma once

#include <vector>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::linear {

struct HeadProblem {
  index_t T = 0, K = 0, V = 0;
  const float* q = nullptr;
  index_t q_st = 0;
  const float* k = nullptr;
  index_t k_st = 0;
  const float* v = nullptr;
  index_t v_st = 0;

  Decay decay = Decay::None;
  float g_gamma = 0.f;       // ConstantPerHead: log-decay of this head
  const float* g = nullptr;  // ScalarPerToken: g[t·g_st]
  index_t g_st = 0;
  const float* gk = nullptr;  // VectorPerToken: K floats at gk + t·gk_st
  index_t gk_st = 0;

  Update update = Update::Additive;
  const float* beta = nullptr;  // Delta: beta[t·beta_st]
  index_t beta_st = 0;
  bool qk_l2norm = false;

  Normalizer normalizer = Normalizer::None;
  float eps = 1e-6f;
  float scale = 1.f;

  float* o = nullptr;  // V floats at o + t·o_st
  index_t o_st = 0;
  float* state = nullptr;  // [K][V] contiguous, in/out
  float* z = nullptr;      // [K], in/out, Sum normaliser only

  // Chunk-parallel pieces (Chunked, additive update, one chunk per call; see operator.hpp):
  // with delta_out set, the kernel writes the chunk's own state contribution (e^{b_L−b}∘K)ᵀV
  // [K][V] and its decay e^{b_L} [K] to decay_out, and touches neither o nor state.
  float* delta_out = nullptr;
  float* decay_out = nullptr;
  bool update_state = true;  // false: outputs only, the state is left as it was
};

// Per-thread scratch memory reused across heads (kernels grow it as needed).
struct Workspace {
  std::vector<float> f;
  float* floats(std::size_t n) {
    if (f.size() < n) f.resize(n);
    return f.data();
  }
};

}  // namespace polyattn::linear
