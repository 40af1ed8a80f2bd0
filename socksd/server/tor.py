"""
Tor's SOCKS extensions, on the server side.

  - Name lookups: Tor's RESOLVE (0xF0, over SOCKS4, SOCKS4A and SOCKS5) and
    RESOLVE_PTR (0xF1, over SOCKS5), answered with the factory's resolver,
    the same one that serves CONNECT.  The reply carries the address (or,
    for RESOLVE_PTR, the name as a domain-type address); then the
    connection is closed.  A lookup that fails, or takes longer than the
    configuration's C{connectTimeout}, gets a failure reply (SOCKS5 04,
    SOCKS4 91).
  - Stream isolation: L{isolationKeyFor} builds a request's
    L{ConnectContext.isolationKey} the way Tor's C{IsolateSOCKSAuth},
    C{IsolateClientAddr}, C{IsolateDestAddr} and C{IsolateDestPort} do, and
    L{upstreamCredentials} turns a key into SOCKS credentials for a chained
    upstream proxy (an upstream Tor then keeps streams of different keys on
    different circuits).
  - Onion names: a request for a C{.onion} name whose syntax or checksum is
    invalid is refused before any upstream is asked (Tor's extended error
    F6 with C{--extended-errors}).
  - Proposal 229: L{socks5Methods} (method selection, 0x97 first) and
    L{extendedCredentials} (USERNAME, PASSWD and the other pairs of an
    extended authentication request).

L{TorRequestHandler} is the base of the SOCKS4 and SOCKS5 handlers: it adds
the RESOLVE and RESOLVE_PTR methods, the onion check and the isolation key
to L{RequestHandler}.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Mapping

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination
from socksd.errors import (
    MalformedMessage,
    OnionInvalidAddress,
    ResolveFailed,
    SocksError,
)
from socksd.interfaces import ConnectContext
from socksd.onion import checkOnionName, isOnionName
from socksd.replies import ReplyProfile, successFor
from socksd.server.dispatch import RequestHandler
from socksd.wire import socks5

__all__ = [
    "TorRequestHandler",
    "isolationKeyFor",
    "upstreamCredentials",
    "socks5Methods",
    "extendedCredentials",
    "KEY_USERNAME",
    "KEY_PASSWD",
]

log = Logger()

#: Proposal 229's key for the username.
KEY_USERNAME = b"USERNAME"
#: Proposal 229's key for the password.
KEY_PASSWD = b"PASSWD"

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

    @param config: a L{socksd.server.ServerConfig}.
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


def socks5Methods(hasAuthenticator: bool, preferNoAuth: bool) -> tuple[int, ...]:
    """
    The SOCKS5 methods a server takes, best first.

    With an authenticator: proposal 229's 0x97 (USERNAME and PASSWD are
    checked), then 02.  Without one, every method is for isolation only:
    0x97, then 02 (as Tor, so that the client's credentials can isolate its
    streams), then 00; with C{preferNoAuth} (Tor's C{PreferSOCKSNoAuth}) 00
    comes first.
    """
    if hasAuthenticator:
        return (socks5.METHOD_TOR_EXTENDED, socks5.METHOD_USERNAME_PASSWORD)
    if preferNoAuth:
        return (
            socks5.METHOD_NO_AUTH,
            socks5.METHOD_TOR_EXTENDED,
            socks5.METHOD_USERNAME_PASSWORD,
        )
    return (
        socks5.METHOD_TOR_EXTENDED,
        socks5.METHOD_USERNAME_PASSWORD,
        socks5.METHOD_NO_AUTH,
    )


def extendedCredentials(
    request: socks5.ExtendedAuthRequest,
) -> tuple[tuple[bytes, bytes] | None, dict[bytes, bytes]]:
    """
    Split a proposal 229 request into credentials and the other pairs.

    @return: C{(username, password)} (a missing one is empty), or L{None}
        when the request has neither key; and the other pairs, in order.
    @raise MalformedMessage: a key appears twice.
    """
    seen: dict[bytes, bytes] = {}
    for key, value in request.pairs:
        if key in seen:
            raise MalformedMessage(
                f"key {key.decode('ascii', 'backslashreplace')!r} appears twice"
            )
        seen[key] = value
    if KEY_USERNAME in seen or KEY_PASSWD in seen:
        credentials: tuple[bytes, bytes] | None = (
            seen.pop(KEY_USERNAME, b""),
            seen.pop(KEY_PASSWD, b""),
        )
    else:
        credentials = None
    return credentials, seen


def _firstAddress(
    addresses: list[IPv4Address | IPv6Address], ipv4Only: bool
) -> Destination:
    """The address a RESOLVE reply carries: the first (IPv4 for SOCKS4)."""
    for address in addresses:
        if not ipv4Only or isinstance(address, IPv4Address):
            return Destination(address, 0)
    raise ResolveFailed("the name has no IPv4 address, which SOCKS4 needs")


class TorRequestHandler(RequestHandler):
    """
    L{RequestHandler} with Tor's extensions; see the module docstring.

    The methods L{resolve} and L{resolvePtr} serve Tor's RESOLVE and
    RESOLVE_PTR when a subclass's C{commands} table names them.

    @ivar torPairs: proposal 229 pairs other than USERNAME and PASSWD, for
        L{ConnectContext.pairs} and the isolation key.
    """

    __slots__ = ("torPairs",)

    def __init__(self, connection: Any, profile: ReplyProfile) -> None:
        super().__init__(connection, profile)
        self.torPairs: Mapping[bytes, bytes] = {}

    def dispatchRequest(
        self,
        command: int,
        destination: Destination,
        credentials: tuple[bytes, bytes] | None = None,
        isolationKey: Any = None,
        pairs: Any = None,
    ) -> None:
        """
        Refuse an invalid onion name (before any upstream is asked), build
        the isolation key with L{isolationKeyFor}, then serve the request
        as L{RequestHandler.dispatchRequest} does.

        @param isolationKey: the client's isolation credentials (see
            L{isolationKeyFor}).
        """
        host = destination.host
        if command in self.commands and isinstance(host, str) and isOnionName(host):
            try:
                checkOnionName(host)
            except OnionInvalidAddress as error:
                self.noteRequest(command, destination)
                self.refuse(error, f"invalid onion address: {error}")
                return
        if pairs is None:
            pairs = dict(self.torPairs)
        if pairs and isolationKey is not None:
            isolationKey = (*isolationKey, tuple(sorted(pairs.items())))
        elif pairs:
            isolationKey = (b"", b"", tuple(sorted(pairs.items())))
        connection = self.connection
        key = isolationKeyFor(
            connection.factory.config,
            connection.record.client,
            isolationKey,
            destination,
        )
        super().dispatchRequest(
            command, destination, credentials, isolationKey=key, pairs=pairs
        )

    # RESOLVE and RESOLVE_PTR

    def resolve(self, destination: Destination, context: ConnectContext) -> None:
        """
        Tor's RESOLVE: answer with an address of the name (an address
        literal is its own answer), then close.  Onion names are never
        given to the resolver.
        """
        if not self._allowedLookup(destination, context):
            return
        host = destination.host
        ipv4Only = self.version == 4
        if not isinstance(host, str):
            if ipv4Only and not isinstance(host, IPv4Address):
                self.refuse(
                    ResolveFailed("SOCKS4 cannot carry an IPv6 address"),
                    "resolve failed",
                )
                return
            self._answer(Destination(host, 0), f"resolved {host}")
            return
        if isOnionName(host):
            self.refuse(
                ResolveFailed(f"{host} is an onion service name, which has no address"),
                "refused to resolve an onion name",
            )
            return
        lookup = maybeDeferred(self.connection.factory.resolver.resolve, host)
        lookup.addCallback(_firstAddress, ipv4Only)
        self._lookup(lookup, f"resolved {host}")

    def resolvePtr(self, destination: Destination, context: ConnectContext) -> None:
        """
        Tor's RESOLVE_PTR: answer with the name of the address (as a
        domain-type address), then close.
        """
        if not self._allowedLookup(destination, context):
            return
        host = destination.host
        if isinstance(host, str):
            try:
                host = ip_address(host)
            except ValueError:
                self.refuse(
                    ResolveFailed(f"RESOLVE_PTR needs an address, not {host!r}"),
                    "resolve_ptr of a name",
                )
                return
        lookup = maybeDeferred(self.connection.factory.resolver.reverse, host)
        lookup.addCallback(lambda name: Destination(name.rstrip(".") or name, 0))
        self._lookup(lookup, f"reverse-resolved {host}")

    def _allowedLookup(self, destination: Destination, context: ConnectContext) -> bool:
        """Ask the policy about a lookup; refuse and return C{False} if it says no."""
        return self.allowedBy(destination, context, "lookup") is not None

    def _lookup(self, lookup: Any, reason: str) -> None:
        """Answer with what C{lookup} gives, within C{connectTimeout}."""
        self._connecting = lookup
        factory = self.connection.factory
        timeout = factory.config.connectTimeout
        if timeout is not None and not lookup.called:
            self._connectTimer = factory.reactor.callLater(
                timeout, self._connectTimedOut
            )
        lookup.addCallbacks(self._answer, self._lookupFailed, callbackArgs=(reason,))
        lookup.addErrback(self._connectBug)

    def _answer(self, bound: Destination, reason: str) -> None:
        """Send the success reply of a lookup, then close."""
        self._stopConnectTimer()
        connection = self.connection
        if not connection.connected or connection.closing:
            return
        code = successFor(self.profile)
        reply = self.buildReply(code, bound)
        connection.record.reply = code
        self._early = None
        connection.finish(reason, reply)

    def _lookupFailed(self, failure: Failure) -> None:
        """Send the failure reply of a lookup, then close."""
        self._stopConnectTimer()
        connection = self.connection
        if not connection.connected or connection.closing:
            return
        if self._timedOut:
            error: Any = ResolveFailed(
                "the lookup took longer than the connect timeout"
            )
        elif failure.check(SocksError) and not failure.check(MalformedMessage):
            error = failure
        else:
            error = ResolveFailed(failure.getErrorMessage())
        self.refuse(error, f"lookup failed: {failure.getErrorMessage()}")
