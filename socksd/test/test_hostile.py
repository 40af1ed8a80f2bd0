"""
Hostile clients over loopback, against the real factory in this process:
idle floods, slowloris, garbage, oversize fields, a client that never
reads, and a flood of failed logins.  In each, an honest client running
alongside completes its transfer byte-exact, and the process's resident
memory (C{VmRSS}) grows by less than L{RSS_GROWTH} bytes.
"""

from __future__ import annotations

import gc
import os
import resource
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from hypothesis import given, settings, strategies as st
from zope.interface import implementer

from socksd.policy import Policy
from socksd.server import ServerConfig, SocksServerFactory
from socksd.server.limits import BandwidthLimits, ConnectionLimits
from socksd.testing import FakeResolver, MemoryUpstream, RecordingTransport

from socksd.auth import Authenticator, SocksRealm
from socksd.testing import EchoProtocol
from socksd.test.test_loopback import socks5ReplyEnd, socks5Request
from socksd.test.test_policy_server import LoopbackBase

#: The most the proxy's resident memory may grow during one attack.
RSS_GROWTH = 64 * 1024 * 1024
#: The honest client's payload.
HONEST = os.urandom(256 * 1024)


def rss() -> int:
    """This process's resident set size, in bytes (from /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def raiseFileLimit() -> None:
    """Raise the soft limit on open files to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Raw(Protocol):
    """A client that sends C{first}, keeps what comes back, and notes the close."""

    def __init__(self, first: bytes = b"") -> None:
        self.first = first
        self.received = b""
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if self.first:
            self.transport.write(self.first)

    def dataReceived(self, data: bytes) -> None:
        if len(self.received) < 65536:
            self.received += data[:65536]

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)


@implementer(IPushProducer)
class Firehose(Protocol):
    """
    A destination that writes as fast as its peer reads (a push producer),
    up to L{LIMIT} bytes, counting what it wrote.
    """

    LIMIT = 512 * 1024 * 1024
    CHUNK = b"x" * 65536
    instances: list[Firehose] = []

    def __init__(self) -> None:
        self.sent = 0
        self.paused = False
        Firehose.instances.append(self)

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.sent < self.LIMIT and self.transport:
            self.transport.write(self.CHUNK)
            self.sent += len(self.CHUNK)

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True


