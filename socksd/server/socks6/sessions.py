"""
SOCKS6 sessions and idempotence token windows, kept by the proxy.

A L{SessionTable} lives on the L{socksd.server.SocksServerFactory}; it is
attached the first time a SOCKS6 connection asks for it
(L{sessionTableFor}), so the factory knows nothing about SOCKS6.  An
application may attach its own table with other limits before serving::

    factory.socks6Sessions = SessionTable(reactor, idleTimeout=60.0)

A L{Session} is bound to the user (the avatar, or L{None} without
authentication) that opened it: requests inside it act as that user and
need no authentication.  It ends after C{idleTimeout} seconds without a
request, on a Session Teardown, or when the table drops it.

A L{TokenWindow} implements the draft's token arithmetic; it lives with the
sans-IO handshake (L{socksd.handshake._sessions}) and is re-exported here.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.logger import Logger

from socksd.handshake._sessions import TokenWindow

__all__ = [
    "SESSION_ID_LENGTH",
    "MAX_WINDOW_SIZE",
    "TokenWindow",
    "Session",
    "SessionTable",
    "sessionTableFor",
]

log = Logger()

#: Bytes in the Session IDs socksd issues (ambiguity A11).
SESSION_ID_LENGTH = 16
#: The largest token window socksd grants (a client asking for more gets this).
MAX_WINDOW_SIZE = 1024


class Session:
    """
    One SOCKS6 session.

    @ivar sessionId: the opaque ID the client sends back.
    @ivar user: the avatar the session acts as (L{None}: no authentication).
    @ivar credentials: the C{(username, password)} that opened it, or
        L{None}; requests inside the session use it for stream isolation.
    @ivar clientHost: the host of the client that opened it (for the
        per-client cap).
    @ivar window: the L{TokenWindow}, once issued.
    @ivar requests: how many requests the session has served.
    @ivar listeners: the session's BIND listeners with a backlog, by the
        address and port they listen on
        (L{socksd.server.commands.bind.BacklogListener}).
    """

    __slots__ = (
        "listeners",
        "sessionId",
        "user",
        "credentials",
        "clientHost",
        "window",
        "requests",
        "_timer",
    )

    def __init__(
        self,
        sessionId: bytes,
        user: Any,
        credentials: tuple[bytes, bytes] | None,
        clientHost: str | None,
    ) -> None:
        self.sessionId = sessionId
        self.user = user
        self.credentials = credentials
        self.clientHost = clientHost
        self.window: TokenWindow | None = None
        self.requests = 0
        self.listeners: dict[Any, Any] = {}
        self._timer: Any = None

    def __repr__(self) -> str:
        return f"<Session {self.sessionId.hex()} user={self.user!r}>"


class SessionTable:
    """
    The sessions of one proxy.

    @ivar idleTimeout: seconds a session lives without a request.
    @ivar maxPerClient: sessions one client host may hold at once.
    @ivar maxPerUser: sessions one user may hold at once (users are told
        apart by their avatar; the unauthenticated share L{None}).
    @ivar maxWindowSize: the largest token window granted.
    """

    def __init__(
        self,
        reactor: Any,
        idleTimeout: float = 300.0,
        maxPerClient: int = 64,
        maxPerUser: int = 256,
        maxWindowSize: int = MAX_WINDOW_SIZE,
    ) -> None:
        """
        @param reactor: an C{IReactorTime}, for the idle timeouts.
        """
        if idleTimeout <= 0:
            raise ValueError("idleTimeout must be positive")
        if maxPerClient < 1 or maxPerUser < 1:
            raise ValueError("session caps must be at least 1")
        if not 1 <= maxWindowSize < 2**31:
            raise ValueError("maxWindowSize is out of range")
        self._reactor = reactor
        self.idleTimeout = idleTimeout
        self.maxPerClient = maxPerClient
        self.maxPerUser = maxPerUser
        self.maxWindowSize = maxWindowSize
        self._sessions: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(
        self,
        user: Any,
        credentials: tuple[bytes, bytes] | None,
        clientHost: str | None,
    ) -> Session | None:
        """
        Open a session for C{user}.

        @return: the new session, or L{None} when a cap is reached (the
            draft: a Session Request the proxy will not honour is ignored).
        """
        sessions = self._sessions.values()
        if sum(1 for s in sessions if s.clientHost == clientHost) >= self.maxPerClient:
            return None
        if sum(1 for s in sessions if s.user == user) >= self.maxPerUser:
            return None
        sessionId = secrets.token_bytes(SESSION_ID_LENGTH)
        while sessionId in self._sessions:
            sessionId = secrets.token_bytes(SESSION_ID_LENGTH)
        session = Session(sessionId, user, credentials, clientHost)
        self._sessions[sessionId] = session
        self.touch(session)
        return session

    def find(self, sessionId: bytes) -> Session | None:
        """The live session with C{sessionId}, or L{None}."""
        return self._sessions.get(sessionId)

    def touch(self, session: Session) -> None:
        """A request used C{session}: restart its inactivity timer."""
        timer = session._timer
        if timer is not None and timer.active():
            timer.cancel()
        session._timer = self._reactor.callLater(
            self.idleTimeout, self._expired, session.sessionId
        )

    def close(self, sessionId: bytes) -> bool:
        """
        End a session (Session Teardown).

        @return: C{True} when there was one.
        """
        session = self._sessions.pop(sessionId, None)
        if session is None:
            return False
        timer, session._timer = session._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        return True

    def issueWindow(self, session: Session, requested: int) -> TokenWindow | None:
        """
        Give C{session} a token window of C{requested} tokens (at most
        L{maxWindowSize}) from a random base, unless it has one.

        @return: the new window, or L{None} when the session already had one
            (the draft: no second window).
        """
        if session.window is not None:
            return None
        size = max(1, min(requested, self.maxWindowSize))
        session.window = TokenWindow(secrets.randbits(32), size)
        return session.window

    def _expired(self, sessionId: bytes) -> None:
        session = self._sessions.pop(sessionId, None)
        if session is not None:
            session._timer = None
            log.info(
                "SOCKS6 session {sessionId} ended after {timeout}s of inactivity",
                sessionId=sessionId.hex(),
                timeout=self.idleTimeout,
            )


def sessionTableFor(factory: Any) -> SessionTable:
    """
    The L{SessionTable} of C{factory} (its C{socks6Sessions} attribute),
    made with the defaults and attached the first time it is asked for.
    """
    table = getattr(factory, "socks6Sessions", None)
    if table is None:
        table = SessionTable(factory.reactor)
        factory.socks6Sessions = table
    return table
