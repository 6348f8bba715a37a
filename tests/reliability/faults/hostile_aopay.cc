#include "tests/reliability/faults/hostile_aopay.h"

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"

namespace aopay::testing {
namespace {

constexpr char kPayoutPath[] = "/api/V6/Payout/AOPPayout";
constexpr absl::Duration kHostileWait = absl::Seconds(20);

std::string SuccessBody(int transaction) {
  return absl::StrFormat(
      R"({"initiateAuthGenericFundTransferAPIResp":{"metaData":)"
      R"({"status":"SUCCESS","message":"fundTransfer successfully processed",)"
      R"("version":"v1","time":"2025-02-25T06:42:43.469Z"},"resourceData":)"
      R"({"status":"ACPT","transactionReferenceNo":"505914%06d",)"
      R"("transactionID":"TERF%06d","beneficiaryName":"ABC"}},)"
      R"("statuss":"SUCCESS","message":"fundTransfer successfully processed",)"
      R"("value":""})",
      transaction, transaction);
}

std::string Answer(absl::string_view status_line, absl::string_view body) {
  return absl::StrCat("HTTP/1.1 ", status_line,
                      "\r\nContent-Type: application/json\r\nContent-Length: ",
                      body.size(), "\r\n\r\n", body);
}

}  // namespace

// One accepted socket, plain or TLS.
class HostileAopay::Connection {
 public:
  explicit Connection(int fd) : fd_(fd) {}
  ~Connection() {
    if (ssl_ != nullptr) SSL_free(ssl_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  bool StartTls(SSL_CTX* context) {
    ssl_ = SSL_new(context);
    if (ssl_ == nullptr) return false;
    SSL_set_fd(ssl_, fd_);
    return SSL_accept(ssl_) == 1;
  }

  ssize_t Read(char* buffer, size_t size) {
    if (ssl_ != nullptr) return SSL_read(ssl_, buffer, static_cast<int>(size));
    return recv(fd_, buffer, size, 0);
  }

  bool WriteAll(absl::string_view data) {
    while (!data.empty()) {
      const ssize_t written =
          ssl_ != nullptr
              ? SSL_write(ssl_, data.data(), static_cast<int>(data.size()))
              : send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (written <= 0) return false;
      data.remove_prefix(static_cast<size_t>(written));
    }
    return true;
  }

  // Waits up to `timeout` for the peer to close (or the server to shut the
  // socket down); true when it did. Bytes that arrive meanwhile are dropped.
  // This paces the script; it does not synchronise the test.
  bool PeerClosedWithin(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      pollfd waiting{fd_, POLLIN | POLLRDHUP, 0};
      const int ready = poll(
          &waiting, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
      if (ready < 0 && errno != EINTR) return true;
      if (ready <= 0) continue;
      if (waiting.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
      char discard[4096];
      if (recv(fd_, discard, sizeof(discard), MSG_DONTWAIT) == 0) return true;
    }
  }

  // Waits until everything written has been acknowledged by the peer, so that
  // an abortive close cannot discard it before it left.
  void AwaitSent() {
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    int unsent = 0;
    while (ioctl(fd_, SIOCOUTQ, &unsent) == 0 && unsent > 0 &&
           absl::Now() < deadline) {
      pollfd waiting{fd_, POLLRDHUP, 0};
      poll(&waiting, 1, 5);
    }
  }

  // The connection ends with RST instead of FIN.
  void ArmReset() {
    linger abortive{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &abortive, sizeof(abortive));
    reset_ = true;
  }

  int fd() const { return fd_; }
  bool reset() const { return reset_; }

 private:
  const int fd_;
  SSL* ssl_ = nullptr;
  bool reset_ = false;
};

HostileAopay::HostileAopay(HostileOptions options)
    : options_(std::move(options)) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (listen_fd_ < 0 ||
      bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      listen(listen_fd_, 64) != 0 ||
      getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) !=
          0) {
    ADD_FAILURE() << "the hostile AOPay cannot listen on loopback";
    return;
  }
  port_ = ntohs(address.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

HostileAopay::~HostileAopay() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (int fd : open_fds_) shutdown(fd, SHUT_RDWR);
  }
  if (listen_fd_ >= 0) shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  // No new worker starts once the acceptor is gone.
  std::vector<std::thread> workers;
  {
    absl::MutexLock lock(&mu_);
    workers.swap(workers_);
  }
  for (std::thread& worker : workers) worker.join();
  if (listen_fd_ >= 0) close(listen_fd_);
}

std::string HostileAopay::url() const {
  return absl::StrCat(options_.tls != nullptr ? "https" : "http",
                      "://127.0.0.1:", port_);
}

int HostileAopay::connections() const {
  absl::MutexLock lock(&mu_);
  return connections_;
}

int HostileAopay::requests() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(journal_.size());
}

int HostileAopay::PayoutsFor(const std::string& account) const {
  absl::MutexLock lock(&mu_);
  int count = 0;
  for (const Received& received : journal_) {
    if (received.path != kPayoutPath) continue;
    rapidjson::Document body;
    body.Parse(received.body.c_str());
    if (!body.HasParseError() && body.IsObject() &&
        body.HasMember("accountNumber") && body["accountNumber"].IsString() &&
        body["accountNumber"].GetString() == account) {
      ++count;
    }
  }
  return count;
}

bool HostileAopay::AwaitHostileDone() const {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&hostile_done_), kHostileWait);
}

