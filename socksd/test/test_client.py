r"""
Tests for L{socksd.client}: the SOCKS4A and SOCKS5 client endpoints, Tor's
RESOLVE and RESOLVE_PTR, the shared handshake protocol and the C{socks5:}
and C{socks4a:} endpoint strings.

The proxy is scripted: the tests read what the client wrote from a
C{StringTransport} and feed the proxy's bytes, written out here in hex, so
that the client is not checked against its own codecs.
"""

from __future__ import annotations

from ipaddress import IPv4Address as V4, IPv6Address as V6
import os
import socket
from pathlib import Path
from typing import Any

from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.cred import strcred
from twisted.internet import reactor
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    UNIXClientEndpoint,
    clientFromString,
)
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    NoProtocol,
)
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.plugin import getPlugins
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import socksd
import twisted.plugins
from socksd import errors as E
from socksd.address import Destination
from socksd.client import (
    DEFAULT_PROXY,
    HandshakeResult,
    IClientHandshake,
    ProxyDisconnected,
    ProxyProtocolError,
    SOCKS4AClientEndpoint,
    SOCKS5ClientEndpoint,
    endpointForDestination,
    peerAddressFor,
    quoteArgument,
    socks4aResolve,
    socks5Resolve,
    socks5ResolvePtr,
)
from socksd.client.parser import SOCKS4AEndpointParser, SOCKS5EndpointParser
from socksd.client.socks4a import Socks4Handshake
from socksd.client.socks5 import Socks5Handshake
from socksd.auth import Authenticator, portalFromCheckers
from socksd.server import SocksServerFactory
from socksd.test._tls import NO_TLS
from socksd.testing import EchoProtocol, FakeResolver
from socksd.upstream import DirectUpstream

H = bytes.fromhex

#: A name only the loopback tests' socksd resolver knows.
LOOPBACK_NAME = "echo.socksd.test"
#: The longest any one wait on a real connection may take, in seconds.
WAIT = 20.0

PROXY_ADDRESS = IPv4Address("TCP", "127.0.0.1", 1080)
LOCAL_ADDRESS = IPv4Address("TCP", "127.0.0.1", 40001)

# SOCKS5 bytes, by field.
GREETING_NOAUTH = H("05 01 00")
GREETING_USERPASS = H("05 02 00 02")
SELECT_NOAUTH = H("05 00")
SELECT_USERPASS = H("05 02")
SELECT_EXTENDED = H("05 97")
SELECT_NONE = H("05 ff")
REQUEST_EXAMPLE = H("05 01 00 03 0b") + b"example.com" + H("00 50")
REPLY_OK = H("05 00 00 01 c0 00 02 01 9c 40")
USERPASS_ALICE = H("01 05") + b"alice" + H("06") + b"secret"
AUTH_OK = H("01 00")

# SOCKS4 bytes.
REQUEST4_LITERAL = H("04 01 00 50 c0 00 02 07") + b"me" + H("00")
REQUEST4A_EXAMPLE = H("04 01 00 50 00 00 00 01") + H("00") + b"example.com" + H("00")
REPLY4_GRANTED = H("00 5a 00 00 00 00 00 00")


def usePluginsFromSource(testCase: SynchronousTestCase) -> None:
    """
    Make Twisted's plugin search see this checkout's C{twisted/plugins}.

    An installed socksd puts its plugins into C{twisted/plugins} beside
    Twisted's; an editable install (C{pip install -e}) does not, and then
    only a program started in the checkout finds them.
    """
    source = Path(socksd.__file__).resolve().parent.parent / "twisted" / "plugins"
    paths = list(twisted.plugins.__path__)
    if (source / "socksd_endpoints.py").is_file() and str(source) not in paths:
        testCase.patch(twisted.plugins, "__path__", paths + [str(source)])


def splits(data: bytes):
    """Every way to cut C{data} in two, and byte by byte."""
    for index in range(len(data) + 1):
        yield [data[:index], data[index:]]
    yield [data[i : i + 1] for i in range(len(data))]


class RecordingProtocol(Protocol):
    """
    Records what happens to it: C{("made", transport)}, C{("data", bytes)},
    C{("lost", reason)}.

    @ivar pauseOnConnect: pause its transport in C{connectionMade}.
    """

    pauseOnConnect = False

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def connectionMade(self) -> None:
        self.events.append(("made", self.transport))
        if self.pauseOnConnect:
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        self.events.append(("data", data))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.events.append(("lost", reason))

    def received(self) -> bytes:
        return b"".join(value for kind, value in self.events if kind == "data")


@implementer(IHalfCloseableProtocol)
class HalfCloseableProtocol(RecordingProtocol):
    """A L{RecordingProtocol} that records half-closes too."""

    def readConnectionLost(self) -> None:
        self.events.append(("readLost", None))

    def writeConnectionLost(self) -> None:
        self.events.append(("writeLost", None))


class RecordingFactory(Factory):
    """Builds one protocol of C{protocolClass}, recording the address."""

    def __init__(self, protocolClass: type = RecordingProtocol) -> None:
        self.protocolClass = protocolClass
        self.addresses: list[Any] = []
        self.built: list[Protocol] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        self.addresses.append(addr)
        protocol = self.protocolClass()
        self.built.append(protocol)
        return protocol


class NoneFactory(Factory):
    """A factory that refuses to build a protocol."""

    def buildProtocol(self, addr: Any) -> None:
        return None


@implementer(IStreamClientEndpoint)
class ScriptedProxyEndpoint:
    """
    Stands for the proxy's endpoint: C{connect} records the factory, and the
    test completes the connection onto a C{StringTransport} or fails it.

    @ivar cancelled: C{True} once a pending connect was cancelled.
    """

    def __init__(self) -> None:
        self.factory: Any = None
        self.attempt: Deferred | None = None
        self.cancelled = False

    def connect(self, factory: Any) -> Deferred:
        def cancel(d: Deferred) -> None:
            self.cancelled = True

        self.factory = factory
        self.attempt = Deferred(cancel)
        return self.attempt

    def complete(self) -> tuple[Protocol, StringTransport]:
        """Connect: build the protocol on a fresh transport."""
        protocol = self.factory.buildProtocol(PROXY_ADDRESS)
        transport = StringTransport(LOCAL_ADDRESS, PROXY_ADDRESS)
        protocol.makeConnection(transport)
        self.attempt.callback(protocol)
        return protocol, transport

    def fail(self, error: BaseException) -> None:
        self.attempt.errback(Failure(error))


class ClientTestMixin:
    """Connect an endpoint to a scripted proxy."""

    def connect(self, makeEndpoint, protocolClass: type = RecordingProtocol):
        """
        @return: the connect Deferred, the proxy-side protocol and transport,
            and the application's factory.
        """
        proxy = ScriptedProxyEndpoint()
        factory = RecordingFactory(protocolClass)
        d = makeEndpoint(proxy).connect(factory)
        protocol, transport = proxy.complete()
        return d, protocol, transport, factory

    def connectSocks5(self, host: Any = "example.com", port: int = 80, **kw):
        return self.connect(lambda proxy: SOCKS5ClientEndpoint(proxy, host, port, **kw))

    def connectSocks4(self, host: Any = "example.com", port: int = 80, **kw):
        return self.connect(
            lambda proxy: SOCKS4AClientEndpoint(proxy, host, port, **kw)
        )

    def assertRefused(self, d: Deferred, errorClass: type, code: int) -> E.SocksError:
        failure = self.failureResultOf(d, errorClass)
        self.assertIs(type(failure.value), errorClass)
        self.assertEqual(failure.value.replyCode, code)
        return failure.value


