"""
The relay: once a tunnel is up, bytes flow between the client and the
destination until both are done.

L{startRelay} joins two connected sides.  A side is a protocol object with a
C{transport} and a C{handler} attribute: the server's
L{socksd.server.dispatch.Dispatcher} on the client's connection and an
L{UpstreamProtocol} on the destination's.  Each side hands every event it
gets (C{dataReceived}, C{readConnectionLost}, C{writeConnectionLost},
C{connectionLost}) to its C{handler}; the relay installs one
L{RelayDirection} as the handler of each side.

  - Backpressure: each transport is registered as the other's streaming
    producer, so a side that reads slowly pauses reading from the other, and
    nothing is buffered without bound.
  - Half-close: when one side ends its writing (EOF), the other side's
    writing is shut down after the bytes in flight, and the other direction
    goes on; when both directions have ended, both connections are closed.
  - Teardown: when either connection is lost, the other is closed after its
    pending bytes.
  - Idle timeout: optional; see L{Relay}.

L{startRelay} is the one entry point, so that a zero-copy relay (splice(2))
can later be chosen there for transports that allow it.
"""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socksd.address import Destination

__all__ = [
    "Relay",
    "RelayDirection",
    "UpstreamProtocol",
    "UPSTREAM_FACTORY",
    "startRelay",
    "boundDestination",
    "setNoDelay",
    "abortTransport",
    "openPlainTcp",
    "tcpTransports",
    "writeNow",
]

log = Logger()

_UNSPECIFIED = Destination(IPv4Address(0), 0)
_MISSING = object()


def boundDestination(address: Any) -> Destination:
    """
    Turn a Twisted C{IAddress} (a transport's C{getHost()}) into the
    L{Destination} a SOCKS reply reports; C{0.0.0.0:0} for an address that
    is not IP (a UNIX socket, an in-memory transport).
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if isinstance(host, str) and isinstance(port, int) and 0 <= port <= 0xFFFF:
        parsed = _hosts.get(host)
        if parsed is None:
            try:
                parsed = ip_address(host.partition("%")[0])
            except ValueError:
                return _UNSPECIFIED
            if len(_hosts) >= 256:
                _hosts.clear()
            _hosts[host] = parsed
        return Destination(parsed, port)
    return _UNSPECIFIED


#: Local addresses already parsed by L{boundDestination} (a server has few).
_hosts: dict[str, Any] = {}


def setNoDelay(transport: Any) -> None:
    """Set C{TCP_NODELAY} on C{transport} when it is a TCP transport."""
    setter = getattr(transport, "setTcpNoDelay", None)
    if setter is not None:
        try:
            setter(True)
        except OSError:
            pass


def abortTransport(transport: Any) -> None:
    """Close C{transport} now, dropping what it has not written."""
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


#: Twisted's plain TCP transport classes, once L{tcpTransports} looked them
#: up.
_tcpKinds: tuple[type, ...] = ()


def tcpTransports() -> tuple[type, ...]:
    """Twisted's plain TCP transport classes: C{tcp.Server}, C{tcp.Client}."""
    global _tcpKinds
    if not _tcpKinds:
        from twisted.internet import tcp

        _tcpKinds = (tcp.Server, tcp.Client)
    return _tcpKinds


def openPlainTcp(transport: Any) -> bool:
    """
    C{transport} is one of Twisted's plain TCP transports (exactly: the
    attributes looked at are theirs), connected, and still writing.
    """
    return (
        type(transport) in (_tcpKinds or tcpTransports())
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport._writeDisconnected
    )


