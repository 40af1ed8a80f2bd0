"""
socksd's server: one listening factory for SOCKS4, SOCKS4A and SOCKS5 (and
the first bytes of SOCKS6 and HTTP), the relay that joins a client to its
destination, and the configuration.

  - L{socksd.server.factory}: L{SocksServerFactory};
  - L{socksd.server.config}: L{ServerConfig};
  - L{socksd.server.dispatch}: the first-byte dispatcher and the handler
    bases;
  - L{socksd.server.socks4}, L{socksd.server.socks5}: the protocols;
  - L{socksd.server.relay}: the relays (ordinary and splice(2)).
"""

from socksd.server.config import ServerConfig
from socksd.server.factory import SocksServerFactory

__all__ = ["SocksServerFactory", "ServerConfig"]