class Socks5ConnectTests(ClientTestMixin, SynchronousTestCase):
    """
    L{SOCKS5ClientEndpoint} against a scripted proxy.
    """

    def test_interfaces(self) -> None:
        """
        The endpoint provides C{IStreamClientEndpoint}; the handshake
        provides L{IClientHandshake}.
        """
        endpoint = SOCKS5ClientEndpoint(ScriptedProxyEndpoint(), "example.com", 80)
        verifyObject(IStreamClientEndpoint, endpoint)
        request = endpoint._request
        verifyObject(IClientHandshake, Socks5Handshake(request, endpoint._options))

    def test_connectByName(self) -> None:
        """
        With no credentials, the client offers method 00, then asks to
        CONNECT to the name; after a success reply the application's
        protocol is connected and the Deferred fires with it.
        """
        d, protocol, transport, factory = self.connectSocks5()
        self.assertEqual(transport.value(), GREETING_NOAUTH)
        transport.clear()
        self.assertNoResult(d)
        protocol.dataReceived(SELECT_NOAUTH)
        self.assertEqual(transport.value(), REQUEST_EXAMPLE)
        self.assertNoResult(d)
        protocol.dataReceived(REPLY_OK)
        application = self.successResultOf(d)
        self.assertIs(application, factory.built[0])
        self.assertEqual([kind for kind, _ in application.events], ["made"])
        self.assertFalse(transport.disconnecting)

    def test_peerIsTheDestinationName(self) -> None:
        """
        The factory builds the protocol with, and its transport's
        C{getPeer()} returns, a C{HostnameAddress} for a name; C{getHost()}
        is the local end of the proxy connection.
        """
        d, protocol, transport, factory = self.connectSocks5("example.com", 80)
        protocol.dataReceived(SELECT_NOAUTH + REPLY_OK)
        application = self.successResultOf(d)
        expected = HostnameAddress(b"example.com", 80)
        self.assertEqual(factory.addresses, [expected])
        self.assertEqual(application.transport.getPeer(), expected)
        self.assertEqual(application.transport.getHost(), LOCAL_ADDRESS)

    def test_peerIsTheDestinationIPv4(self) -> None:
        """
        An IPv4 literal is sent as ATYP 01, and the peer is an
        C{IPv4Address}.
        """
        d, protocol, transport, factory = self.connectSocks5("192.0.2.7", 443)
        transport.clear()
        protocol.dataReceived(SELECT_NOAUTH)
        self.assertEqual(transport.value(), H("05 01 00 01 c0 00 02 07 01 bb"))
        protocol.dataReceived(REPLY_OK)
        application = self.successResultOf(d)
        self.assertEqual(
            application.transport.getPeer(), IPv4Address("TCP", "192.0.2.7", 443)
        )

    def test_peerIsTheDestinationIPv6(self) -> None:
        """
        An IPv6 literal (with or without brackets) is sent as ATYP 04, and
        the peer is an C{IPv6Address}.
        """
        for host in ("2001:db8::1", "[2001:db8::1]", V6("2001:db8::1")):
            d, protocol, transport, factory = self.connectSocks5(host, 443)
            transport.clear()
            protocol.dataReceived(SELECT_NOAUTH)
            self.assertEqual(
                transport.value(),
                H("05 01 00 04 20 01 0d b8" + " 00" * 11 + " 01 01 bb"),
            )
            protocol.dataReceived(REPLY_OK)
            application = self.successResultOf(d)
            self.assertEqual(
                application.transport.getPeer(), IPv6Address("TCP", "2001:db8::1", 443)
            )

    def test_handshakeSplitAnywhere(self) -> None:
        """
        The proxy's bytes (selection, reply and application data) may arrive
        cut anywhere: the client writes the same bytes, and the application
        gets the data, whole and after C{connectionMade}.
        """
        script = SELECT_NOAUTH + REPLY_OK + b"hello"
        for chunks in splits(script):
            d, protocol, transport, factory = self.connectSocks5()
            for chunk in chunks:
                protocol.dataReceived(chunk)
            self.assertEqual(transport.value(), GREETING_NOAUTH + REQUEST_EXAMPLE)
            application = self.successResultOf(d)
            self.assertEqual(application.events[0][0], "made")
            self.assertEqual(application.received(), b"hello")

    def test_usernamePassword(self) -> None:
        """
        With a username and password, methods 00 and 02 are offered; when
        the proxy selects 02 the RFC 1929 request is sent, then the CONNECT
        request after its success, all whichever way the bytes are cut.
        """
        script = SELECT_USERPASS + AUTH_OK + REPLY_OK
        for chunks in splits(script):
            d, protocol, transport, factory = self.connectSocks5(
                username="alice", password=b"secret"
            )
            for chunk in chunks:
                protocol.dataReceived(chunk)
            self.assertEqual(
                transport.value(), GREETING_USERPASS + USERPASS_ALICE + REQUEST_EXAMPLE
            )
            self.successResultOf(d)

    def test_usernamePasswordNotSelected(self) -> None:
        """
        When the proxy selects 00 although credentials were given, they are
        not sent.
        """
        d, protocol, transport, factory = self.connectSocks5(
            username="alice", password="secret"
        )
        protocol.dataReceived(SELECT_NOAUTH + REPLY_OK)
        self.assertEqual(transport.value(), GREETING_USERPASS + REQUEST_EXAMPLE)
        self.successResultOf(d)

    def test_usernameOnly(self) -> None:
        """
        A username without a password is sent with an empty password.
        """
        d, protocol, transport, factory = self.connectSocks5(username="alice")
        protocol.dataReceived(SELECT_USERPASS + AUTH_OK + REPLY_OK)
        self.assertEqual(
            transport.value(),
            GREETING_USERPASS + H("01 05") + b"alice" + H("00") + REQUEST_EXAMPLE,
        )
        self.successResultOf(d)

    def test_authenticationRefused(self) -> None:
        """
        A failed RFC 1929 status is L{E.AuthenticationFailed}; no request is
        sent and the connection is closed.
        """
        d, protocol, transport, factory = self.connectSocks5(
            username="alice", password="secret"
        )
        protocol.dataReceived(SELECT_USERPASS)
        protocol.dataReceived(H("01 01"))
        failure = self.failureResultOf(d, E.AuthenticationFailed)
        self.assertIn("0x01", str(failure.value))
        self.assertEqual(transport.value(), GREETING_USERPASS + USERPASS_ALICE)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.built[0].events, [])

    def test_authenticationReplyVersion5(self) -> None:
        """
        An RFC 1929 reply with version 05 (as some servers send) is accepted.
        """
        d, protocol, transport, factory = self.connectSocks5(username="a", password="b")
        protocol.dataReceived(SELECT_USERPASS + H("05 00") + REPLY_OK)
        self.successResultOf(d)

    def test_noAcceptableMethod(self) -> None:
        """
        A selection of FF (no acceptable method) is
        L{E.AuthenticationFailed}, naming the methods offered.
        """
        d, protocol, transport, factory = self.connectSocks5()
        protocol.dataReceived(SELECT_NONE)
        failure = self.failureResultOf(d, E.AuthenticationFailed)
        self.assertIn("(00)", str(failure.value))
        self.assertTrue(transport.disconnecting)

    def test_methodNotOffered(self) -> None:
        """
        A proxy selecting a method that was not offered breaks the protocol:
        L{ProxyProtocolError}, carrying the codec's error, and the
        connection is aborted.
        """
        d, protocol, transport, factory = self.connectSocks5()
        protocol.dataReceived(SELECT_USERPASS)
        failure = self.failureResultOf(d, ProxyProtocolError)
        self.assertIsInstance(failure.value.cause, E.MalformedMessage)
        self.assertIsNone(failure.value.replyCode)
        self.assertTrue(transport.disconnecting)

    def test_malformedReply(self) -> None:
        """
        A reply with the wrong version is L{ProxyProtocolError}, which
        L{socksd.replies} reports as a general failure when chaining.
        """
        d, protocol, transport, factory = self.connectSocks5()
        protocol.dataReceived(SELECT_NOAUTH + H("04 00 00 01 00 00 00 00 00 00"))
        failure = self.failureResultOf(d, ProxyProtocolError)
        self.assertIsInstance(failure.value, E.GeneralFailure)
        self.assertIn("SOCKS5", str(failure.value))

    def test_everyRfcFailureCode(self) -> None:
        """
        Every RFC 1928 failure code is the matching typed error carrying the
        code (09, SOCKS6's timeout, and an unknown F0 too), and the
        connection is closed.
        """
        expected = {
            0x01: E.GeneralFailure,
            0x02: E.NotAllowed,
            0x03: E.NetworkUnreachable,
            0x04: E.HostUnreachable,
            0x05: E.ConnectionRefused,
            0x06: E.TTLExpired,
            0x07: E.UnsupportedCommand,
            0x08: E.UnsupportedAddressType,
            0x09: E.ConnectTimeout,
            0xF0: E.GeneralFailure,
        }
        for code, errorClass in expected.items():
            d, protocol, transport, factory = self.connectSocks5()
            protocol.dataReceived(
                SELECT_NOAUTH + bytes([5, code]) + H("00 01 00 00 00 00 00 00")
            )
            self.assertRefused(d, errorClass, code)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(factory.built[0].events, [])

    def test_torExtendedCodes(self) -> None:
        """
        With C{extendedErrors=True}, F0-F7 are Tor's onion-service errors.
        """
        expected = {
            0xF0: E.OnionDescriptorNotFound,
            0xF1: E.OnionDescriptorInvalid,
            0xF2: E.OnionIntroductionFailed,
            0xF3: E.OnionRendezvousFailed,
            0xF4: E.OnionMissingClientAuthorization,
            0xF5: E.OnionWrongClientAuthorization,
            0xF6: E.OnionInvalidAddress,
            0xF7: E.OnionIntroductionTimedOut,
            0x05: E.ConnectionRefused,
        }
        for code, errorClass in expected.items():
            d, protocol, transport, factory = self.connectSocks5(extendedErrors=True)
            protocol.dataReceived(
                SELECT_NOAUTH + bytes([5, code]) + H("00 01 00 00 00 00 00 00")
            )
            self.assertRefused(d, errorClass, code)

    def test_proposal229(self) -> None:
        """
        With pairs, method 0x97 is offered too; when selected, the extended
        request carries USERNAME and PASSWD, then the pairs.
        """
        d, protocol, transport, factory = self.connectSocks5(
            username="alice", password="secret", pairs={"isolation": b"1"}
        )
        self.assertEqual(transport.value(), H("05 03 00 02 97"))
        transport.clear()
        protocol.dataReceived(SELECT_EXTENDED)
        self.assertEqual(
            transport.value(),
            H("01 00 03")
            + H("00 08")
            + b"USERNAME"
            + H("00 05")
            + b"alice"
            + H("00 06")
            + b"PASSWD"
            + H("00 06")
            + b"secret"
            + H("00 09")
            + b"isolation"
            + H("00 01")
            + b"1",
        )
        transport.clear()
        protocol.dataReceived(H("01 00 00 01 00 03 6b 65 79 00 00"))
        self.assertEqual(transport.value(), REQUEST_EXAMPLE)
        protocol.dataReceived(REPLY_OK)
        self.successResultOf(d)

    def test_proposal229Refused(self) -> None:
        """
        A failed proposal 229 status is L{E.AuthenticationFailed}.
        """
        d, protocol, transport, factory = self.connectSocks5(pairs=[(b"k", b"v")])
        self.assertEqual(transport.value(), H("05 02 00 97"))
        protocol.dataReceived(SELECT_EXTENDED + H("01 01 00 00"))
        self.failureResultOf(d, E.AuthenticationFailed)

    def test_proposal229Codes(self) -> None:
        """
        After method 0x97, E0, E1 and F0-F2 are proposal 229's errors, even
        with C{extendedErrors=True}.
        """
        expected = {
            0xE0: E.HiddenServiceNotFound,
            0xE1: E.HiddenServiceNotReachable,
            0xF0: E.TransportTemporaryFailure,
            0xF1: E.TransportProtocolFailure,
            0xF2: E.TransportInternalError,
        }
        for code, errorClass in expected.items():
            d, protocol, transport, factory = self.connectSocks5(
                pairs={b"k": b"v"}, extendedErrors=True
            )
            protocol.dataReceived(
                SELECT_EXTENDED
                + H("01 00 00 00")
                + bytes([5, code])
                + H("00 01 00 00 00 00 00 00")
            )
            self.assertRefused(d, errorClass, code)

    def test_proxyClosesDuringHandshake(self) -> None:
        """
        A proxy that closes before its final reply gives
        L{ProxyDisconnected}, naming the protocol and carrying the reason,
        wherever the proxy stopped.
        """
        script = SELECT_USERPASS + AUTH_OK + REPLY_OK
        for index in range(len(script)):
            d, protocol, transport, factory = self.connectSocks5(
                username="alice", password="secret"
            )
            protocol.dataReceived(script[:index])
            self.assertNoResult(d)
            protocol.connectionLost(Failure(ConnectionLost("gone")))
            failure = self.failureResultOf(d, ProxyDisconnected)
            self.assertIn("SOCKS5 handshake", str(failure.value))
            self.assertIn("gone", str(failure.value))
            self.assertTrue(failure.value.reason.check(ConnectionLost))
            self.assertEqual(factory.built[0].events, [])

    def test_proxyConnectionFails(self) -> None:
        """
        When the proxy cannot be reached, the Deferred fails with the proxy
        endpoint's own error, and no protocol is built.
        """
        proxy = ScriptedProxyEndpoint()
        factory = RecordingFactory()
        d = SOCKS5ClientEndpoint(proxy, "example.com", 80).connect(factory)
        proxy.fail(ConnectionRefusedError())
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertEqual(factory.built, [])

    def test_cancelBeforeProxyConnection(self) -> None:
        """
        Cancelling before the proxy connection is up cancels that attempt;
        the Deferred fails with C{CancelledError}.
        """
        proxy = ScriptedProxyEndpoint()
        d = SOCKS5ClientEndpoint(proxy, "example.com", 80).connect(RecordingFactory())
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(proxy.cancelled)

    def test_cancelDuringHandshake(self) -> None:
        """
        Cancelling during the handshake aborts the proxy connection; the
        Deferred fails with C{CancelledError}, and the later
        C{connectionLost} changes nothing.
        """
        d, protocol, transport, factory = self.connectSocks5()
        protocol.dataReceived(SELECT_NOAUTH)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionLost()))
        protocol.dataReceived(REPLY_OK)
        self.assertEqual(factory.built[0].events, [])

    def test_cancelAfterConnectingDoesNothing(self) -> None:
        """
        Cancelling after the Deferred fired leaves the tunnel alone.
        """
        d, protocol, transport, factory = self.connectSocks5()
        protocol.dataReceived(SELECT_NOAUTH + REPLY_OK)
        self.successResultOf(d)
        d.cancel()
        self.assertFalse(transport.disconnecting)

    def test_cancelWithMemoryReactor(self) -> None:
        """
        Through a real C{TCP4ClientEndpoint}, cancelling before the proxy
        connects stops the connector, and the Deferred fails with
        C{CancelledError}.
        """
        reactor = MemoryReactorClock()
        proxy = TCP4ClientEndpoint(reactor, "127.0.0.1", 1080)
        d = SOCKS5ClientEndpoint(proxy, "example.com", 80).connect(RecordingFactory())
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(reactor.connectors[0].stoppedConnecting)

    def test_throughTCPEndpoint(self) -> None:
        """
        Through a real C{TCP4ClientEndpoint} (whose wrapping protocol sits
        between the transport and the SOCKS protocol), the handshake runs
        and the application is connected.
        """
        reactor = MemoryReactorClock()
        proxy = TCP4ClientEndpoint(reactor, "127.0.0.1", 1080)
        factory = RecordingFactory(HalfCloseableProtocol)
        d = SOCKS5ClientEndpoint(proxy, "example.com", 80).connect(factory)
        host, port, wrapping, timeout, bindAddress = reactor.tcpClients[0]
        self.assertEqual((host, port), ("127.0.0.1", 1080))
        protocol = wrapping.buildProtocol(PROXY_ADDRESS)
        transport = StringTransport(LOCAL_ADDRESS, PROXY_ADDRESS)
        protocol.makeConnection(transport)
        protocol.dataReceived(SELECT_NOAUTH + REPLY_OK + b"early")
        application = self.successResultOf(d)
        self.assertEqual(application.received(), b"early")
        self.assertTrue(IHalfCloseableProtocol.providedBy(protocol))
        protocol.readConnectionLost()
        self.assertEqual(application.events[-1], ("readLost", None))

    def test_factoryBuildsNothing(self) -> None:
        """
        A factory whose C{buildProtocol} returns L{None} fails the connect
        with C{NoProtocol}, through a real endpoint's wrapping factory.
        """
        reactor = MemoryReactorClock()
        proxy = TCP4ClientEndpoint(reactor, "127.0.0.1", 1080)
        d = SOCKS5ClientEndpoint(proxy, "example.com", 80).connect(NoneFactory())
        wrapping = reactor.tcpClients[0][2]
        self.assertIsNone(wrapping.buildProtocol(PROXY_ADDRESS))
        self.failureResultOf(d, NoProtocol)

    def test_badArguments(self) -> None:
        """
        A bad port, a name the wire cannot carry or an overlong credential
        are refused when the endpoint is made.
        """
        proxy = ScriptedProxyEndpoint()
        self.assertRaises(ValueError, SOCKS5ClientEndpoint, proxy, "example.com", 65536)
        self.assertRaises(TypeError, SOCKS5ClientEndpoint, proxy, "example.com", "80")
        self.assertRaises(ValueError, SOCKS5ClientEndpoint, proxy, "a" * 256, 80)
        self.assertRaises(ValueError, SOCKS5ClientEndpoint, proxy, "", 80)
        self.assertRaises(
            ValueError,
            SOCKS5ClientEndpoint,
            proxy,
            "example.com",
            80,
            username="u" * 256,
        )
        self.assertRaises(
            TypeError, SOCKS5ClientEndpoint, proxy, "example.com", 80, password=5
        )


