// polyattn/papers/mean_corrected.hpp — linear attention whose normaliser mixes the read-out with
// the running mean of the values, causal form (keys seen so far), per (sequence, value head):
//
//   S_t = S_0 + Σ_{s≤t} φ(k_s) v_sᵀ,  z_t = z_0 + Σ_{s≤t} φ(k_s),  m_t = m_0 + Σ_{s≤t} v_s,
//   n_t = n_0 + (number of tokens so far),  s_t = scale·φ(q_t)·z_t,
//   o_t = α(s_t, n_t) · S_tᵀ(scale·φ(q_t)) + γ(s_t, n_t) · m_t
//
// A normaliser of this kind (concept MeanCorrection) gives the two coefficients:
//   InLineCorrection (Han et al., "Bridging the Divide: Reconsidering Softmax and Linear
//     Attention", NeurIPS 2024, Eq. 5, with φ(Q) carrying scale/N as the authors' code
//     github.com/LeapLabTHU/InLine notes):
//     Sim(q, k_j) = φq·φk_j·scale/n − mean_s(φq·φk_s·scale/n) + 1/n, whose weights sum to 1:
//     α = 1/n,  γ = (1 − s/n)/n
//   MalaCorrection (Fan et al., "Rectifying Magnitude Neglect in Linear Attention", ICCV 2025,
//     the MALA formula as in the authors' code github.com/qhfan/MALA: z = scale·φq·mean(φk)):
//     Attn(q, k_j) = β·φq·φk_j·scale/n − γ',  β = 1 + 1/(z + eps),  γ' = z/n,  z = s/n:
//     α = β/n,  γ = −z/n                          (eps = 1e-6 as the authors' code)
// The vision papers are non-causal (n = all tokens); here n counts the keys seen so far, so the
// operator is a causal token mixer with recurrent state (S, z, m, n).
//
// The S_tᵀ(scale·φq) part runs through the library's LinearAttention<Identity, NoDecay,
// AdditiveUpdate, NoNormalizer> kernels (Recurrent, Chunked<C>, Parallel); the feature map is
// applied once here, and the O(T·(K+V)) pass for z, m, n and the coefficients runs after it in
// double. GVA (HV = G·H), varlen (cu_seqlens) and decode (step) as the rest of the family. The
// mean state: z [N,HV,K] (K after φ), m [N,HV,V], n [N] (float, exact to 2^24 tokens); all three
// or none (none = zeros).
// Element types: q, k, v fp32, bf16 or fp16 (one type, as the linear family), o any of the three.
// With identity maps the kernels get the typed views; with a feature map they get the fp32 mapped
// q, k and v widened into fp32 scratch too (the family takes one element type: one copy of v).
// The correction pass reads q, k, v widened exactly, and o is formed in fp32 and rounded once
// (papers/fp32_linear_outputs.hpp), so bf16 inputs give the fp32 operator's bits on the widened
// values (docs/conventions.md §9.8).
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "polyattn/core/element.hpp"
#include "polyattn/linear/presets.hpp"
#include "polyattn/papers/fp32_linear_outputs.hpp"

namespace polyattn::papers {

struct MeanCoefficients {
  double alpha, gamma;
};

template <class C>
concept MeanCorrection = requires(const C& c, double s, double n) {
  { c.coefficients(s, n) } -> std::same_as<MeanCoefficients>;
};

struct InLineCorrection {
  MeanCoefficients coefficients(double s, double n) const noexcept {
    return {1.0 / n, (1.0 - s / n) / n};
  }
};

struct MalaCorrection {
  double eps = 1e-6;
  MeanCoefficients coefficients(double s, double n) const noexcept {
    const double z = s / n;
    return {(1.0 + 1.0 / (z + eps)) / n, -z / n};
  }
};

/// The mean state of a call: z [N,HV,K], m (value sum) [N,HV,V], n [N]; all or none.
template <class T>
struct MeanState {
  View3<T> z, vsum;
  View1<T> count;
  bool absent() const { return z.absent() && vsum.absent() && count.absent(); }
};

/// Map applies to q, KeyMap to k (the same map unless a system maps them differently, as
/// NaLaFormer does); both must give the same out_dim.
template <FeatureMap Map, MeanCorrection Corr, FeatureMap KeyMap = Map>
class MeanCorrectedLinear {
 public:
  MeanCorrectedLinear() = default;
  MeanCorrectedLinear(Map map, Corr corr, std::optional<double> default_scale = std::nullopt)
    requires std::is_same_v<Map, KeyMap>
      : map_(map), key_map_(std::move(map)), corr_(corr), default_scale_(default_scale) {}
  MeanCorrectedLinear(Map map, KeyMap key_map, Corr corr,
                      std::optional<double> default_scale = std::nullopt)
      : map_(std::move(map)),
        key_map_(std::move(key_map)),
        corr_(corr),
        default_scale_(default_scale) {}

