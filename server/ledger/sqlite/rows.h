#ifndef AOPAY_SERVER_LEDGER_SQLITE_ROWS_H_
#define AOPAY_SERVER_LEDGER_SQLITE_ROWS_H_

// The SQLite ledger's rows: reading a payout row into a StoredPayout,
// finding one by payout id or by key (client, request id), the form of the
// status columns, and appending to a payout's events. Internal to the ledger.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/payout.h"
#include "server/ledger/ledger.h"
#include "server/ledger/sqlite/handle.h"

namespace aopay::sqlite_internal {

// The columns ReadPayout reads, in its order.
inline constexpr char kPayoutColumns[] =
    "payout_id, request_id, fingerprint, state, account_number, ifsc, name, "
    "email, mobile, amount_paise, mode, transaction_id, "
    "transaction_reference_no, upstream_status, bank_beneficiary_name, "
    "failure, response, create_time_us, update_time_us, client";

// Whether a stored integer is a PayoutState / TransferMode this code knows.
bool IsKnownState(int64_t value);
bool IsKnownMode(int64_t value);

// DATA_LOSS: the row of `payout_id` has `what` (e.g. "an unknown state").
absl::Status RowError(absl::string_view payout_id, absl::string_view what);

// What a status column (failure, response) holds: NULL for OK, otherwise
// SerializeError's form.
std::optional<std::string> StatusColumn(const absl::Status& status);

// Reads a row selected with kPayoutColumns.
absl::StatusOr<StoredPayout> ReadPayout(const Statement& row);

// The registration's payout `payout_id`; NOT_FOUND when there is none.
absl::StatusOr<StoredPayout> SelectByPayoutId(Connection& db,
                                              const std::string& registration,
                                              const std::string& payout_id);

// The row holding the key (registration, client, request_id), if any.
// Insert asks this of every new payout, so a miss is not an error (that
// would build a NOT_FOUND message each time).
absl::StatusOr<std::optional<StoredPayout>> FindByRequestId(
    Connection& db, const std::string& registration, const std::string& client,
    const std::string& request_id);

// The row holding the key; NOT_FOUND when there is none (also when only
// another client has the request id: the message does not say so).
absl::StatusOr<StoredPayout> SelectByRequestId(Connection& db,
                                               const std::string& registration,
                                               const std::string& client,
                                               const std::string& request_id);

// What the client's payouts created in [day_start, day_end) add up to,
// leaving out those in a state of kStatesOutsideDailyLimit.
absl::StatusOr<int64_t> DailySpent(Connection& db,
                                   const std::string& registration,
                                   const std::string& client,
                                   absl::Time day_start, absl::Time day_end);

// Appends one event to payout_events (which is append-only).
absl::Status AppendEvent(Connection& db, const std::string& payout_id,
                         PayoutState from, PayoutState to,
                         absl::string_view why, absl::string_view who,
                         absl::Time time);

}  // namespace aopay::sqlite_internal

#endif  // AOPAY_SERVER_LEDGER_SQLITE_ROWS_H_
