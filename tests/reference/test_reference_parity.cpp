// Temporary: the Eigen rewrite of the references (include/polyattn/reference/) against a frozen
// copy of the loop-based code it replaces (tests/reference/legacy/), on random cases covering
// every option: decays, updates, normaliser, qk L2 norm, GVA/GQA, varlen (with empty
// sequences), initial/final state and z, head-first strides, masks, sinks, softcap, ALiBi,
// forgetting gate, block masks, NaN inputs and extreme gates. Outputs must agree to double
// rounding: |new − old| ≤ 1e-12 · max|old| per output tensor, with NaN and ±inf in the same
// places. The largest differences seen are printed at the end.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/reference/based.hpp"
#include "polyattn/reference/hybrid.hpp"
#include "polyattn/reference/linear.hpp"
#include "polyattn/reference/softmax.hpp"
#include "reference/legacy/based.hpp"
#include "reference/legacy/hybrid.hpp"
#include "reference/legacy/linear.hpp"
#include "reference/legacy/softmax.hpp"

namespace {

using polyattn::index_t;
using polyattn::View1;
using polyattn::View3;
using polyattn::View4;
namespace ref = polyattn::reference;
namespace old = polyattn::reference_legacy;

constexpr double kBound = 1e-12;
constexpr int kCases = 300;

struct Worst {
  double normwise = 0.0;     // max |new − old| / max |old|
  double elementwise = 0.0;  // max |new − old| / |old| over |old| ≥ 1e-3 · max |old|
  long compared = 0, nonfinite = 0;
};
std::map<std::string, Worst>& worst() {
  static std::map<std::string, Worst> w;
  return w;
}

void compare(const std::vector<double>& got, const std::vector<double>& want,
             const std::string& family, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0.0;
  for (double y : want)
    if (std::isfinite(y)) scale = std::max(scale, std::abs(y));
  Worst& w = worst()[family];
  double norm = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double x = got[i], y = want[i];
    if (!std::isfinite(y) || !std::isfinite(x)) {
      ++w.nonfinite;
      if (std::isnan(y)) {
        ASSERT_TRUE(std::isnan(x)) << what << " at " << i << ": old NaN, new " << x;
      } else {
        ASSERT_EQ(x, y) << what << " at " << i;
      }
      continue;
    }
    ++w.compared;
    const double d = std::abs(x - y);
    norm = std::max(norm, scale > 0.0 ? d / scale : d);
    if (std::abs(y) >= 1e-3 * scale && y != 0.0)
      w.elementwise = std::max(w.elementwise, d / std::abs(y));
  }
  w.normwise = std::max(w.normwise, norm);
  EXPECT_LE(norm, kBound) << what;
}

// ---- random data ----------------------------------------------------------------------------

struct Rng {
  std::mt19937_64 g;
  explicit Rng(std::uint64_t seed) : g(seed) {}
  index_t i(index_t lo, index_t hi) { return std::uniform_int_distribution<index_t>(lo, hi)(g); }
  double u(double lo = 0.0, double hi = 1.0) {
    return std::uniform_real_distribution<double>(lo, hi)(g);
  }
  bool coin(double p = 0.5) { return u() < p; }
  std::vector<float> vec(std::size_t n, double lo = -1.0, double hi = 1.0) {
    std::vector<float> x(n);
    for (auto& e : x) e = static_cast<float>(u(lo, hi));
    return x;
  }
  // cu_seqlens over T tokens with some empty sequences.
  std::vector<std::int64_t> cu(index_t T) {
    std::vector<std::int64_t> c{0};
    const index_t n = i(1, 4);
    std::vector<std::int64_t> cuts;
    for (index_t k = 0; k + 1 < n; ++k) cuts.push_back(i(0, T));
    std::sort(cuts.begin(), cuts.end());
    for (auto x : cuts) c.push_back(x);
    c.push_back(T);
    return c;
  }
};

// A [B, T, H, D] activation in token-major or head-first memory (same logical values).
struct Act {
  std::vector<float> mem;
  View4<const float> view;
  // (Never a null pointer, so that empty tensors are present rather than absent.)
  Act(const std::vector<float>& x, index_t B, index_t T, index_t H, index_t D, bool head_first)
      : mem(std::max<std::size_t>(x.size(), 1)) {
    if (!head_first) {
      std::copy(x.begin(), x.end(), mem.begin());
      view = polyattn::bthd(static_cast<const float*>(mem.data()), B, T, H, D);
      return;
    }
    const auto hf = polyattn::head_first(mem.data(), B, T, H, D);
    const auto tm = polyattn::bthd(x.data(), B, T, H, D);
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t h = 0; h < H; ++h)
          for (index_t d = 0; d < D; ++d) hf(b, t, h, d) = tm(b, t, h, d);
    view = polyattn::head_first(static_cast<const float*>(mem.data()), B, T, H, D);
  }
  Act(const Act&) = delete;
};

