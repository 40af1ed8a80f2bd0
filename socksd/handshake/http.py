"""
An HTTP request on the SOCKS port, without I/O: HTTP CONNECT (opt-in,
L{HandshakeSettings.httpConnect}), or the "this is a SOCKS proxy" page.

L{HttpHandshake} takes a client whose first byte starts an HTTP method
(L{HTTP_FIRST_BYTES}):

  - with C{httpConnect}, C{CONNECT host:port HTTP/1.x} gets a
    L{RequestReady} for a CONNECT (command 1) to C{host:port}.  With an
    authenticator (L{HandshakeSettings.requireAuth}), the request must carry
    C{Proxy-Authorization: Basic ...} credentials, which go out in a
    L{CheckCredentials}; without them, or when they are refused, the answer
    is C{407} with C{Proxy-Authenticate: Basic realm="socksd"}.  A bad
    request line, target or header line gets C{400}; a request head longer
    than L{MAX_HTTP_REQUEST} bytes gets C{431};
  - every other HTTP method (and CONNECT without C{httpConnect}) gets a
    C{501} page that says how to use a SOCKS proxy, once the request head
    is in (at most L{MAX_HTTP_REQUEST} bytes are read);
  - first bytes that start no HTTP method are closed without an answer.

The reply to a CONNECT is an HTTP status chosen from the SOCKS5 reply code
the pipeline gives (L{STATUS_FOR_REPLY}); the log names it C{HTTP_200},
C{HTTP_403} and so on.  Bytes the client sent after the request head are
L{HttpHandshake.unconsumed}.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from enum import Enum, IntEnum
from html import escape
from typing import Any

from socksd.address import Destination, parseHost
from socksd.handshake._actions import (
    Action,
    CheckCredentials,
    HandshakeSettings,
    Refuse,
    ReplyLabel,
    Request,
    RequestReady,
)
from socksd.replies import ReplyProfile, Socks5Reply

__all__ = [
    "HttpHandshake",
    "parseAuthority",
    "STATUS_FOR_REPLY",
    "HTTP_METHODS",
    "HTTP_FIRST_BYTES",
    "MAX_HTTP_REQUEST",
]

#: The HTTP methods whose requests get the "this is a SOCKS proxy" page.
HTTP_METHODS = (
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"CONNECT ",
    b"OPTIONS ",
    b"DELETE ",
    b"PATCH ",
    b"TRACE ",
)
#: The first bytes of L{HTTP_METHODS}, for the factory's first-byte mapping.
HTTP_FIRST_BYTES = frozenset(method[0] for method in HTTP_METHODS)
#: How much of an HTTP request is read, at most, before answering.
MAX_HTTP_REQUEST = 8192

#: The HTTP status (and reason) sent for each SOCKS5 reply code.
STATUS_FOR_REPLY: dict[int, tuple[int, str]] = {
    Socks5Reply.SUCCEEDED: (200, "Connection established"),
    Socks5Reply.GENERAL_FAILURE: (502, "Bad Gateway"),
    Socks5Reply.NOT_ALLOWED: (403, "Forbidden"),
    Socks5Reply.NETWORK_UNREACHABLE: (502, "Bad Gateway"),
    Socks5Reply.HOST_UNREACHABLE: (502, "Bad Gateway"),
    Socks5Reply.CONNECTION_REFUSED: (502, "Bad Gateway"),
    Socks5Reply.TTL_EXPIRED: (504, "Gateway Timeout"),
    Socks5Reply.COMMAND_NOT_SUPPORTED: (405, "Method Not Allowed"),
    Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED: (400, "Bad Request"),
}

_CONNECT = b"CONNECT "
_CMD_CONNECT = 1
_REALM = "socksd"
_CHALLENGE = f'Proxy-Authenticate: Basic realm="{_REALM}"\r\n'
_OTHER_STATUS = (502, "Bad Gateway")

_HTTP_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>This is a SOCKS proxy, not an HTTP proxy</title></head>
<body>
<h1>This is a SOCKS proxy, not an HTTP proxy</h1>
<p>You reached socksd, a SOCKS proxy (SOCKS4, SOCKS4A and SOCKS5), with an
HTTP request.  It does not speak HTTP: configure your program to use it as a
<em>SOCKS</em> proxy instead.</p>
<ul>
<li>Firefox: Settings, Network Settings, Manual proxy configuration: put
{host} and port {port} in <em>SOCKS Host</em>, choose SOCKS v5, and tick
<em>Proxy DNS when using SOCKS v5</em>; leave <em>HTTP Proxy</em> empty.</li>
<li>Chromium and Chrome: start them with
<code>--proxy-server="socks5://{host}:{port}"</code>.</li>
<li>curl: <code>curl --socks5-hostname {host}:{port} URL</code>, or
<code>ALL_PROXY=socks5h://{host}:{port}</code>.</li>
<li>Other programs: set <code>ALL_PROXY=socks5h://{host}:{port}</code>, or look for
their SOCKS proxy setting.</li>
</ul>
</body>
</html>
"""


