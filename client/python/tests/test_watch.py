#!/usr/bin/python3
"""PayoutWatch's reconnect logic, without a gateway: streams scripted by a
fake stream factory (docs/client-retries.md, "Watching")."""

import threading
import unittest

import support

support.install_package()

import grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402

from aopay_payouts import (DEFAULT_RETRY, DEFAULT_WATCH_RETRY,  # noqa: E402
                           PayoutClient, PayoutError, PayoutWatch,
                           RetryPolicy, error_details_pb2, payout_pb2,
                           status_pb2)
from test_retry import FakeClock, FakeRpcError, packed  # noqa: E402
from test_retry import rpc_error  # noqa: E402

C = grpc.StatusCode
HEADER = "payout-watch-cursor"


def event(cursor, state="ACCEPTED", payout_id="po_1"):
    return payout_pb2.PayoutEvent(
        cursor=cursor, payout=payout_pb2.Payout(
            payout_id=payout_id,
            state=payout_pb2.PayoutState.Value("PAYOUT_STATE_" + state)))


def shutting_down():
    """UNAVAILABLE / SHUTTING_DOWN with RetryInfo 1 s, as a stopping
    gateway ends its watches."""
    status = status_pb2.Status(
        code=C.UNAVAILABLE.value[0], message="shutting down",
        details=[packed(error_details_pb2.ErrorInfo(
            reason="SHUTTING_DOWN", domain="payout.aopay.v1")),
            packed(error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=1)))])
    return FakeRpcError(C.UNAVAILABLE, "shutting down",
                        [("grpc-status-details-bin",
                          status.SerializeToString())])


class FakeStream:
    """One WatchPayouts call: its header (None: the call failed before it),
    its events, then its end: an RpcError, None for a clean end, or "block"
    to wait until cancelled (like a live stream with nothing new)."""

    def __init__(self, header, events=(), end=None, on_event=None):
        self.header = header
        self.events = list(events)
        self.end = end
        self.on_event = on_event
        self.cancelled = threading.Event()
        self.blocked = threading.Event()
        self.reads = 0

    def initial_metadata(self):
        return ((HEADER, self.header),) if self.header is not None else ()

    def __iter__(self):
        return self

    def __next__(self):
        self.reads += 1
        if self.cancelled.is_set():
            raise FakeRpcError(C.CANCELLED, "Locally cancelled", ())
        if self.events:
            next_event = self.events.pop(0)
            if self.on_event is not None:
                self.on_event(next_event)
            return next_event
        if self.end == "block":
            self.blocked.set()
            self.cancelled.wait()
            raise FakeRpcError(C.CANCELLED, "Locally cancelled", ())
        if self.end is None:
            raise StopIteration
        raise self.end

    def cancel(self):
        self.cancelled.set()
        return True


def failed(error):
    """A stream that ends with `error` before its header."""
    return FakeStream(None, end=error)


class Factory:
    """The stream factory: hands out the scripted streams in order and
    records the cursor each was opened after."""

    def __init__(self, *streams):
        self.streams = list(streams)
        self.opened = []
        self.cursors = []

    def __call__(self, after_cursor):
        self.cursors.append(after_cursor)
        stream = self.streams.pop(0)
        self.opened.append(stream)
        return stream


def fast(**kwargs):
    kwargs.setdefault("jitter", 0)
    return RetryPolicy(**kwargs)


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, attempt, error, delay):
        self.calls.append((attempt, error, delay))


def take(watch, count):
    return [next(watch) for _ in range(count)]


