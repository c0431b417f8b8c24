// polyattn/hybrid/lolcats.hpp — LoLCATs hybrid (Zhang et al. 2024): sliding-window softmax over
// the last w keys and linear attention over the keys outside the window, under ONE shared
// denominator. Per (sequence, head), position p, W_p = [p − w + 1, p] (clipped), O_p = [0, p − w]:
//
//   s_pj = scale·q_p·k_j,  m_p = max_{j∈W_p} s_pj,  a_pj = φq_p·φk_j
//   o_p = (γ Σ_{W_p} e^{s_pj − m_p} v_j + Σ_{O_p} a_pj v_j) / (γ Σ_{W_p} e^{s_pj − m_p} + Σ_{O_p}
//   a_pj)
//
// (reference::lolcats; as in LoLCATs' code the window weights are taken relative to the window's
// max score m_p, which fixes how the two parts mix; φq, φk come feature-mapped from the caller.)
//
// Prefill (lolcats<Algo>(in, opt, o, exec)), from two library kernels:
//   1. flash_attention (causal, window w) gives o_w = Σ_W e^{s} v / Σ_W e^{s},
//      lse = log Σ_W e^{s} and m_p, the row max of the window's scores (its row_max output: the
//      running max the kernel ended with, so no separate pass). Then Σ_W e^{s − m} = e^{lse − m},
//      so the window's share is Z_p = γ e^{lse_p − m_p} and its numerator Z_p · o_w.
//   2. The lagged linear numerator / denominator N_p = Σ_{j≤p−w} a_pj v_j, Dn_p = Σ_{j≤p−w} a_pj
//      in one linear-attention call (linear_attn: no decay, additive, no normaliser, scale 1,
//      tiling Algo) on q = φq and keys / values delayed by w tokens, with a ones column appended
//      to v: k'_t = φk_{t−w}, v'_t = [v_{t−w}, 1] (zeros for t < w), so o'_p = [N_p, Dn_p].
//   o_p = (Z_p o_w + N_p) / (Z_p + Dn_p), formed in double.
// Range: lse_p − m_p ∈ [0, log |W_p|] exactly, so Z_p never overflows or underflows, whatever the
// scores (unlike the un-shifted form (γ o_w + e^{−lse} N)/(γ + e^{−lse} Dn), whose e^{−lse}
// overflows for very negative scores and which does not carry the m_p of this definition). The
// window always holds key p, so lse is finite for finite inputs; a row whose lse is −inf (no
// visible key; not produced by finite inputs) takes Z = 0, i.e. o = N / Dn. Non-finite inputs
// propagate (NaN / ±Inf); N and Dn are fp32 sums, as in any linear attention. Rows with an empty
// outside part (p < w, or w ≥ T) get N = Dn = 0 exactly, hence o = o_w.
//
// Decode (LolcatsDecoder): one paged KV cache whose key rows hold [k | φk] side by side; each
// step attends to the window directly in double — one pass of the online softmax
// (softmax/online_softmax.hpp) over the window's keys gives m, Σ e^{s−m} and Σ e^{s−m} v, the
// reference's form — and folds the token leaving the window (p − w) into the lagged state
// [B, H, F, V+1] with LinearAttention::step. Pages behind p − w are released.
//
// Element types: q, k, v, phi_q, phi_k fp32, bf16 or fp16 (one type, args/hybrid.hpp); o any of
// the three (formed in fp32, rounded once). The prefill hands q, k, v and φq to the kernels as
// they are (they widen on load) and builds the delayed k', v' in the inputs' own type (copies, and
// 0 and 1 are exact in every type), so the linear call gets one type. The decoder keeps an fp32
// cache and state; its own loops read q, φq and the keys widened (apply_rows, exact).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "polyattn/args/hybrid.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/hybrid/common.hpp"
#include "polyattn/linear/presets.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/online_softmax.hpp"

