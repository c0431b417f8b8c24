// polyattn/papers/mamba1.hpp — Mamba-1's selective state-space scan (Gu & Dao, "Mamba:
// Linear-Time Sequence Modeling with Selective State Spaces", 2023, Sec. 3.2 / Algorithm 2, with
// the discretisation of the authors' code: state-spaces/mamba, selective_scan_ref in
// mamba_ssm/ops/selective_scan_interface.py). Per (sequence, channel d, state n), group
// g = d / (D/G) of B and C:
//
//   Δ_t = softplus(dt_t[d] + dt_bias[d])   (or dt_t[d] + dt_bias[d] without softplus)
//   h_t[d,n] = exp(Δ_t A[d,n]) · h_{t−1}[d,n] + Δ_t · B_t[g,n] · x_t[d]
//   y_t[d]   = Σ_n C_t[g,n] · h_t[d,n] + D[d] · x_t[d],   then y_t[d] *= silu(z_t[d]) when z given
//
// Ā = exp(ΔA) is the paper's zero-order hold; B̄x = ΔBx is the first-order form the authors'
// code (and its CUDA kernel) uses in place of the exact ZOH (ΔA)⁻¹(exp(ΔA) − I)ΔB.
//
// The decay exp(Δ A[d,n]) differs for every (channel, state) pair: a state-shaped gate, which
// the linear family's chunk stages cannot take (their gates are one value per token or per key
// channel, shared by all value channels, which is what makes the intra-chunk products GEMMs).
// Mamba2 (SSD), whose A is a scalar per head, is simple_gla in this library. Algorithms here:
//   Recurrent   token by token, the state [D][N] in registers/cache (also the decode step)
//   Chunked<C>  the blocked parallel scan: each chunk of C tokens scans from a zero state while
//               keeping the cumulative log decay Σ Δ A of every (d, n) (in parallel over
//               chunks), the chunk carries are propagated in order, and each chunk's outputs are
//               corrected by C_t·(exp(cum_t) ⊙ carry) (in parallel again). It does about twice
//               the work of Recurrent, in exchange for parallelism along T; results agree to
//               fp32 rounding and are identical for any executor.
// Shapes: x, dt, z [B,T,D]; B, C [B,T,G,N]; A [D,N]; D, dt_bias [D] (optional); state
// [Nseq, D, N] (mamba's ssm_state layout), initial optional, final optional; y [B,T,D]. Varlen
// with cu_seqlens as the linear family. The input projection, the short conv on x and the
// output projection of the Mamba block are outside the operator.
// Element types (docs/conventions.md §9.8): the activations x, dt, B, C and z — what a bf16 / fp16
// Mamba block produces (in_proj gives x and z, x_proj and dt_proj give dt, B and C) — are fp32,
// bf16 or fp16, one type for all five (else an Error naming dt, B, C or z), read widened
// exactly; y of any of the three, formed in fp32 and rounded once (core/fp32_output.hpp; the
// blocked scan keeps its local part there between passes). The parameters A, D and dt_bias and
// the states are fp32, as in mamba_ssm's selective_scan_fn (u, delta, variable B / C and z of the
// input's type, A, D and delta_bias fp32); Δ, Δ·A and the scan run in fp32 as before. bf16 / fp16
// inputs give the fp32 operator's bits on the widened values.
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "polyattn/core/element_view.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/fp32_output.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/validate.hpp"
#include "polyattn/policies/algorithm.hpp"

