#include <arpa/inet.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/errors.h"
#include "common/payout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/ledger/postgres/connection.h"
#include "server/ledger/postgres/postgres_ledger.h"
#include "server/ledger/postgres/schema.h"
#include "server/ledger/shared/row_format.h"
#include "server/ledger/sqlite/rows.h"
#include "server/ledger/sqlite/sqlite_ledger.h"
#include "server/ledger/sqlite/write_queue.h"
#include "spdlog/spdlog.h"
#include "tests/support/tcp_proxy.h"
#include "tests/support/test_postgres.h"

namespace aopay {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr absl::string_view kRegistration = "AOP-554";

// ---------------------------------------------------------------------------
// A VFS that wraps the default one and fails writes or syncs on demand.

struct Faults {
  std::atomic<bool> fail_writes{false};
  std::atomic<bool> fail_syncs{false};
  std::atomic<int> write_error{SQLITE_IOERR_WRITE};
  // Only the -wal file fails: the main file (its header, checkpoints) works.
  std::atomic<bool> wal_only{false};
  // While set, every sync waits: holds the writer inside a commit.
  absl::Mutex sync_mu;
  bool hold_syncs ABSL_GUARDED_BY(sync_mu) = false;
  int syncs_held ABSL_GUARDED_BY(sync_mu) = 0;
  // Files SQLite opened for its own temporary use (statement journals,
  // temporary tables and indexes).
  std::atomic<int> temp_file_opens{0};
};

Faults& TheFaults() {
  static Faults* faults = new Faults;
  return *faults;
}

sqlite3_vfs* base_vfs = nullptr;

struct FaultFile {
  sqlite3_file base;
  sqlite3_file* real;  // the default VFS's file, right after this struct
  bool is_wal;
};

sqlite3_file* Real(sqlite3_file* file) {
  return reinterpret_cast<FaultFile*>(file)->real;
}

int FaultClose(sqlite3_file* f) { return Real(f)->pMethods->xClose(Real(f)); }
int FaultRead(sqlite3_file* f, void* data, int n, sqlite3_int64 offset) {
  return Real(f)->pMethods->xRead(Real(f), data, n, offset);
}
bool Faulty(sqlite3_file* f) {
  return !TheFaults().wal_only.load() ||
         reinterpret_cast<FaultFile*>(f)->is_wal;
}

int FaultWrite(sqlite3_file* f, const void* data, int n, sqlite3_int64 offset) {
  if (TheFaults().fail_writes.load() && Faulty(f)) {
    return TheFaults().write_error.load();
  }
  return Real(f)->pMethods->xWrite(Real(f), data, n, offset);
}
int FaultTruncate(sqlite3_file* f, sqlite3_int64 size) {
  return Real(f)->pMethods->xTruncate(Real(f), size);
}
int FaultSync(sqlite3_file* f, int flags) {
  {
    Faults& faults = TheFaults();
    absl::MutexLock lock(&faults.sync_mu);
    if (faults.hold_syncs) {
      ++faults.syncs_held;
      faults.sync_mu.Await(absl::Condition(
          +[](bool* hold) { return !*hold; }, &faults.hold_syncs));
      --faults.syncs_held;
    }
  }
  if (TheFaults().fail_syncs.load() && Faulty(f)) return SQLITE_IOERR_FSYNC;
  return Real(f)->pMethods->xSync(Real(f), flags);
}
int FaultFileSize(sqlite3_file* f, sqlite3_int64* size) {
  return Real(f)->pMethods->xFileSize(Real(f), size);
}
int FaultLock(sqlite3_file* f, int level) {
  return Real(f)->pMethods->xLock(Real(f), level);
}
int FaultUnlock(sqlite3_file* f, int level) {
  return Real(f)->pMethods->xUnlock(Real(f), level);
}
int FaultCheckReservedLock(sqlite3_file* f, int* out) {
  return Real(f)->pMethods->xCheckReservedLock(Real(f), out);
}
int FaultFileControl(sqlite3_file* f, int op, void* arg) {
  return Real(f)->pMethods->xFileControl(Real(f), op, arg);
}
int FaultSectorSize(sqlite3_file* f) {
  return Real(f)->pMethods->xSectorSize(Real(f));
}
int FaultDeviceCharacteristics(sqlite3_file* f) {
  return Real(f)->pMethods->xDeviceCharacteristics(Real(f));
}
int FaultShmMap(sqlite3_file* f, int region, int size, int extend,
                void volatile** out) {
  return Real(f)->pMethods->xShmMap(Real(f), region, size, extend, out);
}
int FaultShmLock(sqlite3_file* f, int offset, int n, int flags) {
  return Real(f)->pMethods->xShmLock(Real(f), offset, n, flags);
}
void FaultShmBarrier(sqlite3_file* f) {
  Real(f)->pMethods->xShmBarrier(Real(f));
}
int FaultShmUnmap(sqlite3_file* f, int delete_flag) {
  return Real(f)->pMethods->xShmUnmap(Real(f), delete_flag);
}
int FaultFetch(sqlite3_file* f, sqlite3_int64 offset, int n, void** out) {
  return Real(f)->pMethods->xFetch(Real(f), offset, n, out);
}
int FaultUnfetch(sqlite3_file* f, sqlite3_int64 offset, void* p) {
  return Real(f)->pMethods->xUnfetch(Real(f), offset, p);
}

const sqlite3_io_methods kFaultIo = {
    3,
    FaultClose,
    FaultRead,
    FaultWrite,
    FaultTruncate,
    FaultSync,
    FaultFileSize,
    FaultLock,
    FaultUnlock,
    FaultCheckReservedLock,
    FaultFileControl,
    FaultSectorSize,
    FaultDeviceCharacteristics,
    FaultShmMap,
    FaultShmLock,
    FaultShmBarrier,
    FaultShmUnmap,
    FaultFetch,
    FaultUnfetch,
};

int FaultOpen(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* file,
              int flags, int* out_flags) {
  FaultFile* fault = reinterpret_cast<FaultFile*>(file);
  fault->real = reinterpret_cast<sqlite3_file*>(fault + 1);
  fault->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
  if ((flags & (SQLITE_OPEN_SUBJOURNAL | SQLITE_OPEN_TEMP_JOURNAL |
                SQLITE_OPEN_TEMP_DB | SQLITE_OPEN_TRANSIENT_DB)) != 0) {
    ++TheFaults().temp_file_opens;
  }
  const int rc = base_vfs->xOpen(base_vfs, name, fault->real, flags, out_flags);
  // SQLite closes a file whose pMethods is set even when xOpen failed.
  fault->base.pMethods = fault->real->pMethods != nullptr ? &kFaultIo : nullptr;
  return rc;
}
int FaultDelete(sqlite3_vfs*, const char* name, int sync_dir) {
  return base_vfs->xDelete(base_vfs, name, sync_dir);
}
int FaultAccess(sqlite3_vfs*, const char* name, int flags, int* out) {
  return base_vfs->xAccess(base_vfs, name, flags, out);
}
int FaultFullPathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return base_vfs->xFullPathname(base_vfs, name, n, out);
}
void* FaultDlOpen(sqlite3_vfs*, const char* name) {
  return base_vfs->xDlOpen(base_vfs, name);
}
void FaultDlError(sqlite3_vfs*, int n, char* out) {
  base_vfs->xDlError(base_vfs, n, out);
}
void (*FaultDlSym(sqlite3_vfs*, void* handle, const char* symbol))(void) {
  return base_vfs->xDlSym(base_vfs, handle, symbol);
}
void FaultDlClose(sqlite3_vfs*, void* handle) {
  base_vfs->xDlClose(base_vfs, handle);
}
int FaultRandomness(sqlite3_vfs*, int n, char* out) {
  return base_vfs->xRandomness(base_vfs, n, out);
}
int FaultSleep(sqlite3_vfs*, int micros) {
  return base_vfs->xSleep(base_vfs, micros);
}
int FaultCurrentTime(sqlite3_vfs*, double* out) {
  return base_vfs->xCurrentTime(base_vfs, out);
}
int FaultGetLastError(sqlite3_vfs*, int n, char* out) {
  return base_vfs->xGetLastError(base_vfs, n, out);
}
int FaultCurrentTimeInt64(sqlite3_vfs*, sqlite3_int64* out) {
  return base_vfs->xCurrentTimeInt64(base_vfs, out);
}

// Registers the VFS once and returns its name.
const char* FaultVfs() {
  static const char* name = [] {
    base_vfs = sqlite3_vfs_find(nullptr);
    static sqlite3_vfs vfs = {};
    vfs.iVersion = 2;
    vfs.szOsFile = static_cast<int>(sizeof(FaultFile)) + base_vfs->szOsFile;
    vfs.mxPathname = base_vfs->mxPathname;
    vfs.zName = "aopay-fault";
    vfs.xOpen = FaultOpen;
    vfs.xDelete = FaultDelete;
    vfs.xAccess = FaultAccess;
    vfs.xFullPathname = FaultFullPathname;
    vfs.xDlOpen = FaultDlOpen;
    vfs.xDlError = FaultDlError;
    vfs.xDlSym = FaultDlSym;
    vfs.xDlClose = FaultDlClose;
    vfs.xRandomness = FaultRandomness;
    vfs.xSleep = FaultSleep;
    vfs.xCurrentTime = FaultCurrentTime;
    vfs.xGetLastError = FaultGetLastError;
    vfs.xCurrentTimeInt64 = FaultCurrentTimeInt64;
    if (sqlite3_vfs_register(&vfs, /*makeDflt=*/0) != SQLITE_OK) abort();
    return vfs.zName;
  }();
  return name;
}

// ---------------------------------------------------------------------------
// Direct access to the file, to check what the ledger wrote.

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using Db = std::unique_ptr<sqlite3, DbCloser>;

Db OpenRaw(const std::string& path) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr),
            SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  return Db(db);
}

// The first column of the first row as text ("" for none or NULL).
std::string QueryText(const std::string& path, const std::string& sql) {
  Db db = OpenRaw(path);
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db.get(), sql.c_str(), -1, &stmt, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db.get());
  std::string value;
  if (sqlite3_step(stmt) == SQLITE_ROW &&
      sqlite3_column_text(stmt, 0) != nullptr) {
    value = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  sqlite3_finalize(stmt);
  return value;
}

// SQLite's result code for `sql`, with its message in *message.
int Exec(const std::string& path, const std::string& sql,
         std::string* message = nullptr) {
  Db db = OpenRaw(path);
  const int rc = sqlite3_exec(db.get(), sql.c_str(), nullptr, nullptr, nullptr);
  if (message != nullptr) *message = sqlite3_errmsg(db.get());
  return rc;
}

// ---------------------------------------------------------------------------
// Values and calls.

// "po_" + 26 characters; a larger n sorts later, like a later ULID.
std::string PayoutId(int n) { return absl::StrFormat("po_01J%023d", n); }

absl::Time T(int seconds) {
  return absl::FromUnixSeconds(1'700'000'000) + absl::Seconds(seconds);
}

Payout MakePayout(int n, std::string request_id = "") {
  Payout payout;
  payout.payout_id = PayoutId(n);
  payout.request_id =
      request_id.empty() ? absl::StrFormat("req-%04d", n) : request_id;
  payout.state = PayoutState::kPending;
  payout.beneficiary.account_number = "100000011836";
  payout.beneficiary.ifsc = "SBIN0000002";
  payout.beneficiary.name = "Dean Jon";
  payout.beneficiary.email = "dean@example.com";
  payout.beneficiary.mobile = "9959640000";
  payout.amount_paise = 1200 + n;
  payout.mode = TransferMode::kImps;
  payout.create_time = T(n) + absl::Microseconds(17);
  payout.update_time = payout.create_time;
  return payout;
}

// MakePayout(n) held for approval (above its client's threshold).
Payout HeldPayout(int n) {
  Payout held = MakePayout(n);
  held.state = PayoutState::kAwaitingApproval;
  return held;
}

// Payout n of `client`, for `amount_paise`.
Payout ClientPayout(int n, std::string client, int64_t amount_paise) {
  Payout payout = MakePayout(n);
  payout.client = std::move(client);
  payout.amount_paise = amount_paise;
  return payout;
}

// India Standard Time, without needing the time zone database.
const absl::TimeZone kIndia = absl::FixedTimeZone((5 * 60 + 30) * 60);

// The calendar day in India of the payouts MakePayout makes (T(n) is 03:43
// IST on 15 November 2023).
absl::Time DayStart() {
  return absl::FromCivil(absl::CivilDay(2023, 11, 15), kIndia);
}
absl::Time DayEnd() { return DayStart() + absl::Hours(24); }
DailyLimit Limit(int64_t limit_paise) {
  return DailyLimit{limit_paise, DayStart(), DayEnd()};
}

PayoutChange Change(const std::string& payout_id, PayoutState from,
                    PayoutState to, absl::Time time = T(1000)) {
  PayoutChange change;
  change.payout_id = payout_id;
  change.expected_state = from;
  change.new_state = to;
  change.why = absl::StrCat("test moves it to ", PayoutStateName(to));
  change.who = "gateway";
  change.time = time;
  return change;
}

// Runs an asynchronous ledger call and waits for its callback, which must
// come once, on another thread.
template <typename T, typename Start>
T Call(Start start) {
  absl::Notification done;  // Notify() twice aborts: a second callback fails
  std::optional<T> result;
  std::thread::id caller = std::this_thread::get_id();
  std::thread::id callee;
  start([&](T value) {
    callee = std::this_thread::get_id();
    result.emplace(std::move(value));
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_NE(callee, caller) << "the callback ran inside the call";
  return *std::move(result);
}

InsertRequest Request(Payout payout, std::string fingerprint = "fp",
                      std::optional<DailyLimit> daily_limit = std::nullopt) {
  InsertRequest request;
  request.payout = std::move(payout);
  request.fingerprint = std::move(fingerprint);
  request.daily_limit = std::move(daily_limit);
  return request;
}

absl::StatusOr<InsertResult> Insert(Ledger& ledger, const Payout& payout,
                                    std::string fingerprint = "fp-1") {
  return Call<absl::StatusOr<InsertResult>>([&](auto done) {
    ledger.Insert(Request(payout, std::move(fingerprint)), std::move(done));
  });
}
absl::StatusOr<InsertResult> InsertWithin(Ledger& ledger, const Payout& payout,
                                          const DailyLimit& limit) {
  return Call<absl::StatusOr<InsertResult>>([&](auto done) {
    ledger.Insert(Request(payout, "fp-1", limit), std::move(done));
  });
}
absl::StatusOr<InsertResult> InsertUnder(
    Ledger& ledger, const Payout& payout, int64_t max_payout_paise,
    std::optional<DailyLimit> daily_limit = std::nullopt) {
  return Call<absl::StatusOr<InsertResult>>([&](auto done) {
    InsertRequest request = Request(payout, "fp-1", std::move(daily_limit));
    request.max_payout_paise = max_payout_paise;
    ledger.Insert(std::move(request), std::move(done));
  });
}
absl::StatusOr<StoredPayout> Apply(Ledger& ledger, PayoutChange change) {
  return Call<absl::StatusOr<StoredPayout>>(
      [&](auto done) { ledger.Apply(std::move(change), std::move(done)); });
}
absl::Status Forget(Ledger& ledger, std::string payout_id) {
  return Call<absl::Status>(
      [&](auto done) { ledger.Forget(std::move(payout_id), std::move(done)); });
}
absl::StatusOr<StoredPayout> GetById(Ledger& ledger, std::string payout_id) {
  return Call<absl::StatusOr<StoredPayout>>([&](auto done) {
    ledger.GetByPayoutId(std::move(payout_id), std::move(done));
  });
}
absl::StatusOr<StoredPayout> GetByKey(Ledger& ledger, std::string client,
                                      std::string request_id) {
  return Call<absl::StatusOr<StoredPayout>>([&](auto done) {
    ledger.GetByRequestId(std::move(client), std::move(request_id),
                          std::move(done));
  });
}
// The anonymous client's payout.
absl::StatusOr<StoredPayout> GetByRequest(Ledger& ledger,
                                          std::string request_id) {
  return GetByKey(ledger, std::string(), std::move(request_id));
}
absl::StatusOr<ListPage> List(Ledger& ledger, ListQuery query) {
  return Call<absl::StatusOr<ListPage>>(
      [&](auto done) { ledger.List(std::move(query), std::move(done)); });
}
absl::StatusOr<std::vector<PayoutEvent>> Events(Ledger& ledger,
                                                std::string payout_id) {
  return Call<absl::StatusOr<std::vector<PayoutEvent>>>(
      [&](auto done) { ledger.Events(std::move(payout_id), std::move(done)); });
}
// Retention pruning, as it runs long after the changes it prunes: events
// have their watch positions by then (on PostgreSQL a read gives them now,
// unless another sequencing holds the sequencer; SQLite needs none).
absl::StatusOr<int> Prune(Ledger& ledger, absl::Time cutoff) {
  absl::StatusOr<EventBatch> sequenced = Call<absl::StatusOr<EventBatch>>(
      [&](auto done) { ledger.EventsAfter(0, 0, std::move(done)); });
  if (!sequenced.ok()) return sequenced.status();
  return Call<absl::StatusOr<int>>(
      [&](auto done) { ledger.Prune(cutoff, std::move(done)); });
}

// Inserts a payout and moves it along `path` of states.
void InsertIn(Ledger& ledger, const Payout& payout,
              std::vector<PayoutState> path = {}) {
  absl::StatusOr<InsertResult> inserted = Insert(ledger, payout);
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  ASSERT_TRUE(inserted->inserted);
  PayoutState state = PayoutState::kPending;
  for (PayoutState next : path) {
    absl::StatusOr<StoredPayout> applied =
        Apply(ledger, Change(payout.payout_id, state, next));
    ASSERT_TRUE(applied.ok()) << applied.status();
    state = next;
  }
}

void ExpectSameStatus(const absl::Status& actual,
                      const absl::Status& expected) {
  EXPECT_EQ(actual.code(), expected.code());
  EXPECT_EQ(actual.message(), expected.message());
  EXPECT_EQ(GetErrorDetails(actual), GetErrorDetails(expected));
}

void ExpectSamePayout(const Payout& actual, const Payout& expected) {
  EXPECT_EQ(actual.payout_id, expected.payout_id);
  EXPECT_EQ(actual.client, expected.client);
  EXPECT_EQ(actual.request_id, expected.request_id);
  EXPECT_EQ(actual.state, expected.state);
  EXPECT_EQ(actual.beneficiary, expected.beneficiary);
  EXPECT_EQ(actual.amount_paise, expected.amount_paise);
  EXPECT_EQ(actual.mode, expected.mode);
  EXPECT_EQ(actual.transaction_id, expected.transaction_id);
  EXPECT_EQ(actual.transaction_reference_no, expected.transaction_reference_no);
  EXPECT_EQ(actual.upstream_status, expected.upstream_status);
  EXPECT_EQ(actual.bank_beneficiary_name, expected.bank_beneficiary_name);
  ExpectSameStatus(actual.failure, expected.failure);
  EXPECT_EQ(actual.create_time, expected.create_time);
  EXPECT_EQ(actual.update_time, expected.update_time);
}

std::vector<std::string> Ids(const ListPage& page) {
  std::vector<std::string> ids;
  for (const Payout& payout : page.payouts) ids.push_back(payout.payout_id);
  return ids;
}

// Takes a ledger file back to schema version 2, as a gateway of that
// version left it: payouts without a client, the key a table constraint on
// (registration, request_id). Only for files whose payouts are all the
// anonymous client's.
constexpr char kDowngradeToVersion2[] = R"sql(
PRAGMA foreign_keys = OFF;
BEGIN;
DROP TABLE webhook_outbox;
DROP TABLE daily_spent;
CREATE TABLE payouts_v2 (
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
  final_time_us INTEGER,
  UNIQUE (registration, request_id)
);
INSERT INTO payouts_v2 SELECT payout_id, registration, request_id, fingerprint,
  state, account_number, ifsc, name, email, mobile, amount_paise, mode,
  transaction_id, transaction_reference_no, upstream_status,
  bank_beneficiary_name, failure, response, payout_answer, status_answer,
  create_time_us, update_time_us, final_time_us FROM payouts;
DROP TRIGGER payout_events_deleted_with_payout;
DROP TABLE payouts;
ALTER TABLE payouts_v2 RENAME TO payouts;
CREATE INDEX payouts_by_registration ON payouts (registration, payout_id);
CREATE INDEX payouts_by_state ON payouts (registration, state, payout_id);
CREATE INDEX payouts_by_transaction_id ON payouts (transaction_id)
  WHERE transaction_id <> '';
CREATE INDEX payouts_by_final_time ON payouts (registration, final_time_us)
  WHERE final_time_us IS NOT NULL;
CREATE TRIGGER payout_events_deleted_with_payout BEFORE DELETE ON payout_events
  WHEN EXISTS (SELECT 1 FROM payouts WHERE payout_id = OLD.payout_id)
BEGIN
  SELECT RAISE(ABORT, 'payout_events are deleted only with their payout');
END;
DELETE FROM schema_version WHERE version > 2;
COMMIT;
)sql";

void DowngradeToVersion2(const std::string& path) {
  ASSERT_EQ(QueryText(path, "SELECT count(*) FROM payouts WHERE client <> ''"),
            "0");
  std::string message;
  ASSERT_EQ(Exec(path, kDowngradeToVersion2, &message), SQLITE_OK) << message;
  ASSERT_EQ(QueryText(path,
                      "SELECT count(*) FROM pragma_table_info('payouts') "
                      "WHERE name = 'client'"),
            "0");
}

std::string MakeTempDir() {
  std::string pattern = ::testing::TempDir() + "/sqlite_ledger_XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) abort();
  return pattern;
}

class SqliteLedgerTest : public ::testing::Test {
 protected:
  SqliteLedgerOptions Options() const {
    SqliteLedgerOptions options;
    options.path = path_;
    options.registration_id = std::string(kRegistration);
    return options;
  }

  std::unique_ptr<SqliteLedger> OpenLedger(SqliteLedgerOptions options) {
    absl::StatusOr<std::unique_ptr<SqliteLedger>> ledger =
        SqliteLedger::Open(std::move(options));
    EXPECT_TRUE(ledger.ok()) << ledger.status();
    if (!ledger.ok()) return nullptr;
    return *std::move(ledger);
  }
  std::unique_ptr<SqliteLedger> OpenLedger() { return OpenLedger(Options()); }
  // On the fault-injecting VFS (TheFaults()), no fault set.
  std::unique_ptr<SqliteLedger> OpenLedgerOnFaultVfs() {
    SqliteLedgerOptions options = Options();
    options.vfs = FaultVfs();
    return OpenLedger(std::move(options));
  }

  const std::string dir_ = MakeTempDir();
  const std::string path_ = dir_ + "/ledger.db";
};

// ---------------------------------------------------------------------------
// What every ledger promises, run on SQLite and on a real PostgreSQL
// (tests/support/test_postgres.h).

enum class Backend { kSqlite, kPostgres };

class LedgerSuite : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::kPostgres) {
      absl::StatusOr<std::string> uri = test_support::NewTestDatabase();
      ASSERT_TRUE(uri.ok()) << uri.status();
      uri_ = *std::move(uri);
    }
  }

  std::unique_ptr<Ledger> OpenLedger(
      std::string registration = std::string(kRegistration)) {
    if (GetParam() == Backend::kSqlite) {
      SqliteLedgerOptions options;
      options.path = path_;
      options.registration_id = std::move(registration);
      absl::StatusOr<std::unique_ptr<SqliteLedger>> ledger =
          SqliteLedger::Open(std::move(options));
      EXPECT_TRUE(ledger.ok()) << ledger.status();
      if (!ledger.ok()) return nullptr;
      return *std::move(ledger);
    }
    PostgresLedgerOptions options;
    options.uri = uri_;
    options.registration_id = std::move(registration);
    absl::StatusOr<std::unique_ptr<PostgresLedger>> ledger =
        PostgresLedger::Open(std::move(options));
    EXPECT_TRUE(ledger.ok()) << ledger.status();
    if (!ledger.ok()) return nullptr;
    EXPECT_TRUE((*ledger)->Healthy());
    return *std::move(ledger);
  }

  // The first column of the first row of `sql`, as text.
  std::string Query(const std::string& sql) {
    return GetParam() == Backend::kSqlite ? QueryText(path_, sql)
                                          : test_support::PgScalar(uri_, sql);
  }

  const std::string dir_ = MakeTempDir();
  const std::string path_ = dir_ + "/ledger.db";
  std::string uri_;
};

