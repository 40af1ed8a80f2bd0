"""
SOCKS6 stack options on the proxy-remote leg: what socksd does with each,
and the options its Operation Reply echoes.

Every requested option whose leg includes proxy-remote is answered in the
Operation Reply (options for the client-proxy leg only are ignored, A7),
each saying what was done, in the way its layout allows:

  - IP TOS: C{IP_TOS} (IPv4) or C{IPV6_TCLASS} (IPv6) on the upstream
    socket once connected; echoed with the value set.  The layout has no
    "not available" value, so it is not echoed when it could not be set
    (no socket: a proxied upstream, BIND, UDP ASSOCIATE);
  - TTL: C{IP_TTL} or C{IPV6_UNICAST_HOPS}; the same;
  - No Fragmentation: C{IP_MTU_DISCOVER} / C{IPV6_MTU_DISCOVER} set to
    "do" (Linux): available (2) when set, else not available (1);
  - Happy Eyeballs: available when the destination is a name and the
    upstream is socksd's direct upstream (C{HostnameEndpoint} does RFC 8305
    for names), else not available;
  - Multipath: available when the upstream socket really is an MPTCP
    socket (C{SO_PROTOCOL} is C{IPPROTO_MPTCP}, 262): socksd makes the
    socket itself (L{StackConnector}) for a CONNECT to an address literal
    through the direct upstream when the kernel lets it create one; else
    not available;
  - TFO: echoed with, as payload size, the number of initial-data bytes
    the kernel put in the SYN (C{sendto(MSG_FASTOPEN)} on a socket socksd
    makes itself, L{StackConnector}); 0 when none was (no TFO cookie for
    the destination yet, TFO off in the kernel, not a direct connection
    to an address literal, or not a CONNECT).  In a reply 0 therefore
    means "no SYN payload", not "any size" (our choice: the layout has no
    availability byte);
  - Listen Backlog: echoed with backlog 0, "no backlog" in the draft's
    words; a BIND inside a session that honours it replaces the answer
    with the backlog used (L{socksd.server.commands.bind});
  - Port Parity: echoed with parity 0 (none) and reserve 0; a UDP
    ASSOCIATE that honours it replaces the answer with the parity done
    (L{socksd.server.socks6.udp});
  - UDP Error: not available; a UDP ASSOCIATE whose socket reports ICMP
    errors replaces the answer with available
    (L{socksd.server.socks6.udperror}).
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any

from twisted.internet import error, tcp
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.posixbase import PosixReactorBase

from socksd.address import Destination
from socksd.wire.socks6 import (
    Availability,
    HappyEyeballsOption,
    IpTosOption,
    ListenBacklogOption,
    MultipathOption,
    NoFragmentationOption,
    PortParityOption,
    StackLeg,
    StackOption,
    TfoOption,
    TtlOption,
    UdpErrorOption,
)

__all__ = [
    "applyStackOptions",
    "connectWithStackOptions",
    "IPPROTO_MPTCP",
    "isMultipath",
    "multipathSupported",
    "StackConnector",
    "wantsStackConnect",
]

_LINUX = sys.platform.startswith("linux")
# Linux's values; the socket module lacks some of them.
_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
_PMTUDISC_DO = 2
#: Linux's protocol number for Multipath TCP sockets.
IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)
_REMOTE = StackLeg.PROXY_REMOTE


def _socketOf(transport: Any) -> socket.socket | None:
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    try:
        handle = getHandle()
    except Exception:
        return None
    return handle if isinstance(handle, socket.socket) else None


def _isIPv6(sock: socket.socket) -> bool:
    return sock.family == socket.AF_INET6


def _set(sock: socket.socket | None, level: int, name: int, value: int) -> bool:
    if sock is None:
        return False
    try:
        sock.setsockopt(level, name, value)
    except OSError:
        return False
    return True


def isMultipath(sock: socket.socket | None) -> bool:
    """
    @return: whether C{sock} is an MPTCP socket (its C{SO_PROTOCOL} is
        L{IPPROTO_MPTCP}).
    """
    if sock is None:
        return False
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == IPPROTO_MPTCP
    except (OSError, AttributeError):
        return False


def _usesHostnameEndpoint(upstream: Any) -> bool:
    from socksd.upstream.direct import DirectUpstream

    return isinstance(upstream, DirectUpstream)


def applyStackOptions(
    requested: tuple[StackOption, ...],
    transport: Any,
    destination: Destination,
    upstreamFactory: Any,
    tfoSent: int = 0,
) -> tuple[StackOption, ...]:
    """
    Apply the proxy-remote part of C{requested} to the upstream connection.

    @param requested: the request's stack options (L{Request.stackOptions}).
    @param transport: the connected upstream transport (its C{getHandle()}
        is the socket; without one nothing can be set).
    @param destination: the request's destination.
    @param upstreamFactory: the factory's upstream, to tell whether Happy
        Eyeballs was used.
    @param tfoSent: how many initial-data bytes went in the SYN.
    @return: the options for the Operation Reply.
    """
    sock = _socketOf(transport)
    ipv6 = sock is not None and _isIPv6(sock)
    replies: list[StackOption] = []
    for option in requested:
        if not option.appliesToRemote:
            continue
        if isinstance(option, IpTosOption):
            if ipv6:
                done = _set(sock, socket.IPPROTO_IPV6, socket.IPV6_TCLASS, option.tos)
            else:
                done = _set(sock, socket.IPPROTO_IP, socket.IP_TOS, option.tos)
            if done:
                replies.append(IpTosOption(_REMOTE, option.tos))
        elif isinstance(option, TtlOption):
            if ipv6:
                done = _set(
                    sock, socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, option.ttl
                )
            else:
                done = _set(sock, socket.IPPROTO_IP, socket.IP_TTL, option.ttl)
            if done:
                replies.append(TtlOption(_REMOTE, option.ttl))
        elif isinstance(option, NoFragmentationOption):
            done = False
            if option.availability == Availability.AVAILABLE and _LINUX:
                if ipv6:
                    done = _set(
                        sock, socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _PMTUDISC_DO
                    )
                else:
                    done = _set(sock, socket.IPPROTO_IP, _IP_MTU_DISCOVER, _PMTUDISC_DO)
            replies.append(
                NoFragmentationOption(
                    _REMOTE,
                    Availability.AVAILABLE if done else Availability.UNAVAILABLE,
                )
            )
        elif isinstance(option, HappyEyeballsOption):
            done = destination.isName and _usesHostnameEndpoint(upstreamFactory)
            replies.append(
                HappyEyeballsOption(
                    _REMOTE,
                    Availability.AVAILABLE if done else Availability.UNAVAILABLE,
                )
            )
        elif isinstance(option, MultipathOption):
            done = option.availability == Availability.AVAILABLE and isMultipath(sock)
            replies.append(
                MultipathOption(
                    _REMOTE,
                    Availability.AVAILABLE if done else Availability.UNAVAILABLE,
                )
            )
        elif isinstance(option, TfoOption):
            replies.append(TfoOption(_REMOTE, min(tfoSent, 0xFFFF)))
        elif isinstance(option, ListenBacklogOption):
            replies.append(ListenBacklogOption(_REMOTE, 0))
        elif isinstance(option, PortParityOption):
            replies.append(PortParityOption(_REMOTE, 0, 0))
        elif isinstance(option, UdpErrorOption):
            replies.append(UdpErrorOption(_REMOTE, Availability.UNAVAILABLE))
    return tuple(replies)


_MSG_FASTOPEN = getattr(socket, "MSG_FASTOPEN", 0x20000000)


def multipathSupported(family: int) -> bool:
    """
    @return: whether this kernel creates MPTCP stream sockets of C{family}
        (tried each time: a kernel may refuse them, for example with
        C{net.mptcp.enabled} off).
    """
    try:
        probe = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
    except OSError:
        return False
    probe.close()
    return True


class _StackClient(tcp.Client):
    """
    Twisted's TCP client transport, with a socket made for the stack
    options: an MPTCP socket when asked, and the connection started with
    C{sendto(MSG_FASTOPEN)} so that the initial data can ride in the SYN.
    The connection is still reported (C{connectionMade}) only once the
    handshake is over, so connect errors are reported as usual.
    """

    def __init__(
        self,
        host: str,
        port: int,
        bindAddress: Any,
        connector: StackConnector,
        reactor: Any,
    ) -> None:
        self._stackConnector = connector
        self._synPayload = connector.synPayload
        super().__init__(host, port, bindAddress, connector, reactor)

    def createInternetSocket(self) -> socket.socket:
        proto = IPPROTO_MPTCP if self._stackConnector.multipath else 0
        try:
            sock = socket.socket(self.addressFamily, self.socketType, proto)
        except OSError:
            if not proto:
                raise
            sock = socket.socket(self.addressFamily, self.socketType)
        sock.setblocking(False)
        return sock

    def doConnect(self) -> None:
        payload, self._synPayload = self._synPayload, None
        if payload is not None and hasattr(self, "connector"):
            try:
                sent = self.socket.sendto(payload, _MSG_FASTOPEN, self.realAddress)
            except BlockingIOError:
                # EINPROGRESS: the SYN left (with a cookie request) and no
                # data; the usual connect below sees EALREADY and waits.
                sent = 0
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EPIPE):
                    self.failIfNotConnected(
                        error.getConnectError((e.errno, e.strerror))
                    )
                    return
                sent = 0
            self._stackConnector.sentInSyn = sent
        super().doConnect()


class StackConnector(tcp.Connector):
    """
    A C{tcp.Connector} (what C{reactor.connectTCP} makes) whose transport
    honours the TFO and Multipath stack options (see L{_StackClient}).

    @ivar multipath: make an MPTCP socket.
    @ivar synPayload: the initial data to offer for the SYN (TFO), or
        L{None} not to use TFO.
    @ivar sentInSyn: how many bytes of C{synPayload} the kernel sent in the
        SYN (known once the connection is made).
    """

    def __init__(
        self,
        host: str,
        port: int,
        factory: Any,
        timeout: float,
        bindAddress: Any,
        reactor: Any,
        multipath: bool,
        synPayload: bytes | None,
    ) -> None:
        super().__init__(host, port, factory, timeout, bindAddress, reactor)
        self.multipath = multipath
        self.synPayload = synPayload
        self.sentInSyn = 0

    def _makeTransport(self) -> _StackClient:
        return _StackClient(self.host, self.port, self.bindAddress, self, self.reactor)


def wantsStackConnect(requested: tuple[StackOption, ...], upstreamFactory: Any) -> bool:
    """
    @return: whether C{requested} asks for TFO or Multipath on the
        proxy-remote leg and C{upstreamFactory} is socksd's direct upstream
        (the only one whose sockets socksd makes itself).
    """
    if not _usesHostnameEndpoint(upstreamFactory):
        return False
    for option in requested:
        if not option.appliesToRemote:
            continue
        if isinstance(option, TfoOption):
            return True
        if (
            isinstance(option, MultipathOption)
            and option.availability == Availability.AVAILABLE
        ):
            return True
    return False


def connectWithStackOptions(
    requested: tuple[StackOption, ...],
    endpoint: Any,
    factory: Any,
    earlyData: bytes,
) -> StackConnector | None:
    """
    Start a connection honouring the TFO and Multipath options, when they
    are asked for and the endpoint is one of socksd's direct endpoints to an
    address literal on a reactor with real sockets.

    @param requested: the request's stack options.
    @param endpoint: the endpoint the upstream factory gave.
    @param factory: the C{ClientFactory} to connect (as C{connectTCP}'s).
    @param earlyData: the client's data so far (the SYN payload's source).
    @return: the started connector, or L{None} when nothing is to be done
        differently (the caller then connects as usual).
    """
    from socksd.upstream.direct import DirectTCP4Endpoint, DirectTCP6Endpoint

    multipath = False
    synPayload: bytes | None = None
    for option in requested:
        if not option.appliesToRemote:
            continue
        if isinstance(option, MultipathOption):
            multipath = multipath or option.availability == Availability.AVAILABLE
        elif isinstance(option, TfoOption) and synPayload is None:
            limit = option.payloadSize or len(earlyData)
            synPayload = earlyData[:limit]
    if not multipath and synPayload is None:
        return None
    if not isinstance(endpoint, (DirectTCP4Endpoint, DirectTCP6Endpoint)):
        return None
    reactor = endpoint._reactor
    if not (
        _LINUX
        and isinstance(reactor, PosixReactorBase)
        and IReactorFDSet.providedBy(reactor)
    ):
        return None
    family = (
        socket.AF_INET6 if isinstance(endpoint, DirectTCP6Endpoint) else socket.AF_INET
    )
    if multipath and not multipathSupported(family):
        multipath = False
        if synPayload is None:
            return None
    connector = StackConnector(
        endpoint._host,
        endpoint._port,
        factory,
        endpoint._timeout,
        endpoint._bindAddress,
        reactor,
        multipath,
        synPayload,
    )
    connector.connect()
    return connector
