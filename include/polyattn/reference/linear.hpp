// polyattn/reference/linear.hpp — naive oracle for the whole linear-attention family.
//
// Double precision, token by token, exactly the recurrence of docs/conventions.md §4, per
// (sequence, value head hv) with q/k head h = hv / G, state S [K × V] and key sum z [K]:
//   S ← diag(a_t) S,  a_t = 1 | exp(g_gamma[hv]) | exp(g_t) | exp(gk_t)   (decay: none, constant,
//                                                          scalar or vector per key channel)
//   u_t = v_t                                 (Additive)
//   u_t = β_t (v_t − Sᵀ k_t)                  (Delta, after the decay)
//   S ← S + k_t u_tᵀ,   z ← z + k_t
//   o_t = Sᵀ (scale·q_t)   [ / ((scale·q_t)·z + eps) with the Sum normaliser ]
// With qk_l2norm, q and k are first replaced by x / sqrt(Σx² + 1e-6). Feature maps are applied
// by the caller. q, k and v may be fp32, bf16 or fp16 (each element widened exactly to double);
// LinearOutputs<float>'s o rounds through float to its element type, LinearOutputs<double>
// keeps the double result (what the precision tests compare against). S and z start from
// initial_state / initial_z (zeros when absent) and end in final_state / final_z (slot
// state_indices[n] of each when a state pool is given). Eigen in double, no tiling: written to be
// obviously right, not fast.
#pragma once

#include <cmath>
#include <type_traits>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/reference/eigen_io.hpp"

namespace polyattn::reference {

template <class Out>
void linear_recurrence(const LinearInputs& in, const LinearOptions& opt,
                       const LinearOutputs<Out>& out) {
  using detail::Mat;
  using detail::Vec;
  const LinearDims d = validate_linear(in, opt, out);
  const double scale = resolved_scale(opt, d.K);

  Mat S(d.K, d.V);
  Vec z(d.K), q(d.K), k(d.K), qs(d.K), a(d.K), v(d.V), u(d.V), o(d.V);
  // Row (b, t, h) of q, k or v as a double vector (any element type, exact).
  auto load_row = [](Vec& x, const EView4& src, index_t b, index_t t, index_t h) {
    x.resize(src.size(3));
    for (index_t e = 0; e < src.size(3); ++e) x(e) = static_cast<double>(src(b, t, h, e));
  };
  // q or k of token t as a double vector, L2-normalised when asked.
  auto load_qk = [&](Vec& x, const EView4& src, index_t b, index_t t, index_t h) {
    load_row(x, src, b, t, h);
    if (opt.qk_l2norm) x /= std::sqrt(x.squaredNorm() + kL2NormEps);
  };

  const auto segs = segments(d.B, d.T, in.cu_seqlens);
  for (index_t n = 0; n < static_cast<index_t>(segs.size()); ++n) {
    const index_t b = segs[n].batch, slot = state_slot(in, n);  // slot: state pools
    for (index_t hv = 0; hv < d.HV; ++hv) {
      const index_t h = hv / d.group();
      if (in.initial_state.absent())
        S.setZero();
      else
        S = detail::mat(in.initial_state, slot, hv).cast<double>();
      if (in.initial_z.absent())
        z.setZero();
      else
        z = detail::row(in.initial_z, slot, hv).cast<double>();

      for (index_t t = segs[n].begin; t < segs[n].begin + segs[n].length; ++t) {
        load_qk(q, in.q, b, t, h);
        load_qk(k, in.k, b, t, h);
        load_row(v, in.v, b, t, hv);

        switch (opt.decay) {
          case Decay::None:
            break;
          case Decay::ConstantPerHead:
            S *= std::exp(static_cast<double>(in.g_gamma(hv)));
            break;
          case Decay::ScalarPerToken:
            S *= std::exp(static_cast<double>(in.g(b, t, hv)));
            break;
          case Decay::VectorPerToken:  // S ← diag(a) S: row i (key channel i) times a_i
            a = detail::std_exp(detail::row(in.gk, b, t, hv).cast<double>().array()).matrix();
            for (Eigen::Index j = 0; j < d.V; ++j) S.col(j).array() *= a.array();
            break;
        }
        if (opt.update == Update::Delta)
          u = static_cast<double>(in.beta(b, t, hv)) * (v - S.transpose() * k);
        else
          u = v;
        S.noalias() += k * u.transpose();
        z += k;

        qs = scale * q;
        o.noalias() = S.transpose() * qs;
        if (opt.normalizer == Normalizer::Sum) o /= qs.dot(z) + opt.eps;
        if constexpr (std::is_same_v<Out, float>) {  // o: fp32, bf16 or fp16
          for (index_t e = 0; e < d.V; ++e) out.o.store(static_cast<float>(o(e)), b, t, hv, e);
        } else {
          detail::store(out.o, b, t, hv, o);
        }
      }
      if (!out.final_state.absent()) detail::store_mat(out.final_state, slot, hv, S);
      if (!out.final_z.absent()) detail::store(out.final_z, slot, hv, z);
    }
  }
}

}  // namespace polyattn::reference