class TunnelTests(ClientTestMixin, SynchronousTestCase):
    """
    After the handshake the application's protocol owns the connection.
    """

    def connected(self, protocolClass: type = RecordingProtocol, extra: bytes = b""):
        d, protocol, transport, factory = self.connect(
            lambda proxy: SOCKS5ClientEndpoint(proxy, "example.com", 80), protocolClass
        )
        protocol.dataReceived(SELECT_NOAUTH + REPLY_OK + extra)
        transport.clear()
        return self.successResultOf(d), protocol, transport

    def test_bytesBothWays(self) -> None:
        """
        The application's writes go to the proxy connection unchanged, and
        the proxy's bytes to the application, in order.
        """
        application, protocol, transport = self.connected()
        application.transport.write(b"GET / HTTP/1.0\r\n")
        application.transport.writeSequence([b"a", b"b"])
        self.assertEqual(transport.value(), b"GET / HTTP/1.0\r\nab")
        protocol.dataReceived(b"one")
        protocol.dataReceived(b"two")
        self.assertEqual(application.events[1:], [("data", b"one"), ("data", b"two")])

    def test_leftoverThenLaterData(self) -> None:
        """
        Bytes that came with the final reply reach the application after
        C{connectionMade} and before later bytes.
        """
        application, protocol, transport = self.connected(extra=b"first")
        protocol.dataReceived(b"second")
        self.assertEqual(
            [e for e in application.events if e[0] != "made"],
            [("data", b"first"), ("data", b"second")],
        )

    def test_leftoverWaitsWhilePaused(self) -> None:
        """
        An application that pauses in C{connectionMade} gets the early bytes
        only when it resumes; the proxy connection is paused meanwhile.
        """

        class Pausing(RecordingProtocol):
            pauseOnConnect = True

        application, protocol, transport = self.connected(Pausing, extra=b"early")
        self.assertEqual(application.received(), b"")
        self.assertEqual(transport.producerState, "paused")
        application.transport.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(application.received(), b"early")

    def test_pauseAgainWhileFlushing(self) -> None:
        """
        An application that pauses again while it gets the held bytes keeps
        the proxy connection paused.
        """

        class PausingTwice(RecordingProtocol):
            pauseOnConnect = True

            def dataReceived(self, data: bytes) -> None:
                super().dataReceived(data)
                self.transport.pauseProducing()

        application, protocol, transport = self.connected(PausingTwice, extra=b"early")
        application.transport.resumeProducing()
        self.assertEqual(application.received(), b"early")
        self.assertEqual(transport.producerState, "paused")

    def test_pausedLeftoverDeliveredBeforeLoss(self) -> None:
        """
        If the connection ends while early bytes wait, they are delivered
        before C{connectionLost}.
        """

        class Pausing(RecordingProtocol):
            pauseOnConnect = True

        application, protocol, transport = self.connected(Pausing, extra=b"early")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            [kind for kind, _ in application.events], ["made", "data", "lost"]
        )

    def test_connectionLost(self) -> None:
        """
        The application hears of the end of the connection, once.
        """
        application, protocol, transport = self.connected()
        application.transport.loseConnection()
        self.assertTrue(transport.disconnecting)
        reason = Failure(ConnectionDone())
        protocol.connectionLost(reason)
        protocol.connectionLost(reason)
        self.assertEqual(application.events[1:], [("lost", reason)])

    def test_transportInterfaces(self) -> None:
        """
        The application's transport provides what the proxy connection's
        provides (here a push producer) and reports the destination.
        """
        application, protocol, transport = self.connected()
        self.assertTrue(IPushProducer.providedBy(application.transport))
        self.assertIn("example.com", repr(application.transport))

    def test_halfClose(self) -> None:
        """
        A half-closeable application makes the SOCKS protocol half-closeable
        and hears of both half-closes once connected; a plain one does not.
        """
        application, protocol, transport = self.connected(HalfCloseableProtocol)
        self.assertTrue(IHalfCloseableProtocol.providedBy(protocol))
        protocol.readConnectionLost()
        protocol.writeConnectionLost()
        self.assertEqual(
            application.events[1:], [("readLost", None), ("writeLost", None)]
        )
        application, protocol, transport = self.connected()
        self.assertFalse(IHalfCloseableProtocol.providedBy(protocol))

    def test_halfCloseDuringHandshake(self) -> None:
        """
        A proxy that shuts its sending side during the handshake gives
        L{ProxyDisconnected}, and the connection is closed.
        """
        d, protocol, transport, factory = self.connect(
            lambda proxy: SOCKS5ClientEndpoint(proxy, "example.com", 80),
            HalfCloseableProtocol,
        )
        protocol.dataReceived(SELECT_NOAUTH)
        protocol.readConnectionLost()
        self.failureResultOf(d, ProxyDisconnected)
        self.assertTrue(transport.disconnecting)

    def test_applicationConnectionMadeRaises(self) -> None:
        """
        An application whose C{connectionMade} raises fails the Deferred
        with that error, and the connection is aborted.
        """

        class Broken(RecordingProtocol):
            def connectionMade(self) -> None:
                raise ZeroDivisionError()

        d, protocol, transport, factory = self.connect(
            lambda proxy: SOCKS5ClientEndpoint(proxy, "example.com", 80), Broken
        )
        protocol.dataReceived(SELECT_NOAUTH + REPLY_OK + b"x")
        self.failureResultOf(d, ZeroDivisionError)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.built[0].events, [])


