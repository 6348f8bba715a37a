// WatchPayouts over the real gateway and sandbox: every recorded change, in
// order, once; resuming from a cursor across a SIGKILL and a restart misses
// nothing and repeats nothing; bad cursors are refused.

#include <sys/wait.h>

#include <atomic>
#include <csignal>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aopay/payout/v1/payout.grpc.pb.h"
#include "common/errors.h"
#include "common/ids.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace aopay::testing {
namespace {

constexpr absl::Duration kCall = absl::Seconds(30);

// Reads `count` events from a watch after `after` ("" from now on); fewer
// when the stream ends or the deadline passes.
std::vector<v1::PayoutEvent> Watch(GatewayProcess& gateway,
                                   const std::string& after, size_t count,
                                   grpc::Status* status = nullptr) {
  auto stub = v1::PayoutService::NewStub(gateway.channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  v1::WatchPayoutsRequest request;
  request.set_after_cursor(after);
  std::unique_ptr<grpc::ClientReader<v1::PayoutEvent>> reader =
      stub->WatchPayouts(&context, request);
  std::vector<v1::PayoutEvent> events;
  v1::PayoutEvent event;
  while (events.size() < count && reader->Read(&event)) events.push_back(event);
  // Enough read: the watch would go on for ever.
  if (events.size() == count) context.TryCancel();
  grpc::Status finished = reader->Finish();
  if (status != nullptr) *status = finished;
  return events;
}

std::vector<v1::CreatePayoutRequest> CreateSome(GatewayProcess& gateway,
                                                int count) {
  std::vector<v1::CreatePayoutRequest> requests;
  for (int i = 0; i < count; ++i) {
    requests.push_back(ValidRequest(UniqueAccount()));
    absl::StatusOr<v1::Payout> payout =
        gateway.client().CreatePayout(requests.back(), kCall);
    EXPECT_TRUE(payout.ok()) << payout.status();
  }
  return requests;
}

TEST(WatchTest, EveryChangeComesOnceInOrderWithIncreasingCursors) {
  SandboxProcess sandbox({"--settle=0s"});
  const std::string dir = MakeTempDir();
  GatewayProcess gateway(sandbox.url(), dir + "/ledger.db");
  const std::vector<v1::CreatePayoutRequest> requests = CreateSome(gateway, 4);
  // Settled by a refresh: PENDING, ACCEPTED, SUCCEEDED for each.
  for (const v1::CreatePayoutRequest& request : requests) {
    v1::GetPayoutRequest get;
    get.set_request_id(request.request_id());
    absl::StatusOr<v1::Payout> payout = gateway.client().GetPayout(get, kCall);
    ASSERT_TRUE(payout.ok());
    v1::RefreshPayoutRequest refresh;
    refresh.set_payout_id(payout->payout_id());
    ASSERT_TRUE(gateway.client().RefreshPayout(refresh, kCall).ok());
  }
  const std::vector<v1::PayoutEvent> events =
      Watch(gateway, EventCursor(0), 12);
  ASSERT_EQ(events.size(), 12u);
  std::map<std::string, std::vector<v1::PayoutState>> by_payout;
  std::optional<int64_t> previous;
  for (const v1::PayoutEvent& event : events) {
    const std::optional<int64_t> position = ParseEventCursor(event.cursor());
    ASSERT_TRUE(position.has_value()) << event.cursor();
    if (previous) {
      EXPECT_GT(*position, *previous);
    }
    previous = position;
    by_payout[event.payout().payout_id()].push_back(event.payout().state());
    EXPECT_TRUE(event.has_event_time());
  }
  ASSERT_EQ(by_payout.size(), 4u);
  for (const auto& [id, states] : by_payout) {
    EXPECT_EQ(states, (std::vector<v1::PayoutState>{
                          v1::PAYOUT_STATE_PENDING, v1::PAYOUT_STATE_ACCEPTED,
                          v1::PAYOUT_STATE_SUCCEEDED}))
        << id;
  }
  // A live event reaches a watcher that waits from the last cursor.
  std::vector<v1::PayoutEvent> live;
  std::thread watcher(
      [&] { live = Watch(gateway, events.back().cursor(), 2); });
  CreateSome(gateway, 1);
  watcher.join();
  ASSERT_EQ(live.size(), 2u);
  EXPECT_EQ(live[0].previous_state(), v1::PAYOUT_STATE_UNSPECIFIED);
  EXPECT_EQ(live[0].payout().state(), v1::PAYOUT_STATE_PENDING);
  EXPECT_EQ(live[1].previous_state(), v1::PAYOUT_STATE_PENDING);
  EXPECT_EQ(live[1].payout().state(), v1::PAYOUT_STATE_ACCEPTED);
}

TEST(WatchTest, ResumingFromACursorAcrossAKillMissesAndRepeatsNothing) {
  SandboxProcess sandbox({"--settle=0s"});
  const std::string dir = MakeTempDir();
  const std::string ledger = dir + "/ledger.db";
  std::string resume_at;
  size_t seen_before = 0;
  {
    GatewayProcess gateway(sandbox.url(), ledger);
    CreateSome(gateway, 3);
    const std::vector<v1::PayoutEvent> first =
        Watch(gateway, EventCursor(0), 4);
    ASSERT_EQ(first.size(), 4u);
    resume_at = first.back().cursor();
    seen_before = first.size();
    CreateSome(gateway, 3);
    gateway.process().Signal(SIGKILL);
  }
  GatewayProcess restarted(sandbox.url(), ledger);
  // Everything the ledger holds, from the start, is the reference.
  const std::vector<v1::PayoutEvent> all = Watch(restarted, EventCursor(0), 12);
  ASSERT_EQ(all.size(), 12u);
  const std::vector<v1::PayoutEvent> resumed =
      Watch(restarted, resume_at, 12 - seen_before);
  ASSERT_EQ(resumed.size(), 12 - seen_before);
  for (size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_EQ(resumed[i].cursor(), all[seen_before + i].cursor()) << i;
    EXPECT_EQ(resumed[i].payout().payout_id(),
              all[seen_before + i].payout().payout_id());
  }
}

// A watch opened without a cursor names, in its initial metadata, the cursor
// it starts from: a watcher that loses the stream before its first event
// resumes from there and misses nothing.
// Opens a watch after `after` ("" from now on) and returns the cursor its
// header names ("" when there is none), then cancels it.
std::string AnnouncedCursor(GatewayProcess& gateway, const std::string& after) {
  auto stub = v1::PayoutService::NewStub(gateway.channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  v1::WatchPayoutsRequest request;
  request.set_after_cursor(after);
  std::unique_ptr<grpc::ClientReader<v1::PayoutEvent>> reader =
      stub->WatchPayouts(&context, request);
  reader->WaitForInitialMetadata();
  const auto& headers = context.GetServerInitialMetadata();
  const auto found = headers.find(kWatchCursorHeader);
  std::string cursor;
  if (found != headers.end()) {
    cursor.assign(found->second.data(), found->second.size());
  }
  context.TryCancel();
  reader->Finish().IgnoreError();
  return cursor;
}

TEST(WatchTest, AWatchWithoutACursorNamesWhereItStarts) {
  SandboxProcess sandbox({"--settle=0s"});
  const std::string dir = MakeTempDir();
  GatewayProcess gateway(sandbox.url(), dir + "/ledger.db");
  CreateSome(gateway, 2);  // events before the watch: not to be seen again
  const std::string start = AnnouncedCursor(gateway, "");
  ASSERT_TRUE(ParseEventCursor(start).has_value())
      << "no usable " << kWatchCursorHeader << ": '" << start << "'";
  // The stream is gone before any event; the next payout's events follow
  // the announced cursor, and nothing from before the watch does.
  const std::vector<v1::CreatePayoutRequest> later = CreateSome(gateway, 1);
  const std::vector<v1::PayoutEvent> resumed = Watch(gateway, start, 2);
  ASSERT_EQ(resumed.size(), 2u);
  for (const v1::PayoutEvent& event : resumed) {
    EXPECT_EQ(event.payout().request_id(), later[0].request_id());
  }
  EXPECT_EQ(resumed[0].previous_state(), v1::PAYOUT_STATE_UNSPECIFIED);
  // Given a cursor, the watch announces that one.
  EXPECT_EQ(AnnouncedCursor(gateway, resumed[1].cursor()), resumed[1].cursor());
}

// A gateway told to stop ends its watches at once with UNAVAILABLE /
// SHUTTING_DOWN (the watcher resumes elsewhere or after the restart); a
// watch never holds a shutdown for its grace period.
TEST(WatchTest, ShutdownEndsWatchesAsShuttingDown) {
  SandboxProcess sandbox;
  const std::string dir = MakeTempDir();
  // A grace far longer than the watch's deadline: a watch that held the
  // shutdown would end DEADLINE_EXCEEDED instead.
  GatewayProcess gateway(sandbox.url(), dir + "/ledger.db",
                         {"--shutdown_grace=120s"});
  auto stub = v1::PayoutService::NewStub(gateway.channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  std::unique_ptr<grpc::ClientReader<v1::PayoutEvent>> reader =
      stub->WatchPayouts(&context, v1::WatchPayoutsRequest());
  reader->WaitForInitialMetadata();
  int exit_status = -1;
  std::thread stop([&] { exit_status = gateway.process().Signal(SIGTERM); });
  v1::PayoutEvent event;
  while (reader->Read(&event)) {
  }
  const absl::Status status = FromGrpcStatus(reader->Finish());
  stop.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_EQ(GetErrorDetails(status).reason, reason::kShuttingDown) << status;
  ASSERT_TRUE(WIFEXITED(exit_status));
  EXPECT_EQ(WEXITSTATUS(exit_status), 0);
}

// Watchers that come and go while events flow (each reads a few events, or
// none, and cancels) and a SIGTERM that ends the watches still open: the
// gateway exits cleanly. A watch's wait, wake, cancel and end race each
// other here; in the sanitizer builds a reactor used after it was deleted
// fails the test (the harness reads the gateway's stderr).
TEST(WatchTest, WatchersComingAndGoingAndAShutdownLeaveTheGatewayClean) {
  SandboxProcess sandbox({"--settle=0s"});
  const std::string dir = MakeTempDir();
  GatewayProcess gateway(sandbox.url(), dir + "/ledger.db");
  auto stub = v1::PayoutService::NewStub(gateway.channel());
  std::atomic<bool> stop{false};
  std::atomic<int> streams{0};
  std::vector<std::thread> watchers;
  for (int w = 0; w < 12; ++w) {
    watchers.emplace_back([&, w] {
      std::mt19937 own(w);
      while (!stop.load()) {
        grpc::ClientContext context;
        context.set_deadline(
            absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
        v1::WatchPayoutsRequest request;
        if (own() % 2 == 0) request.set_after_cursor(EventCursor(0));
        auto reader = stub->WatchPayouts(&context, request);
        ++streams;
        v1::PayoutEvent event;
        const int quota = static_cast<int>(own() % 4);
        for (int read = 0; read < quota && reader->Read(&event); ++read) {
        }
        context.TryCancel();
        reader->Finish().IgnoreError();
      }
    });
  }
  CreateSome(gateway, 60);
  const int exit_status = gateway.process().Signal(SIGTERM);
  stop = true;
  for (std::thread& watcher : watchers) watcher.join();
  EXPECT_GT(streams.load(), 12);
  ASSERT_TRUE(WIFEXITED(exit_status)) << exit_status;
  EXPECT_EQ(WEXITSTATUS(exit_status), 0);
}

// (event id, payout id, new state) of every event in the ledger file, in
// order: the reference a watcher must reproduce.
using LedgerEvent = std::tuple<int64_t, std::string, int>;
std::vector<LedgerEvent> LedgerEvents(const std::string& ledger_path) {
  std::vector<LedgerEvent> events;
  for (const std::vector<std::string>& row : QueryLedgerFile(
           ledger_path,
           "SELECT id, payout_id, to_state FROM payout_events ORDER BY id")) {
    events.emplace_back(std::stoll(row[0]), row[1], std::stoi(row[2]));
  }
  return events;
}

// A watcher that drops its stream after a random number of events (and
// whenever the gateway dies under it) and comes back with its last cursor,
// while payouts are made and the gateway is SIGKILLed and restarted twice:
// it sees exactly the ledger's events, each once, in order.
TEST(WatchTest, ReconnectingAtRandomMomentsAcrossKillsMissesAndRepeatsNothing) {
  SandboxProcess sandbox({"--settle=0s"});
  const std::string dir = MakeTempDir();
  const std::string ledger = dir + "/ledger.db";
  auto gateway = std::make_unique<GatewayProcess>(sandbox.url(), ledger);
  const std::string address = gateway->address();
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  auto stub = v1::PayoutService::NewStub(grpc::CreateCustomChannel(
      address, grpc::InsecureChannelCredentials(), args));
  const uint32_t seed = static_cast<uint32_t>(absl::ToUnixNanos(absl::Now()));
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937 random(seed);

  absl::Mutex mu;
  std::vector<LedgerEvent> seen;           // guarded by mu
  grpc::ClientContext* current = nullptr;  // guarded by mu
  bool stop = false;                       // guarded by mu
  int streams = 0;                         // watcher thread only
  std::thread watcher([&] {
    std::string cursor = EventCursor(0);
    std::uniform_int_distribution<int> take(1, 5);
    std::mt19937 own(seed + 1);
    while (true) {
      grpc::ClientContext context;
      // Waits for the gateway while it is down instead of failing at once.
      context.set_wait_for_ready(true);
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
      {
        absl::MutexLock lock(&mu);
        if (stop) return;
        current = &context;
      }
      ++streams;
      v1::WatchPayoutsRequest request;
      request.set_after_cursor(cursor);
      auto reader = stub->WatchPayouts(&context, request);
      const int quota = take(own);
      v1::PayoutEvent event;
      for (int read = 0; read < quota && reader->Read(&event); ++read) {
        const std::optional<int64_t> id = ParseEventCursor(event.cursor());
        absl::MutexLock lock(&mu);
        seen.emplace_back(id.value_or(-1), event.payout().payout_id(),
                          static_cast<int>(event.payout().state()));
        cursor = event.cursor();
      }
      context.TryCancel();
      reader->Finish().IgnoreError();
      absl::MutexLock lock(&mu);
      current = nullptr;
    }
  });

  auto make_payouts = [&](int count) {
    for (int i = 0; i < count; ++i) {
      v1::CreatePayoutRequest request = ValidRequest(UniqueAccount());
      absl::StatusOr<v1::Payout> payout =
          gateway->client().CreatePayout(request, kCall);
      ASSERT_TRUE(payout.ok()) << payout.status();
      // Some settle (ACCEPTED -> SUCCEEDED) and some do not.
      if (random() % 2 == 0) {
        v1::RefreshPayoutRequest refresh;
        refresh.set_payout_id(payout->payout_id());
        ASSERT_TRUE(gateway->client().RefreshPayout(refresh, kCall).ok());
      }
    }
  };
  for (int round = 0; round < 3; ++round) {
    make_payouts(4 + static_cast<int>(random() % 4));
    if (round < 2) {
      gateway->process().Signal(SIGKILL);
      gateway.reset();
      gateway = std::make_unique<GatewayProcess>(
          sandbox.url(), ledger,
          std::vector<std::string>{"--listen=" + address});
    }
  }
  const std::vector<LedgerEvent> expected = LedgerEvents(ledger);
  ASSERT_FALSE(expected.empty());
  EXPECT_TRUE(Eventually(
      [&] {
        absl::MutexLock lock(&mu);
        return seen.size() >= expected.size();
      },
      absl::Seconds(30)));
  {
    absl::MutexLock lock(&mu);
    stop = true;
    if (current != nullptr) current->TryCancel();
  }
  watcher.join();
  EXPECT_EQ(seen, expected);
  EXPECT_GT(streams, 3);
}

TEST(WatchTest, ABadCursorOrStateIsInvalid) {
  SandboxProcess sandbox;
  const std::string dir = MakeTempDir();
  GatewayProcess gateway(sandbox.url(), dir + "/ledger.db");
  grpc::Status status;
  Watch(gateway, "not-a-cursor", 1, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A cursor the gateway made is taken.
  CreateSome(gateway, 1);
  EXPECT_EQ(Watch(gateway, EventCursor(0), 1, &status).size(), 1u);
}

}  // namespace
}  // namespace aopay::testing
