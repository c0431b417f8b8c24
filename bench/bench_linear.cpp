// bench/bench_linear.cpp — polyattn-bench-linear: the linear family at the docs/conventions.md §12
// shapes.
//
//   prefill-linear/<preset>/<algo>/T:4096/threads:N   B1 H16 K=V=128, every preset, recurrent and
//                                                     chunked64; gated_delta_rule also chunked
//                                                     16/32/128 and all threads, kda chunked
//                                                     32/128
//   prefill-linear-bf16/<gdn|kda>/chunked{32,64,128}/... the same with bf16 q, k, v and o, 1
//                                                     and all threads (conversion in the kernels)
//   prefill-long/<preset>/<algo>/T:<T>/threads:1      gated_delta_rule and gla, T = 512 … 65536
//                                                     (ns_per_head_token should stay flat)
//   prefill-short/<preset>/parallel/T:512/threads:1   the masked T×T form, for comparison
//   decode-linear/<preset>/step/B:8/threads:N         one token, B8 H16 K=V=128, the state
//                                                     [B,H,K,V] read and written in place
//   short-conv/<prefill|step>/.../threads:N           the short causal depthwise convolution
//                                                     before a GDN block (conv/short_conv.hpp):
//                                                     D 8192 (q, k, v of H16 K=V=128 and more),
//                                                     W 4, SiLU; prefill B1 T4096, step B8 with
//                                                     the states in place; GB/s of x read + y
//                                                     written (the op is memory-bound)
//   steep-gates/<preset>/<algo>/g:<x>/threads:1       gated_delta_rule and gla at T 4096 with
//                                                     every log-gate = x (−0.1, −10, −80): decays
//                                                     that underflow must cost no more than
//                                                     ordinary ones (no subnormal arithmetic)
// chunked* and parallel cases exist only when polyattn/linear/chunked.hpp is present.
//
// Counters (bench_common.hpp; plain values from the time per iteration): head_tokens/s
// (B·T·H per iteration), ns_per_head_token, GFLOP/s (from the FLOP model below, per algorithm),
// peak_frac (GFLOP/s over threads × the measured single-thread peak FMA rate, printed at
// start-up on stderr and in the benchmark context). Decode adds state_GB/s (2 × state bytes per
// step / time), stream_GB/s (a plain scale-in-place loop over a buffer of the state's size on
// the same number of threads) and vs_stream = time per step / (2 × state bytes / stream_GB/s):
// 1.0 means the step moves the state as fast as a streaming loop can.
//
// Defaults: 3 repetitions, aggregates only (read the _median rows), min time 0.05 s, real time.
// Google Benchmark flags pass through (--benchmark_filter=prefill-linear/gated, ...), and
// POLYATTN_ISA=scalar|sse42|avx2|avx512 caps the ISA of the kernels and of the peak loop alike.
// --polyattn_time=cpu bases the counters of single-thread runs on the thread's CPU time (for
// machines shared with other work; the Time/CPU columns are Google Benchmark's as always).
//
// FLOP model, per head-token (one token of one value head), K = key dim, V = value dim. It
// counts the products the algorithm must do, with causal (masked) C×C products as their lower
// triangle (≈ C²/2 entries), so masked-out entries do not inflate GFLOP/s and peak_frac; O(K+V)
// vector work per token (norms, gate exponentials, u = β(v − p)) is not counted.
//   Recurrent   state products 2·K·V each: Sᵀq and the rank-1 update k uᵀ (additive: 2
//               products), plus Sᵀk for the delta rule (3 products); + K·V for the decay of S
//               when the preset decays.  ⇒ additive 4KV (+KV) · delta 6KV (+KV)
//   Chunked<C>  the chunk form (Lightning Attention / fla), per chunk of C tokens:
//               additive      QKᵀ (causal) C²K, (QKᵀ⊙Γ)V C²V, QS 2CKV, S += KᵀV 2CKV
//                             ⇒ C(K+V) + 4KV per token
//               delta (WY/UT) KKᵀ (strictly lower) C²K, forward substitution of
//                             (I + tril(diag(β) KKᵀ⊙Γ, −1)) [U | W] = [βV | βK] C²(V+K),
//                             U −= W·S 2CKV, QS 2CKV, QKᵀ (causal) C²K, (QKᵀ⊙Γ)U C²V,
//                             S += KᵀU 2CKV  ⇒ C(3K+2V) + 6KV per token
//               + K·V/C per token for the chunk's decay of S when the preset decays.
//               (Forming the inverse explicitly, as the UT transform is usually written, would
//               add ≈ C³/3 per chunk; the substitution does not need it.)
//   Parallel    the chunk form with a single chunk of C = T tokens.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include "bench_common.hpp"
#include "polyattn/conv/short_conv.hpp"
#include "polyattn/linear/presets.hpp"

