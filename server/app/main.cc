// payout-server: the gateway. Flags only live here; they fill ServerOptions.

#include <curl/curl.h>
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/build_info.h"
#include "common/file_util.h"
#include "common/flag_help.h"
#include "common/limits.h"
#include "common/mutex_checks.h"
#include "server/app/server.h"
#include "server/ledger/postgres/postgres_ledger.h"
#include "spdlog/formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC address HOST:PORT; port 0 picks a free one");
ABSL_FLAG(std::string, aopay_url, "sandbox",
          "AOPay base URL (https://..., or http:// on loopback only); "
          "'sandbox' runs the built-in sandbox in this process");
ABSL_FLAG(std::string, registration_id, "",
          "the merchant's AOPay registration (AOP-SANDBOX with the sandbox, "
          "otherwise required); @/path reads it from a file");
ABSL_FLAG(std::string, ledger, "sqlite:payouts.db",
          "where payouts are recorded: sqlite:PATH (one gateway), or a "
          "postgresql:// URI (several replicas, docs/scale-out.md)");
ABSL_FLAG(absl::Duration, ledger_commit_delay, aopay::kDefaultCommitDelay,
          "SQLite ledger: the longest a group commit waits for more writes "
          "while they arrive in a steady stream (a payout waits for two "
          "commits); 0s commits at once");
ABSL_FLAG(absl::Duration, owner_lease, aopay::kDefaultOwnerLease,
          "PostgreSQL ledger: a replica silent this long loses its PENDING "
          "payouts to UNKNOWN");
ABSL_FLAG(absl::Duration, upstream_timeout, aopay::kDefaultUpstreamTimeout,
          "the longest a single AOPay call may take");
ABSL_FLAG(int64_t, max_inflight, aopay::kDefaultMaxInflight,
          "AOPay calls in flight at once");
ABSL_FLAG(int64_t, max_queue, aopay::kDefaultMaxQueue,
          "payouts waiting for an in-flight slot beyond which new ones get "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "Prometheus /metrics address HOST:PORT; empty disables");
ABSL_FLAG(int64_t, max_amount_paise, aopay::kDefaultMaxAmountPaise,
          "the largest payout accepted in any mode, in paise");
ABSL_FLAG(absl::Duration, idempotency_retention,
          aopay::kMinIdempotencyRetention,
          "how long request ids of final payouts are kept (at least 720h)");
ABSL_FLAG(absl::Duration, reconcile_interval, absl::ZeroDuration(),
          "refresh ACCEPTED payouts in the background this often (0: off)");
ABSL_FLAG(absl::Duration, shutdown_grace, aopay::kDefaultShutdownGrace,
          "on SIGTERM, how long to wait for AOPay calls in flight");
ABSL_FLAG(std::string, aopay_ca, "", "extra CA bundle for AOPay's HTTPS");
ABSL_FLAG(std::string, webhook_url, "",
          "POST every payout event here (https://, or http:// on loopback); "
          "needs --webhook_secret");
ABSL_FLAG(std::string, webhook_secret, "",
          "the key webhooks are signed with: @/path reads it from a file");
ABSL_FLAG(absl::Duration, webhook_timeout, aopay::kWebhookTimeout,
          "how long one webhook POST may take, connecting included; a later "
          "answer counts as none and the event is sent again (100ms to 60s)");
ABSL_FLAG(std::string, tls_cert, "", "serve gRPC over TLS: certificate");
ABSL_FLAG(std::string, tls_key, "", "serve gRPC over TLS: private key");
ABSL_FLAG(std::string, tls_client_ca, "",
          "require client certificates signed by this CA (mTLS)");
ABSL_FLAG(std::string, clients, "",
          "the callers: one 'NAME SHA256-OF-TOKEN SCOPES [LIMITS]' a line "
          "(docs/security.md); re-read on SIGHUP");
ABSL_FLAG(std::string, auth_tokens, "", "old name of --clients");
ABSL_FLAG(bool, allow_insecure_tokens, false,
          "accept --clients without TLS (loopback development only)");
ABSL_FLAG(bool, allow_unauthenticated, false,
          "listen on a non-loopback address without --clients");
