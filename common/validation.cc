#include "common/validation.h"

#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/errors.h"
#include "common/money.h"
#include "common/text_util.h"

namespace aopay {
namespace {

constexpr size_t kMaxRequestIdLength = 64;
constexpr size_t kMinAccountDigits = 9;
constexpr size_t kMaxAccountDigits = 18;
constexpr size_t kMaxNameCharacters = 100;
constexpr size_t kMaxEmailLength = 254;
constexpr size_t kMobileDigits = 10;

constexpr absl::string_view kRequired = "is required";

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }

bool AllDigits(absl::string_view text) {
  for (const char c : text) {
    if (!IsDigit(c)) return false;
  }
  return true;
}

bool IsRequestIdChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
         c == '-';
}

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == ' ' ||
         c == '.' || c == '\'' || c == '-' || c == '&';
}

// Printable ASCII other than space.
bool IsEmailChar(char c) { return c >= 0x21 && c <= 0x7E; }

class Violations {
 public:
  void Add(absl::string_view field, std::string description) {
    list_.push_back({std::string(field), std::move(description)});
  }
  bool empty() const { return list_.empty(); }
  std::vector<FieldViolation> Take() { return std::move(list_); }

 private:
  std::vector<FieldViolation> list_;
};

void CheckRequestId(absl::string_view id, Violations& violations) {
  constexpr absl::string_view kField = "request_id";
  if (id.empty()) {
    violations.Add(kField, std::string(kRequired));
    return;
  }
  bool valid = id.size() <= kMaxRequestIdLength;
  for (const char c : id) valid = valid && IsRequestIdChar(c);
  if (!valid) {
    violations.Add(kField,
                   "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'");
  }
}

void CheckAccountNumber(absl::string_view account, Violations& violations) {
  constexpr absl::string_view kField = "beneficiary.account_number";
  if (account.empty()) {
    violations.Add(kField, std::string(kRequired));
  } else if (account.size() < kMinAccountDigits ||
             account.size() > kMaxAccountDigits || !AllDigits(account)) {
    violations.Add(kField, "must be 9 to 18 digits");
  }
}

void CheckIfsc(absl::string_view ifsc, Violations& violations) {
  constexpr absl::string_view kField = "beneficiary.ifsc";
  if (ifsc.empty()) {
    violations.Add(kField, std::string(kRequired));
    return;
  }
  // ^[A-Z]{4}0[A-Z0-9]{6}$
  bool valid = ifsc.size() == 11 && ifsc[4] == '0';
  for (size_t i = 0; valid && i < ifsc.size(); ++i) {
    if (i < 4) {
      valid = IsUpper(ifsc[i]);
    } else if (i > 4) {
      valid = IsUpper(ifsc[i]) || IsDigit(ifsc[i]);
    }
  }
  if (!valid) {
    violations.Add(kField,
                   "must be 4 letters, the digit 0 and 6 letters or digits, "
                   "like SBIN0000002");
  }
}

void CheckName(absl::string_view name, Violations& violations) {
  constexpr absl::string_view kField = "beneficiary.name";
  if (name.empty()) {
    violations.Add(kField, std::string(kRequired));
    return;
  }
  if (text_internal::CountUtf8Chars(name) > kMaxNameCharacters) {
    violations.Add(kField, "must be at most 100 characters");
  }
  bool allowed = true;
  for (const char c : name) allowed = allowed && IsNameChar(c);
  if (!allowed) {
    violations.Add(kField,
                   "may contain only ASCII letters, digits, spaces and the "
                   "characters . ' - &");
  }
}

bool IsEmailShape(absl::string_view email) {
  for (const char c : email) {
    if (!IsEmailChar(c)) return false;
  }
  const std::vector<absl::string_view> parts = absl::StrSplit(email, '@');
  if (parts.size() != 2 || parts[0].empty()) return false;
  const absl::string_view domain = parts[1];
  if (!absl::StrContains(domain, '.')) return false;
  for (const absl::string_view label : absl::StrSplit(domain, '.')) {
    if (label.empty()) return false;
  }
  return true;
}

void CheckEmail(absl::string_view email, Violations& violations) {
  constexpr absl::string_view kField = "beneficiary.email";
  if (email.empty()) {
    violations.Add(kField, std::string(kRequired));
    return;
  }
  if (email.size() > kMaxEmailLength) {
    violations.Add(kField, "must be at most 254 characters");
  }
  if (!IsEmailShape(email)) {
    violations.Add(kField,
                   "must be one '@' between a non-empty local part and a "
                   "domain with a dot, in ASCII without spaces");
  }
}

void CheckMobile(absl::string_view mobile, Violations& violations) {
  constexpr absl::string_view kField = "beneficiary.mobile";
  if (mobile.empty()) {
    violations.Add(kField, std::string(kRequired));
  } else if (mobile.size() != kMobileDigits || !AllDigits(mobile) ||
             mobile[0] < '6') {
    violations.Add(kField,
                   "must be 10 digits starting with 6, 7, 8 or 9, optionally "
                   "after +91 or 0");
  }
}

