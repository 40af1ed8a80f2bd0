"""
Bandwidth and quotas on the tunnels of a fleet: L{FleetBandwidth}, the
factory's C{bandwidth}.

Per-client and per-user rates (C{--bandwidth-per-client},
C{--bandwidth-per-user}) are token buckets in Redis
(C{PREFIX:bw:user:NAME:up}, ...), one per holder and direction, that every
process of the fleet leases from (L{LeasedBucket}): a process takes a
lease of L{leaseFor} bytes (1/20 s of the rate, at least 16 KiB) when its
credit falls under half a lease, so Redis is asked about 20 times a second
per busy holder and process, never per read.  A direction in debt is
paused, as with the local buckets (L{socksd.server.limits.Throttle}),
until a lease pays it.

The worst case over any window of T seconds, for one holder and
direction: C{rate * T + burst + P * lease + D * 64 KiB} bytes, where P is
the processes of the fleet (instances times workers) that hold a lease at
the start of the window and D the tunnel directions that went into debt
(one read each) at its end.  With Redis away, each process falls back to
its own bucket at the full rate (failure policy C{open}; the bound is then
P times the rate).

A rule's own bandwidth stays per tunnel, as without shared state.  Quotas
are metered here too (L{socksd.shared.quota.QuotaMeter}): a tunnel with a
rate or a quota takes the ordinary relay, which sees every read.
"""

from __future__ import annotations

from typing import Any, Hashable

from twisted.logger import Logger

from socksd.server.limits import (
    BandwidthLimits,
    RateBucket,
    Throttle,
    _burstFor,
    clientKey,
    userKey,
)
from socksd.shared import _scripts
from socksd.shared.link import DEADLINE, SharedStateDown

__all__ = ["FleetBandwidth", "LeasedBucket", "MeteredThrottle", "leaseFor"]

log = Logger()


#: Seconds a direction in debt stays paused unless a lease wakes it first
#: (a lease comes, or fails, within the link's deadline).
WAIT = DEADLINE + 0.1


def leaseFor(rate: float) -> int:
    """The bytes a process leases at a time: 1/20 s of C{rate}, at least 16 KiB."""
    return int(max(16384.0, rate / 20))


