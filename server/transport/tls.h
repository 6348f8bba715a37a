#ifndef AOPAY_SERVER_TRANSPORT_TLS_H_
#define AOPAY_SERVER_TRANSPORT_TLS_H_

// The gateway's TLS: its certificate and key (--tls_cert, --tls_key) and, for
// mTLS, the CA its callers' certificates must chain to (--tls_client_ca).
//
// gRPC reads the files through its FileWatcherCertificateProvider, which
// re-reads whatever files it watches every second. It never watches the
// operator's files directly: they are checked (PEM that parses, a key that
// matches the certificate, a CA bundle with at least one certificate) and
// copied into memory-only files (memfd, read by gRPC as /proc/self/fd/N), at
// start and on Reload (SIGHUP). A bad or half-written new file is refused and
// the copies in use stay as they were; a good one replaces them in one step
// and serves new connections within a second. The copies never touch a disk
// and end with the process. docs/security.md describes rotation.

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"

namespace aopay {

struct TlsFiles {
  std::string cert;       // PEM certificate chain, leaf first
  std::string key;        // PEM private key of the leaf
  std::string client_ca;  // PEM CA bundle; "" = no client certificates
};

class TlsCredentials {
 public:
  // INVALID_ARGUMENT naming the flag and what is wrong.
  static absl::StatusOr<std::unique_ptr<TlsCredentials>> Create(TlsFiles files);
  ~TlsCredentials();  // removes the private copies

  TlsCredentials(const TlsCredentials&) = delete;
  TlsCredentials& operator=(const TlsCredentials&) = delete;

  // For ServerBuilder::AddListeningPort: TLS 1.2 or later (gRPC's minimum);
  // with a client CA, a client certificate is required and verified.
  std::shared_ptr<grpc::ServerCredentials> server_credentials() const {
    return credentials_;
  }

  // Re-reads the operator's files. On success returns a one-line description
  // of the certificate now served (subject and expiry); on failure returns
  // INVALID_ARGUMENT and nothing changes.
  absl::StatusOr<std::string> Reload();

 private:
  explicit TlsCredentials(TlsFiles files);
  absl::StatusOr<std::string> Stage();

  const TlsFiles files_;
  // The memfds gRPC reads as /proc/self/fd/N; -1 until staged.
  int cert_fd_ = -1;
  int key_fd_ = -1;
  int client_ca_fd_ = -1;
  std::shared_ptr<grpc::ServerCredentials> credentials_;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_TRANSPORT_TLS_H_
