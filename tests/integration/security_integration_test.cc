// Security end to end (docs/security.md): TLS and mTLS with certificates made
// at test time by the openssl command, bearer tokens, scopes, per-client
// isolation of reads and request ids, limits that cannot be raced, SIGHUP
// reloads of the clients file and the certificate, the safe defaults, and a
// scan of everything the gateway printed for every token used.

#include <dirent.h>
#include <signal.h>

#include <atomic>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "client/payout_client.h"
#include "common/clients.h"
#include "common/errors.h"
#include "common/ids.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace aopay::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kCall = absl::Seconds(20);
constexpr absl::Duration kReload = absl::Seconds(15);

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs openssl; fails the test when it fails.
void OpenSsl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  const CommandResult result = RunCommand(argv);
  ASSERT_EQ(result.exit_code, 0) << absl::StrJoin(argv, " ") << "\n"
                                 << result.err;
}

// A CA, and certificates it signs, in `dir`.
class Pki {
 public:
  Pki(std::string dir, std::string name) : dir_(std::move(dir)) {
    ca_key_ = Path(name + "-ca.key");
    ca_cert_ = Path(name + "-ca.pem");
    OpenSsl({"req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout", ca_key_, "-out",
             ca_cert_, "-days", "2", "-subj", "/CN=" + name + " test CA"});
  }
  const std::string& ca() const { return ca_cert_; }

  // Writes NAME.key and NAME.pem (CN=`common_name`, for localhost and
  // 127.0.0.1) and returns their paths.
  std::pair<std::string, std::string> Issue(const std::string& name,
                                            const std::string& common_name) {
    const std::string key = Path(name + ".key");
    const std::string csr = Path(name + ".csr");
    const std::string cert = Path(name + ".pem");
    const std::string ext = Path(name + ".ext");
    WriteFile(ext,
              "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
              "extendedKeyUsage=serverAuth,clientAuth\n");
    OpenSsl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", csr, "-subj",
             "/CN=" + common_name});
    OpenSsl({"x509", "-req", "-in", csr, "-CA", ca_cert_, "-CAkey", ca_key_,
             "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext});
    return {key, cert};
  }

 private:
  std::string Path(const std::string& name) const {
    return absl::StrCat(dir_, "/", name);
  }
  std::string dir_;
  std::string ca_key_;
  std::string ca_cert_;
};

// A fresh random-looking token and its clients-file line.
struct Token {
  std::string token;
  std::string line;
};

Token MakeToken(const std::string& name, const std::string& scopes,
                const std::string& limits = "") {
  static std::atomic<int> counter{0};
  Token out;
  out.token = absl::StrCat("tok-", name, "-", getpid(), "-",
                           counter.fetch_add(1), "-Zq81xY");
  out.line = absl::StrCat(name, " ", TokenDigest(out.token), " ", scopes,
                          limits.empty() ? "" : " ", limits, "\n");
  return out;
}

std::string ReasonOf(const absl::Status& status) {
  return GetErrorDetails(status).reason;
}

class SecurityTest : public ::testing::Test {
 protected:
  SecurityTest()
      : dir_(MakeTempDir()), pki_(dir_, "main"), sandbox_({"--settle=0s"}) {
    std::tie(server_key_, server_cert_) = pki_.Issue("server", "gw-one");
  }

  // Every token a test used must be absent from everything the gateway
  // printed, whatever happened.
  void TearDown() override {
    for (const auto& gateway : gateways_) {
      const std::string output = gateway->Stderr();
      for (const std::string& token : tokens_) {
        EXPECT_THAT(output, Not(HasSubstr(token)))
            << "a token reached the gateway's output";
      }
    }
  }

  Token NewClient(const std::string& name, const std::string& scopes,
                  const std::string& limits = "") {
    Token token = MakeToken(name, scopes, limits);
    tokens_.push_back(token.token);
    return token;
  }

  std::string ClientsFile(const std::string& text) {
    const std::string path = dir_ + "/clients";
    WriteFile(path, text);
    return path;
  }

  GatewayProcess& StartGateway(std::vector<std::string> flags) {
    gateways_.push_back(std::make_unique<GatewayProcess>(
        sandbox_.url(), dir_ + "/ledger.db", std::move(flags)));
    return *gateways_.back();
  }

  std::vector<std::string> TlsFlags() const {
    return {"--tls_cert=" + server_cert_, "--tls_key=" + server_key_};
  }