def parseAuthority(text: str) -> Destination:
    """
    Parse a CONNECT target, C{host:port} (an IPv6 literal in brackets).

    @raise ValueError: anything else.
    """
    host, sep, portText = text.rpartition(":")
    if not sep or not host or not portText.isdigit() or len(portText) > 5:
        raise ValueError(f"bad CONNECT target {text!r}: expected host:port")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"bad CONNECT target {text!r}: IPv6 needs brackets")
    parsed = parseHost(host)
    if isinstance(parsed, str) and (not parsed or any(c in parsed for c in "[]/@ ")):
        raise ValueError(f"bad CONNECT target host {host!r}")
    return Destination(parsed, int(portText))


def _page(method: bytes, local: tuple[str, int] | None) -> bytes:
    """
    The 501 response to an HTTP C{method} request on the SOCKS port.

    @param local: the listening address, C{(host, port)}, that the page
        tells the client to use; L{None} when unknown.
    """
    host, port = local if local is not None else (None, None)
    if isinstance(host, str) and isinstance(port, int):
        if ":" in host:
            host = f"[{host}]"
        if host in ("0.0.0.0", "[::]"):
            host = "this host's address"
        shownHost, shownPort = escape(host), str(port)
    else:
        shownHost, shownPort = "this proxy's address", "its port"
    body = _HTTP_PAGE.format(host=shownHost, port=shownPort).encode("utf-8")
    head = (
        "HTTP/1.0 501 Not Implemented\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")
    return head if method == b"HEAD" else head + body


