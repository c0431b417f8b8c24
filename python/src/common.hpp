// python/src/common.hpp — array conversion and executors (thread pools, the OpenMP route) shared by
// the module's translation units (python/src/module.cpp: linear family and short convolution;
// softmax.cpp: softmax, KV cache, sparse selectors; mamba2.cpp: Mamba2).
//
// The private ABI of _polyattn (python/polyattn/_arrays.py imports it for the package):
//   - inputs are read-only CPU arrays of any strides (numpy through the buffer protocol or
//     DLPack, torch through DLPack); outputs are writable arrays allocated by the caller, so no
//     array is created here and the GIL is released around every kernel;
//   - element types: float32, float16, bfloat16 (DLPack code Bfloat), and uint16, which always
//     means bfloat16 bits (numpy has no bfloat16 buffer format; the Python layer passes an
//     ml_dtypes.bfloat16 array as .view(uint16));
//   - errors: polyattn::Error (a std::invalid_argument) becomes ValueError with the library's
//     message naming the argument; a wrong rank or element type is a TypeError / ValueError
//     raised here, also naming the argument, before anything is written.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>

#include "openmp_runtime.hpp"
#include "polyattn/core/element_view.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/tensor_view.hpp"

namespace polyattn::py {

namespace nb = nanobind;

using In = nb::ndarray<nb::ro, nb::device::cpu>;
using Out = nb::ndarray<nb::device::cpu>;
using OptIn = std::optional<In>;
using OptOut = std::optional<Out>;

inline std::string arg_msg(const char* name, const std::string& what) {
  return std::string("polyattn: argument '") + name + "': " + what;
}

template <class A>
Dtype element_dtype(const A& a, const char* name) {
  const auto dt = a.dtype();
  using code = nb::dlpack::dtype_code;
  if (dt.lanes == 1 && dt.bits == 32 && dt.code == static_cast<std::uint8_t>(code::Float))
    return Dtype::f32;
  if (dt.lanes == 1 && dt.bits == 16 && dt.code == static_cast<std::uint8_t>(code::Float))
    return Dtype::f16;
  if (dt.lanes == 1 && dt.bits == 16 &&
      (dt.code == static_cast<std::uint8_t>(code::Bfloat) ||
       dt.code == static_cast<std::uint8_t>(code::UInt)))
    return Dtype::bf16;
  throw nb::type_error(arg_msg(name, "element type must be float32, bfloat16 or float16").c_str());
}

template <std::size_t R, class A>
std::pair<std::array<index_t, R>, std::array<index_t, R>> layout(const A& a, const char* name) {
  if (a.ndim() != R)
    throw nb::value_error(arg_msg(name, "expected " + std::to_string(R) + " dimensions, got " +
                                            std::to_string(a.ndim()))
                              .c_str());
  std::array<index_t, R> shape{}, strides{};
  for (std::size_t i = 0; i < R; ++i) {
    shape[i] = static_cast<index_t>(a.shape(i));
    strides[i] = static_cast<index_t>(a.stride(i));
    if (strides[i] < 0)
      throw nb::value_error(arg_msg(name, "negative strides are not supported").c_str());
  }
  return {shape, strides};
}

/// A read-only view of an fp32 / bf16 / fp16 array of rank R.
template <std::size_t R>
ElementView<R> element_in(const In& a, const char* name) {
  const auto [shape, strides] = layout<R>(a, name);
  switch (element_dtype(a, name)) {
    case Dtype::bf16:
      return TensorView<const bf16, R>(static_cast<const bf16*>(a.data()), shape, strides);
    case Dtype::f16:
      return TensorView<const f16, R>(static_cast<const f16*>(a.data()), shape, strides);
    default:
      return TensorView<const float, R>(static_cast<const float*>(a.data()), shape, strides);
  }
}
template <std::size_t R>
ElementView<R> element_in(const OptIn& a, const char* name) {
  return a ? element_in<R>(*a, name) : ElementView<R>{};
}

/// A writable view of an fp32 / bf16 / fp16 array of rank R.
template <std::size_t R>
MutElementView<R> element_out(const Out& a, const char* name) {
  const auto [shape, strides] = layout<R>(a, name);
  switch (element_dtype(a, name)) {
    case Dtype::bf16:
      return TensorView<bf16, R>(static_cast<bf16*>(a.data()), shape, strides);
    case Dtype::f16:
      return TensorView<f16, R>(static_cast<f16*>(a.data()), shape, strides);
    default:
      return TensorView<float, R>(static_cast<float*>(a.data()), shape, strides);
  }
}

template <class A>
void require_f32(const A& a, const char* name) {
  const auto dt = a.dtype();
  if (dt.lanes != 1 || dt.bits != 32 ||
      dt.code != static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float))
    throw nb::type_error(arg_msg(name, "element type must be float32").c_str());
}

