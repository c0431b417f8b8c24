// examples/hybrid_decode.cpp — the attention of a hybrid model, prefill then token-by-token
// decode: three gated-DeltaNet layers for every sliding-window softmax layer (the Qwen3-Next /
// Kimi-Linear pattern).
//
// Per layer the engine keeps a state between calls:
//   gated-delta layer   the recurrent state S [B, H, K, V] (fp32): prefill writes it as
//                       final_state, each decode step reads and updates it in place;
//   window layer        a paged KV cache; decode appends the token's k/v and attends to the last
//                       `window` keys; drop_before() recycles the pages that fell out of the
//                       window, so memory stays O(window) however long the conversation runs.
// The projections (q, k, v, gates) would come from the model (from the previous layer's output);
// here every layer gets its own random ones.
// At the end the decoded outputs are checked against one prefill over the whole sequence: the
// states carried across calls give the same numbers as recomputing everything.
//
//   usage: polyattn-example-hybrid-decode [prompt_tokens] [decode_tokens] [threads]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <vector>

#include <polyattn/polyattn.hpp>

namespace pa = polyattn;
using pa::index_t;

namespace {

constexpr index_t kB = 2, kH = 4, kD = 64;  // batch, heads, head dim (q/k/v share it here)
constexpr index_t kWindow = 128, kPage = 32;
constexpr int kLayers = 8;  // pattern: delta, delta, delta, window, ...

bool is_window_layer(int layer) {
  return layer % 4 == 3;
}

// Projections of `T` tokens for one layer: q, k, v [B, T, H, D], g and beta [B, T, H].
struct Projections {
  index_t T;
  std::vector<float> q, k, v, g, beta;
  Projections(index_t T_, std::mt19937& rng) : T(T_) {
    std::normal_distribution<float> n(0.f, 1.f);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    const auto rows = static_cast<std::size_t>(kB * T * kH);
    for (auto* x : {&q, &k, &v}) {
      x->resize(rows * kD);
      for (float& e : *x) e = n(rng);
    }
    g.resize(rows);
    beta.resize(rows);
    for (float& e : g) e = -0.05f * u(rng);  // log-space decay, close to 1
    for (float& e : beta) e = u(rng);
  }
  // The projections of token t alone, as [B, 1, H, ·] views into these buffers.
  pa::LinearInputs linear_at(index_t t) const {
    return {.q = view(q, t, kD),
            .k = view(k, t, kD),
            .v = view(v, t, kD),
            .g = pa::View3<const float>(g.data() + t * kH, {kB, 1, kH}, {T * kH, kH, 1}),
            .beta = pa::View3<const float>(beta.data() + t * kH, {kB, 1, kH}, {T * kH, kH, 1})};
  }
  pa::View4<const float> view(const std::vector<float>& x, index_t t, index_t d) const {
    return pa::View4<const float>(x.data() + t * kH * d, {kB, 1, kH, d},
                                  {T * kH * d, kH * d, d, 1});
  }
};

// One layer's state across calls.
struct LayerState {
  std::vector<float> S;                       // gated-delta state [B, H, K, V]
  std::optional<pa::softmax::KVCache> cache;  // window layer
};

}  // namespace

