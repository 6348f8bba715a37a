// payoutctl: the command-line client of the payout gateway. Every RPC, human
// or --json output, exit codes derived from gRPC codes (see kUsageTail).

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client/payout_client.h"
#include "common/errors.h"
#include "common/money.h"
#include "common/redact.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

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
          "Why, and on what evidence (required, kept for audit).");

// batch.
ABSL_FLAG(std::string, file, "",
          "File of CreatePayoutRequest JSON objects, one a line; '-' reads "
          "stdin.");

namespace aopay {
namespace {

namespace pbu = ::google::protobuf::util;

constexpr int kExitOk = 0;
constexpr int kExitLocalFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitBatchPartial = 3;
constexpr int kExitRpcBase = 10;

constexpr absl::string_view kDefaultTarget = "127.0.0.1:50051";

constexpr absl::string_view kGlobalFlags[] = {
    "target",     "json",   "timeout",  "token",
    "token_file", "tls_ca", "tls_cert", "tls_key"};

// Sub-commands in usage order, with their own flags.
struct Command {
  std::string name;
  std::string summary;
  std::vector<std::string> flags;
};

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"create",
       "send one payout (CreatePayout)",
       {"request_id", "account", "ifsc", "name", "email", "mobile", "amount",
        "amount_paise", "mode"}},
      {"get",
       "read one payout by --payout_id or --request_id",
       {"payout_id", "request_id"}},
      {"list",
       "list payouts, newest first",
       {"state", "page_size", "page_token", "all"}},
      {"refresh", "ask AOPay for a payout's state now", {"payout_id"}},
      {"resolve",
       "record an operator's outcome for an UNKNOWN or ACCEPTED payout",
       {"payout_id", "state", "transaction_id", "note"}},
      {"batch",
       "create many payouts over one stream; prints one result line each",
       {"file"}},
  };
  return *commands;
}

const Command* FindCommand(absl::string_view name) {
  for (const Command& command : Commands()) {
    if (command.name == name) return &command;
  }
  return nullptr;
}

// Flags that absl itself defines and handles.
bool IsAbslBuiltinFlag(absl::string_view name) {
  return name == "flagfile" || name == "fromenv" || name == "tryfromenv" ||
         name == "undefok" || name == "version";
}

bool FlagApplies(absl::string_view name, const Command& command) {
  return IsAbslBuiltinFlag(name) ||
         std::find(std::begin(kGlobalFlags), std::end(kGlobalFlags), name) !=
             std::end(kGlobalFlags) ||
         std::find(command.flags.begin(), command.flags.end(), name) !=
             command.flags.end();
}

bool IsHelpFlag(absl::string_view name) {
  return name == "help" || name == "helpfull" || name == "helpshort" ||
         name == "helppackage" || name == "h" || name == "?";
}

constexpr absl::string_view kUsageHead =
    R"(payoutctl: command-line client of the AOPay payout gateway.

Usage: payoutctl <command> [flags]
       payoutctl help

The gateway is --target, else $PAYOUT_TARGET, else 127.0.0.1:50051.
Human output masks account numbers, mobiles and e-mails; --json prints the
full response. Errors show the gRPC code, the message, the reason, every field
violation and the retry delay.
)";

constexpr absl::string_view kUsageTail =
    R"(
Exit codes:
  0      success
  1      local failure (e.g. the output could not be written)
  2      usage: unknown command, unknown or bad flag, unreadable file
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
  payoutctl batch --file payouts.jsonl --json
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

std::string Usage() {
  std::string out(kUsageHead);
  absl::StrAppend(&out, "\nCommands:\n");
  for (const Command& command : Commands()) {
    absl::StrAppend(
        &out, absl::StrFormat("  %-9s%s\n", command.name, command.summary));
  }
  absl::StrAppend(&out, "  help     show this text\n\nGlobal flags:\n");
  for (absl::string_view name : kGlobalFlags) AppendFlagHelp(out, name);
  for (const Command& command : Commands()) {
    absl::StrAppend(&out, "\n", command.name, " flags:\n");
    for (const std::string& name : command.flags) AppendFlagHelp(out, name);
  }
  absl::StrAppend(&out, kUsageTail);
  return out;
}

