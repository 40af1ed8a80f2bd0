"""
What the relays know about Twisted's transports beyond their interfaces.

The relays and the connection look inside Twisted's plain TCP transports
(C{tcp.Server}, C{tcp.Client}) and listening ports for speed: to send a
reply at once rather than after a turn of the reactor (L{writeNow}), to
take a socket over for splice(2) (L{takeBuffered}, L{TakenSocket},
L{closeNow}), to reset a connection once what it holds is delivered
(L{abortAfterWriting}), to tell a reset reported as a hang-up from an EOF
(L{socketError}), to accept one connection at a time
(L{acceptOneAtATime}), and to report a listening port's accept failures
elsewhere (L{redirectAcceptLog}).  Those reads and writes of Twisted's
private or undocumented attributes (C{_tempDataBuffer}, C{dataBuffer},
C{offset}, C{_writeDisconnecting}, C{_writeDisconnected},
C{_shouldShutdown}, C{socket}, C{reactor}, C{doRead}/C{doWrite},
C{numberAccepts}, C{_logger} ...) are all here, so that a change in
Twisted is met in this one module.  The helpers that only use the
transport interfaces (L{setNoDelay}, L{abortTransport},
L{boundDestination}) live here too.
"""

from __future__ import annotations

import os
import socket
import sys
from ipaddress import IPv4Address, ip_address
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from socksd.address import Destination

