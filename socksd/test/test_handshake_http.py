"""
Tests for L{socksd.handshake.http}: the sans-IO HTTP handshake on the SOCKS
port (CONNECT, and the "this is a SOCKS proxy" page), with requests fed
whole, byte by byte and at every split.
"""

from __future__ import annotations

import os
import subprocess
import sys
from base64 import b64encode
from ipaddress import IPv4Address, IPv6Address
from typing import Iterator

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

import socksd
from socksd.address import Destination
from socksd.handshake import (
    Action,
    CheckCredentials,
    HandshakeSettings,
    HttpHandshake,
    Refuse,
    Request,
    RequestReady,
)
from socksd.handshake.http import (
    HTTP_FIRST_BYTES,
    HTTP_METHODS,
    MAX_HTTP_REQUEST,
    parseAuthority,
)
from socksd.replies import ReplyProfile, Socks5Reply, TorExtendedReply
from socksd.test._vectors import chunked, splits

PAGE_ONLY = HandshakeSettings()
CONNECT_ON = HandshakeSettings(httpConnect=True)
CONNECT_AUTH = HandshakeSettings(httpConnect=True, requireAuth=True)

#: The listening address the page names.
LOCAL = ("198.51.100.9", 1080)

GET = b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n"
CONNECT = b"CONNECT 192.0.2.1:80 HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n"
DESTINATION = Destination(IPv4Address("192.0.2.1"), 80)

OK = b"HTTP/1.1 200 Connection established\r\n\r\n"
BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)
CHALLENGE = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Basic realm="socksd"\r\n'
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)

EOF_HANDSHAKE = Refuse(b"", "client sent EOF during the handshake")
EOF_REQUEST = Refuse(b"", "client sent EOF during the HTTP request")


def basic(user: bytes, password: bytes) -> bytes:
    """A C{Proxy-Authorization: Basic} header line."""
    return b"Proxy-Authorization: Basic " + b64encode(user + b":" + password) + b"\r\n"


#: CONNECT 192.0.2.1:80 with alice's credentials.
CONNECT_ALICE = (
    b"CONNECT 192.0.2.1:80 HTTP/1.1\r\n" + basic(b"alice", b"secret") + b"\r\n"
)


def connectRequest(
    destination: Destination = DESTINATION,
    credentials: tuple[bytes, bytes] | None = None,
    user: object = None,
) -> Request:
    """The L{Request} an HTTP CONNECT gives: its credentials isolate it."""
    return Request(
        0,
        "http",
        1,
        destination,
        ReplyProfile.SOCKS5,
        user,
        credentials,
        credentials,
    )


def pageOf(method: bytes, local: tuple[str, int] | None = LOCAL) -> bytes:
    """The page a handshake sends for a C{method} request, read whole."""
    handshake = HttpHandshake(PAGE_ONLY, local)
    actions = handshake.dataReceived(method + b" / HTTP/1.0\r\n\r\n")
    assert len(actions) == 1 and isinstance(actions[0], Refuse), actions
    return actions[0].data


def pageRefusal(method: bytes, local: tuple[str, int] | None = LOCAL) -> Refuse:
    """The L{Refuse} that answers an HTTP C{method} request with the page."""
    return Refuse(
        pageOf(method, local),
        f"HTTP {method.decode('ascii')} request on the SOCKS port",
        "HTTP_501",
    )


def failure(
    status: int, reason: str, why: str, request: Request | None = None
) -> Refuse:
    """The L{Refuse} of a CONNECT request answered C{status}."""
    response = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    return Refuse(
        response.encode("ascii"),
        f"HTTP CONNECT refused: {why}",
        f"HTTP_{status}",
        request,
    )


def feed(handshake: HttpHandshake, chunks: list[bytes]) -> list[Action]:
    """Feed C{chunks} in order; every action, in order."""
    actions: list[Action] = []
    for chunk in chunks:
        actions += handshake.dataReceived(chunk)
    return actions


def everySplit(
    data: bytes,
    handshakeSettings: HandshakeSettings = PAGE_ONLY,
    local: tuple[str, int] | None = LOCAL,
) -> Iterator[tuple[HttpHandshake, list[Action], list[bytes]]]:
    """
    A new handshake fed C{data} whole, byte by byte and at every split:
    the handshake, its actions and the chunks.
    """
    for chunks in splits(data):
        handshake = HttpHandshake(handshakeSettings, local)
        yield handshake, feed(handshake, chunks), chunks


