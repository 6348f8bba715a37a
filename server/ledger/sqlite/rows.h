#ifndef AOPAY_SERVER_LEDGER_SQLITE_ROWS_H_
#define AOPAY_SERVER_LEDGER_SQLITE_ROWS_H_

// The SQLite ledger's rows: reading a payout row into a StoredPayout,
// finding one by payout id or by key (client, request id), the daily sum,
// and appending to a payout's events. Internal to the ledger.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/payout.h"
#include "server/ledger/ledger.h"
#include "server/ledger/shared/row_format.h"
#include "server/ledger/sqlite/handle.h"

namespace aopay::sqlite_internal {

using ledger_internal::kPayoutColumns;

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
// leaving out those in a state of kStatesOutsideDailyLimit: the running
// total in daily_spent, which the first call for a client and day seeds
// from the payouts (so call it only inside a write transaction).
absl::StatusOr<int64_t> DailySpent(Connection& db,
                                   const std::string& registration,
                                   const std::string& client,
                                   absl::Time day_start, absl::Time day_end);

// Appends one event to payout_events (which is append-only).
absl::Status AppendEvent(Connection& db, const std::string& payout_id,
                         PayoutState from, PayoutState to,
                         absl::string_view why, absl::string_view who,
                         absl::Time time);

// EventsAfter's page: ?1 registration, ?2 after (an event id), ?3 limit;
// columns as ReadWatchedEvent reads them. It walks payout_events from the
// cursor in id order and looks each payout up, so a page costs the same
// however many payouts the ledger holds.
const std::string& EventsAfterSql();
// OutboxDue's batch: ?1 registration, ?2 now (µs), ?3 limit; the watched
// event's columns, then attempts and enqueued_us. It walks the outbox (only
// undelivered events) in event order, never every payout.
const std::string& OutboxDueSql();

}  // namespace aopay::sqlite_internal

#endif  // AOPAY_SERVER_LEDGER_SQLITE_ROWS_H_
