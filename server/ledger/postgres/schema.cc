// The PostgreSQL ledger's schema (see schema.h).

#include "server/ledger/postgres/schema.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/payout.h"

namespace aopay::postgres_internal {
namespace {

// Ordered; migration i (0-based) takes the schema from version i to i + 1.
// Each runs in its own transaction with the ledger_schema row it adds.
// Never edit a migration that has shipped: append a new one. The columns of
// payouts are those of the SQLite ledger (server/ledger/shared/row_format.h
// reads both), plus the owner replica of a PENDING payout.
constexpr const char* kMigrations[] = {
    // 1: payouts, their append-only events, the registration, replicas.
    R"sql(
CREATE TABLE payouts (
  payout_id text PRIMARY KEY,
  registration text NOT NULL,
  client text NOT NULL DEFAULT '',
  request_id text NOT NULL,
  fingerprint text NOT NULL,
  state integer NOT NULL CHECK (state BETWEEN 1 AND 6),
  account_number text NOT NULL,
  ifsc text NOT NULL,
  name text NOT NULL,
  email text NOT NULL,
  mobile text NOT NULL,
  amount_paise bigint NOT NULL,
  mode integer NOT NULL,
  transaction_id text NOT NULL DEFAULT '',
  transaction_reference_no text NOT NULL DEFAULT '',
  upstream_status text NOT NULL DEFAULT '',
  bank_beneficiary_name text NOT NULL DEFAULT '',
  failure text,
  response text,
  payout_answer text,
  status_answer text,
  create_time_us bigint NOT NULL,
  update_time_us bigint NOT NULL,
  final_time_us bigint,
  owner text,
  CONSTRAINT payouts_key UNIQUE (registration, client, request_id)
);
CREATE INDEX payouts_by_registration ON payouts (registration, payout_id);
CREATE INDEX payouts_by_state ON payouts (registration, state, payout_id);
CREATE INDEX payouts_by_final_time ON payouts (registration, final_time_us)
  WHERE final_time_us IS NOT NULL;
CREATE INDEX payouts_by_client_day ON payouts (registration, client,
  create_time_us);
CREATE INDEX payouts_pending_by_owner ON payouts (owner) WHERE state = 1;
CREATE TABLE payout_events (
  id bigserial PRIMARY KEY,
  payout_id text NOT NULL REFERENCES payouts (payout_id) ON DELETE CASCADE,
  from_state integer NOT NULL,
  to_state integer NOT NULL,
  why text NOT NULL,
  who text NOT NULL,
  time_us bigint NOT NULL
);
CREATE INDEX payout_events_by_payout ON payout_events (payout_id, id);
CREATE FUNCTION payout_events_append_only() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'payout_events are append-only';
END $$;
CREATE TRIGGER payout_events_append_only BEFORE UPDATE ON payout_events
  FOR EACH ROW EXECUTE FUNCTION payout_events_append_only();
CREATE TABLE ledger_meta (
  key text PRIMARY KEY,
  value text NOT NULL
);
CREATE TABLE gateway_replicas (
  owner text PRIMARY KEY,
  registration text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now()
);
)sql",
    // 2: two more states, AWAITING_APPROVAL (7) and CANCELLED (8), and the
    // callers' metadata (a JSON object, NULL for none).
    R"sql(
ALTER TABLE payouts DROP CONSTRAINT payouts_state_check;
ALTER TABLE payouts ADD CONSTRAINT payouts_state_check
  CHECK (state BETWEEN 1 AND 8);
ALTER TABLE payouts ADD COLUMN metadata text;
)sql",
    // 3: watch positions. Event ids come from a sequence when a transaction
    // writes, and transactions commit in any order, so a watcher following
    // ids could pass an id that commits later. Every event is queued in the
    // transaction that writes it (a trigger); a sequencing statement takes
    // committed events from the queue, in id order, and gives them the next
    // positions while it holds the one event_sequencer row, so sequencing
    // statements commit one after the other and positions become visible in
    // order: a reader sees a prefix of them, never a gap that fills later.
    // Events already recorded are queued now and get positions first.
    R"sql(
CREATE TABLE event_queue (
  event_id bigint PRIMARY KEY
    REFERENCES payout_events (id) ON DELETE CASCADE
);
CREATE FUNCTION payout_events_queue() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO event_queue (event_id) VALUES (NEW.id);
  RETURN NULL;
END $$;
CREATE TRIGGER payout_events_queue AFTER INSERT ON payout_events
  FOR EACH ROW EXECUTE FUNCTION payout_events_queue();
CREATE TABLE event_positions (
  position bigint PRIMARY KEY,
  event_id bigint NOT NULL UNIQUE
    REFERENCES payout_events (id) ON DELETE CASCADE
);
CREATE TABLE event_sequencer (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  last bigint NOT NULL
);
INSERT INTO event_sequencer (last) VALUES (0);
INSERT INTO event_queue (event_id) SELECT id FROM payout_events;
)sql",
    // 4: the webhook outbox: one row per event not yet delivered, written in
    // the event's transaction by the queue trigger once a replica with
    // webhooks has used the database (ledger_meta key 'webhooks'), and
    // deleted once delivered or given up. Every replica's events are queued,
    // whichever replica sends them, also while the sending replica restarts.
    R"sql(
