"""What the package's tests share: the package itself, and real processes.

install_package() builds and installs the package from this source tree into
a temporary directory with pip, exactly as a user would (--no-build-isolation
uses Debian's setuptools; protoc generates the messages), and puts it first
on sys.path. With AOPAY_PAYOUTS_TEST_INSTALLED=1 the tests use whatever
aopay_payouts is importable instead (to test an installed copy).

Sandbox and Gateway start aopay-sandbox and payout-server on 127.0.0.1:0
(AOPAY_SANDBOX_BIN and PAYOUT_SERVER_BIN name the programs). Nothing here
sleeps to synchronise: a process is ready when it prints its
"listening on HOST:PORT" line, and other conditions are polled with a
deadline (eventually()).
"""

import atexit
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_DIR = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PACKAGE_DIR))

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30

_installed = None


def install_package():
    """Makes `import aopay_payouts` load a fresh build of this tree."""
    global _installed
    if _installed is not None:
        return _installed
    if os.environ.get("AOPAY_PAYOUTS_TEST_INSTALLED") == "1":
        _installed = "(installed)"
        return _installed
    work = tempfile.mkdtemp(prefix="aopay_payouts_pkg_")
    atexit.register(shutil.rmtree, work, True)
    # A copy, so that the in-tree build leaves nothing in the repository.
    source = os.path.join(work, "source")
    shutil.copytree(PACKAGE_DIR, source, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "_proto", "__pycache__", "tests"))
    site = os.path.join(work, "site")
    env = dict(os.environ)
    env.setdefault("AOPAY_PROTO_DIR", os.path.join(REPO, "proto"))
    env["PIP_ROOT_USER_ACTION"] = "ignore"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", "--no-build-isolation", "--no-deps",
         "--no-index", "--target", site, source],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError("pip could not install the package:\n" +
                           result.stdout.decode(errors="replace"))
    sys.path.insert(0, site)
    _installed = site
    return site


def eventually(condition, timeout_s=10, what="the condition"):
    """Polls condition() until it is true; fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("%s did not hold within %ss" %
                                 (what, timeout_s))
        time.sleep(0.02)


def program(variable):
    path = os.environ.get(variable)
    if not path:
        raise RuntimeError("%s must name the program (ctest sets it)" %
                           variable)
    return path


def tail(path, limit=4000):
    try:
        with open(path, "rb") as f:
            return f.read()[-limit:].decode(errors="replace")
    except OSError as error:
        return "(unreadable: %s)" % error


class Process:
    """A child with stdout on a pipe (for its readiness line) and stderr in
    a file."""

    def __init__(self, argv, stderr_path):
        self.argv = argv
        self.stderr_path = stderr_path
        # The gateway reads PAYOUT_<FLAG> variables: none may leak in.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PAYOUT_")}
        with open(stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=stderr, env=env)
        self.address = self._read_listening()
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _read_listening(self):
        prefix = b"listening on "
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = b""
        fd = self.process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.kill()
                    raise AssertionError(
                        "%s: no 'listening on' line within %ss; stderr:\n%s"
                        % (self.argv[0], START_TIMEOUT_S,
                           tail(self.stderr_path)))
                if not selector.select(remaining):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.process.wait()
                    raise AssertionError(
                        "%s exited (status %s) before listening; stderr:\n%s"
                        % (self.argv[0], self.process.returncode,
                           tail(self.stderr_path)))
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.startswith(prefix):
                        return line[len(prefix):].strip().decode()

    def _drain(self):
        while os.read(self.process.stdout.fileno(), 4096):
            pass

    def stop(self):
        """SIGTERM and wait; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("%s ignored SIGTERM; stderr:\n%s" %
                                     (self.argv[0], tail(self.stderr_path)))
        self._drainer.join(timeout=STOP_TIMEOUT_S)
        self.process.stdout.close()
        return self.process.returncode

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Sandbox:
    """aopay-sandbox on 127.0.0.1:0 with a journal; restartable on the same
    port and journal."""

    def __init__(self, directory, *flags):
        self.directory = directory
        self.flags = list(flags)
        self.journal_path = os.path.join(directory, "journal.jsonl")
        self.process = None
        self.address = None
        self.start()

    def start(self):
        listen = self.address or "127.0.0.1:0"
        self.process = Process(
            [program("AOPAY_SANDBOX_BIN"), "--listen=" + listen,
             "--journal=" + self.journal_path] + self.flags,
            os.path.join(self.directory, "sandbox.stderr"))
        self.address = self.process.address

    @property
    def url(self):
        return "http://" + self.address

    def stop(self):
        if self.process is not None:
            self.process.stop()
            self.process = None

    def journal(self):
        entries = []
        try:
            with open(self.journal_path, encoding="utf-8") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return entries
        for line in lines:
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a line still being written
        return entries

    def payouts_for(self, account):
        """How many payout calls AOPay received for this account number."""
        count = 0
        for entry in self.journal():
            if entry.get("path") != "/api/V6/Payout/AOPPayout":
                continue
            try:
                body = json.loads(entry.get("body", ""))
            except ValueError:
                continue
            if isinstance(body, dict) and body.get("accountNumber") == account:
                count += 1
        return count


class Gateway:
    """payout-server on 127.0.0.1:0; restartable on the same port and
    ledger."""

    def __init__(self, directory, aopay_url, *flags):
        self.directory = directory
        self.aopay_url = aopay_url
        self.flags = list(flags)
        self.ledger = os.path.join(directory, "ledger.db")
        self.process = None
        self.address = None
        self.start()

    def start(self):
        argv = [program("PAYOUT_SERVER_BIN"),
                "--listen=" + (self.address or "127.0.0.1:0"),
                "--metrics_listen=127.0.0.1:0",
                "--aopay_url=" + self.aopay_url,
                "--ledger=sqlite:" + self.ledger,
                "--shutdown_grace=10s"]
        if self.aopay_url != "sandbox":
            argv.append("--registration_id=AOP-SANDBOX")
        self.process = Process(argv + self.flags,
                               os.path.join(self.directory, "gateway.stderr"))
        self.address = self.process.address

    def stop(self):
        """Stops the gateway; a clean shutdown exits 0."""
        if self.process is not None:
            status = self.process.stop()
            self.process = None
            if status != 0:
                raise AssertionError(
                    "payout-server exited with %s; stderr:\n%s" %
                    (status, tail(os.path.join(self.directory,
                                               "gateway.stderr"))))


_accounts = iter(range(1, 10000))


def unique_account(suffix="1836"):
    """A 12-digit account number no other test uses, ending in `suffix`
    (the sandbox's script: 1836 is paid, 0500 is an HTTP 500, ...)."""
    return "%04d%04d%s" % (os.getpid() % 10000, next(_accounts), suffix)


def beneficiary(account):
    return {"account_number": account, "ifsc": "SBIN0000002",
            "name": "Dean Jon", "email": "abc@gmail.com",
            "mobile": "9959640000"}


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_certificates(directory):
    """A CA, a server certificate for localhost and 127.0.0.1, and a client
    certificate whose CN is batch-host: ca.crt, server.{crt,key},
    batch-host.{crt,key}."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=test payout CA", "-keyout", "ca.key",
            "-out", "ca.crt", cwd=directory)
    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, ext in (("server", ["-extfile", "server.ext"]),
                      ("batch-host", [])):
        subject = "/CN=localhost" if name == "server" else "/CN=" + name
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                "-keyout", name + ".key", "-out", name + ".csr",
                cwd=directory)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt",
                "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-out", name + ".crt", *ext, cwd=directory)