// ---------------------------------------------------------------------------
// Command line.

// What a first pass over argv found. It exists because absl flags cannot
// repeat a flag (--state A --state B), cannot tell "given" from "default",
// and exit with status 1 on a bad flag where payoutctl promises 2.
struct ScannedArgs {
  std::vector<std::string> argv;  // for absl::ParseCommandLine
  std::set<std::string> given;    // flags named on the command line
  std::vector<std::string> positional;
  bool help = false;
};

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

// ---------------------------------------------------------------------------
// Output.

absl::Status UsageError(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

std::string ProtoDurationText(absl::Duration d) {
  google::protobuf::Duration proto;
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  proto.set_seconds(seconds);
  proto.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
  return pbu::TimeUtil::ToString(proto);
}

std::string ErrorJson(const absl::Status& status) {
  const ErrorDetails details = GetErrorDetails(status);
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  auto string = [&writer](absl::string_view s) {
    writer.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  };
  writer.StartObject();
  string("code");
  string(absl::StatusCodeToString(status.code()));
  string("message");
  string(status.message());
  if (!details.reason.empty()) {
    string("reason");
    string(details.reason);
  }
  if (!details.metadata.empty()) {
    string("metadata");
    writer.StartObject();
    for (const auto& [key, value] : details.metadata) {
      string(key);
      string(value);
    }
    writer.EndObject();
  }
  if (!details.violations.empty()) {
    string("fieldViolations");
    writer.StartArray();
    for (const FieldViolation& v : details.violations) {
      writer.StartObject();
      string("field");
      string(v.field);
      string("description");
      string(v.description);
      writer.EndObject();
    }
    writer.EndArray();
  }
  if (details.retry_delay) {
    string("retryDelay");
    string(ProtoDurationText(*details.retry_delay));
  }
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

// Human form of an error, one fact a line, each prefixed by `indent`.
std::string ErrorText(const absl::Status& status, absl::string_view indent) {
  const ErrorDetails details = GetErrorDetails(status);
  std::string out =
      absl::StrCat(indent, "error: ", absl::StatusCodeToString(status.code()),
                   ": ", status.message(), "\n");
  if (!details.reason.empty()) {
    absl::StrAppend(&out, indent, "  reason: ", details.reason, "\n");
  }
  for (const auto& [key, value] : details.metadata) {
    absl::StrAppend(&out, indent, "  ", key, ": ", value, "\n");
  }
  for (const FieldViolation& v : details.violations) {
    absl::StrAppend(&out, indent, "  field ", v.field, ": ", v.description,
                    "\n");
  }
  if (details.retry_delay) {
    absl::StrAppend(&out, indent, "  retry after: ",
                    absl::FormatDuration(*details.retry_delay), "\n");
  }
  return out;
}

std::string StateName(v1::PayoutState state) {
  return std::string(
      absl::StripPrefix(v1::PayoutState_Name(state), "PAYOUT_STATE_"));
}

std::string ModeName(v1::TransferMode mode) {
  return std::string(
      absl::StripPrefix(v1::TransferMode_Name(mode), "TRANSFER_MODE_"));
}

std::string PayoutLine(const v1::Payout& payout) {
  std::string line = absl::StrCat(
      "payout ", payout.payout_id(), " ", StateName(payout.state()), "  \u20b9",
      FormatRupees(payout.amount_paise()), " ", ModeName(payout.mode()),
      "  account ", MaskAccount(payout.beneficiary().account_number()));
  if (!payout.transaction_id().empty()) {
    absl::StrAppend(&line, "  txn ", payout.transaction_id());
  }
  return line;
}

std::string TimestampText(const google::protobuf::Timestamp& ts) {
  return pbu::TimeUtil::ToString(ts);
}

std::string PayoutText(const v1::Payout& payout) {
  std::string out = absl::StrCat(PayoutLine(payout), "\n");
  auto field = [&out](absl::string_view label, absl::string_view value) {
    if (!value.empty()) {
      absl::StrAppend(&out, absl::StrFormat("  %-16s%s\n", label, value));
    }
  };
  const v1::Beneficiary& b = payout.beneficiary();
  field("request id", payout.request_id());
  field("name", b.name());
  field("ifsc", b.ifsc());
  if (!b.mobile().empty()) field("mobile", MaskMobile(b.mobile()));
  if (!b.email().empty()) field("e-mail", MaskEmail(b.email()));
  field("bank reference", payout.transaction_reference_no());
  field("AOPay status", payout.upstream_status());
  field("name at bank", payout.bank_beneficiary_name());
  if (payout.has_create_time()) {
    field("created", TimestampText(payout.create_time()));
  }
  if (payout.has_update_time()) {
    field("updated", TimestampText(payout.update_time()));
  }
  if (payout.has_failure() && payout.failure().code() != 0) {
    absl::StrAppend(&out, "  failure:\n",
                    ErrorText(FromRpcStatusProto(payout.failure()), "    "));
  }
  return out;
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  std::string json;
  pbu::JsonPrintOptions options;
  const auto status = pbu::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot print the answer as JSON: ", status.ToString()));
  }
  return json;
}

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  return kExitRpcBase + static_cast<int>(status.code());
}

