#!/usr/bin/python3
"""The retry policy and the error decoding, without a gateway."""

import unittest

import support

support.install_package()

import grpc  # noqa: E402
from google.protobuf import any_pb2, duration_pb2  # noqa: E402

from aopay_payouts import (NO_RETRY, PayoutClient, PayoutError,  # noqa: E402
                           RetryPolicy, error_details_pb2, is_retryable,
                           payout_pb2, payout_state, status_pb2,
                           transfer_mode)
from aopay_payouts.retry import call_with_retries  # noqa: E402

C = grpc.StatusCode


def error(code, reason="", retry_delay=None):
    return PayoutError(code, "test", reason=reason, retry_delay=retry_delay)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, message, trailers):
        super().__init__()
        self._code, self._message, self._trailers = code, message, trailers

    def code(self):
        return self._code

    def details(self):
        return self._message

    def trailing_metadata(self):
        return self._trailers


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def packed(message):
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


class IsRetryableTest(unittest.TestCase):

    def test_retried(self):
        for case in [error(C.UNAVAILABLE),
                     error(C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
                     error(C.UNAVAILABLE, "LEDGER_UNAVAILABLE"),
                     error(C.UNAVAILABLE, "SHUTTING_DOWN"),
                     error(C.ABORTED, "REQUEST_IN_PROGRESS"),
                     error(C.RESOURCE_EXHAUSTED, "OVERLOADED")]:
            self.assertTrue(is_retryable(case), case)

    def test_never_retried(self):
        for case in [error(C.DEADLINE_EXCEEDED, "OUTCOME_UNKNOWN"),
                     error(C.UNAVAILABLE, "OUTCOME_UNKNOWN"),
                     error(C.DEADLINE_EXCEEDED),
                     error(C.ABORTED),
                     error(C.ABORTED, "ABORTED"),
                     error(C.RESOURCE_EXHAUSTED, "CLIENT_LIMIT_EXCEEDED"),
                     error(C.RESOURCE_EXHAUSTED),
                     error(C.INVALID_ARGUMENT, "INVALID_REQUEST"),
                     error(C.INVALID_ARGUMENT, "REQUEST_ID_REUSED"),
                     error(C.ALREADY_EXISTS, "UPSTREAM_BENEFICIARY_EXISTS"),
                     error(C.FAILED_PRECONDITION, "UPSTREAM_ERROR"),
                     error(C.INTERNAL, "UPSTREAM_REJECTED_BODY"),
                     error(C.NOT_FOUND, "NOT_FOUND"),
                     error(C.UNAUTHENTICATED, "UNAUTHENTICATED"),
                     error(C.PERMISSION_DENIED, "PERMISSION_DENIED"),
                     error(C.CANCELLED), error(C.UNKNOWN)]:
            self.assertFalse(is_retryable(case), case)


class CallWithRetriesTest(unittest.TestCase):

    def run_attempts(self, errors, policy, result="done"):
        clock = FakeClock()
        numbers = []

        def attempt(number):
            numbers.append(number)
            if errors:
                raise errors.pop(0)
            return result

        try:
            return call_with_retries(attempt, policy, clock=clock,
                                     sleep=clock.sleep), numbers, clock
        except PayoutError as raised:
            return raised, numbers, clock

    def test_retries_then_succeeds(self):
        calls = []
        policy = RetryPolicy(jitter=0, on_retry=lambda *a: calls.append(a))
        outcome, numbers, clock = self.run_attempts(
            [error(C.UNAVAILABLE), error(C.ABORTED, "REQUEST_IN_PROGRESS")],
            policy)
        self.assertEqual(outcome, "done")
        self.assertEqual(numbers, [1, 2, 3])
        self.assertEqual(clock.sleeps, [0.5, 1.0])
        self.assertEqual([c[0] for c in calls], [1, 2])

    def test_retry_info_is_the_floor(self):
        policy = RetryPolicy(jitter=0)
        _, _, clock = self.run_attempts(
            [error(C.UNAVAILABLE, retry_delay=1.0),
             error(C.UNAVAILABLE, retry_delay=0.1)], policy)
        self.assertEqual(clock.sleeps, [1.0, 1.0])

    def test_backoff_grows_to_its_cap(self):
        policy = RetryPolicy(max_attempts=7, jitter=0, initial_backoff=1,
                             max_backoff=5, max_elapsed=1000)
        _, _, clock = self.run_attempts([error(C.UNAVAILABLE)] * 6, policy)
        self.assertEqual(clock.sleeps, [1, 2, 4, 5, 5, 5])

    def test_jitter_stays_within_its_band(self):
        policy = RetryPolicy(jitter=0.2)
        for rand in (0.0, 0.5, 1.0):
            delay = policy.backoff(2, rand=lambda: rand)
            self.assertGreaterEqual(delay, 0.8 - 1e-9)
            self.assertLessEqual(delay, 1.2 + 1e-9)

    def test_gives_up_after_max_attempts(self):
        outcome, numbers, _ = self.run_attempts(
            [error(C.UNAVAILABLE)] * 10, RetryPolicy(max_attempts=3))
        self.assertIsInstance(outcome, PayoutError)
        self.assertEqual(numbers, [1, 2, 3])
        self.assertEqual(outcome.attempts, 3)

    def test_gives_up_when_the_time_is_spent(self):
        policy = RetryPolicy(max_attempts=100, jitter=0, initial_backoff=1,
                             max_backoff=1, max_elapsed=3.5)
        outcome, numbers, clock = self.run_attempts(
            [error(C.UNAVAILABLE)] * 100, policy)
        self.assertEqual(outcome.attempts, 4)
        self.assertEqual(clock.sleeps, [1, 1, 1])

    def test_outcome_unknown_is_raised_at_once(self):
        outcome, numbers, clock = self.run_attempts(
            [error(C.DEADLINE_EXCEEDED, "OUTCOME_UNKNOWN")], RetryPolicy())
        self.assertEqual(outcome.reason, "OUTCOME_UNKNOWN")
        self.assertEqual(numbers, [1])
        self.assertEqual(clock.sleeps, [])

    def test_no_retry_policy_makes_one_attempt(self):
        for policy in (NO_RETRY, None):
            outcome, numbers, _ = self.run_attempts(
                [error(C.UNAVAILABLE)], policy)
            self.assertEqual(numbers, [1])
            self.assertEqual(outcome.attempts, 1)

    def test_bad_policies_are_refused(self):
        for kwargs in ({"max_attempts": 0}, {"jitter": 2},
                       {"multiplier": 0.5}, {"initial_backoff": -1}):
            with self.assertRaises(ValueError):
                RetryPolicy(**kwargs)


class DecodingTest(unittest.TestCase):

    def status(self):
        info = error_details_pb2.ErrorInfo(
            reason="REQUEST_IN_PROGRESS", domain="payout.aopay.v1",
            metadata={"payoutId": "po_01ABC"})
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="beneficiary.ifsc", description="is not an IFSC"),
            error_details_pb2.BadRequest.FieldViolation(
                field="amount_paise", description="must be positive")])
        retry = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=1, nanos=500000000))
        return status_pb2.Status(
            code=C.ABORTED.value[0], message="in progress",
            details=[packed(info), packed(bad), packed(retry)])

    def test_trailer_is_decoded(self):
        rpc_error = FakeRpcError(
            C.ABORTED, "in progress",
            [("grpc-status-details-bin", self.status().SerializeToString())])
        decoded = PayoutError.from_rpc_error(rpc_error, request_id="r-1")
        self.assertEqual(decoded.code, C.ABORTED)
        self.assertEqual(decoded.code_name, "ABORTED")
        self.assertEqual(decoded.message, "in progress")
        self.assertEqual(decoded.reason, "REQUEST_IN_PROGRESS")
        self.assertEqual(decoded.domain, "payout.aopay.v1")
        self.assertEqual(decoded.payout_id, "po_01ABC")
        self.assertEqual(decoded.retry_delay, 1.5)
        self.assertEqual(decoded.request_id, "r-1")
        self.assertEqual([tuple(v) for v in decoded.field_violations],
                         [("beneficiary.ifsc", "is not an IFSC"),
                          ("amount_paise", "must be positive")])
        self.assertTrue(is_retryable(decoded))

    def test_error_without_details(self):
        decoded = PayoutError.from_rpc_error(
            FakeRpcError(C.UNAVAILABLE, "connection refused", None))
        self.assertEqual(decoded.code, C.UNAVAILABLE)
        self.assertEqual(decoded.reason, "")
        self.assertEqual(decoded.metadata, {})
        self.assertIsNone(decoded.retry_delay)
        self.assertIsNone(decoded.status)

    def test_unreadable_trailer_keeps_the_code(self):
        decoded = PayoutError.from_rpc_error(FakeRpcError(
            C.INTERNAL, "x", [("grpc-status-details-bin", b"\xff\xff")]))
        self.assertEqual(decoded.code, C.INTERNAL)
        self.assertEqual(decoded.reason, "")


