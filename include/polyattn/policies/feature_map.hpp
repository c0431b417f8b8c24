// polyattn/policies/feature_map.hpp — feature maps φ applied to q and k before the linear
// recurrence (docs/conventions.md §4). A map may change the key dimension: d in, out_dim(d) out.
//
// Formulas (x ∈ R^d; relu(t) = max(t, 0), propagating NaN; output layouts are exact):
//   Identity      φ(x) = x                                              out_dim = d
//   EluPlusOne    φ(x) = elu(x) + 1 = x + 1 (x > 0), e^x (x ≤ 0)        out_dim = d
//   Relu          φ(x) = relu(x)                                        out_dim = d
//   SquaredRelu   φ(x) = relu(x)²                                       out_dim = d
//   Taylor2       φ(x) = [1, x_0..x_{d-1}, x_i²/√2 (i = 0..d-1), x_i·x_j (i < j, row-major)]
//                 so that φ(q)·φ(k) = 1 + q·k + (q·k)²/2 exactly, because
//                 (q·k)²/2 = Σ_i q_i²k_i²/2 + Σ_{i<j} q_i q_j k_i k_j.
//                 out_dim = 1 + d + d(d+1)/2. The quadratic block uses fla's layout (diagonal
//                 first, then the strict upper triangle in torch.triu_indices(d, d, 1) order).
//   Taylor2Fla    fla's TaylorFeatureMap (fla/modules/feature_map.py), which scales inside the
//                 map with r2 = √2, rd = √d, rrd = √rd:
//                   φ(x) = [1, x/rrd, x_i²/(rd·r2), x_i·x_j/rd (i < j)] = Taylor2(x / d^¼)
//                 hence φ(q)·φ(k) = 1 + s/√d + s²/(2d), s = q·k: the Taylor-2 score of the
//                 default-scaled q (what fla's parallel_based computes with scale = d^-½).
//                 Same out_dim and layout as Taylor2. Use with scale = 1 in the operator, as
//                 fla's BasedLinearAttention does in its chunk modes.
//   Hedgehog      caller weights W [d_half, d] row-major and bias b [d_half] (held by reference,
//                 not owned), gain γ (default 1):
//                   z = γ·(W x + b),  φ(x) = softmax([z, −z])  (one softmax over all 2·d_half)
//                 out_dim = 2·d_half (first half from +z, second from −z). docs/conventions.md §4
//                 states γ = 1; fla's HedgehogFeatureMap uses γ = 2 (y = 2·layer(x)) with a square
//                 nn.Linear(d, d) layer — use Hedgehog::fla(W, b) for fla's numbers.
//                 (LoLCATs' "softmax_dim" instead takes two separate softmaxes of z and −z and
//                 clamps; that variant is not provided here.)
//   DPFP(ν)       Schlag et al. 2021 / fla's DPFPFeatureMap: x' = [relu(x), relu(−x)] ∈ R^{2d},
//                 φ = concat_{j=1..ν} x' ⊙ roll(x', j), where roll is torch.roll(shifts=j):
//                   φ[(j−1)·2d + i] = x'[i] · x'[(i − j) mod 2d]
//                 out_dim = 2dν. Any ν ≥ 1 (ν ≥ 2d wraps around, as torch.roll does).
//   Performer     FAVOR+ positive random features, caller projection P [m, d] row-major (held by
//                 reference):  φ(x) = exp(P x − |x|²/2) / √m,   out_dim = m,
//                 so E[φ(q)·φ(k)] = exp(q·k) for rows of P drawn from N(0, I). Upstream fla has
//                 no Performer map; PerformerOptions reproduce the common reference code
//                 (google-research performer `softmax_kernel_transformation`, zoology
//                 PerformerFeatureMap):
//                   normalize_input   x ← x · d^-¼ first ("data_normalizer"), so the estimate
//                                     targets exp(q·k/√d), softmax's kernel at scale d^-½
//                   subtract_row_max  exp(P x − max_r (P x)_r − |x|²/2): a per-row constant
//                                     factor, so only for queries (it cancels under the Sum
//                                     normaliser); google-research does this for queries and
//                                     subtracts one max over all keys and features for keys,
//                                     which a per-row map cannot express
//                   eps               φ = (exp(…) + eps) / √m  (google-research uses 1e-6)
//                 Defaults give the exact formula.
//
// The FeatureMap concept: m.out_dim(d) → index_t (throws polyattn::Error naming the argument
// when d is not supported, e.g. Hedgehog weights of another size); m.apply(x, d, out) writes
// out_dim(d) floats from d unit-stride floats at x (out must not overlap x; call only with a d
// that out_dim accepted — apply does not check); static constexpr bool is_identity (true only for
// Identity, so operators can skip the copy); m.name() → const char*.
//
// apply_rows(map, x [B,T,H,D], out [B,T,H,out_dim(D)]) maps every row of any strided views (x
// fp32, bf16 or fp16, widened exactly; out fp32).
//
// Numerics: every map evaluates its formula in double and rounds each output once to float, so
// results are within about one float rounding of the exact value. These maps run once per row
// (O(d), O(d²) or O(m·d) work), small against the recurrence, so clarity wins over SIMD here.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "polyattn/core/element_view.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/overlap.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"

