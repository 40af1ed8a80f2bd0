"""
Graceful drain: the top service of C{twistd socksd}, L{ServingService}.

On SIGTERM or SIGINT (twistd stops its services), socksd

  1. stops accepting at once: its listeners (the services in
     L{ServingService.listeners}) are closed, so new connections are
     refused; C{/healthz} says 503 and the HAProxy agent check C{drain}
     (L{socksd.service.health}); systemd is told C{STOPPING=1};
  2. lets the open connections (tunnels, UDP associations, BINDs, and
     handshakes in progress) of its factories run for up to
     C{--drain-timeout} seconds (default L{DRAIN_TIMEOUT}; 0 closes them at
     once), and goes on as soon as the last one ends;
  3. closes what is left (each such connection's record says C{"cut:
     drain timeout"}), stops its other services (metrics, access log ...)
     and exits.

A second SIGTERM (or SIGINT) during the drain closes every connection at
once.  The log says how many connections were open, how many ended by
themselves and how many were cut::

    draining: stopped accepting; 3 connections open, waiting up to 30 s for
    them to end (SIGTERM again closes them now)
    drain finished after 2.004 s: 3 connections ended, 0 cut

With C{--workers}, the parent's listener service is the
L{socksd.service.workers.WorkersService}: the parent closes its copy of the
listening sockets, passes SIGTERM to every worker (each drains as above,
and closes its copy) and exits when they all have; a second signal to the
parent reaches the workers as SIGUSR2, which cuts their connections (a
worker takes a repeated SIGTERM as the same drain: systemd may send the
whole control group one).
"""

from __future__ import annotations

import signal
from typing import Any, Callable

from twisted.application import service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger

__all__ = ["ServingService", "DRAIN_TIMEOUT", "CUT_GRACE", "DRAIN_SIGNALS"]

log = Logger()

#: Seconds open connections may run after SIGTERM, by default.
DRAIN_TIMEOUT = 30.0
#: Seconds the cut connections have to be gone before the drain gives up on
#: them (their records could not be written otherwise).
CUT_GRACE = 5.0
#: The signals that start a drain (and, again, cut it short).
DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _WatchedConnections(set):  # type: ignore[type-arg]
    """
    A factory's set of open connections during a drain: it tells the drain
    when it becomes empty.
    """

    __slots__ = ("emptied",)

    def __init__(self, connections: set[Any], emptied: Callable[[], None]) -> None:
        super().__init__(connections)
        self.emptied = emptied

    def discard(self, connection: Any) -> None:
        set.discard(self, connection)
        if not self:
            self.emptied()


