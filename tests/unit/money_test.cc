#include "common/money.h"

#include <cstdint>
#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace aopay {
namespace {

struct FormatCase {
  int64_t paise;
  std::string rupees;
};

class FormatRupeesTest : public testing::TestWithParam<FormatCase> {};

TEST_P(FormatRupeesTest, FormatsWithTwoDecimals) {
  EXPECT_EQ(FormatRupees(GetParam().paise), GetParam().rupees);
}

INSTANTIATE_TEST_SUITE_P(
    Table, FormatRupeesTest,
    testing::Values(FormatCase{0, "0.00"}, FormatCase{1, "0.01"},
                    FormatCase{5, "0.05"}, FormatCase{10, "0.10"},
                    FormatCase{99, "0.99"}, FormatCase{100, "1.00"},
                    FormatCase{1200, "12.00"}, FormatCase{1234, "12.34"},
                    FormatCase{50'000'000, "500000.00"},
                    FormatCase{100'000'001, "1000000.01"},
                    FormatCase{std::numeric_limits<int64_t>::max(),
                               "92233720368547758.07"},
                    FormatCase{-1, "-0.01"}, FormatCase{-1234, "-12.34"},
                    FormatCase{std::numeric_limits<int64_t>::min(),
                               "-92233720368547758.08"}));

struct ParseCase {
  std::string text;
  int64_t paise;
};

class ParseRupeesAcceptsTest : public testing::TestWithParam<ParseCase> {};

TEST_P(ParseRupeesAcceptsTest, Parses) {
  const absl::StatusOr<int64_t> paise = ParseRupees(GetParam().text);
  ASSERT_TRUE(paise.ok()) << GetParam().text << ": " << paise.status();
  EXPECT_EQ(*paise, GetParam().paise);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseRupeesAcceptsTest,
    testing::Values(ParseCase{"12", 1200}, ParseCase{"12.3", 1230},
                    ParseCase{"12.30", 1230}, ParseCase{"12.34", 1234},
                    ParseCase{"0.05", 5}, ParseCase{"0", 0},
                    ParseCase{"0.00", 0}, ParseCase{"007.50", 750},
                    ParseCase{"500000", 50'000'000},
                    ParseCase{"92233720368547758.07",
                              std::numeric_limits<int64_t>::max()},
                    ParseCase{"92233720368547758", 9223372036854775800}));

class ParseRupeesRejectsTest : public testing::TestWithParam<std::string> {};

TEST_P(ParseRupeesRejectsTest, Rejects) {
  const absl::StatusOr<int64_t> paise = ParseRupees(GetParam());
  ASSERT_FALSE(paise.ok()) << "accepted \"" << GetParam() << "\"";
  EXPECT_EQ(paise.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(paise.status().message().empty());
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseRupeesRejectsTest,
    testing::Values("", "-1", "+1", "1e3", "1E3", "1,000", "12.345", " 12",
                    "12 ", ".5", "12.", ".", "abc", "12.3a", "1.2.3", "0x10",
                    "１２",  // full-width digits
                    "92233720368547758.08", "92233720368547759",
                    "99999999999999999999999", std::string("12\0", 3)));

TEST(ParseRupeesTest, RoundTripsWithFormat) {
  for (const int64_t paise :
       {int64_t{0}, int64_t{1}, int64_t{99}, int64_t{100}, int64_t{123456789},
        std::numeric_limits<int64_t>::max()}) {
    const absl::StatusOr<int64_t> parsed = ParseRupees(FormatRupees(paise));
    ASSERT_TRUE(parsed.ok()) << paise;
    EXPECT_EQ(*parsed, paise);
  }
}

}  // namespace
}  // namespace aopay
