// The C++ client's retry policy against the real gateway and sandbox: a
// CreatePayout that meets a gateway that is down, or a first call with the
// same request id still in flight, is retried with the same request id and
// reaches AOPay exactly once (the sandbox's journal).

#include <csignal>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "client/payout_client.h"
#include "client/retry_policy.h"
#include "common/errors.h"
#include "common/ids.h"
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
  // The channel keeps failing at once for a few seconds after the gateway
  // is back (until its own reconnection backoff lets it try): attempts
  // enough for half a minute.
  RetryPolicy policy;
  policy.max_attempts = 30;
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

// A watch opened with the retry policy follows the gateway through a
// SIGKILL and a restart: every change is seen once, in order, including
// those recorded before it reconnected.
TEST(ClientRetryTest, AWatchFollowsAKilledAndRestartedGateway) {
  SandboxProcess sandbox;
  const std::string dir = MakeTempDir();
  const std::string ledger = dir + "/ledger.db";
  auto gateway = std::make_unique<GatewayProcess>(sandbox.url(), ledger);
  const std::string address = gateway->address();
  absl::Mutex mu;
  std::vector<v1::PayoutEvent> seen;  // guarded by mu
  std::vector<absl::Status> retried;  // guarded by mu
  RetryPolicy policy = WatchRetryPolicy();
  policy.initial_backoff = absl::Milliseconds(100);
  policy.max_backoff = absl::Milliseconds(500);
  policy.on_retry = [&](int, const absl::Status& error, absl::Duration) {
    absl::MutexLock lock(&mu);
    retried.push_back(error);
  };
  PayoutClient client(FastReconnectChannel(address), "", policy);
  constexpr size_t kEvents = 8;  // PENDING and ACCEPTED of 4 payouts
  absl::Status ended;
  std::thread watcher([&] {
    v1::WatchPayoutsRequest request;
    request.set_after_cursor(EventCursor(0));  // the ledger is empty
    ended = client.WatchPayouts(request, absl::Seconds(30),
                                [&](const v1::PayoutEvent& event) {
                                  absl::MutexLock lock(&mu);
                                  seen.push_back(event);
                                  return seen.size() < kEvents;
                                });
  });
  std::vector<std::string> payouts;
  auto create = [&](GatewayProcess& to) {
    absl::StatusOr<v1::Payout> payout =
        to.client().CreatePayout(ValidRequest(UniqueAccount()), kCall);
    ASSERT_TRUE(payout.ok()) << payout.status();
    payouts.push_back(payout->payout_id());
  };
  create(*gateway);
  create(*gateway);
  ASSERT_TRUE(Eventually(
      [&] {
        absl::MutexLock lock(&mu);
        return seen.size() >= 4;
      },
      absl::Seconds(20)));
  gateway->process().Signal(SIGKILL);
  gateway = std::make_unique<GatewayProcess>(
      sandbox.url(), ledger, std::vector<std::string>{"--listen=" + address});
  create(*gateway);
  create(*gateway);
  watcher.join();
  EXPECT_TRUE(ended.ok()) << ended;
  absl::MutexLock lock(&mu);
  ASSERT_EQ(seen.size(), kEvents);
  EXPECT_FALSE(retried.empty());
  for (size_t i = 0; i < seen.size(); ++i) {
    // PENDING then ACCEPTED of each payout, in the order they were made.
    EXPECT_EQ(seen[i].payout().payout_id(), payouts[i / 2]) << i;
    EXPECT_EQ(seen[i].payout().state(),
              i % 2 == 0 ? v1::PAYOUT_STATE_PENDING : v1::PAYOUT_STATE_ACCEPTED)
        << i;
    if (i > 0) {
      EXPECT_GT(ParseEventCursor(seen[i].cursor()).value_or(-1),
                ParseEventCursor(seen[i - 1].cursor()).value_or(-1));
    }
  }
}

}  // namespace
}  // namespace aopay::testing
