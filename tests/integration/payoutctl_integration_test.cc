// payoutctl against a real gateway: output, --json, exact rupee input, and
// exit codes derived from the gRPC code (10 + code). And `payoutctl token`,
// which needs no gateway.

#include <openssl/evp.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/clients.h"
#include "common/ids.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"
#include "tests/integration/harness.h"

namespace aopay::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

class PayoutctlTest : public ::testing::Test {
 protected:
  PayoutctlTest()
      : dir_(MakeTempDir()),
        sandbox_({"--settle=0s"}),
        gateway_(sandbox_.url(), dir_ + "/ledger.db",
                 {"--upstream_timeout=1s"}) {}

  CommandResult Run(std::vector<std::string> args) {
    std::vector<std::string> argv = {PAYOUTCTL_BIN, args[0],
                                     "--target=" + gateway_.address()};
    argv.insert(argv.end(), args.begin() + 1, args.end());
    return RunCommand(argv);
  }

  std::vector<std::string> CreateArgs(const std::string& account,
                                      const std::string& request_id) {
    return {"create",
            "--request_id=" + request_id,
            "--account=" + account,
            "--ifsc=SBIN0000002",
            "--name=Dean Jon",
            "--email=abc@gmail.com",
            "--mobile=9959640000",
            "--amount=12.34",
            "--mode=IMPS"};
  }

  std::string dir_;
  SandboxProcess sandbox_;
  GatewayProcess gateway_;
};

