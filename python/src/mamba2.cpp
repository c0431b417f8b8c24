// python/src/mamba2.cpp — Mamba2 (SSD) for the _polyattn extension: mamba_ssm's
// mamba_chunk_scan_combined (prefill, Chunked<64>) and selective_state_update (decode, the
// operator's step) on polyattn::Mamba2 (linear/mamba2.hpp), the time step (dt_bias, softplus,
// dt_limit) computed in-kernel. See common.hpp for the private ABI; python/polyattn/_mamba2.py
// holds the public functions.
//
// The D skip and the z gate are one pass here after the scan, over (b, t) rows on the executor:
//   y = (y + D[h,p]·x) · silu(z),  D [H] (a stride-0 view [H,P]) or [H,P]
// (Mamba2's own skip is a serial pass and takes D [H] only; mamba_ssm also accepts D [H,P]).
// Everything, z and D included, is checked before the kernel runs: nothing is written on error.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>

#include "common.hpp"
#include "polyattn/linear/mamba2.hpp"

namespace polyattn::py {
namespace {

// D [H] or [H,P] as an [H,P] view (stride 0 along P for [H]); absent when not given.
TensorView<const float, 2> skip_weights(const OptIn& D, index_t H, index_t P) {
  if (!D) return {};
  require_f32(*D, "D");
  if (D->ndim() == 1) {
    const auto d = f32_in<1>(D, "D");
    if (d.size(0) != H)
      throw nb::value_error(arg_msg("D", "expected shape [H] or [H,P] with H = " +
                                             std::to_string(H) + ", P = " + std::to_string(P) +
                                             ", got [" + std::to_string(d.size(0)) + "]")
                                .c_str());
    return {d.data(), {H, P}, {d.stride(0), 0}};
  }
  const auto d = f32_in<2>(D, "D");
  if (d.size(0) != H || d.size(1) != P)
    throw nb::value_error(arg_msg("D", "expected shape [H] or [H,P] with H = " + std::to_string(H) +
                                           ", P = " + std::to_string(P) + ", got [" +
                                           std::to_string(d.size(0)) + "," +
                                           std::to_string(d.size(1)) + "]")
                              .c_str());
  return d;
}

// exp(x), branch-free so that a loop of it vectorises at -O3 on the baseline ISA (std::exp is a
// scalar call): Cody-Waite reduction x = n·ln2 + r, Cephes' degree-6 expf polynomial (about
// 1 ulp), 2^n from the exponent bits; x clamped to [-87, 88] (silu's sigmoid saturates well
// before: its absolute error there is below 1e-36). NaN propagates.
inline float exp_vec(float x) noexcept {
  x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  const float n = (x * 1.44269504f + 12582912.f) - 12582912.f;  // round to nearest
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  return p * std::bit_cast<float>((static_cast<std::int32_t>(n) + 127) << 23);
}

// y = (y + D·x) · silu(z) over [B,T,H,P], one (b, t) row per work item. Measured (B1 T1024 H32
// P64, 2 threads): the gate with std::exp on 4-index TensorView addressing cost 2.5× numpy's
// y·silu(z); gathered into a block and computed with exp_vec it is below numpy's, and decode
// needs no extra Python-side passes.
template <class E>
void skip_and_gate(const View4<const float>& x, const TensorView<const float, 2>& D,
                   const View4<const float>& z, const View4<float>& y, const E& exec) {
  if (D.absent() && z.absent()) return;
  const auto& s = x.shape();
  const index_t T = s[1], H = s[2], P = s[3];
  const index_t ys = y.stride(3), xs = x.stride(3), Ds = D.absent() ? 0 : D.stride(1),
                zs = z.absent() ? 0 : z.stride(3);
  constexpr index_t kBlock = 64;
  exec.parallel_for(s[0] * T, [&](std::int64_t i) {
    const index_t b = i / T, t = i % T;
    float gate[kBlock];
    for (index_t h = 0; h < H; ++h) {
      float* yp = y.ptr(b, t, h, 0);
      if (!D.absent()) {
        const float* xp = x.ptr(b, t, h, 0);
        const float* dp = D.ptr(h, 0);
        for (index_t p = 0; p < P; ++p) yp[p * ys] += dp[p * Ds] * xp[p * xs];
      }
      if (z.absent()) continue;
      const float* zp = z.ptr(b, t, h, 0);
      for (index_t p0 = 0; p0 < P; p0 += kBlock) {
        const index_t n = std::min(kBlock, P - p0);
        for (index_t j = 0; j < n; ++j) gate[j] = zp[(p0 + j) * zs];
        for (index_t j = 0; j < n; ++j) gate[j] = gate[j] / (1.f + exp_vec(-gate[j]));
        for (index_t j = 0; j < n; ++j) yp[(p0 + j) * ys] *= gate[j];
      }
    }
  });
}

// step == false: prefill (initial_state / final_state optional, cu_seqlens allowed);
// step == true: decode, `state` [B,H,P,N] (or a pool with state_indices) updated in place.
void mamba2(const In& x, const In& dt, const In& A, const In& B, const In& C, const OptIn& D,
            const OptIn& z, const OptIn& dt_bias, const OptIn& initial_state,
            const OptIn& cu_seqlens, const OptIn& state_indices, const Out& y, const OptOut& state,
            bool step, bool dt_softplus, double dt_min, double dt_max, int threads) {
  Mamba2Inputs in;
  in.x = f32_in<4>(OptIn(x), "x");
  in.dt = f32_in<3>(OptIn(dt), "dt");
  in.A = f32_in<1>(OptIn(A), "A");
  in.Bm = f32_in<4>(OptIn(B), "B");
  in.Cm = f32_in<4>(OptIn(C), "C");
  in.dt_bias = f32_in<1>(dt_bias, "dt_bias");
  in.initial_state = f32_in<4>(initial_state, "initial_states");
  in.cu_seqlens = i64_in(cu_seqlens, "cu_seqlens");
  in.state_indices = i64_in(state_indices, "state_batch_indices");
  const auto yv = f32_out<4>(OptOut(y), "y");
  const auto st = f32_out<4>(state, step ? "state" : "final_states");
  const index_t H = in.x.size(2), P = in.x.size(3);
  const auto Dv = skip_weights(D, H, P);
  const auto zv = f32_in<4>(z, "z");
  if (!zv.absent() && zv.shape() != in.x.shape())
    throw nb::value_error(arg_msg("z", "expected the shape of x [B,T,H,P]").c_str());
  if (!Dv.absent() || !zv.absent())  // y is read back: it must not overlap the inputs
    check::writes_disjoint({memory::region("y", yv)},
                           {memory::region("x", in.x), memory::region("z", zv)});
  const Mamba2 op(gates::TimeStep{.softplus = dt_softplus,
                                  .min = static_cast<float>(dt_min),
                                  .max = static_cast<float>(dt_max)});
  const ModuleExecutor exec(threads);
  nb::gil_scoped_release release;
  if (step)
    op.step(in, st, yv, exec);
  else
    op.forward<Chunked<64>>(in, {.y = yv, .final_state = st}, exec);
  skip_and_gate(in.x, Dv, zv, yv, exec);
}

}  // namespace

void bind_mamba2(nb::module_& m) {
  using nb::arg;
  m.def("mamba2", &mamba2, arg("x"), arg("dt"), arg("A"), arg("B"), arg("C"), arg("D").none(),
        arg("z").none(), arg("dt_bias").none(), arg("initial_state").none(),
        arg("cu_seqlens").none(), arg("state_indices").none(), arg("y"), arg("state").none(),
        arg("step"), arg("dt_softplus"), arg("dt_min"), arg("dt_max"), arg("threads"));
}

}  // namespace polyattn::py
