#include "common/aopay_codec.h"

#include <map>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "common/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"

namespace aopay {
namespace {

using Kind = PayoutVerdict::Kind;
using testing::ElementsAre;
using testing::HasSubstr;

// ---- Bodies sent to AOPay ----

PayoutRequest DocumentedRequest() {
  PayoutRequest request;
  request.request_id = "req-1";
  request.beneficiary.account_number = "100000011836";
  request.beneficiary.ifsc = "SBIN0000002";
  request.beneficiary.name = "Dean Jon";
  request.beneficiary.email = "abc@gmail.com";
  request.beneficiary.mobile = "9959640000";
  request.amount_paise = 1200;
  request.mode = TransferMode::kImps;
  return request;
}

TEST(BuildPayoutBodyTest, WritesTheDocumentedFieldsInOrder) {
  EXPECT_EQ(BuildPayoutBody(DocumentedRequest(), "AOP-554"),
            R"({"accountNumber":"100000011836","amount":"12.00",)"
            R"("transactionType":"IMPS","beneficiaryIFSC":"SBIN0000002",)"
            R"("beneficiaryName":"Dean Jon","emailID":"abc@gmail.com",)"
            R"("mobileNo":"9959640000","registrationID":"AOP-554"})");
}

TEST(BuildPayoutBodyTest, NeftAndSmallAmounts) {
  PayoutRequest request = DocumentedRequest();
  request.mode = TransferMode::kNeft;
  request.amount_paise = 5;
  const std::string body = BuildPayoutBody(request, "AOP-554");
  EXPECT_THAT(body, HasSubstr(R"("amount":"0.05","transactionType":"NEFT")"));
}

TEST(BuildPayoutBodyTest, EscapesQuotesBackslashesAndControls) {
  PayoutRequest request = DocumentedRequest();
  request.beneficiary.name = "Dean \"DJ\" \\ Jon";
  request.beneficiary.email = "caf\xC3\xA9@x.in";  // é passes through as UTF-8
  const std::string registration("AOP\n\t\x01/554\0z", 12);
  const std::string body = BuildPayoutBody(request, registration);
  EXPECT_THAT(body, HasSubstr(R"("beneficiaryName":"Dean \"DJ\" \\ Jon")"));
  EXPECT_THAT(body, HasSubstr("\"emailID\":\"caf\xC3\xA9@x.in\""));
  EXPECT_THAT(body,
              HasSubstr(R"("registrationID":"AOP\n\t\u0001/554\u0000z")"));

  // And it reads back to the same values.
  rapidjson::Document document;
  document.Parse(body.data(), body.size());
  ASSERT_FALSE(document.HasParseError());
  ASSERT_TRUE(document.IsObject());
  EXPECT_EQ(document.MemberCount(), 8u);
  ASSERT_TRUE(document["beneficiaryName"].IsString());
  EXPECT_EQ(document["beneficiaryName"].GetString(), request.beneficiary.name);
  ASSERT_TRUE(document["registrationID"].IsString());
  EXPECT_EQ(std::string(document["registrationID"].GetString(),
                        document["registrationID"].GetStringLength()),
            registration);
  for (const auto& member : document.GetObject()) {
    EXPECT_TRUE(member.value.IsString()) << member.name.GetString();
  }
}

TEST(BuildStatusBodyTest, WritesBothFields) {
  EXPECT_EQ(BuildStatusBody("TERF920898", "AOP-554"),
            R"({"transactionID":"TERF920898","registrationID":"AOP-554"})");
  EXPECT_EQ(BuildStatusBody("a\"b\\c", ""),
            R"({"transactionID":"a\"b\\c","registrationID":""})");
}

// ---- Payout answers ----

constexpr char kDocumentedSuccess[] = R"({
  "initiateAuthGenericFundTransferAPIResp": {
    "metaData": {"status": "SUCCESS", "message": "fundTransfer successfully processed",
                 "version": "v1", "time": "2025-02-25T06:42:43.469Z"},
    "resourceData": {"status": "ACPT", "transactionReferenceNo": "505914786331",
                     "transactionID": "TERF920898", "beneficiaryName": "ABC"}
  },
  "statuss": "SUCCESS",
  "message": "fundTransfer successfully processed",
  "value": ""
})";

constexpr char kMessage403[] =
    "APIs not enabled. Please reach out to care@AOP.com";
constexpr char kMessage409[] = "Beneficiary Id already exists";
constexpr char kMessage412[] = "Post data is empty or not a valid JSON";
constexpr char kMessage422[] = "Please provide a valid Bank IFSC code.";

std::string ErrorBody(absl::string_view sub_code_json,
                      absl::string_view message) {
  return absl::StrCat(R"({"status": "ERROR", "subCode": )", sub_code_json,
                      R"(, "message": ")", message, R"("})");
}

// A success answer whose resourceData is `resource_data` (a JSON object).
std::string SuccessWith(absl::string_view resource_data) {
  return absl::StrCat(
      R"({"initiateAuthGenericFundTransferAPIResp": {"metaData": )"
      R"({"status": "SUCCESS"}, "resourceData": )",
      resource_data, R"(}, "statuss": "SUCCESS", "message": "ok"})");
}

HttpAnswer Answer(int status, std::string body, bool truncated = false) {
  HttpAnswer answer;
  answer.http_status = status;
  answer.body = std::move(body);
  answer.truncated = truncated;
  return answer;
}

using Metadata = std::map<std::string, std::string>;

struct PayoutCase {
  std::string name;
  HttpAnswer answer;
  Kind kind = Kind::kUnknown;
  absl::StatusCode code = absl::StatusCode::kOk;  // kOk when accepted
  std::string reason;
  Metadata metadata;
  std::string message_fragment;
  PayoutState state = PayoutState::kUnknown;
  std::string transaction_id;
  std::string upstream_status;
};

PayoutCase Base(std::string name, HttpAnswer answer, Kind kind) {
  PayoutCase c;
  c.name = std::move(name);
  c.answer = std::move(answer);
  c.kind = kind;
  return c;
}

PayoutCase Accepted(std::string name, HttpAnswer answer, PayoutState state,
                    std::string transaction_id, std::string upstream_status) {
  PayoutCase c = Base(std::move(name), std::move(answer), Kind::kAccepted);
  c.state = state;
  c.transaction_id = std::move(transaction_id);
  c.upstream_status = std::move(upstream_status);
  return c;
}

PayoutCase Unknown(std::string name, HttpAnswer answer, Metadata metadata,
                   std::string transaction_id = "",
                   std::string upstream_status = "") {
  PayoutCase c = Base(std::move(name), std::move(answer), Kind::kUnknown);
  c.code = absl::StatusCode::kDeadlineExceeded;
  c.reason = "OUTCOME_UNKNOWN";
  c.metadata = std::move(metadata);
  c.message_fragment = "outcome is unknown";
  c.state = PayoutState::kUnknown;
  c.transaction_id = std::move(transaction_id);
  c.upstream_status = std::move(upstream_status);
  return c;
}

