"""
Tests for L{socksd.handshake.socks5}: the sans-IO SOCKS5 server handshake
(RFC 1928, RFC 1929, Tor's leniency and proposal 229), with hex vectors
fed whole, byte by byte and at every split.

The destination is 192.0.2.1:80 (2001:db8::1 and example.com for the other
address types), and the bound address of a success 198.51.100.1:40000.
The expected bytes are those of the server's wire-level tests
(C{test_server_socks5}, C{test_tor}, C{test_server_auth}).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Iterator

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

import socksd
from socksd.address import Destination
from socksd.errors import MalformedMessage
from socksd.handshake import (
    Action,
    CheckCredentials,
    HandshakeSettings,
    Refuse,
    Request,
    RequestReady,
    Send,
    ServerHandshake,
    Socks5Handshake,
)
from socksd.replies import Prop229Reply, ReplyProfile, Socks5Reply
from socksd.test._vectors import asciiHex, chunked, h, splits
from socksd.wire import OutOfTurn

NO_AUTH = HandshakeSettings()
AUTH = HandshakeSettings(requireAuth=True)
PREFER_NO_AUTH = HandshakeSettings(preferNoAuth=True)
EXTENDED_ERRORS = HandshakeSettings(extendedErrors=True)

#: What the fake authenticator returns for alice.
ALICE = "avatar:alice"
ALICE_SECRET = (b"alice", b"secret")

#: Greetings: the methods offered.
GREETING = h("05", "01", "00")
GREETING_UP = h("05", "01", "02")
GREETING_BOTH = h("05", "02", "00", "02")
GREETING_229 = h("05", "01", "97")
GREETING_ALL = h("05", "03", "00", "02", "97")

#: Method selections.
SELECT_00 = h("05", "00")
SELECT_02 = h("05", "02")
SELECT_97 = h("05", "97")
SELECT_FF = h("05", "ff")

#: RFC 1929: alice, secret.
ALICE_UP = h("01", "05", asciiHex("alice"), "06", asciiHex("secret"))
#: RFC 1929 replies.
UP_OK = h("01", "00")
UP_FAIL = h("01", "01")

#: Proposal 229 pairs, as hex fields.
USERNAME_ALICE = ("0008", asciiHex("USERNAME"), "0005", asciiHex("alice"))
PASSWD_SECRET = ("0006", asciiHex("PASSWD"), "0006", asciiHex("secret"))
X_KEY = ("0005", asciiHex("X-Key"), "0001", asciiHex("v"))
X_ZONE = ("0006", asciiHex("X-Zone"), "0001", asciiHex("b"))
#: Proposal 229: USERNAME alice, PASSWD secret.
EXT_ALICE = h("01", "0002", *USERNAME_ALICE, *PASSWD_SECRET)
#: Proposal 229: USERNAME alice, X-Zone b, PASSWD secret, X-Key v.
EXT_PAIRS = h("01", "0004", *USERNAME_ALICE, *X_ZONE, *PASSWD_SECRET, *X_KEY)
#: Proposal 229: X-Key v alone.
EXT_KEY_ONLY = h("01", "0001", *X_KEY)
#: Proposal 229 replies (no pairs).
EXT_OK = h("01", "00", "0000")
EXT_FAIL = h("01", "01", "0000")

#: CONNECT 192.0.2.1:80.
CONNECT = h("05", "01", "00", "01", "c0000201", "0050")

DESTINATION = Destination(IPv4Address("192.0.2.1"), 80)
BOUND = Destination(IPv4Address("198.51.100.1"), 40000)
#: The request's destinations, and their address fields.
ADDRESSES = (
    (DESTINATION, h("01", "c0000201", "0050")),
    (
        Destination(IPv6Address("2001:db8::1"), 443),
        h("04", "20010db8000000000000000000000001", "01bb"),
    ),
    (Destination("example.com", 80), h("03", "0b", asciiHex("example.com"), "0050")),
)
#: CONNECT, BIND, UDP ASSOCIATE, Tor's RESOLVE and RESOLVE_PTR.
COMMANDS = (0x01, 0x02, 0x03, 0xF0, 0xF1)

#: The isolation is the credentials (see L{request}).
SAME = object()


def failure(code: int) -> bytes:
    """The failure reply with C{code}, bound 0.0.0.0:0."""
    return h("05", f"{code:02x}", "00", "01", "00000000", "0000")


def request(
    destination: Destination = DESTINATION,
    command: int = 1,
    *,
    profile: ReplyProfile = ReplyProfile.SOCKS5,
    user: Any = None,
    credentials: tuple[bytes, bytes] | None = None,
    isolation: Any = SAME,
    pairs: dict[bytes, bytes] | None = None,
) -> Request:
    """
    The L{Request} a SOCKS5 handshake gives; its isolation is the
    credentials unless C{isolation} is given.
    """
    return Request(
        5,
        "socks5",
        command,
        destination,
        profile,
        user,
        credentials,
        credentials if isolation is SAME else isolation,
        pairs or {},
    )


def feed(handshake: Socks5Handshake, chunks: list[bytes]) -> list[Action]:
    """Feed C{chunks} in order; every action, in order."""
    actions: list[Action] = []
    for chunk in chunks:
        actions += handshake.dataReceived(chunk)
    return actions


def everySplit(
    data: bytes, handshakeSettings: HandshakeSettings = NO_AUTH
) -> Iterator[tuple[Socks5Handshake, list[Action], list[str]]]:
    """
    A new handshake fed C{data} whole, byte by byte and at every split:
    the handshake, its actions and the chunks (in hex, for messages).
    """
    for chunks in splits(data):
        handshake = Socks5Handshake(handshakeSettings)
        yield handshake, feed(handshake, chunks), [c.hex(" ") for c in chunks]


#: The bytes a codec error shows ("bad request header 05 01 01 01"): as
#: many as had arrived when the error was seen.
_DUMP = re.compile(r"(?<=header )[0-9a-f]{2}(?: [0-9a-f]{2})*")


def withoutDump(actions: list[Action]) -> list[Action]:
    """C{actions}, with the bytes a refusal's reason shows replaced by C{..}."""
    return [
        replace(a, reason=_DUMP.sub("..", a.reason)) if isinstance(a, Refuse) else a
        for a in actions
    ]


