#include "common/errors.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

using testing::ElementsAre;
using testing::HasSubstr;

ErrorDetails FullDetails() {
  ErrorDetails details;
  details.reason = "UPSTREAM_INVALID_IFSC";
  details.metadata["payoutId"] = "po_01JN2W3X4Y5Z6A7B8C9D0EFGHJ";
  details.metadata["upstreamMessage"] = "quote \" backslash \\ nl \n é";
  details.violations.push_back({"beneficiary.ifsc", "is not accepted"});
  details.violations.push_back({"beneficiary.name", "must be \"ASCII\""});
  details.retry_delay = absl::Milliseconds(1500);
  return details;
}

TEST(MakeErrorTest, AttachesDetails) {
  const absl::Status status =
      MakeError(absl::StatusCode::kInvalidArgument, "bad", FullDetails());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "bad");
  EXPECT_EQ(GetErrorDetails(status), FullDetails());
}

TEST(MakeErrorTest, RefusesOk) {
  const absl::Status status =
      MakeError(absl::StatusCode::kOk, "fine", FullDetails());
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
}

TEST(MakeErrorTest, EmptyDetailsAddNoPayload) {
  const absl::Status status =
      MakeError(absl::StatusCode::kInternal, "x", ErrorDetails());
  EXPECT_EQ(status, absl::InternalError("x"));
}

struct TruncationCase {
  std::string name;
  std::string message;
  size_t expected_bytes;
};

class MakeErrorTruncationTest : public testing::TestWithParam<TruncationCase> {
};

TEST_P(MakeErrorTruncationTest, CutsOnACharacterBoundary) {
  const absl::Status status =
      MakeError(absl::StatusCode::kInternal, GetParam().message, {});
  EXPECT_EQ(status.message().size(), GetParam().expected_bytes);
  EXPECT_TRUE(absl::StartsWith(GetParam().message, status.message()));
}

const std::string kTwoByte = "\xC3\xA9";           // é
const std::string kThreeByte = "\xE2\x82\xB9";     // ₹
const std::string kFourByte = "\xF0\x9F\x92\xB8";  // 💸

INSTANTIATE_TEST_SUITE_P(
    Table, MakeErrorTruncationTest,
    testing::Values(
        TruncationCase{"Short", "short", 5},
        TruncationCase{"ExactlyMax", std::string(1024, 'a'), 1024},
        TruncationCase{"OneOver", std::string(1025, 'a'), 1024},
        // 1023 ASCII bytes, then a 2-byte character straddling the limit.
        TruncationCase{"TwoByteStraddles", std::string(1023, 'a') + kTwoByte,
                       1023},
        TruncationCase{"TwoByteFits", std::string(1022, 'a') + kTwoByte + "b",
                       1024},
        TruncationCase{"ThreeByteStraddles",
                       std::string(1022, 'a') + kThreeByte, 1022},
        TruncationCase{"FourByteStraddles",
                       std::string(1021, 'a') + kFourByte + "zz", 1021},
        TruncationCase{"AllFourByte",
                       [] {
                         std::string text;
                         for (int i = 0; i < 300; ++i) text += kFourByte;
                         return text;
                       }(),
                       1024}),
    [](const auto& info) { return info.param.name; });

TEST(GetErrorDetailsTest, EmptyForPlainAndOkStatuses) {
  EXPECT_EQ(GetErrorDetails(absl::OkStatus()), ErrorDetails());
  EXPECT_EQ(GetErrorDetails(absl::InternalError("x")), ErrorDetails());
}

TEST(GetErrorDetailsTest, EmptyForAForeignPayloadUnderOurTypeUrl) {
  absl::Status status = absl::InternalError("x");
  status.SetPayload("type.aopay.co.in/aopay.ErrorDetails",
                    absl::Cord("not json"));
  EXPECT_EQ(GetErrorDetails(status), ErrorDetails());
}