CREATE TABLE webhook_outbox (
  event_id bigint PRIMARY KEY
    REFERENCES payout_events (id) ON DELETE CASCADE,
  payout_id text NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_us bigint NOT NULL,
  enqueued_us bigint NOT NULL
);
CREATE INDEX webhook_outbox_by_payout ON webhook_outbox (payout_id, event_id);
CREATE OR REPLACE FUNCTION payout_events_queue() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO event_queue (event_id) VALUES (NEW.id);
  IF EXISTS (SELECT 1 FROM ledger_meta WHERE key = 'webhooks') THEN
    INSERT INTO webhook_outbox (event_id, payout_id, next_attempt_us,
                                enqueued_us)
      VALUES (NEW.id, NEW.payout_id, NEW.time_us, NEW.time_us);
  END IF;
  RETURN NULL;
END $$;
)sql",
    // 5: a caller without read_all lists its own payouts only, newest
    // first, walking this index once per state (ListSql); without it
    // PostgreSQL could only walk every payout of the registration to find
    // them, or sort all of the client's.
    R"sql(
CREATE INDEX IF NOT EXISTS payouts_by_client ON payouts (registration,
  client, state, payout_id);
)sql",
    // 6: what each client has spent in a day, for daily limits, kept as a
    // running total instead of summing the day's payouts for every limited
    // insert. DailySpent seeds a client's row for a day from the payouts,
    // under the client's advisory lock, in the transaction of the day's
    // first limited insert; from then on these triggers keep it equal to
    // the sum of that day's payouts outside FAILED (4) and CANCELLED (8).
    // Every change that moves the sum takes the same lock shared, so it
    // either commits before a seeding's sum is taken or waits for the
    // seeded row and updates it: no change falls between the two. An insert
    // takes it before its row (daily_spent_lock): taken after, a limited
    // insert of the same key holding the lock would wait for that row while
    // the row's trigger waited for the lock.
    R"sql(
CREATE TABLE daily_spent (
  registration text NOT NULL,
  client text NOT NULL,
  day_start_us bigint NOT NULL,
  day_end_us bigint NOT NULL,
  spent_paise bigint NOT NULL,
  PRIMARY KEY (registration, client, day_start_us, day_end_us)
);
CREATE FUNCTION daily_spent_follow() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.state NOT IN (4, 8) THEN
    PERFORM pg_advisory_xact_lock_shared(
      hashtextextended(OLD.registration || '/' || OLD.client, 0));
    UPDATE daily_spent SET spent_paise = spent_paise - OLD.amount_paise
    WHERE registration = OLD.registration AND client = OLD.client
      AND day_start_us <= OLD.create_time_us
      AND OLD.create_time_us < day_end_us;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.state NOT IN (4, 8) THEN
    -- An insert took it already, before its row (daily_spent_lock).
    IF TG_OP = 'UPDATE' THEN
      PERFORM pg_advisory_xact_lock_shared(
        hashtextextended(NEW.registration || '/' || NEW.client, 0));
    END IF;
    UPDATE daily_spent SET spent_paise = spent_paise + NEW.amount_paise
    WHERE registration = NEW.registration AND client = NEW.client
      AND day_start_us <= NEW.create_time_us
      AND NEW.create_time_us < day_end_us;
  END IF;
  RETURN NULL;
END $$;
CREATE FUNCTION daily_spent_lock() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(
    hashtextextended(NEW.registration || '/' || NEW.client, 0));
  RETURN NEW;
END $$;
CREATE TRIGGER daily_spent_lock BEFORE INSERT ON payouts
  FOR EACH ROW WHEN (NEW.state NOT IN (4, 8))
  EXECUTE FUNCTION daily_spent_lock();
CREATE TRIGGER daily_spent_on_insert AFTER INSERT ON payouts
  FOR EACH ROW WHEN (NEW.state NOT IN (4, 8))
  EXECUTE FUNCTION daily_spent_follow();
CREATE TRIGGER daily_spent_on_update
  AFTER UPDATE OF state, amount_paise, create_time_us, registration, client
  ON payouts FOR EACH ROW
  WHEN ((OLD.state IN (4, 8)) <> (NEW.state IN (4, 8))
    OR OLD.amount_paise <> NEW.amount_paise
    OR OLD.create_time_us <> NEW.create_time_us
    OR OLD.registration <> NEW.registration OR OLD.client <> NEW.client)
  EXECUTE FUNCTION daily_spent_follow();
CREATE TRIGGER daily_spent_on_delete AFTER DELETE ON payouts
  FOR EACH ROW WHEN (OLD.state NOT IN (4, 8))
  EXECUTE FUNCTION daily_spent_follow();
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kSchemaVersion,
              "one migration per schema version");
