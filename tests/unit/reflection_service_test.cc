#include "server/transport/reflection_service.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "aopay/payout/v1/payout_descriptor_set.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/descriptor_database.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

using ::google::protobuf::FileDescriptorProto;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::IsSupersetOf;

constexpr char kPayoutProto[] = "aopay/payout/v1/payout.proto";
constexpr int kNotFound = static_cast<int>(grpc::StatusCode::NOT_FOUND);

const std::vector<std::string>& ServiceNames() {
  static const auto* const kNames = new std::vector<std::string>{
      "aopay.payout.v1.PayoutService",
      "aopay.payout.v1.PayoutAdminService",
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
  };
  return *kNames;
}

// A server on a free loopback port with the reflection service (built from
// the embedded descriptor set) and gRPC's built-in health service.
class ReflectionServer {
 public:
  ReflectionServer() {
    absl::StatusOr<std::unique_ptr<ReflectionService>> service =
        ReflectionService::Create(PayoutDescriptorSet(), ServiceNames());
    EXPECT_TRUE(service.ok()) << service.status();
    if (!service.ok()) return;
    service_ = *std::move(service);

    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    service_->RegisterWith(builder);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    EXPECT_NE(port, 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials());
  }
  ~ReflectionServer() {
    if (server_ != nullptr) server_->Shutdown();
  }

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  std::unique_ptr<ReflectionService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

struct V1 {
  using Service = grpc::reflection::v1::ServerReflection;
  using Request = grpc::reflection::v1::ServerReflectionRequest;
  using Response = grpc::reflection::v1::ServerReflectionResponse;
};
struct V1Alpha {
  using Service = grpc::reflection::v1alpha::ServerReflection;
  using Request = grpc::reflection::v1alpha::ServerReflectionRequest;
  using Response = grpc::reflection::v1alpha::ServerReflectionResponse;
};

// What a table row asks.
enum class Ask { kSymbol, kFile, kExtensionNumbers, kExtension };

template <typename Request>
Request MakeRequest(Ask ask, const std::string& value) {
  Request request;
  request.set_host("reflection.test");
  switch (ask) {
    case Ask::kSymbol:
      request.set_file_containing_symbol(value);
      break;
    case Ask::kFile:
      request.set_file_by_filename(value);
      break;
    case Ask::kExtensionNumbers:
      request.set_all_extension_numbers_of_type(value);
      break;
    case Ask::kExtension:
      request.mutable_file_containing_extension()->set_containing_type(value);
      request.mutable_file_containing_extension()->set_extension_number(1000);
      break;
  }
  return request;
}

template <typename Api>
class ReflectionServiceTest : public ::testing::Test {
 protected:
  using Request = typename Api::Request;
  using Response = typename Api::Response;

  // Sends all requests on one stream, then reads every answer.
  std::vector<Response> AskAll(const std::vector<Request>& requests) {
    auto stub = Api::Service::NewStub(server_.channel());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    auto stream = stub->ServerReflectionInfo(&context);
    for (const Request& request : requests) {
      EXPECT_TRUE(stream->Write(request));
    }
    EXPECT_TRUE(stream->WritesDone());
    std::vector<Response> responses;
    Response response;
    while (stream->Read(&response)) responses.push_back(response);
    const grpc::Status status = stream->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    return responses;
  }

  Response AskOne(const Request& request) {
    std::vector<Response> responses = AskAll({request});
    EXPECT_EQ(responses.size(), 1u);
    return responses.empty() ? Response() : responses.front();
  }

  // The files of a file_descriptor_response, parsed; fails the test if the
  // response is not one.
  static std::vector<FileDescriptorProto> Files(const Response& response) {
    EXPECT_TRUE(response.has_file_descriptor_response())
        << response.error_response().error_message();
    std::vector<FileDescriptorProto> files;
    for (const std::string& bytes :
         response.file_descriptor_response().file_descriptor_proto()) {
      FileDescriptorProto file;
      EXPECT_TRUE(file.ParseFromString(bytes));
      files.push_back(std::move(file));
    }
    return files;
  }

  static std::vector<std::string> Names(
      const std::vector<FileDescriptorProto>& files) {
    std::vector<std::string> names;
    for (const FileDescriptorProto& file : files) names.push_back(file.name());
    return names;
  }

