// What every ledger stores the same way (see row_format.h).

#include "server/ledger/shared/row_format.h"

#include <algorithm>
#include <cstddef>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/errors.h"
#include "common/json_document.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace aopay::ledger_internal {
namespace {

constexpr absl::string_view kPageTokenVersion = "v1";
constexpr size_t kMaxPayoutIdBytes = 64;

absl::Status BadPageToken(absl::string_view why) {
  return InvalidRequestError({{"page_token", std::string(why)}});
}

}  // namespace

std::string PayoutColumnsOf(absl::string_view table) {
  std::vector<std::string> columns;
  for (absl::string_view column : absl::StrSplit(kPayoutColumns, ", ")) {
    columns.push_back(absl::StrCat(table, column));
  }
  return absl::StrJoin(columns, ", ");
}

bool IsKnownState(int64_t value) {
  return value >= static_cast<int64_t>(PayoutState::kUnspecified) &&
         value <= static_cast<int64_t>(kLastPayoutState);
}

bool IsKnownMode(int64_t value) {
  return value >= static_cast<int64_t>(TransferMode::kUnspecified) &&
         value <= static_cast<int64_t>(TransferMode::kImps);
}

absl::Status RowError(absl::string_view payout_id, absl::string_view what) {
  return absl::DataLossError(
      absl::StrCat("The ledger row of payout ", payout_id, " has ", what, "."));
}

std::optional<std::string> StatusColumn(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  return SerializeError(status);
}

absl::StatusOr<absl::Status> ParseStatusColumn(
    const std::optional<std::string>& text, absl::string_view payout_id,
    absl::string_view column) {
  if (!text.has_value()) return absl::OkStatus();
  absl::StatusOr<absl::Status> parsed = ParseSerializedError(*text);
  if (!parsed.ok()) {
    return RowError(payout_id,
                    absl::StrCat("an unreadable ", column, " column"));
  }
  return *std::move(parsed);
}

std::string CreatedBy(const Payout& payout) {
  return payout.client.empty() ? std::string("gateway")
                               : absl::StrCat("client ", payout.client);
}

absl::Status CheckInsert(const InsertRequest& request) {
  const Payout& payout = request.payout;
  const std::optional<DailyLimit>& limit = request.daily_limit;
  if (limit.has_value() &&
      (limit->limit_paise < 0 || limit->day_end <= limit->day_start)) {
    return absl::InvalidArgumentError(
        "a daily limit needs a limit of 0 or more and a day that ends after "
        "it starts");
  }
  if (request.max_payout_paise.has_value() && *request.max_payout_paise < 0) {
    return absl::InvalidArgumentError("a maximum payout needs to be 0 or more");
  }
  if (payout.payout_id.empty() || payout.request_id.empty()) {
    return absl::InvalidArgumentError(
        "a payout needs a payout_id and a request_id");
  }
  if (payout.state != PayoutState::kPending &&
      payout.state != PayoutState::kAwaitingApproval) {
    return absl::InvalidArgumentError(
        "a payout is created PENDING or AWAITING_APPROVAL");
  }
  return absl::OkStatus();
}

std::optional<InsertResult> OverMaxPayout(const InsertRequest& request) {
  if (!request.max_payout_paise.has_value() ||
      request.payout.amount_paise <= *request.max_payout_paise) {
    return std::nullopt;
  }
  InsertResult result;
  result.over_max_payout = true;
  return result;
}

absl::Status CheckUnchangedSince(const Payout& payout,
                                 const PayoutChange& change) {
  if (!change.expected_update_time.has_value() ||
      absl::ToUnixMicros(payout.update_time) ==
          absl::ToUnixMicros(*change.expected_update_time)) {
    return absl::OkStatus();
  }
  return absl::AbortedError(absl::StrCat("Payout ", payout.payout_id,
                                         " changed since it was ",
                                         PayoutStateName(change.expected_state),
                                         " for this change; nothing changed."));
}

