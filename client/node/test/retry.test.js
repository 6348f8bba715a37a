'use strict';
// The retry policy and the error decoding, without a gateway.

const assert = require('node:assert/strict');
const {describe, it} = require('node:test');

const {
  DEFAULT_RETRY, NO_RETRY, PayoutClient, PayoutError, isRetryable,
  payoutState, retryPolicy, status, transferMode,
} = require('..');
const {backoffMs, callWithRetries} = require('../lib/retry');
const {load} = require('../lib/protos');

const error = (code, reason = '', retryDelayMs = null) =>
  new PayoutError({code, message: 'test', reason, retryDelayMs});

describe('isRetryable', () => {
  it('retries UNAVAILABLE, REQUEST_IN_PROGRESS and OVERLOADED', () => {
    for (const e of [
      error(status.UNAVAILABLE),
      error(status.UNAVAILABLE, 'UPSTREAM_UNAVAILABLE'),
      error(status.UNAVAILABLE, 'LEDGER_UNAVAILABLE'),
      error(status.UNAVAILABLE, 'SHUTTING_DOWN'),
      error(status.ABORTED, 'REQUEST_IN_PROGRESS'),
      error(status.RESOURCE_EXHAUSTED, 'OVERLOADED'),
    ]) {
      assert.equal(isRetryable(e), true, String(e));
    }
  });

  it('never retries OUTCOME_UNKNOWN or anything else', () => {
    for (const e of [
      error(status.DEADLINE_EXCEEDED, 'OUTCOME_UNKNOWN'),
      error(status.UNAVAILABLE, 'OUTCOME_UNKNOWN'),
      error(status.DEADLINE_EXCEEDED),
      error(status.ABORTED), error(status.ABORTED, 'ABORTED'),
      error(status.RESOURCE_EXHAUSTED, 'CLIENT_LIMIT_EXCEEDED'),
      error(status.RESOURCE_EXHAUSTED),
      error(status.INVALID_ARGUMENT, 'INVALID_REQUEST'),
      error(status.INVALID_ARGUMENT, 'REQUEST_ID_REUSED'),
      error(status.ALREADY_EXISTS, 'UPSTREAM_BENEFICIARY_EXISTS'),
      error(status.FAILED_PRECONDITION, 'UPSTREAM_ERROR'),
      error(status.INTERNAL, 'UPSTREAM_REJECTED_BODY'),
      error(status.NOT_FOUND, 'NOT_FOUND'),
      error(status.UNAUTHENTICATED, 'UNAUTHENTICATED'),
      error(status.PERMISSION_DENIED, 'PERMISSION_DENIED'),
      error(status.CANCELLED), error(status.UNKNOWN),
    ]) {
      assert.equal(isRetryable(e), false, String(e));
    }
  });
});

describe('callWithRetries', () => {
  // A fake clock: wait() advances it.
  async function run(errors, policy) {
    let now = 0;
    const sleeps = [];
    const numbers = [];
    const attempt = async (number) => {
      numbers.push(number);
      if (errors.length) throw errors.shift();
      return 'done';
    };
    let outcome;
    try {
      outcome = await callWithRetries(attempt, policy, {
        now: () => now,
        wait: async (ms) => {
          sleeps.push(ms);
          now += ms;
        },
      });
    } catch (e) {
      outcome = e;
    }
    return {outcome, numbers, sleeps};
  }

  it('retries, then succeeds', async () => {
    const calls = [];
    const {outcome, numbers, sleeps} = await run(
        [error(status.UNAVAILABLE), error(status.ABORTED, 'REQUEST_IN_PROGRESS')],
        retryPolicy({jitter: 0, onRetry: (n) => calls.push(n)}));
    assert.equal(outcome, 'done');
    assert.deepEqual(numbers, [1, 2, 3]);
    assert.deepEqual(sleeps, [500, 1000]);
    assert.deepEqual(calls, [1, 2]);
  });

  it('never waits less than RetryInfo', async () => {
    const {sleeps} = await run(
        [error(status.UNAVAILABLE, '', 1000), error(status.UNAVAILABLE, '', 100)],
        retryPolicy({jitter: 0}));
    assert.deepEqual(sleeps, [1000, 1000]);
  });

  it('grows the backoff to its cap', async () => {
    const {sleeps} = await run(Array(6).fill(0).map(() =>
      error(status.UNAVAILABLE)), retryPolicy({maxAttempts: 7, jitter: 0,
      initialBackoffMs: 1000, maxBackoffMs: 5000, maxElapsedMs: 1e6}));
    assert.deepEqual(sleeps, [1000, 2000, 4000, 5000, 5000, 5000]);
  });

  it('keeps the jitter within its band', () => {
    const policy = retryPolicy({jitter: 0.2});
    for (const r of [0, 0.5, 1]) {
      const delay = backoffMs(policy, 2, null, () => r);
      assert.ok(delay >= 800 - 1e-6 && delay <= 1200 + 1e-6, String(delay));
    }
  });

  it('gives up after maxAttempts', async () => {
    const {outcome, numbers} = await run(Array(10).fill(0).map(() =>
      error(status.UNAVAILABLE)), retryPolicy({maxAttempts: 3}));
    assert.ok(outcome instanceof PayoutError);
    assert.deepEqual(numbers, [1, 2, 3]);
    assert.equal(outcome.attempts, 3);
  });

  it('gives up when the time is spent', async () => {
    const {outcome, sleeps} = await run(Array(100).fill(0).map(() =>
      error(status.UNAVAILABLE)), retryPolicy({maxAttempts: 100, jitter: 0,
      initialBackoffMs: 1000, maxBackoffMs: 1000, maxElapsedMs: 3500}));
    assert.equal(outcome.attempts, 4);
    assert.deepEqual(sleeps, [1000, 1000, 1000]);
  });

  it('raises OUTCOME_UNKNOWN at once', async () => {
    const {outcome, numbers, sleeps} = await run(
        [error(status.DEADLINE_EXCEEDED, 'OUTCOME_UNKNOWN')], DEFAULT_RETRY);
    assert.equal(outcome.reason, 'OUTCOME_UNKNOWN');
    assert.deepEqual(numbers, [1]);
    assert.deepEqual(sleeps, []);
  });

  it('makes one attempt without retries', async () => {
    for (const policy of [NO_RETRY, retryPolicy(false), retryPolicy(null)]) {
      const {outcome, numbers} = await run([error(status.UNAVAILABLE)], policy);
      assert.deepEqual(numbers, [1]);
      assert.equal(outcome.attempts, 1);
    }
  });

  it('refuses bad policies', () => {
    for (const bad of [{maxAttempts: 0}, {jitter: 2}, {multiplier: 0.5},
      {initialBackoffMs: -1}]) {
      assert.throws(() => retryPolicy(bad), RangeError);
    }
  });
});

