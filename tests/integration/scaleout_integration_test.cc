// Three gateway replicas on one PostgreSQL ledger (a real PostgreSQL 15,
// tests/support/test_postgres.h): every request id sent to all three at
// once, several times, reaches AOPay once; a replica killed mid-load loses
// only its own payouts in flight, to UNKNOWN after its lease, while the
// others complete; the sandbox's journal and the ledger agree request by
// request; a watcher moving between replicas with its cursor, across a
// replica's SIGKILL, sees every event once, in the ledger's order.

#include <sys/wait.h>

#include <algorithm>
#include <csignal>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "aopay/payout/v1/payout.grpc.pb.h"
#include "common/errors.h"
#include "common/ids.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"
#include "tests/support/tcp_proxy.h"
#include "tests/support/test_postgres.h"

namespace aopay::testing {
namespace {

constexpr absl::Duration kCall = absl::Seconds(60);
constexpr int kReplicas = 3;
// The shortest lease allowed, so that the kill test does not wait long.
const std::vector<std::string> kReplicaFlags = {"--owner_lease=3s",
                                                "--max_inflight=64"};

std::vector<std::unique_ptr<GatewayProcess>> StartReplicas(
    const std::string& aopay_url, const std::string& uri) {
  std::vector<std::unique_ptr<GatewayProcess>> replicas;
  for (int i = 0; i < kReplicas; ++i) {
    replicas.push_back(
        std::make_unique<GatewayProcess>(aopay_url, uri, kReplicaFlags));
  }
  return replicas;
}

std::map<std::string, int> SentPerAccount(const SandboxProcess& sandbox) {
  std::map<std::string, int> sent;
  for (const JournalEntry& entry : sandbox.Journal()) {
    if (entry.path == "/api/V6/Payout/AOPPayout") ++sent[entry.account_number];
  }
  return sent;
}

// Waits until the sandbox has received `count` calls: every payout is at
// AOPay.
bool AllAtAopay(const SandboxProcess& sandbox, int count) {
  return sandbox.WaitForJournal(
      [count](const std::vector<JournalEntry>& journal) {
        return journal.size() >= static_cast<size_t>(count);
      },
      absl::Seconds(30));
}

absl::StatusOr<v1::Payout> ByRequestId(GatewayProcess& gateway,
                                       const std::string& request_id) {
  v1::GetPayoutRequest get;
  get.set_request_id(request_id);
  return gateway.client().GetPayout(get, kCall);
}

class ScaleOutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> uri = test_support::NewTestDatabase();
    ASSERT_TRUE(uri.ok()) << uri.status();
    uri_ = *std::move(uri);
  }
  // A TCP proxy to the test database's server, down (refusing) until Up().
  absl::StatusOr<std::unique_ptr<test_support::TcpProxy>> ProxyDown() const {
    const size_t host_at = uri_.find("host=") + 5;
    const std::string host =
        uri_.substr(host_at, uri_.find('&', host_at) - host_at);
    absl::StatusOr<std::unique_ptr<test_support::TcpProxy>> proxy =
        test_support::TcpProxy::Start(host + "/.s.PGSQL.5432");
    if (proxy.ok()) (*proxy)->Down();
    return proxy;
  }
  // The test database's URI through `proxy`.
  std::string ThroughProxy(const test_support::TcpProxy& proxy) const {
    const size_t at = uri_.find("@/") + 2;
    return absl::StrCat("postgresql://postgres@127.0.0.1:", proxy.port(), "/",
                        uri_.substr(at, uri_.find('?') - at),
                        "?connect_timeout=2");
  }

  std::string uri_;
};

