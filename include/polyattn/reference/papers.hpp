// polyattn/reference/papers.hpp — naive double-precision oracles for the papers' systems
// (include/polyattn/papers/), each written from the paper's own formula rather than from the
// recurrence the fast operator runs:
//
//   lightnet            the additive recurrence (LightNet, "You Only Scan Once", Qin et al.
//                       2024): per key channel i, o_t = Σ_i scale·silu(q_t)_i ·
//                       (S0_i e^{z0_i} + Σ_{s≤t} e^{k_s,i} v_s) / (e^{z0_i} + Σ_{s≤t} e^{k_s,i}),
//                       a softmax over time of each key channel, with a running max for range
//   slab                SLAB's SLA, causal: o_t = Σ_{s≤t} (relu q_t·relu k_s) v_s / (Σ_{s≤t}
//                       relu q_t·relu k_s + eps) with the initial (S0, z0) added to both sums
//   mean_corrected      InLine (Eq. 5) / MALA as pairwise scores over the keys seen so far
//                       (n = n0 + tokens so far), with the initial aggregates added:
//                         InLine: w_j = φq·φk_j·c − mean_j(φq·φk_j·c) + 1/n,  c = scale/n
//                         MALA:   w_j = β·φq·φk_j·c − z/n,  z = scale·φq·mean_j φk_j,
//                                 β = 1 + 1/(z + eps)
//                         NaLa:   w_j = φq·φk_j / (Σ_j φq·φk_j + n·eps)  (q, k through
//                                 nala_query_features / nala_key_features below)
//                       o_t = Σ_j w_j v_j; φ applied by the caller (q, k already mapped)
//   token_conv          o[t,c] += bias[c] + Σ_j w[c,j]·v[t−W+1+j, c], causal, zero or cached
//                       history
//   aaren, flowformer, titans, selective_scan (Mamba-1): see each function
// Inputs and outputs as the operators' (papers/*.hpp); shapes are assumed valid (the tests give
// the same arguments the operators accepted). q, k and v are fp32 (the papers' operators take
// fp32 only; LinearInputs' views are read through as<float>()).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <span>
#include <vector>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/papers/mamba1.hpp"
#include "polyattn/papers/token_conv.hpp"
#include "polyattn/reference/eigen_io.hpp"
#include "polyattn/reference/linear.hpp"

namespace polyattn::reference {

template <class Out>
void lightnet(const LinearInputs& in, View3<const float> initial_log_z,
              std::optional<double> scale_opt, const View4<Out>& o, const View4<Out>& final_state) {
  using detail::Mat;
  using detail::Vec;
  const index_t B = in.q.size(0), T = in.q.size(1), H = in.q.size(2), K = in.q.size(3);
  const index_t HV = in.v.size(2), V = in.v.size(3), G = HV / H;
  const double scale = resolved_scale(scale_opt, K);
  const auto segs = segments(B, T, in.cu_seqlens);
  for (index_t n = 0; n < static_cast<index_t>(segs.size()); ++n) {
    const auto& sg = segs[static_cast<std::size_t>(n)];
    for (index_t hv = 0; hv < HV; ++hv) {
      const index_t h = hv / G;
      // Per channel i: numerator A (row i) and denominator D, both times e^{−m_i}.
      Mat A = Mat::Zero(K, V);
      Vec D = Vec::Zero(K);
      Vec m = Vec::Constant(K, -std::numeric_limits<double>::infinity());
      if (!in.initial_state.absent()) {
        m = detail::row(initial_log_z, n, h).cast<double>();
        A = detail::mat(in.initial_state, n, hv).cast<double>();
        D.setOnes();
      }
      for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
        const Vec k = detail::row(in.k.as<float>(), sg.batch, t, h).cast<double>();
        const Vec v = detail::row(in.v.as<float>(), sg.batch, t, hv).cast<double>();
        for (index_t i = 0; i < K; ++i) {
          const double mi = std::max(m(i), k(i));
          const double rescale = std::exp(m(i) - mi);  // 0 when m was −inf
          A.row(i) = A.row(i) * rescale + std::exp(k(i) - mi) * v.transpose();
          D(i) = D(i) * rescale + std::exp(k(i) - mi);
          m(i) = mi;
        }
        Vec out = Vec::Zero(V);
        for (index_t i = 0; i < K; ++i) {
          const double q = in.q(sg.batch, t, h, i);
          const double silu = q / (1.0 + std::exp(-q));
          out += scale * silu * A.row(i).transpose() / D(i);
        }
        detail::store(o, sg.batch, t, hv, out);
      }
      if (!final_state.absent()) {
        Mat S = A;
        for (index_t i = 0; i < K; ++i)
          S.row(i) = D(i) > 0 ? Eigen::RowVectorXd(A.row(i) / D(i)) : Eigen::RowVectorXd::Zero(V);
        detail::store_mat(final_state, n, hv, S);
      }
    }
  }
}