namespace polyattn {

template <class M>
concept FeatureMap = requires(const M& m, const float* x, index_t d, float* out) {
  { m.out_dim(d) } -> std::same_as<index_t>;
  m.apply(x, d, out);
  { m.name() } -> std::convertible_to<const char*>;
  // A compile-time constant bool.
  requires std::same_as<std::remove_cv_t<decltype(M::is_identity)>, bool>;
  typename std::bool_constant<M::is_identity>;
};

namespace detail::fmap {

// relu that propagates NaN (as torch does): NaN < 0 is false, so NaN is returned.
inline double relu(double t) noexcept {
  return t < 0.0 ? 0.0 : t;
}

inline void require_dim(index_t d) {
  if (d < 0) throw Error("x", "feature dimension must be non-negative, got " + std::to_string(d));
}

// [1, s·x, s²·x_i²/√2, s²·x_i·x_j (i < j)] — Taylor2 for s = 1, fla's TaylorFeatureMap for
// s = d^-¼ (written as fla writes it: x/rrd, x²/(rd·r2), x_i·x_j/rd).
inline void taylor2(const float* x, index_t d, bool fla_scaling, float* out) noexcept {
  const double r2 = std::sqrt(2.0);
  const double rd = fla_scaling ? std::sqrt(static_cast<double>(d)) : 1.0;
  const double rrd = fla_scaling ? std::sqrt(rd) : 1.0;
  float* o = out;
  *o++ = 1.0f;
  for (index_t i = 0; i < d; ++i) *o++ = static_cast<float>(static_cast<double>(x[i]) / rrd);
  for (index_t i = 0; i < d; ++i) {
    const double xi = x[i];
    *o++ = static_cast<float>(xi * xi / (rd * r2));
  }
  for (index_t i = 0; i < d; ++i) {
    const double xi = x[i];
    for (index_t j = i + 1; j < d; ++j)
      *o++ = static_cast<float>(xi * static_cast<double>(x[j]) / rd);
  }
}

// Per-row double scratch: on the stack up to kInline values, else on the heap.
class Scratch {
 public:
  static constexpr std::size_t kInline = 512;
  explicit Scratch(index_t n) {
    if (static_cast<std::size_t>(n) > kInline) heap_.resize(static_cast<std::size_t>(n));
    data_ = heap_.empty() ? inline_ : heap_.data();
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  double& operator[](index_t i) noexcept { return data_[i]; }

 private:
  double inline_[kInline];
  std::vector<double> heap_;
  double* data_;
};

inline index_t taylor2_out_dim(index_t d) {
  require_dim(d);
  return 1 + d + d * (d + 1) / 2;
}

}  // namespace detail::fmap

// ---- element-wise maps ------------------------------------------------------------------------

struct Identity {
  static constexpr bool is_identity = true;
  static constexpr const char* name() noexcept { return "identity"; }
  index_t out_dim(index_t d) const {
    detail::fmap::require_dim(d);
    return d;
  }
  void apply(const float* x, index_t d, float* out) const noexcept {
    if (d > 0) std::memcpy(out, x, static_cast<std::size_t>(d) * sizeof(float));
  }
};

// elu(x) + 1 with elu's alpha = 1: x + 1 for x > 0, e^x otherwise (NaN stays NaN).
struct EluPlusOne {
  static constexpr bool is_identity = false;
  static constexpr const char* name() noexcept { return "elu_plus_one"; }
  index_t out_dim(index_t d) const {
    detail::fmap::require_dim(d);
    return d;
  }
  void apply(const float* x, index_t d, float* out) const noexcept {
    for (index_t i = 0; i < d; ++i) {
      const double t = x[i];
      out[i] = static_cast<float>(t > 0.0 ? t + 1.0 : std::exp(t));
    }
  }
};

struct Relu {
  static constexpr bool is_identity = false;
  static constexpr const char* name() noexcept { return "relu"; }
  index_t out_dim(index_t d) const {
    detail::fmap::require_dim(d);
    return d;
  }
  void apply(const float* x, index_t d, float* out) const noexcept {
    for (index_t i = 0; i < d; ++i) out[i] = static_cast<float>(detail::fmap::relu(x[i]));
  }
};

// relu(x)² (fla's sqrelu).
struct SquaredRelu {
  static constexpr bool is_identity = false;
  static constexpr const char* name() noexcept { return "squared_relu"; }
  index_t out_dim(index_t d) const {
    detail::fmap::require_dim(d);
    return d;
  }
  void apply(const float* x, index_t d, float* out) const noexcept {
    for (index_t i = 0; i < d; ++i) {
      const double r = detail::fmap::relu(x[i]);
      out[i] = static_cast<float>(r * r);
    }
  }
};

// ---- Taylor (Based) ---------------------------------------------------------------------------

// Exact second-order Taylor map: φ(q)·φ(k) = 1 + q·k + (q·k)²/2 (docs/conventions.md §4).
struct Taylor2 {
  static constexpr bool is_identity = false;
  static constexpr const char* name() noexcept { return "taylor2"; }
  index_t out_dim(index_t d) const { return detail::fmap::taylor2_out_dim(d); }
  void apply(const float* x, index_t d, float* out) const noexcept {
    detail::fmap::taylor2(x, d, /*fla_scaling=*/false, out);
  }
};

// fla's TaylorFeatureMap: Taylor2(x·d^-¼), φ(q)·φ(k) = 1 + s/√d + s²/(2d).
struct Taylor2Fla {
  static constexpr bool is_identity = false;
  static constexpr const char* name() noexcept { return "taylor2_fla"; }
  index_t out_dim(index_t d) const { return detail::fmap::taylor2_out_dim(d); }
  void apply(const float* x, index_t d, float* out) const noexcept {
    detail::fmap::taylor2(x, d, /*fla_scaling=*/true, out);
  }
};

// ---- Hedgehog ---------------------------------------------------------------------------------

// φ(x) = softmax([z, −z]), z = gain·(W x + b); W [d_half, d] row-major, b [d_half]. The spans
// must outlive the map (it does not copy them).
class Hedgehog {
 public:
  static constexpr bool is_identity = false;
  // fla's HedgehogFeatureMap multiplies the linear layer's output by 2 before the softmax.
  static constexpr float kFlaGain = 2.0f;

