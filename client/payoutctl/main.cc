// payoutctl: the command-line client of the payout gateway. Every RPC, human
// or --json output, exit codes derived from gRPC codes (see kUsageTail in
// cli.cc); and `token`, which makes a bearer token and its clients-file line
// without calling the gateway. This file defines the flags, checks the
// command line and calls the sub-command.

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/payout_client.h"
#include "client/payoutctl/cli.h"
#include "client/payoutctl/commands.h"
#include "client/payoutctl/flags.h"
#include "client/payoutctl/output.h"
#include "common/build_info.h"

// Global flags.
ABSL_FLAG(std::string, target, "127.0.0.1:50051",
          "Gateway address host:port. When not given, $PAYOUT_TARGET if set.");
ABSL_FLAG(bool, json, false,
          "Print the response (or the error) as one JSON object on stdout.");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(60),
          "Deadline of each call, e.g. 60s, 500ms (batch: the whole stream).");
ABSL_FLAG(std::string, token, "",
          "Bearer token sent as 'authorization: Bearer <token>'. When neither "
          "--token nor --token_file is given, $PAYOUT_TOKEN if set.");
ABSL_FLAG(std::string, token_file, "",
          "File holding the bearer token (surrounding whitespace ignored).");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA bundle to verify the gateway; turns TLS on.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate for mTLS (with --tls_key); turns TLS on.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");

// create (and get).
ABSL_FLAG(std::string, request_id, "",
          "The caller's idempotency key. create: default a fresh random UUID, "
          "printed on stderr (reuse it to retry safely). get: the payout "
          "created with this key.");
ABSL_FLAG(std::string, account, "", "Beneficiary account number.");
ABSL_FLAG(std::string, ifsc, "", "Beneficiary IFSC, e.g. SBIN0000002.");
ABSL_FLAG(std::string, name, "", "Beneficiary name.");
ABSL_FLAG(std::string, email, "", "Beneficiary e-mail.");
ABSL_FLAG(std::string, mobile, "", "Beneficiary mobile (10 digits).");
ABSL_FLAG(std::string, amount, "",
          "Amount in rupees, e.g. 12.00 or 12.5 (converted exactly; at most "
          "two decimals). Or use --amount_paise.");
ABSL_FLAG(std::optional<int64_t>, amount_paise, std::nullopt,
          "Amount in paise (1234 = Rs 12.34).");
ABSL_FLAG(std::string, mode, "IMPS", "Transfer mode: NEFT or IMPS.");
ABSL_FLAG(std::vector<std::string>, metadata, {},
          "Your own references, KEY=VALUE (repeatable or a comma list): "
          "stored and returned with the payout, never sent to AOPay.");

// get, refresh, resolve.
ABSL_FLAG(std::string, payout_id, "", "The gateway's payout id (po_...).");

// list (and resolve).
ABSL_FLAG(std::vector<std::string>, state, {},
          "list: only payouts in these states (repeatable or a comma list, "
          "e.g. ACCEPTED,UNKNOWN). resolve: the outcome, one of ACCEPTED, "
          "SUCCEEDED, FAILED, REVERSED.");
ABSL_FLAG(int32_t, page_size, 0,
          "Payouts per page (0: the gateway's default, 50; at most 500).");
ABSL_FLAG(std::string, page_token, "",
          "The next-page token printed by the previous page.");
ABSL_FLAG(bool, all, false, "Follow next-page tokens to the last page.");

// resolve.
ABSL_FLAG(std::string, transaction_id, "", "AOPay's transactionID, if known.");
ABSL_FLAG(std::string, note, "",
          "Why, and on what evidence, kept for audit: required for resolve, "
          "approve and reject; optional for cancel.");

// watch.
ABSL_FLAG(std::string, after, "",
          "watch: resume after this cursor (printed with each event); empty: "
          "from now on.");
ABSL_FLAG(int64_t, count, 0, "watch: stop after this many events (0: never).");

// report.
ABSL_FLAG(
    std::string, from, "",
    "report: the first day (YYYY-MM-DD, in India) or instant (RFC 3339).");
ABSL_FLAG(std::string, to, "",
          "report: the end, not included (same forms; default: now).");
ABSL_FLAG(std::string, csv, "",
          "report: also write one CSV row a payout to this file (- for "
          "stdout only).");

// batch.
ABSL_FLAG(std::string, file, "",
          "File of CreatePayoutRequest JSON objects, one a line; '-' reads "
          "stdin.");

// health.
ABSL_FLAG(std::string, secret, "",
          "webhook verify: the webhook secret; @/path reads it from a file.");
ABSL_FLAG(std::string, signature, "",
          "webhook verify: the Payout-Signature header's value.");
ABSL_FLAG(std::string, body, "",
          "webhook verify: the request body as received: @/path, or - for "
          "standard input.");
ABSL_FLAG(absl::Duration, tolerance, absl::Minutes(5),
          "webhook verify: how far the signature's time may be from now.");
