// tests/papers/test_papers_precision.cpp — bf16 / fp16 q, k, v and o of the papers' operators
// built on the linear family (LightNet, SLAB, InLine attention with and without its residual,
// MALA, NaLaFormer, Flowformer) and of those with argument types of their own (Titans, Aaren
// recurrent and scan, Mixture-of-Memories, RALA, Sparse State Expansion, and Mamba-1's selective
// scan with x, dt, B, C, z as its activations and y as its o; SPEC §8, docs/conventions.md §9.8),
// on every ISA (ctest reruns the binary per lower ISA).
//
// The fp32 random data is rounded to the element type T first; the fp32 arrays then hold exactly
// the values of the T arrays, and the double reference runs on them. Checked per operator, with
// GVA (HV = 2H): T inputs with an fp32 o give the bits of the fp32 operator on the rounded values
// (conversion on load, own passes read rows widened exactly); a T o holds exactly that fp32 o
// rounded once; relative RMSE against the reference < 8e-3 (bf16 o), < 2e-3 (fp16 o), < 1e-5
// (fp32 o). Also decode steps (SLAB, LightNet, Titans, Aaren, MoM, RALA, SSE, Mamba-1) and mixed
// element types (Errors naming the argument, o untouched). MoM reads the two batch rows of k, v
// as its M = 2 memories of one sequence; RALA runs with LePE and its output gate (of q's type);
// SSE takes q, k as its shared state's q1, k1. The worst errors measured are printed (stdout)
// for the record.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
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
#include "polyattn/papers/mamba1.hpp"
#include "polyattn/papers/mean_corrected.hpp"
#include "polyattn/papers/mom.hpp"
#include "polyattn/papers/nala.hpp"
#include "polyattn/papers/rala.hpp"
#include "polyattn/papers/slab.hpp"
#include "polyattn/papers/sse.hpp"
#include "polyattn/papers/titans.hpp"
#include "polyattn/reference/papers.hpp"
#include "polyattn/reference/papers2.hpp"