  // A client over TLS to `gateway` (mTLS with `cert`, if given).
  std::unique_ptr<PayoutClient> Client(
      GatewayProcess& gateway, const std::string& token,
      std::pair<std::string, std::string> cert = {}) {
    ChannelOptions options;
    options.target = gateway.address();
    options.tls_ca_file = pki_.ca();
    options.tls_key_file = cert.first;
    options.tls_cert_file = cert.second;
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        MakeChannel(options);
    EXPECT_TRUE(channel.ok()) << channel.status();
    return std::make_unique<PayoutClient>(*channel, token);
  }

  std::string dir_;
  Pki pki_;
  SandboxProcess sandbox_;
  std::string server_key_;
  std::string server_cert_;
  std::vector<std::string> tokens_;
  std::vector<std::unique_ptr<GatewayProcess>> gateways_;
};

TEST_F(SecurityTest, TlsServesCallersAndPlaintextCannotConnect) {
  const Token writer = NewClient("writer", "payouts:write,payouts:read");
  GatewayProcess& gateway = StartGateway(
      {"--clients=" + ClientsFile(writer.line), TlsFlags()[0], TlsFlags()[1]});
  const std::string account = UniqueAccount();
  EXPECT_TRUE(Client(gateway, writer.token)
                  ->CreatePayout(ValidRequest(account), kCall)
                  .ok());

  PayoutClient plaintext(
      grpc::CreateChannel(gateway.address(),
                          grpc::InsecureChannelCredentials()),
      writer.token);
  absl::StatusOr<v1::Payout> refused =
      plaintext.CreatePayout(ValidRequest(UniqueAccount()), absl::Seconds(5));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
}

TEST_F(SecurityTest, MutualTlsRefusesCallsWithoutACertificateOfItsCa) {
  const Token writer = NewClient("writer", "payouts:write,payouts:read");
  GatewayProcess& gateway =
      StartGateway({"--clients=" + ClientsFile(writer.line), TlsFlags()[0],
                    TlsFlags()[1], "--tls_client_ca=" + pki_.ca()});
  Pki other(dir_, "other");
  const auto good = pki_.Issue("good-client", "good-client");
  const auto foreign = other.Issue("foreign-client", "foreign-client");

  const std::string refused_account = UniqueAccount();
  EXPECT_FALSE(
      Client(gateway, writer.token)
          ->CreatePayout(ValidRequest(refused_account), absl::Seconds(5))
          .ok());
  EXPECT_FALSE(
      Client(gateway, writer.token, foreign)
          ->CreatePayout(ValidRequest(refused_account), absl::Seconds(5))
          .ok());
  const std::string account = UniqueAccount();
  EXPECT_TRUE(Client(gateway, writer.token, good)
                  ->CreatePayout(ValidRequest(account), kCall)
                  .ok());
  EXPECT_EQ(sandbox_.PayoutsFor(refused_account), 0);
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
}

