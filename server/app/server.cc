#include "server/app/server.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "aopay/payout/v1/payout_descriptor_set.h"
#include "common/build_info.h"
#include "common/limits.h"
#include "common/thread_name.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "httplib.h"
#include "server/app/config_parse.h"
#include "server/executor/executor.h"
#include "server/flow/payout_service.h"
#include "server/flow/reconciler.h"
#include "server/flow/timer.h"
#include "server/flow/webhook_sender.h"
#include "server/ledger/postgres/postgres_ledger.h"
#include "server/ledger/sqlite/sqlite_ledger.h"
#include "server/observability/metrics.h"
#include "server/sandbox/sandbox.h"
#include "server/transport/auth.h"
#include "server/transport/grpc_service.h"
#include "server/transport/proto_convert.h"
#include "server/transport/reflection_service.h"
#include "server/transport/tls.h"
#include "server/upstream/curl/curl_upstream.h"
#include "spdlog/spdlog.h"

namespace aopay {
namespace {

constexpr absl::string_view kSandboxRegistration = "AOP-SANDBOX";
constexpr absl::Duration kHousekeepingTick = absl::Seconds(1);
constexpr absl::Duration kPruneEvery = absl::Hours(1);
// Threads that run the ledger's callbacks (building AOPay bodies, answering
// callers): the writer thread only writes. Two keep one batch's answers from
// waiting behind another's without adding much switching on small machines.
constexpr size_t kCallbackThreads = 2;

// CurlUpstream names the options it checks as the flags that set them
// (CurlUpstreamOptions::base_url_name, ca_file_name); an error about
// anything else (libcurl itself) is prefixed with the URL's flag, so that it
// says which client could not start.
absl::Status NamedByFlag(const absl::Status& status, absl::string_view url_flag,
                         absl::string_view ca_flag) {
  const absl::string_view message = status.message();
  if (absl::StartsWith(message, url_flag) ||
      absl::StartsWith(message, ca_flag)) {
    return status;
  }
  return absl::Status(status.code(), absl::StrCat(url_flag, ": ", message));
}

absl::Status CheckOptions(const ServerOptions& options) {
  if (options.upstream_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--upstream_timeout must be positive");
  }
  if (options.max_inflight < 1) {
    return absl::InvalidArgumentError("--max_inflight must be at least 1");
  }
  if (options.max_queue < 0) {
    return absl::InvalidArgumentError("--max_queue must not be negative");
  }
  if (options.max_amount_paise < 1) {
    return absl::InvalidArgumentError("--max_amount_paise must be positive");
  }
  if (options.idempotency_retention < kMinIdempotencyRetention) {
    return absl::InvalidArgumentError(
        absl::StrCat("--idempotency_retention must be at least ",
                     absl::FormatDuration(kMinIdempotencyRetention)));
  }
  if (options.reconcile_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--reconcile_interval must not be negative");
  }
  if (options.ledger_commit_delay < absl::ZeroDuration() ||
      options.ledger_commit_delay > kMaxCommitDelay) {
    return absl::InvalidArgumentError(
        absl::StrCat("--ledger_commit_delay must be between 0s and ",
                     absl::FormatDuration(kMaxCommitDelay)));
  }
  if (options.shutdown_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--shutdown_grace must not be negative");
  }
  // Checked whatever the ledger, as --ledger_commit_delay is: a setting that
  // only one ledger reads must not wait for the move to it to be refused.
  if (absl::Status lease = PostgresLedger::CheckOwnerLease(options.owner_lease);
      !lease.ok()) {
    return lease;
  }
  if (options.webhook_url.empty() != options.webhook_secret.empty()) {
    return absl::InvalidArgumentError(
        "--webhook_url and --webhook_secret go together");
  }
  if (!options.webhook_secret.empty() &&
      options.webhook_secret.size() < kMinWebhookSecretBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--webhook_secret must be at least ",
                     kMinWebhookSecretBytes, " characters"));
  }
  if (options.webhook_timeout < kMinWebhookTimeout ||
      options.webhook_timeout > kMaxWebhookTimeout) {
    return absl::InvalidArgumentError(
        absl::StrCat("--webhook_timeout must be between ",
                     absl::FormatDuration(kMinWebhookTimeout), " and ",
                     absl::FormatDuration(kMaxWebhookTimeout)));
  }
  if (options.aopay_url != "sandbox" && options.registration_id.empty()) {
    return absl::InvalidArgumentError(
        "--registration_id is required when --aopay_url is not sandbox");
  }
  return absl::OkStatus();
}

