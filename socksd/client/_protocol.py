"""
The machinery every SOCKS client endpoint shares.

A version-specific L{IClientHandshake} (SOCKS4A, SOCKS5, later SOCKS6) turns
the proxy's bytes into the bytes to answer and, at the end, a
L{HandshakeResult}; it does no I/O.  L{SocksClientProtocol} drives one over
the connection to the proxy and then either:

  - hands the connection to the application's protocol, through a
    L{TunnelTransport} whose C{getPeer()} is the destination (a tunnel, for
    CONNECT); or
  - fires with the result and closes (a query, for Tor's RESOLVE and
    RESOLVE_PTR).

L{connectThrough} and L{queryThrough} are the two ways in; the endpoints in
L{socksd.client.socks5} and L{socksd.client.socks4a} are thin wrappers over
them.  Connection attempts have no timeout of their own: cancel the
Deferred (C{d.addTimeout(seconds, reactor)} does) to give up.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address as IPv4, IPv6Address as IPv6
from typing import Any, Callable

from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, NoProtocol
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import (
    Attribute,
    Interface,
    alsoProvides,
    directlyProvides,
    providedBy,
)

from socksd.address import Destination, Host, parseHost
from socksd.errors import GeneralFailure, MalformedMessage, SocksError

__all__ = [
    "IClientHandshake",
    "HandshakeResult",
    "ProxyDisconnected",
    "ProxyProtocolError",
    "SocksClientProtocol",
    "TunnelTransport",
    "GssapiTunnelTransport",
    "connectThrough",
    "queryThrough",
    "peerAddressFor",
    "destinationFor",
    "asBytes",
]


class ProxyDisconnected(GeneralFailure):
    """The proxy closed the connection before the SOCKS handshake ended."""

    def __init__(self, message: str = "", reason: Failure | None = None) -> None:
        """
        @param reason: how the connection ended, as Twisted reported it.
        """
        super().__init__(message)
        self.reason = reason


class ProxyProtocolError(GeneralFailure):
    """The proxy broke the SOCKS protocol (a malformed or unexpected message)."""

    def __init__(
        self, message: str = "", cause: MalformedMessage | None = None
    ) -> None:
        """
        @param cause: the codec's error, also set as C{__cause__}.
        """
        super().__init__(message)
        self.cause = cause
        self.__cause__ = cause


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """
    What a successful handshake leaves.

    @ivar bound: the address and port the proxy reported (BND.ADDR and
        BND.PORT; for RESOLVE the address found, for RESOLVE_PTR the name).
    @ivar leftover: bytes that came after the final reply (application data
        in the same segment).
    """

    bound: Destination
    leftover: bytes = b""
    #: After an RFC 1961 exchange that agreed integrity or
    #: confidentiality: an object with C{protection} (a
    #: L{socksd.gssapi.ContextProtection}), C{encrypt} and C{pending} (raw
    #: frames after the reply); the tunnel then wraps and unwraps.
    gssapi: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.bound, Destination):
            raise TypeError(f"bound must be a Destination, not {self.bound!r}")
        if not isinstance(self.leftover, bytes):
            raise TypeError(
                f"leftover must be bytes, not {type(self.leftover).__name__}"
            )


class IClientHandshake(Interface):
    """
    One SOCKS client handshake, without I/O: bytes in, bytes out.

    A handshake object serves one connection; make a new one for each.
    """

    name = Attribute("The protocol's name for messages, e.g. C{'SOCKS5'}.")

    def start() -> bytes:
        """
        The bytes to send as soon as the proxy connection is up.
        """

    def dataReceived(data: bytes) -> tuple[bytes, HandshakeResult | None]:
        """
        Take bytes from the proxy.

        @return: the bytes to send now (possibly empty), and the
            L{HandshakeResult} once the handshake has succeeded (then no more
            bytes are given to this object), else L{None}.
        @raise SocksError: the proxy refused (a reply code turned into a typed
            error by L{socksd.replies.errorForReply}, or a failed
            authentication); a L{MalformedMessage} whose C{replyCode} is
            L{None} when its bytes break the protocol.
        """


def peerAddressFor(destination: Destination) -> IAddress:
    """
    The Twisted address that stands for C{destination}.

    @return: C{IPv4Address("TCP", ...)} or C{IPv6Address("TCP", ...)} for an
        address literal, a C{HostnameAddress} (the name as UTF-8 bytes) for a
        name.
    """
    host = destination.host
    if isinstance(host, IPv4):
        return IPv4Address("TCP", str(host), destination.port)
    if isinstance(host, IPv6):
        return IPv6Address("TCP", str(host), destination.port)
    return HostnameAddress(host.encode("utf-8", "surrogateescape"), destination.port)


def asBytes(value: str | bytes, what: str) -> bytes:
    """
    C{value} as bytes: a L{str} is encoded as UTF-8.

    @raise TypeError: C{value} is neither.
    """
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def destinationFor(host: Host | bytes, port: int) -> Destination:
    """
    The destination for C{host} (a name, an address literal, with or without
    brackets, or an address object) and C{port}.

    @raise ValueError: the port is out of range, or the name cannot be sent.
    """
    if isinstance(host, bytes):
        host = host.decode("utf-8")
    if isinstance(host, str):
        host = parseHost(host)
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    return Destination(host, port)


class TunnelTransport:
    """
    The transport an application's protocol gets: the connection to the
    proxy, which now carries the application's bytes to the destination.

    Everything is the proxy connection's (C{write}, C{loseConnection},
    producers, C{getHost}, TLS details if the proxy is reached over TLS ...)
    but C{getPeer()}, which is the destination.  While bytes that came with
    the proxy's final reply wait to be delivered, C{pauseProducing} holds
    them back too.
    """

    def __init__(
        self, transport: Any, peer: IAddress, owner: SocksClientProtocol
    ) -> None:
        """
        @param transport: the proxy connection's transport.
        @param peer: what C{getPeer()} returns.
        @param owner: the protocol that holds undelivered bytes.
        """
        self._transport = transport
        self._peer = peer
        self._owner = owner
        directlyProvides(
            self, *[i for i in providedBy(transport) if not i.isOrExtends(IProtocol)]
        )

    def __repr__(self) -> str:
        return f"<TunnelTransport to {self._peer} over {self._transport!r}>"

    @property
    def proxyTransport(self) -> Any:
        """The transport of the connection to the proxy, under this one."""
        return self._transport

    def getPeer(self) -> IAddress:
        """The destination, as the application asked for it."""
        return self._peer

    def getHost(self) -> IAddress:
        """The local address of the connection to the proxy."""
        return self._transport.getHost()

    def pauseProducing(self) -> None:
        """Stop delivering bytes to the application until resumed."""
        self._owner._paused = True
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        """
        Deliver held bytes, then let the proxy connection read again (unless
        the application paused once more meanwhile).
        """
        self._owner._paused = False
        self._owner._flush()
        if not self._owner._paused:
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        """Stop reading from the proxy for good."""
        self._transport.stopProducing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GssapiTunnelTransport(TunnelTransport):
    """
    A L{TunnelTransport} over a GSS-API protected SOCKS5 connection (RFC
    1961 section 5): what the application writes is wrapped and framed.
    """

    def __init__(
        self, transport: Any, peer: IAddress, owner: SocksClientProtocol, tunnel: Any
    ) -> None:
        super().__init__(transport, peer, owner)
        self._tunnel = tunnel
        self._limit = tunnel.protection.wrapLimit(tunnel.encrypt)

    def write(self, data: bytes) -> None:
        """Wrap C{data} into as many RFC 1961 data frames as it needs."""
        from socksd.wire.gssapi import MTYP_DATA, encodeFrame

        if not data:
            return
        wrap = self._tunnel.protection.wrap
        encrypt = self._tunnel.encrypt
        limit = self._limit
        self._transport.write(
            b"".join(
                encodeFrame(MTYP_DATA, wrap(data[i : i + limit], encrypt))
                for i in range(0, len(data), limit)
            )
        )

    def writeSequence(self, data: Any) -> None:
        """See L{write}."""
        self.write(b"".join(data))


_HANDSHAKE = "handshake"
_TUNNEL = "tunnel"
_DONE = "done"


class SocksClientProtocol(Protocol):
    """
    Runs an L{IClientHandshake} over the connection to a proxy, then hands
    the connection to the application's protocol (a tunnel) or fires with
    the result and closes (a query).

    If the application's protocol provides C{IHalfCloseableProtocol}, so
    does this one, and half-closes are passed on once the tunnel is up.
    """

    def __init__(
        self,
        handshake: IClientHandshake,
        finished: Deferred,
        application: IProtocol | None = None,
        peer: IAddress | None = None,
    ) -> None:
        """
        @param handshake: the handshake to run.
        @param finished: fired with C{application} once it is connected (a
            tunnel), or with the L{HandshakeResult} (a query); failed with a
            L{SocksError} (or L{ProxyDisconnected}, L{ProxyProtocolError}).
        @param application: the protocol to hand the connection to, or
            L{None} for a query.
        @param peer: what the application's transport says C{getPeer()} is.
        """
        self.handshake = handshake
        self.finished = finished
        self.application = application
        self.peer = peer
        self.state = _HANDSHAKE
        self._pending = bytearray()
        self._paused = False
        self._lost = False
        self._abortWhenConnected = False
        self._gssapi: Any = None
        self._frames: Any = None
        if application is not None and IHalfCloseableProtocol.providedBy(application):
            alsoProvides(self, IHalfCloseableProtocol)

    def __repr__(self) -> str:
        return (
            f"<SocksClientProtocol {self.handshake.name} {self.state} to {self.peer}>"
        )

    def connectionMade(self) -> None:
        """Send the handshake's opening bytes."""
        if self._abortWhenConnected:
            self.state = _DONE
            self.transport.abortConnection()
            return
        self._send(self.handshake.start())

    def abortHandshake(self) -> None:
        """
        Give up (the connect Deferred was cancelled): abort the connection
        unless the handshake is already over.
        """
        if self.state != _HANDSHAKE:
            return
        if self.transport is None:
            self._abortWhenConnected = True
            return
        self.state = _DONE
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        """Feed the handshake, or after it the application."""
        if self.state == _TUNNEL:
            self._deliver(data)
            return
        if self.state != _HANDSHAKE:
            return
        try:
            reply, result = self.handshake.dataReceived(data)
        except SocksError as error:
            if isinstance(error, MalformedMessage) and error.replyCode is None:
                # The codec's complaint, not a refusal (a reply of 08 is an
                # UnsupportedAddressType too, but carries its replyCode).
                self._fail(
                    ProxyProtocolError(
                        f"the proxy broke the {self.handshake.name} protocol: {error}",
                        cause=error,
                    ),
                    abort=True,
                )
            else:
                self._fail(error, abort=False)
            return
        self._send(reply)
        if result is not None:
            self._succeeded(result)

    def _send(self, data: bytes) -> None:
        if data:
            self.transport.write(data)

    def _fail(self, error: SocksError, abort: bool) -> None:
        self.state = _DONE
        if not self.finished.called:
            self.finished.errback(Failure(error))
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _succeeded(self, result: HandshakeResult) -> None:
        if self.application is None:
            self.state = _DONE
            self.finished.callback(result)
            self.transport.loseConnection()
            return
        self.state = _TUNNEL
        self._pending += result.leftover
        if result.gssapi is not None:
            from socksd.wire.gssapi import MTYP_DATA, FrameDecoder

            self._gssapi = result.gssapi
            self._frames = FrameDecoder(MTYP_DATA)
            tunnel: TunnelTransport = GssapiTunnelTransport(
                self.transport, self.peer, self, result.gssapi
            )
            if result.gssapi.pending:
                self._unwrap(result.gssapi.pending)
                if self.state != _TUNNEL:
                    return
        else:
            tunnel = TunnelTransport(self.transport, self.peer, self)
        try:
            self.application.makeConnection(tunnel)
        except BaseException:
            self.state = _DONE
            self.finished.errback(Failure())
            self.transport.abortConnection()
            return
        self.finished.callback(self.application)
        self._flush()

    def _deliver(self, data: bytes) -> None:
        if self._gssapi is not None:
            self._unwrap(data)
        else:
            self._pending += data
        self._flush()

    def _unwrap(self, data: bytes) -> None:
        """RFC 1961 data frames from the proxy: keep their data."""
        frames = self._frames
        frames.feed(data)
        tunnel = self._gssapi
        try:
            while True:
                frame = frames.next()
                if frame is None:
                    return
                plain, encrypted = tunnel.protection.unwrap(frame.token)
                if tunnel.encrypt and not encrypted:
                    raise MalformedMessage("a data token without confidentiality")
                self._pending += plain
        except Exception as error:
            self._flush()
            self.state = _DONE
            self.transport.abortConnection()
            self.application.connectionLost(
                Failure(ProxyProtocolError(f"bad GSS-API frame from the proxy: {error}"))
            )

    def _flush(self) -> None:
        """Give held bytes to the application unless it paused us."""
        while self._pending and not self._paused and self.state == _TUNNEL:
            data = bytes(self._pending)
            del self._pending[:]
            self.application.dataReceived(data)

    def readConnectionLost(self) -> None:
        """The proxy closed its sending side."""
        if self.state == _TUNNEL:
            self._paused = False
            self._flush()
            self.application.readConnectionLost()
        elif self.state == _HANDSHAKE:
            self._fail(self._disconnected(Failure(ConnectionDone())), abort=False)

    def writeConnectionLost(self) -> None:
        """Our sending side is closed."""
        if self.state == _TUNNEL:
            self.application.writeConnectionLost()

    def _disconnected(self, reason: Failure) -> ProxyDisconnected:
        return ProxyDisconnected(
            f"the proxy closed the connection during the {self.handshake.name}"
            f" handshake ({reason.getErrorMessage()})",
            reason=reason,
        )

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """Fail a handshake in progress, or tell the application."""
        if self._lost:
            return
        self._lost = True
        if self.state == _HANDSHAKE:
            self.state = _DONE
            if not self.finished.called:
                self.finished.errback(Failure(self._disconnected(reason)))
        elif self.state == _TUNNEL:
            self._paused = False
            self._flush()
            self.state = _DONE
            self.application.connectionLost(reason)


