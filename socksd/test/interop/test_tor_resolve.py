"""
Tor's own tools and a plain HTTP client against socksd: C{tor-resolve}
(RESOLVE over SOCKS4A and SOCKS5, RESOLVE_PTR), C{curl} without a proxy (the
"this is a SOCKS proxy" page), and socksd chained to a second socksd, whose
upstream sees one pair of credentials per isolation key.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue

from socksd.test.interop import InteropTestCase, requireTool
from socksd.test.interop._support import (
    TEST_NAME,
    hostsFile,
    listen,
    startSocksd,
    startWeb,
)


class TorResolveTests(InteropTestCase):
    """
    tor-resolve asks socksd, which answers from its hosts-file resolver.
    """

    def setUp(self) -> None:
        super().setUp()
        self.torResolve = requireTool("tor-resolve")

    async def resolveWith(self, *args: str) -> tuple[bytes, bytes, int]:
        port = await startSocksd(self)
        return await getProcessOutputAndValue(
            self.torResolve,
            [*args, f"127.0.0.1:{port}"],
            env={},
            reactor=reactor,
        )

    async def test_socks5(self) -> None:
        """
        tor-resolve -5 NAME gets the address only socksd's hosts file knows.
        """
        out, err, code = await self.resolveWith("-5", TEST_NAME)
        self.assertEqual((code, out.strip()), (0, b"127.0.0.1"), err)

    async def test_socks4a(self) -> None:
        """
        tor-resolve -4 NAME (SOCKS4A RESOLVE) gets the address.
        """
        out, err, code = await self.resolveWith("-4", TEST_NAME)
        self.assertEqual((code, out.strip()), (0, b"127.0.0.1"), err)

    async def test_reverse(self) -> None:
        """
        tor-resolve -x ADDRESS (RESOLVE_PTR) gets the name.
        """
        out, err, code = await self.resolveWith("-x", "127.0.0.1")
        self.assertEqual((code, out.strip()), (0, TEST_NAME.encode("ascii")), err)

    async def test_unknown(self) -> None:
        """
        A name socksd cannot resolve makes tor-resolve fail, not hang.
        """
        out, err, code = await self.resolveWith("-5", "nowhere.invalid")
        self.assertNotEqual(code, 0)
        self.assertEqual(out, b"")


class HttpPageTests(InteropTestCase):
    """
    curl as a plain HTTP client on the SOCKS port gets the explanation page.
    """

    async def test_curlGetsPage(self) -> None:
        """
        C{curl http://127.0.0.1:PORT/} prints an HTML page saying this is a
        SOCKS proxy and how to set a browser up.
        """
        curl = requireTool("curl")
        port = await startSocksd(self)
        out, err, code = await getProcessOutputAndValue(
            curl,
            [
                "--silent",
                "--max-time",
                "20",
                "--noproxy",
                "*",
                f"http://127.0.0.1:{port}/",
            ],
            env={},
            reactor=reactor,
        )
        self.assertEqual(code, 0, err)
        self.assertIn(b"This is a SOCKS proxy", out)
        self.assertIn(b"socks5://127.0.0.1:%d" % port, out)


class _Closing(Protocol):
    """A client protocol whose C{closed} fires when its connection is gone."""

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)


class _Recording:
    """An upstream factory that records contexts, then connects directly."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.contexts: list[Any] = []

    def endpointFor(self, destination: Any, context: Any = None) -> Any:
        self.contexts.append(context)
        return self.inner.endpointFor(destination, context)


class ChainIsolationTests(InteropTestCase):
    """
    socksd chained (C{--upstream socks5:...}) to a second socksd: each
    isolation key reaches the second one as its own credentials.
    """

    async def test_credentialsPerKey(self) -> None:
        """
        Two connections with the same credentials reach the second socksd
        with the same upstream credentials; other credentials with other
        ones; the client's own credentials are never forwarded.
        """
        from socksd.client import SOCKS5ClientEndpoint
        from socksd.resolve import HostsResolver
        from socksd.server import ServerConfig, SocksServerFactory
        from socksd.upstream import DirectUpstream, upstreamFromSpec

        webPort = await startWeb(self)
        resolver = HostsResolver(hostsFile(self, {TEST_NAME: "127.0.0.1"}), reactor)
        recording = _Recording(DirectUpstream(reactor, resolver))
        innerPort = await listen(
            self,
            SocksServerFactory(reactor, upstream=recording, resolver=resolver),
        )
        outer = SocksServerFactory(
            reactor,
            upstream=upstreamFromSpec(
                reactor, f"socks5:proxy=tcp\\:127.0.0.1\\:{innerPort}", resolver
            ),
            resolver=resolver,
            config=ServerConfig(),
        )
        outerPort = await listen(self, outer)
        for username, password in ((b"alice", b"1"), (b"alice", b"1"), (b"bob", b"1")):
            endpoint = SOCKS5ClientEndpoint(
                TCP4ClientEndpoint(reactor, "127.0.0.1", outerPort),
                "127.0.0.1",
                webPort,
                username=username,
                password=password,
            )
            protocol = await endpoint.connect(Factory.forProtocol(_Closing))
            protocol.transport.loseConnection()
            await protocol.closed
        # Let the last hops (socksd to socksd, socksd to the web server) end.
        await deferLater(reactor, 0.2, lambda: None)
        first, second, third = [c.credentials for c in recording.contexts]
        self.assertIsNotNone(first)
        self.assertEqual(first, second)
        self.assertNotEqual(first, third)
        self.assertNotIn(first, [(b"alice", b"1"), (b"bob", b"1")])
        self.assertNotEqual(
            recording.contexts[0].isolationKey, recording.contexts[2].isolationKey
        )
