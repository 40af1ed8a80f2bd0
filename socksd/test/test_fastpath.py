"""
Tests for the cheap per-connection path: the C{connectFactory} fast path of
L{socksd.upstream}'s endpoints for address literals and the server's use of
it, the splice relay's pipe pool, the connection event's lazy C{summary},
and the listen backlog C{makeService} asks for.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address as IPv4, IPv6Address as IPv6
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import (
    ConnectBindError,
    ConnectionRefusedError,
    NotConnectingError,
    TimeoutError as ConnectingTimeoutError,
)
from twisted.internet.task import deferLater
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd.address import Destination
from socksd.server import ServerConfig
from socksd.server._log import ConnectionRecord
from socksd.server.relay import splice as _splice
from socksd.tap import (
    FILE_LIMIT_UNLIMITED,
    LISTEN_BACKLOG,
    Options,
    RaiseFileLimit,
    makeService,
    raiseFileLimit,
    withBacklog,
)
from socksd.test.test_dispatch import Harness
from socksd.testing import FakeResolver
from socksd.upstream import (
    DirectTCP4Endpoint,
    DirectTCP6Endpoint,
    DirectUpstream,
    PlainConnector,
)

GREETING = b"\x05\x01\x00"
CONNECT = b"\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50"  # 192.0.2.1:80


class ConnectFactoryTests(SynchronousTestCase):
    """
    L{DirectUpstream}'s endpoints for address literals connect with
    C{reactor.connectTCP} through C{connectFactory} on a reactor that
    cannot adopt sockets (here a memory reactor).
    """

    def test_ipv4(self) -> None:
        """
        An IPv4 literal gets a L{DirectTCP4Endpoint} whose C{connectFactory}
        calls C{connectTCP} with the address, the upstream's timeout and the
        bind address, and returns the connector.
        """
        clock = MemoryReactorClock()
        upstream = DirectUpstream(
            clock, FakeResolver({}), connectTimeout=7.0, bindAddress=("127.0.0.1", 0)
        )
        endpoint = upstream.endpointFor(Destination(IPv4("192.0.2.1"), 80))
        self.assertIsInstance(endpoint, DirectTCP4Endpoint)
        factory = ClientFactory()
        connector = endpoint.connectFactory(factory)
        self.assertEqual(
            clock.tcpClients, [("192.0.2.1", 80, factory, 7.0, ("127.0.0.1", 0))]
        )
        self.assertIs(connector, clock.connectors[0])

    def test_ipv6(self) -> None:
        """An IPv6 literal gets a L{DirectTCP6Endpoint} with the same fast path."""
        clock = MemoryReactorClock()
        upstream = DirectUpstream(clock, FakeResolver({}))
        endpoint = upstream.endpointFor(Destination(IPv6("2001:db8::1"), 443))
        self.assertIsInstance(endpoint, DirectTCP6Endpoint)
        factory = ClientFactory()
        endpoint.connectFactory(factory)
        self.assertEqual(clock.tcpClients, [("2001:db8::1", 443, factory, 30.0, None)])

    def test_namesHaveNoFastPath(self) -> None:
        """A name's endpoint has no C{connectFactory}: it goes through C{connect}."""
        upstream = DirectUpstream(MemoryReactorClock(), FakeResolver({}))
        endpoint = upstream.endpointFor(Destination("example.com", 80))
        self.assertFalse(hasattr(endpoint, "connectFactory"))