namespace polyattn::test {
namespace {

constexpr index_t B = 2, T = 40, H = 1, HV = 2, K = 8, V = 6, W = 3;
constexpr index_t M = B;  // MoM: the batch rows of k, v are the memories of one sequence
constexpr index_t P = 3;  // SSE's partitions
// Mamba-1: channels MD (= HV·V, so that y has o's size), MG groups of B, C, state size MN.
constexpr index_t MD = HV * V, MG = 2, MN = 8;
const papers::SseOptions kSseRoute{.writers = 2, .readers = 1};

// q, k, v rounded to E (the fp32 arrays hold the rounded values) with their E copies, and a
// token-conv kernel with bias (fp32).
template <Element E>
struct Rounded {
  std::vector<float> q, k, v, w, bias;
  std::vector<E> qt, kt, vt;
  // fp32 arguments of the operators with types of their own: Titans' α, η, θ [B,T,HV]; Aaren's
  // query [H,K]; MoM's g, β [M,T,HV] and routing weights [1,T,M] (some tokens to one memory).
  std::vector<float> alpha, eta, theta, query, g, beta, route;
  // Activations rounded to E with their E copies: RALA's output gate [B,T,HV,V]; SSE's partition
  // query and key q2, k2 [B,T,H,K]; Mamba-1's x, dt, z [B,T,MD] and B, C [B,T,MG,MN].
  std::vector<float> gate, q2, k2, mx, mdt, mz, mb, mc;
  std::vector<E> gatet, q2t, k2t, mxt, mdtt, mzt, mbt, mct;
  // fp32: RALA's global query q̄ [B,H,K] (of the rounded q); SSE's log-decays g1, g2 [B,T,HV,K]
  // and router logits e [B,T,P]; Mamba-1's A [MD,MN], D and dt_bias [MD].
  std::vector<float> qbar, g1, g2, e, ma, md, mbias;
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
    gate = random_vector(count(B, T, HV, V), seed + 13, -1.5f, 1.5f);
    q2 = random_vector(count(B, T, H, K), seed + 14);
    k2 = random_vector(count(B, T, H, K), seed + 15);
    g1 = random_vector(count(B, T, HV, K), seed + 16, -0.2f, -0.001f);
    g2 = random_vector(count(B, T, HV, K), seed + 17, -0.2f, -0.001f);
    e = random_vector(count(B, T, P), seed + 18, -2.f, 2.f);
    mx = random_vector(count(B, T, MD), seed + 19);
    mdt = random_vector(count(B, T, MD), seed + 20, -3.f, 1.f);
    mz = random_vector(count(B, T, MD), seed + 21, -2.f, 2.f);
    mb = random_vector(count(B, T, MG, MN), seed + 22);
    mc = random_vector(count(B, T, MG, MN), seed + 23);
    ma = random_vector(count(MD, MN), seed + 24, -2.f, -0.05f);
    md = random_vector(count(MD), seed + 25);
    mbias = random_vector(count(MD), seed + 26, -0.5f, 0.5f);
    for (auto* x : {&q, &k, &v, &gate, &q2, &k2, &mx, &mdt, &mz, &mb, &mc}) round_all<E>(*x);
    qt = narrow<E>(q);
    kt = narrow<E>(k);
    vt = narrow<E>(v);
    gatet = narrow<E>(gate);
    q2t = narrow<E>(q2);
    k2t = narrow<E>(k2);
    mxt = narrow<E>(mx);
    mdtt = narrow<E>(mdt);
    mzt = narrow<E>(mz);
    mbt = narrow<E>(mb);
    mct = narrow<E>(mc);
    qbar.resize(count(B, H, K));
    papers::rala_query_mean(bthd(q.data(), B, T, H, K), {},
                            View3<float>::contiguous(qbar.data(), {B, H, K}));
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
  // Tokens [t0, t0 + n) of a contiguous [B,T,…] tensor: fp32, or its E copy when `typed`.
  template <std::size_t R, class X>
  static TensorView<const X, R> slice(const std::vector<X>& x, std::array<index_t, R> shape,
                                      index_t t0, index_t n) {
    const auto full = TensorView<const X, R>::contiguous(x.data(), shape);
    shape[1] = n;
    return {x.data() + t0 * full.stride(1), shape, full.strides()};
  }
  template <std::size_t R>
  static ElementView<R> slice(const std::vector<float>& x, const std::vector<E>& xt, bool typed,
                              const std::array<index_t, R>& shape, index_t t0, index_t n) {
    if (typed) return slice<R>(xt, shape, t0, n);
    return slice<R>(x, shape, t0, n);
  }
  // RALA, SSE over x's q, k, v (the gate, q2, k2 of x's type), their fp32 arguments above.
  papers::RalaInputs rala(const LinearInputs& x, index_t t0 = 0, index_t n = T) const {
    return {.q = x.q,
            .k = x.k,
            .v = x.v,
            .q_mean = View3<const float>::contiguous(qbar.data(), {B, H, K}),
            .gate = slice<4>(gate, gatet, !x.q.is<float>(), {B, T, HV, V}, t0, n)};
  }
  papers::SseInputs sse(const LinearInputs& x, index_t t0 = 0, index_t n = T) const {
    const bool typed = !x.q.is<float>();
    return {.q1 = x.q,
            .k1 = x.k,
            .q2 = slice<4>(q2, q2t, typed, {B, T, H, K}, t0, n),
            .k2 = slice<4>(k2, k2t, typed, {B, T, H, K}, t0, n),
            .v = x.v,
            .g1 = slice<4>(g1, {B, T, HV, K}, t0, n),
            .g2 = slice<4>(g2, {B, T, HV, K}, t0, n),
            .e = slice<3>(e, {B, T, P}, t0, n)};
  }
  // Mamba-1's inputs (x, dt, B, C, z of E when `typed`, else fp32), with D, dt_bias and z.
  papers::SelectiveScanInputs mamba1(bool typed, index_t t0 = 0, index_t n = T) const {
    return {.x = slice<3>(mx, mxt, typed, {B, T, MD}, t0, n),
            .dt = slice<3>(mdt, mdtt, typed, {B, T, MD}, t0, n),
            .A = TensorView<const float, 2>::contiguous(ma.data(), {MD, MN}),
            .Bm = slice<4>(mb, mbt, typed, {B, T, MG, MN}, t0, n),
            .Cm = slice<4>(mc, mct, typed, {B, T, MG, MN}, t0, n),
            .D = View1<const float>::contiguous(md.data(), {MD}),
            .dt_bias = View1<const float>::contiguous(mbias.data(), {MD}),
            .z = slice<3>(mz, mzt, typed, {B, T, MD}, t0, n)};
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
// A contiguous o [B,T,HV,V] as Mamba-1's y [B,T,HV·V].
MutElementView<3> as_y(const MutEView4& o) {
  return o.visit([](auto t) {
    using X = typename decltype(t)::value_type;
    return MutElementView<3>(TensorView<X, 3>::contiguous(t.data(), {B, T, MD}));
  });
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
  {  // RALA with LePE and the output gate, recurrent and chunked
    std::vector<double> ref = zeros();
    reference::rala<double>(r.rala(in), conv, {}, 1.0 / std::sqrt(static_cast<double>(K)), 1e-6,
                            ov(ref));
    expect_typed<E>(
        r,
        [&](const LinearInputs& y, MutEView4 o) {
          papers::presets::make_rala().forward<Recurrent>(r.rala(y), conv, {}, {.o = o});
        },
        ref, "rala recurrent", worst);
    expect_typed<E>(
        r,
        [&](const LinearInputs& y, MutEView4 o) {
          papers::presets::make_rala().forward<Chunked<16>>(r.rala(y), conv, {}, {.o = o});
        },
        ref, "rala chunked", worst);
    // The global query of E q is that of the rounded fp32 q.
    std::vector<float> qbar(count(B, H, K), NAN);
    papers::rala_query_mean(r.inputs(true).q, {}, View3<float>::contiguous(qbar.data(), {B, H, K}));
    EXPECT_TRUE(same_bits(qbar, r.qbar)) << "rala_query_mean " << kName<E>;
  }
  {  // SSE: two writers, one reader of P = 3 partitions, recurrent and chunked
    std::vector<double> ref = zeros();
    reference::sse<double>(r.sse(in), kSseRoute, 1.0 / std::sqrt(static_cast<double>(K)), ov(ref));
    expect_typed<E>(
        r,
        [&](const LinearInputs& y, MutEView4 o) {
          papers::presets::make_sse().forward<Recurrent>(r.sse(y), o, {}, kSseRoute);
        },
        ref, "sse recurrent", worst);
    expect_typed<E>(
        r,
        [&](const LinearInputs& y, MutEView4 o) {
          papers::presets::make_sse().forward<Chunked<16>>(r.sse(y), o, {}, kSseRoute);
        },
        ref, "sse chunked", worst);
  }
  {  // Mamba-1 (softplus Δ, D, z), recurrent and the blocked scan; y [B,T,MD] as o
    std::vector<double> ref = zeros();
    reference::selective_scan<double>(r.mamba1(false), true,
                                      View3<double>::contiguous(ref.data(), {B, T, MD}), {});
    expect_typed<E>(
        r,
        [&](const LinearInputs& y, MutEView4 o) {
          papers::presets::make_mamba1().forward<Recurrent>(r.mamba1(!y.q.is<float>()), as_y(o));
        },
        ref, "mamba1 recurrent", worst);
    expect_typed<E>(
        r,
        [&](const LinearInputs& y, MutEView4 o) {
          papers::presets::make_mamba1().forward<Chunked<16>>(r.mamba1(!y.q.is<float>()), as_y(o));
        },
        ref, "mamba1 scan", worst);
  }
  worst.print(kName<E>);
}

TEST(PapersPrecision, EveryOperatorBf16) {
  every_operator<bf16>();
}
TEST(PapersPrecision, EveryOperatorFp16) {
  every_operator<f16>();
}

// Decode: the step() of SLAB, LightNet, Titans, Aaren, MoM, RALA, SSE and Mamba-1 token by token
// on bf16 inputs with a bf16 o equals the fp32 steps on the widened values rounded once (states
// fp32, bit for bit).
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
  {  // RALA with LePE and the gate: state, z, log C (from −inf: no token yet) and the conv cache
    const auto op = papers::presets::make_rala();
    const auto conv = r.conv();
    std::vector<float> s32(count(B, HV, K, V), 0.f), z32(count(B, H, K), 0.f),
        c32(count(B, H), -INFINITY), w32(count(B, HV, W - 1, V), 0.f), o32(n);
    std::vector<float> sT = s32, zT = z32, cT = c32, wT = w32;
    std::vector<bf16> oT(n);
    const auto run = [&](bool typed, index_t t, std::vector<float>& st, std::vector<float>& z,
                         std::vector<float>& c, std::vector<float>& w, MutEView4 o) {
      op.step(r.rala(step_input(typed, t), t, 1), bhkv(st.data(), B, HV, K, V),
              View3<float>::contiguous(z.data(), {B, H, K}),
              TensorView<float, 2>::contiguous(c.data(), {B, H}), conv,
              bhkv(w.data(), B, HV, W - 1, V), o);
    };
    for (index_t t = 0; t < T; ++t) {
      run(false, t, s32, z32, c32, w32, tok(o32.data(), t, HV, V));
      run(true, t, sT, zT, cT, wT, tok(oT.data(), t, HV, V));
    }
    EXPECT_TRUE(same_bits(oT, narrow<bf16>(o32))) << "rala step o";
    EXPECT_TRUE(same_bits(sT, s32) && same_bits(zT, z32) && same_bits(cT, c32) &&
                same_bits(wT, w32))
        << "rala states";
  }
  {  // SSE: the shared state and P partitions of each sequence
    const auto op = papers::presets::make_sse();
    std::vector<float> s32(count((1 + P) * B, HV, K, V), 0.f), o32(n);
    std::vector<float> sT = s32;
    std::vector<bf16> oT(n);
    for (index_t t = 0; t < T; ++t) {
      op.step(r.sse(step_input(false, t), t, 1), bhkv(s32.data(), (1 + P) * B, HV, K, V),
              tok(o32.data(), t, HV, V), kSseRoute);
      op.step(r.sse(step_input(true, t), t, 1), bhkv(sT.data(), (1 + P) * B, HV, K, V),
              tok(oT.data(), t, HV, V), kSseRoute);
    }
    EXPECT_TRUE(same_bits(oT, narrow<bf16>(o32))) << "sse step o";
    EXPECT_TRUE(same_bits(sT, s32)) << "sse states";
  }
  {  // Mamba-1: state [B,MD,MN], y one token [B,1,MD] at a time
    const auto op = papers::presets::make_mamba1();
    std::vector<float> s32(count(B, MD, MN), 0.f), y32(count(B, T, MD));
    std::vector<float> sT = s32;
    std::vector<bf16> yT(y32.size());
    const auto ytok = [](auto* base, index_t t) {
      return TensorView<std::remove_reference_t<decltype(*base)>, 3>(base + t * MD, {B, 1, MD},
                                                                     {T * MD, MD, 1});
    };
    for (index_t t = 0; t < T; ++t) {
      op.step(r.mamba1(false, t, 1), View3<float>::contiguous(s32.data(), {B, MD, MN}),
              ytok(y32.data(), t));
      op.step(r.mamba1(true, t, 1), View3<float>::contiguous(sT.data(), {B, MD, MN}),
              ytok(yT.data(), t));
    }
    EXPECT_TRUE(same_bits(yT, narrow<bf16>(y32))) << "mamba1 step y";
    EXPECT_TRUE(same_bits(sT, s32)) << "mamba1 states";
  }
}

// q, k and v share one element type (as the linear family): the Error names the first of k, v
// that differs (Aaren, without q: v; SSE: k1, v), and o is untouched. RALA's gate, SSE's q2, k2
// and Mamba-1's dt, B, C, z likewise take the first activation's type.
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
    expect_error_untouched(
        [&] { papers::presets::make_rala().forward(rb.rala(in), conv, {}, {.o = out.o}); }, name, o,
        "rala");
    expect_error_untouched([&] { papers::presets::make_sse().forward(rb.sse(in), out.o); },
                           name == std::string("k") ? "k1" : name, o, "sse");
  }
  const LinearInputs all_bf16 = rb.inputs(true);
  {  // RALA: a gate of another type than q's
    papers::RalaInputs x = rb.rala(all_bf16);
    x.gate = rh.rala(rh.inputs(true)).gate;
    expect_error_untouched([&] { papers::presets::make_rala().forward(x, conv, {}, {.o = out.o}); },
                           "gate", o, "rala gate");
  }
  {  // SSE: q2 or k2 of another type than q1's
    papers::SseInputs x = rb.sse(all_bf16);
    x.q2 = rb.sse(rb.inputs(false)).q2;
    expect_error_untouched([&] { papers::presets::make_sse().forward(x, out.o); }, "q2", o,
                           "sse q2");
    x = rb.sse(all_bf16);
    x.k2 = rh.sse(rh.inputs(true)).k2;
    expect_error_untouched([&] { papers::presets::make_sse().forward(x, out.o); }, "k2", o,
                           "sse k2");
  }
  {  // Mamba-1: dt, B, C or z of another type than x's (y over o's memory, [B,T,MD])
    const auto y = View3<float>::contiguous(o.data(), {B, T, MD});
    const papers::SelectiveScanInputs bf = rb.mamba1(true), f32 = rb.mamba1(false),
                                      h16 = rh.mamba1(true);
    papers::SelectiveScanInputs x = bf;
    x.dt = f32.dt;
    expect_error_untouched([&] { papers::presets::make_mamba1().forward(x, y); }, "dt", o,
                           "mamba1 dt");
    x = bf;
    x.Bm = h16.Bm;
    expect_error_untouched([&] { papers::presets::make_mamba1().forward(x, y); }, "B", o,
                           "mamba1 B");
    x = bf;
    x.Cm = f32.Cm;
    expect_error_untouched([&] { papers::presets::make_mamba1().forward(x, y); }, "C", o,
                           "mamba1 C");
    x = bf;
    x.z = h16.z;
    expect_error_untouched([&] { papers::presets::make_mamba1().forward<Chunked<16>>(x, y); }, "z",
                           o, "mamba1 z");
  }
}

}  // namespace
}  // namespace polyattn::test
