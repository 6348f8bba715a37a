// At most once per request id, across replays, concurrent duplicates, caller
// deadlines and restarts; the ledger's reads and operator actions. Real
// processes on loopback, checked against the sandbox's journal.

#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace aopay::testing {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kCall = absl::Seconds(20);

absl::StatusOr<v1::Payout> GetByRequestId(PayoutClient& client,
                                          const std::string& request_id) {
  v1::GetPayoutRequest get;
  get.set_request_id(request_id);
  return client.GetPayout(get, kCall);
}

// (from, to, who) of a payout's events, read from the ledger file.
std::vector<std::tuple<int, int, std::string>> Events(
    const std::string& ledger_path, const std::string& payout_id) {
  std::vector<std::tuple<int, int, std::string>> events;
  for (const std::vector<std::string>& row :
       QueryLedgerFile(ledger_path,
                       "SELECT from_state, to_state, who FROM payout_events "
                       "WHERE payout_id = ?1 ORDER BY id",
                       {payout_id})) {
    events.emplace_back(std::stoi(row[0]), std::stoi(row[1]), row[2]);
  }
  return events;
}

class LedgerTest : public ::testing::Test {
 protected:
  explicit LedgerTest(std::vector<std::string> sandbox_flags = {"--settle=0s"})
      : dir_(MakeTempDir()),
        ledger_(dir_ + "/ledger.db"),
        sandbox_(std::move(sandbox_flags)),
        gateway_(std::make_unique<GatewayProcess>(sandbox_.url(), ledger_)) {}

  PayoutClient& client() { return gateway_->client(); }
  void Restart() {
    gateway_.reset();  // SIGKILL: the harshest way to stop
    gateway_ = std::make_unique<GatewayProcess>(sandbox_.url(), ledger_);
  }

  std::string dir_;
  std::string ledger_;
  SandboxProcess sandbox_;
  std::unique_ptr<GatewayProcess> gateway_;
};

TEST_F(LedgerTest, ASecondGatewayCannotOpenALedgerInUse) {
  CommandResult second = RunCommand(
      {PAYOUT_SERVER_BIN, "--listen=127.0.0.1:0",
       "--metrics_listen=", "--aopay_url=" + sandbox_.url(),
       "--registration_id=AOP-SANDBOX", "--ledger=sqlite:" + ledger_});
  EXPECT_NE(second.exit_code, 0);
  EXPECT_THAT(second.err, HasSubstr("in use by another gateway process"));
  // The first one is untouched and still serves.
  EXPECT_TRUE(client().CreatePayout(ValidRequest(UniqueAccount()), kCall).ok());
}

// The lock is the database file's own, not its name's: a symbolic or a hard
// link to a ledger in use is refused as well (each name would have its own
// PATH.lock, and a hard link its own -wal and -shm files).
TEST_F(LedgerTest, ASecondGatewayCannotOpenALedgerInUseUnderAnotherName) {
  const std::string symlinked = dir_ + "/symlinked.db";
  const std::string hardlinked = dir_ + "/hardlinked.db";
  ASSERT_EQ(symlink(ledger_.c_str(), symlinked.c_str()), 0);
  ASSERT_EQ(link(ledger_.c_str(), hardlinked.c_str()), 0);
  for (const std::string& name : {symlinked, hardlinked}) {
    CommandResult second = RunCommand(
        {PAYOUT_SERVER_BIN, "--listen=127.0.0.1:0",
         "--metrics_listen=", "--aopay_url=" + sandbox_.url(),
         "--registration_id=AOP-SANDBOX", "--ledger=sqlite:" + name});
    EXPECT_NE(second.exit_code, 0) << name;
    EXPECT_THAT(second.err, HasSubstr("in use by another gateway process"))
        << name;
  }
  EXPECT_TRUE(client().CreatePayout(ValidRequest(UniqueAccount()), kCall).ok());
}

