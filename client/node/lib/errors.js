'use strict';
// PayoutError: a failed call, decoded from its google.rpc.Status.

const grpc = require('@grpc/grpc-js');
const {load} = require('./protos');

const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
const DOMAIN = 'payout.aopay.v1';
const TYPE_PREFIX = 'type.googleapis.com/';

function codeName(code) {
  const name = grpc.status[code];
  return typeof name === 'string' ? name : 'UNKNOWN';
}

function toNumber(value) {
  if (value === undefined || value === null) return 0;
  if (typeof value === 'object' && typeof value.toNumber === 'function') {
    return value.toNumber();
  }
  return Number(value);
}

class PayoutError extends Error {
  // fields: {code, message, reason, domain, metadata, fieldViolations,
  //          retryDelayMs, requestId, attempts, status}
  constructor(fields) {
    super(fields.message || '');
    this.name = 'PayoutError';
    this.code = fields.code;
    this.codeName = codeName(fields.code);
    this.details = fields.message || '';
    this.reason = fields.reason || '';
    this.domain = fields.domain || '';
    this.metadata = {...(fields.metadata || {})};
    this.fieldViolations = [...(fields.fieldViolations || [])];
    this.retryDelayMs = fields.retryDelayMs ?? null;
    this.requestId = fields.requestId || '';
    this.attempts = fields.attempts || 1;
    this.status = fields.status || null;
    this.message = this.toString();
  }

  get payoutId() {
    return this.metadata.payoutId || '';
  }

  get outcomeUnknown() {
    return this.reason === 'OUTCOME_UNKNOWN';
  }

  toString() {
    let text = this.codeName;
    if (this.reason) text += ' ' + this.reason;
    text += ': ' + this.details;
    if (this.fieldViolations.length) {
      text += ' [' + this.fieldViolations
          .map((v) => `${v.field}: ${v.description}`).join('; ') + ']';
    }
    return text;
  }

  // From a google.rpc.Status as an object: {code, message, details: [Any]}
  // (a batch answer's error, or a decoded trailer).
  static fromStatus(status, {requestId = '', attempts = 1} = {}) {
    const {rpc} = load();
    let reason = '';
    let domain = '';
    let metadata = {};
    const fieldViolations = [];
    let retryDelayMs = null;
    for (const detail of status.details || []) {
      const typeUrl = detail.typeUrl ?? detail.type_url ?? '';
      const typeName = typeUrl.startsWith(TYPE_PREFIX) ?
          typeUrl.slice(TYPE_PREFIX.length) : typeUrl;
      const value = detail.value || Buffer.alloc(0);
      try {
        if (typeName === 'google.rpc.ErrorInfo') {
          const info = rpc.ErrorInfo.toObject(rpc.ErrorInfo.decode(value),
                                              {defaults: true});
          if (!reason) {  // the gateway sends exactly one
            reason = info.reason;
            domain = info.domain;
            metadata = {...info.metadata};
          }
        } else if (typeName === 'google.rpc.BadRequest') {
          const bad = rpc.BadRequest.toObject(rpc.BadRequest.decode(value),
                                              {defaults: true});
          for (const v of bad.fieldViolations) {
            fieldViolations.push({field: v.field, description: v.description});
          }
        } else if (typeName === 'google.rpc.RetryInfo') {
          const info = rpc.RetryInfo.toObject(rpc.RetryInfo.decode(value),
                                              {defaults: true});
          const delay = info.retryDelay || {};
          retryDelayMs = toNumber(delay.seconds) * 1000 +
              toNumber(delay.nanos) / 1e6;
        }
      } catch (_) {
        // A detail that does not decode is left out; the code stays.
      }
    }
    return new PayoutError({
      code: toNumber(status.code), message: status.message, reason, domain,
      metadata, fieldViolations, retryDelayMs, requestId, attempts, status,
    });
  }

  // From a @grpc/grpc-js error, reading its grpc-status-details-bin trailer.
  static fromGrpcError(error, {requestId = '', attempts = 1} = {}) {
    const code = typeof error.code === 'number' ? error.code :
        grpc.status.UNKNOWN;
    const message = error.details ?? error.message ?? '';
    const values = error.metadata && typeof error.metadata.get === 'function' ?
        error.metadata.get(STATUS_DETAILS_KEY) : [];
    if (values.length) {
      const {rpc} = load();
      let status = null;
      try {
        status = rpc.Status.toObject(rpc.Status.decode(values[0]),
                                     {defaults: true, longs: Number});
      } catch (_) {
        status = null;  // a trailer that does not parse: code only
      }
      if (status) {
        // The call's own code and message; the trailer adds the details.
        return PayoutError.fromStatus({...status, code, message},
                                      {requestId, attempts});
      }
    }
    return new PayoutError({code, message, requestId, attempts});
  }
}

module.exports = {PayoutError, DOMAIN, STATUS_DETAILS_KEY, codeName};
