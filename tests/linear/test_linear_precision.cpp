// bf16 / fp16 q, k, v and o for the linear family (SPEC §8, docs/conventions.md §9.8): every
// preset family in use (additive linear attention, the Sum normaliser, constant and scalar
// decay, key-channel decay, delta rule and gated delta rule, KDA, Based's feature map) × every
// algorithm (Recurrent, Chunked<16|64|128>, Parallel) × {bf16, fp16} inputs × {the same type, fp32}
// for o, on every ISA (ctest reruns the binary per lower ISA with POLYATTN_ISA).
//
// Each problem's fp32 random data is rounded to the element type first; the fp32 arrays then
// hold exactly the values the bf16 / fp16 arrays hold, and the double reference runs on them.
// What is checked:
//   * bits: conversion on load is exact and happens before any arithmetic, so T inputs with an
//     fp32 o give the bits of the fp32 operator on the rounded values (o and final state), and a
//     T o holds exactly those fp32 outputs rounded once to nearest even; on the AMX tiles the
//     state does not depend on o's type, and a bf16 o, whose products that reach only o take
//     fewer bf16 terms, differs from the fp32 o rounded once (the cheaper products ran);
//   * bounds against the double reference: relative RMSE < 8e-3 (bf16 o), < 2e-3 (fp16 o), and
//     the fp32 bound 1e-5 for an fp32 o and for the final state (fp32 states: o is the only
//     rounded result);
//   * T = 4096 with extreme gates (log-gates down to −20 per token) and T = 1024 with slow gates
//     (the inter-chunk product q S0 carries o) in bf16; GVA; varlen; head-
//     first and interleaved (packed) strides; decode step() and state pools; the chunk-parallel
//     path on threads; mixed element types among q, k, v are Errors naming the argument, with
//     every output untouched, also in the papers' operators built on the family;
//   * the fused-gate policy sets (gates and β formed in the kernel from raw projections: Gated
//     DeltaNet, KDA plain and bounded, Mamba2) in bf16 at the AMX tiles' shapes, ragged last
//     chunks included, against the reference on the gates formed in double; at the amx level
//     they must run on the tiles.
// The worst errors measured are printed (stdout) for the record.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/expect_error.hpp"
#include "common/precision.hpp"
#include "linear/raw_gates.hpp"
#include "linear_harness.hpp"
#include "polyattn/core/element.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/linear/mamba2.hpp"
#include "polyattn/papers/lightnet.hpp"
#include "polyattn/reference/based.hpp"

