"""
Tests for L{socksd.server.socks6}, L{socksd.server.socks6.sessions} and
L{socksd.server.socks6.stack}: SOCKS6 through the factory, with a
L{MemoryUpstream} whose connections the tests complete by hand.

The client is 192.0.2.7:50000, the destination 192.0.2.1:80, and the
upstream's local address (the bound address of a success)
198.51.100.1:40000.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase

from socksd.address import Destination
from socksd.auth import Authenticator, SocksUser, portalFromCheckers
from socksd.server.socks6.sessions import SessionTable, TokenWindow, sessionTableFor
from socksd.server.socks6.stack import applyStackOptions
from socksd.test.test_dispatch import Harness, splits
from socksd.test.test_server_socks5 import FakeAuthenticator
from socksd.testing import RecordingTransport
from socksd.upstream import DirectUpstream
from socksd.wire.socks6 import (
    AuthenticationReply,
    AuthMethodAdvertisementOption,
    AuthMethodSelectionOption,
    Availability,
    Command,
    HappyEyeballsOption,
    IdempotenceAcceptedOption,
    IdempotenceExpenditureOption,
    IdempotenceRejectedOption,
    IdempotenceRequestOption,
    IdempotenceWindowOption,
    IpTosOption,
    MultipathOption,
    NoFragmentationOption,
    OperationReply,
    Request,
    SessionIdOption,
    SessionInvalidOption,
    SessionOkOption,
    SessionRequestOption,
    SessionTeardownOption,
    StackLeg,
    TtlOption,
    UsernamePasswordOption,
    UsernamePasswordReplyOption,
    buildMessage,
    readAuthenticationReply,
    readOperationReply,
)

DESTINATION = Destination(IPv4Address("192.0.2.1"), 80)
#: CONNECT 192.0.2.1:80, no options.
REQUEST = bytes.fromhex("06 01 0000 0050 00 01 c0000201")
#: Authentication Reply: success, no options.
AUTH_OK = bytes.fromhex("06 00 0000")
#: Operation Reply: success, bound 198.51.100.1:40000, no options.
OP_OK = bytes.fromhex("06 00 0000 9c40 00 01 c6336401")
#: Operation Reply: connection refused, bound 0.0.0.0:0.
OP_REFUSED = bytes.fromhex("06 05 0000 0000 00 01 00000000")
REMOTE = StackLeg.PROXY_REMOTE


def request(*options: Any, command: int = Command.CONNECT, data: bytes = b"") -> bytes:
    """
    The bytes of a request to L{DESTINATION} with C{options} (for NOOP, and
    for BIND and UDP ASSOCIATE, whose address is a wanted bind address: the
    unspecified address, port 0).
    """
    destination = DESTINATION
    if command in (Command.NOOP, Command.BIND, Command.UDP_ASSOCIATE):
        destination = Destination(IPv4Address(0), 0)
    return buildMessage(Request(command, destination, tuple(options), data))


def replies(data: bytes) -> tuple[AuthenticationReply, list[OperationReply]]:
    """Parse an Authentication Reply and the Operation Replies after it."""
    buffer = bytearray(data)
    auth = readAuthenticationReply(buffer)
    assert auth is not None, data.hex(" ")
    operations = []
    while buffer:
        reply = readOperationReply(buffer)
        assert reply is not None, data.hex(" ")
        operations.append(reply)
    return auth, operations


class Socks6ConnectTests(SynchronousTestCase):
    """
    SOCKS6 CONNECT without authentication.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)

    def test_connectSplitAnywhere(self) -> None:
        """
        A request arriving in any pieces gets the successful Authentication
        Reply at once and, once connected, the Operation Reply with the
        upstream's local address.
        """
        for pieces in splits(REQUEST):
            harness = Harness(self)
            protocol, transport = harness.connect()
            harness.send(protocol, *pieces)
            self.assertEqual(transport.value(), AUTH_OK)
            self.assertEqual(harness.upstream.destinations, [DESTINATION])
            harness.upstream.last.succeed()
            self.assertEqual(transport.value(), AUTH_OK + OP_OK)

    def test_initialDataFirst(self) -> None:
        """
        The initial data the advertisement announces are read with the
        request and reach the destination before the bytes sent after it.
        """
        protocol, transport = self.harness.connect()
        data = request(AuthMethodAdvertisementOption(frozenset(), 5), data=b"hello")
        self.harness.send(protocol, data[:-2], data[-2:] + b" wor", b"ld")
        self.assertEqual(transport.value(), AUTH_OK)
        upstream = self.harness.upstream.last.succeed()
        self.assertEqual(upstream.transport.value(), b"hello world")

    def test_incompleteInitialDataWaits(self) -> None:
        """
        Until all the announced initial data are in, nothing is answered
        and nothing is connected.
        """
        protocol, transport = self.harness.connect()
        data = request(AuthMethodAdvertisementOption(frozenset(), 5), data=b"hello")
        self.harness.send(protocol, data[:-1])
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.harness.upstream.attempts, [])

    def test_refused(self) -> None:
        """
        A refused connection is answered with Operation Reply 05, and closed.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, REQUEST)
        self.harness.upstream.last.fail(ConnectionRefusedError())
        self.assertEqual(transport.value(), AUTH_OK + OP_REFUSED)
        self.assertTrue(transport.disconnecting)

    def test_connectTimeout(self) -> None:
        """
        A connection that takes longer than the connect timeout is answered
        with 09.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, REQUEST)
        self.harness.clock.advance(30)
        auth, [reply] = replies(transport.value())
        self.assertEqual(reply.code, 0x09)

    def test_noop(self) -> None:
        """
        NOOP gets success twice, then a close; nothing is connected.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, request(command=Command.NOOP))
        self.assertEqual(
            transport.value(), AUTH_OK + bytes.fromhex("06 00 0000 0000 00 01 00000000")
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.harness.upstream.attempts, [])

    def test_bind(self) -> None:
        """
        BIND listens on the client's interface address, any port: the first
        Operation Reply gives it, the second the peer that connected (from
        anywhere), and bytes sent meanwhile reach the peer first.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            buildMessage(Request(Command.BIND, Destination(IPv4Address(0), 0))),
            b"early",
        )
        port, listener, backlog, interface = self.harness.clock.tcpServers[-1]
        self.assertEqual((port, interface), (0, "198.51.100.9"))
        peerAddress = IPv4Address("203.0.113.5")
        from twisted.internet.address import IPv4Address as TwistedIPv4

        peer = listener.buildProtocol(TwistedIPv4("TCP", str(peerAddress), 4444))
        peerTransport = RecordingTransport(
            TwistedIPv4("TCP", "198.51.100.9", 5555),
            TwistedIPv4("TCP", str(peerAddress), 4444),
        )
        peer.makeConnection(peerTransport)
        auth, [first, second] = replies(transport.value())
        self.assertTrue(auth.success)
        self.assertEqual(first.code, 0)
        self.assertEqual(second.code, 0)
        self.assertEqual(second.bind, Destination(peerAddress, 4444))
        self.assertEqual(peerTransport.value(), b"early")

    def test_unsupportedCommand(self) -> None:
        """
        An unknown command is authenticated, then answered 07 (command not
        supported).
        """
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, request(command=0x09))
        auth, [reply] = replies(transport.value())
        self.assertTrue(auth.success)
        self.assertEqual(reply.code, 0x07)
        self.assertTrue(transport.disconnecting)

    def test_dnsServiceRefused(self) -> None:
        """
        CONNECT to 0.0.0.0:53 or [::]:53 (the draft's DNS service, not
        offered) is answered 05, and nothing is connected.
        """
        for host in (IPv4Address(0), IPv6Address(0)):
            protocol, transport = self.harness.connect()
            self.harness.send(
                protocol, buildMessage(Request(Command.CONNECT, Destination(host, 53)))
            )
            auth, [reply] = replies(transport.value())
            self.assertEqual(reply.code, 0x05)
        self.assertEqual(self.harness.upstream.attempts, [])

    def test_malformedClosedSilently(self) -> None:
        """
        An Options Length that is not a multiple of 4 closes the connection
        without a reply (ambiguity A5).
        """
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, bytes.fromhex("06 01 0003 0050 00 01 c0000201"))
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_logEvent(self) -> None:
        """
        The connection's log event names SOCKS6, the command and the reply.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, REQUEST)
        self.harness.upstream.last.fail(ConnectionRefusedError())
        self.harness.close(protocol)
        event = self.harness.onlyEvent(self)
        self.assertEqual((event["version"], event["protocol"]), (6, "socks6"))

    def test_eofAfterRequest(self) -> None:
        """
        EOF right after the request and its initial data is remembered: the
        destination still gets the data.
        """
        protocol, transport = self.harness.connect()
        data = request(AuthMethodAdvertisementOption(frozenset(), 2), data=b"hi")
        self.harness.send(protocol, data)
        protocol.readConnectionLost()
        upstream = self.harness.upstream.last.succeed()
        self.assertEqual(upstream.transport.value(), b"hi")


class Socks6AuthenticationTests(SynchronousTestCase):
    """
    Username/password, 0-RTT and slow path, through the factory's
    authenticator.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)
        self.authenticator = FakeAuthenticator()
        self.harness.factory.authenticator = self.authenticator

    def test_zeroRtt(self) -> None:
        """
        Credentials in an Authentication Data option are checked; on success
        the one Authentication Reply carries the RFC 1929 success, the
        connection acts as the user, and the initial data go first.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            request(
                AuthMethodAdvertisementOption(frozenset({2}), 3),
                UsernamePasswordOption(b"alice", b"secret"),
                data=b"GET",
            ),
        )
        self.assertEqual(self.authenticator.calls[0][:2], (b"alice", b"secret"))
        self.assertEqual(transport.value(), b"")
        self.authenticator.results[0].callback(SocksUser(b"alice"))
        auth, operations = replies(transport.value())
        self.assertEqual(
            auth, AuthenticationReply(True, (UsernamePasswordReplyOption(0),))
        )
        self.assertEqual(self.harness.upstream.contexts[0].user, SocksUser(b"alice"))
        upstream = self.harness.upstream.last.succeed()
        self.assertEqual(upstream.transport.value(), b"GET")

    def test_zeroRttRefused(self) -> None:
        """
        Refused credentials get a failed Authentication Reply with the RFC
        1929 failure, then a close; nothing is connected.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            request(
                AuthMethodAdvertisementOption(frozenset({2})),
                UsernamePasswordOption(b"alice", b"wrong"),
            ),
        )
        from socksd.errors import AuthenticationFailed

        self.authenticator.results[0].errback(AuthenticationFailed())
        self.assertEqual(
            transport.value(),
            buildMessage(AuthenticationReply(False, (UsernamePasswordReplyOption(1),))),
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.harness.upstream.attempts, [])

    def test_slowPath(self) -> None:
        """
        A client advertising method 2 without credentials gets a failed
        reply selecting method 2; its bare RFC 1929 request is answered
        01 00, then the final successful Authentication Reply.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol, request(AuthMethodAdvertisementOption(frozenset({2})))
        )
        selection = buildMessage(
            AuthenticationReply(False, (AuthMethodSelectionOption(2),))
        )
        self.assertEqual(transport.value(), selection)
        self.harness.send(protocol, b"\x01\x05alice\x06secret" + b"early")
        self.authenticator.results[0].callback(SocksUser(b"alice"))
        self.assertEqual(
            transport.value(), selection + bytes.fromhex("01 00") + AUTH_OK
        )
        upstream = self.harness.upstream.last.succeed()
        self.assertEqual(upstream.transport.value(), b"early")

    def test_slowPathRefused(self) -> None:
        """
        Refused slow-path credentials get 01 01, a final failed reply, and
        a close.
        """
        from socksd.errors import AuthenticationFailed

        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            request(AuthMethodAdvertisementOption(frozenset({2}))),
            b"\x01\x05alice\x05wrong",
        )
        self.authenticator.results[0].errback(AuthenticationFailed())
        self.assertTrue(
            transport.value().endswith(
                bytes.fromhex("01 01") + bytes.fromhex("06 01 0000")
            )
        )
        self.assertTrue(transport.disconnecting)

    def test_noAcceptableMethod(self) -> None:
        """
        A client that advertises no usable method gets method 0xFF and a
        close.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, REQUEST)
        self.assertEqual(
            transport.value(),
            buildMessage(
                AuthenticationReply(False, (AuthMethodSelectionOption(0xFF),))
            ),
        )
        self.assertTrue(transport.disconnecting)

    def test_realAuthenticator(self) -> None:
        """
        With socksd's L{Authenticator}, the right password gets in at once,
        and a wrong one is refused after the failure delay.
        """
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        self.harness.factory.authenticator = Authenticator(
            portalFromCheckers([checker]), self.harness.clock, failureDelay=1.0
        )
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol, request(UsernamePasswordOption(b"alice", b"secret"))
        )
        auth, _ = replies(transport.value())
        self.assertTrue(auth.success)
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, request(UsernamePasswordOption(b"alice", b"nope")))
        self.assertEqual(transport.value(), b"")
        self.harness.clock.advance(1.0)
        auth, _ = replies(transport.value())
        self.assertFalse(auth.success)


