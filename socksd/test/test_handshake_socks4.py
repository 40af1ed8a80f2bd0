"""
Tests for L{socksd.handshake.socks4}: the sans-IO SOCKS4 and SOCKS4A server
handshake, with hex vectors fed whole, byte by byte and at every split.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Iterator

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from socksd.address import Destination
from socksd.handshake import (
    Action,
    HandshakeSettings,
    Refuse,
    Request,
    RequestReady,
    Socks4Handshake,
)
from socksd.replies import ReplyProfile, Socks4Reply
from socksd.test._vectors import asciiHex, chunked, h, splits

DEFAULT = HandshakeSettings()
AUTH = HandshakeSettings(requireAuth=True)
AUTH_SOCKS4 = HandshakeSettings(requireAuth=True, socks4WithAuth=True)

#: CONNECT 192.0.2.1:80, user id "alice".
REQUEST = h("04", "01", "0050", "c0000201", asciiHex("alice"), "00")
#: CONNECT 192.0.2.1:80, empty user id.
REQUEST_NO_ID = h("04", "01", "0050", "c0000201", "00")
#: SOCKS4A CONNECT example.com:443, empty user id.
REQUEST_4A = h("04", "01", "01bb", "00000001", "00", asciiHex("example.com"), "00")
#: SOCKS4A CONNECT example.com:443, user id "bob".
REQUEST_4A_BOB = h(
    "04", "01", "01bb", "00000001", asciiHex("bob"), "00", asciiHex("example.com"), "00"
)
REJECTED = h("00", "5b", "0000", "00000000")

DESTINATION = Destination(IPv4Address("192.0.2.1"), 80)
EXAMPLE = Destination("example.com", 443)
BOUND = Destination(IPv4Address("198.51.100.1"), 40000)


def request(
    destination: Destination = DESTINATION,
    isolation: tuple[bytes, ...] | None = (b"alice",),
    protocol: str = "socks4",
    command: int = 1,
) -> Request:
    """The L{Request} a SOCKS4 handshake gives."""
    return Request(
        4, protocol, command, destination, ReplyProfile.SOCKS4, isolation=isolation
    )


def feed(handshake: Socks4Handshake, chunks: list[bytes]) -> list[Action]:
    """Feed C{chunks} in order; every action, in order."""
    actions: list[Action] = []
    for chunk in chunks:
        actions += handshake.dataReceived(chunk)
    return actions


def everySplit(
    data: bytes, handshakeSettings: HandshakeSettings = DEFAULT
) -> Iterator[tuple[Socks4Handshake, list[Action], list[bytes]]]:
    """
    A new handshake fed C{data} whole, byte by byte and at every split:
    the handshake, its actions and the chunks.
    """
    for chunks in splits(data):
        handshake = Socks4Handshake(handshakeSettings)
        yield handshake, feed(handshake, chunks), chunks


class Socks4RequestTests(SynchronousTestCase):
    """
    A SOCKS4 or SOCKS4A request gives one L{RequestReady}.
    """

    def test_attributes(self) -> None:
        """
        A new handshake is SOCKS4 version 4 with the SOCKS4 reply profile,
        and holds no bytes.
        """
        handshake = Socks4Handshake(DEFAULT)
        self.assertEqual(
            (handshake.protocol, handshake.version, handshake.profile),
            ("socks4", 4, ReplyProfile.SOCKS4),
        )
        self.assertEqual(handshake.buffered(), 0)
        self.assertEqual(handshake.unconsumed(), b"")

    def test_connect(self) -> None:
        """
        A SOCKS4 CONNECT split anywhere gives one L{RequestReady} for its
        address and port, with the user id as the isolation credentials
        and no username and password.
        """
        for handshake, actions, chunks in everySplit(REQUEST):
            self.assertEqual(actions, [RequestReady(request())], chunks)
            self.assertEqual(handshake.protocol, "socks4")
            self.assertEqual(handshake.unconsumed(), b"")
            self.assertEqual(handshake.buffered(), 0)

    def test_nothingBeforeTheEnd(self) -> None:
        """
        Every proper prefix of a request gives no action, and is buffered.
        """
        for length in range(1, len(REQUEST)):
            handshake = Socks4Handshake(DEFAULT)
            self.assertEqual(handshake.dataReceived(REQUEST[:length]), [])
            self.assertEqual(handshake.buffered(), length)

    def test_emptyUserId(self) -> None:
        """
        An empty user id gives no isolation credentials.
        """
        for _, actions, chunks in everySplit(REQUEST_NO_ID):
            self.assertEqual(actions, [RequestReady(request(isolation=None))], chunks)

    def test_socks4a(self) -> None:
        """
        A SOCKS4A request gives the name, and makes the protocol socks4a,
        in the handshake and in the request.
        """
        for handshake, actions, chunks in everySplit(REQUEST_4A):
            self.assertEqual(
                actions,
                [RequestReady(request(EXAMPLE, None, "socks4a"))],
                chunks,
            )
            self.assertEqual(handshake.protocol, "socks4a")

    def test_socks4aUserId(self) -> None:
        """
        A SOCKS4A user id is the isolation credentials too.
        """
        for _, actions, chunks in everySplit(REQUEST_4A_BOB):
            self.assertEqual(
                actions,
                [RequestReady(request(EXAMPLE, (b"bob",), "socks4a"))],
                chunks,
            )

    def test_commands(self) -> None:
        """
        The command byte is passed on raw (BIND, Tor's RESOLVE, or one the
        pipeline refuses): the handshake decides nothing about it.
        """
        for command in (0x02, 0xF0, 0x03, 0xFF):
            data = bytes([4, command]) + REQUEST[2:]
            for _, actions, chunks in everySplit(data):
                self.assertEqual(
                    actions, [RequestReady(request(command=command))], chunks
                )

    def test_earlyData(self) -> None:
        """
        Bytes after the request, in the same chunk or later ones, are
        unconsumed: one L{RequestReady}, and the bytes in order.
        """
        for handshake, actions, chunks in everySplit(REQUEST + b"early"):
            self.assertEqual(actions, [RequestReady(request())], chunks)
            self.assertEqual(handshake.buffered(), 5)
            self.assertEqual(handshake.dataReceived(b" late"), [])
            self.assertEqual(handshake.unconsumed(), b"early late", chunks)
            self.assertEqual(handshake.unconsumed(), b"")

    def test_credentialsNeverAsked(self) -> None:
        """
        SOCKS4 never asks for a credentials check: the answers are no
        actions.
        """
        handshake = Socks4Handshake(AUTH_SOCKS4)
        self.assertEqual(handshake.credentialsChecked(object()), [])
        self.assertEqual(handshake.credentialsRefused(), [])
        self.assertEqual(feed(handshake, [REQUEST]), [RequestReady(request())])
        self.assertEqual(handshake.credentialsChecked(object()), [])
        self.assertEqual(handshake.credentialsRefused(), [])


class Socks4MalformedTests(SynchronousTestCase):
    """
    A malformed request is refused with 91 (REJECTED), named in the reason.
    """

    def assertRefused(self, data: bytes, why: str) -> None:
        """
        C{data}, split anywhere, gives one L{Refuse} with the 91 reply and
        the reason C{"malformed SOCKS4 request: " + why}; later bytes and
        EOF give nothing, and nothing is unconsumed.
        """
        expected = [
            Refuse(REJECTED, f"malformed SOCKS4 request: {why}", Socks4Reply.REJECTED)
        ]
        for handshake, actions, chunks in everySplit(data):
            self.assertEqual(actions, expected, chunks)
            self.assertEqual(handshake.dataReceived(b"more"), [])
            self.assertEqual(handshake.clientEnded(), [])
            self.assertEqual(handshake.unconsumed(), b"")
            self.assertEqual(handshake.buffered(), 0)

    def test_userIdTooLong(self) -> None:
        """
        A user id of 256 bytes or more is refused once 256 have arrived.
        """
        self.assertRefused(
            h("04", "01", "0050", "c0000201") + b"u" * 300,
            "user id longer than 255 bytes",
        )

    def test_domainTooLong(self) -> None:
        """
        A SOCKS4A domain of 256 bytes or more is refused.
        """
        self.assertRefused(
            h("04", "01", "0050", "00000001", "00") + b"d" * 300,
            "SOCKS4A domain longer than 255 bytes",
        )

    def test_emptyDomain(self) -> None:
        """
        An empty SOCKS4A domain is refused.
        """
        self.assertRefused(
            h("04", "01", "0050", "00000001", "00", "00"), "zero-length SOCKS4A domain"
        )

    def test_badVersion(self) -> None:
        """
        A first byte other than 04 is refused at once.
        """
        self.assertRefused(
            h("05", "01", "0050", "c0000201", "00"), "bad SOCKS4 request version 05"
        )

    def test_replyAfterRefusal(self) -> None:
        """
        After a malformed request, only failure replies can be built.
        """
        handshake = Socks4Handshake(DEFAULT)
        handshake.dataReceived(h("05"))
        self.assertEqual(handshake.reply(Socks4Reply.REJECTED), REJECTED)


class Socks4AuthenticationTests(SynchronousTestCase):
    """
    SOCKS4 clients cannot send a password: with an authenticator they are
    refused, unless C{socks4WithAuth} is set.
    """

    def test_refused(self) -> None:
        """
        With C{requireAuth}, a request split anywhere gets 91 and a close;
        the refusal carries the request, for the log.
        """
        for data, parsed in (
            (REQUEST, request()),
            (REQUEST_4A, request(EXAMPLE, None, "socks4a")),
        ):
            for handshake, actions, chunks in everySplit(data + b"early", AUTH):
                self.assertEqual(
                    actions,
                    [
                        Refuse(
                            REJECTED,
                            "SOCKS4 refused: authentication is required",
                            Socks4Reply.REJECTED,
                            parsed,
                        )
                    ],
                    chunks,
                )
                self.assertEqual(handshake.dataReceived(b"more"), [])
                self.assertEqual(handshake.clientEnded(), [])
                self.assertEqual(handshake.unconsumed(), b"")

    def test_socks4WithAuth(self) -> None:
        """
        With C{requireAuth} and C{socks4WithAuth}, the request is served,
        isolated by its user id, without a user.
        """
        for _, actions, chunks in everySplit(REQUEST, AUTH_SOCKS4):
            self.assertEqual(actions, [RequestReady(request())], chunks)

    def test_socks4WithAuthAlone(self) -> None:
        """
        C{socks4WithAuth} without an authenticator changes nothing.
        """
        handshakeSettings = HandshakeSettings(socks4WithAuth=True)
        for _, actions, chunks in everySplit(REQUEST, handshakeSettings):
            self.assertEqual(actions, [RequestReady(request())], chunks)


class Socks4EndTests(SynchronousTestCase):
    """
    EOF from the client before its request is a close; after it, the
    pipeline's business.
    """

    def test_beforeAnything(self) -> None:
        """
        EOF before any byte is a refusal without a reply.
        """
        handshake = Socks4Handshake(DEFAULT)
        self.assertEqual(
            handshake.clientEnded(),
            [Refuse(b"", "client sent EOF during the handshake")],
        )
        self.assertEqual(handshake.clientEnded(), [])
        self.assertEqual(handshake.dataReceived(REQUEST), [])

    def test_duringTheRequest(self) -> None:
        """
        EOF after any proper prefix of a request is a refusal without a
        reply; bytes after it give nothing.
        """
        for length in range(1, len(REQUEST)):
            handshake = Socks4Handshake(DEFAULT)
            handshake.dataReceived(REQUEST[:length])
            self.assertEqual(
                handshake.clientEnded(),
                [Refuse(b"", "client sent EOF during the handshake")],
            )
            self.assertEqual(handshake.dataReceived(REQUEST[length:]), [])
            self.assertEqual(handshake.unconsumed(), b"")

    def test_afterTheRequest(self) -> None:
        """
        EOF after the request gives nothing: the early data stays
        unconsumed.
        """
        handshake = Socks4Handshake(DEFAULT)
        handshake.dataReceived(REQUEST + b"early")
        self.assertEqual(handshake.clientEnded(), [])
        self.assertEqual(handshake.unconsumed(), b"early")


class Socks4ReplyTests(SynchronousTestCase):
    """
    L{Socks4Handshake.reply} builds the SOCKS4 reply (version 00).
    """

    def served(self, data: bytes = REQUEST) -> Socks4Handshake:
        """A handshake that gave a L{RequestReady} for C{data}."""
        handshake = Socks4Handshake(DEFAULT)
        self.assertEqual(len(handshake.dataReceived(data)), 1)
        return handshake

    def test_granted(self) -> None:
        """
        A success carries the bound address and port.
        """
        self.assertEqual(
            self.served().reply(Socks4Reply.GRANTED, BOUND),
            h("00", "5a", "9c40", "c6336401"),
        )

    def test_failures(self) -> None:
        """
        Each failure code is sent with 0.0.0.0:0.
        """
        for code, byte in (
            (Socks4Reply.REJECTED, "5b"),
            (Socks4Reply.IDENTD_UNREACHABLE, "5c"),
            (Socks4Reply.USERID_MISMATCH, "5d"),
        ):
            self.assertEqual(
                self.served().reply(code), h("00", byte, "0000", "00000000")
            )

    def test_noBound(self) -> None:
        """
        A success without a bound address says 0.0.0.0:0.
        """
        self.assertEqual(
            self.served().reply(Socks4Reply.GRANTED), h("00", "5a", "0000", "00000000")
        )

    def test_ipv6Bound(self) -> None:
        """
        An IPv6 bound address, which SOCKS4 cannot carry, is reported as
        0.0.0.0:0.
        """
        bound = Destination(IPv6Address("2001:db8::2"), 80)
        self.assertEqual(
            self.served().reply(Socks4Reply.GRANTED, bound),
            h("00", "5a", "0000", "00000000"),
        )

    def test_bindTwoReplies(self) -> None:
        """
        A granted BIND gets a second reply, with the peer's address.
        """
        handshake = self.served(h("04", "02", "0050", "c0000201", "00"))
        self.assertEqual(
            handshake.reply(Socks4Reply.GRANTED, BOUND),
            h("00", "5a", "9c40", "c6336401"),
        )
        peer = Destination(IPv4Address("192.0.2.1"), 80)
        self.assertEqual(
            handshake.reply(Socks4Reply.GRANTED, peer),
            h("00", "5a", "0050", "c0000201"),
        )

    def test_replyLabel(self) -> None:
        """
        The log names a reply by its code.
        """
        handshake = self.served()
        for code in Socks4Reply:
            self.assertIs(handshake.replyLabel(code), code)


_actionTypes = (RequestReady, Refuse)


class Socks4PropertyTests(SynchronousTestCase):
    """
    Random bytes never break the handshake.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from(
            [b"", h("04"), h("04 01 0050 c0000201"), h("04 01 0050 00000001")]
        ),
        st.binary(max_size=600),
        st.lists(st.integers(0, 700), max_size=6),
        st.builds(HandshakeSettings, st.booleans(), st.booleans(), st.booleans()),
        st.booleans(),
    )
    def test_randomBytes(
        self,
        prefix: bytes,
        tail: bytes,
        cuts: list[int],
        handshakeSettings: HandshakeSettings,
        end: bool,
    ) -> None:
        """
        Random bytes, cut anywhere, then maybe EOF, raise nothing and give
        lists of actions, with at most one L{RequestReady} or L{Refuse},
        last; after a L{RequestReady}, a reply can be built.
        """
        handshake = Socks4Handshake(handshakeSettings)
        actions: list[Action] = []
        for chunk in chunked(prefix + tail, cuts):
            result = handshake.dataReceived(chunk)
            self.assertIsInstance(result, list)
            actions += result
        if end:
            result = handshake.clientEnded()
            self.assertIsInstance(result, list)
            actions += result
        self.assertLessEqual(len(actions), 1)
        for action in actions:
            self.assertIsInstance(action, _actionTypes)
            if isinstance(action, RequestReady):
                self.assertIsInstance(handshake.unconsumed(), bytes)
                self.assertIsInstance(handshake.reply(Socks4Reply.GRANTED), bytes)
        self.assertIsInstance(handshake.buffered(), int)
