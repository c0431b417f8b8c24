// polyattn/sparse/pooled.hpp — block-pooled q and k, and the cheap block scores that the
// score-based selectors (top-k, cumulative mass, linear estimate) rank.
//
// For a BlockRow (sequence, query block) with rows R and a key block whose keys in that sequence
// are K (selector.hpp):
//   q̄_R = (1/|R|) Σ_{i∈R} φ(q_i)                                   per query head h
//   k̄_K = (1/|K|) Σ_{j∈K} φ(k_j)   (KeyPool::Mean)  or  Σ_{j∈K} φ(k_j)  (KeyPool::Sum)   per kv
//   head score(R, K) = scale · q̄_R · k̄_K,   kv head h / (HQ/HKV) for query head h (GQA)
// with φ = identity (Feature::Identity) or elu+1: φ(x) = x + 1 for x > 0, e^x otherwise
// (Feature::EluPlusOne). Mean pooling with φ = identity is the MoBA / SeerAttention block score
// (without a learned gate); elu+1 with summed keys is a linear-attention estimate of the mass a
// block receives: (1/|R|) Σ_{i∈R} Σ_{j∈K} φ(q_i)·φ(k_j), times scale.
//
// Cost: one pass over q and one over k (O(T·D) each, token by token, all heads of a block in one
// work item), pooled in float, stored as [block][D] for queries and transposed, [D][block], for
// keys; then per (BlockRow, head) a loop over D of axpy updates across the candidate key blocks
// (unit stride, vectorisable): O(nQB·nKB·D) in all. The summation order is fixed, so scores do not
// depend on the executor.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/sparse/selector.hpp"