INSTANTIATE_TEST_SUITE_P(Backends, LedgerSuite,
                         ::testing::Values(Backend::kSqlite,
                                           Backend::kPostgres),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kSqlite ? "Sqlite"
                                                                 : "Postgres";
                         });

// ---------------------------------------------------------------------------

TEST_P(LedgerSuite, InsertedPayoutIsFoundByBothIds) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  const Payout payout = MakePayout(1);
  absl::StatusOr<InsertResult> inserted = Insert(*ledger, payout, "fp-abc");
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_TRUE(inserted->inserted);

  for (const absl::StatusOr<StoredPayout>& stored :
       {GetById(*ledger, payout.payout_id),
        GetByRequest(*ledger, payout.request_id)}) {
    ASSERT_TRUE(stored.ok()) << stored.status();
    ExpectSamePayout(stored->payout, payout);
    EXPECT_EQ(stored->fingerprint, "fp-abc");
    EXPECT_TRUE(stored->response.ok());
  }

  absl::StatusOr<std::vector<PayoutEvent>> events =
      Events(*ledger, payout.payout_id);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].payout_id, payout.payout_id);
  EXPECT_EQ((*events)[0].from, PayoutState::kUnspecified);
  EXPECT_EQ((*events)[0].to, PayoutState::kPending);
  EXPECT_EQ((*events)[0].who, "gateway");
  EXPECT_EQ((*events)[0].time, payout.create_time);

  for (const absl::StatusOr<StoredPayout>& missing :
       {GetById(*ledger, PayoutId(99)), GetByRequest(*ledger, "req-none")}) {
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(GetErrorDetails(missing.status()).reason, reason::kNotFound);
  }
  EXPECT_EQ(Events(*ledger, PayoutId(99)).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SqliteLedgerTest, DuplicateKeyReturnsTheExistingRowAndWritesNothing) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  const Payout first = MakePayout(1, "req-same");
  ASSERT_TRUE(Insert(*ledger, first, "fp-first").ok());
  const SqliteLedger::Stats before = ledger->stats();

  Payout second = MakePayout(2, "req-same");
  second.amount_paise = 999'999;
  absl::StatusOr<InsertResult> again = Insert(*ledger, second, "fp-second");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->inserted);
  ExpectSamePayout(again->existing.payout, first);
  EXPECT_EQ(again->existing.fingerprint, "fp-first");

  EXPECT_EQ(GetById(*ledger, second.payout_id).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM payouts"), "1");
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM payout_events"), "1");
  EXPECT_EQ(ledger->stats().writes, before.writes + 1);
}

// The key is (registration, client, request_id): clients choose their
// request ids on their own, and one client's id must neither block nor
// replay another's payout.
TEST_P(LedgerSuite, TwoClientsMayUseTheSameRequestId) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  std::vector<Payout> payouts;
  for (const char* client : {"alpha", "beta", ""}) {
    Payout payout =
        MakePayout(static_cast<int>(payouts.size()) + 1, "req-same");
    payout.client = client;
    payouts.push_back(payout);
    absl::StatusOr<InsertResult> inserted = Insert(*ledger, payout);
    ASSERT_TRUE(inserted.ok()) << inserted.status();
    EXPECT_TRUE(inserted->inserted) << "client \"" << client << "\"";
  }
  EXPECT_EQ(Query("SELECT count(*) FROM payouts"), "3");
  for (const Payout& payout : payouts) {
    absl::StatusOr<StoredPayout> stored =
        GetByKey(*ledger, payout.client, "req-same");
    ASSERT_TRUE(stored.ok()) << stored.status();
    ExpectSamePayout(stored->payout, payout);
    absl::StatusOr<StoredPayout> by_id = GetById(*ledger, payout.payout_id);
    ASSERT_TRUE(by_id.ok()) << by_id.status();
    EXPECT_EQ(by_id->payout.client, payout.client);
  }
}

TEST_P(LedgerSuite, TheCreationEventNamesTheClient) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  Payout payout = MakePayout(1);
  payout.client = "payroll-svc";
  ASSERT_TRUE(Insert(*ledger, payout).ok());
  absl::StatusOr<std::vector<PayoutEvent>> events =
      Events(*ledger, payout.payout_id);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].who, "client payroll-svc");
}

TEST_P(LedgerSuite, AClientsRequestIdStillDedupes) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  const Payout first = ClientPayout(1, "alpha", 1200);
  ASSERT_TRUE(Insert(*ledger, first, "fp-first").ok());

  Payout second = ClientPayout(2, "alpha", 999'999);
  second.request_id = first.request_id;
  absl::StatusOr<InsertResult> again = Insert(*ledger, second, "fp-second");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->inserted);
  EXPECT_FALSE(again->over_daily_limit);
  ExpectSamePayout(again->existing.payout, first);
  EXPECT_EQ(again->existing.fingerprint, "fp-first");
  EXPECT_EQ(Query("SELECT count(*) FROM payouts"), "1");
}

TEST_P(LedgerSuite, GetByRequestIdDoesNotFindAnotherClientsPayout) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  const Payout alpha = ClientPayout(1, "alpha", 1200);
  InsertIn(*ledger, alpha);
  ASSERT_TRUE(GetByKey(*ledger, "alpha", alpha.request_id).ok());
  for (const char* other : {"beta", "", "ALPHA", "alph"}) {
    absl::StatusOr<StoredPayout> missing =
        GetByKey(*ledger, other, alpha.request_id);
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << other;
    EXPECT_EQ(GetErrorDetails(missing.status()).reason, reason::kNotFound);
    // Nothing says that another client has the id.
    EXPECT_FALSE(absl::StrContains(missing.status().message(), "alpha"))
        << missing.status();
  }
}

// A ledger belongs to one AOPay registration: opened with another one (a
// changed or mistyped --registration_id), its old request ids would look new
// and be sent again, and its PENDING payouts would never be recovered.
// The detail lines of SQLite's plan for `sql` on the ledger file at `path`.
std::vector<std::string> QueryPlan(const std::string& path,
                                   const std::string& sql) {
  std::vector<std::string> plan;
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, ("EXPLAIN QUERY PLAN " + sql).c_str(), -1,
                               &stmt, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  while (stmt != nullptr && sqlite3_step(stmt) == SQLITE_ROW) {
    plan.emplace_back(
        reinterpret_cast<const char*>(sqlite3_column_text(stmt, 3)));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return plan;
}

// A watch page and the webhook outbox's batch must not scan every payout of
// the registration and sort their events: their cost would grow with the
// ledger (with a few thousand payouts, 1,000 watchers tripled the CPU a
// payout costs).
TEST_F(SqliteLedgerTest, EventReadsWalkEventsInOrderNotEveryPayout) {
  OpenLedger().reset();  // the schema, as the gateway makes it
  const std::vector<std::string> events =
      QueryPlan(path_, sqlite_internal::EventsAfterSql());
  ASSERT_FALSE(events.empty());
  EXPECT_THAT(events[0], HasSubstr("SEARCH e USING INTEGER PRIMARY KEY"));
  const std::vector<std::string> outbox =
      QueryPlan(path_, sqlite_internal::OutboxDueSql());
  ASSERT_FALSE(outbox.empty());
  EXPECT_EQ(outbox[0], "SCAN o");
  for (const std::vector<std::string>* plan : {&events, &outbox}) {
    for (const std::string& step : *plan) {
      EXPECT_THAT(step, Not(HasSubstr("TEMP B-TREE"))) << step;
      // Payouts are looked up one by one, by id.
      if (absl::StartsWith(step, "SEARCH p") ||
          absl::StartsWith(step, "SCAN p")) {
        EXPECT_THAT(step, HasSubstr("payout_id=?")) << step;
      }
    }
  }
}

// A caller without read_all lists only its own payouts. Without an index
// led by (registration, client) SQLite walked every payout of the
// registration in id order for them: on a ledger of 1,000,000 payouts a
// client with none waited 10 s for its empty page, and every read of the
// gateway (GetPayout included) waited behind it on the reader thread.
TEST_F(SqliteLedgerTest, AClientsListWalksOnlyThatClientsPayouts) {
  OpenLedger().reset();  // the schema, as the gateway makes it
  for (const std::vector<PayoutState>& states :
       std::vector<std::vector<PayoutState>>{
           {},
           {PayoutState::kUnknown},
           {PayoutState::kUnknown, PayoutState::kFailed}}) {
    const std::vector<std::string> plan = QueryPlan(
        path_, ledger_internal::ListSql(states, true, /*client=*/true, '?'));
    int walks = 0;
    for (const std::string& step : plan) {
      if (!absl::StartsWith(step, "SEARCH payouts")) continue;
      EXPECT_THAT(step, HasSubstr("USING INDEX payouts_by_client "
                                  "(registration=? AND client=? AND "
                                  "state=? AND payout_id<?)"));
      ++walks;
    }
    EXPECT_EQ(walks, states.empty() ? 8 : static_cast<int>(states.size()))
        << absl::StrJoin(plan, "; ");
  }
}

// A list of several states (payoutctl list --state UNKNOWN --state FAILED)
// walked every payout of the registration in id order for the few in those
// states: 1 s on a ledger of 1,000,000 payouts with none of them.
TEST_F(SqliteLedgerTest, AListOfSeveralStatesWalksEachStatesPayouts) {
  OpenLedger().reset();
  {
    const std::vector<std::string> plan = QueryPlan(
        path_,
        ledger_internal::ListSql({PayoutState::kUnknown, PayoutState::kFailed},
                                 true, /*client=*/false, '?'));
    int walks = 0;
    for (const std::string& step : plan) {
      EXPECT_THAT(step, Not(HasSubstr("payouts_by_registration"))) << step;
      EXPECT_THAT(step, Not(HasSubstr("SCAN payouts"))) << step;
      if (absl::StrContains(step, "USING INDEX payouts_by_state")) ++walks;
    }
    EXPECT_EQ(walks, 2) << absl::StrJoin(plan, "; ");
  }
}

TEST_F(SqliteLedgerTest, RefusesALedgerHoldingPayoutsOfAnotherRegistration) {
  {
    auto ledger = OpenLedger();
    ASSERT_NE(ledger, nullptr);
    ASSERT_TRUE(Insert(*ledger, MakePayout(1, "req-shared")).ok());
  }
  SqliteLedgerOptions other_options = Options();
  other_options.registration_id = "AOP-999";
  absl::StatusOr<std::unique_ptr<SqliteLedger>> other =
      SqliteLedger::Open(other_options);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(other.status().message()),
              HasSubstr("another AOPay registration"));
  EXPECT_FALSE(absl::StrContains(other.status().message(), "\n"));
  // Neither registration id is named: both are secrets.
  EXPECT_FALSE(absl::StrContains(other.status().message(), "AOP-999"));
  EXPECT_FALSE(absl::StrContains(other.status().message(), kRegistration));

  // Nothing was changed: the right registration opens it as before.
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  absl::StatusOr<StoredPayout> mine = GetByRequest(*ledger, "req-shared");
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ(mine->payout.payout_id, PayoutId(1));
}

TEST_F(SqliteLedgerTest, RecordsItsRegistration) {
  { ASSERT_NE(OpenLedger(), nullptr); }
  EXPECT_EQ(QueryText(path_,
                      "SELECT value FROM ledger_meta WHERE key = "
                      "'registration'"),
            kRegistration);
  // An empty ledger may still be taken over by another registration.
  SqliteLedgerOptions other_options = Options();
  other_options.registration_id = "AOP-999";
  { ASSERT_NE(OpenLedger(other_options), nullptr); }
  EXPECT_EQ(QueryText(path_,
                      "SELECT value FROM ledger_meta WHERE key = "
                      "'registration'"),
            "AOP-999");
}

TEST_F(SqliteLedgerTest, OneProcessAtATimeHoldsTheLedger) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  absl::StatusOr<std::unique_ptr<SqliteLedger>> second =
      SqliteLedger::Open(Options());
  ASSERT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()),
              ::testing::HasSubstr("in use by another gateway process"));
  ledger->Close();
  second = SqliteLedger::Open(Options());
  EXPECT_TRUE(second.ok()) << second.status();
}

// --- group commit pacing (times passed in: no clock, no sleeps) ------------

using sqlite_internal::CommitPacer;

// `batches` batches of `writes` each, `gap` apart, from `start`.
absl::Time Feed(CommitPacer& pacer, absl::Time start, int batches,
                size_t writes, absl::Duration gap) {
  absl::Time now = start;
  for (int i = 0; i < batches; ++i) {
    now += gap;
    pacer.Took(writes, now);
  }
  return now;
}

TEST(CommitPacerTest, CommitsAtOnceUntilItHasSeenARate) {
  CommitPacer pacer(absl::Milliseconds(2), 512);
  EXPECT_EQ(pacer.Target(), 0u);
  EXPECT_EQ(pacer.QuietGap(), absl::Milliseconds(2));
  pacer.Took(50, absl::UnixEpoch());  // the first batch has no gap before it
  EXPECT_EQ(pacer.Target(), 0u);
}

TEST(CommitPacerTest, WaitsForTheWritesASteadyStreamBringsWithinTheDelay) {
  CommitPacer pacer(absl::Milliseconds(2), 512);
  // 8 writes every millisecond: 8,000 a second, 16 within the delay.
  Feed(pacer, absl::UnixEpoch(), 40, 8, absl::Milliseconds(1));
  EXPECT_EQ(pacer.Target(), 16u);
}

TEST(CommitPacerTest, AQuietGapOfAFewMeanGapsEndsTheWait) {
  CommitPacer pacer(kDefaultCommitDelay, 512);
  // 2 writes every 5 ms: 400 a second, a write every 2.5 ms.
  Feed(pacer, absl::UnixEpoch(), 40, 2, absl::Milliseconds(5));
  EXPECT_NEAR(absl::ToDoubleMilliseconds(pacer.QuietGap()),
              CommitPacer::kQuietGaps * 2.5, 0.01);
}

// At a busy stream a few mean gaps are a fraction of a millisecond: the
// writer would wake that often only to find more writes coming.
TEST(CommitPacerTest, NeverLooksForAQuietGapMoreOftenThanTheFloorSays) {
  CommitPacer pacer(absl::Milliseconds(2), 512);
  // 8,000 writes a second: three mean gaps are 375 µs.
  Feed(pacer, absl::UnixEpoch(), 40, 8, absl::Milliseconds(1));
  EXPECT_EQ(pacer.QuietGap(),
            absl::Milliseconds(2) * CommitPacer::kMinQuietGapOfDelay);
  EXPECT_GT(pacer.QuietGap(), absl::Microseconds(375));
}

TEST(CommitPacerTest, ALoneCallerOrATrickleNeverWaits) {
  CommitPacer pacer(absl::Milliseconds(2), 512);
  // One caller, each write after the last one's commit: 1 per millisecond
  // is 2 within the delay, fewer than kMinSiblings.
  Feed(pacer, absl::UnixEpoch(), 40, 1, absl::Milliseconds(1));
  EXPECT_LT(2 * 1.0, CommitPacer::kMinSiblings);
  EXPECT_EQ(pacer.Target(), 0u);
}

// At the default delay many writes fit in one wait even at a modest rate;
// a gateway that far from busy does not trade its callers' latency (and a
// closed loop's throughput) for CPU it does not need.
TEST(CommitPacerTest, BelowTheRateFloorNeverWaitsWhateverTheDelay) {
  CommitPacer pacer(kDefaultCommitDelay, 512);
  absl::Time now = Feed(pacer, absl::UnixEpoch(), 40, 3, absl::Milliseconds(2));
  ASSERT_LT(1500.0, CommitPacer::kMinWritesPerSecond);
  EXPECT_EQ(pacer.Target(), 0u);  // 1,500/s: 30 within 20 ms, yet no wait
  Feed(pacer, now, 40, 6, absl::Milliseconds(2));
  EXPECT_EQ(pacer.Target(), 60u);  // 3,000/s
}

// Callers each waiting for an AOPay of varying speed: a batch often comes
// right after the last one, then nothing for a while. 200 writes a second
// must read as 200, not as the average of 10,000 and 100.
TEST(CommitPacerTest, AnUnevenStreamIsMeasuredByItsWritesOverItsTime) {
  CommitPacer pacer(kDefaultCommitDelay, 512);
  absl::Time now = absl::UnixEpoch();
  for (int i = 0; i < 40; ++i) {
    now += absl::Microseconds(100);
    pacer.Took(1, now);
    now += absl::Microseconds(9900);
    pacer.Took(1, now);
  }
  EXPECT_EQ(pacer.Target(), 0u);
  EXPECT_NEAR(absl::ToDoubleMilliseconds(pacer.QuietGap()), 15, 3);
}

TEST(CommitPacerTest, NeverWaitsForMoreThanOneBatchHolds) {
  CommitPacer pacer(absl::Milliseconds(50), 64);
  Feed(pacer, absl::UnixEpoch(), 40, 500, absl::Milliseconds(1));
  EXPECT_EQ(pacer.Target(), 64u);
}

TEST(CommitPacerTest, ZeroDelayNeverWaits) {
  CommitPacer pacer(absl::ZeroDuration(), 512);
  Feed(pacer, absl::UnixEpoch(), 40, 100, absl::Milliseconds(1));
  EXPECT_EQ(pacer.Target(), 0u);
  EXPECT_EQ(pacer.QuietGap(), absl::ZeroDuration());
}

TEST(CommitPacerTest, AnIdleSpellForgetsTheOldRate) {
  CommitPacer pacer(absl::Milliseconds(2), 512);
  absl::Time now = Feed(pacer, absl::UnixEpoch(), 40, 8, absl::Milliseconds(1));
  ASSERT_GT(pacer.Target(), 0u);
  // Five quiet seconds, then one write: the busy stream is over.
  pacer.Took(1, now + absl::Seconds(5));
  EXPECT_EQ(pacer.Target(), 0u);
}

TEST(CommitPacerTest, FollowsAChangeOfLoadWithinAFewBatches) {
  CommitPacer pacer(absl::Milliseconds(2), 512);
  absl::Time now = Feed(pacer, absl::UnixEpoch(), 40, 1, absl::Milliseconds(1));
  ASSERT_EQ(pacer.Target(), 0u);
  // The load rises to 16 writes a millisecond: waiting pays within a few
  // batches, and one burst alone does not make it wait.
  now = Feed(pacer, now, 1, 16, absl::Milliseconds(1));
  // 0.75 * 1,000/s + 0.25 * 16,000/s = 4,750/s: 9.5 writes in 2 ms.
  EXPECT_EQ(pacer.Target(), 10u);
  Feed(pacer, now, 10, 16, absl::Milliseconds(1));
  EXPECT_GE(pacer.Target(), 28u);
}

TEST(CommitPacerTest, StopsWaitingOnceEveryCallerHasAWriteQueued) {
  CommitPacer pacer(absl::Milliseconds(20), 512);
  Feed(pacer, absl::UnixEpoch(), 40, 8, absl::Milliseconds(1));
  ASSERT_GT(pacer.Target(), 4u);  // the rate alone says wait for more
  // Four callers, each waiting for its answer: once all four have a write
  // queued, nothing more can come until this commit answers them.
  for (size_t calls : {1, 2, 3, 4}) pacer.SawCalls(calls);
  EXPECT_FALSE(pacer.EveryCallerQueued(3, 4));
  EXPECT_TRUE(pacer.EveryCallerQueued(4, 4));
  // Other writes (webhook deliveries) queued beside them change nothing.
  EXPECT_TRUE(pacer.EveryCallerQueued(6, 4));
}

TEST(CommitPacerTest, KeepsWaitingWhileFewerCallersThanRecentlyAreInFlight) {
  CommitPacer pacer(absl::Milliseconds(20), 512);
  absl::Time now = Feed(pacer, absl::UnixEpoch(), 1, 8, absl::Milliseconds(1));
  // An open stream: 30 calls were in flight a moment ago; the 10 in flight
  // now, all queued, are not everyone: newcomers keep arriving.
  pacer.SawCalls(30);
  EXPECT_FALSE(pacer.EveryCallerQueued(10, 10));
  EXPECT_TRUE(pacer.EveryCallerQueued(30, 30));
  // No calls in flight: the queued writes are someone else's (a refresh
  // not counted, a probe); the rate decides.
  EXPECT_FALSE(pacer.EveryCallerQueued(5, 0));
  // The peak is forgotten after two windows of batches without it.
  now = Feed(pacer, now, CommitPacer::kCallWindowBatches, 8,
             absl::Milliseconds(1));
  EXPECT_FALSE(pacer.EveryCallerQueued(10, 10));
  pacer.SawCalls(10);
  Feed(pacer, now, CommitPacer::kCallWindowBatches, 8, absl::Milliseconds(1));
  EXPECT_TRUE(pacer.EveryCallerQueued(10, 10));
}

TEST_P(LedgerSuite, ApplyChangesTheRowAndAppendsAnEvent) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  const Payout payout = MakePayout(1);
  ASSERT_TRUE(Insert(*ledger, payout).ok());

  PayoutChange accept = Change(payout.payout_id, PayoutState::kPending,
                               PayoutState::kAccepted, T(50));
  accept.transaction_id = "TERF920898";
  accept.transaction_reference_no = "505914786331";
  accept.upstream_status = "ACPT";
  accept.bank_beneficiary_name = "ABC";
  accept.response = absl::OkStatus();
  accept.raw_answer = absl::StrCat(R"({"statuss":"SUCCESS","registrationID":")",
                                   kRegistration, R"("})");
  accept.answer_kind = PayoutChange::AnswerKind::kPayout;
  accept.why = "AOPay accepted the payout";
  absl::StatusOr<StoredPayout> applied = Apply(*ledger, accept);
  ASSERT_TRUE(applied.ok()) << applied.status();

  Payout expected = payout;
  expected.state = PayoutState::kAccepted;
  expected.transaction_id = "TERF920898";
  expected.transaction_reference_no = "505914786331";
  expected.upstream_status = "ACPT";
  expected.bank_beneficiary_name = "ABC";
  expected.update_time = T(50);
  ExpectSamePayout(applied->payout, expected);
  absl::StatusOr<StoredPayout> stored = GetById(*ledger, payout.payout_id);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ExpectSamePayout(stored->payout, expected);

  // A status answer goes to its own column; unset fields stay as they were.
  PayoutChange settle = Change(payout.payout_id, PayoutState::kAccepted,
                               PayoutState::kSucceeded, T(60));
  settle.upstream_status = "SUCCESS";
  settle.raw_answer = R"({"status":"SUCCESS"})";
  settle.answer_kind = PayoutChange::AnswerKind::kStatus;
  settle.who = "refresh";
  applied = Apply(*ledger, settle);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->payout.state, PayoutState::kSucceeded);
  EXPECT_EQ(applied->payout.transaction_id, "TERF920898");
  EXPECT_EQ(applied->payout.upstream_status, "SUCCESS");

  const std::string where =
      absl::StrCat(" FROM payouts WHERE payout_id = '", payout.payout_id, "'");
  EXPECT_EQ(Query("SELECT payout_answer" + where),
            R"({"statuss":"SUCCESS","registrationID":"[registration]"})");
  EXPECT_EQ(Query("SELECT status_answer" + where), R"({"status":"SUCCESS"})");
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM payouts WHERE "
                               "payout_answer LIKE '%",
                               kRegistration, "%'")),
            "0");

  absl::StatusOr<std::vector<PayoutEvent>> events =
      Events(*ledger, payout.payout_id);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ((*events)[1].from, PayoutState::kPending);
  EXPECT_EQ((*events)[1].to, PayoutState::kAccepted);
  EXPECT_EQ((*events)[1].why, "AOPay accepted the payout");
  EXPECT_EQ((*events)[1].who, "gateway");
  EXPECT_EQ((*events)[1].time, T(50));
  EXPECT_EQ((*events)[2].from, PayoutState::kAccepted);
  EXPECT_EQ((*events)[2].to, PayoutState::kSucceeded);
  EXPECT_EQ((*events)[2].who, "refresh");
}

