// tests/linear/test_linear_recurrent.cpp — the Recurrent algorithm and the decode step of every
// linear preset against the naive reference (docs/conventions.md §9 bound) over awkward shapes and
// extreme gates; step × T == forward; varlen == separate calls; thread counts give identical bits;
// NaN propagation; bad arguments leave outputs untouched.
#include <gtest/gtest.h>

#include <cstring>

#include "linear/preset_sweep.hpp"

namespace {

using namespace polyattn;
using polyattn::test::expect_matches_reference;
using polyattn::test::LinearData;
using polyattn::test::LinearShape;

// Every preset against the reference over the §5 shapes (shared with the chunked suites).
TEST(LinearRecurrent, AllPresets) {
  polyattn::test::all_presets<Recurrent>();
}

// Retention's policy needs exactly HV values: a different count is an error naming g_gamma.
TEST(LinearRecurrent, RetentionWrongHeadCount) {
  LinearData data({.B = 1, .T = 3, .H = 1, .HV = 2, .K = 4, .V = 4}, 5);
  const auto op = presets::make_retention(3);
  std::vector<float> o(24, 7.f);
  try {
    op.forward(data.inputs(op.options(), false), {.o = bthd(o.data(), 1, 3, 2, 4)});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), "g_gamma");
  }
  for (float x : o) EXPECT_EQ(x, 7.f);
}

TEST(LinearRecurrent, ExtremeGates) {
  for (double div : {0.01, 0.1, 1.0, 10.0}) {
    LinearData data({.B = 1, .T = 65, .H = 1, .HV = 2, .K = 32, .V = 20}, 77, div);
    const std::string tag = " gate/" + std::to_string(div);
    expect_matches_reference<Recurrent>(presets::make_gated_delta_rule(), data, true, "gdn" + tag);
    expect_matches_reference<Recurrent>(presets::make_kda(), data, true, "kda" + tag);
    expect_matches_reference<Recurrent>(presets::gla{}, data, true, "gla" + tag);
  }
}

// T decode steps with the state carried in place == one forward over T tokens.
TEST(LinearRecurrent, StepTimesTEqualsForward) {
  const LinearShape s{.B = 3, .T = 9, .H = 2, .HV = 4, .K = 20, .V = 12};
  LinearData data(s, 91);
  const auto op = presets::make_kda();
  const LinearOptions opt = op.options();
  std::vector<float> o(static_cast<std::size_t>(s.B * s.T * s.HV * s.V));
  std::vector<float> ht(static_cast<std::size_t>(s.B * s.HV * s.K * s.V));
  op.forward(data.inputs(opt, true), {.o = bthd(o.data(), s.B, s.T, s.HV, s.V),
                                      .final_state = bhkv(ht.data(), s.B, s.HV, s.K, s.V)});

  std::vector<float> state = data.h0, o_step(o.size());
  for (index_t t = 0; t < s.T; ++t) {
    auto at = [&](const std::vector<float>& x, index_t Hx, index_t D) {
      return View4<const float>(x.data() + t * Hx * D, {s.B, 1, Hx, D},
                                {s.T * Hx * D, Hx * D, D, 1});
    };
    LinearInputs in{.q = at(data.q, s.H, s.K),
                    .k = at(data.k, s.H, s.K),
                    .v = at(data.v, s.HV, s.V),
                    .gk = at(data.gk, s.HV, s.K),
                    .beta = View3<const float>(data.beta.data() + t * s.HV, {s.B, 1, s.HV},
                                               {s.T * s.HV, s.HV, 1})};
    View4<float> ot(o_step.data() + t * s.HV * s.V, {s.B, 1, s.HV, s.V},
                    {s.T * s.HV * s.V, s.HV * s.V, s.V, 1});
    op.step(in, bhkv(state.data(), s.B, s.HV, s.K, s.V), ot);
  }
  EXPECT_EQ(o_step, o);
  EXPECT_EQ(state, ht);
}

