// polyattn/linear/state_copy.hpp — copies of one head's K×V state block between the kernels'
// working layout (contiguous [K][V]) and a caller's strided memory: HeadStates' load / store
// (scheduler.hpp) and the commit of a speculative verify (speculative.hpp) when the caller's
// block is not [K][V] rows, as Mamba2's [P][N] state seen as [N][P] (linear/mamba2.hpp).
// Plain copies (no arithmetic), used on the caller's side only, never in the per-ISA units.
#pragma once

#include <algorithm>

#include "polyattn/core/tensor_view.hpp"

namespace polyattn::linear {

/// Copies a K×V block between a head's working state (contiguous [K][V]) and strided memory,
/// element (i, j) at mem[i·si + j·sj]: whole rows when sj == 1; for a transposed layout
/// (si == 1, e.g. Mamba2's [P][N] state seen as [N][P]) in 4×4 blocks read and written as four
/// runs of four floats each (about 1.8× faster than the elementwise loop, which the compiler
/// leaves scalar); anything else elementwise. A copy: the bits are those of the elementwise loop.
inline void gather_block(const float* mem, index_t si, index_t sj, float* S, index_t K, index_t V) {
  if (sj == 1) {
    for (index_t i = 0; i < K; ++i) std::copy(mem + i * si, mem + i * si + V, S + i * V);
    return;
  }
  index_t K4 = 0, V4 = 0;
  if (si == 1) {
    K4 = K / 4 * 4;
    V4 = V / 4 * 4;
    for (index_t j0 = 0; j0 < V4; j0 += 4)
      for (index_t i0 = 0; i0 < K4; i0 += 4) {
        float t[4][4];
        for (index_t a = 0; a < 4; ++a)
          for (index_t b = 0; b < 4; ++b) t[a][b] = mem[(j0 + a) * sj + i0 + b];
        for (index_t b = 0; b < 4; ++b)
          for (index_t a = 0; a < 4; ++a) S[(i0 + b) * V + j0 + a] = t[a][b];
      }
  }
  for (index_t i = 0; i < K; ++i)  // what the blocks left: rows ≥ K4, or columns ≥ V4
    for (index_t j = i < K4 ? V4 : 0; j < V; ++j) S[i * V + j] = mem[i * si + j * sj];
}
inline void scatter_block(const float* S, index_t K, index_t V, float* mem, index_t si,
                          index_t sj) {
  if (sj == 1) {
    for (index_t i = 0; i < K; ++i) std::copy(S + i * V, S + i * V + V, mem + i * si);
    return;
  }
  index_t K4 = 0, V4 = 0;
  if (si == 1) {
    K4 = K / 4 * 4;
    V4 = V / 4 * 4;
    for (index_t j0 = 0; j0 < V4; j0 += 4)
      for (index_t i0 = 0; i0 < K4; i0 += 4) {
        float t[4][4];
        for (index_t b = 0; b < 4; ++b)
          for (index_t a = 0; a < 4; ++a) t[b][a] = S[(i0 + b) * V + j0 + a];
        for (index_t a = 0; a < 4; ++a)
          for (index_t b = 0; b < 4; ++b) mem[(j0 + a) * sj + i0 + b] = t[b][a];
      }
  }
  for (index_t i = 0; i < K; ++i)
    for (index_t j = i < K4 ? V4 : 0; j < V; ++j) mem[i * si + j * sj] = S[i * V + j];
}

}  // namespace polyattn::linear
