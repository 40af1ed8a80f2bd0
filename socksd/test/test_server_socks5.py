"""
Tests for L{socksd.server.socks5}: SOCKS5 CONNECT through the factory, with
a L{MemoryUpstream} whose connections the tests complete by hand.

Vectors use RFC 5737 addresses: the client is 192.0.2.7:50000, the
destination 192.0.2.1:80, and the upstream's local address (the bound
address of a success) 198.51.100.1:40000.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.error import TimeoutError as TCPTimeoutError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksd.address import Destination
from socksd.auth import Authenticator, SocksUser, portalFromCheckers
from socksd.errors import AuthenticationFailed, OnionDescriptorNotFound, ResolveFailed
from socksd.server import ServerConfig
from socksd.test.test_dispatch import CLIENT, FakePolicy, Harness, splits

GREETING = bytes.fromhex("05 01 00")
GREETING_AUTH = bytes.fromhex("05 01 02")
SELECTED = bytes.fromhex("05 00")
#: CONNECT 192.0.2.1:80
REQUEST = bytes.fromhex("05 01 00 01 c0000201 0050")
#: Success, bound 198.51.100.1:40000.
SUCCESS = bytes.fromhex("05 00 00 01 c6336401 9c40")
DESTINATION = Destination(IPv4Address("192.0.2.1"), 80)


def failure(code: int) -> bytes:
    """The failure reply with C{code}, bound 0.0.0.0:0."""
    return bytes([5, code]) + bytes.fromhex("00 01 00000000 0000")


class FakeAuthenticator:
    """
    An authenticator whose answers the test gives, recording the calls.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes, Any]] = []
        self.results: list[Deferred[Any]] = []
        self.cancelled: list[Deferred[Any]] = []

    def authenticate(
        self, username: bytes, password: bytes, client: Any
    ) -> Deferred[Any]:
        self.calls.append((username, password, client))
        result: Deferred[Any] = Deferred(self.cancelled.append)
        self.results.append(result)
        return result