class Socks4ConnectTests(ClientTestMixin, SynchronousTestCase):
    """
    L{SOCKS4AClientEndpoint} against a scripted proxy.
    """

    def test_interfaces(self) -> None:
        """
        The endpoint provides C{IStreamClientEndpoint}; the handshake
        provides L{IClientHandshake}.
        """
        endpoint = SOCKS4AClientEndpoint(ScriptedProxyEndpoint(), "example.com", 80)
        verifyObject(IStreamClientEndpoint, endpoint)
        verifyObject(IClientHandshake, Socks4Handshake(endpoint._request))

    def test_socks4Literal(self) -> None:
        """
        An IPv4 literal is a SOCKS4 request with the user id; the peer is
        an C{IPv4Address}.
        """
        d, protocol, transport, factory = self.connectSocks4(
            "192.0.2.7", 80, userId="me"
        )
        self.assertEqual(transport.value(), REQUEST4_LITERAL)
        protocol.dataReceived(REPLY4_GRANTED)
        application = self.successResultOf(d)
        self.assertEqual(
            application.transport.getPeer(), IPv4Address("TCP", "192.0.2.7", 80)
        )
        self.assertEqual(application.transport.getHost(), LOCAL_ADDRESS)

    def test_socks4aName(self) -> None:
        """
        A name is a SOCKS4A request; whichever way the reply and the early
        application bytes are cut, the application gets them after
        C{connectionMade}, with a C{HostnameAddress} peer.
        """
        for chunks in splits(REPLY4_GRANTED + b"banner"):
            d, protocol, transport, factory = self.connectSocks4()
            self.assertEqual(transport.value(), REQUEST4A_EXAMPLE)
            for chunk in chunks:
                protocol.dataReceived(chunk)
            application = self.successResultOf(d)
            self.assertEqual(application.events[0][0], "made")
            self.assertEqual(application.received(), b"banner")
            self.assertEqual(
                application.transport.getPeer(), HostnameAddress(b"example.com", 80)
            )

    def test_failureCodes(self) -> None:
        """
        91, 92 and 93, and any other code but 90, are typed errors carrying
        the code.
        """
        expected = {
            0x5B: E.NotAllowed,
            0x5C: E.IdentdUnreachable,
            0x5D: E.UserIdMismatch,
            0x01: E.NotAllowed,
        }
        for code, errorClass in expected.items():
            d, protocol, transport, factory = self.connectSocks4()
            protocol.dataReceived(bytes([0, code]) + bytes(6))
            self.assertRefused(d, errorClass, code)
            self.assertTrue(transport.disconnecting)

    def test_proxyCloses(self) -> None:
        """
        A proxy that closes before its whole reply gives L{ProxyDisconnected}
        naming SOCKS4.
        """
        for index in range(len(REPLY4_GRANTED)):
            d, protocol, transport, factory = self.connectSocks4()
            protocol.dataReceived(REPLY4_GRANTED[:index])
            protocol.connectionLost(Failure(ConnectionDone()))
            failure = self.failureResultOf(d, ProxyDisconnected)
            self.assertIn("SOCKS4", str(failure.value))

    def test_malformedReply(self) -> None:
        """
        A reply with version 04 instead of 00 is L{ProxyProtocolError}.
        """
        d, protocol, transport, factory = self.connectSocks4()
        protocol.dataReceived(H("04 5a 00 00 00 00 00 00"))
        self.failureResultOf(d, ProxyProtocolError)

    def test_cancel(self) -> None:
        """
        Cancelling during the handshake aborts the connection.
        """
        d, protocol, transport, factory = self.connectSocks4()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(transport.disconnecting)

    def test_refusesIPv6(self) -> None:
        """
        SOCKS4 cannot carry an IPv6 destination; a user id with NUL is
        refused too.
        """
        proxy = ScriptedProxyEndpoint()
        self.assertRaises(ValueError, SOCKS4AClientEndpoint, proxy, "2001:db8::1", 80)
        self.assertRaises(
            ValueError, SOCKS4AClientEndpoint, proxy, "example.com", 80, userId=b"a\0b"
        )


