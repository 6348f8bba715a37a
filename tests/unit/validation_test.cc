#include "common/validation.h"

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

using testing::ElementsAre;
using testing::Field;

PayoutRequest ValidRequest() {
  PayoutRequest request;
  request.request_id = "6f1c2f6e-2b7a-4c1e-9a55-0d7a3e1b2c4d";
  request.beneficiary.account_number = "100000011836";
  request.beneficiary.ifsc = "SBIN0000002";
  request.beneficiary.name = "Dean Jon";
  request.beneficiary.email = "abc@gmail.com";
  request.beneficiary.mobile = "9959640000";
  request.amount_paise = 1200;
  request.mode = TransferMode::kImps;
  return request;
}

// One row: a change to a valid request, and the fields it must break (in
// order), or none.
struct Case {
  std::string name;
  std::function<void(PayoutRequest&)> change;
  std::vector<std::string> broken_fields;
};

std::vector<std::string> FieldsOf(const absl::Status& status) {
  std::vector<std::string> fields;
  for (const FieldViolation& v : GetErrorDetails(status).violations) {
    fields.push_back(v.field);
  }
  return fields;
}

class ValidationTest : public testing::TestWithParam<Case> {};

TEST_P(ValidationTest, ChecksTheRule) {
  PayoutRequest request = ValidRequest();
  GetParam().change(request);
  const absl::StatusOr<PayoutRequest> result =
      NormalizeAndValidate(request, ValidationLimits());
  if (GetParam().broken_fields.empty()) {
    EXPECT_TRUE(result.ok()) << result.status();
    return;
  }
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetErrorDetails(result.status()).reason, reason::kInvalidRequest);
  EXPECT_EQ(FieldsOf(result.status()), GetParam().broken_fields);
}

auto Set(std::string PayoutRequest::*field, std::string value) {
  return [field, value](PayoutRequest& r) { r.*field = value; };
}
auto SetB(std::string Beneficiary::*field, std::string value) {
  return [field, value](PayoutRequest& r) { r.beneficiary.*field = value; };
}
auto Amount(int64_t paise, TransferMode mode) {
  return [paise, mode](PayoutRequest& r) {
    r.amount_paise = paise;
    r.mode = mode;
  };
}

constexpr auto kNeft = TransferMode::kNeft;
constexpr auto kImps = TransferMode::kImps;
const std::vector<std::string> kNone;
const std::vector<std::string> kRequestId = {"request_id"};
const std::vector<std::string> kAccount = {"beneficiary.account_number"};
const std::vector<std::string> kIfsc = {"beneficiary.ifsc"};
const std::vector<std::string> kName = {"beneficiary.name"};
const std::vector<std::string> kEmail = {"beneficiary.email"};
const std::vector<std::string> kMobile = {"beneficiary.mobile"};
const std::vector<std::string> kAmount = {"amount_paise"};
const std::vector<std::string> kMode = {"mode"};

