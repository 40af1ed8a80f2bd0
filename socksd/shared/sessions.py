"""
SOCKS6 sessions and idempotence windows shared by the fleet:
L{SharedSessions}, the factory's C{socks6Sessions}.

A session lives in Redis as a hash (C{PREFIX:s6:ID}, the ID in hex): the
user it acts as and the credentials that opened it (for stream isolation;
keep the Redis private), the client host, the request count, the token
window's base and size; its spent tokens are a set beside it
(C{PREFIX:s6:ID:spent}).  Both expire after the idle timeout, renewed by
every request.  The per-client and per-user session caps are sorted sets
(C{PREFIX:s6c:HOST}, C{PREFIX:s6u:USER}).  Each request in a session is one
script (find, count, issue the window, spend the token:
L{_scripts.S6_FIND}), each new session one (L{_scripts.S6_OPEN}), so a
token is spent once across the fleet and the window moves as draft-11
says, whichever instance the request reaches.

A session's BIND listeners with a backlog are the instance's that made
them: a BIND that joins one must reach that instance.  The user a session
acts as is kept by name: an avatar of socksd's realm
(L{socksd.auth.SocksUser}) comes back as one; another kind of avatar comes
back as its name (text).

While Redis cannot be asked (the link is down, or a script has no answer
within its deadline), sessions fall back to the process's own
L{SessionTable <socksd.server.socks6.sessions.SessionTable>}: a session
made then is known to its instance only, and a request naming a session
kept in Redis gets Session Invalid (the client opens another).
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from socksd.auth import SocksUser
from socksd.handshake._sessions import (
    SessionAnswer,
    SessionQuery,
    TokenWindow,
    consultStore,
)
from socksd.server.limits import userKey
from socksd.server.socks6.sessions import (
    MAX_WINDOW_SIZE,
    SESSION_ID_LENGTH,
    SessionTable,
)
from socksd.shared import _scripts
from socksd.shared.link import SharedStateDown

__all__ = ["SharedSessions", "SharedSession"]

log = Logger()


class SharedSession:
    """
    A session kept in Redis, as one request sees it (a
    L{SessionRecord <socksd.handshake._sessions.SessionRecord>}).

    @ivar listeners: this instance's BIND listeners of the session.
    """

    __slots__ = (
        "sessionId",
        "user",
        "credentials",
        "clientHost",
        "window",
        "requests",
        "listeners",
    )

    def __init__(
        self,
        sessionId: bytes,
        user: Any,
        credentials: tuple[bytes, bytes] | None,
        clientHost: str | None,
        window: TokenWindow | None,
        requests: int,
        listeners: dict[Any, Any],
    ) -> None:
        self.sessionId = sessionId
        self.user = user
        self.credentials = credentials
        self.clientHost = clientHost
        self.window = window
        self.requests = requests
        self.listeners = listeners

    def __repr__(self) -> str:
        return f"<SharedSession {self.sessionId.hex()} user={self.user!r}>"


def _userFields(user: Any) -> tuple[str, str]:
    """The kind and value (hex) a session's user is stored as."""
    if user is None:
        return "n", ""
    if isinstance(user, SocksUser):
        avatarId = user.avatarId
        if isinstance(avatarId, bytes):
            return "sb", avatarId.hex()
        return "st", str(avatarId).encode("utf-8", "surrogateescape").hex()
    name = userKey(user)
    if isinstance(name, bytes):
        return "b", name.hex()
    return "t", str(name).encode("utf-8", "surrogateescape").hex()


def _userFrom(kind: str, value: str) -> Any:
    raw = bytes.fromhex(value)
    if kind == "n":
        return None
    if kind == "sb":
        return SocksUser(raw)
    if kind == "st":
        return SocksUser(raw.decode("utf-8", "surrogateescape"))
    if kind == "b":
        return raw
    return raw.decode("utf-8", "surrogateescape")


def _text(value: Any) -> str:
    if value is None or value is False:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


