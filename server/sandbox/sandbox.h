#ifndef AOPAY_SERVER_SANDBOX_SANDBOX_H_
#define AOPAY_SERVER_SANDBOX_SANDBOX_H_

// A stand-in for AOPay's payout API over real HTTP(S) (docs/sandbox.md),
// for development, demos, tests and benchmarks. No money moves.
//
// It parses and builds AOPay's JSON with its own code, never the gateway's
// codec, so that a codec bug shows up as a test failure instead of being
// mirrored.
//
// Endpoints:
//   POST /api/V6/Payout/AOPPayout        the documented payout call
//   POST /api/V6/Payout/AOPPayoutStatus  {"transactionID","registrationID"}
//
// A payout is validated as AOPay would: 412 for an empty or non-JSON body
// (or a Content-Type other than application/json), a non-object, or any of
// the eight documented fields missing or not a string; then 403 for a
// registrationID not in `registrations`; then 422 for a beneficiaryIFSC not
// matching ^[A-Z]{4}0[A-Z0-9]{6}$. Then the last four digits of
// accountNumber choose the answer:
//   0403 0409 0412 0422  that documented error, HTTP status = subCode
//   0429                 HTTP 429, empty body
//   0500                 HTTP 500, an HTML page
//   0502                 the connection is closed after the request is read;
//                        no byte of an answer is sent
//   0504                 success, but only after `slow`
//   0601                 success; the status endpoint reports FAILED (at
//                        once: `settle` does not apply)
//   0602                 success; the status endpoint reports REVERSED (at
//                        once)
//   anything else        success; the status endpoint reports PENDING until
//                        `settle` has passed since acceptance, then SUCCESS
// Success is the documented body (docs/aopay.md) with a fresh 12-digit
// transactionReferenceNo and a fresh "TERF..." transactionID.
//
// The status endpoint (whose answer AOPay does not document) answers
//   {"status":"SUCCESS","message":...,"resourceData":{"transactionID":...,
//    "transactionReferenceNo":...,"transactionStatus":"<WORD>"}}
// with 412/403 as above and 404 {"status":"ERROR","subCode":"404",
// "message":"Transaction not found"} for a transaction it did not accept for
// that registration.
//
// Every POST received (either endpoint, valid or not, and any other path) is
// counted and, with a journal, appended to it as one JSON line
//   {"seq":N,"path":"/api/...","body":"<raw body>","received_unix_ms":N}
// written to the file before the answer is produced.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace aopay {

struct SandboxOptions {
  // Address to listen on; port 0 picks a free port (see Sandbox::port()).
  std::string host = "127.0.0.1";
  int port = 8089;
  // Registrations accepted; any other registrationID gets 403.
  std::vector<std::string> registrations = {"AOP-SANDBOX"};
  // Added before every answer of either endpoint (for benchmarks).
  absl::Duration latency = absl::ZeroDuration();
  // Added on top of latency, a different share of it for each request:
  // the shares run 0.618, 0.236, 0.854, ... (steps of the golden ratio,
  // wrapped), spread evenly over [0, jitter) and the same in every run.
  absl::Duration latency_jitter = absl::ZeroDuration();
  // How long an account ending in 0504 waits for its answer.
  absl::Duration slow = absl::Seconds(60);
  // How long after acceptance the status endpoint keeps saying PENDING.
  absl::Duration settle = absl::Seconds(2);
  // File the journal is appended to; empty: no journal.
  std::string journal_path;
  // PEM certificate chain and private key: serve HTTPS instead of HTTP.
  // Both or neither.
  std::string tls_cert;
  std::string tls_key;
  // Accepted for compatibility, and otherwise unused: it was the number of
  // worker threads when each open connection held one. Every connection is
  // now served by the sandbox's one event-loop thread, and an answer waiting
  // out a delay is a timer on it, so nothing is sized to the client's
  // connection pool any more. Still checked (1..100000), so that a value
  // that was refused before still is.
  int threads = 256;
};

// A running sandbox. Thread-safe: every method may be called from any
// thread. Every connection is served by the sandbox's own event-loop thread;
// answers with a delay (latency, `slow`) wait as timers on it, any number at
// once, not as waiting threads. That thread blocks SIGPIPE for itself: an
// answer to a client that has gone fails with EPIPE instead of raising it.
class Sandbox {
 public:
  // Checks `options`, opens the journal, binds and starts serving. Returns
  // only once connections to port() are accepted. InvalidArgument for bad
  // options, Unavailable when the address cannot be bound, another error
  // when the journal cannot be opened.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Sandbox>> Start(
      SandboxOptions options);

  // Stops (see Stop()).
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  // The port actually bound (the chosen one when options.port was 0).
  int port() const;
  // "http://HOST:PORT" ("https://" with TLS); IPv6 hosts in brackets.
  std::string base_url() const;
  // POST requests received so far (each one journalled before it is
  // answered).
  int64_t requests_received() const;

  // Stops accepting, cuts short every pending wait (latency, `slow`; those
  // requests get no answer), closes every open connection and joins the
  // sandbox's thread. Returns promptly. Idempotent.
  void Stop();

 private:
  class Impl;
  explicit Sandbox(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_SANDBOX_SANDBOX_H_