namespace polyattn::hybrid {

namespace detail {

// k' [B,T,H,F] and v' [B,T,H,V+1] of element type T (that of φk and v): φk and [v, 1] delayed by
// `lag` tokens within each sequence (zero rows before), one task per (sequence, head).
template <Element T, class E>
void lagged_kv(const TensorView<const T, 4>& phi_k, const TensorView<const T, 4>& v,
               std::span<const std::int64_t> cu, const LolcatsDims& d, index_t lag,
               TensorView<T, 4> kl, TensorView<T, 4> vl, const E& exec) {
  const std::vector<Segment> segs = segments(d.B, d.T, cu);
  const T zero = from_float<T>(0.f), one = from_float<T>(1.f);
  exec.parallel_for(static_cast<index_t>(segs.size()) * d.H, [&](index_t task) {
    const Segment& sg = segs[static_cast<std::size_t>(task / d.H)];
    const index_t h = task % d.H;
    for (index_t p = 0; p < sg.length; ++p) {
      const index_t t = sg.begin + p, src = t - lag;
      const bool on = p >= lag;
      for (index_t c = 0; c < d.F; ++c)
        kl(sg.batch, t, h, c) = on ? phi_k(sg.batch, src, h, c) : zero;
      for (index_t e = 0; e < d.V; ++e) vl(sg.batch, t, h, e) = on ? v(sg.batch, src, h, e) : zero;
      vl(sg.batch, t, h, d.V) = on ? one : zero;
    }
  });
}

// [N, Dn] = the lagged linear part (module comment, step 2) into lin [B,T,H,V+1]; final_state
// (optional) receives the lagged state.
template <class Algo, class E>
void lagged_linear(const LolcatsInputs& in, const LolcatsDims& d, index_t lag, View4<float> lin,
                   View4<float> final_state, const E& exec) {
  in.phi_k.visit([&](auto pk) {
    using T = std::remove_const_t<std::remove_reference_t<decltype(*pk.data())>>;
    std::vector<T> kbuf(static_cast<std::size_t>(d.B * d.T * d.H * d.F)),
        vbuf(static_cast<std::size_t>(d.B * d.T * d.H * (d.V + 1)));
    const auto kl = TensorView<T, 4>::contiguous(kbuf.data(), {d.B, d.T, d.H, d.F});
    const auto vl = TensorView<T, 4>::contiguous(vbuf.data(), {d.B, d.T, d.H, d.V + 1});
    lagged_kv(pk, in.v.as<T>(), in.cu_seqlens, d, lag, kl, vl, exec);
    LinearInputs li;
    li.q = in.phi_q;
    li.k = kl;
    li.v = vl;
    li.cu_seqlens = in.cu_seqlens;
    presets::linear_attn{}.forward<Algo>(li, LinearOutputs<float>{lin, final_state, {}},
                                         LinearRunOptions{1.0}, exec);
  });
}

// The window's share Z = γ e^{lse − m} of a row (0 when the row sees no key: lse = −inf).
inline double window_share(double gamma, float lse, float m) {
  return lse == -std::numeric_limits<float>::infinity()
             ? 0.0
             : gamma * std::exp(static_cast<double>(lse) - static_cast<double>(m));
}

// Prefill of a validated call; final_state (optional) receives the lagged state [N, H, F, V+1].
template <class Algo, class E>
void lolcats_prefill(const LolcatsInputs& in, const LolcatsOptions& opt, const LolcatsDims& d,
                     const MutEView4& o, View4<float> final_state, const E& exec) {
  if (o.numel() == 0) return;
  const index_t w = opt.window;
  std::vector<float> wbuf, lse_buf, m_buf;
  const View4<float> ow = scratch4(wbuf, d.B, d.T, d.H, d.V);
  lse_buf.resize(static_cast<std::size_t>(d.B * d.T * d.H));
  m_buf.resize(static_cast<std::size_t>(d.B * d.T * d.H));
  const View3<float> lse = View3<float>::contiguous(lse_buf.data(), {d.B, d.T, d.H});
  const View3<float> m = View3<float>::contiguous(m_buf.data(), {d.B, d.T, d.H});
  {  // the causal sliding-window softmax branch, with its lse and row max
    SoftmaxInputs si;
    si.q = in.q;
    si.k = in.k;
    si.v = in.v;
    si.cu_seqlens = in.cu_seqlens;
    SoftmaxOptions so;
    so.scale = d.scale;
    so.causal = true;
    so.window = w;
    softmax::flash_attention(si, so, softmax::FlashOutputs{ow, lse, m}, exec);
  }

  std::vector<float> lbuf;
  View4<float> lin;  // [B, T, H, V+1] = [N, Dn]; absent when F == 0 (no outside part)
  if (d.F > 0) {
    lin = scratch4(lbuf, d.B, d.T, d.H, d.V + 1);
    lagged_linear<Algo>(in, d, w, lin, final_state, exec);
  }
  // o = (Z o_w + N) / (Z + Dn), in double.
  const Fp32Output out(o);
  const View4<float> os = out.view();
  for_rows(d.B, d.T, exec, [&](index_t b, index_t t) {
    for (index_t h = 0; h < d.H; ++h) {
      const double Z = window_share(d.gamma, lse(b, t, h), m(b, t, h));
      const double Dn = lin.absent() ? 0.0 : static_cast<double>(lin(b, t, h, d.V));
      const double inv = 1.0 / (Z + Dn);
      for (index_t e = 0; e < d.V; ++e) {
        const double N = lin.absent() ? 0.0 : static_cast<double>(lin(b, t, h, e));
        os(b, t, h, e) = static_cast<float>((Z * static_cast<double>(ow(b, t, h, e)) + N) * inv);
      }
    }
  });
  out.finish();
}

}  // namespace detail

// LoLCATs prefill (see the header comment). Validates everything before writing o.
template <LinearAlgorithm Algo = Chunked<64>, Executor E = Serial>
void lolcats(const LolcatsInputs& in, const LolcatsOptions& opt, MutEView4 o, const E& exec = E{}) {
  const LolcatsDims d = validate_lolcats(in, opt, o);
  detail::lolcats_prefill<Algo>(in, opt, d, o, {}, exec);
}

// Decoder of B sequences (lin_dim = F, the feature dim of phi_q / phi_k): prefill(in, o)
// over [B, T, ...] (optional), then step(in, o) with one token per sequence. step() follows the
// reference's formula directly (see the header comment); it equals the next row of a prefill up
// to float rounding. Memory: O(window + page_size) cached rows of D + F key and V value floats
// per sequence and head, plus the lagged state [B, H, F, V+1]. An Error leaves it unchanged.
// Thread safety: one call at a time per decoder; different decoders are independent.
class LolcatsDecoder {
 public:
  LolcatsDecoder(const DecoderShape& shape, const LolcatsOptions& opt)
      : s_(checked(shape, opt)),
        opt_(opt),
        F_(s_.linear_dim()),
        scale_(detail::resolve_scale("scale", opt.scale, s_.head_dim)),
        cache_(s_.batch, s_.heads, s_.head_dim + F_, s_.value_dim,
               softmax::KVCacheOptions{.capacity = 0, .page_size = s_.page_size}),
        state_(static_cast<std::size_t>(s_.batch * s_.heads * F_ * (s_.value_dim + 1)), 0.f),
        pos_(static_cast<std::size_t>(s_.batch), 0) {}

