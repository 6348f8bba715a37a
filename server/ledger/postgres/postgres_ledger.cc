// PostgresLedger: its connection pool, the maintenance thread (connecting,
// migrating, heart-beating, ending expired leases, leading), and each Ledger
// call's transaction. The pieces it is built from live beside it:
// connection.h (libpq) and schema.h (migrations, advisory locks); what every
// ledger stores the same way is in ../shared/row_format.h.

#include "server/ledger/postgres/postgres_ledger.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/errors.h"
#include "common/payout.h"
#include "common/redact.h"
#include "common/thread_name.h"
#include "server/executor/executor.h"
#include "server/ledger/ledger.h"
#include "server/ledger/postgres/connection.h"
#include "server/ledger/postgres/schema.h"
#include "server/ledger/shared/row_format.h"
#include "spdlog/spdlog.h"

namespace aopay {

using ledger_internal::CheckInsert;
using ledger_internal::CheckUnchangedSince;
using ledger_internal::CreatedBy;
using ledger_internal::CreationReason;
using ledger_internal::FinalStateNumbers;
using ledger_internal::IsKnownState;
using ledger_internal::kPayoutColumns;
using ledger_internal::kWatchedEventColumns;
using ledger_internal::ListSql;
using ledger_internal::MakePageToken;
using ledger_internal::MetadataColumn;
using ledger_internal::OverDailyLimit;
using ledger_internal::OverMaxPayout;
using ledger_internal::ParsePageToken;
using ledger_internal::ReadPayoutRow;
using ledger_internal::RowError;
using ledger_internal::StateMask;
using ledger_internal::StatusColumn;
using postgres_internal::Connection;
using postgres_internal::ConnectTarget;
using postgres_internal::IsRetryable;
using postgres_internal::kDutiesLock;
using postgres_internal::kLockSpace;
using postgres_internal::kWebhookLock;
using postgres_internal::MigrateAndClaim;
using postgres_internal::Param;
using postgres_internal::ParseConnectTarget;
using postgres_internal::Result;

namespace {

// A transaction that met a serialization failure or a deadlock runs again,
// up to this many times in all.
constexpr int kMaxAttempts = 3;
// A conflict that outlasted every attempt (the status is `status`, with the
// retry payload) is the database too busy to answer, not an answer:
// UNAVAILABLE, so that a caller keeps what it holds (an outcome in memory)
// and tries again, rather than taking ABORTED for "the payout moved on".
// Any other status is returned as it is.
absl::Status OutOfAttempts(absl::Status status) {
  if (!postgres_internal::IsRetryable(status)) return status;
  return LedgerUnavailableError(absl::StrCat(status.message(),
                                             " (still conflicting after ",
                                             kMaxAttempts, " attempts)"));
}
// Reconnecting: the first wait, doubled up to the last.
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(100);
constexpr absl::Duration kMaxBackoff = absl::Seconds(5);
// Expired leases ended per sweep transaction.
constexpr int kSweepBatch = 500;
// Events given watch positions per sequencing statement, and statements per
// maintenance tick (a backlog of events recorded while nothing sequenced
// them is worked off at up to 100,000 a second).
constexpr int kSequenceBatch = 1000;
constexpr int kSequenceRounds = 100;
// Payouts a new ledger holds before a replica gives the planner statistics
// (AnalyzeWhileWithoutStatistics).
constexpr int kAnalyzeAfterPayouts = 1000;

// One row of a Result, as ReadPayoutRow reads rows.
class RowView {
 public:
  RowView(const Result& result, int row) : result_(result), row_(row) {}
  bool IsNull(int column) const { return result_.IsNull(row_, column); }
  std::string Text(int column) const { return result_.Text(row_, column); }
  int64_t Int(int column) const { return result_.Int(row_, column); }

 private:
  const Result& result_;
  int row_;
};

std::string Number(int64_t value) { return absl::StrCat(value); }
std::string Number(PayoutState state) {
  return absl::StrCat(static_cast<int>(state));
}
std::string Micros(absl::Time time) {
  return absl::StrCat(absl::ToUnixMicros(time));
}

absl::Status ClosedError() {
  return LedgerUnavailableError("the ledger is closed");
}

// What ReadWatchedEvent reads, of a payout `p`, its event `e` and the
// event's watch position `ep` (its cursor).
std::string WatchedEventColumns() {
  return absl::StrCat(ledger_internal::PayoutColumnsOf("p."),
                      ", ep.position, e.from_state, e.to_state, e.why, e.who, "
                      "e.time_us");
}

// Gives the next watch positions to up to kSequenceBatch committed events,
// in id order (schema migration 3 says why). One statement, which holds
// event_sequencer's row until it commits: statements of several replicas
// take turns, and one that finds the row taken does nothing (the other is
// sequencing now). With nothing queued it locks and writes nothing (a
// watcher's read costs no write). Returns how many events got positions.
absl::StatusOr<int64_t> SequenceEvents(Connection& db) {
  static const std::string* const kSql = new std::string(absl::StrCat(
      "WITH waiting AS (SELECT 1 FROM event_queue LIMIT 1), "
      "turn AS (SELECT last FROM event_sequencer WHERE EXISTS "
      "(SELECT 1 FROM waiting) FOR UPDATE SKIP LOCKED), "
      "moved AS (DELETE FROM event_queue WHERE EXISTS (SELECT 1 FROM turn) "
      "AND event_id IN (SELECT event_id FROM event_queue ORDER BY event_id "
      "LIMIT ",
      kSequenceBatch,
      ") RETURNING event_id), "
      "placed AS (INSERT INTO event_positions (position, event_id) "
      "SELECT (SELECT last FROM turn) + row_number() OVER (ORDER BY "
      "event_id), event_id FROM moved RETURNING 1) "
      "UPDATE event_sequencer SET last = last + (SELECT count(*) FROM placed) "
      "WHERE EXISTS (SELECT 1 FROM placed) "
      "RETURNING (SELECT count(*) FROM placed)"));
  absl::StatusOr<Result> placed = db.Exec(*kSql, {}, "sequencing events");
  if (!placed.ok()) return placed.status();
  return placed->rows() == 0 ? 0 : placed->Int(0, 0);
}

std::string MakeOwner() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  std::random_device random;
  return absl::StrCat(host[0] != '\0' ? host : "gateway", "-", getpid(), "-",
                      absl::Hex(random() & 0xffffff, absl::kZeroPad6));
}

// The payout's row (kPayoutColumns) or nullopt.
absl::StatusOr<std::optional<StoredPayout>> FindOne(
    absl::StatusOr<Result> found) {
  if (!found.ok()) return found.status();
  if (found->rows() == 0) return std::nullopt;
  absl::StatusOr<StoredPayout> stored = ReadPayoutRow(RowView(*found, 0));
  if (!stored.ok()) return stored.status();
  return *std::move(stored);
}

absl::StatusOr<StoredPayout> SelectByPayoutId(Connection& db,
                                              const std::string& registration,
                                              const std::string& payout_id) {
  static const std::string* const kSql = new std::string(
      absl::StrCat("SELECT ", kPayoutColumns,
                   " FROM payouts WHERE registration = $1 AND payout_id = $2"));
  absl::StatusOr<std::optional<StoredPayout>> found =
      FindOne(db.Exec(*kSql, {registration, payout_id}, "reading a payout"));
  if (!found.ok()) return found.status();
  if (!found->has_value()) {
    return aopay::NotFoundError(absl::StrCat("Payout ", payout_id));
  }
  return **std::move(found);
}

absl::StatusOr<std::optional<StoredPayout>> FindByRequestId(
    Connection& db, const std::string& registration, const std::string& client,
    const std::string& request_id) {
  static const std::string* const kSql = new std::string(
      absl::StrCat("SELECT ", kPayoutColumns,
                   " FROM payouts WHERE registration = $1 AND client = $2 AND "
                   "request_id = $3"));
  return FindOne(
      db.Exec(*kSql, {registration, client, request_id}, "reading a payout"));
}

absl::Status AppendEvent(Connection& db, const std::string& payout_id,
                         PayoutState from, PayoutState to,
                         const std::string& why, const std::string& who,
                         absl::Time time) {
  return db.Run(
      "INSERT INTO payout_events (payout_id, from_state, to_state, why, who, "
      "time_us) VALUES ($1, $2, $3, $4, $5, $6)",
      {payout_id, Number(from), Number(to), why, who, Micros(time)},
      "recording a payout event");
}

// What the client's payouts created in [day_start, day_end) add up to,
// leaving out kStatesOutsideDailyLimit: the running total in daily_spent,
// which the first call for a client and day seeds from the payouts. Call it
// holding the client's advisory lock, in the insert's transaction.
absl::StatusOr<int64_t> DailySpent(Connection& db,
                                   const std::string& registration,
                                   const std::string& client,
                                   const DailyLimit& limit) {
  const std::vector<Param> day = {registration, client, Micros(limit.day_start),
                                  Micros(limit.day_end)};
  absl::StatusOr<Result> total = db.Exec(
      "SELECT spent_paise FROM daily_spent WHERE registration = $1 AND "
      "client = $2 AND day_start_us = $3 AND day_end_us = $4",
      day, "reading what the client has spent today");
  if (!total.ok()) return total.status();
  if (total->rows() > 0) return total->Int(0, 0);

  // The day's first limited insert: the sum, once, by the index
  // payouts_by_client_day; the triggers of schema version 6 keep it from
  // here on. The client's earlier days are not asked about again (a day
  // that is asked about again is summed again).
  static const std::string* const kSeedSql = [] {
    std::vector<int> outside;
    for (PayoutState state : kStatesOutsideDailyLimit) {
      outside.push_back(static_cast<int>(state));
    }
    return new std::string(absl::StrCat(
        "WITH earlier AS (DELETE FROM daily_spent WHERE registration = $1 AND "
        "client = $2 AND day_end_us <= $3) "
        "INSERT INTO daily_spent (registration, client, day_start_us, "
        "day_end_us, spent_paise) SELECT $1, $2, $3, $4, "
        "COALESCE(SUM(amount_paise), 0) FROM payouts "
        "WHERE registration = $1 AND client = $2 AND create_time_us >= $3 AND "
        "create_time_us < $4 AND state NOT IN (",
        absl::StrJoin(outside, ", "), ") RETURNING spent_paise"));
  }();
  absl::StatusOr<Result> seeded =
      db.Exec(*kSeedSql, day, "adding up the client's payouts of the day");
  if (!seeded.ok()) return seeded.status();
  return seeded->Int(0, 0);
}

// A worker's connection, made when first needed and again after it is lost,
// with backoff.
class Slot {
 public:
  explicit Slot(const ConnectTarget& target) : target_(target) {}

