"""
Tests for L{socksd.server.workers}: C{twistd socksd --workers N}.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

import socksd
from socksd.server.workers import checkListens, workerArguments
from socksd.tap import Options

#: The checkout, so that twistd finds socksd's plugin.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(socksd.__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
SERVED = re.compile(r"worker (\d+) \(pid (\d+)\): \[socksd\.connection\]")
READY = re.compile(
    r"worker (\d+) \(pid (\d+)\): \[log_legacy\] SocksServerFactory starting"
)


def freePort() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def refusedConnect(port: int) -> None:
    """One SOCKS5 CONNECT to 127.0.0.1:1 (refused) through port C{port}."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(
            bytes.fromhex("05 01 00") + bytes.fromhex("05 01 00 01 7f000001 0001")
        )
        received = b""
        while len(received) < 12:
            chunk = client.recv(64)
            if not chunk:
                break
            received += chunk


def alive(pid: int) -> bool:
    """Whether process C{pid} still exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class WorkersOptionsTests(SynchronousTestCase):
    """
    The C{--workers} option and its checks.
    """

    def test_default(self) -> None:
        """
        Without C{--workers}, one process serves (C{workers} is 1).
        """
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["workers"], 1)

    def test_atLeastOne(self) -> None:
        """
        C{--workers 0} is a usage error.
        """
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--workers", "0"])

    def test_onlyPlainSockets(self) -> None:
        """
        Workers share tcp, tcp6 and unix listeners; a TLS or PROXY-protocol
        listener with C{--workers 2} is a usage error.
        """
        checkListens(["tcp:1080:interface=127.0.0.1", "tcp6:1080", "unix:/tmp/s"])
        for description in ("ssl:1443:privateKey=k.pem", "haproxy:tcp:1080"):
            self.assertRaises(ValueError, checkListens, [description])
            self.assertRaises(
                usage.UsageError,
                Options().parseOptions,
                ["--workers", "2", "--listen", description],
            )

    def test_workerArguments(self) -> None:
        """
        A worker gets the parent's options without C{--workers} (both
        spellings) and without C{--inherit-fds}.
        """
        self.assertEqual(
            workerArguments(
                [
                    "--workers",
                    "3",
                    "--listen",
                    "tcp:1080",
                    "--workers=2",
                    "--inherit-fds",
                    "3",
                    "--no-splice",
                ]
            ),
            ["--listen", "tcp:1080", "--no-splice"],
        )


class WorkersProcessTests(SynchronousTestCase):
    """
    C{twistd -n socksd --workers 2} in a subprocess.
    """

    def test_connectionsSpreadAndCleanStop(self) -> None:
        """
        Two workers both serve connections on the one port (each
        connection's log line names its worker's pid); a worker that is
        killed is logged and replaced; SIGTERM to the parent stops the
        parent and every worker.
        """
        port = freePort()
        logFile = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.addCleanup(os.unlink, logFile.name)
        env = dict(os.environ, PYTHONPATH=CHECKOUT)
        process = subprocess.Popen(
            [
                TWISTD,
                "-n",
                "--pidfile=",
                "socksd",
                "--workers",
                "2",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            stdout=logFile,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=CHECKOUT,
            start_new_session=True,
        )

        def cleanup() -> None:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

        self.addCleanup(cleanup)

        def log() -> str:
            with open(logFile.name) as reader:
                return reader.read()

        deadline = time.monotonic() + 30
        while len(set(READY.findall(log()))) < 2:
            self.assertIsNone(process.poll(), log())
            self.assertLess(time.monotonic(), deadline, log())
            time.sleep(0.1)
        workerPids = {int(pid) for _, pid in READY.findall(log())}
        self.assertEqual(len(workerPids), 2)

        served: set[int] = set()
        for attempt in range(400):
            refusedConnect(port)
            if attempt % 20 == 19:
                served = {int(pid) for _, pid in SERVED.findall(log())}
                if len(served) > 1:
                    break
                time.sleep(0.05)
        self.assertEqual(served, workerPids, log())

        # A worker that dies is logged and replaced.
        victim = min(workerPids)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while len(set(READY.findall(log()))) < 3:
            self.assertLess(time.monotonic(), deadline, log())
            time.sleep(0.1)
        self.assertIn(f"(pid {victim}) died", log())
        workerPids = {int(pid) for _, pid in READY.findall(log())} - {victim}
        self.assertEqual(len(workerPids), 2)
        refusedConnect(port)

        process.send_signal(signal.SIGTERM)
        # twistd ends by re-raising the signal that stopped it.
        self.assertIn(process.wait(20), (0, -signal.SIGTERM), log())
        self.assertIn("Server Shut Down", log())
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workerPids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual([pid for pid in workerPids if alive(pid)], [], log())
        self.assertIn("stopped", log())


class HangupTests(SynchronousTestCase):
    """
    SIGHUP reaches every worker, so each reloads its rules.
    """

    def test_signalWorkers(self) -> None:
        """
        L{WorkersService.signalWorkers} signals every running worker and
        survives a worker that has already exited.
        """
        from twisted.internet.error import ProcessExitedAlready
        from twisted.internet.testing import MemoryReactor

        from socksd.server.workers import WorkersService

        class Transport:
            def __init__(self, gone: bool = False) -> None:
                self.signals: list[str] = []
                self.gone = gone

            def signalProcess(self, name: str) -> None:
                if self.gone:
                    raise ProcessExitedAlready()
                self.signals.append(name)

        class Worker:
            def __init__(self, transport: Transport) -> None:
                self.transport = transport

        service = WorkersService(MemoryReactor(), [], 2, [])
        running, gone = Transport(), Transport(gone=True)
        service.workers = {0: Worker(running), 1: Worker(gone)}
        service.signalWorkers("HUP")
        self.assertEqual(running.signals, ["HUP"])
        self.assertEqual(len(self.flushLoggedErrors(ProcessExitedAlready)), 1)

    def test_reloadForwards(self) -> None:
        """
        The SIGHUP handler of C{twistd socksd} passes the signal on before
        reloading its own rules.
        """
        from socksd.tap import _ReloadOnHangup

        calls: list[str] = []

        class Policy:
            def reload(self) -> bool:
                calls.append("reload")
                return True

        _ReloadOnHangup(Policy(), None, calls.append)._reload()
        self.assertEqual(calls, ["HUP", "reload"])
