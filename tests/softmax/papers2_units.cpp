// tests/softmax/papers2_units.cpp — per-ISA instantiations of the papers' fusion kernels
// (BlockRank, ACT) the test_papers_* tests run, through the kernel lists their headers export
// (compiled once per ISA by polyattn_add_arch_units, never as a plain source).
#include "softmax/papers2_kernels.hpp"

POLYATTN_PAPERS2_TEST_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
