// tests/common/test_util.hpp — helpers shared by the test suites: deterministic random data,
// the relative-RMSE metric of docs/conventions.md §9 and small tensor containers.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "polyattn/core/tensor_view.hpp"

namespace polyattn::test {

// docs/conventions.md §9 bound for fp32 results against the double-precision reference.
inline constexpr double kRelRmseBound = 1e-5;

// sqrt(mean((x-y)^2)) / sqrt(mean(y^2)); y is the reference. Returns 0 when both are all zero.
template <class X, class Y>
double rel_rmse(const std::vector<X>& x, const std::vector<Y>& y) {
  if (x.size() != y.size()) return INFINITY;
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - static_cast<double>(y[i]);
    num += d * d;
    den += static_cast<double>(y[i]) * static_cast<double>(y[i]);
  }
  if (den == 0.0) return num == 0.0 ? 0.0 : INFINITY;
  return std::sqrt(num / den);
}

// Deterministic uniform data in [lo, hi).
inline std::vector<float> random_vector(std::size_t n, std::uint64_t seed, float lo = -1.f,
                                        float hi = 1.f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Owning row-major buffer with a view of it.
template <class T, std::size_t R>
struct Tensor {
  std::array<index_t, R> shape{};
  std::vector<T> data;
  Tensor() = default;
  explicit Tensor(const std::array<index_t, R>& s, T fill = T{}) : shape(s) {
    std::size_t n = 1;
    for (auto d : s) n *= static_cast<std::size_t>(d);
    data.assign(n, fill);
  }
  TensorView<T, R> view() { return TensorView<T, R>::contiguous(data.data(), shape); }
  TensorView<const T, R> cview() const {
    return TensorView<const T, R>::contiguous(data.data(), shape);
  }
};

// A [d0,d1,d2,d3] tensor holding exactly `values` (row-major).
inline Tensor<float, 4> t4(std::array<index_t, 4> shape, std::vector<float> values) {
  Tensor<float, 4> t(shape);
  if (t.data.size() != values.size()) throw std::invalid_argument("t4: value count != shape");
  t.data = std::move(values);
  return t;
}

// A [d0,d1,d2,d3] tensor of deterministic uniform values in [lo, hi).
inline Tensor<float, 4> random4(std::array<index_t, 4> shape, std::uint64_t seed, float lo = -1.f,
                                float hi = 1.f) {
  Tensor<float, 4> t(shape);
  t.data = random_vector(t.data.size(), seed, lo, hi);
  return t;
}

}  // namespace polyattn::test
