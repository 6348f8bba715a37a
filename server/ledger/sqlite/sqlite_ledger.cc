#include "server/ledger/sqlite/sqlite_ledger.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/errors.h"
#include "common/payout.h"
#include "common/redact.h"
#include "server/executor/executor.h"

namespace aopay {
namespace {

// "AOPY": marks the file as a payout ledger, so that another application's
// SQLite file is refused rather than migrated.
constexpr int32_t kApplicationId = 0x414F5059;

constexpr absl::string_view kPageTokenVersion = "v1";
constexpr size_t kMaxPayoutIdBytes = 64;

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
};
constexpr int kKnownVersion =
    static_cast<int>(sizeof(kMigrations) / sizeof(kMigrations[0]));
static_assert(kKnownVersion == SqliteLedger::kSchemaVersion,
              "kSchemaVersion must match the migrations");
static_assert(kApplicationId == 1095716953, "the migration's application_id");

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
absl::Status StorageError(sqlite3* db, int rc, absl::string_view doing) {
  const char* message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  if ((rc & 0xff) == SQLITE_CONSTRAINT) {
    return absl::InternalError(absl::StrCat(
        "The payout ledger refused a row while ", doing, ": ", message, "."));
  }
  return LedgerUnavailableError(absl::StrCat(doing, ": ", message));
}

// A cached prepared statement, borrowed for one use: binding, stepping and
// reading columns. Resets the statement (ending its implicit read
// transaction) and clears its bindings when it goes out of scope.
class Statement {
 public:
  Statement(sqlite3_stmt* stmt, const char* doing)
      : stmt_(stmt), doing_(doing) {}
  ~Statement() {
    if (stmt_ != nullptr) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }
  Statement(Statement&& other) noexcept
      : stmt_(std::exchange(other.stmt_, nullptr)),
        doing_(other.doing_),
        bind_rc_(other.bind_rc_) {}
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement& operator=(Statement&&) = delete;

  void Bind(int index, absl::string_view text) {
    // A null pointer would bind NULL; "" must stay "".
    const char* data = text.data() != nullptr ? text.data() : "";
    Check(sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_TRANSIENT,
                              SQLITE_UTF8));
  }
  void Bind(int index, const std::string& text) {
    Bind(index, absl::string_view(text));
  }
  void Bind(int index, int64_t value) {
    Check(sqlite3_bind_int64(stmt_, index, value));
  }
  void Bind(int index, int value) { Bind(index, static_cast<int64_t>(value)); }
  void Bind(int index, const std::optional<int64_t>& value) {
    if (value.has_value()) {
      Bind(index, *value);
    } else {
      Check(sqlite3_bind_null(stmt_, index));
    }
  }
  void Bind(int index, const std::optional<std::string>& text) {
    if (text.has_value()) {
      Bind(index, *text);
    } else {
      Check(sqlite3_bind_null(stmt_, index));
    }
  }

  // true: a row is ready; false: done.
  [[nodiscard]] absl::StatusOr<bool> Step() {
    if (bind_rc_ != SQLITE_OK) return Error(bind_rc_);
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return Error(rc);
  }

  // Steps to the end, ignoring rows.
  [[nodiscard]] absl::Status Run() {
    for (;;) {
      absl::StatusOr<bool> row = Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
    }
  }

