"""
A zero-copy relay for the common case: both legs of a tunnel are plain TCP
sockets of a readiness-based reactor (epoll, poll, select) on Linux.

After the handshake, L{SpliceRelay} takes the two sockets over from their
Twisted transports (which hand over the bytes they still held) and moves
each direction's bytes itself.  A direction without a pipe reads up to
L{BURST_READ} bytes into Python and sends them on: a message costs two
system calls either way, and needs no pipe.  A read that fills
L{BURST_READ} is a stream in full flow: the direction takes a pipe and moves
the bytes with splice(2), socket to pipe to socket, so they never enter
Python, reading again at once (up to L{BURST} times per readiness event)
while reads stay large, and gives the pipe back when the stream pauses with
the pipe drained.  It keeps the ordinary relay's
(L{socksd.server.relay.stream.Relay}) behaviour:

  - Backpressure: a direction reads from its source only while it holds
    nothing unwritten; when the sink cannot take more, the direction waits
    for the sink to be writable before reading again.
  - Half-close: when the source ends, the sink's writing is shut down
    (C{SHUT_WR}) once everything before the EOF is written, and the other
    direction goes on; when both have ended, both connections are closed.
  - Byte accounting: C{byteCounts()}, as the ordinary relay, for the
    connection's log event.
  - Teardown: both transports are closed through Twisted, so each protocol's
    C{connectionLost} runs and the connection's log event is emitted.  When
    one side is lost abnormally (a reset, an error), what was on its way to
    the other side (pending, or in the pipe) goes back into the other's
    Twisted transport, which resets the connection once it is delivered
    (L{socksd.server.relay._transport.abortAfterWriting}), as the ordinary
    relay does.
  - Idle timeout: the same periodic check of the byte counters.

Each socket gets one L{TakenSocket}.  The transports stay registered with
the reactor as they were (so the takeover costs no registration change);
their C{doRead} and C{doWrite} are pointed at the relay's directions
(L{socksd.server.relay._transport.TakenSocket}), and
the reactor's C{addReader}/C{addWriter} on the transports say which events
the relay wants.  When both directions have ended, both transports are
closed at once (C{connectionLost}, as the reactor would after
C{loseConnection}, without waiting a turn of the reactor with nothing to
write).

Pipes come from a small per-process pool of empty pipes (L{poolSize} at
most); a new one is created, and sized with C{F_SETPIPE_SZ} (1 MiB, or what
the system allows), only when the pool is empty, so a busy process seldom
creates one, and an idle tunnel holds none.  A pipe that may still hold
bytes (a relay torn down mid-transfer) is closed, never pooled.

L{spliceSupported} says whether two transports and a reactor allow all this;
L{socksd.server.relay.startRelay} asks it and falls back to the ordinary
relay otherwise.
"""

from __future__ import annotations

import errno
import os
import socket
import sys

try:
    import fcntl
except ImportError:  # pragma: no cover (not POSIX)
    fcntl = None  # type: ignore[assignment]
from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.server.relay._transport import (
    abortAfterWriting,
    closeNow,
    socketError,
    plainTcpOf,
    TakenSocket,
    setNoDelay,
    takeBuffered,
)
from socksd.server.relay.stream import IdleWatch, _Holding
from socksd.upstream.direct import readinessReactors

__all__ = [
    "SpliceRelay",
    "spliceSupported",
    "trySplice",
    "PIPE_SIZE",
    "POOL_SIZE",
    "poolSize",
]

log = Logger()

#: The pipe size asked for with C{F_SETPIPE_SZ}.
PIPE_SIZE = 1 << 20

#: How many reads one readiness event may make, while each read moves at
#: least L{BURST_READ} bytes and the sink takes them all.
BURST = 8

#: A direction without a pipe reads up to this much into Python; a read
#: that fills it takes a pipe and splices from then on, until the stream
#: pauses.
BURST_READ = 1 << 16

#: How many empty pipes a process keeps for later tunnels, at most; L{None}:
#: L{poolSize} decides from the open-file limit.
POOL_SIZE: int | None = None

_poolSize = 0


