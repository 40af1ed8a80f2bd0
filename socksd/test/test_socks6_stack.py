"""
Tests for the SOCKS6 stack options that need the kernel: TFO and Multipath
on the proxy's upstream socket (L{socksd.server.socks6.stack}), over real
sockets on 127.0.0.1, and the answers to every proxy-remote option.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd.address import Destination
from socksd.client.socks6 import SOCKS6ClientEndpoint
from socksd.server.socks6.stack import (
    IPPROTO_MPTCP,
    applyStackOptions,
    isMultipath,
    multipathSupported,
    wantsStackConnect,
)
from socksd.test.test_dispatch import Harness
from socksd.test.test_server_socks6 import replies, request
from socksd.upstream import DirectUpstream
from socksd.wire.socks6 import (
    Availability,
    Command,
    ListenBacklogOption,
    MultipathOption,
    PortParityOption,
    StackLeg,
    TfoOption,
    TtlOption,
    UdpErrorOption,
)

REMOTE = StackLeg.PROXY_REMOTE
DESTINATION = Destination(IPv4Address("192.0.2.1"), 80)


class _Collector(Protocol):
    """Fires C{done} once C{expected} bytes have arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.done.called:
            self.done.callback(self.received)


class _Echo(Protocol):
    """Echoes; counts the connections its factory made."""

    def connectionMade(self) -> None:
        self.factory.connections += 1  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def _factoryOf(protocol: Protocol) -> Factory:
    factory = Factory()
    factory.buildProtocol = lambda addr: protocol  # type: ignore[method-assign]
    return factory


