#include "common/errors.h"

#include <algorithm>
#include <cstdint>
#include <set>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/json_document.h"
#include "common/text_util.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace aopay {
namespace {

// The one payload MakeError attaches. The JSON inside is the same form that
// SerializeError writes, minus code and message.
constexpr absl::string_view kDetailsTypeUrl =
    "type.aopay.co.in/aopay.ErrorDetails";

// The highest absl::StatusCode (kUnauthenticated).
constexpr int kMaxStatusCode = 16;

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void WriteString(JsonWriter& writer, absl::string_view text) {
  writer.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
}

void WriteKey(JsonWriter& writer, absl::string_view key) {
  writer.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
}

// Writes the non-empty parts of `details` as members of an open object.
// Whole milliseconds are written as retryDelayMs (the common case, easy to
// read); anything finer as retryDelayNs so that the round trip is exact.
void WriteDetailsMembers(JsonWriter& writer, const ErrorDetails& details) {
  if (!details.reason.empty()) {
    WriteKey(writer, "reason");
    WriteString(writer, details.reason);
  }
  if (!details.metadata.empty()) {
    WriteKey(writer, "metadata");
    writer.StartObject();
    for (const auto& [key, value] : details.metadata) {
      WriteKey(writer, key);
      WriteString(writer, value);
    }
    writer.EndObject();
  }
  if (!details.violations.empty()) {
    WriteKey(writer, "violations");
    writer.StartArray();
    for (const FieldViolation& violation : details.violations) {
      writer.StartObject();
      WriteKey(writer, "field");
      WriteString(writer, violation.field);
      WriteKey(writer, "description");
      WriteString(writer, violation.description);
      writer.EndObject();
    }
    writer.EndArray();
  }
  if (details.retry_delay.has_value()) {
    const absl::Duration delay = *details.retry_delay;
    const int64_t ms = absl::ToInt64Milliseconds(delay);
    if (absl::Milliseconds(ms) == delay) {
      WriteKey(writer, "retryDelayMs");
      writer.Int64(ms);
    } else {
      WriteKey(writer, "retryDelayNs");
      writer.Int64(absl::ToInt64Nanoseconds(delay));
    }
  }
}

bool IsEmpty(const ErrorDetails& details) {
  return details.reason.empty() && details.metadata.empty() &&
         details.violations.empty() && !details.retry_delay.has_value();
}

std::string EncodeDetails(const ErrorDetails& details) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  WriteDetailsMembers(writer, details);
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string StringOf(const rapidjson::Value& value) {
  return std::string(value.GetString(), value.GetStringLength());
}

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("Malformed serialized error: ", what, "."));
}

// Reads the details members of `object`, which must be a JSON object.
// Members it does not know are ignored, so that older code can read errors
// written by newer code.
absl::Status ReadDetailsMembers(const rapidjson::Value& object,
                                ErrorDetails* details) {
  if (const auto it = object.FindMember("reason"); it != object.MemberEnd()) {
    if (!it->value.IsString()) return Malformed("\"reason\" is not a string");
    details->reason = StringOf(it->value);
  }
  if (const auto it = object.FindMember("metadata"); it != object.MemberEnd()) {
    if (!it->value.IsObject()) {
      return Malformed("\"metadata\" is not an object");
    }
    for (const auto& member : it->value.GetObject()) {
      if (!member.value.IsString()) {
        return Malformed("a \"metadata\" value is not a string");
      }
      details->metadata[StringOf(member.name)] = StringOf(member.value);
    }
  }
  if (const auto it = object.FindMember("violations");
      it != object.MemberEnd()) {
    if (!it->value.IsArray())
      return Malformed("\"violations\" is not an array");
    for (const auto& entry : it->value.GetArray()) {
      if (!entry.IsObject()) return Malformed("a violation is not an object");
      const auto field = entry.FindMember("field");
      const auto description = entry.FindMember("description");
      if (field == entry.MemberEnd() || !field->value.IsString() ||
          description == entry.MemberEnd() || !description->value.IsString()) {
        return Malformed("a violation lacks a string field or description");
      }
      details->violations.push_back(
          {StringOf(field->value), StringOf(description->value)});
    }
  }
  if (const auto it = object.FindMember("retryDelayMs");
      it != object.MemberEnd()) {
    if (!it->value.IsInt64()) {
      return Malformed("\"retryDelayMs\" is not an integer");
    }
    details->retry_delay = absl::Milliseconds(it->value.GetInt64());
  }
  if (const auto it = object.FindMember("retryDelayNs");
      it != object.MemberEnd()) {
    if (!it->value.IsInt64()) {
      return Malformed("\"retryDelayNs\" is not an integer");
    }
    details->retry_delay = absl::Nanoseconds(it->value.GetInt64());
  }
  return absl::OkStatus();
}

