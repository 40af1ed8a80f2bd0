"""
Faults on real sockets: a side of a tunnel lost abnormally reaches the
other as a reset, after what was already received (both relays, SOCKS4,
SOCKS5 and SOCKS6, and chained through another socksd); requests a client
abandons (EOF while its BIND or CONNECT is pending) free their descriptors
at once; pending BINDs per client address are capped.

The peers are plain blocking sockets run in threads, so that what a
client or a destination sees (all the bytes, then an EOF or a reset) is
the kernel's word, not a Twisted protocol's.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import struct
import sys
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd.server import ServerConfig, SocksServerFactory, pipeline
from socksd.server.limits import ConnectionLimits
from socksd.server.relay import splice as _splice
from socksd.server.relay._transport import abortAfterWriting
from socksd.service.build import makeService
from socksd.service.listen import AcceptErrors
from socksd.service.options import Options
from socksd.testing import FakeResolver, RecordingTransport
from socksd.upstream import DirectUpstream, upstreamFromSpec

#: The longest any one wait may take.
WAIT = 20.0
#: Linux's SIOCOUTQ: the bytes of a socket's send queue not yet
#: acknowledged.
SIOCOUTQ = 0x5411


def unacknowledged(sock: socket.socket) -> int:
    """The bytes C{sock}'s peer has not acknowledged yet."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0\0\0\0"))[0]


def resetWhenDelivered(sock: socket.socket, timeout: float = WAIT) -> bool:
    """
    Wait until the peer has acknowledged everything sent on C{sock}, then
    reset the connection (C{SO_LINGER} 0 and close).

    @return: whether everything was acknowledged before the reset.
    """
    deadline = time.monotonic() + timeout
    delivered = False
    while time.monotonic() < deadline:
        if unacknowledged(sock) == 0:
            delivered = True
            break
        time.sleep(0.002)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    return delivered


def readToEnd(sock: socket.socket, timeout: float = WAIT) -> tuple[bytes, str]:
    """
    Read C{sock} until it ends.

    @return: the bytes, and how it ended: C{"eof"}, C{"reset"} or
        C{"timeout"}.
    """
    sock.settimeout(timeout)
    received = bytearray()
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return bytes(received), "eof"
            received += chunk
    except ConnectionResetError:
        return bytes(received), "reset"
    except socket.timeout:
        return bytes(received), "timeout"
    finally:
        sock.close()


def recvExactly(sock: socket.socket, count: int) -> bytes:
    """Read exactly C{count} bytes (a reply), never more."""
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {data.hex(' ')}")
        data += chunk
    return data


def requestFor(version: int, port: int) -> bytes:
    """A CONNECT to 127.0.0.1:C{port}, with no authentication."""
    address = socket.inet_aton("127.0.0.1")
    portBytes = port.to_bytes(2, "big")
    if version == 4:
        return b"\x04\x01" + portBytes + address + b"\x00"
    if version == 5:
        return b"\x05\x01\x00" + b"\x05\x01\x00\x01" + address + portBytes
    return b"\x06\x01\x00\x00" + portBytes + b"\x00\x01" + address


def readReply(sock: socket.socket, version: int) -> bytes:
    """Read the proxy's (successful) reply to L{requestFor}, and no more."""
    if version == 4:
        reply = recvExactly(sock, 8)
        assert reply[1] == 0x5A, reply.hex(" ")
        return reply
    if version == 5:
        reply = recvExactly(sock, 2 + 10)
        assert reply[:4] == b"\x05\x00\x05\x00", reply.hex(" ")
        return reply
    head = recvExactly(sock, 4)
    head += recvExactly(sock, int.from_bytes(head[2:4], "big"))
    operation = recvExactly(sock, 4)
    assert operation[:2] == b"\x06\x00", (head + operation).hex(" ")
    rest = recvExactly(sock, 8 + int.from_bytes(operation[2:4], "big"))
    return head + operation + rest


def tunnelThrough(proxyPort: int, destinationPort: int, version: int = 5) -> socket.socket:
    """A blocking socket through socksd to C{destinationPort}, past the reply."""
    sock = socket.create_connection(("127.0.0.1", proxyPort), timeout=WAIT)
    sock.sendall(requestFor(version, destinationPort))
    readReply(sock, version)
    return sock


