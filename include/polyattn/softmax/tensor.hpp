// polyattn/softmax/tensor.hpp — tensor ("Kronecker", third-order) attention (Alman & Song 2024,
// "How to Capture Higher-order Correlations? Generalizing Matrix Softmax Attention to Kronecker
// Computation", ICLR 2024, §1 / Definition of tensor attention, after Sanford, Hsu & Telgarsky
// 2023): the softmax runs over pairs of keys,
//
//   o = D⁻¹ exp(s·Q (K₁ ⊘ K₂)ᵀ) (V₁ ⊘ V₂),   D = diag(exp(s·Q (K₁ ⊘ K₂)ᵀ) 1)
//
// with ⊘ the column-wise Kronecker product (row (j₁, j₂) of K₁ ⊘ K₂ is k₁_{j₁} ∘ k₂_{j₂}), i.e.
// per (batch row, query head h, kv head h/(HQ/HKV)) and query i:
//   o_i = Σ_{j₁, j₂} e^{s·Σ_e q_i[e] k₁_{j₁}[e] k₂_{j₂}[e]} (v₁_{j₁} ∘ v₂_{j₂}) / Σ_{j₁, j₂} e^{…}
// The paper defines it without a scale (s = 1, the default here); the paper is about its
// near-linear approximation for bounded entries — this is the exact O(T·S₁·S₂·D) computation for
// modest lengths. Computed as, for each j₁, ordinary attention of the query q_i ∘ k₁_{j₁} over
// (K₂, V₂) with its lse (the tiled kernel, the library's default instantiation, in chunks of j₁ so
// that the expanded queries stay within kTensorChunkRows rows), then
//   o_i = Σ_{j₁} e^{lse_{i,j₁} − L_i} v₁_{j₁} ∘ o_{i,j₁},   L_i = log Σ_{j₁} e^{lse_{i,j₁}}
// merged in double (exact: the j₁ slices are disjoint key sets, conventions §5.4). No authors' code
// (a theory paper). Not causal (the paper's form), no varlen, no other masks or modifiers.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/softmax/flash.hpp"