  const Map& feature_map() const { return map_; }
  const KeyMap& key_feature_map() const { return key_map_; }
  const Corr& correction() const { return corr_; }
  std::optional<double> default_scale() const { return default_scale_; }

  /// Prefill. in: q, k [B,T,H,Kin], v [B,T,HV,V], optional initial_state [N,HV,K,V] (K after
  /// φ) and cu_seqlens; in.initial_z must be empty (the mean state carries z). out: o, optional
  /// final_state; out.final_z must be empty.
  /// @throws polyattn::Error naming the bad argument; outputs are then untouched
  template <LinearAlgorithm Algo = Recurrent, Executor E = Serial>
  void forward(const LinearInputs& in, const MeanState<const float>& init,
               const LinearOutputs<float>& out, const MeanState<float>& fin,
               const LinearRunOptions& run = {}, const E& exec = E{}) const {
    run_impl<Algo>(in, init, out, fin, run, exec);
  }

  /// Decode: state [B,HV,K,V] and the mean state (z, m, n) read and updated in place.
  template <Executor E = Serial>
  void step(const LinearInputs& in, View4<float> state, const MeanState<float>& mean, MutEView4 o,
            const LinearRunOptions& run = {}, const E& exec = E{}) const {
    if (!in.initial_state.absent())
      throw Error("initial_state",
                  "must be empty in step(): the state argument is read and updated in place");
    if (!in.cu_seqlens.empty()) throw Error("cu_seqlens", "is not supported by step()");
    check::required("state", state);
    check::required("mean.z", mean.z);
    LinearInputs with_state = in;
    with_state.initial_state = state;
    const MeanState<const float> init{mean.z, mean.vsum, mean.count};
    run_impl<Recurrent>(with_state, init, {.o = o, .final_state = state}, mean, run, exec);
  }

 private:
  template <class T>
  static void check_mean_state(const char* which, const MeanState<T>& ms, index_t N, index_t HV,
                               index_t K, index_t V) {
    if (ms.absent()) return;
    const std::string p(which);
    if (ms.z.absent() || ms.vsum.absent() || ms.count.absent())
      throw Error(p + (ms.z.absent()      ? ".z"
                       : ms.vsum.absent() ? ".vsum"
                                          : ".count"),
                  "is missing: the mean state is z, vsum and count together");
    check::well_formed(p + ".z", ms.z);
    check::shape_is(p + ".z", ms.z, {N, HV, K}, "[N,HV,K] with K after the feature map");
    check::well_formed(p + ".vsum", ms.vsum);
    check::shape_is(p + ".vsum", ms.vsum, {N, HV, V}, "[N,HV,V]");
    check::well_formed(p + ".count", ms.count);
    check::shape_is(p + ".count", ms.count, {N}, "[N]");
  }

  template <class Algo, class E>
  void run_impl(const LinearInputs& in_raw, const MeanState<const float>& init,
                const LinearOutputs<float>& out, const MeanState<float>& fin,
                const LinearRunOptions& run, const E& exec) const {
    check::required("q", in_raw.q);
    check::required("k", in_raw.k);
    check::required("v", in_raw.v);
    check::required("o", out.o);
    check::qkv_element_types(in_raw);
    check::shape_is("k", in_raw.k, in_raw.q.shape(), "same as q [B,T,H,K]");
    if (!in_raw.initial_z.absent())
      throw Error("initial_z", "is not used: the mean state (init.z) carries the key sum");
    if (!out.final_z.absent())
      throw Error("final_z", "is not used: the mean state (fin.z) carries the key sum");
    const auto& qs = in_raw.q.shape();
    const index_t K = map_.out_dim(qs[3]);
    if (key_map_.out_dim(qs[3]) != K)
      throw Error("k", "the key feature map gives " + std::to_string(key_map_.out_dim(qs[3])) +
                           " features, the query map " + std::to_string(K));
    const index_t N = check::cu_seqlens("cu_seqlens", in_raw.cu_seqlens, qs[0], qs[1]);
    const index_t HV = in_raw.v.size(2), V = in_raw.v.size(3);
    check_mean_state("init", init, N, HV, K, V);
    check_mean_state("fin", fin, N, HV, K, V);

    // φ(q), φ(k) once, for the kernels and for the correction pass.
    std::vector<float> qm, km, vw;
    LinearInputs in = in_raw;
    if constexpr (!Map::is_identity || !KeyMap::is_identity) {
      // (At least one element, so that an empty call still passes non-null views.)
      qm.resize(static_cast<std::size_t>(std::max<index_t>(qs[0] * qs[1] * qs[2] * K, 1)));
      km.resize(qm.size());
      const auto qv = View4<float>::contiguous(qm.data(), {qs[0], qs[1], qs[2], K});
      const auto kv = View4<float>::contiguous(km.data(), {qs[0], qs[1], qs[2], K});
      apply_rows(map_, in_raw.q, qv);
      apply_rows(key_map_, in_raw.k, kv);
      in.q = qv;
      in.k = kv;
      if (!in_raw.v.is<float>()) {  // the kernels take one element type: v widened to fp32 too
        vw.resize(static_cast<std::size_t>(std::max<index_t>(in_raw.v.numel(), 1)));
        const auto vv = View4<float>::contiguous(vw.data(), in_raw.v.shape());
        apply_rows(Identity{}, in_raw.v, vv);
        in.v = vv;
      }
    }
    const std::optional<double> scale_opt = run.scale ? run.scale : default_scale_;
    // The kernels validate the rest (shapes, GVA, states) before writing o or final_state.
    const Fp32LinearOutputs o32(in_raw, out);
    core_.template forward<Algo>(in, o32.outputs(), {.scale = scale_opt}, exec);
    // The correction pass, on q, k (mapped or raw) and v of their element types.
    in.q.visit([&](auto qf) {
      using Tqk = std::remove_cvref_t<decltype(*qf.data())>;
      in.v.visit([&](auto vf) {
        correct(qf, in.k.as<Tqk>(), vf, in.cu_seqlens, init, o32.o(), fin,
                resolved_scale(scale_opt, K));
      });
    });
    o32.finish();
  }