bool HostileAopay::stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

void HostileAopay::AcceptLoop() {
  while (true) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    absl::MutexLock lock(&mu_);
    if (fd < 0 || stopping_) {
      if (fd >= 0) close(fd);
      return;
    }
    open_fds_.push_back(fd);
    const int index = connections_++;
    workers_.emplace_back([this, fd, index] { Serve(fd, index); });
  }
}

void HostileAopay::Serve(int fd, int connection_index) {
  Connection connection(fd);
  if (options_.hostility == Hostility::kStallTlsHandshake &&
      connection_index == options_.hostile_index) {
    // The ClientHello arrives and is never answered; the socket stays open
    // until the client gives up.
    while (!connection.PeerClosedWithin(kHostileWait) && !stopping()) {
    }
    {
      absl::MutexLock lock(&mu_);
      hostile_done_ = true;
    }
    Close(fd);
    return;
  }
  if (options_.tls != nullptr && !connection.StartTls(options_.tls)) {
    Close(fd);
    return;
  }
  ServeRequests(connection);
  if (connection.reset()) {
    absl::MutexLock lock(&mu_);
    close(fd);  // RST: SO_LINGER 0, and no shutdown() first
    open_fds_.erase(std::find(open_fds_.begin(), open_fds_.end(), fd));
  } else {
    Close(fd);
  }
}

void HostileAopay::ServeRequests(Connection& connection) {
  std::string buffer;
  char chunk[16384];
  while (true) {
    // One request: the head, then a body of Content-Length bytes.
    size_t head_end;
    while ((head_end = buffer.find("\r\n\r\n")) == std::string::npos) {
      const ssize_t got = connection.Read(chunk, sizeof(chunk));
      if (got <= 0) return;
      buffer.append(chunk, static_cast<size_t>(got));
    }
    std::vector<std::string> lines =
        absl::StrSplit(buffer.substr(0, head_end), "\r\n");
    std::vector<std::string> first = absl::StrSplit(lines[0], ' ');
    if (first.size() != 3) return;
    size_t content_length = 0;
    for (size_t i = 1; i < lines.size(); ++i) {
      const size_t colon = lines[i].find(':');
      if (colon == std::string::npos) continue;
      if (absl::AsciiStrToLower(lines[i].substr(0, colon)) ==
              "content-length" &&
          !absl::SimpleAtoi(
              absl::StripAsciiWhitespace(lines[i].substr(colon + 1)),
              &content_length)) {
        return;
      }
    }
    buffer.erase(0, head_end + 4);
    while (buffer.size() < content_length) {
      const ssize_t got = connection.Read(chunk, sizeof(chunk));
      if (got <= 0) return;
      buffer.append(chunk, static_cast<size_t>(got));
    }
    Received received{first[1], buffer.substr(0, content_length)};
    buffer.erase(0, content_length);

    int index;
    int transaction;
    {
      absl::MutexLock lock(&mu_);
      index = static_cast<int>(journal_.size());
      journal_.push_back(std::move(received));
      transaction = ++transaction_counter_;
    }
    if (options_.hostility != Hostility::kStallTlsHandshake &&
        index == options_.hostile_index) {
      Misbehave(connection);
      {
        absl::MutexLock lock(&mu_);
        hostile_done_ = true;
      }
      // A redirect or a 429 leaves the connection usable, as a real server
      // would: a client that followed the redirect would be heard here.
      if (options_.hostility != Hostility::kRedirect302 &&
          options_.hostility != Hostility::kRedirect307 &&
          options_.hostility != Hostility::kTooManyRequestsWithTransaction) {
        return;
      }
      continue;
    }
    if (!connection.WriteAll(Answer("200 OK", SuccessBody(transaction)))) {
      return;
    }
  }
}

