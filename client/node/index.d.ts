// Type declarations of aopay-payouts, the Node.js client of the AOPay payout
// gateway. Field names are the proto's in camelCase; int64 fields are
// decimal strings (as in the protobuf JSON mapping); enums are their names.

import {status as GrpcStatus} from '@grpc/grpc-js';

export type TransferMode =
  | 'TRANSFER_MODE_UNSPECIFIED' | 'TRANSFER_MODE_NEFT' | 'TRANSFER_MODE_IMPS';

export type PayoutState =
  | 'PAYOUT_STATE_UNSPECIFIED' | 'PAYOUT_STATE_PENDING'
  | 'PAYOUT_STATE_ACCEPTED' | 'PAYOUT_STATE_SUCCEEDED'
  | 'PAYOUT_STATE_FAILED' | 'PAYOUT_STATE_REVERSED' | 'PAYOUT_STATE_UNKNOWN'
  | 'PAYOUT_STATE_AWAITING_APPROVAL' | 'PAYOUT_STATE_CANCELLED';

/** A mode as 'IMPS' / 'NEFT', its full name, or its number. */
export type TransferModeInput = 'IMPS' | 'NEFT' | TransferMode | number;
/** A state as 'UNKNOWN', 'ACCEPTED', ..., its full name, or its number. */
export type PayoutStateInput =
  | 'PENDING' | 'ACCEPTED' | 'SUCCEEDED' | 'FAILED' | 'REVERSED' | 'UNKNOWN'
  | 'AWAITING_APPROVAL' | 'CANCELLED' | PayoutState | number;

export interface Beneficiary {
  accountNumber: string;
  ifsc: string;
  name: string;
  email: string;
  mobile: string;
}

export interface CreatePayoutRequest {
  /** The idempotency key: 1 to 64 of A-Z a-z 0-9 _ - (a UUID fits). */
  requestId: string;
  beneficiary: Beneficiary;
  /** Paise (100 paise = 1 rupee). */
  amountPaise: number | string;
  mode: TransferModeInput;
  /** Your own references (an invoice number, an employee id): at most 16
   * keys. Returned on the Payout, part of the request id's fingerprint
   * (other metadata under the same request id is REQUEST_ID_REUSED), never
   * sent to AOPay. */
  metadata?: Record<string, string> | Map<string, string>;
}

/** An approval, a rejection or a cancel of a payout AWAITING_APPROVAL. */
export interface DecisionRequest {
  payoutId: string;
  /** Why: required to approve or reject, optional to cancel; kept for
   * audit. */
  note?: string;
}

export interface Timestamp {
  seconds: string;
  nanos: number;
}

export interface Any {
  typeUrl?: string;
  type_url?: string;
  value: Buffer;
}

/** google.rpc.Status. */
export interface RpcStatus {
  code: number;
  message: string;
  details: Any[];
}

export interface Payout {
  payoutId: string;
  requestId: string;
  state: PayoutState;
  beneficiary: Beneficiary;
  amountPaise: string;
  mode: TransferMode;
  transactionId: string;
  transactionReferenceNo: string;
  upstreamStatus: string;
  bankBeneficiaryName: string;
  /** Why the payout failed (state FAILED); PayoutError.fromStatus reads it. */
  failure: RpcStatus | null;
  createTime: Timestamp | null;
  updateTime: Timestamp | null;
  /** The client that created the payout ('' without a clients file). */
  client: string;
  /** The metadata of the request that created the payout ({} if none). */
  metadata: Record<string, string>;
}

export interface ListPayoutsResponse {
  payouts: Payout[];
  nextPageToken: string;
}

/** One state change of one payout (WatchPayouts). */
export interface PayoutEvent {
  /** Opaque; resume after it with `afterCursor`. */
  cursor: string;
  /** The payout after the change: its state and updateTime are the
   * change's (docs/api.md#watchpayouts says when its other fields were
   * read). */
  payout: Payout;
  /** The state before the change ('PAYOUT_STATE_UNSPECIFIED' for a new
   * payout). */
  previousState: PayoutState;
  /** When the change was recorded. */
  eventTime: Timestamp | null;
  /** Who made the change: 'gateway', 'approver NAME', 'client NAME', ...
   * (docs/api.md#watchpayouts). */
  who: string;
  /** The note given with an approval, rejection, cancellation or an
   * operator's resolution; '' otherwise. */
  note: string;
  /** What happened, in the gateway's words (for reading, not matching). */
  why: string;
}

export interface FieldViolation {
  field: string;
  description: string;
}

