// SqliteLedger: its threads, the queues they serve, and each Ledger call's
// reads and writes. The pieces it is built from live beside it: handle.h
// (SQLite handles, opening the file), schema.h (migrations, the
// registration), rows.h (payout rows and events) and write_queue.h (writes
// and group commit); what every ledger stores the same way (rows, page
// tokens) is in ../shared/row_format.h.

#include "server/ledger/sqlite/sqlite_ledger.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/errors.h"
#include "common/payout.h"
#include "common/redact.h"
#include "common/thread_name.h"
#include "server/executor/executor.h"
#include "server/ledger/ledger.h"
#include "server/ledger/shared/row_format.h"
#include "server/ledger/sqlite/handle.h"
#include "server/ledger/sqlite/rows.h"
#include "server/ledger/sqlite/schema.h"
#include "server/ledger/sqlite/write_queue.h"

namespace aopay {

using ledger_internal::CheckInsert;
using ledger_internal::CheckUnchangedSince;
using ledger_internal::CreatedBy;
using ledger_internal::CreationReason;
using ledger_internal::FinalStateNumbers;
using ledger_internal::IsKnownState;
using ledger_internal::kWatchedEventColumns;
using ledger_internal::ListSql;
using ledger_internal::MakePageToken;
using ledger_internal::MetadataColumn;
using ledger_internal::OverDailyLimit;
using ledger_internal::OverMaxPayout;
using ledger_internal::ParsePageToken;
using ledger_internal::PayoutColumnsOf;
using ledger_internal::ReadPayoutRow;
using ledger_internal::ReadWatchedEvent;
using ledger_internal::RowError;
using ledger_internal::StateMask;
using ledger_internal::StatusColumn;
using sqlite_internal::AbandonBatch;
using sqlite_internal::AppendEvent;
using sqlite_internal::CheckDirectory;
using sqlite_internal::ClaimRegistration;
using sqlite_internal::CommitBatch;
using sqlite_internal::CommitPacer;
using sqlite_internal::Configure;
using sqlite_internal::Connection;
using sqlite_internal::DailySpent;
using sqlite_internal::DbHandle;
using sqlite_internal::FileIdentity;
using sqlite_internal::FindByRequestId;
using sqlite_internal::LedgerLock;
using sqlite_internal::Migrate;
using sqlite_internal::OpenConnection;
using sqlite_internal::ProbeOp;
using sqlite_internal::QueryText;
using sqlite_internal::SelectByPayoutId;
using sqlite_internal::SelectByRequestId;
using sqlite_internal::Statement;
using sqlite_internal::TakeBatch;
using sqlite_internal::TypedWriteOp;
using sqlite_internal::WriteBatch;
using sqlite_internal::WriteOp;

namespace {

absl::Status ClosedError() {
  return LedgerUnavailableError("the ledger is closed");
}

// Steps `select`, whose columns start as ReadWatchedEvent reads them, and
// hands `each` every row's event while the row is current.
absl::Status ReadWatchedEvents(Statement& select,
                               const std::function<void(WatchedEvent)>& each) {
  for (;;) {
    absl::StatusOr<bool> row = select.Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
    absl::StatusOr<WatchedEvent> watched = ReadWatchedEvent(select);
    if (!watched.ok()) return watched.status();
    each(*std::move(watched));
  }
}

}  // namespace

// ---------------------------------------------------------------------------

class SqliteLedger::Impl {
 public:
  Impl(SqliteLedgerOptions options, LedgerLock lock, FileIdentity file,
       Connection writer, Connection reader)
      : options_(std::move(options)),
        file_(file),
        lock_(std::move(lock)),
        writer_db_(std::move(writer)),
        reader_db_(std::move(reader)),
        own_executor_(options_.executor == nullptr
                          ? std::make_unique<ThreadPool>(1, "ledger-cb")
                          : nullptr),
        executor_(options_.executor != nullptr ? *options_.executor
                                               : *own_executor_) {
    writer_thread_ = std::thread([this] {
      NameThisThread("ledger-writer");
      WriterLoop();
    });
    reader_thread_ = std::thread([this] {
      NameThisThread("ledger-reader");
      ReaderLoop();
    });
  }

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

  void Close() {
    absl::MutexLock close_lock(&close_mu_);
    {
      absl::MutexLock lock(&mu_);
      closing_ = true;
    }
    if (writer_thread_.joinable()) writer_thread_.join();
    if (reader_thread_.joinable()) reader_thread_.join();
    callbacks_->WaitForZero();
    if (own_executor_ != nullptr) own_executor_->Stop();
    // Their threads are gone. The reader first, so that the writer's close
    // can checkpoint the WAL; the lock only after both (LedgerLock).
    reader_db_.Close();
    writer_db_.Close();
    lock_.Release();
  }