ABSL_FLAG(std::string, service, "",
          "The service to ask about, e.g. aopay.payout.v1.PayoutService; "
          "empty: the gateway as a whole.");
ABSL_FLAG(bool, liveness, false,
          "Exit 0 whenever the gateway answers, SERVING or not (for liveness "
          "probes: a gateway whose ledger cannot write must not be "
          "restarted).");

namespace aopay {
namespace payoutctl {
namespace {

constexpr absl::string_view kDefaultTarget = "127.0.0.1:50051";

int Main(int argc, char** argv) {
  absl::StatusOr<ScannedArgs> scanned = ScanArgs(argc, argv);
  if (!scanned.ok()) return UsageFailure(scanned.status().message());
  const bool help_command =
      !scanned->positional.empty() && scanned->positional.front() == "help";
  if (scanned->help || help_command) {
    std::cout << Usage();
    return kExitOk;
  }
  if (scanned->version) {
    std::cout << VersionLine("payoutctl");
    return kExitOk;
  }
  if (scanned->positional.empty()) {
    std::cerr << Usage();
    return kExitUsage;
  }

  std::vector<char*> absl_argv;
  for (std::string& arg : scanned->argv) absl_argv.push_back(arg.data());
  absl_argv.push_back(nullptr);
  const std::vector<char*> positional = absl::ParseCommandLine(
      static_cast<int>(absl_argv.size() - 1), absl_argv.data());
  (void)positional;  // ScanArgs already split them out.

  const std::string& name = scanned->positional.front();
  const Command* command = FindCommand(name);
  if (command == nullptr) {
    return UsageFailure(absl::StrCat("unknown command '", name, "'"));
  }
  if (command->arguments.empty() && scanned->positional.size() > 1) {
    return UsageFailure(
        absl::StrCat("unexpected argument '", scanned->positional[1], "'"));
  }
  for (const std::string& flag : scanned->given) {
    if (!FlagApplies(flag, *command)) {
      return UsageFailure(
          absl::StrCat("flag --", flag, " does not apply to '", name, "'"));
    }
  }

  Context ctx;
  ctx.json = absl::GetFlag(FLAGS_json);
  if (name == "completion") {  // calls no gateway
    if (scanned->positional.size() != 2 || scanned->positional[1] != "bash") {
      return UsageFailure("completion needs the shell: completion bash");
    }
    std::cout << BashCompletion();
    return kExitOk;
  }
  if (name == "webhook") {  // calls no gateway either
    const std::vector<std::string> args(scanned->positional.begin() + 1,
                                        scanned->positional.end());
    absl::StatusOr<int> result = RunWebhook(ctx, args);
    if (!result.ok()) return UsageFailure(result.status().message());
    return *result;
  }
  if (name == "token") {  // calls no gateway: no channel, no bearer token
    const std::vector<std::string> args(scanned->positional.begin() + 1,
                                        scanned->positional.end());
    absl::StatusOr<int> result = RunToken(ctx, args);
    if (!result.ok()) return UsageFailure(result.status().message());
    return *result;
  }
  ctx.timeout = absl::GetFlag(FLAGS_timeout);
  if (ctx.timeout <= absl::ZeroDuration()) {
    return UsageFailure("--timeout must be positive");
  }
  ChannelOptions channel_options;
  channel_options.target = absl::GetFlag(FLAGS_target);
  if (!scanned->given.count("target")) {
    const char* env = std::getenv("PAYOUT_TARGET");
    channel_options.target =
        env != nullptr && *env != '\0' ? env : std::string(kDefaultTarget);
  }
  channel_options.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  channel_options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  channel_options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      MakeChannel(channel_options);
  if (!channel.ok()) return UsageFailure(channel.status().message());
  if (name == "health") {  // needs no token: none is read or sent
    absl::StatusOr<int> result = RunHealth(ctx, *channel);
    if (!result.ok()) return UsageFailure(result.status().message());
    return *result;
  }
  absl::StatusOr<std::string> token = ResolveBearerToken(
      absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file));
  if (!token.ok()) return UsageFailure(token.status().message());
  ctx.client = std::make_unique<PayoutClient>(*channel, *token);

  absl::StatusOr<int> result;
  if (name == "create") {
    result = RunCreate(ctx, scanned->given);
  } else if (name == "get") {
    result = RunGet(ctx, scanned->given);
  } else if (name == "list") {
    result = RunList(ctx);
  } else if (name == "refresh") {
    result = RunRefresh(ctx);
  } else if (name == "resolve") {
    result = RunResolve(ctx, scanned->given);
  } else if (name == "watch") {
    result = RunWatch(ctx);
  } else if (name == "report") {
    result = RunReport(ctx);
  } else if (name == "approve" || name == "reject" || name == "cancel") {
    result = RunDecision(ctx, name);
  } else {
    result = RunBatch(ctx);
  }
  if (!result.ok()) return UsageFailure(result.status().message());
  return *result;
}

}  // namespace
}  // namespace payoutctl
}  // namespace aopay

int main(int argc, char** argv) { return aopay::payoutctl::Main(argc, argv); }