// Events are changes of state (watchers, webhooks): a refresh that only
// records AOPay's words changes the row but appends none.
TEST_P(LedgerSuite, AChangeThatKeepsTheStateIsNoEvent) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  const Payout payout = MakePayout(1);
  ASSERT_TRUE(Insert(*ledger, payout).ok());
  PayoutChange accept = Change(payout.payout_id, PayoutState::kPending,
                               PayoutState::kAccepted, T(50));
  accept.transaction_id = "TERF920898";
  ASSERT_TRUE(Apply(*ledger, accept).ok());

  PayoutChange same = Change(payout.payout_id, PayoutState::kAccepted,
                             PayoutState::kAccepted, T(60));
  same.upstream_status = "PROCESSING";
  same.raw_answer = R"({"status":"PROCESSING"})";
  same.answer_kind = PayoutChange::AnswerKind::kStatus;
  same.why = "AOPay reports PROCESSING; no change";
  absl::StatusOr<StoredPayout> applied = Apply(*ledger, same);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->payout.upstream_status, "PROCESSING");
  EXPECT_EQ(applied->payout.update_time, T(60));

  absl::StatusOr<std::vector<PayoutEvent>> events =
      Events(*ledger, payout.payout_id);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ(events->back().to, PayoutState::kAccepted);
  EXPECT_EQ(events->back().time, T(50));
}

TEST_P(LedgerSuite, ApplyIsCompareAndSet) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  const Payout payout = MakePayout(1);
  ASSERT_TRUE(Insert(*ledger, payout).ok());

  PayoutChange wrong =
      Change(payout.payout_id, PayoutState::kAccepted, PayoutState::kSucceeded);
  wrong.transaction_id = "TERF1";
  absl::StatusOr<StoredPayout> aborted = Apply(*ledger, wrong);
  EXPECT_EQ(aborted.status().code(), absl::StatusCode::kAborted);

  absl::StatusOr<StoredPayout> missing = Apply(
      *ledger,
      Change(PayoutId(99), PayoutState::kPending, PayoutState::kAccepted));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);

  absl::StatusOr<StoredPayout> stored = GetById(*ledger, payout.payout_id);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ExpectSamePayout(stored->payout, payout);
  absl::StatusOr<std::vector<PayoutEvent>> events =
      Events(*ledger, payout.payout_id);
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(events->size(), 1u);
}

TEST_P(LedgerSuite, FailureAndResponseSurviveAReopenExactly) {
  ErrorDetails details;
  details.reason = std::string(reason::kUpstreamInvalidIfsc);
  details.metadata = {{std::string(meta::kPayoutId), PayoutId(1)},
                      {std::string(meta::kUpstreamSubCode), "422"},
                      {std::string(meta::kUpstreamMessage),
                       "Please provide a valid Bank IFSC code. \"quoted\"\n"}};
  details.violations = {{"beneficiary.ifsc", "AOPay says it is not valid."}};
  details.retry_delay = absl::Milliseconds(1500);
  const absl::Status failure =
      MakeError(absl::StatusCode::kInvalidArgument,
                "AOPay refused the IFSC (ü).", details);
  const absl::Status response = MakeError(absl::StatusCode::kInvalidArgument,
                                          "What the caller got.", details);
  {
    auto ledger = OpenLedger();
    ASSERT_NE(ledger, nullptr);
    ASSERT_TRUE(Insert(*ledger, MakePayout(1)).ok());
    PayoutChange fail =
        Change(PayoutId(1), PayoutState::kPending, PayoutState::kFailed);
    fail.failure = failure;
    fail.response = response;
    ASSERT_TRUE(Apply(*ledger, fail).ok());
  }
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  absl::StatusOr<StoredPayout> stored = GetById(*ledger, PayoutId(1));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->payout.state, PayoutState::kFailed);
  ExpectSameStatus(stored->payout.failure, failure);
  ExpectSameStatus(stored->response, response);
  EXPECT_EQ(GetErrorDetails(stored->response), details);

  // OK clears them again.
  PayoutChange clear =
      Change(PayoutId(1), PayoutState::kFailed, PayoutState::kFailed);
  clear.failure = absl::OkStatus();
  clear.response = absl::OkStatus();
  absl::StatusOr<StoredPayout> cleared = Apply(*ledger, clear);
  ASSERT_TRUE(cleared.ok()) << cleared.status();
  EXPECT_TRUE(cleared->payout.failure.ok());
  EXPECT_TRUE(cleared->response.ok());
  EXPECT_EQ(Query("SELECT count(*) FROM payouts WHERE failure IS "
                  "NULL AND response IS NULL"),
            "1");
}

TEST_P(LedgerSuite, PayoutsAndEventsPersistAcrossReopen) {
  {
    auto ledger = OpenLedger();
    ASSERT_NE(ledger, nullptr);
    InsertIn(*ledger, MakePayout(1), {PayoutState::kAccepted});
    InsertIn(*ledger, MakePayout(2));
  }
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  absl::StatusOr<StoredPayout> accepted = GetByRequest(*ledger, "req-0001");
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_EQ(accepted->payout.state, PayoutState::kAccepted);
  absl::StatusOr<StoredPayout> pending = GetById(*ledger, PayoutId(2));
  ASSERT_TRUE(pending.ok()) << pending.status();
  ExpectSamePayout(pending->payout, MakePayout(2));
  absl::StatusOr<std::vector<PayoutEvent>> events =
      Events(*ledger, PayoutId(1));
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(events->size(), 2u);
}

TEST_P(LedgerSuite, ReadsSeeEveryWriteWhoseCallbackRan) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  constexpr int kPayouts = 50;
  absl::BlockingCounter read(kPayouts);
  std::atomic<int> found{0};
  for (int i = 1; i <= kPayouts; ++i) {
    ledger->Insert(Request(MakePayout(i)),
                   [&, i](absl::StatusOr<InsertResult> inserted) {
                     EXPECT_TRUE(inserted.ok() && inserted->inserted);
                     ledger->GetByPayoutId(
                         PayoutId(i), [&](absl::StatusOr<StoredPayout> stored) {
                           if (stored.ok()) ++found;
                           read.DecrementCount();
                         });
                   });
  }
  read.Wait();
  EXPECT_EQ(found.load(), kPayouts);
}

TEST_P(LedgerSuite, ForgetDeletesAPendingPayoutAndFreesItsKey) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1, "req-retry"));
  InsertIn(*ledger, MakePayout(2), {PayoutState::kAccepted});

  EXPECT_TRUE(Forget(*ledger, PayoutId(1)).ok());
  EXPECT_EQ(GetById(*ledger, PayoutId(1)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Events(*ledger, PayoutId(1)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM payout_events "
                               "WHERE payout_id = '",
                               PayoutId(1), "'")),
            "0");
  absl::StatusOr<InsertResult> again =
      Insert(*ledger, MakePayout(3, "req-retry"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->inserted);

  EXPECT_EQ(Forget(*ledger, PayoutId(2)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(GetById(*ledger, PayoutId(2)).ok());
  EXPECT_EQ(Forget(*ledger, PayoutId(99)).code(), absl::StatusCode::kNotFound);
}

TEST_F(SqliteLedgerTest, EventsAreAppendOnly) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1));
  std::string message;
  EXPECT_NE(Exec(path_, "UPDATE payout_events SET why = 'rewritten'", &message),
            SQLITE_OK);
  EXPECT_THAT(message, HasSubstr("append-only"));
  EXPECT_NE(Exec(path_, "DELETE FROM payout_events", &message), SQLITE_OK);
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM payout_events"), "1");
}

TEST_F(SqliteLedgerTest, RecoverPendingMakesPendingPayoutsUnknown) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1));
  InsertIn(*ledger, MakePayout(2), {PayoutState::kAccepted});
  InsertIn(*ledger, MakePayout(3));

  absl::StatusOr<int> recovered = ledger->RecoverPending(T(500));
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  EXPECT_EQ(*recovered, 2);

  for (int n : {1, 3}) {
    absl::StatusOr<StoredPayout> stored = GetById(*ledger, PayoutId(n));
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(stored->payout.state, PayoutState::kUnknown);
    EXPECT_EQ(stored->payout.update_time, T(500));
    // A retry of the request id gets what a caller whose call timed out got.
    EXPECT_EQ(stored->response.code(), absl::StatusCode::kDeadlineExceeded);
    const ErrorDetails details = GetErrorDetails(stored->response);
    EXPECT_EQ(details.reason, reason::kOutcomeUnknown);
    EXPECT_EQ(details.metadata.at(std::string(meta::kPayoutId)), PayoutId(n));
    absl::StatusOr<std::vector<PayoutEvent>> events =
        Events(*ledger, PayoutId(n));
    ASSERT_TRUE(events.ok());
    ASSERT_EQ(events->size(), 2u);
    EXPECT_EQ(events->back().from, PayoutState::kPending);
    EXPECT_EQ(events->back().to, PayoutState::kUnknown);
    EXPECT_EQ(events->back().who, "recovery");
    EXPECT_THAT(events->back().why, HasSubstr("may have been sent"));
    EXPECT_EQ(events->back().time, T(500));
  }
  absl::StatusOr<StoredPayout> accepted = GetById(*ledger, PayoutId(2));
  ASSERT_TRUE(accepted.ok());
  EXPECT_EQ(accepted->payout.state, PayoutState::kAccepted);

  recovered = ledger->RecoverPending(T(600));
  ASSERT_TRUE(recovered.ok());
  EXPECT_EQ(*recovered, 0);
}

TEST_P(LedgerSuite, ListPagesNewestFirstAndTokensSurviveAReopen) {
  std::string token;
  {
    auto ledger = OpenLedger();
    ASSERT_NE(ledger, nullptr);
    // Inserted out of order: the order comes from the ids.
    for (int n : {3, 1, 7, 5, 2, 6, 4}) InsertIn(*ledger, MakePayout(n));

    ListQuery query;
    query.page_size = 3;
    absl::StatusOr<ListPage> page = List(*ledger, query);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_THAT(Ids(*page), ElementsAre(PayoutId(7), PayoutId(6), PayoutId(5)));
    ASSERT_THAT(page->next_page_token, Not(IsEmpty()));
    ExpectSamePayout(page->payouts[0], MakePayout(7));
    token = page->next_page_token;
  }
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  ListQuery query;
  query.page_size = 3;
  query.page_token = token;
  absl::StatusOr<ListPage> page = List(*ledger, query);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(Ids(*page), ElementsAre(PayoutId(4), PayoutId(3), PayoutId(2)));
  query.page_token = page->next_page_token;
  page = List(*ledger, query);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(Ids(*page), ElementsAre(PayoutId(1)));
  EXPECT_EQ(page->next_page_token, "");
}

TEST_P(LedgerSuite, ListPageBoundariesAreExact) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  for (int n = 1; n <= 6; ++n) InsertIn(*ledger, MakePayout(n));
  ListQuery query;
  query.page_size = 3;
  absl::StatusOr<ListPage> first = List(*ledger, query);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->payouts.size(), 3u);
  query.page_token = first->next_page_token;
  absl::StatusOr<ListPage> second = List(*ledger, query);
  ASSERT_TRUE(second.ok());
  EXPECT_THAT(Ids(*second), ElementsAre(PayoutId(3), PayoutId(2), PayoutId(1)));
  EXPECT_EQ(second->next_page_token, "") << "no empty page after the last";

  query = ListQuery{};
  query.page_size = 6;
  absl::StatusOr<ListPage> all = List(*ledger, query);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->payouts.size(), 6u);
  EXPECT_EQ(all->next_page_token, "");
}

TEST_P(LedgerSuite, ListFiltersByState) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1), {PayoutState::kAccepted});
  InsertIn(*ledger, MakePayout(2));
  InsertIn(*ledger, MakePayout(3), {PayoutState::kFailed});
  InsertIn(*ledger, MakePayout(4), {PayoutState::kAccepted});
  InsertIn(*ledger, MakePayout(5), {PayoutState::kAccepted});

  struct Case {
    std::vector<PayoutState> states;
    std::vector<std::string> ids;
  };
  const std::vector<Case> cases = {
      {{PayoutState::kAccepted}, {PayoutId(5), PayoutId(4), PayoutId(1)}},
      {{PayoutState::kFailed, PayoutState::kPending},
       {PayoutId(3), PayoutId(2)}},
      {{PayoutState::kUnknown}, {}},
      {{}, {PayoutId(5), PayoutId(4), PayoutId(3), PayoutId(2), PayoutId(1)}},
  };
  for (const Case& c : cases) {
    // Page by page, one row a page, to cross every boundary.
    std::vector<std::string> ids;
    ListQuery query;
    query.states = c.states;
    query.page_size = 1;
    for (int pages = 0; pages < 10; ++pages) {
      absl::StatusOr<ListPage> page = List(*ledger, query);
      ASSERT_TRUE(page.ok()) << page.status();
      for (const Payout& payout : page->payouts) {
        EXPECT_TRUE(c.states.empty() ||
                    std::find(c.states.begin(), c.states.end(), payout.state) !=
                        c.states.end());
        ids.push_back(payout.payout_id);
      }
      if (page->next_page_token.empty()) break;
      query.page_token = page->next_page_token;
    }
    EXPECT_EQ(ids, c.ids);
  }

  // The same filter in another order is the same filter.
  ListQuery query;
  query.states = {PayoutState::kAccepted, PayoutState::kFailed};
  query.page_size = 1;
  absl::StatusOr<ListPage> page = List(*ledger, query);
  ASSERT_TRUE(page.ok());
  query.states = {PayoutState::kFailed, PayoutState::kAccepted};
  query.page_token = page->next_page_token;
  page = List(*ledger, query);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(Ids(*page), ElementsAre(PayoutId(4)));
}

TEST_P(LedgerSuite, ListRefusesBadTokensAndTokensOfAnotherFilter) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  for (int n = 1; n <= 3; ++n) {
    InsertIn(*ledger, MakePayout(n), {PayoutState::kAccepted});
  }
  ListQuery accepted;
  accepted.states = {PayoutState::kAccepted};
  accepted.page_size = 1;
  absl::StatusOr<ListPage> page = List(*ledger, accepted);
  ASSERT_TRUE(page.ok());
  ASSERT_FALSE(page->next_page_token.empty());

  struct Case {
    std::string name;
    std::vector<PayoutState> states;
    std::string token;
  };
  const std::vector<Case> cases = {
      {"garbage", {PayoutState::kAccepted}, "not a token!"},
      {"base64 of nonsense", {PayoutState::kAccepted}, "aGVsbG8"},
      {"another filter", {}, page->next_page_token},
      {"another state", {PayoutState::kFailed}, page->next_page_token},
      {"truncated",
       {PayoutState::kAccepted},
       page->next_page_token.substr(0, 5)},
  };
  for (const Case& c : cases) {
    ListQuery query;
    query.states = c.states;
    query.page_token = c.token;
    absl::StatusOr<ListPage> refused = List(*ledger, query);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument)
        << c.name;
    const ErrorDetails details = GetErrorDetails(refused.status());
    ASSERT_EQ(details.violations.size(), 1u) << c.name;
    EXPECT_EQ(details.violations[0].field, "page_token") << c.name;
  }
}

// The client filter comes from the query on every page: a page token made
// for one client's listing shows another client nothing of the first's.
TEST_P(LedgerSuite, ListFiltersByClientAcrossPages) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  const std::vector<std::string> clients = {"alpha", "beta", ""};
  std::map<std::string, std::vector<std::string>> ids_of;  // newest first
  std::vector<std::string> all_ids;
  for (int n = 9; n >= 1; --n) {
    const std::string& client = clients[n % 3];
    InsertIn(*ledger, ClientPayout(n, client, 1200),
             n % 2 == 0 ? std::vector<PayoutState>{PayoutState::kAccepted}
                        : std::vector<PayoutState>{});
  }
  for (int n = 9; n >= 1; --n) {
    ids_of[clients[n % 3]].push_back(PayoutId(n));
    all_ids.push_back(PayoutId(n));
  }

  // Every page of one query; every row must be `client`'s when set.
  auto list_all = [&](ListQuery query) {
    std::vector<std::string> ids;
    for (int pages = 0; pages < 20; ++pages) {
      absl::StatusOr<ListPage> page = List(*ledger, query);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      for (const Payout& payout : page->payouts) {
        if (query.client.has_value()) {
          EXPECT_EQ(payout.client, *query.client) << payout.payout_id;
        }
        ids.push_back(payout.payout_id);
      }
      if (page->next_page_token.empty()) break;
      query.page_token = page->next_page_token;
    }
    return ids;
  };
  for (int page_size : {1, 2, 50}) {
    for (const std::string& client : clients) {
      ListQuery query;
      query.page_size = page_size;
      query.client = client;
      EXPECT_EQ(list_all(query), ids_of[client])
          << "client \"" << client << "\", page size " << page_size;
    }
    ListQuery everyone;
    everyone.page_size = page_size;
    EXPECT_EQ(list_all(everyone), all_ids) << "page size " << page_size;
  }

  // With a state filter too.
  ListQuery accepted;
  accepted.page_size = 1;
  accepted.client = "alpha";
  accepted.states = {PayoutState::kAccepted};
  EXPECT_THAT(list_all(accepted), ElementsAre(PayoutId(6)));

  // alpha's first page ends at payout 6; its token, with beta's filter,
  // goes on with beta's payouts older than 6 only.
  ListQuery alpha;
  alpha.page_size = 2;
  alpha.client = "alpha";
  absl::StatusOr<ListPage> first = List(*ledger, alpha);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_THAT(Ids(*first), ElementsAre(PayoutId(9), PayoutId(6)));
  ListQuery beta;
  beta.page_size = 50;
  beta.client = "beta";
  beta.page_token = first->next_page_token;
  absl::StatusOr<ListPage> next = List(*ledger, beta);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_THAT(Ids(*next), ElementsAre(PayoutId(4), PayoutId(1)));
  // And without a client filter, it lists everyone's again.
  ListQuery everyone;
  everyone.page_size = 50;
  everyone.page_token = first->next_page_token;
  absl::StatusOr<ListPage> rest = List(*ledger, everyone);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_THAT(Ids(*rest), ElementsAre(PayoutId(5), PayoutId(4), PayoutId(3),
                                      PayoutId(2), PayoutId(1)));
}

TEST_P(LedgerSuite, PruneDeletesOnlyPayoutsFinalBeforeTheCutoff) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  using S = PayoutState;
  // Moves payout n along `path`, every change at `time`.
  auto insert = [&](int n, std::vector<S> path, absl::Time time) {
    ASSERT_TRUE(Insert(*ledger, MakePayout(n)).ok());
    S state = S::kPending;
    for (S next : path) {
      ASSERT_TRUE(Apply(*ledger, Change(PayoutId(n), state, next, time)).ok());
      state = next;
    }
  };
  insert(1, {S::kAccepted, S::kSucceeded}, T(5));
  insert(2, {S::kFailed}, T(5));
  insert(3, {S::kAccepted, S::kReversed}, T(5));
  insert(4, {}, T(5));
  insert(5, {S::kAccepted}, T(5));
  insert(6, {S::kUnknown}, T(5));
  insert(7, {S::kAccepted, S::kSucceeded}, T(50));  // created before the cutoff

  absl::StatusOr<int> pruned = Prune(*ledger, T(10));
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 3);
  for (int n : {1, 2, 3}) {
    EXPECT_EQ(GetById(*ledger, PayoutId(n)).status().code(),
              absl::StatusCode::kNotFound)
        << n;
  }
  for (int n : {4, 5, 6, 7})
    EXPECT_TRUE(GetById(*ledger, PayoutId(n)).ok()) << n;
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM payout_events "
                               "WHERE payout_id IN ('",
                               PayoutId(1), "', '", PayoutId(2), "', '",
                               PayoutId(3), "')")),
            "0");
  pruned = Prune(*ledger, T(10));
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(*pruned, 0);
}

// A payout that stayed UNKNOWN for a long time and was then resolved keeps
// its key for the whole retention after it settled: counting from its
// creation would free the key at once, and a caller still retrying its
// request id would send the money again.
TEST_P(LedgerSuite, RetentionCountsFromTheMomentThePayoutBecameFinal) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  using S = PayoutState;
  const absl::Duration retention = absl::Hours(24 * 30);
  const Payout payout = MakePayout(1);  // created at T(1)
  ASSERT_TRUE(Insert(*ledger, payout).ok());
  ASSERT_TRUE(
      Apply(*ledger, Change(payout.payout_id, S::kPending, S::kUnknown, T(2)))
          .ok());
  const absl::Time resolved = T(2) + absl::Hours(24 * 31);
  ASSERT_TRUE(Apply(*ledger, Change(payout.payout_id, S::kUnknown,
                                    S::kSucceeded, resolved))
                  .ok());

  // An hour after the resolve, the retention counted from creation is over.
  absl::StatusOr<int> pruned =
      Prune(*ledger, resolved + absl::Hours(1) - retention);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 0);
  absl::StatusOr<StoredPayout> kept = GetByRequest(*ledger, payout.request_id);
  ASSERT_TRUE(kept.ok()) << kept.status();

  // A later final change (SUCCEEDED, then REVERSED) starts the count again.
  const absl::Time reversed = resolved + absl::Hours(24 * 10);
  ASSERT_TRUE(Apply(*ledger, Change(payout.payout_id, S::kSucceeded,
                                    S::kReversed, reversed))
                  .ok());
  pruned = Prune(*ledger, resolved + absl::Hours(1));
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(*pruned, 0);

  pruned = Prune(*ledger, reversed + absl::Microseconds(1));
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(*pruned, 1);
  EXPECT_EQ(GetByRequest(*ledger, payout.request_id).status().code(),
            absl::StatusCode::kNotFound);
}

// A ledger written before final times were recorded: its final payouts
// count from their last change, never from their creation.
TEST_F(SqliteLedgerTest, MigratedFinalPayoutsCountFromTheirLastChange) {
  {
    auto ledger = OpenLedger();
    ASSERT_NE(ledger, nullptr);
    ASSERT_TRUE(Insert(*ledger, MakePayout(1)).ok());
    ASSERT_TRUE(Apply(*ledger, Change(PayoutId(1), PayoutState::kPending,
                                      PayoutState::kFailed, T(500)))
                    .ok());
  }
  // Back to schema version 1, as an older gateway left it.
  DowngradeToVersion2(path_);
  std::string message;
  ASSERT_EQ(Exec(path_,
                 "DROP INDEX payouts_by_final_time;"
                 "ALTER TABLE payouts DROP COLUMN final_time_us;"
                 "DROP TABLE ledger_meta;"
                 "DELETE FROM schema_version WHERE version > 1;",
                 &message),
            SQLITE_OK)
      << message;
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  EXPECT_EQ(QueryText(path_, "SELECT final_time_us FROM payouts"),
            absl::StrCat(absl::ToUnixMicros(T(500))));
  absl::StatusOr<int> pruned = Prune(*ledger, T(400));
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 0);
  pruned = Prune(*ledger, T(501));
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(*pruned, 1);
}

