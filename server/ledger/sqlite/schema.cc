// The SQLite ledger's schema: its migrations, the version check, and the
// registration a ledger belongs to (see schema.h).

#include "server/ledger/sqlite/schema.h"

#include <sqlite3.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/ledger/sqlite/sqlite_ledger.h"

namespace aopay::sqlite_internal {
namespace {

// "AOPY": marks the file as a payout ledger, so that another application's
// SQLite file is refused rather than migrated.
constexpr int32_t kApplicationId = 0x414F5059;

// Ordered; migration i (0-based) takes the schema from version i to i + 1.
// Each runs in its own transaction with the schema_version row it adds.
// Never edit a migration that has shipped: append a new one.
constexpr const char* kMigrations[] = {
    // 1: the version table, payouts and their append-only events.
    R"sql(
CREATE TABLE schema_version (
  version INTEGER NOT NULL PRIMARY KEY,
  applied_time_us INTEGER NOT NULL
);
CREATE TABLE payouts (
  payout_id TEXT NOT NULL PRIMARY KEY,
  registration TEXT NOT NULL,
  request_id TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 6),
  account_number TEXT NOT NULL,
  ifsc TEXT NOT NULL,
  name TEXT NOT NULL,
  email TEXT NOT NULL,
  mobile TEXT NOT NULL,
  amount_paise INTEGER NOT NULL,
  mode INTEGER NOT NULL,
  transaction_id TEXT NOT NULL DEFAULT '',
  transaction_reference_no TEXT NOT NULL DEFAULT '',
  upstream_status TEXT NOT NULL DEFAULT '',
  bank_beneficiary_name TEXT NOT NULL DEFAULT '',
  failure TEXT,
  response TEXT,
  payout_answer TEXT,
  status_answer TEXT,
  create_time_us INTEGER NOT NULL,
  update_time_us INTEGER NOT NULL,
  UNIQUE (registration, request_id)
);
CREATE INDEX payouts_by_registration ON payouts (registration, payout_id);
CREATE INDEX payouts_by_state ON payouts (registration, state, payout_id);
CREATE INDEX payouts_by_transaction_id ON payouts (transaction_id)
  WHERE transaction_id <> '';
CREATE TABLE payout_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  payout_id TEXT NOT NULL
    REFERENCES payouts (payout_id) ON DELETE CASCADE,
  from_state INTEGER NOT NULL,
  to_state INTEGER NOT NULL,
  why TEXT NOT NULL,
  who TEXT NOT NULL,
  time_us INTEGER NOT NULL
);
CREATE INDEX payout_events_by_payout ON payout_events (payout_id, id);
CREATE TRIGGER payout_events_append_only BEFORE UPDATE ON payout_events
BEGIN
  SELECT RAISE(ABORT, 'payout_events is append-only');
END;
CREATE TRIGGER payout_events_deleted_with_payout BEFORE DELETE ON payout_events
  WHEN EXISTS (SELECT 1 FROM payouts WHERE payout_id = OLD.payout_id)
BEGIN
  SELECT RAISE(ABORT, 'payout_events are deleted only with their payout');
END;
PRAGMA application_id = 1095716953;
)sql",
    // 2: retention counts from the moment a payout became final; rows that
    // were final before this version count from their last change (never
    // earlier than the moment they became final). The ledger records the
    // AOPay registration it belongs to.
    R"sql(
ALTER TABLE payouts ADD COLUMN final_time_us INTEGER;
UPDATE payouts SET final_time_us = update_time_us WHERE state IN (3, 4, 5);
CREATE INDEX payouts_by_final_time ON payouts (registration, final_time_us)
  WHERE final_time_us IS NOT NULL;
CREATE TABLE ledger_meta (
  key TEXT NOT NULL PRIMARY KEY,
  value TEXT NOT NULL
);
)sql",
    // 3: payouts record their client, and the idempotency key becomes
    // (registration, client, request_id); rows from before are the anonymous
    // client's (''). payouts_by_client_day serves the sum of a client's
    // payouts of one day (daily limits). The key was a table constraint, so
    // the table is rebuilt as SQLite documents it (lang_altertable.html,
    // "other kinds of table schema changes"): create the new one, copy,
    // drop, rename, recreate the indexes. Migrate() runs it with foreign keys
    // off, or dropping the old table would delete every event (ON DELETE
    // CASCADE), and checks them before the commit. The trigger on
    // payout_events that reads payouts is dropped and recreated too: the
    // rename fails while it names a missing table. The key is now a named
    // unique index, which a later change can replace without a rebuild.
    R"sql(
