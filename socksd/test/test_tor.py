"""
Tests for L{socksd.server.tor}: Tor's RESOLVE and RESOLVE_PTR, stream
isolation, lenient authentication, extended and proposal 229 reply codes,
onion name checks.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address as TCPAddress
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase

from socksd.address import Destination
from socksd.errors import (
    AuthenticationFailed,
    MalformedMessage,
    OnionDescriptorNotFound,
    TransportTemporaryFailure,
)
from socksd.onion import onionAddressFromKey
from socksd.replies import ReplyProfile, errorForReply
from socksd.server import ServerConfig
from socksd.server.tor import (
    extendedCredentials,
    isolationKeyFor,
    socks5Methods,
    upstreamCredentials,
)
from socksd.test.test_dispatch import CLIENT, FakePolicy, Harness
from socksd.test.test_server_socks5 import FakeAuthenticator
from socksd.testing import FakeResolver
from socksd.wire import socks5

NAMES = {
    "example.com": ["192.0.2.1", "2001:db8::1"],
    "v6.example.com": ["2001:db8::2"],
}
REVERSE = {"192.0.2.1": "example.com", "2001:db8::1": "v6.example.com"}

GREETING = bytes.fromhex("05 01 00")
SELECTED = bytes.fromhex("05 00")
#: CONNECT 192.0.2.1:80
CONNECT = bytes.fromhex("05 01 00 01 c0000201 0050")
VALID_ONION = onionAddressFromKey(bytes(range(32)))
#: A v3-looking name whose checksum is wrong.
INVALID_ONION = "a" * 56 + ".onion"


def failure5(code: int) -> bytes:
    """A SOCKS5 failure reply with C{code}, bound 0.0.0.0:0."""
    return bytes([5, code]) + bytes.fromhex("00 01 00000000 0000")


def domainRequest(command: int, name: str, port: int = 0) -> bytes:
    """A SOCKS5 request for C{name}, domain-type."""
    raw = name.encode("ascii")
    return bytes([5, command, 0, 3, len(raw)]) + raw + port.to_bytes(2, "big")


def socks4Request(command: int, name: str | None, userId: bytes = b"") -> bytes:
    """A SOCKS4A request for C{name}, or a SOCKS4 one for 192.0.2.1."""
    if name is None:
        return bytes([4, command, 0, 0]) + bytes([192, 0, 2, 1]) + userId + b"\0"
    return (
        bytes([4, command, 0, 0, 0, 0, 0, 1])
        + userId
        + b"\0"
        + name.encode("ascii")
        + b"\0"
    )


def extendedRequest(*pairs: tuple[bytes, bytes]) -> bytes:
    """A proposal 229 extended authentication request."""
    data = bytes([1]) + len(pairs).to_bytes(2, "big")
    for key, value in pairs:
        data += (
            len(key).to_bytes(2, "big") + key + len(value).to_bytes(2, "big") + value
        )
    return data


class TorHarness(Harness):
    """The dispatch harness, with a resolver that knows reverse names."""

    def __init__(self, testCase: SynchronousTestCase, **kwargs: Any) -> None:
        super().__init__(testCase, **kwargs)
        self.resolver = FakeResolver(NAMES, REVERSE)
        self.factory.resolver = self.resolver


class HangingResolver:
    """A resolver whose lookups never end, until cancelled."""

    def __init__(self) -> None:
        self.cancelled: list[Deferred[Any]] = []

    def resolve(self, name: str) -> Deferred[Any]:
        return Deferred(self.cancelled.append)

    def reverse(self, address: Any) -> Deferred[Any]:
        return Deferred(self.cancelled.append)


class ResolveTests(SynchronousTestCase):
    """
    Tor's RESOLVE (0xF0) over SOCKS5, SOCKS4A and SOCKS4, and RESOLVE_PTR
    (0xF1) over SOCKS5.
    """

    def setUp(self) -> None:
        self.harness = TorHarness(self)

    def socks5(self, request: bytes) -> tuple[Any, Any]:
        protocol, transport = self.harness.connect()
        protocol.dataReceived(GREETING + request)
        return protocol, transport

    def test_socks5ResolveIPv4(self) -> None:
        """
        RESOLVE of a name answers 00 with its first address (IPv4 type) and
        closes; nothing is connected.
        """
        protocol, transport = self.socks5(domainRequest(0xF0, "example.com"))
        self.assertEqual(
            transport.value(), SELECTED + bytes.fromhex("05 00 00 01 c0000201 0000")
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.harness.upstream.attempts, [])
        self.assertEqual(self.harness.resolver.queries, ["example.com"])
        self.harness.close(protocol)
        event = self.harness.onlyEvent(self)
        self.assertEqual(event["reply"], "SUCCEEDED")
        self.assertEqual(event["commandCode"], 0xF0)

    def test_socks5ResolveIPv6(self) -> None:
        """
        A name with only an IPv6 address is answered with an IPv6-type
        address.
        """
        protocol, transport = self.socks5(domainRequest(0xF0, "v6.example.com"))
        self.assertEqual(
            transport.value(),
            SELECTED
            + bytes.fromhex("05 00 00 04 20010db8000000000000000000000002 0000"),
        )

    def test_socks5ResolveUnknown(self) -> None:
        """
        A name the resolver does not know gets 04 (host unreachable), then
        a close.
        """
        protocol, transport = self.socks5(domainRequest(0xF0, "nowhere.example"))
        self.assertEqual(transport.value(), SELECTED + failure5(0x04))
        self.assertTrue(transport.disconnecting)

    def test_socks5ResolveLiteral(self) -> None:
        """
        RESOLVE of an address literal answers with it, without a lookup.
        """
        protocol, transport = self.socks5(bytes.fromhex("05 f0 00 01 c0000209 0000"))
        self.assertEqual(
            transport.value(), SELECTED + bytes.fromhex("05 00 00 01 c0000209 0000")
        )
        self.assertEqual(self.harness.resolver.queries, [])

    def test_resolveOnionName(self) -> None:
        """
        An onion name is never given to the resolver: a valid one gets 04,
        an invalid one 04 (F6 with extended errors, see L{OnionTests}).
        """
        for name in (VALID_ONION, INVALID_ONION):
            protocol, transport = self.socks5(domainRequest(0xF0, name))
            self.assertEqual(transport.value(), SELECTED + failure5(0x04))
        self.assertEqual(self.harness.resolver.queries, [])

    def test_resolveTimeout(self) -> None:
        """
        A lookup that does not end within the connect timeout is cancelled,
        and the client gets 04.
        """
        resolver = HangingResolver()
        self.harness.factory.resolver = resolver
        protocol, transport = self.socks5(domainRequest(0xF0, "example.com"))
        self.assertEqual(transport.value(), SELECTED)
        self.harness.clock.advance(ServerConfig().connectTimeout)
        self.assertEqual(len(resolver.cancelled), 1)
        self.assertEqual(transport.value(), SELECTED + failure5(0x04))

    def test_clientLeavesDuringLookup(self) -> None:
        """
        A client that closes while its name is looked up cancels the lookup.
        """
        resolver = HangingResolver()
        self.harness.factory.resolver = resolver
        protocol, transport = self.socks5(domainRequest(0xF0, "example.com"))
        self.harness.close(protocol)
        self.assertEqual(len(resolver.cancelled), 1)
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])

    def test_policyApplies(self) -> None:
        """
        The policy is asked about a RESOLVE (command 0xF0); when it refuses,
        the client gets 02 and the resolver is not asked.
        """
        policy = FakePolicy(requests=False)
        self.harness.factory.policy = policy
        protocol, transport = self.socks5(domainRequest(0xF0, "example.com"))
        self.assertEqual(transport.value(), SELECTED + failure5(0x02))
        [(_, context, destination)] = [a for a in policy.asked if a[0] == "request"]
        self.assertEqual(context.command, 0xF0)
        self.assertEqual(destination, Destination("example.com", 0))
        self.assertEqual(self.harness.resolver.queries, [])

    def test_socks4aResolve(self) -> None:
        """
        RESOLVE over SOCKS4A answers 5A with the IPv4 address in the
        reply's address field; an unknown name gets 5B.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(socks4Request(0xF0, "example.com"))
        self.assertEqual(transport.value(), bytes.fromhex("00 5a 0000 c0000201"))
        self.assertTrue(transport.disconnecting)
        protocol, transport = self.harness.connect()
        protocol.dataReceived(socks4Request(0xF0, "nowhere.example"))
        self.assertEqual(transport.value(), bytes.fromhex("00 5b 0000 00000000"))

    def test_socks4aResolveIPv6Only(self) -> None:
        """
        A name with only IPv6 addresses cannot be told over SOCKS4A: 5B.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(socks4Request(0xF0, "v6.example.com"))
        self.assertEqual(transport.value(), bytes.fromhex("00 5b 0000 00000000"))

    def test_socks4Resolve(self) -> None:
        """
        RESOLVE over plain SOCKS4 (an address, as Tor accepts it) answers
        with that address.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(socks4Request(0xF0, None, b"alice"))
        self.assertEqual(transport.value(), bytes.fromhex("00 5a 0000 c0000201"))

    def test_resolvePtr(self) -> None:
        """
        RESOLVE_PTR of an IPv4 or IPv6 address answers with the name as a
        domain-type address.
        """
        protocol, transport = self.socks5(bytes.fromhex("05 f1 00 01 c0000201 0000"))
        self.assertEqual(
            transport.value(),
            SELECTED + bytes.fromhex("05 00 00 03 0b") + b"example.com" + b"\0\0",
        )
        self.assertTrue(transport.disconnecting)
        protocol, transport = self.socks5(
            bytes.fromhex("05 f1 00 04 20010db8000000000000000000000001 0000")
        )
        self.assertEqual(
            transport.value(),
            SELECTED + bytes.fromhex("05 00 00 03 0e") + b"v6.example.com" + b"\0\0",
        )

    def test_resolvePtrMissing(self) -> None:
        """
        An address without a name gets 04 at once, not a hang.
        """
        protocol, transport = self.socks5(bytes.fromhex("05 f1 00 01 c0000263 0000"))
        self.assertEqual(transport.value(), SELECTED + failure5(0x04))
        self.assertTrue(transport.disconnecting)

    def test_resolvePtrOfName(self) -> None:
        """
        RESOLVE_PTR of a name (not an address) gets 08 (address type not
        supported), as Tor answers it, without asking the resolver.
        """
        protocol, transport = self.socks5(domainRequest(0xF1, "example.com"))
        self.assertEqual(transport.value(), SELECTED + failure5(0x08))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.harness.resolver.queries, [])

    def test_optimisticDataDiscarded(self) -> None:
        """
        Bytes sent after a RESOLVE request go nowhere.
        """
        protocol, transport = self.socks5(
            domainRequest(0xF0, "example.com") + b"GET / HTTP/1.0\r\n\r\n"
        )
        self.assertEqual(
            transport.value(), SELECTED + bytes.fromhex("05 00 00 01 c0000201 0000")
        )
        self.assertEqual(self.harness.upstream.attempts, [])


