"""
Tests for L{socksd.resolve}: the system, DNS and hosts-file resolvers, the
cache, the C{IHostnameResolver} adapter and C{--resolver} parsing.

The DNS tests run a twisted.names server on 127.0.0.1 (UDP and TCP); no test
sends anything to another address.
"""

from __future__ import annotations

import os
import socket
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.internet import address as taddress
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IHostnameResolver, IReactorPluggableNameResolver
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock, deferLater
from twisted.names import authority, common, dns, server
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from socksd.errors import NotAllowed, ResolveFailed
from socksd.interfaces import IResolver
from socksd.resolve import (
    BoundedResolver,
    MAX_CNAME_CHAIN,
    AdaptedResolution,
    CachingResolver,
    DnsResolver,
    HostsResolver,
    NameResolverAdapter,
    SystemResolver,
    resolverFromSpec,
)

V4 = IPv4Address
V6 = IPv6Address


@implementer(IResolver)
class FakeResolver:
    """
    A resolver answering from dictionaries, counting its lookups.

    @ivar pending: when not L{None}, lookups return this L{Deferred} (for
        tests that fire it themselves).
    """

    def __init__(self, names: dict[str, list] | None = None, addresses: dict | None = None) -> None:
        self.names = names or {}
        self.addresses = addresses or {}
        self.asked: list[Any] = []
        self.pending: Deferred | None = None

    def resolve(self, name: str) -> Deferred:
        self.asked.append(name)
        if self.pending is not None:
            return self.pending
        if name.lower() in self.names:
            return succeed(list(self.names[name.lower()]))
        return fail(ResolveFailed(f"{name} unknown"))

    def reverse(self, address: Any) -> Deferred:
        self.asked.append(address)
        if self.pending is not None:
            return self.pending
        if address in self.addresses:
            return succeed(self.addresses[address])
        return fail(ResolveFailed(f"{address} unknown"))


@implementer(IHostnameResolver)
class FakeNameResolver:
    """An C{IHostnameResolver} answering with fixed Twisted addresses."""

    def __init__(self, answers: list) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def resolveHostName(
        self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"
    ):
        self.asked.append(hostName)
        receiver.resolutionBegan(None)
        for answer in self.answers:
            receiver.addressResolved(answer)
        receiver.resolutionComplete()


@implementer(IReactorPluggableNameResolver)
class FakeNameReactor:
    """A reactor that only has a name resolver."""

    def __init__(self, nameResolver: Any) -> None:
        self.nameResolver = nameResolver

    def installNameResolver(self, resolver: Any) -> Any:
        previous, self.nameResolver = self.nameResolver, resolver
        return previous


