// The C++ client's opt-in retry policy (client/retry_policy.h,
// docs/client-retries.md): which errors are retried, the backoff, the loop's
// limits with time passed in, and PayoutClient's calls and batches against an
// in-process gateway that fails as scripted.

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/payout_client.h"
#include "client/retry_policy.h"
#include "common/errors.h"
#include "common/ids.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

absl::Status Error(absl::StatusCode code, absl::string_view reason,
                   std::optional<absl::Duration> retry_delay = std::nullopt) {
  ErrorDetails details;
  details.reason = std::string(reason);
  details.retry_delay = retry_delay;
  return MakeError(code, "scripted", std::move(details));
}

TEST(IsRetryableTest, TheTableOfTheRetryPage) {
  using C = absl::StatusCode;
  EXPECT_TRUE(IsRetryable(Error(C::kUnavailable, "UPSTREAM_UNAVAILABLE")));
  EXPECT_TRUE(IsRetryable(Error(C::kUnavailable, "SHUTTING_DOWN")));
  EXPECT_TRUE(IsRetryable(Error(C::kUnavailable, "LEDGER_UNAVAILABLE")));
  EXPECT_TRUE(IsRetryable(absl::UnavailableError("connection refused")));
  EXPECT_TRUE(IsRetryable(Error(C::kAborted, "REQUEST_IN_PROGRESS")));
  EXPECT_TRUE(IsRetryable(Error(C::kResourceExhausted, "OVERLOADED")));

  EXPECT_FALSE(IsRetryable(Error(C::kDeadlineExceeded, "OUTCOME_UNKNOWN")));
  EXPECT_FALSE(IsRetryable(Error(C::kUnavailable, "OUTCOME_UNKNOWN")));
  EXPECT_FALSE(IsRetryable(absl::DeadlineExceededError("deadline")));
  EXPECT_FALSE(
      IsRetryable(Error(C::kResourceExhausted, "CLIENT_LIMIT_EXCEEDED")));
  EXPECT_FALSE(IsRetryable(Error(C::kAborted, "ABORTED")));
  EXPECT_FALSE(IsRetryable(Error(C::kInvalidArgument, "INVALID_REQUEST")));
  EXPECT_FALSE(IsRetryable(Error(C::kFailedPrecondition, "NOT_CANCELLABLE")));
  EXPECT_FALSE(IsRetryable(absl::InternalError("internal")));
  EXPECT_FALSE(IsRetryable(absl::CancelledError("cancelled")));
  EXPECT_FALSE(IsRetryable(absl::OkStatus()));
}

TEST(RetryPolicyTest, BackoffGrowsIsCappedJitteredAndHonoursRetryInfo) {
  RetryPolicy policy;  // 0.5 s, x2, at most 10 s, jitter 0.2
  EXPECT_EQ(policy.Backoff(1, std::nullopt, 0.5), absl::Milliseconds(500));
  EXPECT_EQ(policy.Backoff(2, std::nullopt, 0.5), absl::Seconds(1));
  EXPECT_EQ(policy.Backoff(3, std::nullopt, 0.5), absl::Seconds(2));
  EXPECT_EQ(policy.Backoff(10, std::nullopt, 0.5), absl::Seconds(10));
  EXPECT_EQ(policy.Backoff(1, std::nullopt, 0.0), absl::Milliseconds(400));
  EXPECT_EQ(policy.Backoff(2, std::nullopt, 1.0), absl::Milliseconds(1200));
  // RetryInfo is a floor, never a cap.
  EXPECT_EQ(policy.Backoff(1, absl::Seconds(1), 0.5), absl::Seconds(1));
  EXPECT_EQ(policy.Backoff(3, absl::Seconds(1), 0.5), absl::Seconds(2));
}

