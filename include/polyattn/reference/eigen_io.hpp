// polyattn/reference/eigen_io.hpp — the references' Eigen vocabulary: double vectors and
// matrices, strided float input rows and matrices mapped as Eigen expressions (read them with
// .cast<double>()), stores into output views, and std::exp on arrays.
//
//   row(x, i0, i1, i2)        x[i0, i1, i2, :]            (rank 4; row(x, i0, i1) = x[i0, i1, :])
//   rows(x, b, t0, n, h)      x[b, t0 .. t0+n−1, h, :]    an [n × D] matrix, row r = token t0 + r
//                             (of an ElementView: bf16 / fp16 values widened exactly)
//   mat(x, n, h)              x[n, h, :, :]               a state [K × V]
//   store(o, i0, i1, i2, r)   o[i0, i1, i2, :] = r        (also rank 3, and store_mat for a state)
//   std_exp(a)                std::exp of every element of an array expression
//
// Stores convert each double with static_cast<Out>, so any output type the references accept
// works, Eigen scalar or not. Only the references use this header; kernels never see Eigen
// through it.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstddef>

#include "polyattn/core/element_view.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::reference::detail {

using Vec = Eigen::VectorXd;
using Arr = Eigen::ArrayXd;
using Mat = Eigen::MatrixXd;
using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Read-only maps of float inputs, with the views' strides.
using RowMap = Eigen::Map<const Eigen::VectorXf, Eigen::Unaligned, Eigen::InnerStride<>>;
using MatMap =
    Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
               Eigen::Unaligned, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;

// x[idx..., :], the innermost dimension of a view, as a column vector.
template <std::size_t R, class... I>
  requires(sizeof...(I) + 1 == R)
RowMap row(const TensorView<const float, R>& x, I... idx) {
  const index_t n = x.size(R - 1);
  return RowMap(n > 0 ? x.ptr(idx..., 0) : nullptr, n, Eigen::InnerStride<>(x.stride(R - 1)));
}

// x[b, t0 + r, h, :] for r < n: the rows of n consecutive tokens of one head.
inline MatMap rows(const View4<const float>& x, index_t b, index_t t0, index_t n, index_t h) {
  const index_t d = x.size(3);
  return MatMap(n > 0 && d > 0 ? x.ptr(b, t0, h, 0) : nullptr, n, d,
                Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(x.stride(1), x.stride(3)));
}

// The same rows of a view of any element type (fp32, bf16, fp16), read exactly into doubles.
inline RowMat rows(const ElementView<4>& x, index_t b, index_t t0, index_t n, index_t h) {
  if (x.is<float>()) return rows(x.as<float>(), b, t0, n, h).cast<double>();
  RowMat m(n, x.size(3));
  for (index_t r = 0; r < n; ++r)
    for (index_t e = 0; e < x.size(3); ++e) m(r, e) = x(b, t0 + r, h, e);
  return m;
}

// x[n, h, :, :]: one [K × V] state.
inline MatMap mat(const View4<const float>& x, index_t n, index_t h) {
  const index_t r = x.size(2), c = x.size(3);
  return MatMap(r > 0 && c > 0 ? x.ptr(n, h, 0, 0) : nullptr, r, c,
                Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(x.stride(2), x.stride(3)));
}

// o[i0, i1, i2, :] = r and o[i0, i1, :] = r (an expression argument is evaluated once).
template <class Out>
void store(const TensorView<Out, 4>& o, index_t i0, index_t i1, index_t i2, const Vec& r) {
  for (index_t e = 0; e < r.size(); ++e) o(i0, i1, i2, e) = static_cast<Out>(r(e));
}
template <class Out>
void store(const TensorView<Out, 3>& o, index_t i0, index_t i1, const Vec& r) {
  for (index_t e = 0; e < r.size(); ++e) o(i0, i1, e) = static_cast<Out>(r(e));
}
// o[n, h, :, :] = m.
template <class Out>
void store_mat(const TensorView<Out, 4>& o, index_t n, index_t h, const Mat& m) {
  for (index_t i = 0; i < m.rows(); ++i)
    for (index_t j = 0; j < m.cols(); ++j) o(n, h, i, j) = static_cast<Out>(m(i, j));
}

// std::exp element-wise. Not Eigen's .exp(): Eigen 3.4.0's vectorised double exp clamps its
// argument at −709.78 and so returns ~5.6e-309, not 0, for e^{−inf} or e^{−1000}.
template <class Derived>
auto std_exp(const Eigen::ArrayBase<Derived>& a) {
  return a.unaryExpr([](double e) { return std::exp(e); });
}

}  // namespace polyattn::reference::detail