// The state shared by every sub-command.
struct Context {
  bool json = false;
  absl::Duration timeout;
  std::unique_ptr<PayoutClient> client;
};

// Prints `message` (a Payout or a list) or `status`; returns the exit code.
int Report(const Context& ctx, const absl::Status& status,
           const google::protobuf::Message* message, const std::string& human) {
  if (!status.ok()) {
    if (ctx.json) {
      std::cout << ErrorJson(status) << std::endl;
    } else {
      std::cerr << ErrorText(status, "");
    }
    return ExitCodeFor(status);
  }
  if (ctx.json) {
    absl::StatusOr<std::string> json = ToJson(*message);
    if (!json.ok()) {
      std::cerr << "payoutctl: " << json.status().message() << "\n";
      return kExitLocalFailure;
    }
    std::cout << *json << std::endl;
  } else {
    std::cout << human;
  }
  std::cout.flush();
  return std::cout ? kExitOk : kExitLocalFailure;
}

int ReportPayout(const Context& ctx, const absl::StatusOr<v1::Payout>& payout) {
  if (!payout.ok()) return Report(ctx, payout.status(), nullptr, "");
  return Report(ctx, absl::OkStatus(), &*payout, PayoutText(*payout));
}

// ---------------------------------------------------------------------------
// Parsing of flag values.

std::string NewUuidV4() {
  absl::BitGen gen;
  uint8_t bytes[16];
  for (uint8_t& b : bytes) b = absl::Uniform<uint8_t>(gen);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;  // version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80;  // RFC 4122 variant
  std::string out;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    absl::StrAppend(&out, absl::Hex(bytes[i], absl::kZeroPad2));
  }
  return out;
}

absl::StatusOr<v1::PayoutState> ParseState(absl::string_view text) {
  std::string upper = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(text));
  if (!absl::StartsWith(upper, "PAYOUT_STATE_")) {
    upper = absl::StrCat("PAYOUT_STATE_", upper);
  }
  v1::PayoutState state;
  if (!v1::PayoutState_Parse(upper, &state) ||
      state == v1::PAYOUT_STATE_UNSPECIFIED) {
    return UsageError(absl::StrCat(
        "unknown payout state '", text,
        "' (PENDING, ACCEPTED, SUCCEEDED, FAILED, REVERSED, UNKNOWN)"));
  }
  return state;
}

