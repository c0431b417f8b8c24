// polyattn/linear/operator.hpp — LinearAttention<Map, Decay, Update, Normalizer>: the operator
// of the whole linear family (SPEC.md §2), composed from policies at compile time.
//
//   forward<Algo>(inputs, outputs, options, executor)   prefill over [B,T,...] or packed varlen
//   step(inputs, state, o, options, executor)            decode: T new tokens (usually 1) per
//                                                         sequence, state [B,HV,K,V] in place
// The feature map is applied to q and k first (into scratch, skipped for Identity); the state's
// key dimension is the mapped one. Work is split into (sequence, value head) tasks handed to the
// executor; each task is computed the same way whatever the thread count, so results are
// bit-identical for any executor. Arguments are validated before any output is written.
#pragma once

#include <algorithm>
#include <optional>
#include <vector>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/linear/chunked.hpp"
#include "polyattn/linear/head.hpp"
#include "polyattn/linear/recurrent.hpp"
#include "polyattn/policies/algorithm.hpp"
#include "polyattn/policies/decay.hpp"
#include "polyattn/policies/feature_map.hpp"
#include "polyattn/policies/normalizer.hpp"
#include "polyattn/policies/update.hpp"

namespace polyattn {

struct LinearRunOptions {
  std::optional<double> scale;  // default K^-0.5 (K after the feature map)
};

namespace detail {

// Rows with unit inner stride: the view itself, or a packed copy in `storage`.
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

  const Map& feature_map() const { return map_; }
  const DecayP& decay() const { return decay_; }

