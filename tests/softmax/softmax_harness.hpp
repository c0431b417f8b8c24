// tests/softmax/softmax_harness.hpp — owning random inputs for softmax attention calls, the
// mask × modifier cases the suites sweep, and checks against the double reference.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/args/softmax.hpp"
#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/reference/softmax.hpp"
#include "polyattn/softmax/flash.hpp"

namespace polyattn::test {

struct SoftmaxShape {
  index_t B = 1, T = 1, S = 1, HQ = 1, HKV = 1, D = 32, Dv = 32;
  std::string str() const {
    return "B" + std::to_string(B) + "_T" + std::to_string(T) + "_S" + std::to_string(S) + "_HQ" +
           std::to_string(HQ) + "_HKV" + std::to_string(HKV) + "_D" + std::to_string(D) + "_Dv" +
           std::to_string(Dv);
  }
};

// Mask and modifiers of one case. block_q > 0 adds a random BlockMask of that geometry.
struct SoftmaxCase {
  bool causal = false;
  index_t window = 0, sink_tokens = 0;
  index_t block_q = 0, block_k = 0;
  double block_density = 0.5;
  double softcap = 0.0;
  bool alibi = false;
  bool gate = false;
  double gate_div = 1.0;  // log-gates in [-0.2, -0.001] divided by this (0.01 … 10)
  bool sink = false;      // per-head sink logit
  std::string str() const {
    std::string s;
    if (causal) s += "causal ";
    if (window) s += "window" + std::to_string(window) + " ";
    if (sink_tokens) s += "sinks" + std::to_string(sink_tokens) + " ";
    if (block_q) s += "block" + std::to_string(block_q) + "x" + std::to_string(block_k) + " ";
    if (softcap > 0) s += "softcap" + std::to_string(softcap) + " ";
    if (alibi) s += "alibi ";
    if (gate) s += "gate/" + std::to_string(gate_div) + " ";
    if (sink) s += "sink-logit ";
    return s.empty() ? "plain" : s;
  }
};

// A random BlockMask for T queries and S keys; every block visible with probability `density`.
inline BlockMask random_block_mask(index_t B, index_t HQ, index_t T, index_t S, index_t bq,
                                   index_t bk, double density, std::uint64_t seed) {
  BlockMask m = BlockMask::for_lengths(B, HQ, T, S, bq, bk);
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution on(density);
  for (index_t b = 0; b < m.batch(); ++b)
    for (index_t h = 0; h < m.heads(); ++h)
      for (index_t qb = 0; qb < m.q_blocks(); ++qb)
        for (index_t kb = 0; kb < m.k_blocks(); ++kb) m.set(b, h, qb, kb, on(rng));
  return m;
}

// Owning inputs of one call. Not copyable: options() points at the member block mask.
struct SoftmaxData {
  SoftmaxShape s;
  SoftmaxCase c;
  std::vector<float> q, k, v, g, slopes, sink;
  BlockMask mask;
  std::vector<std::int64_t> cu_seqlens;

  // q and k are uniform in [-qk_mult, qk_mult); v in [-1, 1).
  SoftmaxData(const SoftmaxShape& sh, const SoftmaxCase& cs, std::uint64_t seed,
              float qk_mult = 1.f)
      : s(sh), c(cs) {
    const auto n = [](auto... x) { return static_cast<std::size_t>((x * ...)); };
    q = random_vector(n(s.B, s.T, s.HQ, s.D), seed + 1, -qk_mult, qk_mult);
    k = random_vector(n(s.B, s.S, s.HKV, s.D), seed + 2, -qk_mult, qk_mult);
    v = random_vector(n(s.B, s.S, s.HKV, s.Dv), seed + 3);
    if (c.gate) {
      g = random_vector(n(s.B, s.S, s.HQ), seed + 4, -0.2f, -0.001f);
      for (auto& x : g) x = static_cast<float>(x / c.gate_div);
    }
    if (c.alibi) {
      for (index_t h = 0; h < s.HQ; ++h)
        slopes.push_back(std::exp2(-8.f * static_cast<float>(h + 1) / static_cast<float>(s.HQ)));
    }
    if (c.sink) sink = random_vector(n(s.HQ), seed + 5, -2.f, 4.f);
    if (c.block_q > 0)
      mask =
          random_block_mask(s.B, s.HQ, s.T, s.S, c.block_q, c.block_k, c.block_density, seed + 6);
  }
  SoftmaxData(const SoftmaxData&) = delete;
  SoftmaxData& operator=(const SoftmaxData&) = delete;