class AnswersTests(SynchronousTestCase):
    """
    Every proxy-remote option is answered, saying "not done" the way its
    layout allows.
    """

    def test_withoutSocket(self) -> None:
        """
        Without an upstream socket (BIND, UDP ASSOCIATE): TFO payload 0,
        Multipath and UDP Error not available, backlog 0, parity none.
        """
        options = (
            TfoOption(REMOTE, 0),
            MultipathOption(StackLeg.BOTH, Availability.AVAILABLE),
            ListenBacklogOption(REMOTE, 5),
            PortParityOption(REMOTE, 1, 1),
            UdpErrorOption(REMOTE, Availability.AVAILABLE),
            TfoOption(StackLeg.CLIENT_PROXY, 9),
        )
        self.assertEqual(
            applyStackOptions(options, None, DESTINATION, None),
            (
                TfoOption(REMOTE, 0),
                MultipathOption(REMOTE, Availability.UNAVAILABLE),
                ListenBacklogOption(REMOTE, 0),
                PortParityOption(REMOTE, 0, 0),
                UdpErrorOption(REMOTE, Availability.UNAVAILABLE),
            ),
        )

    def test_tfoSent(self) -> None:
        """
        TFO is echoed with the number of bytes that went in the SYN.
        """
        self.assertEqual(
            applyStackOptions((TfoOption(REMOTE, 0),), None, DESTINATION, None, 12),
            (TfoOption(REMOTE, 12),),
        )

    def test_multipathFromSocket(self) -> None:
        """
        Multipath is available only when the socket is an MPTCP socket and
        the client asked for it.
        """
        plain = socket.socket()
        self.addCleanup(plain.close)
        self.assertFalse(isMultipath(plain))
        self.assertFalse(isMultipath(None))
        if not multipathSupported(socket.AF_INET):
            raise self.skipTest("this kernel makes no MPTCP sockets")
        mptcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        self.addCleanup(mptcp.close)
        self.assertTrue(isMultipath(mptcp))

        class Transport:
            def getHandle(self) -> socket.socket:
                return mptcp

        self.assertEqual(
            applyStackOptions(
                (MultipathOption(REMOTE, Availability.AVAILABLE),),
                Transport(),
                DESTINATION,
                None,
            ),
            (MultipathOption(REMOTE, Availability.AVAILABLE),),
        )
        self.assertEqual(
            applyStackOptions(
                (MultipathOption(REMOTE, Availability.UNAVAILABLE),),
                Transport(),
                DESTINATION,
                None,
            ),
            (MultipathOption(REMOTE, Availability.UNAVAILABLE),),
        )

    def test_wantsStackConnect(self) -> None:
        """
        socksd makes the upstream socket itself only for TFO or a wanted
        Multipath on the proxy-remote leg, through the direct upstream.
        """
        direct = DirectUpstream.__new__(DirectUpstream)
        self.assertTrue(wantsStackConnect((TfoOption(REMOTE, 0),), direct))
        self.assertTrue(
            wantsStackConnect(
                (MultipathOption(REMOTE, Availability.AVAILABLE),), direct
            )
        )
        self.assertFalse(
            wantsStackConnect(
                (MultipathOption(REMOTE, Availability.UNAVAILABLE),), direct
            )
        )
        self.assertFalse(
            wantsStackConnect((TfoOption(StackLeg.CLIENT_PROXY, 0),), direct)
        )
        self.assertFalse(wantsStackConnect((TtlOption(REMOTE, 3),), direct))
        self.assertFalse(wantsStackConnect((TfoOption(REMOTE, 0),), object()))

    def test_synPayloadNotSentTwice(self) -> None:
        """
        The initial-data bytes the kernel sent in the SYN are not written
        again; the rest is, and the reply's TFO option gives their number.
        (This kernel's loopback gives no TFO cookie, so no SYN ever
        carries data here: the connector's count is set by hand.)
        """
        from socksd.testing import RecordingTransport

        harness = Harness(self)
        protocol, transport = harness.connect()
        from socksd.wire.socks6 import AuthMethodAdvertisementOption

        harness.send(
            protocol,
            request(
                AuthMethodAdvertisementOption(frozenset(), 6),
                TfoOption(REMOTE, 0),
                data=b"abcdef",
            ),
        )

        class Connector:
            sentInSyn = 4

        protocol.handler.command._stackConnector = Connector()
        upstream = RecordingTransport()
        harness.upstream.last.succeed(upstream)
        auth, [operation] = replies(transport.value())
        self.assertEqual(operation.options, (TfoOption(REMOTE, 4),))
        self.assertEqual(upstream.value(), b"ef")

    def test_bindAnswered(self) -> None:
        """
        Through the server, BIND's first Operation Reply answers Listen
        Backlog (0: none) and TFO (0).
        """
        harness = Harness(self)
        protocol, transport = harness.connect()
        harness.send(
            protocol,
            request(
                ListenBacklogOption(REMOTE, 4),
                TfoOption(REMOTE, 0),
                command=Command.BIND,
            ),
        )
        auth, [first] = replies(transport.value())
        self.assertEqual(first.code, 0)
        self.assertEqual(
            first.options, (ListenBacklogOption(REMOTE, 0), TfoOption(REMOTE, 0))
        )

    def test_udpAssociateAnswered(self) -> None:
        """
        Through the server, UDP ASSOCIATE's Operation Reply answers Port
        Parity (none) and UDP Error (not available).
        """
        harness = Harness(self)

        class Port:
            def getHost(self) -> Any:
                from twisted.internet.address import IPv4Address as TwistedIPv4

                return TwistedIPv4("UDP", "198.51.100.9", 6000)

            def stopListening(self) -> None:
                pass

        harness.clock.listenUDP = (  # type: ignore[attr-defined]
            lambda port, protocol, interface="", maxPacketSize=8192: Port()
        )
        protocol, transport = harness.connect()
        from socksd.wire.socks6 import (
            Request,
            buildMessage,
            readAuthenticationReply,
            readOperationReply,
        )

        # A wanted port: the parity is not for this request.
        harness.send(
            protocol,
            buildMessage(
                Request(
                    Command.UDP_ASSOCIATE,
                    Destination(IPv4Address(0), 6000),
                    (
                        PortParityOption(REMOTE, 1, 1),
                        UdpErrorOption(REMOTE, Availability.AVAILABLE),
                    ),
                )
            ),
        )

        buffer = bytearray(transport.value())
        readAuthenticationReply(buffer)
        reply = readOperationReply(buffer)
        assert reply is not None
        self.assertEqual(
            reply.options,
            (
                PortParityOption(REMOTE, 0, 0),
                UdpErrorOption(REMOTE, Availability.UNAVAILABLE),
            ),
        )