class SharedSessions:
    """
    The SOCKS6 session store of a fleet; see the module docstring.  It
    answers the handshake's L{SessionQuery}s (C{consult}) with a Deferred
    that fires within the link's deadline, never with a failure.

    @ivar local: the process's own L{SessionTable}, for when Redis is away.
    """

    def __init__(
        self,
        fleet: Any,
        reactor: Any,
        idleTimeout: float = 300.0,
        maxPerClient: int = 64,
        maxPerUser: int = 256,
        maxWindowSize: int = MAX_WINDOW_SIZE,
    ) -> None:
        self.fleet = fleet
        self.idleTimeout = idleTimeout
        self.maxPerClient = maxPerClient
        self.maxPerUser = maxPerUser
        self.maxWindowSize = maxWindowSize
        self.local = SessionTable(
            reactor, idleTimeout, maxPerClient, maxPerUser, maxWindowSize
        )
        self._listeners: dict[bytes, dict[Any, Any]] = {}

    def __len__(self) -> int:
        return len(self.local)

    def _key(self, sessionId: bytes) -> tuple[str, str]:
        key = f"{self.fleet.prefix}s6:{sessionId.hex()}"
        return key, key + ":spent"

    def _listenersOf(self, sessionId: bytes) -> dict[Any, Any]:
        # Only sessions with listeners are kept; empty ones are dropped.
        for old in [k for k, v in self._listeners.items() if not v and k != sessionId]:
            del self._listeners[old]
        return self._listeners.setdefault(sessionId, {})

    # The SessionStore protocol, for the local table's sake (find, close)

    def find(self, sessionId: bytes) -> Any:
        """A session of the local table (kept while Redis was away)."""
        return self.local.find(sessionId)

    def close(self, sessionId: bytes) -> bool:
        """End a session, here and in Redis."""
        closed = self.local.close(sessionId)
        link = self.fleet.link
        if link is not None and link.up:
            link.script(_scripts.S6_CLOSE, list(self._key(sessionId)), []).addErrback(
                lambda failure: None
            )
        return closed

    def consult(self, query: SessionQuery) -> Any:
        """
        Answer C{query}: at once from the local table while Redis is away
        (or for a session the local table holds), else from Redis.
        """
        link = self.fleet.link
        sessionId = query.sessionId
        if (
            link is None
            or not link.up
            or (sessionId is not None and self.local.find(sessionId) is not None)
        ):
            return consultStore(self.local, query)
        if sessionId is not None and query.teardown:
            self.close(sessionId)
            return SessionAnswer()
        result: Deferred[SessionAnswer] = Deferred()
        if sessionId is not None:
            d = self._find(link, query)
        elif query.open:
            d = self._open(link, query)
        else:
            return SessionAnswer()

        def answered(answer: Any) -> None:
            if not result.called:
                result.callback(answer)

        def failed(failure: Any) -> None:
            if not failure.check(SharedStateDown):
                log.failure("asking Redis about a SOCKS6 session failed", failure)
            if result.called:
                return
            # Redis is away: the local table answers (a session kept in
            # Redis is not found there: the client opens another).
            result.callback(consultStore(self.local, query))

        d.addCallbacks(answered, failed)
        return result

    def _find(self, link: Any, query: SessionQuery) -> Deferred[SessionAnswer]:
        sessionId = query.sessionId
        assert sessionId is not None
        window = -1 if query.windowRequest is None else query.windowRequest
        token = -1 if query.token is None else query.token
        d = link.script(
            _scripts.S6_FIND,
            list(self._key(sessionId)),
            [
                int(self.idleTimeout * 1000),
                window,
                self.maxWindowSize,
                token,
                secrets.randbits(32),
            ],
        )

        def found(reply: Any) -> SessionAnswer:
            if not reply:
                return SessionAnswer()
            kind, user, hasCredentials, username, password, host = (
                _text(value) for value in reply[:6]
            )
            base, size, spent, requests = (int(_text(v) or "0") for v in reply[6:10])
            credentials = None
            if hasCredentials == "1":
                credentials = (bytes.fromhex(username), bytes.fromhex(password))
            session = SharedSession(
                sessionId,
                _userFrom(kind, user),
                credentials,
                host or None,
                TokenWindow(base, size) if base >= 0 else None,
                requests,
                self._listenersOf(sessionId),
            )
            return SessionAnswer(session, False, None if spent < 0 else bool(spent))

        return d.addCallback(found)

    def _open(self, link: Any, query: SessionQuery) -> Deferred[SessionAnswer]:
        sessionId = secrets.token_bytes(SESSION_ID_LENGTH)
        kind, user = _userFields(query.user)
        credentials = query.credentials
        host = query.clientHost or ""
        prefix = self.fleet.prefix
        userName = self.fleet.keyPart(userKey(query.user) if query.user is not None else "")
        key, spentKey = self._key(sessionId)
        d = link.script(
            _scripts.S6_OPEN,
            [
                key,
                spentKey,
                f"{prefix}s6c:{self.fleet.keyPart(host)}",
                f"{prefix}s6u:{userName}",
            ],
            [
                int(self.idleTimeout * 1000),
                self.maxPerClient,
                self.maxPerUser,
                kind,
                user,
                "1" if credentials is not None else "0",
                credentials[0].hex() if credentials is not None else "",
                credentials[1].hex() if credentials is not None else "",
                host,
                -1 if query.windowRequest is None else query.windowRequest,
                self.maxWindowSize,
                -1 if query.token is None else query.token,
                secrets.randbits(32),
            ],
        )

        def opened(reply: Any) -> SessionAnswer:
            done, base, size, spent = (int(value) for value in reply)
            if not done:
                if spent == 0:
                    # Opened, then closed: its token was rejected.
                    return SessionAnswer(None, True, False)
                return SessionAnswer()
            session = SharedSession(
                sessionId,
                query.user,
                credentials,
                query.clientHost,
                TokenWindow(base, size) if base >= 0 else None,
                1,
                self._listenersOf(sessionId),
            )
            return SessionAnswer(session, True, None if spent < 0 else bool(spent))

        return d.addCallback(opened)
