// polyattn/linear/operator.hpp — LinearAttention<Map, Decay, Update, Normalizer>: the operator
// of the whole linear family (docs/conventions.md §4), composed from policies at compile time.
//
//   forward<Algo>(inputs, outputs, options, executor)   prefill over [B,T,...] or packed varlen
//   step(inputs, state, o, options, executor)            decode: T new tokens (usually 1) per
//                                                         sequence, state [B,HV,K,V] in place
//   verify(inputs, state, o, cache, options, executor)   speculative: T ≤ 16 draft tokens, the
//                                                         state only read (linear/speculative.hpp)
//   commit(cache, accepted, state, executor)             the accepted prefix into the state
// The feature map is applied to q and k first (into scratch, skipped for Identity); the state's
// key dimension is the mapped one. The decay, update and normaliser policies validate their own
// tensors and are bound to each (sequence, value head) for the kernels (linear/head.hpp); the
// kernels of the policy set come from the per-ISA units when linear/kernels.hpp lists it, and
// are compiled in the caller's TU otherwise. Work is scheduled by linear/scheduler.hpp; results
// are bit-identical for any executor. Arguments are validated before any output is written.
// Memory: outputs (o, final_state, final_z) must not share memory with each other or with any
// input, except the in-place state update: final_state may be exactly initial_state (same
// address, shape and strides; likewise final_z / initial_z), which is how step() works; anything
// else is a polyattn::Error. Element types: q, k and v are fp32, bf16 or fp16, all three the
// same (else an Error naming k or v); o is any of the three, independently of q (bf16 inputs
// with an fp32 o are fine); gates, beta, states and z are fp32. The kernels read bf16 / fp16
// rows through per-row conversions into their fp32 buffers and round o rows once (linear/
// stages/rows.hpp); no fp32 copy of a whole q, k or v is made, and fp32 tensors are read and
// written in place as before (docs/conventions.md §9.8). Thread safety: the operator is immutable;
// any number of threads may call forward / step at once with their own outputs and states.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/linear/chunked.hpp"
#include "polyattn/linear/head.hpp"
#include "polyattn/linear/kernels.hpp"
#include "polyattn/linear/policies.hpp"
#include "polyattn/linear/scheduler.hpp"
#include "polyattn/linear/speculative.hpp"
#include "polyattn/policies/algorithm.hpp"
#include "polyattn/policies/feature_map.hpp"

namespace polyattn {

struct LinearRunOptions {
  std::optional<double> scale;  // default K^-0.5 (K after the feature map)
};

namespace detail {

// Packed copies of q, k, v for views whose inner stride is not 1, in their own element type.
struct PackedRows {
  std::vector<float> f32;
  std::vector<bf16> b16;
  std::vector<f16> h16;
};

template <class T>
View4<const T> pack_rows(const View4<const T>& x, std::vector<T>& storage) {
  storage.resize(static_cast<std::size_t>(x.numel()));
  const auto& s = x.shape();
  T* dst = storage.data();
  for (index_t b = 0; b < s[0]; ++b)
    for (index_t t = 0; t < s[1]; ++t)
      for (index_t h = 0; h < s[2]; ++h)
        for (index_t d = 0; d < s[3]; ++d) *dst++ = x(b, t, h, d);
  return View4<const T>::contiguous(storage.data(), s);
}

// Rows with unit inner stride: the view itself, or a packed copy of the same element type in
// `storage` (exotic strides only; nothing is widened here, the kernels convert rows).
inline EView4 unit_rows(const EView4& x, PackedRows& storage) {
  if (x.absent() || x.stride(3) == 1 || x.size(3) <= 1) return x;
  if (x.is<bf16>()) return pack_rows(x.as<bf16>(), storage.b16);
  if (x.is<f16>()) return pack_rows(x.as<f16>(), storage.h16);
  return pack_rows(x.as<float>(), storage.f32);
}

// The address of element (b, t, h, 0) of a view of any element type.
inline const void* row_address(const EView4& x, index_t b, index_t t, index_t h) {
  return static_cast<const char*>(x.data()) +
         x.offset(b, t, h, index_t{0}) * static_cast<index_t>(x.element_size());
}
inline void* row_address(const MutEView4& x, index_t b, index_t t, index_t h) {
  return static_cast<char*>(x.data()) +
         x.offset(b, t, h, index_t{0}) * static_cast<index_t>(x.element_size());
}

inline View4<const float> unit_rows(const View4<const float>& x, std::vector<float>& storage) {
  if (x.absent() || x.stride(3) == 1 || x.size(3) <= 1) return x;
  storage.resize(static_cast<std::size_t>(x.numel()));
  const auto& s = x.shape();
  float* dst = storage.data();
  for (index_t b = 0; b < s[0]; ++b)
    for (index_t t = 0; t < s[1]; ++t)
      for (index_t h = 0; h < s[2]; ++h)
        for (index_t d = 0; d < s[3]; ++d) *dst++ = x(b, t, h, d);
  return View4<const float>::contiguous(storage.data(), s);
}

}  // namespace detail

template <FeatureMap Map, DecayPolicy DecayP, UpdatePolicy UpdateP, NormalizerPolicy NormP>
class LinearAttention {
 public:
  LinearAttention() = default;
  // default_scale replaces K^-0.5 when the run options give no scale (Based: 1, since its
  // feature map already carries the 1/sqrt(d) of fla).
  LinearAttention(Map map, DecayP decay, UpdateP update, NormP norm,
                  std::optional<double> default_scale = std::nullopt)
      : map_(std::move(map)),
        decay_(std::move(decay)),
        update_(update),
        norm_(norm),
        default_scale_(default_scale) {}