  // The connection, or UNAVAILABLE while the database cannot be reached
  // (without waiting: a call fails at once until the next attempt is due).
  absl::StatusOr<Connection*> Get() {
    if (db_.ok()) return &db_;
    const absl::Time now = absl::Now();
    if (now < retry_at_) {
      return LedgerUnavailableError(
          absl::StrCat("cannot reach the ledger database ", target_.redacted,
                       "; reconnecting"));
    }
    absl::StatusOr<Connection> opened = Connection::Open(target_);
    if (!opened.ok()) {
      retry_at_ = now + backoff_;
      backoff_ = std::min(backoff_ * 2, kMaxBackoff);
      return opened.status();
    }
    db_ = *std::move(opened);
    backoff_ = kFirstBackoff;
    return &db_;
  }

 private:
  const ConnectTarget& target_;
  Connection db_;
  absl::Time retry_at_ = absl::InfinitePast();
  absl::Duration backoff_ = kFirstBackoff;
};

}  // namespace

// ---------------------------------------------------------------------------

class PostgresLedger::Impl {
 public:
  template <typename T>
  using Body = absl::AnyInvocable<absl::StatusOr<T>(Connection&)>;

  Impl(PostgresLedgerOptions options, ConnectTarget target)
      : options_(std::move(options)),
        target_(std::move(target)),
        owner_(options_.owner.empty() ? MakeOwner() : options_.owner),
        own_executor_(options_.executor == nullptr
                          ? std::make_unique<ThreadPool>(1, "ledger-cb")
                          : nullptr),
        executor_(options_.executor != nullptr ? *options_.executor
                                               : *own_executor_) {}

  ~Impl() {
    Close();
    for (;;) {
      std::vector<std::thread> late;
      {
        absl::MutexLock lock(&mu_);
        late.swap(late_threads_);
      }
      if (late.empty()) break;
      for (std::thread& thread : late) thread.join();
    }
  }

  // The first attempt, on the caller's thread: connect, migrate, claim,
  // register this replica. UNAVAILABLE leaves the rest to the maintenance
  // thread; any other error is returned.
  absl::Status Start() {
    absl::Status prepared = Prepare();
    if (!prepared.ok() && prepared.code() != absl::StatusCode::kUnavailable) {
      return prepared;
    }
    if (!prepared.ok()) {
      spdlog::error(
          "ledger database not reachable yet, health NOT_SERVING; retrying "
          "in the background: {}",
          std::string(prepared.message()));
    }
    for (int i = 0; i < std::max(1, options_.connections); ++i) {
      workers_.emplace_back([this] {
        NameThisThread("ledger-pg");
        WorkerLoop();
      });
    }
    maintenance_thread_ = std::thread([this] {
      NameThisThread("ledger-pg-maint");
      MaintenanceLoop();
    });
    return absl::OkStatus();
  }

  void Close() {
    absl::MutexLock close_lock(&close_mu_);
    {
      absl::MutexLock lock(&mu_);
      if (closing_) return;
      closing_ = true;
    }
    for (std::thread& worker : workers_) worker.join();
    stop_.Notify();
    if (maintenance_thread_.joinable()) maintenance_thread_.join();
    EndLease();
    callbacks_->WaitForZero();
    if (own_executor_ != nullptr) own_executor_->Stop();
  }

  // How a call's statements commit: together in one transaction, or each by
  // itself (a call whose writes are one statement, and reads).
  enum class Mode { kTransaction, kStatements };

  // Runs `body` on a worker; `done` gets its result on the executor.
  // `on_unknown_commit` runs (on the worker) when a commit got no answer.
  template <typename T>
  void Submit(Mode mode, Body<T> body, Callback<absl::StatusOr<T>> done,
              absl::AnyInvocable<void()> on_unknown_commit = nullptr) {
    absl::MutexLock lock(&mu_);
    if (closing_) {
      late_threads_.emplace_back(
          [done = std::move(done)]() mutable { done(ClosedError()); });
      return;
    }
    calls_.push_back([this, mode, body = std::move(body),
                      done = std::move(done),
                      on_unknown_commit =
                          std::move(on_unknown_commit)](Slot& slot) mutable {
      bool unknown = false;
      absl::StatusOr<T> result = Transact<T>(slot, mode, body, &unknown);
      if (unknown && on_unknown_commit != nullptr) on_unknown_commit();
      NoteOutcome(result.status());
      Dispatch([done = std::move(done), result = std::move(result)]() mutable {
        done(std::move(result));
      });
    });
  }

  // Runs `body` on a worker and waits for its result (RecoverPending).
  template <typename T>
  absl::StatusOr<T> SubmitAndWait(Body<T> body) {
    absl::Notification finished;
    absl::StatusOr<T> out = absl::UnknownError("not run");
    Submit<T>(Mode::kTransaction, std::move(body),
              [&](absl::StatusOr<T> result) {
                out = std::move(result);
                finished.Notify();
              });
    finished.WaitForNotification();
    return out;
  }

  const std::string& registration() const { return options_.registration_id; }
  const std::string& owner() const { return owner_; }
  absl::Duration lease() const { return options_.owner_lease; }
  bool ready() const { return ready_.load(); }
  bool healthy() const {
    return ready_.load() && healthy_.load() && LeaseHeld().ok();
  }

  // OK while this replica's lease was renewed within two thirds of it (two
  // heartbeats late, with the shortest lease). Past that, another replica
  // may soon find it expired and turn this replica's PENDING payouts
  // UNKNOWN: so it records no new payout and sends no approved one
  // (LEDGER_UNAVAILABLE, nothing sent) until a heartbeat gets through, and
  // reports itself unhealthy.
  absl::Status LeaseHeld() const {
    const absl::Duration since =
        absl::Now() - absl::FromUnixMicros(lease_renewed_us_.load());
    if (since <= options_.owner_lease * 2 / 3) return absl::OkStatus();
    return LedgerUnavailableError(absl::StrCat(
        "this replica has not renewed its lease for ",
        absl::FormatDuration(absl::Trunc(since, absl::Milliseconds(1))),
        " (of ", absl::FormatDuration(options_.owner_lease),
        "); it records no new payout until it does"));
  }
  bool leader() const { return leader_.load(); }
  bool sender() const { return sender_.load(); }
  // The maintenance connection's server process, which holds the webhook
  // lock while this replica sends.
  int64_t sender_pid() const { return sender_pid_.load(); }

