// The gateway end to end: payout-server against aopay-sandbox, both real
// processes on loopback ports the kernel picked; every row of the outcome
// table (docs/errors.md) and every scripted answer (docs/sandbox.md) over
// real gRPC and real HTTP, checked against the sandbox's journal.

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "common/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace aopay::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kCall = absl::Seconds(20);
constexpr char kPayoutPath[] = "/api/V6/Payout/AOPPayout";

class GatewayTest : public ::testing::Test {
 protected:
  GatewayTest()
      : dir_(MakeTempDir()),
        sandbox_({"--settle=0s"}),
        gateway_(sandbox_.url(), dir_ + "/ledger.db",
                 {"--upstream_timeout=1s"}) {}

  absl::StatusOr<v1::Payout> Create(const v1::CreatePayoutRequest& request) {
    return gateway_.client().CreatePayout(request, kCall);
  }
  absl::StatusOr<v1::Payout> GetByRequestId(const std::string& request_id) {
    v1::GetPayoutRequest get;
    get.set_request_id(request_id);
    return gateway_.client().GetPayout(get, kCall);
  }

  std::string dir_;
  SandboxProcess sandbox_;
  GatewayProcess gateway_;
};

TEST_F(GatewayTest, AcceptedPayoutSendsTheDocumentedBodyOnce) {
  const std::string account = UniqueAccount("1836");
  v1::CreatePayoutRequest request = ValidRequest(account, 1234);
  request.mutable_beneficiary()->set_ifsc(" sbin0000002 ");
  request.mutable_beneficiary()->set_mobile("+919959640000");

  absl::StatusOr<v1::Payout> payout = Create(request);

  ASSERT_TRUE(payout.ok()) << payout.status();
  EXPECT_EQ(payout->state(), v1::PAYOUT_STATE_ACCEPTED);
  EXPECT_THAT(payout->payout_id(), ::testing::StartsWith("po_"));
  EXPECT_EQ(payout->payout_id().size(), 3u + 26u);
  EXPECT_THAT(payout->transaction_id(), ::testing::StartsWith("TERF"));
  EXPECT_EQ(payout->transaction_reference_no().size(), 12u);
  EXPECT_EQ(payout->upstream_status(), "ACPT");
  EXPECT_EQ(payout->beneficiary().ifsc(), "SBIN0000002");
  EXPECT_EQ(payout->beneficiary().mobile(), "9959640000");
  EXPECT_EQ(payout->amount_paise(), 1234);
  EXPECT_GT(payout->create_time().seconds(), 0);

  std::vector<JournalEntry> journal = sandbox_.Journal();
  ASSERT_EQ(journal.size(), 1u);
  EXPECT_EQ(journal[0].path, kPayoutPath);
  EXPECT_EQ(journal[0].body,
            ExpectedPayoutBody(account, "12.34", "AOP-SANDBOX"));
}

TEST_F(GatewayTest, InvalidRequestListsEveryViolationAndSendsNothing) {
  v1::CreatePayoutRequest request = ValidRequest(UniqueAccount(), 0);
  request.set_request_id("not valid!");
  request.mutable_beneficiary()->set_account_number("12ab");
  request.mutable_beneficiary()->set_ifsc("SBIN1000002");
  request.mutable_beneficiary()->set_name("");
  request.mutable_beneficiary()->set_email("no-at-sign");
  request.mutable_beneficiary()->set_mobile("12345");
  request.set_mode(v1::TRANSFER_MODE_UNSPECIFIED);

  absl::StatusOr<v1::Payout> payout = Create(request);

  ASSERT_EQ(payout.status().code(), absl::StatusCode::kInvalidArgument);
  const ErrorDetails details = GetErrorDetails(payout.status());
  EXPECT_EQ(details.reason, "INVALID_REQUEST");
  std::vector<std::string> fields;
  for (const FieldViolation& v : details.violations) fields.push_back(v.field);
  EXPECT_THAT(fields,
              ::testing::UnorderedElementsAre(
                  "request_id", "beneficiary.account_number",
                  "beneficiary.ifsc", "beneficiary.name", "beneficiary.email",
                  "beneficiary.mobile", "amount_paise", "mode"));
  EXPECT_TRUE(sandbox_.Journal().empty());
}

