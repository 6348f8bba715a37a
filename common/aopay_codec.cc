#include "common/aopay_codec.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/errors.h"
#include "common/json_document.h"
#include "common/money.h"
#include "common/text_util.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace aopay {
namespace {

using rapidjson::Value;
using Kind = PayoutVerdict::Kind;

// The wrapper of the documented success answer (docs/aopay.md).
constexpr absl::string_view kKnownWrapper =
    "initiateAuthGenericFundTransferAPIResp";

// Bounds on what is copied out of AOPay's answers into errors, logs and the
// ledger: AOPay's text is untrusted and may be arbitrarily long.
constexpr size_t kMaxUpstreamMessageBytes = 256;
constexpr size_t kMaxUpstreamFieldBytes = 256;
constexpr size_t kMaxSubCodeBytes = 64;
constexpr size_t kMaxTransactionIdBytes = 128;
constexpr size_t kMaxStatusWordBytes = 64;
// AOPay words that are quoted in messages must look like codes.
constexpr size_t kMaxQuotedTokenBytes = 32;

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// A status word as it is kept and returned. White space around it does not
// count (MapStatusWord ignores it too), so it goes before the word is cut to
// its bound: a known word, however padded, is kept as itself. The state is
// always read from the word as sent, never from this copy.
std::string KeptStatusWord(absl::string_view word) {
  return text_internal::SanitizeUtf8(absl::StripAsciiWhitespace(word),
                                     kMaxStatusWordBytes);
}

void WriteMember(JsonWriter& writer, absl::string_view key,
                 absl::string_view value) {
  writer.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
  writer.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

// ---- Reading JSON defensively: every accessor checks the type first. ----

// Parses `body` into `document`; false unless it is one JSON object. A raw NUL
// never occurs in valid JSON, and RapidJSON would take it for the end of the
// input, so such bodies are refused here.
bool ParseObject(absl::string_view body, rapidjson::Document* document) {
  if (absl::StrContains(body, absl::string_view("\0", 1))) return false;
  document->Parse<rapidjson::kParseIterativeFlag>(body.data(), body.size());
  return !document->HasParseError() && document->IsObject();
}

// Whether `object`, or an object `depth` levels or fewer inside it, repeats
// a member name. JSON leaves the meaning of such an object open and the
// reader's lookups see only the first of the names, so an answer that
// repeats one where the gateway looks (the top level, its objects, theirs:
// a wrapper's resourceData and its status) cannot be read with confidence.
bool RepeatsAName(const Value& object, int depth) {
  std::vector<absl::string_view> names;
  names.reserve(object.MemberCount());
  for (const auto& member : object.GetObject()) {
    names.emplace_back(member.name.GetString(), member.name.GetStringLength());
    if (depth > 0 && member.value.IsObject() &&
        RepeatsAName(member.value, depth - 1)) {
      return true;
    }
  }
  std::sort(names.begin(), names.end());
  return std::adjacent_find(names.begin(), names.end()) != names.end();
}

const Value* Member(const Value& object, absl::string_view name) {
  if (!object.IsObject()) return nullptr;
  const auto it = object.FindMember(Value(rapidjson::StringRef(
      name.data(), static_cast<rapidjson::SizeType>(name.size()))));
  return it == object.MemberEnd() ? nullptr : &it->value;
}

const Value* ObjectMember(const Value& object, absl::string_view name) {
  const Value* value = Member(object, name);
  return value != nullptr && value->IsObject() ? value : nullptr;
}

std::optional<absl::string_view> StringMember(const Value& object,
                                              absl::string_view name) {
  const Value* value = Member(object, name);
  if (value == nullptr || !value->IsString()) return std::nullopt;
  return absl::string_view(value->GetString(), value->GetStringLength());
}

bool StringMemberIs(const Value& object, absl::string_view name,
                    absl::string_view expected) {
  const std::optional<absl::string_view> text = StringMember(object, name);
  return text.has_value() &&
         absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(*text), expected);
}

// Where resourceData was found, and the object that holds it.
struct Located {
  const Value* wrapper = nullptr;
  const Value* resource_data = nullptr;
};

// Every resourceData an answer holds where a reader looks for one: at the top
// level and inside each top-level object (the documented wrapper is one of
// them).
std::vector<const Value*> AllResourceData(const Value& root) {
  std::vector<const Value*> found;
  if (const Value* data = ObjectMember(root, "resourceData")) {
    found.push_back(data);
  }
  for (const auto& member : root.GetObject()) {
    if (const Value* data = ObjectMember(member.value, "resourceData")) {
      found.push_back(data);
    }
  }
  return found;
}

// Whether the resourceData objects of an answer (more than one: AOPay names
// a *single* wrapper) disagree on the payout's status or transaction id.
// Such an answer does not say which of them is the payout's.
bool ResourceDataDisagree(const Value& root) {
  const std::vector<const Value*> all = AllResourceData(root);
  for (size_t i = 1; i < all.size(); ++i) {
    for (const absl::string_view field :
         {"status", "transactionStatus", "transactionID"}) {
      const Value* first = Member(*all[0], field);
      const Value* other = Member(*all[i], field);
      if ((first == nullptr) != (other == nullptr)) return true;
      if (first != nullptr && *first != *other) return true;
    }
  }
  return false;
}

// resourceData under the documented wrapper, else under any top-level object
// member, else at the top level. Without resourceData, the wrapper is the
// documented one when present (it may still carry metaData).
Located FindResourceData(const Value& root) {
  const Value* known = ObjectMember(root, kKnownWrapper);
  if (known != nullptr) {
    if (const Value* data = ObjectMember(*known, "resourceData")) {
      return {known, data};
    }
  }
  for (const auto& member : root.GetObject()) {
    if (const Value* data = ObjectMember(member.value, "resourceData")) {
      return {&member.value, data};
    }
  }
  if (const Value* data = ObjectMember(root, "resourceData")) {
    return {&root, data};
  }
  return {known, nullptr};
}

// A string, or an integer written in decimal (AOPay documents strings, but a
// number is read the same way).
std::optional<std::string> TextOrInteger(const Value* value) {
  if (value == nullptr) return std::nullopt;
  if (value->IsString()) {
    return std::string(value->GetString(), value->GetStringLength());
  }
  if (value->IsInt64()) return absl::StrCat(value->GetInt64());
  if (value->IsUint64()) return absl::StrCat(value->GetUint64());
  if (value->IsDouble()) return absl::StrCat(value->GetDouble());
  return std::nullopt;
}

// `token` when it looks like a code (letters, digits, '_', '-'), else "". Only
// such tokens from AOPay are quoted in messages.
absl::string_view QuotableToken(absl::string_view token) {
  if (token.empty() || token.size() > kMaxQuotedTokenBytes) return "";
  for (const char c : token) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' &&
        c != '-') {
      return "";
    }
  }
  return token;
}