class RawDestination:
    """
    A listening socket on 127.0.0.1 whose one connection a thread serves
    with C{serve(sock)}.
    """

    def __init__(self, test: TestCase) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(WAIT)
        self.port = self.listener.getsockname()[1]
        test.addCleanup(self.listener.close)

    def accept(self) -> socket.socket:
        connection, _ = self.listener.accept()
        connection.settimeout(WAIT)
        return connection


def descriptorCount() -> int:
    """The descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


class _ResetTestsMixin:
    """
    A reset on one side of a tunnel reaches the other side as a reset,
    after every byte socksd received from the first: for the relay chosen
    by L{splice}.
    """

    timeout = 60
    splice = True
    payload = os.urandom(1 << 20)

    async def listen(self, factory: Any) -> int:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def socksd(self, upstream: Any = None, **config: Any) -> int:
        """socksd on loopback, with the relay of L{splice}."""
        resolver = FakeResolver({})
        factory = SocksServerFactory(
            reactor,
            upstream=upstream or DirectUpstream(reactor, resolver, connectTimeout=5.0),
            resolver=resolver,
            config=ServerConfig(handshakeTimeout=5.0, splice=self.splice, **config),
        )
        return await self.listen(factory)

    def recordRelays(self) -> list[Any]:
        """The relays the tunnels get, from now on."""
        relays: list[Any] = []
        original = _splice.trySplice

        def recording(*args: Any, **kwargs: Any) -> Any:
            relay = original(*args, **kwargs)
            relays.append(relay)
            return relay

        self.patch(_splice, "trySplice", recording)
        return relays

    def assertRelayKind(self, relays: list[Any]) -> None:
        """The tunnels used splice exactly when it is on."""
        if self.splice:
            self.assertTrue(relays)
            for relay in relays:
                self.assertIsInstance(relay, _splice.SpliceRelay)
        else:
            self.assertEqual(relays, [])

    async def destinationResets(self, proxyPort: int, version: int = 5) -> None:
        """
        A destination sends L{payload}, waits until socksd has all of it,
        and resets; the client, which read nothing meanwhile, then gets all
        of it and a reset, never a clean EOF.
        """
        destination = RawDestination(self)
        sent = threading.Event()

        def serve() -> bool:
            connection = destination.accept()
            connection.sendall(self.payload)
            try:
                return resetWhenDelivered(connection)
            finally:
                sent.set()

        def client() -> tuple[bytes, str]:
            sock = tunnelThrough(proxyPort, destination.port, version)
            # Read nothing until the destination has reset: socksd holds
            # what the client's socket could not take.
            sent.wait(WAIT)
            return readToEnd(sock)

        serving = deferToThread(serve)
        received, end = await deferToThread(client)
        self.assertTrue(await serving, "the destination's bytes never reached socksd")
        self.assertEqual(
            (len(received), hashlib.sha256(received).digest(), end),
            (len(self.payload), hashlib.sha256(self.payload).digest(), "reset"),
        )

    async def clientResets(self, proxyPort: int, version: int = 5) -> None:
        """
        A client sends L{payload}, waits until socksd has all of it, and
        resets; the destination, which read nothing meanwhile, then gets
        all of it and a reset.
        """
        destination = RawDestination(self)
        reset = threading.Event()

        def serve() -> tuple[bytes, str]:
            connection = destination.accept()
            reset.wait(WAIT)
            return readToEnd(connection)

        def client() -> bool:
            sock = tunnelThrough(proxyPort, destination.port, version)
            sock.sendall(self.payload)
            try:
                return resetWhenDelivered(sock)
            finally:
                reset.set()

        serving = deferToThread(serve)
        self.assertTrue(
            await deferToThread(client), "the client's bytes never reached socksd"
        )
        received, end = await serving
        self.assertEqual(
            (len(received), hashlib.sha256(received).digest(), end),
            (len(self.payload), hashlib.sha256(self.payload).digest(), "reset"),
        )

    async def test_destinationResetSocks5(self) -> None:
        """
        SOCKS5: a destination's reset reaches the client as a reset, after
        every byte socksd received from the destination.
        """
        relays = self.recordRelays()
        await self.destinationResets(await self.socksd(), 5)
        self.assertRelayKind(relays)

    async def test_destinationResetSocks4(self) -> None:
        """
        SOCKS4: the same.
        """
        await self.destinationResets(await self.socksd(), 4)

    async def test_destinationResetSocks6(self) -> None:
        """
        SOCKS6: the same.
        """
        await self.destinationResets(await self.socksd(), 6)

    async def test_clientReset(self) -> None:
        """
        A client's reset reaches the destination as a reset, after every
        byte socksd received from the client.
        """
        relays = self.recordRelays()
        await self.clientResets(await self.socksd(), 5)
        self.assertRelayKind(relays)

    async def test_resetSeenAsHangUp(self) -> None:
        """
        A reset the reactor reports as a hang-up (its event raced with the
        kernel's handling of the RST: the socket looked closed before it
        looked shut for reading, and Twisted took it for an EOF) still
        reaches the client as a reset: the socket's pending error tells.
        """
        relays: list[Any] = []
        original = pipeline.startRelay

        def recording(*args: Any, **kwargs: Any) -> Any:
            relay = original(*args, **kwargs)
            relays.append(relay)
            return relay

        self.patch(pipeline, "startRelay", recording)
        proxyPort = await self.socksd()
        destination = RawDestination(self)
        accepting = deferToThread(destination.accept)
        ending = deferToThread(
            lambda: readToEnd(tunnelThrough(proxyPort, destination.port))
        )
        connection = await accepting
        for _ in range(250):
            if relays:
                break
            await deferLater(reactor, 0.02, lambda: None)
        [relay] = relays
        upstream = (
            relay._upstream.transport if self.splice else relay.down.source
        )
        # In one turn of the reactor, so that nothing reads the socket: the
        # destination resets, the kernel closes socksd's socket, and the
        # reactor reports a hang-up, as in the race.
        connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        connection.close()
        deadline = time.monotonic() + 5
        while upstream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != 7:
            self.assertLess(time.monotonic(), deadline, "no reset reached socksd")
            time.sleep(0.001)
        reactor._disconnectSelectable(upstream, ConnectionDone(), True)
        self.assertEqual(await ending, (b"", "reset"))

    async def test_cleanEndStaysClean(self) -> None:
        """
        A destination that sends its bytes and closes cleanly: the client
        gets them all and a clean EOF, not a reset.
        """
        destination = RawDestination(self)
        proxyPort = await self.socksd()

        def serve() -> None:
            connection = destination.accept()
            connection.sendall(self.payload)
            connection.close()

        def client() -> tuple[bytes, str]:
            sock = tunnelThrough(proxyPort, destination.port)
            return readToEnd(sock)

        serving = deferToThread(serve)
        received, end = await deferToThread(client)
        await serving
        self.assertEqual((received == self.payload, end), (True, "eof"))

    async def chain(self) -> int:
        """socksd A chaining to socksd B (with L{splice}); A's port."""
        portB = await self.socksd()
        return await self.socksd(
            upstreamFromSpec(
                reactor, rf"socks5:proxy=tcp\:127.0.0.1\:{portB}", FakeResolver({})
            )
        )

    async def test_chainedDestinationReset(self) -> None:
        """
        Through socksd A chaining to socksd B: the destination's reset
        reaches B as a reset, B's reset of the upstream connection reaches
        A through its client endpoint, and A resets the client, after every
        byte.
        """
        await self.destinationResets(await self.chain())

    async def test_chainedClientReset(self) -> None:
        """
        Through socksd A chaining to socksd B: the client's reset reaches
        the destination as a reset, after every byte.
        """
        await self.clientResets(await self.chain())