class ServerFastPathTests(SynchronousTestCase):
    """
    The server's CONNECT uses C{connectFactory} when the endpoint has it, with
    the same outcomes as through C{connect}.
    """

    def setUp(self) -> None:
        self.harness = Harness(self, ServerConfig(connectTimeout=5.0))
        self.clock = self.harness.clock
        self.harness.factory.upstream = DirectUpstream(self.clock, FakeResolver({}))
        self.protocol, self.transport = self.harness.connect()
        self.harness.send(self.protocol, GREETING, CONNECT)
        self.assertEqual(len(self.clock.tcpClients), 1)
        self.connectFactory = self.clock.tcpClients[0][2]

    def test_connected(self) -> None:
        """
        Once connected, the client gets the success reply with the upstream
        connection's local address, and the tunnel relays both ways.
        """
        upstreamProtocol = self.connectFactory.buildProtocol(None)
        upstreamTransport = StringTransport()
        upstreamProtocol.makeConnection(upstreamTransport)
        self.assertTrue(self.transport.value().startswith(b"\x05\x00\x05\x00\x00\x01"))
        self.protocol.dataReceived(b"up")
        self.assertEqual(upstreamTransport.value(), b"up")
        upstreamProtocol.dataReceived(b"down")
        self.assertTrue(self.transport.value().endswith(b"down"))

    def test_refused(self) -> None:
        """A failed attempt is answered with its reply (refused: 05) and closed."""
        self.connectFactory.clientConnectionFailed(
            self.clock.connectors[0], Failure(ConnectionRefusedError())
        )
        self.assertEqual(self.transport.value()[-10:-8], b"\x05\x05")
        self.assertTrue(self.transport.disconnecting)
        self.harness.close(self.protocol)
        event = self.harness.onlyEvent(self)
        self.assertEqual(event["reply"], "CONNECTION_REFUSED")

    def test_timeout(self) -> None:
        """
        Past the connect timeout the attempt is stopped and the client gets
        the TTL-expired reply (06); a late failure report changes nothing.
        """
        self.clock.advance(5.0)
        self.assertTrue(self.clock.connectors[0].stoppedConnecting)
        self.assertEqual(self.transport.value()[-10:-8], b"\x05\x06")
        before = self.transport.value()
        self.connectFactory.clientConnectionFailed(
            self.clock.connectors[0], Failure(ConnectionRefusedError())
        )
        self.assertEqual(self.transport.value(), before)

    def test_clientGone(self) -> None:
        """
        When the client goes while connecting, the attempt is stopped, the
        event says so, and a connection made after all is closed.
        """
        self.harness.close(self.protocol)
        self.assertTrue(self.clock.connectors[0].stoppedConnecting)
        event = self.harness.onlyEvent(self)
        self.assertEqual(event["reason"], "client closed while connecting")
        late = self.connectFactory.buildProtocol(None)
        lateTransport = StringTransport()
        late.makeConnection(lateTransport)
        self.assertTrue(lateTransport.disconnecting)
        self.assertFalse(self.clock.getDelayedCalls())


class LoopbackFastPathTests(TestCase):
    """The fast path on the real reactor: a refused port."""

    async def test_refusedOnLoopback(self) -> None:
        """
        A CONNECT to a closed port on 127.0.0.1 through the fast path is
        answered "connection refused" (05).
        """
        from socksd.server import SocksServerFactory

        port = reactor.listenTCP(0, _NoProtocol(), interface="127.0.0.1")
        closedPort = port.getHost().port
        await port.stopListening()
        factory = SocksServerFactory(
            reactor,
            upstream=DirectUpstream(reactor, FakeResolver({}), connectTimeout=5.0),
            resolver=FakeResolver({}),
            config=ServerConfig(handshakeTimeout=5.0),
        )
        socks = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(socks.stopListening)
        client = _Collect()
        await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", socks.getHost().port), client
        )
        client.transport.write(
            GREETING + b"\x05\x01\x00\x01\x7f\x00\x00\x01" + closedPort.to_bytes(2, "big")
        )
        timer = reactor.callLater(10, client.transport.abortConnection)
        received = await client.done
        if timer.active():
            timer.cancel()
        self.assertEqual(received[:4], b"\x05\x00\x05\x05")


