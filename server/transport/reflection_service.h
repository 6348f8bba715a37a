#ifndef AOPAY_SERVER_TRANSPORT_REFLECTION_SERVICE_H_
#define AOPAY_SERVER_TRANSPORT_REFLECTION_SERVICE_H_

// gRPC server reflection that shows the proto comments.
//
// gRPC's stock reflection plugin serves descriptors from protobuf's generated
// pool, and protoc's C++ generator leaves the comments (SourceCodeInfo) out of
// those, so `grpcurl describe` would print none. This service serves a
// FileDescriptorSet built with --include_source_info instead (for the gateway:
// aopay::PayoutDescriptorSet() from
// "aopay/payout/v1/payout_descriptor_set.h").
//
// It replaces the stock plugin: a binary must not also load gRPC's
// libgrpc++_reflection, which registers the v1alpha messages in protobuf's
// generated pool as well, so that protobuf aborts at start-up ("Symbol name
// grpc.reflection.v1alpha.ServerReflectionRequest conflicts").

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/server_builder.h"

namespace aopay {

namespace reflection_internal {
class Index;  // Defined in reflection_service.cc.
}  // namespace reflection_internal

// Serves grpc.reflection.v1.ServerReflection and its predecessor
// grpc.reflection.v1alpha.ServerReflection (grpcurl asks v1 first, then falls
// back to v1alpha) on the callback API. Answers list_services with the names
// given to Create; file_by_filename and file_containing_symbol (a service,
// method, message, enum, enum value, field or oneof, fully qualified, with or
// without a leading dot) with the file and every file it imports, directly or
// not, the requested file first, each a serialized FileDescriptorProto with
// its source_code_info; and the extension requests from the set's extensions
// (the gateway's protos declare none). A request that cannot be answered gets
// an error_response (NOT_FOUND for an unknown file, symbol or type); the
// stream goes on. Each request is answered in order, echoing host and request.
//
// Immutable once created: any number of streams may run at once. It must
// outlive every server it is registered with.
class ReflectionService {
 public:
  // `descriptor_set` is a serialized google.protobuf.FileDescriptorSet in
  // which every file follows the files it imports (protoc --include_imports
  // writes them so); it is copied. `service_names` are the full names
  // list_services answers, in that order (e.g.
  // "aopay.payout.v1.PayoutService", "grpc.health.v1.Health",
  // "grpc.reflection.v1.ServerReflection"); each must be a service described
  // by the set. Fails with INVALID_ARGUMENT otherwise, or if the set does not
  // parse or its files do not build.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ReflectionService>>
  Create(std::string_view descriptor_set,
         std::vector<std::string> service_names);

  ReflectionService(const ReflectionService&) = delete;
  ReflectionService& operator=(const ReflectionService&) = delete;
  ~ReflectionService();

  // Registers both versions of the service with `builder`. Call once, before
  // builder.BuildAndStart().
  void RegisterWith(grpc::ServerBuilder& builder);

 private:
  using Index = reflection_internal::Index;

  explicit ReflectionService(std::unique_ptr<const Index> index);

  std::unique_ptr<const Index> index_;
  std::unique_ptr<grpc::Service> v1_;
  std::unique_ptr<grpc::Service> v1alpha_;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_TRANSPORT_REFLECTION_SERVICE_H_