def writeNow(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}; on a plain TCP transport that holds
    nothing unwritten, send it at once.

    C{transport.write} only buffers: the bytes go out when the reactor next
    finds the socket writable, which costs two registration changes and a
    turn of the reactor.  A handshake reply is small and the socket is
    almost always writable, so it is sent here instead; what the socket
    does not take (or everything, on an error, which the transport then
    meets and handles as usual) goes through C{transport.write}.
    """
    if (
        openPlainTcp(transport)
        and not transport._tempDataBuffer
        and len(transport.dataBuffer) <= transport.offset
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def _unregister(transport: Any) -> None:
    """
    Unregister C{transport}'s producer, if it has one, so that a
    C{loseConnection} or C{loseWriteConnection} is not held up by a paused
    producer.
    """
    if getattr(transport, "producer", _MISSING) is None:
        return
    try:
        transport.unregisterProducer()
    except (RuntimeError, AttributeError):
        pass


class _Holding:
    """
    An upstream's handler between its connection and the relay: it keeps
    what arrives, for L{startRelay} to replay.
    """

    __slots__ = ("data", "ended", "lost")

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.ended = False
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def readConnectionLost(self) -> None:
        self.ended = True

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason


@implementer(IProtocol, IHalfCloseableProtocol)
class UpstreamProtocol:
    """
    The protocol on socksd's connection to a destination.

    It hands every event to its C{handler}: until the relay starts, one that
    keeps what arrives; then the relay's L{RelayDirection}.  No exception
    leaves it: a failing handler aborts the connection (and the relay then
    closes the client).
    """

    __slots__ = ("transport", "connected", "handler")

    def __init__(self) -> None:
        self.transport: Any = None
        self.connected = 0
        self.handler: Any = _Holding()

    def makeConnection(self, transport: Any) -> None:
        """See L{IProtocol.makeConnection}."""
        self.connected = 1
        self.transport = transport
        self.connectionMade()

    def connectionMade(self) -> None:
        """See L{IProtocol.connectionMade}."""

    def dataReceived(self, data: bytes) -> None:
        """See L{IProtocol.dataReceived}."""
        try:
            self.handler.dataReceived(data)
        except Exception:
            self._failed("relaying data from the destination failed")

    def readConnectionLost(self) -> None:
        """See L{IHalfCloseableProtocol.readConnectionLost}."""
        try:
            self.handler.readConnectionLost()
        except Exception:
            self._failed("relaying the destination's EOF failed")

    def writeConnectionLost(self) -> None:
        """See L{IHalfCloseableProtocol.writeConnectionLost}."""
        try:
            self.handler.writeConnectionLost()
        except Exception:
            self._failed("handling the destination's half-close failed")

    def connectionLost(self, reason: Failure) -> None:
        """See L{IProtocol.connectionLost}."""
        self.connected = 0
        try:
            self.handler.connectionLost(reason)
        except Exception:
            log.failure("handling the loss of the destination's connection failed")

    def _failed(self, what: str) -> None:
        log.failure(what)
        abortTransport(self.transport)


class _UpstreamFactory(Factory):
    """Builds an L{UpstreamProtocol} per connection, quietly."""

    noisy = False

    def buildProtocol(self, addr: Any) -> UpstreamProtocol:
        return UpstreamProtocol()


#: The one protocol factory handed to every upstream endpoint's C{connect}.
UPSTREAM_FACTORY = _UpstreamFactory()


class RelayDirection:
    """
    One direction of a relay: events from the C{source} transport's
    protocol, bytes written to the C{sink} transport.

    @ivar count: the bytes relayed so far.
    @ivar ended: C{True} once the source's EOF was seen.
    @ivar throttle: a bandwidth limit (L{socksd.server.limits.Throttle}):
        told of every chunk, it pauses the source while over its rate; or
        L{None}.
    """

    __slots__ = ("relay", "source", "sink", "count", "ended", "throttle")

    def __init__(self, relay: Relay, source: Any, sink: Any) -> None:
        self.relay = relay
        self.source = source
        self.sink = sink
        self.count = 0
        self.ended = False
        self.throttle: Any = None

    def dataReceived(self, data: bytes) -> None:
        """Pass C{data} on."""
        self.count += len(data)
        self.sink.write(data)
        if self.throttle is not None:
            self.throttle.consume(len(data))

    def readConnectionLost(self) -> None:
        """The source sent EOF: shut down writing to the sink, after the
        bytes in flight."""
        if not self.ended:
            self.ended = True
            self.relay._readEnded(self)

    def writeConnectionLost(self) -> None:
        """Writing to the source was shut down; the other direction knows."""

    def connectionLost(self, reason: Failure) -> None:
        """The source's connection is gone: close the sink's."""
        if self.throttle is not None:
            self.throttle.stop()
        self.relay._lost(self, reason)


class IdleWatch:
    """
    The idle timeout both relays share: every C{_idleTimeout} seconds,
    compare the byte counts of C{up} and C{down}; when nothing moved, mark
    the relay C{closed}, record the reason and call C{_idle()}, the
    subclass's way of closing both sides.  A tunnel is so closed after
    between one and two periods of silence, with no work per chunk.
    """

    __slots__ = ()

    def _idle(self) -> None:
        raise NotImplementedError()

    def _startIdleTimer(self) -> None:
        if self._idleTimeout is not None and not self.closed:
            self._lastCount = self.up.count + self.down.count
            self._idleCall = self._reactor.callLater(self._idleTimeout, self._idleCheck)

    def _idleCheck(self) -> None:
        self._idleCall = None
        try:
            if self.closed:
                return
            if self.up.count + self.down.count != self._lastCount:
                self._startIdleTimer()
                return
            if self._record is not None:
                self._record.setReason("idle timeout")
            self.closed = True
            self._idle()
        except Exception:
            log.failure("the relay's idle check failed")

    def _stopIdleTimer(self) -> None:
        call, self._idleCall = self._idleCall, None
        if call is not None and call.active():
            call.cancel()


class Relay(IdleWatch):
    """
    Two transports joined: see the module docstring.

    With an idle timeout, the byte counters are looked at every
    C{idleTimeout} seconds, and both connections are closed when they have
    not moved since the last look, so a silent tunnel is closed after
    between one and two timeouts; nothing is done per chunk.

    @ivar up: the client-to-destination direction.
    @ivar down: the destination-to-client direction.
    @ivar closed: C{True} once the relay closed both connections or one was
        lost.
    """

    __slots__ = (
        "up",
        "down",
        "closed",
        "_record",
        "_reactor",
        "_idleTimeout",
        "_idleCall",
        "_lastCount",
    )

    def __init__(
        self,
        clientTransport: Any,
        upstreamTransport: Any,
        reactor: Any,
        idleTimeout: float | None = None,
        record: Any = None,
    ) -> None:
        """
        @param reactor: an C{IReactorTime}, for the idle timeout.
        @param idleTimeout: seconds of silence before closing, or L{None}.
        @param record: the connection's
            L{socksd.server._log.ConnectionRecord}, told why the relay
            closed when it was not a plain close; or L{None}.
        """
        self.up = RelayDirection(self, clientTransport, upstreamTransport)
        self.down = RelayDirection(self, upstreamTransport, clientTransport)
        self.closed = False
        self._record = record
        self._reactor = reactor
        self._idleTimeout = idleTimeout
        self._idleCall: Any = None
        self._lastCount = -1

    def byteCounts(self) -> tuple[int, int]:
        """The bytes relayed so far: (client to destination, destination to client)."""
        return self.up.count, self.down.count

    def _idle(self) -> None:
        for transport in (self.up.source, self.down.source):
            _unregister(transport)
            abortTransport(transport)

    def _readEnded(self, direction: RelayDirection) -> None:
        """C{direction}'s source sent EOF."""
        if self.closed:
            return
        sink = direction.sink
        # The source was the sink's producer; it produces nothing more, and
        # a paused producer would hold the half-close up.
        _unregister(sink)
        other = self.down if direction is self.up else self.up
        loseWrite = getattr(sink, "loseWriteConnection", None)
        if other.ended or loseWrite is None:
            self._closeBoth()
        else:
            loseWrite()

    def _closeBoth(self) -> None:
        """Close both connections once their pending bytes are written."""
        self.closed = True
        self._stopIdleTimer()
        for transport in (self.up.source, self.down.source):
            _unregister(transport)
            transport.loseConnection()

    def _lost(self, direction: RelayDirection, reason: Failure) -> None:
        """C{direction}'s source connection is gone."""
        if self.closed:
            self._stopIdleTimer()
            return
        self.closed = True
        self._stopIdleTimer()
        if self._record is not None and not reason.check(ConnectionDone):
            side = "client" if direction is self.up else "destination"
            self._record.setReason(
                f"{side} connection lost: {reason.getErrorMessage()}"
            )
        sink = direction.sink
        _unregister(direction.source)
        _unregister(sink)
        sink.loseConnection()