// Puts a NaN (or an infinity) somewhere in x, sometimes.
void poison(Rng& r, std::vector<float>& x, double p) {
  if (x.empty() || !r.coin(p)) return;
  const float bad = r.coin() ? std::numeric_limits<float>::quiet_NaN()
                             : (r.coin() ? 1.f : -1.f) * std::numeric_limits<float>::infinity();
  x[static_cast<std::size_t>(r.i(0, static_cast<index_t>(x.size()) - 1))] = bad;
}

// ---- linear ---------------------------------------------------------------------------------

TEST(ReferenceParity, Linear) {
  using polyattn::Decay;
  using polyattn::Normalizer;
  using polyattn::Update;
  for (int c = 0; c < kCases; ++c) {
    Rng r(1000 + c);
    const bool varlen = r.coin(0.3);
    const bool big = c % 25 == 0;  // now and then the sizes of the kernel tests
    const index_t B = varlen ? 1 : r.i(1, 2), T = big ? r.i(100, 400) : r.i(1, 40), H = r.i(1, 2),
                  HV = H * r.i(1, 2), K = big ? r.i(60, 128) : r.i(1, 9),
                  V = big ? r.i(60, 128) : r.i(1, 7);
    polyattn::LinearOptions opt;
    opt.decay = static_cast<Decay>(r.i(0, 3));
    opt.update = r.coin() ? Update::Delta : Update::Additive;
    opt.normalizer = r.coin(0.3) ? Normalizer::Sum : Normalizer::None;
    opt.qk_l2norm = r.coin();
    if (r.coin()) opt.scale = r.u(0.1, 2.0);
    if (r.coin(0.3)) opt.eps = r.u(0.0, 1e-2);
    const bool sum = opt.normalizer == Normalizer::Sum;
    const auto cu = varlen ? r.cu(T) : std::vector<std::int64_t>{};
    const index_t N = varlen ? static_cast<index_t>(cu.size()) - 1 : B;

    // Sum normaliser: positive features (as after a feature map). Delta without the L2 norm:
    // ‖k‖ ≤ 1 keeps the recurrence contractive.
    const double lo = sum ? 0.0 : -1.0;
    const double kmax = (opt.update == Update::Delta && !opt.qk_l2norm) ? 1.0 / std::sqrt(K) : 1.0;
    auto q = r.vec(static_cast<std::size_t>(B * T * H * K), lo, 1.0);
    auto k = r.vec(static_cast<std::size_t>(B * T * H * K), lo * kmax, kmax);
    auto v = r.vec(static_cast<std::size_t>(B * T * HV * V));
    const double strength = std::vector<double>{0.01, 1.0, 10.0, 100.0}[r.i(0, 3)];
    auto g = r.vec(static_cast<std::size_t>(B * T * HV), -0.5 * strength, 0.0);
    auto gk = r.vec(static_cast<std::size_t>(B * T * HV * K), -0.5 * strength, 0.0);
    auto gg = r.vec(static_cast<std::size_t>(HV), -0.5 * strength, 0.0);
    auto beta = r.vec(static_cast<std::size_t>(B * T * HV), 0.0, 1.0);
    auto h0 = r.vec(static_cast<std::size_t>(N * HV * K * V));
    auto z0 = r.vec(static_cast<std::size_t>(N * HV * K), 0.0, 1.0);
    if (r.coin(0.05)) gk[0] = g[0] = gg[0] = -std::numeric_limits<float>::infinity();
    poison(r, r.coin() ? q : (r.coin() ? k : v), 0.1);

    const bool hf = r.coin(0.3);
    Act qa(q, B, T, H, K, hf), ka(k, B, T, H, K, hf), va(v, B, T, HV, V, hf);
    polyattn::LinearInputs in{.q = qa.view, .k = ka.view, .v = va.view};
    if (opt.decay == Decay::ConstantPerHead)
      in.g_gamma = View1<const float>::contiguous(gg.data(), {HV});
    if (opt.decay == Decay::ScalarPerToken)
      in.g = polyattn::bth(static_cast<const float*>(g.data()), B, T, HV);
    if (opt.decay == Decay::VectorPerToken)
      in.gk = polyattn::bthd(static_cast<const float*>(gk.data()), B, T, HV, K);
    if (opt.update == Update::Delta)
      in.beta = polyattn::bth(static_cast<const float*>(beta.data()), B, T, HV);
    if (r.coin())
      in.initial_state = polyattn::bhkv(static_cast<const float*>(h0.data()), N, HV, K, V);
    if (sum && r.coin()) in.initial_z = View3<const float>::contiguous(z0.data(), {N, HV, K});
    in.cu_seqlens = cu;

    std::vector<double> o1(static_cast<std::size_t>(B * T * HV * V), -7.0), o0 = o1;
    std::vector<double> s1(static_cast<std::size_t>(N * HV * K * V), -7.0), s0 = s1;
    std::vector<double> z1(static_cast<std::size_t>(N * HV * K), -7.0), z0o = z1;
    auto outs = [&](std::vector<double>& o, std::vector<double>& s, std::vector<double>& z) {
      polyattn::LinearOutputs<double> out{.o = polyattn::bthd(o.data(), B, T, HV, V),
                                          .final_state = polyattn::bhkv(s.data(), N, HV, K, V)};
      if (sum) out.final_z = View3<double>::contiguous(z.data(), {N, HV, K});
      return out;
    };
    ref::linear_recurrence<double>(in, opt, outs(o1, s1, z1));
    old::linear_recurrence<double>(in, opt, outs(o0, s0, z0o));
    const std::string what = "linear case " + std::to_string(c);
    compare(o1, o0, "linear", what + " o");
    compare(s1, s0, "linear", what + " final_state");
    compare(z1, z0o, "linear", what + " final_z");

    // A float output is the double one rounded: equal, or one float ulp apart where the double
    // results straddle a rounding boundary.
    std::vector<float> f1(o1.size()), f0(o1.size());
    ref::linear_recurrence<float>(in, opt, {.o = polyattn::bthd(f1.data(), B, T, HV, V)});
    old::linear_recurrence<float>(in, opt, {.o = polyattn::bthd(f0.data(), B, T, HV, V)});
    for (std::size_t i = 0; i < f1.size(); ++i) {
      if (std::isnan(f0[i])) {
        EXPECT_TRUE(std::isnan(f1[i])) << what << " float o at " << i;
      } else if (f1[i] != f0[i]) {
        EXPECT_EQ(std::nextafter(f0[i], f1[i]), f1[i]) << what << " float o at " << i;
      }
    }
  }
}

