"""
Prometheus metrics for a socksd server.

A L{Metrics} is given to a L{socksd.server.SocksServerFactory} (its
C{metrics} attribute); the connection tells it when a handshake completes,
when a tunnel starts and when a connection ends.  L{metricsService} serves
the metrics in Prometheus' text format over HTTP, at C{/metrics}, with
C{prometheus_client}'s Twisted resource (install the C{metrics} extra:
C{pip install socksd[metrics]}).

Each L{Metrics} has its own C{CollectorRegistry}, so several servers (and
tests) in one process do not share counters.  With C{--workers}, each
worker counts its own and the parent serves them all, each series with a
C{worker} label (see L{socksd.service.workers}).  The series:

  - C{socksd_connections_total{version,command,reply}}: connections ended,
    by SOCKS version, command and reply name (C{"none"} when unknown);
  - C{socksd_refused_total{reason}}: connections refused before a tunnel,
    by a short reason (C{policy}, C{limit}, C{timeout}, C{malformed},
    C{auth}, C{other});
  - C{socksd_bytes_relayed_total{direction}}: bytes relayed, C{up} (client
    to destination) and C{down};
  - C{socksd_handshake_seconds}: a histogram of the time from connecting to
    a complete request;
  - C{socksd_tunnels}: the tunnels open now;
  - C{socksd_auth_failures_total}: failed logins;
  - C{socksd_upstream_up{upstream}}: 1 while a chained upstream proxy is
    up, 0 while it is marked down (its back-off; see
    L{socksd.upstream.chain.UpstreamHealth});
  - C{socksd_upstream_failures_total{upstream}}: that proxy's failures.
  - with C{--shared-state}: C{socksd_shared_state_up} (1 while Redis can
    be asked) and C{socksd_shared_state_changes_total} (connections to
    Redis lost and made);
  - C{socksd_accept_errors_total{error}}: connections the listening
    sockets could not accept, by error (C{EMFILE}: out of file
    descriptors; see L{socksd.service.listen.AcceptErrors}).

The same listener serves the server's health at C{/healthz}
(L{socksd.service.health}: 200 serving, 503 draining).  Neither leaves a
line in the log per request.

With quotas (C{--quota-per-user}, a rule's C{quota}), the same listener
serves C{/quotas}: a JSON document of the bytes each user (or client)
has been charged in the current periods, read from Redis or the quota
file (one entry per holder: deliberately not Prometheus series, whose
number must stay small).
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["Metrics", "metricsService", "refusalKind"]


def refusalKind(reason: str | None) -> str:
    """Sort a connection's end reason into a few label values."""
    if not reason:
        return "other"
    if "policy" in reason or "refused by" in reason or "not allowed" in reason:
        return "policy"
    if reason.startswith("too many"):
        return "limit"
    if "timeout" in reason:
        return "timeout"
    if "malformed" in reason or "unknown first byte" in reason:
        return "malformed"
    if reason.startswith("authentication failed") or reason.startswith("GSS-API"):
        return "auth"
    if reason.startswith("login throttled"):
        return "throttled"
    if reason.startswith("quota exhausted"):
        return "quota"
    if reason.startswith("shared state unavailable"):
        return "shared-state"
    return "other"


