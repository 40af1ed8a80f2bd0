"""
Tests for L{socksd.upstream.direct} and L{socksd.upstream.spec}:
L{DirectUpstream}, its endpoints and L{upstreamFromSpec}.

The memory-reactor tests check which connections would be made; the
loopback tests make real ones, only to 127.0.0.1 and ::1.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IHostnameResolver,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from socksd.address import Destination
from socksd.errors import (
    NotAllowed,
    OnionInvalidAddress,
    OnionServiceError,
    ResolveFailed,
)
from socksd.interfaces import ConnectContext, IResolver, IUpstreamFactory
from socksd.onion import onionAddressFromKey
from socksd.replies import ReplyProfile, Socks5Reply, TorExtendedReply, replyFor
from socksd.resolve import HostsResolver, NameResolverAdapter
from socksd.upstream import (
    UPSTREAM_KINDS,
    DirectUpstream,
    FailingEndpoint,
    ResolvingHostnameEndpoint,
    upstreamFromSpec,
)
from socksd.upstream.direct import _NameResolverReactor

V4 = IPv4Address
V6 = IPv6Address


@implementer(IResolver)
class FakeResolver:
    """A resolver answering from a dictionary, recording what it is asked."""

    def __init__(self, names: dict[str, list] | None = None) -> None:
        self.names = names or {}
        self.asked: list[str] = []
        self.pending: Deferred | None = None

    def resolve(self, name: str) -> Deferred:
        self.asked.append(name)
        if self.pending is not None:
            return self.pending
        if name in self.names:
            return succeed(list(self.names[name]))
        return fail(ResolveFailed(f"{name} unknown"))

    def reverse(self, address: Any) -> Deferred:
        return fail(ResolveFailed(f"{address} unknown"))


class DirectUpstreamMemoryTests(SynchronousTestCase):
    """L{DirectUpstream} on a memory reactor: which connections it makes."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.resolver = FakeResolver(
            {
                "www.example.com": [V4("192.0.2.1"), V4("192.0.2.2"), V6("2001:db8::1")],
                "v6.example.com": [V6("2001:db8::2")],
            }
        )
        self.upstream = DirectUpstream(self.reactor, self.resolver, connectTimeout=7.0)
        self.factory = Factory.forProtocol(Protocol)

    def test_interface(self) -> None:
        """
        L{DirectUpstream} provides L{IUpstreamFactory}, and its endpoints
        C{IStreamClientEndpoint}.
        """
        verifyObject(IUpstreamFactory, self.upstream)
        for host in [V4("192.0.2.1"), V6("2001:db8::1"), "www.example.com", "x.onion"]:
            verifyObject(
                IStreamClientEndpoint,
                self.upstream.endpointFor(Destination(host, 80), ConnectContext()),
            )

    def test_ipv4Literal(self) -> None:
        """
        An IPv4 destination gets a TCP4 endpoint with the connect timeout;
        the resolver is not asked.
        """
        endpoint = self.upstream.endpointFor(Destination(V4("192.0.2.1"), 80), ConnectContext())
        self.assertIsInstance(endpoint, TCP4ClientEndpoint)
        endpoint.connect(self.factory)
        [(host, port, _, timeout, bindAddress)] = self.reactor.tcpClients
        self.assertEqual((host, port, timeout, bindAddress), ("192.0.2.1", 80, 7.0, None))
        self.assertEqual(self.resolver.asked, [])

    def test_ipv6Literal(self) -> None:
        """
        An IPv6 destination gets a TCP6 endpoint.
        """
        endpoint = self.upstream.endpointFor(Destination(V6("2001:db8::1"), 443), ConnectContext())
        self.assertIsInstance(endpoint, TCP6ClientEndpoint)
        endpoint.connect(self.factory)
        self.assertEqual(self.reactor.tcpClients[0][:2], ("2001:db8::1", 443))

    def test_bindAddress(self) -> None:
        """
        The context's bind address wins over the factory's; without either
        the system chooses.
        """
        upstream = DirectUpstream(self.reactor, self.resolver, bindAddress=("192.0.2.100", 0))
        upstream.endpointFor(Destination(V4("192.0.2.1"), 80), ConnectContext()).connect(
            self.factory
        )
        upstream.endpointFor(
            Destination(V4("192.0.2.1"), 80), ConnectContext(bindAddress=("192.0.2.200", 5000))
        ).connect(self.factory)
        upstream.endpointFor(
            Destination("www.example.com", 80), ConnectContext(bindAddress=("192.0.2.201", 0))
        ).connect(self.factory)
        self.assertEqual(
            [client[4] for client in self.reactor.tcpClients],
            [("192.0.2.100", 0), ("192.0.2.200", 5000), ("192.0.2.201", 0)],
        )

    def test_nameResolvedByOurResolver(self) -> None:
        """
        A name is resolved by the upstream's resolver (not the reactor's),
        and its addresses are tried in order, Happy Eyeballs style.
        """
        self.reactor.installNameResolver(None)  # would raise if used
        endpoint = self.upstream.endpointFor(Destination("www.example.com", 80), ConnectContext())
        self.assertIsInstance(endpoint, ResolvingHostnameEndpoint)
        d = endpoint.connect(self.factory)
        self.assertEqual(self.resolver.asked, ["www.example.com"])
        self.assertEqual([c[:2] for c in self.reactor.tcpClients], [("192.0.2.1", 80)])
        self.assertEqual(self.reactor.tcpClients[0][3], 7.0)
        self.reactor.advance(0.3)
        self.reactor.advance(0.3)
        self.assertEqual(
            [c[:2] for c in self.reactor.tcpClients],
            [("192.0.2.1", 80), ("192.0.2.2", 80), ("2001:db8::1", 80)],
        )
        for connector, (_, _, factory, _, _) in zip(
            self.reactor.connectors, self.reactor.tcpClients
        ):
            factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        self.assertNoResult(d)
        self.reactor.advance(0.3)  # the attempt loop notices it has no more addresses
        self.failureResultOf(d, ConnectionRefusedError)

    def test_nameConnects(self) -> None:
        """
        When an attempt succeeds, C{connect} fires with the protocol.
        """
        d = self.upstream.endpointFor(Destination("v6.example.com", 22), ConnectContext()).connect(
            self.factory
        )
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("2001:db8::2", 22))
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        self.assertIsInstance(self.successResultOf(d), Protocol)

    def test_unresolvableName(self) -> None:
        """
        A name the resolver cannot resolve fails with the resolver's
        L{ResolveFailed}, which SOCKS5 reports as 04.
        """
        d = self.upstream.endpointFor(
            Destination("missing.example.com", 80), ConnectContext()
        ).connect(self.factory)
        failure = self.failureResultOf(d, ResolveFailed)
        self.assertEqual(replyFor(failure, ReplyProfile.SOCKS5), Socks5Reply.HOST_UNREACHABLE)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_filterOnLiteral(self) -> None:
        """
        A literal the address filter refuses fails with L{NotAllowed} (02)
        without a connection attempt.
        """
        upstream = DirectUpstream(
            self.reactor, self.resolver, addressFilter=lambda a: a != V4("192.0.2.1")
        )
        endpoint = upstream.endpointFor(Destination(V4("192.0.2.1"), 80), ConnectContext())
        self.assertIsInstance(endpoint, FailingEndpoint)
        failure = self.failureResultOf(endpoint.connect(self.factory), NotAllowed)
        self.assertEqual(replyFor(failure, ReplyProfile.SOCKS5), Socks5Reply.NOT_ALLOWED)
        upstream.endpointFor(Destination(V4("192.0.2.2"), 80), ConnectContext()).connect(
            self.factory
        )
        self.assertEqual([c[0] for c in self.reactor.tcpClients], ["192.0.2.2"])

    def test_filterOnResolvedAddresses(self) -> None:
        """
        Resolved addresses the filter refuses are not tried; when it refuses
        them all, C{connect} fails with L{NotAllowed}, not a lookup error.
        """
        upstream = DirectUpstream(
            self.reactor, self.resolver, addressFilter=lambda a: a.version == 6
        )
        upstream.endpointFor(Destination("www.example.com", 80), ConnectContext()).connect(
            self.factory
        )
        self.assertEqual([c[0] for c in self.reactor.tcpClients], ["2001:db8::1"])
        upstream = DirectUpstream(self.reactor, self.resolver, addressFilter=lambda a: False)
        d = upstream.endpointFor(Destination("www.example.com", 80), ConnectContext()).connect(
            self.factory
        )
        failure = self.failureResultOf(d, NotAllowed)
        self.assertEqual(replyFor(failure, ReplyProfile.SOCKS5), Socks5Reply.NOT_ALLOWED)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_cancelWhileResolving(self) -> None:
        """
        Cancelling C{connect} during the lookup cancels the lookup and fails
        with C{CancelledError}.
        """
        cancelled: list[Deferred] = []
        self.resolver.pending = Deferred(cancelled.append)
        d = self.upstream.endpointFor(Destination("www.example.com", 80), ConnectContext()).connect(
            self.factory
        )
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(cancelled, [self.resolver.pending])
        self.assertEqual(self.reactor.tcpClients, [])

    def test_cancelWhileConnecting(self) -> None:
        """
        Cancelling C{connect} during a connection attempt stops it and fails
        with C{CancelledError}.
        """
        d = self.upstream.endpointFor(Destination("v6.example.com", 80), ConnectContext()).connect(
            self.factory
        )
        [connector] = self.reactor.connectors
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(connector.stoppedConnecting)

    def test_validOnionName(self) -> None:
        """
        A valid onion name is never resolved: a direct upstream cannot reach
        it, and says so with an onion-service error.
        """
        name = onionAddressFromKey(bytes(32))
        d = self.upstream.endpointFor(Destination(name, 80), ConnectContext()).connect(self.factory)
        failure = self.failureResultOf(d, OnionServiceError)
        self.assertNotIsInstance(failure.value, OnionInvalidAddress)
        self.assertEqual(replyFor(failure, ReplyProfile.SOCKS5), Socks5Reply.HOST_UNREACHABLE)
        self.assertEqual(self.resolver.asked, [])

    def test_invalidOnionName(self) -> None:
        """
        An invalid onion name fails with L{OnionInvalidAddress}: F6 with
        Tor's extended errors.
        """
        d = self.upstream.endpointFor(
            Destination("www.notvalid.onion", 80), ConnectContext()
        ).connect(self.factory)
        failure = self.failureResultOf(d, OnionInvalidAddress)
        self.assertEqual(
            replyFor(failure, ReplyProfile.SOCKS5_EXTENDED), TorExtendedReply.ONION_INVALID_ADDRESS
        )
        self.assertEqual(self.resolver.asked, [])