TEST(RetryPolicyTest, SettingsOutOfRangeAreRefused) {
  EXPECT_TRUE(ValidateRetryPolicy(RetryPolicy()).ok());
  RetryPolicy zero_attempts;
  zero_attempts.max_attempts = 0;
  RetryPolicy negative_backoff;
  negative_backoff.initial_backoff = absl::Seconds(-1);
  RetryPolicy shrinking;
  shrinking.multiplier = 0.5;
  RetryPolicy wild_jitter;
  wild_jitter.jitter = 1.5;
  for (const RetryPolicy& policy :
       {zero_attempts, negative_backoff, shrinking, wild_jitter}) {
    EXPECT_EQ(ValidateRetryPolicy(policy).code(),
              absl::StatusCode::kInvalidArgument);
  }
}

// Time that passes only when the loop sleeps.
struct FakeTime {
  absl::Time now = absl::UnixEpoch();
  std::vector<absl::Duration> sleeps;
  RetryClock Clock() {
    RetryClock clock;
    clock.now = [this] { return now; };
    clock.sleep = [this](absl::Duration d) {
      sleeps.push_back(d);
      now += d;
    };
    clock.random = [] { return 0.5; };  // no jitter
    return clock;
  }
};

// Runs CallWithRetries over `script` (one result per attempt; the last one
// repeats), returning the result and the attempts made.
absl::StatusOr<int> RunScript(const RetryPolicy* policy, FakeTime& time,
                              std::vector<absl::StatusOr<int>> script,
                              int* attempts) {
  *attempts = 0;
  return CallWithRetries<int>(policy, time.Clock(), [&](int number) {
    ++*attempts;
    EXPECT_EQ(number, *attempts);
    return script[std::min<size_t>(number, script.size()) - 1];
  });
}

TEST(CallWithRetriesTest, RetriesUntilTheAnswerWithTheBackoffBetween) {
  RetryPolicy policy;
  std::vector<std::pair<int, absl::Duration>> hooks;
  policy.on_retry = [&](int attempt, const absl::Status& error,
                        absl::Duration wait) {
    EXPECT_EQ(RetryAttempts(error), attempt);
    hooks.emplace_back(attempt, wait);
  };
  FakeTime time;
  int attempts = 0;
  absl::StatusOr<int> result =
      RunScript(&policy, time,
                {absl::UnavailableError("down"),
                 Error(absl::StatusCode::kAborted, "REQUEST_IN_PROGRESS",
                       absl::Seconds(1)),
                 7},
                &attempts);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(*result, 7);
  EXPECT_EQ(attempts, 3);
  EXPECT_THAT(time.sleeps,
              ElementsAre(absl::Milliseconds(500), absl::Seconds(1)));
  EXPECT_THAT(hooks, ElementsAre(std::make_pair(1, absl::Milliseconds(500)),
                                 std::make_pair(2, absl::Seconds(1))));
}

TEST(CallWithRetriesTest, OutcomeUnknownAndOtherErrorsAreNeverRetried) {
  RetryPolicy policy;
  FakeTime time;
  int attempts = 0;
  absl::StatusOr<int> result = RunScript(
      &policy, time,
      {Error(absl::StatusCode::kDeadlineExceeded, "OUTCOME_UNKNOWN"), 7},
      &attempts);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(GetErrorDetails(result.status()).reason, "OUTCOME_UNKNOWN");
  EXPECT_EQ(RetryAttempts(result.status()), 1);
  EXPECT_EQ(attempts, 1);
  result = RunScript(&policy, time, {absl::InvalidArgumentError("bad"), 7},
                     &attempts);
  EXPECT_EQ(attempts, 1);
  EXPECT_TRUE(time.sleeps.empty());
}

TEST(CallWithRetriesTest, StopsWhenTheAttemptsRunOut) {
  RetryPolicy policy;
  policy.max_attempts = 3;
  FakeTime time;
  int attempts = 0;
  absl::StatusOr<int> result =
      RunScript(&policy, time, {absl::UnavailableError("down")}, &attempts);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(attempts, 3);
  EXPECT_EQ(RetryAttempts(result.status()), 3);
  EXPECT_EQ(time.sleeps.size(), 2u);
}

