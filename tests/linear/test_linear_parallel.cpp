// tests/linear/test_linear_parallel.cpp — every preset with Parallel against the reference.
#include <gtest/gtest.h>

#include "linear/preset_sweep.hpp"

namespace {

TEST(LinearParallel, AllPresets) {
  polyattn::test::all_presets<polyattn::Parallel>();
}

}  // namespace
