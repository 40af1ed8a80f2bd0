"""
Tests for upstreams as URLs (L{socksd.upstream.urls}), the HTTP CONNECT
client (L{socksd.client.http}), the connect timeout of chained upstreams,
and failover with back-off (L{socksd.upstream.chain.UpstreamHealth}),
over real sockets on 127.0.0.1: a front socksd chains through a second
socksd to an echo server.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd import errors as E
from socksd.address import Destination
from socksd.auth import Authenticator, portalFromCheckers
from socksd.client.http import HttpConnectHandshake
from socksd.server import ServerConfig, SocksServerFactory
from socksd.test._tls import NO_TLS
from socksd.testing import FakeResolver
from socksd.upstream import DirectUpstream, FailoverUpstream, UpstreamHealth
from socksd.upstream.spec import upstreamFromOptions, upstreamFromSpec
from socksd.upstream.urls import endpointFromURL, parseProxyURL

#: A name only the front's resolver knows (and the back's does not).
FRONT_NAME = "front-only.example"
#: A name only the back's resolver knows.
BACK_NAME = "back-only.example"
WAIT = 20


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Collector(Protocol):
    def connectionMade(self) -> None:
        self.received = b""
        self.waiting: Deferred | None = None
        self.lost: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.waiting is not None and len(self.received) >= self.wanted:
            waiting, self.waiting = self.waiting, None
            waiting.callback(self.received)

    def wait(self, count: int) -> Deferred:
        self.wanted = count
        self.waiting = Deferred()
        if len(self.received) >= count:
            self.waiting, waiting = None, self.waiting
            waiting.callback(self.received)
            return waiting
        return self.waiting.addTimeout(WAIT, reactor)

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)


async def listen(testCase: TestCase, factory: Any, endpoint: Any = None) -> int:
    endpoint = endpoint or TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = await endpoint.listen(factory)
    testCase.addCleanup(port.stopListening)
    return port.getHost().port


async def roundTrip(testCase: TestCase, endpoint: Any) -> None:
    protocol = await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(WAIT, reactor)
    protocol.transport.write(b"hello through the chain")
    await protocol.wait(23)
    testCase.assertEqual(protocol.received, b"hello through the chain")
    protocol.transport.loseConnection()
    await protocol.lost


class ParseTests(SynchronousTestCase):
    """
    L{parseProxyURL} reads the URLs of curl, python-socks and gost.
    """

    def test_forms(self) -> None:
        """
        Schemes, credentials (percent-decoded), IPv6 in brackets, default
        ports and options.
        """
        url = parseProxyURL("socks5h://alice:p%40ss%3A1@[2001:db8::7]:1081")
        self.assertEqual(
            (url.scheme, url.host, url.port, url.username, url.password),
            ("socks5h", "2001:db8::7", 1081, "alice", "p@ss:1"),
        )
        self.assertFalse(url.resolvesLocally)
        self.assertTrue(parseProxyURL("socks5://h").resolvesLocally)
        self.assertTrue(parseProxyURL("socks4://h").resolvesLocally)
        self.assertEqual(parseProxyURL("socks4a://h").port, 1080)
        self.assertEqual(parseProxyURL("https://h").port, 443)
        self.assertEqual(parseProxyURL("SOCKS6://h:9").kind, "socks6")
        self.assertEqual(
            parseProxyURL("socks5h://h?extendedErrors=yes&pair.a=b").options,
            (("extendedErrors", "yes"), ("pair.a", "b")),
        )
        self.assertEqual(
            parseProxyURL("socks5h://alice:secret@h:1").redacted(),
            "socks5h://alice:***@h:1",
        )
        self.assertEqual(
            parseProxyURL("socks4a://me@h:1").description(),
            r"socks4a:proxy=tcp\:h\:1080:userId=me".replace("1080", "1"),
        )

    def test_malformed(self) -> None:
        """
        A malformed URL is a ValueError that shows the expected form and
        hides the password.
        """
        for text in [
            "socks5://[::1",
            "socks5://::1:1080",
            "ftp://h",
            "socks5h://h:0",
            "socks5h://h:x",
            "socks5h://h/path",
            "socks5h://h?bogus=1",
            "socks4a://u:secret@h",
            "socks5h://",
        ]:
            error = self.assertRaises(ValueError, parseProxyURL, text)
            self.assertIn("expected SCHEME://", str(error), text)
            self.assertNotIn("secret", str(error))


class HttpConnectHandshakeTests(SynchronousTestCase):
    """
    L{HttpConnectHandshake}: the request, and the response fed at every
    split.
    """

    def test_request(self) -> None:
        """
        The request names the destination (IPv6 in brackets) and carries
        Basic credentials.
        """
        handshake = HttpConnectHandshake(Destination("2001:db8::1", 443), b"a", b"b")
        self.assertEqual(
            handshake.start(),
            b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n"
            b"Proxy-Authorization: Basic YTpi\r\n\r\n",
        )

    def test_responseAtEverySplit(self) -> None:
        """
        A 200 head, split anywhere, opens the tunnel; the bytes after it
        are the tunnel's first bytes.
        """
        response = b"HTTP/1.1 200 Connection established\r\nX: y\r\n\r\nfirst"
        for split in range(len(response) + 1):
            handshake = HttpConnectHandshake(Destination("example.com", 80))
            sent, result = handshake.dataReceived(response[:split])
            self.assertEqual(sent, b"")
            rest = response[split:]
            if result is None:
                _, result = handshake.dataReceived(rest)
                rest = b""
            self.assertEqual(result.leftover + rest, b"first")

    def test_refusals(self) -> None:
        """
        407, 403, 504 and others become typed errors; garbage is a
        malformed message.
        """
        for status, error in [
            (b"407 Proxy Authentication Required", E.AuthenticationFailed),
            (b"403 Forbidden", E.NotAllowed),
            (b"504 Gateway Timeout", E.TTLExpired),
            (b"502 Bad Gateway", E.HostUnreachable),
            (b"500 Oops", E.GeneralFailure),
        ]:
            handshake = HttpConnectHandshake(Destination("example.com", 80))
            self.assertRaises(
                error, handshake.dataReceived, b"HTTP/1.1 " + status + b"\r\n\r\n"
            )
        self.assertRaises(
            E.MalformedMessage,
            HttpConnectHandshake(Destination("example.com", 80)).dataReceived,
            b"SSH-2.0-OpenSSH\r\n\r\n",
        )


class ChainTests(TestCase):
    """
    Every scheme, through a second socksd: as an application's endpoint
    (L{endpointFromURL}) and as a front socksd's upstream.
    """

    timeout = 60

    async def backSocksd(self, **config: Any) -> int:
        """The second socksd; alice/p@ss:1 may log in when asked."""
        users = config.pop("users", False)
        endpoint = config.pop("endpoint", None)
        authenticator = None
        if users:
            checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"p@ss:1")
            authenticator = Authenticator(portalFromCheckers([checker]), reactor, 0)
        resolver = FakeResolver({BACK_NAME: ["127.0.0.1"]})
        factory = SocksServerFactory(
            reactor,
            upstream=DirectUpstream(reactor, resolver),
            resolver=resolver,
            authenticator=authenticator,
            config=ServerConfig(**config),
        )
        return await listen(self, factory, endpoint)

    async def echo(self) -> int:
        return await listen(self, Factory.forProtocol(Echo))

    async def test_everyScheme(self) -> None:
        """
        socks4, socks4a, socks5, socks5h, socks6 and http reach the echo
        server through a second socksd, by address and by name (names the
        back knows for the schemes that send names; names the front knows
        for those that resolve here).
        """
        echoPort = await self.echo()
        back = await self.backSocksd(httpConnect=True)
        front = FakeResolver({FRONT_NAME: ["127.0.0.1"]})
        for scheme, name in [
            ("socks4", FRONT_NAME),
            ("socks4a", BACK_NAME),
            ("socks5", FRONT_NAME),
            ("socks5h", BACK_NAME),
            ("socks6", BACK_NAME),
            ("http", BACK_NAME),
        ]:
            url = f"{scheme}://127.0.0.1:{back}"
            for host in ("127.0.0.1", name):
                await roundTrip(self, endpointFromURL(reactor, url, host, echoPort, front))

    async def test_namesStayWhereTheSchemeSays(self) -> None:
        """
        C{socks5h://} sends the name (the front cannot resolve it, the back
        can); C{socks5://} resolves it here (the back could not).
        """
        echoPort = await self.echo()
        back = await self.backSocksd()
        front = FakeResolver({FRONT_NAME: ["127.0.0.1"]})
        await roundTrip(
            self, endpointFromURL(reactor, f"socks5://127.0.0.1:{back}", FRONT_NAME, echoPort, front)
        )
        with self.assertRaises(E.HostUnreachable):
            await roundTrip(
                self, endpointFromURL(reactor, f"socks5h://127.0.0.1:{back}", FRONT_NAME, echoPort, front)
            )
        with self.assertRaises(E.ResolveFailed):
            await roundTrip(
                self, endpointFromURL(reactor, f"socks5://127.0.0.1:{back}", BACK_NAME, echoPort, front)
            )

    async def test_credentials(self) -> None:
        """
        Percent-encoded credentials log in over SOCKS5, SOCKS6 and HTTP
        CONNECT; wrong ones are refused.
        """
        echoPort = await self.echo()
        back = await self.backSocksd(users=True, httpConnect=True)
        for scheme in ("socks5h", "socks6", "http"):
            good = f"{scheme}://alice:p%40ss%3A1@127.0.0.1:{back}"
            await roundTrip(self, endpointFromURL(reactor, good, "127.0.0.1", echoPort))
            bad = f"{scheme}://alice:wrong@127.0.0.1:{back}"
            with self.assertRaises(E.SocksError):
                await roundTrip(self, endpointFromURL(reactor, bad, "127.0.0.1", echoPort))

    async def test_https(self) -> None:
        """
        C{https://} speaks TLS to the proxy, checking its certificate
        against C{?trustRoots=}.
        """
        from twisted.internet.ssl import PrivateCertificate

        from socksd.test.test_client import makeCertificate

        certificate, key = makeCertificate(("localhost",), ("127.0.0.1",))
        pem = Path(self.mktemp())
        pem.write_bytes(certificate)
        options = PrivateCertificate.loadPEM(certificate + key).options()
        echoPort = await self.echo()
        back = await self.backSocksd(
            httpConnect=True,
            endpoint=SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1"),
        )
        url = f"https://localhost:{back}?trustRoots={pem}"
        await roundTrip(self, endpointFromURL(reactor, url, "127.0.0.1", echoPort))

    test_https.skip = NO_TLS  # type: ignore[attr-defined]

    async def test_frontSocksdUpstream(self) -> None:
        """
        A front socksd whose C{--upstream} is a URL serves a SOCKS5 client
        through the back.
        """
        from socksd.client import SOCKS5ClientEndpoint
        from twisted.internet.endpoints import TCP4ClientEndpoint

        echoPort = await self.echo()
        back = await self.backSocksd()
        resolver = FakeResolver({})
        front = SocksServerFactory(
            reactor,
            upstream=upstreamFromOptions(
                reactor, [f"socks5h://127.0.0.1:{back}"], [], resolver
            ),
            resolver=resolver,
        )
        frontPort = await listen(self, front)
        await roundTrip(
            self,
            SOCKS5ClientEndpoint(
                TCP4ClientEndpoint(reactor, "127.0.0.1", frontPort), BACK_NAME, echoPort
            ),
        )
        await settle()

    async def test_connectTimeoutReachesChains(self) -> None:
        """
        C{--connect-timeout} bounds a chained upstream: a proxy that accepts
        and never answers fails the connection as unavailable (without the
        timeout it would hang).
        """
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        port = silent.getsockname()[1]
        for spec in (
            f"socks5h://127.0.0.1:{port}",
            rf"socks5:proxy=tcp\:127.0.0.1\:{port}",
            rf"socks4a:proxy=tcp\:127.0.0.1\:{port}",
        ):
            upstream = upstreamFromOptions(reactor, [spec], [], None, connectTimeout=0.2)
            endpoint = upstream.endpointFor(Destination("example.com", 80))
            with self.assertRaises(E.UpstreamUnavailable) as caught:
                await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(WAIT, reactor)
            self.assertIn("did not answer in time", str(caught.exception))


class CountingServer(Protocol):
    """A broken proxy: counts its connections and closes each at once."""

    def connectionMade(self) -> None:
        self.factory.count += 1
        self.transport.loseConnection()


class BackoffTests(TestCase):
    """
    A failing upstream is marked down and skipped for a growing interval,
    counted at the upstream itself.
    """

    timeout = 60

    async def setUp(self) -> None:
        counting = Factory.forProtocol(CountingServer)
        counting.count = 0
        self.counting = counting
        self.brokenPort = await listen(self, counting)
        self.echoPort = await listen(self, Factory.forProtocol(Echo))
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def build(self, *specs: str) -> tuple[Any, Clock]:
        upstream = upstreamFromOptions(reactor, list(specs), [], FakeResolver({}))
        clock = Clock()
        for member in upstream.upstreams:
            if getattr(member, "health", None) is not None:
                member.health = UpstreamHealth(member.health.name, clock)
        return upstream, clock

    async def attempt(self, upstream: Any) -> Any:
        endpoint = upstream.endpointFor(Destination("127.0.0.1", self.echoPort))
        protocol = await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(WAIT, reactor)
        protocol.transport.loseConnection()
        await protocol.lost
        return endpoint

    async def test_backoffCounted(self) -> None:
        """
        With C{broken,direct}: the broken proxy is tried once, then skipped
        until its interval (1 s, then 2 s, 4 s) is over; each retry is one
        connection at it.  "Down" is logged once, and the metric counts
        the failures.
        """
        from socksd.service.metrics import Metrics

        upstream, clock = self.build(f"socks5h://127.0.0.1:{self.brokenPort}", "direct")
        metrics = Metrics()
        metrics.watchUpstreams(lambda: upstream)
        await self.attempt(upstream)
        self.assertEqual(self.counting.count, 1)
        for _ in range(3):
            await self.attempt(upstream)
        self.assertEqual(self.counting.count, 1)
        clock.advance(1)
        await self.attempt(upstream)
        self.assertEqual(self.counting.count, 2)
        clock.advance(1.5)
        await self.attempt(upstream)
        self.assertEqual(self.counting.count, 2)
        clock.advance(0.5)
        await self.attempt(upstream)
        self.assertEqual(self.counting.count, 3)
        clock.advance(3.9)
        await self.attempt(upstream)
        self.assertEqual(self.counting.count, 3)
        downs = [e for e in self.events if "is down" in e.get("log_format", "")]
        self.assertEqual(len(downs), 1)
        text = metrics.text().decode()
        name = f"socks5h://127.0.0.1:{self.brokenPort}"
        self.assertIn(f'socksd_upstream_up{{upstream="{name}"}} 0.0', text)
        self.assertIn(f'socksd_upstream_failures_total{{upstream="{name}"}} 3.0', text)

    async def test_allDownFailsAtOnce(self) -> None:
        """
        With every upstream down, a connection fails at once with
        L{E.UpstreamUnavailable}, without a connection to the proxy; a dead
        proxy is "unavailable", not the destination refusing.
        """
        refused = socket.socket()
        refused.bind(("127.0.0.1", 0))
        deadPort = refused.getsockname()[1]
        refused.close()
        upstream, clock = self.build(f"socks5h://127.0.0.1:{self.brokenPort}")
        with self.assertRaises(E.UpstreamUnavailable):
            await self.attempt(upstream)
        self.assertEqual(self.counting.count, 1)
        with self.assertRaises(E.UpstreamUnavailable) as caught:
            await self.attempt(upstream)
        self.assertIn("every upstream is down", str(caught.exception))
        self.assertEqual(self.counting.count, 1)

        tor, _ = self.build(f"socks5h://127.0.0.1:{deadPort}")
        with self.assertRaises(E.UpstreamUnavailable) as caught:
            await self.attempt(tor)
        self.assertIn(f"upstream socks5h://127.0.0.1:{deadPort} unavailable", str(caught.exception))

    async def test_markedUpAgain(self) -> None:
        """
        An upstream that serves again after its interval is marked up,
        which is logged once.
        """
        back = SocksServerFactory(reactor, resolver=FakeResolver({}))
        backPort = await listen(self, back)
        upstream, clock = self.build(f"socks5h://127.0.0.1:{backPort}")
        health = upstream.upstreams[0].health
        health.failed("a test")
        self.assertFalse(health.up)
        with self.assertRaises(E.UpstreamUnavailable):
            await self.attempt(upstream)
        clock.advance(1)
        await self.attempt(upstream)
        self.assertTrue(health.up)
        ups = [e for e in self.events if "is up again" in e.get("log_format", "")]
        self.assertEqual(len(ups), 1)

    async def test_replyToClient(self) -> None:
        """
        Through a front socksd, a client whose only upstream is down gets
        the general-failure reply (01), not "connection refused" (05).
        """
        from socksd.client import SOCKS5ClientEndpoint
        from twisted.internet.endpoints import TCP4ClientEndpoint

        refused = socket.socket()
        refused.bind(("127.0.0.1", 0))
        deadPort = refused.getsockname()[1]
        refused.close()
        front = SocksServerFactory(
            reactor,
            upstream=upstreamSpec(f"socks5h://127.0.0.1:{deadPort}"),
            resolver=FakeResolver({}),
        )
        frontPort = await listen(self, front)
        endpoint = SOCKS5ClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", frontPort), "example.com", 80
        )
        for _ in range(2):
            with self.assertRaises(E.GeneralFailure) as caught:
                await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(WAIT, reactor)
            self.assertEqual(caught.exception.replyCode, 1)


async def settle() -> None:
    """Let the relays close the legs a finished tunnel leaves."""
    from twisted.internet.task import deferLater

    for _ in range(20):
        await deferLater(reactor, 0.01, lambda: None)


def upstreamSpec(spec: str) -> Any:
    return upstreamFromOptions(reactor, [spec], [], FakeResolver({}))


class SpecTests(SynchronousTestCase):
    """
    URLs wherever an upstream is given: C{--upstream}, C{--route}, comma
    lists.
    """

    def test_urlsInOptions(self) -> None:
        """
        URLs and descriptions mix in failover lists and routes; the same
        URL twice is one upstream (one health).
        """
        from twisted.internet.testing import MemoryReactorClock

        upstream = upstreamFromOptions(
            MemoryReactorClock(),
            ["socks5h://127.0.0.1:9050,http://u:p@127.0.0.1:3128,direct"],
            [".onion=socks5h://127.0.0.1:9050", "*:25=socks6://127.0.0.1:1080?ttl=5"],
            FakeResolver({}),
        )
        default = upstream.default
        self.assertIsInstance(default, FailoverUpstream)
        self.assertEqual(
            [getattr(u, "name", "direct") for u in default.upstreams],
            ["socks5h://127.0.0.1:9050", "http://u:***@127.0.0.1:3128", "direct"],
        )
        onion = upstream.upstreamFor(Destination("x" * 56 + ".onion", 80))
        self.assertIs(onion.upstreams[0], default.upstreams[0])

    def test_direct(self) -> None:
        """
        A lone C{direct} stays a L{DirectUpstream} (nothing to back off).
        """
        from twisted.internet.testing import MemoryReactorClock

        self.assertIsInstance(
            upstreamFromSpec(MemoryReactorClock(), "direct", FakeResolver({})),
            DirectUpstream,
        )
