"""
BIND over loopback: the real reactor, real sockets on 127.0.0.1, socksd's
real factory, raw-byte SOCKS4 and SOCKS5 clients, and a real second
connection to the bound port.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from socksd.policy import Policy
from socksd.server import ServerConfig, SocksServerFactory
from socksd.testing import FakeResolver
from socksd.upstream import DirectUpstream

#: The longest any one wait may take before the test fails.
WAIT = 10.0


class RawClient(Protocol):
    """
    A client in raw bytes: tests write with C{transport.write} and read
    with L{readExactly}.

    @ivar closed: fires when the connection is gone.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed: Deferred[None] = Deferred()
        self._waiting: tuple[int, Deferred[bytes]] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._check()

    def _check(self) -> None:
        if self._waiting is not None and len(self.buffer) >= self._waiting[0]:
            count, d = self._waiting
            self._waiting = None
            data = bytes(self.buffer[:count])
            del self.buffer[:count]
            d.callback(data)

    def readExactly(self, count: int) -> Deferred[bytes]:
        """Fire with the next C{count} bytes; fail if the connection ends first."""
        d: Deferred[bytes] = Deferred()
        self._waiting = (count, d)
        d.addTimeout(WAIT, reactor)
        self._check()
        return d

    def connectionLost(self, reason: Any) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting[1].called:
            waiting[1].errback(reason)
        self.closed.callback(None)


async def connectClient(
    testCase: TestCase, port: int, host: str = "127.0.0.1"
) -> RawClient:
    """Connect a L{RawClient} to C{host}:C{port}, closed when the test ends."""
    if ":" in host:
        from twisted.internet.endpoints import TCP6ClientEndpoint

        endpoint: Any = TCP6ClientEndpoint(reactor, host, port)
    else:
        endpoint = TCP4ClientEndpoint(reactor, host, port)
    client = await endpoint.connect(Factory.forProtocol(RawClient))
    testCase.addCleanup(lambda: client.closed if client.transport.connected else None)
    testCase.addCleanup(client.transport.loseConnection)
    return client


async def startSocksd(
    testCase: TestCase, interface: str = "127.0.0.1", **kwargs: Any
) -> tuple[SocksServerFactory, int]:
    """Run socksd on a free loopback port until the test ends."""
    resolver = kwargs.pop("resolver", FakeResolver({"peer.example": ["127.0.0.1"]}))
    config = kwargs.pop("config", ServerConfig())
    factory = SocksServerFactory(
        reactor,
        upstream=DirectUpstream(reactor, resolver),
        resolver=resolver,
        config=config,
        **kwargs,
    )
    if ":" in interface:
        from twisted.internet.endpoints import TCP6ServerEndpoint

        endpoint: Any = TCP6ServerEndpoint(reactor, 0, interface=interface)
    else:
        endpoint = TCP4ServerEndpoint(reactor, 0, interface=interface)
    port = await endpoint.listen(factory)
    # Cleanups run last-in first-out: this pause comes after the clients
    # closed, so the server's sides of their connections are gone too.
    testCase.addCleanup(deferLater, reactor, 0.05, lambda: None)
    testCase.addCleanup(port.stopListening)
    return factory, port.getHost().port


def socks5Bind(expected: bytes = b"\x7f\x00\x00\x01", port: int = 0) -> bytes:
    """A SOCKS5 greeting (method 00) and a BIND request for an IPv4 peer."""
    return b"\x05\x01\x00" + b"\x05\x02\x00\x01" + expected + port.to_bytes(2, "big")


def socks4Bind(expected: bytes = b"\x7f\x00\x00\x01", port: int = 0) -> bytes:
    """A SOCKS4 BIND request."""
    return b"\x04\x02" + port.to_bytes(2, "big") + expected + b"user\x00"


def parseReply5(reply: bytes) -> tuple[int, str, int]:
    """A 10-byte SOCKS5 IPv4 reply: (code, host, port)."""
    assert reply[0] == 5 and reply[3] == 1, reply
    host = ".".join(str(b) for b in reply[4:8])
    return reply[1], host, int.from_bytes(reply[8:10], "big")


def parseReply4(reply: bytes) -> tuple[int, str, int]:
    """An 8-byte SOCKS4 reply: (code, host, port)."""
    host = ".".join(str(b) for b in reply[4:8])
    return reply[1], host, int.from_bytes(reply[2:4], "big")


