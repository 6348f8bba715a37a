// Which state may follow which: the status endpoint's moves and the
// operator's, for every pair of states.

#include <set>
#include <string>
#include <utility>

#include "common/payout.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

using S = PayoutState;
using Move = std::pair<S, S>;

constexpr S kAll[] = {S::kUnspecified, S::kPending, S::kAccepted,
                      S::kSucceeded,   S::kFailed,  S::kReversed,
                      S::kUnknown};

TEST(PayoutStateTest, StatusEndpointMovesOnlyTheseWays) {
  const std::set<Move> allowed = {
      {S::kAccepted, S::kSucceeded}, {S::kAccepted, S::kFailed},
      {S::kAccepted, S::kReversed},  {S::kSucceeded, S::kReversed},
      {S::kUnknown, S::kAccepted},   {S::kUnknown, S::kSucceeded},
      {S::kUnknown, S::kFailed},     {S::kUnknown, S::kReversed}};
  for (S from : kAll) {
    for (S to : kAll) {
      EXPECT_EQ(StatusMayMove(from, to), allowed.count({from, to}) == 1)
          << PayoutStateName(from) << " -> " << PayoutStateName(to);
    }
  }
}

TEST(PayoutStateTest, OperatorMovesOnlyTheseWays) {
  const std::set<Move> allowed = {
      {S::kUnknown, S::kAccepted},   {S::kUnknown, S::kSucceeded},
      {S::kUnknown, S::kFailed},     {S::kUnknown, S::kReversed},
      {S::kAccepted, S::kSucceeded}, {S::kAccepted, S::kFailed},
      {S::kAccepted, S::kReversed}};
  for (S from : kAll) {
    for (S to : kAll) {
      EXPECT_EQ(OperatorMayMove(from, to), allowed.count({from, to}) == 1)
          << PayoutStateName(from) << " -> " << PayoutStateName(to);
    }
  }
}

TEST(PayoutStateTest, FinalStatesAreTheOnesAopayOrAnOperatorSettled) {
  for (S state : kAll) {
    const bool final =
        state == S::kSucceeded || state == S::kFailed || state == S::kReversed;
    EXPECT_EQ(IsFinal(state), final) << PayoutStateName(state);
  }
}

// Who made a change and the note, as events keep them and give them back.
TEST(PayoutStateTest, WhoAndNoteGoTogetherAndApartAgain) {
  EXPECT_EQ(WhoWithNote("approver", "alice", "invoice 42: checked"),
            "approver alice: invoice 42: checked");
  EXPECT_EQ(WhoWithNote("operator", "", "bank statement"),
            "operator: bank statement");
  EXPECT_EQ(WhoWithNote("client", "maker", ""), "client maker");
  const std::string kept =
      WhoWithNote("approver", "alice", "invoice 42: checked");
  const WhoAndNote split = SplitWhoAndNote(kept);  // views into `kept`
  EXPECT_EQ(split.who, "approver alice");
  EXPECT_EQ(split.note, "invoice 42: checked");
  EXPECT_EQ(SplitWhoAndNote("recovery by gw-1").who, "recovery by gw-1");
  EXPECT_EQ(SplitWhoAndNote("recovery by gw-1").note, "");
}

}  // namespace
}  // namespace aopay
