// bench/bench_sparse.cpp — polyattn-bench-sparse: block-sparse attention at the docs/conventions.md
// §12 `sparse` shape (causal, B1 H8 D128, T 32768, 90% of the causal blocks skipped), against the
// dense causal flash kernel of the same binary.
//
//   sparse/dense-causal/B:1/H:8/T:<T>/D:128/threads:N        softmax::flash_attention, causal
//   sparse/dense-full/B:1/H:8/T:<T>/D:128/threads:N          the same without a mask (CLEAR's base)
//   sparse/topk/keep:0.10/B:1/H:8/T:<T>/D:128/threads:N      sparse_attention(TopKSelector)
//   sparse/window-sinks/keep:0.10/B:1/H:8/T:<T>/D:128/threads:N
//   sparse_attention(WindowSinkSelector) sparse-select/<selector>/B:1/H:8/T:<T>/D:128/threads:N the
//   selector alone (select())
//   sparse/seer-gate/keep:0.10/...  sparse_attention(GateScoreSelector), top-k on given gate
//                                   scores (SeerAttention; the gate's own cost is the model's)
//   fused/blockrank/docs:512/...    softmax::blockrank_attention: a 512-token instruction,
//   documents
//                                   of 512 tokens, a 512-token query segment (BlockRank)
//   fused/clear/r:16/...            softmax::clear_attention, the sequence a (T/256) × 256 image,
//                                   circle radius 16, no text (CLEAR); not causal
//   fused/combiner/seg:128/...      softmax::combiner_summaries + combiner_attention, causal,
//                                   segments of 128 (the authors' default), max pooling
//                                   (Combiner-Fixed); selector_ms / selector_frac: the summaries
//   sparse/hip/keep:0.10/...        sparse_attention(HipSelector): HiP's tree search for top_k − 2
//                                   blocks beside the diagonal, one sink and one local block (as
//                                   many blocks per row as top-k keeps)
//   sparse/dhsa/budget:2048/...     sparse::dhsa_select + dhsa_attention: chunks of 32–256 tokens
//                                   (fixed pseudo-random bounds), 64-position query blocks, 2048
//                                   keys per block (64 local, 4 sinks); kept_frac: kept (query,
//                                   key) pairs / causal pairs; selector_ms: dhsa_select alone
// T = 32768 (the docs/conventions.md §12 shape) and 4096 (a quick check), 1 and all threads,
// 64-token blocks. "keep:0.10": the selector's parameter is chosen so that 10% of the causal blocks
// (nQB·(nQB+1)/2) stay: top-k keeps the diagonal block plus the k best earlier ones by mean-pooled
// q·k; window-sinks keeps block 0 plus the w blocks ending at the diagonal. The sparse cases time
// the whole sparse_attention call (selection, K/V packing, kernel); the selector-only cases time
// select() into a reused mask. Inputs are uniform in [-1, 1] (the block scores then carry little
// signal, which does not change the cost: top-k keeps exactly k blocks per row).
//
// Counters (plain values from the time per iteration; bench_common.hpp): tokens/s (T per second),
// head_tokens/s and ns_per_head_token (T·H query head-tokens), GFLOP/s and peak_frac from the
// useful FLOPs: 4·D per visible (query, key) pair and head, the pairs counted from the mask
// actually used (dense: T(T+1)/2 per head); the sparse cases add
//   kept_frac         selected blocks / causal blocks, from the mask
//                     (fused cases: visible (query, key) pairs / those of their dense base —
//                     causal for BlockRank, full for CLEAR — counted token by token)
//   selector_ms       time of one select() alone (best of 3, outside the timed loop)
//   selector_frac     selector_ms / time of the whole sparse_attention call
//   speedup_vs_dense  dense time / sparse time, when the dense case of the same T and threads ran
//                     earlier in this process (it is registered first; a filter that leaves it
//                     out leaves this counter out)
//
// Defaults differ from the other bench binaries: 1 repetition (the dense T 32768 case takes
// minutes on one thread; pass --benchmark_repetitions=3 for medians), min time 0.05 s. A quick
// check: --benchmark_filter=T:4096. Google Benchmark flags pass through; POLYATTN_ISA caps the
// kernels' ISA; --polyattn_time=cpu bases single-thread counters on the thread's CPU time.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "bench_common.hpp"
#include "bench_papers_kernels.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/sparse/sparse.hpp"

