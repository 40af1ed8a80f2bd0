"""
Tests for L{socksd.service.workers}: C{twistd socksd --workers N}.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

from typing import Any

from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

import socksd
from socksd.service import workers
from socksd.service.workers import (
    METRICS_LINE,
    AdoptedPortsService,
    MetricsReporter,
    WorkersMetrics,
    WorkersService,
    _WorkerProtocol,
    checkListens,
    workerArguments,
)
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

    def startWorkers(self, options: list[str]) -> tuple[subprocess.Popen, Any]:
        """
        Start C{twistd -n socksd --workers 2 OPTIONS} (killed at the end of
        the test) and wait until both workers serve.

        @return: the process, and a function that reads its log so far.
        """
        logFile = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.addCleanup(os.unlink, logFile.name)
        process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "socksd", "--workers", "2", *options],
            stdout=logFile,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=CHECKOUT),
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
        return process, log

    def test_connectionsSpreadAndCleanStop(self) -> None:
        """
        Two workers both serve connections on the one port (each
        connection's log line names its worker's pid); a worker that is
        killed is logged and replaced; SIGTERM to the parent stops the
        parent and every worker.
        """
        port = freePort()
        process, log = self.startWorkers(["--listen", f"tcp:{port}:interface=127.0.0.1"])
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


    def test_fastOpen(self) -> None:
        """
        C{--workers 2 --tcp-fastopen 8} starts (it used to be refused): the
        parent sets the option on the shared socket without a warning, and
        both workers serve connections on it.
        """
        port = freePort()
        process, log = self.startWorkers(
            ["--listen", f"tcp:{port}:interface=127.0.0.1", "--tcp-fastopen", "8"]
        )
        workerPids = {int(pid) for _, pid in READY.findall(log())}
        served: set[int] = set()
        for attempt in range(400):
            refusedConnect(port)
            if attempt % 20 == 19:
                served = {int(pid) for _, pid in SERVED.findall(log())}
                if len(served) > 1:
                    break
                time.sleep(0.05)
        self.assertEqual(served, workerPids, log())
        self.assertNotIn("without TCP_FASTOPEN", log())

    def test_metricsFromWorkers(self) -> None:
        """
        With C{--metrics}, the parent alone listens on the metrics endpoint
        (no worker fails for want of the port) and serves every worker's
        connections, labelled by worker, within a few report intervals.
        """
        try:
            import prometheus_client  # noqa: F401
        except ImportError:  # pragma: no cover
            raise self.skipTest("prometheus_client is not installed")
        port, metricsPort = freePort(), freePort()
        process, log = self.startWorkers(
            [
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--metrics",
                f"tcp:{metricsPort}:interface=127.0.0.1",
            ]
        )
        for _ in range(20):
            refusedConnect(port)
        counted = re.compile(
            r'^socksd_connections_total\{.*worker="(\d)"\} (\d+)\.0$', re.M
        )
        deadline = time.monotonic() + 20
        while True:
            with socket.create_connection(("127.0.0.1", metricsPort), timeout=5) as web:
                web.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                page = b""
                while chunk := web.recv(65536):
                    page += chunk
            found = counted.findall(page.decode("utf-8", "replace"))
            if sum(int(count) for _, count in found) == 20:
                break
            self.assertLess(time.monotonic(), deadline, page.decode("utf-8", "replace"))
            time.sleep(0.2)
        self.assertTrue({worker for worker, _ in found} <= {"1", "2"}, found)
        self.assertNotIn("Address already in use", log())
        self.assertNotIn("died", log())


class AdoptedPortsTests(TestCase):
    """
    A worker's L{AdoptedPortsService} on an inherited listening socket.
    """

    async def test_nonBlocking(self) -> None:
        """
        The adopted socket is non-blocking whatever state it came in (the
        workers share it: one that lost the race for a connection would
        block in accept()), and stopping the service closes the worker's
        copy.
        """
        from twisted.internet import reactor

        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(True)
        inherited = os.dup(listener.fileno())
        service = AdoptedPortsService(reactor, [inherited], Factory())
        service.startService()
        [port] = service._ports
        self.assertFalse(os.get_blocking(listener.fileno()))
        self.assertEqual(port.getHost().port, listener.getsockname()[1])
        adopted = port.fileno()
        await service.stopService()
        self.assertRaises(OSError, os.fstat, adopted)

    async def test_acceptErrors(self) -> None:
        """
        With an L{AcceptErrors}, the adopted ports' accept loops report to
        it.
        """
        from twisted.internet import reactor

        from socksd.service.listen import AcceptErrors

        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        errors = AcceptErrors(reactor)
        service = AdoptedPortsService(
            reactor, [os.dup(listener.fileno())], Factory(), errors
        )
        service.startService()
        [port] = service._ports
        self.assertIs(port._logger.observer, errors)
        await service.stopService()


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

        from socksd.service.workers import WorkersService

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
        The SIGHUP handler of C{twistd socksd} passes the signal on (to the
        workers) before reloading its own configuration.
        """
        from twisted.internet.testing import MemoryReactorClock

        from socksd.server import SocksServerFactory
        from socksd.service.build import RESTART_OPTIONS, Reloader
        from socksd.tap import Options

        options = Options()
        options.parseOptions(["--max-connections", "5"])
        reactor = MemoryReactorClock()
        factory = SocksServerFactory(reactor)
        calls: list[str] = []
        running = {name: options[name] for name in RESTART_OPTIONS}
        reloader = Reloader(options, running, factory, reactor, calls.append)
        self.assertTrue(reloader.reload())
        self.assertEqual(calls, ["HUP"])
        self.assertEqual(factory.limits.maxTotal, 5)


