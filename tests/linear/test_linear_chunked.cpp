// tests/linear/test_linear_chunked.cpp — Chunked<C> and Parallel for every preset against the
// naive reference (docs/conventions.md §9 bound) over awkward shapes and extreme gates, and the
// algorithms against each other (recurrent == chunked == parallel); state carried across split
// prefill.
#include <gtest/gtest.h>

#include <cstring>

#include "linear/linear_harness.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_matches_reference;
using polyattn::test::LinearData;
using polyattn::test::LinearShape;
using polyattn::test::rel_rmse;

// Log-gates divided by 0.01 … 10: the chunked forms never build e^{+large}.
TEST(LinearChunked, ExtremeGates) {
  for (double div : {0.01, 0.1, 1.0, 10.0}) {
    LinearData data({.B = 1, .T = 130, .H = 1, .HV = 2, .K = 32, .V = 20}, 77, div);
    const std::string tag = " gate/" + std::to_string(div);
    expect_matches_reference<Chunked<64>>(presets::make_gated_delta_rule(), data, true,
                                          "gdn" + tag);
    expect_matches_reference<Chunked<64>>(presets::make_kda(), data, true, "kda" + tag);
    expect_matches_reference<Chunked<32>>(presets::gla{}, data, true, "gla" + tag);
    expect_matches_reference<Chunked<16>>(presets::simple_gla{}, data, true, "sgla" + tag);
  }
}

// recurrent == chunked == parallel on the same inputs (fp32 vs fp32, same bound).
TEST(LinearChunked, AlgorithmsAgree) {
  LinearData data({.B = 2, .T = 200, .H = 2, .HV = 4, .K = 64, .V = 48}, 55);
  const auto op = presets::make_kda();
  const auto rec = expect_matches_reference<Recurrent>(op, data, true, "recurrent");
  const auto chk = expect_matches_reference<Chunked<64>>(op, data, true, "chunked");
  const auto par = expect_matches_reference<Parallel>(op, data, true, "parallel");
  EXPECT_LT(rel_rmse(chk.o, rec.o), polyattn::test::kRelRmseBound);
  EXPECT_LT(rel_rmse(par.o, rec.o), polyattn::test::kRelRmseBound);
  EXPECT_LT(rel_rmse(chk.ht, rec.ht), polyattn::test::kRelRmseBound);
}

// Prefill split at arbitrary points with the state carried == one call.
TEST(LinearChunked, SplitPrefillEqualsOneCall) {
  const LinearShape s{.B = 1, .T = 150, .H = 1, .HV = 2, .K = 32, .V = 32};
  LinearData data(s, 9);
  const auto op = presets::make_gated_delta_rule();
  const LinearOptions opt = op.options();
  std::vector<float> o(s.T * s.HV * s.V), ht(s.HV * s.K * s.V);
  op.forward<Chunked<64>>(
      data.inputs(opt, true),
      {.o = bthd(o.data(), 1, s.T, s.HV, s.V), .final_state = bhkv(ht.data(), 1, s.HV, s.K, s.V)});
  std::vector<float> state = data.h0, o2(o.size());
  const index_t cuts[] = {0, 1, 37, 64, 129, 150};
  for (int c = 0; c + 1 < 6; ++c) {
    const index_t t0 = cuts[c], L = cuts[c + 1] - cuts[c];
    LinearInputs in{.q = bthd(data.q.data() + t0 * s.H * s.K, 1, L, s.H, s.K),
                    .k = bthd(data.k.data() + t0 * s.H * s.K, 1, L, s.H, s.K),
                    .v = bthd(data.v.data() + t0 * s.HV * s.V, 1, L, s.HV, s.V),
                    .g = bth(data.g.data() + t0 * s.HV, 1, L, s.HV),
                    .beta = bth(data.beta.data() + t0 * s.HV, 1, L, s.HV)};
    std::vector<float> next(state.size());
    in.initial_state = bhkv(state.data(), 1, s.HV, s.K, s.V);
    op.forward<Chunked<64>>(in, {.o = bthd(o2.data() + t0 * s.HV * s.V, 1, L, s.HV, s.V),
                                 .final_state = bhkv(next.data(), 1, s.HV, s.K, s.V)});
    state = next;
  }
  EXPECT_LT(rel_rmse(o2, o), 1e-6);
  EXPECT_LT(rel_rmse(state, ht), 1e-6);
}

TEST(LinearParallel, RejectsVeryLongSequences) {
  const index_t T = linear::kParallelMaxT + 1;
  std::vector<float> q(T), k(T), v(T), o(T, 5.f);
  try {
    presets::linear_attn{}.forward<Parallel>({.q = bthd(q.data(), 1, T, 1, 1),
                                              .k = bthd(k.data(), 1, T, 1, 1),
                                              .v = bthd(v.data(), 1, T, 1, 1)},
                                             {.o = bthd(o.data(), 1, T, 1, 1)});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "q");
  }
  EXPECT_EQ(o[0], 5.f);
}

}  // namespace

