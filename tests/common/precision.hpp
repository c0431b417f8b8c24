// tests/common/precision.hpp — helpers of the bf16 / fp16 precision tests (SPEC §8,
// docs/conventions.md §9.7–9.8): the fp32 test data is rounded to the element type first, the
// double reference runs on the rounded values widened back, and a T output is held to SPEC §8's
// bound for T.
//   narrow<T>(x)      fp32 values rounded to T (nearest even)
//   widen(x)          T values widened to fp32 (exact)
//   round_all<T>(x)   x[i] ← x[i] rounded to T and widened back, in place
//   kBound<T>         rel-RMSE bound of a T output: 8e-3 (bf16), 2e-3 (fp16), 1e-5 (fp32)
//   kName<T>          "bf16", "fp16", "fp32"
//   same_bits(a, b)   the same size and identical bytes
#pragma once

#include <concepts>
#include <cstring>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/core/element.hpp"

namespace polyattn::test {

template <Element T>
std::vector<T> narrow(const std::vector<float>& x) {
  std::vector<T> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = from_float<T>(x[i]);
  return r;
}
template <Element T>
std::vector<float> widen(const std::vector<T>& x) {
  std::vector<float> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = to_float(x[i]);
  return r;
}
template <Element T>
void round_all(std::vector<float>& x) {
  for (auto& e : x) e = round_to<T>(e);
}

template <Element T>
constexpr double kBound = std::same_as<T, bf16>  ? 8e-3
                          : std::same_as<T, f16> ? 2e-3
                                                 : kRelRmseBound;  // SPEC §8, a T output
template <Element T>
constexpr const char* kName = std::same_as<T, bf16>  ? "bf16"
                              : std::same_as<T, f16> ? "fp16"
                                                     : "fp32";

template <class X>
bool same_bits(const std::vector<X>& a, const std::vector<X>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(X)) == 0;
}

}  // namespace polyattn::test
