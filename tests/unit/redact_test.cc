#include "common/redact.h"

#include <string>

#include "gtest/gtest.h"

namespace aopay {
namespace {

struct MaskCase {
  std::string input;
  std::string masked;
};

class MaskAccountTest : public testing::TestWithParam<MaskCase> {};

TEST_P(MaskAccountTest, KeepsLastFour) {
  EXPECT_EQ(MaskAccount(GetParam().input), GetParam().masked);
}

INSTANTIATE_TEST_SUITE_P(
    Table, MaskAccountTest,
    testing::Values(MaskCase{"100000011836", "XXXXXXXX1836"},
                    MaskCase{"123456789", "XXXXX6789"},
                    MaskCase{"12345", "X2345"}, MaskCase{"1234", "XXXX"},
                    MaskCase{"12", "XXXX"}, MaskCase{"", "XXXX"},
                    // A broken or control tail is not copied into logs.
                    MaskCase{"12345\n", "XX345X"},
                    MaskCase{"1234567\xC3\xA9", "XXXXX67XX"}));

class MaskMobileTest : public testing::TestWithParam<MaskCase> {};

TEST_P(MaskMobileTest, KeepsLastFour) {
  EXPECT_EQ(MaskMobile(GetParam().input), GetParam().masked);
}

INSTANTIATE_TEST_SUITE_P(
    Table, MaskMobileTest,
    testing::Values(MaskCase{"9959640000", "XXXXXX0000"},
                    MaskCase{"+919959640000", "XXXXXXXXX0000"},
                    MaskCase{"0000", "XXXX"}, MaskCase{"", "XXXX"}));

class MaskEmailTest : public testing::TestWithParam<MaskCase> {};

TEST_P(MaskEmailTest, KeepsFirstCharacterAndDomain) {
  EXPECT_EQ(MaskEmail(GetParam().input), GetParam().masked);
}

INSTANTIATE_TEST_SUITE_P(
    Table, MaskEmailTest,
    testing::Values(MaskCase{"abc@gmail.com", "a***@gmail.com"},
                    MaskCase{"a@x.in", "a***@x.in"},
                    MaskCase{"@x.in", "***@x.in"},
                    MaskCase{"first.last@example.co.in", "f***@example.co.in"},
                    MaskCase{"a@b@c.com", "a***@c.com"},
                    MaskCase{"no-at-sign", "***"}, MaskCase{"", "***"},
                    MaskCase{"\xC3\xA9t\xC3\xA9@x.fr", "***@x.fr"}));

TEST(MaskTest, NeverReturnsWholeInput) {
  for (const std::string input :
       {"1", "12", "1234", "12345", "100000011836", "9959640000"}) {
    EXPECT_NE(MaskAccount(input), input);
    EXPECT_NE(MaskMobile(input), input);
  }
  for (const std::string input : {"a@b.c", "abc@gmail.com", "plain"}) {
    EXPECT_NE(MaskEmail(input), input);
  }
}

TEST(MaskRegistrationTest, AlwaysRedacted) {
  EXPECT_EQ(MaskRegistration("AOP-554"), "[redacted]");
  EXPECT_EQ(MaskRegistration(""), "[redacted]");
  EXPECT_EQ(MaskRegistration("AOP-SANDBOX-1234"), "[redacted]");
}

}  // namespace
}  // namespace aopay