class NameResolverReactorTests(SynchronousTestCase):
    """The reactor proxy C{HostnameEndpoint} is given."""

    def test_interfaces(self) -> None:
        """
        The proxy provides the real reactor's interfaces, and its name
        resolver is the one given; the real reactor's is unchanged.
        """
        real = MemoryReactorClock()
        original = real.nameResolver
        adapter = NameResolverAdapter(FakeResolver())
        proxy = _NameResolverReactor(real, adapter)
        for interface in [IReactorTCP, IReactorTime, IReactorPluggableNameResolver]:
            self.assertTrue(interface.providedBy(proxy), interface)
        self.assertIs(proxy.nameResolver, adapter)
        self.assertIs(real.nameResolver, original)
        self.assertEqual(proxy.seconds(), real.seconds())

    def test_oldStyleResolveUsesOurResolver(self) -> None:
        """
        The proxy's C{resolve} (the older API) asks our resolver too, and
        passes address literals through.
        """
        resolver = FakeResolver({"www.example.com": [V4("192.0.2.1")]})
        proxy = _NameResolverReactor(MemoryReactorClock(), NameResolverAdapter(resolver))
        self.assertEqual(self.successResultOf(proxy.resolve("www.example.com")), "192.0.2.1")
        self.assertEqual(self.successResultOf(proxy.resolve("192.0.2.5")), "192.0.2.5")
        self.assertEqual(resolver.asked, ["www.example.com"])

    def test_installNameResolver(self) -> None:
        """
        Installing a name resolver on the proxy leaves the real reactor's
        alone.
        """
        real = MemoryReactorClock()
        original = real.nameResolver
        first = NameResolverAdapter(FakeResolver())
        second = NameResolverAdapter(FakeResolver())
        proxy = _NameResolverReactor(real, first)
        self.assertIs(proxy.installNameResolver(second), first)
        self.assertIs(proxy.nameResolver, second)
        self.assertIs(real.nameResolver, original)

    def test_plainHostnameEndpoint(self) -> None:
        """
        Twisted's own C{HostnameEndpoint} on the proxy connects to the
        addresses of our resolver.
        """
        real = MemoryReactorClock()
        resolver = FakeResolver({"www.example.com": [V4("192.0.2.1")]})
        proxy = _NameResolverReactor(real, NameResolverAdapter(resolver))
        HostnameEndpoint(proxy, "www.example.com", 80).connect(Factory.forProtocol(Protocol))
        self.assertEqual(real.tcpClients[0][:2], ("192.0.2.1", 80))


