// Validation and the AOPay request body (docs/aopay.md, docs/api.md): any
// CreatePayoutRequest the server could receive is converted as the server
// converts it, validated, and — when valid — turned into AOPay's JSON body,
// which must say exactly what the normalised request says.
//
// Input: a serialised aopay.payout.v1.CreatePayoutRequest.

#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "aopay/payout/v1/payout.pb.h"
#include "common/aopay_codec.h"
#include "common/errors.h"
#include "common/money.h"
#include "common/validation.h"
#include "rapidjson/document.h"
#include "server/transport/proto_convert.h"
#include "tests/fuzz/fuzz_util.h"

namespace aopay::fuzz {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsAlnum(char c) {
  return IsDigit(c) || IsUpper(c) || (c >= 'a' && c <= 'z');
}

bool AllOf(absl::string_view text, bool (*allowed)(char)) {
  for (const char c : text) {
    if (!allowed(c)) return false;
  }
  return true;
}

// Section 5, read on the normalised request.
void CheckRules(const PayoutRequest& original, const PayoutRequest& n,
                const ValidationLimits& limits) {
  FUZZ_CHECK(n.request_id == original.request_id);  // never trimmed
  FUZZ_CHECK(!n.request_id.empty() && n.request_id.size() <= 64);
  FUZZ_CHECK(AllOf(n.request_id,
                   [](char c) { return IsAlnum(c) || c == '_' || c == '-'; }));

  const std::string& account = n.beneficiary.account_number;
  FUZZ_CHECK(account.size() >= 9 && account.size() <= 18);
  FUZZ_CHECK(AllOf(account, IsDigit));

  const std::string& ifsc = n.beneficiary.ifsc;
  FUZZ_CHECK(ifsc.size() == 11 && ifsc[4] == '0');
  FUZZ_CHECK(AllOf(absl::string_view(ifsc).substr(0, 4), IsUpper));
  FUZZ_CHECK(AllOf(absl::string_view(ifsc).substr(5),
                   [](char c) { return IsUpper(c) || IsDigit(c); }));

  const std::string& name = n.beneficiary.name;
  FUZZ_CHECK(!name.empty() && name.size() <= 100);
  FUZZ_CHECK(name.front() != ' ' && name.back() != ' ');
  FUZZ_CHECK(AllOf(name, [](char c) {
    return IsAlnum(c) || c == ' ' || c == '.' || c == '\'' || c == '-' ||
           c == '&';
  }));

  const std::string& email = n.beneficiary.email;
  FUZZ_CHECK(!email.empty() && email.size() <= 254);
  const size_t at = email.find('@');
  FUZZ_CHECK(at != std::string::npos && at > 0 &&
             email.find('@', at + 1) == std::string::npos);
  FUZZ_CHECK(email.find('.', at) != std::string::npos);
  FUZZ_CHECK(AllOf(email, [](char c) { return c > 0x20 && c < 0x7F; }));

  const std::string& mobile = n.beneficiary.mobile;
  FUZZ_CHECK(mobile.size() == 10 && AllOf(mobile, IsDigit) && mobile[0] >= '6');

  FUZZ_CHECK(n.mode == TransferMode::kNeft || n.mode == TransferMode::kImps);
  FUZZ_CHECK(n.amount_paise == original.amount_paise);
  FUZZ_CHECK(n.amount_paise > 0 && n.amount_paise <= limits.max_amount_paise);
  if (n.mode == TransferMode::kImps) {
    FUZZ_CHECK(n.amount_paise <= limits.imps_max_amount_paise);
  }
}

// The body says exactly what the request says: 8 keys, every value a string.
void CheckBody(const PayoutRequest& n, absl::string_view registration_id) {
  const std::string body = BuildPayoutBody(n, registration_id);
  rapidjson::Document document;
  document.Parse<rapidjson::kParseValidateEncodingFlag>(body.data(),
                                                        body.size());
  FUZZ_CHECK(!document.HasParseError() && document.IsObject());

  const std::map<std::string, std::string> expected = {
      {"accountNumber", n.beneficiary.account_number},
      {"amount", FormatRupees(n.amount_paise)},
      {"transactionType", n.mode == TransferMode::kImps ? "IMPS" : "NEFT"},
      {"beneficiaryIFSC", n.beneficiary.ifsc},
      {"beneficiaryName", n.beneficiary.name},
      {"emailID", n.beneficiary.email},
      {"mobileNo", n.beneficiary.mobile},
      {"registrationID", std::string(registration_id)},
  };
  FUZZ_CHECK(document.MemberCount() == expected.size());
  std::set<std::string> seen;
  for (const auto& member : document.GetObject()) {
    const std::string key(member.name.GetString(),
                          member.name.GetStringLength());
    FUZZ_CHECK(seen.insert(key).second);
    FUZZ_CHECK(member.value.IsString());
    const auto it = expected.find(key);
    FUZZ_CHECK(it != expected.end());
    FUZZ_CHECK(absl::string_view(member.value.GetString(),
                                 member.value.GetStringLength()) == it->second);
  }
  const absl::StatusOr<int64_t> amount =
      ParseRupees(document["amount"].GetString());
  FUZZ_CHECK(amount.ok() && *amount == n.amount_paise);
}

void CheckRequest(const payout::v1::CreatePayoutRequest& proto) {
  const ValidationLimits limits;
  const PayoutRequest request = FromProto(proto);
  const absl::StatusOr<PayoutRequest> normalized =
      NormalizeAndValidate(request, limits);
  if (!normalized.ok()) {
    const absl::Status& error = normalized.status();
    FUZZ_CHECK(error.code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(error.message().size() <= 1024 && IsUtf8(error.message()));
    const ErrorDetails details = GetErrorDetails(error);
    FUZZ_CHECK(details.reason == "INVALID_REQUEST");
    FUZZ_CHECK(!details.violations.empty());
    for (const FieldViolation& violation : details.violations) {
      FUZZ_CHECK(IsUtf8(violation.description));
    }
    return;
  }
  CheckRules(request, *normalized, limits);

  // Normalising is idempotent, so a replay fingerprints alike.
  const absl::StatusOr<PayoutRequest> again =
      NormalizeAndValidate(*normalized, limits);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->request_id == normalized->request_id &&
             again->beneficiary == normalized->beneficiary &&
             again->amount_paise == normalized->amount_paise &&
             again->mode == normalized->mode);
  FUZZ_CHECK(RequestFingerprint(*again) == RequestFingerprint(*normalized));

  CheckBody(*normalized, "AOP-554");
  // Registration ids come from a flag or a file: any text is escaped.
  CheckBody(*normalized, "AOP-\"\\/\n\t\x01\xE2\x82\xB9");
}

}  // namespace
}  // namespace aopay::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Invalid UTF-8 in string fields is a parse failure; do not log each one.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  aopay::payout::v1::CreatePayoutRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  aopay::fuzz::CheckRequest(request);
  return 0;
}
