"""PayoutClient: the gateway's PayoutService and PayoutAdminService."""

import collections
import collections.abc
import copy
import os
import time
import uuid

import grpc

from ._proto import payout_pb2
from .errors import PayoutError
from .retry import DEFAULT_RETRY, DEFAULT_WATCH_RETRY, NO_RETRY
from .retry import call_with_retries, is_retryable
from .watch import PayoutWatch

_PAYOUT_SERVICE = "/aopay.payout.v1.PayoutService/"
_ADMIN_SERVICE = "/aopay.payout.v1.PayoutAdminService/"

#: Per-attempt deadline of CreatePayout and ApprovePayout, in seconds: longer
#: than the gateway's default --upstream_timeout (30 s) plus a margin.
CREATE_TIMEOUT = 60.0
#: Per-attempt deadline of the other unary calls, in seconds.
READ_TIMEOUT = 30.0

_UNSET = object()

#: One answer of batch_create: the payout, or the error CreatePayout would
#: have raised (exactly one of the two is set).
BatchResult = collections.namedtuple("BatchResult",
                                     ["request_id", "payout", "error"])


def new_request_id():
    """A fresh request id (a UUID). Make it when you decide to pay, store it
    with your own record of the payment, then call create_payout."""
    return str(uuid.uuid4())


def _enum_value(enum, prefix, value, what):
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        name = value.upper()
        if not name.startswith(prefix):
            name = prefix + name
        try:
            return enum.Value(name)
        except ValueError:
            pass
    raise ValueError("unknown %s %r" % (what, value))


def transfer_mode(value):
    """TRANSFER_MODE_* from "IMPS", "NEFT", a full name or a number."""
    return _enum_value(payout_pb2.TransferMode, "TRANSFER_MODE_", value,
                       "transfer mode")


def payout_state(value):
    """PAYOUT_STATE_* from "UNKNOWN", "PAYOUT_STATE_UNKNOWN" or a number."""
    return _enum_value(payout_pb2.PayoutState, "PAYOUT_STATE_", value,
                       "payout state")


def state_name(state):
    """The short name of a payout state: 2 -> "ACCEPTED"."""
    return payout_pb2.PayoutState.Name(state)[len("PAYOUT_STATE_"):]


def _pem(value):
    """PEM bytes from bytes, or from the file a str or path names."""
    if value is None or isinstance(value, bytes):
        return value
    with open(os.fspath(value), "rb") as f:
        return f.read()


def _payout_metadata(metadata):
    """The payout's metadata as a dict of str, refusing anything else.

    Pairs such as (("authorization", "Bearer ..."),) are refused rather than
    turned into a dict: gRPC call metadata is call_metadata, and must never
    end up stored with a payout.
    """
    if not isinstance(metadata, collections.abc.Mapping):
        raise TypeError("metadata is the payout's own references, a dict of "
                        "str to str (not %s); gRPC call metadata is "
                        "call_metadata" % type(metadata).__name__)
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("metadata keys and values must be str, not "
                            "%s: %s" % (type(key).__name__,
                                        type(value).__name__))
    return dict(metadata)


def _create_request(request=None, request_id=None, beneficiary=None,
                    amount_paise=None, mode=None, metadata=None):
    if request is None:
        request = payout_pb2.CreatePayoutRequest()
    elif isinstance(request, dict):
        fields = dict(request)
        request = payout_pb2.CreatePayoutRequest()
        request_id = fields.pop("request_id", request_id)
        beneficiary = fields.pop("beneficiary", beneficiary)
        amount_paise = fields.pop("amount_paise", amount_paise)
        mode = fields.pop("mode", mode)
        metadata = fields.pop("metadata", metadata)
        if fields:
            raise ValueError("unknown CreatePayoutRequest fields: %s" %
                             ", ".join(sorted(fields)))
    elif isinstance(request, payout_pb2.CreatePayoutRequest):
        request = copy.deepcopy(request)
    else:
        raise TypeError("a CreatePayoutRequest or a dict, not %s" %
                        type(request).__name__)
    if request_id is not None:
        request.request_id = request_id
    if beneficiary is not None:
        if isinstance(beneficiary, dict):
            beneficiary = payout_pb2.Beneficiary(**beneficiary)
        request.beneficiary.CopyFrom(beneficiary)
    if amount_paise is not None:
        request.amount_paise = amount_paise
    if mode is not None:
        request.mode = transfer_mode(mode)
    if metadata is not None:
        request.metadata.clear()
        request.metadata.update(_payout_metadata(metadata))
    if not request.request_id:
        raise ValueError("request_id is required: make one when you decide "
                         "to pay (new_request_id()), store it, then send")
    return request