class BindLoopbackTests(TestCase):
    """BIND for SOCKS5 and SOCKS4 over real loopback sockets."""

    async def test_socks5BindRelays(self) -> None:
        """
        A SOCKS5 BIND gets a first reply with the address the client came in
        on and a port; the peer that connects there gets the client's early
        bytes, the client gets a second reply with the peer's address and
        port, and bytes flow both ways.
        """
        factory, socksPort = await startSocksd(self)
        client = await connectClient(self, socksPort)
        client.transport.write(socks5Bind())
        self.assertEqual(await client.readExactly(2), b"\x05\x00")
        code, host, port = parseReply5(await client.readExactly(10))
        self.assertEqual((code, host), (0, "127.0.0.1"))
        self.assertNotEqual(port, 0)
        client.transport.write(b"early bytes")
        peer = await connectClient(self, port)
        code, peerHost, peerPort = parseReply5(await client.readExactly(10))
        self.assertEqual((code, peerHost), (0, "127.0.0.1"))
        self.assertEqual(peerPort, peer.transport.getHost().port)
        self.assertEqual(await peer.readExactly(11), b"early bytes")
        peer.transport.write(b"from the peer")
        self.assertEqual(await client.readExactly(13), b"from the peer")
        client.transport.write(b"from the client")
        self.assertEqual(await peer.readExactly(15), b"from the client")
        peer.transport.loseConnection()
        await client.closed

    async def test_socks4BindRelays(self) -> None:
        """
        A SOCKS4 BIND gets 90 twice: first with the bound port, then with
        the peer's; then the relay runs.
        """
        factory, socksPort = await startSocksd(self)
        client = await connectClient(self, socksPort)
        client.transport.write(socks4Bind())
        code, host, port = parseReply4(await client.readExactly(8))
        self.assertEqual((code, host), (90, "127.0.0.1"))
        peer = await connectClient(self, port)
        code, peerHost, peerPort = parseReply4(await client.readExactly(8))
        self.assertEqual(
            (code, peerHost, peerPort), (90, "127.0.0.1", peer.transport.getHost().port)
        )
        peer.transport.write(b"ping")
        self.assertEqual(await client.readExactly(4), b"ping")

    async def test_anyPeer(self) -> None:
        """
        DST.ADDR 0.0.0.0 accepts a peer from any address.
        """
        factory, socksPort = await startSocksd(self)
        client = await connectClient(self, socksPort)
        client.transport.write(socks5Bind(b"\x00\x00\x00\x00"))
        await client.readExactly(2)
        code, host, port = parseReply5(await client.readExactly(10))
        await connectClient(self, port)
        code, _, _ = parseReply5(await client.readExactly(10))
        self.assertEqual(code, 0)

    async def test_domainPeer(self) -> None:
        """
        A domain DST.ADDR is resolved with the factory's resolver, and a peer
        from one of its addresses is accepted.
        """
        factory, socksPort = await startSocksd(self)
        client = await connectClient(self, socksPort)
        client.transport.write(b"\x05\x01\x00\x05\x02\x00\x03\x0cpeer.example\x00\x00")
        await client.readExactly(2)
        code, host, port = parseReply5(await client.readExactly(10))
        self.assertEqual(code, 0)
        await connectClient(self, port)
        code, _, _ = parseReply5(await client.readExactly(10))
        self.assertEqual(code, 0)

    async def test_wrongPeer(self) -> None:
        """
        A connection from an address other than DST.ADDR is refused, and
        the BIND fails: the client gets a second reply reporting the failure
        (SOCKS5 02, not allowed) and is closed.
        """
        factory, socksPort = await startSocksd(self)
        client = await connectClient(self, socksPort)
        client.transport.write(socks5Bind(b"\xc0\x00\x02\x01"))
        await client.readExactly(2)
        code, host, port = parseReply5(await client.readExactly(10))
        self.assertEqual(code, 0)
        intruder = await connectClient(self, port)
        code, _, _ = parseReply5(await client.readExactly(10))
        self.assertEqual(code, 2)
        await client.closed
        await intruder.closed

    async def test_socks4WrongPeer(self) -> None:
        """
        SOCKS4: a peer from the wrong address gets the client a second
        reply 91 and a close, as the SOCKS4 protocol says.
        """
        factory, socksPort = await startSocksd(self)
        client = await connectClient(self, socksPort)
        client.transport.write(socks4Bind(b"\xc0\x00\x02\x01"))
        code, host, port = parseReply4(await client.readExactly(8))
        self.assertEqual(code, 90)
        await connectClient(self, port)
        code, _, _ = parseReply4(await client.readExactly(8))
        self.assertEqual(code, 91)
        await client.closed

    async def test_timeout(self) -> None:
        """
        When nobody connects within the bind timeout, the client gets a
        failure reply (SOCKS5 06, TTL expired) and the port is closed.
        """
        factory, socksPort = await startSocksd(
            self, config=ServerConfig(bindTimeout=0.2)
        )
        client = await connectClient(self, socksPort)
        client.transport.write(socks5Bind())
        await client.readExactly(2)
        code, host, port = parseReply5(await client.readExactly(10))
        self.assertEqual(code, 0)
        code, _, _ = parseReply5(await client.readExactly(10))
        self.assertEqual(code, 6)
        await client.closed
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        with self.assertRaises(Exception):
            await endpoint.connect(Factory.forProtocol(Protocol))

    async def test_clientLeaves(self) -> None:
        """
        When the client's connection is lost while waiting, the bound port
        is closed.  (An EOF alone is kept for the peer, as in a relay.)
        """
        factory, socksPort = await startSocksd(self)
        client = await connectClient(self, socksPort)
        client.transport.write(socks5Bind())
        await client.readExactly(2)
        code, host, port = parseReply5(await client.readExactly(10))
        client.transport.abortConnection()
        await client.closed
        await deferLater(reactor, 0.05, lambda: None)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        with self.assertRaises(Exception):
            await endpoint.connect(Factory.forProtocol(Protocol))

    async def test_policyRefuses(self) -> None:
        """
        The policy decides on BIND: a rule that allows only CONNECT gets a
        BIND refused with 02 before anything listens.
        """
        policy = Policy.fromToml(
            'destination-default = "block"\n'
            '[[destination]]\naction = "pass"\nto = ["0.0.0.0/0"]\n'
            'commands = ["connect"]\n'
        )
        factory, socksPort = await startSocksd(self, policy=policy)
        client = await connectClient(self, socksPort)
        client.transport.write(socks5Bind())
        await client.readExactly(2)
        code, _, _ = parseReply5(await client.readExactly(10))
        self.assertEqual(code, 2)
        await client.closed

    async def test_bindAddressOption(self) -> None:
        """
        C{ServerConfig.bindAddress} chooses where BIND listens, whatever
        interface the client came in on.
        """
        factory, socksPort = await startSocksd(
            self, config=ServerConfig(bindAddress="127.0.0.2")
        )
        client = await connectClient(self, socksPort)
        client.transport.write(socks5Bind(b"\x00\x00\x00\x00"))
        await client.readExactly(2)
        code, host, port = parseReply5(await client.readExactly(10))
        self.assertEqual((code, host), (0, "127.0.0.2"))
        await connectClient(self, port, host="127.0.0.2")
        code, _, _ = parseReply5(await client.readExactly(10))
        self.assertEqual(code, 0)


