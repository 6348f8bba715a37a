"""The retry policy of docs/client-retries.md."""

import random
import time

import grpc

from .errors import PayoutError

#: Reasons that make RESOURCE_EXHAUSTED and ABORTED retryable.
_RETRYABLE_REASONS = {
    grpc.StatusCode.ABORTED: {"REQUEST_IN_PROGRESS"},
    grpc.StatusCode.RESOURCE_EXHAUSTED: {"OVERLOADED"},
}


def is_retryable(error):
    """Whether a PayoutError may be retried with the same request.

    UNAVAILABLE (any reason, or none), ABORTED / REQUEST_IN_PROGRESS and
    RESOURCE_EXHAUSTED / OVERLOADED. Never OUTCOME_UNKNOWN, never anything
    else.
    """
    if error.reason == "OUTCOME_UNKNOWN":
        return False
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return True
    return error.reason in _RETRYABLE_REASONS.get(error.code, ())


class RetryPolicy:
    """How often and how long to retry.

    Args:
      max_attempts: attempts in all, the first one included (>= 1).
      initial_backoff: the base wait before the first retry, in seconds.
      multiplier: the base wait grows by this factor each retry.
      max_backoff: the base wait never grows beyond this, in seconds.
      jitter: the wait is scaled by a random factor in
        [1 - jitter, 1 + jitter].
      max_elapsed: no retry is made whose wait would end more than this many
        seconds after the first attempt began.
      on_retry: called as on_retry(attempt, error, delay) before waiting
        `delay` seconds for attempt `attempt + 1`; `error` is the PayoutError
        that attempt `attempt` ended with.

    The wait is never shorter than the error's RetryInfo delay.
    """

    def __init__(self, max_attempts=5, initial_backoff=0.5, multiplier=2.0,
                 max_backoff=10.0, jitter=0.2, max_elapsed=60.0,
                 on_retry=None):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if initial_backoff < 0 or max_backoff < 0 or max_elapsed < 0:
            raise ValueError("backoffs and max_elapsed must not be negative")
        if multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if not 0 <= jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        self.max_attempts = max_attempts
        self.initial_backoff = initial_backoff
        self.multiplier = multiplier
        self.max_backoff = max_backoff
        self.jitter = jitter
        self.max_elapsed = max_elapsed
        self.on_retry = on_retry

    def with_on_retry(self, on_retry):
        """A copy of this policy with another on_retry hook."""
        return RetryPolicy(self.max_attempts, self.initial_backoff,
                           self.multiplier, self.max_backoff, self.jitter,
                           self.max_elapsed, on_retry)

    def backoff(self, retry, retry_delay=None, rand=random.random):
        """The wait in seconds before retry number `retry` (1 = first)."""
        base = min(self.max_backoff,
                   self.initial_backoff * self.multiplier ** (retry - 1))
        delay = base * (1 - self.jitter + 2 * self.jitter * rand())
        if retry_delay is not None:
            delay = max(delay, retry_delay)
        return delay


#: The policy clients use unless told otherwise.
DEFAULT_RETRY = RetryPolicy()

#: Pass as `retry` to make exactly one attempt.
NO_RETRY = RetryPolicy(max_attempts=1)

#: The policy of watch_payouts unless told otherwise: its limits count failed
#: reconnections in a row (a stream that opens starts the count and the
#: time again), so a watch that runs for hours keeps following.
DEFAULT_WATCH_RETRY = RetryPolicy(max_attempts=30, max_backoff=10.0,
                                  max_elapsed=300.0)


def call_with_retries(attempt, policy, *, clock=time.monotonic,
                      sleep=time.sleep):
    """Runs attempt(number) until it returns, or raises a PayoutError.

    `attempt` raises PayoutError on failure; the error raised at the end
    carries the number of attempts made.
    """
    policy = policy or NO_RETRY
    started = clock()
    number = 1
    while True:
        try:
            return attempt(number)
        except PayoutError as error:
            error.attempts = number
            if number >= policy.max_attempts or not is_retryable(error):
                raise
            delay = policy.backoff(number, error.retry_delay)
            if clock() + delay - started > policy.max_elapsed:
                raise
            if policy.on_retry is not None:
                policy.on_retry(number, error, delay)
            sleep(delay)
            number += 1
