#pragma once
// Skipping a test case that cannot run in this build or on this machine, visibly: skip() prints the marker line that
// makes CTest report the test as skipped ("Not Run", SKIP_REGULAR_EXPRESSION in tests/CMakeLists.txt) instead of
// passed, with the reason. Where an environment variable says the missing piece is required (CI sets them, see
// .ci/run), the test fails instead. The caller returns right after skip().
#include <catch2/catch.hpp>

#include <cstdlib>
#include <iostream>
#include <string>

namespace diffusion::testing {

inline void skip(const std::string& reason, const char* required_by = nullptr) {
  if (required_by != nullptr) {
    const char* value = std::getenv(required_by);
    if (value != nullptr && std::string(value) == "1") FAIL(reason + ", but " + required_by + "=1 requires it");
  }
  std::cout << DIFFUSION_TEST_SKIP_MARKER << ": " << reason << std::endl;
  WARN("skipped: " << reason);
  SUCCEED("skipped");  // the case asserted something (-w NoAssertions); the marker tells CTest it was skipped
}

}  // namespace diffusion::testing
