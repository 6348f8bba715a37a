#ifndef AOPAY_SERVER_LEDGER_SQLITE_HANDLE_H_
#define AOPAY_SERVER_LEDGER_SQLITE_HANDLE_H_

// The SQLite ledger's hold on its file: RAII around the C API (connections,
// cached prepared statements), what a failed SQLite call becomes, and
// opening the file: the directory check, the lock file, the connection and
// its pragmas, and the identity of the file opened. Internal to the ledger.

#include <sqlite3.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aopay {

struct SqliteLedgerOptions;

namespace sqlite_internal {

// ---------------------------------------------------------------------------
// RAII around the C API.

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbHandle = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using StmtHandle = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// The error for a failed SQLite call while `doing` something. Constraint
// violations are the ledger refusing a value (INTERNAL); everything else is
// the storage failing (UNAVAILABLE, LEDGER_UNAVAILABLE).
absl::Status StorageError(sqlite3* db, int rc, absl::string_view doing);

// A cached prepared statement, borrowed for one use: binding, stepping and
// reading columns. Resets the statement (ending its implicit read
// transaction) and clears its bindings when it goes out of scope.
class Statement {
 public:
  Statement(sqlite3_stmt* stmt, const char* doing)
      : stmt_(stmt), doing_(doing) {}
  ~Statement();
  Statement(Statement&& other) noexcept
      : stmt_(std::exchange(other.stmt_, nullptr)),
        doing_(other.doing_),
        bind_rc_(other.bind_rc_) {}
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement& operator=(Statement&&) = delete;

  void Bind(int index, absl::string_view text);
  void Bind(int index, const std::string& text) {
    Bind(index, absl::string_view(text));
  }
  void Bind(int index, int64_t value);
  void Bind(int index, int value) { Bind(index, static_cast<int64_t>(value)); }
  void Bind(int index, const std::optional<int64_t>& value);
  void Bind(int index, const std::optional<std::string>& text);

  // true: a row is ready; false: done.
  [[nodiscard]] absl::StatusOr<bool> Step();

  // Steps to the end, ignoring rows.
  [[nodiscard]] absl::Status Run();

  bool IsNull(int column) const {
    return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
  }
  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string Text(int column) const;

  // Rows changed by the last Step() of this statement's connection.
  int Changes() const { return sqlite3_changes(sqlite3_db_handle(stmt_)); }

 private:
  void Check(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }
  absl::Status Error(int rc) const;

  sqlite3_stmt* stmt_;
  const char* doing_;
  int bind_rc_ = SQLITE_OK;
};

// One connection and its cache of prepared statements. Used by one thread at
// a time.
class Connection {
 public:
  explicit Connection(DbHandle db) : db_(std::move(db)) {}

  sqlite3* db() const { return db_.get(); }

  // The cached statement for `sql` (prepared on first use). `doing` names
  // the work in error messages.
  [[nodiscard]] absl::StatusOr<Statement> Prepare(absl::string_view sql,
                                                  const char* doing);

  // Runs one statement without parameters to its end.
  [[nodiscard]] absl::Status Run(absl::string_view sql, const char* doing);

  bool InTransaction() const { return sqlite3_get_autocommit(db_.get()) == 0; }

  // Finalizes the cached statements and closes the connection.
  void Close() {
    cache_.clear();
    db_.reset();
  }

 private:
  DbHandle db_;
  // Declared after db_: statements are finalized before the connection
  // closes.
  absl::flat_hash_map<std::string, StmtHandle> cache_;
};

// ---------------------------------------------------------------------------
// Opening.

// The error for a failed SQLite call while opening the ledger at `path`:
// UNAVAILABLE for locks and I/O, FAILED_PRECONDITION for the rest (a file
// that is not a ledger, among them).
absl::Status OpenError(absl::string_view path, sqlite3* db, int rc,
                       absl::string_view doing);

// Runs `sql` (one statement) and returns the first column of its first row.
absl::StatusOr<std::string> QueryText(sqlite3* db, absl::string_view path,
                                      const char* sql, const char* doing);

// FAILED_PRECONDITION unless the directory of `path` exists and is writable.
absl::Status CheckDirectory(const std::string& path);

// Opens options.path, read-write (created when missing) or read-only, with
// options.vfs and options.busy_timeout.
absl::StatusOr<DbHandle> OpenConnection(const SqliteLedgerOptions& options,
                                        bool read_only);

// WAL mode, synchronous as options.durable asks, and foreign keys enforced.
absl::Status Configure(sqlite3* db, const SqliteLedgerOptions& options);

// Exclusive locks on PATH.lock and on the database file itself (flock(2),
// by inode: the same under a symbolic or hard link) for as long as a process
// has the ledger open. Two gateways on one file would each turn the other's
// in-flight PENDING payouts UNKNOWN at start-up and then fail to record their
// outcomes; under two names of one file each would also have its own -wal
// and -shm files. Acquire before opening any SQLite connection to `path`;
// Release only after every one is closed.
class LedgerLock {
 public:
  [[nodiscard]] static absl::StatusOr<LedgerLock> Acquire(
      const std::string& path);

  LedgerLock(LedgerLock&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)),
        database_fd_(std::exchange(other.database_fd_, -1)) {}
  LedgerLock& operator=(LedgerLock&&) = delete;
  ~LedgerLock() { Release(); }

  void Release();

 private:
  LedgerLock(int fd, int database_fd) : fd_(fd), database_fd_(database_fd) {}
  int fd_;           // PATH.lock
  int database_fd_;  // PATH
};

// Which file a path names, so that a ledger deleted or replaced under the
// running gateway is noticed: SQLite would go on writing to the unlinked
// file, and every payout recorded from then on would be lost at the next
// restart.
struct FileIdentity {
  dev_t device = 0;
  ino_t inode = 0;

  static absl::StatusOr<FileIdentity> Of(const std::string& path);
  bool operator==(const FileIdentity& other) const {
    return device == other.device && inode == other.inode;
  }
};

}  // namespace sqlite_internal
}  // namespace aopay

#endif  // AOPAY_SERVER_LEDGER_SQLITE_HANDLE_H_
