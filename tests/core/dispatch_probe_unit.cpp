// tests/core/dispatch_probe_unit.cpp — arch unit for test_dispatch: Probe::operator() for the
// unit's ISA.
#include "dispatch_probe.hpp"

POLYATTN_TEST_PROBE_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
