// bench/bench_engine.cpp — polyattn-bench-engine: what serving engines call (SPEC §9), each
// next to the alternative it replaces. H16, K=V=128 unless stated; fp32.
//
//   fused-gates/prefill/<gdn|kda|mamba2>/<materialised|fused>/<algo>/threads:1
//       B1 T4096: the same kernel fed g / beta computed beforehand vs the raw projections
//       (policies/fused_gates.hpp); mamba2 (P 64, N 128, one group): simple_gla on x·Δ and Δ·A
//       computed beforehand vs Mamba2Decay + Mamba2Update; mamba2/operator: the Mamba2 operator
//       ([B,H,P,N] state, D skip)
//   fused-gates/decode/<gdn|kda>/<materialised|fused>/B:8/threads:1   one token, state in place
//   fused-gates/decode/mamba2/<operator-PN|fused-NP>/B:8/threads:1   one token, H16 P64 N128: the
//       Mamba2 operator on its [B,H,P,N] state vs the fused linear operator on [B,H,N,P] in place
//   snapshots/gdn/chunked64/every:<0|64>/threads:1   B1 T4096 prefill, state written after every
//       64th token ([64, H, K, V]) or not at all
//   speculative/gdn/B:8/T:8/<case>/threads:1   8 draft tokens per sequence, state pool in place:
//       verify+commit:<m>   verify the 8, commit m of them (no recompute)
//       step8               step() over the 8 tokens in one call (the work any verify has to do)
//       step1x8             step() token by token, 8 calls
//       checkpoint+step8+restep:<m>   copy the states, step 8, restore, step the m accepted again
//   hybrid-decode-layer/B:<b>/HV:<h>/threads:<n>   one decode step of a Qwen3-Next-style linear
//       layer as an engine runs it: short_conv_step (width 4, SiLU, conv states in place) over the
//       layer's q, k, v channels (HV/2 key heads, K=V=128: D = HV·128 + 2·(HV/2)·128), then the
//       fused-gate Gated DeltaNet step reading q, k, v as strided views of the conv output (raw
//       a, b, A_log, dt_bias; qk L2 norm), states [B, HV, K, V] in place; B 1, 8, 64, HV 16, 32
//
// Counters: ns_per_head_token (prefill), us per iteration (Time column). Defaults as every
// polyattn bench binary (3 repetitions, medians; --polyattn_time=cpu for a shared machine).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "polyattn/conv/short_conv.hpp"
#include "polyattn/linear/mamba2.hpp"
#include "polyattn/linear/presets.hpp"
#include "polyattn/policies/fused_gates.hpp"

