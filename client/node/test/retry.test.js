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

// A PayoutClient whose unary calls answer from a script, per method: each
// entry is a PayoutError-like {code, reason} to fail with, or a Payout
// object to answer. Requests and answers go through the real serializers.
function fakeClient(script, options = {}) {
  const {rpc} = load();
  const client = new PayoutClient('127.0.0.1:1', {
    retry: {initialBackoffMs: 0, jitter: 0}, ...options});
  const calls = [];
  client._client.makeUnaryRequest = (path, serialize, deserialize, request,
      metadata, callOptions, callback) => {
    const method = path.split('/').pop();
    const wire = serialize(request);
    calls.push({method, request: client._methods[method]
        .requestDeserialize(wire), metadata, callOptions});
    const outcome = script[method].shift();
    setImmediate(() => {
      if (outcome.code === undefined) {
        const answer = client._methods[method].responseSerialize(outcome);
        callback(null, deserialize(answer));
        return;
      }
      const values = outcome.reason ? [Buffer.from(rpc.Status.encode(
          rpc.Status.fromObject({code: outcome.code, message: 'test',
            details: [{type_url: 'type.googleapis.com/google.rpc.ErrorInfo',
              value: Buffer.from(rpc.ErrorInfo.encode({
                reason: outcome.reason, domain: 'payout.aopay.v1'})
                  .finish())}]})).finish())] : [];
      callback({code: outcome.code, details: 'test', metadata: {get: (key) =>
        key === 'grpc-status-details-bin' ? values : []}});
    });
  };
  return {client, calls};
}

