// bench/bench_headline.cpp — the README's headline benchmark (polyattn-headline).
//
// Until the fast operators land (issues 3 and 4) this measures the naive double-precision
// references, which are the correctness baseline every fast kernel is compared against:
// linear-family presets and causal softmax at growing T, reported as head-tokens per second.
// Repetitions with medians by default; extra Google Benchmark flags are passed through.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "polyattn/reference/linear.hpp"
#include "polyattn/reference/softmax.hpp"

namespace {

using polyattn::index_t;

struct Inputs {
  index_t B = 1, T, H = 4, K = 64, V = 64;
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

void run_linear(benchmark::State& state, polyattn::LinearOptions opt) {
  Inputs in(state.range(0));
  std::vector<float> o(static_cast<std::size_t>(in.B * in.T * in.H * in.V));
  polyattn::LinearInputs args{.q = polyattn::bthd(in.q.data(), in.B, in.T, in.H, in.K),
                              .k = polyattn::bthd(in.k.data(), in.B, in.T, in.H, in.K),
                              .v = polyattn::bthd(in.v.data(), in.B, in.T, in.H, in.V)};
  if (opt.decay == polyattn::Decay::ScalarPerToken)
    args.g = polyattn::bth(in.g.data(), in.B, in.T, in.H);
  if (opt.decay == polyattn::Decay::VectorPerToken)
    args.gk = polyattn::bthd(in.gk.data(), in.B, in.T, in.H, in.K);
  if (opt.update == polyattn::Update::Delta)
    args.beta = polyattn::bth(in.beta.data(), in.B, in.T, in.H);
  const auto out = polyattn::bthd(o.data(), in.B, in.T, in.H, in.V);
  for (auto _ : state) {
    polyattn::reference::linear_recurrence<float>(args, opt, {.o = out});
    benchmark::DoNotOptimize(o.data());
  }
  state.counters["head_tokens/s"] = benchmark::Counter(
      static_cast<double>(in.B * in.T * in.H), benchmark::Counter::kIsIterationInvariantRate);
}

void run_softmax(benchmark::State& state) {
  Inputs in(state.range(0));
  std::vector<float> o(static_cast<std::size_t>(in.B * in.T * in.H * in.V));
  polyattn::SoftmaxInputs args{.q = polyattn::bthd(in.q.data(), in.B, in.T, in.H, in.K),
                               .k = polyattn::bthd(in.k.data(), in.B, in.T, in.H, in.K),
                               .v = polyattn::bthd(in.v.data(), in.B, in.T, in.H, in.V)};
  polyattn::SoftmaxOptions opt{.causal = true};
  const auto out = polyattn::bthd(o.data(), in.B, in.T, in.H, in.V);
  for (auto _ : state) {
    polyattn::reference::softmax_attention<float>(args, opt, out);
    benchmark::DoNotOptimize(o.data());
  }
  state.counters["head_tokens/s"] = benchmark::Counter(
      static_cast<double>(in.B * in.T * in.H), benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  using polyattn::Decay;
  using polyattn::Update;
  const struct {
    const char* name;
    polyattn::LinearOptions opt;
  } presets[] = {
      {"linear_attn", {}},
      {"simple_gla", {.decay = Decay::ScalarPerToken}},
      {"gla", {.decay = Decay::VectorPerToken}},
      {"delta_rule", {.update = Update::Delta, .qk_l2norm = true}},
      {"gated_delta_rule", {.decay = Decay::ScalarPerToken, .update = Update::Delta, .qk_l2norm = true}},
      {"kda", {.decay = Decay::VectorPerToken, .update = Update::Delta, .qk_l2norm = true}},
  };
  for (const auto& p : presets)
    benchmark::RegisterBenchmark((std::string("reference/") + p.name).c_str(), run_linear, p.opt)
        ->RangeMultiplier(4)
        ->Range(128, 2048)
        ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("reference/softmax_causal", run_softmax)
      ->RangeMultiplier(4)
      ->Range(128, 2048)
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  // Defaults: 3 repetitions, report medians; command-line flags override.
  std::vector<char*> args(argv, argv + argc);
  std::string reps = "--benchmark_repetitions=3", agg = "--benchmark_report_aggregates_only=true";
  std::string mintime = "--benchmark_min_time=0.05";
  args.insert(args.begin() + 1, {reps.data(), agg.data(), mintime.data()});
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 2;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