class WatchTest(unittest.TestCase):

    def watch(self, factory, after_cursor="", policy=None, clock=None):
        clock = clock or FakeClock()
        watch = PayoutWatch(factory, after_cursor,
                            fast() if policy is None else policy,
                            clock=clock, sleep=clock.sleep)
        self.addCleanup(watch.close)
        return watch, clock

    def test_the_default_watch_policy(self):
        policy = DEFAULT_WATCH_RETRY
        self.assertEqual(policy.max_attempts, 30)
        self.assertEqual(policy.max_elapsed, 300)
        self.assertEqual(policy.max_backoff, 10)
        for name in ("initial_backoff", "multiplier", "jitter"):
            self.assertEqual(getattr(policy, name),
                             getattr(DEFAULT_RETRY, name), name)

    def test_header_is_the_cursor_before_the_first_event(self):
        # Started "from now on": the first stream's header says where that
        # is; the stream breaks before any event; the next stream resumes
        # after the header's cursor, not "from now on" again.
        factory = Factory(FakeStream("c5", end=rpc_error(C.UNAVAILABLE)),
                          FakeStream("c5", [event("c6"), event("c7")],
                                     end="block"))
        watch, clock = self.watch(factory)
        self.assertEqual(watch.cursor, "c5")  # known once it returns
        self.assertEqual([e.cursor for e in take(watch, 2)], ["c6", "c7"])
        self.assertEqual(factory.cursors, ["", "c5"])
        self.assertEqual(watch.cursor, "c7")
        self.assertEqual(clock.sleeps, [0.5])

    def test_resumes_after_the_last_event_without_repeating_it(self):
        recorder = Recorder()
        factory = Factory(
            FakeStream("c1", [event("c2"), event("c3")], end=shutting_down()),
            FakeStream("c3", [event("c4")], end=None),  # a clean end
            FakeStream("c4", [event("c5")], end="block"))
        watch, clock = self.watch(factory, "c1",
                                  fast(on_retry=recorder))
        self.assertEqual(watch.cursor, "c1")
        cursors = []
        for got in watch:
            cursors.append(got.cursor)
            self.assertEqual(watch.cursor, got.cursor)
            if got.cursor == "c5":
                break
        self.assertEqual(cursors, ["c2", "c3", "c4", "c5"])
        self.assertEqual(factory.cursors, ["c1", "c3", "c4"])
        # RetryInfo (1 s) is the floor of the first wait; each stream that
        # opened started the count again.
        self.assertEqual(clock.sleeps, [1.0, 0.5])
        self.assertEqual([(c[0], c[1].reason) for c in recorder.calls],
                         [(1, "SHUTTING_DOWN"), (1, "")])
        self.assertEqual(recorder.calls[1][1].code, C.OK)

    def test_reads_an_event_only_when_asked(self):
        stream = FakeStream("c0", [event("c1"), event("c2")], end="block")
        watch, _ = self.watch(Factory(stream))
        self.assertEqual(stream.reads, 0)
        next(watch)
        self.assertEqual(stream.reads, 1)

    def test_gives_up_after_failed_reconnections_in_a_row(self):
        recorder = Recorder()
        factory = Factory(
            FakeStream("c0", [event("c1")], end=rpc_error(C.UNAVAILABLE)),
            failed(rpc_error(C.UNAVAILABLE)),
            # Opens: the count starts again, though it breaks at once.
            FakeStream("c1", [event("c2")],
                       end=rpc_error(C.RESOURCE_EXHAUSTED, "OVERLOADED")),
            failed(rpc_error(C.UNAVAILABLE)),
            failed(rpc_error(C.UNAVAILABLE, "SHUTTING_DOWN")),
            FakeStream("never", [event("c9")]))
        watch, _ = self.watch(factory, "",
                              fast(max_attempts=3, on_retry=recorder))
        self.assertEqual([e.cursor for e in take(watch, 2)], ["c1", "c2"])
        with self.assertRaises(PayoutError) as raised:
            next(watch)
        self.assertEqual(raised.exception.reason, "SHUTTING_DOWN")
        self.assertEqual(raised.exception.attempts, 3)
        self.assertEqual([c[0] for c in recorder.calls], [1, 2, 1, 2])
        self.assertEqual(factory.cursors, ["", "c1", "c1", "c2", "c2"])
        self.assertEqual(len(factory.streams), 1)  # never opened
        self.assertEqual(watch.cursor, "c2")  # where to resume
        with self.assertRaises(StopIteration):
            next(watch)

    def test_the_time_limit_counts_from_the_break(self):
        clock = FakeClock()

        def long_lived(_event):
            clock.now += 3600  # the stream ran for an hour

        factory = Factory(
            FakeStream("c0", [event("c1")], end=rpc_error(C.UNAVAILABLE),
                       on_event=long_lived),
            *[failed(rpc_error(C.UNAVAILABLE)) for _ in range(10)])
        watch, clock = self.watch(
            factory, "", fast(max_attempts=100, initial_backoff=1,
                              max_backoff=1, max_elapsed=3.5), clock)
        next(watch)
        with self.assertRaises(PayoutError) as raised:
            next(watch)
        # Reconnected although the stream began an hour before; gave up
        # once 3.5 s of failed reconnections were spent.
        self.assertEqual(raised.exception.attempts, 4)
        self.assertEqual(clock.sleeps, [1, 1, 1])
        self.assertEqual(factory.cursors, ["", "c1", "c1", "c1"])

    def test_first_stream_is_retried_before_returning(self):
        factory = Factory(failed(rpc_error(C.UNAVAILABLE)),
                          failed(rpc_error(C.UNAVAILABLE, "SHUTTING_DOWN")),
                          FakeStream("c3", [event("c4")]))
        watch, clock = self.watch(factory, "", fast(max_attempts=3))
        self.assertEqual(watch.cursor, "c3")
        self.assertEqual(next(watch).cursor, "c4")
        self.assertEqual(factory.cursors, ["", "", ""])

    def test_first_stream_gives_up_with_the_attempts(self):
        factory = Factory(*[failed(rpc_error(C.UNAVAILABLE))
                            for _ in range(3)])
        with self.assertRaises(PayoutError) as raised:
            self.watch(factory, "c1", fast(max_attempts=3))
        self.assertEqual(raised.exception.attempts, 3)
        self.assertEqual(factory.cursors, ["c1"] * 3)

    def test_never_retried(self):
        cases = [(C.OUT_OF_RANGE, "CURSOR_EXPIRED"),
                 (C.INVALID_ARGUMENT, "INVALID_REQUEST"),
                 (C.UNAUTHENTICATED, "UNAUTHENTICATED"),
                 (C.PERMISSION_DENIED, "PERMISSION_DENIED"),
                 (C.UNIMPLEMENTED, ""), (C.DEADLINE_EXCEEDED, ""),
                 (C.CANCELLED, ""), (C.INTERNAL, ""), (C.UNKNOWN, ""),
                 (C.RESOURCE_EXHAUSTED, "CLIENT_LIMIT_EXCEEDED")]
        for code, reason in cases:
            # Refused before the stream starts: raised by the watch's
            # creation (watch_payouts), after one attempt.
            factory = Factory(failed(rpc_error(code, reason)),
                              FakeStream("c0"))
            with self.assertRaises(PayoutError) as raised:
                self.watch(factory, "c0")
            self.assertEqual((raised.exception.code, raised.exception.reason,
                              raised.exception.attempts), (code, reason, 1))
            self.assertEqual(len(factory.opened), 1, code)
            # After the header (retention deleted events after the cursor:
            # the gateway says so once the stream started).
            factory = Factory(FakeStream("c0", [event("c1")],
                                         end=rpc_error(code, reason)),
                              FakeStream("c1"))
            watch, clock = self.watch(factory, "c0")
            next(watch)
            with self.assertRaises(PayoutError) as raised:
                next(watch)
            self.assertEqual(
                (raised.exception.code, raised.exception.attempts), (code, 1))
            self.assertEqual(len(factory.opened), 1, code)
            self.assertEqual(clock.sleeps, [])
            self.assertEqual(watch.cursor, "c1")

    def test_retry_none_raises_the_first_error_as_is(self):
        factory = Factory(FakeStream("c0", [event("c1")],
                                     end=shutting_down()),
                          FakeStream("c1"))
        watch = PayoutWatch(factory, "", None)
        self.addCleanup(watch.close)
        next(watch)
        with self.assertRaises(PayoutError) as raised:
            next(watch)
        self.assertEqual(raised.exception.reason, "SHUTTING_DOWN")
        self.assertEqual(raised.exception.attempts, 1)
        self.assertEqual(len(factory.opened), 1)
        factory = Factory(failed(rpc_error(C.UNAVAILABLE)), FakeStream("c0"))
        with self.assertRaises(PayoutError) as raised:
            PayoutWatch(factory, "", None)
        self.assertEqual(raised.exception.attempts, 1)
        self.assertEqual(len(factory.opened), 1)

    def test_close_ends_the_iteration(self):
        stream = FakeStream("c0", [event("c1"), event("c2")], end="block")
        watch, _ = self.watch(Factory(stream))
        self.assertEqual(next(watch).cursor, "c1")
        watch.close()
        self.assertTrue(stream.cancelled.is_set())
        with self.assertRaises(StopIteration):
            next(watch)
        self.assertEqual(watch.cursor, "c1")
        watch.close()  # again: nothing

    def test_close_from_another_thread_while_reading(self):
        stream = FakeStream("c0", [event("c1")], end="block")
        watch = PayoutWatch(Factory(stream), "", fast())
        self.addCleanup(watch.close)
        got = []
        outcome = []

        def read():
            try:
                for e in watch:
                    got.append(e.cursor)
                outcome.append("ended")
            except Exception as error:  # reported by the assertion below
                outcome.append(error)

        reader = threading.Thread(target=read)
        reader.start()
        self.addCleanup(reader.join, 10)
        self.assertTrue(stream.blocked.wait(10))
        watch.close()
        reader.join(10)
        self.assertFalse(reader.is_alive())
        self.assertEqual(outcome, ["ended"])
        self.assertEqual(got, ["c1"])

    def test_close_during_the_backoff_ends_the_wait(self):
        waiting = threading.Event()
        factory = Factory(FakeStream("c0", [event("c1")],
                                     end=rpc_error(C.UNAVAILABLE)),
                          FakeStream("c1"))
        # The real wait of 60 s; on_retry runs just before it.
        watch = PayoutWatch(factory, "", fast(
            initial_backoff=60, on_retry=lambda *a: waiting.set()))
        self.addCleanup(watch.close)
        next(watch)
        outcome = []

        def read():
            outcome.append(list(watch))

        reader = threading.Thread(target=read)
        reader.start()
        self.addCleanup(reader.join, 10)
        self.assertTrue(waiting.wait(10))
        watch.close()
        reader.join(10)
        self.assertFalse(reader.is_alive(), "close() ended the backoff")
        self.assertEqual(outcome, [[]])
        self.assertEqual(len(factory.opened), 1)  # no new stream

    def test_with_block_closes(self):
        stream = FakeStream("c0", [event("c1")], end="block")
        with PayoutWatch(Factory(stream), "", fast()) as watch:
            self.assertEqual(next(watch).cursor, "c1")
        self.assertTrue(stream.cancelled.is_set())
        with self.assertRaises(StopIteration):
            next(watch)

    def test_a_stream_without_the_header_opens_with_its_first_event(self):
        # A gateway that sends no header: its first event shows the stream
        # is open, and is handed over first.
        factory = Factory(
            FakeStream(None, [event("c1"), event("c2")],
                       end=rpc_error(C.UNAVAILABLE)),
            failed(rpc_error(C.UNAVAILABLE)),
            FakeStream(None, [event("c3")], end="block"))
        watch, _ = self.watch(factory, "c0", fast(max_attempts=2))
        self.assertEqual(watch.cursor, "c0")
        with self.assertRaises(PayoutError) as raised:
            take(watch, 3)
        self.assertEqual(raised.exception.attempts, 2)
        self.assertEqual(factory.cursors, ["c0", "c2"])


