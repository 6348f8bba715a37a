#ifndef AOPAY_SERVER_LEDGER_SQLITE_SQLITE_LEDGER_H_
#define AOPAY_SERVER_LEDGER_SQLITE_SQLITE_LEDGER_H_

// The durable payout ledger on one SQLite file (WAL mode).
//
// Writes run on one writer thread with group commit: every queued write (up
// to max_batch) goes into one BEGIN IMMEDIATE ... COMMIT, each in its own
// SAVEPOINT so that one write's failure (NOT_FOUND, ABORTED, ...) does not
// undo the others; the batch is fsynced once and only then are its callbacks
// handed, as one task, to the executor, which runs them in submission order.
// The writer thread only writes: it goes on to the next batch while the
// callbacks of the last one run. A failed COMMIT fails every write of the
// batch with UNAVAILABLE (reason LEDGER_UNAVAILABLE) and makes Healthy()
// false until a later batch commits.
//
// Reads run on a separate reader thread with its own read-only connection,
// their callbacks on the executor too: they see every write whose callback
// has run, and keep working while writes fail.
//
// Every row is scoped to the registration the ledger was opened for: the
// idempotency key is (registration, client, request_id), and reads, changes,
// recovery and pruning see only that registration's payouts.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/limits.h"
#include "server/executor/executor.h"
#include "server/ledger/ledger.h"

namespace aopay {

struct SqliteLedgerOptions {
  // The database file. Its directory must exist and be writable (SQLite puts
  // the -wal and -shm files beside it). Created when missing.
  std::string path;
  // The merchant's AOPay registration: part of every row's key. Stored only
  // in the registration column; it is scrubbed from raw AOPay answers.
  std::string registration_id;
  // true: synchronous=FULL, every commit is fsynced before its callbacks run.
  // false: synchronous=OFF, for benchmarks only (a crash can lose payouts).
  bool durable = true;
  // Most writes committed in one transaction.
  size_t max_batch = 512;
  // The longest a group commit waits for more writes while they arrive in a
  // steady stream (zero: commits at once); a gateway far from busy never
  // waits. See CommitPacer in write_queue.h.
  absl::Duration commit_delay = kDefaultCommitDelay;
  // The gateway's count of calls in flight that may write soon (payout
  // creations, approvals and refreshes, less those waiting on AOPay, which
  // write nothing until it answers); must outlive the ledger. A group
  // commit stops waiting once every one of them has a write queued (see
  // CommitPacer). nullptr: unknown, the wait ends only as the pacer's rate
  // says.
  const std::atomic<size_t>* calls_in_flight = nullptr;
  // Runs every callback; must outlive the ledger (or at least its Close()).
  // nullptr: the ledger runs them on a thread of its own.
  Executor* executor = nullptr;
  // Name of a registered sqlite3_vfs to open the database with; "" for the
  // default. Tests register fault-injecting VFSes.
  std::string vfs;
  // Webhooks are on: every event is also put in the webhook outbox, in its
  // own transaction. Off: events are not queued (those already queued stay
  // until delivered or retention deletes their payout).
  bool webhooks = false;
  // How long a connection waits for a lock held by another connection.
  absl::Duration busy_timeout = absl::Seconds(5);
};

// Thread-safe, as Ledger promises. Owns two threads (writer, reader) and two
// connections. Callbacks run on options.executor (or the ledger's own
// callback thread), never on the writer or reader thread; the callbacks of
// one group commit run in submission order, one after the other, while
// those of different commits and of reads may run at the same time on an
// executor with several threads. A call made after Close() gets UNAVAILABLE
// through its callback, run on a short-lived thread the ledger joins when
// destroyed.
class SqliteLedger final : public Ledger {
 public:
  // The schema version this code writes. A database with a newer version is
  // refused.
  static constexpr int kSchemaVersion = 8;

  // Opens (creating and migrating when needed) the database and starts the
  // threads. Errors, each with a one-line message: FAILED_PRECONDITION for a
  // missing or unwritable directory or a file that is not a ledger (corrupt,
  // another application's, a newer schema); UNAVAILABLE when the file is
  // locked or I/O fails (a migration that fails is rolled back and reported
  // with the code of its cause); INVALID_ARGUMENT for incomplete options.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<SqliteLedger>> Open(
      SqliteLedgerOptions options);

  // Calls Close(), then joins the threads that answered calls made after it.
  // Must not run inside a ledger callback.
  ~SqliteLedger() override;

  SqliteLedger(const SqliteLedger&) = delete;
  SqliteLedger& operator=(const SqliteLedger&) = delete;

  // The key check, the daily sum and the insert run on the writer thread in
  // the batch's transaction: the sum sees every write before it, committed
  // or earlier in the same batch.
  void Insert(InsertRequest request,
              Callback<absl::StatusOr<InsertResult>> done) override;
  void Apply(PayoutChange change,
             Callback<absl::StatusOr<StoredPayout>> done) override;
  void Forget(std::string payout_id, Callback<absl::Status> done) override;
  void GetByPayoutId(std::string payout_id,
                     Callback<absl::StatusOr<StoredPayout>> done) override;
  void GetByRequestId(std::string client, std::string request_id,
                      Callback<absl::StatusOr<StoredPayout>> done) override;
  // Page tokens hold the last payout id and the state filter; they survive a
  // restart. The client filter is not in the token: each page takes it from
  // its query. The page size is bounded by the caller (common/payout.h).
  void List(ListQuery query, Callback<absl::StatusOr<ListPage>> done) override;
  void Events(std::string payout_id,
              Callback<absl::StatusOr<std::vector<PayoutEvent>>> done) override;
  // The cursor is the event's id: one writer commits them in id order.
  void EventsAfter(int64_t after, int limit,
                   Callback<absl::StatusOr<EventBatch>> done) override;
  void OutboxDue(
      absl::Time now, int limit,
      Callback<absl::StatusOr<std::vector<OutboxEvent>>> done) override;
  void OutboxSettle(int64_t cursor, std::optional<absl::Time> retry_at,
                    Callback<absl::Status> done) override;
  void OutboxWaiting(Callback<absl::StatusOr<OutboxBacklog>> done) override;
  // Also sets each recovered payout's stored response to DEADLINE_EXCEEDED
  // (reason OUTCOME_UNKNOWN), which retries of its request id then get.
  [[nodiscard]] absl::StatusOr<int> RecoverPending(absl::Time now) override;
  void Prune(absl::Time cutoff, Callback<absl::StatusOr<int>> done) override;
  bool Healthy() const override;

  struct Stats {
    int64_t transactions = 0;  // write transactions attempted (batches)
    int64_t writes = 0;        // write operations run in them
  };
  Stats stats() const;

  // Stops accepting calls, finishes every queued read and write, waits until
  // their callbacks have returned, and joins the threads. Idempotent. Must
  // not be called from a ledger callback.
  void Close() override;

 private:
  class Impl;

  explicit SqliteLedger(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace aopay

#endif  // AOPAY_SERVER_LEDGER_SQLITE_SQLITE_LEDGER_H_
