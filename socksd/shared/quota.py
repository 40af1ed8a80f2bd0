"""
Volume quotas, counted across restarts and (with Redis) across the fleet.

A quota (L{socksd.policy.quota.Quota}: so many bytes per calendar period
in UTC) is counted per I{holder}: a user (C{--quota-per-user}, a rule's
quota), or for a rule's quota on a request without a user, a client
address.  The bytes of a tunnel are both directions together.

Where the counts live (L{QuotaStore}):

  - L{RedisQuotas}: one hash per period (C{PREFIX:quota:PERIOD:NAME}, e.g.
    C{socksd:quota:month:2025-06}), a field per quota and holder
    (C{user/alice}, C{rule:video/alice}, C{rule:video/client:192.0.2.7}),
    the bytes charged; it expires a period after its period ends.
  - L{FileQuotas}: the same counts in a JSON file of the one process
    (without C{--shared-state}), written every few seconds and when socksd
    stops, atomically (a new file renamed over the old).

Each process leases bytes in chunks (L{QuotaLedger}), so that the store is
asked once per chunk, not per read: a lease charges the store first, and
the relay's reads spend it (L{QuotaMeter}, a bucket of the tunnel's
L{Throttle <socksd.server.limits.Throttle>}).  When a lease finds the
quota spent, every tunnel of that holder in the process ends; the others
find out at their own next lease.  Unspent leases are given back when the
holder's last tunnel in the process ends.  So a quota is exceeded by at most
one read (64 KiB) per tunnel direction; leases held unspent by other
processes make it refuse at most one chunk per process early.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable
from urllib.parse import quote

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from socksd.policy.quota import PERIODS, Quota, periodOf
from socksd.server.relay import abortTransport
from socksd.shared import _scripts
from socksd.shared.link import SharedStateDown

__all__ = [
    "QuotaLedger",
    "QuotaMeter",
    "RedisQuotas",
    "FileQuotas",
    "holderOf",
    "fieldOf",
    "chunkFor",
    "WAIT",
]

log = Logger()

#: Seconds a tunnel waits, paused, for a lease before it looks again (the
#: ledger wakes it as soon as the lease comes).
WAIT = 1.1
#: The largest lease, in bytes.
MAX_CHUNK = 1 << 20
#: The smallest lease, in bytes.
MIN_CHUNK = 4096


def chunkFor(quota: Quota) -> int:
    """The bytes a process leases at a time: 1/64 of the quota, 4 KiB to 1 MiB."""
    return max(MIN_CHUNK, min(MAX_CHUNK, quota.size // 64))


def holderOf(quota: Quota, user: str | None, client: str | None) -> str | None:
    """
    Whom C{quota} counts for a request: its user, or (for a rule's quota)
    its client address when it has no user; L{None}: the quota does not
    apply (C{--quota-per-user} without a user).
    """
    if user is not None:
        return quote(user, safe="")
    if quota.key != "user" and client is not None:
        return "client:" + quote(client, safe="")
    return None


def fieldOf(quota: Quota, holder: str) -> str:
    """The field a quota and holder are counted under."""
    return f"{quota.key}/{holder}"


class QuotaStore:
    """
    Where quota counts live: L{RedisQuotas} or L{FileQuotas}.  Every method
    answers with a Deferred (already fired for the file).
    """

    def lease(self, quota: Quota, field: str, period: str, end: float, want: int) -> Deferred[int]:
        """Charge up to C{want} bytes within the quota; the bytes granted."""
        raise NotImplementedError()

    def adjust(self, quota: Quota, field: str, period: str, end: float, amount: int) -> Deferred[Any]:
        """Add C{amount} bytes (negative: give back) without a limit."""
        raise NotImplementedError()

    def usage(self, now: float) -> Deferred[dict[str, Any]]:
        """The counts of the current periods: C{{period: {"name", "used"}}}."""
        raise NotImplementedError()


class RedisQuotas(QuotaStore):
    """The quota counts in the fleet's Redis; see the module docstring."""

    def __init__(self, link: Any, prefix: str) -> None:
        self._link = link
        self._prefix = prefix

    def keyOf(self, period: str, name: str) -> str:
        """The hash of one period."""
        return f"{self._prefix}quota:{period}:{name}"

    def lease(self, quota: Quota, field: str, period: str, end: float, want: int) -> Deferred[int]:
        expireAt = int(end + (end - _startOf(quota.period, end)))
        d = self._link.script(
            _scripts.QUOTA_LEASE,
            [self.keyOf(quota.period, period)],
            [field, quota.size, want, expireAt],
        )
        return d.addCallback(int)

    def adjust(self, quota: Quota, field: str, period: str, end: float, amount: int) -> Deferred[Any]:
        expireAt = int(end + (end - _startOf(quota.period, end)))
        return self._link.script(
            _scripts.QUOTA_RETURN,
            [self.keyOf(quota.period, period)],
            [field, amount, expireAt],
        )

    def check(self, quota: Quota, field: str, now: float) -> tuple[str, list[Any]]:
        """The key and arguments L{_scripts.ADMIT} checks C{quota} with."""
        name, _, _ = periodOf(quota.period, now)
        return self.keyOf(quota.period, name), [field, quota.size]

    def usage(self, now: float) -> Deferred[dict[str, Any]]:
        from twisted.internet.defer import gatherResults

        names = [periodOf(period, now)[0] for period in PERIODS]
        calls = [
            self._link.call("hgetall", self.keyOf(period, name))
            for period, name in zip(PERIODS, names)
        ]

        def collect(replies: list[Any]) -> dict[str, Any]:
            result: dict[str, Any] = {}
            for period, name, reply in zip(PERIODS, names, replies):
                used = _pairs(reply)
                if used:
                    result[period] = {"name": name, "used": used}
            return result

        return gatherResults(calls, consumeErrors=True).addCallback(collect)


def _pairs(reply: Any) -> dict[str, int]:
    """A HGETALL reply (a dict or a flat list, of bytes) as text -> int."""
    if isinstance(reply, dict):
        items = list(reply.items())
    else:
        items = list(zip(reply[::2], reply[1::2]))
    return {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): int(v)
        for k, v in items
    }


