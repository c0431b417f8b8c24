// tests/papers/test_papers_precision.cpp — bf16 / fp16 q, k, v and o of the papers' operators
// built on the linear family (LightNet, SLAB, InLine attention with and without its residual,
// MALA, NaLaFormer, Flowformer) and of those with argument types of their own (Titans, Aaren
// recurrent and scan, Mixture-of-Memories; SPEC §8, docs/conventions.md §9.8), on every ISA
// (ctest reruns the binary per lower ISA).
//
// The fp32 random data is rounded to the element type T first; the fp32 arrays then hold exactly
// the values of the T arrays, and the double reference runs on them. Checked per operator, with
// GVA (HV = 2H): T inputs with an fp32 o give the bits of the fp32 operator on the rounded values
// (conversion on load, own passes read rows widened exactly); a T o holds exactly that fp32 o
// rounded once; relative RMSE against the reference < 8e-3 (bf16 o), < 2e-3 (fp16 o), < 1e-5
// (fp32 o). Also decode steps (SLAB, LightNet, Titans, Aaren, MoM) and mixed element types
// (Errors naming the argument, o untouched). MoM reads the two batch rows of k, v as its M = 2
// memories of one sequence. The worst errors measured are printed (stdout) for the record.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/precision.hpp"
#include "papers/nala_ref_map.hpp"
#include "papers/papers_harness.hpp"
#include "polyattn/papers/aaren.hpp"
#include "polyattn/papers/flowformer.hpp"
#include "polyattn/papers/inline_attention.hpp"
#include "polyattn/papers/lightnet.hpp"
#include "polyattn/papers/mean_corrected.hpp"
#include "polyattn/papers/mom.hpp"
#include "polyattn/papers/nala.hpp"
#include "polyattn/papers/slab.hpp"
#include "polyattn/papers/titans.hpp"
#include "polyattn/reference/papers.hpp"

