#ifndef AOPAY_SERVER_LEDGER_SHARED_ROW_FORMAT_H_
#define AOPAY_SERVER_LEDGER_SHARED_ROW_FORMAT_H_

// What every ledger stores the same way, whatever the database: states and
// modes as their enum numbers, statuses (failure, response) as NULL for OK or
// SerializeError's text, the creation event's author, and List's page tokens
// (base64url of "v1|<state filter mask>|<last payout id>", so that they
// survive a restart and a change of replica). Internal to the ledgers.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/payout.h"
#include "server/ledger/ledger.h"

namespace aopay::ledger_internal {

// kPayoutColumns, each prefixed with `table` ("p."), for joins.
std::string PayoutColumnsOf(absl::string_view table);

// The columns ReadPayoutRow reads, in its order.
inline constexpr char kPayoutColumns[] =
    "payout_id, request_id, fingerprint, state, account_number, ifsc, name, "
    "email, mobile, amount_paise, mode, transaction_id, "
    "transaction_reference_no, upstream_status, bank_beneficiary_name, "
    "failure, response, create_time_us, update_time_us, client, metadata";

// Whether a stored integer is a PayoutState / TransferMode this code knows.
bool IsKnownState(int64_t value);
bool IsKnownMode(int64_t value);

// DATA_LOSS: the row of `payout_id` has `what` (e.g. "an unknown state").
absl::Status RowError(absl::string_view payout_id, absl::string_view what);

// What a status column (failure, response) holds: NULL for OK, otherwise
// SerializeError's form.
std::optional<std::string> StatusColumn(const absl::Status& status);

// The status a column holds (nullopt: NULL, which is OK). DATA_LOSS naming
// the payout and the column when the text is not SerializeError's form.
absl::StatusOr<absl::Status> ParseStatusColumn(
    const std::optional<std::string>& text, absl::string_view payout_id,
    absl::string_view column);

// Reads a row selected with kPayoutColumns from any database's row type:
// Row has IsNull(column), Text(column) and Int(column).
template <typename Row>
absl::StatusOr<StoredPayout> ReadPayoutRow(const Row& row);

// Reads a row selected as PayoutColumnsOf("p.") followed by the event's id,
// from_state, to_state, why, who and time_us.
template <typename Row>
absl::StatusOr<WatchedEvent> ReadWatchedEvent(const Row& row);
// The columns ReadWatchedEvent reads: the payout's, then the event's six
// (id, from_state, to_state, why, who, time_us). A query may add its own
// after them, from this index on.
inline constexpr int kWatchedEventColumns = 27;

// The SELECT of one List page, with the database's parameter prefix ("?" or
// "$"): parameter 1 the registration, 2 the row limit, with `after` 3 the
// last payout id of the previous page, and with `client` 4 the client whose
// payouts alone are listed. Only the state filter varies otherwise, so the
// number of distinct statements stays small. Several states (and every
// state, for a client's list) are one walk of an index in id order per
// state, merged: a page costs the same however rare the states are.
std::string ListSql(const std::vector<PayoutState>& states, bool after,
                    bool client, char placeholder);

// INVALID_ARGUMENT unless the payout has a payout_id and a request_id and is
// in a state a payout is created in (PENDING or AWAITING_APPROVAL), the
// maximum (if any) is 0 or more, and the daily limit (if any) is 0 or more
// over a day that ends after it starts.
absl::Status CheckInsert(const InsertRequest& request);

// The answer to an insert whose amount is over the client's maximum for one
// payout; nullopt when it is within (or there is none). Asked once the key
// is known to be free.
std::optional<InsertResult> OverMaxPayout(const InsertRequest& request);

// ABORTED when `change` names an expected update time that `payout` (in the
// expected state) no longer has: it is meant for an earlier attempt
// (PayoutChange::expected_update_time). OK otherwise.
absl::Status CheckUnchangedSince(const Payout& payout,
                                 const PayoutChange& change);

// The answer to an insert the daily limit refuses, given what the client's
// counted payouts of the day add up to; nullopt when it fits.
std::optional<InsertResult> OverDailyLimit(int64_t spent_paise,
                                           const InsertRequest& request);

// The final states' numbers, "3, 4, 5, 8", for an IN (...) list.
std::string FinalStateNumbers();

// Who caused a payout's creation event: its client, or "gateway" when the
// gateway runs without clients.
std::string CreatedBy(const Payout& payout);

// Why a payout was created in its first state (PENDING: about to be sent;
// AWAITING_APPROVAL: held for a second client).
std::string CreationReason(const Payout& payout);

// What the metadata column holds: NULL for none, otherwise a JSON object of
// strings.
std::optional<std::string> MetadataColumn(const Metadata& metadata);
// DATA_LOSS naming the payout when the text is not such an object.
absl::StatusOr<Metadata> ParseMetadataColumn(
    const std::optional<std::string>& text, absl::string_view payout_id);

// The state filter as a bit mask, one bit per state.
uint32_t StateMask(const std::vector<PayoutState>& states);

// The state filter's states, sorted, each once.
std::vector<int> StateNumbers(const std::vector<PayoutState>& states);

// The token of the page after the one that ended with `last_payout_id`.
std::string MakePageToken(uint32_t mask, absl::string_view last_payout_id);

// The last payout id of the previous page. INVALID_ARGUMENT for a token this
// service did not make or one made for another state filter.
absl::StatusOr<std::string> ParsePageToken(absl::string_view token,
                                           uint32_t mask);

template <typename Row>
absl::StatusOr<StoredPayout> ReadPayoutRow(const Row& row) {
  auto optional_text = [&row](int column) -> std::optional<std::string> {
    if (row.IsNull(column)) return std::nullopt;
    return row.Text(column);
  };
  StoredPayout stored;
  Payout& payout = stored.payout;
  payout.payout_id = row.Text(0);
  payout.request_id = row.Text(1);
  stored.fingerprint = row.Text(2);
  const int64_t state = row.Int(3);
  if (!IsKnownState(state)) {
    return RowError(payout.payout_id, "an unknown state");
  }
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
      ParseStatusColumn(optional_text(15), payout.payout_id, "failure");
  if (!failure.ok()) return failure.status();
  payout.failure = *std::move(failure);
  absl::StatusOr<absl::Status> response =
      ParseStatusColumn(optional_text(16), payout.payout_id, "response");
  if (!response.ok()) return response.status();
  stored.response = *std::move(response);
  payout.create_time = absl::FromUnixMicros(row.Int(17));
  payout.update_time = absl::FromUnixMicros(row.Int(18));
  payout.client = row.Text(19);
  absl::StatusOr<Metadata> metadata =
      ParseMetadataColumn(optional_text(20), payout.payout_id);
  if (!metadata.ok()) return metadata.status();
  payout.metadata = *std::move(metadata);
  return stored;
}

template <typename Row>
absl::StatusOr<WatchedEvent> ReadWatchedEvent(const Row& row) {
  constexpr int kEvent = kWatchedEventColumns - 6;  // after the payout's
  absl::StatusOr<StoredPayout> stored = ReadPayoutRow(row);
  if (!stored.ok()) return stored.status();
  WatchedEvent watched;
  watched.payout = std::move(stored->payout);
  watched.cursor = row.Int(kEvent);
  const int64_t from = row.Int(kEvent + 1);
  const int64_t to = row.Int(kEvent + 2);
  if (!IsKnownState(from) || !IsKnownState(to)) {
    return RowError(watched.payout.payout_id, "an event with an unknown state");
  }
  PayoutEvent& event = watched.event;
  event.payout_id = watched.payout.payout_id;
  event.from = static_cast<PayoutState>(from);
  event.to = static_cast<PayoutState>(to);
  event.why = row.Text(kEvent + 3);
  event.who = row.Text(kEvent + 4);
  event.time = absl::FromUnixMicros(row.Int(kEvent + 5));
  // The payout as it stood after this change.
  watched.payout.state = event.to;
  watched.payout.update_time = event.time;
  return watched;
}

}  // namespace aopay::ledger_internal

#endif  // AOPAY_SERVER_LEDGER_SHARED_ROW_FORMAT_H_
