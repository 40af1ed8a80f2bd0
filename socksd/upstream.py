"""
Upstream factories: how socksd reaches a destination
(L{socksd.interfaces.IUpstreamFactory}).

L{DirectUpstream} connects straight to the destination: a plain TCP
endpoint for an address literal (L{DirectTCP4Endpoint},
L{DirectTCP6Endpoint}), and for a name Twisted's
C{HostnameEndpoint} (Happy Eyeballs included) resolving through socksd's
own resolver, never the reactor's.  L{upstreamFromSpec} builds a factory
from the C{--upstream} option's text.

The endpoints for address literals offer a fast path next to C{connect}:
C{connectFactory(factory)} is C{reactor.connectTCP} with a
C{ClientFactory}, with no Deferred and no wrapping factory or protocol, so
a server can connect many short tunnels cheaply (the server's CONNECT uses
it when an endpoint has it, and C{connect} otherwise).  Other upstreams
need not offer it.

Connect failures are Twisted's own (C{ConnectionRefusedError},
C{TimeoutError}, C{NoRouteError} ...) or socksd's typed errors
(L{NotAllowed}, L{ResolveFailed}, onion errors); L{socksd.replies.replyFor}
maps both.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any, Callable

from twisted.internet._resolver import ComplexResolverSimplifier
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import (
    IConnector,
    IHostnameResolver,
    IProtocolFactory,
    IReactorPluggableNameResolver,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from socksd.address import Destination
from socksd.errors import NotAllowed, OnionServiceError, ResolveFailed
from socksd.interfaces import ConnectContext, IResolver, IUpstreamFactory
from socksd.onion import checkOnionName, isOnionName
from socksd.resolve import NameResolverAdapter

__all__ = [
    "AddressFilter",
    "DirectUpstream",
    "DirectTCP4Endpoint",
    "DirectTCP6Endpoint",
    "FailingEndpoint",
    "ResolvingHostnameEndpoint",
    "upstreamFromSpec",
    "UPSTREAM_KINDS",
]

AddressFilter = Callable[[IPv4Address | IPv6Address], bool]


@implementer(IStreamClientEndpoint)
class FailingEndpoint:
    """An endpoint whose every C{connect} fails with one error."""

    def __init__(self, error: BaseException) -> None:
        """
        @param error: what C{connect} fails with.
        """
        self.error = error

    def __repr__(self) -> str:
        return f"<FailingEndpoint {self.error!r}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        """Fail at once with the error this endpoint was made with."""
        return fail(self.error)


class _ConnectFactoryMixin:
    """
    The fast path of the endpoints for address literals; see the module
    docstring.
    """

    _reactor: Any
    _host: str
    _port: int
    _timeout: float
    _bindAddress: Any

    def connectFactory(self, factory: Any) -> IConnector:
        """
        Connect to this endpoint's address with C{reactor.connectTCP}: the
        same connection C{connect} makes (same timeout and bind address),
        without its Deferred.

        @param factory: a C{twisted.internet.protocol.ClientFactory}: its
            C{buildProtocol} builds the protocol once connected, and its
            C{clientConnectionFailed} hears of a failure (which may be
            called before this method returns).
        @return: the connector (C{stopConnecting} gives up on the attempt).
        """
        return self._reactor.connectTCP(
            self._host,
            self._port,
            factory,
            timeout=self._timeout,
            bindAddress=self._bindAddress,
        )


class DirectTCP4Endpoint(_ConnectFactoryMixin, TCP4ClientEndpoint):
    """
    A C{TCP4ClientEndpoint} to an IPv4 literal, with the fast path
    C{connectFactory} (see the module docstring).
    """


class DirectTCP6Endpoint(_ConnectFactoryMixin, TCP6ClientEndpoint):
    """
    A C{TCP6ClientEndpoint} to an IPv6 literal, with the fast path
    C{connectFactory} (see the module docstring).
    """


class _NameResolverReactor:
    """
    A reactor that is another reactor, except for name resolution.

    It provides every interface the real reactor provides; its
    C{nameResolver} (and the older C{resolver}, and C{resolve}) are the ones
    given, so that whatever resolves through this reactor uses them.
    """

    def __init__(self, reactor: Any, nameResolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self.nameResolver = nameResolver
        self.resolver = ComplexResolverSimplifier(nameResolver)
        directlyProvides(self, providedBy(reactor), IReactorPluggableNameResolver)

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        """Replace this proxy's name resolver (the real reactor's stays)."""
        previous, self.nameResolver = self.nameResolver, resolver
        self.resolver = ComplexResolverSimplifier(resolver)
        return previous

    def resolve(self, name: str, timeout: Any = (1, 3, 11, 45)) -> Deferred[str]:
        """Resolve C{name} to one IPv4 address with this proxy's resolver."""
        if not name:
            return succeed("0.0.0.0")
        if isIPAddress(name) or isIPv6Address(name):
            return succeed(name)
        return self.resolver.getHostByName(name, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


@implementer(IHostnameResolver)
class _RecordingNameResolver:
    """Keep the resolutions a name resolver starts, to read their failures."""

    def __init__(self, nameResolver: IHostnameResolver) -> None:
        self._nameResolver = nameResolver
        self.resolutions: list[Any] = []

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        resolution = self._nameResolver.resolveHostName(
            resolutionReceiver, hostName, portNumber, addressTypes, transportSemantics
        )
        self.resolutions.append(resolution)
        return resolution


@implementer(IStreamClientEndpoint)
class ResolvingHostnameEndpoint:
    """
    Twisted's C{HostnameEndpoint}, resolving with an L{IResolver}.

    Every name goes to the given resolver through a L{NameResolverAdapter};
    the reactor's own resolver is never asked.  When the lookup gives no
    address, C{connect} fails with the resolver's reason
    (L{socksd.errors.ResolveFailed}, or L{socksd.errors.NotAllowed} when the
    address filter refused every address) rather than C{HostnameEndpoint}'s
    C{DNSLookupError}.  Cancelling C{connect} fails it with
    C{CancelledError}.
    """

    def __init__(
        self,
        reactor: Any,
        resolver: IResolver,
        host: str,
        port: int,
        timeout: float = 30.0,
        bindAddress: Any = None,
        addressFilter: AddressFilter | None = None,
        attemptDelay: float | None = None,
    ) -> None:
        """
        @param reactor: an C{IReactorTCP} and C{IReactorTime}.
        @param resolver: the resolver for C{host}.
        @param host: the name to connect to.
        @param port: the port to connect to.
        @param timeout: seconds each connection attempt may take.
        @param bindAddress: the local C{(host, port)} to connect from, or
            L{None}.
        @param addressFilter: addresses it refuses are not tried.
        @param attemptDelay: seconds between Happy Eyeballs attempts
            (C{HostnameEndpoint}'s default when L{None}).
        """
        self._reactor = reactor
        self._resolver = resolver
        self.host = host
        self.port = port
        self._timeout = timeout
        self._bindAddress = bindAddress
        self._addressFilter = addressFilter
        self._attemptDelay = attemptDelay

    def __repr__(self) -> str:
        return f"<ResolvingHostnameEndpoint {self.host}:{self.port} via {self._resolver!r}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        """Resolve the name with the resolver, then connect as Happy Eyeballs does."""
        recorder = _RecordingNameResolver(NameResolverAdapter(self._resolver, self._addressFilter))
        endpoint = HostnameEndpoint(
            _NameResolverReactor(self._reactor, recorder),
            self.host,
            self.port,
            timeout=self._timeout,
            bindAddress=self._bindAddress,
            attemptDelay=self._attemptDelay,
        )
        cancelled = False

        def cancel(result: Deferred) -> None:
            nonlocal cancelled
            cancelled = True
            for resolution in recorder.resolutions:
                resolution.cancel()
            attempt.cancel()

        def explain(reason: Failure) -> Failure:
            if cancelled:
                return Failure(
                    CancelledError(f"connecting to {self.host}:{self.port} was cancelled")
                )
            if reason.check(DNSLookupError):
                for resolution in recorder.resolutions:
                    known = getattr(resolution, "failure", None)
                    if known is not None:
                        return known
            if reason.check(ValueError):
                # HostnameEndpoint refuses names that are valid SOCKS5
                # domains but not host names (over 253 bytes, say): the
                # name has no address, so host unreachable, not a crash.
                return Failure(ResolveFailed(f"{self.host!r} is not a host name"))
            return reason

        result: Deferred = Deferred(cancel)
        attempt = endpoint.connect(protocolFactory)
        attempt.addErrback(explain).chainDeferred(result)
        return result


@implementer(IUpstreamFactory)
class DirectUpstream:
    """
    Connect straight to each destination.

    An address literal gets a L{DirectTCP4Endpoint} or L{DirectTCP6Endpoint}
    (Twisted's TCP endpoints with a fast path; after the address filter); a name gets a L{ResolvingHostnameEndpoint}
    on this factory's resolver.  Onion names are never resolved: a valid one
    fails with L{OnionServiceError} (a direct connection cannot reach onion
    services), an invalid one with L{socksd.errors.OnionInvalidAddress}.
    """

    def __init__(
        self,
        reactor: Any,
        resolver: IResolver,
        connectTimeout: float = 30.0,
        bindAddress: tuple[str, int] | None = None,
        addressFilter: AddressFilter | None = None,
    ) -> None:
        """
        @param reactor: an C{IReactorTCP} and C{IReactorTime}.
        @param resolver: the resolver for destinations given by name.
        @param connectTimeout: seconds each connection attempt may take.
        @param bindAddress: the local C{(host, port)} connections leave from
            when the connect context names none; L{None} for the system's
            choice.
        @param addressFilter: called with each address (literal or
            resolved); an address it refuses is not connected to, and a
            destination with no other address fails with L{NotAllowed}.
        """
        self._reactor = reactor
        self.resolver = resolver
        self.connectTimeout = connectTimeout
        self.bindAddress = bindAddress
        self.addressFilter = addressFilter

    def __repr__(self) -> str:
        return f"<DirectUpstream resolver={self.resolver!r}>"

    def endpointFor(
        self, destination: Destination, context: ConnectContext | None = None
    ) -> IStreamClientEndpoint:
        """See L{IUpstreamFactory.endpointFor}."""
        bindAddress = self.bindAddress
        if context is not None and context.bindAddress is not None:
            bindAddress = context.bindAddress
        host = destination.host
        if isinstance(host, (IPv4Address, IPv6Address)):
            if self.addressFilter is not None and not self.addressFilter(host):
                return FailingEndpoint(NotAllowed(f"connections to {host} are not allowed"))
            endpointClass = DirectTCP4Endpoint if host.version == 4 else DirectTCP6Endpoint
            return endpointClass(
                self._reactor, str(host), destination.port, self.connectTimeout, bindAddress
            )
        if isOnionName(host):
            try:
                checkOnionName(host)
            except OnionServiceError as error:
                return FailingEndpoint(error)
            return FailingEndpoint(
                OnionServiceError(f"{host} is an onion service; a direct upstream cannot reach it")
            )
        return ResolvingHostnameEndpoint(
            self._reactor,
            self.resolver,
            host,
            destination.port,
            timeout=self.connectTimeout,
            bindAddress=bindAddress,
            addressFilter=self.addressFilter,
        )


def _direct(reactor: Any, argument: str, resolver: IResolver, **kwargs: Any) -> IUpstreamFactory:
    """Build a L{DirectUpstream} for the C{direct} spec."""
    if argument:
        raise ValueError(f"upstream 'direct' takes no argument, not {argument!r}")
    return DirectUpstream(reactor, resolver, **kwargs)


#: The upstream kinds L{upstreamFromSpec} knows, by the spec's first field:
#: each builds a factory from C{(reactor, argument, resolver, **kwargs)},
#: where C{argument} is the spec's text after the first colon.
UPSTREAM_KINDS: dict[str, Callable[..., IUpstreamFactory]] = {
    "direct": _direct,
}


def _chain(kind: str) -> Callable[..., IUpstreamFactory]:
    """Build a L{socksd.chain.ChainUpstream} for a C{socks5:}/C{socks4a:} spec."""

    def build(reactor: Any, argument: str, resolver: IResolver, **kwargs: Any) -> Any:
        from socksd.chain import ChainUpstream

        return ChainUpstream(
            reactor, f"{kind}:{argument}", addressFilter=kwargs.get("addressFilter")
        )

    return build


UPSTREAM_KINDS["socks5"] = _chain("socks5")
UPSTREAM_KINDS["socks4a"] = _chain("socks4a")


def upstreamFromSpec(
    reactor: Any, spec: str, resolver: IResolver, **kwargs: Any
) -> IUpstreamFactory:
    """
    Build the upstream factory the C{--upstream} option names.

    @param reactor: the reactor connections are made with.
    @param spec: C{direct}, or another kind in L{UPSTREAM_KINDS} followed by
        a colon and its argument.
    @param resolver: the resolver for destinations given by name.
    @param kwargs: passed on to the factory (for C{direct}:
        C{connectTimeout}, C{bindAddress}, C{addressFilter}).
    @raise ValueError: the kind is unknown, or its argument is wrong.
    """
    kind, _, argument = spec.partition(":")
    builder = UPSTREAM_KINDS.get(kind.strip().lower())
    if builder is None:
        supported = ", ".join(sorted(UPSTREAM_KINDS))
        raise ValueError(f"unknown upstream {spec!r}: supported kinds are {supported}")
    return builder(reactor, argument, resolver, **kwargs)