static_assert(static_cast<int>(PayoutState::kPending) == 1,
              "payouts_pending_by_owner names PENDING as 1");

absl::Status Migrate(Connection& db, const std::string& where) {
  absl::Status status = db.Run(
      "CREATE TABLE IF NOT EXISTS ledger_schema (version integer PRIMARY KEY, "
      "applied_at timestamptz NOT NULL DEFAULT now())",
      {}, "creating the version table");
  if (!status.ok()) return status;
  absl::StatusOr<Result> found = db.Exec(
      "SELECT COALESCE(max(version), 0), "
      "(SELECT count(*) FROM ledger_schema), "
      "to_regclass('payouts') IS NOT NULL FROM ledger_schema",
      {}, "reading the schema version");
  if (!found.ok()) return found.status();
  const int64_t version = found->Int(0, 0);
  if (version == 0 && found->Text(0, 2) == "t") {
    return absl::FailedPreconditionError(absl::StrCat(
        "ledger ", where,
        " has a payouts table but no ledger version: it is not a payout "
        "ledger (another application's database?)"));
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("ledger ", where, " has schema version ", version,
                     ", newer than this gateway's ", kSchemaVersion,
                     "; run a newer gateway"));
  }
  for (int next = static_cast<int>(version) + 1; next <= kSchemaVersion;
       ++next) {
    const std::string what = absl::StrCat("migrating to version ", next);
    status = db.Run("BEGIN", {}, what);
    if (status.ok()) status = db.RunScript(kMigrations[next - 1], what);
    if (status.ok()) {
      status = db.Run("INSERT INTO ledger_schema (version) VALUES ($1)",
                      {absl::StrCat(next)}, what);
    }
    if (status.ok()) status = db.Run("COMMIT", {}, what);
    if (!status.ok()) {
      (void)db.Run("ROLLBACK", {}, what);
      return status;
    }
  }
  return absl::OkStatus();
}

absl::Status Claim(Connection& db, const std::string& registration,
                   const std::string& where, absl::Duration lease) {
  absl::Status status = db.Run("BEGIN", {}, "checking the registration");
  if (!status.ok()) return status;
  // A new database holds no payouts yet: a live replica of another
  // registration is the sign of a mistyped --registration_id (each would
  // take the other's retries for new payouts and send them again).
  absl::StatusOr<Result> live = db.Exec(
      "SELECT 1 FROM gateway_replicas WHERE registration <> $1 AND "
      "heartbeat_at > now() - make_interval(secs => $2::double precision) "
      "LIMIT 1",
      {registration, absl::StrCat(absl::ToDoubleSeconds(lease))},
      "checking the registration");
  if (live.ok() && live->rows() > 0) {
    (void)db.Run("ROLLBACK", {}, "checking the registration");
    return absl::FailedPreconditionError(absl::StrCat(
        "ledger ", where,
        " is in use by a live replica of another AOPay registration; a "
        "ledger belongs to one registration, so check --registration_id"));
  }
  if (!live.ok()) {
    (void)db.Run("ROLLBACK", {}, "checking the registration");
    return live.status();
  }
  absl::StatusOr<Result> other =
      db.Exec("SELECT 1 FROM payouts WHERE registration <> $1 LIMIT 1",
              {registration}, "checking the registration");
  if (other.ok() && other->rows() > 0) {
    (void)db.Run("ROLLBACK", {}, "checking the registration");
    return absl::FailedPreconditionError(absl::StrCat(
        "ledger ", where,
        " holds payouts of another AOPay registration; a ledger belongs to "
        "one registration, so check --registration_id (old request ids "
        "would otherwise look new and be sent again)"));
  }
  if (!other.ok()) status = other.status();
  if (status.ok()) {
    status = db.Run(
        "INSERT INTO ledger_meta (key, value) VALUES ('registration', $1) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        {registration}, "recording the registration");
  }
  if (status.ok()) status = db.Run("COMMIT", {}, "recording the registration");
  if (!status.ok()) (void)db.Run("ROLLBACK", {}, "checking the registration");
  return status;
}

}  // namespace

absl::Status MigrateAndClaim(Connection& db, const std::string& registration,
                             const std::string& where, absl::Duration lease,
                             const std::function<absl::Status()>& join) {
  const std::vector<Param> lock = {absl::StrCat(kLockSpace),
                                   absl::StrCat(kMigrationLock)};
  absl::Status status = db.Run("SELECT pg_advisory_lock($1, $2)", lock,
                               "waiting for the migration lock");
  if (!status.ok()) return status;
  status = Migrate(db, where);
  if (status.ok()) status = Claim(db, registration, where, lease);
  // Under the same lock: a replica of another registration starting at
  // the same moment claims after this one is seen live, or before it.
  if (status.ok()) status = join();
  absl::Status unlocked = db.Run("SELECT pg_advisory_unlock($1, $2)", lock,
                                 "releasing the migration lock");
  return status.ok() ? unlocked : status;
}

}  // namespace aopay::postgres_internal
