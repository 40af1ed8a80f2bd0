"""
Tests for L{socksd.server.limits}: connection caps, bandwidth throttles,
and their command-line options; loopback tests with the real factory.
"""

from __future__ import annotations

import hashlib
import time

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from socksd.tap import Options, parseRate
from socksd.server.limits import (
    BandwidthLimits,
    ConnectionLimits,
    RateBucket,
    Throttle,
    clientKey,
)
from socksd.testing import EchoProtocol
from socksd.test.test_loopback import socks5ReplyEnd, socks5Request
from socksd.test.test_policy_server import LoopbackBase
from twisted.internet.address import IPv4Address


def peer(host: str, port: int = 40000) -> IPv4Address:
    """A client address."""
    return IPv4Address("TCP", host, port)


class ConnectionLimitsTests(SynchronousTestCase):
    """L{ConnectionLimits} counts and caps connections."""

    def test_total(self) -> None:
        """Past C{maxTotal}, admit refuses with a reason; a release makes room."""
        limits = ConnectionLimits(maxTotal=2)
        first = limits.admit(peer("127.0.0.1"))
        limits.admit(peer("127.0.0.2"))
        self.assertIsInstance(limits.admit(peer("127.0.0.3")), str)
        first.release()
        first.release()
        self.assertEqual(limits.total, 1)
        self.assertNotIsInstance(limits.admit(peer("127.0.0.3")), str)

    def test_perClient(self) -> None:
        """One address is capped; other addresses are not affected."""
        limits = ConnectionLimits(maxPerClient=1)
        admission = limits.admit(peer("127.0.0.1", 1))
        self.assertIsInstance(limits.admit(peer("127.0.0.1", 2)), str)
        self.assertNotIsInstance(limits.admit(peer("127.0.0.2", 1)), str)
        admission.release()
        self.assertEqual(limits.connectionsFrom(peer("127.0.0.1")), 0)

    def test_perUser(self) -> None:
        """A user is capped across client addresses, and released with them."""
        limits = ConnectionLimits(maxPerUser=1)
        one = limits.admit(peer("127.0.0.1"))
        two = limits.admit(peer("127.0.0.2"))
        self.assertTrue(one.admitUser("alice"))
        self.assertFalse(two.admitUser("alice"))
        self.assertTrue(two.admitUser("bob"))
        self.assertTrue(two.admitUser(None))
        one.release()
        self.assertEqual(limits.connectionsOf("alice"), 0)
        three = limits.admit(peer("127.0.0.3"))
        self.assertTrue(three.admitUser("alice"))

    def test_moveTo(self) -> None:
        """A PROXY header's real address is counted instead of the proxy's."""
        limits = ConnectionLimits(maxPerClient=1)
        a = limits.admit(peer("10.0.0.1"))
        b = limits.admit(peer("10.0.0.2"))
        self.assertTrue(a.moveTo(peer("192.0.2.1")))
        self.assertFalse(b.moveTo(peer("192.0.2.1")))
        b.release()
        a.release()
        self.assertEqual(limits.total, 0)
        self.assertEqual(limits.connectionsFrom(peer("192.0.2.1")), 0)

    def test_invalid(self) -> None:
        """Zero, negative and non-integer caps are refused."""
        for bad in (0, -1, 1.5, True):
            self.assertRaises(ValueError, ConnectionLimits, maxTotal=bad)

    def test_clientKey(self) -> None:
        """Ports and zone ids do not split a client's count."""
        self.assertEqual(clientKey(peer("127.0.0.1", 1)), clientKey(peer("127.0.0.1", 2)))


