// tests/core/amx_queue_under_test.hpp — the check of simd::AmxQueue (core/simd/amx_queue.hpp):
// jobs issued through a small queue in a seeded interleaving of push, push_next, step,
// finish_next and finish give the bits of the same jobs run one by one with amx_block_2x2 (in
// push order, push_next's in their own order; the two kinds write disjoint C blocks, as in the
// kernels), and push_next's C blocks are complete at each finish_next. amx_queue_unit.cpp
// compiles it in the avx512 unit (the tiles exist only there); the test TU sees the declaration.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "polyattn/core/simd/amx_queue.hpp"
#include "polyattn/core/simd/dispatch.hpp"

namespace polyattn::test {

template <simd::SimdArch A>
struct AmxQueueCheck {
  // "" when the queue agrees with the one-by-one products, else what differed. Needs the amx
  // level (real or emulated).
  static std::string run(std::uint32_t seed);
};

#if POLYATTN_HAVE_AMX
namespace amx_queue_detail {

inline constexpr int kSteps = 4, kBlocks = 6, kLdc = 40;  // C blocks 0–2 background, 3–5 next
struct Job {
  int block, steps;
  bool accumulate, next;
};
struct Event {
  enum Kind { push, push_next, step, finish_next } kind;
  int job = -1;
};

// A_s [32][32] bf16 and B_s [16][32] words for s < kSteps, per job.
struct Operands {
  std::vector<std::uint16_t> a;
  std::vector<std::uint32_t> b;
  Operands(int jobs, std::mt19937& rng) : a(jobs * kSteps * 32 * 32), b(jobs * kSteps * 16 * 32) {
    std::uniform_int_distribution<int> d(-64, 64);
    const auto value = [&] {  // small multiples of 2⁻⁴ as bf16 (exact in bf16)
      const float x = static_cast<float>(d(rng)) / 16.f;
      std::uint32_t u;
      std::memcpy(&u, &x, 4);
      return static_cast<std::uint16_t>(u >> 16);
    };
    for (auto& x : a) x = value();
    for (auto& w : b) w = value() | static_cast<std::uint32_t>(value()) << 16;
  }
  simd::AmxJob job(const Job& j, int index, float* c) const {
    return {a.data() + index * kSteps * 32 * 32,
            64,
            32 * 32 * 2,
            b.data() + index * kSteps * 16 * 32,
            128,
            16 * 128,
            j.steps,
            j.accumulate,
            c + j.block * 32 * kLdc,
            kLdc};
  }
};

}  // namespace amx_queue_detail

template <simd::SimdArch A>
std::string AmxQueueCheck<A>::run(std::uint32_t seed) {
  using namespace amx_queue_detail;
  std::mt19937 rng(seed);
  // The program: jobs in blocks, each block's first job '=', later ones '+='; push_next jobs
  // come in bursts of 1–3 followed (after a few steps) by a finish_next.
  std::vector<Job> jobs;
  std::vector<Event> events;
  bool seen[kBlocks] = {};
  const auto add = [&](bool next) {
    const int block = next ? 3 + static_cast<int>(rng() % 3) : static_cast<int>(rng() % 3);
    jobs.push_back({block, 1 + static_cast<int>(rng() % kSteps), seen[block], next});
    seen[block] = true;
    events.push_back({next ? Event::push_next : Event::push, static_cast<int>(jobs.size()) - 1});
  };
  for (int round = 0; round < 12; ++round) {
    for (int i = static_cast<int>(rng() % 4); i > 0; --i) add(false);
    for (int i = static_cast<int>(rng() % 4); i > 0; --i) events.push_back({Event::step});
    if (rng() % 2) {
      for (int i = 1 + static_cast<int>(rng() % 3); i > 0; --i) add(true);
      for (int i = static_cast<int>(rng() % 6); i > 0; --i) events.push_back({Event::step});
      events.push_back({Event::finish_next});
    }
  }
  const Operands ops(static_cast<int>(jobs.size()), rng);

  [[maybe_unused]] const simd::AmxScope tiles;
  // One by one: the whole program's final C, and the next blocks at each finish_next.
  std::vector<float> want(kBlocks * 32 * kLdc, -7.f), got(want);
  std::vector<std::vector<float>> want_at_finish;
  for (const Event& e : events) {
    if (e.kind == Event::finish_next) want_at_finish.push_back(want);
    if (e.kind != Event::push && e.kind != Event::push_next) continue;
    const simd::AmxJob j = ops.job(jobs[e.job], e.job, want.data());
    simd::amx_block_2x2(j.a, j.lda, j.a_step, j.b, j.ldb, j.b_step, j.steps, j.accumulate, j.c,
                        j.ldc);
  }
  // Through a queue of 4 (so that pushes also find it full).
  simd::AmxQueue<4> q;
  std::size_t checks = 0;
  for (const Event& e : events) {
    switch (e.kind) {
      case Event::push:
        q.push(ops.job(jobs[e.job], e.job, got.data()));
        break;
      case Event::push_next:
        q.push_next(ops.job(jobs[e.job], e.job, got.data()));
        break;
      case Event::step:
        q.step();
        break;
      case Event::finish_next: {
        q.finish_next();
        const std::vector<float>& w = want_at_finish[checks++];
        const std::size_t from = 3 * 32 * kLdc;
        if (std::memcmp(w.data() + from, got.data() + from, (w.size() - from) * 4) != 0)
          return "push_next's blocks differ at finish_next " + std::to_string(checks);
        break;
      }
    }
  }
  q.finish();
  if (!q.empty()) return "jobs left after finish";
  if (std::memcmp(want.data(), got.data(), want.size() * 4) != 0)
    return "final blocks differ (" + std::to_string(jobs.size()) + " jobs)";
  return "";
}
#endif

}  // namespace polyattn::test

#if defined(POLYATTN_UNIT_AVX512)
extern template struct polyattn::test::AmxQueueCheck<polyattn::simd::avx512>;
#endif