class HttpPageTests(SynchronousTestCase):
    """
    An HTTP request that is not a served CONNECT gets a 501 page that says
    this is a SOCKS proxy, once its head is in.
    """

    def test_attributes(self) -> None:
        """
        A new handshake has no protocol or version yet, the SOCKS5 reply
        profile, and no bytes.
        """
        handshake = HttpHandshake(PAGE_ONLY, LOCAL)
        self.assertEqual(
            (handshake.protocol, handshake.version, handshake.profile),
            (None, None, ReplyProfile.SOCKS5),
        )
        self.assertEqual(handshake.buffered(), 0)
        self.assertEqual(handshake.unconsumed(), b"")

    def test_get(self) -> None:
        """
        A GET split anywhere gets one page refusal, labelled HTTP_501; the
        protocol is http; later bytes and EOF give nothing.
        """
        for handshake, actions, chunks in everySplit(GET):
            self.assertEqual(actions, [pageRefusal(b"GET")], chunks)
            self.assertEqual(handshake.protocol, "http")
            self.assertEqual(handshake.dataReceived(b"more"), [])
            self.assertEqual(handshake.clientEnded(), [])
            self.assertEqual(handshake.unconsumed(), b"")

    def test_waitsForTheHead(self) -> None:
        """
        Every proper prefix of a request head gives nothing; the protocol
        is http once a method and its space have arrived.
        """
        for length in range(1, len(GET)):
            handshake = HttpHandshake(PAGE_ONLY, LOCAL)
            self.assertEqual(handshake.dataReceived(GET[:length]), [])
            self.assertEqual(handshake.buffered(), length)
            self.assertEqual(handshake.protocol, "http" if length >= 4 else None)

    def test_page(self) -> None:
        """
        The page is an HTTP/1.0 501 response with an HTML body of the
        length it gives, that names the listening address and port.
        """
        head, sep, body = pageOf(b"GET").partition(b"\r\n\r\n")
        self.assertEqual(sep, b"\r\n\r\n")
        self.assertEqual(
            head,
            b"HTTP/1.0 501 Not Implemented\r\n"
            b"Content-Type: text/html; charset=utf-8\r\n"
            + f"Content-Length: {len(body)}\r\n".encode("ascii")
            + b"Connection: close",
        )
        self.assertTrue(body.startswith(b"<!DOCTYPE html>\n"))
        self.assertIn(b"This is a SOCKS proxy, not an HTTP proxy", body)
        self.assertIn(b"socks5://198.51.100.9:1080", body)
        self.assertIn(b"--socks5-hostname 198.51.100.9:1080 URL", body)
        self.assertIn(b"put\n198.51.100.9 and port 1080 in", body)

    def test_ipv6Address(self) -> None:
        """
        An IPv6 listening address is shown in brackets.
        """
        body = pageOf(b"GET", ("2001:db8::9", 1080))
        self.assertIn(b"socks5://[2001:db8::9]:1080", body)
        self.assertIn(b"put\n[2001:db8::9] and port 1080 in", body)

    def test_anyAddress(self) -> None:
        """
        A server listening on every address (0.0.0.0 or ::) cannot name
        one: the page says "this host's address", and the port.
        """
        for local in (("0.0.0.0", 1080), ("::", 1080)):
            body = pageOf(b"GET", local)
            self.assertIn(b"socks5://this host&#x27;s address:1080", body, local)
            self.assertNotIn(b"0.0.0.0", body)
            self.assertNotIn(b"[::]", body)

    def test_unknownAddress(self) -> None:
        """
        Without a listening address, the page says "this proxy's address"
        and "its port".
        """
        body = pageOf(b"GET", None)
        self.assertIn(b"put\nthis proxy's address and port its port in", body)
        self.assertIn(b"socks5://this proxy's address:its port", body)

    def test_addressEscaped(self) -> None:
        """
        The listening host is HTML-escaped.
        """
        self.assertIn(b"socks5://a&lt;b&gt;:1080", pageOf(b"GET", ("a<b>", 1080)))

    def test_everyMethod(self) -> None:
        """
        Each HTTP method, CONNECT included, split anywhere, gets the page
        that names it.
        """
        for method in HTTP_METHODS:
            for _, actions, chunks in everySplit(method + b"/ HTTP/1.0\r\n\r\n"):
                self.assertEqual(actions, [pageRefusal(method[:-1])], chunks)

    def test_everyMethodButConnect(self) -> None:
        """
        With C{httpConnect}, every method but CONNECT still gets the page.
        """
        for method in HTTP_METHODS:
            if method == b"CONNECT ":
                continue
            data = method + b"/ HTTP/1.0\r\n\r\n"
            for _, actions, chunks in everySplit(data, CONNECT_ON):
                self.assertEqual(actions, [pageRefusal(method[:-1])], chunks)

    def test_headHasNoBody(self) -> None:
        """
        The answer to HEAD is the page's head only, with the body's length.
        """
        whole = pageOf(b"GET")
        head = pageOf(b"HEAD")
        self.assertTrue(whole.startswith(head))
        self.assertTrue(head.endswith(b"\r\n\r\n"))
        self.assertIn(b"Content-Length: %d\r\n" % (len(whole) - len(head),), head)

    def test_bareNewlines(self) -> None:
        """
        A head ended by bare newlines is answered.
        """
        for _, actions, chunks in everySplit(b"GET / HTTP/1.0\n\n"):
            self.assertEqual(actions, [pageRefusal(b"GET")], chunks)

    def test_bounded(self) -> None:
        """
        A head that never ends is answered once L{MAX_HTTP_REQUEST} bytes
        have arrived; no more is kept.
        """
        data = b"GET /" + b"a" * MAX_HTTP_REQUEST
        for handshake, actions, chunks in everySplit(data):
            self.assertEqual(actions, [pageRefusal(b"GET")], chunks)
            self.assertEqual(handshake.buffered(), 0)
        handshake = HttpHandshake(PAGE_ONLY, LOCAL)
        self.assertEqual(handshake.dataReceived(data[: MAX_HTTP_REQUEST - 1]), [])
        self.assertEqual(
            handshake.dataReceived(data[MAX_HTTP_REQUEST - 1 :]), [pageRefusal(b"GET")]
        )


