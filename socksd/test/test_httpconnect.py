"""
Tests for L{socksd.server.httpconnect}: HTTP CONNECT on the SOCKS port,
in raw bytes through the factory (a L{MemoryUpstream}), and with curl
against a real web server (interop).
"""

from __future__ import annotations

import os
from base64 import b64encode
from ipaddress import IPv4Address, IPv6Address

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from socksd.address import Destination
from socksd.auth import Authenticator, portalFromCheckers
from socksd.server import ServerConfig, SocksServerFactory
from socksd.handshake.http import MAX_HTTP_REQUEST, HttpHandshake, parseAuthority
from socksd.server.factory import HTTP
from socksd.test.interop import InteropTestCase, requireTool
from socksd.test.test_dispatch import FakePolicy, Harness, splits

CONNECT = b"CONNECT 192.0.2.1:80 HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n"
OK = b"HTTP/1.1 200 Connection established\r\n\r\n"
ON = ServerConfig(httpConnect=True)


def basic(user: bytes, password: bytes) -> bytes:
    """A Proxy-Authorization header line."""
    return b"Proxy-Authorization: Basic " + b64encode(user + b":" + password) + b"\r\n"


class ParseAuthorityTests(SynchronousTestCase):
    """
    CONNECT targets are host:port, IPv6 literals in brackets.
    """

    def test_forms(self) -> None:
        """
        A name, an IPv4 literal and a bracketed IPv6 literal parse.
        """
        self.assertEqual(
            parseAuthority("example.com:443"), Destination("example.com", 443)
        )
        self.assertEqual(
            parseAuthority("192.0.2.1:80"), Destination(IPv4Address("192.0.2.1"), 80)
        )
        self.assertEqual(
            parseAuthority("[2001:db8::1]:8080"),
            Destination(IPv6Address("2001:db8::1"), 8080),
        )

    def test_bad(self) -> None:
        """
        No port, a bad port, an unbracketed IPv6 literal or a URL are
        ValueErrors.
        """
        for text in [
            "example.com",
            "example.com:x",
            "2001:db8::1:80",
            ":80",
            "http://example.com:80",
            "example.com:999999",
        ]:
            self.assertRaises(ValueError, parseAuthority, text)


class HttpConnectTests(SynchronousTestCase):
    """
    With C{httpConnect}, a CONNECT request gets a tunnel.
    """

    def test_offByDefault(self) -> None:
        """
        Without the option, CONNECT gets the resistance page (501).
        """
        harness = Harness(self)
        protocol, transport = harness.connect()
        harness.send(protocol, CONNECT)
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 501 "))
        self.assertEqual(harness.upstream.attempts, [])

    def test_tunnel(self) -> None:
        """
        A CONNECT split anywhere asks the upstream for its destination,
        answers 200 and relays both ways, early data first; the log event
        says http and HTTP_200.
        """
        for chunks in splits(CONNECT + b"early"):
            harness = Harness(self, config=ON)
            protocol, transport = harness.connect()
            harness.send(protocol, *chunks)
            self.assertEqual(
                harness.upstream.destinations,
                [Destination(IPv4Address("192.0.2.1"), 80)],
            )
            attempt = harness.upstream.last
            attempt.succeed()
            self.assertEqual(transport.value(), OK)
            self.assertEqual(attempt.transport.value(), b"early")
            attempt.protocol.dataReceived(b"down")
            self.assertEqual(transport.value(), OK + b"down")
            protocol.dataReceived(b"up")
            self.assertEqual(attempt.transport.value(), b"earlyup")
        harness.close(protocol)
        event = harness.onlyEvent(self)
        self.assertEqual(event["protocol"], "http")
        self.assertEqual(event["reply"], "HTTP_200")
        self.assertEqual(event["destination"], "192.0.2.1:80")

    def test_refused(self) -> None:
        """
        A destination that refuses gets 502 and a close.
        """
        harness = Harness(self, config=ON)
        protocol, transport = harness.connect()
        harness.send(protocol, CONNECT)
        harness.upstream.last.fail(ConnectionRefusedError())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        self.assertTrue(transport.disconnecting)

    def test_policy(self) -> None:
        """
        The policy decides as for SOCKS: a refused request gets 403.
        """
        harness = Harness(self, config=ON, policy=FakePolicy(requests=False))
        protocol, transport = harness.connect()
        harness.send(protocol, CONNECT)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 Forbidden\r\n"))
        self.assertEqual(harness.upstream.attempts, [])

    def test_otherMethod(self) -> None:
        """
        GET (and anything not CONNECT) still gets the resistance page.
        """
        harness = Harness(self, config=ON)
        protocol, transport = harness.connect()
        harness.send(protocol, b"CO", b"PY / HTTP/1.1\r\n\r\n")
        self.assertIsInstance(protocol.handshake, HttpHandshake)
        self.assertTrue(transport.disconnecting)
        harness2 = Harness(self, config=ON)
        protocol2, transport2 = harness2.connect()
        harness2.send(protocol2, b"GET / HTTP/1.1\r\n\r\n")
        self.assertTrue(transport2.value().startswith(b"HTTP/1.0 501 "))

    def test_badRequest(self) -> None:
        """
        A CONNECT with a bad target or header line gets 400.
        """
        for request in [
            b"CONNECT example.com HTTP/1.1\r\n\r\n",
            b"CONNECT example.com:80 HTTP/1.1\r\nno colon\r\n\r\n",
            b"CONNECT example.com:80\r\n\r\n",
        ]:
            harness = Harness(self, config=ON)
            protocol, transport = harness.connect()
            harness.send(protocol, request)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), request)
            self.assertEqual(harness.upstream.attempts, [])

    def test_headerBounded(self) -> None:
        """
        A request head longer than MAX_HTTP_REQUEST gets 431 without waiting
        for its end.
        """
        harness = Harness(self, config=ON)
        protocol, transport = harness.connect()
        harness.send(protocol, b"CONNECT example.com:80 HTTP/1.1\r\nX: ")
        harness.send(protocol, b"a" * MAX_HTTP_REQUEST)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "))
        self.assertTrue(transport.disconnecting)

    def test_handlerMapping(self) -> None:
        """
        The option maps C to the CONNECT handler, and only then.
        """
        clock = MemoryReactorClock()
        on = SocksServerFactory(clock, upstream=object(), resolver=object(), config=ON)
        off = SocksServerFactory(clock, upstream=object(), resolver=object())
        self.assertIs(on.handlers[ord("C")], HTTP)
        self.assertIs(off.handlers[ord("C")], HTTP)
        self.assertTrue(on.handshakeSettings.httpConnect)
        self.assertFalse(off.handshakeSettings.httpConnect)