ABSL_FLAG(bool, print_config, false,
          "print the effective configuration (secrets masked) and exit");
ABSL_FLAG(std::string, log_format, "text", "text or json");
ABSL_FLAG(absl::Duration, sandbox_latency, absl::ZeroDuration(),
          "with --aopay_url=sandbox: delay every sandbox answer");
ABSL_FLAG(absl::Duration, sandbox_settle, absl::Seconds(2),
          "with --aopay_url=sandbox: when the status endpoint reports SUCCESS");

namespace {

// Every flag may also come from PAYOUT_<FLAG_IN_UPPER_CASE>; the command
// line wins over the environment.
constexpr const char* kFlagNames[] = {
    "listen",
    "aopay_url",
    "registration_id",
    "ledger",
    "ledger_commit_delay",
    "owner_lease",
    "upstream_timeout",
    "max_inflight",
    "max_queue",
    "metrics_listen",
    "max_amount_paise",
    "idempotency_retention",
    "reconcile_interval",
    "shutdown_grace",
    "aopay_ca",
    "webhook_url",
    "webhook_secret",
    "webhook_timeout",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "clients",
    "auth_tokens",
    "allow_insecure_tokens",
    "allow_unauthenticated",
    "log_format",
    "sandbox_latency",
    "sandbox_settle",
};

bool ApplyEnvironment(std::string* error) {
  for (const char* name : kFlagNames) {
    const std::string variable =
        absl::StrCat("PAYOUT_", absl::AsciiStrToUpper(name));
    const char* value = std::getenv(variable.c_str());
    if (value == nullptr) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string parse_error;
    if (flag == nullptr || !flag->ParseFrom(value, &parse_error)) {
      *error = absl::StrCat(variable, ": ", parse_error);
      return false;
    }
  }
  return true;
}

// "@/path" reads a secret from a file (trailing white space dropped).
bool ResolveSecret(std::string* value, std::string* error) {
  if (value->empty() || (*value)[0] != '@') return true;
  const std::string path = value->substr(1);
  absl::StatusOr<std::string> contents =
      aopay::ReadWholeFile(path, "secret file");
  if (!contents.ok()) {
    *error = absl::StrCat("cannot read ", path);
    return false;
  }
  *value = std::string(absl::StripTrailingAsciiWhitespace(*contents));
  return true;
}

// One JSON object a line: time, level, message (escaped).
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& dest) override {
    const absl::Time time = absl::FromChrono(msg.time);
    std::string line = absl::StrCat(
        "{\"time\":\"",
        absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone()),
        "\",\"level\":\"", spdlog::level::to_string_view(msg.level).data(),
        "\",\"msg\":\"");
    for (char c : msg.payload) {
      switch (c) {
        case '"':
          line += "\\\"";
          break;
        case '\\':
          line += "\\\\";
          break;
        case '\n':
          line += "\\n";
          break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char escaped[8];
            std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
            line += escaped;
          } else {
            line += c;
          }
      }
    }
    line += "\"}\n";
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

// Flags whose values are secrets: --print_config shows only whether they are
// set.
bool IsSecretFlag(absl::string_view name) {
  return name == "registration_id" || name == "webhook_secret";
}

// One "name = value" line a flag, in kFlagNames order, as the gateway would
// run with them (environment applied, @/path secrets read, then masked).
void PrintConfig() {
  for (const char* name : kFlagNames) {
    if (absl::string_view(name) == "auth_tokens") continue;  // see clients
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;
    std::string value = flag->CurrentValue();
    if (absl::string_view(name) == "clients" && value.empty()) {
      value = absl::GetFlag(FLAGS_auth_tokens);  // the old name
    }
    if (IsSecretFlag(name)) {
      value = value.empty() ? "" : "[set, masked]";
    }
    if (absl::string_view(name) == "ledger") {
      value = aopay::RedactLedgerUri(value);
    }
    std::cout << name << " = " << value << "\n";
  }
  std::cout.flush();
}

