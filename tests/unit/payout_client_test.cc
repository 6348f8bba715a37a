#include "client/payout_client.h"

#include <unistd.h>

#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/errors.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

using ::testing::IsEmpty;
using ::testing::UnorderedElementsAreArray;

// A google.rpc.Status as the gateway builds it for a validation error.
google::rpc::Status StructuredStatusProto() {
  google::rpc::Status status;
  status.set_code(static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  status.set_message("the request has 3 invalid fields");

  google::rpc::ErrorInfo info;
  info.set_reason("INVALID_REQUEST");
  info.set_domain("payout.aopay.v1");
  (*info.mutable_metadata())["payoutId"] = "po_01J0000000000000000000000";
  (*info.mutable_metadata())["upstreamSubCode"] = "422";
  status.add_details()->PackFrom(info);

  google::rpc::BadRequest bad_request;
  const std::pair<const char*, const char*> violations[] = {
      {"beneficiary.ifsc", "must look like SBIN0000002"},
      {"beneficiary.mobile", "must be 10 digits starting 6 to 9"},
      {"amount_paise", "must be greater than zero"},
  };
  for (const auto& [field, description] : violations) {
    auto* v = bad_request.add_field_violations();
    v->set_field(field);
    v->set_description(description);
  }
  status.add_details()->PackFrom(bad_request);

  google::rpc::RetryInfo retry;
  retry.mutable_retry_delay()->set_seconds(1);
  retry.mutable_retry_delay()->set_nanos(500'000'000);
  status.add_details()->PackFrom(retry);
  return status;
}

ErrorDetails ExpectedDetails() {
  ErrorDetails details;
  details.reason = "INVALID_REQUEST";
  details.metadata = {{"payoutId", "po_01J0000000000000000000000"},
                      {"upstreamSubCode", "422"}};
  details.violations = {
      {"beneficiary.ifsc", "must look like SBIN0000002"},
      {"beneficiary.mobile", "must be 10 digits starting 6 to 9"},
      {"amount_paise", "must be greater than zero"},
  };
  details.retry_delay = absl::Milliseconds(1500);
  return details;
}

grpc::Status StructuredGrpcStatus() {
  const google::rpc::Status proto = StructuredStatusProto();
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, proto.message(),
                      proto.SerializeAsString());
}

TEST(FromGrpcStatusTest, DecodesEveryDetail) {
  const absl::Status status = FromGrpcStatus(StructuredGrpcStatus());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "the request has 3 invalid fields");
  EXPECT_EQ(GetErrorDetails(status), ExpectedDetails());
}

TEST(FromGrpcStatusTest, OnlyDetailsThatArePresentAreSet) {
  google::rpc::Status proto;
  proto.set_code(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  google::rpc::RetryInfo retry;
  retry.mutable_retry_delay()->set_seconds(2);
  proto.add_details()->PackFrom(retry);
  const absl::Status status =
      FromGrpcStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                  "queue full", proto.SerializeAsString()));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  const ErrorDetails details = GetErrorDetails(status);
  EXPECT_EQ(details.reason, "");
  EXPECT_THAT(details.violations, IsEmpty());
  EXPECT_EQ(details.retry_delay, absl::Seconds(2));
}

std::string StatusWithUnreadableErrorInfo() {
  google::rpc::Status proto;
  proto.set_code(3);
  google::protobuf::Any* any = proto.add_details();
  any->set_type_url("type.googleapis.com/google.rpc.ErrorInfo");
  any->set_value("\x0a\xff\xff");  // a length running past the end
  return proto.SerializeAsString();
}

std::string StatusWithOnlyUnknownDetail() {
  google::rpc::Status proto;
  proto.set_code(3);
  google::protobuf::Any* any = proto.add_details();
  any->set_type_url("type.googleapis.com/example.Unheard");
  any->set_value("whatever");
  return proto.SerializeAsString();
}

struct GarbageCase {
  std::string name;
  std::string details;
};

class GarbageDetailsTest : public ::testing::TestWithParam<GarbageCase> {};