namespace {

using polyattn::index_t;
namespace pb = polyattn::bench;
namespace ps = polyattn::sparse;

constexpr index_t kH = 8, kD = 128, kBlock = 64;
constexpr double kKeep = 0.10;

// ---- inputs -----------------------------------------------------------------------------------

void fill(std::vector<float>& x, std::size_t n, unsigned seed) {
  x.resize(n);
  unsigned s = seed;
  for (auto& e : x) {
    s = s * 1664525u + 1013904223u;
    e = -1.f + 2.f * static_cast<float>(s >> 8) / static_cast<float>(1u << 24);
  }
}

struct Data {
  index_t T = 0;
  std::vector<float> q, k, v, o;
};

// One problem alive at a time (T 32768 holds 512 MiB of q, k, v, o).
Data& data(index_t T) {
  static Data d;
  if (d.T != T) {
    const auto n = static_cast<std::size_t>(T * kH * kD);
    fill(d.q, n, 1);
    fill(d.k, n, 2);
    fill(d.v, n, 3);
    d.o.assign(n, 0.f);
    d.T = T;
  }
  return d;
}

polyattn::SoftmaxInputs inputs(const Data& d) {
  return {.q = polyattn::bthd<const float>(d.q.data(), 1, d.T, kH, kD),
          .k = polyattn::bthd<const float>(d.k.data(), 1, d.T, kH, kD),
          .v = polyattn::bthd<const float>(d.v.data(), 1, d.T, kH, kD)};
}

const polyattn::SoftmaxOptions kCausal{.causal = true};
const polyattn::SoftmaxOptions kFull{};

// ---- selector parameters for a kept fraction ----------------------------------------------------

// Causal blocks kept by a pattern that keeps min(qb + 1, per_row(qb)) blocks in row qb.
template <class F>
double kept_fraction(index_t nqb, F per_row) {
  double kept = 0, all = 0;
  for (index_t qb = 0; qb < nqb; ++qb) {
    kept += static_cast<double>(std::min(qb + 1, per_row(qb)));
    all += static_cast<double>(qb + 1);
  }
  return kept / all;
}

// The parameter p ≥ 0 whose pattern keeps the fraction closest to kKeep.
template <class F>
index_t parameter_for_keep(index_t nqb, F per_row_of) {
  index_t best = 0;
  double err = 2.0;
  for (index_t p = 0; p <= nqb; ++p) {
    const double e = std::abs(kept_fraction(nqb, per_row_of(p)) - kKeep);
    if (e < err) err = e, best = p;
  }
  return best;
}

ps::TopKSelector topk_for(index_t T) {
  const index_t nqb = T / kBlock;
  const index_t k =
      parameter_for_keep(nqb, [](index_t k) { return [k](index_t) { return 1 + k; }; });
  return {.block = kBlock, .top_k = k};
}

// Gate scores [1, H, nQB, nQB] for SeerAttention's selector (uniform in [-1, 1]); top-k keeps
// as many blocks per row as TopKSelector does.
struct SeerGate {
  std::vector<float> scores;
  ps::GateScoreSelector sel;
};
const SeerGate& seer_for(index_t T) {
  static std::map<index_t, SeerGate> gates;
  SeerGate& g = gates[T];
  if (g.scores.empty()) {
    const index_t nqb = T / kBlock;
    fill(g.scores, static_cast<std::size_t>(kH * nqb * nqb), 4);
    g.sel = {.block = kBlock,
             .scores = polyattn::View4<const float>::contiguous(g.scores.data(), {1, kH, nqb, nqb}),
             .rule = ps::GateScoreSelector::Rule::TopK,
             .top_k = topk_for(T).top_k};
  }
  return g;
}

// BlockRank's layout: instruction, documents and query of 512 tokens each.
constexpr index_t kDoc = 512;
polyattn::softmax::BlockRankLayout blockrank_for(index_t T) {
  std::vector<index_t> b;
  for (index_t x = 0; x < T; x += kDoc) b.push_back(x);
  b.push_back(T);
  return polyattn::softmax::BlockRankLayout({b});
}
double blockrank_pairs(index_t T) {  // per head
  double pairs = 0;
  for (index_t p = 0; p < T; ++p) {
    const index_t seg = p / kDoc, last = (T - 1) / kDoc;
    pairs += static_cast<double>(seg == 0 || seg == last ? p + 1 : kDoc + p - seg * kDoc + 1);
  }
  return pairs;
}

// CLEAR: the sequence a (T/256) × 256 grid, radius 16.
constexpr index_t kClearWidth = 256;
constexpr double kClearRadius = 16;
polyattn::softmax::ClearMask clear_for(index_t T) {
  return {.text = 0, .height = T / kClearWidth, .width = kClearWidth, .radius = kClearRadius};
}
double clear_pairs(index_t T) {  // per head
  const index_t H = T / kClearWidth, W = kClearWidth, r = static_cast<index_t>(kClearRadius);
  double pairs = 0;
  for (index_t y = 0; y < H; ++y)
    for (index_t x = 0; x < W; ++x)
      for (index_t dy = -r; dy <= r; ++dy)
        for (index_t dx = -r; dx <= r; ++dx)
          if (y + dy >= 0 && y + dy < H && x + dx >= 0 && x + dx < W &&
              static_cast<double>(dy * dy + dx * dx) < kClearRadius * kClearRadius)
            ++pairs;
  return pairs;
}

// Combiner: segments of 128; per head, the query at p sees p − sL + 1 direct keys and s summaries.
constexpr index_t kCombinerSegment = 128;
double combiner_pairs(index_t T) {  // per head
  double pairs = 0;
  for (index_t p = 0; p < T; ++p) {
    const index_t s = p / kCombinerSegment;
    pairs += static_cast<double>(p - s * kCombinerSegment + 1 + s);
  }
  return pairs;
}

// DHSA: chunk bounds of 32–256 tokens from a fixed LCG, a budget of 2048 keys per query block.
constexpr ps::DhsaOptions kDhsa{.block = kBlock, .budget = 2048, .local = 64, .sinks = 4};
std::vector<std::vector<index_t>> dhsa_bounds(index_t T) {
  std::vector<index_t> c{0};
  unsigned s = 7;
  while (c.back() < T) {
    s = s * 1664525u + 1013904223u;
    c.push_back(std::min<index_t>(T, c.back() + 32 + static_cast<index_t>((s >> 8) % 225)));
  }
  return {c};
}

ps::HipSelector hip_for(index_t T) {
  return {.block = kBlock, .top_k = std::max<index_t>(topk_for(T).top_k - 2, 1)};
}

ps::WindowSinkSelector window_for(index_t T) {
  const index_t nqb = T / kBlock;
  const index_t w = parameter_for_keep(nqb, [](index_t w) {
    return [w](index_t qb) { return w + (qb >= w ? 1 : 0); };  // [qb − w + 1, qb] ∪ {0}
  });
  return {.block = kBlock, .keep = {.diagonal = true, .sink_blocks = 1, .local_blocks = w}};
}

// ---- counting -----------------------------------------------------------------------------------

// Visible causal (query, key) pairs of one head under the mask (T = S, aligned).
double visible_pairs(const polyattn::BlockMask& m, index_t h, index_t T) {
  double pairs = 0;
  for (index_t qb = 0; qb < m.q_blocks(); ++qb)
    for (index_t kb = 0; kb <= qb && kb < m.k_blocks(); ++kb) {
      if (!m.visible(0, h, qb, kb)) continue;
      const index_t i0 = qb * kBlock, i1 = std::min(T, i0 + kBlock);
      const index_t j0 = kb * kBlock, j1 = std::min(T, j0 + kBlock);
      for (index_t i = i0; i < i1; ++i)
        pairs += static_cast<double>(std::max<index_t>(0, std::min(i + 1, j1) - j0));
    }
  return pairs;
}

double causal_blocks(index_t nqb) {
  return static_cast<double>(nqb) * static_cast<double>(nqb + 1) / 2;
}

std::map<std::pair<index_t, int>, double>& dense_seconds() {
  static std::map<std::pair<index_t, int>, double> m;
  return m;
}

template <class F>
void with_executor(int threads, F&& f) {
  if (threads > 1)
    f(pb::shared_pool());
  else
    f(polyattn::Serial{});
}

void set_counters(benchmark::State& st, double seconds, index_t T, double pairs, int threads) {
  pb::set_throughput_counters(st, seconds, static_cast<double>(T * kH), 4.0 * kD * pairs, threads);
  if (seconds > 0) st.counters["tokens/s"] = static_cast<double>(T) / seconds;
}

double causal_pairs(index_t T) {  // per head
  const double t = static_cast<double>(T);
  return t * (t + 1) / 2;
}

// speedup_vs_dense against the dense case keyed `base` (T: causal, −T: full), when it ran.
void set_speedup(benchmark::State& st, double seconds, index_t base, int threads) {
  if (const auto it = dense_seconds().find({base, threads}); it != dense_seconds().end())
    st.counters["speedup_vs_dense"] = it->second / seconds;
}

// selector_ms / selector_frac of a selection taking select_s, and the speedup over dense causal.
void set_selector_counters(benchmark::State& st, double seconds, double select_s, index_t T,
                           int threads) {
  st.counters["selector_ms"] = select_s * 1e3;
  st.counters["selector_frac"] = select_s / seconds;
  set_speedup(st, seconds, T, threads);
}

// Times run(exec) in the benchmark's loop on `threads` threads: seconds per iteration, 0 when it
// threw (the benchmark is then skipped with the error).
template <class Run>
double time_loop(benchmark::State& st, int threads, Run&& run) {
  double seconds = 0;
  with_executor(threads, [&](const auto& exec) {
    const pb::LoopTimer timer(threads);
    for (auto _ : st) {
      try {
        run(exec);
      } catch (const std::exception& e) {
        st.SkipWithError(e.what());
        break;
      }
      benchmark::ClobberMemory();
    }
    seconds = timer.per_iteration(st);
  });
  return seconds;
}

// A selection and the attention on it: select(exec) alone, best of 3 into select_s (outside the
// loop), then attend(exec) timed as time_loop does. 0 when either threw.
template <class Select, class Attend>
double time_selected(benchmark::State& st, int threads, double& select_s, Select&& select,
                     Attend&& attend) {
  select_s = 1e300;
  try {
    with_executor(threads, [&](const auto& exec) {
      for (int r = 0; r < 3; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        select(exec);
        select_s = std::min(select_s, pb::seconds_since(t0));
      }
    });
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    return 0;
  }
  return time_loop(st, threads, attend);
}

// ---- cases --------------------------------------------------------------------------------------
// Each case is bm_<name>(st, T, threads), or bm_sparse / bm_select of a selector.

template <bool causal>
void bm_dense(benchmark::State& st, index_t T, int threads) {
  Data& d = data(T);
  const auto in = inputs(d);
  const auto o = polyattn::bthd(d.o.data(), 1, T, kH, kD);
  const double seconds = time_loop(st, threads, [&](const auto& exec) {
    polyattn::softmax::flash_attention(in, causal ? kCausal : kFull, o, exec);
  });
  if (seconds > 0) dense_seconds()[{causal ? T : -T, threads}] = seconds;
  const double t = static_cast<double>(T);
  set_counters(st, seconds, T, kH * (causal ? causal_pairs(T) : t * t), threads);
}

// A fused-mask operator run(in, o, exec) with `pairs` visible (query, key) pairs per head, against
// the dense case keyed `base` (T: causal, −T: full) with base_pairs.
template <class Run>
void bm_fused(benchmark::State& st, Run run, index_t T, int threads, double pairs,
              double base_pairs, index_t base) {
  Data& d = data(T);
  const auto in = inputs(d);
  const auto o = polyattn::bthd(d.o.data(), 1, T, kH, kD);
  const double seconds = time_loop(st, threads, [&](const auto& exec) { run(in, o, exec); });
  if (seconds <= 0) return;
  set_counters(st, seconds, T, kH * pairs, threads);
  st.counters["kept_frac"] = pairs / base_pairs;
  set_speedup(st, seconds, base, threads);
}

void bm_blockrank(benchmark::State& st, index_t T, int threads) {
  const auto layout = blockrank_for(T);
  bm_fused(
      st,
      [&](const auto& in, const auto& o, const auto& exec) {
        polyattn::softmax::blockrank_attention(in, kCausal, layout, o, exec);
      },
      T, threads, blockrank_pairs(T), causal_pairs(T), T);
}

void bm_clear(benchmark::State& st, index_t T, int threads) {
  const double t = static_cast<double>(T);
  bm_fused(
      st,
      [&](const auto& in, const auto& o, const auto& exec) {
        polyattn::softmax::clear_attention(in, kFull, clear_for(T), o, exec);
      },
      T, threads, clear_pairs(T), t * t, -T);
}

// Combiner: the summaries (timed alone, as a selector) and the attention, against dense causal.
void bm_combiner(benchmark::State& st, index_t T, int threads) {
  Data& d = data(T);
  const auto in = inputs(d);
  const auto o = polyattn::bthd(d.o.data(), 1, T, kH, kD);
  const polyattn::softmax::CombinerConfig cfg{.segment = kCombinerSegment};
  namespace psm = polyattn::softmax;
  double summary_s = 0;
  const double seconds = time_selected(
      st, threads, summary_s,
      [&](const auto& exec) {
        benchmark::DoNotOptimize(psm::combiner_summaries(in, kCausal, cfg, exec));
      },
      [&](const auto& exec) {
        psm::combiner_attention(in, kCausal, psm::combiner_summaries(in, kCausal, cfg, exec), o,
                                exec);
      });
  if (seconds <= 0) return;
  const double pairs = combiner_pairs(T);
  set_counters(st, seconds, T, kH * pairs, threads);
  st.counters["kept_frac"] = pairs / causal_pairs(T);
  set_selector_counters(st, seconds, summary_s, T, threads);
}

// DHSA: the selection (timed alone, as a selector) and the attention, against dense causal.
void bm_dhsa(benchmark::State& st, index_t T, int threads) {
  Data& d = data(T);
  const auto in = inputs(d);
  const auto o = polyattn::bthd(d.o.data(), 1, T, kH, kD);
  const auto bounds = dhsa_bounds(T);
  ps::DhsaSelection sel;
  double select_s = 0;
  const double seconds = time_selected(
      st, threads, select_s,
      [&](const auto& exec) { sel = ps::dhsa_select(in, kDhsa, bounds, exec); },
      [&](const auto& exec) {
        ps::dhsa_attention(in, kCausal, ps::dhsa_select(in, kDhsa, bounds, exec), o, exec);
      });
  if (seconds <= 0) return;
  double pairs = 0;  // kept (query, key) pairs with j ≤ p, per head
  for (index_t qb = 0; qb < sel.nqb; ++qb) {
    const std::uint64_t* w = sel.bits.data() + qb * sel.words;
    double before = 0;  // kept keys in the words below p's
    index_t x = 0;
    for (index_t p = qb * kBlock; p < std::min(T, (qb + 1) * kBlock); ++p) {
      for (; (x + 1) * 64 <= p; ++x) before += std::popcount(w[x]);
      const int r = static_cast<int>(p % 64) + 1;
      pairs += before + std::popcount(r == 64 ? w[x] : w[x] & ((std::uint64_t{1} << r) - 1));
    }
  }
  set_counters(st, seconds, T, kH * pairs, threads);
  st.counters["kept_frac"] = pairs / causal_pairs(T);
  set_selector_counters(st, seconds, select_s, T, threads);
}

// Selected blocks / causal blocks of the mask.
double kept_blocks(const polyattn::BlockMask& mask) {
  double kept = 0;
  for (const auto b : mask.bytes()) kept += b;
  return kept / (kH * causal_blocks(mask.q_blocks()));
}

template <class Sel>
void bm_sparse(benchmark::State& st, Sel sel, index_t T, int threads) {
  Data& d = data(T);
  const auto in = inputs(d);
  const auto o = polyattn::bthd(d.o.data(), 1, T, kH, kD);
  polyattn::BlockMask mask;
  double select_s = 0;
  const double seconds = time_selected(
      st, threads, select_s,
      [&](const auto& exec) { sel.select(in, kCausal, mask, exec); },  // also sizes the mask
      [&](const auto& exec) { ps::sparse_attention(sel, in, kCausal, o, mask, exec); });
  if (seconds <= 0) return;
  double pairs = 0;
  for (index_t h = 0; h < kH; ++h) pairs += visible_pairs(mask, h, T);
  set_counters(st, seconds, T, pairs, threads);
  st.counters["kept_frac"] = kept_blocks(mask);
  set_selector_counters(st, seconds, select_s, T, threads);
}

template <class Sel>
void bm_select(benchmark::State& st, Sel sel, index_t T, int threads) {
  Data& d = data(T);
  const auto in = inputs(d);
  polyattn::BlockMask mask;
  const double seconds = time_loop(st, threads, [&](const auto& exec) {
    sel.select(in, kCausal, mask, exec);
    benchmark::DoNotOptimize(mask.bytes().data());
  });
  if (seconds <= 0) return;
  // No attention FLOPs here: tokens/s and ns_per_head_token only.
  st.counters["tokens/s"] = static_cast<double>(T) / seconds;
  st.counters["ns_per_head_token"] = seconds * 1e9 / static_cast<double>(T * kH);
  st.counters["kept_frac"] = kept_blocks(mask);
}

// ---- registration -------------------------------------------------------------------------------

std::string shape(index_t T, int threads) {
  return "B:1/H:" + std::to_string(kH) + "/T:" + std::to_string(T) + "/D:" + std::to_string(kD) +
         "/threads:" + std::to_string(threads);
}

template <class F>
void add(const std::string& name, F&& f) {
  benchmark::RegisterBenchmark(name.c_str(), std::forward<F>(f))
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

using Case = void (*)(benchmark::State&, index_t, int);

// The cases of one T and thread count, in this order (a dense case before those that compare
// with it).
void register_shape(index_t T, int threads) {
  const std::string s = "/" + shape(T, threads);
  const auto plain = [&](const std::string& name, Case bm) {
    add(name + s, [=](benchmark::State& st) { bm(st, T, threads); });
  };
  const auto sparse = [&](const std::string& name, auto sel) {
    add("sparse/" + name + s, [=](benchmark::State& st) { bm_sparse(st, sel, T, threads); });
  };
  const auto select = [&](const std::string& name, auto sel) {
    add("sparse-select/" + name + s, [=](benchmark::State& st) { bm_select(st, sel, T, threads); });
  };
  const auto topk = topk_for(T);
  const auto window = window_for(T);
  const auto hip = hip_for(T);
  const auto& seer = seer_for(T).sel;
  plain("sparse/dense-causal", bm_dense<true>);
  sparse("topk/keep:0.10", topk);
  sparse("window-sinks/keep:0.10", window);
  plain("sparse/dense-full", bm_dense<false>);
  sparse("seer-gate/keep:0.10", seer);
  plain("fused/blockrank/docs:512", bm_blockrank);
  plain("fused/clear/r:16", bm_clear);
  plain("fused/combiner/seg:128", bm_combiner);
  sparse("hip/keep:0.10", hip);
  plain("sparse/dhsa/budget:2048", bm_dhsa);
  select("topk", topk);
  select("window-sinks", window);
  select("seer-gate", seer);
  select("mass:0.9", ps::MassSelector{.block = kBlock, .gamma = 0.9});
  select("linear-topk", ps::LinearTopKSelector{.block = kBlock, .top_k = topk.top_k});
  select("hip", hip);
  select("power", ps::PowerSelector{.block = kBlock});
}

void register_all() {
  std::vector<int> thread_counts{1};
  if (pb::all_threads() > 1) thread_counts.push_back(pb::all_threads());
  for (const index_t T : {index_t{32768}, index_t{4096}})
    for (const int threads : thread_counts) register_shape(T, threads);
}

void print_figures() {
  pb::print_machine_figures();
  const char* isa = polyattn::simd::isa_name(polyattn::simd::best_arch());
  for (const index_t T : {index_t{32768}, index_t{4096}})
    std::fprintf(stderr,
                 "polyattn bench: T %lld: top_k %lld, window-sinks local_blocks %lld (keep %.2f of "
                 "causal blocks)\n",
                 static_cast<long long>(T), static_cast<long long>(topk_for(T).top_k),
                 static_cast<long long>(window_for(T).keep.local_blocks), kKeep);
  benchmark::AddCustomContext("kernel_isa", isa);
  benchmark::AddCustomContext("counter_time",
                              pb::time_base() == pb::TimeBase::cpu
                                  ? "thread CPU time (1 thread), real time (threads > 1)"
                                  : "real time");
}

}  // namespace

int main(int argc, char** argv) {
  // This binary's defaults go before the user's flags (which override them) and after the
  // project defaults that initialize() inserts.
  static std::string reps = "--benchmark_repetitions=1";
  std::vector<char*> args(argv, argv + argc);
  args.insert(args.begin() + 1, reps.data());
  if (!pb::initialize(static_cast<int>(args.size()), args.data())) return 2;
  print_figures();
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