  ReflectionServer server_;
};

using Apis = ::testing::Types<V1, V1Alpha>;
TYPED_TEST_SUITE(ReflectionServiceTest, Apis);

TYPED_TEST(ReflectionServiceTest, ListServicesNamesTheGivenServicesInOrder) {
  typename TypeParam::Request request;
  request.set_list_services("*");
  const auto response = this->AskOne(request);

  ASSERT_TRUE(response.has_list_services_response());
  std::vector<std::string> names;
  for (const auto& service : response.list_services_response().service()) {
    names.push_back(service.name());
  }
  EXPECT_THAT(names, ElementsAreArray(ServiceNames()));
}

TYPED_TEST(ReflectionServiceTest, SymbolsResolveToTheFileThatDeclaresThem) {
  const struct {
    std::string symbol;
    std::string file;
  } kCases[] = {
      {"aopay.payout.v1.PayoutService", kPayoutProto},
      {"aopay.payout.v1.PayoutAdminService", kPayoutProto},
      {"aopay.payout.v1.PayoutService.CreatePayout", kPayoutProto},
      {"aopay.payout.v1.CreatePayoutRequest", kPayoutProto},
      {".aopay.payout.v1.Payout", kPayoutProto},
      {"aopay.payout.v1.Beneficiary.ifsc", kPayoutProto},
      {"aopay.payout.v1.GetPayoutRequest.key", kPayoutProto},
      {"aopay.payout.v1.PayoutState", kPayoutProto},
      {"aopay.payout.v1.PAYOUT_STATE_UNKNOWN", kPayoutProto},
      {"google.rpc.Status", "google/rpc/status.proto"},
      {"google.rpc.ErrorInfo", "google/rpc/error_details.proto"},
      {"google.protobuf.Timestamp", "google/protobuf/timestamp.proto"},
      {"grpc.health.v1.Health", "grpc/health/v1/health.proto"},
      {"grpc.health.v1.HealthCheckResponse.ServingStatus",
       "grpc/health/v1/health.proto"},
      {"grpc.reflection.v1.ServerReflection",
       "grpc/reflection/v1/reflection.proto"},
      {"grpc.reflection.v1alpha.ServerReflectionRequest",
       "grpc/reflection/v1alpha/reflection.proto"},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.symbol);
    const auto files = this->Files(this->AskOne(
        MakeRequest<typename TypeParam::Request>(Ask::kSymbol, c.symbol)));
    ASSERT_FALSE(files.empty());
    EXPECT_EQ(files.front().name(), c.file);
    // A client builds descriptors from the answer alone: every import of
    // every file must be in it.
    const std::vector<std::string> names = this->Names(files);
    for (const FileDescriptorProto& file : files) {
      EXPECT_THAT(names, IsSupersetOf(file.dependency())) << file.name();
    }
  }
}

TYPED_TEST(ReflectionServiceTest, PayoutProtoComesWithItsImports) {
  for (const char* symbol : {"aopay.payout.v1.PayoutService",
                             "aopay.payout.v1.CreatePayoutRequest"}) {
    SCOPED_TRACE(symbol);
    const auto files = this->Files(this->AskOne(
        MakeRequest<typename TypeParam::Request>(Ask::kSymbol, symbol)));
    EXPECT_THAT(
        this->Names(files),
        ElementsAre(kPayoutProto, "google/protobuf/timestamp.proto",
                    "google/rpc/status.proto", "google/protobuf/any.proto"));
  }
}

