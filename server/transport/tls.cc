#include "server/transport/tls.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/openssl_ptr.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace aopay {
namespace {

// How often gRPC re-reads the private copies.
constexpr unsigned int kRefreshSeconds = 1;

absl::StatusOr<std::string> ReadFile(const char* flag,
                                     const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path, "file");
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": cannot read ", path));
  }
  return text;
}

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Every certificate in `pem`, in order; none when it holds none.
std::vector<CertificatePtr> Certificates(const std::string& pem) {
  std::vector<CertificatePtr> out;
  BioPtr bio = MemoryBio(pem);
  while (bio != nullptr) {
    CertificatePtr cert(
        PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    out.push_back(std::move(cert));
  }
  return out;
}

std::string Describe(X509* cert) {
  char subject[256] = {};
  X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
  BioPtr out(BIO_new(BIO_s_mem()));
  std::string not_after = "?";
  if (out != nullptr && ASN1_TIME_print(out.get(), X509_get0_notAfter(cert))) {
    char* data = nullptr;
    const long size = BIO_get_mem_data(out.get(), &data);
    not_after.assign(data, static_cast<size_t>(size));
  }
  return absl::StrCat("subject ", subject, ", valid until ", not_after);
}

struct CheckedFiles {
  std::string cert;
  std::string key;
  std::string client_ca;
  std::string description;
};

absl::StatusOr<CheckedFiles> ReadAndCheck(const TlsFiles& files) {
  CheckedFiles out;
  absl::StatusOr<std::string> cert = ReadFile("tls_cert", files.cert);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFile("tls_key", files.key);
  if (!key.ok()) return key.status();
  std::vector<CertificatePtr> chain = Certificates(*cert);
  if (chain.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_cert: no PEM certificate in ", files.cert));
  }
  BioPtr key_bio = MemoryBio(*key);
  PrivateKeyPtr private_key(
      key_bio == nullptr
          ? nullptr
          : PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (private_key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_key: no unencrypted PEM private key in ", files.key));
  }
  if (X509_check_private_key(chain.front().get(), private_key.get()) != 1) {
    return absl::InvalidArgumentError(
        "--tls_key does not match the certificate of --tls_cert");
  }
  if (!files.client_ca.empty()) {
    absl::StatusOr<std::string> ca = ReadFile("tls_client_ca", files.client_ca);
    if (!ca.ok()) return ca.status();
    if (Certificates(*ca).empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls_client_ca: no PEM certificate in ", files.client_ca));
    }
    out.client_ca = *std::move(ca);
  }
  out.description = Describe(chain.front().get());
  out.cert = *std::move(cert);
  out.key = *std::move(key);
  return out;
}

// A new anonymous in-memory file (memfd) holding `text`; -1 on failure.
int MemoryFile(const char* name, const std::string& text) {
  const int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return -1;
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = write(fd, text.data() + written, text.size() - written);
    if (n <= 0) {
      close(fd);
      return -1;
    }
    written += static_cast<size_t>(n);
  }
  return fd;
}

// Puts `text` behind descriptor `slot` (creating it when -1): a new memfd is
// filled, then dup3 makes `slot` refer to it in one step, so whoever opens
// /proc/self/fd/<slot> reads the old text or the new one, never part of one.
absl::Status Replace(int& slot, const char* name, const std::string& text) {
  const int fd = MemoryFile(name, text);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat(
        "cannot keep the TLS files in memory: ", std::strerror(errno)));
  }
  if (slot < 0) {
    slot = fd;
    return absl::OkStatus();
  }
  const int replaced = dup3(fd, slot, O_CLOEXEC);
  close(fd);
  if (replaced < 0) {
    return absl::InternalError(absl::StrCat(
        "cannot replace the TLS files in memory: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

std::string FdPath(int fd) { return absl::StrCat("/proc/self/fd/", fd); }

}  // namespace

TlsCredentials::TlsCredentials(TlsFiles files) : files_(std::move(files)) {}

TlsCredentials::~TlsCredentials() {
  credentials_.reset();
  for (int fd : {cert_fd_, key_fd_, client_ca_fd_}) {
    if (fd >= 0) close(fd);
  }
}

absl::StatusOr<std::unique_ptr<TlsCredentials>> TlsCredentials::Create(
    TlsFiles files) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both or neither");
  }
  if (files.cert.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca needs --tls_cert and --tls_key");
  }
  std::unique_ptr<TlsCredentials> tls(new TlsCredentials(std::move(files)));
  absl::StatusOr<std::string> staged = tls->Stage();
  if (!staged.ok()) return staged.status();

  // gRPC opens the copies by name; without /proc it could not.
  if (access(FdPath(tls->key_fd_).c_str(), R_OK) != 0) {
    return absl::FailedPreconditionError(
        "TLS needs /proc mounted: gRPC reads the certificate through "
        "/proc/self/fd");
  }
  const bool mutual = !tls->files_.client_ca.empty();
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          FdPath(tls->key_fd_), FdPath(tls->cert_fd_),
          mutual ? FdPath(tls->client_ca_fd_) : std::string(), kRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (mutual) {
    options.watch_root_certs();
    options.set_cert_request_type(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  tls->credentials_ = grpc::experimental::TlsServerCredentials(options);
  if (tls->credentials_ == nullptr) {
    return absl::InternalError("gRPC refused the TLS options");
  }
  return tls;
}

absl::StatusOr<std::string> TlsCredentials::Stage() {
  absl::StatusOr<CheckedFiles> checked = ReadAndCheck(files_);
  if (!checked.ok()) return checked.status();
  // gRPC reads the key and the certificate one after the other; a refresh
  // that falls between the two replacements may pair the new key with the
  // old certificate for one refresh interval, after which both are new.
  if (!checked->client_ca.empty()) {
    if (absl::Status s =
            Replace(client_ca_fd_, "payout-tls-client-ca", checked->client_ca);
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = Replace(key_fd_, "payout-tls-key", checked->key);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Replace(cert_fd_, "payout-tls-cert", checked->cert);
      !s.ok()) {
    return s;
  }
  return checked->description;
}

absl::StatusOr<std::string> TlsCredentials::Reload() { return Stage(); }

}  // namespace aopay
