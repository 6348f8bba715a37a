#include "common/ids.h"

#include <algorithm>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

constexpr absl::string_view kCrockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

// The 48-bit millisecond timestamp in the first 10 ULID characters.
int64_t DecodeTimestampMs(absl::string_view id) {
  int64_t ms = 0;
  for (const char c : id.substr(3, 10)) {
    ms = ms * 32 + static_cast<int64_t>(kCrockford.find(c));
  }
  return ms;
}

TEST(NewPayoutIdTest, HasTheDocumentedForm) {
  const std::string id = NewPayoutId(absl::Now());
  ASSERT_EQ(id.size(), 29u);
  EXPECT_EQ(id.substr(0, 3), "po_");
  for (const char c : id.substr(3)) {
    EXPECT_NE(kCrockford.find(c), absl::string_view::npos) << id;
  }
  EXPECT_TRUE(IsPayoutId(id)) << id;
}

TEST(NewPayoutIdTest, MonotonicInATightLoopWithTheRealClock) {
  std::string previous = NewPayoutId(absl::Now());
  for (int i = 0; i < 10'000; ++i) {
    const std::string next = NewPayoutId(absl::Now());
    ASSERT_LT(previous, next) << "at " << i;
    previous = next;
  }
}

TEST(NewPayoutIdTest, UniqueOver100kAcrossThreads) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 25'000;
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&ids, t] {
      ids[t].reserve(kPerThread);
      for (int i = 0; i < kPerThread; ++i) {
        ids[t].push_back(NewPayoutId(absl::Now()));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::set<std::string> unique;
  for (const auto& list : ids) {
    // Each thread sees its own ids in increasing order.
    EXPECT_TRUE(std::is_sorted(list.begin(), list.end()));
    unique.insert(list.begin(), list.end());
  }
  EXPECT_EQ(unique.size(), static_cast<size_t>(kThreads * kPerThread));
}

// The generator is process-wide and never goes back in time, so the tests
// below that pass their own clock use far-future times that increase in the
// order the tests are declared (ctest also runs each test in its own process).

TEST(NewPayoutIdTest, EncodesTheTimestamp) {
  const std::string id = NewPayoutId(absl::FromUnixMillis(4'000'000'000'123));
  EXPECT_EQ(DecodeTimestampMs(id), 4'000'000'000'123) << id;
}

TEST(NewPayoutIdTest, SortsByTime) {
  const absl::Time base = absl::FromUnixMillis(5'000'000'000'000);
  const std::string earlier = NewPayoutId(base);
  const std::string later = NewPayoutId(base + absl::Milliseconds(1));
  const std::string much_later = NewPayoutId(base + absl::Hours(24));
  EXPECT_LT(earlier, later);
  EXPECT_LT(later, much_later);
  EXPECT_EQ(DecodeTimestampMs(much_later) - DecodeTimestampMs(earlier),
            24 * 3600 * 1000);
}

TEST(NewPayoutIdTest, MonotonicWithinOneMillisecond) {
  const absl::Time frozen = absl::FromUnixMillis(6'000'000'000'000);
  std::string previous = NewPayoutId(frozen);
  for (int i = 0; i < 10'000; ++i) {
    const std::string next = NewPayoutId(frozen);
    ASSERT_LT(previous, next) << "at " << i;
    previous = next;
  }
}

TEST(NewPayoutIdTest, MonotonicWhenTheClockStepsBack) {
  const absl::Time base = absl::FromUnixMillis(7'000'000'000'000);
  const std::string first = NewPayoutId(base);
  const std::string second = NewPayoutId(base - absl::Seconds(5));
  EXPECT_LT(first, second);
}

struct IdCase {
  std::string id;
  bool valid;
};

class IsPayoutIdTest : public testing::TestWithParam<IdCase> {};

TEST_P(IsPayoutIdTest, Classifies) {
  EXPECT_EQ(IsPayoutId(GetParam().id), GetParam().valid) << GetParam().id;
}

INSTANTIATE_TEST_SUITE_P(
    Table, IsPayoutIdTest,
    testing::Values(
        IdCase{"po_01JN2W3X4Y5Z6A7B8C9D0EFGHJ", true},
        IdCase{"po_7ZZZZZZZZZZZZZZZZZZZZZZZZZ", true},
        IdCase{"po_00000000000000000000000000", true},
        IdCase{"po_8ZZZZZZZZZZZZZZZZZZZZZZZZZ", false},  // past 48 bits
        IdCase{"po_01JN2W3X4Y5Z6A7B8C9D0EFGH", false},   // 25 characters
        IdCase{"po_01JN2W3X4Y5Z6A7B8C9D0EFGHJK", false},
        IdCase{"po_01jn2w3x4y5z6a7b8c9d0efghj", false},  // lower case
        IdCase{"po_01JN2W3X4Y5Z6A7B8C9D0EFGHI", false},  // I
        IdCase{"po_01JN2W3X4Y5Z6A7B8C9D0EFGHL", false},  // L
        IdCase{"po_01JN2W3X4Y5Z6A7B8C9D0EFGHO", false},  // O
        IdCase{"po_01JN2W3X4Y5Z6A7B8C9D0EFGHU", false},  // U
        IdCase{"px_01JN2W3X4Y5Z6A7B8C9D0EFGHJ", false},
        IdCase{"01JN2W3X4Y5Z6A7B8C9D0EFGHJ", false}, IdCase{"", false},
        IdCase{"po_", false}));

}  // namespace
}  // namespace aopay