// A changed or mistyped --registration_id must not make old request ids look
// new: the gateway refuses the ledger, and a retry under the right one
// still replays the recorded payout.
TEST_F(LedgerTest, AChangedRegistrationIdIsRefusedAtStartUp) {
  const std::string account = UniqueAccount();
  const v1::CreatePayoutRequest request = ValidRequest(account);
  absl::StatusOr<v1::Payout> first = client().CreatePayout(request, kCall);
  ASSERT_TRUE(first.ok()) << first.status();
  gateway_.reset();

  CommandResult other = RunCommand(
      {PAYOUT_SERVER_BIN, "--listen=127.0.0.1:0",
       "--metrics_listen=", "--aopay_url=" + sandbox_.url(),
       "--registration_id=AOP-OTHER-77", "--ledger=sqlite:" + ledger_});
  EXPECT_NE(other.exit_code, 0);
  EXPECT_THAT(other.out, ::testing::Not(HasSubstr("listening on")));
  EXPECT_THAT(other.err, HasSubstr("another AOPay registration"));
  EXPECT_THAT(other.err, ::testing::Not(HasSubstr("AOP-OTHER-77")));
  EXPECT_THAT(other.err, ::testing::Not(HasSubstr("AOP-SANDBOX")));

  gateway_ = std::make_unique<GatewayProcess>(sandbox_.url(), ledger_);
  absl::StatusOr<v1::Payout> replay = client().CreatePayout(request, kCall);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(replay->payout_id(), first->payout_id());
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
}

TEST_F(LedgerTest, ReplayReturnsTheRecordedPayoutAndSendsNothing) {
  const std::string account = UniqueAccount();
  const v1::CreatePayoutRequest request = ValidRequest(account);
  absl::StatusOr<v1::Payout> first = client().CreatePayout(request, kCall);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<v1::Payout> second = client().CreatePayout(request, kCall);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->SerializeAsString(), first->SerializeAsString());
  Restart();
  absl::StatusOr<v1::Payout> third = client().CreatePayout(request, kCall);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->SerializeAsString(), first->SerializeAsString());
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
}

TEST_F(LedgerTest, ReplayOfARefusedPayoutReturnsTheSameError) {
  const std::string account = UniqueAccount("0409");
  const v1::CreatePayoutRequest request = ValidRequest(account);
  absl::StatusOr<v1::Payout> first = client().CreatePayout(request, kCall);
  ASSERT_EQ(first.status().code(), absl::StatusCode::kAlreadyExists);
  Restart();
  absl::StatusOr<v1::Payout> second = client().CreatePayout(request, kCall);
  EXPECT_EQ(second.status().code(), first.status().code());
  EXPECT_EQ(second.status().message(), first.status().message());
  EXPECT_EQ(GetErrorDetails(second.status()), GetErrorDetails(first.status()));
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
}

TEST_F(LedgerTest, RequestIdReusedWithOtherParametersIsRefused) {
  const std::string account = UniqueAccount();
  v1::CreatePayoutRequest request = ValidRequest(account, 1000);
  absl::StatusOr<v1::Payout> first = client().CreatePayout(request, kCall);
  ASSERT_TRUE(first.ok()) << first.status();
  request.set_amount_paise(1001);
  absl::StatusOr<v1::Payout> reused = client().CreatePayout(request, kCall);
  ASSERT_EQ(reused.status().code(), absl::StatusCode::kInvalidArgument);
  const ErrorDetails details = GetErrorDetails(reused.status());
  EXPECT_EQ(details.reason, "REQUEST_ID_REUSED");
  EXPECT_EQ(details.metadata.at("payoutId"), first->payout_id());
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
}

class SlowSandboxLedgerTest : public LedgerTest {
 protected:
  SlowSandboxLedgerTest() : LedgerTest({"--latency=1200ms", "--settle=0s"}) {}
};

