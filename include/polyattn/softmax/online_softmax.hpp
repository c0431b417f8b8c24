// polyattn/softmax/online_softmax.hpp — the online ("streaming") softmax of one row, for any
// value type T: float, double, or a SIMD batch of floats (one row per lane).
//
// A row's partial state over the scores s seen so far is (m, l):
//   m = max s    (−inf before any score; NaN once a NaN was seen)
//   l = Σ e^{s − m}
// Exponentials are taken relative to shift(m) = m, or 0 where m = −inf, so that a row that has
// seen nothing (or only −inf, i.e. masked, scores) gives e^{−inf − 0} = 0 and never NaN.
//   advance(m, tile_max)       new max m' = max(m, tile_max), its shift, and the factor
//                              α = e^{m − shift(m')} that rescales l (and an output accumulator)
//   accumulate(l, α, Σ)        l' = l·α + Σ_tile e^{s − shift(m')}
//   combine(a, b)              merge of two partials over disjoint key sets:
//                              M = max(m_a, m_b), l = c_a·l_a + c_b·l_b, c = e^{m − shift(M)}
//   merge_max / merge_weight   the k-way form: M = max over the partials (NaN if any is NaN),
//                              c_i = e^{m_i − M} (0 for an empty partial, m_i = −inf)
//   finish(stats[, sink])      the output multiplier and log-sum-exp of a finished row:
//                                without a sink logit:  mul = 1/l,  lse = m + log l
//                                with a sink logit σ:   M = max(m, σ), c = e^{m − M},
//                                                       den = l·c + e^{σ − M},
//                                                       mul = c/den, lse = M + log den
//                              i.e. the sink is one more partial (σ, 1) with a zero output.
// Conventions: a row that saw nothing (m = −inf) gives mul = 0 and lse = −inf (the caller
// writes exact zeros); a NaN max gives mul = lse = NaN.
//
// Value types are outside the per-ISA namespace; the functions are inside it (they run in the
// kernels of every ISA unit; arch.hpp).
#pragma once

#include <cmath>
#include <concepts>
#include <limits>

#include "polyattn/core/simd/arch.hpp"

namespace polyattn::softmax {

/// Partial online-softmax state of a row (or one row per lane): m = max score, l = Σ e^{s − m}.
template <class T>
struct RowStats {
  T m;
  T l;
};

/// What advance() returns: the new max, the shift the tile's exponentials use, and the factor
/// α = e^{m_old − shift} that rescales the old sum and output.
template <class T>
struct RowAdvance {
  T m;
  T shift;
  T alpha;
};

/// What combine() returns: the merged state and the factors of the two inputs' outputs.
template <class T>
struct RowCombine {
  RowStats<T> stats;
  T ca;
  T cb;
};

/// A finished row: output multiplier (o = mul · Σ e^{s − m} v) and log-sum-exp.
template <class T>
struct RowResult {
  T mul;
  T lse;
};

}  // namespace polyattn::softmax

namespace polyattn::softmax {
inline namespace POLYATTN_ISA_NS {
namespace online {

namespace impl {

// A SIMD batch (xsimd's or ScalarBatch) rather than a float / double.
template <class B>
concept BatchValue = !std::floating_point<B>;

template <std::floating_point T>
inline T max_nan(T a, T b) noexcept {
  if (std::isnan(a) || std::isnan(b)) return a + b;
  return a < b ? b : a;
}
template <BatchValue B>
inline B max_nan(const B& a, const B& b) noexcept {
  return simd::max_nan(a, b);
}

template <std::floating_point T>
inline T exp(T a) noexcept {
  return std::exp(a);
}
template <BatchValue B>
inline B exp(const B& a) noexcept {
  return simd::exp(a);
}

template <std::floating_point T>
inline T neg_inf_to_zero(T a) noexcept {
  return a == -std::numeric_limits<T>::infinity() ? T(0) : a;
}
template <BatchValue B>
inline B neg_inf_to_zero(const B& a) noexcept {
  return simd::neg_inf_to_zero(a);
}

template <std::floating_point T>
inline T fma(T a, T b, T c) noexcept {
  return a * b + c;
}
template <BatchValue B>
inline B fma(const B& a, const B& b, const B& c) noexcept {
  return simd::fma(a, b, c);
}

}  // namespace impl

/// The empty state (m = −inf, l = 0).
template <class T>
inline RowStats<T> empty() noexcept {
  return {T(-std::numeric_limits<float>::infinity()), T(0.f)};
}

/// One tile with maximum `tile_max` arrives at a row whose max was `m_old`.
template <class T>
inline RowAdvance<T> advance(const T& m_old, const T& tile_max) noexcept {
  const T m_new = impl::max_nan(m_old, tile_max);
  const T sh = impl::neg_inf_to_zero(m_new);
  return {m_new, sh, impl::exp(m_old - sh)};
}

/// l' = l·α + tile_sum (tile_sum = Σ e^{s − shift} over the tile).
template <class T>
inline T accumulate(const T& l, const T& alpha, const T& tile_sum) noexcept {
  return impl::fma(l, alpha, tile_sum);
}

/// The max of two partials' maxima (or of a partial and a sink logit): NaN if either is NaN.
template <class T>
inline T merge_max(const T& a, const T& b) noexcept {
  return impl::max_nan(a, b);
}

/// e^{m − M}: the factor of a partial with max m under the reference max M (0 where m = −inf).
template <std::floating_point T>
inline T merge_weight(T m, T M) noexcept {
  return m == -std::numeric_limits<T>::infinity() ? T(0) : std::exp(m - M);
}

/// Merge of two partials over disjoint key sets (any order, up to rounding).
template <class T>
inline RowCombine<T> combine(const RowStats<T>& a, const RowStats<T>& b) noexcept {
  const T M = impl::max_nan(a.m, b.m);
  const T sh = impl::neg_inf_to_zero(M);
  const T ca = impl::exp(a.m - sh), cb = impl::exp(b.m - sh);
  return {{M, impl::fma(a.l, ca, b.l * cb)}, ca, cb};
}

/// Output multiplier and lse of a finished row without a sink logit.
template <std::floating_point T>
inline RowResult<T> finish(const RowStats<T>& s) noexcept {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  if (s.m == ninf) return {T(0), ninf};
  if (std::isnan(s.m)) return {s.m, s.m};
  return {T(1) / s.l, s.m + std::log(s.l)};
}

/// Output multiplier and lse of a finished row with the sink logit σ in the denominator.
template <std::floating_point T>
inline RowResult<T> finish(const RowStats<T>& s, T sink) noexcept {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  if (s.m == ninf) return {T(0), ninf};
  if (std::isnan(s.m)) return {s.m, s.m};
  const T M = impl::max_nan(s.m, sink);
  const T c = std::exp(s.m - M);
  const T den = s.l * c + std::exp(sink - M);
  return {c / den, M + std::log(den)};
}

}  // namespace online
}  // namespace POLYATTN_ISA_NS
}  // namespace polyattn::softmax