/// SLAB's SLA, causal, φ = relu applied here; no scale.
template <class Out>
void slab(const LinearInputs& in, double eps, const View4<Out>& o) {
  using detail::Vec;
  const index_t B = in.q.size(0), T = in.q.size(1), H = in.q.size(2);
  const index_t HV = in.v.size(2), V = in.v.size(3), G = HV / H;
  const auto relu = [](const Vec& x) { return Vec(x.cwiseMax(0.0)); };
  const auto segs = segments(B, T, in.cu_seqlens);
  for (index_t n = 0; n < static_cast<index_t>(segs.size()); ++n) {
    const auto& sg = segs[static_cast<std::size_t>(n)];
    for (index_t hv = 0; hv < HV; ++hv) {
      const index_t h = hv / G;
      for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
        const Vec q = relu(detail::row(in.q.as<float>(), sg.batch, t, h).cast<double>());
        Vec num = Vec::Zero(V);
        double den = 0.0;
        if (!in.initial_state.absent()) {
          num = detail::mat(in.initial_state, n, hv).cast<double>().transpose() * q;
          den = q.dot(detail::row(in.initial_z, n, hv).cast<double>());
        }
        for (index_t s = sg.begin; s <= t; ++s) {
          const double w =
              q.dot(relu(detail::row(in.k.as<float>(), sg.batch, s, h).cast<double>()));
          num += w * detail::row(in.v.as<float>(), sg.batch, s, hv).cast<double>();
          den += w;
        }
        detail::store(o, sg.batch, t, hv, Vec(num / (den + eps)));
      }
    }
  }
}

enum class MeanCorrectionKind { InLine, Mala, Nala };

/// InLine / MALA pairwise, causal. q, k already mapped; init aggregates optional (all or none):
/// S0 = in.initial_state, z0 [N,HV,K], m0 [N,HV,V], n0 [N].
template <class Out>
void mean_corrected(const LinearInputs& in, MeanCorrectionKind kind,
                    std::optional<double> scale_opt, double eps, View3<const float> z0,
                    View3<const float> m0, View1<const float> n0, const View4<Out>& o) {
  using detail::Vec;
  const index_t B = in.q.size(0), T = in.q.size(1), H = in.q.size(2), K = in.q.size(3);
  const index_t HV = in.v.size(2), V = in.v.size(3), G = HV / H;
  const double scale = resolved_scale(scale_opt, K);
  const auto segs = segments(B, T, in.cu_seqlens);
  const bool init = !z0.absent();
  for (index_t n = 0; n < static_cast<index_t>(segs.size()); ++n) {
    const auto& sg = segs[static_cast<std::size_t>(n)];
    for (index_t hv = 0; hv < HV; ++hv) {
      const index_t h = hv / G;
      for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
        const Vec q = detail::row(in.q.as<float>(), sg.batch, t, h).cast<double>();
        const double cnt = (init ? static_cast<double>(n0(n)) : 0.0) + (t - sg.begin + 1);
        const double c = scale / cnt;
        // Raw scores φq·φk_j of the keys seen (prefix aggregates first, then token by token).
        double score_sum = init ? q.dot(detail::row(z0, n, hv).cast<double>()) : 0.0;
        for (index_t s = sg.begin; s <= t; ++s)
          score_sum += q.dot(detail::row(in.k.as<float>(), sg.batch, s, h).cast<double>());
        Vec num = init ? Vec(detail::mat(in.initial_state, n, hv).cast<double>().transpose() * q)
                       : Vec::Zero(V);
        Vec vsum = init ? Vec(detail::row(m0, n, hv).cast<double>()) : Vec::Zero(V);
        for (index_t s = sg.begin; s <= t; ++s) {
          const Vec v = detail::row(in.v.as<float>(), sg.batch, s, hv).cast<double>();
          num += q.dot(detail::row(in.k.as<float>(), sg.batch, s, h).cast<double>()) * v;
          vsum += v;
        }
        // Σ_j w_j v_j with w_j = a·score_j + b (the prefix aggregates enter the same sums).
        double a = 0, b = 0;
        if (kind == MeanCorrectionKind::InLine) {
          a = c;
          b = -c * score_sum / cnt + 1.0 / cnt;
        } else if (kind == MeanCorrectionKind::Mala) {
          const double z = scale * score_sum / cnt;
          a = (1.0 + 1.0 / (z + eps)) * c;
          b = -z / cnt;
        } else {  // NaLa: w_j = φq·φk_j / (Σ_j φq·φk_j + n·eps), no scale
          a = 1.0 / (score_sum + cnt * eps);
          b = 0.0;
        }
        detail::store(o, sg.batch, t, hv, Vec(a * num + b * vsum));
      }
    }
  }
}