TEST_P(GarbageDetailsTest, KeepsCodeAndMessageOnly) {
  const absl::Status status = FromGrpcStatus(grpc::Status(
      grpc::StatusCode::FAILED_PRECONDITION, "no luck", GetParam().details));
  EXPECT_EQ(status, absl::FailedPreconditionError("no luck"));
  EXPECT_EQ(GetErrorDetails(status), ErrorDetails());
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GarbageDetailsTest,
    ::testing::Values(
        GarbageCase{"Empty", ""},
        GarbageCase{"NotAProto", std::string("\x0a\xff\xff\xff\xff", 5)},
        GarbageCase{"UnreadableErrorInfo", StatusWithUnreadableErrorInfo()},
        GarbageCase{"UnknownDetailOnly", StatusWithOnlyUnknownDetail()}),
    [](const auto& info) { return info.param.name; });

TEST(FromGrpcStatusTest, OkIsOk) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  // Details on an OK status mean nothing.
  EXPECT_TRUE(
      FromGrpcStatus(grpc::Status(grpc::StatusCode::OK, "",
                                  StructuredStatusProto().SerializeAsString()))
          .ok());
}

TEST(FromGrpcStatusTest, CodeOutsideTheRangeIsUnknown) {
  // 20 is no gRPC code but still a value grpc::StatusCode can hold (its
  // enumerators span 5 bits); a larger one would be undefined behaviour.
  const absl::Status status =
      FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(20), "odd"));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(status.message(), "odd");
}

TEST(FromRpcStatusProtoTest, DecodesEveryDetail) {
  const absl::Status status = FromRpcStatusProto(StructuredStatusProto());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "the request has 3 invalid fields");
  EXPECT_EQ(GetErrorDetails(status), ExpectedDetails());
}

TEST(FromRpcStatusProtoTest, CodesAndNoDetails) {
  google::rpc::Status proto;
  EXPECT_TRUE(FromRpcStatusProto(proto).ok());
  proto.set_code(static_cast<int>(grpc::StatusCode::ALREADY_EXISTS));
  proto.set_message("beneficiary exists");
  EXPECT_EQ(FromRpcStatusProto(proto),
            absl::AlreadyExistsError("beneficiary exists"));
  proto.set_code(99);
  EXPECT_EQ(FromRpcStatusProto(proto).code(), absl::StatusCode::kUnknown);
}

TEST(MakeChannelTest, RejectsUnreadableOrHalfTlsSettings) {
  ChannelOptions missing_ca;
  missing_ca.tls_ca_file = "/nonexistent/ca.pem";
  EXPECT_EQ(MakeChannel(missing_ca).status().code(),
            absl::StatusCode::kInvalidArgument);

  ChannelOptions cert_without_key;
  cert_without_key.tls_cert_file = "/nonexistent/cert.pem";
  EXPECT_EQ(MakeChannel(cert_without_key).status().code(),
            absl::StatusCode::kInvalidArgument);

  ChannelOptions empty_target;
  empty_target.target = "";
  EXPECT_FALSE(MakeChannel(empty_target).ok());

  EXPECT_TRUE(MakeChannel(ChannelOptions()).ok());
}

// ---------------------------------------------------------------------------
// Against an in-process fake gateway.

v1::Payout PayoutFor(const v1::CreatePayoutRequest& request) {
  v1::Payout payout;
  payout.set_payout_id(absl::StrCat("po_", request.request_id()));
  payout.set_request_id(request.request_id());
  payout.set_state(v1::PAYOUT_STATE_ACCEPTED);
  *payout.mutable_beneficiary() = request.beneficiary();
  payout.set_amount_paise(request.amount_paise());
  payout.set_mode(request.mode());
  payout.set_transaction_id("TERF920898");
  return payout;
}

// Request ids starting "bad" get the structured error; "slow" waits until
// the caller gives up.
class FakePayoutService final : public v1::PayoutService::Service {
 public:
  grpc::Status CreatePayout(grpc::ServerContext* context,
                            const v1::CreatePayoutRequest* request,
                            v1::Payout* response) override {
    RecordAuthorization(*context);
    if (absl::StartsWith(request->request_id(), "bad")) {
      return StructuredGrpcStatus();
    }
    if (request->request_id() == "slow") {
      const auto give_up =
          std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!context->IsCancelled() &&
             std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      return grpc::Status(grpc::StatusCode::INTERNAL, "not cancelled");
    }
    *response = PayoutFor(*request);
    return grpc::Status::OK;
  }

