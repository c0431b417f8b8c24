// bench/bench_softmax.cpp — polyattn-bench-softmax: the softmax family at the docs/conventions.md
// §12 shapes.
//
//   prefill-softmax/causal/B:1/H:16/T:4096/D:128/threads:N          HQ = HKV = 16, 1 and all
//   threads prefill-softmax/causal-gqa/B:1/HQ:32/HKV:8/T:4096/D:128/threads:N   GQA, 1 and all
//   threads prefill-softmax/full/B:1/H:16/T:4096/D:128/threads:1            no mask (every tile
//   computed) prefill-softmax/window:512/B:1/H:16/T:8192/D:128/threads:1      causal sliding window
//   of 512:
//                                                                   the tiles outside the band are
//                                                                   skipped, so compare its
//                                                                   ns_per_head_token with the
//                                                                   T 8192 row of the sweep
//   prefill-softmax-long/causal/B:1/H:16/T:<T>/D:128/threads:1      T = 512 … 8192 (causal work
//                                                                   per token grows ∝ T)
//   decode-softmax/B:1/HQ:32/HKV:8/D:128/cache:<S>/threads:N        one query per sequence against
//                                                                   a KV cache of S = 8192 and
//                                                                   32768 tokens, 1 and all threads
//   prefill-softmax-bf16/causal/B:1/H:16/T:4096/D:128/threads:N     the causal MHA case with bf16
//                                                                   q, k, v, o (label: whether the
//                                                                   bf16-product path ran)
//   decode-softmax-{bf16,fp16,int8}/...                             the decode cases over a cache
//                                                                   of that element type
//                                                                   (cache_GB/s counts its bytes,
//                                                                   scales too)
// Every other case is fp32 with D = Dv = 128 and the default scale D^-0.5; inputs are uniform in
// [-1, 1]. The decode cases exist only when polyattn/softmax/decode.hpp is present; their cache
// (a contiguous KVCache, page_size 0, capacity S) is filled once (appended in chunks of 1024
// tokens) outside the timed loop, and each iteration is one flash_decode of a [B,1,HQ,D] query
// against the whole cache (the cache is not modified; no mask beyond the implied causality, so
// every key is read). The prefill cases time the whole flash_attention call, K/V packing
// included.
//
// Counters (bench_common.hpp; plain values from the time per iteration): tokens/s (B·T query
// tokens per second; decode: B per step), head_tokens/s and ns_per_head_token (a head-token is
// one query token of one query head: B·T·HQ per iteration), GFLOP/s (from the FLOP model
// below), peak_frac (GFLOP/s over threads × the measured single-thread peak FMA rate, printed
// at start-up on stderr and in the benchmark context). Decode adds:
//   cache_GB/s   bytes of K and V in the cache, B·S·HKV·(D + Dv)·4, read once per step / time
//   read_GB/s    measured_read_gbs(): a plain SIMD sum over a buffer of the cache's size on the
//                same number of threads — reading those bytes once as fast as a loop can
//   vs_stream    time per step / (cache bytes / read_GB/s): 1.0 means the step reads the cache
//                as fast as that streaming loop; > 1 is the distance from that bandwidth bound.
//
// Defaults: 3 repetitions, aggregates only (read the _median rows), min time 0.05 s, real time.
// Google Benchmark flags pass through (--benchmark_filter=prefill-softmax/causal/, ...), and
// POLYATTN_ISA=scalar|sse42|avx2|avx512 caps the ISA of the kernels and of the peak loop alike.
// --polyattn_time=cpu bases the counters of single-thread runs on the thread's CPU time (for
// machines shared with other work; the Time/CPU columns are Google Benchmark's as always).
//
// FLOP model. Per visible (query, key) pair and query head: 2·D for the score q·k and 2·Dv for
// p·v, so 4·D here (D = Dv). Exponentials, max/sum bookkeeping and the rescaling of the output
// accumulator are not counted. Only visible pairs are counted (query row i sits at key position
// p = i + S − T; here T = S):
//   non-causal   T·S pairs                    ⇒ 4·T·S·D·HQ
//   causal       T(T+1)/2 pairs (j ≤ p)       ⇒ 2·T(T+1)·D·HQ ≈ 2·T²·D·HQ (the usual causal
//                                               count, half the non-causal one)
//   window w     Σ_p min(p + 1, w) pairs      ⇒ ≈ 4·T·w·D·HQ for T ≫ w
//   decode       S pairs per query head       ⇒ 4·S·D·HQ per sequence and step
// The kernel computes the diagonal (partially masked) tiles in full, so masked-out entries it
// does compute are not credited: GFLOP/s and peak_frac are useful work only.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "polyattn/softmax/flash.hpp"

