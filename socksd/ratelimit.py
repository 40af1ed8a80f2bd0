"""
Token buckets for bandwidth limits.

A L{TokenBucket} holds up to C{burst} bytes of credit and earns C{rate}
bytes of credit per second.  The relay asks L{TokenBucket.take} how much of
a chunk may go now, and L{TokenBucket.delayFor} how long to pause before
the rest may.  A L{BucketRegistry} hands out one shared bucket per key (a
user, a client address), so several tunnels share one limit.

Time comes from an C{IReactorTime} (the reactor, or
L{twisted.internet.task.Clock} in tests); nothing here schedules calls.
"""

from __future__ import annotations

import math
import weakref
from typing import Hashable

from twisted.internet.interfaces import IReactorTime

__all__ = ["TokenBucket", "BucketRegistry"]

#: Credit within this much of a whole byte counts as that byte, so that
#: floating-point clocks (0.1 + 0.1 + ...) do not lose bytes.
_SLACK = 1e-6


class TokenBucket:
    """
    A token bucket: C{rate} bytes per second, bursts of up to C{burst}.

    The bucket starts full.

    @ivar rate: bytes of credit earned per second.
    @ivar burst: the most credit the bucket holds.
    """

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_stamp", "__weakref__")

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        if isinstance(rate, bool) or not (
            isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0
        ):
            raise ValueError(
                f"rate must be a positive number of bytes per second, not {rate!r}"
            )
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be a positive number of bytes, not {burst!r}")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock.seconds()

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self.rate:g}/s burst={self.burst} available={self.available}>"

    def _refill(self) -> None:
        """Add the credit earned since the last look."""
        now = self._clock.seconds()
        elapsed = now - self._stamp
        self._stamp = now
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)

    @property
    def available(self) -> int:
        """Whole bytes that may go now."""
        self._refill()
        return int(self._tokens + _SLACK)

    @property
    def full(self) -> bool:
        """Is the bucket full (as good as a new one)?"""
        self._refill()
        return self._tokens + _SLACK >= self.burst

    def take(self, n: int) -> int:
        """
        Spend credit for up to C{n} bytes.

        @return: how many of the C{n} bytes may go now (0 to C{n}).
        """
        if n < 0:
            raise ValueError("cannot take a negative number of bytes")
        self._refill()
        allowed = min(n, int(self._tokens + _SLACK))
        self._tokens = max(0.0, self._tokens - allowed)
        return allowed

    def delayFor(self, n: int) -> float:
        """
        Seconds until C{n} bytes of credit are available (0 if they are).

        A bucket never holds more than C{burst}, so for C{n > burst} this is
        the time until the bucket is full.
        """
        if n < 0:
            raise ValueError("cannot wait for a negative number of bytes")
        self._refill()
        missing = min(n, self.burst) - self._tokens
        if missing <= _SLACK:
            return 0.0
        return missing / self.rate


class BucketRegistry:
    """
    Shared buckets, one per key, all with the same rate and burst.

    A bucket is kept while something (a tunnel) holds it, and after that
    until it has refilled: a full bucket is as good as a new one, so
    forgetting it changes nothing.  The registry therefore holds only the
    buckets in use or used within the last C{burst / rate} seconds.

    @ivar rate: bytes per second for every bucket.
    @ivar burst: the burst of every bucket.
    """

    #: Look for full buckets to forget once this many are remembered.
    PRUNE_AT = 64

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        TokenBucket(rate, burst, clock)  # validate the parameters now
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._live: weakref.WeakValueDictionary[Hashable, TokenBucket] = (
            weakref.WeakValueDictionary()
        )
        self._recent: dict[Hashable, TokenBucket] = {}
        self._pruneAt = self.PRUNE_AT

    def __len__(self) -> int:
        """How many buckets the registry knows."""
        return len(set(self._live.keys()) | set(self._recent))

    def bucketFor(self, key: Hashable) -> TokenBucket:
        """
        The bucket shared by everything under C{key} (created full if new).
        """
        bucket = self._live.get(key)
        if bucket is None:
            bucket = self._recent.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self._clock)
            self._live[key] = bucket
        self._recent[key] = bucket
        if len(self._recent) >= self._pruneAt:
            self.prune()
        return bucket

    def prune(self) -> None:
        """
        Forget the full buckets (those in use stay reachable through their
        holders and the weak map).
        """
        self._recent = {
            key: bucket for key, bucket in self._recent.items() if not bucket.full
        }
        self._pruneAt = max(self.PRUNE_AT, 2 * len(self._recent))
