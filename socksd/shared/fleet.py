"""
A fleet of socksd processes sharing their limits: L{Fleet} (the state
and its failure policy), L{FleetLimits} and L{FleetAdmission} (the
factory's C{limits}: fleet-wide connection caps and the quotas' admission),
and L{FleetService} (starting and stopping it with C{twistd}).

Connection caps across the fleet
================================

C{--max-connections-per-client} and C{--max-connections-per-user} hold
across every worker and instance.  Each process is an I{instance} in
Redis, with a name (host, pid and a random part) and a heartbeat: the
sorted set C{PREFIX:instances} holds each name with the time its heartbeat
expires (L{HEARTBEAT_TTL}, 15 s, renewed every L{HEARTBEAT_INTERVAL}, 5 s).
Each cap is a hash (C{PREFIX:caps:user:NAME}, C{PREFIX:caps:client:HOST})
of instance -> connections.  Admitting a tunnel (L{_scripts.ADMIT}) sums
the counts of the live instances (and drops the dead ones), compares with
the cap, and counts the tunnel, in one atomic script: one round trip per
tunnel, and one more (not waited for) when it ends.  A crashed instance's
tunnels stop counting within 15 seconds.

A connection counts in its own process from the moment it connects (the
local caps, as without shared state), and in the fleet from its request
(when its user is known; behind a PROXY-protocol listener, its real
address too).

The failure policy
==================

While Redis cannot be asked (L{socksd.shared.link}), each process counts
on its own: with C{--shared-state-failure open} new tunnels are admitted by
the local caps, buckets and sessions only; with C{closed} they are refused
with a general-failure reply (SOCKS5 01, SOCKS4 91, SOCKS6 01, HTTP 502).
No request waits for Redis more than its deadline (one second); while the
link is down none waits at all.  When Redis is back, each process takes a
new instance name and counts its live connections under it (the old
name's counts expire with its heartbeat), and charges the quota bytes it
granted meanwhile.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import Any, Hashable
from urllib.parse import quote

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from socksd.errors import GeneralFailure, NotAllowed
from socksd.policy.quota import Quota, periodOf
from socksd.server.limits import Admission, ConnectionLimits, clientKey, userKey
from socksd.shared import _scripts
from socksd.shared.link import FAILURE_MODES, RedisLink, SharedStateDown
from socksd.shared.quota import (
    FileQuotas,
    QuotaLedger,
    RedisQuotas,
    fieldOf,
    holderOf,
)

__all__ = [
    "Fleet",
    "FleetLimits",
    "FleetAdmission",
    "FleetService",
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_TTL",
    "DEFAULT_PREFIX",
]

log = Logger()

#: Seconds between an instance's heartbeats.
HEARTBEAT_INTERVAL = 5.0
#: Seconds after its last heartbeat that an instance's connections stop
#: counting.
HEARTBEAT_TTL = 15.0
#: Seconds a cap's hash lives without an admission.
CAP_TTL = 86400.0
#: The default key prefix.
DEFAULT_PREFIX = "socksd:"


class Fleet:
    """
    The shared state of one process, and its failure policy; see the module
    docstring.

    @ivar link: the L{RedisLink}, or L{None} without C{--shared-state}
        (then only quotas are kept, in C{quotaFile}).
    @ivar prefix: what every key starts with.
    @ivar failure: C{"open"} or C{"closed"}.
    @ivar maxPerClient: the fleet-wide cap per client address, or L{None}.
    @ivar maxPerUser: the fleet-wide cap per user, or L{None}.
    @ivar quotaPerUser: the L{Quota} of each user, or L{None}.
    @ivar instance: this process's name in Redis (a new one after each
        outage).
    @ivar quotas: the L{socksd.shared.quota.QuotaStore}, or L{None}.
    """

    def __init__(
        self,
        reactor: Any,
        link: RedisLink | None = None,
        prefix: str = DEFAULT_PREFIX,
        failure: str = "open",
        maxPerClient: int | None = None,
        maxPerUser: int | None = None,
        quotaPerUser: Quota | None = None,
        quotaFile: str | None = None,
    ) -> None:
        if failure not in FAILURE_MODES:
            raise ValueError(
                f"the failure policy is 'open' or 'closed', not {failure!r}"
            )
        self.reactor = reactor
        self.link = link
        self.prefix = prefix
        self.failure = failure
        self.maxPerClient = maxPerClient
        self.maxPerUser = maxPerUser
        self.quotaPerUser = quotaPerUser
        self.instance = self._newName()
        self.quotas: Any = None
        if link is not None:
            self.quotas = RedisQuotas(link, prefix)
            link.observe(self._linkChanged)
        elif quotaFile is not None:
            self.quotas = FileQuotas(quotaFile, reactor)
        self._ledgers: dict[tuple[str, str], QuotaLedger] = {}
        #: This process's fleet-wide places: cap hash -> connections.
        self._held: dict[str, int] = {}
        self._heartbeat: Any = None

    def __repr__(self) -> str:
        return f"<Fleet {self.instance} link={self.link!r} failure={self.failure}>"

    @staticmethod
    def _newName() -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    def keyPart(self, value: Hashable) -> str:
        """A user name or client address as a part of a key."""
        text = value if isinstance(value, str) else str(value)
        return quote(text, safe="")

    @property
    def instancesKey(self) -> str:
        return f"{self.prefix}instances"

    # Starting and stopping

    def start(self) -> None:
        """Connect to Redis and start the heartbeat."""
        if self.link is not None:
            self.link.start()
            self._heartbeat = LoopingCall(self._beat)
            self._heartbeat.clock = self.reactor
            self._heartbeat.start(HEARTBEAT_INTERVAL, now=False)

    def stop(self) -> Deferred[Any]:
        """Give back what is held, write the quota file, disconnect."""
        from twisted.internet.defer import succeed

        beat, self._heartbeat = self._heartbeat, None
        if beat is not None and beat.running:
            beat.stop()
        calls: list[Deferred[Any]] = []
        for ledger in list(self._ledgers.values()):
            if ledger.credit > 0:
                credit, ledger.credit = ledger.credit, 0
                calls.append(
                    self.quotas.adjust(
                        ledger.quota, ledger.field, ledger._period, ledger._end, -credit
                    ).addErrback(lambda failure: None)
                )
        if isinstance(self.quotas, FileQuotas):
            self.quotas.stop()
        if self.link is None:
            return succeed(None)
        if self.link.up:
            calls.append(
                self.link.call("zrem", self.instancesKey, self.instance).addErrback(
                    lambda failure: None
                )
            )
        link = self.link
        return DeferredList(calls).addBoth(lambda _: link.stop())

    def _beat(self) -> None:
        if self.link is None or not self.link.up:
            return
        self.link.script(
            _scripts.HEARTBEAT,
            [self.instancesKey],
            [self.instance, int(HEARTBEAT_TTL * 1000)],
        ).addErrback(lambda failure: None)

    def _linkChanged(self, up: bool) -> None:
        if not up:
            return
        # Counts made under the old name may be wrong (releases lost in
        # the outage): take a new name, count the live connections anew.
        old, self.instance = self.instance, self._newName()
        keys = [key for key, count in self._held.items() if count > 0]
        self.link.script(
            _scripts.REGISTER,
            [self.instancesKey, *keys],
            [
                self.instance,
                int(HEARTBEAT_TTL * 1000),
                int(CAP_TTL * 1000),
                *[self._held[key] for key in keys],
            ],
        ).addErrback(lambda failure: None)
        self.link.call("zrem", self.instancesKey, old).addErrback(lambda failure: None)
        for ledger in list(self._ledgers.values()):
            ledger.settle()

    # Quotas

    def quotasFor(self, user: Any, client: Any, decision: Any) -> list[tuple[Quota, str]]:
        """The quotas a request counts against, with their holders."""
        quotas = []
        name = userKey(user)
        userName = name if isinstance(name, str) else (None if name is None else str(name))
        host = clientKey(client)
        clientName = host if isinstance(host, str) else None
        for quota in (self.quotaPerUser, getattr(decision, "quota", None)):
            if quota is None:
                continue
            holder = holderOf(quota, userName, clientName)
            if holder is not None:
                quotas.append((quota, holder))
        return quotas

    def ledgerFor(self, quota: Quota, holder: str) -> QuotaLedger:
        """This process's L{QuotaLedger} of C{quota} for C{holder}."""
        field = fieldOf(quota, holder)
        key = (str(quota), field)
        ledger = self._ledgers.get(key)
        if ledger is None:
            ledger = QuotaLedger(
                quota, field, self.quotas, self.reactor, self._forgetLedger
            )
            self._ledgers[key] = ledger
        return ledger

    def _forgetLedger(self, ledger: QuotaLedger) -> None:
        key = (str(ledger.quota), ledger.field)
        if self._ledgers.get(key) is ledger:
            del self._ledgers[key]

    def usage(self) -> Deferred[dict[str, Any]]:
        """The quota counts of the current periods (for C{/quotas})."""
        from twisted.internet.defer import succeed

        if self.quotas is None:
            return succeed({})
        now = time.time()
        d = self.quotas.usage(now)

        def describe(periods: dict[str, Any]) -> dict[str, Any]:
            result: dict[str, Any] = {"periods": periods}
            if self.quotaPerUser is not None:
                quota = self.quotaPerUser
                name, _, end = periodOf(quota.period, now)
                result["quotaPerUser"] = {
                    "size": quota.size,
                    "period": quota.period,
                    "name": name,
                    "ends": int(end),
                }
            result["shared"] = self.link is not None
            if self.link is not None:
                result["redis"] = "up" if self.link.up else "down"
            return result

        return d.addCallback(describe)

    # Admission

    def admit(
        self, admission: FleetAdmission, caps: list[tuple[str, int]], quotas: list[tuple[Quota, str]]
    ) -> Any:
        """
        Ask the fleet to admit a tunnel.

        @return: the verdict (L{None}: admitted; else the exception to
            refuse with and the log's reason), or a Deferred of it.
        """
        link = self.link
        if link is None:
            return self._admitLocally(quotas)
        if not link.up:
            return self._down()
        keys = [self.instancesKey, *(key for key, _ in caps)]
        args: list[Any] = [
            self.instance,
            int(HEARTBEAT_TTL * 1000),
            int(CAP_TTL * 1000),
            len(caps),
            *(limit for _, limit in caps),
        ]
        now = time.time()
        for quota, holder in quotas:
            key, extra = self.quotas.check(quota, fieldOf(quota, holder), now)
            keys.append(key)
            args += extra
        instance = self.instance
        d = link.script(_scripts.ADMIT, keys, args)

        def answered(result: Any) -> Any:
            result = int(result)
            if result == 0:
                if instance != self.instance:
                    # Admitted under the old name, just before it changed:
                    # count it under the new one too (REGISTER counted
                    # what was held then).
                    pass
                admission.registered = [key for key, _ in caps]
                admission.registeredAs = instance
                for key, _ in caps:
                    self._held[key] = self._held.get(key, 0) + 1
                return None
            if result > 0:
                kind = "client" if caps[result - 1][0].startswith(
                    self.prefix + "caps:client:"
                ) else "user"
                limit = caps[result - 1][1]
                reason = f"too many connections for this {kind} (fleet-wide cap {limit})"
                return GeneralFailure(reason), reason
            quota, holder = quotas[-result - 1]
            reason = f"quota exhausted: {fieldOf(quota, holder)} ({quota})"
            return NotAllowed(reason), reason

        def failed(failure: Any) -> Any:
            if not failure.check(SharedStateDown):
                log.failure("the fleet's admission failed", failure)
            return self._down()

        return d.addCallbacks(answered, failed)

    def _down(self) -> Any:
        if self.failure == "open":
            return None
        reason = "shared state unavailable (--shared-state-failure closed)"
        return GeneralFailure(reason), reason

    def _admitLocally(self, quotas: list[tuple[Quota, str]]) -> Any:
        store = self.quotas
        if store is None:
            return None
        now = time.time()
        for quota, holder in quotas:
            field = fieldOf(quota, holder)
            if store.used(quota, field, now) >= quota.size:
                reason = f"quota exhausted: {field} ({quota})"
                return NotAllowed(reason), reason
        return None

    def release(self, keys: list[str], instance: str) -> None:
        """A tunnel counted under C{keys} is gone."""
        for key in keys:
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)
        link = self.link
        if link is None or not link.up or instance != self.instance:
            # Under an old name: those counts expire with its heartbeat,
            # and the new name counted only what is still held.
            return
        link.script(_scripts.RELEASE, keys, [instance]).addErrback(lambda failure: None)