class _Attempt(ClientFactory):
    """A C{ClientFactory} that fires C{outcome} with the protocol, or with
    C{(failure,)}."""

    def __init__(self) -> None:
        self.outcome: Deferred[Any] = Deferred()
        self.failures = 0

    def buildProtocol(self, addr: Any) -> Protocol:
        built = Protocol()
        reactor.callLater(0, self.outcome.callback, built)
        return built

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.failures += 1
        self.outcome.callback((reason,))


class PlainConnectorTests(TestCase):
    """
    L{PlainConnector} on the real reactor: what C{connectFactory} makes on
    epoll, poll and select reactors.
    """

    def endpoint(self, port: int, **kwargs: Any) -> DirectTCP4Endpoint:
        upstream = DirectUpstream(reactor, FakeResolver({}), **kwargs)
        endpoint = upstream.endpointFor(Destination(IPv4("127.0.0.1"), port))
        assert isinstance(endpoint, DirectTCP4Endpoint)
        return endpoint

    async def test_connected(self) -> None:
        """
        Once connected, the factory's protocol gets an adopted TCP
        transport whose peer is the destination; bytes flow both ways.
        """
        received: Deferred[bytes] = Deferred()

        class Echo(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(data)

        class Server(ClientFactory):
            def buildProtocol(self, addr: Any) -> Protocol:
                return Echo()

        listening = reactor.listenTCP(0, Server(), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        attempt = _Attempt()
        connector = self.endpoint(listening.getHost().port).connectFactory(attempt)
        self.assertIsInstance(connector, PlainConnector)
        self.assertEqual(connector.getDestination().port, listening.getHost().port)
        protocol = await attempt.outcome
        self.assertEqual(connector.state, "connected")
        self.assertEqual(protocol.transport.getPeer().port, listening.getHost().port)
        protocol.dataReceived = received.callback
        protocol.transport.write(b"ping")
        self.assertEqual(await received, b"ping")
        protocol.transport.loseConnection()

    async def test_refused(self) -> None:
        """A closed port fails the attempt with C{ConnectionRefusedError}."""
        port = reactor.listenTCP(0, _NoProtocol(), interface="127.0.0.1")
        closedPort = port.getHost().port
        await port.stopListening()
        attempt = _Attempt()
        self.endpoint(closedPort).connectFactory(attempt)
        (reason,) = await attempt.outcome
        reason.trap(ConnectionRefusedError)
        self.assertEqual(attempt.failures, 1)

    async def test_bindError(self) -> None:
        """
        A bind address that cannot be bound fails the attempt with
        C{ConnectBindError}, a turn of the reactor later.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        attempt = _Attempt()
        self.endpoint(
            taken.getsockname()[1], bindAddress=taken.getsockname()
        ).connectFactory(attempt)
        self.assertFalse(attempt.outcome.called)
        (reason,) = await attempt.outcome
        reason.trap(ConnectBindError)

    async def test_stopConnectingBeforeFailure(self) -> None:
        """
        C{stopConnecting} on an attempt whose failure is not told yet (a
        bind error, told a turn of the reactor later) keeps it untold.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        attempt = _Attempt()
        connector = self.endpoint(9, bindAddress=taken.getsockname()).connectFactory(
            attempt
        )
        connector.stopConnecting()
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(attempt.failures, 0)
        self.assertEqual(connector.state, "disconnected")

    async def test_noSocket(self) -> None:
        """
        When no socket can be made (out of descriptors), the attempt fails
        a turn of the reactor later, with the socket's error.
        """

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise OSError(24, "Too many open files")

        self.patch(socket, "socket", refuse)
        attempt = _Attempt()
        connector = self.endpoint(9).connectFactory(attempt)
        self.assertFalse(attempt.outcome.called)
        (reason,) = await attempt.outcome
        self.assertIn("Too many open files", reason.getErrorMessage())
        self.assertEqual(connector.state, "disconnected")

    def fullListener(self) -> int:
        """
        A listening socket whose accept queue is full, so that a new
        connection's SYN goes unanswered: a connect that does not end.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(3):
            filler = socket.socket()
            self.addCleanup(filler.close)
            filler.setblocking(False)
            filler.connect_ex(address)
        return address[1]

    async def test_timeout(self) -> None:
        """
        An attempt that takes longer than its timeout fails with
        C{TimeoutError}, and its socket is closed.
        """
        attempt = _Attempt()
        connector = self.endpoint(self.fullListener(), connectTimeout=0.3).connectFactory(
            attempt
        )
        (reason,) = await attempt.outcome
        reason.trap(ConnectingTimeoutError)
        self.assertEqual(connector.state, "disconnected")
        self.assertEqual(connector.fileno(), -1)

    async def test_stopConnecting(self) -> None:
        """
        C{stopConnecting} gives up: the socket is closed and unregistered,
        the factory hears nothing, and a second C{stopConnecting} raises
        C{NotConnectingError}.
        """
        attempt = _Attempt()
        connector = self.endpoint(self.fullListener()).connectFactory(
            attempt, timeout=None
        )
        self.assertIn(connector, reactor.getWriters())
        connector.stopConnecting()
        self.assertNotIn(connector, reactor.getWriters())
        self.assertEqual(connector.fileno(), -1)
        self.assertRaises(NotConnectingError, connector.stopConnecting)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(attempt.outcome.called)


class _Collect(Protocol):
    """Keep what arrives; C{done} fires with it when the connection ends."""

    def __init__(self) -> None:
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.received)


class _NoProtocol:
    """A factory for a port that is only opened to find a free port number."""

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def buildProtocol(self, addr: Any) -> None:
        return None


class PipePoolTests(SynchronousTestCase):
    """The splice relay's empty pipes are pooled and reused."""

    def setUp(self) -> None:
        if _splice._SPLICE is None:
            raise self.skipTest("no splice(2) here (Linux only)")
        self.patch(_splice, "_pool", [])

    def direction(self) -> Any:
        class Side:
            feeds = drains = None

        return _splice._SpliceDirection(None, Side(), Side())  # type: ignore[arg-type]

    def test_reuse(self) -> None:
        """
        An empty pipe given back goes to the pool, and the next direction
        takes that same pipe instead of creating one.
        """
        first = self.direction()
        first._openPipe()
        pipe = (first.pipeRead, first.pipeWrite, first.pipeSize)
        first._poolPipe()
        self.assertEqual((first.pipeRead, first.pipeWrite), (-1, -1))
        self.assertEqual(_splice._pool, [pipe])
        second = self.direction()
        second._openPipe()
        self.assertEqual((second.pipeRead, second.pipeWrite, second.pipeSize), pipe)
        self.assertEqual(_splice._pool, [])
        second.closePipe()

    def test_bounded(self) -> None:
        """Past L{_splice.POOL_SIZE} pipes, a pipe given back is closed."""
        self.patch(_splice, "POOL_SIZE", 1)
        first, second = self.direction(), self.direction()
        first._openPipe()
        second._openPipe()
        first._poolPipe()
        writeEnd = second.pipeWrite
        second._poolPipe()
        self.assertEqual(len(_splice._pool), 1)
        self.assertRaises(OSError, _splice.os.fstat, writeEnd)
        for readEnd, writeEnd, _ in _splice._pool:
            _splice.os.close(readEnd)
            _splice.os.close(writeEnd)


class SummaryTests(SynchronousTestCase):
    """The connection event formats as one line from its C{summary} field."""

    def test_text(self) -> None:
        """
        The event's text names the client, protocol, command, destination,
        user, reply, reason, byte counts and duration; its fields stay the
        raw values.
        """
        events: list[dict[str, Any]] = []
        from socksd.server import _log

        self.patch(_log.log, "observer", events.append)
        record = ConnectionRecord(None, 1.0)
        record.client = _Address("192.0.2.7", 50000)
        record.protocol = "socks5"
        record.commandCode = 1
        record.destination = Destination("example.com", 443)
        record.user = "alice"
        record.emit(1.25)
        [event] = events
        self.assertEqual(
            formatEvent(event),
            "192.0.2.7:50000 socks5 connect example.com:443 user=alice: "
            "closed; 0 bytes up, 0 bytes down, 0.250s",
        )
        self.assertEqual(event["duration"], 0.25)
        self.assertEqual(event["destination"], "example.com:443")
        self.assertIsNone(event["reply"])


class _Address:
    """A Twisted-like address."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port


class BacklogTests(SynchronousTestCase):
    """C{makeService} raises the listen backlog of descriptions that give none."""

    def test_added(self) -> None:
        """tcp, tcp6, ssl and unix descriptions (behind haproxy too) get one."""
        for description in (
            "tcp:1080:interface=127.0.0.1",
            "tcp6:1080:interface=\\:\\:1",
            "unix:/run/socksd.sock",
            "haproxy:tcp:1080:interface=127.0.0.1",
        ):
            self.assertEqual(
                withBacklog(description), f"{description}:backlog={LISTEN_BACKLOG}"
            )

    def test_kept(self) -> None:
        """A description that says backlog=, or of another kind, is unchanged."""
        for description in (
            "tcp:1080:interface=127.0.0.1:backlog=5",
            "systemd:domain=INET:index=0",
        ):
            self.assertEqual(withBacklog(description), description)

    def test_makeService(self) -> None:
        """The default listener is built with the raised backlog."""
        from socksd.tap import Options, makeService

        options = Options()
        options.parseOptions([])
        service = makeService(options)
        [listener] = [s for s in service if hasattr(s, "endpoint")]
        # (Under the endpoint that reports the connections not accepted.)
        self.assertEqual(listener.endpoint.endpoint._backlog, LISTEN_BACKLOG)


class FileLimitTests(SynchronousTestCase):
    """L{raiseFileLimit} raises the soft open-file limit to the hard one."""

    def setUp(self) -> None:
        import resource

        self.resource = resource
        self.original = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, self.original)

    def test_raised(self) -> None:
        """A soft limit under the hard limit is raised to it."""
        soft, hard = self.original
        if hard == self.resource.RLIM_INFINITY:
            hard = FILE_LIMIT_UNLIMITED
        lower = min(soft, hard) - 1
        self.resource.setrlimit(self.resource.RLIMIT_NOFILE, (lower, self.original[1]))
        self.assertEqual(raiseFileLimit(), (lower, hard))
        self.assertEqual(self.resource.getrlimit(self.resource.RLIMIT_NOFILE)[0], hard)

    def test_atHardLimit(self) -> None:
        """At the hard limit, nothing changes."""
        raiseFileLimit()
        before = self.resource.getrlimit(self.resource.RLIMIT_NOFILE)
        self.assertIsNone(raiseFileLimit())
        self.assertEqual(self.resource.getrlimit(self.resource.RLIMIT_NOFILE), before)

    def test_makeService(self) -> None:
        """The service C{makeService} builds raises the limit when it starts."""
        options = Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
        top = makeService(options)
        self.assertTrue(any(isinstance(child, RaiseFileLimit) for child in top))

    def test_poolSize(self) -> None:
        """
        The splice relay's pipe pool holds a sixteenth of the soft
        open-file limit, between 64 and 256 pipes.
        """
        self.patch(_splice, "POOL_SIZE", None)
        hard = self.original[1]
        for soft, expected in ((256, 64), (2048, 128), (8192, 256)):
            if hard != self.resource.RLIM_INFINITY and soft > hard:
                continue
            self.patch(_splice, "_poolSize", 0)
            self.resource.setrlimit(self.resource.RLIMIT_NOFILE, (soft, self.original[1]))
            self.assertEqual(_splice.poolSize(), expected)
