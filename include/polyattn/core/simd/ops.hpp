// polyattn/core/simd/ops.hpp — vector helpers over contiguous float arrays, templated on the
// SIMD Arch tag (see arch.hpp):
//   dot(a, b, n)        Σ a[i]·b[i]                 (0 for n == 0)
//   sum(x, n)           Σ x[i]                      (0 for n == 0)
//   max(x, n)           max x[i]                    (-inf for n == 0; NaN if any x[i] is NaN)
//   axpy(alpha, x, y, n) y[i] += alpha·x[i]
//   scale(alpha, x, n)  x[i] *= alpha
//   exp(x, out, n)      out[i] = e^x[i]             (out may be x itself; no partial overlap)
//   exp_inplace(x, n)   x[i] = e^x[i]
//   transform(n, out, f, x0, x1, ...)  out[i] = f(x0[i], x1[i], ...) with f on whole batches
//   prefetch<Write>(p, bytes)  requests the cache lines of [p, p + bytes) (a hint: never faults)
// Any n >= 0 works (n <= 0 is an empty array). The last n mod width elements go through a
// width-sized stack buffer, so nothing outside [0, n) is ever read or written and a tail
// element gets exactly the same arithmetic as a full-vector element. dot and sum keep four
// independent accumulators; their summation order depends only on n and the Arch, so a
// result is reproducible for a given Arch but differs in the last bits between Arches.
// NaN propagates through dot/sum by arithmetic and through max by an explicit check (SIMD
// max instructions drop NaN depending on the operand order). Inf - Inf gives NaN, as in IEEE.
//
// Call with an explicit Arch: `simd::dot<Arch>(a, b, n)`. The body can only be instantiated
// where compiled<Arch>() holds (see dispatch.hpp for how other ISAs are compiled in).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <type_traits>

#include "polyattn/core/error.hpp"
#include "polyattn/core/simd/arch.hpp"

namespace polyattn::simd {

namespace detail {

template <SimdArch A>
constexpr void require_compiled() {
  static_assert(compiled<A>(),
                "polyattn::simd: this Arch is not enabled in this translation unit; compile the "
                "code for it in an arch unit (polyattn_add_arch_units) or with its ISA flags");
}

template <SimdArch A>
inline constexpr std::int64_t width = static_cast<std::int64_t>(batch_t<A>::size);

// A width-sized, aligned copy of the last r (< width) elements, padded with `fill`.
template <SimdArch A>
struct Tail {
  static constexpr std::size_t W = batch_t<A>::size;
  alignas(kMaxBatchBytes) float v[W];
  Tail(const float* src, std::int64_t r, float fill) noexcept {
    for (std::size_t i = 0; i < W; ++i) v[i] = fill;
    std::memcpy(v, src, static_cast<std::size_t>(r) * sizeof(float));
  }
  batch_t<A> load() const noexcept { return batch_t<A>::load_aligned(v); }
  void store(batch_t<A> b) noexcept { b.store_aligned(v); }
  void copy_to(float* dst, std::int64_t r) const noexcept {
    std::memcpy(dst, v, static_cast<std::size_t>(r) * sizeof(float));
  }
};

inline void require_same_size(std::size_t a, std::size_t b, const char* name) {
  if (a != b)
    throw Error(name, "length " + std::to_string(b) + " differs from the first operand's " +
                          std::to_string(a));
}

}  // namespace detail

// Σ a[i]·b[i] for i in [0, n). linear/stages/key_channel_tiles.hpp (row_norm2) repeats this
// summation order on vectors held in registers, so that its row factors keep the same bits:
// change both together.
template <SimdArch A>
float dot(const float* a, const float* b, std::int64_t n) noexcept {
  detail::require_compiled<A>();
  using B = batch_t<A>;
  constexpr std::int64_t W = detail::width<A>;
  B acc0(0.f), acc1(0.f), acc2(0.f), acc3(0.f);
  std::int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    acc0 = simd::fma(B::load_unaligned(a + i), B::load_unaligned(b + i), acc0);
    acc1 = simd::fma(B::load_unaligned(a + i + W), B::load_unaligned(b + i + W), acc1);
    acc2 = simd::fma(B::load_unaligned(a + i + 2 * W), B::load_unaligned(b + i + 2 * W), acc2);
    acc3 = simd::fma(B::load_unaligned(a + i + 3 * W), B::load_unaligned(b + i + 3 * W), acc3);
  }
  for (; i + W <= n; i += W)
    acc0 = simd::fma(B::load_unaligned(a + i), B::load_unaligned(b + i), acc0);
  if constexpr (W > 1) {
    if (i < n) {
      const detail::Tail<A> ta(a + i, n - i, 0.f), tb(b + i, n - i, 0.f);
      acc1 = simd::fma(ta.load(), tb.load(), acc1);
    }
  }
  return simd::reduce_add((acc0 + acc1) + (acc2 + acc3));
}

