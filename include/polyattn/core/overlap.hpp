// polyattn/core/overlap.hpp — do two strided views share memory; does a view address an element
// twice?
//
// A view addresses the bytes [base + Σ i_k·s_k, … + e) for 0 ≤ i_k < n_k (s_k in bytes, e the
// element size). Views a and b share memory iff some pair of elements intersects:
//   Σ_k a.s_k·i_k − Σ_k b.s_k·j_k = δ − (a.base − b.base)   for some δ ∈ (−a.e, b.e),
// a bounded linear Diophantine equation. may_share() first compares the address ranges (the
// common, disjoint case costs two subtractions), then solves the equation exactly by depth-first
// search over the variables in decreasing coefficient order, pruning with the reachable range
// and the gcd of the remaining coefficients (the approach of NumPy's solve_may_share_memory).
// For the layouts tensors have (nested strides: every stride exceeds the extent of the smaller
// ones) each level has at most two candidates; a search that exceeds its work budget answers
// "may share", so the answer is never a false "disjoint".
// self_overlaps(v) asks the same of i ≠ j within one view (zero strides, interleaved strides).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <numeric>  // std::gcd
#include <string>
#include <string_view>

#include "polyattn/core/element_view.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::memory {

/// A view as bytes: base address, element size, sizes and byte strides (at most 8 dimensions).
struct Region {
  std::string_view name;
  std::uintptr_t base = 0;
  std::int64_t elem = 0;
  int rank = 0;
  std::array<std::int64_t, 8> size{}, stride{};
  bool empty = true;  // absent or zero elements: shares nothing

  std::int64_t lo() const noexcept { return static_cast<std::int64_t>(base); }
  // One past the last byte addressed (validated views keep this within int64).
  std::int64_t hi() const noexcept {
    std::int64_t off = 0;
    for (int k = 0; k < rank; ++k) off += (size[k] - 1) * stride[k];
    return static_cast<std::int64_t>(base) + off + elem;
  }
};

/// The bytes of a validated view (sizes and strides non-negative, extents within int64).
template <StridedView V>
  requires(V::rank <= 8)
Region region(std::string_view name, const V& v) {
  Region r;
  r.name = name;
  r.base = reinterpret_cast<std::uintptr_t>(v.data());
  r.elem = static_cast<std::int64_t>(view_element_size(v));
  r.rank = static_cast<int>(V::rank);
  r.empty = v.data() == nullptr;
  for (std::size_t k = 0; k < V::rank; ++k) {
    r.size[k] = v.size(k);
    r.stride[k] = v.stride(k) * r.elem;
    if (v.size(k) == 0) r.empty = true;
  }
  return r;
}

/// Same memory, same element size, sizes and strides: the in-place aliasing operators may allow.
inline bool same_layout(const Region& a, const Region& b) noexcept {
  if (a.empty || b.empty || a.base != b.base || a.elem != b.elem || a.rank != b.rank) return false;
  for (int k = 0; k < a.rank; ++k)
    if (a.size[k] != b.size[k] || (a.size[k] > 1 && a.stride[k] != b.stride[k])) return false;
  return true;
}

namespace detail {

// Σ c_k x_k = target with 0 ≤ x_k ≤ u_k, c_k > 0 (sorted decreasing). `accept` sees each
// solution; the search stops when it returns true. `budget` counts visited nodes.
struct BoundedSum {
  __extension__ typedef __int128 wide;  // two views' byte extents summed may pass int64
  static constexpr int kMaxVars = 16;
  int n = 0;
  std::array<std::int64_t, kMaxVars> c{}, u{}, x{};
  std::array<wide, kMaxVars + 1> reach{};  // suffix Σ c·u
  std::array<std::int64_t, kMaxVars + 1> gcd{};
  std::int64_t budget = 1 << 16;

  // Adds c·x, 0 ≤ x ≤ bound. merge: fold into a variable of the same coefficient (only the sum
  // matters when any solution will do; two views of one layout then search like one).
  void add(std::int64_t coef, std::int64_t bound, bool merge = false) {
    if (coef == 0 || bound == 0) return;
    for (int i = 0; merge && i < n; ++i)
      if (c[i] == coef) {
        u[i] += bound;
        return;
      }
    // Insertion in decreasing coefficient order.
    int i = n++;
    for (; i > 0 && c[i - 1] < coef; --i) {
      c[i] = c[i - 1];
      u[i] = u[i - 1];
    }
    c[i] = coef;
    u[i] = bound;
  }
  void prepare() {
    reach[n] = 0;
    gcd[n] = 0;
    for (int i = n; i-- > 0;) {
      reach[i] = reach[i + 1] + static_cast<wide>(c[i]) * u[i];
      gcd[i] = std::gcd(gcd[i + 1], c[i]);
    }
  }
  // 1: a solution accepted; 0: none; −1: budget exhausted.
  template <class Accept>
  int search(int k, wide target, Accept& accept) {
    if (--budget < 0) return -1;
    if (k == n) return target == 0 && accept(x) ? 1 : 0;
    if (target < 0 || target > reach[k]) return 0;
    if (gcd[k] != 0 && target % gcd[k] != 0) return 0;
    const wide rest = reach[k + 1];
    const auto lo =
        static_cast<std::int64_t>(target > rest ? (target - rest + c[k] - 1) / c[k] : 0);
    const auto hi = static_cast<std::int64_t>(std::min<wide>(u[k], target / c[k]));
    for (std::int64_t v = hi; v >= lo; --v) {
      x[k] = v;
      const int r = search(k + 1, target - v * c[k], accept);
      if (r != 0) return r;
    }
    return 0;
  }
};

}  // namespace detail