TEST_F(SecurityTest, ACertificateNamesAClientWhoseLineHasNoDigest) {
  GatewayProcess& gateway = StartGateway(
      {"--clients=" + ClientsFile("batch-host - payouts:write,payouts:read\n"),
       TlsFlags()[0], TlsFlags()[1], "--tls_client_ca=" + pki_.ca()});
  const auto named = pki_.Issue("batch-host", "batch-host");
  const auto unnamed = pki_.Issue("stranger", "stranger");

  absl::StatusOr<v1::Payout> payout =
      Client(gateway, "", named)
          ->CreatePayout(ValidRequest(UniqueAccount()), kCall);
  ASSERT_TRUE(payout.ok()) << payout.status();
  EXPECT_EQ(payout->client(), "batch-host");
  absl::StatusOr<v1::Payout> refused =
      Client(gateway, "", unnamed)
          ->CreatePayout(ValidRequest(UniqueAccount()), kCall);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(SecurityTest, TokensAndScopesAreCheckedBeforeAnyWork) {
  const Token writer = NewClient("writer", "payouts:write,payouts:read");
  const Token reader = NewClient("reader", "payouts:read");
  GatewayProcess& gateway =
      StartGateway({"--clients=" + ClientsFile(writer.line + reader.line),
                    TlsFlags()[0], TlsFlags()[1]});
  const std::string account = UniqueAccount();

  absl::StatusOr<v1::Payout> anonymous =
      Client(gateway, "")->CreatePayout(ValidRequest(account), kCall);
  EXPECT_EQ(anonymous.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ReasonOf(anonymous.status()), "UNAUTHENTICATED");

  const std::string wrong_token = "not-a-token-of-anyone";
  tokens_.push_back(wrong_token);
  absl::StatusOr<v1::Payout> wrong =
      Client(gateway, wrong_token)->CreatePayout(ValidRequest(account), kCall);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated);

  absl::StatusOr<v1::Payout> read_only =
      Client(gateway, reader.token)->CreatePayout(ValidRequest(account), kCall);
  EXPECT_EQ(read_only.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReasonOf(read_only.status()), "PERMISSION_DENIED");

  v1::ResolvePayoutRequest resolve;
  resolve.set_payout_id("po_01J00000000000000000000000");
  resolve.set_state(v1::PAYOUT_STATE_FAILED);
  resolve.set_note("test");
  EXPECT_EQ(Client(gateway, writer.token)
                ->ResolvePayout(resolve, kCall)
                .status()
                .code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(sandbox_.PayoutsFor(account), 0);

  // Health needs no token.
  ChannelOptions options;
  options.target = gateway.address();
  options.tls_ca_file = pki_.ca();
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(options);
  ASSERT_TRUE(channel.ok());
  EXPECT_EQ(CheckHealth(*channel, ""),
            grpc::health::v1::HealthCheckResponse::SERVING);

  // Failures are counted by reason.
  const std::string metrics = HttpGet(gateway.metrics_address(), "/metrics");
  EXPECT_THAT(metrics, HasSubstr("auth_failures_total{reason=\"missing\"} 1"));
  EXPECT_THAT(metrics,
              HasSubstr("auth_failures_total{reason=\"unknown_token\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("auth_failures_total{reason=\"scope\"} 2"));
}

TEST_F(SecurityTest, ClientsSeeOnlyTheirOwnPayoutsAndRequestIds) {
  const Token alpha = NewClient("alpha", "payouts:write,payouts:read");
  const Token beta = NewClient("beta", "payouts:write,payouts:read");
  const Token auditor = NewClient("auditor", "payouts:read_all");
  GatewayProcess& gateway = StartGateway(
      {"--clients=" + ClientsFile(alpha.line + beta.line + auditor.line),
       TlsFlags()[0], TlsFlags()[1]});
  auto as_alpha = Client(gateway, alpha.token);
  auto as_beta = Client(gateway, beta.token);

  // The same request id from two clients: two payouts, both sent.
  v1::CreatePayoutRequest request = ValidRequest(UniqueAccount());
  absl::StatusOr<v1::Payout> first = as_alpha->CreatePayout(request, kCall);
  request.mutable_beneficiary()->set_account_number(UniqueAccount());
  absl::StatusOr<v1::Payout> second = as_beta->CreatePayout(request, kCall);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(first->payout_id(), second->payout_id());
  EXPECT_EQ(first->client(), "alpha");
  EXPECT_EQ(second->client(), "beta");
  EXPECT_EQ(sandbox_.PayoutsFor(first->beneficiary().account_number()), 1);
  EXPECT_EQ(sandbox_.PayoutsFor(second->beneficiary().account_number()), 1);

  // Someone else's payout reads as missing.
  v1::GetPayoutRequest by_id;
  by_id.set_payout_id(second->payout_id());
  absl::StatusOr<v1::Payout> hidden = as_alpha->GetPayout(by_id, kCall);
  EXPECT_EQ(hidden.status().code(), absl::StatusCode::kNotFound);
  v1::GetPayoutRequest missing;
  missing.set_payout_id("po_01J00000000000000000000000");
  EXPECT_EQ(as_alpha->GetPayout(missing, kCall).status().message(),
            absl::StrReplaceAll(
                hidden.status().message(),
                {{second->payout_id(), "po_01J00000000000000000000000"}}));
  v1::RefreshPayoutRequest refresh;
  refresh.set_payout_id(second->payout_id());
  EXPECT_EQ(as_alpha->RefreshPayout(refresh, kCall).status().code(),
            absl::StatusCode::kNotFound);

  // A request id means the caller's own payout.
  v1::GetPayoutRequest by_request;
  by_request.set_request_id(request.request_id());
  absl::StatusOr<v1::Payout> own = as_alpha->GetPayout(by_request, kCall);
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ(own->payout_id(), first->payout_id());

  absl::StatusOr<v1::ListPayoutsResponse> alpha_list =
      as_alpha->ListPayouts(v1::ListPayoutsRequest(), kCall);
  ASSERT_TRUE(alpha_list.ok());
  ASSERT_EQ(alpha_list->payouts_size(), 1);
  EXPECT_EQ(alpha_list->payouts(0).payout_id(), first->payout_id());
  absl::StatusOr<v1::ListPayoutsResponse> all =
      Client(gateway, auditor.token)
          ->ListPayouts(v1::ListPayoutsRequest(), kCall);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->payouts_size(), 2);
}

TEST_F(SecurityTest, ConcurrentPayoutsCannotOvershootTheDailyLimit) {
  constexpr int kAmount = 1000;
  const Token capped =
      NewClient("capped", "payouts:write,payouts:read",
                absl::StrCat("daily_paise=", 10 * kAmount,
                             " max_payout_paise=", 5 * kAmount));
  const std::string clients = ClientsFile(capped.line);
  std::vector<std::string> flags = {"--clients=" + clients, TlsFlags()[0],
                                    TlsFlags()[1]};
  {
    GatewayProcess& gateway = StartGateway(flags);
    auto client = Client(gateway, capped.token);

    absl::StatusOr<v1::Payout> too_big = client->CreatePayout(
        ValidRequest(UniqueAccount(), 5 * kAmount + 1), kCall);
    EXPECT_EQ(too_big.status().code(), absl::StatusCode::kResourceExhausted);
    const ErrorDetails big = GetErrorDetails(too_big.status());
    EXPECT_EQ(big.reason, "CLIENT_LIMIT_EXCEEDED");
    EXPECT_EQ(big.metadata.at("limit"), "max_payout_paise");

    absl::Mutex mu;
    int accepted = 0;
    std::vector<absl::Status> refused;
    absl::BlockingCounter finished(20);
    for (int i = 0; i < 20; ++i) {
      client->CreatePayoutAsync(ValidRequest(UniqueAccount(), kAmount), kCall,
                                [&](absl::StatusOr<v1::Payout> payout) {
                                  absl::MutexLock lock(&mu);
                                  if (payout.ok()) {
                                    ++accepted;
                                  } else {
                                    refused.push_back(payout.status());
                                  }
                                  finished.DecrementCount();
                                });
    }
    finished.Wait();
    EXPECT_EQ(accepted, 10);
    ASSERT_EQ(refused.size(), 10u);
    for (const absl::Status& status : refused) {
      const ErrorDetails details = GetErrorDetails(status);
      EXPECT_EQ(details.reason, "CLIENT_LIMIT_EXCEEDED") << status;
      EXPECT_EQ(details.metadata.at("limit"), "daily_paise");
      EXPECT_EQ(details.metadata.at("remainingPaise"), "0");
    }
    int sent = 0;
    for (const JournalEntry& entry : sandbox_.Journal()) {
      sent += entry.path == "/api/V6/Payout/AOPPayout";
    }
    EXPECT_EQ(sent, 10);
    gateway.process().Signal(SIGTERM);
  }
  // The day's sum is the ledger's: a restart does not reset it.
  GatewayProcess& restarted = StartGateway(flags);
  absl::StatusOr<v1::Payout> after_restart =
      Client(restarted, capped.token)
          ->CreatePayout(ValidRequest(UniqueAccount(), 1), kCall);
  EXPECT_EQ(ReasonOf(after_restart.status()), "CLIENT_LIMIT_EXCEEDED");
}

// Maker-checker over the real gateway: a payout above the maker's
// approval_above_paise waits; racing approvals send it once; an approval
// racing the maker's cancel ends in exactly one of the two; metadata comes
// back but is never sent to AOPay nor printed.
TEST_F(SecurityTest, ApprovalsSendOnceAndRaceCancelsConsistently) {
  const Token maker = NewClient("maker", "payouts:write,payouts:read",
                                "approval_above_paise=1000");
  const Token checker = NewClient("checker", "approve");
  const Token auditor = NewClient("auditor", "payouts:read_all");
  const std::string clients =
      ClientsFile(absl::StrCat(maker.line, checker.line, auditor.line));
  GatewayProcess& gateway =
      StartGateway({"--clients=" + clients, TlsFlags()[0], TlsFlags()[1]});
  auto as_maker = Client(gateway, maker.token);
  auto as_checker = Client(gateway, checker.token);

  v1::CreatePayoutRequest request = ValidRequest(UniqueAccount(), 5000);
  (*request.mutable_metadata())["invoice"] = "INV-7Kq2-private";
  absl::StatusOr<v1::Payout> held = as_maker->CreatePayout(request, kCall);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(held->state(), v1::PAYOUT_STATE_AWAITING_APPROVAL);
  EXPECT_EQ(held->metadata().at("invoice"), "INV-7Kq2-private");
  const std::string account = request.beneficiary().account_number();
  EXPECT_EQ(sandbox_.PayoutsFor(account), 0);

  v1::ApprovePayoutRequest approve;
  approve.set_payout_id(held->payout_id());
  approve.set_note("invoice checked");
  EXPECT_EQ(ReasonOf(as_maker->ApprovePayout(approve, kCall).status()),
            "PERMISSION_DENIED")
      << "the maker lacks the scope approve";
  EXPECT_EQ(ReasonOf(Client(gateway, auditor.token)
                         ->ApprovePayout(approve, kCall)
                         .status()),
            "PERMISSION_DENIED");

  // Ten approvals at once: one sends, nine are told it is not awaiting.
  constexpr int kApprovals = 10;
  std::vector<absl::StatusOr<v1::Payout>> results(kApprovals,
                                                  absl::UnknownError(""));
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kApprovals; ++i) {
      threads.emplace_back(
          [&, i] { results[i] = as_checker->ApprovePayout(approve, kCall); });
    }
    for (std::thread& thread : threads) thread.join();
  }
  int won = 0;
  for (const absl::StatusOr<v1::Payout>& result : results) {
    if (result.ok()) {
      ++won;
      EXPECT_EQ(result->state(), v1::PAYOUT_STATE_ACCEPTED);
    } else {
      EXPECT_EQ(ReasonOf(result.status()), "NOT_AWAITING_APPROVAL")
          << result.status();
    }
  }
  EXPECT_EQ(won, 1);
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
  // The metadata never reached AOPay.
  for (const JournalEntry& entry : sandbox_.Journal()) {
    EXPECT_THAT(entry.body, Not(HasSubstr("INV-7Kq2")));
  }

  // Approve against cancel, ten times: each payout ends in exactly one.
  constexpr int kRaces = 10;
  int approved = 0, cancelled = 0;
  for (int i = 0; i < kRaces; ++i) {
    const v1::CreatePayoutRequest race = ValidRequest(UniqueAccount(), 4000);
    absl::StatusOr<v1::Payout> waiting = as_maker->CreatePayout(race, kCall);
    ASSERT_TRUE(waiting.ok()) << waiting.status();
    v1::ApprovePayoutRequest yes;
    yes.set_payout_id(waiting->payout_id());
    yes.set_note("ok");
    v1::CancelPayoutRequest no;
    no.set_payout_id(waiting->payout_id());
    no.set_note("changed my mind");
    absl::StatusOr<v1::Payout> by_approval = absl::UnknownError("");
    absl::StatusOr<v1::Payout> by_cancel = absl::UnknownError("");
    std::thread approver(
        [&] { by_approval = as_checker->ApprovePayout(yes, kCall); });
    std::thread canceller(
        [&] { by_cancel = as_maker->CancelPayout(no, kCall); });
    approver.join();
    canceller.join();
    ASSERT_NE(by_approval.ok(), by_cancel.ok())
        << by_approval.status() << " / " << by_cancel.status();
    v1::GetPayoutRequest get;
    get.set_payout_id(waiting->payout_id());
    absl::StatusOr<v1::Payout> now = as_maker->GetPayout(get, kCall);
    ASSERT_TRUE(now.ok());
    const int sends = sandbox_.PayoutsFor(race.beneficiary().account_number());
    if (by_approval.ok()) {
      ++approved;
      EXPECT_EQ(now->state(), v1::PAYOUT_STATE_ACCEPTED);
      EXPECT_EQ(ReasonOf(by_cancel.status()), "NOT_CANCELLABLE");
      EXPECT_EQ(sends, 1);
    } else {
      ++cancelled;
      EXPECT_EQ(now->state(), v1::PAYOUT_STATE_CANCELLED);
      EXPECT_EQ(ReasonOf(by_approval.status()), "NOT_AWAITING_APPROVAL");
      EXPECT_EQ(sends, 0);
    }
  }
  std::cout << "approve vs cancel: " << approved << " approved, " << cancelled
            << " cancelled\n";

  // Every approval and cancellation is an event with who and the note
  // (WatchPayouts; webhooks carry the same event). Each payout was created
  // (1 event), then approved and accepted (2) or cancelled (1).
  const size_t expected_events = 3 + kRaces + 2 * approved + cancelled;
  std::vector<v1::PayoutEvent> events;
  v1::WatchPayoutsRequest watch;
  watch.set_after_cursor(EventCursor(0));
  ASSERT_TRUE(Client(gateway, auditor.token)
                  ->WatchPayouts(watch, kCall,
                                 [&](const v1::PayoutEvent& event) {
                                   events.push_back(event);
                                   return events.size() < expected_events;
                                 })
                  .ok());
  ASSERT_EQ(events.size(), expected_events);
  int approvals_seen = 0, cancels_seen = 0;
  for (const v1::PayoutEvent& event : events) {
    EXPECT_FALSE(event.why().empty());
    if (event.previous_state() == v1::PAYOUT_STATE_AWAITING_APPROVAL &&
        event.payout().state() == v1::PAYOUT_STATE_PENDING) {
      ++approvals_seen;
      EXPECT_EQ(event.who(), "approver checker");
      EXPECT_EQ(event.note(), event.payout().payout_id() == held->payout_id()
                                  ? "invoice checked"
                                  : "ok");
    } else if (event.payout().state() == v1::PAYOUT_STATE_CANCELLED) {
      ++cancels_seen;
      EXPECT_EQ(event.who(), "client maker");
      EXPECT_EQ(event.note(), "changed my mind");
    } else if (event.payout().state() == v1::PAYOUT_STATE_ACCEPTED) {
      EXPECT_EQ(event.who(), "gateway");
      EXPECT_EQ(event.note(), "");
    }
  }
  EXPECT_EQ(approvals_seen, approved + 1);
  EXPECT_EQ(cancels_seen, cancelled);
  EXPECT_THAT(gateway.Stderr(), Not(HasSubstr("INV-7Kq2")))
      << "metadata reached the log";
}

