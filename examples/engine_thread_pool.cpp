// examples/engine_thread_pool.cpp — running polyattn's kernels on an inference engine's own
// thread pool.
//
// Kernels take an executor: anything with
//   void parallel_for(std::int64_t n, F fn)   run fn(0..n-1), return when all are done
//   int concurrency()                          how many may run at once
// (the polyattn::Executor concept). polyattn::Serial and polyattn::ThreadPool are provided; an
// engine that already has a pool wraps it with polyattn::make_executor(callable, concurrency),
// where callable(n, std::function<void(std::int64_t)>) runs the n calls on the engine's threads.
// Kernels split work into fixed items, so results are bitwise identical for any executor —
// checked below against Serial.
//
//   usage: polyattn-example-engine-thread-pool
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <polyattn/polyattn.hpp>

namespace pa = polyattn;
using pa::index_t;

// Stand-in for an engine's pool: a fixed set of workers draining a job queue.
class EnginePool {
 public:
  explicit EnginePool(int threads) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { loop(); });
  }
  ~EnginePool() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int size() const { return static_cast<int>(workers_.size()); }
  void submit(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(m_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
        if (stop_ && jobs_.empty()) return;
        job = std::move(jobs_.back());
        jobs_.pop_back();
      }
      job();
    }
  }
  std::vector<std::thread> workers_;
  std::vector<std::function<void()>> jobs_;
  std::mutex m_;
  std::condition_variable cv_;
  bool stop_ = false;
};

int main() {
  EnginePool engine(3);

  // The adapter: run fn(0..n-1) as jobs on the engine and wait for all of them.
  auto run_on_engine = [&engine](std::int64_t n, std::function<void(std::int64_t)> fn) {
    std::mutex m;
    std::condition_variable done;
    std::int64_t left = n;
    for (std::int64_t i = 0; i < n; ++i)
      engine.submit([&, i] {
        fn(i);
        std::lock_guard<std::mutex> lock(m);
        if (--left == 0) done.notify_one();
      });
    std::unique_lock<std::mutex> lock(m);
    done.wait(lock, [&] { return left == 0; });
  };
  const auto exec = pa::make_executor(run_on_engine, engine.size());
  static_assert(pa::Executor<decltype(exec)>);

  // A gated-DeltaNet prefill and a causal softmax prefill on the engine, then on Serial.
  const index_t B = 2, T = 300, H = 4, D = 64;
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.f, 1.f);
  const auto rows = static_cast<std::size_t>(B * T * H);
  std::vector<float> q(rows * D), k(rows * D), v(rows * D), g(rows), beta(rows);
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = n(rng);
  for (std::size_t i = 0; i < rows; ++i) {
    g[i] = -0.02f * std::abs(n(rng));
    beta[i] = 0.5f;
  }
  const auto view = [&](const std::vector<float>& x) {
    return pa::bthd<const float>(x.data(), B, T, H, D);
  };
  const pa::LinearInputs lin{.q = view(q),
                             .k = view(k),
                             .v = view(v),
                             .g = pa::bth<const float>(g.data(), B, T, H),
                             .beta = pa::bth<const float>(beta.data(), B, T, H)};
  const pa::SoftmaxInputs sm{.q = view(q), .k = view(k), .v = view(v)};
  pa::SoftmaxOptions causal;
  causal.causal = true;
  const auto gdn = pa::presets::make_gated_delta_rule();

  std::vector<float> a(rows * D), b(rows * D), c(rows * D), d(rows * D);
  gdn.forward<pa::Chunked<64>>(lin, {.o = pa::bthd(a.data(), B, T, H, D)}, {}, exec);
  gdn.forward<pa::Chunked<64>>(lin, {.o = pa::bthd(b.data(), B, T, H, D)}, {}, pa::Serial{});
  pa::softmax::flash_attention(sm, causal, pa::bthd(c.data(), B, T, H, D), exec);
  pa::softmax::flash_attention(sm, causal, pa::bthd(d.data(), B, T, H, D), pa::Serial{});
  const bool same = std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0 &&
                    std::memcmp(c.data(), d.data(), c.size() * sizeof(float)) == 0;
  std::printf("engine pool (%d workers) vs Serial: gated_delta_rule and softmax outputs %s\n",
              engine.size(), same ? "bitwise identical" : "DIFFER");
  return same ? 0 : 1;
}