/// Aaren: softmax attention of the learned query q_h [H,K] over the tokens seen so far, the
/// initial state (m0, c0, a0) standing for the tokens before (o = (a0 e^{m0} + Σ e^{s_j} v_j) /
/// (c0 e^{m0} + Σ e^{s_j}), s_j = scale·q_h·k_j), formed with the prefix's max in double.
template <class Out>
void aaren(const TensorView<const float, 2>& query, const View4<const float>& k,
           const View4<const float>& v, std::span<const std::int64_t> cu_seqlens,
           TensorView<const float, 2> m0, TensorView<const float, 2> c0, View3<const float> a0,
           double scale, const View4<Out>& o) {
  using detail::Vec;
  const index_t B = k.size(0), T = k.size(1), H = k.size(2), HV = v.size(2), V = v.size(3);
  const auto segs = segments(B, T, cu_seqlens);
  for (index_t n = 0; n < static_cast<index_t>(segs.size()); ++n) {
    const auto& sg = segs[static_cast<std::size_t>(n)];
    for (index_t hv = 0; hv < HV; ++hv) {
      const index_t h = hv / (HV / H);
      const Vec q = detail::row(query, h).cast<double>();
      std::vector<double> s;
      for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
        s.push_back(scale * q.dot(detail::row(k, sg.batch, t, h).cast<double>()));
        double M = *std::max_element(s.begin(), s.end());
        if (!m0.absent()) M = std::max(M, static_cast<double>(m0(n, hv)));
        Vec num = Vec::Zero(V);
        double den = 0.0;
        if (!m0.absent()) {
          const double f = std::exp(m0(n, hv) - M);
          num = f * detail::row(a0, n, hv).cast<double>();
          den = f * c0(n, hv);
        }
        for (index_t j = sg.begin; j <= t; ++j) {
          const double w = std::exp(s[static_cast<std::size_t>(j - sg.begin)] - M);
          num += w * detail::row(v, sg.batch, j, hv).cast<double>();
          den += w;
        }
        detail::store(o, sg.batch, t, hv, Vec(num / den));
      }
    }
  }
}

