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

    def test_token_needs_tls(self):
        with self.assertRaises(ValueError):
            PayoutClient("127.0.0.1:1", token="t")
        PayoutClient("127.0.0.1:1", token="t",
                     allow_insecure_token=True).close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
