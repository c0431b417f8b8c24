// polyattn/reference/clear.hpp — naive double-precision CLEAR attention (Liu et al. 2024, §3:
// circular local window over the image tokens; text tokens global), from the grid coordinates:
// sequence = L text tokens, then an H × W image in row-major order; query position p sees key j
// when p or j is a text token, or the image positions (y, x) of p and j satisfy
// (y_p − y_j)² + (x_p − x_j)² < r² (computed in double from the coordinates).
#pragma once

#include <type_traits>

#include "polyattn/reference/row_softmax.hpp"

namespace polyattn::reference {

template <class Out>
  requires(std::is_same_v<Out, float> || std::is_same_v<Out, double>)
void clear_attention(const SoftmaxInputs& in, const SoftmaxOptions& opt, index_t text,
                     index_t width, double radius, TensorView<Out, 4> o) {
  const auto visible = [=](index_t, index_t, index_t p, index_t j) {
    if (p < text || j < text) return true;
    const double yp = static_cast<double>((p - text) / width),
                 xp = static_cast<double>((p - text) % width);
    const double yj = static_cast<double>((j - text) / width),
                 xj = static_cast<double>((j - text) % width);
    return (yp - yj) * (yp - yj) + (xp - xj) * (xp - xj) < radius * radius;
  };
  row_softmax_attention(in, opt, visible, o);
}

}  // namespace polyattn::reference
