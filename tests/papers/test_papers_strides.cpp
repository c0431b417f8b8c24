// Strided inputs (docs/conventions.md §8): the papers' operators give the same bits for head-first
// [B,H,T,D] memory (polyattn::head_first) as for the contiguous [B,T,H,D] layout, and for a thread
// pool as for Serial (RALA's and SSE's extra inputs stay contiguous).
#include <gtest/gtest.h>

#include "papers/papers_harness.hpp"
#include "polyattn/papers/papers.hpp"

namespace polyattn::test {
namespace {

constexpr index_t B = 2, T = 37, H = 2, HV = 4, K = 8, V = 6;

// x [B,T,Hx,D] contiguous copied into head-first [B,Hx,T,D] memory.
std::vector<float> to_head_first(const std::vector<float>& x, index_t Hx, index_t D) {
  std::vector<float> y(x.size());
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < Hx; ++h)
        for (index_t d = 0; d < D; ++d)
          y[count(((b * Hx + h) * T + t) * D + d)] = x[count(((b * T + t) * Hx + h) * D + d)];
  return y;
}

struct Inputs {
  std::vector<float> q = random_vector(count(B, T, H, K), 1),
                     k = random_vector(count(B, T, H, K), 2),
                     v = random_vector(count(B, T, HV, V), 3);
  std::vector<float> qh = to_head_first(q, H, K), kh = to_head_first(k, H, K),
                     vh = to_head_first(v, HV, V);
  LinearInputs contiguous() const {
    return {.q = bthd(q.data(), B, T, H, K),
            .k = bthd(k.data(), B, T, H, K),
            .v = bthd(v.data(), B, T, HV, V)};
  }
  LinearInputs head_first_views() const {
    return {.q = head_first(qh.data(), B, T, H, K),
            .k = head_first(kh.data(), B, T, H, K),
            .v = head_first(vh.data(), B, T, HV, V)};
  }
};

// run(in, o, exec) for both layouts and a 3-thread pool; o compared bit for bit.
template <class F>
void expect_same_bits(F run, const char* what) {
  const Inputs x;
  std::vector<float> a(count(B, T, HV, V)), b(a.size()), c(a.size());
  run(x.contiguous(), bthd(a.data(), B, T, HV, V), Serial{});
  run(x.head_first_views(), bthd(b.data(), B, T, HV, V), Serial{});
  ThreadPool pool(3);
  run(x.contiguous(), bthd(c.data(), B, T, HV, V), pool);
  EXPECT_TRUE(same_bits(a, b)) << what << " head-first";
  EXPECT_TRUE(same_bits(a, c)) << what << " thread pool";
}

TEST(PapersStrides, HeadFirstAndThreadsGiveTheSameBits) {
  expect_same_bits(
      [](const LinearInputs& in, View4<float> o, const auto& ex) {
        papers::presets::make_lightnet().forward<Chunked<16>>(in, {}, {.o = o}, {}, {}, ex);
      },
      "lightnet");
  expect_same_bits(
      [](const LinearInputs& in, View4<float> o, const auto& ex) {
        papers::presets::make_mala().forward<Chunked<16>>(in, {}, {.o = o}, {}, {}, ex);
      },
      "mala");
  expect_same_bits(
      [](const LinearInputs& in, View4<float> o, const auto& ex) {
        papers::presets::make_nala().forward<Recurrent>(in, {}, {.o = o}, {}, {}, ex);
      },
      "nala");
  expect_same_bits(
      [](const LinearInputs& in, View4<float> o, const auto& ex) {
        papers::presets::make_flowformer().forward<Chunked<16>>(in, {}, {.o = o}, {}, ex);
      },
      "flowformer");
  const auto conv_w = random_vector(count(V, 4), 9);
  expect_same_bits(
      [&](const LinearInputs& in, View4<float> o, const auto& ex) {
        papers::Slab().forward<Chunked<16>>(
            in, {.weight = View4<const float>::contiguous(conv_w.data(), {1, 1, V, 4})}, {},
            {.o = o}, {}, ex);
      },
      "slab");
  const auto query = random_vector(count(H, K), 10);
  expect_same_bits(
      [&](const LinearInputs& in, View4<float> o, const auto& ex) {
        papers::presets::make_aaren().forward<Chunked<16>>(
            {.query = TensorView<const float, 2>::contiguous(query.data(), {H, K}),
             .k = in.k.as<float>(),
             .v = in.v.as<float>()},
            o, {}, {}, ex);
      },
      "aaren");
  const auto gates = random_vector(count(B, T, HV), 11, 0.05f, 0.9f);
  expect_same_bits(
      [&](const LinearInputs& in, View4<float> o, const auto& ex) {
        const auto gv = bth(gates.data(), B, T, HV);
        papers::presets::make_titans().forward({.q = in.q.as<float>(),
                                                .k = in.k.as<float>(),
                                                .v = in.v.as<float>(),
                                                .alpha = gv,
                                                .eta = gv,
                                                .theta = gv},
                                               {.o = o}, {}, ex);
      },
      "titans");
  const auto qbar = random_vector(count(B, H, K), 12, 0.3f, 2.f);
  expect_same_bits(
      [&](const LinearInputs& in, View4<float> o, const auto& ex) {
        papers::presets::make_rala().forward<Chunked<16>>(
            {.q = in.q.as<float>(),
             .k = in.k.as<float>(),
             .v = in.v.as<float>(),
             .q_mean = View3<const float>::contiguous(qbar.data(), {B, H, K})},
            {.weight = View4<const float>::contiguous(conv_w.data(), {1, 1, V, 4})}, {}, {.o = o},
            {}, {}, ex);
      },
      "rala");
  const auto gk = random_vector(count(B, T, HV, K), 13, -0.2f, -0.001f);
  const auto router = random_vector(count(B, T, 3), 14, -2.f, 2.f);
  expect_same_bits(
      [&](const LinearInputs& in, View4<float> o, const auto& ex) {
        const auto g = bthd(gk.data(), B, T, HV, K);
        papers::presets::make_sse().forward<Chunked<16>>(
            {.q1 = in.q.as<float>(),
             .k1 = in.k.as<float>(),
             .q2 = in.k.as<float>(),
             .k2 = in.q.as<float>(),
             .v = in.v.as<float>(),
             .g1 = g,
             .g2 = g,
             .e = View3<const float>::contiguous(router.data(), {B, T, 3})},
            o, {}, {.writers = 2, .readers = 1}, {}, ex);
      },
      "sse");
}

}  // namespace
}  // namespace polyattn::test
