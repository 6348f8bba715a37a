// The real payout-server on a SQLite ledger whose storage fails under it:
// the disk fills up, the filesystem turns read-only, the ledger file is
// deleted. The promise (docs/operations.md): when the intent cannot be
// recorded the caller gets UNAVAILABLE / LEDGER_UNAVAILABLE and nothing is
// sent; health is NOT_SERVING while the ledger cannot write; reads keep
// working where the storage allows; payouts resume once the fault is gone.

#include <signal.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/errors.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"
#include "tests/reliability/faults/scratch_filesystem.h"

namespace aopay::testing {
namespace {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

constexpr absl::Duration kCall = absl::Seconds(20);
// The server looks at the ledger's health about once a second.
constexpr absl::Duration kHealthFollows = absl::Seconds(10);
constexpr int64_t kTmpfsBytes = 8 << 20;
constexpr int64_t kExt4Bytes = 16 << 20;
constexpr char kPayoutService[] = "aopay.payout.v1.PayoutService";

// Both the overall status and the payout service's reach `wanted`.
bool HealthBecomes(GatewayProcess& gateway,
                   HealthCheckResponse::ServingStatus wanted) {
  return Eventually(
      [&] {
        return CheckHealth(gateway.channel(), "") == wanted &&
               CheckHealth(gateway.channel(), kPayoutService) == wanted;
      },
      kHealthFollows);
}

class LedgerFaultTest : public ::testing::Test {
 protected:
  LedgerFaultTest() : sandbox_({"--settle=0s"}) {}

  void StartGateway(const std::string& dir) {
    ledger_path_ = dir + "/ledger.db";
    gateway_ = std::make_unique<GatewayProcess>(
        sandbox_.url(), ledger_path_,
        std::vector<std::string>{"--upstream_timeout=5s"});
    ASSERT_FALSE(gateway_->address().empty());
  }

  absl::StatusOr<v1::Payout> Create(const v1::CreatePayoutRequest& request) {
    return gateway_->client().CreatePayout(request, kCall);
  }
  absl::StatusOr<v1::Payout> Get(const std::string& request_id) {
    v1::GetPayoutRequest get;
    get.set_request_id(request_id);
    return gateway_->client().GetPayout(get, kCall);
  }

  // A payout that AOPay accepted before the fault.
  v1::CreatePayoutRequest PayoutBeforeTheFault() {
    v1::CreatePayoutRequest request = ValidRequest(UniqueAccount());
    absl::StatusOr<v1::Payout> payout = Create(request);
    EXPECT_TRUE(payout.ok()) << payout.status();
    if (payout.ok()) {
      EXPECT_EQ(payout->state(), v1::PAYOUT_STATE_ACCEPTED);
    }
    EXPECT_TRUE(HealthBecomes(*gateway_, HealthCheckResponse::SERVING));
    return request;
  }

  // While the fault lasts: refused with LEDGER_UNAVAILABLE, nothing sent,
  // nothing recorded, health NOT_SERVING. Returns the refused request.
  v1::CreatePayoutRequest ExpectRefusedAndNothingSent() {
    const size_t journal_before = sandbox_.Journal().size();
    const v1::CreatePayoutRequest request = ValidRequest(UniqueAccount());
    const absl::StatusOr<v1::Payout> payout = Create(request);
    EXPECT_EQ(payout.status().code(), absl::StatusCode::kUnavailable)
        << payout.status();
    const ErrorDetails details = GetErrorDetails(payout.status());
    EXPECT_EQ(details.reason, "LEDGER_UNAVAILABLE") << payout.status();
    EXPECT_TRUE(details.retry_delay.has_value());
    EXPECT_EQ(details.metadata.count("payoutId"), 0u);
    EXPECT_EQ(sandbox_.Journal().size(), journal_before) << "sent to AOPay";
    EXPECT_EQ(sandbox_.PayoutsFor(request.beneficiary().account_number()), 0);
    EXPECT_TRUE(HealthBecomes(*gateway_, HealthCheckResponse::NOT_SERVING))
        << "health still " << CheckHealth(gateway_->channel(), "");
    return request;
  }

  // After the fault: new payouts and the refused one (its request id is
  // free) are sent once each, and health is SERVING again.
  void ExpectPayoutsResume(const v1::CreatePayoutRequest& refused) {
    for (const v1::CreatePayoutRequest& request :
         {ValidRequest(UniqueAccount()), refused}) {
      const absl::StatusOr<v1::Payout> payout = Create(request);
      ASSERT_TRUE(payout.ok()) << payout.status();
      EXPECT_EQ(payout->state(), v1::PAYOUT_STATE_ACCEPTED);
      EXPECT_EQ(sandbox_.PayoutsFor(request.beneficiary().account_number()), 1);
    }
    EXPECT_TRUE(HealthBecomes(*gateway_, HealthCheckResponse::SERVING))
        << "health still " << CheckHealth(gateway_->channel(), "");
  }