absl::StatusOr<v1::TransferMode> ParseMode(absl::string_view text) {
  std::string upper = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(text));
  if (!absl::StartsWith(upper, "TRANSFER_MODE_")) {
    upper = absl::StrCat("TRANSFER_MODE_", upper);
  }
  v1::TransferMode mode;
  if (!v1::TransferMode_Parse(upper, &mode) ||
      mode == v1::TRANSFER_MODE_UNSPECIFIED) {
    return UsageError(
        absl::StrCat("unknown transfer mode '", text, "' (NEFT or IMPS)"));
  }
  return mode;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) {
    return UsageError(absl::StrCat("cannot open '", path, "'"));
  }
  std::string contents((std::istreambuf_iterator<char>(in)),
                       std::istreambuf_iterator<char>());
  if (in.bad()) return UsageError(absl::StrCat("cannot read '", path, "'"));
  return contents;
}

// ---------------------------------------------------------------------------
// Sub-commands. Each returns the exit code, or a usage error.

absl::StatusOr<int> RunCreate(const Context& ctx,
                              const std::set<std::string>& given) {
  v1::CreatePayoutRequest request;
  v1::Beneficiary& b = *request.mutable_beneficiary();
  b.set_account_number(absl::GetFlag(FLAGS_account));
  b.set_ifsc(absl::GetFlag(FLAGS_ifsc));
  b.set_name(absl::GetFlag(FLAGS_name));
  b.set_email(absl::GetFlag(FLAGS_email));
  b.set_mobile(absl::GetFlag(FLAGS_mobile));

  const std::optional<int64_t> paise = absl::GetFlag(FLAGS_amount_paise);
  const bool has_rupees = given.count("amount") > 0;
  if (has_rupees && paise.has_value()) {
    return UsageError("give --amount or --amount_paise, not both");
  }
  if (has_rupees) {
    absl::StatusOr<int64_t> parsed = ParseRupees(absl::GetFlag(FLAGS_amount));
    if (!parsed.ok()) {
      return UsageError(
          absl::StrCat("bad --amount: ", parsed.status().message()));
    }
    request.set_amount_paise(*parsed);
  } else if (paise.has_value()) {
    request.set_amount_paise(*paise);
  }
  // No amount at all goes out as 0: the gateway's answer then lists every
  // missing field at once, which is more useful than failing on the first.

  absl::StatusOr<v1::TransferMode> mode = ParseMode(absl::GetFlag(FLAGS_mode));
  if (!mode.ok()) return mode.status();
  request.set_mode(*mode);

  std::string request_id = absl::GetFlag(FLAGS_request_id);
  if (!given.count("request_id")) {
    request_id = NewUuidV4();
    std::cerr << "request id " << request_id
              << " (generated; reuse it with --request_id to retry safely)\n";
  }
  request.set_request_id(request_id);

  absl::StatusOr<v1::Payout> payout =
      ctx.client->CreatePayout(request, ctx.timeout);
  const int code = ReportPayout(ctx, payout);
  if (!payout.ok() && !ctx.json) {
    switch (payout.status().code()) {
      case absl::StatusCode::kDeadlineExceeded:
      case absl::StatusCode::kUnavailable:
      case absl::StatusCode::kAborted:
      case absl::StatusCode::kResourceExhausted:
      case absl::StatusCode::kCancelled:
      case absl::StatusCode::kUnknown:
        std::cerr << "retry with --request_id " << request_id
                  << ": the gateway sends a payout at most once per request "
                     "id\n";
        break;
      default:
        break;
    }
  }
  return code;
}

