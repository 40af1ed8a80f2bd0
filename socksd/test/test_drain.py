"""
Tests for the graceful drain (L{socksd.service.drain}) and health
(L{socksd.service.health}).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd.service.drain import CUT_GRACE, ServingService
from socksd.service.health import AgentCheckFactory, Health
from socksd.service.options import Options
from socksd.test._processes import (
    EchoServer,
    Twistd,
    echoed,
    freePort,
    httpGet,
    refused,
    socks5,
    waitFor,
)


class _Reactor(Clock):
    """A clock that runs C{callFromThread} calls at once."""

    running = True

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)

    def callWhenRunning(self, f: Any, *args: Any) -> None:
        f(*args)

    def stop(self) -> None:
        self.stopped = True


class _Factory:
    def __init__(self) -> None:
        self.connections: set[Any] = set()


class _Connection:
    """A connection that leaves its factory a turn after it is aborted."""

    def __init__(self, factory: _Factory, clock: Clock, leaves: bool = True) -> None:
        self.factory = factory
        self.clock = clock
        self.leaves = leaves
        self.aborted: str | None = None
        factory.connections.add(self)

    def abort(self, reason: str) -> None:
        self.aborted = reason
        if self.leaves:
            self.clock.callLater(0, self.close)

    def close(self) -> None:
        self.factory.connections.discard(self)


class _Recording(service.Service):
    def __init__(self, name: str, stops: list[str], result: Any = None) -> None:
        self.setName(name)
        self.stops = stops
        self.result = result

    def stopService(self) -> Any:
        super().stopService()
        self.stops.append(self.name)
        return self.result


class _Notifier:
    def __init__(self) -> None:
        self.states: list[str] = []

    def ready(self) -> None:
        self.states.append("ready")

    def stopping(self, status: str) -> None:
        self.states.append("stopping")


class ServingServiceTests(SynchronousTestCase):
    """
    L{ServingService}: listeners first, then the connections, then the
    rest.
    """

    def setUp(self) -> None:
        self.clock = _Reactor()
        self.health = Health()
        self.notifier = _Notifier()
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def serving(self, timeout: float = 30.0) -> tuple[ServingService, _Factory, list[str]]:
        top = ServingService(
            self.clock,
            drainTimeout=timeout,
            health=self.health,
            notifier=self.notifier,
            installSignals=False,
        )
        stops: list[str] = []
        top.listen(_Recording("listener", stops))
        _Recording("metrics", stops).setServiceParent(top)
        factory = _Factory()
        top.factories.append(factory)
        top.startService()
        return top, factory, stops

    def logged(self, text: str) -> list[dict[str, Any]]:
        from twisted.logger import formatEvent

        return [e for e in self.events if text in formatEvent(e)]

    def test_drain(self) -> None:
        """
        Stopping closes the listeners at once, marks the health as
        draining and tells systemd; the other services stop only when the
        last connection has ended, and the log counts them.
        """
        top, factory, stops = self.serving()
        self.assertEqual(self.notifier.states, ["ready"])
        first = _Connection(factory, self.clock)
        second = _Connection(factory, self.clock)
        stopped = top.stopService()
        self.assertEqual(stops, ["listener"])
        self.assertTrue(self.health.draining)
        self.assertEqual(self.health.status()[0], 503)
        self.assertEqual(self.notifier.states, ["ready", "stopping"])
        self.assertNoResult(stopped)
        self.assertTrue(self.logged("2 connections open, waiting up to 30.0 s"))
        first.close()
        self.assertNoResult(stopped)
        self.clock.advance(10)
        second.close()
        self.successResultOf(stopped)
        self.assertEqual(stops, ["listener", "metrics"])
        [done] = self.logged("drain finished")
        self.assertEqual((done["ended"], done["cut"]), (2, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout(self) -> None:
        """
        At the drain timeout, the connections left are cut (their records
        say so), then the rest stops.
        """
        top, factory, stops = self.serving(timeout=5)
        ends = _Connection(factory, self.clock)
        stays = _Connection(factory, self.clock)
        stopped = top.stopService()
        ends.close()
        self.clock.advance(4.9)
        self.assertIsNone(stays.aborted)
        self.clock.advance(0.1)
        self.assertEqual(stays.aborted, "cut: drain timeout")
        self.successResultOf(stopped)
        self.assertEqual(stops, ["listener", "metrics"])
        [done] = self.logged("drain finished")
        self.assertEqual((done["ended"], done["cut"]), (1, 1))
        self.assertIsNone(ends.aborted)

    def test_zeroTimeout(self) -> None:
        """
        C{--drain-timeout 0} closes the connections at once.
        """
        top, factory, stops = self.serving(timeout=0)
        connection = _Connection(factory, self.clock)
        stopped = top.stopService()
        self.assertEqual(connection.aborted, "cut: drain timeout 0")
        self.clock.advance(0)
        self.successResultOf(stopped)

    def test_nothingOpen(self) -> None:
        """
        With no connection open, everything stops at once.
        """
        top, factory, stops = self.serving()
        self.successResultOf(top.stopService())
        self.assertEqual(stops, ["listener", "metrics"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cutShort(self) -> None:
        """
        L{ServingService.cut} (a second signal) closes the connections at
        once; a cut asked for before the drain started applies when it
        starts.
        """
        top, factory, stops = self.serving()
        connection = _Connection(factory, self.clock)
        stopped = top.stopService()
        top.cut("second SIGTERM")
        self.assertEqual(connection.aborted, "cut: second SIGTERM")
        self.clock.advance(0)
        self.successResultOf(stopped)
        self.assertTrue(self.logged("closing 1 connections (second SIGTERM)"))

        top, factory, stops = self.serving()
        connection = _Connection(factory, self.clock)
        top.cut("second SIGINT")
        self.assertIsNone(connection.aborted)
        top.stopService()
        self.assertEqual(connection.aborted, "cut: second SIGINT")

    def test_cutConnectionsThatStay(self) -> None:
        """
        Cut connections that never go are given up on after L{CUT_GRACE}
        seconds, with a warning.
        """
        top, factory, stops = self.serving(timeout=1)
        _Connection(factory, self.clock, leaves=False)
        stopped = top.stopService()
        self.clock.advance(1)
        self.assertNoResult(stopped)
        self.clock.advance(CUT_GRACE)
        self.successResultOf(stopped)
        self.assertTrue(self.logged("1 cut connections did not close"))

    def test_signals(self) -> None:
        """
        The first SIGTERM goes to the handler that was there (the
        reactor's, which stops it); the second cuts the drain short.
        """
        previous: list[int] = []
        old = signal.signal(signal.SIGTERM, lambda number, frame: previous.append(number))
        self.addCleanup(signal.signal, signal.SIGTERM, old)
        oldInt = signal.getsignal(signal.SIGINT)
        self.addCleanup(signal.signal, signal.SIGINT, oldInt)
        top = ServingService(self.clock, installSignals=True)
        factory = _Factory()
        top.factories.append(factory)
        connection = _Connection(factory, self.clock)
        top.startService()
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)
        self.assertEqual(previous, [signal.SIGTERM])
        top.stopService()
        handler(signal.SIGTERM, None)
        self.assertEqual(previous, [signal.SIGTERM])
        self.assertEqual(connection.aborted, "cut: second SIGTERM")

    def test_workers(self) -> None:
        """
        With workers, the drain waits for the workers service to stop, a
        second signal tells it to cut, and the log counts what the workers
        reported.
        """
        top = ServingService(self.clock, installSignals=False)
        stops: list[str] = []
        ended: Deferred[None] = Deferred()
        workers = _Recording("workers", stops, ended)
        cuts: list[bool] = []
        workers.workers = {1: object(), 2: object()}  # type: ignore[attr-defined]
        workers.cut = lambda: cuts.append(True)  # type: ignore[attr-defined]
        workers.drainCounts = lambda: (3, 1)  # type: ignore[attr-defined]
        top.listen(workers)
        top.workers = workers
        top.startService()
        stopped = top.stopService()
        self.assertTrue(self.logged("waiting up to 30.0 s for 2 workers"))
        self.assertNoResult(stopped)
        top.cut("second SIGTERM")
        self.assertEqual(cuts, [True])
        ended.callback(None)
        self.successResultOf(stopped)
        [done] = self.logged("drain finished")
        self.assertEqual((done["ended"], done["cut"]), (3, 1))


class HealthTests(SynchronousTestCase):
    """
    L{Health}: what C{/healthz} and the agent check say.
    """

    def test_states(self) -> None:
        """
        Serving: 200 and C{up ready}; with a capacity, the share free as a
        weight; draining: 503 and C{drain}; nothing running: 503 and
        C{down}.
        """
        open = [0]
        running = [True]
        health = Health(lambda: open[0], capacity=200, serving=lambda: running[0])
        self.assertEqual(health.status(), (200, b"serving\n"))
        self.assertEqual(health.agentReply(), b"up ready 100%\n")
        open[0] = 150
        self.assertEqual(health.agentReply(), b"up ready 25%\n")
        open[0] = 200
        self.assertEqual(health.agentReply(), b"up ready 1%\n")
        self.assertEqual(Health().agentReply(), b"up ready\n")
        running[0] = False
        self.assertEqual(health.status(), (503, b"not serving\n"))
        self.assertEqual(health.agentReply(), b"down\n")
        health.draining = True
        self.assertEqual(health.status(), (503, b"draining\n"))
        self.assertEqual(health.agentReply(), b"drain\n")

    def test_agentOption(self) -> None:
        """
        A bad C{--agent-check} description is a usage error naming it.
        """
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--agent-check", "tcp:abc"]
        )
        self.assertIn("--agent-check", str(error))


class AgentCheckTests(TestCase):
    """
    The HAProxy agent check over a real socket.
    """

    async def test_agentCheck(self) -> None:
        """
        Each connection gets the health's line, then EOF.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.internet.threads import deferToThread

        health = Health()
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            AgentCheckFactory(health)
        )
        self.addCleanup(port.stopListening)
        number = port.getHost().port

        def ask() -> bytes:
            with socket.create_connection(("127.0.0.1", number), timeout=10) as sock:
                data = b""
                while chunk := sock.recv(100):
                    data += chunk
                return data

        self.assertEqual(await deferToThread(ask), b"up ready\n")
        health.draining = True
        self.assertEqual(await deferToThread(ask), b"drain\n")


