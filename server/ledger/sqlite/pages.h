#ifndef AOPAY_SERVER_LEDGER_SQLITE_PAGES_H_
#define AOPAY_SERVER_LEDGER_SQLITE_PAGES_H_

// The SQLite ledger's List pages: page tokens (base64url of
// "v1|<state filter mask>|<last payout id>", so that they survive a restart)
// and the SELECT for one page. Internal to the ledger.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/payout.h"

namespace aopay::sqlite_internal {

// The state filter as a bit mask, one bit per state.
uint32_t StateMask(const std::vector<PayoutState>& states);

// The token of the page after the one that ended with `last_payout_id`.
std::string MakePageToken(uint32_t mask, absl::string_view last_payout_id);

// The last payout id of the previous page. INVALID_ARGUMENT for a token this
// service did not make or one made for another state filter.
absl::StatusOr<std::string> ParsePageToken(absl::string_view token,
                                           uint32_t mask);

// The SELECT for one page: ?1 the registration, ?2 the row limit, with
// `after` ?3 the last payout id of the previous page, and with `client` ?4
// the client whose payouts alone are listed. Only the state filter varies
// otherwise, so the number of distinct cached statements stays small.
std::string ListSql(const std::vector<PayoutState>& states, bool after,
                    bool client);

}  // namespace aopay::sqlite_internal

#endif  // AOPAY_SERVER_LEDGER_SQLITE_PAGES_H_
