// State pools (LinearInputs::state_indices): initial / final states (and z) as caller-owned
// pools [slots, HV, K, V] indexed per sequence, for forward (batched and varlen, every
// algorithm, the chunk-parallel path) and step. Checked against the reference oracle with the
// same pool, bit for bit against the same call on gathered contiguous states, slots no sequence
// owns untouched, and bad indices as named errors with nothing written.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "common/expect_error.hpp"
#include "linear_harness.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/linear/chunked.hpp"

namespace polyattn::test {
namespace {

constexpr index_t kSlots = 7;

// A pool of kSlots random states and the same states gathered for `idx` as contiguous [N,...].
struct Pool {
  index_t HV, K, V;
  std::vector<float> pool, z;
  Pool(index_t hv, index_t k, index_t v, std::uint64_t seed)
      : HV(hv),
        K(k),
        V(v),
        pool(random_vector(static_cast<std::size_t>(kSlots * hv * k * v), seed, -0.5f, 0.5f)),
        z(random_vector(static_cast<std::size_t>(kSlots * hv * k), seed + 1, 0.f, 1.f)) {}
  std::vector<float> gather(const std::vector<std::int64_t>& idx, bool of_z = false) const {
    const index_t block = of_z ? HV * K : HV * K * V;
    const auto& src = of_z ? z : pool;
    std::vector<float> out;
    for (std::int64_t s : idx)
      out.insert(out.end(), src.begin() + s * block, src.begin() + (s + 1) * block);
    return out;
  }
  View4<float> view() { return bhkv(pool.data(), kSlots, HV, K, V); }
  View4<const float> view() const { return bhkv(pool.data(), kSlots, HV, K, V); }
  View3<float> zview() { return View3<float>::contiguous(z.data(), {kSlots, HV, K}); }
};

template <class Algo, class Op, class E = Serial>
void check_forward(const Op& op, const LinearShape& s, const std::vector<std::int64_t>& cu,
                   const std::vector<std::int64_t>& idx, const E& exec = E{}) {
  const LinearOptions opt = op.options();
  const bool sum = opt.normalizer == Normalizer::Sum;
  const LinearData data(s, 11, 1.0, sum);
  LinearInputs in = data.inputs(opt, false);
  in.cu_seqlens = cu;
  const index_t N = static_cast<index_t>(idx.size());
  const std::string tag = s.str() + " " + Algo::name;

  // Pooled, in place: initial and final state are the same pool.
  Pool p(s.HV, s.K, s.V, 5);
  const Pool before = p;
  std::vector<float> o(data.v.size());
  LinearInputs pin = in;
  pin.state_indices = idx;
  pin.initial_state = p.view();
  if (sum) pin.initial_z = p.zview();
  op.template forward<Algo>(pin,
                            {.o = bthd(o.data(), s.B, s.T, s.HV, s.V),
                             .final_state = p.view(),
                             .final_z = sum ? p.zview() : View3<float>{}},
                            {}, exec);

  // The same call on gathered contiguous states: the same bits.
  std::vector<float> h0 = before.gather(idx), z0 = before.gather(idx, true);
  std::vector<float> o_c(o.size()), ht(h0.size()), zt(z0.size());
  LinearInputs cin = in;
  cin.initial_state = bhkv(static_cast<const float*>(h0.data()), N, s.HV, s.K, s.V);
  if (sum) cin.initial_z = View3<const float>::contiguous(z0.data(), {N, s.HV, s.K});
  op.template forward<Algo>(
      cin,
      {.o = bthd(o_c.data(), s.B, s.T, s.HV, s.V),
       .final_state = bhkv(ht.data(), N, s.HV, s.K, s.V),
       .final_z = sum ? View3<float>::contiguous(zt.data(), {N, s.HV, s.K}) : View3<float>{}},
      {}, exec);
  EXPECT_EQ(o, o_c) << tag;
  EXPECT_EQ(p.gather(idx), ht) << tag;
  if (sum) {
    EXPECT_EQ(p.gather(idx, true), zt) << tag;
  }
  // Slots no sequence owns are untouched.
  std::vector<std::int64_t> rest;
  for (std::int64_t slot = 0; slot < kSlots; ++slot)
    if (std::find(idx.begin(), idx.end(), slot) == idx.end()) rest.push_back(slot);
  EXPECT_EQ(p.gather(rest), before.gather(rest)) << tag;

  // The reference oracle with the same pool agrees within the fp32 bound.
  std::vector<double> o_ref(o.size());
  std::vector<double> ref_pool(before.pool.begin(), before.pool.end());
  LinearInputs rin = in;
  rin.state_indices = idx;
  rin.initial_state = before.view();
  if (sum) rin.initial_z = View3<const float>::contiguous(before.z.data(), {kSlots, s.HV, s.K});
  reference::linear_recurrence(
      rin, opt,
      LinearOutputs<double>{.o = bthd(o_ref.data(), s.B, s.T, s.HV, s.V),
                            .final_state = bhkv(ref_pool.data(), kSlots, s.HV, s.K, s.V)});
  EXPECT_LT(rel_rmse(o, o_ref), kRelRmseBound) << tag;
  EXPECT_LT(rel_rmse(p.pool, ref_pool), kRelRmseBound) << tag;
}

TEST(LinearStatePool, ForwardMatchesGatheredStatesAndTheReference) {
  const LinearShape batched{.B = 3, .T = 37, .H = 2, .HV = 4, .K = 16, .V = 8};
  const std::vector<std::int64_t> idx{5, 0, 3};
  const auto gdn = presets::make_gated_delta_rule();
  check_forward<Recurrent>(gdn, batched, {}, idx);
  check_forward<Chunked<16>>(gdn, batched, {}, idx);
  check_forward<Parallel>(gdn, batched, {}, idx);
  check_forward<Chunked<32>>(presets::gla{}, batched, {}, idx);
  check_forward<Chunked<16>>(presets::make_linear_attn_normalized(), batched, {}, idx);
  // Varlen with an empty sequence: its slot passes through.
  const LinearShape packed{.B = 1, .T = 40, .H = 2, .HV = 2, .K = 16, .V = 16};
  check_forward<Chunked<16>>(gdn, packed, {0, 17, 17, 40}, {6, 1, 2});
  check_forward<Recurrent>(presets::simple_gla{}, packed, {0, 17, 17, 40}, {6, 1, 2});
  // The chunk-parallel path (additive, fewer heads than threads).
  ThreadPool pool(4);
  const LinearShape one{.B = 1, .T = 200, .H = 1, .HV = 1, .K = 16, .V = 16};
  check_forward<Chunked<16>>(presets::gla{}, one, {}, {4}, pool);
}

// Decode: step over a pool equals step over the gathered states, token after token.
TEST(LinearStatePool, StepUpdatesItsSlotsInPlace) {
  const LinearShape s{.B = 3, .T = 5, .H = 2, .HV = 2, .K = 16, .V = 16};
  const LinearData data(s, 3);
  const auto gdn = presets::make_gated_delta_rule();
  const std::vector<std::int64_t> idx{2, 6, 0};
  Pool p(s.HV, s.K, s.V, 9);
  std::vector<float> contiguous = p.gather(idx);
  for (index_t t = 0; t < s.T; ++t) {
    auto at = [&](const std::vector<float>& x, index_t H, index_t D) {
      return View4<const float>(x.data() + t * H * D, {s.B, 1, H, D}, {s.T * H * D, H * D, D, 1});
    };
    LinearInputs in{
        .q = at(data.q, s.H, s.K),
        .k = at(data.k, s.H, s.K),
        .v = at(data.v, s.HV, s.V),
        .g = View3<const float>(data.g.data() + t * s.HV, {s.B, 1, s.HV}, {s.T * s.HV, s.HV, 1}),
        .beta =
            View3<const float>(data.beta.data() + t * s.HV, {s.B, 1, s.HV}, {s.T * s.HV, s.HV, 1})};
    std::vector<float> o1(static_cast<std::size_t>(s.B * s.HV * s.V)), o2(o1.size());
    gdn.step(in, bhkv(contiguous.data(), s.B, s.HV, s.K, s.V), bthd(o1.data(), s.B, 1, s.HV, s.V));
    in.state_indices = idx;
    gdn.step(in, p.view(), bthd(o2.data(), s.B, 1, s.HV, s.V));
    ASSERT_EQ(o1, o2) << "token " << t;
  }
  EXPECT_EQ(p.gather(idx), contiguous);
}

TEST(LinearStatePool, BadIndicesAreNamedErrorsAndNothingIsWritten) {
  const LinearShape s{.B = 3, .T = 8, .H = 1, .HV = 1, .K = 16, .V = 16};
  const LinearData data(s, 4);
  const auto gdn = presets::make_gated_delta_rule();
  const LinearOptions opt = gdn.options();
  Pool p(s.HV, s.K, s.V, 1);
  const Pool before = p;
  std::vector<float> o(data.v.size(), 7.f);
  auto call = [&](std::vector<std::int64_t> idx, bool with_pool = true) {
    LinearInputs in = data.inputs(opt, false);
    in.state_indices = idx;
    if (with_pool) in.initial_state = p.view();
    gdn.forward<Chunked<16>>(in, {.o = bthd(o.data(), s.B, s.T, s.HV, s.V),
                                  .final_state = with_pool ? p.view() : View4<float>{}});
  };
  std::string m = expect_error("state_indices", [&] { call({1, 4, 1}); });
  EXPECT_NE(m.find("both slot 1"), std::string::npos) << m;
  m = expect_error("state_indices", [&] { call({1, 7, 2}); });
  EXPECT_NE(m.find("[0, 7)"), std::string::npos) << m;
  expect_error("state_indices", [&] { call({1, -1, 2}); });
  expect_error("state_indices", [&] { call({1, 2}); });
  expect_error("state_indices", [&] { call({0, 1, 2}, false); });
  EXPECT_EQ(p.pool, before.pool);
  for (float x : o) EXPECT_EQ(x, 7.f);
  // A pool with the wrong per-slot shape names the pool.
  LinearInputs in = data.inputs(opt, false);
  const std::vector<std::int64_t> idx{0, 1, 2};
  in.state_indices = idx;
  in.initial_state = bhkv(static_cast<const float*>(p.pool.data()), 3, s.HV, s.K, 8);
  expect_error("initial_state",
               [&] { gdn.forward<Chunked<16>>(in, {.o = bthd(o.data(), s.B, s.T, s.HV, s.V)}); });
}

}  // namespace
}  // namespace polyattn::test