class _OneProtocolFactory(Factory):
    """
    Builds the one L{SocksClientProtocol} of a connection attempt (quietly:
    no "Starting factory" line per connection).
    """

    noisy = False

    def __init__(self, build: Callable[[IAddress], SocksClientProtocol]) -> None:
        self._build = build
        self.built: SocksClientProtocol | None = None

    def buildProtocol(self, addr: IAddress) -> SocksClientProtocol:
        self.built = self._build(addr)
        return self.built


def _run(
    proxyEndpoint: IStreamClientEndpoint,
    build: Callable[[Deferred], Callable[[IAddress], SocksClientProtocol]],
) -> Deferred:
    """
    Connect to the proxy and run a protocol that fires the Deferred returned.

    Cancelling it before the proxy connection is up cancels that attempt;
    during the handshake it aborts the connection.  Either way it fails with
    L{CancelledError}.
    """
    cancelled = False

    def cancel(result: Deferred) -> None:
        nonlocal cancelled
        cancelled = True
        protocol = factory.built
        if protocol is None:
            attempt.cancel()
        else:
            protocol.abortHandshake()

    finished: Deferred = Deferred(cancel)
    factory = _OneProtocolFactory(build(finished))

    def attemptFailed(reason: Failure) -> None:
        if not cancelled and not finished.called:
            finished.errback(reason)

    attempt = proxyEndpoint.connect(factory)
    attempt.addErrback(attemptFailed)
    return finished


