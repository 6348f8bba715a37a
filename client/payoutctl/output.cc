#include "client/payoutctl/output.h"

#include <cstdint>
#include <iostream>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client/payout_client.h"
#include "common/errors.h"
#include "common/money.h"
#include "common/redact.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace aopay {
namespace payoutctl {
namespace {

namespace pbu = ::google::protobuf::util;

std::string ProtoDurationText(absl::Duration d) {
  google::protobuf::Duration proto;
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  proto.set_seconds(seconds);
  proto.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
  return pbu::TimeUtil::ToString(proto);
}

std::string TimestampText(const google::protobuf::Timestamp& ts) {
  return pbu::TimeUtil::ToString(ts);
}

}  // namespace

std::string ErrorJson(const absl::Status& status) {
  const ErrorDetails details = GetErrorDetails(status);
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  auto string = [&writer](absl::string_view s) {
    writer.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  };
  writer.StartObject();
  string("code");
  string(absl::StatusCodeToString(status.code()));
  string("message");
  string(status.message());
  if (!details.reason.empty()) {
    string("reason");
    string(details.reason);
  }
  if (!details.metadata.empty()) {
    string("metadata");
    writer.StartObject();
    for (const auto& [key, value] : details.metadata) {
      string(key);
      string(value);
    }
    writer.EndObject();
  }
  if (!details.violations.empty()) {
    string("fieldViolations");
    writer.StartArray();
    for (const FieldViolation& v : details.violations) {
      writer.StartObject();
      string("field");
      string(v.field);
      string("description");
      string(v.description);
      writer.EndObject();
    }
    writer.EndArray();
  }
  if (details.retry_delay) {
    string("retryDelay");
    string(ProtoDurationText(*details.retry_delay));
  }
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string ErrorText(const absl::Status& status, absl::string_view indent) {
  const ErrorDetails details = GetErrorDetails(status);
  std::string out =
      absl::StrCat(indent, "error: ", absl::StatusCodeToString(status.code()),
                   ": ", status.message(), "\n");
  if (!details.reason.empty()) {
    absl::StrAppend(&out, indent, "  reason: ", details.reason, "\n");
  }
  for (const auto& [key, value] : details.metadata) {
    absl::StrAppend(&out, indent, "  ", key, ": ", value, "\n");
  }
  for (const FieldViolation& v : details.violations) {
    absl::StrAppend(&out, indent, "  field ", v.field, ": ", v.description,
                    "\n");
  }
  if (details.retry_delay) {
    absl::StrAppend(&out, indent, "  retry after: ",
                    absl::FormatDuration(*details.retry_delay), "\n");
  }
  return out;
}

std::string StateName(v1::PayoutState state) {
  return std::string(
      absl::StripPrefix(v1::PayoutState_Name(state), "PAYOUT_STATE_"));
}

std::string ModeName(v1::TransferMode mode) {
  return std::string(
      absl::StripPrefix(v1::TransferMode_Name(mode), "TRANSFER_MODE_"));
}

std::string PayoutLine(const v1::Payout& payout) {
  std::string line = absl::StrCat(
      "payout ", payout.payout_id(), " ", StateName(payout.state()), "  \u20b9",
      FormatRupees(payout.amount_paise()), " ", ModeName(payout.mode()),
      "  account ", MaskAccount(payout.beneficiary().account_number()));
  if (!payout.transaction_id().empty()) {
    absl::StrAppend(&line, "  txn ", payout.transaction_id());
  }
  return line;
}

std::string PayoutText(const v1::Payout& payout) {
  std::string out = absl::StrCat(PayoutLine(payout), "\n");
  auto field = [&out](absl::string_view label, absl::string_view value) {
    if (!value.empty()) {
      absl::StrAppend(&out, absl::StrFormat("  %-16s%s\n", label, value));
    }
  };
  const v1::Beneficiary& b = payout.beneficiary();
  field("request id", payout.request_id());
  field("name", b.name());
  field("ifsc", b.ifsc());
  if (!b.mobile().empty()) field("mobile", MaskMobile(b.mobile()));
  if (!b.email().empty()) field("e-mail", MaskEmail(b.email()));
  field("bank reference", payout.transaction_reference_no());
  field("AOPay status", payout.upstream_status());
  field("name at bank", payout.bank_beneficiary_name());
  field("client", payout.client());
  // The caller's own references, in key order.
  const std::map<std::string, std::string> metadata(payout.metadata().begin(),
                                                    payout.metadata().end());
  for (const auto& [key, value] : metadata) {
    field(absl::StrCat("metadata ", key), value);
  }
  if (payout.has_create_time()) {
    field("created", TimestampText(payout.create_time()));
  }
  if (payout.has_update_time()) {
    field("updated", TimestampText(payout.update_time()));
  }
  if (payout.has_failure() && payout.failure().code() != 0) {
    absl::StrAppend(&out, "  failure:\n",
                    ErrorText(FromRpcStatusProto(payout.failure()), "    "));
  }
  return out;
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  std::string json;
  pbu::JsonPrintOptions options;
  const auto status = pbu::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot print the answer as JSON: ", status.ToString()));
  }
  return json;
}

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  return kExitRpcBase + static_cast<int>(status.code());
}

int Report(const Context& ctx, const absl::Status& status,
           const google::protobuf::Message* message, const std::string& human) {
  if (!status.ok()) {
    if (ctx.json) {
      std::cout << ErrorJson(status) << std::endl;
    } else {
      std::cerr << ErrorText(status, "");
    }
    return ExitCodeFor(status);
  }
  if (ctx.json) {
    absl::StatusOr<std::string> json = ToJson(*message);
    if (!json.ok()) {
      std::cerr << "payoutctl: " << json.status().message() << "\n";
      return kExitLocalFailure;
    }
    std::cout << *json << std::endl;
  } else {
    std::cout << human;
  }
  std::cout.flush();
  return std::cout ? kExitOk : kExitLocalFailure;
}

int ReportPayout(const Context& ctx, const absl::StatusOr<v1::Payout>& payout) {
  if (!payout.ok()) return Report(ctx, payout.status(), nullptr, "");
  return Report(ctx, absl::OkStatus(), &*payout, PayoutText(*payout));
}

int UsageFailure(absl::string_view message) {
  std::cerr << "payoutctl: " << message
            << "\nRun 'payoutctl --help' for usage.\n";
  return kExitUsage;
}

}  // namespace payoutctl
}  // namespace aopay
