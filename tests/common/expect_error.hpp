// tests/common/expect_error.hpp — asserting that a call fails with polyattn::Error about an
// argument.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "polyattn/core/error.hpp"

namespace polyattn::test {

// Runs f, expects polyattn::Error naming `name` (as its argument and in its message), and
// returns the message.
template <class F>
std::string expect_error(const char* name, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.argument(), name);
    const std::string what = e.what();
    EXPECT_NE(what.find(std::string("'") + name + "'"), std::string::npos) << what;
    return what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type for '" << name << "': " << e.what();
    return {};
  } catch (...) {
    ADD_FAILURE() << "wrong exception type for '" << name << "'";
    return {};
  }
  ADD_FAILURE() << "no exception for '" << name << "'";
  return {};
}

}  // namespace polyattn::test