  using policies = linear::LinearPolicies<DecayP, UpdateP, NormP>;

  const Map& feature_map() const { return map_; }
  const DecayP& decay() const { return decay_; }
  const UpdateP& update() const { return update_; }
  const NormP& normalizer() const { return norm_; }

  /// The built-in policies described as values, for the reference oracle and polyattn-run
  /// (only for policies that carry a `kind`; a user's own policy has its own reference).
  LinearOptions options(const LinearRunOptions& run = {}) const
    requires requires {
      DecayP::kind;
      UpdateP::kind;
      NormP::kind;
    }
  {
    LinearOptions o;
    o.decay = DecayP::kind;
    o.update = UpdateP::kind;
    o.normalizer = NormP::kind;
    o.scale = run.scale ? run.scale : default_scale_;
    o.qk_l2norm = update_.qk_l2norm;
    o.eps = norm_.eps;
    return o;
  }

  /// Prefill: o (and optionally final_state / final_z) for every token of every sequence.
  /// @tparam Algo  Recurrent, Chunked<16|32|64|128> or Parallel (same numbers up to fp32 rounding)
  /// @param in     q, k [B,T,H,K], v [B,T,HV,V], the gates and beta the policies need,
  ///               optional initial_state [N,HV,K,V] and cu_seqlens (varlen, B == 1);
  ///               with state_indices [N], initial / final states are pools [slots,HV,K,V]
  ///               (sequence n at slot state_indices[n]; the same pool for both updates in
  ///               place)
  ///               q, k, v: fp32, bf16 or fp16, all the same type
  /// @param out    o [B,T,HV,V] (fp32, bf16 or fp16); optional final_state [N,HV,K,V]
  /// @param run    scale (default K^-0.5 of the mapped key dimension, or the preset's)
  /// @param exec   executor (Serial, ThreadPool, make_executor(...)); bits do not depend on it
  /// @throws polyattn::Error naming the bad argument; outputs are then untouched
  template <LinearAlgorithm Algo = Recurrent, Executor E = Serial>
  void forward(const LinearInputs& in, const LinearOutputs<float>& out,
               const LinearRunOptions& run = {}, const E& exec = E{}) const {
    run_impl<Algo>(in, out, run, exec);
  }

  /// Whether forward<Algo>(in, ...) runs its chunk products on AMX-BF16 tiles
  /// (linear/chunked_amx.hpp): Chunked<C> or Parallel (every sequence at most 128 tokens), bf16
  /// q, k and v reaching the kernels (no feature map, whose rows are fp32), K and V multiples of
  /// 32, and simd::runtime_isa() reaching amx (POLYATTN_ISA caps it). The tiles multiply the
  /// bf16 inputs exactly and every fp32 operand (state, T, right-hand sides, gated scores and
  /// keys) split in two bf16 halves, so results stay within the fp32 bounds but do not share the
  /// fp32 path's bits (docs/conventions.md §9.8); with a bf16 o, the products that reach only o
  /// take fewer terms (tile_output_terms). ChunkedKernel::on_tiles decides the same
  /// (linear::tile_problem) inside the kernels.
  template <LinearAlgorithm Algo>
  bool uses_bf16_products(const LinearInputs& in) const noexcept {
    if constexpr (std::is_same_v<Algo, Recurrent> || !Map::is_identity) {
      return false;
    } else {
      index_t longest = in.q.size(1);  // Parallel: one chunk per sequence
      if (!in.cu_seqlens.empty()) {
        longest = 0;
        for (std::size_t n = 0; n + 1 < in.cu_seqlens.size(); ++n)
          longest = std::max<index_t>(longest, in.cu_seqlens[n + 1] - in.cu_seqlens[n]);
      }
      if constexpr (requires { Algo::chunk; }) longest = std::min<index_t>(longest, Algo::chunk);
      return linear::tile_problem(in.q.dtype(), in.k.dtype(), in.v.dtype(), in.q.size(3),
                                  in.v.size(3), longest) &&
             simd::isa_at_least(simd::runtime_isa(), simd::Isa::amx) &&
             simd::kernel_isa<linear::ChunkedKernel<policies>>() == simd::Isa::avx512;
    }
  }