class FakeProducer:
    """Records pause and resume."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")


class ThrottleTests(SynchronousTestCase):
    """L{RateBucket} and L{Throttle} pace a source."""

    def test_bucketDebt(self) -> None:
        """Charging past the credit gives the seconds until it is repaid."""
        clock = Clock()
        bucket = RateBucket(1000, 500, clock)
        self.assertEqual(bucket.charge(500), 0.0)
        self.assertAlmostEqual(bucket.charge(1000), 1.0)
        clock.advance(1.0)
        self.assertEqual(bucket.charge(0), 0.0)

    def test_pauseAndResume(self) -> None:
        """A throttle in debt pauses its source and resumes it when repaid."""
        clock = Clock()
        source = FakeProducer()
        throttle = Throttle(source, [RateBucket(1000, 1000, clock)], clock)
        throttle.consume(1000)
        self.assertEqual(source.events, [])
        throttle.consume(2000)
        self.assertEqual(source.events, ["pause"])
        clock.advance(1.9)
        self.assertEqual(source.events, ["pause"])
        clock.advance(0.1)
        self.assertEqual(source.events, ["pause", "resume"])

    def test_stop(self) -> None:
        """A stopped throttle cancels its pending resume."""
        clock = Clock()
        source = FakeProducer()
        throttle = Throttle(source, [RateBucket(10, 10, clock)], clock)
        throttle.consume(100)
        throttle.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        throttle.consume(100)
        self.assertEqual(source.events, ["pause"])

    def test_sharedPerClient(self) -> None:
        """Two tunnels of one client address share its buckets."""
        clock = Clock()
        limits = BandwidthLimits(clock, perClient=1000)
        a = limits.bucketsFor(peer("127.0.0.1", 1), None, None, "up")
        b = limits.bucketsFor(peer("127.0.0.1", 2), None, None, "up")
        c = limits.bucketsFor(peer("127.0.0.1", 2), None, None, "down")
        self.assertIs(a[0], b[0])
        self.assertIsNot(a[0], c[0])
        self.assertEqual(limits.bucketsFor(peer("127.0.0.1"), "u", None, "up"), a)
        self.assertEqual(len(limits.bucketsFor(peer("127.0.0.1"), "u", 5.0, "up")), 2)


class OptionsTests(SynchronousTestCase):
    """The limit options parse and check their values."""

    def test_parseRate(self) -> None:
        """Rates take decimal suffixes and an optional /s."""
        self.assertEqual(parseRate("1000"), 1000)
        self.assertEqual(parseRate("500k"), 500000)
        self.assertEqual(parseRate("2M/s"), 2000000)
        for bad in ("", "x", "-1", "0", "inf"):
            self.assertRaises(ValueError, parseRate, bad)

    def test_options(self) -> None:
        """The options are read into the option dictionary."""
        options = Options()
        options.parseOptions(
            [
                "--max-connections", "100",
                "--max-connections-per-client", "10",
                "--max-connections-per-user", "5",
                "--bandwidth-per-client", "1M",
                "--bandwidth-per-user", "200k",
                "--outgoing-address", "127.0.0.2",
            ]
        )
        self.assertEqual(options["max-connections"], 100)
        self.assertEqual(options["max-connections-per-client"], 10)
        self.assertEqual(options["max-connections-per-user"], 5)
        self.assertEqual(options["bandwidth-per-client"], 1e6)
        self.assertEqual(options["bandwidth-per-user"], 2e5)
        self.assertEqual(options["outgoing-address"], "127.0.0.2")

    def test_applied(self) -> None:
        """makeService's helper gives the factory the limits the options name."""
        from socksd.server import SocksServerFactory
        from socksd.tap import _applyLimits
        from socksd.testing import FakeResolver, MemoryUpstream

        options = Options()
        options.parseOptions(
            [
                "--max-connections-per-client", "10",
                "--bandwidth-per-user", "200k",
                "--outgoing-address", "127.0.0.2",
            ]
        )
        clock = Clock()
        factory = SocksServerFactory(
            clock, upstream=MemoryUpstream(), resolver=FakeResolver({})
        )
        _applyLimits(options, factory, clock)
        self.assertEqual(factory.limits.maxPerClient, 10)
        self.assertIsNone(factory.limits.maxTotal)
        self.assertEqual(factory.bandwidth.perUser, 2e5)
        self.assertIsNone(factory.bandwidth.perClient)
        self.assertEqual(factory.outgoingAddress, ("127.0.0.2", 0))
        plain = SocksServerFactory(clock, upstream=MemoryUpstream(), resolver=FakeResolver({}))
        _applyLimits(Options(), plain, clock)
        self.assertIsNone(plain.limits)
        self.assertIsNone(plain.bandwidth)

    def test_badOptions(self) -> None:
        """Bad values are usage errors."""
        for argv in (
            ["--max-connections", "-1"],
            ["--bandwidth-per-client", "fast"],
            ["--outgoing-address", "nowhere"],
        ):
            self.assertRaises(usage.UsageError, Options().parseOptions, argv)


