#ifndef AOPAY_SERVER_LEDGER_POSTGRES_SCHEMA_H_
#define AOPAY_SERVER_LEDGER_POSTGRES_SCHEMA_H_

// The PostgreSQL ledger's schema: its migrations, run under an advisory lock
// so that replicas starting together migrate once, the registration a
// database belongs to, and the advisory-lock keys. Internal to the ledger.

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/ledger/postgres/connection.h"

namespace aopay::postgres_internal {

// The schema version this code writes. A database with a newer version is
// refused.
inline constexpr int kSchemaVersion = 6;

// Advisory locks: (kLockSpace, key). kLockSpace is "AOPY".
inline constexpr int32_t kLockSpace = 0x414F5059;
inline constexpr int32_t kMigrationLock = 1;
// Held (session lock) by the one replica that runs the reconciler and
// retention pruning.
inline constexpr int32_t kDutiesLock = 2;
// Held (session lock) by the one replica with webhooks that sends them.
inline constexpr int32_t kWebhookLock = 3;

// Creates or migrates the schema, then claims the database for
// `registration`: FAILED_PRECONDITION when it holds another registration's
// payouts, when a replica of another registration heart-beat within the
// last `lease`, when it is another application's (a payouts table without
// the ledger's version table), or when its schema is newer than this
// code's. UNAVAILABLE when the database cannot be reached. `where` names
// the database in messages (the URI without its password). `join` (this
// replica's registration as live) runs under the same lock, after the
// claim.
[[nodiscard]] absl::Status MigrateAndClaim(
    Connection& db, const std::string& registration, const std::string& where,
    absl::Duration lease, const std::function<absl::Status()>& join);

}  // namespace aopay::postgres_internal

#endif  // AOPAY_SERVER_LEDGER_POSTGRES_SCHEMA_H_