__all__ = [
    "boundDestination",
    "setNoDelay",
    "abortTransport",
    "abortAfterWriting",
    "socketError",
    "unsentBytes",
    "ABORT_GRACE",
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
    "redirectAcceptLog",
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


def socketError(transport: Any) -> OSError | None:
    """
    Take the error C{transport}'s socket holds (C{SO_ERROR}), if any: a
    reset the reactor reported as a hang-up.

    Out of a hang-up event (C{EPOLLHUP}) without data to read, Twisted
    reports the end of a socket's reading as an EOF; but a reset racing
    with the reactor's look at the socket shows as such a hang-up too
    (the kernel marks the socket closed before it marks it shut for
    reading).  The reset's error is set before either, so an end with an
    error here was a reset, not an EOF.  C{transport} is a plain TCP one,
    or anything with its C{socket} (socksd's client tunnel); others have
    none to look at.

    @return: the error, or L{None}.
    """
    sock = getattr(transport, "socket", None)
    if sock is None:
        return None
    try:
        code = sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
    except (OSError, AttributeError, TypeError):
        return None
    if not code:
        return None
    return OSError(code, os.strerror(code))


_SOL_SOCKET = socket.SOL_SOCKET
_SO_ERROR = socket.SO_ERROR


#: Seconds L{abortAfterWriting} waits, at most, for a transport's bytes to
#: be delivered before it resets the connection anyway (a peer that reads
#: nothing would otherwise hold it forever).
ABORT_GRACE = 5.0

#: The C{ioctl} that tells how many bytes a socket's send queue holds, not
#: yet acknowledged by the peer (Linux's C{SIOCOUTQ}, also C{TIOCOUTQ});
#: L{None} where unknown.
_SIOCOUTQ: int | None = 0x5411 if sys.platform.startswith("linux") else None


def _lowestConnection(transport: Any) -> Any:
    """
    The socket transport (Twisted's C{tcp.Connection}: TCP, or a UNIX
    socket) under C{transport}: itself, or what a TLS layer, a protocol
    wrapper (PROXY protocol) or socksd's client tunnel
    (L{socksd.client.TunnelTransport}, through C{proxyTransport}) runs
    over; L{None} when there is none (an in-memory transport).
    """
    from twisted.internet import tcp

    for _ in range(16):
        if isinstance(transport, tcp.Connection):
            return transport
        inner = getattr(transport, "proxyTransport", None)
        if inner is None:
            inner = getattr(transport, "transport", None)
        if inner is None or inner is transport:
            return None
        transport = inner
    return None


def unsentBytes(connection: Any) -> int:
    """
    How many bytes the socket transport C{connection} (a C{tcp.Connection})
    still has to deliver: what it buffers, plus (on Linux) what its
    socket's send queue holds that the peer has not acknowledged.
    """
    count = len(connection.dataBuffer) - connection.offset + connection._tempDataLen
    if _SIOCOUTQ is not None:
        import fcntl
        import struct

        try:
            queued = fcntl.ioctl(connection.socket.fileno(), _SIOCOUTQ, b"\0\0\0\0")
            count += struct.unpack("i", queued)[0]
        except (OSError, ValueError):
            pass
    return count


class _AbortWhenWritten:
    """
    The wait of one L{abortAfterWriting}: look at the connection's unsent
    bytes, more and more rarely (from a millisecond to 50 ms between
    looks); reset it once they are delivered, or at the deadline.
    """

    __slots__ = ("transport", "connection", "reactor", "deadline", "delay")

    def __init__(self, transport: Any, connection: Any, reactor: Any, grace: float) -> None:
        self.transport = transport
        self.connection = connection
        self.reactor = reactor
        self.deadline = reactor.seconds() + grace
        self.delay = 0.001

    def check(self) -> None:
        connection = self.connection
        if connection.disconnected or not connection.connected:
            return
        try:
            unsent = unsentBytes(connection)
        except Exception:
            unsent = 0
        if unsent <= 0 or self.reactor.seconds() >= self.deadline:
            abortTransport(self.transport)
            return
        self.reactor.callLater(self.delay, self.check)
        self.delay = min(self.delay * 2, 0.05)


def abortAfterWriting(transport: Any, reactor: Any, grace: float | None = None) -> None:
    """
    Reset C{transport}'s connection (RST, as C{abortConnection} does) once
    the bytes written to it are delivered: the other side of a tunnel was
    lost abnormally, and this peer is to get everything that came before,
    then learn that the end was not clean (a clean EOF would make a
    download cut short look complete).

    Nothing more is read from C{transport}.  Its buffered bytes are written
    as usual; the connection is reset once none is left unacknowledged in
    its socket (with C{SO_LINGER} 0 the kernel would drop them), or after
    C{grace} seconds.  A transport with no socket under it (in memory) is
    aborted at once.

    @param reactor: an C{IReactorTime}, for the wait.
    @param grace: the longest wait, in seconds; L{None}: L{ABORT_GRACE}.
    """
    connection = _lowestConnection(transport)
    if connection is None or not connection.connected or connection.disconnected:
        abortTransport(transport)
        return
    if connection.disconnecting and not connection._writeDisconnected:
        # Twisted asked for a clean close itself: a transport that is lost
        # stops its producer, which was this one (the relay's backpressure),
        # and a stopped transport closes once its buffer is written.  Take
        # that back; the reset below ends the connection.
        connection.disconnecting = False
    try:
        connection.stopReading()
    except Exception:
        pass
    if grace is None:
        grace = ABORT_GRACE
    _AbortWhenWritten(transport, connection, reactor, grace).check()


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


def redirectAcceptLog(port: Any, observer: Any) -> bool:
    """
    Send the events the listening C{port} (Twisted's C{tcp.Port} or
    C{unix.Port}) logs about its accept loop (C{"Could not accept new
    connection (EMFILE)"}, the C{EMFILE} recovery's) to C{observer}, an
    C{ILogObserver}, instead of the global log publisher.

    Twisted's port builds the logger of each accept loop from its own
    C{_logger}'s namespace and observer: this gives the port its own
    logger, with the same namespace and C{observer}.

    @return: C{False}, changing nothing, when C{port} is not such a port.
    """
    from twisted.internet import tcp
    from twisted.logger import Logger

    if not isinstance(port, tcp.Port):
        return False
    current = getattr(port, "_logger", None)
    namespace = getattr(current, "namespace", None) or type(port).__module__
    port._logger = Logger(namespace=namespace, source=port, observer=observer)
    return True