absl::StatusOr<int> RunGet(const Context& ctx,
                           const std::set<std::string>& given) {
  const bool by_payout = given.count("payout_id") > 0;
  const bool by_request = given.count("request_id") > 0;
  if (by_payout == by_request) {
    return UsageError("get needs exactly one of --payout_id or --request_id");
  }
  v1::GetPayoutRequest request;
  if (by_payout) {
    request.set_payout_id(absl::GetFlag(FLAGS_payout_id));
  } else {
    request.set_request_id(absl::GetFlag(FLAGS_request_id));
  }
  return ReportPayout(ctx, ctx.client->GetPayout(request, ctx.timeout));
}

absl::StatusOr<int> RunList(const Context& ctx) {
  v1::ListPayoutsRequest request;
  for (const std::string& item : absl::GetFlag(FLAGS_state)) {
    for (absl::string_view part : absl::StrSplit(item, ',')) {
      if (absl::StripAsciiWhitespace(part).empty()) continue;
      absl::StatusOr<v1::PayoutState> state = ParseState(part);
      if (!state.ok()) return state.status();
      request.add_states(*state);
    }
  }
  request.set_page_size(absl::GetFlag(FLAGS_page_size));
  request.set_page_token(absl::GetFlag(FLAGS_page_token));
  const bool all = absl::GetFlag(FLAGS_all);

  v1::ListPayoutsResponse merged;
  std::set<std::string> seen_tokens;
  while (true) {
    absl::StatusOr<v1::ListPayoutsResponse> page =
        ctx.client->ListPayouts(request, ctx.timeout);
    if (!page.ok()) return Report(ctx, page.status(), nullptr, "");
    for (v1::Payout& payout : *page->mutable_payouts()) {
      *merged.add_payouts() = std::move(payout);
    }
    merged.set_next_page_token(page->next_page_token());
    if (!all || page->next_page_token().empty()) break;
    if (!seen_tokens.insert(page->next_page_token()).second) {
      std::cerr << "payoutctl: the gateway returned the same page token "
                   "twice; stopping\n";
      return kExitLocalFailure;
    }
    request.set_page_token(page->next_page_token());
  }

  std::string human;
  for (const v1::Payout& payout : merged.payouts()) {
    absl::StrAppend(&human, PayoutLine(payout), "\n");
  }
  if (merged.payouts().empty()) human = "no payouts\n";
  if (!merged.next_page_token().empty()) {
    absl::StrAppend(&human, "more: --page_token=", merged.next_page_token(),
                    "\n");
  }
  return Report(ctx, absl::OkStatus(), &merged, human);
}

absl::StatusOr<int> RunRefresh(const Context& ctx) {
  v1::RefreshPayoutRequest request;
  request.set_payout_id(absl::GetFlag(FLAGS_payout_id));
  return ReportPayout(ctx, ctx.client->RefreshPayout(request, ctx.timeout));
}

absl::StatusOr<int> RunResolve(const Context& ctx,
                               const std::set<std::string>& given) {
  v1::ResolvePayoutRequest request;
  request.set_payout_id(absl::GetFlag(FLAGS_payout_id));
  if (given.count("state")) {
    const std::vector<std::string> states = absl::GetFlag(FLAGS_state);
    if (states.size() != 1) {
      return UsageError("resolve takes exactly one --state");
    }
    absl::StatusOr<v1::PayoutState> state = ParseState(states.front());
    if (!state.ok()) return state.status();
    request.set_state(*state);
  }
  request.set_transaction_id(absl::GetFlag(FLAGS_transaction_id));
  request.set_note(absl::GetFlag(FLAGS_note));
  return ReportPayout(ctx, ctx.client->ResolvePayout(request, ctx.timeout));
}

