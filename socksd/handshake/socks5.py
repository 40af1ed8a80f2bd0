"""
The server side of a SOCKS5 handshake (RFC 1928, RFC 1929, Tor's rules and
proposal 229), without I/O.

L{Socks5Handshake} takes the client's bytes through three steps:

  1. method selection: L{socks5Methods}, in the server's order of
     preference, against the client's offer.  A client that offers
     proposal 229's 0x97 gets the C{SOCKS5_PROP229} reply profile;
  2. authentication, for method 02 or 0x97: with an authenticator
     (L{HandshakeSettings.requireAuth}) the username and password (proposal
     229's USERNAME and PASSWD) go out in a L{CheckCredentials}; without
     one, any credentials are accepted and only isolate (Tor's leniency),
     as are RFC 1929 credentials sent after method 00;
  3. the request: a L{RequestReady}.

A malformed message is refused with the answer of the step it broke (method
FF, authentication status 01, or the reply code L{socksd.replies.replyFor}
gives, 08 for an unknown address type).
"""

from __future__ import annotations

from enum import Enum, IntEnum
from ipaddress import IPv4Address
from typing import Any

from socksd.address import Destination
from socksd.errors import MalformedMessage
from socksd.handshake._actions import (
    Action,
    CheckCredentials,
    HandshakeSettings,
    Refuse,
    ReplyLabel,
    Request,
    RequestReady,
    Send,
)
from socksd.replies import ReplyProfile, replyFor
from socksd.wire import socks5

__all__ = [
    "Socks5Handshake",
    "socks5Methods",
    "extendedCredentials",
    "KEY_USERNAME",
    "KEY_PASSWD",
    "MAX_MESSAGE",
]

#: Proposal 229's key for the username.
KEY_USERNAME = b"USERNAME"
#: Proposal 229's key for the password.
KEY_PASSWD = b"PASSWD"
#: The longest SOCKS5 handshake message but proposal 229's (an RFC 1929
#: request).
MAX_MESSAGE = 513

_UNSPECIFIED = Destination(IPv4Address(0), 0)
_AUTH_FAILURE = 1


def socks5Methods(hasAuthenticator: bool, preferNoAuth: bool) -> tuple[int, ...]:
    """
    The SOCKS5 methods a server takes, best first.

    With an authenticator: proposal 229's 0x97 (USERNAME and PASSWD are
    checked), then 02.  Without one, every method is for isolation only:
    0x97, then 02 (as Tor, so that the client's credentials can isolate its
    streams), then 00; with C{preferNoAuth} (Tor's C{PreferSOCKSNoAuth}) 00
    comes first.
    """
    if hasAuthenticator:
        return (socks5.METHOD_TOR_EXTENDED, socks5.METHOD_USERNAME_PASSWORD)
    if preferNoAuth:
        return (
            socks5.METHOD_NO_AUTH,
            socks5.METHOD_TOR_EXTENDED,
            socks5.METHOD_USERNAME_PASSWORD,
        )
    return (
        socks5.METHOD_TOR_EXTENDED,
        socks5.METHOD_USERNAME_PASSWORD,
        socks5.METHOD_NO_AUTH,
    )


def extendedCredentials(
    request: socks5.ExtendedAuthRequest,
) -> tuple[tuple[bytes, bytes] | None, dict[bytes, bytes]]:
    """
    Split a proposal 229 request into credentials and the other pairs.

    @return: C{(username, password)} (a missing one is empty), or L{None}
        when the request has neither key; and the other pairs, in order.
    @raise MalformedMessage: a key appears twice.
    """
    seen: dict[bytes, bytes] = {}
    for key, value in request.pairs:
        if key in seen:
            raise MalformedMessage(
                f"key {key.decode('ascii', 'backslashreplace')!r} appears twice"
            )
        seen[key] = value
    if KEY_USERNAME in seen or KEY_PASSWD in seen:
        credentials: tuple[bytes, bytes] | None = (
            seen.pop(KEY_USERNAME, b""),
            seen.pop(KEY_PASSWD, b""),
        )
    else:
        credentials = None
    return credentials, seen


#: L{socks5Methods} for each C{(hasAuthenticator, preferNoAuth)}.
_METHODS = {
    (auth, prefer): socks5Methods(auth, prefer)
    for auth in (False, True)
    for prefer in (False, True)
}


class _Stage(Enum):
    GREETING = "greeting"
    AUTHENTICATION = "authentication"
    CHECKING = "checking credentials"
    REQUEST = "request"
    DONE = "done"


