// tests/core/simd_ops_unit.cpp — arch unit: compiled once per ISA by polyattn_add_arch_units
// (never as an ordinary source); instantiates SimdOps for the unit's ISA.
#include "simd_ops_under_test.hpp"

template struct polyattn::test::SimdOps<POLYATTN_UNIT_ARCH>;