  const DecoderShape& shape() const noexcept { return s_; }
  // Tokens held by sequence b (equal for all after a batched prefill; a varlen prefill
  // gives each its own).
  index_t position(index_t b = 0) const { return pos_.at(static_cast<std::size_t>(b)); }
  const softmax::KVCache& cache() const noexcept { return cache_; }
  // Σ_{j ≤ position − 1 − w} φk_j [v_j, 1]ᵀ, [B, H, F, V+1].
  View4<const float> state() const {
    return View4<const float>::contiguous(state_.data(),
                                          {s_.batch, s_.heads, F_, s_.value_dim + 1});
  }

  void reset() {
    cache_.clear();
    std::fill(state_.begin(), state_.end(), 0.f);
    pos_.assign(static_cast<std::size_t>(s_.batch), 0);
  }

  template <LinearAlgorithm Algo = Chunked<64>, Executor E = Serial>
  void prefill(const LolcatsInputs& in, MutEView4 o, const E& exec = E{}) {
    const LolcatsDims d = validate_lolcats(in, opt_, o);
    const std::vector<index_t> lengths = detail::check_prefill(in.q, in.v, in.cu_seqlens, s_, pos_);
    check::shape_is("phi_q", in.phi_q, {in.cu_seqlens.empty() ? s_.batch : 1, d.T, s_.heads, F_},
                    "[B, T, H, F] of the decoder (B = 1 when packed)");
    if (d.T == 0) return;
    detail::lolcats_prefill<Algo>(in, opt_, d, o, state_view(), exec);
    std::vector<float> kc;
    const View4<float> kcat = detail::scratch4(kc, d.B, d.T, s_.heads, s_.head_dim + F_);
    concat_keys(in, kcat);
    detail::fill_cache(cache_, kcat, in.v, opt_.window, in.cu_seqlens);
    pos_ = lengths;
  }

