// polyattn/core/executor.hpp — how kernels run independent work items in parallel.
//
// An Executor offers
//   e.parallel_for(n, fn)  runs fn(i) once for every i in [0, n) (n <= 0: nothing) and returns
//                          when all calls have finished; calls may run concurrently
//   e.concurrency()        how many calls may run at once (>= 1)
// Kernels use concurrency() only to choose how finely to split work; they split so that every
// index computes the same values whatever the thread count (fixed work items, per-item partial
// results combined in index order), so results never depend on the executor.
//
// Provided:
//   Serial                   loops in the caller (the default everywhere).
//   ThreadPool(threads)      persistent workers; the caller participates; indices are handed out
//                            one at a time from an atomic counter.
//   CallableExecutor<P>      adapts an engine's own pool: any callable
//                            pool(std::int64_t n, std::function<void(std::int64_t)> fn) that runs
//                            fn(0..n-1) and returns when all have finished.
//   make_executor(pool, concurrency)
//
// Exceptions: the first exception thrown by fn is rethrown in the caller of parallel_for after
// every call that had started has finished; indices not yet started are skipped.
// Nesting: parallel_for called from inside a task of ThreadPool or CallableExecutor (on any
// thread) runs serially in that task, so nested parallelism can never deadlock a pool.
#pragma once

#include <atomic>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "polyattn/core/error.hpp"

namespace polyattn {

namespace detail {
// A stand-in for "any callable taking an index", used to state the Executor concept.
struct IndexFnArchetype {
  void operator()(std::int64_t) const {}
};

// True while this thread runs a task of a polyattn executor.
inline thread_local bool t_in_parallel_task = false;

struct TaskScope {
  bool saved;
  TaskScope() noexcept : saved(t_in_parallel_task) { t_in_parallel_task = true; }
  ~TaskScope() { t_in_parallel_task = saved; }
  TaskScope(const TaskScope&) = delete;
  TaskScope& operator=(const TaskScope&) = delete;
};

// The first exception of a parallel_for, plus a stop flag for not-yet-started indices.
class FirstError {
 public:
  void capture() noexcept {
    bool expected = false;
    if (taken_.compare_exchange_strong(expected, true, std::memory_order_acq_rel))
      error_ = std::current_exception();
    failed_.store(true, std::memory_order_release);
  }
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }
  // Call only after every task has finished (synchronised by the caller).
  void rethrow_if_any() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::atomic<bool> taken_{false};
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
};

template <class F>
void run_serial(std::int64_t n, F& fn) {
  for (std::int64_t i = 0; i < n; ++i) fn(i);
}
}  // namespace detail

/// See the header comment. parallel_for and concurrency are const: an executor is a handle that
/// kernels take by const reference.
template <class E>
concept Executor = requires(const E& e, std::int64_t n, detail::IndexFnArchetype fn) {
  e.parallel_for(n, fn);
  { e.concurrency() } -> std::convertible_to<int>;
};

// ---- Serial -----------------------------------------------------------------------------------

struct Serial {
  template <class F>
  void parallel_for(std::int64_t n, F&& fn) const {
    detail::run_serial(n, fn);
  }
  constexpr int concurrency() const noexcept { return 1; }
};

// ---- ThreadPool -------------------------------------------------------------------------------

/// `threads` = total parallelism including the calling thread (threads - 1 workers are started).
/// Not copyable or movable. Several threads may call parallel_for on the same pool; their jobs
/// run one after another.
///
/// Hand-off (decode steps are ~0.1 ms, so waking 15 sleeping threads through one mutex would
/// cost a good part of one): a job is published with two atomics (job_, generation_); workers
/// that finished a job spin on generation_ for kSpinMicros before they sleep on a condition
/// variable, and the submitter only takes the mutex to notify when some worker sleeps. A worker
/// joins by incrementing active_ before it reads job_; the submitter clears job_ before it waits
/// for active_ to reach 0 (spinning briefly, then sleeping), so no worker can start on a job
/// whose submitter has returned (all four operations are sequentially consistent).
class ThreadPool {
 public:
  // How long an idle worker (or a submitter waiting for its job) polls before it sleeps.
  static constexpr std::int64_t kSpinMicros = 100;