void CheckAmount(int64_t amount_paise, TransferMode mode,
                 const ValidationLimits& limits, Violations& violations) {
  constexpr absl::string_view kField = "amount_paise";
  if (amount_paise <= 0) {
    violations.Add(kField, "must be greater than 0");
    return;
  }
  if (mode == TransferMode::kImps &&
      amount_paise > limits.imps_max_amount_paise) {
    violations.Add(
        kField,
        absl::StrCat("must be at most ", limits.imps_max_amount_paise,
                     " paise (Rs ", FormatRupees(limits.imps_max_amount_paise),
                     ") for IMPS"));
  }
  if (amount_paise > limits.max_amount_paise) {
    violations.Add(
        kField,
        absl::StrCat("must be at most ", limits.max_amount_paise, " paise (Rs ",
                     FormatRupees(limits.max_amount_paise), ")"));
  }
}

void CheckMode(TransferMode mode, Violations& violations) {
  if (mode != TransferMode::kNeft && mode != TransferMode::kImps) {
    violations.Add("mode", "must be NEFT or IMPS");
  }
}

std::string StripMobilePrefix(absl::string_view mobile) {
  if (!absl::ConsumePrefix(&mobile, "+91")) absl::ConsumePrefix(&mobile, "0");
  return std::string(mobile);
}

// One field of the fingerprint's input: its length, then its bytes, so that no
// two different requests encode the same ("ab"+"c" vs "a"+"bc").
// The caller's references: bounded in number and size. The descriptions
// name no key or value: metadata is never echoed.
void CheckMetadata(const Metadata& metadata, Violations& violations) {
  constexpr absl::string_view kField = "metadata";
  if (metadata.size() > static_cast<size_t>(kMaxMetadataKeys)) {
    violations.Add(
        kField, absl::StrCat("may have at most ", kMaxMetadataKeys, " keys"));
  }
  bool empty_key = false, long_key = false, long_value = false;
  for (const auto& [key, value] : metadata) {
    empty_key = empty_key || key.empty();
    long_key = long_key || text_internal::CountUtf8Chars(key) >
                               static_cast<size_t>(kMaxMetadataKeyChars);
    long_value = long_value || text_internal::CountUtf8Chars(value) >
                                   static_cast<size_t>(kMaxMetadataValueChars);
  }
  if (empty_key) violations.Add(kField, "keys must not be empty");
  if (long_key) {
    violations.Add(kField, absl::StrCat("keys must be at most ",
                                        kMaxMetadataKeyChars, " characters"));
  }
  if (long_value) {
    violations.Add(kField, absl::StrCat("values must be at most ",
                                        kMaxMetadataValueChars, " characters"));
  }
}

void AppendField(std::string& out, absl::string_view value) {
  absl::StrAppend(&out, value.size(), ":", value, ";");
}

}  // namespace

absl::StatusOr<PayoutRequest> NormalizeAndValidate(
    const PayoutRequest& request, const ValidationLimits& limits) {
  PayoutRequest normal = request;
  Beneficiary& beneficiary = normal.beneficiary;
  beneficiary.account_number =
      std::string(absl::StripAsciiWhitespace(beneficiary.account_number));
  beneficiary.ifsc =
      absl::AsciiStrToUpper(absl::StripAsciiWhitespace(beneficiary.ifsc));
  beneficiary.name = std::string(absl::StripAsciiWhitespace(beneficiary.name));
  beneficiary.email =
      std::string(absl::StripAsciiWhitespace(beneficiary.email));
  beneficiary.mobile =
      StripMobilePrefix(absl::StripAsciiWhitespace(beneficiary.mobile));

  Violations violations;
  CheckRequestId(normal.request_id, violations);
  CheckAccountNumber(beneficiary.account_number, violations);
  CheckIfsc(beneficiary.ifsc, violations);
  CheckName(beneficiary.name, violations);
  CheckEmail(beneficiary.email, violations);
  CheckMobile(beneficiary.mobile, violations);
  CheckAmount(normal.amount_paise, normal.mode, limits, violations);
  CheckMode(normal.mode, violations);
  CheckMetadata(normal.metadata, violations);
  if (!violations.empty()) return InvalidRequestError(violations.Take());
  return normal;
}

std::string RequestFingerprint(const PayoutRequest& normalized) {
  std::string canonical = "aopay.payout.v1;";
  AppendField(canonical, normalized.beneficiary.account_number);
  AppendField(canonical, normalized.beneficiary.ifsc);
  AppendField(canonical, normalized.beneficiary.name);
  AppendField(canonical, normalized.beneficiary.email);
  AppendField(canonical, normalized.beneficiary.mobile);
  AppendField(canonical, absl::StrCat(normalized.amount_paise));
  AppendField(canonical, absl::StrCat(static_cast<int>(normalized.mode)));
  // Only when there is metadata, so that the fingerprints of requests
  // without it (and of payouts recorded before metadata existed) stay as
  // they were.
  if (!normalized.metadata.empty()) {
    absl::StrAppend(&canonical, "metadata;");
    for (const auto& [key, value] : normalized.metadata) {
      AppendField(canonical, key);
      AppendField(canonical, value);
    }
  }

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  if (EVP_Digest(canonical.data(), canonical.size(), digest, &digest_length,
                 EVP_sha256(), nullptr) != 1) {
    // SHA-256 cannot fail on a working OpenSSL. Any fallback value would let
    // two different requests compare equal (a wrong replay) or leak the
    // parameters, so a broken crypto library stops the process.
    std::fputs("aopay: OpenSSL SHA-256 failed; cannot fingerprint requests\n",
               stderr);
    std::abort();
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), digest_length));
}

}  // namespace aopay