// ---- Verdicts. ----

std::string HttpStatusText(int http_status) {
  return absl::StrCat(http_status);
}

// AOPay's own message, from the top level or the wrapper's metaData.
std::optional<std::string> UpstreamMessage(const Value& root,
                                           const Value* wrapper) {
  std::optional<absl::string_view> message = StringMember(root, "message");
  if (!message.has_value() && wrapper != nullptr) {
    if (const Value* meta_data = ObjectMember(*wrapper, "metaData")) {
      message = StringMember(*meta_data, "message");
    }
  }
  if (!message.has_value()) return std::nullopt;
  return text_internal::SanitizeUtf8(*message, kMaxUpstreamMessageBytes);
}

// `why` is the first half of one sentence, without a final period.
PayoutVerdict UnknownVerdict(absl::string_view why,
                             std::optional<int> http_status,
                             std::optional<std::string> upstream_message) {
  ErrorDetails details;
  details.reason = std::string(reason::kOutcomeUnknown);
  if (http_status.has_value()) {
    details.metadata[std::string(meta::kUpstreamHttpStatus)] =
        HttpStatusText(*http_status);
  }
  if (upstream_message.has_value()) {
    details.metadata[std::string(meta::kUpstreamMessage)] =
        std::move(*upstream_message);
  }
  PayoutVerdict verdict;
  verdict.kind = Kind::kUnknown;
  verdict.state = PayoutState::kUnknown;
  verdict.error = MakeError(
      absl::StatusCode::kDeadlineExceeded,
      absl::StrCat(why,
                   "; the payout's outcome is unknown and it will not be sent "
                   "again."),
      std::move(details));
  return verdict;
}

