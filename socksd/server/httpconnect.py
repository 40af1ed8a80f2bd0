"""
HTTP CONNECT on the SOCKS port (opt-in: L{ServerConfig.httpConnect}, the
C{--http-connect} option).

A client that starts with C{CONNECT host:port HTTP/1.1} gets an HTTP proxy
tunnel: the same policy, upstream, isolation and log event as a SOCKS
CONNECT, answered C{200 Connection established} and then relayed.  With an
authenticator, the request must carry C{Proxy-Authorization: Basic ...}
credentials the authenticator accepts; otherwise the answer is C{407} with
C{Proxy-Authenticate: Basic realm="socksd"}.  The request line and headers
may take at most L{MAX_HTTP_REQUEST} bytes (C{431} beyond).  Any other
method goes to L{HttpResistance}, the "this is a SOCKS proxy" page.

Failures are answered with an HTTP status chosen from the SOCKS5 reply code
L{socksd.replies.replyFor} gives (L{STATUS_FOR_REPLY}); the log event's
C{reply} is C{HTTP_200}, C{HTTP_403} and so on.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination, parseHost
from socksd.errors import AuthenticationFailed
from socksd.replies import ReplyProfile, Socks5Reply
from socksd.server.dispatch import (
    MAX_HTTP_REQUEST,
    Dispatcher,
    HttpResistance,
    RequestHandler,
)

__all__ = ["HttpConnectHandler", "STATUS_FOR_REPLY", "parseAuthority"]

log = Logger()

_CONNECT = b"CONNECT "
_CMD_CONNECT = 1
_REALM = "socksd"

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


def _response(status: int, reason: str, extra: str = "") -> bytes:
    if status == 200:
        return f"HTTP/1.1 200 {reason}\r\n\r\n".encode("ascii")
    return (
        f"HTTP/1.1 {status} {reason}\r\n{extra}"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


class HttpConnectHandler(RequestHandler):
    """
    An HTTP client on the SOCKS port, from its first byte (C{C}) on; see
    the module docstring.
    """

    version: ClassVar[int] = 0
    commands: ClassVar[dict[int, str]] = {_CMD_CONNECT: "connect"}

    __slots__ = ("_buffer", "_checking", "_headerDone")

    def __init__(self, connection: Dispatcher) -> None:
        super().__init__(connection, ReplyProfile.SOCKS5)
        self._buffer = bytearray()
        self._checking: Deferred[Any] | None = None
        self._headerDone = False
        connection.record.version = None

    def buildReply(self, code: int, bound: Destination | None) -> bytes:
        """The HTTP response for SOCKS5 reply C{code} (L{STATUS_FOR_REPLY})."""
        status, reason = STATUS_FOR_REPLY.get(int(code), (502, "Bad Gateway"))
        self.connection.record.reply = f"HTTP_{status}"
        return _response(status, reason)

    def dataReceived(self, data: bytes) -> None:
        """Read the request head; bytes after it are early data."""
        if self._headerDone:
            self.keepEarly(data)
            return
        buffer = self._buffer
        buffer += data
        head = bytes(buffer[: len(_CONNECT)])
        if not _CONNECT.startswith(head):
            self._resist()
            return
        if len(head) == len(_CONNECT):
            self.connection.record.protocol = "http"
        ends = [
            (i, len(mark))
            for mark in (b"\r\n\r\n", b"\n\n")
            if (i := buffer.find(mark)) >= 0
        ]
        if not ends:
            if len(buffer) > MAX_HTTP_REQUEST:
                self._fail(
                    431, "Request Header Fields Too Large", "request head too long"
                )
            return
        end, markLength = min(ends)
        if end + markLength > MAX_HTTP_REQUEST:
            self._fail(431, "Request Header Fields Too Large", "request head too long")
            return
        self._headerDone = True
        requestHead = bytes(buffer[:end])
        early = bytes(buffer[end + markLength :])
        self._buffer = bytearray()
        self.keepEarly(early)
        self._request(requestHead)

    def _resist(self) -> None:
        """Not a CONNECT: the "this is a SOCKS proxy" page."""
        resistance = HttpResistance(self.connection)
        self.connection.handler = resistance
        resistance.dataReceived(bytes(self._buffer))

    def _fail(self, status: int, reason: str, why: str, extra: str = "") -> None:
        connection = self.connection
        connection.record.protocol = "http"
        connection.record.reply = f"HTTP_{status}"
        self._early = None
        connection.finish(
            f"HTTP CONNECT refused: {why}", _response(status, reason, extra)
        )

    def _request(self, requestHead: bytes) -> None:
        connection = self.connection
        connection.record.protocol = "http"
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
            self._fail(400, "Bad Request", str(error))
            return
        authenticator = connection.factory.authenticator
        if authenticator is None:
            self._dispatch(destination, None)
            return
        credentials = _basicCredentials(headers.get("proxy-authorization"))
        if credentials is None:
            connection.record.destination = destination
            connection.record.commandCode = _CMD_CONNECT
            self._fail(
                407,
                "Proxy Authentication Required",
                "no Basic proxy credentials",
                f'Proxy-Authenticate: Basic realm="{_REALM}"\r\n',
            )
            return
        username, password = credentials
        checking = self.checkLogin(username, password)
        self._checking = checking
        checking.addCallbacks(
            self._authenticated,
            self._refused,
            callbackArgs=(destination, credentials),
            errbackArgs=(destination, username),
        )
        checking.addErrback(self._authenticationBug)

    def _authenticated(
        self, avatar: Any, destination: Destination, credentials: tuple[bytes, bytes]
    ) -> None:
        self._checking = None
        connection = self.connection
        if not connection.connected or connection.closing:
            return
        connection.record.user = avatar
        self._dispatch(destination, credentials)

    def _refused(
        self, failure: Failure, destination: Destination, username: bytes
    ) -> None:
        self._checking = None
        connection = self.connection
        if not connection.connected or connection.closing:
            return
        if not failure.check(AuthenticationFailed):
            log.failure("checking HTTP proxy credentials failed", failure)
        connection.record.destination = destination
        connection.record.commandCode = _CMD_CONNECT
        shown = username.decode("utf-8", "backslashreplace")
        self._fail(
            407,
            "Proxy Authentication Required",
            f"authentication failed for user {shown!r}",
            f'Proxy-Authenticate: Basic realm="{_REALM}"\r\n',
        )

    def _authenticationBug(self, failure: Failure) -> None:
        log.failure("handling the result of an authentication failed", failure)
        self.connection.abort("internal error: handling an authentication failed")

    def _dispatch(
        self, destination: Destination, credentials: tuple[bytes, bytes] | None
    ) -> None:
        isolationKey: Any = credentials
        try:
            from socksd.server.tor import isolationKeyFor
        except ImportError:
            pass
        else:
            connection = self.connection
            isolationKey = isolationKeyFor(
                connection.factory.config,
                connection.record.client,
                credentials,
                destination,
            )
        self.dispatchRequest(
            _CMD_CONNECT,
            destination,
            credentials=credentials,
            isolationKey=isolationKey,
        )

    def readConnectionLost(self) -> None:
        """
        EOF from the client: after the request head, remember it (the
        tunnel delivers early data first); before it, close.
        """
        if self._headerDone:
            self._clientEnded = True
        else:
            self.connection.finish("client sent EOF during the HTTP request")

    def connectionLost(self, reason: Failure) -> None:
        """Stop checking credentials, or connecting, for a client that left."""
        checking, self._checking = self._checking, None
        if checking is not None:
            self.connection.record.setReason("client closed during the authentication")
            checking.cancel()
            return
        super().connectionLost(reason)


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