namespace polyattn::papers {

struct SelectiveScanInputs {
  ElementView<3> x;                  // [B,T,D] fp32, bf16 or fp16 (one type for x, dt, B, C, z)
  ElementView<3> dt;                 // [B,T,D] (before bias and softplus)
  TensorView<const float, 2> A;      // [D,N] (negative in practice: −exp(A_log))
  ElementView<4> Bm, Cm;             // [B,T,G,N]
  View1<const float> D;              // optional [D]
  View1<const float> dt_bias;        // optional [D]
  ElementView<3> z;                  // optional [B,T,D]
  View3<const float> initial_state;  // optional [Nseq,D,N]
  std::span<const std::int64_t> cu_seqlens;
};

struct SelectiveScanOptions {
  bool dt_softplus = true;
};

class SelectiveScan {
 public:
  template <class Algo = Recurrent, Executor E = Serial>
    requires(std::same_as<Algo, Recurrent> || requires { Algo::chunk; })
  void forward(const SelectiveScanInputs& in, MutElementView<3> y, View3<float> final_state = {},
               const SelectiveScanOptions& opt = {}, const E& exec = E{}) const {
    const Dims d = validate(in, y, final_state);
    const Fp32Output y32(as_rank4(y));  // y formed in fp32, rounded once at the end
    const View3<float> yf = as_rank3(y32.view());
    in.x.visit([&](auto xv) {  // x, dt, B, C, z of their element type X, read widened
      using X = typename decltype(xv)::value_type;
      const Acts<X> a{xv, in.dt.as<X>(), in.Bm.as<X>(), in.Cm.as<X>(), in.z.as<X>()};
      if constexpr (std::same_as<Algo, Recurrent>)
        run_recurrent(in, a, d, yf, final_state, opt, exec);
      else
        run_scan(in, a, d, Algo::chunk, yf, final_state, opt, exec);
    });
    y32.finish();
  }

  /// Decode: state [B,D,N] read and updated in place.
  template <Executor E = Serial>
  void step(const SelectiveScanInputs& in, View3<float> state, MutElementView<3> y,
            const SelectiveScanOptions& opt = {}, const E& exec = E{}) const {
    if (!in.initial_state.absent())
      throw Error("initial_state",
                  "must be empty in step(): the state argument is updated in place");
    if (!in.cu_seqlens.empty()) throw Error("cu_seqlens", "is not supported by step()");
    check::required("state", state);
    SelectiveScanInputs with_state = in;
    with_state.initial_state = state;
    forward<Recurrent>(with_state, y, state, opt, exec);
  }

 private:
  struct Dims {
    index_t B, T, D, G, N, S;  // S = number of sequences
  };
  static constexpr index_t kChannelBlock = 16;  // channels per work item

  // The activations of element type X (one type, checked by validate).
  template <Element X>
  struct Acts {
    View3<const X> x, dt;
    View4<const X> Bm, Cm;
    View3<const X> z;  // absent when not given
  };

  // y [B,T,D] as [B,T,1,D] (core/fp32_output.hpp takes rank 4), and back.
  static MutEView4 as_rank4(const MutElementView<3>& y) {
    return y.visit([](auto v) {
      using T = typename decltype(v)::value_type;
      return MutEView4(TensorView<T, 4>(v.data(), {v.size(0), v.size(1), 1, v.size(2)},
                                        {v.stride(0), v.stride(1), 0, v.stride(2)}));
    });
  }
  static View3<float> as_rank3(const View4<float>& y) {
    return {y.data(), {y.size(0), y.size(1), y.size(3)}, {y.stride(0), y.stride(1), y.stride(3)}};
  }

