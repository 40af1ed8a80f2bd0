"""
The server side of SOCKS4 and SOCKS4A: one request, one reply.

Bytes go to L{socksd.wire.socks4.Socks4ServerCodec}; the request goes to
the command table of L{Socks4Handler}.  Tor's RESOLVE (0xF0, over SOCKS4
and SOCKS4A) is served by L{socksd.server.tor}; unknown commands get 91.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any, ClassVar

from socksd.address import Destination
from socksd.errors import MalformedMessage, NotAllowed
from socksd.replies import ReplyProfile
from socksd.server.dispatch import Dispatcher
from socksd.server.tor import TorRequestHandler
from socksd.server.bind import serveBind
from socksd.wire import socks4

__all__ = ["Socks4Handler"]

_UNSPECIFIED = Destination(IPv4Address(0), 0)


class Socks4Handler(TorRequestHandler):
    """
    A SOCKS4 or SOCKS4A client, from its first byte (04) on.

    The SOCKS4 user id is the client's only credential: it becomes the
    isolation key of the request.  With an authenticator, SOCKS4 clients
    (which cannot send a password) are refused unless the configuration's
    C{socks4WithAuth} is set.
    """

    version: ClassVar[int] = 4
    commands: ClassVar[dict[int, str]] = {
        socks4.CMD_CONNECT: "connect",
        socks4.CMD_BIND: "bind",
        socks4.CMD_RESOLVE: "resolve",
    }
    bind = serveBind

    __slots__ = ("codec",)

    def __init__(self, connection: Dispatcher) -> None:
        super().__init__(connection, ReplyProfile.SOCKS4)
        self.codec = socks4.Socks4ServerCodec()
        connection.record.protocol = "socks4"

    def buildReply(self, code: int, bound: Destination | None) -> bytes:
        """See L{RequestHandler.buildReply}; an IPv6 bound address is
        reported as 0.0.0.0, which SOCKS4 clients ignore for CONNECT."""
        if bound is None or not isinstance(bound.host, IPv4Address):
            bound = _UNSPECIFIED
        return self.codec.send(socks4.Reply(int(code), bound))

    def dataReceived(self, data: bytes) -> None:
        """Parse the request; bytes after it are optimistic data."""
        if self._requested:
            self.keepEarly(data)
            return
        try:
            messages = self.codec.receiveData(data)
        except MalformedMessage as error:
            self.refuse(error, f"malformed SOCKS4 request: {error}")
            return
        if messages:
            self._received(messages[0])

    def _received(self, request: Any) -> None:
        connection = self.connection
        if request.isSocks4A:
            connection.record.protocol = "socks4a"
        self.keepEarly(self.codec.unconsumed())
        factory = connection.factory
        if factory.authenticator is not None and not factory.config.socks4WithAuth:
            self.noteRequest(request.command, request.destination)
            self.refuse(
                NotAllowed("SOCKS4 cannot authenticate"),
                "SOCKS4 refused: authentication is required",
            )
            return
        userId = request.userId
        self.dispatchRequest(
            request.command,
            request.destination,
            credentials=None,
            isolationKey=(userId,) if userId else None,
        )
