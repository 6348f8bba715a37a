#ifndef AOPAY_SERVER_SANDBOX_WIRE_H_
#define AOPAY_SERVER_SANDBOX_WIRE_H_

// The bodies the sandbox reads and writes, spelled as AOPay spells them
// (docs/aopay.md; what AOPay does not document, as in docs/sandbox.md).
// RapidJSON directly: the sandbox must not share the gateway's codec.
// Stateless; every function may be called from any thread.

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace aopay::sandbox {

inline constexpr char kJsonContentType[] = "application/json";
inline constexpr char kHtmlContentType[] = "text/html; charset=utf-8";

// A payout request's eight documented fields.
struct PayoutRequest {
  std::string account_number;
  std::string amount;
  std::string transaction_type;
  std::string beneficiary_ifsc;
  std::string beneficiary_name;
  std::string email_id;
  std::string mobile_no;
  std::string registration_id;
};

// A status request's two fields.
struct StatusRequest {
  std::string transaction_id;
  std::string registration_id;
};

// Read as AOPay would: nullopt (AOPay's 412) for a Content-Type other than
// application/json, an empty or non-JSON body, a non-object, or any field
// missing or not a string.
std::optional<PayoutRequest> ParsePayoutRequest(absl::string_view content_type,
                                                absl::string_view body);
std::optional<StatusRequest> ParseStatusRequest(absl::string_view content_type,
                                                absl::string_view body);

// {"status":"ERROR","subCode":"<sub_code>","message":...} with AOPay's
// documented message for 403, 409, 412 or 422 (any other code gets 422's).
std::string DocumentedErrorBody(int sub_code);
// The 404s, which AOPay does not document: a transaction the status endpoint
// does not know, and a path the sandbox does not serve.
std::string TransactionNotFoundBody();
std::string ResourceNotFoundBody();

// The documented success body, stamped `now`.
std::string AcceptedBody(absl::Time now, absl::string_view reference_no,
                         absl::string_view transaction_id,
                         absl::string_view beneficiary_name);
// The status endpoint's answer; `word` is the transactionStatus.
std::string StatusBody(absl::string_view transaction_id,
                       absl::string_view reference_no, absl::string_view word);

// HTML pages (kHtmlContentType): the scripted 500; the sandbox's own 500
// when its journal cannot be written.
extern const char kInternalErrorPage[];
extern const char kJournalFailedPage[];

}  // namespace aopay::sandbox

#endif  // AOPAY_SERVER_SANDBOX_WIRE_H_
