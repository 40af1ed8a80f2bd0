"""
Tests for L{socksd.server.dispatch} (the first-byte dispatcher, SOCKS6's
version mismatch, the HTTP page), L{socksd.server.factory} and
L{socksd.server.config}.

L{Harness} is shared with the other server tests: a factory on a
L{MemoryReactorClock} with L{MemoryUpstream} and L{FakeResolver}, clients on
L{RecordingTransport}s, and the log events captured.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from socksd.interfaces import IPolicy
from socksd.resolve import SystemResolver
from socksd.server import ServerConfig, SocksServerFactory
from socksd.handshake import Socks4Handshake, Socks5Handshake
from socksd.server.connection import Handler
from socksd.server.factory import defaultHandlers, SOCKS4, SOCKS5
from socksd.test._vectors import splits
from socksd.testing import FakeResolver, MemoryUpstream, RecordingTransport
from socksd.upstream import DirectUpstream

CLIENT = IPv4Address("TCP", "192.0.2.7", 50000)
SERVER = IPv4Address("TCP", "198.51.100.9", 1080)

#: Names the harness's resolver knows.
NAMES = {"example.com": ["192.0.2.1"]}


@implementer(IPolicy)
class FakePolicy:
    """
    A policy that says yes or no to everything, recording what it was asked.
    """

    requireResolvedCheck = False

    def __init__(self, clients: bool = True, requests: bool = True) -> None:
        self.clients = clients
        self.requests = requests
        self.asked: list[Any] = []

    def allowClient(self, client: Any) -> bool:
        self.asked.append(("client", client))
        return self.clients

    def allowRequest(self, context: Any, destination: Any) -> bool:
        self.asked.append(("request", context, destination))
        return self.requests

    def allowAddress(self, context: Any, address: Any, port: int) -> bool:
        return True


class Harness:
    """
    A server under test: see the module docstring.

    @ivar clock: the factory's reactor.
    @ivar upstream: the L{MemoryUpstream}.
    @ivar factory: the L{SocksServerFactory}.
    @ivar events: every log event while the test runs.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        config: ServerConfig | None = None,
        **kwargs: Any,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.upstream = MemoryUpstream()
        self.resolver = FakeResolver(NAMES)
        self.factory = SocksServerFactory(
            self.clock,
            upstream=self.upstream,
            resolver=self.resolver,
            config=config or ServerConfig(),
            **kwargs,
        )
        self.events = EventLoggingObserver.createWithCleanup(
            testCase, globalLogPublisher
        )

    def connect(self, peer: Any = CLIENT) -> tuple[Any, RecordingTransport]:
        """A client connection: its protocol and transport."""
        transport = RecordingTransport(SERVER, peer)
        protocol = self.factory.buildProtocol(peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def send(self, protocol: Any, *chunks: bytes) -> None:
        """Deliver C{chunks} to C{protocol}, one C{dataReceived} each."""
        for chunk in chunks:
            protocol.dataReceived(chunk)

    @staticmethod
    def close(protocol: Any, reason: BaseException | None = None) -> None:
        """The client's connection is gone (cleanly, unless C{reason})."""
        protocol.connectionLost(
            Failure(reason if reason is not None else ConnectionDone())
        )

    def connectionEvents(self) -> list[dict[str, Any]]:
        """The per-connection log events so far."""
        return [e for e in self.events if e.get("log_namespace") == "socksd.connection"]

    def onlyEvent(self, testCase: SynchronousTestCase) -> dict[str, Any]:
        """The one per-connection event; fail if there is not exactly one."""
        events = self.connectionEvents()
        testCase.assertEqual(len(events), 1, [formatEvent(e) for e in events])
        return events[0]


class DispatcherTests(SynchronousTestCase):
    """
    The first byte picks the protocol; anything unclaimed is closed.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)

    def test_socks4And5Dispatched(self) -> None:
        """
        0x04 goes to the SOCKS4 handler and 0x05 to the SOCKS5 handler.
        """
        protocol, _ = self.harness.connect()
        protocol.dataReceived(b"\x04")
        self.assertIsInstance(protocol.handshake, Socks4Handshake)
        protocol, _ = self.harness.connect()
        protocol.dataReceived(b"\x05")
        self.assertIsInstance(protocol.handshake, Socks5Handshake)

    def test_unknownFirstByteVersionMismatch(self) -> None:
        """
        A first byte no protocol claims, on a port that serves SOCKS6, gets
        SOCKS6's one-byte Version Mismatch reply (06), then the close, and
        logs one event that says so.
        """
        for first in (b"\x00", b"\x03", b"\x07", b"\xff", b"x", b"\x16\x03\x01"):
            harness = Harness(self)
            protocol, transport = harness.connect()
            protocol.dataReceived(first + b"more")
            self.assertEqual(transport.value(), b"\x06")
            self.assertTrue(transport.disconnecting)
            protocol.dataReceived(b"\x05\x01\x00")
            self.assertEqual(transport.value(), b"\x06")
            harness.close(protocol)
            event = harness.onlyEvent(self)
            self.assertEqual(event["reason"], f"unknown first byte 0x{first[0]:02x}")
            self.assertEqual(event["reply"], "VERSION_MISMATCH")
            self.assertIsNone(event["version"])
            self.assertIsNone(event["protocol"])

    def test_unknownFirstByteClosedWithoutSocks6(self) -> None:
        """
        On a port that does not serve SOCKS6, a first byte no protocol
        claims closes the connection without an answer: a Version Mismatch
        reply would name a version the port refuses.
        """
        for protocols in ({4, 5}, {5}, {4}):
            harness = Harness(self, ServerConfig(protocols=protocols))
            for first in (b"\x00", b"\x07", b"\xff"):
                protocol, transport = harness.connect()
                protocol.dataReceived(first + b"more")
                self.assertEqual(transport.value(), b"")
                self.assertTrue(transport.disconnecting)

    def test_disabledVersionGetsMismatch(self) -> None:
        """
        On a port serving only SOCKS6, a SOCKS5 or SOCKS4 client's first
        byte gets the Version Mismatch reply: the port speaks version 6.
        """
        harness = Harness(self, ServerConfig(protocols={6}))
        for request in (b"\x05\x01\x00", b"\x04\x01\x00\x50\xc0\x00\x02\x01\x00"):
            protocol, transport = harness.connect()
            protocol.dataReceived(request)
            self.assertEqual(transport.value(), b"\x06")
            self.assertTrue(transport.disconnecting)

    def test_dataAfterCloseIgnored(self) -> None:
        """
        Bytes that arrive after the dispatcher decided to close are
        ignored.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(b"\x00")
        protocol.dataReceived(b"\x05\x01\x00")
        self.assertEqual(transport.value(), b"\x06")

    def test_disabledVersionClosed(self) -> None:
        """
        A version left out of C{protocols} is closed like an unknown byte.
        """
        harness = Harness(self, ServerConfig(protocols={5}))
        protocol, transport = harness.connect()
        protocol.dataReceived(b"\x04\x01\x00\x50\xc0\x00\x02\x01\x00")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        protocol, transport = harness.connect()
        protocol.dataReceived(b"\x06")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        protocol, transport = harness.connect()
        protocol.dataReceived(b"\x05\x01\x00")
        self.assertEqual(transport.value(), b"\x05\x00")

    def test_customHandler(self) -> None:
        """
        The factory's C{handlers} mapping is the dispatcher's: a handler
        added there gets the connection, first byte included.
        """
        seen = []

        class Custom(Handler):
            __slots__ = ()

            def dataReceived(self, data: bytes) -> None:
                seen.append(data)

        harness = Harness(self, handlers={0x42: Custom})
        protocol, _ = harness.connect()
        protocol.dataReceived(b"\x42hello")
        protocol.dataReceived(b" again")
        self.assertEqual(seen, [b"\x42hello", b" again"])
        protocol, transport = harness.connect()
        protocol.dataReceived(b"\x05\x01\x00")
        self.assertTrue(transport.disconnecting)

    def test_handlerExceptionContained(self) -> None:
        """
        An exception in a handler does not escape: it is logged, the
        connection is aborted, and the connection's event names an internal
        error.
        """

        class Broken(Handler):
            __slots__ = ()

            def dataReceived(self, data: bytes) -> None:
                raise ZeroDivisionError("broken")

        harness = Harness(self, handlers={0x42: Broken})
        protocol, transport = harness.connect()
        protocol.dataReceived(b"\x42")
        self.assertTrue(transport.aborted)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        protocol.dataReceived(b"more")
        harness.close(protocol, ConnectionLost())
        event = harness.onlyEvent(self)
        self.assertIn("internal error", event["reason"])

    def test_clientRefusedByPolicy(self) -> None:
        """
        A client the policy refuses is closed at once, before any byte, and
        logged.
        """
        policy = FakePolicy(clients=False)
        harness = Harness(self, policy=policy)
        protocol, transport = harness.connect()
        self.assertEqual(policy.asked, [("client", CLIENT)])
        self.assertTrue(transport.disconnecting)
        protocol.dataReceived(b"\x05\x01\x00")
        self.assertEqual(transport.value(), b"")
        harness.close(protocol)
        event = harness.onlyEvent(self)
        self.assertEqual(event["reason"], "client refused by policy")
        self.assertEqual(event["client"], "192.0.2.7:50000")

    def test_proxiedClientAddress(self) -> None:
        """
        When the client's address changes before the first byte (a
        PROXY-protocol listener has read its header), the new address is
        checked against the policy and logged.
        """
        real = IPv4Address("TCP", "203.0.113.5", 40000)

        class Refusing(FakePolicy):
            def allowClient(self, client: Any) -> bool:
                self.asked.append(("client", client))
                return client != real

        policy = Refusing()
        harness = Harness(self, policy=policy)
        protocol, transport = harness.connect()
        transport.peerAddr = real
        protocol.dataReceived(b"\x05\x01\x00")
        self.assertEqual(policy.asked, [("client", CLIENT), ("client", real)])
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        harness.close(protocol)
        event = harness.onlyEvent(self)
        self.assertEqual(event["client"], "203.0.113.5:40000")
        self.assertEqual(event["reason"], "client refused by policy")

    def test_handshakeTimeout(self) -> None:
        """
        A client that sends nothing is closed after C{handshakeTimeout}
        seconds, and the event says so.
        """
        harness = Harness(self, ServerConfig(handshakeTimeout=3.0))
        protocol, transport = harness.connect()
        harness.clock.advance(2.9)
        self.assertFalse(transport.disconnecting)
        harness.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        harness.clock.advance(2)
        harness.close(protocol)
        event = harness.onlyEvent(self)
        self.assertEqual(event["reason"], "handshake timeout")
        self.assertEqual(event["duration"], 5.0)

    def test_noHandshakeTimeout(self) -> None:
        """
        With C{handshakeTimeout=None}, a silent client stays.
        """
        harness = Harness(self, ServerConfig(handshakeTimeout=None))
        _, transport = harness.connect()
        self.assertEqual(harness.clock.getDelayedCalls(), [])
        self.assertFalse(transport.disconnecting)

    def test_timerCancelledOnClose(self) -> None:
        """
        A client that leaves leaves no timer behind.
        """
        protocol, _ = self.harness.connect()
        self.harness.close(protocol)
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])

    def test_eofBeforeAnything(self) -> None:
        """
        A client that sends EOF before any byte is closed and logged.
        """
        protocol, transport = self.harness.connect()
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.harness.close(protocol)
        self.assertEqual(
            self.harness.onlyEvent(self)["reason"],
            "client sent EOF before anything else",
        )

    def test_closedBeforeAnything(self) -> None:
        """
        A client that leaves without a byte is logged once.
        """
        protocol, _ = self.harness.connect()
        self.harness.close(protocol, ConnectionLost())
        self.assertEqual(
            self.harness.onlyEvent(self)["reason"],
            "client closed before sending anything",
        )

    def test_noDelay(self) -> None:
        """
        TCP_NODELAY is set on the client's connection, unless configured
        off.
        """
        _, transport = self.harness.connect()
        self.assertIs(transport.noDelay, True)
        harness = Harness(self, ServerConfig(tcpNoDelay=False))
        _, transport = harness.connect()
        self.assertIsNone(transport.noDelay)