// A ledger of schema version 2 (no clients): every payout becomes the
// anonymous client's, keeps its request id and its events.
TEST_F(SqliteLedgerTest, MigrationToVersion3KeepsEveryPayoutAsTheAnonymous) {
  using S = PayoutState;
  {
    auto ledger = OpenLedger();
    ASSERT_NE(ledger, nullptr);
    InsertIn(*ledger, MakePayout(1), {S::kAccepted, S::kSucceeded});
    InsertIn(*ledger, MakePayout(2), {S::kFailed});
    InsertIn(*ledger, MakePayout(3));
  }
  DowngradeToVersion2(path_);
  ASSERT_EQ(QueryText(path_, "SELECT max(version) FROM schema_version"), "2");
  ASSERT_EQ(QueryText(path_, "SELECT count(*) FROM payout_events"), "6");

  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  EXPECT_EQ(QueryText(path_, "SELECT max(version) FROM schema_version"),
            absl::StrCat(SqliteLedger::kSchemaVersion));
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM payouts WHERE client = ''"),
            "3");
  // Dropping the old table with foreign keys on would have deleted them.
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM payout_events"), "6");
  EXPECT_EQ(QueryText(path_, "PRAGMA integrity_check"), "ok");
  EXPECT_EQ(QueryText(path_, "PRAGMA foreign_key_check"), "");
  EXPECT_EQ(QueryText(path_,
                      "SELECT count(*) FROM sqlite_schema WHERE name IN ("
                      "'payouts_by_key', 'payouts_by_client_day', "
                      "'payouts_by_registration', 'payouts_by_state', "
                      "'payouts_by_final_time', "
                      "'payout_events_deleted_with_payout', "
                      "'payout_events_append_only', 'daily_spent', "
                      "'daily_spent_on_insert', 'daily_spent_on_update', "
                      "'daily_spent_on_delete')"),
            "11");
  // Version 6 dropped the index of AOPay's transaction ids: no query used
  // it, and every outcome wrote it.
  EXPECT_EQ(QueryText(path_,
                      "SELECT count(*) FROM sqlite_schema WHERE tbl_name = "
                      "'payouts' AND sql LIKE '%(transaction_id)%'"),
            "0");

  const std::vector<std::pair<int, S>> expected = {
      {1, S::kSucceeded}, {2, S::kFailed}, {3, S::kPending}};
  for (const auto& [n, state] : expected) {
    absl::StatusOr<StoredPayout> stored =
        GetByRequest(*ledger, MakePayout(n).request_id);
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(stored->payout.payout_id, PayoutId(n));
    EXPECT_EQ(stored->payout.client, "");
    EXPECT_EQ(stored->payout.state, state);
  }
  absl::StatusOr<std::vector<PayoutEvent>> events =
      Events(*ledger, PayoutId(1));
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_EQ(events->size(), 3u);

  // The key is now the client's: the anonymous client's old request ids
  // still dedupe, and another client may use them.
  absl::StatusOr<InsertResult> replay =
      Insert(*ledger, MakePayout(4, MakePayout(1).request_id));
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_FALSE(replay->inserted);
  EXPECT_EQ(replay->existing.payout.payout_id, PayoutId(1));
  Payout alpha = MakePayout(5, MakePayout(1).request_id);
  alpha.client = "alpha";
  absl::StatusOr<InsertResult> fresh = Insert(*ledger, alpha);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_TRUE(fresh->inserted);

  // Events are still append-only and go with their payout.
  std::string message;
  EXPECT_NE(Exec(path_, "DELETE FROM payout_events", &message), SQLITE_OK);
  EXPECT_THAT(message, HasSubstr("deleted only with their payout"));
  EXPECT_TRUE(Forget(*ledger, PayoutId(3)).ok());
  EXPECT_EQ(QueryText(path_, absl::StrCat("SELECT count(*) FROM payout_events "
                                          "WHERE payout_id = '",
                                          PayoutId(3), "'")),
            "0");
}

void HoldSyncs() {
  absl::MutexLock lock(&TheFaults().sync_mu);
  TheFaults().hold_syncs = true;
}
void WaitUntilASyncIsHeld() {
  Faults& faults = TheFaults();
  absl::MutexLock lock(&faults.sync_mu);
  faults.sync_mu.Await(absl::Condition(
      +[](int* held) { return *held > 0; }, &faults.syncs_held));
}
void ReleaseSyncs() {
  absl::MutexLock lock(&TheFaults().sync_mu);
  TheFaults().hold_syncs = false;
}

// Each write runs in a savepoint of its own (a write that fails undoes only
// itself); the savepoint keeps an undo copy of every page the write changes
// (the statement journal). It stays in memory, however many pages a write
// changes: in a temporary file it cost two pwrite(2)s a page, the writer
// thread's largest cost at 5,000 payouts in flight, and a retention run can
// change thousands of pages in one write.
TEST_F(SqliteLedgerTest, AWriteOfManyPagesOpensNoTemporaryFile) {
  auto ledger = OpenLedgerOnFaultVfs();
  ASSERT_NE(ledger, nullptr);
  constexpr int kPayouts = 300;
  for (int n = 1; n <= kPayouts; ++n) {
    ASSERT_TRUE(Insert(*ledger, MakePayout(n)).ok());
    ASSERT_TRUE(Apply(*ledger, Change(PayoutId(n), PayoutState::kPending,
                                      PayoutState::kFailed, T(5)))
                    .ok());
  }
  const int opens_before = TheFaults().temp_file_opens.load();

  absl::StatusOr<int> pruned = Prune(*ledger, T(10));  // one write
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, kPayouts);
  EXPECT_EQ(TheFaults().temp_file_opens.load() - opens_before, 0)
      << "the write's statement journal went to a temporary file";
}

TEST_F(SqliteLedgerTest, ConcurrentInsertsShareTransactions) {
  auto ledger = OpenLedgerOnFaultVfs();
  ASSERT_NE(ledger, nullptr);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  constexpr int kInserts = kThreads * kPerThread;
  std::vector<std::atomic<int>> calls(kInserts + 1);
  std::atomic<int> inserted{0};
  absl::BlockingCounter finished(kInserts);
  auto insert = [&](int n) {
    ledger->Insert(Request(MakePayout(n)),
                   [&, n](absl::StatusOr<InsertResult> result) {
                     if (result.ok() && result->inserted) ++inserted;
                     ++calls[n];
                     finished.DecrementCount();
                   });
  };
  const SqliteLedger::Stats before = ledger->stats();
  // The first insert holds the writer in its commit's fsync until every
  // other insert is queued, so that they are certainly concurrent.
  HoldSyncs();
  insert(1);
  WaitUntilASyncIsHeld();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int n = 1 + t * kPerThread + i;
        if (n != 1) insert(n);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  ReleaseSyncs();
  finished.Wait();

  EXPECT_EQ(inserted.load(), kInserts);
  for (int n = 1; n <= kInserts; ++n) EXPECT_EQ(calls[n].load(), 1) << n;
  const SqliteLedger::Stats after = ledger->stats();
  EXPECT_EQ(after.writes - before.writes, kInserts);
  EXPECT_LE(after.transactions - before.transactions, kInserts / 20)
      << "group commit should put many writes in one transaction";
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM payouts"),
            absl::StrCat(kInserts));
}

TEST_F(SqliteLedgerTest, OneFailingWriteDoesNotUndoItsBatch) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1));
  // Queue a failing Apply between two good writes, all in one batch.
  absl::Notification release;
  absl::BlockingCounter finished(4);
  ledger->Insert(Request(MakePayout(9)), [&](absl::StatusOr<InsertResult>) {
    release.WaitForNotification();
    finished.DecrementCount();
  });
  absl::Status bad_apply, good_insert;
  bool good_apply = false;
  ledger->Insert(Request(MakePayout(2)), [&](absl::StatusOr<InsertResult> r) {
    good_insert = r.status();
    finished.DecrementCount();
  });
  ledger->Apply(
      Change(PayoutId(1), PayoutState::kAccepted, PayoutState::kSucceeded),
      [&](absl::StatusOr<StoredPayout> r) {
        bad_apply = r.status();
        finished.DecrementCount();
      });
  ledger->Apply(
      Change(PayoutId(1), PayoutState::kPending, PayoutState::kAccepted),
      [&](absl::StatusOr<StoredPayout> r) {
        good_apply = r.ok();
        finished.DecrementCount();
      });
  const SqliteLedger::Stats before = ledger->stats();
  release.Notify();
  finished.Wait();
  EXPECT_TRUE(good_insert.ok()) << good_insert;
  EXPECT_EQ(bad_apply.code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(good_apply);
  EXPECT_TRUE(ledger->Healthy());
  EXPECT_EQ(ledger->stats().transactions - before.transactions, 1);
  absl::StatusOr<StoredPayout> stored = GetById(*ledger, PayoutId(1));
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->payout.state, PayoutState::kAccepted);
  EXPECT_TRUE(GetById(*ledger, PayoutId(2)).ok());
}

TEST_F(SqliteLedgerTest, WorksWithoutDurability) {
  SqliteLedgerOptions options = Options();
  options.durable = false;
  {
    auto ledger = OpenLedger(options);
    ASSERT_NE(ledger, nullptr);
    InsertIn(*ledger, MakePayout(1), {PayoutState::kAccepted});
  }
  auto ledger = OpenLedger(options);
  ASSERT_NE(ledger, nullptr);
  absl::StatusOr<StoredPayout> stored = GetById(*ledger, PayoutId(1));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->payout.state, PayoutState::kAccepted);
}

// ---------------------------------------------------------------------------
// Daily limits.

// What the client has spent today as the ledger counts it: an insert of 1
// paisa against a limit of 0 is always over, and says how much counted.
int64_t Spent(Ledger& ledger, const std::string& client) {
  Payout probe = ClientPayout(9999, client, 1);
  absl::StatusOr<InsertResult> refused = InsertWithin(ledger, probe, Limit(0));
  EXPECT_TRUE(refused.ok()) << refused.status();
  if (!refused.ok()) return -1;
  EXPECT_TRUE(refused->over_daily_limit);
  EXPECT_FALSE(refused->inserted);
  return refused->spent_paise;
}

