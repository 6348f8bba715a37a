#ifndef AOPAY_SERVER_APP_SERVER_H_
#define AOPAY_SERVER_APP_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/limits.h"

namespace aopay {

// Everything payout-server can be told (docs/configuration.md). main.cc fills
// it from flags; tests fill it directly.
struct ServerOptions {
  std::string listen = "127.0.0.1:50051";
  // AOPay's base URL, or "sandbox" to run the sandbox in this process.
  std::string aopay_url = "sandbox";
  // Required unless aopay_url is "sandbox" (then "AOP-SANDBOX").
  std::string registration_id;
  // "sqlite:PATH"; "sqlite:PATH?synchronous=off" drops fsync (benchmarks);
  // or a postgresql:// URI (docs/scale-out.md).
  std::string ledger = "sqlite:payouts.db";
  // PostgreSQL: how long a replica may stop heart-beating before its PENDING
  // payouts become UNKNOWN.
  absl::Duration ledger_commit_delay = kDefaultCommitDelay;
  absl::Duration owner_lease = kDefaultOwnerLease;
  absl::Duration upstream_timeout = kDefaultUpstreamTimeout;
  int64_t max_inflight = kDefaultMaxInflight;
  int64_t max_queue = kDefaultMaxQueue;
  std::string metrics_listen = "127.0.0.1:9464";  // "" disables
  int64_t max_amount_paise = kDefaultMaxAmountPaise;
  absl::Duration idempotency_retention = kMinIdempotencyRetention;
  absl::Duration reconcile_interval = absl::ZeroDuration();  // zero: off
  // How long SIGTERM waits for AOPay calls in flight.
  absl::Duration shutdown_grace = kDefaultShutdownGrace;
  std::string aopay_ca;
  // Webhooks (docs/webhooks.md): every event POSTed here, signed with the
  // secret (both or neither; SQLite ledger only).
  std::string webhook_url;
  std::string webhook_secret;
  // How long one POST may take (kMinWebhookTimeout..kMaxWebhookTimeout).
  absl::Duration webhook_timeout = kWebhookTimeout;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  // The clients file (docs/security.md); "" = everyone is the anonymous
  // client, allowed on loopback only unless allow_unauthenticated.
  std::string clients;
  // --clients without TLS (loopback development only).
  bool allow_insecure_tokens = false;
  // No --clients on a non-loopback --listen.
  bool allow_unauthenticated = false;
  // The in-process sandbox's knobs (aopay_url == "sandbox" only).
  absl::Duration sandbox_latency = absl::ZeroDuration();
  absl::Duration sandbox_settle = absl::Seconds(2);
};

// The running gateway. Start() checks the options, opens the ledger (turning
// PENDING payouts UNKNOWN), and serves gRPC and /metrics until Shutdown().
// The exit status when the ledger turns out to be unusable after start-up
// (a PostgreSQL database first reached later, whose migration or
// registration check fails).
inline constexpr int kLedgerFatalExitCode = 3;

class Server {
 public:
  // Fails with INVALID_ARGUMENT (bad option combination) or
  // FAILED_PRECONDITION / UNAVAILABLE (ledger, port, AOPay URL) and a
  // one-line message.
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerOptions options);

  virtual ~Server() = default;

  // "HOST:PORT" that gRPC accepts calls on (the real port when 0 was asked).
  virtual std::string listening_address() const = 0;
  // "HOST:PORT" of /metrics, or "" when disabled.
  virtual std::string metrics_address() const = 0;

  // SIGHUP: re-reads the clients file and the TLS files. A file that does not
  // parse or check is refused with a log line and the old one stays in use.
  virtual void Reload() = 0;

  // Stops accepting calls, lets AOPay calls in flight finish and be recorded
  // (up to shutdown_grace), then closes the ledger. Idempotent; blocks.
  virtual void Shutdown() = 0;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_APP_SERVER_H_
