// bench/bench_headline.cpp — the README's headline comparison (polyattn-headline).
//
// Every linear-family preset with its fast operators, Recurrent vs Chunked<64>, at growing T
// (B1 H4 K=V=128, fp32, one thread): ns per head-token (flat in T is the goal), head-tokens/s
// and the fraction of the measured peak FMA rate (printed at start-up). The softmax and sparse
// operators join this table when they land (issues 4–6); the full per-family suites are the
// polyattn-bench-* binaries. Defaults: 3 repetitions, medians; Google Benchmark flags pass through.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "bench_common.hpp"
#include "polyattn/linear/presets.hpp"

namespace {

using namespace polyattn;

struct Inputs {
  index_t B = 1, T, H = 4, K = 128, V = 128;
  std::vector<float> q, k, v, g, gk, beta;
  explicit Inputs(index_t t) : T(t) {
    auto fill = [](std::size_t n, float lo, float hi, unsigned seed) {
      std::vector<float> x(n);
      unsigned s = seed;
      for (auto& e : x) {
        s = s * 1664525u + 1013904223u;
        e = lo + (hi - lo) * static_cast<float>(s >> 8) / static_cast<float>(1u << 24);
      }
      return x;
    };
    const auto n = static_cast<std::size_t>(B * T * H);
    q = fill(n * K, -1, 1, 1);
    k = fill(n * K, -1, 1, 2);
    v = fill(n * V, -1, 1, 3);
    g = fill(n, -0.1f, 0, 4);
    gk = fill(n * K, -0.1f, 0, 5);
    beta = fill(n, 0, 1, 6);
  }
};

// FLOPs per head-token (see bench_linear.cpp for the model): recurrent 4KV / 6KV (delta),
// chunked C(K+V) + 4KV / C(3K+2V) + 6KV, + KV (recurrent) or KV/C (chunked) with a decay.
double flops_per_token(const LinearOptions& o, bool chunked, double C, double K, double V) {
  const bool delta = o.update == Update::Delta, decays = o.decay != Decay::None;
  if (!chunked) return (delta ? 6 : 4) * K * V + (decays ? K * V : 0);
  return (delta ? C * (3 * K + 2 * V) + 6 * K * V : C * (K + V) + 4 * K * V) +
         (decays ? K * V / C : 0);
}

template <class Algo, class Op>
void run(benchmark::State& state, Op op) {
  Inputs in(state.range(0));
  const LinearOptions opt = op.options();
  std::vector<float> o(static_cast<std::size_t>(in.B * in.T * in.H * in.V));
  LinearInputs args{.q = bthd(in.q.data(), in.B, in.T, in.H, in.K),
                    .k = bthd(in.k.data(), in.B, in.T, in.H, in.K),
                    .v = bthd(in.v.data(), in.B, in.T, in.H, in.V)};
  if (opt.decay == Decay::ScalarPerToken) args.g = bth(in.g.data(), in.B, in.T, in.H);
  if (opt.decay == Decay::VectorPerToken) args.gk = bthd(in.gk.data(), in.B, in.T, in.H, in.K);
  if (opt.update == Update::Delta) args.beta = bth(in.beta.data(), in.B, in.T, in.H);
  const auto out = bthd(o.data(), in.B, in.T, in.H, in.V);
  const bench::LoopTimer timer(1);
  for (auto _ : state) {
    op.template forward<Algo>(args, {.o = out});
    benchmark::DoNotOptimize(o.data());
  }
  const double head_tokens = static_cast<double>(in.B * in.T * in.H);
  const bool chunked = !std::is_same_v<Algo, Recurrent>;
  const double fl =
      flops_per_token(opt, chunked, 64, static_cast<double>(in.K), static_cast<double>(in.V));
  bench::set_throughput_counters(state, timer.per_iteration(state), head_tokens, head_tokens * fl,
                                 1);
}

template <class Op>
void add(const std::string& name, const Op& op) {
  for (const char* algo : {"recurrent", "chunked64"}) {
    auto* b = std::string(algo) == "recurrent"
                  ? benchmark::RegisterBenchmark(("headline/" + name + "/recurrent").c_str(),
                                                 run<Recurrent, Op>, op)
                  : benchmark::RegisterBenchmark(("headline/" + name + "/chunked64").c_str(),
                                                 run<Chunked<64>, Op>, op);
    b->RangeMultiplier(4)->Range(512, 8192)->Unit(benchmark::kMicrosecond)->UseRealTime();
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (!bench::initialize(argc, argv)) return 2;
  bench::print_machine_figures();
  const index_t H = 4;
  add("linear_attn", presets::linear_attn{});
  add("retention", presets::make_retention(H));
  add("simple_gla", presets::simple_gla{});
  add("gla", presets::gla{});
  add("delta_rule", presets::make_delta_rule());
  add("gated_delta_rule", presets::make_gated_delta_rule());
  add("kda", presets::make_kda());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