TEST(CallWithRetriesTest, StopsBeforeAWaitThatWouldEndPastMaxElapsed) {
  RetryPolicy policy;
  policy.max_attempts = 100;
  policy.max_elapsed = absl::Seconds(4);
  FakeTime time;
  int attempts = 0;
  absl::StatusOr<int> result =
      RunScript(&policy, time, {absl::UnavailableError("down")}, &attempts);
  // Waits of 0.5, 1 and 2 s end by 3.5 s; the next (4 s) would end at 7.5 s.
  EXPECT_EQ(attempts, 4);
  EXPECT_EQ(time.now - absl::UnixEpoch(), absl::Milliseconds(3500));
  EXPECT_EQ(RetryAttempts(result.status()), 4);
}

TEST(CallWithRetriesTest, NoPolicyIsOneAttempt) {
  FakeTime time;
  int attempts = 0;
  absl::StatusOr<int> result =
      RunScript(nullptr, time, {absl::UnavailableError("down"), 7}, &attempts);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(attempts, 1);
  EXPECT_EQ(RetryAttempts(absl::UnavailableError("never counted")), 1);
}

// ---------------------------------------------------------------------------
// PayoutClient against an in-process gateway that fails as scripted.

grpc::Status GrpcError(grpc::StatusCode code, const std::string& reason,
                       bool retry_info = false) {
  google::rpc::Status proto;
  proto.set_code(static_cast<int>(code));
  proto.set_message("scripted " + reason);
  google::rpc::ErrorInfo info;
  info.set_reason(reason);
  info.set_domain("payout.aopay.v1");
  proto.add_details()->PackFrom(info);
  if (retry_info) {
    google::rpc::RetryInfo retry;
    retry.mutable_retry_delay()->set_nanos(1'000'000);  // 1 ms
    proto.add_details()->PackFrom(retry);
  }
  return grpc::Status(code, proto.message(), proto.SerializeAsString());
}

google::rpc::Status RpcStatus(const grpc::Status& status) {
  google::rpc::Status proto;
  proto.ParseFromString(status.error_details());
  return proto;
}

// Each request id has a script of errors to answer before it succeeds; every
// request received is counted. A batch stream answers each request in turn
// and breaks (UNAVAILABLE, no reason) after `break_batch_after` answers once.
class ScriptedGateway final : public v1::PayoutService::Service,
                              public v1::PayoutAdminService::Service {
 public:
  void Script(const std::string& request_id, std::vector<grpc::Status> errors) {
    std::lock_guard<std::mutex> lock(mu_);
    scripts_[request_id] =
        std::deque<grpc::Status>(errors.begin(), errors.end());
  }
  void BreakNextBatchAfter(int answers) {
    std::lock_guard<std::mutex> lock(mu_);
    break_batch_after_ = answers;
  }
  std::vector<std::string> received() {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }

  grpc::Status CreatePayout(grpc::ServerContext* /*context*/,
                            const v1::CreatePayoutRequest* request,
                            v1::Payout* response) override {
    return Answer(request->request_id(), response);
  }
  grpc::Status GetPayout(grpc::ServerContext* /*context*/,
                         const v1::GetPayoutRequest* request,
                         v1::Payout* response) override {
    return Answer(request->request_id(), response);
  }
  grpc::Status ResolvePayout(grpc::ServerContext* /*context*/,
                             const v1::ResolvePayoutRequest* request,
                             v1::Payout* response) override {
    return Answer(request->payout_id(), response);
  }
  // Each watch stream plays the next script: its header (none when empty),
  // its events' cursors, then its end.
  struct WatchScript {
    std::string header;
    std::vector<std::string> cursors;
    grpc::Status end;
  };
  void ScriptWatch(std::vector<WatchScript> streams) {
    std::lock_guard<std::mutex> lock(mu_);
    watch_scripts_ = std::deque<WatchScript>(streams.begin(), streams.end());
  }
  std::vector<std::string> watched_after() {
    std::lock_guard<std::mutex> lock(mu_);
    return watched_after_;
  }
  grpc::Status WatchPayouts(
      grpc::ServerContext* context, const v1::WatchPayoutsRequest* request,
      grpc::ServerWriter<v1::PayoutEvent>* writer) override {
    WatchScript script;
    {
      std::lock_guard<std::mutex> lock(mu_);
      watched_after_.push_back(request->after_cursor());
      if (watch_scripts_.empty()) {
        return grpc::Status(grpc::StatusCode::INTERNAL, "no script left");
      }
      script = watch_scripts_.front();
      watch_scripts_.pop_front();
    }
    if (!script.header.empty()) {
      context->AddInitialMetadata(kWatchCursorHeader, script.header);
      writer->SendInitialMetadata();
    }
    for (const std::string& cursor : script.cursors) {
      v1::PayoutEvent event;
      event.set_cursor(cursor);
      if (!writer->Write(event)) return grpc::Status::CANCELLED;
    }
    return script.end;
  }

  grpc::Status BatchCreatePayouts(
      grpc::ServerContext* /*context*/,
      grpc::ServerReaderWriter<v1::BatchCreatePayoutsResponse,
                               v1::CreatePayoutRequest>* stream) override {
    int break_after;
    {
      std::lock_guard<std::mutex> lock(mu_);
      break_after = break_batch_after_;
      break_batch_after_ = -1;
    }
    v1::CreatePayoutRequest request;
    for (int answered = 0; stream->Read(&request); ++answered) {
      if (answered == break_after) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream broke");
      }
      v1::BatchCreatePayoutsResponse answer;
      answer.set_request_id(request.request_id());
      const grpc::Status status =
          Answer(request.request_id(), answer.mutable_payout());
      if (!status.ok()) *answer.mutable_error() = RpcStatus(status);
      stream->Write(answer);
    }
    return grpc::Status::OK;
  }

 private:
  grpc::Status Answer(const std::string& id, v1::Payout* response) {
    std::lock_guard<std::mutex> lock(mu_);
    received_.push_back(id);
    std::deque<grpc::Status>& script = scripts_[id];
    if (!script.empty()) {
      grpc::Status error = script.front();
      script.pop_front();
      return error;
    }
    response->set_request_id(id);
    response->set_payout_id("po_" + id);
    response->set_state(v1::PAYOUT_STATE_ACCEPTED);
    return grpc::Status::OK;
  }

  std::mutex mu_;
  std::map<std::string, std::deque<grpc::Status>> scripts_;
  std::vector<std::string> received_;
  int break_batch_after_ = -1;
  std::deque<WatchScript> watch_scripts_;
  std::vector<std::string> watched_after_;
};

class RetryingClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(
        static_cast<v1::PayoutService::Service*>(&gateway_));
    builder.RegisterService(
        static_cast<v1::PayoutAdminService::Service*>(&gateway_));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials());
    policy_.initial_backoff = absl::Milliseconds(1);
    policy_.max_backoff = absl::Milliseconds(5);
    policy_.on_retry = [this](int, const absl::Status& error, absl::Duration) {
      retried_.push_back(error);
    };
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now());
  }

  PayoutClient Client(bool retries) {
    return PayoutClient(
        channel_, "",
        retries ? std::optional<RetryPolicy>(policy_) : std::nullopt);
  }

  static v1::CreatePayoutRequest Request(const std::string& id) {
    v1::CreatePayoutRequest request;
    request.set_request_id(id);
    request.set_amount_paise(100);
    return request;
  }

  const absl::Duration kTimeout = absl::Seconds(10);
  ScriptedGateway gateway_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  RetryPolicy policy_;
  std::vector<absl::Status> retried_;
};

TEST_F(RetryingClientTest, CreateIsSentAgainWithTheSameRequestUntilAnswered) {
  gateway_.Script(
      "r1",
      {GrpcError(grpc::StatusCode::UNAVAILABLE, "UPSTREAM_UNAVAILABLE", true),
       GrpcError(grpc::StatusCode::ABORTED, "REQUEST_IN_PROGRESS", true)});
  absl::StatusOr<v1::Payout> payout =
      Client(true).CreatePayout(Request("r1"), kTimeout);
  ASSERT_TRUE(payout.ok()) << payout.status();
  EXPECT_EQ(payout->request_id(), "r1");
  EXPECT_THAT(gateway_.received(), ElementsAre("r1", "r1", "r1"));
  ASSERT_EQ(retried_.size(), 2u);
  EXPECT_EQ(GetErrorDetails(retried_[0]).reason, "UPSTREAM_UNAVAILABLE");
  EXPECT_EQ(GetErrorDetails(retried_[1]).reason, "REQUEST_IN_PROGRESS");
}

