// LightNet (papers/lightnet.hpp): the GLA-form operator against the additive-recurrence
// reference (reference/papers.hpp) for every algorithm, with and without initial state, GVA,
// varlen, keys of large range, decode steps and bad arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "papers/papers_harness.hpp"
#include "polyattn/papers/lightnet.hpp"
#include "polyattn/reference/papers.hpp"
#include "polyattn/testing.hpp"

namespace polyattn::test {
namespace {

struct Shape {
  index_t B, T, H, HV, K, V;
};

struct Data {
  Shape s;
  std::vector<float> q, k, v, h0, z0;
  Data(const Shape& sh, std::uint64_t seed, float key_range = 2.f) : s(sh) {
    q = random_vector(count(s.B, s.T, s.H, s.K), seed + 1);
    k = random_vector(count(s.B, s.T, s.H, s.K), seed + 2, -key_range, key_range);
    v = random_vector(count(s.B, s.T, s.HV, s.V), seed + 3);
    h0 = random_vector(count(s.B, s.HV, s.K, s.V), seed + 4, -0.5f, 0.5f);
    z0 = random_vector(count(s.B, s.H, s.K), seed + 5, -1.f, 1.f);
  }
  LinearInputs inputs(bool with_h0) const {
    LinearInputs in{.q = bthd(q.data(), s.B, s.T, s.H, s.K),
                    .k = bthd(k.data(), s.B, s.T, s.H, s.K),
                    .v = bthd(v.data(), s.B, s.T, s.HV, s.V)};
    if (with_h0) in.initial_state = bhkv(h0.data(), s.B, s.HV, s.K, s.V);
    return in;
  }
  View3<const float> log_z0(bool with_h0) const {
    return with_h0 ? View3<const float>::contiguous(z0.data(), {s.B, s.H, s.K})
                   : View3<const float>{};
  }
};

// log δ_T per (sequence, head, channel) in double: the expected final_log_z.
std::vector<double> expected_log_z(const Data& d, bool with_h0) {
  const auto& s = d.s;
  std::vector<double> out(count(s.B, s.H, s.K));
  for (index_t b = 0; b < s.B; ++b)
    for (index_t h = 0; h < s.H; ++h)
      for (index_t i = 0; i < s.K; ++i) {
        double m = -INFINITY, acc = 0.0;
        std::vector<double> xs;
        if (with_h0) xs.push_back(d.z0[count(b * s.H + h) * s.K + i]);
        for (index_t t = 0; t < s.T; ++t)
          xs.push_back(d.k[count(((b * s.T + t) * s.H + h) * s.K + i)]);
        for (double x : xs) m = std::max(m, x);
        for (double x : xs) acc += std::exp(x - m);
        out[count(b * s.H + h) * s.K + i] = xs.empty() ? -INFINITY : m + std::log(acc);
      }
  return out;
}

template <class Algo>
void expect_matches(const Data& d, bool with_h0, const std::string& what) {
  const auto& s = d.s;
  std::vector<float> o(count(s.B, s.T, s.HV, s.V), NAN), ht(count(s.B, s.HV, s.K, s.V), NAN),
      lz(count(s.B, s.H, s.K), NAN);
  const LinearInputs in = d.inputs(with_h0);
  papers::presets::make_lightnet().forward<Algo>(
      in, d.log_z0(with_h0),
      {.o = bthd(o.data(), s.B, s.T, s.HV, s.V),
       .final_state = bhkv(ht.data(), s.B, s.HV, s.K, s.V)},
      View3<float>::contiguous(lz.data(), {s.B, s.H, s.K}));
  std::vector<double> ro(o.size()), rht(ht.size());
  reference::lightnet<double>(in, d.log_z0(with_h0), std::nullopt,
                              bthd(ro.data(), s.B, s.T, s.HV, s.V),
                              bhkv(rht.data(), s.B, s.HV, s.K, s.V));
  EXPECT_LT(rel_rmse(o, ro), kRelRmseBound) << what << " output";
  EXPECT_LT(rel_rmse(ht, rht), kRelRmseBound) << what << " final state";
  EXPECT_LT(rel_rmse(lz, expected_log_z(d, with_h0)), 1e-6) << what << " final log_z";
}

const Shape kShapes[] = {
    {1, 1, 1, 1, 16, 16}, {2, 33, 1, 2, 8, 5}, {1, 65, 2, 4, 16, 12}, {1, 130, 1, 1, 32, 32}};

TEST(PapersLightNet, MatchesAdditiveReferenceEveryAlgorithm) {
  std::uint64_t seed = 100;
  for (const Shape& sh : kShapes) {
    const Data d(sh, seed += 10);
    for (bool h0 : {false, true}) {
      const std::string tag = "T" + std::to_string(sh.T) + (h0 ? " h0" : "");
      expect_matches<Recurrent>(d, h0, "recurrent " + tag);
      expect_matches<Chunked<16>>(d, h0, "chunked16 " + tag);
      expect_matches<Chunked<64>>(d, h0, "chunked64 " + tag);
      expect_matches<Parallel>(d, h0, "parallel " + tag);
    }
  }
}

// Keys of ±30: e^{k} spans 26 decades; the exp-normalised key and the gate stay in range.
TEST(PapersLightNet, KeysOfLargeRange) {
  const Data d({1, 97, 1, 1, 16, 8}, 7, 30.f);
  for (bool h0 : {false, true}) {
    expect_matches<Recurrent>(d, h0, "recurrent wide keys");
    expect_matches<Chunked<32>>(d, h0, "chunked32 wide keys");
  }
}

TEST(PapersLightNet, VarlenEqualsSeparateCalls) {
  const index_t T = 70, H = 1, HV = 2, K = 8, V = 6;
  const std::vector<std::int64_t> cu{0, 0, 17, 70};
  const Data d({1, T, H, HV, K, V}, 31);
  std::vector<float> h0 = random_vector(count(3, HV, K, V), 3, -0.5f, 0.5f),
                     z0 = random_vector(count(3, H, K), 4, -1.f, 1.f);
  std::vector<float> o(count(T, HV, V)), ht(count(3, HV, K, V)), lz(count(3, H, K));
  LinearInputs in = d.inputs(false);
  in.cu_seqlens = cu;
  in.initial_state = bhkv(h0.data(), 3, HV, K, V);
  const auto op = papers::presets::make_lightnet();
  op.forward<Chunked<16>>(
      in, View3<const float>::contiguous(z0.data(), {3, H, K}),
      {.o = bthd(o.data(), 1, T, HV, V), .final_state = bhkv(ht.data(), 3, HV, K, V)},
      View3<float>::contiguous(lz.data(), {3, H, K}));
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const index_t t0 = cu[n], L = cu[n + 1] - cu[n];
    if (L == 0) {  // an empty sequence passes its state through
      EXPECT_TRUE(same_bits(std::vector<float>(h0.begin(), h0.begin() + count(HV, K, V)),
                            std::vector<float>(ht.begin(), ht.begin() + count(HV, K, V))));
      EXPECT_TRUE(same_bits(std::vector<float>(z0.begin(), z0.begin() + count(H, K)),
                            std::vector<float>(lz.begin(), lz.begin() + count(H, K))));
      continue;
    }
    std::vector<float> on(count(L, HV, V)), hn(count(HV, K, V)), zn(count(H, K));
    LinearInputs one{.q = bthd(d.q.data() + t0 * H * K, 1, L, H, K),
                     .k = bthd(d.k.data() + t0 * H * K, 1, L, H, K),
                     .v = bthd(d.v.data() + t0 * HV * V, 1, L, HV, V),
                     .initial_state = bhkv(h0.data() + n * count(HV, K, V), 1, HV, K, V)};
    op.forward<Chunked<16>>(
        one, View3<const float>::contiguous(z0.data() + n * count(H, K), {1, H, K}),
        {.o = bthd(on.data(), 1, L, HV, V), .final_state = bhkv(hn.data(), 1, HV, K, V)},
        View3<float>::contiguous(zn.data(), {1, H, K}));
    EXPECT_TRUE(
        same_bits(on, std::vector<float>(o.begin() + t0 * HV * V, o.begin() + (t0 + L) * HV * V)))
        << "sequence " << n;
    EXPECT_TRUE(same_bits(hn, std::vector<float>(ht.begin() + n * count(HV, K, V),
                                                 ht.begin() + (n + 1) * count(HV, K, V))))
        << "sequence " << n;
    EXPECT_TRUE(same_bits(
        zn, std::vector<float>(lz.begin() + n * count(H, K), lz.begin() + (n + 1) * count(H, K))))
        << "sequence " << n;
  }
}

// Decode token by token from an empty history: each step carries (S, log_z); the outputs and the
// final state match the reference over the whole sequence (log_z is rounded to float between
// steps, so agreement is within fp32 rounding rather than bitwise).
TEST(PapersLightNet, StepsMatchReference) {
  const index_t B = 2, T = 20, H = 1, HV = 2, K = 8, V = 4;
  const Data d({B, T, H, HV, K, V}, 51);
  const auto op = papers::presets::make_lightnet();
  // The first token comes through forward (no history), the rest through step.
  std::vector<float> o(count(B, T, HV, V)), state(count(B, HV, K, V)), lz(count(B, H, K));
  std::vector<float> o1(count(B, 1, HV, V));
  std::vector<float> q1(count(B, H, K)), k1(count(B, H, K)), v1(count(B, HV, V));
  for (index_t t = 0; t < T; ++t) {
    for (index_t b = 0; b < B; ++b) {
      std::copy_n(d.q.data() + (b * T + t) * H * K, H * K, q1.data() + b * H * K);
      std::copy_n(d.k.data() + (b * T + t) * H * K, H * K, k1.data() + b * H * K);
      std::copy_n(d.v.data() + (b * T + t) * HV * V, HV * V, v1.data() + b * HV * V);
    }
    const LinearInputs in1{.q = bthd(q1.data(), B, 1, H, K),
                           .k = bthd(k1.data(), B, 1, H, K),
                           .v = bthd(v1.data(), B, 1, HV, V)};
    if (t == 0)
      op.forward(
          in1, {},
          {.o = bthd(o1.data(), B, 1, HV, V), .final_state = bhkv(state.data(), B, HV, K, V)},
          View3<float>::contiguous(lz.data(), {B, H, K}));
    else
      op.step(in1, bhkv(state.data(), B, HV, K, V), View3<float>::contiguous(lz.data(), {B, H, K}),
              bthd(o1.data(), B, 1, HV, V));
    for (index_t b = 0; b < B; ++b)
      std::copy_n(o1.data() + b * HV * V, HV * V, o.data() + (b * T + t) * HV * V);
  }
  std::vector<double> ro(o.size()), rht(state.size());
  reference::lightnet<double>(d.inputs(false), {}, std::nullopt, bthd(ro.data(), B, T, HV, V),
                              bhkv(rht.data(), B, HV, K, V));
  EXPECT_LT(rel_rmse(o, ro), kRelRmseBound);
  EXPECT_LT(rel_rmse(state, rht), kRelRmseBound);
  EXPECT_LT(rel_rmse(lz, expected_log_z(d, false)), 1e-6);
}

TEST(PapersLightNet, BadArgumentsLeaveOutputsUntouched) {
  const Data d({1, 9, 1, 2, 4, 3}, 61);
  const auto& s = d.s;
  const auto op = papers::presets::make_lightnet();
  std::vector<float> o(count(s.T, s.HV, s.V), 7.f), ht(count(s.HV, s.K, s.V), 7.f),
      lz(count(s.H, s.K), 7.f);
  const LinearOutputs<float> out{.o = bthd(o.data(), 1, s.T, s.HV, s.V),
                                 .final_state = bhkv(ht.data(), 1, s.HV, s.K, s.V)};
  const auto lzv = View3<float>::contiguous(lz.data(), {1, s.H, s.K});
  // Initial state without its log-normaliser, and the other way round.
  expect_error_untouched([&] { op.forward(d.inputs(true), {}, out, lzv); }, "initial_log_z", o,
                         "state without log_z");
  expect_error_untouched([&] { op.forward(d.inputs(false), d.log_z0(true), out, lzv); },
                         "initial_state", o, "log_z without state");
  // A gate tensor: LightNet derives its own.
  std::vector<float> gk(count(s.T, s.HV, s.K), -0.1f);
  LinearInputs with_gk = d.inputs(false);
  with_gk.gk = bthd(gk.data(), 1, s.T, s.HV, s.K);
  expect_error_untouched([&] { op.forward(with_gk, {}, out, lzv); }, "gk", o, "stray gk");
  // Wrong log_z shape (per value head instead of per q/k head).
  std::vector<float> z_hv(count(s.HV, s.K));
  expect_error_untouched(
      [&] {
        op.forward(d.inputs(true), View3<const float>::contiguous(z_hv.data(), {1, s.HV, s.K}), out,
                   lzv);
      },
      "initial_log_z", ht, "log_z per value head");
  expect_error_untouched(
      [&] {
        op.forward(d.inputs(false), {}, out, View3<float>::contiguous(lz.data(), {1, s.H, 3}));
      },
      "final_log_z", o, "final_log_z shape");
  // v of another length; the kernels' own checks run before anything is written.
  LinearInputs bad_v = d.inputs(false);
  bad_v.v = bthd(d.v.data(), 1, s.T - 1, s.HV, s.V);
  expect_error_untouched([&] { op.forward(bad_v, {}, out, lzv); }, "v", lz, "bad v heads");
  std::vector<float> o_small(count(s.T - 1, s.HV, s.V), 7.f);
  expect_error_untouched(
      [&] {
        op.forward(d.inputs(false), {}, {.o = bthd(o_small.data(), 1, s.T - 1, s.HV, s.V)}, lzv);
      },
      "o", lz, "o shape");
}

}  // namespace
}  // namespace polyattn::test