absl::Status ParseJsonObject(absl::string_view text,
                             rapidjson::Document* document) {
  document->Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
  if (document->HasParseError()) {
    return Malformed(absl::StrCat(
        "invalid JSON at offset ", document->GetErrorOffset(), ": ",
        rapidjson::GetParseError_En(document->GetParseError())));
  }
  if (!document->IsObject()) return Malformed("not a JSON object");
  return absl::OkStatus();
}

absl::string_view WithoutFinalDot(absl::string_view text) {
  absl::ConsumeSuffix(&text, ".");
  return text;
}

// absl::StatusOr<absl::Status> takes a bare absl::Status as its *value*; an
// error has to arrive through a type that merely converts to absl::Status.
struct ParseFailure {
  absl::Status status;
  operator absl::Status() const { return status; }  // NOLINT: implicit
};

absl::StatusOr<absl::Status> Failed(absl::Status status) {
  return ParseFailure{std::move(status)};
}

// A field breaking two rules is still one field.
size_t CountFields(const std::vector<FieldViolation>& violations) {
  std::set<absl::string_view> fields;
  for (const FieldViolation& violation : violations) {
    fields.insert(violation.field);
  }
  return fields.size();
}

ErrorDetails WithReason(absl::string_view reason) {
  ErrorDetails details;
  details.reason = std::string(reason);
  return details;
}

}  // namespace

absl::Status MakeError(absl::StatusCode code, absl::string_view message,
                       ErrorDetails details) {
  if (code == absl::StatusCode::kOk) {
    // An OK status carries no message or payload: turning a caller's bug into
    // a success would hide a failure.
    return absl::InternalError("MakeError was called with code OK.");
  }
  absl::Status status(code,
                      text_internal::CutUtf8(message, kMaxErrorMessageBytes));
  if (!IsEmpty(details)) {
    status.SetPayload(kDetailsTypeUrl, absl::Cord(EncodeDetails(details)));
  }
  return status;
}

ErrorDetails GetErrorDetails(const absl::Status& status) {
  ErrorDetails details;
  const auto payload = status.GetPayload(kDetailsTypeUrl);
  if (!payload.has_value()) return details;
  SmallJsonDocument document;
  if (!ParseJsonObject(std::string(*payload), &document).ok() ||
      !ReadDetailsMembers(document, &details).ok()) {
    return ErrorDetails();
  }
  return details;
}

absl::Status WithErrorMetadata(absl::Status status, absl::string_view key,
                               absl::string_view value) {
  if (status.ok()) return status;
  ErrorDetails details = GetErrorDetails(status);
  details.metadata[std::string(key)] = std::string(value);
  status.SetPayload(kDetailsTypeUrl, absl::Cord(EncodeDetails(details)));
  return status;
}

absl::Status EditErrorText(
    const absl::Status& status,
    const std::function<std::string(absl::string_view)>& edit) {
  if (status.ok()) return status;
  const bool has_details = status.GetPayload(kDetailsTypeUrl).has_value();
  ErrorDetails details = GetErrorDetails(status);
  for (auto& [key, value] : details.metadata) value = edit(value);
  for (FieldViolation& violation : details.violations) {
    violation.description = edit(violation.description);
  }
  if (!has_details) {
    return absl::Status(status.code(), edit(status.message()));
  }
  return MakeError(status.code(), edit(status.message()), std::move(details));
}

std::string SerializeError(const absl::Status& status) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  WriteKey(writer, "code");
  writer.Int(static_cast<int>(status.code()));
  if (!status.message().empty()) {
    WriteKey(writer, "message");
    WriteString(writer, status.message());
  }
  WriteDetailsMembers(writer, GetErrorDetails(status));
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