struct ScriptedRow {
  std::string suffix;
  absl::StatusCode code;
  std::string reason;
  std::optional<v1::PayoutState> recorded;  // nullopt: nothing recorded
  std::string message_fragment;
  std::string sub_code;  // upstreamSubCode, "" when none
};

class ScriptedAnswerTest : public GatewayTest,
                           public ::testing::WithParamInterface<ScriptedRow> {};

TEST_P(ScriptedAnswerTest, MapsToTheContractOutcome) {
  const ScriptedRow& row = GetParam();
  // A first payout leaves a kept-alive connection in the pool, so the
  // scripted one travels on a reused connection: the case where libcurl
  // would re-send a request whose connection died.
  ASSERT_TRUE(Create(ValidRequest(UniqueAccount("1111"))).ok());

  const std::string account = UniqueAccount(row.suffix);
  const v1::CreatePayoutRequest request = ValidRequest(account);
  absl::StatusOr<v1::Payout> payout = Create(request);

  ASSERT_FALSE(payout.ok());
  EXPECT_EQ(payout.status().code(), row.code) << payout.status();
  EXPECT_THAT(std::string(payout.status().message()),
              HasSubstr(row.message_fragment));
  EXPECT_LE(payout.status().message().size(), 1024u);
  const ErrorDetails details = GetErrorDetails(payout.status());
  EXPECT_EQ(details.reason, row.reason);
  if (!row.sub_code.empty()) {
    EXPECT_EQ(details.metadata.at("upstreamSubCode"), row.sub_code);
    EXPECT_EQ(details.metadata.at("upstreamHttpStatus"), row.sub_code);
    EXPECT_FALSE(details.metadata.at("upstreamMessage").empty());
  }
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1) << "sent exactly once";

  absl::StatusOr<v1::Payout> stored = GetByRequestId(request.request_id());
  if (row.recorded.has_value()) {
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(stored->state(), *row.recorded);
    EXPECT_EQ(details.metadata.at("payoutId"), stored->payout_id());
    if (*row.recorded == v1::PAYOUT_STATE_FAILED) {
      EXPECT_EQ(stored->failure().code(), static_cast<int>(row.code));
    }
    // A retry gets the same answer and sends nothing.
    absl::StatusOr<v1::Payout> again = Create(request);
    EXPECT_EQ(again.status().code(), row.code);
    EXPECT_EQ(GetErrorDetails(again.status()), details);
    EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
  } else {
    EXPECT_EQ(stored.status().code(), absl::StatusCode::kNotFound);
    EXPECT_TRUE(details.retry_delay.has_value());
    EXPECT_EQ(details.metadata.count("payoutId"), 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Contract, ScriptedAnswerTest,
    ::testing::Values(ScriptedRow{"0422", absl::StatusCode::kInvalidArgument,
                                  "UPSTREAM_INVALID_IFSC",
                                  v1::PAYOUT_STATE_FAILED, "IFSC", "422"},
                      ScriptedRow{"0409", absl::StatusCode::kAlreadyExists,
                                  "UPSTREAM_BENEFICIARY_EXISTS",
                                  v1::PAYOUT_STATE_FAILED, "AOPay", "409"},
                      ScriptedRow{"0403", absl::StatusCode::kFailedPrecondition,
                                  "UPSTREAM_API_NOT_ENABLED",
                                  v1::PAYOUT_STATE_FAILED, "AOPay", "403"},
                      ScriptedRow{"0412", absl::StatusCode::kInternal,
                                  "UPSTREAM_REJECTED_BODY",
                                  v1::PAYOUT_STATE_FAILED, "AOPay", "412"},
                      ScriptedRow{"0429", absl::StatusCode::kUnavailable,
                                  "UPSTREAM_UNAVAILABLE", std::nullopt, "", ""},
                      ScriptedRow{"0500", absl::StatusCode::kDeadlineExceeded,
                                  "OUTCOME_UNKNOWN", v1::PAYOUT_STATE_UNKNOWN,
                                  "unknown", ""},
                      ScriptedRow{"0502", absl::StatusCode::kDeadlineExceeded,
                                  "OUTCOME_UNKNOWN", v1::PAYOUT_STATE_UNKNOWN,
                                  "unknown", ""},
                      ScriptedRow{"0504", absl::StatusCode::kDeadlineExceeded,
                                  "OUTCOME_UNKNOWN", v1::PAYOUT_STATE_UNKNOWN,
                                  "unknown", ""}),
    [](const ::testing::TestParamInfo<ScriptedRow>& info) {
      return "Suffix" + info.param.suffix;
    });

TEST_F(GatewayTest, NotSentPayoutFreesItsRequestId) {
  const std::string account = UniqueAccount("0429");
  const v1::CreatePayoutRequest request = ValidRequest(account);
  ASSERT_EQ(Create(request).status().code(), absl::StatusCode::kUnavailable);
  // Not REQUEST_IN_PROGRESS or a replay: the key is free, so it is sent again.
  ASSERT_EQ(Create(request).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(sandbox_.PayoutsFor(account), 2);
}

TEST_F(GatewayTest, RefreshFollowsTheStatusEndpoint) {
  struct Case {
    std::string suffix;
    v1::PayoutState state;
  };
  for (const Case& c : {Case{"1836", v1::PAYOUT_STATE_SUCCEEDED},
                        Case{"0601", v1::PAYOUT_STATE_FAILED},
                        Case{"0602", v1::PAYOUT_STATE_REVERSED}}) {
    absl::StatusOr<v1::Payout> created =
        Create(ValidRequest(UniqueAccount(c.suffix)));
    ASSERT_TRUE(created.ok()) << created.status();
    v1::RefreshPayoutRequest refresh;
    refresh.set_payout_id(created->payout_id());
    absl::StatusOr<v1::Payout> refreshed =
        gateway_.client().RefreshPayout(refresh, kCall);
    ASSERT_TRUE(refreshed.ok()) << refreshed.status();
    EXPECT_EQ(refreshed->state(), c.state) << c.suffix;
    if (c.state == v1::PAYOUT_STATE_FAILED) {
      EXPECT_NE(refreshed->failure().code(), 0);
    }
  }
}

TEST_F(GatewayTest, MetricsCountOutcomesAndLogsHoldNoPersonalData) {
  const std::string account = UniqueAccount("1836");
  v1::CreatePayoutRequest request = ValidRequest(account);
  request.mutable_beneficiary()->set_email("priya.sharma@example.com");
  request.mutable_beneficiary()->set_mobile("9876501234");
  ASSERT_TRUE(Create(request).ok());

  const std::string metrics = HttpGet(gateway_.metrics_address(), "/metrics");
  EXPECT_THAT(
      metrics,
      HasSubstr(R"(payout_outcomes_total{mode="IMPS",outcome="accepted"} 1)"));
  EXPECT_THAT(
      metrics,
      HasSubstr(R"(aopay_requests_total{endpoint="payout",status="200"} 1)"));
  EXPECT_THAT(metrics, HasSubstr("aopay_request_duration_seconds_bucket"));
  EXPECT_THAT(metrics, HasSubstr("grpc_server_handling_seconds_bucket"));
  EXPECT_THAT(metrics, HasSubstr("ledger_write_duration_seconds_bucket"));
  EXPECT_THAT(metrics, HasSubstr("aopay_requests_in_flight"));

  const std::string log = gateway_.Stderr();
  EXPECT_THAT(log, Not(HasSubstr("NO REAL MONEY")));  // a separate sandbox
  EXPECT_THAT(log, HasSubstr("XXXXXXXX" + account.substr(8)));
  EXPECT_THAT(log, Not(HasSubstr(account)));
  EXPECT_THAT(log, Not(HasSubstr("9876501234")));
  EXPECT_THAT(log, Not(HasSubstr("priya.sharma")));
  EXPECT_THAT(log, Not(HasSubstr("AOP-SANDBOX")));
}

TEST_F(GatewayTest, BatchAnswersEachRequestAsCreatePayoutWould) {
  std::vector<v1::CreatePayoutRequest> requests;
  std::map<std::string, std::string> expected;  // request_id -> outcome
  for (int i = 0; i < 40; ++i) {
    v1::CreatePayoutRequest request =
        ValidRequest(UniqueAccount(i % 4 == 1 ? "0409" : "1836"));
    if (i % 4 == 2) request.mutable_beneficiary()->set_ifsc("bad");
    expected[request.request_id()] = i % 4 == 1 ? "UPSTREAM_BENEFICIARY_EXISTS"
                                     : i % 4 == 2 ? "INVALID_REQUEST"
                                                  : "OK";
    requests.push_back(request);
  }
  requests.push_back(requests[0]);  // a replay inside the same stream

  absl::StatusOr<std::vector<v1::BatchCreatePayoutsResponse>> answers =
      gateway_.client().BatchCreatePayouts(requests, kCall);

  ASSERT_TRUE(answers.ok()) << answers.status();
  ASSERT_EQ(answers->size(), requests.size());
  std::map<std::string, int> seen;
  for (const v1::BatchCreatePayoutsResponse& answer : *answers) {
    ++seen[answer.request_id()];
    const std::string& want = expected.at(answer.request_id());
    if (want == "OK") {
      // The in-stream replay may find the first still PENDING.
      if (answer.has_error()) {
        EXPECT_EQ(answer.request_id(), requests[0].request_id());
        EXPECT_EQ(answer.error().code(),
                  static_cast<int>(grpc::StatusCode::ABORTED));
        continue;
      }
      ASSERT_TRUE(answer.has_payout()) << answer.request_id();
      EXPECT_EQ(answer.payout().state(), v1::PAYOUT_STATE_ACCEPTED);
    } else {
      ASSERT_TRUE(answer.has_error()) << answer.request_id();
      EXPECT_EQ(GetErrorDetails(FromRpcStatusProto(answer.error())).reason,
                want);
    }
  }
  EXPECT_EQ(seen.size(), expected.size());
  EXPECT_EQ(seen[requests[0].request_id()], 2);
  // 30 valid requests reached AOPay, each once; the invalid ones never did.
  EXPECT_EQ(sandbox_.CountPath(kPayoutPath), 30);
}

TEST(GatewayStandaloneTest,
     ConcurrentBatchStreamsKeepEachAnswerWithItsRequest) {
  // Many answers arriving while the stream is paused and resumed: each answer
  // must carry the payout of its own request, and each request must be sent
  // once (a request copied while the next read overwrote it would pay the
  // wrong beneficiary).
  SandboxProcess sandbox({"--latency=5ms"});
  const std::string dir = MakeTempDir();
  GatewayProcess gateway(sandbox.url(), dir + "/ledger.db");
  constexpr int kStreams = 4;
  constexpr int kPerStream = 600;
  std::vector<std::vector<v1::CreatePayoutRequest>> batches(kStreams);
  std::map<std::string, std::string> account_of;  // request_id -> account
  for (auto& batch : batches) {
    for (int i = 0; i < kPerStream; ++i) {
      batch.push_back(ValidRequest(UniqueAccount()));
      account_of[batch.back().request_id()] =
          batch.back().beneficiary().account_number();
    }
  }
  std::vector<absl::StatusOr<std::vector<v1::BatchCreatePayoutsResponse>>>
      answers(kStreams, absl::UnknownError("unset"));
  std::vector<std::thread> streams;
  for (int s = 0; s < kStreams; ++s) {
    streams.emplace_back([&, s] {
      answers[s] = gateway.client().BatchCreatePayouts(batches[s], kCall);
    });
  }
  for (std::thread& stream : streams) stream.join();

  for (int s = 0; s < kStreams; ++s) {
    ASSERT_TRUE(answers[s].ok()) << answers[s].status();
    ASSERT_EQ(answers[s]->size(), static_cast<size_t>(kPerStream));
    for (const v1::BatchCreatePayoutsResponse& answer : *answers[s]) {
      ASSERT_TRUE(answer.has_payout())
          << answer.request_id() << ": " << answer.error().message();
      EXPECT_EQ(answer.payout().request_id(), answer.request_id());
      EXPECT_EQ(answer.payout().beneficiary().account_number(),
                account_of.at(answer.request_id()));
    }
  }
  std::map<std::string, int> sent;
  for (const JournalEntry& entry : sandbox.Journal())
    ++sent[entry.account_number];
  EXPECT_EQ(sent.size(), account_of.size());
  for (const auto& [account, count] : sent) EXPECT_EQ(count, 1) << account;
}

TEST(GatewayStandaloneTest, UnreachableAopayIsUnavailableAndRecordsNothing) {
  // A port that was free a moment ago and has nothing listening now.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  const std::string url =
      "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

  const std::string dir = MakeTempDir();
  GatewayProcess gateway(url, dir + "/ledger.db");
  const v1::CreatePayoutRequest request = ValidRequest(UniqueAccount());
  absl::StatusOr<v1::Payout> payout =
      gateway.client().CreatePayout(request, kCall);
  ASSERT_EQ(payout.status().code(), absl::StatusCode::kUnavailable);
  const ErrorDetails details = GetErrorDetails(payout.status());
  EXPECT_EQ(details.reason, "UPSTREAM_UNAVAILABLE");
  EXPECT_TRUE(details.retry_delay.has_value());
  v1::GetPayoutRequest get;
  get.set_request_id(request.request_id());
  EXPECT_EQ(gateway.client().GetPayout(get, kCall).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(GatewayStandaloneTest, FullQueueIsResourceExhaustedAndSendsNothing) {
  SandboxProcess sandbox({"--slow=3s"});
  const std::string dir = MakeTempDir();
  GatewayProcess gateway(
      sandbox.url(), dir + "/ledger.db",
      {"--max_inflight=1", "--max_queue=0", "--upstream_timeout=10s"});
  const std::string slow_account = UniqueAccount("0504");
  absl::Notification slow_done;
  std::thread slow([&] {
    (void)gateway.client().CreatePayout(ValidRequest(slow_account), kCall);
    slow_done.Notify();
  });
  ASSERT_TRUE(sandbox.WaitForJournal(
      [&](const std::vector<JournalEntry>& journal) {
        return !journal.empty();
      },
      absl::Seconds(10)));

  const std::string account = UniqueAccount("1836");
  absl::StatusOr<v1::Payout> payout =
      gateway.client().CreatePayout(ValidRequest(account), kCall);
  EXPECT_EQ(payout.status().code(), absl::StatusCode::kResourceExhausted);
  const ErrorDetails details = GetErrorDetails(payout.status());
  EXPECT_EQ(details.reason, "OVERLOADED");
  EXPECT_TRUE(details.retry_delay.has_value());
  EXPECT_EQ(sandbox.PayoutsFor(account), 0);
  slow.join();
}

TEST(GatewayStandaloneTest, BuiltInSandboxByDefault) {
  const std::string dir = MakeTempDir();
  GatewayProcess gateway("sandbox", dir + "/ledger.db");
  absl::StatusOr<v1::Payout> payout =
      gateway.client().CreatePayout(ValidRequest(UniqueAccount()), kCall);
  ASSERT_TRUE(payout.ok()) << payout.status();
  EXPECT_EQ(payout->state(), v1::PAYOUT_STATE_ACCEPTED);
  EXPECT_THAT(gateway.Stderr(), HasSubstr("NO REAL MONEY"));
}

// Each thread of docs/architecture.md's table carries its name, so that
// `top -H` and perf tell them apart.
TEST(GatewayStandaloneTest, ThreadsCarryTheirNames) {
  const std::string dir = MakeTempDir();
  GatewayProcess gateway("sandbox", dir + "/ledger.db");
  const std::string tasks =
      absl::StrCat("/proc/", gateway.process().pid(), "/task");
  const auto names = [&tasks] {
    std::set<std::string> found;
    std::error_code error;
    for (const auto& task : std::filesystem::directory_iterator(tasks, error)) {
      std::ifstream comm(task.path() / "comm");
      std::string name;
      if (std::getline(comm, name)) found.insert(name);
    }
    return found;
  };
  const std::set<std::string> expected = {
      "ledger-writer", "ledger-reader", "callbacks",
      "aopay-curl",    "retry-timer",   "watch",
      "housekeeping",  "metrics-http",  "sandbox-loop"};
  EXPECT_TRUE(Eventually(
      [&] {
        const std::set<std::string> found = names();
        return std::includes(found.begin(), found.end(), expected.begin(),
                             expected.end());
      },
      absl::Seconds(10)))
      << "threads: " << absl::StrJoin(names(), ", ");
}

TEST(GatewayStandaloneTest, SigtermLetsInFlightPayoutsFinishAndBeRecorded) {
  SandboxProcess sandbox({"--slow=1500ms"});
  const std::string dir = MakeTempDir();
  const std::string ledger = dir + "/ledger.db";
  const v1::CreatePayoutRequest request = ValidRequest(UniqueAccount("0504"));
  absl::StatusOr<v1::Payout> payout;
  {
    GatewayProcess gateway(sandbox.url(), ledger, {"--upstream_timeout=10s"});
    std::thread caller(
        [&] { payout = gateway.client().CreatePayout(request, kCall); });
    ASSERT_TRUE(sandbox.WaitForJournal(
        [](const std::vector<JournalEntry>& journal) {
          return !journal.empty();
        },
        absl::Seconds(10)));
    const int status = gateway.process().Signal(SIGTERM);
    caller.join();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  ASSERT_TRUE(payout.ok()) << payout.status();
  EXPECT_EQ(payout->state(), v1::PAYOUT_STATE_ACCEPTED);

  GatewayProcess restarted(sandbox.url(), ledger);
  v1::GetPayoutRequest get;
  get.set_request_id(request.request_id());
  absl::StatusOr<v1::Payout> stored = restarted.client().GetPayout(get, kCall);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->state(), v1::PAYOUT_STATE_ACCEPTED);
  EXPECT_EQ(stored->transaction_id(), payout->transaction_id());
}

// One version, from CMakeLists.txt, in both programs and in /metrics.
TEST_F(GatewayTest, ProgramsAndMetricsTellOneVersionAndCommit) {
  const CommandResult server = RunCommand({PAYOUT_SERVER_BIN, "--version"});
  EXPECT_EQ(server.exit_code, 0);
  EXPECT_THAT(server.out,
              ::testing::MatchesRegex(
                  "payout-server [0-9]+\\.[0-9]+\\.[0-9]+ \\(commit "
                  "([0-9a-f]{12}|unknown)\\)\n"));
  const CommandResult ctl = RunCommand({PAYOUTCTL_BIN, "--version"});
  EXPECT_EQ(ctl.exit_code, 0);
  // "payout-server V (commit C)" and "payoutctl V (commit C)": the same V, C.
  const std::string built = server.out.substr(server.out.find(' '));
  EXPECT_EQ(ctl.out, "payoutctl" + built);

  const std::string version = built.substr(1, built.find(' ', 1) - 1);
  const size_t commit_at = built.find("commit ") + 7;
  const std::string commit =
      built.substr(commit_at, built.find(')') - commit_at);
  EXPECT_THAT(HttpGet(gateway_.metrics_address(), "/metrics"),
              HasSubstr("payout_build_info{version=\"" + version +
                        "\",commit=\"" + commit + "\"} 1\n"));
}

TEST(GatewayStandaloneTest, BadFlagsStopWithOneLineAndNonZeroExit) {
  for (const std::vector<std::string>& flags :
       {std::vector<std::string>{"--max_inflight=0"},
        {"--ledger=mysql://x"},
        {"--aopay_url=http://10.1.2.3", "--registration_id=AOP-1"},
        {"--aopay_url=https://payout.aopay.co.in"},
        {"--upstream_timeout=banana"},
        {"--ledger_commit_delay=-1ms"},
        {"--ledger_commit_delay=1s"},
        {"--owner_lease=1s"},
        {"--log_format=xml"}}) {
    const std::string dir = MakeTempDir();
    std::vector<std::string> argv = {
        PAYOUT_SERVER_BIN, "--listen=127.0.0.1:0",
        "--metrics_listen=", "--ledger=sqlite:" + dir + "/ledger.db"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    CommandResult result = RunCommand(argv);
    EXPECT_NE(result.exit_code, 0) << flags[0];
    EXPECT_THAT(result.out, Not(HasSubstr("listening on"))) << flags[0];
    EXPECT_FALSE(result.err.empty()) << flags[0];
  }
}

// --help lists each program's own flags (absl's default looks for a file
// named after the program, and neither program has one), under their file's
// place in the project, not the path of the tree it was built in.
TEST(GatewayStandaloneTest, HelpListsTheProgramsOwnFlags) {
  const CommandResult server = RunCommand({PAYOUT_SERVER_BIN, "--help"});
  const std::string server_help = server.out + server.err;
  EXPECT_THAT(server_help, HasSubstr("\n  Flags from server/app/main.cc:\n"));
  for (const char* flag :
       {"--listen", "--aopay_url", "--ledger", "--ledger_commit_delay",
        "--clients", "--webhook_url", "--log_format"}) {
    EXPECT_THAT(server_help, HasSubstr(flag)) << flag;
  }
  EXPECT_THAT(server_help, Not(HasSubstr("No flags matched")));
  EXPECT_THAT(server_help, Not(HasSubstr("--flagfile")))
      << "absl's own flags belong to --helpfull";

  const CommandResult sandbox = RunCommand({AOPAY_SANDBOX_BIN, "--help"});
  const std::string sandbox_help = sandbox.out + sandbox.err;
  for (const char* flag : {"--listen", "--latency", "--registrations"}) {
    EXPECT_THAT(sandbox_help, HasSubstr(flag)) << flag;
  }
  EXPECT_THAT(sandbox_help, Not(HasSubstr("No flags matched")));
  EXPECT_THAT(sandbox_help,
              HasSubstr("\n  Flags from server/sandbox/sandbox_main.cc:\n"));
}

// The aopay-sandbox program's own command line and port.
TEST(SandboxProgramTest, KeepsItsFlagsAndItsPort) {
  // --threads sizes nothing any more, but is accepted and checked as before.
  SandboxProcess sandbox({"--threads=512"});
  ASSERT_FALSE(sandbox.url().empty());
  EXPECT_EQ(
      RunCommand({AOPAY_SANDBOX_BIN, "--listen=127.0.0.1:0", "--threads=0"})
          .exit_code,
      2);
  // A second sandbox on the same port fails rather than sharing it (the
  // timeout ends one that would serve).
  const CommandResult second =
      RunCommand({"/usr/bin/timeout", "10", AOPAY_SANDBOX_BIN,
                  "--listen=" + sandbox.url().substr(std::strlen("http://"))});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_THAT(second.err, HasSubstr("cannot listen on"));
  EXPECT_THAT(second.out, Not(HasSubstr("listening on")));
}

}  // namespace
}  // namespace aopay::testing
