"""
Tests for C{--access-log} (L{socksd.service.accesslog}), the access record
(L{socksd.server._log.accessRecord}) and its reply vocabulary
(L{socksd.replies.commonReplyName}).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
from ipaddress import IPv4Address as IPv4
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd.address import Destination
from socksd.replies import (
    COMMON_REPLY_NAMES,
    Socks4Reply,
    Socks5Reply,
    Socks6Reply,
    commonReplyName,
)
from socksd.server._log import ConnectionRecord, accessLine, accessRecord, isoTime
from socksd.service.accesslog import (
    ACCESS_LINE,
    AccessLog,
    WorkerAccessLog,
    recordLine,
)
from socksd.service.options import Options
from socksd.test._processes import (
    EchoServer,
    Twistd,
    UdpEchoServer,
    echoed,
    freePort,
    socks5,
    waitFor,
)

ALICE = (b"alice", b"secret")
#: The fields of every record, in order.
FIELDS = [
    "time",
    "client",
    "user",
    "version",
    "protocol",
    "command",
    "destination",
    "address",
    "upstream",
    "rule",
    "reply",
    "bytesUp",
    "bytesDown",
    "duration",
    "reason",
]


class _Relay:
    def __init__(self, up: int, down: int) -> None:
        self.counts = (up, down)

    def byteCounts(self) -> tuple[int, int]:
        return self.counts


class _Transport:
    def __init__(self, peer: Any) -> None:
        self.peer = peer

    def getPeer(self) -> Any:
        return self.peer


def tunnelRecord() -> ConnectionRecord:
    """A record of a SOCKS5 CONNECT tunnel to example.com:443."""
    record = ConnectionRecord(IPv4Address("TCP", "192.0.2.7", 50000), 1000.0)
    record.version = 5
    record.protocol = "socks5"
    record.commandCode = 1
    record.destination = Destination("example.com", 443)
    record.upstream = "direct"
    record.rule = "staff"
    record.reply = Socks5Reply.SUCCEEDED
    record.relay = _Relay(10, 20)
    record.upstreamTransport = _Transport(IPv4Address("TCP", "203.0.113.9", 443))
    return record


class CommonReplyNameTests(SynchronousTestCase):
    """
    L{commonReplyName}: one vocabulary for every version's replies.
    """

    def test_socks5NamesKept(self) -> None:
        """
        SOCKS5's names (and Tor's, and the handshakes' labels) are the
        vocabulary: they stay as they are.
        """
        for name in [reply.name for reply in Socks5Reply] + [
            "ONION_DESCRIPTOR_NOT_FOUND",
            "AUTHENTICATION_FAILED",
            "NO_ACCEPTABLE_METHODS",
            "VERSION_MISMATCH",
        ]:
            self.assertEqual(commonReplyName(name), name)

    def test_otherVersions(self) -> None:
        """
        SOCKS4's, SOCKS6's and HTTP's replies become the SOCKS5 name they
        stand for; an unknown HTTP status is a general failure; no reply
        stays L{None}.
        """
        self.assertEqual(commonReplyName(Socks4Reply.GRANTED.name), "SUCCEEDED")
        self.assertEqual(commonReplyName(Socks4Reply.REJECTED.name), "GENERAL_FAILURE")
        self.assertEqual(commonReplyName(Socks6Reply.SUCCESS.name), "SUCCEEDED")
        self.assertEqual(commonReplyName(Socks6Reply.TIMEOUT.name), "TTL_EXPIRED")
        self.assertEqual(
            commonReplyName(Socks6Reply.CONNECTION_REFUSED.name), "CONNECTION_REFUSED"
        )
        self.assertEqual(commonReplyName("HTTP_200"), "SUCCEEDED")
        self.assertEqual(commonReplyName("HTTP_407"), "AUTHENTICATION_FAILED")
        self.assertEqual(commonReplyName("HTTP_501"), "NOT_A_PROXY_REQUEST")
        self.assertEqual(commonReplyName("HTTP_599"), "GENERAL_FAILURE")
        self.assertIsNone(commonReplyName(None))
        vocabulary = {r.name for r in Socks5Reply} | {
            "AUTHENTICATION_FAILED",
            "NOT_A_PROXY_REQUEST",
        }
        self.assertLessEqual(set(COMMON_REPLY_NAMES.values()), vocabulary)


class AccessRecordTests(SynchronousTestCase):
    """
    L{accessRecord}: a connection's record as the access log writes it.
    """

    def test_tunnel(self) -> None:
        """
        A tunnel's record has every field, in order: the end time in ISO
        8601 UTC, the address connected to, the reply's common name.
        """
        record = accessRecord(tunnelRecord(), 1000.5)
        self.assertEqual(list(record), FIELDS)
        self.assertEqual(
            record,
            {
                "time": "1970-01-01T00:16:40.500Z",
                "client": "192.0.2.7:50000",
                "user": None,
                "version": 5,
                "protocol": "socks5",
                "command": "connect",
                "destination": "example.com:443",
                "address": "203.0.113.9:443",
                "upstream": "direct",
                "rule": "staff",
                "reply": "SUCCEEDED",
                "bytesUp": 10,
                "bytesDown": 20,
                "duration": 0.5,
                "reason": "closed",
            },
        )

    def test_addresses(self) -> None:
        """
        The address is C{host:port}, IPv6 in brackets; a name the upstream
        proxy resolves (a C{HostnameAddress}) and a transport that cannot
        say are L{None}.
        """
        record = tunnelRecord()
        record.upstreamTransport = _Transport(IPv6Address("TCP", "2001:db8::1", 80))
        self.assertEqual(accessRecord(record, 1001)["address"], "[2001:db8::1]:80")
        record.upstreamTransport = _Transport(HostnameAddress(b"example.com", 80))
        self.assertIsNone(accessRecord(record, 1001)["address"])

        class Broken:
            def getPeer(self) -> None:
                raise RuntimeError("gone")

        record.upstreamTransport = Broken()
        self.assertIsNone(accessRecord(record, 1001)["address"])

    def test_refusal(self) -> None:
        """
        A SOCKS4 refusal: its reply in the common vocabulary, the reason,
        no bytes, no address.
        """
        record = ConnectionRecord(IPv4Address("TCP", "192.0.2.7", 50000), 1000.0)
        record.version = 4
        record.protocol = "socks4"
        record.commandCode = 1
        record.destination = Destination(IPv4("198.51.100.1"), 80)
        record.reply = Socks4Reply.REJECTED
        record.reason = "destination refused by policy"
        result = accessRecord(record, 1000.25)
        self.assertEqual(
            (result["reply"], result["reason"], result["address"], result["bytesUp"]),
            ("GENERAL_FAILURE", "destination refused by policy", None, 0),
        )

    def test_replies(self) -> None:
        """
        The record's reply is in the common vocabulary, whatever the
        version sent: codes and the handshakes' labels alike.
        """
        record = tunnelRecord()
        for sent, common in [
            (Socks4Reply.GRANTED, "SUCCEEDED"),
            (Socks6Reply.TIMEOUT, "TTL_EXPIRED"),
            (Socks5Reply.CONNECTION_REFUSED, "CONNECTION_REFUSED"),
            ("HTTP_502", "GENERAL_FAILURE"),
            ("HTTP_599", "GENERAL_FAILURE"),
            ("HTTP_501", "NOT_A_PROXY_REQUEST"),
            ("AUTHENTICATION_FAILED", "AUTHENTICATION_FAILED"),
            ("VERSION_MISMATCH", "VERSION_MISMATCH"),
            (None, None),
        ]:
            record.reply = sent
            self.assertEqual(accessRecord(record, 1001)["reply"], common)
            self.assertEqual(json.loads(accessLine(record, 1001))["reply"], common)

    def test_printable(self) -> None:
        """
        Text from the client (a name, a user) cannot forge a line: control
        characters are escaped, and the line is one line of JSON.
        """
        record = tunnelRecord()
        record.destination = Destination("evil\n.example", 80)
        record.user = "mallory\r\n{"
        line = recordLine(record, 1001)
        self.assertEqual(line.count(b"\n"), 1)
        self.assertTrue(line.endswith(b"\n"))
        parsed = json.loads(line)
        self.assertEqual(parsed["destination"], "evil\\n.example:80")
        self.assertEqual(parsed["user"], "mallory\\r\\n{")

    def test_lineIsTheRecord(self) -> None:
        """
        The line L{accessLine} builds is the JSON of L{accessRecord}, one
        line of ASCII, for tunnels and refusals, names in any script,
        missing fields and odd durations.
        """
        records = [tunnelRecord()]
        record = tunnelRecord()
        record.destination = Destination("bücher.example", 443)
        record.user = "zoë"
        record.rule = 'a "quoted" rule'
        record.started = 1001.0
        records.append(record)
        bare = ConnectionRecord(IPv6Address("TCP", "2001:db8::7", 4), 1000.0)
        bare.reason = "client sent EOF before anything else"
        records.append(bare)
        for record in records:
            for now in (1000.0, 1000.0000004, 1234567.891):
                line = accessLine(record, now)
                self.assertTrue(line.endswith("\n"))
                self.assertEqual(line.count("\n"), 1)
                line.encode("ascii")
                self.assertEqual(json.loads(line), accessRecord(record, now))
                self.assertEqual(line, json.dumps(accessRecord(record, now)) + "\n")

    def test_isoTime(self) -> None:
        """
        L{isoTime}: UTC, milliseconds, a C{Z}.
        """
        self.assertEqual(isoTime(0), "1970-01-01T00:00:00.000Z")
        self.assertEqual(isoTime(1.0015), "1970-01-01T00:00:01.001Z")
        self.assertEqual(isoTime(1.999), "1970-01-01T00:00:01.999Z")
        self.assertEqual(isoTime(86400 * 365.25 * 56 + 0.25), "2026-01-01T00:00:00.250Z")


class AccessLogTests(SynchronousTestCase):
    """
    L{AccessLog}: batched writes, reopening, the standard output.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.path = self.mktemp()

    def read(self) -> list[dict[str, Any]]:
        with open(self.path, "rb") as reader:
            return [json.loads(line) for line in reader]

    def test_batched(self) -> None:
        """
        Records wait in memory: nothing is written until L{FLUSH_INTERVAL}
        seconds after the first, then they are all written together.
        """
        accessLog = AccessLog(self.path, self.clock, interval=0.25)
        accessLog.open()
        self.addCleanup(accessLog.close)
        writes: list[int] = []
        real = os.write

        def counting(fd: int, data: bytes) -> int:
            writes.append(len(data))
            return real(fd, data)

        self.patch(os, "write", counting)
        for _ in range(3):
            accessLog.write(tunnelRecord(), 1001)
        self.assertEqual(self.read(), [])
        self.clock.advance(0.2)
        self.assertEqual(self.read(), [])
        self.clock.advance(0.05)
        self.assertEqual(len(self.read()), 3)
        self.assertEqual(len(writes), 1)

    def test_fullBatch(self) -> None:
        """
        When L{FLUSH_BYTES} are waiting, they are written at once.
        """
        accessLog = AccessLog(self.path, self.clock, limit=1000)
        accessLog.open()
        self.addCleanup(accessLog.close)
        count = 0
        while not os.path.getsize(self.path):
            accessLog.write(tunnelRecord(), 1001)
            count += 1
        self.assertEqual(len(self.read()), count)
        self.assertGreater(count, 1)

    def test_stopWrites(self) -> None:
        """
        Stopping the service writes what waits, and closes the file.
        """
        accessLog = AccessLog(self.path, self.clock)
        accessLog.startService()
        accessLog.write(tunnelRecord(), 1001)
        accessLog.stopService()
        self.assertEqual(len(self.read()), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reopen(self) -> None:
        """
        After the file is renamed (logrotate), L{AccessLog.reopen} writes
        what waits to the old file, and later records to a new file at the
        path.
        """
        accessLog = AccessLog(self.path, self.clock)
        accessLog.open()
        self.addCleanup(accessLog.close)
        accessLog.write(tunnelRecord(), 1001)
        os.rename(self.path, self.path + ".1")
        accessLog.reopen()
        accessLog.write(tunnelRecord(), 1002)
        accessLog.flush()
        with open(self.path + ".1", "rb") as old:
            self.assertEqual(len(old.readlines()), 1)
        self.assertEqual([r["time"] for r in self.read()], [isoTime(1002)])

    def test_stdout(self) -> None:
        """
        C{-} writes to the standard output.
        """
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        stream = os.fdopen(write, "wb")
        self.addCleanup(stream.close)
        accessLog = AccessLog("-", self.clock, stdout=stream)
        accessLog.startService()
        accessLog.write(tunnelRecord(), 1001)
        accessLog.stopService()
        self.assertEqual(json.loads(os.read(read, 65536))["destination"], "example.com:443")

    def test_writeFailure(self) -> None:
        """
        A file that cannot be written to is logged once, with the records
        lost; writing again is logged too.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        accessLog = AccessLog(self.path, self.clock)
        accessLog.open()
        self.addCleanup(accessLog.close)
        failing = [True]
        real = os.write

        def write(fd: int, data: bytes) -> int:
            if failing[0]:
                raise OSError(28, "No space left on device")
            return real(fd, data)

        self.patch(os, "write", write)
        for _ in range(2):
            accessLog.write(tunnelRecord(), 1001)
            accessLog.flush()
        texts = [e.get("log_format", "") for e in events if e.get("path") == self.path]
        self.assertEqual(len(texts), 1)
        self.assertIn("cannot write", texts[0])
        failing[0] = False
        accessLog.write(tunnelRecord(), 1002)
        accessLog.flush()
        self.assertEqual(len(self.read()), 1)
        self.assertIn(
            "again", [e.get("log_format", "") for e in events if e.get("path")][-1]
        )

    def test_cannotOpen(self) -> None:
        """
        A file that cannot be opened when the service starts is a
        L{StartupError} naming it (one line for the operator).
        """
        from socksd.service.listen import StartupError

        path = os.path.join(self.mktemp(), "gone", "access.log")
        accessLog = AccessLog(path, self.clock)
        error = self.assertRaises(StartupError, accessLog.startService)
        self.assertIn(path, str(error))
        self.assertIn("No such file", str(error))
        self.assertFalse(accessLog.running)

    def test_workerLines(self) -> None:
        """
        A worker's L{WorkerAccessLog} writes each record as one line marked
        L{ACCESS_LINE} to its output, flushed within the interval; the
        parent's L{AccessLog.writeLine} takes such a line as it is.
        """
        output = io.StringIO()
        flushed: list[str] = []
        output.flush = lambda: flushed.append(output.getvalue())  # type: ignore[method-assign]
        worker = WorkerAccessLog(output, self.clock, interval=0.25)
        worker.write(tunnelRecord(), 1001)
        self.assertEqual(flushed, [])
        self.clock.advance(0.25)
        [line] = flushed[0].splitlines()
        self.assertTrue(line.startswith(ACCESS_LINE.decode()))
        accessLog = AccessLog(self.path, self.clock)
        accessLog.open()
        self.addCleanup(accessLog.close)
        accessLog.writeLine(line[len(ACCESS_LINE) :].encode() + b"\n")
        accessLog.flush()
        self.assertEqual(self.read(), [accessRecord(tunnelRecord(), 1001)])


class AccessLogSignalTests(TestCase):
    """
    SIGUSR1 reopens the access log; the handler that was there still runs.
    """

    async def test_sigusr1(self) -> None:
        """
        SIGUSR1 (as logrotate's postrotate sends) makes the running access
        log write to a new file at its path.
        """
        path = self.mktemp()
        called: list[int] = []
        previous = signal.signal(signal.SIGUSR1, lambda n, f: called.append(n))
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        accessLog = AccessLog(path, reactor)
        accessLog.startService()
        self.addCleanup(accessLog.stopService)
        accessLog.write(tunnelRecord(), 1001)
        os.rename(path, path + ".1")
        os.kill(os.getpid(), signal.SIGUSR1)
        await waitTurns(lambda: os.path.exists(path))
        accessLog.write(tunnelRecord(), 1002)
        accessLog.flush()
        with open(path, "rb") as reader:
            self.assertEqual(len(reader.readlines()), 1)
        self.assertEqual(called, [signal.SIGUSR1])
        accessLog.stopService()
        self.assertEqual(signal.getsignal(signal.SIGUSR1).__name__, "<lambda>")


async def waitTurns(condition: Any, turns: int = 200) -> None:
    """Let the reactor turn until C{condition()} (at most C{turns} times)."""
    for _ in range(turns):
        if condition():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("the condition never held")


class AccessLogOptionsTests(SynchronousTestCase):
    """
    C{--access-log} on the command line.
    """

    def test_unwritable(self) -> None:
        """
        A file that cannot be created is a usage error naming it.
        """
        path = os.path.join(self.mktemp(), "missing", "access.log")
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--access-log", path]
        )
        self.assertIn(path, str(error))
        self.assertIn("No such file", str(error))

    def test_factory(self) -> None:
        """
        With C{--access-log}, the factory's C{accessLog} is the service
        that writes the file; without it, there is none.
        """
        from socksd.tap import makeService

        options = Options()
        options.parseOptions(["--access-log", self.mktemp()])
        top = makeService(options)
        factory = list(top)[0].factory
        self.assertIsInstance(factory.accessLog, AccessLog)
        self.assertIn(factory.accessLog, list(top))
        # The one flag a closing connection reads before the extras.
        self.assertTrue(factory.extras)
        options = Options()
        options.parseOptions([])
        factory = list(makeService(options))[0].factory
        self.assertIsNone(factory.accessLog)
        self.assertFalse(factory.extras)


class AccessLogProcessTests(SynchronousTestCase):
    """
    C{twistd socksd --access-log}, over real sockets: a record for every
    kind of session, each line read with C{json.loads}, with one process
    and with two workers.
    """

    def sessions(self, workers: int) -> list[dict[str, Any]]:
        """
        Start an upstream socksd and a socksd with authentication, a
        destination rule and a route through the upstream; run a tunnel, a
        refusal, a failed login, a chained tunnel and a UDP association
        through it; return the records it wrote.
        """
        echo = EchoServer(self)
        udpEcho = UdpEchoServer(self)
        hosts = os.path.abspath(self.mktemp())
        with open(hosts, "w") as writer:
            writer.write("127.0.0.1 chained.test\n")
        upstreamPort = freePort()
        upstream = Twistd(
            self,
            ["--listen", f"tcp:{upstreamPort}:interface=127.0.0.1",
             "--resolver", f"hosts:{hosts}"],
        )
        port = freePort()
        path = os.path.abspath(self.mktemp())
        arguments = [
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--auth", "memory:alice:secret",
            "--deny-destination", "198.51.100.0/24",
            "--route", f"chained.test=socks5:proxy=tcp\\:127.0.0.1\\:{upstreamPort}",
            "--access-log", path,
        ]
        if workers:
            arguments += ["--workers", str(workers)]
        server = Twistd(self, arguments)
        upstream.waitForListening()
        server.waitForListening(workers)

        # A tunnel.
        sock, code, _ = socks5(port, "127.0.0.1", echo.port, credentials=ALICE)
        self.assertEqual(code, 0)
        self.assertEqual(echoed(sock, b"x" * 100), b"x" * 100)
        sock.close()
        # A refusal by the destination rule.
        sock, code, _ = socks5(port, "198.51.100.1", 80, credentials=ALICE)
        self.assertEqual(code, 2)
        sock.close()
        # A failed login.
        sock, code, _ = socks5(port, "127.0.0.1", echo.port, credentials=(b"alice", b"nope"))
        self.assertEqual(code, 0xFF)
        sock.close()
        # A chained tunnel: the upstream resolves the name.
        sock, code, _ = socks5(port, "chained.test", echo.port, credentials=ALICE)
        self.assertEqual(code, 0)
        self.assertEqual(echoed(sock, b"y" * 10), b"y" * 10)
        sock.close()
        # A UDP association.
        control, code, bound = socks5(port, "0.0.0.0", 0, command=3, credentials=ALICE)
        self.assertEqual(code, 0)
        relay = (socket.inet_ntoa(bound[1:5]), int.from_bytes(bound[5:7], "big"))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(udp.close)
        udp.settimeout(10)
        header = b"\x00\x00\x00\x01" + socket.inet_aton("127.0.0.1")
        header += udpEcho.port.to_bytes(2, "big")
        udp.sendto(header + b"ping", relay)
        self.assertEqual(udp.recvfrom(65536)[0], header + b"ping")
        control.close()

        def records() -> list[dict[str, Any]] | None:
            if not os.path.exists(path):
                return None
            with open(path, "rb") as reader:
                lines = reader.read().splitlines()
            return [json.loads(line) for line in lines] if len(lines) >= 5 else None

        found = waitFor(records, server.log)
        self.assertEqual(len(found), 5, found)
        for record in found:
            self.assertEqual(list(record), FIELDS)
        return found

    def checkSessions(self, records: list[dict[str, Any]]) -> None:
        """The five sessions' records say what happened."""
        byKind: dict[str, dict[str, Any]] = {}
        for record in records:
            if record["command"] == "udp-associate":
                byKind["udp"] = record
            elif record["reply"] == "AUTHENTICATION_FAILED":
                byKind["auth"] = record
            elif record["reply"] == "NOT_ALLOWED":
                byKind["refused"] = record
            elif record["upstream"] == "direct":
                byKind["tunnel"] = record
            else:
                byKind["chained"] = record
        self.assertEqual(sorted(byKind), ["auth", "chained", "refused", "tunnel", "udp"])
        tunnel = byKind["tunnel"]
        self.assertEqual(
            {k: tunnel[k] for k in ("user", "version", "protocol", "reply", "reason")},
            {"user": "alice", "version": 5, "protocol": "socks5",
             "reply": "SUCCEEDED", "reason": "closed"},
        )
        self.assertEqual((tunnel["bytesUp"], tunnel["bytesDown"]), (100, 100))
        self.assertEqual(tunnel["address"], tunnel["destination"])
        self.assertTrue(tunnel["time"].endswith("Z"))
        refusedRecord = byKind["refused"]
        self.assertEqual(refusedRecord["destination"], "198.51.100.1:80")
        self.assertEqual(refusedRecord["reason"], "destination refused by policy")
        self.assertIsNone(refusedRecord["address"])
        auth = byKind["auth"]
        self.assertEqual((auth["user"], auth["command"]), (None, None))
        self.assertIn("alice", auth["reason"])
        chained = byKind["chained"]
        self.assertTrue(chained["destination"].startswith("chained.test:"))
        self.assertIn("socks5", chained["upstream"])
        self.assertIsNone(chained["address"])
        self.assertEqual((chained["bytesUp"], chained["bytesDown"]), (10, 10))
        self.assertEqual(chained["reply"], "SUCCEEDED")
        udp = byKind["udp"]
        self.assertEqual(udp["reply"], "SUCCEEDED")
        self.assertEqual((udp["bytesUp"], udp["bytesDown"]), (4, 4))

    def test_records(self) -> None:
        """
        One process writes a record for each session.
        """
        self.checkSessions(self.sessions(0))

    def test_recordsWithWorkers(self) -> None:
        """
        With C{--workers 2}, the parent writes every worker's records to
        the one file, whole.
        """
        self.checkSessions(self.sessions(2))


class WorkerRecordsTests(SynchronousTestCase):
    """
    The parent's side: a worker's access lines reach the access log whole.
    """

    def test_tornLineDropped(self) -> None:
        """
        Lines split anywhere across reads are joined; a line cut short by
        the worker's end is not written.
        """
        from twisted.python.failure import Failure

        from socksd.service.workers import WorkersService, _WorkerProtocol

        clock = Clock()
        path = self.mktemp()
        parent = WorkersService(clock, [], 1, [], publisher=lambda event: None)
        parent.accessLog = AccessLog(path, clock)
        parent.accessLog.open()
        self.addCleanup(parent.accessLog.close)
        worker = _WorkerProtocol(parent, 1)
        worker.ended = Deferred()
        line = ACCESS_LINE + recordLine(tunnelRecord(), 1001)
        data = line * 3 + line[:40]
        for index in range(0, len(data), 7):
            worker.outReceived(data[index : index + 7])
        worker.processEnded(Failure(Exception("gone")))
        parent.accessLog.flush()
        with open(path, "rb") as reader:
            lines = reader.read().splitlines()
        self.assertEqual(
            [json.loads(line) for line in lines],
            [accessRecord(tunnelRecord(), 1001)] * 3,
        )