  template <typename T>
  void Write(typename TypedWriteOp<T>::Body body,
             Callback<absl::StatusOr<T>> done) {
    auto op =
        std::make_unique<TypedWriteOp<T>>(std::move(body), std::move(done));
    absl::MutexLock lock(&mu_);
    if (!closing_) {
      writes_.push_back(std::move(op));
      if (options_.calls_in_flight != nullptr) {
        // Read here, under mu_, so that BatchReady depends only on state
        // mu_ guards (absl::Condition's rule): its caller queues a write.
        calls_in_flight_ = options_.calls_in_flight->load();
        pacer_.SawCalls(calls_in_flight_);
      }
      return;
    }
    std::shared_ptr<WriteOp> rejected = std::move(op);
    RunLateLocked([rejected] { rejected->Finish(ClosedError()); });
  }

  template <typename T>
  void Read(std::function<absl::StatusOr<T>(Connection&)> body,
            Callback<absl::StatusOr<T>> done) {
    absl::MutexLock lock(&mu_);
    if (!closing_) {
      reads_.push_back([this, body = std::move(body),
                        done = std::move(done)](Connection& db) mutable {
        Dispatch([done = std::move(done), result = body(db)]() mutable {
          done(std::move(result));
        });
      });
      return;
    }
    RunLateLocked([done = std::move(done)] { done(ClosedError()); });
  }

  const std::string& registration() const { return options_.registration_id; }
  bool healthy() const { return healthy_.load() && !FileGone(); }
  Stats stats() const {
    return Stats{transactions_.load(), writes_count_.load()};
  }

 private:
  // Hands a callback to the executor: the writer and reader threads only
  // read and write.
  void Dispatch(Executor::Task task) {
    callbacks_->Add();
    executor_.Run([callbacks = callbacks_, task = std::move(task)]() mutable {
      std::move(task)();
      callbacks->Done();
    });
  }

  // Calls after Close() are answered on a thread of their own: callbacks
  // never run inside the call, and the ledger's threads are gone.
  void RunLateLocked(std::function<void()> task)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    late_threads_.emplace_back(std::move(task));
  }

