#ifndef AOPAY_SERVER_TRANSPORT_AUTH_H_
#define AOPAY_SERVER_TRANSPORT_AUTH_H_

// Who is calling, found from the call's metadata and TLS peer before any
// handler work, and whether it may do what it asks (docs/security.md).

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/clients.h"
#include "grpcpp/server_context.h"
#include "server/observability/metrics.h"

namespace aopay {

// Thread-safe.
class Authenticator {
 public:
  // `registry` null: the gateway runs without --clients and every caller is
  // the anonymous client (every scope, no limits).
  Authenticator(std::shared_ptr<const ClientRegistry> registry,
                Metrics& metrics);

  // A reloaded clients file; calls already authenticated keep their client.
  // Must not turn an open gateway into one with clients or back (that needs
  // a restart, as TLS does).
  void Replace(std::shared_ptr<const ClientRegistry> registry);

  // The caller: the client whose token digest matches the call's
  // "authorization: Bearer <token>", or, without a token, the client whose
  // line has digest "-" and whose name is the mTLS certificate's subject CN.
  // UNAUTHENTICATED otherwise, counted in auth_failures_total by reason
  // (missing, malformed, unknown_token, unknown_certificate).
  absl::StatusOr<Client> Authenticate(
      const grpc::CallbackServerContext& context) const;

  // Authenticate, then PERMISSION_DENIED unless the client has `scope`
  // (counted as reason "scope").
  absl::StatusOr<Client> Authorize(const grpc::CallbackServerContext& context,
                                   Scope scope, absl::string_view method) const;

 private:
  std::shared_ptr<const ClientRegistry> registry() const;
  absl::Status Fail(absl::Status status, absl::string_view reason) const;

  Metrics& metrics_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const ClientRegistry> registry_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aopay

#endif  // AOPAY_SERVER_TRANSPORT_AUTH_H_