TEST_F(SlowSandboxLedgerTest, ConcurrentDuplicatesSendOnce) {
  const std::string account = UniqueAccount();
  const v1::CreatePayoutRequest request = ValidRequest(account);
  absl::Mutex mu;
  std::vector<absl::StatusOr<v1::Payout>> results;
  std::vector<std::thread> callers;
  for (int i = 0; i < 16; ++i) {
    callers.emplace_back([&] {
      absl::StatusOr<v1::Payout> result = client().CreatePayout(request, kCall);
      absl::MutexLock lock(&mu);
      results.push_back(std::move(result));
    });
  }
  for (std::thread& caller : callers) caller.join();

  std::set<std::string> payout_ids;
  int accepted = 0;
  for (const absl::StatusOr<v1::Payout>& result : results) {
    if (result.ok()) {
      ++accepted;
      payout_ids.insert(result->payout_id());
      continue;
    }
    EXPECT_EQ(result.status().code(), absl::StatusCode::kAborted)
        << result.status();
    const ErrorDetails details = GetErrorDetails(result.status());
    EXPECT_EQ(details.reason, "REQUEST_IN_PROGRESS");
    EXPECT_TRUE(details.retry_delay.has_value());
    payout_ids.insert(details.metadata.at("payoutId"));
  }
  EXPECT_GE(accepted, 1);
  EXPECT_EQ(payout_ids.size(), 1u);
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
}

TEST_F(SlowSandboxLedgerTest, CallerDeadlineDoesNotCancelTheAopayCall) {
  const std::string account = UniqueAccount();
  const v1::CreatePayoutRequest request = ValidRequest(account);
  absl::StatusOr<v1::Payout> impatient =
      client().CreatePayout(request, absl::Milliseconds(200));
  ASSERT_EQ(impatient.status().code(), absl::StatusCode::kDeadlineExceeded);

  // The AOPay call goes on and its outcome is recorded.
  ASSERT_TRUE(Eventually(
      [&] {
        absl::StatusOr<v1::Payout> stored =
            GetByRequestId(client(), request.request_id());
        return stored.ok() && stored->state() != v1::PAYOUT_STATE_PENDING;
      },
      absl::Seconds(10)));
  absl::StatusOr<v1::Payout> retry = client().CreatePayout(request, kCall);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->state(), v1::PAYOUT_STATE_ACCEPTED);
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
}

TEST_F(SlowSandboxLedgerTest, KilledMidCallBecomesUnknownAndIsNeverResent) {
  const std::string account = UniqueAccount();
  const v1::CreatePayoutRequest request = ValidRequest(account);
  // The caller has its own client: Restart() destroys the gateway's.
  std::thread caller([&request, channel = gateway_->channel()] {
    (void)PayoutClient(channel).CreatePayout(request, kCall);
  });
  ASSERT_TRUE(sandbox_.WaitForJournal(
      [&](const std::vector<JournalEntry>& journal) {
        return !journal.empty();
      },
      absl::Seconds(10)));
  Restart();
  caller.join();

  absl::StatusOr<v1::Payout> stored =
      GetByRequestId(client(), request.request_id());
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->state(), v1::PAYOUT_STATE_UNKNOWN);
  absl::StatusOr<v1::Payout> retry = client().CreatePayout(request, kCall);
  EXPECT_EQ(retry.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(GetErrorDetails(retry.status()).reason, "OUTCOME_UNKNOWN");
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
  EXPECT_THAT(Events(ledger_, stored->payout_id()),
              ::testing::ElementsAre(std::make_tuple(0, 1, "gateway"),
                                     std::make_tuple(1, 6, "recovery")));
}