// ---- softmax --------------------------------------------------------------------------------

TEST(ReferenceParity, Softmax) {
  for (int c = 0; c < kCases; ++c) {
    Rng r(2000 + c);
    const bool varlen = r.coin(0.25);
    const bool big = c % 25 == 0;
    const index_t B = varlen ? 1 : r.i(1, 2), T = big ? r.i(100, 400) : r.i(1, 40),
                  S = varlen ? T : (big ? r.i(100, 500) : r.i(1, 50)), HKV = r.i(1, 2),
                  HQ = HKV * r.i(1, 2), D = big ? r.i(60, 128) : r.i(1, 9),
                  Dv = big ? r.i(60, 128) : r.i(1, 7);
    polyattn::SoftmaxOptions opt;
    opt.causal = r.coin();
    if (r.coin(0.4)) opt.window = r.i(1, 12);
    if (r.coin(0.3)) opt.sink_tokens = r.i(1, 3);
    if (r.coin(0.3)) opt.softcap = r.u(0.5, 5.0);
    if (r.coin()) opt.scale = r.u(0.1, 3.0);
    const auto cu = varlen ? r.cu(T) : std::vector<std::int64_t>{};
    const double qmag = r.coin(0.1) ? 30.0 : 1.0;  // huge logits now and then

    auto q = r.vec(static_cast<std::size_t>(B * T * HQ * D), -qmag, qmag);
    auto k = r.vec(static_cast<std::size_t>(B * S * HKV * D));
    auto v = r.vec(static_cast<std::size_t>(B * S * HKV * Dv));
    auto g = r.vec(static_cast<std::size_t>(B * S * HQ), r.coin(0.2) ? -20.0 : -1.0, 0.0);
    auto slopes = r.vec(static_cast<std::size_t>(HQ), 0.0, 1.0);
    auto sink = r.vec(static_cast<std::size_t>(HQ), -2.0, r.coin(0.1) ? 1e4 : 2.0);
    poison(r, r.coin() ? q : (r.coin() ? k : v), 0.15);

    const bool hf = r.coin(0.3);
    Act qa(q, B, T, HQ, D, hf), ka(k, B, S, HKV, D, hf), va(v, B, S, HKV, Dv, hf);
    polyattn::SoftmaxInputs in{.q = qa.view, .k = ka.view, .v = va.view};
    if (r.coin(0.3)) in.g = polyattn::bth(static_cast<const float*>(g.data()), B, S, HQ);
    if (r.coin(0.3)) in.alibi_slopes = View1<const float>::contiguous(slopes.data(), {HQ});
    if (r.coin(0.3)) in.sink = View1<const float>::contiguous(sink.data(), {HQ});
    in.cu_seqlens = cu;
    polyattn::BlockMask mask;
    if (r.coin(0.3)) {
      mask = polyattn::BlockMask::for_lengths(B, HQ, T, S, r.i(1, 8), r.i(1, 8));
      for (index_t b = 0; b < B; ++b)
        for (index_t h = 0; h < HQ; ++h)
          for (index_t qb = 0; qb < mask.q_blocks(); ++qb)
            for (index_t kb = 0; kb < mask.k_blocks(); ++kb)
              if (r.coin(0.6)) mask.set(b, h, qb, kb);
      opt.block_mask = &mask;
    }

    std::vector<double> o1(static_cast<std::size_t>(B * T * HQ * Dv), -7.0), o0 = o1;
    ref::softmax_attention(in, opt, polyattn::bthd(o1.data(), B, T, HQ, Dv));
    old::softmax_attention(in, opt, polyattn::bthd(o0.data(), B, T, HQ, Dv));
    compare(o1, o0, "softmax", "softmax case " + std::to_string(c));
  }
}