class IsolationKeyTests(SynchronousTestCase):
    """
    L{isolationKeyFor} and L{upstreamCredentials}.
    """

    destination = Destination("example.com", 443)

    def test_default(self) -> None:
        """
        By default the key is the credentials themselves: equal credentials
        share it, different ones do not, and none give L{None}.
        """
        config = ServerConfig()
        key = isolationKeyFor(config, CLIENT, (b"a", b"b"), self.destination)
        self.assertEqual(key, (b"a", b"b"))
        self.assertEqual(
            key, isolationKeyFor(config, CLIENT, (b"a", b"b"), Destination("x", 1))
        )
        self.assertNotEqual(
            key, isolationKeyFor(config, CLIENT, (b"a", b"c"), self.destination)
        )
        self.assertIsNone(isolationKeyFor(config, CLIENT, None, self.destination))

    def test_noSocksAuth(self) -> None:
        """
        Without C{isolateSocksAuth}, credentials do not isolate.
        """
        config = ServerConfig(isolateSocksAuth=False)
        self.assertIsNone(
            isolationKeyFor(config, CLIENT, (b"a", b"b"), self.destination)
        )

    def test_options(self) -> None:
        """
        Each other option adds its part: client host (not port),
        destination host (case-insensitive), destination port.
        """
        otherPort = TCPAddress("TCP", "192.0.2.7", 1)
        otherHost = TCPAddress("TCP", "192.0.2.8", 50000)
        config = ServerConfig(isolateClientAddr=True)
        key = isolationKeyFor(config, CLIENT, None, self.destination)
        self.assertEqual(
            key, isolationKeyFor(config, otherPort, None, self.destination)
        )
        self.assertNotEqual(
            key, isolationKeyFor(config, otherHost, None, self.destination)
        )
        config = ServerConfig(isolateDestAddr=True)
        key = isolationKeyFor(config, CLIENT, None, self.destination)
        self.assertEqual(
            key, isolationKeyFor(config, CLIENT, None, Destination("EXAMPLE.com", 80))
        )
        self.assertNotEqual(
            key, isolationKeyFor(config, CLIENT, None, Destination("example.net", 443))
        )
        config = ServerConfig(isolateDestPort=True)
        key = isolationKeyFor(config, CLIENT, None, self.destination)
        self.assertNotEqual(
            key, isolationKeyFor(config, CLIENT, None, Destination("example.com", 80))
        )
        self.assertNotEqual(
            key, isolationKeyFor(config, CLIENT, (b"a", b""), self.destination)
        )

    def test_upstreamCredentials(self) -> None:
        """
        Upstream credentials are stable per key, distinct across keys, and
        do not reveal the client's own.
        """
        keys = [
            None,
            (b"a", b"b"),
            (b"a", b"c"),
            (b"a",),
            (("auth", None), ("port", 80)),
        ]
        mapped = [upstreamCredentials(key, b"secret") for key in keys]
        self.assertEqual(len(set(mapped)), len(keys))
        self.assertEqual(mapped, [upstreamCredentials(key, b"secret") for key in keys])
        self.assertEqual(
            upstreamCredentials((b"a", b"b")), upstreamCredentials((b"a", b"b"))
        )
        self.assertNotEqual(mapped[1], upstreamCredentials((b"a", b"b"), b"other"))
        for username, password in mapped:
            self.assertEqual((len(username), len(password)), (32, 32))
        username, password = upstreamCredentials((b"alice", b"secret"))
        self.assertNotIn(b"alice", username + password)
        self.assertNotIn(b"secret", username + password)

    def test_extendedCredentials(self) -> None:
        """
        USERNAME and PASSWD are split from the other pairs; a repeated key
        is refused.
        """
        request = socks5.ExtendedAuthRequest(
            ((b"USERNAME", b"u"), (b"X", b"1"), (b"PASSWD", b"p"))
        )
        self.assertEqual(extendedCredentials(request), ((b"u", b"p"), {b"X": b"1"}))
        request = socks5.ExtendedAuthRequest(((b"X", b"1"),))
        self.assertEqual(extendedCredentials(request), (None, {b"X": b"1"}))
        request = socks5.ExtendedAuthRequest(((b"X", b"1"), (b"X", b"2")))
        self.assertRaises(MalformedMessage, extendedCredentials, request)

    def test_methods(self) -> None:
        """
        Method preference: 0x97, 02, 00 without an authenticator; 00 first
        with preferNoAuth; 0x97 and 02 only with an authenticator.
        """
        self.assertEqual(socks5Methods(False, False), (0x97, 0x02, 0x00))
        self.assertEqual(socks5Methods(False, True), (0x00, 0x97, 0x02))
        self.assertEqual(socks5Methods(True, False), (0x97, 0x02))
        self.assertEqual(socks5Methods(True, True), (0x97, 0x02))


