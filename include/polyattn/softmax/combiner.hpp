// polyattn/softmax/combiner.hpp — Combiner-Fixed (Ren et al. 2021, "Combiner: Full Attention
// Transformer with Sparse Computation Cost", §3 Eq. (3)–(4) and §4.1 "Combiner-Fixed"; authors'
// code github.com/google-research/google-research, combiner/combiner/tf/approx_attention.py
// sqrt_fixed_full with configs.py SqrtFixedFullLM: segments of 128, local_summary identity-max):
// full attention factorised into direct attention inside the query's segment and attention to
// abstractions (summaries) of the other segments, in one softmax.
//
// Segments of L positions, Ω_r = [rL, (r+1)L); per (batch row, query head h, kv head h/(HQ/HKV)):
//   q̄_r = pool_{i ∈ Ω_r} φ(q_i),  k̄_r = pool_{j ∈ Ω_r} φ(k_j)       φ = identity or ReLU,
//                                                                     pool = max, mean or sum
//   v̄_r = Σ_{j ∈ Ω_r} q(j | Ω_r) v_j,  q(j | Ω_r) = softmax_{j ∈ Ω_r}(scale · q̄_r·k_j)
//   query i at position p, segment s = ⌊p/L⌋, one softmax over
//     direct keys   j ∈ Ω_s (j ≤ p when causal)         logit scale · q_i·k_j,   value v_j
//     summaries     r < s (causal) or every r (not)      logit scale · q_i·k̄_r,  value v̄_r
// i.e. p(j|i) and p(Ω_r|i) of Eq. (3) normalised together, and q(j|Ω_r) shared by all queries.
// (The authors scale the queries by D^-½ before pooling; max, mean and sum of φ commute with a
// positive scale, so the logits are the same.)
//
// Library form: combiner_summaries computes k̄, v̄ per query head (v̄ depends on the head's q̄)
// from a call with T = S, in double, rounded once; combiner_attention runs the tiled kernel twice
// with one mask type, CombinerMask (direct: same segment, with the options' causal mask; summary:
// r < s or all, over the summary keys), each with its lse, and merges the two exactly
// (§5.4): o = (e^{l₁} o₁ + e^{l₂} o₂) / (e^{l₁} + e^{l₂}). Tiles outside the query's segment are
// skipped, so a causal call costs about T·(L/2 + T/(2L)) pairs per head instead of T²/2.
// Decode (T < S): the last T queries of a sequence whose summaries of complete segments were
// computed as the segments completed (they need the segment's queries).
// Differences from the authors' code: only complete segments have summaries (the authors require
// L | T; here a causal call's last segment may be partial, a non-causal call needs L | S); the
// learned 'deepset' summary and dropout are left to the model; no varlen. GQA: the direct part
// reads the kv heads as they are; k̄ is stored per query head beside v̄.
//
// Kernels: FlashKernelFor<Fusion<CombinerMask>>, listed in POLYATTN_COMBINER_KERNELS.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/fusion.hpp"

