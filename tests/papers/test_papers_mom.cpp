// Mixture-of-Memories (papers/mom.hpp): the gathered, packed operator against the masked
// reference (reference/papers.hpp) for every algorithm, with initial states, decode with the
// states in place, and bad arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "papers/papers_harness.hpp"
#include "polyattn/papers/mom.hpp"
#include "polyattn/reference/papers.hpp"
#include "polyattn/testing.hpp"

namespace polyattn::test {
namespace {

struct Data {
  index_t B, T, H, HV, K, V, M;
  std::vector<float> q, k, v, g, beta, w, h0;
  Data(index_t B_, index_t T_, index_t H_, index_t HV_, index_t K_, index_t V_, index_t M_,
       index_t topk, std::uint64_t seed)
      : B(B_), T(T_), H(H_), HV(HV_), K(K_), V(V_), M(M_) {
    q = random_vector(count(B, T, H, K), seed + 1);
    k = random_vector(count(M * B, T, H, K), seed + 2);
    v = random_vector(count(M * B, T, HV, V), seed + 3);
    g = random_vector(count(M * B, T, HV), seed + 4, -0.3f, -0.001f);
    beta = random_vector(count(M * B, T, HV), seed + 5, 0.05f, 0.95f);
    h0 = random_vector(count(M * B, HV, K, V), seed + 6, -0.5f, 0.5f);
    // Top-k routing: topk distinct memories per token, weights normalised to sum 1.
    w.assign(count(B, T, M), 0.f);
    std::mt19937_64 rng(seed + 7);
    for (index_t bt = 0; bt < B * T; ++bt) {
      std::vector<index_t> mems(static_cast<std::size_t>(M));
      for (index_t m = 0; m < M; ++m) mems[m] = m;
      std::shuffle(mems.begin(), mems.end(), rng);
      std::uniform_real_distribution<float> u(0.1f, 1.f);
      float sum = 0.f;
      for (index_t i = 0; i < topk; ++i) sum += (w[count(bt * M + mems[i])] = u(rng));
      for (index_t i = 0; i < topk; ++i) w[count(bt * M + mems[i])] /= sum;
    }
  }
  papers::MomInputs inputs(bool with_h0) const {
    return {.q = bthd(q.data(), B, T, H, K),
            .k = bthd(k.data(), M * B, T, H, K),
            .v = bthd(v.data(), M * B, T, HV, V),
            .g = bth(g.data(), M * B, T, HV),
            .beta = bth(beta.data(), M * B, T, HV),
            .weights = View3<const float>::contiguous(w.data(), {B, T, M}),
            .initial_state = with_h0 ? bhkv(h0.data(), M * B, HV, K, V) : View4<const float>{}};
  }
  std::vector<double> expected(bool with_h0) const {
    std::vector<double> r(count(B, T, HV, V));
    const auto in = inputs(with_h0);
    reference::mixture_of_memories<double>(in.q.as<float>(), in.k.as<float>(), in.v.as<float>(),
                                           in.g, in.beta, in.weights, in.initial_state,
                                           bthd(r.data(), B, T, HV, V));
    return r;
  }
};

template <class Algo>
void expect_matches(const Data& d, bool with_h0, const std::string& what) {
  std::vector<float> o(count(d.B, d.T, d.HV, d.V), NAN);
  papers::presets::make_mom().forward<Algo>(d.inputs(with_h0), bthd(o.data(), d.B, d.T, d.HV, d.V));
  EXPECT_LT(rel_rmse(o, d.expected(with_h0)), kRelRmseBound) << what;
}

TEST(PapersMom, GatheredMatchesMaskedReference) {
  const Data small(1, 1, 1, 1, 16, 16, 2, 1, 1);
  const Data gva(2, 40, 1, 2, 8, 6, 4, 2, 11);
  const Data wide(1, 90, 2, 2, 16, 12, 3, 3, 21);  // top-3 of 3: every memory sees every token
  for (const Data* d : {&small, &gva, &wide})
    for (bool h0 : {false, true}) {
      const std::string tag = "T" + std::to_string(d->T) + (h0 ? " h0" : "");
      expect_matches<Recurrent>(*d, h0, tag + " recurrent");
      expect_matches<Chunked<16>>(*d, h0, tag + " chunked16");
      expect_matches<Parallel>(*d, h0, tag + " parallel");
    }
}

// Decode: step() with one token per call and the M·B states in place continues a chunked prefill.
TEST(PapersMom, DecodeContinuesPrefill) {
  const Data d(2, 30, 1, 2, 8, 4, 4, 2, 31);
  const index_t P = 18;
  const auto op = papers::presets::make_mom();
  std::vector<float> state(count(d.M * d.B, d.HV, d.K, d.V)), o_all(count(d.B, d.T, d.HV, d.V));
  const auto sv = bhkv(state.data(), d.M * d.B, d.HV, d.K, d.V);
  // Views of tokens [t0, t0 + n) of every row (strided: rows keep their T stride).
  auto rows = [&](const std::vector<float>& x, index_t R, index_t per_tok, index_t t0, index_t n) {
    return View4<const float>(x.data() + t0 * per_tok, {R, n, 1, per_tok},
                              {d.T * per_tok, per_tok, per_tok, 1});
  };
  auto part = [&](index_t t0, index_t n, bool first) {
    const auto q4 = rows(d.q, d.B, d.H * d.K, t0, n), k4 = rows(d.k, d.M * d.B, d.H * d.K, t0, n),
               v4 = rows(d.v, d.M * d.B, d.HV * d.V, t0, n);
    papers::MomInputs in{
        .q =
            View4<const float>(q4.data(), {d.B, n, d.H, d.K}, {d.T * d.H * d.K, d.H * d.K, d.K, 1}),
        .k = View4<const float>(k4.data(), {d.M * d.B, n, d.H, d.K},
                                {d.T * d.H * d.K, d.H * d.K, d.K, 1}),
        .v = View4<const float>(v4.data(), {d.M * d.B, n, d.HV, d.V},
                                {d.T * d.HV * d.V, d.HV * d.V, d.V, 1}),
        .g =
            View3<const float>(d.g.data() + t0 * d.HV, {d.M * d.B, n, d.HV}, {d.T * d.HV, d.HV, 1}),
        .beta = View3<const float>(d.beta.data() + t0 * d.HV, {d.M * d.B, n, d.HV},
                                   {d.T * d.HV, d.HV, 1}),
        .weights = View3<const float>(d.w.data() + t0 * d.M, {d.B, n, d.M}, {d.T * d.M, d.M, 1})};
    const auto o = View4<float>(o_all.data() + t0 * d.HV * d.V, {d.B, n, d.HV, d.V},
                                {d.T * d.HV * d.V, d.HV * d.V, d.V, 1});
    if (first)
      op.forward<Chunked<16>>(in, o, sv);
    else
      op.step(in, sv, o);
  };
  part(0, P, true);
  for (index_t t = P; t < d.T; ++t) part(t, 1, false);
  EXPECT_LT(rel_rmse(o_all, d.expected(false)), kRelRmseBound);
}

TEST(PapersMom, BadArgumentsLeaveOutputsUntouched) {
  const Data d(1, 9, 1, 2, 4, 3, 3, 2, 61);
  const auto op = papers::presets::make_mom();
  std::vector<float> o(count(d.T, d.HV, d.V), 7.f), st(count(d.M, d.HV, d.K, d.V), 7.f);
  const auto ov = bthd(o.data(), 1, d.T, d.HV, d.V);
  auto bad_w = d.inputs(false);
  bad_w.weights = View3<const float>::contiguous(d.w.data(), {1, d.T - 1, d.M});
  expect_error_untouched([&] { op.forward(bad_w, ov); }, "weights", o, "weights shape");
  auto bad_k = d.inputs(false);
  bad_k.k = bthd(d.k.data(), d.M - 1, d.T, d.H, d.K);
  expect_error_untouched([&] { op.forward(bad_k, ov); }, "k", o, "k rows");
  auto no_beta = d.inputs(false);
  no_beta.beta = {};
  expect_error_untouched([&] { op.forward(no_beta, ov); }, "beta", o, "no beta");
  auto bad_h0 = d.inputs(true);
  bad_h0.initial_state = bhkv(d.h0.data(), d.M, d.HV, d.V, d.K);
  expect_error_untouched([&] { op.forward(bad_h0, ov, bhkv(st.data(), d.M, d.HV, d.K, d.V)); },
                         "initial_state", o, "state shape");
  expect_error_untouched(
      [&] { op.forward(d.inputs(false), ov, bhkv(st.data(), d.M + 1, d.HV, d.K, d.V)); },
      "final_state", o, "final state rows");
}

}  // namespace
}  // namespace polyattn::test
