"""
The server side of a SOCKS6 handshake (draft-olteanu-intarea-socks-6-11),
without I/O.

L{Socks6Handshake} feeds the client's bytes to a
L{socks6.Socks6ServerCodec} and takes the request through:

  1. the request, with its initial data (CONNECT only: the Initial Data
     Length of its Authentication Method Advertisement), which the codec
     reads with it; they reach the destination before anything else (see
     L{Socks6Handshake.unconsumed});
  2. sessions: a Session ID names a live session (the request then needs
     no authentication and acts as the session's user, with its
     credentials; the reply carries Session OK) or not (an Authentication
     Reply failure with Session Invalid, then close).  With Session
     Teardown the session ends and the request is served as if outside any
     session;
  3. authentication, outside a session: without an authenticator
     (L{HandshakeSettings.requireAuth} false), none (credentials sent 0-RTT
     are kept for stream isolation and answered "success"); with one,
     username/password either 0-RTT (an Authentication Data option in the
     request: a L{CheckCredentials}, then one Authentication Reply) or, for
     a client that advertised method 2 without credentials, the slow path
     of ambiguity A6 (an Authentication Reply failure selecting method 2,
     a bare RFC 1929 request and reply, then the final Authentication
     Reply).  Anything else is answered with method 0xFF and refused;
  4. a Session Request (outside a session, not with Session Teardown)
     opens one, bound to the user and credentials just checked; its ID goes
     in the successful Authentication Reply (ambiguity A2);
  5. idempotence, inside a session: a window on request, a token spent
     before the request is acted on (Idempotence Accepted), or the
     Authentication Reply fails with Idempotence Rejected and the
     connection closes (a session the same request opened is closed too):
     a replayed request never reaches the destination twice.  The window
     goes in every later successful reply of the session;
  6. the successful Authentication Reply (a L{Send}), then a
     L{RequestReady}: the command (NOOP, CONNECT, BIND, UDP ASSOCIATE, or
     an unknown code, answered 0x07) is the pipeline's, which answers with
     L{Socks6Handshake.reply}: one Operation Reply, two for a BIND.

The options of every reply are in the order the old handler wrote them:
the username/password reply, Session OK or Session ID, Idempotence
Accepted, Idempotence Window.

Malformed requests are refused without a reply (ambiguity A5); a first
byte other than 6 gets the Version Mismatch reply, the single byte C{06}.

The session table is the server's, passed in (L{SessionStore}); the
handshake never makes one.
"""

from __future__ import annotations

from enum import Enum, IntEnum
from ipaddress import IPv4Address
from typing import Any

from socksd.address import Destination
from socksd.errors import MalformedMessage, UnsupportedVersion
from socksd.handshake._actions import (
    Action,
    AwaitSessions,
    CheckCredentials,
    HandshakeSettings,
    Refuse,
    ReplyLabel,
    Request,
    RequestReady,
    Send,
)
from socksd.handshake._sessions import (
    SessionAnswer,
    SessionQuery,
    SessionRecord,
    SessionStore,
    consultStore,
)
from socksd.replies import ReplyProfile
from socksd.wire import socks6
from socksd.wire.socks6 import (
    AuthenticationReply,
    AuthMethod,
    AuthMethodSelectionOption,
    IdempotenceAcceptedOption,
    IdempotenceRejectedOption,
    IdempotenceWindowOption,
    OperationReply,
    Option,
    SessionIdOption,
    SessionInvalidOption,
    SessionOkOption,
    UsernamePasswordReply,
    UsernamePasswordReplyOption,
    UsernamePasswordRequest,
    VersionMismatch,
)

__all__ = ["Socks6Handshake"]

_UNSPECIFIED = Destination(IPv4Address(0), 0)
_AUTH_SUCCESS = 0
_AUTH_FAILURE = 1
#: The answer for a request that asks nothing of the sessions.
_NO_SESSION = SessionAnswer()


class _Stage(Enum):
    REQUEST = "request"
    CREDENTIALS = "username/password exchange"
    CHECKING = "checking credentials"
    CONSULTING = "asking the session store"
    DONE = "done"