class LoopbackTests(TestCase):
    """
    TFO and Multipath through the real server and its direct upstream, to a
    real echo server on 127.0.0.1.
    """

    async def _proxyAndEcho(self) -> tuple[Any, Any, Factory]:
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint

        from socksd.server import ServerConfig, SocksServerFactory
        from socksd.testing import FakeResolver

        echoFactory = Factory.forProtocol(_Echo)
        echoFactory.connections = 0  # type: ignore[attr-defined]
        echo = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            echoFactory
        )
        self.addCleanup(echo.stopListening)
        server = SocksServerFactory(
            reactor,
            resolver=FakeResolver(),
            config=ServerConfig(splice=False, connectTimeout=10.0),
        )
        proxy = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server
        )
        self.addCleanup(proxy.stopListening)
        return proxy, echo, echoFactory

    def _endpoint(self, proxy: Any, port: int, data: bytes, options: list) -> Any:
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint

        return SOCKS6ClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.getHost().port),
            "127.0.0.1",
            port,
            initialData=data,
            stackOptions=options,
        )

    async def test_tfoAndMultipath(self) -> None:
        """
        With TFO and Multipath asked for, the initial data and later bytes
        reach the destination exactly once and in order; the reply says how
        many bytes rode in the SYN (0 to all of them) and whether the
        upstream socket is MPTCP (exactly when this kernel makes MPTCP
        sockets).
        """
        from twisted.internet import reactor

        proxy, echo, echoFactory = await self._proxyAndEcho()
        endpoint = self._endpoint(
            proxy,
            echo.getHost().port,
            b"first ",
            [
                TfoOption(REMOTE, 0),
                MultipathOption(REMOTE, Availability.AVAILABLE),
            ],
        )
        collector = _Collector(len(b"first second"))
        await endpoint.connect(_factoryOf(collector)).addTimeout(10, reactor)
        collector.transport.write(b"second")
        received = await collector.done.addTimeout(10, reactor)
        self.assertEqual(received, b"first second")
        self.assertEqual(echoFactory.connections, 1)  # type: ignore[attr-defined]
        tfo, multipath = endpoint.lastOperationReply.options
        self.assertIsInstance(tfo, TfoOption)
        self.assertIn(tfo.payloadSize, range(len(b"first ") + 1))
        expected = (
            Availability.AVAILABLE
            if multipathSupported(socket.AF_INET)
            else Availability.UNAVAILABLE
        )
        self.assertEqual(multipath, MultipathOption(REMOTE, expected))
        collector.transport.loseConnection()
        await deferLater(reactor, 0.01)

    async def test_tfoPayloadLimit(self) -> None:
        """
        A TFO payload size smaller than the initial data bounds the SYN
        payload; every byte still arrives once.
        """
        from twisted.internet import reactor

        proxy, echo, echoFactory = await self._proxyAndEcho()
        data = b"0123456789"
        endpoint = self._endpoint(
            proxy, echo.getHost().port, data, [TfoOption(REMOTE, 4)]
        )
        collector = _Collector(len(data))
        await endpoint.connect(_factoryOf(collector)).addTimeout(10, reactor)
        received = await collector.done.addTimeout(10, reactor)
        self.assertEqual(received, data)
        [tfo] = endpoint.lastOperationReply.options
        self.assertIn(tfo.payloadSize, range(5))
        collector.transport.loseConnection()
        await deferLater(reactor, 0.01)

    async def test_tfoRefused(self) -> None:
        """
        With TFO, a destination that refuses the connection still gets the
        client an Operation Reply "connection refused": the reply waits for
        the handshake.
        """
        from twisted.internet import reactor

        from socksd.errors import ConnectionRefused

        proxy, echo, echoFactory = await self._proxyAndEcho()
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        endpoint = self._endpoint(
            proxy,
            port,
            b"data",
            [TfoOption(REMOTE, 0), MultipathOption(REMOTE, Availability.AVAILABLE)],
        )
        attempt = endpoint.connect(_factoryOf(_Collector(1))).addTimeout(10, reactor)
        failure = await self.assertFailure(attempt, ConnectionRefused)
        self.assertIsInstance(failure, ConnectionRefused)


class _Raw(Protocol):
    """Collects what the proxy sends; fires C{done} on C{until(received)}."""

    def __init__(self, until: Any) -> None:
        self.until = until
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.done.called and self.until(self.received):
            self.done.callback(self.received)


def _hasOperationReply(data: bytes) -> bool:
    from socksd.wire.socks6 import readAuthenticationReply, readOperationReply

    buffer = bytearray(data)
    return (
        readAuthenticationReply(buffer) is not None
        and readOperationReply(buffer) is not None
    )