class LeasedBucket:
    """
    A token bucket shared by the fleet: the credit comes in leases from
    Redis (L{_scripts.RATE_LEASE}); while Redis is away, a local bucket at
    the same rate takes over.  Like a L{RateBucket}, L{charge} takes the
    bytes (into debt if need be) and says how long to wait.

    @ivar rate: bytes per second, for the whole fleet.
    @ivar burst: the most the shared bucket holds.
    @ivar lease: the bytes asked for at a time.
    """

    __slots__ = (
        "rate",
        "burst",
        "lease",
        "key",
        "_link",
        "_clock",
        "_tokens",
        "_asking",
        "_retry",
        "_local",
        "_throttles",
        "__weakref__",
    )

    def __init__(self, link: Any, key: str, rate: float, clock: Any) -> None:
        self.rate = float(rate)
        self.burst = _burstFor(rate)
        self.lease = leaseFor(rate)
        self.key = key
        self._link = link
        self._clock = clock
        self._tokens = 0.0
        self._asking = False
        self._retry: Any = None
        self._local = RateBucket(rate, self.burst, clock)
        self._throttles: list[Any] = []

    def charge(self, n: int) -> float:
        """Take C{n} bytes; seconds until the debt is paid (0: none)."""
        if not self._link.up:
            return self._local.charge(n)
        self._tokens -= n
        if self._tokens < self.lease / 2:
            self._ask()
        if self._tokens >= 0:
            return 0.0
        # In debt: wait for the lease that pays it (it wakes the throttle);
        # a timer that resumed earlier would let one more read into debt.
        return WAIT

    def watch(self, throttle: Any) -> None:
        """Wake C{throttle} when a lease comes."""
        self._throttles.append(throttle)

    def unwatch(self, throttle: Any) -> None:
        try:
            self._throttles.remove(throttle)
        except ValueError:
            pass

    def _ask(self) -> None:
        if self._asking or self._retry is not None:
            return
        self._asking = True
        # Enough to pay the debt and leave half a lease.
        want = int(max(self.lease, self.lease / 2 - self._tokens))
        d = self._link.script(
            _scripts.RATE_LEASE,
            [self.key],
            [repr(self.rate), repr(self.burst), want, self.lease // 4],
        )
        d.addCallbacks(self._granted, self._failed)

    def _granted(self, reply: Any) -> None:
        self._asking = False
        granted, wait = int(reply[0]), int(reply[1])
        self._tokens += granted
        if granted and self._tokens >= 0:
            # The debt is paid: the paused directions may go on.
            for throttle in list(self._throttles):
                throttle.wake()
        if self._tokens < self.lease / 2:
            # Not enough yet: ask again when the fleet's bucket has it.
            self._retry = self._clock.callLater(max(0.005, wait / 1000), self._retried)

    def _retried(self) -> None:
        self._retry = None
        if self._tokens < self.lease / 2:
            self._ask()

    def _failed(self, failure: Any) -> None:
        self._asking = False
        if not failure.check(SharedStateDown):
            log.failure("leasing bandwidth for {key} failed", failure, key=self.key)
        # The debt is forgiven: the local bucket takes over until Redis is back.
        self._tokens = max(self._tokens, 0.0)
        for throttle in list(self._throttles):
            throttle.wake()


class MeteredThrottle(Throttle):
    """
    A L{Throttle} whose buckets may be shared (L{LeasedBucket}) or quota
    meters (L{socksd.shared.quota.QuotaMeter}): they wake it when credit
    comes, and it tells them when the tunnel is gone.
    """

    __slots__ = ()

    def stop(self) -> None:
        super().stop()
        for bucket in self.buckets:
            unwatch = getattr(bucket, "unwatch", None)
            if unwatch is not None:
                unwatch(self)
            stop = getattr(bucket, "stop", None)
            if stop is not None:
                stop()


class FleetBandwidth(BandwidthLimits):
    """
    The factory's C{bandwidth} with shared state: see the module docstring.

    @ivar fleet: the L{socksd.shared.fleet.Fleet}.
    """

    def __init__(
        self,
        reactor: Any,
        fleet: Any,
        perClient: float | None = None,
        perUser: float | None = None,
    ) -> None:
        super().__init__(reactor, perClient, perUser)
        self.fleet = fleet

    def _bucket(self, key: Hashable, rate: float) -> Any:
        bucket = self._buckets.get(key)
        if bucket is None:
            link = self.fleet.link
            if link is None:
                bucket = RateBucket(rate, _burstFor(rate), self._reactor)
            else:
                kind, holder, direction = key  # type: ignore[misc]
                name = self.fleet.keyPart(holder)
                bucket = LeasedBucket(
                    link,
                    f"{self.fleet.prefix}bw:{kind}:{name}:{direction}",
                    rate,
                    self._reactor,
                )
            self._buckets[key] = bucket
        return bucket

    def meters(
        self, client: Any, user: Any, ruleRate: float | None, admission: Any = None
    ) -> bool:
        """A tunnel is metered when a rate or a quota applies to it."""
        return bool(
            ruleRate is not None
            or self.perClient is not None
            or (self.perUser is not None and userKey(user) is not None)
            or getattr(admission, "quotas", None)
        )

    def throttle(
        self,
        relay: Any,
        client: Any,
        user: Any,
        ruleRate: float | None = None,
        admission: Any = None,
    ) -> bool:
        """Throttle both directions: the rates, and the quotas' meters."""
        from socksd.shared.quota import QuotaMeter

        quotas = getattr(admission, "quotas", None) or ()
        ledgers = [self.fleet.ledgerFor(quota, holder) for quota, holder in quotas]
        record = getattr(relay, "_record", None)
        meters = [QuotaMeter(ledger, relay, record) for ledger in ledgers]
        attached = False
        for direction, name in ((relay.up, "up"), (relay.down, "down")):
            buckets: list[Any] = self.bucketsFor(client, user, ruleRate, name)
            buckets += meters
            if not buckets:
                continue
            throttle = MeteredThrottle(direction.source, buckets, self._reactor)
            direction.throttle = throttle
            attached = True
            for bucket in buckets:
                if isinstance(bucket, LeasedBucket):
                    bucket.watch(throttle)
            for meter in meters:
                meter.throttles.append(throttle)
        for meter, ledger in zip(meters, ledgers):
            ledger.attach(meter)
        return attached


def holderKey(kind: str, client: Any, user: Any) -> Hashable | None:
    """The holder a per-client or per-user limit counts (L{clientKey}, L{userKey})."""
    return clientKey(client) if kind == "client" else userKey(user)