// ---- based ----------------------------------------------------------------------------------

TEST(ReferenceParity, Based) {
  for (int c = 0; c < kCases; ++c) {
    Rng r(3000 + c);
    const bool varlen = r.coin(0.3);
    const bool big = c % 25 == 0;
    const index_t B = varlen ? 1 : r.i(1, 2), T = big ? r.i(100, 400) : r.i(1, 40), H = r.i(1, 3),
                  K = big ? r.i(16, 64) : r.i(1, 9), V = big ? r.i(16, 64) : r.i(1, 7);
    auto q = r.vec(static_cast<std::size_t>(B * T * H * K));
    auto k = r.vec(static_cast<std::size_t>(B * T * H * K));
    auto v = r.vec(static_cast<std::size_t>(B * T * H * V));
    poison(r, r.coin() ? q : (r.coin() ? k : v), 0.1);
    const auto cu = varlen ? r.cu(T) : std::vector<std::int64_t>{};
    const bool hf = r.coin(0.3);
    Act qa(q, B, T, H, K, hf), ka(k, B, T, H, K, hf), va(v, B, T, H, V, hf);
    ref::BasedOptions opt;
    if (r.coin()) opt.scale = r.u(0.1, 2.0);
    if (r.coin(0.3)) opt.eps = r.u(0.0, 0.1);
    opt.normalize = r.coin(0.7);
    old::BasedOptions oopt{opt.scale, opt.eps, opt.normalize};

    std::vector<double> o1(static_cast<std::size_t>(B * T * H * V), -7.0), o0 = o1;
    ref::based_attention(ref::BasedInputs{qa.view, ka.view, va.view, cu}, opt,
                         polyattn::bthd(o1.data(), B, T, H, V));
    old::based_attention(old::BasedInputs{qa.view, ka.view, va.view, cu}, oopt,
                         polyattn::bthd(o0.data(), B, T, H, V));
    compare(o1, o0, "based", "based case " + std::to_string(c));
  }
}

// ---- hybrids --------------------------------------------------------------------------------

