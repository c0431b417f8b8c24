// tests/linear/raw_gates.hpp — the raw projections of one Gated DeltaNet / KDA layer call (the
// fused-gate presets' inputs, policies/fused_gates.hpp) and the gates they give, in fp32 with the
// library's scalar functions and in double (rounded once), for the reference; likewise Mamba2's
// time steps.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/test_util.hpp"
#include "linear/linear_harness.hpp"
#include "polyattn/policies/fused_gates.hpp"

namespace polyattn::test {

// Raw projections of one GDN / KDA layer call and the gates they give, in fp32 (with the
// library's scalar functions) and in double.
struct RawGates {
  static std::size_t gz(index_t n) { return static_cast<std::size_t>(n); }
  LinearShape s;
  std::vector<float> a, graw, b, A_log, dt_bias, dt_bias_k;
  std::vector<float> g32, gk32, beta32, g64, gk64, beta64;  // "64": double, rounded once
  bool bounded;
  float lower;
  RawGates(const LinearShape& sh, std::uint64_t seed, bool bounded_ = false, float lower_ = -5.f)
      : s(sh), bounded(bounded_), lower(lower_) {
    const index_t BTH = s.B * s.T * s.HV;
    a = random_vector(gz(BTH), seed, -4.f, 4.f);
    graw = random_vector(gz(BTH * s.K), seed + 1, -4.f, 4.f);
    b = random_vector(gz(BTH), seed + 2, -4.f, 4.f);
    A_log = random_vector(gz(s.HV), seed + 3, -2.f, 0.5f);
    dt_bias = random_vector(gz(s.HV), seed + 4, -1.f, 1.f);
    dt_bias_k = random_vector(gz(s.HV * s.K), seed + 5, -1.f, 1.f);
    if (a.size() > 3) a[3] = 25.f;  // above softplus' threshold
    const auto sp = [](double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); };
    const auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
    for (index_t i = 0; i < BTH; ++i) {
      const index_t h = i % s.HV;
      g32.push_back(gates::gdn_log_decay(a[gz(i)], gates::neg_exp(A_log[gz(h)]), dt_bias[gz(h)]));
      beta32.push_back(gates::sigmoid(b[gz(i)]));
      g64.push_back(static_cast<float>(-std::exp(double{A_log[gz(h)]}) *
                                       sp(double{a[gz(i)]} + dt_bias[gz(h)])));
      beta64.push_back(static_cast<float>(sig(b[gz(i)])));
      for (index_t k = 0; k < s.K; ++k) {
        const float x = graw[gz(i * s.K + k)], c = dt_bias_k[gz(h * s.K + k)];
        const double ea = std::exp(double{A_log[gz(h)]});
        gk32.push_back(bounded ? gates::kda_bounded_log_decay(x, std::exp(A_log[gz(h)]), c, lower)
                               : gates::kda_log_decay(x, gates::neg_exp(A_log[gz(h)]), c));
        gk64.push_back(static_cast<float>(bounded ? lower * sig(ea * (double{x} + c))
                                                  : -ea * sp(double{x} + c)));
      }
    }
  }
  void raw_gdn(LinearInputs& in) const {
    in.a = bth(a.data(), s.B, s.T, s.HV);
    in.b = bth(b.data(), s.B, s.T, s.HV);
    in.A_log = View1<const float>::contiguous(A_log.data(), {s.HV});
    in.dt_bias = View1<const float>::contiguous(dt_bias.data(), {s.HV});
  }
  void raw_kda(LinearInputs& in) const {
    in.graw = bthd(graw.data(), s.B, s.T, s.HV, s.K);
    in.b = bth(b.data(), s.B, s.T, s.HV);
    in.A_log = View1<const float>::contiguous(A_log.data(), {s.HV});
    in.dt_bias = View1<const float>::contiguous(dt_bias_k.data(), {s.HV * s.K});
  }
};

// Mamba2's raw time steps (Mamba2Decay / Mamba2Update): dt [B,T,HV], A [HV], dt_bias [HV], and
// what they give in double (rounded once) for the reference: g = Δ·A and the weighted values
// Δ·v, Δ = clamp(softplus(dt + dt_bias), min, max).
struct RawTimeSteps {
  static std::size_t gz(index_t n) { return static_cast<std::size_t>(n); }
  LinearShape s;
  gates::TimeStep ts;
  std::vector<float> dt, A, bias, g64, xdt64;
  RawTimeSteps(const LinearShape& sh, std::uint64_t seed, const gates::TimeStep& ts_,
               const std::vector<float>& v)
      : s(sh), ts(ts_), xdt64(v.size()) {
    const index_t BTH = s.B * s.T * s.HV;
    dt = random_vector(gz(BTH), seed, -3.f, 3.f);
    A = random_vector(gz(s.HV), seed + 1, -2.f, -0.1f);
    bias = random_vector(gz(s.HV), seed + 2, -1.f, 1.f);
    for (index_t i = 0; i < BTH; ++i) {
      double x = double{dt[gz(i)]} + bias[gz(i % s.HV)];
      if (ts.softplus) x = x > 20.0 ? x : std::log1p(std::exp(x));
      x = std::clamp(x, double{ts.min}, double{ts.max});
      g64.push_back(static_cast<float>(x * A[gz(i % s.HV)]));
      for (index_t j = 0; j < s.V; ++j)
        xdt64[gz(i * s.V + j)] = static_cast<float>(v[gz(i * s.V + j)] * x);
    }
  }
  void raw(LinearInputs& in) const {
    in.dt = bth(dt.data(), s.B, s.T, s.HV);
    in.A = View1<const float>::contiguous(A.data(), {s.HV});
    in.dt_bias = View1<const float>::contiguous(bias.data(), {s.HV});
  }
};

}  // namespace polyattn::test
