// The SQLite ledger's writes: batches, group commit, the probe, and the
// count of running callbacks (see write_queue.h).

#include "server/ledger/sqlite/write_queue.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/errors.h"

namespace aopay::sqlite_internal {
namespace {

// Runs `op` in a savepoint of its own. Non-OK only when the whole
// transaction is lost.
absl::Status RunInSavepoint(Connection& db, WriteOp& op,
                            bool* op_storage_error) {
  absl::Status status = db.Run("SAVEPOINT op", "starting a write");
  if (!status.ok()) return status;
  const absl::Status result = op.Run(db);
  if (!db.InTransaction()) {
    // SQLite rolls the whole transaction back on some errors (I/O, disk
    // full): the writes before this one are gone too.
    return LedgerUnavailableError(
        "SQLite rolled the write transaction back after an error");
  }
  if (result.ok()) return db.Run("RELEASE op", "finishing a write");
  if (result.code() == absl::StatusCode::kUnavailable) {
    *op_storage_error = true;
  }
  status = db.Run("ROLLBACK TO op", "undoing a failed write");
  if (!status.ok()) return status;
  return db.Run("RELEASE op", "undoing a failed write");
}

}  // namespace

size_t CommitPacer::Target() const {
  if (delay_ <= absl::ZeroDuration()) return 0;
  const double writes_per_second = WritesPerSecond();
  if (writes_per_second < kMinWritesPerSecond) return 0;
  const double expected = writes_per_second * absl::ToDoubleSeconds(delay_);
  if (expected < kMinSiblings) return 0;
  return std::min(max_batch_, static_cast<size_t>(std::lround(expected)));
}

absl::Duration CommitPacer::QuietGap() const {
  const double writes_per_second = WritesPerSecond();
  if (writes_per_second <= 0) return delay_;
  return std::min(delay_,
                  std::max(delay_ * kMinQuietGapOfDelay,
                           absl::Seconds(kQuietGaps / writes_per_second)));
}

void CommitPacer::Took(size_t writes, absl::Time now) {
  if (++window_batches_ >= kCallWindowBatches) {
    previous_calls_peak_ = std::exchange(calls_peak_, 0);
    window_batches_ = 0;
  }
  const absl::Time last = std::exchange(last_take_, now);
  if (last == absl::InfinitePast()) return;
  // An idle gap of more than a second says nothing about the next writes.
  const double seconds =
      std::clamp(absl::ToDoubleSeconds(now - last), 1e-6, 1.0);
  // Moving averages of the writes and of the time between batches, a
  // quarter of each new sample: follows a change of load within a few
  // batches, without jumping at one burst. Their ratio is the rate; an
  // average of each batch's own rate would read an uneven stream (a batch
  // right after another, then a long gap) as several times faster than it
  // is.
  if (seconds >= 1.0 || mean_seconds_ == 0) {
    mean_writes_ = static_cast<double>(writes);
    mean_seconds_ = seconds;
  } else {
    mean_writes_ = 0.75 * mean_writes_ + 0.25 * static_cast<double>(writes);
    mean_seconds_ = 0.75 * mean_seconds_ + 0.25 * seconds;
  }
}

double CommitPacer::WritesPerSecond() const {
  return mean_seconds_ > 0 ? mean_writes_ / mean_seconds_ : 0;
}

void CommitPacer::SawCalls(size_t calls) {
  calls_peak_ = std::max(calls_peak_, calls);
}

bool CommitPacer::EveryCallerQueued(size_t queued, size_t calls) const {
  return calls > 0 && queued >= calls &&
         calls >= std::max(calls_peak_, previous_calls_peak_);
}

WriteBatch TakeBatch(std::deque<std::unique_ptr<WriteOp>>& queue,
                     size_t max_batch) {
  const size_t n = std::min(queue.size(), std::max<size_t>(max_batch, 1));
  WriteBatch batch;
  batch.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    batch.push_back(std::move(queue.front()));
    queue.pop_front();
  }
  return batch;
}

std::unique_ptr<WriteOp> ProbeOp() {
  return std::make_unique<TypedWriteOp<bool>>(
      [](Connection& db) -> absl::StatusOr<bool> {
        absl::StatusOr<Statement> probe = db.Prepare(
            "INSERT INTO ledger_meta (key, value) VALUES ('probe_time_us', "
            "?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            "probing the ledger");
        if (!probe.ok()) return probe.status();
        probe->Bind(1, absl::StrCat(absl::ToUnixMicros(absl::Now())));
        if (absl::Status run = probe->Run(); !run.ok()) return run;
        return true;
      },
      [](absl::StatusOr<bool>) {});
}

absl::Status CommitBatch(Connection& db, const WriteBatch& batch,
                         bool* op_storage_error) {
  absl::Status outcome =
      db.Run("BEGIN IMMEDIATE", "starting a write transaction");
  for (const std::unique_ptr<WriteOp>& op : batch) {
    if (!outcome.ok()) break;
    outcome = RunInSavepoint(db, *op, op_storage_error);
  }
  if (outcome.ok()) {
    outcome = db.Run("COMMIT", "committing");
  }
  if (!outcome.ok()) return AbandonBatch(db, std::move(outcome));
  return outcome;
}

absl::Status AbandonBatch(Connection& db, absl::Status cause) {
  // Only UNAVAILABLE reaches the callers: whatever the SQLite error, nothing
  // of the batch was recorded.
  if (cause.code() != absl::StatusCode::kUnavailable) {
    cause = LedgerUnavailableError(cause.message());
  }
  if (db.InTransaction()) {
    // On an I/O error SQLite may already have rolled back; when it has not,
    // this must, or the next BEGIN fails too.
    (void)db.Run("ROLLBACK", "rolling back");
  }
  return cause;
}

}  // namespace aopay::sqlite_internal