  void ExpectStillRecorded(const v1::CreatePayoutRequest& request) {
    const absl::StatusOr<v1::Payout> stored = Get(request.request_id());
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(stored->state(), v1::PAYOUT_STATE_ACCEPTED);
    EXPECT_EQ(stored->beneficiary().account_number(),
              request.beneficiary().account_number());
  }

  SandboxProcess sandbox_;
  std::unique_ptr<ScratchFilesystem> fs_;  // outlives the gateway
  std::string ledger_path_;
  std::unique_ptr<GatewayProcess> gateway_;
};

TEST_F(LedgerFaultTest, DiskFullRefusesPayoutsUntilSpaceIsFreed) {
  absl::StatusOr<std::unique_ptr<ScratchFilesystem>> fs =
      ScratchFilesystem::MountTmpfs(kTmpfsBytes);
  if (!fs.ok()) GTEST_SKIP() << fs.status();
  fs_ = *std::move(fs);
  ASSERT_NO_FATAL_FAILURE(StartGateway(fs_->path()));
  const v1::CreatePayoutRequest before = PayoutBeforeTheFault();

  absl::StatusOr<std::string> filler = fs_->Fill();
  ASSERT_TRUE(filler.ok()) << filler.status();
  const v1::CreatePayoutRequest refused = ExpectRefusedAndNothingSent();
  EXPECT_EQ(Get(refused.request_id()).status().code(),
            absl::StatusCode::kNotFound);
  // A second attempt while the disk is still full: the same.
  ExpectRefusedAndNothingSent();
  ExpectStillRecorded(before);

  ASSERT_EQ(unlink(filler->c_str()), 0);
  ExpectPayoutsResume(refused);
  ExpectStillRecorded(before);
}

// A tmpfs cannot be remounted read-only while the ledger holds its files open
// for writing (the kernel answers EBUSY), so the read-only fault is the one a
// failing disk causes: ext4 mounted errors=remount-ro, and a filesystem error.
// The kernel keeps such a filesystem read-only until it is unmounted and
// checked, so recovery is a restart of the gateway on the repaired disk.
TEST_F(LedgerFaultTest, FilesystemTurnedReadOnlyRefusesPayoutsAndKeepsReads) {
  absl::StatusOr<std::unique_ptr<ScratchFilesystem>> fs =
      ScratchFilesystem::MountExt4(kExt4Bytes);
  if (!fs.ok()) GTEST_SKIP() << fs.status();
  fs_ = *std::move(fs);
  ASSERT_NO_FATAL_FAILURE(StartGateway(fs_->path()));
  const v1::CreatePayoutRequest before = PayoutBeforeTheFault();

  ASSERT_TRUE(fs_->TriggerErrorToReadOnly().ok());
  ASSERT_FALSE(fs_->Writable()) << "the filesystem did not turn read-only";
  const v1::CreatePayoutRequest refused = ExpectRefusedAndNothingSent();
  EXPECT_EQ(Get(refused.request_id()).status().code(),
            absl::StatusCode::kNotFound);
  ExpectStillRecorded(before);

  gateway_.reset();  // SIGKILL: nothing on a read-only disk can be flushed
  ASSERT_TRUE(fs_->RepairAndRemount().ok());
  ASSERT_TRUE(fs_->Writable());
  ASSERT_NO_FATAL_FAILURE(StartGateway(fs_->path()));
  ExpectStillRecorded(before);
  ExpectPayoutsResume(refused);
}

// An operator deletes the ledger file under the running gateway. SQLite would
// go on writing into the deleted file, and every payout recorded from then on
// would vanish at the next restart; the ledger notices, refuses writes and
// stays NOT_SERVING until it is restarted on a real file. No mount needed.
TEST_F(LedgerFaultTest, DeletedLedgerFileRefusesPayoutsUntilRestart) {
  const std::string dir = MakeTempDir();
  ASSERT_NO_FATAL_FAILURE(StartGateway(dir));
  const v1::CreatePayoutRequest before = PayoutBeforeTheFault();

  ASSERT_EQ(unlink(ledger_path_.c_str()), 0);
  const v1::CreatePayoutRequest refused = ExpectRefusedAndNothingSent();
  // A read may fail, but must never say that a recorded payout does not
  // exist: a caller would take that as "never sent" and pay again.
  const absl::StatusOr<v1::Payout> read = Get(before.request_id());
  if (read.ok()) {
    EXPECT_EQ(read->state(), v1::PAYOUT_STATE_ACCEPTED);
  } else {
    EXPECT_EQ(read.status().code(), absl::StatusCode::kUnavailable)
        << read.status();
  }
  // It does not heal by itself.
  ExpectRefusedAndNothingSent();
  EXPECT_EQ(CheckHealth(gateway_->channel(), ""),
            HealthCheckResponse::NOT_SERVING);

  gateway_->process().Signal(SIGTERM);
  gateway_.reset();
  ASSERT_NO_FATAL_FAILURE(StartGateway(dir));
  EXPECT_TRUE(HealthBecomes(*gateway_, HealthCheckResponse::SERVING));
  ExpectPayoutsResume(refused);
}

}  // namespace
}  // namespace aopay::testing