TEST_F(ScaleOutTest, EveryRequestIdSentToThreeReplicasAtOnceIsSentOnce) {
  SandboxProcess sandbox({"--latency=200ms"});
  std::vector<std::unique_ptr<GatewayProcess>> replicas =
      StartReplicas(sandbox.url(), uri_);
  constexpr int kRequestIds = 60;
  constexpr int kRounds = 3;
  std::vector<v1::CreatePayoutRequest> requests;
  for (int i = 0; i < kRequestIds; ++i) {
    requests.push_back(ValidRequest(UniqueAccount("1836")));
  }

  absl::Mutex mu;
  std::map<std::string, std::vector<absl::StatusOr<v1::Payout>>> answers;
  for (int round = 0; round < kRounds; ++round) {
    absl::BlockingCounter answered(kRequestIds * kReplicas);
    // Each request id goes to every replica at the same moment.
    for (const v1::CreatePayoutRequest& request : requests) {
      for (auto& replica : replicas) {
        replica->client().CreatePayoutAsync(
            request, kCall,
            [&, id = request.request_id()](absl::StatusOr<v1::Payout> r) {
              absl::MutexLock lock(&mu);
              answers[id].push_back(std::move(r));
              answered.DecrementCount();
            });
      }
    }
    answered.Wait();
  }

  int accepted = 0, in_progress = 0;
  for (const v1::CreatePayoutRequest& request : requests) {
    std::string payout_id;
    for (const absl::StatusOr<v1::Payout>& answer :
         answers[request.request_id()]) {
      if (answer.ok()) {
        ++accepted;
        EXPECT_EQ(answer->state(), v1::PAYOUT_STATE_ACCEPTED);
        // Every replica answers with the one payout that won the key.
        if (payout_id.empty()) payout_id = answer->payout_id();
        EXPECT_EQ(answer->payout_id(), payout_id);
      } else {
        // A replica that lost the key while the winner's call was in flight.
        ++in_progress;
        EXPECT_EQ(answer.status().code(), absl::StatusCode::kAborted)
            << answer.status();
        EXPECT_EQ(GetErrorDetails(answer.status()).reason,
                  "REQUEST_IN_PROGRESS");
      }
    }
  }
  std::cout << "three replicas: " << accepted << " answers ACCEPTED, "
            << in_progress << " REQUEST_IN_PROGRESS of "
            << kRequestIds * kReplicas * kRounds << "\n";

  // Exactly one AOPay request per request id, and every one recorded.
  const std::map<std::string, int> sent = SentPerAccount(sandbox);
  for (const v1::CreatePayoutRequest& request : requests) {
    const std::string& account = request.beneficiary().account_number();
    EXPECT_EQ(sent.count(account) ? sent.at(account) : 0, 1)
        << request.request_id();
    for (auto& replica : replicas) {
      absl::StatusOr<v1::Payout> stored =
          ByRequestId(*replica, request.request_id());
      ASSERT_TRUE(stored.ok()) << stored.status();
      EXPECT_EQ(stored->state(), v1::PAYOUT_STATE_ACCEPTED);
    }
  }
  EXPECT_EQ(sent.size(), static_cast<size_t>(kRequestIds));
  EXPECT_EQ(test_support::PgScalar(uri_, "SELECT count(*) FROM payouts"),
            absl::StrCat(kRequestIds));
}