class Socks6SessionTests(SynchronousTestCase):
    """
    Sessions: opened by a Session Request, bound to the user, needed no
    authentication inside, torn down, expired, capped.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        self.harness.factory.authenticator = Authenticator(
            portalFromCheckers([checker]), self.harness.clock, failureDelay=0
        )

    def openSession(self, *extra: Any) -> bytes:
        """Open a session as alice with a NOOP; return its ID."""
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            request(
                UsernamePasswordOption(b"alice", b"secret"),
                SessionRequestOption(),
                *extra,
                command=Command.NOOP,
            ),
        )
        auth, [operation] = replies(transport.value())
        self.assertTrue(auth.success)
        self.assertEqual(operation.code, 0)
        assert auth.sessionId is not None
        return auth.sessionId

    def test_sessionNeedsNoAuthentication(self) -> None:
        """
        A request with a live Session ID needs no credentials: it gets
        Session OK and acts as the user that opened the session.
        """
        sessionId = self.openSession()
        self.assertEqual(len(sessionId), 16)
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, request(SessionIdOption(sessionId)))
        auth, _ = replies(transport.value())
        self.assertEqual(auth, AuthenticationReply(True, (SessionOkOption(),)))
        self.assertEqual(self.harness.upstream.contexts[0].user, SocksUser(b"alice"))
        self.assertEqual(
            self.harness.upstream.contexts[0].credentials, (b"alice", b"secret")
        )

    def test_unknownSession(self) -> None:
        """
        An unknown Session ID gets a failed reply with Session Invalid, and
        a close.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, request(SessionIdOption(b"\x00" * 16)))
        self.assertEqual(
            transport.value(),
            buildMessage(AuthenticationReply(False, (SessionInvalidOption(),))),
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.harness.upstream.attempts, [])

    def test_teardown(self) -> None:
        """
        Session Teardown ends the session; that request is served outside
        it (so it must authenticate), and the ID is invalid afterwards.
        """
        sessionId = self.openSession()
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            request(
                SessionIdOption(sessionId),
                SessionTeardownOption(),
                command=Command.NOOP,
            ),
        )
        auth, _ = replies(transport.value())
        self.assertFalse(auth.success)
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, request(SessionIdOption(sessionId)))
        auth, _ = replies(transport.value())
        self.assertTrue(auth.sessionInvalid)

    def test_inactivityTimeout(self) -> None:
        """
        A session unused for its idle timeout is gone; using it restarts
        the timer.
        """
        self.harness.factory.socks6Sessions = SessionTable(
            self.harness.clock, idleTimeout=10.0
        )
        sessionId = self.openSession()
        self.harness.clock.advance(9)
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, request(SessionIdOption(sessionId)))
        self.assertTrue(replies(transport.value())[0].sessionOk)
        self.harness.clock.advance(9)
        self.assertIsNotNone(self.harness.factory.socks6Sessions.find(sessionId))
        self.harness.clock.advance(1)
        self.assertIsNone(self.harness.factory.socks6Sessions.find(sessionId))

    def test_capPerClient(self) -> None:
        """
        Past the per-client cap, a Session Request is ignored silently: the
        request succeeds without a Session ID.
        """
        self.harness.factory.socks6Sessions = SessionTable(
            self.harness.clock, maxPerClient=1
        )
        self.openSession()
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            request(
                UsernamePasswordOption(b"alice", b"secret"),
                SessionRequestOption(),
                command=Command.NOOP,
            ),
        )
        auth, [operation] = replies(transport.value())
        self.assertTrue(auth.success)
        self.assertIsNone(auth.sessionId)

    def test_capPerUser(self) -> None:
        """
        Past the per-user cap, a Session Request is ignored silently.
        """
        table = SessionTable(self.harness.clock, maxPerUser=1)
        self.assertIsNotNone(table.open("alice", None, "192.0.2.7"))
        self.assertIsNone(table.open("alice", None, "192.0.2.8"))
        self.assertIsNotNone(table.open("bob", None, "192.0.2.8"))

    def test_lazilyAttached(self) -> None:
        """
        The session table is made on the factory the first time it is asked
        for, and the same one is returned after.
        """
        factory = self.harness.factory
        self.assertIsNone(getattr(factory, "socks6Sessions", None))
        table = sessionTableFor(factory)
        self.assertIs(sessionTableFor(factory), table)


