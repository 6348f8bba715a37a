// InterpretStatusAnswer (docs/aopay.md): a state comes only from
// a known status word in an answer that is understood; anything else changes
// nothing.
//
// Input: a first line with the HTTP status as three digits, followed by 't'
// when the body was cut at 1 MiB; a second line with the payout's own
// transaction id; the rest is the body. Example:
//   200
//   TERF920898
//   {"resourceData":{"transactionID":"TERF920898","status":"ACSC"}}

#include <cstddef>
#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "common/aopay_codec.h"
#include "tests/fuzz/answer_oracle.h"
#include "tests/fuzz/fuzz_util.h"

namespace aopay::fuzz {
namespace {

void CheckVerdict(const HttpAnswer& answer, absl::string_view transaction_id) {
  const StatusVerdict verdict = InterpretStatusAnswer(answer, transaction_id);
  const int http = answer.http_status;

  FUZZ_CHECK(IsPrintableUtf8(verdict.word));
  FUZZ_CHECK(verdict.word.size() <= 64);
  if (http < 200 || http > 299 || answer.truncated) {
    FUZZ_CHECK(!verdict.state.has_value());
  }
  if (!verdict.state.has_value()) return;

  // Only a known word (docs/aopay.md), and the state that word means.
  FUZZ_CHECK(!verdict.word.empty());
  const std::optional<PayoutState> meant = MapStatusWord(verdict.word);
  FUZZ_CHECK(meant.has_value() && *meant == *verdict.state);
  FUZZ_CHECK(*verdict.state == PayoutState::kAccepted ||
             *verdict.state == PayoutState::kSucceeded ||
             *verdict.state == PayoutState::kFailed ||
             *verdict.state == PayoutState::kReversed);

  const AnswerFacts facts = ReadAnswer(answer.body);
  FUZZ_CHECK(facts.is_object && !facts.says_error);
  // Without resourceData, a top-level word counts only beside the payout's
  // own transaction id (docs/aopay.md, rule 2; white space around either id
  // does not count).
  if (!facts.has_resource_data) {
    FUZZ_CHECK(!transaction_id.empty() && facts.names_transaction);
    FUZZ_CHECK(absl::StrContains(answer.body, "\\") ||
               absl::StrContains(answer.body,
                                 absl::StripAsciiWhitespace(transaction_id)));
  }
}

}  // namespace
}  // namespace aopay::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view input(reinterpret_cast<const char*>(data), size);
  absl::string_view first_line;
  absl::string_view transaction_id;
  if (!aopay::fuzz::TakeLine(input, first_line) || first_line.size() < 3 ||
      !aopay::fuzz::TakeLine(input, transaction_id)) {
    return 0;
  }
  aopay::HttpAnswer answer;
  answer.http_status = aopay::fuzz::ThreeDigitStatus(first_line.substr(0, 3));
  if (answer.http_status < 0) return 0;
  answer.truncated = first_line.substr(3) == "t";
  answer.body = std::string(input);
  aopay::fuzz::CheckVerdict(answer, transaction_id);
  return 0;
}
