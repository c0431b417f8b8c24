// tests/core/test_executor.cpp — Serial, ThreadPool and CallableExecutor: every index exactly
// once, empty and single-index ranges, exception propagation, nesting without deadlock, and
// thread-count-independent results for a reduction with fixed per-index partials.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "polyattn/core/executor.hpp"

namespace {

using polyattn::CallableExecutor;
using polyattn::Serial;
using polyattn::ThreadPool;

static_assert(polyattn::Executor<Serial>);
static_assert(polyattn::Executor<ThreadPool>);
static_assert(!polyattn::Executor<int>);

// An "engine pool" for the adapter: spreads indices over fresh std::threads.
struct EnginePool {
  int threads = 3;
  void operator()(std::int64_t n, const std::function<void(std::int64_t)>& fn) const {
    std::atomic<std::int64_t> next{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&] {
        for (std::int64_t i; (i = next.fetch_add(1)) < n;) fn(i);
      });
    for (auto& t : ts) t.join();
  }
};
static_assert(polyattn::Executor<CallableExecutor<EnginePool>>);

template <polyattn::Executor E>
void expect_each_index_once(const E& exec, std::int64_t n) {
  std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
  exec.parallel_for(n, [&](std::int64_t i) {
    ASSERT_GE(i, 0);
    ASSERT_LT(i, n);
    hits[static_cast<std::size_t>(i)].fetch_add(1);
  });
  for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[static_cast<std::size_t>(i)].load(), 1) << i;
}

// Fixed per-index partials combined in index order: the bits cannot depend on the executor.
template <polyattn::Executor E>
float deterministic_sum(const E& exec) {
  constexpr std::int64_t kItems = 97, kPer = 1013;
  std::vector<float> partial(kItems);
  exec.parallel_for(kItems, [&](std::int64_t item) {
    float s = 0.f;
    for (std::int64_t j = 0; j < kPer; ++j)
      s += std::sin(static_cast<float>(item * kPer + j) * 0.001f) * 1.37f;
    partial[static_cast<std::size_t>(item)] = s;
  });
  float total = 0.f;
  for (float p : partial) total += p;
  return total;
}

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

TEST(Executor, SerialCoversEveryIndex) {
  const Serial s;
  EXPECT_EQ(s.concurrency(), 1);
  for (std::int64_t n : {0, 1, 2, 100}) expect_each_index_once(s, n);
  int calls = 0;
  s.parallel_for(-5, [&](std::int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
}

TEST(Executor, ThreadPoolCoversEveryIndex) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.concurrency(), threads);
    for (std::int64_t n : {0, 1, 2, 7, 1000}) expect_each_index_once(pool, n);
  }
}

TEST(Executor, ThreadPoolIsReusableManyTimes) {
  ThreadPool pool(4);
  std::atomic<std::int64_t> total{0};
  for (int round = 0; round < 500; ++round)
    pool.parallel_for(round % 7, [&](std::int64_t i) { total.fetch_add(i + 1); });
  std::int64_t expect = 0;
  for (int round = 0; round < 500; ++round) expect += (round % 7) * (round % 7 + 1) / 2;
  EXPECT_EQ(total.load(), expect);
}

TEST(Executor, ThreadPoolRejectsBadThreadCount) {
  for (int bad : {0, -3}) {
    try {
      ThreadPool pool(bad);
      FAIL() << "no exception for threads=" << bad;
    } catch (const polyattn::Error& e) {
      EXPECT_EQ(e.argument(), "threads");
      EXPECT_NE(std::string(e.what()).find("threads"), std::string::npos);
    }
  }
}

TEST(Executor, CallableExecutorCoversEveryIndex) {
  const auto exec = polyattn::make_executor(EnginePool{3}, 3);
  EXPECT_EQ(exec.concurrency(), 3);
  for (std::int64_t n : {0, 1, 2, 7, 1000}) expect_each_index_once(exec, n);
  // A plain lambda taking the std::function by value works too.
  const auto lam = polyattn::make_executor(
      [](std::int64_t n, std::function<void(std::int64_t)> fn) {
        for (std::int64_t i = n; i-- > 0;) fn(i);  // any order
      },
      1);
  expect_each_index_once(lam, 50);
  EXPECT_THROW(polyattn::make_executor(EnginePool{}, 0), polyattn::Error);
}

