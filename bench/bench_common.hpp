// bench/bench_common.hpp — machine figures and counters shared by the polyattn benchmarks.
//
//   measured_peak_gflops()        single-thread peak fp32 FMA rate (GFLOP/s), measured once by
//                                 an FMA loop over the best ISA that simd::dispatch picks
//   measured_peak_gflops_all_threads()  the same loop on every hardware thread at once, summed
//   peak_isa()                    the ISA that loop ran on
//   measured_stream_gbs(bytes, t) read+write bandwidth (GB/s, 1e9 B/s, counting every byte read
//                                 and every byte written) of a `bytes` buffer scaled in place,
//                                 split over t threads; best of several runs, cached per (bytes, t)
//   LoopTimer                     time per iteration of a benchmark's loop: real time, or with
//                                 --polyattn_time=cpu (parse_polyattn_flags) the thread's CPU
//                                 time for single-thread runs
//   set_throughput_counters(...)  head_tokens/s, ns_per_head_token, GFLOP/s, peak_frac
//   print_machine_figures()       the peak once on stderr and in the benchmark context
//
// The two SIMD loops (PeakFmaKernel, StreamScaleKernel) follow the arch-unit pattern of
// polyattn/core/simd/dispatch.hpp: their bodies are non-inline templates, declared extern for
// each unit ISA here and instantiated in bench/bench_common_units.cpp, which the bench target
// passes to polyattn_add_arch_units(... SOURCES bench_common_units.cpp). That unit defines
// POLYATTN_BENCH_KERNELS_ONLY so it sees only the kernels (no Google Benchmark, no statics).
#pragma once

#include <cstdint>

#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/dispatch.hpp"

namespace polyattn::bench {

// ---- SIMD loops (instantiated per ISA in bench_common_units.cpp) ------------------------------

struct FmaResult {
  double flops;  // floating-point operations done (an FMA counts 2)
  float sink;    // a value depending on every accumulator, so nothing is optimised away
};

// `iters` rounds of N independent fused multiply-adds acc_i ← acc_i·m + c on full batches.
// N covers FMA latency × pipes (4–5 cycles × 2 pipes on current x86 ⇒ ≥ 10 chains) while
// staying in registers: 12 of the 16 vector registers for SSE/AVX2, 24 of 32 for AVX-512.
// acc converges to c/(1 − m) = 1, so no value ever becomes subnormal or infinite.
struct PeakFmaKernel {
  using result_type = FmaResult;
  std::int64_t iters;
  template <simd::SimdArch A>
  FmaResult operator()(A) const;
};

template <simd::SimdArch A>
FmaResult PeakFmaKernel::operator()(A) const {
  using B = simd::batch_t<A>;
  constexpr int N =
      simd::ArchTraits<A>::vector_registers >= 32 && simd::ArchTraits<A>::width > 1 ? 24 : 12;
  B acc[N];
  for (int i = 0; i < N; ++i) acc[i] = B(1.f + 1e-3f * static_cast<float>(i));
  const B m(0.999f), c(0.001f);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < N; ++i) acc[i] = simd::fma(acc[i], m, c);
  }
  B s = acc[0];
  for (int i = 1; i < N; ++i) s += acc[i];
  return {2.0 * N * static_cast<double>(B::size) * static_cast<double>(iters), simd::reduce_add(s)};
}

// x[i] ← s·x[i] for i in [0, n): one read and one write of every element.
struct StreamScaleKernel {
  float* x;
  std::int64_t n;
  float s;
  template <simd::SimdArch A>
  void operator()(A) const;
};

template <simd::SimdArch A>
void StreamScaleKernel::operator()(A) const {
  using B = simd::batch_t<A>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  const B sb(s);
  std::int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    const B a0 = B::load_unaligned(x + i), a1 = B::load_unaligned(x + i + W);
    const B a2 = B::load_unaligned(x + i + 2 * W), a3 = B::load_unaligned(x + i + 3 * W);
    (a0 * sb).store_unaligned(x + i);
    (a1 * sb).store_unaligned(x + i + W);
    (a2 * sb).store_unaligned(x + i + 2 * W);
    (a3 * sb).store_unaligned(x + i + 3 * W);
  }
  for (; i < n; ++i) x[i] *= s;
}