def bindRequest(version: int) -> bytes:
    """A BIND expecting any peer, with no authentication."""
    if version == 4:
        return b"\x04\x02\x00\x00\x00\x00\x00\x00\x00"
    return b"\x05\x01\x00" + b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00"


def bindReplyLength(version: int) -> int:
    """The length of the method selection (SOCKS5) and first BIND reply."""
    return 8 if version == 4 else 2 + 10


class BlackHole:
    """
    A destination whose connections never complete: a listening socket
    with a full accept queue (the kernel drops further SYNs).
    """

    def __init__(self, test: TestCase) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        test.addCleanup(self.listener.close)
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            test.addCleanup(filler.close)


class AbandonedRequestTests(TestCase):
    """
    A client that closes (or sends EOF) while its BIND or CONNECT is
    pending frees what the request held at once: socksd's descriptors are
    back to where they were, and so are its connection counts.
    """

    timeout = 60

    async def socksd(self, **config: Any) -> SocksServerFactory:
        """socksd on loopback, with a per-client cap of 1000."""
        resolver = FakeResolver({})
        config.setdefault("handshakeTimeout", 30.0)
        factory = SocksServerFactory(
            reactor,
            upstream=DirectUpstream(reactor, resolver),
            resolver=resolver,
            config=ServerConfig(**config),
        )
        factory.limits = ConnectionLimits(maxPerClient=1000)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        factory.port = port.getHost().port
        return factory

    async def baseline(self) -> int:
        """The descriptors open, once the reactor runs (it opens a pipe
        when it starts)."""
        await deferLater(reactor, 0, lambda: None)
        return descriptorCount()

    async def settled(self, check: Any) -> bool:
        """Wait (5 s at most) until C{check()} is true."""
        for _ in range(250):
            if check():
                return True
            await deferLater(reactor, 0.02, lambda: None)
        return bool(check())

    def raw(self, port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.addCleanup(sock.close)
        return sock

    async def test_abandonedBinds(self) -> None:
        """
        SOCKS4 and SOCKS5 clients that close after the first BIND reply:
        the listening sockets and the client connections are closed at
        once (not after the BIND timeout), and the client's places in the
        connection limits and the pending BINDs are given back.
        """
        factory = await self.socksd(bindTimeout=120.0, maxPendingBindsPerClient=100)
        baseline = await self.baseline()
        clients = []
        for index in range(60):
            version = 4 if index % 2 else 5
            sock = self.raw(factory.port)
            sock.sendall(bindRequest(version))
            await deferToThread(recvExactly, sock, bindReplyLength(version))
            clients.append(sock)
        self.assertGreaterEqual(descriptorCount(), baseline + 3 * 60)
        self.assertEqual(factory.pendingBinds, {"127.0.0.1": 60})
        for sock in clients:
            sock.close()
        self.assertTrue(
            await self.settled(lambda: descriptorCount() <= baseline),
            f"{descriptorCount()} descriptors, {baseline} before",
        )
        self.assertEqual(factory.limits.total, 0)
        self.assertEqual(factory.pendingBinds, {})

    async def test_abandonedConnects(self) -> None:
        """
        Clients that close while their CONNECT to a destination that never
        answers is pending: the attempts are given up at once (not after
        the connect timeout), with their descriptors.
        """
        factory = await self.socksd(connectTimeout=60.0)
        hole = BlackHole(self)
        baseline = await self.baseline()
        clients = []
        for _ in range(40):
            sock = self.raw(factory.port)
            sock.sendall(requestFor(5, hole.port))
            self.assertEqual(await deferToThread(recvExactly, sock, 2), b"\x05\x00")
            clients.append(sock)
        # Each client's connection and its destination attempt.
        self.assertTrue(
            await self.settled(lambda: descriptorCount() >= baseline + 3 * 40)
        )
        for sock in clients:
            sock.shutdown(socket.SHUT_WR)
        self.assertTrue(
            await self.settled(lambda: descriptorCount() <= baseline + 40),
            f"{descriptorCount()} descriptors, {baseline} before, 40 clients",
        )
        for sock in clients:
            # socksd closed without a reply.
            self.assertEqual(await deferToThread(sock.recv, 100), b"")
            sock.close()
        self.assertTrue(await self.settled(lambda: descriptorCount() <= baseline))
        self.assertEqual(factory.limits.total, 0)

    async def test_eofWithRequest(self) -> None:
        """
        A CONNECT whose request comes with the client's EOF and no data
        is not served: the connection closes at once, with no reply.
        """
        factory = await self.socksd()
        hole = BlackHole(self)
        sock = self.raw(factory.port)
        sock.sendall(requestFor(5, hole.port))
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(await deferToThread(readToEnd, sock), (b"\x05\x00", "eof"))
        self.assertTrue(await self.settled(lambda: factory.limits.total == 0))

    async def test_eofWithDataStillConnects(self) -> None:
        """
        A CONNECT whose client sends bytes and EOF before the reply is
        still served: the destination gets the bytes, then the EOF (and the
        client the reply, then the destination's answer).
        """
        factory = await self.socksd()
        destination = RawDestination(self)
        payload = os.urandom(20000)

        def serve() -> tuple[bytes, str]:
            connection = destination.accept()
            received, end = readToEnd(connection)
            return received, end

        serving = deferToThread(serve)
        sock = self.raw(factory.port)
        sock.sendall(requestFor(5, destination.port) + payload)
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(await serving, (payload, "eof"))
        received, end = await deferToThread(readToEnd, sock)
        self.assertEqual((received[:4], len(received), end), (b"\x05\x00\x05\x00", 12, "eof"))

    async def test_pendingBindCap(self) -> None:
        """
        One client address may have C{maxPendingBindsPerClient} BINDs
        waiting at once: one more gets a general failure (05 01); once one
        of them ends, a new BIND is served again.
        """
        factory = await self.socksd(maxPendingBindsPerClient=3)
        waiting = []
        for _ in range(3):
            sock = self.raw(factory.port)
            sock.sendall(bindRequest(5))
            reply = await deferToThread(recvExactly, sock, 12)
            self.assertEqual(reply[:4], b"\x05\x00\x05\x00")
            waiting.append(sock)
        refused = self.raw(factory.port)
        refused.sendall(bindRequest(5))
        received, end = await deferToThread(readToEnd, refused)
        self.assertEqual((received[:4], end), (b"\x05\x00\x05\x01", "eof"))
        waiting.pop().close()
        self.assertTrue(await self.settled(lambda: factory.pendingBinds == {"127.0.0.1": 2}))
        again = self.raw(factory.port)
        again.sendall(bindRequest(5))
        reply = await deferToThread(recvExactly, again, 12)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x00")

    async def test_socks4PendingBindCap(self) -> None:
        """
        SOCKS4: a BIND over the cap gets 91.
        """
        factory = await self.socksd(maxPendingBindsPerClient=1)
        first = self.raw(factory.port)
        first.sendall(bindRequest(4))
        self.assertEqual((await deferToThread(recvExactly, first, 8))[:2], b"\x00\x5a")
        second = self.raw(factory.port)
        second.sendall(bindRequest(4))
        received, end = await deferToThread(readToEnd, second)
        self.assertEqual((received[:2], end), (b"\x00\x5b", "eof"))


class PendingBindOptionTests(SynchronousTestCase):
    """
    C{--max-pending-binds-per-client} and
    C{ServerConfig.maxPendingBindsPerClient}.
    """

    def configFor(self, argv: list[str]) -> ServerConfig:
        options = Options()
        options.parseOptions(argv)
        return list(makeService(options))[0].factory.config

    def test_option(self) -> None:
        """
        The option reaches the configuration: 32 by default, 0 for no
        limit; a negative number is a usage error.
        """
        self.assertEqual(self.configFor([]).maxPendingBindsPerClient, 32)
        self.assertEqual(
            self.configFor(["--max-pending-binds-per-client", "5"]).maxPendingBindsPerClient,
            5,
        )
        self.assertIsNone(
            self.configFor(["--max-pending-binds-per-client", "0"]).maxPendingBindsPerClient
        )
        self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            ["--max-pending-binds-per-client", "-1"],
        )

    def test_config(self) -> None:
        """
        The configuration takes a positive number or None; anything else is
        a C{ValueError}.
        """
        self.assertEqual(ServerConfig().maxPendingBindsPerClient, 32)
        self.assertIsNone(ServerConfig(maxPendingBindsPerClient=None).maxPendingBindsPerClient)
        for bad in (0, -3, True, 2.5, "8"):
            self.assertRaises(ValueError, ServerConfig, maxPendingBindsPerClient=bad)


