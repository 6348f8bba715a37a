#include "client/payoutctl/cli.h"

#include <algorithm>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace aopay {
namespace payoutctl {
namespace {

constexpr absl::string_view kGlobalFlags[] = {
    "target",     "json",   "timeout",  "token",
    "token_file", "tls_ca", "tls_cert", "tls_key"};

// Flags that absl itself defines and handles.
bool IsAbslBuiltinFlag(absl::string_view name) {
  return name == "flagfile" || name == "fromenv" || name == "tryfromenv" ||
         name == "undefok" || name == "version";
}

bool IsHelpFlag(absl::string_view name) {
  return name == "help" || name == "helpfull" || name == "helpshort" ||
         name == "helppackage" || name == "h" || name == "?";
}

constexpr absl::string_view kUsageHead =
    R"(payoutctl: command-line client of the AOPay payout gateway.

Usage: payoutctl <command> [flags]
       payoutctl token NAME [SCOPES] [LIMIT=VALUE ...] [--json]
       payoutctl help

The gateway is --target, else $PAYOUT_TARGET, else 127.0.0.1:50051.
Human output masks account numbers, mobiles and e-mails; --json prints the
full response. Errors show the gRPC code, the message, the reason, every field
violation and the retry delay.
)";

constexpr absl::string_view kUsageTail =
    R"(
token NAME [SCOPES] [LIMIT=VALUE ...] makes a new bearer token (32 random
bytes, base64url without padding) and prints it with the line to add to the
gateway's clients file: NAME, the token's SHA-256 in hex, SCOPES and the
limits. SCOPES is a comma list of payouts:write, payouts:read,
payouts:read_all, admin and approve (default payouts:write,payouts:read);
the limits are max_payout_paise=N, daily_paise=N and approval_above_paise=N
(docs/security.md#limits). It calls no gateway;
--json prints {"token", "line", "digest"}. Give the token to the client only:
the clients file holds its digest, from which it cannot be recovered.

health asks grpc.health.v1.Health/Check about --service (empty: the gateway
as a whole) and prints the status. It sends no bearer token: health needs
none, and --token, --token_file and $PAYOUT_TOKEN are not read. It exits 0
when SERVING, 1 when the gateway answered NOT_SERVING or UNKNOWN (0 with
--liveness), and 10+N when no answer came: 24 UNAVAILABLE (nothing listens
at --target, or TLS does not match), 14 DEADLINE_EXCEEDED (no answer within
--timeout), 15 NOT_FOUND (the gateway does not know --service). Probes
should give a short --timeout, e.g. --timeout=3s.

Exit codes:
  0      success (health: SERVING)
  1      local failure (e.g. the output could not be written); health: the
         gateway answered, and not SERVING
  2      usage: unknown command, unknown or bad flag or argument, unreadable
         file
  3      batch: the stream completed but at least one payout failed
  10+N   the gateway answered with gRPC code N:
           11 CANCELLED            19 FAILED_PRECONDITION
           12 UNKNOWN              20 ABORTED
           13 INVALID_ARGUMENT     21 OUT_OF_RANGE
           14 DEADLINE_EXCEEDED    22 UNIMPLEMENTED
           15 NOT_FOUND            23 INTERNAL
           16 ALREADY_EXISTS       24 UNAVAILABLE
           17 PERMISSION_DENIED    25 DATA_LOSS
           18 RESOURCE_EXHAUSTED   26 UNAUTHENTICATED

A create that ends in DEADLINE_EXCEEDED, UNAVAILABLE or ABORTED may be retried
with the same --request_id: the gateway sends a payout at most once per id.

Examples:
  payoutctl create --account 100000011836 --ifsc SBIN0000002 --name "Dean Jon" \
      --email abc@gmail.com --mobile 9959640000 --amount 12.00 --mode IMPS
  payoutctl get --request_id 6f1c2d0e-...
  payoutctl list --state UNKNOWN --all
  payoutctl resolve --payout_id po_... --state SUCCEEDED --note "bank stmt 12/3"
  payoutctl approve --payout_id po_... --note "invoice 42 checked"
  payoutctl watch --after CURSOR --state SUCCEEDED,FAILED
  payoutctl report --from 2026-12-01 --to 2026-12-02 --csv payouts.csv
  payoutctl batch --file payouts.jsonl --json
  payoutctl token payroll-svc payouts:write max_payout_paise=5000000
  payoutctl --target localhost:50051 --tls_ca ca.crt --timeout 3s health
)";

void AppendFlagHelp(std::string& out, absl::string_view name) {
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  if (flag == nullptr) return;
  std::string head = absl::StrCat("  --", name);
  const std::string def = flag->DefaultValue();
  if (!def.empty() && !flag->IsOfType<bool>()) {
    absl::StrAppend(&head, " (default ", def, ")");
  }
  absl::StrAppend(&out, head, "\n");
  // Word-wrapped to fit an 80-column terminal.
  std::string line = "     ";
  for (absl::string_view word :
       absl::StrSplit(flag->Help(), ' ', absl::SkipEmpty())) {
    if (line.size() + 1 + word.size() > 78 && line.size() > 5) {
      absl::StrAppend(&out, line, "\n");
      line = "     ";
    }
    absl::StrAppend(&line, " ", word);
  }
  absl::StrAppend(&out, line, "\n");
}

}  // namespace

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"create",
       "send one payout (CreatePayout)",
       {"request_id", "account", "ifsc", "name", "email", "mobile", "amount",
        "amount_paise", "mode", "metadata"},
       "",
       true},
      {"get",
       "read one payout by --payout_id or --request_id",
       {"payout_id", "request_id"},
       "",
       true},
      {"list",
       "list payouts, newest first",
       {"state", "page_size", "page_token", "all"},
       "",
       true},
      {"refresh",
       "ask AOPay for a payout's state now",
       {"payout_id"},
       "",
       true},
      {"resolve",
       "record an operator's outcome for an UNKNOWN or ACCEPTED payout",
       {"payout_id", "state", "transaction_id", "note"},
       "",
       true},
      {"watch",
       "follow payouts' state changes, one line each (resume with --after)",
       {"after", "state", "count"},
       "",
       true},
      {"report",
       "reconciliation summary of the payouts created in a window: counts "
       "and sums by state and mode, UNKNOWN payouts; --csv",
       {"from", "to", "csv"},
       "",
       true},
      {"approve",
       "approve a payout AWAITING_APPROVAL and send it (scope approve, not "
       "its creator)",
       {"payout_id", "note"},
       "",
       true},
      {"reject",
       "reject a payout AWAITING_APPROVAL: CANCELLED, never sent",
       {"payout_id", "note"},
       "",
       true},
      {"cancel",
       "cancel your own payout while it is AWAITING_APPROVAL",
       {"payout_id", "note"},
       "",
       true},
      {"batch",
       "create many payouts over one stream; prints one result line each",
       {"file"},
       "",
       true},
      {"health",
       "ask the gateway's health service (no token); exit 0 when SERVING",
       {"service", "liveness"},
       "",
       true},
      {"webhook",
       "webhook verify: check a webhook's Payout-Signature against its body "
       "and the secret (no gateway); exit 0 when it verifies",
       {"secret", "signature", "body", "tolerance"},
       "verify",
       false},
      {"completion",
       "print a shell completion script: completion bash (source it, or "
       "put it in /etc/bash_completion.d/payoutctl)",
       {},
       "bash",
       false},
      {"token",
       "print a new bearer token and its clients-file line (no gateway)",
       {},
       "NAME [SCOPES] [LIMIT=VALUE ...]",
       false},
  };
  return *commands;
}

