"""
L{SocksServerFactory}: the listening side of socksd, for C{twistd socksd}
and for any Twisted application::

    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString
    from socksd.server import SocksServerFactory

    serverFromString(reactor, "tcp:1080:interface=127.0.0.1").listen(
        SocksServerFactory(reactor)
    )
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.internet.protocol import Factory

from socksd.interfaces import IPolicy, IResolver, IUpstreamFactory
from socksd.server.config import ServerConfig
from socksd.server.dispatch import (
    HTTP_FIRST_BYTES,
    Dispatcher,
    HttpResistance,
)
from socksd.server.socks4 import Socks4Handler
from socksd.server.socks5 import Socks5Handler
from socksd.server.socks6 import Socks6Handler

__all__ = ["SocksServerFactory", "defaultHandlers"]


def defaultHandlers(config: ServerConfig) -> dict[int, type]:
    """
    The first-byte mapping for C{config}: 0x04 SOCKS4/4A, 0x05 SOCKS5 and
    0x06 SOCKS6 (L{socksd.server.socks6}) when C{config.protocols}
    has them, and the first letters of HTTP methods for the "this is a SOCKS
    proxy" page.
    """
    handlers: dict[int, type] = {byte: HttpResistance for byte in HTTP_FIRST_BYTES}
    versions = {4: Socks4Handler, 5: Socks5Handler, 6: Socks6Handler}
    for version, handler in versions.items():
        if version in config.protocols:
            handlers[version] = handler
    if config.httpConnect:
        from socksd.server.httpconnect import HttpConnectHandler

        handlers[ord("C")] = HttpConnectHandler
    return handlers


class SocksServerFactory(Factory):
    """
    Serves SOCKS4, SOCKS4A and SOCKS5 (and, on their first bytes, SOCKS6's
    version mismatch and an HTTP page) on one port.

    @ivar reactor: the reactor: timeouts, and the default upstream and
        resolver.
    @ivar upstream: the L{IUpstreamFactory} that reaches destinations.
    @ivar resolver: the L{IResolver} (the default upstream resolves names
        with it too).
    @ivar policy: the L{IPolicy}, or L{None} to allow everything.
    @ivar authenticator: a L{socksd.auth.Authenticator} (anything with its
        C{authenticate(username, password, client)}), or L{None} for no
        authentication.
    @ivar config: the L{ServerConfig}.
    @ivar limits: caps on concurrent connections
        (L{socksd.server.limits.ConnectionLimits}), or L{None}; set it after
        construction.
    @ivar bandwidth: bandwidth caps per client address and per user
        (L{socksd.server.limits.BandwidthLimits}), or L{None}; a rule's
        bandwidth applies either way.
    @ivar metrics: a L{socksd.metrics.Metrics} told of every connection,
        or L{None}.
    @ivar outgoingAddress: the local C{(host, port)} connections to
        destinations leave from (the connect context's C{bindAddress}; a
        rule's C{bind-address} overrides it), or L{None}.
    @ivar handlers: the dispatcher's mapping from a connection's first byte
        to the handler class that serves it (see
        L{socksd.server.dispatch}); change it to add a protocol.
    """

    limits: Any = None
    bandwidth: Any = None
    metrics: Any = None
    outgoingAddress: Any = None

    def __init__(
        self,
        reactor: Any,
        upstream: IUpstreamFactory | None = None,
        resolver: IResolver | None = None,
        policy: IPolicy | None = None,
        authenticator: Any = None,
        config: ServerConfig | None = None,
        handlers: Mapping[int, type] | None = None,
    ) -> None:
        """
        @param reactor: an C{IReactorTime}; for the defaults also an
            C{IReactorTCP} and C{IReactorPluggableNameResolver}.
        @param upstream: how destinations are reached; by default a
            L{socksd.upstream.DirectUpstream} on C{resolver}, with the
            configuration's connect timeout.
        @param resolver: how names are resolved; by default
            L{socksd.resolve.SystemResolver}.
        @param policy: who may connect, and where to.
        @param authenticator: checks SOCKS5 usernames and passwords; with
            one, SOCKS5 clients must authenticate (method 02).
        @param config: the L{ServerConfig}; C{ServerConfig()} by default.
        @param handlers: the first-byte mapping; L{defaultHandlers} of the
            configuration by default.
        """
        self.reactor = reactor
        self.config = config if config is not None else ServerConfig()
        if resolver is None:
            from socksd.resolve import SystemResolver

            resolver = SystemResolver(reactor)
        if upstream is None:
            from socksd.upstream import DirectUpstream

            if self.config.connectTimeout is not None:
                upstream = DirectUpstream(
                    reactor, resolver, connectTimeout=self.config.connectTimeout
                )
            else:
                upstream = DirectUpstream(reactor, resolver)
        self.upstream = upstream
        self.resolver = resolver
        self.policy = policy
        self.authenticator = authenticator
        self.handlers: dict[int, type] = (
            dict(handlers) if handlers is not None else defaultHandlers(self.config)
        )

    def __repr__(self) -> str:
        versions = ",".join(str(v) for v in sorted(self.config.protocols))
        return f"<SocksServerFactory socks{versions} upstream={self.upstream!r}>"

    def buildProtocol(self, addr: Any) -> Dispatcher:
        """A L{Dispatcher} for each connection."""
        return Dispatcher(self)
