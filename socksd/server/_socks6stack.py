"""
SOCKS6 stack options on the proxy-remote leg: what socksd does with each,
and the options its Operation Reply echoes (ambiguity A3: only options
socksd acts on are echoed, each saying what was done).

Options whose leg does not include proxy-remote are ignored (A7).  Done
with C{setsockopt} on the upstream socket once it is connected (so the
settings hold for every packet after the handshake's SYN):

  - IP TOS: C{IP_TOS} (IPv4) or C{IPV6_TCLASS} (IPv6); echoed with the
    value set, or not echoed when it could not be set;
  - TTL: C{IP_TTL} or C{IPV6_UNICAST_HOPS}; the same;
  - No Fragmentation: C{IP_MTU_DISCOVER} / C{IPV6_MTU_DISCOVER} set to
    "do" (Linux), echoed available (2) when set, else not available (1);
  - Happy Eyeballs: available when the destination is a name and the
    upstream is socksd's direct upstream (C{HostnameEndpoint} does RFC 8305
    for names), else not available;
  - Multipath: always not available, since the upstream socket is made by
    Twisted's endpoint without C{IPPROTO_MPTCP};
  - UDP Error: not available (no Datagram Error messages are sent).

TFO, Listen Backlog and Port Parity are not acted on and not echoed: the
draft lets a proxy ignore a stack option, and an option without an
availability byte cannot say "not done" otherwise.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from socksd.address import Destination
from socksd.wire.socks6 import (
    Availability,
    HappyEyeballsOption,
    IpTosOption,
    MultipathOption,
    NoFragmentationOption,
    StackLeg,
    StackOption,
    TtlOption,
    UdpErrorOption,
)

__all__ = ["applyStackOptions"]

_LINUX = sys.platform.startswith("linux")
# Linux's values; the socket module lacks some of them.
_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
_PMTUDISC_DO = 2
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


def _usesHostnameEndpoint(upstream: Any) -> bool:
    from socksd.upstream import DirectUpstream

    return isinstance(upstream, DirectUpstream)


def applyStackOptions(
    requested: tuple[StackOption, ...],
    transport: Any,
    destination: Destination,
    upstreamFactory: Any,
) -> tuple[StackOption, ...]:
    """
    Apply the proxy-remote part of C{requested} to the upstream connection.

    @param requested: the request's stack options (L{Request.stackOptions}).
    @param transport: the connected upstream transport (its C{getHandle()}
        is the socket; without one nothing can be set).
    @param destination: the request's destination.
    @param upstreamFactory: the factory's upstream, to tell whether Happy
        Eyeballs was used.
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
            replies.append(MultipathOption(_REMOTE, Availability.UNAVAILABLE))
        elif isinstance(option, UdpErrorOption):
            replies.append(UdpErrorOption(_REMOTE, Availability.UNAVAILABLE))
    return tuple(replies)