/** A failed call, decoded from its google.rpc.Status. */
export class PayoutError extends Error {
  /** The gRPC status code (see `status`). */
  code: number;
  /** The code's name, such as 'INVALID_ARGUMENT'. */
  codeName: string;
  /** The status message, for people (match on code and reason). */
  details: string;
  /** The ErrorInfo reason ('INVALID_REQUEST', 'OUTCOME_UNKNOWN', ...); ''
   * when the error did not come from the gateway. */
  reason: string;
  /** The ErrorInfo domain ('payout.aopay.v1'), or ''. */
  domain: string;
  /** The ErrorInfo metadata: payoutId, upstreamHttpStatus, upstreamSubCode,
   * upstreamMessage, limit, remainingPaise. */
  metadata: Record<string, string>;
  /** Every rule the request broke (google.rpc.BadRequest). */
  fieldViolations: FieldViolation[];
  /** RetryInfo's delay in milliseconds, or null. */
  retryDelayMs: number | null;
  /** The request id of the CreatePayout or batch request, or ''. */
  requestId: string;
  /** How many attempts were made. */
  attempts: number;
  /** The decoded google.rpc.Status, or null. */
  status: RpcStatus | null;
  /** metadata.payoutId, or ''. */
  readonly payoutId: string;
  /** reason === 'OUTCOME_UNKNOWN': never send the payout again under a new
   * request id until it is settled. */
  readonly outcomeUnknown: boolean;

  static fromStatus(status: RpcStatus,
                    options?: {requestId?: string; attempts?: number}):
      PayoutError;
  static fromGrpcError(error: unknown,
                       options?: {requestId?: string; attempts?: number}):
      PayoutError;
}

export interface RetryPolicy {
  /** Attempts in all, the first one included. Default 5. */
  maxAttempts: number;
  /** The base wait before the first retry. Default 500. */
  initialBackoffMs: number;
  /** The base wait grows by this factor each retry. Default 2. */
  multiplier: number;
  /** The base wait never grows beyond this. Default 10000. */
  maxBackoffMs: number;
  /** The wait is scaled by a random factor in [1 - jitter, 1 + jitter].
   * Default 0.2. */
  jitter: number;
  /** No retry is made whose wait would end more than this long after the
   * first attempt began. Default 60000. */
  maxElapsedMs: number;
  /** Called (and awaited) before waiting delayMs for attempt + 1. */
  onRetry: ((attempt: number, error: PayoutError, delayMs: number) =>
      void | Promise<void>) | null;
}

/** `false`/null: one attempt; `true`/undefined: the defaults; an object:
 * the defaults for what it leaves out. */
export type RetryOption = boolean | null | Partial<RetryPolicy>;

export interface ClientOptions {
  /** Use TLS, trusting this CA: PEM as a Buffer, or a file path. With
   * `tls: true` and no rootCerts, the system's CAs. */
  rootCerts?: Buffer | string | null;
  /** Client certificate and key for mTLS (Buffer or file path). */
  certChain?: Buffer | string | null;
  privateKey?: Buffer | string | null;
  /** Use TLS; implied by any of the three above. */
  tls?: boolean;
  /** The name to check the server's certificate against, when it is not
   * the host in the target. */
  tlsServerName?: string | null;
  /** A bearer token, sent as "authorization: Bearer <token>". */
  token?: string | null;
  /** Send the token without TLS (a gateway with --allow_insecure_tokens on
   * loopback). */
  allowInsecureToken?: boolean;
  /** The retry policy (docs/client-retries.md); on by default. `false`
   * also keeps watches from reconnecting; a policy object applies to the
   * other calls only (watches have DEFAULT_WATCH_RETRY). */
  retry?: RetryOption;
  /** Per-attempt deadline of CreatePayout and ApprovePayout (both may call
   * AOPay). Default 60000. */
  createTimeoutMs?: number;
  /** Per-attempt deadline of the other unary calls. Default 30000. */
  timeoutMs?: number;
  /** Extra gRPC channel arguments. */
  channelOptions?: Record<string, string | number>;
}

export interface CallOptions {
  /** The deadline of each attempt (of each stream for batchCreate). */
  timeoutMs?: number;
  /** This call's retry policy instead of the client's. */
  retry?: RetryOption;
  /** Extra request metadata. */
  metadata?: Record<string, string>;
}

export interface WatchOptions {
  /** Only events that move a payout into one of these states; none: all. */
  states?: PayoutStateInput[];
  /** The cursor of the last event the program handled (a stored
   * `watch.cursor`); none: from now on. */
  afterCursor?: string | null;
  /** The reconnection policy: DEFAULT_WATCH_RETRY by default (an object:
   * DEFAULT_WATCH_RETRY for what it leaves out); `false`: the first error
   * as is. maxAttempts and maxElapsedMs count failed reconnections in a
   * row, from the end of the last stream that opened. */
  retry?: RetryOption;
  /** Extra request metadata. */
  metadata?: Record<string, string>;
}

/** A watch of payouts' state changes (docs/client-retries.md#watching):
 * iterate it with `for await`. Every event is handed over once and in
 * order, across broken connections and gateway restarts (UNAVAILABLE,
 * OVERLOADED, a stream that ends: it reconnects after `cursor`). Any other
 * error ends the iteration as a PayoutError (with attempts):
 * OUT_OF_RANGE / CURSOR_EXPIRED, INVALID_ARGUMENT, UNAUTHENTICATED,
 * PERMISSION_DENIED, UNIMPLEMENTED, ... No deadline; events are read from
 * the gateway only as fast as they are iterated. Made by
 * PayoutClient.watchPayouts. */