TEST_F(ScaleOutTest, AKilledReplicaLosesOnlyItsOwnPayoutsInFlight) {
  // Answers take 2 s: at the kill, the killed replica has payouts at AOPay.
  SandboxProcess sandbox({"--latency=2s"});
  std::vector<std::unique_ptr<GatewayProcess>> replicas =
      StartReplicas(sandbox.url(), uri_);
  constexpr int kPerReplica = 40;
  std::vector<std::vector<v1::CreatePayoutRequest>> requests(kReplicas);
  std::map<std::string, int> replica_of_account;
  for (int r = 0; r < kReplicas; ++r) {
    for (int i = 0; i < kPerReplica; ++i) {
      requests[r].push_back(ValidRequest(UniqueAccount("1836")));
      replica_of_account[requests[r].back().beneficiary().account_number()] = r;
    }
  }
  absl::Mutex mu;
  std::map<std::string, absl::StatusOr<v1::Payout>> answers;
  absl::BlockingCounter answered(kPerReplica * kReplicas);
  for (int r = 0; r < kReplicas; ++r) {
    for (const v1::CreatePayoutRequest& request : requests[r]) {
      replicas[r]->client().CreatePayoutAsync(
          request, kCall,
          [&, id = request.request_id()](absl::StatusOr<v1::Payout> result) {
            absl::MutexLock lock(&mu);
            answers.emplace(id, std::move(result));
            answered.DecrementCount();
          });
    }
  }
  // Kill replica 0 once some of its payouts have reached AOPay.
  ASSERT_TRUE(sandbox.WaitForJournal(
      [&](const std::vector<JournalEntry>& journal) {
        int mine = 0;
        for (const JournalEntry& entry : journal) {
          auto it = replica_of_account.find(entry.account_number);
          if (it != replica_of_account.end() && it->second == 0) ++mine;
        }
        return mine >= 10;
      },
      absl::Seconds(30)));
  replicas[0]->process().Signal(SIGKILL);
  answered.Wait();

  GatewayProcess& survivor = *replicas[1];
  // The survivors' own payouts completed normally.
  for (int r = 1; r < kReplicas; ++r) {
    for (const v1::CreatePayoutRequest& request : requests[r]) {
      const absl::StatusOr<v1::Payout>& answer =
          answers.at(request.request_id());
      ASSERT_TRUE(answer.ok()) << answer.status();
      EXPECT_EQ(answer->state(), v1::PAYOUT_STATE_ACCEPTED);
    }
  }
  // After the lease, the killed replica's PENDING payouts are UNKNOWN.
  ASSERT_TRUE(Eventually(
      [&] {
        return test_support::PgScalar(
                   uri_, "SELECT count(*) FROM payouts WHERE state = 1") == "0";
      },
      absl::Seconds(30)))
      << "payouts still PENDING after the lease";

  // Journal against ledger, request by request.
  const std::map<std::string, int> sent = SentPerAccount(sandbox);
  int double_sends = 0, missing = 0, unknown = 0, killed_unrecorded = 0;
  for (int r = 0; r < kReplicas; ++r) {
    for (const v1::CreatePayoutRequest& request : requests[r]) {
      const std::string& account = request.beneficiary().account_number();
      const int times = sent.count(account) ? sent.at(account) : 0;
      if (times > 1) ++double_sends;
      absl::StatusOr<v1::Payout> stored =
          ByRequestId(survivor, request.request_id());
      if (!stored.ok()) {
        // Never recorded: the kill came before its intent was durable; then
        // it was never sent either.
        EXPECT_EQ(stored.status().code(), absl::StatusCode::kNotFound);
        EXPECT_EQ(r, 0);
        if (times > 0) ++missing;
        ++killed_unrecorded;
        continue;
      }
      if (stored->state() == v1::PAYOUT_STATE_UNKNOWN) {
        ++unknown;
        EXPECT_EQ(r, 0) << "a live replica's payout was recovered";
      } else {
        EXPECT_EQ(stored->state(), v1::PAYOUT_STATE_ACCEPTED);
        if (times != 1) ++missing;
      }
    }
  }
  std::cout << "replica kill: " << unknown << " of the killed replica's "
            << kPerReplica << " payouts UNKNOWN, " << killed_unrecorded
            << " never recorded; double sends: " << double_sends
            << ", missing: " << missing << "\n";
  EXPECT_EQ(double_sends, 0);
  EXPECT_EQ(missing, 0);
  EXPECT_GT(unknown, 0) << "the kill should have caught payouts in flight";
  EXPECT_EQ(test_support::PgScalar(
                uri_,
                "SELECT count(*) FROM payout_events WHERE to_state = 6 AND who "
                "LIKE 'recovery by %'"),
            absl::StrCat(unknown));

  // Retrying a recovered request id at a live replica replays UNKNOWN and
  // sends nothing.
  for (const v1::CreatePayoutRequest& request : requests[0]) {
    absl::StatusOr<v1::Payout> stored =
        ByRequestId(survivor, request.request_id());
    if (!stored.ok() || stored->state() != v1::PAYOUT_STATE_UNKNOWN) continue;
    absl::StatusOr<v1::Payout> retry =
        survivor.client().CreatePayout(request, kCall);
    EXPECT_EQ(retry.status().code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_EQ(GetErrorDetails(retry.status()).reason, "OUTCOME_UNKNOWN");
    EXPECT_LE(sandbox.PayoutsFor(request.beneficiary().account_number()), 1);
    break;
  }
}

TEST_F(ScaleOutTest, ADatabaseDownAtStartMeansNotServingAndNothingSent) {
  // A database nobody serves: the gateway starts, NOT_SERVING, refusing
  // payouts with LEDGER_UNAVAILABLE before anything is sent.
  SandboxProcess sandbox;
  const std::string dir = MakeTempDir();
  GatewayProcess gateway(sandbox.url(),
                         absl::StrCat("postgresql://postgres@/nowhere?host=",
                                      dir, "&connect_timeout=1"),
                         kReplicaFlags);
  EXPECT_EQ(CheckHealth(gateway.channel(), ""),
            grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  const v1::CreatePayoutRequest request = ValidRequest(UniqueAccount("1836"));
  absl::StatusOr<v1::Payout> refused =
      gateway.client().CreatePayout(request, kCall);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorDetails(refused.status()).reason, "LEDGER_UNAVAILABLE");
  EXPECT_EQ(sandbox.PayoutsFor(request.beneficiary().account_number()), 0);
  EXPECT_NE(gateway.Stderr().find("not reachable yet"), std::string::npos);
}

TEST_F(ScaleOutTest,
       OutcomesArrivingWhileTheDatabaseIsAwayAreWrittenWhenItReturns) {
  // The gateway reaches the database through a proxy the test controls.
  const size_t host_at = uri_.find("host=") + 5;
  const std::string host =
      uri_.substr(host_at, uri_.find('&', host_at) - host_at);
  const std::string database =
      uri_.substr(uri_.find("@/") + 2, uri_.find('?') - uri_.find("@/") - 2);
  absl::StatusOr<std::unique_ptr<test_support::TcpProxy>> proxy =
      test_support::TcpProxy::Start(host + "/.s.PGSQL.5432");
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const std::string proxied =
      absl::StrCat("postgresql://postgres@127.0.0.1:", (*proxy)->port(), "/",
                   database, "?connect_timeout=2");
  SandboxProcess sandbox({"--latency=2s"});
  GatewayProcess gateway(sandbox.url(), proxied, kReplicaFlags);
  constexpr int kPayouts = 10;
  std::vector<v1::CreatePayoutRequest> requests;
  for (int i = 0; i < kPayouts; ++i) {
    requests.push_back(ValidRequest(UniqueAccount("1836")));
  }
  absl::Mutex mu;
  std::vector<absl::StatusOr<v1::Payout>> answers;
  absl::BlockingCounter answered(kPayouts);
  for (const v1::CreatePayoutRequest& request : requests) {
    gateway.client().CreatePayoutAsync(request, kCall,
                                       [&](absl::StatusOr<v1::Payout> result) {
                                         absl::MutexLock lock(&mu);
                                         answers.push_back(std::move(result));
                                         answered.DecrementCount();
                                       });
  }
  // Every payout is at AOPay (2 s per answer); then the database goes.
  ASSERT_TRUE(AllAtAopay(sandbox, kPayouts));
  (*proxy)->Down();
  answered.Wait();
  // Told "in progress", never a false outcome.
  for (const absl::StatusOr<v1::Payout>& answer : answers) {
    EXPECT_EQ(answer.status().code(), absl::StatusCode::kAborted)
        << answer.status();
    EXPECT_EQ(GetErrorDetails(answer.status()).reason, "REQUEST_IN_PROGRESS");
  }
  EXPECT_TRUE(Eventually(
      [&] {
        return CheckHealth(gateway.channel(), "") ==
               grpc::health::v1::HealthCheckResponse::NOT_SERVING;
      },
      absl::Seconds(10)));
  EXPECT_NE(HttpGet(gateway.metrics_address(), "/metrics")
                .find(absl::StrCat("payout_outcomes_unrecorded ", kPayouts)),
            std::string::npos);

  (*proxy)->Up();
  // Written once the database is back; nothing was sent again.
  ASSERT_TRUE(Eventually(
      [&] {
        return test_support::PgScalar(
                   uri_, "SELECT count(*) FROM payouts WHERE state = 2") ==
               absl::StrCat(kPayouts);
      },
      absl::Seconds(30)));
  EXPECT_TRUE(Eventually(
      [&] {
        return CheckHealth(gateway.channel(), "") ==
               grpc::health::v1::HealthCheckResponse::SERVING;
      },
      absl::Seconds(10)));
  for (const v1::CreatePayoutRequest& request : requests) {
    EXPECT_EQ(sandbox.PayoutsFor(request.beneficiary().account_number()), 1);
    absl::StatusOr<v1::Payout> replay =
        gateway.client().CreatePayout(request, kCall);
    ASSERT_TRUE(replay.ok()) << replay.status();
    EXPECT_EQ(replay->state(), v1::PAYOUT_STATE_ACCEPTED);
  }
}

// The database stays away from replica A for longer than the lease, so
// replica B turns A's payouts UNKNOWN; AOPay's answers, which A kept in
// memory, are still recorded when A gets the database back.
TEST_F(ScaleOutTest, AnswersKeptPastTheLeaseAreRecordedFromUnknown) {
  absl::StatusOr<std::unique_ptr<test_support::TcpProxy>> proxy = ProxyDown();
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  (*proxy)->Up();
  SandboxProcess sandbox({"--latency=2s"});
  GatewayProcess a(sandbox.url(), ThroughProxy(**proxy), kReplicaFlags);
  GatewayProcess b(sandbox.url(), uri_, kReplicaFlags);
  constexpr int kPayouts = 5;
  std::vector<v1::CreatePayoutRequest> requests;
  for (int i = 0; i < kPayouts; ++i) {
    requests.push_back(ValidRequest(UniqueAccount("1836")));
  }
  absl::BlockingCounter answered(kPayouts);
  for (const v1::CreatePayoutRequest& request : requests) {
    a.client().CreatePayoutAsync(
        request, kCall,
        [&](absl::StatusOr<v1::Payout>) { answered.DecrementCount(); });
  }
  ASSERT_TRUE(AllAtAopay(sandbox, kPayouts));
  (*proxy)->Down();
  answered.Wait();
  // B ends A's lease: every payout UNKNOWN, without a transaction id.
  ASSERT_TRUE(Eventually(
      [&] {
        return test_support::PgScalar(
                   uri_,
                   "SELECT count(*) FROM payouts WHERE state = 6 AND "
                   "transaction_id = ''") == absl::StrCat(kPayouts);
      },
      absl::Seconds(30)));

  (*proxy)->Up();
  ASSERT_TRUE(Eventually(
      [&] {
        return test_support::PgScalar(
                   uri_,
                   "SELECT count(*) FROM payouts WHERE state = 2 AND "
                   "transaction_id <> ''") == absl::StrCat(kPayouts);
      },
      absl::Seconds(30)))
      << "AOPay's answers were dropped: "
      << test_support::PgScalar(
             uri_, "SELECT string_agg(state::text, ',') FROM payouts");
  for (const v1::CreatePayoutRequest& request : requests) {
    EXPECT_EQ(sandbox.PayoutsFor(request.beneficiary().account_number()), 1);
    absl::StatusOr<v1::Payout> replay = b.client().CreatePayout(request, kCall);
    ASSERT_TRUE(replay.ok()) << replay.status();
    EXPECT_EQ(replay->state(), v1::PAYOUT_STATE_ACCEPTED);
    EXPECT_FALSE(replay->transaction_id().empty());
  }
}

TEST_F(ScaleOutTest, AMigrationThatFailsLaterStopsThatReplicaOnly) {
  // A replica starts while its database is away; when the database comes,
  // its schema is newer than the replica's: that replica exits (status 3)
  // without having sent anything, and a replica already serving goes on.
  SandboxProcess sandbox;
  GatewayProcess serving(sandbox.url(), uri_, kReplicaFlags);
  ASSERT_EQ(test_support::PgScalar(uri_,
                                   "INSERT INTO ledger_schema (version) "
                                   "VALUES (99) RETURNING 'ok'"),
            "ok");
  absl::StatusOr<std::unique_ptr<test_support::TcpProxy>> proxy = ProxyDown();
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  GatewayProcess late(sandbox.url(), ThroughProxy(**proxy), kReplicaFlags);
  EXPECT_EQ(CheckHealth(late.channel(), ""),
            grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  (*proxy)->Up();
  const int status = late.process().Wait();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_NE(late.Stderr().find("newer than this gateway"), std::string::npos);

  const v1::CreatePayoutRequest request = ValidRequest(UniqueAccount("1836"));
  absl::StatusOr<v1::Payout> payout =
      serving.client().CreatePayout(request, kCall);
  ASSERT_TRUE(payout.ok()) << payout.status();
  EXPECT_EQ(payout->state(), v1::PAYOUT_STATE_ACCEPTED);
  EXPECT_EQ(sandbox.Journal().size(), 1u);
}

// The `payout-watch-cursor` header of a watch after `after` ("" from now
// on), or nullopt when the stream sent none; `status` gets how it ended
// (cancelled by the caller once the header came).
std::optional<std::string> WatchHeader(GatewayProcess& gateway,
                                       const std::string& after,
                                       grpc::Status* status) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  v1::WatchPayoutsRequest request;
  request.set_after_cursor(after);
  auto reader = v1::PayoutService::NewStub(gateway.channel())
                    ->WatchPayouts(&context, request);
  reader->WaitForInitialMetadata();
  const auto& headers = context.GetServerInitialMetadata();
  const auto found = headers.find(kWatchCursorHeader);
  std::optional<std::string> cursor;
  if (found != headers.end()) {
    cursor.emplace(found->second.data(), found->second.size());
  }
  // A stream that named its cursor goes on for ever; one that did not ends
  // by itself.
  if (cursor.has_value()) context.TryCancel();
  *status = reader->Finish();
  return cursor;
}

// A watch the ledger cannot serve (its database out of reach) ends
// UNAVAILABLE without naming a cursor to resume from; once the database is
// back, a watch names where it starts.
TEST_F(ScaleOutTest, AWatchTheLedgerCannotServeNamesNoCursor) {
  SandboxProcess sandbox;
  absl::StatusOr<std::unique_ptr<test_support::TcpProxy>> proxy = ProxyDown();
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  GatewayProcess gateway(sandbox.url(), ThroughProxy(**proxy), kReplicaFlags);
  grpc::Status status;
  EXPECT_EQ(WatchHeader(gateway, "", &status), std::nullopt);
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE) << status.error_message();
  (*proxy)->Up();
  ASSERT_TRUE(Eventually(
      [&] {
        return CheckHealth(gateway.channel(), "") ==
               grpc::health::v1::HealthCheckResponse::SERVING;
      },
      absl::Seconds(30)));
  const std::optional<std::string> cursor = WatchHeader(gateway, "", &status);
  ASSERT_TRUE(cursor.has_value());
  EXPECT_EQ(ParseEventCursor(*cursor), 0);
  EXPECT_EQ(status.error_code(), grpc::CANCELLED) << status.error_message();
}

