r"""
Tests for L{socksd.upstream.chain} and L{socksd.upstream.spec}: route
matches and rules, failover, the chaining upstream, and on loopback: a
client through socksd through socksd to an echo server, failover past a
closed port, route rules, and (interop) chaining through microsocks.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from twisted.internet.interfaces import IStreamClientEndpoint

from socksd import errors as E
from socksd.address import Destination
from socksd.client import ProxyDisconnected, SOCKS5ClientEndpoint
from socksd.interfaces import ConnectContext
from socksd.isolation import isolationCredentials
from socksd.server import ServerConfig, SocksServerFactory
from socksd.tap import Options
from socksd.testing import EchoProtocol, FakeResolver, MemoryUpstream
from socksd.test.interop import InteropTestCase, requireTool
from socksd.upstream import (
    ChainUpstream,
    DirectUpstream,
    FailoverUpstream,
    Route,
    RoutingUpstream,
    isProxyFailure,
    parseMatch,
    splitUpstreams,
    upstreamFromOptions,
    upstreamFromSpec,
)

#: The longest any one loopback wait may take.
WAIT = 20.0
#: The configuration of the loopback servers: these tests are about
#: chaining, so they use the plain relay (splice has its own tests).
CONFIG = ServerConfig(splice=False)
#: What the loopback round trips send.
PAYLOAD = b"through the chain" * 1000


def dest(text: str, port: int = 80) -> Destination:
    """A destination from a host text."""
    from socksd.address import parseHost

    return Destination(parseHost(text), port)


class MatchTests(SynchronousTestCase):
    """
    Route matches: names, domains, networks, ports, everything.
    """

    def test_domainSuffix(self) -> None:
        """
        C{.onion} matches onion names and the bare suffix, any case, and
        no address literal.
        """
        match = parseMatch(".onion")
        self.assertTrue(match(dest("abc.onion")))
        self.assertTrue(match(dest("x.y.ONION")))
        self.assertTrue(match(dest("onion")))
        self.assertFalse(match(dest("notonion")))
        self.assertFalse(match(dest("onion.example.com")))
        self.assertFalse(match(dest("192.0.2.1")))

    def test_exactName(self) -> None:
        """
        A name without a leading dot matches that name only.
        """
        match = parseMatch("example.com")
        self.assertTrue(match(dest("example.com")))
        self.assertTrue(match(dest("Example.COM.")))
        self.assertFalse(match(dest("www.example.com")))

    def test_network(self) -> None:
        """
        A CIDR or a single address matches literals in it, never names.
        """
        match = parseMatch("10.0.0.0/8")
        self.assertTrue(match(dest("10.1.2.3")))
        self.assertFalse(match(dest("192.0.2.1")))
        self.assertFalse(match(dest("10.example")))
        self.assertTrue(parseMatch("192.0.2.7")(dest("192.0.2.7")))
        six = parseMatch("2001:db8::/32")
        self.assertTrue(six(dest("2001:db8::1")))
        self.assertFalse(six(dest("2001:db9::1")))

    def test_port(self) -> None:
        """
        C{:PORT} restricts a match to one port; IPv6 networks take
        brackets then.
        """
        self.assertTrue(parseMatch("*:443")(dest("example.com", 443)))
        self.assertFalse(parseMatch("*:443")(dest("example.com", 80)))
        self.assertTrue(parseMatch(".example.com:25")(dest("mx.example.com", 25)))
        bracketed = parseMatch("[2001:db8::/32]:443")
        self.assertTrue(bracketed(dest("2001:db8::1", 443)))
        self.assertFalse(bracketed(dest("2001:db8::1", 80)))

    def test_bad(self) -> None:
        """
        Empty matches, bad networks and bad ports are ValueErrors.
        """
        for text in ["", ".", "10.0.0.0/33", "*:x", "*:70000", "300.1.1.1"]:
            self.assertRaises(ValueError, parseMatch, text)


class RoutingTests(SynchronousTestCase):
    """
    The first matching rule picks the upstream; the default takes the rest.
    """

    def test_firstMatchWins(self) -> None:
        """
        Rules are tried in order; no match goes to the default, and the
        chosen upstream gets the destination and context.
        """
        onion, local, default = MemoryUpstream(), MemoryUpstream(), MemoryUpstream()
        routing = RoutingUpstream(
            [
                Route(".onion", onion),
                Route("10.0.0.0/8", local),
                Route("*.onion", default),
            ],
            default,
        )
        context = ConnectContext(isolationKey=("k",))
        routing.endpointFor(dest("x.onion"), context)
        routing.endpointFor(dest("10.0.0.1"), context)
        routing.endpointFor(dest("example.com"), context)
        self.assertEqual(onion.requests, [(dest("x.onion"), context)])
        self.assertEqual(local.destinations, [dest("10.0.0.1")])
        self.assertEqual(default.destinations, [dest("example.com")])

    def test_fromOptions(self) -> None:
        """
        C{--route MATCH=direct} and C{MATCH=default} build rules in order,
        the default being the C{--upstream} list.
        """
        clock = MemoryReactorClock()
        upstream = upstreamFromOptions(
            clock,
            [r"socks5:proxy=tcp\:127.0.0.1\:9050"],
            [
                "10.0.0.0/8=direct",
                ".onion=default",
                "*:25=socks4a:proxy=tcp\\:127.0.0.1\\:1081",
            ],
            FakeResolver({}),
        )
        self.assertIsInstance(upstream, RoutingUpstream)
        # A lone proxy still goes in a FailoverUpstream, for its back-off.
        self.assertIsInstance(upstream.default, FailoverUpstream)
        self.assertIsInstance(upstream.default.upstreams[0], ChainUpstream)
        self.assertIsInstance(upstream.upstreamFor(dest("10.9.9.9")), DirectUpstream)
        self.assertIs(upstream.upstreamFor(dest("a.onion")), upstream.default)
        self.assertEqual(
            upstream.upstreamFor(dest("mail.example", 25)).upstreams[0].description,
            r"socks4a:proxy=tcp\:127.0.0.1\:1081",
        )

    def test_badRoute(self) -> None:
        """
        A rule without C{=}, or with a bad upstream, is a ValueError.
        """
        clock = MemoryReactorClock()
        for rule in ["10.0.0.0/8", "10.0.0.0/8=", ".x=nonsense:1"]:
            self.assertRaises(
                ValueError, upstreamFromOptions, clock, [], [rule], FakeResolver({})
            )


class SpecTests(SynchronousTestCase):
    """
    C{--upstream} texts: kinds, comma lists.
    """

    def test_split(self) -> None:
        """
        Commas split before a description's kind only.
        """
        self.assertEqual(
            splitUpstreams(r"socks5:proxy=tcp\:a\:1, socks4a:userId=a,b,direct"),
            [r"socks5:proxy=tcp\:a\:1", "socks4a:userId=a,b", "direct"],
        )

    def test_kinds(self) -> None:
        """
        C{upstreamFromSpec} knows C{socks5:} and C{socks4a:} (chaining).
        """
        clock = MemoryReactorClock()
        for spec in [r"socks5:proxy=tcp\:127.0.0.1\:9050", "socks4a:", "socks5"]:
            self.assertIsInstance(
                upstreamFromSpec(clock, spec, FakeResolver({})), ChainUpstream
            )

    def test_destinationRefused(self) -> None:
        """
        A chaining description naming a destination, or a bad parameter,
        is a ValueError.
        """
        clock = MemoryReactorClock()
        for spec in ["socks5:example.com:80", "socks5:host=a", "socks5:bogus=1"]:
            self.assertRaises(ValueError, ChainUpstream, clock, spec)

    def test_failoverList(self) -> None:
        """
        Repeated C{--upstream}s and comma lists become one failover, in order.
        """
        clock = MemoryReactorClock()
        upstream = upstreamFromOptions(
            clock,
            [
                r"socks5:proxy=tcp\:127.0.0.1\:1,socks5:proxy=tcp\:127.0.0.1\:2",
                "direct",
            ],
            [],
            FakeResolver({}),
        )
        self.assertIsInstance(upstream, FailoverUpstream)
        self.assertEqual(len(upstream.upstreams), 3)
        self.assertIsInstance(upstream.upstreams[2], DirectUpstream)

    def test_tapOptions(self) -> None:
        """
        C{--upstream} (repeatable), C{--route} and C{--http-connect} parse;
        a bad route is a usage error.
        """
        options = Options()
        options.parseOptions(
            [
                "--upstream",
                r"socks5:proxy=tcp\:127.0.0.1\:9050",
                "--upstream",
                "direct",
                "--route",
                "10.0.0.0/8=direct",
                "--http-connect",
            ]
        )
        self.assertEqual(
            options["upstreams"], [r"socks5:proxy=tcp\:127.0.0.1\:9050", "direct"]
        )
        self.assertEqual(options["routes"], ["10.0.0.0/8=direct"])
        self.assertTrue(options["http-connect"])
        self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--route", "nonsense"]
        )
        self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--upstream", "socks9:x"]
        )


class MakeServiceTests(SynchronousTestCase):
    """
    C{makeService} wires C{--upstream}, C{--route} and C{--http-connect}
    into the factory.
    """

    def test_wired(self) -> None:
        """
        The factory's upstream routes as the options say, failing over
        between the C{--upstream}s, and HTTP CONNECT is served.
        """
        from socksd.server.factory import HTTP
        from socksd.tap import makeService

        options = Options()
        options.parseOptions(
            [
                "--upstream",
                r"socks5:proxy=tcp\:127.0.0.1\:9050",
                "--upstream",
                "direct",
                "--route",
                ".lan=direct",
                "--http-connect",
            ]
        )
        [listener] = [
            child for child in makeService(options) if hasattr(child, "factory")
        ]
        factory = listener.factory
        self.assertTrue(factory.config.httpConnect)
        self.assertIs(factory.handlers[ord("C")], HTTP)
        self.assertTrue(factory.handshakeSettings.httpConnect)
        upstream = factory.upstream
        self.assertIsInstance(upstream, RoutingUpstream)
        self.assertIsInstance(upstream.upstreamFor(dest("nas.lan")), DirectUpstream)
        self.assertIsInstance(upstream.default, FailoverUpstream)
        self.assertIsInstance(upstream.default.upstreams[0], ChainUpstream)


class IsolationTests(SynchronousTestCase):
    """
    The isolation key and proposal 229 pairs travel to a SOCKS5 upstream.
    """

    def test_credentials(self) -> None:
        """
        Equal keys give equal credentials, different keys different ones,
        no key none; the key's text never appears in them.
        """
        a = isolationCredentials((b"alice", b"secret"))
        self.assertEqual(a, isolationCredentials((b"alice", b"secret")))
        self.assertNotEqual(a, isolationCredentials((b"bob", b"secret")))
        self.assertIsNone(isolationCredentials(None))
        self.assertNotIn(b"secret", a[0] + a[1])

    def test_endpointCarriesKey(self) -> None:
        """
        A SOCKS5 chain without explicit credentials builds an endpoint with
        the key's credentials and the pairs; with explicit ones, it keeps them.
        """
        clock = MemoryReactorClock()
        chain = ChainUpstream(clock, r"socks5:proxy=tcp\:127.0.0.1\:9050")
        context = ConnectContext(isolationKey=(b"u", b"p"), pairs={b"k": b"v"})
        endpoint = chain.endpointFor(dest("example.com"), context)
        self.assertIsInstance(endpoint, SOCKS5ClientEndpoint)
        username, password = isolationCredentials((b"u", b"p"))
        self.assertEqual(endpoint._options.usernamePassword.username, username)
        self.assertIsNotNone(endpoint._options.extended)
        explicit = ChainUpstream(clock, r"socks5:proxy=tcp\:127.0.0.1\:9050:user=me")
        endpoint = explicit.endpointFor(dest("example.com"), context)
        self.assertEqual(endpoint._options.usernamePassword.username, b"me")

    def test_addressFilter(self) -> None:
        """
        An address literal the filter refuses fails with NotAllowed.
        """
        chain = ChainUpstream(
            MemoryReactorClock(), "socks5:", addressFilter=lambda address: False
        )
        endpoint = chain.endpointFor(dest("192.0.2.1"), ConnectContext())
        self.failureResultOf(endpoint.connect(Factory()), E.NotAllowed)


@implementer(IStreamClientEndpoint)
class CompatibilityTests(SynchronousTestCase):
    """
    L{socksd.chain}, the old home of chaining, still offers its names.
    """

    def test_sameObjects(self) -> None:
        """
        Every name C{socksd.chain} exports is the object of its new home:
        L{socksd.upstream}, or L{socksd.isolation} for the credentials.
        """
        import socksd.chain
        import socksd.isolation
        import socksd.upstream

        self.assertEqual(
            set(socksd.chain.__all__),
            {
                "ChainUpstream",
                "FailoverUpstream",
                "RoutingUpstream",
                "Route",
                "parseMatch",
                "parseRoute",
                "splitUpstreams",
                "upstreamFromOptions",
                "isProxyFailure",
                "isolationCredentials",
                "CHAIN_KINDS",
            },
        )
        for name in socksd.chain.__all__:
            home = socksd.isolation if name == "isolationCredentials" else socksd.upstream
            self.assertIs(getattr(socksd.chain, name), getattr(home, name), name)


class ScriptedEndpoint:
    """An endpoint whose connect returns the given Deferred, counting calls."""

    def __init__(self, result: Deferred) -> None:
        self.result = result
        self.calls = 0

    def connect(self, protocolFactory: Any) -> Deferred:
        self.calls += 1
        return self.result


class ScriptedUpstream:
    """An upstream factory handing out one L{ScriptedEndpoint}."""

    def __init__(self, result: Deferred) -> None:
        self.endpoint = ScriptedEndpoint(result)

    def endpointFor(self, destination: Destination, context: Any = None) -> Any:
        return self.endpoint


class FailoverTests(SynchronousTestCase):
    """
    The next upstream is tried when a proxy cannot be used, not when it
    reports the destination's failure.
    """

    def test_proxyFailures(self) -> None:
        """
        Connection errors, disconnects and refused logins are the proxy's;
        a reply code and a cancellation are final.
        """
        from twisted.python.failure import Failure

        self.assertTrue(isProxyFailure(Failure(ConnectionRefusedError())))
        self.assertTrue(isProxyFailure(Failure(ProxyDisconnected())))
        self.assertTrue(isProxyFailure(Failure(E.AuthenticationFailed())))
        self.assertFalse(isProxyFailure(Failure(E.ConnectionRefused(replyCode=5))))
        self.assertFalse(isProxyFailure(Failure(CancelledError())))

    def test_nextOnProxyFailure(self) -> None:
        """
        The first proxy refusing the connection: the second is used, and a
        warning names the failure.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        first = ScriptedUpstream(fail(ConnectionRefusedError()))
        second = ScriptedUpstream(succeed("protocol"))
        endpoint = FailoverUpstream([first, second]).endpointFor(dest("example.com"))
        self.assertEqual(self.successResultOf(endpoint.connect(Factory())), "protocol")
        self.assertEqual((first.endpoint.calls, second.endpoint.calls), (1, 1))
        self.assertTrue(any("trying the next" in e["log_format"] for e in events))

    def test_destinationFailureIsFinal(self) -> None:
        """
        A proxy's failure reply goes to the client; the next is not tried.
        """
        first = ScriptedUpstream(fail(E.ConnectionRefused(replyCode=5)))
        second = ScriptedUpstream(succeed("protocol"))
        endpoint = FailoverUpstream([first, second]).endpointFor(dest("example.com"))
        self.failureResultOf(endpoint.connect(Factory()), E.ConnectionRefused)
        self.assertEqual(second.endpoint.calls, 0)

    def test_lastFailure(self) -> None:
        """
        When every proxy fails, the last failure is the result.
        """
        first = ScriptedUpstream(fail(ConnectionRefusedError()))
        second = ScriptedUpstream(fail(ProxyDisconnected()))
        endpoint = FailoverUpstream([first, second]).endpointFor(dest("example.com"))
        self.failureResultOf(endpoint.connect(Factory()), ProxyDisconnected)

    def test_cancel(self) -> None:
        """
        Cancelling cancels the attempt in progress and tries no other.
        """
        pending: Deferred = Deferred()
        first = ScriptedUpstream(pending)
        second = ScriptedUpstream(succeed("protocol"))
        result = (
            FailoverUpstream([first, second]).endpointFor(dest("x")).connect(Factory())
        )
        result.cancel()
        self.failureResultOf(result, CancelledError)
        self.assertEqual(second.endpoint.calls, 0)