class RecordingReceiver:
    """An C{IResolutionReceiver} that writes down what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def resolutionBegan(self, resolution: Any) -> None:
        self.events.append(("began", resolution))

    def addressResolved(self, address: Any) -> None:
        self.events.append(("address", address))

    def resolutionComplete(self) -> None:
        self.events.append(("complete", None))

    @property
    def addresses(self) -> list[Any]:
        return [value for kind, value in self.events if kind == "address"]


def hostsFileNames(address: str) -> bool:
    """Does /etc/hosts list C{address} (so the system answers without DNS)?"""
    try:
        with open("/etc/hosts", encoding="utf-8", errors="replace") as hosts:
            return any(line.split("#")[0].split()[:1] == [address] for line in hosts)
    except OSError:
        return False


def hostsFileHasName(name: str) -> bool:
    """Does /etc/hosts list C{name}?"""
    try:
        with open("/etc/hosts", encoding="utf-8", errors="replace") as hosts:
            return any(name in line.split("#")[0].split()[1:] for line in hosts)
    except OSError:
        return False


class SystemResolverTests(TestCase):
    """L{SystemResolver} asks the reactor's name resolver and getnameinfo."""

    def test_interface(self) -> None:
        """
        L{SystemResolver} provides L{IResolver}.
        """
        verifyObject(IResolver, SystemResolver(reactor))

    async def test_localhost(self) -> None:
        """
        C{localhost} resolves to a loopback address.
        """
        if not hostsFileHasName("localhost"):
            raise self.skipTest("/etc/hosts does not list localhost (asking DNS is not allowed)")
        addresses = await SystemResolver(reactor).resolve("localhost")
        self.assertTrue(addresses)
        self.assertTrue(all(a.is_loopback for a in addresses), addresses)

    async def test_reverseLoopback(self) -> None:
        """
        127.0.0.1 has a name.
        """
        if not hostsFileNames("127.0.0.1"):
            raise self.skipTest("/etc/hosts gives 127.0.0.1 no name (asking DNS is not allowed)")
        name = await SystemResolver(reactor).reverse(V4("127.0.0.1"))
        self.assertIsInstance(name, str)
        self.assertTrue(name)

    async def test_reverseFailure(self) -> None:
        """
        An address without a name fails with L{ResolveFailed}.
        """
        resolver = SystemResolver(reactor)
        calls: list[tuple] = []

        def getnameinfo(sockaddr: tuple, flags: int) -> tuple[str, str]:
            calls.append((sockaddr, flags))
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        resolver._getnameinfo = getnameinfo
        error = await self.assertFailure(resolver.reverse(V6("2001:db8::1")), ResolveFailed)
        self.assertIn("2001:db8::1", str(error))
        self.assertEqual(calls, [(("2001:db8::1", 0, 0, 0), socket.NI_NAMEREQD)])

    def test_addressesDeduplicatedIPv4First(self) -> None:
        """
        The name resolver's answers become L{ipaddress} objects, duplicates
        dropped, IPv4 before IPv6.
        """
        nameResolver = FakeNameResolver(
            [
                taddress.IPv6Address("TCP", "2001:db8::1", 0),
                taddress.IPv4Address("TCP", "192.0.2.1", 0),
                taddress.IPv4Address("TCP", "192.0.2.1", 0),
                taddress.IPv4Address("TCP", "192.0.2.2", 0),
                taddress.IPv6Address("TCP", "2001:db8::1", 0),
            ]
        )
        resolver = SystemResolver(FakeNameReactor(nameResolver))
        result = self.successResultOf(resolver.resolve("www.example.com"))
        self.assertEqual(result, [V4("192.0.2.1"), V4("192.0.2.2"), V6("2001:db8::1")])
        self.assertEqual(nameResolver.asked, ["www.example.com"])

    def test_noAddress(self) -> None:
        """
        A name the name resolver finds nothing for fails with
        L{ResolveFailed}.
        """
        resolver = SystemResolver(FakeNameReactor(FakeNameResolver([])))
        self.failureResultOf(resolver.resolve("nothing.example.com"), ResolveFailed)

    def test_literal(self) -> None:
        """
        An address literal is its own answer; the name resolver is not
        asked.
        """
        nameResolver = FakeNameResolver([])
        resolver = SystemResolver(FakeNameReactor(nameResolver))
        self.assertEqual(self.successResultOf(resolver.resolve("192.0.2.9")), [V4("192.0.2.9")])
        self.assertEqual(
            self.successResultOf(resolver.resolve("[2001:db8::9]")), [V6("2001:db8::9")]
        )
        self.assertEqual(nameResolver.asked, [])

    def test_unusableNames(self) -> None:
        """
        Empty names, names with NUL, names IDNA cannot encode, overlong
        names and onion names fail with L{ResolveFailed} without reaching
        the name resolver (getaddrinfo would raise something other than
        gaierror on some of them and never answer).
        """
        nameResolver = FakeNameResolver([taddress.IPv4Address("TCP", "192.0.2.1", 0)])
        resolver = SystemResolver(FakeNameReactor(nameResolver))
        for name in [
            "",
            ".",
            "a\x00b.example",
            "a..example",
            "x" * 64 + ".example",
            "a." * 130 + "com",
            "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion",
        ]:
            self.failureResultOf(resolver.resolve(name), ResolveFailed)
        self.assertEqual(nameResolver.asked, [])


class MemoryAuthority(authority.FileAuthority):
    """An authority for one zone, from records in memory."""

    def __init__(self, zone: bytes, records: dict[bytes, list]) -> None:
        common.ResolverBase.__init__(self)
        self.soa = (
            zone,
            dns.Record_SOA(
                mname=b"ns." + zone,
                rname=b"hostmaster." + zone,
                serial=1,
                minimum=60,
                expire=60,
                ttl=60,
            ),
        )
        self.records = {name.lower(): value for name, value in records.items()}
        self._cache = {}


def testZones() -> list[MemoryAuthority]:
    """The zones the test DNS server serves (RFC 5737/3849 addresses)."""
    many = [dns.Record_A(f"192.0.2.{n}") for n in range(100, 160)]
    return [
        MemoryAuthority(
            b"test.example",
            {
                b"www.test.example": [
                    dns.Record_A("192.0.2.7"),
                    dns.Record_AAAA("2001:db8::7"),
                    dns.Record_A("192.0.2.8"),
                ],
                b"v6only.test.example": [dns.Record_AAAA("2001:db8::6")],
                b"alias.test.example": [dns.Record_CNAME(b"www.test.example")],
                b"far.test.example": [dns.Record_CNAME(b"host.other.example")],
                b"loop1.test.example": [dns.Record_CNAME(b"loop2.test.example")],
                b"loop2.test.example": [dns.Record_CNAME(b"loop1.test.example")],
                b"empty.test.example": [dns.Record_TXT(b"no addresses here")],
                b"many.test.example": many,
                b"ttl.test.example": [
                    dns.Record_A("192.0.2.9", ttl=30),
                    dns.Record_AAAA("2001:db8::9", ttl=40),
                ],
                b"zero.test.example": [
                    dns.Record_A("192.0.2.10", ttl=0),
                    dns.Record_AAAA("2001:db8::10", ttl=0),
                ],
                b"long.test.example": [
                    dns.Record_A("192.0.2.11", ttl=86400),
                    dns.Record_AAAA("2001:db8::11", ttl=86400),
                ],
            },
        ),
        MemoryAuthority(
            b"other.example",
            {b"host.other.example": [dns.Record_A("198.51.100.9")]},
        ),
        MemoryAuthority(
            b"2.0.192.in-addr.arpa",
            {
                b"7.2.0.192.in-addr.arpa": [dns.Record_PTR(b"www.test.example")],
                # RFC 2317 classless delegation: a CNAME to the PTR.
                b"8.2.0.192.in-addr.arpa": [dns.Record_CNAME(b"8.0-25.2.0.192.in-addr.arpa")],
                b"8.0-25.2.0.192.in-addr.arpa": [dns.Record_PTR(b"classless.test.example")],
            },
        ),
        MemoryAuthority(
            b"8.b.d.0.1.0.0.2.ip6.arpa",
            {V6("2001:db8::7").reverse_pointer.encode(): [dns.Record_PTR(b"www.test.example")]},
        ),
    ]


