"""
Tests for L{socksd.client.socks6}: the SOCKS6 client endpoint against a
scripted proxy (bytes written out in hex), and against socksd's own SOCKS6
server in memory (sessions, token replays, round trips).
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd import errors as E
from socksd.address import Destination
from socksd.auth import Authenticator, portalFromCheckers
from socksd.client import (
    SOCKS5ClientEndpoint,
    SOCKS6ClientEndpoint,
    SessionInvalid,
    Socks6Session,
    TokenRejected,
    socks6Noop,
    socks6Teardown,
)
from socksd.client.parser import SOCKS6EndpointParser
from socksd.test.test_dispatch import CLIENT, SERVER, Harness
from socksd.wire.socks6 import (
    AuthenticationReply,
    Availability,
    IdempotenceWindowOption,
    IpTosOption,
    NoFragmentationOption,
    SessionIdOption,
    StackLeg,
    TtlOption,
)

#: CONNECT 192.0.2.1:80 with alice/secret 0-RTT and 4 bytes of initial data.
FIRST_FLIGHT = (
    bytes.fromhex(
        "06 01 001c 0050 00 01 c0000201"
        "0002 0008 0004 02 00"  # advertisement: initial data 4, method 2
        "0004 0014 02 01 05 616c696365 06 736563726574 00"  # alice/secret
    )
    + b"PING"
)
AUTH_OK_USERPASS = bytes.fromhex("06 00 0008 0004 0008 02 01 00 00")
OP_OK = bytes.fromhex("06 00 0000 9c40 00 01 c6336401")


class Recorder(Protocol):
    """An application protocol that records what it gets."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.received = b""
        self.greeting = greeting
        self.made = False

    def connectionMade(self) -> None:
        self.made = True
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class TransportEndpoint:
    """A proxy endpoint that connects the client to a given transport."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def connect(self, factory: Any) -> Deferred:
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1080))
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)
        return succeed(protocol)


class ServerEndpoint:
    """A proxy endpoint connected in memory (iosim) to a server factory."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.pumps: list[iosim.IOPump] = []

    def connect(self, clientFactory: Any) -> Deferred:
        client = clientFactory.buildProtocol(SERVER)
        server = self.factory.buildProtocol(CLIENT)
        clientTransport = iosim.FakeTransport(
            client, isServer=False, hostAddress=CLIENT, peerAddress=SERVER
        )
        serverTransport = iosim.FakeTransport(
            server, isServer=True, hostAddress=SERVER, peerAddress=CLIENT
        )
        pump = iosim.connect(
            server, serverTransport, client, clientTransport, greet=False
        )
        self.pumps.append(pump)
        pump.flush()
        return succeed(client)


def factoryOf(protocol: Protocol) -> Factory:
    return Factory.forProtocol(lambda: protocol)


