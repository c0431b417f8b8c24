// Concurrent callers, as an engine has them: several threads calling operators at once, sharing
// one ThreadPool, and several decoders reading one KVCache; the engine paths (speculative verify +
// commit into a state pool, prefill with snapshots) on pools of several sizes. Each result must
// equal the serial one bit for bit (the executor contract, core/executor.hpp); run under
// ThreadSanitizer in CI (the tsan preset), which also checks that nothing races.
#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <utility>
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

constexpr int kPoolSizes[] = {2, 3, 5};

// Speculative verify of 8 draft tokens from a state pool, then commit of a different accepted
// prefix per sequence: o and the whole pool as the serial executor's, for GDN (delta rule,
// gate vector) and Mamba2 (the transposed [P, N] state view).
TEST(Concurrency, VerifyCommitOnThreadPoolsGetSerialBits) {
  constexpr index_t B = 3, T = 8, H = 2, K = 16, V = 12, kSlots = 5;
  const std::vector<std::int64_t> idx{4, 1, 2}, accepted{0, 3, 8};
  {
    const auto op = pa::presets::make_gated_delta_rule();
    const auto q = random_vector(B * T * H * K, 1), k = random_vector(B * T * H * K, 2),
               v = random_vector(B * T * H * V, 3), g = random_vector(B * T * H, 4, -0.2f, -0.01f),
               beta = random_vector(B * T * H, 5, 0.05f, 0.95f),
               pool0 = random_vector(kSlots * H * K * V, 6, -0.5f, 0.5f);
    const pa::LinearInputs in{.q = pa::bthd(q.data(), B, T, H, K),
                              .k = pa::bthd(k.data(), B, T, H, K),
                              .v = pa::bthd(v.data(), B, T, H, V),
                              .g = pa::bth(g.data(), B, T, H),
                              .beta = pa::bth(beta.data(), B, T, H),
                              .state_indices = idx};
    auto run = [&](const auto& exec) {
      std::vector<float> pool = pool0, o(B * T * H * V);
      pa::linear::VerifyCache cache;
      op.verify(in, pa::bhkv(std::as_const(pool).data(), kSlots, H, K, V),
                pa::bthd(o.data(), B, T, H, V), cache, {}, exec);
      op.commit(cache, accepted, pa::bhkv(pool.data(), kSlots, H, K, V), exec);
      return std::pair{o, pool};
    };
    const auto serial = run(pa::Serial{});
    for (int n : kPoolSizes) {
      pa::ThreadPool pool(n);
      const auto got = run(pool);
      EXPECT_EQ(got.first, serial.first) << "GDN o, " << n << " threads";
      EXPECT_EQ(got.second, serial.second) << "GDN state pool, " << n << " threads";
    }
  }
  {
    constexpr index_t P = 8, G = 1, N = 16;
    const pa::Mamba2 op(pa::gates::TimeStep{.softplus = true});
    const auto x = random_vector(B * T * H * P, 11), dt = random_vector(B * T * H, 12, -4.f, 1.f),
               A = random_vector(H, 13, -3.f, -0.2f), Bm = random_vector(B * T * G * N, 14),
               Cm = random_vector(B * T * G * N, 15), D = random_vector(H, 16),
               pool0 = random_vector(kSlots * H * P * N, 17, -0.5f, 0.5f);
    const pa::Mamba2Inputs in{.x = pa::bthd(x.data(), B, T, H, P),
                              .dt = pa::bth(dt.data(), B, T, H),
                              .A = pa::View1<const float>::contiguous(A.data(), {H}),
                              .Bm = pa::bthd(Bm.data(), B, T, G, N),
                              .Cm = pa::bthd(Cm.data(), B, T, G, N),
                              .D = pa::View1<const float>::contiguous(D.data(), {H}),
                              .state_indices = idx};
    auto run = [&](const auto& exec) {
      std::vector<float> pool = pool0, y(B * T * H * P);
      pa::linear::VerifyCache cache;
      op.verify(in, pa::bhkv(std::as_const(pool).data(), kSlots, H, P, N),
                pa::bthd(y.data(), B, T, H, P), cache, exec);
      op.commit(cache, accepted, pa::bhkv(pool.data(), kSlots, H, P, N), exec);
      return std::pair{y, pool};
    };
    const auto serial = run(pa::Serial{});
    for (int n : kPoolSizes) {
      pa::ThreadPool pool(n);
      const auto got = run(pool);
      EXPECT_EQ(got.first, serial.first) << "Mamba2 y, " << n << " threads";
      EXPECT_EQ(got.second, serial.second) << "Mamba2 state pool, " << n << " threads";
    }
  }
}

// Prefill of three packed sequences (one empty) with snapshots into a snapshot pool, Chunked
// and Recurrent: o, final states and every snapshot slot as the serial executor's.
TEST(Concurrency, SnapshotPrefillOnThreadPoolsGetsSerialBits) {
  constexpr index_t T = 70, H = 2, K = 16, V = 12, kSlots = 6;
  const std::vector<std::int64_t> cu{0, 40, 40, 70}, pos{16, 33, 40, 0, 5, 30}, off{0, 3, 4, 6},
      slots{3, 0, 5, 1, 4, 2};
  const auto op = pa::presets::make_gated_delta_rule();
  const auto q = random_vector(T * H * K, 21), k = random_vector(T * H * K, 22),
             v = random_vector(T * H * V, 23), g = random_vector(T * H, 24, -0.2f, -0.01f),
             beta = random_vector(T * H, 25, 0.05f, 0.95f),
             h0 = random_vector(3 * H * K * V, 26, -0.5f, 0.5f);
  const pa::LinearInputs in{.q = pa::bthd(q.data(), 1, T, H, K),
                            .k = pa::bthd(k.data(), 1, T, H, K),
                            .v = pa::bthd(v.data(), 1, T, H, V),
                            .g = pa::bth(g.data(), 1, T, H),
                            .beta = pa::bth(beta.data(), 1, T, H),
                            .initial_state = pa::bhkv(h0.data(), 3, H, K, V),
                            .cu_seqlens = cu,
                            .snapshot_positions = pos,
                            .snapshot_offsets = off,
                            .snapshot_slots = slots};
  auto run = [&](auto algo, const auto& exec) {
    std::vector<float> o(T * H * V), ht(3 * H * K * V), snaps(kSlots * H * K * V, 9.f);
    op.forward<decltype(algo)>(in,
                               {.o = pa::bthd(o.data(), 1, T, H, V),
                                .final_state = pa::bhkv(ht.data(), 3, H, K, V),
                                .snapshots = pa::bhkv(snaps.data(), kSlots, H, K, V)},
                               {}, exec);
    return std::vector<std::vector<float>>{o, ht, snaps};
  };
  const auto chunked = run(pa::Chunked<16>{}, pa::Serial{});
  const auto recurrent = run(pa::Recurrent{}, pa::Serial{});
  for (int n : kPoolSizes) {
    pa::ThreadPool pool(n);
    EXPECT_EQ(run(pa::Chunked<16>{}, pool), chunked) << "Chunked<16>, " << n << " threads";
    EXPECT_EQ(run(pa::Recurrent{}, pool), recurrent) << "Recurrent, " << n << " threads";
  }
}

}  // namespace
