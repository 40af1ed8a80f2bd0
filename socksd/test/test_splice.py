"""
Tests for L{socksd.server.relay.splice}: the zero-copy relay, and the relay
tests both relays must pass (run once with splice and once without).
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from socksd.server import ServerConfig, SocksServerFactory
from socksd.server.relay import splice as _splice
from socksd.tap import Options, makeService
from socksd.test import test_loopback
from socksd.test.test_loopback import (
    Client,
    DigestAfterEOF,
    Source,
    socks5Request,
    socks5ReplyEnd,
)
from socksd.testing import EchoProtocol, FakeResolver
from socksd.upstream import DirectUpstream


@implementer(IHalfCloseableProtocol)
class SpeakFirst(Protocol):
    """
    A destination that sends C{GREETING} and half-closes at once, then
    answers the client's data (after the client's EOF) with its sha256 and
    length, and closes.
    """

    GREETING = os.urandom(200000)

    def connectionMade(self) -> None:
        self.hasher = hashlib.sha256()
        self.count = 0
        self.transport.write(self.GREETING)
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.hasher.update(data)
        self.count += len(data)

    def readConnectionLost(self) -> None:
        # Our write side is shut already: the answer goes as a log of what
        # came, checked by the test through the factory.
        self.factory.results.append((self.hasher.digest(), self.count))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class ResetAfterData(Protocol):
    """A destination that sends a few bytes, then resets the connection."""

    def connectionMade(self) -> None:
        self.transport.write(b"about to reset")
        self.transport.abortConnection()


class Lingering(Protocol):
    """A destination that notes when its connection is gone."""

    def connectionMade(self) -> None:
        self.factory.connected.callback(self)
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)


class _RelayTestsMixin:
    """
    The loopback relay tests, for a relay chosen by L{splice}.
    """

    timeout = 60
    splice = True

    listen = test_loopback.LoopbackTests.listen
    connect = test_loopback.LoopbackTests.connect
    wait = test_loopback.LoopbackTests.wait

    async def setUpRelay(self, **config: Any) -> None:
        """socksd (splice per L{splice}), the destinations, and a log
        observer; record which relay each tunnel got."""
        self.resolver = FakeResolver({})
        self.echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        self.digestPort = await self.listen(Factory.forProtocol(DigestAfterEOF))
        factory = SocksServerFactory(
            reactor,
            upstream=DirectUpstream(reactor, self.resolver, connectTimeout=5.0),
            resolver=self.resolver,
            config=ServerConfig(handshakeTimeout=5.0, splice=self.splice, **config),
        )
        self.socksPort = await self.listen(factory)
        self.events: list[dict[str, Any]] = []
        self.eventSeen: Deferred[None] = Deferred()

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "socksd.connection":
                self.events.append(event)
                if not self.eventSeen.called:
                    self.eventSeen.callback(None)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.relays: list[Any] = []
        original = _splice.trySplice

        def recording(*args: Any, **kwargs: Any) -> Any:
            relay = original(*args, **kwargs)
            self.relays.append(relay)
            return relay

        self.patch(_splice, "trySplice", recording)

    def assertRelayKind(self) -> None:
        """The tunnels used splice exactly when it is on."""
        if self.splice:
            self.assertTrue(self.relays)
            for relay in self.relays:
                self.assertIsInstance(relay, _splice.SpliceRelay)
        else:
            self.assertEqual(self.relays, [])

    async def tunnel(self, port: int, extra: bytes = b"") -> Client:
        client = await self.connect(socks5Request(port) + extra, socks5ReplyEnd)
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x00")
        return client

    async def test_bulkBothWays(self) -> None:
        """
        64 MiB go to the echo server and come back while still being
        written, unchanged (same sha256); the log event counts 64 MiB each
        way once the tunnel is closed.
        """
        await self.setUpRelay()
        total = 64 * 1024 * 1024
        client = await self.tunnel(self.echoPort)
        client.hasher = hashlib.sha256()
        client.expected = total
        source = Source(client.transport, total)
        await self.wait(client.allReceived)
        self.assertEqual(client.count, total)
        self.assertEqual(client.hasher.hexdigest(), source.hasher.hexdigest())
        client.transport.loseConnection()
        await self.wait(client.closed)
        await self.wait(self.eventSeen)
        self.assertEqual(self.events[0]["bytesUp"], total)
        self.assertEqual(self.events[0]["bytesDown"], total)
        self.assertRelayKind()

    async def test_halfCloseClientFirst(self) -> None:
        """
        A client that shuts its write side after its data still gets the
        whole answer of a destination that answers only after EOF.
        """
        await self.setUpRelay()
        payload = os.urandom(300000)
        client = await self.tunnel(self.digestPort)
        client.transport.write(payload)
        client.transport.loseWriteConnection()
        await self.wait(client.ended)
        self.assertEqual(
            bytes(client.received),
            hashlib.sha256(payload).digest() + len(payload).to_bytes(8, "big"),
        )
        await self.wait(client.closed)
        await self.wait(self.eventSeen)
        # Both directions ended with EOF: a clean end, whichever relay.
        self.assertEqual(self.events[0]["reason"], "closed")
        self.assertRelayKind()

    async def test_halfCloseDestinationFirst(self) -> None:
        """
        A destination that sends its data and half-closes first (as soon as
        it is connected): the client gets all of it and EOF, and its own
        data, sent after the reply, still reaches the destination.
        """
        await self.setUpRelay()
        factory = Factory.forProtocol(SpeakFirst)
        factory.results = []
        port = await self.listen(factory)
        client = await self.tunnel(port)
        payload = os.urandom(100000)
        client.transport.write(payload)
        client.transport.loseWriteConnection()
        await self.wait(client.closed)
        self.assertEqual(bytes(client.received), SpeakFirst.GREETING)
        self.assertEqual(
            factory.results, [(hashlib.sha256(payload).digest(), len(payload))]
        )
        await self.wait(self.eventSeen)
        self.assertEqual(self.events[0]["reason"], "closed")
        self.assertRelayKind()

    async def test_optimisticData(self) -> None:
        """
        Data sent with the request reaches the destination after the reply,
        and its echo comes back first.
        """
        await self.setUpRelay()
        payload = b"optimistic " * 1000
        client = await self.connect(
            socks5Request(self.echoPort) + payload, socks5ReplyEnd
        )
        client.expected = len(payload)
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x00")
        await self.wait(client.allReceived)
        self.assertEqual(bytes(client.received), payload)
        self.assertRelayKind()

    async def test_destinationReset(self) -> None:
        """
        A destination that resets the connection gets the client's
        connection closed, and the connection's log event is emitted.
        """
        await self.setUpRelay()
        port = await self.listen(Factory.forProtocol(ResetAfterData))
        client = await self.connect(socks5Request(port), socks5ReplyEnd)
        await self.wait(client.reply)
        await self.wait(client.closed)
        await self.wait(self.eventSeen)
        self.assertEqual(len(self.events), 1)

    async def test_clientReset(self) -> None:
        """
        A client that resets its connection gets the destination's
        connection closed.
        """
        await self.setUpRelay()
        factory = Factory.forProtocol(Lingering)
        factory.connected = Deferred()
        port = await self.listen(factory)
        client = await self.tunnel(port)
        destination = await self.wait(factory.connected)
        client.transport.write(b"x" * 1000)
        client.transport.abortConnection()
        await self.wait(destination.lost)
        await self.wait(self.eventSeen)
        self.assertEqual(len(self.events), 1)
        self.assertRelayKind()

    async def test_idleTimeout(self) -> None:
        """
        A tunnel that carries nothing for the idle timeout is closed, and
        its log event says why.
        """
        await self.setUpRelay(idleTimeout=0.2)
        client = await self.tunnel(self.echoPort)
        client.expected = 5
        client.transport.write(b"hello")
        await self.wait(client.allReceived)
        await self.wait(client.closed)
        await self.wait(self.eventSeen)
        self.assertEqual(self.events[0]["reason"], "idle timeout")
        self.assertEqual(self.events[0]["bytesUp"], 5)
        self.assertRelayKind()


class SpliceRelayTests(_RelayTestsMixin, TestCase):
    """The relay tests with splice."""

    splice = True

    def setUp(self) -> None:
        if _splice._SPLICE is None:
            raise self.skipTest("no splice(2) here (Linux only)")


    async def test_idleHoldsNoPipe(self) -> None:
        """
        Once a tunnel's bytes have been relayed, its directions give their
        pipes back: an idle tunnel holds no pipe (and no descriptors beyond
        its two sockets).
        """
        await self.setUpRelay()
        client = await self.tunnel(self.echoPort)
        client.expected = 5
        client.transport.write(b"hello")
        await self.wait(client.allReceived)
        [relay] = self.relays
        self.assertEqual((relay.up.pipeWrite, relay.down.pipeWrite), (-1, -1))
        self.assertEqual((relay.up.count, relay.down.count), (5, 5))
        client.transport.loseConnection()
        await self.wait(client.closed)


    async def test_hangUpWhileReading(self) -> None:
        """
        When the reactor sees a hang-up on a spliced socket it reads from
        (and so reports its end as C{readConnectionLost}), the relay takes
        it as that source's EOF: the destination gets everything before it,
        then the EOF, and its answer still reaches the client.
        """
        await self.setUpRelay()
        client = await self.tunnel(self.digestPort)
        client.transport.write(b"abc")
        [relay] = self.relays
        for _ in range(200):
            if relay.up.count == 3:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(relay.up.count, 3)
        # What the reactor does for a hang-up without data to read.
        reactor._disconnectSelectable(
            relay._client.transport, ConnectionDone(), True
        )
        self.assertTrue(relay.up.ended)
        await self.wait(client.ended)
        self.assertEqual(
            bytes(client.received),
            hashlib.sha256(b"abc").digest() + (3).to_bytes(8, "big"),
        )
        client.transport.loseConnection()
        await self.wait(client.closed)


class OrdinaryRelayTests(_RelayTestsMixin, TestCase):
    """The relay tests with splice turned off: the ordinary relay."""

    splice = False


class SpliceSupportedTests(SynchronousTestCase):
    """
    L{_splice.spliceSupported} picks splice only for plain TCP transports
    of a readiness-based reactor.
    """

    def test_notTcp(self) -> None:
        """
        Transports that are not C{tcp.Server}/C{tcp.Client} (here in-memory
        ones, as TLS, PROXY-protocol and UNIX transports are) get the
        ordinary relay.
        """
        self.assertFalse(
            _splice.spliceSupported(StringTransport(), StringTransport(), reactor)
        )

    def test_otherReactor(self) -> None:
        """
        A reactor that is not epoll, poll or select based gets the ordinary
        relay.
        """
        self.assertFalse(
            _splice.spliceSupported(
                StringTransport(), StringTransport(), MemoryReactor()
            )
        )

    def test_noSpliceOption(self) -> None:
        """
        C{--no-splice} builds a server whose configuration has
        C{splice=False}; without it splice is on.
        """
        for argv, expected in (([], True), (["--no-splice"], False)):
            options = Options()
            options.parseOptions(argv)
            top = makeService(options)
            factories = [child.factory for child in top if hasattr(child, "factory")]
            self.assertTrue(factories)
            for factory in factories:
                self.assertIs(factory.config.splice, expected)

    def test_configDefault(self) -> None:
        """
        L{ServerConfig} has splice on by default.
        """
        self.assertTrue(ServerConfig().splice)
        self.assertFalse(ServerConfig(splice=False).splice)


class CffiSpliceTests(SynchronousTestCase):
    """
    L{_splice.cffiSplice}, the splice(2) PyPy uses, behaves as C{os.splice}
    does: bytes moved, and C{OSError}s with the system's error numbers.
    """

    def setUp(self) -> None:
        self.splice = _splice.cffiSplice()
        if self.splice is None:
            raise self.skipTest("cffiSplice needs Linux and cffi")
        self.source, self.peer = socket.socketpair()
        self.addCleanup(self.source.close)
        self.addCleanup(self.peer.close)
        self.source.setblocking(False)
        self.pipeRead, self.pipeWrite = os.pipe2(os.O_NONBLOCK)
        self.addCleanup(os.close, self.pipeRead)
        self.addCleanup(os.close, self.pipeWrite)

    def test_moves(self) -> None:
        """
        Bytes go from a socket into a pipe and from the pipe into a socket;
        the count moved is returned; EOF is 0.
        """
        self.peer.sendall(b"spliced bytes")
        moved = self.splice(
            self.source.fileno(), self.pipeWrite, 65536, flags=_splice._FLAGS
        )
        self.assertEqual(moved, 13)
        moved = self.splice(self.pipeRead, self.source.fileno(), 5, flags=_splice._FLAGS)
        self.assertEqual(moved, 5)
        self.assertEqual(self.peer.recv(100), b"splic")
        self.assertEqual(os.read(self.pipeRead, 100), b"ed bytes")
        self.peer.shutdown(1)
        self.assertEqual(
            self.splice(self.source.fileno(), self.pipeWrite, 100, flags=_splice._FLAGS),
            0,
        )

    def test_errors(self) -> None:
        """
        Nothing to read is C{EAGAIN} (a L{BlockingIOError}); a closed
        descriptor is C{EBADF}.
        """
        with self.assertRaises(BlockingIOError) as caught:
            self.splice(self.source.fileno(), self.pipeWrite, 100, flags=_splice._FLAGS)
        self.assertEqual(caught.exception.errno, errno.EAGAIN)
        closed = os.dup(self.pipeWrite)
        os.close(closed)
        with self.assertRaises(OSError) as caught:
            self.splice(self.source.fileno(), closed, 100, flags=_splice._FLAGS)
        self.assertEqual(caught.exception.errno, errno.EBADF)
