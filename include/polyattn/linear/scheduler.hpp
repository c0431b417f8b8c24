// polyattn/linear/scheduler.hpp — how a linear-family call's work is split and run.
//
// run_heads<Algo>: one task per (sequence, value head), each running the whole sequence through
// Algo's kernel (Recurrent, Chunked<C>, Parallel) on the caller's executor. With several heads
// per thread, a Chunked<C> task takes up to kMaxLockstepHeads heads of one sequence and runs
// them chunk by chunk in turn (lockstep_heads). A task's arithmetic does not depend on which
// thread runs it nor on the grouping, so results are bit-identical for any executor.
//
// run_chunk_parallel<C>: for fewer (sequence, head) tasks than threads, with the additive update
// and no normaliser (the chunk-to-chunk state map is then S ← a∘S + ΔS):
//   1. every chunk's own contribution ΔS_c and decay a_c, in parallel;
//   2. a short sequential pass per head: S_{c+1} = a_c ∘ S_c + ΔS_c (K·V per chunk);
//   3. every chunk's outputs from its starting state, in parallel.
// Each step does exactly the float operations of the serial chunked kernel in the same order, so
// the bits do not depend on the thread count either. Chunks go in windows to bound the memory.
// (The delta rule's chunk map is affine with a K×K matrix; propagating it would cost about as
// much as the chunk itself, so delta policies parallelise over (sequence, head) only.)
//
// Snapshots (prefix caching): run_heads splits a sequence at its snapshot positions and copies
// the state after each piece to its snapshot row; a piece is exactly the computation of a
// prefill cut at that position. Splits at multiples of the chunk size leave every chunk (and so
// every bit of o and the final state) as without snapshots.
//
// Kernels never allocate; their workspaces are sized and owned here, in the caller's TU.
#pragma once

#include <algorithm>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "polyattn/args/linear.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/linear/chunked.hpp"
#include "polyattn/linear/head.hpp"
#include "polyattn/linear/recurrent.hpp"
#include "polyattn/linear/state_copy.hpp"
#include "polyattn/policies/algorithm.hpp"

namespace polyattn::linear {

/// Runs one head problem with algorithm Algo; `scratch` is grown to the kernel's workspace.
template <class Algo, class P>
void run_head(const HeadProblem<P>& p, std::vector<float>& scratch) {
  if constexpr (std::is_same_v<Algo, Recurrent>) {
    scratch.resize(RecurrentKernel<P>::workspace_floats(p.K, p.V));
    simd::run_kernel(RecurrentKernel<P>{&p, {scratch.data(), scratch.size()}});
  } else {
    index_t chunk = p.T;  // Parallel: one chunk
    if constexpr (requires { Algo::chunk; }) chunk = std::min<index_t>(Algo::chunk, p.T);
    if (p.T <= 0) return;
    scratch.resize(ChunkedKernel<P>::workspace_floats(chunk, p.K, p.V));
    simd::run_kernel(ChunkedKernel<P>{&p,
                                      {scratch.data(), scratch.size()},
                                      chunk,
                                      simd::isa_at_least(simd::runtime_isa(), simd::Isa::amx)});
  }
}

/// Initial and final states of a validated call: [N,HV,K,V] and, for running-sum normalisers,
/// z [N,HV,K] — or pools [slots,...] read and written at slot state_slot(in, n) of sequence n.
/// A head's working state is a contiguous [K][V] block.
struct HeadStates {
  const LinearInputs& in;
  const LinearOutputs<float>& out;
  const LinearDims& d;
  bool running_sum;
  bool read_only = false;  // the kernels only read the state (speculative verify)

  // A read-only state whose [K][V] block is contiguous is read where it is (no copy).
  const float* read_in_place(index_t n, index_t hv) const {
    if (!read_only || in.initial_state.absent() || in.initial_state.stride(3) != 1 ||
        in.initial_state.stride(2) != d.V)
      return nullptr;
    return in.initial_state.ptr(state_slot(in, n), hv, 0, 0);
  }

  // When final_state holds each head's [K][V] block contiguously, kernels work in it directly
  // (decode: initial_state is the same memory, so nothing is copied at all).
  bool in_place() const {
    return !out.final_state.absent() && out.final_state.stride(3) == 1 &&
           out.final_state.stride(2) == d.V;
  }
  float* final_block(index_t n, index_t hv) const {
    return out.final_state.ptr(state_slot(in, n), hv, 0, 0);
  }