namespace {

// Fewer (sequence, head) tasks than threads: additive presets split each head over chunks.
// The result must equal the serial run bit for bit, and the reference within the bound.
template <class Op>
void chunk_parallel_case(const Op& op, const char* name) {
  const LinearShape s{.B = 1, .T = 1000, .H = 1, .HV = 1, .K = 32, .V = 40};
  LinearData data(s, 17);
  const auto serial = expect_matches_reference<Chunked<32>>(op, data, true, name);
  for (int threads : {2, 3, 8}) {
    const auto par =
        expect_matches_reference<Chunked<32>>(op, data, true, name, ThreadPool(threads));
    EXPECT_EQ(0, std::memcmp(serial.o.data(), par.o.data(), serial.o.size() * sizeof(float)))
        << name << " " << threads << " threads";
    EXPECT_EQ(0, std::memcmp(serial.ht.data(), par.ht.data(), serial.ht.size() * sizeof(float)))
        << name << " " << threads << " threads";
  }
}

TEST(LinearChunked, ChunkParallelIsBitIdenticalToSerial) {
  chunk_parallel_case(presets::linear_attn{}, "linear_attn");
  chunk_parallel_case(presets::simple_gla{}, "simple_gla");
  chunk_parallel_case(presets::gla{}, "gla");
  chunk_parallel_case(presets::make_retention(1), "retention");
}

}  // namespace

