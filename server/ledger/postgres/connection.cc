// One libpq connection of the PostgreSQL ledger (see connection.h).

#include "server/ledger/postgres/connection.h"

#include <cstdlib>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/errors.h"
#include "common/file_util.h"

namespace aopay::postgres_internal {
namespace {

struct FreeOptions {
  void operator()(PQconninfoOption* options) const { PQconninfoFree(options); }
};

// The database's primary message only: its DETAIL may quote row values.
std::string PrimaryMessage(const PGresult* result, const PGconn* conn) {
  const char* message =
      result != nullptr ? PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY)
                        : nullptr;
  if (message == nullptr || *message == '\0') {
    message = PQerrorMessage(conn);
  }
  return std::string(absl::StripAsciiWhitespace(message ? message : ""));
}

absl::Status ErrorOf(const PGresult* result, const PGconn* conn,
                     absl::string_view what) {
  const char* state = result != nullptr
                          ? PQresultErrorField(result, PG_DIAG_SQLSTATE)
                          : nullptr;
  const std::string sqlstate = state != nullptr ? state : "";
  const std::string message = PrimaryMessage(result, conn);
  if (sqlstate.empty() || PQstatus(conn) != CONNECTION_OK ||
      absl::StartsWith(sqlstate, "08") || absl::StartsWith(sqlstate, "53") ||
      absl::StartsWith(sqlstate, "57P") || absl::StartsWith(sqlstate, "58") ||
      sqlstate == "57014" || sqlstate == "55P03" || sqlstate == "25006") {
    return LedgerUnavailableError(absl::StrCat(
        what, ": ", message,
        sqlstate.empty() ? "" : absl::StrCat(" (", sqlstate, ")")));
  }
  absl::Status status;
  if (sqlstate == "40001" || sqlstate == "40P01") {
    status = absl::AbortedError(absl::StrCat(what, ": ", message));
    status.SetPayload(kRetryPayload, absl::Cord(sqlstate));
    return status;
  }
  return absl::InternalError(
      absl::StrCat("ledger: ", what, ": ", message, " (", sqlstate, ")"));
}

}  // namespace

bool IsRetryable(const absl::Status& status) {
  return status.GetPayload(kRetryPayload).has_value();
}

absl::StatusOr<ConnectTarget> ParseConnectTarget(
    absl::string_view uri, absl::Duration statement_timeout) {
  const std::string text(uri);
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, FreeOptions> parsed(
      PQconninfoParse(text.c_str(), &error));
  if (parsed == nullptr) {
    std::string why = error != nullptr ? error : "not a connection URI";
    PQfreemem(error);
    return absl::InvalidArgumentError(
        absl::StrCat("--ledger: ", absl::StripAsciiWhitespace(why)));
  }
  ConnectTarget target;
  target.redacted = RedactUri(uri);
  target.keywords.push_back("dbname");
  target.values.push_back(text);
  bool has_connect_timeout = false;
  for (const PQconninfoOption* option = parsed.get();
       option->keyword != nullptr; ++option) {
    if (option->val == nullptr) continue;
    const absl::string_view keyword = option->keyword;
    const absl::string_view value = option->val;
    if (keyword == "connect_timeout") has_connect_timeout = true;
    if (keyword == "password" && absl::StartsWith(value, "@")) {
      absl::StatusOr<std::string> secret = ReadWholeFile(
          std::string(value.substr(1)), "the ledger database password");
      if (!secret.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--ledger: ", secret.status().message()));
      }
      std::string line = std::string(absl::StripAsciiWhitespace(
          *absl::StrSplit(*secret, absl::MaxSplits('\n', 1)).begin()));
      target.keywords.push_back("password");
      target.values.push_back(std::move(line));
    }
  }
  // The ledger's own settings come after the URI, so they win.
  const int64_t timeout_ms = absl::ToInt64Milliseconds(statement_timeout);
  target.keywords.push_back("options");
  target.values.push_back(
      absl::StrCat("-c statement_timeout=", timeout_ms,
                   " -c idle_in_transaction_session_timeout=", 3 * timeout_ms,
                   " -c TimeZone=UTC"));
  if (!has_connect_timeout) {
    target.keywords.push_back("connect_timeout");
    target.values.push_back("5");
  }
  for (const auto& [keyword, value] :
       {std::pair<const char*, const char*>{"keepalives", "1"},
        {"keepalives_idle", "10"},
        {"keepalives_interval", "5"},
        {"keepalives_count", "3"},
        {"application_name", "payout-gateway"}}) {
    target.keywords.push_back(keyword);
    target.values.push_back(value);
  }
  return target;
}