CREATE TABLE payouts_v3 (
  payout_id TEXT NOT NULL PRIMARY KEY,
  registration TEXT NOT NULL,
  client TEXT NOT NULL DEFAULT '',
  request_id TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 6),
  account_number TEXT NOT NULL,
  ifsc TEXT NOT NULL,
  name TEXT NOT NULL,
  email TEXT NOT NULL,
  mobile TEXT NOT NULL,
  amount_paise INTEGER NOT NULL,
  mode INTEGER NOT NULL,
  transaction_id TEXT NOT NULL DEFAULT '',
  transaction_reference_no TEXT NOT NULL DEFAULT '',
  upstream_status TEXT NOT NULL DEFAULT '',
  bank_beneficiary_name TEXT NOT NULL DEFAULT '',
  failure TEXT,
  response TEXT,
  payout_answer TEXT,
  status_answer TEXT,
  create_time_us INTEGER NOT NULL,
  update_time_us INTEGER NOT NULL,
  final_time_us INTEGER
);
INSERT INTO payouts_v3 (payout_id, registration, client, request_id,
  fingerprint, state, account_number, ifsc, name, email, mobile, amount_paise,
  mode, transaction_id, transaction_reference_no, upstream_status,
  bank_beneficiary_name, failure, response, payout_answer, status_answer,
  create_time_us, update_time_us, final_time_us)
SELECT payout_id, registration, '', request_id, fingerprint, state,
  account_number, ifsc, name, email, mobile, amount_paise, mode,
  transaction_id, transaction_reference_no, upstream_status,
  bank_beneficiary_name, failure, response, payout_answer, status_answer,
  create_time_us, update_time_us, final_time_us
FROM payouts;
DROP TRIGGER payout_events_deleted_with_payout;
DROP TABLE payouts;
ALTER TABLE payouts_v3 RENAME TO payouts;
CREATE UNIQUE INDEX payouts_by_key ON payouts (registration, client,
  request_id);
CREATE INDEX payouts_by_registration ON payouts (registration, payout_id);
CREATE INDEX payouts_by_state ON payouts (registration, state, payout_id);
CREATE INDEX payouts_by_transaction_id ON payouts (transaction_id)
  WHERE transaction_id <> '';
CREATE INDEX payouts_by_final_time ON payouts (registration, final_time_us)
  WHERE final_time_us IS NOT NULL;
CREATE INDEX payouts_by_client_day ON payouts (registration, client,
  create_time_us);
CREATE TRIGGER payout_events_deleted_with_payout BEFORE DELETE ON payout_events
  WHEN EXISTS (SELECT 1 FROM payouts WHERE payout_id = OLD.payout_id)
BEGIN
  SELECT RAISE(ABORT, 'payout_events are deleted only with their payout');
END;
)sql",
    // 4: two more states, AWAITING_APPROVAL (7) and CANCELLED (8), and the
    // callers' metadata (a JSON object, NULL for none). The state's CHECK is
    // part of the table, so the table is rebuilt as in version 3.
    R"sql(
CREATE TABLE payouts_v4 (
  payout_id TEXT NOT NULL PRIMARY KEY,
  registration TEXT NOT NULL,
  client TEXT NOT NULL DEFAULT '',
  request_id TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 8),
  account_number TEXT NOT NULL,
  ifsc TEXT NOT NULL,
  name TEXT NOT NULL,
  email TEXT NOT NULL,
  mobile TEXT NOT NULL,
  amount_paise INTEGER NOT NULL,
  mode INTEGER NOT NULL,
  transaction_id TEXT NOT NULL DEFAULT '',
  transaction_reference_no TEXT NOT NULL DEFAULT '',
  upstream_status TEXT NOT NULL DEFAULT '',
  bank_beneficiary_name TEXT NOT NULL DEFAULT '',
  failure TEXT,
  response TEXT,
  payout_answer TEXT,
  status_answer TEXT,
  create_time_us INTEGER NOT NULL,
  update_time_us INTEGER NOT NULL,
  final_time_us INTEGER,
  metadata TEXT
);
INSERT INTO payouts_v4 (payout_id, registration, client, request_id,
  fingerprint, state, account_number, ifsc, name, email, mobile, amount_paise,
  mode, transaction_id, transaction_reference_no, upstream_status,
  bank_beneficiary_name, failure, response, payout_answer, status_answer,
  create_time_us, update_time_us, final_time_us)
