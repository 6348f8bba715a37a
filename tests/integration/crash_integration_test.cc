// The crash test: SIGKILL the gateway while hundreds of payouts are in
// flight, restart it on the same ledger, retry every request id, and compare
// what AOPay (the sandbox's journal) received with what the ledger holds,
// request by request.

#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "common/errors.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace aopay::testing {
namespace {

constexpr int kPayouts = 240;
constexpr absl::Duration kCall = absl::Seconds(60);

// Sends every request at once and waits for every answer.
std::vector<absl::StatusOr<v1::Payout>> CreateAll(
    PayoutClient& client,
    const std::vector<v1::CreatePayoutRequest>& requests) {
  std::vector<absl::StatusOr<v1::Payout>> results(requests.size(),
                                                  absl::UnknownError("unset"));
  absl::BlockingCounter pending(static_cast<int>(requests.size()));
  for (size_t i = 0; i < requests.size(); ++i) {
    client.CreatePayoutAsync(
        requests[i], kCall,
        [&results, &pending, i](absl::StatusOr<v1::Payout> r) {
          results[i] = std::move(r);
          pending.DecrementCount();
        });
  }
  pending.Wait();
  return results;
}

TEST(CrashTest, KilledWhilePayoutsAreInFlightNothingIsSentTwiceOrLost) {
  SandboxProcess sandbox({"--latency=1s"});
  const std::string dir = MakeTempDir();
  const std::string ledger = dir + "/ledger.db";

  std::vector<v1::CreatePayoutRequest> requests;
  for (int i = 0; i < kPayouts; ++i) {
    requests.push_back(ValidRequest(UniqueAccount("1836")));
  }

  // 64 AOPay calls at a time: at the kill some payouts are answered and
  // recorded, some in flight, some queued (durable but never sent) and some
  // not yet recorded at all.
  const std::vector<std::string> flags = {"--max_inflight=64"};
  {
    GatewayProcess gateway(sandbox.url(), ledger, flags);
    absl::BlockingCounter answered(kPayouts);
    for (const v1::CreatePayoutRequest& request : requests) {
      gateway.client().CreatePayoutAsync(
          request, kCall, [&answered](absl::StatusOr<v1::Payout>) {
            answered.DecrementCount();
          });
    }
    // Kill it once the second wave of calls has reached AOPay, while their
    // answers (1 s latency) are still on the way.
    ASSERT_TRUE(sandbox.WaitForJournal(
        [](const std::vector<JournalEntry>& journal) {
          return journal.size() >= 100;
        },
        absl::Seconds(30)));
    gateway.process().Signal(SIGKILL);
    answered.Wait();  // every call ends (most with UNAVAILABLE) before the
                      // client goes
  }
  const size_t received_before_crash = sandbox.Journal().size();
  ASSERT_GE(received_before_crash, 100u);

  GatewayProcess restarted(sandbox.url(), ledger, flags);
  std::vector<absl::StatusOr<v1::Payout>> retries =
      CreateAll(restarted.client(), requests);

  int accepted = 0, unknown = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const absl::StatusOr<v1::Payout>& retry = retries[i];
    if (retry.ok()) {
      EXPECT_EQ(retry->state(), v1::PAYOUT_STATE_ACCEPTED);
      ++accepted;
    } else {
      EXPECT_EQ(retry.status().code(), absl::StatusCode::kDeadlineExceeded)
          << retry.status();
      EXPECT_EQ(GetErrorDetails(retry.status()).reason, "OUTCOME_UNKNOWN");
      ++unknown;
    }
  }
  EXPECT_GT(unknown, 0) << "the kill should have caught payouts in flight";
  EXPECT_GT(accepted, 0) << "some payouts finished before the kill or after";
  std::cout << "crash test: " << received_before_crash
            << " payouts reached AOPay before the kill; after the restart "
            << accepted << " ACCEPTED, " << unknown << " UNKNOWN\n";

  // Request by request: never sent twice; sent means recorded.
  std::map<std::string, int> sent;
  for (const JournalEntry& entry : sandbox.Journal())
    ++sent[entry.account_number];
  for (const v1::CreatePayoutRequest& request : requests) {
    const std::string& account = request.beneficiary().account_number();
    EXPECT_LE(sent[account], 1) << "sent twice: " << request.request_id();
    v1::GetPayoutRequest get;
    get.set_request_id(request.request_id());
    absl::StatusOr<v1::Payout> stored =
        restarted.client().GetPayout(get, kCall);
    // Every request id is recorded now: those the crash caught before their
    // intent was durable were sent by the retry.
    ASSERT_TRUE(stored.ok()) << request.request_id() << ": " << stored.status();
    if (stored->state() == v1::PAYOUT_STATE_ACCEPTED) {
      EXPECT_EQ(sent[account], 1) << request.request_id();
    } else {
      // Durable before the call started; the kill may have come before or
      // after the request reached AOPay. Either way it is never re-sent.
      EXPECT_EQ(stored->state(), v1::PAYOUT_STATE_UNKNOWN);
    }
  }
  RecordProperty("received_before_crash",
                 static_cast<int>(received_before_crash));
  RecordProperty("accepted", accepted);
  RecordProperty("unknown", unknown);
}

}  // namespace
}  // namespace aopay::testing
