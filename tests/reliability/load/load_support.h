#ifndef AOPAY_TESTS_RELIABILITY_LOAD_LOAD_SUPPORT_H_
#define AOPAY_TESTS_RELIABILITY_LOAD_LOAD_SUPPORT_H_

// Shared pieces of the load tests (kill, soak, overload): the run mode, the
// gateway's resource usage from /proc, a few statistics, how a caller reads
// an answer, and a read-only view of the SQLite ledger.
//
// The mode comes from the environment: RELIABILITY_MODE=ci (default) or
// long. Individual knobs can be overridden with RELIABILITY_* variables,
// named where they are read; RELIABILITY_SEED makes the random choices
// repeatable (every test prints the seed it used).

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/payout_client.h"
#include "tests/integration/harness.h"

namespace aopay::testing::load {

enum class Mode { kCi, kLong };

// RELIABILITY_MODE: "long" gives kLong, anything else kCi.
Mode CurrentMode();
const char* ModeName(Mode mode);

// The integer in environment variable `name`, or `fallback` when it is unset
// or not a number.
int64_t EnvInt(const char* name, int64_t fallback);

// RELIABILITY_SEED, or a fresh seed; printed once as "seed: N".
uint64_t RunSeed();

// The gateway's resident set (VmRSS, KiB) and open file descriptors.
struct ProcessUsage {
  int64_t rss_kib = -1;
  int fds = -1;
};
[[nodiscard]] absl::StatusOr<ProcessUsage> ReadUsage(pid_t pid);

// Least-squares slope of y over x; 0 for fewer than two points.
double Slope(const std::vector<std::pair<double, double>>& points);

// The p-th percentile (0..100, nearest rank) of `values`; 0 when empty.
double Percentile(std::vector<double> values, double p);

// A 16-digit account number ending in `suffix` (4 digits), unique within the
// process: one account per request id, so the sandbox's journal says exactly
// how often each request reached AOPay.
std::string LoadAccount(absl::string_view suffix);

// A valid request with a fresh request id for a fresh account ending in
// `suffix`.
v1::CreatePayoutRequest LoadRequest(absl::string_view suffix,
                                    absl::BitGen& random);

// The last four digits of an account number.
std::string SuffixOf(absl::string_view account);

// What a caller makes of one CreatePayout answer.
enum class Answer {
  kAccepted,    // OK
  kFailed,      // AOPay refused it (recorded FAILED)
  kUnknown,     // DEADLINE_EXCEEDED / OUTCOME_UNKNOWN (recorded UNKNOWN)
  kNotSent,     // UNAVAILABLE / UPSTREAM_UNAVAILABLE: AOPay said 429
  kOverloaded,  // RESOURCE_EXHAUSTED / OVERLOADED
  kRetry,       // no final answer: the gateway went away, was busy with the
                // same id, was shutting down, or the call timed out
};
Answer Classify(const absl::Status& status);
const char* AnswerName(Answer answer);
// "CODE/REASON" of a status, e.g. "RESOURCE_EXHAUSTED/OVERLOADED".
std::string CodeAndReason(const absl::Status& status);

// One payout as the ledger holds it, read directly from the SQLite file.
struct LedgerRow {
  std::string payout_id;
  std::string request_id;
  std::string account_number;
  int state = 0;  // 1 PENDING .. 6 UNKNOWN, as stored
  // The first event that made it UNKNOWN; empty when it never was.
  std::string unknown_who;
  std::string unknown_why;
};
inline constexpr int kStatePending = 1;
inline constexpr int kStateAccepted = 2;
inline constexpr int kStateSucceeded = 3;
inline constexpr int kStateFailed = 4;
inline constexpr int kStateUnknown = 6;

// Every payout in the ledger at `path`, keyed by request id. Opens the file
// read-only; call it once the gateway has stopped.
[[nodiscard]] absl::StatusOr<std::map<std::string, LedgerRow>> ReadLedger(
    const std::string& path);

// Payout calls (not status calls) per account number, over the journals of
// every sandbox in `sandboxes`.
std::map<std::string, int> PayoutSends(
    const std::vector<const SandboxProcess*>& sandboxes);

// Posts the payout call `sandbox` journalled for `account` to it once more,
// as a gateway sending it twice would. Only for showing that a test's
// reconciliation catches a double send (RELIABILITY_INJECT_DOUBLE_SEND=1).
[[nodiscard]] absl::Status SendAgain(const SandboxProcess& sandbox,
                                     const std::string& account);

}  // namespace aopay::testing::load

#endif  // AOPAY_TESTS_RELIABILITY_LOAD_LOAD_SUPPORT_H_
