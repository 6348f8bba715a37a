#!/usr/bin/python3
"""A caller in another language: Python drives the real payout-server.

Starts build/server/payout-server on 127.0.0.1:0 with the in-process sandbox
and a fresh SQLite ledger, and calls it over gRPC with message classes that
protoc generated at build time (Debian's grpc_tools is too old to generate
service stubs, so methods are called by their full names).

Environment (set by ctest, see tests/CMakeLists.txt):
  PAYOUT_SERVER_BIN  the payout-server binary
  PYTHON_PROTO_DIR   the directory holding the generated *_pb2.py modules

Skips only when grpc or google.protobuf cannot be imported.
"""

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

try:
    import grpc
    import google.protobuf  # noqa: F401

    _IMPORT_ERROR = None
except ImportError as error:  # Only the Python runtime may be missing.
    _IMPORT_ERROR = error

_SERVICE = "/aopay.payout.v1.PayoutService/"
_STARTUP_TIMEOUT_S = 30
_SHUTDOWN_TIMEOUT_S = 30
_RPC_TIMEOUT_S = 10


def _read_listening_address(process, stderr_path, timeout_s):
    """The HOST:PORT of the server's "listening on HOST:PORT" stdout line."""
    prefix = b"listening on "
    deadline = time.monotonic() + timeout_s
    pending = b""
    fd = process.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    "no 'listening on' line within %ss; stderr:\n%s"
                    % (timeout_s, _tail(stderr_path)))
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                process.wait()
                raise AssertionError(
                    "payout-server exited (status %s) before listening; "
                    "stderr:\n%s" % (process.returncode, _tail(stderr_path)))
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.startswith(prefix):
                    return line[len(prefix):].strip().decode()


def _drain(fd):
    """Reads a pipe until EOF so the child never blocks writing to it."""
    while os.read(fd, 4096):
        pass


def _tail(path, limit=4000):
    try:
        with open(path, "rb") as f:
            return f.read()[-limit:].decode(errors="replace")
    except OSError as error:
        return "(stderr unreadable: %s)" % error


@unittest.skipIf(_IMPORT_ERROR is not None,
                 "grpc or google.protobuf not importable by %s: %s" %
                 (sys.executable, _IMPORT_ERROR))
class PythonClientTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        server_bin = os.environ.get("PAYOUT_SERVER_BIN")
        proto_dir = os.environ.get("PYTHON_PROTO_DIR")
        if not server_bin or not proto_dir:
            raise RuntimeError(
                "PAYOUT_SERVER_BIN and PYTHON_PROTO_DIR must be set "
                "(run through ctest)")
        # Generated code first, so its google.rpc wins over any installed one.
        sys.path.insert(0, proto_dir)
        global payout_pb2, status_pb2, error_details_pb2
        from aopay.payout.v1 import payout_pb2
        from google.rpc import error_details_pb2
        from google.rpc import status_pb2

        cls.temp_dir = tempfile.TemporaryDirectory(prefix="python_client_")
        cls.addClassCleanup(cls.temp_dir.cleanup)
        cls.stderr_path = os.path.join(cls.temp_dir.name, "server.stderr")
        ledger_path = os.path.join(cls.temp_dir.name, "ledger.db")

        # The server reads PAYOUT_<FLAG> variables; none may leak in from the
        # caller's environment.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PAYOUT_")}
        with open(cls.stderr_path, "wb") as stderr:
            cls.process = subprocess.Popen(
                [server_bin, "--listen=127.0.0.1:0", "--metrics_listen=",
                 "--aopay_url=sandbox", "--ledger=sqlite:" + ledger_path],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=stderr, env=env)
        cls.drainer = None
        cls.addClassCleanup(cls._stop_server)
        cls.address = _read_listening_address(cls.process, cls.stderr_path,
                                              _STARTUP_TIMEOUT_S)
        cls.drainer = threading.Thread(
            target=_drain, args=(cls.process.stdout.fileno(),), daemon=True)
        cls.drainer.start()

        cls.channel = grpc.insecure_channel(cls.address)
        cls.addClassCleanup(cls.channel.close)

    @classmethod
    def _stop_server(cls):
        """SIGTERM, then wait; a clean shutdown exits 0."""
        process = cls.process
        exited_early = process.poll() is not None
        if not exited_early:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(
                    "payout-server ignored SIGTERM for %ss; stderr:\n%s"
                    % (_SHUTDOWN_TIMEOUT_S, _tail(cls.stderr_path)))
        if cls.drainer is None:
            process.stdout.close()
            return  # setUpClass has already reported why it failed.
        # EOF came with the exit. The pipe is closed only once nobody reads
        # it, so its fd number cannot be reused under the reader.
        cls.drainer.join(timeout=_SHUTDOWN_TIMEOUT_S)
        if not cls.drainer.is_alive():
            process.stdout.close()
        if exited_early:
            raise AssertionError(
                "payout-server exited by itself (status %s) during the tests; "
                "stderr:\n%s" % (process.returncode, _tail(cls.stderr_path)))
        if process.returncode != 0:
            raise AssertionError(
                "payout-server exited with status %s after SIGTERM; "
                "stderr:\n%s" % (process.returncode, _tail(cls.stderr_path)))

    def _call(self, method, request, response_class):
        rpc = self.channel.unary_unary(
            _SERVICE + method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString)
        return rpc(request, timeout=_RPC_TIMEOUT_S)

    def _create_payout(self, request):
        return self._call("CreatePayout", request, payout_pb2.Payout)

    def _get_payout(self, request):
        return self._call("GetPayout", request, payout_pb2.Payout)

    def _list_payouts(self, request):
        return self._call("ListPayouts", request,
                          payout_pb2.ListPayoutsResponse)

    @staticmethod
    def _valid_request():
        return payout_pb2.CreatePayoutRequest(
            request_id="py-" + uuid.uuid4().hex,
            beneficiary=payout_pb2.Beneficiary(
                account_number="100000011836",
                ifsc="SBIN0000002",
                name="Dean Jon",
                email="abc@gmail.com",
                mobile="9959640000"),
            amount_paise=1234,
            mode=payout_pb2.TRANSFER_MODE_IMPS)

    def _assert_accepted(self, payout, request):
        self.assertEqual(payout.state, payout_pb2.PAYOUT_STATE_ACCEPTED,
                         payout_pb2.PayoutState.Name(payout.state))
        self.assertTrue(payout.payout_id.startswith("po_"), payout.payout_id)
        self.assertTrue(payout.transaction_id.startswith("TERF"),
                        payout.transaction_id)
        self.assertEqual(payout.request_id, request.request_id)
        self.assertEqual(payout.amount_paise, 1234)
        self.assertEqual(payout.mode, payout_pb2.TRANSFER_MODE_IMPS)
        self.assertEqual(payout.beneficiary.ifsc, "SBIN0000002")

    def _status_details(self, rpc_error):
        """The google.rpc.Status from the grpc-status-details-bin trailer."""
        for key, value in rpc_error.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                return status_pb2.Status.FromString(value)
        self.fail("no grpc-status-details-bin trailer: %r" % rpc_error)

    def test_create_payout_is_accepted_and_replays_idempotently(self):
        request = self._valid_request()
        first = self._create_payout(request)
        self._assert_accepted(first, request)

        replay = self._create_payout(request)
        self.assertEqual(replay.payout_id, first.payout_id)
        self.assertEqual(replay.transaction_id, first.transaction_id)
        self.assertEqual(replay.state, payout_pb2.PAYOUT_STATE_ACCEPTED)

    def test_invalid_request_gets_structured_error(self):
        request = self._valid_request()
        request.beneficiary.ifsc = "SBIN1234567"  # The fifth must be 0.
        request.beneficiary.mobile = "12345"
        with self.assertRaises(grpc.RpcError) as raised:
            self._create_payout(request)
        error = raised.exception
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT,
                         error.details())

        status = self._status_details(error)
        self.assertEqual(status.code,
                         grpc.StatusCode.INVALID_ARGUMENT.value[0])
        error_infos = []
        violations = []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                error_infos.append(info)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(v.field
                                  for v in bad_request.field_violations)
        self.assertEqual(len(error_infos), 1, status)
        self.assertEqual(error_infos[0].reason, "INVALID_REQUEST")
        self.assertEqual(error_infos[0].domain, "payout.aopay.v1")
        # Every violation, and only those: the other fields are valid.
        self.assertCountEqual(violations,
                              ["beneficiary.ifsc", "beneficiary.mobile"])

        # Nothing was recorded.
        with self.assertRaises(grpc.RpcError) as raised:
            self._get_payout(
                payout_pb2.GetPayoutRequest(request_id=request.request_id))
        self.assertEqual(raised.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_get_and_list_find_the_recorded_payout(self):
        request = self._valid_request()
        created = self._create_payout(request)
        self._assert_accepted(created, request)

        by_request_id = self._get_payout(
            payout_pb2.GetPayoutRequest(request_id=request.request_id))
        self._assert_accepted(by_request_id, request)
        self.assertEqual(by_request_id.payout_id, created.payout_id)
        self.assertEqual(by_request_id.transaction_id,
                         created.transaction_id)

        listed = self._list_payouts(
            payout_pb2.ListPayoutsRequest(page_size=500))
        matches = [p for p in listed.payouts
                   if p.payout_id == created.payout_id]
        self.assertEqual(len(matches), 1, listed)
        self._assert_accepted(matches[0], request)


if __name__ == "__main__":
    unittest.main(verbosity=2)
