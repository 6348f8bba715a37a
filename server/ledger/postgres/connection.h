#ifndef AOPAY_SERVER_LEDGER_POSTGRES_CONNECTION_H_
#define AOPAY_SERVER_LEDGER_POSTGRES_CONNECTION_H_

// One libpq connection of the PostgreSQL ledger: connecting from the
// operator's URI (with the password from PGPASSWORD, a .pgpass file or an
// "@/path" password parameter), running parameterised statements, and
// turning the database's errors into statuses. Internal to the ledger.
//
// Errors: the connection being lost, the server shutting down or short of
// resources, and a statement timeout are UNAVAILABLE (reason
// LEDGER_UNAVAILABLE); a serialization failure or a deadlock is ABORTED with
// the payload kRetryPayload (the transaction may simply be run again); the
// rest are INTERNAL with the database's message.

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace aopay::postgres_internal {

// Set on a status whose transaction may be run again as it is.
inline constexpr absl::string_view kRetryPayload = "aopay.ledger/retry";

// Whether `status` says the transaction may be run again.
bool IsRetryable(const absl::Status& status);

// Where and how to connect: libpq keywords and values, the URI first.
struct ConnectTarget {
  std::vector<std::string> keywords;
  std::vector<std::string> values;
  std::string redacted;  // the URI without its password, for messages
};

// Parses a postgresql:// URI (libpq's own parser). A password parameter
// "@/path" is read from that file (its first line). Adds the statement
// timeout, a connect timeout, TCP keepalives and an application name.
// INVALID_ARGUMENT naming --ledger for a URI libpq does not take.
[[nodiscard]] absl::StatusOr<ConnectTarget> ParseConnectTarget(
    absl::string_view uri, absl::Duration statement_timeout);

// The URI with any password replaced by "***" (for --print_config and logs).
std::string RedactUri(absl::string_view uri);

class Result {
 public:
  explicit Result(PGresult* result) : result_(result) {}
  int rows() const { return PQntuples(result_.get()); }
  bool IsNull(int row, int column) const {
    return PQgetisnull(result_.get(), row, column) != 0;
  }
  std::string Text(int row, int column) const {
    return std::string(PQgetvalue(result_.get(), row, column),
                       PQgetlength(result_.get(), row, column));
  }
  std::optional<std::string> OptionalText(int row, int column) const;
  // 0 for NULL or a value that is not an integer.
  int64_t Int(int row, int column) const;
  // Rows a command changed (UPDATE, DELETE, INSERT).
  int changed() const;
  PGresult* raw() const { return result_.get(); }

 private:
  struct Clear {
    void operator()(PGresult* result) const { PQclear(result); }
  };
  std::unique_ptr<PGresult, Clear> result_;
};

// A parameter: text, or NULL.
using Param = std::optional<std::string>;

class Connection {
 public:
  Connection() = default;
  Connection(Connection&&) = default;
  Connection& operator=(Connection&&) = default;

  // Connects (blocking, within the target's connect timeout).
  [[nodiscard]] static absl::StatusOr<Connection> Open(
      const ConnectTarget& target);

  bool ok() const;

  // Runs one statement with $1... parameters; `what` names it in errors
  // ("recording the payout"). Each distinct statement is prepared once per
  // connection (parsed and planned once) and then only executed.
  [[nodiscard]] absl::StatusOr<Result> Exec(absl::string_view sql,
                                            const std::vector<Param>& params,
                                            absl::string_view what);
  [[nodiscard]] absl::Status Run(absl::string_view sql,
                                 const std::vector<Param>& params,
                                 absl::string_view what);
  // Runs several statements without parameters (a migration).
  [[nodiscard]] absl::Status RunScript(absl::string_view sql,
                                       absl::string_view what);

 private:
  struct Finish {
    void operator()(PGconn* conn) const { PQfinish(conn); }
  };
  explicit Connection(PGconn* conn) : conn_(conn) {}
  // The name of `sql` prepared on this connection, preparing it if needed.
  absl::StatusOr<const std::string*> Prepared(const std::string& sql,
                                              int params,
                                              absl::string_view what);

  std::unique_ptr<PGconn, Finish> conn_;
  absl::flat_hash_map<std::string, std::string> prepared_;
};

}  // namespace aopay::postgres_internal

#endif  // AOPAY_SERVER_LEDGER_POSTGRES_CONNECTION_H_
