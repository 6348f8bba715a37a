#!/usr/bin/python3
"""The package against a live gateway: aopay-sandbox and payout-server on
loopback, started here in a temporary directory.

Environment (ctest sets both):
  PAYOUT_SERVER_BIN  the payout-server program
  AOPAY_SANDBOX_BIN  the aopay-sandbox program

The sandbox's journal is the witness of what AOPay received: every check of
"sent once" counts the payout calls for one account number in it.
"""

import base64
import os
import queue
import shutil
import tempfile
import threading
import time
import unittest

import support

support.install_package()

import grpc  # noqa: E402

from aopay_payouts import (PayoutClient, PayoutError, RetryPolicy,  # noqa: E402
                           payout_state,
                           new_request_id, payout_pb2, state_name)

S = payout_pb2


class Recorder:
    """An on_retry hook that remembers its calls and may act on them."""

    def __init__(self, action=None):
        self.calls = []
        self.action = action

    def __call__(self, attempt, error, delay):
        self.calls.append((attempt, error, delay))
        if self.action is not None:
            self.action(attempt, error)


def policy(recorder, **kwargs):
    return RetryPolicy(on_retry=recorder, **kwargs)


class LiveTestCase(unittest.TestCase):
    """A temporary directory for the class, removed at the end."""

    @classmethod
    def make_dir(cls, name):
        path = os.path.join(cls.temp_dir, name)
        os.makedirs(path)
        return path

    @classmethod
    def setUpClass(cls):
        cls.temp_dir = tempfile.mkdtemp(prefix="aopay_payouts_live_")
        cls.addClassCleanup(shutil.rmtree, cls.temp_dir, True)


