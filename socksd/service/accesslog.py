"""
C{--access-log PATH}: one JSON object per line for every finished
connection, refusals included (the fields: L{socksd.server._log.accessRecord}
and docs/deployment.rst).

L{AccessLog} is given to the factory (its C{accessLog}); the connection
hands it each record as it closes, and it keeps the lines and writes them in
batches: when L{FLUSH_BYTES} are waiting, or L{FLUSH_INTERVAL} seconds after
the first line of a batch, and when the service stops, so a busy server makes
one C{write()} for many records, never one per record.  C{-} is the standard
output.  SIGUSR1 reopens the file (after logrotate renamed it; the handler
twistd had for SIGUSR1, which rotates twistd's own log file, still runs).

With C{--workers}, a worker's factory gets a L{WorkerAccessLog} instead: it
writes each record as one line of the worker's standard output (the pipe its
parent already reads for its log lines and metrics reports), marked with
L{ACCESS_LINE}; the parent's L{socksd.service.workers.WorkersService} hands
each complete line to its own L{AccessLog} (L{AccessLog.writeLine}), so
every worker's records reach one file, whole, from one writer.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable

from twisted.application import service
from twisted.logger import Logger

from socksd.server._log import accessLine

__all__ = [
    "AccessLog",
    "WorkerAccessLog",
    "ACCESS_LINE",
    "FLUSH_INTERVAL",
    "FLUSH_BYTES",
    "recordLine",
]

log = Logger()

#: Seconds a record may wait in memory before it is written.
FLUSH_INTERVAL = 0.25
#: Bytes of records that are written at once, without waiting.
FLUSH_BYTES = 64 * 1024
#: Bytes of records kept while the file cannot be written to; more are
#: dropped (and counted in the log).
MAX_PENDING = 16 * 1024 * 1024

#: How a worker's output line that carries an access record begins; the
#: rest is the record, a JSON object.
ACCESS_LINE = b"%socksd-access "


def recordLine(record: Any, now: float) -> bytes:
    """
    The access-log line of the connection C{record} describes (a
    L{socksd.server._log.ConnectionRecord}), newline included.
    """
    return accessLine(record, now).encode("ascii")


class AccessLog(service.Service):
    """
    The access log of C{--access-log}: see the module docstring.

    @ivar path: the file's path, or C{"-"} for the standard output.
    """

    def __init__(
        self,
        path: str,
        reactor: Any,
        interval: float = FLUSH_INTERVAL,
        limit: int = FLUSH_BYTES,
        stdout: Any = None,
    ) -> None:
        """
        @param path: the file (created if missing, appended to), or C{"-"}.
        @param interval: see L{FLUSH_INTERVAL}.
        @param limit: see L{FLUSH_BYTES}.
        @param stdout: the binary stream C{"-"} writes to (the process's
            standard output by default).
        """
        self.path = path
        self._reactor = reactor
        self._interval = interval
        self._limit = limit
        self._stdout = stdout
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._size = 0
        self._timer: Any = None
        self._failing = False
        self._dropped = 0
        self._previousHandler: Any = None

    # The file

    def open(self) -> None:
        """
        Open the file (or take the standard output).

        @raise OSError: it cannot be opened.
        """
        if self.path == "-":
            stream = self._stdout if self._stdout is not None else sys.stdout.buffer
            self._fd = stream.fileno()
            return
        self._fd = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640
        )

    def reopen(self) -> None:
        """
        Write what is waiting, close the file and open its path again (a
        new file, after logrotate renamed the old one).
        """
        self.flush()
        if self.path == "-":
            return
        old, self._fd = self._fd, None
        try:
            self.open()
        except OSError as error:
            self._fd = old
            log.error(
                "cannot reopen the access log {path}: {error}; still writing"
                " to the file that was open",
                path=self.path,
                error=error,
            )
            return
        if old is not None:
            os.close(old)
        log.info("reopened the access log {path}", path=self.path)

    def close(self) -> None:
        """Write what is waiting, and close the file."""
        self.flush()
        fd, self._fd = self._fd, None
        if fd is not None and self.path != "-":
            os.close(fd)

    # Records

    def write(self, record: Any, now: float) -> None:
        """
        Keep the access record of a finished connection, for the next batch
        (what the factory calls: see L{socksd.server.SocksServerFactory}).
        """
        self.writeLine(recordLine(record, now))

    def writeLine(self, line: bytes) -> None:
        """
        Keep one line (a record, newline included; from a worker), for the
        next batch.
        """
        if self._size + len(line) > MAX_PENDING:
            self._dropped += 1
            return
        self._pending.append(line)
        self._size += len(line)
        if self._size >= self._limit:
            self.flush()
        elif self._timer is None:
            self._timer = self._reactor.callLater(self._interval, self._flushLater)

    def _flushLater(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write every waiting line now, in one C{write()} if it takes them."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if not self._pending or self._fd is None:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except BlockingIOError:
            # A non-blocking standard output that is full: the rest waits.
            self._pending.append(data)
            self._size = len(data)
            if self._timer is None:
                self._timer = self._reactor.callLater(self._interval, self._flushLater)
            return
        except OSError as error:
            lost = data.count(b"\n") + self._dropped
            self._dropped = 0
            if not self._failing:
                self._failing = True
                log.error(
                    "cannot write to the access log {path}: {error};"
                    " {lost} records lost",
                    path=self.path,
                    error=error,
                    lost=lost,
                )
            return
        if self._failing:
            self._failing = False
            log.info("writing to the access log {path} again", path=self.path)
        if self._dropped:
            log.error(
                "the access log {path} fell behind: {lost} records lost",
                path=self.path,
                lost=self._dropped,
            )
            self._dropped = 0

    # The service

    def startService(self) -> None:
        """
        Open the file, and reopen it on SIGUSR1.

        @raise StartupError: the file cannot be opened (one line for the
            operator, no traceback).
        """
        if self._fd is None:
            try:
                self.open()
            except OSError as error:
                from socksd.service.listen import StartupError, reportStartupErrors

                reportStartupErrors()
                message = (
                    f"--access-log {self.path}: cannot write: "
                    f"{error.strerror or error}"
                )
                log.error("{message}", message=message)
                raise StartupError(message) from None
        super().startService()
        previous = signal.getsignal(signal.SIGUSR1)
        self._previousHandler = previous

        def reopenOnSignal(number: int, frame: Any) -> None:
            self._reactor.callFromThread(self.reopen)
            if callable(previous):
                previous(number, frame)

        signal.signal(signal.SIGUSR1, reopenOnSignal)

    def stopService(self) -> Any:
        """Write what is waiting, close the file, and give SIGUSR1 back."""
        super().stopService()
        previous, self._previousHandler = self._previousHandler, None
        if previous is not None:
            signal.signal(signal.SIGUSR1, previous)
        self.close()
        return None


class WorkerAccessLog:
    """
    A worker's access log: each record goes to the parent as one line of
    the worker's standard output (L{ACCESS_LINE}, then the record), which
    is flushed within L{FLUSH_INTERVAL} seconds.
    """

    def __init__(
        self, stream: Any, reactor: Any, interval: float = FLUSH_INTERVAL
    ) -> None:
        """
        @param stream: the worker's standard output, a text stream.
        """
        self._stream = stream
        self._reactor = reactor
        self._interval = interval
        self._timer: Any = None
        self._prefix = ACCESS_LINE.decode("ascii")

    def write(self, record: Any, now: float) -> None:
        """See L{AccessLog.write}."""
        self._stream.write(self._prefix + accessLine(record, now))
        if self._timer is None:
            self._timer = self._reactor.callLater(self._interval, self.flush)

    def flush(self) -> None:
        """Send what was written now."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self._stream.flush()


def openable(path: str, opener: Callable[..., int] = os.open) -> str | None:
    """
    Why the access log at C{path} cannot be opened for appending, or
    L{None} when it can (C{"-"} always can).  The file is created if it was
    missing, as the server would.
    """
    if path == "-":
        return None
    try:
        fd = opener(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as error:
        return error.strerror or str(error)
    os.close(fd)
    return None
