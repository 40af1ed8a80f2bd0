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

from typing import Any, Callable, Mapping

from twisted.internet.protocol import Factory

from socksd.handshake import (
    HandshakeSettings,
    HttpHandshake,
    Socks4Handshake,
    Socks5Handshake,
    Socks6Handshake,
)
from socksd.handshake.socks5 import GssapiSocks5Handshake
from socksd.handshake.http import HTTP_FIRST_BYTES
from socksd.interfaces import IPolicy, IResolver, IUpstreamFactory
from socksd.server.commands import COMMANDS
from socksd.server.config import ServerConfig
from socksd.server.connection import SocksConnection
from socksd.policy import adaptPolicy
from socksd.server.socks6.sessions import sessionTableFor

__all__ = [
    "SocksServerFactory",
    "defaultHandlers",
    "handshakeSettings",
    "SOCKS4",
    "SOCKS5",
    "SOCKS6",
    "HTTP",
]


def SOCKS4(connection: SocksConnection) -> None:
    """The first-byte entry of SOCKS4 and SOCKS4A."""
    connection.negotiate(Socks4Handshake(connection.factory.handshakeSettings))


def SOCKS5(connection: SocksConnection) -> None:
    """
    The first-byte entry of SOCKS5: the factory's C{socks5Handshake}
    (L{GssapiSocks5Handshake} when it serves GSS-API).
    """
    factory = connection.factory
    connection.negotiate(factory.socks5Handshake(factory.handshakeSettings))


def SOCKS6(connection: SocksConnection) -> None:
    """The first-byte entry of SOCKS6 (its sessions are the factory's)."""
    factory = connection.factory
    handshake = Socks6Handshake(
        factory.handshakeSettings,
        sessionTableFor(factory),
        getattr(connection.record.client, "host", None),
    )
    connection.negotiate(handshake)


def HTTP(connection: SocksConnection) -> None:
    """
    The first-byte entry of the letters HTTP methods start with: the "this
    is a SOCKS proxy" page, or HTTP CONNECT.
    """
    listening = connection.transport.getHost()
    host = getattr(listening, "host", None)
    port = getattr(listening, "port", None)
    local = (host, port) if isinstance(host, str) and isinstance(port, int) else None
    connection.negotiate(HttpHandshake(connection.factory.handshakeSettings, local))


def handshakeSettings(
    config: ServerConfig, requireAuth: bool, gssapiLevels: frozenset[int] = frozenset()
) -> HandshakeSettings:
    """
    The L{HandshakeSettings} of a server with C{config}.

    @param requireAuth: the server has an authenticator.
    @param gssapiLevels: the GSS-API protection levels it accepts (none:
        no GSS-API); with some, clients must authenticate even without an
        authenticator.
    """
    return HandshakeSettings(
        gssapiLevels=frozenset(gssapiLevels),
        passwords=requireAuth,
        requireAuth=requireAuth or bool(gssapiLevels),
        preferNoAuth=config.preferNoAuth,
        socks4WithAuth=config.socks4WithAuth,
        extendedErrors=config.extendedErrors,
        httpConnect=config.httpConnect,
    )


def defaultHandlers(config: ServerConfig) -> dict[int, Callable[..., Any]]:
    """
    The first-byte mapping for C{config}: 0x04 SOCKS4/4A, 0x05 SOCKS5 and
    0x06 SOCKS6 when C{config.protocols} has them, and the first letters of
    HTTP methods (the "this is a SOCKS proxy" page, or HTTP CONNECT with
    C{config.httpConnect}).
    """
    handlers: dict[int, Callable[..., Any]] = {byte: HTTP for byte in HTTP_FIRST_BYTES}
    versions = {4: SOCKS4, 5: SOCKS5, 6: SOCKS6}
    for version, handler in versions.items():
        if version in config.protocols:
            handlers[version] = handler
    return handlers


class _PolicySlot:
    """
    The factory's C{policy}: a policy written for the old interface
    (C{allowRequest} and C{allowAddress}, no C{decide}) is adapted when it
    is set (L{socksd.policy.adaptPolicy}).  Reading it is reading the
    instance's attribute (this descriptor has no C{__get__}).
    """

    def __set__(self, factory: Any, policy: Any) -> None:
        factory.__dict__["policy"] = adaptPolicy(policy)


class _AuthenticatorSlot:
    """
    The factory's C{authenticator}: setting it updates the factory's
    C{handshakeSettings}.  Reading it is reading the instance's attribute.
    """

    def __set__(self, factory: Any, authenticator: Any) -> None:
        factory.__dict__["authenticator"] = authenticator
        _updateSettings(factory)


class _GssapiSlot:
    """
    The factory's C{gssapi}: setting it (a L{socksd.gssapi.GssapiAcceptor},
    or L{None}) updates the factory's C{handshakeSettings}, so that SOCKS5
    method 01 is offered, and its C{socks5Handshake}.  Reading it is
    reading the instance's attribute.
    """

    def __set__(self, factory: Any, acceptor: Any) -> None:
        factory.__dict__["gssapi"] = acceptor
        factory.socks5Handshake = (
            Socks5Handshake if acceptor is None else GssapiSocks5Handshake
        )
        _updateSettings(factory)
        _updateExtras(factory)