absl::StatusOr<int> RunBatch(const Context& ctx) {
  const std::string path = absl::GetFlag(FLAGS_file);
  if (path.empty()) return UsageError("batch needs --file (or --file - )");
  std::string contents;
  if (path == "-") {
    contents.assign(std::istreambuf_iterator<char>(std::cin),
                    std::istreambuf_iterator<char>());
  } else {
    absl::StatusOr<std::string> read = ReadWholeFile(path);
    if (!read.ok()) return read.status();
    contents = *std::move(read);
  }

  // Every line is parsed before anything is sent: a typo on line 900 must
  // not leave 899 payouts sent and the rest not.
  std::vector<v1::CreatePayoutRequest> requests;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(contents, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    v1::CreatePayoutRequest request;
    const auto status = pbu::JsonStringToMessage(
        google::protobuf::StringPiece(line.data(), line.size()), &request);
    if (!status.ok()) {
      return UsageError(absl::StrCat(
          "line ", line_number,
          " is not a CreatePayoutRequest: ", status.message().as_string()));
    }
    requests.push_back(std::move(request));
  }
  if (requests.empty()) {
    std::cerr << "payoutctl: no requests in the batch\n";
    return kExitOk;
  }

  absl::StatusOr<std::vector<v1::BatchCreatePayoutsResponse>> answers =
      ctx.client->BatchCreatePayouts(requests, ctx.timeout);
  if (!answers.ok()) {
    const int code = Report(ctx, answers.status(), nullptr, "");
    if (!ctx.json) {
      std::cerr << "the batch may be retried as it is: the gateway sends a "
                   "payout at most once per request id\n";
    }
    return code;
  }

  std::multiset<std::string> unanswered;
  for (const auto& request : requests) unanswered.insert(request.request_id());
  int ok = 0;
  int failed = 0;
  for (const v1::BatchCreatePayoutsResponse& answer : *answers) {
    if (auto it = unanswered.find(answer.request_id());
        it != unanswered.end()) {
      unanswered.erase(it);
    }
    const bool is_ok = answer.has_payout();
    is_ok ? ++ok : ++failed;
    if (ctx.json) {
      absl::StatusOr<std::string> json = ToJson(answer);
      if (!json.ok()) {
        std::cerr << "payoutctl: " << json.status().message() << "\n";
        return kExitLocalFailure;
      }
      std::cout << *json << "\n";
    } else if (is_ok) {
      std::cout << "request " << answer.request_id() << ": "
                << PayoutLine(answer.payout()) << "\n";
    } else {
      absl::Status error = FromRpcStatusProto(answer.error());
      if (error.ok()) {
        error = absl::UnknownError("the gateway sent neither payout nor error");
      }
      std::cout << "request " << answer.request_id() << ":\n"
                << ErrorText(error, "  ");
    }
  }
  for (const std::string& request_id : unanswered) {
    ++failed;
    if (ctx.json) {
      std::cout << ErrorJson(absl::UnknownError(
                       absl::StrCat("no answer for request ", request_id)))
                << "\n";
    } else {
      std::cout << "request " << request_id << ": no answer\n";
    }
  }
  std::cout.flush();
  if (!ctx.json) {
    std::cerr << requests.size()
              << (requests.size() == 1 ? " request: " : " requests: ") << ok
              << " ok, " << failed << " failed\n";
  }
  if (!std::cout) return kExitLocalFailure;
  return failed == 0 ? kExitOk : kExitBatchPartial;
}

int UsageFailure(absl::string_view message) {
  std::cerr << "payoutctl: " << message
            << "\nRun 'payoutctl --help' for usage.\n";
  return kExitUsage;
}

int Main(int argc, char** argv) {
  absl::StatusOr<ScannedArgs> scanned = ScanArgs(argc, argv);
  if (!scanned.ok()) return UsageFailure(scanned.status().message());
  const bool help_command =
      !scanned->positional.empty() && scanned->positional.front() == "help";
  if (scanned->help || help_command) {
    std::cout << Usage();
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
  if (scanned->positional.size() > 1) {
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
  } else {
    result = RunBatch(ctx);
  }
  if (!result.ok()) return UsageFailure(result.status().message());
  return *result;
}

}  // namespace
}  // namespace aopay

int main(int argc, char** argv) { return aopay::Main(argc, argv); }