class RandomInputTests(SynchronousTestCase):
    """
    Whatever bytes arrive, in whatever pieces, nothing raises, and every
    connection ends with exactly one log event.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        first=st.sampled_from([b"\x04", b"\x05", b"\x06", b"G", b"C", b"\x00"]),
        pieces=st.lists(st.binary(max_size=40), max_size=8),
        eof=st.booleans(),
    )
    def test_randomBytes(self, first: bytes, pieces: list[bytes], eof: bool) -> None:
        """
        Random bytes after each first byte never raise out of the protocol,
        and the connection's one event is emitted when it closes.
        """
        harness = Harness(self)
        protocol, transport = harness.connect()
        protocol.dataReceived(first)
        for piece in pieces:
            if piece:
                protocol.dataReceived(piece)
        if eof:
            protocol.readConnectionLost()
        for attempt in harness.upstream.attempts:
            if not attempt.deferred.called:
                attempt.fail(ConnectionLost())
        harness.clock.advance(60)
        harness.close(protocol, ConnectionLost())
        self.assertEqual(len(harness.connectionEvents()), 1)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(harness.clock.getDelayedCalls(), [])


class Socks6Tests(SynchronousTestCase):
    """
    Until socksd speaks SOCKS6, a SOCKS6 client gets the Version Mismatch
    reply.
    """

    def test_socks6Served(self) -> None:
        """
        A first byte 06 reaches the SOCKS6 handler: a NOOP request gets an
        Authentication Reply and an Operation Reply, both successes.
        """
        harness = Harness(self)
        protocol, transport = harness.connect()
        protocol.dataReceived(bytes.fromhex("06 00 0000 0000 00 01 00000000"))
        self.assertEqual(
            transport.value(),
            bytes.fromhex("06 00 0000") + bytes.fromhex("06 00 0000 0000 00 01 00000000"),
        )
        harness.close(protocol)
        event = harness.onlyEvent(self)
        self.assertEqual((event["version"], event["protocol"]), (6, "socks6"))


class HttpResistanceTests(SynchronousTestCase):
    """
    HTTP requests on the SOCKS port get a page that explains, then a close.
    """

    request = b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nUser-Agent: test\r\n\r\n"

    def setUp(self) -> None:
        self.harness = Harness(self)

    def test_page(self) -> None:
        """
        A GET gets an HTTP/1.0 501 response with a length, an HTML page that
        says this is a SOCKS proxy and names the listening address, and a
        close.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(self.request)
        response = transport.value()
        head, _, body = response.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.0 501 "))
        self.assertIn(f"Content-Length: {len(body)}".encode(), head)
        self.assertIn(b"Content-Type: text/html", head)
        self.assertIn(b"SOCKS proxy", body)
        self.assertIn(b"198.51.100.9", body)
        self.assertIn(b"1080", body)
        self.assertTrue(transport.disconnecting)
        self.harness.close(protocol)
        event = self.harness.onlyEvent(self)
        self.assertEqual((event["protocol"], event["reply"]), ("http", "HTTP_501"))

    def test_everyMethod(self) -> None:
        """
        Each HTTP method in the list is answered.
        """
        for method in (
            b"GET",
            b"HEAD",
            b"POST",
            b"PUT",
            b"CONNECT",
            b"OPTIONS",
            b"DELETE",
            b"PATCH",
            b"TRACE",
        ):
            protocol, transport = self.harness.connect()
            protocol.dataReceived(method + b" / HTTP/1.0\r\n\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.0 501 "), method)

    def test_headHasNoBody(self) -> None:
        """
        The answer to HEAD has the headers only.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().endswith(b"\r\n\r\n"))
        self.assertIn(b"Content-Length: ", transport.value())

    def test_waitsForHeaders(self) -> None:
        """
        Nothing is answered before the end of the headers, however the
        request is split.
        """
        for chunks in splits(self.request):
            protocol, transport = self.harness.connect()
            for chunk in chunks[:-1]:
                protocol.dataReceived(chunk)
                self.assertEqual(transport.value(), b"")
            protocol.dataReceived(chunks[-1])
            self.assertTrue(transport.value().startswith(b"HTTP/1.0 501 "))

    def test_bareNewlines(self) -> None:
        """
        Headers ended by bare newlines are accepted too.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(b"GET / HTTP/1.0\n\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 501 "))

    def test_bounded(self) -> None:
        """
        A request that never ends its headers is answered once 8 KiB have
        arrived.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(b"GET /")
        for _ in range(10):
            protocol.dataReceived(b"a" * 1000)
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 501 "))

    def test_eofAfterRequestLine(self) -> None:
        """
        A request line followed by EOF is answered.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(b"GET / HTTP/1.0\r\n")
        protocol.readConnectionLost()
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 501 "))

    def test_notAMethod(self) -> None:
        """
        First bytes that start with a method's letter but no HTTP method are
        closed without an answer as soon as they differ; a lowercase letter
        starts no method, so it is a byte no protocol claims (06).
        """
        for data in (b"GEX", b"Hello", b"P", b"PO", b"CONNECTX", b"get /"):
            protocol, transport = self.harness.connect()
            protocol.dataReceived(data)
            if data in (b"P", b"PO"):
                self.assertFalse(transport.disconnecting, data)
                protocol.dataReceived(b"X")
            expected = b"\x06" if data == b"get /" else b""
            self.assertEqual(transport.value(), expected, data)
            self.assertTrue(transport.disconnecting, data)

    def test_timeout(self) -> None:
        """
        An HTTP request whose headers never end is closed at the handshake
        timeout.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(b"GET / HTTP/1.0\r\n")
        self.harness.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")


class ServerConfigTests(SynchronousTestCase):
    """
    L{ServerConfig} checks its fields.
    """

    def test_defaults(self) -> None:
        """
        The defaults: every version, RFC replies, 10 s handshake, 64 KiB of
        optimistic data, 30 s connect, no idle timeout, TCP_NODELAY.
        """
        config = ServerConfig()
        self.assertEqual(config.protocols, frozenset({4, 5, 6}))
        self.assertFalse(config.extendedErrors)
        self.assertEqual(config.handshakeTimeout, 10.0)
        self.assertEqual(config.maxOptimisticData, 65536)
        self.assertEqual(config.connectTimeout, 30.0)
        self.assertIsNone(config.idleTimeout)
        self.assertFalse(config.socks4WithAuth)
        self.assertTrue(config.tcpNoDelay)
        self.assertEqual(config.socks5Profile.value, "socks5")
        self.assertEqual(
            ServerConfig(extendedErrors=True).socks5Profile.value, "socks5-extended"
        )

    def test_protocolsNormalised(self) -> None:
        """
        Any iterable of versions becomes a frozenset.
        """
        self.assertEqual(ServerConfig(protocols=[4, 5]).protocols, frozenset({4, 5}))

    def test_invalid(self) -> None:
        """
        Unknown versions, no version, non-positive timeouts and a negative
        optimistic-data bound are refused.
        """
        for kwargs in (
            dict(protocols={3}),
            dict(protocols=()),
            dict(protocols=5),
            dict(handshakeTimeout=0),
            dict(connectTimeout=-1),
            dict(idleTimeout=float("inf")),
            dict(handshakeTimeout="10"),
            dict(maxOptimisticData=-1),
            dict(maxOptimisticData=True),
        ):
            self.assertRaises(ValueError, ServerConfig, **kwargs)


class FactoryTests(SynchronousTestCase):
    """
    L{SocksServerFactory}'s defaults and mapping.
    """

    def test_defaults(self) -> None:
        """
        Without an upstream or a resolver, the factory uses DirectUpstream on
        a SystemResolver, with the configuration's connect timeout.
        """
        clock = MemoryReactorClock()
        factory = SocksServerFactory(clock, config=ServerConfig(connectTimeout=7.0))
        self.assertIsInstance(factory.resolver, SystemResolver)
        self.assertIsInstance(factory.upstream, DirectUpstream)
        self.assertIs(factory.upstream.resolver, factory.resolver)
        self.assertEqual(factory.upstream.connectTimeout, 7.0)
        self.assertIsNone(factory.policy)
        self.assertIsNone(factory.authenticator)
        self.assertEqual(factory.config, ServerConfig(connectTimeout=7.0))

    def test_defaultHandlers(self) -> None:
        """
        The default mapping serves the configured versions and the first
        letters of HTTP methods.
        """
        handlers = defaultHandlers(ServerConfig())
        self.assertIs(handlers[4], SOCKS4)
        self.assertIs(handlers[5], SOCKS5)
        self.assertIn(6, handlers)
        self.assertEqual({chr(b) for b in handlers if b > 6}, set("GHPCODT"))
        self.assertNotIn(4, defaultHandlers(ServerConfig(protocols={5})))
