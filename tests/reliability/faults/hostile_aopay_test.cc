// The real payout-server against an AOPay that misbehaves on the wire: every
// case asserts what the caller gets (docs/errors.md), what the ledger
// holds, how many copies of the payout AOPay received, and that the next
// payout still goes through.

#include "tests/reliability/faults/hostile_aopay.h"

#include <signal.h>

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace aopay::testing {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kCall = absl::Seconds(30);
constexpr absl::Duration kUpstreamTimeout = absl::Seconds(2);
// A hostile answer ends within the upstream timeout plus scheduling slack on
// a loaded 2-core machine; a call that ran much longer means something in
// the gateway waited for the hostile server instead of its own clock.
constexpr absl::Duration kMostACallMayTake = absl::Seconds(8);

struct HostileCase {
  std::string name;
  Hostility hostility;
  // The hostile request travels on a kept-alive connection that a normal
  // payout just used (where libcurl would silently re-send a request).
  bool reused_connection;
  absl::StatusCode code;
  std::string reason;
  // nullopt: nothing recorded, the request id is free again.
  std::optional<v1::PayoutState> recorded;
  int copies_received;  // of the hostile payout, by AOPay
  std::string message_fragment;

  friend void PrintTo(const HostileCase& c, std::ostream* os) { *os << c.name; }
};

class HostileAopayTest : public ::testing::TestWithParam<HostileCase> {
 protected:
  static void SetUpTestSuite() { signal(SIGPIPE, SIG_IGN); }
};

TEST_P(HostileAopayTest, CallerLedgerAndAopayAgreeAndTheNextPayoutGoesThrough) {
  const HostileCase& row = GetParam();
  const bool tls = row.hostility == Hostility::kStallTlsHandshake;
  LoopbackTlsIdentity identity;
  ASSERT_TRUE(identity.ok());
  HostileAopay aopay({row.hostility, row.reused_connection ? 1 : 0,
                      tls ? identity.context() : nullptr});
  std::vector<std::string> flags = {absl::StrCat(
      "--upstream_timeout=", absl::ToInt64Seconds(kUpstreamTimeout), "s")};
  if (tls) flags.push_back("--aopay_ca=" + identity.ca_file());
  const std::string dir = MakeTempDir();
  GatewayProcess gateway(aopay.url(), dir + "/ledger.db", flags);
  ASSERT_FALSE(gateway.address().empty());
  PayoutClient& client = gateway.client();

  int expected_requests = 0;
  if (row.reused_connection) {
    const std::string warm_account = UniqueAccount("1111");
    absl::StatusOr<v1::Payout> warm =
        client.CreatePayout(ValidRequest(warm_account), kCall);
    ASSERT_TRUE(warm.ok()) << warm.status();
    ASSERT_EQ(warm->state(), v1::PAYOUT_STATE_ACCEPTED);
    ASSERT_EQ(aopay.connections(), 1);
    ++expected_requests;
  }

  const std::string account = UniqueAccount("2222");
  const v1::CreatePayoutRequest request = ValidRequest(account);
  const absl::Time start = absl::Now();
  const absl::StatusOr<v1::Payout> hostile =
      client.CreatePayout(request, kCall);
  const absl::Duration took = absl::Now() - start;

  ASSERT_FALSE(hostile.ok()) << "accepted: " << hostile->DebugString();
  EXPECT_EQ(hostile.status().code(), row.code) << hostile.status();
  EXPECT_THAT(std::string(hostile.status().message()),
              HasSubstr(row.message_fragment));
  const ErrorDetails details = GetErrorDetails(hostile.status());
  EXPECT_EQ(details.reason, row.reason) << hostile.status();
  EXPECT_LT(took, kMostACallMayTake);
  if (row.reused_connection) {
    EXPECT_EQ(aopay.connections(), 1) << "the kept-alive connection was reused";
  }
  EXPECT_EQ(aopay.PayoutsFor(account), row.copies_received);
  expected_requests += row.copies_received;

  v1::GetPayoutRequest get;
  get.set_request_id(request.request_id());
  const absl::StatusOr<v1::Payout> stored = client.GetPayout(get, kCall);
  if (row.recorded.has_value()) {
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(stored->state(), *row.recorded);
    EXPECT_EQ(details.metadata.count("payoutId"), 1u);
    if (details.metadata.count("payoutId") == 1) {
      EXPECT_EQ(details.metadata.at("payoutId"), stored->payout_id());
    }
    // The caller's retry is answered from the ledger: nothing is sent.
    const absl::StatusOr<v1::Payout> retry =
        client.CreatePayout(request, kCall);
    EXPECT_EQ(retry.status().code(), row.code) << retry.status();
    EXPECT_EQ(GetErrorDetails(retry.status()).reason, row.reason);
  } else {
    EXPECT_EQ(stored.status().code(), absl::StatusCode::kNotFound)
        << stored.status();
    EXPECT_TRUE(details.retry_delay.has_value());
    EXPECT_EQ(details.metadata.count("payoutId"), 0u);
  }

  // The hostile connection is let go (the gateway does not keep reading an
  // endless body or holding a stalled socket)...
  EXPECT_TRUE(aopay.AwaitHostileDone());
  // ...and the next payout goes through.
  const std::string next_account = UniqueAccount("3333");
  const absl::StatusOr<v1::Payout> next =
      client.CreatePayout(ValidRequest(next_account), kCall);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->state(), v1::PAYOUT_STATE_ACCEPTED);
  EXPECT_EQ(aopay.PayoutsFor(next_account), 1);
  ++expected_requests;

  // Nothing else reached AOPay: no late re-send of the hostile payout, no
  // followed redirect.
  EXPECT_EQ(aopay.PayoutsFor(account), row.copies_received);
  EXPECT_EQ(aopay.requests(), expected_requests);
}