TEST(WithErrorMetadataTest, AddsAndReplaces) {
  absl::Status status = RequestIdReusedError("po_first");
  status = WithErrorMetadata(status, meta::kUpstreamSubCode, "422");
  status = WithErrorMetadata(status, meta::kPayoutId, "po_second");
  const ErrorDetails details = GetErrorDetails(status);
  EXPECT_EQ(details.reason, reason::kRequestIdReused);
  EXPECT_EQ(details.metadata.at("upstreamSubCode"), "422");
  EXPECT_EQ(details.metadata.at("payoutId"), "po_second");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

TEST(WithErrorMetadataTest, WorksOnAPlainStatusAndLeavesOkAlone) {
  const absl::Status plain =
      WithErrorMetadata(absl::UnavailableError("down"), "payoutId", "po_x");
  EXPECT_EQ(plain.message(), "down");
  EXPECT_EQ(GetErrorDetails(plain).metadata.at("payoutId"), "po_x");
  EXPECT_TRUE(WithErrorMetadata(absl::OkStatus(), "payoutId", "po_x").ok());
  EXPECT_EQ(GetErrorDetails(WithErrorMetadata(absl::OkStatus(), "k", "v")),
            ErrorDetails());
}

class SerializeRoundTripTest : public testing::TestWithParam<absl::Status> {};

TEST_P(SerializeRoundTripTest, IsExact) {
  const absl::Status original = GetParam();
  const std::string text = SerializeError(original);
  const absl::StatusOr<absl::Status> parsed = ParseSerializedError(text);
  ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status();
  EXPECT_EQ(parsed->code(), original.code());
  EXPECT_EQ(parsed->message(), original.message());
  EXPECT_EQ(GetErrorDetails(*parsed), GetErrorDetails(original));
  EXPECT_EQ(*parsed, original) << text;
  // The text form is stable: serialising again gives the same bytes.
  EXPECT_EQ(SerializeError(*parsed), text);
}

INSTANTIATE_TEST_SUITE_P(
    Table, SerializeRoundTripTest,
    testing::Values(
        absl::OkStatus(), absl::InternalError(""),
        absl::UnavailableError("plain, no details"),
        MakeError(absl::StatusCode::kInvalidArgument,
                  "msg with \"quotes\", \\ and \x01 control", FullDetails()),
        MakeError(absl::StatusCode::kUnauthenticated, "last code",
                  [] {
                    ErrorDetails d;
                    d.reason = "UNAUTHENTICATED";
                    return d;
                  }()),
        MakeError(absl::StatusCode::kAborted, "nanosecond delay",
                  [] {
                    ErrorDetails d;
                    d.retry_delay = absl::Nanoseconds(1'500'001);
                    return d;
                  }()),
        MakeError(absl::StatusCode::kAborted, "zero delay",
                  [] {
                    ErrorDetails d;
                    d.retry_delay = absl::ZeroDuration();
                    return d;
                  }()),
        MakeError(absl::StatusCode::kInternal, "metadata only",
                  [] {
                    ErrorDetails d;
                    d.metadata["k"] = std::string("nul\0inside", 10);
                    return d;
                  }()),
        // Built without MakeError: longer than the cut, kept as it was.
        absl::Status(absl::StatusCode::kInternal, std::string(5000, 'm')),
        InvalidRequestError({{"request_id", "is required"}}),
        OverloadedError(absl::Seconds(2)),
        RequestInProgressError("po_x", absl::Milliseconds(250)),
        LedgerUnavailableError("the database is locked"),
        NotFoundError("Payout po_x")));

TEST(SerializeErrorTest, WritesTheDocumentedShape) {
  const absl::Status status = RequestInProgressError("po_1", absl::Seconds(1));
  EXPECT_EQ(SerializeError(status),
            "{\"code\":10,\"message\":\"A payout with this request id is "
            "still in progress; ask again after the retry delay to get its "
            "outcome.\",\"reason\":\"REQUEST_IN_PROGRESS\",\"metadata\":{"
            "\"payoutId\":\"po_1\"},\"retryDelayMs\":1000}");
  EXPECT_EQ(SerializeError(absl::OkStatus()), "{\"code\":0}");
  EXPECT_EQ(SerializeError(InvalidRequestError({{"mode", "must be X"}})),
            "{\"code\":3,\"message\":\"The payout request is invalid: 1 field "
            "breaks the rules.\",\"reason\":\"INVALID_REQUEST\","
            "\"violations\":[{\"field\":\"mode\",\"description\":\"must be "
            "X\"}]}");
}

TEST(ParseSerializedErrorTest, IgnoresUnknownMembers) {
  const absl::StatusOr<absl::Status> parsed =
      ParseSerializedError("{\"code\":5,\"message\":\"m\",\"future\":[1,2]}");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, absl::NotFoundError("m"));
}

