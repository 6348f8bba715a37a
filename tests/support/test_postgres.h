#ifndef AOPAY_TESTS_SUPPORT_TEST_POSTGRES_H_
#define AOPAY_TESTS_SUPPORT_TEST_POSTGRES_H_

// A real PostgreSQL for tests. Under ctest the cluster is started once by
// the fixture test postgres_cluster_start (tests/support/pg_cluster.sh) and
// named by PAYOUT_TEST_POSTGRES_HOST (its socket directory); a test binary
// run by hand starts a cluster of its own and stops it when it exits. Each
// test takes a new, empty database.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aopay::test_support {

// The cluster, started on first use. UNAVAILABLE (with the reason) when
// PostgreSQL is not installed or would not start.
[[nodiscard]] absl::Status TestPostgresAvailable();

// A new empty database: its libpq URI.
[[nodiscard]] absl::StatusOr<std::string> NewTestDatabase();

// Runs one statement on `uri`; the rows, each as its columns' text (NULL as
// "NULL").
[[nodiscard]] absl::StatusOr<std::vector<std::vector<std::string>>> PgQuery(
    const std::string& uri, absl::string_view sql);

// The first column of the first row of PgQuery, or the error's text.
std::string PgScalar(const std::string& uri, absl::string_view sql);

}  // namespace aopay::test_support

#endif  // AOPAY_TESTS_SUPPORT_TEST_POSTGRES_H_