INSTANTIATE_TEST_SUITE_P(
    Table, ValidationTest,
    testing::Values(
        Case{"Valid", [](PayoutRequest&) {}, kNone},
        // request_id
        Case{"RequestIdEmpty", Set(&PayoutRequest::request_id, ""),
             kRequestId},
        Case{"RequestIdOneChar", Set(&PayoutRequest::request_id, "a"), kNone},
        Case{"RequestId64", Set(&PayoutRequest::request_id, std::string(64, 'a')),
             kNone},
        Case{"RequestId65", Set(&PayoutRequest::request_id, std::string(65, 'a')),
             kRequestId},
        Case{"RequestIdAllClasses",
             Set(&PayoutRequest::request_id, "AZaz09_-"), kNone},
        Case{"RequestIdSpace", Set(&PayoutRequest::request_id, "a b"),
             kRequestId},
        Case{"RequestIdNotTrimmed", Set(&PayoutRequest::request_id, " ab"),
             kRequestId},
        Case{"RequestIdDot", Set(&PayoutRequest::request_id, "a.b"),
             kRequestId},
        Case{"RequestIdNonAscii",
             Set(&PayoutRequest::request_id, "caf\xC3\xA9"), kRequestId},
        // account number
        Case{"Account8", SetB(&Beneficiary::account_number, "12345678"),
             kAccount},
        Case{"Account9", SetB(&Beneficiary::account_number, "123456789"),
             kNone},
        Case{"Account18",
             SetB(&Beneficiary::account_number, std::string(18, '1')), kNone},
        Case{"Account19",
             SetB(&Beneficiary::account_number, std::string(19, '1')),
             kAccount},
        Case{"AccountTrimmed",
             SetB(&Beneficiary::account_number, " \t123456789\n"), kNone},
        Case{"AccountLetter", SetB(&Beneficiary::account_number, "12345678A"),
             kAccount},
        Case{"AccountInnerSpace",
             SetB(&Beneficiary::account_number, "1234 56789"), kAccount},
        Case{"AccountEmpty", SetB(&Beneficiary::account_number, ""), kAccount},
        Case{"AccountArabicIndicDigits",
             SetB(&Beneficiary::account_number,
                  "\xD9\xA1\xD9\xA2\xD9\xA3\xD9\xA4\xD9\xA5"),
             kAccount},
        // IFSC
        Case{"IfscLowerCase", SetB(&Beneficiary::ifsc, " sbin0000002 "),
             kNone},
        Case{"IfscAlnumBranch", SetB(&Beneficiary::ifsc, "HDFC0ABC123"), kNone},
        Case{"IfscFifthNotZero", SetB(&Beneficiary::ifsc, "SBIN1000002"),
             kIfsc},
        Case{"IfscDigitInBank", SetB(&Beneficiary::ifsc, "SB1N0000002"), kIfsc},
        Case{"IfscTooShort", SetB(&Beneficiary::ifsc, "SBIN000002"), kIfsc},
        Case{"IfscTooLong", SetB(&Beneficiary::ifsc, "SBIN00000022"), kIfsc},
        Case{"IfscPunctuation", SetB(&Beneficiary::ifsc, "SBIN0-00002"),
             kIfsc},
        Case{"IfscEmpty", SetB(&Beneficiary::ifsc, ""), kIfsc},
        // name
        Case{"NameAllAllowed",
             SetB(&Beneficiary::name, "O'Brien & Sons-Pvt. Ltd 2"), kNone},
        Case{"NameTrimmedEmpty", SetB(&Beneficiary::name, "   "), kName},
        Case{"Name100", SetB(&Beneficiary::name, std::string(100, 'a')),
             kNone},
        Case{"Name101", SetB(&Beneficiary::name, std::string(101, 'a')),
             kName},
        Case{"Name100AfterTrim",
             SetB(&Beneficiary::name, "  " + std::string(100, 'a') + "  "),
             kNone},
        Case{"NameTab", SetB(&Beneficiary::name, "Dean\tJon"), kName},
        Case{"NameNewline", SetB(&Beneficiary::name, "Dean\nJon"), kName},
        Case{"NameComma", SetB(&Beneficiary::name, "Jon, Dean"), kName},
        Case{"NameNonAscii", SetB(&Beneficiary::name, "Ren\xC3\xA9"), kName},
        Case{"NameTooLongAndBadChar",
             SetB(&Beneficiary::name, std::string(101, '!')),
             std::vector<std::string>{"beneficiary.name", "beneficiary.name"}},
        // e-mail
        Case{"EmailTrimmed", SetB(&Beneficiary::email, " a.b+c@mail.co.in "),
             kNone},
        Case{"EmailNoAt", SetB(&Beneficiary::email, "abc.gmail.com"), kEmail},
        Case{"EmailTwoAts", SetB(&Beneficiary::email, "a@b@gmail.com"), kEmail},
        Case{"EmailEmptyLocal", SetB(&Beneficiary::email, "@gmail.com"),
             kEmail},
        Case{"EmailNoDot", SetB(&Beneficiary::email, "abc@localhost"), kEmail},
        Case{"EmailEmptyLabel", SetB(&Beneficiary::email, "abc@gmail..com"),
             kEmail},
        Case{"EmailTrailingDot", SetB(&Beneficiary::email, "abc@gmail.com."),
             kEmail},
        Case{"EmailLeadingDot", SetB(&Beneficiary::email, "abc@.gmail.com"),
             kEmail},
        Case{"EmailInnerSpace", SetB(&Beneficiary::email, "a bc@gmail.com"),
             kEmail},
        Case{"EmailControl", SetB(&Beneficiary::email, "a\x01@gmail.com"),
             kEmail},
        Case{"EmailNonAscii", SetB(&Beneficiary::email, "r\xC3\xA9@mail.fr"),
             kEmail},
        Case{"EmailEmpty", SetB(&Beneficiary::email, ""), kEmail},
        Case{"Email254",
             SetB(&Beneficiary::email,
                  std::string(64, 'a') + "@" + std::string(185, 'b') + ".com"),
             kNone},
        Case{"Email255",
             SetB(&Beneficiary::email,
                  std::string(64, 'a') + "@" + std::string(186, 'b') + ".com"),
             kEmail},
        // mobile
        Case{"Mobile10", SetB(&Beneficiary::mobile, "9959640000"), kNone},
        Case{"MobileStarts6", SetB(&Beneficiary::mobile, "6000000000"), kNone},
        Case{"MobileStarts5", SetB(&Beneficiary::mobile, "5999999999"),
             kMobile},
        Case{"MobilePlus91", SetB(&Beneficiary::mobile, "+919959640000"),
             kNone},
        Case{"MobileZero", SetB(&Beneficiary::mobile, "09959640000"), kNone},
        Case{"Mobile91WithoutPlus",
             SetB(&Beneficiary::mobile, "919959640000"), kMobile},
        Case{"MobilePlus91Short", SetB(&Beneficiary::mobile, "+91995964000"),
             kMobile},
        Case{"MobileZeroThenBadStart",
             SetB(&Beneficiary::mobile, "05959640000"), kMobile},
        Case{"Mobile9", SetB(&Beneficiary::mobile, "995964000"), kMobile},
        Case{"Mobile11", SetB(&Beneficiary::mobile, "99596400001"), kMobile},
        Case{"MobileDashes", SetB(&Beneficiary::mobile, "99596-40000"),
             kMobile},
        Case{"MobileTrimmed", SetB(&Beneficiary::mobile, " +919959640000 "),
             kNone},
        Case{"MobileEmpty", SetB(&Beneficiary::mobile, ""), kMobile},
        // amount and mode
        Case{"AmountZero", Amount(0, kNeft), kAmount},
        Case{"AmountNegative", Amount(-1, kNeft), kAmount},
        Case{"AmountOnePaisa", Amount(1, kImps), kNone},
        Case{"ImpsAtLimit", Amount(50'000'000, kImps), kNone},
        Case{"ImpsOverLimit", Amount(50'000'001, kImps), kAmount},
        Case{"NeftOverImpsLimit", Amount(50'000'001, kNeft), kNone},
        Case{"NeftAtMax", Amount(100'000'000, kNeft), kNone},
        Case{"NeftOverMax", Amount(100'000'001, kNeft), kAmount},
        Case{"ImpsOverBoth", Amount(100'000'001, kImps),
             std::vector<std::string>{"amount_paise", "amount_paise"}},
        Case{"ModeUnspecified", Amount(1200, TransferMode::kUnspecified),
             kMode},
        Case{"ModeOutOfRange", Amount(1200, static_cast<TransferMode>(7)),
             kMode},
        // everything at once, in proto field order
        Case{"EverythingBroken",
             [](PayoutRequest& r) {
               r = PayoutRequest();
               r.beneficiary.name = "\x01";
               r.beneficiary.email = "x";
               r.beneficiary.mobile = "1";
             },
             std::vector<std::string>{
                 "request_id", "beneficiary.account_number", "beneficiary.ifsc",
                 "beneficiary.name", "beneficiary.email", "beneficiary.mobile",
                 "amount_paise", "mode"}}),
    [](const auto& info) { return info.param.name; });