namespace polyattn::sparse {

enum class Feature { Identity, EluPlusOne };
enum class KeyPool { Mean, Sum };

// elu(x) + 1: x + 1 for x > 0, e^x otherwise, written without branches or float comparisons so
// that loops over it vectorise (GCC does not if-convert float selects under the default
// -ftrapping-math). e^x: Cody–Waite reduction to r ∈ [−ln2/2, ln2/2], Cephes' degree-6 polynomial,
// 2^n through the exponent bits; relative error < 1e-7 for x ≥ −87, and x < −87 (−inf included)
// gives e^−87 ≈ 1.6e-38. NaN stays NaN.
inline float elu_plus_one(float x) noexcept {
  const auto bits = std::bit_cast<std::uint32_t>(x);
  const std::uint32_t neg = 0u - (bits >> 31);  // all ones where the sign bit is set
  std::uint32_t mag = bits & 0x7fffffffu;
  const std::uint32_t nan = 0u - static_cast<std::uint32_t>(mag > 0x7f800000u);
  mag = mag < 0x42ae0000u ? mag : 0x42ae0000u;                      // |x| clamped to 87
  const float c = std::bit_cast<float>((mag | 0x80000000u) & neg);  // −min(|x|, 87), or +0
  const float t = c * 1.44269504088896341f;
  const float n = (t + 12582912.f) - 12582912.f;  // round to nearest (|t| < 2^22)
  const float r = (c - n * 0.693359375f) + n * 2.12194440e-4f;
  const float p = ((((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r +
                      4.1665795894e-2f) *
                         r +
                     1.6666665459e-1f) *
                        r +
                    5.0000001201e-1f) *
                       (r * r) +
                   r) +
                  1.f;
  const auto two_n = static_cast<std::uint32_t>(static_cast<std::int32_t>(n) + 127) << 23;
  const float e = p * std::bit_cast<float>(two_n);
  const std::uint32_t out =
      (std::bit_cast<std::uint32_t>(x + 1.f) & ~neg) | (std::bit_cast<std::uint32_t>(e) & neg);
  return std::bit_cast<float>((out & ~nan) | (bits & nan));
}

class PooledBlocks {
 public:
  template <Executor E>
  PooledBlocks(const SelectionPlan& plan, const SoftmaxInputs& in, Feature feature, KeyPool pool,
               const E& exec)
      : plan_(&plan) {
    const SoftmaxDims& d = plan.dims();
    D_ = d.D;
    HQ_ = d.HQ;
    HKV_ = d.HKV;
    group_ = d.group;
    scale_ = static_cast<float>(d.scale);
    const index_t bs = plan.block(), ns = plan.num_seqs();
    for (index_t s = 0; s < ns; ++s) {
      const SeqSpan& q = plan.seqs()[static_cast<std::size_t>(s)];
      const index_t qbf = q.q0 / bs, nqb = q.nq > 0 ? (q.q0 + q.nq - 1) / bs - qbf + 1 : 0;
      const index_t kbf = q.k0 / bs, nkb = q.nk > 0 ? (q.k0 + q.nk - 1) / bs - kbf + 1 : 0;
      qb_first_.push_back(qbf);
      kb_first_.push_back(kbf);
      k_count_.push_back(nkb);
      for (index_t h = 0; h < HQ_; ++h) {
        q_off_.push_back(q_size_);
        q_size_ += static_cast<std::size_t>(nqb * D_);
      }
      for (index_t hk = 0; hk < HKV_; ++hk) {
        k_off_.push_back(k_size_);
        k_size_ += static_cast<std::size_t>(nkb * D_);
      }
    }
    q_.assign(q_size_, 0.f);
    k_.assign(k_size_, 0.f);
    // Work items: one (sequence, block) each, over all heads, so that q and k are read token by
    // token (every head of a token is contiguous in [B, T, H, D]) rather than head by head.
    std::vector<std::pair<index_t, index_t>> qitems, kitems;
    for (index_t s = 0; s < ns; ++s) {
      const SeqSpan& q = plan.seqs()[static_cast<std::size_t>(s)];
      if (q.nq > 0)
        for (index_t qb = q.q0 / bs; qb <= (q.q0 + q.nq - 1) / bs; ++qb) qitems.emplace_back(s, qb);
      if (q.nk > 0)
        for (index_t kb = q.k0 / bs; kb <= (q.k0 + q.nk - 1) / bs; ++kb) kitems.emplace_back(s, kb);
    }
    const bool elu = feature == Feature::EluPlusOne;
    exec.parallel_for(static_cast<index_t>(qitems.size()), [&](index_t i) {
      pool_query_block(in, qitems[static_cast<std::size_t>(i)].first,
                       qitems[static_cast<std::size_t>(i)].second, elu);
    });
    exec.parallel_for(static_cast<index_t>(kitems.size()), [&](index_t i) {
      pool_key_block(in, kitems[static_cast<std::size_t>(i)].first,
                     kitems[static_cast<std::size_t>(i)].second, elu, pool == KeyPool::Mean);
    });
  }

  // q̄ of query block qb of sequence s, head h: D floats.
  const float* query(index_t s, index_t h, index_t qb) const noexcept {
    return q_.data() + q_index(s, h, qb);
  }
  // k̄ of every key block of sequence s, kv head hk, transposed: [D][key_blocks(s)].
  const float* keys_t(index_t s, index_t hk) const noexcept {
    return k_.data() + k_off_[static_cast<std::size_t>(s * HKV_ + hk)];
  }
  index_t key_blocks(index_t s) const noexcept { return k_count_[static_cast<std::size_t>(s)]; }

  // scores[kb] = score(row, kb) for kb in the row's candidates [lo, hi]; other entries untouched.
  void scores(const BlockRow& r, index_t h, float* scores) const noexcept {
    if (!r.has_candidates()) return;
    const index_t s = r.seq, n = key_blocks(s), kbf = kb_first_[static_cast<std::size_t>(s)];
    const float* qv = query(s, h, r.qb);
    const float* kt = keys_t(s, h / group_);
    const index_t c0 = r.lo - kbf, c1 = r.hi - kbf + 1;
    float* out = scores + kbf;
    for (index_t c = c0; c < c1; ++c) out[c] = 0.f;
    for (index_t e = 0; e < D_; ++e) {
      const float a = scale_ * qv[e];
      const float* row = kt + e * n;
      for (index_t c = c0; c < c1; ++c) out[c] += a * row[c];
    }
  }