int main(int argc, char** argv) {
  const index_t prompt = argc > 1 ? std::atol(argv[1]) : 300;
  const index_t steps = argc > 2 ? std::atol(argv[2]) : 40;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 2;
  const index_t total = prompt + steps;
  std::mt19937 rng(2026);
  std::vector<Projections> proj;  // per layer, for all `total` tokens (the model would compute
  for (int l = 0; l < kLayers; ++l) proj.emplace_back(total, rng);  // them as it goes)

  pa::ThreadPool pool(threads);  // or pa::Serial{}, or pa::make_executor(engine_pool, n)
  const auto gdn = pa::presets::make_gated_delta_rule(/*qk_l2norm=*/true);
  pa::SoftmaxOptions swa;
  swa.causal = true;
  swa.window = kWindow;

  std::vector<LayerState> st(kLayers);
  std::vector<float> out_prefill, out_step(static_cast<std::size_t>(kB * kH * kD));
  std::vector<std::vector<float>> decoded(kLayers);  // [step][B, H, D] per layer

  // ---- prefill: the prompt through every layer, keeping each layer's state ------------------
  for (int l = 0; l < kLayers; ++l) {
    const Projections& p = proj[static_cast<std::size_t>(l)];
    const auto prompt_view = [&](const std::vector<float>& x) {  // the first `prompt` tokens
      return pa::View4<const float>(x.data(), {kB, prompt, kH, kD},
                                    {total * kH * kD, kH * kD, kD, 1});
    };
    out_prefill.assign(static_cast<std::size_t>(kB * prompt * kH * kD), 0.f);
    const auto o = pa::bthd(out_prefill.data(), kB, prompt, kH, kD);
    if (is_window_layer(l)) {
      const pa::SoftmaxInputs in{
          .q = prompt_view(p.q), .k = prompt_view(p.k), .v = prompt_view(p.v)};
      pa::softmax::flash_attention(in, swa, o, pool);
      // The cache needs only the prompt's last keys: append page by page, dropping as we go, so
      // a long prompt never holds more than window + page tokens per sequence.
      st[l].cache.emplace(kB, kH, kD, kD, pa::softmax::KVCacheOptions{.page_size = kPage});
      for (index_t t0 = 0; t0 < prompt; t0 += kPage) {
        const index_t n = std::min(kPage, prompt - t0);
        const auto chunk = [&](const std::vector<float>& x) {
          return pa::View4<const float>(x.data() + t0 * kH * kD, {kB, n, kH, kD},
                                        {total * kH * kD, kH * kD, kD, 1});
        };
        st[l].cache->append(chunk(p.k), chunk(p.v));
        for (index_t b = 0; b < kB; ++b)
          st[l].cache->drop_before(b, std::max<index_t>(0, t0 + n + 1 - kWindow));
      }
    } else {
      st[l].S.assign(static_cast<std::size_t>(kB * kH * kD * kD), 0.f);
      pa::LinearInputs in{.q = prompt_view(p.q), .k = prompt_view(p.k), .v = prompt_view(p.v)};
      in.g = pa::View3<const float>(p.g.data(), {kB, prompt, kH}, {total * kH, kH, 1});
      in.beta = pa::View3<const float>(p.beta.data(), {kB, prompt, kH}, {total * kH, kH, 1});
      gdn.forward<pa::Chunked<64>>(
          in, {.o = o, .final_state = pa::bhkv(st[l].S.data(), kB, kH, kD, kD)}, {}, pool);
    }
  }

  // ---- decode: one token at a time, every layer reusing its state ----------------------------
  for (index_t t = prompt; t < total; ++t) {
    for (int l = 0; l < kLayers; ++l) {
      const Projections& p = proj[static_cast<std::size_t>(l)];
      const auto o = pa::bthd(out_step.data(), kB, 1, kH, kD);
      if (is_window_layer(l)) {
        pa::softmax::KVCache& cache = *st[l].cache;
        cache.append(p.view(p.k, t, kD), p.view(p.v, t, kD));
        pa::softmax::flash_decode({.q = p.view(p.q, t, kD)}, cache, swa, o, pool);
        for (index_t b = 0; b < kB; ++b)
          cache.drop_before(b, std::max<index_t>(0, t + 2 - kWindow));
      } else {
        gdn.step(p.linear_at(t), pa::bhkv(st[l].S.data(), kB, kH, kD, kD), o, {}, pool);
      }
      decoded[l].insert(decoded[l].end(), out_step.begin(), out_step.end());
    }
  }

  // ---- check: one prefill over all tokens gives the decoded rows ----------------------------
  double worst = 0.0;
  for (int l = 0; l < kLayers; ++l) {
    const Projections& p = proj[static_cast<std::size_t>(l)];
    std::vector<float> full(static_cast<std::size_t>(kB * total * kH * kD));
    const auto o = pa::bthd(full.data(), kB, total, kH, kD);
    const auto all = [&](const std::vector<float>& x) {
      return pa::bthd<const float>(x.data(), kB, total, kH, kD);
    };
    if (is_window_layer(l)) {
      pa::softmax::flash_attention({.q = all(p.q), .k = all(p.k), .v = all(p.v)}, swa, o, pool);
    } else {
      pa::LinearInputs in{.q = all(p.q),
                          .k = all(p.k),
                          .v = all(p.v),
                          .g = pa::bth<const float>(p.g.data(), kB, total, kH),
                          .beta = pa::bth<const float>(p.beta.data(), kB, total, kH)};
      gdn.forward<pa::Chunked<64>>(in, {.o = o}, {}, pool);
    }
    double num = 0, den = 0;
    for (index_t s = 0; s < steps; ++s)
      for (index_t b = 0; b < kB; ++b)
        for (index_t i = 0; i < kH * kD; ++i) {
          const double ref = full[static_cast<std::size_t>((b * total + prompt + s) * kH * kD + i)];
          const double got = decoded[l][static_cast<std::size_t>((s * kB + b) * kH * kD + i)];
          num += (got - ref) * (got - ref);
          den += ref * ref;
        }
    worst = std::max(worst, std::sqrt(num / den));
  }
  std::size_t pages = 0;
  for (const LayerState& s : st)
    if (s.cache)
      pages = std::max<std::size_t>(pages, static_cast<std::size_t>(s.cache->pages_allocated()));
  std::printf(
      "hybrid decode: %d layers (3 gated-delta : 1 window-%ld softmax), B%ld H%ld D%ld, "
      "prompt %ld + %ld decoded tokens on %d threads\n"
      "  window cache: %zu pages of %ld tokens allocated for %ld sequences of %ld tokens\n"
      "  decode vs one full prefill: worst relative RMSE %.2e\n",
      kLayers, static_cast<long>(kWindow), static_cast<long>(kB), static_cast<long>(kH),
      static_cast<long>(kD), static_cast<long>(prompt), static_cast<long>(steps), threads, pages,
      static_cast<long>(kPage), static_cast<long>(kB), static_cast<long>(total), worst);
  return worst < 1e-4 ? 0 : 1;
}