  bool WriterHasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closing_ || !writes_.empty();
  }
  bool BatchReady() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closing_ || writes_.size() >= wait_for_ ||
           pacer_.EveryCallerQueued(writes_.size(), calls_in_flight_);
  }
  bool ReaderHasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closing_ || !reads_.empty();
  }

  // True once the file at the ledger's path is not the one it opened
  // (deleted, or replaced). Sticky: only a restart opens the file again.
  bool FileGone() const {
    if (file_gone_.load()) return true;
    absl::StatusOr<FileIdentity> now = FileIdentity::Of(options_.path);
    if (now.ok() && *now == file_) return false;
    file_gone_.store(true);
    return true;
  }

  void WriterLoop() {
    for (;;) {
      WriteBatch batch;
      {
        absl::MutexLock lock(&mu_);
        // While writes fail, a probe every kProbeInterval finds out when the
        // fault has gone even if no caller writes (health NOT_SERVING may be
        // keeping them away).
        const bool probe = !mu_.AwaitWithTimeout(
            absl::Condition(this, &Impl::WriterHasWork),
            healthy_.load() ? absl::InfiniteDuration() : kProbeInterval);
        if (probe) {
          batch.push_back(ProbeOp());
        } else {
          if (writes_.empty()) return;  // closing, and everything is done
          // Group commit: at a steady stream, wait a little for the writes
          // about to arrive (see CommitPacer).
          WaitForSiblings();
          batch = TakeBatch(writes_, options_.max_batch);
          pacer_.Took(batch.size(), absl::Now());
        }
      }
      RunBatch(std::move(batch));
    }
  }

  // Waits, for at most the pacer's delay, until the pacer's target of
  // writes is queued or no write has come for its quiet gap.
  void WaitForSiblings() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    wait_for_ = pacer_.Target();
    const absl::Time deadline = absl::Now() + pacer_.delay();
    const absl::Duration quiet = pacer_.QuietGap();
    size_t seen = writes_.size();
    while (!BatchReady()) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return;
      if (mu_.AwaitWithTimeout(absl::Condition(this, &Impl::BatchReady),
                               std::min(left, quiet)) ||
          writes_.size() == seen) {
        return;
      }
      seen = writes_.size();
    }
  }

  void ReaderLoop() {
    for (;;) {
      absl::AnyInvocable<void(Connection&)> task;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(this, &Impl::ReaderHasWork));
        if (reads_.empty()) return;
        task = std::move(reads_.front());
        reads_.pop_front();
      }
      task(reader_db_);
    }
  }

  // Group commit: one transaction, one fsync, then every callback, in
  // submission order, in one task on the executor.
  void RunBatch(WriteBatch batch) {
    transactions_.fetch_add(1);
    writes_count_.fetch_add(static_cast<int64_t>(batch.size()));
    bool op_storage_error = false;
    absl::Status outcome =
        FileGone()
            ? AbandonBatch(
                  writer_db_,
                  LedgerUnavailableError(
                      "the ledger file was deleted or replaced while the "
                      "gateway ran; nothing more is written until it is "
                      "restarted"))
            : CommitBatch(writer_db_, batch, &op_storage_error);
    healthy_.store(outcome.ok() && !op_storage_error);
    Dispatch([batch = std::move(batch), outcome = std::move(outcome)] {
      for (const std::unique_ptr<WriteOp>& op : batch) op->Finish(outcome);
    });
  }

  static constexpr absl::Duration kProbeInterval = absl::Seconds(1);

  const SqliteLedgerOptions options_;
  const FileIdentity file_;  // the file opened at start-up
  LedgerLock lock_;
  // writer_db_ is used only by the writer thread, reader_db_ only by the
  // reader thread. The reader is declared last so that it closes first and
  // the writer's close can checkpoint the WAL.
  Connection writer_db_;
  Connection reader_db_;

  // Runs the callbacks; own_executor_ when the options name none.
  const std::unique_ptr<ThreadPool> own_executor_;
  Executor& executor_;
  const std::shared_ptr<CallbackCount> callbacks_ =
      std::make_shared<CallbackCount>();

  mutable std::atomic<bool> file_gone_{false};
  std::atomic<bool> healthy_{true};
  std::atomic<int64_t> transactions_{0};
  std::atomic<int64_t> writes_count_{0};

  absl::Mutex close_mu_;  // serializes Close()
  absl::Mutex mu_;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::unique_ptr<WriteOp>> writes_ ABSL_GUARDED_BY(mu_);
  CommitPacer pacer_ ABSL_GUARDED_BY(mu_){options_.commit_delay,
                                          options_.max_batch};
  size_t wait_for_ ABSL_GUARDED_BY(mu_) = 0;  // writes the writer awaits
  // The gateway's calls in flight when the last write was queued.
  size_t calls_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<absl::AnyInvocable<void(Connection&)>> reads_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> late_threads_ ABSL_GUARDED_BY(mu_);

  std::thread writer_thread_;
  std::thread reader_thread_;
};

// ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SqliteLedger>> SqliteLedger::Open(
    SqliteLedgerOptions options) {
  if (options.path.empty() || options.path == ":memory:" ||
      absl::StartsWith(options.path, "file:")) {
    return absl::InvalidArgumentError(
        "the ledger needs the path of a database file");
  }
  if (options.registration_id.empty()) {
    return absl::InvalidArgumentError("the ledger needs a registration id");
  }
  if (!options.vfs.empty() &&
      sqlite3_vfs_find(options.vfs.c_str()) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("no SQLite VFS is registered as \"", options.vfs, "\""));
  }
  if (absl::Status dir = CheckDirectory(options.path); !dir.ok()) return dir;
  absl::StatusOr<LedgerLock> lock = LedgerLock::Acquire(options.path);
  if (!lock.ok()) return lock.status();

  absl::StatusOr<DbHandle> writer_db = OpenConnection(options, false);
  if (!writer_db.ok()) return writer_db.status();
  if (absl::Status configured = Configure(writer_db->get(), options);
      !configured.ok()) {
    return configured;
  }
  Connection writer(*std::move(writer_db));
  if (absl::Status migrated = Migrate(writer, options.path); !migrated.ok()) {
    return migrated;
  }
  if (absl::Status claimed =
          ClaimRegistration(writer, options.path, options.registration_id);
      !claimed.ok()) {
    return claimed;
  }
  // A TEMP trigger lives with this connection only: a gateway started
  // without webhooks queues nothing, whatever an earlier one did.
  if (options.webhooks) {
    if (absl::Status trigger = writer.Run(
            "CREATE TEMP TRIGGER webhook_outbox_enqueue AFTER INSERT ON "
            "main.payout_events BEGIN INSERT INTO webhook_outbox (event_id, "
            "payout_id, next_attempt_us, enqueued_us) VALUES (NEW.id, "
            "NEW.payout_id, NEW.time_us, NEW.time_us); END",
            "turning the webhook outbox on");
        !trigger.ok()) {
      return trigger;
    }
  }

  absl::StatusOr<FileIdentity> file = FileIdentity::Of(options.path);
  if (!file.ok()) {
    return absl::UnavailableError(
        absl::StrCat("ledger ", options.path,
                     ": cannot stat it: ", file.status().message()));
  }

  absl::StatusOr<DbHandle> reader_db = OpenConnection(options, true);
  if (!reader_db.ok()) return reader_db.status();
  absl::StatusOr<std::string> query_only = QueryText(
      reader_db->get(), options.path, "PRAGMA query_only = ON", "query_only");
  if (!query_only.ok()) return query_only.status();
  Connection reader(*std::move(reader_db));

  return std::unique_ptr<SqliteLedger>(new SqliteLedger(
      std::make_unique<Impl>(std::move(options), *std::move(lock), *file,
                             std::move(writer), std::move(reader))));
}

