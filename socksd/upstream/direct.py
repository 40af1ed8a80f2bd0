"""
The direct upstream: how socksd reaches a destination itself
(L{socksd.interfaces.IUpstreamFactory}), and the endpoints every upstream
shares (L{FailingEndpoint}, L{NamedEndpoint}).

L{DirectUpstream} connects straight to the destination: a plain TCP
endpoint for an address literal (L{DirectTCP4Endpoint},
L{DirectTCP6Endpoint}), and for a name Twisted's
C{HostnameEndpoint} (Happy Eyeballs included) resolving through socksd's
own resolver, never the reactor's.
(L{socksd.upstream.spec.upstreamFromSpec} builds a factory from the
C{--upstream} option's text.)

The endpoints for address literals offer a fast path next to C{connect}:
C{connectFactory(factory)} connects a C{ClientFactory}'s protocol with no
Deferred and no wrapping factory or protocol, so a server can connect many
short tunnels cheaply (the server's CONNECT uses it when an endpoint has
it, and C{connect} otherwise).  On Twisted's epoll, poll and select
reactors it is a L{PlainConnector}: a non-blocking socket whose
C{connect()} the reactor watches, given the transport
C{reactor.adoptStreamConnection} would make once connected; on others,
C{reactor.connectTCP}.  Other upstreams need not offer it.

Connect failures are Twisted's own (C{ConnectionRefusedError},
C{TimeoutError}, C{NoRouteError} ...) or socksd's typed errors
(L{NotAllowed}, L{ResolveFailed}, onion errors); L{socksd.replies.replyFor}
maps both.
"""

from __future__ import annotations

import socket
from errno import EINPROGRESS, EWOULDBLOCK
from ipaddress import IPv4Address, IPv6Address
from os import strerror
from typing import Any, Callable

from twisted.internet._resolver import ComplexResolverSimplifier
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet import address, tcp
from twisted.internet.error import (
    ConnectBindError,
    DNSLookupError,
    NotConnectingError,
    TimeoutError as ConnectingTimeoutError,
    UserError,
    getConnectError,
)
from twisted.internet.interfaces import (
    IConnector,
    IHostnameResolver,
    IProtocolFactory,
    IReactorPluggableNameResolver,
    IStreamClientEndpoint,
    IWriteDescriptor,
)
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from socksd.address import Destination
from socksd.errors import NotAllowed, OnionServiceError, ResolveFailed
from socksd.interfaces import ConnectContext, IResolver, IUpstreamFactory
from socksd.onion import checkOnionName, isOnionName
from socksd.resolve import NameResolverAdapter

