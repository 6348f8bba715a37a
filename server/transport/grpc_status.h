#ifndef AOPAY_SERVER_TRANSPORT_GRPC_STATUS_H_
#define AOPAY_SERVER_TRANSPORT_GRPC_STATUS_H_

// The one place where domain errors become gRPC errors.

#include "absl/status/status.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/support/status.h"

namespace aopay {

// google.rpc.Status for `status`: code, message, and as details one ErrorInfo
// (domain kErrorDomain, the reason and metadata of ErrorDetails), a BadRequest
// when there are field violations and a RetryInfo when there is a retry delay.
// A non-OK status without details gets reason = its code's name.
google::rpc::Status ToRpcStatus(const absl::Status& status);

// The gRPC status for `status`, the google.rpc.Status above serialized into
// grpc-status-details-bin.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace aopay

#endif  // AOPAY_SERVER_TRANSPORT_GRPC_STATUS_H_
