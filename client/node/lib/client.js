'use strict';
// PayoutClient: the gateway's PayoutService and PayoutAdminService, with
// promises.

const crypto = require('crypto');
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const {load} = require('./protos');
const {PayoutError} = require('./errors');
const {
  DEFAULT_WATCH_RETRY, NO_RETRY, backoffMs, callWithRetries, isRetryable,
  retryPolicy, sleep,
} = require('./retry');
const {PayoutWatch} = require('./watch');

// Per-attempt deadline of CreatePayout and ApprovePayout: longer than the
// gateway's default --upstream_timeout (30 s) plus a margin.
const CREATE_TIMEOUT_MS = 60000;
// Per-attempt deadline of the other unary calls.
const TIMEOUT_MS = 30000;

// A fresh request id (a UUID). Make it when you decide to pay, store it with
// your own record of the payment, then call createPayout.
function newRequestId() {
  return crypto.randomUUID();
}

function enumName(names, prefix, value, what) {
  if (typeof value === 'number' && Number.isInteger(value)) return value;
  if (typeof value === 'string') {
    const upper = value.toUpperCase();
    const name = upper.startsWith(prefix) ? upper : prefix + upper;
    if (names.has(name)) return name;
  }
  throw new TypeError(`unknown ${what} ${JSON.stringify(value)}`);
}

// 'IMPS' -> 'TRANSFER_MODE_IMPS' (full names and numbers pass through).
const transferMode = (value) => enumName(load().enums.TransferMode,
    'TRANSFER_MODE_', value, 'transfer mode');
// 'UNKNOWN' -> 'PAYOUT_STATE_UNKNOWN'.
const payoutState = (value) => enumName(load().enums.PayoutState,
    'PAYOUT_STATE_', value, 'payout state');
// 'PAYOUT_STATE_ACCEPTED' -> 'ACCEPTED'.
const stateName = (state) => String(state).replace(/^PAYOUT_STATE_/, '');

// PEM from a Buffer, or from the file a string names.
function pem(value) {
  if (value === undefined || value === null) return null;
  if (Buffer.isBuffer(value)) return value;
  return fs.readFileSync(value);
}

// The payout's metadata: a plain object (or a Map) of strings to strings.
function payoutMetadata(metadata) {
  if (metadata === undefined || metadata === null) return {};
  const entries = metadata instanceof Map ? [...metadata.entries()] :
      typeof metadata === 'object' && !Array.isArray(metadata) ?
      Object.entries(metadata) : null;
  if (entries === null) {
    throw new TypeError('metadata is the payout\'s own references, an ' +
                        'object of strings to strings');
  }
  for (const [key, value] of entries) {
    if (typeof key !== 'string' || typeof value !== 'string') {
      throw new TypeError('metadata keys and values must be strings');
    }
  }
  return Object.fromEntries(entries);
}

function createRequest(request) {
  if (!request || typeof request !== 'object') {
    throw new TypeError('a CreatePayoutRequest object is required');
  }
  const {requestId, beneficiary, amountPaise, mode, metadata, ...rest} =
      request;
  const unknown = Object.keys(rest);
  if (unknown.length) {
    throw new TypeError('unknown CreatePayoutRequest fields: ' +
                        unknown.sort().join(', '));
  }
  if (!requestId) {
    throw new TypeError('requestId is required: make one when you decide ' +
                        'to pay (newRequestId()), store it, then send');
  }
  return {
    requestId,
    beneficiary: beneficiary || {},
    amountPaise: amountPaise ?? 0,
    mode: mode === undefined ? 'TRANSFER_MODE_UNSPECIFIED' :
        transferMode(mode),
    metadata: payoutMetadata(metadata),
  };
}

// {payoutId, note} of an approval, a rejection or a cancel.
function decision(request, what) {
  if (!request || typeof request !== 'object') {
    throw new TypeError(`${what} takes {payoutId, note}`);
  }
  const {payoutId, note = '', ...rest} = request;
  const unknown = Object.keys(rest);
  if (unknown.length) {
    throw new TypeError(`unknown ${what} fields: ` + unknown.sort().join(', '));
  }
  return {payoutId, note};
}

