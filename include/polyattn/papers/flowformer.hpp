// polyattn/papers/flowformer.hpp — Flowformer's flow attention, causal form (Wu et al.,
// "Flowformer: Linearizing Transformers with Conservation Flows", ICML 2022; the causal version
// as in the authors' code github.com/thuml/Flowformer, Flow_Attention.py, Flow_Attention_Causal).
// Per (sequence, head), positions i = 1, 2, … counted from the sequence start (n), φ = sigmoid,
// ε = 1e-6 added to every feature where the authors add it, Σ_{j≤i} over the tokens so far:
//
//   incoming flow of sink i      I_i = i / ((φq_i + ε)·(Σ_{j≤i} φk_j + ε))
//   outgoing flow of source i    O_i = i / ((φk_i + ε)·(Σ_{j≤i} φq_j + ε))
//   conserved sink               ŝ_i = (φq_i + ε)·(Σ_{j≤i} O_j φk_j + ε) / i
//   conserved source             ĉ_i = clamp((φk_i + ε)·(Σ_{j≤i} I_j φq_j + ε) / i, −1, 1)
//   allocation                   a_i = sigmoid(ŝ_i)
//   competition                  w_i = i · e^{ĉ_i} / Σ_{j≤i} e^{ĉ_j}
//   output                       o_i = a_i · (I_i/i) · φq_iᵀ Σ_{j≤i} φk_j (w_j v_j)ᵀ
//
// Every factor of token i depends on the prefix up to i only, so the heavy product is linear
// attention with q̃_i = (I_i/i)·φq_i, k = φk, ṽ_j = w_j v_j and scale 1, run on the linear_attn
// kernels (Recurrent, Chunked<C>, Parallel, step); the flows, the conserved quantities and the
// competition weights come from an O(T·K) pass in double before it, the allocation is applied
// after. GVA: the flows are per q/k head, ṽ and o per value head. Varlen as the family.
//
// Flow state per (sequence, q/k head), packed [N, H, 4K + 2]:
//   [ Σφq (K) | Σφk (K) | Σ O·φk (K) | Σ I·φq (K) | Σ e^{ĉ} | n ]
// given together with the linear state [N,HV,K,V] (both or neither), for prefill in pieces and
// decode.
// Element types: q, k, v fp32, bf16 or fp16 (one type, as the linear family), o any of the three.
// The flow pass reads q, k, v widened exactly (q̃, φk, ṽ are fp32 scratch in any case), and o is
// formed in fp32 and rounded once after the allocation (papers/fp32_linear_outputs.hpp), so bf16
// inputs give the fp32 operator's bits on the widened values (docs/conventions.md §9.8).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "polyattn/core/element.hpp"
#include "polyattn/linear/presets.hpp"
#include "polyattn/papers/fp32_linear_outputs.hpp"

namespace polyattn::papers {

class Flowformer {
 public:
  explicit Flowformer(double eps = 1e-6) : eps_(eps) {}
  double eps() const { return eps_; }
  static index_t flow_width(index_t K) { return 4 * K + 2; }

  /// Prefill. in: q, k [B,T,H,K] (raw: φ = sigmoid is applied here), v [B,T,HV,V], optional
  /// initial_state [N,HV,K,V] together with flow0 [N,H,4K+2]; cu_seqlens. out: o, optional
  /// final_state; flow_out [N,H,4K+2] optional.
  template <LinearAlgorithm Algo = Recurrent, Executor E = Serial>
  void forward(const LinearInputs& in, View3<const float> flow0, const LinearOutputs<float>& out,
               View3<float> flow_out, const E& exec = E{}) const {
    run_impl<Algo>(in, flow0, out, flow_out, exec);
  }

  /// Decode: state [B,HV,K,V] and flow [B,H,4K+2] read and updated in place.
  template <Executor E = Serial>
  void step(const LinearInputs& in, View4<float> state, View3<float> flow, MutEView4 o,
            const E& exec = E{}) const {
    if (!in.initial_state.absent())
      throw Error("initial_state",
                  "must be empty in step(): the state argument is read and updated in place");
    if (!in.cu_seqlens.empty()) throw Error("cu_seqlens", "is not supported by step()");
    check::required("state", state);
    check::required("flow", flow);
    LinearInputs with_state = in;
    with_state.initial_state = state;
    run_impl<Recurrent>(with_state, flow, {.o = o, .final_state = state}, flow, exec);
  }