// (position, payout id, new state) of every event the ledger has given a
// watch position, in position order: the reference a watcher must
// reproduce.
using LedgerEvent = std::tuple<int64_t, std::string, int>;
std::vector<LedgerEvent> PositionedEvents(const std::string& uri) {
  std::vector<LedgerEvent> events;
  absl::StatusOr<std::vector<std::vector<std::string>>> rows =
      test_support::PgQuery(
          uri,
          "SELECT ep.position, e.payout_id, e.to_state FROM event_positions "
          "ep JOIN payout_events e ON e.id = ep.event_id ORDER BY "
          "ep.position");
  EXPECT_TRUE(rows.ok()) << rows.status();
  if (!rows.ok()) return events;
  for (const std::vector<std::string>& row : *rows) {
    events.emplace_back(std::stoll(row[0]), row[1], std::stoi(row[2]));
  }
  return events;
}

// Payouts made on two replicas at once (their commits interleave), a third
// replica SIGKILLed and restarted meanwhile, and a watcher that drops its
// stream after a few events (or loses it with the killed replica) and
// resumes with its cursor on any replica: it sees every event the ledger
// recorded, once, in position order, and each payout's changes in the
// order they happened.
TEST_F(ScaleOutTest, AWatcherMovingBetweenReplicasMissesAndRepeatsNothing) {
  SandboxProcess sandbox({"--settle=0s"});
  std::vector<std::unique_ptr<GatewayProcess>> replicas =
      StartReplicas(sandbox.url(), uri_);
  const uint32_t seed = static_cast<uint32_t>(absl::ToUnixNanos(absl::Now()));
  SCOPED_TRACE(absl::StrCat("seed ", seed));

  absl::Mutex mu;
  std::vector<LedgerEvent> seen;           // guarded by mu
  grpc::ClientContext* current = nullptr;  // guarded by mu
  bool stop = false;                       // guarded by mu
  // The channel of each replica; the killed one's is replaced.
  std::vector<std::shared_ptr<grpc::Channel>> channels;  // guarded by mu
  for (const std::unique_ptr<GatewayProcess>& replica : replicas) {
    channels.push_back(replica->channel());
  }
  int streams = 0;  // watcher thread only
  std::thread watcher([&] {
    std::string cursor = EventCursor(0);
    std::mt19937 own(seed);
    while (true) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
      std::shared_ptr<grpc::Channel> channel;
      {
        absl::MutexLock lock(&mu);
        if (stop) return;
        current = &context;
        channel = channels[own() % kReplicas];
      }
      ++streams;
      v1::WatchPayoutsRequest request;
      request.set_after_cursor(cursor);
      auto reader =
          v1::PayoutService::NewStub(channel)->WatchPayouts(&context, request);
      const int quota = 1 + static_cast<int>(own() % 5);
      v1::PayoutEvent event;
      for (int read = 0; read < quota && reader->Read(&event); ++read) {
        const std::optional<int64_t> position =
            ParseEventCursor(event.cursor());
        absl::MutexLock lock(&mu);
        seen.emplace_back(position.value_or(-1), event.payout().payout_id(),
                          static_cast<int>(event.payout().state()));
        cursor = event.cursor();
      }
      context.TryCancel();
      const grpc::Status status = reader->Finish();
      // UNAVAILABLE: the killed replica (or its port before the restart).
      EXPECT_TRUE(status.ok() || status.error_code() == grpc::CANCELLED ||
                  status.error_code() == grpc::DEADLINE_EXCEEDED ||
                  status.error_code() == grpc::UNAVAILABLE)
          << status.error_code() << " " << status.error_message();
      absl::MutexLock lock(&mu);
      current = nullptr;
    }
  });

  constexpr int kMakers = 2;  // replicas 0 and 1; 2 is killed
  constexpr int kPerMaker = 12;
  std::vector<std::thread> makers;
  for (int r = 0; r < kMakers; ++r) {
    makers.emplace_back([&, r] {
      for (int i = 0; i < kPerMaker; ++i) {
        absl::StatusOr<v1::Payout> payout = replicas[r]->client().CreatePayout(
            ValidRequest(UniqueAccount("1836")), kCall);
        ASSERT_TRUE(payout.ok()) << payout.status();
        if (i % 2 == 0) {  // some settle, on the other replica
          v1::RefreshPayoutRequest refresh;
          refresh.set_payout_id(payout->payout_id());
          ASSERT_TRUE(replicas[(r + 1) % kMakers]
                          ->client()
                          .RefreshPayout(refresh, kCall)
                          .ok());
        }
      }
    });
  }
  // Once the watcher is under way, replica 2 dies and comes back.
  EXPECT_TRUE(Eventually(
      [&] {
        absl::MutexLock lock(&mu);
        return seen.size() >= 6;
      },
      absl::Seconds(30)));
  replicas[2]->process().Signal(SIGKILL);
  replicas[2] =
      std::make_unique<GatewayProcess>(sandbox.url(), uri_, kReplicaFlags);
  {
    absl::MutexLock lock(&mu);
    channels[2] = replicas[2]->channel();
  }
  for (std::thread& maker : makers) maker.join();
  const int recorded = std::stoi(
      test_support::PgScalar(uri_, "SELECT count(*) FROM payout_events"));
  // Creation and acceptance of each payout, and settlement of half of them.
  EXPECT_EQ(recorded, kMakers * kPerMaker * 5 / 2);
  EXPECT_TRUE(Eventually(
      [&] {
        absl::MutexLock lock(&mu);
        return static_cast<int>(seen.size()) >= recorded;
      },
      absl::Seconds(30)));
  {
    absl::MutexLock lock(&mu);
    stop = true;
    if (current != nullptr) current->TryCancel();
  }
  watcher.join();
  const std::vector<LedgerEvent> expected = PositionedEvents(uri_);
  EXPECT_EQ(static_cast<int>(expected.size()), recorded);
  EXPECT_EQ(seen, expected);
  EXPECT_GT(streams, kReplicas);
  // Each payout's changes in the order they happened.
  std::map<std::string, std::vector<int>> states;
  for (const auto& [position, payout_id, state] : seen) {
    states[payout_id].push_back(state);
  }
  for (const auto& [payout_id, order] : states) {
    EXPECT_TRUE(std::is_sorted(order.begin(), order.end())) << payout_id;
  }
}

}  // namespace
}  // namespace aopay::testing
