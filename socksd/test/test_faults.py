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
from twisted.internet.error import ConnectionAborted
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from socksd.server import ServerConfig, SocksServerFactory
from socksd.server.relay import splice as _splice
from socksd.server.relay._transport import abortAfterWriting
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


if not sys.platform.startswith("linux"):
    for _case in (SpliceResetTests, OrdinaryResetTests, AbortAfterWritingTests):
        _case.skip = "SIOCOUTQ and /proc/self/fd are Linux's"