 private:
  template <class Algo, class E>
  void run_impl(const LinearInputs& in_raw, View3<const float> flow0,
                const LinearOutputs<float>& out, View3<float> flow_out, const E& exec) const {
    check::required("q", in_raw.q);
    check::required("k", in_raw.k);
    check::required("v", in_raw.v);
    check::required("o", out.o);
    check::qkv_element_types(in_raw);
    check::shape_is("k", in_raw.k, in_raw.q.shape(), "same as q [B,T,H,K]");
    if (!in_raw.g.absent() || !in_raw.gk.absent() || !in_raw.g_gamma.absent() ||
        !in_raw.beta.absent() || !in_raw.initial_z.absent() || !out.final_z.absent())
      throw Error(!in_raw.g.absent()           ? "g"
                  : !in_raw.gk.absent()        ? "gk"
                  : !in_raw.g_gamma.absent()   ? "g_gamma"
                  : !in_raw.beta.absent()      ? "beta"
                  : !in_raw.initial_z.absent() ? "initial_z"
                                               : "final_z",
                  "was given but Flowformer has no gate, step size or z");
    const auto& s = in_raw.q.shape();
    const index_t B = s[0], T = s[1], H = s[2], K = s[3];
    check::positive("q (key dim)", K);
    const index_t N = check::cu_seqlens("cu_seqlens", in_raw.cu_seqlens, B, T);
    check::heads_divide("v", H, in_raw.v.size(2));
    const index_t HV = in_raw.v.size(2), V = in_raw.v.size(3), G = HV / H;
    check::shape_is("v", in_raw.v, {B, T, HV, V}, "[B,T,HV,V] with B,T of q");
    if (in_raw.initial_state.absent() != flow0.absent())
      throw Error(flow0.absent() ? "flow0" : "initial_state",
                  "the linear state and the flow state come together");
    const index_t W = flow_width(K);
    if (!flow0.absent()) {
      check::well_formed("flow0", flow0);
      check::shape_is("flow0", flow0, {N, H, W}, "[N,H,4K+2]");
    }
    if (!flow_out.absent()) {
      check::well_formed("flow_out", flow_out);
      check::shape_is("flow_out", flow_out, {N, H, W}, "[N,H,4K+2]");
    }

    // q̃ = (I/i)·φq, φk [B,T,H,K]; ṽ = w·v [B,T,HV,V]; allocation a [B,T,H].
    const auto nk = static_cast<std::size_t>(std::max<index_t>(B * T * H * K, 1));
    std::vector<float> qt(nk), kt(nk),
        vt(static_cast<std::size_t>(std::max<index_t>(B * T * HV * V, 1))),
        alloc(static_cast<std::size_t>(std::max<index_t>(B * T * H, 1)));
    const auto qv = View4<float>::contiguous(qt.data(), {B, T, H, K});
    const auto kv = View4<float>::contiguous(kt.data(), {B, T, H, K});
    const auto vv = View4<float>::contiguous(vt.data(), {B, T, HV, V});
    std::vector<double> fin(static_cast<std::size_t>(N * H * W));
    const auto segs = segments(B, T, in_raw.cu_seqlens);
    const double eps = eps_;
    std::vector<double> qs(static_cast<std::size_t>(K)), ks(qs.size()), ko(qs.size()),
        qi(qs.size()), fq(qs.size()), fk(qs.size());
    auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
    // q, k, v of their element type X (one for all three), read widened.
    in_raw.q.visit([&](auto qin) {
      using X = std::remove_cvref_t<decltype(*qin.data())>;
      const auto kin = in_raw.k.as<X>(), vin = in_raw.v.as<X>();
      for (index_t n = 0; n < N; ++n) {
        const Segment& sg = segs[static_cast<std::size_t>(n)];
        for (index_t h = 0; h < H; ++h) {
          auto f0 = [&](index_t j) {
            return flow0.absent() ? 0.0 : static_cast<double>(flow0(n, h, j));
          };
          for (index_t d = 0; d < K; ++d) {
            qs[d] = f0(d);
            ks[d] = f0(K + d);
            ko[d] = f0(2 * K + d);
            qi[d] = f0(3 * K + d);
          }
          double esum = f0(4 * K), cnt = f0(4 * K + 1);
          for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
            cnt += 1.0;
            for (index_t d = 0; d < K; ++d) {
              fq[d] = sigmoid(to_float(qin(sg.batch, t, h, d)));
              fk[d] = sigmoid(to_float(kin(sg.batch, t, h, d)));
              qs[d] += fq[d];
              ks[d] += fk[d];
            }
            double in_den = 0.0, out_den = 0.0;
            for (index_t d = 0; d < K; ++d) {
              in_den += (fq[d] + eps) * (ks[d] + eps);
              out_den += (fk[d] + eps) * (qs[d] + eps);
            }
            const double I = cnt / in_den, O = cnt / out_den;
            double sink = 0.0, source = 0.0;
            for (index_t d = 0; d < K; ++d) {
              ko[d] += O * fk[d];
              qi[d] += I * fq[d];
              sink += (fq[d] + eps) * (ko[d] + eps);
              source += (fk[d] + eps) * (qi[d] + eps);
            }
            sink /= cnt;
            source = std::clamp(source / cnt, -1.0, 1.0);
            const double e = std::exp(source);
            esum += e;
            const double w = cnt * e / esum;
            alloc[static_cast<std::size_t>((sg.batch * T + t) * H + h)] =
                static_cast<float>(sigmoid(sink));
            for (index_t d = 0; d < K; ++d) {
              qv(sg.batch, t, h, d) = static_cast<float>(I / cnt * fq[d]);
              kv(sg.batch, t, h, d) = static_cast<float>(fk[d]);
            }
            for (index_t g = 0; g < G; ++g)
              for (index_t j = 0; j < V; ++j)
                vv(sg.batch, t, h * G + g, j) =
                    static_cast<float>(w * to_float(vin(sg.batch, t, h * G + g, j)));
          }
          double* f = fin.data() + (n * H + h) * W;
          for (index_t d = 0; d < K; ++d) {
            f[d] = qs[d];
            f[K + d] = ks[d];
            f[2 * K + d] = ko[d];
            f[3 * K + d] = qi[d];
          }
          f[4 * K] = esum;
          f[4 * K + 1] = cnt;
        }
      }
    });
    LinearInputs in = in_raw;
    in.q = qv;
    in.k = kv;
    in.v = vv;
    const Fp32LinearOutputs o32(in_raw, out);
    core_.template forward<Algo>(in, o32.outputs(), {.scale = 1.0}, exec);
    const View4<float>& of = o32.o();
    for (index_t n = 0; n < N; ++n) {
      const Segment& sg = segs[static_cast<std::size_t>(n)];
      for (index_t t = sg.begin; t < sg.begin + sg.length; ++t)
        for (index_t hv = 0; hv < HV; ++hv) {
          const float a = alloc[static_cast<std::size_t>((sg.batch * T + t) * H + hv / G)];
          for (index_t j = 0; j < V; ++j) of(sg.batch, t, hv, j) *= a;
        }
    }
    o32.finish();
    if (!flow_out.absent())
      for (index_t n = 0; n < N; ++n)
        for (index_t h = 0; h < H; ++h)
          for (index_t j = 0; j < W; ++j)
            flow_out(n, h, j) =
                static_cast<float>(fin[static_cast<std::size_t>((n * H + h) * W + j)]);
  }

  double eps_;
  ::polyattn::presets::linear_attn core_{};
};

namespace presets {
inline Flowformer make_flowformer(double eps = 1e-6) {
  return Flowformer(eps);
}
}  // namespace presets

}  // namespace polyattn::papers
