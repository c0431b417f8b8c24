// polyattn/hybrid/based.hpp — Based hybrid (Arora et al. 2024): normalised Taylor-2 linear
// attention plus sliding-window softmax, the two normalised outputs summed. Per (sequence, head),
// position p, window W_p = [p − w + 1, p] (clipped at the sequence start):
//
//   o_p = Σ_{j≤p} f(x_pj) v_j / (Σ_{j≤p} f(x_pj) + eps)  +  Σ_{j∈W_p} e^{s_pj} v_j / Σ_{j∈W_p}
//   e^{s_pj} f(x) = 1 + x + x²/2,  x_pj = based_scale · lin_q_p·lin_k_j,  s_pj = softmax_scale ·
//   q_p·k_j
//
// (reference::based_hybrid; lin_q / lin_k default to q / k, scales to K^-½ and D^-½.)
//   based_hybrid<Algo>(in, opt, o, exec)   prefill: the Based branch is LinearAttention with the
//       Taylor2Scaled feature map (Taylor2(x·√based_scale): φ(q)·φ(k) = f(x) exactly; at the
//       default scale it is fla's Taylor2Fla, i.e. presets::make_based), SumNormalizer{eps},
//       scale 1, run with the tiling Algo; the window branch is flash_attention (causal, window).
//       Varlen (cu_seqlens) is supported.
//   BasedHybridDecoder                     prefill() then step(): a paged window KV cache
//       (pages behind the window are released) + the Based state [B,H,F,V] and key sum z [B,H,F].
// Both branches are computed in fp32 by the library's kernels; the result is approximate only
// in the float rounding of each (rel. RMSE ~1e-7 against the double reference).
// Element types: q, k, v, lin_q, lin_k fp32, bf16 or fp16 (one type, args/hybrid.hpp), passed to
// the kernels as they are (they widen on load); o any of the three: the sum is formed in fp32 and
// rounded once (a bf16 o is the fp32 o rounded to nearest even). The decoder's window cache and
// states are fp32.
#pragma once

#include <cmath>
#include <optional>
#include <vector>

#include "polyattn/args/hybrid.hpp"
#include "polyattn/hybrid/common.hpp"
#include "polyattn/linear/operator.hpp"
#include "polyattn/policies/feature_map.hpp"
#include "polyattn/softmax/decode.hpp"

