"""
The server side of SOCKS6 (draft-olteanu-intarea-socks-6-11).

Bytes go to L{socksd.wire.socks6.Socks6ServerCodec}; L{Socks6Handler} takes
a request through:

  1. the request, with its initial data (CONNECT only: the Initial Data
     Length of its Authentication Method Advertisement), which is kept and
     delivered to the destination before anything else;
  2. sessions: a Session ID names a live session (the request then needs
     no authentication and acts as the session's user; the reply carries
     Session OK) or not (Authentication Reply failure with Session
     Invalid, then close).  With Session Teardown the session ends and the
     request is served as if outside any session;
  3. authentication, outside a session: with no authenticator on the
     factory, none (credentials sent 0-RTT are kept for stream isolation
     and answered "success"); with one, username/password either 0-RTT
     (an Authentication Data option in the request: one Authentication
     Reply) or, for a client that advertised method 2 without credentials,
     the slow path of ambiguity A6 (Authentication Reply failure selecting
     method 2, a bare RFC 1929 request and reply, the final Authentication
     Reply).  Anything else is answered with method 0xFF and closed;
  4. a Session Request (outside a session) opens one, bound to the user
     and credentials just checked; its ID goes in the successful
     Authentication Reply (ambiguity A2);
  5. idempotence, inside a session: a window on request, a token spent
     before the request is acted on (Idempotence Accepted), or the
     Authentication Reply fails with Idempotence Rejected and the
     connection closes: a replayed request never reaches the destination
     twice.  The window goes in every later successful reply;
  6. the command: NOOP (success, then close), CONNECT (the relay; stack
     options applied to the upstream socket and echoed, see
     L{socksd.server._socks6stack}), BIND (two Operation Replies, see
     L{bind}), UDP ASSOCIATE (L{socksd.server._socks6udp}).
     CONNECT to 0.0.0.0:53 or [::]:53, the draft's DNS service, is
     served by L{socksd.server._socks6dns} with C{ServerConfig.socks6Dns},
     else answered 0x05 (connection refused).

Session state lives on the factory (L{sessionTableFor}).  Malformed
requests are closed without a reply (ambiguity A5); a first byte other than
6 gets the Version Mismatch reply.
"""

from __future__ import annotations

from enum import Enum
from ipaddress import IPv4Address, IPv6Address
from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination
from socksd.errors import (
    AuthenticationFailed,
    ConnectionRefused,
    MalformedMessage,
    UnsupportedVersion,
)
from socksd.interfaces import ConnectContext
from socksd.replies import ReplyProfile, successFor
from socksd.server._socks6backlog import (
    requestedBacklog,
    serveBacklogBind,
    serveFurtherBind,
)
from socksd.server._socks6dns import DnsService
from socksd.server._socks6session import Session, SessionTable, sessionTableFor
from socksd.server._socks6stack import (
    applyStackOptions,
    connectWithStackOptions,
    wantsStackConnect,
)
from socksd.server._socks6udp import serveUdpAssociate6
from socksd.server.bind import serveBind
from socksd.server.dispatch import Dispatcher, RequestHandler, _UpstreamAttempt
from socksd.server.relay import UpstreamProtocol, writeNow
from socksd.wire import socks6
from socksd.wire.socks6 import (
    AuthenticationReply,
    AuthMethod,
    AuthMethodSelectionOption,
    Command,
    IdempotenceAcceptedOption,
    IdempotenceRejectedOption,
    IdempotenceWindowOption,
    OperationReply,
    Option,
    Request,
    SessionIdOption,
    SessionInvalidOption,
    SessionOkOption,
    UsernamePasswordReply,
    UsernamePasswordReplyOption,
    UsernamePasswordRequest,
    VersionMismatch,
)

__all__ = ["Socks6Handler", "SessionTable", "sessionTableFor", "DNS_SERVICE"]

log = Logger()

_UNSPECIFIED = Destination(IPv4Address(0), 0)
#: The destinations that name the draft's DNS service (section 11).
DNS_SERVICE = frozenset(
    {Destination(IPv4Address(0), 53), Destination(IPv6Address(0), 53)}
)
_AUTH_SUCCESS = 0
_AUTH_FAILURE = 1


class _Stage(Enum):
    REQUEST = "request"
    CHECKING = "checking credentials"
    CREDENTIALS = "username/password exchange"
    SERVING = "serving"