class ResolveTests(ClientTestMixin, SynchronousTestCase):
    """
    Tor's RESOLVE and RESOLVE_PTR.
    """

    def query(self, call):
        proxy = ScriptedProxyEndpoint()
        d = call(proxy)
        protocol, transport = proxy.complete()
        return d, protocol, transport

    def test_socks5Resolve(self) -> None:
        """
        RESOLVE sends command F0 with the name and fires with the address of
        the reply, IPv4 or IPv6; then the connection is closed.
        """
        for bound, expected in [
            (H("01 c0 00 02 07 00 00"), V4("192.0.2.7")),
            (H("04 20 01 0d b8" + " 00" * 11 + " 01 00 00"), V6("2001:db8::1")),
        ]:
            d, protocol, transport = self.query(
                lambda p: socks5Resolve(p, "example.com")
            )
            protocol.dataReceived(SELECT_NOAUTH + H("05 00 00") + bound)
            self.assertEqual(
                transport.value(),
                GREETING_NOAUTH + H("05 f0 00 03 0b") + b"example.com" + H("00 00"),
            )
            self.assertEqual(self.successResultOf(d), expected)
            self.assertTrue(transport.disconnecting)

    def test_socks5ResolveWithCredentials(self) -> None:
        """
        RESOLVE authenticates like a connection does.
        """
        d, protocol, transport = self.query(
            lambda p: socks5Resolve(
                p, "example.com", username="alice", password="secret"
            )
        )
        protocol.dataReceived(
            SELECT_USERPASS + AUTH_OK + H("05 00 00 01 c0 00 02 07 00 00")
        )
        self.assertTrue(
            transport.value().startswith(GREETING_USERPASS + USERPASS_ALICE)
        )
        self.assertEqual(self.successResultOf(d), V4("192.0.2.7"))

    def test_socks5ResolveFails(self) -> None:
        """
        A failure reply to RESOLVE is the typed error with its code.
        """
        d, protocol, transport = self.query(lambda p: socks5Resolve(p, "example.com"))
        protocol.dataReceived(SELECT_NOAUTH + H("05 04 00 01 00 00 00 00 00 00"))
        self.assertRefused(d, E.HostUnreachable, 4)

    def test_socks5ResolveAnsweredWithName(self) -> None:
        """
        A RESOLVE reply holding a name is L{ProxyProtocolError}.
        """
        d, protocol, transport = self.query(lambda p: socks5Resolve(p, "example.com"))
        protocol.dataReceived(SELECT_NOAUTH + H("05 00 00 03 01 61 00 00"))
        self.failureResultOf(d, ProxyProtocolError)

    def test_socks5ResolvePtr(self) -> None:
        """
        RESOLVE_PTR sends command F1 with the address and fires with the
        name of the reply.
        """
        d, protocol, transport = self.query(lambda p: socks5ResolvePtr(p, "192.0.2.7"))
        protocol.dataReceived(
            SELECT_NOAUTH + H("05 00 00 03 0b") + b"example.com" + H("00 00")
        )
        self.assertEqual(
            transport.value(), GREETING_NOAUTH + H("05 f1 00 01 c0 00 02 07 00 00")
        )
        self.assertEqual(self.successResultOf(d), "example.com")

    def test_socks5ResolvePtrAnsweredWithAddress(self) -> None:
        """
        A RESOLVE_PTR reply holding an address is L{ProxyProtocolError}.
        """
        d, protocol, transport = self.query(
            lambda p: socks5ResolvePtr(p, V6("2001:db8::1"))
        )
        protocol.dataReceived(SELECT_NOAUTH + H("05 00 00 01 c0 00 02 07 00 00"))
        self.failureResultOf(d, ProxyProtocolError)

    def test_socks5ResolveUnknownArgument(self) -> None:
        """
        An unknown keyword argument is a C{TypeError}.
        """
        self.assertRaises(
            TypeError, socks5Resolve, ScriptedProxyEndpoint(), "a", user="x"
        )

    def test_socks4aResolve(self) -> None:
        """
        SOCKS4A RESOLVE sends command F0 with the name and fires with the
        address of the reply.
        """
        d, protocol, transport = self.query(lambda p: socks4aResolve(p, "example.com"))
        self.assertEqual(
            transport.value(),
            H("04 f0 00 00 00 00 00 01 00") + b"example.com" + H("00"),
        )
        protocol.dataReceived(H("00 5a 00 00 c0 00 02 07"))
        self.assertEqual(self.successResultOf(d), V4("192.0.2.7"))
        self.assertTrue(transport.disconnecting)

    def test_socks4aResolveFails(self) -> None:
        """
        A refused SOCKS4A RESOLVE is L{E.NotAllowed} with code 91.
        """
        d, protocol, transport = self.query(lambda p: socks4aResolve(p, "example.com"))
        protocol.dataReceived(H("00 5b 00 00 00 00 00 00"))
        self.assertRefused(d, E.NotAllowed, 0x5B)

    def test_queryProxyCloses(self) -> None:
        """
        A proxy that closes before answering a query gives
        L{ProxyDisconnected}.
        """
        d, protocol, transport = self.query(lambda p: socks5Resolve(p, "example.com"))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ProxyDisconnected)