class Socks5ConnectTests(SynchronousTestCase):
    """
    SOCKS5 CONNECT with method 00.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)

    def handshake(self, request: bytes = REQUEST) -> tuple[Any, Any]:
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, GREETING + request)
        return protocol, transport

    def test_greetingAndRequestSplitAnywhere(self) -> None:
        """
        However the greeting and request are split, the client gets one
        05 00 and one connection attempt to 192.0.2.1:80; the success reply
        carries the upstream's local address.
        """
        for chunks in splits(GREETING + REQUEST):
            harness = Harness(self)
            protocol, transport = harness.connect()
            harness.send(protocol, *chunks)
            self.assertEqual(transport.value(), SELECTED)
            self.assertEqual(harness.upstream.destinations, [DESTINATION])
            harness.upstream.last.succeed()
            self.assertEqual(transport.value(), SELECTED + SUCCESS)

    def test_methodSelectionBeforeRequest(self) -> None:
        """
        The method selection is sent as soon as the greeting is in, before
        the request.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(bytes.fromhex("05 02 80 00"))
        self.assertEqual(transport.value(), SELECTED)
        self.assertEqual(self.harness.upstream.attempts, [])

    def test_ipv6(self) -> None:
        """
        An IPv6 destination is asked for as an IPv6 address.
        """
        self.handshake(
            bytes.fromhex("05 01 00 04 20010db8000000000000000000000001 01bb")
        )
        self.assertEqual(
            self.harness.upstream.destinations,
            [Destination(IPv6Address("2001:db8::1"), 443)],
        )

    def test_ipv6Bound(self) -> None:
        """
        An IPv6 local address of the upstream is the success reply's bound
        address.
        """
        from twisted.internet.address import IPv6Address as TwistedIPv6

        from socksd.testing import RecordingTransport

        _, transport = self.handshake()
        upstreamTransport = RecordingTransport(
            TwistedIPv6("TCP", "2001:db8::2", 8080), None
        )
        self.harness.upstream.last.succeed(upstreamTransport)
        self.assertEqual(
            transport.value(),
            SELECTED
            + bytes.fromhex("05 00 00 04 20010db8000000000000000000000002 1f90"),
        )

    def test_domain(self) -> None:
        """
        A domain destination is passed to the upstream as the name, not
        resolved by the server.
        """
        self.handshake(
            bytes.fromhex("05 01 00 03 0b") + b"example.com" + bytes.fromhex("0050")
        )
        self.assertEqual(
            self.harness.upstream.destinations, [Destination("example.com", 80)]
        )
        self.assertEqual(self.harness.resolver.queries, [])

    def test_longestDomain(self) -> None:
        """
        A 255-byte domain, the longest SOCKS5 carries, is accepted.
        """
        name = "a" * 255
        self.handshake(
            bytes.fromhex("05 01 00 03 ff") + name.encode() + bytes.fromhex("0050")
        )
        self.assertEqual(self.harness.upstream.destinations, [Destination(name, 80)])

    def test_context(self) -> None:
        """
        The connect context names the client, version 5, CONNECT, no user, no
        credentials and no isolation key.
        """
        self.handshake()
        [context] = self.harness.upstream.contexts
        self.assertEqual(context.client, CLIENT)
        self.assertEqual((context.version, context.command), (5, 1))
        self.assertIsNone(context.user)
        self.assertIsNone(context.credentials)
        self.assertIsNone(context.isolationKey)

    def test_unsupportedCommands(self) -> None:
        """
        Unknown commands get 07 (command not supported) and a close;
        nothing is connected.  (BIND and UDP ASSOCIATE are served: see
        test_bind and test_udp; Tor's RESOLVE and RESOLVE_PTR: test_tor.)
        """
        for command in (0x09, 0xF2):
            harness = Harness(self)
            protocol, transport = harness.connect()
            request = bytes([5, command]) + REQUEST[2:]
            protocol.dataReceived(GREETING + request)
            self.assertEqual(transport.value(), SELECTED + failure(0x07))
            self.assertTrue(transport.disconnecting)
            self.assertEqual(harness.upstream.attempts, [])
            harness.close(protocol)
            event = harness.onlyEvent(self)
            self.assertEqual(event["reply"], "COMMAND_NOT_SUPPORTED")
            self.assertEqual(event["commandCode"], command)

    def test_unknownAddressType(self) -> None:
        """
        An unknown ATYP gets 08 (address type not supported) and a close.
        """
        protocol, transport = self.handshake(bytes.fromhex("05 01 00 02 c0000201 0050"))
        self.assertEqual(transport.value(), SELECTED + failure(0x08))
        self.assertTrue(transport.disconnecting)
        self.harness.close(protocol)
        event = self.harness.onlyEvent(self)
        self.assertEqual(event["reply"], "ADDRESS_TYPE_NOT_SUPPORTED")
        self.assertIn("malformed SOCKS5 request", event["reason"])

    def test_malformedRequest(self) -> None:
        """
        A request with a non-zero RSV, or a zero-length domain, gets 01 and a
        close, and is logged; no exception escapes.
        """
        for request in (
            bytes.fromhex("05 01 01 01 c0000201 0050"),
            bytes.fromhex("05 01 00 03 00 0050"),
            bytes.fromhex("04 01 00 01 c0000201 0050"),
        ):
            harness = Harness(self)
            protocol, transport = harness.connect()
            protocol.dataReceived(GREETING + request)
            self.assertEqual(transport.value(), SELECTED + failure(0x01))
            self.assertTrue(transport.disconnecting)
            harness.close(protocol)
            self.assertIn("malformed", harness.onlyEvent(self)["reason"])

    def test_malformedGreeting(self) -> None:
        """
        A greeting with no methods gets 05 FF and a close.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(bytes.fromhex("05 00"))
        self.assertEqual(transport.value(), bytes.fromhex("05 ff"))
        self.assertTrue(transport.disconnecting)
        self.harness.close(protocol)
        self.assertIn(
            "malformed SOCKS5 greeting", self.harness.onlyEvent(self)["reason"]
        )

    def test_noAcceptableMethod(self) -> None:
        """
        Without an authenticator, a client that offers only GSSAPI (or
        private methods socksd does not know) gets 05 FF and a close.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(bytes.fromhex("05 02 01 80"))
        self.assertEqual(transport.value(), bytes.fromhex("05 ff"))
        self.assertTrue(transport.disconnecting)
        self.harness.close(protocol)
        event = self.harness.onlyEvent(self)
        self.assertEqual(event["reply"], "NO_ACCEPTABLE_METHODS")

    def test_policyRefusal(self) -> None:
        """
        A request the policy refuses gets 02 (not allowed); nothing is
        connected.
        """
        policy = FakePolicy(requests=False)
        harness = Harness(self, policy=policy)
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + REQUEST)
        self.assertEqual(transport.value(), SELECTED + failure(0x02))
        self.assertEqual(harness.upstream.attempts, [])
        self.assertEqual(policy.asked[-1][0], "request")
        self.assertEqual(policy.asked[-1][2], DESTINATION)
        self.assertEqual(policy.asked[-1][1].client, CLIENT)

    def test_policyRouteBindAddress(self) -> None:
        """
        A policy with C{routeFor} (L{socksd.policy.Policy}) decides, and the
        bind address of its decision goes into the connect context.
        """
        from socksd.policy import Policy

        policy = Policy.fromToml(
            '[[destination]]\naction = "pass"\nto = ["192.0.2.0/24"]\nbind-address = "127.0.0.1"\n'
            '[[destination]]\naction = "block"\n'
        )
        harness = Harness(self, policy=policy)
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + REQUEST)
        [context] = harness.upstream.contexts
        self.assertEqual(context.bindAddress, ("127.0.0.1", 0))
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + bytes.fromhex("05 01 00 01 c6336402 0050"))
        self.assertEqual(transport.value(), SELECTED + failure(0x02))

    def test_policyError(self) -> None:
        """
        A policy that raises gives a general failure (01), logged, not an
        exception.
        """

        class Broken(FakePolicy):
            def allowRequest(self, context: Any, destination: Any) -> bool:
                raise RuntimeError("broken policy")

        harness = Harness(self, policy=Broken())
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + REQUEST)
        self.assertEqual(transport.value(), SELECTED + failure(0x01))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_upstreamErrors(self) -> None:
        """
        Each connect failure gets its reply code: refused 05, DNS lookup and
        resolve failures 04, timeouts 06, anything else 01.
        """
        for error, code in (
            (ConnectionRefusedError(), 0x05),
            (DNSLookupError("example.com"), 0x04),
            (ResolveFailed("no address"), 0x04),
            (TCPTimeoutError(), 0x06),
            (OnionDescriptorNotFound(), 0x04),
            (ValueError("odd"), 0x01),
        ):
            harness = Harness(self)
            protocol, transport = harness.connect()
            protocol.dataReceived(GREETING + REQUEST)
            harness.upstream.last.fail(error)
            self.assertEqual(transport.value(), SELECTED + failure(code), error)
            self.assertTrue(transport.disconnecting)
            harness.close(protocol)
            self.assertIn("connect failed", harness.onlyEvent(self)["reason"])

    def test_extendedErrors(self) -> None:
        """
        With C{extendedErrors}, an onion failure gets Tor's extended code
        (F0 for a missing descriptor).
        """
        harness = Harness(self, ServerConfig(extendedErrors=True))
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + REQUEST)
        harness.upstream.last.fail(OnionDescriptorNotFound())
        self.assertEqual(transport.value(), SELECTED + failure(0xF0))

    def test_synchronousFailure(self) -> None:
        """
        An endpoint whose connect has already failed is answered at once.
        """
        from socksd.upstream import FailingEndpoint

        class Refusing:
            def endpointFor(self, destination: Any, context: Any) -> Any:
                return FailingEndpoint(ConnectionRefusedError())

        harness = Harness(self)
        harness.factory.upstream = Refusing()
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + REQUEST)
        self.assertEqual(transport.value(), SELECTED + failure(0x05))

    def test_brokenUpstreamFactory(self) -> None:
        """
        An upstream factory that raises gives 01 and a logged error, not an
        exception.
        """

        class Broken:
            def endpointFor(self, destination: Any, context: Any) -> Any:
                raise KeyError("broken")

        harness = Harness(self)
        harness.factory.upstream = Broken()
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + REQUEST)
        self.assertEqual(transport.value(), SELECTED + failure(0x01))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_connectTimeout(self) -> None:
        """
        A connection that takes longer than C{connectTimeout} is cancelled,
        and the client gets 06 (TTL expired).
        """
        harness = Harness(self, ServerConfig(connectTimeout=5.0))
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + REQUEST)
        harness.clock.advance(4.9)
        self.assertEqual(transport.value(), SELECTED)
        harness.clock.advance(0.1)
        self.assertTrue(harness.upstream.last.cancelled)
        self.assertEqual(transport.value(), SELECTED + failure(0x06))
        self.assertTrue(transport.disconnecting)

    def test_connectTimerStopped(self) -> None:
        """
        A connection that succeeds leaves neither the connect timer nor the
        handshake timer behind.
        """
        protocol, transport = self.handshake()
        self.harness.upstream.last.succeed()
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])

    def test_handshakeTimeoutStopsAtRequest(self) -> None:
        """
        The handshake timeout closes a client stuck after its greeting, but
        not one whose request is in (connecting takes as long as it takes).
        """
        harness = Harness(self, ServerConfig(handshakeTimeout=2.0, connectTimeout=None))
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING)
        harness.clock.advance(2.0)
        self.assertTrue(transport.disconnecting)
        harness.close(protocol)
        self.assertEqual(harness.onlyEvent(self)["reason"], "handshake timeout")
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + REQUEST)
        harness.clock.advance(100)
        self.assertFalse(transport.disconnecting)

    def test_clientLeavesWhileConnecting(self) -> None:
        """
        A client that leaves while its connection is being made cancels it;
        the event says so, and nothing is written.
        """
        protocol, transport = self.handshake()
        self.harness.close(protocol, ConnectionLost())
        self.assertTrue(self.harness.upstream.last.cancelled)
        self.assertEqual(transport.value(), SELECTED)
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])
        event = self.harness.onlyEvent(self)
        self.assertEqual(event["reason"], "client closed while connecting")
        self.assertIsNone(event["reply"])

    def test_eofDuringHandshake(self) -> None:
        """
        EOF before the request is complete closes the connection.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(GREETING + REQUEST[:5])
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.harness.upstream.attempts, [])

    def test_logEvent(self) -> None:
        """
        A tunnel's one event has the client, version, protocol, command,
        destination, reply, byte counts each way and duration.
        """
        protocol, transport = self.handshake()
        upstream = self.harness.upstream.last.succeed()
        self.harness.clock.advance(2.5)
        protocol.dataReceived(b"abc")
        upstream.dataReceived(b"defgh")
        self.harness.close(protocol)
        upstream.connectionLost(Failure(ConnectionDone()))
        event = self.harness.onlyEvent(self)
        self.assertEqual(
            {
                key: event[key]
                for key in (
                    "client",
                    "user",
                    "version",
                    "protocol",
                    "command",
                    "commandCode",
                    "destination",
                    "reply",
                    "replyCode",
                    "reason",
                    "bytesUp",
                    "bytesDown",
                    "duration",
                )
            },
            dict(
                client="192.0.2.7:50000",
                user=None,
                version=5,
                protocol="socks5",
                command="connect",
                commandCode=1,
                destination="192.0.2.1:80",
                reply="SUCCEEDED",
                replyCode=0,
                reason="closed",
                bytesUp=3,
                bytesDown=5,
                duration=2.5,
            ),
        )


class Socks5OptimisticDataTests(SynchronousTestCase):
    """
    Bytes sent after the request, before the reply.
    """

    def setUp(self) -> None:
        self.harness = Harness(self, ServerConfig(maxOptimisticData=10))

    def test_deliveredFirst(self) -> None:
        """
        Data in the request's segment and data that follows before the reply
        reach the destination first, in order, before later data.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(GREETING + REQUEST + b"one ")
        protocol.dataReceived(b"two ")
        upstream = self.harness.upstream.last.succeed()
        protocol.dataReceived(b"three")
        self.assertEqual(self.harness.upstream.last.transport.value(), b"one two three")
        self.assertEqual(transport.value(), SELECTED + SUCCESS)
        self.harness.close(protocol)
        upstream.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.harness.onlyEvent(self)["bytesUp"], 13)

    def test_discardedOnFailure(self) -> None:
        """
        When the connection fails, optimistic data is dropped: the client
        gets only the failure reply.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(GREETING + REQUEST + b"secret")
        self.harness.upstream.last.fail(ConnectionRefusedError())
        protocol.dataReceived(b"more")
        self.assertEqual(transport.value(), SELECTED + failure(0x05))

    def test_boundPausesReading(self) -> None:
        """
        Past C{maxOptimisticData}, the server stops reading from the client
        (nothing is dropped); it reads again once the tunnel is up.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(GREETING + REQUEST + b"12345")
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"67890abc")
        self.assertEqual(transport.producerState, "paused")
        self.harness.upstream.last.succeed()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(self.harness.upstream.last.transport.value(), b"1234567890abc")

    def test_clientEofWhileConnecting(self) -> None:
        """
        A client that sends its request, data and EOF before the reply gets
        its data delivered, then the destination's write side shut down.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(GREETING + REQUEST + b"data")
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        self.harness.upstream.last.succeed()
        upstreamTransport = self.harness.upstream.last.transport
        self.assertEqual(upstreamTransport.value(), b"data")
        self.assertTrue(upstreamTransport.writeClosed)
        self.assertIsNone(upstreamTransport.producer)
        self.assertIs(transport.producer, upstreamTransport)


class Socks5AuthenticationTests(SynchronousTestCase):
    """
    RFC 1929 username/password with an authenticator, and Tor's leniency
    without one.
    """

    def setUp(self) -> None:
        self.authenticator = FakeAuthenticator()
        self.harness = Harness(self, authenticator=self.authenticator)

    def login(self) -> tuple[Any, Any]:
        protocol, transport = self.harness.connect()
        protocol.dataReceived(bytes.fromhex("05 02 00 02"))
        protocol.dataReceived(b"\x01\x05alice\x06secret")
        return protocol, transport

    def test_onlyUsernamePassword(self) -> None:
        """
        With an authenticator, 02 is selected, even when 00 is offered
        first; a client without 02 gets FF.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(bytes.fromhex("05 02 00 02"))
        self.assertEqual(transport.value(), bytes.fromhex("05 02"))
        protocol, transport = self.harness.connect()
        protocol.dataReceived(GREETING)
        self.assertEqual(transport.value(), bytes.fromhex("05 ff"))
        self.assertTrue(transport.disconnecting)

    def test_success(self) -> None:
        """
        Accepted credentials get 01 00; the request then carries the user,
        the credentials and them as isolation key.
        """
        protocol, transport = self.login()
        self.assertEqual(self.authenticator.calls, [(b"alice", b"secret", CLIENT)])
        self.assertEqual(transport.value(), bytes.fromhex("05 02"))
        user = SocksUser(b"alice")
        self.authenticator.results[0].callback(user)
        self.assertEqual(transport.value(), bytes.fromhex("05 02 01 00"))
        protocol.dataReceived(REQUEST)
        [context] = self.harness.upstream.contexts
        self.assertIs(context.user, user)
        self.assertEqual(context.credentials, (b"alice", b"secret"))
        self.assertEqual(context.isolationKey, (b"alice", b"secret"))
        self.harness.upstream.last.fail(ConnectionRefusedError())
        self.harness.close(protocol)
        self.assertEqual(self.harness.onlyEvent(self)["user"], "alice")

    def test_pipelinedRequest(self) -> None:
        """
        A request sent with the credentials, before their verdict, is served
        after it.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(
            bytes.fromhex("05 01 02") + b"\x01\x05alice\x06secret" + REQUEST + b"hi"
        )
        self.assertEqual(self.harness.upstream.attempts, [])
        self.authenticator.results[0].callback(SocksUser(b"alice"))
        self.assertEqual(self.harness.upstream.destinations, [DESTINATION])
        self.harness.upstream.last.succeed()
        self.assertEqual(self.harness.upstream.last.transport.value(), b"hi")

    def test_eofWhileChecking(self) -> None:
        """
        A client that pipelines its credentials, request and data, then sends
        EOF before the verdict, still gets its tunnel: data, then EOF, reach
        the destination.  Without a complete request, the EOF closes.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(
            bytes.fromhex("05 01 02")
            + b"\x01\x05alice\x06secret"
            + REQUEST
            + b"last words"
        )
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        self.authenticator.results[0].callback(SocksUser(b"alice"))
        self.harness.upstream.last.succeed()
        self.assertEqual(self.harness.upstream.last.transport.value(), b"last words")
        self.assertTrue(self.harness.upstream.last.transport.writeClosed)
        protocol, transport = self.harness.connect()
        protocol.dataReceived(
            bytes.fromhex("05 01 02") + b"\x01\x05alice\x06secret" + REQUEST[:4]
        )
        protocol.readConnectionLost()
        self.authenticator.results[1].callback(SocksUser(b"alice"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.harness.upstream.attempts), 1)

    def test_failure(self) -> None:
        """
        Refused credentials get 01 01 and a close; nothing is connected.
        """
        protocol, transport = self.login()
        self.authenticator.results[0].errback(AuthenticationFailed())
        self.assertEqual(transport.value(), bytes.fromhex("05 02 01 01"))
        self.assertTrue(transport.disconnecting)
        self.harness.close(protocol)
        event = self.harness.onlyEvent(self)
        self.assertEqual(event["reason"], "authentication failed for user 'alice'")
        self.assertIsNone(event["user"])

    def test_authenticatorError(self) -> None:
        """
        An authenticator that fails oddly counts as a refusal, and is
        logged.
        """
        _, transport = self.login()
        self.authenticator.results[0].errback(ZeroDivisionError())
        self.assertEqual(transport.value(), bytes.fromhex("05 02 01 01"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_authenticatorRaises(self) -> None:
        """
        An authenticator that raises counts as a refusal (01 01), logged.
        """

        class Raising:
            def authenticate(
                self, username: bytes, password: bytes, client: Any
            ) -> Any:
                raise KeyError(username)

        harness = Harness(self, authenticator=Raising())
        protocol, transport = harness.connect()
        protocol.dataReceived(bytes.fromhex("05 01 02") + b"\x01\x05alice\x06secret")
        self.assertEqual(transport.value(), bytes.fromhex("05 02 01 01"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_clientLeavesWhileChecking(self) -> None:
        """
        A client that leaves while its credentials are checked cancels the
        check.
        """
        protocol, transport = self.login()
        result = self.authenticator.results[0]
        self.harness.close(protocol, ConnectionLost())
        self.assertEqual(self.authenticator.cancelled, [result])
        self.assertEqual(
            self.harness.onlyEvent(self)["reason"],
            "client closed during the authentication",
        )

    def test_malformedAuthentication(self) -> None:
        """
        A sub-negotiation with the wrong version gets 01 01 and a close.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(bytes.fromhex("05 01 02") + b"\x05\x05alice\x06secret")
        self.assertEqual(transport.value(), bytes.fromhex("05 02 01 01"))
        self.assertTrue(transport.disconnecting)

    def test_realAuthenticator(self) -> None:
        """
        With socksd's L{Authenticator}, the right password gets in, and a
        wrong one is refused after the failure delay.
        """
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        harness = Harness(self)
        harness.factory.authenticator = Authenticator(
            portalFromCheckers([checker]), harness.clock, failureDelay=1.0
        )
        protocol, transport = harness.connect()
        protocol.dataReceived(
            bytes.fromhex("05 01 02") + b"\x01\x05alice\x06secret" + REQUEST
        )
        self.assertEqual(transport.value(), bytes.fromhex("05 02 01 00"))
        self.assertEqual(harness.upstream.contexts[0].user, SocksUser(b"alice"))
        protocol, transport = harness.connect()
        protocol.dataReceived(bytes.fromhex("05 01 02") + b"\x01\x05alice\x05wrong")
        self.assertEqual(transport.value(), bytes.fromhex("05 02"))
        harness.clock.advance(1.0)
        self.assertEqual(transport.value(), bytes.fromhex("05 02 01 01"))

    def test_torLeniency(self) -> None:
        """
        Without an authenticator, credentials sent after method 00 are
        accepted unchecked (01 00) and become the isolation key.
        """
        harness = Harness(self)
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + b"\x01\x03bob\x03pw1" + REQUEST)
        self.assertEqual(transport.value(), SELECTED + bytes.fromhex("01 00"))
        [context] = harness.upstream.contexts
        self.assertEqual(context.isolationKey, (b"bob", b"pw1"))
        self.assertEqual(context.credentials, (b"bob", b"pw1"))
        self.assertIsNone(context.user)


class Socks5NoExceptionTests(SynchronousTestCase):
    """
    Whatever the client sends, nothing raises out of the protocol.
    """

    def test_randomishInputs(self) -> None:
        """
        Every prefix of a long malformed exchange, in any split, is handled
        without an exception reaching the caller.
        """
        data = (
            GREETING
            + bytes.fromhex("05 01 00 03 05")
            + b"a\x00b\xffc"
            + bytes.fromhex("0050")
            + b"\xff" * 20
        )
        for chunks in splits(data):
            harness = Harness(self)
            protocol, transport = harness.connect()
            harness.send(protocol, *chunks)
            harness.close(protocol, ConnectionLost())
            self.assertEqual(len(harness.connectionEvents()), 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_failFast(self) -> None:
        """
        A Deferred the upstream has failed before connect returns still
        gives a reply (no unhandled error in Deferred).
        """

        class Failing:
            def endpointFor(self, destination: Any, context: Any) -> Any:
                class Endpoint:
                    def connect(self, factory: Any) -> Deferred[Any]:
                        return fail(ConnectionRefusedError())

                return Endpoint()

        harness = Harness(self)
        harness.factory.upstream = Failing()
        protocol, transport = harness.connect()
        protocol.dataReceived(GREETING + REQUEST)
        self.assertEqual(transport.value(), SELECTED + failure(0x05))