class ServerFactory(server.DNSServerFactory):
    """
    A DNS server that truncates UDP answers at 512 bytes (Twisted's server
    never truncates) and closes each TCP connection after its answer, so
    that the client must retry over TCP and no connection outlives a test.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tcpQueries = 0
        self.udpQueries = 0

    def handleQuery(self, message: dns.Message, protocol: Any, address: Any) -> Any:
        if address is None:
            self.tcpQueries += 1
        else:
            self.udpQueries += 1
        return super().handleQuery(message, protocol, address)

    def sendReply(self, protocol: Any, message: dns.Message, address: Any) -> None:
        if address is not None:
            message.maxSize = 512
        super().sendReply(protocol, message, address)
        if address is None:
            protocol.transport.loseConnection()


class DnsResolverTests(TestCase):
    """L{DnsResolver} against a twisted.names server on 127.0.0.1."""

    def setUp(self) -> None:
        self.serverFactory = ServerFactory(authorities=testZones(), verbose=0)
        for attempt in range(20):
            udp = reactor.listenUDP(
                0, dns.DNSDatagramProtocol(self.serverFactory), interface="127.0.0.1"
            )
            port = udp.getHost().port
            try:
                tcp = reactor.listenTCP(port, self.serverFactory, interface="127.0.0.1")
            except Exception:
                udp.stopListening()
                continue
            break
        else:
            raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")
        self.addCleanup(udp.stopListening)
        self.addCleanup(tcp.stopListening)
        self.port = port
        self.resolver = DnsResolver(reactor, "127.0.0.1", port, timeout=(2,))

    def test_interface(self) -> None:
        """
        L{DnsResolver} provides L{IResolver}.
        """
        verifyObject(IResolver, self.resolver)

    async def test_forward(self) -> None:
        """
        A name with A and AAAA records resolves to all of them, IPv4 first
        in the server's order.
        """
        addresses = await self.resolver.resolve("www.test.example")
        self.assertEqual(addresses, [V4("192.0.2.7"), V4("192.0.2.8"), V6("2001:db8::7")])
        self.assertEqual(self.serverFactory.udpQueries, 2)

    async def test_caseAndRootDot(self) -> None:
        """
        Names are caseless and may end with the root dot.
        """
        addresses = await self.resolver.resolve("WWW.Test.Example.")
        self.assertEqual(addresses, [V4("192.0.2.7"), V4("192.0.2.8"), V6("2001:db8::7")])

    async def test_aaaaOnly(self) -> None:
        """
        A name with only an AAAA record resolves to it.
        """
        self.assertEqual(await self.resolver.resolve("v6only.test.example"), [V6("2001:db8::6")])

    async def test_cnameInAnswer(self) -> None:
        """
        An alias whose target the server includes in its answer resolves to
        the target's addresses, and only those of the asked type from each
        query (the server adds AAAA records to an A answer).
        """
        addresses = await self.resolver.resolve("alias.test.example")
        self.assertEqual(addresses, [V4("192.0.2.7"), V4("192.0.2.8"), V6("2001:db8::7")])

    async def test_cnameFollowedWithAnotherQuery(self) -> None:
        """
        An alias into another zone, whose target the answer does not hold,
        is followed with a query for the target.
        """
        self.assertEqual(await self.resolver.resolve("far.test.example"), [V4("198.51.100.9")])
        self.assertEqual(self.serverFactory.udpQueries, 4)

    async def test_cnameLoop(self) -> None:
        """
        A CNAME loop ends in L{ResolveFailed}, after a bounded number of
        queries.
        """
        await self.assertFailure(self.resolver.resolve("loop1.test.example"), ResolveFailed)
        self.assertLessEqual(self.serverFactory.udpQueries, 2 * (MAX_CNAME_CHAIN + 1))

    async def test_nxdomain(self) -> None:
        """
        A name that does not exist fails with L{ResolveFailed}, saying so.
        """
        error = await self.assertFailure(
            self.resolver.resolve("missing.test.example"), ResolveFailed
        )
        self.assertIn("NXDOMAIN", str(error))

    async def test_noAddressRecords(self) -> None:
        """
        A name that exists without A or AAAA records fails with
        L{ResolveFailed}.
        """
        await self.assertFailure(self.resolver.resolve("empty.test.example"), ResolveFailed)

    async def test_truncatedAnswerOverTcp(self) -> None:
        """
        An answer too big for UDP comes truncated, and the resolver asks
        again over TCP and gets all of it.
        """
        addresses = await self.resolver.resolve("many.test.example")
        self.assertEqual(addresses, [V4(f"192.0.2.{n}") for n in range(100, 160)])
        self.assertEqual(self.serverFactory.tcpQueries, 1)
        # Let the connection the server closed close on the client side too.
        for _ in range(100):
            if not self.serverFactory.connections and not self.resolver._client.connections:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.resolver._client.connections, [])

    async def test_reverseIPv4(self) -> None:
        """
        An IPv4 address reverses through its C{in-addr.arpa} PTR record.
        """
        self.assertEqual(await self.resolver.reverse(V4("192.0.2.7")), "www.test.example")

    async def test_reverseIPv6(self) -> None:
        """
        An IPv6 address reverses through its C{ip6.arpa} PTR record.
        """
        self.assertEqual(await self.resolver.reverse(V6("2001:db8::7")), "www.test.example")

    async def test_reverseThroughCname(self) -> None:
        """
        A PTR reached through a CNAME (RFC 2317 classless delegation) is
        found.
        """
        self.assertEqual(await self.resolver.reverse(V4("192.0.2.8")), "classless.test.example")

    async def test_reverseUnknown(self) -> None:
        """
        An address without a PTR record fails with L{ResolveFailed}.
        """
        await self.assertFailure(self.resolver.reverse(V4("192.0.2.99")), ResolveFailed)

    async def test_literalAsksNobody(self) -> None:
        """
        An address literal is its own answer; the server is not asked.
        """
        self.assertEqual(await self.resolver.resolve("192.0.2.200"), [V4("192.0.2.200")])
        self.assertEqual(self.serverFactory.udpQueries, 0)

    async def test_onionNameAsksNobody(self) -> None:
        """
        An onion name fails with L{ResolveFailed}; it never reaches DNS.
        """
        await self.assertFailure(self.resolver.resolve("anything.onion"), ResolveFailed)
        self.assertEqual(self.serverFactory.udpQueries, 0)

    async def test_timeout(self) -> None:
        """
        A server that does not answer makes the lookup fail with
        L{ResolveFailed} once the timeouts are over.
        """
        silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        resolver = DnsResolver(reactor, "127.0.0.1", silent.getHost().port, timeout=(0.1, 0.1))
        error = await self.assertFailure(resolver.resolve("www.test.example"), ResolveFailed)
        self.assertIn("did not answer", str(error))
        await self.assertFailure(resolver.reverse(V4("192.0.2.7")), ResolveFailed)

    def test_serverMustBeAnAddress(self) -> None:
        """
        L{DnsResolver} refuses a server given by name, a bad port or bad
        timeouts.
        """
        self.assertRaises(ValueError, DnsResolver, reactor, "ns.example.com")
        self.assertRaises(ValueError, DnsResolver, reactor, "127.0.0.1", 0)
        self.assertRaises(ValueError, DnsResolver, reactor, "127.0.0.1", 65536)
        self.assertRaises(ValueError, DnsResolver, reactor, "127.0.0.1", 53, ())
        self.assertEqual(DnsResolver(reactor, "[::1]", 5353).server, ("::1", 5353))


class DnsCacheTests(TestCase):
    """
    L{DnsResolver} keeps answers for their TTL, between a floor and a
    ceiling, with twisted.names' cache; L{resolverFromSpec} bounds lookups
    by the connect timeout.
    """

    def setUp(self) -> None:
        DnsResolverTests.setUp(self)  # the same DNS server
        self.clock = Clock()
        self.resolver = DnsResolver(
            reactor, "127.0.0.1", self.port, timeout=(2,), clock=self.clock
        )

    async def lookups(self, name: str) -> int:
        """Resolve C{name}; return how many queries the server has had."""
        await self.resolver.resolve(name)
        return self.serverFactory.udpQueries

    async def test_ttlHonoured(self) -> None:
        """
        An answer is kept for its records' TTL (30 s for A, 40 s for AAAA),
        not for a fixed time; the result carries the least TTL.
        """
        addresses = await self.resolver.resolve("ttl.test.example")
        self.assertEqual(addresses.ttl, 30)
        self.assertEqual(self.serverFactory.udpQueries, 2)
        self.clock.advance(29)
        self.assertEqual(await self.lookups("ttl.test.example"), 2)
        self.clock.advance(2)
        self.assertEqual(await self.lookups("ttl.test.example"), 3)  # A again
        self.clock.advance(10)
        self.assertEqual(await self.lookups("ttl.test.example"), 4)  # AAAA again

    async def test_floorAndCeiling(self) -> None:
        """
        A TTL of 0 is kept for the floor (5 s); a day-long one for the
        ceiling (an hour).
        """
        self.assertEqual(await self.lookups("zero.test.example"), 2)
        self.clock.advance(4)
        self.assertEqual(await self.lookups("zero.test.example"), 2)
        self.clock.advance(2)
        self.assertEqual(await self.lookups("zero.test.example"), 4)
        self.assertEqual(await self.lookups("long.test.example"), 6)
        self.clock.advance(3599)
        self.assertEqual(await self.lookups("long.test.example"), 6)
        self.clock.advance(2)
        self.assertEqual(await self.lookups("long.test.example"), 8)

    async def test_cacheBounded(self) -> None:
        """
        The cache keeps at most C{maxEntries} answers.
        """
        resolver = DnsResolver(
            reactor, "127.0.0.1", self.port, timeout=(2,), clock=self.clock, maxEntries=2
        )
        for name in ("ttl.test.example", "zero.test.example", "long.test.example"):
            await resolver.resolve(name)
        self.assertEqual(len(resolver.cache.cache), 2)

    async def test_boundedByConnectTimeout(self) -> None:
        """
        With a timeout (C{--connect-timeout}), a DNS server that does not
        answer fails the lookup after that time, not after its 15 s of
        tries.
        """
        silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        resolver = resolverFromSpec(
            reactor, f"dns:127.0.0.1:{silent.getHost().port}", timeout=0.2
        )
        self.assertEqual(resolver.resolver._timeout, (0.2,))
        await self.assertFailure(resolver.resolve("www.test.example"), ResolveFailed)

    # Without the bound, the lookup takes the 15 s of the default tries.
    test_boundedByConnectTimeout.timeout = 5  # type: ignore[attr-defined]

    async def test_boundedResolver(self) -> None:
        """
        L{BoundedResolver} fails a lookup that takes too long with
        L{ResolveFailed}, and cancels it.
        """
        cancelled: list[str] = []

        class Slow:
            def resolve(self, name: str) -> Deferred:
                return Deferred(lambda d: cancelled.append(name))

            reverse = resolve

        resolver = BoundedResolver(Slow(), self.clock, 3)
        lookup = resolver.resolve("www.test.example")
        self.clock.advance(3)
        error = self.failureResultOf(lookup, ResolveFailed).value
        self.assertIn("took more than 3 s", str(error))
        self.assertEqual(cancelled, ["www.test.example"])


class HostsResolverTests(SynchronousTestCase):
    """L{HostsResolver} answers from a hosts file."""

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.clock = Clock()
        self.write(
            "# a comment line\n"
            "192.0.2.1   www.example.com www  # trailing comment\n"
            "2001:db8::1 www.example.com\n"
            "192.0.2.2\tother.example.com www.example.com\n"
            "not-an-address bad.example.com\n"
            "192.0.2.3\n"
            "\n",
            1_000_000_000,
        )

    def write(self, text: str, mtime: int) -> None:
        """Write the hosts file, with a given modification time."""
        with open(self.path, "w", encoding="utf-8") as hostsFile:
            hostsFile.write(text)
        os.utime(self.path, (mtime, mtime))

    def test_interface(self) -> None:
        """
        L{HostsResolver} provides L{IResolver}.
        """
        verifyObject(IResolver, HostsResolver(self.path, self.clock))

    def test_forward(self) -> None:
        """
        A name resolves to every address listed for it, IPv4 first, in
        any case and with a root dot; aliases resolve too.
        """
        resolver = HostsResolver(self.path, self.clock)
        expected = [V4("192.0.2.1"), V4("192.0.2.2"), V6("2001:db8::1")]
        for name in ["www.example.com", "WWW.Example.COM", "www.example.com."]:
            self.assertEqual(self.successResultOf(resolver.resolve(name)), expected)
        self.assertEqual(self.successResultOf(resolver.resolve("www")), [V4("192.0.2.1")])
        self.assertEqual(
            self.successResultOf(resolver.resolve("other.example.com")), [V4("192.0.2.2")]
        )

    def test_reverse(self) -> None:
        """
        An address reverses to the first name on its line.
        """
        resolver = HostsResolver(self.path, self.clock)
        self.assertEqual(self.successResultOf(resolver.reverse(V4("192.0.2.1"))), "www.example.com")
        self.assertEqual(
            self.successResultOf(resolver.reverse(V4("192.0.2.2"))), "other.example.com"
        )
        self.assertEqual(
            self.successResultOf(resolver.reverse(V6("2001:db8::1"))), "www.example.com"
        )

    def test_unknown(self) -> None:
        """
        Unknown names and addresses fail with L{ResolveFailed}; lines
        without a valid address or without a name give nothing.
        """
        resolver = HostsResolver(self.path, self.clock)
        for name in ["missing.example.com", "bad.example.com", "example.com"]:
            self.failureResultOf(resolver.resolve(name), ResolveFailed)
        for address in [V4("192.0.2.3"), V4("192.0.2.4"), V6("2001:db8::2")]:
            self.failureResultOf(resolver.reverse(address), ResolveFailed)

    def test_literal(self) -> None:
        """
        An address literal is its own answer.
        """
        resolver = HostsResolver(self.path, self.clock)
        self.assertEqual(
            self.successResultOf(resolver.resolve("198.51.100.1")), [V4("198.51.100.1")]
        )

    def test_reloadOnChange(self) -> None:
        """
        When the file changes, the new contents answer once the check
        interval has passed.
        """
        resolver = HostsResolver(self.path, self.clock, checkInterval=1.0)
        self.write("192.0.2.50 www.example.com\n192.0.2.51 new.example.com\n", 1_000_000_100)
        self.assertEqual(len(self.successResultOf(resolver.resolve("www.example.com"))), 3)
        self.clock.advance(1.0)
        self.assertEqual(
            self.successResultOf(resolver.resolve("www.example.com")), [V4("192.0.2.50")]
        )
        self.assertEqual(
            self.successResultOf(resolver.resolve("new.example.com")), [V4("192.0.2.51")]
        )
        self.assertEqual(
            self.successResultOf(resolver.reverse(V4("192.0.2.51"))), "new.example.com"
        )
        self.failureResultOf(resolver.resolve("other.example.com"), ResolveFailed)

    def test_noReloadWithoutChange(self) -> None:
        """
        The file is read again only when its modification time, size or
        inode changed.
        """
        resolver = HostsResolver(self.path, self.clock, checkInterval=0.0)
        reads: list[str] = []
        original = open

        def countingOpen(*args: Any, **kwargs: Any) -> Any:
            reads.append(args[0])
            return original(*args, **kwargs)

        import builtins

        self.patch(builtins, "open", countingOpen)
        for _ in range(3):
            self.successResultOf(resolver.resolve("www.example.com"))
        self.assertEqual(reads, [])
        self.write("192.0.2.60 www.example.com\n", 1_000_000_200)
        self.assertEqual(
            self.successResultOf(resolver.resolve("www.example.com")), [V4("192.0.2.60")]
        )
        self.assertEqual(reads, [self.path, self.path])  # our write, then the reread

    def test_missingFile(self) -> None:
        """
        A missing file answers nothing, and is read once it appears.
        """
        path = self.mktemp()
        resolver = HostsResolver(path, self.clock, checkInterval=1.0)
        self.failureResultOf(resolver.resolve("www.example.com"), ResolveFailed)
        with open(path, "w", encoding="utf-8") as hostsFile:
            hostsFile.write("192.0.2.70 www.example.com\n")
        self.clock.advance(1.0)
        self.assertEqual(
            self.successResultOf(resolver.resolve("www.example.com")), [V4("192.0.2.70")]
        )


class CachingResolverTests(SynchronousTestCase):
    """L{CachingResolver} keeps answers for their TTL."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = FakeResolver(
            {
                "www.example.com": [V4("192.0.2.1")],
                "other.example.com": [V4("192.0.2.2")],
                "third.example.com": [V4("192.0.2.3")],
            },
            {V4("192.0.2.1"): "www.example.com"},
        )
        self.cache = CachingResolver(self.backend, self.clock, ttl=10.0, maxEntries=2)

    def test_interface(self) -> None:
        """
        L{CachingResolver} provides L{IResolver}.
        """
        verifyObject(IResolver, self.cache)

    def test_answerKeptForTtl(self) -> None:
        """
        A second lookup within the TTL is answered from the cache (in any
        case); after the TTL the resolver is asked again.
        """
        self.assertEqual(
            self.successResultOf(self.cache.resolve("www.example.com")), [V4("192.0.2.1")]
        )
        self.clock.advance(9.9)
        self.assertEqual(
            self.successResultOf(self.cache.resolve("WWW.example.com")), [V4("192.0.2.1")]
        )
        self.assertEqual(self.backend.asked, ["www.example.com"])
        self.clock.advance(0.1)
        self.successResultOf(self.cache.resolve("www.example.com"))
        self.assertEqual(self.backend.asked, ["www.example.com", "www.example.com"])

    def test_reverseCached(self) -> None:
        """
        Reverse answers are kept too.
        """
        for _ in range(2):
            self.assertEqual(
                self.successResultOf(self.cache.reverse(V4("192.0.2.1"))), "www.example.com"
            )
        self.assertEqual(self.backend.asked, [V4("192.0.2.1")])

    def test_failuresNotKept(self) -> None:
        """
        A failure is passed on and not kept: the next lookup asks again.
        """
        for _ in range(2):
            self.failureResultOf(self.cache.resolve("missing.example.com"), ResolveFailed)
        self.assertEqual(self.backend.asked, ["missing.example.com"] * 2)

    def test_leastRecentlyUsedEvicted(self) -> None:
        """
        Beyond C{maxEntries}, the least recently used answer goes.
        """
        self.cache.resolve("www.example.com")
        self.cache.resolve("other.example.com")
        self.cache.resolve("www.example.com")  # now the most recent
        self.cache.resolve("third.example.com")
        self.assertEqual(len(self.cache), 2)
        del self.backend.asked[:]
        self.cache.resolve("www.example.com")
        self.cache.resolve("third.example.com")
        self.assertEqual(self.backend.asked, [])
        self.cache.resolve("other.example.com")
        self.assertEqual(self.backend.asked, ["other.example.com"])

    def test_concurrentLookupsShareOneQuery(self) -> None:
        """
        Lookups of a name already being looked up wait for the same answer.
        """
        pending: Deferred = Deferred()
        self.backend.pending = pending
        first = self.cache.resolve("www.example.com")
        second = self.cache.resolve("www.example.com")
        self.assertNoResult(first)
        self.assertEqual(self.backend.asked, ["www.example.com"])
        pending.callback([V4("192.0.2.1")])
        self.assertEqual(self.successResultOf(first), [V4("192.0.2.1")])
        self.assertEqual(self.successResultOf(second), [V4("192.0.2.1")])

    def test_concurrentFailureReachesEveryWaiter(self) -> None:
        """
        A failure of a shared query reaches every waiter.
        """
        pending: Deferred = Deferred()
        self.backend.pending = pending
        first = self.cache.resolve("www.example.com")
        second = self.cache.resolve("www.example.com")
        pending.errback(ResolveFailed("no"))
        self.failureResultOf(first, ResolveFailed)
        self.failureResultOf(second, ResolveFailed)

    def test_answersAreCopies(self) -> None:
        """
        Changing an answer does not change the cache.
        """
        self.successResultOf(self.cache.resolve("www.example.com")).append(V4("203.0.113.1"))
        self.assertEqual(
            self.successResultOf(self.cache.resolve("www.example.com")), [V4("192.0.2.1")]
        )

    def test_zeroTtlKeepsNothing(self) -> None:
        """
        With a TTL of 0, every lookup asks the resolver.
        """
        cache = CachingResolver(self.backend, self.clock, ttl=0)
        cache.resolve("www.example.com")
        cache.resolve("www.example.com")
        self.assertEqual(self.backend.asked, ["www.example.com"] * 2)
        self.assertEqual(len(cache), 0)

    def test_badParameters(self) -> None:
        """
        A negative TTL or a size below 1 is refused.
        """
        self.assertRaises(ValueError, CachingResolver, self.backend, self.clock, ttl=-1)
        self.assertRaises(ValueError, CachingResolver, self.backend, self.clock, maxEntries=0)


