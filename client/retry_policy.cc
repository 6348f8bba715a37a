#include "client/retry_policy.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "common/errors.h"

namespace aopay {
namespace {

// Where WithAttempts() keeps the count: a payload only this client reads.
constexpr char kAttemptsPayload[] = "type.aopay.dev/client.RetryAttempts";

}  // namespace

bool IsRetryable(const absl::Status& status) {
  const std::string reason = GetErrorDetails(status).reason;
  if (reason == reason::kOutcomeUnknown) return false;
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return true;
    case absl::StatusCode::kAborted:
      return reason == reason::kRequestInProgress;
    case absl::StatusCode::kResourceExhausted:
      return reason == reason::kOverloaded;
    default:
      return false;
  }
}

absl::Duration RetryPolicy::Backoff(int retry,
                                    std::optional<absl::Duration> retry_delay,
                                    double unit_random) const {
  const double grown =
      absl::ToDoubleSeconds(initial_backoff) * std::pow(multiplier, retry - 1);
  const double base = std::min(absl::ToDoubleSeconds(max_backoff), grown);
  absl::Duration wait =
      absl::Seconds(base * (1 - jitter + 2 * jitter * unit_random));
  if (retry_delay.has_value()) wait = std::max(wait, *retry_delay);
  return wait;
}

RetryPolicy WatchRetryPolicy() {
  RetryPolicy policy;
  policy.max_attempts = 30;
  policy.max_backoff = absl::Seconds(10);
  policy.max_elapsed = absl::Seconds(300);
  return policy;
}

absl::Status ValidateRetryPolicy(const RetryPolicy& policy) {
  if (policy.max_attempts < 1) {
    return absl::InvalidArgumentError("max_attempts must be at least 1");
  }
  if (policy.initial_backoff < absl::ZeroDuration() ||
      policy.max_backoff < absl::ZeroDuration() ||
      policy.max_elapsed < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "backoffs and max_elapsed must not be negative");
  }
  if (!(policy.multiplier >= 1)) {
    return absl::InvalidArgumentError("multiplier must be at least 1");
  }
  if (!(policy.jitter >= 0 && policy.jitter <= 1)) {
    return absl::InvalidArgumentError("jitter must be between 0 and 1");
  }
  return absl::OkStatus();
}

int RetryAttempts(const absl::Status& status) {
  const auto payload = status.GetPayload(kAttemptsPayload);
  int attempts = 0;
  if (!payload.has_value() ||
      !absl::SimpleAtoi(std::string(*payload), &attempts) || attempts < 1) {
    return 1;
  }
  return attempts;
}

absl::Status WithAttempts(absl::Status status, int attempts) {
  if (!status.ok()) {
    status.SetPayload(kAttemptsPayload, absl::Cord(std::to_string(attempts)));
  }
  return status;
}

std::optional<absl::Duration> RetryDelayOf(const absl::Status& status) {
  return GetErrorDetails(status).retry_delay;
}

double RetryRandom(const RetryClock& clock) {
  if (clock.random) return clock.random();
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(generator);
}

}  // namespace aopay