def rpc_error(code, reason=""):
    """A grpc.RpcError as the gateway sends it: ErrorInfo in the trailer."""
    trailers = []
    if reason:
        status = status_pb2.Status(
            code=code.value[0], message=reason.lower(),
            details=[packed(error_details_pb2.ErrorInfo(
                reason=reason, domain="payout.aopay.v1"))])
        trailers.append(("grpc-status-details-bin",
                         status.SerializeToString()))
    return FakeRpcError(code, reason.lower(), trailers)


class FakeChannel:
    """A grpc.Channel whose unary calls answer from a script, per method:
    each entry is an RpcError to raise or a message to return."""

    def __init__(self, script):
        self.script = script
        self.calls = []

    def unary_unary(self, path, request_serializer, response_deserializer):
        method = path.rsplit("/", 1)[1]

        def call(request, timeout=None, metadata=None):
            self.calls.append((method, request, timeout, metadata))
            outcome = self.script[method].pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return call

    def stream_stream(self, *args, **kwargs):
        return None

    def unary_stream(self, *args, **kwargs):
        return None


def fake_client(script, **kwargs):
    """A PayoutClient on a FakeChannel; retries without waiting."""
    channel = FakeChannel(script)
    kwargs.setdefault("retry", RetryPolicy(initial_backoff=0, jitter=0))
    return PayoutClient(channel=channel, **kwargs), channel