  static Dims validate(const SelectiveScanInputs& in, const MutElementView<3>& y,
                       const View3<float>& fin) {
    check::required("x", in.x);
    check::required("dt", in.dt);
    check::required("A", in.A);
    check::required("B", in.Bm);
    check::required("C", in.Cm);
    check::required("y", y);
    const auto& xs = in.x.shape();
    Dims d{xs[0], xs[1], xs[2], in.Bm.size(2), in.A.size(1), 0};
    check::positive("x (batch)", d.B);
    check::positive("x (channels)", d.D);
    check::positive("A (state size)", d.N);
    check::shape_is("dt", in.dt, xs, "same as x [B,T,D]");
    check::shape_is("A", in.A, {d.D, d.N}, "[D,N]");
    if (d.G <= 0 || d.D % d.G != 0)
      throw Error("B", "groups " + std::to_string(d.G) + " must divide the channels " +
                           std::to_string(d.D));
    check::shape_is("B", in.Bm, {d.B, d.T, d.G, d.N}, "[B,T,G,N]");
    check::shape_is("C", in.Cm, {d.B, d.T, d.G, d.N}, "[B,T,G,N] as B");
    if (!in.D.absent()) {
      check::well_formed("D", in.D);
      check::shape_is("D", in.D, {d.D}, "[D]");
    }
    if (!in.dt_bias.absent()) {
      check::well_formed("dt_bias", in.dt_bias);
      check::shape_is("dt_bias", in.dt_bias, {d.D}, "[D]");
    }
    if (!in.z.absent()) {
      check::well_formed("z", in.z);
      check::shape_is("z", in.z, xs, "same as x [B,T,D]");
    }
    check::shape_is("y", y, xs, "same as x [B,T,D]");
    for (const auto& [name, v] : {std::pair{"dt", in.dt}, std::pair{"z", in.z}})
      check::dtype_is(name, v, in.x.dtype(), kOneType);
    check::dtype_is("B", in.Bm, in.x.dtype(), kOneType);
    check::dtype_is("C", in.Cm, in.x.dtype(), kOneType);
    d.S = check::cu_seqlens("cu_seqlens", in.cu_seqlens, d.B, d.T);
    if (!in.initial_state.absent()) {
      check::well_formed("initial_state", in.initial_state);
      check::shape_is("initial_state", in.initial_state, {d.S, d.D, d.N}, "[Nseq,D,N]");
    }
    if (!fin.absent()) {
      check::well_formed("final_state", fin);
      check::shape_is("final_state", fin, {d.S, d.D, d.N}, "[Nseq,D,N]");
    }
    return d;
  }

  static constexpr const char* kOneType =
      "the selective scan (one element type for x, dt, B, C and z, x's)";

  template <Element X>
  static float delta(const SelectiveScanInputs& in, const Acts<X>& a,
                     const SelectiveScanOptions& opt, index_t b, index_t t, index_t c) {
    double v = to_float(a.dt(b, t, c));
    if (!in.dt_bias.absent()) v += in.dt_bias(c);
    if (opt.dt_softplus) v = v > 20.0 ? v : std::log1p(std::exp(v));  // torch's threshold
    return static_cast<float>(v);
  }

  // y[c] of token t from the state row h[c][·] (C·h + D x, gated by silu(z)).
  template <Element X>
  static float readout(const Acts<X>& a, const Dims& d, index_t b, index_t t, const float* h,
                       index_t g) {
    float acc = 0.f;
    for (index_t n = 0; n < d.N; ++n) acc = to_float(a.Cm(b, t, g, n)) * h[n] + acc;
    return acc;
  }
  template <Element X>
  static float finish(const SelectiveScanInputs& in, const Acts<X>& a, index_t b, index_t t,
                      index_t c, float acc) {
    const float xv = to_float(a.x(b, t, c));
    if (!in.D.absent()) acc = in.D(c) * xv + acc;
    if (!a.z.absent()) {
      const double zv = to_float(a.z(b, t, c));
      acc = static_cast<float>(acc * (zv / (1.0 + std::exp(-zv))));
    }
    return acc;
  }

