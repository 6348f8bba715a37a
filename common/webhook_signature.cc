#include "common/webhook_signature.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace aopay {
namespace {

// Lower-case hex HMAC-SHA256 of "t.body".
std::string Mac(absl::string_view secret, int64_t seconds,
                absl::string_view body) {
  const std::string signed_text = absl::StrCat(seconds, ".", body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(signed_text.data()),
       signed_text.size(), mac, &length);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(mac), length));
}

}  // namespace

std::string SignWebhook(absl::string_view secret, absl::Time time,
                        absl::string_view body) {
  const int64_t seconds = absl::ToUnixSeconds(time);
  return absl::StrCat("t=", seconds, ",v1=", Mac(secret, seconds, body));
}

absl::Status VerifyWebhook(absl::string_view secret, absl::string_view header,
                           absl::string_view body, absl::Time now,
                           absl::Duration tolerance) {
  std::optional<int64_t> seconds;
  std::vector<absl::string_view> signatures;
  for (absl::string_view part :
       absl::StrSplit(header, ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    if (absl::ConsumePrefix(&part, "t=")) {
      int64_t value = 0;
      if (seconds.has_value() || !absl::SimpleAtoi(part, &value)) {
        return absl::InvalidArgumentError(
            "the signature header needs exactly one t=<unix seconds>");
      }
      seconds = value;
    } else if (absl::ConsumePrefix(&part, "v1=")) {
      signatures.push_back(part);
    }  // other schemes are ignored, as receivers should
  }
  if (!seconds.has_value() || signatures.empty()) {
    return absl::InvalidArgumentError(
        "the signature header needs t=<unix seconds> and at least one v1=");
  }
  const std::string expected = Mac(secret, *seconds, body);
  bool matched = false;
  for (absl::string_view signature : signatures) {
    // Every candidate is compared, in constant time for its length.
    if (signature.size() == expected.size() &&
        CRYPTO_memcmp(signature.data(), expected.data(), expected.size()) ==
            0) {
      matched = true;
    }
  }
  if (!matched) {
    return absl::UnauthenticatedError(
        "no v1 signature matches the body and the secret");
  }
  if (absl::AbsDuration(now - absl::FromUnixSeconds(*seconds)) > tolerance) {
    return absl::DeadlineExceededError(absl::StrCat(
        "the signature's time is more than ", absl::FormatDuration(tolerance),
        " from now: a replay, or a clock that is off"));
  }
  return absl::OkStatus();
}

}  // namespace aopay