TEST_F(SecurityTest, SighupReloadsTheClientsFileAndKeepsItWhenMalformed) {
  const Token first = NewClient("first", "payouts:write,payouts:read");
  const Token second = NewClient("second", "payouts:write,payouts:read");
  const std::string clients = ClientsFile(first.line);
  GatewayProcess& gateway =
      StartGateway({"--clients=" + clients, TlsFlags()[0], TlsFlags()[1]});
  auto as_second = Client(gateway, second.token);
  v1::ListPayoutsRequest list;
  EXPECT_EQ(as_second->ListPayouts(list, kCall).status().code(),
            absl::StatusCode::kUnauthenticated);

  WriteFile(clients, first.line + second.line);
  ASSERT_EQ(kill(gateway.process().pid(), SIGHUP), 0);
  EXPECT_TRUE(Eventually(
      [&] { return as_second->ListPayouts(list, kCall).ok(); }, kReload));

  WriteFile(clients, first.line + "broken line\n");
  ASSERT_EQ(kill(gateway.process().pid(), SIGHUP), 0);
  EXPECT_TRUE(Eventually(
      [&] {
        const std::string log = gateway.Stderr();
        const size_t at = log.find("reload refused, the clients in use stay: ");
        return at != std::string::npos &&
               log.find("line 2", at) != std::string::npos;
      },
      kReload));
  EXPECT_TRUE(as_second->ListPayouts(list, kCall).ok());
}

