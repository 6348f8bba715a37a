#include "server/transport/proto_convert.h"

#include <google/protobuf/util/json_util.h>

#include <string>

#include "common/ids.h"
#include "server/transport/grpc_status.h"

namespace aopay {
namespace {

namespace v1 = payout::v1;

// The domain's enums carry the proto's numbers, so conversions are casts.
template <typename Domain, typename Proto>
constexpr bool Same(Domain domain, Proto proto) {
  return static_cast<int>(domain) == static_cast<int>(proto);
}
static_assert(Same(TransferMode::kUnspecified, v1::TRANSFER_MODE_UNSPECIFIED) &&
              Same(TransferMode::kNeft, v1::TRANSFER_MODE_NEFT) &&
              Same(TransferMode::kImps, v1::TRANSFER_MODE_IMPS));
static_assert(Same(PayoutState::kUnspecified, v1::PAYOUT_STATE_UNSPECIFIED) &&
              Same(PayoutState::kPending, v1::PAYOUT_STATE_PENDING) &&
              Same(PayoutState::kAccepted, v1::PAYOUT_STATE_ACCEPTED) &&
              Same(PayoutState::kSucceeded, v1::PAYOUT_STATE_SUCCEEDED) &&
              Same(PayoutState::kFailed, v1::PAYOUT_STATE_FAILED) &&
              Same(PayoutState::kReversed, v1::PAYOUT_STATE_REVERSED) &&
              Same(PayoutState::kUnknown, v1::PAYOUT_STATE_UNKNOWN) &&
              Same(PayoutState::kAwaitingApproval,
                   v1::PAYOUT_STATE_AWAITING_APPROVAL) &&
              Same(PayoutState::kCancelled, v1::PAYOUT_STATE_CANCELLED));
static_assert(Same(kLastPayoutState, v1::PayoutState_MAX),
              "every proto state is a domain state");

void ToTimestamp(absl::Time time, google::protobuf::Timestamp* out) {
  const int64_t micros = absl::ToUnixMicros(time);
  out->set_seconds(micros / 1'000'000);
  out->set_nanos(static_cast<int32_t>(micros % 1'000'000) * 1000);
}

void ToProto(const Beneficiary& beneficiary, v1::Beneficiary* out) {
  out->set_account_number(beneficiary.account_number);
  out->set_ifsc(beneficiary.ifsc);
  out->set_name(beneficiary.name);
  out->set_email(beneficiary.email);
  out->set_mobile(beneficiary.mobile);
}

}  // namespace

TransferMode FromProto(v1::TransferMode mode) {
  switch (mode) {
    case v1::TRANSFER_MODE_NEFT:
      return TransferMode::kNeft;
    case v1::TRANSFER_MODE_IMPS:
      return TransferMode::kImps;
    default:
      return TransferMode::kUnspecified;
  }
}

PayoutState FromProto(v1::PayoutState state) {
  if (state < v1::PAYOUT_STATE_UNSPECIFIED ||
      state > static_cast<int>(kLastPayoutState)) {
    return PayoutState::kUnspecified;
  }
  return static_cast<PayoutState>(state);
}

PayoutRequest FromProto(const v1::CreatePayoutRequest& request) {
  PayoutRequest out;
  out.request_id = request.request_id();
  out.beneficiary.account_number = request.beneficiary().account_number();
  out.beneficiary.ifsc = request.beneficiary().ifsc();
  out.beneficiary.name = request.beneficiary().name();
  out.beneficiary.email = request.beneficiary().email();
  out.beneficiary.mobile = request.beneficiary().mobile();
  out.amount_paise = request.amount_paise();
  out.mode = FromProto(request.mode());
  out.metadata = Metadata(request.metadata().begin(), request.metadata().end());
  return out;
}

v1::TransferMode ToProto(TransferMode mode) {
  return static_cast<v1::TransferMode>(mode);
}

v1::PayoutState ToProto(PayoutState state) {
  return static_cast<v1::PayoutState>(state);
}

void ToProto(const Payout& payout, v1::Payout* out) {
  out->set_payout_id(payout.payout_id);
  out->set_request_id(payout.request_id);
  out->set_state(ToProto(payout.state));
  ToProto(payout.beneficiary, out->mutable_beneficiary());
  out->set_amount_paise(payout.amount_paise);
  out->set_mode(ToProto(payout.mode));
  out->set_transaction_id(payout.transaction_id);
  out->set_transaction_reference_no(payout.transaction_reference_no);
  out->set_upstream_status(payout.upstream_status);
  out->set_bank_beneficiary_name(payout.bank_beneficiary_name);
  if (!payout.failure.ok())
    *out->mutable_failure() = ToRpcStatus(payout.failure);
  ToTimestamp(payout.create_time, out->mutable_create_time());
  ToTimestamp(payout.update_time, out->mutable_update_time());
  out->set_client(payout.client);
  out->mutable_metadata()->insert(payout.metadata.begin(),
                                  payout.metadata.end());
}

void ToProto(const WatchedEvent& watched, payout::v1::PayoutEvent* out) {
  out->set_cursor(EventCursor(watched.cursor));
  ToProto(watched.payout, out->mutable_payout());
  out->set_previous_state(ToProto(watched.event.from));
  const int64_t micros = absl::ToUnixMicros(watched.event.time);
  out->mutable_event_time()->set_seconds(micros / 1'000'000);
  out->mutable_event_time()->set_nanos(
      static_cast<int32_t>(micros % 1'000'000) * 1000);
  const WhoAndNote who = SplitWhoAndNote(watched.event.who);
  out->set_who(std::string(who.who));
  out->set_note(std::string(who.note));
  out->set_why(watched.event.why);
}

std::string PayoutEventJson(const WatchedEvent& watched) {
  payout::v1::PayoutEvent event;
  ToProto(watched, &event);
  std::string json;
  // Cannot fail for a message built here (no Any fields to resolve).
  (void)google::protobuf::util::MessageToJsonString(event, &json);
  return json;
}

}  // namespace aopay
