"""
Stream isolation, as Tor does it: which requests may share an upstream
circuit, and the credentials that tell an upstream proxy so.

  - L{isolationKeyFor} builds a request's
    L{ConnectContext.isolationKey <socksd.interfaces.ConnectContext>} the
    way Tor's C{IsolateSOCKSAuth}, C{IsolateClientAddr}, C{IsolateDestAddr}
    and C{IsolateDestPort} do;
  - L{upstreamCredentials} turns a key into SOCKS credentials for a chained
    upstream proxy, so that an upstream Tor keeps streams of different keys
    on different circuits; L{isolationCredentials} is the same for keys that
    may be L{None}.

The server (which builds keys) and chaining (which sends them upstream)
both import this module; it imports nothing from Twisted.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from socksd.address import Destination

__all__ = ["isolationKeyFor", "upstreamCredentials", "isolationCredentials"]

#: The secret that L{upstreamCredentials} derives credentials with, by
#: default: random for each process, so that an upstream cannot link
#: credentials across restarts, nor learn the clients' own.
_PROCESS_SECRET = os.urandom(32)


def isolationKeyFor(
    config: Any, client: Any, credentials: Any, destination: Destination
) -> Any:
    """
    The isolation key of a request: requests with different keys must not
    share an upstream circuit.

    With the default configuration (only C{isolateSocksAuth}) the key is
    C{credentials} itself, or L{None} without them, so that equal
    credentials share a key and different ones never do.  Each other
    C{isolate*} option of C{config} adds a part: the client's host, the
    destination's host (names lowercased), the destination's port.

    @param config: a L{socksd.server.ServerConfig} (anything with its
        C{isolate*} attributes).
    @param client: the client's address (a Twisted C{IAddress}).
    @param credentials: the client's isolation credentials: a SOCKS5
        C{(username, password)} tuple (with proposal 229's other pairs
        after them), a SOCKS4 C{(userId,)} tuple, or L{None}.
    @param destination: the request's destination.
    @return: a hashable key, or L{None} when nothing isolates the request.
    """
    auth = credentials if config.isolateSocksAuth else None
    parts: list[tuple[str, Any]] = []
    if config.isolateClientAddr:
        parts.append(("client", getattr(client, "host", None) or str(client)))
    if config.isolateDestAddr:
        host = destination.host
        parts.append(("dest", host.lower() if isinstance(host, str) else str(host)))
    if config.isolateDestPort:
        parts.append(("port", destination.port))
    if not parts:
        return auth
    return (("auth", auth), *parts)


def upstreamCredentials(
    isolationKey: Any, secret: bytes | None = None
) -> tuple[bytes, bytes]:
    """
    SOCKS credentials for an upstream proxy that stand for C{isolationKey}.

    The same key always gives the same credentials (for one C{secret});
    different keys give different ones, so that an upstream Tor (with its
    default C{IsolateSOCKSAuth}) keeps their streams on separate circuits.
    The client's own credentials are not revealed: both values are derived
    with HMAC-SHA256 from the key's C{repr}.

    @param isolationKey: a key from L{isolationKeyFor} (tuples of bytes,
        strings, ints and L{None}).
    @param secret: the HMAC key; by default a random secret of the process.
    @return: C{(username, password)}, 32 and 32 ASCII bytes.
    """
    if secret is None:
        secret = _PROCESS_SECRET
    digest = hmac.new(
        secret, repr(isolationKey).encode("utf-8", "backslashreplace"), hashlib.sha256
    ).hexdigest()
    return digest[:32].encode("ascii"), digest[32:].encode("ascii")


def isolationCredentials(isolationKey: Any) -> tuple[bytes, bytes] | None:
    """
    The username and password that carry C{isolationKey} to an upstream
    proxy (L{upstreamCredentials}), or L{None} for no key.
    """
    if isolationKey is None:
        return None
    return upstreamCredentials(isolationKey)