// The subject CN of the certificate the gateway serves, from a real
// handshake by the openssl command.
std::string ServedCommonName(const std::string& address,
                             const std::string& ca) {
  const CommandResult result =
      RunCommand({"/usr/bin/openssl", "s_client", "-connect", address,
                  "-CAfile", ca, "-verify_return_error", "-brief"},
                 "");
  const std::string text = result.out + result.err;
  for (const char* name : {"gw-one", "gw-two"}) {
    if (absl::StrContains(text, absl::StrCat("CN = ", name)) ||
        absl::StrContains(text, absl::StrCat("CN=", name))) {
      return name;
    }
  }
  return "";
}

TEST_F(SecurityTest, SighupRotatesTheCertificateAndRefusesABadOne) {
  const std::string cert = dir_ + "/served.pem";
  const std::string key = dir_ + "/served.key";
  WriteFile(cert, ReadAll(server_cert_));
  WriteFile(key, ReadAll(server_key_));
  GatewayProcess& gateway =
      StartGateway({"--tls_cert=" + cert, "--tls_key=" + key});
  EXPECT_EQ(ServedCommonName(gateway.address(), pki_.ca()), "gw-one");

  const auto next = pki_.Issue("server-two", "gw-two");
  WriteFile(key, ReadAll(next.first));
  WriteFile(cert, ReadAll(next.second));
  ASSERT_EQ(kill(gateway.process().pid(), SIGHUP), 0);
  EXPECT_TRUE(Eventually(
      [&] {
        return ServedCommonName(gateway.address(), pki_.ca()) == "gw-two";
      },
      kReload));

  WriteFile(cert, "-----BEGIN CERTIFICATE-----\ngarbage\n");
  ASSERT_EQ(kill(gateway.process().pid(), SIGHUP), 0);
  EXPECT_TRUE(Eventually(
      [&] {
        return absl::StrContains(
            gateway.Stderr(),
            "TLS reload refused, the certificate in use stays");
      },
      kReload));
  EXPECT_EQ(ServedCommonName(gateway.address(), pki_.ca()), "gw-two");
  EXPECT_TRUE(Client(gateway, "")
                  ->CreatePayout(ValidRequest(UniqueAccount()), kCall)
                  .ok());
}

