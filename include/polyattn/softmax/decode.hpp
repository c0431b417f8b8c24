// polyattn/softmax/decode.hpp — softmax attention of the last T tokens of each sequence against
// a KVCache that already holds them (decode: T = 1; speculative verify and chunked prefill from
// the cache: T > 1), split over the cache length.
//
// Query t of sequence b sits at the position of its own cached key, p_t = len_b − T + t, so the
// result equals the last T rows of a causal prefill over the same tokens (docs/conventions.md §5):
// keys j ≤ p_t, window p_t − w < j, sink tokens, softcap, ALiBi, forgetting bias G_p − G_j (cache
// with gate_heads == HQ) and the per-head sink logit in the denominator.
// Work items are (sequence, kv head, split of kSplitKeys keys, chunk of query tokens): each
// computes, for the tokens of its chunk × the HQ/HKV query heads of its kv head (at most
// kDecodeRows rows, unless one token's heads are more), the split's running max m, sum l and
// unnormalised output O = Σ e^{s_j − m} v_j; a merge per (sequence, token, query head) then forms
//   M = max_s m_s,  o = Σ_s e^{m_s − M} O_s / (Σ_s e^{m_s − M} l_s [+ e^{sink − M}])
// in split order (online_softmax.hpp: the k-way merge, the sink logit being one more partial
// (sink, 1) with a zero output), and optionally the row's log-sum-exp
//   lse = M + log(Σ_s e^{m_s − M} l_s [+ e^{sink − M}])
// The cache's element type (fp32, bf16, fp16, int8; kv_cache.hpp) is a template parameter of the
// split kernel: rows are widened in registers as they stream, an int8 row's key scale multiplies
// its score and its value scale its weight. q and o may be fp32, bf16 or fp16.
// Splits do not depend on the thread count, so results are bitwise identical for every
// executor. Splits the mask excludes are skipped without touching their memory.
// Memory: o and lse must not share memory with each other or with q, the ALiBi slopes or the sink
// logits. Thread safety: any number of threads may decode from one KVCache at once (each with its
// own q and outputs), but not while another thread appends to it, clears it or drops from it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/element_view.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/overlap.hpp"
#include "polyattn/core/simd/arch.hpp"
#include "polyattn/core/simd/convert.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/simd/gemm.hpp"
#include "polyattn/core/simd/ops.hpp"
#include "polyattn/core/simd/scratch.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"
#include "polyattn/softmax/kv_cache.hpp"
#include "polyattn/softmax/mask.hpp"
#include "polyattn/softmax/modifiers.hpp"
#include "polyattn/softmax/online_softmax.hpp"