void HostileAopay::Misbehave(Connection& connection) {
  const std::string success = SuccessBody(0);
  switch (options_.hostility) {
    case Hostility::kOneBytePerSecond: {
      const std::string answer = Answer("200 OK", success);
      for (const char byte : answer) {
        if (!connection.WriteAll(absl::string_view(&byte, 1))) return;
        if (connection.PeerClosedWithin(absl::Seconds(1))) return;
      }
      return;
    }
    case Hostility::kHeadersWithoutBody:
      if (!connection.WriteAll(absl::StrCat(
              "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              "Content-Length: ",
              success.size(), "\r\n\r\n", success.substr(0, 10)))) {
        return;
      }
      while (!connection.PeerClosedWithin(kHostileWait) && !stopping()) {
      }
      return;
    case Hostility::kEndlessChunkedFast: {
      if (!connection.WriteAll(
              "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              "Transfer-Encoding: chunked\r\n\r\n")) {
        return;
      }
      const std::string piece(16384, ' ');
      const std::string framed = absl::StrCat("4000\r\n", piece, "\r\n");
      while (!stopping() && connection.WriteAll(framed)) {
      }
      return;
    }
    case Hostility::kEndlessChunkedSlow:
      if (!connection.WriteAll(
              "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              "Transfer-Encoding: chunked\r\n\r\n")) {
        return;
      }
      while (connection.WriteAll("1\r\n \r\n") &&
             !connection.PeerClosedWithin(absl::Milliseconds(100))) {
      }
      return;
    case Hostility::kShortBody:
      (void)connection.WriteAll(absl::StrCat(
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
          "Content-Length: ",
          success.size(), "\r\n\r\n", success.substr(0, success.size() / 2)));
      return;  // closed with FIN
    case Hostility::kResetMidHeaders: {
      const std::string head =
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
          "Content-Length: 64\r\n\r\n";
      if (!connection.WriteAll(head.substr(0, head.size() / 2))) return;
      connection.AwaitSent();
      connection.ArmReset();
      return;
    }
    case Hostility::kRedirect302:
    case Hostility::kRedirect307: {
      const bool temporary = options_.hostility == Hostility::kRedirect307;
      (void)connection.WriteAll(absl::StrCat(
          "HTTP/1.1 ", temporary ? "307 Temporary Redirect" : "302 Found",
          "\r\nLocation: ", url(), kPayoutPath,
          "\r\nContent-Length: 0\r\n\r\n"));
      return;
    }
    case Hostility::kTooManyRequestsWithTransaction:
      (void)connection.WriteAll(Answer("429 Too Many Requests", success));
      return;
    case Hostility::kStallTlsHandshake:
      return;  // handled per connection, in Serve
  }
}

void HostileAopay::Close(int fd) {
  absl::MutexLock lock(&mu_);
  shutdown(fd, SHUT_RDWR);
  close(fd);
  open_fds_.erase(std::find(open_fds_.begin(), open_fds_.end(), fd));
}

LoopbackTlsIdentity::LoopbackTlsIdentity() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  if (key == nullptr || cert == nullptr) {
    ADD_FAILURE() << "cannot make a key and certificate";
    EVP_PKEY_free(key);
    X509_free(cert);
    return;
  }
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(
      name, "CN", MBSTRING_ASC,
      reinterpret_cast<const unsigned char*>("hostile-aopay"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509V3_CTX extension_context;
  X509V3_set_ctx_nodb(&extension_context);
  X509V3_set_ctx(&extension_context, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* san = X509V3_EXT_conf_nid(
      nullptr, &extension_context, NID_subject_alt_name, "IP:127.0.0.1");
  bool made = san != nullptr && X509_add_ext(cert, san, -1) == 1 &&
              X509_sign(cert, key, EVP_sha256()) > 0;
  X509_EXTENSION_free(san);

  ca_file_ = absl::StrCat(::testing::TempDir(), "hostile_aopay_ca_", getpid(),
                          "_", reinterpret_cast<uintptr_t>(this), ".pem");
  if (made) {
    FILE* file = std::fopen(ca_file_.c_str(), "w");
    made = file != nullptr && PEM_write_X509(file, cert) == 1;
    if (file != nullptr) std::fclose(file);
  }
  if (made) {
    context_ = SSL_CTX_new(TLS_server_method());
    if (context_ != nullptr && (SSL_CTX_use_certificate(context_, cert) != 1 ||
                                SSL_CTX_use_PrivateKey(context_, key) != 1)) {
      SSL_CTX_free(context_);
      context_ = nullptr;
    }
  }
  if (context_ == nullptr) ADD_FAILURE() << "cannot set up TLS for 127.0.0.1";
  X509_free(cert);
  EVP_PKEY_free(key);
}

LoopbackTlsIdentity::~LoopbackTlsIdentity() {
  std::remove(ca_file_.c_str());
  if (context_ != nullptr) SSL_CTX_free(context_);
}

}  // namespace aopay::testing
