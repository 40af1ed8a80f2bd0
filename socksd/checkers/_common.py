"""
What the checkers share: their argument syntax, the numbers in it, and a
bounded thread pool with a deadline.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

__all__ = ["splitArguments", "number", "Attempt", "ThreadPoolChecker"]

log = Logger()


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


def number(
    settings: dict[str, str],
    key: str,
    default: float,
    kind: type = float,
    minimum: float = 0,
    maximum: float | None = None,
) -> Any:
    """
    The number C{settings[key]} (C{default} when absent), of C{kind}
    (C{int} or C{float}), above C{minimum} for floats, at least C{minimum}
    for ints, and at most C{maximum}.

    @raise ValueError: not such a number (the message names the key).
    """
    text = settings.get(key)
    if text is None:
        return default
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{key}= must be {what}, not {text!r}") from None
    low = value < minimum if kind is int else not value > minimum
    if low or (maximum is not None and value > maximum) or value != value:
        bound = f"at least {minimum}" if kind is int else f"more than {minimum}"
        if maximum is not None:
            bound += f" and at most {maximum}"
        raise ValueError(f"{key}= must be {bound}, not {text!r}")
    return value


class Attempt:
    """
    One login in a L{ThreadPoolChecker}'s pool, shared by the pool thread
    that checks it and the reactor: the check registers how to abort what
    it waits on (closing its socket); at the deadline the reactor aborts,
    so that the thread returns and the pool has room again.

    @ivar aborted: the deadline passed.
    @ivar deadline: when it passes, in C{time.monotonic()} seconds (for
        the check's own timeouts); infinity without one.
    """

    __slots__ = ("aborted", "deadline", "_lock", "_aborts")

    def __init__(self, deadline: float = math.inf) -> None:
        self.aborted = False
        self.deadline = deadline
        self._lock = threading.Lock()
        self._aborts: list[Callable[[], None]] = []

    def onAbort(self, abort: Callable[[], None]) -> None:
        """
        Call C{abort} (from any thread) when the deadline passes; now, if
        it has passed.
        """
        with self._lock:
            if not self.aborted:
                self._aborts.append(abort)
                return
        abort()

    def abort(self) -> None:
        """The deadline passed: abort what the check waits on."""
        with self._lock:
            self.aborted = True
            aborts, self._aborts = self._aborts, []
        for abort in aborts:
            try:
                abort()
            except Exception:
                log.failure("aborting a login check failed")


@implementer(ICredentialsChecker)
class ThreadPoolChecker:
    """
    A checker whose blocking C{check(username, password, attempt)}
    (returning the avatar id, or raising L{UnauthorizedLogin}; C{attempt}
    is the login's L{Attempt}) runs in its own thread pool, so that a slow
    PAM stack or LDAP server never blocks the reactor.

    The pool is bounded: at most C{size} checks run at once (for LDAP, at
    most C{size} connections are open); later ones wait their turn.  With
    a C{deadline}, a login that has no answer that many seconds after it
    was asked for (waiting its turn included) is refused then, and logged;
    a check still running is aborted (L{Attempt}) and keeps its place in
    the pool until it returns, so the bound holds.

    @ivar size: the most checks at once.
    @ivar deadline: seconds a login may take, or L{None}.
    @ivar running: how many checks run in the pool now.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        check: Callable[[bytes, bytes, Attempt], Any],
        size: int,
        name: str,
        deadline: float | None = None,
        reactor: Any = None,
    ) -> None:
        if size < 1:
            raise ValueError("a checker's pool needs at least one thread")
        self._check = check
        self.size = size
        self.deadline = deadline
        self._pool: ThreadPool | None = None
        self._name = name
        self._semaphore = DeferredSemaphore(size)
        self._reactor = reactor
        self._shutdown: Any = None
        self._retired = False
        self.running = 0

    def _getReactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _start(self) -> ThreadPool:
        if self._pool is None:
            reactor = self._getReactor()
            self._pool = ThreadPool(0, self.size, name=self._name)
            self._pool.start()
            self._shutdown = reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        return self._pool

    def stop(self) -> None:
        """Stop the pool (at reactor shutdown, or when the owner is done)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            if self._shutdown is not None:
                try:
                    self._getReactor().removeSystemEventTrigger(self._shutdown)
                except (ValueError, KeyError):
                    pass
                self._shutdown = None
            pool.stop()

    def retire(self) -> None:
        """
        The owner is done with this checker (a reload replaced it): stop
        its pool once no check runs or waits, now or when the last one is
        answered.
        """
        self._retired = True
        self._stopIfIdle()

    def _stopIfIdle(self) -> None:
        if self._retired and not self.running and not self._semaphore.waiting:
            self.stop()

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        """Run the check in the pool; see the class docstring."""
        reactor = self._getReactor()
        pool = self._start()
        username, password = credentials.username, credentials.password
        if isinstance(username, str):
            username = username.encode("utf-8")
        if isinstance(password, str):
            password = password.encode("utf-8")
        result: Deferred[Any] = Deferred()
        attempt = Attempt(
            math.inf if self.deadline is None else time.monotonic() + self.deadline
        )
        timer: list[Any] = []

        def answer(outcome: Any) -> None:
            if timer and timer[0].active():
                timer[0].cancel()
            if result.called:
                return
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        def run(_: object) -> None:
            if result.called:
                # Refused at the deadline while waiting: give the turn on.
                self._semaphore.release()
                return
            self.running += 1
            work = deferToThreadPool(
                reactor, pool, self._check, username, password, attempt
            )

            def done(outcome: Any) -> None:
                self.running -= 1
                self._semaphore.release()
                self._stopIfIdle()
                answer(outcome)

            work.addBoth(done)

        waiting = self._semaphore.acquire()
        waiting.addCallback(run)
        waiting.addErrback(lambda failure: failure.trap(CancelledError))
        if self.deadline is not None:

            def expire() -> None:
                if result.called:
                    return
                if not waiting.called:
                    waiting.cancel()
                attempt.abort()
                log.warn(
                    "{name}: no answer within {deadline} s; the login is refused",
                    name=self._name,
                    deadline=self.deadline,
                )
                result.errback(
                    UnauthorizedLogin(f"{self._name}: no answer within {self.deadline} s")
                )

            timer.append(reactor.callLater(self.deadline, expire))
        return result