// Σ x[i] for i in [0, n).
template <SimdArch A>
float sum(const float* x, std::int64_t n) noexcept {
  detail::require_compiled<A>();
  using B = batch_t<A>;
  constexpr std::int64_t W = detail::width<A>;
  B acc0(0.f), acc1(0.f), acc2(0.f), acc3(0.f);
  std::int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    acc0 += B::load_unaligned(x + i);
    acc1 += B::load_unaligned(x + i + W);
    acc2 += B::load_unaligned(x + i + 2 * W);
    acc3 += B::load_unaligned(x + i + 3 * W);
  }
  for (; i + W <= n; i += W) acc0 += B::load_unaligned(x + i);
  if constexpr (W > 1) {
    if (i < n) acc1 += detail::Tail<A>(x + i, n - i, 0.f).load();
  }
  return simd::reduce_add((acc0 + acc1) + (acc2 + acc3));
}

// max x[i] for i in [0, n); -inf when n <= 0; NaN (the first one found) if any x[i] is NaN.
template <SimdArch A>
float max(const float* x, std::int64_t n) noexcept {
  detail::require_compiled<A>();
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if constexpr (std::is_same_v<A, scalar_arch>) {
    float m = kNegInf;
    for (std::int64_t i = 0; i < n; ++i) {
      if (x[i] != x[i]) return x[i];
      m = x[i] > m ? x[i] : m;
    }
    return m;
  } else {
    using B = batch_t<A>;
    using M = typename B::batch_bool_type;
    constexpr std::int64_t W = detail::width<A>;
    B m0(kNegInf), m1(kNegInf), m2(kNegInf), m3(kNegInf);
    M nan0 = m0 != m0, nan1 = nan0;  // all false
    std::int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      const B v0 = B::load_unaligned(x + i), v1 = B::load_unaligned(x + i + W);
      const B v2 = B::load_unaligned(x + i + 2 * W), v3 = B::load_unaligned(x + i + 3 * W);
      m0 = xsimd::max(m0, v0);
      m1 = xsimd::max(m1, v1);
      m2 = xsimd::max(m2, v2);
      m3 = xsimd::max(m3, v3);
      nan0 = nan0 | (xsimd::isnan(v0) | xsimd::isnan(v1));
      nan1 = nan1 | (xsimd::isnan(v2) | xsimd::isnan(v3));
    }
    for (; i + W <= n; i += W) {
      const B v = B::load_unaligned(x + i);
      m0 = xsimd::max(m0, v);
      nan0 = nan0 | xsimd::isnan(v);
    }
    if (i < n) {
      const B v = detail::Tail<A>(x + i, n - i, kNegInf).load();
      m1 = xsimd::max(m1, v);
      nan1 = nan1 | xsimd::isnan(v);
    }
    if (xsimd::any(nan0 | nan1)) {
      // Rare path: return the first NaN itself (keeps its payload and sign).
      for (std::int64_t j = 0; j < n; ++j)
        if (x[j] != x[j]) return x[j];
    }
    return simd::reduce_max(xsimd::max(xsimd::max(m0, m1), xsimd::max(m2, m3)));
  }
}

// y[i] += alpha·x[i] for i in [0, n). x and y must not partially overlap.
template <SimdArch A>
void axpy(float alpha, const float* x, float* y, std::int64_t n) noexcept {
  detail::require_compiled<A>();
  using B = batch_t<A>;
  constexpr std::int64_t W = detail::width<A>;
  const B va(alpha);
  std::int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const B y0 = simd::fma(va, B::load_unaligned(x + i), B::load_unaligned(y + i));
    const B y1 = simd::fma(va, B::load_unaligned(x + i + W), B::load_unaligned(y + i + W));
    y0.store_unaligned(y + i);
    y1.store_unaligned(y + i + W);
  }
  for (; i + W <= n; i += W)
    simd::fma(va, B::load_unaligned(x + i), B::load_unaligned(y + i)).store_unaligned(y + i);
  if constexpr (W > 1) {
    if (i < n) {
      const detail::Tail<A> tx(x + i, n - i, 0.f);
      detail::Tail<A> ty(y + i, n - i, 0.f);
      ty.store(simd::fma(va, tx.load(), ty.load()));
      ty.copy_to(y + i, n - i);
    }
  }
}