/// Flowformer, causal (papers/flowformer.hpp), straight from the definitions: every prefix sum
/// recomputed for each position, the output as an explicit sum over the keys seen. No carried
/// state (the operator's split prefill is checked against its own one-call result).
template <class Out>
void flowformer(const LinearInputs& in, double eps, const View4<Out>& o) {
  using detail::Vec;
  const index_t B = in.q.size(0), T = in.q.size(1), H = in.q.size(2), K = in.q.size(3);
  const index_t HV = in.v.size(2), V = in.v.size(3), G = HV / H;
  const auto sig = [](const Vec& x) {
    return Vec(x.unaryExpr([](double e) { return 1.0 / (1.0 + std::exp(-e)); }));
  };
  const auto segs = segments(B, T, in.cu_seqlens);
  for (index_t n = 0; n < static_cast<index_t>(segs.size()); ++n) {
    const auto& sg = segs[static_cast<std::size_t>(n)];
    const index_t L = sg.length;
    for (index_t h = 0; h < H; ++h) {
      std::vector<Vec> fq, fk;
      for (index_t t = 0; t < L; ++t) {
        fq.push_back(sig(detail::row(in.q.as<float>(), sg.batch, sg.begin + t, h).cast<double>()));
        fk.push_back(sig(detail::row(in.k.as<float>(), sg.batch, sg.begin + t, h).cast<double>()));
      }
      const auto prefix = [&](const std::vector<Vec>& x, index_t i, auto weight) {
        Vec sum = Vec::Zero(K);
        for (index_t j = 0; j <= i; ++j) sum += weight(j) * x[static_cast<std::size_t>(j)];
        return sum;
      };
      const auto one = [](index_t) { return 1.0; };
      const auto plus_eps = [&](const Vec& x) { return Vec(x.array() + eps); };
      std::vector<double> I(static_cast<std::size_t>(L)), O(I.size()), w(I.size()), a(I.size()),
          ce(I.size());
      for (index_t i = 0; i < L; ++i) {  // i is position i + 1
        const double pos = static_cast<double>(i + 1);
        I[i] = pos / plus_eps(fq[i]).dot(plus_eps(prefix(fk, i, one)));
        O[i] = pos / plus_eps(fk[i]).dot(plus_eps(prefix(fq, i, one)));
      }
      for (index_t i = 0; i < L; ++i) {
        const double pos = static_cast<double>(i + 1);
        const double sink =
            plus_eps(fq[i]).dot(plus_eps(prefix(fk, i, [&](index_t j) { return O[j]; }))) / pos;
        const double source = std::clamp(
            plus_eps(fk[i]).dot(plus_eps(prefix(fq, i, [&](index_t j) { return I[j]; }))) / pos,
            -1.0, 1.0);
        a[i] = 1.0 / (1.0 + std::exp(-sink));
        ce[i] = std::exp(source);
        double esum = 0.0;
        for (index_t j = 0; j <= i; ++j) esum += ce[j];
        w[i] = pos * ce[i] / esum;
      }
      for (index_t g = 0; g < G; ++g) {
        const index_t hv = h * G + g;
        for (index_t i = 0; i < L; ++i) {
          Vec out = Vec::Zero(V);
          for (index_t j = 0; j <= i; ++j)
            out += fq[i].dot(fk[j]) * w[j] *
                   detail::row(in.v.as<float>(), sg.batch, sg.begin + j, hv).cast<double>();
          out *= a[i] * I[i] / static_cast<double>(i + 1);
          detail::store(o, sg.batch, sg.begin + i, hv, out);
        }
      }
    }
  }
}

/// Titans' linear memory in the paper's orientation, M (V×K) with M k ≈ v (Sec. 3.1):
/// S_t = η S_{t−1} − θ ∇ℓ,  ∇ℓ = (M_{t−1} k − v) kᵀ,  M_t = (1 − α) M_{t−1} + S_t,  y = M_t q.
/// q, k L2-normalised when asked; m0, u0 the initial memory and momentum in the operator's
/// [N,HV,K,V] layout (M = Sᵀ), absent = zeros.
template <class Out>
void titans(const View4<const float>& q, const View4<const float>& k, const View4<const float>& v,
            const View3<const float>& alpha, const View3<const float>& eta,
            const View3<const float>& theta, View4<const float> m0, View4<const float> u0,
            std::span<const std::int64_t> cu_seqlens, double scale, bool qk_l2norm,
            const View4<Out>& o, const View4<Out>& final_memory) {
  using detail::Mat;
  using detail::Vec;
  const index_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3);
  const index_t HV = v.size(2), V = v.size(3);
  const auto segs = segments(B, T, cu_seqlens);
  for (index_t n = 0; n < static_cast<index_t>(segs.size()); ++n) {
    const auto& sg = segs[static_cast<std::size_t>(n)];
    for (index_t hv = 0; hv < HV; ++hv) {
      const index_t h = hv / (HV / H);
      Mat M = Mat::Zero(V, K), Smom = Mat::Zero(V, K);
      if (!m0.absent()) {
        M = detail::mat(m0, n, hv).cast<double>().transpose();
        Smom = detail::mat(u0, n, hv).cast<double>().transpose();
      }
      for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
        Vec qt = detail::row(q, sg.batch, t, h).cast<double>();
        Vec kt = detail::row(k, sg.batch, t, h).cast<double>();
        if (qk_l2norm) {
          qt /= std::sqrt(qt.squaredNorm() + kL2NormEps);
          kt /= std::sqrt(kt.squaredNorm() + kL2NormEps);
        }
        const Vec vt = detail::row(v, sg.batch, t, hv).cast<double>();
        const Mat grad = (M * kt - vt) * kt.transpose();
        Smom = static_cast<double>(eta(sg.batch, t, hv)) * Smom -
               static_cast<double>(theta(sg.batch, t, hv)) * grad;
        M = (1.0 - static_cast<double>(alpha(sg.batch, t, hv))) * M + Smom;
        detail::store(o, sg.batch, t, hv, Vec(M * (scale * qt)));
      }
      if (!final_memory.absent()) detail::store_mat(final_memory, n, hv, Mat(M.transpose()));
    }
  }
}