class HostileTests(LoopbackBase):
    """Attacks, each with an honest client alongside."""

    async def setUp(self) -> None:
        raiseFileLimit()
        self.echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        self.resolver = self.hostsResolver("127.0.0.1 inside.test\n")
        gc.collect()
        self.baseline = rss()

    def checkMemory(self) -> None:
        """Resident memory grew by less than L{RSS_GROWTH}."""
        grown = rss() - self.baseline
        self.assertLess(grown, RSS_GROWTH, f"RSS grew by {grown} bytes")

    async def raw(self, first: bytes = b"") -> Raw:
        """Connect a L{Raw} client to socksd."""
        protocol = Raw(first)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.socksPort, timeout=20)
        await endpoint.connect(Factory.forProtocol(lambda: protocol))
        self.addCleanup(lambda: protocol.transport.abortConnection())
        return protocol

    async def honest(self, handshake: bytes | None = None, login: bool = False) -> None:
        """
        A SOCKS5 client echoes L{HONEST} through socksd, byte-exact.

        @param login: the handshake logs in with a username and password.
        """
        def afterLogin(buffer: bytes) -> int | None:
            end = socks5ReplyEnd(buffer[2:])
            return None if end is None else end + 2

        replyEnd = afterLogin if login else socks5ReplyEnd
        client = await self.connect(
            handshake or socks5Request(self.echoPort), replyEnd
        )
        reply = await self.wait(client.reply)
        expected = b"\x05\x02\x01\x00\x05\x00" if login else b"\x05\x00\x05\x00"
        self.assertEqual(reply[: len(expected)], expected)
        client.expected = len(HONEST)
        client.transport.write(HONEST)
        await self.wait(client.allReceived)
        self.assertEqual(bytes(client.received), HONEST)
        client.transport.loseConnection()

    async def test_silentFlood(self) -> None:
        """
        2,000 connections that send nothing: an honest client is served
        while they are open, and the handshake timeout closes them all.
        """
        await self.serveSocks(self.resolver, handshakeTimeout=2.0)
        silent: list[Raw] = []
        for start in range(0, 2000, 200):
            silent += await DeferredList(
                [Deferred.fromCoroutine(self.raw()) for _ in range(200)], fireOnOneErrback=True, consumeErrors=True
            ).addCallback(lambda results: [r for _, r in results])
        await self.honest()
        self.checkMemory()
        await self.wait(DeferredList([p.closed for p in silent]))
        self.assertTrue(all(p.received == b"" for p in silent))

    async def test_slowloris(self) -> None:
        """
        500 clients sending one byte of a SOCKS5 greeting every 0.2s are
        all closed by the 1s handshake timeout; an honest client is served
        meanwhile.
        """
        await self.serveSocks(self.resolver, handshakeTimeout=1.0)
        greeting = b"\x05\xff" + bytes(range(255))
        slow = list(
            await DeferredList(
                [Deferred.fromCoroutine(self.raw(b"\x05")) for _ in range(500)], fireOnOneErrback=True
            ).addCallback(lambda results: [r for _, r in results])
        )
        for byte in greeting[1:8]:
            for protocol in slow:
                if not protocol.closed.called:
                    protocol.transport.write(bytes([byte]))
            if all(p.closed.called for p in slow):
                break
            await deferLater(reactor, 0.2, lambda: None)
        await self.honest()
        self.checkMemory()
        await self.wait(DeferredList([p.closed for p in slow]))

    async def test_everyFirstByte(self) -> None:
        """
        Garbage starting with each byte 0-255 gets a reply or a close, never
        a hang; an honest client is served afterwards.
        """
        await self.serveSocks(self.resolver, handshakeTimeout=2.0)
        junk = bytes(range(255, -1, -1)) * 4
        clients = [await self.raw(bytes([first]) + junk) for first in range(256)]
        await self.wait(DeferredList([c.closed for c in clients]))
        await self.honest()
        self.checkMemory()

    async def test_oversizeFields(self) -> None:
        """
        Maximal usernames, domain names and method lists, and requests
        longer than any valid one, are refused or closed; an honest client
        is served alongside.
        """
        await self.serveSocks(self.resolver, handshakeTimeout=2.0)
        attacks = [
            # 255 methods, then a 255-byte domain that does not resolve
            b"\x05\xff" + bytes(255) + b"\x05\x01\x00\x03\xff" + b"a" * 255 + b"\x00\x50",
            # a SOCKS4 user id that never ends
            b"\x04\x01\x00\x50\x7f\x00\x00\x01" + b"u" * 300_000,
            # a SOCKS4A domain that never ends
            b"\x04\x01\x00\x50\x00\x00\x00\x01u\x00" + b"d" * 300_000,
            # username/password with 255-byte fields, wrong version of sub-negotiation
            b"\x05\x01\x02\x01\xff" + b"n" * 255 + b"\xff" + b"p" * 255,
            # an endless HTTP request line
            b"GET /" + b"a" * 300_000,
        ]
        clients = [await self.raw(attack) for attack in attacks]
        await self.honest()
        await self.wait(DeferredList([c.closed for c in clients]))
        self.checkMemory()

    async def test_neverReads(self) -> None:
        """
        A client that never reads while its destination keeps sending: the
        relay's backpressure stops the destination, so what socksd holds
        for the client stays bounded (the destination sends under 32 MiB
        and memory stays under the bound); an honest client is served.
        """
        Firehose.instances = []
        hosePort = await self.listen(Factory.forProtocol(Firehose))
        await self.serveSocks(self.resolver, handshakeTimeout=2.0)
        client = await self.connect(socks5Request(hosePort), socks5ReplyEnd)
        client.transport.pauseProducing()
        await deferLater(reactor, 1.5, lambda: None)
        await self.honest()
        self.checkMemory()
        [hose] = Firehose.instances
        self.assertGreater(hose.sent, 0)
        self.assertLess(hose.sent, 32 * 1024 * 1024)

    async def test_failedLogins(self) -> None:
        """
        300 clients failing to log in (with the authenticator's failure
        delay) are each refused; an honest client with the right password
        is served meanwhile.
        """
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        portal = Portal(SocksRealm(), [checker])
        factory = await self.serveSocks(self.resolver, handshakeTimeout=5.0)
        factory.authenticator = Authenticator(portal, reactor, failureDelay=0.5)

        def login(password: bytes) -> bytes:
            return (
                b"\x05\x01\x02\x01\x05alice"
                + bytes([len(password)])
                + password
            )

        bad = [await self.raw(login(b"guess%d" % i)) for i in range(300)]
        request = socks5Request(self.echoPort)[3:]
        await self.honest(login(b"secret") + request, login=True)
        await self.wait(DeferredList([c.closed for c in bad]))
        self.assertTrue(all(c.received == b"\x05\x02\x01\x01" for c in bad))
        self.checkMemory()