class NameResolverAdapterTests(SynchronousTestCase):
    """L{NameResolverAdapter} is an C{IHostnameResolver} on an L{IResolver}."""

    def setUp(self) -> None:
        self.backend = FakeResolver(
            {"www.example.com": [V4("192.0.2.1"), V4("192.0.2.2"), V6("2001:db8::1")]}
        )

    def test_interface(self) -> None:
        """
        The adapter provides C{IHostnameResolver}, and its resolutions
        C{IHostResolution}.
        """
        adapter = NameResolverAdapter(self.backend)
        verifyObject(IHostnameResolver, adapter)
        receiver = RecordingReceiver()
        resolution = adapter.resolveHostName(receiver, "www.example.com")
        self.assertIsInstance(resolution, AdaptedResolution)
        self.assertEqual(resolution.name, "www.example.com")

    def test_addresses(self) -> None:
        """
        Each address becomes a Twisted address with the port and transport
        asked for, between C{resolutionBegan} and C{resolutionComplete}.
        """
        receiver = RecordingReceiver()
        resolution = NameResolverAdapter(self.backend).resolveHostName(
            receiver, "www.example.com", 443
        )
        self.assertEqual(
            receiver.events,
            [
                ("began", resolution),
                ("address", taddress.IPv4Address("TCP", "192.0.2.1", 443)),
                ("address", taddress.IPv4Address("TCP", "192.0.2.2", 443)),
                ("address", taddress.IPv6Address("TCP", "2001:db8::1", 443)),
                ("complete", None),
            ],
        )
        self.assertIsNone(resolution.failure)
        self.assertEqual(self.backend.asked, ["www.example.com"])

    def test_addressTypesAndTransport(self) -> None:
        """
        Only the address types asked for are delivered, with the transport
        semantics asked for.
        """
        receiver = RecordingReceiver()
        NameResolverAdapter(self.backend).resolveHostName(
            receiver, "www.example.com", 53, [taddress.IPv6Address], "UDP"
        )
        self.assertEqual(receiver.addresses, [taddress.IPv6Address("UDP", "2001:db8::1", 53)])

    def test_filterDropsAddresses(self) -> None:
        """
        Addresses the filter refuses are not delivered.
        """
        receiver = RecordingReceiver()
        adapter = NameResolverAdapter(self.backend, addressFilter=lambda a: a != V4("192.0.2.1"))
        resolution = adapter.resolveHostName(receiver, "www.example.com", 80)
        self.assertEqual(
            receiver.addresses,
            [
                taddress.IPv4Address("TCP", "192.0.2.2", 80),
                taddress.IPv6Address("TCP", "2001:db8::1", 80),
            ],
        )
        self.assertIsNone(resolution.failure)

    def test_everyAddressRefused(self) -> None:
        """
        When the filter refuses every address, nothing is delivered and the
        resolution's failure is L{NotAllowed}.
        """
        receiver = RecordingReceiver()
        resolution = NameResolverAdapter(
            self.backend, addressFilter=lambda a: False
        ).resolveHostName(receiver, "www.example.com", 80)
        self.assertEqual(receiver.addresses, [])
        self.assertEqual(receiver.events[-1], ("complete", None))
        self.assertTrue(resolution.failure.check(NotAllowed))

    def test_filterRaising(self) -> None:
        """
        A filter that raises refuses the address (and the error is logged).
        """

        def broken(address: Any) -> bool:
            raise RuntimeError("broken filter")

        receiver = RecordingReceiver()
        resolution = NameResolverAdapter(self.backend, addressFilter=broken).resolveHostName(
            receiver, "www.example.com"
        )
        self.assertEqual(receiver.addresses, [])
        self.assertTrue(resolution.failure.check(NotAllowed))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)

    def test_resolverFailure(self) -> None:
        """
        When the resolver fails, nothing is delivered, the resolution is
        complete and its failure is the resolver's.
        """
        receiver = RecordingReceiver()
        resolution = NameResolverAdapter(self.backend).resolveHostName(
            receiver, "missing.example.com"
        )
        self.assertEqual([kind for kind, _ in receiver.events], ["began", "complete"])
        self.assertTrue(resolution.failure.check(ResolveFailed))

    def test_asynchronousAndCancel(self) -> None:
        """
        Addresses arrive when the resolver answers; cancelling the
        resolution cancels the lookup and completes it with no address.
        """
        self.backend.pending = Deferred()
        receiver = RecordingReceiver()
        resolution = NameResolverAdapter(self.backend).resolveHostName(receiver, "www.example.com")
        self.assertEqual([kind for kind, _ in receiver.events], ["began"])
        resolution.cancel()
        self.assertEqual([kind for kind, _ in receiver.events], ["began", "complete"])
        self.assertTrue(resolution.failure.check(CancelledError))