namespace polyattn::test {
namespace {

// The worst errors seen by a test, per element type; o_t_tiles: a T o whose tile products that
// reach only o took fewer than three terms (LinearAttention::tile_output_terms).
struct Worst {
  double o_t = 0, o_f32 = 0, state = 0, o_t_tiles = 0;
  void add(double ot, double of, double st) {
    o_t = std::max(o_t, ot);
    o_f32 = std::max(o_f32, of);
    state = std::max(state, st);
  }
  void print(const char* test, const char* type) const {
    std::printf("[precision] %s %s: worst rel RMSE  o(%s) %.3e  o(fp32) %.3e  state %.3e", test,
                type, type, o_t, o_f32, state);
    if (o_t_tiles > 0) std::printf("  (o(%s), fewer-term tile products: %.3e)", type, o_t_tiles);
    std::printf("\n");
  }
};

// A problem whose q, k, v are rounded to T: f holds the rounded values as fp32, q/k/v as T.
template <Element T>
struct Rounded {
  LinearData f;
  std::vector<T> q, k, v;
  explicit Rounded(LinearData d) : f(std::move(d)) {
    round_all<T>(f.q);
    round_all<T>(f.k);
    round_all<T>(f.v);
    q = narrow<T>(f.q);
    k = narrow<T>(f.k);
    v = narrow<T>(f.v);
  }
  LinearInputs inputs(const LinearOptions& opt, bool with_h0) const {
    const auto& s = f.s;
    LinearInputs in = f.inputs(opt, with_h0);
    in.q = bthd(q.data(), s.B, s.T, s.H, s.K);
    in.k = bthd(k.data(), s.B, s.T, s.H, s.K);
    in.v = bthd(v.data(), s.B, s.T, s.HV, s.V);
    return in;
  }
};

// The reference's view of an operator's inputs: a preset that carries g_gamma passes it.
template <class Op>
LinearInputs reference_inputs(const Op& op, LinearInputs in) {
  if constexpr (requires { op.decay().g_gamma; }) {
    const auto& gg = op.decay().g_gamma;
    if (!gg.empty())
      in.g_gamma = View1<const float>::contiguous(gg.data(), {static_cast<index_t>(gg.size())});
  }
  return in;
}

// Problems that ran on AMX tiles (Linear.uses_bf16_products), for the record.
int tile_checks = 0;

// One problem at element type T with algorithm Algo: the fp32 operator on the rounded values
// (in32), T inputs (inT) with fp32 o and with T o, and the double reference on `ref` with
// `ref_opt` (module comment). Returns whether it ran on the AMX tiles.
template <class Algo, Element T, class Op, class E>
bool check_problem(const Op& op, const LinearShape& s, index_t N, const LinearInputs& in32,
                   const LinearInputs& inT, const LinearInputs& ref, const LinearOptions& ref_opt,
                   const std::string& tag, Worst& worst, const E& exec) {
  const auto no = static_cast<std::size_t>(s.B * s.T * s.HV * s.V);
  const auto ns = static_cast<std::size_t>(N * s.HV * s.K * s.V);
  const auto ov = [&](auto* p) { return bthd(p, s.B, s.T, s.HV, s.V); };
  const auto sv = [&](auto* p) { return bhkv(p, N, s.HV, s.K, s.V); };

  std::vector<float> o32(no, NAN), ht32(ns, NAN), oF(no, NAN), htF(ns, NAN), htT(ns, NAN);
  std::vector<T> oT(no, from_float<T>(NAN));
  op.template forward<Algo>(in32, {.o = ov(o32.data()), .final_state = sv(ht32.data())}, {}, exec);
  op.template forward<Algo>(inT, {.o = ov(oF.data()), .final_state = sv(htF.data())}, {}, exec);
  op.template forward<Algo>(inT, {.o = ov(oT.data()), .final_state = sv(htT.data())}, {}, exec);
  const bool tiles = op.template uses_bf16_products<Algo>(inT);
  const int terms = op.template tile_output_terms<Algo>(inT, dtype_of<T>);
  if (tiles) {
    // AMX tiles (chunked_amx.hpp): not the fp32 path's bits, but the fp32 bounds below for an
    // fp32 o and the state, and the same state whatever o's type (the products that reach it
    // keep three terms). A T o whose own products take three terms too is the fp32 o rounded
    // once; a bf16 o's take fewer, so it must differ from that (the fewer-term products ran) and
    // keep to its own bound below (SPEC: 8e-3).
    ++tile_checks;
    EXPECT_EQ(op.template tile_output_terms<Algo>(inT, Dtype::f32), 3) << tag;
    EXPECT_TRUE(same_bits(htT, htF)) << tag << ": final state, " << kName<T> << " o (tiles)";
    if (terms == 3) {
      EXPECT_TRUE(same_bits(oT, narrow<T>(oF))) << tag << ": o rounded once (tiles)";
    } else {
      EXPECT_FALSE(same_bits(oT, narrow<T>(oF)))
          << tag << ": " << terms << "-term output products not taken (tiles)";
    }
  } else {
    EXPECT_EQ(terms, 0) << tag;
    EXPECT_TRUE(same_bits(oF, o32)) << tag << ": fp32 o from " << kName<T> << " inputs";
    EXPECT_TRUE(same_bits(htF, ht32)) << tag << ": final state, fp32 o";
    EXPECT_TRUE(same_bits(htT, ht32)) << tag << ": final state, " << kName<T> << " o";
    EXPECT_TRUE(same_bits(oT, narrow<T>(o32))) << tag << ": o rounded once";
  }

  std::vector<double> ro(no), rht(ns);
  reference::linear_recurrence<double>(ref, ref_opt,
                                       {.o = ov(ro.data()), .final_state = sv(rht.data())});
  const double eT = rel_rmse(widen(oT), ro), eF = rel_rmse(oF, ro), eS = rel_rmse(htT, rht);
  EXPECT_LT(eT, kBound<T>) << tag << ": " << kName<T> << " o";
  EXPECT_LT(eF, kRelRmseBound) << tag << ": fp32 o";
  EXPECT_LT(eS, kRelRmseBound) << tag << ": final state";
  worst.add(eT, eF, eS);
  if (tiles && terms < 3) worst.o_t_tiles = std::max(worst.o_t_tiles, eT);
  return tiles;
}

// check_problem on a preset whose gates are LinearData's tensors (op.options() says which).
template <class Algo, Element T, class Op, class E = Serial>
void check_types(const Op& op, const LinearData& data, bool with_h0,
                 std::span<const std::int64_t> cu, const std::string& what, Worst& worst,
                 const E& exec = E{}) {
  const auto& s = data.s;
  const Rounded<T> r(data);
  const LinearOptions opt = op.options();
  const index_t N = cu.empty() ? s.B : static_cast<index_t>(cu.size()) - 1;
  LinearInputs in32 = r.f.inputs(opt, with_h0), inT = r.inputs(opt, with_h0);
  in32.cu_seqlens = cu;
  inT.cu_seqlens = cu;
  check_problem<Algo, T>(op, s, N, in32, inT, reference_inputs(op, in32), opt,
                         what + " " + Algo::name + " " + kName<T>, worst, exec);
}

// Every preset family the library ships with its own reference mode (Based: see below).
template <class F>
void for_each_preset(index_t HV, F&& f) {
  f(presets::linear_attn{}, "linear_attn", false);
  f(presets::make_linear_attn_normalized(), "linear_attn_normalized", true);
  f(presets::make_retention(HV), "retention", false);
  f(presets::simple_gla{}, "simple_gla", false);
  f(presets::gla{}, "gla", false);
  f(presets::make_delta_rule(), "delta_rule", false);
  f(presets::make_gated_delta_rule(), "gated_delta_rule", false);
  f(presets::make_kda(), "kda", false);
}

template <class Algo, Element T>
void sweep(Worst& worst) {
  // The last shape's K and V are multiples of 32: AMX tiles where the machine has them.
  const LinearShape shapes[] = {
      {1, 1, 1, 1, 16, 16}, {2, 63, 2, 4, 60, 17}, {1, 130, 1, 2, 64, 48}, {2, 100, 2, 4, 64, 32}};
  std::uint64_t seed = 100;
  for (const LinearShape& s : shapes) {
    for_each_preset(s.HV, [&](const auto& op, const char* name, bool positive) {
      const bool with_h0 = s.T != 63;  // with and without an initial state
      const LinearData data(s, seed++, 1.0, positive);
      check_types<Algo, T>(op, data, with_h0, {}, std::string(name) + " " + s.str(), worst);
    });
  }
}

template <Element T>
void sweep_all_algorithms(const char* test) {
  Worst worst;
  const int tiles_before = tile_checks;
  sweep<Recurrent, T>(worst);
  sweep<Chunked<16>, T>(worst);
  sweep<Chunked<64>, T>(worst);
  sweep<Chunked<128>, T>(worst);  // chunks past 64 tokens: the tiles' other substitution blocking
  sweep<Parallel, T>(worst);
  worst.print(test, kName<T>);
  const bool amx =
      std::is_same_v<T, bf16> && simd::isa_at_least(simd::runtime_isa(), simd::Isa::amx);
  if (amx) {
    EXPECT_GT(tile_checks, tiles_before) << "no problem ran on the AMX tiles";
  }
  std::printf("[precision] %s %s: %d problems on AMX tiles\n", test, kName<T>,
              tile_checks - tiles_before);
}

TEST(LinearPrecision, EveryPresetAlgorithmBf16) {
  sweep_all_algorithms<bf16>("presets x algorithms");
}

TEST(LinearPrecision, EveryPresetAlgorithmFp16) {
  sweep_all_algorithms<f16>("presets x algorithms");
}

// run(op, name) for the four gated presets whose gates the long-sequence cases scale, each named
// with its preset and `what`.
template <class Run>
void for_each_gated_preset(const Run& run, const std::string& what) {
  run(presets::simple_gla{}, ("simple_gla" + what).c_str());
  run(presets::gla{}, ("gla" + what).c_str());
  run(presets::make_gated_delta_rule(), ("gated_delta_rule" + what).c_str());
  run(presets::make_kda(), ("kda" + what).c_str());
}

// Log-gates ÷0.01 (down to −20 per token) over 4096 tokens: the flushing of §9.5 and the chunk-
// relative cumulative gates keep the bf16 and fp16 results within their bounds.
TEST(LinearPrecision, LongSequenceExtremeGates) {
  const LinearShape s{1, 4096, 1, 2, 32, 32};
  Worst wb, wh;
  std::uint64_t seed = 700;
  const auto run = [&](const auto& op, const char* name) {
    const LinearData data(s, seed++, 0.01);
    check_types<Chunked<64>, bf16>(op, data, true, {}, name, wb);
    check_types<Recurrent, bf16>(op, data, true, {}, name, wb);
    check_types<Chunked<64>, f16>(op, data, true, {}, name, wh);
  };
  for_each_gated_preset(run, " T4096 gates/0.01");
  wb.print("T=4096 extreme gates", "bf16");
  wh.print("T=4096 extreme gates", "fp16");
}

// Log-gates ×0.01 (decays of 0.998–0.99999 per token) over 1024 tokens: the chunk's initial state
// carries most of o (the inter-chunk product q S0), where extreme gates leave only the intra-chunk
// scores.
TEST(LinearPrecision, LongSequenceSlowGates) {
  const LinearShape s{1, 1024, 1, 1, 64, 64};
  Worst wb;
  std::uint64_t seed = 750;
  const auto run = [&](const auto& op, const char* name) {
    const LinearData data(s, seed++, 100.0);
    check_types<Chunked<64>, bf16>(op, data, true, {}, name, wb);
  };
  for_each_gated_preset(run, " T1024 gates*0.01");
  wb.print("T=1024 slow gates", "bf16");
}

// Packed sequences (one empty) with grouped value heads (HV = 3H).
TEST(LinearPrecision, VarlenWithGroupedValueHeads) {
  const std::vector<std::int64_t> cu{0, 37, 37, 100, 165};
  Worst wb, wh;
  std::uint64_t seed = 800;
  for (const LinearShape s :
       {LinearShape{1, 165, 2, 6, 24, 40}, LinearShape{1, 165, 1, 3, 32, 64}}) {
    const auto run = [&](const auto& op, const char* name, bool positive) {
      const LinearData data(s, seed++, 1.0, positive);
      check_types<Recurrent, bf16>(op, data, false, cu, name, wb);
      check_types<Chunked<32>, bf16>(op, data, false, cu, name, wb);
      check_types<Parallel, bf16>(op, data, false, cu, name, wb);
      check_types<Chunked<16>, f16>(op, data, false, cu, name, wh);
      check_types<Parallel, f16>(op, data, false, cu, name, wh);
    };
    for_each_preset(s.HV, run);
  }
  wb.print("varlen + GVA", "bf16");
  wh.print("varlen + GVA", "fp16");
}

// The fused-gate policy sets (policies/fused_gates.hpp: Gated DeltaNet's and KDA's log decays,
// plain and bounded, with β = sigmoid(b); Mamba2's Δ·A decay and Δ-weighted values), bf16 q, k,
// v at shapes the AMX tiles take (K, V multiples of 32): check_problem against the double
// reference on the gates formed in double from the same raw projections, and at the amx level
// every problem must have run on the tiles.
template <class Algo>
void fused_gate_problems(const LinearShape& s, std::uint64_t seed, Worst& worst) {
  const Rounded<bf16> r(LinearData(s, seed));
  const LinearInputs in32 = r.f.inputs({}, true), inT = r.inputs({}, true);  // q, k, v, h0
  const bool amx = simd::isa_at_least(simd::runtime_isa(), simd::Isa::amx);
  const auto check = [&](const auto& op, const auto& add_raw, const LinearInputs& ref,
                         const LinearOptions& ref_opt, const std::string& name) {
    LinearInputs a = in32, b = inT;
    add_raw(a);
    add_raw(b);
    const std::string tag = name + " " + s.str() + " " + Algo::name + " bf16";
    const bool tiles =
        check_problem<Algo, bf16>(op, s, s.B, a, b, ref, ref_opt, tag, worst, Serial{});
    if (amx) {
      EXPECT_TRUE(tiles) << tag << ": not on the AMX tiles";
    }
  };
  for (const bool bounded : {false, true}) {
    const RawGates rg(s, seed + 10, bounded);
    LinearInputs ref = in32;
    ref.beta = bth(rg.beta64.data(), s.B, s.T, s.HV);
    if (!bounded) {
      ref.g = bth(rg.g64.data(), s.B, s.T, s.HV);
      check(
          presets::make_gated_delta_rule_fused(), [&](LinearInputs& in) { rg.raw_gdn(in); }, ref,
          presets::make_gated_delta_rule().options(), "gated_delta_rule_fused");
      ref.g = {};
    }
    ref.gk = bthd(rg.gk64.data(), s.B, s.T, s.HV, s.K);
    check(
        presets::make_kda_fused(true, bounded), [&](LinearInputs& in) { rg.raw_kda(in); }, ref,
        presets::make_kda().options(), bounded ? "kda_fused bounded" : "kda_fused");
  }
  const gates::TimeStep ts{.softplus = true, .min = 0.01f, .max = 2.f};
  const RawTimeSteps m(s, seed + 20, ts, r.f.v);
  LinearInputs ref = in32;
  ref.v = bthd(m.xdt64.data(), s.B, s.T, s.HV, s.V);
  ref.g = bth(m.g64.data(), s.B, s.T, s.HV);
  check(
      Mamba2::linear_operator({}, Mamba2Decay{ts}, Mamba2Update{false, ts}, {}),
      [&](LinearInputs& in) { m.raw(in); }, ref, presets::simple_gla{}.options(), "mamba2");
}

TEST(LinearPrecision, FusedGatesBf16OnTiles) {
  Worst worst;
  const int tiles_before = tile_checks;
  // Chunked<64>: two chunks, the last ragged (36 tokens); three, the last 2 tokens (GVA).
  fused_gate_problems<Chunked<64>>({2, 100, 2, 4, 64, 32}, 1400, worst);
  fused_gate_problems<Chunked<64>>({1, 130, 1, 2, 32, 64}, 1500, worst);
  fused_gate_problems<Chunked<32>>({1, 75, 1, 1, 32, 32}, 1600, worst);
  fused_gate_problems<Parallel>({1, 100, 1, 1, 32, 32}, 1700, worst);
  worst.print("fused gates", "bf16");
  std::printf("[precision] fused gates bf16: %d problems on AMX tiles\n",
              tile_checks - tiles_before);
}

// Based: Taylor-2 feature map on bf16 / fp16 q, k (mapped rows are fp32, v stays T in the
// kernels), against reference::based_attention on the rounded values.
template <class Algo, Element T>
void based_case(Worst& worst) {
  const LinearShape s{2, 70, 2, 2, 16, 24};
  const Rounded<T> r(LinearData(s, 900));
  const auto op = presets::make_based();
  const LinearOptions opt{};
  const LinearInputs in32 = r.f.inputs(opt, false), inT = r.inputs(opt, false);
  const auto no = static_cast<std::size_t>(s.B * s.T * s.HV * s.V);
  const auto ov = [&](auto* p) { return bthd(p, s.B, s.T, s.HV, s.V); };
  std::vector<float> o32(no, NAN), oF(no, NAN);
  std::vector<T> oT(no);
  op.forward<Algo>(in32, {.o = ov(o32.data())});
  op.forward<Algo>(inT, {.o = ov(oF.data())});
  op.forward<Algo>(inT, {.o = ov(oT.data())});
  EXPECT_TRUE(same_bits(oF, o32)) << Algo::name << " " << kName<T>;
  EXPECT_TRUE(same_bits(oT, narrow<T>(o32))) << Algo::name << " " << kName<T>;
  std::vector<double> ref(no);
  reference::based_attention<double>({.q = bthd(r.f.q.data(), s.B, s.T, s.H, s.K),
                                      .k = bthd(r.f.k.data(), s.B, s.T, s.H, s.K),
                                      .v = bthd(r.f.v.data(), s.B, s.T, s.HV, s.V)},
                                     {}, ov(ref.data()));
  const double eT = rel_rmse(widen(oT), ref), eF = rel_rmse(oF, ref);
  EXPECT_LT(eT, kBound<T>) << Algo::name << " " << kName<T>;
  EXPECT_LT(eF, kRelRmseBound) << Algo::name << " " << kName<T>;
  worst.add(eT, eF, 0.0);
}

TEST(LinearPrecision, BasedFeatureMap) {
  Worst wb, wh;
  based_case<Recurrent, bf16>(wb);
  based_case<Chunked<32>, bf16>(wb);
  based_case<Parallel, bf16>(wb);
  based_case<Recurrent, f16>(wh);
  based_case<Chunked<32>, f16>(wh);
  wb.print("based", "bf16");
  wh.print("based", "fp16");
}

// One shape of StridedViewsGiveContiguousBits.
void strided_views_give_contiguous_bits(const LinearShape& s) {
  const Rounded<bf16> r(LinearData(s, 1000));
  const auto op = presets::make_gated_delta_rule();
  const LinearOptions opt = op.options();
  const auto no = static_cast<std::size_t>(s.B * s.T * s.HV * s.V);
  std::vector<bf16> o_ref(no), o_hf(no), o_il(2 * no);
  const LinearInputs in = r.inputs(opt, true);
  op.forward<Chunked<16>>(in, {.o = bthd(o_ref.data(), s.B, s.T, s.HV, s.V)});
  if (s.K % 32 == 0 && simd::isa_at_least(simd::runtime_isa(), simd::Isa::amx)) {
    EXPECT_LT(op.tile_output_terms<Chunked<16>>(in, Dtype::bf16), 3) << s.str();
  }

  // Head-first copies of q, k, v and a head-first o.
  const auto to_hf = [&](const std::vector<bf16>& x, index_t H, index_t D) {
    std::vector<bf16> y(x.size());
    for (index_t b = 0; b < s.B; ++b)
      for (index_t t = 0; t < s.T; ++t)
        for (index_t h = 0; h < H; ++h)
          for (index_t d = 0; d < D; ++d)
            y[static_cast<std::size_t>(((b * H + h) * s.T + t) * D + d)] =
                x[static_cast<std::size_t>(((b * s.T + t) * H + h) * D + d)];
    return y;
  };
  const auto qh = to_hf(r.q, s.H, s.K), kh = to_hf(r.k, s.H, s.K), vh = to_hf(r.v, s.HV, s.V);
  LinearInputs hf = in;
  hf.q = head_first(qh.data(), s.B, s.T, s.H, s.K);
  hf.k = head_first(kh.data(), s.B, s.T, s.H, s.K);
  hf.v = head_first(vh.data(), s.B, s.T, s.HV, s.V);
  op.forward<Chunked<16>>(hf, {.o = head_first(o_hf.data(), s.B, s.T, s.HV, s.V)});
  EXPECT_TRUE(same_bits(to_hf(o_ref, s.HV, s.V), o_hf)) << "head-first " << s.str();

  // Interleaved: every element followed by a padding element.
  const auto spread = [](const std::vector<bf16>& x) {
    std::vector<bf16> y(2 * x.size(), from_float<bf16>(1e30f));
    for (std::size_t i = 0; i < x.size(); ++i) y[2 * i] = x[i];
    return y;
  };
  const auto qi = spread(r.q), ki = spread(r.k), vi = spread(r.v);
  const auto il = [&](auto* p, index_t H, index_t D) {
    return View4<std::remove_reference_t<decltype(*p)>>(p, {s.B, s.T, H, D},
                                                        {2 * s.T * H * D, 2 * H * D, 2 * D, 2});
  };
  LinearInputs iv = in;
  iv.q = il(qi.data(), s.H, s.K);
  iv.k = il(ki.data(), s.H, s.K);
  iv.v = il(vi.data(), s.HV, s.V);
  const bf16 pad = from_float<bf16>(-7.f);
  std::fill(o_il.begin(), o_il.end(), pad);
  op.forward<Chunked<16>>(iv, {.o = il(o_il.data(), s.HV, s.V)});
  std::vector<bf16> o_even(no);
  bool pads_kept = true;
  for (std::size_t i = 0; i < no; ++i) {
    o_even[i] = o_il[2 * i];
    pads_kept = pads_kept && o_il[2 * i + 1] == pad;
  }
  EXPECT_TRUE(same_bits(o_even, o_ref)) << "interleaved " << s.str();
  EXPECT_TRUE(pads_kept) << "o's padding elements were written";
}

// Head-first bf16 inputs and o read / written through strides, and interleaved rows (inner
// stride 2: the operator packs q, k, v into bf16 rows and stores o through an fp32 scratch)
// give the bits of the contiguous call. The second shape runs on the AMX tiles where the machine
// has them: a bf16 o behind the fp32 scratch still takes the bf16 o's fewer-term products.
TEST(LinearPrecision, StridedViewsGiveContiguousBits) {
  for (const LinearShape& s : {LinearShape{2, 50, 2, 4, 20, 12}, LinearShape{1, 50, 1, 2, 32, 32}})
    strided_views_give_contiguous_bits(s);
}

// Decode: step() token by token on bf16 q, k, v with a bf16 o equals forward<Recurrent> bit for
// bit (the contract of docs/conventions.md §8), also with the state in a pool.
TEST(LinearPrecision, DecodeStepAndStatePool) {
  const LinearShape s{2, 9, 1, 2, 16, 24};
  const Rounded<bf16> r(LinearData(s, 1100));
  const auto op = presets::make_kda();
  const LinearOptions opt = op.options();
  const auto no = static_cast<std::size_t>(s.B * s.T * s.HV * s.V);
  const auto ns = static_cast<std::size_t>(s.B * s.HV * s.K * s.V);
  const LinearInputs in = r.inputs(opt, true);
  std::vector<bf16> o_fwd(no);
  std::vector<float> ht(ns);
  op.forward<Recurrent>(in, {.o = bthd(o_fwd.data(), s.B, s.T, s.HV, s.V),
                             .final_state = bhkv(ht.data(), s.B, s.HV, s.K, s.V)});

  // Pool of 5 slots; sequence b lives in slot idx[b].
  const std::vector<std::int64_t> idx{3, 1};
  const index_t slots = 5;
  std::vector<float> pool(static_cast<std::size_t>(slots * s.HV * s.K * s.V), 0.5f);
  const std::size_t block = static_cast<std::size_t>(s.HV * s.K * s.V);
  for (std::size_t b = 0; b < idx.size(); ++b)
    std::copy(r.f.h0.begin() + static_cast<std::ptrdiff_t>(b * block),
              r.f.h0.begin() + static_cast<std::ptrdiff_t>((b + 1) * block),
              pool.begin() + static_cast<std::ptrdiff_t>(idx[b] * block));
  std::vector<float> state = r.f.h0;
  std::vector<bf16> o_step(no), o_pool(no);
  const auto tok = [&](auto* base, index_t t, index_t H, index_t D) {
    return View4<std::remove_reference_t<decltype(*base)>>(base + t * H * D, {s.B, 1, H, D},
                                                           {s.T * H * D, H * D, D, 1});
  };
  for (index_t t = 0; t < s.T; ++t) {
    LinearInputs st{.q = tok(r.q.data(), t, s.H, s.K),
                    .k = tok(r.k.data(), t, s.H, s.K),
                    .v = tok(r.v.data(), t, s.HV, s.V),
                    .gk = tok(r.f.gk.data(), t, s.HV, s.K),
                    .beta = View3<const float>(r.f.beta.data() + t * s.HV, {s.B, 1, s.HV},
                                               {s.T * s.HV, s.HV, 1})};
    op.step(st, bhkv(state.data(), s.B, s.HV, s.K, s.V), tok(o_step.data(), t, s.HV, s.V));
    st.state_indices = idx;
    op.step(st, bhkv(pool.data(), slots, s.HV, s.K, s.V), tok(o_pool.data(), t, s.HV, s.V));
  }
  EXPECT_TRUE(same_bits(o_step, o_fwd));
  EXPECT_TRUE(same_bits(state, ht));
  EXPECT_TRUE(same_bits(o_pool, o_fwd));
  for (std::size_t b = 0; b < idx.size(); ++b)
    EXPECT_EQ(0, std::memcmp(pool.data() + idx[b] * static_cast<std::int64_t>(block),
                             ht.data() + b * block, block * sizeof(float)))
        << "pool slot " << idx[b];
  EXPECT_EQ(pool[0], 0.5f);  // a slot no sequence owns is untouched
}

// Fewer heads than threads: the chunk-parallel path (outputs per chunk from its starting state)
// gives the serial bits with bf16 / fp16 inputs and o too.
TEST(LinearPrecision, ChunkParallelThreadsGiveSerialBits) {
  // fp16 with V = 40 (conversion on load), and bf16 with K, V multiples of 32 (AMX tiles where
  // the machine has them: ΔS from zero, then the same two-rounding combine as the scheduler).
  const auto check = [&]<Element T>(const LinearShape& s) {
    const auto run = [&](const auto& op, const auto& exec) {
      const Rounded<T> r(LinearData(s, 1200));
      const LinearInputs in = r.inputs(op.options(), true);
      std::vector<bf16> o(static_cast<std::size_t>(s.T * s.V));
      std::vector<float> ht(static_cast<std::size_t>(s.K * s.V));
      op.template forward<Chunked<32>>(in,
                                       {.o = bthd(o.data(), s.B, s.T, s.HV, s.V),
                                        .final_state = bhkv(ht.data(), s.B, s.HV, s.K, s.V)},
                                       {}, exec);
      return std::pair{o, ht};
    };
    const ThreadPool pool(4);
    for (const auto& [a, b] :
         {std::pair{run(presets::gla{}, Serial{}), run(presets::gla{}, pool)},
          std::pair{run(presets::simple_gla{}, Serial{}), run(presets::simple_gla{}, pool)}}) {
      EXPECT_TRUE(same_bits(a.first, b.first)) << kName<T>;
      EXPECT_TRUE(same_bits(a.second, b.second)) << kName<T>;
    }
  };
  check.template operator()<f16>(LinearShape{1, 300, 1, 1, 32, 40});
  check.template operator()<bf16>(LinearShape{1, 300, 1, 1, 32, 64});
}

// Heads in lockstep (scheduler.hpp: one chunk per head and turn, each turn a call of its own)
// give the bits of heads run whole, one per task, on the AMX tiles too (a call splits its
// state's pairs itself; within one call the state pass hands them to the next chunk): Serial
// takes the 5 heads of a sequence in turn, 8 threads one head per task. bf16 q, k, v and o with
// K and V multiples of 32 (the tiles, where the machine has them); packed sequences (one empty),
// ragged last chunks and snapshots (one inside a chunk) included.
TEST(LinearPrecision, LockstepHeadsKeepTheBitsOnTiles) {
  const LinearShape s{.B = 1, .T = 301, .H = 1, .HV = 5, .K = 32, .V = 64};
  const index_t N = 3, M = 3;
  const std::vector<std::int64_t> cu{0, 150, 150, 301};
  const std::vector<std::int64_t> snap_pos{64, 100, 32};  // sequence 0: 64 and 100; 2: 32
  const std::vector<std::int64_t> snap_off{0, 2, 2, 3};
  const auto check = [&](const auto& op, const char* name) {
    const Rounded<bf16> r(LinearData(s, 1250));
    LinearInputs in = r.inputs(op.options(), false);
    const std::vector<float> h0 = polyattn::test::random_vector(N * s.HV * s.K * s.V, 1251);
    in.cu_seqlens = cu;
    in.initial_state = bhkv(h0.data(), N, s.HV, s.K, s.V);
    in.snapshot_positions = snap_pos;
    in.snapshot_offsets = snap_off;
    const auto run = [&](const auto& exec) {
      std::vector<bf16> o(static_cast<std::size_t>(s.T * s.HV * s.V));
      std::vector<float> ht(static_cast<std::size_t>(N * s.HV * s.K * s.V)),
          snaps(M * s.HV * s.K * s.V);
      op.template forward<Chunked<32>>(in,
                                       {.o = bthd(o.data(), 1, s.T, s.HV, s.V),
                                        .final_state = bhkv(ht.data(), N, s.HV, s.K, s.V),
                                        .snapshots = bhkv(snaps.data(), M, s.HV, s.K, s.V)},
                                       {}, exec);
      return std::tuple{o, ht, snaps};
    };
    const auto [o1, ht1, sn1] = run(Serial{});
    const auto [o8, ht8, sn8] = run(ThreadPool(8));
    EXPECT_TRUE(same_bits(o1, o8)) << name;
    EXPECT_TRUE(same_bits(ht1, ht8)) << name;
    EXPECT_TRUE(same_bits(sn1, sn8)) << name;
    if (op.template uses_bf16_products<Chunked<32>>(in)) ++tile_checks;
  };
  check(presets::make_gated_delta_rule(), "gdn");
  check(presets::make_kda(), "kda");
  check(presets::gla{}, "gla");
}

// q, k and v must share one element type: the Error names the first of k, v that differs, and
// nothing is written (o, final state; step's state).
TEST(LinearPrecision, MixedInputTypesAreNamedErrors) {
  const LinearShape s{1, 8, 1, 1, 8, 8};
  const LinearData d(s, 1300);
  const Rounded<bf16> rb(d);
  const Rounded<f16> rh(d);
  const auto op = presets::make_gated_delta_rule();
  const LinearOptions opt = op.options();
  const auto no = static_cast<std::size_t>(s.T * s.V), ns = static_cast<std::size_t>(s.K * s.V);
  const bf16 sentinel = from_float<bf16>(-3.f);
  std::vector<bf16> o(no, sentinel);
  std::vector<float> ht(ns, -3.f);
  const auto outs = [&] {
    return LinearOutputs<float>{.o = bthd(o.data(), s.B, s.T, s.HV, s.V),
                                .final_state = bhkv(ht.data(), s.B, s.HV, s.K, s.V)};
  };
  const auto expect_rejected = [&](const char* name, const LinearInputs& in) {
    const std::string msg = expect_error(name, [&] { op.forward<Chunked<16>>(in, outs()); });
    EXPECT_NE(msg.find("same element type"), std::string::npos) << msg;
    expect_error(name, [&] { op.forward<Recurrent>(in, outs()); });
    expect_error(name, [&] {
      std::vector<double> ro(no);
      reference::linear_recurrence<double>(in, opt, {.o = bthd(ro.data(), s.B, s.T, s.HV, s.V)});
    });
    std::vector<float> state(ns, -3.f);
    LinearInputs st = in;
    st.initial_state = {};
    expect_error(name, [&] {
      op.step(st, bhkv(state.data(), s.B, s.HV, s.K, s.V), bthd(o.data(), s.B, s.T, s.HV, s.V));
    });
    EXPECT_TRUE(std::all_of(state.begin(), state.end(), [](float x) { return x == -3.f; }));
  };
  LinearInputs in = rb.inputs(opt, true);
  in.k = bthd(d.k.data(), s.B, s.T, s.H, s.K);  // q bf16, k fp32
  expect_rejected("k", in);
  in = rb.inputs(opt, true);
  in.v = bthd(rh.v.data(), s.B, s.T, s.HV, s.V);  // q, k bf16, v fp16
  expect_rejected("v", in);
  in = d.inputs(opt, true);
  in.k = bthd(rh.k.data(), s.B, s.T, s.H, s.K);  // q fp32, k fp16
  expect_rejected("k", in);
  EXPECT_TRUE(std::all_of(o.begin(), o.end(), [&](bf16 x) { return x == sentinel; }));
  EXPECT_TRUE(std::all_of(ht.begin(), ht.end(), [](float x) { return x == -3.f; }));

  // The papers' operators built on the family follow the same rule (tests/papers/
  // test_papers_precision.cpp covers their bf16 / fp16 results).
  const auto ln = papers::presets::make_lightnet();
  std::vector<float> of(no, -3.f);
  expect_error("k", [&] {
    ln.forward(LinearInputs{.q = bthd(rb.q.data(), s.B, s.T, s.H, s.K),
                            .k = bthd(d.k.data(), s.B, s.T, s.H, s.K),
                            .v = bthd(rb.v.data(), s.B, s.T, s.HV, s.V)},
               {}, {.o = bthd(of.data(), s.B, s.T, s.HV, s.V)}, {});
  });
  EXPECT_TRUE(std::all_of(of.begin(), of.end(), [](float x) { return x == -3.f; }));
  EXPECT_TRUE(std::all_of(o.begin(), o.end(), [&](bf16 x) { return x == sentinel; }));
}

}  // namespace
}  // namespace polyattn::test
