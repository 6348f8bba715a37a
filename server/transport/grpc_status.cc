#include "server/transport/grpc_status.h"

#include <string>

#include "absl/strings/ascii.h"
#include "common/errors.h"
#include "google/rpc/error_details.pb.h"

namespace aopay {

google::rpc::Status ToRpcStatus(const absl::Status& status) {
  google::rpc::Status rpc;
  rpc.set_code(static_cast<int>(status.code()));
  if (status.ok()) return rpc;
  rpc.set_message(std::string(status.message()));

  ErrorDetails details = GetErrorDetails(status);
  google::rpc::ErrorInfo info;
  info.set_reason(
      details.reason.empty()
          ? absl::AsciiStrToUpper(absl::StatusCodeToString(status.code()))
          : details.reason);
  info.set_domain(std::string(kErrorDomain));
  for (const auto& [key, value] : details.metadata) {
    (*info.mutable_metadata())[key] = value;
  }
  rpc.add_details()->PackFrom(info);

  if (!details.violations.empty()) {
    google::rpc::BadRequest bad_request;
    for (const FieldViolation& violation : details.violations) {
      auto* field = bad_request.add_field_violations();
      field->set_field(violation.field);
      field->set_description(violation.description);
    }
    rpc.add_details()->PackFrom(bad_request);
  }
  if (details.retry_delay.has_value()) {
    google::rpc::RetryInfo retry;
    absl::Duration nanos;
    const int64_t seconds =
        absl::IDivDuration(*details.retry_delay, absl::Seconds(1), &nanos);
    retry.mutable_retry_delay()->set_seconds(seconds);
    retry.mutable_retry_delay()->set_nanos(
        static_cast<int32_t>(absl::ToInt64Nanoseconds(nanos)));
    rpc.add_details()->PackFrom(retry);
  }
  return rpc;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()),
                      ToRpcStatus(status).SerializeAsString());
}

}  // namespace aopay