  /// The bf16 terms of each tile product that reaches only o (the gated intra-chunk scores, q S0,
  /// the masked scores times the updates) in forward<Algo>(in, ...) with an o of element type
  /// `o`: linear::output_product_terms(o) — 2 for a bf16 o (its left operand rounded once), else
  /// 3 as every product that reaches the state — and 0 where uses_bf16_products<Algo>(in) is
  /// false (no tiles).
  template <LinearAlgorithm Algo>
  int tile_output_terms(const LinearInputs& in, Dtype o) const noexcept {
    return uses_bf16_products<Algo>(in) ? linear::output_product_terms(o) : 0;
  }

  /// Decode: the new tokens of B sequences (q, k [B,T,H,K], v [B,T,HV,V], gates, beta; T is
  /// usually 1), `state` [B,HV,K,V] read and updated in place, o [B,T,HV,V] (q, k, v and o may
  /// be bf16 / fp16 as in forward; state stays fp32). With
  /// in.state_indices [B], `state` is a pool [slots,HV,K,V] and sequence b uses slot
  /// state_indices[b]. in.initial_state and in.cu_seqlens must be empty (the state argument is
  /// the state).
  /// @throws polyattn::Error naming the bad argument; state and o are then untouched
  template <Executor E = Serial>
  void step(const LinearInputs& in, View4<float> state, MutEView4 o,
            const LinearRunOptions& run = {}, const E& exec = E{}) const {
    if constexpr (NormP::running_sum)
      throw Error("z",
                  "this operator normalises by the running key sum: pass that state too, "
                  "step(inputs, state, z [B,HV,K], o)");
    step_impl(in, state, View3<float>{}, o, run, exec);
  }

  /// Decode for operators with the Sum normaliser (based, hedgehog, normalised linear_attn):
  /// z [B,HV,K], the running sum of the (mapped) keys, is read and updated in place with state.
  template <Executor E = Serial>
  void step(const LinearInputs& in, View4<float> state, View3<float> z, MutEView4 o,
            const LinearRunOptions& run = {}, const E& exec = E{}) const {
    if constexpr (!NormP::running_sum)
      throw Error("z", "was given but this operator has no normaliser state");
    check::required("z", z);
    step_impl(in, state, z, o, run, exec);
  }

  /// Speculative verify: o for T ≤ 16 draft tokens per sequence (inputs as in step), from
  /// `state` [B,HV,K,V] (or a pool [slots,HV,K,V] with in.state_indices), which is only read.
  /// `cache` keeps what commit needs to move the state to any accepted prefix.
  /// @throws polyattn::Error naming the bad argument; o and cache are then untouched
  template <Executor E = Serial>
  void verify(const LinearInputs& in, View4<const float> state, MutEView4 o,
              linear::VerifyCache& cache, const LinearRunOptions& run = {},
              const E& exec = E{}) const {
    if constexpr (NormP::running_sum)
      throw Error("z", "verify does not support the Sum normaliser (its z is not kept)");
    if (!in.initial_state.absent())
      throw Error("initial_state", "must be empty in verify(): the state argument is read");
    if (!in.cu_seqlens.empty()) throw Error("cu_seqlens", "is not supported by verify()");
    if (!in.snapshot_positions.empty())
      throw Error("snapshot_positions", "is not supported by verify() (commit is the snapshot)");
    check::required("state", state);
    check::required("q", in.q);
    if (in.q.size(1) > linear::kMaxVerifyTokens)
      throw Error("q", "verify takes at most " + std::to_string(linear::kMaxVerifyTokens) +
                           " draft tokens per sequence, got T=" + std::to_string(in.q.size(1)));
    check::required("v", in.v);
    const index_t F = Map::is_identity ? in.q.size(3) : map_.out_dim(in.q.size(3));
    const bool pool = !in.state_indices.empty();
    check::shape_is("state", state,
                    {pool ? state.size(0) : in.q.size(0), in.v.size(2), F, in.v.size(3)},
                    pool ? "[slots,HV,K,V] (a state pool)" : "[B,HV,K,V]");
    LinearInputs with_state = in;
    with_state.initial_state = state;
    run_impl<Parallel>(with_state, LinearOutputs<float>{.o = o}, run, exec, &cache);
  }

