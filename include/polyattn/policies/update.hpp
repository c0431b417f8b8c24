// polyattn/policies/update.hpp — state update policies of the linear family.
//
//   AdditiveUpdate  S ← S + k_t v_tᵀ
//   DeltaUpdate     S ← S + k_t (β_t (v_t − Sᵀk_t))ᵀ   (after the decay, as in fla); with
//                   qk_l2norm, q and k are first normalised in-kernel: x / sqrt(Σx² + 1e-6)
#pragma once

#include <concepts>

#include "polyattn/args/linear.hpp"

namespace polyattn {

template <class P>
concept UpdatePolicy = requires(const P& p) {
  { P::kind } -> std::convertible_to<Update>;
  { p.qk_l2norm } -> std::convertible_to<bool>;
};

struct AdditiveUpdate {
  static constexpr Update kind = Update::Additive;
  bool qk_l2norm = false;
};

struct DeltaUpdate {
  static constexpr Update kind = Update::Delta;
  bool qk_l2norm = false;
};

}  // namespace polyattn