class _ExtraSlot:
    """
    The factory's C{metrics}, C{accounting} and C{accessLog}: setting one updates
    C{factory.extras}.  Reading it is reading the instance's attribute.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __set__(self, factory: Any, value: Any) -> None:
        factory.__dict__[self.name] = value
        _updateExtras(factory)


def _updateExtras(factory: Any) -> None:
    attributes = factory.__dict__
    factory.extras = any(
        attributes.get(name) is not None
        for name in ("metrics", "accounting", "gssapi", "accessLog")
    )


def _updateSettings(factory: Any) -> None:
    acceptor = factory.__dict__.get("gssapi")
    factory.handshakeSettings = handshakeSettings(
        factory.config,
        factory.__dict__.get("authenticator") is not None,
        acceptor.levels if acceptor is not None else frozenset(),
    )


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
    @ivar metrics: a L{socksd.service.metrics.Metrics} told of every connection,
        or L{None}.
    @ivar accessLog: what gets every finished connection's record
        (C{accessLog.write(record, now)}, with the
        L{socksd.server._log.ConnectionRecord} and the reactor time it
        closed; L{socksd.service.accesslog.AccessLog}), or L{None}.
    @ivar extras: whether C{metrics}, C{accounting}, C{gssapi} or
        C{accessLog} is set
        (kept by setting them): the one flag the per-tunnel path reads, so
        that a plain tunnel pays for none of them.
    @ivar socks5Handshake: the SOCKS5 handshake class (kept by setting
        C{gssapi}).
    @ivar gssapi: the L{socksd.gssapi.GssapiAcceptor} that serves SOCKS5
        method 01 (RFC 1961), or L{None}.
    @ivar throttle: the L{socksd.throttle.LoginThrottle} in front of every
        password check, or L{None}.
    @ivar accounting: an L{socksd.interfaces.IAccounting} told when each
        tunnel opens and when its connection closes (RADIUS accounting),
        or L{None}.
    @ivar outgoingAddress: the local C{(host, port)} connections to
        destinations leave from (the connect context's C{bindAddress}; a
        rule's C{bind-address} overrides it), or L{None}.
    @ivar handlers: the mapping from a connection's first byte to what
        serves it (see L{socksd.server.connection}); change it to add a
        protocol.
    @ivar commands: the command registry, by C{(version, command code)}
        (see L{socksd.server.commands}); change it to add a command.
    @ivar handshakeSettings: what the handshakes need to know
        (L{socksd.handshake.HandshakeSettings}), from the configuration and
        the authenticator.
    @ivar connections: the open client connections (a set the
        connections add themselves to, and leave when they are gone): what
        a drain waits for (L{socksd.service.drain}).
    @ivar pendingBinds: how many BINDs each client address (its
        L{socksd.server.limits.clientKey}) has waiting for their peer, for
        C{ServerConfig.maxPendingBindsPerClient}; made by the first BIND.
    @ivar socks6Sessions: the SOCKS6 sessions
        (L{socksd.server.socks6.sessions.SessionTable}), made when the first
        SOCKS6 client comes (L{sessionTableFor}); set one before serving for
        other limits.
    @ivar socks6Dtls: the SOCKS6 DTLS relay port's protocol
        (L{socksd.server.socks6.dtls.DtlsRelay}) the SOCKS6 UDP associations
        register with, or L{None} for no DTLS.
    @ivar socks6Reservations: the UDP ports SOCKS6 associations reserved
        (Port Parity), made on first use
        (L{socksd.server.socks6.udp.reservationsFor}).
    """

    limits: Any = None
    bandwidth: Any = None
    throttle: Any = None
    outgoingAddress: Any = None
    socks6Sessions: Any = None
    socks6Dtls: Any = None
    socks6Reservations: Any = None
    pendingBinds: Any = None
    policy = _PolicySlot()
    authenticator = _AuthenticatorSlot()
    gssapi = _GssapiSlot()
    metrics = _ExtraSlot()
    accounting = _ExtraSlot()
    accessLog = _ExtraSlot()

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
            from socksd.upstream.direct import DirectUpstream

            if self.config.connectTimeout is not None:
                upstream = DirectUpstream(
                    reactor, resolver, connectTimeout=self.config.connectTimeout
                )
            else:
                upstream = DirectUpstream(reactor, resolver)
        self.upstream = upstream
        self.resolver = resolver
        self.policy = policy
        self.__dict__.update(gssapi=None, metrics=None, accounting=None, accessLog=None)
        self.extras = False
        self.socks5Handshake: type = Socks5Handshake
        self.authenticator = authenticator
        self.handlers: dict[int, Callable[..., Any]] = (
            dict(handlers) if handlers is not None else defaultHandlers(self.config)
        )
        self.commands = dict(COMMANDS)
        self.connections: set[SocksConnection] = set()


    def __repr__(self) -> str:
        versions = ",".join(str(v) for v in sorted(self.config.protocols))
        return f"<SocksServerFactory socks{versions} upstream={self.upstream!r}>"

    def buildProtocol(self, addr: Any) -> SocksConnection:
        """A L{SocksConnection} for each connection."""
        return SocksConnection(self)
