// One case per row of the outcome table (docs/errors.md): the
// domain error as the gateway really builds it, through ToGrpcStatus(), read
// back from the wire form a client sees.

#include "server/transport/grpc_status.h"

#include <functional>
#include <optional>

#include "common/aopay_codec.h"
#include "common/errors.h"
#include "common/validation.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

using ::testing::HasSubstr;

HttpAnswer Http(int status, std::string body) {
  HttpAnswer answer;
  answer.http_status = status;
  answer.body = std::move(body);
  return answer;
}

std::string ErrorBody(const std::string& sub_code, const std::string& message) {
  return R"({"status":"ERROR","subCode":")" + sub_code + R"(","message":")" +
         message + R"("})";
}

absl::Status Upstream(const HttpAnswer& answer) {
  return InterpretPayoutAnswer(answer).error;
}

struct Row {
  std::string name;
  std::function<absl::Status()> make;
  grpc::StatusCode code;
  std::string reason;
  std::string fragment;
  std::optional<std::string> bad_field;  // a BadRequest naming this field
  bool retry_info;
};

// What a client decodes from the wire.
struct Wire {
  google::rpc::Status status;
  std::optional<google::rpc::ErrorInfo> info;
  std::optional<google::rpc::BadRequest> bad_request;
  std::optional<google::rpc::RetryInfo> retry;
};

Wire Decode(const grpc::Status& status) {
  Wire wire;
  EXPECT_TRUE(wire.status.ParseFromString(status.error_details()));
  for (const auto& any : wire.status.details()) {
    google::rpc::ErrorInfo info;
    google::rpc::BadRequest bad_request;
    google::rpc::RetryInfo retry;
    if (any.UnpackTo(&info)) wire.info = info;
    if (any.UnpackTo(&bad_request)) wire.bad_request = bad_request;
    if (any.UnpackTo(&retry)) wire.retry = retry;
  }
  return wire;
}

class OutcomeTableTest : public ::testing::TestWithParam<Row> {};