class Collector(Protocol):
    """Gathers bytes; C{done} fires with them once L{PAYLOAD}'s length came."""

    def __init__(self) -> None:
        self.received = b""
        self.done: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(PAYLOAD) and not self.done.called:
            self.done.callback(self.received)

    def connectionLost(self, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(self.received)


async def settle() -> None:
    """Wait (at most L{WAIT} seconds) until no TCP connection is open."""
    from twisted.internet import tcp
    from twisted.internet.task import deferLater

    for _ in range(int(WAIT / 0.02)):
        selectables = reactor.getReaders() + reactor.getWriters()
        if not any(isinstance(s, tcp.Connection) for s in selectables):
            return
        await deferLater(reactor, 0.02, lambda: None)


class RecordingUpstream:
    """Records each context, then connects directly."""

    def __init__(self) -> None:
        self.direct = DirectUpstream(reactor, FakeResolver({}))
        self.contexts: list[ConnectContext] = []

    def endpointFor(self, destination: Destination, context: Any = None) -> Any:
        self.contexts.append(context)
        return self.direct.endpointFor(destination, context)


class ChainLoopbackTests(TestCase):
    """
    Real sockets on 127.0.0.1: a client, socksd A chaining to socksd B,
    and an echo server.
    """

    timeout = 30

    async def listen(self, factory: Any) -> int:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def socksd(self, upstream: Any) -> int:
        return await self.listen(
            SocksServerFactory(
                reactor, upstream=upstream, resolver=FakeResolver({}), config=CONFIG
            )
        )

    async def roundTrip(self, proxyPort: int, echoPort: int, **auth: Any) -> bytes:
        """Send bytes through socksd A to the echo server; return the echo."""
        endpoint = SOCKS5ClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", proxyPort),
            "127.0.0.1",
            echoPort,
            **auth,
        )
        protocol = await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(
            WAIT, reactor
        )
        protocol.transport.write(PAYLOAD)
        try:
            return await protocol.done.addTimeout(WAIT, reactor)
        finally:
            protocol.transport.loseConnection()
            await settle()

    def closedPort(self) -> int:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    async def test_chainTwoSocksd(self) -> None:
        """
        Bytes go client -> A -> B -> echo and back unchanged; B sees
        isolation credentials derived from the client's, not the client's.
        """
        echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        recording = RecordingUpstream()
        portB = await self.socksd(recording)
        portA = await self.socksd(
            upstreamFromSpec(
                reactor, rf"socks5:proxy=tcp\:127.0.0.1\:{portB}", FakeResolver({})
            )
        )
        echoed = await self.roundTrip(portA, echoPort, username="alice", password="pw")
        self.assertEqual(echoed, PAYLOAD)
        [context] = recording.contexts
        self.assertEqual(context.credentials, isolationCredentials((b"alice", b"pw")))

    async def test_failoverClosedPort(self) -> None:
        """
        The first upstream's port is closed: the second (socksd B) carries
        the connection.
        """
        echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        portB = await self.socksd(RecordingUpstream())
        closed = self.closedPort()
        upstream = upstreamFromOptions(
            reactor,
            [
                rf"socks5:proxy=tcp\:127.0.0.1\:{closed}",
                rf"socks5:proxy=tcp\:127.0.0.1\:{portB}",
            ],
            [],
            FakeResolver({}),
        )
        portA = await self.socksd(upstream)
        self.assertEqual(await self.roundTrip(portA, echoPort), PAYLOAD)

    async def test_destinationRefusedNotFailedOver(self) -> None:
        """
        B reports the destination refused: A answers 05 and does not try
        the next upstream.
        """
        portB = await self.socksd(RecordingUpstream())
        spare = RecordingUpstream()
        portSpare = await self.socksd(spare)
        upstream = upstreamFromOptions(
            reactor,
            [
                rf"socks5:proxy=tcp\:127.0.0.1\:{portB}",
                rf"socks5:proxy=tcp\:127.0.0.1\:{portSpare}",
            ],
            [],
            FakeResolver({}),
        )
        portA = await self.socksd(upstream)
        with self.assertRaises(E.ConnectionRefused):
            await self.roundTrip(portA, self.closedPort())
        self.assertEqual(spare.contexts, [])

    async def test_routeDirect(self) -> None:
        """
        A route rule sends the echo server's address direct, past a default
        upstream that could not work.
        """
        echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        upstream = upstreamFromOptions(
            reactor,
            [rf"socks5:proxy=tcp\:127.0.0.1\:{self.closedPort()}"],
            [f"127.0.0.1:{echoPort}=direct"],
            FakeResolver({}),
        )
        portA = await self.socksd(upstream)
        self.assertEqual(await self.roundTrip(portA, echoPort), PAYLOAD)


class MicrosocksChainTests(InteropTestCase):
    """
    socksd chaining through microsocks.
    """

    timeout = 60

    async def test_chainThroughMicrosocks(self) -> None:
        """
        client -> socksd -> microsocks -> echo carries the bytes unchanged.
        """
        from socksd.test.interop.test_client_peers import freePort, startPeer

        path = requireTool("microsocks")
        loop = ChainLoopbackTests("test_chainTwoSocksd")
        loop.addCleanup = self.addCleanup  # type: ignore[method-assign]
        echoPort = await loop.listen(Factory.forProtocol(EchoProtocol))
        microPort = freePort()
        await startPeer(
            self, [path, "-i", "127.0.0.1", "-p", str(microPort)], microPort
        )
        portA = await loop.socksd(
            upstreamFromSpec(
                reactor, rf"socks5:proxy=tcp\:127.0.0.1\:{microPort}", FakeResolver({})
            )
        )
        self.assertEqual(await loop.roundTrip(portA, echoPort), PAYLOAD)