// Σ x[i] for i in [0, n) with four accumulators: every element read once, nothing written.
struct StreamReadKernel {
  using result_type = float;
  const float* x;
  std::int64_t n;
  template <simd::SimdArch A>
  float operator()(A) const;
};

template <simd::SimdArch A>
float StreamReadKernel::operator()(A) const {
  using B = simd::batch_t<A>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  B a0(0.f), a1(0.f), a2(0.f), a3(0.f);
  std::int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    a0 += B::load_unaligned(x + i);
    a1 += B::load_unaligned(x + i + W);
    a2 += B::load_unaligned(x + i + 2 * W);
    a3 += B::load_unaligned(x + i + 3 * W);
  }
  float s = simd::reduce_add((a0 + a1) + (a2 + a3));
  for (; i < n; ++i) s += x[i];
  return s;
}

}  // namespace polyattn::bench

// The measuring loops, instantiated per ISA in bench_common_units.cpp.
#define POLYATTN_BENCH_KERNELS(X)     \
  X(::polyattn::bench::PeakFmaKernel) \
  X(::polyattn::bench::StreamScaleKernel) X(::polyattn::bench::StreamReadKernel)
POLYATTN_BENCH_KERNELS(POLYATTN_KERNEL_EXTERN)

#ifndef POLYATTN_BENCH_KERNELS_ONLY

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "polyattn/core/executor.hpp"