class FtpLikeServer(Protocol):
    """
    An FTP-like server: on C{PORT h1,h2,h3,h4,p1,p2\\r\\n} it connects back to
    that address and sends its file there, then answers C{226 done\\r\\n}
    on the control connection.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(b"220 ready\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if not self.buffer.endswith(b"\r\n"):
            return
        line, self.buffer = self.buffer.strip(), b""
        if not line.startswith(b"PORT "):
            self.transport.write(b"500 what\r\n")
            return
        numbers = [int(n) for n in line[5:].split(b",")]
        host = ".".join(str(n) for n in numbers[:4])
        port = numbers[4] * 256 + numbers[5]
        payload = self.payload
        control = self.transport

        class Sender(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(payload)
                self.transport.loseConnection()

            def connectionLost(self, reason: Any) -> None:
                control.write(b"226 done\r\n")
                control.loseConnection()

        TCP4ClientEndpoint(reactor, host, port).connect(Factory.forProtocol(Sender))


class FtpSequenceTests(TestCase):
    """The FTP active-mode sequence through two SOCKS5 tunnels."""

    async def test_ftpStyle(self) -> None:
        """
        CONNECT to an FTP-like server on one tunnel, BIND on another, send
        PORT with the bound address: the server connects back to it and its
        file arrives through the BIND tunnel byte-exact.
        """
        payload = bytes(range(256)) * 1024
        server = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(lambda: FtpLikeServer(payload))
        )
        self.addCleanup(server.stopListening)
        serverPort = server.getHost().port
        factory, socksPort = await startSocksd(self)
        control = await connectClient(self, socksPort)
        control.transport.write(
            b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01"
            + serverPort.to_bytes(2, "big")
        )
        await control.readExactly(2)
        code, _, _ = parseReply5(await control.readExactly(10))
        self.assertEqual(code, 0)
        self.assertEqual(await control.readExactly(11), b"220 ready\r\n")
        data = await connectClient(self, socksPort)
        data.transport.write(socks5Bind())
        await data.readExactly(2)
        code, host, port = parseReply5(await data.readExactly(10))
        self.assertEqual(code, 0)
        numbers = host.replace(".", ",") + f",{port // 256},{port % 256}"
        control.transport.write(b"PORT " + numbers.encode() + b"\r\n")
        code, _, _ = parseReply5(await data.readExactly(10))
        self.assertEqual(code, 0)
        received = await data.readExactly(len(payload))
        self.assertEqual(received, payload)
        await data.closed
        self.assertEqual(await control.readExactly(10), b"226 done\r\n")
        await control.closed
