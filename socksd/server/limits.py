"""
Limits on what clients may take: concurrent connections and bandwidth.

  - L{ConnectionLimits} counts connections in total, per client address and
    per user; the connection asks it to L{admit <ConnectionLimits.admit>}
    each new connection and gets an L{Admission} to release when the
    connection is gone.
  - L{BandwidthLimits} hands out L{Throttle}s: shared debt-based token
    buckets (per client address, per user, per rule) for each direction of
    a tunnel.  The relay tells a direction's throttle how many bytes went
    through; when a bucket is in debt the throttle pauses the source
    transport and resumes it once the debt is paid, so a limited tunnel
    slows down instead of buffering.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Hashable

from twisted.logger import Logger


__all__ = [
    "ConnectionLimits",
    "Admission",
    "BandwidthLimits",
    "RateBucket",
    "Throttle",
    "clientKey",
    "userKey",
]

log = Logger()


def clientKey(client: Any) -> Hashable:
    """
    The key a client address is counted under: its host (the port differs
    per connection), or the address itself when it has no host.
    """
    host = getattr(client, "host", None)
    if isinstance(host, str):
        return host.partition("%")[0].lower()
    return client


def userKey(user: Any) -> Hashable | None:
    """The key a user is counted under: its name, or L{None} for no user."""
    if user is None:
        return None
    if isinstance(user, bytes):
        return user.decode("utf-8", "surrogateescape")
    if isinstance(user, str):
        return user
    name = getattr(user, "name", None)
    return name if isinstance(name, str) else user


def _checkLimit(value: Any, name: str) -> int | None:
    """
    @raise ValueError: C{value} is neither L{None} nor a positive integer.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive number or None, not {value!r}")
    return value


class Admission:
    """
    One admitted connection's share of the L{ConnectionLimits}: release it
    (once) when the connection is gone.

    @ivar client: the client key counted.
    @ivar user: the user key counted, or L{None}.
    """

    __slots__ = ("_limits", "client", "user", "released")

    #: The fleet's admission (L{socksd.shared}), or L{None}: with one, the
    #: pipeline calls C{gate(pipeline, command, decision)} after the
    #: policy's decision, and the gate starts the command (now or once Redis
    #: answers) or refuses the request.
    gate: Any = None

    def __init__(self, limits: ConnectionLimits, client: Hashable) -> None:
        self._limits = limits
        self.client = client
        self.user: Hashable | None = None
        self.released = False

    def moveTo(self, client: Any) -> bool:
        """
        Count the connection under another client address (the real one,
        learnt from a PROXY header).

        @return: C{False}, counting nothing, when that client is at its
            limit.
        """
        key = clientKey(client)
        if self.released or key == self.client:
            return True
        limits = self._limits
        limits._decrement(limits._perClient, self.client)
        if not limits._room(limits._perClient, key, limits.maxPerClient):
            self.client = None
            return False
        self.client = key
        limits._perClient[key] = limits._perClient.get(key, 0) + 1
        return True

    def admitUser(self, user: Any) -> bool:
        """
        Count the connection for C{user} (once authenticated).

        @return: C{False} when the user is at its limit.
        """
        key = userKey(user)
        if key is None or self.released or self.user is not None:
            return True
        limits = self._limits
        if not limits._room(limits._perUser, key, limits.maxPerUser):
            return False
        self.user = key
        limits._perUser[key] = limits._perUser.get(key, 0) + 1
        return True

    def release(self) -> None:
        """The connection is gone: free its places.  Later calls do nothing."""
        if self.released:
            return
        self.released = True
        limits = self._limits
        limits.total -= 1
        if self.client is not None:
            limits._decrement(limits._perClient, self.client)
        if self.user is not None:
            limits._decrement(limits._perUser, self.user)


