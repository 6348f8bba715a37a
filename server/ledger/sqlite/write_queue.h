#ifndef AOPAY_SERVER_LEDGER_SQLITE_WRITE_QUEUE_H_
#define AOPAY_SERVER_LEDGER_SQLITE_WRITE_QUEUE_H_

// The SQLite ledger's writes: a queued write (WriteOp), taking a batch off
// the queue, group commit of one batch (one transaction, a savepoint per
// write), the probe written while writes fail, and the count of callbacks
// still running. The queue itself, its mutex and the writer and reader
// threads belong to SqliteLedger::Impl (sqlite_ledger.cc), which shares
// them with reads and Close(). Internal to the ledger.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/ledger/ledger.h"
#include "server/ledger/sqlite/handle.h"

namespace aopay::sqlite_internal {

// A write: runs inside the batch transaction (in its own savepoint), then is
// finished after the commit.
class WriteOp {
 public:
  virtual ~WriteOp() = default;
  // Non-OK rolls back this op's savepoint only.
  virtual absl::Status Run(Connection& db) = 0;
  // `batch`: the batch's outcome; when not OK the op failed with it.
  virtual void Finish(const absl::Status& batch) = 0;
};

template <typename T>
class TypedWriteOp final : public WriteOp {
 public:
  using Body = std::function<absl::StatusOr<T>(Connection&)>;
  TypedWriteOp(Body body, Ledger::Callback<absl::StatusOr<T>> done)
      : body_(std::move(body)), done_(std::move(done)) {}

  absl::Status Run(Connection& db) override {
    result_ = body_(db);
    return result_.status();
  }
  void Finish(const absl::Status& batch) override {
    if (batch.ok()) {
      done_(std::move(result_));
    } else {
      done_(batch);
    }
  }

 private:
  Body body_;
  Ledger::Callback<absl::StatusOr<T>> done_;
  absl::StatusOr<T> result_ = absl::UnknownError("not run");
};

using WriteBatch = std::vector<std::unique_ptr<WriteOp>>;

// Takes the oldest writes off `queue`, at most max_batch (at least one).
WriteBatch TakeBatch(std::deque<std::unique_ptr<WriteOp>>& queue,
                     size_t max_batch);

// How long a group commit waits for more writes: PostgreSQL's commit_delay
// with commit_siblings, sized from the rate writes arrive at. Each commit
// costs about as much as a dozen writes (the WAL frames of every B-tree it
// touched, their checksums, the fsync, and a wake-up of the executor and
// the AOPay client for its callbacks), so at a steady stream of writes a
// commit that waits a little for the next few costs far less per write. A
// gateway that is far from busy never waits: below kMinWritesPerSecond, or
// when fewer than kMinSiblings more writes are expected within the delay,
// the pacer says commit now. Callers that each wait for their answer (a
// closed loop) are not kept waiting either: once every call in flight has a
// write queued, nothing more can come before this commit answers them
// (EveryCallerQueued). Calls waiting on AOPay are not counted: they write
// nothing until it answers, however long that takes, so one slow AOPay call
// does not hold every other caller's commits. With the count, a lone caller
// is such a loop of one.
//
// Not thread-safe: the writer thread owns it. Times are passed in, so that
// tests drive it without a clock.
class CommitPacer {
 public:
  // Writes expected within the delay below which the commit does not wait.
  static constexpr double kMinSiblings = 4;
  // Writes a second below which the commit does not wait: the gateway is far
  // from busy (below ~1,000 payouts/s), so a wait would cost callers latency
  // and, in a closed loop whose calls are at AOPay, throughput, to save CPU
  // nobody needs.
  static constexpr double kMinWritesPerSecond = 2000;
  // Mean gaps between writes without a write that end the wait.
  static constexpr double kQuietGaps = 3;
  // ... but never less than this share of the delay. Each look for a quiet
  // gap is a wake-up of the writer: at a busy stream three mean gaps are
  // under a millisecond, and the writer woke that often to find the stream
  // still flowing (0.6 context switches a payout at 2,000 payouts/s; 0.18
  // with this floor, and about a tenth less of the gateway's CPU per
  // payout). Callers that each wait for their answer are let go by
  // EveryCallerQueued, not by the quiet gap.
  static constexpr double kMinQuietGapOfDelay = 0.25;

  // delay: the longest a commit waits for more writes (zero: never waits).
  CommitPacer(absl::Duration delay, size_t max_batch)
      : delay_(delay), max_batch_(std::max<size_t>(max_batch, 1)) {}

  absl::Duration delay() const { return delay_; }

  // How many queued writes are worth waiting for, for at most delay(),
  // before committing: the writes expected to arrive within the delay at
  // the recent rate, at most max_batch. A target at or below what is
  // already queued means commit now.
  size_t Target() const;

  // How long without a new write ends the wait early: a few mean gaps
  // between writes at the recent rate, at least kMinQuietGapOfDelay of the
  // delay, at most the delay. When the writes stop (the stream has paused,
  // or every caller is waiting for this commit), waiting on would only slow
  // them.
  absl::Duration QuietGap() const;

  // The writer took a batch of `writes` at `now`: updates the arrival rate
  // (moving averages of the writes a batch and of the time between batches).
  void Took(size_t writes, absl::Time now);

  // A write was queued while the gateway had `calls` in flight that may
  // still write (SqliteLedgerOptions::calls_in_flight). The most seen over
  // the last kCallWindowBatches to 2 * kCallWindowBatches batches is how
  // many callers there are.
  void SawCalls(size_t calls);

  // The wait is over: every call in flight already has a write among the
  // `queued` ones and they are as many as the most seen recently. Callers
  // that each wait for their answer (a closed loop, whatever their number)
  // send nothing more until this commit answers them, so waiting on would
  // only delay them. Callers arriving on their own (an open stream) are
  // rarely all queued at their recent peak: at a steady stream those just
  // answered have left, and newcomers keep arriving.
  bool EveryCallerQueued(size_t queued, size_t calls) const;

  static constexpr int kCallWindowBatches = 32;

 private:
  // Writes a second lately: their ratio (zero before the first gap).
  double WritesPerSecond() const;

  const absl::Duration delay_;
  const size_t max_batch_;
  absl::Time last_take_ = absl::InfinitePast();
  // Moving averages of a batch's writes and of the time between batches;
  // zero until a gap between two batches was seen.
  double mean_writes_ = 0;
  double mean_seconds_ = 0;
  size_t calls_peak_ = 0;           // most calls seen in this window
  size_t previous_calls_peak_ = 0;  // ... and in the one before
  int window_batches_ = 0;
};

// A write that changes no payout: records when the ledger last wrote.
std::unique_ptr<WriteOp> ProbeOp();

// Group commit of `batch` on `db`: BEGIN IMMEDIATE, each write in a
// savepoint of its own (a write that fails rolls back only its own), COMMIT.
// OK: the batch committed. Otherwise what AbandonBatch returns, and nothing
// of the batch was recorded. Sets *op_storage_error when a write failed with
// UNAVAILABLE.
absl::Status CommitBatch(Connection& db, const WriteBatch& batch,
                         bool* op_storage_error);

// A batch that failed with `cause`: rolls back the transaction if SQLite has
// not already, and returns `cause` as UNAVAILABLE (LEDGER_UNAVAILABLE).
absl::Status AbandonBatch(Connection& db, absl::Status cause);

}  // namespace aopay::sqlite_internal

#endif  // AOPAY_SERVER_LEDGER_SQLITE_WRITE_QUEUE_H_