class Socks6IdempotenceTests(SynchronousTestCase):
    """
    Token windows, spending, and replays.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)

    def openWindow(self, size: int = 4) -> tuple[bytes, int]:
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            request(
                SessionRequestOption(),
                IdempotenceRequestOption(size),
                command=Command.NOOP,
            ),
        )
        auth, _ = replies(transport.value())
        assert auth.sessionId is not None and auth.idempotenceWindow is not None
        self.assertEqual(auth.idempotenceWindow[1], size)
        return auth.sessionId, auth.idempotenceWindow[0]

    def test_replayNeverReachesTheDestinationTwice(self) -> None:
        """
        A request spending a token is accepted and connected; the same bytes
        sent again are rejected at authentication and never connected.
        """
        sessionId, base = self.openWindow()
        data = request(
            SessionIdOption(sessionId),
            IdempotenceExpenditureOption(base),
            AuthMethodAdvertisementOption(frozenset(), 4),
            data=b"PAY!",
        )
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, data)
        auth, _ = replies(transport.value())
        self.assertTrue(auth.success)
        self.assertIs(auth.idempotenceAccepted, True)
        self.assertEqual(auth.idempotenceWindow, ((base + 1) % 2**32, 4))
        upstream = self.harness.upstream.last.succeed()
        self.assertEqual(upstream.transport.value(), b"PAY!")
        protocol, transport = self.harness.connect()
        self.harness.send(protocol, data)
        self.assertEqual(
            transport.value(),
            buildMessage(AuthenticationReply(False, (IdempotenceRejectedOption(),))),
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.harness.upstream.attempts), 1)

    def test_tokenOutsideWindowRejected(self) -> None:
        """
        A token outside the window is rejected.
        """
        sessionId, base = self.openWindow()
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            request(SessionIdOption(sessionId), IdempotenceExpenditureOption(base + 4)),
        )
        auth, _ = replies(transport.value())
        self.assertIs(auth.idempotenceAccepted, False)
        self.assertEqual(self.harness.upstream.attempts, [])

    def test_windowInEveryLaterReply(self) -> None:
        """
        Once issued, the window is in every successful reply of the
        session; a second Idempotence Request gets no new window.
        """
        sessionId, base = self.openWindow()
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            request(
                SessionIdOption(sessionId),
                IdempotenceRequestOption(100),
                command=Command.NOOP,
            ),
        )
        auth, _ = replies(transport.value())
        self.assertEqual(
            auth.options,
            (SessionOkOption(), IdempotenceWindowOption(base, 4)),
        )

    def test_idempotenceOutsideSessionIgnored(self) -> None:
        """
        Idempotence options outside a session are ignored silently.
        """
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            request(IdempotenceRequestOption(4), IdempotenceExpenditureOption(7)),
        )
        self.assertEqual(transport.value(), AUTH_OK)

    def test_acceptedOption(self) -> None:
        """
        The accepted spend's reply carries Session OK, Idempotence Accepted
        and the shifted window, in that order.
        """
        sessionId, base = self.openWindow(2)
        protocol, transport = self.harness.connect()
        self.harness.send(
            protocol,
            request(
                SessionIdOption(sessionId),
                IdempotenceExpenditureOption((base + 1) % 2**32),
                command=Command.NOOP,
            ),
        )
        auth, _ = replies(transport.value())
        self.assertEqual(
            auth.options,
            (
                SessionOkOption(),
                IdempotenceAcceptedOption(),
                IdempotenceWindowOption(base, 2),
            ),
        )


class TokenWindowTests(SynchronousTestCase):
    """
    L{TokenWindow}: modular arithmetic and shifting.
    """

    def test_shiftOnLowestSpent(self) -> None:
        """
        Spending the lowest token moves the base past it and past every
        spent token that follows, never past an unspent one.
        """
        window = TokenWindow(10, 4)
        self.assertTrue(window.spend(12))
        self.assertEqual(window.base, 10)
        self.assertTrue(window.spend(10))
        self.assertEqual(window.base, 11)
        self.assertTrue(window.spend(11))
        self.assertEqual((window.base, window.size), (13, 4))
        self.assertEqual(window.spent, set())

    def test_spentOnce(self) -> None:
        """
        A token is spent once; spending it again fails and changes nothing.
        """
        window = TokenWindow(10, 4)
        self.assertTrue(window.spend(11))
        self.assertFalse(window.spend(11))
        self.assertEqual((window.base, window.spent), (10, {11}))

    def test_wraps(self) -> None:
        """
        A window across 2**32 holds the tokens after the wrap, and shifts
        across it.
        """
        window = TokenWindow(2**32 - 2, 4)
        self.assertTrue(window.spend(1))
        self.assertFalse(window.spend(2))
        self.assertTrue(window.spend(2**32 - 2))
        self.assertTrue(window.spend(2**32 - 1))
        self.assertTrue(window.spend(0))
        self.assertEqual(window.base, 2)
        self.assertFalse(window.spend(2**32 - 1))

    def test_shiftedOutTokensRejected(self) -> None:
        """
        Tokens below the base (modulo 2**32) are rejected.
        """
        window = TokenWindow(0, 2)
        window.spend(0)
        window.spend(1)
        self.assertFalse(window.spend(0))
        self.assertTrue(window.spend(2))


class _SocketTransport(RecordingTransport):
    """A recording transport whose handle is a real (unconnected) socket."""

    def __init__(self, family: int = socket.AF_INET) -> None:
        super().__init__()
        self.socket = socket.socket(family, socket.SOCK_STREAM)

    def getHandle(self) -> socket.socket:
        return self.socket


class StackOptionTests(SynchronousTestCase):
    """
    Stack options on the proxy-remote leg: set on the socket, echoed.
    """

    def socketTransport(self, family: int = socket.AF_INET) -> _SocketTransport:
        transport = _SocketTransport(family)
        self.addCleanup(transport.socket.close)
        return transport

    def test_tosAndTtlSet(self) -> None:
        """
        IP TOS and TTL are set on the upstream socket and echoed with the
        values set.
        """
        transport = self.socketTransport()
        result = applyStackOptions(
            (IpTosOption(REMOTE, 0x10), TtlOption(StackLeg.BOTH, 7)),
            transport,
            DESTINATION,
            None,
        )
        self.assertEqual(result, (IpTosOption(REMOTE, 0x10), TtlOption(REMOTE, 7)))
        sock = transport.socket
        self.assertEqual(sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS), 0x10)
        self.assertEqual(sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL), 7)

    def test_ipv6(self) -> None:
        """
        On an IPv6 socket, TOS is the traffic class and TTL the hop limit.
        """
        try:
            transport = self.socketTransport(socket.AF_INET6)
        except OSError:
            raise self.skipTest("no IPv6 sockets")
        applyStackOptions(
            (IpTosOption(REMOTE, 0x20), TtlOption(REMOTE, 9)),
            transport,
            DESTINATION,
            None,
        )
        sock = transport.socket
        self.assertEqual(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS), 0x20)
        self.assertEqual(
            sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS), 9
        )

    def test_noFragmentation(self) -> None:
        """
        No Fragmentation sets path-MTU discovery to "do" on Linux and says
        so; elsewhere it is answered not available.
        """
        transport = self.socketTransport()
        [result] = applyStackOptions(
            (NoFragmentationOption(REMOTE, Availability.AVAILABLE),),
            transport,
            DESTINATION,
            None,
        )
        import sys

        if sys.platform.startswith("linux"):
            self.assertEqual(result.availability, Availability.AVAILABLE)
            self.assertEqual(transport.socket.getsockopt(socket.IPPROTO_IP, 10), 2)
        else:
            self.assertEqual(result.availability, Availability.UNAVAILABLE)

    def test_notAvailable(self) -> None:
        """
        Multipath is answered not available; Happy Eyeballs is available
        only for a name through the direct upstream; options for the
        client-proxy leg only are ignored; without a socket, TOS is not
        echoed.
        """
        direct = DirectUpstream.__new__(DirectUpstream)
        options = (
            MultipathOption(REMOTE, Availability.AVAILABLE),
            HappyEyeballsOption(REMOTE, Availability.AVAILABLE),
            TtlOption(StackLeg.CLIENT_PROXY, 3),
            IpTosOption(REMOTE, 4),
        )
        self.assertEqual(
            applyStackOptions(options, RecordingTransport(), DESTINATION, direct),
            (
                MultipathOption(REMOTE, Availability.UNAVAILABLE),
                HappyEyeballsOption(REMOTE, Availability.UNAVAILABLE),
            ),
        )
        named = Destination("example.com", 80)
        self.assertEqual(
            applyStackOptions(options[1:2], RecordingTransport(), named, direct),
            (HappyEyeballsOption(REMOTE, Availability.AVAILABLE),),
        )
        self.assertEqual(
            applyStackOptions(options[1:2], RecordingTransport(), named, None),
            (HappyEyeballsOption(REMOTE, Availability.UNAVAILABLE),),
        )

    def test_echoedInOperationReply(self) -> None:
        """
        Through the server, the Operation Reply echoes what was done on the
        upstream socket.
        """
        harness = Harness(self)
        protocol, transport = harness.connect()
        harness.send(protocol, request(IpTosOption(REMOTE, 0x08)))
        harness.upstream.last.succeed(self.socketTransport())
        auth, [operation] = replies(transport.value())
        self.assertEqual(operation.options, (IpTosOption(REMOTE, 0x08),))


class DnsServiceTests(SynchronousTestCase):
    """
    The SOCKS6 DNS service: CONNECT to 0.0.0.0:53 with C{socks6Dns}.
    """

    def setUp(self) -> None:
        from socksd.server import ServerConfig
        from socksd.testing import FakeResolver

        self.harness = Harness(self, ServerConfig(socks6Dns=True))
        self.harness.factory.resolver = FakeResolver(
            {"example.com": ["192.0.2.1", "2001:db8::1"]},
            {"192.0.2.1": "example.com"},
        )

    def query(self, name: bytes, kind: int, identifier: int = 7) -> bytes:
        from twisted.names import dns

        message = dns.Message(id=identifier, recDes=1)
        message.queries = [dns.Query(name, kind, dns.IN)]
        data = message.toStr()
        return len(data).to_bytes(2, "big") + data

    def answers(self, data: bytes) -> list[Any]:
        """The DNS responses framed in C{data}."""
        from twisted.names import dns

        responses = []
        while data:
            length = int.from_bytes(data[:2], "big")
            message = dns.Message()
            message.fromStr(data[2 : 2 + length])
            responses.append(message)
            data = data[2 + length :]
        return responses

    def test_queries(self) -> None:
        """
        A, AAAA and PTR queries pipelined with the request are answered in
        order from the server's resolver; an unknown name is NXDOMAIN and
        an MX query NOTIMP.  Nothing is connected.
        """
        from twisted.names import dns

        protocol, transport = self.harness.connect()
        dnsRequest = buildMessage(
            Request(Command.CONNECT, Destination(IPv4Address(0), 53))
        )
        self.harness.send(
            protocol,
            dnsRequest
            + self.query(b"example.com", dns.A, 1)
            + self.query(b"example.com", dns.AAAA, 2),
            self.query(b"1.2.0.192.in-addr.arpa", dns.PTR, 3)
            + self.query(b"nowhere.example", dns.A, 4)
            + self.query(b"example.com", dns.MX, 5),
        )
        self.assertEqual(self.harness.upstream.attempts, [])
        data = transport.value()
        head = AUTH_OK + bytes.fromhex("06 00 0000 0000 00 01 00000000")
        self.assertTrue(data.startswith(head))
        responses = self.answers(data[len(head) :])
        self.assertEqual([r.id for r in responses], [1, 2, 3, 4, 5])
        self.assertEqual(
            [r.rCode for r in responses],
            [dns.OK, dns.OK, dns.OK, dns.ENAME, dns.ENOTIMP],
        )
        self.assertEqual(responses[0].answers[0].payload.dottedQuad(), "192.0.2.1")
        self.assertEqual(
            IPv6Address(responses[1].answers[0].payload.address),
            IPv6Address("2001:db8::1"),
        )
        self.assertEqual(responses[2].answers[0].payload.name.name, b"example.com")
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)

    def test_disabled(self) -> None:
        """
        Without C{socks6Dns}, the DNS service address is refused (05).
        """
        harness = Harness(self)
        protocol, transport = harness.connect()
        harness.send(
            protocol,
            buildMessage(Request(Command.CONNECT, Destination(IPv6Address(0), 53))),
        )
        auth, [reply] = replies(transport.value())
        self.assertEqual(reply.code, 0x05)

    def test_tapOption(self) -> None:
        """
        C{--socks6-dns} turns the service on; it is off by default.
        """
        from socksd import tap

        for argv, expected in (([], False), (["--socks6-dns"], True)):
            options = tap.Options()
            options.parseOptions(argv)
            config = list(tap.makeService(options))[0].factory.config
            self.assertIs(config.socks6Dns, expected)


class _FakeUdpPort:
    """A listening UDP port that records what is written."""

    def __init__(self, protocol: Any, interface: str) -> None:
        self.protocol = protocol
        self.interface = interface
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.stopped = False

    def getHost(self) -> Any:
        from twisted.internet.address import IPv4Address as TwistedIPv4

        return TwistedIPv4("UDP", self.interface, 6000)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))

    def stopListening(self) -> None:
        self.stopped = True


class UdpAssociateTests(SynchronousTestCase):
    """
    SOCKS6 UDP ASSOCIATE: Association Init, mapping, Confirmation, datagrams
    over TCP and over UDP.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)
        self.ports: list[_FakeUdpPort] = []

        def listenUDP(
            port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
        ) -> Any:
            udp = _FakeUdpPort(protocol, interface)
            self.ports.append(udp)
            return udp

        self.harness.clock.listenUDP = listenUDP  # type: ignore[attr-defined]
        protocol, transport = self.harness.connect()
        self.protocol, self.transport = protocol, transport
        self.harness.send(protocol, request(command=Command.UDP_ASSOCIATE))
        buffer = bytearray(transport.value())
        from socksd.wire.socks6 import readUdpMessage

        auth = readAuthenticationReply(buffer)
        reply = readOperationReply(buffer)
        init = readUdpMessage(buffer)
        assert auth is not None and reply is not None and init is not None
        self.reply = reply
        self.associationId = init.associationId
        self.transport.clear()

    def test_initAndBind(self) -> None:
        """
        The Operation Reply names the UDP socket on the client's interface
        address, and Association Init follows.
        """
        self.assertEqual(self.reply.code, 0)
        self.assertEqual(
            self.reply.bind, Destination(IPv4Address("198.51.100.9"), 6000)
        )
        self.assertEqual(self.ports[0].interface, "198.51.100.9")

    def test_overTcp(self) -> None:
        """
        A datagram on TCP maps the association to TCP (Confirmation), goes
        out of the UDP socket, and the answer comes back framed on TCP.
        """
        from socksd.wire.socks6 import UdpAssociationConfirmation, UdpDatagram

        remote = Destination(IPv4Address("192.0.2.53"), 53)
        self.harness.send(
            self.protocol,
            buildMessage(UdpDatagram(self.associationId, remote, b"query")),
        )
        self.assertEqual(
            self.transport.value(),
            buildMessage(UdpAssociationConfirmation(self.associationId)),
        )
        self.assertEqual(self.ports[0].written, [(b"query", ("192.0.2.53", 53))])
        self.transport.clear()
        association = self.ports[0].protocol
        association.datagramReceived(b"answer", ("192.0.2.53", 53))
        association.datagramReceived(b"stranger", ("192.0.2.99", 53))
        self.assertEqual(
            self.transport.value(),
            buildMessage(UdpDatagram(self.associationId, remote, b"answer")),
        )
        association.datagramReceived(
            buildMessage(UdpDatagram(self.associationId, remote, b"x")),
            ("192.0.2.7", 7000),
        )
        self.assertEqual(len(self.ports[0].written), 1)

    def test_overUdp(self) -> None:
        """
        A datagram from the client's host on UDP maps the association to
        that address; answers go back there; a wrong ID is dropped; the
        association ends with the TCP connection.
        """
        from socksd.wire.socks6 import UdpAssociationConfirmation, UdpDatagram

        association = self.ports[0].protocol
        remote = Destination("example.com", 7)
        association.datagramReceived(
            buildMessage(UdpDatagram(self.associationId ^ 1, remote, b"bad")),
            ("192.0.2.7", 7000),
        )
        self.assertEqual(self.transport.value(), b"")
        association.datagramReceived(
            buildMessage(UdpDatagram(self.associationId, remote, b"ping")),
            ("192.0.2.7", 7000),
        )
        self.assertEqual(
            self.transport.value(),
            buildMessage(UdpAssociationConfirmation(self.associationId)),
        )
        self.assertEqual(self.ports[0].written, [(b"ping", ("192.0.2.1", 7))])
        association.datagramReceived(b"pong", ("192.0.2.1", 7))
        self.assertEqual(
            self.ports[0].written[-1],
            (
                buildMessage(
                    UdpDatagram(
                        self.associationId,
                        Destination(IPv4Address("192.0.2.1"), 7),
                        b"pong",
                    )
                ),
                ("192.0.2.7", 7000),
            ),
        )
        self.harness.close(self.protocol)
        self.assertTrue(self.ports[0].stopped)

    def test_idleTimeout(self) -> None:
        """
        An association with no datagram for the UDP timeout is closed.
        """
        self.harness.clock.advance(120)
        self.assertTrue(self.transport.disconnecting)
