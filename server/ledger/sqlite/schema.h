#ifndef AOPAY_SERVER_LEDGER_SQLITE_SCHEMA_H_
#define AOPAY_SERVER_LEDGER_SQLITE_SCHEMA_H_

// The SQLite ledger's schema: the migrations that build it, the version and
// application id that mark a file as a payout ledger, and the registration a
// ledger belongs to. Internal to the ledger.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/ledger/sqlite/handle.h"

namespace aopay::sqlite_internal {

// Applies the missing migrations, each in a transaction of its own that also
// reads the version, so that two processes opening a new file at once do not
// both migrate it. They run with foreign keys off (a migration may rebuild a
// table), each checked before its commit; Migrate turns them on again.
// FAILED_PRECONDITION for a file that is not a ledger (another
// application's, one with a newer schema).
absl::Status Migrate(Connection& db, absl::string_view path);

// A ledger belongs to one AOPay registration (docs/operations.md, "The
// ledger"). Refuses a ledger holding payouts of another one; otherwise
// records `registration` as the ledger's. Names neither id: both are secrets.
absl::Status ClaimRegistration(Connection& db, absl::string_view path,
                               const std::string& registration);

}  // namespace aopay::sqlite_internal

#endif  // AOPAY_SERVER_LEDGER_SQLITE_SCHEMA_H_