  // The policies lowered to the option set shared with the reference oracle.
  LinearOptions options(const LinearRunOptions& run = {}) const {
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
  ///               optional initial_state [N,HV,K,V] and cu_seqlens (varlen, B == 1)
  /// @param out    o [B,T,HV,V]; optional final_state [N,HV,K,V]
  /// @param run    scale (default K^-0.5 of the mapped key dimension, or the preset's)
  /// @param exec   executor (Serial, ThreadPool, make_executor(...)); bits do not depend on it
  /// @throws polyattn::Error naming the bad argument; outputs are then untouched
  template <LinearAlgorithm Algo = Recurrent, Executor E = Serial>
  void forward(const LinearInputs& in, const LinearOutputs<float>& out,
               const LinearRunOptions& run = {}, const E& exec = E{}) const {
    run_impl<Algo>(in, out, run, exec);
  }

  /// Decode: the new tokens of B sequences (q, k [B,T,H,K], v [B,T,HV,V], gates, beta; T is
  /// usually 1), `state` [B,HV,K,V] read and updated in place, o [B,T,HV,V].
  /// in.initial_state and in.cu_seqlens must be empty (the state argument is the state).
  /// @throws polyattn::Error naming the bad argument; state and o are then untouched
  template <Executor E = Serial>
  void step(const LinearInputs& in, View4<float> state, View4<float> o,
            const LinearRunOptions& run = {}, const E& exec = E{}) const {
    if constexpr (NormP::kind == Normalizer::Sum)
      throw Error("z", "this operator normalises by the running key sum: pass that state too, "
                       "step(inputs, state, z [B,HV,K], o)");
    step_impl(in, state, View3<float>{}, o, run, exec);
  }

  /// Decode for operators with the Sum normaliser (based, hedgehog, normalised linear_attn):
  /// z [B,HV,K], the running sum of the (mapped) keys, is read and updated in place with state.
  template <Executor E = Serial>
  void step(const LinearInputs& in, View4<float> state, View3<float> z, View4<float> o,
            const LinearRunOptions& run = {}, const E& exec = E{}) const {
    if constexpr (NormP::kind != Normalizer::Sum)
      throw Error("z", "was given but this operator has no normaliser state");
    check::required("z", z);
    step_impl(in, state, z, o, run, exec);
  }

 private:
  template <class E>
  void step_impl(const LinearInputs& in, View4<float> state, View3<float> z, View4<float> o,
                 const LinearRunOptions& run, const E& exec) const {
    if (!in.initial_z.absent())
      throw Error("initial_z", "must be empty in step(): the z argument is read and updated in place");
    if (!in.initial_state.absent())
      throw Error("initial_state",
                  "must be empty in step(): the state argument is read and updated in place");
    if (!in.cu_seqlens.empty()) throw Error("cu_seqlens", "is not supported by step()");
    check::required("state", state);
    check::required("q", in.q);
    check::required("v", in.v);
    const index_t F = Map::is_identity ? in.q.size(3) : map_.out_dim(in.q.size(3));
    check::shape_is("state", state, {in.q.size(0), in.v.size(2), F, in.v.size(3)},
                    "[B,HV,K,V] with K the (mapped) key dim");
    if (!z.absent())
      check::shape_is("z", z, {in.q.size(0), in.v.size(2), F}, "[B,HV,K] with K the (mapped) key dim");
    LinearInputs with_state = in;
    with_state.initial_state = state;
    with_state.initial_z = z;
    run_impl<Recurrent>(with_state,
                        LinearOutputs<float>{.o = o, .final_state = state, .final_z = z}, run,
                        exec);
  }

  template <class Algo, class E>
  void run_impl(const LinearInputs& in_raw, const LinearOutputs<float>& out,
                const LinearRunOptions& run, const E& exec) const {
    check::required("q", in_raw.q);
    check::required("k", in_raw.k);
    check::shape_is("k", in_raw.k, in_raw.q.shape(), "same as q [B,T,H,K]");
    LinearInputs in = in_raw;
    if constexpr (std::is_same_v<DecayP, ConstantDecay>) {
      if (!decay_.g_gamma.empty()) {
        if (!in.g_gamma.absent())
          throw Error("g_gamma", "given both in the inputs and by the ConstantDecay policy");
        in.g_gamma = View1<const float>::contiguous(decay_.g_gamma.data(),
                                                    {static_cast<index_t>(decay_.g_gamma.size())});
      }
    }
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
    const LinearOptions opt = options(run);
    const LinearDims d = validate_linear(in, opt, out);
    if constexpr (std::is_same_v<Algo, Parallel>) {
      for (const Segment& sg : segments(d.B, d.T, in.cu_seqlens))
        if (sg.length > linear::kParallelMaxT)
          throw Error("q", "Parallel materialises T×T per head; sequence length " +
                               std::to_string(sg.length) + " exceeds " +
                               std::to_string(linear::kParallelMaxT) + " (use Chunked<C>)");
    }

    // Inner-contiguous rows for the kernels (packed copies only for exotic strides).
    std::vector<float> qs, ks, vs, gks;
    in.q = detail::unit_rows(in.q, qs);
    in.k = detail::unit_rows(in.k, ks);
    in.v = detail::unit_rows(in.v, vs);
    in.gk = detail::unit_rows(in.gk, gks);
    std::vector<float> o_scratch;
    View4<float> o = out.o;
    if (o.stride(3) != 1 && o.size(3) > 1) {
      o_scratch.resize(static_cast<std::size_t>(o.numel()));
      o = View4<float>::contiguous(o_scratch.data(), o.shape());
    }

    const std::vector<Segment> segs = segments(d.B, d.T, in.cu_seqlens);
    const index_t tasks = d.N * d.HV;
    const double scale = resolved_scale(opt, d.K);

    // The problem of tokens [off, off + L) of sequence n, value head hv.
    auto problem = [&](index_t n, index_t hv, index_t off, index_t L) {
      const Segment& sg = segs[static_cast<std::size_t>(n)];
      const index_t b = sg.batch, t0 = sg.begin + off, h = hv / d.group();
      linear::HeadProblem p;
      p.T = L;
      p.K = d.K;
      p.V = d.V;
      p.q = in.q.ptr(b, t0, h, 0);
      p.q_st = in.q.stride(1);
      p.k = in.k.ptr(b, t0, h, 0);
      p.k_st = in.k.stride(1);
      p.v = in.v.ptr(b, t0, hv, 0);
      p.v_st = in.v.stride(1);
      p.decay = opt.decay;
      if (!in.g_gamma.absent()) p.g_gamma = in.g_gamma(hv);
      if (!in.g.absent()) {
        p.g = in.g.ptr(b, t0, hv);
        p.g_st = in.g.stride(1);
      }
      if (!in.gk.absent()) {
        p.gk = in.gk.ptr(b, t0, hv, 0);
        p.gk_st = in.gk.stride(1);
      }
      p.update = opt.update;
      if (!in.beta.absent()) {
        p.beta = in.beta.ptr(b, t0, hv);
        p.beta_st = in.beta.stride(1);
      }
      p.qk_l2norm = opt.qk_l2norm;
      p.normalizer = opt.normalizer;
      p.eps = static_cast<float>(opt.eps);
      p.scale = static_cast<float>(scale);
      p.o = o.ptr(b, t0, hv, 0);
      p.o_st = o.stride(1);
      return p;
    };
    // S: the head's [K][V] working state (contiguous). When S already is the caller's memory
    // (final_state worked in place, initial_state aliasing it) the copies are skipped.
    auto load_into = [&](index_t n, index_t hv, float* S) {
      if (in.initial_state.absent()) {
        std::fill(S, S + d.K * d.V, 0.f);
      } else if (in.initial_state.ptr(n, hv, 0, 0) != S) {
        for (index_t i = 0; i < d.K; ++i)
          for (index_t j = 0; j < d.V; ++j) S[i * d.V + j] = in.initial_state(n, hv, i, j);
      }
    };
    auto load_z = [&](index_t n, index_t hv, std::vector<float>& z) {
      if (opt.normalizer != Normalizer::Sum) return;
      z.assign(static_cast<std::size_t>(d.K), 0.f);
      if (!in.initial_z.absent())
        for (index_t i = 0; i < d.K; ++i) z[i] = in.initial_z(n, hv, i);
    };
    auto store_from = [&](index_t n, index_t hv, const float* S, const std::vector<float>& z) {
      if (!out.final_state.absent() && out.final_state.ptr(n, hv, 0, 0) != S)
        for (index_t i = 0; i < d.K; ++i)
          for (index_t j = 0; j < d.V; ++j) out.final_state(n, hv, i, j) = S[i * d.V + j];
      if (!out.final_z.absent())
        for (index_t i = 0; i < d.K; ++i) out.final_z(n, hv, i) = z[i];
    };
    auto load_state = [&](index_t n, index_t hv, std::vector<float>& S, std::vector<float>& z) {
      S.resize(static_cast<std::size_t>(d.K * d.V));
      load_into(n, hv, S.data());
      load_z(n, hv, z);
    };
    auto store_state = [&](index_t n, index_t hv, const std::vector<float>& S,
                           const std::vector<float>& z) { store_from(n, hv, S.data(), z); };

    if constexpr (requires { Algo::chunk; }) {
      if (chunk_parallel_applies(opt, tasks, exec.concurrency())) {
        run_chunk_parallel<Algo::chunk>(segs, tasks, d, problem, load_state, store_state, exec);
        finish_output(out, o, o_scratch);
        return;
      }
    }

    // When final_state holds each head's [K][V] block contiguously, the kernel works in it
    // directly (decode: initial_state is the same memory, so nothing is copied at all).
    const bool in_place = !out.final_state.absent() && out.final_state.stride(3) == 1 &&
                          out.final_state.stride(2) == d.V;
    exec.parallel_for(tasks, [&](index_t task) {
      const index_t n = task / d.HV, hv = task % d.HV;
      const Segment& sg = segs[static_cast<std::size_t>(n)];
      std::vector<float> S, z;
      float* state = nullptr;
      if (in_place) {
        state = out.final_state.ptr(n, hv, 0, 0);
      } else {
        S.resize(static_cast<std::size_t>(d.K * d.V));
        state = S.data();
      }
      load_into(n, hv, state);
      load_z(n, hv, z);
      if (sg.length > 0) {
        linear::HeadProblem p = problem(n, hv, 0, sg.length);
        p.state = state;
        p.z = z.empty() ? nullptr : z.data();
        linear::Workspace ws;
        run_head<Algo>(p, ws);
      }
      store_from(n, hv, state, z);
    });
    finish_output(out, o, o_scratch);
  }

  static void finish_output(const LinearOutputs<float>& out, const View4<float>& o,
                            const std::vector<float>& o_scratch) {
    if (!o_scratch.empty()) {
      const auto& s = o.shape();
      for (index_t b = 0; b < s[0]; ++b)
        for (index_t t = 0; t < s[1]; ++t)
          for (index_t h = 0; h < s[2]; ++h)
            for (index_t j = 0; j < s[3]; ++j) out.o(b, t, h, j) = o(b, t, h, j);
    }
  }

  // Chunk-level parallelism when there are fewer (sequence, head) tasks than threads, for the
  // additive update without normaliser (the chunk-to-chunk state map is then S ← a∘S + ΔS):
  //   1. every chunk's own contribution ΔS_c and decay a_c, in parallel;
  //   2. a short sequential pass per head: S_{c+1} = a_c ∘ S_c + ΔS_c (K·V per chunk);
  //   3. every chunk's outputs from its starting state, in parallel.
  // Each step does exactly the float operations of the serial chunked kernel in the same order,
  // so the bits do not depend on the thread count. Chunks go in windows to bound the memory.
  // (The delta rule's chunk map is affine with a K×K matrix; propagating it would cost about
  // as much as the chunk itself, so delta presets parallelise over (sequence, head) only.)
  static bool chunk_parallel_applies(const LinearOptions& opt, index_t tasks, int threads) {
    return opt.update == Update::Additive && opt.normalizer == Normalizer::None && tasks < threads;
  }

  template <int C, class Problem, class Load, class Store, class E>
  static void run_chunk_parallel(const std::vector<Segment>& segs, index_t tasks,
                                 const LinearDims& d, const Problem& problem, const Load& load,
                                 const Store& store, const E& exec) {
    const auto KV = static_cast<std::size_t>(d.K * d.V);
    std::vector<std::vector<float>> S(static_cast<std::size_t>(tasks)), z(S.size());
    index_t max_chunks = 0;
    for (index_t task = 0; task < tasks; ++task) {
      load(task / d.HV, task % d.HV, S[task], z[task]);
      const index_t len = segs[static_cast<std::size_t>(task / d.HV)].length;
      max_chunks = std::max(max_chunks, (len + C - 1) / C);
    }
    const index_t window = std::max<index_t>(
        2, 2 * static_cast<index_t>(exec.concurrency()) / std::max<index_t>(tasks, 1));
    const auto items = static_cast<std::size_t>(tasks * window);
    std::vector<float> dS(items * KV), dec(items * static_cast<std::size_t>(d.K)), S0(items * KV);
    for (index_t w0 = 0; w0 < max_chunks; w0 += window) {
      auto chunk_of = [&](index_t item, index_t& task, index_t& off, index_t& L) {
        task = item / window;
        off = (w0 + item % window) * C;
        const index_t len = segs[static_cast<std::size_t>(task / d.HV)].length;
        L = std::min<index_t>(C, len - off);
        return L > 0;
      };
      exec.parallel_for(static_cast<index_t>(items), [&](index_t item) {  // 1: ΔS_c, a_c
        index_t task, off, L;
        if (!chunk_of(item, task, off, L)) return;
        linear::HeadProblem p = problem(task / d.HV, task % d.HV, off, L);
        p.o = nullptr;
        p.delta_out = dS.data() + item * KV;
        p.decay_out = dec.data() + item * d.K;
        linear::Workspace ws;
        run_head<Chunked<C>>(p, ws);
      });
      exec.parallel_for(tasks, [&](index_t task) {  // 2: sequential state pass per head
        float* s = S[task].data();
        for (index_t j = 0; j < window; ++j) {
          index_t t, off, L;
          const index_t item = task * window + j;
          if (!chunk_of(item, t, off, L)) break;
          std::copy(s, s + KV, S0.begin() + item * KV);
          const float* ds = dS.data() + item * KV;
          const float* a = dec.data() + item * d.K;
          for (index_t i = 0; i < d.K; ++i)
            for (index_t c = 0; c < d.V; ++c) {
              float x = s[i * d.V + c];
              if constexpr (DecayP::kind != Decay::None) x *= a[i];
              s[i * d.V + c] = x + ds[i * d.V + c];
            }
        }
      });
      exec.parallel_for(static_cast<index_t>(items), [&](index_t item) {  // 3: outputs
        index_t task, off, L;
        if (!chunk_of(item, task, off, L)) return;
        linear::HeadProblem p = problem(task / d.HV, task % d.HV, off, L);
        p.state = S0.data() + item * KV;
        p.update_state = false;
        linear::Workspace ws;
        run_head<Chunked<C>>(p, ws);
      });
    }
    for (index_t task = 0; task < tasks; ++task) store(task / d.HV, task % d.HV, S[task], z[task]);
  }

  template <class Algo>
  static void run_head(const linear::HeadProblem& p, linear::Workspace& ws) {
    if constexpr (std::is_same_v<Algo, Recurrent>) {
      simd::run_kernel(linear::RecurrentKernel{&p, &ws});
    } else if constexpr (std::is_same_v<Algo, Parallel>) {
      simd::run_kernel(linear::ChunkedKernel{&p, &ws, p.T});
    } else {
      simd::run_kernel(linear::ChunkedKernel{&p, &ws, Algo::chunk});
    }
  }

  Map map_{};
  DecayP decay_{};
  UpdateP update_{};
  NormP norm_{};
  std::optional<double> default_scale_;
};

}  // namespace polyattn
