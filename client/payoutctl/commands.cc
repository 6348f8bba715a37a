#include "client/payoutctl/commands.h"

#include <openssl/rand.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/payout_client.h"
#include "client/payoutctl/flags.h"
#include "client/payoutctl/output.h"
#include "common/clients.h"
#include "common/errors.h"
#include "common/money.h"
#include "common/webhook_signature.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/health/v1/health.pb.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace aopay {
namespace payoutctl {
namespace {

namespace pbu = ::google::protobuf::util;

absl::Status UsageError(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

// --state, repeatable or comma-separated (list, watch).
absl::StatusOr<std::vector<v1::PayoutState>> StatesFlag() {
  std::vector<v1::PayoutState> states;
  for (const std::string& item : absl::GetFlag(FLAGS_state)) {
    for (absl::string_view part : absl::StrSplit(item, ',')) {
      if (absl::StripAsciiWhitespace(part).empty()) continue;
      absl::StatusOr<v1::PayoutState> state = ParseState(part);
      if (!state.ok()) return state.status();
      states.push_back(*state);
    }
  }
  return states;
}

constexpr absl::string_view kDefaultTokenScopes = "payouts:write,payouts:read";
constexpr int kTokenBytes = 32;

}  // namespace

absl::StatusOr<std::string> NewToken() {
  unsigned char bytes[kTokenBytes];
  if (RAND_bytes(bytes, kTokenBytes) != 1) {
    return absl::InternalError("the random number generator failed");
  }
  return absl::WebSafeBase64Escape(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

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
  for (const std::string& item : absl::GetFlag(FLAGS_metadata)) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return UsageError("--metadata takes KEY=VALUE");
    }
    (*request.mutable_metadata())[item.substr(0, eq)] = item.substr(eq + 1);
  }

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
  // Over the client's own limit, the same request id is refused again until
  // the limit allows it: retrying now is no help.
  const bool over_limit =
      GetErrorDetails(payout.status()).reason == reason::kClientLimitExceeded;
  if (!payout.ok() && !ctx.json && !over_limit) {
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
  absl::StatusOr<std::vector<v1::PayoutState>> states = StatesFlag();
  if (!states.ok()) return states.status();
  for (v1::PayoutState state : *states) request.add_states(state);
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

absl::StatusOr<int> RunWatch(const Context& ctx) {
  v1::WatchPayoutsRequest request;
  request.set_after_cursor(absl::GetFlag(FLAGS_after));
  absl::StatusOr<std::vector<v1::PayoutState>> states = StatesFlag();
  if (!states.ok()) return states.status();
  for (v1::PayoutState state : *states) request.add_states(state);
  const int64_t count = absl::GetFlag(FLAGS_count);
  if (count < 0) return UsageError("--count must not be negative");
  int64_t seen = 0;
  absl::Status status = ctx.client->WatchPayouts(
      request, absl::InfiniteDuration(), [&](const v1::PayoutEvent& event) {
        if (ctx.json) {
          absl::StatusOr<std::string> json = ToJson(event);
          std::cout << (json.ok() ? *json : "{}") << std::endl;
        } else {
          std::cout << event.cursor() << "  "
                    << StateName(event.previous_state()) << " -> "
                    << PayoutLine(event.payout()) << std::endl;
        }
        return count == 0 || ++seen < count;
      });
  if (status.ok()) return kExitOk;
  return Report(ctx, status, nullptr, "");
}

absl::StatusOr<int> RunDecision(const Context& ctx, absl::string_view command) {
  const std::string payout_id = absl::GetFlag(FLAGS_payout_id);
  const std::string note = absl::GetFlag(FLAGS_note);
  if (command == "approve") {
    v1::ApprovePayoutRequest request;
    request.set_payout_id(payout_id);
    request.set_note(note);
    return ReportPayout(ctx, ctx.client->ApprovePayout(request, ctx.timeout));
  }
  if (command == "reject") {
    v1::RejectPayoutRequest request;
    request.set_payout_id(payout_id);
    request.set_note(note);
    return ReportPayout(ctx, ctx.client->RejectPayout(request, ctx.timeout));
  }
  v1::CancelPayoutRequest request;
  request.set_payout_id(payout_id);
  request.set_note(note);
  return ReportPayout(ctx, ctx.client->CancelPayout(request, ctx.timeout));
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
    // Only a stream that broke is worth retrying as it is; a refused caller
    // or request gets the same refusal again.
    const absl::StatusCode failed = answers.status().code();
    const bool retryable = failed == absl::StatusCode::kUnavailable ||
                           failed == absl::StatusCode::kDeadlineExceeded ||
                           failed == absl::StatusCode::kAborted ||
                           failed == absl::StatusCode::kCancelled ||
                           failed == absl::StatusCode::kUnknown ||
                           failed == absl::StatusCode::kResourceExhausted;
    if (!ctx.json && retryable) {
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

absl::StatusOr<int> RunHealth(const Context& ctx,
                              const std::shared_ptr<grpc::Channel>& channel) {
  using ::grpc::health::v1::HealthCheckResponse;
  ::grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + ctx.timeout));
  HealthCheckResponse response;
  const grpc::Status status =
      ::grpc::health::v1::Health::NewStub(channel)->Check(&context, request,
                                                          &response);
  if (!status.ok()) return Report(ctx, FromGrpcStatus(status), nullptr, "");

  const std::string state =
      HealthCheckResponse::ServingStatus_Name(response.status());
  const std::string& service = request.service();
  if (ctx.json) {
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    writer.StartObject();
    writer.Key("service");
    writer.String(service.data(),
                  static_cast<rapidjson::SizeType>(service.size()));
    writer.Key("status");
    writer.String(state.data(), static_cast<rapidjson::SizeType>(state.size()));
    writer.EndObject();
    std::cout << absl::string_view(buffer.GetString(), buffer.GetSize())
              << std::endl;
  } else {
    std::cout << (service.empty() ? "gateway" : service) << ": " << state
              << std::endl;
  }
  if (response.status() == HealthCheckResponse::SERVING) return kExitOk;
  return absl::GetFlag(FLAGS_liveness) ? kExitOk : kExitNotServing;
}

absl::StatusOr<int> RunWebhook(const Context& ctx,
                               const std::vector<std::string>& args) {
  if (args.size() != 1 || args.front() != "verify") {
    return UsageError(
        "webhook needs 'verify': payoutctl webhook verify --secret=@FILE "
        "--signature=HEADER --body=@FILE|-");
  }
  std::string secret = absl::GetFlag(FLAGS_secret);
  const std::string signature = absl::GetFlag(FLAGS_signature);
  const std::string body_flag = absl::GetFlag(FLAGS_body);
  if (secret.empty() || signature.empty() || body_flag.empty()) {
    return UsageError("webhook verify needs --secret, --signature and --body");
  }
  if (absl::StartsWith(secret, "@")) {
    absl::StatusOr<std::string> read = ReadWholeFile(secret.substr(1));
    if (!read.ok()) return read.status();
    secret = std::string(absl::StripTrailingAsciiWhitespace(*read));
  }
  std::string body;
  if (body_flag == "-") {
    body.assign(std::istreambuf_iterator<char>(std::cin),
                std::istreambuf_iterator<char>());
  } else if (absl::StartsWith(body_flag, "@")) {
    absl::StatusOr<std::string> read = ReadWholeFile(body_flag.substr(1));
    if (!read.ok()) return read.status();
    body = *std::move(read);
  } else {
    return UsageError("--body must be @/path or - (the exact bytes received)");
  }
  const absl::Status verified = VerifyWebhook(
      secret, signature, body, absl::Now(), absl::GetFlag(FLAGS_tolerance));
  if (ctx.json) {
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    writer.StartObject();
    writer.Key("valid");
    writer.Bool(verified.ok());
    if (!verified.ok()) {
      writer.Key("reason");
      const std::string reason(verified.message());
      writer.String(reason.data(),
                    static_cast<rapidjson::SizeType>(reason.size()));
    }
    writer.EndObject();
    std::cout << buffer.GetString() << "\n";
  } else if (verified.ok()) {
    std::cout << "valid\n";
  } else {
    std::cout << "invalid: " << verified.message() << "\n";
  }
  return verified.ok() ? kExitOk : kExitLocalFailure;
}

absl::StatusOr<int> RunToken(const Context& ctx,
                             const std::vector<std::string>& args) {
  if (args.empty()) {
    return UsageError(
        "token needs NAME: payoutctl token NAME [SCOPES] "
        "[LIMIT=VALUE ...]");
  }
  // One argument, one field of the line: nothing that would split it or
  // turn the rest of the line into a comment.
  for (const std::string& arg : args) {
    if (arg.empty() || arg.find_first_of(" \t\r\n\v\f#") != std::string::npos) {
      return UsageError(absl::StrCat("token: bad argument '", arg,
                                     "' (empty, or holds a space or '#')"));
    }
  }
  // SCOPES is optional: the second argument is a limit when it has a '='.
  std::vector<std::string> rest(args.begin() + 1, args.end());
  std::string scopes(kDefaultTokenScopes);
  if (!rest.empty() && !absl::StrContains(rest.front(), '=')) {
    scopes = rest.front();
    rest.erase(rest.begin());
  }

  absl::StatusOr<std::string> token = NewToken();
  if (!token.ok()) {
    std::cerr << "payoutctl: " << token.status().message() << "\n";
    return kExitLocalFailure;
  }
  const std::string digest = TokenDigest(*token);
  std::vector<std::string> fields = {args.front(), digest, scopes};
  fields.insert(fields.end(), rest.begin(), rest.end());
  const std::string line = absl::StrJoin(fields, " ");

  // The gateway's own parser decides whether the line is good.
  absl::StatusOr<std::shared_ptr<const ClientRegistry>> parsed =
      ClientRegistry::Parse(line);
  if (!parsed.ok()) {
    return UsageError(absl::StrCat(
        "token: ", absl::StripPrefix(parsed.status().message(), "line 1: ")));
  }
  const Client* client = (*parsed)->FindByToken(*token);
  if (client == nullptr || client->name != args.front()) {
    std::cerr << "payoutctl: the line made does not admit its token\n";
    return kExitLocalFailure;
  }

  if (ctx.json) {
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    auto string = [&writer](absl::string_view s) {
      writer.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
    };
    writer.StartObject();
    string("token");
    string(*token);
    string("line");
    string(line);
    string("digest");
    string(digest);
    writer.EndObject();
    std::cout << absl::string_view(buffer.GetString(), buffer.GetSize())
              << std::endl;
  } else {
    std::cout << "token  " << *token << "\n"
              << "line   " << line << std::endl;
    std::cerr << "give the token to " << args.front()
              << " and add the line to the gateway's clients file;\n"
                 "the token is kept nowhere and cannot be recovered from the "
                 "line\n";
  }
  return std::cout ? kExitOk : kExitLocalFailure;
}

}  // namespace payoutctl
}  // namespace aopay