std::optional<InsertResult> OverDailyLimit(int64_t spent_paise,
                                           const InsertRequest& request) {
  if (spent_paise + request.payout.amount_paise <=
      request.daily_limit->limit_paise) {
    return std::nullopt;
  }
  InsertResult result;
  result.over_daily_limit = true;
  result.spent_paise = spent_paise;
  return result;
}

std::string FinalStateNumbers() {
  std::vector<int> final_states;
  for (int state = 0; state <= static_cast<int>(kLastPayoutState); ++state) {
    if (IsFinal(static_cast<PayoutState>(state))) final_states.push_back(state);
  }
  return absl::StrJoin(final_states, ", ");
}

std::string CreationReason(const Payout& payout) {
  return payout.state == PayoutState::kAwaitingApproval
             ? std::string("recorded; held for approval by another client")
             : std::string("recorded before calling AOPay");
}

std::optional<std::string> MetadataColumn(const Metadata& metadata) {
  if (metadata.empty()) return std::nullopt;
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  writer.StartObject();
  for (const auto& [key, value] : metadata) {
    writer.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
    writer.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  }
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

absl::StatusOr<Metadata> ParseMetadataColumn(
    const std::optional<std::string>& text, absl::string_view payout_id) {
  Metadata metadata;
  if (!text.has_value()) return metadata;
  SmallJsonDocument document;
  document.Parse(text->data(), text->size());
  if (document.HasParseError() || !document.IsObject()) {
    return RowError(payout_id, "an unreadable metadata column");
  }
  for (const auto& member : document.GetObject()) {
    if (!member.value.IsString()) {
      return RowError(payout_id, "an unreadable metadata column");
    }
    metadata.emplace(
        std::string(member.name.GetString(), member.name.GetStringLength()),
        std::string(member.value.GetString(), member.value.GetStringLength()));
  }
  return metadata;
}

uint32_t StateMask(const std::vector<PayoutState>& states) {
  uint32_t mask = 0;
  for (PayoutState state : states) {
    const int bit = static_cast<int>(state);
    if (bit >= 0 && bit < 32) mask |= 1u << bit;
  }
  return mask;
}

std::vector<int> StateNumbers(const std::vector<PayoutState>& states) {
  std::vector<int> values;
  for (PayoutState state : states) values.push_back(static_cast<int>(state));
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  return values;
}

std::string ListSql(const std::vector<PayoutState>& states, bool after,
                    bool client, char placeholder_char) {
  const absl::string_view placeholder(&placeholder_char, 1);
  // One state's (or every state's) page: a walk of an index in id order.
  auto page = [&](absl::string_view state_condition) {
    std::string sql =
        absl::StrCat("SELECT ", kPayoutColumns,
                     " FROM payouts WHERE registration = ", placeholder, "1",
                     state_condition);
    if (client) absl::StrAppend(&sql, " AND client = ", placeholder, "4");
    if (after) absl::StrAppend(&sql, " AND payout_id < ", placeholder, "3");
    absl::StrAppend(&sql, " ORDER BY payout_id DESC LIMIT ", placeholder, "2");
    return sql;
  };
  std::vector<int> values = StateNumbers(states);
  if (client && values.empty()) {
    // A client's list walks payouts_by_client (registration, client, state,
    // payout_id) once per state.
    for (int state = 1; state <= static_cast<int>(kLastPayoutState); ++state) {
      values.push_back(state);
    }
  }
  if (values.size() <= 1) {
    return page(values.empty() ? "" : absl::StrCat(" AND state = ", values[0]));
  }
  // Several states: each state's page, and the newest of them. With one
  // `state IN (...)` the planners walked every payout of the registration
  // in id order, however few were in those states.
  std::string sql;
  for (size_t i = 0; i < values.size(); ++i) {
    absl::StrAppend(&sql, i == 0 ? "" : " UNION ALL ", "SELECT * FROM (",
                    page(absl::StrCat(" AND state = ", values[i])), ") AS s",
                    i);
  }
  absl::StrAppend(&sql, " ORDER BY payout_id DESC LIMIT ", placeholder, "2");
  return sql;
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

}  // namespace aopay::ledger_internal
