// InterpretPayoutAnswer (docs/aopay.md): every answer gets exactly
// one verdict, and the verdict never claims more than the answer says.
//
// Input: a first line with the HTTP status as three digits, followed by 't'
// when the body was cut at 1 MiB or 'c' when the connection cut it off; the
// rest is the body. Example:
//   200
//   {"statuss":"SUCCESS", ...}

#include <cstddef>
#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "common/aopay_codec.h"
#include "common/errors.h"
#include "tests/fuzz/answer_oracle.h"
#include "tests/fuzz/fuzz_util.h"

namespace aopay::fuzz {
namespace {

using Kind = PayoutVerdict::Kind;

bool Is2xx(int status) { return status >= 200 && status < 300; }

void CheckVerdict(const HttpAnswer& answer) {
  const PayoutVerdict verdict = InterpretPayoutAnswer(answer);
  const int http = answer.http_status;

  // Exactly one verdict kind, and the error goes with it.
  FUZZ_CHECK(verdict.kind == Kind::kAccepted ||
             verdict.kind == Kind::kRejected ||
             verdict.kind == Kind::kNotSent || verdict.kind == Kind::kUnknown);
  FUZZ_CHECK((verdict.kind == Kind::kAccepted) == verdict.error.ok());

  // Whatever is copied into the Payout is valid UTF-8 and bounded.
  for (const std::string* text :
       {&verdict.transaction_id, &verdict.transaction_reference_no,
        &verdict.upstream_status, &verdict.bank_beneficiary_name}) {
    FUZZ_CHECK(IsPrintableUtf8(*text));
    FUZZ_CHECK(text->size() <= 256);
  }
  FUZZ_CHECK(verdict.upstream_status.size() <= 64);

  const AnswerFacts facts = ReadAnswer(answer.body);
  switch (verdict.kind) {
    case Kind::kAccepted:
      // A trackable transaction id, from a 2xx success.
      FUZZ_CHECK(!verdict.transaction_id.empty());
      FUZZ_CHECK(verdict.transaction_id.size() <= 128);
      FUZZ_CHECK(verdict.state == PayoutState::kAccepted ||
                 verdict.state == PayoutState::kSucceeded);
      // The state is the one the kept status word means; no word: ACCEPTED.
      FUZZ_CHECK(verdict.upstream_status.empty()
                     ? verdict.state == PayoutState::kAccepted
                     : MapStatusWord(verdict.upstream_status) == verdict.state);
      FUZZ_CHECK(Is2xx(http) && !answer.truncated);
      FUZZ_CHECK(facts.says_success && !facts.says_error);
      FUZZ_CHECK(!facts.says_other_call_status);
      break;
    case Kind::kRejected:
      FUZZ_CHECK(verdict.state == PayoutState::kFailed);
      FUZZ_CHECK(http < 500 && http != 429 && !answer.truncated);
      // A refusal is believed only when nothing says AOPay took it.
      FUZZ_CHECK(!facts.names_transaction || !facts.says_error);
      FUZZ_CHECK(!(facts.says_error && facts.says_success));
      break;
    case Kind::kNotSent:
      FUZZ_CHECK(http == 429 && !answer.truncated);
      // docs/aopay.md: a 429 that speaks of success or names a transaction
      // may have been taken.
      FUZZ_CHECK(!facts.says_success && !facts.names_transaction);
      break;
    case Kind::kUnknown:
      FUZZ_CHECK(verdict.state == PayoutState::kUnknown);
      break;
  }
  if (answer.truncated || http >= 500)
    FUZZ_CHECK(verdict.kind == Kind::kUnknown);

  // A plain 429 (nothing in it that could say AOPay took the payout: no
  // success word, transaction id or reference, and none of the names whose
  // status words are read) is not sent.
  const std::string lower = absl::AsciiStrToLower(answer.body);
  bool plain = !absl::StrContains(lower, "\\");
  for (const char* marker :
       {"success", "transactionid", "transactionreferenceno", "statuss",
        "metadata", "resourcedata"}) {
    plain = plain && !absl::StrContains(lower, marker);
  }
  if (http == 429 && !answer.truncated && plain) {
    FUZZ_CHECK(verdict.kind == Kind::kNotSent);
  }

  if (verdict.kind != Kind::kAccepted) {
    FUZZ_CHECK(verdict.error.message().size() <= 1024);
    FUZZ_CHECK(IsUtf8(verdict.error.message()));
    const ErrorDetails details = GetErrorDetails(verdict.error);
    FUZZ_CHECK(!details.reason.empty());
    for (const auto& [key, value] : details.metadata) {
      FUZZ_CHECK(IsUtf8(key) && IsUtf8(value));
    }
    for (const FieldViolation& violation : details.violations) {
      FUZZ_CHECK(IsUtf8(violation.field) && IsUtf8(violation.description));
    }
  }
}

}  // namespace
}  // namespace aopay::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view input(reinterpret_cast<const char*>(data), size);
  absl::string_view first_line;
  if (!aopay::fuzz::TakeLine(input, first_line) || first_line.size() < 3) {
    return 0;
  }
  aopay::HttpAnswer answer;
  answer.http_status = aopay::fuzz::ThreeDigitStatus(first_line.substr(0, 3));
  if (answer.http_status < 0) return 0;
  answer.truncated = first_line.substr(3) == "t" || first_line.substr(3) == "c";
  if (first_line.substr(3) == "c") {
    answer.cut_off_by = "transfer closed with 50 bytes remaining to read";
  }
  answer.body = std::string(input);
  aopay::fuzz::CheckVerdict(answer);
  return 0;
}
