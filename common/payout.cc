#include "common/payout.h"

#include "absl/strings/str_cat.h"

namespace aopay {

absl::string_view TransferModeName(TransferMode mode) {
  switch (mode) {
    case TransferMode::kNeft:
      return "NEFT";
    case TransferMode::kImps:
      return "IMPS";
    case TransferMode::kUnspecified:
      break;
  }
  return "UNSPECIFIED";
}

bool IsOutcome(PayoutState state) {
  return state == PayoutState::kSucceeded || state == PayoutState::kFailed ||
         state == PayoutState::kReversed;
}

bool IsFinal(PayoutState state) {
  return IsOutcome(state) || state == PayoutState::kCancelled;
}

bool ApprovalMayMove(PayoutState from, PayoutState to) {
  return from == PayoutState::kAwaitingApproval &&
         (to == PayoutState::kPending || to == PayoutState::kCancelled);
}

bool StatusMayMove(PayoutState from, PayoutState to) {
  if (from == to) return false;
  switch (from) {
    case PayoutState::kUnknown:
      return to == PayoutState::kAccepted || IsOutcome(to);
    case PayoutState::kAccepted:
      return IsOutcome(to);
    case PayoutState::kSucceeded:
      return to == PayoutState::kReversed;
    default:
      return false;
  }
}

bool OperatorMayMove(PayoutState from, PayoutState to) {
  const bool outcome = to == PayoutState::kAccepted || IsOutcome(to);
  if (!outcome) return false;
  if (from == PayoutState::kUnknown) return true;
  return from == PayoutState::kAccepted && to != PayoutState::kAccepted;
}

absl::string_view PayoutStateName(PayoutState state) {
  switch (state) {
    case PayoutState::kPending:
      return "PENDING";
    case PayoutState::kAccepted:
      return "ACCEPTED";
    case PayoutState::kSucceeded:
      return "SUCCEEDED";
    case PayoutState::kFailed:
      return "FAILED";
    case PayoutState::kReversed:
      return "REVERSED";
    case PayoutState::kUnknown:
      return "UNKNOWN";
    case PayoutState::kAwaitingApproval:
      return "AWAITING_APPROVAL";
    case PayoutState::kCancelled:
      return "CANCELLED";
    case PayoutState::kUnspecified:
      break;
  }
  return "UNSPECIFIED";
}

std::string WhoWithNote(absl::string_view role, absl::string_view name,
                        absl::string_view note) {
  std::string who(role);
  if (!name.empty()) absl::StrAppend(&who, " ", name);
  if (!note.empty()) absl::StrAppend(&who, ": ", note);
  return who;
}

WhoAndNote SplitWhoAndNote(absl::string_view who_with_note) {
  const size_t colon = who_with_note.find(": ");
  if (colon == absl::string_view::npos) return {who_with_note, {}};
  return {who_with_note.substr(0, colon), who_with_note.substr(colon + 2)};
}

}  // namespace aopay