  bool IsNull(int column) const {
    return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
  }
  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string Text(int column) const {
    const unsigned char* text = sqlite3_column_text(stmt_, column);
    if (text == nullptr) return std::string();
    return std::string(
        reinterpret_cast<const char*>(text),
        static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
  }

  // Rows changed by the last Step() of this statement's connection.
  int Changes() const { return sqlite3_changes(sqlite3_db_handle(stmt_)); }

 private:
  void Check(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }
  absl::Status Error(int rc) const {
    return StorageError(sqlite3_db_handle(stmt_), rc, doing_);
  }

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
                                                  const char* doing) {
    auto it = cache_.find(sql);  // no copy of the SQL on a hit
    if (it == cache_.end()) {
      sqlite3_stmt* stmt = nullptr;
      const int rc = sqlite3_prepare_v3(
          db_.get(), sql.data(), static_cast<int>(sql.size()),
          SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
      if (rc != SQLITE_OK) {
        sqlite3_finalize(stmt);
        return StorageError(db_.get(), rc, doing);
      }
      it = cache_.emplace(std::string(sql), StmtHandle(stmt)).first;
    }
    return Statement(it->second.get(), doing);
  }

  // Runs one statement without parameters to its end.
  [[nodiscard]] absl::Status Run(absl::string_view sql, const char* doing) {
    absl::StatusOr<Statement> statement = Prepare(sql, doing);
    if (!statement.ok()) return statement.status();
    return statement->Run();
  }

  bool InTransaction() const { return sqlite3_get_autocommit(db_.get()) == 0; }

 private:
  DbHandle db_;
  // Declared after db_: statements are finalized before the connection
  // closes.
  absl::flat_hash_map<std::string, StmtHandle> cache_;
};

// ---------------------------------------------------------------------------
// Rows.

constexpr char kPayoutColumns[] =
    "payout_id, request_id, fingerprint, state, account_number, ifsc, name, "
    "email, mobile, amount_paise, mode, transaction_id, "
    "transaction_reference_no, upstream_status, bank_beneficiary_name, "
    "failure, response, create_time_us, update_time_us";

bool IsKnownState(int64_t value) {
  return value >= static_cast<int64_t>(PayoutState::kUnspecified) &&
         value <= static_cast<int64_t>(PayoutState::kUnknown);
}

bool IsKnownMode(int64_t value) {
  return value >= static_cast<int64_t>(TransferMode::kUnspecified) &&
         value <= static_cast<int64_t>(TransferMode::kImps);
}

absl::Status RowError(absl::string_view payout_id, absl::string_view what) {
  return absl::DataLossError(
      absl::StrCat("The ledger row of payout ", payout_id, " has ", what, "."));
}

// NULL is OK; anything else must be SerializeError's form.
absl::StatusOr<absl::Status> ReadStatusColumn(const Statement& row, int column,
                                              absl::string_view payout_id,
                                              absl::string_view name) {
  if (row.IsNull(column)) return absl::OkStatus();
  absl::StatusOr<absl::Status> parsed = ParseSerializedError(row.Text(column));
  if (!parsed.ok()) {
    return RowError(payout_id, absl::StrCat("an unreadable ", name, " column"));
  }
  return *std::move(parsed);
}

std::optional<std::string> StatusColumn(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  return SerializeError(status);
}

// Reads a row selected with kPayoutColumns.
absl::StatusOr<StoredPayout> ReadPayout(const Statement& row) {
  StoredPayout stored;
  Payout& payout = stored.payout;
  payout.payout_id = row.Text(0);
  payout.request_id = row.Text(1);
  stored.fingerprint = row.Text(2);
  const int64_t state = row.Int(3);
  if (!IsKnownState(state))
    return RowError(payout.payout_id, "an unknown state");
  payout.state = static_cast<PayoutState>(state);
  payout.beneficiary.account_number = row.Text(4);
  payout.beneficiary.ifsc = row.Text(5);
  payout.beneficiary.name = row.Text(6);
  payout.beneficiary.email = row.Text(7);
  payout.beneficiary.mobile = row.Text(8);
  payout.amount_paise = row.Int(9);
  const int64_t mode = row.Int(10);
  if (!IsKnownMode(mode)) return RowError(payout.payout_id, "an unknown mode");
  payout.mode = static_cast<TransferMode>(mode);
  payout.transaction_id = row.Text(11);
  payout.transaction_reference_no = row.Text(12);
  payout.upstream_status = row.Text(13);
  payout.bank_beneficiary_name = row.Text(14);
  absl::StatusOr<absl::Status> failure =
      ReadStatusColumn(row, 15, payout.payout_id, "failure");
  if (!failure.ok()) return failure.status();
  payout.failure = *std::move(failure);
  absl::StatusOr<absl::Status> response =
      ReadStatusColumn(row, 16, payout.payout_id, "response");
  if (!response.ok()) return response.status();
  stored.response = *std::move(response);
  payout.create_time = absl::FromUnixMicros(row.Int(17));
  payout.update_time = absl::FromUnixMicros(row.Int(18));
  return stored;
}

// Runs a prepared SELECT of kPayoutColumns expected to match at most one row.
// nullopt: no row.
absl::StatusOr<std::optional<StoredPayout>> FindOne(
    absl::StatusOr<Statement> select) {
  if (!select.ok()) return select.status();
  absl::StatusOr<bool> row = select->Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::nullopt;
  absl::StatusOr<StoredPayout> stored = ReadPayout(*select);
  if (!stored.ok()) return stored.status();
  return *std::move(stored);
}

absl::StatusOr<StoredPayout> SelectOne(absl::StatusOr<Statement> select,
                                       absl::string_view what) {
  absl::StatusOr<std::optional<StoredPayout>> found =
      FindOne(std::move(select));
  if (!found.ok()) return found.status();
  if (!found->has_value()) return aopay::NotFoundError(what);
  return **std::move(found);
}

absl::StatusOr<StoredPayout> SelectByPayoutId(Connection& db,
                                              const std::string& registration,
                                              const std::string& payout_id) {
  static const std::string* const kSql = new std::string(
      absl::StrCat("SELECT ", kPayoutColumns,
                   " FROM payouts WHERE registration = ?1 AND payout_id = ?2"));
  absl::StatusOr<Statement> select = db.Prepare(*kSql, "reading a payout");
  if (select.ok()) {
    select->Bind(1, registration);
    select->Bind(2, payout_id);
  }
  return SelectOne(std::move(select), absl::StrCat("Payout ", payout_id));
}

// The row holding the key, if any. Insert asks this of every new payout, so
// a miss is not an error (that would build a NOT_FOUND message each time).
absl::StatusOr<std::optional<StoredPayout>> FindByRequestId(
    Connection& db, const std::string& registration,
    const std::string& request_id) {
  static const std::string* const kSql = new std::string(absl::StrCat(
      "SELECT ", kPayoutColumns,
      " FROM payouts WHERE registration = ?1 AND request_id = ?2"));
  absl::StatusOr<Statement> select = db.Prepare(*kSql, "reading a payout");
  if (select.ok()) {
    select->Bind(1, registration);
    select->Bind(2, request_id);
  }
  return FindOne(std::move(select));
}

absl::StatusOr<StoredPayout> SelectByRequestId(Connection& db,
                                               const std::string& registration,
                                               const std::string& request_id) {
  absl::StatusOr<std::optional<StoredPayout>> found =
      FindByRequestId(db, registration, request_id);
  if (!found.ok()) return found.status();
  if (!found->has_value()) {
    return aopay::NotFoundError(
        absl::StrCat("Payout with request_id ", request_id));
  }
  return **std::move(found);
}

absl::Status AppendEvent(Connection& db, const std::string& payout_id,
                         PayoutState from, PayoutState to,
                         absl::string_view why, absl::string_view who,
                         absl::Time time) {
  absl::StatusOr<Statement> insert = db.Prepare(
      "INSERT INTO payout_events (payout_id, from_state, to_state, why, who, "
      "time_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
      "recording a payout event");
  if (!insert.ok()) return insert.status();
  insert->Bind(1, payout_id);
  insert->Bind(2, static_cast<int>(from));
  insert->Bind(3, static_cast<int>(to));
  insert->Bind(4, why);
  insert->Bind(5, who);
  insert->Bind(6, absl::ToUnixMicros(time));
  return insert->Run();
}

// ---------------------------------------------------------------------------
// List page tokens: base64url of "v1|<state filter mask>|<last payout id>".

uint32_t StateMask(const std::vector<PayoutState>& states) {
  uint32_t mask = 0;
  for (PayoutState state : states) {
    const int bit = static_cast<int>(state);
    if (bit >= 0 && bit < 32) mask |= 1u << bit;
  }
  return mask;
}

std::string MakePageToken(uint32_t mask, absl::string_view last_payout_id) {
  return absl::WebSafeBase64Escape(
      absl::StrCat(kPageTokenVersion, "|", mask, "|", last_payout_id));
}

absl::Status BadPageToken(absl::string_view why) {
  return InvalidRequestError({{"page_token", std::string(why)}});
}

// The last payout id of the previous page.
absl::StatusOr<std::string> ParsePageToken(absl::string_view token,
                                           uint32_t mask) {
  std::string text;
  if (!absl::WebSafeBase64Unescape(token, &text)) {
    return BadPageToken("is not a page token this service made");
  }
  std::vector<std::string> parts =
      absl::StrSplit(text, absl::MaxSplits('|', 2));
  uint32_t token_mask = 0;
  if (parts.size() != 3 || parts[0] != kPageTokenVersion ||
      !absl::SimpleAtoi(parts[1], &token_mask) || parts[2].empty() ||
      parts[2].size() > kMaxPayoutIdBytes) {
    return BadPageToken("is not a page token this service made");
  }
  if (token_mask != mask) {
    return BadPageToken("was made for a different states filter");
  }
  return std::move(parts[2]);
}

// The SELECT for one page. Only the state filter varies, so the number of
// distinct cached statements stays small.
std::string ListSql(const std::vector<PayoutState>& states, bool after) {
  std::vector<int> values;
  for (PayoutState state : states) values.push_back(static_cast<int>(state));
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  std::string sql = absl::StrCat("SELECT ", kPayoutColumns,
                                 " FROM payouts WHERE registration = ?1");
  if (!values.empty()) {
    absl::StrAppend(&sql, " AND state IN (", absl::StrJoin(values, ", "), ")");
  }
  if (after) absl::StrAppend(&sql, " AND payout_id < ?3");
  absl::StrAppend(&sql, " ORDER BY payout_id DESC LIMIT ?2");
  return sql;
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

// Runs `sql` (one statement) and returns the first column of its first row.
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
                             "PRAGMA foreign_keys = ON"}) {
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

// Applies the missing migrations, each in a transaction of its own that also
// reads the version, so that two processes opening a new file at once do not
// both migrate it.
absl::Status Migrate(Connection& db, absl::string_view path) {
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

// A ledger belongs to one AOPay registration (docs/operations.md, "The
// ledger"). Refuses a ledger holding payouts of another one; otherwise
// records `registration` as the ledger's. Names neither id: both are secrets.
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

absl::Status ClosedError() {
  return LedgerUnavailableError("the ledger is closed");
}

// ---------------------------------------------------------------------------
// Queued work.

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

// An exclusive lock on PATH.lock for as long as a process has the ledger
// open. Two gateways on one file would each turn the other's in-flight
// PENDING payouts UNKNOWN at start-up and then fail to record their outcomes.
class LedgerLock {
 public:
  static absl::StatusOr<LedgerLock> Acquire(const std::string& path) {
    const std::string lock_path = path + ".lock";
    const int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      return absl::UnavailableError(absl::StrCat("ledger ", path,
                                                 ": cannot open ", lock_path,
                                                 ": ", std::strerror(errno)));
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      close(fd);
      if (error == EWOULDBLOCK) {
        return absl::FailedPreconditionError(absl::StrCat(
            "ledger ", path, " is in use by another gateway process (",
            lock_path, " is locked)"));
      }
      return absl::UnavailableError(absl::StrCat("ledger ", path,
                                                 ": cannot lock ", lock_path,
                                                 ": ", std::strerror(error)));
    }
    return LedgerLock(fd);
  }

  LedgerLock(LedgerLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  LedgerLock& operator=(LedgerLock&&) = delete;
  ~LedgerLock() { Release(); }

  void Release() {
    if (fd_ >= 0) close(std::exchange(fd_, -1));  // closing drops the flock
  }

 private:
  explicit LedgerLock(int fd) : fd_(fd) {}
  int fd_;
};

// Which file a path names, so that a ledger deleted or replaced under the
// running gateway is noticed: SQLite would go on writing to the unlinked
// file, and every payout recorded from then on would be lost at the next
// restart.
struct FileIdentity {
  dev_t device = 0;
  ino_t inode = 0;

  static absl::StatusOr<FileIdentity> Of(const std::string& path) {
    struct stat info {};
    if (stat(path.c_str(), &info) != 0) {
      return absl::NotFoundError(std::strerror(errno));
    }
    return FileIdentity{info.st_dev, info.st_ino};
  }
  bool operator==(const FileIdentity& other) const {
    return device == other.device && inode == other.inode;
  }
};

// Counts callbacks handed to the executor and not yet returned, so that
// Close() can wait for them. Shared with each task: a task that has just
// returned may still be leaving Done() when Close() sees the count at zero.
class CallbackCount {
 public:
  void Add() {
    absl::MutexLock lock(&mu_);
    ++running_;
  }
  void Done() {
    absl::MutexLock lock(&mu_);
    --running_;
  }
  void WaitForZero() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int64_t* running) { return *running == 0; }, &running_));
  }

 private:
  absl::Mutex mu_;
  int64_t running_ ABSL_GUARDED_BY(mu_) = 0;
};

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
                          ? std::make_unique<ThreadPool>(1)
                          : nullptr),
        executor_(options_.executor != nullptr ? *options_.executor
                                               : *own_executor_) {
    writer_thread_ = std::thread([this] { WriterLoop(); });
    reader_thread_ = std::thread([this] { ReaderLoop(); });
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
      std::vector<std::unique_ptr<WriteOp>> batch;
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
          const size_t n =
              std::min(writes_.size(), std::max<size_t>(options_.max_batch, 1));
          batch.reserve(n);
          for (size_t i = 0; i < n; ++i) {
            batch.push_back(std::move(writes_.front()));
            writes_.pop_front();
          }
        }
      }
      RunBatch(std::move(batch));
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

  // A write that changes no payout: records when the ledger last wrote.
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

  // Group commit: one transaction, one fsync, then every callback, in
  // submission order, in one task on the executor.
  void RunBatch(std::vector<std::unique_ptr<WriteOp>> batch) {
    transactions_.fetch_add(1);
    writes_count_.fetch_add(static_cast<int64_t>(batch.size()));
    bool op_storage_error = false;
    absl::Status outcome =
        FileGone()
            ? LedgerUnavailableError(
                  "the ledger file was deleted or replaced while the gateway "
                  "ran; nothing more is written until it is restarted")
            : writer_db_.Run("BEGIN IMMEDIATE", "starting a write transaction");
    for (std::unique_ptr<WriteOp>& op : batch) {
      if (!outcome.ok()) break;
      outcome = RunInSavepoint(*op, &op_storage_error);
    }
    if (outcome.ok()) {
      outcome = writer_db_.Run("COMMIT", "committing");
    }
    if (!outcome.ok()) {
      // Only UNAVAILABLE reaches the callers: whatever the SQLite error,
      // nothing of the batch was recorded.
      if (outcome.code() != absl::StatusCode::kUnavailable) {
        outcome = LedgerUnavailableError(outcome.message());
      }
      if (writer_db_.InTransaction()) {
        // On an I/O error SQLite may already have rolled back; when it has
        // not, this must, or the next BEGIN fails too.
        (void)writer_db_.Run("ROLLBACK", "rolling back");
      }
    }
    healthy_.store(outcome.ok() && !op_storage_error);
    Dispatch([batch = std::move(batch), outcome = std::move(outcome)] {
      for (const std::unique_ptr<WriteOp>& op : batch) op->Finish(outcome);
    });
  }

  // Non-OK only when the whole transaction is lost.
  absl::Status RunInSavepoint(WriteOp& op, bool* op_storage_error) {
    absl::Status status = writer_db_.Run("SAVEPOINT op", "starting a write");
    if (!status.ok()) return status;
    const absl::Status result = op.Run(writer_db_);
    if (!writer_db_.InTransaction()) {
      // SQLite rolls the whole transaction back on some errors (I/O, disk
      // full): the writes before this one are gone too.
      return LedgerUnavailableError(
          "SQLite rolled the write transaction back after an error");
    }
    if (result.ok()) return writer_db_.Run("RELEASE op", "finishing a write");
    if (result.code() == absl::StatusCode::kUnavailable) {
      *op_storage_error = true;
    }
    status = writer_db_.Run("ROLLBACK TO op", "undoing a failed write");
    if (!status.ok()) return status;
    return writer_db_.Run("RELEASE op", "undoing a failed write");
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

void SqliteLedger::Insert(Payout payout, std::string fingerprint,
                          Callback<absl::StatusOr<InsertResult>> done) {
  const std::string& registration = impl_->registration();
  impl_->Write<InsertResult>(
      [&registration, payout = std::move(payout),
       fingerprint = std::move(fingerprint)](
          Connection& db) -> absl::StatusOr<InsertResult> {
        if (payout.payout_id.empty() || payout.request_id.empty()) {
          return absl::InvalidArgumentError(
              "a payout needs a payout_id and a request_id");
        }
        absl::StatusOr<std::optional<StoredPayout>> existing =
            FindByRequestId(db, registration, payout.request_id);
        if (!existing.ok()) return existing.status();
        if (existing->has_value()) {
          return InsertResult{false, **std::move(existing)};
        }

        absl::StatusOr<Statement> insert = db.Prepare(
            "INSERT INTO payouts (payout_id, registration, request_id, "
            "fingerprint, state, account_number, ifsc, name, email, mobile, "
            "amount_paise, mode, transaction_id, transaction_reference_no, "
            "upstream_status, bank_beneficiary_name, failure, response, "
            "create_time_us, update_time_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
            "?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, NULL, ?18, "
            "?19)",
            "recording the payout");
        if (!insert.ok()) return insert.status();
        insert->Bind(1, payout.payout_id);
        insert->Bind(2, registration);
        insert->Bind(3, payout.request_id);
        insert->Bind(4, fingerprint);
        insert->Bind(5, static_cast<int>(PayoutState::kPending));
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
        if (absl::Status run = insert->Run(); !run.ok()) return run;
        if (absl::Status event = AppendEvent(
                db, payout.payout_id, PayoutState::kUnspecified,
                PayoutState::kPending, "recorded before calling AOPay",
                "gateway", payout.create_time);
            !event.ok()) {
          return event;
        }
        return InsertResult{true, StoredPayout{}};
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

void SqliteLedger::GetByRequestId(std::string request_id,
                                  Callback<absl::StatusOr<StoredPayout>> done) {
  const std::string& registration = impl_->registration();
  impl_->Read<StoredPayout>(
      [&registration, request_id = std::move(request_id)](Connection& db) {
        return SelectByRequestId(db, registration, request_id);
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
        absl::StatusOr<Statement> select = db.Prepare(
            ListSql(query.states, after.has_value()), "listing payouts");
        if (!select.ok()) return select.status();
        select->Bind(1, registration);
        // One row more than the page tells whether another page follows.
        select->Bind(2, page_size + 1);
        if (after.has_value()) select->Bind(3, *after);
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
          absl::StatusOr<StoredPayout> stored = ReadPayout(*select);
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
        // Their events go with them (ON DELETE CASCADE).
        absl::StatusOr<Statement> remove = db.Prepare(
            "DELETE FROM payouts WHERE registration = ?1 AND "
            "state IN (?2, ?3, ?4) AND final_time_us < ?5",
            "pruning old payouts");
        if (!remove.ok()) return remove.status();
        remove->Bind(1, registration);
        remove->Bind(2, static_cast<int>(PayoutState::kSucceeded));
        remove->Bind(3, static_cast<int>(PayoutState::kFailed));
        remove->Bind(4, static_cast<int>(PayoutState::kReversed));
        remove->Bind(5, absl::ToUnixMicros(cutoff));
        if (absl::Status run = remove->Run(); !run.ok()) return run;
        return remove->Changes();
      },
      std::move(done));
}

}  // namespace aopay
