// tests/softmax/papers3_units.cpp — per-ISA instantiations of the papers' fusion kernels, part II
// (causal HyperAttention, …), through the kernel lists their headers export (compiled once per
// ISA by polyattn_add_arch_units, never as a plain source).
#include "softmax/papers3_kernels.hpp"

POLYATTN_PAPERS3_TEST_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