namespace polyattn::softmax {

inline constexpr index_t kSplitKeys = 1024;  // keys per decode work item
inline constexpr index_t kDecodeRows = 64;   // query rows (tokens × heads) per decode work item

struct DecodeInputs {
  ElementView<4> q;                 // [B, T, HQ, D], fp32, bf16 or fp16: the last T tokens
  View1<const float> alibi_slopes;  // optional [HQ]
  View1<const float> sink;          // optional per-head sink logit [HQ]
};

struct DecodeProblem {
  const DecodeInputs* in = nullptr;
  const KVCache* cache = nullptr;
  const SoftmaxOptions* opt = nullptr;
  index_t HQ = 0, T = 1, group = 1, splits = 0;  // splits per sequence (of the longest one)
  float scale = 1.f;
  // Per (b, h, t, split): m, l and O [Dvp].
  std::vector<float> m, l, O;
};

// One (sequence, kv head, split, query tokens [t0, t1)) over a cache whose elements are KV
// (float, bf16, f16, int8).
template <class KV>
struct DecodeSplitKernel {
  DecodeProblem* problem;  // writes its own (b, h, t, split) slots of m, l, O
  index_t b, hk, split;
  index_t t0 = 0, t1 = 1;
  template <simd::SimdArch A>
  void operator()(A) const;
};

namespace detail {

// Decode streams the cache once; the hardware prefetchers alone left a single thread at a
// third of its streaming bandwidth, so rows kPrefetchRows ahead are requested explicitly.
inline constexpr index_t kPrefetchRows = 8;

// out[g·ld + u] = q_g · k_u for GB query rows (fp32) and KB key rows of element type KV (all
// Dp long, Dp a multiple of the batch width; keys widened in registers), GB·KB accumulators.
template <simd::SimdArch A, int GB, int KB, class KV>
void dot_block(const float* q, const KV* k, index_t Dp, float* out, index_t ld) noexcept {
  using Bt = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(Bt::size);
  Bt acc[GB][KB];
  POLYATTN_UNROLL
  for (int g = 0; g < GB; ++g) {
    POLYATTN_UNROLL
    for (int u = 0; u < KB; ++u) acc[g][u] = Bt(0.f);
  }
  for (index_t e = 0; e < Dp; e += W) {
    Bt kv[KB];
    POLYATTN_UNROLL
    for (int u = 0; u < KB; ++u) kv[u] = simd::load_float<A>(k + u * Dp + e);
    POLYATTN_UNROLL
    for (int g = 0; g < GB; ++g) {
      const Bt qv = Bt::load_unaligned(q + g * Dp + e);
      POLYATTN_UNROLL
      for (int u = 0; u < KB; ++u) {
        acc[g][u] = simd::fma(qv, kv[u], acc[g][u]);
      }
    }
  }
  // W sums at a time, every dot product through the same reduction tree (rows past GB·KB are
  // zeros), so a row's score does not depend on the block it was computed in.
  constexpr int N = GB * KB,
                NP = (N + static_cast<int>(W) - 1) / static_cast<int>(W) * static_cast<int>(W);
  Bt rows[NP];
  POLYATTN_UNROLL
  for (int i = 0; i < NP; ++i) rows[i] = i < N ? acc[i / KB][i % KB] : Bt(0.f);
  float sums[NP];
  for (int c = 0; c < NP; c += static_cast<int>(W))
    simd::reduce_add_rows(rows + c).store_unaligned(sums + c);
  POLYATTN_UNROLL
  for (int g = 0; g < GB; ++g) {
    POLYATTN_UNROLL
    for (int u = 0; u < KB; ++u) out[g * ld + u] = sums[g * KB + u];
  }
}

}  // namespace detail

// Helpers of the kernel without an Arch parameter: per-ISA namespace (core/simd/arch.hpp).
inline namespace POLYATTN_ISA_NS {
namespace impl {

// Whether key j may be seen by the query at position p.
inline bool decode_visible(const SoftmaxOptions& opt, index_t p, index_t j) noexcept {
  if (j > p) return false;
  if (j < opt.sink_tokens) return true;
  return opt.window == 0 || j > p - opt.window;
}

}  // namespace impl
}  // namespace POLYATTN_ISA_NS

template <class KV>
template <simd::SimdArch A>
void DecodeSplitKernel<KV>::operator()(A) const {
  using Bt = simd::batch_t<A>;
  constexpr index_t W = static_cast<index_t>(Bt::size);
  DecodeProblem& P = *problem;
  const KVCache& C = *P.cache;
  const SoftmaxOptions& opt = *P.opt;
  const index_t len = C.unchecked_length(b), T = P.T, G = P.group;
  const index_t R = (t1 - t0) * G;  // rows: token-major, then the kv head's query heads
  const index_t p_lo = len - T + t0, p_hi = len - T + t1 - 1;  // the first and last query's p
  const index_t Dp = C.key_stride(), Dvp = C.value_stride(), D = C.head_dim();
  const float ninf = -std::numeric_limits<float>::infinity();
  const index_t j0 = split * kSplitKeys, j1 = std::min(len, j0 + kSplitKeys);
  // Row r: token t = t0 + r / G at position p_t, query head h = hk·G + r % G, its partial slot.
  const auto token_of = [&](index_t r) { return t0 + r / G; };
  const auto slot_of = [&](index_t r) {
    return static_cast<std::size_t>(((b * P.HQ + hk * G + r % G) * T + token_of(r)) * P.splits +
                                    split);
  };
  float* m_out = P.m.data();
  float* l_out = P.l.data();
  const simd::Scratch<float*> orow(static_cast<std::size_t>(R));  // row r's O [Dvp]
  for (index_t r = 0; r < R; ++r) {
    const std::size_t slot = slot_of(r);
    m_out[slot] = ninf;
    l_out[slot] = 0.f;
    orow.data()[r] = P.O.data() + slot * static_cast<std::size_t>(Dvp);
    std::fill(orow.data()[r], orow.data()[r] + Dvp, 0.f);
  }
  if (j0 >= j1) return;
  // Keys some row of this item sees: [lo, jhi) plus sink keys below lo (the first query has the
  // lowest window edge, the last one the highest key).
  const index_t jhi = std::min(j1, p_hi + 1);
  const index_t win_lo = opt.window > 0 ? std::max<index_t>(0, p_lo - opt.window + 1) : 0;
  const index_t lo = std::max(j0, win_lo);
  const index_t sink_hi = std::min(jhi, std::min(opt.sink_tokens, lo));
  if (lo >= jhi && sink_hi <= j0) return;  // nothing visible here

  const index_t n = j1 - j0, npad = (n + W - 1) / W * W;
  const simd::Scratch<float> buf(static_cast<std::size_t>(R * Dp + R * npad + npad));
  float* q = buf.data();
  float* s = q + R * Dp;
  float* gk = s + R * npad;
  for (index_t r = 0; r < R; ++r) {
    const index_t t = token_of(r), h = hk * G + r % G;
    for (index_t e = 0; e < Dp; ++e) q[r * Dp + e] = e < D ? P.in->q(b, t, h, e) * P.scale : 0.f;
  }
  constexpr index_t kKeyBytes = static_cast<index_t>(sizeof(KV));
  constexpr bool quantised = std::is_same_v<KV, std::int8_t>;

  // Only the visible key ranges of the split are read: sink keys [j0, sink_hi) and the window
  // [max(j0, lo), jhi) (keys outside them may have been dropped from a paged cache).
  const index_t ranges[2][2] = {{j0, sink_hi}, {std::max(j0, lo), jhi}};
  const auto for_visible = [&](auto&& f) {
    for (const auto& rg : ranges)
      for (index_t j = rg[0]; j < rg[1];) {
        const KVCache::Run r = C.unchecked_run(b, hk, j);
        const index_t cnt = std::min(r.count, rg[1] - j);
        f(r, j, cnt);
        j += cnt;
      }
  };

  // Scores s[r][j − j0] for the keys in the ranges (the others are masked to −inf below), in
  // register blocks of up to 4 rows × 4 keys (2 keys on 16-register ISAs): each loaded q and k
  // vector feeds several dot products.
  constexpr index_t KQ = simd::ArchTraits<A>::vector_registers >= 32 ? 4 : 2;
  for_visible([&](const KVCache::Run& r, index_t j, index_t cnt) {
    for (index_t t = 0; t < cnt; t += KQ) {
      const index_t kq = std::min(KQ, cnt - t);
      const KV* keys = r.template keys<KV>();
      if (t + detail::kPrefetchRows + KQ <= cnt)
        simd::prefetch<A>(keys + (t + detail::kPrefetchRows) * Dp, KQ * Dp * kKeyBytes);
      float* out = s + (j + t - j0);
      for (index_t g = 0; g < R;) {
        const index_t gb = R - g >= 4 ? 4 : (R - g >= 2 ? 2 : 1);
        const float* qg = q + g * Dp;
        const KV* kr = keys + t * Dp;
        if (kq == KQ) {
          if (gb == 4)
            detail::dot_block<A, 4, KQ>(qg, kr, Dp, out + g * npad, npad);
          else if (gb == 2)
            detail::dot_block<A, 2, KQ>(qg, kr, Dp, out + g * npad, npad);
          else
            detail::dot_block<A, 1, KQ>(qg, kr, Dp, out + g * npad, npad);
        } else {
          for (index_t u = 0; u < kq; ++u)
            for (index_t gg = 0; gg < gb; ++gg)
              detail::dot_block<A, 1, 1>(qg + gg * Dp, kr + u * Dp, Dp, out + (g + gg) * npad + u,
                                         npad);
        }
        g += gb;
      }
      if constexpr (quantised)  // s = scale_j · (q · k_int8)
        for (index_t g = 0; g < R; ++g)
          for (index_t u = 0; u < kq; ++u) out[g * npad + u] *= r.k_scale[t + u];
    }
  });

  ModifierSet mods;
  mods.softcap = static_cast<float>(opt.softcap);
  mods.forget = C.gate_heads() > 0;
  const bool alibi = !P.in->alibi_slopes.absent();
  for (index_t r = 0; r < R; ++r) {
    const index_t h = hk * G + r % G, p = len - T + token_of(r);
    float* srow = s + r * npad;
    double g_ref = 0.0;
    if (mods.forget) {
      g_ref = C.unchecked_gate_cumsum(b, h, p);
      std::fill(gk, gk + npad, 0.f);  // keys outside the visible ranges may be dropped
      for (const auto& rg : ranges)
        for (index_t jj = rg[0]; jj < rg[1]; ++jj)
          gk[jj - j0] = static_cast<float>(C.unchecked_gate_cumsum(b, h, jj) - g_ref);
    }
    mods.alibi = alibi;
    if (alibi) mods.alibi_slope = P.in->alibi_slopes(h);
    if (mods.any<A>()) mods.apply<A>(srow, RowContext{p, j0, npad, 0.f, gk});
    // −inf where decode_visible(p, j) fails, as ranges: keys after p, and with a window the
    // non-sink keys at or below p − window (a per-key test here cost ~18 % of an int8 decode).
    const auto mask = [&](index_t from, index_t to) {
      from = std::clamp<index_t>(from - j0, 0, npad);
      to = std::clamp<index_t>(to - j0, from, npad);
      std::fill(srow + from, srow + to, ninf);
    };
    mask(p + 1, j0 + n);
    mask(j0 + n, j0 + npad);  // the padding past the split's n keys
    if (opt.window > 0) mask(std::max(j0, opt.sink_tokens), p - opt.window + 1);

    Bt mx(ninf);
    for (index_t c = 0; c < npad; c += W) mx = simd::max_nan(mx, Bt::load_unaligned(srow + c));
    const float mval = simd::reduce_max(mx);
    const std::size_t slot = slot_of(r);
    m_out[slot] = mval;
    if (mval == ninf) {
      std::fill(srow, srow + npad, 0.f);
      continue;
    }
    const Bt mb(mval);
    Bt sum(0.f);
    for (index_t c = 0; c < npad; c += W) {
      const Bt e = simd::exp(Bt::load_unaligned(srow + c) - mb);
      e.store_unaligned(srow + c);
      sum += e;
    }
    l_out[slot] = simd::reduce_add(sum);
  }

  // O_r += Σ_j p_rj v_j over the keys row r sees, in key order. A panel of up to 4 rows × NV
  // vectors of O stays in registers while every key of the split streams past (each loaded V
  // vector feeds the panel's rows; an int8 row's value scale folds into the weight). Keeping O
  // in memory instead cost a load and a store of O per row, vector and 4 keys, and the store port
  // bound the loop (perf, int8 decode: the O store alone 17 % of the kernel). Every row sees
  // key j when j <= p_lo and j is a sink key or inside the last query's window; otherwise rows
  // add only the keys they see (a weight of 0 times a non-finite value would be NaN).
  const index_t all_from = opt.window > 0 ? p_hi - opt.window + 1 : 0;
  const auto seen_by_all = [&](index_t j) {
    return j <= p_lo && (j < opt.sink_tokens || j >= all_from);
  };
  constexpr int NV = simd::ArchTraits<A>::vector_registers >= 32 ? 4 : 2;
  const auto panel = [&]<int NR, int PV>(index_t g0, index_t e0) {
    Bt acc[NR][PV];
    POLYATTN_UNROLL
    for (int r = 0; r < NR; ++r) {
      POLYATTN_UNROLL
      for (int u = 0; u < PV; ++u) acc[r][u] = Bt::load_unaligned(orow.data()[g0 + r] + e0 + u * W);
    }
    const bool prefetch = g0 == 0 && e0 == 0;  // the first pass over V requests whole rows
    for_visible([&](const KVCache::Run& run, index_t j, index_t cnt) {
      const KV* values = run.template values<KV>();
      for (index_t t = 0; t < cnt; ++t) {
        if (prefetch && t + detail::kPrefetchRows < cnt)
          simd::prefetch<A>(values + (t + detail::kPrefetchRows) * Dvp, Dvp * kKeyBytes);
        Bt ve[PV];
        POLYATTN_UNROLL
        for (int u = 0; u < PV; ++u) ve[u] = simd::load_float<A>(values + t * Dvp + e0 + u * W);
        const index_t jj = j + t;
        const bool all = seen_by_all(jj);
        POLYATTN_UNROLL
        for (int r = 0; r < NR; ++r) {
          if (!all && !impl::decode_visible(opt, len - T + token_of(g0 + r), jj)) continue;
          float w = s[(g0 + r) * npad + (jj - j0)];
          if constexpr (quantised) w *= run.v_scale[t];
          const Bt wb(w);
          POLYATTN_UNROLL
          for (int u = 0; u < PV; ++u) acc[r][u] = simd::fma(wb, ve[u], acc[r][u]);
        }
      }
    });
    POLYATTN_UNROLL
    for (int r = 0; r < NR; ++r) {
      POLYATTN_UNROLL
      for (int u = 0; u < PV; ++u) acc[r][u].store_unaligned(orow.data()[g0 + r] + e0 + u * W);
    }
  };
  const auto rows = [&]<int NR>(index_t g0) {
    index_t e0 = 0;
    for (; e0 + NV * W <= Dvp; e0 += NV * W) panel.template operator()<NR, NV>(g0, e0);
    for (; e0 < Dvp; e0 += W) panel.template operator()<NR, 1>(g0, e0);
  };
  for (index_t g0 = 0; g0 < R;) {
    if (R - g0 >= 4) {
      rows.template operator()<4>(g0);
      g0 += 4;
    } else if (R - g0 >= 2) {
      rows.template operator()<2>(g0);
      g0 += 2;
    } else {
      rows.template operator()<1>(g0);
      g0 += 1;
    }
  }
}

/// Decode: o [B, T, HQ, Dv] for the last T tokens of each sequence (q [B, T, HQ, D]; T = 1 is
/// plain decode, T > 1 speculative verify or chunked prefill) against `cache`, which already
/// holds their keys and values, under opt's window, sink_tokens, softcap and scale (causal is
/// implied; block masks are not supported in decode). The cache's kv heads must divide HQ; a
/// forgetting-gate cache needs gate_heads == HQ. Every sequence must hold at least T tokens, and
/// the keys its queries see. Query t sits at key position len_b − T + t: the result equals the
/// last T rows of a causal prefill over the same tokens.
/// The overload with `lse` also writes lse [B, T, HQ] = log(Σ_{j visible} e^{s_j} [+ e^{sink}])
/// — flash_attention's lse of those rows (−inf for a query that sees no key, NaN where the
/// output is NaN).
/// @throws polyattn::Error naming the bad argument, before anything is written
template <Executor E = Serial>
void flash_decode(const DecodeInputs& in, const KVCache& cache, const SoftmaxOptions& opt,
                  MutEView4 o, View3<float> lse, const E& exec = E{}) {
  check::required("q", in.q);
  const index_t B = cache.batch(), HKV = cache.kv_heads(), D = cache.head_dim();
  const index_t Dv = cache.value_dim(), T = in.q.size(1), HQ = in.q.size(2);
  check::shape_is("q", in.q, {B, T, HQ, D}, "[B, T, HQ, head_dim] of the cache");
  if (T < 1) throw Error("q", "must hold at least one token per sequence (T >= 1), got T = 0");
  if (HQ <= 0 || HQ % HKV != 0)
    throw Error("q", "query heads " + std::to_string(HQ) +
                         " must be a positive multiple of the cache's kv heads " +
                         std::to_string(HKV));
  check::required("o", o);
  check::shape_is("o", o, {B, T, HQ, Dv}, "[B, T, HQ, value_dim] of the cache and q");
  check::optional_shape("lse", lse, {B, T, HQ}, "[B, T, HQ] from q");
  check::optional_shape("alibi_slopes", in.alibi_slopes, {HQ}, "[HQ]");
  check::optional_shape("sink", in.sink, {HQ}, "[HQ]");
  {
    using memory::region;
    check::writes_disjoint(
        {region("o", o), region("lse", lse)},
        {region("q", in.q), region("alibi_slopes", in.alibi_slopes), region("sink", in.sink)});
  }
  if (cache.gate_heads() > 0 && cache.gate_heads() != HQ)
    throw Error("cache", "keeps gates for " + std::to_string(cache.gate_heads()) +
                             " heads; the query has " + std::to_string(HQ));
  if (opt.block_mask != nullptr)
    throw Error("block_mask", "is not supported by decode (use flash_attention)");
  if (opt.window < 0) throw Error("window", "must be >= 0, got " + std::to_string(opt.window));
  if (opt.sink_tokens < 0)
    throw Error("sink_tokens", "must be >= 0, got " + std::to_string(opt.sink_tokens));
  if (!(opt.softcap >= 0.0) || std::isinf(opt.softcap))
    throw Error("softcap", "must be finite and >= 0 (0 = off), got " + std::to_string(opt.softcap));
  double scale = 1.0 / std::sqrt(static_cast<double>(D));
  if (opt.scale) {
    check::finite_positive("scale", *opt.scale);
    scale = *opt.scale;
  }
  index_t longest = 0;
  for (index_t b = 0; b < B; ++b) {
    const index_t len = cache.length(b);
    if (len == 0)
      throw Error("cache", "sequence " + std::to_string(b) + " is empty: append its key first");
    if (len < T)
      throw Error("cache", "sequence " + std::to_string(b) + " holds " + std::to_string(len) +
                               " tokens, fewer than the " + std::to_string(T) +
                               " queries: append their keys and values first");
    longest = std::max(longest, len);
    // Keys the queries still see must be held: sink tokens and the first query's window
    // (everything without).
    const index_t need_from = opt.sink_tokens > 0 || opt.window == 0
                                  ? index_t{0}
                                  : std::max<index_t>(0, len - T + 1 - opt.window);
    if (cache.first_kept(b) > need_from)
      throw Error("cache", "sequence " + std::to_string(b) + " dropped keys below position " +
                               std::to_string(cache.first_kept(b)) +
                               " that this query still attends to (window " +
                               std::to_string(opt.window) + ", sink_tokens " +
                               std::to_string(opt.sink_tokens) + ")");
  }

  DecodeProblem P;
  P.in = &in;
  P.cache = &cache;
  P.opt = &opt;
  P.HQ = HQ;
  P.T = T;
  P.group = HQ / HKV;
  P.splits = (longest + kSplitKeys - 1) / kSplitKeys;
  P.scale = static_cast<float>(scale);
  // Query tokens per work item: kDecodeRows rows of (token, query head of the kv head).
  const index_t chunk = std::max<index_t>(1, kDecodeRows / P.group);
  const index_t chunks = (T + chunk - 1) / chunk;
  const std::size_t slots = static_cast<std::size_t>(B * HQ * T * P.splits);
  const index_t Dvp = cache.value_stride();
  P.m.resize(slots);
  P.l.resize(slots);
  P.O.resize(slots * static_cast<std::size_t>(Dvp));
  const auto run_splits = [&]<class KV>(KV*) {
    exec.parallel_for(B * HKV * P.splits * chunks, [&](index_t i) {
      const index_t split = i % P.splits, tc = i / P.splits % chunks;
      const index_t bh = i / P.splits / chunks;
      simd::run_kernel(DecodeSplitKernel<KV>{&P, bh / HKV, bh % HKV, split, tc * chunk,
                                             std::min(T, (tc + 1) * chunk)});
    });
  };
  switch (cache.dtype()) {
    case Dtype::bf16:
      run_splits(static_cast<bf16*>(nullptr));
      break;
    case Dtype::f16:
      run_splits(static_cast<f16*>(nullptr));
      break;
    case Dtype::i8:
      run_splits(static_cast<std::int8_t*>(nullptr));
      break;
    default:
      run_splits(static_cast<float*>(nullptr));
  }

  // Merge of the splits' partials (m_s, l_s, O_s), the sink logit as one more partial (sink, 1)
  // with a zero output, in split order.
  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> acc(static_cast<std::size_t>(Dv));
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < HQ; ++h) {
        const std::size_t base = static_cast<std::size_t>(((b * HQ + h) * T + t) * P.splits);
        float M = ninf;
        for (index_t sp = 0; sp < P.splits; ++sp)
          M = online::merge_max(M, P.m[base + static_cast<std::size_t>(sp)]);
        std::fill(acc.begin(), acc.end(), 0.f);
        float row_lse = M;  // NaN, or −inf when the query sees nothing
        if (std::isnan(M)) {
          std::fill(acc.begin(), acc.end(), M);
        } else if (M != ninf) {
          float den = 0.f;
          if (!in.sink.absent()) {
            const float sk = in.sink(h);
            M = online::merge_max(M, sk);
            den = online::merge_weight(sk, M);  // · l = 1
          }
          for (index_t sp = 0; sp < P.splits; ++sp) {
            const std::size_t slot = base + static_cast<std::size_t>(sp);
            if (P.m[slot] == ninf) continue;  // an empty split (its O may hold 0 · NaN)
            const float c = online::merge_weight(P.m[slot], M);
            den += c * P.l[slot];
            const float* Os = P.O.data() + slot * static_cast<std::size_t>(Dvp);
            for (index_t e = 0; e < Dv; ++e) acc[static_cast<std::size_t>(e)] += c * Os[e];
          }
          for (auto& x : acc) x /= den;
          row_lse = M + std::log(den);
        }
        for (index_t e = 0; e < Dv; ++e) o.store(acc[static_cast<std::size_t>(e)], b, t, h, e);
        if (!lse.absent()) lse(b, t, h) = row_lse;
      }
}

/// Decode without the lse output (see above).
template <Executor E = Serial>
void flash_decode(const DecodeInputs& in, const KVCache& cache, const SoftmaxOptions& opt,
                  MutEView4 o, const E& exec = E{}) {
  flash_decode(in, cache, opt, o, View3<float>{}, exec);
}

}  // namespace polyattn::softmax

#define POLYATTN_SOFTMAX_DECODE_KERNELS(X)                    \
  X(::polyattn::softmax::DecodeSplitKernel<float>)            \
  X(::polyattn::softmax::DecodeSplitKernel<::polyattn::bf16>) \
  X(::polyattn::softmax::DecodeSplitKernel<::polyattn::f16>)  \
  X(::polyattn::softmax::DecodeSplitKernel<std::int8_t>)
POLYATTN_SOFTMAX_DECODE_KERNELS(POLYATTN_KERNEL_EXTERN)