class ScriptedProxyTests(SynchronousTestCase):
    """
    The client against bytes written out by hand.
    """

    def connect(self, **kw: Any) -> tuple[Deferred, StringTransport, Recorder]:
        transport = StringTransport()
        app = Recorder()
        endpoint = SOCKS6ClientEndpoint(
            TransportEndpoint(transport), "192.0.2.1", 80, **kw
        )
        d = endpoint.connect(factoryOf(app))
        return d, transport, app

    def test_firstFlight(self) -> None:
        """
        The first bytes sent hold the request, the advertisement with the
        initial data length, the credentials and the initial data.
        """
        d, transport, app = self.connect(
            username="alice", password="secret", initialData=b"PING"
        )
        self.assertEqual(transport.value(), FIRST_FLIGHT)
        self.assertNoResult(d)

    def test_connected(self) -> None:
        """
        After the successful Authentication and Operation Replies the
        application is connected, with the bytes that followed.
        """
        d, transport, app = self.connect(username="alice", password="secret")
        transport.protocol.dataReceived(AUTH_OK_USERPASS + OP_OK + b"PONG")
        self.assertIs(self.successResultOf(d), app)
        self.assertEqual(app.received, b"PONG")
        self.assertEqual(app.transport.getPeer(), IPv4Address("TCP", "192.0.2.1", 80))

    def test_operationFailure(self) -> None:
        """
        An Operation Reply code becomes its typed error.
        """
        d, transport, app = self.connect()
        transport.protocol.dataReceived(
            bytes.fromhex("06 00 0000")
            + bytes.fromhex("06 05 0000 0000 00 01 00000000")
        )
        self.failureResultOf(d, E.ConnectionRefused)

    def test_credentialsRefused(self) -> None:
        """
        A failed reply with the RFC 1929 failure is AuthenticationFailed.
        """
        d, transport, app = self.connect(username="alice", password="x")
        transport.protocol.dataReceived(
            bytes.fromhex("06 01 0008 0004 0008 02 01 01 00")
        )
        self.failureResultOf(d, E.AuthenticationFailed)

    def test_slowPath(self) -> None:
        """
        When the proxy selects method 2, the credentials go again as a bare
        RFC 1929 request, and the handshake goes on.
        """
        d, transport, app = self.connect(username="alice", password="secret")
        transport.clear()
        transport.protocol.dataReceived(bytes.fromhex("06 01 0008 0003 0008 02 000000"))
        self.assertEqual(transport.value(), b"\x01\x05alice\x06secret")
        transport.protocol.dataReceived(bytes.fromhex("01 00 06 00 0000") + OP_OK)
        self.assertIs(self.successResultOf(d), app)

    def test_sessionInvalid(self) -> None:
        """
        Session Invalid fails with L{SessionInvalid} and marks the session.
        """
        session = Socks6Session()
        session.sessionId = b"\x01" * 16
        d, transport, app = self.connect(session=session)
        transport.protocol.dataReceived(bytes.fromhex("06 01 0004 0009 0004"))
        self.failureResultOf(d, SessionInvalid)
        self.assertFalse(session.valid)

    def test_tokenRejected(self) -> None:
        """
        Idempotence Rejected fails with L{TokenRejected}.
        """
        session = Socks6Session()
        session.sessionId = b"\x01" * 16
        session.window = (5, 2)
        d, transport, app = self.connect(session=session, spendToken=True)
        self.assertIn(bytes.fromhex("000d 0008 00000005"), transport.value())
        transport.protocol.dataReceived(bytes.fromhex("06 01 0004 000f 0004"))
        self.failureResultOf(d, TokenRejected)

    def test_stackOptionsSent(self) -> None:
        """
        Stack options given to the endpoint go in the request.
        """
        d, transport, app = self.connect(
            stackOptions=[IpTosOption(StackLeg.PROXY_REMOTE, 0x10)]
        )
        self.assertIn(bytes.fromhex("0001 0008 81 01 10 00"), transport.value())

    def test_badInitialData(self) -> None:
        """
        Initial data over 16384 bytes are refused when the endpoint is made.
        """
        self.assertRaises(
            ValueError,
            SOCKS6ClientEndpoint,
            TransportEndpoint(None),
            "192.0.2.1",
            80,
            initialData=b"x" * 16385,
        )


class SessionStateTests(SynchronousTestCase):
    """
    L{Socks6Session}: tokens and windows as the client tracks them.
    """

    def test_tokensInOrder(self) -> None:
        """
        Tokens are taken lowest first, across the 2**32 wrap, until the
        window is used up.
        """
        session = Socks6Session()
        session.window = (2**32 - 1, 2)
        self.assertEqual(session.nextToken(), 2**32 - 1)
        self.assertEqual(session.nextToken(), 0)
        self.assertIsNone(session.nextToken())

    def test_lowerWindowIgnored(self) -> None:
        """
        A window whose base is lower than the known one is ignored.
        """
        session = Socks6Session()
        session.update(AuthenticationReply(True, (IdempotenceWindowOption(10, 4),)))
        session.update(AuthenticationReply(True, (IdempotenceWindowOption(8, 4),)))
        self.assertEqual(session.window, (10, 4))
        session.update(AuthenticationReply(True, (IdempotenceWindowOption(12, 4),)))
        self.assertEqual(session.window, (12, 4))

    def test_sessionIdLearnt(self) -> None:
        """
        The Session ID of a reply is kept.
        """
        session = Socks6Session()
        session.update(AuthenticationReply(True, (SessionIdOption(b"abcd"),)))
        self.assertEqual(session.sessionId, b"abcd")