  explicit ThreadPool(int threads) : threads_(threads) {
    if (threads < 1) throw Error("threads", "must be at least 1, got " + std::to_string(threads));
    workers_.reserve(static_cast<std::size_t>(threads - 1));
    try {
      for (int w = 0; w < threads - 1; ++w) workers_.emplace_back([this] { worker_loop(); });
    } catch (...) {
      shutdown();
      throw;
    }
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() { shutdown(); }

  int concurrency() const noexcept { return threads_; }

  template <class F>
  void parallel_for(std::int64_t n, F&& fn) const {
    if (n <= 0) return;
    if (workers_.empty() || n == 1 || detail::t_in_parallel_task) {
      detail::TaskScope scope;
      detail::run_serial(n, fn);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    Job job;
    job.n = n;
    job.fn = static_cast<void*>(const_cast<std::remove_const_t<Fn>*>(std::addressof(fn)));
    job.call = [](void* f, std::int64_t i) { (*static_cast<Fn*>(f))(i); };

    std::lock_guard<std::mutex> submit(submit_mutex_);  // one job at a time
    job_.store(&job);
    generation_.fetch_add(1);
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(mutex_);  // a sleeper is either waiting or will see it
      wake_.notify_all();
    }
    run_job(job);         // the caller works too
    job_.store(nullptr);  // no worker may join from now on
    if (!spin_until([&] { return active_.load() == 0; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      caller_sleeps_.store(true);
      done_.wait(lock, [&] { return active_.load() == 0; });
      caller_sleeps_.store(false);
    }
    job.error.rethrow_if_any();
  }

 private:
  struct Job {
    std::int64_t n = 0;
    void* fn = nullptr;
    void (*call)(void*, std::int64_t) = nullptr;
    std::atomic<std::int64_t> next{0};
    detail::FirstError error;
  };

  static void run_job(Job& job) noexcept {
    detail::TaskScope scope;
    for (;;) {
      if (job.error.failed()) break;
      const std::int64_t i = job.next.fetch_add(1, std::memory_order_relaxed);
      if (i >= job.n) break;
      try {
        job.call(job.fn, i);
      } catch (...) {
        job.error.capture();
      }
    }
  }

  static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    std::this_thread::yield();
#endif
  }

  // Polls done() for up to kSpinMicros; true as soon as it holds.
  template <class Done>
  static bool spin_until(Done&& done) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
    for (;;) {
      for (int i = 0; i < 64; ++i) {
        if (done()) return true;
        cpu_relax();
      }
      if (std::chrono::steady_clock::now() >= until) return done();
    }
  }

  void worker_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      const auto ready = [&] { return stop_.load() || generation_.load() != seen; };
      if (!spin_until(ready)) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1);
        wake_.wait(lock, ready);
        sleepers_.fetch_sub(1);
      }
      if (stop_.load()) return;
      seen = generation_.load();
      active_.fetch_add(1);  // before reading job_: the submitter waits for us from here on
      if (Job* job = job_.load()) run_job(*job);
      if (active_.fetch_sub(1) == 1 && caller_sleeps_.load()) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.notify_all();
      }
    }
  }

  void shutdown() noexcept {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_.store(true);
    }
    wake_.notify_all();
    for (auto& t : workers_)
      if (t.joinable()) t.join();
    workers_.clear();
  }

  int threads_;
  std::vector<std::thread> workers_;
  mutable std::mutex submit_mutex_;
  mutable std::mutex mutex_;  // only for sleeping and waking
  mutable std::condition_variable wake_;
  mutable std::condition_variable done_;
  mutable std::atomic<Job*> job_{nullptr};
  mutable std::atomic<std::uint64_t> generation_{0};
  mutable std::atomic<int> active_{0};
  mutable std::atomic<int> sleepers_{0};
  mutable std::atomic<bool> caller_sleeps_{false};
  std::atomic<bool> stop_{false};
};

// ---- CallableExecutor -------------------------------------------------------------------------

template <class P>
concept PoolCallable = std::invocable<P&, std::int64_t, std::function<void(std::int64_t)>>;

/// Adapts an engine's pool. `pool(n, fn)` must call fn(i) for every i in [0, n) and return only
/// when all calls have finished. The adapter makes exceptions reach the caller even if the pool
/// would swallow them, runs nested calls serially, and checks that every index ran.
template <PoolCallable P>
class CallableExecutor {
 public:
  CallableExecutor(P pool, int concurrency) : pool_(std::move(pool)), concurrency_(concurrency) {
    if (concurrency < 1)
      throw Error("concurrency", "must be at least 1, got " + std::to_string(concurrency));
  }

  int concurrency() const noexcept { return concurrency_; }

  template <class F>
  void parallel_for(std::int64_t n, F&& fn) const {
    if (n <= 0) return;
    if (detail::t_in_parallel_task) {
      detail::TaskScope scope;
      detail::run_serial(n, fn);
      return;
    }
    detail::FirstError error;
    std::atomic<std::int64_t> ran{0};
    auto task = [&](std::int64_t i) {
      ran.fetch_add(1, std::memory_order_relaxed);
      if (error.failed()) return;
      detail::TaskScope scope;
      try {
        fn(i);
      } catch (...) {
        error.capture();
      }
    };
    pool_(n, std::function<void(std::int64_t)>(std::ref(task)));
    error.rethrow_if_any();
    if (ran.load() != n)
      throw Error("executor", "the pool returned from parallel_for(" + std::to_string(n) +
                                  ") after running " + std::to_string(ran.load()) +
                                  " tasks; it must run every index and wait for all of them");
  }

 private:
  mutable P pool_;
  int concurrency_;
};

/// make_executor(pool, concurrency): a CallableExecutor over a copy of `pool`.
template <class P>
  requires PoolCallable<std::decay_t<P>>
CallableExecutor<std::decay_t<P>> make_executor(P&& pool, int concurrency) {
  return CallableExecutor<std::decay_t<P>>(std::forward<P>(pool), concurrency);
}

}  // namespace polyattn
