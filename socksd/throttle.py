"""
Login throttling: after too many failed logins from one client address,
that address is locked out for a while, and its logins are refused without
asking the checkers.

The server's connection asks L{LoginThrottle.allowed} before every
password check (SOCKS5's RFC 1929 and proposal 229, SOCKS6, HTTP CONNECT;
whatever checker answers: memory, file, PAM, LDAP, RADIUS), and reports
each outcome.  After C{failures} failures within C{period} seconds, the
address is locked for C{lockout} seconds; each further lock of the same
address doubles that, up to C{maxLockout}.  Each lock is logged once, with
the address, and counted (C{onLock}, for metrics).  Attempts during a lock
neither count as failures nor extend it.

The per-address state is bounded: an address whose failures are older
than the period and whose lock has expired is forgotten, and past
C{maxAddresses} the oldest entries go first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Callable

from twisted.logger import Logger

from socksd.errors import AuthenticationFailed

__all__ = ["LoginThrottle", "parseThrottle", "DEFAULT_THROTTLE"]

log = Logger()

#: The default: 10 failures within 60 seconds.
DEFAULT_THROTTLE = "10/60"


def parseThrottle(text: str) -> tuple[int, float] | None:
    """
    Parse C{N/SECONDS} (C{10/60}: ten failures within a minute), or
    C{off}.

    @return: C{(N, SECONDS)}, or L{None} for C{off}.
    @raise ValueError: anything else.
    """
    text = text.strip().lower()
    if text in ("off", "no", "0"):
        return None
    count, slash, seconds = text.partition("/")
    try:
        failures = int(count)
        period = float(seconds) if slash else 60.0
    except ValueError:
        raise ValueError(
            f"bad login throttle {text!r}: give FAILURES/SECONDS (10/60) or off"
        ) from None
    if failures < 1 or not period > 0:
        raise ValueError(f"bad login throttle {text!r}: both numbers must be positive")
    return failures, period


def _addressOf(client: Any) -> str:
    host = getattr(client, "host", None)
    return host if isinstance(host, str) else str(client)


class _Entry:
    __slots__ = ("failures", "lockedUntil", "locks")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()
        self.lockedUntil = 0.0
        self.locks = 0


class LoginThrottle:
    """
    See the module docstring.

    @ivar locked: how many locks were imposed.
    @ivar refused: how many logins were refused during a lock.
    """

    def __init__(
        self,
        reactor: Any,
        failures: int = 10,
        period: float = 60.0,
        lockout: float | None = None,
        maxLockout: float = 3600.0,
        onLock: Callable[[str], None] | None = None,
        maxAddresses: int = 100_000,
    ) -> None:
        """
        @param reactor: an C{IReactorTime}.
        @param failures: failed logins that lock an address...
        @param period: ...within this many seconds.
        @param lockout: the first lock's length (C{period} by default).
        @param maxLockout: the longest lock.
        @param onLock: called with the address at each lock (metrics).
        @param maxAddresses: the most addresses remembered.
        """
        self._reactor = reactor
        self._lockoutGiven = lockout
        self._maxLockoutGiven = maxLockout
        self.configure(failures, period)
        self.onLock = onLock
        self.maxAddresses = maxAddresses
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.locked = 0
        self.refused = 0

    def configure(self, failures: int, period: float) -> None:
        """
        Take new limits (a reload): the locks in force stay, and the
        failures counted so far count against the new limits.
        """
        if failures < 1 or period <= 0:
            raise ValueError("failures and period must be positive")
        self.failures = failures
        self.period = period
        given = self._lockoutGiven
        self.lockout = period if given is None else given
        self.maxLockout = max(self._maxLockoutGiven, self.lockout)

    def allowed(self, client: Any) -> bool:
        """
        May C{client} (a Twisted address) try a password now?  A refusal
        is counted in L{refused}.
        """
        entry = self._entries.get(_addressOf(client))
        if entry is None or entry.lockedUntil <= self._reactor.seconds():
            return True
        self.refused += 1
        return False

    def succeededFor(self, client: Any) -> Callable[[Any], Any]:
        """A callback for a login of C{client} that passes its result on."""
        return lambda avatar: avatar

    def failedFor(self, client: Any) -> Callable[[Any], Any]:
        """
        An errback for a login of C{client}: an L{AuthenticationFailed}
        counts as a failed login; the failure is passed on.
        """

        def failed(failure: Any) -> Any:
            if failure.check(AuthenticationFailed):
                self.failed(client)
            return failure

        return failed

    def failed(self, client: Any) -> None:
        """Count a failed login of C{client}; lock it past the limit."""
        now = self._reactor.seconds()
        address = _addressOf(client)
        entries = self._entries
        entry = entries.get(address)
        if entry is None:
            self._prune(now)
            entry = entries[address] = _Entry()
        else:
            entries.move_to_end(address)
        if entry.lockedUntil > now:
            return
        times = entry.failures
        horizon = now - self.period
        while times and times[0] <= horizon:
            times.popleft()
        times.append(now)
        if len(times) < self.failures:
            return
        times.clear()
        entry.locks += 1
        seconds = min(self.maxLockout, self.lockout * 2 ** (entry.locks - 1))
        entry.lockedUntil = now + seconds
        self.locked += 1
        log.warn(
            "login throttle: locking {address} for {seconds:.0f}s after"
            " {failures} failed logins within {period:.0f}s",
            address=address,
            seconds=seconds,
            failures=self.failures,
            period=self.period,
        )
        if self.onLock is not None:
            try:
                self.onLock(address)
            except Exception:
                log.failure("the login throttle's lock hook failed")

    def _prune(self, now: float) -> None:
        """Forget quiet addresses; keep at most C{maxAddresses}."""
        entries = self._entries
        if len(entries) < self.maxAddresses:
            return
        forget = self.period + self.maxLockout
        for address in list(entries):
            entry = entries[address]
            last = entry.failures[-1] if entry.failures else 0.0
            if entry.lockedUntil <= now and now - max(last, entry.lockedUntil) > forget:
                del entries[address]
        while len(entries) >= self.maxAddresses:
            entries.popitem(last=False)