PayoutCase Rejected(std::string name, HttpAnswer answer, absl::StatusCode code,
                    std::string reason, Metadata metadata,
                    std::string message_fragment) {
  PayoutCase c = Base(std::move(name), std::move(answer), Kind::kRejected);
  c.code = code;
  c.reason = std::move(reason);
  c.metadata = std::move(metadata);
  c.message_fragment = std::move(message_fragment);
  c.state = PayoutState::kFailed;
  return c;
}

PayoutCase NotSent(std::string name, HttpAnswer answer, Metadata metadata) {
  PayoutCase c = Base(std::move(name), std::move(answer), Kind::kNotSent);
  c.code = absl::StatusCode::kUnavailable;
  c.reason = "UPSTREAM_UNAVAILABLE";
  c.metadata = std::move(metadata);
  c.message_fragment = "not sent";
  return c;
}

Metadata Upstream(std::string http, std::optional<std::string> sub_code,
                  std::optional<std::string> message) {
  Metadata metadata{{"upstreamHttpStatus", std::move(http)}};
  if (sub_code) metadata["upstreamSubCode"] = *sub_code;
  if (message) metadata["upstreamMessage"] = *message;
  return metadata;
}

Metadata HttpOnly(std::string http) {
  return Upstream(std::move(http), std::nullopt, std::nullopt);
}

class InterpretPayoutAnswerTest : public testing::TestWithParam<PayoutCase> {};

TEST_P(InterpretPayoutAnswerTest, MatchesTheContract) {
  const PayoutCase& c = GetParam();
  const PayoutVerdict verdict = InterpretPayoutAnswer(c.answer);
  EXPECT_EQ(verdict.kind, c.kind);
  EXPECT_EQ(verdict.transaction_id, c.transaction_id);
  EXPECT_EQ(verdict.upstream_status, c.upstream_status);
  if (c.kind == Kind::kAccepted) {
    EXPECT_TRUE(verdict.error.ok()) << verdict.error;
    EXPECT_EQ(verdict.state, c.state);
    return;
  }
  if (c.kind != Kind::kNotSent) {
    EXPECT_EQ(verdict.state, c.state);
  }
  EXPECT_EQ(verdict.error.code(), c.code) << verdict.error;
  const ErrorDetails details = GetErrorDetails(verdict.error);
  EXPECT_EQ(details.reason, c.reason);
  EXPECT_EQ(details.metadata, c.metadata);
  EXPECT_THAT(std::string(verdict.error.message()),
              HasSubstr(c.message_fragment));
  EXPECT_LE(verdict.error.message().size(), kMaxErrorMessageBytes);
  if (c.kind == Kind::kNotSent) {
    EXPECT_EQ(details.retry_delay, absl::Seconds(1));
  } else {
    EXPECT_EQ(details.retry_delay, std::nullopt);
  }
  if (c.reason == "UPSTREAM_INVALID_IFSC") {
    EXPECT_THAT(details.violations,
                ElementsAre(FieldViolation{"beneficiary.ifsc",
                                           "AOPay does not accept this IFSC"}));
  } else {
    EXPECT_TRUE(details.violations.empty());
  }
}

constexpr auto kInvalidArgument = absl::StatusCode::kInvalidArgument;
constexpr auto kAlreadyExists = absl::StatusCode::kAlreadyExists;
constexpr auto kFailedPrecondition = absl::StatusCode::kFailedPrecondition;
constexpr auto kInternal = absl::StatusCode::kInternal;

