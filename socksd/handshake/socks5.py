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

With GSS-API configured (L{HandshakeSettings.gssapiLevels}), the server
uses L{GssapiSocks5Handshake} (L{Socks5Handshake}, which every other
server uses, carries nothing of it), and method 01 (RFC 1961) runs between
1 and 3: each context token of the client goes out
in an L{AcceptContext}, answered by L{GssapiSocks5Handshake.contextStep} (the
server's token goes back; once the context is complete, its principal is
the user); then the protection-level sub-negotiation, where the server
picks a level it accepts (L{chooseLevel}); then, at integrity or
confidentiality, the request and every reply are RFC 1961 data frames
wrapped with the context (L{MessageProtection}), and the tunnel is relayed
by the framing relay (L{GssapiTunnel} tells it how).  At C{clear} (what
curl asks for) the request and the tunnel are plain.  Proposal 229's and
RFC 1929's credentials rank before GSS-API: see L{socks5Methods}.

A malformed message is refused with the answer of the step it broke (method
FF, authentication status 01, or the reply code L{socksd.replies.replyFor}
gives, 08 for an unknown address type).
"""

from __future__ import annotations

from enum import Enum, IntEnum
from ipaddress import IPv4Address
from typing import Any, Protocol

from socksd.address import Destination
from socksd.errors import MalformedMessage, UnsupportedCommand
from socksd.handshake._actions import (
    AcceptContext,
    Action,
    CheckCredentials,
    HandshakeSettings,
    socks5Methods,
    Refuse,
    ReplyLabel,
    Request,
    RequestReady,
    Send,
)
from socksd.replies import ReplyProfile, replyFor
from socksd.wire import gssapi as rfc1961
from socksd.wire import socks5

__all__ = [
    "Socks5Handshake",
    "GssapiSocks5Handshake",
    "socks5Methods",
    "chooseLevel",
    "MessageProtection",
    "GssapiTunnel",
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


def chooseLevel(requested: int, accepted: frozenset[int]) -> int:
    """
    The protection level a server answers (RFC 1961 section 4.3) to a
    client that asked for C{requested}: that level when accepted; for
    selective protection (3), confidentiality, else integrity; otherwise the
    nearest accepted level above the request, else the highest below it.
    The client closes when it cannot live with the answer (curl, which
    asks for C{clear}, does at any other).

    @param accepted: the levels the server accepts (not empty).
    """
    if requested in accepted:
        return requested
    order = sorted(accepted)
    if requested == rfc1961.LEVEL_SELECTIVE:
        for level in (rfc1961.LEVEL_CONFIDENTIALITY, rfc1961.LEVEL_INTEGRITY):
            if level in accepted:
                return level
        return order[-1]
    for level in order:
        if level > requested:
            return level
    return order[-1]


class MessageProtection(Protocol):
    """
    An established GSS-API security context's per-message protection, as
    the handshake and the framing relay use it (L{socksd.gssapi} makes
    them from python-gssapi; nothing here does I/O).
    """

    def wrap(self, data: bytes, encrypt: bool) -> bytes:
        """C{gss_wrap}: C{data} as one token, encrypted when C{encrypt}."""

    def unwrap(self, token: bytes) -> tuple[bytes, bool]:
        """
        C{gss_unwrap}: the data and whether it was encrypted.

        @raise Exception: the token is not valid for this context.
        """

    def wrapLimit(self, encrypt: bool) -> int:
        """The most bytes one token may carry to stay within 65535 wrapped."""


class GssapiTunnel:
    """
    What the framing relay (L{socksd.server.relay.gssapi}) needs of a
    connection that negotiated integrity or confidentiality.

    @ivar protection: the context's L{MessageProtection}.
    @ivar level: the level agreed (L{rfc1961.LEVEL_INTEGRITY} or
        L{rfc1961.LEVEL_CONFIDENTIALITY}).
    @ivar encrypt: wrap with confidentiality.
    @ivar early: plain bytes the client sent after its request inside the
        request's own frame, for the destination first.
    """

    __slots__ = ("protection", "level", "encrypt", "early")

    def __init__(self, protection: MessageProtection, level: int) -> None:
        self.protection = protection
        self.level = level
        self.encrypt = level == rfc1961.LEVEL_CONFIDENTIALITY
        self.early = b""


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


class _Stage(Enum):
    GREETING = "greeting"
    AUTHENTICATION = "authentication"
    CHECKING = "checking credentials"
    GSS_CONTEXT = "GSS-API context establishment"
    GSS_STEPPING = "GSS-API context step"
    GSS_PROTECTION = "GSS-API protection sub-negotiation"
    REQUEST = "request"
    DONE = "done"


class Socks5Handshake:
    """
    A SOCKS5 client's handshake, from its first byte (05) on; see the
    module docstring and L{socksd.handshake.ServerHandshake}.

    It serves methods 00, 02 and 0x97; a server with GSS-API (method 01,
    RFC 1961) uses L{GssapiSocks5Handshake}, so that this one, which every
    other SOCKS5 client gets, carries nothing of it.

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
        for acceptable in settings.socks5Order:
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
        elif method == socks5.METHOD_GSSAPI:
            return self._gssapiSelected(selection)
        else:
            self._stage = _Stage.REQUEST
        return [Send(selection)]

    def _gssapiSelected(self, selection: bytes) -> list[Action]:
        """
        Method 01 was selected (the settings offer it): only
        L{GssapiSocks5Handshake} can go on.
        """
        self._stage = _Stage.DONE
        return [Refuse(selection, "GSS-API needs GssapiSocks5Handshake")]

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