PayoutVerdict NotSentVerdict(absl::StatusCode code, absl::string_view reason,
                             absl::string_view message,
                             std::optional<int> http_status) {
  ErrorDetails details;
  details.reason = std::string(reason);
  details.retry_delay = kDefaultRetryDelay;
  if (http_status.has_value()) {
    details.metadata[std::string(meta::kUpstreamHttpStatus)] =
        HttpStatusText(*http_status);
  }
  PayoutVerdict verdict;
  verdict.kind = Kind::kNotSent;
  verdict.state = PayoutState::kUnspecified;
  verdict.error = MakeError(code, message, std::move(details));
  return verdict;
}

// Step 5: {"status": "ERROR", "subCode": ..., "message": ...}.
PayoutVerdict ErrorBodyVerdict(const Value& root, int http_status) {
  std::optional<std::string> sub_code = TextOrInteger(Member(root, "subCode"));
  if (sub_code.has_value()) {
    *sub_code = text_internal::SanitizeUtf8(
        absl::StripAsciiWhitespace(*sub_code), kMaxSubCodeBytes);
  }
  ErrorDetails details;
  details.metadata[std::string(meta::kUpstreamHttpStatus)] =
      HttpStatusText(http_status);
  if (sub_code.has_value()) {
    details.metadata[std::string(meta::kUpstreamSubCode)] = *sub_code;
  }
  if (std::optional<std::string> message = UpstreamMessage(root, nullptr)) {
    details.metadata[std::string(meta::kUpstreamMessage)] = std::move(*message);
  }

  const std::string code = sub_code.value_or("");
  absl::StatusCode status_code;
  std::string message;
  if (code == "422") {
    status_code = absl::StatusCode::kInvalidArgument;
    details.reason = std::string(reason::kUpstreamInvalidIfsc);
    details.violations.push_back(
        {"beneficiary.ifsc", "AOPay does not accept this IFSC"});
    message = "AOPay refused the payout: invalid IFSC (subCode 422).";
  } else if (code == "409") {
    status_code = absl::StatusCode::kAlreadyExists;
    details.reason = std::string(reason::kUpstreamBeneficiaryExists);
    message =
        "AOPay refused the payout: the beneficiary already exists (subCode "
        "409).";
  } else if (code == "403") {
    status_code = absl::StatusCode::kFailedPrecondition;
    details.reason = std::string(reason::kUpstreamApiNotEnabled);
    message =
        "AOPay refused the payout: the gateway's AOPay account is not enabled "
        "for payouts (subCode 403).";
  } else if (code == "412") {
    status_code = absl::StatusCode::kInternal;
    details.reason = std::string(reason::kUpstreamRejectedBody);
    message =
        "AOPay refused the payout: it read the gateway's request body as "
        "empty or invalid JSON (subCode 412).";
  } else {
    status_code = absl::StatusCode::kFailedPrecondition;
    details.reason = std::string(reason::kUpstreamError);
    const absl::string_view quoted = QuotableToken(code);
    message =
        quoted.empty()
            ? std::string("AOPay refused the payout.")
            : absl::StrCat("AOPay refused the payout (subCode ", quoted, ").");
  }
  PayoutVerdict verdict;
  verdict.kind = Kind::kRejected;
  verdict.state = PayoutState::kFailed;
  verdict.error = MakeError(status_code, message, std::move(details));
  return verdict;
}

// The transaction id an answer names: resourceData's transactionID, else a
// top-level one; a string or an integer (written in decimal).
std::optional<std::string> NamedTransactionId(const Value& root,
                                              const Located& located) {
  if (located.resource_data != nullptr) {
    if (std::optional<std::string> id =
            TextOrInteger(Member(*located.resource_data, "transactionID"))) {
      return id;
    }
  }
  return TextOrInteger(Member(root, "transactionID"));
}

