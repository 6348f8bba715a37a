#ifndef AOPAY_TESTS_FUZZ_ANSWER_ORACLE_H_
#define AOPAY_TESTS_FUZZ_ANSWER_ORACLE_H_

// What an AOPay answer says, read the way docs/aopay.md describes it,
// independently of the gateway's codec: the fuzz targets compare the codec's
// verdicts with it.

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "rapidjson/document.h"

namespace aopay::fuzz {

struct AnswerFacts {
  bool is_object = false;
  bool says_error = false;    // top-level "status": "ERROR"
  bool says_success = false;  // "statuss" or a wrapper's metaData.status
  // A "transactionID" member (of any type) at the top level or in a
  // resourceData object at the top level or one level down.
  bool names_transaction = false;
  bool has_resource_data = false;
  // A top-level "statuss" or "status" that is there, not null, and not the
  // word SUCCESS: a success beside it is no success.
  bool says_other_call_status = false;
};

inline bool IsWord(const rapidjson::Value& object, const char* name,
                   absl::string_view word) {
  if (!object.IsObject()) return false;
  const auto it = object.FindMember(name);
  return it != object.MemberEnd() && it->value.IsString() &&
         absl::EqualsIgnoreCase(
             absl::StripAsciiWhitespace(absl::string_view(
                 it->value.GetString(), it->value.GetStringLength())),
             word);
}

inline bool HasMember(const rapidjson::Value& object, const char* name) {
  return object.IsObject() && object.FindMember(name) != object.MemberEnd();
}

inline bool IsOtherThan(const rapidjson::Value& object, const char* name,
                        absl::string_view word) {
  const auto it = object.FindMember(name);
  return it != object.MemberEnd() && !it->value.IsNull() &&
         !IsWord(object, name, word);
}

inline AnswerFacts ReadAnswer(absl::string_view body) {
  AnswerFacts facts;
  if (absl::StrContains(body, absl::string_view("\0", 1))) return facts;
  rapidjson::Document document;
  document.Parse<rapidjson::kParseIterativeFlag>(body.data(), body.size());
  if (document.HasParseError() || !document.IsObject()) return facts;
  facts.is_object = true;
  facts.says_error = IsWord(document, "status", "ERROR");
  facts.says_success = IsWord(document, "statuss", "SUCCESS");
  facts.names_transaction = HasMember(document, "transactionID");
  facts.says_other_call_status = IsOtherThan(document, "statuss", "SUCCESS") ||
                                 IsOtherThan(document, "status", "SUCCESS");
  const auto look_in = [&facts](const rapidjson::Value& object) {
    const auto data = object.FindMember("resourceData");
    if (data != object.MemberEnd() && data->value.IsObject()) {
      facts.has_resource_data = true;
      facts.names_transaction |= HasMember(data->value, "transactionID");
    }
  };
  look_in(document);
  for (const auto& member : document.GetObject()) {
    if (!member.value.IsObject()) continue;
    look_in(member.value);
    // A wrapper's metaData: the documented wrapper, or any wrapper that also
    // holds resourceData (AOPay's wrapper names are not all documented).
    const auto meta = member.value.FindMember("metaData");
    if (meta != member.value.MemberEnd() &&
        IsWord(meta->value, "status", "SUCCESS") &&
        (absl::string_view(member.name.GetString(),
                           member.name.GetStringLength()) ==
             "initiateAuthGenericFundTransferAPIResp" ||
         HasMember(member.value, "resourceData"))) {
      facts.says_success = true;
    }
  }
  return facts;
}

}  // namespace aopay::fuzz

#endif  // AOPAY_TESTS_FUZZ_ANSWER_ORACLE_H_
