// polyattn/linear/state_copy.hpp — copies of one head's K×V state block between the kernels'
// working layout (contiguous [K][V]) and a caller's strided memory: HeadStates' load / store
// (scheduler.hpp) and the commit of a speculative verify (speculative.hpp) when the caller's
// block is not [K][V] rows, as Mamba2's [P][N] state seen as [N][P] (linear/mamba2.hpp).
//   dst[i·dst.si + j·dst.sj] = src[i·src.si + j·src.sj],  0 ≤ i < K, 0 ≤ j < V
// Plain copies (no arithmetic), used on the caller's side only, never in the per-ISA units.
#pragma once

#include <algorithm>

#include "polyattn/core/tensor_view.hpp"

namespace polyattn::linear {

/// One side of a block copy: element (i, j) at p[i·si + j·sj].
template <class T>
struct StridedBlock {
  T* p;
  index_t si, sj;
  T& operator()(index_t i, index_t j) const { return p[i * si + j * sj]; }
};

/// A head's working state, contiguous [K][V].
template <class T>
StridedBlock<T> working_block(T* S, index_t V) {
  return {S, V, 1};
}

/// Transposes a 4×4 tile: dst[b·ds + a] = src[a·ss + b], four runs of four floats read, four
/// written.
inline void transpose_tile(const float* src, index_t ss, float* dst, index_t ds) {
  float t[4][4];
  for (index_t a = 0; a < 4; ++a)
    for (index_t b = 0; b < 4; ++b) t[a][b] = src[a * ss + b];
  for (index_t b = 0; b < 4; ++b)
    for (index_t a = 0; a < 4; ++a) dst[b * ds + a] = t[a][b];
}

/// Copies a K×V block, in either direction between working state and memory: whole rows when
/// both sides' rows are unit-stride; between a transposed side (si == 1, e.g. Mamba2's [P][N]
/// state seen as [N][P]) and a row-major one (sj == 1) in 4×4 tiles, each side read or written
/// as four runs of four floats along its own unit stride (about 1.8× faster than the
/// elementwise loop, which the compiler leaves scalar); anything else elementwise. A copy: the
/// bits are those of the elementwise loop.
inline void copy_block(StridedBlock<const float> src, StridedBlock<float> dst, index_t K,
                       index_t V) {
  if (src.sj == 1 && dst.sj == 1) {
    for (index_t i = 0; i < K; ++i) std::copy(&src(i, 0), &src(i, 0) + V, &dst(i, 0));
    return;
  }
  const bool tiles = (src.si == 1 && dst.sj == 1) || (src.sj == 1 && dst.si == 1);
  const index_t K4 = tiles ? K / 4 * 4 : 0, V4 = tiles ? V / 4 * 4 : 0;
  const index_t src_runs = src.si == 1 ? src.sj : src.si, dst_runs = dst.si == 1 ? dst.sj : dst.si;
  for (index_t j0 = 0; j0 < V4; j0 += 4)
    for (index_t i0 = 0; i0 < K4; i0 += 4)
      transpose_tile(&src(i0, j0), src_runs, &dst(i0, j0), dst_runs);
  for (index_t i = 0; i < K; ++i)  // what the tiles left: rows ≥ K4, or columns ≥ V4
    for (index_t j = i < K4 ? V4 : 0; j < V; ++j) dst(i, j) = src(i, j);
}

}  // namespace polyattn::linear