INSTANTIATE_TEST_SUITE_P(
    Table, InterpretPayoutAnswerTest,
    testing::Values(
        // The documented success.
        // Longer than std::string's inline buffer: a copy that outlives
        // its source must hold the whole id.
        Accepted("LongTransactionId",
                 Answer(200,
                        SuccessWith(R"({"status":"ACPT",)"
                                    R"("transactionID":"TERF329028909568"})")),
                 PayoutState::kAccepted, "TERF329028909568", "ACPT"),
        Accepted("DocumentedSuccess", Answer(200, kDocumentedSuccess),
                 PayoutState::kAccepted, "TERF920898", "ACPT"),
        // Each documented error, with its own HTTP status and with 200.
        Rejected("Error422", Answer(422, ErrorBody("\"422\"", kMessage422)),
                 kInvalidArgument, "UPSTREAM_INVALID_IFSC",
                 Upstream("422", "422", kMessage422), "invalid IFSC"),
        Rejected("Error422With200",
                 Answer(200, ErrorBody("\"422\"", kMessage422)),
                 kInvalidArgument, "UPSTREAM_INVALID_IFSC",
                 Upstream("200", "422", kMessage422), "invalid IFSC"),
        Rejected("Error409", Answer(409, ErrorBody("\"409\"", kMessage409)),
                 kAlreadyExists, "UPSTREAM_BENEFICIARY_EXISTS",
                 Upstream("409", "409", kMessage409), "already exists"),
        Rejected("Error409With200",
                 Answer(200, ErrorBody("\"409\"", kMessage409)), kAlreadyExists,
                 "UPSTREAM_BENEFICIARY_EXISTS",
                 Upstream("200", "409", kMessage409), "already exists"),
        Rejected("Error403", Answer(403, ErrorBody("\"403\"", kMessage403)),
                 kFailedPrecondition, "UPSTREAM_API_NOT_ENABLED",
                 Upstream("403", "403", kMessage403), "not enabled"),
        Rejected("Error403With200",
                 Answer(200, ErrorBody("\"403\"", kMessage403)),
                 kFailedPrecondition, "UPSTREAM_API_NOT_ENABLED",
                 Upstream("200", "403", kMessage403), "not enabled"),
        Rejected("Error412", Answer(412, ErrorBody("\"412\"", kMessage412)),
                 kInternal, "UPSTREAM_REJECTED_BODY",
                 Upstream("412", "412", kMessage412), "subCode 412"),
        Rejected("Error412With200",
                 Answer(200, ErrorBody("\"412\"", kMessage412)), kInternal,
                 "UPSTREAM_REJECTED_BODY", Upstream("200", "412", kMessage412),
                 "subCode 412"),
        // Variations on the error body.
        Rejected("SubCodeAsNumber", Answer(200, ErrorBody("422", kMessage422)),
                 kInvalidArgument, "UPSTREAM_INVALID_IFSC",
                 Upstream("200", "422", kMessage422), "invalid IFSC"),
        Rejected("SubCodeWithSpaces",
                 Answer(200, ErrorBody("\" 409 \"", kMessage409)),
                 kAlreadyExists, "UPSTREAM_BENEFICIARY_EXISTS",
                 Upstream("200", "409", kMessage409), "already exists"),
        Rejected("UnknownSubCode",
                 Answer(400, ErrorBody("\"999\"", "Something else")),
                 kFailedPrecondition, "UPSTREAM_ERROR",
                 Upstream("400", "999", "Something else"), "subCode 999"),
        Rejected("UnknownSubCodeWith200",
                 Answer(200, ErrorBody("\"E17\"", "Insufficient balance")),
                 kFailedPrecondition, "UPSTREAM_ERROR",
                 Upstream("200", "E17", "Insufficient balance"), "subCode E17"),
        Rejected("SubCodeNotQuotedWhenOdd",
                 Answer(200, ErrorBody("\"a b<c>\"", "x")), kFailedPrecondition,
                 "UPSTREAM_ERROR", Upstream("200", "a b<c>", "x"),
                 "AOPay refused the payout."),
        Rejected("MissingSubCode",
                 Answer(200, R"({"status":"ERROR","message":"Oops"})"),
                 kFailedPrecondition, "UPSTREAM_ERROR",
                 Upstream("200", std::nullopt, "Oops"), "refused"),
        Rejected("NullSubCodeNoMessage",
                 Answer(400, R"({"status":"ERROR","subCode":null})"),
                 kFailedPrecondition, "UPSTREAM_ERROR", HttpOnly("400"),
                 "refused"),
        Rejected("LowerCaseError",
                 Answer(200, R"({"status":"error","subCode":"422"})"),
                 kInvalidArgument, "UPSTREAM_INVALID_IFSC",
                 Upstream("200", "422", std::nullopt), "invalid IFSC"),
        Rejected("LongMessageIsCut",
                 Answer(200, ErrorBody("\"1\"", std::string(1000, 'm'))),
                 kFailedPrecondition, "UPSTREAM_ERROR",
                 Upstream("200", "1", std::string(256, 'm')), "subCode 1"),
        Rejected("InvalidUtf8MessageIsCleaned",
                 Answer(200, ErrorBody("\"1\"", "bad \xFF byte\\n")),
                 kFailedPrecondition, "UPSTREAM_ERROR",
                 Upstream("200", "1", "bad ? byte "), "subCode 1"),
        // Not sent.
        NotSent("Http429", Answer(429, ""), HttpOnly("429")),
        NotSent("Http429WithErrorBody",
                Answer(429, ErrorBody("\"422\"", kMessage422)),
                HttpOnly("429")),
        NotSent("Http429WithHtml", Answer(429, "<html>Too many</html>"),
                HttpOnly("429")),
        // A 429 that also speaks of success contradicts itself: it may have
        // been taken, so it is not "certainly not sent".
        Unknown("Http429WithDocumentedSuccess", Answer(429, kDocumentedSuccess),
                Upstream("429", std::nullopt,
                         "fundTransfer successfully processed"),
                "TERF920898", "ACPT"),
        Unknown("Http429WithStatussSuccess",
                Answer(429, R"({"statuss":"SUCCESS"})"), HttpOnly("429")),
        Unknown("Http429WithTransactionIdInResourceData",
                Answer(429, R"({"resourceData":{"transactionID":"TERF9"}})"),
                HttpOnly("429"), "TERF9"),
        Unknown("Http429WithTopLevelTransactionId",
                Answer(429, R"({"transactionID":"TERF9"})"), HttpOnly("429"),
                "TERF9"),
        // Found by fuzzing: the marker in a second wrapper object.
        Unknown("Http429WithSuccessInASecondWrapper",
                Answer(429, R"({"first":{"metaData":{"status":"x"}},)"
                            R"("second":{"metaData":{"status":"SUCCESS"}}})"),
                HttpOnly("429")),
        // Two resourceData that disagree: neither's fields are kept.
        Unknown("Http429WithTransactionIdInASecondWrapper",
                Answer(429, R"({"first":{"resourceData":{"status":"x"}},)"
                            R"("second":{"resourceData":)"
                            R"({"transactionID":"TERF9"}}})"),
                HttpOnly("429")),
        Unknown("Http429WithNullTransactionId",
                Answer(429, R"({"transactionID":null})"), HttpOnly("429")),
        Unknown("Http429WithErrorAndTransactionId",
                Answer(429, R"({"status":"ERROR","subCode":"429",)"
                            R"("transactionID":"TERF9"})"),
                HttpOnly("429"), "TERF9"),
        // Whatever the place: a success word, a status word that is not a
        // refusal, a bank reference or a transaction id anywhere in a 429
        // or an error may describe a payout AOPay took.
        Unknown("Http429WithTopLevelMetaDataSuccess",
                Answer(429, R"({"metaData":{"status":"SUCCESS"}})"),
                HttpOnly("429")),
        Unknown("Http429WithStatussSuccessful",
                Answer(429, R"({"statuss":"SUCCESSFUL"})"), HttpOnly("429")),
        Unknown("Http429WithAcceptedResourceDataAndReference",
                Answer(429, R"({"resourceData":{"status":"SUCCESS",)"
                            R"("transactionReferenceNo":"505914786331"}})"),
                HttpOnly("429"), "", "SUCCESS"),
        Unknown("Http429WithTransactionIdInAWrapper",
                Answer(429, R"({"status":"ERROR","data":)"
                            R"({"transactionID":"TERF9"}})"),
                HttpOnly("429")),
        Unknown("Http429WithUnknownStatusWord",
                Answer(429, R"({"metaData":{"status":"QUEUED"}})"),
                HttpOnly("429")),
        NotSent("Http429WithRefusalWords",
                Answer(429, R"({"status":"ERROR","statuss":"FAILED",)"
                            R"("metaData":{"status":"ERROR"},)"
                            R"("resourceData":{"status":"REJECTED"}})"),
                HttpOnly("429")),
        Unknown("ErrorWithTopLevelMetaDataSuccess",
                Answer(200, R"({"status":"ERROR","metaData":)"
                            R"({"status":"SUCCESS"}})"),
                HttpOnly("200")),
        Unknown("ErrorWithAcceptedResourceData",
                Answer(200, R"({"status":"ERROR","resourceData":)"
                            R"({"status":"ACPT","transactionReferenceNo":)"
                            R"("5059"}})"),
                HttpOnly("200"), "", "ACPT"),
        Unknown("ErrorWithDeepTransactionId",
                Answer(200, R"({"status":"ERROR","x":{"y":{"resourceData":)"
                            R"({"transactionID":"TERF1"}}}})"),
                HttpOnly("200")),
        Unknown("ErrorWithTransactionIdInAnArray",
                Answer(400, R"({"status":"ERROR","subCode":"422",)"
                            R"("items":[{"transactionID":"TERF1"}]})"),
                HttpOnly("400")),
        Rejected("ErrorWithFailedResourceData",
                 Answer(400, R"({"status":"ERROR","subCode":"422",)"
                             R"("message":"bad","resourceData":)"
                             R"({"status":"FAILED"}})"),
                 kInvalidArgument, "UPSTREAM_INVALID_IFSC",
                 Upstream("400", "422", "bad"), "invalid IFSC"),
        // An error body on a status that is neither 2xx nor 4xx proves no
        // refusal: a redirect is never followed.
        Unknown("ErrorOnARedirect",
                Answer(301, ErrorBody("\"422\"", kMessage422)),
                Upstream("301", std::nullopt, kMessage422)),
        Unknown("ErrorOnAnInformationalStatus",
                Answer(100, ErrorBody("\"422\"", kMessage422)),
                Upstream("100", std::nullopt, kMessage422)),
        // Server errors: whatever the body says.
        Unknown("Http500Html",
                Answer(500, "<html><body>Internal Server Error</body></html>"),
                HttpOnly("500")),
        Unknown("Http502JsonSuccess", Answer(502, kDocumentedSuccess),
                HttpOnly("502")),
        Unknown("Http503JsonError",
                Answer(503, ErrorBody("\"422\"", kMessage422)),
                HttpOnly("503")),
        // Contradictions: an error that may describe a payout AOPay took.
        Unknown("ErrorWithSuccessMarker",
                Answer(200, R"({"status":"ERROR","subCode":"409",)"
                            R"("message":"dup","statuss":"SUCCESS"})"),
                Upstream("200", std::nullopt, "dup")),
        Unknown("ErrorWithTransactionId",
                Answer(200, R"({"status":"ERROR","subCode":"422",)"
                            R"("message":"bad","resourceData":)"
                            R"({"transactionID":"TERF1"}})"),
                Upstream("200", std::nullopt, "bad"), "TERF1"),
        Unknown("ErrorWithNumericTransactionId",
                Answer(200, R"({"status":"ERROR","subCode":"422",)"
                            R"("message":"bad","transactionID":920898})"),
                Upstream("200", std::nullopt, "bad"), "920898"),
        Unknown("ErrorWithObjectTransactionId",
                Answer(200, R"({"status":"ERROR","subCode":"422",)"
                            R"("message":"bad","transactionID":{"id":1}})"),
                Upstream("200", std::nullopt, "bad")),
        Unknown("ErrorWithTopLevelTransactionId",
                Answer(200, R"({"status":"ERROR","subCode":"422",)"
                            R"("message":"bad","transactionID":"TERF1"})"),
                Upstream("200", std::nullopt, "bad"), "TERF1"),
        // Unreadable bodies.
        Unknown("EmptyBody200", Answer(200, ""), HttpOnly("200")),
        Unknown("InvalidJson", Answer(200, R"({"statuss": "SUCCESS",)"),
                HttpOnly("200")),
        Unknown("JsonArray", Answer(200, R"([{"statuss":"SUCCESS"}])"),
                HttpOnly("200")),
        Unknown("JsonString", Answer(200, R"("SUCCESS")"), HttpOnly("200")),
        Unknown("TrailingGarbage", Answer(200, R"({"status":"ERROR"} x)"),
                HttpOnly("200")),
        Unknown("NulAfterObject",
                Answer(200, std::string(R"({"status":"ERROR"})") +
                                std::string("\0junk", 5)),
                HttpOnly("200")),
        Unknown("DeeplyNestedOpen", Answer(200, std::string(100'000, '[')),
                HttpOnly("200")),
        Unknown("DeeplyNestedObjects",
                Answer(200,
                       [] {
                         std::string body;
                         for (int i = 0; i < 100'000; ++i) body += R"({"a":)";
                         return body;
                       }()),
                HttpOnly("200")),
        Unknown("DeeplyNestedBalancedInsideSuccess",
                Answer(200, R"({"statuss":"SUCCESS","x":)" +
                                std::string(100'000, '[') +
                                std::string(100'000, ']') + "}"),
                HttpOnly("200")),
        // A cut answer is UNKNOWN whatever it says; a transaction id in it
        // is kept when what arrived is a whole JSON object, so the payout
        // can be refreshed.
        Unknown("Truncated", Answer(200, kDocumentedSuccess, true),
                HttpOnly("200"), "TERF920898", "ACPT"),
        Unknown("TruncatedMidObjectKeepsNothing",
                Answer(200, std::string(kDocumentedSuccess).substr(0, 150),
                       true),
                HttpOnly("200")),
        Unknown("TruncatedError", Answer(422, ErrorBody("\"422\"", ""), true),
                HttpOnly("422")),
        Unknown("Truncated429", Answer(429, R"({"status":"ERROR"})", true),
                HttpOnly("429")),
        // A cut answer keeps only what the same answer whole would keep.
        Unknown("Truncated5xxKeepsNothing",
                Answer(502, kDocumentedSuccess, true), HttpOnly("502")),
        Unknown("TruncatedNeitherSuccessNorErrorKeepsNothing",
                Answer(200, R"({"transactionID":"T1"})", true),
                HttpOnly("200")),
        Unknown("TruncatedWithDisagreeingResourceDataKeepsNothing",
                Answer(200,
                       R"({"statuss":"SUCCESS","a":{"resourceData":)"
                       R"({"transactionID":"T1"}},"b":{"resourceData":)"
                       R"({"transactionID":"T2"}}})",
                       true),
                HttpOnly("200")),
        // Success-shaped answers that cannot be tracked.
        Unknown("SuccessWithoutResourceData",
                Answer(200, R"({"statuss":"SUCCESS","message":"done"})"),
                Upstream("200", std::nullopt, "done")),
        Unknown("SuccessWithoutTransactionId",
                Answer(200, SuccessWith(R"({"status":"ACPT"})")),
                Upstream("200", std::nullopt, "ok"), "", "ACPT"),
        Unknown("SuccessWithEmptyTransactionId",
                Answer(200,
                       SuccessWith(R"({"status":"ACPT","transactionID":""})")),
                Upstream("200", std::nullopt, "ok"), "", "ACPT"),
        Unknown("SuccessWithNumericTransactionId",
                Answer(200,
                       SuccessWith(R"({"status":"ACPT","transactionID":123})")),
                Upstream("200", std::nullopt, "ok"), "", "ACPT"),
        Unknown("SuccessWithControlInTransactionId",
                Answer(200, SuccessWith(
                                R"({"status":"ACPT","transactionID":"T\n1"})")),
                Upstream("200", std::nullopt, "ok"), "", "ACPT"),
        // resourceData.status words.
        Accepted(
            "ResourceStatusSuccess",
            Answer(200,
                   SuccessWith(R"({"status":"SUCCESS","transactionID":"T1"})")),
            PayoutState::kSucceeded, "T1", "SUCCESS"),
        Accepted(
            "ResourceStatusPendingLowerCase",
            Answer(200,
                   SuccessWith(R"({"status":"pending","transactionID":"T1"})")),
            PayoutState::kAccepted, "T1", "pending"),
        Accepted("ResourceStatusMissing",
                 Answer(200, SuccessWith(R"({"transactionID":"T1"})")),
                 PayoutState::kAccepted, "T1", ""),
        Accepted("ResourceStatusEmpty",
                 Answer(200,
                        SuccessWith(R"({"status":"","transactionID":"T1"})")),
                 PayoutState::kAccepted, "T1", ""),
        // White space around the word does not count, however much there
        // is, and is not kept: the word is cut to 64 bytes only after.
        Accepted("ResourceStatusPadded",
                 Answer(200, SuccessWith(absl::StrCat(
                                 R"({"status":")", std::string(70, ' '),
                                 R"(ACPT\t","transactionID":"T1"})"))),
                 PayoutState::kAccepted, "T1", "ACPT"),
        // More than one resourceData that disagree: which one is the
        // payout's is not known, so nothing of them is kept.
        Unknown("SuccessWithResourceDataThatDisagree",
                Answer(200, R"({"statuss":"SUCCESS","resourceData":)"
                            R"({"status":"ACPT","transactionID":"T1"},)"
                            R"("x":{"resourceData":{"status":"RJCT",)"
                            R"("transactionID":"T1"}}})"),
                HttpOnly("200")),
        Unknown("SuccessWithResourceDataNamingTwoTransactions",
                Answer(200, R"({"statuss":"SUCCESS",)"
                            R"("a":{"resourceData":{"status":"ACPT",)"
                            R"("transactionID":"T1"}},)"
                            R"("b":{"resourceData":{"status":"ACPT",)"
                            R"("transactionID":"T2"}}})"),
                HttpOnly("200")),
        // An error whose resourceData objects name two transactions: which
        // one is the payout's is not known, so neither is kept to refresh.
        Unknown("ErrorWithResourceDataNamingTwoTransactions",
                Answer(200, R"({"status":"ERROR","subCode":"422",)"
                            R"("message":"bad",)"
                            R"("a":{"resourceData":{"transactionID":"T1"}},)"
                            R"("b":{"resourceData":{"transactionID":"T2"}}})"),
                Upstream("200", std::nullopt, "bad")),
        // A name repeated within one object: the reader would see only the
        // first, so the answer cannot be read with confidence.
        Unknown("RepeatedResourceDataInOneWrapper",
                Answer(200, R"({"statuss":"SUCCESS","w":{"resourceData":)"
                            R"({"status":"ACPT","transactionID":"T1"},)"
                            R"("resourceData":{"status":"RJCT",)"
                            R"("transactionID":"T1"}}})"),
                HttpOnly("200")),
        Unknown("RepeatedStatusInResourceData",
                Answer(200, SuccessWith(R"({"status":"ACPT","status":"RJCT",)"
                                        R"("transactionID":"T1"})")),
                HttpOnly("200")),
        // A success marker given second is still seen: not "not sent".
        Unknown("Http429WithASecondStatussThatSaysSuccess",
                Answer(429, R"({"statuss":"FAILED","statuss":"SUCCESS"})"),
                HttpOnly("429")),
        Unknown("ErrorWithASecondTransactionIdMember",
                Answer(200, R"({"status":"ERROR","subCode":"422",)"
                            R"("message":"bad","resourceData":{},)"
                            R"("resourceData":{"transactionID":"T1"}})"),
                Upstream("200", std::nullopt, "bad")),
        // A name repeated where nothing is read changes nothing.
        NotSent("Http429RepeatingAnotherName",
                Answer(429, R"({"version":"v1","version":"v1"})"),
                HttpOnly("429")),
        Accepted("SuccessWithResourceDataThatAgree",
                 Answer(200, R"({"statuss":"SUCCESS",)"
                             R"("a":{"resourceData":{"status":"ACSC",)"
                             R"("transactionID":"T1"}},)"
                             R"("b":{"resourceData":{"status":"ACSC",)"
                             R"("transactionID":"T1"}}})"),
                 PayoutState::kSucceeded, "T1", "ACSC"),
        // A control character is not white space: the word is not known,
        // though its kept copy shows it as a space.
        Unknown("ResourceStatusWithControlCharacter",
                Answer(200, SuccessWith(R"({"status":"ACPT\u0001",)"
                                        R"("transactionID":"T1"})")),
                Upstream("200", std::nullopt, "ok"), "T1", "ACPT "),
        Unknown("ResourceStatusOnlyAControlCharacter",
                Answer(200, SuccessWith(R"({"status":"\u0001",)"
                                        R"("transactionID":"T1"})")),
                Upstream("200", std::nullopt, "ok"), "T1", " "),
        [] {
          PayoutCase c = Rejected(
              "ResourceStatusRjct",
              Answer(200,
                     SuccessWith(R"({"status":"RJCT","transactionID":"T1"})")),
              kFailedPrecondition, "UPSTREAM_ERROR",
              Upstream("200", std::nullopt, "ok"), "failed (status RJCT)");
          c.transaction_id = "T1";
          c.upstream_status = "RJCT";
          return c;
        }(),
        Unknown(
            "ResourceStatusUnknownWord",
            Answer(200,
                   SuccessWith(R"({"status":"ON_HOLD","transactionID":"T1"})")),
            Upstream("200", std::nullopt, "ok"), "T1", "ON_HOLD"),
        Unknown("ResourceStatusReversed",
                Answer(200,
                       SuccessWith(
                           R"({"status":"REVERSED","transactionID":"T1"})")),
                Upstream("200", std::nullopt, "ok"), "T1", "REVERSED"),
        Unknown("ResourceStatusNotText",
                Answer(200,
                       SuccessWith(R"({"status":7,"transactionID":"T1"})")),
                Upstream("200", std::nullopt, "ok"), "T1", ""),
        // Where the success is said and where resourceData sits.
        Accepted("SuccessOnlyInMetaData",
                 Answer(200,
                        R"({"initiateAuthGenericFundTransferAPIResp":{)"
                        R"("metaData":{"status":"SUCCESS"},"resourceData":)"
                        R"({"status":"ACPT","transactionID":"T2"}}})"),
                 PayoutState::kAccepted, "T2", "ACPT"),
        Accepted("SuccessOnlyInStatussLowerCase",
                 Answer(200, R"({"statuss":"success","resourceData":)"
                             R"({"status":"ACPT","transactionID":"T3"}})"),
                 PayoutState::kAccepted, "T3", "ACPT"),
        Accepted("ResourceDataUnderAnotherWrapper",
                 Answer(201,
                        R"({"statuss":"SUCCESS","otherResp":{"resourceData":)"
                        R"({"status":"ACPT","transactionID":"T4"}}})"),
                 PayoutState::kAccepted, "T4", "ACPT"),
        // resourceData's transactionStatus is the payout's status as much as
        // its status is: alone it is the word, beside it they must agree.
        Accepted("TransactionStatusThatAgrees",
                 Answer(200, SuccessWith(R"({"status":"ACPT",)"
                                         R"("transactionStatus":"PENDING",)"
                                         R"("transactionID":"T1"})")),
                 PayoutState::kAccepted, "T1", "ACPT"),
        Unknown("TransactionStatusThatDisagrees",
                Answer(200, SuccessWith(R"({"status":"ACPT",)"
                                        R"("transactionStatus":"FAILED",)"
                                        R"("transactionID":"T1"})")),
                Upstream("200", std::nullopt, "ok"), "T1", "ACPT"),
        Unknown("TransactionStatusUnknownBesideAKnownStatus",
                Answer(200, SuccessWith(R"({"status":"ACSC",)"
                                        R"("transactionStatus":"ON_HOLD",)"
                                        R"("transactionID":"T1"})")),
                Upstream("200", std::nullopt, "ok"), "T1", "ACSC"),
        Unknown("TransactionStatusNotText",
                Answer(200, SuccessWith(R"({"status":"ACPT",)"
                                        R"("transactionStatus":7,)"
                                        R"("transactionID":"T1"})")),
                Upstream("200", std::nullopt, "ok"), "T1", "ACPT"),
        Accepted("TransactionStatusAlone",
                 Answer(200, SuccessWith(R"({"transactionStatus":"ACSC",)"
                                         R"("transactionID":"T1"})")),
                 PayoutState::kSucceeded, "T1", "ACSC"),
        [] {
          PayoutCase c = Rejected(
              "TransactionStatusAloneFailed",
              Answer(200, SuccessWith(R"({"transactionStatus":"RJCT",)"
                                      R"("transactionID":"T1"})")),
              kFailedPrecondition, "UPSTREAM_ERROR",
              Upstream("200", std::nullopt, "ok"), "failed (status RJCT)");
          c.transaction_id = "T1";
          c.upstream_status = "RJCT";
          return c;
        }(),
        // Every word that says whether the call worked must say SUCCESS
        // when one does: a success beside a failure is not a success.
        Unknown("StatussFailedBesideMetaDataSuccess",
                Answer(200, R"({"initiateAuthGenericFundTransferAPIResp":{)"
                            R"("metaData":{"status":"SUCCESS"},"resourceData":)"
                            R"({"status":"ACPT","transactionID":"T1"}},)"
                            R"("statuss":"FAILED","message":"no"})"),
                Upstream("200", std::nullopt, "no"), "T1", "ACPT"),
        Unknown("MetaDataFailedBesideStatussSuccess",
                Answer(200, R"({"initiateAuthGenericFundTransferAPIResp":{)"
                            R"("metaData":{"status":"FAILED"},"resourceData":)"
                            R"({"status":"ACPT","transactionID":"T1"}},)"
                            R"("statuss":"SUCCESS","message":"no"})"),
                Upstream("200", std::nullopt, "no"), "T1", "ACPT"),
        Unknown("TopLevelStatusFailedBesideStatussSuccess",
                Answer(200, R"({"status":"FAILED","statuss":"SUCCESS",)"
                            R"("resourceData":{"status":"ACPT",)"
                            R"("transactionID":"T1"}})"),
                HttpOnly("200"), "T1", "ACPT"),
        Unknown("StatussNotTextBesideMetaDataSuccess",
                Answer(200, R"({"initiateAuthGenericFundTransferAPIResp":{)"
                            R"("metaData":{"status":"SUCCESS"},"resourceData":)"
                            R"({"status":"ACPT","transactionID":"T1"}},)"
                            R"("statuss":false,"message":"no"})"),
                Upstream("200", std::nullopt, "no"), "T1", "ACPT"),
        Accepted("StatussNullBesideMetaDataSuccess",
                 Answer(200,
                        R"({"initiateAuthGenericFundTransferAPIResp":{)"
                        R"("metaData":{"status":"SUCCESS"},"resourceData":)"
                        R"({"status":"ACPT","transactionID":"T1"}},)"
                        R"("statuss":null})"),
                 PayoutState::kAccepted, "T1", "ACPT"),
        Unknown("MetaDataSaysFailure",
                Answer(200, R"({"initiateAuthGenericFundTransferAPIResp":{)"
                            R"("metaData":{"status":"FAILURE","message":"no"},)"
                            R"("resourceData":{"transactionID":"T5"}}})"),
                Upstream("200", std::nullopt, "no")),
        Unknown("SuccessBodyWithHttp404", Answer(404, kDocumentedSuccess),
                Upstream("404", std::nullopt,
                         "fundTransfer successfully processed")),
        Unknown("NeitherSuccessNorError", Answer(200, R"({"foo":1})"),
                HttpOnly("200"))),
    [](const auto& info) { return info.param.name; });

TEST(InterpretPayoutAnswerTest, FillsEveryFieldOfTheDocumentedSuccess) {
  const PayoutVerdict verdict =
      InterpretPayoutAnswer(Answer(200, kDocumentedSuccess));
  ASSERT_EQ(verdict.kind, Kind::kAccepted);
  EXPECT_EQ(verdict.state, PayoutState::kAccepted);
  EXPECT_EQ(verdict.transaction_id, "TERF920898");
  EXPECT_EQ(verdict.transaction_reference_no, "505914786331");
  EXPECT_EQ(verdict.upstream_status, "ACPT");
  EXPECT_EQ(verdict.bank_beneficiary_name, "ABC");
  EXPECT_TRUE(verdict.error.ok());
}

TEST(InterpretPayoutAnswerTest, KeepsWhatItCanOnUnknown) {
  const PayoutVerdict verdict = InterpretPayoutAnswer(Answer(
      200,
      SuccessWith(
          R"({"status":"HOLD","transactionID":"T9",)"
          R"("transactionReferenceNo":505914786331,"beneficiaryName":"X Y"})")));
  ASSERT_EQ(verdict.kind, Kind::kUnknown);
  EXPECT_EQ(verdict.transaction_id, "T9");
  EXPECT_EQ(verdict.transaction_reference_no, "505914786331");
  EXPECT_EQ(verdict.bank_beneficiary_name, "X Y");
  EXPECT_THAT(std::string(verdict.error.message()),
              HasSubstr("will not be sent again"));
}

TEST(InterpretPayoutAnswerTest, AnAnswerCutByTheConnectionSaysHow) {
  HttpAnswer answer = Answer(200, kDocumentedSuccess, true);
  answer.cut_off_by = "transfer closed with 50 bytes remaining (curl error 18)";
  const PayoutVerdict verdict = InterpretPayoutAnswer(answer);
  ASSERT_EQ(verdict.kind, Kind::kUnknown);
  EXPECT_EQ(verdict.transaction_id, "TERF920898");
  EXPECT_EQ(verdict.transaction_reference_no, "505914786331");
  EXPECT_THAT(std::string(verdict.error.message()),
              HasSubstr("(HTTP 200) was cut off before its end"));
  // The transport's words are the operator's (a log line), not the caller's.
  EXPECT_THAT(std::string(verdict.error.message()),
              testing::Not(HasSubstr("curl error")));
  EXPECT_THAT(std::string(verdict.error.message()),
              testing::Not(HasSubstr("1 MiB")));
}

TEST(InterpretPayoutAnswerTest, MessagesCarryNoUpstreamText) {
  // AOPay's message may echo personal data: it goes to metadata only.
  const PayoutVerdict verdict = InterpretPayoutAnswer(
      Answer(200, ErrorBody("\"409\"", "Beneficiary 100000011836 exists")));
  EXPECT_THAT(std::string(verdict.error.message()),
              testing::Not(HasSubstr("100000011836")));
}

// ---- Transport failures ----

struct TransportCase {
  std::string name;
  absl::Status transport_error;
  Kind kind;
  absl::StatusCode code;
  std::string reason;
};

class InterpretTransportFailureTest
    : public testing::TestWithParam<TransportCase> {};

TEST_P(InterpretTransportFailureTest, MatchesTheContract) {
  const TransportCase& c = GetParam();
  const PayoutVerdict verdict = InterpretTransportFailure(c.transport_error);
  EXPECT_EQ(verdict.kind, c.kind);
  EXPECT_EQ(verdict.error.code(), c.code);
  const ErrorDetails details = GetErrorDetails(verdict.error);
  EXPECT_EQ(details.reason, c.reason);
  EXPECT_TRUE(details.metadata.empty());
  if (c.kind == Kind::kNotSent) {
    EXPECT_EQ(details.retry_delay, absl::Seconds(1));
    EXPECT_THAT(std::string(verdict.error.message()), HasSubstr("not sent"));
  } else {
    EXPECT_EQ(verdict.state, PayoutState::kUnknown);
    EXPECT_EQ(details.retry_delay, std::nullopt);
    EXPECT_THAT(std::string(verdict.error.message()),
                HasSubstr("outcome is unknown"));
  }
  EXPECT_THAT(std::string(verdict.error.message()),
              testing::Not(HasSubstr("secret")));
}

INSTANTIATE_TEST_SUITE_P(
    Table, InterpretTransportFailureTest,
    testing::Values(
        TransportCase{"Unavailable",
                      absl::UnavailableError(
                          "could not connect to https://u:secret@aopay"),
                      Kind::kNotSent, absl::StatusCode::kUnavailable,
                      "UPSTREAM_UNAVAILABLE"},
        TransportCase{"ResourceExhausted",
                      absl::ResourceExhaustedError("queue full secret"),
                      Kind::kNotSent, absl::StatusCode::kResourceExhausted,
                      "OVERLOADED"},
        TransportCase{"Cancelled", absl::CancelledError("secret shutdown"),
                      Kind::kNotSent, absl::StatusCode::kUnavailable,
                      "SHUTTING_DOWN"},
        TransportCase{"DeadlineExceeded",
                      absl::DeadlineExceededError("timeout secret"),
                      Kind::kUnknown, absl::StatusCode::kDeadlineExceeded,
                      "OUTCOME_UNKNOWN"},
        TransportCase{"Unknown", absl::UnknownError("reset secret"),
                      Kind::kUnknown, absl::StatusCode::kDeadlineExceeded,
                      "OUTCOME_UNKNOWN"},
        TransportCase{"Internal", absl::InternalError("tls secret"),
                      Kind::kUnknown, absl::StatusCode::kDeadlineExceeded,
                      "OUTCOME_UNKNOWN"}),
    [](const auto& info) { return info.param.name; });

// ---- Status words and status answers ----

struct WordCase {
  std::string word;
  std::optional<PayoutState> state;
};

class MapStatusWordTest : public testing::TestWithParam<WordCase> {};

TEST_P(MapStatusWordTest, MapsSection63) {
  EXPECT_EQ(MapStatusWord(GetParam().word), GetParam().state)
      << GetParam().word;
}

constexpr auto kSucceeded = PayoutState::kSucceeded;
constexpr auto kFailed = PayoutState::kFailed;
constexpr auto kReversed = PayoutState::kReversed;
constexpr auto kAccepted = PayoutState::kAccepted;

INSTANTIATE_TEST_SUITE_P(
    Table, MapStatusWordTest,
    testing::Values(
        WordCase{"SUCCESS", kSucceeded}, WordCase{"SUCCESSFUL", kSucceeded},
        WordCase{"ACSC", kSucceeded}, WordCase{"COMPLETED", kSucceeded},
        WordCase{"PROCESSED", kSucceeded}, WordCase{"success", kSucceeded},
        WordCase{"Completed", kSucceeded}, WordCase{"FAILED", kFailed},
        WordCase{"FAILURE", kFailed}, WordCase{"RJCT", kFailed},
        WordCase{"REJECTED", kFailed}, WordCase{"rjct", kFailed},
        WordCase{"REVERSED", kReversed}, WordCase{"RETURNED", kReversed},
        WordCase{"Returned", kReversed}, WordCase{"ACPT", kAccepted},
        WordCase{"PENDING", kAccepted}, WordCase{"PDNG", kAccepted},
        WordCase{"PROCESSING", kAccepted}, WordCase{"IN_PROCESS", kAccepted},
        WordCase{"in_process", kAccepted}, WordCase{"", std::nullopt},
        WordCase{"ERROR", std::nullopt}, WordCase{"SUCCES", std::nullopt},
        WordCase{"IN PROCESS", std::nullopt},
        WordCase{"SUCCESS_X", std::nullopt},
        WordCase{"ON_HOLD", std::nullopt}));

struct StatusCase {
  std::string name;
  HttpAnswer answer;
  std::optional<PayoutState> state;
  std::string word;
};

// The payout's own transaction id in every status case below.
constexpr absl::string_view kOwnTransaction = "TERF1";

class InterpretStatusAnswerTest : public testing::TestWithParam<StatusCase> {};

TEST_P(InterpretStatusAnswerTest, FindsAndMapsTheWord) {
  const StatusVerdict verdict =
      InterpretStatusAnswer(GetParam().answer, kOwnTransaction);
  EXPECT_EQ(verdict.state, GetParam().state);
  EXPECT_EQ(verdict.word, GetParam().word);
}

INSTANTIATE_TEST_SUITE_P(
    Table, InterpretStatusAnswerTest,
    testing::Values(
        // Rule 1: a word under resourceData counts.
        StatusCase{"KnownWrapper",
                   Answer(200, SuccessWith(R"({"status":"SUCCESS"})")),
                   kSucceeded, "SUCCESS"},
        StatusCase{"DocumentedShapeStillAccepted",
                   Answer(200, absl::StrReplaceAll(kDocumentedSuccess,
                                                   {{"TERF920898", "TERF1"}})),
                   kAccepted, "ACPT"},
        StatusCase{"DocumentedShapeOfAnotherTransaction",
                   Answer(200, kDocumentedSuccess), std::nullopt, "ACPT"},
        StatusCase{
            "OtherWrapper",
            Answer(200, R"({"data":{"resourceData":{"status":"RJCT"}}})"),
            kFailed, "RJCT"},
        StatusCase{
            "TopLevelResourceDataTransactionStatus",
            Answer(200, R"({"resourceData":{"transactionStatus":"RETURNED"}})"),
            kReversed, "RETURNED"},
        StatusCase{"AgreeingWordsCount",
                   Answer(200, R"({"resourceData":{"status":"ACSC",)"
                               R"("transactionStatus":"SUCCESS"}})"),
                   kSucceeded, "ACSC"},
        StatusCase{"ContradictoryWordsAreNotUnderstood",
                   Answer(200, R"({"resourceData":{"status":"ACSC",)"
                               R"("transactionStatus":"FAILED"}})"),
                   std::nullopt, "ACSC"},
        StatusCase{"NonStringStatusIsSkipped",
                   Answer(200, R"({"resourceData":{"status":3,)"
                               R"("transactionStatus":"FAILED"}})"),
                   kFailed, "FAILED"},
        StatusCase{"ResourceDataBeatsTopLevel",
                   Answer(200, R"({"status":"SUCCESS","resourceData":)"
                               R"({"status":"PDNG"}})"),
                   kAccepted, "PDNG"},
        // A status is read from a *single* wrapper (docs/aopay.md): several
        // resourceData objects that disagree leave the payout as it is.
        StatusCase{"ResourceDataThatDisagreeAreNotUnderstood",
                   Answer(200, R"({"resourceData":{"status":"SUCCESS"},)"
                               R"("x":{"resourceData":{"status":"FAILED"}}})"),
                   std::nullopt, "FAILED"},
        StatusCase{"WrappersThatDisagreeAreNotUnderstood",
                   Answer(200, R"({"a":{"resourceData":{"status":"FAILED"}},)"
                               R"("b":{"resourceData":{"status":"SUCCESS"}}})"),
                   std::nullopt, "FAILED"},
        StatusCase{"WrappersNamingAnotherTransactionAreNotUnderstood",
                   Answer(200, R"({"a":{"resourceData":{"status":"FAILED"}},)"
                               R"("b":{"resourceData":{"status":"FAILED",)"
                               R"("transactionID":"TERF2"}}})"),
                   std::nullopt, "FAILED"},
        StatusCase{"RepeatedWordIsNotUnderstood",
                   Answer(200, R"({"resourceData":{"status":"SUCCESS",)"
                               R"("status":"FAILED"}})"),
                   std::nullopt, ""},
        StatusCase{"RepeatedResourceDataIsNotUnderstood",
                   Answer(200, R"({"w":{"resourceData":{"status":"SUCCESS"},)"
                               R"("resourceData":{"status":"FAILED"}}})"),
                   std::nullopt, ""},
        StatusCase{"WrappersThatAgreeCount",
                   Answer(200, R"({"a":{"resourceData":{"status":"RJCT"}},)"
                               R"("b":{"resourceData":{"status":"RJCT"}}})"),
                   kFailed, "RJCT"},
        StatusCase{"ResourceDataAboutAnotherTransactionIsNotUnderstood",
                   Answer(200, R"({"resourceData":{"status":"SUCCESS",)"
                               R"("transactionID":"TERF2"}})"),
                   std::nullopt, "SUCCESS"},
        // Rule 2: a top-level word counts only beside the payout's own id.
        StatusCase{"TopLevelWordAloneIsNotUnderstood",
                   Answer(200, R"({"status":"PENDING"})"), std::nullopt,
                   "PENDING"},
        StatusCase{"TopLevelSuccessWithNotFoundMessage",
                   Answer(200, R"({"statuss":"SUCCESS","message":)"
                               R"("Transaction not found"})"),
                   std::nullopt, "SUCCESS"},
        StatusCase{"TopLevelFailedWithInvalidIdMessage",
                   Answer(200, R"({"status":"FAILED","message":"invalid id"})"),
                   std::nullopt, "FAILED"},
        StatusCase{
            "TopLevelStatusWithOwnTransactionId",
            Answer(200, R"({"status":"PENDING","transactionID":"TERF1"})"),
            kAccepted, "PENDING"},
        StatusCase{"TopLevelStatussWithOwnTransactionId",
                   Answer(200, R"({"statuss":"Completed","transactionID":)"
                               R"(" TERF1 "})"),
                   kSucceeded, "Completed"},
        StatusCase{"TopLevelTransactionStatusWithOwnTransactionId",
                   Answer(200, R"({"transactionStatus":"RJCT",)"
                               R"("transactionID":"TERF1"})"),
                   kFailed, "RJCT"},
        StatusCase{"TopLevelWordWithOwnIdInResourceData",
                   Answer(200, R"({"statuss":"SUCCESS","resourceData":)"
                               R"({"transactionID":"TERF1"}})"),
                   kSucceeded, "SUCCESS"},
        StatusCase{
            "TopLevelWordWithAnotherTransactionId",
            Answer(200, R"({"status":"SUCCESS","transactionID":"TERF2"})"),
            std::nullopt, "SUCCESS"},
        StatusCase{"ContradictoryTopLevelWords",
                   Answer(200, R"({"status":"FAILED","statuss":"SUCCESS",)"
                               R"("transactionID":"TERF1"})"),
                   std::nullopt, "FAILED"},
        StatusCase{"UnknownWord",
                   Answer(200, R"({"resourceData":{"status":"ON_HOLD"}})"),
                   std::nullopt, "ON_HOLD"},
        // White space around a word does not count and is not kept; a long
        // word is kept cut to 64 bytes.
        StatusCase{
            "PaddedWord",
            Answer(200,
                   absl::StrCat(R"({"resourceData":{"transactionStatus":")",
                                std::string(57, ' '), R"(REVERSED\n"}})")),
            kReversed, "REVERSED"},
        StatusCase{"LongUnknownWordIsCut",
                   Answer(200, absl::StrCat(R"({"resourceData":{"status":")",
                                            std::string(100, 'X'), R"("}})")),
                   std::nullopt, std::string(64, 'X')},
        // Rule 3: errors, non-2xx and anything else are not understood.
        StatusCase{"ErrorBodyIsNotUnderstood",
                   Answer(200, ErrorBody("\"404\"", "No such transaction")),
                   std::nullopt, "ERROR"},
        StatusCase{"ErrorBodyWithOwnIdAndResourceDataIsNotUnderstood",
                   Answer(200, R"({"status":"ERROR","transactionID":"TERF1",)"
                               R"("resourceData":{"status":"SUCCESS"}})"),
                   std::nullopt, "SUCCESS"},
        StatusCase{"NoWord", Answer(200, R"({"foo":"bar"})"), std::nullopt, ""},
        StatusCase{"Non2xx",
                   Answer(500, R"({"resourceData":{"status":"SUCCESS"}})"),
                   std::nullopt, ""},
        StatusCase{"Http404",
                   Answer(404, R"({"resourceData":{"status":"FAILED"}})"),
                   std::nullopt, ""},
        StatusCase{"Truncated",
                   Answer(200, R"({"resourceData":{"status":"FAILED"}})", true),
                   std::nullopt, ""},
        StatusCase{"InvalidJson", Answer(200, R"({"status":)"), std::nullopt,
                   ""},
        StatusCase{"Empty", Answer(200, ""), std::nullopt, ""},
        StatusCase{"Array", Answer(200, R"(["SUCCESS"])"), std::nullopt, ""},
        StatusCase{"DeeplyNested", Answer(200, std::string(100'000, '[')),
                   std::nullopt, ""}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace aopay
