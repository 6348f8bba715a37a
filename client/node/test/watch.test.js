'use strict';
// PayoutWatch without a gateway: WatchPayouts streams from a fake factory
// that plays a ledger of events and a plan of how each stream ends, with a
// fake clock (docs/client-retries.md#watching).

const assert = require('node:assert/strict');
const {EventEmitter} = require('node:events');
const {describe, it} = require('node:test');
const grpc = require('@grpc/grpc-js');

const {
  DEFAULT_RETRY, DEFAULT_WATCH_RETRY, NO_RETRY, PayoutClient, PayoutError,
  PayoutWatch, retryPolicy, status,
} = require('..');
const {load} = require('../lib/protos');

const HEADER = 'payout-watch-cursor';

// A trailer carrying ErrorInfo (and RetryInfo), as the gateway sends it.
function statusMetadata(code, reason, retryDelayMs) {
  const metadata = new grpc.Metadata();
  if (!reason) return metadata;
  const {rpc} = load();
  const any = (type, message) => ({
    type_url: 'type.googleapis.com/google.rpc.' + type.name,
    value: Buffer.from(type.encode(type.fromObject(message)).finish()),
  });
  const details = [any(rpc.ErrorInfo, {reason, domain: 'payout.aopay.v1'})];
  if (retryDelayMs !== null) {
    details.push(any(rpc.RetryInfo, {retryDelay: {
      seconds: Math.floor(retryDelayMs / 1000),
      nanos: (retryDelayMs % 1000) * 1e6}}));
  }
  metadata.set('grpc-status-details-bin', Buffer.from(rpc.Status.encode(
      rpc.Status.fromObject({code, message: 'test', details})).finish()));
  return metadata;
}

// A grpc-js ClientReadableStream as PayoutWatch uses it: 'metadata',
// 'data', then 'error' + 'status' + 'end' (or 'status' OK + 'end'). Events
// are emitted only while it is not paused, as a Readable would.
class FakeStream extends EventEmitter {
  constructor(afterCursor) {
    super();
    this.afterCursor = afterCursor;
    this.paused = false;
    this.pauses = 0;
    this.resumes = 0;
    this.cancelled = false;
    this.finished = false;
    this.pending = [];  // events not emitted yet (paused)
    this.emitted = 0;
  }

  pause() {
    this.paused = true;
    this.pauses++;
    return this;
  }

  resume() {
    this.paused = false;
    this.resumes++;
    setImmediate(() => this.pump());
    return this;
  }

  cancel() {
    if (this.finished) return;
    this.cancelled = true;
    this.fail(status.CANCELLED);
  }

  header(cursor) {
    const metadata = new grpc.Metadata();
    metadata.set(HEADER, cursor);
    this.emit('metadata', metadata);
  }

  send(events) {
    this.pending.push(...events);
    this.pump();
  }

  pump() {
    while (!this.paused && !this.finished && this.pending.length) {
      this.emitted++;
      this.emit('data', this.pending.shift());
    }
  }

  fail(code, reason = '', retryDelayMs = null) {
    if (this.finished) return;
    this.finished = true;
    const metadata = statusMetadata(code, reason, retryDelayMs);
    const error = Object.assign(new Error(`${code} test`),
        {code, details: 'test', metadata});
    this.emit('error', error);
    this.emit('status', {code, details: 'test', metadata});
    this.emit('end');
  }

  end() {
    if (this.finished) return;
    this.finished = true;
    this.emit('status', {code: status.OK, details: 'OK',
      metadata: new grpc.Metadata()});
    this.emit('end');
  }
}

const event = (n) => ({
  cursor: 'c' + n,
  payout: {payoutId: 'po_' + n, state: 'PAYOUT_STATE_PENDING'},
  previousState: 'PAYOUT_STATE_UNSPECIFIED',
  eventTime: {seconds: String(n), nanos: 0},
});