  // A heartbeat (or the registration) that started at `at` got through: the
  // database's heartbeat time is no earlier.
  void RenewedAt(absl::Time at) {
    lease_renewed_us_.store(absl::ToUnixMicros(at));
  }

  // An insert whose COMMIT got no answer: its row, if it exists and nothing
  // moved it on, was never sent and is deleted once the database answers
  // (ForgetUnchangedInsert).
  void Doubt(std::string payout_id, PayoutState inserted_state) {
    absl::MutexLock lock(&doubt_mu_);
    doubtful_.emplace(std::move(payout_id), inserted_state);
  }

  // An approval whose COMMIT got no answer: the payout was not sent, and
  // if it is PENDING as that approval left it, it awaits approval again
  // once the database answers (RevertUnseenApproval).
  void DoubtApproval(std::string payout_id, absl::Time approved_at) {
    absl::MutexLock lock(&doubt_mu_);
    doubtful_approvals_.emplace(std::move(payout_id), approved_at);
  }

  // Ends expired leases: their PENDING payouts become UNKNOWN. Returns how
  // many.
  absl::StatusOr<int> Sweep(Connection& db, absl::Time now) {
    int total = 0;
    for (;;) {
      absl::StatusOr<int> swept = SweepBatch(db, now);
      if (!swept.ok()) return swept.status();
      total += *swept;
      if (*swept < kSweepBatch) break;
    }
    absl::Status forgotten = db.Run(
        "DELETE FROM gateway_replicas r WHERE r.registration = $1 AND "
        "r.heartbeat_at < now() - make_interval(secs => $2) AND NOT EXISTS "
        "(SELECT 1 FROM payouts p WHERE p.owner = r.owner AND p.state = 1)",
        {registration(), LeaseSeconds()}, "forgetting stopped replicas");
    if (!forgotten.ok()) return forgotten;
    return total;
  }

 private:
  using Call = absl::AnyInvocable<void(Slot&)>;

  void Dispatch(Executor::Task task) {
    callbacks_->Add();
    executor_.Run([callbacks = callbacks_, task = std::move(task)]() mutable {
      std::move(task)();
      callbacks->Done();
    });
  }

  // Health follows the last call that reached the database (or did not).
  void NoteOutcome(const absl::Status& status) {
    if (status.ok()) {
      healthy_.store(true);
    } else if (status.code() == absl::StatusCode::kUnavailable) {
      healthy_.store(false);
    }
  }

  template <typename T>
  absl::StatusOr<T> Transact(Slot& slot, Mode mode, Body<T>& body,
                             bool* unknown) {
    if (!ready_.load()) {
      return LedgerUnavailableError(
          "the ledger database has not been reached yet");
    }
    for (int attempt = 1;; ++attempt) {
      absl::StatusOr<Connection*> db = slot.Get();
      if (!db.ok()) return db.status();
      if (mode == Mode::kStatements) {
        absl::StatusOr<T> result = body(**db);
        if (result.ok()) return result;
        if (IsRetryable(result.status()) && attempt < kMaxAttempts) continue;
        // Lost during a statement that commits by itself: it may or may not
        // have been applied.
        if (!(*db)->ok()) *unknown = true;
        return OutOfAttempts(result.status());
      }
      absl::Status begun = (*db)->Run("BEGIN", {}, "starting a transaction");
      if (!begun.ok()) return begun;
      absl::StatusOr<T> result = body(**db);
      if (!result.ok()) {
        (void)(*db)->Run("ROLLBACK", {}, "rolling back");
        if (IsRetryable(result.status()) && attempt < kMaxAttempts) continue;
        return OutOfAttempts(result.status());
      }
      absl::Status committed = (*db)->Run("COMMIT", {}, "committing");
      if (committed.ok()) return result;
      if (IsRetryable(committed) && attempt < kMaxAttempts) continue;
      // Lost during COMMIT: it may or may not have been applied.
      if (!(*db)->ok()) *unknown = true;
      return OutOfAttempts(committed);
    }
  }