absl::StatusOr<absl::Status> ParseSerializedError(absl::string_view text) {
  SmallJsonDocument document;
  if (absl::Status parsed = ParseJsonObject(text, &document); !parsed.ok()) {
    return Failed(std::move(parsed));
  }
  const auto code = document.FindMember("code");
  if (code == document.MemberEnd() || !code->value.IsInt() ||
      code->value.GetInt() < 0 || code->value.GetInt() > kMaxStatusCode) {
    return Failed(Malformed("\"code\" is missing or not a status code"));
  }
  std::string message;
  if (const auto it = document.FindMember("message");
      it != document.MemberEnd()) {
    if (!it->value.IsString()) {
      return Failed(Malformed("\"message\" is not a string"));
    }
    message = StringOf(it->value);
  }
  ErrorDetails details;
  if (absl::Status read = ReadDetailsMembers(document, &details); !read.ok()) {
    return Failed(std::move(read));
  }
  const auto status_code = static_cast<absl::StatusCode>(code->value.GetInt());
  if (status_code == absl::StatusCode::kOk) return absl::OkStatus();
  // Not MakeError: the message is restored exactly as it was stored.
  absl::Status status(status_code, message);
  if (!IsEmpty(details)) {
    status.SetPayload(kDetailsTypeUrl, absl::Cord(EncodeDetails(details)));
  }
  return status;
}

absl::Status InvalidRequestError(std::vector<FieldViolation> violations) {
  const size_t count = CountFields(violations);
  ErrorDetails details = WithReason(reason::kInvalidRequest);
  details.violations = std::move(violations);
  return MakeError(
      absl::StatusCode::kInvalidArgument,
      count == 1 ? "The payout request is invalid: 1 field breaks the rules."
                 : absl::StrCat("The payout request is invalid: ", count,
                                " fields break the rules."),
      std::move(details));
}

absl::Status OverloadedError(absl::Duration retry_delay) {
  ErrorDetails details = WithReason(reason::kOverloaded);
  details.retry_delay = retry_delay;
  return MakeError(absl::StatusCode::kResourceExhausted,
                   "The gateway is overloaded; nothing was sent. Try again "
                   "after the retry delay.",
                   std::move(details));
}

absl::Status RequestIdReusedError(absl::string_view payout_id) {
  ErrorDetails details = WithReason(reason::kRequestIdReused);
  details.metadata[std::string(meta::kPayoutId)] = std::string(payout_id);
  return MakeError(absl::StatusCode::kInvalidArgument,
                   "This request id was already used for a payout with "
                   "different parameters; nothing was sent.",
                   std::move(details));
}

absl::Status RequestInProgressError(absl::string_view payout_id,
                                    absl::Duration retry_delay) {
  ErrorDetails details = WithReason(reason::kRequestInProgress);
  details.metadata[std::string(meta::kPayoutId)] = std::string(payout_id);
  details.retry_delay = retry_delay;
  return MakeError(absl::StatusCode::kAborted,
                   "A payout with this request id is still in progress; ask "
                   "again after the retry delay to get its outcome.",
                   std::move(details));
}

absl::Status LedgerUnavailableError(absl::string_view what) {
  ErrorDetails details = WithReason(reason::kLedgerUnavailable);
  details.retry_delay = kDefaultRetryDelay;
  return MakeError(absl::StatusCode::kUnavailable,
                   absl::StrCat("The payout ledger is unavailable: ",
                                WithoutFinalDot(what), "."),
                   std::move(details));
}

absl::Status RecoveredAsUnknownError(absl::string_view payout_id) {
  ErrorDetails details = WithReason(reason::kOutcomeUnknown);
  details.metadata[std::string(meta::kPayoutId)] = std::string(payout_id);
  return MakeError(absl::StatusCode::kDeadlineExceeded,
                   "The gateway restarted while the AOPay call for this "
                   "payout was in flight; its outcome is unknown and it will "
                   "not be re-sent.",
                   std::move(details));
}

namespace {

// UNAVAILABLE, SHUTTING_DOWN with the retry delay; `message` says what to do.
absl::Status ShuttingDown(absl::string_view message) {
  ErrorDetails details = WithReason(reason::kShuttingDown);
  details.retry_delay = kDefaultRetryDelay;
  return MakeError(absl::StatusCode::kUnavailable, message, std::move(details));
}

}  // namespace

absl::Status ShuttingDownError() {
  return ShuttingDown(
      "The gateway is shutting down; the payout was not sent, try again "
      "later or on another instance.");
}

absl::Status WatchShuttingDownError() {
  return ShuttingDown(
      "The gateway is shutting down; watch again with the last cursor "
      "received, later or on another instance.");
}

absl::Status UnauthenticatedError() {
  return MakeError(absl::StatusCode::kUnauthenticated,
                   "The call carries no valid credentials: send "
                   "'authorization: Bearer <token>' with a token from the "
                   "gateway's clients file.",
                   WithReason(reason::kUnauthenticated));
}

absl::Status PermissionDeniedError(absl::string_view method,
                                   absl::string_view scope) {
  return MakeError(absl::StatusCode::kPermissionDenied,
                   absl::StrCat(method, " needs the scope ", scope,
                                ", which this client does not have."),
                   WithReason(reason::kPermissionDenied));
}