  /// Moves each sequence's state to the end of its accepted prefix: accepted [B], each in
  /// [0, T] of the last verify on `cache`; `state` is the tensor (or pool) that verify read.
  /// @throws polyattn::Error naming the bad argument; state is then untouched
  template <Executor E = Serial>
  void commit(const linear::VerifyCache& cache, std::span<const std::int64_t> accepted,
              View4<float> state, const E& exec = E{}) const {
    linear::commit_accepted<policies>(cache, accepted, state, exec);
  }

 private:
  template <class E>
  void step_impl(const LinearInputs& in, View4<float> state, View3<float> z, MutEView4 o,
                 const LinearRunOptions& run, const E& exec) const {
    if (!in.initial_z.absent())
      throw Error("initial_z",
                  "must be empty in step(): the z argument is read and updated in place");
    if (!in.initial_state.absent())
      throw Error("initial_state",
                  "must be empty in step(): the state argument is read and updated in place");
    if (!in.cu_seqlens.empty()) throw Error("cu_seqlens", "is not supported by step()");
    check::required("state", state);
    check::required("q", in.q);
    check::required("v", in.v);
    const index_t F = Map::is_identity ? in.q.size(3) : map_.out_dim(in.q.size(3));
    const bool pool = !in.state_indices.empty();  // then state / z are pools [slots, ...]
    check::shape_is("state", state,
                    {pool ? state.size(0) : in.q.size(0), in.v.size(2), F, in.v.size(3)},
                    pool ? "[slots,HV,K,V] (a state pool) with K the (mapped) key dim"
                         : "[B,HV,K,V] with K the (mapped) key dim");
    if (!z.absent())
      check::shape_is("z", z, {pool ? z.size(0) : in.q.size(0), in.v.size(2), F},
                      pool ? "[slots,HV,K] (a state pool) with K the (mapped) key dim"
                           : "[B,HV,K] with K the (mapped) key dim");
    LinearInputs with_state = in;
    with_state.initial_state = state;
    with_state.initial_z = z;
    run_impl<Recurrent>(
        with_state, LinearOutputs<float>{.o = o, .final_state = state, .final_z = z}, run, exec);
  }