class _Associating:
    """UDP ASSOCIATE requests to a real server on 127.0.0.1."""

    raw: _Raw
    addCleanup: Any
    assertRaises: Any

    async def associate(self, *options: Any, port: int = 0) -> Any:
        """
        Ask for a UDP association with C{options}; return the Operation
        Reply (the association stays open until the test ends).
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

        from socksd.server import ServerConfig, SocksServerFactory
        from socksd.testing import FakeResolver
        from socksd.wire.socks6 import (
            Request,
            buildMessage,
            readAuthenticationReply,
            readOperationReply,
        )

        server = SocksServerFactory(
            reactor, resolver=FakeResolver(), config=ServerConfig(splice=False)
        )
        proxy = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server
        )
        self.addCleanup(proxy.stopListening)
        raw = _Raw(_hasOperationReply)
        await TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.getHost().port).connect(
            _factoryOf(raw)
        )

        self.raw = raw

        async def close() -> None:
            raw.transport.loseConnection()
            await deferLater(reactor, 0.01)

        self.addCleanup(lambda: Deferred.fromCoroutine(close()))
        raw.transport.write(
            buildMessage(
                Request(
                    Command.UDP_ASSOCIATE,
                    Destination(IPv4Address(0), port),
                    tuple(options),
                )
            )
        )
        buffer = bytearray(await raw.done.addTimeout(10, reactor))
        auth = readAuthenticationReply(buffer)
        reply = readOperationReply(buffer)
        assert auth is not None and reply is not None
        return reply

    def assertBound(self, port: int) -> None:
        """Assert that UDP C{port} on 127.0.0.1 is taken."""
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(probe.close)
        self.assertRaises(OSError, probe.bind, ("127.0.0.1", port))


class PortParityTests(_Associating, TestCase):
    """
    UDP ASSOCIATE with Port Parity, through the real server on 127.0.0.1.
    """

    async def test_even(self) -> None:
        """
        Even parity without reservation: the association's port is even,
        and the reply says so.
        """
        reply = await self.associate(PortParityOption(REMOTE, 1, 0))
        self.assertEqual(reply.code, 0)
        self.assertEqual(reply.bind.port % 2, 0)
        self.assertBound(reply.bind.port)
        self.assertEqual(reply.options, (PortParityOption(REMOTE, 1, 0),))

    async def test_oddReserved(self) -> None:
        """
        Odd parity with reservation: the port is odd, and the counterpart
        (the even port below it) is held by the proxy.
        """
        reply = await self.associate(PortParityOption(REMOTE, 2, 1))
        port = reply.bind.port
        self.assertEqual(port % 2, 1)
        self.assertBound(port - 1)
        self.assertEqual(reply.options, (PortParityOption(REMOTE, 2, 1),))

    async def test_reservationReleased(self) -> None:
        """
        The reserved counterpart is released when the association ends.
        """
        from twisted.internet import reactor

        reply = await self.associate(PortParityOption(REMOTE, 1, 1))
        counterpart = reply.bind.port + 1
        self.assertBound(counterpart)
        self.raw.transport.loseConnection()
        for _ in range(100):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.bind(("127.0.0.1", counterpart))
            except OSError:
                probe.close()
                await deferLater(reactor, 0.01)
                continue
            probe.close()
            return
        self.fail(f"port {counterpart} still taken after the association ended")

    async def test_udpErrorAvailable(self) -> None:
        """
        UDP Error with parity: the socket reports ICMP errors, so the reply
        says available, with the parity done.
        """
        reply = await self.associate(
            UdpErrorOption(REMOTE, Availability.AVAILABLE),
            PortParityOption(REMOTE, 1, 0),
        )
        self.assertEqual(reply.bind.port % 2, 0)
        self.assertEqual(
            reply.options,
            (
                UdpErrorOption(REMOTE, Availability.AVAILABLE),
                PortParityOption(REMOTE, 1, 0),
            ),
        )
        reply = await self.associate(UdpErrorOption(REMOTE, Availability.AVAILABLE))
        self.assertEqual(
            reply.options, (UdpErrorOption(REMOTE, Availability.AVAILABLE),)
        )

    async def test_nonzeroPortIgnoresParity(self) -> None:
        """
        With a port in the request, the parity is ignored (the draft says
        so) and the reply says none.
        """
        from socksd.test.test_socks6_wanted import freePort

        wanted = freePort()
        reply = await self.associate(PortParityOption(REMOTE, 1, 1), port=wanted)
        self.assertEqual((reply.code, reply.bind.port), (0, wanted))
        self.assertEqual(reply.options, (PortParityOption(REMOTE, 0, 0),))


def _operationReplies(data: bytes) -> tuple[Any, list[Any], bytes]:
    """The Authentication Reply, the Operation Replies, the rest."""
    from socksd.wire.socks6 import readAuthenticationReply, readOperationReply

    buffer = bytearray(data)
    auth = readAuthenticationReply(buffer)
    operations = []
    while True:
        before = bytes(buffer)
        try:
            reply = readOperationReply(buffer)
        except Exception:
            buffer = bytearray(before)
            break
        if reply is None:
            break
        operations.append(reply)
    return auth, operations, bytes(buffer)


class ListenBacklogTests(TestCase):
    """
    BIND with a Listen Backlog inside a session, through the real server on
    127.0.0.1: the proxy keeps listening, and each further BIND of the
    session takes the next connection.
    """

    async def setUpProxy(self) -> Any:
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint

        from socksd.server import ServerConfig, SocksServerFactory
        from socksd.testing import FakeResolver

        server = SocksServerFactory(
            reactor,
            resolver=FakeResolver(),
            config=ServerConfig(splice=False, bindTimeout=10.0),
        )
        self.server = server
        proxy = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server
        )
        self.addCleanup(proxy.stopListening)
        return proxy

    async def open(self, port: int, until: Any, data: bytes = b"") -> _Raw:
        """Connect to 127.0.0.1:C{port}, send C{data}, wait for C{until}."""
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint

        raw = _Raw(until)
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5).connect(
            _factoryOf(raw)
        )

        async def close() -> None:
            if raw.transport.connected:
                # An abort: a half-closed BIND client would keep waiting.
                raw.transport.abortConnection()
                await deferLater(reactor, 0.05)

        self.addCleanup(lambda: Deferred.fromCoroutine(close()))
        if data:
            raw.transport.write(data)
        return raw

    async def test_acceptsInTurn(self) -> None:
        """
        The first BIND (with a Session Request and a backlog of 2) gets the
        listening address and the backlog used; two peers connect before
        anyone waits; two further BINDs of the session get them in order,
        each with its second reply and its peer's bytes; when the first
        connection closes, the proxy stops listening.
        """
        from twisted.internet import reactor

        from socksd.wire.socks6 import (
            Request,
            SessionIdOption,
            SessionOkOption,
            SessionRequestOption,
            buildMessage,
        )

        proxy = await self.setUpProxy()
        proxyPort = proxy.getHost().port
        first = await self.open(
            proxyPort,
            lambda data: len(_operationReplies(data)[1]) == 1,
            buildMessage(
                Request(
                    Command.BIND,
                    Destination(IPv4Address(0), 0),
                    (SessionRequestOption(), ListenBacklogOption(REMOTE, 2)),
                )
            ),
        )
        auth, [listening], _ = _operationReplies(
            await first.done.addTimeout(10, reactor)
        )
        sessionId = next(
            option.sessionId
            for option in auth.options
            if isinstance(option, SessionIdOption)
        )
        from socksd.server.socks6.sessions import sessionTableFor

        self.addCleanup(sessionTableFor(self.server).close, sessionId)
        self.assertEqual(listening.code, 0)
        self.assertEqual(listening.options, (ListenBacklogOption(REMOTE, 2),))
        bound = listening.bind
        peers = []
        for name in (b"peer one", b"peer two"):
            peer = await self.open(bound.port, lambda data: False, name)
            peers.append(peer)
        await deferLater(reactor, 0.05)
        for peer, name in zip(peers, (b"peer one", b"peer two")):
            further = await self.open(
                proxyPort,
                lambda data, name=name: _operationReplies(data)[2] == name,
                buildMessage(
                    Request(Command.BIND, bound, (SessionIdOption(sessionId),))
                ),
            )
            auth, [one, two], rest = _operationReplies(
                await further.done.addTimeout(10, reactor)
            )
            self.assertIn(SessionOkOption(), auth.options)
            self.assertEqual((one.code, one.bind), (0, bound))
            self.assertEqual(two.code, 0)
            self.assertEqual(two.bind.port, peer.transport.getHost().port)
            further.transport.write(b"back")
            received = await _until(peer, b"back")
            self.assertEqual(received, b"back")
        first.transport.loseConnection()
        await deferLater(reactor, 0.05)
        probe = socket.socket()
        self.addCleanup(probe.close)
        self.assertNotEqual(probe.connect_ex(("127.0.0.1", bound.port)), 0)

    async def test_outsideSession(self) -> None:
        """
        Outside a session the backlog is answered 0 and BIND takes one
        connection as usual.
        """
        from twisted.internet import reactor

        from socksd.wire.socks6 import Request, buildMessage

        proxy = await self.setUpProxy()
        client = await self.open(
            proxy.getHost().port,
            lambda data: len(_operationReplies(data)[1]) == 1,
            buildMessage(
                Request(
                    Command.BIND,
                    Destination(IPv4Address(0), 0),
                    (ListenBacklogOption(REMOTE, 3),),
                )
            ),
        )
        auth, [listening], _ = _operationReplies(
            await client.done.addTimeout(10, reactor)
        )
        self.assertEqual(listening.options, (ListenBacklogOption(REMOTE, 0),))


async def _until(raw: _Raw, expected: bytes) -> bytes:
    """Wait until C{raw} received C{expected} (at most 10 s)."""
    from twisted.internet import reactor

    for _ in range(1000):
        if raw.received == expected:
            return raw.received
        await deferLater(reactor, 0.01)
    return raw.received


def _extendedError(origin: int, icmpType: int, icmpCode: int, offender: bytes) -> bytes:
    """A C{sock_extended_err} followed by the offender's C{sockaddr}."""
    import struct

    return struct.pack("=IBBBBII", 113, origin, icmpType, icmpCode, 0, 0, 0) + offender


