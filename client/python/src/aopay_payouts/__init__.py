"""Python client of the AOPay payout gateway.

    from aopay_payouts import PayoutClient, PayoutError, new_request_id

    with PayoutClient("127.0.0.1:50051") as client:
        payout = client.create_payout(
            request_id=new_request_id(),
            beneficiary={"account_number": "100000011836",
                         "ifsc": "SBIN0000002", "name": "Dean Jon",
                         "email": "abc@gmail.com", "mobile": "9959640000"},
            amount_paise=1234, mode="IMPS")

Calls that fail raise PayoutError; retryable failures are retried with the
same request id first (docs/client-retries.md). watch_payouts follows
payouts' state changes across broken streams and restarts (PayoutWatch).
Payouts and requests are the generated protobuf messages of
aopay_payouts.payout_pb2.
"""

from ._proto import payout_pb2
from ._rpc import error_details_pb2, status_pb2
from .client import BatchResult, PayoutClient, new_request_id, payout_state
from .client import state_name, transfer_mode
from .errors import DOMAIN, FieldViolation, PayoutError
from .retry import DEFAULT_RETRY, DEFAULT_WATCH_RETRY, NO_RETRY
from .retry import RetryPolicy, is_retryable
from .watch import PayoutWatch

__version__ = "0.1.0"

__all__ = [
    "BatchResult",
    "DEFAULT_RETRY",
    "DEFAULT_WATCH_RETRY",
    "DOMAIN",
    "FieldViolation",
    "NO_RETRY",
    "PayoutClient",
    "PayoutError",
    "PayoutWatch",
    "RetryPolicy",
    "error_details_pb2",
    "is_retryable",
    "new_request_id",
    "payout_pb2",
    "payout_state",
    "state_name",
    "status_pb2",
    "transfer_mode",
]