class HelperTests(SynchronousTestCase):
    """
    L{peerAddressFor}, L{HandshakeResult} and L{quoteArgument}.
    """

    def test_peerAddressFor(self) -> None:
        """
        Literals become C{IPv4Address}/C{IPv6Address}, names a
        C{HostnameAddress} with UTF-8 bytes.
        """
        self.assertEqual(
            peerAddressFor(Destination(V4("192.0.2.1"), 1)),
            IPv4Address("TCP", "192.0.2.1", 1),
        )
        self.assertEqual(
            peerAddressFor(Destination(V6("2001:db8::1"), 2)),
            IPv6Address("TCP", "2001:db8::1", 2),
        )
        self.assertEqual(
            peerAddressFor(Destination("bücher.example", 3)),
            HostnameAddress("bücher.example".encode(), 3),
        )

    def test_handshakeResultChecks(self) -> None:
        """
        A L{HandshakeResult} needs a L{Destination} and bytes.
        """
        self.assertRaises(TypeError, HandshakeResult, ("a", 1))
        self.assertRaises(TypeError, HandshakeResult, Destination("a", 1), "text")

    def test_quoteArgument(self) -> None:
        """
        Backslashes, colons and equals signs are escaped.
        """
        self.assertEqual(quoteArgument(r"a:b=c\d"), r"a\:b\=c\\d")


