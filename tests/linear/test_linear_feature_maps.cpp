// tests/linear/test_linear_feature_maps.cpp — presets whose feature map changes the key
// dimension: Based (Taylor-2, against reference::based_attention written directly from fla's
// formula) and Hedgehog (against the linear reference on rows mapped by apply_rows), for the
// recurrent and chunked algorithms; the decode step continues a Based prefill.
#include <gtest/gtest.h>

#include "linear/linear_harness.hpp"
#include "polyattn/reference/based.hpp"

namespace {

using namespace polyattn;
using polyattn::test::kRelRmseBound;
using polyattn::test::random_vector;
using polyattn::test::rel_rmse;

template <class Algo>
void based_matches_reference() {
  const index_t B = 2, T = 70, H = 2, K = 16, V = 24;
  const auto q = random_vector(B * T * H * K, 1), k = random_vector(B * T * H * K, 2),
             v = random_vector(B * T * H * V, 3);
  std::vector<float> o(B * T * H * V);
  const auto op = presets::make_based();
  op.forward<Algo>({.q = bthd(q.data(), B, T, H, K),
                    .k = bthd(k.data(), B, T, H, K),
                    .v = bthd(v.data(), B, T, H, V)},
                   {.o = bthd(o.data(), B, T, H, V)});
  std::vector<double> ref(o.size());
  reference::based_attention<double>({.q = bthd(q.data(), B, T, H, K),
                                      .k = bthd(k.data(), B, T, H, K),
                                      .v = bthd(v.data(), B, T, H, V)},
                                     {}, bthd(ref.data(), B, T, H, V));
  EXPECT_LT(rel_rmse(o, ref), kRelRmseBound);
}

TEST(LinearFeatureMaps, BasedRecurrentMatchesReference) {
  based_matches_reference<Recurrent>();
}
TEST(LinearFeatureMaps, BasedChunkedMatchesReference) {
  based_matches_reference<Chunked<32>>();
}
TEST(LinearFeatureMaps, BasedParallelMatchesReference) {
  based_matches_reference<Parallel>();
}

template <class Algo>
void hedgehog_matches_reference() {
  const index_t B = 1, T = 50, H = 2, D = 8, Dh = 6, V = 8;
  const auto W = random_vector(Dh * D, 11), bias = random_vector(Dh, 12);
  const auto q = random_vector(B * T * H * D, 1), k = random_vector(B * T * H * D, 2),
             v = random_vector(B * T * H * V, 3), g = random_vector(B * T * H, 4, -0.2f, 0.f);
  const Hedgehog map(W, bias);
  const auto op = presets::make_hedgehog(map, ScalarDecay{});
  std::vector<float> o(B * T * H * V);
  op.forward<Algo>({.q = bthd(q.data(), B, T, H, D),
                    .k = bthd(k.data(), B, T, H, D),
                    .v = bthd(v.data(), B, T, H, V),
                    .g = bth(g.data(), B, T, H)},
                   {.o = bthd(o.data(), B, T, H, V)});
  // Reference: map the rows, then the plain recurrence with the same options.
  const index_t F = map.out_dim(D);
  std::vector<float> qm(B * T * H * F), km(qm.size());
  apply_rows(map, bthd(q.data(), B, T, H, D), bthd(qm.data(), B, T, H, F));
  apply_rows(map, bthd(k.data(), B, T, H, D), bthd(km.data(), B, T, H, F));
  std::vector<double> ref(o.size());
  reference::linear_recurrence<double>({.q = bthd(qm.data(), B, T, H, F),
                                        .k = bthd(km.data(), B, T, H, F),
                                        .v = bthd(v.data(), B, T, H, V),
                                        .g = bth(g.data(), B, T, H)},
                                       op.options(), {.o = bthd(ref.data(), B, T, H, V)});
  EXPECT_LT(rel_rmse(o, ref), kRelRmseBound);
}

TEST(LinearFeatureMaps, HedgehogRecurrentMatchesReference) {
  hedgehog_matches_reference<Recurrent>();
}
TEST(LinearFeatureMaps, HedgehogChunkedMatchesReference) {
  hedgehog_matches_reference<Chunked<16>>();
}

// Prefill then token-by-token decode with the state (and z) carried == one long prefill.
TEST(LinearFeatureMaps, BasedDecodeContinuesPrefill) {
  const index_t T = 12, T1 = 9, H = 1, K = 4, V = 4;
  const index_t F = Taylor2Fla{}.out_dim(K);
  const auto q = random_vector(T * H * K, 5), k = random_vector(T * H * K, 6),
             v = random_vector(T * H * V, 7);
  const auto op = presets::make_based();
  std::vector<float> o(T * H * V), o2(o.size()), state(H * F * V), z(H * F);
  op.forward<Chunked<16>>({.q = bthd(q.data(), 1, T, H, K),
                           .k = bthd(k.data(), 1, T, H, K),
                           .v = bthd(v.data(), 1, T, H, V)},
                          {.o = bthd(o.data(), 1, T, H, V)});
  op.forward<Chunked<16>>({.q = bthd(q.data(), 1, T1, H, K),
                           .k = bthd(k.data(), 1, T1, H, K),
                           .v = bthd(v.data(), 1, T1, H, V)},
                          {.o = bthd(o2.data(), 1, T1, H, V),
                           .final_state = bhkv(state.data(), 1, H, F, V),
                           .final_z = View3<float>::contiguous(z.data(), {1, H, F})});
  for (index_t t = T1; t < T; ++t) {
    std::vector<float> next(state.size()), znext(z.size());
    op.forward<Recurrent>({.q = bthd(q.data() + t * H * K, 1, 1, H, K),
                           .k = bthd(k.data() + t * H * K, 1, 1, H, K),
                           .v = bthd(v.data() + t * H * V, 1, 1, H, V),
                           .initial_state = bhkv(state.data(), 1, H, F, V),
                           .initial_z = View3<const float>::contiguous(z.data(), {1, H, F})},
                          {.o = bthd(o2.data() + t * H * V, 1, 1, H, V),
                           .final_state = bhkv(next.data(), 1, H, F, V),
                           .final_z = View3<float>::contiguous(znext.data(), {1, H, F})});
    state = next;
    z = znext;
  }
  EXPECT_LT(rel_rmse(o2, o), 1e-6);
}

}  // namespace