// Normalised operators carry the running key sum z across decode steps too: step(in, state,
// z, o) × T == one forward (o, final_state, final_z), bit for bit; the three-argument step()
// refuses them (it would silently restart z). Based maps K = 4 to 15 features.
template <class Op>
void expect_normalised_steps_match(const Op& op, index_t K, index_t F) {
  const LinearShape s{.B = 2, .T = 7, .H = 2, .HV = 2, .K = K, .V = 5};
  LinearData data(s, 77, 1.0, true);
  std::vector<float> o(static_cast<std::size_t>(s.B * s.T * s.HV * s.V));
  std::vector<float> ht(static_cast<std::size_t>(s.B * s.HV * F * s.V), 0.f), zt(s.B * s.HV * F);
  std::vector<float> h0(ht.size(), 0.f), z0(zt.size(), 0.f);
  LinearInputs in = data.inputs(op.options(), false);
  op.forward(in, {.o = bthd(o.data(), s.B, s.T, s.HV, s.V),
                  .final_state = bhkv(ht.data(), s.B, s.HV, F, s.V),
                  .final_z = View3<float>::contiguous(zt.data(), {s.B, s.HV, F})});
  std::vector<float> state = h0, z = z0, o_step(o.size());
  for (index_t t = 0; t < s.T; ++t) {
    auto at = [&](const std::vector<float>& x, index_t Hx, index_t D) {
      return View4<const float>(x.data() + t * Hx * D, {s.B, 1, Hx, D},
                                {s.T * Hx * D, Hx * D, D, 1});
    };
    const LinearInputs one{
        .q = at(data.q, s.H, K), .k = at(data.k, s.H, K), .v = at(data.v, s.HV, s.V)};
    View4<float> ot(o_step.data() + t * s.HV * s.V, {s.B, 1, s.HV, s.V},
                    {s.T * s.HV * s.V, s.HV * s.V, s.V, 1});
    op.step(one, bhkv(state.data(), s.B, s.HV, F, s.V),
            View3<float>::contiguous(z.data(), {s.B, s.HV, F}), ot);
    if (t == 0) {
      std::vector<float> before = state;
      EXPECT_THROW(op.step(one, bhkv(state.data(), s.B, s.HV, F, s.V), ot), Error);
      EXPECT_EQ(state, before);
    }
  }
  EXPECT_EQ(o_step, o);
  EXPECT_EQ(state, ht);
  EXPECT_EQ(z, zt);
}

TEST(LinearRecurrent, NormalisedStepCarriesZ) {
  expect_normalised_steps_match(presets::make_linear_attn_normalized(), 6, 6);
  expect_normalised_steps_match(presets::make_based(), 4, 15);
}

// Packed varlen == separate calls, bit for bit (the same per-head computation).
TEST(LinearRecurrent, VarlenEqualsSeparateCalls) {
  const index_t H = 2, HV = 2, K = 24, V = 8, T = 20;
  const std::vector<std::int64_t> cu{0, 7, 7, 20};
  LinearData data({.B = 1, .T = T, .H = H, .HV = HV, .K = K, .V = V}, 123);
  std::vector<float> h0 = polyattn::test::random_vector(3 * HV * K * V, 5);
  const auto op = presets::make_gated_delta_rule();
  LinearInputs in = data.inputs(op.options(), false);
  in.initial_state = bhkv(h0.data(), 3, HV, K, V);
  in.cu_seqlens = cu;
  std::vector<float> o(T * HV * V), ht(3 * HV * K * V);
  op.forward(in, {.o = bthd(o.data(), 1, T, HV, V), .final_state = bhkv(ht.data(), 3, HV, K, V)});
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t t0 = cu[n], L = cu[n + 1] - cu[n];
    std::vector<float> hs(HV * K * V);
    if (L > 0) {
      LinearInputs one{.q = bthd(data.q.data() + t0 * H * K, 1, L, H, K),
                       .k = bthd(data.k.data() + t0 * H * K, 1, L, H, K),
                       .v = bthd(data.v.data() + t0 * HV * V, 1, L, HV, V),
                       .g = bth(data.g.data() + t0 * HV, 1, L, HV),
                       .beta = bth(data.beta.data() + t0 * HV, 1, L, HV),
                       .initial_state = bhkv(h0.data() + n * HV * K * V, 1, HV, K, V)};
      std::vector<float> os(L * HV * V);
      op.forward(one,
                 {.o = bthd(os.data(), 1, L, HV, V), .final_state = bhkv(hs.data(), 1, HV, K, V)});
      EXPECT_EQ(0, std::memcmp(os.data(), o.data() + t0 * HV * V, os.size() * sizeof(float)));
    } else {
      std::copy(h0.begin() + n * HV * K * V, h0.begin() + (n + 1) * HV * K * V, hs.begin());
    }
    EXPECT_EQ(0, std::memcmp(hs.data(), ht.data() + n * HV * K * V, hs.size() * sizeof(float)))
        << "sequence " << n;
  }
}

TEST(LinearRecurrent, ThreadCountsGiveIdenticalBits) {
  LinearData data({.B = 2, .T = 50, .H = 2, .HV = 4, .K = 32, .V = 16}, 7);
  const auto op = presets::make_gated_delta_rule();
  auto run = [&](const auto& exec) {
    std::vector<float> o(2 * 50 * 4 * 16), ht(2 * 4 * 32 * 16);
    op.forward(data.inputs(op.options(), true),
               {.o = bthd(o.data(), 2, 50, 4, 16), .final_state = bhkv(ht.data(), 2, 4, 32, 16)},
               {}, exec);
    o.insert(o.end(), ht.begin(), ht.end());
    return o;
  };
  const auto serial = run(Serial{});
  for (int threads : {1, 2, 3, 8}) {
    const auto par = run(ThreadPool(threads));
    EXPECT_EQ(0, std::memcmp(serial.data(), par.data(), serial.size() * sizeof(float)))
        << threads << " threads";
  }
}