class GssapiSocks5Handshake(Socks5Handshake):
    """
    The SOCKS5 handshake of a server with GSS-API (SOCKS5 method 01, RFC
    1961): L{Socks5Handshake}'s, with the exchange of the module docstring
    between the method selection and the request.

    @ivar user: the avatar the credentials were checked as, or the GSS-API
        principal's.
    @ivar gssapi: after an exchange that agreed integrity or
        confidentiality, the L{GssapiTunnel} the relay needs; else L{None}.
    @ivar gssapiLevel: the protection level agreed, or L{None}.
    @ivar context: the connection's acceptor context, kept here between
        its steps (the handshake never uses it).
    """

    __slots__ = ("gssapi", "gssapiLevel", "context", "_frames", "_protection", "_gssUser")

    def __init__(self, settings: HandshakeSettings) -> None:
        super().__init__(settings)
        self.gssapi: GssapiTunnel | None = None
        self.gssapiLevel: int | None = None
        self.context: Any = None
        #: RFC 1961 frames, from method 01's selection on.
        self._frames: rfc1961.FrameDecoder | None = None
        self._protection: Any = None
        self._gssUser: Any = None

    def dataReceived(self, data: bytes) -> list[Action]:
        """See L{Socks5Handshake.dataReceived}; RFC 1961 frames after 01."""
        if self._frames is None:
            return super().dataReceived(data)
        if self._stage is _Stage.DONE:
            if self._ready:
                if self.gssapi is not None:
                    # Frames for the framing relay.
                    self._frames.feed(data)
                else:
                    # The codec has finished: it only keeps them.
                    self.codec.receiveData(data)
            return []
        return self._gssReceived(data)

    def clientEnded(self) -> list[Action]:
        """See L{Socks5Handshake.clientEnded}; also during a context step."""
        if self._stage is _Stage.GSS_STEPPING:
            self._ended = True
            return []
        return super().clientEnded()

    def buffered(self) -> int:
        """See L{Socks5Handshake.buffered}; frames count past their own bytes."""
        frames = self._frames
        if frames is None or (self._stage is _Stage.DONE and not self._ready):
            return super().buffered()
        if self.gssapi is not None and self._ready:
            return frames.buffered()
        return self.codec.buffered() + _pastFrame(frames)

    def unconsumed(self) -> bytes:
        """See L{Socks5Handshake.unconsumed}; still framed when protected."""
        if self._ready and self.gssapi is not None:
            # The framing relay unwraps them.
            return self._frames.take()
        return super().unconsumed()

    def reply(
        self,
        code: IntEnum,
        bound: Destination | None = None,
        options: tuple[Any, ...] = (),
    ) -> bytes:
        """
        See L{ServerHandshake.reply}; at integrity or confidentiality, an
        RFC 1961 data frame.
        """
        data = super().reply(code, bound, options)
        if self.gssapiLevel is not None and self.gssapiLevel != rfc1961.LEVEL_CLEAR:
            return self._wrapFrame(data)
        return data

    def _received(self, message: Any) -> list[Action]:
        if (
            self.gssapi is not None
            and isinstance(message, socks5.Request)
            and message.command == socks5.CMD_UDP_ASSOCIATE
        ):
            # RFC 1961's UDP encapsulation is not served.
            self._stage = _Stage.DONE
            code = replyFor(
                UnsupportedCommand("UDP ASSOCIATE under GSS-API protection"),
                self.profile,
            )
            return [
                Refuse(
                    self.reply(code),
                    "UDP ASSOCIATE under GSS-API protection is not served",
                    code,
                )
            ]
        return super()._received(message)

    def _gssapiSelected(self, selection: bytes) -> list[Action]:
        self._stage = _Stage.GSS_CONTEXT
        self._frames = rfc1961.FrameDecoder(rfc1961.MTYP_CONTEXT)
        # Bytes pipelined behind the offer are the client's first token.
        return [Send(selection)] + self._gssReceived(self.codec.takeGssapiBytes())

    def contextStep(
        self, outputToken: bytes, complete: bool, user: Any, protection: Any
    ) -> list[Action]:
        """
        The answer to an L{AcceptContext}: the server's C{outputToken}
        (maybe empty) goes to the client; when the context is C{complete},
        C{user} (the principal's avatar) is the request's user and
        C{protection} (a L{MessageProtection}) serves the sub-negotiation
        and, at integrity or confidentiality, the request, the replies and
        the tunnel.
        """
        if self._stage is not _Stage.GSS_STEPPING:
            return []
        if self._ended:
            self._stage = _Stage.DONE
            return [Refuse(b"", "client sent EOF during the GSS-API exchange")]
        # RFC 1961 section 3.5: once complete, a zero-length token when
        # there is none, so that the client knows to go on.
        actions: list[Action] = [
            Send(rfc1961.encodeFrame(rfc1961.MTYP_CONTEXT, outputToken))
        ]
        if complete:
            self._gssUser = user
            self._protection = protection
            self._stage = _Stage.GSS_PROTECTION
            self._frames.expect = rfc1961.MTYP_PROTECTION
        else:
            self._stage = _Stage.GSS_CONTEXT
        return actions + self._gssReceived(b"")

    def contextFailed(self, reason: str) -> list[Action]:
        """
        The answer to an L{AcceptContext} when the token was refused: the
        client gets RFC 1961's abort message.
        """
        if self._stage is not _Stage.GSS_STEPPING:
            return []
        self._stage = _Stage.DONE
        return [Refuse(rfc1961.ABORT, f"GSS-API authentication failed: {reason}")]

    def _gssAbort(self, reason: str) -> list[Action]:
        self._stage = _Stage.DONE
        return [Refuse(rfc1961.ABORT, reason)]

    def _wrapFrame(self, data: bytes) -> bytes:
        encrypt = self.gssapiLevel == rfc1961.LEVEL_CONFIDENTIALITY
        return rfc1961.encodeFrame(
            rfc1961.MTYP_DATA, self._protection.wrap(data, encrypt)
        )

    def _gssReceived(self, data: bytes) -> list[Action]:
        """Feed the RFC 1961 frames, until the request is parsed."""
        frames = self._frames
        frames.feed(data)
        actions: list[Action] = []
        while True:
            stage = self._stage
            if stage is _Stage.DONE or stage is _Stage.GSS_STEPPING:
                return actions
            if stage is _Stage.REQUEST and self.gssapiLevel == rfc1961.LEVEL_CLEAR:
                # A plain request: the codec parses what follows.
                return actions + self._parse(frames.take())
            try:
                frame = frames.next()
            except rfc1961.GssapiAborted:
                return actions + self._gssAbort(
                    f"client aborted the {stage.value}"
                )
            except MalformedMessage as error:
                return actions + self._gssAbort(f"malformed {stage.value}: {error}")
            if frame is None:
                return actions
            if stage is _Stage.GSS_CONTEXT:
                self._stage = _Stage.GSS_STEPPING
                actions.append(AcceptContext(frame.token))
            elif stage is _Stage.GSS_PROTECTION:
                actions += self._protectionRequested(frame.token)
            else:
                actions += self._protectedRequest(frame.token)

    def _protectionRequested(self, token: bytes) -> list[Action]:
        """RFC 1961 section 4.3: answer the client's protection level."""
        nec = len(token) == 1
        if nec:
            # The NEC variant (curl --socks5-gssapi-nec): the bare octet.
            level = token[0]
        else:
            try:
                plain, _ = self._protection.unwrap(token)
            except Exception as error:
                return self._gssAbort(f"bad GSS-API protection-level token: {error}")
            if len(plain) != 1:
                return self._gssAbort(
                    f"GSS-API protection level of {len(plain)} octets, not 1"
                )
            level = plain[0]
        chosen = chooseLevel(level, self._settings.gssapiLevels)
        answer = bytes((chosen,))
        if not nec:
            answer = self._protection.wrap(answer, False)
        self.gssapiLevel = chosen
        self.user = self._gssUser
        self.codec.gssapiDone()
        self._stage = _Stage.REQUEST
        self._frames.expect = rfc1961.MTYP_DATA
        if chosen != rfc1961.LEVEL_CLEAR:
            self.gssapi = GssapiTunnel(self._protection, chosen)
        return [Send(rfc1961.encodeFrame(rfc1961.MTYP_PROTECTION, answer))]

    def _protectedRequest(self, token: bytes) -> list[Action]:
        """An RFC 1961 data frame holding (part of) the request."""
        try:
            plain, encrypted = self._protection.unwrap(token)
        except Exception as error:
            return self._gssAbort(f"bad GSS-API data token: {error}")
        if self.gssapi.encrypt and not encrypted:
            return self._gssAbort("a GSS-API data token without confidentiality")
        actions = self._parse(plain)
        if self._ready:
            self.gssapi.early = self.codec.unconsumed()
        return actions


def _pastFrame(frames: rfc1961.FrameDecoder) -> int:
    """
    How many of the bytes C{frames} holds lie past the frame it is
    reading: a frame may be 65539 bytes long, more than a SOCKS5 message,
    and its own bytes must not make the connection stop reading.
    """
    size = frames.buffered()
    if size < 4:
        return 0
    head = frames._buffer
    return max(0, size - 4 - ((head[2] << 8) | head[3]))
