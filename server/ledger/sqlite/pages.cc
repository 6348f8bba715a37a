// The SQLite ledger's List pages: page tokens and the SELECT for a page
// (see pages.h).

#include "server/ledger/sqlite/pages.h"

#include <algorithm>
#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/errors.h"
#include "server/ledger/sqlite/rows.h"

namespace aopay::sqlite_internal {
namespace {

constexpr absl::string_view kPageTokenVersion = "v1";
constexpr size_t kMaxPayoutIdBytes = 64;

absl::Status BadPageToken(absl::string_view why) {
  return InvalidRequestError({{"page_token", std::string(why)}});
}

}  // namespace

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

std::string ListSql(const std::vector<PayoutState>& states, bool after,
                    bool client) {
  std::vector<int> values;
  for (PayoutState state : states) values.push_back(static_cast<int>(state));
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  std::string sql = absl::StrCat("SELECT ", kPayoutColumns,
                                 " FROM payouts WHERE registration = ?1");
  if (!values.empty()) {
    absl::StrAppend(&sql, " AND state IN (", absl::StrJoin(values, ", "), ")");
  }
  if (client) absl::StrAppend(&sql, " AND client = ?4");
  if (after) absl::StrAppend(&sql, " AND payout_id < ?3");
  absl::StrAppend(&sql, " ORDER BY payout_id DESC LIMIT ?2");
  return sql;
}

}  // namespace aopay::sqlite_internal