class IsolationServerTests(SynchronousTestCase):
    """
    Isolation keys and lenient authentication in the server.
    """

    def connect(self, harness: Harness, *chunks: bytes) -> tuple[Any, Any]:
        protocol, transport = harness.connect()
        for chunk in chunks:
            protocol.dataReceived(chunk)
        return protocol, transport

    def test_preferUsernamePassword(self) -> None:
        """
        Without an authenticator, a client offering 00 and 02 gets 02; any
        credentials (empty ones too) are accepted and isolate.
        """
        harness = Harness(self)
        keys = []
        for username, password in (
            (b"a", b"b"),
            (b"a", b"b"),
            (b"a", b"c"),
            (b"", b""),
        ):
            protocol, transport = self.connect(
                harness,
                bytes.fromhex("05 02 00 02"),
                bytes([1, len(username)])
                + username
                + bytes([len(password)])
                + password,
                CONNECT,
            )
            self.assertEqual(transport.value(), bytes.fromhex("05 02 01 00"))
            keys.append(harness.upstream.contexts[-1].isolationKey)
            self.assertIsNone(harness.upstream.contexts[-1].user)
        self.assertEqual(keys[0], keys[1])
        self.assertNotEqual(keys[0], keys[2])
        self.assertEqual(keys[3], (b"", b""))

    def test_preferNoAuth(self) -> None:
        """
        With C{preferNoAuth}, a client offering 00 and 02 gets 00; RFC 1929
        credentials after 00 are still accepted and isolate.
        """
        harness = Harness(self, config=ServerConfig(preferNoAuth=True))
        protocol, transport = self.connect(
            harness, bytes.fromhex("05 02 00 02"), b"\x01\x01a\x01b", CONNECT
        )
        self.assertEqual(transport.value(), bytes.fromhex("05 00 01 00"))
        self.assertEqual(harness.upstream.contexts[-1].isolationKey, (b"a", b"b"))

    def test_socks4UserId(self) -> None:
        """
        SOCKS4 user ids are isolation credentials.
        """
        harness = Harness(self)
        self.connect(harness, bytes.fromhex("04 01 0050 c0000201") + b"u1\0")
        self.connect(harness, bytes.fromhex("04 01 0050 c0000201") + b"u2\0")
        first, second = harness.upstream.contexts
        self.assertNotEqual(first.isolationKey, second.isolationKey)

    def test_isolateDestPort(self) -> None:
        """
        With C{isolateDestPort}, the same credentials to two ports get
        different keys.
        """
        harness = Harness(self, config=ServerConfig(isolateDestPort=True))
        self.connect(harness, GREETING, CONNECT)
        self.connect(harness, GREETING, bytes.fromhex("05 01 00 01 c0000201 01bb"))
        first, second = harness.upstream.contexts
        self.assertNotEqual(first.isolationKey, second.isolationKey)


