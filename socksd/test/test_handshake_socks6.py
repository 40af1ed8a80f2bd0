"""
Tests for L{socksd.handshake.socks6}: the sans-IO SOCKS6 server handshake,
with hex vectors fed whole, byte by byte and at every split, and a small
fake session table whose IDs and window bases are fixed.

The client is 192.0.2.7, the destination 192.0.2.1:80, and the bound
address of a success 198.51.100.1:40000.  Some vectors are the shared
ones of C{socks6-vectors.json} (their ids are named).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import IPv4Address
from typing import Any, Callable

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

import socksd
from socksd.address import Destination
from socksd.handshake import (
    Action,
    CheckCredentials,
    HandshakeSettings,
    Refuse,
    Request,
    RequestReady,
    Send,
    ServerHandshake,
    Socks6Handshake,
)
from socksd.handshake._sessions import TokenWindow
from socksd.replies import ReplyProfile, Socks6Reply
from socksd.server.socks6 import sessions as _socks6session
from socksd.test._vectors import asciiHex, chunked, h, splits
from socksd.wire import OutOfTurn, socks6

NO_AUTH = HandshakeSettings()
AUTH = HandshakeSettings(requireAuth=True)
CLIENT = "192.0.2.7"
DESTINATION = Destination(IPv4Address("192.0.2.1"), 80)
ZERO = Destination(IPv4Address(0), 0)
BOUND = Destination(IPv4Address("198.51.100.1"), 40000)
#: What the fake authenticator returns for alice.
ALICE = "avatar:alice"
ALICE_SECRET = (b"alice", b"secret")

ALICE_HEX = asciiHex("alice")
SECRET_HEX = asciiHex("secret")

#: CONNECT 192.0.2.1:80, no options.
CONNECT = h("06", "01", "0000", "0050", "00", "01", "c0000201")
#: NOOP 0.0.0.0:0, no options.
NOOP = h("06", "00", "0000", "0000", "00", "01", "00000000")
#: BIND 0.0.0.0:0, no options.
BIND = h("06", "02", "0000", "0000", "00", "01", "00000000")
#: CONNECT 192.0.2.1:80, advertising method 2 with 3 bytes of initial data
#: ("GET"), and alice's credentials 0-RTT.
CONNECT_ZERO_RTT = h(
    "06", "01", "001c", "0050", "00", "01", "c0000201",
    "0002", "0008", "0003", "02", "00",
    "0004", "0014", "02", "01", "05", ALICE_HEX, "06", SECRET_HEX, "00",
    asciiHex("GET"),
)  # fmt: skip
#: CONNECT 192.0.2.1:80, advertising method 2, no credentials.
CONNECT_METHOD_2 = h(
    "06", "01", "0008", "0050", "00", "01", "c0000201",
    "0002", "0008", "0000", "02", "00",
)  # fmt: skip
#: The bare RFC 1929 request of the slow path (A6): alice, secret.
BARE_ALICE = h("01", "05", ALICE_HEX, "06", SECRET_HEX)

#: Authentication Reply: success, no options.
AUTH_OK = h("06", "00", "0000")
#: Authentication Reply: success, with the RFC 1929 success.
AUTH_OK_UP = h("06", "00", "0008", "0004", "0008", "02", "01", "00", "00")
#: Authentication Reply: failure, with the RFC 1929 failure.
AUTH_FAIL_UP = h("06", "01", "0008", "0004", "0008", "02", "01", "01", "00")
#: Authentication Reply: failure selecting method 2 (the slow path).
SELECT_2 = h("06", "01", "0008", "0003", "0008", "02", "000000")
#: Authentication Reply: failure selecting 0xFF (no acceptable method).
SELECT_FF = h("06", "01", "0008", "0003", "0008", "ff", "000000")
#: Authentication Reply: failure, Session Invalid.
SESSION_INVALID = h("06", "01", "0004", "0009", "0004")
#: Authentication Reply: failure, Idempotence Rejected.
IDEMPOTENCE_REJECTED = h("06", "01", "0004", "000f", "0004")

#: The Session ID the fake table opens, and the base of its windows
#: (those of the shared vector authrep-session-id-window).
NEW_ID = h("37eddd4c1bf7c62e")
NEW_BASE = 0x28BE6FA8
#: A session that already exists (that of req-connect-session-id-token),
#: and its window's base.
OLD_ID = h("1d052026da880a74")
OLD_BASE = 0x57390BB0


class FakeSession:
    """A session of L{FakeSessions}: the attributes the handshake uses."""

    def __init__(
        self,
        sessionId: bytes,
        user: Any,
        credentials: tuple[bytes, bytes] | None,
        clientHost: str | None,
    ) -> None:
        self.sessionId = sessionId
        self.user = user
        self.credentials = credentials
        self.clientHost = clientHost
        self.window: TokenWindow | None = None
        self.requests = 0


class FakeSessions:
    """
    A session table that records every call, opens sessions with the ID
    L{NEW_ID} and gives windows from L{NEW_BASE}.

    @ivar full: C{open} returns L{None} (a cap is reached).
    """

    def __init__(self) -> None:
        self.sessions: dict[bytes, FakeSession] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.full = False

    def add(
        self,
        sessionId: bytes = OLD_ID,
        user: Any = ALICE,
        credentials: tuple[bytes, bytes] | None = ALICE_SECRET,
        window: TokenWindow | None = None,
    ) -> FakeSession:
        """Make a live session, as an earlier request would have."""
        session = FakeSession(sessionId, user, credentials, CLIENT)
        session.window = window
        self.sessions[sessionId] = session
        return session

    def find(self, sessionId: bytes) -> FakeSession | None:
        self.calls.append(("find", sessionId))
        return self.sessions.get(sessionId)

    def touch(self, session: FakeSession) -> None:
        self.calls.append(("touch", session.sessionId))

    def close(self, sessionId: bytes) -> bool:
        self.calls.append(("close", sessionId))
        return self.sessions.pop(sessionId, None) is not None

    def open(
        self, user: Any, credentials: tuple[bytes, bytes] | None, clientHost: str | None
    ) -> FakeSession | None:
        self.calls.append(("open", user, credentials, clientHost))
        if self.full:
            return None
        session = FakeSession(NEW_ID, user, credentials, clientHost)
        self.sessions[NEW_ID] = session
        return session

    def issueWindow(self, session: FakeSession, requested: int) -> TokenWindow | None:
        self.calls.append(("issueWindow", session.sessionId, requested))
        if session.window is not None:
            return None
        session.window = TokenWindow(NEW_BASE, max(1, min(requested, 1024)))
        return session.window


def wire(data: bytes) -> socks6.Request:
    """The wire request at the start of C{data}, as the codec reads it."""
    buffer = bytearray(data)
    request = socks6.readRequest(buffer)
    assert request is not None, data.hex(" ")
    return request


def value(
    data: bytes,
    user: Any = None,
    credentials: tuple[bytes, bytes] | None = None,
    session: Any = None,
) -> Request:
    """The version-neutral request the handshake gives for C{data}."""
    request = wire(data)
    return Request(
        6,
        "socks6",
        request.command,
        request.destination,
        ReplyProfile.SOCKS6,
        user,
        credentials,
        credentials,
        socks6=request,
        session=session,
    )


Expected = list[Action] | Callable[[FakeSessions], list[Action]]


class VectorMixin:
    """Feed vectors to fresh handshakes and compare the actions."""

    def start(
        self,
        settings: HandshakeSettings = NO_AUTH,
        prepare: Callable[[FakeSessions], Any] | None = None,
    ) -> tuple[Socks6Handshake, FakeSessions]:
        """A fresh handshake with a fresh table (after C{prepare})."""
        table = FakeSessions()
        if prepare is not None:
            prepare(table)
        return Socks6Handshake(settings, table, CLIENT), table

    def assertVector(
        self,
        data: bytes,
        expected: Expected,
        settings: HandshakeSettings = NO_AUTH,
        prepare: Callable[[FakeSessions], Any] | None = None,
    ) -> tuple[Socks6Handshake, FakeSessions]:
        """
        Feed C{data} whole, byte by byte and at every split to a fresh
        handshake each time; the actions, concatenated, are C{expected}
        (or what it returns for the table).

        @return: the last handshake and its table.
        """
        for pieces in splits(data):
            handshake, table = self.start(settings, prepare)
            actions: list[Action] = []
            for piece in pieces:
                actions += handshake.dataReceived(piece)
            want = expected(table) if callable(expected) else expected
            self.assertEqual(  # type: ignore[attr-defined]
                actions, want, [piece.hex(" ") for piece in pieces]
            )
        return handshake, table


class Socks6HandshakeWithoutAuthTests(VectorMixin, SynchronousTestCase):
    """
    Requests to a server without an authenticator.
    """

    def test_interface(self) -> None:
        """
        The handshake names SOCKS6, version 6 and the SOCKS6 profile, and
        has every method of L{ServerHandshake}.
        """
        handshake, _ = self.start()
        self.assertEqual(
            (handshake.protocol, handshake.version, handshake.profile),
            ("socks6", 6, ReplyProfile.SOCKS6),
        )
        for name in dir(ServerHandshake):
            if not name.startswith("_"):
                self.assertTrue(hasattr(handshake, name), name)

    def test_connect(self) -> None:
        """
        A CONNECT with no options gets the successful Authentication Reply
        (06 00 0000) and the request, outside any session.
        """
        self.assertVector(CONNECT, [Send(AUTH_OK), RequestReady(value(CONNECT))])

    def test_noop(self) -> None:
        """
        A NOOP (shared vector req-noop-ipv4-zero) is a request like any
        other, with command 0.
        """
        handshake, _ = self.assertVector(
            NOOP, [Send(AUTH_OK), RequestReady(value(NOOP))]
        )
        self.assertEqual(value(NOOP).command, 0)

    def test_unknownCommand(self) -> None:
        """
        An unknown command code (shared vector req-unknown-command) is
        authenticated and given to the pipeline, which answers 07.
        """
        data = h("06", "09", "0000", "0050", "00", "01", "7f000001")
        self.assertVector(data, [Send(AUTH_OK), RequestReady(value(data))])

    def test_zeroRttCredentialsKept(self) -> None:
        """
        Without an authenticator, 0-RTT credentials are not checked: they
        are answered with the RFC 1929 success and kept for isolation.
        """
        self.assertVector(
            CONNECT_ZERO_RTT,
            [
                Send(AUTH_OK_UP),
                RequestReady(value(CONNECT_ZERO_RTT, None, ALICE_SECRET)),
            ],
        )

    def test_methodTwoAdvertisedWithoutCredentials(self) -> None:
        """
        Without an authenticator, a client advertising method 2 without
        credentials is served at once: there is no slow path.
        """
        self.assertVector(
            CONNECT_METHOD_2, [Send(AUTH_OK), RequestReady(value(CONNECT_METHOD_2))]
        )

    def test_incomplete(self) -> None:
        """
        An incomplete request (shared vectors malformed-truncated-header
        and malformed-truncated-options) gives no action, and its bytes
        are buffered.
        """
        for data in (
            h("06", "01", "00"),
            h("06", "01", "0004", "0050", "00", "01", "7f000001", "0005"),
        ):
            handshake, _ = self.assertVector(data, [])
            self.assertEqual(handshake.buffered(), len(data))
            self.assertEqual(handshake.unconsumed(), b"")

    def test_sharedVectors(self) -> None:
        """
        Every request of C{socks6-vectors.json}, to a server without an
        authenticator and with no session: "ok" ones succeed (but those
        naming a session, which get Session Invalid), "incomplete" ones
        give nothing, "version_mismatch" ones get 06, "malformed" ones are
        refused without a reply.
        """
        path = os.path.join(os.path.dirname(__file__), "socks6-vectors.json")
        with open(path) as f:
            vectors = json.load(f)["vectors"]
        seen = set()
        for vector in vectors:
            if vector["message"] != "request":
                continue
            data = bytes.fromhex(vector["hex"])
            handshake, _ = self.start()
            actions = handshake.dataReceived(data)
            outcome = vector["outcome"]
            seen.add(outcome)
            if outcome in ("ok", "malformed_option"):
                request = wire(data)
                if request.sessionId is not None and not request.sessionTeardown:
                    self.assertEqual(actions[0].data, SESSION_INVALID, vector["id"])
                else:
                    self.assertEqual(actions[0].data[:2], h("06", "00"), vector["id"])
                    self.assertIsInstance(actions[1], RequestReady)
            elif outcome == "incomplete":
                self.assertEqual(actions, [], vector["id"])
            elif outcome == "version_mismatch":
                self.assertEqual(actions[0].data, h("06"), vector["id"])
                self.assertEqual(actions[0].reply, "VERSION_MISMATCH")
            else:
                self.assertEqual(outcome, "malformed")
                self.assertEqual(len(actions), 1, vector["id"])
                self.assertIsInstance(actions[0], Refuse)
                self.assertEqual(actions[0].data, b"", vector["id"])
        self.assertEqual(
            seen,
            {"ok", "malformed_option", "incomplete", "version_mismatch", "malformed"},
        )


class Socks6HandshakeAuthenticationTests(VectorMixin, SynchronousTestCase):
    """
    Username/password with an authenticator: 0-RTT, the A6 slow path, and
    no acceptable method.
    """

    def test_zeroRttChecked(self) -> None:
        """
        With an authenticator, 0-RTT credentials go out in a
        L{CheckCredentials}, and nothing is sent meanwhile.
        """
        self.assertVector(
            CONNECT_ZERO_RTT, [CheckCredentials(b"alice", b"secret")], AUTH
        )

    def test_zeroRttGood(self) -> None:
        """
        Good 0-RTT credentials get one successful Authentication Reply with
        the RFC 1929 success in it, and the request acts as the avatar.
        """
        handshake, _ = self.assertVector(
            CONNECT_ZERO_RTT, [CheckCredentials(b"alice", b"secret")], AUTH
        )
        self.assertEqual(
            handshake.credentialsChecked(ALICE),
            [
                Send(AUTH_OK_UP),
                RequestReady(value(CONNECT_ZERO_RTT, ALICE, ALICE_SECRET)),
            ],
        )
        self.assertEqual(handshake.user, ALICE)
        self.assertEqual(handshake.credentialsChecked(ALICE), [])
        self.assertEqual(handshake.credentialsRefused(), [])

    def test_zeroRttBad(self) -> None:
        """
        Refused 0-RTT credentials get a failed Authentication Reply with
        the RFC 1929 failure in it, then close.
        """
        handshake, _ = self.assertVector(
            CONNECT_ZERO_RTT, [CheckCredentials(b"alice", b"secret")], AUTH
        )
        self.assertEqual(
            handshake.credentialsRefused(),
            [
                Refuse(
                    AUTH_FAIL_UP,
                    "authentication failed for user 'alice'",
                    "AUTHENTICATION_FAILED",
                    value(CONNECT_ZERO_RTT, None, ALICE_SECRET),
                )
            ],
        )
        self.assertEqual(handshake.unconsumed(), b"")
        self.assertEqual(handshake.credentialsChecked(ALICE), [])

    def test_refusedUserShown(self) -> None:
        """
        A username that is not UTF-8 is shown with backslash escapes.
        """
        data = h(
            "06", "01", "000c", "0050", "00", "01", "c0000201",
            "0004", "000c", "02", "01", "02", "ff61", "01", "70", "00",
        )  # fmt: skip
        handshake, _ = self.assertVector(data, [CheckCredentials(b"\xffa", b"p")], AUTH)
        [refusal] = handshake.credentialsRefused()
        assert isinstance(refusal, Refuse)
        self.assertEqual(refusal.reason, "authentication failed for user '\\\\xffa'")

    def test_slowPathSelection(self) -> None:
        """
        A client that advertised method 2 without credentials gets a failed
        Authentication Reply selecting method 2 (A6).
        """
        self.assertVector(CONNECT_METHOD_2, [Send(SELECT_2)], AUTH)

    def test_slowPathCredentials(self) -> None:
        """
        The bare RFC 1929 request after the selection, in any pieces, goes
        out in a L{CheckCredentials}.
        """
        for pieces in splits(BARE_ALICE):
            handshake, _ = self.start(AUTH)
            self.assertEqual(handshake.dataReceived(CONNECT_METHOD_2), [Send(SELECT_2)])
            actions: list[Action] = []
            for piece in pieces:
                actions += handshake.dataReceived(piece)
            self.assertEqual(actions, [CheckCredentials(b"alice", b"secret")])

    def test_slowPathPipelined(self) -> None:
        """
        Credentials pipelined with the request, in any pieces, are parsed
        right after the selection is sent.
        """
        self.assertVector(
            CONNECT_METHOD_2 + BARE_ALICE,
            [Send(SELECT_2), CheckCredentials(b"alice", b"secret")],
            AUTH,
        )

    def test_slowPathGood(self) -> None:
        """
        Good slow-path credentials get the bare RFC 1929 success (01 00),
        then the final successful Authentication Reply with no options,
        and the request acts as the avatar; bytes after the bare request
        are the destination's.
        """
        handshake, _ = self.assertVector(
            CONNECT_METHOD_2 + BARE_ALICE + b"early",
            [Send(SELECT_2), CheckCredentials(b"alice", b"secret")],
            AUTH,
        )
        self.assertEqual(handshake.unconsumed(), b"")
        self.assertEqual(
            handshake.credentialsChecked(ALICE),
            [
                Send(h("01", "00")),
                Send(AUTH_OK),
                RequestReady(value(CONNECT_METHOD_2, ALICE, ALICE_SECRET)),
            ],
        )
        self.assertEqual(handshake.unconsumed(), b"early")

    def test_slowPathBad(self) -> None:
        """
        Refused slow-path credentials get the bare RFC 1929 failure (01
        01) and the final failed Authentication Reply (06 01 0000), then
        close.
        """
        handshake, _ = self.assertVector(
            CONNECT_METHOD_2 + BARE_ALICE,
            [Send(SELECT_2), CheckCredentials(b"alice", b"secret")],
            AUTH,
        )
        self.assertEqual(
            handshake.credentialsRefused(),
            [
                Refuse(
                    h("01", "01", "06", "01", "0000"),
                    "authentication failed for user 'alice'",
                    "AUTHENTICATION_FAILED",
                    value(CONNECT_METHOD_2, None, ALICE_SECRET),
                )
            ],
        )

    def test_slowPathMalformed(self) -> None:
        """
        A bare request with a version byte other than 1 is refused without
        a reply (A5).
        """
        self.assertVector(
            CONNECT_METHOD_2 + h("05", "05", ALICE_HEX),
            [
                Send(SELECT_2),
                Refuse(
                    b"",
                    "malformed SOCKS6 message: username/password version 0x05, not 1",
                ),
            ],
            AUTH,
        )

    def test_noAcceptableMethod(self) -> None:
        """
        With an authenticator, a client that advertises no method, or only
        methods other than 2, gets a failed Authentication Reply selecting
        0xFF, then close.
        """
        gssapi = h(
            "06", "01", "0008", "0050", "00", "01", "c0000201",
            "0002", "0008", "0000", "01", "00",
        )  # fmt: skip
        for data in (CONNECT, gssapi):
            self.assertVector(
                data,
                [
                    Refuse(
                        SELECT_FF,
                        "no acceptable authentication method offered",
                        "NO_ACCEPTABLE_METHODS",
                        value(data),
                    )
                ],
                AUTH,
            )

    def test_credentialsOutOfTurn(self) -> None:
        """
        C{credentialsChecked} and C{credentialsRefused} do nothing when no
        credentials are being checked.
        """
        handshake, _ = self.start(AUTH)
        self.assertEqual(handshake.credentialsChecked(ALICE), [])
        self.assertEqual(handshake.credentialsRefused(), [])
        self.assertEqual(handshake.dataReceived(CONNECT_METHOD_2), [Send(SELECT_2)])
        self.assertEqual(handshake.credentialsChecked(ALICE), [])


class Socks6HandshakeRefusalTests(VectorMixin, SynchronousTestCase):
    """
    Version mismatch and malformed requests.
    """

    def test_versionFive(self) -> None:
        """
        A first byte of 5 (shared vector req-version-5-mismatch) gets the
        Version Mismatch reply, the single byte 06, decided on that byte.
        """
        refusal = Refuse(
            h("06"),
            "not a SOCKS6 request: request starts with version 0x05, not 6",
            "VERSION_MISMATCH",
        )
        self.assertVector(h("05", "01", "00"), [refusal])
        self.assertVector(h("05"), [refusal])

    def test_libsocks6msg(self) -> None:
        """
        A libsocks6msg client's version byte 207 (shared vector
        req-version-207-libsocks6msg) gets the Version Mismatch reply.
        """
        self.assertVector(
            h("cf", "01", "0000", "0050", "00", "01", "7f000001"),
            [
                Refuse(
                    h("06"),
                    "not a SOCKS6 request: request starts with version 0xcf, not 6",
                    "VERSION_MISMATCH",
                )
            ],
        )

    def test_everyOtherFirstByte(self) -> None:
        """
        Every first byte but 6 gets the Version Mismatch reply.
        """
        for byte in range(256):
            if byte == 6:
                continue
            handshake, _ = self.start()
            self.assertEqual(
                handshake.dataReceived(bytes((byte,))),
                [
                    Refuse(
                        h("06"),
                        f"not a SOCKS6 request: request starts with version "
                        f"{byte:#04x}, not 6",
                        "VERSION_MISMATCH",
                    )
                ],
            )

    def test_malformed(self) -> None:
        """
        A malformed request (the shared malformed-* vectors) is refused
        without a reply (A5); nothing more is parsed or answered.
        """
        vectors = [
            (
                h("06", "01", "0006", "0050", "00", "01", "7f000001", "0005", "0006", "0000"),
                "options length 6 is not a multiple of 4",
            ),
            (
                h("06", "01", "0008", "0050", "00", "01", "7f000001", "0005", "0006", "00000000"),
                "option kind 5 has length 6",
            ),
            (
                h("06", "01", "0004", "0050", "00", "01", "7f000001", "0005", "0000"),
                "option kind 5 has length 0",
            ),
            (
                h("06", "01", "0004", "0050", "00", "01", "7f000001", "0005", "000c"),
                "option kind 5 of length 12 runs past the options",
            ),
            (
                h("06", "01", "4004", "0050", "00", "01", "7f000001"),
                "options length 16388 is over 16384",
            ),
            (
                h("06", "01", "0000", "0050", "00", "02", "7f000001"),
                "unknown address type 0x02",
            ),
            (
                h("06", "01", "0000", "0050", "00", "03", "00000000"),
                "empty domain name",
            ),
            (
                h("06", "01", "0008", "0050", "00", "01", "7f000001", "0002", "0008", "4001", "02", "00"),
                "initial data length 16385 is over 16384",
            ),
        ]  # fmt: skip
        for data, error in vectors:
            handshake, _ = self.assertVector(
                data, [Refuse(b"", f"malformed SOCKS6 message: {error}")]
            )
            self.assertEqual(handshake.dataReceived(CONNECT), [])
            self.assertEqual(handshake.clientEnded(), [])
            self.assertEqual(handshake.unconsumed(), b"")


class Socks6HandshakeDataTests(VectorMixin, SynchronousTestCase):
    """
    Initial data, pipelined bytes, and what L{Socks6Handshake.unconsumed}
    and L{Socks6Handshake.buffered} give.
    """

    #: CONNECT with 5 bytes of initial data, "hello" (the request part
    #: of shared vector req-connect-authadvert-initial-data, methods 1 and
    #: 2, to 192.0.2.1:80).
    DATA = h(
        "06", "01", "0008", "0050", "00", "01", "c0000201",
        "0002", "0008", "0005", "01", "02",
        asciiHex("hello"),
    )  # fmt: skip

    def test_initialDataWaited(self) -> None:
        """
        Until all the announced initial data are in, nothing happens.
        """
        handshake, _ = self.assertVector(self.DATA[:-1], [])
        self.assertEqual(handshake.unconsumed(), b"")
        self.assertEqual(handshake.dataReceived(b"o")[0], Send(AUTH_OK))

    def test_initialDataFirst(self) -> None:
        """
        The initial data are the request's (its C{socks6.initialData}), and
        the first C{unconsumed()} after the L{RequestReady} gives them
        before the bytes pipelined after them; later calls give only what
        came since.
        """
        handshake, _ = self.assertVector(
            self.DATA + b" world",
            [Send(AUTH_OK), RequestReady(value(self.DATA))],
        )
        self.assertEqual(wire(self.DATA).initialData, b"hello")
        self.assertEqual(handshake.buffered(), len(b" world"))
        self.assertEqual(handshake.unconsumed(), b"hello world")
        self.assertEqual(handshake.unconsumed(), b"")
        self.assertEqual(handshake.dataReceived(b"!"), [])
        self.assertEqual(handshake.buffered(), 1)
        self.assertEqual(handshake.unconsumed(), b"!")

    def test_initialDataOnlyForConnect(self) -> None:
        """
        The Initial Data Length of a command other than CONNECT is ignored:
        no bytes are awaited, and those that follow are pipelined bytes.
        """
        bind = h(
            "06", "02", "0008", "0000", "00", "01", "00000000",
            "0002", "0008", "0005", "00", "00",
        )  # fmt: skip
        handshake, _ = self.assertVector(
            bind + b"abc", [Send(AUTH_OK), RequestReady(value(bind))]
        )
        self.assertEqual(handshake.unconsumed(), b"abc")

    def test_secondRequestNotParsed(self) -> None:
        """
        A second request pipelined after the first is the destination's.
        """
        handshake, _ = self.assertVector(
            CONNECT + NOOP, [Send(AUTH_OK), RequestReady(value(CONNECT))]
        )
        self.assertEqual(handshake.unconsumed(), NOOP)

    def test_zeroRttInitialDataAfterCheck(self) -> None:
        """
        While 0-RTT credentials are checked, C{unconsumed()} gives nothing;
        after, the initial data and the bytes pipelined meanwhile.
        """
        handshake, _ = self.assertVector(
            CONNECT_ZERO_RTT + b" /", [CheckCredentials(b"alice", b"secret")], AUTH
        )
        self.assertEqual(handshake.dataReceived(b" HTTP"), [])
        self.assertEqual(handshake.unconsumed(), b"")
        handshake.credentialsChecked(ALICE)
        self.assertEqual(handshake.unconsumed(), b"GET / HTTP")

    def test_pieces(self) -> None:
        """
        The request cut at its fields gives the same actions as whole.
        """
        for cuts in ([1, 2, 4, 6, 8, 12], [12, 20], [20, 24]):
            handshake, _ = self.start()
            actions: list[Action] = []
            for piece in chunked(self.DATA, cuts):
                actions += handshake.dataReceived(piece)
            self.assertEqual(actions, [Send(AUTH_OK), RequestReady(value(self.DATA))])


class Socks6HandshakeSessionTests(VectorMixin, SynchronousTestCase):
    """
    Sessions: opened by a Session Request, reused, invalid, torn down.
    """

    def test_open(self) -> None:
        """
        A Session Request outside a session opens one for the (no) user
        and the client's host; its ID goes in the successful
        Authentication Reply, and the request belongs to it.
        """
        data = h("06", "00", "0004", "0000", "00", "01", "00000000", "0005", "0004")

        def expected(table: FakeSessions) -> list[Action]:
            session = table.sessions[NEW_ID]
            return [
                Send(h("06", "00", "000c", "0006", "000c", NEW_ID.hex())),
                RequestReady(value(data, session=session)),
            ]

        handshake, table = self.assertVector(data, expected)
        self.assertEqual(table.calls, [("open", None, None, CLIENT)])
        self.assertEqual(table.sessions[NEW_ID].requests, 1)
        self.assertIs(handshake.session, table.sessions[NEW_ID])

    def test_openAuthenticated(self) -> None:
        """
        A session opened with checked 0-RTT credentials is bound to the
        avatar and the credentials; the reply carries the RFC 1929 success
        then the Session ID.
        """
        data = h(
            "06", "01", "0018", "0050", "00", "01", "c0000201",
            "0005", "0004",
            "0004", "0014", "02", "01", "05", ALICE_HEX, "06", SECRET_HEX, "00",
        )  # fmt: skip
        handshake, table = self.assertVector(
            data, [CheckCredentials(b"alice", b"secret")], AUTH
        )
        actions = handshake.credentialsChecked(ALICE)
        session = table.sessions[NEW_ID]
        reply = h(
            "06", "00", "0014",
            "0004", "0008", "02", "01", "00", "00",
            "0006", "000c", NEW_ID.hex(),
        )  # fmt: skip
        self.assertEqual(
            actions,
            [
                Send(reply),
                RequestReady(value(data, ALICE, ALICE_SECRET, session)),
            ],
        )
        self.assertEqual(table.calls, [("open", ALICE, ALICE_SECRET, CLIENT)])

    def test_openRefusedByTable(self) -> None:
        """
        When the table will not open a session (a cap), the Session Request
        is ignored: success without a Session ID, outside any session.
        """
        data = h("06", "00", "0004", "0000", "00", "01", "00000000", "0005", "0004")

        def full(table: FakeSessions) -> None:
            table.full = True

        handshake, table = self.assertVector(
            data, [Send(AUTH_OK), RequestReady(value(data))], prepare=full
        )
        self.assertIsNone(handshake.session)

    def test_reuse(self) -> None:
        """
        A request with a live Session ID needs no authentication, even with
        an authenticator and credentials in it: it gets Session OK, acts as
        the session's user with its credentials, and touches the session.
        """
        data = h(
            "06", "01", "0020", "0050", "00", "01", "c0000201",
            "0006", "000c", OLD_ID.hex(),
            "0004", "0014", "02", "01", "05", asciiHex("mallo"), "06", SECRET_HEX, "00",
        )  # fmt: skip

        def expected(table: FakeSessions) -> list[Action]:
            session = table.sessions[OLD_ID]
            return [
                Send(h("06", "00", "0004", "0008", "0004")),
                RequestReady(value(data, ALICE, ALICE_SECRET, session)),
            ]

        handshake, table = self.assertVector(
            data, expected, AUTH, prepare=FakeSessions.add
        )
        self.assertEqual(table.calls, [("find", OLD_ID), ("touch", OLD_ID)])
        self.assertEqual(handshake.user, ALICE)
        self.assertEqual(table.sessions[OLD_ID].requests, 1)

    def test_noSessionInsideASession(self) -> None:
        """
        A Session Request inside a session is ignored: no second session.
        """
        data = h(
            "06", "00", "0010", "0000", "00", "01", "00000000",
            "0006", "000c", OLD_ID.hex(), "0005", "0004",
        )  # fmt: skip
        handshake, table = self.assertVector(
            data,
            lambda table: [
                Send(h("06", "00", "0004", "0008", "0004")),
                RequestReady(value(data, ALICE, ALICE_SECRET, table.sessions[OLD_ID])),
            ],
            prepare=FakeSessions.add,
        )
        self.assertEqual(list(table.sessions), [OLD_ID])

    def test_invalid(self) -> None:
        """
        An unknown Session ID gets a failed Authentication Reply with
        Session Invalid, then close.
        """
        data = h(
            "06", "01", "000c", "0050", "00", "01", "c0000201",
            "0006", "000c", OLD_ID.hex(),
        )  # fmt: skip
        handshake, table = self.assertVector(
            data,
            [
                Refuse(
                    SESSION_INVALID,
                    "unknown or expired SOCKS6 session",
                    "SESSION_INVALID",
                    value(data),
                )
            ],
            AUTH,
        )
        self.assertEqual(table.calls, [("find", OLD_ID)])
        self.assertEqual(handshake.unconsumed(), b"")

    def test_teardown(self) -> None:
        """
        Session Teardown (shared vector req-teardown) ends the session, and
        the request is served outside it: without an authenticator, a
        plain success.
        """
        data = h(
            "06", "00", "000c", "0000", "00", "01", "00000000",
            "0006", "0008", "00000001", "000a", "0004",
        )  # fmt: skip

        def prepare(table: FakeSessions) -> None:
            table.add(h("00000001"))

        handshake, table = self.assertVector(
            data, [Send(AUTH_OK), RequestReady(value(data))], prepare=prepare
        )
        self.assertEqual(table.calls, [("close", h("00000001"))])
        self.assertEqual(table.sessions, {})
        self.assertIsNone(handshake.session)

    def test_teardownNeedsAuthentication(self) -> None:
        """
        With an authenticator, a teardown request without credentials is
        refused like any request outside a session, but the session has
        ended anyway.
        """
        data = h(
            "06", "00", "0010", "0000", "00", "01", "00000000",
            "0006", "000c", OLD_ID.hex(), "000a", "0004",
        )  # fmt: skip
        handshake, table = self.assertVector(
            data,
            [
                Refuse(
                    SELECT_FF,
                    "no acceptable authentication method offered",
                    "NO_ACCEPTABLE_METHODS",
                    value(data),
                )
            ],
            AUTH,
            prepare=FakeSessions.add,
        )
        self.assertEqual(table.sessions, {})

    def test_teardownOpensNothing(self) -> None:
        """
        A Session Request with Session Teardown opens no session, and an
        unknown Session ID with Teardown is no error.
        """
        data = h(
            "06", "00", "0014", "0000", "00", "01", "00000000",
            "0006", "000c", OLD_ID.hex(), "000a", "0004", "0005", "0004",
        )  # fmt: skip
        handshake, table = self.assertVector(
            data, [Send(AUTH_OK), RequestReady(value(data))]
        )
        self.assertEqual(table.calls, [("close", OLD_ID)])


class Socks6HandshakeIdempotenceTests(VectorMixin, SynchronousTestCase):
    """
    Token windows and spending, inside a session.
    """

    #: Shared vector req-connect-session-id-token: CONNECT 127.0.0.1:26081
    #: in session L{OLD_ID}, spending token L{OLD_BASE}.
    SPEND = h(
        "06", "01", "0014", "65e1", "00", "01", "7f000001",
        "0006", "000c", OLD_ID.hex(),
        "000d", "0008", "57390bb0",
    )  # fmt: skip

    def withWindow(self, table: FakeSessions) -> None:
        """An existing session with a window of 200 from L{OLD_BASE}."""
        table.add(window=TokenWindow(OLD_BASE, 200))

    def test_windowIssued(self) -> None:
        """
        A Session Request with an Idempotence Request (shared vector
        req-noop-session-and-window-request) gets the Session ID and the
        window (shared vector authrep-session-id-window).
        """
        data = h(
            "06", "00", "000c", "0000", "00", "01", "00000000",
            "0005", "0004", "000b", "0008", "000000c8",
        )  # fmt: skip
        reply = h(
            "06", "00", "0018",
            "0006", "000c", "37eddd4c1bf7c62e",
            "000c", "000c", "28be6fa8", "000000c8",
        )  # fmt: skip
        handshake, table = self.assertVector(
            data,
            lambda table: [
                Send(reply),
                RequestReady(value(data, session=table.sessions[NEW_ID])),
            ],
        )
        self.assertEqual(
            table.calls,
            [("open", None, None, CLIENT), ("issueWindow", NEW_ID, 200)],
        )

    def test_windowInEveryLaterReply(self) -> None:
        """
        Once issued, the window is in every successful reply of the
        session, after Session OK; a second Idempotence Request is passed
        to the table, which gives no new window.
        """
        data = h(
            "06", "00", "0014", "0000", "00", "01", "00000000",
            "0006", "000c", OLD_ID.hex(), "000b", "0008", "00000064",
        )  # fmt: skip
        reply = h(
            "06", "00", "0010",
            "0008", "0004",
            "000c", "000c", "57390bb0", "000000c8",
        )  # fmt: skip
        handshake, table = self.assertVector(
            data,
            lambda table: [
                Send(reply),
                RequestReady(value(data, ALICE, ALICE_SECRET, table.sessions[OLD_ID])),
            ],
            prepare=self.withWindow,
        )
        self.assertEqual(table.calls[-1], ("issueWindow", OLD_ID, 100))

    def test_tokenAccepted(self) -> None:
        """
        A token in the window is spent before the request is given: the
        reply carries Session OK, Idempotence Accepted and the shifted
        window, in that order.
        """
        reply = h(
            "06", "00", "0014",
            "0008", "0004",
            "000e", "0004",
            "000c", "000c", "57390bb1", "000000c8",
        )  # fmt: skip
        handshake, table = self.assertVector(
            self.SPEND,
            lambda table: [
                Send(reply),
                RequestReady(
                    value(self.SPEND, ALICE, ALICE_SECRET, table.sessions[OLD_ID])
                ),
            ],
            prepare=self.withWindow,
        )
        window = table.sessions[OLD_ID].window
        assert window is not None
        self.assertEqual((window.base, window.size), (OLD_BASE + 1, 200))

    def test_tokenRejected(self) -> None:
        """
        A token already spent, outside the window, or sent in a session
        with no window gets a failed Authentication Reply with Idempotence
        Rejected, then close; the initial data are dropped.
        """

        def spent(table: FakeSessions) -> None:
            self.withWindow(table)
            window = table.sessions[OLD_ID].window
            assert window is not None
            window.spend(OLD_BASE)

        def outside(table: FakeSessions) -> None:
            table.add(window=TokenWindow(OLD_BASE + 200, 200))

        refusal = Refuse(
            IDEMPOTENCE_REJECTED,
            "idempotence token 1463356336 rejected (spent or outside the window)",
            "IDEMPOTENCE_REJECTED",
        )
        for prepare in (spent, outside, FakeSessions.add):
            handshake, table = self.assertVector(
                self.SPEND,
                lambda table: [
                    Refuse(
                        refusal.data,
                        refusal.reason,
                        refusal.reply,
                        value(self.SPEND, ALICE, ALICE_SECRET, table.sessions[OLD_ID]),
                    )
                ],
                prepare=prepare,
            )
            self.assertIn(OLD_ID, table.sessions)
            self.assertEqual(handshake.unconsumed(), b"")

    def test_replay(self) -> None:
        """
        The same request twice in a session: the first spends the token
        and is given; the second is rejected and never given.
        """
        table = FakeSessions()
        self.withWindow(table)
        first = Socks6Handshake(NO_AUTH, table, CLIENT).dataReceived(self.SPEND)
        self.assertIsInstance(first[-1], RequestReady)
        second = Socks6Handshake(NO_AUTH, table, CLIENT).dataReceived(self.SPEND)
        self.assertEqual(len(second), 1)
        self.assertEqual(second[0].data, IDEMPOTENCE_REJECTED)

    def test_justOpenedSessionClosed(self) -> None:
        """
        A request that opens a session and spends a token its new window
        does not hold is rejected, and the session it opened is closed.
        """
        data = h(
            "06", "00", "0014", "0000", "00", "01", "00000000",
            "0005", "0004", "000b", "0008", "00000004", "000d", "0008", "00000007",
        )  # fmt: skip
        handshake, table = self.assertVector(
            data,
            [
                Refuse(
                    IDEMPOTENCE_REJECTED,
                    "idempotence token 7 rejected (spent or outside the window)",
                    "IDEMPOTENCE_REJECTED",
                    value(data),
                )
            ],
        )
        self.assertEqual(
            table.calls,
            [
                ("open", None, None, CLIENT),
                ("issueWindow", NEW_ID, 4),
                ("close", NEW_ID),
            ],
        )
        self.assertEqual(table.sessions, {})
        self.assertIsNone(handshake.session)

    def test_justOpenedWindowSpent(self) -> None:
        """
        A token the request's own new window holds is accepted: Session ID,
        Idempotence Accepted, then the shifted window.
        """
        data = h(
            "06", "00", "0014", "0000", "00", "01", "00000000",
            "0005", "0004", "000b", "0008", "00000004", "000d", "0008", "28be6fa8",
        )  # fmt: skip
        reply = h(
            "06", "00", "001c",
            "0006", "000c", NEW_ID.hex(),
            "000e", "0004",
            "000c", "000c", "28be6fa9", "00000004",
        )  # fmt: skip
        self.assertVector(
            data,
            lambda table: [
                Send(reply),
                RequestReady(value(data, session=table.sessions[NEW_ID])),
            ],
        )

    def test_outsideSessionIgnored(self) -> None:
        """
        Idempotence options outside a session are ignored.
        """
        data = h(
            "06", "01", "0010", "0050", "00", "01", "c0000201",
            "000b", "0008", "00000004", "000d", "0008", "00000007",
        )  # fmt: skip
        handshake, table = self.assertVector(
            data, [Send(AUTH_OK), RequestReady(value(data))]
        )
        self.assertEqual(table.calls, [])


class Socks6HandshakeEndTests(VectorMixin, SynchronousTestCase):
    """
    EOF from the client, in each stage.
    """

    def test_beforeAnything(self) -> None:
        """
        EOF before any byte is refused, with no reply.
        """
        handshake, _ = self.start()
        self.assertEqual(
            handshake.clientEnded(),
            [Refuse(b"", "client sent EOF during the request")],
        )
        self.assertEqual(handshake.clientEnded(), [])
        self.assertEqual(handshake.dataReceived(CONNECT), [])

    def test_duringRequest(self) -> None:
        """
        EOF inside the request (or its initial data) is refused.
        """
        for cut in range(1, len(CONNECT_ZERO_RTT)):
            handshake, _ = self.start(AUTH)
            self.assertEqual(handshake.dataReceived(CONNECT_ZERO_RTT[:cut]), [])
            self.assertEqual(
                handshake.clientEnded(),
                [Refuse(b"", "client sent EOF during the request")],
            )

    def test_duringExchange(self) -> None:
        """
        EOF after the selection of method 2, before the whole bare request,
        is refused during the username/password exchange.
        """
        for cut in range(len(BARE_ALICE)):
            handshake, _ = self.start(AUTH)
            handshake.dataReceived(CONNECT_METHOD_2 + BARE_ALICE[:cut])
            self.assertEqual(
                handshake.clientEnded(),
                [Refuse(b"", "client sent EOF during the username/password exchange")],
            )

    def test_whileChecking(self) -> None:
        """
        EOF while credentials are checked (0-RTT or slow path) is
        remembered: the request is in, and is given after the check.
        """
        for data, first in (
            (CONNECT_ZERO_RTT, [Send(AUTH_OK_UP)]),
            (CONNECT_METHOD_2 + BARE_ALICE, [Send(h("01", "00")), Send(AUTH_OK)]),
        ):
            handshake, _ = self.start(AUTH)
            handshake.dataReceived(data)
            self.assertEqual(handshake.clientEnded(), [])
            self.assertTrue(handshake.ended)
            actions = handshake.credentialsChecked(ALICE)
            self.assertEqual(actions[:-1], first)
            self.assertIsInstance(actions[-1], RequestReady)

    def test_afterRequest(self) -> None:
        """
        EOF after the request is remembered; the initial data are still
        the destination's.
        """
        handshake, _ = self.start()
        handshake.dataReceived(Socks6HandshakeDataTests.DATA)
        self.assertEqual(handshake.clientEnded(), [])
        self.assertTrue(handshake.ended)
        self.assertEqual(handshake.unconsumed(), b"hello")

    def test_afterRefusal(self) -> None:
        """
        EOF after a refusal does nothing.
        """
        handshake, _ = self.start(AUTH)
        handshake.dataReceived(CONNECT)
        self.assertEqual(handshake.clientEnded(), [])
        self.assertFalse(handshake.ended)


class Socks6HandshakeReplyTests(VectorMixin, SynchronousTestCase):
    """
    The Operation Replies the pipeline asks for.
    """

    def ready(self, data: bytes) -> Socks6Handshake:
        handshake, _ = self.start()
        actions = handshake.dataReceived(data)
        self.assertIsInstance(actions[-1], RequestReady)
        return handshake

    def test_success(self) -> None:
        """
        A success with a bound address and no options (shared vector
        opreply-success-v4's layout).
        """
        handshake = self.ready(CONNECT)
        self.assertEqual(
            handshake.reply(Socks6Reply.SUCCESS, BOUND),
            h("06", "00", "0000", "9c40", "00", "01", "c6336401"),
        )

    def test_stackOptionReplies(self) -> None:
        """
        The stack-option replies the command computed go in the Operation
        Reply, in the order given.
        """
        handshake = self.ready(CONNECT)
        options = (
            socks6.TtlOption(socks6.StackLeg.PROXY_REMOTE, 64),
            socks6.IpTosOption(socks6.StackLeg.PROXY_REMOTE, 0x10),
        )
        self.assertEqual(
            handshake.reply(Socks6Reply.SUCCESS, BOUND, options),
            h(
                "06", "00", "0010", "9c40", "00", "01", "c6336401",
                "0001", "0008", "8103", "4000",
                "0001", "0008", "8101", "1000",
            ),
        )  # fmt: skip

    def test_failure(self) -> None:
        """
        A failure without a bound address names 0.0.0.0:0; its label is
        the code itself.
        """
        handshake = self.ready(CONNECT)
        code = Socks6Reply.CONNECTION_REFUSED
        self.assertEqual(
            handshake.reply(code), h("06", "05", "0000", "0000", "00", "01", "00000000")
        )
        self.assertIs(handshake.replyLabel(code), code)
        self.assertRaises(OutOfTurn, handshake.reply, Socks6Reply.SUCCESS)

    def test_noop(self) -> None:
        """
        A NOOP is answered with one success to 0.0.0.0:0.
        """
        handshake = self.ready(NOOP)
        self.assertEqual(
            handshake.reply(Socks6Reply.SUCCESS, ZERO),
            h("06", "00", "0000", "0000", "00", "01", "00000000"),
        )

    def test_oneReplyForConnect(self) -> None:
        """
        A CONNECT gets one Operation Reply: a second is a bug of the
        caller (L{OutOfTurn}).
        """
        handshake = self.ready(CONNECT)
        handshake.reply(Socks6Reply.SUCCESS, BOUND)
        self.assertRaises(OutOfTurn, handshake.reply, Socks6Reply.SUCCESS, BOUND)

    def test_twoRepliesForBind(self) -> None:
        """
        A BIND gets two Operation Replies: the listening address (with
        its stack-option replies), then the peer that connected.
        """
        handshake = self.ready(BIND)
        backlog = (socks6.ListenBacklogOption(socks6.StackLeg.PROXY_REMOTE, 0),)
        self.assertEqual(
            handshake.reply(Socks6Reply.SUCCESS, BOUND, backlog),
            h(
                "06", "00", "0008", "9c40", "00", "01", "c6336401",
                "0001", "0008", "8403", "0000",
            ),
        )  # fmt: skip
        self.assertEqual(
            handshake.reply(
                Socks6Reply.SUCCESS, Destination(IPv4Address("203.0.113.5"), 4444)
            ),
            h("06", "00", "0000", "115c", "00", "01", "cb007105"),
        )
        self.assertRaises(OutOfTurn, handshake.reply, Socks6Reply.SUCCESS, BOUND)

    def test_bindFailure(self) -> None:
        """
        A BIND whose first reply fails gets no second one.
        """
        handshake = self.ready(BIND)
        handshake.reply(Socks6Reply.GENERAL_FAILURE)
        self.assertRaises(OutOfTurn, handshake.reply, Socks6Reply.SUCCESS, BOUND)


class Socks6HandshakeRandomTests(SynchronousTestCase):
    """
    Random input never breaks the handshake.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        chunks=st.lists(st.binary(max_size=40), max_size=6),
        requireAuth=st.booleans(),
        check=st.lists(st.booleans(), max_size=3),
        prefix=st.sampled_from(
            [b"", h("06"), CONNECT, CONNECT_METHOD_2, CONNECT_ZERO_RTT[:-3], NOOP[:-1]]
        ),
    )
    def test_randomBytes(
        self,
        chunks: list[bytes],
        requireAuth: bool,
        check: list[bool],
        prefix: bytes,
    ) -> None:
        """
        Random bytes (after the start of a valid request, or not), in
        random pieces, with credentials answered at random
        and an EOF at the end, never raise: every call gives a list of
        actions, and at most one L{RequestReady} or L{Refuse} in all.
        """
        table = FakeSessions()
        table.add()
        handshake = Socks6Handshake(
            HandshakeSettings(requireAuth=requireAuth), table, CLIENT
        )
        chunks = [prefix, *chunks]
        answers = iter(check)
        actions: list[Action] = []
        for chunk in chunks:
            actions += handshake.dataReceived(chunk)
            while actions and isinstance(actions[-1], CheckCredentials):
                if next(answers, True):
                    actions += handshake.credentialsChecked(ALICE)
                else:
                    actions += handshake.credentialsRefused()
        actions += handshake.clientEnded()
        self.assertIsInstance(handshake.unconsumed(), bytes)
        self.assertIsInstance(handshake.buffered(), int)
        for action in actions:
            self.assertIsInstance(
                action, (Send, CheckCredentials, RequestReady, Refuse)
            )
        self.assertLessEqual(
            sum(isinstance(a, (RequestReady, Refuse)) for a in actions), 1
        )


class Socks6HandshakeLayerTests(SynchronousTestCase):
    """
    Where the handshake sits among socksd's layers.
    """

    def test_noTwisted(self) -> None:
        """
        Importing the handshake package loads neither Twisted nor zope.
        """
        root = os.path.dirname(os.path.dirname(socksd.__file__))
        output = subprocess.check_output(
            [
                sys.executable,
                "-c",
                "import sys, socksd.handshake.socks6; "
                "print(sorted({m.split('.')[0] for m in sys.modules} "
                "& {'twisted', 'zope'}))",
            ],
            env={**os.environ, "PYTHONPATH": root},
        )
        self.assertEqual(output.strip(), b"[]")

    def test_tokenWindowReExported(self) -> None:
        """
        L{TokenWindow} moved to the handshake layer; the server's session
        module still exports it.
        """
        self.assertIs(_socks6session.TokenWindow, TokenWindow)