class FleetAdmission(Admission):
    """
    A connection's place in the local caps (as L{Admission}) and in the
    fleet's (L{gate}, from its request on).

    @ivar registered: the cap hashes the fleet counts it in.
    @ivar registeredAs: the instance name it was counted under.
    @ivar quotas: the quotas its tunnel spends, with their holders
        (L{FleetBandwidth <socksd.shared.bandwidth.FleetBandwidth>} meters
        them).
    @ivar fleet: the L{Fleet}.
    """

    __slots__ = ("registered", "registeredAs", "quotas", "waiting", "fleet")

    def __init__(self, limits: ConnectionLimits, client: Hashable) -> None:
        super().__init__(limits, client)
        self.registered: list[str] = []
        self.registeredAs = ""
        self.quotas: list[tuple[Quota, str]] = []
        self.waiting = False
        self.fleet: Fleet = limits.fleet  # type: ignore[attr-defined]

    def gate(self, pipeline: Any, command: Any, decision: Any) -> None:
        """
        The fleet's admission, after the policy's decision: start
        C{command}, now or once Redis answers, or refuse the request.
        """
        limits = self._limits
        fleet = limits.fleet
        record = pipeline.connection.record
        caps = []
        if fleet.maxPerClient is not None:
            caps.append(
                (
                    f"{fleet.prefix}caps:client:{fleet.keyPart(clientKey(record.client))}",
                    fleet.maxPerClient,
                )
            )
        user = userKey(record.user)
        if fleet.maxPerUser is not None and user is not None:
            caps.append((f"{fleet.prefix}caps:user:{fleet.keyPart(user)}", fleet.maxPerUser))
        if fleet.link is None:
            caps = []
        quotas = fleet.quotasFor(record.user, record.client, decision)
        if not caps and not quotas:
            command.start(decision)
            return
        verdict = fleet.admit(self, caps, quotas)
        if type(verdict) is Deferred:
            self.waiting = True
            verdict.addCallback(self._answered, pipeline, command, decision, quotas)
            verdict.addErrback(self._bug, pipeline)
            return
        self._answered(verdict, pipeline, command, decision, quotas)

    def _answered(
        self, verdict: Any, pipeline: Any, command: Any, decision: Any, quotas: Any
    ) -> None:
        self.waiting = False
        if self.released or not pipeline.connection.open:
            # The client left while the fleet was asked.
            self._releaseFleet()
            return
        if verdict is not None:
            error, reason = verdict
            self._releaseFleet()
            pipeline.refuse(error, reason)
            return
        self.quotas = quotas
        command.start(decision)

    def _bug(self, failure: Any, pipeline: Any) -> None:
        pipeline.connection.bug("the fleet's admission failed", failure)

    def _releaseFleet(self) -> None:
        registered, self.registered = self.registered, []
        if registered:
            self._limits.fleet.release(registered, self.registeredAs)

    def release(self) -> None:
        """The connection is gone: free its places, here and in the fleet."""
        if self.released:
            return
        super().release()
        if not self.waiting:
            self._releaseFleet()