  template <Element X, class E>
  static void run_recurrent(const SelectiveScanInputs& in, const Acts<X>& a, const Dims& d,
                            const View3<float>& y, const View3<float>& fin,
                            const SelectiveScanOptions& opt, const E& exec) {
    const auto segs = segments(d.B, d.T, in.cu_seqlens);
    const index_t blocks = (d.D + kChannelBlock - 1) / kChannelBlock;
    exec.parallel_for(d.S * blocks, [&](std::int64_t task) {
      const index_t s = static_cast<index_t>(task / blocks);
      const index_t c0 = static_cast<index_t>(task % blocks) * kChannelBlock;
      const index_t c1 = std::min(c0 + kChannelBlock, d.D);
      const Segment& sg = segs[static_cast<std::size_t>(s)];
      std::vector<float> h(static_cast<std::size_t>((c1 - c0) * d.N), 0.f);
      for (index_t c = c0; c < c1; ++c)
        for (index_t n = 0; n < d.N; ++n)
          h[(c - c0) * d.N + n] = in.initial_state.absent() ? 0.f : in.initial_state(s, c, n);
      for (index_t t = sg.begin; t < sg.begin + sg.length; ++t) {
        for (index_t c = c0; c < c1; ++c) {
          const index_t g = c / (d.D / d.G);
          const float dl = delta(in, a, opt, sg.batch, t, c), xv = to_float(a.x(sg.batch, t, c));
          float* hc = h.data() + (c - c0) * d.N;
          for (index_t n = 0; n < d.N; ++n)
            hc[n] = std::exp(dl * in.A(c, n)) * hc[n] + dl * to_float(a.Bm(sg.batch, t, g, n)) * xv;
          y(sg.batch, t, c) = finish(in, a, sg.batch, t, c, readout(a, d, sg.batch, t, hc, g));
        }
      }
      if (!fin.absent())
        for (index_t c = c0; c < c1; ++c)
          for (index_t n = 0; n < d.N; ++n) fin(s, c, n) = h[(c - c0) * d.N + n];
    });
  }