class _Held(Protocol):
    """A server protocol that tells its factory it is connected and lost."""

    def connectionMade(self) -> None:
        self.lost: Deferred[Any] = Deferred()
        self.factory.connected.callback(self)

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(reason.value)


class AbortAfterWritingTests(TestCase):
    """
    L{abortAfterWriting} on a real TCP connection: a reset once what the
    transport was given is delivered, or after the grace period.
    """

    timeout = 60

    async def connected(self) -> tuple[_Held, socket.socket]:
        """A Twisted server protocol and the blocking client socket of one
        connection."""
        factory = Factory.forProtocol(_Held)
        factory.connected = Deferred()
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        server = await factory.connected.addTimeout(WAIT, reactor)
        return server, client

    async def test_deliveredThenReset(self) -> None:
        """
        The peer gets every byte written before, then a reset: also when a
        clean close was asked for first (as Twisted does when a transport's
        producer is lost), which is taken back.
        """
        server, client = await self.connected()
        payload = os.urandom(4 << 20)
        server.transport.write(payload)
        server.transport.loseConnection()
        abortAfterWriting(server.transport, reactor)
        received, end = await deferToThread(readToEnd, client)
        self.assertEqual((received == payload, len(received), end), (True, len(payload), "reset"))
        reason = await server.lost
        self.assertIsInstance(reason, ConnectionAborted)

    async def test_graceBounded(self) -> None:
        """
        A peer that reads nothing holds the connection for the grace period
        at most: then it is reset with bytes undelivered.
        """
        server, client = await self.connected()
        payload = os.urandom(32 << 20)
        server.transport.write(payload)
        abortAfterWriting(server.transport, reactor, grace=0.2)
        reason = await server.lost.addTimeout(WAIT, reactor)
        self.assertIsInstance(reason, ConnectionAborted)
        received, end = await deferToThread(readToEnd, client)
        self.assertEqual(end, "reset")
        self.assertLess(len(received), len(payload))
        self.assertEqual(received, payload[: len(received)])

    async def test_inMemory(self) -> None:
        """
        A transport with no socket under it is aborted at once.
        """
        transport = RecordingTransport()
        abortAfterWriting(transport, reactor)
        self.assertTrue(transport.aborted)


