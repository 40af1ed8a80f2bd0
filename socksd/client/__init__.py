"""
SOCKS client endpoints for Twisted applications and for chaining proxies.

  - L{SOCKS5ClientEndpoint}, L{socks5Resolve}, L{socks5ResolvePtr}: SOCKS5
    with RFC 1929 and proposal 229 authentication and Tor's extensions
    (L{socksd.client.socks5});
  - L{SOCKS4AClientEndpoint}, L{socks4aResolve}: SOCKS4 and SOCKS4A
    (L{socksd.client.socks4a});
  - L{SOCKS6ClientEndpoint}, L{Socks6Session}, L{socks6Noop},
    L{socks6Teardown}, L{socks6UdpAssociate}: SOCKS6 draft-11 with 0-RTT authentication and
    initial data, sessions and idempotence tokens
    (L{socksd.client.socks6});
  - endpoint strings C{socks5:}, C{socks4a:} and C{socks6:} for C{clientFromString}
    (L{socksd.client.parser}), and L{endpointForDestination} for chaining;
  - the shared machinery, for other versions: L{IClientHandshake},
    L{HandshakeResult}, L{connectThrough}, L{queryThrough}
    (L{socksd.client._protocol}).

Every endpoint takes the proxy's own endpoint (TCP, TLS, UNIX, or another
proxy's), so proxies chain by nesting.  Failures are typed
(L{socksd.errors}, C{replyCode} set from the proxy's reply), plus
L{ProxyDisconnected} and L{ProxyProtocolError}; cancel the Deferred to give
up (C{addTimeout} does).
"""

from socksd.client._protocol import (
    HandshakeResult,
    IClientHandshake,
    ProxyDisconnected,
    ProxyProtocolError,
    SocksClientProtocol,
    TunnelTransport,
    connectThrough,
    peerAddressFor,
    queryThrough,
)
from socksd.client.parser import DEFAULT_PROXY, endpointForDestination, quoteArgument
from socksd.client.socks4a import SOCKS4AClientEndpoint, socks4aResolve
from socksd.client.socks5 import SOCKS5ClientEndpoint, socks5Resolve, socks5ResolvePtr
from socksd.client.socks6 import (
    SOCKS6ClientEndpoint,
    SessionInvalid,
    Socks6Session,
    Socks6UdpAssociation,
    TokenRejected,
    socks6Noop,
    socks6Teardown,
    socks6UdpAssociate,
)

__all__ = [
    "SOCKS5ClientEndpoint",
    "SOCKS6ClientEndpoint",
    "Socks6Session",
    "SessionInvalid",
    "TokenRejected",
    "socks6Noop",
    "socks6Teardown",
    "socks6UdpAssociate",
    "Socks6UdpAssociation",
    "SOCKS4AClientEndpoint",
    "socks5Resolve",
    "socks5ResolvePtr",
    "socks4aResolve",
    "endpointForDestination",
    "quoteArgument",
    "DEFAULT_PROXY",
    "ProxyDisconnected",
    "ProxyProtocolError",
    "IClientHandshake",
    "HandshakeResult",
    "SocksClientProtocol",
    "TunnelTransport",
    "connectThrough",
    "queryThrough",
    "peerAddressFor",
]