class UpstreamFromSpecTests(SynchronousTestCase):
    """L{upstreamFromSpec} parses C{--upstream}."""

    def test_direct(self) -> None:
        """
        C{direct} builds a L{DirectUpstream} with the resolver and options
        given.
        """
        resolver = FakeResolver()
        filter = lambda a: True  # noqa: E731
        upstream = upstreamFromSpec(
            MemoryReactorClock(), "direct", resolver, connectTimeout=5.0, addressFilter=filter
        )
        self.assertIsInstance(upstream, DirectUpstream)
        self.assertIs(upstream.resolver, resolver)
        self.assertEqual(upstream.connectTimeout, 5.0)
        self.assertIs(upstream.addressFilter, filter)
        self.assertIsInstance(
            upstreamFromSpec(MemoryReactorClock(), "DIRECT", resolver), DirectUpstream
        )

    def test_unknown(self) -> None:
        """
        An unknown kind raises L{ValueError} naming the supported kinds.
        """
        for spec in ["", "bogus", "socks9:127.0.0.1:1080"]:
            error = self.assertRaises(
                ValueError, upstreamFromSpec, MemoryReactorClock(), spec, FakeResolver()
            )
            for kind in UPSTREAM_KINDS:
                self.assertIn(kind, str(error))

    def test_directTakesNoArgument(self) -> None:
        """
        C{direct:anything} is refused.
        """
        self.assertRaises(
            ValueError, upstreamFromSpec, MemoryReactorClock(), "direct:x", FakeResolver()
        )