class Socks6Handler(RequestHandler):
    """
    A SOCKS6 client, from its first byte (06) on; see the module docstring.

    @ivar codec: the connection's L{socks6.Socks6ServerCodec}.
    @ivar request: the client's L{Request}, once parsed.
    @ivar session: the session the request belongs to (or opened), if any.
    """

    version: ClassVar[int] = 6
    commands: ClassVar[dict[int, str]] = {
        Command.NOOP: "noop",
        Command.CONNECT: "connect",
        Command.BIND: "bind",
        Command.UDP_ASSOCIATE: "udpAssociate",
    }

    __slots__ = (
        "codec",
        "request",
        "session",
        "_stage",
        "_checking",
        "_stackReplies",
        "_credentials",
        "_stackConnector",
    )

    def __init__(self, connection: Dispatcher) -> None:
        super().__init__(connection, ReplyProfile.SOCKS6)
        self.codec = socks6.Socks6ServerCodec()
        self.request: Request | None = None
        self.session: Session | None = None
        self._stage = _Stage.REQUEST
        self._checking: Deferred[Any] | None = None
        self._stackReplies: tuple[Option, ...] = ()
        self._credentials: tuple[bytes, bytes] | None = None
        self._stackConnector: Any = None
        connection.record.protocol = "socks6"

    @property
    def sessions(self) -> SessionTable:
        """The factory's L{SessionTable}."""
        return sessionTableFor(self.connection.factory)

    def buildReply(self, code: int, bound: Destination | None) -> bytes:
        """See L{RequestHandler.buildReply}: an Operation Reply."""
        options = self._stackReplies if bound is not None else ()
        return self.codec.send(
            OperationReply(int(code), bound or _UNSPECIFIED, options)
        )

    # Bytes in

    def dataReceived(self, data: bytes) -> None:
        """Parse the handshake; bytes after it go to the destination."""
        if self._stage is _Stage.SERVING:
            self.keepEarly(data)
        else:
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        try:
            messages = self.codec.receiveData(data)
        except UnsupportedVersion as error:
            self.connection.record.reply = "VERSION_MISMATCH"
            self.connection.finish(
                f"not a SOCKS6 request: {error}", self.codec.send(VersionMismatch())
            )
            return
        except MalformedMessage as error:
            self.connection.finish(f"malformed SOCKS6 message: {error}")
            return
        for message in messages:
            if isinstance(message, Request):
                self._requestReceived(message)
            elif isinstance(message, UsernamePasswordRequest):
                self._checkCredentials(
                    (message.username, message.password), slowPath=True
                )
            if self.connection.closing:
                return
        if (
            self._stage is not _Stage.SERVING
            and self.codec.buffered() > self.connection.factory.config.maxOptimisticData
        ):
            self.connection.pauseReading()

    # Sessions and authentication

    def _requestReceived(self, request: Request) -> None:
        self.request = request
        record = self.connection.record
        record.commandCode = request.command
        record.destination = request.destination
        self.keepEarly(request.initialData)
        sessionId = request.sessionId
        if sessionId is not None:
            table = self.sessions
            session = table.find(sessionId)
            if request.sessionTeardown:
                table.close(sessionId)
            elif session is None:
                record.reply = "SESSION_INVALID"
                self.connection.finish(
                    "unknown or expired SOCKS6 session",
                    self.codec.send(
                        AuthenticationReply(False, (SessionInvalidOption(),))
                    ),
                )
                return
            else:
                table.touch(session)
                self.session = session
                record.user = session.user
                self._succeed(session.user, session.credentials, ())
                return
        authenticator = self.connection.factory.authenticator
        credentials = request.usernamePassword
        if authenticator is None:
            replies: tuple[Option, ...] = ()
            if credentials is not None:
                replies = (UsernamePasswordReplyOption(_AUTH_SUCCESS),)
            self._succeed(None, credentials, replies)
        elif credentials is not None:
            self._checkCredentials(credentials, slowPath=False)
        elif AuthMethod.USERNAME_PASSWORD in request.authMethods:
            self._stage = _Stage.CREDENTIALS
            writeNow(
                self.connection.transport,
                self.codec.send(
                    AuthenticationReply(
                        False,
                        (AuthMethodSelectionOption(AuthMethod.USERNAME_PASSWORD),),
                    )
                ),
            )
            self._parse(b"")
        else:
            record.reply = "NO_ACCEPTABLE_METHODS"
            self.connection.finish(
                "no acceptable authentication method offered",
                self.codec.send(
                    AuthenticationReply(
                        False,
                        (AuthMethodSelectionOption(AuthMethod.NO_ACCEPTABLE_METHODS),),
                    )
                ),
            )

    def _checkCredentials(
        self, credentials: tuple[bytes, bytes], slowPath: bool
    ) -> None:
        self._stage = _Stage.CHECKING
        checking = self.checkLogin(credentials[0], credentials[1])
        self._checking = checking
        checking.addCallbacks(
            self._authenticated,
            self._refused,
            callbackArgs=(credentials, slowPath),
            errbackArgs=(credentials[0], slowPath),
        )
        checking.addErrback(self._authenticationBug)

    def _authenticated(
        self, avatar: Any, credentials: tuple[bytes, bytes], slowPath: bool
    ) -> None:
        self._checking = None
        connection = self.connection
        if not connection.connected or connection.closing:
            return
        connection.record.user = avatar
        if slowPath:
            writeNow(
                connection.transport,
                self.codec.send(UsernamePasswordReply(_AUTH_SUCCESS)),
            )
            replies: tuple[Option, ...] = ()
        else:
            replies = (UsernamePasswordReplyOption(_AUTH_SUCCESS),)
        self._succeed(avatar, credentials, replies)

    def _refused(self, failure: Failure, username: bytes, slowPath: bool) -> None:
        self._checking = None
        connection = self.connection
        if not connection.connected or connection.closing:
            return
        if not failure.check(AuthenticationFailed):
            log.failure("checking credentials failed", failure)
        data = b""
        if slowPath:
            data = self.codec.send(UsernamePasswordReply(_AUTH_FAILURE))
            final = AuthenticationReply(False)
        else:
            final = AuthenticationReply(
                False, (UsernamePasswordReplyOption(_AUTH_FAILURE),)
            )
        connection.record.reply = "AUTHENTICATION_FAILED"
        shown = username.decode("utf-8", "backslashreplace")
        connection.finish(
            f"authentication failed for user {shown!r}",
            data + self.codec.send(final),
        )

    def _authenticationBug(self, failure: Failure) -> None:
        log.failure("handling the result of an authentication failed", failure)
        self.connection.abort("internal error: handling an authentication failed")

    def _succeed(
        self,
        user: Any,
        credentials: tuple[bytes, bytes] | None,
        replies: tuple[Option, ...],
    ) -> None:
        """
        Authentication is over (or not needed): open a session, handle
        idempotence, send the successful Authentication Reply and serve the
        command.
        """
        request = self.request
        assert request is not None
        connection = self.connection
        table = self.sessions
        options = list(replies)
        session = self.session
        opened = False
        if session is not None:
            options.append(SessionOkOption())
        elif request.sessionRequest and not request.sessionTeardown:
            client = connection.record.client
            session = table.open(user, credentials, getattr(client, "host", None))
            if session is not None:
                opened = True
                self.session = session
                options.append(SessionIdOption(session.sessionId))
        if session is not None:
            session.requests += 1
            size = request.idempotenceWindowRequest
            if size is not None:
                table.issueWindow(session, size)
            token = request.idempotenceToken
            if token is not None:
                window = session.window
                if window is None or not window.spend(token):
                    self._tokenRejected(session, opened, token)
                    return
                options.append(IdempotenceAcceptedOption())
            if session.window is not None:
                options.append(
                    IdempotenceWindowOption(session.window.base, session.window.size)
                )
        self._credentials = credentials
        self._stage = _Stage.SERVING
        writeNow(
            connection.transport,
            self.codec.send(AuthenticationReply(True, tuple(options))),
        )
        self.keepEarly(self.codec.unconsumed())
        if not self._clientEnded:
            connection.resumeReading()
        self.dispatchRequest(
            request.command,
            request.destination,
            credentials=credentials,
            isolationKey=credentials,
        )

    def _tokenRejected(self, session: Session, opened: bool, token: int) -> None:
        options: list[Option] = [IdempotenceRejectedOption()]
        if opened:
            self.sessions.close(session.sessionId)
        self._early = None
        self.connection.record.reply = "IDEMPOTENCE_REJECTED"
        self.connection.finish(
            f"idempotence token {token} rejected (spent or outside the window)",
            self.codec.send(AuthenticationReply(False, tuple(options))),
        )

    # Commands

    def noop(self, destination: Destination, context: ConnectContext) -> None:
        """NOOP: success, then close (the client closes too)."""
        code = successFor(self.profile)
        self.connection.record.reply = code
        self._early = None
        self.connection.finish("NOOP", self.buildReply(code, _UNSPECIFIED))

    def bind(self, destination: Destination, context: ConnectContext) -> None:
        """
        BIND (L{socksd.server.bind}): listen on the address of the interface
        the client came in on (or C{ServerConfig.bindAddress}), any port;
        the first Operation Reply gives it, the second the peer that
        connected, then the relay.  SOCKS6's address and port are the
        I{wanted bind address}, not an expected peer, so any peer is
        accepted; the wanted address and port are not honoured (the reply
        says which were used).

        Inside a session, a Listen Backlog option makes a BIND that keeps
        listening, and further BINDs of the session to its address take
        its connections one by one (L{socksd.server._socks6backlog}).
        """
        self._answerStackOptions()
        session = self.session
        request = self.request
        if session is not None and request is not None:
            listener = session.listeners.get(destination)
            if listener is not None and not listener.closed:
                serveFurtherBind(self, listener, destination, context)
                return
            backlog = requestedBacklog(request)
            if backlog > 0:
                serveBacklogBind(self, backlog, destination, context)
                return
        serveBind(self, Destination(IPv4Address(0), 0), context)

    def udpAssociate(self, destination: Destination, context: ConnectContext) -> None:
        """UDP ASSOCIATE: see L{socksd.server._socks6udp}."""
        self._answerStackOptions()
        serveUdpAssociate6(self, context)

    def _answerStackOptions(self) -> None:
        """
        For BIND and UDP ASSOCIATE: answer the stack options with what is
        done without an upstream socket (see L{socksd.server._socks6stack}).
        """
        request = self.request
        if request is not None:
            self._stackReplies = applyStackOptions(
                request.stackOptions,
                None,
                request.destination,
                self.connection.factory.upstream,
            )

    def connect(self, destination: Destination, context: ConnectContext) -> None:
        """
        CONNECT: the DNS service address gets the DNS service (with
        C{ServerConfig.socks6Dns}) or is refused; any other destination is
        connected as for every SOCKS version.
        """
        if destination in DNS_SERVICE:
            self._dnsService()
            return
        super().connect(destination, context)

    def _dnsService(self) -> None:
        connection = self.connection
        if not connection.factory.config.socks6Dns:
            self.refuse(
                ConnectionRefused("the SOCKS6 DNS service is not offered"),
                "DNS service not offered",
            )
            return
        code = successFor(self.profile)
        connection.record.reply = code
        writeNow(connection.transport, self.buildReply(code, _UNSPECIFIED))
        early = b"".join(self._early) if self._early else b""
        self._early = None
        service = DnsService(connection)
        connection.handler = service
        if not self._clientEnded:
            connection.resumeReading()
        if early:
            service.dataReceived(early)
        if self._clientEnded:
            service.readConnectionLost()

    def _connectChecked(
        self, destination: Destination, context: ConnectContext
    ) -> None:
        """
        Connect as every version does, except when the request asks for TFO
        or Multipath and the upstream gives one of socksd's direct
        endpoints: then through a L{StackConnector
        <socksd.server._socks6stack.StackConnector>}, which makes the socket
        itself.
        """
        request = self.request
        connection = self.connection
        if (
            request is None
            or destination.isName
            or not connection.connected
            or connection.closing
            or not wantsStackConnect(request.stackOptions, connection.factory.upstream)
        ):
            super()._connectChecked(destination, context)
            return
        factory = connection.factory
        try:
            endpoint = factory.upstream.endpointFor(destination, context)
            attempt = _UpstreamAttempt(self)
            early = b"".join(self._early) if self._early else b""
            connector = connectWithStackOptions(
                request.stackOptions, endpoint, attempt, early
            )
        except Exception:
            log.failure("connecting with SOCKS6 stack options failed")
            connector = None
        if connector is None:
            super()._connectChecked(destination, context)
            return
        self._connecting = attempt
        self._stackConnector = attempt.connector = connector
        timeout = factory.config.connectTimeout
        if timeout is not None and not attempt.called:
            self._connectTimer = factory.reactor.callLater(
                timeout, self._connectTimedOut
            )

    def _connected(self, upstream: UpstreamProtocol) -> None:
        request = self.request
        transport = getattr(upstream, "transport", None)
        connector, self._stackConnector = self._stackConnector, None
        sent = connector.sentInSyn if connector is not None else 0
        if sent and self._early:
            early = b"".join(self._early)[sent:]
            self._early = [early] if early else []
            self._earlySize = len(early)
        if request is not None and transport is not None:
            try:
                self._stackReplies = applyStackOptions(
                    request.stackOptions,
                    transport,
                    request.destination,
                    self.connection.factory.upstream,
                    tfoSent=sent,
                )
            except Exception:
                log.failure("applying SOCKS6 stack options failed")
                self._stackReplies = ()
        super()._connected(upstream)

    # Connection events

    def readConnectionLost(self) -> None:
        """
        EOF from the client: once its request is in (while credentials are
        checked, or after), remember it, so that the destination gets the
        EOF after the initial data; before, close.
        """
        if self._stage in (_Stage.SERVING, _Stage.CHECKING):
            self._clientEnded = True
        else:
            self.connection.finish(f"client sent EOF during the {self._stage.value}")

    def connectionLost(self, reason: Failure) -> None:
        """Stop checking credentials, or connecting, for a client that left."""
        checking, self._checking = self._checking, None
        if checking is not None:
            self.connection.record.setReason("client closed during the authentication")
            checking.cancel()
            return
        super().connectionLost(reason)