class HttpUnknownTests(SynchronousTestCase):
    """
    First bytes that start no HTTP method are closed without an answer, as
    soon as they differ from every method.
    """

    def test_notAMethod(self) -> None:
        """
        Bytes that stop matching any method at their last byte, split
        anywhere, are refused without a reply; the reason shows them in
        hex.  The protocol stays unknown.
        """
        for data, shown in (
            (b"GEX", "47 45 58"),
            (b"g", "67"),
            (b"He", "48 65"),
            (b"POX", "50 4f 58"),
            (b"X", "58"),
            (b"COP", "43 4f 50"),
            (b"CONNECTX", "43 4f 4e 4e 45 43 54 58"),
            (b"\x04", "04"),
        ):
            for handshakeSettings in (PAGE_ONLY, CONNECT_ON):
                expected = [Refuse(b"", f"unknown first bytes {shown}")]
                for handshake, actions, chunks in everySplit(data, handshakeSettings):
                    self.assertEqual(actions, expected, chunks)
                    self.assertIsNone(handshake.protocol)
                    self.assertEqual(handshake.buffered(), 0)
                    self.assertEqual(handshake.dataReceived(b" / HTTP/1.0\r\n\r\n"), [])
                    self.assertEqual(handshake.clientEnded(), [])

    def test_reasonShowsWhatArrived(self) -> None:
        """
        The reason shows the first bytes received when the handshake gave
        up, at most 8: more of them when they came in one piece.
        """
        for data, shown in (
            ([b"Hello, world"], "48 65 6c 6c 6f 2c 20 77"),
            ([b"H", b"ello, world"], "48 65 6c 6c 6f 2c 20 77"),
            ([b"He", b"llo, world"], "48 65"),
        ):
            handshake = HttpHandshake(PAGE_ONLY, LOCAL)
            self.assertEqual(
                feed(handshake, data), [Refuse(b"", f"unknown first bytes {shown}")]
            )

    def test_prefixWaits(self) -> None:
        """
        Bytes that may still start a method wait for more.
        """
        for data in (b"P", b"PO", b"C", b"CONNECT", b"OPTIONS", b"DELET"):
            for handshakeSettings in (PAGE_ONLY, CONNECT_ON):
                handshake = HttpHandshake(handshakeSettings, LOCAL)
                self.assertEqual(handshake.dataReceived(data), [], data)
                self.assertIsNone(handshake.protocol)


