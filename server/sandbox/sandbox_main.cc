// aopay-sandbox: the AOPay stand-in (docs/sandbox.md) as a program.
// Flags only live here; they fill SandboxOptions.

#include <pthread.h>

#include <csignal>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/flag_help.h"
#include "common/mutex_checks.h"
#include "server/sandbox/sandbox.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:8089",
          "address HOST:PORT to serve on; port 0 picks a free one");
ABSL_FLAG(std::vector<std::string>, registrations, {"AOP-SANDBOX"},
          "comma-separated registrationIDs accepted; others get 403");
ABSL_FLAG(absl::Duration, latency, absl::ZeroDuration(),
          "added before every answer (e.g. 250ms)");
ABSL_FLAG(absl::Duration, latency_jitter, absl::ZeroDuration(),
          "added on top of --latency, a different share for each request, "
          "spread evenly over [0, jitter) and the same in every run");
ABSL_FLAG(absl::Duration, slow, absl::Seconds(60),
          "how long an account ending in 0504 waits for its answer");
ABSL_FLAG(absl::Duration, settle, absl::Seconds(2),
          "how long after acceptance the status endpoint says PENDING before "
          "SUCCESS");
ABSL_FLAG(std::string, journal, "",
          "append every request received to this file, one JSON line each");
ABSL_FLAG(std::string, tls_cert, "",
          "serve HTTPS: PEM certificate chain (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "serve HTTPS: PEM private key");
ABSL_FLAG(int, threads, 256,
          "unused: every connection is served by one event-loop thread; "
          "still accepted (1..100000) so that old command lines run");

namespace {

// The sandbox's own flags are the ones defined in this file; --help lists
// them, and CheckCommandLine checks their values.
bool DefinesOwnFlags(absl::string_view path) {
  return absl::EndsWith(path, "sandbox_main.cc");
}

int Fail(absl::string_view message) {
  std::cerr << "aopay-sandbox: " << message << std::endl;
  return 2;
}

// Handled inside absl::ParseCommandLine, not registered as flags.
constexpr absl::string_view kUsageFlags[] = {
    "help",      "helpfull",        "helpshort", "helppackage",
    "helpmatch", "only_check_args", "version",
};

bool IsUsageFlag(absl::string_view name) {
  for (absl::string_view usage : kUsageFlags) {
    if (name == usage) return true;
  }
  return false;
}

// absl::ParseCommandLine reports a bad command line on several lines and
// exits 1; this finds the same mistakes first, as one line for exit 2.
// Flags that are not the sandbox's own (--help and friends) are left to
// absl.
std::string CheckCommandLine(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") {
      return i + 1 < argc ? absl::StrCat("unexpected argument ", argv[i + 1])
                          : "";
    }
    if (!absl::ConsumePrefix(&arg, "-") || arg.empty()) {
      return absl::StrCat("unexpected argument ", argv[i]);
    }
    absl::ConsumePrefix(&arg, "-");
    const size_t equals = arg.find('=');
    const absl::string_view name = arg.substr(0, equals);
    if (IsUsageFlag(name)) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) return absl::StrCat("unknown flag --", name);
    if (!DefinesOwnFlags(flag->Filename())) continue;
    std::string value;
    if (equals != absl::string_view::npos) {
      value = std::string(arg.substr(equals + 1));
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return absl::StrCat("--", name, " needs a value");
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::StrCat("--", name, ": ", error);
    }
  }
  return "";
}

struct Listen {
  std::string host;  // as given, IPv6 in brackets
  int port = 0;
};

absl::StatusOr<Listen> ParseListen(absl::string_view text) {
  const size_t colon = text.rfind(':');
  Listen listen;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(text.substr(colon + 1), &listen.port) ||
      listen.port < 0 || listen.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen must be HOST:PORT (port 0..65535), not \"", text, "\""));
  }
  listen.host = std::string(text.substr(0, colon));
  return listen;
}

}  // namespace

int main(int argc, char** argv) {
  aopay::SkipLockOrderChecksInReleaseBuilds();
  absl::SetProgramUsageMessage(
      "a stand-in for AOPay's payout API over HTTP(S); no money moves.");
  // --help lists the flags of this file (absl looks for a file named after
  // the program by default).
  absl::FlagsUsageConfig usage;
  aopay::HelpListsFlagsOf(usage, "server/sandbox/sandbox_main.cc");
  absl::SetFlagsUsageConfig(usage);
  if (std::string error = CheckCommandLine(argc, argv); !error.empty()) {
    return Fail(error);
  }
  absl::ParseCommandLine(argc, argv);

  absl::StatusOr<Listen> listen = ParseListen(absl::GetFlag(FLAGS_listen));
  if (!listen.ok()) return Fail(listen.status().message());
  aopay::SandboxOptions options;
  options.host = listen->host;
  options.port = listen->port;
  options.registrations = absl::GetFlag(FLAGS_registrations);
  options.latency = absl::GetFlag(FLAGS_latency);
  options.latency_jitter = absl::GetFlag(FLAGS_latency_jitter);
  options.slow = absl::GetFlag(FLAGS_slow);
  options.settle = absl::GetFlag(FLAGS_settle);
  options.journal_path = absl::GetFlag(FLAGS_journal);
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.threads = absl::GetFlag(FLAGS_threads);

  // Signals are taken by sigwait below; the sandbox's threads, started from
  // here on, inherit the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  const int registrations = static_cast<int>(options.registrations.size());
  absl::StatusOr<std::unique_ptr<aopay::Sandbox>> sandbox =
      aopay::Sandbox::Start(options);
  if (!sandbox.ok()) {
    const bool bad_flags =
        sandbox.status().code() == absl::StatusCode::kInvalidArgument;
    std::cerr << "aopay-sandbox: " << sandbox.status().message() << std::endl;
    return bad_flags ? 2 : 1;
  }
  std::cerr << "aopay-sandbox: serving " << (*sandbox)->base_url()
            << " (NO REAL MONEY MOVES; " << registrations
            << " registration(s), latency "
            << absl::FormatDuration(options.latency) << ", slow "
            << absl::FormatDuration(options.slow) << ", settle "
            << absl::FormatDuration(options.settle)
            << (options.journal_path.empty() ? "" : ", journal on") << ")"
            << std::endl;
  std::cout << "listening on " << listen->host << ":" << (*sandbox)->port()
            << std::endl;

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  std::cerr << "aopay-sandbox: "
            << (signal_number == SIGTERM ? "SIGTERM" : "SIGINT")
            << ", stopping after " << (*sandbox)->requests_received()
            << " request(s)" << std::endl;
  (*sandbox)->Stop();
  return 0;
}