class VectorMixin:
    """Feed vectors to fresh handshakes and compare the actions."""

    def assertVector(
        self,
        data: bytes,
        expected: list[Action],
        handshakeSettings: HandshakeSettings = NO_AUTH,
        dump: bool = False,
    ) -> Socks5Handshake:
        """
        Feed C{data} whole, byte by byte and at every split to a fresh
        handshake each time; the actions, concatenated, are C{expected}.

        @param dump: a refusal's reason shows the bytes of the broken
            message that had arrived: they are compared when C{data} is fed
            whole, and ignored for the other splits.
        @return: the last handshake.
        """
        for handshake, actions, chunks in everySplit(data, handshakeSettings):
            if dump and len(chunks) > 1:
                actions, want = withoutDump(actions), withoutDump(expected)
            else:
                want = expected
            self.assertEqual(actions, want, chunks)  # type: ignore[attr-defined]
        return handshake

    def assertDone(self, handshake: Socks5Handshake) -> None:
        """
        After a refusal, the handshake gives nothing more: later bytes, EOF
        and credential answers give no action, and nothing is buffered or
        unconsumed.
        """
        self.assertEqual(  # type: ignore[attr-defined]
            (
                handshake.dataReceived(CONNECT),
                handshake.clientEnded(),
                handshake.credentialsChecked(ALICE),
                handshake.credentialsRefused(),
                handshake.unconsumed(),
                handshake.buffered(),
            ),
            ([], [], [], [], b"", 0),
        )


class Socks5MethodTests(VectorMixin, SynchronousTestCase):
    """
    Method selection without an authenticator: every method only isolates,
    and 0x97, 02, 00 are preferred in that order (00 first with
    C{preferNoAuth}).
    """

    def test_attributes(self) -> None:
        """
        A new handshake is SOCKS5 version 5 with the SOCKS5 reply profile
        (Tor's extended one with C{extendedErrors}), has every method of
        L{ServerHandshake}, and holds no bytes.
        """
        handshake = Socks5Handshake(NO_AUTH)
        self.assertEqual(
            (handshake.protocol, handshake.version, handshake.profile),
            ("socks5", 5, ReplyProfile.SOCKS5),
        )
        self.assertIsNone(handshake.user)
        self.assertEqual(handshake.buffered(), 0)
        self.assertEqual(handshake.unconsumed(), b"")
        for name in dir(ServerHandshake):
            if not name.startswith("_"):
                self.assertTrue(hasattr(handshake, name), name)
        self.assertEqual(
            Socks5Handshake(EXTENDED_ERRORS).profile, ReplyProfile.SOCKS5_EXTENDED
        )

    def test_noAuth(self) -> None:
        """
        A client offering only 00 gets 05 00, then its request, with no
        credentials and no isolation.
        """
        handshake = self.assertVector(
            GREETING + CONNECT, [Send(SELECT_00), RequestReady(request())]
        )
        self.assertEqual(handshake.buffered(), 0)
        self.assertEqual(handshake.unconsumed(), b"")

    def test_greetingAlone(self) -> None:
        """
        The method selection is sent as soon as the greeting is in, before
        the request; every proper prefix of a greeting gives nothing and is
        buffered.
        """
        handshake = self.assertVector(GREETING, [Send(SELECT_00)])
        self.assertEqual(handshake.buffered(), 0)
        greeting = h("05", "03", "01", "80", "00")
        for length in range(1, len(greeting)):
            handshake = Socks5Handshake(NO_AUTH)
            self.assertEqual(handshake.dataReceived(greeting[:length]), [])
            self.assertEqual(handshake.buffered(), length)
        self.assertVector(greeting, [Send(SELECT_00)])

    def test_usernamePasswordPreferred(self) -> None:
        """
        02 is preferred to 00 (as Tor, so that credentials can isolate):
        offered alone or with 00, it is selected.
        """
        for greeting in (GREETING_UP, GREETING_BOTH, h("05", "02", "02", "00")):
            self.assertVector(greeting, [Send(SELECT_02)])

    def test_preferNoAuth(self) -> None:
        """
        With C{preferNoAuth}, 00 is selected when offered (even with 02 or
        0x97); 02 alone is still selected.
        """
        for greeting, selection in (
            (GREETING_BOTH, SELECT_00),
            (GREETING_ALL, SELECT_00),
            (GREETING_UP, SELECT_02),
            (GREETING_229, SELECT_97),
        ):
            self.assertVector(greeting, [Send(selection)], PREFER_NO_AUTH)

    def test_extendedFirst(self) -> None:
        """
        Proposal 229's 0x97 is selected first when offered, and gives the
        client the C{SOCKS5_PROP229} reply profile.
        """
        for greeting in (GREETING_229, GREETING_ALL, h("05", "02", "97", "00")):
            handshake = self.assertVector(greeting, [Send(SELECT_97)])
            self.assertEqual(handshake.profile, ReplyProfile.SOCKS5_PROP229)

    def test_prop229ProfileWithoutMethod(self) -> None:
        """
        A client that offered 0x97 gets the proposal 229 profile even when
        00 is selected (C{preferNoAuth}), and even with C{extendedErrors}:
        the request carries it.
        """
        greeting = h("05", "02", "00", "97")
        for handshakeSettings in (
            PREFER_NO_AUTH,
            HandshakeSettings(preferNoAuth=True, extendedErrors=True),
        ):
            handshake = self.assertVector(
                greeting + CONNECT,
                [
                    Send(SELECT_00),
                    RequestReady(request(profile=ReplyProfile.SOCKS5_PROP229)),
                ],
                handshakeSettings,
            )
            self.assertEqual(handshake.profile, ReplyProfile.SOCKS5_PROP229)

    def test_extendedErrorsProfile(self) -> None:
        """
        With C{extendedErrors}, a client that did not offer 0x97 gets Tor's
        extended profile.
        """
        self.assertVector(
            GREETING + CONNECT,
            [
                Send(SELECT_00),
                RequestReady(request(profile=ReplyProfile.SOCKS5_EXTENDED)),
            ],
            EXTENDED_ERRORS,
        )

    def test_noAcceptableMethod(self) -> None:
        """
        A client that offers only GSSAPI or private methods gets 05 FF and
        a close, labelled C{NO_ACCEPTABLE_METHODS}; the methods are named
        in the reason.  Bytes after the greeting are dropped.
        """
        for data in (h("05", "02", "80", "01"), h("05", "02", "80", "01") + CONNECT):
            for handshake, actions, chunks in everySplit(data):
                self.assertEqual(
                    actions,
                    [
                        Refuse(
                            SELECT_FF,
                            "no acceptable authentication method offered (01 80)",
                            "NO_ACCEPTABLE_METHODS",
                        )
                    ],
                    chunks,
                )
                self.assertDone(handshake)


