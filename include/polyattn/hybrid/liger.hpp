// polyattn/hybrid/liger.hpp — Liger hybrid (Lan et al. 2025): a weighted mix of gated linear
// attention and sliding-window softmax. Per (sequence, head), position p, W_p = [p − w + 1, p]:
//
//   o_p = α · GLA_p  +  β · Σ_{j∈W_p} e^{s_pj} v_j / Σ_{j∈W_p} e^{s_pj},   s_pj =
//   softmax_scale·q_p·k_j GLA (un-normalised): S_p = Decay_p(S_{p−1}) + lin_k_p v_pᵀ,  GLA_p = S_pᵀ
//   (gla_scale · lin_q_p), Decay_p = exp(g_p) (scalar gate g [B,T,H]: presets::simple_gla) or
//   diag(exp(gk_p)) (vector gate gk [B,T,H,K]: presets::gla), S_{−1} = 0.
//
// (reference::liger; lin_q / lin_k default to q / k, scales to K^-½ and D^-½.)
//   liger<Algo>(in, opt, o, exec)   prefill: flash_attention (causal, window) into o, the GLA
//       branch (tiling Algo) into scratch, o = α·gla + β·o. Varlen (cu_seqlens) supported.
//       K == 0 gives an exactly zero GLA output (as the reference).
//   LigerDecoder                    prefill() then step(): paged window KV cache + GLA state
//       [B, H, K, V] advanced by LinearAttention::step (either gate kind on any step).
// Approximate only in fp32 rounding of each branch.
// Element types: q, k, v, lin_q, lin_k fp32, bf16 or fp16 (one type, args/hybrid.hpp), passed to
// the kernels as they are (they widen on load); g, gk fp32; o any of the three: the mix is formed
// in fp32 and rounded once. The decoder's window cache and GLA state are fp32.
#pragma once

#include <algorithm>
#include <vector>

#include "polyattn/args/hybrid.hpp"
#include "polyattn/hybrid/common.hpp"
#include "polyattn/linear/presets.hpp"
#include "polyattn/softmax/decode.hpp"

namespace polyattn::hybrid {

namespace detail {

// The GLA branch (scalar or vector gate) of a validated call into o_gla (final_state optional).
template <class Algo, class E>
void liger_gla(const LigerInputs& in, const LigerDims& d, View4<float> o_gla,
               View4<float> final_state, const E& exec) {
  LinearInputs li;
  li.q = d.lin_q;
  li.k = d.lin_k;
  li.v = in.v;
  li.cu_seqlens = in.cu_seqlens;
  const LinearOutputs<float> out{o_gla, final_state, {}};
  const LinearRunOptions run{d.gla_scale};
  if (d.vector_gate) {
    li.gk = in.gk;
    presets::gla{}.forward<Algo>(li, out, run, exec);
  } else {
    li.g = in.g;
    presets::simple_gla{}.forward<Algo>(li, out, run, exec);
  }
}

template <class Algo, class E>
void liger_prefill(const LigerInputs& in, const LigerOptions& opt, const LigerDims& d,
                   const MutEView4& o, View4<float> final_state, const E& exec) {
  if (o.numel() == 0) return;
  std::vector<float> gbuf;
  View4<float> og;
  if (d.K > 0) {  // GLA branch first, into scratch: should it fail, o is still untouched
    og = scratch4(gbuf, d.B, d.T, d.H, d.V);
    liger_gla<Algo>(in, d, og, final_state, exec);
  }
  const Fp32Output out(o);  // the mix, in fp32 (in o itself when o is fp32)
  const View4<float> os = out.view();
  swa(in.q, in.k, in.v, in.cu_seqlens, opt.window, d.softmax_scale, os, {}, exec);
  const float alpha = static_cast<float>(opt.alpha), beta = static_cast<float>(opt.beta);
  for_rows(d.B, d.T, exec, [&](index_t b, index_t t) {
    for (index_t h = 0; h < d.H; ++h)
      for (index_t e = 0; e < d.V; ++e)
        os(b, t, h, e) = (og.absent() ? 0.f : alpha * og(b, t, h, e)) + beta * os(b, t, h, e);
  });
  out.finish();
}

}  // namespace detail

// Liger prefill (see the header comment). Validates everything before writing o.
template <LinearAlgorithm Algo = Chunked<64>, Executor E = Serial>
void liger(const LigerInputs& in, const LigerOptions& opt, MutEView4 o, const E& exec = E{}) {
  const LigerDims d = validate_liger(in, opt, o);
  detail::liger_prefill<Algo>(in, opt, d, o, {}, exec);
}

// Decoder of B sequences (lin_dim = K): prefill(in, o) over [B, T, ...] (optional), then
// step(in, o) with one token per sequence (g [B,1,H] or gk [B,1,H,K]). step() equals the next
// row of a prefill up to float rounding. Memory: O(window + page_size) cached keys per sequence
// and head plus the GLA state. An Error leaves the decoder and o unchanged.
// Thread safety: one call at a time per decoder; different decoders are independent.
class LigerDecoder {
 public:
  LigerDecoder(const DecoderShape& shape, const LigerOptions& opt)
      : s_(checked(shape, opt)),
        opt_(opt),
        K_(s_.linear_dim()),
        sscale_(detail::resolve_scale("softmax_scale", opt.softmax_scale, s_.head_dim)),
        cache_(s_.batch, s_.heads, s_.head_dim, s_.value_dim,
               softmax::KVCacheOptions{.capacity = 0, .page_size = s_.page_size}),
        state_(static_cast<std::size_t>(s_.batch * s_.heads * K_ * s_.value_dim), 0.f),
        pos_(static_cast<std::size_t>(s_.batch), 0) {}