TEST_F(SqliteLedgerTest, DailyLimitAdmitsUpToTheLimitAndRefusesTheOvershoot) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  for (auto [n, amount] : {std::pair<int, int64_t>{1, 4'000}, {2, 6'000}}) {
    absl::StatusOr<InsertResult> inserted =
        InsertWithin(*ledger, ClientPayout(n, "alpha", amount), Limit(10'000));
    ASSERT_TRUE(inserted.ok()) << inserted.status();
    EXPECT_TRUE(inserted->inserted) << n;
    EXPECT_FALSE(inserted->over_daily_limit) << n;
  }
  const SqliteLedger::Stats before = ledger->stats();
  const Payout over = ClientPayout(3, "alpha", 1);
  absl::StatusOr<InsertResult> refused =
      InsertWithin(*ledger, over, Limit(10'000));
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_FALSE(refused->inserted);
  EXPECT_TRUE(refused->over_daily_limit);
  EXPECT_EQ(refused->spent_paise, 10'000);
  EXPECT_EQ(refused->existing.payout.payout_id, "");
  EXPECT_EQ(ledger->stats().writes, before.writes + 1);

  // Nothing was written, and the key is still free.
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM payouts"), "2");
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM payout_events"), "2");
  EXPECT_EQ(GetById(*ledger, over.payout_id).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(GetByKey(*ledger, "alpha", over.request_id).status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<InsertResult> later =
      InsertWithin(*ledger, over, Limit(10'001));
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_TRUE(later->inserted);

  // Without a limit nothing is counted.
  absl::StatusOr<InsertResult> unlimited =
      Insert(*ledger, ClientPayout(4, "alpha", 50'000));
  ASSERT_TRUE(unlimited.ok()) << unlimited.status();
  EXPECT_TRUE(unlimited->inserted);
}

TEST_P(LedgerSuite, FailedPayoutsDoNotCountAgainstTheDailyLimit) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  using S = PayoutState;
  // One payout in every state; only the FAILED one does not count (the
  // money may have moved, or did, for all the others).
  const std::vector<std::pair<std::vector<S>, int64_t>> payouts = {
      {{}, 1},                                               // PENDING
      {{S::kAccepted}, 10},                                  // ACCEPTED
      {{S::kAccepted, S::kSucceeded}, 100},                  // SUCCEEDED
      {{S::kAccepted, S::kSucceeded, S::kReversed}, 1'000},  // REVERSED
      {{S::kUnknown}, 10'000},                               // UNKNOWN
      {{S::kFailed}, 100'000},                               // FAILED
      {{S::kUnknown, S::kFailed}, 1'000'000},                // FAILED, resolved
  };
  int n = 0;
  for (const auto& [path, amount] : payouts) {
    InsertIn(*ledger, ClientPayout(++n, "alpha", amount), path);
  }
  EXPECT_EQ(Spent(*ledger, "alpha"), 11'111);

  absl::StatusOr<InsertResult> fits =
      InsertWithin(*ledger, ClientPayout(++n, "alpha", 8'889), Limit(20'000));
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_TRUE(fits->inserted);
  absl::StatusOr<InsertResult> over =
      InsertWithin(*ledger, ClientPayout(++n, "alpha", 1), Limit(20'000));
  ASSERT_TRUE(over.ok()) << over.status();
  EXPECT_TRUE(over->over_daily_limit);
  EXPECT_EQ(over->spent_paise, 20'000);

  // A payout that fails later stops counting.
  ASSERT_TRUE(
      Apply(*ledger, Change(PayoutId(1), S::kPending, S::kFailed)).ok());
  EXPECT_EQ(Spent(*ledger, "alpha"), 19'999);
}

// A daily limit summed every payout of the client's day, for each payout it
// admitted; on SQLite that ran on the one writer thread, so with 15,000
// payouts in one client's day every client's payouts slowed to 84/s. The
// ledger now keeps the sum as a running total per client and day
// (daily_spent): the day's first limited insert seeds it from the payouts,
// and triggers on payouts keep it up to date. It must equal the sum after
// every kind of change, and the limit must read it.
TEST_P(LedgerSuite, ADailyLimitReadsARunningTotalThatFollowsEveryChange) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  using S = PayoutState;
  InsertIn(*ledger, ClientPayout(1, "alpha", 1));  // before the first check
  InsertIn(*ledger, ClientPayout(2, "alpha", 10));
  EXPECT_EQ(Spent(*ledger, "alpha"), 11);  // seeds the total
  const std::string total =
      "SELECT spent_paise FROM daily_spent WHERE client = 'alpha'";
  EXPECT_EQ(Query(total), "11");

  InsertIn(*ledger, ClientPayout(3, "alpha", 100));  // without a limit
  InsertIn(*ledger, ClientPayout(4, "alpha", 1'000),
           {S::kAccepted, S::kSucceeded, S::kReversed});
  InsertIn(*ledger, ClientPayout(5, "alpha", 10'000),
           {S::kUnknown, S::kFailed});
  InsertIn(*ledger, ClientPayout(6, "beta", 100'000));  // another client
  Payout tomorrow = ClientPayout(7, "alpha", 1'000'000);
  tomorrow.create_time = DayEnd();
  tomorrow.update_time = DayEnd();
  InsertIn(*ledger, tomorrow);
  // Stops counting: failed, and forgotten.
  ASSERT_TRUE(
      Apply(*ledger, Change(PayoutId(2), S::kPending, S::kFailed)).ok());
  ASSERT_TRUE(Forget(*ledger, PayoutId(3)).ok());
  EXPECT_EQ(Query(total), "1001");
  EXPECT_EQ(Spent(*ledger, "alpha"), 1'001);

  // Held for approval counts; cancelled, it stops.
  Payout held = ClientPayout(8, "alpha", 20'000);
  held.state = S::kAwaitingApproval;
  InsertIn(*ledger, held);
  EXPECT_EQ(Query(total), "21001");
  ASSERT_TRUE(
      Apply(*ledger, Change(PayoutId(8), S::kAwaitingApproval, S::kCancelled))
          .ok());
  EXPECT_EQ(Query(total), "1001");
  // Pruned final payouts leave the total as they leave the sum (only
  // payout 1, PENDING, is left of the day).
  ASSERT_TRUE(Prune(*ledger, T(1'000'000)).ok());
  EXPECT_EQ(Query(total), "1");

  // The next day's first limited insert seeds the next day and drops this
  // day's total.
  const DailyLimit next_day{1'000'000, DayEnd(), DayEnd() + absl::Hours(24)};
  Payout later = ClientPayout(9, "alpha", 1);
  later.create_time = DayEnd() + absl::Hours(1);
  later.update_time = later.create_time;
  absl::StatusOr<InsertResult> over = InsertWithin(*ledger, later, next_day);
  ASSERT_TRUE(over.ok()) << over.status();
  EXPECT_TRUE(over->over_daily_limit);
  EXPECT_EQ(over->spent_paise, 1'000'000);
  EXPECT_EQ(Query("SELECT count(*) FROM daily_spent"), "1");
  EXPECT_EQ(Query(total), "1000000");

  // The limit reads the total, not the payouts: a total changed behind the
  // ledger's back is what it sees.
  ASSERT_EQ(Query("UPDATE daily_spent SET spent_paise = 5 "
                  "WHERE client = 'alpha' RETURNING 'ok'"),
            "ok");
  over = InsertWithin(*ledger, later,
                      DailyLimit{0, next_day.day_start, next_day.day_end});
  ASSERT_TRUE(over.ok()) << over.status();
  EXPECT_EQ(over->spent_paise, 5);
}

TEST_P(LedgerSuite, PayoutsOutsideTheDayDoNotCount) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  const std::vector<std::pair<absl::Time, int64_t>> payouts = {
      {DayStart() - absl::Microseconds(1), 100'000},  // the day before
      {DayStart(), 1},                                // the first moment
      {DayStart() + absl::Hours(12), 10},
      {DayEnd() - absl::Microseconds(1), 100},  // the last moment
      {DayEnd(), 1'000'000},                    // the next day
  };
  int n = 0;
  for (const auto& [time, amount] : payouts) {
    Payout payout = ClientPayout(++n, "alpha", amount);
    payout.create_time = time;
    payout.update_time = time;
    InsertIn(*ledger, payout);
  }
  EXPECT_EQ(Spent(*ledger, "alpha"), 111);
  absl::StatusOr<InsertResult> fits =
      InsertWithin(*ledger, ClientPayout(++n, "alpha", 889), Limit(1'000));
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_TRUE(fits->inserted);

  // The next day's limit counts the next day's payouts.
  const DailyLimit next_day{1'000'000, DayEnd(), DayEnd() + absl::Hours(24)};
  Payout tomorrow = ClientPayout(++n, "alpha", 1);
  tomorrow.create_time = DayEnd() + absl::Hours(1);
  absl::StatusOr<InsertResult> over = InsertWithin(*ledger, tomorrow, next_day);
  ASSERT_TRUE(over.ok()) << over.status();
  EXPECT_TRUE(over->over_daily_limit);
  EXPECT_EQ(over->spent_paise, 1'000'000);
}

TEST_F(SqliteLedgerTest, AnotherClientsPayoutsDoNotCount) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, ClientPayout(1, "alpha", 1));
  InsertIn(*ledger, ClientPayout(2, "beta", 10));
  InsertIn(*ledger, ClientPayout(3, "", 100));
  InsertIn(*ledger, ClientPayout(4, "alpha2", 1'000));
  // Another registration's row (a ledger holds one registration; this one
  // is only here to show that the sum stays within the ledger's).
  std::string message;
  ASSERT_EQ(
      Exec(path_,
           absl::StrCat(
               "INSERT INTO payouts (payout_id, registration, client, "
               "request_id, fingerprint, state, account_number, ifsc, name, "
               "email, mobile, amount_paise, mode, create_time_us, "
               "update_time_us) VALUES ('",
               PayoutId(5),
               "', 'AOP-999', 'alpha', 'req-0005', 'fp', 1, "
               "'100000011836', 'SBIN0000002', 'Dean Jon', '', '', 10000, 2, ",
               absl::ToUnixMicros(T(5)), ", ", absl::ToUnixMicros(T(5)), ")"),
           &message),
      SQLITE_OK)
      << message;

  EXPECT_EQ(Spent(*ledger, "alpha"), 1);
  EXPECT_EQ(Spent(*ledger, "beta"), 10);
  EXPECT_EQ(Spent(*ledger, ""), 100);
  EXPECT_EQ(Spent(*ledger, "alpha2"), 1'000);
  EXPECT_EQ(Spent(*ledger, "gamma"), 0);
  absl::StatusOr<InsertResult> fits =
      InsertWithin(*ledger, ClientPayout(6, "alpha", 9), Limit(10));
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_TRUE(fits->inserted);
}

TEST_P(LedgerSuite, AReplayWinsOverTheDailyLimit) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  const Payout first = ClientPayout(1, "alpha", 8'000);
  absl::StatusOr<InsertResult> inserted =
      InsertWithin(*ledger, first, Limit(10'000));
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  ASSERT_TRUE(inserted->inserted);

  // A retry makes a new payout id; the key is what matters.
  Payout retry = ClientPayout(2, "alpha", 8'000);
  retry.request_id = first.request_id;
  for (const DailyLimit& limit : {Limit(10'000), Limit(0)}) {
    absl::StatusOr<InsertResult> replay = InsertWithin(*ledger, retry, limit);
    ASSERT_TRUE(replay.ok()) << replay.status();
    EXPECT_FALSE(replay->inserted);
    EXPECT_FALSE(replay->over_daily_limit);
    EXPECT_EQ(replay->spent_paise, 0);
    ExpectSamePayout(replay->existing.payout, first);
  }
  EXPECT_EQ(Query("SELECT count(*) FROM payouts"), "1");
}

TEST_P(LedgerSuite, TheMaximumRefusesWithoutWritingButAReplayWins) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  const Payout within = ClientPayout(1, "alpha", 5'000);
  absl::StatusOr<InsertResult> inserted =
      InsertUnder(*ledger, within, 5'000, Limit(100'000));
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_TRUE(inserted->inserted);
  const std::string spent = "SELECT sum(spent_paise) FROM daily_spent";
  ASSERT_EQ(Query(spent), "5000");

  // Over the maximum, with a daily limit it is well within: refused, and
  // nothing of it stays (PostgreSQL's insert ran and was rolled back).
  absl::StatusOr<InsertResult> over = InsertUnder(
      *ledger, ClientPayout(2, "alpha", 5'001), 5'000, Limit(100'000));
  ASSERT_TRUE(over.ok()) << over.status();
  EXPECT_FALSE(over->inserted);
  EXPECT_TRUE(over->over_max_payout);
  EXPECT_FALSE(over->over_daily_limit);
  EXPECT_EQ(Query("SELECT count(*) FROM payouts"), "1");
  EXPECT_EQ(Query("SELECT count(*) FROM payout_events"), "1");
  EXPECT_EQ(Query(spent), "5000");

  // A retry of the first payout under a maximum lowered since.
  Payout retry = ClientPayout(3, "alpha", 5'000);
  retry.request_id = within.request_id;
  absl::StatusOr<InsertResult> replay = InsertUnder(*ledger, retry, 1'000);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_FALSE(replay->inserted);
  EXPECT_FALSE(replay->over_max_payout);
  ExpectSamePayout(replay->existing.payout, within);

  EXPECT_EQ(
      InsertUnder(*ledger, ClientPayout(4, "alpha", 1), -1).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Query("SELECT count(*) FROM payouts"), "1");
}

// An approved payout that was not sent goes back to approval; if that
// change is written again (its commit got no answer) after the payout was
// approved again, it must not send the new attempt, at AOPay by then, back
// to approval (where a third approval would send it twice).
TEST_P(LedgerSuite, AChangeForAnEarlierAttemptDoesNotApplyToALaterOne) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  const Payout held = HeldPayout(1);
  InsertIn(*ledger, held);
  absl::StatusOr<StoredPayout> first =
      Apply(*ledger, Change(PayoutId(1), PayoutState::kAwaitingApproval,
                            PayoutState::kPending, T(1000)));
  ASSERT_TRUE(first.ok()) << first.status();
  PayoutChange back = Change(PayoutId(1), PayoutState::kPending,
                             PayoutState::kAwaitingApproval, T(1001));
  back.expected_update_time = first->payout.update_time;
  ASSERT_TRUE(Apply(*ledger, back).ok());
  ASSERT_TRUE(Apply(*ledger, Change(PayoutId(1), PayoutState::kAwaitingApproval,
                                    PayoutState::kPending, T(1002)))
                  .ok());

  // Refused; or, on PostgreSQL, recognised by its event as the change
  // already made (an unanswered commit's retry): the later attempt stays.
  absl::StatusOr<StoredPayout> again = Apply(*ledger, back);
  if (again.ok()) {
    EXPECT_EQ(GetParam(), Backend::kPostgres);
    EXPECT_EQ(again->payout.state, PayoutState::kPending);
  } else {
    EXPECT_EQ(again.status().code(), absl::StatusCode::kAborted)
        << again.status();
  }
  EXPECT_EQ(GetById(*ledger, PayoutId(1))->payout.state, PayoutState::kPending);
  // The later attempt's own outcome applies.
  PayoutChange accepted = Change(PayoutId(1), PayoutState::kPending,
                                 PayoutState::kAccepted, T(1003));
  accepted.expected_update_time = T(1002);
  ASSERT_TRUE(Apply(*ledger, accepted).ok());
  EXPECT_EQ(GetById(*ledger, PayoutId(1))->payout.state,
            PayoutState::kAccepted);
}

TEST_P(LedgerSuite, RefusesAMalformedDailyLimit) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  for (const DailyLimit& limit : {DailyLimit{-1, DayStart(), DayEnd()},
                                  DailyLimit{1'000, DayStart(), DayStart()},
                                  DailyLimit{1'000, DayEnd(), DayStart()}}) {
    EXPECT_EQ(InsertWithin(*ledger, ClientPayout(1, "alpha", 1), limit)
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(Query("SELECT count(*) FROM payouts"), "0");
}

// Posts kRacers inserts of kRaceAmount each for client "alpha" against
// `limit` from kRacers threads at once, runs `posted` once every insert is
// posted, and counts what they got.
struct RaceOutcome {
  int inserted = 0;
  int over = 0;  // over_daily_limit with spent_paise == the limit
  int other = 0;
};
constexpr int kRacers = 20;
constexpr int64_t kRaceAmount = 1'000;

RaceOutcome RaceInserts(
    Ledger& ledger, const DailyLimit& limit, int first_n,
    const std::function<void()>& posted = [] {}) {
  std::atomic<int> inserted{0}, over{0}, other{0};
  absl::BlockingCounter ready(kRacers);     // a latch: every thread is up
  absl::Notification go;                    // then they all post at once
  absl::BlockingCounter answered(kRacers);  // every callback has run
  std::vector<std::thread> threads;
  for (int i = 0; i < kRacers; ++i) {
    threads.emplace_back([&, n = first_n + i] {
      ready.DecrementCount();
      go.WaitForNotification();
      ledger.Insert(Request(ClientPayout(n, "alpha", kRaceAmount), "fp", limit),
                    [&](absl::StatusOr<InsertResult> result) {
                      if (result.ok() && result->inserted) {
                        ++inserted;
                      } else if (result.ok() && result->over_daily_limit &&
                                 result->spent_paise == limit.limit_paise) {
                        ++over;
                      } else {
                        ++other;
                      }
                      answered.DecrementCount();
                    });
    });
  }
  ready.Wait();
  go.Notify();
  for (std::thread& thread : threads) thread.join();
  posted();
  answered.Wait();
  return RaceOutcome{inserted.load(), over.load(), other.load()};
}

// The check and the insert are one step on the writer: inserts posted at
// the same moment cannot together overshoot the limit.
TEST_P(LedgerSuite, ConcurrentInsertsNeverOvershootTheDailyLimit) {
  const DailyLimit limit = Limit(10 * kRaceAmount);
  {
    auto ledger = OpenLedger();
    ASSERT_NE(ledger, nullptr);
    const RaceOutcome outcome = RaceInserts(*ledger, limit, 1);
    EXPECT_EQ(outcome.inserted, 10);
    EXPECT_EQ(outcome.over, 10);
    EXPECT_EQ(outcome.other, 0);
  }
  EXPECT_EQ(Query("SELECT sum(amount_paise) FROM payouts "
                  "WHERE client = 'alpha'"),
            absl::StrCat(10 * kRaceAmount));
  // The sum is counted from the rows: it survives a restart.
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  absl::StatusOr<InsertResult> after =
      InsertWithin(*ledger, ClientPayout(100, "alpha", 1), limit);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(after->over_daily_limit);
  EXPECT_EQ(after->spent_paise, 10 * kRaceAmount);
  absl::StatusOr<InsertResult> other =
      InsertWithin(*ledger, ClientPayout(101, "beta", kRaceAmount), limit);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_TRUE(other->inserted);
}

// Group commit runs many inserts in one transaction: each one's sum must
// see the inserts before it in the same, not yet committed, batch.
TEST_F(SqliteLedgerTest, ADailyLimitCountsEarlierInsertsOfTheSameBatch) {
  auto ledger = OpenLedgerOnFaultVfs();
  ASSERT_NE(ledger, nullptr);
  // The first insert holds the writer in its commit's fsync while the race
  // is posted, so that the racers queue up and go into one batch.
  absl::Notification held_done;
  HoldSyncs();
  ledger->Insert(Request(ClientPayout(100, "beta", 1)),
                 [&](absl::StatusOr<InsertResult>) { held_done.Notify(); });
  WaitUntilASyncIsHeld();
  SqliteLedger::Stats before;
  const RaceOutcome outcome =
      RaceInserts(*ledger, Limit(10 * kRaceAmount), 1, [&] {
        before = ledger->stats();
        ReleaseSyncs();
      });
  held_done.WaitForNotification();
  EXPECT_EQ(outcome.inserted, 10);
  EXPECT_EQ(outcome.over, 10);
  EXPECT_EQ(outcome.other, 0);
  const SqliteLedger::Stats after = ledger->stats();
  EXPECT_EQ(after.writes - before.writes, kRacers);
  EXPECT_EQ(after.transactions - before.transactions, 1)
      << "the racers should have shared one transaction";
}

// ---------------------------------------------------------------------------
// Opening.

TEST_F(SqliteLedgerTest, StoresItsSchemaVersionAndUsesWal) {
  { ASSERT_NE(OpenLedger(), nullptr); }
  EXPECT_EQ(QueryText(path_, "SELECT max(version) FROM schema_version"),
            absl::StrCat(SqliteLedger::kSchemaVersion));
  EXPECT_EQ(QueryText(path_, "PRAGMA journal_mode"), "wal");
  // Opening again migrates nothing.
  { ASSERT_NE(OpenLedger(), nullptr); }
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM schema_version"),
            absl::StrCat(SqliteLedger::kSchemaVersion));
}

void ExpectRefused(const absl::StatusOr<std::unique_ptr<SqliteLedger>>& opened,
                   absl::string_view fragment) {
  ASSERT_FALSE(opened.ok());
  EXPECT_THAT(opened.status().code(),
              ::testing::AnyOf(absl::StatusCode::kFailedPrecondition,
                               absl::StatusCode::kUnavailable));
  EXPECT_THAT(std::string(opened.status().message()), HasSubstr(fragment));
  EXPECT_FALSE(absl::StrContains(opened.status().message(), "\n"))
      << opened.status();
}

TEST_F(SqliteLedgerTest, RefusesADatabaseFromTheFuture) {
  { ASSERT_NE(OpenLedger(), nullptr); }
  ASSERT_EQ(Exec(path_,
                 "INSERT INTO schema_version (version, applied_time_us) "
                 "VALUES (99, 0)"),
            SQLITE_OK);
  absl::StatusOr<std::unique_ptr<SqliteLedger>> opened =
      SqliteLedger::Open(Options());
  ExpectRefused(opened, "schema version 99");
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SqliteLedgerTest, RefusesACorruptFile) {
  {
    std::ofstream garbage(path_, std::ios::binary);
    for (int i = 0; i < 8192; ++i) garbage.put(static_cast<char>(i * 31 + 7));
  }
  absl::StatusOr<std::unique_ptr<SqliteLedger>> opened =
      SqliteLedger::Open(Options());
  ExpectRefused(opened, "not a SQLite database");
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SqliteLedgerTest, RefusesAnotherApplicationsDatabase) {
  struct Case {
    std::string name;
    std::string sql;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {"application id", "PRAGMA application_id = 42", "another application"},
      {"foreign tables", "CREATE TABLE payouts (x)", "not a payout ledger"},
  };
  for (const Case& c : cases) {
    const std::string path = absl::StrCat(dir_, "/", c.name, ".db");
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &raw), SQLITE_OK);
    Db db(raw);
    ASSERT_EQ(sqlite3_exec(db.get(), c.sql.c_str(), nullptr, nullptr, nullptr),
              SQLITE_OK);
    db.reset();
    SqliteLedgerOptions options = Options();
    options.path = path;
    ExpectRefused(SqliteLedger::Open(options), c.fragment);
  }
}

TEST_F(SqliteLedgerTest, RefusesAPathWithoutAUsableDirectory) {
  { std::ofstream file(dir_ + "/plain-file"); }
  struct Case {
    std::string path;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {dir_ + "/missing/ledger.db", "does not exist"},
      {dir_ + "/plain-file/ledger.db", "is not a directory"},
  };
  for (const Case& c : cases) {
    SqliteLedgerOptions options = Options();
    options.path = c.path;
    absl::StatusOr<std::unique_ptr<SqliteLedger>> opened =
        SqliteLedger::Open(options);
    ExpectRefused(opened, c.fragment);
    EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

TEST_F(SqliteLedgerTest, RefusesBadOptions) {
  SqliteLedgerOptions no_registration = Options();
  no_registration.registration_id = "";
  EXPECT_EQ(SqliteLedger::Open(no_registration).status().code(),
            absl::StatusCode::kInvalidArgument);
  SqliteLedgerOptions no_vfs = Options();
  no_vfs.vfs = "no-such-vfs";
  EXPECT_EQ(SqliteLedger::Open(no_vfs).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// Write failures.

class FaultGuard {
 public:
  FaultGuard() { Clear(); }
  ~FaultGuard() { Clear(); }
  static void Clear() {
    TheFaults().fail_writes = false;
    TheFaults().fail_syncs = false;
    TheFaults().wal_only = false;
  }
};

struct FaultCase {
  std::string name;
  bool fail_writes;
  int write_error;
  bool fail_syncs;
};

class SqliteLedgerFaultTest : public SqliteLedgerTest,
                              public ::testing::WithParamInterface<FaultCase> {
 protected:
  void Inject() {
    TheFaults().write_error = GetParam().write_error;
    TheFaults().fail_writes = GetParam().fail_writes;
    TheFaults().fail_syncs = GetParam().fail_syncs;
  }
  FaultGuard guard_;
};

TEST_P(SqliteLedgerFaultTest, FailedWritesAreUnavailableAndReadsGoOn) {
  auto ledger = OpenLedgerOnFaultVfs();
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1));
  EXPECT_TRUE(ledger->Healthy());

  Inject();
  absl::StatusOr<InsertResult> refused = Insert(*ledger, MakePayout(2));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable)
      << refused.status();
  EXPECT_EQ(GetErrorDetails(refused.status()).reason,
            reason::kLedgerUnavailable);
  EXPECT_FALSE(ledger->Healthy());
  absl::StatusOr<StoredPayout> not_applied =
      Apply(*ledger,
            Change(PayoutId(1), PayoutState::kPending, PayoutState::kAccepted));
  EXPECT_EQ(not_applied.status().code(), absl::StatusCode::kUnavailable);

  // Reads go on, and show that nothing of the failed writes was recorded.
  absl::StatusOr<StoredPayout> first = GetById(*ledger, PayoutId(1));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->payout.state, PayoutState::kPending);
  EXPECT_EQ(GetByRequest(*ledger, MakePayout(2).request_id).status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<ListPage> listed = List(*ledger, ListQuery{});
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(Ids(*listed), ElementsAre(PayoutId(1)));

  FaultGuard::Clear();
  absl::StatusOr<InsertResult> retried = Insert(*ledger, MakePayout(2));
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_TRUE(retried->inserted);
  EXPECT_TRUE(ledger->Healthy());
  EXPECT_TRUE(Apply(*ledger, Change(PayoutId(1), PayoutState::kPending,
                                    PayoutState::kAccepted))
                  .ok());
  ledger.reset();

  // And the file is whole.
  auto reopened = OpenLedger();
  ASSERT_NE(reopened, nullptr);
  absl::StatusOr<ListPage> all = List(*reopened, ListQuery{});
  ASSERT_TRUE(all.ok());
  EXPECT_THAT(Ids(*all), ElementsAre(PayoutId(2), PayoutId(1)));
  EXPECT_EQ(QueryText(path_, "PRAGMA integrity_check"), "ok");
}

// Health must come back when the fault goes even if nobody writes: a load
// balancer keeps callers away from a NOT_SERVING gateway.
TEST_P(SqliteLedgerFaultTest, HealthRecoversWithoutCallersWhenTheFaultGoes) {
  auto ledger = OpenLedgerOnFaultVfs();
  ASSERT_NE(ledger, nullptr);
  Inject();
  EXPECT_FALSE(Insert(*ledger, MakePayout(1)).ok());
  EXPECT_FALSE(ledger->Healthy());
  FaultGuard::Clear();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!ledger->Healthy() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));  // polling, not synchronising
  }
  EXPECT_TRUE(ledger->Healthy());
  EXPECT_EQ(GetByRequest(*ledger, MakePayout(1).request_id).status().code(),
            absl::StatusCode::kNotFound)
      << "the probe records no payout";
}

TEST_P(SqliteLedgerFaultTest, AFailedMigrationLeavesTheFileUsable) {
  SqliteLedgerOptions options = Options();
  options.vfs = FaultVfs();
  Inject();
  TheFaults().wal_only = true;  // the switch to WAL works; the commit fails
  absl::StatusOr<std::unique_ptr<SqliteLedger>> opened =
      SqliteLedger::Open(options);
  ExpectRefused(opened, "migration to schema version 1 failed");
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kUnavailable);
  FaultGuard::Clear();
  auto ledger = OpenLedger(options);
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1));
  EXPECT_EQ(QueryText(path_, "SELECT max(version) FROM schema_version"),
            absl::StrCat(SqliteLedger::kSchemaVersion));
}

// The table rebuild of version 3 is one transaction: a failure leaves the
// version 2 file as it was, and the next start migrates it.
TEST_F(SqliteLedgerTest, AFailedMigrationToVersion3LeavesVersion2Whole) {
  {
    auto ledger = OpenLedger();
    ASSERT_NE(ledger, nullptr);
    InsertIn(*ledger, MakePayout(1), {PayoutState::kAccepted});
  }
  DowngradeToVersion2(path_);
  SqliteLedgerOptions options = Options();
  options.vfs = FaultVfs();
  {
    FaultGuard guard;
    TheFaults().write_error = SQLITE_IOERR_WRITE;
    TheFaults().wal_only = true;
    TheFaults().fail_writes = true;
    absl::StatusOr<std::unique_ptr<SqliteLedger>> opened =
        SqliteLedger::Open(options);
    ExpectRefused(opened, "migration to schema version 3 failed");
  }
  EXPECT_EQ(QueryText(path_, "SELECT max(version) FROM schema_version"), "2");
  EXPECT_EQ(QueryText(path_,
                      "SELECT count(*) FROM pragma_table_info('payouts') "
                      "WHERE name = 'client'"),
            "0");
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM payout_events"), "2");

  auto ledger = OpenLedger(options);
  ASSERT_NE(ledger, nullptr);
  absl::StatusOr<StoredPayout> stored = GetById(*ledger, PayoutId(1));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->payout.state, PayoutState::kAccepted);
  EXPECT_EQ(QueryText(path_, "SELECT max(version) FROM schema_version"),
            absl::StrCat(SqliteLedger::kSchemaVersion));
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM payout_events"), "2");
}

INSTANTIATE_TEST_SUITE_P(
    Faults, SqliteLedgerFaultTest,
    ::testing::Values(FaultCase{"WriteIoError", true, SQLITE_IOERR_WRITE,
                                false},
                      FaultCase{"DiskFull", true, SQLITE_FULL, false},
                      FaultCase{"SyncIoError", false, SQLITE_OK, true}),
    [](const ::testing::TestParamInfo<FaultCase>& info) {
      return info.param.name;
    });

// ---------------------------------------------------------------------------
// Closing.

// SQLite would go on writing into a deleted file, and every payout recorded
// from then on would vanish at the next restart (and be sent again).
TEST_F(SqliteLedgerTest, ADeletedLedgerFileStopsWritesUntilRestart) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1));
  ASSERT_EQ(unlink(path_.c_str()), 0);

  absl::StatusOr<InsertResult> refused = Insert(*ledger, MakePayout(2));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorDetails(refused.status()).reason,
            reason::kLedgerUnavailable);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("deleted"));
  EXPECT_FALSE(ledger->Healthy());

  // A new file at the path is not the ledger either.
  { std::ofstream(path_) << "a new file"; }
  EXPECT_FALSE(Insert(*ledger, MakePayout(3)).ok());
  EXPECT_FALSE(ledger->Healthy());
}

TEST_F(SqliteLedgerTest, CloseRunsEveryQueuedCallbackExactlyOnce) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  constexpr int kInserts = 40;
  constexpr int kReads = 10;
  std::vector<std::atomic<int>> insert_calls(kInserts + 1);
  std::vector<std::atomic<bool>> inserted(kInserts + 1);
  std::vector<std::atomic<int>> read_calls(kReads);
  std::vector<std::atomic<bool>> read_ok(kReads);
  absl::Notification writer_held, release;

  // A callback on each thread holds it, so that the work behind it is still
  // queued when Close() starts.
  ledger->Insert(Request(MakePayout(1)), [&](absl::StatusOr<InsertResult> r) {
    inserted[1] = r.ok() && r->inserted;
    ++insert_calls[1];
    writer_held.Notify();
    release.WaitForNotification();
  });
  writer_held.WaitForNotification();
  ledger->GetByPayoutId(PayoutId(1), [&](absl::StatusOr<StoredPayout>) {
    release.WaitForNotification();
  });
  for (int n = 2; n <= kInserts; ++n) {
    ledger->Insert(Request(MakePayout(n)),
                   [&, n](absl::StatusOr<InsertResult> r) {
                     inserted[n] = r.ok() && r->inserted;
                     ++insert_calls[n];
                   });
  }
  for (int i = 0; i < kReads; ++i) {
    ledger->GetByPayoutId(PayoutId(1), [&, i](absl::StatusOr<StoredPayout> r) {
      read_ok[i] = r.ok();
      ++read_calls[i];
    });
  }
  std::thread closer([&] { ledger->Close(); });

  // Once Close() has begun, calls are refused; probe until one is, then let
  // the threads go on. Probes made before that are queued reads too.
  std::atomic<int> probes_answered{0};
  std::atomic<bool> refused{false};
  int probes = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!refused.load() && absl::Now() < deadline) {
    ++probes;
    ledger->GetByPayoutId(PayoutId(1), [&](absl::StatusOr<StoredPayout> r) {
      if (absl::IsUnavailable(r.status())) refused = true;
      ++probes_answered;
    });
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_TRUE(refused.load());
  release.Notify();
  closer.join();

  for (int n = 1; n <= kInserts; ++n) {
    EXPECT_EQ(insert_calls[n].load(), 1) << n;
    EXPECT_TRUE(inserted[n].load()) << n;
  }
  for (int i = 0; i < kReads; ++i) {
    EXPECT_EQ(read_calls[i].load(), 1) << i;
    EXPECT_TRUE(read_ok[i].load()) << i;
  }
  absl::StatusOr<InsertResult> late = Insert(*ledger, MakePayout(100));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ledger->RecoverPending(T(1)).status().code(),
            absl::StatusCode::kUnavailable);
  ledger->Close();  // again: nothing happens
  ledger.reset();   // joins the threads that answered late calls
  EXPECT_EQ(probes_answered.load(), probes);

  auto reopened = OpenLedger();
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM payouts"),
            absl::StrCat(kInserts));
}

// The writer only writes: while a callback of one commit still runs, the
// next write is committed.
TEST_F(SqliteLedgerTest, ACallbackDoesNotHoldUpTheNextCommit) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  absl::Notification first_called, second_committed, second_called;
  ledger->Insert(Request(MakePayout(1)), [&](absl::StatusOr<InsertResult> r) {
    EXPECT_TRUE(r.ok() && r->inserted);
    first_called.Notify();
    second_committed.WaitForNotification();
  });
  first_called.WaitForNotification();
  ledger->Insert(Request(MakePayout(2)), [&](absl::StatusOr<InsertResult> r) {
    EXPECT_TRUE(r.ok() && r->inserted);
    second_called.Notify();
  });
  // The file holds the second payout while the first callback still runs.
  // (With callbacks on the writer thread this would never happen.)
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (QueryText(path_, "SELECT count(*) FROM payouts") != "2" &&
         absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM payouts"), "2");
  second_committed.Notify();
  second_called.WaitForNotification();
}

// An executor that marks the threads of the tasks it runs.
class MarkingExecutor final : public Executor {
 public:
  static bool OnExecutor() { return on_executor_; }
  void Run(Task task) override {
    ++tasks_;
    pool_.Run([task = std::move(task)]() mutable {
      on_executor_ = true;
      std::move(task)();
      on_executor_ = false;
    });
  }
  int tasks() const { return tasks_.load(); }

 private:
  static thread_local bool on_executor_;
  std::atomic<int> tasks_{0};
  ThreadPool pool_{2};
};
thread_local bool MarkingExecutor::on_executor_ = false;

TEST_F(SqliteLedgerTest, CallbacksRunOnTheGivenExecutor) {
  MarkingExecutor executor;
  SqliteLedgerOptions options = Options();
  options.executor = &executor;
  auto ledger = OpenLedger(options);
  ASSERT_NE(ledger, nullptr);
  bool on_executor = false;
  auto marked = [&](auto start) {
    on_executor = false;
    absl::Notification done;
    start([&](auto) {
      on_executor = MarkingExecutor::OnExecutor();
      done.Notify();
    });
    done.WaitForNotification();
    return on_executor;
  };
  EXPECT_TRUE(marked([&](auto done) {
    ledger->Insert(Request(MakePayout(1)), std::move(done));
  }));
  EXPECT_TRUE(marked([&](auto done) {
    ledger->Apply(
        Change(PayoutId(1), PayoutState::kPending, PayoutState::kAccepted),
        std::move(done));
  }));
  EXPECT_TRUE(marked(
      [&](auto done) { ledger->GetByPayoutId(PayoutId(1), std::move(done)); }));
  EXPECT_TRUE(
      marked([&](auto done) { ledger->List(ListQuery{}, std::move(done)); }));
  EXPECT_GE(executor.tasks(), 4);
  ledger->Close();  // before the executor goes
}

TEST_P(LedgerSuite, PruningNothingIsNotAnError) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  EXPECT_EQ(Prune(*ledger, T(1'000'000)).value(), 0);
  InsertIn(*ledger, MakePayout(1), {PayoutState::kAccepted});
  absl::StatusOr<int> pruned = Prune(*ledger, T(1'000'000));
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 0);
}

TEST_P(LedgerSuite, APayoutHeldForApprovalCountsUntilCancelled) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  Payout held = ClientPayout(1, "alpha", 6'000);
  held.state = PayoutState::kAwaitingApproval;
  absl::StatusOr<InsertResult> inserted =
      InsertWithin(*ledger, held, Limit(10'000));
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  ASSERT_TRUE(inserted->inserted);
  absl::StatusOr<StoredPayout> stored = GetById(*ledger, PayoutId(1));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->payout.state, PayoutState::kAwaitingApproval);
  absl::StatusOr<std::vector<PayoutEvent>> events =
      Events(*ledger, PayoutId(1));
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ(events->front().to, PayoutState::kAwaitingApproval);
  EXPECT_THAT(events->front().why, HasSubstr("approval"));

  // It may yet be sent: it counts against the day's limit.
  absl::StatusOr<InsertResult> over =
      InsertWithin(*ledger, ClientPayout(2, "alpha", 5'000), Limit(10'000));
  ASSERT_TRUE(over.ok()) << over.status();
  EXPECT_TRUE(over->over_daily_limit);
  EXPECT_EQ(over->spent_paise, 6'000);

  // Cancelled, it never will be: it stops counting, and it is final.
  PayoutChange cancel = Change(PayoutId(1), PayoutState::kAwaitingApproval,
                               PayoutState::kCancelled, T(50));
  ASSERT_TRUE(Apply(*ledger, cancel).ok());
  absl::StatusOr<InsertResult> fits =
      InsertWithin(*ledger, ClientPayout(2, "alpha", 5'000), Limit(10'000));
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_TRUE(fits->inserted);
  EXPECT_EQ(Prune(*ledger, T(51)).value(), 1);
  EXPECT_EQ(GetById(*ledger, PayoutId(1)).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(LedgerSuite, MetadataIsStoredAndReadBackExactly) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  Payout with = MakePayout(1);
  with.metadata = {{"invoice", "INV-2026-0042"},
                   {"note", "quote \" backslash \\ and ✓"},
                   {"empty", ""}};
  InsertIn(*ledger, with);
  InsertIn(*ledger, MakePayout(2));
  absl::StatusOr<StoredPayout> stored = GetById(*ledger, PayoutId(1));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->payout.metadata, with.metadata);
  absl::StatusOr<StoredPayout> without = GetById(*ledger, PayoutId(2));
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_TRUE(without->payout.metadata.empty());
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM payouts WHERE metadata "
                               "IS NULL AND payout_id = '",
                               PayoutId(2), "'")),
            "1");
  absl::StatusOr<ListPage> page = List(*ledger, ListQuery{});
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->payouts.size(), 2u);
  EXPECT_EQ(page->payouts.back().metadata, with.metadata);
}

TEST_P(LedgerSuite, OnlyPendingAndAwaitingApprovalPayoutsAreInserted) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  Payout accepted = MakePayout(1);
  accepted.state = PayoutState::kAccepted;
  EXPECT_EQ(Insert(*ledger, accepted).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// PostgreSQL only: several replicas on one database, owners and leases, the
// duties lock, and a database that goes away (through a TCP proxy).

namespace pg = postgres_internal;

class PostgresLedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> uri = test_support::NewTestDatabase();
    ASSERT_TRUE(uri.ok()) << uri.status();
    uri_ = *std::move(uri);
  }

  PostgresLedgerOptions Options(std::string owner = "") const {
    PostgresLedgerOptions options;
    options.uri = uri_;
    options.registration_id = std::string(kRegistration);
    options.owner = std::move(owner);
    return options;
  }

  std::unique_ptr<PostgresLedger> Open(PostgresLedgerOptions options) {
    absl::StatusOr<std::unique_ptr<PostgresLedger>> ledger =
        PostgresLedger::Open(std::move(options));
    EXPECT_TRUE(ledger.ok()) << ledger.status();
    if (!ledger.ok()) return nullptr;
    return *std::move(ledger);
  }
  std::unique_ptr<PostgresLedger> Open(std::string owner = "") {
    return Open(Options(std::move(owner)));
  }

  std::string Query(const std::string& sql) {
    return test_support::PgScalar(uri_, sql);
  }

  // A connection of the test's own (another replica's, say), for
  // transactions held open across the ledger's calls.
  std::optional<postgres_internal::Connection> Connect() {
    absl::StatusOr<postgres_internal::ConnectTarget> target =
        postgres_internal::ParseConnectTarget(uri_, absl::Seconds(10));
    EXPECT_TRUE(target.ok()) << target.status();
    if (!target.ok()) return std::nullopt;
    absl::StatusOr<postgres_internal::Connection> db =
        postgres_internal::Connection::Open(*target);
    EXPECT_TRUE(db.ok()) << db.status();
    if (!db.ok()) return std::nullopt;
    return *std::move(db);
  }

  // A connection in a transaction that holds `client`'s lock, as another
  // replica's limited insert does (DailySpent's callers).
  std::optional<postgres_internal::Connection> HoldClientLock(
      const std::string& client) {
    std::optional<postgres_internal::Connection> db = Connect();
    if (!db.has_value()) return std::nullopt;
    const bool held =
        db->Run("BEGIN", {}, "test").ok() &&
        db->Run(
              "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || "
              "$2, 0))",
              {std::string(kRegistration), client}, "test")
            .ok();
    EXPECT_TRUE(held);
    if (!held) return std::nullopt;
    return db;
  }

  // Records `payout` (its key, client and amount) as PENDING under
  // `payout_id` on `db`, as another replica's insert does, in whatever
  // transaction `db` has open.
  static absl::Status InsertAs(postgres_internal::Connection& db,
                               const std::string& payout_id,
                               const Payout& payout) {
    const std::string time =
        absl::StrCat(absl::ToUnixMicros(payout.create_time));
    return db.Run(
        "INSERT INTO payouts (payout_id, registration, client, request_id, "
        "fingerprint, state, account_number, ifsc, name, email, mobile, "
        "amount_paise, mode, create_time_us, update_time_us) VALUES ($1, $2, "
        "$3, $4, 'fp', 1, '100000011836', 'SBIN0000002', 'Dean Jon', '', '', "
        "$5, 2, $6, $6)",
        {payout_id, std::string(kRegistration), payout.client,
         payout.request_id, absl::StrCat(payout.amount_paise), time},
        "test");
  }

  // Makes payout `n` (inserted PENDING) belong to replica `owner`, whose last
  // heartbeat was `age` ago.
  void GiveTo(int n, const std::string& owner, absl::Duration age) {
    ASSERT_EQ(Query(absl::StrCat(
                  "INSERT INTO gateway_replicas (owner, registration, "
                  "heartbeat_at) VALUES ('",
                  owner, "', '", kRegistration, "', now() - interval '",
                  absl::ToInt64Milliseconds(age),
                  " milliseconds') ON CONFLICT (owner) DO NOTHING "
                  "RETURNING 'ok'")),
              "ok");
    ASSERT_EQ(Query(absl::StrCat("UPDATE payouts SET owner = '", owner,
                                 "' WHERE payout_id = '", PayoutId(n),
                                 "' RETURNING 'ok'")),
              "ok");
  }

  absl::StatusOr<PayoutState> StateOf(Ledger& ledger, int n) {
    absl::StatusOr<StoredPayout> stored = GetById(ledger, PayoutId(n));
    if (!stored.ok()) return stored.status();
    return stored->payout.state;
  }

  // Polls `condition` until it holds or 20 s pass.
  static bool Eventually(const std::function<bool()>& condition) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      if (condition()) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return condition();
  }

  std::string uri_;
};

TEST_F(PostgresLedgerTest, ExactlyOneReplicaWinsEachKey) {
  auto a = Open("replica-a");
  auto b = Open("replica-b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  constexpr int kKeys = 40;
  // Written by the callbacks under mu: BlockingCounter's own ordering is
  // invisible to ThreadSanitizer (Abseil is not instrumented).
  absl::Mutex mu;
  std::vector<absl::StatusOr<InsertResult>> results(2 * kKeys,
                                                    absl::UnknownError(""));
  absl::BlockingCounter answered(2 * kKeys);
  for (int key = 0; key < kKeys; ++key) {
    const std::string request_id = absl::StrCat("req-race-", key);
    // The same key, different payout ids, one insert at each replica.
    for (int side = 0; side < 2; ++side) {
      Ledger& ledger = side == 0 ? *a : *b;
      const int n = 1 + 2 * key + side;
      ledger.Insert(Request(MakePayout(n, request_id)),
                    [&, n](absl::StatusOr<InsertResult> result) {
                      {
                        absl::MutexLock lock(&mu);
                        results[n - 1] = std::move(result);
                      }
                      answered.DecrementCount();
                    });
    }
  }
  answered.Wait();
  absl::MutexLock lock(&mu);
  for (int key = 0; key < kKeys; ++key) {
    const absl::StatusOr<InsertResult>& first = results[2 * key];
    const absl::StatusOr<InsertResult>& second = results[2 * key + 1];
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE(second.ok()) << second.status();
    ASSERT_NE(first->inserted, second->inserted) << "key " << key;
    const std::string winner =
        first->inserted ? PayoutId(1 + 2 * key) : PayoutId(2 + 2 * key);
    const InsertResult& loser = first->inserted ? *second : *first;
    EXPECT_EQ(loser.existing.payout.payout_id, winner);
    // The winner's replica owns it.
    EXPECT_EQ(Query(absl::StrCat("SELECT owner FROM payouts WHERE payout_id "
                                 "= '",
                                 winner, "'")),
              first->inserted ? "replica-a" : "replica-b");
  }
  EXPECT_EQ(Query("SELECT count(*) FROM payouts"), absl::StrCat(kKeys));
}

TEST_F(PostgresLedgerTest, TwoReplicasNeverOvershootADailyLimitTogether) {
  auto a = Open("replica-a");
  auto b = Open("replica-b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  constexpr int kPayouts = 20;
  std::atomic<int> inserted{0};
  std::atomic<int> refused{0};
  absl::BlockingCounter answered(kPayouts);
  for (int n = 1; n <= kPayouts; ++n) {
    Ledger& ledger = n % 2 == 0 ? *a : *b;
    ledger.Insert(Request(ClientPayout(n, "alpha", 1'000), "fp", Limit(10'000)),
                  [&](absl::StatusOr<InsertResult> result) {
                    EXPECT_TRUE(result.ok()) << result.status();
                    if (result.ok() && result->inserted) ++inserted;
                    if (result.ok() && result->over_daily_limit) ++refused;
                    answered.DecrementCount();
                  });
  }
  answered.Wait();
  EXPECT_EQ(inserted.load(), 10);
  EXPECT_EQ(refused.load(), 10);
  EXPECT_EQ(Query("SELECT sum(amount_paise) FROM payouts"), "10000");
}

// Advisory locks that a session of the test's database waits for.
constexpr char kWaitingAdvisoryLocks[] =
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT "
    "granted AND database = (SELECT oid FROM pg_database WHERE datname = "
    "current_database())";

// A client's running total of the day is seeded, on whichever replica makes
// the day's first limited insert, from a sum taken under the client's lock.
// A payout of that client that fails meanwhile (on another replica, say)
// must not fall between the sum and the seeded row: its change waits for
// the lock and then updates the row.
TEST_F(PostgresLedgerTest, APayoutThatFailsWhileItsTotalIsSeededIsCounted) {
  auto ledger = Open("replica-a");
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, ClientPayout(1, "alpha", 100));
  InsertIn(*ledger, ClientPayout(2, "alpha", 10));
  // Another replica's seeding, as DailySpent does it: the sum as of now.
  std::optional<postgres_internal::Connection> seeder = HoldClientLock("alpha");
  ASSERT_TRUE(seeder.has_value());
  ASSERT_TRUE(
      seeder
          ->Run("INSERT INTO daily_spent (registration, client, day_start_us, "
                "day_end_us, spent_paise) VALUES ($1, 'alpha', $2, $3, 110)",
                {std::string(kRegistration),
                 absl::StrCat(absl::ToUnixMicros(DayStart())),
                 absl::StrCat(absl::ToUnixMicros(DayEnd()))},
                "test")
          .ok());

  absl::Notification failed;
  ledger->Apply(
      Change(PayoutId(1), PayoutState::kPending, PayoutState::kFailed),
      [&](absl::StatusOr<StoredPayout> result) {
        EXPECT_TRUE(result.ok()) << result.status();
        failed.Notify();
      });
  ASSERT_TRUE(Eventually([&] { return Query(kWaitingAdvisoryLocks) == "1"; }))
      << "the failure did not wait for the seeding";
  ASSERT_TRUE(seeder->Run("COMMIT", {}, "test").ok());
  failed.WaitForNotification();
  EXPECT_EQ(Query("SELECT spent_paise FROM daily_spent WHERE client = 'alpha'"),
            "10");
  EXPECT_EQ(Spent(*ledger, "alpha"), 10);
}

// One replica's limited insert and another's unlimited insert of the same
// key (their clients files disagree while a change rolls out, say) must not
// deadlock. The unlimited insert takes the client's lock before it takes
// the key; had it taken the key first and then waited in its trigger for
// the lock, the limited insert would wait for its key, and PostgreSQL would
// abort one of them a second later.
TEST_F(PostgresLedgerTest, AnInsertTakesTheClientsLockBeforeItsKey) {
  auto ledger = Open("replica-a");
  ASSERT_NE(ledger, nullptr);
  const Payout payout = ClientPayout(1, "alpha", 100);
  // The other replica's limited insert holds the client's lock.
  std::optional<postgres_internal::Connection> limited =
      HoldClientLock("alpha");
  ASSERT_TRUE(limited.has_value());

  absl::Notification answered;
  absl::StatusOr<InsertResult> result = absl::UnknownError("no answer");
  ledger->Insert(Request(payout), [&](absl::StatusOr<InsertResult> r) {
    result = std::move(r);
    answered.Notify();
  });
  ASSERT_TRUE(Eventually([&] { return Query(kWaitingAdvisoryLocks) == "1"; }));
  // The other replica's insert of the key does not wait for this one's (a
  // wait would be the deadlock; the timeout makes it an error at once).
  ASSERT_TRUE(
      limited->Run("SET LOCAL lock_timeout = '200ms'", {}, "test").ok());
  absl::Status other = InsertAs(*limited, "other-1", payout);
  EXPECT_TRUE(other.ok()) << other;
  ASSERT_TRUE(limited->Run("COMMIT", {}, "test").ok());
  answered.WaitForNotification();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->inserted);
  EXPECT_EQ(result->existing.payout.payout_id, "other-1");
}

// A retry over a maximum lowered since its first call, while that call's
// insert (on another connection or replica) is not yet committed: the
// retry waits for it and finds the payout, instead of hearing "over the
// limit, nothing sent" of a payout that is then recorded and sent.
TEST_F(PostgresLedgerTest, AnInsertOverTheMaximumWaitsForAnUnfinishedInsert) {
  auto ledger = Open("replica-a");
  ASSERT_NE(ledger, nullptr);
  // The first call's insert commits (the retry finds its payout), or rolls
  // back (the retry is refused, and nothing of it stays).
  for (const bool commits : {true, false}) {
    SCOPED_TRACE(commits ? "the first insert commits" : "it rolls back");
    const Payout retry = ClientPayout(commits ? 1 : 2, "alpha", 5'000);
    std::optional<postgres_internal::Connection> first = Connect();
    ASSERT_TRUE(first.has_value());
    ASSERT_TRUE(first->Run("BEGIN", {}, "test").ok());
    const std::string first_id = commits ? "first-1" : "first-2";
    absl::Status recorded = InsertAs(*first, first_id, retry);
    ASSERT_TRUE(recorded.ok()) << recorded;

    absl::Notification answered;
    absl::StatusOr<InsertResult> result = absl::UnknownError("no answer");
    InsertRequest request = Request(retry);
    request.max_payout_paise = 1'000;
    ledger->Insert(std::move(request), [&](absl::StatusOr<InsertResult> r) {
      result = std::move(r);
      answered.Notify();
    });
    EXPECT_TRUE(Eventually([&] {
      return Query(
                 "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                 "current_database() AND wait_event_type = 'Lock'") == "1";
    })) << "the insert over the maximum did not wait for the first one";
    ASSERT_TRUE(first->Run(commits ? "COMMIT" : "ROLLBACK", {}, "test").ok());
    answered.WaitForNotification();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_FALSE(result->inserted);
    EXPECT_EQ(result->over_max_payout, !commits);
    if (commits) {
      EXPECT_EQ(result->existing.payout.payout_id, first_id);
    }
    EXPECT_EQ(Query("SELECT count(*) FROM payouts"), "1");
  }
}

TEST_F(PostgresLedgerTest, OnlyExpiredLeasesArePendingPayoutsRecovered) {
  auto live = Open("replica-live");
  ASSERT_NE(live, nullptr);
  for (int n = 1; n <= 4; ++n) InsertIn(*live, MakePayout(n));
  GiveTo(2, "replica-stopped", absl::Hours(1));
  GiveTo(3, "replica-beating", absl::ZeroDuration());
  // Payout 4's owner row is gone altogether: it is recovered too.
  ASSERT_EQ(Query(absl::StrCat("UPDATE payouts SET owner = 'replica-gone' "
                               "WHERE payout_id = '",
                               PayoutId(4), "' RETURNING 'ok'")),
            "ok");

  auto other = Open("replica-other");
  ASSERT_NE(other, nullptr);
  absl::StatusOr<int> recovered = other->RecoverPending(T(500));
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  EXPECT_EQ(StateOf(*other, 1).value(), PayoutState::kPending);  // live
  EXPECT_EQ(StateOf(*other, 3).value(), PayoutState::kPending);  // beating
  // Every open replica also ends expired leases itself, once a second by
  // the database's clock: on a slow machine replica-live's sweep may come
  // first and take some of them (signed with its name and the real time).
  // The call answers for exactly those it recovered itself.
  int by_the_call = 0;
  for (int n : {2, 4}) {
    absl::StatusOr<StoredPayout> stored = GetById(*other, PayoutId(n));
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(stored->payout.state, PayoutState::kUnknown);
    EXPECT_EQ(stored->response.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_EQ(GetErrorDetails(stored->response).reason,
              reason::kOutcomeUnknown);
    absl::StatusOr<std::vector<PayoutEvent>> events =
        Events(*other, PayoutId(n));
    ASSERT_TRUE(events.ok());
    ASSERT_EQ(events->size(), 2u);
    EXPECT_EQ(events->back().to, PayoutState::kUnknown);
    EXPECT_THAT(events->back().why, HasSubstr("may have been sent"));
    if (events->back().who == "recovery by replica-other") {
      EXPECT_EQ(events->back().time, T(500));
      ++by_the_call;
    } else {
      EXPECT_EQ(events->back().who, "recovery by replica-live");
    }
  }
  EXPECT_EQ(*recovered, by_the_call);
  // A stopped replica with nothing left PENDING is forgotten.
  EXPECT_EQ(Query("SELECT count(*) FROM gateway_replicas WHERE owner = "
                  "'replica-stopped'"),
            "0");
  EXPECT_EQ(other->RecoverPending(T(600)).value(), 0);
}

TEST_F(PostgresLedgerTest, ACleanlyClosedReplicasPayoutsAreRecoveredAtOnce) {
  {
    auto first = Open("replica-first");
    ASSERT_NE(first, nullptr);
    InsertIn(*first, MakePayout(1));
  }
  auto second = Open("replica-second");
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->RecoverPending(T(500)).value(), 1);
  EXPECT_EQ(StateOf(*second, 1).value(), PayoutState::kUnknown);
}

TEST_F(PostgresLedgerTest, ASilentReplicasPayoutsBecomeUnknownAfterItsLease) {
  PostgresLedgerOptions options = Options("replica-watching");
  options.owner_lease = kMinOwnerLease;
  auto watching = Open(std::move(options));
  ASSERT_NE(watching, nullptr);
  InsertIn(*watching, MakePayout(1));
  const absl::Time before_last_heartbeat = absl::Now();
  GiveTo(1, "replica-silent", absl::ZeroDuration());
  // Nobody calls RecoverPending: the heartbeat's sweep finds it.
  ASSERT_TRUE(Eventually([&] {
    return StateOf(*watching, 1).value_or(PayoutState::kPending) ==
           PayoutState::kUnknown;
  }));
  absl::StatusOr<std::vector<PayoutEvent>> events =
      Events(*watching, PayoutId(1));
  ASSERT_TRUE(events.ok());
  EXPECT_GE(events->back().time, before_last_heartbeat + kMinOwnerLease);
  EXPECT_THAT(events->back().why, HasSubstr("replica-silent"));
}

absl::StatusOr<EventBatch> EventsAfter(Ledger& ledger, int64_t after) {
  return Call<absl::StatusOr<EventBatch>>(
      [&](auto done) { ledger.EventsAfter(after, 10, std::move(done)); });
}

// Either ledger: the events of two payouts (one pruned later) come in order,
// each with the payout as it stood after it; a cursor before pruned events
// has expired, one after them has not.
void ExpectEventsInOrderAndPrunedCursorsExpired(Ledger& ledger) {
  InsertIn(ledger, MakePayout(1), {PayoutState::kAccepted});
  InsertIn(ledger, MakePayout(2), {PayoutState::kSucceeded});
  absl::StatusOr<EventBatch> all = EventsAfter(ledger, 0);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->events.size(), 4u);
  EXPECT_EQ(all->head, all->events.back().cursor);
  EXPECT_EQ(all->last, all->head);
  for (size_t i = 1; i < all->events.size(); ++i) {
    EXPECT_GT(all->events[i].cursor, all->events[i - 1].cursor);
  }
  EXPECT_EQ(all->events[0].payout.payout_id, PayoutId(1));
  // The payout as it stood after each change.
  EXPECT_EQ(all->events[0].payout.state, PayoutState::kPending);
  EXPECT_EQ(all->events[1].payout.state, PayoutState::kAccepted);
  EXPECT_EQ(all->events[1].event.from, PayoutState::kPending);
  absl::StatusOr<EventBatch> rest = EventsAfter(ledger, all->events[1].cursor);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->events.size(), 2u);
  EXPECT_EQ(rest->events[0].cursor, all->events[2].cursor);

  // Payout 2 (final) is pruned with its events: a cursor before them can
  // no longer resume; one after them still can.
  ASSERT_EQ(Prune(ledger, T(1'000'000)).value(), 1);
  absl::StatusOr<EventBatch> expired = EventsAfter(ledger, 0);
  ASSERT_TRUE(expired.ok());
  EXPECT_TRUE(expired->expired);
  absl::StatusOr<EventBatch> fine = EventsAfter(ledger, all->head);
  ASSERT_TRUE(fine.ok());
  EXPECT_FALSE(fine->expired);
  EXPECT_TRUE(fine->events.empty());
}

TEST_F(SqliteLedgerTest, EventsComeInOrderAndACursorBeforePrunedEventsExpires) {
  auto ledger = OpenLedger();
  ASSERT_NE(ledger, nullptr);
  ExpectEventsInOrderAndPrunedCursorsExpired(*ledger);
}

absl::StatusOr<std::vector<OutboxEvent>> OutboxDue(Ledger& ledger,
                                                   absl::Time now) {
  return Call<absl::StatusOr<std::vector<OutboxEvent>>>(
      [&](auto done) { ledger.OutboxDue(now, 10, std::move(done)); });
}

// Either ledger, with webhooks on: the outbox gives each payout's oldest
// event only, takes a delivered one out and holds a failed one until its
// retry time.
void ExpectOutboxHoldsEachPayoutsEventsInOrder(Ledger& ledger) {
  InsertIn(ledger, MakePayout(1), {PayoutState::kAccepted});
  InsertIn(ledger, MakePayout(2), {});
  // Events are sent once they have their cursor (on PostgreSQL, a watch
  // position, given by this read or within a second).
  ASSERT_TRUE(EventsAfter(ledger, 0).ok());
  auto due = [&](absl::Time now) { return OutboxDue(ledger, now); };
  auto settle = [&](int64_t cursor, std::optional<absl::Time> retry_at) {
    return Call<absl::Status>([&](auto done) {
      ledger.OutboxSettle(cursor, retry_at, std::move(done));
    });
  };
  const absl::Time later = T(1'000'000);
  // Each payout's oldest event only: payout 1's ACCEPTED waits behind its
  // creation.
  absl::StatusOr<std::vector<OutboxEvent>> first = due(later);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[0].watched.payout.payout_id, PayoutId(1));
  EXPECT_EQ((*first)[0].watched.payout.state, PayoutState::kPending);
  EXPECT_EQ((*first)[0].attempts, 0);
  EXPECT_EQ((*first)[1].watched.payout.payout_id, PayoutId(2));
  EXPECT_LT((*first)[0].watched.cursor, (*first)[1].watched.cursor);

  // Payout 1's first event delivered: its next one is due. Payout 2's
  // failed and waits for its retry time.
  ASSERT_TRUE(settle((*first)[0].watched.cursor, std::nullopt).ok());
  ASSERT_TRUE(
      settle((*first)[1].watched.cursor, later + absl::Seconds(5)).ok());
  absl::StatusOr<std::vector<OutboxEvent>> second = due(later);
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->size(), 1u);
  EXPECT_EQ((*second)[0].watched.payout.state, PayoutState::kAccepted);
  EXPECT_EQ((*second)[0].watched.event.from, PayoutState::kPending);
  absl::StatusOr<std::vector<OutboxEvent>> retried =
      due(later + absl::Seconds(5));
  ASSERT_TRUE(retried.ok());
  ASSERT_EQ(retried->size(), 2u);
  EXPECT_EQ((*retried)[1].attempts, 1);

  absl::StatusOr<OutboxBacklog> backlog = Call<absl::StatusOr<OutboxBacklog>>(
      [&](auto done) { ledger.OutboxWaiting(std::move(done)); });
  ASSERT_TRUE(backlog.ok());
  EXPECT_EQ(backlog->events, 2);
  EXPECT_EQ(backlog->oldest, (*first)[1].enqueued);
}

TEST_F(SqliteLedgerTest, TheWebhookOutboxHoldsEachPayoutsEventsInOrder) {
  SqliteLedgerOptions options = Options();
  options.webhooks = true;
  auto ledger = OpenLedger(options);
  ASSERT_NE(ledger, nullptr);
  ExpectOutboxHoldsEachPayoutsEventsInOrder(*ledger);
}

TEST_F(SqliteLedgerTest,
       OnlyAGatewayWithWebhooksQueuesEventsAndTheQueueSurvives) {
  {
    SqliteLedgerOptions options = Options();
    options.webhooks = true;
    auto ledger = OpenLedger(options);
    ASSERT_NE(ledger, nullptr);
    InsertIn(*ledger, MakePayout(1), {});
  }
  auto ledger = OpenLedger();  // webhooks off
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(2), {PayoutState::kAccepted});
  // Payout 1's event, queued before the restart, is still there; payout 2's
  // were never queued.
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM webhook_outbox"), "1");
  EXPECT_EQ(QueryText(path_, "SELECT payout_id FROM webhook_outbox"),
            PayoutId(1));
  // Retention takes queued events with their payout.
  ASSERT_TRUE(Apply(*ledger, Change(PayoutId(1), PayoutState::kPending,
                                    PayoutState::kFailed, T(500)))
                  .ok());
  ASSERT_EQ(Prune(*ledger, T(1'000'000)).value(), 1);
  EXPECT_EQ(QueryText(path_, "SELECT count(*) FROM webhook_outbox"), "0");
}

TEST_F(PostgresLedgerTest,
       EventsComeInOrderAndACursorBeforePrunedEventsExpires) {
  auto ledger = Open();
  ASSERT_NE(ledger, nullptr);
  ExpectEventsInOrderAndPrunedCursorsExpired(*ledger);
}

// Event ids are handed out when a transaction writes, and transactions
// commit in any order: an event whose transaction commits after a later id
// was read still comes after the reader's cursor, not before it.
TEST_F(PostgresLedgerTest, AnEventCommittedLateStillFollowsTheReadersCursor) {
  auto ledger = Open();
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1), {});
  InsertIn(*ledger, MakePayout(2), {});
  std::optional<postgres_internal::Connection> slow = Connect();
  ASSERT_TRUE(slow.has_value());
  // A transaction (another replica's, say) takes an event id and has not
  // committed yet.
  ASSERT_TRUE(slow->Run("BEGIN", {}, "test").ok());
  ASSERT_TRUE(slow->Run(absl::StrCat("INSERT INTO payout_events (payout_id, "
                                     "from_state, to_state, why, who, "
                                     "time_us) VALUES ('",
                                     PayoutId(1), "', 1, 2, 'late', 't', 1)"),
                        {}, "test")
                  .ok());
  // A later id commits first, and a watcher reads up to it.
  ASSERT_TRUE(Apply(*ledger, Change(PayoutId(2), PayoutState::kPending,
                                    PayoutState::kAccepted, T(200)))
                  .ok());
  absl::StatusOr<EventBatch> before = EventsAfter(*ledger, 0);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_EQ(before->events.size(), 3u);
  EXPECT_EQ(before->events.back().payout.payout_id, PayoutId(2));
  EXPECT_EQ(before->events.back().payout.state, PayoutState::kAccepted);
  const int64_t cursor = before->last;
  // The slow transaction commits: its event comes after the cursor.
  ASSERT_TRUE(slow->Run("COMMIT", {}, "test").ok());
  absl::StatusOr<EventBatch> after = EventsAfter(*ledger, cursor);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->events.size(), 1u);
  EXPECT_EQ(after->events[0].payout.payout_id, PayoutId(1));
  EXPECT_EQ(after->events[0].event.why, "late");
  EXPECT_GT(after->events[0].cursor, cursor);
}

// Another replica prunes events after a watcher's cursor between the
// moment the watcher's read looks at the pruning mark and the moment it
// reads the page: the cursor has expired, and the read says so instead of
// skipping the pruned events.
TEST_F(PostgresLedgerTest, APruneDuringAReadExpiresTheCursor) {
  auto ledger = Open();
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1), {PayoutState::kAccepted});   // 1, 2
  InsertIn(*ledger, MakePayout(2), {PayoutState::kSucceeded});  // 3, 4
  InsertIn(*ledger, MakePayout(3), {});                         // 5
  ASSERT_EQ(EventsAfter(*ledger, 0)->head, 5);
  std::optional<postgres_internal::Connection> other = Connect();
  ASSERT_TRUE(other.has_value());
  // The other replica's prune holds the payouts table until it commits:
  // the read (after the cursor of payout 1's events) waits in its page.
  ASSERT_TRUE(other->Run("BEGIN", {}, "test").ok());
  ASSERT_TRUE(
      other->Run("LOCK TABLE payouts IN ACCESS EXCLUSIVE MODE", {}, "test")
          .ok());
  absl::Notification read;
  absl::StatusOr<EventBatch> batch = absl::UnknownError("not read");
  ledger->EventsAfter(2, 10, [&](absl::StatusOr<EventBatch> result) {
    batch = std::move(result);
    read.Notify();
  });
  ASSERT_TRUE(Eventually([&] {
    return Query(
               "SELECT count(*) FROM pg_stat_activity WHERE "
               "datname = current_database() AND wait_event_type = 'Lock' "
               "AND query LIKE '%event_positions ep%'") == "1";
  }));
  ASSERT_TRUE(other
                  ->Run(absl::StrCat("DELETE FROM payouts WHERE payout_id = '",
                                     PayoutId(2), "'"),
                        {}, "test")
                  .ok());
  ASSERT_TRUE(other
                  ->Run("INSERT INTO ledger_meta (key, value) VALUES "
                        "('events_pruned_through', '4')",
                        {}, "test")
                  .ok());
  ASSERT_TRUE(other->Run("COMMIT", {}, "test").ok());
  read.WaitForNotification();
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_TRUE(batch->expired);
  EXPECT_TRUE(batch->events.empty());
}

// A payout whose events still wait for their positions is not pruned yet
// (a sequencing statement in progress could give one that the prune's mark
// would miss); the next prune, after they have them, takes it.
TEST_F(PostgresLedgerTest, PruneWaitsForAPayoutsEventsToHavePositions) {
  auto ledger = Open();
  ASSERT_NE(ledger, nullptr);
  std::optional<postgres_internal::Connection> sequencer = Connect();
  ASSERT_TRUE(sequencer.has_value());
  // Another replica's sequencing holds the sequencer's row: nobody else
  // gives positions meanwhile.
  ASSERT_TRUE(sequencer->Run("BEGIN", {}, "test").ok());
  ASSERT_TRUE(
      sequencer->Run("SELECT last FROM event_sequencer FOR UPDATE", {}, "test")
          .ok());
  InsertIn(*ledger, MakePayout(1), {PayoutState::kSucceeded});
  EXPECT_EQ(Prune(*ledger, T(1'000'000)).value(), 0);
  ASSERT_TRUE(sequencer->Run("COMMIT", {}, "test").ok());
  ASSERT_EQ(EventsAfter(*ledger, 0)->events.size(), 2u);
  EXPECT_EQ(Prune(*ledger, T(1'000'000)).value(), 1);
  absl::StatusOr<EventBatch> expired = EventsAfter(*ledger, 0);
  ASSERT_TRUE(expired.ok());
  EXPECT_TRUE(expired->expired);
}

// A database of schema version 2 (before watch positions and the outbox):
// its events get positions in id order when a replica of this version
// migrates it.
TEST_F(PostgresLedgerTest, EventsRecordedBeforePositionsExistedGetThemInOrder) {
  {
    auto ledger = Open();
    ASSERT_NE(ledger, nullptr);
    InsertIn(*ledger, MakePayout(1), {PayoutState::kAccepted});
    InsertIn(*ledger, MakePayout(2), {});
  }
  ASSERT_EQ(
      Query("DROP TRIGGER payout_events_queue ON payout_events; "
            "DROP FUNCTION payout_events_queue(); "
            "DROP TABLE webhook_outbox, event_positions, event_queue, "
            "event_sequencer, daily_spent; "
            "DROP FUNCTION daily_spent_follow(), daily_spent_lock() CASCADE; "
            "DELETE FROM ledger_schema WHERE version >= 3 "
            "RETURNING 'ok'"),
      "ok");
  auto migrated = Open();
  ASSERT_NE(migrated, nullptr);
  absl::StatusOr<EventBatch> all = EventsAfter(*migrated, 0);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->events.size(), 3u);
  EXPECT_EQ(all->events[0].cursor, 1);
  EXPECT_EQ(all->events[0].payout.payout_id, PayoutId(1));
  EXPECT_EQ(all->events[1].payout.state, PayoutState::kAccepted);
  EXPECT_EQ(all->events[2].payout.payout_id, PayoutId(2));
  EXPECT_EQ(all->head, 3);
}

TEST_F(PostgresLedgerTest, TheWebhookOutboxHoldsEachPayoutsEventsInOrder) {
  PostgresLedgerOptions options = Options();
  options.webhooks = true;
  auto ledger = Open(std::move(options));
  ASSERT_NE(ledger, nullptr);
  ExpectOutboxHoldsEachPayoutsEventsInOrder(*ledger);
}

// Replicas without webhooks queue their events once one with webhooks has
// used the database; only one replica with webhooks sends them, and another
// takes over when it stops.
TEST_F(PostgresLedgerTest,
       OneReplicaSendsEveryReplicasWebhooksAndAnotherTakesOver) {
  auto plain = Open("replica-plain");
  ASSERT_NE(plain, nullptr);
  InsertIn(*plain, MakePayout(1), {});  // before webhooks: not queued
  PostgresLedgerOptions options = Options("replica-sender");
  options.webhooks = true;
  auto sender = Open(options);
  ASSERT_NE(sender, nullptr);
  options.owner = "replica-standby";
  auto standby = Open(options);
  ASSERT_NE(standby, nullptr);
  InsertIn(*plain, MakePayout(2), {});
  ASSERT_TRUE(EventsAfter(*plain, 0).ok());
  const absl::Time later = T(1'000'000);
  absl::StatusOr<std::vector<OutboxEvent>> sent = OutboxDue(*sender, later);
  ASSERT_TRUE(sent.ok()) << sent.status();
  ASSERT_EQ(sent->size(), 1u);
  EXPECT_EQ((*sent)[0].watched.payout.payout_id, PayoutId(2));
  for (PostgresLedger* other : {plain.get(), standby.get()}) {
    absl::StatusOr<std::vector<OutboxEvent>> none = OutboxDue(*other, later);
    ASSERT_TRUE(none.ok());
    EXPECT_TRUE(none->empty());
  }
  // The sender loses its connection to the database, with the event
  // undelivered: from then on it takes nothing (the standby may have the
  // lock before the sender's next heartbeat notices), and the standby takes
  // the lock at its own next heartbeat and sends the event. Only this
  // database's holder: pg_locks shows the whole cluster, where tests running
  // beside this one hold the same lock in their own databases.
  ASSERT_EQ(
      Query(absl::StrCat("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE "
                         "locktype = 'advisory' AND classid = ",
                         pg::kLockSpace, " AND objid = ", pg::kWebhookLock,
                         " AND database = (SELECT oid FROM pg_database "
                         "WHERE datname = current_database())")),
      "t");
  absl::StatusOr<std::vector<OutboxEvent>> after_loss =
      OutboxDue(*sender, later);
  ASSERT_TRUE(after_loss.ok()) << after_loss.status();
  EXPECT_TRUE(after_loss->empty());
  ASSERT_TRUE(Eventually([&] {
    absl::StatusOr<std::vector<OutboxEvent>> due = OutboxDue(*standby, later);
    return due.ok() && due->size() == 1 &&
           (*due)[0].watched.cursor == (*sent)[0].watched.cursor;
  }));
}

TEST_F(PostgresLedgerTest, AnApprovedPayoutIsOwnedByTheReplicaThatSendsIt) {
  auto creator = Open("replica-creator");
  auto approver = Open("replica-approver");
  ASSERT_NE(creator, nullptr);
  ASSERT_NE(approver, nullptr);
  const Payout held = HeldPayout(1);
  InsertIn(*creator, held);
  ASSERT_TRUE(
      Apply(*approver, Change(PayoutId(1), PayoutState::kAwaitingApproval,
                              PayoutState::kPending))
          .ok());
  EXPECT_EQ(Query(absl::StrCat("SELECT owner FROM payouts WHERE payout_id = '",
                               PayoutId(1), "'")),
            "replica-approver");
  // The creator's lease ending does not touch it; the approver's would.
  creator->Close();
  EXPECT_EQ(approver->RecoverPending(T(500)).value(), 0);
}

// An insert whose COMMIT got no answer told its caller nothing was
// recorded; its row is deleted once the database answers, unless something
// moved it on. A held payout approved in between is being sent: deleting
// it freed its key for a second send and lost its outcome.
TEST_F(PostgresLedgerTest, AnUnseenInsertIsForgottenOnlyAsItsInsertLeftIt) {
  auto ledger = Open("replica-a");
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1));
  for (int n : {2, 3, 4, 5}) {
    const Payout held = HeldPayout(n);
    InsertIn(*ledger, held);
  }
  // 3: approved on this replica, being sent.
  ASSERT_TRUE(Apply(*ledger, Change(PayoutId(3), PayoutState::kAwaitingApproval,
                                    PayoutState::kPending))
                  .ok());
  // 4: approved, not sent, held again: in its inserted state, not unchanged.
  ASSERT_TRUE(Apply(*ledger, Change(PayoutId(4), PayoutState::kAwaitingApproval,
                                    PayoutState::kPending))
                  .ok());
  ASSERT_TRUE(Apply(*ledger, Change(PayoutId(4), PayoutState::kPending,
                                    PayoutState::kAwaitingApproval, T(1001)))
                  .ok());
  std::optional<postgres_internal::Connection> db = Connect();
  ASSERT_TRUE(db.has_value());
  auto forget = [&](int n, PayoutState inserted, const std::string& owner) {
    absl::StatusOr<bool> deleted = postgres_internal::ForgetUnchangedInsert(
        *db, PayoutId(n), inserted, owner);
    EXPECT_TRUE(deleted.ok()) << deleted.status();
    return deleted.value_or(false);
  };
  EXPECT_TRUE(forget(1, PayoutState::kPending, "replica-a"));
  EXPECT_TRUE(forget(2, PayoutState::kAwaitingApproval, "replica-a"));
  EXPECT_FALSE(forget(3, PayoutState::kAwaitingApproval, "replica-a"));
  EXPECT_FALSE(forget(4, PayoutState::kAwaitingApproval, "replica-a"));
  EXPECT_FALSE(forget(5, PayoutState::kAwaitingApproval, "replica-b"));
  EXPECT_EQ(GetById(*ledger, PayoutId(1)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(GetById(*ledger, PayoutId(2)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(StateOf(*ledger, 3).value(), PayoutState::kPending);
  EXPECT_EQ(StateOf(*ledger, 4).value(), PayoutState::kAwaitingApproval);
  EXPECT_EQ(StateOf(*ledger, 5).value(), PayoutState::kAwaitingApproval);
}

// An approval whose commit got no answer: its approver heard UNAVAILABLE
// and nothing was sent. Left PENDING, the payout was stuck: never sent, a
// second approval refused, a cancel refused, replays "in progress", until a
// restart made it UNKNOWN. It goes back to approval unless something
// changed it since.
TEST_F(PostgresLedgerTest, AnUnseenApprovalGoesBackToApprovalOnlyAsItLeftIt) {
  auto ledger = Open("replica-a");
  ASSERT_NE(ledger, nullptr);
  for (int n : {1, 2, 3}) {
    const Payout held = HeldPayout(n);
    InsertIn(*ledger, held);
    ASSERT_TRUE(
        Apply(*ledger, Change(PayoutId(n), PayoutState::kAwaitingApproval,
                              PayoutState::kPending, T(1000)))
            .ok());
  }
  // 2: its outcome was recorded since.
  ASSERT_TRUE(Apply(*ledger, Change(PayoutId(2), PayoutState::kPending,
                                    PayoutState::kAccepted, T(1001)))
                  .ok());
  std::optional<postgres_internal::Connection> db = Connect();
  ASSERT_TRUE(db.has_value());
  auto revert = [&](int n, const std::string& owner) {
    absl::StatusOr<bool> moved = postgres_internal::RevertUnseenApproval(
        *db, PayoutId(n), T(1000), owner, T(1002));
    EXPECT_TRUE(moved.ok()) << moved.status();
    return moved.value_or(false);
  };
  EXPECT_TRUE(revert(1, "replica-a"));
  EXPECT_FALSE(revert(2, "replica-a"));
  EXPECT_FALSE(revert(3, "replica-b"));
  EXPECT_EQ(StateOf(*ledger, 1).value(), PayoutState::kAwaitingApproval);
  EXPECT_EQ(StateOf(*ledger, 2).value(), PayoutState::kAccepted);
  EXPECT_EQ(StateOf(*ledger, 3).value(), PayoutState::kPending);
  absl::StatusOr<std::vector<PayoutEvent>> events =
      Events(*ledger, PayoutId(1));
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_FALSE(events->empty());
  EXPECT_EQ(events->back().from, PayoutState::kPending);
  EXPECT_EQ(events->back().to, PayoutState::kAwaitingApproval);
  EXPECT_THAT(events->back().why, HasSubstr("not sent"));
  // It can be approved again.
  EXPECT_TRUE(Apply(*ledger, Change(PayoutId(1), PayoutState::kAwaitingApproval,
                                    PayoutState::kPending, T(1003)))
                  .ok());
}

// A replica whose heartbeats stop getting through (here: held up behind a
// lock) may soon have its PENDING payouts turned UNKNOWN by another: it
// records and approves nothing new, and says it is unhealthy, until a
// heartbeat gets through again. Before, it went on recording and sending
// payouts that another replica then turned UNKNOWN.
TEST_F(PostgresLedgerTest, AReplicaWhoseLeaseIsNotRenewedRecordsNothingNew) {
  PostgresLedgerOptions options = Options("replica-late");
  options.owner_lease = kMinOwnerLease;
  auto ledger = Open(std::move(options));
  ASSERT_NE(ledger, nullptr);
  const Payout held = HeldPayout(1);
  InsertIn(*ledger, held);
  ASSERT_TRUE(ledger->Healthy());

  std::optional<postgres_internal::Connection> blocker = Connect();
  ASSERT_TRUE(blocker.has_value());
  ASSERT_TRUE(blocker->Run("BEGIN", {}, "test").ok());
  ASSERT_TRUE(blocker
                  ->Run("SELECT 1 FROM gateway_replicas WHERE owner = $1 "
                        "FOR UPDATE",
                        {std::string("replica-late")}, "test")
                  .ok());
  EXPECT_TRUE(Eventually([&] { return !ledger->Healthy(); }));
  absl::StatusOr<InsertResult> refused = Insert(*ledger, MakePayout(2));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorDetails(refused.status()).reason,
            reason::kLedgerUnavailable);
  absl::StatusOr<StoredPayout> approval =
      Apply(*ledger, Change(PayoutId(1), PayoutState::kAwaitingApproval,
                            PayoutState::kPending));
  EXPECT_EQ(approval.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Query("SELECT count(*) FROM payouts"), "1");

  ASSERT_TRUE(blocker->Run("COMMIT", {}, "test").ok());
  EXPECT_TRUE(Eventually([&] { return ledger->Healthy(); }));
  absl::StatusOr<InsertResult> inserted = Insert(*ledger, MakePayout(2));
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_TRUE(inserted->inserted);
}

// A conflict that outlasts every attempt (a deadlock, say) is the database
// too busy to answer: UNAVAILABLE, so that the gateway keeps an outcome in
// memory and writes it again. As ABORTED it read as "the payout moved on"
// and the outcome was dropped, the payout left PENDING.
TEST_F(PostgresLedgerTest, AConflictOnEveryAttemptIsUnavailableNotAborted) {
  auto ledger = Open();
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1));
  ASSERT_EQ(Query("CREATE FUNCTION always_deadlocked() RETURNS trigger "
                  "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'deadlock' "
                  "USING ERRCODE = '40P01'; END $$; "
                  "CREATE TRIGGER always_deadlocked BEFORE UPDATE ON payouts "
                  "FOR EACH ROW EXECUTE FUNCTION always_deadlocked(); "
                  "SELECT 'ok'"),
            "ok");
  absl::StatusOr<StoredPayout> applied =
      Apply(*ledger,
            Change(PayoutId(1), PayoutState::kPending, PayoutState::kAccepted));
  EXPECT_EQ(applied.status().code(), absl::StatusCode::kUnavailable)
      << applied.status();
  EXPECT_EQ(GetErrorDetails(applied.status()).reason, "LEDGER_UNAVAILABLE");
  ASSERT_EQ(Query("DROP TRIGGER always_deadlocked ON payouts; SELECT 'ok'"),
            "ok");
  applied = Apply(*ledger, Change(PayoutId(1), PayoutState::kPending,
                                  PayoutState::kAccepted));
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->payout.state, PayoutState::kAccepted);
}

TEST_F(PostgresLedgerTest, ReplicasStartingTogetherMigrateOnce) {
  constexpr int kReplicas = 4;
  std::vector<std::unique_ptr<PostgresLedger>> ledgers(kReplicas);
  // spdlog's registry is made on first use; make it here, before the
  // threads (libspdlog is not instrumented for ThreadSanitizer).
  spdlog::default_logger();
  std::vector<std::thread> threads;
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back([&, i] { ledgers[i] = Open(absl::StrCat("r", i)); });
  }
  for (std::thread& thread : threads) thread.join();
  for (const auto& ledger : ledgers) ASSERT_NE(ledger, nullptr);
  // One row per version: each migration ran once.
  EXPECT_EQ(Query("SELECT count(*) FROM ledger_schema"),
            absl::StrCat(pg::kSchemaVersion));
  EXPECT_EQ(Query("SELECT count(*) FROM gateway_replicas"),
            absl::StrCat(kReplicas));
}

TEST_F(PostgresLedgerTest, OneReplicaLeadsAndAnotherTakesOverWhenItCloses) {
  auto first = Open("replica-first");
  ASSERT_NE(first, nullptr);
  auto second = Open("replica-second");
  ASSERT_NE(second, nullptr);
  EXPECT_TRUE(first->IsLeader());
  EXPECT_FALSE(second->IsLeader());
  InsertIn(*first, MakePayout(1), {PayoutState::kSucceeded});
  // Only the leader prunes.
  EXPECT_EQ(Prune(*second, T(1'000'000)).value(), 0);
  EXPECT_EQ(Query("SELECT count(*) FROM payouts"), "1");
  first->Close();
  EXPECT_TRUE(Eventually([&] { return second->IsLeader(); }));
  EXPECT_EQ(Prune(*second, T(1'000'000)).value(), 1);
}

// A new ledger has no planner statistics until autovacuum first analyzes
// it, a minute or more later. Without them PostgreSQL planned a lookup by
// payout id (Apply's compare-and-set, reading one payout) as a scan of
// every payout of the registration, and the prepared statement kept that
// plan: each payout cost more than the last (the benchmark's rounds of
// 3,000 payouts went 775, 434, 322, 255 payouts/s).
TEST_F(PostgresLedgerTest, AFreshLedgerIsAnalyzedOnceItHoldsPayouts) {
  auto ledger = Open("replica-a");
  ASSERT_NE(ledger, nullptr);
  // Only the ledger's own ANALYZE counts here.
  ASSERT_TRUE(test_support::PgQuery(
                  uri_, "ALTER TABLE payouts SET (autovacuum_enabled = off)")
                  .ok());
  // The ledger analyzes at 1,000 payouts: smaller, the table would look too
  // small for any index.
  for (int n = 1; n <= 1000; ++n) InsertIn(*ledger, MakePayout(n));
  EXPECT_TRUE(Eventually([&] {
    return Query(
               "SELECT count(*) FROM pg_stats WHERE tablename = "
               "'payouts' AND attname = 'registration'") == "1";
  })) << "payouts was not analyzed";

  // The plan a prepared lookup by id keeps: the id bounds the index scan.
  std::optional<postgres_internal::Connection> db = Connect();
  ASSERT_TRUE(db.has_value());
  ASSERT_TRUE(
      db->Run("SET plan_cache_mode = force_generic_plan", {}, "test").ok());
  ASSERT_TRUE(db->Run("PREPARE by_id (text, text, integer) AS SELECT "
                      "payout_id FROM payouts WHERE registration = $1 AND "
                      "payout_id = $2 AND state = $3",
                      {}, "test")
                  .ok());
  absl::StatusOr<postgres_internal::Result> plan =
      db->Exec("EXPLAIN EXECUTE by_id ('r', 'p', 1)", {}, "test");
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::string index_condition;
  for (int row = 0; row < plan->rows(); ++row) {
    const std::string line = plan->Text(row, 0);
    if (absl::StrContains(line, "Index Cond")) index_condition = line;
  }
  EXPECT_THAT(index_condition, HasSubstr("payout_id = $2"));
}

// The same for PostgreSQL (see the SQLite test above): a client's list is
// a walk of the client's own payouts in id order.
TEST_F(PostgresLedgerTest, AClientsListWalksOnlyThatClientsPayouts) {
  auto ledger = Open("replica-a");
  ASSERT_NE(ledger, nullptr);
  for (int n = 1; n <= 300; ++n) InsertIn(*ledger, MakePayout(n));
  ASSERT_TRUE(test_support::PgQuery(uri_, "ANALYZE payouts").ok());
  std::optional<postgres_internal::Connection> db = Connect();
  ASSERT_TRUE(db.has_value());
  ASSERT_TRUE(
      db->Run(absl::StrCat("PREPARE page (text, bigint, text, text) "
                           "AS ",
                           ledger_internal::ListSql({}, true,
                                                    /*client=*/true, '$')),
              {}, "test")
          .ok());
  absl::StatusOr<postgres_internal::Result> plan =
      db->Exec(absl::StrCat("EXPLAIN EXECUTE page ('", kRegistration,
                            "', 51, 'po_~', 'a-client-with-no-payouts')"),
               {}, "test");
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::vector<std::string> lines;
  for (int row = 0; row < plan->rows(); ++row) {
    lines.push_back(plan->Text(row, 0));
  }
  const std::string text = absl::StrJoin(lines, "\n");
  EXPECT_THAT(text, HasSubstr("Index Scan Backward using payouts_by_client"));
  EXPECT_THAT(text, Not(HasSubstr("Seq Scan"))) << text;
  EXPECT_THAT(text, Not(HasSubstr("payouts_by_client_day"))) << text;
  EXPECT_THAT(text, Not(HasSubstr("payouts_by_registration"))) << text;
}

TEST_F(PostgresLedgerTest, RefusesADatabaseOfAnotherRegistration) {
  {
    auto ledger = Open();
    ASSERT_NE(ledger, nullptr);
    InsertIn(*ledger, MakePayout(1));
  }
  PostgresLedgerOptions other = Options();
  other.registration_id = "AOP-999";
  absl::StatusOr<std::unique_ptr<PostgresLedger>> refused =
      PostgresLedger::Open(std::move(other));
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("another AOPay registration"));
  EXPECT_FALSE(absl::StrContains(refused.status().message(), "AOP-999"));
  EXPECT_FALSE(absl::StrContains(refused.status().message(), kRegistration));
}

// A new database holds no payouts yet: a replica with a mistyped
// registration must still not join a live replica of another one (each
// would take the other's retries for new payouts and send them again).
TEST_F(PostgresLedgerTest, RefusesALiveReplicaOfAnotherRegistration) {
  auto ledger = Open("replica-right");
  ASSERT_NE(ledger, nullptr);
  PostgresLedgerOptions other = Options("replica-typo");
  other.registration_id = "AOP-999";
  absl::StatusOr<std::unique_ptr<PostgresLedger>> refused =
      PostgresLedger::Open(other);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition)
      << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("another AOPay registration"));
  // Once that replica is gone, an empty database may be claimed anew.
  ledger->Close();
  absl::StatusOr<std::unique_ptr<PostgresLedger>> claimed =
      PostgresLedger::Open(std::move(other));
  EXPECT_TRUE(claimed.ok()) << claimed.status();
}