std::string RedactUri(absl::string_view uri) {
  std::string text(uri);
  // user:password@ in the authority. libpq reads credentials up to an '@'
  // before the first '/', so a '?' (or an '@') in a password is part of it:
  // everything up to the last such '@' is hidden.
  const size_t scheme = text.find("://");
  if (scheme != std::string::npos) {
    const size_t start = scheme + 3;
    const size_t end = text.find('/', start);
    const size_t at =
        text.rfind('@', end == std::string::npos ? text.size() : end);
    if (at != std::string::npos && at > start) {
      const size_t colon = text.find(':', start);
      if (colon != std::string::npos && colon < at) {
        text.replace(colon + 1, at - colon - 1, "***");
      }
    }
  }
  // password=... among the parameters (an @/path names a file: kept).
  const size_t query = text.find('?');
  if (query != std::string::npos) {
    size_t pos = query + 1;
    while (pos < text.size()) {
      size_t end = text.find('&', pos);
      if (end == std::string::npos) end = text.size();
      if (absl::StartsWith(absl::string_view(text).substr(pos), "password=") &&
          text.compare(pos + 9, 1, "@") != 0) {
        text.replace(pos + 9, end - pos - 9, "***");
        end = text.find('&', pos);
        if (end == std::string::npos) end = text.size();
      }
      pos = end + 1;
    }
  }
  return text;
}

std::optional<std::string> Result::OptionalText(int row, int column) const {
  if (IsNull(row, column)) return std::nullopt;
  return Text(row, column);
}

int64_t Result::Int(int row, int column) const {
  int64_t value = 0;
  if (IsNull(row, column) ||
      !absl::SimpleAtoi(PQgetvalue(result_.get(), row, column), &value)) {
    return 0;
  }
  return value;
}

int Result::changed() const {
  int count = 0;
  return absl::SimpleAtoi(PQcmdTuples(result_.get()), &count) ? count : 0;
}

absl::StatusOr<Connection> Connection::Open(const ConnectTarget& target) {
  std::vector<const char*> keywords;
  std::vector<const char*> values;
  for (size_t i = 0; i < target.keywords.size(); ++i) {
    keywords.push_back(target.keywords[i].c_str());
    values.push_back(target.values[i].c_str());
  }
  keywords.push_back(nullptr);
  values.push_back(nullptr);
  Connection connection(
      PQconnectdbParams(keywords.data(), values.data(), /*expand_dbname=*/1));
  if (connection.conn_ == nullptr) {
    return LedgerUnavailableError("cannot allocate a database connection");
  }
  // The server's notices ("already exists, skipping") are not errors.
  PQsetNoticeProcessor(
      connection.conn_.get(), +[](void*, const char*) {}, nullptr);
  if (PQstatus(connection.conn_.get()) != CONNECTION_OK) {
    return LedgerUnavailableError(absl::StrCat(
        "cannot connect to ", target.redacted, ": ",
        absl::StripAsciiWhitespace(PQerrorMessage(connection.conn_.get()))));
  }
  return connection;
}

bool Connection::ok() const {
  return conn_ != nullptr && PQstatus(conn_.get()) == CONNECTION_OK;
}

absl::StatusOr<Result> Connection::Exec(absl::string_view sql,
                                        const std::vector<Param>& params,
                                        absl::string_view what) {
  if (!ok()) return LedgerUnavailableError("the database connection is closed");
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const Param& param : params) {
    values.push_back(param.has_value() ? param->c_str() : nullptr);
  }
  absl::StatusOr<const std::string*> name =
      Prepared(std::string(sql), static_cast<int>(values.size()), what);
  if (!name.ok()) return name.status();
  Result result(PQexecPrepared(conn_.get(), (*name)->c_str(),
                               static_cast<int>(values.size()), values.data(),
                               nullptr, nullptr, 0));
  PGresult* raw = result.raw();
  const ExecStatusType status =
      raw != nullptr ? PQresultStatus(raw) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;
  return ErrorOf(raw, conn_.get(), what);
}

absl::StatusOr<const std::string*> Connection::Prepared(
    const std::string& sql, int params, absl::string_view what) {
  auto found = prepared_.find(sql);
  if (found != prepared_.end()) return &found->second;
  std::string name = absl::StrCat("s", prepared_.size() + 1);
  Result result(
      PQprepare(conn_.get(), name.c_str(), sql.c_str(), params, nullptr));
  PGresult* raw = result.raw();
  if (raw == nullptr || PQresultStatus(raw) != PGRES_COMMAND_OK) {
    return ErrorOf(raw, conn_.get(), what);
  }
  return &prepared_.emplace(sql, std::move(name)).first->second;
}

absl::Status Connection::Run(absl::string_view sql,
                             const std::vector<Param>& params,
                             absl::string_view what) {
  return Exec(sql, params, what).status();
}

absl::Status Connection::RunScript(absl::string_view sql,
                                   absl::string_view what) {
  if (!ok()) return LedgerUnavailableError("the database connection is closed");
  const std::string script(sql);
  Result result(PQexec(conn_.get(), script.c_str()));
  PGresult* raw = result.raw();
  if (raw != nullptr && PQresultStatus(raw) == PGRES_COMMAND_OK) {
    return absl::OkStatus();
  }
  return ErrorOf(raw, conn_.get(), what);
}

}  // namespace aopay::postgres_internal
