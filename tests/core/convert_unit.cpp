// tests/core/convert_unit.cpp — arch unit: compiled once per ISA by polyattn_add_arch_units
// (never as an ordinary source); instantiates ConvertOps for the unit's ISA.
#include "convert_under_test.hpp"

template struct polyattn::test::ConvertOps<POLYATTN_UNIT_ARCH>;