class Prop229Tests(SynchronousTestCase):
    """
    Proposal 229: method 0x97 and its reply codes.
    """

    def test_pairs(self) -> None:
        """
        Without an authenticator, 0x97 is selected when offered; USERNAME
        and PASSWD isolate, the other pairs reach the upstream factory in
        C{ConnectContext.pairs} and isolate too.
        """
        harness = Harness(self)
        protocol, transport = harness.connect()
        protocol.dataReceived(bytes.fromhex("05 03 00 02 97"))
        self.assertEqual(transport.value(), bytes.fromhex("05 97"))
        protocol.dataReceived(
            extendedRequest((b"USERNAME", b"u"), (b"PASSWD", b"p"), (b"X-Key", b"v"))
            + CONNECT
        )
        self.assertEqual(transport.value(), bytes.fromhex("05 97 01 00 0000"))
        [context] = harness.upstream.contexts
        self.assertEqual(dict(context.pairs), {b"X-Key": b"v"})
        self.assertEqual(context.credentials, (b"u", b"p"))
        self.assertEqual(context.isolationKey, (b"u", b"p", ((b"X-Key", b"v"),)))

    def test_authenticator(self) -> None:
        """
        With an authenticator, USERNAME and PASSWD are checked by it:
        accepted gets status 00, refused status 01 and a close.
        """
        authenticator = FakeAuthenticator()
        harness = Harness(self, authenticator=authenticator)
        protocol, transport = harness.connect()
        protocol.dataReceived(bytes.fromhex("05 02 02 97"))
        protocol.dataReceived(extendedRequest((b"USERNAME", b"u"), (b"PASSWD", b"p")))
        self.assertEqual(authenticator.calls, [(b"u", b"p", CLIENT)])
        authenticator.results[0].callback(b"u")
        self.assertEqual(transport.value(), bytes.fromhex("05 97 01 00 0000"))
        self.assertFalse(transport.disconnecting)
        protocol, transport = harness.connect()
        protocol.dataReceived(bytes.fromhex("05 01 97"))
        protocol.dataReceived(extendedRequest((b"USERNAME", b"u"), (b"PASSWD", b"x")))
        authenticator.results[1].errback(AuthenticationFailed())
        self.assertEqual(transport.value(), bytes.fromhex("05 97 01 01 0000"))
        self.assertTrue(transport.disconnecting)

    def test_limits(self) -> None:
        """
        More pairs than the codec's cap, a repeated key, or a bad version
        get status 01 and a close.
        """
        tooMany = extendedRequest(*[(b"k%d" % i, b"") for i in range(65)])
        repeated = extendedRequest((b"k", b"1"), (b"k", b"2"))
        badVersion = b"\x02" + extendedRequest((b"k", b"1"))[1:]
        emptyKey = bytes.fromhex("01 0001 0000 0000")
        for request in (tooMany, repeated, badVersion, emptyKey):
            harness = Harness(self)
            protocol, transport = harness.connect()
            protocol.dataReceived(bytes.fromhex("05 01 97") + request + CONNECT)
            self.assertEqual(transport.value(), bytes.fromhex("05 97 01 01 0000"))
            self.assertTrue(transport.disconnecting)
            self.assertEqual(harness.upstream.attempts, [])

    def failWith(self, greeting: bytes, error: BaseException, **kwargs: Any) -> bytes:
        """The reply a client sending C{greeting} gets when CONNECT fails."""
        harness = Harness(self, **kwargs)
        protocol, transport = harness.connect()
        protocol.dataReceived(greeting)
        if transport.value().endswith(b"\x97"):
            protocol.dataReceived(extendedRequest())
        protocol.dataReceived(CONNECT)
        harness.upstream.last.fail(error)
        return transport.value()[-10:]

    def test_codesBothMeanings(self) -> None:
        """
        F0 means "transport temporary failure" to a client that offered
        0x97, "onion descriptor not found" with extended errors; each
        failure is told in the client's profile's terms.
        """
        offer229 = bytes.fromhex("05 02 00 97")
        plain = GREETING
        extended = {"config": ServerConfig(extendedErrors=True)}
        self.assertEqual(
            self.failWith(offer229, TransportTemporaryFailure()), failure5(0xF0)
        )
        self.assertEqual(
            self.failWith(offer229, OnionDescriptorNotFound()), failure5(0xE0)
        )
        self.assertEqual(
            self.failWith(plain, OnionDescriptorNotFound(), **extended), failure5(0xF0)
        )
        self.assertEqual(
            self.failWith(plain, TransportTemporaryFailure(), **extended),
            failure5(0x01),
        )
        self.assertEqual(
            self.failWith(plain, OnionDescriptorNotFound()), failure5(0x04)
        )
        self.assertEqual(self.failWith(plain, ConnectionRefusedError()), failure5(0x05))

    def test_offeredNotSelected(self) -> None:
        """
        A client that offered 0x97 gets proposal 229 codes even when 00 is
        selected (preferNoAuth).
        """
        reply = self.failWith(
            bytes.fromhex("05 02 00 97"),
            TransportTemporaryFailure(),
            config=ServerConfig(preferNoAuth=True),
        )
        self.assertEqual(reply, failure5(0xF0))