// Whether a status word says AOPay refused or failed the payout: a failure
// word, or ERROR. Any other word, or a status that is not text, may say it
// was taken.
bool IsRefusalWord(const Value& value) {
  if (!value.IsString()) return false;
  const absl::string_view word(value.GetString(), value.GetStringLength());
  return MapStatusWord(word) == PayoutState::kFailed ||
         absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(word), "ERROR");
}

// Whether the answer may describe a payout AOPay took, wherever in it that
// is said: a transactionID or transactionReferenceNo (of any type), a
// `statuss`, a metaData's `status` or a resourceData's `status` or
// `transactionStatus` that is not a refusal word. Every object and array is
// looked at, at any depth, and every member of a repeated name. A 429 or an
// error that says any of these is UNKNOWN, never "not sent" or FAILED: it
// is the one kind of answer that would let a payout be sent, or paid, again.
bool MayDescribeTakenPayout(const Value& root) {
  // Where an object sits decides which of its members are status words.
  enum class Place { kOther, kMetaData, kResourceData };
  // An explicit stack: the parser accepts any depth.
  std::vector<std::pair<const Value*, Place>> pending = {
      {&root, Place::kOther}};
  while (!pending.empty()) {
    const auto [value, place] = pending.back();
    pending.pop_back();
    if (value->IsArray()) {
      for (const Value& element : value->GetArray()) {
        pending.emplace_back(&element, place);
      }
      continue;
    }
    if (!value->IsObject()) continue;
    for (const auto& member : value->GetObject()) {
      const absl::string_view name(member.name.GetString(),
                                   member.name.GetStringLength());
      if (name == "transactionID" || name == "transactionReferenceNo") {
        return true;
      }
      const bool status_word =
          name == "statuss" ||
          (place == Place::kMetaData && name == "status") ||
          (place == Place::kResourceData &&
           (name == "status" || name == "transactionStatus"));
      if (status_word && !IsRefusalWord(member.value)) return true;
      if (member.value.IsObject() || member.value.IsArray()) {
        pending.emplace_back(&member.value,
                             name == "metaData"       ? Place::kMetaData
                             : name == "resourceData" ? Place::kResourceData
                                                      : Place::kOther);
      }
    }
  }
  return false;
}

// The payout's own status in a resourceData: its `status`, or its
// `transactionStatus` when there is no status. A null counts as missing.
const Value* PayoutStatusMember(const Value& data) {
  for (const absl::string_view name : {"status", "transactionStatus"}) {
    const Value* value = Member(data, name);
    if (value != nullptr && !value->IsNull()) return value;
  }
  return nullptr;
}

// Copies what the answer says about the transaction into `verdict`: the
// trackable transaction id, reference, status word (PayoutStatusMember) and
// the bank's name for the beneficiary. False when resourceData carries a
// `status` or `transactionStatus` that is not text.
bool CopyTransactionFields(const Value& root, const Located& located,
                           PayoutVerdict& verdict) {
  const std::optional<std::string> id = NamedTransactionId(root, located);
  if (id.has_value() && IsTrackableTransactionId(*id)) {
    verdict.transaction_id = *id;
  }
  if (located.resource_data == nullptr) return true;
  const Value& data = *located.resource_data;
  if (std::optional<std::string> reference =
          TextOrInteger(Member(data, "transactionReferenceNo"))) {
    verdict.transaction_reference_no =
        text_internal::SanitizeUtf8(*reference, kMaxUpstreamFieldBytes);
  }
  if (std::optional<absl::string_view> name =
          StringMember(data, "beneficiaryName")) {
    verdict.bank_beneficiary_name =
        text_internal::SanitizeUtf8(*name, kMaxUpstreamFieldBytes);
  }
  if (const Value* status = PayoutStatusMember(data)) {
    if (!status->IsString()) return false;
    verdict.upstream_status = KeptStatusWord(
        absl::string_view(status->GetString(), status->GetStringLength()));
  }
  // A transactionStatus beside the status is read too (SuccessVerdict).
  const Value* second = Member(data, "transactionStatus");
  return second == nullptr || second->IsNull() || second->IsString();
}