/// A read-only fp32 view of rank R (gates, beta, states, ...), absent when not given.
template <std::size_t R>
TensorView<const float, R> f32_in(const OptIn& a, const char* name) {
  if (!a) return {};
  require_f32(*a, name);
  const auto [shape, strides] = layout<R>(*a, name);
  return {static_cast<const float*>(a->data()), shape, strides};
}
template <std::size_t R>
TensorView<float, R> f32_out(const OptOut& a, const char* name) {
  if (!a) return {};
  require_f32(*a, name);
  const auto [shape, strides] = layout<R>(*a, name);
  return {static_cast<float*>(a->data()), shape, strides};
}

/// int64 [n] with unit stride (cu_seqlens, state_indices), empty when not given.
inline std::span<const std::int64_t> i64_in(const OptIn& a, const char* name) {
  if (!a) return {};
  const auto dt = a->dtype();
  if (dt.code != static_cast<std::uint8_t>(nb::dlpack::dtype_code::Int) || dt.bits != 64)
    throw nb::type_error(arg_msg(name, "element type must be int64").c_str());
  const auto [shape, strides] = layout<1>(*a, name);
  if (shape[0] > 1 && strides[0] != 1)
    throw nb::value_error(arg_msg(name, "must be contiguous").c_str());
  return {static_cast<const std::int64_t*>(a->data()), static_cast<std::size_t>(shape[0])};
}

/// One pool per thread count, kept for the life of the process (creating threads per call
/// would cost more than a decode step). threads <= 0: every hardware thread.
inline const ThreadPool& pool(int threads) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::lock_guard<std::mutex> lock(mu);
  auto& p = pools[threads];
  if (!p) p = std::make_unique<ThreadPool>(threads);
  return *p;
}

/// Where the kernels' work items run: polyattn's pool (the default) or, once
/// use_openmp_runtime(true) found one, the OpenMP runtime already loaded in the process
/// (torch's; openmp_runtime.hpp says why).
class ModuleExecutor {
 public:
  explicit ModuleExecutor(int threads);
  int concurrency() const noexcept { return omp_ ? omp_->concurrency() : pool_->concurrency(); }
  template <class F>
  void parallel_for(std::int64_t n, F&& fn) const {
    if (omp_)
      omp_->parallel_for(n, fn);
    else
      pool_->parallel_for(n, fn);
  }

 private:
  const ThreadPool* pool_ = nullptr;
  std::optional<OpenMPExecutor> omp_;
};

/// The runtime use_openmp_runtime(true) found; nullptr while polyattn's pool is in use.
inline std::atomic<const OpenMPRuntime*>& openmp_runtime() {
  static std::atomic<const OpenMPRuntime*> rt{nullptr};
  return rt;
}

/// Switches to the process's OpenMP runtime (true) or back to the pool (false); returns the
/// runtime's library path, or "" when none is loaded (the pool stays in use). Looked up again on
/// every switch (torch may be imported later than another library that loaded an OpenMP).
inline std::string use_openmp_runtime(bool on) {
  static std::mutex mu;
  static std::list<OpenMPRuntime> seen;  // never erased: executors may still point at one
  std::lock_guard<std::mutex> lock(mu);
  if (!on) {
    openmp_runtime().store(nullptr);
    return "";
  }
  const std::optional<OpenMPRuntime> found = OpenMPRuntime::find();
  if (!found) {
    openmp_runtime().store(nullptr);
    return "";
  }
  auto it = std::find_if(seen.begin(), seen.end(),
                         [&](const OpenMPRuntime& r) { return r.library == found->library; });
  if (it == seen.end()) it = seen.insert(seen.end(), *found);
  openmp_runtime().store(&*it);
  return it->library;
}

inline ModuleExecutor::ModuleExecutor(int threads) {
  if (const OpenMPRuntime* rt = openmp_runtime().load()) {
    omp_.emplace(*rt, threads > 0 ? threads : rt->max_threads());
  } else {
    pool_ = &pool(threads);
  }
}

void bind_softmax(nb::module_& m);
void bind_mamba2(nb::module_& m);

}  // namespace polyattn::py