TYPED_TEST(ReflectionServiceTest, FilesCarryTheProtoComments) {
  const auto files =
      this->Files(this->AskOne(MakeRequest<typename TypeParam::Request>(
          Ask::kSymbol, "aopay.payout.v1.CreatePayoutRequest")));
  ASSERT_FALSE(files.empty());
  ASSERT_TRUE(files.front().has_source_code_info());

  // What grpcurl does: build descriptors from the answer and read the
  // comments through them.
  google::protobuf::SimpleDescriptorDatabase database;
  for (const FileDescriptorProto& file : files) {
    ASSERT_TRUE(database.Add(file));
  }
  google::protobuf::DescriptorPool pool(&database);
  google::protobuf::SourceLocation location;

  const auto* create_payout =
      pool.FindMethodByName("aopay.payout.v1.PayoutService.CreatePayout");
  ASSERT_NE(create_payout, nullptr);
  ASSERT_TRUE(create_payout->GetSourceLocation(&location));
  EXPECT_THAT(location.leading_comments,
              HasSubstr("At most one payout is ever sent"));

  const auto* request =
      pool.FindMessageTypeByName("aopay.payout.v1.CreatePayoutRequest");
  ASSERT_NE(request, nullptr);
  ASSERT_TRUE(request->GetSourceLocation(&location));
  EXPECT_THAT(location.leading_comments,
              HasSubstr("A request to send one payout."));

  const auto* beneficiary =
      pool.FindMessageTypeByName("aopay.payout.v1.Beneficiary");
  ASSERT_NE(beneficiary, nullptr);
  const struct {
    const char* field;
    const char* comment;
  } kFieldComments[] = {
      {"account_number", "Bank account number, 9 to 18 digits."},
      {"ifsc", "IFSC of the beneficiary's branch"},
      {"mobile", "a leading +91 or 0 is\n accepted and stripped"},
  };
  for (const auto& c : kFieldComments) {
    SCOPED_TRACE(c.field);
    const auto* field = beneficiary->FindFieldByName(c.field);
    ASSERT_NE(field, nullptr);
    ASSERT_TRUE(field->GetSourceLocation(&location));
    EXPECT_THAT(location.leading_comments, HasSubstr(c.comment));
  }
}

TYPED_TEST(ReflectionServiceTest, FileByFilenameReturnsTheFileAndItsImports) {
  auto files = this->Files(this->AskOne(
      MakeRequest<typename TypeParam::Request>(Ask::kFile, kPayoutProto)));
  EXPECT_THAT(
      this->Names(files),
      ElementsAre(kPayoutProto, "google/protobuf/timestamp.proto",
                  "google/rpc/status.proto", "google/protobuf/any.proto"));

  files = this->Files(this->AskOne(MakeRequest<typename TypeParam::Request>(
      Ask::kFile, "google/protobuf/timestamp.proto")));
  EXPECT_THAT(this->Names(files),
              ElementsAre("google/protobuf/timestamp.proto"));
}

TYPED_TEST(ReflectionServiceTest, UnknownNamesAreNotFound) {
  const struct {
    Ask ask;
    std::string value;
  } kCases[] = {
      {Ask::kSymbol, "aopay.payout.v1.NoSuchMessage"},
      {Ask::kSymbol, "aopay.payout.v1.Beneficiary.no_such_field"},
      {Ask::kSymbol, "PayoutService"},
      {Ask::kSymbol, ""},
      {Ask::kFile, "aopay/payout/v1/no_such.proto"},
      {Ask::kFile, "payout.proto"},
      {Ask::kExtensionNumbers, "aopay.payout.v1.NoSuchMessage"},
      {Ask::kExtension, "aopay.payout.v1.NoSuchMessage"},
      {Ask::kExtension, "aopay.payout.v1.Payout"},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(absl::StrCat(static_cast<int>(c.ask), " ", c.value));
    const auto request =
        MakeRequest<typename TypeParam::Request>(c.ask, c.value);
    const auto response = this->AskOne(request);
    ASSERT_TRUE(response.has_error_response());
    EXPECT_EQ(response.error_response().error_code(), kNotFound);
    EXPECT_THAT(response.error_response().error_message(), HasSubstr(c.value));
    EXPECT_EQ(response.original_request().SerializeAsString(),
              request.SerializeAsString());
  }
}

TYPED_TEST(ReflectionServiceTest, KnownTypesHaveNoExtensions) {
  const auto response = this->AskOne(MakeRequest<typename TypeParam::Request>(
      Ask::kExtensionNumbers, "aopay.payout.v1.Payout"));
  ASSERT_TRUE(response.has_all_extension_numbers_response());
  EXPECT_EQ(response.all_extension_numbers_response().base_type_name(),
            "aopay.payout.v1.Payout");
  EXPECT_THAT(response.all_extension_numbers_response().extension_number(),
              IsEmpty());
}