def _sockaddrIn(address: str) -> bytes:
    import sys

    return (
        socket.AF_INET.to_bytes(2, sys.byteorder)
        + b"\0\0"
        + socket.inet_aton(address)
        + bytes(8)
    )


def _sockaddrIn6(address: str) -> bytes:
    import sys

    return (
        socket.AF_INET6.to_bytes(2, sys.byteorder)
        + b"\0\0"
        + bytes(4)
        + socket.inet_pton(socket.AF_INET6, address)
        + bytes(4)
    )


class ExtendedErrorTests(SynchronousTestCase):
    """
    Reading the kernel's C{IP_RECVERR} messages (L{parseExtendedError},
    L{errorCodeFor}): built here, as loopback yields only port unreachable.
    """

    def test_icmp(self) -> None:
        """
        ICMP destination unreachable (network, host), time exceeded map to
        the draft's codes, with the offender as reporter; port unreachable
        and local errors have no code.
        """
        from ipaddress import IPv4Address as V4

        from socksd.server.socks6.udperror import IP_RECVERR, parseExtendedError
        from socksd.wire.socks6 import UdpErrorCode

        reporter = _sockaddrIn("192.0.2.254")
        for icmpType, icmpCode, expected in (
            (3, 0, UdpErrorCode.NETWORK_UNREACHABLE),
            (3, 1, UdpErrorCode.HOST_UNREACHABLE),
            (3, 10, UdpErrorCode.HOST_UNREACHABLE),
            (11, 0, UdpErrorCode.TTL_EXPIRED),
        ):
            self.assertEqual(
                parseExtendedError(
                    socket.IPPROTO_IP,
                    IP_RECVERR,
                    _extendedError(2, icmpType, icmpCode, reporter),
                ),
                (expected, V4("192.0.2.254")),
            )
        for origin, icmpType, icmpCode in ((2, 3, 3), (1, 0, 0), (2, 5, 0)):
            self.assertIsNone(
                parseExtendedError(
                    socket.IPPROTO_IP,
                    IP_RECVERR,
                    _extendedError(origin, icmpType, icmpCode, reporter),
                )
            )
        self.assertIsNone(parseExtendedError(socket.IPPROTO_IP, IP_RECVERR, b"\0" * 8))
        self.assertIsNone(
            parseExtendedError(socket.IPPROTO_IP, 99, _extendedError(2, 3, 1, reporter))
        )

    def test_icmp6(self) -> None:
        """
        ICMPv6: no route, address unreachable, packet too big, time
        exceeded; an IPv4-mapped reporter is given as IPv4.
        """
        from ipaddress import IPv4Address as V4, IPv6Address as V6

        from socksd.server.socks6.udperror import IPV6_RECVERR, parseExtendedError
        from socksd.wire.socks6 import UdpErrorCode

        reporter = _sockaddrIn6("2001:db8::1")
        for icmpType, icmpCode, expected in (
            (1, 0, UdpErrorCode.NETWORK_UNREACHABLE),
            (1, 3, UdpErrorCode.HOST_UNREACHABLE),
            (2, 0, UdpErrorCode.DATAGRAM_TOO_BIG),
            (3, 0, UdpErrorCode.TTL_EXPIRED),
        ):
            self.assertEqual(
                parseExtendedError(
                    socket.IPPROTO_IPV6,
                    IPV6_RECVERR,
                    _extendedError(3, icmpType, icmpCode, reporter),
                ),
                (expected, V6("2001:db8::1")),
            )
        self.assertIsNone(
            parseExtendedError(
                socket.IPPROTO_IPV6,
                IPV6_RECVERR,
                _extendedError(3, 1, 4, reporter),
            )
        )
        self.assertEqual(
            parseExtendedError(
                socket.IPPROTO_IPV6,
                IPV6_RECVERR,
                _extendedError(3, 3, 0, _sockaddrIn6("::ffff:192.0.2.9")),
            ),
            (UdpErrorCode.TTL_EXPIRED, V4("192.0.2.9")),
        )