class Socks5AuthenticationTests(VectorMixin, SynchronousTestCase):
    """
    With an authenticator (C{requireAuth}): 02 or 0x97, and the username
    and password go out in a L{CheckCredentials}.
    """

    def checking(self, data: bytes, expected: list[Action]) -> Socks5Handshake:
        """A handshake fed C{data} at every split, now checking credentials."""
        return self.assertVector(data, expected, AUTH)

    def test_methods(self) -> None:
        """
        02 is selected over 00, and 0x97 over 02; a client without either
        gets 05 FF and a close.
        """
        self.assertVector(GREETING_BOTH, [Send(SELECT_02)], AUTH)
        self.assertVector(h("05", "02", "02", "97"), [Send(SELECT_97)], AUTH)
        self.assertVector(
            h("05", "02", "97", "00"),
            [Send(SELECT_97)],
            HandshakeSettings(requireAuth=True, preferNoAuth=True),
        )
        for handshake, actions, chunks in everySplit(GREETING, AUTH):
            self.assertEqual(
                actions,
                [
                    Refuse(
                        SELECT_FF,
                        "no acceptable authentication method offered (00)",
                        "NO_ACCEPTABLE_METHODS",
                    )
                ],
                chunks,
            )
            self.assertDone(handshake)

    def test_checkCredentials(self) -> None:
        """
        RFC 1929 credentials split anywhere give one L{CheckCredentials},
        and nothing is sent meanwhile.
        """
        handshake = self.checking(
            GREETING_UP + ALICE_UP,
            [Send(SELECT_02), CheckCredentials(b"alice", b"secret")],
        )
        self.assertEqual(handshake.buffered(), 0)
        self.assertEqual(handshake.unconsumed(), b"")

    def test_checked(self) -> None:
        """
        Good credentials get 01 00; the request then carries the user, the
        credentials and them as isolation.
        """
        handshake = self.checking(
            GREETING_UP + ALICE_UP,
            [Send(SELECT_02), CheckCredentials(b"alice", b"secret")],
        )
        self.assertEqual(handshake.credentialsChecked(ALICE), [Send(UP_OK)])
        self.assertEqual(handshake.user, ALICE)
        self.assertEqual(
            feed(handshake, [CONNECT[:3], CONNECT[3:]]),
            [RequestReady(request(user=ALICE, credentials=ALICE_SECRET))],
        )
        self.assertEqual(handshake.credentialsChecked(ALICE), [])
        self.assertEqual(handshake.credentialsRefused(), [])

    def test_pipelined(self) -> None:
        """
        A request (and data) sent with the credentials, before the verdict,
        waits: good credentials get 01 00 and the request at once, and the
        data are unconsumed.
        """
        for handshake, actions, chunks in everySplit(
            GREETING_UP + ALICE_UP + CONNECT + b"hi", AUTH
        ):
            self.assertEqual(
                actions,
                [Send(SELECT_02), CheckCredentials(b"alice", b"secret")],
                chunks,
            )
            self.assertEqual(handshake.buffered(), len(CONNECT) + 2)
            self.assertEqual(handshake.unconsumed(), b"")
            self.assertEqual(
                handshake.credentialsChecked(ALICE),
                [
                    Send(UP_OK),
                    RequestReady(request(user=ALICE, credentials=ALICE_SECRET)),
                ],
                chunks,
            )
            self.assertEqual(handshake.unconsumed(), b"hi")

    def test_refused(self) -> None:
        """
        Refused credentials get 01 01 and a close, with the username in the
        reason; a pipelined request is dropped.
        """
        for data in (GREETING_UP + ALICE_UP, GREETING_UP + ALICE_UP + CONNECT):
            handshake = self.checking(
                data, [Send(SELECT_02), CheckCredentials(b"alice", b"secret")]
            )
            self.assertEqual(
                handshake.credentialsRefused(),
                [
                    Refuse(
                        UP_FAIL,
                        "authentication failed for user 'alice'",
                        "AUTHENTICATION_FAILED",
                    )
                ],
            )
            self.assertIsNone(handshake.user)
            self.assertDone(handshake)

    def test_refusedUsernameShown(self) -> None:
        """
        A username that is not UTF-8 is shown with backslash escapes.
        """
        handshake = Socks5Handshake(AUTH)
        feed(handshake, [GREETING_UP, h("01", "02", "ff61", "00")])
        self.assertEqual(
            handshake.credentialsRefused(),
            [
                Refuse(
                    UP_FAIL,
                    "authentication failed for user '\\\\xffa'",
                    "AUTHENTICATION_FAILED",
                )
            ],
        )

    def test_lengths(self) -> None:
        """
        Usernames and passwords of 0 and of 255 bytes are checked.
        """
        for username, password in ((b"", b""), (b"u" * 255, b"p" * 255)):
            data = (
                bytes([1, len(username)]) + username + bytes([len(password)]) + password
            )
            handshake = Socks5Handshake(AUTH)
            self.assertEqual(
                feed(handshake, [GREETING_UP, data]),
                [Send(SELECT_02), CheckCredentials(username, password)],
            )

    def test_extendedChecked(self) -> None:
        """
        After 0x97, proposal 229's USERNAME and PASSWD are checked; good
        ones get the extended success (01 00 0000), and the request has the
        proposal 229 profile.
        """
        handshake = self.checking(
            GREETING_229 + EXT_ALICE + CONNECT,
            [Send(SELECT_97), CheckCredentials(b"alice", b"secret")],
        )
        self.assertEqual(
            handshake.credentialsChecked(ALICE),
            [
                Send(EXT_OK),
                RequestReady(
                    request(
                        profile=ReplyProfile.SOCKS5_PROP229,
                        user=ALICE,
                        credentials=ALICE_SECRET,
                    )
                ),
            ],
        )

    def test_extendedRefused(self) -> None:
        """
        Refused proposal 229 credentials get the extended failure
        (01 01 0000) and a close.
        """
        handshake = self.checking(
            GREETING_229 + EXT_ALICE,
            [Send(SELECT_97), CheckCredentials(b"alice", b"secret")],
        )
        self.assertEqual(
            handshake.credentialsRefused(),
            [
                Refuse(
                    EXT_FAIL,
                    "authentication failed for user 'alice'",
                    "AUTHENTICATION_FAILED",
                )
            ],
        )
        self.assertDone(handshake)

    def test_extendedPairsChecked(self) -> None:
        """
        With other pairs, USERNAME and PASSWD are checked, and the pairs
        go in the request and, sorted, in its isolation.
        """
        handshake = self.checking(
            GREETING_229 + EXT_PAIRS + CONNECT,
            [Send(SELECT_97), CheckCredentials(b"alice", b"secret")],
        )
        self.assertEqual(
            handshake.credentialsChecked(ALICE),
            [
                Send(EXT_OK),
                RequestReady(
                    request(
                        profile=ReplyProfile.SOCKS5_PROP229,
                        user=ALICE,
                        credentials=ALICE_SECRET,
                        isolation=(
                            b"alice",
                            b"secret",
                            ((b"X-Key", b"v"), (b"X-Zone", b"b")),
                        ),
                        pairs={b"X-Zone": b"b", b"X-Key": b"v"},
                    )
                ),
            ],
        )

    def test_extendedWithoutCredentials(self) -> None:
        """
        A proposal 229 request without USERNAME and PASSWD has the empty
        username and password checked; they are then the request's
        credentials.
        """
        handshake = self.checking(
            GREETING_229 + EXT_KEY_ONLY + CONNECT,
            [Send(SELECT_97), CheckCredentials(b"", b"")],
        )
        self.assertEqual(
            handshake.credentialsChecked(ALICE),
            [
                Send(EXT_OK),
                RequestReady(
                    request(
                        profile=ReplyProfile.SOCKS5_PROP229,
                        user=ALICE,
                        credentials=(b"", b""),
                        isolation=(b"", b"", ((b"X-Key", b"v"),)),
                        pairs={b"X-Key": b"v"},
                    )
                ),
            ],
        )

    def test_answersOutOfTurn(self) -> None:
        """
        Answers to a check that was not asked for give no action.
        """
        handshake = Socks5Handshake(AUTH)
        self.assertEqual(handshake.credentialsChecked(ALICE), [])
        self.assertEqual(handshake.credentialsRefused(), [])
        self.assertEqual(feed(handshake, [GREETING_UP]), [Send(SELECT_02)])
        self.assertEqual(handshake.credentialsChecked(ALICE), [])
        self.assertEqual(handshake.credentialsRefused(), [])
        self.assertIsNone(handshake.user)