class SpliceResetTests(_ResetTestsMixin, TestCase):
    """Resets with the splice relay."""

    splice = True

    def setUp(self) -> None:
        if _splice._SPLICE is None:
            raise self.skipTest("no splice(2) here (Linux only)")


class OrdinaryResetTests(_ResetTestsMixin, TestCase):
    """Resets with the ordinary relay."""

    splice = False



class AcceptErrorsTests(SynchronousTestCase):
    """
    L{AcceptErrors}: the connections a listening port could not accept, in
    one log line a second at most, and in the metrics.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.forwarded: list[dict[str, Any]] = []
        self.errors = AcceptErrors(self.clock, publisher=self.forwarded.append)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def closed(self, count: int) -> None:
        """Twisted's events for C{count} connections closed out of descriptors."""
        self.errors(
            {"log_format": "EMFILE encountered; releasing reserved file descriptor."}
        )
        for port in range(count):
            self.errors(
                {
                    "log_format": "EMFILE recovery: Closed socket from {address}",
                    "address": ("127.0.0.1", 40000 + port),
                }
            )
        self.errors({"log_format": "Re-reserving EMFILE recovery file descriptor."})

    def lines(self) -> list[str]:
        return [
            formatEvent(event)
            for event in self.logged
            if event.get("log_namespace") == "socksd.service.listen"
        ]

    def test_oneLinePerSecond(self) -> None:
        """
        The first connection not accepted is logged at once; the next ones
        within the second are counted, and logged together a second after
        the first line; a quiet second logs nothing.
        """
        self.closed(1)
        self.assertEqual(len(self.lines()), 1)
        self.assertIn("could not accept 1 connection(s)", self.lines()[0])
        self.assertIn("EMFILE 1", self.lines()[0])
        self.assertIn("ulimit -n", self.lines()[0])
        self.clock.advance(0.2)
        self.closed(700)
        self.clock.advance(0.3)
        self.closed(53)
        self.assertEqual(len(self.lines()), 1)
        self.clock.advance(0.5)
        self.assertEqual(len(self.lines()), 2)
        self.assertIn("could not accept 753 connection(s) in 0.8 s", self.lines()[1])
        self.clock.advance(5)
        self.assertEqual(len(self.lines()), 2)
        self.assertEqual(self.errors.total, {"EMFILE": 754})
        self.assertEqual(self.forwarded, [])

    def test_otherErrors(self) -> None:
        """
        Accepts that failed otherwise are counted by their error; other
        events go on to the publisher unchanged.
        """
        self.errors(
            {
                "log_format": "Could not accept new connection ({acceptError})",
                "acceptError": "ENFILE",
            }
        )
        other = {"log_format": "Something else", "log_level": None}
        self.errors(other)
        self.assertEqual(self.errors.total, {"ENFILE": 1})
        self.assertIn("ENFILE 1", self.lines()[0])
        self.assertEqual(self.forwarded, [other])

    def test_metrics(self) -> None:
        """
        Each connection not accepted is counted in
        C{socksd_accept_errors_total}, by error.
        """
        try:
            from socksd.service.metrics import Metrics

            metrics = Metrics()
        except ImportError:  # pragma: no cover
            raise self.skipTest("prometheus_client is not installed")
        self.errors.metrics = metrics
        self.closed(3)
        self.assertIn(
            b'socksd_accept_errors_total{error="EMFILE"} 3.0', metrics.text()
        )

    def test_stop(self) -> None:
        """
        C{stop} logs what is counted and not logged yet, and cancels the
        line that was due.
        """
        self.closed(1)
        self.closed(4)
        self.errors.stop()
        self.assertEqual(len(self.lines()), 2)
        self.assertIn("could not accept 4 connection(s)", self.lines()[1])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DescriptorExhaustionTests(SynchronousTestCase):
    """
    C{twistd socksd} out of file descriptors (C{RLIMIT_NOFILE} 64, 300
    connections at once) logs one line a second about the connections it
    could not accept, not several per connection; counts them in the
    metrics; and serves again once descriptors are free.
    """

    def test_rateLimited(self) -> None:
        """
        One or two lines (not hundreds) report the connections not
        accepted, with counts that add up to the metric; then a new client
        is served.
        """
        import re
        import resource
        import signal
        import subprocess
        import tempfile

        try:
            import prometheus_client  # noqa: F401
        except ImportError:  # pragma: no cover
            raise self.skipTest("prometheus_client is not installed")
        import socksd
        from socksd.test.test_workers import TWISTD, freePort

        checkout = os.path.dirname(os.path.dirname(os.path.abspath(socksd.__file__)))
        port, metricsPort = freePort(), freePort()
        logFile = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.addCleanup(os.unlink, logFile.name)

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

        process = subprocess.Popen(
            [
                TWISTD,
                "-n",
                "--pidfile=",
                "socksd",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--metrics",
                f"tcp:{metricsPort}:interface=127.0.0.1",
            ],
            stdout=logFile,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=checkout),
            cwd=checkout,
            preexec_fn=limit,
            start_new_session=True,
        )

        def stop() -> None:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

        self.addCleanup(stop)

        def log() -> str:
            with open(logFile.name) as reader:
                return reader.read()

        def greets() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(b"\x05\x01\x00")
                    return sock.recv(2) == b"\x05\x00"
            except OSError:
                return False

        deadline = time.monotonic() + 30
        while not greets():
            self.assertIsNone(process.poll(), log())
            self.assertLess(time.monotonic(), deadline, log())
            time.sleep(0.1)
        clients = []
        try:
            for _ in range(300):
                sock = socket.socket()
                sock.setblocking(False)
                try:
                    sock.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                clients.append(sock)
            time.sleep(2.5)
        finally:
            for sock in clients:
                sock.close()
        line = re.compile(r"could not accept (\d+) connection\(s\) in [\d.]+ s \(EMFILE \d+\)")
        deadline = time.monotonic() + 10
        while not greets():
            self.assertLess(time.monotonic(), deadline, log())
            time.sleep(0.1)
        text = log()
        counts = [int(count) for count in line.findall(text)]
        self.assertTrue(counts, text[-3000:])
        # Connections came for about 2.5 s: a line a second at most.
        self.assertLessEqual(len(counts), 4, text[-3000:])
        self.assertNotIn("EMFILE recovery", text)
        self.assertNotIn("Could not accept new connection", text)
        with socket.create_connection(("127.0.0.1", metricsPort), timeout=5) as web:
            web.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            page = b""
            while chunk := web.recv(65536):
                page += chunk
        metric = re.search(
            rb'socksd_accept_errors_total\{error="EMFILE"\} ([\d.]+)', page
        )
        self.assertIsNotNone(metric, page.decode("utf-8", "replace"))
        self.assertEqual(float(metric.group(1)), sum(counts))
        self.assertGreater(sum(counts), 100)



