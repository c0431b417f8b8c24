// examples/custom_decay.cpp — running a decay of your own (custom_decay.hpp: GLA's gate from raw
// logits, with a floor) through every algorithm: Recurrent, Chunked<64> and token-by-token
// decode with step(), each checked against a plain double-precision recurrence written below.
//
//   usage: polyattn-example-custom-decay
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "custom_decay.hpp"

namespace pa = polyattn;
using pa::index_t;

namespace {

// The recurrence of docs/conventions.md §4 with this decay, in double: per (b, h)
//   q, k ← x / sqrt(Σx² + 1e-6);  S ← diag(a_t) S;  u = β(v − Sᵀk);  S += k uᵀ;  o = Sᵀ(scale·q)
void reference(const std::vector<float>& q, const std::vector<float>& k,
               const std::vector<float>& v, const std::vector<float>& x,
               const std::vector<float>& beta, const FlooredLogSigmoidDecay& decay, index_t B,
               index_t T, index_t H, index_t K, index_t V, std::vector<double>& o,
               std::vector<double>& state) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(K));
  o.assign(static_cast<std::size_t>(B * T * H * V), 0.0);
  state.assign(static_cast<std::size_t>(B * H * K * V), 0.0);
  std::vector<double> qn(K), kn(K), u(V);
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h) {
      double* S = state.data() + (b * H + h) * K * V;
      for (index_t t = 0; t < T; ++t) {
        const std::size_t row = static_cast<std::size_t>((b * T + t) * H + h);
        double sq = 0.0, sk = 0.0;
        for (index_t i = 0; i < K; ++i) {
          sq += double(q[row * K + i]) * q[row * K + i];
          sk += double(k[row * K + i]) * k[row * K + i];
        }
        for (index_t i = 0; i < K; ++i) {
          qn[i] = q[row * K + i] / std::sqrt(sq + 1e-6);
          kn[i] = k[row * K + i] / std::sqrt(sk + 1e-6);
          const double xi = x[row * K + i];
          const double logsig =
              xi >= 0 ? -std::log1p(std::exp(-xi)) : xi - std::log1p(std::exp(xi));
          const double a = std::exp(std::max(logsig / decay.tau, double(decay.log_floor)));
          for (index_t j = 0; j < V; ++j) S[i * V + j] *= a;
        }
        for (index_t j = 0; j < V; ++j) {
          double pred = 0.0;
          for (index_t i = 0; i < K; ++i) pred += S[i * V + j] * kn[i];
          u[j] = beta[row] * (v[row * V + j] - pred);
        }
        for (index_t i = 0; i < K; ++i)
          for (index_t j = 0; j < V; ++j) S[i * V + j] += kn[i] * u[j];
        for (index_t j = 0; j < V; ++j) {
          double acc = 0.0;
          for (index_t i = 0; i < K; ++i) acc += S[i * V + j] * scale * qn[i];
          o[row * V + j] = acc;
        }
      }
    }
}

template <class X, class Y>
double rel_rmse(const std::vector<X>& x, const std::vector<Y>& y) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = double(x[i]) - double(y[i]);
    num += d * d;
    den += double(y[i]) * double(y[i]);
  }
  return std::sqrt(num / den);
}

}  // namespace

int main() {
  const index_t B = 2, T = 300, H = 2, K = 64, V = 48;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.f, 1.f), logit(-12.f, 6.f), bd(0.1f, 0.9f);
  const auto fill = [&](std::size_t n, auto& dist) {
    std::vector<float> out(n);
    for (auto& e : out) e = dist(rng);
    return out;
  };
  const auto n = [](auto... s) { return static_cast<std::size_t>((s * ...)); };
  const std::vector<float> q = fill(n(B, T, H, K), u), k = fill(n(B, T, H, K), u),
                           v = fill(n(B, T, H, V), u), x = fill(n(B, T, H, K), logit),
                           beta = fill(n(B, T, H), bd);

  const FlooredLogSigmoidDecay decay{.tau = 16.f, .log_floor = std::log(0.9f)};
  const FlooredKda op{pa::Identity{}, decay, pa::DeltaUpdate{.qk_l2norm = true},
                      pa::NoNormalizer{}};
  const pa::LinearInputs in{.q = pa::bthd(q.data(), B, T, H, K),
                            .k = pa::bthd(k.data(), B, T, H, K),
                            .v = pa::bthd(v.data(), B, T, H, V),
                            .gk = pa::bthd(x.data(), B, T, H, K),
                            .beta = pa::bth(beta.data(), B, T, H)};

  std::vector<double> o_ref, s_ref;
  reference(q, k, v, x, beta, decay, B, T, H, K, V, o_ref, s_ref);

  bool ok = true;
  const auto report = [&](const char* what, const std::vector<float>& o,
                          const std::vector<float>& s) {
    const double eo = rel_rmse(o, o_ref), es = rel_rmse(s, s_ref);
    const bool pass = eo < 1e-5 && es < 1e-5;
    ok = ok && pass;
    std::printf("%-12s rel RMSE o %.2e  state %.2e  %s\n", what, eo, es, pass ? "ok" : "MISMATCH");
  };
  std::printf("FlooredKda (custom decay), B%lld T%lld H%lld K%lld V%lld, ISA %s\n",
              static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(H),
              static_cast<long long>(K), static_cast<long long>(V),
              pa::simd::isa_name(pa::simd::best_arch()));

  std::vector<float> o(o_ref.size()), s(s_ref.size());
  op.forward<pa::Recurrent>(
      in, {.o = pa::bthd(o.data(), B, T, H, V), .final_state = pa::bhkv(s.data(), B, H, K, V)});
  report("recurrent", o, s);
  op.forward<pa::Chunked<64>>(
      in, {.o = pa::bthd(o.data(), B, T, H, V), .final_state = pa::bhkv(s.data(), B, H, K, V)});
  report("chunked64", o, s);

  // Decode: one token at a time, the state [B,H,K,V] updated in place by step().
  std::fill(s.begin(), s.end(), 0.f);
  for (index_t t = 0; t < T; ++t) {
    const auto row = [&](const std::vector<float>& a, index_t D) {
      return pa::View4<const float>(a.data() + t * H * D, {B, 1, H, D}, {T * H * D, H * D, D, 1});
    };
    pa::LinearInputs step_in{.q = row(q, K), .k = row(k, K), .v = row(v, V), .gk = row(x, K)};
    step_in.beta = pa::View3<const float>(beta.data() + t * H, {B, 1, H}, {T * H, H, 1});
    op.step(step_in, pa::bhkv(s.data(), B, H, K, V),
            pa::View4<float>(o.data() + t * H * V, {B, 1, H, V}, {T * H * V, H * V, V, 1}));
  }
  report("step x T", o, s);

  // A bad decay parameter is an error naming it, before anything is written.
  try {
    FlooredKda bad{pa::Identity{}, {.tau = 0.f}, pa::DeltaUpdate{}, pa::NoNormalizer{}};
    bad.forward(in, {.o = pa::bthd(o.data(), B, T, H, V)});
    std::printf("tau = 0 was not rejected\n");
    ok = false;
  } catch (const pa::Error& e) {
    std::printf("tau = 0 rejected: %s\n", e.what());
  }
  return ok ? 0 : 1;
}
