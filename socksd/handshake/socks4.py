"""
The server side of a SOCKS4 or SOCKS4A handshake, without I/O.

A SOCKS4 handshake is one request (L{socksd.wire.socks4}) and one reply.
L{Socks4Handshake} parses the request and gives a L{RequestReady}; the user
id is the client's only credential, so it becomes the request's isolation
credentials C{(userId,)} (none when it is empty).  SOCKS4 clients cannot
send a password: with an authenticator (L{HandshakeSettings.requireAuth})
they are refused unless L{HandshakeSettings.socks4WithAuth} is set.

A malformed request is refused with the reply code L{socksd.replies.replyFor}
gives (91, REJECTED).
"""

from __future__ import annotations

from enum import IntEnum
from ipaddress import IPv4Address
from typing import Any

from socksd.address import Destination
from socksd.errors import MalformedMessage, NotAllowed
from socksd.handshake._actions import (
    Action,
    HandshakeSettings,
    Refuse,
    ReplyLabel,
    Request,
    RequestReady,
)
from socksd.replies import ReplyProfile, replyFor
from socksd.wire import socks4

__all__ = ["Socks4Handshake"]

_UNSPECIFIED = Destination(IPv4Address(0), 0)


class Socks4Handshake:
    """
    A SOCKS4 or SOCKS4A client's handshake, from its first byte (04) on;
    see the module docstring and L{socksd.handshake.ServerHandshake}.

    @ivar protocol: C{"socks4"}, or C{"socks4a"} once a SOCKS4A request (one
        naming its destination by domain) is parsed.
    @ivar codec: the L{socks4.Socks4ServerCodec}.
    """

    version = 4
    #: See L{ServerHandshake.labelsReplies}.
    labelsReplies = False
    profile = ReplyProfile.SOCKS4

    __slots__ = ("protocol", "codec", "_settings", "_done", "_refused")

    def __init__(self, settings: HandshakeSettings) -> None:
        self._settings = settings
        self.protocol = "socks4"
        self.codec = socks4.Socks4ServerCodec()
        #: C{True} once a L{RequestReady} or L{Refuse} was given.
        self._done = False
        #: C{True} once a L{Refuse} was given.
        self._refused = False

    # ServerHandshake

    def dataReceived(self, data: bytes) -> list[Action]:
        """
        See L{ServerHandshake.dataReceived}: parse the request.  Bytes after
        it (in this call or later ones) are L{unconsumed}.
        """
        codec = self.codec
        if self._refused:
            return []
        try:
            messages = codec.receiveData(data)
        except MalformedMessage as error:
            self._done = self._refused = True
            code = replyFor(error, self.profile)
            return [
                Refuse(self.reply(code), f"malformed SOCKS4 request: {error}", code)
            ]
        if not messages:
            return []
        return [self._received(messages[0])]

    def credentialsChecked(self, user: Any) -> list[Action]:
        """See L{ServerHandshake.credentialsChecked}: never asked for."""
        return []

    def credentialsRefused(self) -> list[Action]:
        """See L{ServerHandshake.credentialsRefused}: never asked for."""
        return []

    def clientEnded(self) -> list[Action]:
        """
        See L{ServerHandshake.clientEnded}: before the request, a refusal
        without a reply; after it, nothing (the pipeline delivers the EOF).
        """
        if self._done:
            return []
        self._done = self._refused = True
        return [Refuse(b"", "client sent EOF during the handshake")]

    def buffered(self) -> int:
        """
        See L{ServerHandshake.buffered}: the request received so far, or
        the bytes after it not yet taken; none after a refusal.
        """
        return 0 if self._refused else self.codec.buffered()

    def unconsumed(self) -> bytes:
        """
        See L{ServerHandshake.unconsumed}: the bytes after the request
        (none after a refusal).
        """
        if self._refused:
            return b""
        return self.codec.unconsumed()

    def reply(
        self,
        code: IntEnum,
        bound: Destination | None = None,
        options: tuple[Any, ...] = (),
    ) -> bytes:
        """
        See L{ServerHandshake.reply}.  A bound address SOCKS4 cannot carry
        (IPv6), or none, is reported as 0.0.0.0:0, which SOCKS4 clients
        ignore for CONNECT.
        """
        if bound is None or not isinstance(bound.host, IPv4Address):
            bound = _UNSPECIFIED
        return self.codec.send(socks4.Reply(int(code), bound))

    def replyLabel(self, code: IntEnum) -> ReplyLabel:
        """See L{ServerHandshake.replyLabel}: the code itself."""
        return code

    # Steps

    def _received(self, message: socks4.Request) -> Action:
        """The action for a parsed request."""
        self._done = True
        if message.isSocks4A:
            self.protocol = "socks4a"
        userId = message.userId
        request = Request(
            4,
            self.protocol,
            message.command,
            message.destination,
            self.profile,
            credentials=None,
            isolation=(userId,) if userId else None,
        )
        settings = self._settings
        if settings.requireAuth and not settings.socks4WithAuth:
            self._refused = True
            code = replyFor(NotAllowed("SOCKS4 cannot authenticate"), self.profile)
            return Refuse(
                self.reply(code),
                "SOCKS4 refused: authentication is required",
                code,
                request,
            )
        return RequestReady(request)