class ExtendedErrorTests(SynchronousTestCase):
    """
    Tor's extended codes from a chained upstream, and onion name checks.
    """

    def chainedFailure(self, code: int, extendedErrors: bool) -> bytes:
        """
        The reply sent when an upstream SOCKS5 proxy's client endpoint fails
        with the typed error for C{code}.
        """
        harness = Harness(self, config=ServerConfig(extendedErrors=extendedErrors))
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + domainRequest(1, VALID_ONION, 80))
        error = errorForReply(code, ReplyProfile.SOCKS5_EXTENDED)
        self.assertEqual(error.replyCode, code)
        harness.upstream.last.fail(error)
        return transport.value()[2:]

    def test_chainedExtendedCodes(self) -> None:
        """
        With extended errors, an upstream's F0-F7 reaches the client
        unchanged; without, the client gets 04 (host unreachable).
        """
        for code in range(0xF0, 0xF8):
            self.assertEqual(self.chainedFailure(code, True), failure5(code))
            self.assertEqual(self.chainedFailure(code, False), failure5(0x04))

    def test_invalidOnion(self) -> None:
        """
        An invalid onion name gets F6 with extended errors (04 without, E0
        for a proposal 229 client), and no upstream is asked.
        """
        for greeting, config, code in (
            (GREETING, ServerConfig(extendedErrors=True), 0xF6),
            (GREETING, ServerConfig(), 0x04),
        ):
            harness = Harness(self, config=config)
            protocol, transport = harness.connect()
            protocol.dataReceived(greeting + domainRequest(1, INVALID_ONION, 80))
            self.assertEqual(transport.value(), SELECTED + failure5(code))
            self.assertEqual(harness.upstream.attempts, [])
        harness = Harness(self)
        protocol, transport = harness.connect()
        protocol.dataReceived(bytes.fromhex("05 02 00 97"))
        protocol.dataReceived(extendedRequest())
        protocol.dataReceived(domainRequest(1, INVALID_ONION, 80))
        self.assertEqual(transport.value()[-10:], failure5(0xE0))
        self.assertEqual(harness.upstream.attempts, [])

    def test_invalidOnionSocks4a(self) -> None:
        """
        Over SOCKS4A an invalid onion name gets 5B, with no upstream asked.
        """
        harness = Harness(self, config=ServerConfig(extendedErrors=True))
        protocol, transport = harness.connect()
        protocol.dataReceived(socks4Request(1, INVALID_ONION))
        self.assertEqual(transport.value(), bytes.fromhex("00 5b 0000 00000000"))
        self.assertEqual(harness.upstream.attempts, [])

    def test_validOnionGoesUpstream(self) -> None:
        """
        A valid onion name is handed to the upstream factory.
        """
        harness = Harness(self, config=ServerConfig(extendedErrors=True))
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + domainRequest(1, VALID_ONION, 80))
        self.assertEqual(harness.upstream.destinations, [Destination(VALID_ONION, 80)])