// A gateway's WatchPayouts played from `ledger` (events in order) and
// `plan`, one step a stream: {header (default true; false: a stream that
// never opens and sends nothing), events (how many to send; default all
// after the cursor), then: 'fail' [code, reason,
// retryDelayMs] | 'end' | 'open' (default)}. A stream beyond the plan fails
// with INTERNAL 'unplanned stream', which no watch retries.
function fakeGateway(ledger, plan) {
  const opens = [];
  const streams = [];
  const head = () => ledger.length ? ledger[ledger.length - 1].cursor : 'c0';
  const after = (cursor) => {
    if (!cursor) return [];
    const index = ledger.findIndex((e) => e.cursor === cursor);
    return ledger.slice(index + 1);
  };
  const open = (afterCursor) => {
    const stream = new FakeStream(afterCursor);
    opens.push(afterCursor);
    streams.push(stream);
    const step = plan.shift();
    setImmediate(() => {
      if (stream.finished) return;
      if (!step) {
        stream.fail(status.INTERNAL, 'UNPLANNED_STREAM');
        return;
      }
      const start = afterCursor || head();
      const opened = step.header !== false;
      if (opened) stream.header(start);
      const events = opened ? after(start) : [];  // never opened: nothing
      stream.send(events.slice(0, step.events ?? events.length));
      if (step.fail) stream.fail(...step.fail);
      else if (step.end) stream.end();
    });
    return stream;
  };
  return {open, opens, streams};
}

// A fake clock: wait() advances it at once.
function clock() {
  const fake = {time: 0, sleeps: []};
  fake.now = () => fake.time;
  fake.wait = async (ms) => {
    fake.sleeps.push(ms);
    fake.time += ms;
  };
  return fake;
}

const policy = (fields = {}) => retryPolicy({jitter: 0, ...fields},
    DEFAULT_WATCH_RETRY);

// An onRetry hook that remembers its calls and may act on them.
function recorder(action = null) {
  const calls = [];
  const hook = async (attempt, error, delayMs) => {
    calls.push({attempt, error, delayMs});
    if (action) await action(attempt, error);
  };
  hook.calls = calls;
  return hook;
}

// Reads `count` events, or until the watch ends or fails. A watch that
// waits for events that never come fails the test after timeoutMs (a
// deadline, not a wait: a correct watch never comes near it).
async function read(watch, count, {timeoutMs = 5000} = {}) {
  const events = [];
  const iterator = watch[Symbol.asyncIterator]();
  let timer;
  const stuck = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(
        `the watch handed over ${events.length} of ${count} events ` +
        `within ${timeoutMs} ms: ${events.map((e) => e.cursor)}`)),
    timeoutMs);
  });
  try {
    while (events.length < count) {
      const {value, done} = await Promise.race([iterator.next(), stuck]);
      if (done) break;
      events.push(value);
    }
  } finally {
    clearTimeout(timer);
  }
  return events;
}

// Resolves once condition() holds; fails the test after timeoutMs.
async function until(condition, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
}

async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('the watch did not fail');
}

const UNAVAILABLE = [status.UNAVAILABLE, '', null];
const SHUTTING_DOWN = [status.UNAVAILABLE, 'SHUTTING_DOWN', null];

