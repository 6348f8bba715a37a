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

std::optional<PayoutState> ParsePayoutStateName(absl::string_view name) {
  for (const PayoutState state :
       {PayoutState::kUnspecified, PayoutState::kPending,
        PayoutState::kAccepted, PayoutState::kSucceeded, PayoutState::kFailed,
        PayoutState::kReversed, PayoutState::kUnknown}) {
    if (PayoutStateName(state) == name) return state;
  }
  return std::nullopt;
}

bool IsFinalState(PayoutState state) {
  return state == PayoutState::kSucceeded || state == PayoutState::kFailed ||
         state == PayoutState::kReversed;
}

PayoutRequest RequestOf(const Payout& payout) {
  PayoutRequest request;
  request.request_id = payout.request_id;
  request.beneficiary = payout.beneficiary;
  request.amount_paise = payout.amount_paise;
  request.mode = payout.mode;
  return request;
}

}  // namespace aopay
