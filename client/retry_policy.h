#ifndef AOPAY_CLIENT_RETRY_POLICY_H_
#define AOPAY_CLIENT_RETRY_POLICY_H_

// The retry policy of docs/client-retries.md, for the C++ client: which
// errors may be retried with the same request, how long to wait between
// attempts, and a loop that runs the attempts. The Python and Node packages
// follow the same page.

#include <functional>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace aopay {

// Whether `status` may be retried with the very same request: UNAVAILABLE
// (any reason, or none), ABORTED / REQUEST_IN_PROGRESS and
// RESOURCE_EXHAUSTED / OVERLOADED. Never OUTCOME_UNKNOWN, never anything
// else.
[[nodiscard]] bool IsRetryable(const absl::Status& status);

// How often and how long to retry. The defaults are the page's.
struct RetryPolicy {
  // Attempts in all, the first one included (>= 1).
  int max_attempts = 5;
  // The base wait before the first retry.
  absl::Duration initial_backoff = absl::Milliseconds(500);
  // The base wait grows by this factor each retry (>= 1).
  double multiplier = 2.0;
  // The base wait never grows beyond this.
  absl::Duration max_backoff = absl::Seconds(10);
  // The wait is scaled by a random factor in [1 - jitter, 1 + jitter].
  double jitter = 0.2;
  // No retry is made whose wait would end later than this after the first
  // attempt began.
  absl::Duration max_elapsed = absl::Seconds(60);
  // Called before each wait as on_retry(attempt, error, wait): attempt
  // `attempt` (1 = the first) ended with `error`, and attempt `attempt + 1`
  // follows after `wait`. Optional; runs on the calling thread.
  std::function<void(int, const absl::Status&, absl::Duration)> on_retry;

  // The wait before retry number `retry` (1 = the first), given a random
  // number in [0, 1): never shorter than `retry_delay` (the error's
  // RetryInfo) when there is one.
  [[nodiscard]] absl::Duration Backoff(
      int retry, std::optional<absl::Duration> retry_delay,
      double unit_random) const;
};

// The defaults for following a watch, which runs for hours: 30 attempts
// within 300 s in a row, at most 10 s apart; otherwise RetryPolicy's.
[[nodiscard]] RetryPolicy WatchRetryPolicy();

// INVALID_ARGUMENT naming the first setting out of range; OK otherwise.
[[nodiscard]] absl::Status ValidateRetryPolicy(const RetryPolicy& policy);

// How many attempts a call made before it returned `status`: what
// WithAttempts() recorded, 1 when nothing was recorded.
[[nodiscard]] int RetryAttempts(const absl::Status& status);
// `status` with the number of attempts recorded (OK is returned unchanged).
[[nodiscard]] absl::Status WithAttempts(absl::Status status, int attempts);

// The RetryInfo delay `status` carries, if any.
[[nodiscard]] std::optional<absl::Duration> RetryDelayOf(
    const absl::Status& status);

// Time for the retry loop: real by default, replaced in tests.
struct RetryClock {
  std::function<absl::Time()> now = [] { return absl::Now(); };
  std::function<void(absl::Duration)> sleep = [](absl::Duration d) {
    absl::SleepFor(d);
  };
  // Uniform in [0, 1).
  std::function<double()> random;  // empty: a thread-local generator
};

// A uniform random number in [0, 1) from `clock`, or from a thread-local
// generator when it has none.
[[nodiscard]] double RetryRandom(const RetryClock& clock);

// Runs attempt(n) for n = 1, 2, ... until it succeeds, fails with an error
// that is not retryable, or the policy's attempts or time run out; returns
// the last result, its error carrying the attempts made (RetryAttempts).
// `policy` null: exactly one attempt.
template <typename T, typename Attempt>
absl::StatusOr<T> CallWithRetries(const RetryPolicy* policy,
                                  const RetryClock& clock, Attempt attempt) {
  const absl::Time started = clock.now();
  for (int number = 1;; ++number) {
    absl::StatusOr<T> result = attempt(number);
    if (result.ok()) return result;
    absl::Status error = WithAttempts(result.status(), number);
    if (policy == nullptr || number >= policy->max_attempts ||
        !IsRetryable(error)) {
      return error;
    }
    const absl::Duration wait =
        policy->Backoff(number, RetryDelayOf(error), RetryRandom(clock));
    if (clock.now() + wait - started > policy->max_elapsed) return error;
    if (policy->on_retry) policy->on_retry(number, error, wait);
    clock.sleep(wait);
  }
}

}  // namespace aopay

#endif  // AOPAY_CLIENT_RETRY_POLICY_H_