// The names in /tmp that start with `prefix`.
std::set<std::string> TmpEntries(const std::string& prefix) {
  std::set<std::string> names;
  if (DIR* dir = opendir("/tmp")) {
    while (dirent* entry = readdir(dir)) {
      if (absl::StartsWith(entry->d_name, prefix)) names.insert(entry->d_name);
    }
    closedir(dir);
  }
  return names;
}

// The gateway's copies of its key live in memory only: even a gateway that
// is killed leaves none behind.
TEST_F(SecurityTest, AKilledGatewayLeavesNoCopyOfItsKey) {
  const std::set<std::string> before = TmpEntries("payout-tls-");
  GatewayProcess& gateway = StartGateway({TlsFlags()[0], TlsFlags()[1]});
  EXPECT_TRUE(Client(gateway, "")
                  ->CreatePayout(ValidRequest(UniqueAccount()), kCall)
                  .ok());
  gateway.process().Signal(SIGKILL);
  for (const std::string& name : TmpEntries("payout-tls-")) {
    EXPECT_TRUE(before.count(name) == 1) << "/tmp/" << name << " was left";
  }
}

// payout-server with `flags` must refuse to start, saying `expected`. A
// gateway that starts anyway is a failure (and is killed), never a hang.
void ExpectRefusedStart(const std::vector<std::string>& flags,
                        const std::string& expected) {
  const std::string dir = MakeTempDir();
  std::vector<std::string> argv = {
      PAYOUT_SERVER_BIN, "--aopay_url=sandbox",
      "--metrics_listen=", "--ledger=sqlite:" + dir + "/ledger.db"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  ChildProcess process(argv, dir + "/stderr");
  absl::StatusOr<std::string> address =
      process.WaitForListening(absl::Seconds(30));
  EXPECT_FALSE(address.ok()) << "started with " << absl::StrJoin(flags, " ");
  if (address.ok()) return;  // ~ChildProcess kills it
  EXPECT_NE(process.Wait(), 0) << absl::StrJoin(flags, " ");
  EXPECT_THAT(ReadAll(dir + "/stderr"), HasSubstr(expected))
      << absl::StrJoin(flags, " ");
}

TEST_F(SecurityTest, UnsafeConfigurationsRefuseToStart) {
  const Token writer = NewClient("writer", "payouts:write");
  const std::string clients = ClientsFile(writer.line);
  ExpectRefusedStart({"--listen=127.0.0.1:0", "--clients=" + clients},
                     "bearer tokens in clear text");
  ExpectRefusedStart(
      {"--listen=0.0.0.0:0", "--clients=" + clients, "--allow_insecure_tokens"},
      "loopback development only");
  ExpectRefusedStart({"--listen=0.0.0.0:0"}, "no --clients");
  ExpectRefusedStart({"--listen=127.0.0.1:0", "--tls_client_ca=" + pki_.ca()},
                     "--tls_client_ca needs --tls_cert");
  ExpectRefusedStart({"--listen=127.0.0.1:0", TlsFlags()[0]},
                     "--tls_cert and --tls_key go together");
  ExpectRefusedStart({"--listen=127.0.0.1:0", TlsFlags()[1]},
                     "--tls_cert and --tls_key go together");
  const std::string bad = dir_ + "/bad-clients";
  WriteFile(bad, writer.line + "second 1234 payouts:write\n");
  ExpectRefusedStart(
      {"--listen=127.0.0.1:0", "--clients=" + bad, "--allow_insecure_tokens"},
      "line 2");
  // AOPay's URL and CA are named by their flags.
  ExpectRefusedStart({"--listen=127.0.0.1:0", "--aopay_url=http://10.0.0.1",
                      "--registration_id=AOP-1"},
                     "--aopay_url must use https:// unless");
  const std::string missing_ca = dir_ + "/no-such-ca.pem";
  ExpectRefusedStart({"--listen=127.0.0.1:0", "--aopay_url=https://aopay.test",
                      "--registration_id=AOP-1", "--aopay_ca=" + missing_ca},
                     "--aopay_ca=" + missing_ca + " cannot be read");
  const std::string mismatched = pki_.Issue("mismatch", "gw-one").first;
  ExpectRefusedStart(
      {"--listen=127.0.0.1:0", TlsFlags()[0], "--tls_key=" + mismatched},
      "does not match");

  // Allowed with the explicit flags.
  GatewayProcess& insecure =
      StartGateway({"--clients=" + clients, "--allow_insecure_tokens"});
  EXPECT_FALSE(insecure.address().empty());
}

// payoutctl's advice follows the refusal: retrying does not lift a client's
// limit or grant it a scope.
TEST_F(SecurityTest, PayoutctlDoesNotAdviseRetriesThatCannotHelp) {
  const Token capped =
      NewClient("capped", "payouts:write,payouts:read", "max_payout_paise=100");
  const Token reader = NewClient("reader", "payouts:read");
  GatewayProcess& gateway =
      StartGateway({"--clients=" + ClientsFile(capped.line + reader.line),
                    TlsFlags()[0], TlsFlags()[1]});
  const std::string capped_token = dir_ + "/capped.token";
  const std::string reader_token = dir_ + "/reader.token";
  WriteFile(capped_token, capped.token);
  WriteFile(reader_token, reader.token);
  const std::vector<std::string> common = {
      PAYOUTCTL_BIN, "--target=" + gateway.address(), "--tls_ca=" + pki_.ca()};

  std::vector<std::string> create = common;
  for (const std::string& arg :
       {"--token_file=" + capped_token, std::string("create"),
        "--account=" + UniqueAccount(), std::string("--ifsc=SBIN0000002"),
        std::string("--name=Dean Jon"), std::string("--email=abc@gmail.com"),
        std::string("--mobile=9959640000"), std::string("--amount=12.00"),
        std::string("--mode=IMPS")}) {
    create.push_back(arg);
  }
  const CommandResult over = RunCommand(create);
  EXPECT_EQ(over.exit_code,
            10 + static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(over.err, HasSubstr("CLIENT_LIMIT_EXCEEDED"));
  EXPECT_THAT(over.err, Not(HasSubstr("retry with --request_id")));

  const std::string batch_file = dir_ + "/batch.jsonl";
  WriteFile(batch_file, "");
  std::vector<std::string> batch = common;
  batch.push_back("--token_file=" + reader_token);
  batch.push_back("batch");
  batch.push_back("--file=" + batch_file);
  WriteFile(
      batch_file,
      R"({"request_id":"b-1","beneficiary":{"account_number":"100000011836","ifsc":"SBIN0000002","name":"Dean Jon","email":"abc@gmail.com","mobile":"9959640000"},"amount_paise":1200,"mode":"TRANSFER_MODE_IMPS"})"
      "\n");
  const CommandResult refused = RunCommand(batch);
  EXPECT_EQ(refused.exit_code,
            10 + static_cast<int>(absl::StatusCode::kPermissionDenied))
      << refused.err;
  EXPECT_THAT(refused.err, Not(HasSubstr("may be retried")));
}

TEST_F(SecurityTest, PrintConfigMasksSecretsAndExits) {
  const std::string secret = dir_ + "/registration";
  WriteFile(secret, "AOP-SECRET-REG-77\n");
  const CommandResult result = RunCommand(
      {PAYOUT_SERVER_BIN, "--print_config", "--aopay_url=https://aopay.test",
       "--registration_id=@" + secret, "--listen=127.0.0.1:7",
       "--auth_tokens=/etc/payout/clients",
       "--webhook_url=https://hooks.example.test/payouts",
       "--webhook_secret=WEBHOOK-SECRET-GIVEN-INLINE"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("listen = 127.0.0.1:7"));
  EXPECT_THAT(result.out, HasSubstr("clients = /etc/payout/clients"));
  EXPECT_THAT(result.out, HasSubstr("registration_id = [set, masked]"));
  EXPECT_THAT(result.out, HasSubstr("webhook_secret = [set, masked]"));
  EXPECT_THAT(result.out + result.err, Not(HasSubstr("AOP-SECRET-REG-77")));
  EXPECT_THAT(result.out + result.err,
              Not(HasSubstr("WEBHOOK-SECRET-GIVEN-INLINE")));
}

}  // namespace
}  // namespace aopay::testing