  // o ← α·o + γ·m token by token (header comment), with z, m, n from init; fin receives them.
  template <class Tqk, class Tv>
  void correct(const TensorView<const Tqk, 4>& qf, const TensorView<const Tqk, 4>& kf,
               const TensorView<const Tv, 4>& vf, std::span<const std::int64_t> cu,
               const MeanState<const float>& init, const View4<float>& of,
               const MeanState<float>& fin, double scale) const {
    const auto& qs = qf.shape();
    const index_t K = qs[3], HV = vf.size(2), V = vf.size(3), H = qs[2], G = HV / H;
    const auto segs = segments(qs[0], qs[1], cu);
    const auto N = static_cast<index_t>(segs.size());
    std::vector<double> counts(static_cast<std::size_t>(N));
    for (index_t n = 0; n < N; ++n) counts[n] = init.absent() ? 0.0 : init.count(n);
    std::vector<double> z(static_cast<std::size_t>(K)), m(static_cast<std::size_t>(V));
    for (index_t n = 0; n < N; ++n) {
      const Segment& sg = segs[static_cast<std::size_t>(n)];
      for (index_t hv = 0; hv < HV; ++hv) {
        const index_t h = hv / G;
        for (index_t i = 0; i < K; ++i) z[i] = init.absent() ? 0.0 : init.z(n, hv, i);
        for (index_t j = 0; j < V; ++j) m[j] = init.absent() ? 0.0 : init.vsum(n, hv, j);
        double cnt = counts[n];
        for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
          double s = 0.0;
          for (index_t i = 0; i < K; ++i) {
            z[i] += to_float(kf(sg.batch, t, h, i));
            s += static_cast<double>(to_float(qf(sg.batch, t, h, i))) * z[i];
          }
          for (index_t j = 0; j < V; ++j) m[j] += to_float(vf(sg.batch, t, hv, j));
          cnt += 1.0;
          const MeanCoefficients c = corr_.coefficients(scale * s, cnt);
          for (index_t j = 0; j < V; ++j) {
            float& o = of(sg.batch, t, hv, j);
            o = static_cast<float>(c.alpha * o + c.gamma * m[j]);
          }
        }
        if (!fin.absent()) {
          for (index_t i = 0; i < K; ++i) fin.z(n, hv, i) = static_cast<float>(z[i]);
          for (index_t j = 0; j < V; ++j) fin.vsum(n, hv, j) = static_cast<float>(m[j]);
        }
      }
      if (!fin.absent()) fin.count(n) = static_cast<float>(counts[n] + sg.length);
    }
  }

  Map map_{};
  KeyMap key_map_{};
  Corr corr_{};
  std::optional<double> default_scale_;
  ::polyattn::presets::linear_attn core_{};
};

namespace presets {

/// InLine attention (injective linear attention), causal; φ = identity as in the authors' code.
template <FeatureMap Map = Identity>
using inline_attn = MeanCorrectedLinear<Map, InLineCorrection>;
template <FeatureMap Map = Identity>
inline_attn<Map> make_inline_attn(Map map = {}) {
  return {std::move(map), InLineCorrection{}};
}

/// MALA (magnitude-aware linear attention), causal; φ = elu + 1 as in the authors' code.
template <FeatureMap Map = EluPlusOne>
using mala = MeanCorrectedLinear<Map, MalaCorrection>;
template <FeatureMap Map = EluPlusOne>
mala<Map> make_mala(Map map = {}, double eps = 1e-6) {
  return {std::move(map), MalaCorrection{eps}};
}

}  // namespace presets
}  // namespace polyattn::papers