class ConnectionLimits:
    """
    Caps on concurrent connections.

    @ivar maxTotal: connections at once, or L{None} for no cap.
    @ivar maxPerClient: connections at once from one client address.
    @ivar maxPerUser: connections at once by one authenticated user.
    @ivar total: the connections admitted and not yet released.
    """

    #: The class of the admissions handed out.
    admissionClass: type = Admission

    def __init__(
        self,
        maxTotal: int | None = None,
        maxPerClient: int | None = None,
        maxPerUser: int | None = None,
    ) -> None:
        self.maxTotal = _checkLimit(maxTotal, "maxTotal")
        self.maxPerClient = _checkLimit(maxPerClient, "maxPerClient")
        self.maxPerUser = _checkLimit(maxPerUser, "maxPerUser")
        self.total = 0
        self._perClient: dict[Hashable, int] = {}
        self._perUser: dict[Hashable, int] = {}

    def __repr__(self) -> str:
        return (
            f"<ConnectionLimits {self.total}/{self.maxTotal} total, "
            f"{self.maxPerClient} per client, {self.maxPerUser} per user>"
        )

    def connectionsFrom(self, client: Any) -> int:
        """How many admitted connections C{client}'s address has."""
        return self._perClient.get(clientKey(client), 0)

    def connectionsOf(self, user: Any) -> int:
        """How many admitted connections C{user} has."""
        return self._perUser.get(userKey(user), 0)

    @staticmethod
    def _room(counts: dict[Hashable, int], key: Hashable, limit: int | None) -> bool:
        return limit is None or counts.get(key, 0) < limit

    @staticmethod
    def _decrement(counts: dict[Hashable, int], key: Hashable) -> None:
        left = counts.get(key, 0) - 1
        if left > 0:
            counts[key] = left
        else:
            counts.pop(key, None)

    def admit(self, client: Any) -> Admission | str:
        """
        Admit a new connection from C{client} (a Twisted C{IAddress}).

        @return: an L{Admission}, or the reason (text) it is refused.
        """
        if self.maxTotal is not None and self.total >= self.maxTotal:
            return f"too many connections ({self.maxTotal} in total)"
        key = clientKey(client)
        if not self._room(self._perClient, key, self.maxPerClient):
            return f"too many connections from this client ({self.maxPerClient})"
        self.total += 1
        self._perClient[key] = self._perClient.get(key, 0) + 1
        return self.admissionClass(self, key)


class RateBucket:
    """
    A token bucket that may go into debt: L{charge} always takes the bytes
    (they have already gone through), and says how long to wait until the
    debt is paid.  Shared by every tunnel direction under one key.

    @ivar rate: bytes per second.
    @ivar burst: the most credit the bucket holds.
    """

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_stamp", "__weakref__")

    def __init__(self, rate: float, burst: float, clock: Any) -> None:
        if isinstance(rate, bool) or not (
            isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0
        ):
            raise ValueError(f"rate must be a positive number of bytes/second, not {rate!r}")
        self.rate = float(rate)
        self.burst = max(1.0, float(burst))
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock.seconds()

    def charge(self, n: int) -> float:
        """
        Take C{n} bytes of credit, into debt if need be.

        @return: seconds until the bucket is out of debt (0 if it is not).
        """
        now = self._clock.seconds()
        elapsed = now - self._stamp
        self._stamp = now
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate


class Throttle:
    """
    The bandwidth limit of one tunnel direction: one or more L{RateBucket}s
    charged for every chunk, and the source transport paused while any of
    them is in debt.

    @ivar source: the transport read from (a push producer).
    @ivar buckets: the buckets charged.
    @ivar paused: C{True} while this throttle holds the source paused.
    """

    __slots__ = ("source", "buckets", "paused", "_reactor", "_call", "stopped")

    def __init__(self, source: Any, buckets: list[RateBucket], reactor: Any) -> None:
        self.source = source
        self.buckets = buckets
        self._reactor = reactor
        self._call: Any = None
        self.paused = False
        self.stopped = False

    def consume(self, n: int) -> None:
        """C{n} bytes went through: charge them, and pause if in debt."""
        if self.stopped or n <= 0:
            return
        delay = 0.0
        for bucket in self.buckets:
            delay = max(delay, bucket.charge(n))
        if delay <= 0:
            return
        self.paused = True
        self.source.pauseProducing()
        if self._call is None or not self._call.active():
            self._call = self._reactor.callLater(delay, self._resume)
        else:
            self._call.reset(delay)

    def _resume(self) -> None:
        self._call = None
        if self.stopped:
            return
        self.paused = False
        try:
            self.source.resumeProducing()
        except Exception:
            log.failure("resuming a throttled transport failed")

    def wake(self) -> None:
        """
        Resume now if paused (a shared bucket got the credit it waited
        for: L{socksd.shared}).
        """
        call = self._call
        if self.paused and call is not None and call.active():
            call.reset(0)

    def stop(self) -> None:
        """The tunnel is gone: cancel the pending resume."""
        self.stopped = True
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()


class BandwidthLimits:
    """
    Bandwidth caps, in bytes per second per direction: one bucket per
    client address, one per user, and a rule's bandwidth per tunnel.

    @ivar perClient: the rate every client address shares, or L{None}.
    @ivar perUser: the rate every user shares, or L{None}.
    """

    def __init__(
        self,
        reactor: Any,
        perClient: float | None = None,
        perUser: float | None = None,
    ) -> None:
        for value, name in ((perClient, "perClient"), (perUser, "perUser")):
            if value is not None:
                RateBucket(value, 1, reactor)  # validate now
        self._reactor = reactor
        self.perClient = perClient
        self.perUser = perUser
        self._buckets: weakref.WeakValueDictionary[Hashable, RateBucket] = (
            weakref.WeakValueDictionary()
        )

    def _bucket(self, key: Hashable, rate: float) -> RateBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = RateBucket(rate, _burstFor(rate), self._reactor)
            self._buckets[key] = bucket
        return bucket

    def bucketsFor(
        self, client: Any, user: Any, ruleRate: float | None, direction: str
    ) -> list[RateBucket]:
        """The buckets one direction (C{"up"} or C{"down"}) of a tunnel charges."""
        buckets = []
        if self.perClient is not None:
            buckets.append(
                self._bucket(("client", clientKey(client), direction), self.perClient)
            )
        key = userKey(user)
        if self.perUser is not None and key is not None:
            buckets.append(self._bucket(("user", key, direction), self.perUser))
        if ruleRate is not None:
            buckets.append(RateBucket(ruleRate, _burstFor(ruleRate), self._reactor))
        return buckets

    def meters(
        self, client: Any, user: Any, ruleRate: float | None, admission: Any = None
    ) -> bool:
        """
        Whether a tunnel of C{client} and C{user} may be metered (then it
        takes the ordinary relay, which sees every chunk, not splice(2)):
        always, here, once any bandwidth limit is set.
        """
        return True

    def throttle(
        self,
        relay: Any,
        client: Any,
        user: Any,
        ruleRate: float | None = None,
        admission: Any = None,
    ) -> bool:
        """
        Put throttles on both directions of C{relay} (a
        L{socksd.server.relay.Relay}) when any limit applies.

        @param admission: the connection's L{Admission}, or L{None} (the
            fleet's limits, L{socksd.shared}, meter its quotas).
        @return: whether a limit applies.
        """
        attached = False
        for direction, name in ((relay.up, "up"), (relay.down, "down")):
            buckets = self.bucketsFor(client, user, ruleRate, name)
            if buckets:
                direction.throttle = Throttle(direction.source, buckets, self._reactor)
                attached = True
        return attached


def _burstFor(rate: float) -> float:
    """A quarter of a second's worth of bytes, at least 4 KiB."""
    return max(4096.0, rate / 4)
