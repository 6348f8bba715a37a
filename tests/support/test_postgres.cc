// A real PostgreSQL for tests (see test_postgres.h).

#include "tests/support/test_postgres.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace aopay::test_support {
namespace {

// A cluster this process started: stopped (and its directory removed) when
// the process exits normally.
class OwnCluster {
 public:
  ~OwnCluster() {
    if (dir_.empty()) return;
    const std::string stop =
        absl::StrCat(PG_CLUSTER_SCRIPT, " stop '", dir_, "'");
    (void)std::system(stop.c_str());
    (void)rmdir(parent_.c_str());
  }

  absl::StatusOr<std::string> Start() {
    char pattern[] = "/tmp/payout-pg-XXXXXX";
    if (mkdtemp(pattern) == nullptr) {
      return absl::UnavailableError("cannot make a directory for PostgreSQL");
    }
    parent_ = pattern;
    dir_ = parent_ + "/cluster";
    const std::string start =
        absl::StrCat(PG_CLUSTER_SCRIPT, " start '", dir_, "' 2>&1");
    FILE* out = popen(start.c_str(), "r");
    if (out == nullptr)
      return absl::UnavailableError("cannot run pg_cluster.sh");
    std::string text;
    char buffer[512];
    while (fgets(buffer, sizeof(buffer), out) != nullptr) text += buffer;
    const int status = pclose(out);
    if (status != 0) {
      dir_.clear();
      return absl::UnavailableError(absl::StrCat(
          "PostgreSQL did not start: ", absl::StripAsciiWhitespace(text)));
    }
    return dir_;
  }

 private:
  std::string parent_;
  std::string dir_;
};

struct State {
  absl::Mutex mu;
  bool tried = false;
  absl::Status available;
  std::string host;  // the socket directory
};

State& TheState() {
  static State* state = new State;
  return *state;
}

std::string UriOf(const std::string& host, absl::string_view database) {
  return absl::StrCat("postgresql://postgres@/", database, "?host=", host,
                      "&port=5432");
}

}  // namespace

absl::Status TestPostgresAvailable() {
  State& state = TheState();
  absl::MutexLock lock(&state.mu);
  if (state.tried) return state.available;
  state.tried = true;
  if (const char* host = std::getenv("PAYOUT_TEST_POSTGRES_HOST");
      host != nullptr && *host != '\0') {
    state.host = host;
    return state.available;
  }
  static OwnCluster* own = new OwnCluster;  // stopped by atexit below
  absl::StatusOr<std::string> started = own->Start();
  if (!started.ok()) {
    state.available = started.status();
    return state.available;
  }
  state.host = *started;
  std::atexit([] { delete own; });
  return state.available;
}

absl::StatusOr<std::string> NewTestDatabase() {
  if (absl::Status available = TestPostgresAvailable(); !available.ok()) {
    return available;
  }
  static std::atomic<int> next{0};
  const std::string name = absl::StrCat("t_", getpid(), "_", next++);
  const std::string host = TheState().host;
  absl::StatusOr<std::vector<std::vector<std::string>>> created =
      PgQuery(UriOf(host, "postgres"), absl::StrCat("CREATE DATABASE ", name));
  if (!created.ok()) return created.status();
  return UriOf(host, name);
}

absl::StatusOr<std::vector<std::vector<std::string>>> PgQuery(
    const std::string& uri, absl::string_view sql) {
  PGconn* conn = PQconnectdb(uri.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    absl::Status error = absl::UnavailableError(PQerrorMessage(conn));
    PQfinish(conn);
    return error;
  }
  const std::string text(sql);
  PGresult* result = PQexec(conn, text.c_str());
  const ExecStatusType status = PQresultStatus(result);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    absl::Status error = absl::InternalError(PQresultErrorMessage(result));
    PQclear(result);
    PQfinish(conn);
    return error;
  }
  std::vector<std::vector<std::string>> rows;
  for (int row = 0; row < PQntuples(result); ++row) {
    std::vector<std::string> columns;
    for (int column = 0; column < PQnfields(result); ++column) {
      columns.push_back(PQgetisnull(result, row, column)
                            ? "NULL"
                            : PQgetvalue(result, row, column));
    }
    rows.push_back(std::move(columns));
  }
  PQclear(result);
  PQfinish(conn);
  return rows;
}

std::string PgScalar(const std::string& uri, absl::string_view sql) {
  absl::StatusOr<std::vector<std::vector<std::string>>> rows =
      PgQuery(uri, sql);
  if (!rows.ok()) return std::string(rows.status().message());
  if (rows->empty() || rows->front().empty()) return "";
  return rows->front().front();
}

}  // namespace aopay::test_support