class DrainProcessTests(SynchronousTestCase):
    """
    C{twistd socksd} drains on SIGTERM, over real sockets.
    """

    def start(
        self, *options: str, workers: int = 0, metrics: bool = True
    ) -> tuple[Twistd, int, int, EchoServer]:
        echo = EchoServer(self)
        port, metricsPort = freePort(), freePort()
        arguments = ["--listen", f"tcp:{port}:interface=127.0.0.1", *options]
        if metrics:
            arguments += ["--metrics", f"tcp:{metricsPort}:interface=127.0.0.1"]
        if workers:
            arguments += ["--workers", str(workers)]
        server = Twistd(self, arguments)
        server.waitForListening(workers)
        if metrics:
            server.waitForLog("MetricsSite starting on")
        return server, port, metricsPort, echo

    def tunnel(self, port: int, echo: EchoServer) -> socket.socket:
        sock, code, _ = socks5(port, "127.0.0.1", echo.port)
        self.addCleanup(sock.close)
        self.assertEqual(code, 0)
        self.assertEqual(echoed(sock, b"before"), b"before")
        return sock

    def checkDraining(
        self, server: Twistd, port: int, metricsPort: int, sock: socket.socket
    ) -> None:
        """New connections are refused, the tunnel echoes, /healthz is 503."""
        server.waitForLog("draining: stopped accepting")
        waitFor(lambda: refused(port), server.log)
        self.assertEqual(echoed(sock, b"during the drain"), b"during the drain")
        self.assertEqual(httpGet(metricsPort, "/healthz"), (503, b"draining\n"))
        self.assertIsNone(server.process.poll())

    def test_drainUntilTheLastTunnelEnds(self) -> None:
        """
        After SIGTERM, new connections are refused at once, /healthz says
        503, the open tunnel keeps echoing, and socksd exits as soon as it
        closes.
        """
        server, port, metricsPort, echo = self.start("--drain-timeout", "60")
        self.assertEqual(httpGet(metricsPort, "/healthz"), (200, b"serving\n"))
        sock = self.tunnel(port, echo)
        server.signal(signal.SIGTERM)
        self.checkDraining(server, port, metricsPort, sock)
        time.sleep(0.5)
        self.assertEqual(echoed(sock, b"still"), b"still")
        sock.close()
        started = time.monotonic()
        server.wait()
        self.assertLess(time.monotonic() - started, 10)
        self.assertIn("1 connections open, waiting up to 60.0 s", server.log())
        self.assertIn("1 connections ended, 0 cut", server.log())

    def test_drainTimeout(self) -> None:
        """
        A tunnel still open at the drain timeout is closed, and socksd
        exits; its access record says it was cut.
        """
        accessLog = os.path.abspath(self.mktemp())
        server, port, metricsPort, echo = self.start(
            "--drain-timeout", "1", "--access-log", accessLog, metrics=False
        )
        sock = self.tunnel(port, echo)
        server.signal(signal.SIGTERM)
        sock.settimeout(20)
        try:
            end = sock.recv(100)
        except ConnectionResetError:
            end = b""
        self.assertEqual(end, b"")
        server.wait()
        self.assertIn("0 connections ended, 1 cut", server.log())
        with open(accessLog, "rb") as reader:
            [record] = [json.loads(line) for line in reader]
        self.assertEqual(record["reason"], "cut: drain timeout")

    def test_secondSignal(self) -> None:
        """
        A second SIGTERM during the drain closes the tunnels at once.
        """
        server, port, metricsPort, echo = self.start("--drain-timeout", "60", metrics=False)
        self.tunnel(port, echo)
        server.signal(signal.SIGTERM)
        server.waitForLog("draining: stopped accepting")
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        server.wait()
        self.assertLess(time.monotonic() - started, 10)
        self.assertIn("0 connections ended, 1 cut", server.log())
        self.assertIn("second SIGTERM", server.log())

    def test_drainWorkers(self) -> None:
        """
        With C{--workers 2}: SIGTERM to the parent closes every copy of the
        listening socket (new connections are refused), the workers' tunnel
        keeps echoing, /healthz (the parent's) says 503, and everything
        exits when the tunnel closes.
        """
        server, port, metricsPort, echo = self.start("--drain-timeout", "60", workers=2)
        sock = self.tunnel(port, echo)
        server.signal(signal.SIGTERM)
        self.checkDraining(server, port, metricsPort, sock)
        sock.close()
        server.wait()
        # A probe of the refusal may have been accepted by a worker just
        # before its copy of the socket closed: it ended too.
        self.assertRegex(server.log(), r"the workers' connections: [1-9]\d* ended, 0 cut")

    def test_workersSecondSignal(self) -> None:
        """
        With C{--workers 2}, a second SIGTERM to the parent reaches the
        workers: their tunnels are closed at once.
        """
        server, port, metricsPort, echo = self.start(
            "--drain-timeout", "60", workers=2, metrics=False
        )
        self.tunnel(port, echo)
        server.signal(signal.SIGTERM)
        server.waitForLog(r"worker \d \(pid \d+\): \[socksd.service.drain\] draining", 2)
        server.signal(signal.SIGTERM)
        server.wait()
        self.assertIn("the workers' connections: 0 ended, 1 cut", server.log())
