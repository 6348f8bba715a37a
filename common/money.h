#ifndef AOPAY_COMMON_MONEY_H_
#define AOPAY_COMMON_MONEY_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aopay {

// Rupees with exactly two decimals, computed with integers: 1234 -> "12.34",
// 5 -> "0.05", 0 -> "0.00". Negative amounts get a leading '-'.
std::string FormatRupees(int64_t paise);

// Parses a rupee amount typed by a person: "12", "12.3", "12.30", "0.05"
// (leading zeros are fine: "007.50"). There must be at least one digit on each
// side of a '.': ".5" and "12." are rejected as likely typos. Rejects signs,
// exponents, separators, whitespace, more than two decimals, empty input and
// anything that overflows int64 paise (INVALID_ARGUMENT, with a message that
// says why).
[[nodiscard]] absl::StatusOr<int64_t> ParseRupees(absl::string_view text);

}  // namespace aopay

#endif  // AOPAY_COMMON_MONEY_H_