def _recordFor(command: int = 1, relayed: tuple[int, int] | None = None) -> Any:
    """A finished connection's record, as the dispatcher leaves it."""
    from socksd.server._log import ConnectionRecord

    record = ConnectionRecord(None, 0.0)
    record.version = 5
    record.commandCode = command
    record.reply = "SUCCEEDED"
    if relayed is not None:

        class Relay:
            def byteCounts(self) -> tuple[int, int]:
                return relayed

        record.relay = Relay()
    else:
        record.reason = "client refused by policy"
    return record


class WorkersMetricsTests(SynchronousTestCase):
    """
    With C{--workers}, each worker reports its metrics on its output
    (L{MetricsReporter}); the parent keeps each worker's latest report and
    serves them all, labelled by worker (L{WorkersMetrics}).
    """

    def setUp(self) -> None:
        try:
            from socksd.metrics import Metrics
        except ImportError:  # pragma: no cover
            raise self.skipTest("prometheus_client is not installed")
        self.Metrics = Metrics

    def parent(self) -> WorkersService:
        return WorkersService(Clock(), [], 2, [])

    def test_reporterWritesLines(self) -> None:
        """
        The reporter writes the worker's metrics as one line when it
        starts, every interval, and when it stops.
        """
        metrics = self.Metrics()
        metrics.connectionClosed(_recordFor(relayed=(3, 4)))
        clock = Clock()
        stream = io.StringIO()
        reporter = MetricsReporter(metrics, clock, stream, interval=1.0)
        reporter.startService()
        clock.advance(1.0)
        reporter.stopService()
        lines = stream.getvalue().split("\n")
        self.assertEqual(lines.pop(), "")
        self.assertEqual(len(lines), 3)
        prefix = METRICS_LINE.decode("ascii")
        for line in lines:
            self.assertTrue(line.startswith(prefix), line)
            text = json.loads(line[len(prefix) :])
            self.assertIn('socksd_bytes_relayed_total{direction="up"} 3.0', text)

    def test_parentKeepsReports(self) -> None:
        """
        A report line replaces the worker's previous report and is not
        logged; other lines are logged; a worker that ends loses its report;
        an unreadable report is logged and ignored.
        """
        parent = self.parent()
        worker = _WorkerProtocol(parent, 1)
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        worker.outReceived(METRICS_LINE + json.dumps("first").encode() + b"\n")
        worker.outReceived(b"a log line\n" + METRICS_LINE + b'"sec')
        worker.outReceived(b'ond"\n')
        self.assertEqual(parent.metricsReports, {1: "second"})
        lines = [e.get("line") for e in logged if e.get("log_namespace") == workers.__name__]
        self.assertEqual(lines, ["a log line"])
        worker.outReceived(METRICS_LINE + b"{not json\n")
        self.assertEqual(parent.metricsReports, {1: "second"})
        self.assertTrue(any("unreadable metrics" in formatEvent(e) for e in logged))
        parent.workers[1] = worker
        parent._stopping = True
        parent._ended(worker, Failure(Exception("gone")))
        self.assertEqual(parent.metricsReports, {})

    def test_servedWithWorkerLabels(self) -> None:
        """
        The parent's registry serves every worker's series with its
        C{worker} label, each family once.
        """
        from prometheus_client import generate_latest

        parent = self.parent()
        for index, count in ((1, 2), (2, 5)):
            metrics = self.Metrics()
            for _ in range(count):
                metrics.connectionClosed(_recordFor(relayed=(10, 20)))
            parent.metricsReports[index] = metrics.text().decode("utf-8")
        text = generate_latest(WorkersMetrics(parent).registry).decode("utf-8")
        self.assertIn(
            'socksd_connections_total{command="connect",reply="SUCCEEDED",'
            'version="5",worker="1"} 2.0',
            text,
        )
        self.assertIn(
            'socksd_connections_total{command="connect",reply="SUCCEEDED",'
            'version="5",worker="2"} 5.0',
            text,
        )
        self.assertIn('socksd_bytes_relayed_total{direction="down",worker="2"} 100.0', text)
        self.assertEqual(text.count("# TYPE socksd_connections_total counter"), 1)

    def test_makeService(self) -> None:
        """
        With C{--workers 2 --metrics}, the parent serves the workers'
        metrics and counts nothing itself; a worker (C{--inherit-fds})
        counts and reports, and does not listen for metrics.
        """
        from twisted.application.internet import StreamServerEndpointService

        from socksd.tap import makeService

        parentOptions = Options()
        parentOptions.parseOptions(
            ["--workers", "2", "--metrics", "tcp:0:interface=127.0.0.1"]
        )
        parent = list(makeService(parentOptions))
        [site] = [s for s in parent if isinstance(s, StreamServerEndpointService)]
        self.assertIn(b"metrics", site.factory.resource.children)
        [listening] = [s for s in parent if isinstance(s, WorkersService)]
        self.assertFalse(any(isinstance(s, MetricsReporter) for s in parent))
        workerOptions = Options()
        workerOptions.parseOptions(
            ["--metrics", "tcp:0:interface=127.0.0.1", "--inherit-fds", "3"]
        )
        worker = list(makeService(workerOptions))
        self.assertTrue(any(isinstance(s, MetricsReporter) for s in worker))
        self.assertFalse(any(isinstance(s, StreamServerEndpointService) for s in worker))
        self.assertIsInstance(listening, WorkersService)
