#include "server/transport/reflection_service.h"

#include <deque>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace aopay {

namespace {

using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;
using google::protobuf::FileDescriptorProto;
using google::protobuf::FileDescriptorSet;

// Keeps the first error only: later ones usually follow from it.
class FirstErrorCollector final : public DescriptorPool::ErrorCollector {
 public:
  void AddError(const std::string& filename, const std::string& element_name,
                const google::protobuf::Message* /*descriptor*/,
                ErrorLocation /*location*/,
                const std::string& message) override {
    if (first_error_.empty()) {
      first_error_ = absl::StrCat(filename, ": ", element_name, ": ", message);
    }
  }
  const std::string& first_error() const { return first_error_; }

 private:
  std::string first_error_;
};

}  // namespace

namespace reflection_internal {

// The descriptor set, indexed. Immutable after Build, hence thread-safe.
class Index {
 public:
  // Serialized FileDescriptorProtos; they point into the Index.
  using Files = std::vector<const std::string*>;

  [[nodiscard]] static absl::StatusOr<std::unique_ptr<const Index>> Build(
      std::string_view descriptor_set, std::vector<std::string> service_names) {
    FileDescriptorSet set;
    if (!set.ParseFromArray(descriptor_set.data(),
                            static_cast<int>(descriptor_set.size()))) {
      return absl::InvalidArgumentError(
          "the descriptor set is not a serialized FileDescriptorSet");
    }
    auto index = absl::WrapUnique(new Index(std::move(service_names)));
    for (const FileDescriptorProto& file : set.file()) {
      FirstErrorCollector errors;
      if (index->pool_.BuildFileCollectingErrors(file, &errors) == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the descriptor set does not build: ",
            errors.first_error().empty() ? file.name() : errors.first_error()));
      }
      index->serialized_files_[file.name()] = file.SerializeAsString();
    }
    for (const std::string& name : index->service_names_) {
      if (index->pool_.FindServiceByName(name) == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "service ", name, " is listed but the descriptor set lacks it"));
      }
    }
    return index;
  }

  const std::vector<std::string>& service_names() const {
    return service_names_;
  }

  [[nodiscard]] absl::StatusOr<Files> FileByName(
      absl::string_view file_name) const {
    const FileDescriptor* file = pool_.FindFileByName(std::string(file_name));
    if (file == nullptr) {
      return absl::NotFoundError(absl::StrCat("file not found: ", file_name));
    }
    return WithImports(*file);
  }

  [[nodiscard]] absl::StatusOr<Files> FileContainingSymbol(
      absl::string_view symbol) const {
    absl::ConsumePrefix(&symbol, ".");
    const FileDescriptor* file =
        symbol.empty() ? nullptr
                       : pool_.FindFileContainingSymbol(std::string(symbol));
    if (file == nullptr) {
      return absl::NotFoundError(absl::StrCat("symbol not found: ", symbol));
    }
    return WithImports(*file);
  }

  [[nodiscard]] absl::StatusOr<Files> FileContainingExtension(
      absl::string_view containing_type, int number) const {
    absl::StatusOr<const google::protobuf::Descriptor*> type =
        MessageType(containing_type);
    if (!type.ok()) return type.status();
    const google::protobuf::FieldDescriptor* extension =
        pool_.FindExtensionByNumber(*type, number);
    if (extension == nullptr) {
      return absl::NotFoundError(absl::StrCat(
          "no extension ", number, " of ", (*type)->full_name(), " is known"));
    }
    return WithImports(*extension->file());
  }

  [[nodiscard]] absl::StatusOr<std::vector<int>> ExtensionNumbers(
      absl::string_view containing_type) const {
    absl::StatusOr<const google::protobuf::Descriptor*> type =
        MessageType(containing_type);
    if (!type.ok()) return type.status();
    std::vector<const google::protobuf::FieldDescriptor*> extensions;
    pool_.FindAllExtensions(*type, &extensions);
    std::vector<int> numbers;
    numbers.reserve(extensions.size());
    for (const google::protobuf::FieldDescriptor* extension : extensions) {
      numbers.push_back(extension->number());
    }
    return numbers;
  }

 private:
  explicit Index(std::vector<std::string> service_names)
      : service_names_(std::move(service_names)) {}

  absl::StatusOr<const google::protobuf::Descriptor*> MessageType(
      absl::string_view name) const {
    absl::ConsumePrefix(&name, ".");
    const google::protobuf::Descriptor* type =
        pool_.FindMessageTypeByName(std::string(name));
    if (type == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("message type not found: ", name));
    }
    return type;
  }

  // Clients build descriptors from the answer alone, so it must carry every
  // file `file` needs; grpcurl takes the first file as the one it asked for.
  Files WithImports(const FileDescriptor& file) const {
    Files files;
    absl::flat_hash_set<const FileDescriptor*> seen = {&file};
    std::deque<const FileDescriptor*> pending = {&file};
    while (!pending.empty()) {
      const FileDescriptor* next = pending.front();
      pending.pop_front();
      files.push_back(&serialized_files_.at(next->name()));
      for (int i = 0; i < next->dependency_count(); ++i) {
        if (seen.insert(next->dependency(i)).second) {
          pending.push_back(next->dependency(i));
        }
      }
    }
    return files;
  }

  const std::vector<std::string> service_names_;
  DescriptorPool pool_;
  // By file name, as in the set: with source_code_info.
  absl::flat_hash_map<std::string, std::string> serialized_files_;
};

}  // namespace reflection_internal