// The safe defaults of docs/security.md: bearer tokens never cross a network
// in clear text, and a gateway reachable from other hosts knows its callers.
absl::Status CheckExposure(const ServerOptions& options,
                           const HostPort& listen) {
  const bool loopback = IsLoopbackHost(listen.host);
  const bool tls = !options.tls_cert.empty();
  if (!options.clients.empty() && !tls) {
    if (!options.allow_insecure_tokens) {
      return absl::InvalidArgumentError(
          "--clients without TLS would send bearer tokens in clear text: add "
          "--tls_cert and --tls_key (or --allow_insecure_tokens for loopback "
          "development)");
    }
    if (!loopback) {
      return absl::InvalidArgumentError(
          "--allow_insecure_tokens is for loopback development only: "
          "--listen must be a loopback address");
    }
  }
  if (options.clients.empty() && !loopback && !options.allow_unauthenticated) {
    return absl::InvalidArgumentError(
        "--listen is not a loopback address and there is no --clients: "
        "anyone who reaches the port could send money (give --clients, or "
        "--allow_unauthenticated to accept that)");
  }
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both or neither");
  }
  if (options.tls_cert.empty() && !options.tls_client_ca.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca needs --tls_cert and --tls_key");
  }
  return absl::OkStatus();
}

class ServerImpl final : public Server {
 public:
  explicit ServerImpl(ServerOptions options) : options_(std::move(options)) {}

  ~ServerImpl() override { Shutdown(); }

