// tests/linear/stage_kernels_unit.cpp — arch unit of test_linear_stages: RunStage for the unit's
// ISA (compiled once per ISA by polyattn_add_arch_units, never as an ordinary source).
#include "stage_kernels.hpp"

POLYATTN_TEST_STAGE_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