class Metrics:
    """
    The counters of one server; see the module docstring.

    @ivar registry: the C{prometheus_client.CollectorRegistry} they live in.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self._open: set[int] = set()
        self.connections = Counter(
            "socksd_connections",
            "Connections ended, by SOCKS version, command and reply.",
            ["version", "command", "reply"],
            registry=self.registry,
        )
        self.refused = Counter(
            "socksd_refused",
            "Connections that ended without a tunnel, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.bytesRelayed = Counter(
            "socksd_bytes_relayed",
            "Bytes relayed, up (client to destination) and down.",
            ["direction"],
            registry=self.registry,
        )
        self.handshakeSeconds = Histogram(
            "socksd_handshake_seconds",
            "Seconds from connecting to a complete request.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.tunnels = Gauge(
            "socksd_tunnels", "Tunnels open now.", registry=self.registry
        )
        self.authFailures = Counter(
            "socksd_auth_failures", "Failed logins.", registry=self.registry
        )
        self.acceptErrors = Counter(
            "socksd_accept_errors",
            "Connections the listening sockets could not accept, by error "
            "(EMFILE: out of file descriptors).",
            ["error"],
            registry=self.registry,
        )
        self.loginLocks = Counter(
            "socksd_login_locks",
            "Client addresses locked out by the login throttle.",
            registry=self.registry,
        )

    def loginLocked(self, address: str) -> None:
        """The login throttle locked C{address} out."""
        self.loginLocks.inc()

    def watchUpstreams(self, upstream: Callable[[], Any]) -> None:
        """
        Export the health of the upstream proxies that C{upstream()} (the
        factory's upstream, read at each scrape: a reload may change it)
        uses: C{socksd_upstream_up} and C{socksd_upstream_failures_total}.
        """
        self.registry.register(_UpstreamCollector(upstream))

    def sharedStateChanged(self, up: bool) -> None:
        """The connection to the fleet's Redis was made (or lost)."""
        if not hasattr(self, "sharedStateUp"):
            from prometheus_client import Counter, Gauge

            self.sharedStateUp = Gauge(
                "socksd_shared_state_up",
                "1 while the shared state (Redis) can be asked.",
                registry=self.registry,
            )
            self.sharedStateChanges = Counter(
                "socksd_shared_state_changes",
                "Connections to the shared state (Redis) made and lost.",
                ["state"],
                registry=self.registry,
            )
        self.sharedStateUp.set(1 if up else 0)
        self.sharedStateChanges.labels("up" if up else "down").inc()

    def handshakeDone(self, seconds: float) -> None:
        """A client's request is complete, C{seconds} after it connected."""
        self.handshakeSeconds.observe(max(0.0, seconds))

    def acceptFailed(self, error: str) -> None:
        """A listening socket could not accept a connection (C{error}: the
        error's name, such as C{EMFILE})."""
        self.acceptErrors.labels(error).inc()

    def tunnelOpened(self, record: Any) -> None:
        """The tunnel of the connection C{record} describes is up."""
        self._open.add(id(record))
        self.tunnels.inc()

    def connectionClosed(self, record: Any) -> None:
        """
        A connection is gone; C{record} is its
        L{socksd.server._log.ConnectionRecord}.
        """
        if id(record) in self._open:
            self._open.discard(id(record))
            self.tunnels.dec()
        relay = record.relay
        if relay is not None:
            try:
                up, down = relay.byteCounts()
            except Exception:
                up = down = 0
            self.bytesRelayed.labels("up").inc(up)
            self.bytesRelayed.labels("down").inc(down)
        else:
            kind = refusalKind(record.reason)
            self.refused.labels(kind).inc()
            if kind == "auth":
                self.authFailures.inc()
        reply = record.reply
        replyName = getattr(reply, "name", None) or (
            reply if isinstance(reply, str) else "none"
        )
        command = "none"
        if record.commandCode is not None:
            from socksd.server._log import commandName

            command = commandName(record.commandCode)
        version = "none" if record.version is None else str(record.version)
        self.connections.labels(version, command, replyName).inc()

    def text(self) -> bytes:
        """The metrics in Prometheus' text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _UpstreamCollector:
    """The upstream proxies' health, for C{prometheus_client}."""

    def __init__(self, upstream: Callable[[], Any]) -> None:
        self._upstream = upstream

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from socksd.upstream.chain import upstreamHealths

        up = GaugeMetricFamily(
            "socksd_upstream_up",
            "1 while an upstream proxy is up, 0 while it is marked down.",
            labels=["upstream"],
        )
        failures = CounterMetricFamily(
            "socksd_upstream_failures",
            "Failures of an upstream proxy (refused, timed out, broken handshake).",
            labels=["upstream"],
        )
        for health in upstreamHealths(self._upstream()):
            up.add_metric([health.name], 1.0 if health.up else 0.0)
            failures.add_metric([health.name], float(health.failuresTotal))
        return [up, failures]


def metricsService(
    description: str,
    metrics: Metrics,
    reactor: Any,
    usage: Any = None,
    health: Any = None,
) -> Any:
    """
    A service listening on the server endpoint C{description} (e.g.
    C{tcp:9180:interface=127.0.0.1}) that serves C{metrics} (anything with
    a C{prometheus_client} C{registry}: a L{Metrics}, or with C{--workers}
    the parent's L{socksd.service.workers.WorkersMetrics}) at C{/metrics}.

    @param usage: with quotas, a function returning a Deferred of the quota
        counts (L{socksd.shared.Fleet.usage}), served as JSON at C{/quotas}.
    @param health: a L{socksd.service.health.Health}, served at
        C{/healthz}, or L{None}.
    """
    from twisted.application import strports

    return strports.service(
        description, metricsSite(metrics, usage, health), reactor=reactor
    )


def _quotasPage(usage: Any) -> Any:
    """The C{/quotas} resource: the quota counts as JSON."""
    import json

    from twisted.web.resource import Resource
    from twisted.web.server import NOT_DONE_YET

    class QuotasPage(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> Any:
            request.setHeader(b"content-type", b"application/json")

            def send(document: Any) -> None:
                request.write(json.dumps(document, sort_keys=True).encode() + b"\n")
                request.finish()

            def failed(failure: Any) -> None:
                request.setResponseCode(503)
                send({"error": failure.getErrorMessage()})

            usage().addCallbacks(send, failed)
            return NOT_DONE_YET

    return QuotasPage()


def _metricsPage(registry: Any) -> Any:
    """
    The C{/metrics} resource: C{registry} in the exposition format the
    scraper's C{Accept} header asks for, rendered in the reactor thread
    (it takes microseconds; C{prometheus_client.twisted} would hand each
    scrape to a thread) and sent with a C{Content-Length}.
    """
    from prometheus_client.exposition import choose_encoder
    from twisted.web.resource import Resource

    class MetricsPage(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            accept = request.getHeader(b"accept") or b""
            encoder, contentType = choose_encoder(accept.decode("latin-1"))
            request.setHeader(b"content-type", contentType.encode("latin-1"))
            return encoder(registry)

    return MetricsPage()


def metricsSite(metrics: Metrics, usage: Any = None, health: Any = None) -> Any:
    """
    A C{twisted.web} site with C{metrics} at C{/metrics} (with C{usage},
    the quota counts at C{/quotas}; with a C{health}, a
    L{socksd.service.health.Health}, C{/healthz}).  Requests are not
    logged: a scrape every few seconds would fill the log.
    """
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class MetricsSite(Site):
        noisy = False

        def log(self, request: Any) -> None:
            """Scrapes and health checks leave no log line."""

    root = Resource()
    root.putChild(b"metrics", _metricsPage(metrics.registry))
    if usage is not None:
        root.putChild(b"quotas", _quotasPage(usage))
    if health is not None:
        from socksd.service.health import HealthPage

        root.putChild(b"healthz", HealthPage(health))
    return MetricsSite(root)
