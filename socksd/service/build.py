"""
The service of C{twistd socksd}, built from its L{Options}: L{makeService}.

It holds one listening service per C{--listen} description (Twisted's
strports, with the backlog of L{withBacklog}; L{FastOpenEndpoint}s with
C{--tcp-fastopen}; the services of L{socksd.service.workers} with
C{--workers} and in a worker), the access log (C{--access-log}), the
metrics and C{/healthz} (C{--metrics}), the HAProxy agent check
(C{--agent-check}), the raised open-file limit, and the rules reloaded on
SIGHUP (C{--rules}), all under one L{ServingService}, which drains on
SIGTERM (C{--drain-timeout}) and tells systemd how it is
(L{socksd.service.systemd}).
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import service, strports
from twisted.internet import endpoints
from twisted.logger import Logger

from socksd.service.accesslog import AccessLog, WorkerAccessLog
from socksd.service.drain import ServingService
from socksd.service.filelimit import RaiseFileLimit
from socksd.service.health import Health, agentCheckService
from socksd.service.listen import FastOpenEndpoint, withBacklog
from socksd.service.options import Options
from socksd.service.systemd import Notifier

__all__ = ["makeService"]

log = Logger()

def _applyLimits(options: Options, factory, reactor) -> None:
    """Give C{factory} the connection and bandwidth limits of C{options}."""
    from socksd.server.limits import BandwidthLimits, ConnectionLimits

    caps = [
        options["max-connections"] or None,
        options["max-connections-per-client"] or None,
        options["max-connections-per-user"] or None,
    ]
    if any(caps):
        factory.limits = ConnectionLimits(*caps)
    rates = options["bandwidth-per-client"], options["bandwidth-per-user"]
    if any(rate is not None for rate in rates):
        factory.bandwidth = BandwidthLimits(reactor, *rates)
    if options["outgoing-address"] is not None:
        factory.outgoingAddress = (options["outgoing-address"], 0)


def makeService(options: Options) -> service.IService:
    """
    Build the socksd service: one listening port per C{--listen}.
    """
    from twisted.internet import reactor

    from socksd.server import ServerConfig, SocksServerFactory
    from socksd.resolve import resolverFromSpec
    from socksd.upstream.spec import upstreamFromOptions

    resolver = resolverFromSpec(reactor, options["resolver"])
    policy = options["policy"]
    addressFilter = None
    if policy is not None and policy.requireResolvedCheck:
        addressFilter = policy.addressFilter
    upstream = upstreamFromOptions(
        reactor,
        options["upstreams"],
        options["routes"],
        resolver,
        connectTimeout=options["connect-timeout"],
        addressFilter=addressFilter,
    )
    authenticator = None
    if options.get("credCheckers"):
        from socksd.auth import Authenticator, portalFromCheckers

        authenticator = Authenticator(
            portalFromCheckers(options["credCheckers"]), reactor
        )
    config = ServerConfig(
        protocols=options["versions"],
        extendedErrors=bool(options["extended-errors"]),
        isolateSocksAuth=not options["no-isolate-socks-auth"],
        isolateClientAddr=bool(options["isolate-client-addr"]),
        isolateDestAddr=bool(options["isolate-dest-addr"]),
        isolateDestPort=bool(options["isolate-dest-port"]),
        preferNoAuth=bool(options["prefer-no-auth"]),
        handshakeTimeout=options["handshake-timeout"],
        connectTimeout=options["connect-timeout"],
        idleTimeout=options["idle-timeout"] or None,
        socks4WithAuth=bool(options["socks4-with-auth"]),
        bindAddress=options["bind-address"],
        bindTimeout=options["bind-timeout"] or None,
        udpTimeout=options["udp-timeout"] or None,
        httpConnect=bool(options["http-connect"]),
        splice=not options["no-splice"],
        socks6Dns=bool(options["socks6-dns"]),
    )
    factory = SocksServerFactory(
        reactor,
        upstream=upstream,
        resolver=resolver,
        policy=policy,
        authenticator=authenticator,
        config=config,
    )
    _applyLimits(options, factory, reactor)
    # Twisted's listen backlog is 50 unless the description says backlog=.
    options["listen"] = [withBacklog(d) for d in options["listen"]]
    inWorker = bool(options["inherit-fds"])
    parent = options["workers"] > 1 and not inWorker
    health = Health(
        connections=None if parent else (lambda: len(factory.connections)),
        capacity=options["max-connections"] or 0,
    )
    notifier = None if inWorker else Notifier()
    top = ServingService(
        reactor,
        drainTimeout=options["drain-timeout"],
        health=health,
        notifier=notifier,
        installSignals=not inWorker,
    )
    top.factories.append(factory)
    listening = None
    if parent or inWorker:
        from socksd.service import workers

        listening = workers.serviceFor(options, factory, reactor)
        top.listen(listening)
        if parent:
            top.workers = listening
            health.servingCheck = listening.running
    elif options["tcp-fastopen"]:
        from twisted.application.internet import StreamServerEndpointService

        for description in options["listen"]:
            endpoint = FastOpenEndpoint(
                endpoints.serverFromString(reactor, description), options["tcp-fastopen"]
            )
            listener = StreamServerEndpointService(endpoint, factory)
            listener._raiseSynchronously = True  # as strports.service does
            top.listen(listener)
    else:
        for description in options["listen"]:
            top.listen(strports.service(description, factory))
    if options["access-log"]:
        _addAccessLog(
            options["access-log"], factory, reactor, top, top.workers, inWorker
        )
    if options["metrics"]:
        _addMetrics(options, factory, reactor, top, listening, health)
    if options["agent-check"] and not inWorker:
        agentCheckService(options["agent-check"], health, reactor).setServiceParent(top)
    RaiseFileLimit().setServiceParent(top)
    if options["rules"] and policy is not None:
        # With --workers, the parent passes SIGHUP on to its workers.
        forward = getattr(listening, "signalWorkers", None)
        _ReloadOnHangup(policy, reactor, forward, notifier).setServiceParent(top)
    return top


def _addAccessLog(
    path: str, factory: Any, reactor: Any, top: Any, workers: Any, inWorker: bool
) -> None:
    """
    C{--access-log}: one process writes the file; a worker sends its
    records to its parent, whose L{socksd.service.workers.WorkersService}
    (C{workers}) hands them to the parent's access log.
    """
    if inWorker:
        factory.accessLog = WorkerAccessLog(sys.stdout, reactor)
        return
    accessLog = AccessLog(path, reactor)
    accessLog.setServiceParent(top)
    if workers is not None:
        workers.accessLog = accessLog
    else:
        factory.accessLog = accessLog


def _addMetrics(
    options: Options,
    factory: Any,
    reactor: Any,
    top: Any,
    listening: Any,
    health: Any = None,
) -> None:
    """
    C{--metrics}: one process counts and serves; with C{--workers}, each
    worker counts and reports to the parent (whose C{listening} is the
    L{socksd.service.workers.WorkersService}), which alone serves them.
    """
    from socksd.service import workers
    from socksd.service.metrics import Metrics, metricsService

    if options["workers"] > 1 and not options["inherit-fds"]:
        served: Any = workers.WorkersMetrics(listening)
    else:
        served = factory.metrics = Metrics()
        if options["inherit-fds"]:
            workers.MetricsReporter(served, reactor, sys.stdout).setServiceParent(top)
            return
    metricsService(options["metrics"], served, reactor, health).setServiceParent(top)


class _ReloadOnHangup(service.Service):
    """
    Reload the rules file on SIGHUP (as Dante and Tor do), without dropping
    connections; a bad file keeps the old rules and logs an error.
    """

    def __init__(self, policy, reactor, forward=None, notifier=None) -> None:
        """
        @param forward: called with C{"HUP"} on each SIGHUP (the workers'
            parent passes the signal on), or L{None}.
        @param notifier: the L{socksd.service.systemd.Notifier} told of the
            reload (C{RELOADING=1}, then C{READY=1}), or L{None}.
        """
        self._policy = policy
        self._reactor = reactor
        self._forward = forward
        self._notifier = notifier
        self._previous = None

    def startService(self) -> None:
        import signal

        super().startService()

        def hangup(signum, frame) -> None:
            self._reactor.callFromThread(self._reload)

        self._previous = signal.signal(signal.SIGHUP, hangup)

    def _reload(self) -> None:
        if self._notifier is not None:
            self._notifier.reloading()
        if self._forward is not None:
            self._forward("HUP")
        try:
            if self._policy.reload():
                log.info("reloaded the rules on SIGHUP")
        finally:
            if self._notifier is not None:
                self._notifier.reloaded()

    def stopService(self) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
        return super().stopService()