describe('PayoutWatch', {timeout: 10000}, () => {
  it('has the watch policy of docs/client-retries.md', () => {
    assert.equal(DEFAULT_WATCH_RETRY.maxAttempts, 30);
    assert.equal(DEFAULT_WATCH_RETRY.maxElapsedMs, 300000);
    assert.equal(DEFAULT_WATCH_RETRY.maxBackoffMs, 10000);
    for (const key of ['initialBackoffMs', 'multiplier', 'jitter']) {
      assert.equal(DEFAULT_WATCH_RETRY[key], DEFAULT_RETRY[key], key);
    }
    assert.ok(Object.isFrozen(DEFAULT_WATCH_RETRY));
    // A partial policy takes the rest from the watch defaults.
    const partial = retryPolicy({maxAttempts: 3}, DEFAULT_WATCH_RETRY);
    assert.equal(partial.maxAttempts, 3);
    assert.equal(partial.maxElapsedMs, 300000);
  });

  it('resumes from the header cursor before the first event', async () => {
    const ledger = [event(1), event(2)];
    const hook = recorder(() => ledger.push(event(3), event(4)));
    const gateway = fakeGateway(ledger, [
      {fail: SHUTTING_DOWN},  // the header (c2), then no event
      {},
    ]);
    const fake = clock();
    const watch = new PayoutWatch(gateway.open, policy({onRetry: hook}),
        {now: fake.now, wait: fake.wait});
    try {
      assert.equal(watch.cursor, null);
      const events = await read(watch, 2);
      assert.deepEqual(events.map((e) => e.cursor), ['c3', 'c4']);
      assert.deepEqual(gateway.opens, [null, 'c2']);
      assert.equal(watch.cursor, 'c4');
      assert.equal(hook.calls.length, 1);
      assert.equal(hook.calls[0].error.reason, 'SHUTTING_DOWN');
    } finally {
      watch.close();
    }
  });

  it('takes the header cursor as soon as the stream opens', async () => {
    const gateway = fakeGateway([event(1), event(2)], [{}]);
    const watch = new PayoutWatch(gateway.open, policy());
    try {
      // No event yet, nobody reading: the header alone says where it is.
      await new Promise((resolve) => {
        gateway.streams[0].once('metadata', () => setImmediate(resolve));
      });
      assert.equal(watch.cursor, 'c2');
    } finally {
      watch.close();
    }
  });

  it('resumes after the last event handed over, never repeating one',
      async () => {
        const ledger = [1, 2, 3, 4, 5].map(event);
        const hook = recorder((attempt) => {
          if (hook.calls.length === 2) ledger.push(event(6), event(7));
        });
        const gateway = fakeGateway(ledger, [
          {events: 2, fail: UNAVAILABLE},  // c2, c3, then a broken connection
          {events: 2, end: true},  // c4, c5, then an end without an error
          {},  // c6, c7 and on
        ]);
        const fake = clock();
        const watch = new PayoutWatch(gateway.open, policy({onRetry: hook}),
            {afterCursor: 'c1', now: fake.now, wait: fake.wait});
        try {
          assert.equal(watch.cursor, 'c1');
          const events = await read(watch, 6);
          assert.deepEqual(events.map((e) => e.cursor),
              ['c2', 'c3', 'c4', 'c5', 'c6', 'c7']);
          assert.deepEqual(gateway.opens, ['c1', 'c3', 'c5']);
          assert.deepEqual(hook.calls.map((c) => c.attempt), [1, 1]);
          assert.equal(hook.calls[1].error.code, status.UNAVAILABLE);
          assert.equal(watch.cursor, 'c7');
        } finally {
          watch.close();
        }
      });

  it('hands over events received before an error, then resumes after them',
      async () => {
        const ledger = [1, 2, 3, 4].map(event);
        const gateway = fakeGateway(ledger, [{events: 2, fail: UNAVAILABLE},
          {}]);
        const fake = clock();
        const watch = new PayoutWatch(gateway.open, policy(),
            {afterCursor: 'c1', now: fake.now, wait: fake.wait});
        try {
          // c2, c3 and the error all arrive before anything is read.
          await new Promise((resolve) => {
            gateway.streams[0].once('status', () => setImmediate(resolve));
          });
          const events = await read(watch, 3);
          assert.deepEqual(events.map((e) => e.cursor), ['c2', 'c3', 'c4']);
          assert.deepEqual(gateway.opens, ['c1', 'c3']);
        } finally {
          watch.close();
        }
      });

  it('gives up after maxAttempts failed reconnections in a row',
      async () => {
        const ledger = [1, 2, 3].map(event);
        const hook = recorder();
        const gateway = fakeGateway(ledger, [
          {events: 1, fail: UNAVAILABLE},  // opened: c2
          {header: false, fail: UNAVAILABLE},
          {events: 0, fail: SHUTTING_DOWN},  // opened: the count starts again
          {header: false, fail: UNAVAILABLE},
          {header: false, fail: UNAVAILABLE},
          {},
        ]);
        const fake = clock();
        const watch = new PayoutWatch(gateway.open,
            policy({maxAttempts: 3, onRetry: hook}),
            {afterCursor: 'c1', now: fake.now, wait: fake.wait});
        const error = await failure(read(watch, 10));
        assert.ok(error instanceof PayoutError);
        assert.equal(error.code, status.UNAVAILABLE);
        assert.equal(error.attempts, 3);
        assert.equal(gateway.opens.length, 5);
        assert.deepEqual(gateway.opens, ['c1', 'c2', 'c2', 'c2', 'c2']);
        assert.deepEqual(hook.calls.map((c) => c.attempt), [1, 2, 1, 2]);
        assert.deepEqual(fake.sleeps, [500, 1000, 500, 1000]);
        assert.equal(watch.cursor, 'c2', 'still says where to resume');
      });

  it('gives up when failed reconnections in a row take too long',
      async () => {
        const down = {header: false, fail: UNAVAILABLE};
        const gateway = fakeGateway([event(1)], [down, down, down,
          {events: 0, fail: UNAVAILABLE},  // opened: the time starts again
          down, down, down, down]);
        const fake = clock();
        const watch = new PayoutWatch(gateway.open, policy({
          maxAttempts: 100, initialBackoffMs: 1000, maxBackoffMs: 1000,
          maxElapsedMs: 3500}), {now: fake.now, wait: fake.wait});
        const error = await failure(read(watch, 1));
        assert.equal(error.attempts, 4);
        assert.equal(gateway.opens.length, 7);
        assert.deepEqual(fake.sleeps, Array(6).fill(1000));
      });

  it('waits the backoff, never less than RetryInfo, capped at maxBackoffMs',
      async () => {
        const overloaded = {header: false,
          fail: [status.RESOURCE_EXHAUSTED, 'OVERLOADED', 1000]};
        const down = {header: false, fail: UNAVAILABLE};
        const gateway = fakeGateway([event(1), event(2)],
            [overloaded, down, down, down, down, down, {}]);
        const fake = clock();
        const watch = new PayoutWatch(gateway.open, policy(),
            {afterCursor: 'c1', now: fake.now, wait: fake.wait});
        try {
          assert.deepEqual((await read(watch, 1)).map((e) => e.cursor),
              ['c2']);
          assert.deepEqual(fake.sleeps, [1000, 1000, 2000, 4000, 8000,
            10000]);
        } finally {
          watch.close();
        }
      });

  it('never retries CURSOR_EXPIRED, INVALID_ARGUMENT and the like',
      async () => {
        for (const [code, reason] of [
          [status.OUT_OF_RANGE, 'CURSOR_EXPIRED'],
          [status.INVALID_ARGUMENT, 'INVALID_REQUEST'],
          [status.UNAUTHENTICATED, 'UNAUTHENTICATED'],
          [status.PERMISSION_DENIED, 'PERMISSION_DENIED'],
          [status.UNIMPLEMENTED, ''],
          [status.RESOURCE_EXHAUSTED, 'CLIENT_LIMIT_EXCEEDED'],
          [status.DEADLINE_EXCEEDED, ''],
          [status.INTERNAL, ''],
          [status.CANCELLED, ''],
        ]) {
          const hook = recorder();
          const gateway = fakeGateway([event(1)], [
            {header: false, fail: [code, reason, null]}, {}]);
          const fake = clock();
          const watch = new PayoutWatch(gateway.open,
              policy({onRetry: hook}),
              {afterCursor: 'c1', now: fake.now, wait: fake.wait});
          const error = await failure(read(watch, 1));
          assert.ok(error instanceof PayoutError, String(error));
          assert.equal(error.code, code);
          assert.equal(error.reason, reason);
          assert.equal(error.attempts, 1);
          assert.equal(gateway.opens.length, 1, String(error));
          assert.equal(hook.calls.length, 0);
          assert.equal(watch.cursor, 'c1');
          // A failed watch stays ended.
          assert.deepEqual(await read(watch, 1), []);
        }
      });

  it('raises CURSOR_EXPIRED after the events that came before it',
      async () => {
        const gateway = fakeGateway([1, 2, 3].map(event), [
          {events: 1, fail: [status.OUT_OF_RANGE, 'CURSOR_EXPIRED', null]}]);
        const watch = new PayoutWatch(gateway.open, policy(),
            {afterCursor: 'c1'});
        const iterator = watch[Symbol.asyncIterator]();
        assert.equal((await iterator.next()).value.cursor, 'c2');
        const error = await failure(iterator.next());
        assert.equal(error.reason, 'CURSOR_EXPIRED');
        assert.equal(watch.cursor, 'c2');
      });

  it('gives the first error as is without retries', async () => {
    for (const step of [{header: false, fail: UNAVAILABLE},
      {fail: SHUTTING_DOWN}, {end: true}]) {
      for (const none of [NO_RETRY, retryPolicy(false), retryPolicy(null)]) {
        const gateway = fakeGateway([event(1)], [{...step}, {}]);
        const watch = new PayoutWatch(gateway.open, none);
        const error = await failure(read(watch, 1));
        // An end without an error is UNAVAILABLE too: a watch never ends
        // by itself.
        assert.equal(error.code, status.UNAVAILABLE);
        assert.equal(error.reason, step.fail ? step.fail[1] : '');
        assert.equal(error.attempts, 1);
        assert.equal(gateway.opens.length, 1);
      }
    }
  });

  it('ends the iteration on close(), cancelling the stream', async () => {
    const gateway = fakeGateway([event(1)], [{}]);
    const watch = new PayoutWatch(gateway.open, policy(),
        {afterCursor: 'c1'});
    const iterator = watch[Symbol.asyncIterator]();
    const next = iterator.next();  // waits: no event comes
    await new Promise((resolve) => setImmediate(resolve));
    watch.close();
    assert.deepEqual(await next, {value: undefined, done: true});
    assert.equal(gateway.streams[0].cancelled, true);
    assert.equal(gateway.opens.length, 1);
    assert.deepEqual(await iterator.next(), {value: undefined, done: true});
    watch.close();  // twice is harmless
  });

  it('ends on close() during a backoff, without reconnecting', async () => {
    const gateway = fakeGateway([event(1)], [
      {header: false, fail: UNAVAILABLE}, {}]);
    let watch = null;
    const hook = recorder(() => watch.close());
    watch = new PayoutWatch(gateway.open, policy({onRetry: hook,
      initialBackoffMs: 60000}));
    const started = Date.now();
    assert.deepEqual(await read(watch, 1), []);
    assert.ok(Date.now() - started < 30000, 'did not wait the backoff');
    assert.equal(gateway.opens.length, 1);
    assert.equal(hook.calls.length, 1);
  });

  it('ends on break, cancelling the stream', async () => {
    const gateway = fakeGateway([1, 2, 3, 4].map(event), [{}]);
    const watch = new PayoutWatch(gateway.open, policy(),
        {afterCursor: 'c1'});
    const seen = [];
    for await (const e of watch) {
      seen.push(e.cursor);
      if (seen.length === 2) break;
    }
    assert.deepEqual(seen, ['c2', 'c3']);
    assert.equal(watch.cursor, 'c3', 'the last event handed over');
    assert.equal(gateway.streams[0].cancelled, true);
    assert.equal(gateway.opens.length, 1);
    for await (const _ of watch) assert.fail('the watch was closed');
  });

  it('pauses the stream while events wait unread', async () => {
    const ledger = Array.from({length: 50}, (_, i) => event(i + 1));
    const gateway = fakeGateway(ledger, [{}]);
    const watch = new PayoutWatch(gateway.open, policy(),
        {afterCursor: 'c1'});
    try {
      const stream = () => gateway.streams[0];
      await until(() => stream() && stream().paused, 'the stream paused');
      // Nobody has read: the stream was paused with a few events queued.
      const queued = stream().emitted;
      assert.ok(queued > 0 && queued <= 16, String(queued));
      assert.equal(stream().pending.length, 49 - queued);
      const events = await read(watch, 49);
      assert.deepEqual(events.map((e) => e.cursor),
          ledger.slice(1).map((e) => e.cursor));
      assert.ok(stream().pauses >= 3, String(stream().pauses));
      assert.ok(stream().resumes >= stream().pauses - 1);
      assert.equal(stream().paused, false, 'caught up: resumed');
    } finally {
      watch.close();
    }
  });
});