TYPED_TEST(ReflectionServiceTest, RequestWithoutAQuestionIsUnimplemented) {
  const auto response = this->AskOne(typename TypeParam::Request());
  ASSERT_TRUE(response.has_error_response());
  EXPECT_EQ(response.error_response().error_code(),
            static_cast<int>(grpc::StatusCode::UNIMPLEMENTED));
}

TYPED_TEST(ReflectionServiceTest, AnswersEveryRequestOnAStreamInOrder) {
  using Request = typename TypeParam::Request;
  std::vector<Request> requests;
  requests.emplace_back().set_list_services("");
  requests.push_back(
      MakeRequest<Request>(Ask::kSymbol, "aopay.payout.v1.NoSuchMessage"));
  requests.push_back(MakeRequest<Request>(Ask::kSymbol, "google.rpc.Status"));
  requests.push_back(MakeRequest<Request>(Ask::kFile, kPayoutProto));
  requests.push_back(
      MakeRequest<Request>(Ask::kSymbol, "grpc.health.v1.Health"));
  requests.back().set_host("other.host");

  const auto responses = this->AskAll(requests);

  ASSERT_EQ(responses.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(responses[i].original_request().SerializeAsString(),
              requests[i].SerializeAsString());
    EXPECT_EQ(responses[i].valid_host(), requests[i].host());
  }
  EXPECT_TRUE(responses[0].has_list_services_response());
  EXPECT_EQ(responses[1].error_response().error_code(), kNotFound);
  EXPECT_EQ(this->Names(this->Files(responses[2])).front(),
            "google/rpc/status.proto");
  EXPECT_EQ(this->Names(this->Files(responses[3])).front(), kPayoutProto);
  EXPECT_EQ(this->Names(this->Files(responses[4])).front(),
            "grpc/health/v1/health.proto");
}

TEST(ReflectionServiceHealthTest, VendoredHealthProtoSpeaksToBuiltInService) {
  ReflectionServer server;
  auto stub = grpc::health::v1::Health::NewStub(server.channel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status =
      stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST(ReflectionServiceCreateTest, RejectsWhatIsNotADescriptorSet) {
  const absl::StatusOr<std::unique_ptr<ReflectionService>> service =
      ReflectionService::Create("\xff\xff not a descriptor set", {});
  EXPECT_EQ(service.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ReflectionServiceCreateTest, RejectsAFileWhoseImportsAreMissing) {
  google::protobuf::FileDescriptorSet full;
  ASSERT_TRUE(full.ParseFromString(std::string(PayoutDescriptorSet())));
  google::protobuf::FileDescriptorSet partial;
  for (const FileDescriptorProto& file : full.file()) {
    if (file.name() == kPayoutProto) *partial.add_file() = file;
  }
  ASSERT_EQ(partial.file_size(), 1);

  const absl::StatusOr<std::unique_ptr<ReflectionService>> service =
      ReflectionService::Create(partial.SerializeAsString(), {});
  EXPECT_EQ(service.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(service.status().message(), HasSubstr(kPayoutProto));
}

TEST(ReflectionServiceCreateTest, RejectsAListedServiceTheSetLacks) {
  const absl::StatusOr<std::unique_ptr<ReflectionService>> service =
      ReflectionService::Create(
          PayoutDescriptorSet(),
          {"aopay.payout.v1.PayoutService", "aopay.payout.v2.PayoutService"});
  EXPECT_EQ(service.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(service.status().message(),
              HasSubstr("aopay.payout.v2.PayoutService"));
}

TEST(ReflectionServiceCreateTest, EmbeddedSetHasCommentsForEveryFile) {
  google::protobuf::FileDescriptorSet set;
  ASSERT_TRUE(set.ParseFromString(std::string(PayoutDescriptorSet())));
  std::vector<std::string> names;
  for (const FileDescriptorProto& file : set.file()) {
    names.push_back(file.name());
    EXPECT_TRUE(file.has_source_code_info()) << file.name();
  }
  EXPECT_THAT(names,
              IsSupersetOf({std::string(kPayoutProto),
                            std::string("grpc/health/v1/health.proto"),
                            std::string("google/rpc/error_details.proto")}));
}

}  // namespace
}  // namespace aopay
