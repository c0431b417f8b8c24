// polyattn/args/linear.hpp — arguments of the linear-attention family and their validation.
//
// One set of tensors describes every member of docs/conventions.md §4 (linear, retention, GLA,
// DeltaNet, gated DeltaNet, KDA, ...). Shapes, with N = number of sequences (B, or
// len(cu_seqlens)-1):
//   q, k            [B, T, H,  K]   (feature maps already applied by the caller)
//   v               [B, T, HV, V]   HV = G·H (grouped value heads, G >= 1)
//                                   q, k, v: fp32, bf16 or fp16 (EView4), all three the same
//                                   type (check::qkv_element_types); o fp32, bf16 or fp16
//                                   (MutEView4) of any of the three, whatever q's type; gates,
//                                   beta, states and z are fp32 (docs/conventions.md §9.8)
//   g_gamma         [HV]            constant log-decay per head          (Decay::ConstantPerHead)
//   g               [B, T, HV]      scalar log-decay per token           (Decay::ScalarPerToken)
//   gk              [B, T, HV, K]   vector log-decay per token/channel   (Decay::VectorPerToken)
//   beta            [B, T, HV]      delta-rule step size                 (Update::Delta)
//   initial_state   [N, HV, K, V]   optional;   final_state [N, HV, K, V] optional output
//   initial_z       [N, HV, K]      optional running key sum of the Sum normaliser; final_z
//   likewise
//   o               [B, T, HV, V]   output
//   state_indices   [N] int64       optional state pool: the state tensors above are then pools
//                                   [slots, ...] and sequence n reads and writes slot
//                                   state_indices[n] (distinct, in [0, slots)); no copies
// Raw gate projections, read instead of g / gk / beta by the fused gate policies
// (policies/fused_gates.hpp), fp32:
//   a [B,T,HV] (Gated DeltaNet), graw [B,T,HV,K] (KDA), b [B,T,HV] (β = sigmoid(b)),
//   dt [B,T,HV] (Mamba2), A_log [HV], A [HV] (Mamba2), dt_bias [HV] or [HV·K] (KDA)
// Snapshots (prefix caching): snapshot_positions [M] int64, the token counts p (0 ≤ p ≤ the
//   sequence's length, increasing within a sequence) after which the state is written to
//   LinearOutputs::snapshots [M, HV, K, V] (or, with snapshot_slots [M], to row
//   snapshot_slots[m] of a pool [slots, HV, K, V]); snapshot_offsets [N+1] says which belong to
//   sequence n ([offsets[n], offsets[n+1]); may be empty when N == 1).
// Exactly the gate tensors the decay reads must be given (a stray one is an error, so a
// mis-composed call cannot silently ignore its gates).
// Operators take policies (policies/*.hpp), which validate their own gate tensors with the
// check:: helpers below. LinearOptions describes the built-in policies as values: what the
// reference oracle, polyattn-run and the test harness take.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "polyattn/core/element_view.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/overlap.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"

