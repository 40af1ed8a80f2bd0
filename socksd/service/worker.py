"""
One worker process of C{twistd socksd --workers N}
(L{socksd.service.workers}): the parent runs C{python -m
socksd.service.worker --inherit-fds 3,4} and writes the socksd options to
its standard input as one JSON line (L{readArguments}), and L{main} runs
it.

The worker builds the same service as the parent, from the same options
(with C{--inherit-fds}: it adopts the inherited listening sockets), writes
its log events as lines of JSON to its standard output for the parent to
log (L{socksd.service.jsonlog}), and drains (L{socksd.service.drain}) when
the parent sends SIGTERM or when its standard input ends (the parent is
gone); SIGUSR2 from the parent cuts the drain short.  It ignores SIGUSR1
(C{systemctl kill -s USR1} reaches every process of the unit; only the
parent reopens the access log).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

from twisted.internet import error
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.service.build import makeService
from socksd.service.jsonlog import EVENT_LINE, JSONLineObserver
from socksd.service.options import Options

__all__ = ["main"]

log = Logger()


class _ParentWatch:
    """Reads the worker's standard input: its end means the parent is
    gone, and the worker stops."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def fileno(self) -> int:
        return 0

    def logPrefix(self) -> str:
        return "parent"

    def doRead(self) -> Any:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return None
        except OSError as e:
            return Failure(e)
        if not data:
            return error.ConnectionDone("the parent is gone")
        return None

    def connectionLost(self, reason: Failure) -> None:
        try:
            self._reactor.stop()
        except error.ReactorNotRunning:
            pass


def readArguments(fd: int = 0) -> list[str]:
    """
    Read the socksd options the parent sends, as one JSON line, from
    C{fd} (standard input), a byte at a time so that nothing after the
    line is taken from the parent watch.
    """
    import json

    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    arguments = json.loads(line.decode("utf-8")) if line.strip() else []
    if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
        raise SystemExit("socksd worker: bad arguments from the parent")
    return arguments


def _start(top: Any) -> None:
    """
    Start the worker's service; then take the SIGHUPs the parent passes on
    (the worker started with SIGHUP blocked, see
    L{socksd.service.workers}): a worker that reloads rules has its
    handler now, and one held while it started is delivered to it; a
    worker with nothing to reload ignores them.
    """
    import signal

    try:
        top.startService()
    finally:
        if hasattr(signal, "SIGHUP"):
            if signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None):
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            if hasattr(signal, "pthread_sigmask"):
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run one worker: socksd's options (with C{--inherit-fds}) in C{argv}.
    """
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner
    from twisted.python import usage

    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("SOCKSD_WORKER_ARGUMENTS") == "stdin":
        argv = readArguments() + argv
    globalLogBeginner.beginLoggingTo(
        [JSONLineObserver(sys.stdout, reactor, EVENT_LINE.decode("ascii"))],
        redirectStandardIO=False,
    )
    reactor.addSystemEventTrigger("after", "shutdown", sys.stdout.flush)
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        sys.stderr.write(f"socksd worker: {e}\n")
        raise SystemExit(2)
    top = makeService(options)
    os.set_blocking(0, False)
    reactor.addReader(_ParentWatch(reactor))
    reactor.callWhenRunning(_start, top)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    log.info(
        "worker {worker} serving (pid {pid})",
        worker=os.environ.get("SOCKSD_WORKER", "?"),
        pid=os.getpid(),
    )
    # The parent's SIGTERM and the end of its pipe both stop the worker (a
    # drain), in either order: the second finds the reactor stopping,
    # quietly.  SIGUSR2 cuts the drain short.
    import signal

    def stopQuietly() -> None:
        try:
            reactor.stop()
        except error.ReactorNotRunning:
            pass

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *args: reactor.callFromThread(stopQuietly))
    signal.signal(
        signal.SIGUSR2,
        lambda *args: reactor.callFromThread(top.cut, "SIGUSR2 from the parent"),
    )
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