  // d_half = bias.size() (must be > 0; pass zeros for no bias); weight.size() must be a
  // multiple of d_half (the input dimension d = weight.size() / d_half is checked by out_dim).
  Hedgehog(std::span<const float> weight, std::span<const float> bias, float gain = 1.0f)
      : weight_(weight), bias_(bias), gain_(gain) {
    if (bias.empty())
      throw Error("bias", "must have d_half > 0 entries (pass zeros for a bias-free layer)");
    const auto dh = bias.size();
    if (weight.size() % dh != 0)
      throw Error("weight", "has " + std::to_string(weight.size()) +
                                " elements, not a multiple of d_half = " + std::to_string(dh) +
                                " (bias size); expected [d_half, d] row-major");
    if (weight.data() == nullptr && !weight.empty()) throw Error("weight", "data pointer is null");
    if (bias.data() == nullptr) throw Error("bias", "data pointer is null");
    if (!std::isfinite(gain)) throw Error("gain", "must be finite, got " + std::to_string(gain));
  }

  // fla's numbers: HedgehogFeatureMap(head_dim) = Linear(d, d) then softmax([2y, −2y]).
  static Hedgehog fla(std::span<const float> weight, std::span<const float> bias) {
    return Hedgehog(weight, bias, kFlaGain);
  }

  static constexpr const char* name() noexcept { return "hedgehog"; }
  index_t d_half() const noexcept { return static_cast<index_t>(bias_.size()); }
  float gain() const noexcept { return gain_; }

  index_t out_dim(index_t d) const {
    detail::fmap::require_dim(d);
    const index_t dh = d_half();
    if (static_cast<index_t>(weight_.size()) != dh * d)
      throw Error("weight", "expected [d_half, d] = [" + std::to_string(dh) + "," +
                                std::to_string(d) + "] (" + std::to_string(dh * d) +
                                " elements) for input dimension d = " + std::to_string(d) +
                                ", got " + std::to_string(weight_.size()) + " elements");
    return 2 * dh;
  }