class FleetLimits(ConnectionLimits):
    """
    The factory's C{limits} with shared state: the local caps of
    L{ConnectionLimits}, and admissions (L{FleetAdmission}) that also ask
    the fleet.

    @ivar fleet: the L{Fleet}.
    """

    admissionClass = FleetAdmission

    def __init__(
        self,
        fleet: Fleet,
        maxTotal: int | None = None,
        maxPerClient: int | None = None,
        maxPerUser: int | None = None,
    ) -> None:
        super().__init__(maxTotal, maxPerClient, maxPerUser)
        self.fleet = fleet


class FleetService(Service):
    """Starts the L{Fleet} with C{twistd}, and stops it (giving back leases)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def startService(self) -> None:
        super().startService()
        self.fleet.start()

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        return self.fleet.stop()


def installFleet(
    factory: Any,
    reactor: Any,
    sharedState: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    failure: str = "open",
    quotaPerUser: Quota | None = None,
    quotaFile: str | None = None,
    ruleQuotas: bool = False,
    maxTotal: int | None = None,
    maxPerClient: int | None = None,
    maxPerUser: int | None = None,
    bandwidthPerClient: float | None = None,
    bandwidthPerUser: float | None = None,
) -> FleetService | None:
    """
    Give C{factory} the fleet's limits, bandwidth and SOCKS6 sessions
    (C{twistd socksd}'s C{--shared-state} and C{--quota-per-user}).

    @param sharedState: the Redis URL (L{socksd.shared.link.parseRedisUrl}),
        or L{None}: per process, and quotas in C{quotaFile}.
    @param ruleQuotas: the rules may give quotas (a rules file is loaded).
    @return: the service that starts and stops the fleet, or L{None} when
        nothing is shared or counted.
    @raise ValueError: a bad URL or failure policy.
    """
    from socksd.shared.bandwidth import FleetBandwidth
    from socksd.shared.link import parseRedisUrl
    from socksd.shared.sessions import SharedSessions

    quotas = quotaPerUser is not None or ruleQuotas
    link = None
    if sharedState is not None:
        link = RedisLink(reactor, parseRedisUrl(sharedState))
    elif not quotas:
        return None
    fleet = Fleet(
        reactor,
        link,
        prefix,
        failure,
        maxPerClient if link is not None else None,
        maxPerUser if link is not None else None,
        quotaPerUser,
        quotaFile if quotas else None,
    )
    if link is not None or quotas:
        factory.limits = FleetLimits(fleet, maxTotal, maxPerClient, maxPerUser)
    rates = bandwidthPerClient is not None or bandwidthPerUser is not None
    if rates or quotas:
        factory.bandwidth = FleetBandwidth(
            reactor, fleet, bandwidthPerClient, bandwidthPerUser
        )
    if link is not None:
        factory.socks6Sessions = SharedSessions(fleet, reactor)
    return FleetService(fleet)