/// Mamba-1's selective scan in double (papers/mamba1.hpp; the authors' selective_scan_ref):
/// h ← exp(ΔA) ⊙ h + Δ B x, y = C·h + D x, y *= silu(z); Δ = softplus(dt + dt_bias) when asked.
template <class Out>
void selective_scan(const papers::SelectiveScanInputs& in, bool dt_softplus, const View3<Out>& y,
                    const View3<Out>& final_state) {
  const index_t B = in.x.size(0), T = in.x.size(1), D = in.x.size(2);
  const index_t G = in.Bm.size(2), N = in.A.size(1);
  const auto segs = segments(B, T, in.cu_seqlens);
  for (index_t s = 0; s < static_cast<index_t>(segs.size()); ++s) {
    const auto& sg = segs[static_cast<std::size_t>(s)];
    for (index_t c = 0; c < D; ++c) {
      const index_t g = c / (D / G);
      std::vector<double> h(static_cast<std::size_t>(N), 0.0);
      if (!in.initial_state.absent())
        for (index_t n = 0; n < N; ++n) h[n] = in.initial_state(s, c, n);
      for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
        double dl = in.dt(sg.batch, t, c);
        if (!in.dt_bias.absent()) dl += in.dt_bias(c);
        if (dt_softplus) dl = std::log(1.0 + std::exp(dl));
        const double x = in.x(sg.batch, t, c);
        double out = 0.0;
        for (index_t n = 0; n < N; ++n) {
          h[n] = std::exp(dl * in.A(c, n)) * h[n] + dl * in.Bm(sg.batch, t, g, n) * x;
          out += in.Cm(sg.batch, t, g, n) * h[n];
        }
        if (!in.D.absent()) out += in.D(c) * x;
        if (!in.z.absent()) {
          const double z = in.z(sg.batch, t, c);
          out *= z / (1.0 + std::exp(-z));
        }
        y(sg.batch, t, c) = static_cast<Out>(out);
      }
      if (!final_state.absent())
        for (index_t n = 0; n < N; ++n) final_state(s, c, n) = static_cast<Out>(h[n]);
    }
  }
}

/// Mixture-of-Memories (papers/mom.hpp) by masking rather than gathering: memory m of sequence b
/// runs the gated delta rule over all T tokens with e^{g} = 1 and β = 0 where the token is not
/// routed to it (so it neither decays nor learns there), through linear_recurrence; the output
/// is Σ_m w_{t,m} · read-out of memory m. States [M·B,HV,K,V] (row m·B + b).
template <class Out>
void mixture_of_memories(const View4<const float>& q, const View4<const float>& k,
                         const View4<const float>& v, const View3<const float>& g,
                         const View3<const float>& beta, const View3<const float>& weights,
                         View4<const float> initial_state, const View4<Out>& o) {
  const index_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3);
  const index_t HV = v.size(2), V = v.size(3), M = weights.size(2);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t hv = 0; hv < HV; ++hv)
        for (index_t j = 0; j < V; ++j) o(b, t, hv, j) = Out(0);
  LinearOptions opt;
  opt.decay = Decay::ScalarPerToken;
  opt.update = Update::Delta;
  opt.qk_l2norm = true;
  for (index_t m = 0; m < M; ++m)
    for (index_t b = 0; b < B; ++b) {
      const index_t seq = m * B + b;
      std::vector<float> gm(static_cast<std::size_t>(T * HV)), bm(gm.size());
      for (index_t t = 0; t < T; ++t)
        for (index_t hv = 0; hv < HV; ++hv) {
          const bool routed = weights(b, t, m) != 0.f;
          gm[static_cast<std::size_t>(t * HV + hv)] = routed ? g(seq, t, hv) : 0.f;
          bm[static_cast<std::size_t>(t * HV + hv)] = routed ? beta(seq, t, hv) : 0.f;
        }
      LinearInputs in{.q = View4<const float>(q.ptr(b, 0, 0, 0), {1, T, H, K},
                                              {0, q.stride(1), q.stride(2), q.stride(3)}),
                      .k = View4<const float>(k.ptr(seq, 0, 0, 0), {1, T, H, K},
                                              {0, k.stride(1), k.stride(2), k.stride(3)}),
                      .v = View4<const float>(v.ptr(seq, 0, 0, 0), {1, T, HV, V},
                                              {0, v.stride(1), v.stride(2), v.stride(3)}),
                      .g = bth<const float>(gm.data(), 1, T, HV),
                      .beta = bth<const float>(bm.data(), 1, T, HV)};
      if (!initial_state.absent())
        in.initial_state = View4<const float>(
            initial_state.ptr(seq, 0, 0, 0), {1, HV, K, V},
            {0, initial_state.stride(1), initial_state.stride(2), initial_state.stride(3)});
      std::vector<double> om(static_cast<std::size_t>(T * HV * V));
      linear_recurrence<double>(in, opt, {.o = bthd(om.data(), 1, T, HV, V)});
      for (index_t t = 0; t < T; ++t)
        for (index_t hv = 0; hv < HV; ++hv)
          for (index_t j = 0; j < V; ++j)
            o(b, t, hv, j) += static_cast<Out>(weights(b, t, m)) *
                              static_cast<Out>(om[static_cast<std::size_t>((t * HV + hv) * V + j)]);
    }
}

