#ifndef AOPAY_SERVER_SANDBOX_SCRIPT_H_
#define AOPAY_SERVER_SANDBOX_SCRIPT_H_

// The sandbox's script (docs/sandbox.md; the rules in full are in
// sandbox.h): which answer a request gets, and how long it waits for it.
// It validates a payout as AOPay would, picks the answer from the last four
// digits of the account number, and remembers the payouts it accepted so
// that the status endpoint can report them. It knows nothing of HTTP
// connections: the server carries its answers out.

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/sandbox/sandbox.h"

namespace aopay::sandbox {

// What the status endpoint will say about an accepted payout.
enum class Fate { kSettles, kFails, kReverses };

// What to do with a request once its delay has passed.
struct Answer {
  enum class Kind {
    kReply,   // send http_status, content_type and body (none if empty)
    kDrop,    // close the connection without a byte of an answer
    kAccept,  // accept the payout (Script::Accept) and send its success body
  };
  Kind kind = Kind::kReply;
  // kReply
  int http_status = 200;
  std::string content_type;
  std::string body;
  // Waited on top of the latency.
  absl::Duration delay = absl::ZeroDuration();
  // kAccept
  std::string beneficiary_name;
  std::string registration;
  Fate fate = Fate::kSettles;
};

// Fresh identifiers. A counter makes them unique within a sandbox; a random
// start makes a collision between two sandboxes (a restarted one, say)
// unlikely. Thread-safe.
class IdSource {
 public:
  IdSource();

  // "TERF" and 12 digits.
  std::string NextTransactionId();
  // 12 digits, no leading zero.
  std::string NextReferenceNo();

 private:
  int64_t transaction_start_ = 0;
  int64_t reference_start_ = 0;
  std::atomic<int64_t> transactions_{0};
  std::atomic<int64_t> references_{0};
};

// Thread-safe.
class Script {
 public:
  // Takes the registrations, latency, slow and settle of `options`, which
  // the caller has checked.
  explicit Script(const SandboxOptions& options);
  Script(const Script&) = delete;
  Script& operator=(const Script&) = delete;

  // Waited before every answer.
  absl::Duration latency() const { return latency_; }

  // A payout's answer. Decided on arrival: its delay depends on it.
  Answer DecidePayout(absl::string_view content_type,
                      absl::string_view body) const;
  // A status request's answer. Decide it when answering: it reports the
  // status at that time.
  Answer DecideStatus(absl::string_view content_type, absl::string_view body);
  // The answer for any other path.
  Answer DecideOther() const;

  // Records the payout of a kAccept answer, so that the status endpoint
  // knows it from now on, and returns its success body.
  std::string Accept(const Answer& answer);

 private:
  struct Transaction {
    std::string reference_no;
    std::string registration;
    absl::Time accepted;
    Fate fate = Fate::kSettles;
  };

  const absl::flat_hash_set<std::string> registrations_;
  const absl::Duration latency_;
  const absl::Duration slow_;
  const absl::Duration settle_;
  IdSource ids_;

  absl::Mutex transactions_mu_;
  absl::flat_hash_map<std::string, Transaction> transactions_
      ABSL_GUARDED_BY(transactions_mu_);
};

}  // namespace aopay::sandbox

#endif  // AOPAY_SERVER_SANDBOX_SCRIPT_H_
