// payout-server's option values (server/config_parse.h and absl's duration
// syntax that the duration flags use): what a parser accepts means one thing,
// and writing it back gives the same value.
//
// Input: a first line naming the parser — "ledger", "listen" or "duration" —
// and the value on the rest. A value ends at its first NUL, as a command-line
// argument or an environment variable does.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/app/config_parse.h"
#include "tests/fuzz/fuzz_util.h"

namespace aopay::fuzz {
namespace {

void CheckLedger(absl::string_view text) {
  const absl::StatusOr<LedgerSpec> spec = ParseLedgerSpec(text);
  if (!spec.ok()) {
    FUZZ_CHECK(spec.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  // A PostgreSQL URI is kept as given (libpq checks it when the ledger
  // opens); only its two schemes name that ledger.
  if (spec->kind == LedgerSpec::Kind::kPostgres) {
    FUZZ_CHECK(absl::StartsWith(text, "postgresql://") ||
               absl::StartsWith(text, "postgres://"));
    FUZZ_CHECK(spec->uri == text);
    return;
  }
  // sqlite:PATH names a file: never empty, never with the option separator.
  FUZZ_CHECK(absl::StartsWith(text, "sqlite:"));
  FUZZ_CHECK(!spec->path.empty());
  FUZZ_CHECK(!absl::StrContains(spec->path, '?'));
  const std::string written =
      "sqlite:" + spec->path + (spec->durable ? "" : "?synchronous=off");
  const absl::StatusOr<LedgerSpec> again = ParseLedgerSpec(written);
  FUZZ_CHECK(again.ok() && again->path == spec->path &&
             again->durable == spec->durable);
  // Durability is dropped only when asked for by name.
  if (!spec->durable) FUZZ_CHECK(absl::EndsWith(text, "?synchronous=off"));
}

void CheckListen(absl::string_view text) {
  const absl::StatusOr<HostPort> where = ParseHostPort("listen", text);
  if (!where.ok()) {
    FUZZ_CHECK(where.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(!where->host.empty());
  FUZZ_CHECK(where->port >= 0 && where->port <= 65535);
  // The address the server prints parses back to the same host and port.
  const std::string joined = JoinHostPort(where->host, where->port);
  const absl::StatusOr<HostPort> again = ParseHostPort("listen", joined);
  FUZZ_CHECK(again.ok() && again->host == where->host &&
             again->port == where->port);
}

void CheckDuration(absl::string_view text) {
  absl::Duration duration;
  if (!absl::ParseDuration(text, &duration)) return;
  absl::Duration again;
  FUZZ_CHECK(absl::ParseDuration(absl::FormatDuration(duration), &again));
  FUZZ_CHECK(again == duration);
}

}  // namespace
}  // namespace aopay::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view input(reinterpret_cast<const char*>(data), size);
  absl::string_view parser;
  if (!aopay::fuzz::TakeLine(input, parser)) return 0;
  input = input.substr(0, input.find('\0'));
  if (parser == "ledger") {
    aopay::fuzz::CheckLedger(input);
  } else if (parser == "listen") {
    aopay::fuzz::CheckListen(input);
  } else if (parser == "duration") {
    aopay::fuzz::CheckDuration(input);
  }
  return 0;
}