  // Not noexcept: d_half > 512 uses a heap scratch.
  void apply(const float* x, index_t d, float* out) const {
    const index_t dh = d_half();
    // z_o in double, then the max of |z| (NaN-propagating) for a stable softmax.
    double zmax = -std::numeric_limits<double>::infinity();
    bool nan = false;
    detail::fmap::Scratch z(dh);
    for (index_t o = 0; o < dh; ++o) {
      const float* w = weight_.data() + o * d;
      double acc = bias_[static_cast<std::size_t>(o)];
      for (index_t i = 0; i < d; ++i) acc += static_cast<double>(w[i]) * static_cast<double>(x[i]);
      acc *= static_cast<double>(gain_);
      z[o] = acc;
      if (std::isnan(acc)) nan = true;
      if (std::fabs(acc) > zmax) zmax = std::fabs(acc);
    }
    if (nan) zmax = std::numeric_limits<double>::quiet_NaN();
    double sum = 0.0;
    for (index_t o = 0; o < dh; ++o) {
      const double zo = z[o];
      sum += std::exp(zo - zmax) + std::exp(-zo - zmax);
    }
    const double inv = 1.0 / sum;
    for (index_t o = 0; o < dh; ++o) {
      const double zo = z[o];
      out[o] = static_cast<float>(std::exp(zo - zmax) * inv);
      out[dh + o] = static_cast<float>(std::exp(-zo - zmax) * inv);
    }
  }

 private:
  std::span<const float> weight_;
  std::span<const float> bias_;
  float gain_;
};

// ---- DPFP -------------------------------------------------------------------------------------

// Deterministic parameter-free projection of order ν (fla's DPFPFeatureMap, default ν = 4).
class DPFP {
 public:
  static constexpr bool is_identity = false;

  explicit DPFP(index_t nu = 4) : nu_(nu) {
    if (nu < 1) throw Error("nu", "must be at least 1, got " + std::to_string(nu));
  }

  static constexpr const char* name() noexcept { return "dpfp"; }
  index_t nu() const noexcept { return nu_; }

  index_t out_dim(index_t d) const {
    detail::fmap::require_dim(d);
    return 2 * d * nu_;
  }

  void apply(const float* x, index_t d, float* out) const noexcept {
    const index_t n = 2 * d;
    if (n == 0) return;
    // x'[i] = relu(x[i]) for i < d, relu(−x[i−d]) for d ≤ i < 2d.
    auto xp = [&](index_t i) -> double {
      return i < d ? detail::fmap::relu(x[i]) : detail::fmap::relu(-static_cast<double>(x[i - d]));
    };
    for (index_t j = 1; j <= nu_; ++j) {
      float* o = out + (j - 1) * n;
      const index_t shift = j % n;
      for (index_t i = 0; i < n; ++i) {
        // torch.roll(x', shifts=j)[i] = x'[(i − j) mod 2d]
        const index_t src = i >= shift ? i - shift : i - shift + n;
        o[i] = static_cast<float>(xp(i) * xp(src));
      }
    }
  }

 private:
  index_t nu_;
};

// ---- Performer (FAVOR+) -----------------------------------------------------------------------

struct PerformerOptions {
  bool normalize_input = false;  // x ← x·d^-¼ first (google-research / zoology data_normalizer)
  bool subtract_row_max = false;  // subtract max_r (P x)_r inside exp (queries only; see top)
  float eps = 0.0f;               // φ = (exp(…) + eps)/√m (google-research: 1e-6)
};

// φ(x) = exp(P x − |x|²/2)/√m with caller projection P [m, d] row-major. The span must outlive
// the map (it does not copy it).
class Performer {
 public:
  static constexpr bool is_identity = false;

  // m = num_features > 0; projection.size() must be a multiple of m (d = size / m is checked
  // by out_dim).
  Performer(std::span<const float> projection, index_t num_features, PerformerOptions opt = {})
      : projection_(projection), m_(num_features), opt_(opt) {
    if (num_features <= 0)
      throw Error("num_features", "must be positive, got " + std::to_string(num_features));
    if (projection.size() % static_cast<std::size_t>(num_features) != 0)
      throw Error("projection", "has " + std::to_string(projection.size()) +
                                    " elements, not a multiple of num_features = " +
                                    std::to_string(num_features) + "; expected [m, d] row-major");
    if (projection.data() == nullptr && !projection.empty())
      throw Error("projection", "data pointer is null");
    if (!(opt.eps >= 0.0f) || !std::isfinite(opt.eps))
      throw Error("eps", "must be finite and non-negative, got " + std::to_string(opt.eps));
  }