def poolSize() -> int:
    """
    How many empty pipes this process keeps, at most: L{POOL_SIZE} when set;
    else a sixteenth of the soft open-file limit (each pipe is two
    descriptors), between 64 and 256, looked up once.  Enough for the pipes
    of a few hundred tunnels being set up or torn down at once, so that a
    busy server seldom creates a pipe.
    """
    global _poolSize
    if POOL_SIZE is not None:
        return POOL_SIZE
    if not _poolSize:
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if soft == resource.RLIM_INFINITY:
                soft = 1 << 20
        except (ImportError, ValueError, OSError):  # pragma: no cover
            soft = 1024
        _poolSize = max(64, min(256, soft // 16))
    return _poolSize

#: The empty pipes kept for reuse: C{(readEnd, writeEnd, size)}.
_pool: list[tuple[int, int, int]] = []

_F_SETPIPE_SZ = 1031
_F_GETPIPE_SZ = 1032


def cffiSplice() -> Any:
    """
    C{os.splice}'s stand-in where the C{os} module lacks it (PyPy): libc's
    splice(2) called through cffi (PyPy ships it, and its JIT makes the
    call cheap), with C{os.splice}'s arguments and its C{OSError}s; no
    offsets (sockets and pipes have none).

    @return: the function, or L{None} off Linux or without cffi.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        from cffi import FFI
    except ImportError:
        return None
    ffi = FFI()
    ffi.cdef(
        "ssize_t splice(int fd_in, void *off_in, int fd_out, void *off_out,"
        " size_t len, unsigned int flags);"
    )
    try:
        call = ffi.dlopen(None).splice
    except (OSError, AttributeError):  # pragma: no cover (a libc without it)
        return None
    null = ffi.NULL

    def splice(src: int, dst: int, count: int, flags: int = 0) -> int:
        moved: int = call(src, null, dst, null, count, flags)
        if moved < 0:
            code = ffi.errno
            raise OSError(code, os.strerror(code))
        return moved

    return splice


_SPLICE = getattr(os, "splice", None) or cffiSplice()
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)

#: Which relays this process announced already (C{True}: splice).
_announced: set[bool] = set()


def spliceSupported(clientTransport: Any, upstreamTransport: Any, reactor: Any) -> bool:
    """
    Tell whether L{SpliceRelay} can join these two transports: splice(2)
    can be called (Linux: C{os.splice}, or L{cffiSplice} on PyPy), both
    are plain, open TCP transports (C{tcp.Server} or C{tcp.Client}, not
    TLS, not PROXY-protocol wrappers, not UNIX sockets) of C{reactor}, and
    C{reactor} is epoll, poll or select based.
    """
    if _SPLICE is None:
        return False
    if not isinstance(reactor, readinessReactors()):
        return False
    return plainTcpOf(clientTransport, reactor) and plainTcpOf(upstreamTransport, reactor)


def announce(used: bool, why: str) -> None:
    """Log, once per process and kind, which relay tunnels use."""
    if used in _announced:
        return
    _announced.add(used)
    if used:
        log.info("tunnels are relayed with splice(2) (zero-copy)")
    else:
        log.info("tunnels use the ordinary relay: {why}", why=why)


class _SpliceDirection:
    """
    One direction: bytes from C{source}'s socket to C{sink}'s, through a
    pipe, after C{pending} (bytes that must go first).

    @ivar count: the bytes relayed (read from the source, plus the early
        bytes counted as the ordinary relay counts them).
    @ivar ended: the source sent EOF.
    @ivar done: EOF passed on to the sink (or nothing more will move).
    """

    __slots__ = (
        "relay",
        "source",
        "sink",
        "pending",
        "pipeRead",
        "pipeWrite",
        "pipeSize",
        "inPipe",
        "count",
        "ended",
        "done",
    )

    def __init__(
        self, relay: SpliceRelay, source: TakenSocket, sink: TakenSocket
    ) -> None:
        self.relay = relay
        self.source = source
        self.sink = sink
        self.pending = b""
        self.pipeRead = -1
        self.pipeWrite = -1
        self.pipeSize = 0
        self.inPipe = 0
        self.count = 0
        self.ended = False
        self.done = False
        source.feeds = self
        sink.drains = self

    def _openPipe(self) -> None:
        """Take an empty pipe from the pool, or create one."""
        if _pool:
            self.pipeRead, self.pipeWrite, self.pipeSize = _pool.pop()
            return
        readEnd, writeEnd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pipeRead, self.pipeWrite = readEnd, writeEnd
        size = 65536
        if fcntl is not None:
            try:
                fcntl.fcntl(writeEnd, _F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass
            try:
                size = fcntl.fcntl(writeEnd, _F_GETPIPE_SZ)
            except OSError:
                pass
        self.pipeSize = size

    def _poolPipe(self) -> None:
        """The pipe is empty: give it back to the pool (or close it)."""
        if self.pipeWrite >= 0:
            if len(_pool) < poolSize():
                _pool.append((self.pipeRead, self.pipeWrite, self.pipeSize))
                self.pipeRead = self.pipeWrite = -1
            else:
                self.closePipe()

    def closePipe(self) -> None:
        """Close the pipe, which may still hold bytes."""
        for fd in (self.pipeRead, self.pipeWrite):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.pipeRead = self.pipeWrite = -1
        self.inPipe = 0

    def start(self) -> None:
        """Write what must go first, then read (or pass EOF on)."""
        self._drain()

    def readable(self) -> None:
        """The source has bytes (or EOF, or an error)."""
        relay = self.relay
        if relay.closed or self.ended:
            relay._wantRead(self.source, False)
            return
        if self.pipeWrite < 0:
            # No pipe: read a message into Python and send it on (a small
            # read costs two system calls either way, and needs no pipe).
            # A read that fills BURST_READ is a stream in full flow: take a
            # pipe and splice the rest.
            try:
                data = self.source.sock.recv(BURST_READ)
            except OSError as error:
                if error.errno not in _AGAIN:
                    relay._socketError(self.source, error)
                return
            if not data:
                self.sourceEnded()
                return
            self.count += len(data)
            if self.pending:
                self.pending += data
            else:
                self.pending = data
            if not self._drain() or len(data) < BURST_READ or relay.closed:
                return
            self._openPipe()
        fd = self.source.fd
        # While reads are large, read again at once (up to BURST times)
        # rather than after a turn of the reactor.
        for _ in range(BURST):
            try:
                moved = _SPLICE(fd, self.pipeWrite, self.pipeSize, flags=_FLAGS)
            except OSError as error:
                if error.errno not in _AGAIN:
                    relay._socketError(self.source, error)
                    return
                break
            if moved == 0:
                self.sourceEnded()
                return
            self.inPipe += moved
            self.count += moved
            if not self._drain() or relay.closed:
                return
            if moved < BURST_READ:
                break
        else:
            # Still in full flow: keep the pipe for the next read.
            return
        # The stream paused (or the source is drained): an idle tunnel
        # holds no pipe.
        self._poolPipe()

    def sourceEnded(self) -> None:
        """The source sent EOF: stop reading it, and pass the EOF on after
        what is still to be written."""
        self.ended = True
        self.relay._wantRead(self.source, False)
        self._drain()

    def writable(self) -> None:
        """The sink can take bytes again."""
        if self.relay.closed:
            self.relay._wantWrite(self.sink, False)
            return
        if self._drain() and not self.inPipe and not self.relay.closed:
            self._poolPipe()

    def _drain(self) -> bool:
        """
        Move what is pending and in the pipe to the sink; then pass EOF on,
        or read again.

        @return: C{True} when everything was written.
        """
        relay = self.relay
        sink = self.sink
        try:
            while self.pending:
                sent = sink.sock.send(self.pending)
                self.pending = self.pending[sent:]
            while self.inPipe:
                moved = _SPLICE(self.pipeRead, sink.fd, self.inPipe, flags=_FLAGS)
                self.inPipe -= moved
        except OSError as error:
            if error.errno in _AGAIN:
                relay._wantRead(self.source, False)
                relay._wantWrite(sink, True)
                return False
            relay._socketError(sink, error)
            return False
        # (The registration flags are tested here first: this runs for
        # every message.)
        if sink.writing:
            relay._wantWrite(sink, False)
        if self.ended:
            self._finish()
        elif not self.source.reading and not relay.closed:
            relay._wantRead(self.source, True)
        return True

    def takeHeld(self) -> bytes:
        """
        Take what is still to be written to the sink: the pending bytes,
        then the pipe's (read into Python: at most the pipe's size).
        """
        chunks = [self.pending]
        self.pending = b""
        while self.inPipe > 0:
            try:
                data = os.read(self.pipeRead, self.inPipe)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
            self.inPipe -= len(data)
        self.inPipe = 0
        return b"".join(chunks)

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.inPipe:
            self.closePipe()
        else:
            self._poolPipe()
        self.relay._directionDone(self)


class _Watch:
    """A protocol's handler while the splice relay owns its socket: it
    notices the connection's loss (after the relay closed it)."""

    __slots__ = ("relay", "side")

    def __init__(self, relay: SpliceRelay, side: TakenSocket) -> None:
        self.relay = relay
        self.side = side

    def dataReceived(self, data: bytes) -> None:
        """Not expected: the transport does not read while spliced."""
        self.relay._early(self.side, data)

    def readConnectionLost(self) -> None:
        """The reactor saw the socket hang up while it was registered for
        reading (and unregistered it): the source ended."""
        self.relay._hungUp(self.side)

    def writeConnectionLost(self) -> None:
        """Not expected."""

    def connectionLost(self, reason: Failure) -> None:
        """The transport is gone."""
        self.relay._lost(self.side, reason)


class SpliceRelay(IdleWatch):
    """
    Two plain TCP transports joined with C{os.splice}: see the module
    docstring.  Build it only when L{spliceSupported} says so.

    @ivar up: the client-to-destination direction.
    @ivar down: the destination-to-client direction.
    @ivar closed: C{True} once the relay closed both connections or one was
        lost.
    """

    __slots__ = (
        "up",
        "down",
        "closed",
        "_client",
        "_upstream",
        "_reactor",
        "_record",
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
        @param reactor: the reactor both transports belong to.
        @param idleTimeout: seconds of silence before closing, or L{None}.
        @param record: the connection's log record, or L{None}.
        """
        self._reactor = reactor
        self._record = record
        self._idleTimeout = idleTimeout
        self._idleCall: Any = None
        self._lastCount = -1
        self.closed = False
        self._client = TakenSocket(clientTransport)
        self._upstream = TakenSocket(upstreamTransport)
        self.up = _SpliceDirection(self, self._client, self._upstream)
        self.down = _SpliceDirection(self, self._upstream, self._client)

    def byteCounts(self) -> tuple[int, int]:
        """The bytes relayed so far: (client to destination, destination to client)."""
        return self.up.count, self.down.count

    def start(
        self,
        client: Any,
        upstream: Any,
        initialData: bytes,
        early: list[bytes],
        clientEnded: bool,
        upstreamEnded: bool,
    ) -> None:
        """
        Take both sockets over and start moving bytes.

        @param client: the client's protocol (its C{handler} is replaced).
        @param upstream: the destination's protocol (likewise).
        @param initialData: the client's optimistic data.
        @param early: what the destination sent before the relay started.
        """
        self.down.pending = takeBuffered(self._client.transport) + b"".join(early)
        self.down.count = sum(map(len, early))
        self.up.pending = takeBuffered(self._upstream.transport) + initialData
        self.up.count = len(initialData)
        self.up.ended = clientEnded
        self.down.ended = upstreamEnded
        client.handler = _Watch(self, self._client)
        upstream.handler = _Watch(self, self._upstream)
        reactor = self._reactor
        self._client.takeOver(reactor, not clientEnded)
        self._upstream.takeOver(reactor, not upstreamEnded)
        self.up.start()
        if not self.closed:
            self.down.start()
        self._startIdleTimer()

    # The reactor registrations.

    def _wantRead(self, side: TakenSocket, want: bool) -> None:
        if want and self.closed:
            return
        if want != side.reading:
            side.reading = want
            try:
                if want:
                    self._reactor.addReader(side.transport)
                else:
                    self._reactor.removeReader(side.transport)
            except OSError:
                pass

    def _wantWrite(self, side: TakenSocket, want: bool) -> None:
        if want and self.closed:
            return
        if want != side.writing:
            side.writing = want
            try:
                if want:
                    self._reactor.addWriter(side.transport)
                else:
                    self._reactor.removeWriter(side.transport)
            except OSError:
                pass

    def _release(self) -> None:
        """Give both transports back (unregistered) and close the pipes."""
        reactor = self._reactor
        for side in (self._client, self._upstream):
            try:
                side.giveBack(reactor)
            except OSError:
                pass
        self.up.closePipe()
        self.down.closePipe()

    # Endings.

    def _directionDone(self, direction: _SpliceDirection) -> None:
        """C{direction}'s source ended and its pipe is drained."""
        if self.closed:
            return
        other = self.down if direction is self.up else self.up
        if other.done:
            self._closeBoth()
            return
        try:
            direction.sink.sock.shutdown(socket.SHUT_WR)
        except OSError as error:
            self._socketError(direction.sink, error)

    def _closeBoth(self) -> None:
        """Both directions ended: close both connections through Twisted."""
        self.closed = True
        if self._record is not None:
            # Both sockets are shut down both ways now, so the reactor sees
            # a hang-up on them and reports a "non-clean" loss: the tunnel
            # itself ended cleanly, and that is what the log says.
            self._record.setReason("closed")
        self._stopIdleTimer()
        self._release()
        # Nothing is left to write to either socket, so there is no need to
        # wait a turn of the reactor for it, as loseConnection does: close
        # both now, as the reactor would.  Both sockets have sent and
        # received their EOF, so close() alone ends them, without the
        # transport's shutdown() first.
        for side in (self._client, self._upstream):
            closeNow(side.transport)

    def _socketError(self, side: TakenSocket, error: OSError) -> None:
        """Reading or writing C{side}'s socket failed: the connection is
        gone; reset the other one after what was on its way to it."""
        if self.closed:
            return
        name = "client" if side is self._client else "destination"
        if self._record is not None:
            self._record.setReason(f"{name} connection lost: {error.strerror}")
        self._teardown(side)

    def _failed(self, side: TakenSocket, reason: Failure) -> None:
        if self.closed:
            return
        if not reason.check(ConnectionDone, ConnectionLost):
            log.failure("the splice relay failed", reason)
        if self._record is not None:
            self._record.setReason(f"relay failed: {reason.getErrorMessage()}")
        self._teardown(side)

    def _teardown(self, broken: TakenSocket, reset: bool = True) -> None:
        """
        C{broken}'s connection failed or is gone: abort it if it is still
        open; the other gets back, in its Twisted transport, what was on
        its way to it (pending and in the pipe), and is reset once that is
        delivered (with C{reset} false: closed with an EOF after it).
        """
        self.closed = True
        self._stopIdleTimer()
        other = self._upstream if broken is self._client else self._client
        toOther = self.up if other is self._upstream else self.down
        held = toOther.takeHeld()
        self._release()
        brokenTransport = broken.transport
        if brokenTransport.connected and not brokenTransport.disconnected:
            brokenTransport.abortConnection()
        transport = other.transport
        if held:
            transport.write(held)
        if reset:
            abortAfterWriting(transport, self._reactor)
        else:
            transport.loseConnection()

    def _hungUp(self, side: TakenSocket) -> None:
        """
        The reactor unregistered C{side}'s reading at a hang-up: the source
        ended; with an EOF, or with a reset the reactor saw as a hang-up
        (L{socksd.server.relay._transport.socketError}).
        """
        side.reading = False
        direction = side.feeds
        if self.closed or direction.ended:
            return
        error = socketError(side.transport)
        if error is not None:
            self._socketError(side, error)
            return
        direction.sourceEnded()

    def _lost(self, side: TakenSocket, reason: Failure) -> None:
        """
        A transport's C{connectionLost} ran: the other side gets what was
        on its way to it, then an EOF if the loss was clean, else a reset.
        """
        # The transport unregistered itself.
        side.reading = side.writing = False
        if self.closed:
            self._stopIdleTimer()
            return
        clean = reason.check(ConnectionDone) is not None
        if self._record is not None and not clean:
            name = "client" if side is self._client else "destination"
            self._record.setReason(
                f"{name} connection lost: {reason.getErrorMessage()}"
            )
        self._teardown(side, reset=not clean)

    def _early(self, side: TakenSocket, data: bytes) -> None:
        """A transport delivered bytes after the takeover (cannot happen
        while it is not reading): pass them on in order."""
        direction = self.up if side is self._client else self.down
        direction.count += len(data)
        if direction.inPipe:
            self._failed(side, Failure(RuntimeError("bytes out of order")))
            return
        direction.pending += data
        direction._drain()

    # The idle timeout: see IdleWatch.

    def _idle(self) -> None:
        self._release()
        for side in (self._client, self._upstream):
            side.transport.abortConnection()


def trySplice(
    client: Any,
    upstream: Any,
    reactor: Any,
    initialData: bytes = b"",
    clientEnded: bool = False,
    idleTimeout: float | None = None,
    noDelay: bool = True,
    record: Any = None,
) -> SpliceRelay | None:
    """
    Join C{client} and C{upstream} with a L{SpliceRelay} when
    L{spliceSupported} allows it, with L{socksd.server.relay.startRelay}'s
    arguments; else do nothing.

    @return: the running relay, or L{None} when the ordinary relay must be
        used.
    """
    held = upstream.handler
    if not isinstance(held, _Holding) or held.lost is not None:
        return None
    clientTransport = client.transport
    upstreamTransport = upstream.transport
    if not spliceSupported(clientTransport, upstreamTransport, reactor):
        announce(False, "the transports or the reactor do not allow splice(2)")
        return None
    announce(True, "")
    relay = SpliceRelay(
        clientTransport, upstreamTransport, reactor, idleTimeout, record
    )
    if record is not None:
        record.relay = relay
    if noDelay:
        setNoDelay(upstreamTransport)
    relay.start(client, upstream, initialData, held.data, clientEnded, held.ended)
    return relay
