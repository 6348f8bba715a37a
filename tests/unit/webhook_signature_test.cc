#include "common/webhook_signature.h"

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

constexpr char kSecret[] = "whsec_test";
constexpr char kBody[] = R"({"a":1})";
const absl::Time kSent = absl::FromUnixSeconds(1700000000);
// HMAC-SHA256("whsec_test", "1700000000.{\"a\":1}"), from Python's hmac.
constexpr char kKnownMac[] =
    "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789";

TEST(WebhookSignatureTest, SignsTheTimeAndTheBodyAsReceiversRecompute) {
  EXPECT_EQ(SignWebhook(kSecret, kSent + absl::Milliseconds(900), kBody),
            std::string("t=1700000000,v1=") + kKnownMac);
}

TEST(WebhookSignatureTest, VerifiesItsOwnSignatureWithinTheTolerance) {
  const std::string header = SignWebhook(kSecret, kSent, kBody);
  EXPECT_TRUE(VerifyWebhook(kSecret, header, kBody, kSent).ok());
  EXPECT_TRUE(
      VerifyWebhook(kSecret, header, kBody, kSent + absl::Minutes(4)).ok());
  EXPECT_EQ(
      VerifyWebhook(kSecret, header, kBody, kSent + absl::Minutes(6)).code(),
      absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(
      VerifyWebhook(kSecret, header, kBody, kSent - absl::Minutes(6)).code(),
      absl::StatusCode::kDeadlineExceeded);
}

TEST(WebhookSignatureTest, RefusesAnotherBodySecretOrTime) {
  const std::string header = SignWebhook(kSecret, kSent, kBody);
  EXPECT_EQ(VerifyWebhook(kSecret, header, R"({"a":2})", kSent).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(VerifyWebhook("other", header, kBody, kSent).code(),
            absl::StatusCode::kUnauthenticated);
  // The same MAC under another time: the time is signed too.
  EXPECT_EQ(VerifyWebhook(kSecret, std::string("t=1700000001,v1=") + kKnownMac,
                          kBody, kSent)
                .code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(WebhookSignatureTest, AcceptsAnyOfSeveralSignaturesWhileASecretRotates) {
  const std::string header =
      std::string("t=1700000000, v1=00ff, v0=ignored, v1=") + kKnownMac;
  EXPECT_TRUE(VerifyWebhook(kSecret, header, kBody, kSent).ok());
}

TEST(WebhookSignatureTest, AHeaderThatDoesNotParseIsInvalid) {
  for (const char* header :
       {"", "v1=abc", "t=1700000000", "t=x,v1=abc", "t=1,t=2,v1=abc"}) {
    EXPECT_EQ(VerifyWebhook(kSecret, header, kBody, kSent).code(),
              absl::StatusCode::kInvalidArgument)
        << header;
  }
}

}  // namespace
}  // namespace aopay
