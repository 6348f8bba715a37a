#ifndef AOPAY_TESTS_RELIABILITY_FAULTS_HOSTILE_AOPAY_H_
#define AOPAY_TESTS_RELIABILITY_FAULTS_HOSTILE_AOPAY_H_

// A scripted, misbehaving AOPay on raw sockets for reliability tests: one
// request (or, for the TLS stall, one connection) gets a hostile answer;
// every other payout is answered with the documented success. It listens on
// 127.0.0.1 on a port the kernel picks and keeps a journal of every request
// it received in full (what AOPay would have acted on).

#include <openssl/ssl.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace aopay::testing {

enum class Hostility {
  kOneBytePerSecond,    // the documented success, one byte a second
  kHeadersWithoutBody,  // Content-Length larger than what follows, then holds
  kEndlessChunkedFast,  // 200, chunked, 16 KiB chunks without end
  kEndlessChunkedSlow,  // 200, chunked, a one-byte chunk every 100 ms
  kShortBody,           // Content-Length larger than the body, then closes
  kStallTlsHandshake,   // accepts TCP, reads the ClientHello, never answers
  kResetMidHeaders,     // half of the status line and headers, then RST
  kRedirect302,         // 302 Found, Location: the payout path again
  kRedirect307,         // 307 (a client following it would POST again)
  kTooManyRequestsWithTransaction,  // 429 whose body is the success answer
};

struct HostileOptions {
  Hostility hostility = Hostility::kOneBytePerSecond;
  // Which request, counted from 0 over all connections, gets the hostile
  // answer; for kStallTlsHandshake, which connection.
  int hostile_index = 0;
  // Borrowed, must outlive the server: every connection that is not stalled
  // speaks TLS with it. nullptr for plain HTTP.
  SSL_CTX* tls = nullptr;
};

// Thread-safe. The destructor closes every connection and joins its threads.
class HostileAopay {
 public:
  explicit HostileAopay(HostileOptions options);
  ~HostileAopay();
  HostileAopay(const HostileAopay&) = delete;
  HostileAopay& operator=(const HostileAopay&) = delete;

  // http://127.0.0.1:PORT, or https:// with TLS.
  std::string url() const;
  int connections() const;
  // Requests received in full, on any path.
  int requests() const;
  // Payout requests received in full whose accountNumber is `account`.
  int PayoutsFor(const std::string& account) const;
  // Waits (bounded) until the hostile connection has ended: the client gave
  // up on it, or it was closed by the script.
  bool AwaitHostileDone() const;

 private:
  struct Received {
    std::string path;
    std::string body;
  };
  class Connection;

  void AcceptLoop();
  void Serve(int fd, int connection_index);
  void ServeRequests(Connection& connection);
  void Misbehave(Connection& connection);
  void Close(int fd);
  bool stopping() const;

  const HostileOptions options_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::thread acceptor_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool hostile_done_ ABSL_GUARDED_BY(mu_) = false;
  int connections_ ABSL_GUARDED_BY(mu_) = 0;
  int request_count_ ABSL_GUARDED_BY(mu_) = 0;
  int transaction_counter_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> open_fds_ ABSL_GUARDED_BY(mu_);
  std::vector<Received> journal_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_ ABSL_GUARDED_BY(mu_);
};

// A throwaway self-signed certificate for 127.0.0.1: a server context that
// uses it and a PEM file with it for the client's --aopay_ca.
class LoopbackTlsIdentity {
 public:
  LoopbackTlsIdentity();
  ~LoopbackTlsIdentity();
  LoopbackTlsIdentity(const LoopbackTlsIdentity&) = delete;
  LoopbackTlsIdentity& operator=(const LoopbackTlsIdentity&) = delete;

  bool ok() const { return context_ != nullptr; }
  SSL_CTX* context() const { return context_; }
  const std::string& ca_file() const { return ca_file_; }

 private:
  SSL_CTX* context_ = nullptr;
  std::string ca_file_;
};

}  // namespace aopay::testing

#endif  // AOPAY_TESTS_RELIABILITY_FAULTS_HOSTILE_AOPAY_H_