namespace {

using reflection_internal::Index;

// One answer per request, filled the same way for v1 and v1alpha: their
// messages differ only in package.
template <typename Request, typename Response>
void Answer(const Index& index, const Request& request, Response& response) {
  using Files = Index::Files;
  response.Clear();
  response.set_valid_host(request.host());
  *response.mutable_original_request() = request;

  auto set_files = [&response](absl::StatusOr<Files> files) {
    if (!files.ok()) return files.status();
    auto* file_response = response.mutable_file_descriptor_response();
    for (const std::string* file : *files) {
      file_response->add_file_descriptor_proto(*file);
    }
    return absl::OkStatus();
  };

  absl::Status status;
  switch (request.message_request_case()) {
    case Request::kFileByFilename:
      status = set_files(index.FileByName(request.file_by_filename()));
      break;
    case Request::kFileContainingSymbol:
      status = set_files(
          index.FileContainingSymbol(request.file_containing_symbol()));
      break;
    case Request::kFileContainingExtension:
      status = set_files(index.FileContainingExtension(
          request.file_containing_extension().containing_type(),
          request.file_containing_extension().extension_number()));
      break;
    case Request::kAllExtensionNumbersOfType: {
      absl::StatusOr<std::vector<int>> numbers =
          index.ExtensionNumbers(request.all_extension_numbers_of_type());
      if (!numbers.ok()) {
        status = numbers.status();
        break;
      }
      auto* numbers_response =
          response.mutable_all_extension_numbers_response();
      numbers_response->set_base_type_name(
          request.all_extension_numbers_of_type());
      numbers_response->mutable_extension_number()->Add(numbers->begin(),
                                                        numbers->end());
      break;
    }
    case Request::kListServices: {
      auto* services = response.mutable_list_services_response();
      for (const std::string& name : index.service_names()) {
        services->add_service()->set_name(name);
      }
      break;
    }
    case Request::MESSAGE_REQUEST_NOT_SET:
      // Also what a request type newer than this file looks like.
      status = absl::UnimplementedError("unsupported reflection request");
      break;
  }
  if (!status.ok()) {
    auto* error = response.mutable_error_response();
    // absl::StatusCode numbers are gRPC's.
    error->set_error_code(static_cast<int>(status.code()));
    error->set_error_message(std::string(status.message()));
  }
}

// One stream: read a request, write its answer, repeat until the client
// half-closes. Answering inside OnReadDone is fine: it is a lookup in memory.
template <typename Request, typename Response>
class Reactor final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit Reactor(const Index& index) : index_(index) {
    this->StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // The client half-closed, or the call is over.
      this->Finish(grpc::Status::OK);
      return;
    }
    Answer(index_, request_, response_);
    this->StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      this->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                "the reflection stream broke"));
      return;
    }
    this->StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  const Index& index_;
  Request request_;
  Response response_;
};

template <typename Base, typename Request, typename Response>
class Adapter final : public Base {
 public:
  explicit Adapter(const Index& index) : index_(index) {}

  grpc::ServerBidiReactor<Request, Response>* ServerReflectionInfo(
      grpc::CallbackServerContext* /*context*/) override {
    return new Reactor<Request, Response>(index_);
  }

 private:
  const Index& index_;
};

using V1Adapter =
    Adapter<grpc::reflection::v1::ServerReflection::CallbackService,
            grpc::reflection::v1::ServerReflectionRequest,
            grpc::reflection::v1::ServerReflectionResponse>;
using V1AlphaAdapter =
    Adapter<grpc::reflection::v1alpha::ServerReflection::CallbackService,
            grpc::reflection::v1alpha::ServerReflectionRequest,
            grpc::reflection::v1alpha::ServerReflectionResponse>;

}  // namespace

absl::StatusOr<std::unique_ptr<ReflectionService>> ReflectionService::Create(
    std::string_view descriptor_set, std::vector<std::string> service_names) {
  absl::StatusOr<std::unique_ptr<const Index>> index =
      Index::Build(descriptor_set, std::move(service_names));
  if (!index.ok()) return index.status();
  return absl::WrapUnique(new ReflectionService(*std::move(index)));
}

ReflectionService::ReflectionService(std::unique_ptr<const Index> index)
    : index_(std::move(index)),
      v1_(std::make_unique<V1Adapter>(*index_)),
      v1alpha_(std::make_unique<V1AlphaAdapter>(*index_)) {}

ReflectionService::~ReflectionService() = default;

void ReflectionService::RegisterWith(grpc::ServerBuilder& builder) {
  builder.RegisterService(v1_.get());
  builder.RegisterService(v1alpha_.get());
}

}  // namespace aopay
