// What operators and tools see: health per service and server reflection
// with the proto comments.

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace aopay::testing {
namespace {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

TEST(ObservabilityTest, HealthIsServingOverallAndPerService) {
  const std::string dir = MakeTempDir();
  GatewayProcess gateway("sandbox", dir + "/ledger.db");
  for (const std::string service : {"", "aopay.payout.v1.PayoutService",
                                    "aopay.payout.v1.PayoutAdminService"}) {
    EXPECT_EQ(CheckHealth(gateway.channel(), service),
              HealthCheckResponse::SERVING)
        << service;
  }
}

TEST(ObservabilityTest, ReflectionListsServicesAndDescribesWithComments) {
  const std::string dir = MakeTempDir();
  GatewayProcess gateway("sandbox", dir + "/ledger.db");
  auto stub =
      ::grpc::reflection::v1::ServerReflection::NewStub(gateway.channel());
  grpc::ClientContext context;
  auto stream = stub->ServerReflectionInfo(&context);

  ::grpc::reflection::v1::ServerReflectionRequest list;
  list.set_list_services("");
  ASSERT_TRUE(stream->Write(list));
  ::grpc::reflection::v1::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::vector<std::string> names;
  for (const auto& service : response.list_services_response().service()) {
    names.push_back(service.name());
  }
  EXPECT_THAT(names,
              ::testing::IsSupersetOf({"aopay.payout.v1.PayoutService",
                                       "aopay.payout.v1.PayoutAdminService",
                                       "grpc.health.v1.Health"}));

  ::grpc::reflection::v1::ServerReflectionRequest describe;
  describe.set_file_containing_symbol("aopay.payout.v1.CreatePayoutRequest");
  ASSERT_TRUE(stream->Write(describe));
  ASSERT_TRUE(stream->Read(&response));
  bool commented = false;
  for (const std::string& bytes :
       response.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    if (file.name() != "aopay/payout/v1/payout.proto") continue;
    for (const auto& location : file.source_code_info().location()) {
      if (absl::StrContains(location.leading_comments(),
                            "At most one payout is ever sent")) {
        commented = true;
      }
    }
  }
  EXPECT_TRUE(commented);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace aopay::testing