  // One token per sequence: q, k [B,1,H,D], v [B,1,H,V], phi_q, phi_k [B,1,H,F]; o [B,1,H,V].
  template <Executor E = Serial>
  void step(const LolcatsInputs& in, MutEView4 o, const E& exec = E{}) {
    const LolcatsDims d = validate_lolcats(in, opt_, o);
    detail::check_step(in.q, in.v, in.cu_seqlens, s_);
    check::shape_is("phi_q", in.phi_q, {s_.batch, 1, s_.heads, F_}, "[B, 1, H, F] of the decoder");
    const index_t B = s_.batch, H = s_.heads, D = s_.head_dim, V = s_.value_dim, w = opt_.window;
    // pos_[b]: the position of sequence b's new token (sequences may differ after a varlen
    // prefill)

    const View4<float> kcat = detail::scratch4(kcat_buf_, B, 1, H, D + F_);
    concat_keys(in, kcat);
    cache_.append(kcat, in.v);

    // Lagged linear part: fold token p − w (leaving the window now) into the state, then
    // [N, Dn] = stateᵀ φq_p.
    const View4<float> kin = detail::scratch4(kin_buf_, B, 1, H, F_);
    const View4<float> vin = detail::scratch4(vin_buf_, B, 1, H, V + 1);
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < H; ++h) {
        const index_t p = pos_[static_cast<std::size_t>(b)];
        const bool on = p - w >= 0;
        const softmax::KVCache::Run r =
            on ? cache_.unchecked_run(b, h, p - w) : softmax::KVCache::Run{};
        for (index_t c = 0; c < F_; ++c) kin(b, 0, h, c) = on ? r.keys<float>()[D + c] : 0.f;
        for (index_t e = 0; e < V; ++e) vin(b, 0, h, e) = on ? r.values<float>()[e] : 0.f;
        vin(b, 0, h, V) = on ? 1.f : 0.f;
      }
    const View4<float> lin = detail::scratch4(lin_buf_, B, 1, H, V + 1);
    if (F_ > 0) {
      LinearInputs li;
      li.q = detail::widened(in.phi_q, phiq_buf_);  // the fp32 k', v' rows come from the cache
      li.k = kin;
      li.v = vin;
      presets::linear_attn{}.step(li, state_view(), lin, LinearRunOptions{1.0}, exec);
    } else {
      std::fill(lin_buf_.begin(), lin_buf_.end(), 0.f);
    }

