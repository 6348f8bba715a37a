#include "common/payout.h"

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

bool IsFinal(PayoutState state) {
  return state == PayoutState::kSucceeded || state == PayoutState::kFailed ||
         state == PayoutState::kReversed;
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
    case PayoutState::kUnspecified:
      break;
  }
  return "UNSPECIFIED";
}

}  // namespace aopay