class OptimisticHttpTests(SynchronousTestCase):
    """
    A client (like Tor Browser's) that sends its HTTP request right after
    its CONNECT request, before the reply.
    """

    HTTP = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"

    def test_deliveredFirst(self) -> None:
        """
        The request, sent in pieces while the upstream connects, reaches the
        destination first and whole.
        """
        harness = Harness(self)
        protocol, transport = harness.connect()
        protocol.dataReceived(
            GREETING + domainRequest(1, "example.com", 80) + self.HTTP[:5]
        )
        protocol.dataReceived(self.HTTP[5:])
        harness.upstream.last.succeed()
        self.assertEqual(harness.upstream.last.transport.value(), self.HTTP)

    def test_discardedWhenRefused(self) -> None:
        """
        When the destination refuses, the HTTP request is dropped: no other
        connection is tried and the client gets only the failure reply.
        """
        harness = Harness(self)
        protocol, transport = harness.connect()
        protocol.dataReceived(
            GREETING + domainRequest(1, "example.com", 80) + self.HTTP[:5]
        )
        protocol.dataReceived(self.HTTP[5:])
        harness.upstream.last.fail(ConnectionRefusedError())
        protocol.dataReceived(b"more")
        self.assertEqual(transport.value(), SELECTED + failure5(0x05))
        self.assertEqual(len(harness.upstream.attempts), 1)
        self.assertTrue(transport.disconnecting)


