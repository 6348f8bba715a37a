#include "server/sandbox/wire.h"

#include <cstddef>
#include <initializer_list>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace aopay::sandbox {

const char kInternalErrorPage[] =
    "<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title>"
    "</head>\n<body><h1>Internal Server Error</h1>\n<p>The server "
    "encountered an internal error and was unable to complete your request."
    "</p>\n<hr><address>aopay-sandbox</address></body></html>\n";
const char kJournalFailedPage[] =
    "<!DOCTYPE html>\n<html><body><h1>Internal Server Error</h1>\n"
    "<p>aopay-sandbox could not write its journal.</p></body></html>\n";

namespace {

// AOPay's documented messages (docs/aopay.md), verbatim.
constexpr char kMessage403[] =
    "APIs not enabled. Please reach out to care@AOP.com";
constexpr char kMessage409[] = "Beneficiary Id already exists";
constexpr char kMessage412[] = "Post data is empty or not a valid JSON";
constexpr char kMessage422[] = "Please provide a valid Bank IFSC code.";
constexpr char kMessageAccepted[] = "fundTransfer successfully processed";
// Not documented by AOPay: the status endpoint and unknown paths.
constexpr char kMessageNoTransaction[] = "Transaction not found";
constexpr char kMessageNoResource[] = "Resource not found";
constexpr char kMessageStatus[] = "Transaction status fetched successfully";

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void WriteString(JsonWriter& writer, absl::string_view value) {
  writer.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

void WriteField(JsonWriter& writer, absl::string_view key,
                absl::string_view value) {
  writer.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
  WriteString(writer, value);
}

std::string Contents(const rapidjson::StringBuffer& buffer) {
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string ErrorBody(absl::string_view sub_code, absl::string_view message) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  WriteField(writer, "status", "ERROR");
  WriteField(writer, "subCode", sub_code);
  WriteField(writer, "message", message);
  writer.EndObject();
  return Contents(buffer);
}

// The documented request header; a body sent as anything else (curl's
// default form encoding, say) is not JSON to the server.
bool IsJsonContentType(absl::string_view content_type) {
  content_type = content_type.substr(0, content_type.find(';'));
  return absl::AsciiStrToLower(absl::StripAsciiWhitespace(content_type)) ==
         kJsonContentType;
}

// Reads `body` as AOPay would: a JSON object in which every named field is
// present and a string.
[[nodiscard]] bool ReadStringFields(
    absl::string_view content_type, absl::string_view body,
    std::initializer_list<std::pair<const char*, std::string*>> fields) {
  if (!IsJsonContentType(content_type) || body.empty()) return false;
  // Parsed values live in a buffer on the stack: the default allocator
  // would take a 64 KiB chunk from the heap for every request.
  alignas(std::max_align_t) char pool[4096];
  rapidjson::MemoryPoolAllocator<> allocator(pool, sizeof(pool));
  rapidjson::Document document(&allocator);
  document.Parse<rapidjson::kParseIterativeFlag |
                 rapidjson::kParseValidateEncodingFlag>(body.data(),
                                                        body.size());
  if (document.HasParseError() || !document.IsObject()) return false;
  for (const auto& [name, out] : fields) {
    const auto member = document.FindMember(name);
    if (member == document.MemberEnd() || !member->value.IsString()) {
      return false;
    }
    out->assign(member->value.GetString(), member->value.GetStringLength());
  }
  return true;
}

}  // namespace

std::optional<PayoutRequest> ParsePayoutRequest(absl::string_view content_type,
                                                absl::string_view body) {
  PayoutRequest request;
  if (!ReadStringFields(content_type, body,
                        {{"accountNumber", &request.account_number},
                         {"amount", &request.amount},
                         {"transactionType", &request.transaction_type},
                         {"beneficiaryIFSC", &request.beneficiary_ifsc},
                         {"beneficiaryName", &request.beneficiary_name},
                         {"emailID", &request.email_id},
                         {"mobileNo", &request.mobile_no},
                         {"registrationID", &request.registration_id}})) {
    return std::nullopt;
  }
  return request;
}

std::optional<StatusRequest> ParseStatusRequest(absl::string_view content_type,
                                                absl::string_view body) {
  StatusRequest request;
  if (!ReadStringFields(content_type, body,
                        {{"transactionID", &request.transaction_id},
                         {"registrationID", &request.registration_id}})) {
    return std::nullopt;
  }
  return request;
}

std::string DocumentedErrorBody(int sub_code) {
  const char* message = sub_code == 403   ? kMessage403
                        : sub_code == 409 ? kMessage409
                        : sub_code == 412 ? kMessage412
                                          : kMessage422;
  return ErrorBody(absl::StrCat(sub_code), message);
}

std::string TransactionNotFoundBody() {
  return ErrorBody("404", kMessageNoTransaction);
}

std::string ResourceNotFoundBody() {
  return ErrorBody("404", kMessageNoResource);
}

std::string AcceptedBody(absl::Time now, absl::string_view reference_no,
                         absl::string_view transaction_id,
                         absl::string_view beneficiary_name) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  writer.Key("initiateAuthGenericFundTransferAPIResp");
  writer.StartObject();
  writer.Key("metaData");
  writer.StartObject();
  WriteField(writer, "status", "SUCCESS");
  WriteField(writer, "message", kMessageAccepted);
  WriteField(writer, "version", "v1");
  WriteField(
      writer, "time",
      absl::FormatTime("%Y-%m-%d%ET%H:%M:%E3SZ", now, absl::UTCTimeZone()));
  writer.EndObject();
  writer.Key("resourceData");
  writer.StartObject();
  WriteField(writer, "status", "ACPT");
  WriteField(writer, "transactionReferenceNo", reference_no);
  WriteField(writer, "transactionID", transaction_id);
  WriteField(writer, "beneficiaryName", beneficiary_name);
  writer.EndObject();
  writer.EndObject();
  WriteField(writer, "statuss", "SUCCESS");
  WriteField(writer, "message", kMessageAccepted);
  WriteField(writer, "value", "");
  writer.EndObject();
  return Contents(buffer);
}

std::string StatusBody(absl::string_view transaction_id,
                       absl::string_view reference_no, absl::string_view word) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  WriteField(writer, "status", "SUCCESS");
  WriteField(writer, "message", kMessageStatus);
  writer.Key("resourceData");
  writer.StartObject();
  WriteField(writer, "transactionID", transaction_id);
  WriteField(writer, "transactionReferenceNo", reference_no);
  WriteField(writer, "transactionStatus", word);
  writer.EndObject();
  writer.EndObject();
  return Contents(buffer);
}

}  // namespace aopay::sandbox
