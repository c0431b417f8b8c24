// Titans' linear memory (papers/titans.hpp): the recurrent kernel against the paper's update
// in its own orientation (reference/papers.hpp), with initial memory and momentum, GVA, varlen,
// decode, thread counts and bad arguments.
#include <gtest/gtest.h>

#include <cmath>

#include "papers/papers_harness.hpp"
#include "polyattn/papers/titans.hpp"
#include "polyattn/reference/papers.hpp"
#include "polyattn/testing.hpp"

namespace polyattn::test {
namespace {

struct Shape {
  index_t B, T, H, HV, K, V;
};

struct Data {
  Shape s;
  std::vector<float> q, k, v, alpha, eta, theta, m0, u0;
  // key_range: with raw (not normalised) keys the memory update is a stable iteration only while
  // θ·‖k‖² < 2 (as for the delta rule); beyond that it diverges and amplifies any rounding.
  Data(const Shape& sh, std::uint64_t seed, float key_range = 1.f) : s(sh) {
    q = random_vector(count(s.B, s.T, s.H, s.K), seed + 1);
    k = random_vector(count(s.B, s.T, s.H, s.K), seed + 2, -key_range, key_range);
    v = random_vector(count(s.B, s.T, s.HV, s.V), seed + 3);
    alpha = random_vector(count(s.B, s.T, s.HV), seed + 4, 0.f, 0.2f);
    eta = random_vector(count(s.B, s.T, s.HV), seed + 5, 0.f, 0.95f);
    theta = random_vector(count(s.B, s.T, s.HV), seed + 6, 0.05f, 0.9f);
    m0 = random_vector(count(s.B, s.HV, s.K, s.V), seed + 7, -0.5f, 0.5f);
    u0 = random_vector(count(s.B, s.HV, s.K, s.V), seed + 8, -0.2f, 0.2f);
  }
  papers::TitansInputs inputs(bool with_state) const {
    papers::TitansInputs in{.q = bthd(q.data(), s.B, s.T, s.H, s.K),
                            .k = bthd(k.data(), s.B, s.T, s.H, s.K),
                            .v = bthd(v.data(), s.B, s.T, s.HV, s.V),
                            .alpha = bth(alpha.data(), s.B, s.T, s.HV),
                            .eta = bth(eta.data(), s.B, s.T, s.HV),
                            .theta = bth(theta.data(), s.B, s.T, s.HV)};
    if (with_state) {
      in.initial_memory = bhkv(m0.data(), s.B, s.HV, s.K, s.V);
      in.initial_momentum = bhkv(u0.data(), s.B, s.HV, s.K, s.V);
    }
    return in;
  }
};

void expect_matches(const Data& d, bool with_state, const papers::TitansOptions& opt,
                    const std::string& what) {
  const auto& s = d.s;
  std::vector<float> o(count(s.B, s.T, s.HV, s.V), NAN), m(count(s.B, s.HV, s.K, s.V), NAN);
  const auto in = d.inputs(with_state);
  papers::presets::make_titans().forward(in,
                                         {.o = bthd(o.data(), s.B, s.T, s.HV, s.V),
                                          .final_memory = bhkv(m.data(), s.B, s.HV, s.K, s.V)},
                                         opt);
  std::vector<double> ro(o.size()), rm(m.size());
  reference::titans<double>(
      in.q.as<float>(), in.k.as<float>(), in.v.as<float>(), in.alpha, in.eta, in.theta,
      in.initial_memory, in.initial_momentum, {}, opt.scale.value_or(1.0), opt.qk_l2norm,
      bthd(ro.data(), s.B, s.T, s.HV, s.V), bhkv(rm.data(), s.B, s.HV, s.K, s.V));
  EXPECT_LT(rel_rmse(o, ro), kRelRmseBound) << what << " output";
  EXPECT_LT(rel_rmse(m, rm), kRelRmseBound) << what << " final memory";
}

TEST(PapersTitans, MatchesThePapersUpdate) {
  const Shape shapes[] = {
      {1, 1, 1, 1, 16, 16}, {2, 33, 1, 2, 8, 5}, {1, 65, 2, 4, 16, 12}, {1, 200, 1, 1, 32, 24}};
  std::uint64_t seed = 1100;
  for (const Shape& sh : shapes) {
    const Data d(sh, seed += 10);
    // Raw keys scaled so that θ·‖k‖² ≤ 0.9·K·r²/3 stays below 1.
    const Data raw(sh, seed + 5, std::sqrt(3.f / static_cast<float>(sh.K)));
    for (bool st : {false, true}) {
      const std::string tag = "T" + std::to_string(sh.T) + (st ? " state" : "");
      expect_matches(d, st, {}, tag);
      expect_matches(raw, st, {.scale = 0.5, .qk_l2norm = false}, tag + " raw qk");
    }
  }
}

// Without momentum (η = 0) and forgetting (α = 0) the update is the delta rule with β = θ: the
// library's delta_rule preset gives the same outputs.
TEST(PapersTitans, ReducesToTheDeltaRule) {
  Data d({1, 50, 1, 2, 8, 6}, 21);
  std::fill(d.alpha.begin(), d.alpha.end(), 0.f);
  std::fill(d.eta.begin(), d.eta.end(), 0.f);
  const auto& s = d.s;
  std::vector<float> o1(count(s.T, s.HV, s.V)), o2(o1.size());
  papers::presets::make_titans().forward(d.inputs(false),
                                         {.o = bthd(o1.data(), 1, s.T, s.HV, s.V)});
  const auto in = d.inputs(false);
  ::polyattn::presets::make_delta_rule(true).forward<Chunked<16>>(
      {.q = in.q, .k = in.k, .v = in.v, .beta = in.theta},
      {.o = bthd(o2.data(), 1, s.T, s.HV, s.V)}, {.scale = 1.0});
  EXPECT_LT(rel_rmse(o1, o2), kRelRmseBound);
}

TEST(PapersTitans, VarlenThreadsAndDecode) {
  const index_t T = 40, H = 1, HV = 2, K = 8, V = 5;
  const std::vector<std::int64_t> cu{0, 15, 15, 40};
  const Data d({1, T, H, HV, K, V}, 31);
  const auto op = papers::presets::make_titans();
  std::vector<float> o(count(T, HV, V)), m(count(3, HV, K, V)), u(m.size());
  auto in = d.inputs(false);
  in.cu_seqlens = cu;
  op.forward(in, {.o = bthd(o.data(), 1, T, HV, V),
                  .final_memory = bhkv(m.data(), 3, HV, K, V),
                  .final_momentum = bhkv(u.data(), 3, HV, K, V)});
  ThreadPool pool(3);
  std::vector<float> op3(o.size());
  op.forward(in, {.o = bthd(op3.data(), 1, T, HV, V)}, {}, pool);
  EXPECT_TRUE(same_bits(o, op3));
  // Sequence 2 ([15, 40)) token by token with step equals its rows of the packed call.
  std::vector<float> mem(count(1, HV, K, V), 0.f), mom(mem.size(), 0.f), o1(count(HV, V));
  for (index_t t = 15; t < 40; ++t) {
    op.step({.q = bthd(d.q.data() + t * H * K, 1, 1, H, K),
             .k = bthd(d.k.data() + t * H * K, 1, 1, H, K),
             .v = bthd(d.v.data() + t * HV * V, 1, 1, HV, V),
             .alpha = bth(d.alpha.data() + t * HV, 1, 1, HV),
             .eta = bth(d.eta.data() + t * HV, 1, 1, HV),
             .theta = bth(d.theta.data() + t * HV, 1, 1, HV)},
            bhkv(mem.data(), 1, HV, K, V), bhkv(mom.data(), 1, HV, K, V),
            bthd(o1.data(), 1, 1, HV, V));
    EXPECT_TRUE(
        same_bits(o1, std::vector<float>(o.begin() + t * HV * V, o.begin() + (t + 1) * HV * V)))
        << t;
  }
  EXPECT_TRUE(same_bits(mem, std::vector<float>(m.begin() + 2 * count(HV, K, V), m.end())));
  EXPECT_TRUE(same_bits(mom, std::vector<float>(u.begin() + 2 * count(HV, K, V), u.end())));
  // The empty sequence 1 ends with zero memory.
  EXPECT_TRUE(
      same_bits(std::vector<float>(count(HV, K, V), 0.f),
                std::vector<float>(m.begin() + count(HV, K, V), m.begin() + 2 * count(HV, K, V))));
}

TEST(PapersTitans, BadArgumentsLeaveOutputsUntouched) {
  const Data d({1, 9, 1, 2, 4, 3}, 61);
  const auto& s = d.s;
  const auto op = papers::presets::make_titans();
  std::vector<float> o(count(s.T, s.HV, s.V), 7.f), m(count(s.HV, s.K, s.V), 7.f);
  const papers::TitansOutputs out{.o = bthd(o.data(), 1, s.T, s.HV, s.V),
                                  .final_memory = bhkv(m.data(), 1, s.HV, s.K, s.V)};
  auto no_eta = d.inputs(false);
  no_eta.eta = {};
  expect_error_untouched([&] { op.forward(no_eta, out); }, "eta", o, "no eta");
  auto bad_theta = d.inputs(false);
  bad_theta.theta = bth(d.theta.data(), 1, s.T, 1);
  expect_error_untouched([&] { op.forward(bad_theta, out); }, "theta", o, "theta heads");
  auto memory_only = d.inputs(true);
  memory_only.initial_momentum = {};
  expect_error_untouched([&] { op.forward(memory_only, out); }, "initial_momentum", m,
                         "memory without momentum");
  auto bad_mom = d.inputs(true);
  bad_mom.initial_momentum = bhkv(d.u0.data(), 1, s.HV, s.V, s.K);
  expect_error_untouched([&] { op.forward(bad_mom, out); }, "initial_momentum", o,
                         "momentum shape");
  expect_error_untouched([&] { op.forward(d.inputs(false), out, {.scale = NAN}); }, "scale", o,
                         "scale");
  auto bad_k = d.inputs(false);
  bad_k.k = bthd(d.k.data(), 1, s.T - 1, s.H, s.K);
  expect_error_untouched([&] { op.forward(bad_k, out); }, "k", m, "k shape");
  expect_error_untouched(
      [&] {
        op.step(d.inputs(false), bhkv(m.data(), 1, s.HV, s.K, s.V), {},
                bthd(o.data(), 1, s.T, s.HV, s.V));
      },
      "momentum", m, "step without momentum");
}

}  // namespace
}  // namespace polyattn::test
