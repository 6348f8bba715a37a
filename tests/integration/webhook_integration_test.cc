// Webhooks over the real gateway, its built-in sandbox and a receiver on
// loopback: every recorded event arrives at least once, signed, in order per
// payout, through a receiver that fails and redirects; an event not yet
// delivered when the gateway is SIGKILLed is delivered after its restart;
// replicas on one PostgreSQL ledger deliver every replica's events.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/ids.h"
#include "common/webhook_signature.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "rapidjson/document.h"
#include "tests/integration/harness.h"
#include "tests/support/test_postgres.h"

namespace aopay::testing {
namespace {

constexpr absl::Duration kCall = absl::Seconds(30);
constexpr char kSecret[] = "a-webhook-secret-for-tests";

struct Delivery {
  std::string event_id;
  std::string payout_id;
  std::string state;
  int answered = 0;   // the HTTP status the receiver gave
  bool late = false;  // given after the receiver's `late` delay
};

// An HTTP receiver on 127.0.0.1, port 0 (or the port given). Answers 500 to
// every third request and a redirect to every fifth, 200 otherwise; with a
// `late` delay, the second request's 200 comes only after it (a slow
// receiver, whose answer may come after the gateway stopped waiting).
// Checks every signature and body as a real receiver would.
class Receiver {
 public:
  explicit Receiver(int port = 0, absl::Duration late = absl::ZeroDuration()) {
    // One worker, one request a connection: libcpp-httplib is not built
    // for ThreadSanitizer, and state it shares between its workers (built
    // on first use) is reported as a race when two workers serve requests.
    server_.new_task_queue = [] { return new httplib::ThreadPool(1); };
    server_.set_keep_alive_max_count(1);
    server_.Post("/hooks", [this, late](const httplib::Request& request,
                                        httplib::Response& response) {
      if (Answer(request, response, late)) {
        // A slow peer, not a wait for anything: the answer goes out when
        // the delay is over, whoever still listens.
        absl::SleepFor(late);
      }
    });
    server_.Post("/elsewhere",
                 [this](const httplib::Request&, httplib::Response& response) {
                   absl::MutexLock lock(&mu_);
                   bad_.push_back("a redirect was followed");
                   response.status = 200;
                 });
    port_ = port == 0 ? server_.bind_to_any_port("127.0.0.1")
                      : (server_.bind_to_port("127.0.0.1", port) ? port : -1);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() before the loop runs would be lost: wait until it runs.
    EXPECT_TRUE(
        Eventually([this] { return server_.is_running(); }, absl::Seconds(10)));
  }
  ~Receiver() { Stop(); }
  void Stop() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }
  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/hooks";
  }
  std::vector<Delivery> deliveries() const {
    absl::MutexLock lock(&mu_);
    return deliveries_;
  }
  std::vector<std::string> bad() const {
    absl::MutexLock lock(&mu_);
    return bad_;
  }
  // Event ids answered 2xx.
  std::set<std::string> Delivered() const {
    std::set<std::string> ids;
    for (const Delivery& d : deliveries()) {
      if (d.answered == 200) ids.insert(d.event_id);
    }
    return ids;
  }

 private:
  // Records and answers one delivery; true when the answer is to be late.
  bool Answer(const httplib::Request& request, httplib::Response& response,
              absl::Duration late) {
    absl::MutexLock lock(&mu_);
    const int n = ++requests_;
    Delivery delivery;
    delivery.event_id = request.get_header_value("Payout-Event-Id");
    const absl::Status verified =
        VerifyWebhook(kSecret, request.get_header_value("Payout-Signature"),
                      request.body, absl::Now());
    if (!verified.ok()) bad_.push_back(std::string(verified.message()));
    rapidjson::Document body;
    body.Parse(request.body.c_str(), request.body.size());
    if (body.HasParseError() || !body.HasMember("cursor") ||
        body["cursor"].GetString() != delivery.event_id) {
      bad_.push_back("a body whose cursor is not its Payout-Event-Id");
    } else {
      delivery.payout_id = body["payout"]["payoutId"].GetString();
      delivery.state = body["payout"]["state"].GetString();
    }
    if (n % 3 == 0) {
      response.status = 500;
    } else if (n % 5 == 1) {
      response.status = 302;
      response.set_header("Location", "/elsewhere");
    } else {
      response.status = 200;
    }
    delivery.answered = response.status;
    delivery.late = late > absl::ZeroDuration() && n == 2;  // a 200
    deliveries_.push_back(delivery);
    return delivery.late;
  }