TEST(ValidationTest, NormalisesEveryField) {
  PayoutRequest request = ValidRequest();
  request.beneficiary.account_number = " 100000011836\t";
  request.beneficiary.ifsc = "  sbin0000002\n";
  request.beneficiary.name = "  Dean Jon ";
  request.beneficiary.email = " abc@gmail.com ";
  request.beneficiary.mobile = " +919959640000 ";
  const absl::StatusOr<PayoutRequest> result =
      NormalizeAndValidate(request, ValidationLimits());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->request_id, request.request_id);
  EXPECT_EQ(result->beneficiary, ValidRequest().beneficiary);
  EXPECT_EQ(result->amount_paise, 1200);
  EXPECT_EQ(result->mode, TransferMode::kImps);

  request.beneficiary.mobile = "09959640000";
  EXPECT_EQ(
      NormalizeAndValidate(request, ValidationLimits())->beneficiary.mobile,
      "9959640000");
}

TEST(ValidationTest, UsesConfiguredLimits) {
  ValidationLimits limits;
  limits.max_amount_paise = 1000;
  limits.imps_max_amount_paise = 500;
  PayoutRequest request = ValidRequest();
  request.amount_paise = 1000;
  request.mode = TransferMode::kNeft;
  EXPECT_TRUE(NormalizeAndValidate(request, limits).ok());
  request.amount_paise = 1001;
  EXPECT_FALSE(NormalizeAndValidate(request, limits).ok());
  request.amount_paise = 501;
  request.mode = TransferMode::kImps;
  EXPECT_FALSE(NormalizeAndValidate(request, limits).ok());
  request.amount_paise = 500;
  EXPECT_TRUE(NormalizeAndValidate(request, limits).ok());
}

