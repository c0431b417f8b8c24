// tests/linear/gate_hook_kernels_unit.cpp — arch unit of test_linear_engine: RunGateHook for the
// unit's ISA (compiled once per ISA by polyattn_add_arch_units, never as an ordinary source).
#include "gate_hook_kernels.hpp"

POLYATTN_TEST_GATE_HOOK_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
