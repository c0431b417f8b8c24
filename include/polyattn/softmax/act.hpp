// polyattn/softmax/act.hpp — ACT, the attention calibration technique of Yu et al. 2024
// ("Unveiling and Harnessing Hidden Attention Sinks", ICML 2024, §4; authors' code
// github.com/GATECH-EIC/ACT, models/*_modelling_aug.py, atten_process_eval), at inference:
//
// 1. Sinks, per (sequence, query head h) of the heads chosen for calibration (ACT picks them
//    offline): with A the causal softmax weights of the head, the mean attention key j receives
//    from the rows that see it,
//        a_j = Σ_{i : p_i ≥ j} A_ij / #{i : p_i ≥ j},
//    makes j a sink when a_j > α. The initial token (key 0 of the sequence) is never calibrated
//    (ACT keeps the sink at the start of the sequence). → detect_act_sinks, an ActSinks set.
// 2. Calibration of a row i with sink set S (j ∉ S: the other visible keys),
//        M_i = Σ_{s ∈ S} A_is,
//        Â_is = β·A_is,      Â_ij = A_ij + (1 − β)·M_i · A_ij / Σ_{k ∉ S} A_ik,
//    i.e. the sinks keep a fraction β of their weight and the rest goes to the other keys in
//    proportion to theirs. A row that sees no key outside S is left as it is (nothing to give
//    the weight to; the authors' code divides 0 by 0 there).
//    → act_attention. It runs the tiled kernel twice, with ActSinkMask keeping S and keeping its
//    complement, each with its lse, and combines per row (in double):
//        M = e^{lse_S} / (e^{lse_S} + e^{lse_R}),   o = β·M·o_S + (1 − β·M)·o_R,
//    which is Σ_j Â_ij v_j (Σ_{s∈S} A_is v_s = M·o_S, Σ_{j∉S} A_ij v_j = (1 − M)·o_R).
// Heads with no sink give the plain softmax (M = 0). Decode: the same call with T < S (the
// query rows sit at the last positions) and the prefill's sink set.
//
// What is not ACT's: the options' score modifiers (softcap, ALiBi, forgetting gate) and the sink
// logit are refused (Error) by both functions; detect_act_sinks wants causal attention without a
// window or block mask (ACT's setting: decoder LLMs). The detection forms A from the kernel's
// fp32 lse, one (row, key) at a time in plain loops: O(T²·D) per calibrated head, run once per
// prompt, not a tiled kernel.
//
// Element types (docs/conventions.md §9.7): q, k, v fp32, bf16 or fp16, any mix (the tiled
// kernel widens them on load; the detection widens each q row and a head's keys exactly); o of
// any of the three, formed in fp32 and rounded once (core/fp32_output.hpp). T inputs give the
// fp32 operator's bits on the widened values, except where all-bf16 inputs take the AMX products
// (softmax::uses_bf16_products; bf16-level error then, §9.7).
//
// Kernels: FlashKernelFor<Fusion<ActSinkMask>>, listed in POLYATTN_ACT_KERNELS.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/element_view.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/fp32_output.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/fusion.hpp"

namespace polyattn::softmax {

/// Sink keys per (batch row, query head): bytes [B, HQ, S] over the call's key rows (packed rows
/// with cu_seqlens, B = 1), with prefix counts for the kernel's tile classes.
class ActSinks {
 public:
  ActSinks() = default;
  /// bits[(b·HQ + h)·S + j] ≠ 0 marks key row j a sink of head h in batch row b.
  /// @throws polyattn::Error ("sinks") when bits does not hold B·HQ·S entries or a size is < 0
  ActSinks(index_t B, index_t HQ, index_t S, std::vector<std::uint8_t> bits)
      : B_(B), HQ_(HQ), S_(S), bits_(std::move(bits)) {
    if (B < 0 || HQ < 0 || S < 0) throw Error("sinks", "sizes must be >= 0");
    if (static_cast<index_t>(bits_.size()) != B * HQ * S)
      throw Error("sinks", "expected " + std::to_string(B * HQ * S) + " entries [B·HQ·S], got " +
                               std::to_string(bits_.size()));
    prefix_.assign(static_cast<std::size_t>(B * HQ * (S + 1)), 0);
    for (index_t bh = 0; bh < B * HQ; ++bh)
      for (index_t j = 0; j < S; ++j)
        prefix_[static_cast<std::size_t>(bh * (S + 1) + j + 1)] =
            prefix_[static_cast<std::size_t>(bh * (S + 1) + j)] +
            (bits_[static_cast<std::size_t>(bh * S + j)] != 0 ? 1 : 0);
  }

