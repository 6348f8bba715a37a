'use strict';
// The retry policy of docs/client-retries.md.

const grpc = require('@grpc/grpc-js');
const {PayoutError} = require('./errors');

const RETRYABLE_REASONS = {
  [grpc.status.ABORTED]: ['REQUEST_IN_PROGRESS'],
  [grpc.status.RESOURCE_EXHAUSTED]: ['OVERLOADED'],
};

// UNAVAILABLE (any reason, or none), ABORTED / REQUEST_IN_PROGRESS and
// RESOURCE_EXHAUSTED / OVERLOADED. Never OUTCOME_UNKNOWN, nothing else.
function isRetryable(error) {
  if (error.reason === 'OUTCOME_UNKNOWN') return false;
  if (error.code === grpc.status.UNAVAILABLE) return true;
  return (RETRYABLE_REASONS[error.code] || []).includes(error.reason);
}

const DEFAULT_RETRY = Object.freeze({
  maxAttempts: 5,
  initialBackoffMs: 500,
  multiplier: 2,
  maxBackoffMs: 10000,
  jitter: 0.2,
  maxElapsedMs: 60000,
  onRetry: null,
});

const NO_RETRY = Object.freeze({...DEFAULT_RETRY, maxAttempts: 1});

// The reconnections of a watch (docs/client-retries.md#watching). Its
// limits count failed reconnections in a row: a stream that opens starts
// them again.
const DEFAULT_WATCH_RETRY = Object.freeze({
  ...DEFAULT_RETRY,
  maxAttempts: 30,
  maxBackoffMs: 10000,
  maxElapsedMs: 300000,
});

// A complete policy from `false`/null (one attempt), `true`/undefined (the
// defaults) or a partial object (the defaults for what it leaves out).
// `defaults` is DEFAULT_RETRY, or DEFAULT_WATCH_RETRY for a watch.
function retryPolicy(value, defaults = DEFAULT_RETRY) {
  if (value === false || value === null) return NO_RETRY;
  if (value === true || value === undefined) return defaults;
  const policy = {...defaults, ...value};
  if (!(policy.maxAttempts >= 1)) {
    throw new RangeError('maxAttempts must be at least 1');
  }
  if (policy.initialBackoffMs < 0 || policy.maxBackoffMs < 0 ||
      policy.maxElapsedMs < 0) {
    throw new RangeError('backoffs and maxElapsedMs must not be negative');
  }
  if (!(policy.multiplier >= 1)) {
    throw new RangeError('multiplier must be at least 1');
  }
  if (!(policy.jitter >= 0 && policy.jitter <= 1)) {
    throw new RangeError('jitter must be between 0 and 1');
  }
  return Object.freeze(policy);
}

// The wait in milliseconds before retry number `retry` (1 = the first).
function backoffMs(policy, retry, retryDelayMs = null, random = Math.random) {
  const base = Math.min(policy.maxBackoffMs,
      policy.initialBackoffMs * policy.multiplier ** (retry - 1));
  let delay = base * (1 - policy.jitter + 2 * policy.jitter * random());
  if (retryDelayMs !== null && retryDelayMs !== undefined) {
    delay = Math.max(delay, retryDelayMs);
  }
  return delay;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Runs attempt(number) until it resolves, or rejects with the last
// PayoutError (carrying the number of attempts made).
async function callWithRetries(attempt, policy,
    {now = Date.now, wait = sleep} = {}) {
  const started = now();
  for (let number = 1; ; number++) {
    try {
      return await attempt(number);
    } catch (error) {
      if (!(error instanceof PayoutError)) throw error;
      error.attempts = number;
      if (number >= policy.maxAttempts || !isRetryable(error)) throw error;
      const delay = backoffMs(policy, number, error.retryDelayMs);
      if (now() + delay - started > policy.maxElapsedMs) throw error;
      if (policy.onRetry) await policy.onRetry(number, error, delay);
      await wait(delay);
    }
  }
}

module.exports = {
  DEFAULT_RETRY, DEFAULT_WATCH_RETRY, NO_RETRY, backoffMs, callWithRetries,
  isRetryable, retryPolicy, sleep,
};