namespace polyattn {

enum class Decay { None, ConstantPerHead, ScalarPerToken, VectorPerToken };
enum class Update { Additive, Delta };
enum class Normalizer { None, Sum };

struct LinearOptions {
  Decay decay = Decay::None;
  Update update = Update::Additive;
  Normalizer normalizer = Normalizer::None;
  std::optional<double> scale;  // default K^-0.5; multiplies q before any product
  bool qk_l2norm = false;       // x / sqrt(sum(x^2) + 1e-6) on q and k, before the scale
  double eps = 1e-6;            // Sum normaliser: o / (scale·q·z + eps)
};

struct LinearInputs {
  EView4 q, k, v;  // fp32, bf16 or fp16, one type for all three (typed views convert implicitly)
  View1<const float> g_gamma;
  View3<const float> g;
  View4<const float> gk;
  View3<const float> beta;
  View4<const float> initial_state;
  View3<const float> initial_z;
  std::span<const std::int64_t> cu_seqlens;
  std::span<const std::int64_t> state_indices;  // optional state pool slots, one per sequence
  // Raw gate projections (fused gate policies only; policies/fused_gates.hpp).
  View3<const float> a;        // [B,T,HV]   GDN: g = −exp(A_log)·softplus(a + dt_bias)
  View4<const float> graw;     // [B,T,HV,K] KDA: g = −exp(A_log)·softplus(graw + dt_bias)
  View3<const float> b;        // [B,T,HV]   β = sigmoid(b)
  View3<const float> dt;       // [B,T,HV]   Mamba2: Δ = softplus(dt + dt_bias), g = Δ·A
  View1<const float> A_log;    // [HV]
  View1<const float> A;        // [HV]       Mamba2 (negative)
  View1<const float> dt_bias;  // [HV], KDA [HV·K]
  // Snapshots of the state during prefill (forward only).
  std::span<const std::int64_t> snapshot_positions;  // [M] token counts per sequence
  std::span<const std::int64_t> snapshot_offsets;    // [N+1], optional when N == 1
  std::span<const std::int64_t> snapshot_slots;      // [M], optional: rows of a snapshot pool
};

/// The slot of sequence n in the state tensors: state_indices[n], or n without a pool.
inline index_t state_slot(const LinearInputs& in, index_t n) {
  return in.state_indices.empty() ? n : in.state_indices[static_cast<std::size_t>(n)];
}

namespace detail {
// The output view of LinearOutputs<Out>: fp32, bf16 or fp16 for the operators' Out = float,
// a plain typed view for the references' double.
template <class Out>
struct linear_o_view {
  using type = View4<Out>;
};
template <>
struct linear_o_view<float> {
  using type = MutEView4;
};
}  // namespace detail

template <class Out>
struct LinearOutputs {
  typename detail::linear_o_view<Out>::type o;  // Out = float: fp32, bf16 or fp16 (MutEView4)
  View4<Out> final_state;                       // optional
  View3<Out> final_z;                           // optional (Sum normaliser only)
  View4<Out> snapshots;  // [M,HV,K,V] (or a pool with snapshot_slots), with snapshot_positions
};

/// Sizes resolved by validate_linear.
struct LinearDims {
  index_t B, T, H, HV, K, V, N;
  index_t group() const { return HV / H; }
};

inline constexpr double kL2NormEps = 1e-6;

namespace detail {
template <class View>
void present_iff(std::string_view name, const View& view, bool needed, std::string_view why) {
  if (needed && view.absent()) throw Error(name, std::string("is required ") + std::string(why));
  if (!needed && !view.absent())
    throw Error(name, std::string("was given but is not used ") + std::string(why));
}
}  // namespace detail

namespace detail {
// Snapshot positions, offsets, slots and the snapshots tensor of a call with N sequences.
template <class Out>
void check_snapshots(const LinearInputs& in, const LinearOutputs<Out>& out, const LinearDims& d) {
  const auto& pos = in.snapshot_positions;
  const auto& off = in.snapshot_offsets;
  if (pos.empty()) {
    if (!out.snapshots.absent())
      throw Error("snapshots", "was given but snapshot_positions is empty");
    if (!off.empty()) throw Error("snapshot_offsets", "was given but snapshot_positions is empty");
    if (!in.snapshot_slots.empty())
      throw Error("snapshot_slots", "was given but snapshot_positions is empty");
    return;
  }
  const auto M = static_cast<index_t>(pos.size());
  check::required("snapshots", out.snapshots);
  if (off.empty() && d.N != 1)
    throw Error("snapshot_offsets",
                "is required with " + std::to_string(d.N) + " sequences ([N+1], cu-style)");
  if (!off.empty()) {
    if (static_cast<index_t>(off.size()) != d.N + 1)
      throw Error("snapshot_offsets", "expected " + std::to_string(d.N + 1) +
                                          " entries ([N+1]), got " + std::to_string(off.size()));
    if (off.front() != 0 || off.back() != M)
      throw Error("snapshot_offsets",
                  "must start at 0 and end at the number of snapshot "
                  "positions " +
                      std::to_string(M));
    for (std::size_t i = 1; i < off.size(); ++i)
      if (off[i] < off[i - 1])
        throw Error("snapshot_offsets", "must be non-decreasing, but [" + std::to_string(i) +
                                            "] < [" + std::to_string(i - 1) + "]");
  }
  for (index_t n = 0; n < d.N; ++n) {
    const index_t len = in.cu_seqlens.empty() ? d.T : in.cu_seqlens[n + 1] - in.cu_seqlens[n];
    const index_t lo = off.empty() ? 0 : off[n], hi = off.empty() ? M : off[n + 1];
    for (index_t m = lo; m < hi; ++m) {
      if (pos[m] < 0 || pos[m] > len || (m > lo && pos[m] <= pos[m - 1]))
        throw Error("snapshot_positions",
                    "[" + std::to_string(m) + "] = " + std::to_string(pos[m]) + " must be in [0, " +
                        std::to_string(len) + "] (the length of sequence " + std::to_string(n) +
                        ") and above the previous position of that sequence");
    }
  }
  check::well_formed("snapshots", out.snapshots);
  const bool pool = !in.snapshot_slots.empty();
  check::shape_is("snapshots", out.snapshots, {pool ? out.snapshots.size(0) : M, d.HV, d.K, d.V},
                  pool ? "[slots,HV,K,V] (a snapshot pool)" : "[M,HV,K,V], M snapshot positions");
  if (pool) check::slot_indices("snapshot_slots", in.snapshot_slots, M, out.snapshots.size(0));
}
}  // namespace detail

/// Checks the tensors every member of the family has — q, k, v, o, initial / final state and z,
/// cu_seqlens — and returns the sizes. `normalised`: whether the operator keeps the running key
/// sum z (initial_z / final_z are errors otherwise). Gate and beta tensors are the policies'
/// business (check::gate_inputs, check::beta_input).
template <class Out>
LinearDims validate_linear_tensors(const LinearInputs& in, const LinearOutputs<Out>& out,
                                   bool normalised) {
  check::required("q", in.q);
  check::required("k", in.k);
  check::required("v", in.v);
  check::required("o", out.o);
  const auto& qs = in.q.shape();
  LinearDims d{qs[0], qs[1], qs[2], in.v.size(2), qs[3], in.v.size(3), 0};
  check::positive("q (batch)", d.B);
  check::positive("q (heads)", d.H);
  check::positive("q (key dim)", d.K);
  check::shape_is("k", in.k, qs, "same as q [B,T,H,K]");
  check::heads_divide("v", d.H, d.HV);
  check::positive("v (value dim)", d.V);
  check::shape_is("v", in.v, {d.B, d.T, d.HV, d.V}, "[B,T,HV,V] with B,T of q");
  check::shape_is("o", out.o, {d.B, d.T, d.HV, d.V}, "[B,T,HV,V]");
  d.N = check::cu_seqlens("cu_seqlens", in.cu_seqlens, d.B, d.T);
  // Without a pool the state tensors have one slot per sequence; with one, any number.
  const bool pool = !in.state_indices.empty();
  const auto slots = [&](const auto& v) { return pool ? v.size(0) : d.N; };
  const char* layout = pool ? "[slots,HV,K,V] (a state pool)" : "[N,HV,K,V]";
  const char* zlayout = pool ? "[slots,HV,K] (a state pool)" : "[N,HV,K]";
  if (!in.initial_state.absent()) {
    check::well_formed("initial_state", in.initial_state);
    check::shape_is("initial_state", in.initial_state, {slots(in.initial_state), d.HV, d.K, d.V},
                    layout);
  }
  if (!out.final_state.absent()) {
    check::well_formed("final_state", out.final_state);
    check::shape_is("final_state", out.final_state, {slots(out.final_state), d.HV, d.K, d.V},
                    layout);
  }
  if (!normalised && !in.initial_z.absent())
    throw Error("initial_z", "was given but the normaliser is None");
  if (!normalised && !out.final_z.absent())
    throw Error("final_z", "was given but the normaliser is None");
  if (!in.initial_z.absent()) {
    check::well_formed("initial_z", in.initial_z);
    check::shape_is("initial_z", in.initial_z, {slots(in.initial_z), d.HV, d.K}, zlayout);
  }
  if (!out.final_z.absent()) {
    check::well_formed("final_z", out.final_z);
    check::shape_is("final_z", out.final_z, {slots(out.final_z), d.HV, d.K}, zlayout);
  }
  detail::check_snapshots(in, out, d);
  if (pool) {
    if (in.initial_state.absent() && out.final_state.absent())
      throw Error("state_indices", "was given but there is no initial_state or final_state pool");
    index_t n_slots = std::numeric_limits<index_t>::max();
    for (index_t s : {in.initial_state.absent() ? n_slots : in.initial_state.size(0),
                      out.final_state.absent() ? n_slots : out.final_state.size(0),
                      in.initial_z.absent() ? n_slots : in.initial_z.size(0),
                      out.final_z.absent() ? n_slots : out.final_z.size(0)})
      n_slots = std::min(n_slots, s);
    check::slot_indices("state_indices", in.state_indices, d.N, n_slots);
  }
  return d;
}

/// Which of the built-in gate tensors a decay reads.
struct GateInputs {
  bool g_gamma = false;  // [HV]
  bool g = false;        // [B,T,HV]
  bool gk = false;       // [B,T,HV,K]
  // Raw projections of the fused gate policies (policies/fused_gates.hpp).
  bool a = false;      // [B,T,HV]
  bool graw = false;   // [B,T,HV,K]
  bool dt = false;     // [B,T,HV]
  bool A_log = false;  // [HV]
  bool A = false;      // [HV]
  int dt_bias = 0;     // 0: absent; 1: [HV]; K: [HV·K]; -1: optional [HV]
};

namespace check {

/// q, k and v share one element type (fp32, bf16 or fp16); the Error names the first of k, v
/// that differs from q.
inline void qkv_element_types(const LinearInputs& in) {
  const auto same = [&](const char* name, const EView4& x) {
    if (!x.absent() && !in.q.absent() && x.dtype() != in.q.dtype())
      throw Error(name, std::string("is ") + std::string(dtype_name(x.dtype())) + " but q is " +
                            std::string(dtype_name(in.q.dtype())) +
                            ": q, k and v must have the same element type");
  };
  same("k", in.k);
  same("v", in.v);
}

/// Exactly the gate tensors in `use` are given, with their shapes (a stray gate is an error, so
/// a mis-composed call cannot silently ignore its gates).
inline void gate_inputs(const LinearInputs& in, const LinearDims& d, GateInputs use,
                        std::string_view why = "by the chosen decay") {
  detail::present_iff("g_gamma", in.g_gamma, use.g_gamma, why);
  detail::present_iff("g", in.g, use.g, why);
  detail::present_iff("gk", in.gk, use.gk, why);
  if (!in.g_gamma.absent()) {
    check::well_formed("g_gamma", in.g_gamma);
    check::shape_is("g_gamma", in.g_gamma, {d.HV}, "[HV]");
  }
  if (!in.g.absent()) {
    check::well_formed("g", in.g);
    check::shape_is("g", in.g, {d.B, d.T, d.HV}, "[B,T,HV]");
  }
  if (!in.gk.absent()) {
    check::well_formed("gk", in.gk);
    check::shape_is("gk", in.gk, {d.B, d.T, d.HV, d.K}, "[B,T,HV,K]");
  }
  detail::present_iff("a", in.a, use.a, why);
  detail::present_iff("graw", in.graw, use.graw, why);
  detail::present_iff("dt", in.dt, use.dt, why);
  detail::present_iff("A_log", in.A_log, use.A_log, why);
  detail::present_iff("A", in.A, use.A, why);
  if (use.dt_bias >= 0) detail::present_iff("dt_bias", in.dt_bias, use.dt_bias != 0, why);
  for (auto [name, x] : {std::pair{"a", &in.a}, std::pair{"dt", &in.dt}})
    if (!x->absent()) {
      check::well_formed(name, *x);
      check::shape_is(name, *x, {d.B, d.T, d.HV}, "[B,T,HV]");
    }
  if (!in.graw.absent()) {
    check::well_formed("graw", in.graw);
    check::shape_is("graw", in.graw, {d.B, d.T, d.HV, d.K}, "[B,T,HV,K]");
  }
  for (auto [name, x] : {std::pair{"A_log", &in.A_log}, std::pair{"A", &in.A}})
    if (!x->absent()) {
      check::well_formed(name, *x);
      check::shape_is(name, *x, {d.HV}, "[HV]");
    }
  if (!in.dt_bias.absent()) {
    check::well_formed("dt_bias", in.dt_bias);
    if (use.dt_bias > 1)
      check::shape_is("dt_bias", in.dt_bias, {d.HV * d.K}, "[HV·K], one per value head and key");
    else
      check::shape_is("dt_bias", in.dt_bias, {d.HV}, "[HV]");
  }
}

/// beta [B,T,HV] is given exactly when the update needs it; with `logits`, b [B,T,HV]
/// (β = sigmoid(b), the fused form) instead of beta.
inline void beta_input(const LinearInputs& in, const LinearDims& d, bool needed,
                       bool logits = false) {
  detail::present_iff("beta", in.beta, needed && !logits,
                      logits ? "by this update (it reads the logits b)" : "by the delta update");
  detail::present_iff("b", in.b, needed && logits,
                      logits ? "by this update (β = sigmoid(b))" : "by this update (no logits)");
  if (!in.beta.absent()) {
    check::well_formed("beta", in.beta);
    check::shape_is("beta", in.beta, {d.B, d.T, d.HV}, "[B,T,HV]");
  }
  if (!in.b.absent()) {
    check::well_formed("b", in.b);
    check::shape_is("b", in.b, {d.B, d.T, d.HV}, "[B,T,HV]");
  }
}

/// Outputs share no memory with each other or with the built-in input tensors, except the
/// in-place state update: final_state may alias initial_state exactly (and final_z initial_z),
/// which is how step() and engines that keep one state buffer use it. Call after the views
/// are validated (extents known to fit).
template <class Out>
void linear_writes_disjoint(const LinearInputs& in, const LinearOutputs<Out>& out) {
  using memory::region;
  writes_disjoint(
      {region("o", out.o), region("final_state", out.final_state), region("final_z", out.final_z),
       region("snapshots", out.snapshots)},
      {region("q", in.q), region("k", in.k), region("v", in.v), region("g_gamma", in.g_gamma),
       region("g", in.g), region("gk", in.gk), region("beta", in.beta),
       region("initial_state", in.initial_state), region("initial_z", in.initial_z),
       region("a", in.a), region("graw", in.graw), region("b", in.b), region("dt", in.dt),
       region("A_log", in.A_log), region("A", in.A), region("dt_bias", in.dt_bias)},
      {{"final_state", "initial_state"}, {"final_z", "initial_z"}});
}

/// The scale (when given) is finite; the normaliser's eps is finite and >= 0.
inline void scale_and_eps(std::optional<double> scale, bool normalised, double eps) {
  if (scale && !std::isfinite(*scale))
    throw Error("scale", "must be finite, got " + std::to_string(*scale));
  if (normalised && !(eps >= 0.0 && std::isfinite(eps)))
    throw Error("eps", "must be finite and >= 0, got " + std::to_string(eps));
}

}  // namespace check

/// Checks every argument of a call described by LinearOptions (the reference oracle's view of
/// the built-in policies); throws polyattn::Error before anything is written.
template <class Out>
LinearDims validate_linear(const LinearInputs& in, const LinearOptions& opt,
                           const LinearOutputs<Out>& out) {
  const bool sum = opt.normalizer == Normalizer::Sum;
  const LinearDims d = validate_linear_tensors(in, out, sum);
  check::qkv_element_types(in);
  check::gate_inputs(in, d,
                     {.g_gamma = opt.decay == Decay::ConstantPerHead,
                      .g = opt.decay == Decay::ScalarPerToken,
                      .gk = opt.decay == Decay::VectorPerToken});
  check::beta_input(in, d, opt.update == Update::Delta);
  check::scale_and_eps(opt.scale, sum, opt.eps);
  check::linear_writes_disjoint(in, out);
  return d;
}

/// The scale multiplying q: the given one, else K^-0.5.
inline double resolved_scale(std::optional<double> scale, index_t K) {
  return scale ? *scale : 1.0 / std::sqrt(static_cast<double>(K));
}
inline double resolved_scale(const LinearOptions& opt, index_t K) {
  return resolved_scale(opt.scale, K);
}

// Constant per-head log-decays of the presets (docs/conventions.md §2).
// RetNet: g_h = log(1 - 2^(-5-h)).
inline double retention_log_decay(index_t h) {
  return std::log1p(-std::exp2(-5.0 - static_cast<double>(h)));
}
// Lightning Attention: g_h = -(8/H)·(1 - layer/layers)·h.
inline double lightning_log_decay(index_t h, index_t H, index_t layer, index_t layers) {
  const double frac =
      layers > 0 ? 1.0 - static_cast<double>(layer) / static_cast<double>(layers) : 1.0;
  return -(8.0 / static_cast<double>(H)) * frac * static_cast<double>(h);
}

}  // namespace polyattn
