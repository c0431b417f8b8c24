// InLine and MALA (papers/mean_corrected.hpp, papers/inline_attention.hpp): the operators
// against the pairwise-score references (reference/papers.hpp) for every algorithm, with the
// carried (S, z, vsum, n), GVA, varlen, split prefill, decode and bad arguments.
#include <gtest/gtest.h>

#include <cmath>

#include "papers/nala_ref_map.hpp"
#include "papers/papers_harness.hpp"
#include "polyattn/papers/inline_attention.hpp"
#include "polyattn/papers/mean_corrected.hpp"
#include "polyattn/papers/nala.hpp"
#include "polyattn/reference/papers.hpp"
#include "polyattn/testing.hpp"

namespace polyattn::test {
namespace {

struct Shape {
  index_t B, T, H, HV, K, V;
};

// Raw inputs plus an initial mean state consistent with a history of n0 tokens.
struct Data {
  Shape s;
  index_t F;  // features after the map (the state's key dim)
  std::vector<float> q, k, v, h0, z0, m0, n0;
  Data(const Shape& sh, std::uint64_t seed, index_t features = 0)
      : s(sh), F(features ? features : sh.K) {
    q = random_vector(count(s.B, s.T, s.H, s.K), seed + 1);
    k = random_vector(count(s.B, s.T, s.H, s.K), seed + 2);
    v = random_vector(count(s.B, s.T, s.HV, s.V), seed + 3);
    h0 = random_vector(count(s.B, s.HV, F, s.V), seed + 4, -0.5f, 0.5f);
    z0 = random_vector(count(s.B, s.HV, F), seed + 5, 0.f, 3.f);
    m0 = random_vector(count(s.B, s.HV, s.V), seed + 6, -2.f, 2.f);
    n0.resize(count(s.B));
    for (index_t b = 0; b < s.B; ++b) n0[count(b)] = static_cast<float>(5 + 3 * b);
  }
  LinearInputs inputs(bool with_h0) const {
    LinearInputs in{.q = bthd(q.data(), s.B, s.T, s.H, s.K),
                    .k = bthd(k.data(), s.B, s.T, s.H, s.K),
                    .v = bthd(v.data(), s.B, s.T, s.HV, s.V)};
    if (with_h0) in.initial_state = bhkv(h0.data(), s.B, s.HV, F, s.V);
    return in;
  }
  papers::MeanState<const float> init(bool with_h0) const {
    if (!with_h0) return {};
    return {View3<const float>::contiguous(z0.data(), {s.B, s.HV, F}),
            View3<const float>::contiguous(m0.data(), {s.B, s.HV, s.V}),
            View1<const float>::contiguous(n0.data(), {s.B})};
  }
};

// The maps the expectation uses: the operator's own, except NaLa's, which the reference writes.
template <class Op>
auto ref_maps(const Op& op) {
  return std::pair{op.feature_map(), op.key_feature_map()};
}
inline auto ref_maps(const papers::presets::nala&) {
  return std::pair{RefNalaMap<true>{}, RefNalaMap<false>{}};
}

// The reference takes mapped q, k: map them here in double-rounded-once float, as the operator.
template <class Map, class KeyMap = Map>
std::vector<double> expected(const Data& d, const Map& map, reference::MeanCorrectionKind kind,
                             bool with_h0, double eps, const KeyMap& key_map = {}) {
  const auto& s = d.s;
  const index_t F = map.out_dim(s.K);
  std::vector<float> qm(count(s.B, s.T, s.H, F)), km(qm.size());
  apply_rows(map, bthd(d.q.data(), s.B, s.T, s.H, s.K), bthd(qm.data(), s.B, s.T, s.H, F));
  apply_rows(key_map, bthd(d.k.data(), s.B, s.T, s.H, s.K), bthd(km.data(), s.B, s.T, s.H, F));
  LinearInputs in = d.inputs(with_h0);
  in.q = bthd(qm.data(), s.B, s.T, s.H, F);
  in.k = bthd(km.data(), s.B, s.T, s.H, F);
  const auto ini = d.init(with_h0);
  std::vector<double> r(count(s.B, s.T, s.HV, s.V));
  reference::mean_corrected<double>(in, kind, std::nullopt, eps, ini.z, ini.vsum, ini.count,
                                    bthd(r.data(), s.B, s.T, s.HV, s.V));
  return r;
}

// The expected final mean state: z0 + Σ φ(k), m0 + Σ v, n0 + T.
template <class Map>
void expect_final_mean(const Data& d, const Map& map, bool with_h0, const std::vector<float>& z,
                       const std::vector<float>& m, const std::vector<float>& n,
                       const std::string& what) {
  const auto& s = d.s;
  const index_t F = map.out_dim(s.K);
  std::vector<double> ez(z.size()), em(m.size()), en(n.size());
  std::vector<float> row(count(F));
  for (index_t b = 0; b < s.B; ++b) {
    en[count(b)] = (with_h0 ? d.n0[count(b)] : 0.0) + s.T;
    for (index_t hv = 0; hv < s.HV; ++hv) {
      const index_t h = hv / (s.HV / s.H);
      for (index_t i = 0; i < F; ++i)
        ez[count(b * s.HV + hv) * F + i] = with_h0 ? d.z0[count(b * s.HV + hv) * F + i] : 0.0;
      for (index_t j = 0; j < s.V; ++j)
        em[count(b * s.HV + hv) * s.V + j] = with_h0 ? d.m0[count(b * s.HV + hv) * s.V + j] : 0.0;
      for (index_t t = 0; t < s.T; ++t) {
        map.apply(d.k.data() + ((b * s.T + t) * s.H + h) * s.K, s.K, row.data());
        for (index_t i = 0; i < F; ++i) ez[count(b * s.HV + hv) * F + i] += row[count(i)];
        for (index_t j = 0; j < s.V; ++j)
          em[count(b * s.HV + hv) * s.V + j] += d.v[count(((b * s.T + t) * s.HV + hv) * s.V + j)];
      }
    }
  }
  EXPECT_LT(rel_rmse(z, ez), 1e-6) << what << " z";
  EXPECT_LT(rel_rmse(m, em), 1e-6) << what << " vsum";
  EXPECT_LT(rel_rmse(n, en), 1e-7) << what << " count";
}

template <class Algo, class Op>
void expect_matches(const Op& op, reference::MeanCorrectionKind kind, double eps, const Data& d,
                    bool with_h0, const std::string& what) {
  const auto& s = d.s;
  std::vector<float> o(count(s.B, s.T, s.HV, s.V), NAN), z(count(s.B, s.HV, d.F), NAN),
      m(count(s.B, s.HV, s.V), NAN), n(count(s.B), NAN);
  op.template forward<Algo>(d.inputs(with_h0), d.init(with_h0),
                            {.o = bthd(o.data(), s.B, s.T, s.HV, s.V)},
                            {View3<float>::contiguous(z.data(), {s.B, s.HV, d.F}),
                             View3<float>::contiguous(m.data(), {s.B, s.HV, s.V}),
                             View1<float>::contiguous(n.data(), {s.B})});
  const auto [qmap, kmap] = ref_maps(op);
  EXPECT_LT(rel_rmse(o, expected(d, qmap, kind, with_h0, eps, kmap)), kRelRmseBound) << what;
  expect_final_mean(d, kmap, with_h0, z, m, n, what);
}

const Shape kShapes[] = {
    {1, 1, 1, 1, 16, 16}, {2, 33, 1, 2, 8, 5}, {1, 65, 2, 4, 16, 12}, {1, 100, 1, 1, 32, 24}};

template <class Op>
void sweep(const Op& op, reference::MeanCorrectionKind kind, double eps, const char* name) {
  std::uint64_t seed = 500;
  for (const Shape& sh : kShapes) {
    const Data d(sh, seed += 10, op.feature_map().out_dim(sh.K));
    for (bool h0 : {false, true}) {
      const std::string tag = std::string(name) + " T" + std::to_string(sh.T) + (h0 ? " h0" : "");
      expect_matches<Recurrent>(op, kind, eps, d, h0, tag + " recurrent");
      expect_matches<Chunked<16>>(op, kind, eps, d, h0, tag + " chunked16");
      expect_matches<Chunked<64>>(op, kind, eps, d, h0, tag + " chunked64");
      expect_matches<Parallel>(op, kind, eps, d, h0, tag + " parallel");
    }
  }
}

TEST(PapersInLine, MatchesPairwiseReferenceEveryAlgorithm) {
  sweep(papers::presets::make_inline_attn(), reference::MeanCorrectionKind::InLine, 0.0, "inline");
  sweep(papers::presets::make_inline_attn(Relu{}), reference::MeanCorrectionKind::InLine, 0.0,
        "inline relu");
}

TEST(PapersNala, MatchesPairwiseReferenceEveryAlgorithm) {
  sweep(papers::presets::make_nala(), reference::MeanCorrectionKind::Nala, 1e-6, "nala");
}

// The maps against the formulas in double; a zero query maps to zeros; a longer query gives a
// larger power, hence a spikier (more concentrated) feature vector.
TEST(PapersNala, FeatureMapsFollowTheFormula) {
  const auto x = random_vector(24, 3, -2.f, 2.f);
  for (index_t d : {1, 5, 24}) {
    std::vector<float> fq(count(2 * d)), fk(count(2 * d));
    papers::NalaQueryMap{}.apply(x.data(), d, fq.data());
    papers::NalaKeyMap{}.apply(x.data(), d, fk.data());
    const std::vector<double> xd(x.begin(), x.begin() + d);
    const auto rq = reference::nala_query_features(xd), rk = reference::nala_key_features(xd);
    for (std::size_t i = 0; i < rq.size(); ++i) {
      EXPECT_NEAR(fq[i], rq[i], 1e-6 * std::abs(rq[i]) + 1e-30) << d << " q " << i;
      EXPECT_NEAR(fk[i], rk[i], 1e-6 * std::abs(rk[i]) + 1e-30) << d << " k " << i;
    }
  }
  std::vector<float> zero(8, 0.f), out(16, 1.f);
  papers::NalaQueryMap{}.apply(zero.data(), 8, out.data());
  for (float f : out) EXPECT_EQ(f, 0.f);
  // Same direction, 10× the norm: the largest share of the features grows.
  std::vector<float> small{0.1f, 0.05f, -0.02f}, big{1.f, 0.5f, -0.2f}, fs(6), fb(6);
  papers::NalaQueryMap{}.apply(small.data(), 3, fs.data());
  papers::NalaQueryMap{}.apply(big.data(), 3, fb.data());
  auto top_share = [](const std::vector<float>& f) {
    double sum = 0, top = 0;
    for (float v : f) sum += v, top = std::max<double>(top, v);
    return top / sum;
  };
  EXPECT_GT(top_share(fb), top_share(fs));
}

TEST(PapersMala, MatchesPairwiseReferenceEveryAlgorithm) {
  sweep(papers::presets::make_mala(), reference::MeanCorrectionKind::Mala, 1e-6, "mala");
}

// The scores of each query over the keys seen sum to one (both papers' point): constant values
// come out unchanged.
TEST(PapersMeanCorrected, ConstantValuesPassThrough) {
  const Data d({1, 40, 1, 1, 8, 3}, 5);
  std::vector<float> v(d.v.size());
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(1 + i % 3);
  LinearInputs in = d.inputs(false);
  in.v = bthd(v.data(), 1, 40, 1, 3);
  std::vector<float> o1(v.size()), o2(v.size());
  papers::presets::make_inline_attn().forward<Chunked<16>>(in, {},
                                                           {.o = bthd(o1.data(), 1, 40, 1, 3)}, {});
  papers::presets::make_mala().forward<Chunked<16>>(in, {}, {.o = bthd(o2.data(), 1, 40, 1, 3)},
                                                    {});
  for (std::size_t i = 0; i < v.size(); ++i) {
    EXPECT_NEAR(o1[i], v[i], 1e-5) << i;
    EXPECT_NEAR(o2[i], v[i], 1e-4) << i;  // MALA's eps 1e-6 in 1/(z + eps) shifts it by ~1e-6/z
  }
}

// Prefill in two pieces with the whole state carried, then decode token by token in place:
// the concatenated outputs match the reference over all tokens.
template <class Op>
void split_and_decode(const Op& op, reference::MeanCorrectionKind kind, double eps) {
  const index_t B = 2, T = 40, H = 1, HV = 2, K = 8, V = 6, cut = 23, P = 31;
  const index_t F = op.feature_map().out_dim(K);
  const Data d({B, T, H, HV, K, V}, 81, F);
  auto slice = [&](const std::vector<float>& x, index_t per_token, index_t t0, index_t n) {
    std::vector<float> out(count(B, n, per_token));
    for (index_t b = 0; b < B; ++b)
      std::copy_n(x.data() + (b * T + t0) * per_token, n * per_token,
                  out.data() + b * n * per_token);
    return out;
  };
  std::vector<float> S(count(B, HV, F, V)), z(count(B, HV, F)), m(count(B, HV, V)), n(count(B));
  const papers::MeanState<float> mean{View3<float>::contiguous(z.data(), {B, HV, F}),
                                      View3<float>::contiguous(m.data(), {B, HV, V}),
                                      View1<float>::contiguous(n.data(), {B})};
  std::vector<float> o_all(count(B, T, HV, V));
  auto put = [&](const std::vector<float>& o, index_t t0, index_t len) {
    for (index_t b = 0; b < B; ++b)
      std::copy_n(o.data() + b * len * HV * V, len * HV * V, o_all.data() + (b * T + t0) * HV * V);
  };
  index_t t0 = 0;
  for (index_t len : {cut, P - cut}) {
    auto q = slice(d.q, H * K, t0, len), k = slice(d.k, H * K, t0, len),
         v = slice(d.v, HV * V, t0, len);
    const std::vector<float> S0 = S, z0 = z, m0 = m, n0 = n;
    LinearInputs in{.q = bthd(q.data(), B, len, H, K),
                    .k = bthd(k.data(), B, len, H, K),
                    .v = bthd(v.data(), B, len, HV, V)};
    papers::MeanState<const float> init{};
    if (t0 > 0) {
      in.initial_state = bhkv(S0.data(), B, HV, F, V);
      init = {View3<const float>::contiguous(z0.data(), {B, HV, F}),
              View3<const float>::contiguous(m0.data(), {B, HV, V}),
              View1<const float>::contiguous(n0.data(), {B})};
    }
    std::vector<float> o(count(B, len, HV, V));
    op.template forward<Chunked<16>>(
        in, init, {.o = bthd(o.data(), B, len, HV, V), .final_state = bhkv(S.data(), B, HV, F, V)},
        mean);
    put(o, t0, len);
    t0 += len;
  }
  for (; t0 < T; ++t0) {
    auto q = slice(d.q, H * K, t0, 1), k = slice(d.k, H * K, t0, 1), v = slice(d.v, HV * V, t0, 1);
    std::vector<float> o(count(B, 1, HV, V));
    op.step({.q = bthd(q.data(), B, 1, H, K),
             .k = bthd(k.data(), B, 1, H, K),
             .v = bthd(v.data(), B, 1, HV, V)},
            bhkv(S.data(), B, HV, F, V), mean, bthd(o.data(), B, 1, HV, V));
    put(o, t0, 1);
  }
  const auto [qmap, kmap] = ref_maps(op);
  EXPECT_LT(rel_rmse(o_all, expected(d, qmap, kind, false, eps, kmap)), kRelRmseBound);
  expect_final_mean(d, kmap, false, z, m, n, "after decode");
}

TEST(PapersMeanCorrected, SplitPrefillAndDecodeContinue) {
  split_and_decode(papers::presets::make_inline_attn(), reference::MeanCorrectionKind::InLine, 0);
  split_and_decode(papers::presets::make_mala(), reference::MeanCorrectionKind::Mala, 1e-6);
  split_and_decode(papers::presets::make_nala(), reference::MeanCorrectionKind::Nala, 1e-6);
}

TEST(PapersMeanCorrected, VarlenEqualsSeparateCalls) {
  const index_t T = 50, H = 2, HV = 2, K = 8, V = 5;
  const std::vector<std::int64_t> cu{0, 20, 20, 50};
  const Data d({1, T, H, HV, K, V}, 93);
  const auto op = papers::presets::make_mala();
  std::vector<float> o(count(T, HV, V)), z(count(3, HV, K)), m(count(3, HV, V)), n(count(3));
  LinearInputs in = d.inputs(false);
  in.cu_seqlens = cu;
  op.forward<Chunked<16>>(
      in, {}, {.o = bthd(o.data(), 1, T, HV, V)},
      {View3<float>::contiguous(z.data(), {3, HV, K}),
       View3<float>::contiguous(m.data(), {3, HV, V}), View1<float>::contiguous(n.data(), {3})});
  for (std::size_t s = 0; s + 1 < cu.size(); ++s) {
    const index_t t0 = cu[s], L = cu[s + 1] - cu[s];
    if (L == 0) {
      EXPECT_EQ(n[s], 0.f);
      continue;
    }
    std::vector<float> on(count(L, HV, V)), zn(count(HV, K)), mn(count(HV, V)), nn(1);
    op.forward<Chunked<16>>({.q = bthd(d.q.data() + t0 * H * K, 1, L, H, K),
                             .k = bthd(d.k.data() + t0 * H * K, 1, L, H, K),
                             .v = bthd(d.v.data() + t0 * HV * V, 1, L, HV, V)},
                            {}, {.o = bthd(on.data(), 1, L, HV, V)},
                            {View3<float>::contiguous(zn.data(), {1, HV, K}),
                             View3<float>::contiguous(mn.data(), {1, HV, V}),
                             View1<float>::contiguous(nn.data(), {1})});
    EXPECT_TRUE(
        same_bits(on, std::vector<float>(o.begin() + t0 * HV * V, o.begin() + (t0 + L) * HV * V)));
    EXPECT_TRUE(same_bits(
        zn, std::vector<float>(z.begin() + s * zn.size(), z.begin() + (s + 1) * zn.size())));
    EXPECT_TRUE(same_bits(
        mn, std::vector<float>(m.begin() + s * mn.size(), m.begin() + (s + 1) * mn.size())));
    EXPECT_EQ(nn[0], n[s]);
  }
}

// InLine with its local residual: the InLine output plus the causal conv of v.
TEST(PapersInLine, LocalResidualAddsTheConv) {
  const index_t B = 2, T = 30, H = 1, HV = 2, K = 8, V = 4, W = 3;
  const Data d({B, T, H, HV, K, V}, 71);
  const auto r = random_vector(count(B, HV, V, W), 9, -0.5f, 0.5f);
  const papers::TokenConv residual{.weight =
                                       View4<const float>::contiguous(r.data(), {B, HV, V, W})};
  std::vector<float> o(count(B, T, HV, V));
  papers::InLine<>().forward<Chunked<16>>(d.inputs(false), {}, residual, {},
                                          {.o = bthd(o.data(), B, T, HV, V)}, {});
  auto ref = expected(d, Identity{}, reference::MeanCorrectionKind::InLine, false, 0.0);
  reference::token_conv<double>(bthd(d.v.data(), B, T, HV, V), residual, {}, {},
                                bthd(ref.data(), B, T, HV, V));
  EXPECT_LT(rel_rmse(o, ref), kRelRmseBound);
}

TEST(PapersMeanCorrected, BadArgumentsLeaveOutputsUntouched) {
  const Data d({2, 9, 1, 2, 4, 3}, 61);
  const auto& s = d.s;
  const auto op = papers::presets::make_inline_attn();
  std::vector<float> o(count(s.B, s.T, s.HV, s.V), 7.f), z(count(s.B, s.HV, s.K), 7.f),
      m(count(s.B, s.HV, s.V), 7.f), n(count(s.B), 7.f);
  const LinearOutputs<float> out{.o = bthd(o.data(), s.B, s.T, s.HV, s.V)};
  const papers::MeanState<float> fin{View3<float>::contiguous(z.data(), {s.B, s.HV, s.K}),
                                     View3<float>::contiguous(m.data(), {s.B, s.HV, s.V}),
                                     View1<float>::contiguous(n.data(), {s.B})};
  auto init = d.init(true);
  // Part of the mean state only.
  auto partial = init;
  partial.vsum = {};
  expect_error_untouched([&] { op.forward(d.inputs(true), partial, out, fin); }, "init.vsum", o,
                         "init without vsum");
  auto bad_count = init;
  bad_count.count = View1<const float>::contiguous(d.n0.data(), {1});
  expect_error_untouched([&] { op.forward(d.inputs(true), bad_count, out, fin); }, "init.count", o,
                         "count shape");
  auto bad_z = fin;
  bad_z.z = View3<float>::contiguous(z.data(), {s.B, s.HV, s.K - 1});
  expect_error_untouched([&] { op.forward(d.inputs(false), {}, out, bad_z); }, "fin.z", o,
                         "fin.z shape");
  // The library's z is not this operator's: refused rather than ignored.
  LinearInputs with_z = d.inputs(false);
  with_z.initial_z = View3<const float>::contiguous(d.z0.data(), {s.B, s.HV, s.K});
  expect_error_untouched([&] { op.forward(with_z, {}, out, fin); }, "initial_z", o, "initial_z");
  // The kernels' checks (state shape) run before o or the mean state is written.
  LinearInputs bad_state = d.inputs(false);
  bad_state.initial_state = bhkv(d.h0.data(), s.B, s.HV, s.V, s.K);
  expect_error_untouched([&] { op.forward(bad_state, init, out, fin); }, "initial_state", z,
                         "state shape");
  expect_error_untouched([&] { op.forward(bad_state, init, out, fin); }, "initial_state", o,
                         "state shape (o)");
  // A residual kernel of the wrong size, through the InLine module.
  const papers::TokenConv bad_kernel{
      .weight = View4<const float>::contiguous(d.h0.data(), {3, s.HV, s.V, 2})};
  expect_error_untouched(
      [&] { papers::InLine<>().forward(d.inputs(false), {}, bad_kernel, {}, out, fin); },
      "conv.weight", o, "residual kernel");
}

}  // namespace
}  // namespace polyattn::test
