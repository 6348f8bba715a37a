// The SQLite ledger's hold on its file: statements, connections, and opening
// the file (see handle.h).

#include "server/ledger/sqlite/handle.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/errors.h"
#include "server/ledger/sqlite/sqlite_ledger.h"

namespace aopay::sqlite_internal {

absl::Status StorageError(sqlite3* db, int rc, absl::string_view doing) {
  const char* message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  if ((rc & 0xff) == SQLITE_CONSTRAINT) {
    return absl::InternalError(absl::StrCat(
        "The payout ledger refused a row while ", doing, ": ", message, "."));
  }
  return LedgerUnavailableError(absl::StrCat(doing, ": ", message));
}

// ---------------------------------------------------------------------------
// Statement.

Statement::~Statement() {
  if (stmt_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
}

void Statement::Bind(int index, absl::string_view text) {
  // A null pointer would bind NULL; "" must stay "".
  const char* data = text.data() != nullptr ? text.data() : "";
  Check(sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_TRANSIENT,
                            SQLITE_UTF8));
}

void Statement::Bind(int index, int64_t value) {
  Check(sqlite3_bind_int64(stmt_, index, value));
}

void Statement::Bind(int index, const std::optional<int64_t>& value) {
  if (value.has_value()) {
    Bind(index, *value);
  } else {
    Check(sqlite3_bind_null(stmt_, index));
  }
}

void Statement::Bind(int index, const std::optional<std::string>& text) {
  if (text.has_value()) {
    Bind(index, *text);
  } else {
    Check(sqlite3_bind_null(stmt_, index));
  }
}

absl::StatusOr<bool> Statement::Step() {
  if (bind_rc_ != SQLITE_OK) return Error(bind_rc_);
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return Error(rc);
}

absl::Status Statement::Run() {
  for (;;) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

std::string Statement::Text(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  if (text == nullptr) return std::string();
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

absl::Status Statement::Error(int rc) const {
  return StorageError(sqlite3_db_handle(stmt_), rc, doing_);
}

// ---------------------------------------------------------------------------
// Connection.

absl::StatusOr<Statement> Connection::Prepare(absl::string_view sql,
                                              const char* doing) {
  auto it = cache_.find(sql);  // no copy of the SQL on a hit
  if (it == cache_.end()) {
    sqlite3_stmt* stmt = nullptr;
    const int rc =
        sqlite3_prepare_v3(db_.get(), sql.data(), static_cast<int>(sql.size()),
                           SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      return StorageError(db_.get(), rc, doing);
    }
    it = cache_.emplace(std::string(sql), StmtHandle(stmt)).first;
  }
  return Statement(it->second.get(), doing);
}

absl::Status Connection::Run(absl::string_view sql, const char* doing) {
  absl::StatusOr<Statement> statement = Prepare(sql, doing);
  if (!statement.ok()) return statement.status();
  return statement->Run();
}

// ---------------------------------------------------------------------------
// Opening.

absl::Status OpenError(absl::string_view path, sqlite3* db, int rc,
                       absl::string_view doing) {
  const char* message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  const std::string text =
      absl::StrCat("ledger ", path, ": ", doing, ": ", message);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_NOMEM:
    case SQLITE_PROTOCOL:
      return absl::UnavailableError(text);
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      return absl::FailedPreconditionError(
          absl::StrCat("ledger ", path,
                       " is not a SQLite database or is corrupt: ", message));
    default:
      return absl::FailedPreconditionError(text);
  }
}

absl::StatusOr<std::string> QueryText(sqlite3* db, absl::string_view path,
                                      const char* sql, const char* doing) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &raw, nullptr);
  StmtHandle stmt(raw);
  if (rc != SQLITE_OK) return OpenError(path, db, rc, doing);
  std::string value;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    if (value.empty() && sqlite3_column_text(stmt.get(), 0) != nullptr) {
      value = reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0));
    }
  }
  if (rc != SQLITE_DONE) return OpenError(path, db, rc, doing);
  return value;
}

