// tests/linear/test_linear_chunk_large.cpp — every preset with Chunked<64>, Chunked<128> against
// the reference.
#include <gtest/gtest.h>

#include "linear/preset_sweep.hpp"

namespace {

TEST(LinearChunked, Chunk64AllPresets) {
  polyattn::test::all_presets<polyattn::Chunked<64>>();
}
TEST(LinearChunked, Chunk128AllPresets) {
  polyattn::test::all_presets<polyattn::Chunked<128>>();
}

}  // namespace