// An answer that says two things at once (an error or a 429 that also
// reports success or names a transaction): AOPay may have taken the payout.
// What it says about the transaction is kept, so that it can be refreshed.
PayoutVerdict ContradictionVerdict(const Value& root, const Located& located,
                                   int http_status, absl::string_view what) {
  PayoutVerdict verdict = UnknownVerdict(
      absl::StrCat("AOPay's answer (HTTP ", http_status, ") says both ", what),
      http_status, UpstreamMessage(root, located.wrapper));
  // Which of several disagreeing resourceData is the payout's is not known:
  // none of their ids may be refreshed as its own.
  if (!ResourceDataDisagree(root)) {
    (void)CopyTransactionFields(root, located, verdict);
  }
  return verdict;
}

// An answer that did not arrive whole: longer than kMaxAnswerBytes, or the
// connection failed before its end. UNKNOWN whatever it says. It keeps what
// the same bytes read as a whole answer would keep (a documented success's
// transaction id, say, when a Content-Length promised more than came), and
// nothing more. The transport's words are left out of the message, as for a
// transport failure.
PayoutVerdict CutOffVerdict(const HttpAnswer& answer) {
  const int http = answer.http_status;
  PayoutVerdict verdict = UnknownVerdict(
      answer.cut_off_by.empty()
          ? std::string("AOPay's answer was larger than 1 MiB and was cut off")
          : absl::StrCat("AOPay's answer (HTTP ", http,
                         ") was cut off before its end"),
      http, std::nullopt);
  HttpAnswer whole;
  whole.http_status = http;
  whole.body = answer.body;
  PayoutVerdict as_whole = InterpretPayoutAnswer(whole);
  verdict.transaction_id = std::move(as_whole.transaction_id);
  verdict.transaction_reference_no =
      std::move(as_whole.transaction_reference_no);
  verdict.upstream_status = std::move(as_whole.upstream_status);
  verdict.bank_beneficiary_name = std::move(as_whole.bank_beneficiary_name);
  return verdict;
}

// The state a success's status word (white space stripped) names; no word
// is a plain ACCEPTED. nullopt for a word the gateway does not know.
std::optional<PayoutState> SuccessWordState(absl::string_view stripped) {
  if (stripped.empty()) return PayoutState::kAccepted;
  return MapStatusWord(stripped);
}

// Step 6: the documented success, or something shaped like it.
PayoutVerdict SuccessVerdict(const Value& root, const Located& located,
                             int http_status) {
  PayoutVerdict verdict;
  const bool word_is_string = CopyTransactionFields(root, located, verdict);
  // Only resourceData's own transactionID is taken from a success.
  if (located.resource_data == nullptr ||
      !StringMember(*located.resource_data, "transactionID").has_value()) {
    verdict.transaction_id.clear();
  }
  // The word as sent: a control character or a cut must not turn an
  // unknown word into a known one.
  const Value* status_member = located.resource_data == nullptr
                                   ? nullptr
                                   : PayoutStatusMember(*located.resource_data);
  const absl::string_view word =
      status_member != nullptr && status_member->IsString()
          ? absl::string_view(status_member->GetString(),
                              status_member->GetStringLength())
          : absl::string_view();

  const std::optional<std::string> upstream_message =
      UpstreamMessage(root, located.wrapper);
  auto unknown = [&](absl::string_view why) {
    PayoutVerdict result = UnknownVerdict(why, http_status, upstream_message);
    result.transaction_id = verdict.transaction_id;
    result.transaction_reference_no = verdict.transaction_reference_no;
    result.upstream_status = verdict.upstream_status;
    result.bank_beneficiary_name = verdict.bank_beneficiary_name;
    return result;
  };

  if (ResourceDataDisagree(root)) {
    // Not knowing which resourceData is the payout's, nothing of them is
    // kept (the operator reads the raw answer).
    return UnknownVerdict(
        "AOPay reported success in an answer whose resourceData objects "
        "disagree",
        http_status, upstream_message);
  }
  if (verdict.transaction_id.empty()) {
    return unknown(
        "AOPay reported success but gave no transaction id to track");
  }
  if (!word_is_string) {
    return unknown("AOPay reported success with a status that is not text");
  }
  const absl::string_view stripped = absl::StripAsciiWhitespace(word);
  const std::optional<PayoutState> state = SuccessWordState(stripped);
  const absl::string_view quoted = QuotableToken(stripped);
  if (!state.has_value() || *state == PayoutState::kReversed) {
    return unknown(
        quoted.empty()
            ? std::string("AOPay reported success with a status the gateway "
                          "cannot act on")
            : absl::StrCat("AOPay reported success with status ", quoted,
                           ", which the gateway cannot act on"));
  }
  // A transactionStatus beside the status says the same, or the answer
  // does not say where the money is.
  if (const std::optional<absl::string_view> second =
          StringMember(*located.resource_data, "transactionStatus");
      second.has_value() &&
      status_member != Member(*located.resource_data, "transactionStatus")) {
    if (SuccessWordState(absl::StripAsciiWhitespace(*second)) != state) {
      return unknown(
          "AOPay reported success with a status and a transactionStatus that "
          "disagree");
    }
  }
  if (*state == PayoutState::kFailed) {
    ErrorDetails details;
    details.reason = std::string(reason::kUpstreamError);
    details.metadata[std::string(meta::kUpstreamHttpStatus)] =
        HttpStatusText(http_status);
    if (upstream_message.has_value()) {
      details.metadata[std::string(meta::kUpstreamMessage)] = *upstream_message;
    }
    verdict.kind = Kind::kRejected;
    verdict.state = PayoutState::kFailed;
    verdict.error = MakeError(
        absl::StatusCode::kFailedPrecondition,
        quoted.empty()
            ? std::string("AOPay reported the payout as failed.")
            : absl::StrCat("AOPay reported the payout as failed (status ",
                           quoted, ")."),
        std::move(details));
    return verdict;
  }
  verdict.kind = Kind::kAccepted;
  verdict.state = *state;
  return verdict;
}