 private:
  std::size_t q_index(index_t s, index_t h, index_t qb) const noexcept {
    return q_off_[static_cast<std::size_t>(s * HQ_ + h)] +
           static_cast<std::size_t>((qb - qb_first_[static_cast<std::size_t>(s)]) * D_);
  }

  // acc[e] += φ(x[e·stride]) for e < D (acc and x never overlap; x fp32, bf16 or fp16).
  template <class T>
  static void accumulate(float* __restrict acc, const T* __restrict x, index_t stride, index_t D,
                         bool elu) noexcept {
    if constexpr (!std::is_same_v<T, float>) {
      for (index_t e = 0; e < D; ++e) {
        const float v = to_float(x[e * stride]);
        acc[e] += elu ? elu_plus_one(v) : v;
      }
    } else if (stride == 1) {
      if (elu) {
        for (index_t e = 0; e < D; ++e) acc[e] += elu_plus_one(x[e]);
      } else {
        for (index_t e = 0; e < D; ++e) acc[e] += x[e];
      }
    } else {
      for (index_t e = 0; e < D; ++e) acc[e] += elu ? elu_plus_one(x[e * stride]) : x[e * stride];
    }
  }

  void pool_query_block(const SoftmaxInputs& in, index_t s, index_t qb, bool elu) {
    const SeqSpan& q = plan_->seqs()[static_cast<std::size_t>(s)];
    const index_t bs = plan_->block(), st = in.q.stride(3);
    const index_t i0 = std::max(qb * bs, q.q0), i1 = std::min((qb + 1) * bs, q.q0 + q.nq);
    for (index_t i = i0; i < i1; ++i)
      for (index_t h = 0; h < HQ_; ++h)
        in.q.visit([&](auto qv) {
          accumulate(q_.data() + q_index(s, h, qb), qv.ptr(q.b, i, h, 0), st, D_, elu);
        });
    const float inv = 1.f / static_cast<float>(i1 - i0);
    for (index_t h = 0; h < HQ_; ++h) {
      float* acc = q_.data() + q_index(s, h, qb);
      for (index_t e = 0; e < D_; ++e) acc[e] *= inv;
    }
  }

  void pool_key_block(const SoftmaxInputs& in, index_t s, index_t kb, bool elu, bool mean) {
    const SeqSpan& q = plan_->seqs()[static_cast<std::size_t>(s)];
    const index_t bs = plan_->block(), st = in.k.stride(3);
    const index_t n = key_blocks(s), c = kb - kb_first_[static_cast<std::size_t>(s)];
    const index_t j0 = std::max(kb * bs, q.k0), j1 = std::min((kb + 1) * bs, q.k0 + q.nk);
    std::vector<float> acc(static_cast<std::size_t>(HKV_ * D_), 0.f);
    for (index_t j = j0; j < j1; ++j)
      for (index_t hk = 0; hk < HKV_; ++hk)
        in.k.visit(
            [&](auto kv) { accumulate(acc.data() + hk * D_, kv.ptr(q.b, j, hk, 0), st, D_, elu); });
    const float mul = mean ? 1.f / static_cast<float>(j1 - j0) : 1.f;
    for (index_t hk = 0; hk < HKV_; ++hk) {
      float* kt = k_.data() + k_off_[static_cast<std::size_t>(s * HKV_ + hk)];
      for (index_t e = 0; e < D_; ++e)
        kt[e * n + c] = acc[static_cast<std::size_t>(hk * D_ + e)] * mul;
    }
  }

  const SelectionPlan* plan_;
  index_t D_ = 0, HQ_ = 0, HKV_ = 0, group_ = 1;
  float scale_ = 1.f;
  std::vector<index_t> qb_first_, kb_first_, k_count_;
  std::vector<std::size_t> q_off_, k_off_;
  std::size_t q_size_ = 0, k_size_ = 0;
  std::vector<float> q_, k_;
};

}  // namespace polyattn::sparse
