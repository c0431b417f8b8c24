// polyattn/softmax/modifiers.hpp — score modifiers of softmax attention, applied to one row
// of scale·q·kᵀ inside a tile, in the order of the reference (docs/conventions.md §5):
//   Softcap{c}            s ← c·tanh(s/c)
//   Alibi{slope}          s ← s − slope·|p − j|
//   ForgettingBias        s ← s + G_p − G_j, G = cumsum of the log forget gate over key positions;
//                         passed as gq = G_p − G_ref and gk_j = G_j − G_ref (floats relative to a
//                         reference position of the tile, formed from double cumsums) so that
//                         a long prefix never costs float precision.
// The per-head sink logit is not a score modifier: it only enters the final denominator
// (flash.hpp). Each modifier is a policy with two vectorised forms:
//   apply<A>(s, RowContext)         one query, n consecutive keys (decode: a query's row)
//   apply_keys<A>(s, KeyContext)    one key, n consecutive queries (prefill: the kernel holds
//                                   scores transposed, queries along the SIMD lanes)
#pragma once

#include <concepts>

#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::softmax {

// What a modifier may look at for one score row s[0, n) of keys [j0, j0 + n).
struct RowContext {
  index_t p;        // key position of the query
  index_t j0;       // first key of the row segment
  index_t n;        // number of keys (a multiple of the batch width; padding keys included)
  float gq;         // forgetting bias: G_p − G_ref
  const float* gk;  // forgetting bias: G_j − G_ref for the n keys
};

// What a modifier may look at for one key's scores s[0, n) of queries at positions p0 + r.
struct KeyContext {
  index_t j;        // key position
  index_t p0;       // key position of the first query
  index_t n;        // number of queries (a multiple of the batch width; padding included)
  float gk;         // forgetting bias: G_j − G_ref
  const float* gq;  // forgetting bias: G_p − G_ref for the n queries
};

namespace detail {
template <simd::SimdArch A>
simd::batch_t<A> lane_iota() noexcept {
  using B = simd::batch_t<A>;
  alignas(simd::kMaxBatchBytes) float lane[B::size];
  for (std::size_t l = 0; l < B::size; ++l) lane[l] = static_cast<float>(l);
  return B::load_unaligned(lane);
}
}  // namespace detail

struct Softcap {
  float cap;  // > 0
  template <simd::SimdArch A>
  void apply_n(float* s, index_t n) const noexcept {
    using B = simd::batch_t<A>;
    const B cv(cap), inv(1.f / cap);
    for (index_t j = 0; j < n; j += static_cast<index_t>(B::size))
      (cv * simd::tanh(B::load_unaligned(s + j) * inv)).store_unaligned(s + j);
  }
  template <simd::SimdArch A>
  void apply(float* s, const RowContext& c) const noexcept {
    apply_n<A>(s, c.n);
  }
  template <simd::SimdArch A>
  void apply_keys(float* s, const KeyContext& c) const noexcept {
    apply_n<A>(s, c.n);
  }
};

struct Alibi {
  float slope;
  template <simd::SimdArch A>
  void apply(float* s, const RowContext& c) const noexcept {
    using B = simd::batch_t<A>;
    constexpr index_t W = static_cast<index_t>(B::size);
    const B iota = detail::lane_iota<A>(), sl(slope);
    for (index_t j = 0; j < c.n; j += W) {
      const B d = B(static_cast<float>(c.p - c.j0 - j)) - iota;  // p − key, exact below 2^24
      const B dist = simd::max(d, B(0.f) - d);
      (B::load_unaligned(s + j) - sl * dist).store_unaligned(s + j);
    }
  }
  template <simd::SimdArch A>
  void apply_keys(float* s, const KeyContext& c) const noexcept {
    using B = simd::batch_t<A>;
    constexpr index_t W = static_cast<index_t>(B::size);
    const B iota = detail::lane_iota<A>(), sl(slope);
    for (index_t r = 0; r < c.n; r += W) {
      const B d = B(static_cast<float>(c.p0 + r - c.j)) + iota;  // p − key
      const B dist = simd::max(d, B(0.f) - d);
      (B::load_unaligned(s + r) - sl * dist).store_unaligned(s + r);
    }
  }
};

struct ForgettingBias {
  template <simd::SimdArch A>
  void apply(float* s, const RowContext& c) const noexcept {
    using B = simd::batch_t<A>;
    const B gq(c.gq);
    for (index_t j = 0; j < c.n; j += static_cast<index_t>(B::size))
      (B::load_unaligned(s + j) + (gq - B::load_unaligned(c.gk + j))).store_unaligned(s + j);
  }
  template <simd::SimdArch A>
  void apply_keys(float* s, const KeyContext& c) const noexcept {
    using B = simd::batch_t<A>;
    const B gk(c.gk);
    for (index_t r = 0; r < c.n; r += static_cast<index_t>(B::size))
      (B::load_unaligned(s + r) + (B::load_unaligned(c.gq + r) - gk)).store_unaligned(s + r);
  }
};

template <class M>
concept ScoreModifier = requires(const M& m, float* s, const RowContext& c, const KeyContext& k) {
  m.template apply<simd::scalar_arch>(s, c);
  m.template apply_keys<simd::scalar_arch>(s, k);
};

static_assert(ScoreModifier<Softcap> && ScoreModifier<Alibi> && ScoreModifier<ForgettingBias>);

// The modifiers of one (call, query head), applied in the reference's order.
struct ModifierSet {
  float softcap = 0.f;  // 0 = off
  bool alibi = false;
  float alibi_slope = 0.f;
  bool forget = false;

  template <simd::SimdArch A = simd::scalar_arch>  // per-ISA symbol (mask.hpp)
  bool any() const noexcept {
    return softcap > 0.f || alibi || forget;
  }

  template <simd::SimdArch A>
  void apply(float* s, const RowContext& c) const noexcept {
    if (softcap > 0.f) Softcap{softcap}.apply<A>(s, c);
    if (alibi) Alibi{alibi_slope}.apply<A>(s, c);
    if (forget) ForgettingBias{}.apply<A>(s, c);
  }
  template <simd::SimdArch A>
  void apply_keys(float* s, const KeyContext& c) const noexcept {
    if (softcap > 0.f) Softcap{softcap}.apply_keys<A>(s, c);
    if (alibi) Alibi{alibi_slope}.apply_keys<A>(s, c);
    if (forget) ForgettingBias{}.apply_keys<A>(s, c);
  }
};

}  // namespace polyattn::softmax
