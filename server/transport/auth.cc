#include "server/transport/auth.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "common/errors.h"
#include "grpcpp/security/auth_context.h"

namespace aopay {
namespace {

constexpr absl::string_view kAuthorization = "authorization";
constexpr absl::string_view kBearer = "bearer ";
// GRPC_X509_CN_PROPERTY_NAME: the verified client certificate's subject CN.
constexpr absl::string_view kCommonNameProperty = "x509_common_name";

absl::string_view View(const grpc::string_ref& ref) {
  return absl::string_view(ref.data(), ref.size());
}

}  // namespace

Authenticator::Authenticator(std::shared_ptr<const ClientRegistry> registry,
                             Metrics& metrics)
    : metrics_(metrics), registry_(std::move(registry)) {}

void Authenticator::Replace(std::shared_ptr<const ClientRegistry> registry) {
  absl::MutexLock lock(&mu_);
  registry_ = std::move(registry);
}

std::shared_ptr<const ClientRegistry> Authenticator::registry() const {
  absl::ReaderMutexLock lock(&mu_);  // every call; a reload is rare
  return registry_;
}

absl::Status Authenticator::Fail(absl::Status status,
                                 absl::string_view reason) const {
  metrics_.auth_failures.Increment({std::string(reason)});
  return status;
}

absl::StatusOr<Client> Authenticator::Authenticate(
    const grpc::CallbackServerContext& context) const {
  const std::shared_ptr<const ClientRegistry> registry = this->registry();
  if (registry == nullptr) return AnonymousClient();

  const auto& metadata = context.client_metadata();
  const auto header = metadata.find(
      grpc::string_ref(kAuthorization.data(), kAuthorization.size()));
  if (header != metadata.end()) {
    absl::string_view value = View(header->second);
    if (value.size() <= kBearer.size() ||
        !absl::StartsWithIgnoreCase(value, kBearer)) {
      return Fail(UnauthenticatedError(), "malformed");
    }
    value.remove_prefix(kBearer.size());
    const Client* client =
        registry->FindByToken(absl::StripAsciiWhitespace(value));
    if (client == nullptr) return Fail(UnauthenticatedError(), "unknown_token");
    return *client;
  }

  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    const std::vector<grpc::string_ref> names =
        auth->FindPropertyValues(std::string(kCommonNameProperty));
    if (!names.empty()) {
      const Client* client =
          registry->FindByCertificateName(View(names.front()));
      if (client == nullptr) {
        return Fail(UnauthenticatedError(), "unknown_certificate");
      }
      return *client;
    }
  }
  return Fail(UnauthenticatedError(), "missing");
}

absl::StatusOr<Client> Authenticator::Authorize(
    const grpc::CallbackServerContext& context, Scope scope,
    absl::string_view method) const {
  absl::StatusOr<Client> client = Authenticate(context);
  if (!client.ok()) return client;
  // Reading one's own payouts is implied by every scope that reads more.
  const bool allowed =
      scope == kScopeRead ? client->ReadsOwn() : client->Has(scope);
  if (!allowed) {
    return Fail(PermissionDeniedError(method, ScopeName(scope)), "scope");
  }
  return client;
}

}  // namespace aopay
