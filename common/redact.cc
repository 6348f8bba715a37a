#include "common/redact.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace aopay {
namespace {

constexpr size_t kKeptDigits = 4;

// Keeps the last four characters and replaces the rest with 'X'. Kept bytes
// that are not printable ASCII become 'X' too: the inputs are digits when
// valid, and a mask must not put a broken UTF-8 tail or a control character
// into a log line.
std::string MaskAllButLastFour(absl::string_view text) {
  if (text.size() <= kKeptDigits) return "XXXX";
  std::string masked(text.size() - kKeptDigits, 'X');
  for (const char c : text.substr(text.size() - kKeptDigits)) {
    const bool printable = c >= 0x21 && c <= 0x7E;
    masked.push_back(printable ? c : 'X');
  }
  return masked;
}

}  // namespace

std::string MaskAccount(absl::string_view account_number) {
  return MaskAllButLastFour(account_number);
}

std::string MaskMobile(absl::string_view mobile) {
  return MaskAllButLastFour(mobile);
}

std::string MaskEmail(absl::string_view email) {
  const size_t at = email.rfind('@');
  if (at == absl::string_view::npos) return "***";
  const absl::string_view local = email.substr(0, at);
  const absl::string_view domain = email.substr(at + 1);
  std::string first;
  if (!local.empty() && local[0] >= 0x21 && local[0] <= 0x7E) {
    first.push_back(local[0]);
  }
  return absl::StrCat(first, "***@", domain);
}

std::string MaskRegistration(absl::string_view /*registration_id*/) {
  return "[redacted]";
}

std::string ScrubRegistration(absl::string_view text,
                              absl::string_view registration_id) {
  if (registration_id.empty()) return std::string(text);
  return absl::StrReplaceAll(text, {{registration_id, "[registration]"}});
}

}  // namespace aopay