class ServerProtocol(Protocol):
    """The loopback server's side: says hello and records its peer."""

    def connectionMade(self) -> None:
        self.factory.peers.append(self.transport.getPeer())
        self.factory.protocols.append(self)
        self.lost: Deferred = Deferred()
        self.transport.write(b"hello")

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)


class ClientProtocol(Protocol):
    """The client's side: waits for the greeting."""

    def connectionMade(self) -> None:
        self.greeted: Deferred = Deferred()
        self.lost: Deferred = Deferred()
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received == b"hello" and not self.greeted.called:
            self.greeted.callback(self.received)

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)


@implementer(IHostnameResolver)
class ExplodingNameResolver:
    """A name resolver that must not be used; it records every use."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def resolveHostName(
        self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"
    ):
        self.asked.append(hostName)
        raise AssertionError(f"the reactor's resolver was asked for {hostName}")


def freePort(family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1") -> int:
    """A port number nothing listens on (just now) on C{host}."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


TEST_NAME = "socksd-upstream-test.invalid"


class DirectUpstreamLoopbackTests(TestCase):
    """L{DirectUpstream} making real connections on loopback."""

    def setUp(self) -> None:
        self.serverFactory = Factory.forProtocol(ServerProtocol)
        self.serverFactory.peers = []
        self.serverFactory.protocols = []
        self.port = reactor.listenTCP(0, self.serverFactory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        hostsPath = self.mktemp()
        with open(hostsPath, "w", encoding="utf-8") as hostsFile:
            hostsFile.write(f"127.0.0.1 {TEST_NAME}\n")
        self.resolver = HostsResolver(hostsPath, reactor)
        # Any use of the reactor's own resolver fails the test.
        self.exploding = ExplodingNameResolver()
        original = reactor.installNameResolver(self.exploding)
        self.addCleanup(reactor.installNameResolver, original)
        self.upstream = DirectUpstream(reactor, self.resolver, connectTimeout=5.0)

    async def connectAndClose(self, endpoint: Any) -> tuple[ClientProtocol, Any]:
        """Connect, wait for the server's greeting, then close both sides."""
        client = await endpoint.connect(Factory.forProtocol(ClientProtocol))
        self.assertEqual(await client.greeted, b"hello")
        peer = client.transport.getPeer()
        local = client.transport.getHost()
        client.transport.loseConnection()
        await client.lost
        for server in self.serverFactory.protocols:
            await server.lost
        return peer, local

    async def test_ipv4Literal(self) -> None:
        """
        An IPv4 literal destination connects to that address.
        """
        endpoint = self.upstream.endpointFor(
            Destination(V4("127.0.0.1"), self.port.getHost().port), ConnectContext()
        )
        peer, local = await self.connectAndClose(endpoint)
        self.assertEqual((peer.host, peer.port), ("127.0.0.1", self.port.getHost().port))
        self.assertEqual(self.serverFactory.peers[0].port, local.port)

    async def test_ipv6Literal(self) -> None:
        """
        An IPv6 literal destination connects to that address.
        """
        try:
            port6 = reactor.listenTCP(0, self.serverFactory, interface="::1")
        except Exception as error:
            raise self.skipTest(f"no IPv6 loopback: {error}")
        self.addCleanup(port6.stopListening)
        endpoint = self.upstream.endpointFor(
            Destination(V6("::1"), port6.getHost().port), ConnectContext()
        )
        peer, _ = await self.connectAndClose(endpoint)
        self.assertEqual((peer.host, peer.port), ("::1", port6.getHost().port))

    async def test_nameFromHostsFile(self) -> None:
        """
        A name only the hosts file knows connects, and the reactor's own
        resolver is never asked.
        """
        endpoint = self.upstream.endpointFor(
            Destination(TEST_NAME, self.port.getHost().port), ConnectContext()
        )
        peer, _ = await self.connectAndClose(endpoint)
        self.assertEqual(peer.host, "127.0.0.1")
        self.assertEqual(self.exploding.asked, [])

    async def test_bindAddress(self) -> None:
        """
        The context's bind address is where the connection leaves from.
        """
        local = freePort()
        context = ConnectContext(bindAddress=("127.0.0.1", local))
        endpoint = self.upstream.endpointFor(
            Destination(V4("127.0.0.1"), self.port.getHost().port), context
        )
        _, host = await self.connectAndClose(endpoint)
        self.assertEqual(host.port, local)
        self.assertEqual(self.serverFactory.peers[0].port, local)

    async def test_refused(self) -> None:
        """
        A port nobody listens on fails with C{ConnectionRefusedError}, which
        SOCKS5 reports as 05, by literal and by name.
        """
        closed = freePort()
        for host in [V4("127.0.0.1"), TEST_NAME]:
            endpoint = self.upstream.endpointFor(Destination(host, closed), ConnectContext())
            error = await self.assertFailure(
                endpoint.connect(Factory.forProtocol(ClientProtocol)), ConnectionRefusedError
            )
            self.assertEqual(replyFor(error, ReplyProfile.SOCKS5), Socks5Reply.CONNECTION_REFUSED)

    async def test_filterRefusesLoopback(self) -> None:
        """
        With a filter refusing 127.0.0.1, neither the literal nor a name
        resolving to it connects: both fail with L{NotAllowed} (02).
        """
        upstream = DirectUpstream(
            reactor, self.resolver, addressFilter=lambda a: a != V4("127.0.0.1")
        )
        for host in [V4("127.0.0.1"), TEST_NAME]:
            endpoint = upstream.endpointFor(
                Destination(host, self.port.getHost().port), ConnectContext()
            )
            error = await self.assertFailure(
                endpoint.connect(Factory.forProtocol(ClientProtocol)), NotAllowed
            )
            self.assertEqual(replyFor(error, ReplyProfile.SOCKS5), Socks5Reply.NOT_ALLOWED)
        self.assertEqual(self.serverFactory.peers, [])

    async def test_unresolvable(self) -> None:
        """
        A name nobody knows fails, and SOCKS5 reports it as 04.
        """
        endpoint = self.upstream.endpointFor(
            Destination("unknown.invalid", self.port.getHost().port), ConnectContext()
        )
        error = await self.assertFailure(
            endpoint.connect(Factory.forProtocol(ClientProtocol)), ResolveFailed
        )
        self.assertEqual(replyFor(error, ReplyProfile.SOCKS5), Socks5Reply.HOST_UNREACHABLE)
        self.assertEqual(self.exploding.asked, [])


class OverlongNameTests(TestCase):
    """
    A SOCKS5 domain that is not a valid host name fails as unresolvable.
    """

    def test_overlongName(self) -> None:
        """
        A 255-byte name (valid on the SOCKS5 wire, too long for DNS) gives
        L{ResolveFailed}, which SOCKS5 reports as 04, not 01.
        """
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol

        from socksd.address import Destination
        from socksd.errors import ResolveFailed as Unresolved
        from socksd.interfaces import ConnectContext
        from socksd.replies import ReplyProfile, Socks5Reply, replyFor
        from socksd.resolve import SystemResolver
        from socksd.upstream import DirectUpstream

        name = ".".join(["a" * 63] * 4)[:255]
        upstream = DirectUpstream(reactor, SystemResolver(reactor))
        endpoint = upstream.endpointFor(Destination(name, 80), ConnectContext())
        d = endpoint.connect(Factory.forProtocol(Protocol))

        def check(failure):
            failure.trap(Unresolved)
            self.assertEqual(
                replyFor(failure, ReplyProfile.SOCKS5), Socks5Reply.HOST_UNREACHABLE
            )

        return d.addCallbacks(lambda _: self.fail("connected"), check)