class PayoutsTest(LiveTestCase):
    """One sandbox (0504 waits 3 s, payouts settle at once) and one gateway
    shared by the tests."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sandbox = support.Sandbox(cls.make_dir("sandbox"), "--slow=3s",
                                      "--settle=0s")
        cls.addClassCleanup(cls.sandbox.stop)
        cls.gateway = support.Gateway(cls.make_dir("gateway"),
                                      cls.sandbox.url)
        cls.addClassCleanup(cls.gateway.stop)
        cls.client = PayoutClient(cls.gateway.address)
        cls.addClassCleanup(cls.client.close)

    def create(self, account, **kwargs):
        request_id = kwargs.pop("request_id", None) or new_request_id()
        return self.client.create_payout(
            request_id=request_id, beneficiary=support.beneficiary(account),
            amount_paise=1234, mode="IMPS", **kwargs)

    def test_payout_goes_through_and_replays(self):
        account = support.unique_account()
        request_id = new_request_id()
        beneficiary = support.beneficiary(account)
        beneficiary["ifsc"] = "sbin0000002"  # normalised by the gateway
        beneficiary["mobile"] = "+919959640000"
        payout = self.client.create_payout(
            request_id=request_id, beneficiary=beneficiary,
            amount_paise=1234, mode="IMPS")
        self.assertEqual(state_name(payout.state), "ACCEPTED")
        self.assertTrue(payout.payout_id.startswith("po_"), payout.payout_id)
        self.assertTrue(payout.transaction_id.startswith("TERF"))
        self.assertEqual(payout.request_id, request_id)
        self.assertEqual(payout.amount_paise, 1234)
        self.assertEqual(payout.mode, S.TRANSFER_MODE_IMPS)
        self.assertEqual(payout.beneficiary.ifsc, "SBIN0000002")
        self.assertEqual(payout.beneficiary.mobile, "9959640000")

        replay = self.client.create_payout(
            request_id=request_id, beneficiary=beneficiary,
            amount_paise=1234, mode="IMPS")
        self.assertEqual(replay.payout_id, payout.payout_id)
        self.assertEqual(replay.transaction_id, payout.transaction_id)
        self.assertEqual(self.sandbox.payouts_for(account), 1)

        by_id = self.client.get_payout(payout.payout_id)
        self.assertEqual(by_id.request_id, request_id)
        by_request = self.client.get_payout_by_request_id(request_id)
        self.assertEqual(by_request.payout_id, payout.payout_id)

        # The sandbox settles at once: the status endpoint says SUCCESS.
        refreshed = self.client.refresh_payout(payout.payout_id)
        self.assertEqual(state_name(refreshed.state), "SUCCEEDED")

    def test_list_payouts_reads_every_page(self):
        created = {self.create(support.unique_account()).payout_id
                   for _ in range(5)}
        listed = [p.payout_id for p in self.client.list_payouts(page_size=2)]
        self.assertEqual(len(listed), len(set(listed)), "no repeats")
        self.assertLessEqual(created, set(listed))
        # Newest first.
        self.assertEqual(listed, sorted(listed, reverse=True))
        accepted = {p.payout_id for p in
                    self.client.list_payouts(states=["ACCEPTED"],
                                             page_size=2)}
        self.assertLessEqual(created, accepted)

    def test_validation_error_decodes_every_violation(self):
        account = support.unique_account()
        request_id = new_request_id()
        with self.assertRaises(PayoutError) as raised:
            self.client.create_payout(
                request_id=request_id,
                beneficiary={"account_number": account,
                             "ifsc": "SBIN1234567",  # the fifth must be 0
                             "name": "",
                             "email": "not-an-address",
                             "mobile": "12345"},
                amount_paise=0, mode=S.TRANSFER_MODE_UNSPECIFIED)
        error = raised.exception
        self.assertEqual(error.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(error.reason, "INVALID_REQUEST")
        self.assertEqual(error.domain, "payout.aopay.v1")
        self.assertEqual(error.attempts, 1)
        self.assertIsNone(error.retry_delay)
        self.assertEqual(error.request_id, request_id)
        self.assertCountEqual(
            [v.field for v in error.field_violations],
            ["beneficiary.ifsc", "beneficiary.name", "beneficiary.email",
             "beneficiary.mobile", "amount_paise", "mode"])
        for violation in error.field_violations:
            self.assertTrue(violation.description, violation)
        self.assertIn("beneficiary.ifsc", str(error))

        # Nothing was recorded, nothing was sent.
        with self.assertRaises(PayoutError) as raised:
            self.client.get_payout_by_request_id(request_id)
        self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(raised.exception.reason, "NOT_FOUND")
        self.assertEqual(self.sandbox.payouts_for(account), 0)

    def test_refused_payout_is_not_retried(self):
        account = support.unique_account("0409")
        recorder = Recorder()
        with self.assertRaises(PayoutError) as raised:
            self.create(account, retry=policy(recorder))
        error = raised.exception
        self.assertEqual(error.code, grpc.StatusCode.ALREADY_EXISTS)
        self.assertEqual(error.reason, "UPSTREAM_BENEFICIARY_EXISTS")
        self.assertTrue(error.payout_id.startswith("po_"))
        self.assertEqual(error.metadata.get("upstreamHttpStatus"), "409")
        self.assertEqual(error.attempts, 1)
        self.assertEqual(recorder.calls, [])
        self.assertEqual(self.sandbox.payouts_for(account), 1)

    def test_outcome_unknown_is_never_retried(self):
        account = support.unique_account("0500")  # AOPay answers HTTP 500
        request_id = new_request_id()
        recorder = Recorder()
        with self.assertRaises(PayoutError) as raised:
            self.create(account, request_id=request_id,
                        retry=policy(recorder, max_attempts=10))
        error = raised.exception
        self.assertEqual(error.code, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(error.reason, "OUTCOME_UNKNOWN")
        self.assertTrue(error.outcome_unknown)
        self.assertEqual(error.attempts, 1)
        self.assertEqual(recorder.calls, [])
        self.assertEqual(error.metadata.get("upstreamHttpStatus"), "500")
        self.assertEqual(self.sandbox.payouts_for(account), 1)

        payout = self.client.get_payout(error.payout_id)
        self.assertEqual(state_name(payout.state), "UNKNOWN")

        # A retry by hand replays the verdict and sends nothing.
        with self.assertRaises(PayoutError) as raised:
            self.create(account, request_id=request_id)
        self.assertEqual(raised.exception.reason, "OUTCOME_UNKNOWN")
        self.assertEqual(raised.exception.attempts, 1)
        self.assertEqual(self.sandbox.payouts_for(account), 1)

        # An operator settles it; the request id then gets the payout.
        resolved = self.client.resolve_payout(
            error.payout_id, "FAILED", "AOPay support: never received")
        self.assertEqual(state_name(resolved.state), "FAILED")
        failure = PayoutError.from_status(resolved.failure)
        self.assertEqual(failure.reason, "RESOLVED_BY_OPERATOR")
        settled = self.create(account, request_id=request_id)
        self.assertEqual(settled.payout_id, error.payout_id)
        self.assertEqual(state_name(settled.state), "FAILED")
        self.assertEqual(self.sandbox.payouts_for(account), 1)

        with self.assertRaises(PayoutError) as raised:
            self.client.resolve_payout(error.payout_id, "SUCCEEDED", "again")
        self.assertEqual(raised.exception.reason, "INVALID_TRANSITION")

    def test_request_in_progress_is_retried_until_the_outcome(self):
        account = support.unique_account("0504")  # answered after 3 s
        request_id = new_request_id()
        first = {}

        def send_first():
            try:
                first["payout"] = self.create(account, request_id=request_id,
                                              retry=None)
            except PayoutError as error:  # reported by the assertion below
                first["error"] = error

        thread = threading.Thread(target=send_first)
        thread.start()
        self.addCleanup(thread.join)
        support.eventually(lambda: self.sandbox.payouts_for(account) == 1,
                           what="the first call reaching AOPay")

        recorder = Recorder()
        second = self.create(account, request_id=request_id,
                             retry=policy(recorder, max_attempts=20))
        thread.join()
        self.assertNotIn("error", first)
        self.assertEqual(second.payout_id, first["payout"].payout_id)
        self.assertEqual(state_name(second.state), "ACCEPTED")
        self.assertTrue(recorder.calls)
        for _attempt, error, delay in recorder.calls:
            self.assertEqual(error.code, grpc.StatusCode.ABORTED)
            self.assertEqual(error.reason, "REQUEST_IN_PROGRESS")
            self.assertEqual(error.payout_id, second.payout_id)
            self.assertEqual(error.retry_delay, 1.0)
            self.assertGreaterEqual(delay, 1.0)  # RetryInfo is the floor
        self.assertEqual(self.sandbox.payouts_for(account), 1)

    def test_batch_create_answers_every_request(self):
        good = [support.unique_account() for _ in range(3)]
        refused = support.unique_account("0409")
        requests = [{"request_id": new_request_id(),
                     "beneficiary": support.beneficiary(account),
                     "amount_paise": 1000 + i, "mode": "NEFT"}
                    for i, account in enumerate(good + [refused])]
        invalid = {"request_id": new_request_id(),
                   "beneficiary": support.beneficiary(support.unique_account()),
                   "amount_paise": -5, "mode": "NEFT"}
        requests.append(invalid)

        results = {r.request_id: r for r in self.client.batch_create(requests)}
        self.assertEqual(set(results), {r["request_id"] for r in requests})
        for request in requests[:3]:
            result = results[request["request_id"]]
            self.assertIsNone(result.error)
            self.assertEqual(state_name(result.payout.state), "ACCEPTED")
            self.assertEqual(result.payout.amount_paise,
                             request["amount_paise"])
        refused_result = results[requests[3]["request_id"]]
        self.assertEqual(refused_result.error.reason,
                         "UPSTREAM_BENEFICIARY_EXISTS")
        self.assertEqual(refused_result.error.request_id,
                         requests[3]["request_id"])
        invalid_result = results[invalid["request_id"]]
        self.assertEqual(invalid_result.error.reason, "INVALID_REQUEST")
        self.assertEqual([v.field for v in
                          invalid_result.error.field_violations],
                         ["amount_paise"])

        # The whole batch again: the same payouts, nothing sent twice.
        again = {r.request_id: r for r in self.client.batch_create(requests)}
        for request in requests[:3]:
            self.assertEqual(again[request["request_id"]].payout.payout_id,
                             results[request["request_id"]].payout.payout_id)
        for account in good + [refused]:
            self.assertEqual(self.sandbox.payouts_for(account), 1, account)

    def test_batch_retries_a_request_in_progress(self):
        slow = support.unique_account("0504")  # answered after 3 s
        slow_request = {"request_id": new_request_id(),
                        "beneficiary": support.beneficiary(slow),
                        "amount_paise": 1500, "mode": "IMPS"}
        first = {}
        thread = threading.Thread(target=lambda: first.update(
            payout=self.client.create_payout(slow_request, retry=None)))
        thread.start()
        self.addCleanup(thread.join)
        support.eventually(lambda: self.sandbox.payouts_for(slow) == 1,
                           what="the first call reaching AOPay")

        other = support.unique_account()
        requests = [slow_request,
                    {"request_id": new_request_id(),
                     "beneficiary": support.beneficiary(other),
                     "amount_paise": 1600, "mode": "IMPS"}]
        recorder = Recorder()
        results = {r.request_id: r for r in self.client.batch_create(
            requests, retry=policy(recorder, max_attempts=20))}
        thread.join()
        self.assertIsNone(results[slow_request["request_id"]].error)
        self.assertEqual(results[slow_request["request_id"]].payout.payout_id,
                         first["payout"].payout_id)
        self.assertEqual(
            state_name(results[requests[1]["request_id"]].payout.state),
            "ACCEPTED")
        self.assertTrue(recorder.calls)
        for _round, error, delay in recorder.calls:
            self.assertEqual(error.reason, "REQUEST_IN_PROGRESS")
            self.assertEqual(error.request_id, slow_request["request_id"])
            self.assertGreaterEqual(delay, 1.0)
        self.assertEqual(self.sandbox.payouts_for(slow), 1)
        self.assertEqual(self.sandbox.payouts_for(other), 1)


class RetryAfterUnavailableTest(LiveTestCase):
    """The first attempt gets UNAVAILABLE; the retry, with the same request
    id, goes through; AOPay receives the payout once."""

    def test_aopay_unreachable_then_back(self):
        sandbox = support.Sandbox(self.make_dir("sandbox_down"))
        self.addCleanup(sandbox.stop)
        gateway = support.Gateway(self.make_dir("gateway_sandbox_down"),
                                  sandbox.url)
        self.addCleanup(gateway.stop)
        # AOPay cannot be reached: the gateway answers UNAVAILABLE /
        # UPSTREAM_UNAVAILABLE (certainly not sent, request id free again).
        sandbox.stop()

        def restart(attempt, error):
            if sandbox.process is None:
                sandbox.start()

        recorder = Recorder(restart)
        account = support.unique_account()
        with PayoutClient(gateway.address,
                          retry=policy(recorder, max_attempts=3)) as client:
            payout = client.create_payout(
                request_id=new_request_id(),
                beneficiary=support.beneficiary(account), amount_paise=500,
                mode="IMPS")
        self.assertEqual(state_name(payout.state), "ACCEPTED")
        self.assertEqual(len(recorder.calls), 1)
        attempt, error, delay = recorder.calls[0]
        self.assertEqual(attempt, 1)
        self.assertEqual(error.code, grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(error.reason, "UPSTREAM_UNAVAILABLE")
        self.assertEqual(error.retry_delay, 1.0)
        self.assertGreaterEqual(delay, 1.0)
        self.assertEqual(sandbox.payouts_for(account), 1)

    def test_gateway_down_then_back_on_the_same_ledger(self):
        sandbox = support.Sandbox(self.make_dir("sandbox_gw_down"))
        self.addCleanup(sandbox.stop)
        gateway = support.Gateway(self.make_dir("gateway_down"), sandbox.url)
        self.addCleanup(gateway.stop)
        gateway.stop()  # the port and the ledger stay for the restart

        def restart(attempt, error):
            if gateway.process is None:
                gateway.start()

        recorder = Recorder(restart)
        account = support.unique_account()
        fast_reconnect = [("grpc.initial_reconnect_backoff_ms", 100),
                          ("grpc.min_reconnect_backoff_ms", 100),
                          ("grpc.max_reconnect_backoff_ms", 500)]
        with PayoutClient(gateway.address, channel_options=fast_reconnect,
                          retry=policy(recorder, max_attempts=8,
                                       initial_backoff=0.2)) as client:
            payout = client.create_payout(
                request_id=new_request_id(),
                beneficiary=support.beneficiary(account), amount_paise=700,
                mode="NEFT")
        self.assertEqual(state_name(payout.state), "ACCEPTED")
        self.assertGreaterEqual(len(recorder.calls), 1)
        for _attempt, error, _delay in recorder.calls:
            # gRPC's own UNAVAILABLE: no connection, so no ErrorInfo.
            self.assertEqual(error.code, grpc.StatusCode.UNAVAILABLE)
            self.assertEqual(error.reason, "")
        self.assertEqual(sandbox.payouts_for(account), 1)

    def test_batch_after_the_gateway_was_down(self):
        sandbox = support.Sandbox(self.make_dir("sandbox_batch_down"))
        self.addCleanup(sandbox.stop)
        gateway = support.Gateway(self.make_dir("gateway_batch_down"),
                                  sandbox.url)
        self.addCleanup(gateway.stop)
        gateway.stop()

        def restart(attempt, error):
            if gateway.process is None:
                gateway.start()

        recorder = Recorder(restart)
        accounts = [support.unique_account() for _ in range(3)]
        requests = [{"request_id": new_request_id(),
                     "beneficiary": support.beneficiary(account),
                     "amount_paise": 900, "mode": "NEFT"}
                    for account in accounts]
        fast_reconnect = [("grpc.initial_reconnect_backoff_ms", 100),
                          ("grpc.min_reconnect_backoff_ms", 100),
                          ("grpc.max_reconnect_backoff_ms", 500)]
        with PayoutClient(gateway.address, channel_options=fast_reconnect,
                          retry=policy(recorder, max_attempts=8,
                                       initial_backoff=0.2)) as client:
            results = list(client.batch_create(requests))
        self.assertEqual(sorted(r.request_id for r in results),
                         sorted(r["request_id"] for r in requests))
        for result in results:
            self.assertIsNone(result.error, result.error)
            self.assertEqual(state_name(result.payout.state), "ACCEPTED")
        self.assertGreaterEqual(len(recorder.calls), 1)
        self.assertEqual(recorder.calls[0][1].code,
                         grpc.StatusCode.UNAVAILABLE)
        for account in accounts:
            self.assertEqual(sandbox.payouts_for(account), 1, account)


#: gRPC channel options that reconnect to a restarted gateway quickly.
FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100),
                  ("grpc.min_reconnect_backoff_ms", 100),
                  ("grpc.max_reconnect_backoff_ms", 500)]


def position(cursor):
    """An event cursor's position in the ledger. Cursors are opaque to
    clients; the tests know the gateway's format (base64 of "c1:N") only to
    check that each event comes after the one before."""
    text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    prefix, _, number = text.decode().partition(":")
    if prefix != "c1" or not number.isdigit():
        raise AssertionError("not an event cursor: %r" % cursor)
    return int(number)


class WatchReader:
    """Reads a PayoutWatch on a helper thread, one event per request, so
    that the test's thread never blocks on the watch and the watch reads an
    event only when the test asks for one (as a caller's loop would)."""

    def __init__(self, watch):
        self.watch = watch
        self._permits = threading.Semaphore(0)
        self._results = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            self._permits.acquire()
            try:
                event = next(self.watch)
            except StopIteration:
                self._results.put(None)
                return
            except Exception as error:  # handed to the test's thread
                self._results.put(error)
                return
            self._results.put(event)

    def request(self, count):
        """Lets the watch read `count` more events (without waiting)."""
        for _ in range(count):
            self._permits.release()

    def collect(self, count, timeout_s=30):
        """The next `count` events requested; fails when the watch ends or
        they do not come within timeout_s."""
        events = []
        deadline = time.monotonic() + timeout_s
        while len(events) < count:
            try:
                item = self._results.get(
                    timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError("%d of %d events within %ss" %
                                     (len(events), count, timeout_s))
            if not isinstance(item, payout_pb2.PayoutEvent):
                raise AssertionError("the watch ended after %d of %d "
                                     "events: %r" % (len(events), count,
                                                     item))
            events.append(item)
        return events

    def take(self, count, timeout_s=30):
        self.request(count)
        return self.collect(count, timeout_s)

    def close(self):
        """Closes the watch; its reader ends at once."""
        self.watch.close()
        self._permits.release()  # a reader waiting for a request ends too
        self._thread.join(support.STOP_TIMEOUT_S)
        if self._thread.is_alive():
            raise AssertionError("the watch's reader did not end on close()")


class WatchTest(LiveTestCase):
    """watch_payouts against a gateway that restarts on the same port and
    ledger: every state change of every payout, once, in order. Each test
    has its own sandbox (payouts settle at once, so RefreshPayout moves
    ACCEPTED to SUCCEEDED) and gateway, whose only payouts are the test's."""

    def start(self, name):
        self.sandbox = support.Sandbox(self.make_dir("sandbox_" + name),
                                       "--settle=0s")
        self.addCleanup(self.sandbox.stop)
        self.gateway = support.Gateway(self.make_dir("gateway_" + name),
                                       self.sandbox.url)
        self.addCleanup(self.gateway.stop)
        # Calls made right after a restart wait for the channel to connect
        # again: up to ~30 s of attempts, for a slow (sanitizer) build.
        self.client = PayoutClient(
            self.gateway.address, channel_options=FAST_RECONNECT,
            retry=RetryPolicy(max_attempts=60, initial_backoff=0.1,
                              max_backoff=0.5, max_elapsed=60))
        self.addCleanup(self.client.close)
        self.lifecycles = {}  # payout id -> the states it went through

    def watch_policy(self, recorder):
        """Reconnects often and for long enough to outlast a restart (the
        default would wait up to 10 s between attempts)."""
        return policy(recorder, max_attempts=200, initial_backoff=0.05,
                      max_backoff=0.25, max_elapsed=60)

    def reader(self, watch):
        reader = WatchReader(watch)
        self.addCleanup(reader.close)  # before the client closes
        return reader

    def create(self, settle=False):
        """A payout (PENDING, then ACCEPTED); with settle, refreshed to
        SUCCEEDED."""
        payout = self.client.create_payout(
            request_id=new_request_id(),
            beneficiary=support.beneficiary(support.unique_account()),
            amount_paise=1234, mode="IMPS")
        self.assertEqual(state_name(payout.state), "ACCEPTED")
        self.lifecycles[payout.payout_id] = ["PENDING", "ACCEPTED"]
        if settle:
            refreshed = self.client.refresh_payout(payout.payout_id)
            self.assertEqual(state_name(refreshed.state), "SUCCEEDED")
            self.lifecycles[payout.payout_id].append("SUCCEEDED")
        return payout

    def expected_events(self):
        return sum(len(states) for states in self.lifecycles.values())

    def assert_every_change_once(self, events):
        """Each payout's every change, in its order, exactly once; cursors
        strictly increasing; nothing else."""
        cursors = [e.cursor for e in events]
        self.assertEqual(len(cursors), len(set(cursors)), "a repeated event")
        positions = [position(c) for c in cursors]
        self.assertEqual(positions, sorted(set(positions)),
                         "cursors not strictly increasing")
        seen = {}
        for watched in events:
            states = seen.setdefault(watched.payout.payout_id, [])
            previous = states[-1] if states else "UNSPECIFIED"
            self.assertEqual(state_name(watched.previous_state), previous,
                             "a change was skipped: %s" % watched)
            states.append(state_name(watched.payout.state))
        self.assertEqual(seen, self.lifecycles)

    def assert_fenced(self, reader):
        """Nothing more was delivered: the next event is a new payout's
        first."""
        fence = self.create()
        (after,) = reader.take(1)
        self.assertEqual((after.payout.payout_id,
                          state_name(after.payout.state)),
                         (fence.payout_id, "PENDING"))
        return after

    def follow_a_restart(self, stop):
        recorder = Recorder()
        watch = self.client.watch_payouts(retry=self.watch_policy(recorder))
        start = watch.cursor
        self.assertTrue(start, "the header's cursor, before any event")
        reader = self.reader(watch)

        self.create(settle=True)
        self.create()
        events = reader.take(3)  # the other two may wait in the stream
        stop()
        # Nothing is created while the gateway is down. The watch reads on:
        # the events it has not read yet, then the break, then failed
        # reconnections until the gateway is back.
        reader.request(3)
        support.eventually(lambda: len(recorder.calls) >= 2, timeout_s=30,
                           what="a failed reconnection while down")
        self.gateway.start()
        self.create()
        self.create(settle=True)
        events += reader.collect(3)
        events += reader.take(self.expected_events() - len(events))
        self.assert_every_change_once(events)
        self.assertEqual(watch.cursor, events[-1].cursor)
        events.append(self.assert_fenced(reader))

        # The ledger's own account, read by a watch from the same start
        # with no restart in between, is exactly what the watch delivered.
        with self.client.watch_payouts(after_cursor=start) as again:
            self.assertEqual(again.cursor, start)
            replay = self.reader(again).take(len(events))
        self.assertEqual([(e.cursor, e.payout.payout_id, e.payout.state)
                          for e in replay],
                         [(e.cursor, e.payout.payout_id, e.payout.state)
                          for e in events])
        for _attempt, error, _delay in recorder.calls:
            self.assertEqual(error.code, grpc.StatusCode.UNAVAILABLE)
        return recorder

    def test_watch_follows_a_gateway_restart(self):
        self.start("restart")
        recorder = self.follow_a_restart(self.gateway.stop)  # SIGTERM
        # The stopping gateway ended the watch at once, asking for 1 s.
        _attempt, error, delay = recorder.calls[0]
        self.assertEqual(error.reason, "SHUTTING_DOWN")
        self.assertEqual(error.retry_delay, 1.0)
        self.assertGreaterEqual(delay, 1.0)
        # While it was down: gRPC's own UNAVAILABLE, no ErrorInfo.
        self.assertEqual(recorder.calls[1][1].reason, "")

    def test_watch_follows_a_killed_gateway(self):
        self.start("killed")

        def kill():
            process, self.gateway.process = self.gateway.process, None
            process.kill()  # SIGKILL: no goodbye to anyone
            process.stop()  # only reaps it: its pipe, its reader thread

        recorder = self.follow_a_restart(kill)
        self.assertEqual(recorder.calls[0][1].reason, "")

    def test_watch_from_now_resumes_after_its_header(self):
        # A watch without a cursor whose stream breaks before its first
        # event resumes after the header's cursor: what was recorded while
        # it was reconnecting reaches it; what came before it never does.
        self.start("from_now")
        self.create()  # before the watch: not watched
        self.lifecycles.clear()
        broke = threading.Event()
        resume = threading.Event()

        def hold_the_reconnection(attempt, error):
            broke.set()
            resume.wait(support.START_TIMEOUT_S * 2)

        recorder = Recorder(hold_the_reconnection)
        watch = self.client.watch_payouts(retry=self.watch_policy(recorder))
        start = watch.cursor
        self.assertTrue(start)
        reader = self.reader(watch)
        self.addCleanup(resume.set)  # on failure too, before reader.close
        reader.request(1)
        self.gateway.stop()
        self.assertTrue(broke.wait(30), "the watch saw the gateway stop")
        self.assertEqual(recorder.calls[0][1].reason, "SHUTTING_DOWN")
        self.assertEqual(watch.cursor, start)
        # Recorded while the watch waits to reconnect.
        self.gateway.start()
        self.create(settle=True)
        self.create()
        resume.set()
        events = reader.collect(1)
        events += reader.take(self.expected_events() - 1)
        self.assert_every_change_once(events)
        self.assertGreater(position(events[0].cursor), position(start))
        self.assert_fenced(reader)

    def test_refusals_are_raised_and_close_ends_a_live_watch(self):
        self.start("refusals")
        recorder = Recorder()
        # A cursor this gateway did not make; a state number it does not
        # know. Raised by watch_payouts itself, never retried.
        for cursor, states in (("not-a-cursor", ()), ("", (99,))):
            with self.assertRaises(PayoutError) as raised:
                self.client.watch_payouts(states=states, after_cursor=cursor,
                                          retry=policy(recorder))
            self.assertEqual(raised.exception.code,
                             grpc.StatusCode.INVALID_ARGUMENT)
            self.assertEqual(raised.exception.reason, "INVALID_REQUEST")
            self.assertEqual(raised.exception.attempts, 1)
        self.assertEqual(recorder.calls, [])

        # Only the states asked for; close() ends a watch waiting for more.
        watch = self.client.watch_payouts(states=["ACCEPTED"])
        reader = self.reader(watch)
        payout = self.create()
        (accepted,) = reader.take(1)
        self.assertEqual(accepted.payout.payout_id, payout.payout_id)
        self.assertEqual(accepted.payout.state, payout_state("ACCEPTED"))
        self.assertEqual(state_name(accepted.previous_state), "PENDING")
        reader.request(1)
        reader.close()  # raises unless the reader ended
        with self.assertRaises(StopIteration):
            next(watch)


@unittest.skipUnless(shutil.which("openssl"), "the openssl command is needed")
class TlsAndTokensTest(LiveTestCase):
    """TLS with bearer tokens, and mTLS, with certificates made here."""

    TOKEN = "payroll-" + os.urandom(16).hex()
    READER_TOKEN = "reader-" + os.urandom(16).hex()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import hashlib
        cls.certs = cls.make_dir("certs")
        support.make_certificates(cls.certs)
        cls.clients = os.path.join(cls.certs, "clients")
        with open(cls.clients, "w") as f:
            for name, token, scopes in (
                    ("payroll-svc", cls.TOKEN, "payouts:write,payouts:read"),
                    ("reader", cls.READER_TOKEN, "payouts:read")):
                digest = hashlib.sha256(token.encode()).hexdigest()
                f.write("%s %s %s\n" % (name, digest, scopes))
            f.write("batch-host - payouts:write,payouts:read\n")
        tls = ["--clients=" + cls.clients,
               "--tls_cert=" + cls.cert("server.crt"),
               "--tls_key=" + cls.cert("server.key")]
        cls.gateway = support.Gateway(cls.make_dir("gateway_tls"), "sandbox",
                                      *tls)
        cls.addClassCleanup(cls.gateway.stop)
        cls.mtls_gateway = support.Gateway(
            cls.make_dir("gateway_mtls"), "sandbox",
            *(tls + ["--tls_client_ca=" + cls.cert("ca.crt")]))
        cls.addClassCleanup(cls.mtls_gateway.stop)

    @classmethod
    def cert(cls, name):
        return os.path.join(cls.certs, name)

    def client(self, gateway=None, **kwargs):
        kwargs.setdefault("root_certificates", self.cert("ca.crt"))
        client = PayoutClient((gateway or self.gateway).address, **kwargs)
        self.addCleanup(client.close)
        return client

    def payout(self, client):
        return client.create_payout(
            request_id=new_request_id(),
            beneficiary=support.beneficiary(support.unique_account()),
            amount_paise=2500, mode="IMPS")

    def test_token_over_tls(self):
        client = self.client(token=self.TOKEN)
        payout = self.payout(client)
        self.assertEqual(state_name(payout.state), "ACCEPTED")
        self.assertEqual(payout.client, "payroll-svc")
        self.assertIn(payout.payout_id,
                      {p.payout_id for p in client.list_payouts()})

    def test_missing_or_wrong_token_is_unauthenticated(self):
        for token in (None, "not-a-token"):
            with self.assertRaises(PayoutError) as raised:
                self.payout(self.client(token=token))
            error = raised.exception
            self.assertEqual(error.code, grpc.StatusCode.UNAUTHENTICATED)
            self.assertEqual(error.reason, "UNAUTHENTICATED")
            self.assertEqual(error.attempts, 1)
            self.assertNotIn("not-a-token", str(error))

    def test_batch_without_a_token_answers_every_request(self):
        requests = [{"request_id": new_request_id(),
                     "beneficiary": support.beneficiary(
                         support.unique_account()),
                     "amount_paise": 100, "mode": "IMPS"} for _ in range(2)]
        results = list(self.client().batch_create(requests))
        self.assertEqual(sorted(r.request_id for r in results),
                         sorted(r["request_id"] for r in requests))
        for result in results:
            self.assertIsNone(result.payout)
            self.assertEqual(result.error.code,
                             grpc.StatusCode.UNAUTHENTICATED)
            self.assertEqual(result.error.request_id, result.request_id)
            self.assertEqual(result.error.attempts, 1)

    def test_missing_scope_is_permission_denied(self):
        with self.assertRaises(PayoutError) as raised:
            self.payout(self.client(token=self.READER_TOKEN))
        self.assertEqual(raised.exception.code,
                         grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("payouts:write", raised.exception.message)

    def test_server_certificate_is_checked(self):
        # The system's CAs do not know the test CA: the handshake fails.
        client = self.client(tls=True, root_certificates=None,
                             token=self.TOKEN, retry=None)
        with self.assertRaises(PayoutError) as raised:
            self.payout(client)
        self.assertEqual(raised.exception.code, grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(raised.exception.reason, "")

    def test_client_certificate_names_the_client(self):
        client = self.client(self.mtls_gateway,
                             certificate_chain=self.cert("batch-host.crt"),
                             private_key=self.cert("batch-host.key"))
        payout = self.payout(client)
        self.assertEqual(payout.client, "batch-host")
        # A token still wins over the certificate.
        with_token = self.client(self.mtls_gateway, token=self.TOKEN,
                                 certificate_chain=self.cert("batch-host.crt"),
                                 private_key=self.cert("batch-host.key"))
        self.assertEqual(self.payout(with_token).client, "payroll-svc")
        # Without a client certificate there is no connection at all.
        without = self.client(self.mtls_gateway, token=self.TOKEN, retry=None)
        with self.assertRaises(PayoutError) as raised:
            self.payout(without)
        self.assertEqual(raised.exception.code, grpc.StatusCode.UNAVAILABLE)


@unittest.skipUnless(shutil.which("openssl"), "the openssl command is needed")
class ApprovalsTest(LiveTestCase):
    """Maker-checker over TLS with bearer tokens, against a sandbox whose
    journal shows what AOPay received: the maker's payouts above 1000 paise
    wait for the checker's approval."""

    MAKER_TOKEN = "maker-" + os.urandom(16).hex()
    CHECKER_TOKEN = "checker-" + os.urandom(16).hex()
    OPS_TOKEN = "ops-" + os.urandom(16).hex()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import hashlib
        cls.certs = cls.make_dir("certs")
        support.make_certificates(cls.certs)
        cls.clients = os.path.join(cls.certs, "clients")
        with open(cls.clients, "w") as f:
            for name, token, rest in (
                    ("maker", cls.MAKER_TOKEN,
                     "payouts:write,payouts:read approval_above_paise=1000"),
                    ("checker", cls.CHECKER_TOKEN, "approve"),
                    # May approve, and holds its own payouts too.
                    ("ops", cls.OPS_TOKEN,
                     "payouts:write,approve approval_above_paise=1000")):
                digest = hashlib.sha256(token.encode()).hexdigest()
                f.write("%s %s %s\n" % (name, digest, rest))
        cls.sandbox = support.Sandbox(cls.make_dir("sandbox"))
        cls.addClassCleanup(cls.sandbox.stop)
        cls.gateway = support.Gateway(cls.make_dir("gateway"),
                                      cls.sandbox.url, *cls.tls_flags())
        cls.addClassCleanup(cls.gateway.stop)
        cls.maker = cls.client(cls.gateway, cls.MAKER_TOKEN)
        cls.checker = cls.client(cls.gateway, cls.CHECKER_TOKEN)
        cls.ops = cls.client(cls.gateway, cls.OPS_TOKEN)

    @classmethod
    def tls_flags(cls):
        return ["--clients=" + cls.clients,
                "--tls_cert=" + os.path.join(cls.certs, "server.crt"),
                "--tls_key=" + os.path.join(cls.certs, "server.key")]

    @classmethod
    def client(cls, gateway, token, **kwargs):
        client = PayoutClient(gateway.address, token=token,
                              root_certificates=os.path.join(cls.certs,
                                                             "ca.crt"),
                              **kwargs)
        cls.addClassCleanup(client.close)
        return client

    def hold(self, account, client=None, **kwargs):
        """A payout above the threshold: recorded, held, not sent."""
        kwargs.setdefault("metadata", {"invoice": "INV-" + account})
        payout = (client or self.maker).create_payout(
            request_id=kwargs.pop("request_id", None) or new_request_id(),
            beneficiary=support.beneficiary(account), amount_paise=2500,
            mode="IMPS", **kwargs)
        self.assertEqual(state_name(payout.state), "AWAITING_APPROVAL")
        return payout

    def assert_refused(self, call, code, reason):
        with self.assertRaises(PayoutError) as raised:
            call()
        self.assertEqual(raised.exception.code, code, raised.exception)
        self.assertEqual(raised.exception.reason, reason, raised.exception)
        self.assertEqual(raised.exception.attempts, 1)
        return raised.exception

    def test_checker_approves_and_the_payout_is_sent_once(self):
        account = support.unique_account()
        metadata = {"invoice": "INV-2024-0042", "employee": "E-7"}
        held = self.hold(account, metadata=metadata)
        self.assertEqual(dict(held.metadata), metadata)
        self.assertEqual(held.client, "maker")
        self.assertEqual(held.transaction_id, "")
        self.assertEqual(self.sandbox.payouts_for(account), 0)

        # The maker lacks the approve scope.
        error = self.assert_refused(
            lambda: self.maker.approve_payout(held.payout_id, "my own"),
            grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
        self.assertIn("approve", error.message)
        self.assertEqual(self.sandbox.payouts_for(account), 0)

        approved = self.checker.approve_payout(held.payout_id,
                                               "checked against the invoice")
        self.assertEqual(state_name(approved.state), "ACCEPTED")
        self.assertEqual(approved.payout_id, held.payout_id)
        self.assertTrue(approved.transaction_id.startswith("TERF"))
        self.assertEqual(dict(approved.metadata), metadata)
        self.assertEqual(approved.client, "maker")
        self.assertEqual(self.sandbox.payouts_for(account), 1)

        # Approving again changes nothing and sends nothing.
        self.assert_refused(
            lambda: self.checker.approve_payout(held.payout_id, "again"),
            grpc.StatusCode.FAILED_PRECONDITION, "NOT_AWAITING_APPROVAL")
        read = self.maker.get_payout(held.payout_id)
        self.assertEqual(state_name(read.state), "ACCEPTED")
        self.assertEqual(dict(read.metadata), metadata)
        self.assertEqual(self.sandbox.payouts_for(account), 1)
        # The metadata never reaches AOPay.
        for entry in self.sandbox.journal():
            self.assertNotIn("INV-2024-0042", str(entry))

    def test_rejected_payout_is_cancelled_and_never_sent(self):
        account = support.unique_account()
        held = self.hold(account)
        rejected = self.checker.reject_payout(held.payout_id,
                                              "no such invoice")
        self.assertEqual(state_name(rejected.state), "CANCELLED")
        self.assertEqual(rejected.payout_id, held.payout_id)
        self.assert_refused(
            lambda: self.checker.approve_payout(held.payout_id, "late"),
            grpc.StatusCode.FAILED_PRECONDITION, "NOT_AWAITING_APPROVAL")
        self.assert_refused(
            lambda: self.maker.cancel_payout(held.payout_id),
            grpc.StatusCode.FAILED_PRECONDITION, "NOT_CANCELLABLE")
        self.assertEqual(self.sandbox.payouts_for(account), 0)

    def test_maker_cancels_once(self):
        account = support.unique_account()
        held = self.hold(account)
        cancelled = self.maker.cancel_payout(held.payout_id, "wrong amount")
        self.assertEqual(state_name(cancelled.state), "CANCELLED")
        self.assert_refused(
            lambda: self.maker.cancel_payout(held.payout_id),
            grpc.StatusCode.FAILED_PRECONDITION, "NOT_CANCELLABLE")
        self.assert_refused(
            lambda: self.checker.approve_payout(held.payout_id, "late"),
            grpc.StatusCode.FAILED_PRECONDITION, "NOT_AWAITING_APPROVAL")
        self.assertEqual(
            state_name(self.maker.get_payout(held.payout_id).state),
            "CANCELLED")
        self.assertEqual(self.sandbox.payouts_for(account), 0)

    def test_only_the_creator_cancels_and_never_approves(self):
        own_account = support.unique_account()
        own = self.hold(own_account, client=self.ops)
        self.assert_refused(
            lambda: self.ops.approve_payout(own.payout_id, "mine"),
            grpc.StatusCode.PERMISSION_DENIED, "SELF_APPROVAL")
        self.assert_refused(
            lambda: self.ops.reject_payout(own.payout_id, "mine"),
            grpc.StatusCode.PERMISSION_DENIED, "SELF_APPROVAL")
        # The maker may not see another client's payout at all.
        self.assert_refused(
            lambda: self.maker.cancel_payout(own.payout_id),
            grpc.StatusCode.NOT_FOUND, "NOT_FOUND")

        account = support.unique_account()
        held = self.hold(account)
        # ops may write and read every payout, but did not create this one.
        self.assert_refused(
            lambda: self.ops.cancel_payout(held.payout_id),
            grpc.StatusCode.FAILED_PRECONDITION, "NOT_CANCELLABLE")
        # The checker lacks payouts:write, which CancelPayout needs.
        self.assert_refused(
            lambda: self.checker.cancel_payout(held.payout_id),
            grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
        for payout in (own, held):
            self.assertEqual(
                state_name(self.checker.get_payout(payout.payout_id).state),
                "AWAITING_APPROVAL")
        self.assertEqual(self.sandbox.payouts_for(own_account), 0)
        self.assertEqual(self.sandbox.payouts_for(account), 0)

    def test_below_the_threshold_is_sent_at_once_with_its_metadata(self):
        account = support.unique_account()
        payout = self.maker.create_payout(
            request_id=new_request_id(),
            beneficiary=support.beneficiary(account), amount_paise=1000,
            mode="NEFT", metadata={"invoice": "INV-small"})
        self.assertEqual(state_name(payout.state), "ACCEPTED")
        self.assertEqual(dict(payout.metadata), {"invoice": "INV-small"})
        self.assertEqual(self.sandbox.payouts_for(account), 1)

    def test_same_request_id_with_other_metadata_is_reused(self):
        account = support.unique_account()
        request_id = new_request_id()
        held = self.hold(account, request_id=request_id,
                         metadata={"invoice": "INV-1"})
        replay = self.hold(account, request_id=request_id,
                           metadata={"invoice": "INV-1"})
        self.assertEqual(replay.payout_id, held.payout_id)
        for other in ({"invoice": "INV-2"}, {"invoice": "INV-1", "x": "y"},
                      {}):
            error = self.assert_refused(
                lambda: self.hold(account, request_id=request_id,
                                  metadata=other),
                grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")
            self.assertEqual(error.payout_id, held.payout_id)
            self.assertEqual(error.request_id, request_id)
        self.assertEqual(dict(self.maker.get_payout_by_request_id(
            request_id).metadata), {"invoice": "INV-1"})
        self.assertEqual(self.sandbox.payouts_for(account), 0)

    def test_approval_is_retried_after_upstream_unavailable(self):
        # AOPay cannot be reached: the approval answers UNAVAILABLE /
        # UPSTREAM_UNAVAILABLE, the payout awaits approval again, and the
        # client's retry approves and sends it once AOPay is back.
        sandbox = support.Sandbox(self.make_dir("sandbox_down"))
        self.addCleanup(sandbox.stop)
        gateway = support.Gateway(self.make_dir("gateway_sandbox_down"),
                                  sandbox.url, *self.tls_flags())
        self.addCleanup(gateway.stop)
        maker = self.client(gateway, self.MAKER_TOKEN)
        account = support.unique_account()
        held = self.hold(account, client=maker)
        sandbox.stop()

        seen = []

        def restart(attempt, error):
            seen.append(state_name(maker.get_payout(held.payout_id).state))
            if sandbox.process is None:
                sandbox.start()

        recorder = Recorder(restart)
        checker = self.client(gateway, self.CHECKER_TOKEN,
                              retry=policy(recorder, max_attempts=3))
        approved = checker.approve_payout(held.payout_id, "checked")
        self.assertEqual(state_name(approved.state), "ACCEPTED")
        self.assertEqual(len(recorder.calls), 1)
        attempt, error, delay = recorder.calls[0]
        self.assertEqual(attempt, 1)
        self.assertEqual(error.code, grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(error.reason, "UPSTREAM_UNAVAILABLE")
        self.assertGreaterEqual(delay, 1.0)
        self.assertEqual(seen, ["AWAITING_APPROVAL"])
        self.assertEqual(sandbox.payouts_for(account), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