TEST_F(PostgresLedgerTest, RefusesANewerSchemaAndAnotherApplicationsTables) {
  { ASSERT_NE(Open(), nullptr); }
  ASSERT_EQ(Query("INSERT INTO ledger_schema (version) VALUES (99) "
                  "RETURNING 'ok'"),
            "ok");
  absl::StatusOr<std::unique_ptr<PostgresLedger>> newer =
      PostgresLedger::Open(Options());
  ASSERT_EQ(newer.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(newer.status().message()), HasSubstr("newer"));

  absl::StatusOr<std::string> foreign = test_support::NewTestDatabase();
  ASSERT_TRUE(foreign.ok());
  ASSERT_EQ(test_support::PgScalar(
                *foreign, "CREATE TABLE payouts (id int); SELECT 'ok'"),
            "ok");
  PostgresLedgerOptions options = Options();
  options.uri = *foreign;
  absl::StatusOr<std::unique_ptr<PostgresLedger>> refused =
      PostgresLedger::Open(std::move(options));
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("not a payout ledger"));
}

// The database behind a proxy that the test takes away and gives back.
class PostgresFaultTest : public PostgresLedgerTest {
 protected:
  void SetUp() override {
    PostgresLedgerTest::SetUp();
    const std::string host = UriParameter("host");
    absl::StatusOr<std::unique_ptr<test_support::TcpProxy>> proxy =
        test_support::TcpProxy::Start(host + "/.s.PGSQL.5432");
    ASSERT_TRUE(proxy.ok()) << proxy.status();
    proxy_ = *std::move(proxy);
    const std::string database =
        uri_.substr(std::strlen("postgresql://postgres@/"),
                    uri_.find('?') - std::strlen("postgresql://postgres@/"));
    proxied_uri_ =
        absl::StrCat("postgresql://postgres@127.0.0.1:", proxy_->port(), "/",
                     database, "?connect_timeout=2");
  }