SELECT payout_id, registration, client, request_id, fingerprint, state,
  account_number, ifsc, name, email, mobile, amount_paise, mode,
  transaction_id, transaction_reference_no, upstream_status,
  bank_beneficiary_name, failure, response, payout_answer, status_answer,
  create_time_us, update_time_us, final_time_us
FROM payouts;
DROP TRIGGER payout_events_deleted_with_payout;
DROP TABLE payouts;
ALTER TABLE payouts_v4 RENAME TO payouts;
CREATE UNIQUE INDEX payouts_by_key ON payouts (registration, client,
  request_id);
CREATE INDEX payouts_by_registration ON payouts (registration, payout_id);
CREATE INDEX payouts_by_state ON payouts (registration, state, payout_id);
CREATE INDEX payouts_by_transaction_id ON payouts (transaction_id)
  WHERE transaction_id <> '';
CREATE INDEX payouts_by_final_time ON payouts (registration, final_time_us)
  WHERE final_time_us IS NOT NULL;
CREATE INDEX payouts_by_client_day ON payouts (registration, client,
  create_time_us);
CREATE TRIGGER payout_events_deleted_with_payout BEFORE DELETE ON payout_events
  WHEN EXISTS (SELECT 1 FROM payouts WHERE payout_id = OLD.payout_id)
BEGIN
  SELECT RAISE(ABORT, 'payout_events are deleted only with their payout');
END;
)sql",
    // 5: the webhook outbox: one row per event not yet delivered, written in
    // the event's transaction (by a TEMP trigger the writer connection
    // creates while webhooks are on) and deleted once delivered or given up.
    R"sql(
CREATE TABLE webhook_outbox (
  event_id INTEGER NOT NULL PRIMARY KEY
    REFERENCES payout_events (id) ON DELETE CASCADE,
  payout_id TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_us INTEGER NOT NULL,
  enqueued_us INTEGER NOT NULL
);
CREATE INDEX webhook_outbox_by_payout ON webhook_outbox (payout_id, event_id);
)sql",
    // 6: no query looks a payout up by AOPay's transaction id, yet every
    // outcome that carries one wrote it into this index too, at a page
    // AOPay's unordered ids put anywhere in it.
    R"sql(
DROP INDEX payouts_by_transaction_id;
)sql",
    // 7: a caller without read_all lists its own payouts only, newest
    // first, walking this index once per state (ListSql); without it SQLite
    // walked every payout of the registration to find them (seconds on a
    // ledger of a million).
    R"sql(
CREATE INDEX payouts_by_client ON payouts (registration, client, state,
  payout_id);
)sql",
    // 8: what each client has spent in a day, for daily limits, kept as a
    // running total instead of summing the day's payouts for every payout
    // (which made each payout slower as the day went on). DailySpent seeds
    // a client's row for a day from the payouts, in the transaction of the
    // day's first limited insert; from then on these triggers keep it equal
    // to the sum of that day's payouts outside FAILED (4) and CANCELLED (8),
    // whatever changes a payout (insert, outcome, resolve, forget, purge).
    // A table rebuild drops them with the table: it must create them again.
    R"sql(
CREATE TABLE daily_spent (
  registration TEXT NOT NULL,
  client TEXT NOT NULL,
  day_start_us INTEGER NOT NULL,
  day_end_us INTEGER NOT NULL,
  spent_paise INTEGER NOT NULL,
  PRIMARY KEY (registration, client, day_start_us, day_end_us)
) WITHOUT ROWID;
CREATE TRIGGER daily_spent_on_insert AFTER INSERT ON payouts
  WHEN NEW.state NOT IN (4, 8)
BEGIN
  UPDATE daily_spent SET spent_paise = spent_paise + NEW.amount_paise
  WHERE registration = NEW.registration AND client = NEW.client
    AND day_start_us <= NEW.create_time_us
    AND NEW.create_time_us < day_end_us;