namespace polyattn::hybrid {

// FeatureMap: the second-order Taylor features of x·r, r = √c, so that
// φ(q)·φ(k) = 1 + c·q·k + (c·q·k)²/2 (Taylor2 layout; r = d^-¼ gives Taylor2Fla).
struct Taylor2Scaled {
  double root_scale = 1.0;
  static constexpr bool is_identity = false;
  static constexpr const char* name() noexcept { return "taylor2_scaled"; }
  index_t out_dim(index_t d) const { return polyattn::detail::fmap::taylor2_out_dim(d); }
  void apply(const float* x, index_t d, float* out) const noexcept {
    const double r = root_scale, r2 = r * r, inv_sqrt2 = 1.0 / std::sqrt(2.0);
    float* o = out;
    *o++ = 1.0f;
    for (index_t i = 0; i < d; ++i) *o++ = static_cast<float>(static_cast<double>(x[i]) * r);
    for (index_t i = 0; i < d; ++i) {
      const double xi = x[i];
      *o++ = static_cast<float>(xi * xi * r2 * inv_sqrt2);
    }
    for (index_t i = 0; i < d; ++i) {
      const double xi = x[i];
      for (index_t j = i + 1; j < d; ++j)
        *o++ = static_cast<float>(xi * static_cast<double>(x[j]) * r2);
    }
  }
};
static_assert(FeatureMap<Taylor2Scaled>);

// The Based branch as a linear-family operator (additive, no decay, Sum normaliser, scale 1).
using BasedBranch = LinearAttention<Taylor2Scaled, NoDecay, AdditiveUpdate, SumNormalizer>;
inline BasedBranch based_branch(double based_scale, double eps) {
  return {Taylor2Scaled{std::sqrt(based_scale)}, NoDecay{}, AdditiveUpdate{}, SumNormalizer{eps},
          1.0};
}

namespace detail {

// The prefill of a validated call; final_state / final_z (optional) receive the Based state.
template <class Algo, class E>
void based_prefill(const BasedHybridInputs& in, const BasedHybridOptions& opt,
                   const BasedHybridDims& d, const MutEView4& o, View4<float> final_state,
                   View3<float> final_z, const E& exec) {
  if (o.numel() == 0) return;
  // Window branch first, into scratch: should it fail, o is still untouched.
  std::vector<float> wbuf;
  const View4<float> ow = scratch4(wbuf, d.B, d.T, d.H, d.V);
  swa(in.q, in.k, in.v, in.cu_seqlens, opt.window, d.softmax_scale, ow, {}, exec);

  LinearInputs lin;
  lin.q = d.lin_q;
  lin.k = d.lin_k;
  lin.v = in.v;
  lin.cu_seqlens = in.cu_seqlens;
  const Fp32Output out(o);  // the sum, in fp32 (in o itself when o is fp32)
  const View4<float> os = out.view();
  based_branch(d.based_scale, opt.eps)
      .forward<Algo>(lin, LinearOutputs<float>{os, final_state, final_z}, LinearRunOptions{1.0},
                     exec);
  for_rows(d.B, d.T, exec, [&](index_t b, index_t t) {
    for (index_t h = 0; h < d.H; ++h)
      for (index_t e = 0; e < d.V; ++e) os(b, t, h, e) += ow(b, t, h, e);
  });
  out.finish();
}

}  // namespace detail

// Based hybrid prefill (see the header comment). Validates everything before writing o.
template <LinearAlgorithm Algo = Chunked<64>, Executor E = Serial>
void based_hybrid(const BasedHybridInputs& in, const BasedHybridOptions& opt, MutEView4 o,
                  const E& exec = E{}) {
  const BasedHybridDims d = validate_based_hybrid(in, opt, o);
  detail::based_prefill<Algo>(in, opt, d, o, {}, {}, exec);
}

// Decoder of B sequences: prefill(in, o) over [B, T, ...] (optional), then step(in, o) with one
// new token per sequence ([B, 1, ...] inputs). step() equals the next row of a prefill over all
// tokens so far (up to float rounding). Memory: O(window + page_size) keys per sequence and head
// plus the Based state. The inputs of a call must be complete (q, k, v; lin_q / lin_k when the
// decoder's lin_dim differs from head_dim); an Error leaves the decoder and o unchanged.
// Thread safety: one call at a time per decoder; different decoders are independent.
class BasedHybridDecoder {
 public:
  BasedHybridDecoder(const DecoderShape& shape, const BasedHybridOptions& opt)
      : s_(checked(shape, opt)),
        opt_(opt),
        K_(s_.linear_dim()),
        F_(polyattn::detail::fmap::taylor2_out_dim(K_)),
        bscale_(detail::resolve_scale("based_scale", opt.based_scale, K_)),
        sscale_(detail::resolve_scale("softmax_scale", opt.softmax_scale, s_.head_dim)),
        branch_(based_branch(bscale_, opt.eps)),
        cache_(s_.batch, s_.heads, s_.head_dim, s_.value_dim,
               softmax::KVCacheOptions{.capacity = 0, .page_size = s_.page_size}),
        state_(static_cast<std::size_t>(s_.batch * s_.heads * F_ * s_.value_dim), 0.f),
        z_(static_cast<std::size_t>(s_.batch * s_.heads * F_), 0.f),
        pos_(static_cast<std::size_t>(s_.batch), 0) {}

  const DecoderShape& shape() const noexcept { return s_; }
  // Tokens held by sequence b (equal for all after a batched prefill; a varlen prefill
  // gives each its own).
  index_t position(index_t b = 0) const { return pos_.at(static_cast<std::size_t>(b)); }
  const softmax::KVCache& cache() const noexcept { return cache_; }
  // The Based branch's state S [B, H, F, V] and key sum z [B, H, F], F = 1 + K + K(K+1)/2.
  View4<const float> state() const {
    return View4<const float>::contiguous(state_.data(), {s_.batch, s_.heads, F_, s_.value_dim});
  }
  View3<const float> key_sum() const {
    return View3<const float>::contiguous(z_.data(), {s_.batch, s_.heads, F_});
  }

  void reset() {
    cache_.clear();
    std::fill(state_.begin(), state_.end(), 0.f);
    std::fill(z_.begin(), z_.end(), 0.f);
    pos_.assign(static_cast<std::size_t>(s_.batch), 0);
  }