__all__ = [
    "NamedEndpoint",
    "upstreamName",
    "AddressFilter",
    "DirectUpstream",
    "DirectTCP4Endpoint",
    "DirectTCP6Endpoint",
    "FailingEndpoint",
    "PlainConnector",
    "readinessReactors",
    "ResolvingHostnameEndpoint",
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


_reactorKinds: tuple[type, ...] | None = None


@implementer(IStreamClientEndpoint)
class NamedEndpoint:
    """
    An endpoint with the name a connection's log gives its upstream
    (C{upstreamName}); C{connect} is the wrapped endpoint's.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, upstreamName: str) -> None:
        self.endpoint = endpoint
        self.upstreamName = upstreamName

    def __repr__(self) -> str:
        return f"<NamedEndpoint {self.upstreamName} {self.endpoint!r}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        """See C{IStreamClientEndpoint.connect}."""
        return self.endpoint.connect(protocolFactory)


def upstreamName(upstream: Any, endpoint: Any) -> str | None:
    """
    How a connection's log names the upstream that gave C{endpoint}: the
    endpoint's C{upstreamName} (socksd's direct endpoints, a failover that
    connected, a route), else the upstream factory's C{name}, else
    L{None}.
    """
    name = getattr(endpoint, "upstreamName", None)
    if name is None:
        name = getattr(upstream, "name", None)
    return name if isinstance(name, str) else None


def readinessReactors() -> tuple[type, ...]:
    """
    Twisted's reactor classes that take any file descriptor in
    C{addReader}/C{addWriter} and adopt connected sockets (epoll, poll and
    select; looked up once).
    """
    global _reactorKinds
    if _reactorKinds is None:
        kinds: list[type] = []
        for module, name in (
            ("twisted.internet.epollreactor", "EPollReactor"),
            ("twisted.internet.pollreactor", "PollReactor"),
            ("twisted.internet.selectreactor", "SelectReactor"),
        ):
            try:
                kinds.append(getattr(__import__(module, fromlist=[name]), name))
            except (ImportError, AttributeError):
                pass
        _reactorKinds = tuple(kinds)
    return _reactorKinds


@implementer(IConnector, IWriteDescriptor)
class PlainConnector:
    """
    One TCP connection attempt to an address literal, made with a plain
    non-blocking socket: the reactor watches it for writability (which is
    how a C{connect()} in progress ends), and once it is connected, it gets
    the transport C{reactor.adoptStreamConnection} would give it (a
    C{tcp.Server}) and the factory's protocol.  Compared with C{reactor.connectTCP}, there is no C{Connector}
    and C{Client} set-up, no Deferred, no turn of the reactor before the
    C{connect()}, and fewer registration changes.

    The factory (a C{ClientFactory}) is asked C{buildProtocol(address)}
    once connected, or told C{clientConnectionFailed(self, reason)} (a turn
    of the reactor later) with the errors C{connectTCP} gives:
    C{ConnectionRefusedError}, C{TimeoutError}, C{ConnectBindError} ...
    C{clientConnectionLost} is not called: the transport is the reactor's
    adopted one, with no connector.
    """

    __slots__ = (
        "_reactor",
        "_factory",
        "_family",
        "_address",
        "_socket",
        "_timer",
        "state",
    )

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        factory: Any,
        timeout: float | None,
        bindAddress: Any,
    ) -> None:
        """
        Start connecting; see L{DirectTCP4Endpoint.connectFactory}.
        """
        self._reactor = reactor
        self._factory = factory
        self._timer: Any = None
        self._socket: socket.socket | None = None
        self.state = "connecting"
        if ":" in host:
            self._family = socket.AF_INET6
            self._address = socket.getaddrinfo(
                host,
                port,
                socket.AF_INET6,
                socket.SOCK_STREAM,
                0,
                socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )[0][4]
        else:
            self._family = socket.AF_INET
            self._address = (host, port)
        try:
            sock = socket.socket(self._family, socket.SOCK_STREAM)
        except OSError as error:
            # Out of descriptors, say: fail as connectTCP does.
            self._failLater(getConnectError((error.errno, error.strerror)))
            return
        sock.setblocking(False)
        if bindAddress is not None:
            try:
                sock.bind(bindAddress)
            except OSError as error:
                sock.close()
                self._failLater(ConnectBindError(error.errno, error.strerror))
                return
        code = sock.connect_ex(self._address)
        if code and code not in (EINPROGRESS, EWOULDBLOCK):
            sock.close()
            self._failLater(getConnectError((code, strerror(code))))
            return
        self._socket = sock
        reactor.addWriter(self)
        if timeout is not None:
            self._timer = reactor.callLater(timeout, self._timedOut)

    # IConnector

    def stopConnecting(self) -> None:
        """Give up on the attempt; the factory hears nothing more."""
        if self.state == "failing":
            # The failure is not told yet: it will not be.
            self.state = "disconnected"
            return
        if self.state != "connecting":
            raise NotConnectingError()
        self._end("disconnected")

    def disconnect(self) -> None:
        """Give up on the attempt, if it is still going."""
        if self.state == "connecting":
            self.stopConnecting()

    def connect(self) -> None:
        """Not supported: an attempt is made once."""
        raise UserError(None, "a PlainConnector connects once")

    def getDestination(self) -> Any:
        """The address being connected to."""
        kind = address.IPv6Address if self._family == socket.AF_INET6 else address.IPv4Address
        return kind("TCP", self._address[0], self._address[1])

    # IWriteDescriptor

    def fileno(self) -> int:
        sock = self._socket
        return -1 if sock is None else sock.fileno()

    def logPrefix(self) -> str:
        return "PlainConnector"

    def doWrite(self) -> None:
        """The socket is writable: the connection is made, or failed."""
        sock = self._socket
        if sock is None:
            return
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._end("disconnected")
            self._factory.clientConnectionFailed(
                self, Failure(getConnectError((code, strerror(code))))
            )
            return
        self._end("connected", close=False)
        self._connected(sock)

    def _connected(self, sock: socket.socket) -> None:
        """
        Make the transport of the connected socket and the factory's
        protocol, as C{reactor.adoptStreamConnection} does (a C{tcp.Server}
        transport), but with this socket itself rather than a duplicate of
        its descriptor, and with the addresses already known.
        """
        peer = self.getDestination()
        try:
            protocol = self._factory.buildProtocol(peer)
        except BaseException:
            sock.close()
            raise
        if protocol is None:
            sock.close()
            return
        transport = tcp.Server(sock, protocol, self._address, None, 0, self._reactor)
        transport.repstr = f"<{type(protocol).__name__} to {peer.host}:{peer.port}>"
        protocol.makeConnection(transport)

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor gave up on the socket: it saw a hang-up (a refused or
        failed C{connect()}: the socket's error says which), or L{doWrite}
        raised.
        """
        if self.state != "connecting":
            return
        sock = self._socket
        if sock is not None:
            try:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            except OSError:
                code = 0
            if code:
                reason = Failure(getConnectError((code, strerror(code))))
        self._end("disconnected")
        self._factory.clientConnectionFailed(self, reason)

    # Internals

    def _end(self, state: str, close: bool = True) -> None:
        self.state = state
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        sock = self._socket
        if sock is not None:
            self._reactor.removeWriter(self)
            self._socket = None
            if close:
                sock.close()

    def _timedOut(self) -> None:
        self._timer = None
        if self.state == "connecting":
            self._end("disconnected")
            self._factory.clientConnectionFailed(
                self, Failure(ConnectingTimeoutError(string="connection timed out"))
            )

    def _failLater(self, error: Exception) -> None:
        self.state = "failing"
        self._reactor.callLater(0, self._fail, error)

    def _fail(self, error: Exception) -> None:
        if self.state == "failing":
            self.state = "disconnected"
            self._factory.clientConnectionFailed(self, Failure(error))