class RandomisedProtocolTests(SynchronousTestCase):
    """
    Random splits of valid handshakes, and random garbage, into the server's
    protocols over a C{StringTransport}, with policy, limits and
    authentication on: never an exception into the reactor, and every
    connection ends with a reply or a close.
    """

    def factory(self, clock: Clock) -> SocksServerFactory:
        """A factory with every check on, and an upstream the test drives."""
        factory = SocksServerFactory(
            clock,
            upstream=MemoryUpstream(),
            resolver=FakeResolver({"inside.test": ["127.0.0.1"]}),
            policy=Policy.fromOptions(denyPrivate=True),
            config=ServerConfig(handshakeTimeout=5.0),
        )
        factory.limits = ConnectionLimits(maxTotal=10, maxPerClient=5, maxPerUser=2)
        factory.bandwidth = BandwidthLimits(clock, perClient=1000)
        return factory

    def feed(self, factory: SocksServerFactory, clock: Clock, chunks: list[bytes]) -> None:
        """Feed C{chunks}, let time pass, and check the connection's end."""
        protocol = factory.buildProtocol(None)
        transport = RecordingTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 5000))
        protocol.makeConnection(transport)
        for chunk in chunks:
            protocol.dataReceived(chunk)
        for attempt in list(factory.upstream.attempts):
            if not attempt.deferred.called:
                attempt.fail(ConnectionRefusedError())
        clock.advance(10)
        self.assertTrue(
            transport.value() or transport.disconnecting,
            f"no reply and no close for {chunks!r}",
        )
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(factory.limits.total, 0)

    @settings(max_examples=200, deadline=None)
    @given(
        request=st.sampled_from(
            [
                b"\x05\x01\x00\x05\x01\x00\x03\x0binside.test\x00\x50",
                b"\x05\x01\x00\x05\x01\x00\x01\x08\x08\x08\x08\x00\x50",
                b"\x05\x02\x00\x02\x05\x01\x00\x04" + bytes(15) + b"\x01\x00\x50",
                b"\x04\x01\x00\x50\x7f\x00\x00\x01alice\x00",
                b"\x04\x01\x00\x50\x00\x00\x00\x01\x00inside.test\x00",
                b"\x04\x01\x00\x50\x08\x08\x08\x08\x00",
            ]
        ),
        cuts=st.lists(st.integers(min_value=0, max_value=64), max_size=6),
        garbage=st.binary(max_size=64),
    )
    def test_randomSplits(self, request: bytes, cuts: list[int], garbage: bytes) -> None:
        """
        A handshake cut anywhere, with garbage after it, gets a reply or a
        close, and raises nothing.
        """
        clock = Clock()
        data = request + garbage
        points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
        chunks = [data[a:b] for a, b in zip(points, points[1:]) if a != b]
        self.feed(self.factory(clock), clock, chunks)

    @settings(max_examples=200, deadline=None)
    @given(chunks=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5))
    def test_garbage(self, chunks: list[bytes]) -> None:
        """Random bytes get a reply or a close (at the handshake timeout)."""
        clock = Clock()
        self.feed(self.factory(clock), clock, chunks)