TEST(ValidationTest, DescriptionsStateTheRuleWithoutTheValue) {
  PayoutRequest request;
  request.request_id = "secret id!";
  request.beneficiary.account_number = "1234567890123456789999";
  request.beneficiary.ifsc = "ZZZZ9999999";
  request.beneficiary.name = "Secret<Name>";
  request.beneficiary.email = "secret@@nowhere";
  request.beneficiary.mobile = "5550001111";
  request.amount_paise = 7'777'777'777;
  request.mode = TransferMode::kImps;
  const absl::StatusOr<PayoutRequest> result =
      NormalizeAndValidate(request, ValidationLimits());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(),
            "The payout request is invalid: 7 fields break the rules.");
  const ErrorDetails details = GetErrorDetails(result.status());
  ASSERT_EQ(details.violations.size(), 8u);  // two for the amount
  for (const FieldViolation& v : details.violations) {
    EXPECT_FALSE(v.description.empty()) << v.field;
    for (const std::string secret : {"secret", "Secret", "1234567890", "ZZZZ",
                                     "nowhere", "5550001111", "7777777777"}) {
      EXPECT_FALSE(absl::StrContains(v.description, secret))
          << v.field << ": " << v.description;
    }
  }
  EXPECT_EQ(details.violations[1].description, "must be 9 to 18 digits");
  EXPECT_THAT(details.violations,
              testing::Contains(FieldViolation{
                  "amount_paise",
                  "must be at most 50000000 paise (Rs 500000.00) for IMPS"}));
}

TEST(RequestFingerprintTest, IsLowerHexSha256) {
  const std::string fingerprint = RequestFingerprint(ValidRequest());
  ASSERT_EQ(fingerprint.size(), 64u);
  for (const char c : fingerprint) {
    EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << c;
  }
  EXPECT_EQ(RequestFingerprint(ValidRequest()), fingerprint);
}