/// NaLaFormer's maps in double, from the formulas (papers/nala.hpp): the query's norm r sets the
/// power p = 3(½ + tanh r) of its direction's positive and negative parts; keys are cubed.
inline std::vector<double> nala_query_features(const std::vector<double>& q) {
  double r = 0.0;
  for (double x : q) r += x * x;
  r = std::sqrt(r);
  const double p = 3.0 * (0.5 + std::tanh(r));
  const std::size_t d = q.size();
  std::vector<double> f(2 * d, 0.0);
  if (r == 0.0) return f;
  for (std::size_t i = 0; i < d; ++i) {
    f[i] = std::pow(std::max(q[i] / r, 0.0), p);
    f[d + i] = std::pow(std::max(-q[i] / r, 0.0), p);
  }
  return f;
}
inline std::vector<double> nala_key_features(const std::vector<double>& k) {
  const std::size_t d = k.size();
  std::vector<double> f(2 * d);
  for (std::size_t i = 0; i < d; ++i) {
    f[i] = std::pow(std::max(k[i], 0.0), 3.0);
    f[d + i] = std::pow(std::max(-k[i], 0.0), 3.0);
  }
  return f;
}

/// o += causal depthwise conv of x (papers/token_conv.hpp), history from cache_in or zeros; x
/// fp32, bf16 or fp16, read widened.
template <class Out>
void token_conv(const ElementView<4>& x, const papers::TokenConv& conv, View4<const float> cache_in,
                std::span<const std::int64_t> cu_seqlens, const View4<Out>& o) {
  const index_t B = x.size(0), T = x.size(1), HX = x.size(2), V = x.size(3);
  const index_t W = conv.width();
  const auto segs = segments(B, T, cu_seqlens);
  for (index_t n = 0; n < static_cast<index_t>(segs.size()); ++n) {
    const auto& sg = segs[static_cast<std::size_t>(n)];
    for (index_t h = 0; h < HX; ++h)
      for (index_t c = 0; c < V; ++c)
        for (index_t t = 0; t < sg.length; ++t) {
          double acc = conv.bias.absent() ? 0.0 : conv.bias(c);
          for (index_t j = 0; j < W; ++j) {
            const index_t p = t - (W - 1) + j;  // position relative to the sequence start
            double x_p = 0.0;
            if (p >= 0)
              x_p = x(sg.batch, sg.begin + p, h, c);
            else if (!cache_in.absent())
              x_p = cache_in(n, h, W - 1 + p, c);
            acc += static_cast<double>(conv.weight(conv.weight.size(0) == 1 ? 0 : n,
                                                   conv.weight.size(1) == 1 ? 0 : h, c, j)) *
                   x_p;
          }
          o(sg.batch, sg.begin + t, h, c) += static_cast<Out>(acc);
        }
  }
}

}  // namespace polyattn::reference