class ErrorReportingPortTests(TestCase):
    """
    L{ErrorReportingPort} over real sockets: ICMP errors are read from the
    queue and the port keeps listening.
    """

    async def test_portUnreachable(self) -> None:
        """
        A datagram to a closed port on 127.0.0.1 brings an ICMP port
        unreachable into the error queue: it is read (no Datagram Error
        code, so not handed on), and the port still receives datagrams.
        """
        from twisted.internet import reactor
        from twisted.internet.protocol import DatagramProtocol

        from socksd.server.socks6.udperror import listenReportingErrors

        protocol = DatagramProtocol()
        received: list[bytes] = []
        errors: list[Any] = []
        protocol.datagramReceived = (  # type: ignore[method-assign]
            lambda data, addr: received.append(data)
        )
        protocol.datagramErrorReceived = (  # type: ignore[attr-defined]
            lambda *args: errors.append(args)
        )
        port = listenReportingErrors(reactor, protocol, "127.0.0.1")
        if port is None:
            raise self.skipTest("no IP_RECVERR here")
        self.addCleanup(port.stopListening)
        self.assertTrue(port.reportingErrors)
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        deadPort = closed.getsockname()[1]
        closed.close()
        for _ in range(3):
            port.write(b"nobody", ("127.0.0.1", deadPort))
            await deferLater(reactor, 0.02)
        for _ in range(100):
            if port.errorsRead:
                break
            await deferLater(reactor, 0.01)
        self.assertGreaterEqual(port.errorsRead, 1)
        self.assertEqual(errors, [])
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.sendto(b"still here", ("127.0.0.1", port.getHost().port))
        for _ in range(100):
            if received:
                break
            await deferLater(reactor, 0.01)
        self.assertEqual(received, [b"still here"])
        self.assertTrue(port.connected)