const Command* FindCommand(absl::string_view name) {
  for (const Command& command : Commands()) {
    if (command.name == name) return &command;
  }
  return nullptr;
}

bool FlagApplies(absl::string_view name, const Command& command) {
  const bool global =
      command.calls_gateway
          ? std::find(std::begin(kGlobalFlags), std::end(kGlobalFlags), name) !=
                std::end(kGlobalFlags)
          : name == "json";
  return IsAbslBuiltinFlag(name) || global ||
         std::find(command.flags.begin(), command.flags.end(), name) !=
             command.flags.end();
}

std::string BashCompletion() {
  std::vector<std::string> names;
  std::string cases;
  for (const Command& command : Commands()) {
    names.push_back(command.name);
    std::vector<std::string> flags;
    for (const std::string& flag : command.flags) flags.push_back("--" + flag);
    if (command.calls_gateway) {
      for (absl::string_view flag : kGlobalFlags) {
        flags.push_back(absl::StrCat("--", flag));
      }
    } else {
      flags.push_back("--json");
    }
    std::string words = absl::StrJoin(flags, " ");
    if (command.name == "webhook") words = absl::StrCat("verify ", words);
    if (command.name == "completion") words = "bash";
    absl::StrAppend(&cases, "    ", command.name, ") words=\"", words,
                    "\" ;;\n");
  }
  return absl::StrCat(
      "# bash completion for payoutctl: source <(payoutctl completion bash)\n"
      "_payoutctl() {\n"
      "  local cur=${COMP_WORDS[COMP_CWORD]} command=${COMP_WORDS[1]} words\n"
      "  if [[ $COMP_CWORD -eq 1 ]]; then\n"
      "    COMPREPLY=($(compgen -W \"",
      absl::StrJoin(names, " "),
      " help --help --version\" -- \"$cur\"))\n"
      "    return\n"
      "  fi\n"
      "  case $cur in\n"
      "    --state=*) COMPREPLY=($(compgen -P --state= -W \"PENDING ACCEPTED "
      "SUCCEEDED FAILED UNKNOWN REVERSED AWAITING_APPROVAL CANCELLED\" -- "
      "\"${cur#--state=}\")); return ;;\n"
      "    --mode=*) COMPREPLY=($(compgen -P --mode= -W \"IMPS NEFT\" -- "
      "\"${cur#--mode=}\")); return ;;\n"
      "  esac\n"
      "  case $command in\n",
      cases,
      "    *) words=\"\" ;;\n"
      "  esac\n"
      "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
      "}\n"
      "complete -o default -F _payoutctl payoutctl\n");
}

