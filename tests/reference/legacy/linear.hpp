// tests/reference/legacy/linear.hpp — frozen copy of include/polyattn/reference/linear.hpp as of faca67a
// (namespace reference_legacy), kept only while test_reference_parity compares the Eigen rewrite
// with it.
// polyattn/reference/linear.hpp — naive oracle for the whole linear-attention family.
//
// Double precision, token by token, exactly the recurrence of SPEC.md §2, per (sequence, value
// head hv) with q/k head h = hv / G:
//   S ← Decay_t(S)            none | exp(g_gamma[hv])·S | exp(g_t)·S | diag(exp(gk_t))·S
//   u_t = v_t                 (Additive)
//   u_t = β_t (v_t − Sᵀk_t)   (Delta, after the decay)
//   S ← S + k_t u_tᵀ
//   z ← z + k_t               (Sum normaliser)
//   o_t = Sᵀ(scale·q_t)       [ / (scale·q_t·z + eps) with the Sum normaliser ]
// With qk_l2norm, q and k are first replaced by x / sqrt(Σx² + 1e-6). Feature maps are applied
// by the caller. No SIMD, no tiling: written to be obviously right, not fast.
#pragma once

#include <cmath>
#include <vector>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/sequences.hpp"

namespace polyattn::reference_legacy {

template <class Out>
void linear_recurrence(const LinearInputs& in, const LinearOptions& opt,
                       const LinearOutputs<Out>& out) {
  const LinearDims d = validate_linear(in, opt, out);
  const double scale = resolved_scale(opt, d.K);
  const auto segs = segments(d.B, d.T, in.cu_seqlens);
  const index_t G = d.group();

  std::vector<double> S(static_cast<std::size_t>(d.K * d.V));
  std::vector<double> z(static_cast<std::size_t>(d.K));
  std::vector<double> q(static_cast<std::size_t>(d.K)), k(static_cast<std::size_t>(d.K));
  std::vector<double> u(static_cast<std::size_t>(d.V));
  auto at = [&](index_t i, index_t j) -> double& { return S[static_cast<std::size_t>(i * d.V + j)]; };

  auto load_unit = [&](const View4<const float>& x, index_t b, index_t t, index_t h,
                       std::vector<double>& dst) {
    double ss = 0.0;
    for (index_t i = 0; i < d.K; ++i) {
      dst[i] = x(b, t, h, i);
      ss += dst[i] * dst[i];
    }
    if (opt.qk_l2norm) {
      const double inv = 1.0 / std::sqrt(ss + kL2NormEps);
      for (auto& e : dst) e *= inv;
    }
  };

  for (index_t n = 0; n < static_cast<index_t>(segs.size()); ++n) {
    const Segment& sg = segs[n];
    for (index_t hv = 0; hv < d.HV; ++hv) {
      const index_t h = hv / G;
      for (index_t i = 0; i < d.K; ++i) {
        z[i] = in.initial_z.absent() ? 0.0 : in.initial_z(n, hv, i);
        for (index_t j = 0; j < d.V; ++j)
          at(i, j) = in.initial_state.absent() ? 0.0 : in.initial_state(n, hv, i, j);
      }
      for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
        const index_t b = sg.batch;
        load_unit(in.q, b, t, h, q);
        load_unit(in.k, b, t, h, k);
        // Decay.
        for (index_t i = 0; i < d.K; ++i) {
          double a = 1.0;
          switch (opt.decay) {
            case Decay::None: break;
            case Decay::ConstantPerHead: a = std::exp(static_cast<double>(in.g_gamma(hv))); break;
            case Decay::ScalarPerToken: a = std::exp(static_cast<double>(in.g(b, t, hv))); break;
            case Decay::VectorPerToken: a = std::exp(static_cast<double>(in.gk(b, t, hv, i))); break;
          }
          for (index_t j = 0; j < d.V; ++j) at(i, j) *= a;
        }
        // Update value u_t.
        for (index_t j = 0; j < d.V; ++j) u[j] = in.v(b, t, hv, j);
        if (opt.update == Update::Delta) {
          const double beta = in.beta(b, t, hv);
          for (index_t j = 0; j < d.V; ++j) {
            double pred = 0.0;
            for (index_t i = 0; i < d.K; ++i) pred += at(i, j) * k[i];
            u[j] = beta * (u[j] - pred);
          }
        }
        for (index_t i = 0; i < d.K; ++i) {
          for (index_t j = 0; j < d.V; ++j) at(i, j) += k[i] * u[j];
          z[i] += k[i];
        }
        // Output.
        double denom = 1.0;
        if (opt.normalizer == Normalizer::Sum) {
          double qz = 0.0;
          for (index_t i = 0; i < d.K; ++i) qz += scale * q[i] * z[i];
          denom = qz + opt.eps;
        }
        for (index_t j = 0; j < d.V; ++j) {
          double acc = 0.0;
          for (index_t i = 0; i < d.K; ++i) acc += at(i, j) * scale * q[i];
          out.o(b, t, hv, j) = static_cast<Out>(acc / denom);
        }
      }
      if (!out.final_state.absent())
        for (index_t i = 0; i < d.K; ++i)
          for (index_t j = 0; j < d.V; ++j) out.final_state(n, hv, i, j) = static_cast<Out>(at(i, j));
      if (!out.final_z.absent())
        for (index_t i = 0; i < d.K; ++i) out.final_z(n, hv, i) = static_cast<Out>(z[i]);
    }
  }
}

}  // namespace polyattn::reference_legacy