describe('PayoutError', () => {
  const {rpc} = load();
  const any = (type, message) => ({
    type_url: 'type.googleapis.com/google.rpc.' + type.name,
    value: Buffer.from(type.encode(type.fromObject(message)).finish()),
  });
  const trailer = () => {
    const statusMessage = {
      code: status.ABORTED, message: 'in progress',
      details: [
        any(rpc.ErrorInfo, {reason: 'REQUEST_IN_PROGRESS',
          domain: 'payout.aopay.v1', metadata: {payoutId: 'po_01ABC'}}),
        any(rpc.BadRequest, {fieldViolations: [
          {field: 'beneficiary.ifsc', description: 'is not an IFSC'},
          {field: 'amount_paise', description: 'must be positive'}]}),
        any(rpc.RetryInfo, {retryDelay: {seconds: 1, nanos: 500000000}}),
      ],
    };
    return Buffer.from(rpc.Status.encode(rpc.Status.fromObject(statusMessage))
        .finish());
  };
  const grpcError = (code, details, values) => ({
    code, details, metadata: {get: (key) =>
      key === 'grpc-status-details-bin' ? values : []},
  });

  it('decodes the status details trailer', () => {
    const decoded = PayoutError.fromGrpcError(
        grpcError(status.ABORTED, 'in progress', [trailer()]),
        {requestId: 'r-1'});
    assert.equal(decoded.code, status.ABORTED);
    assert.equal(decoded.codeName, 'ABORTED');
    assert.equal(decoded.details, 'in progress');
    assert.equal(decoded.reason, 'REQUEST_IN_PROGRESS');
    assert.equal(decoded.domain, 'payout.aopay.v1');
    assert.equal(decoded.payoutId, 'po_01ABC');
    assert.equal(decoded.retryDelayMs, 1500);
    assert.equal(decoded.requestId, 'r-1');
    assert.deepEqual(decoded.fieldViolations, [
      {field: 'beneficiary.ifsc', description: 'is not an IFSC'},
      {field: 'amount_paise', description: 'must be positive'}]);
    assert.ok(isRetryable(decoded));
    assert.ok(decoded instanceof Error);
  });

  it('keeps the code of an error without details', () => {
    const decoded = PayoutError.fromGrpcError(
        grpcError(status.UNAVAILABLE, 'connection refused', []));
    assert.equal(decoded.code, status.UNAVAILABLE);
    assert.equal(decoded.reason, '');
    assert.deepEqual(decoded.metadata, {});
    assert.equal(decoded.retryDelayMs, null);
    assert.equal(decoded.status, null);
  });

  it('keeps the code when the trailer does not parse', () => {
    const decoded = PayoutError.fromGrpcError(grpcError(status.INTERNAL, 'x',
        [Buffer.from([0xff, 0xff])]));
    assert.equal(decoded.code, status.INTERNAL);
    assert.equal(decoded.reason, '');
  });

  it('reads a status whose details use either Any field name', () => {
    const info = rpc.ErrorInfo.encode({reason: 'OVERLOADED'}).finish();
    for (const key of ['type_url', 'typeUrl']) {
      const decoded = PayoutError.fromStatus({code: status.RESOURCE_EXHAUSTED,
        message: 'full', details: [{[key]: 'type.googleapis.com/google.rpc.ErrorInfo',
          value: Buffer.from(info)}]});
      assert.equal(decoded.reason, 'OVERLOADED');
    }
  });
});

describe('requests', () => {
  it('takes enums by short name', () => {
    assert.equal(transferMode('imps'), 'TRANSFER_MODE_IMPS');
    assert.equal(transferMode('TRANSFER_MODE_NEFT'), 'TRANSFER_MODE_NEFT');
    assert.equal(payoutState('unknown'), 'PAYOUT_STATE_UNKNOWN');
    assert.throws(() => transferMode('RTGS'), TypeError);
  });

  it('needs a request id', async () => {
    const client = new PayoutClient('127.0.0.1:1');
    try {
      await assert.rejects(client.createPayout({beneficiary: {},
        amountPaise: 1, mode: 'IMPS'}), TypeError);
      assert.throws(() => client.batchCreate([{requestId: 'a'},
        {requestId: 'a'}]), TypeError);
    } finally {
      client.close();
    }
  });

  it('sends a token only over TLS unless told', () => {
    assert.throws(() => new PayoutClient('127.0.0.1:1', {token: 't'}),
        TypeError);
    new PayoutClient('127.0.0.1:1', {token: 't', allowInsecureToken: true})
        .close();
  });
});