#include "polyattn/softmax/decode.hpp"

namespace {

using polyattn::index_t;
namespace pb = polyattn::bench;

constexpr index_t kD = 128, kDv = 128;

// Attention heads of a case: HQ query heads, HKV key/value heads (HQ = HKV without GQA).
struct Heads {
  index_t q, kv;
};

// ---- FLOP model (see the header comment) ------------------------------------------------------

// Visible (query, key) pairs of one sequence and one query head: T queries against S keys,
// query row i at key position p = i + S − T (polyattn/args/softmax.hpp).
double visible_pairs(index_t T, index_t S, bool causal, index_t window) {
  double pairs = 0;
  for (index_t i = 0; i < T; ++i) {
    const index_t p = i + S - T;
    index_t hi = S - 1, lo = 0;
    if (causal || window > 0) hi = std::min(hi, p);  // a window implies j ≤ p
    if (window > 0) lo = std::max<index_t>(lo, p - window + 1);
    if (hi >= lo) pairs += static_cast<double>(hi - lo + 1);
  }
  return pairs;
}

// ---- inputs ---------------------------------------------------------------------------------

// Uniform [lo, hi) from a fixed LCG: the first n values do not depend on the length asked for.
void fill(std::vector<float>& x, std::size_t n, float lo, float hi, unsigned seed) {
  x.resize(n);
  unsigned s = seed;
  for (auto& e : x) {
    s = s * 1664525u + 1013904223u;
    e = lo + (hi - lo) * static_cast<float>(s >> 8) / static_cast<float>(1u << 24);
  }
}

// Prefill buffers, grown to the largest case asked for so far; every case views a prefix (the
// values are random either way), so the cases allocate and fill once between them.
struct PrefillData {
  std::vector<float> q, k, v, o;
  std::vector<polyattn::bf16> qb, kb, vb, ob;  // the same values rounded to bf16
};

PrefillData& prefill_data(index_t T, Heads h) {
  static PrefillData d;
  const auto need = [](const std::vector<float>& x, index_t n) {
    return static_cast<std::size_t>(n) > x.size();
  };
  if (need(d.q, T * h.q * kD)) fill(d.q, static_cast<std::size_t>(T * h.q * kD), -1, 1, 1);
  if (need(d.k, T * h.kv * kD)) fill(d.k, static_cast<std::size_t>(T * h.kv * kD), -1, 1, 2);
  if (need(d.v, T * h.kv * kDv)) fill(d.v, static_cast<std::size_t>(T * h.kv * kDv), -1, 1, 3);
  if (need(d.o, T * h.q * kDv)) d.o.assign(static_cast<std::size_t>(T * h.q * kDv), 0.f);
  return d;
}

std::vector<polyattn::bf16> rounded(const std::vector<float>& x) {
  std::vector<polyattn::bf16> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = polyattn::bf16_from(x[i]);
  return out;
}

// prefill_data() with bf16 copies of q, k, v (and a bf16 o) of at least the same sizes.
PrefillData& prefill_data_bf16(index_t T, Heads h) {
  PrefillData& d = prefill_data(T, h);
  if (d.qb.size() < d.q.size()) d.qb = rounded(d.q);
  if (d.kb.size() < d.k.size()) d.kb = rounded(d.k);
  if (d.vb.size() < d.v.size()) d.vb = rounded(d.v);
  if (d.ob.size() < d.o.size()) d.ob.assign(d.o.size(), polyattn::bf16{});
  return d;
}

template <class F>
void with_executor(int threads, F&& f) {
  if (threads > 1)
    f(pb::shared_pool());
  else
    f(polyattn::Serial{});
}

void set_counters(benchmark::State& st, double seconds, double tokens, double head_tokens,
                  double flops, int threads) {
  pb::set_throughput_counters(st, seconds, head_tokens, flops, threads);
  if (seconds > 0) st.counters["tokens/s"] = tokens / seconds;
}

// ---- prefill --------------------------------------------------------------------------------

struct PrefillCase {
  Heads heads;
  index_t T;
  bool causal;
  index_t window;     // 0 = none
  bool bf16 = false;  // q, k, v and o in bf16 (else fp32)
};

void bm_prefill(benchmark::State& st, PrefillCase c, int threads) {
  const index_t B = 1, T = c.T;
  PrefillData& d = c.bf16 ? prefill_data_bf16(T, c.heads) : prefill_data(T, c.heads);
  polyattn::SoftmaxInputs in;
  polyattn::MutEView4 o;
  if (c.bf16) {
    in.q = polyattn::bthd<const polyattn::bf16>(d.qb.data(), B, T, c.heads.q, kD);
    in.k = polyattn::bthd<const polyattn::bf16>(d.kb.data(), B, T, c.heads.kv, kD);
    in.v = polyattn::bthd<const polyattn::bf16>(d.vb.data(), B, T, c.heads.kv, kDv);
    o = polyattn::bthd(d.ob.data(), B, T, c.heads.q, kDv);
  } else {
    in.q = polyattn::bthd<const float>(d.q.data(), B, T, c.heads.q, kD);
    in.k = polyattn::bthd<const float>(d.k.data(), B, T, c.heads.kv, kD);
    in.v = polyattn::bthd<const float>(d.v.data(), B, T, c.heads.kv, kDv);
    o = polyattn::bthd(d.o.data(), B, T, c.heads.q, kDv);
  }
  const polyattn::SoftmaxOptions opt{.causal = c.causal, .window = c.window};
  if (c.bf16)
    st.SetLabel(polyattn::softmax::uses_bf16_products(in) ? "bf16 products (AMX tiles)"
                                                          : "bf16 widened to fp32 products");
  double seconds = 0;
  with_executor(threads, [&](const auto& exec) {
    const pb::LoopTimer timer(threads);
    for (auto _ : st) {
      try {
        polyattn::softmax::flash_attention(in, opt, o, exec);
      } catch (const std::exception& e) {
        st.SkipWithError(e.what());
        break;
      }
      benchmark::ClobberMemory();
    }
    seconds = timer.per_iteration(st);
  });
  const double flops = 2.0 * (kD + kDv) * static_cast<double>(B * c.heads.q) *
                       visible_pairs(T, T, c.causal, c.window);
  set_counters(st, seconds, static_cast<double>(B * T), static_cast<double>(B * T * c.heads.q),
               flops, threads);
}

// ---- decode ---------------------------------------------------------------------------------

constexpr index_t kDecodeB = 1;
constexpr Heads kDecodeHeads{32, 8};

// Bytes of K and V held by a cache of S tokens of element type t (what one decode step must
// read; int8 rows add their two fp32 scales).
std::size_t cache_bytes(index_t S, polyattn::Dtype t = polyattn::Dtype::f32) {
  const auto rows = static_cast<std::size_t>(kDecodeB * S * kDecodeHeads.kv);
  return rows * (static_cast<std::size_t>(kD + kDv) * polyattn::element_size(t) +
                 (t == polyattn::Dtype::i8 ? 2 * sizeof(float) : 0));
}

// polyattn/softmax/kv_cache.hpp and decode.hpp.
namespace dec = polyattn::softmax;

// A cache of S tokens (B1, HKV 8, D = Dv = 128), filled once and kept for the cases that follow
// (one cache alive at a time: the 32768 one holds 256 MiB). Appended in chunks of 1024 tokens.
dec::KVCache& decode_cache(index_t S, polyattn::Dtype t) {
  static index_t held_S = -1;
  static polyattn::Dtype held_t = polyattn::Dtype::f32;
  static std::unique_ptr<dec::KVCache> cache;
  if (held_S == S && held_t == t) return *cache;
  cache.reset();
  held_S = -1;
  const index_t HKV = kDecodeHeads.kv;
  cache = std::make_unique<dec::KVCache>(kDecodeB, HKV, kD, kDv,
                                         dec::KVCacheOptions{.capacity = S, .dtype = t});
  constexpr index_t chunk = 1024;
  std::vector<float> k, v;
  for (index_t t0 = 0; t0 < S; t0 += chunk) {
    const index_t n = std::min(chunk, S - t0);
    const auto seed = static_cast<unsigned>(t0 / chunk);
    fill(k, static_cast<std::size_t>(kDecodeB * n * HKV * kD), -1, 1, 100 + 2 * seed);
    fill(v, static_cast<std::size_t>(kDecodeB * n * HKV * kDv), -1, 1, 101 + 2 * seed);
    cache->append(polyattn::bthd<const float>(k.data(), kDecodeB, n, HKV, kD),
                  polyattn::bthd<const float>(v.data(), kDecodeB, n, HKV, kDv));
  }
  held_S = S;
  held_t = t;
  return *cache;
}

void bm_decode(benchmark::State& st, index_t S, polyattn::Dtype t, int threads) {
  const index_t B = kDecodeB, HQ = kDecodeHeads.q;
  std::vector<float> q, o(static_cast<std::size_t>(B * HQ * kDv));
  fill(q, static_cast<std::size_t>(B * HQ * kD), -1, 1, 11);
  double seconds = 0;
  try {
    dec::KVCache& cache = decode_cache(S, t);
    const dec::DecodeInputs in{.q = polyattn::bthd<const float>(q.data(), B, 1, HQ, kD)};
    const polyattn::SoftmaxOptions opt{};
    const auto out = polyattn::bthd(o.data(), B, 1, HQ, kDv);
    with_executor(threads, [&](const auto& exec) {
      const pb::LoopTimer timer(threads);
      for (auto _ : st) {
        try {
          dec::flash_decode(in, cache, opt, out, exec);
        } catch (const std::exception& e) {
          st.SkipWithError(e.what());
          break;
        }
        benchmark::ClobberMemory();
      }
      seconds = timer.per_iteration(st);
    });
  } catch (const std::exception& e) {  // building the cache failed
    st.SkipWithError(e.what());
    return;
  }
  const double flops = 2.0 * (kD + kDv) * static_cast<double>(B * HQ) * static_cast<double>(S);
  set_counters(st, seconds, static_cast<double>(B), static_cast<double>(B * HQ), flops, threads);
  if (seconds <= 0) return;
  const double bytes = static_cast<double>(cache_bytes(S, t));
  const double bw = pb::measured_read_gbs(cache_bytes(S, t), threads);  // read-only rate
  st.counters["cache_GB/s"] = bytes / seconds * 1e-9;
  st.counters["read_GB/s"] = bw;
  st.counters["vs_stream"] = seconds / (bytes / (bw * 1e9));
}

// ---- registration ---------------------------------------------------------------------------

std::string heads_name(Heads h) {
  if (h.q == h.kv) return "H:" + std::to_string(h.q);
  return "HQ:" + std::to_string(h.q) + "/HKV:" + std::to_string(h.kv);
}

void add_prefill(const char* group, const char* variant, PrefillCase c, int threads) {
  const std::string name = std::string(group) + (c.bf16 ? "-bf16" : "") + "/" + variant + "/B:1/" +
                           heads_name(c.heads) + "/T:" + std::to_string(c.T) +
                           "/D:" + std::to_string(kD) + "/threads:" + std::to_string(threads);
  benchmark::RegisterBenchmark(name.c_str(),
                               [c, threads](benchmark::State& st) { bm_prefill(st, c, threads); })
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

void add_decode(index_t S, polyattn::Dtype t, int threads) {
  const std::string suffix =
      t == polyattn::Dtype::f32 ? "" : "-" + std::string(polyattn::dtype_name(t));
  const std::string name = "decode-softmax" + suffix + "/B:" + std::to_string(kDecodeB) + "/" +
                           heads_name(kDecodeHeads) + "/D:" + std::to_string(kD) +
                           "/cache:" + std::to_string(S) + "/threads:" + std::to_string(threads);
  benchmark::RegisterBenchmark(
      name.c_str(), [S, t, threads](benchmark::State& st) { bm_decode(st, S, t, threads); })
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
}

constexpr Heads kMha{16, 16}, kGqa{32, 8};
constexpr index_t kDecodeCaches[] = {8192, 32768};

void register_all() {
  const int all = pb::all_threads();

  // prefill-softmax: causal T 4096, MHA and GQA, 1 and all threads.
  for (const int threads : {1, all}) {
    if (threads == all && all == 1) continue;
    add_prefill("prefill-softmax", "causal", {kMha, 4096, true, 0}, threads);
    add_prefill("prefill-softmax", "causal-gqa", {kGqa, 4096, true, 0}, threads);
    // The same in bf16 (q, k, v, o): bf16 products where the CPU has AVX512-BF16.
    add_prefill("prefill-softmax", "causal", {kMha, 4096, true, 0, true}, threads);
  }
  // The same shape without a mask, and a sliding window that skips most tiles.
  add_prefill("prefill-softmax", "full", {kMha, 4096, false, 0}, 1);
  add_prefill("prefill-softmax", "window:512", {kMha, 8192, true, 512}, 1);

  // prefill-softmax-long: causal cost over T (inputs are prefixes of one allocation).
  for (const index_t T : {512, 1024, 2048, 4096, 8192})
    add_prefill("prefill-softmax-long", "causal", {kMha, T, true, 0}, 1);

  // decode-softmax: one query against a filled cache.
  // ... over fp32, bf16, fp16 and int8 caches (fp32 query and output).
  for (const polyattn::Dtype t :
       {polyattn::Dtype::f32, polyattn::Dtype::bf16, polyattn::Dtype::f16, polyattn::Dtype::i8})
    for (const index_t S : kDecodeCaches) {
      add_decode(S, t, 1);
      if (all > 1) add_decode(S, t, all);
    }
}

void print_figures() {
  pb::print_machine_figures();
  const char* isa = polyattn::simd::isa_name(polyattn::simd::best_arch());
  std::fprintf(stderr, "polyattn bench: kernels: %s (level %s)\n", isa,
               polyattn::simd::isa_name(polyattn::simd::runtime_isa()));
  const int all = pb::all_threads();
  for (const index_t S : kDecodeCaches) {
    const std::size_t bytes = cache_bytes(S);
    const double bw1 = pb::measured_read_gbs(bytes, 1);
    const double bwn = pb::measured_read_gbs(bytes, all);
    std::fprintf(stderr,
                 "polyattn bench: read stream (SIMD sum, bytes read / time) over the K+V "
                 "of cache %lld, %.1f MiB: %.1f GB/s 1 thread, %.1f GB/s %d threads\n",
                 static_cast<long long>(S), static_cast<double>(bytes) / (1 << 20), bw1, bwn, all);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f", bw1);
    benchmark::AddCustomContext("read_gbs_cache" + std::to_string(S) + "_1thread", buf);
    std::snprintf(buf, sizeof buf, "%.1f", bwn);
    benchmark::AddCustomContext("read_gbs_cache" + std::to_string(S) + "_all_threads", buf);
  }
  benchmark::AddCustomContext("kernel_isa", isa);
  benchmark::AddCustomContext("counter_time",
                              pb::time_base() == pb::TimeBase::cpu
                                  ? "thread CPU time (1 thread), real time (threads > 1)"
                                  : "real time");
}

}  // namespace

int main(int argc, char** argv) {
  if (!pb::initialize(argc, argv)) return 2;
  print_figures();
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