class Socks5Handshake:
    """
    A SOCKS5 client's handshake, from its first byte (05) on; see the
    module docstring and L{socksd.handshake.ServerHandshake}.

    @ivar codec: the L{socks5.Socks5ServerCodec}.
    @ivar user: the avatar the credentials were checked as, or L{None}.
    """

    protocol = "socks5"
    version = 5
    #: See L{ServerHandshake.labelsReplies}.
    labelsReplies = False

    __slots__ = (
        "profile",
        "codec",
        "user",
        "_settings",
        "_stage",
        "_credentials",
        "_checking",
        "_pairs",
        "_ended",
        "_ready",
    )

    def __init__(self, settings: HandshakeSettings) -> None:
        self._settings = settings
        self.profile = settings.socks5Profile
        self.codec = socks5.Socks5ServerCodec()
        self.user: Any = None
        self._stage = _Stage.GREETING
        #: The credentials the client sent, checked or not.
        self._credentials: tuple[bytes, bytes] | None = None
        #: The credentials being checked.
        self._checking: tuple[bytes, bytes] = (b"", b"")
        self._pairs: dict[bytes, bytes] = {}
        self._ended = False
        #: C{True} once the L{RequestReady} was given.
        self._ready = False

    # ServerHandshake

    def dataReceived(self, data: bytes) -> list[Action]:
        """
        See L{ServerHandshake.dataReceived}.  Bytes that arrive after the
        L{RequestReady} are kept for L{unconsumed}; after a L{Refuse} they
        are dropped.
        """
        if self._stage is _Stage.DONE:
            if self._ready:
                # The codec has finished: it only keeps them.
                self.codec.receiveData(data)
            return []
        return self._parse(data)

    def credentialsChecked(self, user: Any) -> list[Action]:
        """See L{ServerHandshake.credentialsChecked}."""
        if self._stage is not _Stage.CHECKING:
            return []
        self.user = user
        self._credentials = self._checking
        self._stage = _Stage.REQUEST
        actions: list[Action] = [
            Send(self.codec.send(self._authReply(socks5.AUTH_SUCCESS)))
        ]
        actions += self._parse(b"")
        if self._ended and self._stage is _Stage.REQUEST:
            self._stage = _Stage.DONE
            actions.append(Refuse(b"", "client sent EOF during the request"))
        return actions

    def credentialsRefused(self) -> list[Action]:
        """See L{ServerHandshake.credentialsRefused}."""
        if self._stage is not _Stage.CHECKING:
            return []
        self._stage = _Stage.DONE
        shown = self._checking[0].decode("utf-8", "backslashreplace")
        return [
            Refuse(
                self.codec.send(self._authReply(_AUTH_FAILURE)),
                f"authentication failed for user {shown!r}",
                "AUTHENTICATION_FAILED",
            )
        ]

    def clientEnded(self) -> list[Action]:
        """See L{ServerHandshake.clientEnded}."""
        stage = self._stage
        if stage is _Stage.DONE:
            return []
        if stage is _Stage.CHECKING:
            self._ended = True
            return []
        self._stage = _Stage.DONE
        return [Refuse(b"", f"client sent EOF during the {stage.value}")]

    def buffered(self) -> int:
        """
        See L{ServerHandshake.buffered}: the handshake bytes received so
        far, or the bytes after the request not yet taken; none after a
        refusal.
        """
        if self._stage is _Stage.DONE and not self._ready:
            return 0
        return self.codec.buffered()

    def unconsumed(self) -> bytes:
        """
        See L{ServerHandshake.unconsumed}: the bytes after the request.
        Before the L{RequestReady}, and after a L{Refuse}, this is C{b""}
        (after a malformed message the codec is dead, and would raise).
        """
        if not self._ready:
            return b""
        return self.codec.unconsumed()

    def reply(
        self,
        code: IntEnum,
        bound: Destination | None = None,
        options: tuple[Any, ...] = (),
    ) -> bytes:
        """See L{ServerHandshake.reply}."""
        return self.codec.send(socks5.Reply(int(code), bound or _UNSPECIFIED))

    def replyLabel(self, code: IntEnum) -> ReplyLabel:
        """See L{ServerHandshake.replyLabel}: the code itself."""
        return code

    # Steps

    def _parse(self, data: bytes) -> list[Action]:
        """Feed the codec, and handle every message it gives, in order."""
        codec = self.codec
        actions: list[Action] = []
        while True:
            try:
                messages = codec.receiveData(data)
            except MalformedMessage as error:
                actions.append(self._malformed(error))
                return actions
            if not messages:
                return actions
            data = b""
            for message in messages:
                received = self._received(message)
                if actions:
                    actions += received
                else:
                    actions = received
                if self._stage is _Stage.DONE or self._stage is _Stage.CHECKING:
                    return actions
            if not codec.buffered():
                # Nothing pipelined behind: no need to parse again.
                return actions

    def _received(self, message: Any) -> list[Action]:
        if isinstance(message, socks5.MethodOffer):
            return self._selectMethod(message)
        if isinstance(message, socks5.Request):
            return [RequestReady(self._request(message))]
        return self._credentialsReceived(message)

    def _request(self, message: socks5.Request) -> Request:
        """The version-neutral request, with its isolation credentials."""
        self._stage = _Stage.DONE
        self._ready = True
        credentials = self._credentials
        pairs = self._pairs
        isolation: tuple[Any, ...] | None = credentials
        if pairs:
            ordered = tuple(sorted(pairs.items()))
            base = credentials if credentials is not None else (b"", b"")
            isolation = (*base, ordered)
        return Request(
            5,
            "socks5",
            message.command,
            message.destination,
            self.profile,
            self.user,
            credentials,
            isolation,
            pairs,
        )

    def _malformed(self, error: MalformedMessage) -> Refuse:
        stage = self._stage
        self._stage = _Stage.DONE
        if stage is _Stage.GREETING:
            return Refuse(
                self.codec.send(socks5.MethodSelection(socks5.METHOD_NO_ACCEPTABLE)),
                f"malformed SOCKS5 greeting: {error}",
            )
        if stage is _Stage.AUTHENTICATION:
            return Refuse(
                self.codec.send(self._authReply(_AUTH_FAILURE)),
                f"malformed SOCKS5 authentication: {error}",
            )
        code = replyFor(error, self.profile)
        return Refuse(
            self.reply(code), f"malformed SOCKS5 request: {error}", code
        )

    def _authReply(self, status: int) -> Any:
        """The reply to credentials: proposal 229's after method 0x97."""
        if self.codec.selectedMethod == socks5.METHOD_TOR_EXTENDED:
            return socks5.ExtendedAuthReply(status)
        return socks5.UsernamePasswordReply(status)

    def _selectMethod(self, offer: socks5.MethodOffer) -> list[Action]:
        offered = offer.methods
        if socks5.METHOD_TOR_EXTENDED in offered:
            self.profile = ReplyProfile.SOCKS5_PROP229
        settings = self._settings
        method = socks5.METHOD_NO_ACCEPTABLE
        for acceptable in _METHODS[settings.requireAuth, settings.preferNoAuth]:
            if acceptable in offered:
                method = acceptable
                break
        selection = self.codec.send(socks5.MethodSelection(method))
        if method == socks5.METHOD_NO_ACCEPTABLE:
            self._stage = _Stage.DONE
            shown = " ".join(f"{m:02x}" for m in sorted(offered))
            return [
                Refuse(
                    selection,
                    f"no acceptable authentication method offered ({shown})",
                    "NO_ACCEPTABLE_METHODS",
                )
            ]
        if method in (socks5.METHOD_USERNAME_PASSWORD, socks5.METHOD_TOR_EXTENDED):
            self._stage = _Stage.AUTHENTICATION
        else:
            self._stage = _Stage.REQUEST
        return [Send(selection)]

    def _credentialsReceived(self, message: Any) -> list[Action]:
        if isinstance(message, socks5.ExtendedAuthRequest):
            try:
                extended, self._pairs = extendedCredentials(message)
            except MalformedMessage as error:
                return [self._malformed(error)]
            credentials = extended or (b"", b"")
        else:
            extended = credentials = (message.username, message.password)
        if (
            self.codec.selectedMethod == socks5.METHOD_NO_AUTH
            or not self._settings.requireAuth
        ):
            # Tor's leniency: without an authenticator (or after method
            # 00), credentials are not checked; they only isolate.
            self._credentials = extended
            self._stage = _Stage.REQUEST
            return [Send(self.codec.send(self._authReply(socks5.AUTH_SUCCESS)))]
        self._stage = _Stage.CHECKING
        self._checking = credentials
        return [CheckCredentials(credentials[0], credentials[1])]