/// Whether a and b may share a byte: false only when proven disjoint.
inline bool may_share(const Region& a, const Region& b) {
  if (a.empty || b.empty) return false;
  if (a.hi() <= b.lo() || b.hi() <= a.lo()) return false;
  // Σ a.s·i + Σ b.s·(u − j) = δ − (a.base − b.base) + Σ b.s·u_b over δ ∈ (−a.e, b.e).
  detail::BoundedSum eq;
  detail::BoundedSum::wide shift = 0;
  for (int k = 0; k < a.rank; ++k) eq.add(a.stride[k], a.size[k] - 1, true);
  for (int k = 0; k < b.rank; ++k) {
    eq.add(b.stride[k], b.size[k] - 1, true);
    shift += static_cast<detail::BoundedSum::wide>(b.stride[k]) * (b.size[k] - 1);
  }
  eq.prepare();
  const detail::BoundedSum::wide diff = a.lo() - b.lo();
  auto any = [](const auto&) { return true; };
  for (std::int64_t delta = -a.elem + 1; delta < b.elem; ++delta) {
    const int r = eq.search(0, delta - diff + shift, any);
    if (r != 0) return true;  // a solution, or too hard to decide
  }
  return false;
}

/// Whether two different indices of r address intersecting elements (a zero stride on a
/// dimension of size > 1, strides that interleave). False only when proven otherwise.
inline bool self_overlaps(const Region& r) {
  if (r.empty) return false;
  // Fast path: sort the dimensions of size > 1 by stride; if each stride is at least the extent
  // of the smaller ones plus one element, the index → address map is injective.
  std::array<int, 8> dims{};
  int n = 0;
  for (int k = 0; k < r.rank; ++k) {
    if (r.size[k] <= 1) continue;
    int i = n++;  // insertion by increasing stride
    for (; i > 0 && r.stride[dims[i - 1]] > r.stride[k]; --i) dims[i] = dims[i - 1];
    dims[i] = k;
  }
  // Two dimensions of equal stride: (.., 1, 0, ..) and (.., 0, 1, ..) meet.
  for (int i = 1; i < n; ++i)
    if (r.stride[dims[i]] == r.stride[dims[i - 1]]) return true;
  std::int64_t extent = r.elem;
  bool nested = true;
  for (int i = 0; i < n; ++i) {
    const int k = dims[i];
    if (r.stride[k] < extent) {
      nested = false;
      break;
    }
    extent = r.stride[k] * (r.size[k] - 1) + extent;
  }
  if (nested) return false;
  // Exact: Σ s_k (i_k − j_k) = δ, |δ| < e, (i − j) ≠ 0. With x_k = i_k − j_k + (n_k − 1) ∈
  // [0, 2(n_k − 1)], a solution other than x = centre (or δ ≠ 0) is an overlap.
  detail::BoundedSum eq;
  std::int64_t centre_sum = 0;
  for (int i = 0; i < n; ++i) {
    const int k = dims[i];
    if (r.stride[k] == 0) return true;
    eq.add(r.stride[k], 2 * (r.size[k] - 1));
    centre_sum += r.stride[k] * (r.size[k] - 1);
  }
  eq.prepare();
  for (std::int64_t delta = -r.elem + 1; delta < r.elem; ++delta) {
    auto not_centre = [&](const auto& x) {
      if (delta != 0) return true;
      for (int i = 0; i < eq.n; ++i)
        if (2 * x[i] != eq.u[i]) return true;
      return false;
    };
    if (eq.search(0, centre_sum + delta, not_centre) != 0) return true;
  }
  return false;
}

}  // namespace polyattn::memory

namespace polyattn::check {

/// An output view must not address an element twice (e.g. a zero stride).
inline void no_self_overlap(const memory::Region& out) {
  if (memory::self_overlaps(out))
    throw Error(out.name,
                "output strides address some elements more than once (zero or interleaved "
                "strides); every output element needs its own memory");
}

/// Outputs must not share memory with each other or with any input, except where the operator
/// allows in-place use: an output aliasing an input exactly (same address, sizes and strides)
/// where `allowed` lists that (output, input) pair.
struct InPlace {
  std::string_view output, input;
};

inline void writes_disjoint(std::initializer_list<memory::Region> outputs,
                            std::initializer_list<memory::Region> inputs,
                            std::initializer_list<InPlace> allowed = {}) {
  for (const memory::Region& o : outputs) {
    no_self_overlap(o);
    for (const memory::Region& i : inputs) {
      if (!memory::may_share(o, i)) continue;
      const bool exact = memory::same_layout(o, i);
      bool ok = false;
      for (const InPlace& a : allowed)
        ok = ok || (exact && a.output == o.name && a.input == i.name);
      if (ok) continue;
      std::string msg = "overlaps the memory of input '" + std::string(i.name) + "'";
      msg += exact ? " (in-place use of it is not supported by this operator)"
                   : "; outputs may only alias an input exactly where the operator allows it";
      throw Error(o.name, msg);
    }
  }
  for (auto o1 = outputs.begin(); o1 != outputs.end(); ++o1)
    for (auto o2 = std::next(o1); o2 != outputs.end(); ++o2)
      if (memory::may_share(*o1, *o2))
        throw Error(o2->name, "overlaps the memory of output '" + std::string(o1->name) + "'");
}

}  // namespace polyattn::check