class Blaster(Protocol):
    """Sends C{total} bytes as soon as connected, then closes."""

    total = 600_000

    def connectionMade(self) -> None:
        data = hashlib.sha256(b"seed").digest() * (self.total // 32)
        self.transport.write(data)
        self.transport.loseConnection()


class LoopbackLimitsTests(LoopbackBase):
    """The limits, with real sockets."""

    async def setUp(self) -> None:
        self.echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        self.resolver = self.hostsResolver("127.0.0.1 inside.test\n")

    async def echoWorks(self) -> None:
        """A SOCKS5 CONNECT to the echo server works, byte-exact."""
        client = await self.connect(socks5Request(self.echoPort), socks5ReplyEnd)
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x00")
        client.expected = 4
        client.transport.write(b"ping")
        await self.wait(client.allReceived)
        self.assertEqual(bytes(client.received), b"ping")
        client.transport.loseConnection()
        await self.wait(client.closed)

    async def test_maxConnectionsPerClient(self) -> None:
        """
        Past --max-connections-per-client, a new connection is closed
        before any reply; once one closes, a new client is served.
        """
        factory = await self.serveSocks(self.resolver)
        factory.limits = ConnectionLimits(maxPerClient=3)
        idle = [await self.connect(b"", socks5ReplyEnd) for _ in range(3)]
        await deferLater(reactor, 0.05, lambda: None)
        excess = await self.connect(socks5Request(self.echoPort), socks5ReplyEnd)
        await self.wait(excess.closed)
        self.assertEqual(excess.buffer, b"")
        idle[0].transport.abortConnection()
        await self.wait(idle[0].closed)
        await deferLater(reactor, 0.05, lambda: None)
        await self.echoWorks()
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(factory.limits.total, 2)

    async def test_handshakeTimeoutFromConnect(self) -> None:
        """
        A client dribbling one byte every 0.1s is closed when the handshake
        timeout (0.5s) runs out, counted from connecting, not from its last
        byte.
        """
        await self.serveSocks(self.resolver, handshakeTimeout=0.5)
        client = await self.connect(b"\x05", socks5ReplyEnd)
        started = time.monotonic()
        rest = b"\x01\x00\x05\x01\x00\x03\x50" + b"a" * 80 + b"\x00\x50"
        for byte in rest:
            if client.closed.called:
                break
            client.transport.write(bytes([byte]))
            await deferLater(reactor, 0.1, lambda: None)
        await self.wait(client.closed)
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 2.0)
        self.assertGreaterEqual(elapsed, 0.4)

    async def test_bandwidthPerClient(self) -> None:
        """
        At 200,000 bytes/s per client, 600,000 bytes from the destination
        take at least 2.5 seconds (minus the 50,000-byte burst) and arrive
        byte-exact.
        """
        blasterPort = await self.listen(Factory.forProtocol(Blaster))
        factory = await self.serveSocks(self.resolver)
        factory.bandwidth = BandwidthLimits(reactor, perClient=200_000)
        client = await self.connect(socks5Request(blasterPort), socks5ReplyEnd)
        started = time.monotonic()
        await self.wait(client.reply)
        await self.wait(client.closed)
        elapsed = time.monotonic() - started
        expected = hashlib.sha256(b"seed").digest() * (Blaster.total // 32)
        self.assertEqual(bytes(client.received), expected)
        self.assertGreater(elapsed, (Blaster.total - 50_000 - 65536) / 200_000)

    async def test_ruleBandwidth(self) -> None:
        """A pass rule's bandwidth throttles the tunnels it lets through."""
        from socksd.policy import Policy

        blasterPort = await self.listen(Factory.forProtocol(Blaster))
        policy = Policy.fromToml(
            '[[destination]]\naction = "pass"\nto = ["127.0.0.0/8"]\n'
            "bandwidth = 400000\n"
        )
        await self.serveSocks(self.resolver, policy)
        client = await self.connect(socks5Request(blasterPort), socks5ReplyEnd)
        started = time.monotonic()
        await self.wait(client.closed)
        elapsed = time.monotonic() - started
        self.assertEqual(len(client.received), Blaster.total - Blaster.total % 32)
        self.assertGreater(elapsed, (Blaster.total - 100_000 - 65536) / 400_000)

    async def test_ruleBandwidthByName(self) -> None:
        """
        A pass rule that lists only address ranges throttles a tunnel to a
        name that resolves into them as it does one to the address itself
        (the name's decision carries to its resolved addresses).
        """
        from socksd.policy import Policy

        blasterPort = await self.listen(Factory.forProtocol(Blaster))
        policy = Policy.fromToml(
            '[[destination]]\naction = "pass"\nto = ["127.0.0.0/8"]\n'
            'bandwidth = 400000\nname = "lan"\n'
        )
        await self.serveSocks(self.resolver, policy)
        client = await self.connect(
            socks5Request(blasterPort, 3, b"inside.test"), socks5ReplyEnd
        )
        started = time.monotonic()
        await self.wait(client.closed)
        elapsed = time.monotonic() - started
        self.assertEqual(len(client.received), Blaster.total - Blaster.total % 32)
        self.assertGreater(elapsed, (Blaster.total - 100_000 - 65536) / 400_000)

    async def test_unlimitedIsFast(self) -> None:
        """Without limits the same transfer takes well under a second."""
        blasterPort = await self.listen(Factory.forProtocol(Blaster))
        await self.serveSocks(self.resolver)
        client = await self.connect(socks5Request(blasterPort), socks5ReplyEnd)
        started = time.monotonic()
        await self.wait(client.closed)
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertEqual(len(client.received), Blaster.total - Blaster.total % 32)

    async def test_refusalLogged(self) -> None:
        """
        A connection refused by --max-connections ends with one
        socksd.connection log event that says why.
        """
        from twisted.logger import globalLogPublisher

        events: list[dict] = []

        def observe(event: dict) -> None:
            if event.get("log_namespace") == "socksd.connection":
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        factory = await self.serveSocks(self.resolver)
        factory.limits = ConnectionLimits(maxTotal=1)
        held = await self.connect(b"", socks5ReplyEnd)
        await deferLater(reactor, 0.05, lambda: None)
        excess = await self.connect(b"\x05", socks5ReplyEnd)
        await self.wait(excess.closed)
        await deferLater(reactor, 0.05, lambda: None)
        refusals = [e for e in events if e["reason"].startswith("too many connections")]
        self.assertEqual(len(refusals), 1)
        self.assertEqual(refusals[0]["client"].split(":")[0], "127.0.0.1")
        held.transport.abortConnection()

    async def test_maxConnectionsPerUser(self) -> None:
        """
        Past --max-connections-per-user, a logged-in user's request gets a
        general failure (01); another user is served.
        """
        from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
        from twisted.cred.portal import Portal

        from socksd.auth import Authenticator, SocksRealm

        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw", bob=b"pw")
        factory = await self.serveSocks(self.resolver)
        factory.authenticator = Authenticator(
            Portal(SocksRealm(), [checker]), reactor, failureDelay=0.1
        )
        factory.limits = ConnectionLimits(maxPerUser=1)

        def replyEnd(buffer: bytes) -> int | None:
            end = socks5ReplyEnd(buffer[2:])
            return None if end is None else end + 2

        def login(user: bytes) -> bytes:
            request = socks5Request(self.echoPort)[3:]
            return b"\x05\x01\x02\x01" + bytes([len(user)]) + user + b"\x02pw" + request

        first = await self.connect(login(b"alice"), replyEnd)
        self.assertEqual((await self.wait(first.reply))[:6], b"\x05\x02\x01\x00\x05\x00")
        second = await self.connect(login(b"alice"), replyEnd)
        self.assertEqual((await self.wait(second.reply))[:6], b"\x05\x02\x01\x00\x05\x01")
        other = await self.connect(login(b"bob"), replyEnd)
        self.assertEqual((await self.wait(other.reply))[:6], b"\x05\x02\x01\x00\x05\x00")


class CheckResolvedTests(SynchronousTestCase):
    """L{checkResolved} and L{resolvesLocally}."""

    def setUp(self) -> None:
        from socksd.policy import Policy
        from socksd.testing import FakeResolver

        self.policy = Policy.fromOptions(denyPrivate=True)
        self.resolver = FakeResolver(
            {"mixed.test": ["192.0.2.1", "10.0.0.1"], "public.test": ["8.8.8.8"]}
        )

    def check(self, host: str) -> object:
        from socksd.address import Destination
        from socksd.interfaces import ConnectContext, Decision
        from socksd.errors import NotAllowed
        from socksd.policy.resolved import checkResolved
        from twisted.python.failure import Failure

        context, destination = ConnectContext(), Destination(host, 80)
        result: list[object] = []
        checkResolved(
            self.policy,
            self.resolver,
            context,
            destination,
            Decision(True, checkAddresses=True),
        ).addBoth(result.append)
        decision = result[0]
        if getattr(decision, "allowed", True):
            return None
        return Failure(NotAllowed(decision.reason))

    def test_anyDeniedAddressRefuses(self) -> None:
        """One denied address among allowed ones refuses the name."""
        from socksd.errors import NotAllowed

        self.assertTrue(self.check("mixed.test").check(NotAllowed))
        self.assertIsNone(self.check("public.test"))

    def test_notLookedUp(self) -> None:
        """Onion names and address literals are not resolved."""
        self.assertIsNone(self.check("abcdefghijklmnop.onion"))
        self.assertIsNone(self.check("10.0.0.1"))

    def test_resolvesLocally(self) -> None:
        """Only a direct upstream resolves on this host."""
        from socksd.server.commands.connect import resolvesLocally
        from socksd.testing import MemoryUpstream
        from socksd.upstream import DirectUpstream

        self.assertTrue(resolvesLocally(DirectUpstream(Clock(), self.resolver)))
        self.assertFalse(resolvesLocally(MemoryUpstream()))