std::string Usage() {
  std::string out(kUsageHead);
  absl::StrAppend(&out, "\nCommands:\n");
  for (const Command& command : Commands()) {
    absl::StrAppend(
        &out, absl::StrFormat("  %-11s%s\n", command.name, command.summary));
  }
  absl::StrAppend(&out, "  help       show this text\n\nGlobal flags:\n");
  for (absl::string_view name : kGlobalFlags) AppendFlagHelp(out, name);
  for (const Command& command : Commands()) {
    if (command.flags.empty()) continue;
    absl::StrAppend(&out, "\n", command.name, " flags:\n");
    for (const std::string& name : command.flags) AppendFlagHelp(out, name);
  }
  absl::StrAppend(&out, kUsageTail);
  return out;
}

absl::StatusOr<ScannedArgs> ScanArgs(int argc, char** argv) {
  ScannedArgs scanned;
  scanned.argv.push_back(argc > 0 ? argv[0] : "payoutctl");
  std::vector<std::string> states;
  bool state_given = false;
  std::vector<std::string> rest;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") {
      rest.push_back("--");  // what follows stays positional for absl too
      for (++i; i < argc; ++i) {
        scanned.positional.push_back(argv[i]);
        rest.push_back(argv[i]);
      }
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      scanned.positional.push_back(std::string(arg));
      rest.push_back(std::string(arg));
      continue;
    }
    absl::string_view body = arg.substr(arg[1] == '-' ? 2 : 1);
    absl::string_view name = body;
    std::optional<std::string> value;
    if (const size_t eq = body.find('='); eq != absl::string_view::npos) {
      name = body.substr(0, eq);
      value = std::string(body.substr(eq + 1));
    }
    if (IsHelpFlag(name)) {
      scanned.help = true;
      continue;
    }
    if (name == "version") {
      scanned.version = true;
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      const absl::CommandLineFlag* negated =
          absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>() && !value) {
        scanned.given.insert(std::string(name.substr(2)));
        rest.push_back(std::string(arg));
        continue;
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (!value && !flag->IsOfType<bool>()) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " needs a value"));
      }
      value = argv[++i];
    }
    scanned.given.insert(std::string(name));
    if (IsAbslBuiltinFlag(name)) {
      rest.push_back(value ? absl::StrCat("--", name, "=", *value)
                           : std::string(arg));
      continue;
    }
    if (name == "state") {
      state_given = true;
      states.push_back(*value);
      continue;
    }
    // Check the value now, so a bad one is a usage error (exit 2). Parsing
    // sets the flag; absl::ParseCommandLine sets it again to the same value.
    std::string error;
    if (value && !flag->ParseFrom(*value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value for --", name, ": ", error));
    }
    rest.push_back(value ? absl::StrCat("--", name, "=", *value)
                         : std::string(arg));
  }
  if (state_given) {
    scanned.argv.push_back(
        absl::StrCat("--state=", absl::StrJoin(states, ",")));
  }
  scanned.argv.insert(scanned.argv.end(), rest.begin(), rest.end());
  return scanned;
}

}  // namespace payoutctl
}  // namespace aopay