END;
CREATE TRIGGER daily_spent_on_update
  AFTER UPDATE OF state, amount_paise, create_time_us, registration, client
  ON payouts
  WHEN (OLD.state IN (4, 8)) <> (NEW.state IN (4, 8))
    OR OLD.amount_paise <> NEW.amount_paise
    OR OLD.create_time_us <> NEW.create_time_us
    OR OLD.registration <> NEW.registration OR OLD.client <> NEW.client
BEGIN
  UPDATE daily_spent SET spent_paise = spent_paise - OLD.amount_paise
  WHERE OLD.state NOT IN (4, 8)
    AND registration = OLD.registration AND client = OLD.client
    AND day_start_us <= OLD.create_time_us
    AND OLD.create_time_us < day_end_us;
  UPDATE daily_spent SET spent_paise = spent_paise + NEW.amount_paise
  WHERE NEW.state NOT IN (4, 8)
    AND registration = NEW.registration AND client = NEW.client
    AND day_start_us <= NEW.create_time_us
    AND NEW.create_time_us < day_end_us;
END;
CREATE TRIGGER daily_spent_on_delete AFTER DELETE ON payouts
  WHEN OLD.state NOT IN (4, 8)
BEGIN
  UPDATE daily_spent SET spent_paise = spent_paise - OLD.amount_paise
  WHERE registration = OLD.registration AND client = OLD.client
    AND day_start_us <= OLD.create_time_us
    AND OLD.create_time_us < day_end_us;
END;
)sql",
};
constexpr int kKnownVersion =
    static_cast<int>(sizeof(kMigrations) / sizeof(kMigrations[0]));
static_assert(kKnownVersion == SqliteLedger::kSchemaVersion,
              "kSchemaVersion must match the migrations");
static_assert(kApplicationId == 1095716953, "the migration's application_id");

// The schema version, read inside the caller's transaction. 0: a new file.
absl::StatusOr<int> SchemaVersion(sqlite3* db, absl::string_view path) {
  absl::StatusOr<std::string> app =
      QueryText(db, path, "PRAGMA application_id", "reading the header");
  if (!app.ok()) return app.status();
  if (*app != "0" && *app != absl::StrCat(kApplicationId)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ledger ", path, " is another application's SQLite database"));
  }
  absl::StatusOr<std::string> tables =
      QueryText(db, path,
                "SELECT count(*) FROM sqlite_schema "
                "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                "reading the schema");
  if (!tables.ok()) return tables.status();
  absl::StatusOr<std::string> has_version =
      QueryText(db, path,
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND "
                "name = 'schema_version'",
                "reading the schema");
  if (!has_version.ok()) return has_version.status();
  if (*has_version == "0") {
    if (*tables != "0") {
      return absl::FailedPreconditionError(absl::StrCat(
          "ledger ", path,
          " holds tables but no schema_version: it is not a payout ledger"));
    }
    return 0;
  }
  absl::StatusOr<std::string> current = QueryText(
      db, path, "SELECT COALESCE(MAX(version), 0) FROM schema_version",
      "reading the schema version");
  if (!current.ok()) return current.status();
  int version = 0;
  if (!absl::SimpleAtoi(*current, &version) || version < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("ledger ", path, " has an unreadable schema version \"",
                     *current, "\""));
  }
  if (version > kKnownVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("ledger ", path, " has schema version ", version,
                     ", newer than this gateway understands (", kKnownVersion,
                     "); run a newer gateway"));
  }
  return version;
}

// Sets PRAGMA foreign_keys (outside a transaction: inside one it does
// nothing) and checks that it took.
absl::Status SetForeignKeys(sqlite3* db, absl::string_view path, bool on) {
  const char* pragma =
      on ? "PRAGMA foreign_keys = ON" : "PRAGMA foreign_keys = OFF";
  absl::StatusOr<std::string> set = QueryText(db, path, pragma, pragma);
  if (!set.ok()) return set.status();
  absl::StatusOr<std::string> now =
      QueryText(db, path, "PRAGMA foreign_keys", "checking foreign keys");
  if (!now.ok()) return now.status();
  if (*now != (on ? "1" : "0")) {
    return absl::FailedPreconditionError(
        absl::StrCat("ledger ", path, ": cannot turn foreign keys ",
                     on ? "on" : "off", " for the schema migrations"));
  }
  return absl::OkStatus();
}

