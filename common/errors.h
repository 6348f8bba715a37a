#ifndef AOPAY_COMMON_ERRORS_H_
#define AOPAY_COMMON_ERRORS_H_

// The gateway's error model. Every failure below the transport is an
// absl::Status whose payload carries ErrorDetails: the ErrorInfo reason and
// metadata, the BadRequest field violations and the RetryInfo delay. The gRPC
// layer turns them into google.rpc details in exactly one place
// (server/grpc_status.h); nothing else builds gRPC errors.

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace aopay {

// ErrorInfo.domain of every error the gateway returns.
inline constexpr absl::string_view kErrorDomain = "payout.aopay.v1";

// ErrorInfo reasons (docs/errors.md).
namespace reason {
inline constexpr absl::string_view kInvalidRequest = "INVALID_REQUEST";
inline constexpr absl::string_view kUpstreamInvalidIfsc =
    "UPSTREAM_INVALID_IFSC";
inline constexpr absl::string_view kUpstreamBeneficiaryExists =
    "UPSTREAM_BENEFICIARY_EXISTS";
inline constexpr absl::string_view kUpstreamApiNotEnabled =
    "UPSTREAM_API_NOT_ENABLED";
inline constexpr absl::string_view kUpstreamRejectedBody =
    "UPSTREAM_REJECTED_BODY";
inline constexpr absl::string_view kUpstreamError = "UPSTREAM_ERROR";
inline constexpr absl::string_view kUpstreamUnavailable =
    "UPSTREAM_UNAVAILABLE";
inline constexpr absl::string_view kOutcomeUnknown = "OUTCOME_UNKNOWN";
inline constexpr absl::string_view kOverloaded = "OVERLOADED";
inline constexpr absl::string_view kUnauthenticated = "UNAUTHENTICATED";
inline constexpr absl::string_view kPermissionDenied = "PERMISSION_DENIED";
inline constexpr absl::string_view kRequestIdReused = "REQUEST_ID_REUSED";
inline constexpr absl::string_view kRequestInProgress = "REQUEST_IN_PROGRESS";
inline constexpr absl::string_view kNotFound = "NOT_FOUND";
inline constexpr absl::string_view kLedgerUnavailable = "LEDGER_UNAVAILABLE";
inline constexpr absl::string_view kShuttingDown = "SHUTTING_DOWN";
inline constexpr absl::string_view kInvalidTransition = "INVALID_TRANSITION";
inline constexpr absl::string_view kNoTransactionId = "NO_TRANSACTION_ID";
inline constexpr absl::string_view kResolvedByOperator = "RESOLVED_BY_OPERATOR";
inline constexpr absl::string_view kUpstreamReportedFailure =
    "UPSTREAM_REPORTED_FAILURE";
inline constexpr absl::string_view kClientLimitExceeded =
    "CLIENT_LIMIT_EXCEEDED";
inline constexpr absl::string_view kNotAwaitingApproval =
    "NOT_AWAITING_APPROVAL";
inline constexpr absl::string_view kSelfApproval = "SELF_APPROVAL";
inline constexpr absl::string_view kNotCancellable = "NOT_CANCELLABLE";
inline constexpr absl::string_view kCursorExpired = "CURSOR_EXPIRED";
}  // namespace reason

// ErrorInfo metadata keys.
namespace meta {
inline constexpr absl::string_view kPayoutId = "payoutId";
inline constexpr absl::string_view kLimit = "limit";
inline constexpr absl::string_view kRemainingPaise = "remainingPaise";
inline constexpr absl::string_view kUpstreamSubCode = "upstreamSubCode";
inline constexpr absl::string_view kUpstreamHttpStatus = "upstreamHttpStatus";
inline constexpr absl::string_view kUpstreamMessage = "upstreamMessage";
}  // namespace meta

// RetryInfo of every retryable error the gateway raises itself.
inline constexpr absl::Duration kDefaultRetryDelay = absl::Seconds(1);

// Messages are cut to this many bytes (docs/errors.md).
inline constexpr size_t kMaxErrorMessageBytes = 1024;

struct FieldViolation {
  std::string field;        // proto path, e.g. "beneficiary.ifsc"
  std::string description;  // one sentence, no personal data

  friend bool operator==(const FieldViolation& a, const FieldViolation& b) {
    return a.field == b.field && a.description == b.description;
  }
};

struct ErrorDetails {
  std::string reason;                           // ErrorInfo.reason
  std::map<std::string, std::string> metadata;  // ErrorInfo.metadata
  std::vector<FieldViolation> violations;       // BadRequest
  std::optional<absl::Duration> retry_delay;    // RetryInfo

  friend bool operator==(const ErrorDetails& a, const ErrorDetails& b) {
    return a.reason == b.reason && a.metadata == b.metadata &&
           a.violations == b.violations && a.retry_delay == b.retry_delay;
  }
};

// A non-OK status with `message` (cut to kMaxErrorMessageBytes on a UTF-8
// boundary) and `details` attached as a payload. `code` must not be kOk.
[[nodiscard]] absl::Status MakeError(absl::StatusCode code,
                                     absl::string_view message,
                                     ErrorDetails details);

// The details attached by MakeError; empty details (reason "") for a status
// without them, including OK.
ErrorDetails GetErrorDetails(const absl::Status& status);

// `status` with metadata[key] = value added (replacing an earlier value).
// OK statuses are returned unchanged.
[[nodiscard]] absl::Status WithErrorMetadata(absl::Status status,
                                             absl::string_view key,
                                             absl::string_view value);

// `status` with `edit` applied to its message, every ErrorInfo metadata value
// and every field violation's description (e.g. to scrub a secret that
// AOPay echoed). Code, reason, fields and retry delay are kept. OK statuses
// are returned unchanged.
[[nodiscard]] absl::Status EditErrorText(
    const absl::Status& status,
    const std::function<std::string(absl::string_view)>& edit);

// A stable text form of a status and its details, for the ledger: the exact
// error can be returned again after a restart. Parse(Serialize(s)) == s in
// code, message and details.
// Other payloads than ErrorDetails are not kept. ParseSerializedError fails
// with INVALID_ARGUMENT on malformed text; note that its *value* is itself a
// status: check ok() on the StatusOr before reading the parsed status.
std::string SerializeError(const absl::Status& status);
[[nodiscard]] absl::StatusOr<absl::Status> ParseSerializedError(
    absl::string_view text);

// Constructors for the errors the gateway itself raises.
[[nodiscard]] absl::Status InvalidRequestError(
    std::vector<FieldViolation> violations);
[[nodiscard]] absl::Status OverloadedError(absl::Duration retry_delay);
[[nodiscard]] absl::Status RequestIdReusedError(absl::string_view payout_id);
[[nodiscard]] absl::Status RequestInProgressError(absl::string_view payout_id,
                                                  absl::Duration retry_delay);
// UNAVAILABLE, LEDGER_UNAVAILABLE, retry after 1s; message "The payout ledger
// is unavailable: <what>." (`what` says what failed, without personal data).
[[nodiscard]] absl::Status LedgerUnavailableError(absl::string_view what);
// NOT_FOUND, reason NOT_FOUND; message "<what> was not found." (`what` names
// the missing thing, e.g. "Payout po_01J...").
[[nodiscard]] absl::Status NotFoundError(absl::string_view what);
// DEADLINE_EXCEEDED, OUTCOME_UNKNOWN, payoutId: the gateway restarted while
// the payout's AOPay call was in flight; what its request id gets from then
// on until the payout is refreshed or resolved.
[[nodiscard]] absl::Status RecoveredAsUnknownError(absl::string_view payout_id);

// UNAVAILABLE, SHUTTING_DOWN, RetryInfo: the gateway is draining and sent
// nothing.
[[nodiscard]] absl::Status ShuttingDownError();
// The same for a WatchPayouts stream the gateway ends as it stops.
[[nodiscard]] absl::Status WatchShuttingDownError();

// UNAUTHENTICATED, UNAUTHENTICATED: no token, or one no client holds (the
// message never says which, nor quotes the token).
[[nodiscard]] absl::Status UnauthenticatedError();
// PERMISSION_DENIED, PERMISSION_DENIED: the client lacks `scope` (its name in
// the clients file, e.g. "payouts:write") for `method`.
[[nodiscard]] absl::Status PermissionDeniedError(absl::string_view method,
                                                 absl::string_view scope);
// RESOURCE_EXHAUSTED, CLIENT_LIMIT_EXCEEDED, metadata limit
// ("max_payout_paise" or "daily_paise") and remainingPaise (what the client
// may still send under that limit, never negative). Nothing was recorded.
[[nodiscard]] absl::Status ClientLimitExceededError(absl::string_view limit,
                                                    int64_t remaining_paise);

// UNAVAILABLE, UPSTREAM_UNAVAILABLE, RetryInfo: a refresh got no answer from
// AOPay's status endpoint and changed nothing.
[[nodiscard]] absl::Status StatusEndpointUnavailableError();
// FAILED_PRECONDITION, NO_TRANSACTION_ID, payoutId: a refresh of a payout
// AOPay never gave a transaction id.
[[nodiscard]] absl::Status NoTransactionIdError(absl::string_view payout_id);
// FAILED_PRECONDITION, INVALID_TRANSITION, payoutId: a resolve the state
// machine (common/payout.h) does not allow; `from` and `to` are state names.
[[nodiscard]] absl::Status InvalidTransitionError(absl::string_view payout_id,
                                                  absl::string_view from,
                                                  absl::string_view to);
// FAILED_PRECONDITION, payoutId: the stored failure of a payout that failed
// after its first answer, because AOPay's status endpoint reported it
// (UPSTREAM_REPORTED_FAILURE) or an operator resolved it so
// (RESOLVED_BY_OPERATOR).
[[nodiscard]] absl::Status ReportedFailureError(absl::string_view payout_id);
[[nodiscard]] absl::Status ResolvedAsFailedError(absl::string_view payout_id);

// Approvals (docs/api.md, Approvals). FAILED_PRECONDITION,
// NOT_AWAITING_APPROVAL, payoutId: approving or rejecting a payout in
// `state` (also the loser of two racing approvals).
[[nodiscard]] absl::Status NotAwaitingApprovalError(absl::string_view payout_id,
                                                    absl::string_view state);
// PERMISSION_DENIED, SELF_APPROVAL, payoutId: the payout's creator cannot
// approve or reject it.
[[nodiscard]] absl::Status SelfApprovalError(absl::string_view payout_id);
// FAILED_PRECONDITION, NOT_CANCELLABLE, payoutId: cancelling a payout in
// `state` (only AWAITING_APPROVAL can be cancelled). `being_sent`: an
// approval is sending it, and it is AWAITING_APPROVAL again if that send
// certainly does not reach AOPay; the message says so.
[[nodiscard]] absl::Status NotCancellableError(absl::string_view payout_id,
                                               absl::string_view state,
                                               bool being_sent = false);
// OUT_OF_RANGE, CURSOR_EXPIRED: a WatchPayouts cursor older than the
// events the ledger still keeps (retention): resume without a cursor and
// read what was missed with ListPayouts.
[[nodiscard]] absl::Status CursorExpiredError();

// FAILED_PRECONDITION, NOT_CANCELLABLE, payoutId: a client that may read
// another client's payout tries to cancel it (only its creator may).
[[nodiscard]] absl::Status NotCancellableByCallerError(
    absl::string_view payout_id);

}  // namespace aopay

#endif  // AOPAY_COMMON_ERRORS_H_
