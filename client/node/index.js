'use strict';
// Node.js client of the AOPay payout gateway. README.md shows how to use
// it; docs/client-retries.md is the retry policy it follows.

const {status} = require('@grpc/grpc-js');
const {
  PayoutClient, newRequestId, payoutState, stateName, transferMode,
  CREATE_TIMEOUT_MS, TIMEOUT_MS,
} = require('./lib/client');
const {PayoutError, DOMAIN} = require('./lib/errors');
const {
  DEFAULT_RETRY, DEFAULT_WATCH_RETRY, NO_RETRY, isRetryable, retryPolicy,
} = require('./lib/retry');
const {PayoutWatch} = require('./lib/watch');

module.exports = {
  PayoutClient,
  PayoutError,
  PayoutWatch,
  DEFAULT_RETRY,
  DEFAULT_WATCH_RETRY,
  NO_RETRY,
  DOMAIN,
  CREATE_TIMEOUT_MS,
  TIMEOUT_MS,
  isRetryable,
  newRequestId,
  payoutState,
  retryPolicy,
  stateName,
  status,
  transferMode,
};