  static constexpr const char* name() noexcept { return "performer"; }
  index_t num_features() const noexcept { return m_; }
  const PerformerOptions& options() const noexcept { return opt_; }

  index_t out_dim(index_t d) const {
    detail::fmap::require_dim(d);
    if (static_cast<index_t>(projection_.size()) != m_ * d)
      throw Error("projection", "expected [m, d] = [" + std::to_string(m_) + "," +
                                    std::to_string(d) + "] (" + std::to_string(m_ * d) +
                                    " elements) for input dimension d = " + std::to_string(d) +
                                    ", got " + std::to_string(projection_.size()) + " elements");
    return m_;
  }

  // Not noexcept: m > 512 uses a heap scratch.
  void apply(const float* x, index_t d, float* out) const {
    const double s =
        opt_.normalize_input && d > 0 ? 1.0 / std::sqrt(std::sqrt(static_cast<double>(d))) : 1.0;
    double half_sq = 0.0;
    for (index_t i = 0; i < d; ++i) {
      const double xi = s * static_cast<double>(x[i]);
      half_sq += xi * xi;
    }
    half_sq *= 0.5;
    detail::fmap::Scratch proj(m_);
    double pmax = -std::numeric_limits<double>::infinity();
    bool nan = false;
    for (index_t r = 0; r < m_; ++r) {
      const float* p = projection_.data() + r * d;
      double acc = 0.0;
      for (index_t i = 0; i < d; ++i) acc += static_cast<double>(p[i]) * static_cast<double>(x[i]);
      acc *= s;
      proj[r] = acc;
      if (std::isnan(acc)) nan = true;
      if (acc > pmax) pmax = acc;
    }
    if (nan) pmax = std::numeric_limits<double>::quiet_NaN();
    const double shift = half_sq + (opt_.subtract_row_max ? pmax : 0.0);
    const double ratio = 1.0 / std::sqrt(static_cast<double>(m_));
    const double eps = opt_.eps;
    for (index_t r = 0; r < m_; ++r)
      out[r] = static_cast<float>((std::exp(proj[r] - shift) + eps) * ratio);
  }

 private:
  std::span<const float> projection_;
  index_t m_;
  PerformerOptions opt_;
};

// ---- apply_rows -------------------------------------------------------------------------------

// out[b,t,h,:] = φ(x[b,t,h,:]) for every row. Any non-negative strides on both views (a row
// whose inner stride is not 1 goes through a small contiguous buffer); x may be fp32, bf16 or
// fp16 (a bf16 / fp16 row is widened exactly into that buffer first), out is fp32. Validates
// everything before writing: x and out well formed, out shape [B,T,H,map.out_dim(D)], out not
// overlapping x; errors name "x" / "out" (or the map's own argument, e.g. "weight").
template <FeatureMap Map>
void apply_rows(const Map& map, ElementView<4> x, TensorView<float, 4> out) {
  check::well_formed("x", x);
  check::well_formed("out", out);
  const index_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  const index_t F = map.out_dim(D);
  check::shape_is("out", out, {B, T, H, F}, "[B, T, H, out_dim(D)] from x");
  check::writes_disjoint({memory::region("out", out)}, {memory::region("x", x)});
  if (out.numel() == 0) return;

  const bool x_unit = x.is<float>() && (x.stride(3) == 1 || D <= 1);
  const bool o_unit = out.stride(3) == 1 || F <= 1;
  std::vector<float> xbuf(x_unit ? 0 : static_cast<std::size_t>(D));
  std::vector<float> obuf(o_unit ? 0 : static_cast<std::size_t>(F));
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h) {
        const float* src = nullptr;
        if (x_unit) {
          src = x.as<float>().ptr(b, t, h, 0);
        } else {
          x.visit([&](auto xv) {
            for (index_t i = 0; i < D; ++i)
              xbuf[static_cast<std::size_t>(i)] = to_float(xv(b, t, h, i));
          });
          src = xbuf.data();
        }
        float* dst = o_unit ? out.ptr(b, t, h, 0) : obuf.data();
        map.apply(src, D, dst);
        if (!o_unit) {
          float* o = out.ptr(b, t, h, 0);
          for (index_t i = 0; i < F; ++i) o[i * out.stride(3)] = obuf[static_cast<std::size_t>(i)];
        }
      }
}

}  // namespace polyattn
