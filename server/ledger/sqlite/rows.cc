// The SQLite ledger's rows: reading payouts, the status columns, and events
// (see rows.h).

#include "server/ledger/sqlite/rows.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/errors.h"
#include "server/ledger/shared/row_format.h"

namespace aopay::sqlite_internal {

namespace {

// Runs a prepared SELECT of kPayoutColumns expected to match at most one row.
// nullopt: no row.
absl::StatusOr<std::optional<StoredPayout>> FindOne(
    absl::StatusOr<Statement> select) {
  if (!select.ok()) return select.status();
  absl::StatusOr<bool> row = select->Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::nullopt;
  absl::StatusOr<StoredPayout> stored = ledger_internal::ReadPayoutRow(*select);
  if (!stored.ok()) return stored.status();
  return *std::move(stored);
}

absl::StatusOr<StoredPayout> SelectOne(absl::StatusOr<Statement> select,
                                       absl::string_view what) {
  absl::StatusOr<std::optional<StoredPayout>> found =
      FindOne(std::move(select));
  if (!found.ok()) return found.status();
  if (!found->has_value()) return aopay::NotFoundError(what);
  return **std::move(found);
}

}  // namespace

absl::StatusOr<StoredPayout> SelectByPayoutId(Connection& db,
                                              const std::string& registration,
                                              const std::string& payout_id) {
  static const std::string* const kSql = new std::string(
      absl::StrCat("SELECT ", kPayoutColumns,
                   " FROM payouts WHERE registration = ?1 AND payout_id = ?2"));
  absl::StatusOr<Statement> select = db.Prepare(*kSql, "reading a payout");
  if (select.ok()) {
    select->Bind(1, registration);
    select->Bind(2, payout_id);
  }
  return SelectOne(std::move(select), absl::StrCat("Payout ", payout_id));
}

absl::StatusOr<std::optional<StoredPayout>> FindByRequestId(
    Connection& db, const std::string& registration, const std::string& client,
    const std::string& request_id) {
  static const std::string* const kSql = new std::string(
      absl::StrCat("SELECT ", kPayoutColumns,
                   " FROM payouts WHERE registration = ?1 AND client = ?2 AND "
                   "request_id = ?3"));
  absl::StatusOr<Statement> select = db.Prepare(*kSql, "reading a payout");
  if (select.ok()) {
    select->Bind(1, registration);
    select->Bind(2, client);
    select->Bind(3, request_id);
  }
  return FindOne(std::move(select));
}

absl::StatusOr<StoredPayout> SelectByRequestId(Connection& db,
                                               const std::string& registration,
                                               const std::string& client,
                                               const std::string& request_id) {
  absl::StatusOr<std::optional<StoredPayout>> found =
      FindByRequestId(db, registration, client, request_id);
  if (!found.ok()) return found.status();
  if (!found->has_value()) {
    return aopay::NotFoundError(
        absl::StrCat("Payout with request_id ", request_id));
  }
  return **std::move(found);
}

absl::StatusOr<int64_t> DailySpent(Connection& db,
                                   const std::string& registration,
                                   const std::string& client,
                                   absl::Time day_start, absl::Time day_end) {
  // ?1 registration, ?2 client, ?3 day_start_us, ?4 day_end_us.
  auto bind_day = [&](Statement& statement) {
    statement.Bind(1, registration);
    statement.Bind(2, client);
    statement.Bind(3, absl::ToUnixMicros(day_start));
    statement.Bind(4, absl::ToUnixMicros(day_end));
  };
  absl::StatusOr<Statement> total = db.Prepare(
      "SELECT spent_paise FROM daily_spent WHERE registration = ?1 AND "
      "client = ?2 AND day_start_us = ?3 AND day_end_us = ?4",
      "reading what the client has spent today");
  if (!total.ok()) return total.status();
  bind_day(*total);
  absl::StatusOr<bool> found = total->Step();
  if (!found.ok()) return found.status();
  if (*found) return total->Int(0);

  // The day's first limited insert. The client's earlier days are not asked
  // about again (a day that is asked about again is summed again).
  absl::StatusOr<Statement> earlier = db.Prepare(
      "DELETE FROM daily_spent WHERE registration = ?1 AND client = ?2 AND "
      "day_end_us <= ?3",
      "dropping the client's totals of earlier days");
  if (!earlier.ok()) return earlier.status();
  earlier->Bind(1, registration);
  earlier->Bind(2, client);
  earlier->Bind(3, absl::ToUnixMicros(day_start));
  if (absl::Status dropped = earlier->Run(); !dropped.ok()) return dropped;
  // The sum, once, by the index payouts_by_client_day; the triggers of
  // schema version 8 keep it from here on.
  static const std::string* const kSeedSql = [] {
    std::vector<int> outside;
    for (PayoutState state : kStatesOutsideDailyLimit) {
      outside.push_back(static_cast<int>(state));
    }
    return new std::string(absl::StrCat(
        "INSERT INTO daily_spent (registration, client, day_start_us, "
        "day_end_us, spent_paise) SELECT ?1, ?2, ?3, ?4, "
        "COALESCE(SUM(amount_paise), 0) FROM payouts "
        "WHERE registration = ?1 AND client = ?2 AND create_time_us >= ?3 AND "
        "create_time_us < ?4 AND state NOT IN (",
        absl::StrJoin(outside, ", "), ") RETURNING spent_paise"));
  }();
  absl::StatusOr<Statement> seed =
      db.Prepare(*kSeedSql, "adding up the client's payouts of the day");
  if (!seed.ok()) return seed.status();
  bind_day(*seed);
  absl::StatusOr<bool> seeded = seed->Step();
  if (!seeded.ok()) return seeded.status();
  if (!*seeded) {
    return absl::InternalError(
        "adding up the client's payouts of the day returned no row");
  }
  return seed->Int(0);
}

absl::Status AppendEvent(Connection& db, const std::string& payout_id,
                         PayoutState from, PayoutState to,
                         absl::string_view why, absl::string_view who,
                         absl::Time time) {
  absl::StatusOr<Statement> insert = db.Prepare(
      "INSERT INTO payout_events (payout_id, from_state, to_state, why, who, "
      "time_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
      "recording a payout event");
  if (!insert.ok()) return insert.status();
  insert->Bind(1, payout_id);
  insert->Bind(2, static_cast<int>(from));
  insert->Bind(3, static_cast<int>(to));
  insert->Bind(4, why);
  insert->Bind(5, who);
  insert->Bind(6, absl::ToUnixMicros(time));
  return insert->Run();
}

// CROSS JOIN keeps the tables in the order written: SQLite's planner
// otherwise prefers to scan every payout of the registration (by an index
// on registration) and sort their events, which grows with the ledger.
const std::string& EventsAfterSql() {
  static const std::string* const kSql = new std::string(absl::StrCat(
      "SELECT ", ledger_internal::PayoutColumnsOf("p."),
      ", e.id, e.from_state, e.to_state, e.why, e.who, e.time_us "
      "FROM payout_events e CROSS JOIN payouts p "
      "ON p.payout_id = e.payout_id "
      "WHERE p.registration = ?1 AND e.id > ?2 ORDER BY e.id LIMIT ?3"));
  return *kSql;
}

const std::string& OutboxDueSql() {
  static const std::string* const kSql = new std::string(absl::StrCat(
      "SELECT ", ledger_internal::PayoutColumnsOf("p."),
      ", e.id, e.from_state, e.to_state, e.why, e.who, e.time_us, "
      "o.attempts, o.enqueued_us FROM webhook_outbox o "
      "CROSS JOIN payout_events e ON e.id = o.event_id "
      "CROSS JOIN payouts p ON p.payout_id = o.payout_id "
      "WHERE p.registration = ?1 AND o.next_attempt_us <= ?2 "
      "AND o.event_id = (SELECT MIN(event_id) FROM webhook_outbox "
      "WHERE payout_id = o.payout_id) ORDER BY o.event_id LIMIT ?3"));
  return *kSql;
}

}  // namespace aopay::sqlite_internal
