"""
The pluggable parts of socksd, as zope interfaces, and the connect context.

An application embedding socksd supplies its own L{IUpstreamFactory} (how to
reach a destination) and L{IResolver} (how names become addresses), or uses
the defaults in L{socksd.upstream} and L{socksd.resolve}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Mapping

from zope.interface import Attribute, Interface

from socksd.address import Destination

__all__ = ["ConnectContext", "IUpstreamFactory", "IResolver", "IPolicy"]


@dataclass(frozen=True, slots=True)
class ConnectContext:
    """
    Everything socksd knows about a request when it asks for an upstream.

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
    """

    client: Any = None
    version: int = 5
    command: int = 1
    user: Any = None
    isolationKey: Any = None
    credentials: tuple[bytes, bytes] | None = None
    pairs: Mapping[bytes, bytes] = field(default_factory=dict)
    stackOptions: Any = None
    bindAddress: tuple[str, int] | None = None


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


class IPolicy(Interface):
    """Decides who may use the proxy, and to reach what."""

    requireResolvedCheck = Attribute(
        "True when destinations given by name must be resolved and the "
        "addresses checked too (so a name cannot smuggle a denied address)."
    )

    def allowClient(client: Any) -> bool:
        """May C{client} (a Twisted C{IAddress}) use the proxy at all?"""

    def allowRequest(context: ConnectContext, destination: Destination) -> bool:
        """May this request go to C{destination}?  Called before resolving."""

    def allowAddress(context: ConnectContext, address: IPv4Address | IPv6Address, port: int) -> bool:
        """May this request go to the resolved C{address}?"""