  absl::Status Init() {
    if (absl::Status checked = CheckOptions(options_); !checked.ok()) {
      return checked;
    }
    absl::StatusOr<HostPort> listen = ParseHostPort("listen", options_.listen);
    if (!listen.ok()) return listen.status();
    absl::StatusOr<LedgerSpec> ledger_spec = ParseLedgerSpec(options_.ledger);
    if (!ledger_spec.ok()) return ledger_spec.status();
    if (absl::Status exposed = CheckExposure(options_, *listen);
        !exposed.ok()) {
      return exposed;
    }
    std::shared_ptr<const ClientRegistry> clients;
    if (!options_.clients.empty()) {
      absl::StatusOr<std::shared_ptr<const ClientRegistry>> loaded =
          ClientRegistry::Load(options_.clients);
      if (!loaded.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--clients: ", loaded.status().message()));
      }
      clients = *std::move(loaded);
      spdlog::info("{} clients from {}", clients->clients().size(),
                   options_.clients);
    } else if (options_.allow_unauthenticated &&
               !IsLoopbackHost(listen->host)) {
      spdlog::warn(
          "no --clients on a non-loopback address (--allow_unauthenticated): "
          "every caller may send money");
    }
    authenticator_ =
        std::make_unique<Authenticator>(std::move(clients), metrics_);
    std::shared_ptr<grpc::ServerCredentials> credentials =
        grpc::InsecureServerCredentials();
    if (!options_.tls_cert.empty()) {
      absl::StatusOr<std::unique_ptr<TlsCredentials>> tls =
          TlsCredentials::Create(
              {options_.tls_cert, options_.tls_key, options_.tls_client_ca});
      if (!tls.ok()) return tls.status();
      tls_ = *std::move(tls);
      credentials = tls_->server_credentials();
    }

    std::string aopay_url = options_.aopay_url;
    std::string registration = options_.registration_id;
    if (aopay_url == "sandbox") {
      SandboxOptions sandbox_options;
      sandbox_options.host = "127.0.0.1";
      sandbox_options.port = 0;
      if (registration.empty())
        registration = std::string(kSandboxRegistration);
      sandbox_options.registrations = {registration};
      sandbox_options.latency = options_.sandbox_latency;
      sandbox_options.settle = options_.sandbox_settle;
      absl::StatusOr<std::unique_ptr<Sandbox>> sandbox =
          Sandbox::Start(std::move(sandbox_options));
      if (!sandbox.ok()) return sandbox.status();
      sandbox_ = *std::move(sandbox);
      aopay_url = sandbox_->base_url();
      spdlog::warn(
          "SANDBOX MODE: AOPay is the built-in sandbox at {}; NO REAL MONEY "
          "MOVES. Set --aopay_url and --registration_id to pay for real.",
          aopay_url);
    }

    callbacks_ = std::make_unique<ThreadPool>(kCallbackThreads, "callbacks");
    if (absl::Status opened = OpenLedger(*ledger_spec, registration);
        !opened.ok()) {
      return opened;
    }

    CurlUpstreamOptions upstream_options;
    upstream_options.base_url = aopay_url;
    upstream_options.timeout = options_.upstream_timeout;
    upstream_options.max_inflight = static_cast<size_t>(options_.max_inflight);
    upstream_options.max_queue = static_cast<size_t>(options_.max_queue);
    upstream_options.ca_file = options_.aopay_ca;
    upstream_options.thread_name = "aopay-curl";
    upstream_options.base_url_name = "--aopay_url";
    upstream_options.ca_file_name = AopayCaFlag();
    absl::StatusOr<std::unique_ptr<CurlUpstream>> upstream =
        CurlUpstream::Create(std::move(upstream_options));
    if (!upstream.ok()) {
      return NamedByFlag(upstream.status(), "--aopay_url", AopayCaFlag());
    }
    upstream_ = *std::move(upstream);

    PayoutServiceOptions service_options;
    service_options.registration_id = registration;
    service_options.limits.max_amount_paise = options_.max_amount_paise;
    service_options.max_outstanding =
        static_cast<size_t>(options_.max_inflight + options_.max_queue);
    const size_t refresh_bound =
        std::max<size_t>(1, static_cast<size_t>(options_.max_inflight) / 4);
    service_options.max_refreshes = refresh_bound;
    timer_ = std::make_unique<ThreadTimer>();
    service_options.calls_in_flight = &calls_in_flight_;
    service_ = std::make_unique<PayoutService>(
        *ledger_, *upstream_, *timer_, metrics_, std::move(service_options));
    grpc_service_ = std::make_unique<GrpcPayoutService>(
        *service_, *authenticator_, metrics_);
    admin_service_ = std::make_unique<GrpcPayoutAdminService>(
        *service_, *authenticator_, metrics_);
    if (options_.reconcile_interval > absl::ZeroDuration()) {
      // Half the refresh bound: callers' RefreshPayout keeps the rest.
      reconciler_ =
          std::make_unique<Reconciler>(*service_, options_.reconcile_interval,
                                       std::max<size_t>(1, refresh_bound / 2));
    }

    if (!options_.webhook_url.empty()) {
      if (absl::Status started = StartWebhooks(); !started.ok()) {
        return started;
      }
    }

    metrics_.SetInfo(
        "payout_build_info",
        "The gateway's version and the git commit it was built "
        "from (value 1).",
        {{"version", PayoutVersion()}, {"commit", PayoutCommit()}});
    metrics_.SetGauge(
        "aopay_requests_in_flight", "AOPay calls started and not finished.",
        [this] { return static_cast<double>(upstream_->InFlight()); });
    metrics_.SetGauge(
        "aopay_requests_queued", "AOPay calls waiting for an in-flight slot.",
        [this] { return static_cast<double>(upstream_->Queued()); });
    metrics_.SetGauge(
        "payout_outcomes_unrecorded",
        "AOPay outcomes kept in memory until the ledger can record them.",
        [this] { return static_cast<double>(service_->Unrecorded()); });
    metrics_.SetGauge("ledger_healthy", "1 while the ledger accepts writes.",
                      [this] { return ledger_->Healthy() ? 1.0 : 0.0; });

    // Reflection from a descriptor set that keeps the proto comments, so
    // `grpcurl describe` shows them (the stock plugin's descriptors do not).
    absl::StatusOr<std::unique_ptr<ReflectionService>> reflection =
        ReflectionService::Create(
            PayoutDescriptorSet(),
            {payout::v1::PayoutService::service_full_name(),
             payout::v1::PayoutAdminService::service_full_name(),
             "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
             "grpc.reflection.v1alpha.ServerReflection"});
    if (!reflection.ok()) return reflection.status();
    reflection_ = *std::move(reflection);

    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    // Admission is the gateway's (RESOURCE_EXHAUSTED / OVERLOADED with
    // RetryInfo beyond max_inflight + max_queue), never a queue hidden in
    // HTTP/2: any number of calls may share one connection, so thousands of
    // callers on a few channels all reach the service. (gRPC's own default
    // is the same; it is stated here so that it stays so.)
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, INT_MAX);
    int selected_port = 0;
    builder.AddListeningPort(options_.listen, credentials, &selected_port);
    builder.RegisterService(grpc_service_.get());
    builder.RegisterService(admin_service_.get());
    reflection_->RegisterWith(builder);
    grpc_server_ = builder.BuildAndStart();
    if (grpc_server_ == nullptr || selected_port == 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", options_.listen));
    }
    listening_address_ = JoinHostPort(listen->host, selected_port);
    // NOT_SERVING from the start while the ledger cannot write (a database
    // not reached yet).
    initially_healthy_ = ledger_->Healthy();
    SetHealth(initially_healthy_);