namespace polyattn::bench {

// ---- machine figures ---------------------------------------------------------------------

// Threads of the "all threads" variants.
inline int all_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

// One pool of all_threads() for every benchmark (built on first use).
inline const ThreadPool& shared_pool() {
  static ThreadPool pool(all_threads());
  return pool;
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

inline simd::Isa peak_isa() {
  return simd::best_arch();
}

// Single-thread peak fp32 FMA rate in GFLOP/s: rounds calibrated to ≈ 50 ms, best of 7 runs.
inline double measured_peak_gflops() {
  static const double gflops = [] {
    volatile float sink = 0.f;
    std::int64_t iters = 1 << 16;
    for (;;) {  // calibrate (also warms the core up to its working clock)
      const auto t0 = std::chrono::steady_clock::now();
      sink = sink + simd::run_kernel(PeakFmaKernel{iters}).sink;
      if (seconds_since(t0) > 0.02 || iters > (std::int64_t{1} << 40)) break;
      iters *= 2;
    }
    iters *= 2;
    double best = 0.0;
    for (int run = 0; run < 7; ++run) {
      const auto t0 = std::chrono::steady_clock::now();
      const FmaResult r = simd::run_kernel(PeakFmaKernel{iters});
      const double s = seconds_since(t0);
      sink = sink + r.sink;
      best = std::max(best, r.flops / s * 1e-9);
    }
    return best;
  }();
  return gflops;
}

// The same FMA loop on all_threads() threads at once (shared_pool()), GFLOP/s summed: what the
// cores sustain together (all-core clocks, shared power), the ceiling of multi-thread scaling.
// Rounds of ≈ 50 ms per thread, best of 5 runs.
inline double measured_peak_gflops_all_threads() {
  static const double gflops = [] {
    const int n = all_threads();
    if (n == 1) return measured_peak_gflops();
    const double flops_per_iter = simd::run_kernel(PeakFmaKernel{1}).flops;
    const auto iters = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(measured_peak_gflops() * 1e9 * 0.05 / flops_per_iter));
    const double total = static_cast<double>(n) * static_cast<double>(iters) * flops_per_iter;
    std::vector<float> sinks(static_cast<std::size_t>(n));
    volatile float sink = 0.f;
    double best = 0.0;
    for (int run = 0; run < 6; ++run) {  // the first warms every core up
      const auto t0 = std::chrono::steady_clock::now();
      shared_pool().parallel_for(n, [&](auto i) {
        sinks[static_cast<std::size_t>(i)] = simd::run_kernel(PeakFmaKernel{iters}).sink;
      });
      const double s = seconds_since(t0);
      for (float f : sinks) sink = sink + f;
      if (run > 0) best = std::max(best, total / s * 1e-9);
    }
    return best;
  }();
  return gflops;
}

// Read+write bandwidth (GB/s) of scaling a `bytes` buffer in place, the buffer split into
// `threads` contiguous parts run on shared_pool() (threads > 1) or the caller. Each run scales
// by s then by 1/s alternately (values stay put); best of 31 runs after 2 warm-up passes.
inline double measured_stream_gbs(std::size_t bytes, int threads = 1) {
  static std::map<std::pair<std::size_t, int>, double> cache;
  const auto key = std::make_pair(bytes, threads);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const auto n = static_cast<std::int64_t>(bytes / sizeof(float));
  std::vector<float> buf(static_cast<std::size_t>(n), 1.f);
  const std::int64_t parts = std::max(1, threads);
  auto pass = [&](float s) {
    auto part = [&](std::int64_t p) {
      const std::int64_t b = n * p / parts, e = n * (p + 1) / parts;
      simd::run_kernel(StreamScaleKernel{buf.data() + b, e - b, s});
    };
    if (parts > 1)
      shared_pool().parallel_for(parts, part);
    else
      part(0);
  };
  pass(1.f);
  pass(1.f);
  double best_s = 1e300;
  for (int run = 0; run < 31; ++run) {
    const auto t0 = std::chrono::steady_clock::now();
    pass(run % 2 ? 1.f / 1.25f : 1.25f);
    best_s = std::min(best_s, seconds_since(t0));
  }
  benchmark::DoNotOptimize(buf.data());
  const double gbs = 2.0 * static_cast<double>(n) * sizeof(float) / best_s * 1e-9;
  cache.emplace(key, gbs);
  return gbs;
}

// Read-only bandwidth (GB/s, bytes read / time) of summing a `bytes` buffer, split into
// `threads` contiguous parts as measured_stream_gbs does; best of 31 runs after 2 warm-ups.
// The baseline for kernels that only read their operand once (softmax decode over a KV cache).
inline double measured_read_gbs(std::size_t bytes, int threads = 1) {
  static std::map<std::pair<std::size_t, int>, double> cache;
  const auto key = std::make_pair(bytes, threads);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const auto n = static_cast<std::int64_t>(bytes / sizeof(float));
  std::vector<float> buf(static_cast<std::size_t>(n), 1.f);
  const std::int64_t parts = std::max(1, threads);
  std::vector<float> sums(static_cast<std::size_t>(parts));
  auto pass = [&] {
    auto part = [&](std::int64_t p) {
      const std::int64_t b = n * p / parts, e = n * (p + 1) / parts;
      sums[static_cast<std::size_t>(p)] = simd::run_kernel(StreamReadKernel{buf.data() + b, e - b});
    };
    if (parts > 1)
      shared_pool().parallel_for(parts, part);
    else
      part(0);
  };
  pass();
  pass();
  double best_s = 1e300;
  for (int run = 0; run < 31; ++run) {
    const auto t0 = std::chrono::steady_clock::now();
    pass();
    best_s = std::min(best_s, seconds_since(t0));
    benchmark::DoNotOptimize(sums.data());
  }
  const double gbs = static_cast<double>(n) * sizeof(float) / best_s * 1e-9;
  cache.emplace(key, gbs);
  return gbs;
}

// Prints the peak once on stderr (stdout stays clean for --benchmark_format=json) and puts it
// into the benchmark context (the header of the console output, "context" of the JSON).
inline void print_machine_figures() {
  const double peak = measured_peak_gflops();
  const char* isa = simd::isa_name(peak_isa());
  const double all = measured_peak_gflops_all_threads();
  std::fprintf(stderr,
               "polyattn bench: measured peak fp32 FMA, 1 thread, %s: %.1f GFLOP/s; all %d "
               "threads at once: %.1f GFLOP/s (%.1f× one thread, the ceiling of thread scaling)\n",
               isa, peak, all_threads(), all, all / peak);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", peak);
  benchmark::AddCustomContext("peak_fp32_gflops_1thread", buf);
  std::snprintf(buf, sizeof buf, "%.1f", all);
  benchmark::AddCustomContext("peak_fp32_gflops_all_threads", buf);
  benchmark::AddCustomContext("peak_isa", isa);
  benchmark::AddCustomContext("threads_all", std::to_string(all_threads()));
}

// ---- counters -----------------------------------------------------------------------------

// Which clock the counters use. Real time by default (what a user waits for). With
// --polyattn_time=cpu, single-thread runs use the calling thread's CPU time instead, which does
// not count time the thread was descheduled: steadier on a machine shared with other work.
// Multi-thread runs always use real time.
enum class TimeBase { real, cpu };

inline TimeBase& time_base() {
  static TimeBase base = TimeBase::real;
  return base;
}

// Takes --polyattn_time=real|cpu out of the arguments (before benchmark::Initialize).
// Returns false (after a message on stderr) for an unknown value.
inline bool parse_polyattn_flags(std::vector<char*>& args) {
  const std::string flag = "--polyattn_time=";
  for (auto it = args.begin(); it != args.end();) {
    const std::string a = *it;
    if (a.rfind(flag, 0) != 0) {
      ++it;
      continue;
    }
    const std::string v = a.substr(flag.size());
    if (v == "real") {
      time_base() = TimeBase::real;
    } else if (v == "cpu") {
      time_base() = TimeBase::cpu;
    } else {
      std::fprintf(stderr, "unknown value in %s (expected real or cpu)\n", a.c_str());
      return false;
    }
    it = args.erase(it);
  }
  return true;
}

inline double thread_cpu_seconds() {
#if defined(__unix__) || defined(__APPLE__)
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
#else
  return static_cast<double>(std::clock()) / CLOCKS_PER_SEC;
#endif
}

// Time of a benchmark's measuring loop, taken around `for (auto _ : state)`. The counters below
// are plain values computed from it, not Google Benchmark rate counters (whose console form
// appends "/s" or "s" to every value, e.g. "ns_per_head_token=4.4ks").
class LoopTimer {
 public:
  explicit LoopTimer(int threads)
      : cpu_(threads <= 1 && time_base() == TimeBase::cpu),
        real0_(std::chrono::steady_clock::now()),
        cpu0_(cpu_ ? thread_cpu_seconds() : 0.0) {}
  // Seconds per iteration since construction (0 when no iteration ran).
  double per_iteration(const benchmark::State& state) const {
    const auto iters = static_cast<double>(state.iterations());
    if (iters <= 0) return 0.0;
    return (cpu_ ? thread_cpu_seconds() - cpu0_ : seconds_since(real0_)) / iters;
  }

