#ifndef AOPAY_SERVER_TRANSPORT_PROTO_CONVERT_H_
#define AOPAY_SERVER_TRANSPORT_PROTO_CONVERT_H_

// Conversions between the gRPC messages and the domain types. Pure functions.

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

}  // namespace aopay

#endif  // AOPAY_SERVER_TRANSPORT_PROTO_CONVERT_H_
