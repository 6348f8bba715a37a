#ifndef AOPAY_COMMON_AOPAY_CODEC_H_
#define AOPAY_COMMON_AOPAY_CODEC_H_

// AOPay's JSON, both ways (docs/aopay.md). Pure functions: no I/O.

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/payout.h"

namespace aopay {

inline constexpr absl::string_view kPayoutPath = "/api/V6/Payout/AOPPayout";
inline constexpr absl::string_view kStatusPath =
    "/api/V6/Payout/AOPPayoutStatus";
// Answers are read up to this size; larger ones are cut and unreadable.
inline constexpr size_t kMaxAnswerBytes = 1 << 20;

// What came back over HTTP.
struct HttpAnswer {
  int http_status = 0;
  std::string body;  // at most kMaxAnswerBytes
  // The body is not whole: it was longer than kMaxAnswerBytes, or the
  // connection failed before its end (cut_off_by says how). Such an answer
  // is always UNKNOWN, keeping what the same bytes whole would keep.
  bool truncated = false;
  std::string cut_off_by;  // the transport's words, when it failed mid-answer
};

// The payout body (docs/aopay.md): every value a JSON string, amount as rupees
// with two decimals. Takes a normalised request.
std::string BuildPayoutBody(const PayoutRequest& request,
                            absl::string_view registration_id);
// {"transactionID": ..., "registrationID": ...}
std::string BuildStatusBody(absl::string_view transaction_id,
                            absl::string_view registration_id);

// What AOPay's answer to a payout call means.
struct PayoutVerdict {
  enum class Kind {
    kAccepted,  // success: record the state below, return the Payout
    kRejected,  // AOPay refused it: record FAILED, return `error`
    kNotSent,   // certainly not sent (HTTP 429): record nothing, return `error`
    kUnknown,   // may have been sent: record UNKNOWN, return `error`
  };
  Kind kind = Kind::kUnknown;
  // kAccepted: ACCEPTED for ACPT and the other "still in progress" words of
  // docs/aopay.md, SUCCEEDED for the success words.
  PayoutState state = PayoutState::kUnknown;
  std::string transaction_id;
  std::string transaction_reference_no;
  std::string upstream_status;  // kept as StatusVerdict::word is
  std::string bank_beneficiary_name;
  // Not kAccepted: the error the caller gets (code, message, ErrorDetails
  // with upstreamSubCode / upstreamHttpStatus / upstreamMessage where known).
  absl::Status error;
};

// Interprets one answer to a payout call: the documented success, each
// documented error with its HTTP status or with 200, unknown subCodes,
// 429, 5xx, HTML, empty, invalid, truncated bodies, success without
// resourceData or transactionID. Never fails: anything it cannot read is
// kUnknown. Text copied out of the answer (transaction fields, AOPay's
// message) is made valid UTF-8 without control characters and bounded to 256
// bytes; a transactionID that is not printable UTF-8 of at most 128 bytes
// counts as missing (kUnknown: it could not be tracked).
PayoutVerdict InterpretPayoutAnswer(const HttpAnswer& answer);

// The verdict for a call that got no HTTP answer. `transport_error` comes from
// the upstream client: UNAVAILABLE and RESOURCE_EXHAUSTED mean certainly not
// sent (kNotSent); anything else means it may have been sent (kUnknown).
PayoutVerdict InterpretTransportFailure(const absl::Status& transport_error);

// What AOPay's status endpoint said (docs/aopay.md).
struct StatusVerdict {
  // The state the payout moves to; nullopt when the answer is not understood
  // (then nothing changes). ACCEPTED for the "still in progress" words.
  std::optional<PayoutState> state;
  // The status word found (may be empty), as it is kept: without the white
  // space around it, valid UTF-8 without control characters, at most 64
  // bytes.
  std::string word;
};

// Reads an answer of the status endpoint about the payout whose AOPay
// transaction id is `transaction_id` (docs/aopay.md, "The status call"):
//   1. resourceData.status / resourceData.transactionStatus (resourceData at
//      the top or under any top-level object) is the payout's status;
//   2. without those, a top-level status / statuss / transactionStatus counts
//      only when the answer names `transaction_id` (top level or
//      resourceData): alone, such a word only says whether the call worked;
//   3. a top-level "status": "ERROR", a non-2xx status, a truncated or
//      unreadable body, an answer naming another transaction id, an unknown
//      word or two words that disagree are not understood (state nullopt).
// Words map case-insensitively with MapStatusWord. `word` is the first word
// found, even when not understood (for logs and audit).
StatusVerdict InterpretStatusAnswer(const HttpAnswer& answer,
                                    absl::string_view transaction_id);

// A transaction id the gateway can keep and send back: valid UTF-8 without
// control characters, 1 to 128 bytes.
bool IsTrackableTransactionId(absl::string_view id);

// Section 6.3 alone: nullopt for words it does not know.
std::optional<PayoutState> MapStatusWord(absl::string_view word);

}  // namespace aopay

#endif  // AOPAY_COMMON_AOPAY_CODEC_H_