TEST(LinearRecurrent, HeadFirstInputsMatchContiguous) {
  const index_t B = 2, T = 10, H = 2, K = 8, V = 8;
  LinearData data({.B = B, .T = T, .H = H, .HV = H, .K = K, .V = V}, 3);
  auto head_first_copy = [&](const std::vector<float>& x, index_t D) {
    std::vector<float> y(x.size());
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t h = 0; h < H; ++h)
          for (index_t d = 0; d < D; ++d)
            y[((b * H + h) * T + t) * D + d] = x[((b * T + t) * H + h) * D + d];
    return y;
  };
  const auto qh = head_first_copy(data.q, K), kh = head_first_copy(data.k, K),
             vh = head_first_copy(data.v, V);
  const presets::linear_attn op;
  std::vector<float> o1(B * T * H * V), o2(o1.size());
  op.forward(data.inputs(op.options(), false), {.o = bthd(o1.data(), B, T, H, V)});
  LinearInputs hf{.q = head_first(qh.data(), B, T, H, K),
                  .k = head_first(kh.data(), B, T, H, K),
                  .v = head_first(vh.data(), B, T, H, V)};
  op.forward(hf, {.o = bthd(o2.data(), B, T, H, V)});
  EXPECT_EQ(o1, o2);
}

TEST(LinearRecurrent, NaNPropagatesWithoutCrashing) {
  LinearData data({.B = 1, .T = 6, .H = 1, .HV = 1, .K = 16, .V = 16}, 9);
  data.k[3 * 16 + 5] = NAN;
  const auto op = presets::make_gated_delta_rule(false);
  std::vector<float> o(6 * 16);
  op.forward(data.inputs(op.options(), false), {.o = bthd(o.data(), 1, 6, 1, 16)});
  for (int t = 0; t < 3; ++t) EXPECT_FALSE(std::isnan(o[t * 16])) << t;
  for (int t = 3; t < 6; ++t) EXPECT_TRUE(std::isnan(o[t * 16])) << t;
}

TEST(LinearRecurrent, BadArgumentsLeaveOutputsUntouched) {
  LinearData data({.B = 1, .T = 4, .H = 2, .HV = 4, .K = 8, .V = 8}, 11);
  const auto op = presets::make_gated_delta_rule();
  auto expect_error = [&](LinearInputs in, const char* arg) {
    std::vector<float> o(4 * 4 * 8, 3.f), ht(4 * 8 * 8, 3.f);
    try {
      op.forward(in, {.o = bthd(o.data(), 1, 4, 4, 8), .final_state = bhkv(ht.data(), 1, 4, 8, 8)});
      ADD_FAILURE() << "no error for " << arg;
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), arg) << e.what();
    }
    for (float x : o) ASSERT_EQ(x, 3.f);
    for (float x : ht) ASSERT_EQ(x, 3.f);
  };
  const LinearInputs good = data.inputs(op.options(), false);
  LinearInputs in = good;
  in.beta = {};
  expect_error(in, "beta");
  in = good;
  in.g = {};
  expect_error(in, "g");
  in = good;
  in.v = bthd(data.v.data(), 1, 4, 3, 8);
  expect_error(in, "v");
  in = good;
  in.k = bthd(data.k.data(), 1, 3, 2, 8);
  expect_error(in, "k");
  in = good;
  const std::vector<std::int64_t> cu{0, 5};
  in.cu_seqlens = cu;
  expect_error(in, "cu_seqlens");
  in = good;
  in.gk = bthd(data.gk.data(), 1, 4, 4, 8);  // gate of another decay kind
  expect_error(in, "gk");
}

// step() names its own arguments: a state of the wrong shape, or an initial_state given as well.
TEST(LinearRecurrent, StepBadArguments) {
  LinearData data({.B = 2, .T = 1, .H = 1, .HV = 2, .K = 8, .V = 4}, 13);
  const auto op = presets::make_gated_delta_rule();
  const LinearInputs in = data.inputs(op.options(), false);
  std::vector<float> state(2 * 2 * 8 * 4, 1.f), o(2 * 2 * 4, 9.f);
  auto expect_error = [&](const LinearInputs& args, View4<float> st, const char* arg) {
    try {
      op.step(args, st, bthd(o.data(), 2, 1, 2, 4));
      ADD_FAILURE() << "no error for " << arg;
    } catch (const Error& e) {
      EXPECT_EQ(e.argument(), arg) << e.what();
    }
    for (float x : o) ASSERT_EQ(x, 9.f);
    for (float x : state) ASSERT_EQ(x, 1.f);
  };
  expect_error(in, bhkv(state.data(), 2, 2, 4, 8), "state");  // K and V swapped
  expect_error(in, bhkv(state.data(), 1, 2, 8, 4), "state");  // wrong batch
  LinearInputs with_h0 = in;
  with_h0.initial_state = bhkv(state.data(), 2, 2, 8, 4);
  expect_error(with_h0, bhkv(state.data(), 2, 2, 8, 4), "initial_state");
  expect_error(in, View4<float>(), "state");
}

}  // namespace
