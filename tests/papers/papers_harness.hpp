// tests/papers/papers_harness.hpp — small helpers shared by the papers' system tests.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/precision.hpp"
#include "common/test_util.hpp"
#include "polyattn/core/error.hpp"

namespace polyattn::test {

inline std::size_t count(index_t a, index_t b = 1, index_t c = 1, index_t d = 1) {
  return static_cast<std::size_t>(a * b * c * d);
}

// Runs f, expects polyattn::Error naming `arg`, and that `guard` kept its bits.
template <class F>
void expect_error_untouched(F&& f, const std::string& arg, const std::vector<float>& guard,
                            const std::string& what) {
  const std::vector<float> before = guard;
  try {
    f();
    ADD_FAILURE() << what << ": no polyattn::Error thrown (expected one naming " << arg << ")";
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), arg) << what << ": " << e.what();
  }
  EXPECT_EQ(std::memcmp(before.data(), guard.data(), before.size() * sizeof(float)), 0)
      << what << ": output changed";
}

}  // namespace polyattn::test
