// tests/core/dispatch_probe_unit.cpp — arch unit for test_dispatch: Probe::operator() for the
// unit's ISA.
#include "dispatch_probe.hpp"

POLYATTN_ARCH_UNIT_INSTANTIATE(POLYATTN_TEST_PROBE_SIG);