class EndpointStringTests(SynchronousTestCase):
    """
    The C{socks5:} and C{socks4a:} endpoint strings.
    """

    def setUp(self) -> None:
        usePluginsFromSource(self)
        self.reactor = MemoryReactorClock()

    def parse(self, description: str) -> Any:
        return clientFromString(self.reactor, description)

    def test_pluginsFound(self) -> None:
        """
        Twisted's plugin system finds a parser for each prefix, and each
        provides the parser interface.
        """
        plugins = {
            p.prefix: p
            for p in getPlugins(IStreamClientEndpointStringParserWithReactor)
        }
        self.assertIsInstance(plugins["socks5"], SOCKS5EndpointParser)
        self.assertIsInstance(plugins["socks4a"], SOCKS4AEndpointParser)
        verifyObject(IStreamClientEndpointStringParserWithReactor, plugins["socks5"])

    def test_socks5(self) -> None:
        """
        C{socks5:HOST:PORT:proxy=...} is a L{SOCKS5ClientEndpoint} to the
        destination through the escaped proxy endpoint.
        """
        endpoint = self.parse(r"socks5:example.com:80:proxy=tcp\:127.0.0.1\:9050")
        self.assertIsInstance(endpoint, SOCKS5ClientEndpoint)
        self.assertEqual(endpoint.destination, Destination("example.com", 80))
        self.assertIsInstance(endpoint.proxyEndpoint, TCP4ClientEndpoint)
        self.assertEqual(endpoint.proxyEndpoint._host, "127.0.0.1")
        self.assertEqual(endpoint.proxyEndpoint._port, 9050)

    def test_defaultProxy(self) -> None:
        """
        Without C{proxy=}, the proxy is L{DEFAULT_PROXY},
        C{tcp:127.0.0.1:1080}.
        """
        self.assertEqual(DEFAULT_PROXY, "tcp:127.0.0.1:1080")
        endpoint = self.parse("socks5:example.com:80")
        self.assertEqual(
            (endpoint.proxyEndpoint._host, endpoint.proxyEndpoint._port),
            ("127.0.0.1", 1080),
        )

    def test_unixProxy(self) -> None:
        """
        The proxy may be any endpoint, such as a UNIX socket.
        """
        endpoint = self.parse(r"socks4a:example.com:80:proxy=unix\:/run/socks.sock")
        self.assertIsInstance(endpoint.proxyEndpoint, UNIXClientEndpoint)

    def test_keywordsAndIPv6(self) -> None:
        """
        Host and port may be keywords, and an IPv6 literal is escaped, with
        or without brackets.
        """
        for description in (
            r"socks5:host=2001\:db8\:\:1:port=443",
            r"socks5:[2001\:db8\:\:1]:443",
            r"socks5:2001\:db8\:\:1:443",
        ):
            endpoint = self.parse(description)
            self.assertEqual(endpoint.destination, Destination(V6("2001:db8::1"), 443))

    def test_credentialsAndFlags(self) -> None:
        """
        C{user=}, C{password=}, C{pair.KEY=} and C{extendedErrors=} reach
        the handshake: the right methods are offered and F0 is an onion
        error.
        """
        endpoint = self.parse(
            "socks5:example.com:80:user=alice:password=s\\:e=cret:pair.ISO=1:extendedErrors=yes"
        )
        options = endpoint._options
        self.assertEqual(options.offer.methods, (0x00, 0x02, 0x97))
        self.assertEqual(options.usernamePassword.password, b"s:e=cret")
        self.assertEqual(
            options.extended.pairs,
            ((b"USERNAME", b"alice"), (b"PASSWD", b"s:e=cret"), (b"ISO", b"1")),
        )
        self.assertTrue(options.extendedErrors)

    def test_socks4a(self) -> None:
        """
        C{socks4a:} takes C{userId=}.
        """
        endpoint = self.parse("socks4a:192.0.2.7:25:userId=me")
        self.assertIsInstance(endpoint, SOCKS4AClientEndpoint)
        self.assertEqual(endpoint.userId, b"me")
        self.assertEqual(endpoint.destination, Destination(V4("192.0.2.7"), 25))

    def test_errors(self) -> None:
        """
        Missing or bad parameters, unknown ones, and ones of the other
        version are errors.
        """
        for description in (
            "socks5",
            "socks5:example.com",
            "socks5:example.com:http",
            "socks5:example.com:80:extra",
            "socks5:example.com:80:host=other",
            "socks5:example.com:80:usr=alice",
            "socks5:example.com:80:userId=me",
            "socks4a:example.com:80:user=alice",
            "socks5:example.com:80:extendedErrors=maybe",
            "socks5:example.com:80:pair.=x",
            "socks5:example.com:80:trustRoots=/nonexistent",
            "socks5:example.com:80:tls=yes:trustRoots=/nonexistent",
            "socks5:example.com:80:proxy=nosuchtype\\:x",
            "socks4a:2001\\:db8\\:\\:1:80",
        ):
            self.assertRaises(ValueError, self.parse, description)

    def test_tlsThroughProxy(self) -> None:
        """
        With C{tls=yes}, the application's protocol is wrapped in TLS, which
        starts once the proxy has connected the tunnel: the first bytes
        after the SOCKS reply are a TLS ClientHello naming the destination.
        """
        endpoint = self.parse(
            r"socks5:example.com:443:tls=yes:proxy=tcp\:127.0.0.1\:1080"
        )
        factory = RecordingFactory()
        d = endpoint.connect(factory)
        wrapping = self.reactor.tcpClients[0][2]
        protocol = wrapping.buildProtocol(PROXY_ADDRESS)
        transport = StringTransport(LOCAL_ADDRESS, PROXY_ADDRESS)
        protocol.makeConnection(transport)
        protocol.dataReceived(SELECT_NOAUTH)
        transport.clear()
        protocol.dataReceived(H("05 00 00 01 c0 00 02 01 9c 40"))
        hello = transport.value()
        self.assertEqual(hello[:1], b"\x16")
        self.assertIn(b"example.com", hello)
        application = self.successResultOf(d)
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        self.assertIsInstance(application.transport, TLSMemoryBIOProtocol)
        self.assertEqual(
            application.transport.getPeer(), HostnameAddress(b"example.com", 443)
        )

    def test_tlsTrustRoots(self) -> None:
        """
        C{trustRoots=} takes a PEM file or a directory of C{.pem} files; one
        without a certificate, or with a broken one, is an error.
        """
        pem, _ = makeCertificate(("example.com",))
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "ca.pem").write_bytes(pem)
        (directory / "notes.txt").write_text("not a certificate")
        single = directory / "ca.pem"
        for path in (str(directory), str(single)):
            endpoint = self.parse(
                f"socks5:example.com:443:tls=yes:trustRoots={quoteArgument(path)}"
            )
            self.assertTrue(IStreamClientEndpoint.providedBy(endpoint))
        empty = Path(self.mktemp())
        empty.mkdir()
        broken = Path(self.mktemp())
        broken.write_text(
            "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"
        )
        for path in (empty, broken):
            self.assertRaises(
                ValueError,
                self.parse,
                f"socks5:example.com:443:tls=yes:trustRoots={path}",
            )

    test_tlsThroughProxy.skip = NO_TLS
    test_tlsTrustRoots.skip = NO_TLS

    def test_endpointForDestination(self) -> None:
        """
        L{endpointForDestination} builds a description's endpoint for a
        destination given apart (an IPv6 literal too), and refuses other
        endpoint types and descriptions with a destination of their own.
        """
        description = r"socks5:proxy=tcp\:127.0.0.1\:9050:user=alice:"
        endpoint = endpointForDestination(
            self.reactor, description, Destination(V6("2001:db8::1"), 443)
        )
        self.assertEqual(endpoint.destination, Destination(V6("2001:db8::1"), 443))
        self.assertEqual(endpoint._options.usernamePassword.username, b"alice")
        endpoint = endpointForDestination(
            self.reactor, "socks4a", Destination("example.com", 1)
        )
        self.assertIsInstance(endpoint, SOCKS4AClientEndpoint)
        self.assertRaises(
            ValueError,
            endpointForDestination,
            self.reactor,
            "tcp:127.0.0.1:1080",
            Destination("example.com", 1),
        )
        self.assertRaises(
            ValueError,
            endpointForDestination,
            self.reactor,
            "socks5:example.org:80",
            Destination("example.com", 1),
        )


