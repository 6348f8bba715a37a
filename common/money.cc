#include "common/money.h"

#include <limits>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace aopay {
namespace {

bool AllDigits(absl::string_view text) {
  for (const char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

std::string FormatRupees(int64_t paise) {
  // Work on the magnitude as unsigned so that INT64_MIN does not overflow.
  const bool negative = paise < 0;
  const uint64_t magnitude = negative ? 0 - static_cast<uint64_t>(paise)
                                      : static_cast<uint64_t>(paise);
  const uint64_t rupees = magnitude / 100;
  const uint64_t fraction = magnitude % 100;
  return absl::StrCat(negative ? "-" : "", rupees, ".",
                      fraction < 10 ? "0" : "", fraction);
}

absl::StatusOr<int64_t> ParseRupees(absl::string_view text) {
  if (text.empty()) {
    return absl::InvalidArgumentError("The amount is empty.");
  }
  const size_t dot = text.find('.');
  const absl::string_view whole = text.substr(0, dot);
  const absl::string_view fraction = dot == absl::string_view::npos
                                         ? absl::string_view()
                                         : text.substr(dot + 1);
  if (whole.empty() || !AllDigits(whole) ||
      (dot != absl::string_view::npos && fraction.empty()) ||
      !AllDigits(fraction)) {
    return absl::InvalidArgumentError(
        "The amount must be rupees written with digits only, like 12 or "
        "12.50: no sign, spaces, separators or exponent.");
  }
  if (fraction.size() > 2) {
    return absl::InvalidArgumentError(
        "The amount has more than two decimals; the smallest unit is one "
        "paisa (0.01).");
  }
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t paise = 0;
  for (const char c : whole) {
    const int digit = c - '0';
    if (paise > (kMax - digit) / 10) {
      return absl::InvalidArgumentError("The amount is too large.");
    }
    paise = paise * 10 + digit;
  }
  int64_t fraction_paise = 0;
  for (size_t i = 0; i < 2; ++i) {
    fraction_paise =
        fraction_paise * 10 + (i < fraction.size() ? fraction[i] - '0' : 0);
  }
  if (paise > (kMax - fraction_paise) / 100) {
    return absl::InvalidArgumentError("The amount is too large.");
  }
  return paise * 100 + fraction_paise;
}

}  // namespace aopay
