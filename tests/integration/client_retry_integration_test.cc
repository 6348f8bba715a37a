// The C++ client's retry policy against the real gateway and sandbox: a
// CreatePayout that meets a gateway that is down, or a first call with the
// same request id still in flight, is retried with the same request id and
// reaches AOPay exactly once (the sandbox's journal).

#include <csignal>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "client/payout_client.h"
#include "client/retry_policy.h"
#include "common/errors.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace aopay::testing {
namespace {

constexpr absl::Duration kCall = absl::Seconds(30);

// A channel that tries to reconnect within 100-500 ms instead of gRPC's
// default second or more, so that a gateway that comes back is found soon
// (each connection attempt keeps gRPC's own, generous, timeout).
std::shared_ptr<grpc::Channel> FastReconnectChannel(
    const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

TEST(ClientRetryTest, AGatewayThatWasDownIsRetriedAndTheMoneySentOnce) {
  SandboxProcess sandbox;
  const std::string dir = MakeTempDir();
  const std::string ledger = dir + "/ledger.db";
  std::string address;
  {
    GatewayProcess first(sandbox.url(), ledger);
    address = first.address();
    ASSERT_EQ(first.process().Signal(SIGTERM), 0);
  }
  // Down now; the first retry brings it back on the same address and ledger.
  std::unique_ptr<GatewayProcess> restarted;
  std::vector<absl::Status> retried;
  RetryPolicy policy;
  policy.max_attempts = 10;
  policy.initial_backoff = absl::Milliseconds(200);
  policy.max_backoff = absl::Seconds(1);
  policy.on_retry = [&](int, const absl::Status& error, absl::Duration) {
    retried.push_back(error);
    if (restarted == nullptr) {
      restarted = std::make_unique<GatewayProcess>(
          sandbox.url(), ledger,
          std::vector<std::string>{"--listen=" + address});
    }
  };
  PayoutClient client(FastReconnectChannel(address), "", policy);
  const std::string account = UniqueAccount();
  absl::StatusOr<v1::Payout> payout =
      client.CreatePayout(ValidRequest(account), kCall);
  ASSERT_TRUE(payout.ok()) << payout.status();
  EXPECT_EQ(payout->state(), v1::PAYOUT_STATE_ACCEPTED);
  ASSERT_FALSE(retried.empty());
  for (const absl::Status& error : retried) {
    // gRPC's own UNAVAILABLE: nobody answered, so no ErrorInfo.
    EXPECT_EQ(error.code(), absl::StatusCode::kUnavailable) << error;
    EXPECT_EQ(GetErrorDetails(error).reason, "") << error;
  }
  EXPECT_EQ(sandbox.PayoutsFor(account), 1);
}

TEST(ClientRetryTest, ARequestInProgressIsRetriedUntilItsOutcome) {
  // Every AOPay answer takes a second: the second call with the same request
  // id meets the first one in flight (ABORTED / REQUEST_IN_PROGRESS) and is
  // retried until the outcome is recorded.
  SandboxProcess sandbox({"--latency=1s"});
  const std::string dir = MakeTempDir();
  GatewayProcess gateway(sandbox.url(), dir + "/ledger.db");
  const std::string account = UniqueAccount();
  const v1::CreatePayoutRequest request = ValidRequest(account);
  absl::Notification first_done;
  absl::StatusOr<v1::Payout> first;
  gateway.client().CreatePayoutAsync(request, kCall,
                                     [&](absl::StatusOr<v1::Payout> result) {
                                       first = std::move(result);
                                       first_done.Notify();
                                     });
  // The first call is in flight once AOPay has it.
  ASSERT_TRUE(sandbox.WaitForJournal(
      [&](const std::vector<JournalEntry>& journal) {
        for (const JournalEntry& entry : journal) {
          if (entry.account_number == account) return true;
        }
        return false;
      },
      absl::Seconds(20)));
  std::vector<absl::Status> retried;
  RetryPolicy policy;
  policy.on_retry = [&](int, const absl::Status& error, absl::Duration) {
    retried.push_back(error);
  };
  PayoutClient client(gateway.channel(), "", policy);
  absl::StatusOr<v1::Payout> second = client.CreatePayout(request, kCall);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(first_done.WaitForNotificationWithTimeout(kCall));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(second->payout_id(), first->payout_id());
  EXPECT_EQ(second->state(), v1::PAYOUT_STATE_ACCEPTED);
  ASSERT_FALSE(retried.empty());
  EXPECT_EQ(retried.front().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(GetErrorDetails(retried.front()).reason,
            reason::kRequestInProgress);
  EXPECT_EQ(sandbox.PayoutsFor(account), 1);
}

}  // namespace
}  // namespace aopay::testing