  void WorkerLoop() {
    Slot slot(target_);
    for (;;) {
      Call call;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(this, &Impl::HasCalls));
        if (calls_.empty()) return;  // closing, and every call is answered
        call = std::move(calls_.front());
        calls_.pop_front();
      }
      call(slot);
    }
  }

  bool HasCalls() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closing_ || !calls_.empty();
  }

  std::string LeaseSeconds() const {
    return absl::StrCat(absl::ToDoubleSeconds(options_.owner_lease));
  }

  // Connect, migrate, claim, register this replica.
  absl::Status Prepare() {
    absl::StatusOr<Connection> db = Connection::Open(target_);
    if (!db.ok()) return db.status();
    maintenance_db_ = *std::move(db);
    const absl::Time registering = absl::Now();
    absl::Status status =
        MigrateAndClaim(maintenance_db_, registration(), target_.redacted,
                        options_.owner_lease, [this] { return Register(); });
    if (!status.ok()) return status;
    RenewedAt(registering);
    if (status = TakeDutiesWhenFree(); !status.ok()) return status;
    ready_.store(true);
    healthy_.store(true);
    spdlog::info("ledger {}: replica {} (owner lease {})", target_.redacted,
                 owner_, absl::FormatDuration(options_.owner_lease));
    return absl::OkStatus();
  }

  // Every third of the lease, at most every second, from one heartbeat to
  // the next (every second while the database is away):
  // connect and migrate when not yet done; heartbeat; end expired leases;
  // take the duties lock when free; delete doubtful inserts.
  void MaintenanceLoop() {
    absl::Duration backoff = kFirstBackoff;
    bool fatal = false;
    const absl::Duration tick =
        std::min(absl::Seconds(1), options_.owner_lease / 3);
    absl::Duration wait = ready_.load() ? tick : backoff;
    while (!stop_.WaitForNotificationWithTimeout(wait)) {
      if (fatal) continue;
      if (!ready_.load()) {
        absl::Status prepared = Prepare();
        if (prepared.ok()) {
          spdlog::info("ledger database reached: health follows it again");
          wait = tick;
        } else if (prepared.code() == absl::StatusCode::kUnavailable) {
          backoff = std::min(backoff * 2, kMaxBackoff);
          wait = backoff;
          continue;
        } else {
          fatal = true;
          spdlog::critical("ledger cannot be used: {}",
                           std::string(prepared.message()));
          if (options_.on_fatal) options_.on_fatal(prepared);
          continue;
        }
      }
      const absl::Time beating = absl::Now();
      absl::Status beat = Heartbeat();
      NoteOutcome(beat);
      if (beat.ok()) RenewedAt(beating);
      if (!beat.ok()) {
        if (leader_.exchange(false)) {
          spdlog::warn("ledger: no longer the leader replica: {}",
                       std::string(beat.message()));
        }
        if (sender_.exchange(false)) {
          spdlog::warn("ledger: no longer the webhook sender: {}",
                       std::string(beat.message()));
        }
        spdlog::warn("ledger heartbeat failed: {}",
                     std::string(beat.message()));
        absl::StatusOr<Connection> db = Connection::Open(target_);
        if (db.ok()) maintenance_db_ = *std::move(db);
        wait = tick;
        continue;
      }
      absl::StatusOr<int> swept = InTransaction<int>(
          [this](Connection& db) { return Sweep(db, absl::Now()); });
      if (!swept.ok()) {
        spdlog::warn("ledger: ending expired leases failed: {}",
                     std::string(swept.status().message()));
      } else if (*swept > 0) {
        spdlog::warn(
            "{} payouts of replicas that stopped heart-beating for {} are "
            "now UNKNOWN and will not be re-sent",
            *swept, absl::FormatDuration(options_.owner_lease));
      }
      ForgetDoubtful();
      SequenceBacklog();
      AnalyzeWhileWithoutStatistics();
      // Heartbeats a tick apart however long this work took (LeaseHeld
      // counts from the last one), and the next one at once after a turn
      // longer than a tick.
      wait = std::max(tick - (absl::Now() - beating), absl::Milliseconds(1));
    }
  }

  // A new ledger's payouts table has no planner statistics until
  // autovacuum first analyzes it, a minute or more after the first payouts
  // (never, with autovacuum off). Without them every index led by
  // `registration` looks as cheap as the primary key, and PostgreSQL may
  // plan a lookup by payout id as a scan of every payout of the
  // registration; a prepared statement keeps that plan, so each payout costs
  // more than the last. So once the table holds kAnalyzeAfterPayouts payouts
  // and still has no statistics, the replica analyzes it, which also has
  // every cached plan made again. (Analyzed while smaller, the table would
  // look too small for any index, and the kept plans would read all of it.)
  // Checked each tick until the statistics exist.
  void AnalyzeWhileWithoutStatistics() {
    if (planner_has_statistics_) return;
    static const std::string* const kSql = new std::string(absl::StrCat(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_stats s WHERE "
        "s.schemaname = n.nspname AND s.tablename = c.relname AND "
        "s.attname = 'registration') THEN 'known' WHEN (SELECT count(*) FROM "
        "(SELECT 1 FROM payouts LIMIT ",
        kAnalyzeAfterPayouts, ") AS p) >= ", kAnalyzeAfterPayouts,
        " THEN 'unknown' ELSE 'few' END FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.oid = 'payouts'::regclass"));
    absl::StatusOr<Result> known =
        maintenance_db_.Exec(*kSql, {}, "checking the planner's statistics");
    if (!known.ok() || known->rows() != 1) return;  // the next tick again
    const std::string state = known->Text(0, 0);
    if (state == "few") return;
    if (state == "known") {
      planner_has_statistics_ = true;
      return;
    }
    // Without the table's ownership PostgreSQL skips it with a warning and
    // autovacuum analyzes it later: not tried again.
    if (absl::Status analyzed =
            maintenance_db_.Run("ANALYZE payouts", {}, "analyzing payouts");
        !analyzed.ok()) {
      spdlog::warn("ledger: analyzing payouts failed: {}",
                   std::string(analyzed.message()));
      return;
    }
    planner_has_statistics_ = true;
    spdlog::info("ledger: ran ANALYZE payouts (it had no planner statistics)");
  }

  // Gives watch positions to the events committed since the last tick, on
  // every replica (one at a time: SequenceEvents), so that the queue stays
  // short also while nobody watches.
  void SequenceBacklog() {
    for (int round = 0; round < kSequenceRounds; ++round) {
      absl::StatusOr<int64_t> sequenced = SequenceEvents(maintenance_db_);
      if (!sequenced.ok()) {
        spdlog::warn("ledger: sequencing events failed: {}",
                     std::string(sequenced.status().message()));
        return;
      }
      if (*sequenced < kSequenceBatch) return;
    }
  }

  // Heartbeat, and the duties lock while it is free.
  absl::Status Heartbeat() {
    absl::StatusOr<Result> beat = maintenance_db_.Exec(
        "UPDATE gateway_replicas SET heartbeat_at = now() WHERE owner = $1",
        {owner_}, "heart-beating");
    if (!beat.ok()) return beat.status();
    if (beat->changed() == 0) {
      // Another replica found this one's lease expired (the database was
      // out of reach for longer than the lease): its PENDING payouts are
      // UNKNOWN now. It goes on as a live replica again.
      spdlog::error(
          "ledger: this replica's lease had expired (no heartbeat for {}); "
          "its payouts in flight were made UNKNOWN by another replica",
          absl::FormatDuration(options_.owner_lease));
      if (absl::Status again = Register(); !again.ok()) return again;
    }
    return TakeDutiesWhenFree();
  }

  // Records this replica as live. A replica with webhooks turns the outbox
  // on for the database: from then on every replica queues its events for
  // them, for good (docs/webhooks.md says how to turn it off).
  absl::Status Register() {
    absl::Status registered = maintenance_db_.Run(
        "INSERT INTO gateway_replicas (owner, registration) VALUES ($1, $2) "
        "ON CONFLICT (owner) DO UPDATE SET heartbeat_at = now()",
        {owner_, registration()}, "registering this replica");
    if (!registered.ok() || !options_.webhooks) return registered;
    return maintenance_db_.Run(
        "INSERT INTO ledger_meta (key, value) VALUES ('webhooks', 'on') "
        "ON CONFLICT (key) DO NOTHING",
        {}, "turning the webhook outbox on");
  }

  // The duties and webhook locks are session locks of the maintenance
  // connection: held until this replica closes or loses that connection.
  absl::Status TakeDutiesWhenFree() {
    if (options_.webhooks && !sender_.load()) {
      absl::StatusOr<Result> lock = maintenance_db_.Exec(
          "SELECT pg_try_advisory_lock($1, $2), pg_backend_pid()",
          {Number(kLockSpace), Number(kWebhookLock)},
          "taking the webhook lock");
      if (!lock.ok()) return lock.status();
      if (lock->Text(0, 0) == "t") {
        sender_pid_.store(lock->Int(0, 1));
        sender_.store(true);
        spdlog::info("ledger: replica {} sends the webhooks", owner_);
      }
    }
    if (leader_.load()) return absl::OkStatus();
    absl::StatusOr<Result> lock = maintenance_db_.Exec(
        "SELECT pg_try_advisory_lock($1, $2)",
        {Number(kLockSpace), Number(kDutiesLock)}, "taking the duties lock");
    if (!lock.ok()) return lock.status();
    if (lock->Text(0, 0) == "t") {
      leader_.store(true);
      spdlog::info("ledger: replica {} leads (reconciler, retention pruning)",
                   owner_);
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> InTransaction(Body<T> body) {
    absl::Status begun = maintenance_db_.Run("BEGIN", {}, "starting");
    if (!begun.ok()) return begun;
    absl::StatusOr<T> result = body(maintenance_db_);
    if (!result.ok()) {
      (void)maintenance_db_.Run("ROLLBACK", {}, "rolling back");
      return result;
    }
    absl::Status committed = maintenance_db_.Run("COMMIT", {}, "committing");
    if (!committed.ok()) return committed;
    return result;
  }

  absl::StatusOr<int> SweepBatch(Connection& db, absl::Time now) {
    // Payouts whose owner's lease ran out, or whose owner is unknown.
    absl::StatusOr<Result> expired = db.Exec(
        "SELECT p.payout_id, p.owner FROM payouts p LEFT JOIN "
        "gateway_replicas r ON r.owner = p.owner WHERE p.registration = $1 "
        "AND p.state = 1 AND (r.owner IS NULL OR r.heartbeat_at < now() - "
        "make_interval(secs => $2)) ORDER BY p.payout_id LIMIT $3 "
        "FOR UPDATE OF p SKIP LOCKED",
        {registration(), LeaseSeconds(), Number(kSweepBatch)},
        "finding payouts of stopped replicas");
    if (!expired.ok()) return expired.status();
    for (int row = 0; row < expired->rows(); ++row) {
      const std::string payout_id = expired->Text(row, 0);
      const std::string owner = expired->Text(row, 1);
      const absl::Status response = RecoveredAsUnknownError(payout_id);
      absl::Status status = db.Run(
          "UPDATE payouts SET state = $2, response = COALESCE(response, $3), "
          "update_time_us = $4 WHERE payout_id = $1",
          {payout_id, Number(PayoutState::kUnknown), SerializeError(response),
           Micros(now)},
          "ending an expired lease");
      if (!status.ok()) return status;
      status = AppendEvent(
          db, payout_id, PayoutState::kPending, PayoutState::kUnknown,
          absl::StrCat("replica ", owner,
                       " stopped while the AOPay call was in flight; the "
                       "payout may have been sent"),
          absl::StrCat("recovery by ", owner_), now);
      if (!status.ok()) return status;
    }
    return expired->rows();
  }

  void ForgetDoubtful() {
    // Approvals first: a held payout whose insert and approval both went
    // unanswered is moved back to approval, and then removed as an insert
    // its caller was told was not recorded (unchanged since that move).
    std::vector<std::pair<std::string, absl::Time>> approvals;
    {
      absl::MutexLock lock(&doubt_mu_);
      approvals.assign(doubtful_approvals_.begin(), doubtful_approvals_.end());
    }
    absl::flat_hash_map<std::string, absl::Time> moved_back;
    for (const auto& [payout_id, approved_at] : approvals) {
      const absl::Time now = absl::Now();
      absl::StatusOr<bool> reverted = postgres_internal::RevertUnseenApproval(
          maintenance_db_, payout_id, approved_at, owner_, now);
      if (!reverted.ok()) return;
      if (*reverted) {
        moved_back.emplace(payout_id, now);
        spdlog::warn(
            "payout {}: its approval's commit got no answer and it was not "
            "sent; it awaits approval again",
            payout_id);
      }
      absl::MutexLock lock(&doubt_mu_);
      doubtful_approvals_.erase(payout_id);
    }
    std::vector<std::pair<std::string, PayoutState>> doubtful;
    {
      absl::MutexLock lock(&doubt_mu_);
      doubtful.assign(doubtful_.begin(), doubtful_.end());
    }
    for (const auto& [payout_id, inserted_state] : doubtful) {
      const auto moved = moved_back.find(payout_id);
      absl::StatusOr<bool> deleted = postgres_internal::ForgetUnchangedInsert(
          maintenance_db_, payout_id, inserted_state, owner_,
          moved == moved_back.end() ? std::nullopt
                                    : std::optional<absl::Time>(moved->second));
      if (!deleted.ok()) return;
      absl::MutexLock lock(&doubt_mu_);
      doubtful_.erase(payout_id);
    }
  }

  // A clean stop: this replica's lease ends now, so that any PENDING payout
  // it leaves becomes UNKNOWN at the next sweep, not after the lease.
  void EndLease() {
    if (!ready_.load()) return;
    if (!maintenance_db_.ok()) {
      absl::StatusOr<Connection> db = Connection::Open(target_);
      if (!db.ok()) return;
      maintenance_db_ = *std::move(db);
    }
    ForgetDoubtful();
    absl::Status ended = maintenance_db_.Run(
        "UPDATE gateway_replicas SET heartbeat_at = '-infinity' WHERE "
        "owner = $1",
        {owner_}, "ending this replica's lease");
    if (!ended.ok()) {
      spdlog::warn("ledger: could not end this replica's lease: {}",
                   std::string(ended.message()));
    }
    maintenance_db_ = Connection();  // releases the duties and webhook locks
    leader_.store(false);
    sender_.store(false);
  }

  const PostgresLedgerOptions options_;
  const ConnectTarget target_;
  const std::string owner_;
  const std::unique_ptr<ThreadPool> own_executor_;
  Executor& executor_;
  const std::shared_ptr<CallbackCount> callbacks_ =
      std::make_shared<CallbackCount>();

  std::atomic<bool> ready_{false};
  std::atomic<bool> healthy_{false};
  std::atomic<bool> leader_{false};
  std::atomic<bool> sender_{false};
  std::atomic<int64_t> sender_pid_{0};

  // Used by Start() and then only by the maintenance thread (and Close()
  // after it has joined).
  Connection maintenance_db_;
  bool planner_has_statistics_ = false;  // AnalyzeWhileWithoutStatistics
  absl::Notification stop_;

  absl::Mutex doubt_mu_;
  absl::flat_hash_map<std::string, PayoutState> doubtful_
      ABSL_GUARDED_BY(doubt_mu_);
  absl::flat_hash_map<std::string, absl::Time> doubtful_approvals_
      ABSL_GUARDED_BY(doubt_mu_);
  // When the last heartbeat that got through started (LeaseHeld).
  std::atomic<int64_t> lease_renewed_us_{0};

  absl::Mutex close_mu_;  // serializes Close()
  absl::Mutex mu_;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Call> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> late_threads_ ABSL_GUARDED_BY(mu_);

  std::vector<std::thread> workers_;
  std::thread maintenance_thread_;
};

// ---------------------------------------------------------------------------

absl::Status PostgresLedger::CheckOwnerLease(absl::Duration lease) {
  if (lease >= kMinOwnerLease) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "--owner_lease must be at least ", absl::FormatDuration(kMinOwnerLease)));
}

