"""
What the SOCKS6 handshake needs of the server's sessions: the token
arithmetic of one idempotence window (L{TokenWindow}), and the shape of the
session table the server passes in (L{SessionStore}, holding
L{SessionRecord}s).

The table itself (L{socksd.server.socks6.sessions.SessionTable}) stays in
the server: it runs the idle timers on the reactor.  The handshake asks a
store one question per request (a L{SessionQuery}: find this session, or
open one; issue a window; spend a token) and gets a L{SessionAnswer}.  A
store with a C{consult(query)} method answers itself, now or later (a
shared store in Redis, L{socksd.shared.sessions}, answers later: the
handshake then returns an L{AwaitSessions
<socksd.handshake._actions.AwaitSessions>} action); a store with only the
five synchronous methods L{SessionStore} lists is consulted by
L{consultStore}, so a test can give the handshake a small fake.

A L{TokenWindow} implements the draft's token arithmetic (modulo 2**32): a
token is spent at most once; the window's base moves up (its size stays)
as soon as its lowest token is spent, past every spent token that follows,
and never past an unspent one (draft-11 section 8.5, "SHOULD NOT shift the
window's base beyond the highest unspent token" read as: the base stops at
the lowest unspent token).

Nothing here imports Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from socksd.wire.socks6 import tokenInWindow

__all__ = [
    "TokenWindow",
    "SessionRecord",
    "SessionStore",
    "SessionQuery",
    "SessionAnswer",
    "consultStore",
]


class TokenWindow:
    """
    One session's idempotence token window.

    @ivar base: the first token of the window (0 to 2**32 - 1).
    @ivar size: how many tokens it holds (1 to 2**31 - 1).
    @ivar spent: the spent tokens still inside the window.
    """

    __slots__ = ("base", "size", "spent")

    def __init__(self, base: int, size: int) -> None:
        if not 0 <= base < 2**32:
            raise ValueError(f"window base {base} is not a 32-bit token")
        if not 1 <= size < 2**31:
            raise ValueError(f"window size {size} is out of range")
        self.base = base
        self.size = size
        self.spent: set[int] = set()

    def spend(self, token: int) -> bool:
        """
        Spend C{token}.

        @return: C{True} when it was in the window and unspent (it is now
            spent, and the window may have shifted); C{False} otherwise
            (nothing changes).
        """
        if not tokenInWindow(token, self.base, self.size) or token in self.spent:
            return False
        self.spent.add(token)
        while self.base in self.spent:
            self.spent.discard(self.base)
            self.base = (self.base + 1) % 2**32
        return True


class SessionRecord(Protocol):
    """
    One SOCKS6 session, as the handshake sees it
    (L{socksd.server.socks6.sessions.Session} is one).

    @ivar sessionId: the opaque ID the client sends back.
    @ivar user: the avatar the session acts as (L{None}: no authentication).
    @ivar credentials: the C{(username, password)} that opened it, or
        L{None}; requests inside the session use it for stream isolation.
    @ivar window: the session's L{TokenWindow}, once issued, or L{None}.
    @ivar requests: how many requests the session has served; the handshake
        counts each request it accepts in the session.
    """

    sessionId: bytes
    user: Any
    credentials: tuple[bytes, bytes] | None
    window: TokenWindow | None
    requests: int


class SessionStore(Protocol):
    """
    The sessions of one server, as the handshake uses them
    (L{socksd.server.socks6.sessions.SessionTable} is one).
    """

    def find(self, sessionId: bytes) -> Any:
        """The live L{SessionRecord} with C{sessionId}, or L{None}."""

    def touch(self, session: Any) -> None:
        """A request used C{session}: restart its inactivity timer."""

    def close(self, sessionId: bytes) -> bool:
        """End a session (Session Teardown); C{True} when there was one."""

    def open(
        self, user: Any, credentials: tuple[bytes, bytes] | None, clientHost: str | None
    ) -> Any:
        """
        Open a session for C{user}: a new L{SessionRecord}, or L{None}
        when the server will not (a cap is reached: the draft says a
        Session Request the proxy will not honour is ignored).
        """

    def issueWindow(self, session: Any, requested: int) -> TokenWindow | None:
        """
        Give C{session} a token window of about C{requested} tokens, unless
        it has one (then L{None}: no second window).
        """


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """
    What one SOCKS6 request asks of the sessions, in one question.

    Three kinds: a Session Teardown (C{sessionId} and C{teardown}: end that
    session); a request inside a session (C{sessionId}: find and touch it,
    count the request, issue a window, spend a token); a Session Request
    after authentication (C{open}: open one for C{user}, then the window
    and the token as inside one).

    @ivar sessionId: the session the request names, or L{None}.
    @ivar teardown: end the session C{sessionId}.
    @ivar open: open a session for C{user} (outside a session).
    @ivar user: the avatar a new session acts as.
    @ivar credentials: the credentials that open it (for isolation).
    @ivar clientHost: the client's host, for the per-client session cap.
    @ivar windowRequest: the Idempotence Window Request's size, or L{None}.
    @ivar token: the Idempotence Expenditure's token, or L{None}.
    """

    sessionId: bytes | None = None
    teardown: bool = False
    open: bool = False
    user: Any = None
    credentials: tuple[bytes, bytes] | None = None
    clientHost: str | None = None
    windowRequest: int | None = None
    token: int | None = None


@dataclass(frozen=True, slots=True)
class SessionAnswer:
    """
    The store's answer to a L{SessionQuery}.

    @ivar session: the L{SessionRecord} the request is in (found, or just
        opened), or L{None}: no such session, none opened (a cap, or a
        teardown), or the one just opened was closed again because its
        token was rejected.
    @ivar opened: the query opened a session (C{session} is it, unless the
        token was rejected).
    @ivar tokenAccepted: L{None} when no token was spent (none asked, or no
        session); else whether it was in the window and unspent.
    """

    session: Any = None
    opened: bool = False
    tokenAccepted: bool | None = None


def consultStore(store: SessionStore, query: SessionQuery) -> SessionAnswer:
    """
    Answer C{query} with the synchronous methods of C{store} (the
    L{SessionStore} protocol): the semantics every store follows.
    """
    sessionId = query.sessionId
    if sessionId is not None:
        if query.teardown:
            store.close(sessionId)
            return SessionAnswer()
        session = store.find(sessionId)
        if session is None:
            return SessionAnswer()
        store.touch(session)
        return _useSession(store, session, query, False)
    if query.open:
        session = store.open(query.user, query.credentials, query.clientHost)
        if session is None:
            return SessionAnswer()
        return _useSession(store, session, query, True)
    return SessionAnswer()


def _useSession(
    store: SessionStore, session: Any, query: SessionQuery, opened: bool
) -> SessionAnswer:
    """Count the request, issue the window asked for, spend the token."""
    session.requests += 1
    if query.windowRequest is not None:
        store.issueWindow(session, query.windowRequest)
    accepted = None
    if query.token is not None:
        window = session.window
        accepted = window is not None and window.spend(query.token)
        if not accepted and opened:
            # A replayed request never opens a session.
            store.close(session.sessionId)
            return SessionAnswer(None, True, False)
    return SessionAnswer(session, opened, accepted)
