"""
socksd's server: one listening factory for SOCKS4, SOCKS4A, SOCKS5, SOCKS6
and HTTP CONNECT, the request pipeline, the commands, and the relay that
joins a client to its destination.

  - L{socksd.server.factory}: L{SocksServerFactory}, the first-byte entries;
  - L{socksd.server.config}: L{ServerConfig};
  - L{socksd.server.connection}: one client connection: the first byte,
    the protocol's handshake (L{socksd.handshake});
  - L{socksd.server.pipeline}: the one request pipeline;
  - L{socksd.server.commands}: the commands, as objects in a registry;
  - L{socksd.server.relay}: the relays (ordinary and splice(2));
  - L{socksd.server.socks6}: SOCKS6's sessions, stack options, DNS
    service and UDP associations;
  - L{socksd.server.limits}: connection caps and bandwidth.
"""

from socksd.server.config import ServerConfig
from socksd.server.factory import SocksServerFactory

__all__ = ["SocksServerFactory", "ServerConfig"]