  void load(index_t n, index_t hv, float* S, std::vector<float>& z) const {
    const index_t s = state_slot(in, n);
    if (in.initial_state.absent()) {
      std::fill(S, S + d.K * d.V, 0.f);
    } else if (in.initial_state.ptr(s, hv, 0, 0) != S) {
      copy_block({in.initial_state.ptr(s, hv, 0, 0), in.initial_state.stride(2),
                  in.initial_state.stride(3)},
                 working_block(S, d.V), d.K, d.V);
    }
    if (!running_sum) return;
    z.assign(static_cast<std::size_t>(d.K), 0.f);
    if (!in.initial_z.absent())
      for (index_t i = 0; i < d.K; ++i) z[static_cast<std::size_t>(i)] = in.initial_z(s, hv, i);
  }
  // Snapshots [lo, hi) of sequence n (none without snapshot_positions).
  std::pair<index_t, index_t> snapshot_range(index_t n) const {
    if (in.snapshot_positions.empty()) return {0, 0};
    if (in.snapshot_offsets.empty()) return {0, static_cast<index_t>(in.snapshot_positions.size())};
    return {in.snapshot_offsets[static_cast<std::size_t>(n)],
            in.snapshot_offsets[static_cast<std::size_t>(n) + 1]};
  }
  index_t snapshot_position(index_t m) const {
    return in.snapshot_positions[static_cast<std::size_t>(m)];
  }
  void write_snapshot(index_t m, index_t hv, const float* S) const {
    const index_t row =
        in.snapshot_slots.empty() ? m : in.snapshot_slots[static_cast<std::size_t>(m)];
    copy_block(working_block(S, d.V),
               {out.snapshots.ptr(row, hv, 0, 0), out.snapshots.stride(2), out.snapshots.stride(3)},
               d.K, d.V);
  }
  void store(index_t n, index_t hv, const float* S, const std::vector<float>& z) const {
    const index_t s = state_slot(in, n);
    if (!out.final_state.absent() && out.final_state.ptr(s, hv, 0, 0) != S)
      copy_block(
          working_block(S, d.V),
          {out.final_state.ptr(s, hv, 0, 0), out.final_state.stride(2), out.final_state.stride(3)},
          d.K, d.V);
    if (!out.final_z.absent())
      for (index_t i = 0; i < d.K; ++i) out.final_z(s, hv, i) = z[static_cast<std::size_t>(i)];
  }
};

/// How many value heads of one sequence a run_heads task takes in lockstep (1: a task per head).
/// Chunked<C> only, and only with at least two heads per thread: a head reads its q, k, v rows
/// H·K elements apart, so each token is its own page, and a chunk's rows cost a page walk each.
/// Heads of one sequence run chunk by chunk read the same pages one after another, and the
/// walks are shared. kMaxLockstepHeads bounds the states kept warm at once (K·V floats each).
inline constexpr index_t kMaxLockstepHeads = 8;

template <class Algo>
index_t lockstep_heads(const LinearDims& d, const HeadStates& states, int threads) {
  if constexpr (!requires { Algo::chunk; }) {
    return 1;
  } else {
    if (states.read_only) return 1;  // speculative verify: one chunk, kept rows per head
    const index_t per_thread = d.N * d.HV / std::max(threads, 1);
    return per_thread < 2 ? 1 : std::min({kMaxLockstepHeads, per_thread, d.HV});
  }
}

/// Tasks of lockstep_heads value heads of one sequence. problem(n, hv, off, L) gives the
/// HeadProblem of tokens [off, off + L) of sequence n, value head hv, without state. Heads in
/// lockstep run their pieces one chunk at a time, in turn; a chunk is the same computation
/// either way, so the bits do not depend on the grouping (nor on the executor).
template <class Algo, class Problem, class E>
void run_heads(const std::vector<Segment>& segs, const LinearDims& d, const HeadStates& states,
               const Problem& problem, const E& exec) {
  const bool in_place = states.in_place();
  const index_t G = lockstep_heads<Algo>(d, states, exec.concurrency());
  const index_t groups = (d.HV + G - 1) / G;  // per sequence
  exec.parallel_for(d.N * groups, [&](index_t task) {
    const index_t n = task / groups, hv0 = task % groups * G, heads = std::min(G, d.HV - hv0);
    const Segment& sg = segs[static_cast<std::size_t>(n)];
    struct Head {
      std::unique_ptr<float[]> owned;  // default-initialised: load() writes every element
      float* state = nullptr;
      std::vector<float> z;
    };
    std::vector<Head> head(static_cast<std::size_t>(heads));
    std::vector<float> scratch;
    for (index_t h = 0; h < heads; ++h) {
      Head& e = head[static_cast<std::size_t>(h)];
      if (const float* ro = states.read_in_place(n, hv0 + h)) {  // never written
        e.state = const_cast<float*>(ro);
      } else if (in_place) {
        e.state = states.final_block(n, hv0 + h);
      } else {
        e.owned.reset(new float[static_cast<std::size_t>(d.K * d.V)]);
        e.state = e.owned.get();
      }
      states.load(n, hv0 + h, e.state, e.z);
    }
    auto run_piece = [&](index_t off, index_t L) {
      index_t turn = L;  // tokens per head and turn: a chunk in lockstep, else the whole piece
      if constexpr (requires { Algo::chunk; })
        if (heads > 1) turn = Algo::chunk;
      for (index_t s = 0; s < L; s += turn) {
        const index_t len = std::min(turn, L - s);
        for (index_t h = 0; h < heads; ++h) {
          Head& e = head[static_cast<std::size_t>(h)];
          auto p = problem(n, hv0 + h, off + s, len);
          p.state = e.state;
          p.z = e.z.empty() ? nullptr : e.z.data();
          const auto next = h + 1 < heads ? problem(n, hv0 + h + 1, off + s, len) : p;
          if (h + 1 < heads) p.next_head = &next;  // its rows are asked for meanwhile
          run_head<Algo>(p, scratch);
        }
      }
    };
    index_t done = 0;
    const auto [m0, m1] = states.snapshot_range(n);
    for (index_t m = m0; m < m1; ++m) {  // pieces ending at the snapshot positions
      const index_t pos = states.snapshot_position(m);
      run_piece(done, pos - done);
      done = pos;
      for (index_t h = 0; h < heads; ++h)
        states.write_snapshot(m, hv0 + h, head[static_cast<std::size_t>(h)].state);
    }
    run_piece(done, sg.length - done);
    for (index_t h = 0; h < heads; ++h)
      states.store(n, hv0 + h, head[static_cast<std::size_t>(h)].state,
                   head[static_cast<std::size_t>(h)].z);
  });
}

/// Whether run_chunk_parallel applies: additive update, no normaliser, fewer tasks than threads.
template <class P>
bool chunk_parallel_applies(index_t tasks, int threads) {
  return !P::delta && !P::running_sum && tasks < threads;
}

template <int C, class Problem, class E>
void run_chunk_parallel(const std::vector<Segment>& segs, const LinearDims& d,
                        const HeadStates& states, const Problem& problem, const E& exec) {
  using Prob = std::invoke_result_t<const Problem&, index_t, index_t, index_t, index_t>;
  const index_t tasks = d.N * d.HV;
  const auto KV = static_cast<std::size_t>(d.K * d.V);
  std::vector<std::vector<float>> S(static_cast<std::size_t>(tasks)), z(S.size());
  index_t max_chunks = 0;
  for (index_t task = 0; task < tasks; ++task) {
    S[task].resize(KV);
    states.load(task / d.HV, task % d.HV, S[task].data(), z[task]);
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
      Prob p = problem(task / d.HV, task % d.HV, off, L);
      p.o = nullptr;
      p.delta_out = dS.data() + item * KV;
      p.decay_out = dec.data() + item * d.K;
      std::vector<float> scratch;
      run_head<Chunked<C>>(p, scratch);
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
        // Two passes, as the serial kernel's state_pass (scale S, then the product accumulates
        // into it): written as one expression s·a + ds, a compiler that contracts
        // floating-point expressions (GCC's default -ffp-contract=fast wherever FMA is
        // baseline: every AArch64 TU, x86 TUs built with -mfma / -march=native) fuses it into
        // one FMA with a single rounding, and the threaded result no longer has the serial
        // bits.
        for (index_t i = 0; i < d.K; ++i) {
          float* row = s + i * d.V;
          for (index_t c = 0; c < d.V; ++c) row[c] *= a[i];
          const float* drow = ds + i * d.V;
          for (index_t c = 0; c < d.V; ++c) row[c] += drow[c];
        }
      }
    });
    exec.parallel_for(static_cast<index_t>(items), [&](index_t item) {  // 3: outputs
      index_t task, off, L;
      if (!chunk_of(item, task, off, L)) return;
      Prob p = problem(task / d.HV, task % d.HV, off, L);
      p.state = S0.data() + item * KV;
      p.update_state = false;
      std::vector<float> scratch;
      run_head<Chunked<C>>(p, scratch);
    });
  }
  for (index_t task = 0; task < tasks; ++task)
    states.store(task / d.HV, task % d.HV, S[task].data(), z[task]);
}

}  // namespace polyattn::linear
