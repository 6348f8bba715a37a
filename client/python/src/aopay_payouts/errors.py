"""PayoutError: a failed call, decoded from its google.rpc.Status."""

import collections

import grpc

from ._rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"

#: The domain of every ErrorInfo the gateway sends.
DOMAIN = "payout.aopay.v1"

#: One broken rule of a refused request (google.rpc.BadRequest).
FieldViolation = collections.namedtuple("FieldViolation",
                                        ["field", "description"])

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _status_code(number):
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


class PayoutError(Exception):
    """A call to the gateway that failed.

    Attributes:
      code: the grpc.StatusCode.
      message: the status message, for people (match on code and reason).
      reason: the ErrorInfo reason, such as "INVALID_REQUEST" or
        "OUTCOME_UNKNOWN"; "" when the error did not come from the gateway
        (a connection failure, the caller's own deadline).
      domain: the ErrorInfo domain ("payout.aopay.v1"), or "".
      metadata: the ErrorInfo metadata, a dict (payoutId, upstreamHttpStatus,
        upstreamSubCode, upstreamMessage, limit, remainingPaise).
      field_violations: a list of FieldViolation(field, description), every
        rule the request broke.
      retry_delay: RetryInfo's delay in seconds (a float), or None.
      request_id: the request id of the CreatePayout or batch request, or "".
      attempts: how many attempts were made before giving up.
      status: the decoded google.rpc.Status, or None when the error carried
        none.
    """

    def __init__(self, code, message, *, reason="", domain="", metadata=None,
                 field_violations=(), retry_delay=None, request_id="",
                 attempts=1, status=None):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)
        self.retry_delay = retry_delay
        self.request_id = request_id
        self.attempts = attempts
        self.status = status

    @property
    def code_name(self):
        """The code's name, such as "INVALID_ARGUMENT"."""
        return self.code.name

    @property
    def payout_id(self):
        """The recorded payout's id (metadata payoutId), or ""."""
        return self.metadata.get("payoutId", "")

    @property
    def outcome_unknown(self):
        """The payout may have reached AOPay: never send it again under a
        new request id until it is settled (docs/client-retries.md)."""
        return self.reason == "OUTCOME_UNKNOWN"

    def __str__(self):
        text = self.code.name
        if self.reason:
            text += " " + self.reason
        text += ": " + self.message
        if self.field_violations:
            text += " [" + "; ".join(
                "%s: %s" % (v.field, v.description)
                for v in self.field_violations) + "]"
        return text

    def __repr__(self):
        return "PayoutError(%s)" % self

    @classmethod
    def from_status(cls, status, *, request_id="", attempts=1):
        """From a google.rpc.Status message (a batch answer's error)."""
        reason = ""
        domain = ""
        metadata = {}
        violations = []
        retry_delay = None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if not reason:  # the gateway sends exactly one
                    reason = info.reason
                    domain = info.domain
                    metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(
                    FieldViolation(v.field, v.description)
                    for v in bad_request.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                delay = info.retry_delay
                retry_delay = delay.seconds + delay.nanos / 1e9
        return cls(_status_code(status.code), status.message, reason=reason,
                   domain=domain, metadata=metadata,
                   field_violations=violations, retry_delay=retry_delay,
                   request_id=request_id, attempts=attempts, status=status)

    @classmethod
    def from_rpc_error(cls, error, *, request_id="", attempts=1):
        """From a grpc.RpcError, reading its grpc-status-details-bin trailer."""
        code = error.code() if hasattr(error, "code") else None
        message = error.details() if hasattr(error, "details") else str(error)
        code = code or grpc.StatusCode.UNKNOWN
        message = message or ""
        trailers = ()
        if hasattr(error, "trailing_metadata"):
            trailers = error.trailing_metadata() or ()
        for key, value in trailers:
            if key != STATUS_DETAILS_KEY:
                continue
            try:
                status = status_pb2.Status.FromString(value)
            except Exception:  # a trailer that does not parse: code only
                break
            decoded = cls.from_status(status, request_id=request_id,
                                      attempts=attempts)
            # The transport's code and message are the ones the call ended
            # with; the trailer adds the details.
            decoded.code = code
            decoded.message = message
            decoded.args = (code, message)
            return decoded
        return cls(code, message, request_id=request_id, attempts=attempts)