describe('watchPayouts', {timeout: 10000}, () => {
  // A client whose WatchPayouts streams come from fakeGateway, through the
  // real serializers.
  function fakeClient(plan, options = {}) {
    const client = new PayoutClient('127.0.0.1:1', options);
    const gateway = fakeGateway([1, 2, 3].map(event), plan);
    const calls = [];
    client._client.makeServerStreamRequest = (path, serialize, deserialize,
        request, metadata, callOptions) => {
      const method = path.split('/').pop();
      const decoded = client._methods[method].requestDeserialize(
          serialize(request));
      calls.push({method, request: decoded, metadata, callOptions});
      return gateway.open(decoded.afterCursor);
    };
    return {client, calls, gateway};
  }

  it('sends the states, the cursor and the metadata, with no deadline',
      async () => {
        const {client, calls} = fakeClient([
          {events: 1, fail: UNAVAILABLE}, {}],
        {token: 't', allowInsecureToken: true});
        const watch = client.watchPayouts({states: ['ACCEPTED',
          'PAYOUT_STATE_FAILED'], afterCursor: 'c1',
        metadata: {'x-trace': 'abc'}, retry: {initialBackoffMs: 0}});
        try {
          assert.ok(watch instanceof PayoutWatch);
          const events = await read(watch, 2);
          assert.deepEqual(events.map((e) => e.cursor), ['c2', 'c3']);
          assert.deepEqual(calls.map((c) => c.request.afterCursor),
              ['c1', 'c2']);
          for (const call of calls) {
            assert.equal(call.method, 'WatchPayouts');
            assert.deepEqual(call.request.states,
                ['PAYOUT_STATE_ACCEPTED', 'PAYOUT_STATE_FAILED']);
            assert.equal(call.callOptions.deadline, undefined);
            assert.deepEqual(call.metadata.get('x-trace'), ['abc']);
            assert.deepEqual(call.metadata.get('authorization'),
                ['Bearer t']);
          }
        } finally {
          watch.close();
          client.close();
        }
      });

  it('starts from now without a cursor', async () => {
    const {client, calls} = fakeClient([{}]);
    const watch = client.watchPayouts();
    try {
      await until(() => watch.cursor, 'the header');
      assert.equal(watch.cursor, 'c3');
      assert.equal(calls[0].request.afterCursor, '');
      assert.deepEqual(calls[0].request.states, []);
    } finally {
      watch.close();
      client.close();
    }
  });

  it('follows the client\'s retry: false', async () => {
    const {client, calls} = fakeClient([{fail: SHUTTING_DOWN}, {}],
        {retry: false});
    try {
      const error = await failure(read(client.watchPayouts(), 1));
      assert.equal(error.reason, 'SHUTTING_DOWN');
      assert.equal(error.attempts, 1);
      assert.equal(calls.length, 1);
    } finally {
      client.close();
    }
  });

  it('refuses unknown options and states', () => {
    const client = new PayoutClient('127.0.0.1:1');
    try {
      assert.throws(() => client.watchPayouts({after_cursor: 'c1'}),
          TypeError);
      assert.throws(() => client.watchPayouts({states: ['SETTLED']}),
          TypeError);
      assert.throws(() => client.watchPayouts({retry: {maxAttempts: 0}}),
          RangeError);
    } finally {
      client.close();
    }
  });
});