class DatagramErrorRelayTests(SynchronousTestCase):
    """
    An association that reports errors relays those about its client's
    destinations as Datagram Error messages.
    """

    def test_relayed(self) -> None:
        """
        An error about a destination the client sent to goes to the client
        on TCP; one about another destination, or on an association that
        does not report errors, does not.
        """
        from ipaddress import IPv4Address as V4

        from socksd.test.test_server_socks6 import UdpAssociateTests
        from socksd.wire.socks6 import UdpDatagram, UdpError, buildMessage

        case = UdpAssociateTests("test_overTcp")
        case.setUp()
        association = case.ports[0].protocol
        remote = Destination(V4("192.0.2.53"), 53)
        case.harness.send(
            case.protocol,
            buildMessage(UdpDatagram(case.associationId, remote, b"query")),
        )
        case.transport.clear()
        association.datagramErrorReceived(2, ("192.0.2.53", 53), V4("192.0.2.254"))
        self.assertEqual(case.transport.value(), b"")
        association.reportErrors = True
        association.datagramErrorReceived(2, ("192.0.2.99", 53), V4("192.0.2.254"))
        self.assertEqual(case.transport.value(), b"")
        association.datagramErrorReceived(2, ("192.0.2.53", 53), V4("192.0.2.254"))
        self.assertEqual(
            case.transport.value(),
            buildMessage(UdpError(case.associationId, remote, 2, V4("192.0.2.254"))),
        )


class _UdpEcho:
    """A UDP echo server's protocol."""

    transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(data, addr)


