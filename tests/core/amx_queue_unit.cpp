// tests/core/amx_queue_unit.cpp — arch unit: compiled for avx512 by polyattn_add_arch_units
// (never as an ordinary source); instantiates AmxQueueCheck there.
#include "amx_queue_under_test.hpp"

template struct polyattn::test::AmxQueueCheck<POLYATTN_UNIT_ARCH>;