class Socks5LeniencyTests(VectorMixin, SynchronousTestCase):
    """
    Without an authenticator, credentials are accepted unchecked and only
    isolate (Tor's leniency), after method 02 and after method 00 too.
    """

    def test_usernamePassword(self) -> None:
        """
        RFC 1929 credentials get 01 00 at once, without a check; the
        request carries them as credentials and isolation, with no user.
        """
        for greeting in (GREETING_UP, GREETING_BOTH):
            handshake = self.assertVector(
                greeting + ALICE_UP + CONNECT,
                [
                    Send(SELECT_02),
                    Send(UP_OK),
                    RequestReady(request(credentials=ALICE_SECRET)),
                ],
            )
            self.assertIsNone(handshake.user)

    def test_emptyCredentials(self) -> None:
        """
        Empty credentials are accepted, and isolate as C{(b"", b"")}.
        """
        self.assertVector(
            GREETING_BOTH + h("01", "00", "00") + CONNECT,
            [
                Send(SELECT_02),
                Send(UP_OK),
                RequestReady(request(credentials=(b"", b""))),
            ],
        )

    def test_afterNoAuth(self) -> None:
        """
        RFC 1929 credentials sent after method 00 (told from a request by
        their first byte, 01) are accepted and isolate too.
        """
        for greeting, handshakeSettings in (
            (GREETING, NO_AUTH),
            (GREETING_BOTH, PREFER_NO_AUTH),
        ):
            self.assertVector(
                greeting + h("01", "01", "61", "01", "62") + CONNECT,
                [
                    Send(SELECT_00),
                    Send(UP_OK),
                    RequestReady(request(credentials=(b"a", b"b"))),
                ],
                handshakeSettings,
            )

    def test_onlyOnce(self) -> None:
        """
        After method 00, credentials are taken once: a second RFC 1929
        request is a malformed request (01).
        """
        self.assertVector(
            GREETING + ALICE_UP + ALICE_UP,
            [
                Send(SELECT_00),
                Send(UP_OK),
                Refuse(
                    failure(0x01),
                    "malformed SOCKS5 request: bad request header 01 05 61 6c",
                    Socks5Reply.GENERAL_FAILURE,
                ),
            ],
            dump=True,
        )