class HttpConnectTests(SynchronousTestCase):
    """
    With C{httpConnect}, C{CONNECT host:port HTTP/1.x} gives a request.
    """

    def test_connect(self) -> None:
        """
        A CONNECT split anywhere gives one L{RequestReady} for a CONNECT
        (command 1, version 0, protocol http) without credentials; the
        bytes after the head are unconsumed.
        """
        for handshake, actions, chunks in everySplit(CONNECT + b"early", CONNECT_ON):
            self.assertEqual(actions, [RequestReady(connectRequest())], chunks)
            self.assertEqual(handshake.protocol, "http")
            self.assertEqual(handshake.buffered(), 5)
            self.assertEqual(handshake.dataReceived(b" late"), [])
            self.assertEqual(handshake.unconsumed(), b"early late")
            self.assertEqual(handshake.unconsumed(), b"")
            self.assertEqual(handshake.buffered(), 0)

    def test_waitsForTheHead(self) -> None:
        """
        Every proper prefix of a CONNECT head gives nothing; the protocol
        is http once C{CONNECT } has arrived.
        """
        for length in range(1, len(CONNECT)):
            handshake = HttpHandshake(CONNECT_ON, LOCAL)
            self.assertEqual(handshake.dataReceived(CONNECT[:length]), [])
            self.assertEqual(handshake.buffered(), length)
            self.assertEqual(handshake.protocol, "http" if length >= 8 else None)

    def test_targets(self) -> None:
        """
        The target may be a name, an IPv4 literal or a bracketed IPv6
        literal; the head may end with bare newlines, and carry any
        headers.
        """
        for data, destination in (
            (
                b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
                Destination("example.com", 443),
            ),
            (
                b"CONNECT [2001:db8::1]:8080 HTTP/1.0\n\n",
                Destination(IPv6Address("2001:db8::1"), 8080),
            ),
            (
                b"CONNECT 192.0.2.1:80 HTTP/1.1\r\nHost: 192.0.2.1:80\r\n"
                b"User-Agent: curl/8.0\r\nX-Empty:\r\n\r\n",
                DESTINATION,
            ),
        ):
            for _, actions, chunks in everySplit(data, CONNECT_ON):
                self.assertEqual(
                    actions, [RequestReady(connectRequest(destination))], chunks
                )

    def test_credentialsUncheckedWithoutAuth(self) -> None:
        """
        Without an authenticator, Basic credentials are not looked at: the
        request has no credentials and no isolation (as the old
        L{HttpConnectHandler}).
        """
        for _, actions, chunks in everySplit(CONNECT_ALICE, CONNECT_ON):
            self.assertEqual(actions, [RequestReady(connectRequest())], chunks)

    def test_badRequest(self) -> None:
        """
        A bad request line, target or header line, split anywhere, gets 400
        with the reason in the log.
        """
        for data, why in (
            (
                b"CONNECT example.com HTTP/1.1\r\n\r\n",
                "bad CONNECT target 'example.com': expected host:port",
            ),
            (
                b"CONNECT example.com:80 HTTP/1.1\r\nno colon\r\n\r\n",
                "bad header line 'no colon'",
            ),
            (
                b"CONNECT example.com:80 HTTP/1.1\r\n X: y\r\n\r\n",
                "bad header line ' X: y'",
            ),
            (
                b"CONNECT example.com:80 HTTP/1.1\r\n: y\r\n\r\n",
                "bad header line ': y'",
            ),
            (
                b"CONNECT example.com:80\r\n\r\n",
                "not enough values to unpack (expected 3, got 2)",
            ),
            (
                b"CONNECT  example.com:80 HTTP/1.1\r\n\r\n",
                "too many values to unpack (expected 3)",
            ),
            (
                b"CONNECT example.com:80 HTTP/2\r\n\r\n",
                "bad request line 'CONNECT example.com:80 HTTP/2'",
            ),
            (
                b"CONNECT 2001:db8::1:80 HTTP/1.1\r\n\r\n",
                "bad CONNECT target '2001:db8::1:80': IPv6 needs brackets",
            ),
            (
                b"CONNECT http://example.com:80 HTTP/1.1\r\n\r\n",
                "bad CONNECT target 'http://example.com:80': IPv6 needs brackets",
            ),
            (
                b"CONNECT example.com/x:80 HTTP/1.1\r\n\r\n",
                "bad CONNECT target host 'example.com/x'",
            ),
            (
                b"CONNECT example.com:99999 HTTP/1.1\r\n\r\n",
                "port 99999 is out of range",
            ),
        ):
            expected = [failure(400, "Bad Request", why)]
            for handshake, actions, chunks in everySplit(data + b"early", CONNECT_ON):
                self.assertEqual(actions, expected, chunks)
                self.assertEqual(handshake.protocol, "http")
                self.assertEqual(handshake.dataReceived(b"more"), [])
                self.assertEqual(handshake.clientEnded(), [])
                self.assertEqual(handshake.unconsumed(), b"")

    def test_headTooLong(self) -> None:
        """
        A head longer than L{MAX_HTTP_REQUEST} bytes gets 431 without
        waiting for its end.
        """
        data = b"CONNECT example.com:80 HTTP/1.1\r\nX: " + b"a" * MAX_HTTP_REQUEST
        expected = [
            failure(431, "Request Header Fields Too Large", "request head too long")
        ]
        for handshake, actions, chunks in everySplit(data, CONNECT_ON):
            self.assertEqual(actions, expected, chunks)
            self.assertEqual(handshake.buffered(), 0)

    def test_headEndsTooLate(self) -> None:
        """
        A head whose end arrives past L{MAX_HTTP_REQUEST} bytes gets 431,
        however it is split.
        """
        data = (
            b"CONNECT example.com:80 HTTP/1.1\r\nX: "
            + b"a" * MAX_HTTP_REQUEST
            + b"\r\n\r\nearly"
        )
        expected = [
            failure(431, "Request Header Fields Too Large", "request head too long")
        ]
        for _, actions, chunks in everySplit(data, CONNECT_ON):
            self.assertEqual(actions, expected, chunks)

    def test_headAtTheLimit(self) -> None:
        """
        A head of exactly L{MAX_HTTP_REQUEST} bytes, end included, is
        served; one byte more gets 431.
        """
        line = b"CONNECT example.com:80 HTTP/1.1\r\nX: "
        filler = b"a" * (MAX_HTTP_REQUEST - len(line) - 4)
        data = line + filler + b"\r\n\r\n"
        self.assertEqual(len(data), MAX_HTTP_REQUEST)
        handshake = HttpHandshake(CONNECT_ON, LOCAL)
        self.assertEqual(
            handshake.dataReceived(data + b"early"),
            [RequestReady(connectRequest(Destination("example.com", 80)))],
        )
        self.assertEqual(handshake.unconsumed(), b"early")
        handshake = HttpHandshake(CONNECT_ON, LOCAL)
        self.assertEqual(
            handshake.dataReceived(line + filler + b"a\r\n\r\n"),
            [failure(431, "Request Header Fields Too Large", "request head too long")],
        )