TEST(ReferenceParity, Hybrids) {
  for (int c = 0; c < kCases; ++c) {
    Rng r(4000 + c);
    const bool varlen = r.coin(0.3);
    const index_t B = varlen ? 1 : r.i(1, 2), T = r.i(1, 30), H = r.i(1, 2), D = r.i(1, 8),
                  K = r.i(1, 6), V = r.i(1, 6), F = r.i(0, 6);
    const auto cu = varlen ? r.cu(T) : std::vector<std::int64_t>{};
    const auto n = [](auto... s) { return static_cast<std::size_t>((s * ...)); };
    auto q = r.vec(n(B, T, H, D)), k = r.vec(n(B, T, H, D)), v = r.vec(n(B, T, H, V));
    auto lq = r.vec(n(B, T, H, K)), lk = r.vec(n(B, T, H, K));
    auto pq = r.vec(n(B, T, H, F), 0.0, 1.0), pk = r.vec(n(B, T, H, F), 0.0, 1.0);
    auto g = r.vec(n(B, T, H), -1.0, 0.0), gk = r.vec(n(B, T, H, K), -1.0, 0.0);
    poison(r, r.coin() ? q : (r.coin() ? k : v), 0.1);
    const bool hf = r.coin(0.3);
    Act qa(q, B, T, H, D, hf), ka(k, B, T, H, D, hf), va(v, B, T, H, V, hf);
    Act lqa(lq, B, T, H, K, hf), lka(lk, B, T, H, K, hf);
    Act pqa(pq, B, T, H, F, hf), pka(pk, B, T, H, F, hf);
    const index_t window = r.i(1, 10);
    const bool sep = r.coin();  // separate linear-branch q/k
    std::vector<double> o1(n(B, T, H, V), -7.0), o0 = o1;
    const auto O1 = polyattn::bthd(o1.data(), B, T, H, V);
    const auto O0 = polyattn::bthd(o0.data(), B, T, H, V);
    const std::string what = " case " + std::to_string(c);

    {
      polyattn::BasedHybridInputs in{.q = qa.view, .k = ka.view, .v = va.view, .cu_seqlens = cu};
      if (sep) in.lin_q = lqa.view, in.lin_k = lka.view;
      polyattn::BasedHybridOptions opt{.window = window};
      if (r.coin()) opt.based_scale = r.u(0.1, 2.0);
      if (r.coin()) opt.softmax_scale = r.u(0.1, 2.0);
      ref::based_hybrid(in, opt, O1);
      old::based_hybrid(in, opt, O0);
      compare(o1, o0, "based_hybrid", "based_hybrid" + what);
    }
    {
      polyattn::LolcatsInputs in{.q = qa.view,
                                 .k = ka.view,
                                 .v = va.view,
                                 .phi_q = pqa.view,
                                 .phi_k = pka.view,
                                 .cu_seqlens = cu};
      polyattn::LolcatsOptions opt{.window = window};
      if (r.coin()) opt.scale = r.u(0.1, 2.0);
      if (r.coin()) opt.window_factor = r.u(0.1, 3.0);
      ref::lolcats(in, opt, O1);
      old::lolcats(in, opt, O0);
      compare(o1, o0, "lolcats", "lolcats" + what);
    }
    {
      polyattn::LigerInputs in{.q = qa.view, .k = ka.view, .v = va.view, .cu_seqlens = cu};
      if (sep) in.lin_q = lqa.view, in.lin_k = lka.view;
      const index_t KK = sep ? K : D;
      std::vector<float> gkk = r.vec(n(B, T, H, KK), -1.0, 0.0);
      if (r.coin())
        in.g = polyattn::bth(static_cast<const float*>(g.data()), B, T, H);
      else
        in.gk = polyattn::bthd(static_cast<const float*>(gkk.data()), B, T, H, KK);
      polyattn::LigerOptions opt{.window = window, .alpha = r.u(0.0, 1.0), .beta = r.u(0.0, 1.0)};
      if (r.coin()) opt.gla_scale = r.u(0.1, 2.0);
      if (r.coin()) opt.softmax_scale = r.u(0.1, 2.0);
      ref::liger(in, opt, O1);
      old::liger(in, opt, O0);
      compare(o1, o0, "liger", "liger" + what);
    }
    {
      const index_t S = r.i(0, 20), na = r.i(0, 5);
      auto ak = r.vec(n(B, S, H, D)), av = r.vec(n(B, S, H, V)), ag = r.vec(n(B, na, H, D));
      poison(r, ak, 0.05);
      Act aka(ak, B, S, H, D, hf), ava(av, B, S, H, V, hf), aga(ag, B, na, H, D, hf);
      polyattn::AgentInputs in{.q = qa.view, .k = aka.view, .v = ava.view, .agents = aga.view};
      polyattn::AgentOptions opt;
      if (r.coin()) opt.scale = r.u(0.1, 3.0);
      ref::agent_attention(in, opt, O1);
      old::agent_attention(in, opt, O0);
      compare(o1, o0, "agent", "agent" + what);
    }
  }
}

// Runs last: the largest differences seen by the tests above.
TEST(ReferenceParity, Summary) {
  for (const auto& [family, w] : worst())
    std::printf(
        "parity %-20s max |new-old|/max|old| = %.3e   max elementwise rel = %.3e   "
        "(%ld finite values, %ld NaN/inf matched)\n",
        family.c_str(), w.normwise, w.elementwise, w.compared, w.nonfinite);
}

}  // namespace
