#ifndef AOPAY_SERVER_LEDGER_SQLITE_WRITE_QUEUE_H_
#define AOPAY_SERVER_LEDGER_SQLITE_WRITE_QUEUE_H_

// The SQLite ledger's writes: a queued write (WriteOp), taking a batch off
// the queue, group commit of one batch (one transaction, a savepoint per
// write), the probe written while writes fail, and the count of callbacks
// still running. The queue itself, its mutex and the writer and reader
// threads belong to SqliteLedger::Impl (sqlite_ledger.cc), which shares
// them with reads and Close(). Internal to the ledger.

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