absl::Status ClientLimitExceededError(absl::string_view limit,
                                      int64_t remaining_paise) {
  const int64_t remaining = std::max<int64_t>(0, remaining_paise);
  ErrorDetails details = WithReason(reason::kClientLimitExceeded);
  details.metadata[std::string(meta::kLimit)] = std::string(limit);
  details.metadata[std::string(meta::kRemainingPaise)] =
      absl::StrCat(remaining);
  return MakeError(
      absl::StatusCode::kResourceExhausted,
      absl::StrCat("The payout is over this client's ", limit, " (", remaining,
                   " paise remain); nothing was recorded or sent."),
      std::move(details));
}

absl::Status StatusEndpointUnavailableError() {
  ErrorDetails details = WithReason(reason::kUpstreamUnavailable);
  details.retry_delay = kDefaultRetryDelay;
  return MakeError(absl::StatusCode::kUnavailable,
                   "AOPay's status endpoint gave no answer; nothing changed.",
                   std::move(details));
}

namespace {

absl::Status PayoutPreconditionError(absl::string_view reason,
                                     absl::string_view payout_id,
                                     absl::string_view message) {
  ErrorDetails details = WithReason(reason);
  details.metadata[std::string(meta::kPayoutId)] = std::string(payout_id);
  return MakeError(absl::StatusCode::kFailedPrecondition, message,
                   std::move(details));
}

}  // namespace

absl::Status NoTransactionIdError(absl::string_view payout_id) {
  return PayoutPreconditionError(
      reason::kNoTransactionId, payout_id,
      "The payout has no AOPay transaction id to ask about; an operator can "
      "resolve it.");
}

absl::Status InvalidTransitionError(absl::string_view payout_id,
                                    absl::string_view from,
                                    absl::string_view to) {
  return PayoutPreconditionError(
      reason::kInvalidTransition, payout_id,
      absl::StrCat("A payout in state ", from, " cannot be resolved to ", to,
                   "."));
}

absl::Status NotAwaitingApprovalError(absl::string_view payout_id,
                                      absl::string_view state) {
  return PayoutPreconditionError(
      reason::kNotAwaitingApproval, payout_id,
      absl::StrCat("The payout is not AWAITING_APPROVAL (", state,
                   "); nothing changed."));
}

absl::Status NotCancellableError(absl::string_view payout_id,
                                 absl::string_view state, bool being_sent) {
  return PayoutPreconditionError(
      reason::kNotCancellable, payout_id,
      absl::StrCat("Only a payout AWAITING_APPROVAL can be cancelled (", state,
                   "); nothing changed.",
                   being_sent ? " If an approval is sending it and that send "
                                "certainly does not reach AOPay, the payout is "
                                "AWAITING_APPROVAL again and can be cancelled "
                                "then: get it to see."
                              : ""));
}

absl::Status SelfApprovalError(absl::string_view payout_id) {
  ErrorDetails details = WithReason(reason::kSelfApproval);
  details.metadata[std::string(meta::kPayoutId)] = std::string(payout_id);
  return MakeError(absl::StatusCode::kPermissionDenied,
                   "A payout must be approved or rejected by a client other "
                   "than the one that created it.",
                   std::move(details));
}

absl::Status CursorExpiredError() {
  return MakeError(absl::StatusCode::kOutOfRange,
                   "Events after this cursor were deleted by retention; watch "
                   "again without a cursor and read what was missed with "
                   "ListPayouts.",
                   WithReason(reason::kCursorExpired));
}

absl::Status NotCancellableByCallerError(absl::string_view payout_id) {
  return PayoutPreconditionError(
      reason::kNotCancellable, payout_id,
      "Only the client that created a payout can cancel it; nothing changed.");
}

absl::Status ReportedFailureError(absl::string_view payout_id) {
  return PayoutPreconditionError(reason::kUpstreamReportedFailure, payout_id,
                                 "AOPay reported that the payout failed.");
}

absl::Status ResolvedAsFailedError(absl::string_view payout_id) {
  return PayoutPreconditionError(
      reason::kResolvedByOperator, payout_id,
      "An operator recorded that the payout failed.");
}

absl::Status NotFoundError(absl::string_view what) {
  return MakeError(absl::StatusCode::kNotFound,
                   absl::StrCat(WithoutFinalDot(what), " was not found."),
                   WithReason(reason::kNotFound));
}

}  // namespace aopay