class ServingService(service.MultiService):
    """
    The top service of C{twistd socksd}: see the module docstring.

    @ivar listeners: the services that accept connections (children added
        with L{listen}), stopped first.
    @ivar factories: the L{socksd.server.SocksServerFactory}s whose
        connections are drained.
    @ivar workers: the parent's L{socksd.service.workers.WorkersService}
        (C{--workers}), told to cut its workers' connections on a second
        signal, or L{None}.
    @ivar health: the L{socksd.service.health.Health} the drain marks as
        draining, or L{None}.
    @ivar notifier: the L{socksd.service.systemd.Notifier}, or L{None}.
    @ivar draining: a drain has started.
    """

    def __init__(
        self,
        reactor: Any,
        drainTimeout: float = DRAIN_TIMEOUT,
        health: Any = None,
        notifier: Any = None,
        installSignals: bool = True,
    ) -> None:
        """
        @param drainTimeout: see C{--drain-timeout}.
        @param installSignals: handle a second SIGTERM or SIGINT (a worker,
            whose parent sends SIGUSR2 instead, does not).
        """
        super().__init__()
        self._reactor = reactor
        self.drainTimeout = drainTimeout
        self.health = health
        self.notifier = notifier
        self._installSignals = installSignals
        self.listeners: list[Any] = []
        self.factories: list[Any] = []
        self.workers: Any = None
        self.draining = False
        self._cutReason: str | None = None
        self._previous: dict[int, Any] = {}
        self._signals = 0
        self._stopped: Deferred[Any] | None = None
        self._drained: Deferred[Any] | None = None
        self._timer: Any = None
        self._open = 0
        self._cut = 0
        self._started = 0.0

    def listen(self, listener: Any) -> None:
        """Add C{listener}, a service that accepts connections."""
        listener.setServiceParent(self)
        self.listeners.append(listener)

    # Starting

    def startService(self) -> None:
        """Start every service; once the reactor runs, handle signals."""
        super().startService()
        self._reactor.callWhenRunning(self._running)

    def _running(self) -> None:
        if self._installSignals:
            for number in DRAIN_SIGNALS:
                self._previous[number] = signal.signal(number, self._signalled)
        if self.notifier is not None:
            self.notifier.ready()

    def _signalled(self, number: int, frame: Any) -> None:
        """
        SIGTERM or SIGINT: the first stops the reactor as before (which
        stops this service: the drain); a later one cuts the drain short.
        """
        self._signals += 1
        if self._signals == 1 and not self.draining:
            previous = self._previous.get(number)
            if callable(previous):
                previous(number, frame)
            else:
                self._reactor.callFromThread(self._reactor.stop)
            return
        name = signal.Signals(number).name
        self._reactor.callFromThread(self.cut, f"second {name}")

    # Stopping

    def stopService(self) -> Deferred[Any]:
        """
        Drain: stop accepting, wait for the open connections (up to the
        drain timeout), then stop the other services.
        """
        if self._stopped is not None:
            return self._stopped
        service.Service.stopService(self)
        self.draining = True
        if self.health is not None:
            self.health.draining = True
        self._started = self._reactor.seconds()
        self._open = sum(len(factory.connections) for factory in self.factories)
        if self.workers is not None:
            log.info(
                "draining: stopped accepting; waiting up to {timeout} s for"
                " {workers} workers to drain (SIGTERM again closes their"
                " connections now)",
                timeout=self.drainTimeout,
                workers=len(self.workers.workers),
            )
            status = "draining the workers"
        else:
            log.info(
                "draining: stopped accepting; {count} connections open, waiting"
                " up to {timeout} s for them to end (SIGTERM again closes them"
                " now)",
                count=self._open,
                timeout=self.drainTimeout,
            )
            status = f"draining {self._open} connections"
        if self.notifier is not None:
            self.notifier.stopping(status)
        listening = gatherResults(
            [maybeDeferred(listener.stopService) for listener in self.listeners],
            consumeErrors=True,
        )
        drained = self._drain()
        stopped = gatherResults([listening, drained], consumeErrors=True)
        stopped.addErrback(lambda failure: log.failure("draining failed", failure))
        stopped.addCallback(lambda _: self._report())
        stopped.addCallback(lambda _: self._stopOthers())
        self._stopped = stopped
        return stopped

    def _drain(self) -> Deferred[Any]:
        """Wait until the factories' connections are gone (or cut)."""
        if not self._open:
            return succeed(None)
        drained: Deferred[Any] = Deferred()
        self._drained = drained
        for factory in self.factories:
            factory.connections = _WatchedConnections(factory.connections, self._check)
        if self._cutReason is not None or self.drainTimeout <= 0:
            self.cut(self._cutReason or "drain timeout 0")
        else:
            self._timer = self._reactor.callLater(self.drainTimeout, self.cut, "drain timeout")
        return drained

    def _check(self) -> None:
        """A factory's set of connections became empty: are they all?"""
        drained = self._drained
        if drained is None or any(factory.connections for factory in self.factories):
            return
        self._drained = None
        self._cancelTimer()
        drained.callback(None)

    def cut(self, reason: str) -> None:
        """
        Close every connection now (the drain timeout, or a second signal),
        and tell the workers to.
        """
        if self._cutReason is None:
            self._cutReason = reason
        if not self.draining:
            # The first signal's stop has not reached stopService yet.
            return
        self._cancelTimer()
        if self.workers is not None:
            self.workers.cut()
        if self._drained is None:
            return
        connections = [c for factory in self.factories for c in list(factory.connections)]
        self._cut += len(connections)
        if connections:
            log.info(
                "draining: closing {count} connections ({reason})",
                count=len(connections),
                reason=reason,
            )
        for connection in connections:
            try:
                connection.abort(f"cut: {reason}")
            except Exception:
                log.failure("cutting a connection failed")
        # They are gone a turn of the reactor later; do not wait forever.
        self._timer = self._reactor.callLater(CUT_GRACE, self._giveUp)

    def _giveUp(self) -> None:
        self._timer = None
        drained, self._drained = self._drained, None
        if drained is not None:
            left = sum(len(factory.connections) for factory in self.factories)
            log.warn("draining: {count} cut connections did not close", count=left)
            drained.callback(None)

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _report(self) -> None:
        elapsed = self._reactor.seconds() - self._started
        if self.workers is not None:
            ended, cut = self.workers.drainCounts()
            log.info(
                "drain finished after {elapsed:.3f} s: the workers' connections:"
                " {ended} ended, {cut} cut",
                elapsed=elapsed,
                ended=ended,
                cut=cut,
            )
            return
        log.info(
            "drain finished after {elapsed:.3f} s: {ended} connections ended,"
            " {cut} cut",
            elapsed=elapsed,
            ended=self._open - self._cut,
            cut=self._cut,
            open=self._open,
        )

    def _stopOthers(self) -> Deferred[Any]:
        """Stop the services other than the listeners (metrics, access log)."""
        stops = [
            maybeDeferred(child.stopService)
            for child in reversed(list(self))
            if child not in self.listeners and child.running
        ]
        return gatherResults(stops, consumeErrors=True).addErrback(
            lambda failure: log.failure("stopping a service failed", failure)
        )