#: C{connectFactory}'s default timeout: the endpoint's.
_ENDPOINT_TIMEOUT: Any = object()


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

    def connectFactory(self, factory: Any, timeout: Any = _ENDPOINT_TIMEOUT) -> IConnector:
        """
        Connect to this endpoint's address: the same connection C{connect}
        makes (same timeout and bind address), without its Deferred; with
        a L{PlainConnector} where the reactor allows it, else with
        C{reactor.connectTCP}.

        @param factory: a C{twisted.internet.protocol.ClientFactory}: its
            C{buildProtocol} builds the protocol once connected, and its
            C{clientConnectionFailed} hears of a failure.
        @param timeout: seconds the attempt may take; by default the
            endpoint's.  L{None} sets no timer: for a caller that keeps one
            of its own (and then cancels with C{stopConnecting}).
        @return: the connector (C{stopConnecting} gives up on the attempt).
        """
        if timeout is _ENDPOINT_TIMEOUT:
            timeout = self._timeout
        reactor = self._reactor
        if isinstance(reactor, readinessReactors()):
            return PlainConnector(
                reactor, self._host, self._port, factory, timeout, self._bindAddress
            )
        return reactor.connectTCP(
            self._host,
            self._port,
            factory,
            timeout=self._timeout if timeout is None else timeout,
            bindAddress=self._bindAddress,
        )


class DirectTCP4Endpoint(_ConnectFactoryMixin, TCP4ClientEndpoint):
    """
    A C{TCP4ClientEndpoint} to an IPv4 literal, with the fast path
    C{connectFactory} (see the module docstring).
    """

    #: How the connection's log names the upstream.
    upstreamName = "direct"


class DirectTCP6Endpoint(_ConnectFactoryMixin, TCP6ClientEndpoint):
    """
    A C{TCP6ClientEndpoint} to an IPv6 literal, with the fast path
    C{connectFactory} (see the module docstring).
    """

    #: How the connection's log names the upstream.
    upstreamName = "direct"


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

    #: How the connection's log names the upstream.
    upstreamName = "direct"

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

    #: How the connections' log names this upstream.
    name = "direct"

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