class PayoutClient {
  // target: 'HOST:PORT'. options: {rootCerts, certChain, privateKey, tls,
  // tlsServerName, token, allowInsecureToken, retry, createTimeoutMs,
  // timeoutMs, channelOptions} (index.d.ts says what each does).
  constructor(target, options = {}) {
    const {
      rootCerts = null, certChain = null, privateKey = null,
      tlsServerName = null, token = null, allowInsecureToken = false,
      retry = undefined, createTimeoutMs = CREATE_TIMEOUT_MS,
      timeoutMs = TIMEOUT_MS, channelOptions = {},
    } = options;
    if (!target) throw new TypeError('target (HOST:PORT) is required');
    if ((certChain === null) !== (privateKey === null)) {
      throw new TypeError('certChain and privateKey go together');
    }
    const tls = options.tls ??
        (rootCerts !== null || certChain !== null || privateKey !== null);
    if (token && !tls && !allowInsecureToken) {
      throw new TypeError('a bearer token needs TLS (or ' +
                          'allowInsecureToken: true for loopback)');
    }
    const credentials = tls ?
        grpc.credentials.createSsl(pem(rootCerts), pem(privateKey),
            pem(certChain)) :
        grpc.credentials.createInsecure();
    const channelArgs = {...channelOptions};
    if (tlsServerName) {
      channelArgs['grpc.ssl_target_name_override'] = tlsServerName;
      channelArgs['grpc.default_authority'] = tlsServerName;
    }
    this._client = new grpc.Client(target, credentials, channelArgs);
    this._token = token;
    this._retry = retryPolicy(retry);
    // A client without retries makes watches that do not reconnect either;
    // otherwise a watch has its own policy.
    this._watchRetry = this._retry === NO_RETRY ? NO_RETRY :
        DEFAULT_WATCH_RETRY;
    this._createTimeoutMs = createTimeoutMs;
    this._timeoutMs = timeoutMs;
    const {services} = load();
    this._methods = {...services.PayoutService,
      ...services.PayoutAdminService};
  }

  close() {
    this._client.close();
  }

  _policy(retry) {
    return retry === undefined ? this._retry : retryPolicy(retry);
  }

  _metadata(extra) {
    const metadata = new grpc.Metadata();
    if (this._token) metadata.set('authorization', 'Bearer ' + this._token);
    for (const [key, value] of Object.entries(extra || {})) {
      metadata.set(key, value);
    }
    return metadata;
  }

  _unaryOnce(name, request, timeoutMs, metadata, requestId) {
    const method = this._methods[name];
    return new Promise((resolve, reject) => {
      this._client.makeUnaryRequest(
          method.path, method.requestSerialize, method.responseDeserialize,
          request, this._metadata(metadata),
          {deadline: Date.now() + timeoutMs},
          (error, response) => {
            if (error) {
              reject(PayoutError.fromGrpcError(error, {requestId}));
            } else {
              resolve(response);
            }
          });
    });
  }

  _unary(name, request, defaultTimeoutMs, options = {}, requestId = '') {
    const timeoutMs = options.timeoutMs || defaultTimeoutMs;
    return callWithRetries(
        () => this._unaryOnce(name, request, timeoutMs, options.metadata,
            requestId),
        this._policy(options.retry));
  }

  // Sends one payout: {requestId, beneficiary: {accountNumber, ifsc, name,
  // email, mobile}, amountPaise, mode: 'IMPS' | 'NEFT', metadata: {...}}.
  // Resolves to the recorded Payout (AWAITING_APPROVAL above the client's
  // approval_above_paise); rejects with PayoutError. Retries send the same
  // request with the same requestId. metadata (the caller's references,
  // strings to strings) is returned on the Payout, is part of the request
  // id's fingerprint and is never sent to AOPay.
  createPayout(request, options = {}) {
    let message;
    try {
      message = createRequest(request);
    } catch (error) {
      return Promise.reject(error);
    }
    return this._unary('CreatePayout', message, this._createTimeoutMs,
        options, message.requestId);
  }

  getPayout(payoutId, options = {}) {
    return this._unary('GetPayout', {payoutId}, this._timeoutMs, options);
  }

  getPayoutByRequestId(requestId, options = {}) {
    return this._unary('GetPayout', {requestId}, this._timeoutMs, options,
        requestId);
  }

  // One page: {payouts, nextPageToken}.
  listPayoutsPage({states = [], pageSize = 0, pageToken = ''} = {},
      options = {}) {
    const request = {states: states.map(payoutState), pageSize, pageToken};
    return this._unary('ListPayouts', request, this._timeoutMs, options);
  }

