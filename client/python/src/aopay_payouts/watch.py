"""PayoutWatch: WatchPayouts, followed across broken streams and gateway
restarts (docs/client-retries.md, "Watching")."""

import threading
import time

import grpc

from .errors import PayoutError
from .retry import NO_RETRY, is_retryable

#: The initial-metadata header of every WatchPayouts stream: the cursor the
#: stream starts after.
CURSOR_HEADER = "payout-watch-cursor"


def _header_cursor(initial_metadata):
    """The payout-watch-cursor header's value, or None."""
    for key, value in initial_metadata or ():
        if key == CURSOR_HEADER:
            return value
    return None


class PayoutWatch:
    """Every payout event after a cursor, once each and in order, across
    broken streams and gateway restarts. Made by PayoutClient.watch_payouts.

    Iterate it for PayoutEvent messages; each is read from the stream only
    when asked for. It runs until closed (close(), or leaving its `with`
    block, from any thread), which ends the iteration; it has no deadline.

    It keeps one resume cursor (`cursor`): the stream's payout-watch-cursor
    header until the first event, then the cursor of the last event handed
    over. When a stream ends with a retryable error (is_retryable:
    UNAVAILABLE with any reason or none, RESOURCE_EXHAUSTED / OVERLOADED) or
    without an error, it opens a new stream after that cursor, after the
    policy's backoff (never shorter than the error's RetryInfo). The
    policy's limits count failed reconnections in a row: a stream that
    opens (its header, or else its first event, arrives) starts the count
    and the time again, and the time of a series runs from the moment the
    stream broke. When they run out, or on any other error
    (OUT_OF_RANGE / CURSOR_EXPIRED, INVALID_ARGUMENT, UNAUTHENTICATED, ...),
    it raises the PayoutError, carrying the attempts of the series, and
    ends; `cursor` still says where to resume.

    The first stream is opened (and retried the same way) before the
    constructor returns: a watch started without a cursor then sees every
    event recorded after that, and `cursor` already names where it started.

    Args:
      open_stream: called as open_stream(after_cursor); starts one
        WatchPayouts call and returns it (an iterator of PayoutEvent with
        initial_metadata() and cancel(), as grpc's unary_stream calls are).
      after_cursor: the cursor of the last event already received; "" for
        "from now on".
      retry: the RetryPolicy; None for a single attempt (the first error is
        raised as is).
      clock, sleep: time.monotonic and an interruptible wait by default.
    """

    def __init__(self, open_stream, after_cursor="", retry=None, *,
                 clock=time.monotonic, sleep=None):
        self._open_stream = open_stream
        self._policy = retry or NO_RETRY
        self._clock = clock
        self._closing = threading.Event()
        self._sleep = sleep or self._closing.wait
        self._lock = threading.Lock()
        self._cursor = after_cursor or ""
        self._stream = None
        self._opened = False  # the current stream's header or event came
        self._pending = None  # an event read while waiting for the header
        self._number = 1  # the current stream's attempt in its series
        self._started = clock()  # when the series began
        try:
            self._start()
            while not self._opened and not self._closing.is_set():
                # No header: read on, to learn how the stream ended (or, from
                # a gateway that sends none, its first event).
                self._pending, failure = self._read(self._stream)
                if failure is None:
                    self._opened = True
                else:
                    self._retry_after(failure)
        except BaseException:
            self.close()
            raise

    @property
    def cursor(self):
        """The resume cursor: pass it as after_cursor to watch again after
        everything handed over so far."""
        return self._cursor

    def close(self):
        """Ends the watch: cancels its stream (not an error) and ends the
        iteration; safe from any thread, and more than once."""
        with self._lock:
            self._closing.set()
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            stream = self._stream
            if stream is None or self._closing.is_set():
                raise StopIteration
            if self._pending is not None:
                event, self._pending = self._pending, None
            else:
                event, failure = self._read(stream)
                if self._closing.is_set():
                    raise StopIteration  # closed meanwhile: not handed over
                if failure is not None:
                    self._retry_after(failure)
                    continue
            self._opened = True
            self._cursor = event.cursor
            return event

    # -- the reconnect logic ------------------------------------------------

    @staticmethod
    def _read(stream):
        """(the next event, None), or (None, the PayoutError the stream
        ended with). A stream that ends without an error gives a PayoutError
        with code OK, reconnected like a retryable error."""
        try:
            return next(stream), None
        except StopIteration:
            return None, PayoutError(grpc.StatusCode.OK,
                                     "the watch stream ended without an "
                                     "error")
        except grpc.RpcError as error:
            return None, PayoutError.from_rpc_error(error)

    def _retry_after(self, error):
        """Waits and opens the next stream after the current one ended with
        `error`; raises `error` (and ends the watch) when the policy says
        no. Returns at once when the watch is closed meanwhile."""
        policy = self._policy
        if self._opened:
            # The stream that broke had opened: a new series starts with it.
            self._number = 1
            self._started = self._clock()
        error.attempts = self._number
        if (self._number >= policy.max_attempts
                or not (error.code == grpc.StatusCode.OK
                        or is_retryable(error))):
            self.close()
            raise error
        delay = policy.backoff(self._number, error.retry_delay)
        if self._clock() + delay - self._started > policy.max_elapsed:
            self.close()
            raise error
        if policy.on_retry is not None:
            policy.on_retry(self._number, error, delay)
        self._sleep(delay)
        if self._closing.is_set():
            return
        self._number += 1
        self._start()

    def _start(self):
        """Opens a stream after the resume cursor and waits for its header
        (or for its end, when it fails first)."""
        stream = self._open_stream(self._cursor)
        with self._lock:
            if self._closing.is_set():
                stream.cancel()
                return
            self._stream = stream
        self._opened = False
        header = _header_cursor(stream.initial_metadata())
        if header is not None:
            self._opened = True
            if not self._cursor:
                # Where a stream "from now on" starts: resuming after it
                # misses nothing recorded while reconnecting. A stream
                # opened after a cursor starts after that very cursor.
                self._cursor = header