std::vector<HostileCase> Cases() {
  const auto unknown = [](std::string name, Hostility hostility, bool reused,
                          std::string fragment) {
    return HostileCase{std::move(name),
                       hostility,
                       reused,
                       absl::StatusCode::kDeadlineExceeded,
                       "OUTCOME_UNKNOWN",
                       v1::PAYOUT_STATE_UNKNOWN,
                       1,
                       std::move(fragment)};
  };
  std::vector<HostileCase> cases;
  for (const bool reused : {false, true}) {
    const std::string how = reused ? "OnReusedConnection" : "OnNewConnection";
    cases.push_back(unknown("OneBytePerSecond" + how,
                            Hostility::kOneBytePerSecond, reused, "unknown"));
    cases.push_back(unknown("HeadersWithoutBody" + how,
                            Hostility::kHeadersWithoutBody, reused, "unknown"));
    cases.push_back(unknown("EndlessChunkedFast" + how,
                            Hostility::kEndlessChunkedFast, reused, "1 MiB"));
    cases.push_back(unknown("EndlessChunkedSlow" + how,
                            Hostility::kEndlessChunkedSlow, reused, "unknown"));
    cases.push_back(unknown("ShortBodyThenClose" + how, Hostility::kShortBody,
                            reused, "unknown"));
    cases.push_back(unknown("ResetAfterHalfTheHeaders" + how,
                            Hostility::kResetMidHeaders, reused, "unknown"));
    cases.push_back(unknown("Redirect302" + how, Hostility::kRedirect302,
                            reused, "unknown"));
    cases.push_back(unknown("Redirect307" + how, Hostility::kRedirect307,
                            reused, "unknown"));
    // docs/aopay.md: a 429 that carries a transactionID is not "certainly
    // not sent".
    cases.push_back(unknown("TooManyRequestsWithTransaction" + how,
                            Hostility::kTooManyRequestsWithTransaction, reused,
                            "unknown"));
  }
  // The handshake never completes, so no request byte left the gateway.
  cases.push_back(
      HostileCase{"StalledTlsHandshake", Hostility::kStallTlsHandshake, false,
                  absl::StatusCode::kUnavailable, "UPSTREAM_UNAVAILABLE",
                  std::nullopt, 0, "not sent"});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Contract, HostileAopayTest,
                         ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<HostileCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace aopay::testing
