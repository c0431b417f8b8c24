// tests/softmax/fusion_units.cpp — per-ISA instantiations of test_softmax_fusion's kernels (its
// own kernel list; compiled once per ISA by polyattn_add_arch_units, never as a plain source).
#include "softmax/fusion_policies.hpp"

POLYATTN_TEST_FUSION_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