  // Prefill of a fresh decoder: o [B, T, H, V] as based_hybrid(), and the decoder's state.
  template <LinearAlgorithm Algo = Chunked<64>, Executor E = Serial>
  void prefill(const BasedHybridInputs& in, MutEView4 o, const E& exec = E{}) {
    const BasedHybridDims d = validate_based_hybrid(in, opt_, o);
    const std::vector<index_t> lengths = detail::check_prefill(in.q, in.v, in.cu_seqlens, s_, pos_);
    check_lin(d, d.T, in.cu_seqlens.empty() ? s_.batch : 1);
    if (d.T == 0) return;
    detail::based_prefill<Algo>(in, opt_, d, o, state_view(), z_view(), exec);
    detail::fill_cache(cache_, in.k, in.v, opt_.window - 1, in.cu_seqlens);
    pos_ = lengths;
  }

  // One token per sequence: in.q, k [B, 1, H, D], v [B, 1, H, V] (lin_q, lin_k [B, 1, H, K]);
  // o [B, 1, H, V].
  template <Executor E = Serial>
  void step(const BasedHybridInputs& in, MutEView4 o, const E& exec = E{}) {
    const BasedHybridDims d = validate_based_hybrid(in, opt_, o);
    detail::check_step(in.q, in.v, in.cu_seqlens, s_);
    check_lin(d, 1, s_.batch);
    // Based branch: the recurrent kernel on one token, state and key sum updated in place.
    LinearInputs lin;
    lin.q = d.lin_q;
    lin.k = d.lin_k;
    lin.v = in.v;
    lin.initial_state = state_view();
    lin.initial_z = z_view();
    const View4<float> olin = detail::scratch4(lin_buf_, s_.batch, 1, s_.heads, s_.value_dim);
    branch_.forward<Recurrent>(lin, LinearOutputs<float>{olin, state_view(), z_view()},
                               LinearRunOptions{1.0}, exec);
    // Window branch: append the token, attend to the last `window` keys.
    cache_.append(in.k, in.v);
    SoftmaxOptions sopt;
    sopt.scale = sscale_;
    sopt.causal = true;
    sopt.window = opt_.window;
    const View4<float> ow = detail::scratch4(win_buf_, s_.batch, 1, s_.heads, s_.value_dim);
    softmax::flash_decode(softmax::DecodeInputs{in.q, {}, {}}, cache_, sopt, ow, exec);
    const Fp32Output out(o);
    for (index_t b = 0; b < s_.batch; ++b)
      for (index_t h = 0; h < s_.heads; ++h)
        for (index_t e = 0; e < s_.value_dim; ++e)
          out.view()(b, 0, h, e) = olin(b, 0, h, e) + ow(b, 0, h, e);
    out.finish();
    detail::drop_behind(cache_, opt_.window - 1);  // the next query needs window − 1 of these
    for (index_t& p : pos_) ++p;
  }

 private:
  static DecoderShape checked(const DecoderShape& s, const BasedHybridOptions& opt) {
    detail::check_shape(s);
    detail::check_window(opt.window);
    if (!(opt.eps >= 0.0) || std::isinf(opt.eps))
      throw Error("eps", "must be finite and >= 0, got " + std::to_string(opt.eps));
    return s;
  }
  void check_lin(const BasedHybridDims& d, index_t T, index_t B) const {
    check::shape_is("lin_q", d.lin_q, {B, T, s_.heads, K_},
                    "[B, T, H, K] with the decoder's lin_dim (lin_q defaults to q)");
  }
  View4<float> state_view() {
    return View4<float>::contiguous(state_.data(), {s_.batch, s_.heads, F_, s_.value_dim});
  }
  View3<float> z_view() { return View3<float>::contiguous(z_.data(), {s_.batch, s_.heads, F_}); }

  DecoderShape s_;
  BasedHybridOptions opt_;
  index_t K_, F_;
  double bscale_, sscale_;
  BasedBranch branch_;
  softmax::KVCache cache_;
  std::vector<float> state_, z_, lin_buf_, win_buf_;
  std::vector<index_t> pos_;  // tokens held per sequence
};

// Combiner tag for hybrid_attention<BasedHybrid>().
struct BasedHybrid {
  using Inputs = BasedHybridInputs;
  using Options = BasedHybridOptions;
  using Decoder = BasedHybridDecoder;
  template <LinearAlgorithm Algo = Chunked<64>, Executor E = Serial>
  static void forward(const Inputs& in, const Options& opt, MutEView4 o, const E& exec = E{}) {
    based_hybrid<Algo>(in, opt, o, exec);
  }
};
static_assert(HybridCombiner<BasedHybrid>);

}  // namespace polyattn::hybrid