// Whether a word that says if the call worked says anything but SUCCESS:
// the top-level `statuss` or `status`, or metaData's `status`. A null
// counts as missing; a number or an object is not SUCCESS.
bool ACallStatusIsNotSuccess(const Value& root, const Value* meta_data) {
  auto not_success = [](const Value* object, absl::string_view name) {
    if (object == nullptr) return false;
    const Value* value = Member(*object, name);
    return value != nullptr && !value->IsNull() &&
           !StringMemberIs(*object, name, "SUCCESS");
  };
  return not_success(&root, "statuss") || not_success(&root, "status") ||
         not_success(meta_data, "status");
}

bool Is2xx(int http_status) { return http_status >= 200 && http_status < 300; }

PayoutVerdict RateLimitedVerdict(int http_status) {
  return NotSentVerdict(absl::StatusCode::kUnavailable,
                        reason::kUpstreamUnavailable,
                        "AOPay is limiting requests (HTTP 429); the payout "
                        "was not sent, try again later.",
                        http_status);
}

// A buffer and writer per thread, reused: building a body then allocates only
// the string it returns (a fresh StringBuffer and Writer allocate their
// buffer and nesting stack on first use, for every body).
class ReusableWriter {
 public:
  static ReusableWriter& ForThisThread() {
    thread_local ReusableWriter reusable;
    reusable.buffer_.Clear();
    reusable.writer_.Reset(reusable.buffer_);
    return reusable;
  }
  JsonWriter& writer() { return writer_; }
  std::string Take() const {
    return std::string(buffer_.GetString(), buffer_.GetSize());
  }

 private:
  ReusableWriter() : writer_(buffer_) {}
  rapidjson::StringBuffer buffer_;
  JsonWriter writer_;
};

}  // namespace

std::string BuildPayoutBody(const PayoutRequest& request,
                            absl::string_view registration_id) {
  ReusableWriter& reusable = ReusableWriter::ForThisThread();
  JsonWriter& writer = reusable.writer();
  writer.StartObject();
  WriteMember(writer, "accountNumber", request.beneficiary.account_number);
  WriteMember(writer, "amount", FormatRupees(request.amount_paise));
  WriteMember(writer, "transactionType", TransferModeName(request.mode));
  WriteMember(writer, "beneficiaryIFSC", request.beneficiary.ifsc);
  WriteMember(writer, "beneficiaryName", request.beneficiary.name);
  WriteMember(writer, "emailID", request.beneficiary.email);
  WriteMember(writer, "mobileNo", request.beneficiary.mobile);
  WriteMember(writer, "registrationID", registration_id);
  writer.EndObject();
  return reusable.Take();
}

