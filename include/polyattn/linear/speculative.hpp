// polyattn/linear/speculative.hpp — speculative decoding for the linear family: verify T ≤ 16
// draft tokens per sequence without touching the state, then commit any accepted prefix m_b.
//
//   verify:  o_t for t < T, from S_0, by the chunked form with one chunk of T tokens; the state is
//            only read. The chunk keeps Kc [T×K], U [T×V] and b [T×bK] per (sequence, head) in
//            a VerifyCache (linear/commit.hpp says why that is enough).
//   commit:  S ← S_m = e^{b_m} ∘ S_0 + (e^{b_m − b} ∘ Kc[0:m])ᵀ U[0:m]   per (sequence, head)
// Cost: the verify is one chunk of T tokens (no state write); the commit one pass over S with
// m·K·V multiply-adds — no token is recomputed, and nothing K×V per token is stored (T·(K+V+bK)
// floats per head, against T·K·V for per-token states). The committed state is bit for bit the
// final state of Chunked<16> run on the m accepted tokens, and equals token-by-token step() to
// fp32 rounding (docs/conventions.md §3.6).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"
#include "polyattn/linear/commit.hpp"
#include "polyattn/linear/state_copy.hpp"

namespace polyattn::linear {

inline constexpr index_t kMaxVerifyTokens = 16;

/// What a verify keeps for a later commit (owned by the caller, reused across calls).
class VerifyCache {
 public:
  index_t sequences() const { return N_; }
  index_t tokens() const { return T_; }
  bool empty() const { return N_ == 0; }

  // (used by LinearAttention::verify / commit)
  void prepare(index_t N, index_t HV, index_t T, index_t K, index_t V, std::size_t per_head,
               std::span<const std::int64_t> slots) {
    N_ = N;
    HV_ = HV;
    T_ = T;
    K_ = K;
    V_ = V;
    per_head_ = per_head;
    data_.resize(static_cast<std::size_t>(N * HV) * per_head);
    slots_.assign(slots.begin(), slots.end());
  }
  float* at(index_t n, index_t hv) {
    return data_.data() + static_cast<std::size_t>(n * HV_ + hv) * per_head_;
  }
  const float* at(index_t n, index_t hv) const {
    return data_.data() + static_cast<std::size_t>(n * HV_ + hv) * per_head_;
  }
  index_t HV() const { return HV_; }
  index_t K() const { return K_; }
  index_t V() const { return V_; }
  std::size_t floats_per_head() const { return per_head_; }
  index_t slot(index_t n) const {
    return slots_.empty() ? n : static_cast<index_t>(slots_[static_cast<std::size_t>(n)]);
  }
  bool pooled() const { return !slots_.empty(); }

 private:
  index_t N_ = 0, HV_ = 0, T_ = 0, K_ = 0, V_ = 0;
  std::size_t per_head_ = 0;
  std::vector<float> data_;
  std::vector<std::int64_t> slots_;
};

/// Commits accepted[n] ∈ [0, T] tokens of sequence n to `state` ([N,HV,K,V], or the pool the
/// verify read, [slots,HV,K,V]). Validates everything before writing.
template <class P, class E>
void commit_accepted(const VerifyCache& cache, std::span<const std::int64_t> accepted,
                     const View4<float>& state, const E& exec) {
  if (cache.empty()) throw Error("cache", "holds no verified tokens (call verify first)");
  check::required("state", state);
  const index_t N = cache.sequences(), HV = cache.HV(), K = cache.K(), V = cache.V();
  if (cache.floats_per_head() != kept_floats<P>(cache.tokens(), K, V))
    throw Error("cache",
                "was filled by an operator whose gate has another shape (per key "
                "channel or not); commit with the operator that verified");
  if (static_cast<index_t>(accepted.size()) != N)
    throw Error("accepted", "needs one count per verified sequence (" + std::to_string(N) +
                                "), got " + std::to_string(accepted.size()));
  for (std::size_t n = 0; n < accepted.size(); ++n)
    if (accepted[n] < 0 || accepted[n] > cache.tokens())
      throw Error("accepted", "[" + std::to_string(n) + "] = " + std::to_string(accepted[n]) +
                                  " is outside [0, " + std::to_string(cache.tokens()) +
                                  "], the verified tokens");
  check::shape_is(
      "state", state, {cache.pooled() ? state.size(0) : N, HV, K, V},
      cache.pooled() ? "[slots,HV,K,V], the pool the verify read" : "[B,HV,K,V] as in the verify");
  for (index_t n = 0; n < N; ++n)
    if (cache.slot(n) >= state.size(0))
      throw Error("state", "has " + std::to_string(state.size(0)) +
                               " slots but the verify read slot " + std::to_string(cache.slot(n)));
  const bool contiguous = state.stride(3) == 1 && state.stride(2) == V;
  exec.parallel_for(N * HV, [&](index_t task) {
    const index_t n = task / HV, hv = task % HV;
    const index_t m = accepted[static_cast<std::size_t>(n)];
    if (m == 0) return;
    std::vector<float> S;
    const std::size_t n_ws = CommitKernel<P>::workspace_floats(m, K, V);
    const std::unique_ptr<float[]> ws(new float[n_ws]);  // not zeroed: every read is written first
    float* block = state.ptr(cache.slot(n), hv, 0, 0);
    if (!contiguous) {
      S.resize(static_cast<std::size_t>(K * V));
      copy_block({block, state.stride(2), state.stride(3)}, working_block(S.data(), V), K, V);
      block = S.data();
    }
    simd::run_kernel(
        CommitKernel<P>{cache.at(n, hv), cache.tokens(), m, K, V, block, {ws.get(), n_ws}});
    if (!contiguous)
      copy_block(working_block<const float>(S.data(), V),
                 {state.ptr(cache.slot(n), hv, 0, 0), state.stride(2), state.stride(3)}, K, V);
  });
}

}  // namespace polyattn::linear