class HttpConnectAuthTests(SynchronousTestCase):
    """
    With C{httpConnect} and an authenticator, a CONNECT needs Basic proxy
    credentials the authenticator accepts; else 407 with a challenge.
    """

    def test_checked(self) -> None:
        """
        Basic credentials, split anywhere, are checked; once accepted, the
        request carries the user and the credentials, which isolate it.
        """
        for handshake, actions, chunks in everySplit(
            CONNECT_ALICE + b"early", CONNECT_AUTH
        ):
            self.assertEqual(actions, [CheckCredentials(b"alice", b"secret")], chunks)
            avatar = object()
            self.assertEqual(
                handshake.credentialsChecked(avatar),
                [
                    RequestReady(
                        connectRequest(credentials=(b"alice", b"secret"), user=avatar)
                    )
                ],
            )
            self.assertIs(handshake.user, avatar)
            self.assertEqual(handshake.unconsumed(), b"early")

    def test_dataWhileChecking(self) -> None:
        """
        Bytes that arrive while the credentials are checked are unconsumed
        after the request.
        """
        handshake = HttpHandshake(CONNECT_AUTH, LOCAL)
        handshake.dataReceived(CONNECT_ALICE + b"one")
        self.assertEqual(handshake.dataReceived(b" two"), [])
        self.assertEqual(handshake.buffered(), 7)
        self.assertEqual(len(handshake.credentialsChecked("alice")), 1)
        self.assertEqual(handshake.unconsumed(), b"one two")

    def test_credentialForms(self) -> None:
        """
        The scheme is case-insensitive and spaces around the token are
        ignored; the password may be empty or contain colons.
        """
        for header, credentials in (
            (
                b"Proxy-Authorization: BASIC YWxpY2U6c2VjcmV0  \r\n",
                (b"alice", b"secret"),
            ),
            (
                b"proxy-authorization:basic   YWxpY2U6c2VjcmV0\r\n",
                (b"alice", b"secret"),
            ),
            (basic(b"alice", b""), (b"alice", b"")),
            (basic(b"alice", b"a:b:c"), (b"alice", b"a:b:c")),
            (basic(b"", b"secret"), (b"", b"secret")),
        ):
            data = b"CONNECT 192.0.2.1:80 HTTP/1.1\r\n" + header + b"\r\n"
            handshake = HttpHandshake(CONNECT_AUTH, LOCAL)
            self.assertEqual(
                handshake.dataReceived(data), [CheckCredentials(*credentials)], header
            )

    def test_missing(self) -> None:
        """
        Without Basic credentials (none, another scheme, bad base64, no
        colon), the answer is 407 with a Basic challenge; the refusal
        carries the request, for the log.
        """
        expected = [
            Refuse(
                CHALLENGE,
                "HTTP CONNECT refused: no Basic proxy credentials",
                "HTTP_407",
                connectRequest(),
            )
        ]
        for header in (
            b"",
            b"Proxy-Authorization: Bearer YWxpY2U6c2VjcmV0\r\n",
            b"Proxy-Authorization: Basic !!!!\r\n",
            b"Proxy-Authorization: Basic " + b64encode(b"alice") + b"\r\n",
            b"Proxy-Authorization: Basic\r\n",
            b"Proxy-Authorization: Basic \xe9\xe9\xe9\xe9\r\n",
            b"Authorization: Basic YWxpY2U6c2VjcmV0\r\n",
        ):
            data = b"CONNECT 192.0.2.1:80 HTTP/1.1\r\n" + header + b"\r\n"
            for handshake, actions, chunks in everySplit(data, CONNECT_AUTH):
                self.assertEqual(actions, expected, chunks)
                self.assertEqual(handshake.credentialsChecked("alice"), [])
                self.assertEqual(handshake.clientEnded(), [])

    def test_refused(self) -> None:
        """
        Credentials the authenticator refuses get 407 with a challenge;
        the reason names the user.
        """
        handshake = HttpHandshake(CONNECT_AUTH, LOCAL)
        handshake.dataReceived(
            b"CONNECT 192.0.2.1:80 HTTP/1.1\r\n" + basic(b"alice", b"nope") + b"\r\n"
        )
        self.assertEqual(
            handshake.credentialsRefused(),
            [
                Refuse(
                    CHALLENGE,
                    "HTTP CONNECT refused: authentication failed for user 'alice'",
                    "HTTP_407",
                    connectRequest(credentials=(b"alice", b"nope")),
                )
            ],
        )
        self.assertEqual(handshake.credentialsRefused(), [])
        self.assertEqual(handshake.credentialsChecked("alice"), [])
        self.assertEqual(handshake.clientEnded(), [])

    def test_refusedUserShown(self) -> None:
        """
        A username that is not UTF-8 is shown with backslash escapes.
        """
        handshake = HttpHandshake(CONNECT_AUTH, LOCAL)
        handshake.dataReceived(
            b"CONNECT 192.0.2.1:80 HTTP/1.1\r\n" + basic(b"al\xffce", b"x") + b"\r\n"
        )
        [refusal] = handshake.credentialsRefused()
        self.assertEqual(
            refusal.reason,
            "HTTP CONNECT refused: authentication failed for user 'al\\\\xffce'",
        )

    def test_answersOutOfTurn(self) -> None:
        """
        A check's answer when no check was asked for gives nothing.
        """
        handshake = HttpHandshake(CONNECT_AUTH, LOCAL)
        self.assertEqual(handshake.credentialsChecked("alice"), [])
        self.assertEqual(handshake.credentialsRefused(), [])
        handshake.dataReceived(CONNECT_ALICE)
        self.assertEqual(len(handshake.credentialsChecked("alice")), 1)
        self.assertEqual(handshake.credentialsChecked("alice"), [])
        self.assertEqual(handshake.credentialsRefused(), [])


