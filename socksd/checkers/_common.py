"""
What the checkers share: their argument syntax and a bounded thread pool.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

__all__ = ["splitArguments", "ThreadPoolChecker"]


def splitArguments(text: str, known: set[str]) -> dict[str, str]:
    """
    Parse C{key=value} pairs separated by C{:} (C{\\:} is a colon inside
    a value, as in Twisted's endpoint descriptions).

    @raise ValueError: a pair without C{=}, or an unknown key.
    """
    pairs: dict[str, str] = {}
    parts: list[str] = []
    current = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    for part in parts:
        if not part:
            continue
        key, equals, value = part.partition("=")
        key = key.strip().lower()
        if not equals:
            raise ValueError(f"{part!r} is not KEY=VALUE")
        if key not in known:
            raise ValueError(f"unknown key {key!r} (known: {', '.join(sorted(known))})")
        pairs[key] = value
    return pairs


@implementer(ICredentialsChecker)
class ThreadPoolChecker:
    """
    A checker whose blocking C{check(username, password)} (returning the
    avatar id, or raising L{UnauthorizedLogin}) runs in its own bounded
    thread pool, so that a slow PAM stack or LDAP server never blocks the
    reactor; past C{size} checks at once, later ones wait their turn.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, check: Callable[[bytes, bytes], Any], size: int, name: str) -> None:
        self._check = check
        self.size = size
        self._pool: ThreadPool | None = None
        self._name = name
        self._semaphore = DeferredSemaphore(size)

    def _start(self) -> ThreadPool:
        if self._pool is None:
            from twisted.internet import reactor

            self._pool = ThreadPool(1, self.size, name=self._name)
            self._pool.start()
            reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        return self._pool

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        """Run the check in the pool; see the class docstring."""
        from twisted.internet import reactor

        pool = self._start()
        username, password = credentials.username, credentials.password
        if isinstance(username, str):
            username = username.encode("utf-8")
        if isinstance(password, str):
            password = password.encode("utf-8")
        return self._semaphore.run(
            deferToThreadPool, reactor, pool, self._check, username, password
        )


def refuse(message: str = "") -> UnauthorizedLogin:
    return UnauthorizedLogin(message)