class PayoutClient:
    """A client of one payout gateway.

    Args:
      target: HOST:PORT of the gateway.
      root_certificates: use TLS, trusting this CA (PEM bytes, or the path
        of a PEM file). With `tls=True` and no root, the system's CAs.
      certificate_chain, private_key: the client certificate and key for
        mTLS (PEM bytes or paths).
      tls: use TLS; implied by any of the three above.
      tls_server_name: the name to check the server's certificate against
        when it is not the host in `target`.
      token: a bearer token, sent as "authorization: Bearer <token>".
      allow_insecure_token: send the token without TLS (to a gateway started
        with --allow_insecure_tokens on loopback).
      retry: the RetryPolicy (docs/client-retries.md); None for a single
        attempt. The default retries. (watch_payouts has its own policy,
        DEFAULT_WATCH_RETRY, unless this is None.)
      create_timeout: per-attempt deadline of CreatePayout and ApprovePayout
        (both may call AOPay), seconds.
      timeout: per-attempt deadline of the other unary calls, seconds.
      channel_options: extra gRPC channel arguments, (key, value) pairs.
      channel: use this grpc.Channel instead of making one (the TLS
        arguments are then ignored; the client does not close it).
    """

    def __init__(self, target=None, *, root_certificates=None,
                 certificate_chain=None, private_key=None, tls=None,
                 tls_server_name=None, token=None,
                 allow_insecure_token=False, retry=DEFAULT_RETRY,
                 create_timeout=CREATE_TIMEOUT, timeout=READ_TIMEOUT,
                 channel_options=(), channel=None):
        if (certificate_chain is None) != (private_key is None):
            raise ValueError("certificate_chain and private_key go together")
        if tls is None:
            tls = any(v is not None for v in
                      (root_certificates, certificate_chain, private_key))
        if token is not None and not tls and not allow_insecure_token:
            raise ValueError("a bearer token needs TLS (or "
                             "allow_insecure_token=True for loopback)")
        options = list(channel_options)
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        self._owns_channel = channel is None
        if channel is None:
            if target is None:
                raise ValueError("target (HOST:PORT) is required")
            if tls:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=_pem(root_certificates),
                    private_key=_pem(private_key),
                    certificate_chain=_pem(certificate_chain))
                channel = grpc.secure_channel(target, credentials, options)
            else:
                channel = grpc.insecure_channel(target, options)
        self._channel = channel
        self._metadata = (("authorization", "Bearer " + token),) if token \
            else ()
        self._retry = retry
        self._create_timeout = create_timeout
        self._timeout = timeout

        def unary(service, method, response):
            return channel.unary_unary(
                service + method,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response.FromString)

        self._create = unary(_PAYOUT_SERVICE, "CreatePayout",
                             payout_pb2.Payout)
        self._get = unary(_PAYOUT_SERVICE, "GetPayout", payout_pb2.Payout)
        self._list = unary(_PAYOUT_SERVICE, "ListPayouts",
                           payout_pb2.ListPayoutsResponse)
        self._refresh = unary(_PAYOUT_SERVICE, "RefreshPayout",
                              payout_pb2.Payout)
        self._cancel = unary(_PAYOUT_SERVICE, "CancelPayout",
                             payout_pb2.Payout)
        self._resolve = unary(_ADMIN_SERVICE, "ResolvePayout",
                              payout_pb2.Payout)
        self._approve = unary(_ADMIN_SERVICE, "ApprovePayout",
                              payout_pb2.Payout)
        self._reject = unary(_ADMIN_SERVICE, "RejectPayout",
                             payout_pb2.Payout)
        self._batch = channel.stream_stream(
            _PAYOUT_SERVICE + "BatchCreatePayouts",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=payout_pb2.BatchCreatePayoutsResponse
            .FromString)
        self._watch = channel.unary_stream(
            _PAYOUT_SERVICE + "WatchPayouts",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=payout_pb2.PayoutEvent.FromString)

    # -- plumbing ---------------------------------------------------------

    def close(self):
        """Closes the channel (unless it was given to the constructor)."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _policy(self, retry):
        policy = self._retry if retry is _UNSET else retry
        return policy or NO_RETRY

    def _call_metadata(self, call_metadata):
        return self._metadata + tuple(call_metadata or ())

    def _unary(self, rpc, request, timeout, retry, call_metadata,
               request_id=""):
        call_metadata = self._call_metadata(call_metadata)

        def attempt(_number):
            try:
                return rpc(request, timeout=timeout, metadata=call_metadata)
            except grpc.RpcError as error:
                raise PayoutError.from_rpc_error(
                    error, request_id=request_id) from None

        return call_with_retries(attempt, self._policy(retry))

    # -- PayoutService ----------------------------------------------------

    def create_payout(self, request=None, *, request_id=None,
                      beneficiary=None, amount_paise=None, mode=None,
                      metadata=None, timeout=None, retry=_UNSET,
                      call_metadata=()):
        """Sends one payout; returns the recorded Payout.

        Either a CreatePayoutRequest (or a dict of its fields), or the fields
        as keywords: request_id, beneficiary (a Beneficiary or a dict of
        account_number, ifsc, name, email, mobile), amount_paise, mode
        ("IMPS", "NEFT" or a TransferMode), and metadata (a dict of str: your
        own references, returned on the Payout, part of the request id's
        fingerprint, never sent to AOPay). Retries send the same request
        with the same request_id. Raises PayoutError.

        A payout above its client's approval_above_paise comes back in state
        AWAITING_APPROVAL: recorded, not sent until another client approves
        it (approve_payout).

        `call_metadata`: extra gRPC request metadata, (key, value) pairs
        (every method takes it).
        """
        request = _create_request(request, request_id, beneficiary,
                                  amount_paise, mode, metadata)
        return self._unary(self._create, request,
                           timeout or self._create_timeout, retry,
                           call_metadata, request_id=request.request_id)

    def get_payout(self, payout_id, *, timeout=None, retry=_UNSET,
                   call_metadata=()):
        """The payout with this payout id ("po_..."). Raises PayoutError
        (NOT_FOUND when there is none this client may see)."""
        return self._unary(self._get,
                           payout_pb2.GetPayoutRequest(payout_id=payout_id),
                           timeout or self._timeout, retry, call_metadata)

    def get_payout_by_request_id(self, request_id, *, timeout=None,
                                 retry=_UNSET, call_metadata=()):
        """The payout this client created with this request id."""
        return self._unary(self._get,
                           payout_pb2.GetPayoutRequest(request_id=request_id),
                           timeout or self._timeout, retry, call_metadata,
                           request_id=request_id)

    def list_payouts_page(self, states=(), page_size=0, page_token="", *,
                          timeout=None, retry=_UNSET, call_metadata=()):
        """One page: a ListPayoutsResponse (payouts, next_page_token)."""
        request = payout_pb2.ListPayoutsRequest(
            states=[payout_state(s) for s in states or ()],
            page_size=page_size or 0, page_token=page_token or "")
        return self._unary(self._list, request, timeout or self._timeout,
                           retry, call_metadata)

    def list_payouts(self, states=(), page_size=0, *, timeout=None,
                     retry=_UNSET, call_metadata=()):
        """Every payout (newest first), optionally only those in `states`
        ("UNKNOWN", "ACCEPTED", ... or PayoutState values); reads the pages
        one by one as the iterator is consumed."""
        token = ""
        while True:
            page = self.list_payouts_page(states, page_size, token,
                                          timeout=timeout, retry=retry,
                                          call_metadata=call_metadata)
            yield from page.payouts
            token = page.next_page_token
            if not token:
                return

    def refresh_payout(self, payout_id, *, timeout=None, retry=_UNSET,
                       call_metadata=()):
        """Asks AOPay for the payout's state now; returns the payout as it
        then stands."""
        return self._unary(
            self._refresh, payout_pb2.RefreshPayoutRequest(payout_id=payout_id),
            timeout or self._timeout, retry, call_metadata)

    def cancel_payout(self, payout_id, note="", *, timeout=None,
                      retry=_UNSET, call_metadata=()):
        """Cancels a payout this client created that is AWAITING_APPROVAL;
        returns it, CANCELLED (never sent). `note` is optional, kept for
        audit.

        Raises PayoutError: FAILED_PRECONDITION / NOT_CANCELLABLE when the
        payout is no longer awaiting approval (approved, rejected or already
        cancelled) or is another client's payout (one this client may read
        but did not create). Retried like the other calls (docs/client-retries.md): a
        retry after an attempt that did cancel gets NOT_CANCELLABLE, with
        `attempts` > 1; get_payout then shows CANCELLED.
        """
        return self._unary(
            self._cancel,
            payout_pb2.CancelPayoutRequest(payout_id=payout_id, note=note),
            timeout or self._timeout, retry, call_metadata)

    def batch_create(self, requests, *, timeout=None, retry=_UNSET,
                     call_metadata=()):
        """Sends many payouts over BatchCreatePayouts streams.

        `requests`: CreatePayoutRequest messages or dicts, each with its own
        request_id (all are read before the first is sent). Yields one
        BatchResult(request_id, payout, error) per request, in the order the
        gateway finishes them. Requests answered with a retryable error, and
        those left unanswered by a stream that broke with a retryable code,
        are sent again on a new stream with the same request ids. `timeout`
        bounds each stream (none by default).
        """
        pending = collections.OrderedDict()
        for item in requests:
            request = _create_request(item)
            if request.request_id in pending:
                raise ValueError("request id %r appears twice in the batch" %
                                 request.request_id)
            pending[request.request_id] = request
        return self._batch_rounds(pending, timeout, self._policy(retry),
                                  self._call_metadata(call_metadata))

    def _batch_rounds(self, pending, timeout, policy, call_metadata):
        started = time.monotonic()
        round_number = 1
        while pending:
            last_errors = {}
            stream_error = None
            answered = set()
            call = self._batch(iter(list(pending.values())), timeout=timeout,
                               metadata=call_metadata)
            try:
                for response in call:
                    request_id = response.request_id
                    if request_id not in pending or request_id in answered:
                        continue
                    answered.add(request_id)
                    if response.WhichOneof("result") == "payout":
                        del pending[request_id]
                        yield BatchResult(request_id, response.payout, None)
                        continue
                    error = PayoutError.from_status(
                        response.error, request_id=request_id,
                        attempts=round_number)
                    if (round_number < policy.max_attempts
                            and is_retryable(error)):
                        last_errors[request_id] = error
                    else:
                        del pending[request_id]
                        yield BatchResult(request_id, None, error)
            except grpc.RpcError as error:
                stream_error = PayoutError.from_rpc_error(
                    error, attempts=round_number)
            finally:
                call.cancel()  # a consumer that stopped early ends the stream

            unanswered = [r for r in pending if r not in answered]
            if unanswered:
                if stream_error is None:
                    stream_error = PayoutError(
                        grpc.StatusCode.UNKNOWN,
                        "the stream ended without answering every request",
                        attempts=round_number)
                if (round_number >= policy.max_attempts
                        or not is_retryable(stream_error)):
                    for request_id in unanswered:
                        del pending[request_id]
                        yield BatchResult(request_id, None,
                                          _for_request(stream_error,
                                                       request_id))
                else:
                    for request_id in unanswered:
                        last_errors[request_id] = _for_request(stream_error,
                                                               request_id)
            if not pending:
                return

            first = stream_error if unanswered else next(
                iter(last_errors.values()))
            delays = [e.retry_delay for e in last_errors.values()
                      if e.retry_delay is not None]
            delay = policy.backoff(round_number, max(delays, default=None))
            if time.monotonic() + delay - started > policy.max_elapsed:
                for request_id in list(pending):
                    del pending[request_id]
                    yield BatchResult(request_id, None,
                                      last_errors[request_id])
                return
            if policy.on_retry is not None:
                policy.on_retry(round_number, first, delay)
            time.sleep(delay)
            round_number += 1

    def watch_payouts(self, states=(), after_cursor="", *, retry=_UNSET,
                      call_metadata=None):
        """Follows payouts' state changes: a PayoutWatch, an iterator of
        PayoutEvent (cursor, payout, previous_state, event_time, who, note,
        why) in the
        order the changes were recorded, each once.

        `states`: only events that move a payout into one of them ("FAILED",
        ... or PayoutState values); empty: all. `after_cursor`: the cursor of
        the last event already received (a stored `watch.cursor`); "" for
        every change recorded from the moment this returns.

        The first stream is open when this returns (its errors are raised
        here). Broken streams and gateway restarts are followed by new
        streams after the resume cursor (`watch.cursor`), with `retry`'s
        backoff; its limits count failed reconnections in a row (the
        default: DEFAULT_WATCH_RETRY, 30 attempts within 300 s, at most 10 s
        apart, or none for a client made with retry=None; None: the first
        error is raised as is). Never retried: OUT_OF_RANGE /
        CURSOR_EXPIRED (read what was missed with list_payouts, then watch
        again without a cursor), INVALID_ARGUMENT, UNAUTHENTICATED,
        PERMISSION_DENIED, UNIMPLEMENTED and every other code. Raises
        PayoutError. No deadline: close the watch (close(), or a `with`
        block) to end it.

            with client.watch_payouts(after_cursor=saved) as watch:
                for event in watch:
                    handle(event)
                    save(watch.cursor)
        """
        request = payout_pb2.WatchPayoutsRequest(
            states=[payout_state(s) for s in states or ()])
        call_metadata = self._call_metadata(call_metadata)

        def open_stream(cursor):
            attempt = copy.deepcopy(request)
            attempt.after_cursor = cursor
            return self._watch(attempt, metadata=call_metadata)

        if retry is _UNSET:
            retry = DEFAULT_WATCH_RETRY if self._retry is not None else None
        return PayoutWatch(open_stream, after_cursor or "", retry)

    # -- PayoutAdminService -----------------------------------------------

    def resolve_payout(self, payout_id, state, note, transaction_id="", *,
                       timeout=None, call_metadata=()):
        """Records an operator's verdict on an UNKNOWN or ACCEPTED payout
        (needs the admin scope). `state`: "ACCEPTED", "SUCCEEDED", "FAILED"
        or "REVERSED". Never retried: after an error, read the payout and
        resolve it again if it still needs it."""
        request = payout_pb2.ResolvePayoutRequest(
            payout_id=payout_id, state=payout_state(state), note=note,
            transaction_id=transaction_id)
        return self._unary(self._resolve, request, timeout or self._timeout,
                           NO_RETRY, call_metadata)

    def approve_payout(self, payout_id, note, *, timeout=None, retry=_UNSET,
                       call_metadata=()):
        """Approves a payout AWAITING_APPROVAL (scope approve; never its
        creator; `note` required, kept for audit). The gateway then sends it
        exactly as CreatePayout would and answers as CreatePayout answers:
        the Payout (ACCEPTED), or CreatePayout's error.

        Retried exactly like create_payout (per-attempt deadline
        `create_timeout`) on the retryable errors only, never after
        OUTCOME_UNKNOWN. Raises PayoutError: PERMISSION_DENIED /
        SELF_APPROVAL for the payout's creator, FAILED_PRECONDITION /
        NOT_AWAITING_APPROVAL when it is not awaiting approval (also when
        another approval, a rejection or a cancel came first, or when an
        earlier attempt of this call approved it: `attempts` > 1; read the
        payout with get_payout to see where it stands).
        """
        return self._unary(
            self._approve,
            payout_pb2.ApprovePayoutRequest(payout_id=payout_id, note=note),
            timeout or self._create_timeout, retry, call_metadata)

    def reject_payout(self, payout_id, note, *, timeout=None, retry=_UNSET,
                      call_metadata=()):
        """Rejects a payout AWAITING_APPROVAL (same callers as
        approve_payout; `note` required); returns it, CANCELLED (never sent).

        Raises PayoutError: PERMISSION_DENIED / SELF_APPROVAL,
        FAILED_PRECONDITION / NOT_AWAITING_APPROVAL. Retried like the other
        calls: a retry after an attempt that did reject gets
        NOT_AWAITING_APPROVAL with `attempts` > 1; get_payout then shows
        CANCELLED.
        """
        return self._unary(
            self._reject,
            payout_pb2.RejectPayoutRequest(payout_id=payout_id, note=note),
            timeout or self._timeout, retry, call_metadata)


def _for_request(error, request_id):
    """A copy of a stream's error for one of its requests."""
    copied = copy.copy(error)
    copied.request_id = request_id
    return copied
