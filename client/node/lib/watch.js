'use strict';
// PayoutWatch: WatchPayouts followed across broken connections and gateway
// restarts, every event handed over once and in order
// (docs/client-retries.md#watching).

const grpc = require('@grpc/grpc-js');
const {PayoutError} = require('./errors');
const {backoffMs, isRetryable} = require('./retry');

// The initial metadata of every WatchPayouts stream: the cursor it starts
// after (docs/api.md#watchpayouts).
const WATCH_CURSOR_HEADER = 'payout-watch-cursor';
// Beyond this many events received and not yet read the stream is paused
// (the gateway is then held back by flow control); it is resumed once the
// reader has taken them all.
const MAX_QUEUED = 8;

class PayoutWatch {
  // Made by PayoutClient.watchPayouts. open(afterCursor) starts one
  // WatchPayouts stream (a grpc-js ClientReadableStream) after the cursor,
  // or from now on when it is null; policy is a complete retry policy
  // (retryPolicy()). now and wait stand in for the clock (tests).
  constructor(open, policy, {afterCursor = null, now = Date.now,
    wait = null} = {}) {
    this._open = open;
    this._policy = policy;
    this._now = now;
    this._wait = wait;
    this._cursor = afterCursor || null;
    this._queue = [];  // events received, not yet handed over
    this._stream = null;  // {call, done, error, paused}
    // The run of failed attempts, {attempts, started}; null once a stream
    // has opened, until it ends.
    this._failures = {attempts: 1, started: now()};
    this._closed = false;
    this._wake = null;  // ends the iteration's wait
    this._iterator = null;
    this._connect();
  }

  // The resume cursor: the stream's payout-watch-cursor header until the
  // first event, then the cursor of the last event handed over. null while
  // a watch started without a cursor has not opened yet.
  get cursor() {
    return this._cursor;
  }

  // Ends the watch and cancels its stream: an iteration ends (done), it
  // does not fail.
  close() {
    if (this._closed) return;
    this._closed = true;
    this._queue.length = 0;
    this._drop();
    this._signal();
  }

  [Symbol.asyncIterator]() {
    if (!this._iterator) this._iterator = this._events();
    return this._iterator;
  }

  async* _events() {
    try {
      while (!this._closed) {
        if (this._queue.length) {
          const event = this._queue.shift();
          this._cursor = event.cursor;
          this._flow();
          yield event;
        } else if (this._stream.done) {
          await this._reconnect();
        } else {
          await new Promise((resolve) => {
            this._wake = resolve;
          });
        }
      }
    } finally {
      this.close();  // a break, an error or the end
    }
  }

  // Starts a stream after the resume cursor. Nothing is queued then: a
  // stream is replaced only once every event of the last was handed over.
  _connect() {
    const call = this._open(this._cursor);
    const stream = {call, done: false, error: null, paused: false};
    this._stream = stream;
    const live = () => this._stream === stream && !stream.done;
    const end = (error) => {
      if (!live()) return;
      stream.done = true;
      stream.error = error;
      this._signal();
    };
    call.on('metadata', (metadata) => {
      const values = metadata.get(WATCH_CURSOR_HEADER);
      if (!live() || !values.length) return;
      this._cursor = String(values[0]);
      this._failures = null;
    });
    call.on('data', (event) => {
      if (!live()) return;
      this._failures = null;
      this._queue.push(event);
      if (this._queue.length > MAX_QUEUED && !stream.paused) {
        stream.paused = true;
        call.pause();
      }
      this._signal();
    });
    // 'error' comes first with a failed status; events still buffered in
    // the stream are read again by the next one.
    call.on('error', (error) => end(PayoutError.fromGrpcError(error)));
    call.on('status', (status) => end(status.code === grpc.status.OK ?
        null : PayoutError.fromGrpcError(status)));
    call.on('end', () => end(null));
  }

  // The stream ended: raises its error, or opens the next stream after
  // the backoff. An end without an error is retried as UNAVAILABLE.
  async _reconnect() {
    const error = this._stream.error || new PayoutError({
      code: grpc.status.UNAVAILABLE,
      message: 'the watch stream ended without an error',
    });
    this._drop();
    if (!this._failures) this._failures = {attempts: 1, started: this._now()};
    const {attempts, started} = this._failures;
    const policy = this._policy;
    error.attempts = attempts;
    if (attempts >= policy.maxAttempts || !isRetryable(error)) throw error;
    const delay = backoffMs(policy, attempts, error.retryDelayMs);
    if (this._now() + delay - started > policy.maxElapsedMs) throw error;
    if (policy.onRetry) await policy.onRetry(attempts, error, delay);
    if (!this._closed) await this._sleep(delay);
    if (this._closed) return;
    this._failures.attempts++;
    this._connect();
  }

  // Lets the current stream go; its later events are ignored.
  _drop() {
    const stream = this._stream;
    if (!stream) return;
    this._stream = null;
    stream.call.cancel();  // nothing, if it has ended
  }

  // Resumes a paused stream once the reader has caught up.
  _flow() {
    const stream = this._stream;
    if (stream && stream.paused && !this._queue.length) {
      stream.paused = false;
      stream.call.resume();
    }
  }

  _signal() {
    const wake = this._wake;
    this._wake = null;
    if (wake) wake();
  }

  // Resolves after ms, or at once when the watch is closed.
  _sleep(ms) {
    return new Promise((resolve) => {
      let timer = null;
      const done = () => {
        clearTimeout(timer);
        if (this._wake === done) this._wake = null;
        resolve();
      };
      this._wake = done;
      if (this._wait) {
        this._wait(ms).then(done, done);
      } else {
        timer = setTimeout(done, ms);
      }
    });
  }
}

module.exports = {PayoutWatch, WATCH_CURSOR_HEADER};