TEST_F(LedgerTest, ListPagesNewestFirstAcrossARestart) {
  std::vector<std::string> created;  // oldest first
  for (int i = 0; i < 7; ++i) {
    const std::string suffix = i == 3 ? "0409" : "1836";
    absl::StatusOr<v1::Payout> payout =
        client().CreatePayout(ValidRequest(UniqueAccount(suffix)), kCall);
    if (i == 3) {
      ASSERT_FALSE(payout.ok());
      created.push_back(
          GetErrorDetails(payout.status()).metadata.at("payoutId"));
    } else {
      ASSERT_TRUE(payout.ok()) << payout.status();
      created.push_back(payout->payout_id());
    }
  }
  std::vector<std::string> listed;
  v1::ListPayoutsRequest list;
  list.set_page_size(3);
  absl::StatusOr<v1::ListPayoutsResponse> page =
      client().ListPayouts(list, kCall);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->payouts_size(), 3);
  for (const v1::Payout& p : page->payouts()) listed.push_back(p.payout_id());
  ASSERT_FALSE(page->next_page_token().empty());

  Restart();
  while (!page->next_page_token().empty()) {
    list.set_page_token(page->next_page_token());
    page = client().ListPayouts(list, kCall);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const v1::Payout& p : page->payouts()) listed.push_back(p.payout_id());
  }
  EXPECT_EQ(listed, std::vector<std::string>(created.rbegin(), created.rend()));

  v1::ListPayoutsRequest failed;
  failed.add_states(v1::PAYOUT_STATE_FAILED);
  page = client().ListPayouts(failed, kCall);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->payouts_size(), 1);
  EXPECT_EQ(page->payouts(0).payout_id(), created[3]);

  v1::ListPayoutsRequest bad;
  bad.set_page_token("garbage");
  EXPECT_EQ(client().ListPayouts(bad, kCall).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::ListPayoutsRequest too_big;
  too_big.set_page_size(100000);
  page = client().ListPayouts(too_big, kCall);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->payouts_size(), 7);
}

TEST_F(LedgerTest, OperatorResolvesAnUnknownPayout) {
  const std::string account = UniqueAccount("0500");
  const v1::CreatePayoutRequest request = ValidRequest(account);
  absl::StatusOr<v1::Payout> created = client().CreatePayout(request, kCall);
  ASSERT_EQ(created.status().code(), absl::StatusCode::kDeadlineExceeded);
  const std::string payout_id =
      GetErrorDetails(created.status()).metadata.at("payoutId");

  v1::RefreshPayoutRequest refresh;
  refresh.set_payout_id(payout_id);
  absl::StatusOr<v1::Payout> refreshed = client().RefreshPayout(refresh, kCall);
  EXPECT_EQ(refreshed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(GetErrorDetails(refreshed.status()).reason, "NO_TRANSACTION_ID");

  v1::ResolvePayoutRequest resolve;
  resolve.set_payout_id(payout_id);
  resolve.set_state(v1::PAYOUT_STATE_SUCCEEDED);
  absl::StatusOr<v1::Payout> unnoted = client().ResolvePayout(resolve, kCall);
  EXPECT_EQ(unnoted.status().code(), absl::StatusCode::kInvalidArgument);

  resolve.set_note("AOPay support confirmed TERF123 settled (ticket 42)");
  resolve.set_transaction_id("TERF123");
  absl::StatusOr<v1::Payout> resolved = client().ResolvePayout(resolve, kCall);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->state(), v1::PAYOUT_STATE_SUCCEEDED);
  EXPECT_EQ(resolved->transaction_id(), "TERF123");

  // Settled now: a retry of the request gets the payout as it stands.
  absl::StatusOr<v1::Payout> replay = client().CreatePayout(request, kCall);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(replay->state(), v1::PAYOUT_STATE_SUCCEEDED);

  resolve.set_state(v1::PAYOUT_STATE_FAILED);
  absl::StatusOr<v1::Payout> again = client().ResolvePayout(resolve, kCall);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(GetErrorDetails(again.status()).reason, "INVALID_TRANSITION");

  EXPECT_THAT(
      Events(ledger_, payout_id),
      ::testing::ElementsAre(
          std::make_tuple(0, 1, "gateway"), std::make_tuple(1, 6, "gateway"),
          std::make_tuple(6, 3,
                          "operator: AOPay support confirmed TERF123 settled "
                          "(ticket 42)")));
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
}