  SoftmaxInputs inputs() const {
    SoftmaxInputs in;
    in.q = bthd(q.data(), s.B, s.T, s.HQ, s.D);
    in.k = bthd(k.data(), s.B, s.S, s.HKV, s.D);
    in.v = bthd(v.data(), s.B, s.S, s.HKV, s.Dv);
    if (c.gate) in.g = bth(g.data(), s.B, s.S, s.HQ);
    if (c.alibi) in.alibi_slopes = View1<const float>::contiguous(slopes.data(), {s.HQ});
    if (c.sink) in.sink = View1<const float>::contiguous(sink.data(), {s.HQ});
    in.cu_seqlens = cu_seqlens;
    return in;
  }
  SoftmaxOptions options() const {
    SoftmaxOptions opt;
    opt.causal = c.causal;
    opt.window = c.window;
    opt.sink_tokens = c.sink_tokens;
    opt.softcap = c.softcap;
    opt.block_mask = c.block_q > 0 ? &mask : nullptr;
    return opt;
  }
  std::size_t out_size() const { return static_cast<std::size_t>(s.B * s.T * s.HQ * s.Dv); }
  std::string str() const { return s.str() + " " + c.str(); }
};

inline constexpr float kSentinel = -7777.f;

// flash_attention into a fresh [B, T, HQ, Dv] buffer (sentinel-filled, so unwritten elements show).
template <class E = Serial>
std::vector<float> run_flash(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                             const E& exec = E{}) {
  const index_t B = in.q.size(0), T = in.q.size(1), HQ = in.q.size(2), Dv = in.v.size(3);
  std::vector<float> o(static_cast<std::size_t>(B * T * HQ * Dv), kSentinel);
  softmax::flash_attention(in, opt, bthd(o.data(), B, T, HQ, Dv), exec);
  return o;
}

inline std::vector<double> run_reference(const SoftmaxInputs& in, const SoftmaxOptions& opt) {
  const index_t B = in.q.size(0), T = in.q.size(1), HQ = in.q.size(2), Dv = in.v.size(3);
  std::vector<double> o(static_cast<std::size_t>(B * T * HQ * Dv), NAN);
  reference::softmax_attention(in, opt, bthd(o.data(), B, T, HQ, Dv));
  return o;
}

// got vs want (the reference): the §5 bound, finite wherever the reference is, and rows the
// reference leaves all-zero (no visible key) exactly zero. Returns the number of such rows.
inline index_t expect_close(const std::vector<float>& got, const std::vector<double>& want,
                            index_t Dv, const std::string& what) {
  EXPECT_LT(rel_rmse(got, want), kRelRmseBound) << what;
  index_t zero_rows = 0;
  if (got.size() != want.size() || Dv == 0) return zero_rows;
  for (std::size_t r = 0; r * static_cast<std::size_t>(Dv) < want.size(); ++r) {
    const std::size_t b = r * static_cast<std::size_t>(Dv), e = b + static_cast<std::size_t>(Dv);
    bool ref_zero = true;
    for (std::size_t i = b; i < e; ++i) {
      if (std::isfinite(want[i]) && !std::isfinite(got[i])) {
        ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", reference " << want[i];
        return zero_rows;
      }
      ref_zero = ref_zero && want[i] == 0.0;
    }
    if (ref_zero) {
      ++zero_rows;
      for (std::size_t i = b; i < e; ++i)
        if (got[i] != 0.f) {
          ADD_FAILURE() << what << ": row " << r << " sees no key but element " << i - b << " is "
                        << got[i];
          return zero_rows;
        }
    }
  }
  return zero_rows;
}

// flash_attention (on `exec`) against the reference for one data set; returns the kernel output.
template <class E = Serial>
std::vector<float> expect_matches_reference(const SoftmaxData& data, const E& exec = E{}) {
  const SoftmaxInputs in = data.inputs();
  const SoftmaxOptions opt = data.options();
  std::vector<float> o = run_flash(in, opt, exec);
  expect_close(o, run_reference(in, opt), data.s.Dv, data.str());
  return o;
}

inline void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b,
                             const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << what;
}

// The (HQ, HKV) pairs every sweep covers: MHA, GQA with 4 q heads per kv head, MQA.
struct Heads {
  index_t HQ, HKV;
};
inline constexpr Heads kHeads[] = {{2, 2}, {8, 2}, {3, 1}};

// (D, Dv) pairs, cycled through by the sweeps; Dv != D in all but one.
struct Dims {
  index_t D, Dv;
};
inline constexpr Dims kDims[] = {{32, 48}, {72, 40}, {80, 80}, {128, 64}, {256, 24}};

}  // namespace polyattn::test
