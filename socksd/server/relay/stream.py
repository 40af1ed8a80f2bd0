"""
The ordinary relay: once a tunnel is up, bytes flow between the client and
the destination through Python until both are done.

L{socksd.server.relay.startRelay} joins two connected sides.  A side is a
protocol object with a C{transport} and a C{handler} attribute: the
server's L{socksd.server.connection.SocksConnection} on the client's
connection and an L{UpstreamProtocol} on the destination's.  Each side
hands every event it gets (C{dataReceived}, C{readConnectionLost},
C{writeConnectionLost}, C{connectionLost}) to its C{handler}; the relay
installs one L{RelayDirection} as the handler of each side.

  - Backpressure: each transport is registered as the other's streaming
    producer, so a side that reads slowly pauses reading from the other, and
    nothing is buffered without bound.
  - Half-close: when one side ends its writing (EOF), the other side's
    writing is shut down after the bytes in flight, and the other direction
    goes on; when both directions have ended, both connections are closed.
  - Teardown: when either connection is lost, the other is closed after its
    pending bytes: with an EOF when the loss was clean (C{ConnectionDone}),
    else reset (RST) once those bytes are delivered
    (L{socksd.server.relay._transport.abortAfterWriting}), so that a
    destination's reset reaches the client as a reset, and a transfer cut
    short never looks complete.  The reason is looked at once, at the loss.
  - Idle timeout: optional; see L{Relay} (and L{IdleWatch}, which the
    splice relay shares).

Until the relay starts, an L{UpstreamProtocol} keeps what the destination
sends (L{_Holding}), for the relay to pass on first.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socksd.server.relay._transport import (
    abortAfterWriting,
    abortTransport,
    socketError,
    unregisterProducer,
)

__all__ = [
    "Relay",
    "RelayDirection",
    "IdleWatch",
    "UpstreamProtocol",
    "UPSTREAM_FACTORY",
]

log = Logger()


class _Holding:
    """
    An upstream's handler between its connection and the relay: it keeps
    what arrives, for L{socksd.server.relay.startRelay} to replay.
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
        bytes in flight.  (A reset the reactor reported as a hang-up is
        a loss, not an EOF: see L{socketError}.)"""
        if not self.ended:
            self.ended = True
            error = socketError(self.source)
            if error is not None:
                self.relay._lost(self, Failure(ConnectionLost(error.strerror)))
                abortTransport(self.source)
                return
            self.relay._readEnded(self)

    def writeConnectionLost(self) -> None:
        """Writing to the source was shut down; the other direction knows."""

    def connectionLost(self, reason: Failure) -> None:
        """The source's connection is gone: close the sink's (with an EOF,
        or a reset if the loss was not clean)."""
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
            unregisterProducer(transport)
            abortTransport(transport)

    def _readEnded(self, direction: RelayDirection) -> None:
        """C{direction}'s source sent EOF."""
        if self.closed:
            return
        sink = direction.sink
        # The source was the sink's producer; it produces nothing more, and
        # a paused producer would hold the half-close up.
        unregisterProducer(sink)
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
            unregisterProducer(transport)
            transport.loseConnection()

    def _lost(self, direction: RelayDirection, reason: Failure) -> None:
        """
        C{direction}'s source connection is gone: close its sink after
        what it holds, with an EOF for a clean loss, else a reset.
        """
        if self.closed:
            self._stopIdleTimer()
            return
        self.closed = True
        self._stopIdleTimer()
        clean = reason.check(ConnectionDone) is not None
        if self._record is not None and not clean:
            side = "client" if direction is self.up else "destination"
            self._record.setReason(
                f"{side} connection lost: {reason.getErrorMessage()}"
            )
        sink = direction.sink
        unregisterProducer(direction.source)
        unregisterProducer(sink)
        if clean:
            sink.loseConnection()
        else:
            # What the sink holds is delivered, then the connection reset:
            # the other side's end was not clean, and so is this one's.
            abortAfterWriting(sink, self._reactor)