class UdpErrorAssociationTests(_Associating, TestCase):
    """
    A UDP association with UDP Error through the real server: ICMP port
    unreachable (the only ICMP error loopback yields) is read and not
    relayed (the draft has no code for it), and the association goes on.
    """

    async def test_survivesPortUnreachable(self) -> None:
        """
        After a datagram to a closed port, a datagram to a UDP echo server
        still comes back; no Datagram Error is sent.
        """
        from twisted.internet import reactor

        from socksd.wire.socks6 import (
            UdpAssociationConfirmation,
            UdpAssociationInit,
            UdpDatagram,
            buildMessage,
            readAuthenticationReply,
            readOperationReply,
            readUdpMessage,
        )

        echo = reactor.listenUDP(0, _UdpEcho(), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        reply = await self.associate(UdpErrorOption(REMOTE, Availability.AVAILABLE))
        self.assertEqual(
            reply.options, (UdpErrorOption(REMOTE, Availability.AVAILABLE),)
        )
        raw = self.raw

        def messages() -> list[Any]:
            buffer = bytearray(raw.received)
            readAuthenticationReply(buffer)
            readOperationReply(buffer)
            found = []
            while True:
                message = readUdpMessage(buffer)
                if message is None:
                    return found
                found.append(message)

        [init] = messages()
        self.assertIsInstance(init, UdpAssociationInit)
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        dead = Destination(IPv4Address("127.0.0.1"), closed.getsockname()[1])
        closed.close()
        for _ in range(3):
            raw.transport.write(
                buildMessage(UdpDatagram(init.associationId, dead, b"nobody"))
            )
            await deferLater(reactor, 0.02)
        live = Destination(IPv4Address("127.0.0.1"), echo.getHost().port)
        # One ping: neither a late ICMP error nor the reactor's EPOLLERR
        # for the queued errors may cost a datagram or the port.
        raw.transport.write(
            buildMessage(UdpDatagram(init.associationId, live, b"ping"))
        )
        for _ in range(300):
            if len(messages()) >= 3:
                break
            await deferLater(reactor, 0.01)
        self.assertEqual(
            messages()[:3],
            [
                init,
                UdpAssociationConfirmation(init.associationId),
                UdpDatagram(init.associationId, live, b"ping"),
            ],
        )
        self.assertNotIn(
            "UdpError", [type(message).__name__ for message in messages()]
        )


class ClientUdpAssociateTests(TestCase):
    """
    L{socks6UdpAssociate}: the client's UDP association (datagrams over the
    TCP connection) against the real server and a UDP echo server on
    127.0.0.1.
    """

    async def test_echo(self) -> None:
        """
        Datagrams sent through the association come back from the echo
        server with its address; the Operation Reply answers the UDP Error
        option; closing the association tells the receiver.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

        from socksd.client.socks6 import socks6UdpAssociate
        from socksd.server import ServerConfig, SocksServerFactory
        from socksd.testing import FakeResolver

        echo = reactor.listenUDP(0, _UdpEcho(), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        server = SocksServerFactory(
            reactor, resolver=FakeResolver(), config=ServerConfig(splice=False)
        )
        proxy = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server
        )
        self.addCleanup(proxy.stopListening)

        class Receiver:
            def __init__(self) -> None:
                self.datagrams: list[tuple[bytes, Destination]] = []
                self.lost: Deferred[Any] = Deferred()

            def datagramReceived(self, payload: bytes, source: Destination) -> None:
                self.datagrams.append((payload, source))

            def associationLost(self, reason: Any) -> None:
                self.lost.callback(reason.type)

        class Observer:
            lastOperationReply: Any = None
            lastAuthenticationReply: Any = None

        receiver, observer = Receiver(), Observer()
        association = await socks6UdpAssociate(
            TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.getHost().port),
            receiver,
            stackOptions=[UdpErrorOption(REMOTE, Availability.AVAILABLE)],
            observer=observer,
        ).addTimeout(10, reactor)
        self.assertIsNotNone(association.associationId)
        self.assertEqual(association.bound.host, IPv4Address("127.0.0.1"))
        self.assertEqual(
            observer.lastOperationReply.options,
            (UdpErrorOption(REMOTE, Availability.AVAILABLE),),
        )
        echoPort = echo.getHost().port
        association.sendTo(b"one", "127.0.0.1", echoPort)
        association.sendTo(b"two", IPv4Address("127.0.0.1"), echoPort)
        for _ in range(500):
            if len(receiver.datagrams) >= 2:
                break
            await deferLater(reactor, 0.01)
        source = Destination(IPv4Address("127.0.0.1"), echoPort)
        self.assertEqual(receiver.datagrams, [(b"one", source), (b"two", source)])
        self.assertTrue(association.confirmed)
        association.close()
        from twisted.internet.error import ConnectionDone

        self.assertIs(await receiver.lost.addTimeout(10, reactor), ConnectionDone)
        await deferLater(reactor, 0.01)

    def test_notReady(self) -> None:
        """
        Sending before the Association Init came is refused.
        """
        from socksd.client.socks6 import Socks6UdpAssociation

        association = Socks6UdpAssociation(object())
        self.assertRaises(ValueError, association.sendTo, b"x", "127.0.0.1", 9)