  std::string UriParameter(absl::string_view name) const {
    const size_t start = uri_.find(absl::StrCat(name, "="));
    const size_t value = start + name.size() + 1;
    return uri_.substr(value, uri_.find('&', value) - value);
  }

  // A replica behind the proxy holding payout 1, whose insert of held
  // payout 2 committed but got no answer (UNAVAILABLE).
  std::unique_ptr<PostgresLedger> WithAHeldInsertUnanswered() {
    auto ledger = Open(ProxiedOptions());
    if (ledger == nullptr) return nullptr;
    InsertIn(*ledger, MakePayout(1));
    const Payout held = HeldPayout(2);
    proxy_->CutAnswerTo(PayoutId(2));
    absl::StatusOr<InsertResult> inserted = Insert(*ledger, held);
    EXPECT_EQ(inserted.status().code(), absl::StatusCode::kUnavailable)
        << inserted.status();
    return ledger;
  }

  // Whether payout `n` is deleted within Eventually's time.
  bool EventuallyGone(int n) {
    return Eventually([&] {
      return Query(absl::StrCat(
                 "SELECT count(*) FROM payouts WHERE payout_id = '",
                 PayoutId(n), "'")) == "0";
    });
  }

  PostgresLedgerOptions ProxiedOptions() const {
    PostgresLedgerOptions options = Options("replica-proxied");
    options.uri = proxied_uri_;
    return options;
  }