SqliteLedger::SqliteLedger(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

SqliteLedger::~SqliteLedger() = default;

void SqliteLedger::Close() { impl_->Close(); }

bool SqliteLedger::Healthy() const { return impl_->healthy(); }

SqliteLedger::Stats SqliteLedger::stats() const { return impl_->stats(); }

void SqliteLedger::Insert(InsertRequest request,
                          Callback<absl::StatusOr<InsertResult>> done) {
  const std::string& registration = impl_->registration();
  impl_->Write<InsertResult>(
      [&registration, request = std::move(request)](
          Connection& db) -> absl::StatusOr<InsertResult> {
        const Payout& payout = request.payout;
        if (absl::Status valid = CheckInsert(request); !valid.ok()) {
          return valid;
        }
        const std::optional<DailyLimit>& limit = request.daily_limit;
        // A replay wins over the limits: its payout was counted when it was
        // recorded. Every insert queued before this one has run.
        absl::StatusOr<std::optional<StoredPayout>> existing =
            FindByRequestId(db, registration, payout.client, payout.request_id);
        if (!existing.ok()) return existing.status();
        if (existing->has_value()) {
          InsertResult result;
          result.existing = **std::move(existing);
          return result;
        }
        if (std::optional<InsertResult> refused = OverMaxPayout(request)) {
          return *std::move(refused);
        }
        // Counted in the batch's transaction on the writer: every earlier
        // insert, of this batch or a committed one, is in the sum.
        if (limit.has_value()) {
          absl::StatusOr<int64_t> spent =
              DailySpent(db, registration, payout.client, limit->day_start,
                         limit->day_end);
          if (!spent.ok()) return spent.status();
          if (std::optional<InsertResult> refused =
                  OverDailyLimit(*spent, request)) {
            return *std::move(refused);
          }
        }

        absl::StatusOr<Statement> insert = db.Prepare(
            "INSERT INTO payouts (payout_id, registration, request_id, "
            "fingerprint, state, account_number, ifsc, name, email, mobile, "
            "amount_paise, mode, transaction_id, transaction_reference_no, "
            "upstream_status, bank_beneficiary_name, failure, response, "
            "create_time_us, update_time_us, client, metadata) VALUES (?1, ?2, "
            "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, "
            "?17, NULL, "
            "?18, ?19, ?20, ?21)",
            "recording the payout");
        if (!insert.ok()) return insert.status();
        insert->Bind(1, payout.payout_id);
        insert->Bind(2, registration);
        insert->Bind(3, payout.request_id);
        insert->Bind(4, request.fingerprint);
        insert->Bind(5, static_cast<int>(payout.state));
        insert->Bind(6, payout.beneficiary.account_number);
        insert->Bind(7, payout.beneficiary.ifsc);
        insert->Bind(8, payout.beneficiary.name);
        insert->Bind(9, payout.beneficiary.email);
        insert->Bind(10, payout.beneficiary.mobile);
        insert->Bind(11, payout.amount_paise);
        insert->Bind(12, static_cast<int>(payout.mode));
        insert->Bind(13, payout.transaction_id);
        insert->Bind(14, payout.transaction_reference_no);
        insert->Bind(15, payout.upstream_status);
        insert->Bind(16, payout.bank_beneficiary_name);
        insert->Bind(17, StatusColumn(payout.failure));
        insert->Bind(18, absl::ToUnixMicros(payout.create_time));
        insert->Bind(19, absl::ToUnixMicros(payout.update_time));
        insert->Bind(20, payout.client);
        insert->Bind(21, MetadataColumn(payout.metadata));
        if (absl::Status run = insert->Run(); !run.ok()) return run;
        if (absl::Status event = AppendEvent(
                db, payout.payout_id, PayoutState::kUnspecified, payout.state,
                CreationReason(payout), CreatedBy(payout), payout.create_time);
            !event.ok()) {
          return event;
        }
        InsertResult result;
        result.inserted = true;
        return result;
      },
      std::move(done));
}

void SqliteLedger::Apply(PayoutChange change,
                         Callback<absl::StatusOr<StoredPayout>> done) {
  const std::string& registration = impl_->registration();
  impl_->Write<StoredPayout>(
      [&registration, change = std::move(change)](
          Connection& db) -> absl::StatusOr<StoredPayout> {
        absl::StatusOr<StoredPayout> stored =
            SelectByPayoutId(db, registration, change.payout_id);
        if (!stored.ok()) return stored.status();
        Payout& payout = stored->payout;
        if (payout.state != change.expected_state) {
          return absl::AbortedError(absl::StrCat(
              "Payout ", payout.payout_id, " is ",
              PayoutStateName(payout.state), ", not ",
              PayoutStateName(change.expected_state), "; nothing changed."));
        }
        if (absl::Status unchanged = CheckUnchangedSince(payout, change);
            !unchanged.ok()) {
          return unchanged;
        }
        const PayoutState from = payout.state;
        payout.state = change.new_state;
        auto set = [](auto& field, const auto& value) {
          if (value) field = *value;
        };
        set(payout.transaction_id, change.transaction_id);
        set(payout.transaction_reference_no, change.transaction_reference_no);
        set(payout.upstream_status, change.upstream_status);
        set(payout.bank_beneficiary_name, change.bank_beneficiary_name);
        set(payout.failure, change.failure);
        set(stored->response, change.response);
        payout.update_time = change.time;

        std::optional<std::string> payout_answer;
        std::optional<std::string> status_answer;
        if (!change.raw_answer.empty()) {
          std::string raw = ScrubRegistration(change.raw_answer, registration);
          if (change.answer_kind == PayoutChange::AnswerKind::kPayout) {
            payout_answer = std::move(raw);
          } else if (change.answer_kind == PayoutChange::AnswerKind::kStatus) {
            status_answer = std::move(raw);
          }
        }

        absl::StatusOr<Statement> update = db.Prepare(
            "UPDATE payouts SET state = ?2, transaction_id = ?3, "
            "transaction_reference_no = ?4, upstream_status = ?5, "
            "bank_beneficiary_name = ?6, failure = ?7, response = ?8, "
            "payout_answer = COALESCE(?9, payout_answer), "
            "status_answer = COALESCE(?10, status_answer), "
            "update_time_us = ?11, final_time_us = COALESCE(?12, "
            "final_time_us) WHERE payout_id = ?1",
            "recording a payout change");
        if (!update.ok()) return update.status();
        update->Bind(1, payout.payout_id);
        update->Bind(2, static_cast<int>(payout.state));
        update->Bind(3, payout.transaction_id);
        update->Bind(4, payout.transaction_reference_no);
        update->Bind(5, payout.upstream_status);
        update->Bind(6, payout.bank_beneficiary_name);
        update->Bind(7, StatusColumn(payout.failure));
        update->Bind(8, StatusColumn(stored->response));
        update->Bind(9, payout_answer);
        update->Bind(10, status_answer);
        update->Bind(11, absl::ToUnixMicros(payout.update_time));
        // Retention counts from the latest move into a final state.
        std::optional<int64_t> final_time;
        if (IsFinal(payout.state) && payout.state != from) {
          final_time = absl::ToUnixMicros(change.time);
        }
        update->Bind(12, final_time);
        if (absl::Status run = update->Run(); !run.ok()) return run;
        // Events (watchers, webhooks) are changes of state: a refresh that
        // only records AOPay's words is none.
        if (payout.state == from) return stored;
        if (absl::Status event =
                AppendEvent(db, payout.payout_id, from, payout.state,
                            change.why, change.who, change.time);
            !event.ok()) {
          return event;
        }
        return stored;
      },
      std::move(done));
}

void SqliteLedger::Forget(std::string payout_id, Callback<absl::Status> done) {
  const std::string& registration = impl_->registration();
  impl_->Write<bool>(
      [&registration, payout_id = std::move(payout_id)](
          Connection& db) -> absl::StatusOr<bool> {
        absl::StatusOr<StoredPayout> stored =
            SelectByPayoutId(db, registration, payout_id);
        if (!stored.ok()) return stored.status();
        if (stored->payout.state != PayoutState::kPending) {
          return absl::FailedPreconditionError(
              absl::StrCat("Payout ", payout_id, " is ",
                           PayoutStateName(stored->payout.state),
                           "; only a PENDING payout can be forgotten."));
        }
        // Its events go with it (ON DELETE CASCADE).
        absl::StatusOr<Statement> remove = db.Prepare(
            "DELETE FROM payouts WHERE payout_id = ?1", "forgetting a payout");
        if (!remove.ok()) return remove.status();
        remove->Bind(1, payout_id);
        if (absl::Status run = remove->Run(); !run.ok()) return run;
        return true;
      },
      [done = std::move(done)](absl::StatusOr<bool> forgotten) {
        done(forgotten.status());
      });
}

void SqliteLedger::GetByPayoutId(std::string payout_id,
                                 Callback<absl::StatusOr<StoredPayout>> done) {
  const std::string& registration = impl_->registration();
  impl_->Read<StoredPayout>(
      [&registration, payout_id = std::move(payout_id)](Connection& db) {
        return SelectByPayoutId(db, registration, payout_id);
      },
      std::move(done));
}

void SqliteLedger::GetByRequestId(std::string client, std::string request_id,
                                  Callback<absl::StatusOr<StoredPayout>> done) {
  const std::string& registration = impl_->registration();
  impl_->Read<StoredPayout>(
      [&registration, client = std::move(client),
       request_id = std::move(request_id)](Connection& db) {
        return SelectByRequestId(db, registration, client, request_id);
      },
      std::move(done));
}

void SqliteLedger::List(ListQuery query,
                        Callback<absl::StatusOr<ListPage>> done) {
  const std::string& registration = impl_->registration();
  impl_->Read<ListPage>(
      [&registration,
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
        // The client filter comes from the query on every page, never from
        // the token.
        absl::StatusOr<Statement> select =
            db.Prepare(ListSql(query.states, after.has_value(),
                               query.client.has_value(), '?'),
                       "listing payouts");
        if (!select.ok()) return select.status();
        select->Bind(1, registration);
        // One row more than the page tells whether another page follows.
        select->Bind(2, page_size + 1);
        if (after.has_value()) select->Bind(3, *after);
        if (query.client.has_value()) select->Bind(4, *query.client);
        ListPage page;
        bool more = false;
        for (;;) {
          absl::StatusOr<bool> row = select->Step();
          if (!row.ok()) return row.status();
          if (!*row) break;
          if (static_cast<int>(page.payouts.size()) == page_size) {
            more = true;
            break;
          }
          absl::StatusOr<StoredPayout> stored = ReadPayoutRow(*select);
          if (!stored.ok()) return stored.status();
          page.payouts.push_back(std::move(stored->payout));
        }
        if (more) {
          page.next_page_token =
              MakePageToken(mask, page.payouts.back().payout_id);
        }
        return page;
      },
      std::move(done));
}

void SqliteLedger::Events(
    std::string payout_id,
    Callback<absl::StatusOr<std::vector<PayoutEvent>>> done) {
  const std::string& registration = impl_->registration();
  impl_->Read<std::vector<PayoutEvent>>(
      [&registration, payout_id = std::move(payout_id)](
          Connection& db) -> absl::StatusOr<std::vector<PayoutEvent>> {
        // One statement, so that the payout and its events are one snapshot.
        absl::StatusOr<Statement> select = db.Prepare(
            "SELECT e.id, e.from_state, e.to_state, e.why, e.who, e.time_us "
            "FROM payouts p LEFT JOIN payout_events e "
            "ON e.payout_id = p.payout_id "
            "WHERE p.registration = ?1 AND p.payout_id = ?2 ORDER BY e.id",
            "reading payout events");
        if (!select.ok()) return select.status();
        select->Bind(1, registration);
        select->Bind(2, payout_id);
        std::vector<PayoutEvent> events;
        bool found = false;
        for (;;) {
          absl::StatusOr<bool> row = select->Step();
          if (!row.ok()) return row.status();
          if (!*row) break;
          found = true;
          if (select->IsNull(0)) continue;  // a payout without events
          const int64_t from = select->Int(1);
          const int64_t to = select->Int(2);
          if (!IsKnownState(from) || !IsKnownState(to)) {
            return RowError(payout_id, "an event with an unknown state");
          }
          PayoutEvent event;
          event.payout_id = payout_id;
          event.from = static_cast<PayoutState>(from);
          event.to = static_cast<PayoutState>(to);
          event.why = select->Text(3);
          event.who = select->Text(4);
          event.time = absl::FromUnixMicros(select->Int(5));
          events.push_back(std::move(event));
        }
        if (!found)
          return aopay::NotFoundError(absl::StrCat("Payout ", payout_id));
        return events;
      },
      std::move(done));
}

void SqliteLedger::EventsAfter(int64_t after, int limit,
                               Callback<absl::StatusOr<EventBatch>> done) {
  const std::string& registration = impl_->registration();
  impl_->Read<EventBatch>(
      [&registration, after,
       limit](Connection& db) -> absl::StatusOr<EventBatch> {
        EventBatch batch;
        batch.last = after;
        absl::StatusOr<std::string> head = QueryText(
            db.db(), "ledger", "SELECT COALESCE(MAX(id), 0) FROM payout_events",
            "reading events");
        if (!head.ok()) return head.status();
        if (!absl::SimpleAtoi(*head, &batch.head)) batch.head = 0;
        absl::StatusOr<std::string> pruned = QueryText(
            db.db(), "ledger",
            "SELECT COALESCE(MAX(CAST(value AS INTEGER)), 0) FROM ledger_meta "
            "WHERE key = 'events_pruned_through'",
            "reading events");
        if (!pruned.ok()) return pruned.status();
        int64_t pruned_through = 0;
        if (absl::SimpleAtoi(*pruned, &pruned_through) &&
            after < pruned_through) {
          batch.expired = true;
          return batch;
        }
        absl::StatusOr<Statement> select =
            db.Prepare(sqlite_internal::EventsAfterSql(), "reading events");
        if (!select.ok()) return select.status();
        select->Bind(1, registration);
        select->Bind(2, after);
        select->Bind(3, limit);
        absl::Status read =
            ReadWatchedEvents(*select, [&batch](WatchedEvent watched) {
              batch.last = watched.cursor;
              batch.events.push_back(std::move(watched));
            });
        if (!read.ok()) return read;
        return batch;
      },
      std::move(done));
}

void SqliteLedger::OutboxDue(
    absl::Time now, int limit,
    Callback<absl::StatusOr<std::vector<OutboxEvent>>> done) {
  const std::string& registration = impl_->registration();
  impl_->Read<std::vector<OutboxEvent>>(
      [&registration, now,
       limit](Connection& db) -> absl::StatusOr<std::vector<OutboxEvent>> {
        constexpr int kAttempts = kWatchedEventColumns;  // the outbox's own
        absl::StatusOr<Statement> select = db.Prepare(
            sqlite_internal::OutboxDueSql(), "reading the webhook outbox");
        if (!select.ok()) return select.status();
        select->Bind(1, registration);
        select->Bind(2, absl::ToUnixMicros(now));
        select->Bind(3, limit);
        std::vector<OutboxEvent> due;
        const Statement& row = *select;
        absl::Status read =
            ReadWatchedEvents(*select, [&due, &row](WatchedEvent watched) {
              OutboxEvent& event = due.emplace_back();
              event.watched = std::move(watched);
              event.attempts = static_cast<int>(row.Int(kAttempts));
              event.enqueued = absl::FromUnixMicros(row.Int(kAttempts + 1));
            });
        if (!read.ok()) return read;
        return due;
      },
      std::move(done));
}

void SqliteLedger::OutboxSettle(int64_t cursor,
                                std::optional<absl::Time> retry_at,
                                Callback<absl::Status> done) {
  impl_->Write<bool>(
      [cursor, retry_at](Connection& db) -> absl::StatusOr<bool> {
        absl::StatusOr<Statement> statement =
            retry_at.has_value()
                ? db.Prepare(
                      "UPDATE webhook_outbox SET attempts = attempts + "
                      "1, next_attempt_us = ?2 WHERE event_id = ?1",
                      "scheduling a webhook retry")
                : db.Prepare("DELETE FROM webhook_outbox WHERE event_id = ?1",
                             "settling a webhook");
        if (!statement.ok()) return statement.status();
        statement->Bind(1, cursor);
        if (retry_at.has_value()) {
          statement->Bind(2, absl::ToUnixMicros(*retry_at));
        }
        if (absl::Status run = statement->Run(); !run.ok()) return run;
        return true;
      },
      [done = std::move(done)](absl::StatusOr<bool> settled) {
        done(settled.status());
      });
}

void SqliteLedger::OutboxWaiting(Callback<absl::StatusOr<OutboxBacklog>> done) {
  impl_->Read<OutboxBacklog>(
      [](Connection& db) -> absl::StatusOr<OutboxBacklog> {
        absl::StatusOr<Statement> select =
            db.Prepare("SELECT COUNT(*), MIN(enqueued_us) FROM webhook_outbox",
                       "reading the webhook outbox");
        if (!select.ok()) return select.status();
        absl::StatusOr<bool> row = select->Step();
        if (!row.ok()) return row.status();
        OutboxBacklog backlog;
        if (*row) {
          backlog.events = select->Int(0);
          if (backlog.events > 0) {
            backlog.oldest = absl::FromUnixMicros(select->Int(1));
          }
        }
        return backlog;
      },
      std::move(done));
}

absl::StatusOr<int> SqliteLedger::RecoverPending(absl::Time now) {
  const std::string& registration = impl_->registration();
  absl::Notification finished;
  absl::StatusOr<int> recovered = absl::UnknownError("not run");
  impl_->Write<int>(
      [&registration, now](Connection& db) -> absl::StatusOr<int> {
        std::vector<std::string> pending;
        {
          absl::StatusOr<Statement> select = db.Prepare(
              "SELECT payout_id FROM payouts WHERE registration = ?1 AND "
              "state = ?2 ORDER BY payout_id",
              "finding pending payouts");
          if (!select.ok()) return select.status();
          select->Bind(1, registration);
          select->Bind(2, static_cast<int>(PayoutState::kPending));
          for (;;) {
            absl::StatusOr<bool> row = select->Step();
            if (!row.ok()) return row.status();
            if (!*row) break;
            pending.push_back(select->Text(0));
          }
        }
        for (const std::string& payout_id : pending) {
          // What a retry of its request id gets from now on, as if the
          // first caller's call had timed out.
          const absl::Status response = RecoveredAsUnknownError(payout_id);
          absl::StatusOr<Statement> update = db.Prepare(
              "UPDATE payouts SET state = ?2, "
              "response = COALESCE(response, ?3), update_time_us = ?4 "
              "WHERE payout_id = ?1",
              "recovering a pending payout");
          if (!update.ok()) return update.status();
          update->Bind(1, payout_id);
          update->Bind(2, static_cast<int>(PayoutState::kUnknown));
          update->Bind(3, SerializeError(response));
          update->Bind(4, absl::ToUnixMicros(now));
          if (absl::Status run = update->Run(); !run.ok()) return run;
          if (absl::Status event = AppendEvent(
                  db, payout_id, PayoutState::kPending, PayoutState::kUnknown,
                  "the gateway restarted while the AOPay call was in flight; "
                  "the payout may have been sent",
                  "recovery", now);
              !event.ok()) {
            return event;
          }
        }
        return static_cast<int>(pending.size());
      },
      [&recovered, &finished](absl::StatusOr<int> result) {
        recovered = std::move(result);
        finished.Notify();
      });
  finished.WaitForNotification();
  return recovered;
}

void SqliteLedger::Prune(absl::Time cutoff,
                         Callback<absl::StatusOr<int>> done) {
  const std::string& registration = impl_->registration();
  impl_->Write<int>(
      [&registration, cutoff](Connection& db) -> absl::StatusOr<int> {
        // A watcher whose cursor is older than the newest event pruned here
        // can no longer resume (EventsAfter: expired).
        static const std::string* const kMark = new std::string(absl::StrCat(
            "INSERT INTO ledger_meta (key, value) SELECT "
            "'events_pruned_through', MAX(e.id) FROM payout_events e JOIN "
            "payouts p ON p.payout_id = e.payout_id WHERE p.registration = ?1 "
            "AND p.state IN (",
            FinalStateNumbers(),
            ") AND p.final_time_us < ?2 AND e.id > COALESCE((SELECT "
            "CAST(value AS INTEGER) FROM ledger_meta WHERE key = "
            "'events_pruned_through'), 0) "
            // Nothing to prune: no row (MAX of nothing is NULL).
            "GROUP BY p.registration "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"));
        absl::StatusOr<Statement> mark =
            db.Prepare(*kMark, "recording pruned events");
        if (!mark.ok()) return mark.status();
        mark->Bind(1, registration);
        mark->Bind(2, absl::ToUnixMicros(cutoff));
        if (absl::Status run = mark->Run(); !run.ok()) return run;
        // Their events go with them (ON DELETE CASCADE).
        static const std::string* const kSql = new std::string(absl::StrCat(
            "DELETE FROM payouts WHERE registration = ?1 AND state IN (",
            FinalStateNumbers(), ") AND final_time_us < ?2"));
        absl::StatusOr<Statement> remove =
            db.Prepare(*kSql, "pruning old payouts");
        if (!remove.ok()) return remove.status();
        remove->Bind(1, registration);
        remove->Bind(2, absl::ToUnixMicros(cutoff));
        if (absl::Status run = remove->Run(); !run.ok()) return run;
        return remove->Changes();
      },
      std::move(done));
}

}  // namespace aopay