class OptionsTests(SynchronousTestCase):
    """
    The command-line options of Tor's extensions reach the server's
    configuration.
    """

    def configFor(self, *argv: str) -> ServerConfig:
        from socksd.tap import Options, makeService

        options = Options()
        options.parseOptions(list(argv))
        return list(makeService(options))[0].factory.config

    def test_defaults(self) -> None:
        """
        By default only SOCKS credentials isolate, and 02 is preferred.
        """
        config = self.configFor()
        self.assertEqual(
            (
                config.isolateSocksAuth,
                config.isolateClientAddr,
                config.isolateDestAddr,
                config.isolateDestPort,
                config.preferNoAuth,
                config.extendedErrors,
            ),
            (True, False, False, False, False, False),
        )

    def test_flags(self) -> None:
        """
        Each flag turns its setting over.
        """
        config = self.configFor(
            "--isolate-client-addr",
            "--isolate-dest-addr",
            "--isolate-dest-port",
            "--no-isolate-socks-auth",
            "--prefer-no-auth",
            "--extended-errors",
        )
        self.assertEqual(
            (
                config.isolateSocksAuth,
                config.isolateClientAddr,
                config.isolateDestAddr,
                config.isolateDestPort,
                config.preferNoAuth,
                config.extendedErrors,
            ),
            (False, True, True, True, True, True),
        )