@implementer(IHalfCloseableProtocol)
class Gatherer(Protocol):
    """
    Gathers what arrives over a real connection.

    @ivar done: fires with the bytes received at the peer's EOF or the end
        of the connection, whichever comes first.
    @ivar lost: fires with the reason when the connection is gone.
    @ivar peer: C{getPeer()} at C{connectionMade}.
    @ivar host: C{getHost()} at C{connectionMade}.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.done: Deferred = Deferred()
        self.lost: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()
        self.host = self.transport.getHost()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        if not self.done.called:
            self.done.callback(bytes(self.received))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if not self.done.called:
            self.done.callback(bytes(self.received))
        self.lost.callback([reason])


class SocksdLoopbackTests(TestCase):
    """
    The client endpoints against socksd's own server, on 127.0.0.1 with the
    real reactor, in front of a real echo server.
    """

    timeout = 60

    async def listen(self, factory: Factory, **kw: Any) -> int:
        """Listen on 127.0.0.1 until the test ends; return the port."""
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1", **kw).listen(
            factory
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def startSocksd(self, **kw: Any) -> int:
        """
        socksd resolving only L{LOOPBACK_NAME} (to 127.0.0.1), direct
        upstream; C{kw} goes to L{SocksServerFactory}.
        """
        resolver = FakeResolver({LOOPBACK_NAME: ["127.0.0.1"]})
        factory = SocksServerFactory(
            reactor,
            upstream=DirectUpstream(reactor, resolver, connectTimeout=5.0),
            resolver=resolver,
            **kw,
        )
        return await self.listen(factory)

    async def setUpEcho(self) -> tuple[int, int]:
        """An echo server and socksd; return their ports."""
        return (
            await self.listen(Factory.forProtocol(EchoProtocol)),
            await self.startSocksd(),
        )

    def proxy(self, port: int) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=WAIT)

    async def echo(self, endpoint: Any, payload: bytes = b"") -> Gatherer:
        """
        Send C{payload} through C{endpoint} to an echo server, half-close,
        and check that the same bytes come back before the echo's EOF.
        """
        payload = payload or os.urandom(128 * 1024)
        protocol = await endpoint.connect(Factory.forProtocol(Gatherer)).addTimeout(
            WAIT, reactor
        )
        protocol.transport.write(payload)
        protocol.transport.loseWriteConnection()
        received = await protocol.done.addTimeout(WAIT, reactor)
        self.assertEqual(len(received), len(payload))
        self.assertEqual(received, payload)
        await protocol.lost
        return protocol

    async def test_socks5Echo(self) -> None:
        """
        SOCKS5 to an IPv4 literal: bytes go both ways unchanged, half-close
        included; the peer is the destination, the host the local end of
        the proxy connection.
        """
        echoPort, socksPort = await self.setUpEcho()
        endpoint = SOCKS5ClientEndpoint(self.proxy(socksPort), "127.0.0.1", echoPort)
        protocol = await self.echo(endpoint)
        self.assertEqual(protocol.peer, IPv4Address("TCP", "127.0.0.1", echoPort))
        self.assertEqual(protocol.host.host, "127.0.0.1")
        self.assertNotIn(protocol.host.port, (socksPort, echoPort))

    async def test_socks5NameOnlySocksdKnows(self) -> None:
        """
        A name only socksd's resolver knows is reached by SOCKS5; the peer
        is a C{HostnameAddress}.
        """
        echoPort, socksPort = await self.setUpEcho()
        endpoint = SOCKS5ClientEndpoint(self.proxy(socksPort), LOOPBACK_NAME, echoPort)
        protocol = await self.echo(endpoint)
        self.assertEqual(
            protocol.transport.getPeer(),
            HostnameAddress(LOOPBACK_NAME.encode(), echoPort),
        )

    async def test_socks4(self) -> None:
        """
        SOCKS4 to a literal and SOCKS4A to a name only socksd knows both
        carry the echo.
        """
        echoPort, socksPort = await self.setUpEcho()
        for host in ("127.0.0.1", LOOPBACK_NAME):
            await self.echo(
                SOCKS4AClientEndpoint(
                    self.proxy(socksPort), host, echoPort, userId="me"
                )
            )

    async def test_refused(self) -> None:
        """
        A destination port nobody listens on is L{E.ConnectionRefused} with
        reply code 5 over SOCKS5, and L{E.NotAllowed} with 91 over SOCKS4.
        """
        socksPort = await self.startSocksd()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        endpoint = SOCKS5ClientEndpoint(self.proxy(socksPort), "127.0.0.1", closed)
        error = await self.assertFailure(
            endpoint.connect(Factory.forProtocol(Gatherer)), E.ConnectionRefused
        )
        self.assertEqual(error.replyCode, 5)
        endpoint = SOCKS4AClientEndpoint(self.proxy(socksPort), "127.0.0.1", closed)
        error = await self.assertFailure(
            endpoint.connect(Factory.forProtocol(Gatherer)), E.NotAllowed
        )
        self.assertEqual(error.replyCode, 0x5B)

    async def test_unknownName(self) -> None:
        """
        A name socksd's resolver does not know is L{E.HostUnreachable} with
        reply code 4.
        """
        socksPort = await self.startSocksd()
        endpoint = SOCKS5ClientEndpoint(self.proxy(socksPort), "unknown.invalid", 80)
        error = await self.assertFailure(
            endpoint.connect(Factory.forProtocol(Gatherer)), E.HostUnreachable
        )
        self.assertEqual(error.replyCode, 4)

    async def test_usernamePassword(self) -> None:
        """
        With socksd requiring a login, the right credentials get through and
        wrong ones are L{E.AuthenticationFailed}.
        """
        echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        authenticator = Authenticator(
            portalFromCheckers([strcred.makeChecker("memory:alice:secret")]),
            reactor,
            failureDelay=0,
        )
        socksPort = await self.startSocksd(authenticator=authenticator)
        await self.echo(
            SOCKS5ClientEndpoint(
                self.proxy(socksPort),
                "127.0.0.1",
                echoPort,
                username="alice",
                password="secret",
            )
        )
        for credentials in ({"username": "alice", "password": "wrong"}, {}):
            endpoint = SOCKS5ClientEndpoint(
                self.proxy(socksPort), "127.0.0.1", echoPort, **credentials
            )
            await self.assertFailure(
                endpoint.connect(Factory.forProtocol(Gatherer)), E.AuthenticationFailed
            )

    async def test_chainedEndpointString(self) -> None:
        """
        An endpoint string whose proxy is another C{socks5:} endpoint goes
        through two socksd servers in turn.
        """
        usePluginsFromSource(self)
        echoPort, firstPort = await self.setUpEcho()
        secondPort = await self.startSocksd()
        toFirst = quoteArgument(f"tcp:127.0.0.1:{firstPort}")
        toSecond = f"socks5:127.0.0.1:{secondPort}:proxy={toFirst}"
        endpoint = clientFromString(
            reactor,
            f"socks5:{LOOPBACK_NAME}:{echoPort}:proxy={quoteArgument(toSecond)}",
        )
        self.assertIsInstance(endpoint.proxyEndpoint, SOCKS5ClientEndpoint)
        await self.echo(endpoint)

    async def test_tlsToDestination(self) -> None:
        """
        C{tls=yes} speaks TLS through socksd to a TLS echo server whose
        certificate is checked against C{trustRoots=} and the name.
        """
        usePluginsFromSource(self)
        certificate, key = makeCertificate((LOOPBACK_NAME,))
        pem = Path(self.mktemp())
        pem.write_bytes(certificate)
        from twisted.internet.ssl import PrivateCertificate

        options = PrivateCertificate.loadPEM(certificate + key).options()
        port = await SSL4ServerEndpoint(
            reactor, 0, options, interface="127.0.0.1"
        ).listen(Factory.forProtocol(EchoProtocol))
        self.addCleanup(port.stopListening)
        socksPort = await self.startSocksd()
        endpoint = clientFromString(
            reactor,
            f"socks5:{LOOPBACK_NAME}:{port.getHost().port}:tls=yes"
            f":trustRoots={quoteArgument(str(pem))}:proxy=tcp\\:127.0.0.1\\:{socksPort}",
        )
        protocol = await endpoint.connect(Factory.forProtocol(Gatherer)).addTimeout(
            WAIT, reactor
        )
        protocol.transport.write(b"over TLS")
        for _ in range(int(WAIT * 100)):
            if bytes(protocol.received) == b"over TLS":
                break
            await deferLater(reactor, 0.01)
        self.assertEqual(bytes(protocol.received), b"over TLS")
        protocol.transport.loseConnection()
        await protocol.lost

    test_tlsToDestination.skip = NO_TLS


def makeCertificate(
    dnsNames: tuple[str, ...] = (), ipAddresses: tuple[str, ...] = ()
) -> tuple[bytes, bytes]:
    """
    A throwaway self-signed certificate, usable as its own trust root.

    @return: the certificate and its private key, in PEM.
    """
    from datetime import datetime, timedelta, timezone
    from ipaddress import ip_address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "socksd test")])
    now = datetime.now(timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    alternatives = [x509.DNSName(n) for n in dnsNames] + [
        x509.IPAddress(ip_address(a)) for a in ipAddresses
    ]
    if alternatives:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alternatives), critical=False
        )
    certificate = builder.sign(key, hashes.SHA256())
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), keyPEM
