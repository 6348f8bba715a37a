// Money (common/money.h): FormatRupees and ParseRupees agree with each other
// and with an independent reading of the grammar, for every int64.
//
// Input: the first 8 bytes are an amount in paise (little-endian int64); the
// whole input is also parsed as typed rupees.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/money.h"
#include "tests/fuzz/fuzz_util.h"

namespace aopay::fuzz {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// "R.PP" with R in canonical decimal (no leading zero unless R is 0).
bool IsCanonicalRupees(absl::string_view text) {
  if (text.size() < 4 || text[text.size() - 3] != '.') return false;
  const absl::string_view whole = text.substr(0, text.size() - 3);
  if (whole.size() > 1 && whole[0] == '0') return false;
  for (const char c : whole) {
    if (!IsDigit(c)) return false;
  }
  return IsDigit(text[text.size() - 2]) && IsDigit(text[text.size() - 1]);
}

// The paise a person meant by `text` (digits, optionally '.' and one or two
// digits), or nullopt when it breaks the grammar or exceeds int64.
std::optional<int64_t> ExpectedPaise(absl::string_view text) {
  const size_t dot = text.find('.');
  const absl::string_view whole = text.substr(0, dot);
  const absl::string_view fraction =
      dot == absl::string_view::npos ? "" : text.substr(dot + 1);
  if (whole.empty()) return std::nullopt;
  if (dot != absl::string_view::npos &&
      (fraction.empty() || fraction.size() > 2)) {
    return std::nullopt;
  }
  for (const char c : whole) {
    if (!IsDigit(c)) return std::nullopt;
  }
  for (const char c : fraction) {
    if (!IsDigit(c)) return std::nullopt;
  }
  unsigned __int128 value = 0;
  for (const char c : whole) {
    value = value * 10 + static_cast<unsigned>(c - '0');
    if (value > static_cast<unsigned __int128>(kMax)) return std::nullopt;
  }
  value *= 100;
  if (fraction.size() >= 1)
    value += 10 * static_cast<unsigned>(fraction[0] - '0');
  if (fraction.size() == 2) value += static_cast<unsigned>(fraction[1] - '0');
  if (value > static_cast<unsigned __int128>(kMax)) return std::nullopt;
  return static_cast<int64_t>(value);
}

void CheckAmount(int64_t paise) {
  const std::string text = FormatRupees(paise);
  if (paise >= 0) {
    FUZZ_CHECK(IsCanonicalRupees(text));
    const absl::StatusOr<int64_t> back = ParseRupees(text);
    FUZZ_CHECK(back.ok() && *back == paise);
    return;
  }
  // Negative amounts are written with a '-' that ParseRupees refuses.
  FUZZ_CHECK(text[0] == '-' && IsCanonicalRupees(text.substr(1)));
  FUZZ_CHECK(!ParseRupees(text).ok());
  const absl::StatusOr<int64_t> magnitude = ParseRupees(text.substr(1));
  if (paise == std::numeric_limits<int64_t>::min()) {
    FUZZ_CHECK(!magnitude.ok());  // 2^63 paise does not fit
  } else {
    FUZZ_CHECK(magnitude.ok() && *magnitude == -paise);
  }
}

void CheckText(absl::string_view text) {
  const absl::StatusOr<int64_t> parsed = ParseRupees(text);
  const std::optional<int64_t> expected = ExpectedPaise(text);
  FUZZ_CHECK(parsed.ok() == expected.has_value());
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(IsUtf8(parsed.status().message()));
    return;
  }
  FUZZ_CHECK(*parsed == *expected && *parsed >= 0);
  FUZZ_CHECK(ParseRupees(FormatRupees(*parsed)).value_or(-1) == *parsed);
}

}  // namespace
}  // namespace aopay::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= sizeof(int64_t)) {
    uint64_t bits = 0;
    for (size_t i = 0; i < sizeof(bits); ++i) {
      bits |= static_cast<uint64_t>(data[i]) << (8 * i);
    }
    int64_t paise;
    std::memcpy(&paise, &bits, sizeof(paise));
    aopay::fuzz::CheckAmount(paise);
  }
  aopay::fuzz::CheckText(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
