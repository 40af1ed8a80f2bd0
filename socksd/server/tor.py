"""
Tor's SOCKS extensions on the server side now live where each belongs:
stream isolation in L{socksd.isolation}, proposal 229's method choice and
extended credentials in L{socksd.handshake.socks5}, RESOLVE and RESOLVE_PTR
in L{socksd.server.commands.lookup}, the onion-name check in the request
pipeline (L{socksd.server.pipeline}).  This module keeps the names the
documentation showed here.
"""

from socksd.handshake.socks5 import (
    KEY_PASSWD,
    KEY_USERNAME,
    extendedCredentials,
    socks5Methods,
)
from socksd.isolation import isolationKeyFor, upstreamCredentials

__all__ = [
    "isolationKeyFor",
    "upstreamCredentials",
    "socks5Methods",
    "extendedCredentials",
    "KEY_USERNAME",
    "KEY_PASSWD",
]
