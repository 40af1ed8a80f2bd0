"""
What the relays know about Twisted's transports beyond their interfaces.

The relays and the connection look inside Twisted's plain TCP transports
(C{tcp.Server}, C{tcp.Client}) and listening ports for speed: to send a
reply at once rather than after a turn of the reactor (L{writeNow}), to
take a socket over for splice(2) (L{takeBuffered}, L{TakenSocket},
L{closeNow}), to accept one connection at a time
(L{acceptOneAtATime}).  Those reads and writes of Twisted's private or
undocumented attributes (C{_tempDataBuffer}, C{dataBuffer}, C{offset},
C{_writeDisconnecting}, C{_writeDisconnected}, C{_shouldShutdown},
C{socket}, C{reactor}, C{doRead}/C{doWrite}, C{numberAccepts} ...) are all
here, so that a change in Twisted is met in this one module.  The helpers
that only use the transport interfaces (L{setNoDelay}, L{abortTransport},
L{boundDestination}) live here too.
"""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from socksd.address import Destination

__all__ = [
    "boundDestination",
    "setNoDelay",
    "abortTransport",
    "tcpTransports",
    "openPlainTcp",
    "plainTcpOf",
    "writeNow",
    "unregisterProducer",
    "takeBuffered",
    "TakenSocket",
    "closeNow",
    "stopAccepting",
    "acceptOneAtATime",
]

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


def plainTcpOf(transport: Any, reactor: Any) -> bool:
    """
    C{transport} is an open, plain TCP transport (L{openPlainTcp}) of
    C{reactor}, with no producer registered.
    """
    return (
        openPlainTcp(transport)
        and transport.reactor is reactor
        and transport.producer is None
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


def unregisterProducer(transport: Any) -> None:
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


def takeBuffered(transport: Any) -> bytes:
    """
    Take the bytes plain TCP C{transport} was given but has not written
    yet.
    """
    pending = transport.dataBuffer[transport.offset :]
    if transport._tempDataBuffer:
        pending = bytes(pending) + b"".join(transport._tempDataBuffer)
    transport.dataBuffer = b""
    transport.offset = 0
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    return bytes(pending)


#: How L{closeNow} closes transports (one instance, as the reactor shares
#: its own).
_CLOSED = Failure(ConnectionDone("Connection done"))


def closeNow(transport: Any) -> None:
    """
    Close plain TCP C{transport} at once, as the reactor would after
    C{loseConnection} with nothing left to write, and without the
    C{shutdown()} before C{close()}: for a socket that has sent and
    received its EOF already.
    """
    if transport.connected and not transport.disconnected:
        transport._shouldShutdown = False
        transport.connectionLost(_CLOSED)


class TakenSocket:
    """
    One socket of a L{SpliceRelay <socksd.server.relay.splice.SpliceRelay>}.
    While the relay owns it, its
    transport stays registered with the reactor, but the transport's
    C{doRead} and C{doWrite} are the relay's: readable means the direction
    this socket feeds may read; writable means the direction that drains
    into it may write.

    @ivar reading: the transport is registered for reading.
    @ivar writing: the transport is registered for writing.
    """

    __slots__ = ("transport", "fd", "sock", "feeds", "drains", "reading", "writing")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.sock = transport.socket
        self.fd = transport.fileno()
        self.feeds: Any = None
        self.drains: Any = None
        self.reading = False
        self.writing = False

    def takeOver(self, reactor: Any, read: bool) -> None:
        """
        Send the transport's reactor events to the relay: its C{doRead}
        and C{doWrite} become the relay's (as Twisted's own
        C{abortConnection} replaces them), so the registration it already
        has serves the relay with no change.
        """
        transport = self.transport
        transport.doRead = self.feeds.readable
        transport.doWrite = self.drains.writable
        reactor.removeWriter(transport)
        if read:
            reactor.addReader(transport)
        else:
            reactor.removeReader(transport)
        self.reading = read
        self.writing = False

    def giveBack(self, reactor: Any) -> None:
        """Unregister the transport, and give it back its own C{doRead}
        and C{doWrite}."""
        transport = self.transport
        if self.reading:
            self.reading = False
            reactor.removeReader(transport)
        if self.writing:
            self.writing = False
            reactor.removeWriter(transport)
        state = vars(transport)
        state.pop("doRead", None)
        state.pop("doWrite", None)


def stopAccepting(port: Any) -> None:
    """Have the listening C{port} accept nothing (it stays listening)."""
    port.stopReading()


def acceptOneAtATime(port: Any) -> None:
    """
    Have the listening C{port} accept again, one connection per readiness
    event, so that the others stay queued.
    """
    port.numberAccepts = 1
    port.startReading()