class HttpEndTests(SynchronousTestCase):
    """
    EOF from the client: before a method is named, or during a CONNECT
    head, a close; after a method that gets the page, the page.
    """

    def test_beforeAnything(self) -> None:
        """
        EOF before any byte is a refusal without an answer.
        """
        for handshakeSettings in (PAGE_ONLY, CONNECT_ON):
            handshake = HttpHandshake(handshakeSettings, LOCAL)
            self.assertEqual(handshake.clientEnded(), [EOF_HANDSHAKE])
            self.assertEqual(handshake.clientEnded(), [])
            self.assertEqual(handshake.dataReceived(GET), [])

    def test_beforeAMethod(self) -> None:
        """
        EOF after bytes that only begin a method is a refusal without an
        answer.
        """
        for data in (b"G", b"GET", b"OPT", b"P"):
            for handshakeSettings in (PAGE_ONLY, CONNECT_ON):
                handshake = HttpHandshake(handshakeSettings, LOCAL)
                handshake.dataReceived(data)
                self.assertEqual(handshake.clientEnded(), [EOF_HANDSHAKE], data)

    def test_afterAMethod(self) -> None:
        """
        EOF after a method and its space, anywhere in the head, gets the
        page.
        """
        for length in range(4, len(GET)):
            for handshakeSettings in (PAGE_ONLY, CONNECT_ON):
                handshake = HttpHandshake(handshakeSettings, LOCAL)
                self.assertEqual(handshake.dataReceived(GET[:length]), [])
                self.assertEqual(handshake.clientEnded(), [pageRefusal(b"GET")])
                self.assertEqual(handshake.clientEnded(), [])

    def test_connectWithoutHttpConnect(self) -> None:
        """
        Without C{httpConnect}, EOF in a CONNECT head gets the page.
        """
        handshake = HttpHandshake(PAGE_ONLY, LOCAL)
        handshake.dataReceived(b"CONNECT 192.0.2.1:80 HTTP/1.1\r\n")
        self.assertEqual(handshake.clientEnded(), [pageRefusal(b"CONNECT")])

    def test_duringAConnectHead(self) -> None:
        """
        With C{httpConnect}, EOF anywhere in a CONNECT head is a refusal
        without an answer.
        """
        for length in range(1, len(CONNECT)):
            handshake = HttpHandshake(CONNECT_ON, LOCAL)
            self.assertEqual(handshake.dataReceived(CONNECT[:length]), [])
            self.assertEqual(handshake.clientEnded(), [EOF_REQUEST], length)
            self.assertEqual(handshake.dataReceived(CONNECT[length:]), [])
            self.assertEqual(handshake.clientEnded(), [])

    def test_afterTheRequest(self) -> None:
        """
        EOF after a CONNECT request gives nothing; its early data stays
        unconsumed.
        """
        handshake = HttpHandshake(CONNECT_ON, LOCAL)
        handshake.dataReceived(CONNECT + b"early")
        self.assertEqual(handshake.clientEnded(), [])
        self.assertEqual(handshake.unconsumed(), b"early")

    def test_whileCheckingAccepted(self) -> None:
        """
        EOF while the credentials are checked is remembered: accepted
        credentials still give the request, with its early data.
        """
        handshake = HttpHandshake(CONNECT_AUTH, LOCAL)
        handshake.dataReceived(CONNECT_ALICE + b"early")
        self.assertEqual(handshake.clientEnded(), [])
        self.assertEqual(
            handshake.credentialsChecked("alice"),
            [
                RequestReady(
                    connectRequest(credentials=(b"alice", b"secret"), user="alice")
                )
            ],
        )
        self.assertEqual(handshake.clientEnded(), [])
        self.assertEqual(handshake.unconsumed(), b"early")

    def test_whileCheckingRefused(self) -> None:
        """
        EOF while the credentials are checked, then refused credentials:
        the 407.
        """
        handshake = HttpHandshake(CONNECT_AUTH, LOCAL)
        handshake.dataReceived(CONNECT_ALICE)
        self.assertEqual(handshake.clientEnded(), [])
        [refusal] = handshake.credentialsRefused()
        self.assertEqual((refusal.data, refusal.reply), (CHALLENGE, "HTTP_407"))