// Migrate() with foreign keys off.
absl::Status MigrateAll(Connection& db, absl::string_view path) {
  for (;;) {
    if (sqlite3_exec(db.db(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) !=
        SQLITE_OK) {
      return OpenError(path, db.db(), sqlite3_extended_errcode(db.db()),
                       "cannot lock the file to check its schema");
    }
    absl::StatusOr<int> version = SchemaVersion(db.db(), path);
    absl::Status step = version.status();
    int next = 0;
    if (step.ok() && *version < kKnownVersion) {
      next = *version + 1;
      const std::string script = absl::StrCat(
          kMigrations[next - 1],
          "\nINSERT INTO schema_version (version, applied_time_us) VALUES (",
          next, ", ", absl::ToUnixMicros(absl::Now()), ");");
      if (sqlite3_exec(db.db(), script.c_str(), nullptr, nullptr, nullptr) !=
          SQLITE_OK) {
        step = OpenError(
            path, db.db(), sqlite3_extended_errcode(db.db()),
            absl::StrCat("migration to schema version ", next, " failed"));
      }
      if (step.ok()) {
        // Foreign keys are off while migrating: a migration must not leave
        // an event without its payout.
        absl::StatusOr<std::string> orphan =
            QueryText(db.db(), path, "PRAGMA foreign_key_check",
                      "checking foreign keys after the migration");
        if (!orphan.ok()) {
          step = orphan.status();
        } else if (!orphan->empty()) {
          step = absl::FailedPreconditionError(
              absl::StrCat("ledger ", path, ": migration to schema version ",
                           next, " failed: it left rows of ", *orphan,
                           " without the row they refer to"));
        }
      }
    }
    if (step.ok() && sqlite3_exec(db.db(), "COMMIT", nullptr, nullptr,
                                  nullptr) != SQLITE_OK) {
      step = OpenError(path, db.db(), sqlite3_extended_errcode(db.db()),
                       next == 0 ? std::string("cannot read the schema")
                                 : absl::StrCat("migration to schema version ",
                                                next, " failed"));
    }
    if (!step.ok()) {
      if (db.InTransaction()) {
        sqlite3_exec(db.db(), "ROLLBACK", nullptr, nullptr, nullptr);
      }
      return step;
    }
    if (next == 0) return absl::OkStatus();
  }
}

}  // namespace

absl::Status Migrate(Connection& db, absl::string_view path) {
  // SQLite's way of rebuilding a table asks for foreign keys off (each
  // migration checks them before it commits instead); Configure() turned
  // them on, and they are on again afterwards.
  if (absl::Status off = SetForeignKeys(db.db(), path, false); !off.ok()) {
    return off;
  }
  absl::Status migrated = MigrateAll(db, path);
  absl::Status on = SetForeignKeys(db.db(), path, true);
  return migrated.ok() ? on : migrated;
}

absl::Status ClaimRegistration(Connection& db, absl::string_view path,
                               const std::string& registration) {
  auto claim = [&]() -> absl::Status {
    absl::StatusOr<Statement> other =
        db.Prepare("SELECT 1 FROM payouts WHERE registration <> ?1 LIMIT 1",
                   "checking the registration");
    if (!other.ok()) return other.status();
    other->Bind(1, registration);
    absl::StatusOr<bool> found = other->Step();
    if (!found.ok()) return found.status();
    if (*found) {
      return absl::FailedPreconditionError(absl::StrCat(
          "ledger ", path,
          " holds payouts of another AOPay registration; a ledger belongs to "
          "one registration, so check --registration_id (old request ids "
          "would otherwise look new and be sent again)"));
    }
    absl::StatusOr<Statement> record = db.Prepare(
        "INSERT INTO ledger_meta (key, value) VALUES ('registration', ?1) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        "recording the registration");
    if (!record.ok()) return record.status();
    record->Bind(1, registration);
    return record->Run();
  };
  absl::Status status = db.Run("BEGIN IMMEDIATE", "checking the registration");
  if (!status.ok()) return status;
  status = claim();
  if (!status.ok()) {
    (void)db.Run("ROLLBACK", "checking the registration");
    return status;
  }
  return db.Run("COMMIT", "recording the registration");
}

}  // namespace aopay::sqlite_internal
