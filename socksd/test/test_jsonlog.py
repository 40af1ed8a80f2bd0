"""
Tests for socksd's JSON diagnostic log (L{socksd.service.jsonlog}), the
workers' events in the parent, and the quiet log (no line per chained
connection's factory, none per metrics scrape).
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksd.service.jsonlog import (
    EVENT_LINE,
    JSONLineObserver,
    eventAsJSON,
    eventFromWorker,
    jsonLine,
    jsonLogger,
)
from socksd.test._processes import (
    EchoServer,
    Twistd,
    echoed,
    freePort,
    httpGet,
    socks5,
    waitFor,
)


def capture(emit: Any) -> dict[str, Any]:
    """The one event C{emit(logger)} logs."""
    events: list[dict[str, Any]] = []
    emit(Logger(namespace="test.ns", observer=events.append))
    [event] = events
    return event


class EventAsJSONTests(SynchronousTestCase):
    """
    L{eventAsJSON} and L{jsonLine}: one JSON object per event.
    """

    def test_fields(self) -> None:
        """
        Time (ISO 8601 UTC), level, namespace and text come first, then the
        event's fields; Twisted's own C{log_*} keys are left out.
        """
        event = capture(lambda log: log.warn("{who} said {n}", who="alice", n=3))
        event["log_time"] = 0.5
        result = eventAsJSON(event)
        self.assertEqual(
            result,
            {
                "time": "1970-01-01T00:00:00.500Z",
                "level": "warn",
                "namespace": "test.ns",
                "text": "alice said 3",
                "who": "alice",
                "n": 3,
            },
        )
        self.assertEqual(list(result)[:4], ["time", "level", "namespace", "text"])
        line = jsonLine(event)
        self.assertNotIn("\n", line)
        self.assertNotIn("\x1e", line)
        self.assertEqual(json.loads(line), result)

    def test_values(self) -> None:
        """
        Values JSON cannot hold are written as their C{str}; the field a
        format is made of alone (the connection event's C{summary}) is the
        text, not a field.
        """

        class Thing:
            def __str__(self) -> str:
                return "a thing"

        event = capture(
            lambda log: log.info(
                "{summary}",
                summary=Thing(),
                nan=float("nan"),
                data=b"\x00",
                items=(1, "two"),
                odd={(1, 2): 3},
            )
        )
        result = eventAsJSON(event)
        self.assertEqual(result["text"], "a thing")
        self.assertNotIn("summary", result)
        self.assertEqual(result["nan"], "nan")
        self.assertEqual(result["data"], "b'\\x00'")
        self.assertEqual(result["odd"], "{(1, 2): 3}")
        self.assertEqual(json.loads(jsonLine(event))["items"], [1, "two"])

    def test_failure(self) -> None:
        """
        A failure's traceback is the C{failure} field.
        """
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        event = capture(lambda log: log.failure("it broke", failure))
        result = eventAsJSON(event)
        self.assertEqual((result["text"], result["level"]), ("it broke", "critical"))
        self.assertIn("ZeroDivisionError", result["failure"])

    def test_legacy(self) -> None:
        """
        An event of Twisted's legacy log (C{log.msg}) is its text, without
        the legacy machinery's keys.
        """
        events: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        legacyLog.msg("Site starting on 9180")
        [event] = [e for e in events if e.get("log_namespace") == "log_legacy"]
        result = eventAsJSON(event)
        self.assertEqual(result["text"], "Site starting on 9180")
        self.assertFalse({"message", "isError", "system", "format"} & set(result))


class JSONLineObserverTests(SynchronousTestCase):
    """
    L{JSONLineObserver}: lines on a stream, flushed per reactor turn.
    """

    def test_flushing(self) -> None:
        """
        While the reactor runs, a turn's lines are flushed together;
        otherwise each line at once.  A prefix starts each line.
        """
        stream = io.StringIO()
        flushes: list[str] = []
        stream.flush = lambda: flushes.append(stream.getvalue())  # type: ignore[method-assign]
        clock = Clock()
        clock.running = False  # type: ignore[attr-defined]
        observer = JSONLineObserver(stream, clock, prefix="> ")
        observer(capture(lambda log: log.info("one")))
        self.assertEqual(len(flushes), 1)
        clock.running = True  # type: ignore[attr-defined]
        observer(capture(lambda log: log.info("two")))
        observer(capture(lambda log: log.info("three")))
        self.assertEqual(len(flushes), 1)
        clock.advance(0)
        self.assertEqual(len(flushes), 2)
        lines = flushes[-1].splitlines()
        self.assertEqual(
            [json.loads(line[2:])["text"] for line in lines], ["one", "two", "three"]
        )

    def test_jsonLogger(self) -> None:
        """
        The twistd C{--logger} factory writes to the standard output.
        """
        import sys

        stream = io.StringIO()
        self.patch(sys, "stdout", stream)
        observer = jsonLogger()
        observer._reactor = Clock()  # not running: flushed at once
        observer(capture(lambda log: log.info("hello {x}", x=1)))
        self.assertEqual(json.loads(stream.getvalue())["x"], 1)


class WorkerEventTests(SynchronousTestCase):
    """
    L{eventFromWorker}: a worker's event, logged again by the parent.
    """

    def test_roundTrip(self) -> None:
        """
        The parent's event keeps the worker's namespace, level, time and
        fields, adds C{worker} and C{pid}, and reads C{worker N (pid P):
        [namespace] text}; written as JSON again it has the same fields.
        """
        event = capture(lambda log: log.error("{client} refused", client="192.0.2.7:5"))
        event["log_time"] = 1000.25
        fields = json.loads(jsonLine(event))
        again = eventFromWorker(fields, 2, 4242)
        self.assertEqual(
            formatEvent(again), "worker 2 (pid 4242): [test.ns] 192.0.2.7:5 refused"
        )
        self.assertEqual(again["log_namespace"], "test.ns")
        self.assertEqual(again["log_level"], LogLevel.error)
        self.assertEqual(again["log_time"], 1000.25)
        written = eventAsJSON(again)
        self.assertEqual(
            {k: written[k] for k in ("client", "worker", "pid", "namespace", "level")},
            {"client": "192.0.2.7:5", "worker": 2, "pid": 4242,
             "namespace": "test.ns", "level": "error"},
        )

    def test_failure(self) -> None:
        """
        A worker's failure keeps its traceback: in the text and as a field.
        """
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        event = capture(lambda log: log.failure("it broke", failure))
        again = eventFromWorker(json.loads(jsonLine(event)), 1, 7)
        self.assertIn("ZeroDivisionError", formatEvent(again))
        self.assertIn("ZeroDivisionError", again["failure"])

    def test_parentLogsFields(self) -> None:
        """
        The parent's L{_WorkerProtocol} logs a worker's event line as an
        event with its fields; other lines as text.
        """
        from socksd.service.workers import WorkersService, _WorkerProtocol

        published: list[dict[str, Any]] = []
        parent = WorkersService(Clock(), [], 1, [], publisher=published.append)
        worker = _WorkerProtocol(parent, 3)
        worker.pid = 99
        event = capture(lambda log: log.info("{n} tunnels", n=5))
        line = EVENT_LINE + jsonLine(event).encode() + b"\n"
        worker.outReceived(line[:10])
        worker.outReceived(line[10:] + b"Traceback (most recent call last):\n")
        first, second = published
        self.assertEqual((first["n"], first["worker"], first["pid"]), (5, 3, 99))
        self.assertEqual(formatEvent(first), "worker 3 (pid 99): [test.ns] 5 tunnels")
        self.assertIn("Traceback", formatEvent(second))


class JSONLogProcessTests(SynchronousTestCase):
    """
    C{twistd --logger=socksd.service.jsonlog.jsonLogger socksd}: every line
    of the log is JSON; connections keep their fields under C{--workers};
    chained connections and metrics scrapes leave no noise.
    """

    def serve(self, workers: int) -> tuple[list[dict[str, Any]], Twistd]:
        echo = EchoServer(self)
        upstreamPort = freePort()
        upstream = Twistd(self, ["--listen", f"tcp:{upstreamPort}:interface=127.0.0.1"])
        port, metricsPort = freePort(), freePort()
        arguments = [
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--metrics", f"tcp:{metricsPort}:interface=127.0.0.1",
            "--upstream", f"socks5:proxy=tcp\\:127.0.0.1\\:{upstreamPort}",
        ]
        if workers:
            arguments += ["--workers", str(workers)]
        server = Twistd(
            self,
            arguments,
            twistdArguments=["--logger=socksd.service.jsonlog.jsonLogger"],
        )
        upstream.waitForListening()
        server.waitForListening(workers)
        server.waitForLog("MetricsSite starting on")
        for _ in range(3):
            sock, code, _ = socks5(port, "127.0.0.1", echo.port)
            self.assertEqual(code, 0)
            self.assertEqual(echoed(sock, b"ping"), b"ping")
            sock.close()
            self.assertEqual(httpGet(metricsPort, "/metrics")[0], 200)

        def events() -> list[dict[str, Any]] | None:
            lines = server.log().splitlines()
            parsed = [json.loads(line) for line in lines]
            done = [e for e in parsed if e["namespace"] == "socksd.connection"]
            return parsed if len(done) == 3 else None

        return waitFor(events, server.log), server

    def check(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        connections = [e for e in events if e["namespace"] == "socksd.connection"]
        for event in connections:
            self.assertEqual(
                (event["command"], event["reply"], event["bytesUp"], event["level"]),
                ("connect", "SUCCEEDED", 4, "info"),
            )
            self.assertIn("socks5", event["upstream"])
            self.assertRegex(event["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        texts = "\n".join(e["text"] for e in events)
        self.assertNotIn("Starting factory <socksd.client", texts)
        self.assertNotIn("Stopping factory", texts)
        self.assertNotIn("GET /metrics", texts)
        return connections

    def test_oneProcess(self) -> None:
        """
        One process: its connections' events with their fields.
        """
        events, server = self.serve(0)
        self.check(events)

    def test_workers(self) -> None:
        """
        Two workers: the parent's log has each worker's connection events
        with their fields, their worker and pid.
        """
        events, server = self.serve(2)
        connections = self.check(events)
        for event in connections:
            self.assertIn(event["worker"], (1, 2))
            self.assertIsInstance(event["pid"], int)
            self.assertTrue(event["text"].startswith(f"worker {event['worker']} (pid "))
