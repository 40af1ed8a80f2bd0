"""
SOCKS4 and SOCKS4A client endpoints, and Tor's RESOLVE (0xF0) over SOCKS4A::

    proxy = TCP4ClientEndpoint(reactor, "127.0.0.1", 1080)
    endpoint = SOCKS4AClientEndpoint(proxy, "example.com", 80, userId=b"me")
    d = endpoint.connect(factory)

An IPv4 literal is sent as plain SOCKS4; a name as SOCKS4A (the proxy
resolves it).  SOCKS4 cannot carry IPv6.  A refusal becomes, through
L{socksd.replies.errorForReply}, L{socksd.errors.NotAllowed} (91),
L{socksd.errors.IdentdUnreachable} (92) or L{socksd.errors.UserIdMismatch}
(93), with C{replyCode} set.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from zope.interface import implementer

from socksd.address import Destination, Host
from socksd.client._protocol import (
    HandshakeResult,
    asBytes,
    destinationFor,
    IClientHandshake,
    connectThrough,
    queryThrough,
)
from socksd.replies import ReplyProfile, errorForReply
from socksd.wire import socks4

__all__ = ["SOCKS4AClientEndpoint", "Socks4Handshake", "socks4aResolve"]


@implementer(IClientHandshake)
class Socks4Handshake:
    """
    One SOCKS4/4A client handshake: a request and a reply, over a
    L{socks4.Socks4ClientCodec}.
    """

    name = "SOCKS4"

    def __init__(self, request: socks4.Request) -> None:
        """
        @param request: the request to send.
        """
        self._request = request
        self._codec = socks4.Socks4ClientCodec()

    def start(self) -> bytes:
        """The request."""
        return self._codec.send(self._request)

    def dataReceived(self, data: bytes) -> tuple[bytes, HandshakeResult | None]:
        """See L{IClientHandshake.dataReceived}."""
        for reply in self._codec.receiveData(data):
            if reply.code != socks4.REPLY_GRANTED:
                raise errorForReply(reply.code, ReplyProfile.SOCKS4)
            return b"", HandshakeResult(reply.destination, self._codec.unconsumed())
        return b"", None


def _request(
    command: int, destination: Destination, userId: str | bytes
) -> socks4.Request:
    if isinstance(destination.host, IPv6Address):
        raise ValueError(f"SOCKS4 cannot carry the IPv6 destination {destination.host}")
    return socks4.Request(command, destination, asBytes(userId, "userId"))


@implementer(IStreamClientEndpoint)
class SOCKS4AClientEndpoint:
    """
    Connect to a destination through a SOCKS4 or SOCKS4A proxy (CONNECT).

    As with L{socksd.client.SOCKS5ClientEndpoint}, the application's
    transport has the destination as C{getPeer()} (an C{IPv4Address} or a
    C{HostnameAddress}) and the local end of the proxy connection as
    C{getHost()}.

    @ivar proxyEndpoint: how the proxy is reached.
    @ivar destination: where connections go.
    @ivar userId: the USERID field sent.
    """

    def __init__(
        self,
        proxyEndpoint: IStreamClientEndpoint,
        host: Host | bytes,
        port: int,
        *,
        userId: str | bytes = b"",
    ) -> None:
        """
        @param proxyEndpoint: reaches the proxy.
        @param host: a name (SOCKS4A) or an IPv4 literal (SOCKS4).
        @param port: the destination port.
        @param userId: the USERID (up to 255 bytes, no NUL).
        @raise ValueError: an IPv6 destination, a bad port, name or user id.
        """
        self.proxyEndpoint = proxyEndpoint
        self.destination = destinationFor(host, port)
        self._request = _request(socks4.CMD_CONNECT, self.destination, userId)
        self.userId = self._request.userId

    def __repr__(self) -> str:
        return f"<SOCKS4AClientEndpoint {self.destination} via {self.proxyEndpoint!r}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        """
        Connect through the proxy.

        @return: as L{socksd.client.SOCKS5ClientEndpoint.connect}.
        """
        return connectThrough(
            self.proxyEndpoint,
            lambda: Socks4Handshake(self._request),
            self.destination,
            protocolFactory,
        )


def socks4aResolve(
    proxyEndpoint: IStreamClientEndpoint, name: str, *, userId: str | bytes = b""
) -> Deferred:
    """
    Ask a SOCKS4A proxy (Tor) for the IPv4 address of C{name}: Tor's RESOLVE
    (command 0xF0) over SOCKS4A.

    @return: a Deferred firing with an C{ipaddress.IPv4Address}, or failing
        as L{SOCKS4AClientEndpoint.connect} does.
    """
    request = _request(socks4.CMD_RESOLVE, Destination(name, 0), userId)

    def address(result: HandshakeResult) -> IPv4Address:
        return result.bound.host

    return queryThrough(proxyEndpoint, lambda: Socks4Handshake(request)).addCallback(
        address
    )