  httplib::Server server_;
  int port_ = -1;
  std::thread thread_;
  mutable absl::Mutex mu_;
  int requests_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Delivery> deliveries_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> bad_ ABSL_GUARDED_BY(mu_);
};

// The payout of each event in the ledger file, in commit order.
std::vector<std::string> LedgerEventPayouts(const std::string& path) {
  std::vector<std::string> payouts;
  for (const std::vector<std::string>& row : QueryLedgerFile(
           path, "SELECT payout_id FROM payout_events ORDER BY id")) {
    payouts.push_back(row[0]);
  }
  return payouts;
}

// A port nothing listens on: bound on 127.0.0.1 (port 0) and closed.
int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = -1;
  if (fd >= 0 &&
      bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  if (fd >= 0) close(fd);
  return port;
}

// The value of the metric line that starts with `series` ("name{labels}"
// or "name"), -1 when there is none.
double Metric(const GatewayProcess& gateway, const std::string& series) {
  const std::string metrics = HttpGet(gateway.metrics_address(), "/metrics");
  size_t at = 0;
  while ((at = metrics.find(series + " ", at)) != std::string::npos) {
    if (at == 0 || metrics[at - 1] == '\n') {
      return std::stod(metrics.substr(at + series.size() + 1));
    }
    at += series.size();
  }
  return -1;
}

bool WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  return static_cast<bool>(out);
}

std::string WriteSecret(const std::string& dir) {
  const std::string path = dir + "/webhook.secret";
  EXPECT_TRUE(WriteFile(path, kSecret));
  return "--webhook_secret=@" + path;
}

std::vector<std::string> WebhookFlags(const std::string& dir,
                                      const Receiver& receiver) {
  return {"--webhook_url=" + receiver.url(), WriteSecret(dir)};
}

// Deliveries of payouts each created (PENDING) and ACCEPTED, whose ledger
// events name `ledger_events` (one payout id an event): every payout's
// events delivered, in order; failed and redirected attempts were tried
// again.
void ExpectEveryEventInOrderPerPayout(
    const std::vector<Delivery>& deliveries,
    const std::vector<std::string>& ledger_events) {
  std::map<std::string, int> per_payout;
  for (const std::string& payout_id : ledger_events) ++per_payout[payout_id];

  // Per payout: nothing after a 2xx-answered event is an earlier event, and
  // the states come in the order they happened. Failed attempts were tried
  // again (there were some of each kind).
  std::map<std::string, std::vector<std::string>> accepted_states;
  int failed = 0;
  int redirected = 0;
  for (const Delivery& d : deliveries) {
    if (d.answered == 500) ++failed;
    if (d.answered == 302) ++redirected;
    if (d.answered == 200) accepted_states[d.payout_id].push_back(d.state);
  }
  EXPECT_GT(failed, 0);
  EXPECT_GT(redirected, 0);
  ASSERT_EQ(accepted_states.size(), per_payout.size());
  int duplicates = 0;
  for (const auto& [payout_id, states] : accepted_states) {
    EXPECT_EQ(per_payout[payout_id], 2);
    // At least once: a repeat is allowed, going back is not.
    ASSERT_GE(states.size(), 2u) << payout_id;
    EXPECT_EQ(states.front(), "PAYOUT_STATE_PENDING") << payout_id;
    EXPECT_EQ(states.back(), "PAYOUT_STATE_ACCEPTED") << payout_id;
    for (size_t i = 1; i < states.size(); ++i) {
      EXPECT_FALSE(states[i] == "PAYOUT_STATE_PENDING" &&
                   states[i - 1] == "PAYOUT_STATE_ACCEPTED")
          << payout_id;
    }
    duplicates += static_cast<int>(states.size()) - 2;
  }
  // Repeats come only from answers the gateway did not get (none here but
  // a re-sent request on a dying connection): a few at most.
  EXPECT_LE(duplicates, 2);
}

