// examples/custom_feature_map.cpp — defining a feature map of your own and composing it into an
// operator.
//
// A feature map is any type that satisfies the `polyattn::FeatureMap` concept
// (polyattn/policies/feature_map.hpp):
//   static constexpr bool is_identity;               false unless the map is x ↦ x
//   const char* name()                                 for messages
//   index_t out_dim(index_t d)                        feature dimension for input dimension d
//   void apply(const float* x, index_t d, float* out) one row: out[0, out_dim(d)) = φ(x[0, d))
// The operator maps every q and k row through it, then runs the linear recurrence of the decay,
// update and normaliser policies with any algorithm. A type that misses a member fails to
// compile with "constraints not satisfied ... FeatureMap" at the LinearAttention<...> line.
//
// The map below is the cosFormer-style "ReLU with a learned per-channel temperature":
//   φ(x)_i = relu(x_i · τ_i),  plus a constant feature 1 so that φ(q)·φ(k) > 0 always,
// composed with a scalar per-token decay and the running-sum normaliser.
//
//   usage: polyattn-example-custom-feature-map
#include <cmath>
#include <cstdio>
#include <random>
#include <span>
#include <vector>

#include <polyattn/testing.hpp>  // the library and its naive references

namespace pa = polyattn;
using pa::index_t;

class ScaledReluPlusOne {
 public:
  static constexpr bool is_identity = false;
  explicit ScaledReluPlusOne(std::span<const float> tau) : tau_(tau) {}
  static constexpr const char* name() noexcept { return "scaled_relu_plus_one"; }
  index_t out_dim(index_t d) const {
    if (d != static_cast<index_t>(tau_.size()))
      throw pa::Error("tau", "has " + std::to_string(tau_.size()) +
                                 " entries for inputs of dimension " + std::to_string(d));
    return d + 1;
  }
  void apply(const float* x, index_t d, float* out) const noexcept {
    for (index_t i = 0; i < d; ++i) {
      const float t = x[i] * tau_[static_cast<std::size_t>(i)];
      out[i] = t > 0.f ? t : 0.f;
    }
    out[d] = 1.f;
  }

 private:
  std::span<const float> tau_;  // held by reference, like the library's parameterised maps
};
static_assert(pa::FeatureMap<ScaledReluPlusOne>);

// The composition: map × decay × update × normaliser.
using ScaledReluAttention =
    pa::LinearAttention<ScaledReluPlusOne, pa::ScalarDecay, pa::AdditiveUpdate, pa::SumNormalizer>;

int main() {
  const index_t B = 1, T = 500, H = 2, K = 32, V = 32;
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.f, 1.f);
  std::uniform_real_distribution<float> u(-0.1f, 0.f);
  const auto rows = static_cast<std::size_t>(B * T * H);
  std::vector<float> q(rows * K), k(rows * K), v(rows * V), g(rows), tau(K);
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = n(rng);
  for (float& e : g) e = u(rng);
  for (index_t i = 0; i < K; ++i)
    tau[static_cast<std::size_t>(i)] = 0.5f + 0.05f * static_cast<float>(i);

  const ScaledReluAttention op(ScaledReluPlusOne(tau), {}, {}, {.eps = 1e-6});
  const pa::LinearInputs in{.q = pa::bthd<const float>(q.data(), B, T, H, K),
                            .k = pa::bthd<const float>(k.data(), B, T, H, K),
                            .v = pa::bthd<const float>(v.data(), B, T, H, V),
                            .g = pa::bth<const float>(g.data(), B, T, H)};
  std::vector<float> o_rec(rows * V), o_chunk(rows * V), o_ref(rows * V);
  op.forward<pa::Recurrent>(in, {.o = pa::bthd(o_rec.data(), B, T, H, V)});
  op.forward<pa::Chunked<64>>(in, {.o = pa::bthd(o_chunk.data(), B, T, H, V)});

  // The same numbers from the naive reference on explicitly mapped inputs.
  std::vector<float> fq(rows * (K + 1)), fk(rows * (K + 1));
  pa::apply_rows(op.feature_map(), pa::bthd<const float>(q.data(), B, T, H, K),
                 pa::bthd(fq.data(), B, T, H, K + 1));
  pa::apply_rows(op.feature_map(), pa::bthd<const float>(k.data(), B, T, H, K),
                 pa::bthd(fk.data(), B, T, H, K + 1));
  pa::LinearInputs mapped = in;
  mapped.q = pa::bthd<const float>(fq.data(), B, T, H, K + 1);
  mapped.k = pa::bthd<const float>(fk.data(), B, T, H, K + 1);
  std::vector<double> ref(rows * V);
  pa::reference::linear_recurrence<double>(mapped, op.options(),
                                           {.o = pa::bthd(ref.data(), B, T, H, V)});

  const auto rel = [&](const std::vector<float>& x) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      num += (x[i] - ref[i]) * (x[i] - ref[i]);
      den += ref[i] * ref[i];
    }
    return std::sqrt(num / den);
  };
  std::printf(
      "%s ∘ scalar decay ∘ additive ∘ sum-normaliser, B%ld T%ld H%ld K%ld→%ld V%ld\n"
      "  recurrent vs reference: %.2e   chunked<64> vs reference: %.2e\n",
      op.feature_map().name(), static_cast<long>(B), static_cast<long>(T), static_cast<long>(H),
      static_cast<long>(K), static_cast<long>(K + 1), static_cast<long>(V), rel(o_rec),
      rel(o_chunk));
  return rel(o_rec) < 1e-5 && rel(o_chunk) < 1e-5 ? 0 : 1;
}