class HttpConnectAuthTests(SynchronousTestCase):
    """
    With an authenticator, Basic proxy credentials are required.
    """

    def setUp(self) -> None:
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        self.clock = MemoryReactorClock()
        self.authenticator = Authenticator(portalFromCheckers([checker]), self.clock)
        self.harness = Harness(self, config=ON, authenticator=self.authenticator)

    def test_missing(self) -> None:
        """
        No credentials: 407 with a Basic challenge, nothing connected.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, CONNECT)
        self.assertEqual(
            transport.value(),
            b"HTTP/1.1 407 Proxy Authentication Required\r\n"
            b'Proxy-Authenticate: Basic realm="socksd"\r\n'
            b"Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        self.assertEqual(self.harness.upstream.attempts, [])

    def test_good(self) -> None:
        """
        Good credentials: the user is in the context and the log, and the
        credentials are the isolation key.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            b"CONNECT 192.0.2.1:80 HTTP/1.1\r\n" + basic(b"alice", b"secret") + b"\r\n",
        )
        context = self.harness.upstream.contexts[0]
        self.assertEqual(context.user.name, "alice")
        self.assertEqual(context.isolationKey, (b"alice", b"secret"))
        self.harness.upstream.last.succeed()
        self.assertEqual(transport.value(), OK)
        self.harness.close(protocol)
        self.assertEqual(self.harness.onlyEvent(self)["user"], "alice")

    def test_wrong(self) -> None:
        """
        A wrong password gets 407 after the authenticator's delay.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            b"CONNECT 192.0.2.1:80 HTTP/1.1\r\n" + basic(b"alice", b"nope") + b"\r\n",
        )
        self.assertEqual(transport.value(), b"")
        self.clock.advance(self.authenticator.failureDelay)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 407 "))
        self.assertEqual(self.harness.upstream.attempts, [])


class _Page(Resource):
    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"hello", Data(b"hello through CONNECT", "text/plain"))


class CurlHttpConnectTests(InteropTestCase):
    """
    curl uses socksd as an HTTP proxy with CONNECT (C{-p -x http://...}).
    """

    @inlineCallbacks
    def test_curlTunnel(self) -> Deferred:
        """
        curl -p through --http-connect fetches a page from a local web server.
        """
        curl = requireTool("curl")
        web = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(_Page())
        )
        self.addCleanup(web.stopListening)
        proxy = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            SocksServerFactory(reactor, config=ServerConfig(httpConnect=True))
        )
        self.addCleanup(proxy.stopListening)
        out, err, code = yield getProcessOutputAndValue(
            curl,
            [
                "-sS",
                "--max-time",
                "10",
                "-p",
                "-x",
                f"http://127.0.0.1:{proxy.getHost().port}",
                f"http://127.0.0.1:{web.getHost().port}/hello",
            ],
            env={"PATH": os.environ.get("PATH", "")},
        )
        self.assertEqual((code, out), (0, b"hello through CONNECT"), err)