TEST(WebhookTest, EveryEventArrivesSignedInOrderThroughFailuresAndRedirects) {
  Receiver receiver;
  ASSERT_GT(receiver.port(), 0);
  const std::string dir = MakeTempDir();
  const std::string ledger = dir + "/ledger.db";
  constexpr int kPayouts = 12;
  {
    GatewayProcess gateway("sandbox", ledger, WebhookFlags(dir, receiver));
    for (int i = 0; i < kPayouts; ++i) {
      absl::StatusOr<v1::Payout> payout =
          gateway.client().CreatePayout(ValidRequest(UniqueAccount()), kCall);
      ASSERT_TRUE(payout.ok()) << payout.status();
      ASSERT_EQ(payout->state(), v1::PAYOUT_STATE_ACCEPTED);
    }
    // Each payout: created (PENDING) and ACCEPTED.
    ASSERT_TRUE(
        Eventually([&] { return receiver.Delivered().size() == 2 * kPayouts; },
                   absl::Seconds(90)))
        << receiver.Delivered().size() << " of " << 2 * kPayouts;
    // The metrics saw it: deliveries, failed attempts, and an outbox that
    // empties.
    EXPECT_TRUE(Eventually(
        [&] { return Metric(gateway, "webhook_outbox_events") == 0; },
        absl::Seconds(10)));
    EXPECT_EQ(Metric(gateway, "webhook_outbox_oldest_age_seconds"), 0);
    EXPECT_GE(
        Metric(gateway, R"(webhook_deliveries_total{result="delivered"})"),
        2 * kPayouts);
    EXPECT_GE(Metric(gateway, R"(webhook_deliveries_total{result="retried"})"),
              1);
    gateway.process().Signal(SIGTERM);
  }
  EXPECT_TRUE(receiver.bad().empty()) << receiver.bad().front();

  // Every event of the ledger, and no other, was delivered.
  const std::vector<std::string> ledger_events = LedgerEventPayouts(ledger);
  ASSERT_EQ(ledger_events.size(), static_cast<size_t>(2 * kPayouts));
  ExpectEveryEventInOrderPerPayout(receiver.deliveries(), ledger_events);
}

// A 2xx that comes after --webhook_timeout is no answer: the event is sent
// again, and every event still arrives, in order per payout.
TEST(WebhookTest, AnAnswerAfterTheTimeoutCountsAsNoneAndTheEventGoesAgain) {
  Receiver receiver(0, absl::Seconds(2));
  ASSERT_GT(receiver.port(), 0);
  const std::string dir = MakeTempDir();
  std::vector<std::string> flags = WebhookFlags(dir, receiver);
  flags.push_back("--webhook_timeout=500ms");
  GatewayProcess gateway("sandbox", dir + "/ledger.db", flags);
  constexpr int kPayouts = 2;
  for (int i = 0; i < kPayouts; ++i) {
    ASSERT_TRUE(gateway.client()
                    .CreatePayout(ValidRequest(UniqueAccount()), kCall)
                    .ok());
  }
  // Every event is answered 200 in time at last, those answered late too.
  std::set<std::string> in_time, late;
  ASSERT_TRUE(Eventually(
      [&] {
        in_time.clear();
        late.clear();
        for (const Delivery& d : receiver.deliveries()) {
          if (d.late) {
            late.insert(d.event_id);
          } else if (d.answered == 200) {
            in_time.insert(d.event_id);
          }
        }
        return in_time.size() == 2 * kPayouts;
      },
      absl::Seconds(90)))
      << in_time.size() << " of " << 2 * kPayouts;
  EXPECT_EQ(late.size(), 1u);
  EXPECT_TRUE(
      Eventually([&] { return Metric(gateway, "webhook_outbox_events") == 0; },
                 absl::Seconds(30)));
  EXPECT_TRUE(receiver.bad().empty()) << receiver.bad().front();
}

