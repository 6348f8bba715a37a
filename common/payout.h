#ifndef AOPAY_COMMON_PAYOUT_H_
#define AOPAY_COMMON_PAYOUT_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/limits.h"

namespace aopay {

// How the bank moves the money. Values match the proto enum.
enum class TransferMode { kUnspecified = 0, kNeft = 1, kImps = 2 };

// Where a payout stands (docs/api.md, States). Values match the proto enum.
enum class PayoutState {
  kUnspecified = 0,
  kPending = 1,
  kAccepted = 2,
  kSucceeded = 3,
  kFailed = 4,
  kReversed = 5,
  kUnknown = 6,
  kAwaitingApproval = 7,
  kCancelled = 8,
};
inline constexpr PayoutState kLastPayoutState = PayoutState::kCancelled;

// SUCCEEDED, FAILED or REVERSED: AOPay (or an operator) has said where the
// money ended.
bool IsOutcome(PayoutState state);

// An outcome, or CANCELLED (never sent). A final payout's key is kept for
// the retention period counted from the moment it became final. (REVERSED
// may still follow SUCCEEDED.)
bool IsFinal(PayoutState state);

// Where an approval moves a payout: AWAITING_APPROVAL to PENDING (approved,
// then sent) or CANCELLED (rejected or cancelled; never sent).
bool ApprovalMayMove(PayoutState from, PayoutState to);

// Where AOPay's status endpoint may move a payout (docs/aopay.md): ACCEPTED
// to SUCCEEDED, FAILED or REVERSED; SUCCEEDED to REVERSED; UNKNOWN to any
// outcome. Staying put is not a move.
bool StatusMayMove(PayoutState from, PayoutState to);

// Where an operator may move a payout (ResolvePayout, docs/idempotency.md):
// UNKNOWN to ACCEPTED, SUCCEEDED, FAILED or REVERSED; ACCEPTED to SUCCEEDED,
// FAILED or REVERSED.
bool OperatorMayMove(PayoutState from, PayoutState to);

// "NEFT", "IMPS" (AOPay's transactionType), or "UNSPECIFIED".
absl::string_view TransferModeName(TransferMode mode);
// "PENDING", "ACCEPTED", ... ("UNSPECIFIED" for kUnspecified).
absl::string_view PayoutStateName(PayoutState state);

// Who made a change, as the ledger keeps it with the change's event: `role`
// and the client's `name` ("approver alice"; the role alone without one),
// then ": " and the note when one was given ("approver alice: invoice 42").
std::string WhoWithNote(absl::string_view role, absl::string_view name,
                        absl::string_view note);
// The two parts of what WhoWithNote made (client names hold no ": ").
struct WhoAndNote {
  absl::string_view who;
  absl::string_view note;
};
WhoAndNote SplitWhoAndNote(absl::string_view who_with_note);

// A caller's own references on a payout, ordered by key.
using Metadata = std::map<std::string, std::string>;

struct Beneficiary {
  std::string account_number;
  std::string ifsc;
  std::string name;
  std::string email;
  std::string mobile;

  friend bool operator==(const Beneficiary& a, const Beneficiary& b) {
    return a.account_number == b.account_number && a.ifsc == b.ifsc &&
           a.name == b.name && a.email == b.email && a.mobile == b.mobile;
  }
};

// What a caller asks for. After NormalizeAndValidate() every field is in
// canonical form (trimmed, IFSC upper-cased, mobile without +91/0).
struct PayoutRequest {
  std::string request_id;
  Beneficiary beneficiary;
  int64_t amount_paise = 0;
  TransferMode mode = TransferMode::kUnspecified;
  // The caller's own references (bounds in limits.h); never sent to AOPay
  // and never logged.
  Metadata metadata;
};

// One payout as recorded.
struct Payout {
  std::string payout_id;  // "po_" + ULID
  std::string request_id;
  PayoutState state = PayoutState::kUnspecified;
  Beneficiary beneficiary;
  int64_t amount_paise = 0;
  TransferMode mode = TransferMode::kUnspecified;
  std::string transaction_id;            // AOPay's transactionID
  std::string transaction_reference_no;  // AOPay's transactionReferenceNo
  std::string upstream_status;           // e.g. "ACPT"
  std::string bank_beneficiary_name;
  // Why the payout failed: non-OK exactly when state is kFailed. Carries the
  // gRPC-facing code, message and ErrorDetails (see errors.h).
  absl::Status failure;
  absl::Time create_time = absl::UnixEpoch();
  absl::Time update_time = absl::UnixEpoch();
  // The client that created it (the clients file's name); "" when the
  // gateway runs without clients (everyone is the anonymous client).
  std::string client;
  // The creating request's metadata.
  Metadata metadata;
};

}  // namespace aopay

#endif  // AOPAY_COMMON_PAYOUT_H_
