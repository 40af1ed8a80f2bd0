"""
The server handshakes, one per protocol, without I/O: bytes in, actions
out (L{socksd.handshake._actions}).

  - L{Socks4Handshake}: SOCKS4 and SOCKS4A (L{socksd.handshake.socks4});
  - L{Socks5Handshake}: SOCKS5 with Tor's rules and proposal 229
    (L{socksd.handshake.socks5});
  - L{Socks6Handshake}: SOCKS6 draft-11, with sessions and idempotence
    (L{socksd.handshake.socks6});
  - L{HttpHandshake}: an HTTP request on the SOCKS port: CONNECT, or the
    "this is a SOCKS proxy" page (L{socksd.handshake.http}).

The server's connection (L{socksd.server.connection}) drives one of them per
client, and serves the L{Request} it gives with the one request pipeline.
Nothing in this package imports Twisted.
"""

from socksd.handshake._actions import (
    AcceptContext,
    Action,
    AwaitSessions,
    CheckCredentials,
    HandshakeSettings,
    Refuse,
    ReplyLabel,
    Request,
    RequestReady,
    Send,
    ServerHandshake,
)
from socksd.handshake.http import HttpHandshake
from socksd.handshake.socks4 import Socks4Handshake
from socksd.handshake.socks5 import Socks5Handshake
from socksd.handshake.socks6 import Socks6Handshake

__all__ = [
    "AcceptContext",
    "Action",
    "AwaitSessions",
    "CheckCredentials",
    "HandshakeSettings",
    "HttpHandshake",
    "Refuse",
    "ReplyLabel",
    "Request",
    "RequestReady",
    "Send",
    "ServerHandshake",
    "Socks4Handshake",
    "Socks5Handshake",
    "Socks6Handshake",
]
