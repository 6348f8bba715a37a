#include "common/ids.h"

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"

namespace aopay {
namespace {

constexpr absl::string_view kPrefix = "po_";
constexpr size_t kUlidLength = 26;
constexpr char kCrockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
constexpr uint64_t kMaxTimestampMs = (uint64_t{1} << 48) - 1;

// 80 random bits: the top 16 in `high`, the low 64 in `low`.
struct Random80 {
  uint16_t high = 0;
  uint64_t low = 0;
};

class UlidGenerator {
 public:
  // Returns the timestamp and random part of the next ULID. Within one
  // millisecond (or when the clock steps back) the previous random part is
  // incremented, so ids from this process sort in the order they were made.
  void Next(uint64_t now_ms, uint64_t* timestamp_ms, Random80* random) {
    absl::MutexLock lock(&mutex_);
    if (has_last_ && now_ms <= last_ms_) {
      if (Increment(&last_random_)) {
        *timestamp_ms = last_ms_;
        *random = last_random_;
        return;
      }
      // 2^80 ids in one millisecond cannot happen; stay sortable anyway by
      // moving to the next millisecond.
      now_ms = last_ms_ + 1;
    }
    last_ms_ = now_ms;
    last_random_.high = absl::Uniform<uint16_t>(bitgen_);
    last_random_.low = absl::Uniform<uint64_t>(bitgen_);
    has_last_ = true;
    *timestamp_ms = last_ms_;
    *random = last_random_;
  }

 private:
  // Adds one; false when the 80 bits overflow.
  static bool Increment(Random80* random) {
    if (++random->low != 0) return true;
    return ++random->high != 0;
  }

  absl::Mutex mutex_;
  absl::BitGen bitgen_ ABSL_GUARDED_BY(mutex_);
  bool has_last_ ABSL_GUARDED_BY(mutex_) = false;
  uint64_t last_ms_ ABSL_GUARDED_BY(mutex_) = 0;
  Random80 last_random_ ABSL_GUARDED_BY(mutex_);
};

UlidGenerator& Generator() {
  static UlidGenerator* const generator = new UlidGenerator;
  return *generator;
}

bool IsCrockford(char c) {
  for (const char* p = kCrockford; *p != '\0'; ++p) {
    if (*p == c) return true;
  }
  return false;
}

}  // namespace

std::string NewPayoutId(absl::Time now) {
  const int64_t ms = absl::ToUnixMillis(now);
  uint64_t now_ms = ms < 0 ? 0 : static_cast<uint64_t>(ms);
  if (now_ms > kMaxTimestampMs) now_ms = kMaxTimestampMs;

  uint64_t timestamp_ms;
  Random80 random;
  Generator().Next(now_ms, &timestamp_ms, &random);

  std::string id(kPrefix.size() + kUlidLength, '0');
  id.replace(0, kPrefix.size(), kPrefix.data(), kPrefix.size());
  char* ulid = &id[kPrefix.size()];
  // 10 characters for the 48-bit timestamp (the first carries 3 bits).
  for (int i = 9; i >= 0; --i) {
    ulid[i] = kCrockford[timestamp_ms & 0x1F];
    timestamp_ms >>= 5;
  }
  // 16 characters for the 80 random bits.
  uint64_t low = random.low;
  uint64_t high = random.high;
  for (int i = 25; i >= 10; --i) {
    ulid[i] = kCrockford[low & 0x1F];
    low = (low >> 5) | ((high & 0x1F) << 59);
    high >>= 5;
  }
  return id;
}

bool IsPayoutId(absl::string_view id) {
  if (id.size() != kPrefix.size() + kUlidLength ||
      id.substr(0, kPrefix.size()) != kPrefix) {
    return false;
  }
  const absl::string_view ulid = id.substr(kPrefix.size());
  // The first character holds the timestamp's top 3 bits only.
  if (ulid[0] < '0' || ulid[0] > '7') return false;
  for (const char c : ulid) {
    if (!IsCrockford(c)) return false;
  }
  return true;
}

std::string EventCursor(int64_t position) {
  return absl::WebSafeBase64Escape(absl::StrCat("c1:", position));
}

std::optional<int64_t> ParseEventCursor(absl::string_view cursor) {
  std::string text;
  int64_t position = 0;
  if (!absl::WebSafeBase64Unescape(cursor, &text)) return std::nullopt;
  absl::string_view rest = text;
  if (!absl::ConsumePrefix(&rest, "c1:") ||
      !absl::SimpleAtoi(rest, &position) || position < 0) {
    return std::nullopt;
  }
  return position;
}

}  // namespace aopay