// What bash offers after sourcing `payoutctl completion bash`, for the words
// typed so far (the last one being completed).
std::string Completions(const std::string& typed) {
  const CommandResult result = RunCommand(
      {"/bin/bash", "-c",
       std::string("source <(") + PAYOUTCTL_BIN +
           " completion bash) && COMP_WORDS=(" + typed +
           ") && COMP_CWORD=$((${#COMP_WORDS[@]} - 1)) && { _payoutctl; "
           "echo \"${COMPREPLY[*]}\"; }"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  return result.out;
}

TEST(PayoutctlCompletionTest, BashCompletesCommandsFlagsAndValues) {
  EXPECT_EQ(Completions("payoutctl cre"), "create\n");
  EXPECT_EQ(Completions("payoutctl create --req"), "--request_id\n");
  EXPECT_EQ(Completions("payoutctl create --mode=N"), "--mode=NEFT\n");
  EXPECT_EQ(Completions("payoutctl list --state=UNK"), "--state=UNKNOWN\n");
  EXPECT_EQ(Completions("payoutctl webhook ve"), "verify\n");
  // A flag of another command is not offered.
  EXPECT_EQ(Completions("payoutctl get --ifs"), "\n");
  EXPECT_NE(RunCommand({PAYOUTCTL_BIN, "completion", "zsh"}).exit_code, 0);
}

TEST_F(PayoutctlTest, CreatePrintsTheAcceptedPayoutWithMaskedDetails) {
  const std::string account = UniqueAccount();
  CommandResult result = Run(CreateArgs(account, UniqueRequestId()));
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_THAT(result.out, HasSubstr("ACCEPTED"));
  EXPECT_THAT(result.out, HasSubstr("TERF"));
  EXPECT_THAT(result.out, HasSubstr(account.substr(8)));
  EXPECT_THAT(result.out, Not(HasSubstr(account)));
  EXPECT_EQ(sandbox_.PayoutsFor(account), 1);
}

TEST_F(PayoutctlTest, JsonOutputCarriesTheExactAmount) {
  std::vector<std::string> args =
      CreateArgs(UniqueAccount(), UniqueRequestId());
  args.push_back("--json");
  CommandResult result = Run(args);
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  rapidjson::Document json;
  json.Parse(result.out.c_str());
  ASSERT_FALSE(json.HasParseError()) << result.out;
  ASSERT_TRUE(json.IsObject());
  EXPECT_STREQ(json["state"].GetString(), "PAYOUT_STATE_ACCEPTED");
  EXPECT_STREQ(json["amountPaise"].GetString(), "1234");
  EXPECT_THAT(json["payoutId"].GetString(), ::testing::StartsWith("po_"));
}

TEST_F(PayoutctlTest, ErrorsPrintEveryViolationAndExitWithTenPlusTheCode) {
  std::vector<std::string> args =
      CreateArgs(UniqueAccount(), UniqueRequestId());
  args.push_back("--ifsc=SBIN1000002");
  args.push_back("--mobile=12345");
  CommandResult result = Run(args);
  EXPECT_EQ(result.exit_code, 10 + 3);  // INVALID_ARGUMENT
  const std::string printed = result.out + result.err;
  EXPECT_THAT(printed, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(printed, HasSubstr("INVALID_REQUEST"));
  EXPECT_THAT(printed, HasSubstr("beneficiary.ifsc"));
  EXPECT_THAT(printed, HasSubstr("beneficiary.mobile"));
}

TEST_F(PayoutctlTest, OutcomeUnknownAndNotFoundHaveTheirOwnExitCodes) {
  const std::string request_id = UniqueRequestId();
  CommandResult unknown = Run(CreateArgs(UniqueAccount("0500"), request_id));
  EXPECT_EQ(unknown.exit_code, 10 + 4);  // DEADLINE_EXCEEDED
  EXPECT_THAT(unknown.out + unknown.err, HasSubstr("OUTCOME_UNKNOWN"));

  CommandResult found = Run({"get", "--request_id=" + request_id});
  EXPECT_EQ(found.exit_code, 0) << found.out << found.err;
  EXPECT_THAT(found.out, HasSubstr("UNKNOWN"));

  CommandResult missing = Run({"get", "--request_id=no-such-request"});
  EXPECT_EQ(missing.exit_code, 10 + 5);  // NOT_FOUND
}

TEST_F(PayoutctlTest, ListAndResolve) {
  const std::string request_id = UniqueRequestId();
  ASSERT_EQ(Run(CreateArgs(UniqueAccount("0502"), request_id)).exit_code, 14);
  CommandResult listed = Run({"list", "--state=UNKNOWN", "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.out << listed.err;
  rapidjson::Document json;
  json.Parse(listed.out.c_str());
  ASSERT_TRUE(json.IsObject() && json.HasMember("payouts")) << listed.out;
  ASSERT_EQ(json["payouts"].Size(), 1u);
  const std::string payout_id = json["payouts"][0]["payoutId"].GetString();

  CommandResult resolved =
      Run({"resolve", "--payout_id=" + payout_id, "--state=FAILED",
           "--note=bank confirmed no credit"});
  EXPECT_EQ(resolved.exit_code, 0) << resolved.out << resolved.err;
  EXPECT_THAT(resolved.out, HasSubstr("FAILED"));
}

// Maker-checker from the command line: a gateway with a clients file (bearer
// tokens on loopback), a maker whose payouts above Rs 10 wait, a checker.
TEST_F(PayoutctlTest, ReportSumsTheWindowByStateAndListsUnknownPayouts) {
  ASSERT_EQ(Run(CreateArgs(UniqueAccount(), UniqueRequestId())).exit_code, 0);
  ASSERT_EQ(Run(CreateArgs(UniqueAccount(), UniqueRequestId())).exit_code, 0);
  // An account ending in 0500: the sandbox answers HTTP 500, UNKNOWN.
  CommandResult unknown = Run(CreateArgs(UniqueAccount("0500"), "req-unk-1"));
  ASSERT_EQ(unknown.exit_code, 14) << unknown.out << unknown.err;

  const std::string csv = dir_ + "/report.csv";
  const std::string from = absl::FormatTime(
      "%Y-%m-%dT%H:%M:%SZ", absl::Now() - absl::Hours(1), absl::UTCTimeZone());
  CommandResult report =
      Run({"report", "--from=" + from, "--csv=" + csv, "--json"});
  ASSERT_EQ(report.exit_code, 0) << report.out << report.err;
  rapidjson::Document json;
  json.Parse(report.out.c_str());
  ASSERT_TRUE(json.IsObject()) << report.out;
  EXPECT_EQ(json["count"].GetInt64(), 3);
  EXPECT_STREQ(json["amountPaise"].GetString(), "3702");
  std::map<std::string, int64_t> counts;
  for (const auto& row : json["byStateAndMode"].GetArray()) {
    counts[std::string(row["state"].GetString()) + "/" +
           row["mode"].GetString()] = row["count"].GetInt64();
  }
  EXPECT_EQ(counts["ACCEPTED/IMPS"], 2);
  EXPECT_EQ(counts["UNKNOWN/IMPS"], 1);
  ASSERT_EQ(json["unknownPayoutIds"].Size(), 1u);
  EXPECT_THAT(json["unknownPayoutIds"][0].GetString(),
              ::testing::StartsWith("po_"));

  const std::string rows = ReadFileOrEmpty(csv);
  EXPECT_EQ(std::count(rows.begin(), rows.end(), '\n'), 4) << rows;
  EXPECT_THAT(rows, HasSubstr("payout_id,request_id,client,state"));
  EXPECT_THAT(rows, HasSubstr("req-unk-1,,UNKNOWN,IMPS,1234,12.34,"));
  EXPECT_THAT(rows, Not(HasSubstr("1000000"))) << "account numbers are masked";

  // A window that ends before these payouts holds none of them.
  CommandResult empty = Run({"report", "--from=" + from, "--to=" + from + "x"});
  EXPECT_EQ(empty.exit_code, 2) << "a malformed --to is a usage error";
  CommandResult before =
      Run({"report", "--from=2020-01-01", "--to=2020-01-02", "--json"});
  ASSERT_EQ(before.exit_code, 0) << before.err;
  EXPECT_THAT(before.out, HasSubstr("\"count\":0"));
}

TEST_F(PayoutctlTest, WatchPrintsEachChangeAndResumesFromItsCursor) {
  ASSERT_EQ(Run(CreateArgs(UniqueAccount(), "req-watch-1")).exit_code, 0);
  CommandResult first =
      Run({"watch", "--json", "--count=2", "--after=" + EventCursor(0)});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  std::vector<std::string> lines =
      absl::StrSplit(absl::StripSuffix(first.out, "\n"), '\n');
  ASSERT_EQ(lines.size(), 2u) << first.out;
  rapidjson::Document created, accepted;
  created.Parse(lines[0].c_str());
  accepted.Parse(lines[1].c_str());
  ASSERT_TRUE(created.IsObject() && accepted.IsObject()) << first.out;
  EXPECT_STREQ(created["payout"]["state"].GetString(), "PAYOUT_STATE_PENDING");
  EXPECT_STREQ(accepted["payout"]["state"].GetString(),
               "PAYOUT_STATE_ACCEPTED");
  EXPECT_STREQ(accepted["previousState"].GetString(), "PAYOUT_STATE_PENDING");

  // From the last cursor: only what came after it.
  ASSERT_EQ(Run(CreateArgs(UniqueAccount(), "req-watch-2")).exit_code, 0);
  CommandResult next =
      Run({"watch", "--count=1",
           std::string("--after=") + accepted["cursor"].GetString()});
  ASSERT_EQ(next.exit_code, 0) << next.err;
  EXPECT_THAT(next.out, HasSubstr("UNSPECIFIED -> payout po_"));
  EXPECT_THAT(next.out, HasSubstr(" PENDING "));
  EXPECT_EQ(Run({"watch", "--after=bogus"}).exit_code, 13);
}

TEST(PayoutctlApprovalTest, CreateWithMetadataThenApproveRejectAndCancel) {
  const std::string dir = MakeTempDir();
  SandboxProcess sandbox({"--settle=0s"});
  const std::string maker_token = "maker-token-7d3f9a";
  const std::string checker_token = "checker-token-1b8e2c";
  const std::string clients = dir + "/clients";
  {
    std::ofstream out(clients);
    out << "maker " << TokenDigest(maker_token)
        << " payouts:write,payouts:read approval_above_paise=1000\n"
        << "checker " << TokenDigest(checker_token) << " approve\n";
  }
  GatewayProcess gateway(sandbox.url(), dir + "/ledger.db",
                         {"--clients=" + clients, "--allow_insecure_tokens"});
  auto run = [&](const std::string& token, std::vector<std::string> args) {
    std::vector<std::string> argv = {PAYOUTCTL_BIN, args[0],
                                     "--target=" + gateway.address(),
                                     "--token=" + token};
    argv.insert(argv.end(), args.begin() + 1, args.end());
    return RunCommand(argv);
  };
  auto create = [&](const std::string& account) {
    return run(maker_token, {"create", "--json", "--account=" + account,
                             "--ifsc=SBIN0000002", "--name=Dean Jon",
                             "--email=abc@gmail.com", "--mobile=9959640000",
                             "--amount=50.00", "--mode=IMPS",
                             "--metadata=invoice=INV-42,employee=E-7"});
  };
  auto payout_id = [](const std::string& out) {
    rapidjson::Document json;
    json.Parse(out.c_str());
    return json.IsObject() && json.HasMember("payoutId")
               ? std::string(json["payoutId"].GetString())
               : std::string();
  };

  const std::string account = UniqueAccount();
  CommandResult held = create(account);
  ASSERT_EQ(held.exit_code, 0) << held.err;
  EXPECT_THAT(held.out, HasSubstr("PAYOUT_STATE_AWAITING_APPROVAL"));
  EXPECT_THAT(held.out, HasSubstr("\"invoice\":\"INV-42\""));
  const std::string id = payout_id(held.out);
  ASSERT_FALSE(id.empty()) << held.out;
  EXPECT_EQ(sandbox.PayoutsFor(account), 0);

  // The maker cannot approve (no scope); the checker needs a note.
  EXPECT_EQ(
      run(maker_token, {"approve", "--payout_id=" + id, "--note=x"}).exit_code,
      17);  // 10 + PERMISSION_DENIED
  EXPECT_EQ(run(checker_token, {"approve", "--payout_id=" + id}).exit_code,
            13);  // 10 + INVALID_ARGUMENT
  CommandResult approved =
      run(checker_token, {"approve", "--payout_id=" + id, "--note=checked"});
  ASSERT_EQ(approved.exit_code, 0) << approved.out << approved.err;
  EXPECT_THAT(approved.out, HasSubstr("ACCEPTED"));
  EXPECT_THAT(approved.out, HasSubstr("metadata invoice"));
  EXPECT_EQ(sandbox.PayoutsFor(account), 1);

  const std::string second = payout_id(create(UniqueAccount()).out);
  CommandResult rejected = run(
      checker_token, {"reject", "--payout_id=" + second, "--note=duplicate"});
  ASSERT_EQ(rejected.exit_code, 0) << rejected.err;
  EXPECT_THAT(rejected.out, HasSubstr("CANCELLED"));

  const std::string third = payout_id(create(UniqueAccount()).out);
  CommandResult cancelled =
      run(maker_token, {"cancel", "--payout_id=" + third});
  ASSERT_EQ(cancelled.exit_code, 0) << cancelled.err;
  EXPECT_THAT(cancelled.out, HasSubstr("CANCELLED"));
  CommandResult again = run(maker_token, {"cancel", "--payout_id=" + third});
  EXPECT_EQ(again.exit_code, 19);  // 10 + FAILED_PRECONDITION
  EXPECT_THAT(again.err + again.out, HasSubstr("NOT_CANCELLABLE"));
  EXPECT_EQ(sandbox.Journal().size(), 1u);
}

TEST(PayoutctlStandaloneTest, UsageErrorsExitTwoAndNoGatewayExitsUnavailable) {
  EXPECT_EQ(RunCommand({PAYOUTCTL_BIN, "frobnicate"}).exit_code, 2);
  EXPECT_EQ(RunCommand({PAYOUTCTL_BIN, "create", "--amount=12.345"}).exit_code,
            2);
  CommandResult help = RunCommand({PAYOUTCTL_BIN, "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out + help.err, HasSubstr("Exit codes"));
  // Each command's name stands apart from its summary, the longest too.
  EXPECT_THAT(help.out + help.err, HasSubstr("\n  completion print a shell"));
  EXPECT_THAT(help.out + help.err, HasSubstr("\n  help       show this text"));

  // Port 1 on loopback: nothing listens there.
  CommandResult down = RunCommand({PAYOUTCTL_BIN, "get", "--target=127.0.0.1:1",
                                   "--payout_id=po_x", "--timeout=5s"});
  EXPECT_EQ(down.exit_code, 10 + 14);  // UNAVAILABLE
}

// SHA-256 of `text` in lower-case hex, computed here rather than with the
// code under test.
std::string Sha256Hex(absl::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EXPECT_EQ(EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(),
                       nullptr),
            1);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), length));
}

struct TokenOutput {
  std::string token;
  std::string line;
  std::string digest;
};

// Runs `payoutctl token ARGS... --json` and reads its one JSON object.
TokenOutput RunTokenJson(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {PAYOUTCTL_BIN, "token"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--json");
  const CommandResult result = RunCommand(argv);
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  rapidjson::Document json;
  json.Parse(result.out.c_str());
  TokenOutput out;
  if (json.HasParseError() || !json.IsObject() || !json.HasMember("token") ||
      !json.HasMember("line") || !json.HasMember("digest")) {
    ADD_FAILURE() << "not the token JSON: " << result.out;
    return out;
  }
  EXPECT_EQ(json.MemberCount(), 3u) << result.out;
  out.token = json["token"].GetString();
  out.line = json["line"].GetString();
  out.digest = json["digest"].GetString();
  return out;
}

TEST(PayoutctlTokenTest, PrintedLineParsesAndAdmitsThePrintedToken) {
  const TokenOutput out = RunTokenJson({"payroll-svc"});
  // 32 random bytes, base64url without padding.
  EXPECT_THAT(out.token, MatchesRegex("[A-Za-z0-9_-]{43}"));
  EXPECT_EQ(out.digest, Sha256Hex(out.token));
  EXPECT_EQ(out.line,
            "payroll-svc " + out.digest + " payouts:write,payouts:read");

  absl::StatusOr<std::shared_ptr<const ClientRegistry>> registry =
      ClientRegistry::Parse(out.line);
  ASSERT_TRUE(registry.ok()) << registry.status();
  ASSERT_EQ((*registry)->clients().size(), 1u);
  const Client* client = (*registry)->FindByToken(out.token);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->name, "payroll-svc");
  EXPECT_EQ(client->scopes, kScopeWrite | kScopeRead);
  EXPECT_FALSE(client->max_payout_paise.has_value());
  EXPECT_FALSE(client->daily_paise.has_value());
}

TEST(PayoutctlTokenTest, ScopesAndLimitsGoIntoTheLine) {
  const TokenOutput out =
      RunTokenJson({"ops.console_2", "payouts:read,admin,approve",
                    "max_payout_paise=5000000", "daily_paise=200000000"});
  EXPECT_EQ(out.digest, Sha256Hex(out.token));
  absl::StatusOr<std::shared_ptr<const ClientRegistry>> registry =
      ClientRegistry::Parse(out.line);
  ASSERT_TRUE(registry.ok()) << registry.status();
  const Client* client = (*registry)->FindByToken(out.token);
  ASSERT_NE(client, nullptr) << out.line;
  EXPECT_EQ(client->name, "ops.console_2");
  EXPECT_EQ(client->scopes, kScopeRead | kScopeAdmin | kScopeApprove);
  EXPECT_EQ(client->max_payout_paise, 5000000);
  EXPECT_EQ(client->daily_paise, 200000000);

  // Limits without SCOPES keep the default scopes.
  const TokenOutput limits_only = RunTokenJson({"batch", "daily_paise=7"});
  registry = ClientRegistry::Parse(limits_only.line);
  ASSERT_TRUE(registry.ok()) << registry.status();
  client = (*registry)->FindByToken(limits_only.token);
  ASSERT_NE(client, nullptr) << limits_only.line;
  EXPECT_EQ(client->scopes, kScopeWrite | kScopeRead);
  EXPECT_EQ(client->daily_paise, 7);
}

TEST(PayoutctlTokenTest, HumanOutputHasTheTokenAndTheLine) {
  const CommandResult result =
      RunCommand({PAYOUTCTL_BIN, "token", "payroll-svc", "payouts:write"});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const std::vector<std::string> lines =
      absl::StrSplit(result.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << result.out;
  ASSERT_THAT(lines[0], MatchesRegex("token  [A-Za-z0-9_-]{43}"));
  ASSERT_THAT(lines[1], MatchesRegex("line   payroll-svc [0-9a-f]{64} "
                                     "payouts:write"));
  const std::string token = lines[0].substr(7);
  const std::string line = lines[1].substr(7);
  EXPECT_THAT(line, HasSubstr(Sha256Hex(token)));
  absl::StatusOr<std::shared_ptr<const ClientRegistry>> registry =
      ClientRegistry::Parse(line);
  ASSERT_TRUE(registry.ok()) << registry.status();
  EXPECT_NE((*registry)->FindByToken(token), nullptr);
  // The advice goes to stderr and never repeats the token.
  EXPECT_THAT(result.err, HasSubstr("clients file"));
  EXPECT_THAT(result.err, Not(HasSubstr(token)));
}

TEST(PayoutctlTokenTest, TwoRunsDiffer) {
  const TokenOutput first = RunTokenJson({"payroll-svc"});
  const TokenOutput second = RunTokenJson({"payroll-svc"});
  EXPECT_FALSE(first.token.empty());
  EXPECT_NE(first.token, second.token);
  EXPECT_NE(first.digest, second.digest);
  EXPECT_NE(first.line, second.line);
}

TEST(PayoutctlTokenTest, BadInputIsAUsageErrorAndPrintsNoToken) {
  struct BadCase {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<BadCase> cases = {
      {{}, "token needs NAME"},
      {{"payroll-svc", "payouts:delete"}, "unknown scope 'payouts:delete'"},
      {{"payroll-svc", "payouts:write,Admin"}, "unknown scope 'Admin'"},
      {{"payroll-svc", "payouts:write,"}, "empty scope"},
      {{"payroll-svc", ","}, "no scope"},
      {{"payroll/svc"}, "bad client name"},
      {{std::string(65, 'n')}, "bad client name"},
      {{"payroll svc"}, "bad argument"},
      {{"payroll-svc", "admin#x"}, "bad argument"},
      {{"payroll-svc", "admin", "weekly_paise=5"},
       "unknown limit 'weekly_paise'"},
      {{"payroll-svc", "admin", "daily_paise=0"},
       "daily_paise must be a positive integer"},
      {{"payroll-svc", "daily_paise=1", "daily_paise=2"},
       "daily_paise given twice"},
      {{"payroll-svc", "admin", "payouts:read"}, "is not LIMIT=VALUE"},
      // The gateway's flags do not apply: token calls no gateway.
      {{"payroll-svc", "--target=127.0.0.1:1"}, "does not apply to 'token'"},
      {{"payroll-svc", "--token=abc"}, "does not apply to 'token'"},
  };
  for (const BadCase& c : cases) {
    std::vector<std::string> argv = {PAYOUTCTL_BIN, "token"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    for (bool json : {false, true}) {
      if (json) argv.push_back("--json");
      const CommandResult result = RunCommand(argv);
      const std::string what = absl::StrJoin(argv, " ");
      EXPECT_EQ(result.exit_code, 2) << what << "\n" << result.err;
      EXPECT_THAT(result.err, HasSubstr(c.says)) << what;
      EXPECT_EQ(result.out, "") << what;
    }
  }
}

}  // namespace
}  // namespace aopay::testing
