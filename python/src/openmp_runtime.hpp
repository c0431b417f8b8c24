// python/src/openmp_runtime.hpp — running the kernels' work items on the OpenMP runtime that
// another library of this process has already loaded (PyTorch's libgomp, or an Intel / LLVM
// libiomp5 / libomp), instead of on polyattn's own thread pool.
//
// Why: inside a model, torch's OpenMP workers spin for a while after each of torch's parallel
// ops, and polyattn's pool workers spin after each of ours (ThreadPool::kSpinMicros). Two sets
// of N busy threads on N cores slow both sides: on the 16-core Xeon a Gated DeltaNet decode step
// took 0.83 ms inside a Qwen3-Next decode step against 0.1 ms called alone. Run on the
// framework's own team (GOMP_parallel from the calling thread reuses it), the kernels start on
// threads that are already awake, and nothing is left spinning when torch's next op starts.
//
//   OpenMPRuntime::find()   the runtime's entry points, from a library already in the process
//                           (never loads one; nothing when there is none)
//   OpenMPExecutor          a polyattn Executor (core/executor.hpp) over one of them: indices
//                           handed out from an atomic counter to the team's threads, the first
//                           exception rethrown in the caller, nested calls serial.
// GOMP_parallel is GCC's OpenMP entry point; libiomp5 and LLVM's libomp export it too.
#pragma once

#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "polyattn/core/executor.hpp"

namespace polyattn::py {

struct OpenMPRuntime {
  using Body = void (*)(void*);
  void (*parallel)(Body fn, void* data, unsigned threads, unsigned flags) = nullptr;
  int (*max_threads)() = nullptr;  // omp_get_max_threads: torch.set_num_threads sets it
  std::string library;             // the shared object it came from

  /// The OpenMP runtime among the shared objects loaded now, or nothing: torch's own copy when
  /// several are loaded (numpy's BLAS may bring the system's libgomp), else the first found.
  /// Never loads a library: the handle is to the copy already mapped (RTLD_NOLOAD).
  static std::optional<OpenMPRuntime> find() {
    std::vector<std::string> found;
    dl_iterate_phdr(&OpenMPRuntime::collect, &found);
    if (found.empty()) return std::nullopt;
    std::string path = found.front();
    for (const std::string& f : found)
      if (f.find("/torch/") != std::string::npos) path = f;
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (handle == nullptr) return std::nullopt;
    OpenMPRuntime r;
    r.parallel = reinterpret_cast<decltype(r.parallel)>(dlsym(handle, "GOMP_parallel"));
    r.max_threads = reinterpret_cast<decltype(r.max_threads)>(dlsym(handle, "omp_get_max_threads"));
    r.library = path;
    if (r.parallel == nullptr || r.max_threads == nullptr) return std::nullopt;
    return r;  // the handle stays open, as the library stays loaded
  }

 private:
  static int collect(dl_phdr_info* info, std::size_t, void* out) {
    const std::string_view name = info->dlpi_name ? info->dlpi_name : "";
    const std::string_view base = name.substr(name.find_last_of('/') + 1);
    for (std::string_view lib : {"libgomp", "libiomp5", "libomp"})
      if (base.starts_with(lib)) {
        static_cast<std::vector<std::string>*>(out)->emplace_back(name);
        break;
      }
    return 0;  // every loaded object
  }
};

/// parallel_for on an OpenMP runtime's team of `threads` (the caller is thread 0 of it).
class OpenMPExecutor {
 public:
  OpenMPExecutor(const OpenMPRuntime& rt, int threads) noexcept
      : rt_(&rt), threads_(std::max(1, threads)) {}

  int concurrency() const noexcept { return threads_; }

  template <class F>
  void parallel_for(std::int64_t n, F&& fn) const {
    if (n <= 0) return;
    if (threads_ == 1 || n == 1 || detail::t_in_parallel_task) {
      detail::run_serial(n, fn);
      return;
    }
    Shared<std::remove_reference_t<F>> job{.fn = &fn, .n = n};
    const auto team = static_cast<unsigned>(std::min<std::int64_t>(threads_, n));
    rt_->parallel(&Shared<std::remove_reference_t<F>>::body, &job, team, 0);
    job.error.rethrow_if_any();
  }

 private:
  template <class F>
  struct Shared {
    F* fn;
    std::int64_t n;
    std::atomic<std::int64_t> next{0};
    detail::FirstError error;
    static void body(void* p) {
      auto& s = *static_cast<Shared*>(p);
      const detail::TaskScope scope;
      for (std::int64_t i; !s.error.failed() && (i = s.next.fetch_add(1)) < s.n;) {
        try {
          (*s.fn)(i);
        } catch (...) {
          s.error.capture();
        }
      }
    }
  };

  const OpenMPRuntime* rt_;
  int threads_;
};

}  // namespace polyattn::py