def connectThrough(
    proxyEndpoint: IStreamClientEndpoint,
    makeHandshake: Callable[[], IClientHandshake],
    destination: Destination,
    protocolFactory: IProtocolFactory,
) -> Deferred:
    """
    Open a tunnel to C{destination} through a proxy and connect the
    application's protocol to it.

    @param proxyEndpoint: reaches the proxy (TCP, TLS, UNIX, another proxy).
    @param makeHandshake: makes the handshake for one connection.
    @param destination: where the tunnel goes; the application's transport
        reports it (see L{peerAddressFor}) as its peer.
    @param protocolFactory: the application's factory; its C{buildProtocol}
        is called with the destination's address once the proxy is
        connected, and the protocol is connected once the proxy has agreed.
    @return: a Deferred firing with the application's protocol after its
        C{connectionMade}, or failing with the proxy connection's error, a
        typed L{SocksError}, L{ProxyDisconnected}, L{ProxyProtocolError},
        C{NoProtocol} (the factory built none) or C{CancelledError} (after
        C{cancel()}).
    """
    peer = peerAddressFor(destination)

    def build(finished: Deferred) -> Callable[[IAddress], SocksClientProtocol]:
        def buildProtocol(addr: IAddress) -> SocksClientProtocol:
            application = protocolFactory.buildProtocol(peer)
            if application is None:
                raise NoProtocol()
            return SocksClientProtocol(makeHandshake(), finished, application, peer)

        return buildProtocol

    return _run(proxyEndpoint, build)


def queryThrough(
    proxyEndpoint: IStreamClientEndpoint, makeHandshake: Callable[[], IClientHandshake]
) -> Deferred:
    """
    Run one handshake with a proxy for its answer (Tor's RESOLVE and
    RESOLVE_PTR), then close the connection.

    @return: a Deferred firing with the L{HandshakeResult}, or failing as
        L{connectThrough}'s does.
    """

    def build(finished: Deferred) -> Callable[[IAddress], SocksClientProtocol]:
        return lambda addr: SocksClientProtocol(makeHandshake(), finished)

    return _run(proxyEndpoint, build)