#include "polyattn/linear/chunked.hpp"

namespace {

using polyattn::index_t;
namespace pb = polyattn::bench;

constexpr index_t kH = 16, kK = 128, kV = 128;
constexpr index_t kDecodeB = 8;

// ---- FLOP model (see the header comment) ------------------------------------------------------

bool decays(const polyattn::LinearOptions& o) {
  return o.decay != polyattn::Decay::None;
}
bool delta(const polyattn::LinearOptions& o) {
  return o.update == polyattn::Update::Delta;
}

double recurrent_flops(const polyattn::LinearOptions& o, double K, double V) {
  return 2.0 * K * V * (delta(o) ? 3 : 2) + (decays(o) ? K * V : 0.0);
}

double chunk_flops(const polyattn::LinearOptions& o, double K, double V, double C) {
  const double state = decays(o) ? K * V / C : 0.0;
  if (delta(o)) return C * (3 * K + 2 * V) + 6 * K * V + state;
  return C * (K + V) + 4 * K * V + state;
}

template <class Alg>
double flops_per_head_token(const polyattn::LinearOptions& o, index_t T) {
  const double K = static_cast<double>(kK), V = static_cast<double>(kV);
  if constexpr (std::is_same_v<Alg, polyattn::Recurrent>) {
    return recurrent_flops(o, K, V);
  } else if constexpr (std::is_same_v<Alg, polyattn::Parallel>) {
    return chunk_flops(o, K, V, static_cast<double>(T));
  } else {
    return chunk_flops(o, K, V, Alg::chunk);
  }
}

template <class Alg>
std::string algo_name() {
  if constexpr (std::is_same_v<Alg, polyattn::Recurrent>)
    return "recurrent";
  else if constexpr (std::is_same_v<Alg, polyattn::Parallel>)
    return "parallel";
  else
    return "chunked" + std::to_string(Alg::chunk);
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

// Prefill inputs B1 H16 K=V=128 for the longest T asked for so far; shorter runs use a prefix
// ([1,T,H,D] row-major is the first T·H·D floats), so the prefill-long sweep allocates once
// (2.5 GiB at T 65536 with gk). q, k, v in [-1,1], g and gk in [-0.1,0], beta in [0,1].
struct PrefillData {
  index_t T = 0, T_gk = 0;
  std::vector<float> q, k, v, g, beta, gk, o;
  std::vector<polyattn::bf16> qb, kb, vb, ob;  // q, k, v rounded to bf16, and a bf16 o
};

std::vector<polyattn::bf16> to_bf16(const std::vector<float>& x) {
  std::vector<polyattn::bf16> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = polyattn::bf16_from(x[i]);
  return out;
}

PrefillData& prefill_data(index_t T, bool need_gk) {
  static PrefillData d;
  const auto rows = [](index_t t) { return static_cast<std::size_t>(t * kH); };
  if (T > d.T) {
    d.T = T;
    fill(d.q, rows(T) * kK, -1, 1, 1);
    fill(d.k, rows(T) * kK, -1, 1, 2);
    fill(d.v, rows(T) * kV, -1, 1, 3);
    fill(d.g, rows(T), -0.1f, 0, 4);
    fill(d.beta, rows(T), 0, 1, 6);
    d.o.assign(rows(T) * kV, 0.f);
  }
  if (need_gk && T > d.T_gk) {
    d.T_gk = d.T;
    fill(d.gk, rows(d.T) * kK, -0.1f, 0, 5);
  }
  return d;
}

// The tensors a preset needs (exactly those: stray gates are an error).
template <class Op>
polyattn::LinearInputs inputs_for(const Op& op, const std::vector<float>& q,
                                  const std::vector<float>& k, const std::vector<float>& v,
                                  const std::vector<float>& g, const std::vector<float>& gk,
                                  const std::vector<float>& beta, index_t B, index_t T) {
  const polyattn::LinearOptions o = op.options();
  polyattn::LinearInputs in{.q = polyattn::bthd(q.data(), B, T, kH, kK),
                            .k = polyattn::bthd(k.data(), B, T, kH, kK),
                            .v = polyattn::bthd(v.data(), B, T, kH, kV)};
  if (o.decay == polyattn::Decay::ScalarPerToken) in.g = polyattn::bth(g.data(), B, T, kH);
  if (o.decay == polyattn::Decay::VectorPerToken) in.gk = polyattn::bthd(gk.data(), B, T, kH, kK);
  if (delta(o)) in.beta = polyattn::bth(beta.data(), B, T, kH);
  return in;
}

template <class F>
void with_executor(int threads, F&& f) {
  if (threads > 1)
    f(pb::shared_pool());
  else
    f(polyattn::Serial{});
}

// ---- benchmarks -----------------------------------------------------------------------------

// bf16: q, k, v and o in bf16 (states, gates, beta fp32), converted in the kernels.
template <class Alg, class Op>
void bm_prefill(benchmark::State& st, const Op& op, index_t T, int threads, bool bf16 = false) {
  const polyattn::LinearOptions opt = op.options();
  PrefillData& d = prefill_data(T, opt.decay == polyattn::Decay::VectorPerToken);
  polyattn::LinearInputs in = inputs_for(op, d.q, d.k, d.v, d.g, d.gk, d.beta, 1, T);
  std::vector<float> ht(static_cast<std::size_t>(kH * kK * kV));
  polyattn::LinearOutputs<float> out{.o = polyattn::bthd(d.o.data(), 1, T, kH, kV),
                                     .final_state = polyattn::bhkv(ht.data(), 1, kH, kK, kV)};
  if (bf16) {
    if (d.qb.size() < d.q.size()) d.qb = to_bf16(d.q), d.kb = to_bf16(d.k), d.vb = to_bf16(d.v);
    if (d.ob.size() < d.o.size()) d.ob.assign(d.o.size(), polyattn::bf16{});
    in.q = polyattn::bthd<const polyattn::bf16>(d.qb.data(), 1, T, kH, kK);
    in.k = polyattn::bthd<const polyattn::bf16>(d.kb.data(), 1, T, kH, kK);
    in.v = polyattn::bthd<const polyattn::bf16>(d.vb.data(), 1, T, kH, kV);
    out.o = polyattn::bthd(d.ob.data(), 1, T, kH, kV);
  }
  double seconds = 0;
  with_executor(threads, [&](const auto& exec) {
    const pb::LoopTimer timer(threads);
    for (auto _ : st) {
      try {
        op.template forward<Alg>(in, out, {}, exec);
      } catch (const std::exception& e) {
        st.SkipWithError(e.what());
        break;
      }
      benchmark::ClobberMemory();
    }
    seconds = timer.per_iteration(st);
  });
  const double head_tokens = static_cast<double>(T * kH);
  pb::set_throughput_counters(st, seconds, head_tokens,
                              head_tokens * flops_per_head_token<Alg>(opt, T), threads);
}

// prefill at T with every log-gate equal to `log_gate` (g or gk, whichever the preset reads).
template <class Alg, class Op>
void bm_steep(benchmark::State& st, const Op& op, index_t T, float log_gate) {
  const polyattn::LinearOptions opt = op.options();
  PrefillData& d = prefill_data(T, false);
  const std::size_t rows = static_cast<std::size_t>(T * kH);
  const std::vector<float> g(rows, log_gate), gk(rows * kK, log_gate);
  const polyattn::LinearInputs in = inputs_for(op, d.q, d.k, d.v, g, gk, d.beta, 1, T);
  std::vector<float> ht(static_cast<std::size_t>(kH * kK * kV));
  const polyattn::LinearOutputs<float> out{.o = polyattn::bthd(d.o.data(), 1, T, kH, kV),
                                           .final_state = polyattn::bhkv(ht.data(), 1, kH, kK, kV)};
  const pb::LoopTimer timer(1);
  for (auto _ : st) {
    try {
      op.template forward<Alg>(in, out);
    } catch (const std::exception& e) {
      st.SkipWithError(e.what());
      break;
    }
    benchmark::ClobberMemory();
  }
  const double seconds = timer.per_iteration(st);
  const double head_tokens = static_cast<double>(T * kH);
  pb::set_throughput_counters(st, seconds, head_tokens,
                              head_tokens * flops_per_head_token<Alg>(opt, T), 1);
}

// The short convolution: B sequences of T tokens, D channels, width 4, SiLU, states in place.
void bm_short_conv(benchmark::State& st, index_t B, index_t T, int threads) {
  constexpr index_t D = 8192, W = 4;
  std::vector<float> x, w, bias, state, y(static_cast<std::size_t>(B * T * D));
  fill(x, static_cast<std::size_t>(B * T * D), -1, 1, 21);
  fill(w, static_cast<std::size_t>(D * W), -0.5f, 0.5f, 22);
  fill(bias, static_cast<std::size_t>(D), -0.1f, 0.1f, 23);
  fill(state, static_cast<std::size_t>(B * D * (W - 1)), -1, 1, 24);
  const polyattn::conv::ShortConvInputs in{
      .x = polyattn::View3<const float>::contiguous(x.data(), {B, T, D}),
      .weight = polyattn::TensorView<const float, 2>::contiguous(w.data(), {D, W}),
      .bias = polyattn::View1<const float>(bias.data(), {D}, {1})};
  const auto sv = polyattn::View3<float>::contiguous(state.data(), {B, D, W - 1});
  const auto yv = polyattn::View3<float>::contiguous(y.data(), {B, T, D});
  double seconds = 0;
  with_executor(threads, [&](const auto& exec) {
    const pb::LoopTimer timer(threads);
    for (auto _ : st) {
      polyattn::conv::short_conv_step(in, {.activation = polyattn::conv::Activation::SiLU}, sv, yv,
                                      exec);
      benchmark::ClobberMemory();
    }
    seconds = timer.per_iteration(st);
  });
  if (seconds <= 0) return;
  const double bytes = 2.0 * static_cast<double>(B * T * D) * sizeof(float);
  st.counters["GB/s"] = bytes / seconds * 1e-9;
  st.counters["ns_per_token"] = seconds * 1e9 / static_cast<double>(B * T);
}

template <class Op>
void bm_decode(benchmark::State& st, const Op& op, int threads) {
  const index_t B = kDecodeB;
  const auto rows = static_cast<std::size_t>(B * kH);
  std::vector<float> q, k, v, g, gk, beta, state, o(rows * kV);
  fill(q, rows * kK, -1, 1, 11);
  fill(k, rows * kK, -1, 1, 12);
  fill(v, rows * kV, -1, 1, 13);
  fill(g, rows, -0.1f, 0, 14);
  fill(gk, rows * kK, -0.1f, 0, 15);
  fill(beta, rows, 0, 1, 16);
  fill(state, rows * kK * kV, -0.1f, 0.1f, 17);
  const polyattn::LinearInputs in = inputs_for(op, q, k, v, g, gk, beta, B, 1);
  const auto S = polyattn::bhkv(state.data(), B, kH, kK, kV);
  const auto out = polyattn::bthd(o.data(), B, 1, kH, kV);
  double seconds = 0;
  with_executor(threads, [&](const auto& exec) {
    const pb::LoopTimer timer(threads);
    for (auto _ : st) {
      try {
        op.step(in, S, out, {}, exec);
      } catch (const std::exception& e) {
        st.SkipWithError(e.what());
        break;
      }
      benchmark::ClobberMemory();
    }
    seconds = timer.per_iteration(st);
  });
  const double head_tokens = static_cast<double>(rows);
  pb::set_throughput_counters(st, seconds, head_tokens,
                              head_tokens * recurrent_flops(op.options(), kK, kV), threads);
  const double state_bytes = static_cast<double>(state.size() * sizeof(float));
  const double bw = pb::measured_stream_gbs(state.size() * sizeof(float), threads);
  if (seconds <= 0) return;
  st.counters["state_GB/s"] = 2 * state_bytes / seconds * 1e-9;
  st.counters["stream_GB/s"] = bw;
  st.counters["vs_stream"] = seconds / (2 * state_bytes / (bw * 1e9));
}

// ---- registration ---------------------------------------------------------------------------

// f(name, op) for every preset of docs/conventions.md §4 (fp32, fla defaults: qk_l2norm for delta
// rules).
template <class F>
void for_each_preset(F&& f) {
  namespace ps = polyattn::presets;
  f("linear_attn", ps::linear_attn{});
  f("retention", ps::make_retention(kH));
  f("lightning_attn", ps::make_lightning_attn(kH, 0, 24));
  f("simple_gla", ps::simple_gla{});
  f("gla", ps::gla{});
  f("delta_rule", ps::make_delta_rule());
  f("gated_delta_rule", ps::make_gated_delta_rule());
  f("kda", ps::make_kda());
}

template <class Alg, class Op>
void add_prefill(const char* group, const std::string& preset, const Op& op, index_t T, int threads,
                 bool bf16 = false) {
  const std::string name = std::string(group) + (bf16 ? "-bf16" : "") + "/" + preset + "/" +
                           algo_name<Alg>() + "/T:" + std::to_string(T) +
                           "/threads:" + std::to_string(threads);
  benchmark::RegisterBenchmark(
      name.c_str(),
      [op, T, threads, bf16](benchmark::State& st) { bm_prefill<Alg>(st, op, T, threads, bf16); })
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

template <class Op>
void add_decode(const std::string& preset, const Op& op, int threads) {
  const std::string name = "decode-linear/" + preset + "/step/B:" + std::to_string(kDecodeB) +
                           "/threads:" + std::to_string(threads);
  benchmark::RegisterBenchmark(name.c_str(),
                               [op, threads](benchmark::State& st) { bm_decode(st, op, threads); })
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
}

void register_all() {
  const int all = pb::all_threads();
  using polyattn::Recurrent;

  // prefill-linear: T 4096, every preset.
  for_each_preset([&](const std::string& name, const auto& op) {
    add_prefill<Recurrent>("prefill-linear", name, op, 4096, 1);
    add_prefill<polyattn::Chunked<64>>("prefill-linear", name, op, 4096, 1);
    if (name == "kda") {  // the chunk sizes of its bf16 cases, in fp32
      add_prefill<polyattn::Chunked<32>>("prefill-linear", name, op, 4096, 1);
      add_prefill<polyattn::Chunked<128>>("prefill-linear", name, op, 4096, 1);
    }
    if (name != "gated_delta_rule") return;
    add_prefill<polyattn::Chunked<16>>("prefill-linear", name, op, 4096, 1);
    add_prefill<polyattn::Chunked<32>>("prefill-linear", name, op, 4096, 1);
    add_prefill<polyattn::Chunked<128>>("prefill-linear", name, op, 4096, 1);
    if (all > 1) {
      add_prefill<Recurrent>("prefill-linear", name, op, 4096, all);
      add_prefill<polyattn::Chunked<64>>("prefill-linear", name, op, 4096, all);
    }
  });

  // prefill-linear-bf16: Gated DeltaNet and KDA chunked with bf16 q, k, v, o, chunks of 32, 64
  // and 128 tokens: on the AMX tiles the chunk size trades the quadratic products against the
  // per-chunk state work (S scaled, updated and re-split) differently than in fp32.
  const auto add_bf16 = [&]<index_t C>(std::integral_constant<index_t, C>, int threads) {
    add_prefill<polyattn::Chunked<C>>("prefill-linear", "gated_delta_rule",
                                      polyattn::presets::make_gated_delta_rule(), 4096, threads,
                                      true);
    add_prefill<polyattn::Chunked<C>>("prefill-linear", "kda", polyattn::presets::make_kda(), 4096,
                                      threads, true);
  };
  for (const int threads : {1, all}) {
    if (threads == all && all == 1) continue;
    add_bf16(std::integral_constant<index_t, 32>{}, threads);
    add_bf16(std::integral_constant<index_t, 64>{}, threads);
    add_bf16(std::integral_constant<index_t, 128>{}, threads);
  }

  // prefill-long: the per-token cost over T (inputs are prefixes of one allocation).
  const index_t long_T[] = {512, 2048, 8192, 32768, 65536};
  auto add_long = [&](const std::string& name, const auto& op) {
    for (const index_t T : long_T) add_prefill<Recurrent>("prefill-long", name, op, T, 1);
    for (const index_t T : long_T)
      add_prefill<polyattn::Chunked<64>>("prefill-long", name, op, T, 1);
  };
  add_long("gated_delta_rule", polyattn::presets::make_gated_delta_rule());
  add_long("gla", polyattn::presets::gla{});

  // prefill-short: the masked T×T form where it is meant to be used.
  add_prefill<polyattn::Parallel>("prefill-short", "gated_delta_rule",
                                  polyattn::presets::make_gated_delta_rule(), 512, 1);
  add_prefill<polyattn::Parallel>("prefill-short", "gla", polyattn::presets::gla{}, 512, 1);

  // short-conv: prefill B1 T4096 and a decode step of B8, D 8192, W 4, SiLU.
  for (const int threads : {1, all}) {
    if (threads == all && all == 1) continue;
    const std::string t = "/threads:" + std::to_string(threads);
    benchmark::RegisterBenchmark(
        ("short-conv/prefill/B:1/T:4096/D:8192" + t).c_str(),
        [threads](benchmark::State& st) { bm_short_conv(st, 1, 4096, threads); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(
        ("short-conv/step/B:8/D:8192" + t).c_str(),
        [threads](benchmark::State& st) { bm_short_conv(st, 8, 1, threads); })
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }

  // steep-gates: the same work with log-gates of −0.1, −10 and −80.
  auto add_steep = [](const std::string& preset, const auto& op) {
    auto one = [&](auto algo, float x) {
      using Alg = decltype(algo);
      char gname[16];
      std::snprintf(gname, sizeof gname, "%g", static_cast<double>(x));
      const std::string name =
          "steep-gates/" + preset + "/" + algo_name<Alg>() + "/g:" + gname + "/threads:1";
      benchmark::RegisterBenchmark(
          name.c_str(), [op, x](benchmark::State& st) { bm_steep<Alg>(st, op, 4096, x); })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    };
    for (const float x : {-0.1f, -10.f, -80.f}) {
      one(Recurrent{}, x);
      one(polyattn::Chunked<16>{}, x);
      one(polyattn::Chunked<64>{}, x);
    }
  };
  add_steep("gated_delta_rule", polyattn::presets::make_gated_delta_rule());
  add_steep("gla", polyattn::presets::gla{});

  // decode-linear: B8 H16, one token per sequence, state in place.
  for_each_preset([&](const std::string& name, const auto& op) {
    add_decode(name, op, 1);
    if (all > 1) add_decode(name, op, all);
  });
}

void print_figures() {
  pb::print_machine_figures();
  const std::size_t state_bytes = static_cast<std::size_t>(kDecodeB * kH * kK * kV) * sizeof(float);
  const int all = pb::all_threads();
  const double bw1 = pb::measured_stream_gbs(state_bytes, 1);
  const double bwn = pb::measured_stream_gbs(state_bytes, all);
  std::fprintf(
      stderr,
      "polyattn bench: stream (scale in place, read+write) over the decode state, %.1f MiB: "
      "%.1f GB/s 1 thread, %.1f GB/s %d threads; kernels: %s\n",
      static_cast<double>(state_bytes) / (1 << 20), bw1, bwn, all,
      polyattn::simd::isa_name(polyattn::simd::best_arch()));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", bw1);
  benchmark::AddCustomContext("stream_gbs_decode_state_1thread", buf);
  std::snprintf(buf, sizeof buf, "%.1f", bwn);
  benchmark::AddCustomContext("stream_gbs_decode_state_all_threads", buf);
  benchmark::AddCustomContext("kernel_isa", polyattn::simd::isa_name(polyattn::simd::best_arch()));
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