std::string BuildStatusBody(absl::string_view transaction_id,
                            absl::string_view registration_id) {
  ReusableWriter& reusable = ReusableWriter::ForThisThread();
  JsonWriter& writer = reusable.writer();
  writer.StartObject();
  WriteMember(writer, "transactionID", transaction_id);
  WriteMember(writer, "registrationID", registration_id);
  writer.EndObject();
  return reusable.Take();
}

PayoutVerdict InterpretPayoutAnswer(const HttpAnswer& answer) {
  const int http = answer.http_status;
  if (answer.truncated) return CutOffVerdict(answer);
  // A server error may come after the money moved, whatever its body says.
  if (http >= 500) {
    return UnknownVerdict(absl::StrCat("AOPay answered HTTP ", http), http,
                          std::nullopt);
  }
  SmallJsonDocument document;
  const bool is_object = ParseObject(answer.body, &document);
  if (!is_object) {
    if (http == 429) return RateLimitedVerdict(http);
    return UnknownVerdict(
        absl::StrCat("AOPay's answer (HTTP ", http, ") is not a JSON object"),
        http, std::nullopt);
  }
  const Located located = FindResourceData(document);
  const Value* meta_data = located.wrapper != nullptr
                               ? ObjectMember(*located.wrapper, "metaData")
                               : nullptr;
  const bool says_success =
      StringMemberIs(document, "statuss", "SUCCESS") ||
      (meta_data != nullptr && StringMemberIs(*meta_data, "status", "SUCCESS"));
  // An answer that also carries success markers or a transaction id may
  // describe a payout AOPay took: neither a refusal nor "not sent". A
  // success answer is decided by says_success and never walked.
  const bool may_have_taken = says_success || MayDescribeTakenPayout(document);
  if (http == 429) {
    return may_have_taken ? ContradictionVerdict(document, located, http,
                                                 "HTTP 429 and success")
                          : RateLimitedVerdict(http);
  }
  // An error body proves a refusal only on a 2xx or a 4xx: a redirect is
  // never followed, and any other status says nothing of the payout.
  if (StringMemberIs(document, "status", "ERROR") &&
      (Is2xx(http) || (http >= 400 && http < 500))) {
    return may_have_taken ? ContradictionVerdict(document, located, http,
                                                 "error and success")
                          : ErrorBodyVerdict(document, http);
  }
  if (Is2xx(http) && says_success) {
    // A success is read member by member: a name given twice leaves open
    // which of the two AOPay meant.
    if (RepeatsAName(document, 2)) {
      return UnknownVerdict(absl::StrCat("AOPay's answer (HTTP ", http,
                                         ") repeats a name within one object"),
                            http, std::nullopt);
    }
    if (ACallStatusIsNotSuccess(document, meta_data)) {
      return ContradictionVerdict(document, located, http,
                                  "success and another call status");
    }
    return SuccessVerdict(document, located, http);
  }
  return UnknownVerdict(
      absl::StrCat("AOPay's answer (HTTP ", http,
                   ") is neither a success nor an error the gateway knows"),
      http, UpstreamMessage(document, located.wrapper));
}

PayoutVerdict InterpretTransportFailure(const absl::Status& transport_error) {
  // The transport's own message is left out: it may hold the upstream URL.
  switch (transport_error.code()) {
    case absl::StatusCode::kUnavailable:
      return NotSentVerdict(absl::StatusCode::kUnavailable,
                            reason::kUpstreamUnavailable,
                            "AOPay could not be reached; the payout was not "
                            "sent, try again later.",
                            std::nullopt);
    case absl::StatusCode::kResourceExhausted:
      return NotSentVerdict(absl::StatusCode::kResourceExhausted,
                            reason::kOverloaded,
                            "The gateway has too many AOPay calls waiting; "
                            "the payout was not sent, try again later.",
                            std::nullopt);
    case absl::StatusCode::kCancelled: {
      PayoutVerdict verdict;
      verdict.kind = Kind::kNotSent;
      verdict.state = PayoutState::kUnspecified;
      verdict.error = ShuttingDownError();
      return verdict;
    }
    case absl::StatusCode::kDeadlineExceeded:
      return UnknownVerdict("AOPay did not answer within the upstream timeout",
                            std::nullopt, std::nullopt);
    default:
      return UnknownVerdict(
          "The connection to AOPay failed after the payout may have been sent",
          std::nullopt, std::nullopt);
  }
}