class Socks6Handshake:
    """
    A SOCKS6 client's handshake, from its first byte (06) on; see the
    module docstring and L{socksd.handshake.ServerHandshake}.

    @ivar codec: the L{socks6.Socks6ServerCodec}.
    @ivar request: the client's wire L{socks6.Request}, once parsed.
    @ivar session: the session the request belongs to (or opened), if any.
    @ivar user: the avatar the request acts as (checked credentials' or the
        session's), or L{None}.
    @ivar ended: C{True} once the client sent EOF after its request was in
        (while credentials were checked, or after the L{RequestReady}).
    """

    protocol = "socks6"
    version = 6
    #: See L{ServerHandshake.labelsReplies}.
    labelsReplies = False
    profile = ReplyProfile.SOCKS6

    __slots__ = (
        "codec",
        "request",
        "session",
        "user",
        "ended",
        "_settings",
        "_sessions",
        "_clientHost",
        "_stage",
        "_ready",
        "_checking",
        "_slowPath",
        "_initialData",
        "_then",
    )

    def __init__(
        self,
        settings: HandshakeSettings,
        sessions: SessionStore,
        clientHost: str | None,
    ) -> None:
        """
        @param settings: the server's handshake settings; C{requireAuth}
            says whether the server has an authenticator.
        @param sessions: the server's session table.
        @param clientHost: the client's host, for the per-client session
            cap (L{SessionStore.open}).
        """
        self._settings = settings
        self._sessions = sessions
        self._clientHost = clientHost
        self.codec = socks6.Socks6ServerCodec()
        self.request: socks6.Request | None = None
        self.session: SessionRecord | None = None
        self.user: Any = None
        self.ended = False
        self._stage = _Stage.REQUEST
        #: C{True} once the L{RequestReady} was given.
        self._ready = False
        #: The credentials being checked.
        self._checking: tuple[bytes, bytes] = (b"", b"")
        #: The credentials being checked came on the slow path (A6).
        self._slowPath = False
        #: The request's initial data, until L{unconsumed} takes them.
        self._initialData = b""
        #: What goes on once the session store answers (L{AwaitSessions}).
        self._then: Any = None

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
        """
        See L{ServerHandshake.credentialsChecked}: on the slow path, the
        bare RFC 1929 success first; then the successful Authentication
        Reply (0-RTT: with the RFC 1929 success in it) and the request.
        """
        if self._stage is not _Stage.CHECKING:
            return []
        self.user = user
        actions: list[Action] = []
        if self._slowPath:
            actions.append(Send(self.codec.send(UsernamePasswordReply(_AUTH_SUCCESS))))
            replies: tuple[Option, ...] = ()
        else:
            replies = (UsernamePasswordReplyOption(_AUTH_SUCCESS),)
        actions += self._succeed(user, self._checking, replies)
        return actions

    def credentialsRefused(self) -> list[Action]:
        """
        See L{ServerHandshake.credentialsRefused}: a failed Authentication
        Reply (0-RTT: with the RFC 1929 failure in it; slow path: after the
        bare RFC 1929 failure), then close.
        """
        if self._stage is not _Stage.CHECKING:
            return []
        self._stage = _Stage.DONE
        data = b""
        if self._slowPath:
            data = self.codec.send(UsernamePasswordReply(_AUTH_FAILURE))
            final = AuthenticationReply(False)
        else:
            final = AuthenticationReply(
                False, (UsernamePasswordReplyOption(_AUTH_FAILURE),)
            )
        username, password = self._checking
        shown = username.decode("utf-8", "backslashreplace")
        return [
            Refuse(
                data + self.codec.send(final),
                f"authentication failed for user {shown!r}",
                "AUTHENTICATION_FAILED",
                self._requestValue(None, (username, password)),
            )
        ]

    def clientEnded(self) -> list[Action]:
        """
        See L{ServerHandshake.clientEnded}: once the request is in (while
        credentials are checked, or after the L{RequestReady}) the EOF is
        remembered (L{ended}): the pipeline delivers the initial data, then
        the EOF.  Before, during the request or the slow path's
        username/password exchange, a L{Refuse}.
        """
        stage = self._stage
        if stage is _Stage.DONE:
            if self._ready:
                self.ended = True
            return []
        if stage is _Stage.CHECKING or stage is _Stage.CONSULTING:
            self.ended = True
            return []
        self._stage = _Stage.DONE
        return [Refuse(b"", f"client sent EOF during the {stage.value}")]

    def buffered(self) -> int:
        """
        See L{ServerHandshake.buffered}: the bytes the codec holds (an
        incomplete request, or bytes after it).  The request's initial data
        are parsed, and capped by the codec at 16384 bytes: they do not
        count.
        """
        return self.codec.buffered()

    def unconsumed(self) -> bytes:
        """
        See L{ServerHandshake.unconsumed}.

        The first call after the L{RequestReady} returns the request's
        initial data (L{socks6.Request.initialData}, CONNECT only) followed
        by every byte the client sent after them (after the bare RFC 1929
        request on the slow path): the connection treats all of it as
        early data, and so the destination gets the initial data first.
        Later calls return only what came since.  Before the
        L{RequestReady}, and after a L{Refuse}, this is C{b""}: the bytes
        are not the destination's (a refused request's initial data are
        dropped, so that a rejected replay never reaches it).
        """
        if not self._ready:
            return b""
        initialData, self._initialData = self._initialData, b""
        return initialData + self.codec.unconsumed()

    def reply(
        self,
        code: IntEnum,
        bound: Destination | None = None,
        options: tuple[Any, ...] = (),
    ) -> bytes:
        """
        See L{ServerHandshake.reply}: an Operation Reply.  C{options} are
        the stack-option replies the command computed (see
        L{socksd.server.socks6.stack}), sent only with a bound address: a
        refusal passes none.
        For a BIND, a second Operation Reply may follow a successful first
        one.
        """
        return self.codec.send(
            OperationReply(int(code), bound or _UNSPECIFIED, tuple(options))
        )

    def replyLabel(self, code: IntEnum) -> ReplyLabel:
        """See L{ServerHandshake.replyLabel}: the code itself."""
        return code

    # Steps

    def _parse(self, data: bytes) -> list[Action]:
        """Feed the codec, and handle every message it gives, in order."""
        try:
            messages = self.codec.receiveData(data)
        except UnsupportedVersion as error:
            self._stage = _Stage.DONE
            return [
                Refuse(
                    self.codec.send(VersionMismatch()),
                    f"not a SOCKS6 request: {error}",
                    "VERSION_MISMATCH",
                )
            ]
        except MalformedMessage as error:
            # Ambiguity A5: no reply.
            self._stage = _Stage.DONE
            return [Refuse(b"", f"malformed SOCKS6 message: {error}")]
        actions: list[Action] = []
        for message in messages:
            if isinstance(message, socks6.Request):
                actions += self._requestReceived(message)
            elif isinstance(message, UsernamePasswordRequest):
                actions += self._checkCredentials(
                    (message.username, message.password), slowPath=True
                )
            stage = self._stage
            if (
                stage is _Stage.DONE
                or stage is _Stage.CHECKING
                or stage is _Stage.CONSULTING
            ):
                break
        return actions

    def _requestReceived(self, request: socks6.Request) -> list[Action]:
        """Sessions, then authentication (module docstring, steps 2 and 3)."""
        self.request = request
        self._initialData = request.initialData
        sessionId = request.sessionId
        if sessionId is not None:
            if request.sessionTeardown:
                return self._consult(
                    SessionQuery(sessionId, teardown=True), self._tornDown
                )
            return self._consult(
                SessionQuery(
                    sessionId,
                    windowRequest=request.idempotenceWindowRequest,
                    token=request.idempotenceToken,
                ),
                self._inSession,
            )
        return self._authenticate()

    def _consult(self, query: SessionQuery, then: Any) -> list[Action]:
        """
        Ask the session store C{query}; C{then(answer)} goes on with its
        answer, now or (L{AwaitSessions}) once the store answers.
        """
        store = self._sessions
        consult = getattr(store, "consult", None)
        answer = consultStore(store, query) if consult is None else consult(query)
        if type(answer) is SessionAnswer:
            return then(answer)
        self._stage = _Stage.CONSULTING
        self._then = then
        return [AwaitSessions(answer)]

    def sessionsAnswered(self, answer: SessionAnswer) -> list[Action]:
        """
        The session store answered (after an L{AwaitSessions}): go on with
        the request.
        """
        if self._stage is not _Stage.CONSULTING:
            return []
        then, self._then = self._then, None
        self._stage = _Stage.REQUEST
        return then(answer)

    def _tornDown(self, answer: SessionAnswer) -> list[Action]:
        """The session is gone: serve the request as outside any session."""
        return self._authenticate()

    def _inSession(self, answer: SessionAnswer) -> list[Action]:
        """The request names a session: it is live (or not)."""
        session = answer.session
        if session is None:
            return [
                self._refuse(
                    AuthenticationReply(False, (SessionInvalidOption(),)),
                    "unknown or expired SOCKS6 session",
                    "SESSION_INVALID",
                )
            ]
        self.session = session
        self.user = session.user
        return self._finish(answer, session.user, session.credentials, ())

    def _authenticate(self) -> list[Action]:
        """Authentication, outside a session (module docstring, step 3)."""
        request = self.request
        assert request is not None
        credentials = request.usernamePassword
        if not self._settings.requireAuth:
            replies: tuple[Option, ...] = ()
            if credentials is not None:
                replies = (UsernamePasswordReplyOption(_AUTH_SUCCESS),)
            return self._succeed(None, credentials, replies)
        if credentials is not None:
            return self._checkCredentials(credentials, slowPath=False)
        if AuthMethod.USERNAME_PASSWORD in request.authMethods:
            self._stage = _Stage.CREDENTIALS
            selection = self.codec.send(
                AuthenticationReply(
                    False, (AuthMethodSelectionOption(AuthMethod.USERNAME_PASSWORD),)
                )
            )
            # The client may have sent its credentials already.
            return [Send(selection), *self._parse(b"")]
        return [
            self._refuse(
                AuthenticationReply(
                    False,
                    (AuthMethodSelectionOption(AuthMethod.NO_ACCEPTABLE_METHODS),),
                ),
                "no acceptable authentication method offered",
                "NO_ACCEPTABLE_METHODS",
            )
        ]

    def _checkCredentials(
        self, credentials: tuple[bytes, bytes], slowPath: bool
    ) -> list[Action]:
        self._stage = _Stage.CHECKING
        self._checking = credentials
        self._slowPath = slowPath
        return [CheckCredentials(credentials[0], credentials[1])]

    def _succeed(
        self,
        user: Any,
        credentials: tuple[bytes, bytes] | None,
        replies: tuple[Option, ...],
    ) -> list[Action]:
        """
        Authentication is over (or not needed), outside a session: open a
        session when asked (module docstring, step 4), then finish.
        """
        request = self.request
        assert request is not None
        if request.sessionRequest and not request.sessionTeardown:
            return self._consult(
                SessionQuery(
                    open=True,
                    user=user,
                    credentials=credentials,
                    clientHost=self._clientHost,
                    windowRequest=request.idempotenceWindowRequest,
                    token=request.idempotenceToken,
                ),
                lambda answer: self._finish(answer, user, credentials, replies),
            )
        return self._finish(_NO_SESSION, user, credentials, replies)

    def _finish(
        self,
        answer: SessionAnswer,
        user: Any,
        credentials: tuple[bytes, bytes] | None,
        replies: tuple[Option, ...],
    ) -> list[Action]:
        """
        Idempotence (module docstring, step 5), then the successful
        Authentication Reply and the request (step 6).
        """
        request = self.request
        assert request is not None
        options = list(replies)
        session = answer.session
        if answer.opened:
            self.session = session
            if session is not None:
                options.append(SessionIdOption(session.sessionId))
        elif session is not None:
            options.append(SessionOkOption())
        if answer.tokenAccepted is False:
            token = request.idempotenceToken
            return [
                self._refuse(
                    AuthenticationReply(False, (IdempotenceRejectedOption(),)),
                    f"idempotence token {token} rejected "
                    "(spent or outside the window)",
                    "IDEMPOTENCE_REJECTED",
                    user,
                    credentials,
                )
            ]
        if session is not None:
            if answer.tokenAccepted:
                options.append(IdempotenceAcceptedOption())
            window = session.window
            if window is not None:
                options.append(IdempotenceWindowOption(window.base, window.size))
        self._stage = _Stage.DONE
        self._ready = True
        return [
            Send(self.codec.send(AuthenticationReply(True, tuple(options)))),
            RequestReady(self._requestValue(user, credentials)),
        ]

    def _refuse(
        self,
        reply: AuthenticationReply,
        reason: str,
        label: str,
        user: Any = None,
        credentials: tuple[bytes, bytes] | None = None,
    ) -> Refuse:
        """Refuse the parsed request with the failed Authentication Reply."""
        self._stage = _Stage.DONE
        return Refuse(
            self.codec.send(reply),
            reason,
            label,
            self._requestValue(user, credentials),
        )

    def _requestValue(
        self, user: Any, credentials: tuple[bytes, bytes] | None
    ) -> Request:
        """The version-neutral request; the credentials also isolate."""
        request = self.request
        assert request is not None
        return Request(
            6,
            "socks6",
            request.command,
            request.destination,
            ReplyProfile.SOCKS6,
            user,
            credentials,
            credentials,
            socks6=request,
            session=self.session,
        )