class HttpReplyTests(SynchronousTestCase):
    """
    L{HttpHandshake.reply} answers a CONNECT with the HTTP status for the
    pipeline's SOCKS5 reply code.
    """

    def setUp(self) -> None:
        self.handshake = HttpHandshake(CONNECT_ON, LOCAL)
        self.assertEqual(
            self.handshake.dataReceived(CONNECT), [RequestReady(connectRequest())]
        )

    def test_success(self) -> None:
        """
        Success is C{200 Connection established}, without headers; the
        bound address is not told.
        """
        bound = Destination(IPv4Address("198.51.100.1"), 40000)
        self.assertEqual(self.handshake.reply(Socks5Reply.SUCCEEDED, bound), OK)
        self.assertEqual(self.handshake.reply(Socks5Reply.SUCCEEDED), OK)
        self.assertEqual(self.handshake.replyLabel(Socks5Reply.SUCCEEDED), "HTTP_200")

    def test_failures(self) -> None:
        """
        Each SOCKS5 failure code gets its status, no body, and a close; the
        log names the status.
        """
        for code, status in (
            (Socks5Reply.GENERAL_FAILURE, b"502 Bad Gateway"),
            (Socks5Reply.NOT_ALLOWED, b"403 Forbidden"),
            (Socks5Reply.NETWORK_UNREACHABLE, b"502 Bad Gateway"),
            (Socks5Reply.HOST_UNREACHABLE, b"502 Bad Gateway"),
            (Socks5Reply.CONNECTION_REFUSED, b"502 Bad Gateway"),
            (Socks5Reply.TTL_EXPIRED, b"504 Gateway Timeout"),
            (Socks5Reply.COMMAND_NOT_SUPPORTED, b"405 Method Not Allowed"),
            (Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED, b"400 Bad Request"),
            (TorExtendedReply.ONION_DESCRIPTOR_NOT_FOUND, b"502 Bad Gateway"),
        ):
            self.assertEqual(
                self.handshake.reply(code),
                b"HTTP/1.1 " + status + b"\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n",
                code,
            )
            self.assertEqual(
                self.handshake.replyLabel(code), "HTTP_" + status[:3].decode(), code
            )


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
        self.assertEqual(parseAuthority("192.0.2.1:80"), DESTINATION)
        self.assertEqual(
            parseAuthority("[2001:db8::1]:8080"),
            Destination(IPv6Address("2001:db8::1"), 8080),
        )

    def test_bad(self) -> None:
        """
        No port, a bad port, an unbracketed IPv6 literal, a URL or a name
        with brackets, slashes, at signs or spaces are ValueErrors.
        """
        for text in [
            "example.com",
            "example.com:",
            "example.com:x",
            "example.com:-1",
            "2001:db8::1:80",
            ":80",
            "http://example.com:80",
            "user@example.com:80",
            "exa mple.com:80",
            "[example.com]:80",
            "example.com:999999",
            "example.com:65536",
        ]:
            self.assertRaises(ValueError, parseAuthority, text)


