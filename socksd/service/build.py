"""
The service of C{twistd socksd}, built from its L{Options}: L{makeService}.

It holds one listening service per C{--listen} description (Twisted's
endpoint strings, as strports would, with the backlog of L{withBacklog};
L{FastOpenEndpoint}s with C{--tcp-fastopen}; the services of
L{socksd.service.workers} with C{--workers} and in a worker; their ports
report the connections they cannot accept to an L{AcceptErrors}), the
access log (C{--access-log}), the metrics and C{/healthz} (C{--metrics}),
the HAProxy agent check (C{--agent-check}) and the raised open-file limit,
all under one L{ServingService}, which drains on SIGTERM
(C{--drain-timeout}) and tells systemd how it is
(L{socksd.service.systemd}); the enterprise logins' parts
(L{_applyEnterpriseAuth}: GSS-API, the login throttle, RADIUS accounting);
and the L{Reloader}, which reloads the configuration on SIGHUP.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import service
from twisted.internet import endpoints
from twisted.logger import Logger

from socksd.service.accesslog import AccessLog, WorkerAccessLog
from socksd.service.drain import ServingService
from socksd.service.filelimit import RaiseFileLimit
from socksd.service.health import AgentCheckFactory, Health
from socksd.service.listen import (
    AcceptErrors,
    FastOpenEndpoint,
    ReportingEndpoint,
    listeningService,
    withBacklog,
)
from socksd.service.options import Options
from socksd.service.systemd import Notifier

__all__ = ["makeService", "Reloader", "RESTART_OPTIONS"]

log = Logger()

def _applyLimits(
    options: Options, factory: Any, reactor: Any, reloading: bool = False
) -> None:
    """
    Give C{factory} the connection and bandwidth limits of C{options}.

    @param reloading: the factory is serving: connection caps change in
        place (the connections up count against the new caps), and limits
        the options no longer set are removed.
    """
    from socksd.server.limits import BandwidthLimits, ConnectionLimits

    caps = [
        options["max-connections"] or None,
        options["max-connections-per-client"] or None,
        options["max-connections-per-user"] or None,
    ]
    limits = factory.limits
    if reloading and limits is not None:
        limits.maxTotal, limits.maxPerClient, limits.maxPerUser = caps
    elif any(caps):
        factory.limits = ConnectionLimits(*caps)
    rates = options["bandwidth-per-client"], options["bandwidth-per-user"]
    bandwidth = factory.bandwidth
    if any(rate is not None for rate in rates):
        if bandwidth is None or (bandwidth.perClient, bandwidth.perUser) != rates:
            factory.bandwidth = BandwidthLimits(reactor, *rates)
    elif reloading:
        factory.bandwidth = None
    if options["outgoing-address"] is not None:
        factory.outgoingAddress = (options["outgoing-address"], 0)
    elif reloading:
        factory.outgoingAddress = None


def _applyEnterpriseAuth(
    options: Options, factory: Any, reactor: Any, reloading: bool = False
) -> None:
    """
    Give C{factory} what docs/auth.rst describes: the GSS-API acceptor
    (C{--gssapi-keytab}), the login throttle (C{--login-throttle}) and
    RADIUS accounting (C{--radius-accounting}); the metrics, when
    C{--metrics} made them, count the throttle's locks.

    @param reloading: the factory is serving (a SIGHUP): the GSS-API
        acceptor is the new options' (the keytab read again; removed when
        they have none), for the connections that start from now on; the
        login throttle stays, with its locks and counts, and takes the new
        limits (or goes, with C{off}); the accounting stays as it is
        (C{--radius-accounting} and C{--radius-interim} are
        L{RESTART_OPTIONS}: the tunnels up must get their Interim-Update
        and Stop records from the accounting that sent their Start).
    """
    acceptor = options.get("gssapiAcceptor")
    if acceptor is not None or reloading:
        # Options made it, so that an unusable keytab is a usage error.
        factory.gssapi = acceptor
    setting = options.get("throttle")
    throttle = factory.throttle
    if setting is None:
        factory.throttle = None
    elif throttle is not None:
        throttle.configure(*setting)
    else:
        from socksd.throttle import LoginThrottle

        failures, period = setting

        def locked(address: str) -> None:
            metrics = factory.metrics
            if metrics is not None and hasattr(metrics, "loginLocked"):
                metrics.loginLocked(address)

        factory.throttle = LoginThrottle(reactor, failures, period, onLock=locked)
    if reloading:
        return
    if options.get("radiusAccounting") is not None:
        from socksd.checkers.radius import RadiusAccounting, RadiusClient

        factory.accounting = RadiusAccounting(
            RadiusClient(reactor, options["radiusAccounting"]),
            reactor,
            interim=options["radius-interim"] or None,
        )


def _parts(options: Options, reactor: Any) -> dict[str, Any]:
    """
    What the options make of a server, apart from its listeners: the
    resolver, the upstream, the policy, the authenticator and the
    L{ServerConfig}.  Built at start and again on every reload.
    """
    from socksd.resolve import resolverFromSpec
    from socksd.server import ServerConfig
    from socksd.upstream.spec import upstreamFromOptions

    resolver = resolverFromSpec(
        reactor, options["resolver"], timeout=options["connect-timeout"]
    )
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
        maxPendingBindsPerClient=options["max-pending-binds-per-client"] or None,
        udpTimeout=options["udp-timeout"] or None,
        httpConnect=bool(options["http-connect"]),
        splice=not options["no-splice"],
        socks6Dns=bool(options["socks6-dns"]),
    )
    return dict(
        upstream=upstream,
        resolver=resolver,
        policy=policy,
        authenticator=authenticator,
        config=config,
    )


#: The options a reload cannot change: the listeners, the processes and
#: what the top service holds.
RESTART_OPTIONS = (
    "listen",
    "workers",
    "tcp-fastopen",
    "metrics",
    "inherit-fds",
    "radius-accounting",
    "radius-interim",
    "access-log",
    "agent-check",
    "drain-timeout",
)


def makeService(options: Options) -> service.IService:
    """
    Build the socksd service: one listening port per C{--listen}, and the
    reload on SIGHUP.
    """
    from twisted.internet import reactor

    from socksd.server import SocksServerFactory

    running = {name: _copy(options[name]) for name in RESTART_OPTIONS}
    factory = SocksServerFactory(reactor, **_parts(options, reactor))
    _applyLimits(options, factory, reactor)
    _applyEnterpriseAuth(options, factory, reactor)
    dtls = options.get("socks6Dtls")
    if dtls is not None:
        from socksd.server.socks6.dtls import DtlsRelay

        factory.socks6Dtls = DtlsRelay(
            reactor, dtls.context(), idleTimeout=factory.config.udpTimeout or 120.0
        )
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
    # Connections the listeners cannot accept (out of descriptors): one log
    # line a second, and a metric.
    acceptErrors = AcceptErrors(reactor)
    if parent or inWorker:
        from socksd.service import workers

        listening = workers.serviceFor(options, factory, reactor, acceptErrors)
        top.listen(listening)
        if parent:
            top.workers = listening
            health.servingCheck = listening.running
    else:
        for given, description in zip(running["listen"], options["listen"]):
            endpoint = endpoints.serverFromString(reactor, description)
            if options["tcp-fastopen"]:
                endpoint = FastOpenEndpoint(endpoint, options["tcp-fastopen"])
            endpoint = ReportingEndpoint(endpoint, acceptErrors)
            top.listen(listeningService(given, endpoint, factory))
    if factory.socks6Dtls is not None:
        # Not a listener: the associations of the tunnels being drained use it.
        factory.socks6Dtls.service(dtls).setServiceParent(top)
    if options["access-log"]:
        _addAccessLog(options["access-log"], factory, reactor, top, inWorker)
    fleet = _applySharedState(options, factory, reactor, top)
    if options["metrics"]:
        _addMetrics(options, factory, reactor, top, listening, fleet, health)
        acceptErrors.metrics = factory.metrics
    if options["agent-check"] and not inWorker:
        endpoint = endpoints.serverFromString(reactor, options["agent-check"])
        listeningService(
            options["agent-check"], endpoint, AgentCheckFactory(health)
        ).setServiceParent(top)
    RaiseFileLimit().setServiceParent(top)
    # With --workers, the parent passes SIGHUP on to its workers.
    forward = getattr(listening, "signalWorkers", None)
    Reloader(options, running, factory, reactor, forward, notifier).setServiceParent(top)
    return top


def _addAccessLog(
    path: str, factory: Any, reactor: Any, top: Any, inWorker: bool
) -> None:
    """
    C{--access-log}: one process writes the file; a worker sends its
    records to its parent, whose L{socksd.service.workers.WorkersService}
    (C{top.workers}) hands them to the parent's access log.
    """
    if inWorker:
        factory.accessLog = WorkerAccessLog(sys.stdout, reactor)
        return
    accessLog = AccessLog(path, reactor)
    accessLog.setServiceParent(top)
    if top.workers is not None:
        top.workers.accessLog = accessLog
    else:
        factory.accessLog = accessLog


def _applySharedState(options: Options, factory: Any, reactor: Any, top: Any) -> Any:
    """
    C{--shared-state}, C{--quota-per-user} and rules with quotas: the
    fleet's limits, bandwidth and SOCKS6 sessions (L{socksd.shared}).
    Rules that give quotas must do so when socksd starts (a reload that
    adds the first quota needs a restart).

    @return: the L{socksd.shared.Fleet}, or L{None}.
    """
    from socksd.service.options import _ruleQuotas

    ruleQuotas = _ruleQuotas(options["policy"])
    if options["shared-state"] is None and not (
        options["quota-per-user"] is not None or ruleQuotas
    ):
        return None
    from socksd.shared import installFleet

    service = installFleet(
        factory,
        reactor,
        sharedState=options["shared-state"],
        prefix=options["shared-state-prefix"],
        failure=options["shared-state-failure"],
        quotaPerUser=options["quota-per-user"],
        quotaFile=options["quota-state"],
        ruleQuotas=ruleQuotas,
        maxTotal=options["max-connections"] or None,
        maxPerClient=options["max-connections-per-client"] or None,
        maxPerUser=options["max-connections-per-user"] or None,
        bandwidthPerClient=options["bandwidth-per-client"],
        bandwidthPerUser=options["bandwidth-per-user"],
    )
    if service is None:
        return None
    service.setServiceParent(top)
    return service.fleet


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _addMetrics(
    options: Options,
    factory: Any,
    reactor: Any,
    top: Any,
    listening: Any,
    fleet: Any = None,
    health: Any = None,
) -> None:
    """
    C{--metrics}: one process counts and serves; with C{--workers}, each
    worker counts and reports to the parent (whose C{listening} is the
    L{socksd.service.workers.WorkersService}), which alone serves them.
    """
    from socksd.service import workers
    from socksd.service.metrics import Metrics, metricsSite

    if options["workers"] > 1 and not options["inherit-fds"]:
        served: Any = workers.WorkersMetrics(listening)
    else:
        served = factory.metrics = Metrics()
        served.watchUpstreams(lambda: factory.upstream)
        if fleet is not None and fleet.link is not None:
            fleet.link.observe(served.sharedStateChanged)
        if options["inherit-fds"]:
            workers.MetricsReporter(served, reactor, sys.stdout).setServiceParent(top)
            return
    usage = fleet.usage if fleet is not None else None
    endpoint = endpoints.serverFromString(reactor, options["metrics"])
    site = metricsSite(served, usage, health)
    listeningService(options["metrics"], endpoint, site).setServiceParent(top)


class Reloader(service.Service):
    """
    Reload the configuration on SIGHUP (as Dante and Tor do), without
    dropping a tunnel: the command line is parsed again, over the
    configuration file read again, and the rules, users, upstreams and
    routes, resolver, limits, bandwidth, timeouts and GSS-API keytab of
    the new options replace the running ones; the login throttle keeps its
    locks and takes the new limits.  Tunnels already up keep what they
    started with.

    A configuration that does not parse, or that would open the proxy (the
    open-proxy guard runs again), is refused: the running one stays, and
    the error is logged.  A changed listener (or worker count, metrics
    endpoint, RADIUS accounting) is logged as needing a restart.
    """

    def __init__(
        self,
        options: Options,
        running: dict[str, Any],
        factory: Any,
        reactor: Any,
        forward: Any = None,
        notifier: Any = None,
    ) -> None:
        """
        @param options: the options in force.
        @param running: the values of L{RESTART_OPTIONS} in force.
        @param forward: called with C{"HUP"} on each SIGHUP (the workers'
            parent passes the signal on), or L{None}.
        @param notifier: the L{socksd.service.systemd.Notifier} told of
            each reload (C{RELOADING=1}, then C{READY=1}), or L{None}.
        """
        self.options = options
        self._running = running
        self._factory = factory
        self._reactor = reactor
        self._forward = forward
        self._notifier = notifier
        self._previous = None

    def startService(self) -> None:
        import signal

        super().startService()

        def hangup(signum: int, frame: Any) -> None:
            self._reactor.callFromThread(self.reload)

        self._previous = signal.signal(signal.SIGHUP, hangup)

    def stopService(self) -> Any:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
        return super().stopService()

    def reload(self) -> bool:
        """
        Reload now (what SIGHUP does).

        @return: C{True} when the new configuration is in force.
        """
        notifier = self._notifier
        if notifier is None:
            return self._reload()
        notifier.reloading()
        try:
            return self._reload()
        finally:
            notifier.reloaded()

    def _reload(self) -> bool:
        from twisted.python import usage

        if self._forward is not None:
            self._forward("HUP")
        new = type(self.options)()
        try:
            new.parseOptions(list(self.options.get("argv", [])))
            parts = _parts(new, self._reactor)
        except (usage.UsageError, ValueError, OSError) as error:
            log.error(
                "reload refused, keeping the running configuration: {error}",
                error=str(error),
            )
            return False
        for name in RESTART_OPTIONS:
            if new[name] != self._running[name]:
                log.warn(
                    "--{option} changed from {old!r} to {new!r}: restart socksd "
                    "to apply it (the running value stays)",
                    option=name,
                    old=self._running[name],
                    new=new[name],
                )
        factory = self._factory
        factory.config = parts["config"]
        factory.upstream = parts["upstream"]
        factory.resolver = parts["resolver"]
        factory.policy = parts["policy"]
        factory.authenticator = parts["authenticator"]
        from socksd.server.factory import defaultHandlers

        factory.handlers = dict(defaultHandlers(factory.config))
        _applyLimits(new, factory, self._reactor, reloading=True)
        _applyEnterpriseAuth(new, factory, self._reactor, reloading=True)
        _retireCheckers(self.options)
        self.options = new
        log.info("reloaded the configuration on SIGHUP")
        return True


def _retireCheckers(options: Options) -> None:
    """
    The checkers of C{options} were replaced: those that hold resources
    (the thread pools of C{pam} and C{ldap}, the socket of C{radius})
    release them once their logins under way are answered.
    """
    for checker in options.get("credCheckers") or ():
        retire = getattr(checker, "retire", None)
        if retire is not None:
            try:
                retire()
            except Exception:
                log.failure("releasing a replaced checker failed")


#: The old name of L{Reloader}.
_ReloadOnHangup = Reloader