class WorkerHangupTests(SynchronousTestCase):
    """
    C{twistd socksd --workers 2 --rules}: a SIGHUP passed on to a worker
    while it starts (a replacement, after one was killed) is held until it
    can reload, rather than ending it.
    """

    def test_hangupWhileStarting(self) -> None:
        """
        With SIGHUPs every 50 ms while a killed worker is replaced, no
        worker dies of SIGHUP, and the replacement reloads the rules.
        """
        import re
        import signal
        import subprocess
        import tempfile

        import socksd
        from socksd.test.test_workers import READY, TWISTD, freePort

        checkout = os.path.dirname(os.path.dirname(os.path.abspath(socksd.__file__)))
        directory = tempfile.mkdtemp()
        rules = os.path.join(directory, "rules.toml")
        with open(rules, "w") as file:
            file.write('client-default = "pass"\n')
        logPath = os.path.join(directory, "socksd.log")
        self.addCleanup(lambda: [os.unlink(rules), os.unlink(logPath), os.rmdir(directory)])
        with open(logPath, "w") as logFile:
            process = subprocess.Popen(
                [
                    TWISTD, "-n", "--pidfile=", "socksd", "--workers", "2",
                    "--listen", f"tcp:{freePort()}:interface=127.0.0.1",
                    "--rules", rules,
                ],
                stdout=logFile,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONPATH=checkout),
                cwd=checkout,
                start_new_session=True,
            )

        def stop() -> None:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

        self.addCleanup(stop)

        def log() -> str:
            with open(logPath) as reader:
                return reader.read()

        def workers() -> set[int]:
            return {int(pid) for _, pid in READY.findall(log())}

        deadline = time.monotonic() + 30
        while len(workers()) < 2:
            self.assertIsNone(process.poll(), log())
            self.assertLess(time.monotonic(), deadline, log())
            time.sleep(0.1)
        first = workers()
        os.kill(min(first), signal.SIGKILL)
        for _ in range(80):
            time.sleep(0.05)
            os.kill(process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while len(workers()) < 3:
            self.assertLess(time.monotonic(), deadline, log())
            time.sleep(0.1)
        [replacement] = workers() - first
        deadline = time.monotonic() + 20
        reloaded = re.compile(rf"\(pid {replacement}\): \[socksd\.service\.build\] reloaded")
        while not reloaded.search(log()):
            self.assertLess(time.monotonic(), deadline, log())
            time.sleep(0.1)
        self.assertNotIn("signal 1", log())
        self.assertEqual(log().count(") died"), 1, log())


if not sys.platform.startswith("linux"):
    for _case in (
        SpliceResetTests,
        OrdinaryResetTests,
        AbortAfterWritingTests,
        AbandonedRequestTests,
        DescriptorExhaustionTests,
    ):
        _case.skip = "SIOCOUTQ and /proc/self/fd are Linux's"
