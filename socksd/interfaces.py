"""
The pluggable parts of socksd, as zope interfaces, and the connect context.

An application embedding socksd supplies its own L{IUpstreamFactory} (how to
reach a destination) and L{IResolver} (how names become addresses), or uses
the defaults in L{socksd.upstream} and L{socksd.resolve}.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Mapping, NamedTuple, Sequence

from zope.interface import Interface

from socksd.address import Destination

__all__ = [
    "ConnectContext",
    "Decision",
    "ALLOW",
    "IUpstreamFactory",
    "IResolver",
    "IPolicy",
    "IAccounting",
]


#: An empty mapping that cannot change, the default of C{pairs}.
_NO_PAIRS: Mapping[bytes, bytes] = MappingProxyType({})


class ConnectContext(NamedTuple):
    """
    Everything socksd knows about a request when it asks for an upstream.

    An immutable value (a named tuple: the server makes one per request,
    and a named tuple costs a fraction of a frozen dataclass); change a
    field with C{context._replace(bindAddress=...)}.

    @ivar client: the client's address (a Twisted C{IAddress}); behind a
        PROXY-protocol listener, the real client's.
    @ivar version: the SOCKS version the client spoke (4, 5 or 6).
    @ivar command: the raw command code (1 CONNECT, 2 BIND, 3 UDP, 0xF0 ...).
    @ivar user: the authenticated avatar id, or L{None} without C{--auth}.
    @ivar isolationKey: a hashable key; connections that must not share an
        upstream circuit have different keys (Tor's stream isolation).
    @ivar credentials: the username and password the client sent (for
        isolation), or L{None}.
    @ivar pairs: proposal 229 key/value pairs the client sent, beyond
        USERNAME and PASSWD.
    @ivar stackOptions: SOCKS6 stack options asked for the proxy-remote leg.
    @ivar bindAddress: the local address upstream connections leave from,
        as C{(host, port)}, or L{None} for the system's choice.
    @ivar bindRequest: the destination a policy decides on is not a remote
        host but an address and port of the proxy itself that the client
        wants to listen or receive datagrams on (the wanted bind address of
        a SOCKS6 BIND or UDP ASSOCIATE): rules about ports, commands,
        users, clients and address ranges apply to it, refusals of private
        or of the proxy's own addresses do not.
    """

    client: Any = None
    version: int = 5
    command: int = 1
    user: Any = None
    isolationKey: Any = None
    credentials: tuple[bytes, bytes] | None = None
    pairs: Mapping[bytes, bytes] = _NO_PAIRS
    stackOptions: Any = None
    bindAddress: tuple[str, int] | None = None
    bindRequest: bool = False


class IUpstreamFactory(Interface):
    """Turns a destination into an endpoint that reaches it."""

    def endpointFor(destination: Destination, context: ConnectContext) -> Any:
        """
        Choose how to reach C{destination}.

        @return: an C{IStreamClientEndpoint}.  Its C{connect} fails with one
            of L{socksd.errors}' typed errors or one of Twisted's connection
            errors (refused, DNS lookup, timeout, no route).
        """


class IResolver(Interface):
    """Forward and reverse lookups; the same resolver serves CONNECT."""

    def resolve(name: str) -> Any:
        """
        Look up the addresses of C{name}.

        @return: a C{Deferred} firing with a non-empty list of
            L{IPv4Address} / L{IPv6Address}, or failing with
            L{socksd.errors.ResolveFailed}.
        """

    def reverse(address: IPv4Address | IPv6Address) -> Any:
        """
        Look up the name of C{address} (Tor's RESOLVE_PTR).

        @return: a C{Deferred} firing with a name, or failing with
            L{socksd.errors.ResolveFailed}.
        """


@dataclass(frozen=True, slots=True)
class Decision:
    """
    What a policy decided about one request.

    @ivar allowed: may the request go ahead?
    @ivar reason: why it is refused (for the log), or L{None}.
    @ivar rule: the name of the rule that decided (for the log), or
        L{None} when no named rule did.
    @ivar upstream: the L{IUpstreamFactory} this request goes through, or
        L{None} for the server's own.
    @ivar bandwidth: bytes per second per tunnel direction, or L{None}.
    @ivar bindAddress: the local C{(host, port)} the connection to the
        destination leaves from, or L{None} (the server's choice).
    @ivar quota: a volume quota on the tunnels this decision allows: an
        object with C{key} (text naming the quota, e.g. the rule's name),
        C{size} (bytes) and C{period} (C{"hour"}, C{"day"}, C{"week"} or
        C{"month"}), counted per user (per client address without one):
        L{socksd.policy.quota.Quota}; or L{None}.
    @ivar checkAddresses: the destination is a name whose resolved
        addresses the policy wants to see (L{IPolicy.decideResolved})
        before the request goes ahead, when the server resolves the name
        itself.
    """

    allowed: bool
    reason: str | None = None
    rule: str | None = None
    upstream: Any = None
    bandwidth: float | None = None
    bindAddress: tuple[str, int] | None = None
    checkAddresses: bool = False
    quota: Any = None

    def __post_init__(self) -> None:
        if not self.allowed and (
            self.bindAddress is not None
            or self.bandwidth is not None
            or self.upstream is not None
            or self.quota is not None
        ):
            raise ValueError(
                "a refusal has no upstream, bind address, bandwidth or quota"
            )


#: The decision of a server without a policy: allowed, nothing to add.
ALLOW = Decision(True)


class IPolicy(Interface):
    """
    Decides who may use the proxy, and to reach what: everything the
    server asks a policy is declared here.
    """

    def allowClient(client: Any) -> bool:
        """May C{client} (a Twisted C{IAddress}) use the proxy at all?"""

    def decide(context: ConnectContext, destination: Destination) -> Decision:
        """
        Decide on a request before anything is resolved: allowed or not,
        the rule, and for an allowed request its upstream, bandwidth and
        outgoing address.
        """

    def decideResolved(
        context: ConnectContext,
        destination: Destination,
        addresses: Sequence[IPv4Address | IPv6Address],
        decision: Decision,
    ) -> Decision:
        """
        Decide again once C{destination}'s name resolved to C{addresses},
        for a C{decision} that asked for it (L{Decision.checkAddresses}).

        It can only refuse more: an allowed C{decision} may become a
        refusal, or gain the bandwidth and outgoing address that the rules
        give those addresses; a refusal stays a refusal.
        """


class IAccounting(Interface):
    """
    Told when each tunnel opens and when its connection ends, for
    accounting (L{socksd.checkers.radius.RadiusAccounting}); a server's
    factory holds one as C{accounting}.

    Both methods get the connection's
    L{socksd.server._log.ConnectionRecord}: C{client}, C{user},
    C{destination}, C{started} (reactor time), C{reason}, and C{relay},
    whose C{byteCounts()} are the bytes relayed so far (client to
    destination, destination to client).  Neither may raise or block.
    """

    def tunnelOpened(record: Any) -> None:
        """The tunnel of C{record}'s connection is up (after the reply)."""

    def connectionClosed(record: Any, now: float) -> None:
        """
        The connection whose tunnel was opened is gone (its log event was
        just emitted); C{now} is the reactor time.
        """