int Fail(const std::string& message) {
  std::cerr << "payout-server: " << message << std::endl;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  aopay::SkipLockOrderChecksInReleaseBuilds();
  absl::SetProgramUsageMessage(
      "the AOPay payout gateway (gRPC). Every flag may also be set as "
      "PAYOUT_<FLAG_IN_UPPER_CASE>.");
  absl::FlagsUsageConfig usage;
  usage.version_string = [] { return aopay::VersionLine("payout-server"); };
  aopay::HelpListsFlagsOf(usage, "server/app/main.cc");
  absl::SetFlagsUsageConfig(usage);
  std::string error;
  if (!ApplyEnvironment(&error)) return Fail(error);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    return Fail(absl::StrCat("unexpected argument ", positional[1]));
  }

  const std::string log_format = absl::GetFlag(FLAGS_log_format);
  if (log_format != "text" && log_format != "json") {
    return Fail("--log_format must be text or json");
  }
  auto logger = spdlog::stderr_logger_mt("payout");
  if (log_format == "json")
    logger->set_formatter(std::make_unique<JsonFormatter>());
  spdlog::set_default_logger(logger);
  spdlog::flush_on(spdlog::level::info);

  aopay::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.aopay_url = absl::GetFlag(FLAGS_aopay_url);
  options.registration_id = absl::GetFlag(FLAGS_registration_id);
  if (!ResolveSecret(&options.registration_id, &error)) {
    return Fail(absl::StrCat("--registration_id: ", error));
  }
  options.ledger = absl::GetFlag(FLAGS_ledger);
  options.ledger_commit_delay = absl::GetFlag(FLAGS_ledger_commit_delay);
  options.owner_lease = absl::GetFlag(FLAGS_owner_lease);
  options.upstream_timeout = absl::GetFlag(FLAGS_upstream_timeout);
  options.max_inflight = absl::GetFlag(FLAGS_max_inflight);
  options.max_queue = absl::GetFlag(FLAGS_max_queue);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.max_amount_paise = absl::GetFlag(FLAGS_max_amount_paise);
  options.idempotency_retention = absl::GetFlag(FLAGS_idempotency_retention);
  options.reconcile_interval = absl::GetFlag(FLAGS_reconcile_interval);
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  options.aopay_ca = absl::GetFlag(FLAGS_aopay_ca);
  options.webhook_url = absl::GetFlag(FLAGS_webhook_url);
  options.webhook_secret = absl::GetFlag(FLAGS_webhook_secret);
  options.webhook_timeout = absl::GetFlag(FLAGS_webhook_timeout);
  if (!ResolveSecret(&options.webhook_secret, &error)) {
    return Fail(absl::StrCat("--webhook_secret: ", error));
  }
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  options.clients = absl::GetFlag(FLAGS_clients);
  if (const std::string old_name = absl::GetFlag(FLAGS_auth_tokens);
      !old_name.empty()) {
    if (!options.clients.empty() && options.clients != old_name) {
      return Fail("--clients and --auth_tokens (its old name) disagree");
    }
    options.clients = old_name;
  }
  options.allow_insecure_tokens = absl::GetFlag(FLAGS_allow_insecure_tokens);
  options.allow_unauthenticated = absl::GetFlag(FLAGS_allow_unauthenticated);
  options.sandbox_latency = absl::GetFlag(FLAGS_sandbox_latency);
  options.sandbox_settle = absl::GetFlag(FLAGS_sandbox_settle);
  if (absl::GetFlag(FLAGS_print_config)) {
    PrintConfig();
    return 0;
  }

  // Signals are taken by sigwait below; every thread started from here on
  // inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    return Fail("libcurl could not be initialised");
  }
  absl::StatusOr<std::unique_ptr<aopay::Server>> server =
      aopay::Server::Start(std::move(options));
  if (!server.ok()) {
    curl_global_cleanup();
    return Fail(std::string(server.status().message()));
  }
  std::cout << "listening on " << (*server)->listening_address() << std::endl;
  if (!(*server)->metrics_address().empty()) {
    spdlog::info("metrics on http://{}/metrics", (*server)->metrics_address());
  }

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) == 0 && signal_number == SIGHUP) {
    spdlog::info("received SIGHUP: reloading the clients file and TLS files");
    (*server)->Reload();
  }
  spdlog::info("received {}", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown();
  server->reset();
  curl_global_cleanup();
  return 0;
}
