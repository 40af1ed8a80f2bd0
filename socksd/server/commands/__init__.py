"""
The commands, as objects: one class per command, in a registry keyed by
SOCKS version and command code (L{COMMANDS}); the factory's C{commands}
mapping starts as a copy of it, so an application can add or replace one.

  - CONNECT (1): L{Connect} for SOCKS4, SOCKS5 and HTTP CONNECT (version
    0); L{Socks6Connect} for SOCKS6 (the DNS service, stack options);
  - BIND (2): L{Bind}, one for SOCKS4, SOCKS5 and SOCKS6;
  - UDP ASSOCIATE (3): L{Socks5UdpAssociate}, L{Socks6UdpAssociate};
  - Tor's RESOLVE (0xF0, SOCKS4 and SOCKS5) and RESOLVE_PTR (0xF1, SOCKS5):
    L{Resolve}, L{ResolvePtr};
  - SOCKS6's NOOP (0): L{Noop}.

A command is a L{Command}: the pipeline makes one per request and calls its
C{start(decision)}, and C{stop()} if the client leaves first.
"""

from __future__ import annotations

from socksd.server.commands._base import Command
from socksd.server.commands.bind import Bind
from socksd.server.commands.connect import Connect, Socks6Connect
from socksd.server.commands.lookup import Noop, Resolve, ResolvePtr
from socksd.server.commands.udp import Socks5UdpAssociate, Socks6UdpAssociate

__all__ = [
    "COMMANDS",
    "Command",
    "Connect",
    "Socks6Connect",
    "Bind",
    "Socks5UdpAssociate",
    "Socks6UdpAssociate",
    "Resolve",
    "ResolvePtr",
    "Noop",
]

_CONNECT = 0x01
_BIND = 0x02
_UDP_ASSOCIATE = 0x03
_RESOLVE = 0xF0
_RESOLVE_PTR = 0xF1
_NOOP = 0x00

#: The commands socksd serves, by C{(version, command code)}; version 0 is
#: HTTP CONNECT.
COMMANDS: dict[tuple[int, int], type[Command]] = {
    (0, _CONNECT): Connect,
    (4, _CONNECT): Connect,
    (4, _BIND): Bind,
    (4, _RESOLVE): Resolve,
    (5, _CONNECT): Connect,
    (5, _BIND): Bind,
    (5, _UDP_ASSOCIATE): Socks5UdpAssociate,
    (5, _RESOLVE): Resolve,
    (5, _RESOLVE_PTR): ResolvePtr,
    (6, _NOOP): Noop,
    (6, _CONNECT): Socks6Connect,
    (6, _BIND): Bind,
    (6, _UDP_ASSOCIATE): Socks6UdpAssociate,
}
