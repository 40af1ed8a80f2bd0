r"""
Chaining: reaching destinations through another proxy (SOCKS, HTTP
CONNECT), with routing rules, failover and back-off.

  - L{ChainUpstream}: every destination through one proxy, named by a
    socksd client endpoint description without host or port
    (C{socks5:proxy=tcp\:127.0.0.1\:9050}, C{socks4a:proxy=...}; see
    L{socksd.client.parser}).  For SOCKS5 without explicit C{user=} /
    C{password=}, the request's isolation key travels upstream as a
    username/password pair (distinct keys, distinct pairs; Tor isolates
    streams by them), and the client's proposal 229 pairs travel as
    C{pair.KEY=VALUE}s.
  - L{HTTPConnectUpstream}: every destination through an HTTP proxy's
    CONNECT (C{http://} and C{https://} URLs);
  - L{LocallyResolvingUpstream}: names resolved here, addresses sent to
    the proxy (C{socks4://} and C{socks5://} URLs);
  - L{FailoverUpstream}: several upstreams (or one) in order; when one
    cannot be used (its proxy is unreachable, times out, closes or breaks
    the handshake, refuses the credentials), the next is tried and the
    failure logged.  A proxy that I{answers} with a failure reply (the
    destination refused, unreachable, not allowed ...) is final.  A proxy
    that fails is marked down (its L{UpstreamHealth}) and skipped for an
    interval that grows from L{BACKOFF_FIRST} to L{BACKOFF_MAX} seconds;
    a proxy's own failure reaches the client as L{UpstreamUnavailable}.
  - L{RoutingUpstream}: rules that pick an upstream per destination, first
    match wins (as Dante's C{route} blocks and proxychains do).

L{socksd.upstream.spec.upstreamFromOptions} builds the factory
C{--upstream} (repeatable, or a comma list) and C{--route MATCH=UPSTREAM}
describe.

Route matches (L{parseMatch}):

  - C{*}: every destination;
  - C{.example.com}: the name C{example.com} and every name under it
    (C{.onion}: every onion service);
  - C{example.com}: that name only;
  - C{10.0.0.0/8}, C{2001:db8::/32}, C{192.0.2.7}: address literals in
    the network.  Names are never resolved to match a rule (that would
    leak them to the local resolver); a name matches only name rules.
  - any of the above followed by C{:PORT} (IPv6 in brackets:
    C{[2001:db8::/32]:443}) matches that port only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import Any, Callable, Sequence

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.endpoints import _parse, clientFromString
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socksd.address import Destination
from socksd.client import DEFAULT_PROXY, SOCKS5ClientEndpoint
from socksd.client.http import HTTPConnectClientEndpoint
from socksd.client.parser import (
    SOCKS4AEndpointParser,
    SOCKS5EndpointParser,
    SOCKS6EndpointParser,
)
from socksd.errors import NotAllowed, ResolveFailed, SocksError, UpstreamUnavailable
from socksd.interfaces import ConnectContext, IUpstreamFactory
from socksd.isolation import isolationCredentials
from socksd.upstream.direct import FailingEndpoint, NamedEndpoint, upstreamName

__all__ = [
    "ChainUpstream",
    "FailoverUpstream",
    "RoutingUpstream",
    "Route",
    "parseMatch",
    "isProxyFailure",
    "CHAIN_KINDS",
    "UpstreamHealth",
    "upstreamHealths",
    "HTTPConnectUpstream",
    "LocallyResolvingUpstream",
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
]

log = Logger()

#: The description prefixes that name a chaining upstream, and their parsers
#: (called directly, so that chaining works without plugin discovery).
CHAIN_KINDS = {
    "socks5": SOCKS5EndpointParser,
    "socks4a": SOCKS4AEndpointParser,
    "socks6": SOCKS6EndpointParser,
}

#: The back-off of an upstream that failed: first interval, and the longest,
#: in seconds (doubling in between).
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0

_TRUE = {"yes", "true", "on", "1"}


def isProxyFailure(failure: Failure) -> bool:
    """
    Tell whether a failed attempt through a proxy means the proxy itself
    could not be used, so that the next one may be tried.

    A proxy's failure reply (a L{SocksError} with a C{replyCode}) and a
    cancellation are final; anything else (the proxy endpoint's connection
    errors and timeouts, L{socksd.client.ProxyDisconnected},
    L{socksd.client.ProxyProtocolError}, a refused authentication) is the
    proxy's.
    """
    if failure.check(CancelledError):
        return False
    error = failure.value
    if isinstance(error, SocksError) and error.replyCode is not None:
        return False
    return True


@implementer(IUpstreamFactory)
class ChainUpstream:
    """
    Reach every destination through one SOCKS proxy; see the module
    docstring.

    @ivar description: the client endpoint description, without destination.
    """

    def __init__(
        self,
        reactor: Any,
        description: str,
        addressFilter: Callable[[IPv4Address | IPv6Address], bool] | None = None,
        forwardIsolation: bool = True,
        connectTimeout: float | None = None,
        name: str | None = None,
    ) -> None:
        """
        @param reactor: the reactor the proxy connections are made with.
        @param description: C{socks5:...}, C{socks4a:...} or C{socks6:...},
            naming the proxy (C{proxy=}) and options but no host or port.
        @param addressFilter: address literals it refuses fail with
            L{NotAllowed} (names are the proxy's to resolve).
        @param forwardIsolation: send the isolation key and proposal 229
            pairs upstream (SOCKS5 without explicit credentials).
        @param connectTimeout: seconds a connection through the proxy (its
            handshake included) may take, or L{None}.
        @param name: how logs name it (default: the kind and the proxy).
        @raise ValueError: a description that is not a socksd client
            endpoint, or that names a destination or a bad parameter.
        """
        args, kwargs = _parse(description)
        kind = args[0].strip().lower() if args else ""
        if kind not in CHAIN_KINDS:
            raise ValueError(
                f"{description!r} is not a chaining upstream (expected a URL such "
                "as socks5h://HOST:PORT, or socks5:, socks4a: or socks6: with proxy=)"
            )
        if any(args[1:]) or "host" in kwargs or "port" in kwargs:
            raise ValueError(
                f"{description!r}: a chaining upstream names no destination (no HOST:PORT)"
            )
        self._reactor = reactor
        self.description = description
        self.addressFilter = addressFilter
        self._parser = CHAIN_KINDS[kind]()
        self._kwargs = kwargs
        # Check every parameter now, with a placeholder destination.
        self._endpoint(Destination("example.com", 1))
        explicit = {"user", "password", "tls", "tlsHostname", "trustRoots"} & set(
            kwargs
        )
        explicit |= {k for k in kwargs if k.startswith("pair.")}
        self._isolating = forwardIsolation and kind == "socks5" and not explicit
        self._proxy = kwargs.get("proxy", DEFAULT_PROXY)
        #: How the connections' log names this upstream.
        self.name = name or f"{kind} {self._proxy}"
        self.connectTimeout = connectTimeout
        #: Whether it works: failures mark it down, for a growing interval.
        self.health = UpstreamHealth(self.name, reactor)
        self._extendedErrors = (
            kwargs.get("extendedErrors", "no").strip().lower() in _TRUE
        )

    def __repr__(self) -> str:
        return f"<ChainUpstream {self.description}>"

    def _endpoint(self, destination: Destination) -> IStreamClientEndpoint:
        """The endpoint of the description, for C{destination}."""
        return self._parser.parseStreamClient(
            self._reactor,
            host=destination.hostText(),
            port=str(destination.port),
            **self._kwargs,
        )

    def endpointFor(
        self, destination: Destination, context: ConnectContext | None = None
    ) -> IStreamClientEndpoint:
        """See L{IUpstreamFactory.endpointFor}."""
        host = destination.host
        if (
            isinstance(host, (IPv4Address, IPv6Address))
            and self.addressFilter is not None
            and not self.addressFilter(host)
        ):
            return FailingEndpoint(NotAllowed(f"connections to {host} are not allowed"))
        return _bounded(self._reactor, self._isolated(destination, context), self.connectTimeout)

    def _isolated(
        self, destination: Destination, context: ConnectContext | None
    ) -> IStreamClientEndpoint:
        """The endpoint, with the isolation key forwarded where it goes."""
        host = destination.host
        if not self._isolating or context is None:
            return self._endpoint(destination)
        credentials = isolationCredentials(context.isolationKey)
        pairs = list(context.pairs.items()) if context.pairs else None
        if credentials is None and pairs is None:
            return self._endpoint(destination)
        username, password = credentials if credentials is not None else (None, None)
        return SOCKS5ClientEndpoint(
            clientFromString(self._reactor, self._proxy),
            host,
            destination.port,
            username=username,
            password=password,
            pairs=pairs,
            extendedErrors=self._extendedErrors,
        )


class UpstreamHealth:
    """
    Whether an upstream proxy works, as its connections tell: a failure of
    the proxy itself (L{isProxyFailure}: refused, timed out, a broken
    handshake) marks it down for an interval that starts at
    L{BACKOFF_FIRST} seconds and doubles with each failure in a row, up to
    L{BACKOFF_MAX}; while down, L{FailoverUpstream} skips it.  After the
    interval, the next connection tries it (one at a time); a connection it
    serves marks it up.  Each change of state is logged once.

    @ivar name: the upstream's name, for logs and metrics.
    @ivar up: it is up (or was never tried).
    @ivar failures: the failures in a row.
    @ivar failuresTotal: every failure so far (a metric).
    @ivar downUntil: when it may be tried again (the clock's seconds).
    """

    def __init__(
        self,
        name: str,
        clock: Any,
        first: float = BACKOFF_FIRST,
        longest: float = BACKOFF_MAX,
    ) -> None:
        self.name = name
        self._clock = clock
        self._first = first
        self._longest = longest
        self.up = True
        self.failures = 0
        self.failuresTotal = 0
        self.downUntil = 0.0
        self._probing = False

    def __repr__(self) -> str:
        state = "up" if self.up else f"down until {self.downUntil}"
        return f"<UpstreamHealth {self.name} {state}>"

    def available(self) -> bool:
        """May a connection use it now?  (After the interval: one probe.)"""
        if self.up:
            return True
        if self._probing or self._clock.seconds() < self.downUntil:
            return False
        self._probing = True
        return True

    def retryIn(self) -> float:
        """Seconds until it may be tried again (0 when up)."""
        return 0.0 if self.up else max(0.0, self.downUntil - self._clock.seconds())

    def succeeded(self) -> None:
        """It served a connection."""
        self._probing = False
        self.failures = 0
        if not self.up:
            self.up = True
            log.info("upstream {upstream} is up again", upstream=self.name)

    def failed(self, reason: str) -> None:
        """It could not serve a connection, for C{reason}."""
        self._probing = False
        self.failures += 1
        self.failuresTotal += 1
        interval = min(self._first * 2 ** (self.failures - 1), self._longest)
        self.downUntil = self._clock.seconds() + interval
        if self.up:
            self.up = False
            log.warn(
                "upstream {upstream} is down ({error}); skipping it, and retrying "
                "it after {interval:g} s, then at growing intervals up to "
                "{longest:g} s",
                upstream=self.name,
                error=reason,
                interval=interval,
                longest=self._longest,
            )

    def released(self) -> None:
        """A probe ended without an answer (cancelled): let another try."""
        self._probing = False


def upstreamHealths(upstream: Any) -> list[UpstreamHealth]:
    """
    The L{UpstreamHealth} of every proxy C{upstream} may use (through
    failover lists, routes and local resolution), each once.
    """
    found: dict[int, UpstreamHealth] = {}
    seen: set[int] = set()
    pending = [upstream]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        health = getattr(current, "health", None)
        if isinstance(health, UpstreamHealth):
            found.setdefault(id(health), health)
        pending.extend(getattr(current, "upstreams", ()))
        pending.extend(route.upstream for route in getattr(current, "routes", ()))
        for name in ("default", "inner"):
            if getattr(current, name, None) is not None:
                pending.append(getattr(current, name))
    return list(found.values())


@implementer(IStreamClientEndpoint)
class _BoundedEndpoint:
    """An endpoint whose connection attempts give up after C{timeout} s."""

    def __init__(self, reactor: Any, endpoint: IStreamClientEndpoint, timeout: float) -> None:
        self._reactor = reactor
        self._endpoint = endpoint
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"<{self._endpoint!r} within {self._timeout:g}s>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        return maybeDeferred(self._endpoint.connect, protocolFactory).addTimeout(
            self._timeout, self._reactor
        )


def _bounded(
    reactor: Any, endpoint: IStreamClientEndpoint, timeout: float | None
) -> IStreamClientEndpoint:
    """C{endpoint}, giving up after C{timeout} seconds (when not L{None})."""
    if timeout is None:
        return endpoint
    return _BoundedEndpoint(reactor, endpoint, timeout)


def _unavailable(upstream: Any, failure: Failure) -> Failure:
    """A proxy's own failure, as the L{UpstreamUnavailable} it means."""
    from twisted.internet.defer import TimeoutError as DeferredTimeout

    name = getattr(upstream, "name", None) or repr(upstream)
    if failure.check(DeferredTimeout):
        why = "it did not answer in time"
    else:
        why = failure.getErrorMessage()
    error = UpstreamUnavailable(f"upstream {name} unavailable: {why}")
    error.__cause__ = failure.value
    return Failure(error)


@implementer(IStreamClientEndpoint)
class _FailoverEndpoint:
    """
    Try endpoints in order while each fails as L{isProxyFailure} says,
    telling each upstream's L{UpstreamHealth} how it went.
    """

    def __init__(
        self,
        endpoints: Sequence[tuple[Any, IStreamClientEndpoint]],
        destination: Destination,
    ) -> None:
        self._endpoints = list(endpoints)
        self._destination = destination
        #: How the connection's log names the upstream that served it,
        #: once one did.
        self.upstreamName: str | None = None

    def __repr__(self) -> str:
        return f"<FailoverEndpoint {[e for _, e in self._endpoints]!r}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        """Connect with the first endpoint that can; cancelling stops all."""
        current: list[Deferred | None] = [None]
        cancelled = [False]
        trying: list[Any] = [None]

        def cancel(result: Deferred) -> None:
            cancelled[0] = True
            attempt = current[0]
            if attempt is not None:
                attempt.cancel()

        result: Deferred = Deferred(cancel)

        def attempt(index: int) -> None:
            upstream, endpoint = self._endpoints[index]
            trying[0] = upstream
            try:
                d = endpoint.connect(protocolFactory)
            except Exception:
                d = Deferred()
                d.errback()
            current[0] = d
            d.addCallbacks(
                succeeded,
                failed,
                callbackArgs=(upstream, endpoint),
                errbackArgs=(index, upstream),
            )

        def succeeded(protocol: Any, upstream: Any, endpoint: Any) -> None:
            current[0] = None
            health = getattr(upstream, "health", None)
            if health is not None:
                health.succeeded()
            if not result.called:
                self.upstreamName = upstreamName(upstream, endpoint)
                result.callback(protocol)

        def failed(failure: Failure, index: int, upstream: Any) -> None:
            current[0] = None
            health = getattr(upstream, "health", None)
            proxyFailure = not cancelled[0] and isProxyFailure(failure)
            if health is not None:
                if proxyFailure:
                    health.failed(failure.getErrorMessage())
                elif cancelled[0] or failure.check(CancelledError):
                    health.released()
                else:
                    # The proxy answered (the destination's failure): it works.
                    health.succeeded()
            if result.called:
                return
            last = index + 1 >= len(self._endpoints)
            if cancelled[0] or not proxyFailure:
                result.errback(failure)
                return
            if last:
                if health is not None:
                    failure = _unavailable(upstream, failure)
                result.errback(failure)
                return
            log.warn(
                "upstream {upstream} failed for {destination}: {error}; trying the next",
                upstream=getattr(upstream, "name", None) or repr(upstream),
                destination=str(self._destination),
                error=failure.getErrorMessage(),
            )
            attempt(index + 1)

        attempt(0)
        return result


@implementer(IUpstreamFactory)
class FailoverUpstream:
    """
    Several upstreams (or one), tried in order for each connection: the next
    one when the previous one's proxy could not be used (L{isProxyFailure}),
    with a warning logged.  A failure reply from a proxy, and the last
    upstream's failure, go to the client; a proxy's own failure as
    L{UpstreamUnavailable} (a general failure).

    Proxies that fail are marked down and skipped for a growing interval
    (their L{UpstreamHealth}); with every one down, a connection fails at
    once with L{UpstreamUnavailable}.  A L{socksd.upstream.DirectUpstream}
    is never marked down (its failures are the destinations').
    """

    def __init__(self, upstreams: Sequence[IUpstreamFactory]) -> None:
        """
        @param upstreams: at least one upstream factory, in order.
        @raise ValueError: no upstream.
        """
        if not upstreams:
            raise ValueError("failover needs at least one upstream")
        self.upstreams = tuple(upstreams)

    def __repr__(self) -> str:
        return f"<FailoverUpstream {list(self.upstreams)!r}>"

    @property
    def name(self) -> str | None:
        """The name of a lone upstream (for logs)."""
        if len(self.upstreams) == 1:
            return getattr(self.upstreams[0], "name", None)
        return None

    def endpointFor(
        self, destination: Destination, context: ConnectContext | None = None
    ) -> IStreamClientEndpoint:
        """See L{IUpstreamFactory.endpointFor}."""
        usable = []
        for upstream in self.upstreams:
            health = getattr(upstream, "health", None)
            if health is None or health.available():
                usable.append(upstream)
        if not usable:
            waits = ", ".join(
                f"{u.health.name} retried in {u.health.retryIn():.0f} s"
                for u in self.upstreams
            )
            return FailingEndpoint(
                UpstreamUnavailable(f"every upstream is down ({waits})")
            )
        if len(usable) == 1 and getattr(usable[0], "health", None) is None:
            return usable[0].endpointFor(destination, context)
        return _FailoverEndpoint(
            [(u, u.endpointFor(destination, context)) for u in usable],
            destination,
        )


@implementer(IUpstreamFactory)
class HTTPConnectUpstream:
    """
    Reach every destination through an HTTP proxy's CONNECT
    (L{socksd.client.http}): C{http://} and C{https://} upstream URLs.
    """

    def __init__(
        self,
        reactor: Any,
        proxyEndpoint: Callable[[], IStreamClientEndpoint],
        name: str,
        username: str | None = None,
        password: str | None = None,
        addressFilter: Callable[[IPv4Address | IPv6Address], bool] | None = None,
        connectTimeout: float | None = None,
    ) -> None:
        """
        @param proxyEndpoint: makes the endpoint that reaches the proxy.
        @param name: how logs name it.
        """
        self._reactor = reactor
        self._proxyEndpoint = proxyEndpoint
        self.name = name
        self._username = username
        self._password = password
        self.addressFilter = addressFilter
        self.connectTimeout = connectTimeout
        self.health = UpstreamHealth(name, reactor)

    def __repr__(self) -> str:
        return f"<HTTPConnectUpstream {self.name}>"

    def endpointFor(
        self, destination: Destination, context: ConnectContext | None = None
    ) -> IStreamClientEndpoint:
        """See L{IUpstreamFactory.endpointFor}."""
        host = destination.host
        if (
            isinstance(host, (IPv4Address, IPv6Address))
            and self.addressFilter is not None
            and not self.addressFilter(host)
        ):
            return FailingEndpoint(NotAllowed(f"connections to {host} are not allowed"))
        endpoint = HTTPConnectClientEndpoint(
            self._proxyEndpoint(),
            host,
            destination.port,
            username=self._username,
            password=self._password,
        )
        return _bounded(self._reactor, endpoint, self.connectTimeout)


@implementer(IStreamClientEndpoint)
class _ResolvingEndpoint:
    """Resolve the destination's name here, then connect through the proxy."""

    def __init__(
        self, upstream: LocallyResolvingUpstream, destination: Destination, context: Any
    ) -> None:
        self._upstream = upstream
        self._destination = destination
        self._context = context

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        upstream = self._upstream
        current: list[Deferred | None] = [None]

        def cancel(result: Deferred) -> None:
            if current[0] is not None:
                current[0].cancel()

        result: Deferred = Deferred(cancel)

        def resolved(addresses: list[Any]) -> Deferred:
            wanted = [a for a in addresses if a.version in upstream.versions]
            allowed = [
                a
                for a in wanted
                if upstream.addressFilter is None or upstream.addressFilter(a)
            ]
            if not allowed:
                if wanted:
                    raise NotAllowed(
                        f"every address of {self._destination.hostText()!r} is refused"
                    )
                raise ResolveFailed(
                    f"{self._destination.hostText()!r} has no "
                    + ("IPv4 address (SOCKS4 needs one)" if upstream.versions == {4} else "address")
                )
            literal = Destination(allowed[0], self._destination.port)
            d = upstream.inner.endpointFor(literal, self._context).connect(protocolFactory)
            current[0] = d
            return d

        lookup = maybeDeferred(upstream.resolver.resolve, self._destination.hostText())
        current[0] = lookup
        lookup.addCallback(resolved)
        lookup.addCallbacks(result.callback, result.errback)
        return result


@implementer(IUpstreamFactory)
class LocallyResolvingUpstream:
    """
    Resolve destination names here, with socksd's resolver, and send the
    proxy an address: C{socks4://} and C{socks5://} upstream URLs (as curl
    means them; C{socks4a://} and C{socks5h://} send names).  Addresses the
    policy refuses (C{addressFilter}) are skipped.

    @ivar inner: the upstream that connects to addresses.
    @ivar resolvesLocally: C{True}: the server checks the addresses a name
        resolves to against the rules, as for a direct upstream.
    """

    resolvesLocally = True

    def __init__(
        self,
        inner: Any,
        resolver: Any,
        versions: frozenset[int] = frozenset({4, 6}),
        addressFilter: Callable[[IPv4Address | IPv6Address], bool] | None = None,
    ) -> None:
        """
        @param versions: the IP versions the proxy can take (C{{4}} for
            SOCKS4).
        """
        self.inner = inner
        self.resolver = resolver
        self.versions = frozenset(versions)
        self.addressFilter = addressFilter
        self.name = getattr(inner, "name", None)
        self.health = getattr(inner, "health", None)

    def __repr__(self) -> str:
        return f"<LocallyResolvingUpstream {self.inner!r}>"

    def endpointFor(
        self, destination: Destination, context: ConnectContext | None = None
    ) -> IStreamClientEndpoint:
        """See L{IUpstreamFactory.endpointFor}."""
        if not destination.isName:
            return self.inner.endpointFor(destination, context)
        if self.resolver is None:
            return FailingEndpoint(ResolveFailed("no resolver to resolve names with"))
        return _ResolvingEndpoint(self, destination, context)


@dataclass(frozen=True, slots=True)
class Route:
    """
    One routing rule: destinations it matches go to its upstream.

    @ivar match: the rule's text (see the module docstring); checked here.
    @ivar upstream: the L{IUpstreamFactory} for matching destinations.
    """

    match: str
    upstream: Any
    _matcher: Callable[[Destination], bool] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_matcher", parseMatch(self.match))

    def matches(self, destination: Destination) -> bool:
        """Tell whether C{destination} goes to this rule's upstream."""
        return self._matcher(destination)


def parseMatch(text: str) -> Callable[[Destination], bool]:
    """
    Compile a route match (see the module docstring).

    @return: a predicate on destinations.
    @raise ValueError: a match that is none of the documented forms.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty route match")
    port: int | None = None
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if bracketed:
        text, portText = bracketed.group(1), bracketed.group(2)
        port = int(portText) if portText else None
    elif text.count(":") == 1:
        text, portText = text.split(":")
        if not portText.isdigit():
            raise ValueError(f"bad port {portText!r} in route match")
        port = int(portText)
    if port is not None and not 0 < port <= 0xFFFF:
        raise ValueError(f"port {port} out of range in route match")
    hostMatch = _hostMatcher(text)

    def matches(destination: Destination) -> bool:
        if port is not None and destination.port != port:
            return False
        return hostMatch(destination)

    return matches


def _hostMatcher(text: str) -> Callable[[Destination], bool]:
    if text == "*":
        return lambda destination: True
    if any(c in text for c in "/:") or re.fullmatch(r"[0-9.]+", text):
        try:
            network = ip_network(text, strict=False)
        except ValueError as error:
            raise ValueError(f"bad network {text!r} in route match: {error}") from None
        return lambda destination: (
            not destination.isName and destination.host in network  # type: ignore[operator]
        )
    name = text.lower().rstrip(".")
    if name.startswith("."):
        suffix = name
        bare = name[1:]
        if not bare:
            raise ValueError("route match '.' names no domain")

        def underDomain(destination: Destination) -> bool:
            if not destination.isName:
                return False
            host = destination.hostText().lower().rstrip(".")
            return host == bare or host.endswith(suffix)

        return underDomain

    def sameName(destination: Destination) -> bool:
        return destination.isName and destination.hostText().lower().rstrip(".") == name

    return sameName


@implementer(IUpstreamFactory)
class RoutingUpstream:
    """
    Pick an upstream per destination: the first L{Route} that matches, else
    the default.
    """

    def __init__(self, routes: Sequence[Route], default: IUpstreamFactory) -> None:
        """
        @param routes: the rules, first match wins.
        @param default: the upstream of destinations no rule matches.
        """
        self.routes = tuple(routes)
        self.default = default

    def __repr__(self) -> str:
        rules = ", ".join(f"{r.match}={r.upstream!r}" for r in self.routes)
        return f"<RoutingUpstream [{rules}] default={self.default!r}>"

    def upstreamFor(self, destination: Destination) -> IUpstreamFactory:
        """The upstream C{destination} goes to."""
        for route in self.routes:
            if route.matches(destination):
                return route.upstream
        return self.default

    def endpointFor(
        self, destination: Destination, context: ConnectContext | None = None
    ) -> IStreamClientEndpoint:
        """
        See L{IUpstreamFactory.endpointFor}; the endpoint carries the name
        of the route's upstream (C{upstreamName}), for the log.
        """
        upstream = self.upstreamFor(destination)
        endpoint = upstream.endpointFor(destination, context)
        if getattr(endpoint, "upstreamName", None) is None:
            name = getattr(upstream, "name", None)
            if name is not None:
                return NamedEndpoint(endpoint, name)
        return endpoint