// x[i] *= alpha for i in [0, n).
template <SimdArch A>
void scale(float alpha, float* x, std::int64_t n) noexcept {
  detail::require_compiled<A>();
  using B = batch_t<A>;
  constexpr std::int64_t W = detail::width<A>;
  const B va(alpha);
  std::int64_t i = 0;
  for (; i + W <= n; i += W) (B::load_unaligned(x + i) * va).store_unaligned(x + i);
  if constexpr (W > 1) {
    if (i < n) {
      detail::Tail<A> t(x + i, n - i, 0.f);
      t.store(t.load() * va);
      t.copy_to(x + i, n - i);
    }
  }
}

// out[i] = e^x[i] for i in [0, n). out == x is allowed; other overlaps are not.
template <SimdArch A>
void exp(const float* x, float* out, std::int64_t n) noexcept {
  detail::require_compiled<A>();
  using B = batch_t<A>;
  constexpr std::int64_t W = detail::width<A>;
  std::int64_t i = 0;
  for (; i + W <= n; i += W) simd::exp(B::load_unaligned(x + i)).store_unaligned(out + i);
  if constexpr (W > 1) {
    if (i < n) {
      detail::Tail<A> t(x + i, n - i, 0.f);
      t.store(simd::exp(t.load()));
      t.copy_to(out + i, n - i);
    }
  }
}

// x[i] = e^x[i] for i in [0, n).
template <SimdArch A>
void exp_inplace(float* x, std::int64_t n) noexcept {
  simd::exp<A>(x, x, n);
}

// out[i] = f(x0[i], x1[i], ...) for i in [0, n), f taking and returning batch_t<A> (elementwise
// glue of the kernels: gated copies, decays, scalings). out may be one of the inputs; the last
// partial batch runs on zero-padded copies, so f must not trap on zeros (none do).
template <SimdArch A, class F, class... In>
void transform(std::int64_t n, float* out, F&& f, const In*... in) noexcept {
  detail::require_compiled<A>();
  using B = batch_t<A>;
  constexpr std::int64_t W = detail::width<A>;
  std::int64_t i = 0;
  for (; i + W <= n; i += W) f(B::load_unaligned(in + i)...).store_unaligned(out + i);
  if constexpr (W > 1) {
    if (i < n) {
      detail::Tail<A> t(out + i, n - i, 0.f);
      t.store(f(detail::Tail<A>(in + i, n - i, 0.f).load()...));
      t.copy_to(out + i, n - i);
    }
  }
}

// Requests the cache lines of [p, p + bytes), for writing when Write. Always inlined: a call
// to a function that only prefetches is deleted by GCC as side-effect free.
template <SimdArch A, bool Write = false>
POLYATTN_ALWAYS_INLINE void prefetch(const void* p, std::int64_t bytes) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  constexpr std::int64_t kLine = 64;
  const char* c = static_cast<const char*>(p);
  for (std::int64_t i = 0; i < bytes; i += kLine) __builtin_prefetch(c + i, Write ? 1 : 0);
#else
  (void)p;
  (void)bytes;
#endif
}

// ---- span conveniences (sizes must match; a mismatch throws polyattn::Error) ----------------

template <SimdArch A>
float dot(std::span<const float> a, std::span<const float> b) {
  detail::require_same_size(a.size(), b.size(), "b");
  return simd::dot<A>(a.data(), b.data(), static_cast<std::int64_t>(a.size()));
}
template <SimdArch A>
float sum(std::span<const float> x) noexcept {
  return simd::sum<A>(x.data(), static_cast<std::int64_t>(x.size()));
}
template <SimdArch A>
float max(std::span<const float> x) noexcept {
  return simd::max<A>(x.data(), static_cast<std::int64_t>(x.size()));
}
template <SimdArch A>
void axpy(float alpha, std::span<const float> x, std::span<float> y) {
  detail::require_same_size(x.size(), y.size(), "y");
  simd::axpy<A>(alpha, x.data(), y.data(), static_cast<std::int64_t>(x.size()));
}
template <SimdArch A>
void scale(float alpha, std::span<float> x) noexcept {
  simd::scale<A>(alpha, x.data(), static_cast<std::int64_t>(x.size()));
}
template <SimdArch A>
void exp_inplace(std::span<float> x) noexcept {
  simd::exp_inplace<A>(x.data(), static_cast<std::int64_t>(x.size()));
}

}  // namespace polyattn::simd