class FakeWatchChannel:
    """A grpc.Channel whose WatchPayouts calls are scripted streams."""

    def __init__(self, *streams):
        self.streams = list(streams)
        self.calls = []

    def unary_unary(self, *args, **kwargs):
        return None

    def stream_stream(self, *args, **kwargs):
        return None

    def unary_stream(self, path, request_serializer, response_deserializer):
        self.path = path

        def call(request, timeout=None, metadata=None):
            self.calls.append((request_serializer(request), timeout,
                               metadata))
            return self.streams.pop(0)
        return call


class WatchPayoutsTest(unittest.TestCase):

    def test_requests_and_metadata(self):
        channel = FakeWatchChannel(
            FakeStream("c0", [event("c1")], end=rpc_error(C.UNAVAILABLE)),
            FakeStream("c1", [event("c2")], end="block"))
        client = PayoutClient(channel=channel, token="t",
                              allow_insecure_token=True)
        with client.watch_payouts(
                states=["ACCEPTED", payout_pb2.PAYOUT_STATE_FAILED],
                retry=fast(initial_backoff=0),
                call_metadata=[("x-trace", "1")]) as watch:
            self.assertEqual([e.cursor for e in take(watch, 2)],
                             ["c1", "c2"])
        self.assertEqual(channel.path,
                         "/aopay.payout.v1.PayoutService/WatchPayouts")
        requests = [payout_pb2.WatchPayoutsRequest.FromString(c[0])
                    for c in channel.calls]
        self.assertEqual([r.after_cursor for r in requests], ["", "c1"])
        for request in requests:
            self.assertEqual(list(request.states),
                             [payout_pb2.PAYOUT_STATE_ACCEPTED,
                              payout_pb2.PAYOUT_STATE_FAILED])
        for _, timeout, metadata in channel.calls:
            self.assertIsNone(timeout)  # no deadline
            self.assertEqual(metadata, (("authorization", "Bearer t"),
                                        ("x-trace", "1")))

    def test_a_client_without_retries_watches_without_reconnecting(self):
        channel = FakeWatchChannel(
            FakeStream("c0", [event("c1")], end=rpc_error(C.UNAVAILABLE)),
            FakeStream("c1", [event("c2")], end="block"))
        client = PayoutClient(channel=channel, retry=None)
        with client.watch_payouts() as watch:
            self.assertEqual(next(watch).cursor, "c1")
            with self.assertRaises(PayoutError) as raised:
                next(watch)
        self.assertEqual(raised.exception.code, C.UNAVAILABLE)
        self.assertEqual(len(channel.calls), 1)

    def test_unknown_state_is_refused_before_calling(self):
        channel = FakeWatchChannel()
        client = PayoutClient(channel=channel)
        with self.assertRaises(ValueError):
            client.watch_payouts(states=["SETTLED"])
        self.assertEqual(channel.calls, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