absl::StatusOr<std::unique_ptr<PostgresLedger>> PostgresLedger::Open(
    PostgresLedgerOptions options) {
  if (options.registration_id.empty()) {
    return absl::InvalidArgumentError("the ledger needs a registration id");
  }
  if (absl::Status lease = CheckOwnerLease(options.owner_lease); !lease.ok()) {
    return lease;
  }
  absl::StatusOr<ConnectTarget> target =
      ParseConnectTarget(options.uri, options.statement_timeout);
  if (!target.ok()) return target.status();
  auto impl = std::make_unique<Impl>(std::move(options), *std::move(target));
  if (absl::Status started = impl->Start(); !started.ok()) return started;
  return std::unique_ptr<PostgresLedger>(new PostgresLedger(std::move(impl)));
}

std::string RedactLedgerUri(absl::string_view uri) {
  return postgres_internal::RedactUri(uri);
}

PostgresLedger::PostgresLedger(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

PostgresLedger::~PostgresLedger() = default;

namespace postgres_internal {

absl::StatusOr<bool> ForgetUnchangedInsert(
    Connection& db, const std::string& payout_id, PayoutState inserted_state,
    const std::string& owner, std::optional<absl::Time> moved_back_at) {
  // Every change of a payout moves its update time (an approval, a cancel,
  // a sweep, an outcome), and these columns are the row's own: a change
  // committed while this statement waited for the row is seen, as a
  // subquery over its events would not be.
  absl::StatusOr<Result> deleted = db.Exec(
      "DELETE FROM payouts WHERE payout_id = $1 AND owner = $2 AND "
      "state = $3 AND update_time_us = COALESCE($4::bigint, create_time_us) "
      "RETURNING payout_id",
      {payout_id, owner, Number(inserted_state),
       moved_back_at.has_value()
           ? std::optional<std::string>(Micros(*moved_back_at))
           : std::nullopt},
      "removing an insert whose commit went unseen");
  if (!deleted.ok()) return deleted.status();
  return deleted->rows() == 1;
}

absl::StatusOr<bool> RevertUnseenApproval(Connection& db,
                                          const std::string& payout_id,
                                          absl::Time approved_at,
                                          const std::string& owner,
                                          absl::Time now) {
  // The update time is the approval's only while nothing changed the
  // payout since (an outcome, a sweep); the event says why it moved back.
  absl::StatusOr<Result> reverted = db.Exec(
      "WITH reverted AS (UPDATE payouts SET state = $4, update_time_us = $5 "
      "WHERE payout_id = $1 AND owner = $2 AND state = $3 AND "
      "update_time_us = $6 RETURNING payout_id) "
      "INSERT INTO payout_events (payout_id, from_state, to_state, why, who, "
      "time_us) SELECT payout_id, $3, $4, $7, 'gateway', $5 FROM reverted "
      "RETURNING payout_id",
      {payout_id, owner, Number(PayoutState::kPending),
       Number(PayoutState::kAwaitingApproval), Micros(now), Micros(approved_at),
       std::string("not sent: the approval's commit got no answer; awaiting "
                   "approval again")},
      "undoing an approval whose commit went unseen");
  if (!reverted.ok()) return reverted.status();
  return reverted->rows() == 1;
}

}  // namespace postgres_internal

void PostgresLedger::Close() { impl_->Close(); }

bool PostgresLedger::Healthy() const { return impl_->healthy(); }

bool PostgresLedger::IsLeader() const { return impl_->leader(); }

const std::string& PostgresLedger::owner() const { return impl_->owner(); }

void PostgresLedger::Insert(InsertRequest request,
                            Callback<absl::StatusOr<InsertResult>> done) {
  Impl& impl = *impl_;
  const std::string payout_id = request.payout.payout_id;
  const PayoutState inserted_state = request.payout.state;
  // Within the limits and without a daily limit the insert is one statement
  // (payout and creation event), committing by itself: one round trip.
  const bool over_max = OverMaxPayout(request).has_value();
  const Impl::Mode mode = request.daily_limit.has_value() || over_max
                              ? Impl::Mode::kTransaction
                              : Impl::Mode::kStatements;
  impl.Submit<InsertResult>(
      mode,
      [&impl, over_max, request = std::move(request)](
          Connection& db) -> absl::StatusOr<InsertResult> {
        const Payout& payout = request.payout;
        const std::string& registration = impl.registration();
        if (absl::Status valid = CheckInsert(request); !valid.ok()) {
          return valid;
        }
        // A payout recorded now would be sent by a replica whose payouts
        // another may soon turn UNKNOWN.
        if (absl::Status held = impl.LeaseHeld(); !held.ok()) return held;
        // Over the maximum: the insert below still runs, inside a savepoint
        // that is then undone, because only an insert waits for another
        // connection's uncommitted insert of the key (a read would not see
        // it) and so finds the payout a retry's first call is recording.
        if (over_max) {
          absl::Status saved =
              db.Run("SAVEPOINT over_max", {}, "checking the key");
          if (!saved.ok()) return saved;
        }
        const std::optional<DailyLimit>& limit = request.daily_limit;
        auto existing = [&]() -> absl::StatusOr<InsertResult> {
          absl::StatusOr<std::optional<StoredPayout>> found = FindByRequestId(
              db, registration, payout.client, payout.request_id);
          if (!found.ok()) return found.status();
          if (!found->has_value()) {
            // Taken and gone again (forgotten meanwhile): run again.
            absl::Status again = absl::AbortedError("the key changed hands");
            again.SetPayload(postgres_internal::kRetryPayload,
                             absl::Cord("key"));
            return again;
          }
          InsertResult result;
          result.existing = **std::move(found);
          return result;
        };
        if (limit.has_value() && !over_max) {
          // One insert per client at a time on every replica, so that the
          // sum sees every insert committed before it.
          absl::Status locked = db.Run(
              "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, "
              "0))",
              {registration, payout.client}, "locking the client's limit");
          if (!locked.ok()) return locked;
          // A replay wins over the limit: its payout was counted when it was
          // recorded.
          absl::StatusOr<std::optional<StoredPayout>> found = FindByRequestId(
              db, registration, payout.client, payout.request_id);
          if (!found.ok()) return found.status();
          if (found->has_value()) {
            InsertResult result;
            result.existing = **std::move(found);
            return result;
          }
          absl::StatusOr<int64_t> spent =
              DailySpent(db, registration, payout.client, *limit);
          if (!spent.ok()) return spent.status();
          if (std::optional<InsertResult> refused =
                  OverDailyLimit(*spent, request)) {
            return *std::move(refused);
          }
        }
        // Exactly one replica's insert of a key wins; one racing it waits
        // for the winner's commit and then finds its row.
        absl::StatusOr<Result> inserted = db.Exec(
            "WITH inserted AS (INSERT INTO payouts (payout_id, registration, "
            "request_id, fingerprint, state, account_number, ifsc, name, "
            "email, mobile, amount_paise, mode, transaction_id, "
            "transaction_reference_no, upstream_status, "
            "bank_beneficiary_name, failure, response, create_time_us, "
            "update_time_us, client, owner, metadata) VALUES ($1, $2, $3, $4, "
            "$5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, NULL, "
            "$18, $19, $20, $21, $25) ON CONFLICT ON CONSTRAINT payouts_key DO "
            "NOTHING "
            "RETURNING payout_id) "
            "INSERT INTO payout_events (payout_id, from_state, to_state, why, "
            "who, time_us) SELECT payout_id, $22, $5, $23, $24, $18 FROM "
            "inserted RETURNING payout_id",
            {payout.payout_id,
             registration,
             payout.request_id,
             request.fingerprint,
             Number(payout.state),
             payout.beneficiary.account_number,
             payout.beneficiary.ifsc,
             payout.beneficiary.name,
             payout.beneficiary.email,
             payout.beneficiary.mobile,
             Number(payout.amount_paise),
             Number(static_cast<int>(payout.mode)),
             payout.transaction_id,
             payout.transaction_reference_no,
             payout.upstream_status,
             payout.bank_beneficiary_name,
             StatusColumn(payout.failure),
             Micros(payout.create_time),
             Micros(payout.update_time),
             payout.client,
             impl.owner(),
             Number(PayoutState::kUnspecified),
             CreationReason(payout),
             CreatedBy(payout),
             MetadataColumn(payout.metadata)},
            "recording the payout");
        if (!inserted.ok()) return inserted.status();
        if (inserted->rows() == 0) return existing();
        if (over_max) {
          absl::Status undone = db.Run("ROLLBACK TO SAVEPOINT over_max", {},
                                       "undoing the key check");
          if (!undone.ok()) return undone;
          return *OverMaxPayout(request);
        }
        InsertResult result;
        result.inserted = true;
        return result;
      },
      std::move(done),
      [&impl, payout_id, inserted_state] {
        impl.Doubt(payout_id, inserted_state);
      });
}

namespace {

// Why Apply changed nothing: NOT_FOUND, or ABORTED when the payout is not in
// the expected state, unless the same change was already applied by an
// attempt whose commit went unanswered (then the row as it stands now, as
// done, even if it has moved on since).
absl::StatusOr<StoredPayout> Unapplied(Connection& db,
                                       const std::string& registration,
                                       const PayoutChange& change) {
  absl::StatusOr<StoredPayout> stored =
      SelectByPayoutId(db, registration, change.payout_id);
  if (!stored.ok()) return stored.status();
  const Payout& payout = stored->payout;
  // The change's own event (its move, who and time), wherever it stands
  // among the payout's events: a refresh may have moved the payout on
  // since the unanswered commit.
  if (change.expected_state != change.new_state) {
    absl::StatusOr<Result> own = db.Exec(
        "SELECT 1 FROM payout_events WHERE payout_id = $1 AND "
        "from_state = $2 AND to_state = $3 AND who = $4 AND time_us = $5 "
        "LIMIT 1",
        {change.payout_id, Number(change.expected_state),
         Number(change.new_state), change.who, Micros(change.time)},
        "looking for the change's own event");
    if (!own.ok()) return own.status();
    if (own->rows() == 1) return stored;
  }
  if (payout.state == change.expected_state) {
    if (absl::Status unchanged = CheckUnchangedSince(payout, change);
        !unchanged.ok()) {
      return unchanged;
    }
    // Changed and changed back between the two statements: run again.
    absl::Status again = absl::AbortedError("the payout changed meanwhile");
    again.SetPayload(postgres_internal::kRetryPayload, absl::Cord("state"));
    return again;
  }
  return absl::AbortedError(absl::StrCat(
      "Payout ", payout.payout_id, " is ", PayoutStateName(payout.state),
      ", not ", PayoutStateName(change.expected_state), "; nothing changed."));
}

}  // namespace

void PostgresLedger::Apply(PayoutChange change,
                           Callback<absl::StatusOr<StoredPayout>> done) {
  Impl& impl = *impl_;
  // An approval whose commit got no answer: its caller hears UNAVAILABLE and
  // nothing is sent, so the payout must not stay PENDING.
  absl::AnyInvocable<void()> on_unknown_commit;
  if (change.expected_state == PayoutState::kAwaitingApproval &&
      change.new_state == PayoutState::kPending) {
    on_unknown_commit = [&impl, payout_id = change.payout_id,
                         approved_at = change.time] {
      impl.DoubtApproval(payout_id, approved_at);
    };
  }
  // One statement: the compare-and-set update and its event, committing by
  // itself.
  impl.Submit<StoredPayout>(
      Impl::Mode::kStatements,
      [&impl, change = std::move(change)](
          Connection& db) -> absl::StatusOr<StoredPayout> {
        const std::string& registration = impl.registration();
        // An approval sends, as an insert does (Insert); an outcome is
        // recorded whatever the lease.
        if (change.expected_state == PayoutState::kAwaitingApproval &&
            change.new_state == PayoutState::kPending) {
          if (absl::Status held = impl.LeaseHeld(); !held.ok()) return held;
        }
        Param payout_answer;
        Param status_answer;
        if (!change.raw_answer.empty()) {
          std::string raw = ScrubRegistration(change.raw_answer, registration);
          if (change.answer_kind == PayoutChange::AnswerKind::kPayout) {
            payout_answer = std::move(raw);
          } else if (change.answer_kind == PayoutChange::AnswerKind::kStatus) {
            status_answer = std::move(raw);
          }
        }
        auto flag = [](bool value) -> Param {
          return std::string(value ? "true" : "false");
        };
        static const std::string* const kSql = new std::string(absl::StrCat(
            "WITH updated AS (UPDATE payouts SET state = $4, "
            "transaction_id = COALESCE($5, transaction_id), "
            "transaction_reference_no = COALESCE($6, "
            "transaction_reference_no), "
            "upstream_status = COALESCE($7, upstream_status), "
            "bank_beneficiary_name = COALESCE($8, bank_beneficiary_name), "
            "failure = CASE WHEN $9::boolean THEN $10 ELSE failure END, "
            "response = CASE WHEN $11::boolean THEN $12 ELSE response END, "
            "payout_answer = COALESCE($13, payout_answer), "
            "status_answer = COALESCE($14, status_answer), "
            "update_time_us = $15, "
            // The replica that will send an approved payout owns it.
            "owner = CASE WHEN $4 = 1 THEN $19 ELSE owner END, "
            // Retention counts from the latest move into a final state.
            "final_time_us = CASE WHEN $16::boolean AND state <> $4 THEN $15 "
            "ELSE final_time_us END "
            "WHERE registration = $1 AND payout_id = $2 AND state = $3 "
            "AND ($20::bigint IS NULL OR update_time_us = $20) "
            "RETURNING ",
            kPayoutColumns,
            "), event AS (INSERT INTO payout_events (payout_id, from_state, "
            "to_state, why, who, time_us) SELECT payout_id, $3, $4, $17, $18, "
            // Events are changes of state (see the SQLite ledger's Apply).
            "$15 FROM updated WHERE $3 <> $4) SELECT ",
            kPayoutColumns, " FROM updated"));
        absl::StatusOr<Result> updated = db.Exec(
            *kSql,
            {registration,
             change.payout_id,
             Number(change.expected_state),
             Number(change.new_state),
             change.transaction_id,
             change.transaction_reference_no,
             change.upstream_status,
             change.bank_beneficiary_name,
             flag(change.failure.has_value()),
             change.failure.has_value() ? StatusColumn(*change.failure)
                                        : std::nullopt,
             flag(change.response.has_value()),
             change.response.has_value() ? StatusColumn(*change.response)
                                         : std::nullopt,
             payout_answer,
             status_answer,
             Micros(change.time),
             flag(IsFinal(change.new_state)),
             change.why,
             change.who,
             impl.owner(),
             change.expected_update_time.has_value()
                 ? std::optional<std::string>(
                       Micros(*change.expected_update_time))
                 : std::nullopt},
            "recording a payout change");
        if (!updated.ok()) return updated.status();
        if (updated->rows() == 0) return Unapplied(db, registration, change);
        return ReadPayoutRow(RowView(*updated, 0));
      },
      std::move(done), std::move(on_unknown_commit));
}

void PostgresLedger::Forget(std::string payout_id,
                            Callback<absl::Status> done) {
  Impl& impl = *impl_;
  impl.Submit<bool>(
      Impl::Mode::kStatements,
      [&impl, payout_id = std::move(payout_id)](
          Connection& db) -> absl::StatusOr<bool> {
        // Its events go with it (ON DELETE CASCADE).
        absl::StatusOr<Result> deleted = db.Exec(
            "DELETE FROM payouts WHERE registration = $1 AND payout_id = $2 "
            "AND state = $3 RETURNING payout_id",
            {impl.registration(), payout_id, Number(PayoutState::kPending)},
            "forgetting a payout");
        if (!deleted.ok()) return deleted.status();
        if (deleted->rows() == 1) return true;
        absl::StatusOr<StoredPayout> stored =
            SelectByPayoutId(db, impl.registration(), payout_id);
        if (!stored.ok()) return stored.status();
        return absl::FailedPreconditionError(absl::StrCat(
            "Payout ", payout_id, " is ", PayoutStateName(stored->payout.state),
            "; only a PENDING payout can be forgotten."));
      },
      [done = std::move(done)](absl::StatusOr<bool> forgotten) {
        done(forgotten.status());
      });
}

void PostgresLedger::GetByPayoutId(
    std::string payout_id, Callback<absl::StatusOr<StoredPayout>> done) {
  Impl& impl = *impl_;
  impl.Submit<StoredPayout>(
      Impl::Mode::kStatements,
      [&impl, payout_id = std::move(payout_id)](Connection& db) {
        return SelectByPayoutId(db, impl.registration(), payout_id);
      },
      std::move(done));
}

void PostgresLedger::GetByRequestId(
    std::string client, std::string request_id,
    Callback<absl::StatusOr<StoredPayout>> done) {
  Impl& impl = *impl_;
  impl.Submit<StoredPayout>(
      Impl::Mode::kStatements,
      [&impl, client = std::move(client), request_id = std::move(request_id)](
          Connection& db) -> absl::StatusOr<StoredPayout> {
        absl::StatusOr<std::optional<StoredPayout>> found =
            FindByRequestId(db, impl.registration(), client, request_id);
        if (!found.ok()) return found.status();
        if (!found->has_value()) {
          return aopay::NotFoundError(
              absl::StrCat("Payout with request_id ", request_id));
        }
        return **std::move(found);
      },
      std::move(done));
}

void PostgresLedger::List(ListQuery query,
                          Callback<absl::StatusOr<ListPage>> done) {
  Impl& impl = *impl_;
  impl.Submit<ListPage>(
      Impl::Mode::kStatements,
      [&impl,
       query = std::move(query)](Connection& db) -> absl::StatusOr<ListPage> {
        const uint32_t mask = StateMask(query.states);
        std::optional<std::string> after;
        if (!query.page_token.empty()) {
          absl::StatusOr<std::string> last =
              ParsePageToken(query.page_token, mask);
          if (!last.ok()) return last.status();
          after = *std::move(last);
        }
        const int page_size = query.page_size <= 0
                                  ? kDefaultPageSize
                                  : std::min(query.page_size, kMaxPageSize);
        std::string sql = ListSql(query.states, after.has_value(),
                                  query.client.has_value(), '$');
        std::vector<Param> params = {impl.registration(),
                                     Number(page_size + 1)};
        if (after.has_value() || query.client.has_value()) {
          params.push_back(after);
          // libpq numbers parameters $1..$n: a $4 needs a $3 in the text.
          if (!after.has_value()) {
            sql.insert(sql.find(" ORDER BY"), " AND $3::text IS NULL");
          }
        }
        if (query.client.has_value()) params.push_back(query.client);
        absl::StatusOr<Result> rows = db.Exec(sql, params, "listing payouts");
        if (!rows.ok()) return rows.status();
        ListPage page;
        const int count = std::min(rows->rows(), page_size);
        for (int row = 0; row < count; ++row) {
          absl::StatusOr<StoredPayout> stored =
              ReadPayoutRow(RowView(*rows, row));
          if (!stored.ok()) return stored.status();
          page.payouts.push_back(std::move(stored->payout));
        }
        if (rows->rows() > page_size) {
          page.next_page_token =
              MakePageToken(mask, page.payouts.back().payout_id);
        }
        return page;
      },
      std::move(done));
}

void PostgresLedger::Events(
    std::string payout_id,
    Callback<absl::StatusOr<std::vector<PayoutEvent>>> done) {
  Impl& impl = *impl_;
  impl.Submit<std::vector<PayoutEvent>>(
      Impl::Mode::kStatements,
      [&impl, payout_id = std::move(payout_id)](
          Connection& db) -> absl::StatusOr<std::vector<PayoutEvent>> {
        // One statement, so that the payout and its events are one snapshot.
        absl::StatusOr<Result> rows = db.Exec(
            "SELECT e.id, e.from_state, e.to_state, e.why, e.who, e.time_us "
            "FROM payouts p LEFT JOIN payout_events e "
            "ON e.payout_id = p.payout_id "
            "WHERE p.registration = $1 AND p.payout_id = $2 ORDER BY e.id",
            {impl.registration(), payout_id}, "reading payout events");
        if (!rows.ok()) return rows.status();
        if (rows->rows() == 0) {
          return aopay::NotFoundError(absl::StrCat("Payout ", payout_id));
        }
        std::vector<PayoutEvent> events;
        for (int row = 0; row < rows->rows(); ++row) {
          if (rows->IsNull(row, 0)) continue;  // a payout without events
          const int64_t from = rows->Int(row, 1);
          const int64_t to = rows->Int(row, 2);
          if (!IsKnownState(from) || !IsKnownState(to)) {
            return RowError(payout_id, "an event with an unknown state");
          }
          PayoutEvent event;
          event.payout_id = payout_id;
          event.from = static_cast<PayoutState>(from);
          event.to = static_cast<PayoutState>(to);
          event.why = rows->Text(row, 3);
          event.who = rows->Text(row, 4);
          event.time = absl::FromUnixMicros(rows->Int(row, 5));
          events.push_back(std::move(event));
        }
        return events;
      },
      std::move(done));
}

void PostgresLedger::EventsAfter(int64_t after, int limit,
                                 Callback<absl::StatusOr<EventBatch>> done) {
  Impl& impl = *impl_;
  impl.Submit<EventBatch>(
      Impl::Mode::kStatements,
      [&impl, after, limit](Connection& db) -> absl::StatusOr<EventBatch> {
        // Events committed since the last sequencing get positions first, so
        // a watcher of this replica sees its own changes at once, unless
        // another replica is sequencing now (then within the second the
        // maintenance threads take to sequence again).
        absl::StatusOr<int64_t> sequenced = SequenceEvents(db);
        if (!sequenced.ok()) return sequenced.status();
        EventBatch batch;
        batch.last = after;
        // Three statements, in this order. The head before the page: every
        // position up to it is visible to the page's read. The pruning mark
        // after it: a prune that committed before the page was read (and
        // took events after the cursor with it) is seen, and the cursor has
        // expired; one that came later leaves the page whole.
        absl::StatusOr<Result> head =
            db.Exec("SELECT last FROM event_sequencer", {}, "reading events");
        if (!head.ok()) return head.status();
        batch.head = head->Int(0, 0);
        static const std::string* const kSql = new std::string(absl::StrCat(
            "SELECT ", WatchedEventColumns(), " FROM event_positions ep ",
            "JOIN payout_events e ON e.id = ep.event_id "
            "JOIN payouts p ON p.payout_id = e.payout_id "
            "WHERE p.registration = $1 AND ep.position > $2 "
            "ORDER BY ep.position LIMIT $3"));
        absl::StatusOr<Result> rows =
            db.Exec(*kSql, {impl.registration(), Number(after), Number(limit)},
                    "reading events");
        if (!rows.ok()) return rows.status();
        absl::StatusOr<Result> pruned = db.Exec(
            "SELECT COALESCE(max(value::bigint), 0) FROM ledger_meta "
            "WHERE key = 'events_pruned_through'",
            {}, "reading events");
        if (!pruned.ok()) return pruned.status();
        if (after < pruned->Int(0, 0)) {
          batch.expired = true;
          return batch;
        }
        for (int row = 0; row < rows->rows(); ++row) {
          absl::StatusOr<WatchedEvent> watched =
              ledger_internal::ReadWatchedEvent(RowView(*rows, row));
          if (!watched.ok()) return watched.status();
          batch.last = watched->cursor;
          batch.events.push_back(*std::move(watched));
        }
        return batch;
      },
      std::move(done));
}

void PostgresLedger::OutboxDue(
    absl::Time now, int limit,
    Callback<absl::StatusOr<std::vector<OutboxEvent>>> done) {
  Impl& impl = *impl_;
  // Only the replica holding the webhook lock sends; on the others nothing
  // is ever due (their sender idles, and takes over with the lock).
  const bool sender = impl.sender();
  const int64_t sender_pid = impl.sender_pid();
  impl.Submit<std::vector<OutboxEvent>>(
      Impl::Mode::kStatements,
      [&impl, now, limit, sender,
       sender_pid](Connection& db) -> absl::StatusOr<std::vector<OutboxEvent>> {
        std::vector<OutboxEvent> due;
        if (!sender) return due;
        // Events committed since the last sequencing get their positions
        // now, not at the next maintenance tick.
        absl::StatusOr<int64_t> sequenced = SequenceEvents(db);
        if (!sequenced.ok()) return sequenced.status();
        // Each payout's oldest queued event, once it has its watch position
        // (its cursor, the Payout-Event-Id): in order per payout. Only while
        // the webhook lock is still this replica's: once its maintenance
        // connection is gone (and another replica may hold the lock), it
        // takes nothing more, even before its next heartbeat notices.
        static const std::string* const kSql = new std::string(absl::StrCat(
            "SELECT ", WatchedEventColumns(),
            ", o.attempts, o.enqueued_us FROM webhook_outbox o "
            "JOIN payout_events e ON e.id = o.event_id "
            "JOIN event_positions ep ON ep.event_id = o.event_id "
            "JOIN payouts p ON p.payout_id = o.payout_id "
            "WHERE p.registration = $1 AND o.next_attempt_us <= $2 "
            "AND o.event_id = (SELECT min(event_id) FROM webhook_outbox "
            "WHERE payout_id = o.payout_id) AND EXISTS (SELECT 1 FROM "
            "pg_locks WHERE locktype = 'advisory' AND classid = $4 AND "
            "objid = $5 AND objsubid = 2 AND pid = $6 AND granted) "
            "ORDER BY o.event_id LIMIT $3"));
        absl::StatusOr<Result> rows = db.Exec(
            *kSql,
            {impl.registration(), Micros(now), Number(limit),
             Number(kLockSpace), Number(kWebhookLock), Number(sender_pid)},
            "reading the webhook outbox");
        if (!rows.ok()) return rows.status();
        constexpr int kAttempts = kWatchedEventColumns;  // the outbox's own
        for (int row = 0; row < rows->rows(); ++row) {
          absl::StatusOr<WatchedEvent> watched =
              ledger_internal::ReadWatchedEvent(RowView(*rows, row));
          if (!watched.ok()) return watched.status();
          OutboxEvent& event = due.emplace_back();
          event.watched = *std::move(watched);
          event.attempts = static_cast<int>(rows->Int(row, kAttempts));
          event.enqueued = absl::FromUnixMicros(rows->Int(row, kAttempts + 1));
        }
        return due;
      },
      std::move(done));
}

void PostgresLedger::OutboxSettle(int64_t cursor,
                                  std::optional<absl::Time> retry_at,
                                  Callback<absl::Status> done) {
  impl_->Submit<bool>(
      Impl::Mode::kStatements,
      [cursor, retry_at](Connection& db) -> absl::StatusOr<bool> {
        // The cursor is the event's watch position.
        absl::Status settled =
            retry_at.has_value()
                ? db.Run(
                      "UPDATE webhook_outbox SET attempts = attempts + 1, "
                      "next_attempt_us = $2 WHERE event_id = (SELECT "
                      "event_id FROM event_positions WHERE position = $1)",
                      {Number(cursor), Micros(*retry_at)},
                      "scheduling a webhook retry")
                : db.Run(
                      "DELETE FROM webhook_outbox WHERE event_id = (SELECT "
                      "event_id FROM event_positions WHERE position = $1)",
                      {Number(cursor)}, "settling a webhook");
        if (!settled.ok()) return settled;
        return true;
      },
      [done = std::move(done)](absl::StatusOr<bool> settled) {
        done(settled.status());
      });
}

void PostgresLedger::OutboxWaiting(
    Callback<absl::StatusOr<OutboxBacklog>> done) {
  Impl& impl = *impl_;
  impl.Submit<OutboxBacklog>(
      Impl::Mode::kStatements,
      [&impl](Connection& db) -> absl::StatusOr<OutboxBacklog> {
        absl::StatusOr<Result> rows = db.Exec(
            "SELECT count(*), COALESCE(min(o.enqueued_us), 0) FROM "
            "webhook_outbox o JOIN payouts p ON p.payout_id = o.payout_id "
            "WHERE p.registration = $1",
            {impl.registration()}, "reading the webhook outbox");
        if (!rows.ok()) return rows.status();
        OutboxBacklog backlog;
        backlog.events = rows->Int(0, 0);
        if (backlog.events > 0) {
          backlog.oldest = absl::FromUnixMicros(rows->Int(0, 1));
        }
        return backlog;
      },
      std::move(done));
}

absl::StatusOr<int> PostgresLedger::RecoverPending(absl::Time now) {
  if (!impl_->ready()) return 0;
  Impl& impl = *impl_;
  return impl.SubmitAndWait<int>(
      [&impl, now](Connection& db) { return impl.Sweep(db, now); });
}

void PostgresLedger::Prune(absl::Time cutoff,
                           Callback<absl::StatusOr<int>> done) {
  Impl& impl = *impl_;
  const bool leader = impl.leader();
  impl.Submit<int>(
      Impl::Mode::kStatements,
      [&impl, cutoff, leader](Connection& db) -> absl::StatusOr<int> {
        if (!leader) return 0;
        // Their events go with them (ON DELETE CASCADE); the newest watch
        // position among them is kept, so that a watcher whose cursor is
        // older learns that it cannot resume (CURSOR_EXPIRED). A payout
        // with an event still queued for its position waits for the next
        // prune: a sequencing statement in progress could otherwise give a
        // position this statement's mark does not see (and delete it with
        // the payout), or deadlock with the cascade.
        static const std::string* const kSql = new std::string(absl::StrCat(
            "WITH gone AS (DELETE FROM payouts WHERE registration = $1 AND "
            "state IN (",
            FinalStateNumbers(),
            ") AND final_time_us < $2 AND NOT EXISTS (SELECT 1 FROM "
            "payout_events e JOIN event_queue q ON q.event_id = e.id WHERE "
            "e.payout_id = payouts.payout_id) RETURNING payout_id), "
            "mark AS (INSERT INTO ledger_meta (key, value) "
            "SELECT 'events_pruned_through', max(ep.position)::text "
            "FROM event_positions ep JOIN payout_events e "
            "ON e.id = ep.event_id WHERE e.payout_id IN "
            "(SELECT payout_id FROM gone) HAVING max(ep.position) IS NOT NULL "
            "ON CONFLICT (key) DO UPDATE SET value = GREATEST("
            "ledger_meta.value::bigint, EXCLUDED.value::bigint)::text) "
            "SELECT count(*) FROM gone"));
        absl::StatusOr<Result> removed =
            db.Exec(*kSql, {impl.registration(), Micros(cutoff)},
                    "pruning old payouts");
        if (!removed.ok()) return removed.status();
        return static_cast<int>(removed->Int(0, 0));
      },
      std::move(done));
}

}  // namespace aopay