TEST(Executor, CallableExecutorDetectsAPoolThatSkipsWork) {
  const auto lazy = polyattn::make_executor(
      [](std::int64_t n, const std::function<void(std::int64_t)>& fn) {
        for (std::int64_t i = 0; i + 1 < n; ++i) fn(i);
      },
      1);
  try {
    lazy.parallel_for(4, [](std::int64_t) {});
    FAIL() << "no exception";
  } catch (const polyattn::Error& e) {
    EXPECT_EQ(e.argument(), "executor");
  }
}

template <polyattn::Executor E>
void expect_exception_propagates(const E& exec) {
  std::atomic<int> ran{0};
  try {
    exec.parallel_for(200, [&](std::int64_t i) {
      ran.fetch_add(1);
      if (i == 13) throw std::runtime_error("boom 13");
    });
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "boom 13");
  }
  EXPECT_GE(ran.load(), 1);
  // The executor is still usable afterwards.
  expect_each_index_once(exec, 64);
}

TEST(Executor, ExceptionsPropagate) {
  expect_exception_propagates(Serial{});
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    expect_exception_propagates(pool);
  }
  expect_exception_propagates(polyattn::make_executor(EnginePool{3}, 3));
  // A pool that would swallow exceptions: the adapter still reports them.
  expect_exception_propagates(polyattn::make_executor(
      [](std::int64_t n, const std::function<void(std::int64_t)>& fn) {
        for (std::int64_t i = 0; i < n; ++i) {
          try {
            fn(i);
          } catch (...) {
          }
        }
      },
      1));
}

TEST(Executor, EveryThreadThrowing) {
  ThreadPool pool(4);
  EXPECT_THROW(pool.parallel_for(1000, [](std::int64_t) { throw std::logic_error("all"); }),
               std::logic_error);
  expect_each_index_once(pool, 10);
}

TEST(Executor, NestedParallelForDoesNotDeadlock) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(20 * 30);
  pool.parallel_for(20, [&](std::int64_t i) {
    pool.parallel_for(
        30, [&](std::int64_t j) { hits[static_cast<std::size_t>(i * 30 + j)].fetch_add(1); });
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);

  // Across executors too: a ThreadPool inside the adapter, the adapter inside a ThreadPool.
  const auto adapter = polyattn::make_executor(EnginePool{2}, 2);
  std::atomic<int> count{0};
  adapter.parallel_for(
      5, [&](std::int64_t) { pool.parallel_for(7, [&](std::int64_t) { count.fetch_add(1); }); });
  pool.parallel_for(
      5, [&](std::int64_t) { adapter.parallel_for(7, [&](std::int64_t) { count.fetch_add(1); }); });
  EXPECT_EQ(count.load(), 70);
}

TEST(Executor, ConcurrentCallersShareAPool) {
  ThreadPool pool(3);
  std::atomic<std::int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int r = 0; r < 50; ++r) pool.parallel_for(10, [&](std::int64_t i) { total += i; });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 4 * 50 * 45);
}

TEST(Executor, ResultsDoNotDependOnThreadCount) {
  const std::uint32_t ref = bits(deterministic_sum(Serial{}));
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(bits(deterministic_sum(pool)), ref) << threads << " threads";
    EXPECT_EQ(bits(deterministic_sum(polyattn::make_executor(EnginePool{threads}, threads))), ref)
        << threads << " engine threads";
  }
}

TEST(Executor, PoolDestructsWhileIdleAndAfterWork) {
  for (int k = 0; k < 20; ++k) {
    auto pool = std::make_unique<ThreadPool>(1 + k % 5);
    if (k % 2) pool->parallel_for(k, [](std::int64_t) {});
    pool.reset();
  }
  SUCCEED();
}

}  // namespace
