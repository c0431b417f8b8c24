// tests/linear/linear_harness.hpp — shared fixtures for the linear-family operator tests:
// random problems in every gate/update mode, the reference oracle run on the same inputs and
// the docs/conventions.md §9 comparison of outputs and final states.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/linear/presets.hpp"
#include "polyattn/reference/linear.hpp"

namespace polyattn::test {

struct LinearShape {
  index_t B = 1, T = 1, H = 1, HV = 1, K = 16, V = 16;
  std::string str() const {
    return "B" + std::to_string(B) + "_T" + std::to_string(T) + "_H" + std::to_string(H) + "_HV" +
           std::to_string(HV) + "_K" + std::to_string(K) + "_V" + std::to_string(V);
  }
};

// Owning random inputs for one call (gates are log-space, divided by gate_div: 0.01 … 10).
// positive_qk draws q, k in [0, 1): the Sum normaliser divides by scale·q·Σk, which only makes
// sense for positive features (what the feature maps used with it produce); signed data would
// make the denominator cancel to ~0 and the problem ill-conditioned.
struct LinearData {
  LinearShape s;
  std::vector<float> q, k, v, g, gk, beta, h0, z0;
  LinearData(const LinearShape& sh, std::uint64_t seed, double gate_div = 1.0,
             bool positive_qk = false)
      : s(sh) {
    const auto n = [](auto... x) { return static_cast<std::size_t>((x * ...)); };
    const float lo = positive_qk ? 0.f : -1.f;
    q = random_vector(n(s.B, s.T, s.H, s.K), seed + 1, lo, 1.f);
    k = random_vector(n(s.B, s.T, s.H, s.K), seed + 2, lo, 1.f);
    v = random_vector(n(s.B, s.T, s.HV, s.V), seed + 3);
    g = random_vector(n(s.B, s.T, s.HV), seed + 4, -0.2f, -0.001f);
    gk = random_vector(n(s.B, s.T, s.HV, s.K), seed + 5, -0.2f, -0.001f);
    for (auto& x : g) x = static_cast<float>(x / gate_div);
    for (auto& x : gk) x = static_cast<float>(x / gate_div);
    beta = random_vector(n(s.B, s.T, s.HV), seed + 6, 0.05f, 0.95f);
    h0 = random_vector(n(s.B, s.HV, s.K, s.V), seed + 7, -0.5f, 0.5f);
    z0 = random_vector(n(s.B, s.HV, s.K), seed + 8, 0.f, 1.f);
  }
  // Inputs for the given options (only the tensors the mode uses).
  LinearInputs inputs(const LinearOptions& opt, bool with_h0) const {
    LinearInputs in{.q = bthd(q.data(), s.B, s.T, s.H, s.K),
                    .k = bthd(k.data(), s.B, s.T, s.H, s.K),
                    .v = bthd(v.data(), s.B, s.T, s.HV, s.V)};
    if (opt.decay == Decay::ScalarPerToken) in.g = bth(g.data(), s.B, s.T, s.HV);
    if (opt.decay == Decay::VectorPerToken) in.gk = bthd(gk.data(), s.B, s.T, s.HV, s.K);
    if (opt.update == Update::Delta) in.beta = bth(beta.data(), s.B, s.T, s.HV);
    if (with_h0) in.initial_state = bhkv(h0.data(), s.B, s.HV, s.K, s.V);
    if (with_h0 && opt.normalizer == Normalizer::Sum)
      in.initial_z = View3<const float>::contiguous(z0.data(), {s.B, s.HV, s.K});
    return in;
  }
};

struct LinearResult {
  std::vector<float> o, ht;
};

// Runs `op.forward<Algo>` and the reference on the same inputs; checks the §5 bound.
template <class Algo, class Op, class E = Serial>
LinearResult expect_matches_reference(const Op& op, const LinearData& data, bool with_h0,
                                      const std::string& what, const E& exec = E{}) {
  const auto& s = data.s;
  const LinearOptions opt = op.options();
  LinearInputs in = data.inputs(opt, with_h0);
  LinearResult r;
  r.o.assign(static_cast<std::size_t>(s.B * s.T * s.HV * s.V), NAN);
  r.ht.assign(static_cast<std::size_t>(s.B * s.HV * s.K * s.V), NAN);
  op.template forward<Algo>(in,
                            {.o = bthd(r.o.data(), s.B, s.T, s.HV, s.V),
                             .final_state = bhkv(r.ht.data(), s.B, s.HV, s.K, s.V)},
                            {}, exec);
  LinearInputs in_ref = in;
  if constexpr (requires { op.decay().g_gamma; }) {
    // The policy carries g_gamma (retention / lightning); give the reference the same values.
    const auto& gg = op.decay().g_gamma;
    if (!gg.empty())
      in_ref.g_gamma = View1<const float>::contiguous(gg.data(), {static_cast<index_t>(gg.size())});
  }
  std::vector<double> ro(r.o.size()), rht(r.ht.size());
  reference::linear_recurrence<double>(in_ref, opt,
                                       {.o = bthd(ro.data(), s.B, s.T, s.HV, s.V),
                                        .final_state = bhkv(rht.data(), s.B, s.HV, s.K, s.V)});
  EXPECT_LT(rel_rmse(r.o, ro), kRelRmseBound) << what << " output";
  EXPECT_LT(rel_rmse(r.ht, rht), kRelRmseBound) << what << " final state";
  return r;
}

}  // namespace polyattn::test
