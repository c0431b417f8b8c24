// tests/linear/test_linear_chunk_small.cpp — every preset with Chunked<16>, Chunked<32> against the
// reference.
#include <gtest/gtest.h>

#include "linear/preset_sweep.hpp"

namespace {

TEST(LinearChunked, Chunk16AllPresets) {
  polyattn::test::all_presets<polyattn::Chunked<16>>();
}
TEST(LinearChunked, Chunk32AllPresets) {
  polyattn::test::all_presets<polyattn::Chunked<32>>();
}

}  // namespace