    if (!options_.metrics_listen.empty()) {
      if (absl::Status started = StartMetrics(); !started.ok()) return started;
    }
    housekeeping_ = std::thread([this] {
      NameThisThread("housekeeping");
      Housekeeping();
    });
    return absl::OkStatus();
  }

  std::string listening_address() const override { return listening_address_; }

  void Reload() override {
    if (!options_.clients.empty()) {
      absl::StatusOr<std::shared_ptr<const ClientRegistry>> loaded =
          ClientRegistry::Load(options_.clients);
      if (loaded.ok()) {
        spdlog::info("reloaded {}: {} clients", options_.clients,
                     (*loaded)->clients().size());
        authenticator_->Replace(*std::move(loaded));
      } else {
        spdlog::error("reload refused, the clients in use stay: {}",
                      std::string(loaded.status().message()));
      }
    }
    if (tls_ != nullptr) {
      absl::StatusOr<std::string> served = tls_->Reload();
      if (served.ok()) {
        spdlog::info("reloaded the TLS certificate: {}", *served);
      } else {
        spdlog::error("TLS reload refused, the certificate in use stays: {}",
                      std::string(served.status().message()));
      }
    }
  }
  std::string metrics_address() const override { return metrics_address_; }

  void Shutdown() override {
    if (shut_down_) return;
    shut_down_ = true;
    if (grpc_server_ == nullptr) {  // Init failed part-way.
      StopHelpers();
      return;
    }
    spdlog::info(
        "shutting down: no new payouts; waiting up to {} for AOPay "
        "calls in flight",
        absl::FormatDuration(options_.shutdown_grace));
    SetHealth(false);
    service_->Drain();
    // Stop accepting calls now; calls in flight end as their AOPay calls and
    // ledger writes complete.
    const absl::Time deadline = absl::Now() + options_.shutdown_grace;
    std::thread stop_grpc([this, deadline] {
      grpc_server_->Shutdown(absl::ToChronoTime(deadline + absl::Seconds(5)));
    });
    upstream_->Shutdown(options_.shutdown_grace);
    // Outcomes the ledger could not record yet get what is left of the
    // grace; the rest are logged for an operator.
    service_->WaitIdle(deadline);
    stop_grpc.join();
    StopHelpers();
    spdlog::info("shut down cleanly");
  }

 private:
  void StopHelpers() {
    stop_.Notify();
    // Webhooks in flight are cut off (they stay in the outbox and go again
    // after the restart); their outcomes are recorded before the ledger
    // closes.
    if (webhook_client_ != nullptr) {
      webhook_client_->Shutdown(absl::ZeroDuration());
    }
    if (webhooks_ != nullptr) webhooks_->Stop();
    if (housekeeping_.joinable()) housekeeping_.join();
    if (metrics_server_ != nullptr) metrics_server_->stop();
    if (metrics_thread_.joinable()) metrics_thread_.join();
    if (upstream_ != nullptr) upstream_->Shutdown(absl::ZeroDuration());
    if (timer_ != nullptr) timer_->Stop();
    if (ledger_ != nullptr) ledger_->Close();
    if (callbacks_ != nullptr) callbacks_->Stop();
    if (sandbox_ != nullptr) sandbox_->Stop();
  }

  void SetHealth(bool serving) {
    if (grpc_server_ == nullptr) return;
    grpc::HealthCheckServiceInterface* health =
        grpc_server_->GetHealthCheckService();
    if (health == nullptr) return;
    health->SetServingStatus(serving);
    health->SetServingStatus("aopay.payout.v1.PayoutService", serving);
    health->SetServingStatus("aopay.payout.v1.PayoutAdminService", serving);
  }

  // How errors about the CA bundle name it: the flag and the file.
  std::string AopayCaFlag() const {
    return absl::StrCat("--aopay_ca=", options_.aopay_ca);
  }

  // Its own HTTP client: a receiver that is down or slow holds up only
  // webhooks, never AOPay calls.
  absl::Status StartWebhooks() {
    CurlUpstreamOptions client_options;
    client_options.base_url = options_.webhook_url;
    client_options.timeout = options_.webhook_timeout;
    client_options.connect_timeout = options_.webhook_timeout;
    client_options.max_inflight = kWebhookMaxInflight;
    client_options.ca_file = options_.aopay_ca;
    client_options.thread_name = "webhook-curl";
    client_options.base_url_name = "--webhook_url";
    client_options.ca_file_name = AopayCaFlag();
    absl::StatusOr<std::unique_ptr<CurlUpstream>> client =
        CurlUpstream::Create(std::move(client_options));
    if (!client.ok()) {
      return absl::InvalidArgumentError(
          NamedByFlag(client.status(), "--webhook_url", AopayCaFlag())
              .message());
    }
    webhook_client_ = *std::move(client);
    WebhookSenderOptions sender_options;
    sender_options.secret = options_.webhook_secret;
    sender_options.max_in_flight = kWebhookMaxInflight;
    webhooks_ = std::make_unique<WebhookSender>(*ledger_, *webhook_client_,
                                                metrics_, &PayoutEventJson,
                                                std::move(sender_options));
    metrics_.SetGauge(
        "webhook_outbox_events", "Events waiting for webhook delivery.",
        [this] { return static_cast<double>(webhooks_->outbox_events()); });
    metrics_.SetGauge(
        "webhook_outbox_oldest_age_seconds",
        "Age of the oldest event waiting for webhook delivery (0: none).",
        [this] { return webhooks_->outbox_oldest_age_seconds(absl::Now()); });
    webhooks_->Start();
    return absl::OkStatus();
  }

  absl::Status StartMetrics() {
    absl::StatusOr<HostPort> where =
        ParseHostPort("metrics_listen", options_.metrics_listen);
    if (!where.ok()) return where.status();
    metrics_server_ = std::make_unique<httplib::Server>();
    metrics_server_->Get("/metrics", [this](const httplib::Request&,
                                            httplib::Response& response) {
      response.set_content(metrics_.Render(),
                           "text/plain; version=0.0.4; charset=utf-8");
    });
    int port = where->port;
    if (port == 0) {
      port = metrics_server_->bind_to_any_port(where->host);
    } else if (!metrics_server_->bind_to_port(where->host, port)) {
      port = -1;
    }
    if (port <= 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot listen on --metrics_listen=", options_.metrics_listen));
    }
    metrics_address_ = JoinHostPort(where->host, port);
    metrics_thread_ = std::thread([this] {
      NameThisThread("metrics-http");
      metrics_server_->listen_after_bind();
    });
    return absl::OkStatus();
  }

  absl::Status OpenLedger(const LedgerSpec& spec,
                          const std::string& registration) {
    if (spec.kind == LedgerSpec::Kind::kPostgres) {
      PostgresLedgerOptions ledger_options;
      ledger_options.webhooks = !options_.webhook_url.empty();
      ledger_options.uri = spec.uri;
      ledger_options.registration_id = registration;
      ledger_options.owner_lease = options_.owner_lease;
      ledger_options.executor = callbacks_.get();
      // Only before the database was first reached: nothing was sent.
      ledger_options.on_fatal = [](const absl::Status& status) {
        spdlog::critical("stopping: the ledger cannot be used: {}",
                         std::string(status.message()));
        spdlog::default_logger()->flush();
        std::_Exit(kLedgerFatalExitCode);
      };
      absl::StatusOr<std::unique_ptr<PostgresLedger>> ledger =
          PostgresLedger::Open(std::move(ledger_options));
      if (!ledger.ok()) return ledger.status();
      ledger_ = *std::move(ledger);
    } else {
      SqliteLedgerOptions ledger_options;
      ledger_options.path = spec.path;
      ledger_options.registration_id = registration;
      ledger_options.durable = spec.durable;
      ledger_options.commit_delay = options_.ledger_commit_delay;
      ledger_options.webhooks = !options_.webhook_url.empty();
      ledger_options.executor = callbacks_.get();
      ledger_options.calls_in_flight = &calls_in_flight_;
      absl::StatusOr<std::unique_ptr<SqliteLedger>> ledger =
          SqliteLedger::Open(std::move(ledger_options));
      if (!ledger.ok()) return ledger.status();
      ledger_ = *std::move(ledger);
      if (!spec.durable) {
        spdlog::warn(
            "ledger opened WITHOUT fsync (synchronous=off): a crash "
            "can lose payouts; for benchmarks only");
      }
    }
    absl::StatusOr<int> recovered = ledger_->RecoverPending(absl::Now());
    if (!recovered.ok()) return recovered.status();
    if (*recovered > 0) {
      spdlog::warn(
          "{} payouts were PENDING when their gateway stopped; they are "
          "now UNKNOWN and will not be re-sent (RefreshPayout or "
          "ResolvePayout settles them)",
          *recovered);
    }
    return absl::OkStatus();
  }

  // Health follows the ledger; old final payouts are pruned and the
  // reconciler runs (when enabled) on the leading replica only.
  void Housekeeping() {
    absl::Time next_prune = absl::Now();
    bool healthy = initially_healthy_;
    while (!stop_.WaitForNotificationWithTimeout(kHousekeepingTick)) {
      const bool ledger_healthy = ledger_->Healthy();
      const bool now_healthy = ledger_healthy && !service_->draining();
      if (now_healthy != healthy) {
        healthy = now_healthy;
        SetHealth(healthy);
        if (!ledger_healthy) {
          spdlog::error("ledger cannot write: health NOT_SERVING");
        } else if (healthy) {
          spdlog::info("ledger writes again: health SERVING");
        }
      }
      // Watchers learn of changes this process did not record (another
      // replica's, recovery, pruning) within a tick.
      service_->event_hub().Poke();
      if (!ledger_->IsLeader()) continue;
      if (absl::Now() >= next_prune) {
        next_prune = absl::Now() + kPruneEvery;
        ledger_->Prune(absl::Now() - options_.idempotency_retention,
                       [](absl::StatusOr<int> pruned) {
                         if (!pruned.ok()) {
                           spdlog::warn("pruning old payouts failed: {}",
                                        pruned.status().ToString());
                         } else if (*pruned > 0) {
                           spdlog::info(
                               "pruned {} final payouts past "
                               "retention",
                               *pruned);
                         }
                       });
      }
      if (reconciler_ != nullptr) reconciler_->Tick(absl::Now());
    }
  }

  ServerOptions options_;
  Metrics metrics_;
  std::unique_ptr<Sandbox> sandbox_;
  std::unique_ptr<ThreadPool> callbacks_;  // outlives the ledger
  // The service's creations, approvals and refreshes in progress, read by the
  // SQLite ledger's group commit; outlives both.
  std::atomic<size_t> calls_in_flight_{0};
  std::unique_ptr<Ledger> ledger_;
  bool initially_healthy_ = true;  // set before housekeeping_ starts
  std::unique_ptr<CurlUpstream> upstream_;
  std::unique_ptr<ThreadTimer> timer_;  // stopped before the ledger closes
  std::unique_ptr<PayoutService> service_;
  std::unique_ptr<Authenticator> authenticator_;
  std::unique_ptr<TlsCredentials> tls_;  // outlives grpc_server_
  std::unique_ptr<GrpcPayoutService> grpc_service_;
  std::unique_ptr<GrpcPayoutAdminService> admin_service_;
  std::unique_ptr<Reconciler> reconciler_;
  std::unique_ptr<CurlUpstream> webhook_client_;  // outlives webhooks_
  std::unique_ptr<WebhookSender> webhooks_;
  std::unique_ptr<ReflectionService> reflection_;  // outlives grpc_server_
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<httplib::Server> metrics_server_;
  std::thread metrics_thread_;
  std::thread housekeeping_;
  absl::Notification stop_;
  std::string listening_address_;
  std::string metrics_address_;
  bool shut_down_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerOptions options) {
  auto server = std::make_unique<ServerImpl>(std::move(options));
  if (absl::Status started = server->Init(); !started.ok()) return started;
  return server;
}

}  // namespace aopay