class AgainstServerTests(SynchronousTestCase):
    """
    The client against socksd's SOCKS6 server, in memory.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        self.harness.factory.authenticator = Authenticator(
            portalFromCheckers([checker]), self.harness.clock, failureDelay=0
        )
        self.proxy = ServerEndpoint(self.harness.factory)

    def flush(self) -> None:
        for pump in self.proxy.pumps:
            pump.flush()

    def test_sessionAndReplay(self) -> None:
        """
        A NOOP opens a session with a window; a CONNECT inside it, without
        credentials, spends a token; retrying with the same token is
        rejected and never reaches the destination again.
        """
        session = Socks6Session(windowSize=8)
        result = socks6Noop(self.proxy, session, username="alice", password="secret")
        self.flush()
        self.successResultOf(result)
        self.assertIsNotNone(session.sessionId)
        self.assertIsNotNone(session.window)
        app = Recorder()
        endpoint = SOCKS6ClientEndpoint(
            self.proxy,
            "192.0.2.1",
            80,
            session=session,
            spendToken=True,
            initialData=b"PAY",
        )
        d = endpoint.connect(factoryOf(app))
        self.flush()
        attempt = self.harness.upstream.last
        upstream = attempt.succeed()
        self.flush()
        self.assertIs(self.successResultOf(d), app)
        self.assertEqual(upstream.transport.value(), b"PAY")
        self.assertIs(endpoint.lastAuthenticationReply.idempotenceAccepted, True)
        retry = SOCKS6ClientEndpoint(
            self.proxy,
            "192.0.2.1",
            80,
            session=session,
            token=session.lastToken,
            initialData=b"PAY",
        )
        d = retry.connect(factoryOf(Recorder()))
        self.flush()
        self.failureResultOf(d, TokenRejected)
        self.assertEqual(len(self.harness.upstream.attempts), 1)

    def test_teardown(self) -> None:
        """
        After L{socks6Teardown}, the session is invalid at the proxy too.
        """
        session = Socks6Session()
        self.successResultOf(
            self.flushed(socks6Noop(self.proxy, session, "alice", "secret"))
        )
        self.successResultOf(
            self.flushed(socks6Teardown(self.proxy, session, "alice", "secret"))
        )
        self.assertEqual(len(self.harness.factory.socks6Sessions), 0)
        self.assertRaises(SessionInvalid, socks6Noop, self.proxy, session)

    def flushed(self, d: Deferred) -> Deferred:
        self.flush()
        return d

    def test_stackOptionsReported(self) -> None:
        """
        The Operation Reply's stack options are on the endpoint: without an
        upstream socket, No Fragmentation is reported not available.
        """
        endpoint = SOCKS6ClientEndpoint(
            self.proxy,
            "192.0.2.1",
            80,
            username="alice",
            password="secret",
            stackOptions=[
                NoFragmentationOption(StackLeg.PROXY_REMOTE, Availability.AVAILABLE)
            ],
        )
        d = endpoint.connect(factoryOf(Recorder()))
        self.flush()
        self.harness.upstream.last.succeed()
        self.flush()
        self.successResultOf(d)
        self.assertEqual(
            endpoint.lastOperationReply.options,
            (NoFragmentationOption(StackLeg.PROXY_REMOTE, Availability.UNAVAILABLE),),
        )


class RoundTripTests(SynchronousTestCase):
    """
    Round trips between client and proxy before the first byte of the
    destination's answer, counted as flights (changes of direction) on the
    client-proxy link; the destination answers as soon as it can.
    """

    def flights(self, endpoint: Any, app: Recorder, banner: bool) -> list[str]:
        """
        Shuttle bytes between client and server, recording each flight's
        direction (C client to proxy, P proxy to client) until the
        application has the destination's first byte.
        """
        clientTransport, server, serverTransport = self.link
        endpoint.connect(factoryOf(app))
        upstream = self.harness.upstream
        answered: set[int] = set()
        flights: list[str] = []
        for _ in range(20):
            sent = clientTransport.value()
            clientTransport.clear()
            if sent:
                flights.append("C")
                server.dataReceived(sent)
            for i, attempt in enumerate(upstream.attempts):
                if attempt.protocol is None:
                    attempt.succeed()
                    if banner:
                        attempt.protocol.dataReceived(b"HELLO")
                        answered.add(i)
                if i not in answered and attempt.transport.value():
                    attempt.protocol.dataReceived(b"PONG")
                    answered.add(i)
            back = serverTransport.value()
            serverTransport.clear()
            if back:
                flights.append("P")
                clientTransport.protocol.dataReceived(back)
            if app.received:
                return flights
        self.fail(f"no answer after {flights}")

    def setUp(self) -> None:
        self.harness = Harness(self)
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        self.harness.factory.authenticator = Authenticator(
            portalFromCheckers([checker]), self.harness.clock, failureDelay=0
        )
        server, serverTransport = self.harness.connect()
        clientTransport = StringTransport()
        self.link = (clientTransport, server, serverTransport)
        self.proxy = TransportEndpoint(clientTransport)

    def test_socks6OneRoundTrip(self) -> None:
        """
        SOCKS6 with 0-RTT username/password and the request in the initial
        data gets the destination's answer after one round trip.
        """
        endpoint = SOCKS6ClientEndpoint(
            self.proxy,
            "192.0.2.1",
            80,
            username="alice",
            password="secret",
            initialData=b"PING",
        )
        app = Recorder()
        self.assertEqual(self.flights(endpoint, app, banner=False), ["C", "P"])
        self.assertEqual(app.received, b"PONG")

    def test_socks5FourRoundTrips(self) -> None:
        """
        SOCKS5 with username/password needs three round trips for its
        handshake, and a fourth for the application's request.
        """
        endpoint = SOCKS5ClientEndpoint(
            self.proxy, "192.0.2.1", 80, username="alice", password="secret"
        )
        app = Recorder(greeting=b"PING")
        self.assertEqual(self.flights(endpoint, app, banner=False), ["C", "P"] * 4)
        self.assertEqual(app.received, b"PONG")

    def test_bannerOneVersusThree(self) -> None:
        """
        With a destination that speaks first, SOCKS6 delivers its first byte
        after one round trip and SOCKS5 with username/password after three.
        """
        endpoint6 = SOCKS6ClientEndpoint(
            self.proxy, "192.0.2.1", 80, username="alice", password="secret"
        )
        app = Recorder()
        self.assertEqual(self.flights(endpoint6, app, banner=True), ["C", "P"])
        self.setUp()
        endpoint5 = SOCKS5ClientEndpoint(
            self.proxy, "192.0.2.1", 80, username="alice", password="secret"
        )
        app = Recorder()
        self.assertEqual(self.flights(endpoint5, app, banner=True), ["C", "P"] * 3)
        self.assertEqual(app.received, b"HELLO")


class EndpointStringTests(SynchronousTestCase):
    """
    The C{socks6:} endpoint string.
    """

    def test_parse(self) -> None:
        """
        Destination, credentials and stack options come from the string.
        """
        endpoint = SOCKS6EndpointParser().parseStreamClient(
            None,
            "example.com",
            "443",
            proxy=r"tcp:127.0.0.1:1080",
            user="alice",
            password="secret",
            tos="0x10",
            ttl="64",
            noFragmentation="yes",
        )
        self.assertIsInstance(endpoint, SOCKS6ClientEndpoint)
        self.assertEqual(endpoint.destination, Destination("example.com", 443))
        self.assertEqual(
            endpoint._options.stackOptions,
            (
                IpTosOption(StackLeg.PROXY_REMOTE, 0x10),
                TtlOption(StackLeg.PROXY_REMOTE, 64),
                NoFragmentationOption(StackLeg.PROXY_REMOTE, Availability.AVAILABLE),
            ),
        )
        self.assertEqual(endpoint._options.credentials, (b"alice", b"secret"))

    def test_badParameters(self) -> None:
        """
        Unknown parameters and out-of-range bytes are errors.
        """
        parser = SOCKS6EndpointParser()
        self.assertRaises(
            ValueError, parser.parseStreamClient, None, "example.com", "80", bogus="1"
        )
        self.assertRaises(
            ValueError, parser.parseStreamClient, None, "example.com", "80", ttl="256"
        )


class _Collector(Protocol):
    """Fires C{done} once C{expected} bytes have arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = b""
        self.done: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.done.called:
            self.done.callback(self.received)


class LoopbackTests(TestCase):
    """
    The SOCKS6 client and server over real sockets on 127.0.0.1, with a
    real echo server as the destination.
    """

    async def test_echoWithInitialDataAndStackOptions(self) -> None:
        """
        Initial data sent with the request come back from the echo server,
        then bytes written afterwards; the TTL asked for is set on the
        proxy's upstream socket and reported.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

        from socksd.server import ServerConfig, SocksServerFactory
        from socksd.testing import EchoProtocol, FakeResolver

        echo = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(EchoProtocol)
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
        endpoint = SOCKS6ClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.getHost().port),
            "127.0.0.1",
            echo.getHost().port,
            initialData=b"first ",
            stackOptions=[TtlOption(StackLeg.PROXY_REMOTE, 33)],
        )
        collector = _Collector(len(b"first second"))
        await endpoint.connect(factoryOf(collector)).addTimeout(10, reactor)
        collector.transport.write(b"second")
        received = await collector.done.addTimeout(10, reactor)
        self.assertEqual(received, b"first second")
        self.assertEqual(
            endpoint.lastOperationReply.options,
            (TtlOption(StackLeg.PROXY_REMOTE, 33),),
        )
        collector.transport.loseConnection()
        await deferLater(reactor, 0.01)