export class PayoutWatch implements AsyncIterable<PayoutEvent> {
  private constructor();
  /** The resume cursor: the stream's payout-watch-cursor header until the
   * first event, then the cursor of the last event handed over. Store it
   * with what the program did and pass it as afterCursor to go on; null
   * while a watch started without a cursor has not opened yet. */
  readonly cursor: string | null;
  /** Ends the watch and its stream; an iteration ends, it does not fail.
   * A break out of `for await` does the same. */
  close(): void;
  [Symbol.asyncIterator](): AsyncGenerator<PayoutEvent, void, undefined>;
}

export interface BatchResult {
  requestId: string;
  /** Set when CreatePayout would have returned OK. */
  payout: Payout | null;
  /** Set otherwise: the error CreatePayout would have raised. */
  error: PayoutError | null;
}

export class PayoutClient {
  constructor(target: string, options?: ClientOptions);
  close(): void;
  createPayout(request: CreatePayoutRequest, options?: CallOptions):
      Promise<Payout>;
  getPayout(payoutId: string, options?: CallOptions): Promise<Payout>;
  getPayoutByRequestId(requestId: string, options?: CallOptions):
      Promise<Payout>;
  listPayoutsPage(
      request?: {states?: PayoutStateInput[]; pageSize?: number;
                 pageToken?: string},
      options?: CallOptions): Promise<ListPayoutsResponse>;
  listPayouts(request?: {states?: PayoutStateInput[]; pageSize?: number},
              options?: CallOptions): AsyncGenerator<Payout, void, undefined>;
  refreshPayout(payoutId: string, options?: CallOptions): Promise<Payout>;
  /** Cancels a payout this client created that is AWAITING_APPROVAL;
   * resolves to it, CANCELLED. Rejects with NOT_CANCELLABLE when it is not
   * awaiting approval or is another client's payout. */
  cancelPayout(request: DecisionRequest, options?: CallOptions):
      Promise<Payout>;
  batchCreate(requests: Iterable<CreatePayoutRequest>, options?: CallOptions):
      AsyncGenerator<BatchResult, void, undefined>;
  /** Never retried. */
  resolvePayout(
      request: {payoutId: string;
                state: 'ACCEPTED' | 'SUCCEEDED' | 'FAILED' | 'REVERSED' |
                    PayoutState;
                note: string; transactionId?: string},
      options?: Omit<CallOptions, 'retry'>): Promise<Payout>;
  /** Approves a payout AWAITING_APPROVAL (scope approve, not its creator;
   * note required) and resolves as CreatePayout would (ACCEPTED, ...).
   * Retried like createPayout, never after OUTCOME_UNKNOWN. Rejects with
   * SELF_APPROVAL, or NOT_AWAITING_APPROVAL (attempts > 1: an earlier
   * attempt may have approved it; read the payout). */
  approvePayout(request: DecisionRequest, options?: CallOptions):
      Promise<Payout>;
  /** Rejects a payout AWAITING_APPROVAL (same callers; note required);
   * resolves to it, CANCELLED. */
  rejectPayout(request: DecisionRequest, options?: CallOptions):
      Promise<Payout>;
  /** Follows payouts' state changes (WatchPayouts) until closed. Throws
   * TypeError for an unknown option or state. */
  watchPayouts(options?: WatchOptions): PayoutWatch;
}

export const DEFAULT_RETRY: Readonly<RetryPolicy>;
export const NO_RETRY: Readonly<RetryPolicy>;
/** A watch's reconnections: 30 attempts within 300 s, at most 10 s apart,
 * otherwise DEFAULT_RETRY. */
export const DEFAULT_WATCH_RETRY: Readonly<RetryPolicy>;
/** 'payout.aopay.v1', the domain of every ErrorInfo the gateway sends. */
export const DOMAIN: string;
export const CREATE_TIMEOUT_MS: number;
export const TIMEOUT_MS: number;
export const status: typeof GrpcStatus;

/** UNAVAILABLE, ABORTED / REQUEST_IN_PROGRESS, RESOURCE_EXHAUSTED /
 * OVERLOADED; never OUTCOME_UNKNOWN. */
export function isRetryable(error: PayoutError): boolean;
/** A fresh request id (a UUID). */
export function newRequestId(): string;
/** A complete policy; `defaults` (DEFAULT_RETRY, or DEFAULT_WATCH_RETRY for
 * a watch) fills in what an object leaves out. */
export function retryPolicy(value: RetryOption,
                            defaults?: Readonly<RetryPolicy>):
    Readonly<RetryPolicy>;
/** 'UNKNOWN' -> 'PAYOUT_STATE_UNKNOWN'. */
export function payoutState(value: PayoutStateInput): PayoutState | number;
/** 'IMPS' -> 'TRANSFER_MODE_IMPS'. */
export function transferMode(value: TransferModeInput): TransferMode | number;
/** 'PAYOUT_STATE_ACCEPTED' -> 'ACCEPTED'. */
export function stateName(state: PayoutState | string): string;