absl::Status CheckDirectory(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  struct stat info;
  if (stat(dir.c_str(), &info) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ledger ", path, ": the directory ", dir, " does not exist"));
  }
  if (!S_ISDIR(info.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("ledger ", path, ": ", dir, " is not a directory"));
  }
  if (access(dir.c_str(), W_OK | X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ledger ", path, ": the directory ", dir,
        " is not writable (SQLite keeps its -wal and -shm files there)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<DbHandle> OpenConnection(const SqliteLedgerOptions& options,
                                        bool read_only) {
  // SQLite counts every allocation it makes for sqlite3_status(), behind
  // one process-wide mutex that the writer and the reader take on each
  // malloc and free (~5 % of the writer thread at 5,000 payouts in flight).
  // Nothing here reads those counts. The option only takes before SQLite's
  // first use in the process; later (a test that registered a VFS first)
  // SQLite refuses it and keeps counting, which is harmless.
  static const int kMemoryStatusOff =
      sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  (void)kMemoryStatusOff;
  const int flags = (read_only ? SQLITE_OPEN_READONLY
                               : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                    SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(options.path.c_str(), &raw, flags,
                      options.vfs.empty() ? nullptr : options.vfs.c_str());
  DbHandle db(raw);
  if (rc != SQLITE_OK) {
    return OpenError(options.path, db.get(), rc, "cannot open the file");
  }
  if (!read_only && sqlite3_db_readonly(db.get(), "main") == 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("ledger ", options.path, " is read-only"));
  }
  sqlite3_busy_timeout(
      db.get(),
      static_cast<int>(std::clamp<int64_t>(
          absl::ToInt64Milliseconds(options.busy_timeout), 0, INT32_MAX)));
  return db;
}

absl::Status Configure(sqlite3* db, const SqliteLedgerOptions& options) {
  const std::string& path = options.path;
  absl::StatusOr<std::string> mode =
      QueryText(db, path, "PRAGMA journal_mode = WAL", "switching to WAL");
  if (!mode.ok()) return mode.status();
  if (*mode != "wal") {
    return absl::FailedPreconditionError(
        absl::StrCat("ledger ", path, ": cannot use WAL mode (journal_mode is ",
                     *mode, ")"));
  }
  for (const char* pragma : {options.durable ? "PRAGMA synchronous = FULL"
                                             : "PRAGMA synchronous = OFF",
                             "PRAGMA foreign_keys = ON",
                             // Each write of a group commit runs in a
                             // savepoint, whose undo copy of every page it
                             // changes (the statement journal) would
                             // otherwise go to a temporary file past 64 KiB:
                             // two pwrite(2)s a page.
                             "PRAGMA temp_store = MEMORY"}) {
    absl::StatusOr<std::string> set = QueryText(db, path, pragma, pragma);
    if (!set.ok()) return set.status();
  }
  absl::StatusOr<std::string> foreign_keys =
      QueryText(db, path, "PRAGMA foreign_keys", "checking foreign keys");
  if (!foreign_keys.ok()) return foreign_keys.status();
  if (*foreign_keys != "1") {
    return absl::FailedPreconditionError(absl::StrCat(
        "ledger ", path, ": this SQLite does not enforce foreign keys"));
  }
  return absl::OkStatus();
}

namespace {

// An exclusive flock(2) on `file` (created when missing), or the error that
// says why not. `what` names the file in messages.
absl::StatusOr<int> LockExclusively(const std::string& path,
                                    const std::string& file,
                                    absl::string_view what) {
  const int fd = open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(
        "ledger ", path, ": cannot open ", file, ": ", std::strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    close(fd);
    if (error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("ledger ", path,
                       " is in use by another gateway process (", what, ")"));
    }
    return absl::UnavailableError(absl::StrCat(
        "ledger ", path, ": cannot lock ", file, ": ", std::strerror(error)));
  }
  return fd;
}

}  // namespace

absl::StatusOr<LedgerLock> LedgerLock::Acquire(const std::string& path) {
  const std::string lock_path = path + ".lock";
  absl::StatusOr<int> named =
      LockExclusively(path, lock_path, absl::StrCat(lock_path, " is locked"));
  if (!named.ok()) return named.status();
  LedgerLock lock(*named, -1);
  // PATH.lock follows the name; a symbolic or hard link to a ledger in use
  // has a name of its own. The database file itself is the same file under
  // every name. (A refusal closes the descriptor again, which would drop
  // any POSIX lock this process's own SQLite connections hold on the file:
  // only a process that opened one ledger under two names has such.)
  absl::StatusOr<int> database = LockExclusively(
      path, path,
      "its database file is locked: it is open under another name, a "
      "symbolic or hard link");
  if (!database.ok()) return database.status();
  lock.database_fd_ = *database;
  return lock;
}

void LedgerLock::Release() {
  // Closing drops the flocks. The database file's descriptor must outlive
  // every SQLite connection to it: closing any descriptor of a file drops
  // the POSIX locks SQLite holds on it.
  if (database_fd_ >= 0) close(std::exchange(database_fd_, -1));
  if (fd_ >= 0) close(std::exchange(fd_, -1));
}

absl::StatusOr<FileIdentity> FileIdentity::Of(const std::string& path) {
  struct stat info {};
  if (stat(path.c_str(), &info) != 0) {
    return absl::NotFoundError(std::strerror(errno));
  }
  return FileIdentity{info.st_dev, info.st_ino};
}

}  // namespace aopay::sqlite_internal