class Socks5ExtendedAuthTests(VectorMixin, SynchronousTestCase):
    """
    Proposal 229's extended authentication (method 0x97) without an
    authenticator: the pairs are accepted unchecked and isolate.
    """

    def test_credentials(self) -> None:
        """
        USERNAME and PASSWD are the request's credentials and isolation;
        the client gets the extended success (01 00 0000).
        """
        self.assertVector(
            GREETING_ALL + EXT_ALICE + CONNECT,
            [
                Send(SELECT_97),
                Send(EXT_OK),
                RequestReady(
                    request(
                        profile=ReplyProfile.SOCKS5_PROP229, credentials=ALICE_SECRET
                    )
                ),
            ],
        )

    def test_pairs(self) -> None:
        """
        The other pairs are the request's C{pairs}, and follow the
        credentials in its isolation, sorted by key.
        """
        self.assertVector(
            GREETING_229 + EXT_PAIRS + CONNECT,
            [
                Send(SELECT_97),
                Send(EXT_OK),
                RequestReady(
                    request(
                        profile=ReplyProfile.SOCKS5_PROP229,
                        credentials=ALICE_SECRET,
                        isolation=(
                            b"alice",
                            b"secret",
                            ((b"X-Key", b"v"), (b"X-Zone", b"b")),
                        ),
                        pairs={b"X-Zone": b"b", b"X-Key": b"v"},
                    )
                ),
            ],
        )

    def test_pairsWithoutCredentials(self) -> None:
        """
        Pairs without USERNAME and PASSWD give no credentials; they isolate
        after empty ones.
        """
        self.assertVector(
            GREETING_229 + EXT_KEY_ONLY + CONNECT,
            [
                Send(SELECT_97),
                Send(EXT_OK),
                RequestReady(
                    request(
                        profile=ReplyProfile.SOCKS5_PROP229,
                        isolation=(b"", b"", ((b"X-Key", b"v"),)),
                        pairs={b"X-Key": b"v"},
                    )
                ),
            ],
        )

    def test_usernameAlone(self) -> None:
        """
        USERNAME without PASSWD gives an empty password.
        """
        self.assertVector(
            GREETING_229 + h("01", "0001", *USERNAME_ALICE) + CONNECT,
            [
                Send(SELECT_97),
                Send(EXT_OK),
                RequestReady(
                    request(
                        profile=ReplyProfile.SOCKS5_PROP229, credentials=(b"alice", b"")
                    )
                ),
            ],
        )

    def test_noPairs(self) -> None:
        """
        A request with no pairs gives no credentials and no isolation.
        """
        self.assertVector(
            GREETING_229 + h("01", "0000") + CONNECT,
            [
                Send(SELECT_97),
                Send(EXT_OK),
                RequestReady(request(profile=ReplyProfile.SOCKS5_PROP229)),
            ],
        )

    def test_duplicateKey(self) -> None:
        """
        A key that appears twice is refused with the extended failure
        (01 01 0000), with or without an authenticator (which is not
        asked).
        """
        data = GREETING_229 + h("01", "0002", *X_KEY, *X_KEY) + CONNECT
        for handshakeSettings in (NO_AUTH, AUTH):
            for handshake, actions, chunks in everySplit(data, handshakeSettings):
                self.assertEqual(
                    actions,
                    [
                        Send(SELECT_97),
                        Refuse(
                            EXT_FAIL,
                            "malformed SOCKS5 authentication:"
                            " key 'X-Key' appears twice",
                        ),
                    ],
                    chunks,
                )
                self.assertDone(handshake)

    def test_malformed(self) -> None:
        """
        More pairs than the codec's cap (64), an empty key, or a bad
        version get the extended failure and a close.
        """
        for message, why in (
            (
                h("01", "0041"),
                "extended authentication request has 65 pairs, more than 64",
            ),
            (
                h("01", "0001", "0000", "0000"),
                "extended authentication request pair 1 has KLEN 0",
            ),
            (
                h("02", "0001", *X_KEY),
                "bad extended authentication request version 02",
            ),
        ):
            for handshake, actions, chunks in everySplit(
                GREETING_229 + message + CONNECT
            ):
                self.assertEqual(
                    actions,
                    [
                        Send(SELECT_97),
                        Refuse(EXT_FAIL, f"malformed SOCKS5 authentication: {why}"),
                    ],
                    chunks,
                )
                self.assertDone(handshake)


class Socks5RequestTests(VectorMixin, SynchronousTestCase):
    """
    The request gives one L{RequestReady}: the handshake passes the command
    and the destination on raw.
    """

    def test_commandsAndAddresses(self) -> None:
        """
        CONNECT, BIND, UDP ASSOCIATE, RESOLVE and RESOLVE_PTR, with an
        IPv4, IPv6 or domain address, split anywhere, give their request.
        """
        for command in COMMANDS:
            for destination, field in ADDRESSES:
                data = GREETING + bytes([5, command, 0]) + field
                self.assertVector(
                    data,
                    [Send(SELECT_00), RequestReady(request(destination, command))],
                )

    def test_unknownCommand(self) -> None:
        """
        An unknown command is given to the pipeline, which answers 07.
        """
        for command in (0x09, 0xF2):
            self.assertVector(
                GREETING + bytes([5, command]) + CONNECT[2:],
                [Send(SELECT_00), RequestReady(request(command=command))],
            )

    def test_longestDomain(self) -> None:
        """
        A 255-byte domain, the longest SOCKS5 carries, is accepted.
        """
        name = "a" * 255
        self.assertVector(
            GREETING + h("05", "01", "00", "03", "ff", asciiHex(name), "0050"),
            [Send(SELECT_00), RequestReady(request(Destination(name, 80)))],
        )

    def test_nothingBeforeTheEnd(self) -> None:
        """
        Every proper prefix of a request gives no action, and is buffered.
        """
        for length in range(len(CONNECT)):
            handshake = Socks5Handshake(NO_AUTH)
            self.assertEqual(
                handshake.dataReceived(GREETING + CONNECT[:length]), [Send(SELECT_00)]
            )
            self.assertEqual(handshake.buffered(), length)
            self.assertEqual(handshake.unconsumed(), b"")

    def test_earlyData(self) -> None:
        """
        Bytes after the request, in the same chunk or later ones, are
        unconsumed: one L{RequestReady}, and the bytes in order, once.
        """
        for handshake, actions, chunks in everySplit(GREETING + CONNECT + b"early"):
            self.assertEqual(
                actions, [Send(SELECT_00), RequestReady(request())], chunks
            )
            self.assertEqual(handshake.buffered(), 5, chunks)
            self.assertEqual(handshake.dataReceived(b" late"), [])
            self.assertEqual(handshake.buffered(), 10, chunks)
            self.assertEqual(handshake.unconsumed(), b"early late", chunks)
            self.assertEqual(handshake.unconsumed(), b"")
            self.assertEqual(handshake.buffered(), 0)