  grpc::Status GetPayout(grpc::ServerContext* context,
                         const v1::GetPayoutRequest* request,
                         v1::Payout* response) override {
    RecordAuthorization(*context);
    if (request->key_case() != v1::GetPayoutRequest::kRequestId) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "by request id only");
    }
    v1::CreatePayoutRequest create;
    create.set_request_id(request->request_id());
    *response = PayoutFor(create);
    return grpc::Status::OK;
  }

  grpc::Status ListPayouts(grpc::ServerContext* context,
                           const v1::ListPayoutsRequest* request,
                           v1::ListPayoutsResponse* response) override {
    RecordAuthorization(*context);
    // One payout per requested state, so the test sees the filter arrive.
    for (int state : request->states()) {
      v1::Payout* payout = response->add_payouts();
      payout->set_state(static_cast<v1::PayoutState>(state));
    }
    response->set_next_page_token(request->page_token() + "x");
    return grpc::Status::OK;
  }

  // Reads the whole stream before answering, in reverse order: the client
  // must write and read at the same time and must not rely on the order.
  grpc::Status BatchCreatePayouts(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::BatchCreatePayoutsResponse,
                               v1::CreatePayoutRequest>* stream) override {
    RecordAuthorization(*context);
    std::vector<v1::CreatePayoutRequest> requests;
    v1::CreatePayoutRequest request;
    while (stream->Read(&request)) requests.push_back(request);
    for (auto it = requests.rbegin(); it != requests.rend(); ++it) {
      v1::BatchCreatePayoutsResponse answer;
      answer.set_request_id(it->request_id());
      if (absl::StartsWith(it->request_id(), "bad")) {
        *answer.mutable_error() = StructuredStatusProto();
      } else {
        *answer.mutable_payout() = PayoutFor(*it);
      }
      if (!stream->Write(answer)) {
        return grpc::Status(grpc::StatusCode::INTERNAL, "write failed");
      }
    }
    return grpc::Status::OK;
  }

  std::string last_authorization() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_authorization_;
  }

 private:
  void RecordAuthorization(const grpc::ServerContext& context) {
    const auto& metadata = context.client_metadata();
    const auto it = metadata.find("authorization");
    std::lock_guard<std::mutex> lock(mu_);
    last_authorization_ = it == metadata.end() ? "<none>"
                                               : std::string(it->second.data(),
                                                             it->second.size());
  }

  std::mutex mu_;
  std::string last_authorization_;
};

class FakeAdminService final : public v1::PayoutAdminService::Service {
 public:
  grpc::Status ResolvePayout(grpc::ServerContext* /*context*/,
                             const v1::ResolvePayoutRequest* request,
                             v1::Payout* response) override {
    response->set_payout_id(request->payout_id());
    response->set_state(request->state());
    response->set_transaction_id(request->transaction_id());
    return grpc::Status::OK;
  }
};

class PayoutClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    builder.RegisterService(&admin_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    ChannelOptions options;
    options.target = absl::StrCat("127.0.0.1:", port);
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        MakeChannel(options);
    ASSERT_TRUE(channel.ok()) << channel.status();
    channel_ = *channel;
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  static v1::CreatePayoutRequest Request(const std::string& request_id) {
    v1::CreatePayoutRequest request;
    request.set_request_id(request_id);
    request.mutable_beneficiary()->set_account_number("100000011836");
    request.set_amount_paise(1234);
    request.set_mode(v1::TRANSFER_MODE_IMPS);
    return request;
  }

  const absl::Duration kTimeout = absl::Seconds(10);
  FakePayoutService service_;
  FakeAdminService admin_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(PayoutClientTest, CreatePayoutSendsTokenAndReturnsPayout) {
  PayoutClient client(channel_, "s3cret-token");
  absl::StatusOr<v1::Payout> payout =
      client.CreatePayout(Request("req-1"), kTimeout);
  ASSERT_TRUE(payout.ok()) << payout.status();
  EXPECT_EQ(payout->payout_id(), "po_req-1");
  EXPECT_EQ(payout->state(), v1::PAYOUT_STATE_ACCEPTED);
  EXPECT_EQ(payout->amount_paise(), 1234);
  EXPECT_EQ(payout->beneficiary().account_number(), "100000011836");
  EXPECT_EQ(service_.last_authorization(), "Bearer s3cret-token");
}

TEST_F(PayoutClientTest, NoTokenSendsNoAuthorization) {
  PayoutClient client(channel_);
  ASSERT_TRUE(client.CreatePayout(Request("req-2"), kTimeout).ok());
  EXPECT_EQ(service_.last_authorization(), "<none>");
}

TEST_F(PayoutClientTest, StructuredErrorIsDecoded) {
  PayoutClient client(channel_, "t");
  absl::StatusOr<v1::Payout> payout =
      client.CreatePayout(Request("bad-1"), kTimeout);
  ASSERT_FALSE(payout.ok());
  EXPECT_EQ(payout.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(payout.status().message(), "the request has 3 invalid fields");
  EXPECT_EQ(GetErrorDetails(payout.status()), ExpectedDetails());
}

TEST_F(PayoutClientTest, TimeoutIsDeadlineExceeded) {
  PayoutClient client(channel_);
  absl::StatusOr<v1::Payout> payout =
      client.CreatePayout(Request("slow"), absl::Milliseconds(100));
  EXPECT_EQ(payout.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(PayoutClientTest, OtherCallsCarryTheirRequests) {
  PayoutClient client(channel_, "tok");
  v1::GetPayoutRequest get;
  get.set_request_id("req-9");
  absl::StatusOr<v1::Payout> got = client.GetPayout(get, kTimeout);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->payout_id(), "po_req-9");

  get.set_payout_id("po_x");
  EXPECT_EQ(client.GetPayout(get, kTimeout).status().code(),
            absl::StatusCode::kNotFound);

  v1::ListPayoutsRequest list;
  list.add_states(v1::PAYOUT_STATE_UNKNOWN);
  list.add_states(v1::PAYOUT_STATE_FAILED);
  list.set_page_token("p");
  absl::StatusOr<v1::ListPayoutsResponse> page =
      client.ListPayouts(list, kTimeout);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->payouts_size(), 2);
  EXPECT_EQ(page->payouts(1).state(), v1::PAYOUT_STATE_FAILED);
  EXPECT_EQ(page->next_page_token(), "px");

  v1::ResolvePayoutRequest resolve;
  resolve.set_payout_id("po_y");
  resolve.set_state(v1::PAYOUT_STATE_SUCCEEDED);
  resolve.set_transaction_id("TERF1");
  resolve.set_note("bank statement");
  absl::StatusOr<v1::Payout> resolved = client.ResolvePayout(resolve, kTimeout);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->state(), v1::PAYOUT_STATE_SUCCEEDED);
  EXPECT_EQ(resolved->transaction_id(), "TERF1");

  // RefreshPayout is not implemented by the fake: the default service
  // answers UNIMPLEMENTED, which must come back as such.
  v1::RefreshPayoutRequest refresh;
  refresh.set_payout_id("po_y");
  EXPECT_EQ(client.RefreshPayout(refresh, kTimeout).status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST_F(PayoutClientTest, BatchCollectsEveryAnswer) {
  PayoutClient client(channel_, "batch-token");
  std::vector<v1::CreatePayoutRequest> requests;
  std::vector<std::string> ids;
  // Enough requests that the fake, which reads everything before it
  // answers, would stall a client that wrote and read in turn.
  for (int i = 0; i < 500; ++i) {
    const std::string id = absl::StrCat(i % 7 == 0 ? "bad-" : "ok-", i);
    requests.push_back(Request(id));
    ids.push_back(id);
  }
  absl::StatusOr<std::vector<v1::BatchCreatePayoutsResponse>> answers =
      client.BatchCreatePayouts(requests, kTimeout);
  ASSERT_TRUE(answers.ok()) << answers.status();
  ASSERT_EQ(answers->size(), requests.size());

  std::vector<std::string> answered;
  for (const v1::BatchCreatePayoutsResponse& answer : *answers) {
    answered.push_back(answer.request_id());
    if (absl::StartsWith(answer.request_id(), "bad")) {
      ASSERT_TRUE(answer.has_error()) << answer.request_id();
      const absl::Status error = FromRpcStatusProto(answer.error());
      EXPECT_EQ(error.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(GetErrorDetails(error).violations.size(), 3u);
    } else {
      ASSERT_TRUE(answer.has_payout()) << answer.request_id();
      EXPECT_EQ(answer.payout().payout_id(), "po_" + answer.request_id());
    }
  }
  EXPECT_THAT(answered, UnorderedElementsAreArray(ids));
  EXPECT_EQ(service_.last_authorization(), "Bearer batch-token");
}

TEST_F(PayoutClientTest, EmptyBatchIsEmpty) {
  PayoutClient client(channel_);
  absl::StatusOr<std::vector<v1::BatchCreatePayoutsResponse>> answers =
      client.BatchCreatePayouts({}, kTimeout);
  ASSERT_TRUE(answers.ok()) << answers.status();
  EXPECT_THAT(*answers, IsEmpty());
}

TEST_F(PayoutClientTest, AsyncCreateCallsBackOnceWithResult) {
  PayoutClient client(channel_, "async-token");
  std::promise<absl::StatusOr<v1::Payout>> ok_promise;
  std::promise<absl::StatusOr<v1::Payout>> bad_promise;
  client.CreatePayoutAsync(Request("req-a"), kTimeout,
                           [&ok_promise](absl::StatusOr<v1::Payout> result) {
                             ok_promise.set_value(std::move(result));
                           });
  client.CreatePayoutAsync(Request("bad-a"), kTimeout,
                           [&bad_promise](absl::StatusOr<v1::Payout> result) {
                             bad_promise.set_value(std::move(result));
                           });
  const absl::StatusOr<v1::Payout> ok = ok_promise.get_future().get();
  const absl::StatusOr<v1::Payout> bad = bad_promise.get_future().get();
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->payout_id(), "po_req-a");
  EXPECT_EQ(GetErrorDetails(bad.status()).reason, "INVALID_REQUEST");
}

TEST_F(PayoutClientTest, UnreachableGatewayIsUnavailable) {
  // Shut the fake down; its port then refuses connections.
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  server_.reset();
  PayoutClient client(channel_);
  absl::StatusOr<v1::Payout> payout =
      client.CreatePayout(Request("req-u"), absl::Seconds(5));
  EXPECT_EQ(payout.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace aopay

namespace aopay {
namespace {

std::string WriteTempFile(const std::string& contents) {
  std::string path = ::testing::TempDir() + "token-XXXXXX";
  const int fd = mkstemp(path.data());
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, contents.data(), contents.size()),
            static_cast<ssize_t>(contents.size()));
  close(fd);
  return path;
}

TEST(ResolveBearerTokenTest, FlagFileAndEnvironment) {
  unsetenv("PAYOUT_TOKEN");
  EXPECT_EQ(ResolveBearerToken("", "").value(), "");
  EXPECT_EQ(ResolveBearerToken("abc", "").value(), "abc");
  EXPECT_EQ(ResolveBearerToken("", WriteTempFile("  s3cret\n")).value(),
            "s3cret");
  setenv("PAYOUT_TOKEN", " from-env ", 1);
  EXPECT_EQ(ResolveBearerToken("", "").value(), "from-env");
  EXPECT_EQ(ResolveBearerToken("flag", "").value(), "flag");
  unsetenv("PAYOUT_TOKEN");
}

TEST(ResolveBearerTokenTest, RefusesWhatCannotBeSent) {
  const std::string file = WriteTempFile("x");
  EXPECT_EQ(ResolveBearerToken("a", file).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveBearerToken("", WriteTempFile(" \n")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveBearerToken("", "/no/such/token").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveBearerToken("two words", "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace aopay