 private:
  bool cpu_;
  std::chrono::steady_clock::time_point real0_;
  double cpu0_;
};

// Per iteration: `head_tokens` (B·T·HV) processed with `flops` floating-point operations on
// `threads` threads, in `seconds` (LoopTimer::per_iteration):
//   head_tokens/s       B·T·HV per second
//   ns_per_head_token   seconds / (B·T·HV), in ns
//   GFLOP/s             flops / seconds / 1e9
//   peak_frac           GFLOP/s / (threads · measured_peak_gflops())
inline void set_throughput_counters(benchmark::State& state, double seconds, double head_tokens,
                                    double flops, int threads) {
  if (seconds <= 0) return;
  state.counters["head_tokens/s"] = head_tokens / seconds;
  state.counters["ns_per_head_token"] = seconds * 1e9 / head_tokens;
  state.counters["GFLOP/s"] = flops / seconds * 1e-9;
  state.counters["peak_frac"] = flops / seconds * 1e-9 / (measured_peak_gflops() * threads);
}

// Google Benchmark start-up shared by the bench binaries: the --polyattn_* flags, then the
// project defaults (3 repetitions, aggregates only, min time 0.05 s) placed before the user's
// own flags so those override them. Returns false on a bad flag (exit status 2).
inline bool initialize(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  if (!parse_polyattn_flags(args)) return false;
  static std::string reps = "--benchmark_repetitions=3";
  static std::string agg = "--benchmark_report_aggregates_only=true";
  static std::string mintime = "--benchmark_min_time=0.05";
  args.insert(args.begin() + 1, {reps.data(), agg.data(), mintime.data()});
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  return !benchmark::ReportUnrecognizedArguments(n, args.data());
}

}  // namespace polyattn::bench

#endif  // POLYATTN_BENCH_KERNELS_ONLY
