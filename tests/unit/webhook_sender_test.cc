#include "server/flow/webhook_sender.h"

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

TEST(WebhookSenderTest, RetriesWaitOneSecondDoublingUpToAnHour) {
  EXPECT_EQ(WebhookSender::RetryDelay(0), absl::Seconds(1));
  EXPECT_EQ(WebhookSender::RetryDelay(1), absl::Seconds(2));
  EXPECT_EQ(WebhookSender::RetryDelay(5), absl::Seconds(32));
  EXPECT_EQ(WebhookSender::RetryDelay(12), absl::Hours(1));
  // However many attempts a day of failures makes, no overflow.
  EXPECT_EQ(WebhookSender::RetryDelay(1'000'000), absl::Hours(1));
}

TEST(WebhookSenderTest, ADayOfRetriesIsDozensOfAttemptsNotThousands) {
  absl::Duration waited;
  int attempts = 0;
  while (waited < WebhookSender::kGiveUpAfter) {
    waited += WebhookSender::RetryDelay(attempts++);
  }
  EXPECT_GT(attempts, 20);
  EXPECT_LT(attempts, 40);
}

}  // namespace
}  // namespace aopay
