// payoutctl against a real gateway: output, --json, exact rupee input, and
// exit codes derived from the gRPC code (10 + code).

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"
#include "tests/integration/harness.h"

namespace aopay::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

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

TEST(PayoutctlStandaloneTest, UsageErrorsExitTwoAndNoGatewayExitsUnavailable) {
  EXPECT_EQ(RunCommand({PAYOUTCTL_BIN, "frobnicate"}).exit_code, 2);
  EXPECT_EQ(RunCommand({PAYOUTCTL_BIN, "create", "--amount=12.345"}).exit_code,
            2);
  CommandResult help = RunCommand({PAYOUTCTL_BIN, "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out + help.err, HasSubstr("Exit codes"));

  // Port 1 on loopback: nothing listens there.
  CommandResult down = RunCommand({PAYOUTCTL_BIN, "get", "--target=127.0.0.1:1",
                                   "--payout_id=po_x", "--timeout=5s"});
  EXPECT_EQ(down.exit_code, 10 + 14);  // UNAVAILABLE
}

}  // namespace
}  // namespace aopay::testing
