#ifndef AOPAY_CLIENT_PAYOUTCTL_OUTPUT_H_
#define AOPAY_CLIENT_PAYOUTCTL_OUTPUT_H_

// What payoutctl prints and the exit code it ends with. Human output goes to
// stdout, errors to stderr; with --json both the answer and an RPC error are
// one JSON object a line on stdout. Human output masks account numbers,
// mobiles and e-mails; JSON output is the full message.

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/payout_client.h"
#include "google/protobuf/message.h"

namespace aopay {
namespace payoutctl {

// Exit codes, as --help lists them.
constexpr int kExitOk = 0;
constexpr int kExitLocalFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitBatchPartial = 3;
constexpr int kExitNotServing = 1;  // health: answered, but not SERVING
constexpr int kExitRpcBase = 10;    // plus the gRPC code

// The state shared by every sub-command.
struct Context {
  bool json = false;
  absl::Duration timeout;
  std::unique_ptr<PayoutClient> client;
};

// `status` as one JSON object: code, message, and reason, metadata,
// fieldViolations and retryDelay where the gateway sent them.
std::string ErrorJson(const absl::Status& status);

// Human form of an error, one fact a line, each prefixed by `indent`.
std::string ErrorText(const absl::Status& status, absl::string_view indent);

// "ACCEPTED", "IMPS": the enum value's name without its prefix.
std::string StateName(v1::PayoutState state);
std::string ModeName(v1::TransferMode mode);

// One line naming a payout's id, state, amount, mode, masked account and
// transaction id; no trailing newline.
std::string PayoutLine(const v1::Payout& payout);

// PayoutLine() and then one indented line per non-empty detail, masked.
std::string PayoutText(const v1::Payout& payout);

// `message` in proto3 JSON form; Internal if it cannot be printed.
[[nodiscard]] absl::StatusOr<std::string> ToJson(
    const google::protobuf::Message& message);

// kExitOk for OK, else kExitRpcBase plus the gRPC code.
int ExitCodeFor(const absl::Status& status);

// Prints `message` (a Payout or a list; `human` is its human form) or
// `status`; returns the exit code. `message` may be null when `status` is an
// error.
int Report(const Context& ctx, const absl::Status& status,
           const google::protobuf::Message* message, const std::string& human);

// Report() for the answer of an RPC that returns one Payout.
int ReportPayout(const Context& ctx, const absl::StatusOr<v1::Payout>& payout);

// Prints a usage error and the pointer to --help on stderr; returns
// kExitUsage.
int UsageFailure(absl::string_view message);

}  // namespace payoutctl
}  // namespace aopay

#endif  // AOPAY_CLIENT_PAYOUTCTL_OUTPUT_H_