def _response(status: int, reason: str, extra: str = "") -> bytes:
    """An HTTP/1.1 response without a body; a failure closes."""
    if status == 200:
        return f"HTTP/1.1 200 {reason}\r\n\r\n".encode("ascii")
    return (
        f"HTTP/1.1 {status} {reason}\r\n{extra}"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


def _basicCredentials(header: str | None) -> tuple[bytes, bytes] | None:
    """The username and password of a C{Basic} authorization, or L{None}."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    username, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return username, password


def _headEnd(buffer: bytearray) -> tuple[int, int] | None:
    """
    Where the request head in C{buffer} ends: the index of its first
    C{\\r\\n\\r\\n} or C{\\n\\n}, and that mark's length; L{None} while
    neither has arrived.
    """
    ends = [
        (i, len(mark))
        for mark in (b"\r\n\r\n", b"\n\n")
        if (i := buffer.find(mark)) >= 0
    ]
    return min(ends) if ends else None


class _Stage(Enum):
    #: The first bytes have not named a method yet.
    START = "start"
    #: Reading a CONNECT request head (with C{httpConnect}).
    CONNECT = "connect"
    #: Reading another request's head, for the page.
    PAGE = "page"
    CHECKING = "checking credentials"
    #: The request was given (L{RequestReady}): later bytes are early data.
    READY = "ready"
    #: The client was refused (L{Refuse}).
    DONE = "done"


class HttpHandshake:
    """
    An HTTP client on the SOCKS port, from its first byte on; see the
    module docstring and L{socksd.handshake.ServerHandshake}.

    @ivar protocol: L{None}, then C{"http"} once the first bytes name an
        HTTP method (C{CONNECT } in full, with C{httpConnect}).
    @ivar user: the avatar the credentials were checked as, or L{None}.
    """

    version = None
    #: See L{ServerHandshake.labelsReplies}.
    labelsReplies = True
    profile = ReplyProfile.SOCKS5

    __slots__ = (
        "protocol",
        "user",
        "_settings",
        "_local",
        "_stage",
        "_buffer",
        "_method",
        "_early",
        "_destination",
        "_checking",
        "_ended",
    )

    def __init__(
        self, settings: HandshakeSettings, local: tuple[str, int] | None = None
    ) -> None:
        """
        @param local: the listening address, C{(host, port)}, for the page;
            L{None} when unknown.
        """
        self._settings = settings
        self._local = local
        self.protocol: str | None = None
        self.user: Any = None
        self._stage = _Stage.START
        #: The request head received so far.
        self._buffer = bytearray()
        #: The method of a request that gets the page (without its space).
        self._method: bytes | None = None
        #: Bytes after the request head, not yet taken.
        self._early = bytearray()
        self._destination: Destination | None = None
        #: The credentials being checked.
        self._checking: tuple[bytes, bytes] = (b"", b"")
        self._ended = False

    # ServerHandshake

    def dataReceived(self, data: bytes) -> list[Action]:
        """See L{ServerHandshake.dataReceived}."""
        stage = self._stage
        if stage is _Stage.READY or stage is _Stage.CHECKING:
            self._early += data
            return []
        if stage is _Stage.DONE or not data:
            return []
        if stage is _Stage.START:
            if self._settings.httpConnect and data[0] == _CONNECT[0]:
                self._stage = _Stage.CONNECT
                return self._connectData(data)
            self._stage = _Stage.PAGE
            return self._pageData(data)
        if stage is _Stage.CONNECT:
            return self._connectData(data)
        return self._pageData(data)

    def credentialsChecked(self, user: Any) -> list[Action]:
        """
        See L{ServerHandshake.credentialsChecked}: the request is ready,
        even when the client has sent EOF since (the pipeline delivers the
        early data, then the EOF).
        """
        if self._stage is not _Stage.CHECKING:
            return []
        self._stage = _Stage.READY
        self.user = user
        return [RequestReady(self._request(self._checking, user))]

    def credentialsRefused(self) -> list[Action]:
        """See L{ServerHandshake.credentialsRefused}: 407."""
        if self._stage is not _Stage.CHECKING:
            return []
        credentials = self._checking
        shown = credentials[0].decode("utf-8", "backslashreplace")
        return [
            self._fail(
                407,
                "Proxy Authentication Required",
                f"authentication failed for user {shown!r}",
                _CHALLENGE,
                self._request(credentials),
            )
        ]

    def clientEnded(self) -> list[Action]:
        """
        See L{ServerHandshake.clientEnded}: while credentials are checked
        the EOF is remembered; before a CONNECT head is complete, a close
        without an answer; a request that gets the page gets it now, if its
        first bytes named a method.
        """
        stage = self._stage
        if stage is _Stage.READY or stage is _Stage.DONE:
            return []
        if stage is _Stage.CHECKING:
            # The request is in: accepted credentials still give it, and
            # the connection, which saw the EOF, delivers it after the
            # early data.
            self._ended = True
            return []
        if stage is _Stage.CONNECT:
            ended = Refuse(b"", "client sent EOF during the HTTP request")
            return [self._refuse(ended)]
        if self._method is not None:
            return [self._answerPage()]
        return [self._refuse(Refuse(b"", "client sent EOF during the handshake"))]

    def buffered(self) -> int:
        """
        See L{ServerHandshake.buffered}: the request head received so far,
        and the bytes after it not yet taken.
        """
        return len(self._buffer) + len(self._early)

    def unconsumed(self) -> bytes:
        """
        See L{ServerHandshake.unconsumed}: the bytes after the request head
        (none after a refusal).
        """
        data = bytes(self._early)
        del self._early[:]
        return data

    def reply(
        self,
        code: IntEnum,
        bound: Destination | None = None,
        options: tuple[Any, ...] = (),
    ) -> bytes:
        """
        See L{ServerHandshake.reply}: the HTTP response for SOCKS5 reply
        C{code} (L{STATUS_FOR_REPLY}); C{bound} is not told.
        """
        status, reason = STATUS_FOR_REPLY.get(int(code), _OTHER_STATUS)
        return _response(status, reason)

    def replyLabel(self, code: IntEnum) -> ReplyLabel:
        """See L{ServerHandshake.replyLabel}: C{HTTP_200}, C{HTTP_502} ..."""
        status, _ = STATUS_FOR_REPLY.get(int(code), _OTHER_STATUS)
        return f"HTTP_{status}"

    # The page

    def _pageData(self, data: bytes) -> list[Action]:
        """Read a request head (at most L{MAX_HTTP_REQUEST} bytes) for the page."""
        buffer = self._buffer
        buffer += data[: MAX_HTTP_REQUEST - len(buffer)]
        if self._method is None:
            for method in HTTP_METHODS:
                if buffer.startswith(method):
                    self._method = method[:-1]
                    self.protocol = "http"
                    break
            else:
                head = bytes(buffer)
                if any(method.startswith(head) for method in HTTP_METHODS):
                    return []
                shown = head[:8].hex(" ")
                return [self._refuse(Refuse(b"", f"unknown first bytes {shown}"))]
        if (
            b"\r\n\r\n" in buffer
            or b"\n\n" in buffer
            or len(buffer) >= MAX_HTTP_REQUEST
        ):
            return [self._answerPage()]
        return []

    def _answerPage(self) -> Refuse:
        method = self._method
        assert method is not None
        return self._refuse(
            Refuse(
                _page(method, self._local),
                f"HTTP {method.decode('ascii')} request on the SOCKS port",
                "HTTP_501",
            )
        )

    # CONNECT

    def _connectData(self, data: bytes) -> list[Action]:
        """Read a CONNECT request head; bytes after it are early data."""
        buffer = self._buffer
        buffer += data
        head = bytes(buffer[: len(_CONNECT)])
        if not _CONNECT.startswith(head):
            # Not a CONNECT: the page, or unknown first bytes.
            self._stage = _Stage.PAGE
            pending = bytes(buffer)
            del buffer[:]
            return self._pageData(pending)
        if len(head) == len(_CONNECT):
            self.protocol = "http"
        end = _headEnd(buffer)
        if end is None:
            if len(buffer) > MAX_HTTP_REQUEST:
                return [self._headTooLong()]
            return []
        index, markLength = end
        if index + markLength > MAX_HTTP_REQUEST:
            return [self._headTooLong()]
        requestHead = bytes(buffer[:index])
        self._early += buffer[index + markLength :]
        del buffer[:]
        return [self._connectRequest(requestHead)]

    def _headTooLong(self) -> Refuse:
        return self._fail(
            431, "Request Header Fields Too Large", "request head too long"
        )

    def _connectRequest(self, requestHead: bytes) -> Action:
        """The action for a complete CONNECT request head."""
        try:
            text = requestHead.decode("latin-1")
            lines = text.replace("\r\n", "\n").split("\n")
            method, target, httpVersion = lines[0].split(" ")
            if method != "CONNECT" or not httpVersion.startswith("HTTP/1."):
                raise ValueError(f"bad request line {lines[0]!r}")
            destination = parseAuthority(target)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep or not name.strip() or name != name.strip():
                    raise ValueError(f"bad header line {line!r}")
                headers[name.strip().lower()] = value.strip()
        except ValueError as error:
            return self._fail(400, "Bad Request", str(error))
        self._destination = destination
        if not self._settings.requireAuth:
            # As before the redesign: without an authenticator, credentials
            # are not looked at, and do not isolate.
            self._stage = _Stage.READY
            return RequestReady(self._request(None))
        credentials = _basicCredentials(headers.get("proxy-authorization"))
        if credentials is None:
            return self._fail(
                407,
                "Proxy Authentication Required",
                "no Basic proxy credentials",
                _CHALLENGE,
                self._request(None),
            )
        self._stage = _Stage.CHECKING
        self._checking = credentials
        return CheckCredentials(credentials[0], credentials[1])

    def _request(
        self, credentials: tuple[bytes, bytes] | None, user: Any = None
    ) -> Request:
        """The CONNECT request; its credentials are its isolation."""
        destination = self._destination
        assert destination is not None
        return Request(
            0,
            "http",
            _CMD_CONNECT,
            destination,
            self.profile,
            user,
            credentials,
            credentials,
        )

    def _fail(
        self,
        status: int,
        reason: str,
        why: str,
        extra: str = "",
        request: Request | None = None,
    ) -> Refuse:
        """Refuse a CONNECT request with an HTTP error status."""
        self.protocol = "http"
        return self._refuse(
            Refuse(
                _response(status, reason, extra),
                f"HTTP CONNECT refused: {why}",
                f"HTTP_{status}",
                request,
            )
        )

    def _refuse(self, refusal: Refuse) -> Refuse:
        """Give C{refusal}: the handshake is over, and keeps no bytes."""
        self._stage = _Stage.DONE
        del self._buffer[:]
        del self._early[:]
        return refusal