class Socks5MalformedTests(VectorMixin, SynchronousTestCase):
    """
    A malformed message is refused with the answer of the step it broke:
    05 FF for the greeting, the authentication failure for credentials,
    and the reply code L{socksd.replies.replyFor} gives for the request.
    """

    def assertRefused(
        self,
        data: bytes,
        expected: list[Action],
        handshakeSettings: HandshakeSettings = NO_AUTH,
    ) -> None:
        """
        C{data}, split anywhere, gives C{expected} (the bytes a reason
        shows only when C{data} is fed whole); later bytes, EOF and answers
        give nothing, and nothing is buffered or unconsumed.
        """
        for handshake, actions, chunks in everySplit(data, handshakeSettings):
            if len(chunks) > 1:
                self.assertEqual(withoutDump(actions), withoutDump(expected), chunks)
            else:
                self.assertEqual(actions, expected, chunks)
            self.assertDone(handshake)

    def test_greetingNoMethods(self) -> None:
        """
        A greeting with no methods gets 05 FF and a close.
        """
        self.assertRefused(
            h("05", "00") + CONNECT,
            [
                Refuse(
                    SELECT_FF,
                    "malformed SOCKS5 greeting: bad greeting header 05 00: no methods",
                )
            ],
        )

    def test_authenticationVersion(self) -> None:
        """
        An RFC 1929 request with the wrong version gets 01 01 and a close,
        with or without an authenticator.
        """
        bad = h("05", "05", asciiHex("alice"), "06", asciiHex("secret"))
        for handshakeSettings in (NO_AUTH, AUTH):
            self.assertRefused(
                GREETING_UP + bad,
                [
                    Send(SELECT_02),
                    Refuse(
                        UP_FAIL,
                        "malformed SOCKS5 authentication:"
                        " bad username/password request version 05",
                    ),
                ],
                handshakeSettings,
            )

    def test_unknownAddressType(self) -> None:
        """
        An unknown address type gets 08 (address type not supported), in
        every profile; the reply is labelled with the code.
        """
        data = h("05", "01", "00", "02", "c0000201", "0050")
        refusal = Refuse(
            failure(0x08),
            "malformed SOCKS5 request: unknown address type 02",
            Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED,
        )
        self.assertRefused(GREETING + data, [Send(SELECT_00), refusal])
        self.assertRefused(
            GREETING_229 + h("01", "0000") + data,
            [Send(SELECT_97), Send(EXT_OK), refusal],
        )

    def test_badRequest(self) -> None:
        """
        A request with a non-zero RSV, a zero-length domain, or a version
        other than 05 gets 01 (general failure) and a close.
        """
        for data, why in (
            (
                h("05", "01", "01", "01", "c0000201", "0050"),
                "bad request header 05 01 01 01: RSV is not 00",
            ),
            (h("05", "01", "00", "03", "00", "0050"), "zero-length domain"),
            (
                h("04", "01", "00", "01", "c0000201", "0050"),
                "bad request header 04 01 00 01",
            ),
        ):
            self.assertRefused(
                GREETING + data,
                [
                    Send(SELECT_00),
                    Refuse(
                        failure(0x01),
                        f"malformed SOCKS5 request: {why}",
                        Socks5Reply.GENERAL_FAILURE,
                    ),
                ],
            )

    def test_badRequestAfterCheck(self) -> None:
        """
        A malformed request pipelined behind checked credentials is refused
        after their success.
        """
        handshake = Socks5Handshake(AUTH)
        feed(handshake, [GREETING_UP + ALICE_UP + h("05", "01", "00", "02", "00")])
        self.assertEqual(
            handshake.credentialsChecked(ALICE),
            [
                Send(UP_OK),
                Refuse(
                    failure(0x08),
                    "malformed SOCKS5 request: unknown address type 02",
                    Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED,
                ),
            ],
        )
        self.assertDone(handshake)

    def test_nothingKeptAfterRefusal(self) -> None:
        """
        After any refusal, L{Socks5Handshake.unconsumed} gives C{b""} and
        L{Socks5Handshake.buffered} 0, whatever the client pipelined: the
        codec may be dead (a malformed message), and would raise, or
        finished (05 FF, a refused check), and would hand the bytes back.
        """
        early = CONNECT + b"early"
        for data, handshakeSettings, refuse in (
            (h("05", "01", "80") + early, NO_AUTH, False),
            (h("05", "00") + early, NO_AUTH, False),
            (GREETING_UP + h("05") + early, NO_AUTH, False),
            (GREETING_229 + h("01", "0002", *X_KEY, *X_KEY) + early, AUTH, False),
            (GREETING + h("05", "01", "00", "02") + early, NO_AUTH, False),
            (GREETING_UP + ALICE_UP + early, AUTH, True),
        ):
            handshake = Socks5Handshake(handshakeSettings)
            actions = handshake.dataReceived(data)
            if refuse:
                actions += handshake.credentialsRefused()
            self.assertIsInstance(actions[-1], Refuse, data.hex(" "))
            self.assertEqual(handshake.unconsumed(), b"", data.hex(" "))
            self.assertEqual(handshake.buffered(), 0, data.hex(" "))
            self.assertEqual(handshake.dataReceived(b"more"), [])
            self.assertEqual(handshake.unconsumed(), b"")
            self.assertEqual(handshake.buffered(), 0)

    def test_replyAfterRefusal(self) -> None:
        """
        After a malformed request, only failure replies can be built.
        """
        handshake = Socks5Handshake(NO_AUTH)
        feed(handshake, [GREETING, h("05", "01", "01")])
        self.assertEqual(handshake.reply(Socks5Reply.GENERAL_FAILURE), failure(0x01))
        self.assertRaises(MalformedMessage, handshake.reply, Socks5Reply.SUCCEEDED)