  const DecoderShape& shape() const noexcept { return s_; }
  // Tokens held by sequence b (equal for all after a batched prefill; a varlen prefill
  // gives each its own).
  index_t position(index_t b = 0) const { return pos_.at(static_cast<std::size_t>(b)); }
  const softmax::KVCache& cache() const noexcept { return cache_; }
  View4<const float> state() const {  // GLA state [B, H, K, V]
    return View4<const float>::contiguous(state_.data(), {s_.batch, s_.heads, K_, s_.value_dim});
  }

  void reset() {
    cache_.clear();
    std::fill(state_.begin(), state_.end(), 0.f);
    pos_.assign(static_cast<std::size_t>(s_.batch), 0);
  }

  template <LinearAlgorithm Algo = Chunked<64>, Executor E = Serial>
  void prefill(const LigerInputs& in, MutEView4 o, const E& exec = E{}) {
    const LigerDims d = validate_liger(in, opt_, o);
    const std::vector<index_t> lengths = detail::check_prefill(in.q, in.v, in.cu_seqlens, s_, pos_);
    check_lin(d, d.T, in.cu_seqlens.empty() ? s_.batch : 1);
    if (d.T == 0) return;
    detail::liger_prefill<Algo>(in, opt_, d, o, state_view(), exec);
    detail::fill_cache(cache_, in.k, in.v, opt_.window - 1, in.cu_seqlens);
    pos_ = lengths;
  }

  // One token per sequence: q, k [B,1,H,D], v [B,1,H,V], g [B,1,H] or gk [B,1,H,K]
  // (lin_q, lin_k [B,1,H,K]); o [B,1,H,V].
  template <Executor E = Serial>
  void step(const LigerInputs& in, MutEView4 o, const E& exec = E{}) {
    const LigerDims d = validate_liger(in, opt_, o);
    detail::check_step(in.q, in.v, in.cu_seqlens, s_);
    check_lin(d, 1, s_.batch);
    const index_t B = s_.batch, H = s_.heads, V = s_.value_dim;
    const View4<float> og = detail::scratch4(gla_buf_, B, 1, H, V);
    LinearInputs li;
    li.q = d.lin_q;
    li.k = d.lin_k;
    li.v = in.v;
    const LinearRunOptions run{d.gla_scale};
    if (d.vector_gate) {
      li.gk = in.gk;
      presets::gla{}.step(li, state_view(), og, run, exec);
    } else {
      li.g = in.g;
      presets::simple_gla{}.step(li, state_view(), og, run, exec);
    }
    cache_.append(in.k, in.v);
    SoftmaxOptions sopt;
    sopt.scale = sscale_;
    sopt.causal = true;
    sopt.window = opt_.window;
    const View4<float> ow = detail::scratch4(win_buf_, B, 1, H, V);
    softmax::flash_decode(softmax::DecodeInputs{in.q, {}, {}}, cache_, sopt, ow, exec);
    const float alpha = static_cast<float>(opt_.alpha), beta = static_cast<float>(opt_.beta);
    const Fp32Output out(o);
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < H; ++h)
        for (index_t e = 0; e < V; ++e)
          out.view()(b, 0, h, e) = alpha * og(b, 0, h, e) + beta * ow(b, 0, h, e);
    out.finish();
    detail::drop_behind(cache_, opt_.window - 1);
    for (index_t& p : pos_) ++p;
  }

 private:
  static DecoderShape checked(const DecoderShape& s, const LigerOptions& opt) {
    detail::check_shape(s);
    detail::check_window(opt.window);
    detail::check_finite("alpha", opt.alpha);
    detail::check_finite("beta", opt.beta);
    return s;
  }
  void check_lin(const LigerDims& d, index_t T, index_t B) const {
    check::shape_is("lin_q", d.lin_q, {B, T, s_.heads, K_},
                    "[B, T, H, K] with the decoder's lin_dim (lin_q defaults to q)");
  }
  View4<float> state_view() {
    return View4<float>::contiguous(state_.data(), {s_.batch, s_.heads, K_, s_.value_dim});
  }

  DecoderShape s_;
  LigerOptions opt_;
  index_t K_;
  double sscale_;
  softmax::KVCache cache_;
  std::vector<float> state_, gla_buf_, win_buf_;
  std::vector<index_t> pos_;  // tokens held per sequence
};

// Combiner tag for hybrid_attention<Liger>().
struct Liger {
  using Inputs = LigerInputs;
  using Options = LigerOptions;
  using Decoder = LigerDecoder;
  template <LinearAlgorithm Algo = Chunked<64>, Executor E = Serial>
  static void forward(const Inputs& in, const Options& opt, MutEView4 o, const E& exec = E{}) {
    liger<Algo>(in, opt, o, exec);
  }
};
static_assert(HybridCombiner<Liger>);

}  // namespace polyattn::hybrid