describe('approvals', () => {
  const failure = (code, reason = '') => ({code, reason});
  const payout = (state) => ({payoutId: 'po_1', state});

  it('retries an approval like a payout, with its deadline', async () => {
    const {client, calls} = fakeClient({ApprovePayout: [
      failure(status.UNAVAILABLE, 'UPSTREAM_UNAVAILABLE'),
      failure(status.UNAVAILABLE),
      failure(status.ABORTED, 'REQUEST_IN_PROGRESS'),
      payout('PAYOUT_STATE_ACCEPTED')]}, {createTimeoutMs: 42000});
    try {
      const started = Date.now();
      const approved = await client.approvePayout({payoutId: 'po_1',
        note: 'checked the invoice'});
      assert.equal(approved.state, 'PAYOUT_STATE_ACCEPTED');
      assert.equal(calls.length, 4);
      for (const call of calls) {
        assert.equal(call.method, 'ApprovePayout');
        assert.deepEqual({...call.request},
            {payoutId: 'po_1', note: 'checked the invoice'});
        const deadline = call.callOptions.deadline - started;
        assert.ok(deadline > 41000 && deadline <= 43000, String(deadline));
      }
    } finally {
      client.close();
    }
  });

  it('never retries an approval after OUTCOME_UNKNOWN or a refusal',
      async () => {
        for (const [code, reason] of [
          [status.DEADLINE_EXCEEDED, 'OUTCOME_UNKNOWN'],
          [status.DEADLINE_EXCEEDED, ''],
          [status.FAILED_PRECONDITION, 'NOT_AWAITING_APPROVAL'],
          [status.PERMISSION_DENIED, 'SELF_APPROVAL'],
          [status.PERMISSION_DENIED, 'PERMISSION_DENIED'],
          [status.RESOURCE_EXHAUSTED, 'CLIENT_LIMIT_EXCEEDED'],
        ]) {
          const {client, calls} = fakeClient({ApprovePayout: [
            failure(code, reason), payout('PAYOUT_STATE_ACCEPTED')]});
          try {
            const error = await client.approvePayout({payoutId: 'po_1',
              note: 'ok'}).then(() => null, (e) => e);
            assert.ok(error instanceof PayoutError, reason);
            assert.equal(error.code, code);
            assert.equal(error.reason, reason);
            assert.equal(error.attempts, 1);
            assert.equal(calls.length, 1, reason);
          } finally {
            client.close();
          }
        }
      });

  it('says by its attempts that an earlier attempt may have approved',
      async () => {
        const {client} = fakeClient({ApprovePayout: [
          failure(status.UNAVAILABLE),
          failure(status.FAILED_PRECONDITION, 'NOT_AWAITING_APPROVAL')]});
        try {
          const error = await client.approvePayout({payoutId: 'po_1',
            note: 'ok'}).then(() => null, (e) => e);
          assert.equal(error.reason, 'NOT_AWAITING_APPROVAL');
          assert.equal(error.attempts, 2);
        } finally {
          client.close();
        }
      });

  it('retries a rejection or a cancel on the retryable errors only',
      async () => {
        const {client, calls} = fakeClient({
          RejectPayout: [failure(status.UNAVAILABLE, 'LEDGER_UNAVAILABLE'),
            payout('PAYOUT_STATE_CANCELLED'),
            failure(status.FAILED_PRECONDITION, 'NOT_AWAITING_APPROVAL')],
          CancelPayout: [failure(status.UNAVAILABLE),
            payout('PAYOUT_STATE_CANCELLED'),
            failure(status.FAILED_PRECONDITION, 'NOT_CANCELLABLE')],
        }, {timeoutMs: 7000});
        try {
          assert.equal((await client.rejectPayout({payoutId: 'po_1',
            note: 'no'})).state, 'PAYOUT_STATE_CANCELLED');
          assert.equal((await client.cancelPayout({payoutId: 'po_1'})).state,
              'PAYOUT_STATE_CANCELLED');
          const rejected = await client.rejectPayout({payoutId: 'po_1',
            note: 'no'}).then(() => null, (e) => e);
          assert.equal(rejected.reason, 'NOT_AWAITING_APPROVAL');
          assert.equal(rejected.attempts, 1);
          const cancelled = await client.cancelPayout({payoutId: 'po_1',
            note: 'changed my mind'}).then(() => null, (e) => e);
          assert.equal(cancelled.reason, 'NOT_CANCELLABLE');
          assert.equal(cancelled.attempts, 1);
          assert.deepEqual(calls.map((c) => c.method), [
            'RejectPayout', 'RejectPayout', 'CancelPayout', 'CancelPayout',
            'RejectPayout', 'CancelPayout']);
          assert.equal(calls[2].request.note, '');
          assert.equal(calls[5].request.note, 'changed my mind');
        } finally {
          client.close();
        }
      });

  it('makes one attempt with retry: false, and refuses a bad request',
      async () => {
        const {client, calls} = fakeClient({ApprovePayout: [
          failure(status.UNAVAILABLE), payout('PAYOUT_STATE_ACCEPTED')]});
        try {
          await assert.rejects(client.approvePayout({payoutId: 'po_1',
            note: 'ok'}, {retry: false}), PayoutError);
          assert.equal(calls.length, 1);
          await assert.rejects(client.approvePayout('po_1'), TypeError);
          await assert.rejects(client.cancelPayout({payoutId: 'po_1',
            reason: 'x'}), TypeError);
          assert.equal(calls.length, 1);
        } finally {
          client.close();
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

  it('carries metadata into the request and refuses anything else',
      async () => {
        const {client, calls} = fakeClient({CreatePayout: [{}, {}, {}]});
        try {
          await client.createPayout({requestId: 'r-1', amountPaise: 1,
            mode: 'IMPS', metadata: {invoice_no: 'INV-42', empty: ''}});
          await client.createPayout({requestId: 'r-2',
            metadata: new Map([['employee', 'E-7']])});
          await client.createPayout({requestId: 'r-3'});
          assert.deepEqual(calls.map((c) => c.request.metadata),
              [{invoice_no: 'INV-42', empty: ''}, {employee: 'E-7'}, {}]);
          for (const metadata of [[['k', 'v']], 'k=v', {k: 1}, 7]) {
            await assert.rejects(client.createPayout({requestId: 'r',
              metadata}), TypeError);
          }
          assert.equal(calls.length, 3);
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
