// polyattn/linear/stages/gates.hpp — chunk stage 1: cumulative gates.
//
//   b_t = Σ_{s ≤ t} γ_s        (chunk-relative, t < L; one value per token, or per key channel)
//   eb_t = e^{b_t}             with e^x := 0 for x < kFlushLog
// γ comes from the decay policy's bound gate (policies/decay.hpp) through its hooks (a chunk's
// tokens at once, or K channels a row, where the gate has a SIMD hook), so a new decay only
// provides log_decay(). Gates relative to the chunk start are never an absolute
// product, so nothing overflows at any T. Decay factors below e^kFlushLog (≈ 1e-30) are set to
// exactly 0: they cannot change an fp32 result built from O(1) terms, and keeping them would
// push the products into subnormal numbers, which run many times slower on x86 (seen with
// Lightning's steep per-head decays).
#pragma once

#include "polyattn/core/simd/ops.hpp"
#include "polyattn/policies/decay.hpp"

namespace polyattn::linear::stages {

inline constexpr float kFlushLog = -69.f;

// exp(x) with arguments below kFlushLog giving exactly 0, on one batch.
template <simd::SimdArch A>
simd::batch_t<A> decay_exp1(simd::batch_t<A> x) noexcept {
  return simd::exp(simd::below_to(x, kFlushLog, -1000.f));
}

// out = exp(x) with arguments below kFlushLog giving exactly 0 (x and out may alias).
template <simd::SimdArch A>
void decay_exp(const float* x, float* out, index_t n) {
  simd::transform<A>(
      n, out, [](simd::batch_t<A> v) { return decay_exp1<A>(v); }, x);
}

// b [L×K] and eb [L×K] of a key-channel gate's tokens c0 .. c0 + L − 1, row by row (each row's
// exponentials while it is in L1); ahead(t) runs before row t (a prefetch hook).
template <simd::SimdArch A, class Gate, class Ahead>
void key_channel_cumulative_gates(const Gate& gate, index_t c0, index_t L, index_t K, float* b,
                                  float* eb, const Ahead& ahead) {
  using B = simd::batch_t<A>;
  constexpr index_t W = B::size;
  for (index_t t = 0; t < L; ++t) {
    ahead(t);
    float* bt = b + t * K;
    float* et = eb + t * K;
    gate_log_decay_row<A>(gate, c0 + t, bt, K);
    index_t i = 0;  // whole vectors: the sum and its exponential in one pass
    for (; i + W <= K; i += W) {
      B x = B::load_unaligned(bt + i);
      if (t > 0) x = B::load_unaligned(bt - K + i) + x;
      x.store_unaligned(bt + i);
      decay_exp1<A>(x).store_unaligned(et + i);
    }
    if (i < K) {  // the last K mod W channels
      if (t > 0)
        simd::transform<A>(
            K - i, bt + i, [](B x, B y) { return x + y; }, bt - K + i, bt + i);
      decay_exp<A>(bt + i, et + i, K - i);
    }
  }
}

// b [L×bK] and eb [L×bK] of tokens c0 .. c0+L−1 of `gate` (nothing for GateShape::None).
template <simd::SimdArch A, GateShape Shape, class Gate>
void cumulative_gates(const Gate& gate, index_t c0, index_t L, index_t K, float* b, float* eb) {
  if constexpr (Shape == GateShape::Scalar) {
    gate_log_decays<A>(gate, c0, b, L);  // γ (the gate's SIMD hook), then b_t = b_{t−1} + γ_t
    float acc = 0.f;
    for (index_t t = 0; t < L; ++t) b[t] = acc = acc + b[t];
    decay_exp<A>(b, eb, L);
  } else if constexpr (Shape == GateShape::KeyChannel) {
    key_channel_cumulative_gates<A>(gate, c0, L, K, b, eb, [](index_t) {});
  }
}

}  // namespace polyattn::linear::stages