#: The L{socksd.server._splice} module, once L{_loadSplice} imported it.
_splicing: Any = None


def _loadSplice() -> Any:
    """Import the splice relay (which imports this module) on first use."""
    global _splicing
    from socksd.server import _splice

    _splicing = _splice
    return _splice


def startRelay(
    client: Any,
    upstream: Any,
    reactor: Any,
    initialData: bytes = b"",
    clientEnded: bool = False,
    idleTimeout: float | None = None,
    noDelay: bool = True,
    record: Any = None,
    splice: bool = False,
) -> Any:
    """
    Join C{client} and C{upstream} (see the module docstring).

    The client's reply must already have been written; the client's
    transport must be reading (unless C{clientEnded}).

    @param client: the client's side: a protocol with C{transport} and
        C{handler}.
    @param upstream: the destination's side, an L{UpstreamProtocol} (what
        it received before now is relayed first).
    @param reactor: an C{IReactorTime}.
    @param initialData: bytes the client sent before the tunnel was up
        (optimistic data), written to the destination first.
    @param clientEnded: the client already sent EOF.
    @param idleTimeout: see L{Relay}.
    @param noDelay: set C{TCP_NODELAY} on the destination's connection (the
        client's is the dispatcher's business).
    @param record: the connection's log record; it learns the relay, for
        the byte counts.
    @param splice: use L{socksd.server._splice.SpliceRelay} (zero-copy)
        when both transports allow it.
    @return: the running relay: a L{Relay}, or with C{splice} possibly a
        L{socksd.server._splice.SpliceRelay} (which has no throttles).
    """
    if splice:
        splicing = _splicing
        if splicing is None:
            splicing = _loadSplice()
        spliced = splicing.trySplice(
            client,
            upstream,
            reactor,
            initialData,
            clientEnded,
            idleTimeout,
            noDelay,
            record,
        )
        if spliced is not None:
            return spliced
    clientTransport = client.transport
    upstreamTransport = upstream.transport
    relay = Relay(clientTransport, upstreamTransport, reactor, idleTimeout, record)
    if record is not None:
        record.relay = relay
    if noDelay:
        setNoDelay(upstreamTransport)
    held = upstream.handler
    if not isinstance(held, _Holding):
        held = _Holding()
    client.handler = relay.up
    upstream.handler = relay.down
    if held.lost is None:
        if not clientEnded:
            upstreamTransport.registerProducer(clientTransport, True)
        if not held.ended:
            clientTransport.registerProducer(upstreamTransport, True)
    if initialData:
        relay.up.dataReceived(initialData)
    for chunk in held.data:
        relay.down.dataReceived(chunk)
    if clientEnded:
        relay.up.readConnectionLost()
    if held.ended:
        relay.down.readConnectionLost()
    if held.lost is not None:
        relay.down.connectionLost(held.lost)
    relay._startIdleTimer()
    return relay