TEST_F(RetryingClientTest, WithoutAPolicyTheFirstErrorIsReturned) {
  gateway_.Script(
      "r1", {GrpcError(grpc::StatusCode::UNAVAILABLE, "UPSTREAM_UNAVAILABLE")});
  absl::StatusOr<v1::Payout> payout =
      Client(false).CreatePayout(Request("r1"), kTimeout);
  EXPECT_EQ(payout.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(gateway_.received(), ElementsAre("r1"));
}

TEST_F(RetryingClientTest, OutcomeUnknownIsReturnedAfterOneAttempt) {
  gateway_.Script("r1", {GrpcError(grpc::StatusCode::DEADLINE_EXCEEDED,
                                   "OUTCOME_UNKNOWN")});
  absl::StatusOr<v1::Payout> payout =
      Client(true).CreatePayout(Request("r1"), kTimeout);
  EXPECT_EQ(payout.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(RetryAttempts(payout.status()), 1);
  EXPECT_THAT(gateway_.received(), ElementsAre("r1"));
  EXPECT_TRUE(retried_.empty());
}

TEST_F(RetryingClientTest, ReadsAreRetriedButResolveNever) {
  gateway_.Script(
      "r1", {GrpcError(grpc::StatusCode::UNAVAILABLE, "LEDGER_UNAVAILABLE")});
  v1::GetPayoutRequest get;
  get.set_request_id("r1");
  EXPECT_TRUE(Client(true).GetPayout(get, kTimeout).ok());
  gateway_.Script(
      "po_1", {GrpcError(grpc::StatusCode::UNAVAILABLE, "LEDGER_UNAVAILABLE")});
  v1::ResolvePayoutRequest resolve;
  resolve.set_payout_id("po_1");
  absl::StatusOr<v1::Payout> resolved =
      Client(true).ResolvePayout(resolve, kTimeout);
  EXPECT_EQ(resolved.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(gateway_.received(), ElementsAre("r1", "r1", "po_1"));
}

TEST_F(RetryingClientTest, TheLastErrorCarriesTheAttemptsMade) {
  policy_.max_attempts = 3;
  gateway_.Script("r1", std::vector<grpc::Status>(
                            5, GrpcError(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                         "OVERLOADED")));
  absl::StatusOr<v1::Payout> payout =
      Client(true).CreatePayout(Request("r1"), kTimeout);
  EXPECT_EQ(payout.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RetryAttempts(payout.status()), 3);
  EXPECT_EQ(gateway_.received().size(), 3u);
}

TEST_F(RetryingClientTest, BatchSendsAgainOnlyWhatWasNotAnswered) {
  // r2 is answered with a retryable error, r3 with a final one; the first
  // stream breaks after two answers, leaving r3 and r4 unanswered.
  gateway_.Script(
      "r2", {GrpcError(grpc::StatusCode::UNAVAILABLE, "UPSTREAM_UNAVAILABLE")});
  gateway_.Script(
      "r3", {GrpcError(grpc::StatusCode::INVALID_ARGUMENT, "INVALID_REQUEST")});
  gateway_.BreakNextBatchAfter(2);
  absl::StatusOr<std::vector<v1::BatchCreatePayoutsResponse>> answers =
      Client(true).BatchCreatePayouts(
          {Request("r1"), Request("r2"), Request("r3"), Request("r4")},
          kTimeout);
  ASSERT_TRUE(answers.ok()) << answers.status();
  std::map<std::string, std::string> outcome;
  for (const v1::BatchCreatePayoutsResponse& answer : *answers) {
    EXPECT_TRUE(
        outcome
            .emplace(answer.request_id(),
                     answer.has_payout()
                         ? "payout"
                         : absl::StrCat("error ", answer.error().code()))
            .second)
        << answer.request_id() << " answered twice";
  }
  EXPECT_EQ(outcome, (std::map<std::string, std::string>{{"r1", "payout"},
                                                         {"r2", "payout"},
                                                         {"r3", "error 3"},
                                                         {"r4", "payout"}}));
  // r1 once; r2 twice (its error); r3 (unanswered, then its final error) and
  // r4 (unanswered) on the second stream.
  EXPECT_THAT(gateway_.received(),
              UnorderedElementsAre("r1", "r2", "r2", "r3", "r4"));
}

TEST_F(RetryingClientTest, BatchWithoutAPolicyReturnsTheStreamError) {
  gateway_.BreakNextBatchAfter(1);
  absl::StatusOr<std::vector<v1::BatchCreatePayoutsResponse>> answers =
      Client(false).BatchCreatePayouts({Request("r1"), Request("r2")},
                                       kTimeout);
  EXPECT_EQ(answers.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(gateway_.received(), ElementsAre("r1"));
}

TEST_F(RetryingClientTest, BatchWithRetriesRefusesARepeatedRequestId) {
  absl::StatusOr<std::vector<v1::BatchCreatePayoutsResponse>> answers =
      Client(true).BatchCreatePayouts({Request("r1"), Request("r1")}, kTimeout);
  EXPECT_EQ(answers.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(gateway_.received().empty());
}

// Reads a watch until `stop_at` (a cursor) or its end.
absl::Status Follow(PayoutClient client, const std::string& stop_at,
                    std::vector<std::string>& cursors) {
  return client.WatchPayouts(v1::WatchPayoutsRequest(), absl::Seconds(10),
                             [&](const v1::PayoutEvent& event) {
                               cursors.push_back(event.cursor());
                               return event.cursor() != stop_at;
                             });
}

TEST_F(RetryingClientTest, AWatchResumesFromItsHeaderThenItsLastEvent) {
  const grpc::Status broke(grpc::StatusCode::UNAVAILABLE, "connection lost");
  gateway_.ScriptWatch({{"c0", {}, broke},             // before any event
                        {"c0", {"c1", "c2"}, broke},   // after two
                        {"c2", {}, grpc::Status::OK},  // ended, no error
                        {"c2", {"c3"}, broke}});
  std::vector<std::string> cursors;
  EXPECT_TRUE(Follow(Client(true), "c3", cursors).ok());
  EXPECT_THAT(cursors, ElementsAre("c1", "c2", "c3"));
  EXPECT_THAT(gateway_.watched_after(), ElementsAre("", "c0", "c2", "c2"));
}

TEST_F(RetryingClientTest, AWatchCountsFailedReconnectionsInARow) {
  policy_.max_attempts = 3;
  const grpc::Status down(grpc::StatusCode::UNAVAILABLE, "down");
  // Streams that open (a header) start the count again: five of them; the
  // fifth's break is attempt 1 of the last series, and the two after it
  // that never open are attempts 2 and 3.
  std::vector<ScriptedGateway::WatchScript> streams(5, {"c0", {}, down});
  for (int i = 0; i < 2; ++i) streams.push_back({"", {}, down});
  gateway_.ScriptWatch(streams);
  std::vector<std::string> cursors;
  const absl::Status status = Follow(Client(true), "", cursors);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(RetryAttempts(status), 3);
  EXPECT_EQ(gateway_.watched_after().size(), 7u);
}

TEST_F(RetryingClientTest, AWatchWithoutAPolicyOrOnAFinalErrorEndsAtOnce) {
  gateway_.ScriptWatch(
      {{"c0", {"c1"}, grpc::Status(grpc::StatusCode::UNAVAILABLE, "lost")}});
  std::vector<std::string> cursors;
  EXPECT_EQ(Follow(Client(false), "", cursors).code(),
            absl::StatusCode::kUnavailable);
  gateway_.ScriptWatch(
      {{"", {}, GrpcError(grpc::StatusCode::OUT_OF_RANGE, "CURSOR_EXPIRED")}});
  EXPECT_EQ(Follow(Client(true), "", cursors).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_THAT(cursors, ElementsAre("c1"));
  EXPECT_EQ(gateway_.watched_after().size(), 2u);
}

}  // namespace
}  // namespace aopay
