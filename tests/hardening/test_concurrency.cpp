// Concurrent callers, as an engine has them: several threads calling operators at once, sharing
// one ThreadPool, and several decoders reading one KVCache. Each result must equal the serial
// one bit for bit (the executor contract, core/executor.hpp); run under ThreadSanitizer in CI
// (the tsan preset), which also checks that nothing races.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "common/test_util.hpp"
#include "polyattn/polyattn.hpp"

namespace {

namespace pa = polyattn;
using pa::index_t;
using pa::test::random_vector;

constexpr int kCallers = 4;

// One caller's gated-delta-rule prefill: o and the final state.
struct LinearCall {
  static constexpr index_t B = 2, T = 48, H = 2, D = 16;
  std::vector<float> q, k, v, g, beta, o, s;
  explicit LinearCall(unsigned seed)
      : q(random_vector(B * T * H * D, seed)),
        k(random_vector(B * T * H * D, seed + 1)),
        v(random_vector(B * T * H * D, seed + 2)),
        g(random_vector(B * T * H, seed + 3, -0.2f, -0.01f)),
        beta(random_vector(B * T * H, seed + 4, 0.f, 1.f)),
        o(q.size()),
        s(B * H * D * D) {}
  template <class E>
  void run(const E& exec) {
    pa::presets::make_gated_delta_rule().forward<pa::Chunked<16>>(
        {.q = pa::bthd(q.data(), B, T, H, D),
         .k = pa::bthd(k.data(), B, T, H, D),
         .v = pa::bthd(v.data(), B, T, H, D),
         .g = pa::bth(g.data(), B, T, H),
         .beta = pa::bth(beta.data(), B, T, H)},
        {.o = pa::bthd(o.data(), B, T, H, D), .final_state = pa::bhkv(s.data(), B, H, D, D)}, {},
        exec);
  }
};

// One caller's causal softmax prefill.
struct SoftmaxCall {
  static constexpr index_t B = 1, T = 70, H = 4, D = 32;
  std::vector<float> q, k, v, o;
  explicit SoftmaxCall(unsigned seed)
      : q(random_vector(B * T * H * D, seed)),
        k(random_vector(B * T * H * D, seed + 1)),
        v(random_vector(B * T * H * D, seed + 2)),
        o(q.size()) {}
  template <class E>
  void run(const E& exec) {
    pa::softmax::flash_attention({.q = pa::bthd(q.data(), B, T, H, D),
                                  .k = pa::bthd(k.data(), B, T, H, D),
                                  .v = pa::bthd(v.data(), B, T, H, D)},
                                 {.causal = true}, pa::bthd(o.data(), B, T, H, D), exec);
  }
};

TEST(Concurrency, CallersSharingOnePoolGetSerialBits) {
  pa::ThreadPool pool(3);
  std::vector<LinearCall> lin_serial, lin_pool;
  std::vector<SoftmaxCall> sm_serial, sm_pool;
  for (int c = 0; c < kCallers; ++c) {
    lin_serial.emplace_back(10u * c + 1);
    lin_pool.emplace_back(10u * c + 1);
    sm_serial.emplace_back(10u * c + 5);
    sm_pool.emplace_back(10u * c + 5);
    lin_serial.back().run(pa::Serial{});
    sm_serial.back().run(pa::Serial{});
  }
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c)
    callers.emplace_back([&, c] {
      for (int rep = 0; rep < 3; ++rep) {
        lin_pool[static_cast<std::size_t>(c)].run(pool);
        sm_pool[static_cast<std::size_t>(c)].run(pool);
      }
    });
  for (auto& t : callers) t.join();
  for (std::size_t c = 0; c < kCallers; ++c) {
    EXPECT_EQ(lin_pool[c].o, lin_serial[c].o) << "caller " << c;
    EXPECT_EQ(lin_pool[c].s, lin_serial[c].s) << "caller " << c;
    EXPECT_EQ(sm_pool[c].o, sm_serial[c].o) << "caller " << c;
  }
}

// Readers may share a cache (the documented contract of KVCache): decoders on several threads,
// each with its own query and output, give the serial result.
TEST(Concurrency, DecodersShareOneCache) {
  constexpr index_t B = 2, HKV = 2, HQ = 4, D = 16, S = 40;
  pa::softmax::KVCache cache(B, HKV, D, D, {.page_size = 8});
  const auto k = random_vector(B * S * HKV * D, 1), v = random_vector(B * S * HKV * D, 2);
  cache.append(pa::bthd(k.data(), B, S, HKV, D), pa::bthd(v.data(), B, S, HKV, D));
  std::vector<std::vector<float>> q, want, got;
  for (int c = 0; c < kCallers; ++c) {
    q.push_back(random_vector(B * HQ * D, 100u + static_cast<unsigned>(c)));
    want.emplace_back(B * HQ * D);
    got.emplace_back(B * HQ * D);
    pa::softmax::flash_decode({.q = pa::bthd(q.back().data(), B, 1, HQ, D)}, cache, {},
                              pa::bthd(want.back().data(), B, 1, HQ, D));
  }
  pa::ThreadPool pool(2);
  std::vector<std::thread> readers;
  for (int c = 0; c < kCallers; ++c)
    readers.emplace_back([&, c] {
      const auto i = static_cast<std::size_t>(c);
      pa::softmax::flash_decode({.q = pa::bthd(q[i].data(), B, 1, HQ, D)}, cache, {},
                                pa::bthd(got[i].data(), B, 1, HQ, D), pool);
    });
  for (auto& t : readers) t.join();
  EXPECT_EQ(got, want);
}

}  // namespace