namespace polyattn::softmax {

/// How a segment's queries and keys are pooled into its abstraction.
struct CombinerConfig {
  enum class Pool { Max, Mean, Sum };
  index_t segment = 128;  // L
  Pool pool = Pool::Max;
  bool relu = false;  // φ = ReLU (the authors' relu-*), else identity
};

/// Summaries of the complete segments: k̄ [B, n, HQ, D] and v̄ [B, n, HQ, Dv], contiguous.
struct CombinerSummaries {
  index_t B = 0, n = 0, HQ = 0, D = 0, Dv = 0, segment = 0;
  std::vector<float> k, v;
};

/// k̄_r, v̄_r of every complete segment of a call with T = S (see the header comment).
/// @throws polyattn::Error ("segment", "q" for T ≠ S, "cu_seqlens", the inputs')
template <Executor E = Serial>
CombinerSummaries combiner_summaries(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                                     const CombinerConfig& cfg, const E& exec = E{}) {
  const SoftmaxDims d = validate(in, opt);
  if (cfg.segment < 1) throw Error("segment", "must be >= 1, got " + std::to_string(cfg.segment));
  if (d.varlen) throw Error("cu_seqlens", "Combiner takes no packed sequences");
  if (d.T != d.S)
    throw Error("q", "summaries need every query of a segment: T = S, got T = " +
                         std::to_string(d.T) + ", S = " + std::to_string(d.S));
  const index_t L = cfg.segment, n = d.S / L;
  CombinerSummaries s{d.B, n, d.HQ, d.D, d.Dv, L, {}, {}};
  s.k.assign(static_cast<std::size_t>(d.B * n * d.HQ * d.D), 0.f);
  s.v.assign(static_cast<std::size_t>(d.B * n * d.HQ * d.Dv), 0.f);
  const auto phi = [&cfg](double x) { return cfg.relu ? std::max(x, 0.0) : x; };
  // pool_{t ∈ Ω_r} φ(x_t) over rows [L, dim] of x (double).
  const auto pool = [&](const double* x, index_t dim, std::vector<double>& out) {
    out.assign(static_cast<std::size_t>(dim),
               cfg.pool == CombinerConfig::Pool::Max ? -INFINITY : 0.0);
    for (index_t t = 0; t < L; ++t)
      for (index_t e = 0; e < dim; ++e) {
        const double y = phi(x[t * dim + e]);
        double& acc = out[static_cast<std::size_t>(e)];
        acc = cfg.pool == CombinerConfig::Pool::Max ? std::max(acc, y) : acc + y;
      }
    if (cfg.pool == CombinerConfig::Pool::Mean)
      for (double& a : out) a /= static_cast<double>(L);
  };
  // One work item per (batch row, segment, kv head): its keys and values read once.
  exec.parallel_for(d.B * n * d.HKV, [&](std::int64_t item) {
    const index_t hk = item % d.HKV, r = (item / d.HKV) % n, b = item / (d.HKV * n);
    const auto rows = [&](const ElementView<4>& x, index_t xh, index_t dim) {
      std::vector<double> buf(static_cast<std::size_t>(L * dim));
      for (index_t t = 0; t < L; ++t)
        for (index_t e = 0; e < dim; ++e)
          buf[static_cast<std::size_t>(t * dim + e)] = static_cast<double>(x(b, r * L + t, xh, e));
      return buf;
    };
    const std::vector<double> kr = rows(in.k, hk, d.D), vr = rows(in.v, hk, d.Dv);
    std::vector<double> qbar, kbar, w(static_cast<std::size_t>(L)), vbar;
    pool(kr.data(), d.D, kbar);
    for (index_t h = hk * d.group; h < (hk + 1) * d.group; ++h) {
      pool(rows(in.q, h, d.D).data(), d.D, qbar);
      double mx = -INFINITY;
      for (index_t t = 0; t < L; ++t) {
        double dot = 0.0;
        for (index_t e = 0; e < d.D; ++e)
          dot += qbar[static_cast<std::size_t>(e)] * kr[static_cast<std::size_t>(t * d.D + e)];
        w[static_cast<std::size_t>(t)] = d.scale * dot;
        mx = std::max(mx, d.scale * dot);
      }
      double z = 0.0;
      for (double& x : w) z += x = std::exp(x - mx);
      vbar.assign(static_cast<std::size_t>(d.Dv), 0.0);
      for (index_t t = 0; t < L; ++t)
        for (index_t e = 0; e < d.Dv; ++e)
          vbar[static_cast<std::size_t>(e)] +=
              w[static_cast<std::size_t>(t)] / z * vr[static_cast<std::size_t>(t * d.Dv + e)];
      float* kd = s.k.data() + ((b * n + r) * d.HQ + h) * d.D;
      float* vd = s.v.data() + ((b * n + r) * d.HQ + h) * d.Dv;
      for (index_t e = 0; e < d.D; ++e)
        kd[e] = static_cast<float>(kbar[static_cast<std::size_t>(e)]);
      for (index_t e = 0; e < d.Dv; ++e)
        vd[e] = static_cast<float>(vbar[static_cast<std::size_t>(e)]);
    }
  });
  return s;
}

/// The direct part (summary = false: keys of the query's segment) or the summary part
/// (summary = true: the summary keys r < s, or all when not causal) of a Combiner call whose
/// token keys number `keys` (S); query row r sits at p = r + S − T.
struct CombinerMask {
  index_t segment = 128;
  index_t keys = 0;
  bool causal = true;
  bool summary = false;
  struct Bound {
    index_t L, offset;
    bool causal, summary;
    template <simd::SimdArch A = simd::scalar_arch>
    bool visible(index_t r, index_t, index_t j) const noexcept {
      const index_t s = (r + offset) / L;
      if (summary) return !causal || j < s;
      return j / L == s;
    }
    template <simd::SimdArch A = simd::scalar_arch>
    TileClass classify(RowRange rows, KeyRange keys) const noexcept {
      const index_t s0 = (rows.r0 + offset) / L, s1 = (rows.r1 - 1 + offset) / L;
      if (summary) {
        if (!causal || keys.j1 <= s0) return TileClass::Full;
        return keys.j0 >= s1 ? TileClass::Skip : TileClass::Partial;
      }
      const index_t k0 = keys.j0 / L, k1 = (keys.j1 - 1) / L;
      if (k1 < s0 || k0 > s1) return TileClass::Skip;
      return k0 == k1 && s0 == s1 ? TileClass::Full : TileClass::Partial;
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext& c) const {
    return {segment, keys - c.queries, causal, summary};
  }
  void check(const SoftmaxDims& d) const {
    if (segment < 1) throw Error("segment", "must be >= 1, got " + std::to_string(segment));
    if (!summary && keys != d.S)
      throw Error("keys", "CombinerMask made for S = " + std::to_string(keys) + ", got " +
                              std::to_string(d.S));
  }
};
static_assert(FusionMask<CombinerMask>);

/// Combiner-Fixed attention (see the header comment) from summaries of the complete segments.
/// opt: causal or not, scale; no window, sink tokens, block mask or score modifiers.
/// @throws polyattn::Error ("opt", "cu_seqlens", "summaries", "segment", the inputs', "o"),
///         before anything is written
template <Executor E = Serial>
void combiner_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                        const CombinerSummaries& sum, View4<float> o, const E& exec = E{}) {
  const SoftmaxDims d = validate(in, opt, o);
  if (opt.window != 0 || opt.sink_tokens != 0 || opt.block_mask != nullptr || opt.softcap > 0 ||
      !in.alibi_slopes.absent() || !in.g.absent() || !in.sink.absent())
    throw Error("opt",
                "Combiner takes causal and scale only (no window, sink tokens, block "
                "mask or score modifiers)");
  if (d.varlen) throw Error("cu_seqlens", "Combiner takes no packed sequences");
  const index_t L = sum.segment;
  if (L < 1) throw Error("summaries", "has no segment length");
  if (!opt.causal && d.S % L != 0)
    throw Error("segment", "without the causal mask every segment must be complete: L = " +
                               std::to_string(L) + " must divide S = " + std::to_string(d.S));
  const index_t need = opt.causal ? (d.S > 0 ? (d.S - 1) / L : 0) : d.S / L;
  if (sum.B != d.B || sum.HQ != d.HQ || sum.D != d.D || sum.Dv != d.Dv || sum.n < need ||
      sum.k.size() != static_cast<std::size_t>(sum.B * sum.n * sum.HQ * sum.D) ||
      sum.v.size() != static_cast<std::size_t>(sum.B * sum.n * sum.HQ * sum.Dv))
    throw Error("summaries", "expected k [B, n, HQ, D], v [B, n, HQ, Dv] with B = " +
                                 std::to_string(d.B) + ", HQ = " + std::to_string(d.HQ) +
                                 ", n >= " + std::to_string(need) + " complete segments");
  const std::size_t rows = static_cast<std::size_t>(d.B * d.T * d.HQ);
  std::vector<float> o1(rows * static_cast<std::size_t>(d.Dv)), l1(rows),
      o2(rows * static_cast<std::size_t>(d.Dv)), l2(rows);
  flash_attention(in, opt, with_mask(CombinerMask{L, d.S, opt.causal, false}),
                  FlashOutputs{bthd(o1.data(), d.B, d.T, d.HQ, d.Dv),
                               View3<float>::contiguous(l1.data(), {d.B, d.T, d.HQ}),
                               {}},
                  exec);
  SoftmaxInputs si;
  si.q = in.q;
  si.k = bthd<const float>(sum.k.data(), sum.B, sum.n, sum.HQ, sum.D);
  si.v = bthd<const float>(sum.v.data(), sum.B, sum.n, sum.HQ, sum.Dv);
  SoftmaxOptions so;
  so.scale = opt.scale;
  flash_attention(si, so, with_mask(CombinerMask{L, d.S, opt.causal, true}),
                  FlashOutputs{bthd(o2.data(), d.B, d.T, d.HQ, d.Dv),
                               View3<float>::contiguous(l2.data(), {d.B, d.T, d.HQ}),
                               {}},
                  exec);
  exec.parallel_for(d.B * d.T, [&](std::int64_t bt) {
    const index_t b = bt / d.T, t = bt % d.T;
    for (index_t h = 0; h < d.HQ; ++h) {
      const std::size_t row = static_cast<std::size_t>(bt * d.HQ + h);
      const double a = l1[row], c = l2[row], m = std::max(a, c);
      const double w1 = a == -INFINITY ? 0.0 : std::exp(a - m);
      const double w2 = c == -INFINITY ? 0.0 : std::exp(c - m);
      const double z = w1 + w2;
      const float* x1 = o1.data() + row * static_cast<std::size_t>(d.Dv);
      const float* x2 = o2.data() + row * static_cast<std::size_t>(d.Dv);
      for (index_t e = 0; e < d.Dv; ++e)
        o(b, t, h, e) = z > 0.0 ? static_cast<float>((w1 * x1[e] + w2 * x2[e]) / z) : 0.f;
    }
  });
}

}  // namespace polyattn::softmax

// The kernel of a project's per-ISA units for Combiner (see the header comment).
#define POLYATTN_COMBINER_KERNELS(X)     \
  X(::polyattn::softmax::FlashKernelFor< \
      ::polyattn::softmax::Fusion<::polyattn::softmax::CombinerMask>>)
