// polyattn/papers/nala.hpp — NaLaFormer's norm-aware linear attention (Meng et al.,
// "NaLaFormer: Norm-Aware Linear Attention for Transformer Models", 2025), causal, as in the
// authors' code github.com/ZacharyMeng/NaLaFormer (NaLaformer/NALA.py, NormAwareLinearAttn):
//
//   query map  (norm × direction)   r = ‖q‖₂,  q̂ = q / r,  p = 3·(½ + tanh r)
//              φq = [relu(q̂)^p, relu(−q̂)^p]                       (2d features)
//   key map                          φk = [relu(k)³, relu(−k)³]   (= relu(±k³))
//   output      o_t = φq_t·Σ_{s≤t} φk_s v_sᵀ / (φq_t·Σ_{s≤t} φk_s + n_t·eps),   eps = 1e-6
//
// The authors' code divides numerator and denominator by the token count N (mean of φk, and kv
// scaled by N^-½ twice), so their eps of 1e-6 is relative to the mean: n·eps here, n the keys
// seen so far (the vision model is non-causal with n = N). No scale. The query norm sets the
// power p, so a larger query gives a spikier distribution — the paper's point. A zero query
// (r = 0) maps to zeros (the authors' code would divide by zero).
//
// Composition: MeanCorrectedLinear<NalaQueryMap, NalaCorrection, NalaKeyMap> — the read-out on
// the linear_attn kernels (Recurrent, Chunked<C>, Parallel, step), the division by the running
// sum with its n-scaled eps in the correction pass. Left to the caller: the RoPE the authors
// apply to φq, φk inside the numerator only, the depthwise conv on v (papers::token_conv_add),
// the output gate and norm.
// Element types: as MeanCorrectedLinear (mean_corrected.hpp): q, k, v fp32, bf16 or fp16 (one
// type), o any of the three.
#pragma once

#include <cmath>

#include "polyattn/papers/mean_corrected.hpp"

namespace polyattn::papers {

struct NalaQueryMap {
  static constexpr bool is_identity = false;
  static constexpr const char* name() noexcept { return "nala_query"; }
  index_t out_dim(index_t d) const {
    if (d <= 0) throw Error("q (key dim)", "must be positive, got " + std::to_string(d));
    return 2 * d;
  }
  void apply(const float* x, index_t d, float* out) const noexcept {
    double r2 = 0.0;
    for (index_t i = 0; i < d; ++i) r2 += static_cast<double>(x[i]) * x[i];
    const double r = std::sqrt(r2);
    const double p = 3.0 * (0.5 + std::tanh(r));
    for (index_t i = 0; i < d; ++i) {
      const double u = r > 0.0 ? x[i] / r : 0.0;
      out[i] = static_cast<float>(u > 0.0 ? std::pow(u, p) : 0.0);
      out[d + i] = static_cast<float>(u < 0.0 ? std::pow(-u, p) : 0.0);
    }
  }
};

struct NalaKeyMap {
  static constexpr bool is_identity = false;
  static constexpr const char* name() noexcept { return "nala_key"; }
  index_t out_dim(index_t d) const {
    if (d <= 0) throw Error("k (key dim)", "must be positive, got " + std::to_string(d));
    return 2 * d;
  }
  void apply(const float* x, index_t d, float* out) const noexcept {
    for (index_t i = 0; i < d; ++i) {
      const double c = static_cast<double>(x[i]) * x[i] * x[i];
      out[i] = static_cast<float>(c > 0.0 ? c : 0.0);
      out[d + i] = static_cast<float>(c < 0.0 ? -c : 0.0);
    }
  }
};

static_assert(FeatureMap<NalaQueryMap> && FeatureMap<NalaKeyMap>);

/// o = S_tᵀφq / (φq·z_t + n·eps): α = 1/(s + n·eps), γ = 0 (scale 1).
struct NalaCorrection {
  double eps = 1e-6;
  MeanCoefficients coefficients(double s, double n) const noexcept {
    return {1.0 / (s + n * eps), 0.0};
  }
};

namespace presets {
using nala = MeanCorrectedLinear<NalaQueryMap, NalaCorrection, NalaKeyMap>;
inline nala make_nala(double eps = 1e-6) {
  return {NalaQueryMap{}, NalaKeyMap{}, NalaCorrection{eps}, 1.0};
}
}  // namespace presets

}  // namespace polyattn::papers