namespace polyattn::test {
namespace {

constexpr index_t B = 2, T = 40, H = 1, HV = 2, K = 8, V = 6, W = 3;
constexpr index_t M = B;  // MoM: the batch rows of k, v are the memories of one sequence

// q, k, v rounded to E (the fp32 arrays hold the rounded values) with their E copies, and a
// token-conv kernel with bias (fp32).
template <Element E>
struct Rounded {
  std::vector<float> q, k, v, w, bias;
  std::vector<E> qt, kt, vt;
  // fp32 arguments of the operators with types of their own: Titans' α, η, θ [B,T,HV]; Aaren's
  // query [H,K]; MoM's g, β [M,T,HV] and routing weights [1,T,M] (some tokens to one memory).
  std::vector<float> alpha, eta, theta, query, g, beta, route;
  explicit Rounded(std::uint64_t seed) {
    q = random_vector(count(B, T, H, K), seed + 1, -2.f, 2.f);
    k = random_vector(count(B, T, H, K), seed + 2, -2.f, 2.f);
    v = random_vector(count(B, T, HV, V), seed + 3);
    w = random_vector(count(HV, V, W), seed + 4, -0.5f, 0.5f);
    bias = random_vector(count(V), seed + 5, -0.1f, 0.1f);
    alpha = random_vector(count(B, T, HV), seed + 6, 0.f, 0.2f);
    eta = random_vector(count(B, T, HV), seed + 7, 0.f, 0.95f);
    theta = random_vector(count(B, T, HV), seed + 8, 0.05f, 0.9f);
    query = random_vector(count(H, K), seed + 9);
    g = random_vector(count(M, T, HV), seed + 10, -0.3f, -0.001f);
    beta = random_vector(count(M, T, HV), seed + 11, 0.05f, 0.95f);
    route = random_vector(count(T, M), seed + 12, 0.1f, 1.f);
    for (index_t t = 0; t < T; t += 3) route[count(t * M + t % M)] = 0.f;
    for (auto* x : {&q, &k, &v}) round_all<E>(*x);
    qt = narrow<E>(q);
    kt = narrow<E>(k);
    vt = narrow<E>(v);
  }
  LinearInputs inputs(bool typed) const {
    if (!typed)
      return {.q = bthd(q.data(), B, T, H, K),
              .k = bthd(k.data(), B, T, H, K),
              .v = bthd(v.data(), B, T, HV, V)};
    return {.q = bthd(qt.data(), B, T, H, K),
            .k = bthd(kt.data(), B, T, H, K),
            .v = bthd(vt.data(), B, T, HV, V)};
  }
  papers::TokenConv conv() const {
    return {.weight = View4<const float>::contiguous(w.data(), {1, HV, V, W}),
            .bias = View1<const float>::contiguous(bias.data(), {V})};
  }
  // The operators' inputs over x's q, k, v (fp32 or E) and the fp32 arguments above; t0, n:
  // tokens [t0, t0 + n) (n = T: the whole sequence).
  papers::TitansInputs titans(const LinearInputs& x, index_t t0 = 0, index_t n = T) const {
    return {.q = x.q,
            .k = x.k,
            .v = x.v,
            .alpha = tokens(alpha, t0, n),
            .eta = tokens(eta, t0, n),
            .theta = tokens(theta, t0, n)};
  }
  papers::AarenInputs aaren(const LinearInputs& x) const {
    return {
        .query = TensorView<const float, 2>::contiguous(query.data(), {H, K}), .k = x.k, .v = x.v};
  }
  papers::MomInputs mom(const LinearInputs& x, index_t t0 = 0, index_t n = T) const {
    return {.q = batch_rows(x.q, 1),
            .k = x.k,
            .v = x.v,
            .g = tokens(g, t0, n),
            .beta = tokens(beta, t0, n),
            .weights = View3<const float>(route.data() + t0 * M, {1, n, M}, {T * M, M, 1})};
  }
  // Tokens [t0, t0 + n) of a [B,T,HV] tensor.
  static View3<const float> tokens(const std::vector<float>& x, index_t t0, index_t n) {
    return {x.data() + t0 * HV, {B, n, HV}, {T * HV, HV, 1}};
  }
  // The first `rows` batch rows of x.
  static EView4 batch_rows(const EView4& x, index_t rows) {
    return x.visit([&](auto t) {
      return EView4(decltype(t)(t.data(), {rows, t.size(1), t.size(2), t.size(3)}, t.strides()));
    });
  }
};

std::vector<double> zeros() {
  return std::vector<double>(count(B, T, HV, V), 0.0);
}
View4<double> ov(std::vector<double>& x) {
  return bthd(x.data(), B, T, HV, V);
}

// The worst errors of one element type.
struct Worst {
  double o_t = 0, o_f32 = 0;
  void print(const char* type) const {
    std::printf("[precision] papers %s: worst rel RMSE  o(%s) %.3e  o(fp32) %.3e\n", type, type,
                o_t, o_f32);
  }
};

// run(in, o) of one operator on the fp32 and the E inputs, fp32 and E o (module comment).
template <Element E>
void expect_typed(const Rounded<E>& r,
                  const std::function<void(const LinearInputs&, MutEView4)>& run,
                  const std::vector<double>& ref, const std::string& what, Worst& worst) {
  const auto n = ref.size();
  const index_t rows = static_cast<index_t>(n / count(T, HV, V));  // of o: B, or 1 (MoM)
  std::vector<float> o32(n, NAN), of(n, NAN);
  std::vector<E> ot(n, from_float<E>(NAN));
  run(r.inputs(false), bthd(o32.data(), rows, T, HV, V));
  run(r.inputs(true), bthd(of.data(), rows, T, HV, V));
  run(r.inputs(true), bthd(ot.data(), rows, T, HV, V));
  const std::string tag = what + " " + kName<E>;
  EXPECT_TRUE(same_bits(of, o32)) << tag << ": fp32 o from " << kName<E> << " inputs";
  EXPECT_TRUE(same_bits(ot, narrow<E>(of))) << tag << ": o rounded once";
  const double et = rel_rmse(widen(ot), ref), ef = rel_rmse(of, ref);
  EXPECT_LT(et, kBound<E>) << tag << ": " << kName<E> << " o";
  EXPECT_LT(ef, kRelRmseBound) << tag << ": fp32 o";
  worst.o_t = std::max(worst.o_t, et);
  worst.o_f32 = std::max(worst.o_f32, ef);
}

// The reference of a mean-corrected operator: q, k mapped here as the operator maps them.
template <class Map, class KeyMap = Map>
std::vector<double> mean_corrected_ref(const LinearInputs& in, const Map& map,
                                       reference::MeanCorrectionKind kind, double eps,
                                       const KeyMap& key_map = {}) {
  const index_t F = map.out_dim(K);
  std::vector<float> qm(count(B, T, H, F)), km(qm.size());
  apply_rows(map, in.q, bthd(qm.data(), B, T, H, F));
  apply_rows(key_map, in.k, bthd(km.data(), B, T, H, F));
  LinearInputs mapped = in;
  mapped.q = bthd(qm.data(), B, T, H, F);
  mapped.k = bthd(km.data(), B, T, H, F);
  std::vector<double> r = zeros();
  reference::mean_corrected<double>(mapped, kind, std::nullopt, eps, {}, {}, {}, ov(r));
  return r;
}

template <Element E>
void every_operator() {
  Worst worst;
  const Rounded<E> r(900);
  const LinearInputs in = r.inputs(false);
  const papers::TokenConv conv = r.conv();

  {  // LightNet
    std::vector<double> ref = zeros(), ht(count(B, HV, K, V));
    reference::lightnet<double>(in, {}, std::nullopt, ov(ref), bhkv(ht.data(), B, HV, K, V));
    expect_typed<E>(
        r,
        [](const LinearInputs& x, MutEView4 o) {
          papers::presets::make_lightnet().forward<Chunked<16>>(x, {}, {.o = o}, {});
        },
        ref, "lightnet", worst);
  }
  {  // SLAB: the linear part plus the conv of v
    std::vector<double> ref = zeros();
    reference::slab<double>(in, 1e-6, ov(ref));
    reference::token_conv<double>(in.v.as<float>(), conv, {}, {}, ov(ref));
    expect_typed<E>(
        r,
        [&](const LinearInputs& x, MutEView4 o) {
          papers::Slab().forward<Chunked<16>>(x, conv, {}, {.o = o});
        },
        ref, "slab", worst);
  }
  {  // InLine attention (identity maps: the typed views reach the kernels), with its residual
    const std::vector<double> ref =
        mean_corrected_ref(in, Identity{}, reference::MeanCorrectionKind::InLine, 0.0);
    expect_typed<E>(
        r,
        [](const LinearInputs& x, MutEView4 o) {
          papers::presets::make_inline_attn().forward<Recurrent>(x, {}, {.o = o}, {});
        },
        ref, "inline_attn", worst);
    std::vector<double> with_res = ref;
    reference::token_conv<double>(in.v.as<float>(), conv, {}, {}, ov(with_res));
    expect_typed<E>(
        r,
        [&](const LinearInputs& x, MutEView4 o) {
          papers::InLine<>().forward<Chunked<16>>(x, {}, conv, {}, {.o = o}, {});
        },
        with_res, "InLine + residual", worst);
  }
  {  // MALA (elu + 1: mapped q, k and v widened into fp32 scratch)
    const std::vector<double> ref =
        mean_corrected_ref(in, EluPlusOne{}, reference::MeanCorrectionKind::Mala, 1e-6);
    expect_typed<E>(
        r,
        [](const LinearInputs& x, MutEView4 o) {
          papers::presets::make_mala().forward<Chunked<16>>(x, {}, {.o = o}, {});
        },
        ref, "mala", worst);
  }
  {  // NaLaFormer (its own maps, F = 2K; v widened as for MALA)
    const std::vector<double> ref = mean_corrected_ref(
        in, RefNalaMap<true>{}, reference::MeanCorrectionKind::Nala, 1e-6, RefNalaMap<false>{});
    expect_typed<E>(
        r,
        [](const LinearInputs& x, MutEView4 o) {
          papers::presets::make_nala().forward<Chunked<16>>(x, {}, {.o = o}, {});
        },
        ref, "nala", worst);
  }
  {  // Flowformer
    std::vector<double> ref = zeros();
    reference::flowformer<double>(in, 1e-6, ov(ref));
    expect_typed<E>(
        r,
        [](const LinearInputs& x, MutEView4 o) {
          papers::presets::make_flowformer().forward<Chunked<16>>(x, {}, {.o = o}, {});
        },
        ref, "flowformer", worst);
  }
  {  // Titans (q, k L2-normalised)
    const papers::TitansInputs x = r.titans(in);
    std::vector<double> ref = zeros();
    reference::titans<double>(in.q.as<float>(), in.k.as<float>(), in.v.as<float>(), x.alpha, x.eta,
                              x.theta, {}, {}, {}, 1.0, true, ov(ref), {});
    expect_typed<E>(
        r,
        [&](const LinearInputs& y, MutEView4 o) {
          papers::presets::make_titans().forward(r.titans(y), {.o = o});
        },
        ref, "titans", worst);
  }
  {  // Aaren, recurrent and the blocked scan
    std::vector<double> ref = zeros();
    reference::aaren<double>(r.aaren(in).query, in.k.as<float>(), in.v.as<float>(), {}, {}, {}, {},
                             1.0, ov(ref));
    expect_typed<E>(
        r,
        [&](const LinearInputs& y, MutEView4 o) {
          papers::presets::make_aaren().forward<Recurrent>(r.aaren(y), o);
        },
        ref, "aaren recurrent", worst);
    expect_typed<E>(
        r,
        [&](const LinearInputs& y, MutEView4 o) {
          papers::presets::make_aaren().forward<Chunked<16>>(r.aaren(y), o);
        },
        ref, "aaren scan", worst);
  }
  {  // MoM: one sequence, M = 2 memories, chunked
    const papers::MomInputs x = r.mom(in);
    std::vector<double> ref(count(1, T, HV, V));
    reference::mixture_of_memories<double>(x.q.as<float>(), in.k.as<float>(), in.v.as<float>(), x.g,
                                           x.beta, x.weights, {}, bthd(ref.data(), 1, T, HV, V));
    expect_typed<E>(
        r,
        [&](const LinearInputs& y, MutEView4 o) {
          papers::presets::make_mom().forward<Chunked<16>>(r.mom(y), o);
        },
        ref, "mom", worst);
  }
  worst.print(kName<E>);
}

TEST(PapersPrecision, EveryOperatorBf16) {
  every_operator<bf16>();
}
TEST(PapersPrecision, EveryOperatorFp16) {
  every_operator<f16>();
}

// Decode: the step() of SLAB, LightNet, Titans, Aaren and MoM token by token on bf16 inputs with
// a bf16 o equals the fp32 steps on the widened values rounded once (states fp32, bit for bit).
TEST(PapersPrecision, DecodeStepsBf16) {
  const Rounded<bf16> r(950);
  const auto tok = [](auto* base, index_t t, index_t heads, index_t dim, index_t rows = B) {
    return View4<std::remove_reference_t<decltype(*base)>>(
        base + t * heads * dim, {rows, 1, heads, dim}, {T * heads * dim, heads * dim, dim, 1});
  };
  const auto step_input = [&](bool typed, index_t t) {
    if (!typed)
      return LinearInputs{.q = tok(r.q.data(), t, H, K),
                          .k = tok(r.k.data(), t, H, K),
                          .v = tok(r.v.data(), t, HV, V)};
    return LinearInputs{.q = tok(r.qt.data(), t, H, K),
                        .k = tok(r.kt.data(), t, H, K),
                        .v = tok(r.vt.data(), t, HV, V)};
  };
  const auto n = count(B, T, HV, V);
  {
    const papers::Slab op;
    std::vector<float> s32(count(B, HV, K, V), 0.f), z32(count(B, HV, K), 0.f),
        c32(count(B, HV, W - 1, V), 0.f), o32(n);
    std::vector<float> sT = s32, zT = z32, cT = c32;
    std::vector<bf16> oT(n);
    for (index_t t = 0; t < T; ++t) {
      op.step(step_input(false, t), bhkv(s32.data(), B, HV, K, V),
              View3<float>::contiguous(z32.data(), {B, HV, K}), r.conv(),
              bhkv(c32.data(), B, HV, W - 1, V), tok(o32.data(), t, HV, V));
      op.step(step_input(true, t), bhkv(sT.data(), B, HV, K, V),
              View3<float>::contiguous(zT.data(), {B, HV, K}), r.conv(),
              bhkv(cT.data(), B, HV, W - 1, V), tok(oT.data(), t, HV, V));
    }
    EXPECT_TRUE(same_bits(oT, narrow<bf16>(o32))) << "slab step o";
    EXPECT_TRUE(same_bits(sT, s32) && same_bits(zT, z32) && same_bits(cT, c32)) << "slab states";
  }
  {
    const auto op = papers::presets::make_lightnet();
    std::vector<float> s32(count(B, HV, K, V), 0.f), z32(count(B, H, K), -1.f), o32(n);
    std::vector<float> sT = s32, zT = z32;
    std::vector<bf16> oT(n);
    for (index_t t = 0; t < T; ++t) {
      op.step(step_input(false, t), bhkv(s32.data(), B, HV, K, V),
              View3<float>::contiguous(z32.data(), {B, H, K}), tok(o32.data(), t, HV, V));
      op.step(step_input(true, t), bhkv(sT.data(), B, HV, K, V),
              View3<float>::contiguous(zT.data(), {B, H, K}), tok(oT.data(), t, HV, V));
    }
    EXPECT_TRUE(same_bits(oT, narrow<bf16>(o32))) << "lightnet step o";
    EXPECT_TRUE(same_bits(sT, s32) && same_bits(zT, z32)) << "lightnet states";
  }
  {
    const auto op = papers::presets::make_titans();
    std::vector<float> m32(count(B, HV, K, V), 0.f), u32 = m32, o32(n);
    std::vector<float> mT = m32, uT = m32;
    std::vector<bf16> oT(n);
    for (index_t t = 0; t < T; ++t) {
      op.step(r.titans(step_input(false, t), t, 1), bhkv(m32.data(), B, HV, K, V),
              bhkv(u32.data(), B, HV, K, V), tok(o32.data(), t, HV, V));
      op.step(r.titans(step_input(true, t), t, 1), bhkv(mT.data(), B, HV, K, V),
              bhkv(uT.data(), B, HV, K, V), tok(oT.data(), t, HV, V));
    }
    EXPECT_TRUE(same_bits(oT, narrow<bf16>(o32))) << "titans step o";
    EXPECT_TRUE(same_bits(mT, m32) && same_bits(uT, u32)) << "titans states";
  }
  {
    const auto op = papers::presets::make_aaren();
    // m, c, a of each run, from the identity (−inf, 0, 0).
    std::vector<float> m32(count(B, HV), -INFINITY), c32(count(B, HV), 0.f),
        a32(count(B, HV, V), 0.f), o32(n);
    std::vector<float> mT = m32, cT = c32, aT = a32;
    std::vector<bf16> oT(n);
    const auto state = [](std::vector<float>& m, std::vector<float>& c, std::vector<float>& a) {
      return papers::AarenState<float>{TensorView<float, 2>::contiguous(m.data(), {B, HV}),
                                       TensorView<float, 2>::contiguous(c.data(), {B, HV}),
                                       View3<float>::contiguous(a.data(), {B, HV, V})};
    };
    for (index_t t = 0; t < T; ++t) {
      op.step(r.aaren(step_input(false, t)), state(m32, c32, a32), tok(o32.data(), t, HV, V));
      op.step(r.aaren(step_input(true, t)), state(mT, cT, aT), tok(oT.data(), t, HV, V));
    }
    EXPECT_TRUE(same_bits(oT, narrow<bf16>(o32))) << "aaren step o";
    EXPECT_TRUE(same_bits(mT, m32) && same_bits(cT, c32) && same_bits(aT, a32)) << "aaren states";
  }
  {
    const auto op = papers::presets::make_mom();
    const auto nm = count(1, T, HV, V);
    std::vector<float> s32(count(M, HV, K, V), 0.f), o32(nm);
    std::vector<float> sT = s32;
    std::vector<bf16> oT(nm);
    for (index_t t = 0; t < T; ++t) {
      op.step(r.mom(step_input(false, t), t, 1), bhkv(s32.data(), M, HV, K, V),
              tok(o32.data(), t, HV, V, 1));
      op.step(r.mom(step_input(true, t), t, 1), bhkv(sT.data(), M, HV, K, V),
              tok(oT.data(), t, HV, V, 1));
    }
    EXPECT_TRUE(same_bits(oT, narrow<bf16>(o32))) << "mom step o";
    EXPECT_TRUE(same_bits(sT, s32)) << "mom states";
  }
}

// q, k and v share one element type (as the linear family): the Error names the first of k, v
// that differs (Aaren, without q: v), and o is untouched.
TEST(PapersPrecision, MixedInputTypesAreNamedErrors) {
  const Rounded<bf16> rb(990);
  const Rounded<f16> rh(990);
  std::vector<float> o(count(B, T, HV, V), 7.f);
  const LinearOutputs<float> out{.o = bthd(o.data(), B, T, HV, V)};
  LinearInputs k32 = rb.inputs(true);
  k32.k = rb.inputs(false).k;  // q bf16, k fp32
  LinearInputs v16 = rb.inputs(true);
  v16.v = rh.inputs(true).v;  // q, k bf16, v fp16
  const auto conv = rb.conv();
  for (const auto& [in, name] : {std::pair{k32, "k"}, std::pair{v16, "v"}}) {
    expect_error_untouched([&] { papers::presets::make_lightnet().forward(in, {}, out, {}); }, name,
                           o, "lightnet");
    expect_error_untouched([&] { papers::Slab().forward(in, conv, {}, out); }, name, o, "slab");
    expect_error_untouched([&] { papers::InLine<>().forward(in, {}, conv, {}, out, {}); }, name, o,
                           "InLine");
    expect_error_untouched([&] { papers::presets::make_mala().forward(in, {}, out, {}); }, name, o,
                           "mala");
    expect_error_untouched([&] { papers::presets::make_flowformer().forward(in, {}, out, {}); },
                           name, o, "flowformer");
    expect_error_untouched(
        [&] { papers::presets::make_titans().forward(rb.titans(in), {.o = out.o}); }, name, o,
        "titans");
    expect_error_untouched([&] { papers::presets::make_aaren().forward(rb.aaren(in), out.o); }, "v",
                           o, "aaren");
    expect_error_untouched(
        [&] { papers::presets::make_mom().forward(rb.mom(in), bthd(o.data(), 1, T, HV, V)); }, name,
        o, "mom");
  }
}

}  // namespace
}  // namespace polyattn::test