namespace polyattn::softmax {

/// q [B,T,HQ,D]; k1 [B,S1,HKV,D], v1 [B,S1,HKV,Dv]; k2 [B,S2,HKV,D], v2 [B,S2,HKV,Dv].
struct TensorAttentionInputs {
  ElementView<4> q, k1, v1, k2, v2;
  std::optional<double> scale;  // s; default 1 (the paper's definition)
};

/// Expanded query rows (q_i ∘ k₁_{j₁}) per kernel call, over all batch rows and heads.
inline constexpr index_t kTensorChunkRows = index_t{1} << 16;

namespace detail {
struct TensorDims {
  SoftmaxDims one, two;  // (q, k1, v1) and (q, k2, v2)
  double scale = 1.0;
};
inline TensorDims validate_tensor(const TensorAttentionInputs& in) {
  TensorDims t;
  // The pairs' errors name k1 / v1 and k2 / v2.
  const auto pair = [&in](const ElementView<4>& k, const ElementView<4>& v, const char* kn,
                          const char* vn) {
    try {
      return validate(SoftmaxInputs{.q = in.q, .k = k, .v = v}, SoftmaxOptions{});
    } catch (const Error& e) {
      const std::string a = e.argument();
      if (a != "k" && a != "v") throw;
      const std::string w = e.what();
      const std::size_t at = w.find("': ");
      throw Error(a == "k" ? kn : vn, at == std::string::npos ? w : w.substr(at + 3));
    }
  };
  t.one = pair(in.k1, in.v1, "k1", "v1");
  t.two = pair(in.k2, in.v2, "k2", "v2");
  if (t.one.Dv != t.two.Dv)
    throw Error("v2", "value dim must equal v1's (" + std::to_string(t.one.Dv) + "), got " +
                          std::to_string(t.two.Dv));
  if (in.scale && !(std::isfinite(*in.scale) && *in.scale > 0.0))
    throw Error("scale", "must be finite and > 0");
  t.scale = in.scale.value_or(1.0);
  return t;
}
}  // namespace detail

/// Tensor attention (see the header comment). o [B,T,HQ,Dv].
/// @throws polyattn::Error ("q", "k1", "v1", "k2", "v2", "scale", "o"), before
///         anything is written
template <Executor E = Serial>
void tensor_attention(const TensorAttentionInputs& in, View4<float> o, const E& exec = E{}) {
  const detail::TensorDims t = detail::validate_tensor(in);
  const SoftmaxDims& d = t.one;
  validate_output(d, o);
  softmax_writes_disjoint(SoftmaxInputs{.q = in.q, .k = in.k1, .v = in.v1},
                          {memory::region("o", o)});
  softmax_writes_disjoint(SoftmaxInputs{.q = in.q, .k = in.k2, .v = in.v2},
                          {memory::region("o", o)});
  const index_t B = d.B, T = d.T, HQ = d.HQ, D = d.D, Dv = d.Dv, S1 = d.S;
  const std::size_t rows = static_cast<std::size_t>(B * T * HQ);
  // Running merge per (b, i, h): max M, sum Z, accumulator [Dv] (double).
  std::vector<double> M(rows, -INFINITY), Z(rows, 0.0), acc(rows * static_cast<std::size_t>(Dv));
  const index_t per = std::max<index_t>(1, kTensorChunkRows / std::max<index_t>(1, B * T));
  std::vector<float> qx, ox, lx;
  for (index_t a = 0; a < S1; a += per) {
    const index_t c = std::min(per, S1 - a);
    // Expanded queries: row i·c + t of batch row b, head h: q_i[h] ∘ k₁_{a+t}[h/group].
    qx.assign(static_cast<std::size_t>(B * T * c * HQ * D), 0.f);
    ox.assign(static_cast<std::size_t>(B * T * c * HQ * Dv), 0.f);
    lx.assign(static_cast<std::size_t>(B * T * c * HQ), 0.f);
    exec.parallel_for(B * T * c, [&](std::int64_t item) {
      const index_t b = item / (T * c), i = (item / c) % T, u = item % c;
      for (index_t h = 0; h < HQ; ++h) {
        float* dst = qx.data() + (item * HQ + h) * D;
        for (index_t e = 0; e < D; ++e)
          dst[e] = static_cast<float>(in.q(b, i, h, e)) *
                   static_cast<float>(in.k1(b, a + u, h / d.group, e));
      }
    });
    SoftmaxOptions so;
    so.scale = t.scale;
    flash_attention(
        SoftmaxInputs{.q = bthd<const float>(qx.data(), B, T * c, HQ, D), .k = in.k2, .v = in.v2},
        so,
        FlashOutputs{bthd(ox.data(), B, T * c, HQ, Dv),
                     View3<float>::contiguous(lx.data(), {B, T * c, HQ}),
                     {}},
        exec);
    exec.parallel_for(B * T, [&](std::int64_t bi) {
      const index_t b = bi / T;
      for (index_t h = 0; h < HQ; ++h) {
        const std::size_t row = static_cast<std::size_t>(bi * HQ + h);
        double* ac = acc.data() + row * static_cast<std::size_t>(Dv);
        for (index_t u = 0; u < c; ++u) {
          const std::size_t x = static_cast<std::size_t>((bi * c + u) * HQ + h);
          const double l = lx[x];
          if (l == -INFINITY) continue;
          if (l > M[row]) {  // rescale what is there
            const double f = M[row] == -INFINITY ? 0.0 : std::exp(M[row] - l);
            Z[row] *= f;
            for (index_t e = 0; e < Dv; ++e) ac[e] *= f;
            M[row] = l;
          }
          const double w = std::exp(l - M[row]);
          Z[row] += w;
          const float* ou = ox.data() + x * static_cast<std::size_t>(Dv);
          for (index_t e = 0; e < Dv; ++e)
            ac[e] += w * static_cast<double>(in.v1(b, a + u, h / d.group, e)) *
                     static_cast<double>(ou[e]);
        }
      }
    });
  }
  exec.parallel_for(B * T, [&](std::int64_t bi) {
    const index_t b = bi / T, i = bi % T;
    for (index_t h = 0; h < HQ; ++h) {
      const std::size_t row = static_cast<std::size_t>(bi * HQ + h);
      for (index_t e = 0; e < Dv; ++e)
        o(b, i, h, e) =
            Z[row] > 0.0 ? static_cast<float>(acc[row * static_cast<std::size_t>(Dv) + e] / Z[row])
                         : 0.f;
    }
  });
}

}  // namespace polyattn::softmax