class Socks5EndTests(SynchronousTestCase):
    """
    EOF from the client: before the request is complete, a refusal without
    a reply, named after the stage; while credentials are checked, it is
    remembered.
    """

    def assertEnded(
        self, data: bytes, stage: str, handshakeSettings: HandshakeSettings = NO_AUTH
    ) -> None:
        """
        EOF after C{data} gives a refusal without a reply for C{stage};
        then nothing, and nothing is buffered or unconsumed.
        """
        handshake = Socks5Handshake(handshakeSettings)
        feed(handshake, [data])
        self.assertEqual(
            handshake.clientEnded(),
            [Refuse(b"", f"client sent EOF during the {stage}")],
            data.hex(" "),
        )
        self.assertEqual(handshake.clientEnded(), [])
        self.assertEqual(handshake.dataReceived(CONNECT), [])
        self.assertEqual(handshake.unconsumed(), b"")
        self.assertEqual(handshake.buffered(), 0)

    def test_duringGreeting(self) -> None:
        """
        EOF before the greeting is complete is refused during the greeting.
        """
        self.assertEnded(b"", "greeting")
        for length in range(1, len(GREETING_BOTH)):
            self.assertEnded(GREETING_BOTH[:length], "greeting")

    def test_duringAuthentication(self) -> None:
        """
        EOF after method 02 or 0x97 was selected, before the whole
        credentials, is refused during the authentication.
        """
        for greeting, credentials in (
            (GREETING_UP, ALICE_UP),
            (GREETING_229, EXT_ALICE),
        ):
            for handshakeSettings in (NO_AUTH, AUTH):
                for length in range(len(credentials)):
                    self.assertEnded(
                        greeting + credentials[:length],
                        "authentication",
                        handshakeSettings,
                    )

    def test_duringRequest(self) -> None:
        """
        EOF before the whole request is refused during the request: after
        method 00, or after credentials were accepted.
        """
        for prefix in (GREETING, GREETING_UP + ALICE_UP, GREETING + ALICE_UP):
            for length in range(len(CONNECT)):
                self.assertEnded(prefix + CONNECT[:length], "request")

    def test_whileChecking(self) -> None:
        """
        EOF while credentials are checked gives nothing: a request that is
        in is given after the check, with its data.
        """
        handshake = Socks5Handshake(AUTH)
        feed(handshake, [GREETING_UP + ALICE_UP + CONNECT + b"last words"])
        self.assertEqual(handshake.clientEnded(), [])
        self.assertEqual(
            handshake.credentialsChecked(ALICE),
            [Send(UP_OK), RequestReady(request(user=ALICE, credentials=ALICE_SECRET))],
        )
        self.assertEqual(handshake.unconsumed(), b"last words")
        self.assertEqual(handshake.clientEnded(), [])

    def test_whileCheckingWithoutRequest(self) -> None:
        """
        EOF while credentials are checked, with the request incomplete, is
        refused during the request after the success is sent.
        """
        for length in range(len(CONNECT)):
            handshake = Socks5Handshake(AUTH)
            feed(handshake, [GREETING_UP + ALICE_UP + CONNECT[:length]])
            self.assertEqual(handshake.clientEnded(), [])
            self.assertEqual(
                handshake.credentialsChecked(ALICE),
                [Send(UP_OK), Refuse(b"", "client sent EOF during the request")],
            )
            self.assertEqual(handshake.clientEnded(), [])
            self.assertEqual(handshake.unconsumed(), b"")
            self.assertEqual(handshake.buffered(), 0)

    def test_whileCheckingRefused(self) -> None:
        """
        EOF while credentials are checked, then a refusal: the failure is
        sent as usual.
        """
        handshake = Socks5Handshake(AUTH)
        feed(handshake, [GREETING_UP + ALICE_UP + CONNECT])
        self.assertEqual(handshake.clientEnded(), [])
        self.assertEqual(
            handshake.credentialsRefused(),
            [
                Refuse(
                    UP_FAIL,
                    "authentication failed for user 'alice'",
                    "AUTHENTICATION_FAILED",
                )
            ],
        )

    def test_afterRequest(self) -> None:
        """
        EOF after the request gives nothing: the early data stay
        unconsumed.
        """
        handshake = Socks5Handshake(NO_AUTH)
        feed(handshake, [GREETING + CONNECT + b"early"])
        self.assertEqual(handshake.clientEnded(), [])
        self.assertEqual(handshake.unconsumed(), b"early")

    def test_afterRefusal(self) -> None:
        """
        EOF after a refusal gives nothing.
        """
        handshake = Socks5Handshake(AUTH)
        feed(handshake, [GREETING])
        self.assertEqual(handshake.clientEnded(), [])


