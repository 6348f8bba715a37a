// main() for the fault tests: a run in which a test was skipped (it cannot
// run on this machine) exits with 77, ctest's SKIP_RETURN_CODE for these
// tests, so that a skip is never reported as a pass.

#include "gtest/gtest.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int result = RUN_ALL_TESTS();
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  if (result == 0 && unit.skipped_test_count() > 0 &&
      unit.successful_test_count() == 0) {
    return 77;
  }
  return result;
}
