"""
The server side of SOCKS5 (RFC 1928), with RFC 1929 username/password.

Bytes go to L{socksd.wire.socks5.Socks5ServerCodec}; L{Socks5Handler} takes
the messages through three steps:

  1. method selection: L{Socks5Handler.acceptableMethods}, in the server's
     order of preference, against the client's offer (see
     L{socksd.server.tor.socks5Methods}: with an authenticator 0x97 or 02;
     without one 0x97, 02, then 00, or 00 first with C{preferNoAuth}).  A
     client that offers proposal 229's 0x97 gets the C{SOCKS5_PROP229}
     reply profile;
  2. authentication, for method 02 or 0x97: with an authenticator, it
     checks the username and password (proposal 229's USERNAME and PASSWD);
     without one, any credentials are accepted and only isolate (Tor's
     leniency), as are RFC 1929 credentials sent after method 00;
  3. the request, served by the method its command names in
     L{Socks5Handler.commands}; other commands get 07.

A malformed message is answered with the refusal of the step it broke
(method FF, authentication status 01, or the reply code
L{socksd.replies.replyFor} gives, 08 for an unknown address type), then the
connection is closed.
"""

from __future__ import annotations

from enum import Enum
from ipaddress import IPv4Address
from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination
from socksd.errors import AuthenticationFailed, MalformedMessage
from socksd.replies import ReplyProfile
from socksd.server.dispatch import Dispatcher
from socksd.server.tor import TorRequestHandler, extendedCredentials, socks5Methods
from socksd.server.bind import serveBind
from socksd.server.relay import writeNow
from socksd.server.udp import serveUdpAssociate
from socksd.wire import socks5

__all__ = ["Socks5Handler"]

log = Logger()

_UNSPECIFIED = Destination(IPv4Address(0), 0)
#: The longest SOCKS5 handshake message (an RFC 1929 request).
_MAX_MESSAGE = 513


class _Stage(Enum):
    GREETING = "greeting"
    AUTHENTICATION = "authentication"
    CHECKING = "checking credentials"
    REQUEST = "request"
    SERVING = "serving"