  // Every payout (newest first), page by page as the iteration goes on.
  async* listPayouts({states = [], pageSize = 0} = {}, options = {}) {
    let pageToken = '';
    do {
      const page = await this.listPayoutsPage({states, pageSize, pageToken},
          options);
      yield* page.payouts;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  refreshPayout(payoutId, options = {}) {
    return this._unary('RefreshPayout', {payoutId}, this._timeoutMs,
        options);
  }

  // Cancels a payout this client created that is AWAITING_APPROVAL:
  // {payoutId, note?}. Resolves to it, CANCELLED. Retried like the other
  // calls; a retry after an attempt that did cancel rejects with
  // NOT_CANCELLABLE and attempts > 1 (getPayout then shows CANCELLED).
  cancelPayout(request, options = {}) {
    return this._decide('CancelPayout', request, this._timeoutMs, options);
  }

  // Records an operator's verdict on an UNKNOWN or ACCEPTED payout (admin
  // scope). Never retried: after an error, read the payout and resolve it
  // again if it still needs it.
  resolvePayout({payoutId, state, note, transactionId = ''}, options = {}) {
    let request;
    try {
      request = {payoutId, state: payoutState(state), note, transactionId};
    } catch (error) {
      return Promise.reject(error);
    }
    return this._unary('ResolvePayout', request, this._timeoutMs,
        {...options, retry: false});
  }

  // Approves a payout AWAITING_APPROVAL ({payoutId, note}; scope approve,
  // never its creator). The gateway sends it as CreatePayout would and
  // answers as CreatePayout answers. Retried exactly like createPayout (its
  // deadline too): on the retryable errors only, never after
  // OUTCOME_UNKNOWN. NOT_AWAITING_APPROVAL with attempts > 1 may mean an
  // earlier attempt approved it: read the payout.
  approvePayout(request, options = {}) {
    return this._decide('ApprovePayout', request, this._createTimeoutMs,
        options);
  }

  // Rejects a payout AWAITING_APPROVAL ({payoutId, note}; same callers as
  // approvePayout). Resolves to it, CANCELLED. Retried like the other calls.
  rejectPayout(request, options = {}) {
    return this._decide('RejectPayout', request, this._timeoutMs, options);
  }

  _decide(name, request, timeoutMs, options) {
    let message;
    try {
      message = decision(request, name);
    } catch (error) {
      return Promise.reject(error);
    }
    return this._unary(name, message, timeoutMs, options);
  }

  // Many payouts over BatchCreatePayouts streams. Yields one
  // {requestId, payout, error} per request, in the order the gateway
  // finishes them. Requests answered with a retryable error, and those left
  // unanswered by a stream that broke with a retryable code, are sent again
  // on a new stream with the same request ids. options.timeoutMs bounds
  // each stream (none by default).
  batchCreate(requests, options = {}) {
    const pending = new Map();
    for (const item of requests) {
      const request = createRequest(item);
      if (pending.has(request.requestId)) {
        throw new TypeError(`request id ${request.requestId} appears twice ` +
                            'in the batch');
      }
      pending.set(request.requestId, request);
    }
    return this._batchRounds(pending, options, this._policy(options.retry));
  }

  async* _batchRounds(pending, options, policy) {
    const started = Date.now();
    for (let round = 1; pending.size; round++) {
      const lastErrors = new Map();
      const answered = new Set();
      let streamError = null;
      const finished = [];
      try {
        for await (const response of this._stream([...pending.values()],
            options)) {
          const requestId = response.requestId;
          if (!pending.has(requestId) || answered.has(requestId)) continue;
          answered.add(requestId);
          if (response.result === 'payout') {
            pending.delete(requestId);
            finished.push({requestId, payout: response.payout, error: null});
          } else {
            const error = PayoutError.fromStatus(response.error,
                {requestId, attempts: round});
            if (round < policy.maxAttempts && isRetryable(error)) {
              lastErrors.set(requestId, error);
            } else {
              pending.delete(requestId);
              finished.push({requestId, payout: null, error});
            }
          }
          yield* finished.splice(0);
        }
      } catch (error) {
        if (!(error instanceof PayoutError)) throw error;
        error.attempts = round;
        streamError = error;
      }

      const unanswered = [...pending.keys()].filter((r) => !answered.has(r));
      if (unanswered.length) {
        streamError = streamError || new PayoutError({
          code: grpc.status.UNKNOWN, attempts: round,
          message: 'the stream ended without answering every request',
        });
        const final = round >= policy.maxAttempts ||
            !isRetryable(streamError);
        for (const requestId of unanswered) {
          const error = forRequest(streamError, requestId);
          if (final) {
            pending.delete(requestId);
            yield {requestId, payout: null, error};
          } else {
            lastErrors.set(requestId, error);
          }
        }
      }
      if (!pending.size) return;

      const first = unanswered.length ? streamError :
          lastErrors.values().next().value;
      const delays = [...lastErrors.values()].map((e) => e.retryDelayMs)
          .filter((d) => d !== null);
      const delay = backoffMs(policy, round,
          delays.length ? Math.max(...delays) : null);
      if (Date.now() + delay - started > policy.maxElapsedMs) {
        for (const requestId of [...pending.keys()]) {
          pending.delete(requestId);
          yield {requestId, payout: null, error: lastErrors.get(requestId)};
        }
        return;
      }
      if (policy.onRetry) await policy.onRetry(round, first, delay);
      await sleep(delay);
    }
  }

  // Follows payouts' state changes (WatchPayouts): a PayoutWatch, an async
  // iterable of PayoutEvent objects, each handed over once and in order,
  // also across broken connections and gateway restarts. states: only
  // events that move a payout into one of them (none: all); afterCursor:
  // a cursor stored from an earlier watch (none: from now on); retry: the
  // watch policy (DEFAULT_WATCH_RETRY; false: the first error as is);
  // metadata: extra request metadata. No deadline: it runs until close()
  // or a break out of for await.
  watchPayouts(options = {}) {
    const {states = [], afterCursor = null, retry = undefined,
      metadata = undefined, ...rest} = options;
    const unknown = Object.keys(rest);
    if (unknown.length) {
      throw new TypeError('unknown watchPayouts options: ' +
                          unknown.sort().join(', '));
    }
    if (afterCursor !== null && typeof afterCursor !== 'string') {
      throw new TypeError('afterCursor is the cursor of an event, a string');
    }
    const request = {states: states.map(payoutState)};
    const policy = retry === undefined ? this._watchRetry :
        retryPolicy(retry, DEFAULT_WATCH_RETRY);
    const method = this._methods.WatchPayouts;
    const open = (cursor) => this._client.makeServerStreamRequest(
        method.path, method.requestSerialize, method.responseDeserialize,
        {...request, afterCursor: cursor || ''}, this._metadata(metadata),
        {});
    return new PayoutWatch(open, policy, {afterCursor});
  }

  // One BatchCreatePayouts stream: writes every request (respecting flow
  // control) while the answers are read; yields the answers, throws the
  // stream's error as a PayoutError.
  async* _stream(requests, options) {
    const method = this._methods.BatchCreatePayouts;
    const callOptions = options.timeoutMs ?
        {deadline: Date.now() + options.timeoutMs} : {};
    const call = this._client.makeBidiStreamRequest(
        method.path, method.requestSerialize, method.responseDeserialize,
        this._metadata(options.metadata), callOptions);
    let ended = false;
    const closed = new Promise((resolve) => {
      call.once('status', resolve);
      call.once('error', resolve);
    });
    const writer = (async () => {
      for (const request of requests) {
        if (ended) return;
        if (!call.write(request)) {
          await Promise.race([
            new Promise((resolve) => call.once('drain', resolve)), closed]);
        }
      }
      if (!ended) call.end();
    })();
    try {
      for await (const response of call) yield response;
    } catch (error) {
      throw PayoutError.fromGrpcError(error);
    } finally {
      ended = true;
      call.cancel();  // a consumer that stopped early ends the stream
      await writer.catch(() => {});
    }
  }
}

function forRequest(error, requestId) {
  const copy = Object.create(Object.getPrototypeOf(error),
      Object.getOwnPropertyDescriptors(error));
  copy.requestId = requestId;
  return copy;
}

module.exports = {
  PayoutClient, newRequestId, payoutState, stateName, transferMode,
  CREATE_TIMEOUT_MS, TIMEOUT_MS,
};