def _startOf(period: str, end: float) -> float:
    return periodOf(period, end - 1)[1]


class FileQuotas(QuotaStore):
    """
    The quota counts of one process in a JSON file; see the module
    docstring.

    @ivar path: the file.
    """

    #: Seconds between writes of a changed count.
    INTERVAL = 5.0

    def __init__(self, path: str, reactor: Any) -> None:
        self.path = path
        self._reactor = reactor
        self._counts: dict[str, dict[str, int]] = {}
        self._dirty = False
        self._call: Any = None
        self.load()

    def load(self) -> None:
        """
        Read the file, keeping the periods that have not ended.

        @raise ValueError: the file is not a quota file.
        """
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read the quota file {self.path}: {error}") from None
        counts = data.get("periods") if isinstance(data, dict) else None
        if not isinstance(counts, dict):
            raise ValueError(f"{self.path} is not a socksd quota file")
        now = time.time()
        current = {f"{p}:{periodOf(p, now)[0]}" for p in PERIODS}
        self._counts = {
            key: {str(k): int(v) for k, v in fields.items()}
            for key, fields in counts.items()
            if key in current and isinstance(fields, dict)
        }

    def save(self) -> None:
        """Write the counts now (a new file, renamed over the old one)."""
        self._dirty = False
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as f:
                json.dump({"version": 1, "periods": self._counts}, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
        except OSError as error:
            log.error(
                "cannot write the quota file {path}: {error}", path=self.path, error=error
            )

    def _changed(self) -> None:
        if not self._dirty:
            self._dirty = True
            self._call = self._reactor.callLater(self.INTERVAL, self._flush)

    def _flush(self) -> None:
        self._call = None
        if self._dirty:
            self.save()

    def stop(self) -> None:
        """socksd stops: write what changed."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        if self._dirty:
            self.save()

    def _fields(self, quota: Quota, period: str) -> dict[str, int]:
        key = f"{quota.period}:{period}"
        fields = self._counts.get(key)
        if fields is None:
            # A new period: forget the ended ones of this kind.
            for old in [k for k in self._counts if k.startswith(quota.period + ":")]:
                del self._counts[old]
            fields = self._counts[key] = {}
        return fields

    def used(self, quota: Quota, field: str, now: float) -> int:
        """The bytes charged to C{field} in the current period."""
        name, _, _ = periodOf(quota.period, now)
        return self._counts.get(f"{quota.period}:{name}", {}).get(field, 0)

    def lease(self, quota: Quota, field: str, period: str, end: float, want: int) -> Deferred[int]:
        fields = self._fields(quota, period)
        used = fields.get(field, 0)
        grant = max(0, min(want, quota.size - used))
        if grant:
            fields[field] = used + grant
            self._changed()
        return succeed(grant)

    def adjust(self, quota: Quota, field: str, period: str, end: float, amount: int) -> Deferred[Any]:
        fields = self._fields(quota, period)
        left = fields.get(field, 0) + amount
        if left > 0:
            fields[field] = left
        else:
            fields.pop(field, None)
        self._changed()
        return succeed(left)

    def usage(self, now: float) -> Deferred[dict[str, Any]]:
        result: dict[str, Any] = {}
        for period in PERIODS:
            name = periodOf(period, now)[0]
            used = self._counts.get(f"{period}:{name}")
            if used:
                result[period] = {"name": name, "used": dict(used)}
        return succeed(result)


class QuotaLedger:
    """
    One quota of one holder, in one process: the bytes leased and not yet
    spent (C{credit}), the tunnels that spend them, the lease being asked
    for.  See the module docstring.

    @ivar quota: the L{Quota}.
    @ivar field: what the store counts it under.
    @ivar credit: bytes leased and not spent (negative: spent before the
        next lease came, at most one read per tunnel direction).
    @ivar owed: bytes granted while the store could not be asked (Redis
        away, failure policy C{open}), to charge once it is back.
    @ivar exhausted: the last lease found the quota spent.
    """

    def __init__(
        self,
        quota: Quota,
        field: str,
        store: QuotaStore,
        clock: Any,
        forget: Callable[[QuotaLedger], None],
        now: Callable[[], float] = time.time,
    ) -> None:
        self.quota = quota
        self.field = field
        self.credit = 0
        self.owed = 0
        self.exhausted = False
        self.meters: set[QuotaMeter] = set()
        self._store = store
        self._clock = clock
        self._forget = forget
        self._now = now
        self._asking = False
        self._chunk = chunkFor(quota)
        self._period, _, self._end = periodOf(quota.period, now())

    def __repr__(self) -> str:
        return f"<QuotaLedger {self.field} {self.quota} credit={self.credit}>"

    def charge(self, n: int) -> float:
        """
        C{n} bytes went through: spend them.

        @return: seconds to pause the tunnel (0: go on).
        """
        self.credit -= n
        if self.credit < self._chunk // 2 and not self._asking:
            self.ask()
        if self.credit >= 0:
            return 0.0
        return WAIT

    def ask(self) -> None:
        """Lease another chunk (unless one is being asked for)."""
        if self._asking:
            return
        now = self._now()
        if now >= self._end:
            self._newPeriod(now)
        self._asking = True
        period, end = self._period, self._end
        d = self._store.lease(self.quota, self.field, period, end, self._chunk)
        d.addCallbacks(self._granted, self._failed, callbackArgs=(period,))

    def _newPeriod(self, now: float) -> None:
        """The period ended: what is left of the lease goes back to it."""
        if self.credit > 0:
            self._store.adjust(
                self.quota, self.field, self._period, self._end, -self.credit
            ).addErrback(lambda failure: None)
        self.credit = min(self.credit, 0)
        self.exhausted = False
        self._period, _, self._end = periodOf(self.quota.period, now)

    def _granted(self, granted: int, period: str) -> None:
        self._asking = False
        if period != self._period:
            # Leased from a period that has ended meanwhile: ask again.
            self._store.adjust(
                self.quota, self.field, period, self._end, -granted
            ).addErrback(lambda failure: None)
            self.ask()
            return
        if granted <= 0:
            if self.credit < 0 or not self.meters:
                self.exhausted = True
                self.endTunnels()
            else:
                self.exhausted = True
            return
        self.exhausted = False
        self.credit += granted
        if self.credit < 0:
            self.ask()
        else:
            for meter in list(self.meters):
                meter.wake()

    def _failed(self, failure: Any) -> None:
        self._asking = False
        if not failure.check(SharedStateDown):
            log.failure("leasing quota for {field} failed", failure, field=self.field)
        # The store cannot be asked: go on, and charge it when it is back.
        self.credit += self._chunk
        self.owed += self._chunk
        for meter in list(self.meters):
            meter.wake()

    def settle(self) -> None:
        """The store is back: charge what was granted while it was away."""
        owed, self.owed = self.owed, 0
        if owed:
            self._store.adjust(
                self.quota, self.field, self._period, self._end, owed
            ).addErrback(self._unsettled, owed)

    def _unsettled(self, failure: Any, owed: int) -> None:
        self.owed += owed

    def endTunnels(self) -> None:
        """The quota is spent: end every tunnel of this holder here."""
        meters = list(self.meters)
        if meters:
            log.info(
                "quota {quota} of {field} spent: ending {count} tunnel(s)",
                quota=str(self.quota),
                field=self.field,
                count=len(meters),
            )
        for meter in meters:
            meter.end(f"quota exhausted: {self.field} ({self.quota})")

    def attach(self, meter: QuotaMeter) -> None:
        """A tunnel spends this quota from now on."""
        self.meters.add(meter)
        if self.credit <= self._chunk // 2 and not self._asking:
            self.ask()

    def detach(self, meter: QuotaMeter) -> None:
        """A tunnel ended; the last one gives back the unspent lease."""
        self.meters.discard(meter)
        if self.meters:
            return
        if self.credit > 0 and not self._asking:
            credit, self.credit = self.credit, 0
            self._store.adjust(
                self.quota, self.field, self._period, self._end, -credit
            ).addErrback(lambda failure: None)
        if not self._asking and not self.owed:
            self._forget(self)


class QuotaMeter:
    """
    A tunnel's share of a L{QuotaLedger}: a bucket of both directions'
    throttles (C{charge(n)}), which ends the tunnel when the quota is
    spent.

    @ivar ledger: the L{QuotaLedger}.
    @ivar relay: the tunnel's relay.
    @ivar record: the connection's log record.
    """

    __slots__ = ("ledger", "relay", "record", "throttles", "ended", "__weakref__")

    def __init__(self, ledger: QuotaLedger, relay: Any, record: Any) -> None:
        self.ledger = ledger
        self.relay = relay
        self.record = record
        self.throttles: list[Any] = []
        self.ended = False

    def charge(self, n: int) -> float:
        """See L{QuotaLedger.charge}."""
        if self.ended:
            return 0.0
        delay = self.ledger.charge(n)
        if delay and self.ledger.exhausted:
            self.end(f"quota exhausted: {self.ledger.field} ({self.ledger.quota})")
            return 0.0
        return delay

    def wake(self) -> None:
        """A lease came: resume the directions waiting for it."""
        for throttle in self.throttles:
            throttle.wake()

    def end(self, reason: str) -> None:
        """End the tunnel: the quota is spent."""
        if self.ended:
            return
        self.ended = True
        if self.record is not None:
            self.record.setReason(reason)
        relay = self.relay
        for transport in (relay.up.source, relay.down.source):
            try:
                abortTransport(transport)
            except Exception:
                log.failure("ending a tunnel over quota failed")

    def stop(self) -> None:
        """The tunnel is gone."""
        self.ended = True
        self.ledger.detach(self)
