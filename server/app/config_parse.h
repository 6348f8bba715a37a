#ifndef AOPAY_SERVER_APP_CONFIG_PARSE_H_
#define AOPAY_SERVER_APP_CONFIG_PARSE_H_

// Parsers for payout-server's option values (addresses, the ledger spec).
// Pure functions: no I/O.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aopay {

struct HostPort {
  std::string host;  // without the brackets of an IPv6 literal
  int port = 0;      // 0 to 65535
};

// "HOST:PORT" or "[IPV6]:PORT" for the flag `--flag`; INVALID_ARGUMENT with
// a one-line message naming the flag otherwise.
[[nodiscard]] absl::StatusOr<HostPort> ParseHostPort(absl::string_view flag,
                                                     absl::string_view text);

// True for 127.0.0.0/8, ::1 and "localhost": addresses only this host can
// reach.
bool IsLoopbackHost(absl::string_view host);

// The inverse of ParseHostPort: brackets around hosts with a ':'.
std::string JoinHostPort(const std::string& host, int port);

struct LedgerSpec {
  enum class Kind { kSqlite, kPostgres };
  Kind kind = Kind::kSqlite;
  std::string path;     // kSqlite
  bool durable = true;  // kSqlite; false: ?synchronous=off (benchmarks only)
  std::string uri;      // kPostgres: the libpq URI, as given
};

// "sqlite:PATH", optionally followed by "?synchronous=off" or
// "?synchronous=full"; or a "postgresql://" (or "postgres://") libpq URI,
// checked when the ledger opens. INVALID_ARGUMENT naming --ledger otherwise.
[[nodiscard]] absl::StatusOr<LedgerSpec> ParseLedgerSpec(
    absl::string_view spec);

}  // namespace aopay

#endif  // AOPAY_SERVER_APP_CONFIG_PARSE_H_
