"""
Loopback tests: the real reactor, real sockets on 127.0.0.1 (and ::1 where
the host has it), socksd's real factory and DirectUpstream, and real servers
behind it.  Clients speak SOCKS in raw bytes, written out here, so that the
server is not checked against its own codecs.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from socksd.server import ServerConfig, SocksServerFactory
from socksd.testing import EchoProtocol, FakeResolver
from socksd.upstream import DirectUpstream

#: A name only the test's resolver knows.
TEST_NAME = "echo.socksd.test"
#: How long any one wait may take before the test fails.
WAIT = 20.0


def socks4Request(
    port: int,
    address: bytes = b"\x7f\x00\x00\x01",
    userId: bytes = b"",
    domain: bytes | None = None,
) -> bytes:
    """A SOCKS4 (or, with C{domain}, SOCKS4A) CONNECT request."""
    if domain is not None:
        return (
            b"\x04\x01"
            + port.to_bytes(2, "big")
            + b"\x00\x00\x00\x01"
            + userId
            + b"\x00"
            + domain
            + b"\x00"
        )
    return b"\x04\x01" + port.to_bytes(2, "big") + address + userId + b"\x00"


def socks5Request(
    port: int, atyp: int = 1, address: bytes = b"\x7f\x00\x00\x01", command: int = 1
) -> bytes:
    """A SOCKS5 greeting (method 00) and request."""
    if atyp == 3:
        address = bytes([len(address)]) + address
    return (
        b"\x05\x01\x00"
        + bytes([5, command, 0, atyp])
        + address
        + port.to_bytes(2, "big")
    )


def socks4ReplyEnd(buffer: bytes) -> int | None:
    """Where a SOCKS4 reply ends, or None while incomplete."""
    return 8 if len(buffer) >= 8 else None


def socks5ReplyEnd(buffer: bytes) -> int | None:
    """Where the method selection and the reply end, or None while incomplete."""
    if len(buffer) >= 2 and buffer[1] == 0xFF:
        return 2
    if len(buffer) < 6:
        return None
    atyp = buffer[5]
    length = {1: 2 + 10, 4: 2 + 22}.get(atyp)
    if length is None:
        length = 2 + 7 + buffer[6]
    return length if len(buffer) >= length else None


@implementer(IHalfCloseableProtocol)
class Client(Protocol):
    """
    A SOCKS client in raw bytes: it writes C{handshake} (all at once), cuts
    the reply off with C{replyEnd}, then collects (or hashes) the rest.

    @ivar reply: fires with the reply bytes.
    @ivar closed: fires when the connection is gone.
    @ivar ended: fires on the server's EOF.
    """

    def __init__(
        self, handshake: bytes, replyEnd: Callable[[bytes], int | None]
    ) -> None:
        self.handshake = handshake
        self.replyEnd = replyEnd
        self.buffer = b""
        self.received = bytearray()
        self.hasher: Any = None
        self.count = 0
        self.expected: int | None = None
        self.allReceived: Deferred[None] = Deferred()
        self.reply: Deferred[bytes] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if self.handshake:
            self.transport.write(self.handshake)

    def dataReceived(self, data: bytes) -> None:
        if not self.reply.called:
            self.buffer += data
            end = self.replyEnd(self.buffer)
            if end is None:
                return
            reply, data = self.buffer[:end], self.buffer[end:]
            self.reply.callback(reply)
            if not data:
                return
        self.count += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        else:
            self.received += data
        if (
            self.expected is not None
            and self.count >= self.expected
            and not self.allReceived.called
        ):
            self.allReceived.callback(None)

    def readConnectionLost(self) -> None:
        self.ended.callback(None)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        if not self.reply.called:
            self.reply.callback(self.buffer)
        if not self.ended.called:
            self.ended.callback(None)
        self.closed.callback(None)


@implementer(IPushProducer)
class Source:
    """
    Writes C{total} bytes to a transport as a streaming producer, in 64 KiB
    chunks that differ from each other (so a reordering would show in the
    checksum), hashing what it wrote; then unregisters.
    """

    CHUNK = 65536

    def __init__(self, transport: Any, total: int) -> None:
        self.transport = transport
        self.remaining = total
        self.base = os.urandom(self.CHUNK + 1024)
        self.index = 0
        self.paused = False
        self.hasher = hashlib.sha256()
        transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.remaining > 0:
            offset = self.index % 1024
            chunk = self.base[offset : offset + min(self.CHUNK, self.remaining)]
            self.index += 1
            self.remaining -= len(chunk)
            self.hasher.update(chunk)
            self.transport.write(chunk)
        if self.remaining == 0 and self.transport is not None:
            transport, self.transport = self.transport, None
            transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.remaining = 0
        self.paused = True


@implementer(IHalfCloseableProtocol)
class DigestAfterEOF(Protocol):
    """A server that answers only after the client's EOF: the sha256 of all
    it received and the byte count, then closes."""

    def connectionMade(self) -> None:
        self.hasher = hashlib.sha256()
        self.count = 0

    def dataReceived(self, data: bytes) -> None:
        self.hasher.update(data)
        self.count += len(data)

    def readConnectionLost(self) -> None:
        self.transport.write(self.hasher.digest() + self.count.to_bytes(8, "big"))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class LoopbackTests(TestCase):
    """
    socksd on 127.0.0.1 in front of real servers.
    """

    timeout = 60

    async def listen(self, factory: Factory, ipv6: bool = False) -> int:
        """Listen on loopback until the test ends; return the port."""
        if ipv6:
            endpoint: Any = TCP6ServerEndpoint(reactor, 0, interface="::1")
        else:
            endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def setUpServers(self, **config: Any) -> None:
        """An echo server, a digest server and socksd."""
        self.resolver = FakeResolver({TEST_NAME: ["127.0.0.1"]})
        self.echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        self.digestPort = await self.listen(Factory.forProtocol(DigestAfterEOF))
        config.setdefault("handshakeTimeout", 5.0)
        factory = SocksServerFactory(
            reactor,
            upstream=DirectUpstream(reactor, self.resolver, connectTimeout=5.0),
            resolver=self.resolver,
            config=ServerConfig(**config),
        )
        self.socksPort = await self.listen(factory)

    async def connect(
        self, handshake: bytes, replyEnd: Callable[[bytes], int | None]
    ) -> Client:
        """Connect a L{Client} to socksd; it is closed when the test ends."""
        client = Client(handshake, replyEnd)
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.socksPort, timeout=WAIT
        )
        await endpoint.connect(Factory.forProtocol(lambda: client))

        def close() -> Deferred[None]:
            client.transport.abortConnection()
            return client.closed

        self.addCleanup(close)
        return client

    async def wait(self, deferred: Deferred[Any]) -> Any:
        """Wait for C{deferred}, at most L{WAIT} seconds."""
        return await deferred.addTimeout(WAIT, reactor)

    async def echoRoundTrip(
        self, client: Client, payload: bytes = b"ping through socksd"
    ) -> None:
        """Send C{payload} through an established tunnel to the echo server."""
        client.expected = client.count + len(payload)
        client.transport.write(payload)
        await self.wait(client.allReceived)
        self.assertEqual(bytes(client.received[-len(payload) :]), payload)

    async def goodSocks5(self) -> None:
        """A fresh SOCKS5 CONNECT to the echo server works."""
        client = await self.connect(socks5Request(self.echoPort), socks5ReplyEnd)
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x00")
        await self.echoRoundTrip(client)

    async def test_socks4Connect(self) -> None:
        """
        A SOCKS4 CONNECT to 127.0.0.1 is granted (00 5A) and bytes go
        through both ways.
        """
        await self.setUpServers()
        client = await self.connect(
            socks4Request(self.echoPort, userId=b"alice"), socks4ReplyEnd
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:2], b"\x00\x5a")
        await self.echoRoundTrip(client)

    async def test_socks4aConnect(self) -> None:
        """
        A SOCKS4A CONNECT to a name is resolved with the server's resolver,
        granted, and relayed.
        """
        await self.setUpServers()
        client = await self.connect(
            socks4Request(self.echoPort, domain=TEST_NAME.encode()), socks4ReplyEnd
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:2], b"\x00\x5a")
        await self.echoRoundTrip(client)
        self.assertIn(TEST_NAME, self.resolver.queries)

    async def test_socks5ConnectIPv4(self) -> None:
        """
        A SOCKS5 CONNECT to an IPv4 address succeeds; the reply's bound
        address is the proxy's local address on 127.0.0.1.
        """
        await self.setUpServers()
        client = await self.connect(socks5Request(self.echoPort), socks5ReplyEnd)
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:6], b"\x05\x00\x05\x00\x00\x01")
        self.assertEqual(reply[6:10], b"\x7f\x00\x00\x01")
        self.assertNotEqual(reply[10:12], b"\x00\x00")
        await self.echoRoundTrip(client)

    async def test_socks5ConnectIPv6(self) -> None:
        """
        A SOCKS5 CONNECT to ::1 succeeds, with an IPv6 bound address.
        """
        await self.setUpServers()
        try:
            port = await self.listen(Factory.forProtocol(EchoProtocol), ipv6=True)
        except CannotListenError as error:
            self.skipTest(f"this host cannot listen on ::1: {error}")
        client = await self.connect(
            socks5Request(port, atyp=4, address=b"\x00" * 15 + b"\x01"), socks5ReplyEnd
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:6], b"\x05\x00\x05\x00\x00\x04")
        self.assertEqual(reply[6:22], b"\x00" * 15 + b"\x01")
        await self.echoRoundTrip(client)

    async def test_socks5ConnectDomain(self) -> None:
        """
        A SOCKS5 CONNECT to a domain name is resolved by the server's
        resolver and relayed.
        """
        await self.setUpServers()
        client = await self.connect(
            socks5Request(self.echoPort, atyp=3, address=TEST_NAME.encode()),
            socks5ReplyEnd,
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x00")
        await self.echoRoundTrip(client)

    async def test_bulkTransferBothWays(self) -> None:
        """
        64 MiB written with a streaming producer go to the echo server and
        come back while still being written, unchanged (same sha256), through
        a SOCKS5 tunnel.
        """
        await self.setUpServers()
        total = 64 * 1024 * 1024
        client = await self.connect(socks5Request(self.echoPort), socks5ReplyEnd)
        await self.wait(client.reply)
        client.hasher = hashlib.sha256()
        client.expected = total
        source = Source(client.transport, total)
        await self.wait(client.allReceived)
        self.assertEqual(client.count, total)
        self.assertEqual(client.hasher.hexdigest(), source.hasher.hexdigest())

    async def test_halfClose(self) -> None:
        """
        A client that shuts its write side after its data still gets the
        whole answer of a server that answers only after EOF, then the
        connection closes.
        """
        await self.setUpServers()
        payload = os.urandom(300000)
        client = await self.connect(socks5Request(self.digestPort), socks5ReplyEnd)
        await self.wait(client.reply)
        client.transport.write(payload)
        client.transport.loseWriteConnection()
        await self.wait(client.ended)
        self.assertEqual(
            bytes(client.received),
            hashlib.sha256(payload).digest() + len(payload).to_bytes(8, "big"),
        )
        await self.wait(client.closed)

    async def test_halfCloseWithRequest(self) -> None:
        """
        A client that sends its request, its data and EOF at once (no
        waiting for the reply) gets the reply and the server's answer.
        """
        await self.setUpServers()
        payload = b"all at once"
        client = await self.connect(
            socks5Request(self.digestPort) + payload, socks5ReplyEnd
        )
        client.transport.loseWriteConnection()
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x00")
        await self.wait(client.closed)
        self.assertEqual(
            bytes(client.received),
            hashlib.sha256(payload).digest() + len(payload).to_bytes(8, "big"),
        )

    async def test_optimisticData(self) -> None:
        """
        Data in the same write as the request (optimistic data) reaches the
        destination, after the reply.
        """
        await self.setUpServers()
        payload = b"optimistic " * 100
        for request, replyEnd, success in (
            (socks5Request(self.echoPort), socks5ReplyEnd, b"\x05\x00\x05\x00"),
            (socks4Request(self.echoPort), socks4ReplyEnd, b"\x00\x5a"),
        ):
            client = await self.connect(request + payload, replyEnd)
            client.expected = len(payload)
            reply = await self.wait(client.reply)
            self.assertEqual(reply[: len(success)], success)
            await self.wait(client.allReceived)
            self.assertEqual(bytes(client.received), payload)

    async def refusingPort(self) -> int:
        """A loopback port nothing listens on."""
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory()
        )
        number = port.getHost().port
        await port.stopListening()
        return number

    async def test_refusedSocks5(self) -> None:
        """
        A destination that refuses gets SOCKS5 reply 05, and the connection
        is closed.
        """
        await self.setUpServers()
        client = await self.connect(
            socks5Request(await self.refusingPort()), socks5ReplyEnd
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x05")
        await self.wait(client.closed)

    async def test_refusedSocks4(self) -> None:
        """
        A destination that refuses gets SOCKS4 reply 91 (5B), and the
        connection is closed.
        """
        await self.setUpServers()
        client = await self.connect(
            socks4Request(await self.refusingPort()), socks4ReplyEnd
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:2], b"\x00\x5b")
        await self.wait(client.closed)

    async def test_unresolvable(self) -> None:
        """
        A name the resolver does not know gets SOCKS5 reply 04.
        """
        await self.setUpServers()
        client = await self.connect(
            socks5Request(self.echoPort, atyp=3, address=b"nowhere.socksd.test"),
            socks5ReplyEnd,
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x04")
        await self.wait(client.closed)

    async def test_garbageThenGood(self) -> None:
        """
        A garbage first byte gets SOCKS6's Version Mismatch reply (06) and
        the close; a fresh CONNECT works after it.
        """
        await self.setUpServers()
        client = await self.connect(b"\x99garbage", socks5ReplyEnd)
        await self.wait(client.closed)
        self.assertEqual(client.buffer, b"\x06")
        await self.goodSocks5()

    async def test_garbageWithoutSocks6(self) -> None:
        """
        On a port that does not serve SOCKS6, a garbage first byte, and
        SOCKS6's own 06, are closed without an answer.
        """
        await self.setUpServers(protocols=frozenset({4, 5}))
        for first in (b"\x99garbage", b"\x06\x00\x00\x00"):
            client = await self.connect(first, socks5ReplyEnd)
            await self.wait(client.closed)
            self.assertEqual(client.buffer, b"")
        await self.goodSocks5()

    async def test_resolvePtrOfName(self) -> None:
        """
        Tor's RESOLVE_PTR (F1) of a name gets 08 (address type not
        supported), as Tor answers it.
        """
        await self.setUpServers()
        client = await self.connect(
            socks5Request(0, atyp=3, address=TEST_NAME.encode(), command=0xF1),
            socks5ReplyEnd,
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x08")
        await self.wait(client.closed)

    async def test_truncatedThenGood(self) -> None:
        """
        A request cut short by EOF is closed; a fresh CONNECT works after it.
        """
        await self.setUpServers()
        client = await self.connect(socks5Request(self.echoPort)[:6], socks5ReplyEnd)
        client.transport.loseWriteConnection()
        await self.wait(client.closed)
        self.assertEqual(client.buffer, b"\x05\x00")
        await self.goodSocks5()

    async def test_truncatedTimesOut(self) -> None:
        """
        A request cut short, with the connection left open, is closed at the
        handshake timeout; a fresh CONNECT works after it.
        """
        await self.setUpServers(handshakeTimeout=0.2)
        client = await self.connect(socks5Request(self.echoPort)[:6], socks5ReplyEnd)
        await self.wait(client.closed)
        await self.goodSocks5()

    async def test_oversizeDomainThenGood(self) -> None:
        """
        A SOCKS4A domain longer than 255 bytes gets 91 and a close; long
        SOCKS5 domains get failure replies and a close; a fresh CONNECT works
        after them.
        """
        await self.setUpServers()
        client = await self.connect(
            socks4Request(self.echoPort, domain=b"a" * 300), socks4ReplyEnd
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:2], b"\x00\x5b")
        await self.wait(client.closed)
        # The longest name DNS allows (253 bytes) is looked up and unknown.
        longest = (b"a" * 63 + b".") * 3 + b"a" * 61
        self.assertEqual(len(longest), 253)
        client = await self.connect(
            socks5Request(self.echoPort, atyp=3, address=longest), socks5ReplyEnd
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x04")
        await self.wait(client.closed)
        # The longest SOCKS5 can carry (255 bytes) is no valid host name: a
        # failure reply, and a close.
        client = await self.connect(
            socks5Request(self.echoPort, atyp=3, address=b"b" + longest + b"b"),
            socks5ReplyEnd,
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:3], b"\x05\x00\x05")
        self.assertNotEqual(reply[3], 0)
        await self.wait(client.closed)
        await self.goodSocks5()

    async def test_httpPage(self) -> None:
        """
        An HTTP request gets a 501 page saying this is a SOCKS proxy, and a
        close.
        """
        await self.setUpServers()
        client = await self.connect(
            b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
            lambda buffer: None,
        )
        await self.wait(client.closed)
        self.assertTrue(client.buffer.startswith(b"HTTP/1.0 501 "), client.buffer[:40])
        self.assertIn(b"SOCKS proxy", client.buffer)
        await self.goodSocks5()