class ParseSerializedErrorRejectsTest
    : public testing::TestWithParam<std::string> {};

TEST_P(ParseSerializedErrorRejectsTest, RejectsWithAnError) {
  const absl::StatusOr<absl::Status> parsed = ParseSerializedError(GetParam());
  ASSERT_FALSE(parsed.ok()) << GetParam();
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseSerializedErrorRejectsTest,
    testing::Values(
        "", "null", "[]", "\"x\"", "{", "{\"code\":3", "{}", "{\"code\":\"3\"}",
        "{\"code\":17}", "{\"code\":-1}", "{\"code\":3.5}",
        "{\"code\":3,\"message\":7}", "{\"code\":3,\"reason\":[]}",
        "{\"code\":3,\"metadata\":[]}", "{\"code\":3,\"metadata\":{\"k\":1}}",
        "{\"code\":3,\"violations\":{}}", "{\"code\":3,\"violations\":[1]}",
        "{\"code\":3,\"violations\":[{\"field\":\"f\"}]}",
        "{\"code\":3,\"retryDelayMs\":\"1\"}",
        "{\"code\":3,\"retryDelayMs\":1.5}", "{\"code\":3} trailing",
        std::string(100'000, '['), std::string(100'000, '{')));

TEST(ConstructorsTest, InvalidRequestCountsFieldsWithoutPersonalData) {
  const absl::Status status =
      InvalidRequestError({{"beneficiary.ifsc", "must be 11 characters"},
                           {"beneficiary.mobile", "must be 10 digits"}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "The payout request is invalid: 2 fields break the rules.");
  const ErrorDetails details = GetErrorDetails(status);
  EXPECT_EQ(details.reason, "INVALID_REQUEST");
  EXPECT_THAT(
      details.violations,
      ElementsAre(FieldViolation{"beneficiary.ifsc", "must be 11 characters"},
                  FieldViolation{"beneficiary.mobile", "must be 10 digits"}));
}

struct ConstructorCase {
  std::string name;
  absl::Status status;
  absl::StatusCode code;
  std::string reason;
  std::map<std::string, std::string> metadata;
  std::optional<absl::Duration> retry_delay;
};

class ConstructorTableTest : public testing::TestWithParam<ConstructorCase> {};

TEST_P(ConstructorTableTest, MatchesTheContract) {
  const ConstructorCase& c = GetParam();
  EXPECT_EQ(c.status.code(), c.code);
  EXPECT_FALSE(c.status.message().empty());
  const ErrorDetails details = GetErrorDetails(c.status);
  EXPECT_EQ(details.reason, c.reason);
  EXPECT_EQ(details.metadata, c.metadata);
  EXPECT_EQ(details.retry_delay, c.retry_delay);
  EXPECT_TRUE(details.violations.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Table, ConstructorTableTest,
    testing::Values(
        ConstructorCase{"Overloaded",
                        OverloadedError(absl::Milliseconds(1500)),
                        absl::StatusCode::kResourceExhausted,
                        "OVERLOADED",
                        {},
                        absl::Milliseconds(1500)},
        ConstructorCase{"RequestIdReused",
                        RequestIdReusedError("po_a"),
                        absl::StatusCode::kInvalidArgument,
                        "REQUEST_ID_REUSED",
                        {{"payoutId", "po_a"}},
                        std::nullopt},
        ConstructorCase{"RequestInProgress",
                        RequestInProgressError("po_b", absl::Seconds(3)),
                        absl::StatusCode::kAborted,
                        "REQUEST_IN_PROGRESS",
                        {{"payoutId", "po_b"}},
                        absl::Seconds(3)},
        ConstructorCase{"LedgerUnavailable",
                        LedgerUnavailableError("disk full"),
                        absl::StatusCode::kUnavailable,
                        "LEDGER_UNAVAILABLE",
                        {},
                        absl::Seconds(1)},
        ConstructorCase{"NotFound",
                        NotFoundError("Payout po_c"),
                        absl::StatusCode::kNotFound,
                        "NOT_FOUND",
                        {},
                        std::nullopt},
        ConstructorCase{"RecoveredAsUnknown",
                        RecoveredAsUnknownError("po_d"),
                        absl::StatusCode::kDeadlineExceeded,
                        "OUTCOME_UNKNOWN",
                        {{"payoutId", "po_d"}},
                        std::nullopt},
        ConstructorCase{"ShuttingDown",
                        ShuttingDownError(),
                        absl::StatusCode::kUnavailable,
                        "SHUTTING_DOWN",
                        {},
                        kDefaultRetryDelay},
        ConstructorCase{"Unauthenticated",
                        UnauthenticatedError(),
                        absl::StatusCode::kUnauthenticated,
                        "UNAUTHENTICATED",
                        {},
                        std::nullopt},
        ConstructorCase{"PermissionDenied",
                        PermissionDeniedError("ResolvePayout", "admin"),
                        absl::StatusCode::kPermissionDenied,
                        "PERMISSION_DENIED",
                        {},
                        std::nullopt},
        ConstructorCase{"ClientLimitExceeded",
                        ClientLimitExceededError("daily_paise", 2500),
                        absl::StatusCode::kResourceExhausted,
                        "CLIENT_LIMIT_EXCEEDED",
                        {{"limit", "daily_paise"}, {"remainingPaise", "2500"}},
                        std::nullopt},
        ConstructorCase{"StatusEndpointUnavailable",
                        StatusEndpointUnavailableError(),
                        absl::StatusCode::kUnavailable,
                        "UPSTREAM_UNAVAILABLE",
                        {},
                        kDefaultRetryDelay},
        ConstructorCase{"NoTransactionId",
                        NoTransactionIdError("po_e"),
                        absl::StatusCode::kFailedPrecondition,
                        "NO_TRANSACTION_ID",
                        {{"payoutId", "po_e"}},
                        std::nullopt},
        ConstructorCase{"InvalidTransition",
                        InvalidTransitionError("po_f", "SUCCEEDED", "FAILED"),
                        absl::StatusCode::kFailedPrecondition,
                        "INVALID_TRANSITION",
                        {{"payoutId", "po_f"}},
                        std::nullopt},
        ConstructorCase{"ReportedFailure",
                        ReportedFailureError("po_g"),
                        absl::StatusCode::kFailedPrecondition,
                        "UPSTREAM_REPORTED_FAILURE",
                        {{"payoutId", "po_g"}},
                        std::nullopt},
        ConstructorCase{"ResolvedAsFailed",
                        ResolvedAsFailedError("po_h"),
                        absl::StatusCode::kFailedPrecondition,
                        "RESOLVED_BY_OPERATOR",
                        {{"payoutId", "po_h"}},
                        std::nullopt}),
    [](const auto& info) { return info.param.name; });

TEST(ConstructorsTest, RemainingPaiseIsNeverNegative) {
  EXPECT_EQ(GetErrorDetails(ClientLimitExceededError("daily_paise", -5))
                .metadata.at("remainingPaise"),
            "0");
}

TEST(ConstructorsTest, InvalidTransitionNamesBothStates) {
  EXPECT_EQ(InvalidTransitionError("po_f", "SUCCEEDED", "FAILED").message(),
            "A payout in state SUCCEEDED cannot be resolved to FAILED.");
}

TEST(ConstructorsTest, MessagesNameWhatFailed) {
  EXPECT_THAT(std::string(LedgerUnavailableError("disk full").message()),
              HasSubstr("disk full"));
  EXPECT_EQ(NotFoundError("Payout po_c").message(),
            "Payout po_c was not found.");
  EXPECT_EQ(NotFoundError("Payout po_c.").message(),
            "Payout po_c was not found.");
}

}  // namespace
}  // namespace aopay
