// Engine semantics of the linear family (SPEC §9): fused gates from raw projections, Mamba2 with
// its own conventions, state snapshots during prefill, speculative verify + commit.
//   - fused gates: the same kernel fed gates materialised with the same fp32 functions gives
//     the same bits where it calls those functions (Recurrent; any algorithm on the scalar ISA)
//     and agrees to fp32 rounding where it takes them through SIMD hooks (Chunked / Parallel's
//     per-token scalars, KDA's rows); the hooks themselves within a few ulp of the scalar
//     functions and of double; all against the double reference with gates formed in double
//     (§9.3 bound)
//   - Mamba2: against an oracle written in Mamba2's own [P,N] layout (reference/mamba2.hpp),
//     groups, D, dt_bias, softplus, clamp, varlen, step == forward
//   - snapshots == the final state of a prefill cut there (bit for bit)
//   - verify + commit == step token by token (and bit for bit the chunked prefix)
//   - bad arguments are named errors with nothing written; NaN propagates
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/expect_error.hpp"
#include "linear/gate_hook_kernels.hpp"
#include "linear/raw_gates.hpp"
#include "linear_harness.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/linear/mamba2.hpp"
#include "polyattn/reference/mamba2.hpp"

namespace polyattn::test {
namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
std::size_t sz(index_t n) {
  return static_cast<std::size_t>(n);
}

struct Result {
  std::vector<float> o, ht;
};

// A fused run against the same kernel on materialised gates: the same bits where the kernel
// calls the scalar gate functions (Recurrent, or the scalar ISA), else fp32 rounding (the
// chunked kernel's SIMD hooks round the gates differently in the last bits; the outputs then
// agree far inside the §9.3 bound).
template <class Algo>
void expect_as_materialised(const Result& fused, const Result& given, const std::string& tag) {
  if (std::is_same_v<Algo, Recurrent> || simd::best_arch() == simd::Isa::scalar) {
    EXPECT_TRUE(same_bits(fused.o, given.o)) << tag;
    EXPECT_TRUE(same_bits(fused.ht, given.ht)) << tag;
  } else {
    EXPECT_LT(rel_rmse(fused.o, given.o), 1e-6) << tag;
    EXPECT_LT(rel_rmse(fused.ht, given.ht), 1e-6) << tag;
  }
}

template <class Algo, class Op>
Result run_forward(const Op& op, const LinearInputs& in, const LinearShape& s) {
  Result r{std::vector<float>(sz(s.B * s.T * s.HV * s.V), NAN),
           std::vector<float>(sz(s.B * s.HV * s.K * s.V), NAN)};
  op.template forward<Algo>(in, {.o = bthd(r.o.data(), s.B, s.T, s.HV, s.V),
                                 .final_state = bhkv(r.ht.data(), s.B, s.HV, s.K, s.V)});
  return r;
}

template <class Algo>
void check_gdn_fused(const LinearShape& s) {
  const LinearData data(s, 3);
  const RawGates rg(s, 40);
  LinearInputs base{.q = bthd(data.q.data(), s.B, s.T, s.H, s.K),
                    .k = bthd(data.k.data(), s.B, s.T, s.H, s.K),
                    .v = bthd(data.v.data(), s.B, s.T, s.HV, s.V),
                    .initial_state = bhkv(data.h0.data(), s.B, s.HV, s.K, s.V)};
  LinearInputs raw = base, pre = base, ref = base;
  rg.raw_gdn(raw);
  pre.g = bth(rg.g32.data(), s.B, s.T, s.HV);
  pre.beta = bth(rg.beta32.data(), s.B, s.T, s.HV);
  ref.g = bth(rg.g64.data(), s.B, s.T, s.HV);
  ref.beta = bth(rg.beta64.data(), s.B, s.T, s.HV);
  const Result fused = run_forward<Algo>(presets::make_gated_delta_rule_fused(), raw, s);
  const Result given = run_forward<Algo>(presets::make_gated_delta_rule(), pre, s);
  expect_as_materialised<Algo>(fused, given, s.str() + " " + Algo::name);
  std::vector<double> ro(fused.o.size()), rht(fused.ht.size());
  reference::linear_recurrence<double>(ref, presets::make_gated_delta_rule().options(),
                                       {.o = bthd(ro.data(), s.B, s.T, s.HV, s.V),
                                        .final_state = bhkv(rht.data(), s.B, s.HV, s.K, s.V)});
  EXPECT_LT(rel_rmse(fused.o, ro), kRelRmseBound) << s.str();
  EXPECT_LT(rel_rmse(fused.ht, rht), kRelRmseBound) << s.str();
}

TEST(FusedGates, GatedDeltaNetAsMaterialisedAndMatchesReference) {
  const LinearShape s{.B = 2, .T = 37, .H = 2, .HV = 4, .K = 16, .V = 12};
  check_gdn_fused<Recurrent>(s);
  check_gdn_fused<Chunked<16>>(s);
  check_gdn_fused<Parallel>(s);
}

template <class Algo>
void check_kda_fused(const LinearShape& s, bool bounded) {
  const LinearData data(s, 5);
  const RawGates rg(s, 50, bounded, -5.f);
  LinearInputs base{.q = bthd(data.q.data(), s.B, s.T, s.H, s.K),
                    .k = bthd(data.k.data(), s.B, s.T, s.H, s.K),
                    .v = bthd(data.v.data(), s.B, s.T, s.HV, s.V)};
  LinearInputs raw = base, pre = base, ref = base;
  rg.raw_kda(raw);
  pre.gk = bthd(rg.gk32.data(), s.B, s.T, s.HV, s.K);
  pre.beta = bth(rg.beta32.data(), s.B, s.T, s.HV);
  ref.gk = bthd(rg.gk64.data(), s.B, s.T, s.HV, s.K);
  ref.beta = bth(rg.beta64.data(), s.B, s.T, s.HV);
  const Result fused = run_forward<Algo>(presets::make_kda_fused(true, bounded), raw, s);
  const Result given = run_forward<Algo>(presets::make_kda(), pre, s);
  // The SIMD rows round differently from the scalar functions in the last bits only: the
  // outputs then agree far inside the §9.3 bound (fp32 rounding, not algorithm error).
  const std::string tag = s.str() + (bounded ? " bounded " : " ") + Algo::name;
  EXPECT_LT(rel_rmse(fused.o, given.o), 1e-6) << tag;
  EXPECT_LT(rel_rmse(fused.ht, given.ht), 1e-6) << tag;
  std::vector<double> ro(fused.o.size()), rht(fused.ht.size());
  reference::linear_recurrence<double>(ref, presets::make_kda().options(),
                                       {.o = bthd(ro.data(), s.B, s.T, s.HV, s.V),
                                        .final_state = bhkv(rht.data(), s.B, s.HV, s.K, s.V)});
  EXPECT_LT(rel_rmse(fused.o, ro), kRelRmseBound) << tag;
  EXPECT_LT(rel_rmse(fused.ht, rht), kRelRmseBound) << tag;
}

TEST(FusedGates, KimiDeltaWithinFp32RoundingOfMaterialisedAndMatchesReference) {
  const LinearShape s{.B = 1, .T = 33, .H = 2, .HV = 2, .K = 20, .V = 16};
  for (bool bounded : {false, true}) {
    check_kda_fused<Recurrent>(s, bounded);
    check_kda_fused<Chunked<16>>(s, bounded);
  }
}

// The gate rows themselves: the SIMD hook against the scalar function, per element.
TEST(FusedGates, KimiDeltaRowHookWithinUlpsOfScalar) {
  const LinearShape s{.B = 1, .T = 3, .H = 1, .HV = 1, .K = 37, .V = 4};
  for (bool bounded : {false, true}) {
    const RawGates rg(s, 60, bounded, -5.f);
    LinearInputs in;
    rg.raw_kda(in);
    const auto gate = KimiDeltaDecay{bounded, -5.f}.bind(in, 0, 0, 0);
    std::vector<float> row(sz(s.K));
    for (index_t t = 0; t < s.T; ++t) {
      gate.log_decay_row<simd::scalar>(t, row.data(), s.K);
      for (index_t i = 0; i < s.K; ++i) {
        EXPECT_EQ(row[sz(i)], rg.gk32[sz(t * s.K + i)]);
        const double want = rg.gk64[sz(t * s.K + i)];
        EXPECT_NEAR(gate.log_decay(t, i), want, 4e-7 * std::abs(want) + 1e-30);
      }
    }
  }
}

TEST(FusedGates, Mamba2DecayAndWeightedUpdateAsMaterialisedAndMatchesReference) {
  const LinearShape s{.B = 2, .T = 35, .H = 1, .HV = 3, .K = 16, .V = 8};
  const LinearData data(s, 7);
  const index_t BTH = s.B * s.T * s.HV;
  const auto dt = random_vector(sz(BTH), 70, -3.f, 3.f);
  const auto A = random_vector(sz(s.HV), 71, -2.f, -0.1f);
  const auto bias = random_vector(sz(s.HV), 72, -1.f, 1.f);
  const gates::TimeStep ts{.softplus = true, .min = 0.01f, .max = 2.f};
  std::vector<float> g, xdt(data.v.size());
  for (index_t i = 0; i < BTH; ++i) {
    const float d = ts(dt[sz(i)], bias[sz(i % s.HV)]);
    g.push_back(gates::mamba2_log_decay(d, A[sz(i % s.HV)]));
    for (index_t j = 0; j < s.V; ++j) xdt[sz(i * s.V + j)] = data.v[sz(i * s.V + j)] * d;
  }
  LinearInputs raw{.q = bthd(data.q.data(), s.B, s.T, s.H, s.K),
                   .k = bthd(data.k.data(), s.B, s.T, s.H, s.K),
                   .v = bthd(data.v.data(), s.B, s.T, s.HV, s.V)};
  LinearInputs pre = raw;
  raw.dt = bth(dt.data(), s.B, s.T, s.HV);
  raw.A = View1<const float>::contiguous(A.data(), {s.HV});
  raw.dt_bias = View1<const float>::contiguous(bias.data(), {s.HV});
  pre.v = bthd(xdt.data(), s.B, s.T, s.HV, s.V);
  pre.g = bth(g.data(), s.B, s.T, s.HV);
  const Mamba2::linear_operator fused({}, Mamba2Decay{ts}, Mamba2Update{false, ts}, {});
  const auto given = presets::simple_gla{};
  expect_as_materialised<Recurrent>(run_forward<Recurrent>(fused, raw, s),
                                    run_forward<Recurrent>(given, pre, s), "recurrent");
  const Result f = run_forward<Chunked<16>>(fused, raw, s);
  expect_as_materialised<Chunked<16>>(f, run_forward<Chunked<16>>(given, pre, s), "chunked");
  // Against the double reference on x·Δ and Δ·A formed in double (§9.3 bound).
  std::vector<float> g64, xdt64(data.v.size());
  for (index_t i = 0; i < BTH; ++i) {
    double x = double{dt[sz(i)]} + bias[sz(i % s.HV)];
    x = std::clamp(x > 20.0 ? x : std::log1p(std::exp(x)), double{ts.min}, double{ts.max});
    g64.push_back(static_cast<float>(x * A[sz(i % s.HV)]));
    for (index_t j = 0; j < s.V; ++j)
      xdt64[sz(i * s.V + j)] = static_cast<float>(data.v[sz(i * s.V + j)] * x);
  }
  LinearInputs ref = pre;
  ref.v = bthd(xdt64.data(), s.B, s.T, s.HV, s.V);
  ref.g = bth(g64.data(), s.B, s.T, s.HV);
  std::vector<double> ro(f.o.size()), rht(f.ht.size());
  reference::linear_recurrence<double>(ref, given.options(),
                                       {.o = bthd(ro.data(), s.B, s.T, s.HV, s.V),
                                        .final_state = bhkv(rht.data(), s.B, s.HV, s.K, s.V)});
  EXPECT_LT(rel_rmse(f.o, ro), kRelRmseBound);
  EXPECT_LT(rel_rmse(f.ht, rht), kRelRmseBound);
}

// ---- the per-token SIMD hooks against the scalar functions, per element -------------------

// Every ISA both the CPU and this binary's hook units have.
std::vector<simd::Isa> hook_isas() {
  std::vector<simd::Isa> out;
  for (int i = 0; i <= static_cast<int>(simd::cpu_isa()); ++i)
    if (simd::in_binary(static_cast<simd::Isa>(i))) out.push_back(static_cast<simd::Isa>(i));
  return out;
}

// got within `ulps` fp32 ulps of want; where |want| < 4·FLT_MIN (the SIMD exp gives 0 where
// exp(x) underflows, the scalar a subnormal) within 4·FLT_MIN; NaN for NaN, inf for inf.
::testing::AssertionResult within_ulps(float got, double want, double ulps) {
  constexpr double tiny = 4.0 * std::numeric_limits<float>::min();
  bool ok;
  if (std::isnan(want))
    ok = std::isnan(got);
  else if (std::isinf(want))
    ok = got == want;
  else if (std::abs(want) < tiny)
    ok = std::abs(got - want) < tiny;
  else
    ok = std::abs(got - want) <= ulps * std::ldexp(1.0, std::ilogb(static_cast<float>(want)) - 23);
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << got << " vs " << want << " (" << ulps << " ulp)";
}

// Raw per-token inputs [1,T,HV] that cover softplus' threshold (x + bias around and above 20),
// large negative values (exp underflows), sigmoid's saturation, ±inf and NaN, then random ones.
std::vector<float> hook_inputs(index_t T, index_t HV, std::uint64_t seed) {
  auto x = random_vector(sz(T * HV), seed, -8.f, 8.f);
  const float edge[] = {19.f,  19.99f, 20.f,  20.01f, 21.f,     25.f,      100.f,
                        -20.f, -80.f,  -87.f, -88.f,  -89.f,    -90.f,     -100.f,
                        -1e4f, 0.f,    -0.f,  1e-8f,  0.5f,     15.f,      30.f,
                        87.f,  89.f,   -30.f, -50.f,  INFINITY, -INFINITY, NAN};
  for (std::size_t i = 0; i < std::size(edge) && i < x.size(); ++i) x[i] = edge[i];
  return x;
}

// One hook over all T tokens and over a window [t0, t0 + n) (partial batches, a start inside a
// batch) at every ISA: each value within `ulps` of the scalar function and of `exact` (double),
// and the window's values the same bits as the whole run's (a token's gate does not depend on its
// position in a chunk: what verify + commit relies on).
template <class Scalar, class Exact>
void check_hook(GateHook hook, const LinearInputs& in, const gates::TimeStep& ts, index_t T,
                index_t HV, double ulps, Scalar scalar, Exact exact, const std::string& name) {
  for (simd::Isa isa : hook_isas())
    for (index_t h = 0; h < HV; ++h) {
      std::vector<float> all(sz(T), NAN), part(sz(T), NAN);
      simd::dispatch_to(isa, RunGateHook{hook, &in, ts, h, 0, T, all.data()});
      const index_t t0 = 5, n = T - 9;
      simd::dispatch_to(isa, RunGateHook{hook, &in, ts, h, t0, n, part.data()});
      for (index_t t = 0; t < T; ++t) {
        const std::string tag =
            name + " " + simd::isa_name(isa) + " h" + std::to_string(h) + " t" + std::to_string(t);
        EXPECT_TRUE(within_ulps(all[sz(t)], scalar(h, t), ulps)) << tag << " vs scalar";
        EXPECT_TRUE(within_ulps(all[sz(t)], exact(h, t), ulps)) << tag << " vs double";
        if (t >= t0 && t < t0 + n) {
          const float a = all[sz(t)], p = part[sz(t - t0)];
          EXPECT_TRUE(std::memcmp(&a, &p, sizeof a) == 0) << tag << " window";
        }
      }
    }
}

double softplus64(double x) {
  return x > 20.0 ? x : std::log1p(std::exp(x));
}

// Strided ([1,T,HV] read at head h: stride HV) and contiguous (HV = 1) inputs.
const index_t kHookHV[] = {3, 1};

TEST(FusedGates, GatedDeltaNetHookWithinUlpsOfScalar) {
  static_assert(HasLogDecays<GatedDeltaNetDecay::Gate, simd::scalar> &&
                !HasLogDecays<ScalarDecay::Gate, simd::scalar>);
  const index_t T = 45;
  for (index_t HV : kHookHV) {
    const auto a = hook_inputs(T, HV, 90);
    const auto A_log = random_vector(sz(HV), 91, -2.f, 0.5f);
    auto bias = random_vector(sz(HV), 92, -1.f, 1.f);
    bias[0] = 0.f;  // a itself crosses the threshold
    LinearInputs in;
    in.a = bth(a.data(), 1, T, HV);
    in.A_log = View1<const float>::contiguous(A_log.data(), {HV});
    in.dt_bias = View1<const float>::contiguous(bias.data(), {HV});
    const auto x = [&](index_t h, index_t t) { return a[sz(t * HV + h)] + bias[sz(h)]; };
    check_hook(
        GateHook::GdnDecay, in, {}, T, HV, 3.0,
        [&](index_t h, index_t t) {
          return gates::gdn_log_decay(a[sz(t * HV + h)], gates::neg_exp(A_log[sz(h)]), bias[sz(h)]);
        },
        [&](index_t h, index_t t) { return -std::exp(double{A_log[sz(h)]}) * softplus64(x(h, t)); },
        "gdn HV" + std::to_string(HV));
  }
}

TEST(FusedGates, SigmoidBetaHookWithinUlpsOfScalar) {
  static_assert(HasBetas<SigmoidBetaUpdate::Bound, simd::scalar> &&
                !HasBetas<DeltaUpdate::Bound, simd::scalar>);
  const index_t T = 45;
  for (index_t HV : kHookHV) {
    const auto b = hook_inputs(T, HV, 93);
    LinearInputs in;
    in.b = bth(b.data(), 1, T, HV);
    check_hook(
        GateHook::SigmoidBeta, in, {}, T, HV, 3.0,
        [&](index_t h, index_t t) { return gates::sigmoid(b[sz(t * HV + h)]); },
        [&](index_t h, index_t t) { return 1.0 / (1.0 + std::exp(-double{b[sz(t * HV + h)]})); },
        "beta HV" + std::to_string(HV));
  }
}

TEST(FusedGates, Mamba2HooksWithinUlpsOfScalar) {
  static_assert(HasLogDecays<Mamba2Decay::Gate, simd::scalar> &&
                HasValueWeights<Mamba2Update::Bound, simd::scalar>);
  const index_t T = 45;
  const gates::TimeStep steps[] = {{.softplus = true, .min = 0.01f, .max = 2.f},
                                   {.softplus = true},
                                   {.softplus = false, .min = 0.5f, .max = 4.f}};
  for (index_t HV : kHookHV)
    for (const gates::TimeStep& ts : steps) {
      const auto dt = hook_inputs(T, HV, 94);
      const auto A = random_vector(sz(HV), 95, -4.f, -0.5f);
      const auto bias = random_vector(sz(HV), 96, -1.f, 1.f);
      LinearInputs in;
      in.dt = bth(dt.data(), 1, T, HV);
      in.A = View1<const float>::contiguous(A.data(), {HV});
      in.dt_bias = View1<const float>::contiguous(bias.data(), {HV});
      const auto delta64 = [&](index_t h, index_t t) {  // NaN stays NaN through the clamp
        const double x = double{dt[sz(t * HV + h)] + bias[sz(h)]},
                     d = ts.softplus ? softplus64(x) : x;
        return d < ts.min ? double{ts.min} : (d > ts.max ? double{ts.max} : d);
      };
      const std::string tag = "HV" + std::to_string(HV) + (ts.softplus ? " softplus" : "") + " [" +
                              std::to_string(ts.min) + ", " + std::to_string(ts.max) + "]";
      check_hook(
          GateHook::Mamba2Decay, in, ts, T, HV, 3.0,
          [&](index_t h, index_t t) {
            return gates::mamba2_log_decay(ts(dt[sz(t * HV + h)], bias[sz(h)]), A[sz(h)]);
          },
          [&](index_t h, index_t t) { return delta64(h, t) * A[sz(h)]; }, "mamba2 decay " + tag);
      check_hook(
          GateHook::Mamba2Weight, in, ts, T, HV, 3.0,
          [&](index_t h, index_t t) { return ts(dt[sz(t * HV + h)], bias[sz(h)]); }, delta64,
          "mamba2 weight " + tag);
    }
}

TEST(FusedGates, NamedErrorsAndNaNPropagates) {
  const LinearShape s{.B = 1, .T = 5, .H = 1, .HV = 2, .K = 8, .V = 8};
  const LinearData data(s, 9);
  RawGates rg(s, 80);
  LinearInputs in{.q = bthd(data.q.data(), s.B, s.T, s.H, s.K),
                  .k = bthd(data.k.data(), s.B, s.T, s.H, s.K),
                  .v = bthd(data.v.data(), s.B, s.T, s.HV, s.V)};
  rg.raw_gdn(in);
  std::vector<float> o(data.v.size(), 7.f);
  const auto op = presets::make_gated_delta_rule_fused();
  const LinearOutputs<float> out{.o = bthd(o.data(), s.B, s.T, s.HV, s.V)};
  auto bad = in;
  bad.A_log = {};
  expect_error("A_log", [&] { op.forward(bad, out); });
  bad = in;
  bad.dt_bias = View1<const float>::contiguous(rg.dt_bias_k.data(), {s.HV * s.K});
  expect_error("dt_bias", [&] { op.forward(bad, out); });
  bad = in;
  bad.beta = bth(rg.beta32.data(), s.B, s.T, s.HV);
  expect_error("beta", [&] { op.forward(bad, out); });
  bad = in;
  bad.b = {};
  expect_error("b", [&] { op.forward(bad, out); });
  bad = in;  // a raw gate given to an operator with materialised gates
  bad.g = bth(rg.g32.data(), s.B, s.T, s.HV);
  bad.beta = bth(rg.beta32.data(), s.B, s.T, s.HV);
  bad.b = {};
  expect_error("a", [&] { presets::make_gated_delta_rule().forward(bad, out); });
  expect_error("lower_bound", [&] {
    LinearInputs k{.q = in.q, .k = in.k, .v = in.v};
    rg.raw_kda(k);
    presets::make_kda_fused(true, true, 1.f).forward(k, out);
  });
  for (float x : o) ASSERT_EQ(x, 7.f);
  // NaN in one head's raw gate reaches that head's outputs only; nothing crashes.
  rg.a[sz(2 * s.HV + 1)] = NAN;  // token 2, value head 1
  op.forward(in, out);
  for (index_t t = 0; t < s.T; ++t)
    for (index_t h = 0; h < s.HV; ++h) {
      const float x = o[sz((t * s.HV + h) * s.V)];
      EXPECT_EQ(std::isnan(x), h == 1 && t >= 2) << t << " " << h;
    }
}

// ---- Mamba2 -------------------------------------------------------------------------------

struct Mamba2Data {
  index_t B, T, H, P, G, N;
  std::vector<float> x, dt, A, Bm, Cm, D, bias, h0;
  Mamba2Data(index_t b, index_t t, index_t h, index_t p, index_t g, index_t n, std::uint64_t seed)
      : B(b), T(t), H(h), P(p), G(g), N(n) {
    x = random_vector(sz(B * T * H * P), seed);
    dt = random_vector(sz(B * T * H), seed + 1, -4.f, 1.f);
    A = random_vector(sz(H), seed + 2, -3.f, -0.2f);
    Bm = random_vector(sz(B * T * G * N), seed + 3);
    Cm = random_vector(sz(B * T * G * N), seed + 4);
    D = random_vector(sz(H), seed + 5);
    bias = random_vector(sz(H), seed + 6, -1.f, 1.f);
    h0 = random_vector(sz(B * H * P * N), seed + 7, -0.5f, 0.5f);
  }
  Mamba2Inputs inputs(bool with_h0 = true) const {
    Mamba2Inputs in{.x = bthd(x.data(), B, T, H, P),
                    .dt = bth(dt.data(), B, T, H),
                    .A = View1<const float>::contiguous(A.data(), {H}),
                    .Bm = bthd(Bm.data(), B, T, G, N),
                    .Cm = bthd(Cm.data(), B, T, G, N),
                    .D = View1<const float>::contiguous(D.data(), {H}),
                    .dt_bias = View1<const float>::contiguous(bias.data(), {H})};
    if (with_h0) in.initial_state = bhkv(h0.data(), B, H, P, N);
    return in;
  }
  reference::Mamba2Ref ref(const Mamba2Inputs& in, const gates::TimeStep& ts) const {
    return {.x = in.x,
            .Bm = in.Bm,
            .Cm = in.Cm,
            .initial_state = in.initial_state,
            .dt = in.dt,
            .A = in.A,
            .D = in.D,
            .dt_bias = in.dt_bias,
            .cu_seqlens = in.cu_seqlens,
            .dt_softplus = ts.softplus,
            .dt_min = ts.min,
            .dt_max = ts.max};
  }
};

template <class Algo>
void check_mamba2(const Mamba2Data& m, const gates::TimeStep& ts, bool with_h0) {
  const Mamba2 op(ts);
  const Mamba2Inputs in = m.inputs(with_h0);
  std::vector<float> y(m.x.size(), NAN), ht(sz(m.B * m.H * m.P * m.N), NAN);
  op.forward<Algo>(in, {.y = bthd(y.data(), m.B, m.T, m.H, m.P),
                        .final_state = bhkv(ht.data(), m.B, m.H, m.P, m.N)});
  std::vector<double> ry(y.size()), rht(ht.size());
  reference::mamba2(m.ref(in, ts), bthd(ry.data(), m.B, m.T, m.H, m.P),
                    bhkv(rht.data(), m.B, m.H, m.P, m.N));
  const std::string tag = std::string(Algo::name) + " G" + std::to_string(m.G) +
                          (ts.softplus ? " softplus" : "") + (with_h0 ? " h0" : "");
  EXPECT_LT(rel_rmse(y, ry), kRelRmseBound) << tag;
  EXPECT_LT(rel_rmse(ht, rht), kRelRmseBound) << tag;
}

TEST(Mamba2, MatchesIndependentReference) {
  const gates::TimeStep plain{}, soft{.softplus = true},
      clamped{.softplus = true, .min = 0.05f, .max = 0.5f};
  const Mamba2Data grouped(2, 45, 4, 12, 2, 16, 100), single(1, 20, 3, 8, 1, 10, 200);
  for (const auto& ts : {soft, clamped}) {
    check_mamba2<Recurrent>(grouped, ts, true);
    check_mamba2<Chunked<16>>(grouped, ts, true);
  }
  check_mamba2<Parallel>(single, soft, false);
  // Without softplus dt + dt_bias must stay positive (a negative Δ grows the state).
  Mamba2Data pos(1, 20, 2, 8, 2, 8, 300);
  for (auto& v : pos.dt) v = std::abs(v) * 0.1f + 1.1f;
  check_mamba2<Chunked<16>>(pos, plain, true);
}

TEST(Mamba2, VarlenPoolAndStepAgree) {
  const Mamba2Data m(1, 30, 2, 8, 1, 8, 400);
  const gates::TimeStep ts{.softplus = true};
  const Mamba2 op(ts);
  const std::vector<std::int64_t> cu{0, 12, 30}, idx{2, 0};
  // Pool of 3 slots [slots,H,P,N]; varlen prefill in place.
  std::vector<float> pool = random_vector(sz(3 * m.H * m.P * m.N), 401, -0.5f, 0.5f);
  const std::vector<float> before = pool;
  Mamba2Inputs in = m.inputs(false);
  in.cu_seqlens = cu;
  in.state_indices = idx;
  in.initial_state = bhkv(pool.data(), 3, m.H, m.P, m.N);
  std::vector<float> y(m.x.size());
  op.forward<Chunked<16>>(in, {.y = bthd(y.data(), 1, m.T, m.H, m.P),
                               .final_state = bhkv(pool.data(), 3, m.H, m.P, m.N)});
  // Reference with the gathered initial states.
  const index_t blk = m.H * m.P * m.N;
  std::vector<float> h0;
  for (auto s : idx) h0.insert(h0.end(), before.begin() + s * blk, before.begin() + (s + 1) * blk);
  Mamba2Inputs rin = m.inputs(false);
  rin.cu_seqlens = cu;
  rin.initial_state = bhkv(h0.data(), 2, m.H, m.P, m.N);
  std::vector<double> ry(y.size()), rht(sz(2 * blk));
  reference::mamba2(m.ref(rin, ts), bthd(ry.data(), 1, m.T, m.H, m.P),
                    bhkv(rht.data(), 2, m.H, m.P, m.N));
  EXPECT_LT(rel_rmse(y, ry), kRelRmseBound);
  for (std::size_t n = 0; n < idx.size(); ++n) {
    const std::vector<float> got(pool.begin() + idx[n] * blk, pool.begin() + (idx[n] + 1) * blk);
    const std::vector<double> want(rht.begin() + static_cast<index_t>(n) * blk,
                                   rht.begin() + static_cast<index_t>(n + 1) * blk);
    EXPECT_LT(rel_rmse(got, want), kRelRmseBound) << n;
  }
  EXPECT_TRUE(std::equal(pool.begin() + blk, pool.begin() + 2 * blk, before.begin() + blk));

  // step token by token == the reference on the first sequence (batch of one, [B,H,P,N]).
  const Mamba2Data d(1, 6, 2, 8, 2, 8, 500);
  std::vector<float> st = d.h0, ys(d.x.size());
  for (index_t t = 0; t < d.T; ++t) {
    Mamba2Inputs one{.x = bthd(d.x.data() + t * d.H * d.P, 1, 1, d.H, d.P),
                     .dt = bth(d.dt.data() + t * d.H, 1, 1, d.H),
                     .A = View1<const float>::contiguous(d.A.data(), {d.H}),
                     .Bm = bthd(d.Bm.data() + t * d.G * d.N, 1, 1, d.G, d.N),
                     .Cm = bthd(d.Cm.data() + t * d.G * d.N, 1, 1, d.G, d.N),
                     .D = View1<const float>::contiguous(d.D.data(), {d.H}),
                     .dt_bias = View1<const float>::contiguous(d.bias.data(), {d.H})};
    op.step(one, bhkv(st.data(), 1, d.H, d.P, d.N),
            bthd(ys.data() + t * d.H * d.P, 1, 1, d.H, d.P));
  }
  const Mamba2Inputs all = d.inputs(true);
  std::vector<double> ry2(ys.size()), rht2(st.size());
  reference::mamba2(d.ref(all, ts), bthd(ry2.data(), 1, d.T, d.H, d.P),
                    bhkv(rht2.data(), 1, d.H, d.P, d.N));
  EXPECT_LT(rel_rmse(ys, ry2), kRelRmseBound);
  EXPECT_LT(rel_rmse(st, rht2), kRelRmseBound);
}

// The [B,H,P,N] state is stepped, verified and committed through a transposed view (each head's
// block copied into the kernels' [N][P] layout and back, in 4×4 blocks plus tails): bit for bit
// the same linear operator on an [B,H,N,P] state in place, for sizes with and without tails.
TEST(Mamba2, StepOnItsLayoutIsBitwiseTheKernelLayout) {
  const gates::TimeStep ts{.softplus = true};
  const Mamba2 op(ts);
  const auto lin = Mamba2::linear_operator({}, Mamba2Decay{ts}, Mamba2Update{false, ts}, {});
  for (const auto& [P, N] : {std::pair<index_t, index_t>{8, 12}, {5, 7}, {3, 2}, {13, 16}}) {
    const Mamba2Data d(3, 4, 2, P, 1, N, 800 + static_cast<std::uint64_t>(P * N));
    std::vector<float> pn = d.h0, np(d.h0.size()), y1(d.x.size()), y2(d.x.size());
    for (index_t bh = 0; bh < d.B * d.H; ++bh)  // np = pn transposed per head
      for (index_t p = 0; p < P; ++p)
        for (index_t n = 0; n < N; ++n) np[sz((bh * N + n) * P + p)] = pn[sz((bh * P + p) * N + n)];
    for (index_t t = 0; t < d.T; ++t) {
      const auto row4 = [&](const std::vector<float>& x, index_t h, index_t e) {
        return View4<const float>(x.data() + t * h * e, {d.B, 1, h, e}, {d.T * h * e, h * e, e, 1});
      };
      const auto dt = View3<const float>(d.dt.data() + t * d.H, {d.B, 1, d.H}, {d.T * d.H, d.H, 1});
      const auto yrow = [&](std::vector<float>& y) {
        return View4<float>(y.data() + t * d.H * P, {d.B, 1, d.H, P},
                            {d.T * d.H * P, d.H * P, P, 1});
      };
      Mamba2Inputs m{.x = row4(d.x, d.H, P),
                     .dt = dt,
                     .A = View1<const float>::contiguous(d.A.data(), {d.H}),
                     .Bm = row4(d.Bm, d.G, N),
                     .Cm = row4(d.Cm, d.G, N),
                     .dt_bias = View1<const float>::contiguous(d.bias.data(), {d.H})};
      op.step(m, bhkv(pn.data(), d.B, d.H, P, N), yrow(y1));
      LinearInputs li{.q = m.Cm, .k = m.Bm, .v = m.x};
      li.dt = m.dt;
      li.A = m.A;
      li.dt_bias = m.dt_bias;
      lin.step(li, bhkv(np.data(), d.B, d.H, N, P), yrow(y2), {.scale = 1.0});
    }
    EXPECT_TRUE(same_bits(y1, y2)) << "P" << P << " N" << N;
    // Then verify the 4 tokens again from the stepped states and commit 1, 4 and 0 of them.
    Mamba2Inputs all = d.inputs(false);
    all.D = {};
    LinearInputs li{.q = all.Cm, .k = all.Bm, .v = all.x};
    li.dt = all.dt;
    li.A = all.A;
    li.dt_bias = all.dt_bias;
    linear::VerifyCache c1, c2;
    op.verify(all, bhkv(std::as_const(pn).data(), d.B, d.H, P, N),
              bthd(y1.data(), d.B, d.T, d.H, P), c1);
    lin.verify(li, bhkv(std::as_const(np).data(), d.B, d.H, N, P),
               bthd(y2.data(), d.B, d.T, d.H, P), c2, {.scale = 1.0});
    EXPECT_TRUE(same_bits(y1, y2)) << "verify P" << P << " N" << N;
    const std::vector<std::int64_t> accepted{1, 4, 0};
    op.commit(c1, accepted, bhkv(pn.data(), d.B, d.H, P, N));
    lin.commit(c2, accepted, bhkv(np.data(), d.B, d.H, N, P));
    std::vector<float> back(np.size());
    for (index_t bh = 0; bh < d.B * d.H; ++bh)
      for (index_t p = 0; p < P; ++p)
        for (index_t n = 0; n < N; ++n)
          back[sz((bh * P + p) * N + n)] = np[sz((bh * N + n) * P + p)];
    EXPECT_TRUE(same_bits(pn, back)) << "P" << P << " N" << N;
  }
}

TEST(Mamba2, NamedErrorsWriteNothing) {
  const Mamba2Data m(1, 4, 4, 6, 2, 8, 600);
  const Mamba2 op(gates::TimeStep{.softplus = true});
  std::vector<float> y(m.x.size(), 3.f), ht(sz(m.H * m.P * m.N), 3.f);
  const Mamba2Outputs out{.y = bthd(y.data(), 1, m.T, m.H, m.P),
                          .final_state = bhkv(ht.data(), 1, m.H, m.P, m.N)};
  auto in = m.inputs();
  in.Bm = bthd(m.Bm.data(), 1, m.T, 3, 5);  // 3 groups do not divide 4 heads
  in.Cm = in.Bm;
  expect_error("x", [&] { op.forward(in, out); });
  in = m.inputs();
  in.A = View1<const float>::contiguous(m.A.data(), {2});
  expect_error("A", [&] { op.forward(in, out); });
  in = m.inputs();
  in.Cm = bthd(m.Cm.data(), 1, m.T, m.G, m.N - 1);
  expect_error("Cm", [&] { op.forward(in, out); });
  in = m.inputs();
  in.initial_state = bhkv(m.h0.data(), 1, m.H, m.N, m.P);  // [B,H,N,P]: the wrong layout
  expect_error("initial_state", [&] { op.forward(in, out); });
  expect_error("dt_limit",
               [&] { Mamba2(gates::TimeStep{.min = 1.f, .max = 0.5f}).forward(m.inputs(), out); });
  for (float v : y) ASSERT_EQ(v, 3.f);
  for (float v : ht) ASSERT_EQ(v, 3.f);
}

// ---- snapshots ----------------------------------------------------------------------------

template <class Algo, class Op>
void check_snapshots(const Op& op, const LinearShape& s, const std::vector<std::int64_t>& pos,
                     bool cut_bitwise, bool o_bitwise) {
  const LinearData data(s, 21);
  const LinearOptions opt = op.options();
  const LinearInputs in = data.inputs(opt, true);
  const index_t M = static_cast<index_t>(pos.size()), blk = s.HV * s.K * s.V;
  std::vector<float> snaps(sz(M * blk), NAN), o(data.v.size()), ht(sz(blk));
  LinearInputs sin = in;
  sin.snapshot_positions = pos;
  op.template forward<Algo>(sin, {.o = bthd(o.data(), 1, s.T, s.HV, s.V),
                                  .final_state = bhkv(ht.data(), 1, s.HV, s.K, s.V),
                                  .snapshots = bhkv(snaps.data(), M, s.HV, s.K, s.V)});
  const std::string tag = s.str() + " " + Algo::name;
  for (index_t m = 0; m < M; ++m) {
    // The prefill cut at pos[m]: the first pos[m] tokens in one call.
    const index_t p = pos[sz(m)];
    std::vector<float> cut(sz(blk), NAN), ocut(sz(std::max<index_t>(p, 1) * s.HV * s.V));
    LinearInputs cin = in;
    cin.q = bthd(data.q.data(), 1, p, s.H, s.K);
    cin.k = bthd(data.k.data(), 1, p, s.H, s.K);
    cin.v = bthd(data.v.data(), 1, p, s.HV, s.V);
    if (!in.g.absent()) cin.g = bth(data.g.data(), 1, p, s.HV);
    if (!in.beta.absent()) cin.beta = bth(data.beta.data(), 1, p, s.HV);
    op.template forward<Algo>(cin, {.o = bthd(ocut.data(), 1, p, s.HV, s.V),
                                    .final_state = bhkv(cut.data(), 1, s.HV, s.K, s.V)});
    const std::vector<float> got(snaps.begin() + m * blk, snaps.begin() + (m + 1) * blk);
    if (cut_bitwise)
      EXPECT_TRUE(same_bits(got, cut)) << tag << " snapshot at " << p;
    else
      EXPECT_LT(rel_rmse(got, cut), 1e-6) << tag << " snapshot at " << p;
  }
  const Result plain = run_forward<Algo>(op, in, s);
  if (o_bitwise) {
    EXPECT_TRUE(same_bits(o, plain.o)) << tag;
    EXPECT_TRUE(same_bits(ht, plain.ht)) << tag;
  } else {
    EXPECT_LT(rel_rmse(o, plain.o), 1e-6) << tag;
    EXPECT_LT(rel_rmse(ht, plain.ht), 1e-6) << tag;
  }
}

TEST(Snapshots, EqualThePrefillCutThere) {
  const LinearShape s{.B = 1, .T = 70, .H = 1, .HV = 2, .K = 16, .V = 8};
  const auto gdn = presets::make_gated_delta_rule();
  // At multiples of the chunk: every bit as without snapshots, and as the cut prefill.
  check_snapshots<Chunked<16>>(gdn, s, {0, 16, 48, 64}, true, true);
  check_snapshots<Chunked<16>>(presets::simple_gla{}, s, {32, 70}, true, true);
  // Anywhere, token by token: the pieces are the cut prefill.
  check_snapshots<Recurrent>(gdn, s, {5, 37, 70}, true, true);
  // Unaligned chunks: the later pieces start mid-chunk (prefill in pieces, fp32 rounding).
  check_snapshots<Chunked<16>>(gdn, s, {5, 37, 70}, false, false);
}

TEST(Snapshots, VarlenIntoAPoolAndNamedErrors) {
  const LinearShape s{.B = 1, .T = 40, .H = 1, .HV = 2, .K = 8, .V = 8};
  const LinearData data(s, 31);
  const auto op = presets::make_gated_delta_rule();
  LinearInputs in = data.inputs(op.options(), false);
  const std::vector<std::int64_t> cu{0, 24, 24, 40}, pos{16, 24, 0, 16}, off{0, 2, 3, 4},
      slots{3, 0, 1, 4};
  in.cu_seqlens = cu;
  in.snapshot_positions = pos;
  in.snapshot_offsets = off;
  in.snapshot_slots = slots;
  const index_t blk = s.HV * s.K * s.V;
  std::vector<float> pool(sz(6 * blk), 9.f), o(data.v.size(), 5.f), ht(sz(3 * blk));
  const LinearOutputs<float> out{.o = bthd(o.data(), 1, s.T, s.HV, s.V),
                                 .final_state = bhkv(ht.data(), 3, s.HV, s.K, s.V),
                                 .snapshots = bhkv(pool.data(), 6, s.HV, s.K, s.V)};
  {  // errors first: nothing written
    LinearInputs bad = in;
    const std::vector<std::int64_t> late{16, 25, 0, 16};
    bad.snapshot_positions = late;
    expect_error("snapshot_positions", [&] { op.forward<Chunked<16>>(bad, out); });
    const std::vector<std::int64_t> down{16, 8, 0, 16};
    bad.snapshot_positions = down;
    expect_error("snapshot_positions", [&] { op.forward<Chunked<16>>(bad, out); });
    bad = in;
    bad.snapshot_offsets = {};
    expect_error("snapshot_offsets", [&] { op.forward<Chunked<16>>(bad, out); });
    bad = in;
    const std::vector<std::int64_t> dup{3, 0, 3, 4};
    bad.snapshot_slots = dup;
    expect_error("snapshot_slots", [&] { op.forward<Chunked<16>>(bad, out); });
    LinearOutputs<float> no_snap = out;
    no_snap.snapshots = {};
    expect_error("snapshots", [&] { op.forward<Chunked<16>>(in, no_snap); });
    for (float x : pool) ASSERT_EQ(x, 9.f);
    for (float x : o) ASSERT_EQ(x, 5.f);
  }
  op.forward<Chunked<16>>(in, out);
  // Sequence 0 tokens [0, 24): snapshots after 16 and 24 (= its final state); sequence 1 empty:
  // its state after 0 tokens (zeros); sequence 2 tokens [24, 40): after 16 (= final).
  auto slot = [&](index_t r) {
    return std::vector<float>(pool.begin() + r * blk, pool.begin() + (r + 1) * blk);
  };
  auto state = [&](index_t n) {
    return std::vector<float>(ht.begin() + n * blk, ht.begin() + (n + 1) * blk);
  };
  EXPECT_TRUE(same_bits(slot(0), state(0)));
  EXPECT_TRUE(same_bits(slot(1), std::vector<float>(sz(blk), 0.f)));
  EXPECT_TRUE(same_bits(slot(4), state(2)));
  for (index_t r : {2, 5})
    for (float x : slot(r)) ASSERT_EQ(x, 9.f);
  // Slot 3: the first 16 tokens of sequence 0 alone.
  LinearInputs cut = data.inputs(op.options(), false);
  cut.q = bthd(data.q.data(), 1, 16, s.H, s.K);
  cut.k = bthd(data.k.data(), 1, 16, s.H, s.K);
  cut.v = bthd(data.v.data(), 1, 16, s.HV, s.V);
  cut.g = bth(data.g.data(), 1, 16, s.HV);
  cut.beta = bth(data.beta.data(), 1, 16, s.HV);
  std::vector<float> oc(sz(16 * s.HV * s.V)), hc(sz(blk));
  op.forward<Chunked<16>>(cut, {.o = bthd(oc.data(), 1, 16, s.HV, s.V),
                                .final_state = bhkv(hc.data(), 1, s.HV, s.K, s.V)});
  EXPECT_TRUE(same_bits(slot(3), hc));
}

// ---- speculative verify + commit ----------------------------------------------------------

template <class Op>
void check_verify_commit(const Op& op, const LinearInputs& in, const LinearShape& s,
                         const std::vector<std::int64_t>& accepted) {
  // A pool of 5 slots; sequences b use slots idx[b].
  const std::vector<std::int64_t> idx{4, 1, 2};
  ASSERT_EQ(s.B, 3);
  const index_t blk = s.HV * s.K * s.V;
  const std::vector<float> pool0 = random_vector(sz(5 * blk), 90, -0.5f, 0.5f);
  std::vector<float> pool = pool0, o(sz(s.B * s.T * s.HV * s.V), NAN);
  LinearInputs vin = in;
  vin.state_indices = idx;
  linear::VerifyCache cache;
  op.verify(vin, bhkv(std::as_const(pool).data(), 5, s.HV, s.K, s.V),
            bthd(o.data(), s.B, s.T, s.HV, s.V), cache);
  EXPECT_TRUE(same_bits(pool, pool0)) << "verify wrote the state";

  // Token by token with step on a copy of the pool: outputs of all T, states after accepted[b].
  std::vector<float> spool = pool0, so(o.size());
  std::vector<std::vector<float>> at_accept(sz(s.B));
  for (index_t t = 0; t < s.T; ++t) {
    LinearInputs one = vin;
    const auto slice3 = [&](const View3<const float>& x) {
      return x.absent() ? x : View3<const float>(x.ptr(0, t, 0), {s.B, 1, x.size(2)}, x.strides());
    };
    const auto slice4 = [&](const View4<const float>& x) {
      return x.absent() ? x
                        : View4<const float>(x.ptr(0, t, 0, 0), {s.B, 1, x.size(2), x.size(3)},
                                             x.strides());
    };
    one.q = slice4(in.q.as<float>());
    one.k = slice4(in.k.as<float>());
    one.v = slice4(in.v.as<float>());
    one.g = slice3(in.g);
    one.gk = slice4(in.gk);
    one.beta = slice3(in.beta);
    one.a = slice3(in.a);
    one.graw = slice4(in.graw);
    one.b = slice3(in.b);
    for (index_t b = 0; b < s.B; ++b)
      if (accepted[sz(b)] == t)
        at_accept[sz(b)].assign(spool.begin() + idx[sz(b)] * blk,
                                spool.begin() + (idx[sz(b)] + 1) * blk);
    View4<float> ov(so.data() + t * s.HV * s.V, {s.B, 1, s.HV, s.V},
                    {s.T * s.HV * s.V, s.HV * s.V, s.V, 1});
    op.step(one, bhkv(spool.data(), 5, s.HV, s.K, s.V), ov);
  }
  for (index_t b = 0; b < s.B; ++b)
    if (accepted[sz(b)] == s.T)
      at_accept[sz(b)].assign(spool.begin() + idx[sz(b)] * blk,
                              spool.begin() + (idx[sz(b)] + 1) * blk);
  EXPECT_LT(rel_rmse(o, so), kRelRmseBound) << "verify outputs";

  op.commit(cache, accepted, bhkv(pool.data(), 5, s.HV, s.K, s.V));
  for (index_t b = 0; b < s.B; ++b) {
    const std::vector<float> got(pool.begin() + idx[sz(b)] * blk,
                                 pool.begin() + (idx[sz(b)] + 1) * blk);
    if (accepted[sz(b)] == 0)
      EXPECT_TRUE(same_bits(got, at_accept[sz(b)])) << b;
    else
      EXPECT_LT(rel_rmse(got, at_accept[sz(b)]), kRelRmseBound) << b << " m=" << accepted[sz(b)];
  }
  for (index_t r : {0, 3})  // slots no sequence owns
    EXPECT_TRUE(
        std::equal(pool.begin() + r * blk, pool.begin() + (r + 1) * blk, pool0.begin() + r * blk));
  // Bit for bit the chunked prefill of the accepted tokens (sequence 1, from its slot).
  const index_t m = accepted[1];
  if (m > 0) {
    LinearInputs pin = in;
    const auto rows4 = [&](const EView4& x) {
      const auto f = x.as<float>();
      return View4<const float>(f.ptr(1, 0, 0, 0), {1, m, f.size(2), f.size(3)}, f.strides());
    };
    const auto rows3 = [&](const View3<const float>& x) {
      return x.absent() ? x : View3<const float>(x.ptr(1, 0, 0), {1, m, x.size(2)}, x.strides());
    };
    const auto rowsg = [&](const View4<const float>& x) {
      return x.absent()
                 ? x
                 : View4<const float>(x.ptr(1, 0, 0, 0), {1, m, x.size(2), x.size(3)}, x.strides());
    };
    pin.q = rows4(in.q);
    pin.k = rows4(in.k);
    pin.v = rows4(in.v);
    pin.g = rows3(in.g);
    pin.beta = rows3(in.beta);
    pin.a = rows3(in.a);
    pin.b = rows3(in.b);
    pin.gk = rowsg(in.gk);
    pin.graw = rowsg(in.graw);
    pin.initial_state = bhkv(pool0.data() + idx[1] * blk, 1, s.HV, s.K, s.V);
    std::vector<float> po(sz(m * s.HV * s.V)), ph(sz(blk));
    op.template forward<Chunked<16>>(pin, {.o = bthd(po.data(), 1, m, s.HV, s.V),
                                           .final_state = bhkv(ph.data(), 1, s.HV, s.K, s.V)});
    EXPECT_TRUE(
        same_bits(std::vector<float>(pool.begin() + idx[1] * blk, pool.begin() + 2 * blk), ph))
        << "commit vs chunked prefix";
  }
}

TEST(Speculative, VerifyThenCommitEqualsStepTokenByToken) {
  const LinearShape s{.B = 3, .T = 8, .H = 1, .HV = 2, .K = 16, .V = 12};
  const LinearData data(s, 41);
  {
    const auto op = presets::make_gated_delta_rule();
    const LinearInputs in = data.inputs(op.options(), false);
    check_verify_commit(op, in, s, {0, 3, 8});
    check_verify_commit(op, in, s, {8, 1, 5});
  }
  {
    const LinearInputs in = data.inputs(presets::simple_gla{}.options(), false);
    check_verify_commit(presets::simple_gla{}, in, s, {2, 7, 8});
  }
  {  // KDA with fused gates
    const RawGates rg(s, 42);
    LinearInputs in{.q = bthd(data.q.data(), s.B, s.T, s.H, s.K),
                    .k = bthd(data.k.data(), s.B, s.T, s.H, s.K),
                    .v = bthd(data.v.data(), s.B, s.T, s.HV, s.V)};
    rg.raw_kda(in);
    check_verify_commit(presets::make_kda_fused(), in, s, {1, 4, 8});
  }
}

TEST(Speculative, Mamba2VerifyThenCommitEqualsStep) {
  const Mamba2Data d(2, 6, 2, 4, 1, 8, 700);
  const Mamba2 op(gates::TimeStep{.softplus = true});
  const Mamba2Inputs in = d.inputs(false);
  const index_t blk = d.H * d.P * d.N;
  std::vector<float> state = d.h0, y(d.x.size(), NAN);
  linear::VerifyCache cache;
  op.verify(in, bhkv(std::as_const(state).data(), d.B, d.H, d.P, d.N),
            bthd(y.data(), d.B, d.T, d.H, d.P), cache);
  EXPECT_TRUE(same_bits(state, d.h0));
  // Token by token, remembering each sequence's state after its accepted tokens.
  const std::vector<std::int64_t> accepted{2, 6};
  std::vector<float> st = d.h0, ys(y.size());
  std::vector<std::vector<float>> at(2);
  for (index_t t = 0; t <= d.T; ++t) {
    for (index_t b = 0; b < d.B; ++b)
      if (accepted[sz(b)] == t) at[sz(b)].assign(st.begin() + b * blk, st.begin() + (b + 1) * blk);
    if (t == d.T) break;
    const auto row4 = [&](const std::vector<float>& x, index_t h, index_t e) {
      return View4<const float>(x.data() + t * h * e, {d.B, 1, h, e}, {d.T * h * e, h * e, e, 1});
    };
    Mamba2Inputs one = in;
    one.x = row4(d.x, d.H, d.P);
    one.Bm = row4(d.Bm, d.G, d.N);
    one.Cm = row4(d.Cm, d.G, d.N);
    one.dt = View3<const float>(d.dt.data() + t * d.H, {d.B, 1, d.H}, {d.T * d.H, d.H, 1});
    op.step(one, bhkv(st.data(), d.B, d.H, d.P, d.N),
            View4<float>(ys.data() + t * d.H * d.P, {d.B, 1, d.H, d.P},
                         {d.T * d.H * d.P, d.H * d.P, d.P, 1}));
  }
  EXPECT_LT(rel_rmse(y, ys), kRelRmseBound);
  op.commit(cache, accepted, bhkv(state.data(), d.B, d.H, d.P, d.N));
  for (index_t b = 0; b < d.B; ++b)
    EXPECT_LT(rel_rmse(std::vector<float>(state.begin() + b * blk, state.begin() + (b + 1) * blk),
                       at[sz(b)]),
              kRelRmseBound)
        << b;
  // A cache of another gate shape is refused.
  linear::VerifyCache kda_cache;
  {
    const LinearShape s{.B = 2, .T = 3, .H = 1, .HV = 1, .K = 8, .V = 4};
    const LinearData ld(s, 71);
    const auto kop = presets::kda{};
    LinearInputs kin = ld.inputs(kop.options(), false);
    std::vector<float> ks(sz(2 * 8 * 4)), ko(ld.v.size());
    kop.verify(kin, bhkv(std::as_const(ks).data(), 2, 1, 8, 4), bthd(ko.data(), 2, 3, 1, 4),
               kda_cache);
  }
  const std::vector<std::int64_t> one_each{1, 1};
  expect_error("cache", [&] {
    presets::gated_delta_rule{}.commit(kda_cache, one_each, bhkv(state.data(), 2, 1, 8, 4));
  });
}

TEST(Speculative, NamedErrorsWriteNothing) {
  const LinearShape s{.B = 2, .T = 17, .H = 1, .HV = 1, .K = 8, .V = 8};
  const LinearData data(s, 51);
  const auto op = presets::make_gated_delta_rule();
  const LinearInputs in = data.inputs(op.options(), false);
  std::vector<float> st(sz(s.B * s.K * s.V), 2.f), o(data.v.size(), 2.f);
  linear::VerifyCache cache;
  expect_error("q", [&] {
    op.verify(in, bhkv(std::as_const(st).data(), s.B, 1, s.K, s.V),
              bthd(o.data(), s.B, s.T, 1, s.V), cache);
  });
  EXPECT_TRUE(cache.empty());
  const std::vector<std::int64_t> acc{1, 1};
  expect_error("cache", [&] { op.commit(cache, acc, bhkv(st.data(), s.B, 1, s.K, s.V)); });
  // A valid verify of 4 tokens, then bad commits.
  LinearInputs four = in;
  four.q = bthd(data.q.data(), s.B, 4, 1, s.K);  // (rows of the first 4 tokens: strides of T 4)
  four.k = bthd(data.k.data(), s.B, 4, 1, s.K);
  four.v = bthd(data.v.data(), s.B, 4, 1, s.V);
  four.g = bth(data.g.data(), s.B, 4, 1);
  four.beta = bth(data.beta.data(), s.B, 4, 1);
  op.verify(four, bhkv(std::as_const(st).data(), s.B, 1, s.K, s.V), bthd(o.data(), s.B, 4, 1, s.V),
            cache);
  const std::vector<std::int64_t> five{1, 5}, one{1};
  expect_error("accepted", [&] { op.commit(cache, five, bhkv(st.data(), s.B, 1, s.K, s.V)); });
  expect_error("accepted", [&] { op.commit(cache, one, bhkv(st.data(), s.B, 1, s.K, s.V)); });
  expect_error("state", [&] { op.commit(cache, acc, bhkv(st.data(), s.B, 1, s.K, s.V - 1)); });
  for (float x : st) ASSERT_EQ(x, 2.f);
}

}  // namespace
}  // namespace polyattn::test