TEST_F(LedgerTest, RefreshRecordsEachTransitionAsAnEvent) {
  absl::StatusOr<v1::Payout> created =
      client().CreatePayout(ValidRequest(UniqueAccount("0602")), kCall);
  ASSERT_TRUE(created.ok()) << created.status();
  v1::RefreshPayoutRequest refresh;
  refresh.set_payout_id(created->payout_id());
  absl::StatusOr<v1::Payout> refreshed = client().RefreshPayout(refresh, kCall);
  ASSERT_TRUE(refreshed.ok()) << refreshed.status();
  EXPECT_EQ(refreshed->state(), v1::PAYOUT_STATE_REVERSED);
  EXPECT_EQ(refreshed->upstream_status(), "REVERSED");
  // Final: a later refresh that says the same changes nothing, and is no
  // event (events are changes of state: watchers and webhooks get them).
  refreshed = client().RefreshPayout(refresh, kCall);
  ASSERT_TRUE(refreshed.ok()) << refreshed.status();
  EXPECT_EQ(refreshed->state(), v1::PAYOUT_STATE_REVERSED);
  EXPECT_THAT(Events(ledger_, created->payout_id()),
              ::testing::ElementsAre(std::make_tuple(0, 1, "gateway"),
                                     std::make_tuple(1, 2, "gateway"),
                                     std::make_tuple(2, 5, "refresh")));
}

TEST(ReconcilerTest, AcceptedPayoutsAreRefreshedUntilFinal) {
  SandboxProcess sandbox({"--settle=0s"});
  const std::string dir = MakeTempDir();
  GatewayProcess gateway(sandbox.url(), dir + "/ledger.db",
                         {"--reconcile_interval=100ms"});
  std::vector<std::pair<std::string, v1::PayoutState>> expected;
  for (const auto& [suffix, state] :
       std::vector<std::pair<std::string, v1::PayoutState>>{
           {"1836", v1::PAYOUT_STATE_SUCCEEDED},
           {"0601", v1::PAYOUT_STATE_FAILED},
           {"0602", v1::PAYOUT_STATE_REVERSED}}) {
    absl::StatusOr<v1::Payout> created = gateway.client().CreatePayout(
        ValidRequest(UniqueAccount(suffix)), kCall);
    ASSERT_TRUE(created.ok()) << created.status();
    expected.emplace_back(created->request_id(), state);
  }
  for (const auto& [request_id, state] : expected) {
    EXPECT_TRUE(Eventually(
        [&, &request_id = request_id, &state = state] {
          absl::StatusOr<v1::Payout> stored =
              GetByRequestId(gateway.client(), request_id);
          return stored.ok() && stored->state() == state;
        },
        absl::Seconds(15)))
        << request_id;
  }
  EXPECT_EQ(sandbox.CountPath("/api/V6/Payout/AOPPayout"), 3);
}

TEST(LedgerStartupTest, UnopenableLedgerStopsTheServer) {
  const std::string dir = MakeTempDir();
  CommandResult missing_dir = RunCommand(
      {PAYOUT_SERVER_BIN, "--listen=127.0.0.1:0", "--metrics_listen=",
       "--ledger=sqlite:" + dir + "/no/such/dir/ledger.db"});
  EXPECT_NE(missing_dir.exit_code, 0);
  EXPECT_THAT(missing_dir.err, HasSubstr("ledger"));

  const std::string corrupt = dir + "/corrupt.db";
  FILE* file = fopen(corrupt.c_str(), "w");
  fputs("this is not a database, just some words that fill a page ......",
        file);
  fclose(file);
  CommandResult bad =
      RunCommand({PAYOUT_SERVER_BIN, "--listen=127.0.0.1:0",
                  "--metrics_listen=", "--ledger=sqlite:" + corrupt});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.out, ::testing::Not(HasSubstr("listening on")));
}

}  // namespace
}  // namespace aopay::testing
