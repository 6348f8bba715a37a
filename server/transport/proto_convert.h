#ifndef AOPAY_SERVER_TRANSPORT_PROTO_CONVERT_H_
#define AOPAY_SERVER_TRANSPORT_PROTO_CONVERT_H_

// Conversions between the gRPC messages and the domain types. Pure functions.

#include <string>

#include "aopay/payout/v1/payout.pb.h"
#include "common/payout.h"
#include "server/ledger/ledger.h"

namespace aopay {

PayoutRequest FromProto(const payout::v1::CreatePayoutRequest& request);
// Unknown enum numbers become kUnspecified (and so fail validation).
TransferMode FromProto(payout::v1::TransferMode mode);
PayoutState FromProto(payout::v1::PayoutState state);

void ToProto(const Payout& payout, payout::v1::Payout* out);
payout::v1::TransferMode ToProto(TransferMode mode);
payout::v1::PayoutState ToProto(PayoutState state);
// A WatchPayouts event (and a webhook's body): its cursor, the payout as it
// stood after the change, the state before it and when it happened.
void ToProto(const WatchedEvent& watched, payout::v1::PayoutEvent* out);
// The event as JSON (protobuf's JSON mapping, lowerCamelCase names): the
// body of a webhook POST.
std::string PayoutEventJson(const WatchedEvent& watched);

}  // namespace aopay

#endif  // AOPAY_SERVER_TRANSPORT_PROTO_CONVERT_H_
