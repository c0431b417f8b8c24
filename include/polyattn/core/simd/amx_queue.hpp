// polyattn/core/simd/amx_queue.hpp — AMX block products (amx.hpp's amx_block_2x2) issued one
// k-step at a time (amx.hpp's amx_c_begin / amx_k_step / amx_c_end), so that a kernel can
// interleave them with its vector work:
//   job   C [32 × 32 fp32] (= or +=) Σ_{s < steps} A_s · B_s    (amx_block_2x2's operands)
//   step  one s of the job at the head: 4 tile loads and 4 tdpbf16ps (C loaded or zeroed before
//         its first step, stored after its last)
// A tdpbf16ps takes 16 cycles in the tile unit while the core runs on; but a whole product
// issued at once (32 tdpbf16ps for a 32 × 32 block with 128 channels) fills the reorder buffer
// with tile instructions waiting to retire, so vector work that follows overlaps only a part of
// it. Calling step() every few vector iterations is meant to keep both units busy; measured on an
// Emerald Rapids Xeon (the softmax body's block pattern in isolation), it took as long as the
// same tile products issued whole before the vector work: there the two do not overlap, and the
// queue is only the order of the work. Jobs run in order, except
// that push_next() puts a job right after the one in progress (whose C tiles are live): the job a
// kernel needs next (scores it reads right after) goes ahead of background work (products it
// reads only later). finish_next() / finish() run steps until those jobs / all jobs are done.
// C of a job must not be read or written by anything else until the job is done. Needs an
// AmxScope on this thread; with POLYATTN_AMX_EMULATE a job runs whole at its first step.
#pragma once

#include <cstdint>

#include "polyattn/core/simd/amx.hpp"

#if POLYATTN_HAVE_AMX

namespace polyattn::simd {
inline namespace POLYATTN_ISA_NS {

struct AmxJob {
  const void* a;  // A_s at a + s · a_step bytes: 32 rows of 64 bytes, stride lda bytes
  std::int64_t lda, a_step;
  const void* b;  // B_s at b + s · b_step bytes: 16 pair-rows of 128 bytes, stride ldb bytes
  std::int64_t ldb, b_step, steps;
  bool accumulate;  // C += (else C =)
  float* c;         // C [32][ldc] fp32
  std::int64_t ldc;
  bool next = false;  // (set by push_next)
};

template <int Capacity>
class AmxQueue {
 public:
  static_assert(Capacity >= 2);

  /// Whether no job is pending.
  bool empty() const noexcept { return count_ == 0; }

  /// Appends a job (background work); a full queue first runs steps until one job is done.
  POLYATTN_TARGET_AMX void push(AmxJob j) noexcept {
    while (count_ == Capacity) step();
    j.next = false;
    jobs_[(head_ + count_) % Capacity] = j;
    ++count_;
  }

  /// Puts a job after the job in progress and after the jobs pushed this way before it (a job
  /// the kernel will wait for with finish_next()).
  POLYATTN_TARGET_AMX void push_next(AmxJob j) noexcept {
    while (count_ == Capacity) step();
    j.next = true;
    // push_next's jobs sit together at the front, behind a started background job
    const int at = next_ + (started_ && !jobs_[head_].next ? 1 : 0);
    for (int i = count_; i > at; --i)
      jobs_[(head_ + i) % Capacity] = jobs_[(head_ + i - 1) % Capacity];
    jobs_[(head_ + at) % Capacity] = j;
    ++count_;
    ++next_;
  }

  /// One step of the job at the head (nothing when empty).
  POLYATTN_TARGET_AMX void step() noexcept {
    if (count_ == 0) return;
    const AmxJob& j = jobs_[head_];
#if POLYATTN_AMX_EMULATED
    amx_block_2x2(j.a, j.lda, j.a_step, j.b, j.ldb, j.b_step, j.steps, j.accumulate, j.c, j.ldc);
    pop();
#else
    if (!started_) {
      started_ = true;
      s_ = 0;
      amx_c_begin(j.accumulate, j.c, j.ldc);
    }
    if (s_ < j.steps) {
      amx_k_step(static_cast<const char*>(j.a) + s_ * j.a_step, j.lda,
                 static_cast<const char*>(j.b) + s_ * j.b_step, j.ldb);
      ++s_;
    }
    if (s_ >= j.steps) {
      amx_c_end(j.c, j.ldc);
      pop();
    }
#endif
  }

  /// Runs steps until the jobs of push_next() are done.
  POLYATTN_TARGET_AMX void finish_next() noexcept {
    while (next_ > 0) step();
  }

  /// Runs every pending job to its end.
  POLYATTN_TARGET_AMX void finish() noexcept {
    while (count_ > 0) step();
  }

 private:
  void pop() noexcept {
    if (jobs_[head_].next) --next_;
    head_ = (head_ + 1) % Capacity;
    --count_;
    started_ = false;
  }

  AmxJob jobs_[Capacity]{};
  int head_ = 0, count_ = 0;
  int next_ = 0;  // jobs of push_next() pending
  bool started_ = false;
  std::int64_t s_ = 0;  // steps done of the head job
};

}  // namespace POLYATTN_ISA_NS
}  // namespace polyattn::simd

#endif  // POLYATTN_HAVE_AMX
