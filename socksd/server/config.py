"""
L{ServerConfig}: the knobs of a L{socksd.server.SocksServerFactory}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from ipaddress import ip_address

from socksd.replies import ReplyProfile

__all__ = ["ServerConfig", "ALL_PROTOCOLS"]

#: Every SOCKS version socksd can serve on one port.
ALL_PROTOCOLS = frozenset({4, 5, 6})


def _checkSeconds(value: object, name: str) -> None:
    """
    @raise ValueError: C{value} is neither L{None} nor a positive, finite
        number of seconds.
    """
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"{name} must be a positive number of seconds or None, not {value!r}"
        )


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """
    How a socksd server behaves.  Every field has a default, so
    C{ServerConfig()} is a working configuration.

    @ivar protocols: the SOCKS versions served (4 includes SOCKS4A); a
        client whose first byte names another version is closed.  Any
        iterable of 4, 5 and 6 is accepted and stored as a C{frozenset}.
    @ivar extendedErrors: send Tor's extended SOCKS5 reply codes (F0-F7,
        the C{SOCKS5_EXTENDED} reply profile), as Tor's C{ExtendedErrors}
        flag does.
    @ivar isolateSocksAuth: the credentials a client sends (SOCKS5
        username and password, proposal 229 pairs, the SOCKS4 user id) are
        part of its requests' isolation key, as Tor's C{IsolateSOCKSAuth}
        (see L{socksd.server.tor}).
    @ivar isolateClientAddr: the client's address is part of the isolation
        key (Tor's C{IsolateClientAddr}).
    @ivar isolateDestAddr: the destination's host is part of the isolation
        key (Tor's C{IsolateDestAddr}).
    @ivar isolateDestPort: the destination's port is part of the isolation
        key (Tor's C{IsolateDestPort}).
    @ivar preferNoAuth: without an authenticator, a SOCKS5 client offering
        both 00 and 02 gets 00 (Tor's C{PreferSOCKSNoAuth}); by default it
        gets 02, so that its credentials can isolate its streams.
    @ivar handshakeTimeout: seconds a client has, from connecting, to
        complete its request; then it is closed.  L{None}: no limit.
    @ivar maxOptimisticData: bytes a client may send after its request and
        before the reply (optimistic data) that socksd keeps; past this,
        socksd stops reading from the client until the tunnel is up.  The
        same bound applies to bytes pipelined behind a handshake message
        while socksd is busy (checking a password, say).
    @ivar connectTimeout: seconds a connection to a destination may take;
        then it is cancelled and the client gets the reply for a timeout
        (SOCKS5 06 TTL expired).  L{None}: only the upstream's own limit.
    @ivar idleTimeout: seconds a tunnel may carry no data in either
        direction before both sides are closed; it is checked every
        C{idleTimeout} seconds, so a tunnel is closed after between one and
        two such periods of silence.  L{None}: never.
    @ivar socks4WithAuth: with an authenticator, SOCKS4 and SOCKS4A clients
        (which cannot send a password) are refused (reply 91) unless this is
        C{True}.
    @ivar tcpNoDelay: set C{TCP_NODELAY} on both legs of every tunnel.
    @ivar splice: relay tunnels whose legs are both plain TCP sockets with
        C{splice(2)} (zero-copy, Linux; L{socksd.server.relay.splice}); other
        tunnels, and all of them when this is C{False}, use the ordinary
        relay.
    @ivar httpConnect: serve HTTP C{CONNECT} requests on the SOCKS port as
        an HTTP proxy tunnel (L{socksd.server.httpconnect}); off, every
        HTTP request gets the "this is a SOCKS proxy" page.
    @ivar bindAddress: the address BIND listens on (and reports); L{None}:
        the address of the interface the client came in on.
    @ivar bindTimeout: seconds a BIND waits for its incoming connection;
        then the client gets a failure reply.  L{None}: no limit.
    @ivar maxPendingBindsPerClient: BINDs one client address may have
        waiting for their peer at once (each holds a listening socket);
        more get a failure reply.  L{None}: no limit.
    @ivar udpTimeout: seconds a UDP association may carry no datagram
        before it ends (with its control connection).  L{None}: never.
    @ivar socks6Dns: serve SOCKS6's DNS service: a CONNECT to 0.0.0.0:53 or
        [::]:53 carries DNS over TCP answered from the server's resolver
        (L{socksd.server.socks6.dns}); off, it is refused (05).
    """

    protocols: frozenset[int] = ALL_PROTOCOLS
    extendedErrors: bool = False
    isolateSocksAuth: bool = True
    isolateClientAddr: bool = False
    isolateDestAddr: bool = False
    isolateDestPort: bool = False
    preferNoAuth: bool = False
    handshakeTimeout: float | None = 10.0
    maxOptimisticData: int = 65536
    connectTimeout: float | None = 30.0
    idleTimeout: float | None = None
    socks4WithAuth: bool = False
    tcpNoDelay: bool = True
    splice: bool = True
    httpConnect: bool = False
    bindAddress: str | None = None
    bindTimeout: float | None = 120.0
    maxPendingBindsPerClient: int | None = 32
    udpTimeout: float | None = 120.0
    socks6Dns: bool = False

    def __post_init__(self) -> None:
        try:
            protocols = frozenset(self.protocols)
        except TypeError:
            raise ValueError(
                f"protocols must be an iterable of 4, 5 and 6, not {self.protocols!r}"
            ) from None
        unknown = protocols - ALL_PROTOCOLS
        if unknown:
            raise ValueError(
                f"unknown SOCKS versions {sorted(unknown)!r} (choose from 4, 5, 6)"
            )
        if not protocols:
            raise ValueError("protocols names no SOCKS version")
        object.__setattr__(self, "protocols", protocols)
        _checkSeconds(self.handshakeTimeout, "handshakeTimeout")
        _checkSeconds(self.connectTimeout, "connectTimeout")
        _checkSeconds(self.idleTimeout, "idleTimeout")
        _checkSeconds(self.bindTimeout, "bindTimeout")
        _checkSeconds(self.udpTimeout, "udpTimeout")
        if self.bindAddress is not None:
            try:
                ip_address(self.bindAddress)
            except ValueError:
                raise ValueError(
                    f"bindAddress must be an IP address, not {self.bindAddress!r}"
                ) from None
        pending = self.maxPendingBindsPerClient
        if pending is not None and (
            isinstance(pending, bool) or not isinstance(pending, int) or pending < 1
        ):
            raise ValueError(
                "maxPendingBindsPerClient must be a positive number or None, "
                f"not {pending!r}"
            )
        if (
            isinstance(self.maxOptimisticData, bool)
            or not isinstance(self.maxOptimisticData, int)
            or self.maxOptimisticData < 0
        ):
            raise ValueError(
                f"maxOptimisticData must be a number of bytes, not {self.maxOptimisticData!r}"
            )

    @property
    def socks5Profile(self) -> ReplyProfile:
        """
        The reply profile of a SOCKS5 client that did not offer proposal
        229's method: C{SOCKS5_EXTENDED} with L{extendedErrors}, else
        C{SOCKS5}.
        """
        return (
            ReplyProfile.SOCKS5_EXTENDED if self.extendedErrors else ReplyProfile.SOCKS5
        )