  // Blocked scan (see the header comment): local scans from zero with the cumulative log decay,
  // carries in chunk order, then the carry's contribution C_t·(exp(cum_t) ⊙ carry) added.
  template <Element X, class E>
  static void run_scan(const SelectiveScanInputs& in, const Acts<X>& a, const Dims& d, index_t Cn,
                       const View3<float>& y, const View3<float>& fin,
                       const SelectiveScanOptions& opt, const E& exec) {
    const auto segs = segments(d.B, d.T, in.cu_seqlens);
    const index_t blocks = (d.D + kChannelBlock - 1) / kChannelBlock;
    std::vector<index_t> first(static_cast<std::size_t>(d.S) + 1, 0);
    for (index_t s = 0; s < d.S; ++s) first[s + 1] = first[s] + (segs[s].length + Cn - 1) / Cn;
    const index_t chunks = first[d.S];
    const auto DN = static_cast<std::size_t>(d.D * d.N);
    // Per chunk: the local end state (from zero) and its total log decay; then the carry in.
    std::vector<float> end_h(static_cast<std::size_t>(chunks) * DN), end_cum(end_h.size()),
        carry(end_h.size());
    auto locate = [&](index_t global, index_t& s, index_t& ch) {
      s = static_cast<index_t>(std::upper_bound(first.begin(), first.end(), global) -
                               first.begin()) -
          1;
      ch = global - first[s];
    };
    // 1. Local scans per (chunk, channel block): y from the local state, end state and decay.
    exec.parallel_for(static_cast<std::int64_t>(chunks) * blocks, [&](std::int64_t item) {
      const index_t global = static_cast<index_t>(item / blocks);
      const index_t c0 = static_cast<index_t>(item % blocks) * kChannelBlock;
      const index_t c1 = std::min(c0 + kChannelBlock, d.D);
      index_t s, ch;
      locate(global, s, ch);
      const Segment& sg = segs[static_cast<std::size_t>(s)];
      const index_t t0 = sg.begin + ch * Cn, t1 = std::min(t0 + Cn, sg.begin + sg.length);
      float* hh = end_h.data() + static_cast<std::size_t>(global) * DN;
      float* cum = end_cum.data() + static_cast<std::size_t>(global) * DN;
      for (index_t c = c0; c < c1; ++c)
        for (index_t n = 0; n < d.N; ++n) hh[c * d.N + n] = cum[c * d.N + n] = 0.f;
      for (index_t t = t0; t < t1; ++t)
        for (index_t c = c0; c < c1; ++c) {
          const index_t g = c / (d.D / d.G);
          const float dl = delta(in, a, opt, sg.batch, t, c), xv = to_float(a.x(sg.batch, t, c));
          float* hc = hh + c * d.N;
          for (index_t n = 0; n < d.N; ++n) {
            const float la = dl * in.A(c, n);
            cum[c * d.N + n] += la;
            hc[n] = std::exp(la) * hc[n] + dl * to_float(a.Bm(sg.batch, t, g, n)) * xv;
          }
          y(sg.batch, t, c) = readout(a, d, sg.batch, t, hc, g);  // local part only
        }
    });
    // 2. Carries in order per (sequence, channel block); the final state.
    exec.parallel_for(static_cast<std::int64_t>(d.S) * blocks, [&](std::int64_t task) {
      const index_t s = static_cast<index_t>(task / blocks);
      const index_t c0 = static_cast<index_t>(task % blocks) * kChannelBlock;
      const index_t c1 = std::min(c0 + kChannelBlock, d.D);
      std::vector<float> h(static_cast<std::size_t>((c1 - c0) * d.N));
      for (index_t c = c0; c < c1; ++c)
        for (index_t n = 0; n < d.N; ++n)
          h[(c - c0) * d.N + n] = in.initial_state.absent() ? 0.f : in.initial_state(s, c, n);
      for (index_t global = first[s]; global < first[s + 1]; ++global) {
        const std::size_t base = static_cast<std::size_t>(global) * DN;
        for (index_t c = c0; c < c1; ++c)
          for (index_t n = 0; n < d.N; ++n) {
            const std::size_t i = base + static_cast<std::size_t>(c * d.N + n);
            float& hc = h[(c - c0) * d.N + n];
            carry[i] = hc;
            hc = std::exp(end_cum[i]) * hc + end_h[i];
          }
      }
      if (!fin.absent())
        for (index_t c = c0; c < c1; ++c)
          for (index_t n = 0; n < d.N; ++n) fin(s, c, n) = h[(c - c0) * d.N + n];
    });
    // 3. Each token: y += C_t·(exp(cum_t) ⊙ carry), then D x and the z gate.
    exec.parallel_for(static_cast<std::int64_t>(chunks) * blocks, [&](std::int64_t item) {
      const index_t global = static_cast<index_t>(item / blocks);
      const index_t c0 = static_cast<index_t>(item % blocks) * kChannelBlock;
      const index_t c1 = std::min(c0 + kChannelBlock, d.D);
      index_t s, ch;
      locate(global, s, ch);
      const Segment& sg = segs[static_cast<std::size_t>(s)];
      const index_t t0 = sg.begin + ch * Cn, t1 = std::min(t0 + Cn, sg.begin + sg.length);
      const float* cin = carry.data() + static_cast<std::size_t>(global) * DN;
      std::vector<float> cum(static_cast<std::size_t>((c1 - c0) * d.N), 0.f);
      for (index_t t = t0; t < t1; ++t)
        for (index_t c = c0; c < c1; ++c) {
          const index_t g = c / (d.D / d.G);
          const float dl = delta(in, a, opt, sg.batch, t, c);
          float acc = y(sg.batch, t, c);
          for (index_t n = 0; n < d.N; ++n) {
            float& cu = cum[(c - c0) * d.N + n];
            cu += dl * in.A(c, n);
            acc = to_float(a.Cm(sg.batch, t, g, n)) * std::exp(cu) * cin[c * d.N + n] + acc;
          }
          y(sg.batch, t, c) = finish(in, a, sg.batch, t, c, acc);
        }
    });
  }
};

namespace presets {
inline SelectiveScan make_mamba1() {
  return {};
}
}  // namespace presets

}  // namespace polyattn::papers
