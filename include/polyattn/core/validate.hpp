// polyattn/core/validate.hpp — argument checks shared by every operator and reference.
//
// Each check throws polyattn::Error naming the argument and the shapes seen. Operators run all
// checks before writing any output, so a failed call leaves outputs untouched.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "polyattn/core/element_view.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/extent.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::check {

// Sizes and strides must be non-negative, the element count and the furthest element addressed
// must fit in int64 (core/extent.hpp), and a non-empty view must have data (an empty one may
// have null data, as an empty std::vector does).
template <StridedView V>
void well_formed(std::string_view name, const V& v) {
  for (std::size_t i = 0; i < V::rank; ++i) {
    if (v.size(i) < 0) throw Error(name, "negative size in shape " + shape_string(v.shape()));
    if (v.stride(i) < 0)
      throw Error(name, "negative stride in strides " + shape_string(v.strides()));
  }
  const index_t n = extent::count(name, v.shape());
  const index_t last = extent::furthest(name, v.shape(), v.strides());
  if (v.data() == nullptr && n > 0) throw Error(name, "data pointer is null");
  if (n > 0)  // the addressed span fits in memory
    extent::bytes(name, extent::add(name, last, 1, "the furthest offset"), view_element_size(v));
}

// A required argument: present (not a default-constructed view), well formed. Zero-size
// tensors are present.
template <StridedView V>
void required(std::string_view name, const V& v) {
  if (v.absent()) throw Error(name, "is required but null");
  well_formed(name, v);
}

// A required pointer argument (a fusion policy's plan, gates or selection): *p, else an Error
// naming it.
template <class T>
const T& not_null(std::string_view name, const T* p) {
  if (p == nullptr) throw Error(name, "is required but null");
  return *p;
}

// Exact shape match; `what` explains where the expectation comes from.
template <StridedView V>
void shape_is(std::string_view name, const V& v, const std::array<index_t, V::rank>& expected,
              std::string_view what = {}) {
  if (v.shape() != expected) {
    std::string msg = "expected shape " + shape_string(expected);
    if (!what.empty()) {
      msg += " (";
      msg += what;
      msg += ")";
    }
    msg += ", got " + shape_string(v.shape());
    throw Error(name, msg);
  }
}

// The element type of an fp32 / bf16 / fp16 view is `want`; `why` says who requires it.
template <bool M, std::size_t R>
void dtype_is(std::string_view name, const detail::ElementViewBase<M, R>& v, Dtype want,
              std::string_view why) {
  if (!v.absent() && v.dtype() != want)
    throw Error(name, std::string("is ") + std::string(dtype_name(v.dtype())) + ", but " +
                          std::string(why) + " takes " + std::string(dtype_name(want)));
}

// An optional argument: absent, or well formed (null data with a non-empty shape is an error)
// with the expected shape.
template <StridedView V>
void optional_shape(std::string_view name, const V& v, const std::array<index_t, V::rank>& expected,
                    std::string_view what = {}) {
  well_formed(name, v);
  if (!v.absent()) shape_is(name, v, expected, what);
}

inline void positive(std::string_view name, index_t value) {
  if (value <= 0) throw Error(name, "must be positive, got " + std::to_string(value));
}

// Grouped value heads: HV must be a positive multiple of H.
inline void heads_divide(std::string_view name, index_t H, index_t HV) {
  if (H <= 0 || HV <= 0 || HV % H != 0)
    throw Error(name, "number of heads " + std::to_string(HV) +
                          " must be a positive multiple of the query/key heads " +
                          std::to_string(H));
}

// cu_seqlens (FlashAttention convention): int64 [N+1], cu[0] == 0, non-decreasing,
// cu[N] == total_T, and the batch must be 1. Returns N. Empty span = no varlen.
inline index_t cu_seqlens(std::string_view name, std::span<const std::int64_t> cu, index_t B,
                          index_t total_T) {
  if (cu.empty()) return B;
  if (B != 1)
    throw Error(name,
                "requires batch size 1 (sequences packed along T), got B=" + std::to_string(B));
  if (cu.size() < 2) throw Error(name, "needs at least 2 entries [0, T], got 1");
  if (cu.front() != 0) throw Error(name, "must start at 0, got " + std::to_string(cu.front()));
  for (std::size_t i = 1; i < cu.size(); ++i)
    if (cu[i] < cu[i - 1])
      throw Error(name, "must be non-decreasing, but cu_seqlens[" + std::to_string(i) +
                            "]=" + std::to_string(cu[i]) + " < cu_seqlens[" +
                            std::to_string(i - 1) + "]=" + std::to_string(cu[i - 1]));
  if (cu.back() != total_T)
    throw Error(name, "last entry " + std::to_string(cu.back()) +
                          " must equal the packed length T=" + std::to_string(total_T));
  return static_cast<index_t>(cu.size()) - 1;
}

// Slot indices of a state pool: one per sequence (n of them), each in [0, slots), no two equal
// (two sequences writing one slot would race and lose a state).
inline void slot_indices(std::string_view name, std::span<const std::int64_t> idx, index_t n,
                         index_t slots) {
  if (static_cast<index_t>(idx.size()) != n)
    throw Error(name, "needs one slot per sequence (" + std::to_string(n) + "), got " +
                          std::to_string(idx.size()));
  std::vector<std::pair<std::int64_t, std::size_t>> by_slot;
  by_slot.reserve(idx.size());
  for (std::size_t i = 0; i < idx.size(); ++i) {
    if (idx[i] < 0 || idx[i] >= slots)
      throw Error(name, "[" + std::to_string(i) + "] = " + std::to_string(idx[i]) +
                            " is outside the pool's slots [0, " + std::to_string(slots) + ")");
    by_slot.emplace_back(idx[i], i);
  }
  std::sort(by_slot.begin(), by_slot.end());
  for (std::size_t i = 1; i < by_slot.size(); ++i)
    if (by_slot[i].first == by_slot[i - 1].first)
      throw Error(name, "[" + std::to_string(by_slot[i - 1].second) + "] and [" +
                            std::to_string(by_slot[i].second) + "] are both slot " +
                            std::to_string(by_slot[i].first) +
                            "; each sequence needs its own slot");
}

inline void finite_positive(std::string_view name, double value) {
  if (!(value > 0.0) || value == 1.0 / 0.0)
    throw Error(name, "must be a finite positive number, got " + std::to_string(value));
}

}  // namespace polyattn::check