  index_t batch() const noexcept { return B_; }
  index_t heads() const noexcept { return HQ_; }
  index_t keys() const noexcept { return S_; }
  bool is_sink(index_t b, index_t h, index_t j) const noexcept {
    return bits_[static_cast<std::size_t>((b * HQ_ + h) * S_ + j)] != 0;
  }
  /// Sinks among key rows [j0, j1) of (b, h).
  index_t count(index_t b, index_t h, index_t j0, index_t j1) const noexcept {
    const std::size_t base = static_cast<std::size_t>((b * HQ_ + h) * (S_ + 1));
    return prefix_[base + static_cast<std::size_t>(j1)] -
           prefix_[base + static_cast<std::size_t>(j0)];
  }
  const std::vector<std::uint8_t>& bits() const noexcept { return bits_; }
  /// Sink bytes [S] and prefix counts [S + 1] of (b, h).
  const std::uint8_t* bits_of(index_t b, index_t h) const noexcept {
    return bits_.data() + (b * HQ_ + h) * S_;
  }
  const index_t* prefix_of(index_t b, index_t h) const noexcept {
    return prefix_.data() + (b * HQ_ + h) * (S_ + 1);
  }

  void check(const SoftmaxDims& d) const {
    if (B_ != d.B || HQ_ != d.HQ || S_ != d.S)
      throw Error("sinks", "expected [B, HQ, S] = " + shape_string(std::array{d.B, d.HQ, d.S}) +
                               ", got " + shape_string(std::array{B_, HQ_, S_}));
  }

 private:
  index_t B_ = 0, HQ_ = 0, S_ = 0;
  std::vector<std::uint8_t> bits_;
  std::vector<index_t> prefix_;  // [B·HQ][S + 1]
};

/// The keys of one side of ACT's split: the sinks (keep_sinks) or every other key.
struct ActSinkMask {
  const ActSinks* sinks = nullptr;
  bool keep_sinks = true;