TEST(RequestFingerprintTest, IgnoresRequestIdOnly) {
  const std::string base = RequestFingerprint(ValidRequest());
  PayoutRequest other_id = ValidRequest();
  other_id.request_id = "another";
  EXPECT_EQ(RequestFingerprint(other_id), base);

  const std::vector<std::function<void(PayoutRequest&)>> changes = {
      SetB(&Beneficiary::account_number, "100000011837"),
      SetB(&Beneficiary::ifsc, "SBIN0000003"),
      SetB(&Beneficiary::name, "Dean Jon."),
      SetB(&Beneficiary::email, "abd@gmail.com"),
      SetB(&Beneficiary::mobile, "9959640001"),
      Amount(1201, kImps),
      Amount(1200, kNeft),
  };
  for (size_t i = 0; i < changes.size(); ++i) {
    PayoutRequest changed = ValidRequest();
    changes[i](changed);
    EXPECT_NE(RequestFingerprint(changed), base) << "change " << i;
  }
}

TEST(RequestFingerprintTest, FieldBoundariesAreUnambiguous) {
  PayoutRequest a = ValidRequest();
  a.beneficiary.name = "Dean";
  a.beneficiary.email = "Jon@x.in";
  PayoutRequest b = ValidRequest();
  b.beneficiary.name = "DeanJon";
  b.beneficiary.email = "@x.in";
  EXPECT_NE(RequestFingerprint(a), RequestFingerprint(b));
}

TEST(RequestFingerprintTest, MetadataIsPartOfItAndNoneLeavesItAsItWas) {
  // The fingerprint of a request without metadata, as recorded before
  // metadata existed: replays of old payouts must still match.
  EXPECT_EQ(RequestFingerprint(ValidRequest()),
            "8b99cab1147e2ce4c181ca0da86461dac86f7a11f69b7a3be1b18fc6282a7626")
      << "computed once and kept: see the test's comment";
  PayoutRequest with = ValidRequest();
  with.metadata = {{"invoice", "INV-1"}};
  const std::string one = RequestFingerprint(with);
  EXPECT_NE(one, RequestFingerprint(ValidRequest()));
  with.metadata = {{"invoice", "INV-2"}};
  EXPECT_NE(RequestFingerprint(with), one);
  with.metadata = {{"invoic", "eINV-1"}};
  EXPECT_NE(RequestFingerprint(with), one);
}

TEST(ValidationTest, MetadataIsBoundedAndNeverEchoed) {
  PayoutRequest request = ValidRequest();
  for (int i = 0; i <= kMaxMetadataKeys; ++i) {
    request.metadata[absl::StrCat("key", i)] = "v";
  }
  request.metadata[std::string(kMaxMetadataKeyChars + 1, 'k')] = "v";
  request.metadata["secret-ref"] = std::string(kMaxMetadataValueChars + 1, 'S');
  request.metadata[""] = "v";
  absl::StatusOr<PayoutRequest> refused =
      NormalizeAndValidate(request, ValidationLimits{});
  ASSERT_FALSE(refused.ok());
  const ErrorDetails details = GetErrorDetails(refused.status());
  std::vector<std::string> descriptions;
  for (const FieldViolation& v : details.violations) {
    EXPECT_EQ(v.field, "metadata");
    EXPECT_FALSE(absl::StrContains(v.description, "SSS"));
    EXPECT_FALSE(absl::StrContains(v.description, "secret-ref"));
    descriptions.push_back(v.description);
  }
  EXPECT_THAT(
      descriptions,
      testing::ElementsAre("may have at most 16 keys", "keys must not be empty",
                           "keys must be at most 40 characters",
                           "values must be at most 256 characters"));

  PayoutRequest fine = ValidRequest();
  for (int i = 0; i < kMaxMetadataKeys; ++i) {
    fine.metadata[std::string(kMaxMetadataKeyChars - 2, 'a') +
                  absl::StrCat(i % 10, i / 10)] =
        std::string(kMaxMetadataValueChars, 'v');
  }
  absl::StatusOr<PayoutRequest> accepted =
      NormalizeAndValidate(fine, ValidationLimits{});
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_EQ(accepted->metadata, fine.metadata);
}

}  // namespace
}  // namespace aopay