class ApprovalCallsTest(unittest.TestCase):
    """approve_payout retries like create_payout, and only on what the
    policy allows; reject_payout and cancel_payout likewise."""

    def client(self, script, **kwargs):
        return fake_client(script, **kwargs)

    def payout(self, state):
        return payout_pb2.Payout(payout_id="po_1",
                                 state=payout_state(state))

    def test_approve_is_retried_on_unavailable(self):
        client, channel = self.client({"ApprovePayout": [
            rpc_error(C.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
            rpc_error(C.UNAVAILABLE),
            self.payout("ACCEPTED")]}, create_timeout=42)
        payout = client.approve_payout("po_1", "checked the invoice")
        self.assertEqual(payout.state, payout_pb2.PAYOUT_STATE_ACCEPTED)
        self.assertEqual(len(channel.calls), 3)
        for method, request, timeout, _ in channel.calls:
            self.assertEqual(method, "ApprovePayout")
            self.assertEqual(request.payout_id, "po_1")
            self.assertEqual(request.note, "checked the invoice")
            self.assertEqual(timeout, 42)  # CreatePayout's deadline

    def test_approve_never_retries_outcome_unknown(self):
        client, channel = self.client({"ApprovePayout": [
            rpc_error(C.DEADLINE_EXCEEDED, "OUTCOME_UNKNOWN"),
            self.payout("ACCEPTED")]})
        with self.assertRaises(PayoutError) as raised:
            client.approve_payout("po_1", "ok")
        self.assertTrue(raised.exception.outcome_unknown)
        self.assertEqual(raised.exception.attempts, 1)
        self.assertEqual(len(channel.calls), 1)

    def test_approve_is_not_retried_on_a_refusal(self):
        for code, reason in ((C.FAILED_PRECONDITION, "NOT_AWAITING_APPROVAL"),
                             (C.PERMISSION_DENIED, "SELF_APPROVAL"),
                             (C.PERMISSION_DENIED, "PERMISSION_DENIED"),
                             (C.RESOURCE_EXHAUSTED, "CLIENT_LIMIT_EXCEEDED"),
                             (C.DEADLINE_EXCEEDED, "")):
            client, channel = self.client({"ApprovePayout": [
                rpc_error(code, reason), self.payout("ACCEPTED")]})
            with self.assertRaises(PayoutError) as raised:
                client.approve_payout("po_1", "ok")
            self.assertEqual(raised.exception.reason, reason)
            self.assertEqual(len(channel.calls), 1, reason)

    def test_a_retry_after_success_says_so_by_its_attempts(self):
        # The first attempt approved but its answer was lost; the retry
        # finds the payout no longer awaiting approval.
        client, channel = self.client({"ApprovePayout": [
            rpc_error(C.UNAVAILABLE),
            rpc_error(C.FAILED_PRECONDITION, "NOT_AWAITING_APPROVAL")]})
        with self.assertRaises(PayoutError) as raised:
            client.approve_payout("po_1", "ok")
        self.assertEqual(raised.exception.reason, "NOT_AWAITING_APPROVAL")
        self.assertEqual(raised.exception.attempts, 2)

    def test_reject_and_cancel_are_retried_on_unavailable_only(self):
        client, channel = self.client(
            {"RejectPayout": [rpc_error(C.UNAVAILABLE, "LEDGER_UNAVAILABLE"),
                              self.payout("CANCELLED"),
                              rpc_error(C.FAILED_PRECONDITION,
                                        "NOT_AWAITING_APPROVAL")],
             "CancelPayout": [rpc_error(C.UNAVAILABLE),
                              self.payout("CANCELLED"),
                              rpc_error(C.FAILED_PRECONDITION,
                                        "NOT_CANCELLABLE")]}, timeout=7)
        self.assertEqual(client.reject_payout("po_1", "no").state,
                         payout_pb2.PAYOUT_STATE_CANCELLED)
        self.assertEqual(client.cancel_payout("po_1").state,
                         payout_pb2.PAYOUT_STATE_CANCELLED)
        with self.assertRaises(PayoutError) as raised:
            client.reject_payout("po_1", "no")
        self.assertEqual(raised.exception.attempts, 1)
        with self.assertRaises(PayoutError) as raised:
            client.cancel_payout("po_1", "changed my mind")
        self.assertEqual(raised.exception.reason, "NOT_CANCELLABLE")
        self.assertEqual(raised.exception.attempts, 1)
        self.assertEqual([c[0] for c in channel.calls],
                         ["RejectPayout"] * 2 + ["CancelPayout"] * 2 +
                         ["RejectPayout", "CancelPayout"])
        self.assertEqual(channel.calls[-1][1].note, "changed my mind")
        self.assertEqual({c[2] for c in channel.calls}, {7})

    def test_retry_none_makes_one_attempt(self):
        client, channel = self.client({"ApprovePayout": [
            rpc_error(C.UNAVAILABLE), self.payout("ACCEPTED")]})
        with self.assertRaises(PayoutError):
            client.approve_payout("po_1", "ok", retry=None)
        self.assertEqual(len(channel.calls), 1)

    def test_call_metadata_goes_with_every_attempt(self):
        client, channel = self.client({"CancelPayout": [
            rpc_error(C.UNAVAILABLE), self.payout("CANCELLED")]},
            token="t", allow_insecure_token=True)
        client.cancel_payout("po_1", call_metadata=[("x-trace", "1")])
        for call in channel.calls:
            self.assertEqual(call[3], (("authorization", "Bearer t"),
                                       ("x-trace", "1")))


class RequestsTest(unittest.TestCase):

    def test_enums_by_name(self):
        self.assertEqual(transfer_mode("imps"), payout_pb2.TRANSFER_MODE_IMPS)
        self.assertEqual(transfer_mode("TRANSFER_MODE_NEFT"),
                         payout_pb2.TRANSFER_MODE_NEFT)
        self.assertEqual(payout_state("unknown"),
                         payout_pb2.PAYOUT_STATE_UNKNOWN)
        with self.assertRaises(ValueError):
            transfer_mode("RTGS")

    def test_request_id_is_required(self):
        client = PayoutClient("127.0.0.1:1")
        self.addCleanup(client.close)
        with self.assertRaises(ValueError):
            client.create_payout(beneficiary={}, amount_paise=1, mode="IMPS")
        with self.assertRaises(ValueError):
            list(client.batch_create([{"request_id": "a"},
                                      {"request_id": "a"}]))

    def test_metadata_goes_into_the_request(self):
        client, channel = fake_client({"CreatePayout": [
            payout_pb2.Payout(), payout_pb2.Payout(), payout_pb2.Payout()]})
        client.create_payout(request_id="r-1", amount_paise=1, mode="IMPS",
                             metadata={"invoice": "INV-42", "x": ""})
        client.create_payout({"request_id": "r-2",
                              "metadata": {"employee": "E-7"}})
        base = payout_pb2.CreatePayoutRequest(request_id="r-3",
                                              metadata={"old": "1"})
        client.create_payout(base, metadata={"new": "2"})
        self.assertEqual([dict(c[1].metadata) for c in channel.calls],
                         [{"invoice": "INV-42", "x": ""}, {"employee": "E-7"},
                          {"new": "2"}])
        self.assertEqual(dict(base.metadata), {"old": "1"})  # not changed

    def test_metadata_is_a_dict_of_str(self):
        client, channel = fake_client({})
        # gRPC call metadata (pairs) is call_metadata; as metadata it would
        # be stored with the payout, so it is refused.
        for metadata in ((("authorization", "Bearer t"),), [("k", "v")],
                         {"k": 1}, {1: "v"}, "k=v"):
            with self.assertRaises(TypeError):
                client.create_payout(request_id="r", metadata=metadata)
        self.assertEqual(channel.calls, [])

    def test_token_needs_tls(self):
        with self.assertRaises(ValueError):
            PayoutClient("127.0.0.1:1", token="t")
        PayoutClient("127.0.0.1:1", token="t",
                     allow_insecure_token=True).close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