  std::unique_ptr<test_support::TcpProxy> proxy_;
  std::string proxied_uri_;
};

TEST_F(PostgresFaultTest, UnreachableAtStartServesLaterWithoutARestart) {
  proxy_->Down();
  auto ledger = Open(ProxiedOptions());
  ASSERT_NE(ledger, nullptr);
  EXPECT_FALSE(ledger->Healthy());
  absl::StatusOr<InsertResult> refused = Insert(*ledger, MakePayout(1));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorDetails(refused.status()).reason,
            reason::kLedgerUnavailable);
  EXPECT_THAT(Query("SELECT count(*) FROM payouts"),
              HasSubstr("does not exist"))
      << "nothing was written";

  proxy_->Up();
  ASSERT_TRUE(Eventually([&] { return ledger->Healthy(); }));
  absl::StatusOr<InsertResult> inserted = Insert(*ledger, MakePayout(1));
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_TRUE(inserted->inserted);
}

// The database runs an approval, and the connection breaks before its
// answer: the approver hears UNAVAILABLE and nothing is sent. Once the
// database answers again the payout awaits approval again, instead of
// staying PENDING for good.
TEST_F(PostgresFaultTest, AnApprovalWhoseAnswerIsLostGoesBackToApproval) {
  auto ledger = Open(ProxiedOptions());
  ASSERT_NE(ledger, nullptr);
  const Payout held = HeldPayout(1);
  InsertIn(*ledger, held);
  proxy_->CutAnswerTo(PayoutId(1));
  absl::StatusOr<StoredPayout> approved =
      Apply(*ledger, Change(PayoutId(1), PayoutState::kAwaitingApproval,
                            PayoutState::kPending));
  EXPECT_EQ(approved.status().code(), absl::StatusCode::kUnavailable)
      << approved.status();
  const std::string events = absl::StrCat(
      "SELECT string_agg(from_state || '>' || to_state, ' ' ORDER BY id) "
      "FROM payout_events WHERE payout_id = '",
      PayoutId(1), "'");
  // Committed (7>1), then moved back (1>7) by the replica.
  EXPECT_TRUE(Eventually([&] { return Query(events) == "0>7 7>1 1>7"; }))
      << Query(events);
  EXPECT_EQ(StateOf(*ledger, 1).value(), PayoutState::kAwaitingApproval);
}

// The same for a held payout's insert: its caller was told nothing was
// recorded, so it is removed once the database answers.
TEST_F(PostgresFaultTest, AHeldInsertWhoseAnswerIsLostIsRemoved) {
  auto ledger = WithAHeldInsertUnanswered();
  ASSERT_NE(ledger, nullptr);
  EXPECT_TRUE(EventuallyGone(2));
  EXPECT_EQ(Query("SELECT count(*) FROM payouts"), "1");
}

// Both answers lost: the held payout's insert (its caller told nothing was
// recorded) and then its approval (its approver told UNAVAILABLE, nothing
// sent). It is moved back to approval and then removed, not left for a
// later approval to send.
TEST_F(PostgresFaultTest, AHeldInsertAndItsApprovalBothUnansweredAreRemoved) {
  auto ledger = WithAHeldInsertUnanswered();
  ASSERT_NE(ledger, nullptr);
  proxy_->CutAnswerTo(PayoutId(2));
  EXPECT_FALSE(
      Apply(*ledger, Change(PayoutId(2), PayoutState::kAwaitingApproval,
                            PayoutState::kPending))
          .ok());
  EXPECT_TRUE(EventuallyGone(2));
  EXPECT_EQ(Query("SELECT count(*) FROM payouts"), "1");
}

// An outcome whose commit went unanswered is written again later; if a
// refresh moved the payout on meanwhile, the write is still recognised as
// done (its event is there). Before, it was taken for an AOPay answer that
// came too late: an error line, and for ACCEPTED against a payout now
// FAILED a false count of contradictions.
TEST_F(PostgresFaultTest, AnUnansweredChangeIsRecognisedAfterThePayoutMovedOn) {
  auto ledger = Open(ProxiedOptions());
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1));
  const PayoutChange accepted = Change(PayoutId(1), PayoutState::kPending,
                                       PayoutState::kAccepted, T(1000));
  proxy_->CutAnswerTo(PayoutId(1));
  EXPECT_EQ(Apply(*ledger, accepted).status().code(),
            absl::StatusCode::kUnavailable);
  ASSERT_TRUE(Apply(*ledger, Change(PayoutId(1), PayoutState::kAccepted,
                                    PayoutState::kFailed, T(1001)))
                  .ok());
  absl::StatusOr<StoredPayout> again = Apply(*ledger, accepted);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->payout.state, PayoutState::kFailed);
}

TEST_F(PostgresFaultTest, LostMidRunWritesFailAtOnceAndResumeWhenItReturns) {
  auto ledger = Open(ProxiedOptions());
  ASSERT_NE(ledger, nullptr);
  InsertIn(*ledger, MakePayout(1));
  ASSERT_TRUE(ledger->Healthy());

  proxy_->Down();
  absl::StatusOr<InsertResult> refused = Insert(*ledger, MakePayout(2));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorDetails(refused.status()).reason,
            reason::kLedgerUnavailable);
  EXPECT_TRUE(Eventually([&] { return !ledger->Healthy(); }));
  absl::StatusOr<StoredPayout> outcome =
      Apply(*ledger,
            Change(PayoutId(1), PayoutState::kPending, PayoutState::kAccepted));
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kUnavailable);

  proxy_->Up();
  // The same outcome, written again once the database is back.
  ASSERT_TRUE(Eventually([&] {
    return Apply(*ledger, Change(PayoutId(1), PayoutState::kPending,
                                 PayoutState::kAccepted))
        .ok();
  }));
  EXPECT_TRUE(Eventually([&] { return ledger->Healthy(); }));
  EXPECT_EQ(Query(absl::StrCat("SELECT state FROM payouts WHERE payout_id = '",
                               PayoutId(1), "'")),
            absl::StrCat(static_cast<int>(PayoutState::kAccepted)));
  EXPECT_EQ(Query("SELECT count(*) FROM payouts"), "1") << "payout 2 unsent";
}

// sslmode=verify-full: the ledger's connections are TLS to a server whose
// certificate names the host, from a CA made here; another CA is refused.
class PostgresTlsTest : public ::testing::Test {
 protected:
  static int Run(const std::string& command) {
    return std::system((command + " >/dev/null 2>&1").c_str());
  }

  void SetUp() override {
    dir_ = MakeTempDir();
    // The server user reads the cluster directory below dir_.
    ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
    for (const char* ca : {"ca", "other-ca"}) {
      ASSERT_EQ(
          Run(absl::StrCat(
              "/usr/bin/openssl req -x509 -newkey rsa:2048 -nodes -days 1 "
              "-subj /CN=",
              ca, " -keyout ", dir_, "/", ca, ".key -out ", dir_, "/", ca,
              ".pem")),
          0);
    }
    ASSERT_EQ(
        Run(absl::StrCat("/usr/bin/openssl req -newkey rsa:2048 -nodes -subj "
                         "/CN=localhost -keyout ",
                         dir_, "/server.key -out ", dir_, "/server.csr")),
        0);
    {
      std::ofstream ext(dir_ + "/san.ext");
      ext << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    }
    ASSERT_EQ(
        Run(absl::StrCat("/usr/bin/openssl x509 -req -in ", dir_,
                         "/server.csr -CA ", dir_, "/ca.pem -CAkey ", dir_,
                         "/ca.key -CAcreateserial -days 1 -extfile ", dir_,
                         "/san.ext -out ", dir_, "/server.pem")),
        0);
    // A free loopback port, as the kernel picks it.
    const int probe = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    ASSERT_EQ(bind(probe, reinterpret_cast<sockaddr*>(&address), length), 0);
    ASSERT_EQ(
        getsockname(probe, reinterpret_cast<sockaddr*>(&address), &length), 0);
    port_ = ntohs(address.sin_port);
    close(probe);
    const int started = Run(absl::StrCat(
        "PG_SSL_CERT=", dir_, "/server.pem PG_SSL_KEY=", dir_,
        "/server.key " PG_CLUSTER_SCRIPT " start ", dir_, "/cluster ", port_));
    if (WEXITSTATUS(started) == 77) GTEST_SKIP() << "PostgreSQL is missing";
    ASSERT_EQ(started, 0);
    started_ = true;
  }

  void TearDown() override {
    if (started_)
      Run(absl::StrCat(PG_CLUSTER_SCRIPT " stop ", dir_, "/cluster"));
  }

  std::string Uri(const std::string& ca) const {
    return absl::StrCat("postgresql://postgres@localhost:", port_,
                        "/postgres?sslmode=verify-full&sslrootcert=", dir_, "/",
                        ca, ".pem&connect_timeout=3");
  }

  std::unique_ptr<PostgresLedger> Open(const std::string& ca) {
    PostgresLedgerOptions options;
    options.uri = Uri(ca);
    options.registration_id = std::string(kRegistration);
    absl::StatusOr<std::unique_ptr<PostgresLedger>> ledger =
        PostgresLedger::Open(std::move(options));
    EXPECT_TRUE(ledger.ok()) << ledger.status();
    return ledger.ok() ? *std::move(ledger) : nullptr;
  }

  std::string dir_;
  int port_ = 0;
  bool started_ = false;
};

TEST_F(PostgresTlsTest, VerifyFullConnectsOverTlsAndRefusesAnotherCa) {
  auto ledger = Open("ca");
  ASSERT_NE(ledger, nullptr);
  ASSERT_TRUE(ledger->Healthy());
  InsertIn(*ledger, MakePayout(1));
  EXPECT_EQ(test_support::PgScalar(
                Uri("ca"),
                "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN "
                "pg_stat_activity a USING (pid) WHERE a.application_name = "
                "'payout-gateway' AND a.datname = current_database()"),
            "t");
  ledger->Close();

  auto refused = Open("other-ca");
  ASSERT_NE(refused, nullptr);
  EXPECT_FALSE(refused->Healthy());
  EXPECT_EQ(Insert(*refused, MakePayout(2)).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(PostgresConnectTargetTest, ReadsThePasswordFromAFileAndHidesIt) {
  const std::string dir = MakeTempDir();
  const std::string secret = dir + "/pgpass";
  {
    std::ofstream out(secret);
    out << "s3cret-pw\n";
  }
  absl::StatusOr<pg::ConnectTarget> target = pg::ParseConnectTarget(
      absl::StrCat("postgresql://gw@db.internal:5433/payouts?password=@",
                   secret, "&sslmode=verify-full"),
      absl::Seconds(10));
  ASSERT_TRUE(target.ok()) << target.status();
  bool found = false;
  for (size_t i = 0; i < target->keywords.size(); ++i) {
    if (target->keywords[i] == "password") {
      EXPECT_EQ(target->values[i], "s3cret-pw");
      found = true;
    }
  }
  EXPECT_TRUE(found);
  EXPECT_FALSE(absl::StrContains(target->redacted, "s3cret"));

  EXPECT_EQ(pg::RedactUri("postgresql://gw:hunter2@db:5432/p?sslmode=require"),
            "postgresql://gw:***@db:5432/p?sslmode=require");
  EXPECT_EQ(pg::RedactUri("postgresql://gw@db/p?password=hunter2&x=1"),
            "postgresql://gw@db/p?password=***&x=1");
  EXPECT_EQ(pg::RedactUri("postgresql://gw@db/p?password=@/run/pw"),
            "postgresql://gw@db/p?password=@/run/pw");
  // libpq ends the credentials at an '@' before the first '/', whatever
  // comes between: a '?' or an '@' in the password is still the password.
  EXPECT_EQ(pg::RedactUri("postgresql://gw:pa?ss@db/p"),
            "postgresql://gw:***@db/p");
  EXPECT_EQ(pg::RedactUri("postgresql://gw:pa?ss@db"),
            "postgresql://gw:***@db");
  EXPECT_EQ(pg::RedactUri("postgresql://gw:p@ss@db/p"),
            "postgresql://gw:***@db/p");
  absl::StatusOr<pg::ConnectTarget> question =
      pg::ParseConnectTarget("postgresql://gw:hunt?er2@db/p", absl::Seconds(1));
  ASSERT_TRUE(question.ok()) << question.status();
  EXPECT_FALSE(absl::StrContains(question->redacted, "hunt"));

  absl::StatusOr<pg::ConnectTarget> bad = pg::ParseConnectTarget(
      "postgresql://gw@db/p?nonsense=1", absl::Seconds(1));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("--ledger"));
  absl::StatusOr<pg::ConnectTarget> missing = pg::ParseConnectTarget(
      "postgresql://gw@db/p?password=@/no/such/file", absl::Seconds(1));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace aopay
