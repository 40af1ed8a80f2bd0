"""
Health for load balancers: whether this socksd serves, or drains.

L{Health} is the one answer; two things tell it:

  - C{/healthz} on the metrics listener (C{--metrics}; L{HealthPage},
    which L{socksd.service.metrics.metricsSite} serves): C{200 serving}
    while serving, C{503 draining} from the start of a drain (SIGTERM) to
    the exit; the metrics listener stays up during the drain;
  - an HAProxy agent check (C{--agent-check DESCRIPTION};
    L{agentCheckService}): each connection gets one line and is closed:
    C{up ready} (with C{--max-connections}, C{up ready N%}: the share of
    the connections still free, as the server's weight), C{drain} while
    draining, C{down} when no worker is running (C{--workers}).

Behind HAProxy::

    server socksd1 10.0.0.1:1080 check agent-check agent-port 1081 agent-inter 2s
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.protocol import Factory, Protocol

__all__ = ["Health", "HealthPage", "AgentCheckFactory", "agentCheckService"]


class Health:
    """
    Whether this process serves or drains.

    @ivar draining: a drain has started (the drain service sets it).
    @ivar connections: how many connections are open now, or L{None}.
    @ivar capacity: the most connections at once, or 0.
    @ivar servingCheck: whether anything serves now, or L{None}.
    """

    def __init__(
        self,
        connections: Callable[[], int] | None = None,
        capacity: int = 0,
        serving: Callable[[], bool] | None = None,
    ) -> None:
        """
        @param connections: how many connections are open now, or L{None}
            when unknown (C{--workers}: the parent does not see them).
        @param capacity: the most connections at once (C{--max-connections}),
            or 0 for no limit.
        @param serving: whether anything serves now (C{--workers}: a worker
            is running), or L{None} for always.
        """
        self.draining = False
        self.connections = connections
        self.capacity = capacity
        self.servingCheck = serving

    def serving(self) -> bool:
        """Serving, and not draining."""
        if self.draining:
            return False
        return self.servingCheck is None or bool(self.servingCheck())

    def status(self) -> tuple[int, bytes]:
        """The HTTP status and body of C{/healthz}."""
        if self.draining:
            return 503, b"draining\n"
        if not self.serving():
            return 503, b"not serving\n"
        return 200, b"serving\n"

    def agentReply(self) -> bytes:
        """The line an HAProxy agent check gets."""
        if self.draining:
            return b"drain\n"
        if not self.serving():
            return b"down\n"
        if self.capacity and self.connections is not None:
            free = self.capacity - self.connections()
            percent = max(1, min(100, (100 * free) // self.capacity))
            return b"up ready %d%%\n" % (percent,)
        return b"up ready\n"


def HealthPage(health: Health) -> Any:
    """The C{/healthz} resource (a C{twisted.web} leaf) for C{health}."""
    from twisted.web.resource import Resource

    class HealthResource(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            code, body = health.status()
            request.setResponseCode(code)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")
            return body

    return HealthResource()


class _AgentCheck(Protocol):
    """Write the agent's line, then close."""

    def connectionMade(self) -> None:
        self.transport.write(self.factory.health.agentReply())
        self.transport.loseConnection()


class AgentCheckFactory(Factory):
    """The HAProxy agent check's listening factory."""

    noisy = False
    protocol = _AgentCheck

    def __init__(self, health: Health) -> None:
        self.health = health


def agentCheckService(description: str, health: Health, reactor: Any) -> Any:
    """
    A service listening on the server endpoint C{description} (e.g.
    C{tcp:1081:interface=10.0.0.1}) that answers HAProxy's agent checks
    for C{health}.
    """
    from twisted.application import strports

    return strports.service(description, AgentCheckFactory(health), reactor=reactor)
