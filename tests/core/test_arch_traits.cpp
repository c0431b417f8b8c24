// tests/core/test_arch_traits.cpp — the Arch tunables (core/simd/arch.hpp) derive the register
// blocking every ISA had when it was tuned by hand: 4-vector panels with 32 registers (AVX-512,
// NEON, and unrolled scalar code), 2-vector panels with 16 (AVX2, SSE4.2); 6 rows per micro-block
// for multi-vector panels, 8 for one-vector panels (neon: 5 for its 4-vector panels, whose
// broadcast operands take one register per row).
#include <gtest/gtest.h>

#include "polyattn/core/simd/arch.hpp"

namespace {

using namespace polyattn::simd;

template <class A>
void expect_blocking(int panel, int width, int rows_of_widest = 6) {
  EXPECT_EQ(panel_vectors<A>, panel) << A::name();
  EXPECT_EQ(ArchTraits<A>::width, width) << A::name();
  for (int nb = 1; nb <= panel; nb *= 2) {
    const int mr = micro_rows<A>(nb);
    EXPECT_EQ(mr, nb == 1 ? 8 : nb == panel ? rows_of_widest : 6) << A::name() << " nb " << nb;
    // The micro-block's accumulators, B vectors and the broadcast operand(s) fit the registers.
    const int operands = ArchTraits<A>::lane_operands ? mr : 1;
    EXPECT_LE(mr * nb + nb + operands, ArchTraits<A>::vector_registers)
        << A::name() << " nb " << nb;
  }
}

TEST(ArchTraits, BlockingFollowsTheRegisterFile) {
  expect_blocking<scalar>(4, 1);
  expect_blocking<sse42>(2, 4);
  expect_blocking<avx2>(2, 8);
  expect_blocking<avx512>(4, 16);
  // AArch64: 32 × 128-bit registers; FMLA by element keeps each row's operand in a register.
  expect_blocking<neon>(4, 4, 5);
  EXPECT_EQ(kMaxBatchFloats, 16);
  EXPECT_EQ(kMaxBatchBytes, 64u);
}

}  // namespace