class HttpConstantsTests(SynchronousTestCase):
    """
    The pure HTTP constants live in L{socksd.handshake.http}, unchanged.
    """

    def test_values(self) -> None:
        """
        Nine methods, their first letters, an 8 KiB head.
        """
        self.assertEqual(len(HTTP_METHODS), 9)
        self.assertTrue(all(method.endswith(b" ") for method in HTTP_METHODS))
        self.assertEqual(HTTP_FIRST_BYTES, frozenset(b"GHPCODT"))
        self.assertEqual(MAX_HTTP_REQUEST, 8192)

class HandshakePackageTests(SynchronousTestCase):
    """
    L{socksd.handshake} is free of I/O frameworks.
    """

    def test_noTwisted(self) -> None:
        """
        Importing every handshake imports neither Twisted nor zope.
        """
        code = (
            "import sys\n"
            "import socksd.handshake\n"
            "import socksd.handshake.http, socksd.handshake.socks4\n"
            "import socksd.handshake.socks5\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('twisted', 'zope'))\n"
            "print(' '.join(bad))\n"
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(socksd.__file__))
        output = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        self.assertEqual(output.strip(), "")


_terminal = (RequestReady, Refuse)


class HttpPropertyTests(SynchronousTestCase):
    """
    Random bytes never break the handshake.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from(
            [
                b"",
                b"G",
                b"GET ",
                b"CONNECT ",
                b"CONNECT example.com:80 HTTP/1.1\r\n",
                b"CONNECT 192.0.2.1:80 HTTP/1.1\r\nProxy-Authorization: Basic ",
            ]
        ),
        st.binary(max_size=600),
        st.lists(st.integers(0, 700), max_size=6),
        st.booleans(),
        st.booleans(),
        st.sampled_from([None, True, False]),
        st.booleans(),
    )
    def test_randomBytes(
        self,
        prefix: bytes,
        tail: bytes,
        cuts: list[int],
        httpConnect: bool,
        requireAuth: bool,
        accept: bool | None,
        end: bool,
    ) -> None:
        """
        Random bytes, cut anywhere, then maybe an answer to a credentials
        check and EOF, raise nothing and give lists of actions: at most one
        L{CheckCredentials}, and at most one L{RequestReady} or L{Refuse},
        last.  After a L{RequestReady}, replies can be built.
        """
        handshake = HttpHandshake(
            HandshakeSettings(requireAuth=requireAuth, httpConnect=httpConnect),
            LOCAL,
        )
        actions: list[Action] = []
        for chunk in chunked(prefix + tail, cuts):
            result = handshake.dataReceived(chunk)
            self.assertIsInstance(result, list)
            actions += result
        if end:
            actions += handshake.clientEnded()
        if accept is not None:
            result = (
                handshake.credentialsChecked("user")
                if accept
                else handshake.credentialsRefused()
            )
            self.assertIsInstance(result, list)
            actions += result
        actions += handshake.clientEnded()
        for action in actions:
            self.assertIsInstance(action, (CheckCredentials, *_terminal))
        self.assertLessEqual(
            sum(isinstance(action, CheckCredentials) for action in actions), 1
        )
        terminal = [action for action in actions if isinstance(action, _terminal)]
        self.assertLessEqual(len(terminal), 1)
        if terminal:
            self.assertIs(actions[-1], terminal[0])
        if terminal and isinstance(terminal[0], RequestReady):
            self.assertIsInstance(handshake.unconsumed(), bytes)
            self.assertEqual(handshake.reply(Socks5Reply.SUCCEEDED), OK)
        self.assertIsInstance(handshake.buffered(), int)