TEST_P(OutcomeTableTest, MapsToCodeReasonAndDetails) {
  const Row& row = GetParam();
  const grpc::Status status = ToGrpcStatus(row.make());

  EXPECT_EQ(status.error_code(), row.code);
  EXPECT_THAT(status.error_message(), HasSubstr(row.fragment));
  EXPECT_LE(status.error_message().size(), 1024u);
  const Wire wire = Decode(status);
  EXPECT_EQ(wire.status.code(), static_cast<int>(row.code));
  EXPECT_EQ(wire.status.message(), status.error_message());
  ASSERT_TRUE(wire.info.has_value());
  EXPECT_EQ(wire.info->reason(), row.reason);
  EXPECT_EQ(wire.info->domain(), "payout.aopay.v1");
  if (row.bad_field.has_value()) {
    ASSERT_TRUE(wire.bad_request.has_value());
    std::vector<std::string> fields;
    for (const auto& v : wire.bad_request->field_violations()) {
      fields.push_back(v.field());
      EXPECT_FALSE(v.description().empty());
    }
    EXPECT_THAT(fields, ::testing::Contains(*row.bad_field));
  } else {
    EXPECT_FALSE(wire.bad_request.has_value());
  }
  EXPECT_EQ(wire.retry.has_value(), row.retry_info);
  if (wire.retry.has_value()) {
    EXPECT_GT(wire.retry->retry_delay().seconds() * 1'000'000'000LL +
                  wire.retry->retry_delay().nanos(),
              0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Contract, OutcomeTableTest,
    ::testing::Values(
        Row{"ValidationFailed",
            [] {
              PayoutRequest request;
              request.request_id = "r1";
              request.beneficiary = {"100000011836", "SBIN1000002", "Dean Jon",
                                     "abc@gmail.com", "9959640000"};
              request.amount_paise = 100;
              request.mode = TransferMode::kNeft;
              return NormalizeAndValidate(request, ValidationLimits{}).status();
            },
            grpc::StatusCode::INVALID_ARGUMENT, "INVALID_REQUEST", "invalid",
            "beneficiary.ifsc", false},
        Row{"Aopay422",
            [] {
              return Upstream(Http(
                  422,
                  ErrorBody("422", "Please provide a valid Bank IFSC code.")));
            },
            grpc::StatusCode::INVALID_ARGUMENT, "UPSTREAM_INVALID_IFSC", "IFSC",
            "beneficiary.ifsc", false},
        Row{"Aopay409",
            [] {
              return Upstream(
                  Http(200, ErrorBody("409", "Beneficiary Id already exists")));
            },
            grpc::StatusCode::ALREADY_EXISTS, "UPSTREAM_BENEFICIARY_EXISTS",
            "AOPay", std::nullopt, false},
        Row{"Aopay403",
            [] {
              return Upstream(Http(
                  403, ErrorBody("403", "APIs not enabled. Please reach out")));
            },
            grpc::StatusCode::FAILED_PRECONDITION, "UPSTREAM_API_NOT_ENABLED",
            "AOPay", std::nullopt, false},
        Row{"Aopay412",
            [] {
              return Upstream(Http(
                  412,
                  ErrorBody("412", "Post data is empty or not a valid JSON")));
            },
            grpc::StatusCode::INTERNAL, "UPSTREAM_REJECTED_BODY", "AOPay",
            std::nullopt, false},
        Row{"AopayOtherError",
            [] {
              return Upstream(Http(200, ErrorBody("777", "Something else")));
            },
            grpc::StatusCode::FAILED_PRECONDITION, "UPSTREAM_ERROR", "AOPay",
            std::nullopt, false},
        Row{"NotSentConnectFailure",
            [] {
              return InterpretTransportFailure(
                         absl::UnavailableError("could not connect"))
                  .error;
            },
            grpc::StatusCode::UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "AOPay",
            std::nullopt, true},
        Row{"NotSentHttp429", [] { return Upstream(Http(429, "")); },
            grpc::StatusCode::UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "AOPay",
            std::nullopt, true},
        Row{"OutcomeUnknownTimeout",
            [] {
              return InterpretTransportFailure(
                         absl::DeadlineExceededError("timed out"))
                  .error;
            },
            grpc::StatusCode::DEADLINE_EXCEEDED, "OUTCOME_UNKNOWN", "unknown",
            std::nullopt, false},
        Row{"OutcomeUnknownHttp500",
            [] { return Upstream(Http(500, "<html>500</html>")); },
            grpc::StatusCode::DEADLINE_EXCEEDED, "OUTCOME_UNKNOWN", "unknown",
            std::nullopt, false},
        Row{"QueueFull", [] { return OverloadedError(absl::Seconds(1)); },
            grpc::StatusCode::RESOURCE_EXHAUSTED, "OVERLOADED", "",
            std::nullopt, true},
        Row{"RequestIdReused", [] { return RequestIdReusedError("po_x"); },
            grpc::StatusCode::INVALID_ARGUMENT, "REQUEST_ID_REUSED", "",
            std::nullopt, false},
        Row{"RequestInProgress",
            [] { return RequestInProgressError("po_x", absl::Seconds(1)); },
            grpc::StatusCode::ABORTED, "REQUEST_IN_PROGRESS", "", std::nullopt,
            true},
        Row{"LedgerUnavailable",
            [] { return LedgerUnavailableError("disk full"); },
            grpc::StatusCode::UNAVAILABLE, "LEDGER_UNAVAILABLE", "",
            std::nullopt, true}),
    [](const ::testing::TestParamInfo<Row>& info) { return info.param.name; });

TEST(GrpcStatusTest, OkHasNoDetails) {
  const grpc::Status status = ToGrpcStatus(absl::OkStatus());
  EXPECT_TRUE(status.ok());
  EXPECT_TRUE(status.error_details().empty());
}

TEST(GrpcStatusTest, ErrorWithoutDetailsStillCarriesAReason) {
  const Wire wire = Decode(ToGrpcStatus(absl::InternalError("boom")));
  ASSERT_TRUE(wire.info.has_value());
  EXPECT_EQ(wire.info->reason(), "INTERNAL");
  EXPECT_EQ(wire.info->domain(), "payout.aopay.v1");
}

TEST(GrpcStatusTest, MetadataTravels) {
  absl::Status status = WithErrorMetadata(
      Upstream(Http(409, ErrorBody("409", "Beneficiary Id already exists"))),
      "payoutId", "po_01ABC");
  const Wire wire = Decode(ToGrpcStatus(status));
  ASSERT_TRUE(wire.info.has_value());
  EXPECT_EQ(wire.info->metadata().at("payoutId"), "po_01ABC");
  EXPECT_EQ(wire.info->metadata().at("upstreamSubCode"), "409");
  EXPECT_EQ(wire.info->metadata().at("upstreamHttpStatus"), "409");
  EXPECT_EQ(wire.info->metadata().at("upstreamMessage"),
            "Beneficiary Id already exists");
}

}  // namespace
}  // namespace aopay
