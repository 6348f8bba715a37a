#ifndef AOPAY_CLIENT_PAYOUTCTL_COMMANDS_H_
#define AOPAY_CLIENT_PAYOUTCTL_COMMANDS_H_

// payoutctl's sub-commands. Each Run* function reads its flags (flags.h),
// makes its calls through ctx.client, prints the outcome (output.h) and
// returns the exit code; a problem with the command line itself (a bad or
// missing flag value, an unreadable file) is an InvalidArgument status
// instead, whose message is fit for the user and which the caller turns
// into exit code 2. `given` names the flags set on the command line.

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/payout_client.h"
#include "client/payoutctl/output.h"
#include "grpcpp/grpcpp.h"

namespace aopay {
namespace payoutctl {

// create: one CreatePayout. Without --request_id a fresh one is made and
// printed on stderr; after an error that may be retried, says how to retry.
[[nodiscard]] absl::StatusOr<int> RunCreate(const Context& ctx,
                                            const std::set<std::string>& given);

// get: one GetPayout by exactly one of --payout_id and --request_id.
[[nodiscard]] absl::StatusOr<int> RunGet(const Context& ctx,
                                         const std::set<std::string>& given);

// list: one page of ListPayouts, or every page with --all.
[[nodiscard]] absl::StatusOr<int> RunList(const Context& ctx);

// refresh: one RefreshPayout.
[[nodiscard]] absl::StatusOr<int> RunRefresh(const Context& ctx);

// watch: follows WatchPayouts, one line an event (--json: the event as one
// JSON object a line), from --after or from now on, until --count events or
// the stream ends.
[[nodiscard]] absl::StatusOr<int> RunWatch(const Context& ctx);

// report: a reconciliation summary of the payouts created in [--from, --to)
// (dates in India, or RFC 3339): counts and sums by state and mode, the
// UNKNOWN payouts that need an operator; --csv FILE writes one row a payout
// (accounts masked), --json the summary as one object.
[[nodiscard]] absl::StatusOr<int> RunReport(const Context& ctx);

// approve, reject (PayoutAdminService) and cancel (PayoutService) of a
// payout awaiting approval: --payout_id and --note.
[[nodiscard]] absl::StatusOr<int> RunDecision(const Context& ctx,
                                              absl::string_view command);

// resolve: one ResolvePayout; --state, if given, must be given once.
[[nodiscard]] absl::StatusOr<int> RunResolve(
    const Context& ctx, const std::set<std::string>& given);

// batch: every line of --file parsed first, then one BatchCreatePayouts
// stream; one result line per request. kExitBatchPartial if any failed.
[[nodiscard]] absl::StatusOr<int> RunBatch(const Context& ctx);

// health: one grpc.health.v1.Health/Check of --service ("" for the gateway
// as a whole) over `channel`, without a bearer token; prints the status.
// kExitOk when SERVING (with --liveness: whenever the gateway answered),
// kExitNotServing when it answered anything else, kExitRpcBase plus the gRPC
// code when the call failed (24 UNAVAILABLE: nobody answers at --target).
[[nodiscard]] absl::StatusOr<int> RunHealth(
    const Context& ctx, const std::shared_ptr<grpc::Channel>& channel);

// token: `args` are NAME [SCOPES] [LIMIT=VALUE ...]. Makes a new token
// (NewToken) and prints it with the clients-file line that admits it; calls
// no gateway (ctx.client is not used). The line is checked with the clients
// file's own parser, so whatever it refuses is a usage error here.
// webhook verify: checks --signature against --body and --secret
// (common/webhook_signature.h). kExitOk and "valid" when it verifies;
// kExitLocalFailure and why when not; a usage error for missing flags or
// unreadable files.
[[nodiscard]] absl::StatusOr<int> RunWebhook(
    const Context& ctx, const std::vector<std::string>& args);

[[nodiscard]] absl::StatusOr<int> RunToken(
    const Context& ctx, const std::vector<std::string>& args);

// A new bearer token: 32 bytes from OpenSSL's RAND_bytes, base64url without
// padding (43 characters). Internal if the generator fails.
[[nodiscard]] absl::StatusOr<std::string> NewToken();

// A random RFC 4122 version 4 UUID in its 36-character text form.
std::string NewUuidV4();

// A payout state by name, with or without PAYOUT_STATE_, any case;
// UNSPECIFIED and unknown names are usage errors.
[[nodiscard]] absl::StatusOr<v1::PayoutState> ParseState(
    absl::string_view text);

// A transfer mode by name, with or without TRANSFER_MODE_, any case;
// UNSPECIFIED and unknown names are usage errors.
[[nodiscard]] absl::StatusOr<v1::TransferMode> ParseMode(
    absl::string_view text);

// The bytes of the file at `path`; a usage error if it cannot be read.
[[nodiscard]] absl::StatusOr<std::string> ReadWholeFile(
    const std::string& path);

}  // namespace payoutctl
}  // namespace aopay

#endif  // AOPAY_CLIENT_PAYOUTCTL_COMMANDS_H_