namespace {

namespace pb = polyattn::bench;
using polyattn::index_t;
constexpr index_t kH = 16, kK = 128, kV = 128;

void fill(std::vector<float>& x, std::size_t n, float lo, float hi, unsigned seed) {
  x.resize(n);
  unsigned s = seed;
  for (auto& e : x) {
    s = s * 1664525u + 1013904223u;
    e = lo + (hi - lo) * static_cast<float>(s >> 8) / static_cast<float>(1u << 24);
  }
}
std::size_t sz(index_t n) {
  return static_cast<std::size_t>(n);
}

// Raw projections and the gates they give (the "materialised" inputs), B·T rows of H heads.
struct Layer {
  index_t B, T, K, V;
  std::vector<float> q, k, v, a, graw, b, A_log, dt_bias, dt_bias_k, g, gk, beta, o, state;
  Layer(index_t B_, index_t T_, index_t K_ = kK, index_t V_ = kV) : B(B_), T(T_), K(K_), V(V_) {
    const index_t rows = B * T * kH;
    fill(q, sz(rows * K), -1, 1, 1);
    fill(k, sz(rows * K), -1, 1, 2);
    fill(v, sz(rows * V), -1, 1, 3);
    fill(a, sz(rows), -3, 1, 4);
    fill(graw, sz(rows * K), -3, 1, 5);
    fill(b, sz(rows), -2, 2, 6);
    fill(A_log, sz(kH), -1, 1, 7);
    fill(dt_bias, sz(kH), -1, 1, 8);
    fill(dt_bias_k, sz(kH * K), -1, 1, 9);
    fill(state, sz(B * kH * K * V), -0.1f, 0.1f, 10);
    o.assign(sz(rows * V), 0.f);
    namespace gt = polyattn::gates;
    for (index_t i = 0; i < rows; ++i) {
      const index_t h = i % kH;
      g.push_back(gt::gdn_log_decay(a[sz(i)], gt::neg_exp(A_log[sz(h)]), dt_bias[sz(h)]));
      beta.push_back(gt::sigmoid(b[sz(i)]));
      for (index_t j = 0; j < K; ++j)
        gk.push_back(gt::kda_log_decay(graw[sz(i * K + j)], gt::neg_exp(A_log[sz(h)]),
                                       dt_bias_k[sz(h * K + j)]));
    }
  }
  polyattn::LinearInputs qkv() const {
    return {.q = polyattn::bthd(q.data(), B, T, kH, K),
            .k = polyattn::bthd(k.data(), B, T, kH, K),
            .v = polyattn::bthd(v.data(), B, T, kH, V)};
  }
  polyattn::LinearInputs gdn(bool fused) const {
    auto in = qkv();
    if (fused) {
      in.a = polyattn::bth(a.data(), B, T, kH);
      in.b = polyattn::bth(b.data(), B, T, kH);
      in.A_log = polyattn::View1<const float>::contiguous(A_log.data(), {kH});
      in.dt_bias = polyattn::View1<const float>::contiguous(dt_bias.data(), {kH});
    } else {
      in.g = polyattn::bth(g.data(), B, T, kH);
      in.beta = polyattn::bth(beta.data(), B, T, kH);
    }
    return in;
  }
  polyattn::LinearInputs kda(bool fused) const {
    auto in = qkv();
    if (fused) {
      in.graw = polyattn::bthd(graw.data(), B, T, kH, K);
      in.b = polyattn::bth(b.data(), B, T, kH);
      in.A_log = polyattn::View1<const float>::contiguous(A_log.data(), {kH});
      in.dt_bias = polyattn::View1<const float>::contiguous(dt_bias_k.data(), {kH * K});
    } else {
      in.gk = polyattn::bthd(gk.data(), B, T, kH, K);
      in.beta = polyattn::bth(beta.data(), B, T, kH);
    }
    return in;
  }
};

template <class F>
void timed(benchmark::State& st, double head_tokens, F&& f) {
  const pb::LoopTimer timer(1);
  for (auto _ : st) {
    try {
      f();
    } catch (const std::exception& e) {
      st.SkipWithError(e.what());
      return;
    }
    benchmark::ClobberMemory();
  }
  const double s = timer.per_iteration(st);
  if (s > 0 && head_tokens > 0) st.counters["ns_per_head_token"] = s * 1e9 / head_tokens;
}

void reg(const std::string& name, benchmark::TimeUnit unit,
         std::function<void(benchmark::State&)> f) {
  benchmark::RegisterBenchmark(name.c_str(), std::move(f))->UseRealTime()->Unit(unit);
}

// ---- fused gates --------------------------------------------------------------------------

template <class Alg, class Op>
void prefill(benchmark::State& st, const Op& op, const polyattn::LinearInputs& in, Layer& L) {
  std::vector<float> ht(sz(kH * L.K * L.V));
  const polyattn::LinearOutputs<float> out{
      .o = polyattn::bthd(L.o.data(), 1, L.T, kH, L.V),
      .final_state = polyattn::bhkv(ht.data(), 1, kH, L.K, L.V)};
  timed(st, static_cast<double>(L.T * kH), [&] { op.template forward<Alg>(in, out); });
}

template <class Alg>
std::string algo() {
  if constexpr (std::is_same_v<Alg, polyattn::Recurrent>)
    return "recurrent";
  else
    return "chunked" + std::to_string(Alg::chunk);
}

template <class Alg>
void add_fused_prefill() {
  namespace ps = polyattn::presets;
  static Layer L(1, 4096);
  const std::string a = "/" + algo<Alg>() + "/threads:1";
  reg("fused-gates/prefill/gdn/materialised" + a, benchmark::kMillisecond,
      [](benchmark::State& st) { prefill<Alg>(st, ps::make_gated_delta_rule(), L.gdn(false), L); });
  reg("fused-gates/prefill/gdn/fused" + a, benchmark::kMillisecond, [](benchmark::State& st) {
    prefill<Alg>(st, ps::make_gated_delta_rule_fused(), L.gdn(true), L);
  });
  reg("fused-gates/prefill/kda/materialised" + a, benchmark::kMillisecond,
      [](benchmark::State& st) { prefill<Alg>(st, ps::make_kda(), L.kda(false), L); });
  reg("fused-gates/prefill/kda/fused" + a, benchmark::kMillisecond,
      [](benchmark::State& st) { prefill<Alg>(st, ps::make_kda_fused(), L.kda(true), L); });
}

// Mamba2 at P 64, N 128, one group: q = C, k = B [1,T,1,N], v = x [1,T,H,P].
struct Mamba2Layer {
  static constexpr index_t T = 4096, P = 64, N = 128;
  std::vector<float> x, dt, A, bias, Bm, Cm, D, xdt, g, y, ht;
  polyattn::gates::TimeStep ts{.softplus = true};
  Mamba2Layer() {
    fill(x, sz(T * kH * P), -1, 1, 31);
    fill(dt, sz(T * kH), -4, 0, 32);
    fill(A, sz(kH), -4, -0.5f, 33);
    fill(bias, sz(kH), -1, 1, 34);
    fill(Bm, sz(T * N), -1, 1, 35);
    fill(Cm, sz(T * N), -1, 1, 36);
    fill(D, sz(kH), -1, 1, 37);
    xdt.resize(x.size());
    for (index_t i = 0; i < T * kH; ++i) {
      const float d = ts(dt[sz(i)], bias[sz(i % kH)]);
      g.push_back(polyattn::gates::mamba2_log_decay(d, A[sz(i % kH)]));
      for (index_t p = 0; p < P; ++p) xdt[sz(i * P + p)] = x[sz(i * P + p)] * d;
    }
    y.assign(x.size(), 0.f);
    ht.assign(sz(kH * P * N), 0.f);
  }
  polyattn::LinearInputs linear(bool fused) const {
    polyattn::LinearInputs in{.q = polyattn::bthd(Cm.data(), 1, T, 1, N),
                              .k = polyattn::bthd(Bm.data(), 1, T, 1, N),
                              .v = polyattn::bthd((fused ? x : xdt).data(), 1, T, kH, P)};
    if (fused) {
      in.dt = polyattn::bth(dt.data(), 1, T, kH);
      in.A = polyattn::View1<const float>::contiguous(A.data(), {kH});
      in.dt_bias = polyattn::View1<const float>::contiguous(bias.data(), {kH});
    } else {
      in.g = polyattn::bth(g.data(), 1, T, kH);
    }
    return in;
  }
};

template <class Alg>
void add_mamba2_prefill() {
  static Mamba2Layer M;
  const std::string a = "/" + algo<Alg>() + "/threads:1";
  auto run = [](benchmark::State& st, const auto& op, bool fused) {
    std::vector<float> ht(sz(kH * Mamba2Layer::N * Mamba2Layer::P));
    const auto in = M.linear(fused);
    const polyattn::LinearOutputs<float> out{
        .o = polyattn::bthd(M.y.data(), 1, Mamba2Layer::T, kH, Mamba2Layer::P),
        .final_state = polyattn::bhkv(ht.data(), 1, kH, Mamba2Layer::N, Mamba2Layer::P)};
    timed(st, static_cast<double>(Mamba2Layer::T * kH),
          [&] { op.template forward<Alg>(in, out, {.scale = 1.0}); });
  };
  reg("fused-gates/prefill/mamba2/materialised" + a, benchmark::kMillisecond,
      [run](benchmark::State& st) { run(st, polyattn::presets::simple_gla{}, false); });
  reg("fused-gates/prefill/mamba2/fused" + a, benchmark::kMillisecond, [run](benchmark::State& st) {
    run(st,
        polyattn::Mamba2::linear_operator({}, polyattn::Mamba2Decay{M.ts},
                                          polyattn::Mamba2Update{false, M.ts}, {}),
        true);
  });
  reg("fused-gates/prefill/mamba2/operator" + a, benchmark::kMillisecond, [](benchmark::State& st) {
    constexpr index_t T = Mamba2Layer::T, P = Mamba2Layer::P, N = Mamba2Layer::N;
    const polyattn::Mamba2Inputs in{
        .x = polyattn::bthd(M.x.data(), 1, T, kH, P),
        .dt = polyattn::bth(M.dt.data(), 1, T, kH),
        .A = polyattn::View1<const float>::contiguous(M.A.data(), {kH}),
        .Bm = polyattn::bthd(M.Bm.data(), 1, T, 1, N),
        .Cm = polyattn::bthd(M.Cm.data(), 1, T, 1, N),
        .D = polyattn::View1<const float>::contiguous(M.D.data(), {kH}),
        .dt_bias = polyattn::View1<const float>::contiguous(M.bias.data(), {kH})};
    const polyattn::Mamba2 op(M.ts);
    timed(st, static_cast<double>(T * kH), [&] {
      op.forward<Alg>(in, {.y = polyattn::bthd(M.y.data(), 1, T, kH, P),
                           .final_state = polyattn::bhkv(M.ht.data(), 1, kH, P, N)});
    });
  });
}

void add_fused_decode() {
  namespace ps = polyattn::presets;
  static Layer L(8, 1);
  auto step = [](benchmark::State& st, const auto& op, const polyattn::LinearInputs& in) {
    const auto S = polyattn::bhkv(L.state.data(), L.B, kH, kK, kV);
    const auto o = polyattn::bthd(L.o.data(), L.B, 1, kH, kV);
    timed(st, static_cast<double>(L.B * kH), [&] { op.step(in, S, o); });
  };
  reg("fused-gates/decode/gdn/materialised/B:8/threads:1", benchmark::kMicrosecond,
      [step](benchmark::State& st) { step(st, ps::make_gated_delta_rule(), L.gdn(false)); });
  reg("fused-gates/decode/gdn/fused/B:8/threads:1", benchmark::kMicrosecond,
      [step](benchmark::State& st) { step(st, ps::make_gated_delta_rule_fused(), L.gdn(true)); });
  reg("fused-gates/decode/kda/materialised/B:8/threads:1", benchmark::kMicrosecond,
      [step](benchmark::State& st) { step(st, ps::make_kda(), L.kda(false)); });
  reg("fused-gates/decode/kda/fused/B:8/threads:1", benchmark::kMicrosecond,
      [step](benchmark::State& st) { step(st, ps::make_kda_fused(), L.kda(true)); });
}

// Mamba2 decode, B8 H16 P64 N128, one group: the Mamba2 operator's step on mamba_ssm's state
// layout [B,H,P,N] (the kernels work on [N][P] blocks: each head's block is copied in and out
// transposed) vs the same fused linear operator stepping a [B,H,N,P] state in place (no copy).
void add_mamba2_decode() {
  constexpr index_t B = 8, P = 64, N = 128;
  struct Data {
    std::vector<float> x, dt, A, bias, Bm, Cm, y, state;
    polyattn::gates::TimeStep ts{.softplus = true};
    Data() {
      fill(x, sz(B * kH * P), -1, 1, 51);
      fill(dt, sz(B * kH), -4, 0, 52);
      fill(A, sz(kH), -4, -0.5f, 53);
      fill(bias, sz(kH), -1, 1, 54);
      fill(Bm, sz(B * N), -1, 1, 55);
      fill(Cm, sz(B * N), -1, 1, 56);
      fill(state, sz(B * kH * P * N), -0.1f, 0.1f, 57);
      y.assign(x.size(), 0.f);
    }
  };
  static Data M;
  reg("fused-gates/decode/mamba2/operator-PN/B:8/threads:1", benchmark::kMicrosecond,
      [](benchmark::State& st) {
        const polyattn::Mamba2Inputs in{
            .x = polyattn::bthd(M.x.data(), B, 1, kH, P),
            .dt = polyattn::bth(M.dt.data(), B, 1, kH),
            .A = polyattn::View1<const float>::contiguous(M.A.data(), {kH}),
            .Bm = polyattn::bthd(M.Bm.data(), B, 1, 1, N),
            .Cm = polyattn::bthd(M.Cm.data(), B, 1, 1, N),
            .dt_bias = polyattn::View1<const float>::contiguous(M.bias.data(), {kH})};
        const polyattn::Mamba2 op(M.ts);
        const auto S = polyattn::bhkv(M.state.data(), B, kH, P, N);
        const auto y = polyattn::bthd(M.y.data(), B, 1, kH, P);
        timed(st, static_cast<double>(B * kH), [&] { op.step(in, S, y); });
      });
  reg("fused-gates/decode/mamba2/fused-NP/B:8/threads:1", benchmark::kMicrosecond,
      [](benchmark::State& st) {
        polyattn::LinearInputs in{.q = polyattn::bthd(M.Cm.data(), B, 1, 1, N),
                                  .k = polyattn::bthd(M.Bm.data(), B, 1, 1, N),
                                  .v = polyattn::bthd(M.x.data(), B, 1, kH, P)};
        in.dt = polyattn::bth(M.dt.data(), B, 1, kH);
        in.A = polyattn::View1<const float>::contiguous(M.A.data(), {kH});
        in.dt_bias = polyattn::View1<const float>::contiguous(M.bias.data(), {kH});
        const auto op = polyattn::Mamba2::linear_operator({}, polyattn::Mamba2Decay{M.ts},
                                                          polyattn::Mamba2Update{false, M.ts}, {});
        const auto S = polyattn::bhkv(M.state.data(), B, kH, N, P);
        const auto y = polyattn::bthd(M.y.data(), B, 1, kH, P);
        timed(st, static_cast<double>(B * kH), [&] { op.step(in, S, y, {.scale = 1.0}); });
      });
}

// ---- snapshots ----------------------------------------------------------------------------

void add_snapshots() {
  static Layer L(1, 4096);
  for (const index_t every : {index_t{0}, index_t{64}}) {
    reg("snapshots/gdn/chunked64/every:" + std::to_string(every) + "/threads:1",
        benchmark::kMillisecond, [every](benchmark::State& st) {
          std::vector<std::int64_t> pos;
          for (index_t p = every; every > 0 && p <= L.T; p += every) pos.push_back(p);
          const auto M = static_cast<index_t>(pos.size());
          std::vector<float> snaps(sz(std::max<index_t>(M, 1) * kH * kK * kV)),
              ht(sz(kH * kK * kV));
          polyattn::LinearInputs in = L.gdn(false);
          in.snapshot_positions = pos;
          polyattn::LinearOutputs<float> out{
              .o = polyattn::bthd(L.o.data(), 1, L.T, kH, kV),
              .final_state = polyattn::bhkv(ht.data(), 1, kH, kK, kV)};
          if (M > 0) out.snapshots = polyattn::bhkv(snaps.data(), M, kH, kK, kV);
          const auto op = polyattn::presets::make_gated_delta_rule();
          timed(st, static_cast<double>(L.T * kH),
                [&] { op.forward<polyattn::Chunked<64>>(in, out); });
        });
  }
}

// ---- speculative verify + commit ----------------------------------------------------------

void add_speculative() {
  static Layer L(8, 8);
  static const auto op = polyattn::presets::make_gated_delta_rule();
  const std::string base = "speculative/gdn/B:8/T:8/";
  const auto S = [] { return polyattn::bhkv(L.state.data(), L.B, kH, kK, kV); };
  for (const std::int64_t m : {1, 4, 8}) {
    reg(base + "verify+commit:" + std::to_string(m) + "/threads:1", benchmark::kMicrosecond,
        [m, S](benchmark::State& st) {
          const auto in = L.gdn(false);
          polyattn::linear::VerifyCache cache;
          const std::vector<std::int64_t> acc(sz(L.B), m);
          const auto o = polyattn::bthd(L.o.data(), L.B, L.T, kH, kV);
          timed(st, 0, [&] {
            op.verify(in, S(), o, cache);
            op.commit(cache, acc, S());
          });
        });
    reg(base + "checkpoint+step8+restep:" + std::to_string(m) + "/threads:1",
        benchmark::kMicrosecond, [m, S](benchmark::State& st) {
          const auto in = L.gdn(false);
          std::vector<float> saved(L.state.size());
          const auto o = polyattn::bthd(L.o.data(), L.B, L.T, kH, kV);
          auto first = in;  // the first m tokens of each sequence (strided rows)
          const auto cut4 = [&](const polyattn::View4<const float>& x) {
            return polyattn::View4<const float>(x.data(), {L.B, m, x.size(2), x.size(3)},
                                                x.strides());
          };
          const auto cut3 = [&](const polyattn::View3<const float>& x) {
            return polyattn::View3<const float>(x.data(), {L.B, m, x.size(2)}, x.strides());
          };
          first.q = cut4(in.q.as<float>());
          first.k = cut4(in.k.as<float>());
          first.v = cut4(in.v.as<float>());
          first.g = cut3(in.g);
          first.beta = cut3(in.beta);
          const polyattn::View4<float> om(L.o.data(), {L.B, m, kH, kV}, o.strides());
          timed(st, 0, [&] {
            std::copy(L.state.begin(), L.state.end(), saved.begin());
            op.step(in, S(), o);
            std::copy(saved.begin(), saved.end(), L.state.begin());
            op.step(first, S(), om);
          });
        });
  }
  reg(base + "step8/threads:1", benchmark::kMicrosecond, [S](benchmark::State& st) {
    const auto in = L.gdn(false);
    const auto o = polyattn::bthd(L.o.data(), L.B, L.T, kH, kV);
    timed(st, 0, [&] { op.step(in, S(), o); });
  });
  reg(base + "step1x8/threads:1", benchmark::kMicrosecond, [S](benchmark::State& st) {
    const auto in = L.gdn(false);
    std::vector<polyattn::LinearInputs> one(sz(L.T));
    std::vector<polyattn::View4<float>> o1;
    for (index_t t = 0; t < L.T; ++t) {
      auto& x = one[sz(t)];
      const auto f4 = [&](const polyattn::View4<const float>& v) {
        return polyattn::View4<const float>(v.ptr(0, t, 0, 0), {L.B, 1, v.size(2), v.size(3)},
                                            v.strides());
      };
      const auto f3 = [&](const polyattn::View3<const float>& v) {
        return polyattn::View3<const float>(v.ptr(0, t, 0), {L.B, 1, v.size(2)}, v.strides());
      };
      x.q = f4(in.q.as<float>());
      x.k = f4(in.k.as<float>());
      x.v = f4(in.v.as<float>());
      x.g = f3(in.g);
      x.beta = f3(in.beta);
      o1.emplace_back(L.o.data() + t * kH * kV, polyattn::View4<float>::shape_type{L.B, 1, kH, kV},
                      polyattn::View4<float>::shape_type{L.T * kH * kV, kH * kV, kV, 1});
    }
    timed(st, 0, [&] {
      for (index_t t = 0; t < L.T; ++t) op.step(one[sz(t)], S(), o1[sz(t)]);
    });
  });
}

// ---- a whole hybrid decode layer step ------------------------------------------------------

void add_hybrid_decode_layer() {
  const int all = pb::all_threads();
  for (const index_t B : {1, 8, 64})
    for (const index_t HV : {16, 32})
      for (const int threads : {1, all}) {
        if (threads == all && all == 1) continue;
        reg("hybrid-decode-layer/B:" + std::to_string(B) + "/HV:" + std::to_string(HV) +
                "/threads:" + std::to_string(threads),
            benchmark::kMicrosecond, [B, HV, threads](benchmark::State& st) {
              constexpr index_t W = 4;
              const index_t Hk = HV / 2, D = 2 * Hk * kK + HV * kV;
              std::vector<float> x, w, cstate, y(sz(B * D)), a, b, A_log, bias, S,
                  o(sz(B * HV * kV));
              fill(x, sz(B * D), -1, 1, 41);
              fill(w, sz(D * W), -0.5f, 0.5f, 42);
              fill(cstate, sz(B * D * (W - 1)), -1, 1, 43);
              fill(a, sz(B * HV), -3, 1, 44);
              fill(b, sz(B * HV), -2, 2, 45);
              fill(A_log, sz(HV), -1, 1, 46);
              fill(bias, sz(HV), -1, 1, 47);
              fill(S, sz(B * HV * kK * kV), -0.1f, 0.1f, 48);
              const polyattn::conv::ShortConvInputs ci{
                  .x = polyattn::View3<const float>::contiguous(x.data(), {B, 1, D}),
                  .weight = polyattn::TensorView<const float, 2>::contiguous(w.data(), {D, W})};
              const auto cs = polyattn::View3<float>::contiguous(cstate.data(), {B, D, W - 1});
              const auto yv = polyattn::View3<float>::contiguous(y.data(), {B, 1, D});
              // q, k, v: strided views of the conv output row [q | k | v] of each sequence.
              const polyattn::View4<const float>::shape_type qs{D, D, kK, 1};
              polyattn::LinearInputs in;
              in.q = polyattn::View4<const float>(y.data(), {B, 1, Hk, kK}, qs);
              in.k = polyattn::View4<const float>(y.data() + Hk * kK, {B, 1, Hk, kK}, qs);
              in.v = polyattn::View4<const float>(y.data() + 2 * Hk * kK, {B, 1, HV, kV},
                                                  {D, D, kV, 1});
              in.a = polyattn::bth(a.data(), B, 1, HV);
              in.b = polyattn::bth(b.data(), B, 1, HV);
              in.A_log = polyattn::View1<const float>::contiguous(A_log.data(), {HV});
              in.dt_bias = polyattn::View1<const float>::contiguous(bias.data(), {HV});
              const auto Sv = polyattn::bhkv(S.data(), B, HV, kK, kV);
              const auto ov = polyattn::bthd(o.data(), B, 1, HV, kV);
              const auto op = polyattn::presets::make_gated_delta_rule_fused();
              const polyattn::conv::ShortConvOptions copt{.activation =
                                                              polyattn::conv::Activation::SiLU};
              double seconds = 0;
              auto body = [&](const auto& exec) {
                const pb::LoopTimer timer(threads);
                for (auto _ : st) {
                  polyattn::conv::short_conv_step(ci, copt, cs, yv, exec);
                  op.step(in, Sv, ov, {}, exec);
                  benchmark::ClobberMemory();
                }
                seconds = timer.per_iteration(st);
              };
              if (threads > 1)
                body(pb::shared_pool());
              else
                body(polyattn::Serial{});
              if (seconds > 0) st.counters["us_per_step"] = seconds * 1e6;
            });
      }
}

}  // namespace

int main(int argc, char** argv) {
  if (!pb::initialize(argc, argv)) return 2;
  pb::print_machine_figures();
  add_fused_prefill<polyattn::Chunked<64>>();
  add_fused_prefill<polyattn::Recurrent>();
  add_mamba2_prefill<polyattn::Chunked<64>>();
  add_fused_decode();
  add_mamba2_decode();
  add_snapshots();
  add_speculative();
  add_hybrid_decode_layer();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
