"""
An HTTP CONNECT client endpoint: a tunnel through an HTTP proxy (RFC 9110
section 9.3.6), the way C{http://} and C{https://} proxy URLs chain::

    proxy = TCP4ClientEndpoint(reactor, "192.0.2.8", 3128)
    endpoint = HTTPConnectClientEndpoint(proxy, "example.com", 443,
                                         username="alice", password="s3cret")
    d = endpoint.connect(factory)

The request is C{CONNECT host:port HTTP/1.1} with a C{Host} header and,
with credentials, C{Proxy-Authorization: Basic}.  A 2xx status opens the
tunnel; bytes after the response head are the tunnel's first bytes.  A
refusal is a typed error with the status as C{replyCode}: 407
L{socksd.errors.AuthenticationFailed} (without C{replyCode}: the proxy
itself could not be used), 403 L{socksd.errors.NotAllowed}, 504
L{socksd.errors.TTLExpired}, 502 and 503 L{socksd.errors.HostUnreachable},
others L{socksd.errors.GeneralFailure}.  For an C{https://} proxy, give a
TLS endpoint (C{wrapClientTLS}) as C{proxyEndpoint}.
"""

from __future__ import annotations

import re
from base64 import b64encode

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from zope.interface import implementer

from socksd.address import Destination, Host
from socksd.client._protocol import (
    HandshakeResult,
    IClientHandshake,
    asBytes,
    connectThrough,
    destinationFor,
)
from socksd.errors import (
    AuthenticationFailed,
    GeneralFailure,
    HostUnreachable,
    MalformedMessage,
    NotAllowed,
    TTLExpired,
)

__all__ = ["HTTPConnectClientEndpoint", "HttpConnectHandshake", "MAX_RESPONSE_HEAD"]

#: The longest response head read from a proxy.
MAX_RESPONSE_HEAD = 16384

_STATUS = re.compile(rb"^HTTP/1\.[01] ([0-9]{3})(?: ([^\r\n]*))?$")

_ERRORS = {
    403: NotAllowed,
    502: HostUnreachable,
    503: HostUnreachable,
    504: TTLExpired,
}


def authority(destination: Destination) -> bytes:
    """C{host:port} of a CONNECT request (IPv6 in brackets)."""
    host = destination.hostText()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    try:
        encoded = host.encode("ascii")
    except UnicodeEncodeError:
        encoded = host.encode("idna")
    return encoded + b":" + str(destination.port).encode("ascii")


@implementer(IClientHandshake)
class HttpConnectHandshake:
    """One HTTP CONNECT request and its response head, without I/O."""

    name = "HTTP CONNECT"

    def __init__(
        self,
        destination: Destination,
        username: bytes | None = None,
        password: bytes | None = None,
    ) -> None:
        self._destination = destination
        self._credentials = None
        if username is not None or password is not None:
            self._credentials = (username or b"") + b":" + (password or b"")
        self._buffer = b""

    def start(self) -> bytes:
        """The request."""
        target = authority(self._destination)
        lines = [b"CONNECT " + target + b" HTTP/1.1", b"Host: " + target]
        if self._credentials is not None:
            lines.append(b"Proxy-Authorization: Basic " + b64encode(self._credentials))
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def dataReceived(self, data: bytes) -> tuple[bytes, HandshakeResult | None]:
        """See L{IClientHandshake.dataReceived}."""
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end == -1:
            if len(self._buffer) > MAX_RESPONSE_HEAD:
                raise MalformedMessage("the proxy's response head is too long")
            return b"", None
        head, leftover = self._buffer[:end], self._buffer[end + 4 :]
        statusLine = head.split(b"\r\n", 1)[0]
        match = _STATUS.match(statusLine)
        if match is None:
            raise MalformedMessage(
                f"not an HTTP response: {statusLine[:80]!r}"
            )
        status = int(match.group(1))
        reason = (match.group(2) or b"").decode("latin-1")
        if 200 <= status < 300:
            return b"", HandshakeResult(Destination("0.0.0.0", 0), leftover)
        message = f"the HTTP proxy answered {status} {reason}".rstrip()
        if status == 407:
            raise AuthenticationFailed(message)
        raise _ERRORS.get(status, GeneralFailure)(message, status)


@implementer(IStreamClientEndpoint)
class HTTPConnectClientEndpoint:
    """
    Connect to a destination through an HTTP proxy's CONNECT method.

    As with L{socksd.client.SOCKS5ClientEndpoint}, the application's
    transport has the destination as C{getPeer()}.

    @ivar proxyEndpoint: how the proxy is reached (TCP; TLS for https).
    @ivar destination: where connections go.
    """

    def __init__(
        self,
        proxyEndpoint: IStreamClientEndpoint,
        host: Host | bytes,
        port: int,
        *,
        username: str | bytes | None = None,
        password: str | bytes | None = None,
    ) -> None:
        """
        @param proxyEndpoint: reaches the proxy.
        @param host: a name (the proxy resolves it) or an address.
        @param port: the destination port.
        @param username: for C{Proxy-Authorization: Basic}, with C{password}.
        @raise ValueError: a bad destination.
        """
        self.proxyEndpoint = proxyEndpoint
        self.destination = destinationFor(host, port)
        self._username = None if username is None else asBytes(username, "username")
        self._password = None if password is None else asBytes(password, "password")
        for value in (self._username, self._password):
            if value is not None and (b"\r" in value or b"\n" in value):
                raise ValueError("credentials cannot hold line breaks")

    def __repr__(self) -> str:
        return f"<HTTPConnectClientEndpoint {self.destination} via {self.proxyEndpoint!r}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        """
        Connect through the proxy.

        @return: as L{socksd.client.SOCKS5ClientEndpoint.connect}.
        """
        return connectThrough(
            self.proxyEndpoint,
            lambda: HttpConnectHandshake(self.destination, self._username, self._password),
            self.destination,
            protocolFactory,
        )