    // Window part straight from the cache (one online-softmax pass in double), then the shared
    // denominator (rounded into o once).
    const View4<float> q = detail::widened(in.q, q_buf_);
    const Fp32Output out(o);
    const View4<float> ob = out.view();
    exec.parallel_for(B * H, [&](index_t bh) {
      const index_t b = bh / H, h = bh % H;
      const index_t p = pos_[static_cast<std::size_t>(b)];
      const index_t j0 = std::max<index_t>(0, p - w + 1);
      std::vector<double> O(static_cast<std::size_t>(V), 0.0);
      softmax::RowStats<double> st = softmax::online::empty<double>();  // m and Z = Σ e^{s − m}
      for (index_t j = j0; j <= p; ++j) {
        const softmax::KVCache::Run r = cache_.unchecked_run(b, h, j);
        double dot = 0.0;
        for (index_t c = 0; c < D; ++c)
          dot += static_cast<double>(q(b, 0, h, c)) * r.keys<float>()[c];
        const double s = scale_ * dot;
        const softmax::RowAdvance<double> adv = softmax::online::advance(st.m, s);
        const double a = std::exp(s - adv.shift);
        st = {adv.m, softmax::online::accumulate(st.l, adv.alpha, a)};
        if (adv.alpha != 1.0)
          for (auto& x : O) x *= adv.alpha;
        for (index_t e = 0; e < V; ++e) O[static_cast<std::size_t>(e)] += a * r.values<float>()[e];
      }
      const double g = d.gamma, Z = st.l, Dn = lin(b, 0, h, V);
      for (index_t e = 0; e < V; ++e)
        ob(b, 0, h, e) = static_cast<float>((g * O[static_cast<std::size_t>(e)] + lin(b, 0, h, e)) /
                                            (g * Z + Dn));
    });
    out.finish();
    detail::drop_behind(cache_, w);  // the next step reads tokens ≥ p + 1 − w
    for (index_t& p : pos_) ++p;
  }

 private:
  static DecoderShape checked(const DecoderShape& s, const LolcatsOptions& opt) {
    detail::check_shape(s);
    detail::check_window(opt.window);
    check::finite_positive("window_factor", opt.window_factor);
    return s;
  }
  // kcat [B, T, H, D + F] = [k | φk], widened exactly.
  void concat_keys(const LolcatsInputs& in, const View4<float>& kcat) const {
    const auto columns = [&](index_t c0, index_t n) {
      return View4<float>(kcat.ptr(0, 0, 0, c0), {kcat.size(0), kcat.size(1), kcat.size(2), n},
                          kcat.strides());
    };
    apply_rows(Identity{}, in.k, columns(0, s_.head_dim));
    apply_rows(Identity{}, in.phi_k, columns(s_.head_dim, F_));
  }
  View4<float> state_view() {
    return View4<float>::contiguous(state_.data(), {s_.batch, s_.heads, F_, s_.value_dim + 1});
  }

  DecoderShape s_;
  LolcatsOptions opt_;
  index_t F_;
  double scale_;
  softmax::KVCache cache_;
  std::vector<float> state_, kcat_buf_, kin_buf_, vin_buf_, lin_buf_, phiq_buf_, q_buf_;
  std::vector<index_t> pos_;  // tokens held per sequence
};

// Combiner tag for hybrid_attention<Lolcats>().
struct Lolcats {
  using Inputs = LolcatsInputs;
  using Options = LolcatsOptions;
  using Decoder = LolcatsDecoder;
  template <LinearAlgorithm Algo = Chunked<64>, Executor E = Serial>
  static void forward(const Inputs& in, const Options& opt, MutEView4 o, const E& exec = E{}) {
    lolcats<Algo>(in, opt, o, exec);
  }
};
static_assert(HybridCombiner<Lolcats>);

}  // namespace polyattn::hybrid