  struct Bound {
    const std::uint8_t* bits;  // this (batch row, head)'s sink bytes, at the sequence's first key
    const index_t* prefix;     // its prefix counts, at the same key
    bool keep_sinks;
    template <simd::SimdArch A = simd::scalar_arch>
    bool visible(index_t, index_t, index_t j) const noexcept {
      return (bits[j] != 0) == keep_sinks;
    }
    template <simd::SimdArch A = simd::scalar_arch>
    TileClass classify(RowRange, KeyRange keys) const noexcept {
      const index_t n = prefix[keys.j1] - prefix[keys.j0];
      const index_t kept = keep_sinks ? n : (keys.j1 - keys.j0) - n;
      if (kept == 0) return TileClass::Skip;
      return kept == keys.j1 - keys.j0 ? TileClass::Full : TileClass::Partial;
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext& c) const noexcept {
    return {sinks->bits_of(c.batch, c.head) + c.k_offset,
            sinks->prefix_of(c.batch, c.head) + c.k_offset, keep_sinks};
  }
  void check(const SoftmaxDims& d) const { check::not_null("sinks", sinks).check(d); }
};
static_assert(FusionMask<ActSinkMask>);

namespace detail {
inline void act_check_options(const SoftmaxInputs& in, const SoftmaxOptions& opt) {
  if (opt.softcap > 0.0) throw Error("softcap", "is not supported by ACT");
  if (!in.alibi_slopes.absent()) throw Error("alibi_slopes", "is not supported by ACT");
  if (!in.g.absent()) throw Error("g", "is not supported by ACT");
  if (!in.sink.absent()) throw Error("sink", "is not supported by ACT");
}

// Row (b, t, h) of x widened into dst [x.size(3)] (the element type switched on once per row).
inline void act_widen_row(const EView4& x, index_t b, index_t t, index_t h, float* dst) {
  x.visit([&](auto v) {
    for (index_t e = 0; e < x.size(3); ++e) dst[e] = to_float(v(b, t, h, e));
  });
}
}  // namespace detail

/// ACT's calibrated attention (see the header comment): o [B, T, HQ, Dv] fp32, bf16 or fp16.
/// @throws polyattn::Error naming the bad argument (sinks, beta, a score modifier), before
///         anything is written
template <Executor E = Serial>
void act_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, const ActSinks& sinks,
                   double beta, MutEView4 o, const E& exec = E{}) {
  const SoftmaxDims d = validate(in, opt, o);
  detail::act_check_options(in, opt);
  sinks.check(d);
  if (!(beta >= 0.0 && beta <= 1.0))
    throw Error("beta", "must be in [0, 1], got " + std::to_string(beta));
  const auto n4 = static_cast<std::size_t>(d.B * d.T * d.HQ * d.Dv);
  const auto n3 = static_cast<std::size_t>(d.B * d.T * d.HQ);
  std::vector<float> os(n4), orest(n4), ls(n3), lr(n3);
  const auto view4 = [&](std::vector<float>& x) { return bthd(x.data(), d.B, d.T, d.HQ, d.Dv); };
  const auto view3 = [&](std::vector<float>& x) { return bth(x.data(), d.B, d.T, d.HQ); };
  flash_attention(in, opt, with_mask(ActSinkMask{&sinks, true}), view4(os), view3(ls), exec);
  flash_attention(in, opt, with_mask(ActSinkMask{&sinks, false}), view4(orest), view3(lr), exec);
  const Fp32Output o32(o);
  for (index_t b = 0; b < d.B; ++b)
    for (index_t t = 0; t < d.T; ++t)
      for (index_t h = 0; h < d.HQ; ++h) {
        const std::size_t row = static_cast<std::size_t>((b * d.T + t) * d.HQ + h);
        const double lS = ls[row], lR = lr[row];
        // Weight of o_S: β·M; a row without any non-sink key stays as it is (weight 1).
        double ws = 0.0;
        if (lR == -INFINITY)
          ws = 1.0;
        else if (lS != -INFINITY)
          ws = beta / (1.0 + std::exp(lR - lS));
        const double wr = lR == -INFINITY ? 0.0 : 1.0 - ws;
        for (index_t e = 0; e < d.Dv; ++e) {
          const std::size_t at = row * static_cast<std::size_t>(d.Dv) + static_cast<std::size_t>(e);
          const double x = (ws != 0.0 ? ws * os[at] : 0.0) + (wr != 0.0 ? wr * orest[at] : 0.0);
          o32.view()(b, t, h, e) = static_cast<float>(x);
        }
      }
  o32.finish();
}

/// ACT's sink detection (see the header comment) for the query heads with calibrate[h] ≠ 0
/// (calibrate: HQ entries; other heads get no sink), threshold alpha on the mean received
/// attention.
/// @throws polyattn::Error ("opt" unless causal without window or block mask; "calibrate";
///         "alpha" unless finite; a score modifier)
template <Executor E = Serial>
ActSinks detect_act_sinks(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                          const std::vector<std::uint8_t>& calibrate, double alpha,
                          const E& exec = E{}) {
  const SoftmaxDims d = validate(in, opt);
  detail::act_check_options(in, opt);
  if (!opt.causal || opt.window > 0 || opt.block_mask != nullptr)
    throw Error("opt", "ACT's sink detection needs causal attention without window or block mask");
  if (static_cast<index_t>(calibrate.size()) != d.HQ)
    throw Error("calibrate", "expected HQ = " + std::to_string(d.HQ) + " entries, got " +
                                 std::to_string(calibrate.size()));
  if (!std::isfinite(alpha)) throw Error("alpha", "must be finite");
  std::vector<float> lse(static_cast<std::size_t>(d.B * d.T * d.HQ));
  std::vector<float> o(static_cast<std::size_t>(d.B * d.T * d.HQ * d.Dv));
  flash_attention(in, opt, bthd(o.data(), d.B, d.T, d.HQ, d.Dv), bth(lse.data(), d.B, d.T, d.HQ),
                  exec);
  std::vector<std::uint8_t> bits(static_cast<std::size_t>(d.B * d.HQ * d.S), 0);
  const index_t seqs = d.num_seqs;
  exec.parallel_for(seqs * d.HQ, [&](std::int64_t item) {
    const index_t n = item / d.HQ, h = item % d.HQ, hk = h / d.group;
    if (calibrate[static_cast<std::size_t>(h)] == 0) return;
    index_t b = n, q0 = 0, nq = d.T, k0 = 0, nk = d.S;
    if (d.varlen) {
      b = 0;
      q0 = k0 = in.cu_seqlens[static_cast<std::size_t>(n)];
      nq = nk = in.cu_seqlens[static_cast<std::size_t>(n) + 1] - q0;
    }
    std::vector<double> received(static_cast<std::size_t>(nk), 0.0);
    std::vector<index_t> rows(static_cast<std::size_t>(nk), 0);
    // The sequence's keys of kv head hk and one query row, widened exactly.
    std::vector<float> keys(static_cast<std::size_t>(nk * d.D)), q(static_cast<std::size_t>(d.D));
    for (index_t j = 0; j < nk; ++j)
      detail::act_widen_row(in.k, b, k0 + j, hk, keys.data() + j * d.D);
    for (index_t i = 0; i < nq; ++i) {
      const index_t p = i + nk - nq;
      const double l = lse[static_cast<std::size_t>((b * d.T + q0 + i) * d.HQ + h)];
      if (p < 0 || l == -INFINITY) continue;
      detail::act_widen_row(in.q, b, q0 + i, h, q.data());
      for (index_t j = 0; j <= p; ++j) {
        float dot = 0.f;
        const float* k = keys.data() + j * d.D;
        for (index_t e = 0; e < d.D; ++e) dot += q[e] * k[e];
        received[static_cast<std::size_t>(j)] += std::exp(d.scale * dot - l);
        ++rows[static_cast<std::size_t>(j)];
      }
    }
    for (index_t j = 1; j < nk; ++j) {  // key 0: the initial sink stays
      const auto jj = static_cast<std::size_t>(j);
      if (rows[jj] > 0 && received[jj] / static_cast<double>(rows[jj]) > alpha)
        bits[static_cast<std::size_t>((b * d.HQ + h) * d.S + k0 + j)] = 1;
    }
  });
  return ActSinks(d.B, d.HQ, d.S, std::move(bits));
}

}  // namespace polyattn::softmax

// The kernel of a project's per-ISA units for ACT (see the header comment).
#define POLYATTN_ACT_KERNELS(X)          \
  X(::polyattn::softmax::FlashKernelFor< \
      ::polyattn::softmax::Fusion<::polyattn::softmax::ActSinkMask>>)