class Socks5ReplyTests(SynchronousTestCase):
    """
    L{Socks5Handshake.reply} builds the RFC 1928 reply.
    """

    def served(
        self,
        data: bytes = GREETING + CONNECT,
        handshakeSettings: HandshakeSettings = NO_AUTH,
    ) -> Socks5Handshake:
        """A handshake that gave a L{RequestReady} for C{data}."""
        handshake = Socks5Handshake(handshakeSettings)
        self.assertIsInstance(handshake.dataReceived(data)[-1], RequestReady)
        return handshake

    def test_successIPv4(self) -> None:
        """
        A success carries the bound IPv4 address and port.
        """
        self.assertEqual(
            self.served().reply(Socks5Reply.SUCCEEDED, BOUND),
            h("05", "00", "00", "01", "c6336401", "9c40"),
        )

    def test_successIPv6(self) -> None:
        """
        A success carries a bound IPv6 address as an IPv6-type address.
        """
        bound = Destination(IPv6Address("2001:db8::2"), 8080)
        self.assertEqual(
            self.served().reply(Socks5Reply.SUCCEEDED, bound),
            h("05", "00", "00", "04", "20010db8000000000000000000000002", "1f90"),
        )

    def test_successNoBound(self) -> None:
        """
        A success without a bound address says 0.0.0.0:0.
        """
        self.assertEqual(
            self.served().reply(Socks5Reply.SUCCEEDED),
            h("05", "00", "00", "01", "00000000", "0000"),
        )

    def test_resolvePtr(self) -> None:
        """
        A RESOLVE_PTR success carries the name as a domain-type address.
        """
        handshake = self.served(
            GREETING + h("05", "f1", "00", "01", "c0000201", "0000")
        )
        self.assertEqual(
            handshake.reply(Socks5Reply.SUCCEEDED, Destination("example.com", 0)),
            h("05", "00", "00", "03", "0b", asciiHex("example.com"), "0000"),
        )

    def test_failures(self) -> None:
        """
        Each failure code is sent with 0.0.0.0:0, and labelled by itself;
        after it, no other reply can be built.
        """
        for code in list(Socks5Reply)[1:]:
            handshake = self.served()
            self.assertEqual(handshake.reply(code), failure(code))
            self.assertIs(handshake.replyLabel(code), code)
            self.assertRaises(OutOfTurn, handshake.reply, Socks5Reply.SUCCEEDED, BOUND)

    def test_prop229Codes(self) -> None:
        """
        A client that offered 0x97 can be sent proposal 229's codes.
        """
        for code in Prop229Reply:
            handshake = self.served(GREETING_229 + h("01", "0000") + CONNECT)
            self.assertEqual(handshake.reply(code), failure(code))
            self.assertIs(handshake.replyLabel(code), code)

    def test_oneReplyForConnect(self) -> None:
        """
        A CONNECT gets one reply: a second is a bug of the caller.
        """
        handshake = self.served()
        handshake.reply(Socks5Reply.SUCCEEDED, BOUND)
        self.assertRaises(OutOfTurn, handshake.reply, Socks5Reply.SUCCEEDED, BOUND)

    def test_bindTwoReplies(self) -> None:
        """
        A granted BIND gets a second reply, with the peer's address.
        """
        handshake = self.served(
            GREETING + h("05", "02", "00", "01", "00000000", "0000")
        )
        self.assertEqual(
            handshake.reply(Socks5Reply.SUCCEEDED, BOUND),
            h("05", "00", "00", "01", "c6336401", "9c40"),
        )
        self.assertEqual(
            handshake.reply(
                Socks5Reply.SUCCEEDED, Destination(IPv4Address("203.0.113.5"), 4444)
            ),
            h("05", "00", "00", "01", "cb007105", "115c"),
        )
        self.assertRaises(OutOfTurn, handshake.reply, Socks5Reply.SUCCEEDED, BOUND)


_actionTypes = (Send, CheckCredentials, RequestReady, Refuse)


class Socks5PropertyTests(SynchronousTestCase):
    """
    Random bytes never break the handshake.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        prefix=st.sampled_from(
            [
                h("05"),
                GREETING,
                GREETING_UP,
                GREETING_229,
                GREETING_ALL,
                GREETING + CONNECT[:4],
                GREETING_UP + ALICE_UP,
                GREETING_229 + EXT_ALICE[:7],
            ]
        ),
        tail=st.binary(max_size=300),
        cuts=st.lists(st.integers(0, 400), max_size=6),
        handshakeSettings=st.builds(
            HandshakeSettings,
            requireAuth=st.booleans(),
            preferNoAuth=st.booleans(),
            extendedErrors=st.booleans(),
        ),
        check=st.lists(st.booleans(), max_size=3),
        end=st.booleans(),
    )
    def test_randomBytes(
        self,
        prefix: bytes,
        tail: bytes,
        cuts: list[int],
        handshakeSettings: HandshakeSettings,
        check: list[bool],
        end: bool,
    ) -> None:
        """
        Random bytes (after the start of a valid handshake, or not), cut
        anywhere, with credentials answered at random and maybe EOF, raise
        nothing and give lists of actions, with at most one L{RequestReady}
        or L{Refuse}, last; after a L{RequestReady} a reply can be built,
        after a L{Refuse} nothing is buffered or unconsumed.
        """
        handshake = Socks5Handshake(handshakeSettings)
        answers = iter(check)
        actions: list[Action] = []
        for chunk in chunked(prefix + tail, cuts):
            result = handshake.dataReceived(chunk)
            self.assertIsInstance(result, list)
            actions += result
            while actions and isinstance(actions[-1], CheckCredentials):
                if next(answers, True):
                    actions += handshake.credentialsChecked(ALICE)
                else:
                    actions += handshake.credentialsRefused()
        if end:
            result = handshake.clientEnded()
            self.assertIsInstance(result, list)
            actions += result
        for action in actions:
            self.assertIsInstance(action, _actionTypes)
        final = [a for a in actions if isinstance(a, (RequestReady, Refuse))]
        self.assertLessEqual(len(final), 1)
        if final:
            self.assertIs(actions[-1], final[0])
        self.assertIsInstance(handshake.buffered(), int)
        if final and isinstance(final[0], RequestReady):
            self.assertIsInstance(handshake.unconsumed(), bytes)
            self.assertIsInstance(handshake.reply(Socks5Reply.SUCCEEDED), bytes)
        elif final:
            self.assertEqual(handshake.unconsumed(), b"")
            self.assertEqual(handshake.buffered(), 0)
        else:
            self.assertEqual(handshake.unconsumed(), b"")


class Socks5HandshakeLayerTests(SynchronousTestCase):
    """
    Where the handshake sits among socksd's layers.
    """

    def test_noTwisted(self) -> None:
        """
        Importing the SOCKS5 handshake loads neither Twisted nor zope.
        """
        root = os.path.dirname(os.path.dirname(socksd.__file__))
        output = subprocess.check_output(
            [
                sys.executable,
                "-c",
                "import sys, socksd.handshake.socks5; "
                "print(sorted({m.split('.')[0] for m in sys.modules} "
                "& {'twisted', 'zope'}))",
            ],
            env={**os.environ, "PYTHONPATH": root},
        )
        self.assertEqual(output.strip(), b"[]")

    def test_torReExports(self) -> None:
        """
        L{socksd.server.tor} still exports the method preference and the
        proposal 229 split, which moved to the handshake.
        """
        from socksd.handshake import socks5 as handshake5
        from socksd.server import tor

        self.assertIs(tor.socks5Methods, handshake5.socks5Methods)
        self.assertIs(tor.extendedCredentials, handshake5.extendedCredentials)
