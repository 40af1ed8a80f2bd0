"""
What every command object has: see L{Command}.
"""

from __future__ import annotations

from typing import Any, ClassVar

from socksd.address import Destination
from socksd.interfaces import ConnectContext, Decision

__all__ = ["Command"]


class Command:
    """
    The base of the commands: one object per request, made by the
    L{socksd.server.pipeline.Pipeline} from the factory's C{commands}
    registry, which then calls L{start} (once the policy allowed the
    request); if the client sends EOF while the command is in progress,
    L{readConnectionLost}; and if the client leaves first, L{stop}.

    A command reports through its pipeline: C{refuse}, C{answer},
    C{sendSuccess}, C{startTunnel}, C{handOver}.

    @cvar policyCheck: what the policy is asked about, for the log
        (C{"destination"}, C{"BIND"}, C{"lookup"}, C{"UDP ASSOCIATE"}), or
        L{None} when the command needs no decision.
    @ivar pipeline: the request's pipeline.
    """

    policyCheck: ClassVar[str | None] = "destination"

    __slots__ = ("pipeline",)

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def policyDestination(self) -> Destination:
        """The destination the policy decides on: the request's."""
        return self.pipeline.request.destination

    def policyContext(self, context: ConnectContext) -> ConnectContext:
        """
        The context the policy decides with: the request's C{context}
        (SOCKS6 BIND and UDP ASSOCIATE mark it a C{bindRequest}).
        """
        return context

    def start(self, decision: Decision) -> None:
        """Serve the request, which C{decision} allowed."""
        raise NotImplementedError()

    def readConnectionLost(self) -> None:
        """
        The client sent EOF while the command is in progress: by default,
        go on (the reply still reaches the client, whose reading side is
        open).  A command whose result nobody can use any more ends itself
        (L{socksd.server.commands.Bind}, and
        L{socksd.server.commands.Connect} with no bytes to deliver).
        """

    def stop(self) -> None:
        """The client left: stop what is in progress, free what is held."""