  template <class Algo, class E>
  void run_impl(const LinearInputs& in_raw, const LinearOutputs<float>& out,
                const LinearRunOptions& run, const E& exec,
                linear::VerifyCache* keep = nullptr) const {
    check::required("q", in_raw.q);
    check::required("k", in_raw.k);
    check::shape_is("k", in_raw.k, in_raw.q.shape(), "same as q [B,T,H,K]");
    check::qkv_element_types(in_raw);
    LinearInputs in = in_raw;
    // Feature map (scratch copies; the caller's q, k are never written).
    std::vector<float> qmap, kmap;
    if constexpr (!Map::is_identity) {
      const auto& s = in.q.shape();
      const index_t F = map_.out_dim(s[3]);
      qmap.resize(static_cast<std::size_t>(s[0] * s[1] * s[2] * F));
      kmap.resize(qmap.size());
      const auto qv = View4<float>::contiguous(qmap.data(), {s[0], s[1], s[2], F});
      const auto kv = View4<float>::contiguous(kmap.data(), {s[0], s[1], s[2], F});
      apply_rows(map_, in.q, qv);
      apply_rows(map_, in.k, kv);
      in.q = qv;
      in.k = kv;
    }
    const std::optional<double> scale_opt = run.scale ? run.scale : default_scale_;
    const LinearDims d = validate_linear_tensors(in, out, NormP::running_sum);
    decay_.check(in, d);
    update_.check(in, d);
    check::scale_and_eps(scale_opt, NormP::running_sum, norm_.eps);
    if (NormP::running_sum && !in.snapshot_positions.empty())
      throw Error("snapshot_positions",
                  "snapshots hold S only; not supported with the Sum "
                  "normaliser");
    {  // against the caller's q and k (in.q, in.k may be the feature map's copies)
      LinearInputs caller = in;
      caller.q = in_raw.q;
      caller.k = in_raw.k;
      check::linear_writes_disjoint(caller, out);
    }
    const std::vector<Segment> segs = segments(d.B, d.T, in.cu_seqlens);
    if constexpr (std::is_same_v<Algo, Parallel>) {
      for (const Segment& sg : segs)
        if (sg.length > linear::kParallelMaxT)
          throw Error("q", "Parallel materialises T×T per head; sequence length " +
                               std::to_string(sg.length) + " exceeds " +
                               std::to_string(linear::kParallelMaxT) + " (use Chunked<C>)");
    }

    // Inner-contiguous rows for the kernels (packed copies only for exotic strides; q and k may
    // now be fp32 feature-map rows while v keeps the caller's element type).
    detail::PackedRows qs, ks, vs;
    std::vector<float> gks;
    in.q = detail::unit_rows(in.q, qs);
    in.k = detail::unit_rows(in.k, ks);
    in.v = detail::unit_rows(in.v, vs);
    in.gk = detail::unit_rows(in.gk, gks);
    std::vector<float> o_scratch;
    MutEView4 o = out.o;
    if (o.stride(3) != 1 && o.size(3) > 1) {  // fp32 rows, stored into out.o at the end
      o_scratch.resize(static_cast<std::size_t>(o.numel()));
      o = View4<float>::contiguous(o_scratch.data(), o.shape());
    }

    const index_t tasks = d.N * d.HV;
    const auto scale = static_cast<float>(resolved_scale(scale_opt, d.K));
    if (keep)  // speculative verify: validated, so the cache may now change
      keep->prepare(d.N, d.HV, d.T, d.K, d.V, linear::kept_floats<policies>(d.T, d.K, d.V),
                    in.state_indices);

    // The problem of tokens [off, off + L) of sequence n, value head hv (no state yet).
    auto problem = [&](index_t n, index_t hv, index_t off, index_t L) {
      const Segment& sg = segs[static_cast<std::size_t>(n)];
      const index_t b = sg.batch, t0 = sg.begin + off, h = hv / d.group();
      linear::HeadProblem<policies> p;
      p.T = L;
      p.K = d.K;
      p.V = d.V;
      p.q = detail::row_address(in.q, b, t0, h);
      p.q_st = in.q.stride(1);
      p.q_type = in.q.dtype();
      p.k = detail::row_address(in.k, b, t0, h);
      p.k_st = in.k.stride(1);
      p.k_type = in.k.dtype();
      p.v = detail::row_address(in.v, b, t0, hv);
      p.v_st = in.v.stride(1);
      p.v_type = in.v.dtype();
      p.gate = decay_.bind(in, b, t0, hv);
      p.update = update_.bind(in, b, t0, hv);
      p.qk_l2norm = update_.qk_l2norm;
      p.eps = static_cast<float>(norm_.eps);
      p.scale = scale;
      p.o = detail::row_address(o, b, t0, hv);
      p.o_st = o.stride(1);
      p.o_type = o.dtype();
      p.o_final_type = out.o.dtype();
      if (keep) {
        p.keep = keep->at(n, hv);
        p.update_state = false;
      }
      return p;
    };
    const linear::HeadStates states{in, out, d, NormP::running_sum, keep != nullptr};
    if constexpr (requires { Algo::chunk; }) {
      if (in.snapshot_positions.empty() &&
          linear::chunk_parallel_applies<policies>(tasks, exec.concurrency())) {
        linear::run_chunk_parallel<Algo::chunk>(segs, d, states, problem, exec);
        finish_output(out, o, o_scratch);
        return;
      }
    }
    linear::run_heads<Algo>(segs, d, states, problem, exec);
    finish_output(out, o, o_scratch);
  }

  static void finish_output(const LinearOutputs<float>& out, const MutEView4& o,
                            const std::vector<float>& o_scratch) {
    if (!o_scratch.empty()) {  // o: the fp32 scratch; out.o rounds to its element type
      const auto& s = o.shape();
      for (index_t b = 0; b < s[0]; ++b)
        for (index_t t = 0; t < s[1]; ++t)
          for (index_t h = 0; h < s[2]; ++h)
            for (index_t j = 0; j < s[3]; ++j) out.o.store(o(b, t, h, j), b, t, h, j);
    }
  }

  Map map_{};
  DecayP decay_{};
  UpdateP update_{};
  NormP norm_{};
  std::optional<double> default_scale_;
};

}  // namespace polyattn