StatusVerdict InterpretStatusAnswer(const HttpAnswer& answer,
                                    absl::string_view transaction_id) {
  StatusVerdict verdict;
  if (answer.truncated || !Is2xx(answer.http_status)) return verdict;
  SmallJsonDocument document;
  if (!ParseObject(answer.body, &document) || RepeatsAName(document, 2)) {
    return verdict;
  }

  const Located located = FindResourceData(document);
  const std::optional<std::string> named =
      NamedTransactionId(document, located);
  const bool names_own_transaction =
      named.has_value() && !transaction_id.empty() &&
      absl::StripAsciiWhitespace(*named) ==
          absl::StripAsciiWhitespace(transaction_id);
  const bool names_other_transaction =
      named.has_value() && !names_own_transaction;

  // Rule 1: the words under resourceData; rule 2: the top-level words, only
  // beside the payout's own transaction id.
  std::vector<absl::string_view> words;
  auto collect = [&words](const Value& object,
                          std::initializer_list<absl::string_view> names) {
    for (const absl::string_view name : names) {
      if (std::optional<absl::string_view> word = StringMember(object, name)) {
        words.push_back(*word);
      }
    }
  };
  if (located.resource_data != nullptr) {
    collect(*located.resource_data, {"status", "transactionStatus"});
  }
  const bool from_resource_data = !words.empty();
  if (!from_resource_data) {
    collect(document, {"status", "statuss", "transactionStatus"});
  }
  if (words.empty()) return verdict;
  verdict.word = KeptStatusWord(words.front());

  // Rule 3, answers about some other transaction, and answers whose
  // resourceData objects disagree: not understood.
  if (StringMemberIs(document, "status", "ERROR") || names_other_transaction ||
      ResourceDataDisagree(document)) {
    return verdict;
  }
  if (!from_resource_data && !names_own_transaction) return verdict;
  // Every word found must be known and agree; otherwise nothing changes.
  std::optional<PayoutState> state;
  for (const absl::string_view word : words) {
    const std::optional<PayoutState> mapped = MapStatusWord(word);
    if (!mapped.has_value() || (state.has_value() && *state != *mapped)) {
      return verdict;
    }
    state = mapped;
  }
  verdict.state = state;
  return verdict;
}

bool IsTrackableTransactionId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxTransactionIdBytes ||
      !text_internal::IsValidUtf8(id)) {
    return false;
  }
  for (const char c : id) {
    if ((c >= 0 && c < 0x20) || c == 0x7F) return false;
  }
  return true;
}

std::optional<PayoutState> MapStatusWord(absl::string_view word) {
  struct Entry {
    absl::string_view word;
    PayoutState state;
  };
  static constexpr Entry kWords[] = {
      {"SUCCESS", PayoutState::kSucceeded},
      {"SUCCESSFUL", PayoutState::kSucceeded},
      {"ACSC", PayoutState::kSucceeded},
      {"COMPLETED", PayoutState::kSucceeded},
      {"PROCESSED", PayoutState::kSucceeded},
      {"FAILED", PayoutState::kFailed},
      {"FAILURE", PayoutState::kFailed},
      {"RJCT", PayoutState::kFailed},
      {"REJECTED", PayoutState::kFailed},
      {"REVERSED", PayoutState::kReversed},
      {"RETURNED", PayoutState::kReversed},
      {"ACPT", PayoutState::kAccepted},
      {"PENDING", PayoutState::kAccepted},
      {"PDNG", PayoutState::kAccepted},
      {"PROCESSING", PayoutState::kAccepted},
      {"IN_PROCESS", PayoutState::kAccepted},
  };
  const absl::string_view stripped = absl::StripAsciiWhitespace(word);
  for (const Entry& entry : kWords) {
    if (absl::EqualsIgnoreCase(stripped, entry.word)) return entry.state;
  }
  return std::nullopt;
}

}  // namespace aopay
