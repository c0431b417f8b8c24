// polyattn/reference/act.hpp — naive double-precision ACT (Yu et al. 2024, "Unveiling and
// Harnessing Hidden Attention Sinks", §4; authors' code github.com/GATECH-EIC/ACT,
// atten_process_eval), written from the weights themselves:
//   received attention  a_j = Σ_{i : p_i ≥ j} A_ij / #{i : p_i ≥ j}   (causal softmax weights A)
//   calibration of a row with sink set S, M = Σ_{s∈S} A_s:
//     Â_s = β·A_s (s ∈ S),   Â_j = A_j + (1 − β)·M·A_j / Σ_{k∉S} A_k (j ∉ S),   o = Σ Â_j v_j
//   (a row without any visible key outside S is left as it is).
// Sinks are bytes [B, HQ, S] over the call's key rows (packed rows with cu_seqlens).
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "polyattn/reference/row_softmax.hpp"

namespace polyattn::reference {

namespace detail {
// Packed key row of key j of sequence n and its batch row.
inline std::pair<index_t, index_t> act_key_row(const SoftmaxInputs& in, index_t n, index_t j) {
  if (in.cu_seqlens.empty()) return {n, j};
  return {0, static_cast<index_t>(in.cu_seqlens[static_cast<std::size_t>(n)]) + j};
}
}  // namespace detail

/// a_j of every (batch row, query head, key row) under causal softmax: [B, HQ, S] (0 for a key
/// no row sees).
inline std::vector<double> act_received_attention(const SoftmaxInputs& in, SoftmaxOptions opt) {
  opt.causal = true;
  const SoftmaxDims d = validate(in, opt);
  std::vector<double> sum(static_cast<std::size_t>(d.B * d.HQ * d.S), 0.0);
  std::vector<double> rows(sum.size(), 0.0);
  std::vector<double> unused(static_cast<std::size_t>(d.B * d.T * d.HQ * d.Dv));
  const auto collect = [&](index_t n, index_t h, index_t, const std::vector<index_t>& J,
                           std::vector<double>& A) {
    for (std::size_t r = 0; r < J.size(); ++r) {
      const auto [b, j] = detail::act_key_row(in, n, J[r]);
      const auto at = static_cast<std::size_t>((b * d.HQ + h) * d.S + j);
      sum[at] += A[r];
      rows[at] += 1.0;
    }
  };
  const auto all = [](index_t, index_t, index_t, index_t) { return true; };
  row_softmax_attention(in, opt, all, bthd(unused.data(), d.B, d.T, d.HQ, d.Dv), collect);
  for (std::size_t i = 0; i < sum.size(); ++i) sum[i] = rows[i] > 0.0 ? sum[i] / rows[i] : 0.0;
  return sum;
}

/// ACT's calibrated attention with sink bytes [B, HQ, S] and β.
template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void act_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt,
                   const std::vector<std::uint8_t>& sinks, double beta, TensorView<Out, 4> o) {
  const SoftmaxDims d = validate(in, opt, o);
  const auto calibrate = [&](index_t n, index_t h, index_t, const std::vector<index_t>& J,
                             std::vector<double>& A) {
    double M = 0.0, rest = 0.0;
    std::vector<bool> sink(J.size());
    for (std::size_t r = 0; r < J.size(); ++r) {
      const auto [b, j] = detail::act_key_row(in, n, J[r]);
      sink[r] = sinks[static_cast<std::size_t>((b * d.HQ + h) * d.S + j)] != 0;
      (sink[r] ? M : rest) += A[r];
    }
    if (rest == 0.0) return;  // nothing outside S to give the weight to
    const double give = (1.0 - beta) * M;
    for (std::size_t r = 0; r < J.size(); ++r)
      A[r] = sink[r] ? beta * A[r] : A[r] + give * A[r] / rest;
  };
  const auto all = [](index_t, index_t, index_t, index_t) { return true; };
  row_softmax_attention(in, opt, all, o, calibrate);
}

}  // namespace polyattn::reference