class ResolverFromSpecTests(SynchronousTestCase):
    """L{resolverFromSpec} parses C{--resolver}."""

    def test_system(self) -> None:
        """
        C{system} is the system resolver.
        """
        self.assertIsInstance(resolverFromSpec(reactor, "system"), SystemResolver)
        self.assertIsInstance(resolverFromSpec(reactor, "System"), SystemResolver)

    def test_dns(self) -> None:
        """
        C{dns:HOST[:PORT]} asks that server, port 53 by default; an IPv6
        host is in brackets (or bare, without a port).
        """
        cases = {
            "dns:127.0.0.1": ("127.0.0.1", 53),
            "dns:127.0.0.1:5353": ("127.0.0.1", 5353),
            "dns:[::1]:5353": ("::1", 5353),
            "dns:[::1]": ("::1", 53),
            "dns:::1": ("::1", 53),
            "dns:2001:db8::53": ("2001:db8::53", 53),
        }
        for spec, expected in cases.items():
            resolver = resolverFromSpec(reactor, spec)
            self.assertIsInstance(resolver, DnsResolver, spec)
            self.assertEqual(resolver.server, expected, spec)

    def test_hosts(self) -> None:
        """
        C{hosts:PATH} reads that file.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as hostsFile:
            hostsFile.write("192.0.2.1 www.example.com\n")
        resolver = resolverFromSpec(reactor, "hosts:" + path)
        self.assertIsInstance(resolver, HostsResolver)
        self.assertEqual(
            self.successResultOf(resolver.resolve("www.example.com")), [V4("192.0.2.1")]
        )

    def test_errors(self) -> None:
        """
        Bad specs raise L{ValueError} with a message naming the problem.
        """
        cases = {
            "": "unknown resolver",
            "bogus": "unknown resolver",
            "system:x": "no argument",
            "dns": "needs the DNS server",
            "dns:": "needs the DNS server",
            "dns:ns.example.com": "must be an IP address",
            "dns:127.0.0.1:0": "not a number from 1 to 65535",
            "dns:127.0.0.1:65536": "not a number from 1 to 65535",
            "dns:127.0.0.1:x": "not a number from 1 to 65535",
            "dns:[::1": "no closing bracket",
            "dns:[::1]53": "expected :PORT",
            "dns:[]:53": "needs the DNS server",
            "hosts:": "needs the hosts file",
            "hosts:" + self.mktemp(): "no such file",
        }
        for spec, message in cases.items():
            error = self.assertRaises(ValueError, resolverFromSpec, reactor, spec)
            self.assertIn(message, str(error), spec)
        error = self.assertRaises(ValueError, resolverFromSpec, reactor, "bogus")
        for kind in ["system", "dns:HOST[:PORT]", "hosts:PATH"]:
            self.assertIn(kind, str(error))
