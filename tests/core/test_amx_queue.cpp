// tests/core/test_amx_queue.cpp — simd::AmxQueue (core/simd/amx_queue.hpp), the k-step issue of
// AMX block products that the bf16 softmax prefill interleaves with its exponentials: bit for bit
// the products of amx_block_2x2 run one by one, over seeded interleavings
// (amx_queue_under_test.hpp). Runs where the amx level is reported: on AMX hardware, or in a
// POLYATTN_AMX_EMULATE build with POLYATTN_AMX_EMULATE=1 (CI's emulated AMX section; there a job
// runs whole at its first step).
#include <gtest/gtest.h>

#include "amx_queue_under_test.hpp"

namespace {

namespace simd = polyattn::simd;

TEST(AmxQueue, MatchesTheProductsOneByOne) {
#if defined(POLYATTN_UNIT_AVX512)
  if (!simd::isa_at_least(simd::runtime_isa(), simd::Isa::amx))
    GTEST_SKIP() << "the amx level is not reported here";
  for (std::uint32_t seed = 1; seed <= 40; ++seed)
    EXPECT_EQ(polyattn::test::AmxQueueCheck<simd::avx512>::run(seed), "") << "seed " << seed;
#else
  GTEST_SKIP() << "built without the avx512 unit";
#endif
}

}  // namespace