namespace {

// One million tokens: chunk-relative log-gates keep every exponent ≤ 0, so nothing overflows
// and chunked agrees with recurrent (and the double reference) at the end of the sequence.
TEST(LinearChunked, MillionTokensStayFinite) {
  const LinearShape s{.B = 1, .T = 1000000, .H = 1, .HV = 1, .K = 4, .V = 4};
  LinearData data(s, 23);
  const auto gdn = presets::make_gated_delta_rule();
  const auto r = expect_matches_reference<Chunked<64>>(gdn, data, false, "gdn 1e6");
  const auto k = expect_matches_reference<Chunked<64>>(presets::make_kda(), data, false, "kda 1e6");
  for (float x : r.ht) ASSERT_TRUE(std::isfinite(x));
  for (float x : k.ht) ASSERT_TRUE(std::isfinite(x));
}

TEST(LinearChunked, NaNPropagatesWithoutCrashing) {
  LinearData data({.B = 1, .T = 100, .H = 1, .HV = 1, .K = 16, .V = 16}, 9);
  data.v[70 * 16 + 3] = NAN;
  for (int algo = 0; algo < 2; ++algo) {
    std::vector<float> o(100 * 16);
    const auto op = presets::make_gated_delta_rule();
    const LinearInputs in = data.inputs(op.options(), false);
    if (algo == 0)
      op.forward<Chunked<32>>(in, {.o = bthd(o.data(), 1, 100, 1, 16)});
    else
      op.forward<Parallel>(in, {.o = bthd(o.data(), 1, 100, 1, 16)});
    // Tokens before 64 (earlier chunks / rows) are clean; token 70 onwards carries the NaN.
    EXPECT_FALSE(std::isnan(o[10 * 16])) << algo;
    EXPECT_TRUE(std::isnan(o[70 * 16 + 3])) << algo;
    EXPECT_TRUE(std::isnan(o[99 * 16 + 3])) << algo;
  }
}

TEST(LinearChunked, VarlenEqualsSeparateCalls) {
  const index_t H = 1, HV = 2, K = 16, V = 8, T = 150;
  const std::vector<std::int64_t> cu{0, 70, 70, 150};
  LinearData data({.B = 1, .T = T, .H = H, .HV = HV, .K = K, .V = V}, 31);
  const auto op = presets::make_kda();
  LinearInputs in = data.inputs(op.options(), false);
  in.cu_seqlens = cu;
  std::vector<float> o(T * HV * V), ht(3 * HV * K * V);
  op.forward<Chunked<32>>(
      in, {.o = bthd(o.data(), 1, T, HV, V), .final_state = bhkv(ht.data(), 3, HV, K, V)});
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t t0 = cu[n], L = cu[n + 1] - cu[n];
    if (L == 0) continue;
    LinearInputs one{.q = bthd(data.q.data() + t0 * H * K, 1, L, H, K),
                     .k = bthd(data.k.data() + t0 * H * K, 1, L, H, K),
                     .v = bthd(data.v.data() + t0 * HV * V, 1, L, HV, V),
                     .gk = bthd(data.gk.data() + t0 * HV * K, 1, L, HV, K),
                     .beta = bth(data.beta.data() + t0 * HV, 1, L, HV)};
    std::vector<float> os(L * HV * V), hs(HV * K * V);
    op.forward<Chunked<32>>(
        one, {.o = bthd(os.data(), 1, L, HV, V), .final_state = bhkv(hs.data(), 1, HV, K, V)});
    EXPECT_EQ(0, std::memcmp(os.data(), o.data() + t0 * HV * V, os.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(hs.data(), ht.data() + n * HV * K * V, hs.size() * sizeof(float)));
  }
}

// Chunk-level parallelism over packed sequences of different lengths (one of them empty).
TEST(LinearChunked, ChunkParallelVarlenMatchesSerial) {
  const index_t H = 1, HV = 1, K = 16, V = 8, T = 450;
  const std::vector<std::int64_t> cu{0, 100, 100, 450};
  LinearData data({.B = 1, .T = T, .H = H, .HV = HV, .K = K, .V = V}, 41);
  std::vector<float> h0 = polyattn::test::random_vector(3 * HV * K * V, 42);
  const presets::gla op;
  LinearInputs in = data.inputs(op.options(), false);
  in.cu_seqlens = cu;
  in.initial_state = bhkv(h0.data(), 3, HV, K, V);
  auto run = [&](const auto& exec) {
    std::vector<float> o(T * HV * V), ht(3 * HV * K * V);
    op.forward<Chunked<32>>(
        in, {.o = bthd(o.data(), 1, T, HV, V), .final_state = bhkv(ht.data(), 3, HV, K, V)}, {},
        exec);
    o.insert(o.end(), ht.begin(), ht.end());
    return o;
  };
  const auto serial = run(Serial{});
  const auto par = run(ThreadPool(8));
  EXPECT_EQ(0, std::memcmp(serial.data(), par.data(), serial.size() * sizeof(float)));
  // The empty sequence passes its initial state through.
  EXPECT_EQ(0, std::memcmp(par.data() + T * HV * V + HV * K * V, h0.data() + HV * K * V,
                           HV * K * V * sizeof(float)));
}

// Heads run in lockstep, chunk by chunk (scheduler.hpp, lockstep_heads), give the bits of heads
// run one after another: Serial groups 8 heads (then 3), 8 threads group 4, 20 threads none.
// Packed sequences (one empty), a ragged last chunk, snapshots and a running key sum included.
template <class Op>
void expect_lockstep_keeps_bits(const Op& op, const std::string& name) {
  const index_t H = 1, HV = 11, K = 16, V = 8, T = 301, N = 3, M = 3;
  const std::vector<std::int64_t> cu{0, 150, 150, 301};
  const std::vector<std::int64_t> snap_pos{64, 100, 32};  // sequence 0: 64, 100; sequence 2: 32
  const std::vector<std::int64_t> snap_off{0, 2, 2, 3};
  LinearData data({.B = 1, .T = T, .H = H, .HV = HV, .K = K, .V = V}, 91);
  const std::vector<float> h0 = polyattn::test::random_vector(N * HV * K * V, 92);
  LinearInputs in = data.inputs(op.options(), false);
  in.cu_seqlens = cu;
  in.initial_state = bhkv(h0.data(), N, HV, K, V);
  constexpr bool normalised = Op::policies::running_sum;  // z, no snapshots (S only)
  if (!normalised) {
    in.snapshot_positions = snap_pos;
    in.snapshot_offsets = snap_off;
  }
  auto run = [&](const auto& exec) {
    std::vector<float> o(T * HV * V), ht(N * HV * K * V), snaps(M * HV * K * V), z(N * HV * K);
    LinearOutputs<float> out{.o = bthd(o.data(), 1, T, HV, V),
                             .final_state = bhkv(ht.data(), N, HV, K, V)};
    if (normalised)
      out.final_z = View3<float>::contiguous(z.data(), {N, HV, K});
    else
      out.snapshots = bhkv(snaps.data(), M, HV, K, V);
    op.template forward<Chunked<32>>(in, out, {}, exec);
    for (const auto* part : {&ht, &snaps, &z}) o.insert(o.end(), part->begin(), part->end());
    return o;
  };
  const auto serial = run(Serial{});
  for (int threads : {8, 20}) {
    const auto par = run(ThreadPool(threads));
    EXPECT_EQ(0, std::memcmp(serial.data(), par.data(), serial.size() * sizeof(float)))
        << name << " " << threads << " threads";
  }
}

TEST(LinearChunked, LockstepHeadsKeepTheBits) {
  expect_lockstep_keeps_bits(presets::make_gated_delta_rule(), "gdn");
  expect_lockstep_keeps_bits(presets::make_kda(), "kda");
  expect_lockstep_keeps_bits(presets::gla{}, "gla");
  expect_lockstep_keeps_bits(presets::linear_attn_normalized{}, "linear_attn_normalized");
}

}  // namespace
