// payoutctl report: a reconciliation summary of the payouts created in a
// window, from ListPayouts (the caller's read scopes apply).

#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "client/payoutctl/commands.h"
#include "client/payoutctl/flags.h"
#include "client/payoutctl/output.h"
#include "common/money.h"
#include "common/redact.h"
#include "google/protobuf/util/time_util.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace aopay {
namespace payoutctl {
namespace {

namespace pbu = ::google::protobuf::util;

// Payout ids sort by creation time on each replica; replicas' clocks may
// differ a little, so the listing (newest first) stops only this far before
// the window.
constexpr absl::Duration kClockSlack = absl::Minutes(10);

absl::TimeZone India() { return absl::FixedTimeZone(19800); }  // UTC+05:30

// YYYY-MM-DD (midnight in India) or RFC 3339.
absl::StatusOr<absl::Time> ParseWhen(absl::string_view flag,
                                     const std::string& text) {
  absl::Time when;
  std::string error;
  if (absl::ParseTime("%Y-%m-%d", text, India(), &when, &error) ||
      absl::ParseTime(absl::RFC3339_full, text, &when, &error)) {
    return when;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--", flag, " must be YYYY-MM-DD (India) or RFC 3339, got \"", text,
      "\""));
}

absl::Time TimeOf(const google::protobuf::Timestamp& timestamp) {
  return absl::FromUnixMicros(
      pbu::TimeUtil::TimestampToMicroseconds(timestamp));
}

std::string Csv(absl::string_view field) {
  if (field.find_first_of(",\"\n") == absl::string_view::npos) {
    return std::string(field);
  }
  std::string quoted = "\"";
  for (char c : field) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

struct Totals {
  int64_t count = 0;
  int64_t paise = 0;
};

}  // namespace

absl::StatusOr<int> RunReport(const Context& ctx) {
  if (absl::GetFlag(FLAGS_from).empty()) {
    return absl::InvalidArgumentError("report needs --from");
  }
  absl::StatusOr<absl::Time> from =
      ParseWhen("from", absl::GetFlag(FLAGS_from));
  if (!from.ok()) return from.status();
  absl::Time to = absl::Now();
  if (!absl::GetFlag(FLAGS_to).empty()) {
    absl::StatusOr<absl::Time> parsed =
        ParseWhen("to", absl::GetFlag(FLAGS_to));
    if (!parsed.ok()) return parsed.status();
    to = *parsed;
  }
  if (to <= *from)
    return absl::InvalidArgumentError("--to must be after --from");

  std::vector<v1::Payout> payouts;
  v1::ListPayoutsRequest request;
  request.set_page_size(500);
  bool older = false;
  while (!older) {
    absl::StatusOr<v1::ListPayoutsResponse> page =
        ctx.client->ListPayouts(request, ctx.timeout);
    if (!page.ok()) return Report(ctx, page.status(), nullptr, "");
    for (v1::Payout& payout : *page->mutable_payouts()) {
      const absl::Time created = TimeOf(payout.create_time());
      if (created < *from - kClockSlack) older = true;
      if (created >= *from && created < to)
        payouts.push_back(std::move(payout));
    }
    if (page->next_page_token().empty()) break;
    request.set_page_token(page->next_page_token());
  }

  std::map<std::pair<int, int>, Totals> by_state_mode;
  Totals all;
  std::vector<const v1::Payout*> unknown;
  for (const v1::Payout& payout : payouts) {
    Totals& totals = by_state_mode[{payout.state(), payout.mode()}];
    ++totals.count;
    totals.paise += payout.amount_paise();
    ++all.count;
    all.paise += payout.amount_paise();
    if (payout.state() == v1::PAYOUT_STATE_UNKNOWN) unknown.push_back(&payout);
  }

  const std::string csv_path = absl::GetFlag(FLAGS_csv);
  if (!csv_path.empty()) {
    std::ofstream file;
    if (csv_path != "-") {
      file.open(csv_path);
      if (!file) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot write --csv ", csv_path));
      }
    }
    std::ostream& out = csv_path == "-" ? std::cout : file;
    out << "payout_id,request_id,client,state,mode,amount_paise,amount,"
           "account,transaction_id,create_time,update_time\n";
    for (const v1::Payout& payout : payouts) {
      out << Csv(payout.payout_id()) << ',' << Csv(payout.request_id()) << ','
          << Csv(payout.client()) << ',' << StateName(payout.state()) << ','
          << ModeName(payout.mode()) << ',' << payout.amount_paise() << ','
          << FormatRupees(payout.amount_paise()) << ','
          << MaskAccount(payout.beneficiary().account_number()) << ','
          << Csv(payout.transaction_id()) << ','
          << pbu::TimeUtil::ToString(payout.create_time()) << ','
          << pbu::TimeUtil::ToString(payout.update_time()) << '\n';
    }
    if (csv_path == "-") return kExitOk;
  }

  if (ctx.json) {
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> json(buffer);
    json.StartObject();
    json.Key("from");
    json.String(absl::FormatTime(absl::RFC3339_sec, *from, absl::UTCTimeZone())
                    .c_str());
    json.Key("to");
    json.String(
        absl::FormatTime(absl::RFC3339_sec, to, absl::UTCTimeZone()).c_str());
    json.Key("count");
    json.Int64(all.count);
    json.Key("amountPaise");
    json.String(absl::StrCat(all.paise).c_str());
    json.Key("byStateAndMode");
    json.StartArray();
    for (const auto& [key, totals] : by_state_mode) {
      json.StartObject();
      json.Key("state");
      json.String(StateName(static_cast<v1::PayoutState>(key.first)).c_str());
      json.Key("mode");
      json.String(ModeName(static_cast<v1::TransferMode>(key.second)).c_str());
      json.Key("count");
      json.Int64(totals.count);
      json.Key("amountPaise");
      json.String(absl::StrCat(totals.paise).c_str());
      json.EndObject();
    }
    json.EndArray();
    json.Key("unknownPayoutIds");
    json.StartArray();
    for (const v1::Payout* payout : unknown) {
      json.String(payout->payout_id().c_str());
    }
    json.EndArray();
    json.EndObject();
    std::cout << buffer.GetString() << "\n";
    return kExitOk;
  }

  std::cout << "payouts created from "
            << absl::FormatTime("%Y-%m-%d %H:%M", *from, India()) << " to "
            << absl::FormatTime("%Y-%m-%d %H:%M", to, India())
            << " IST: " << all.count << ", \u20b9" << FormatRupees(all.paise)
            << "\n";
  for (const auto& [key, totals] : by_state_mode) {
    std::cout << absl::StrFormat(
        "  %-18s %-5s %6d  \u20b9%s\n",
        StateName(static_cast<v1::PayoutState>(key.first)),
        ModeName(static_cast<v1::TransferMode>(key.second)), totals.count,
        FormatRupees(totals.paise));
  }
  std::cout << "UNKNOWN payouts needing an operator (RefreshPayout or "
               "ResolvePayout): "
            << unknown.size() << "\n";
  for (const v1::Payout* payout : unknown) {
    std::cout << "  " << PayoutLine(*payout) << "\n";
  }
  return kExitOk;
}

}  // namespace payoutctl
}  // namespace aopay