TEST(WebhookTest, AnEventNotYetDeliveredAtASigkillIsDeliveredAfterRestart) {
  // A receiver that is not there yet: a free port, bound once and closed.
  const int port = FreeLoopbackPort();
  ASSERT_GT(port, 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/hooks";
  const std::string dir = MakeTempDir();
  const std::string ledger = dir + "/ledger.db";
  const std::vector<std::string> flags = {"--webhook_url=" + url,
                                          WriteSecret(dir)};
  {
    GatewayProcess gateway("sandbox", ledger, flags);
    absl::StatusOr<v1::Payout> payout =
        gateway.client().CreatePayout(ValidRequest(UniqueAccount()), kCall);
    ASSERT_TRUE(payout.ok()) << payout.status();
    // Nobody answers: both events wait, and the gauges say so.
    EXPECT_TRUE(Eventually(
        [&] {
          return Metric(gateway, "webhook_outbox_events") == 2 &&
                 Metric(gateway, "webhook_outbox_oldest_age_seconds") > 0 &&
                 Metric(gateway,
                        R"(webhook_deliveries_total{result="retried"})") >= 1;
        },
        absl::Seconds(20)));
    gateway.process().Signal(SIGKILL);
  }
  ASSERT_EQ(LedgerEventPayouts(ledger).size(), 2u);

  Receiver receiver(port);
  ASSERT_EQ(receiver.port(), port);
  GatewayProcess restarted("sandbox", ledger, flags);
  EXPECT_TRUE(Eventually([&] { return receiver.Delivered().size() == 2; },
                         absl::Seconds(90)))
      << receiver.Delivered().size();
  EXPECT_TRUE(receiver.bad().empty());
}

// Three replicas on one PostgreSQL ledger, two of them with webhooks: every
// replica's events reach the receiver (sent by one replica), signed, in
// order per payout, each under its watch cursor.
TEST(WebhookTest, ReplicasOnPostgreSqlDeliverEveryReplicasEvents) {
  absl::StatusOr<std::string> uri = test_support::NewTestDatabase();
  ASSERT_TRUE(uri.ok()) << uri.status();
  Receiver receiver;
  ASSERT_GT(receiver.port(), 0);
  const std::string dir = MakeTempDir();
  std::vector<std::unique_ptr<GatewayProcess>> replicas;
  for (int i = 0; i < 2; ++i) {
    replicas.push_back(std::make_unique<GatewayProcess>(
        "sandbox", *uri, WebhookFlags(dir, receiver)));
  }
  replicas.push_back(std::make_unique<GatewayProcess>("sandbox", *uri));
  constexpr int kPerReplica = 4;
  for (int i = 0; i < kPerReplica; ++i) {
    for (std::unique_ptr<GatewayProcess>& replica : replicas) {
      absl::StatusOr<v1::Payout> payout =
          replica->client().CreatePayout(ValidRequest(UniqueAccount()), kCall);
      ASSERT_TRUE(payout.ok()) << payout.status();
      ASSERT_EQ(payout->state(), v1::PAYOUT_STATE_ACCEPTED);
    }
  }
  const int events = 2 * kPerReplica * static_cast<int>(replicas.size());
  // Every event, by its cursor, once each has its watch position.
  ASSERT_TRUE(Eventually(
      [&] {
        return test_support::PgScalar(*uri,
                                      "SELECT count(*) FROM event_positions") ==
               std::to_string(events);
      },
      absl::Seconds(30)));
  absl::StatusOr<std::vector<std::vector<std::string>>> positions =
      test_support::PgQuery(*uri, "SELECT position FROM event_positions");
  ASSERT_TRUE(positions.ok()) << positions.status();
  std::set<std::string> expected;
  for (const std::vector<std::string>& row : *positions) {
    expected.insert(EventCursor(std::stoll(row[0])));
  }
  ASSERT_TRUE(Eventually([&] { return receiver.Delivered() == expected; },
                         absl::Seconds(90)))
      << receiver.Delivered().size() << " of " << expected.size();
  EXPECT_TRUE(Eventually(
      [&] {
        return test_support::PgScalar(
                   *uri, "SELECT count(*) FROM webhook_outbox") == "0";
      },
      absl::Seconds(10)));
  EXPECT_TRUE(receiver.bad().empty()) << receiver.bad().front();
  absl::StatusOr<std::vector<std::vector<std::string>>> ledger_rows =
      test_support::PgQuery(*uri,
                            "SELECT payout_id FROM payout_events ORDER BY id");
  ASSERT_TRUE(ledger_rows.ok());
  std::vector<std::string> ledger_events;
  for (const std::vector<std::string>& row : *ledger_rows) {
    ledger_events.push_back(row[0]);
  }
  ExpectEveryEventInOrderPerPayout(receiver.deliveries(), ledger_events);
}

TEST(WebhookTest, BadWebhookFlagsStopTheGateway) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(WriteFile(dir + "/short", "short"));
  for (const std::vector<std::string>& flags :
       {std::vector<std::string>{"--webhook_url=http://127.0.0.1:9/hooks"},
        {"--webhook_secret=@" + dir + "/short",
         "--webhook_url=http://127.0.0.1:9/hooks"},
        {"--webhook_url=http://10.1.2.3/hooks", WriteSecret(dir)},
        {"--webhook_timeout=50ms", "--webhook_url=http://127.0.0.1:9/hooks",
         WriteSecret(dir)},
        {"--webhook_timeout=2m", "--webhook_url=http://127.0.0.1:9/hooks",
         WriteSecret(dir)}}) {
    std::vector<std::string> argv = {
        PAYOUT_SERVER_BIN, "--listen=127.0.0.1:0",
        "--metrics_listen=", "--ledger=sqlite:" + dir + "/ledger.db"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    CommandResult result = RunCommand(argv);
    EXPECT_NE(result.exit_code, 0) << flags[0];
    EXPECT_EQ(result.out.find("listening on"), std::string::npos) << flags[0];
    EXPECT_NE(result.err.find("webhook"), std::string::npos)
        << flags[0] << ": " << result.err;
  }
}

}  // namespace
}  // namespace aopay::testing
