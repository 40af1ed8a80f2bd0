"""
Test doubles for socksd's pluggable parts, for socksd's own tests and for
applications that embed socksd.

  - L{MemoryUpstream}: an L{IUpstreamFactory} whose connections the test
    completes or fails by hand (L{ConnectAttempt}), recording each
    destination and connect context asked for;
  - L{FakeResolver}: an L{IResolver} answering from dictionaries;
  - L{RecordingTransport}: a C{StringTransport} that also records
    half-closes and C{TCP_NODELAY};
  - L{EchoProtocol}: sends back what it receives, honouring half-close.

Nothing here touches the network or the global reactor.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Iterable, Mapping

from twisted.internet import address as taddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from zope.interface import implementer

from socksd.address import Destination
from socksd.errors import ResolveFailed
from socksd.interfaces import ConnectContext, IResolver, IUpstreamFactory

__all__ = [
    "MemoryUpstream",
    "MemoryEndpoint",
    "ConnectAttempt",
    "FakeResolver",
    "RecordingTransport",
    "EchoProtocol",
]

Address = IPv4Address | IPv6Address


class RecordingTransport(StringTransport):
    """
    A C{StringTransport} that records what C{StringTransport} ignores.

    @ivar writeClosed: C{True} after C{loseWriteConnection}.
    @ivar noDelay: the last C{setTcpNoDelay} value, or L{None}.
    @ivar aborted: C{True} after C{abortConnection}.
    """

    def __init__(self, hostAddress: Any = None, peerAddress: Any = None) -> None:
        super().__init__(hostAddress, peerAddress)
        self.writeClosed = False
        self.noDelay: bool | None = None
        self.aborted = False

    def loseWriteConnection(self) -> None:
        """Record a half-close (the write side is shut down)."""
        self.writeClosed = True

    def setTcpNoDelay(self, enabled: bool) -> None:
        """Record C{TCP_NODELAY}."""
        self.noDelay = bool(enabled)

    def getTcpNoDelay(self) -> bool:
        """The recorded C{TCP_NODELAY}."""
        return bool(self.noDelay)

    def abortConnection(self) -> None:
        """Record an abort (and close, as C{StringTransport} does)."""
        self.aborted = True
        super().abortConnection()


class ConnectAttempt:
    """
    One C{connect} made on a L{MemoryEndpoint}: the test decides its fate
    with L{succeed}, L{connectTo} or L{fail}.

    @ivar destination: the destination asked for.
    @ivar context: the connect context it was asked with.
    @ivar protocolFactory: the factory given to C{connect}.
    @ivar deferred: the Deferred C{connect} returned.
    @ivar cancelled: C{True} once the caller cancelled L{deferred}.
    @ivar protocol: the protocol built, once connected.
    @ivar transport: its transport, once connected.
    """

    def __init__(
        self,
        destination: Destination,
        context: ConnectContext | None,
        protocolFactory: IProtocolFactory,
    ) -> None:
        self.destination = destination
        self.context = context
        self.protocolFactory = protocolFactory
        self.cancelled = False
        self.protocol: Any = None
        self.transport: Any = None
        self.deferred: Deferred[Any] = Deferred(self._cancel)

    def __repr__(self) -> str:
        return f"<ConnectAttempt to {self.destination}>"

    def _cancel(self, deferred: Deferred[Any]) -> None:
        self.cancelled = True

    def _hostAddress(self) -> Any:
        return taddress.IPv4Address("TCP", "198.51.100.1", 40000)

    def _peerAddress(self) -> Any:
        host = self.destination.host
        if isinstance(host, IPv6Address):
            return taddress.IPv6Address("TCP", str(host), self.destination.port)
        if isinstance(host, IPv4Address):
            return taddress.IPv4Address("TCP", str(host), self.destination.port)
        return taddress.HostnameAddress(
            host.encode("utf-8", "surrogateescape"), self.destination.port
        )

    def succeed(self, transport: Any = None) -> Any:
        """
        Connect: build the protocol on C{transport} (a new
        L{RecordingTransport} whose host is 198.51.100.1:40000 when
        L{None}) and fire L{deferred} with it.

        @return: the protocol.
        """
        if transport is None:
            transport = RecordingTransport(self._hostAddress(), self._peerAddress())
        protocol = self.protocolFactory.buildProtocol(transport.getPeer())
        self.protocol = protocol
        self.transport = transport
        protocol.makeConnection(transport)
        self.deferred.callback(protocol)
        return protocol

    def connectTo(self, serverProtocol: Any, clock: Any = None) -> iosim.IOPump:
        """
        Connect to C{serverProtocol} in memory, with
        C{twisted.test.iosim}, and fire L{deferred}.

        @return: the pump that moves bytes between the two; call its
            C{flush()}.
        """
        protocol = self.protocolFactory.buildProtocol(self._peerAddress())
        clientTransport = iosim.FakeTransport(
            protocol,
            isServer=False,
            hostAddress=self._hostAddress(),
            peerAddress=self._peerAddress(),
        )
        serverTransport = iosim.FakeTransport(
            serverProtocol,
            isServer=True,
            hostAddress=self._peerAddress(),
            peerAddress=self._hostAddress(),
        )
        self.protocol = protocol
        self.transport = clientTransport
        pump = iosim.connect(
            serverProtocol,
            serverTransport,
            protocol,
            clientTransport,
            greet=False,
            clock=clock,
        )
        self.deferred.callback(protocol)
        return pump

    def fail(self, error: BaseException) -> None:
        """Fail the connection with C{error}."""
        self.deferred.errback(error)


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """The endpoint L{MemoryUpstream} hands out: each C{connect} is an attempt."""

    def __init__(
        self, upstream: MemoryUpstream, destination: Destination, context: Any
    ) -> None:
        self.upstream = upstream
        self.destination = destination
        self.context = context

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        """Record a L{ConnectAttempt}; its Deferred is the result."""
        attempt = ConnectAttempt(self.destination, self.context, protocolFactory)
        self.upstream.attempts.append(attempt)
        return attempt.deferred


@implementer(IUpstreamFactory)
class MemoryUpstream:
    """
    An upstream factory whose connections the test completes by hand.

    @ivar attempts: every L{ConnectAttempt}, in order.
    @ivar requests: every C{(destination, context)} L{endpointFor} was
        asked for, in order.
    """

    def __init__(self) -> None:
        self.attempts: list[ConnectAttempt] = []
        self.requests: list[tuple[Destination, Any]] = []

    @property
    def destinations(self) -> list[Destination]:
        """The destinations asked for, in order."""
        return [destination for destination, _ in self.requests]

    @property
    def contexts(self) -> list[Any]:
        """The connect contexts asked with, in order."""
        return [context for _, context in self.requests]

    @property
    def last(self) -> ConnectAttempt:
        """The latest attempt."""
        return self.attempts[-1]

    def endpointFor(
        self, destination: Destination, context: ConnectContext | None = None
    ) -> MemoryEndpoint:
        """See L{IUpstreamFactory.endpointFor}."""
        self.requests.append((destination, context))
        return MemoryEndpoint(self, destination, context)


def _addresses(values: Any) -> list[Address]:
    if isinstance(values, (str, IPv4Address, IPv6Address)):
        values = [values]
    return [
        v if isinstance(v, (IPv4Address, IPv6Address)) else ip_address(v)
        for v in values
    ]


@implementer(IResolver)
class FakeResolver:
    """
    A resolver answering from dictionaries, at once.

    Names are looked up without regard to case or a trailing dot; an
    address literal resolves to itself.

    @ivar names: name to addresses.
    @ivar reverseNames: address to name.
    @ivar queries: every name and address asked for, in order.
    """

    def __init__(
        self,
        names: Mapping[str, Iterable[Address | str] | Address | str] | None = None,
        reverseNames: Mapping[Address | str, str] | None = None,
    ) -> None:
        """
        @param names: e.g. C{{"example.com": ["192.0.2.1", "2001:db8::1"]}}.
        @param reverseNames: e.g. C{{"192.0.2.1": "example.com"}}.
        """
        self.names = {
            self._key(name): _addresses(values)
            for name, values in (names or {}).items()
        }
        self.reverseNames = {
            (a if isinstance(a, (IPv4Address, IPv6Address)) else ip_address(a)): name
            for a, name in (reverseNames or {}).items()
        }
        self.queries: list[Any] = []

    @staticmethod
    def _key(name: str) -> str:
        return (name[:-1] if name.endswith(".") else name).lower()

    def resolve(self, name: str) -> Deferred[list[Address]]:
        """See L{IResolver.resolve}."""
        self.queries.append(name)
        try:
            return succeed([ip_address(name.strip("[]"))])
        except ValueError:
            pass
        addresses = self.names.get(self._key(name))
        if not addresses:
            return fail(ResolveFailed(f"{name} has no address"))
        return succeed(list(addresses))

    def reverse(self, address: Address) -> Deferred[str]:
        """See L{IResolver.reverse}."""
        self.queries.append(address)
        name = self.reverseNames.get(address)
        if name is None:
            return fail(ResolveFailed(f"{address} has no name"))
        return succeed(name)


@implementer(IHalfCloseableProtocol)
class EchoProtocol(Protocol):
    """
    Sends back every byte it receives; on EOF, half-closes in turn.

    @ivar received: every byte received.
    @ivar ended: C{True} after the peer's EOF.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.ended = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.ended = True
        loseWrite = getattr(self.transport, "loseWriteConnection", None)
        if loseWrite is not None:
            loseWrite()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()