class Socks5Handler(TorRequestHandler):
    """
    A SOCKS5 client, from its first byte (05) on; see the module docstring.

    @cvar commands: see L{RequestHandler.commands}.
    @ivar codec: the connection's L{socks5.Socks5ServerCodec}.
    """

    version: ClassVar[int] = 5
    commands: ClassVar[dict[int, str]] = {
        socks5.CMD_CONNECT: "connect",
        socks5.CMD_BIND: "bind",
        socks5.CMD_UDP_ASSOCIATE: "udpAssociate",
        socks5.CMD_RESOLVE: "resolve",
        socks5.CMD_RESOLVE_PTR: "resolvePtr",
    }
    bind = serveBind
    udpAssociate = serveUdpAssociate

    __slots__ = ("codec", "_stage", "_credentials", "_checking")

    def __init__(self, connection: Dispatcher) -> None:
        super().__init__(connection, connection.factory.config.socks5Profile)
        self.codec = socks5.Socks5ServerCodec()
        self._stage = _Stage.GREETING
        self._credentials: tuple[bytes, bytes] | None = None
        self._checking: Deferred[Any] | None = None
        connection.record.protocol = "socks5"

    def acceptableMethods(self) -> tuple[int, ...]:
        """
        The authentication methods this server takes, best first: see
        L{socksd.server.tor.socks5Methods}.
        """
        factory = self.connection.factory
        return socks5Methods(
            factory.authenticator is not None, factory.config.preferNoAuth
        )

    def _authReply(self, status: int) -> Any:
        """The reply to credentials: proposal 229's after method 0x97."""
        if self.codec.selectedMethod == socks5.METHOD_TOR_EXTENDED:
            return socks5.ExtendedAuthReply(status)
        return socks5.UsernamePasswordReply(status)

    def buildReply(self, code: int, bound: Destination | None) -> bytes:
        """See L{RequestHandler.buildReply}."""
        return self.codec.send(socks5.Reply(int(code), bound or _UNSPECIFIED))

    # Bytes in

    def dataReceived(self, data: bytes) -> None:
        """Parse the handshake; bytes after the request are optimistic data."""
        if self._stage is _Stage.SERVING:
            self.keepEarly(data)
        else:
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Feed the codec, and handle every message it gives, in order."""
        codec = self.codec
        connection = self.connection
        while True:
            try:
                messages = codec.receiveData(data)
            except MalformedMessage as error:
                self._malformed(error)
                return
            if not messages:
                break
            data = b""
            for message in messages:
                self._received(message)
                if connection.closing or self._stage in (
                    _Stage.CHECKING,
                    _Stage.SERVING,
                ):
                    return
        if (
            codec.buffered()
            > connection.factory.config.maxOptimisticData + _MAX_MESSAGE
        ):
            connection.pauseReading()

    def _received(self, message: Any) -> None:
        if isinstance(message, socks5.MethodOffer):
            self._selectMethod(message)
        elif isinstance(
            message, (socks5.UsernamePasswordRequest, socks5.ExtendedAuthRequest)
        ):
            self._checkCredentials(message)
        elif isinstance(message, socks5.Request):
            self._stage = _Stage.SERVING
            self.keepEarly(self.codec.unconsumed())
            credentials = self._credentials
            self.dispatchRequest(
                message.command,
                message.destination,
                credentials=credentials,
                isolationKey=credentials,
            )

    def _malformed(self, error: MalformedMessage) -> None:
        stage = self._stage
        connection = self.connection
        if stage is _Stage.GREETING:
            connection.finish(
                f"malformed SOCKS5 greeting: {error}",
                self.codec.send(socks5.MethodSelection(socks5.METHOD_NO_ACCEPTABLE)),
            )
        elif stage is _Stage.AUTHENTICATION:
            connection.finish(
                f"malformed SOCKS5 authentication: {error}",
                self.codec.send(self._authReply(1)),
            )
        else:
            self.refuse(error, f"malformed SOCKS5 request: {error}")

    # Method selection and authentication

    def _selectMethod(self, offer: socks5.MethodOffer) -> None:
        offered = offer.methods
        if socks5.METHOD_TOR_EXTENDED in offered:
            self.profile = ReplyProfile.SOCKS5_PROP229
        method = next(
            (m for m in self.acceptableMethods() if m in offered),
            socks5.METHOD_NO_ACCEPTABLE,
        )
        selection = self.codec.send(socks5.MethodSelection(method))
        if method == socks5.METHOD_NO_ACCEPTABLE:
            self.connection.record.reply = "NO_ACCEPTABLE_METHODS"
            self.connection.finish(
                "no acceptable authentication method offered "
                f"({' '.join(f'{m:02x}' for m in offered)})",
                selection,
            )
            return
        writeNow(self.connection.transport, selection)
        if method in (socks5.METHOD_USERNAME_PASSWORD, socks5.METHOD_TOR_EXTENDED):
            self._stage = _Stage.AUTHENTICATION
        else:
            self._stage = _Stage.REQUEST

    def _checkCredentials(self, message: Any) -> None:
        if isinstance(message, socks5.ExtendedAuthRequest):
            try:
                extended, self.torPairs = extendedCredentials(message)
            except MalformedMessage as error:
                self._malformed(error)
                return
            credentials = extended or (b"", b"")
        else:
            extended = credentials = (message.username, message.password)
        if (
            self.codec.selectedMethod == socks5.METHOD_NO_AUTH
            or self.connection.factory.authenticator is None
        ):
            # Tor's leniency: without an authenticator (or after method
            # 00), credentials are not checked; they only isolate.
            self._credentials = extended
            self._stage = _Stage.REQUEST
            writeNow(
                self.connection.transport,
                self.codec.send(self._authReply(socks5.AUTH_SUCCESS)),
            )
            return
        self._stage = _Stage.CHECKING
        checking = self.checkLogin(credentials[0], credentials[1])
        self._checking = checking
        checking.addCallbacks(
            self._authenticated,
            self._refusedCredentials,
            callbackArgs=(credentials,),
            errbackArgs=(credentials[0],),
        )
        checking.addErrback(self._authenticationBug)

    def _authenticated(self, avatar: Any, credentials: tuple[bytes, bytes]) -> None:
        self._checking = None
        connection = self.connection
        if not connection.connected or connection.closing:
            return
        connection.record.user = avatar
        self._credentials = credentials
        self._stage = _Stage.REQUEST
        writeNow(
            connection.transport, self.codec.send(self._authReply(socks5.AUTH_SUCCESS))
        )
        if not self._clientEnded:
            connection.resumeReading()
        self._parse(b"")
        if self._clientEnded and self._stage is not _Stage.SERVING:
            connection.finish("client sent EOF during the request")

    def _refusedCredentials(self, failure: Failure, username: bytes) -> None:
        self._checking = None
        connection = self.connection
        if not connection.connected or connection.closing:
            return
        if not failure.check(AuthenticationFailed):
            log.failure("checking credentials failed", failure)
        shown = username.decode("utf-8", "backslashreplace")
        connection.finish(
            f"authentication failed for user {shown!r}",
            self.codec.send(self._authReply(1)),
        )

    def _authenticationBug(self, failure: Failure) -> None:
        log.failure("handling the result of an authentication failed", failure)
        self.connection.abort("internal error: handling an authentication failed")

    # Connection events

    def readConnectionLost(self) -> None:
        """
        EOF from the client: while its credentials are checked or after its
        request, remember it (the request may be in, with data to deliver
        before the EOF); otherwise the request can never complete: close.
        """
        if self._stage is _Stage.SERVING or self._stage is _Stage.CHECKING:
            self._clientEnded = True
        else:
            self.connection.finish(f"client sent EOF during the {self._stage.value}")

    def connectionLost(self, reason: Failure) -> None:
        """Stop checking credentials, or connecting, for a client that left."""
        checking, self._checking = self._checking, None
        if checking is not None:
            self.connection.record.setReason("client closed during the authentication")
            checking.cancel()
        super().connectionLost(reason)
