// polyattn/softmax/clear.hpp — CLEAR's circular local window (Liu et al. 2024, "CLEAR:
// Conv-Like Linearization Revs Pre-Trained Diffusion Transformers Up", §3: each image query
// attends to the image keys inside a circle of radius r around it, and text tokens attend /
// are attended globally; authors' flex-attention mask: github.com/Huage001/CLEAR,
// attention_processor.py, init_local_mask_flex), as a token-exact mask policy of the tiled
// softmax kernel (fusion.hpp). sparse::Neighborhood2DSelector gives a block-level superset of a
// square neighbourhood; this mask is the exact circle.
//
// Sequence layout: L text tokens first, then an H × W image grid in row-major order (S = L + H·W
// keys). With key position x ≥ L at (y, x') = ((x − L) div W, (x − L) mod W), query position p
// sees key j when
//
//   p < L  ∨  j < L  ∨  (y_p − y_j)² + (x_p − x_j)² < r²        (strict, as the authors' mask)
//
// Query row r sits at p = r + S − T (T = S for a DiT block; T < S queries the last positions).
// Tiles whose query and key boxes on the grid are at least r apart are skipped, tiles wholly
// inside the circle need no per-element mask.
//
// Kernels: FlashKernelFor<Fusion<ClearMask>>, listed in POLYATTN_CLEAR_KERNELS.
#pragma once

#include <algorithm>
#include <string>

#include "polyattn/args/softmax.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/fusion.hpp"

namespace polyattn::softmax {

/// CLEAR's circular window over a text prefix and an image grid (see the header comment).
struct ClearMask {
  index_t text = 0;    // L ≥ 0 text tokens before the image
  index_t height = 0;  // H > 0 grid rows
  index_t width = 0;   // W > 0 grid columns
  double radius = 0;   // r > 0: keys strictly inside the circle

  index_t keys() const noexcept { return text + height * width; }

  /// The mask with its constants resolved (what the kernel calls).
  struct Bound {
    index_t text, width;
    double inv_width;  // 1 / W: the grid row of a position without an integer division
    double r2;         // r²
    /// Grid row of image position g ≥ 0: ⌊(g + ½)/W⌋, exact while g < 2^40.
    template <simd::SimdArch A = simd::scalar_arch>
    index_t row_of(index_t g) const noexcept {
      return static_cast<index_t>((static_cast<double>(g) + 0.5) * inv_width);
    }
    template <simd::SimdArch A = simd::scalar_arch>
    bool visible(index_t, index_t p, index_t j) const noexcept {
      if (p < text || j < text) return true;
      const index_t gp = p - text, gj = j - text;
      const index_t yp = row_of<A>(gp), yj = row_of<A>(gj);
      const index_t dy = yp - yj, dx = (gp - yp * width) - (gj - yj * width);
      return static_cast<double>(dy * dy + dx * dx) < r2;
    }
    template <simd::SimdArch A = simd::scalar_arch>
    TileClass classify(RowRange rows, KeyRange keys) const noexcept {
      const index_t p0 = rows.p_first(), p1 = rows.p_last();
      if (p1 < text || keys.j1 <= text) return TileClass::Full;  // text rows / text keys only
      if (p0 < text || keys.j0 < text) return TileClass::Partial;
      // Bounding boxes on the grid: rows [y0, y1], columns [x0, x1] (whole width over >1 row).
      struct Box {
        index_t y0, y1, x0, x1;
      };
      const auto box = [&](index_t a, index_t b) {  // positions a ≤ b
        const index_t y0 = row_of<A>(a - text), y1 = row_of<A>(b - text);
        if (y0 == y1) return Box{y0, y1, a - text - y0 * width, b - text - y1 * width};
        return Box{y0, y1, 0, width - 1};
      };
      const Box q = box(p0, p1), k = box(keys.j0, keys.j1 - 1);
      const auto gap = [](index_t a0, index_t a1, index_t b0, index_t b1) {
        return std::max<index_t>({index_t{0}, b0 - a1, a0 - b1});
      };
      const auto span = [](index_t a0, index_t a1, index_t b0, index_t b1) {
        return std::max(a1 - b0, b1 - a0);
      };
      const index_t gy = gap(q.y0, q.y1, k.y0, k.y1), gx = gap(q.x0, q.x1, k.x0, k.x1);
      if (static_cast<double>(gy * gy + gx * gx) >= r2) return TileClass::Skip;
      const index_t sy = span(q.y0, q.y1, k.y0, k.y1), sx = span(q.x0, q.x1, k.x0, k.x1);
      if (static_cast<double>(sy * sy + sx * sx) < r2) return TileClass::Full;
      return TileClass::Partial;
    }
  };
  template <simd::SimdArch A = simd::scalar_arch>
  Bound bind(const HeadContext&) const noexcept {
    return {text, width, 1.0 / static_cast<double>(width), radius * radius};
  }

  /// The mask's parameters against a call (run by flash_attention before anything is written):
  /// S = L + H·W keys per sequence (packed: a multiple of it with cu_seqlens).
  void check(const SoftmaxDims& d) const {
    if (text < 0) throw Error("text", "must be >= 0, got " + std::to_string(text));
    if (height <= 0) throw Error("height", "must be positive, got " + std::to_string(height));
    if (width <= 0) throw Error("width", "must be positive, got " + std::to_string(width));
    if (!(radius > 0.0) || radius > 1e9)
      throw Error("radius", "must be positive and finite, got " + std::to_string(radius));
    const bool fits = d.varlen ? d.S % keys() == 0 : d.S == keys();
    if (!fits)
      throw Error("k", "expected " + std::to_string(keys()) + " keys per sequence (" +
                           std::to_string(text) + " text + " + std::to_string(height) + "x" +
                           std::to_string(width) + " image), got S = " + std::to_string(d.S));
  }
};
static_assert(FusionMask<ClearMask>);

/// CLEAR attention: flash_attention with ClearMask composed with the options' set. With
/// cu_seqlens every sequence must hold exactly L + H·W tokens.
/// @throws polyattn::Error naming the bad argument, before anything is written
template <Executor E = Serial>
void clear_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, const ClearMask& mask,
                     const FlashOutputs& out, const E& exec = E{}) {
  const SoftmaxDims d = validate(in, opt);
  mask.check(d);
  if (d.varlen)
    for (std::size_t n = 0; n + 1 < in.cu_seqlens.size(); ++n)
      if (in.cu_seqlens[n + 1] - in.cu_seqlens[n] != mask.keys())
        throw Error("cu_seqlens", "sequence " + std::to_string(n) + " holds " +
                                      std::to_string(in.cu_seqlens[n + 1] - in.cu_seqlens[n]) +
                                      " tokens; CLEAR's layout has " + std::to_string(mask.keys()));
  flash_attention(in, opt, with_mask(mask), out, exec);
}

/// clear_attention with the output o only.
template <Executor E = Serial>
void clear_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, const ClearMask& mask,
                     View4<float> o, const E& exec = E{}) {
  clear_attention(in, opt, mask, FlashOutputs{o, {}, {}}, exec);
}

}  // namespace polyattn::softmax

// The kernel of a project's per-ISA units for CLEAR (see the header comment).
#define POLYATTN_CLEAR_KERNELS(X)        \
  X(::polyattn::softmax::FlashKernelFor< \
      ::polyattn::softmax::Fusion<::polyattn::softmax::ClearMask>>)
